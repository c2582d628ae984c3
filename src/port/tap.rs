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
//!   count as errors ([`DeviceStats::last_errno`]), poll(2) reports the fd ready forever
//!   (POLLERR), and [`Port::fault`] says so: the worker then closes the fd and marks the port
//!   gone instead of spinning on it.
//! - Receive buffers, offload state and counters are those of AF_PACKET ports
//!   ([`super::frameio`]).
//! - Offloads (unless [`TapOptions::no_vnet_hdr`]): the fd is opened with `IFF_VNET_HDR` and
//!   `TUNSETOFFLOAD` (CSUM, TSO4, TSO6, TSO_ECN), so the container's stack hands over TCP
//!   super-frames of up to 64 KiB with partial checksums, and every frame read or written
//!   carries a 10-byte `virtio_net_hdr` in a second iovec ([`super::vnet`]). It becomes the
//!   descriptor's [`Offload`](crate::packet::Offload) state on receive and is rebuilt from it
//!   on transmit, so TAP-to-TAP forwarding passes super-frames and partial checksums through
//!   untouched; other ports get them finished at output (`pipeline::gso`). UDP segmentation
//!   (USO) is not enabled: the pipeline cuts only TCP.
//! - Frames are read straight into a pool frame after [`HEADROOM`](crate::packet::HEADROOM),
//!   with the port's spare large buffer as the next iovec: a frame that fits a 2 KiB frame
//!   stays there (no copy); a larger one continues in the large buffer, the first
//!   [`MAX_FRAME_LEN`] bytes are copied in front (1.8 KiB per 64 KiB) and the frame is handed on
//!   in the large buffer. Without offloads (or when the large pool is exhausted) one extra byte
//!   of room detects an oversize frame. A frame larger than [`MAX_FRAME_LEN`] that is not a
//!   super-frame (the device MTU was raised behind our back) is dropped, not passed on
//!   truncated. Frames are written straight from the frame's data. One `readv`/`writev` per
//!   frame (a tun fd takes one frame per call); each burst reads until EAGAIN, and with
//!   offloads one call moves up to 64 KiB.
//! - Checksums: without `IFF_VNET_HDR` the kernel completes every checksum before a frame
//!   reaches the TAP fd, and expects complete checksums in what we write. With it, a frame
//!   whose `csum_start` is not the L4 header the pipeline finds (IPv6 extension headers, say)
//!   has its checksum completed here on receive.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use super::frameio::{DeviceStats, into_big, rx_iovecs};
use super::vnet::{VNET_HDR_LEN, virtio_net_hdr};
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
    /// Open without `IFF_VNET_HDR` (no checksum or segmentation offload).
    pub no_vnet_hdr: bool,
    /// Open one queue of a multi-queue TAP (`IFF_MULTI_QUEUE`): the first open creates the
    /// device, each later open of the same name adds a queue (one per worker). The kernel
    /// sends a flow's frames to the queue its frames were last written from (tun's automatic
    /// flow steering), else spreads them by flow hash. The device goes when its last queue's
    /// fd closes (unless it was made persistent outside uvs).
    pub multi_queue: bool,
    /// Give the device this hardware address (`SIOCSIFHWADDR`) when uvs creates it (not when
    /// it attaches one that existed); `None`: the kernel's random one.
    pub mac: Option<[u8; 6]>,
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
    /// Several workers need a multi-queue TAP; this one exists without it (or is not a TAP).
    #[error(
        "TAP device {name} exists without multi_queue (or is not a TAP): several workers open one queue each; make it with `ip tuntap add {name} mode tap multi_queue`, or let uvs create it"
    )]
    NotMultiQueue {
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

    /// `ifr_hwaddr`: a `sockaddr` of family ARPHRD_ETHER holding `mac`.
    fn set_hwaddr(&mut self, mac: [u8; 6]) {
        self.ifru[..2].copy_from_slice(&libc::ARPHRD_ETHER.to_ne_bytes());
        self.ifru[2..8].copy_from_slice(&mac);
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

/// `readv(fd, iov)`: the one place where frames are read.
#[inline]
fn read_iov(fd: RawFd, iov: &[libc::iovec]) -> io::Result<usize> {
    // SAFETY: every iovec passed here describes writable memory the caller owns for the
    // duration of the call (a pool frame, the port's large buffer or scratch arrays); the
    // kernel writes at most their lengths.
    let n = unsafe { libc::readv(fd, iov.as_ptr(), iov.len() as libc::c_int) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// Write one frame to the device, behind `hdr` when the fd has `IFF_VNET_HDR`. Returns the
/// bytes of the frame written (the header not counted). The one place where frames are written.
#[inline]
fn write_frame(fd: RawFd, hdr: Option<&[u8; VNET_HDR_LEN]>, data: &[u8]) -> io::Result<usize> {
    let mut iov = [libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    }; 2];
    let n = match hdr {
        Some(h) => {
            iov[0] = libc::iovec {
                iov_base: h.as_ptr() as *mut libc::c_void,
                iov_len: h.len(),
            };
            iov[1].iov_base = data.as_ptr() as *mut libc::c_void;
            2
        }
        None => 1,
    };
    // SAFETY: the iovecs describe `hdr` and `data`, borrowed for the duration of the call;
    // writev only reads from them.
    let r = unsafe { libc::writev(fd, iov.as_ptr(), n) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok((r as usize).saturating_sub(if hdr.is_some() { VNET_HDR_LEN } else { 0 }))
    }
}

/// Ask for checksum and TCP segmentation offload (`TUNSETOFFLOAD`); returns what was granted
/// (0 when the kernel refused: frames still carry a `virtio_net_hdr`, without offloads).
fn set_offloads(fd: &OwnedFd, name: &str) -> libc::c_uint {
    let want = libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6 | libc::TUN_F_TSO_ECN;
    // SAFETY: TUNSETOFFLOAD takes its argument by value; no memory is passed.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETOFFLOAD, want as libc::c_ulong) };
    if r < 0 {
        let e = io::Error::last_os_error();
        tracing::warn!("TAP device {name}: TUNSETOFFLOAD failed ({e}): no checksum/TSO offload");
        return 0;
    }
    want
}

/// A TAP device created (or attached) by uvs. See the module documentation.
pub struct TapPort {
    fd: Option<OwnedFd>,
    name: String,
    port_id: u16,
    ifindex: u32,
    mtu: u32,
    attached: bool,
    /// The fd has `IFF_VNET_HDR`.
    vnet: bool,
    /// The offloads `TUNSETOFFLOAD` accepted (`TUN_F_*`), 0 without.
    offloads: libc::c_uint,
    /// The received `virtio_net_hdr`.
    hdr: [u8; VNET_HDR_LEN],
    /// A large buffer that the next read may continue into (held during a burst only).
    spare_big: Option<Desc>,
    overflow: [u8; 1],
    stats: DeviceStats,
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
        let vnet = if opts.no_vnet_hdr {
            0
        } else {
            libc::IFF_VNET_HDR
        };
        let mq = if opts.multi_queue {
            libc::IFF_MULTI_QUEUE
        } else {
            0
        };
        ifr.set_flags((libc::IFF_TAP | libc::IFF_NO_PI | vnet | mq) as libc::c_short);
        if let Err(e) = ioctl_ifreq(&fd, libc::TUNSETIFF as libc::c_ulong, &mut ifr) {
            // TUNSETIFF answers EINVAL when the name belongs to a device of another type, or
            // (asking for a queue) to a TAP made without multi_queue.
            if e.raw_os_error() == Some(libc::EINVAL) && if_index(ifname) != 0 {
                let name = ifname.to_string();
                return Err(if opts.multi_queue {
                    TapError::NotMultiQueue { name }
                } else {
                    TapError::NotTap { name }
                });
            }
            return Err(sys("TUNSETIFF")(e));
        }
        let name = ifr.name();
        let offloads = if opts.no_vnet_hdr {
            0
        } else {
            set_offloads(&fd, &name)
        };
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
        if let Some(mac) = opts.mac.filter(|_| !existed) {
            // Before the link goes up (a TAP takes a new address while down).
            let mut r = IfReq::new(&name);
            r.set_hwaddr(mac);
            ioctl_ifreq(&sock, libc::SIOCSIFHWADDR, &mut r).map_err(sys("SIOCSIFHWADDR"))?;
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
            vnet: !opts.no_vnet_hdr,
            offloads,
            hdr: [0; VNET_HDR_LEN],
            spare_big: None,
            overflow: [0],
            stats: DeviceStats::default(),
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

    /// The port's counters (those of [`DeviceStats`] that a TAP port keeps).
    pub fn stats(&self) -> DeviceStats {
        self.stats
    }

    /// The tun fd, while the port is open.
    pub fn fd(&self) -> Option<RawFd> {
        self.fd.as_ref().map(|f| f.as_raw_fd())
    }

    /// Read one frame into `d` (a fresh pool frame), continuing into the spare large buffer if
    /// there is one. Ok(None): the frame was dropped (counted) and `d` freed; Err: nothing was
    /// read and `d` was freed.
    fn read_one(
        &mut self,
        fd: RawFd,
        frames: &mut Frames,
        mut d: Desc,
    ) -> io::Result<Option<Desc>> {
        let iov = rx_iovecs(frames, d, self.spare_big, &mut self.hdr, &mut self.overflow);
        let iov = if self.vnet { &iov[..] } else { &iov[1..] };
        let n = match read_iov(fd, iov) {
            Ok(n) => n,
            Err(e) => {
                frames.free(d.addr);
                return Err(e);
            }
        };
        let len = n.saturating_sub(if self.vnet { VNET_HDR_LEN } else { 0 });
        let h = virtio_net_hdr::from_bytes(&self.hdr);
        let gso = self.vnet && h.gso_type != 0;
        if len > MAX_FRAME_LEN {
            match self.spare_big.take() {
                Some(b) if gso => d = into_big(frames, d, b, len),
                big => {
                    self.spare_big = big;
                    frames.free(d.addr);
                    self.stats.rx_oversize += 1;
                    return Ok(None);
                }
            }
        } else {
            d.len = len as u32;
        }
        if self.vnet {
            let Some(with_ol) = self.stats.rx_offload(frames, &h, d) else {
                return Ok(None);
            };
            d = with_ol;
        }
        self.stats.rx_packets += 1;
        self.stats.rx_bytes += len as u64;
        if len < ETH_HLEN {
            self.stats.rx_runts += 1;
        }
        Ok(Some(d))
    }

    /// Count a failed read or write's errno; errnos that mean the device is gone set the fault.
    fn note_errno(&mut self, e: &io::Error) {
        self.stats.note_errno(&mut self.fault, e, |e| {
            format!("device gone: {} ({e})", errno_name(e))
        });
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
            let Some(d) = frames.alloc() else { break };
            if self.vnet && self.spare_big.is_none() {
                self.spare_big = frames.alloc_big();
            }
            match self.read_one(fd, frames, d) {
                Ok(Some(d)) => {
                    out.push(d);
                    n += 1;
                }
                Ok(None) => {}
                Err(e) => match e.raw_os_error() {
                    Some(libc::EAGAIN) => break,
                    Some(libc::EINTR) if eintr < 3 => eintr += 1,
                    _ => {
                        self.stats.rx_errors += 1;
                        self.note_errno(&e);
                        break;
                    }
                },
            }
        }
        // The spare large buffer is held for one burst only: idle ports hold none, so the
        // large pool is shared by the frames in flight, however many TAP ports there are.
        if let Some(b) = self.spare_big.take() {
            frames.free(b.addr);
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
            let hdr = self
                .vnet
                .then(|| virtio_net_hdr::for_frame(data, d.ol).to_bytes());
            let mut r = write_frame(fd, hdr.as_ref(), data);
            if matches!(&r, Err(e) if e.raw_os_error() == Some(libc::EINTR)) {
                r = write_frame(fd, hdr.as_ref(), data);
            }
            frames.free(d.addr);
            match r {
                Ok(len) => {
                    res.sent += 1;
                    res.bytes += len as u64;
                    if let Some(h) = &hdr {
                        self.stats.tx_vnet(h);
                    }
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

    fn offload_out(&self) -> bool {
        self.vnet
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
        if self.vnet {
            s.push_str(if self.offloads != 0 {
                " offload=csum,tso"
            } else {
                " vnet_hdr"
            });
        }
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
    fn close(&mut self, frames: &mut Frames) {
        self.release();
        if let Some(b) = self.spare_big.take() {
            frames.free(b.addr);
        }
    }

    fn release(&mut self) {
        self.fd = None;
    }

    fn attach(&mut self, id: u16, _frames: &mut Frames) -> Result<(), String> {
        self.port_id = id;
        Ok(())
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
        let e = TapPort::create(
            "uvsmtu0",
            1,
            &TapOptions {
                mtu: Some(9000),
                ..TapOptions::default()
            },
        )
        .unwrap_err();
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
