//! TAP ports: a TAP device created by uvs, read and written through its `/dev/net/tun` fd.
//!
//! - [`TapPort::create`] opens `/dev/net/tun` (non-blocking, close-on-exec), attaches it to a TAP
//!   device with `TUNSETIFF` (`IFF_TAP | IFF_NO_PI`), sets its MTU if asked, brings the link up
//!   and reads back MTU and ifindex. A device created here is not persistent: it disappears when
//!   the fd is closed ([`Port::close`] or drop). An existing TAP device of that name (e.g. made
//!   with `ip tuntap add`, to set its owner) is attached instead and keeps its persist flag.
//! - The fd keeps working after the device is moved into another network namespace
//!   (`ip link set TAP netns c1`): that is how a container gets its end. Once moved, uvs can no
//!   longer reach the device by name (ioctls on a socket work in uvs's namespace only), so MTU and
//!   ifindex are the values read at creation. The move takes the link down; the container side
//!   brings it up. While it is down, writes fail with EIO and count as drops. If the device is
//!   deleted (`ip link del`, or its namespace goes away), reads and writes fail with EBADFD and
//!   count as errors ([`TapStats::last_errno`]), poll(2) reports the fd ready forever
//!   (POLLERR), and [`Port::fault`] says so: the worker then closes the fd and marks the port
//!   gone instead of spinning on it.
//! - Frames are read straight into a pool frame after [`HEADROOM`] and written straight from the
//!   frame's data: one `readv`/`writev` per frame, no heap allocation. A read has one extra byte
//!   of room past [`MAX_FRAME_LEN`] so that an oversize frame is detected and dropped instead of
//!   being passed on truncated.
//! - Checksums: without `IFF_VNET_HDR` the kernel completes every checksum before a frame reaches
//!   the TAP fd (`partial_csum_in` is false), and expects complete checksums in what we write.
//!
//! Offloads, later: `IFF_VNET_HDR` with checksum offload (`VIRTIO_NET_HDR_F_NEEDS_CSUM`,
//! `TUNSETOFFLOAD`) and TSO with frames up to 64 KiB. All device I/O goes through [`read_frame`]
//! and [`write_frame`]; a `virtio_net_hdr` becomes a second iovec in front of the frame there (the
//! header can live in the frame's headroom or in a per-port scratch array), and large frames will
//! need chained or larger frames from the pool. Nothing else in this file assumes the wire format.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use super::{Port, PortKind, TxResult};
use crate::packet::{Desc, Frames, MAX_FRAME_LEN};

/// The largest MTU a TAP port accepts: a frame of this MTU with an Ethernet header and one VLAN
/// tag fits [`MAX_FRAME_LEN`].
pub const TAP_MAX_MTU: u32 = (MAX_FRAME_LEN - 18) as u32;
/// The smallest MTU Linux accepts for an Ethernet device carrying IPv4.
pub const TAP_MIN_MTU: u32 = 68;
/// Ethernet header length: shorter frames are runts.
const ETH_HLEN: usize = 14;

/// Options for [`TapPort::create`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TapOptions {
    /// Set this MTU on the device (`SIOCSIFMTU`); `None` keeps the kernel's (1500).
    pub mtu: Option<u32>,
}

/// Why a TAP port could not be created. Every message names the device and, for system errors,
/// the errno.
#[derive(Debug, thiserror::Error)]
pub enum TapError {
    /// The name cannot be a Linux interface name.
    #[error("invalid TAP device name {name:?}: {reason}")]
    BadName {
        /// The name given.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The requested or existing MTU does not fit a frame.
    #[error("TAP device {name}: MTU {mtu} out of range {TAP_MIN_MTU}..={TAP_MAX_MTU}")]
    BadMtu {
        /// The device.
        name: String,
        /// The MTU requested, or found on an existing device.
        mtu: u32,
    },
    /// A network device of that name exists and is not a TAP device.
    #[error(
        "cannot create TAP device {name}: a network device of that name exists and is not a TAP device"
    )]
    NotTap {
        /// The device.
        name: String,
    },
    /// A system call failed.
    #[error("TAP device {name}: {op} failed: {} ({source})", errno_name(.source))]
    Sys {
        /// The device.
        name: String,
        /// What was being done (`open /dev/net/tun`, `TUNSETIFF`, `SIOCSIFMTU`, ...).
        op: &'static str,
        /// The error, with its errno.
        source: io::Error,
    },
}

/// The symbolic name of an error's errno, for messages.
fn errno_name(e: &io::Error) -> String {
    let name = match e.raw_os_error() {
        Some(libc::EPERM) => "EPERM",
        Some(libc::ENOENT) => "ENOENT",
        Some(libc::EIO) => "EIO",
        Some(libc::EBADF) => "EBADF",
        Some(libc::EAGAIN) => "EAGAIN",
        Some(libc::ENOMEM) => "ENOMEM",
        Some(libc::EACCES) => "EACCES",
        Some(libc::EFAULT) => "EFAULT",
        Some(libc::EBUSY) => "EBUSY",
        Some(libc::EEXIST) => "EEXIST",
        Some(libc::ENODEV) => "ENODEV",
        Some(libc::EINVAL) => "EINVAL",
        Some(libc::ENFILE) => "ENFILE",
        Some(libc::EMFILE) => "EMFILE",
        Some(libc::ENOTTY) => "ENOTTY",
        Some(libc::EBADFD) => "EBADFD",
        Some(libc::ENOBUFS) => "ENOBUFS",
        Some(libc::ENETDOWN) => "ENETDOWN",
        Some(n) => return format!("errno {n}"),
        None => return "error".to_string(),
    };
    name.to_string()
}

/// Counters of one TAP port.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TapStats {
    /// Frames read from the device and handed to the worker (runts included).
    pub rx_packets: u64,
    /// Bytes of those frames.
    pub rx_bytes: u64,
    /// Frames shorter than an Ethernet header, handed on all the same (the pipeline drops them).
    pub rx_runts: u64,
    /// Frames longer than [`MAX_FRAME_LEN`] (the device MTU was raised behind our back): dropped.
    pub rx_oversize: u64,
    /// Reads that failed with an error other than EAGAIN/EINTR (EBADFD: the device was deleted).
    pub rx_errors: u64,
    /// Frames written to the device.
    pub tx_packets: u64,
    /// Bytes of those frames.
    pub tx_bytes: u64,
    /// Frames the device refused for now (EIO: link down; EAGAIN, ENOBUFS): dropped.
    pub tx_dropped: u64,
    /// Writes that failed otherwise (EINVAL: frame shorter than 14 bytes; EBADFD: the device was
    /// deleted; or the port was closed): dropped.
    pub tx_errors: u64,
    /// errno of the last failed read or write, 0 if none failed.
    pub last_errno: i32,
}

/// A `struct ifreq` as the kernel reads it: the name, then a 24-byte union of which we use the
/// `short` flags and the `int` MTU / ifindex at its start.
#[repr(C, align(8))]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    ifru: [u8; 24],
}

const _: () = assert!(size_of::<IfReq>() == size_of::<libc::ifreq>());

impl IfReq {
    fn new(name: &str) -> IfReq {
        let mut r = IfReq {
            name: [0; libc::IFNAMSIZ],
            ifru: [0; 24],
        };
        r.name[..name.len()].copy_from_slice(name.as_bytes());
        r
    }

    fn flags(&self) -> libc::c_short {
        libc::c_short::from_ne_bytes([self.ifru[0], self.ifru[1]])
    }

    fn set_flags(&mut self, f: libc::c_short) {
        self.ifru[..2].copy_from_slice(&f.to_ne_bytes());
    }

    fn int(&self) -> libc::c_int {
        libc::c_int::from_ne_bytes(self.ifru[..4].try_into().expect("4 bytes"))
    }

    fn set_int(&mut self, v: libc::c_int) {
        self.ifru[..4].copy_from_slice(&v.to_ne_bytes());
    }

    fn name(&self) -> String {
        let end = self
            .name
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(self.name.len());
        String::from_utf8_lossy(&self.name[..end]).into_owned()
    }
}

/// `ioctl(fd, req, &mut ifr)`.
fn ioctl_ifreq(fd: &OwnedFd, req: libc::c_ulong, ifr: &mut IfReq) -> io::Result<()> {
    // SAFETY: every request passed here reads and/or writes one `struct ifreq`; `ifr` points to
    // a live, writable value with the kernel's layout and size (checked at compile time).
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), req as libc::Ioctl, ifr as *mut IfReq) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Check that `name` can be an interface name (what the kernel's `dev_valid_name` accepts).
fn check_name(name: &str) -> Result<(), TapError> {
    let bad = |reason| {
        Err(TapError::BadName {
            name: name.to_string(),
            reason,
        })
    };
    if name.is_empty() {
        return bad("empty");
    }
    if name.len() >= libc::IFNAMSIZ {
        return bad("longer than 15 bytes");
    }
    if name == "." || name == ".." {
        return bad("reserved");
    }
    if name
        .bytes()
        .any(|b| b == b'/' || b == b':' || b == 0 || b.is_ascii_whitespace())
    {
        return bad("contains '/', ':', NUL or whitespace");
    }
    if name.contains('%') {
        return bad("contains '%' (a kernel name template)");
    }
    Ok(())
}

/// The ifindex of `name` in this network namespace, or 0 if there is none.
fn if_index(name: &str) -> u32 {
    let Ok(c) = CString::new(name) else { return 0 };
    // SAFETY: `c` is a valid NUL-terminated string that outlives the call.
    unsafe { libc::if_nametoindex(c.as_ptr()) }
}

/// Read one frame from the device into `buf` (room for [`MAX_FRAME_LEN`] bytes). Returns the
/// frame's length, which is larger than `buf` if the frame did not fit (the excess is lost).
///
/// The one place where frames are read: a `virtio_net_hdr` iovec goes in front here.
#[inline]
fn read_frame(fd: RawFd, buf: &mut [u8], overflow: &mut [u8; 1]) -> io::Result<usize> {
    let iov = [
        libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        },
        libc::iovec {
            iov_base: overflow.as_mut_ptr().cast(),
            iov_len: overflow.len(),
        },
    ];
    // SAFETY: both iovecs describe writable memory borrowed mutably for the duration of the
    // call; the kernel writes at most their lengths.
    let n = unsafe { libc::readv(fd, iov.as_ptr(), iov.len() as libc::c_int) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// Write one frame to the device. The one place where frames are written: a `virtio_net_hdr`
/// iovec goes in front here.
#[inline]
fn write_frame(fd: RawFd, data: &[u8]) -> io::Result<usize> {
    let iov = [libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    }];
    // SAFETY: the iovec describes `data`, borrowed for the duration of the call; writev only
    // reads from it.
    let n = unsafe { libc::writev(fd, iov.as_ptr(), iov.len() as libc::c_int) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// A TAP device created (or attached) by uvs. See the module documentation.
pub struct TapPort {
    fd: Option<OwnedFd>,
    name: String,
    port_id: u16,
    ifindex: u32,
    mtu: u32,
    attached: bool,
    overflow: [u8; 1],
    stats: TapStats,
    /// Set when a read or write says the device is gone (EBADFD, ENXIO, ENODEV).
    fault: Option<String>,
}

impl std::fmt::Debug for TapPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TapPort")
            .field("name", &self.name)
            .field("port_id", &self.port_id)
            .field("fd", &self.fd.as_ref().map(|f| f.as_raw_fd()))
            .field("ifindex", &self.ifindex)
            .field("mtu", &self.mtu)
            .finish()
    }
}

impl TapPort {
    /// Create the TAP device `ifname` (or attach to an existing TAP device of that name), set
    /// its MTU if `opts.mtu` is given, bring it up. Needs CAP_NET_ADMIN.
    pub fn create(ifname: &str, port_id: u16, opts: &TapOptions) -> Result<TapPort, TapError> {
        check_name(ifname)?;
        let sys = |op: &'static str| {
            move |source: io::Error| TapError::Sys {
                name: ifname.to_string(),
                op,
                source,
            }
        };
        if let Some(mtu) = opts.mtu
            && !(TAP_MIN_MTU..=TAP_MAX_MTU).contains(&mtu)
        {
            return Err(TapError::BadMtu {
                name: ifname.to_string(),
                mtu,
            });
        }
        let existed = if_index(ifname) != 0;

        // SAFETY: a constant NUL-terminated path; the result is checked.
        let raw = unsafe {
            libc::open(
                c"/dev/net/tun".as_ptr(),
                libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC,
            )
        };
        if raw < 0 {
            return Err(sys("open /dev/net/tun")(io::Error::last_os_error()));
        }
        // SAFETY: `raw` is a new fd that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };

        let mut ifr = IfReq::new(ifname);
        ifr.set_flags((libc::IFF_TAP | libc::IFF_NO_PI) as libc::c_short);
        if let Err(e) = ioctl_ifreq(&fd, libc::TUNSETIFF as libc::c_ulong, &mut ifr) {
            // TUNSETIFF answers EINVAL when the name belongs to a device of another type.
            if e.raw_os_error() == Some(libc::EINVAL) && if_index(ifname) != 0 {
                return Err(TapError::NotTap {
                    name: ifname.to_string(),
                });
            }
            return Err(sys("TUNSETIFF")(e));
        }
        let name = ifr.name();
        if !existed {
            // SAFETY: TUNSETPERSIST takes its argument by value; no memory is passed.
            let r = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETPERSIST, 0 as libc::c_ulong) };
            if r < 0 {
                return Err(sys("TUNSETPERSIST")(io::Error::last_os_error()));
            }
        }

        // SAFETY: plain socket creation; the result is checked.
        let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            return Err(sys("socket(AF_INET)")(io::Error::last_os_error()));
        }
        // SAFETY: `raw` is a new fd that nothing else owns.
        let sock = unsafe { OwnedFd::from_raw_fd(raw) };

        if let Some(mtu) = opts.mtu {
            let mut r = IfReq::new(&name);
            r.set_int(mtu as libc::c_int);
            ioctl_ifreq(&sock, libc::SIOCSIFMTU, &mut r).map_err(sys("SIOCSIFMTU"))?;
        }
        let mut r = IfReq::new(&name);
        ioctl_ifreq(&sock, libc::SIOCGIFFLAGS, &mut r).map_err(sys("SIOCGIFFLAGS"))?;
        r.set_flags(r.flags() | libc::IFF_UP as libc::c_short);
        ioctl_ifreq(&sock, libc::SIOCSIFFLAGS, &mut r).map_err(sys("SIOCSIFFLAGS"))?;

        let mut r = IfReq::new(&name);
        ioctl_ifreq(&sock, libc::SIOCGIFMTU, &mut r).map_err(sys("SIOCGIFMTU"))?;
        let mtu = r.int() as u32;
        if mtu > TAP_MAX_MTU {
            return Err(TapError::BadMtu { name, mtu });
        }
        let mut r = IfReq::new(&name);
        ioctl_ifreq(&sock, libc::SIOCGIFINDEX, &mut r).map_err(sys("SIOCGIFINDEX"))?;
        let ifindex = r.int() as u32;

        Ok(TapPort {
            fd: Some(fd),
            name,
            port_id,
            ifindex,
            mtu,
            attached: existed,
            overflow: [0],
            stats: TapStats::default(),
            fault: None,
        })
    }

    /// The device name given at creation (the device keeps it when moved to another namespace,
    /// unless renamed there).
    pub fn ifname(&self) -> &str {
        &self.name
    }

    /// The port id given at creation.
    pub fn port_id(&self) -> u16 {
        self.port_id
    }

    /// The device's ifindex in uvs's namespace at creation (a move to another namespace may
    /// change it).
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// True if the device existed before (a persistent TAP device) and was attached, not created.
    pub fn attached(&self) -> bool {
        self.attached
    }

    /// The port's counters.
    pub fn stats(&self) -> TapStats {
        self.stats
    }

    /// The tun fd, while the port is open.
    pub fn fd(&self) -> Option<RawFd> {
        self.fd.as_ref().map(|f| f.as_raw_fd())
    }

    /// Count a failed read or write's errno; errnos that mean the device is gone set the fault.
    fn note_errno(&mut self, e: &io::Error) {
        let errno = e.raw_os_error().unwrap_or(0);
        self.stats.last_errno = errno;
        if self.fault.is_none()
            && matches!(
                errno,
                libc::EBADFD | libc::ENXIO | libc::ENODEV | libc::EBADF
            )
        {
            self.fault = Some(format!("device gone: {} ({e})", errno_name(e)));
        }
    }
}

impl Port for TapPort {
    fn kind(&self) -> PortKind {
        PortKind::Tap
    }

    fn rx_burst(&mut self, frames: &mut Frames, out: &mut Vec<Desc>, max: usize) -> usize {
        let Some(fd) = self.fd() else { return 0 };
        let mut n = 0;
        let mut eintr = 0;
        while n < max {
            let Some(mut d) = frames.alloc() else { break };
            let off = d.headroom();
            let buf = &mut frames.chunk_mut(d.chunk())[off..off + MAX_FRAME_LEN];
            match read_frame(fd, buf, &mut self.overflow) {
                Ok(len) if len > MAX_FRAME_LEN => {
                    frames.free(d.addr);
                    self.stats.rx_oversize += 1;
                }
                Ok(len) => {
                    d.len = len as u32;
                    self.stats.rx_packets += 1;
                    self.stats.rx_bytes += len as u64;
                    if len < ETH_HLEN {
                        self.stats.rx_runts += 1;
                    }
                    out.push(d);
                    n += 1;
                }
                Err(e) => {
                    frames.free(d.addr);
                    match e.raw_os_error() {
                        Some(libc::EAGAIN) => break,
                        Some(libc::EINTR) if eintr < 3 => eintr += 1,
                        _ => {
                            self.stats.rx_errors += 1;
                            self.note_errno(&e);
                            break;
                        }
                    }
                }
            }
        }
        n
    }

    fn tx_burst(&mut self, frames: &mut Frames, batch: &mut Vec<Desc>) -> TxResult {
        let mut res = TxResult::default();
        let fd = self.fd();
        for d in batch.drain(..) {
            let Some(fd) = fd else {
                frames.free(d.addr);
                res.dropped += 1;
                self.stats.tx_errors += 1;
                continue;
            };
            let data = frames.data(d);
            let mut r = write_frame(fd, data);
            if matches!(&r, Err(e) if e.raw_os_error() == Some(libc::EINTR)) {
                r = write_frame(fd, data);
            }
            frames.free(d.addr);
            match r {
                Ok(len) => {
                    res.sent += 1;
                    res.bytes += len as u64;
                }
                Err(e) => {
                    res.dropped += 1;
                    match e.raw_os_error() {
                        Some(libc::EAGAIN | libc::ENOBUFS | libc::EIO) => {
                            self.stats.tx_dropped += 1
                        }
                        _ => self.stats.tx_errors += 1,
                    }
                    self.note_errno(&e);
                }
            }
        }
        self.stats.tx_packets += u64::from(res.sent);
        self.stats.tx_bytes += res.bytes;
        res
    }

    fn service(&mut self, _frames: &mut Frames) {}

    fn poll_fds(&self, out: &mut Vec<RawFd>) {
        out.extend(self.fd());
    }

    fn mtu(&self) -> u32 {
        self.mtu
    }

    fn set_mtu(&mut self, mtu: u32) {
        self.mtu = mtu;
    }

    fn ifindex(&self) -> u32 {
        self.ifindex
    }

    fn fault(&self) -> Option<&str> {
        self.fault.as_deref()
    }

    fn details(&self) -> String {
        let mut s = format!("ifindex={} mtu={}", self.ifindex, self.mtu);
        if self.attached {
            s.push_str(" attached");
        }
        if self.fd.is_none() {
            s.push_str(" closed");
        }
        s
    }

    /// A TAP port holds no frames between bursts; this closes the fd (the device goes away
    /// unless it is persistent).
    fn close(&mut self, _frames: &mut Frames) {
        self.fd = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        for (n, ok) in [
            ("tap0", true),
            ("a23456789012345", true),
            ("a234567890123456", false),
            ("", false),
            ("a/b", false),
            ("a b", false),
            ("a:b", false),
            ("tap%d", false),
            ("..", false),
        ] {
            assert_eq!(check_name(n).is_ok(), ok, "{n}");
        }
        let e = TapPort::create("bad/name", 1, &TapOptions::default()).unwrap_err();
        assert!(e.to_string().contains("bad/name"), "{e}");
    }

    #[test]
    fn mtu_is_checked_before_anything_is_created() {
        let e = TapPort::create("uvsmtu0", 1, &TapOptions { mtu: Some(9000) }).unwrap_err();
        assert!(matches!(e, TapError::BadMtu { mtu: 9000, .. }), "{e}");
        assert!(e.to_string().contains("uvsmtu0"), "{e}");
        assert_eq!(if_index("uvsmtu0"), 0);
    }

    #[test]
    fn ifreq_fields() {
        let mut r = IfReq::new("tap7");
        r.set_flags(0x1002);
        assert_eq!(r.flags(), 0x1002);
        r.set_int(1500);
        assert_eq!(r.int(), 1500);
        assert_eq!(r.name(), "tap7");
    }

    #[test]
    fn errors_name_the_errno() {
        let e = TapError::Sys {
            name: "tap9".into(),
            op: "TUNSETIFF",
            source: io::Error::from_raw_os_error(libc::EBUSY),
        };
        let s = e.to_string();
        assert!(
            s.contains("tap9") && s.contains("EBUSY") && s.contains("TUNSETIFF"),
            "{s}"
        );
    }
}
