//! AF_PACKET ports (`type=afpacket`, alias `system`): a raw packet socket bound to an existing
//! netdev (a container's veth host end), with `PACKET_VNET_HDR`, as OVS's userspace datapath
//! opens its `system` ports (netdev-linux) with userspace TSO. Unlike AF_XDP, the socket sees
//! the frame after the kernel's receive path has it as an skb, so a veth hands over TCP
//! super-frames of up to 64 KiB with partial checksums instead of MTU-sized frames.
//!
//! Contract:
//! - [`AfpacketPort::open`] checks that the netdev exists and that its MTU fits a frame, opens a
//!   `SOCK_RAW` packet socket that receives nothing until it is bound (protocol 0), sets
//!   `PACKET_VNET_HDR`, `PACKET_AUXDATA`, `PACKET_IGNORE_OUTGOING` (frames the host stack or
//!   another socket sends out of the netdev are not taken for received ones),
//!   `PACKET_QDISC_BYPASS` and large socket buffers (a 64 KiB super-frame is a 64 KiB skb), then
//!   binds to the netdev's ifindex with `ETH_P_ALL`. The netdev's own state is left alone.
//! - Every frame read or written carries a 10-byte `virtio_net_hdr` in its own iovec
//!   ([`super::vnet`]): on receive it becomes the descriptor's
//!   [`Offload`](crate::packet::Offload) state, on transmit it is rebuilt from it, so the kernel
//!   gets GSO super-frames and partial checksums as they are (the veth peer receives
//!   super-frames; a device that cannot take them has them segmented by the kernel).
//! - Receive is batched: one `recvmmsg` reads up to [`BATCH`] frames (an idle port asks for
//!   one, doubling while calls come back full, so polling an idle port costs one frame), each
//!   straight into a pool frame after the headroom with a spare large buffer as the next iovec,
//!   as TAP ports do ([`super::frameio`]: a frame larger than [`MAX_FRAME_LEN`] continues into
//!   the large buffer and its first bytes are copied in front). Large buffers are taken for a burst only while the large pool keeps
//!   [`BIG_KEEP`] free; without one, a super-frame is truncated by the kernel and dropped
//!   (`rx_oversize`), as is a non-GSO frame larger than [`MAX_FRAME_LEN`]. A UDP GSO frame
//!   (IPv4, `VIRTIO_NET_HDR_GSO_UDP_L4`: what a uvs VTEP peer sends, see `pipeline::gro`) is cut
//!   into its datagrams at once, so one message may add up to 64 frames. Transmit is batched
//!   with `sendmmsg`; the kernel copies each frame, so frames go back to the pool at once.
//! - VLAN: the kernel removes an 802.1Q/802.1ad tag before a packet socket sees the frame and
//!   reports it in `PACKET_AUXDATA`; the tag is put back in front (4 bytes of headroom), and the
//!   partial checksum's `csum_start` moved with it.
//! - Frames: a port holds no frame between bursts (like TAP), so the frame budget reserves
//!   nothing for it; a `recvmmsg` allocates at most [`BATCH`] frames from the free list (a UDP
//!   GSO message is then cut into up to 64 datagrams, see `rx_burst`).
//! - Faults: ENXIO/ENODEV/EBADF(D) from a read or write (the netdev was deleted: the kernel
//!   unbinds the socket) set [`Port::fault`]; ENETDOWN (link set down) is counted, and the
//!   worker's link events take the port down (see `worker::life`).

use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use super::frameio::{DeviceStats, into_big, rx_iovecs};
use super::sys::device_gone;
use super::vnet::{NEEDS_CSUM, VNET_HDR_LEN, virtio_net_hdr};
use super::{Port, PortKind, TxResult};
use crate::packet::{Desc, Frames, GsoType, MAX_BIG_LEN, MAX_FRAME_LEN};
use crate::wire::vlan;

/// Frames per `recvmmsg`/`sendmmsg`.
pub const BATCH: usize = 32;
/// A burst takes large buffers only while at least this many stay free for other ports.
pub const BIG_KEEP: usize = 32;
/// Socket receive and send buffer size asked for (`SO_RCVBUFFORCE`/`SO_SNDBUFFORCE`): a
/// 64 KiB super-frame takes ~66 KiB of it, the default (~208 KiB) holds three.
const SOCK_BUF: libc::c_int = 8 << 20;
/// Ethernet header plus one VLAN tag: a frame of the MTU must fit [`MAX_FRAME_LEN`] with them.
const L2_OVERHEAD: u32 = 18;
/// Space for one `PACKET_AUXDATA` control message.
const CMSG_SPACE: usize = 64;
const ETH_HLEN: usize = 14;

/// Why an AF_PACKET port could not be opened. Every message names the netdev.
#[derive(Debug, thiserror::Error)]
pub enum AfpacketError {
    /// No netdev of that name in uvs's network namespace.
    #[error("netdev {0}: no such device in uvs's network namespace")]
    NoDevice(String),
    /// The netdev's MTU does not fit a frame.
    #[error(
        "netdev {ifname}: MTU {mtu} too large for afpacket ports (frames of at most {limit} bytes with Ethernet and VLAN headers: MTU {max} or less)",
        max = *limit as u32 - L2_OVERHEAD
    )]
    MtuTooLarge {
        /// The netdev.
        ifname: String,
        /// Its MTU.
        mtu: u32,
        /// The frame limit.
        limit: usize,
    },
    /// A system call failed.
    #[error("netdev {ifname}: {op} failed: {source}")]
    Sys {
        /// The netdev.
        ifname: String,
        /// What was being done.
        op: &'static str,
        /// The error, with its errno.
        source: io::Error,
    },
}

/// Check that frames of MTU `mtu` on `ifname` fit a pool frame.
pub fn check_mtu(ifname: &str, mtu: u32) -> Result<(), AfpacketError> {
    if (mtu + L2_OVERHEAD) as usize > MAX_FRAME_LEN {
        return Err(AfpacketError::MtuTooLarge {
            ifname: ifname.to_string(),
            mtu,
            limit: MAX_FRAME_LEN,
        });
    }
    Ok(())
}

/// An AF_PACKET port. See the module documentation.
pub struct AfpacketPort {
    fd: Option<OwnedFd>,
    ifname: String,
    port_id: u16,
    ifindex: u32,
    mtu: u32,
    /// Per-message receive state, reused: the vnet headers and control messages.
    hdrs: Box<[[u8; VNET_HDR_LEN]; BATCH]>,
    cmsgs: Box<[[u64; CMSG_SPACE / 8]; BATCH]>,
    overflow: [u8; 1],
    /// Frames the next `recvmmsg` asks for (see [`next_want`]).
    rx_want: usize,
    /// A UDP GSO message (up to 64 datagrams) has arrived on this port: bursts then read as
    /// many messages as 64-datagram messages fit in the room left (at least one).
    uso_seen: bool,
    stats: DeviceStats,
    /// The "frame the kernel cannot describe" warning was logged.
    warned_undescribed: bool,
    fault: Option<String>,
}

impl std::fmt::Debug for AfpacketPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AfpacketPort")
            .field("ifname", &self.ifname)
            .field("port_id", &self.port_id)
            .field("ifindex", &self.ifindex)
            .field("mtu", &self.mtu)
            .finish()
    }
}

/// `setsockopt(fd, level, name, &v)` for an int option.
fn set_int(fd: &OwnedFd, level: libc::c_int, name: libc::c_int, v: libc::c_int) -> io::Result<()> {
    // SAFETY: `v` is a live c_int and its size is passed; the kernel only reads it.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&raw const v).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

impl AfpacketPort {
    /// Open an AF_PACKET port on the existing netdev `ifname`. Needs CAP_NET_RAW (and
    /// CAP_NET_ADMIN for the large socket buffers; without it the default sizes are kept).
    pub fn open(ifname: &str, port_id: u16) -> Result<AfpacketPort, AfpacketError> {
        Self::open_shared(ifname, port_id, false)
    }

    /// [`AfpacketPort::open`]; with `fanout`, the socket joins the netdev's fanout group
    /// (`PACKET_FANOUT_HASH`, group id = the low 16 bits of the ifindex): every worker opens
    /// one and the kernel hands each received frame to one of them by a symmetric flow hash,
    /// so both directions of a connection reach the same worker. Each socket transmits on its
    /// own.
    pub fn open_shared(
        ifname: &str,
        port_id: u16,
        fanout: bool,
    ) -> Result<AfpacketPort, AfpacketError> {
        let (ifindex, _up, mtu) = super::link::query(ifname)
            .ok_or_else(|| AfpacketError::NoDevice(ifname.to_string()))?;
        check_mtu(ifname, mtu)?;
        let sys = |op: &'static str| {
            move |source: io::Error| AfpacketError::Sys {
                ifname: ifname.to_string(),
                op,
                source,
            }
        };
        // SAFETY: plain socket creation; the result is checked. Protocol 0: nothing is
        // received until bind names the device and ETH_P_ALL.
        let raw = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                0,
            )
        };
        if raw < 0 {
            return Err(sys("socket(AF_PACKET)")(io::Error::last_os_error()));
        }
        // SAFETY: `raw` is a new fd that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let sol = libc::SOL_PACKET;
        set_int(&fd, sol, libc::PACKET_VNET_HDR, 1).map_err(sys("PACKET_VNET_HDR"))?;
        set_int(&fd, sol, libc::PACKET_AUXDATA, 1).map_err(sys("PACKET_AUXDATA"))?;
        set_int(&fd, sol, libc::PACKET_IGNORE_OUTGOING, 1)
            .map_err(sys("PACKET_IGNORE_OUTGOING"))?;
        if let Err(e) = set_int(&fd, sol, libc::PACKET_QDISC_BYPASS, 1) {
            tracing::debug!("netdev {ifname}: PACKET_QDISC_BYPASS: {e}");
        }
        for (force, plain, what) in [
            (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF, "SO_RCVBUF"),
            (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF, "SO_SNDBUF"),
        ] {
            if set_int(&fd, libc::SOL_SOCKET, force, SOCK_BUF).is_err()
                && let Err(e) = set_int(&fd, libc::SOL_SOCKET, plain, SOCK_BUF)
            {
                tracing::warn!("netdev {ifname}: {what}: {e}");
            }
        }
        bind(&fd, ifindex).map_err(sys("bind"))?;
        if fanout {
            let arg = (ifindex & 0xffff) as i32 | (libc::PACKET_FANOUT_HASH as i32) << 16;
            set_int(&fd, sol, libc::PACKET_FANOUT, arg).map_err(sys("PACKET_FANOUT"))?;
        }
        Ok(AfpacketPort {
            fd: Some(fd),
            ifname: ifname.to_string(),
            port_id,
            ifindex,
            mtu,
            hdrs: Box::new([[0; VNET_HDR_LEN]; BATCH]),
            cmsgs: Box::new([[0; CMSG_SPACE / 8]; BATCH]),
            overflow: [0],
            rx_want: 1,
            uso_seen: false,
            stats: DeviceStats::default(),
            warned_undescribed: false,
            fault: None,
        })
    }

    /// The port's counters (those of [`DeviceStats`] that an AF_PACKET port keeps).
    pub fn stats(&self) -> DeviceStats {
        self.stats
    }

    /// The netdev name.
    pub fn ifname(&self) -> &str {
        &self.ifname
    }

    /// Count a failed call's errno; errnos that mean the netdev is gone set the fault.
    fn note_errno(&mut self, e: &io::Error, op: &str) {
        self.stats.note_errno(&mut self.fault, e, |e| {
            format!("netdev gone: {op} failed ({e})")
        });
    }

    /// One `recvmmsg` of up to `want` frames into `out`. Returns how many messages the kernel
    /// returned (frames dropped here included), 0 when nothing was waiting.
    fn recv_batch(
        &mut self,
        fd: RawFd,
        frames: &mut Frames,
        out: &mut Vec<Desc>,
        want: usize,
    ) -> usize {
        let mut small = [Desc::default(); BATCH];
        let mut big: [Option<Desc>; BATCH] = [None; BATCH];
        let mut n = 0;
        while n < want {
            let Some(d) = frames.alloc() else { break };
            small[n] = d;
            if frames.big_free_count() > BIG_KEEP {
                big[n] = frames.alloc_big();
            }
            n += 1;
        }
        if n == 0 {
            return 0;
        }
        // Only the first `n` entries are written and passed to the kernel: an idle port polled
        // for one message does not clear the headers of 32 (about 5 KiB) every time.
        let mut iov: [MaybeUninit<[libc::iovec; 3]>; BATCH] =
            [const { MaybeUninit::uninit() }; BATCH];
        let mut msgs: [MaybeUninit<libc::mmsghdr>; BATCH] =
            [const { MaybeUninit::uninit() }; BATCH];
        for i in 0..n {
            let v = iov[i].write(rx_iovecs(
                frames,
                small[i],
                big[i],
                &mut self.hdrs[i],
                &mut self.overflow,
            ));
            // SAFETY: mmsghdr is a plain C struct for which all-zero is a valid value (null
            // pointers, zero lengths).
            let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
            m.msg_hdr.msg_iov = v.as_mut_ptr();
            m.msg_hdr.msg_iovlen = 3;
            m.msg_hdr.msg_control = self.cmsgs[i].as_mut_ptr().cast();
            m.msg_hdr.msg_controllen = CMSG_SPACE as _;
            msgs[i].write(m);
        }
        // SAFETY: `msgs[..n]` (written above) point to iovecs describing memory this port owns for the call
        // (pool frames and large buffers allocated above, `self.hdrs`, `self.overflow`) and to
        // control buffers in `self.cmsgs` of the given sizes; the kernel writes at most those
        // lengths. No timeout pointer.
        let r = unsafe {
            libc::recvmmsg(
                fd,
                msgs.as_mut_ptr().cast::<libc::mmsghdr>(),
                n as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        let got = if r < 0 {
            let e = io::Error::last_os_error();
            if !matches!(e.raw_os_error(), Some(libc::EAGAIN | libc::EINTR)) {
                self.stats.rx_errors += 1;
                self.note_errno(&e, "recvmmsg");
                // EINVAL: the kernel took a frame off the queue whose offloads
                // `PACKET_VNET_HDR` cannot describe, and dropped it. Said once.
                if e.raw_os_error() == Some(libc::EINVAL) && !self.warned_undescribed {
                    self.warned_undescribed = true;
                    tracing::warn!(
                        "afpacket {}: the kernel dropped a received frame whose offloads a \
                         packet socket cannot be told (counted in recv_errors); turning off \
                         segmentation offloads on the sending device avoids it",
                        self.ifname
                    );
                }
            }
            0
        } else {
            r as usize
        };
        if got > 0 {
            self.stats.rx_batches += 1;
        }
        for i in 0..n {
            if i < got {
                // SAFETY: entries 0..n were written above, and got <= n.
                let m = unsafe { msgs[i].assume_init_ref() };
                let (len, trunc) = (m.msg_len as usize, m.msg_hdr.msg_flags & libc::MSG_TRUNC);
                let vlan = aux_vlan(&m.msg_hdr);
                let big_i = big[i].take();
                let Some((d, tunnel_mss)) =
                    self.finish(frames, i, small[i], big_i, len, trunc != 0, vlan)
                else {
                    continue;
                };
                if let Some(mss) = tunnel_mss {
                    // A kernel VXLAN device's TCP super-frame, encapsulated whole: cut into
                    // VXLAN packets of one segment each.
                    if crate::pipeline::split_tunnel(frames, d, mss.into(), out).is_err() {
                        self.stats.rx_bad_vnet += 1;
                    }
                } else if d.ol.gso_type() == Some(GsoType::Udp4) {
                    // A UDP GSO frame (a peer VTEP's concatenated datagrams): cut at once.
                    self.uso_seen = true;
                    if crate::pipeline::split_udp(frames, d, out).is_err() {
                        self.stats.rx_bad_vnet += 1;
                    }
                } else {
                    out.push(d);
                }
            } else {
                frames.free(small[i].addr);
                if let Some(b) = big[i].take() {
                    frames.free(b.addr);
                }
            }
        }
        got
    }

    /// Turn message `i`'s bytes into a descriptor (or drop it, counted, freeing both buffers),
    /// with the segment size when it is a UDP-tunnel super-frame (its offload state is then
    /// none: `pipeline::split_tunnel` cuts it).
    #[allow(clippy::too_many_arguments)]
    fn finish(
        &mut self,
        frames: &mut Frames,
        i: usize,
        mut d: Desc,
        big: Option<Desc>,
        n: usize,
        trunc: bool,
        vlan: Option<(u16, u16)>,
    ) -> Option<(Desc, Option<u16>)> {
        let len = n.saturating_sub(VNET_HDR_LEN);
        let mut h = virtio_net_hdr::from_bytes(&self.hdrs[i]);
        let fits = !trunc && len <= MAX_FRAME_LEN + big.map_or(0, |_| MAX_BIG_LEN - MAX_FRAME_LEN);
        if !fits || (len > MAX_FRAME_LEN && h.gso_type == 0) {
            frames.free(d.addr);
            if let Some(b) = big {
                frames.free(b.addr);
            }
            self.stats.rx_oversize += 1;
            return None;
        }
        match big {
            Some(b) if len > MAX_FRAME_LEN => d = into_big(frames, d, b, len),
            Some(b) => {
                frames.free(b.addr);
                d.len = len as u32;
            }
            None => d.len = len as u32,
        }
        if let Some((tpid, tci)) = vlan
            && len >= ETH_HLEN
        {
            d = insert_tag(frames, d, tpid, tci);
            if h.flags & NEEDS_CSUM != 0 {
                h.csum_start += 4;
            }
            self.stats.rx_vlan += 1;
        }
        let tunnel = h.tunnel_mss(frames.data(d));
        let d = match tunnel {
            Some(_) => {
                self.stats.rx_gso += 1;
                d
            }
            None => self.stats.rx_offload(frames, &h, d)?,
        };
        self.stats.rx_packets += 1;
        self.stats.rx_bytes += u64::from(d.len);
        Some((d, tunnel))
    }

    /// One `sendmmsg` of `batch` (at most [`BATCH`] frames); frames are freed afterwards.
    fn send_batch(&mut self, fd: RawFd, frames: &mut Frames, batch: &[Desc], res: &mut TxResult) {
        let n = batch.len();
        let mut hdrs = [[0u8; VNET_HDR_LEN]; BATCH];
        let empty = libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        };
        let mut iov = [[empty; 2]; BATCH];
        // SAFETY: all-zero is a valid mmsghdr (see recv_batch).
        let mut msgs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
        for (i, d) in batch.iter().enumerate() {
            let data = frames.data(*d);
            hdrs[i] = virtio_net_hdr::for_frame(data, d.ol).to_bytes();
            iov[i][0] = libc::iovec {
                iov_base: hdrs[i].as_mut_ptr().cast(),
                iov_len: VNET_HDR_LEN,
            };
            iov[i][1] = libc::iovec {
                iov_base: data.as_ptr() as *mut libc::c_void,
                iov_len: data.len(),
            };
            msgs[i].msg_hdr.msg_iov = iov[i].as_mut_ptr();
            msgs[i].msg_hdr.msg_iovlen = 2;
        }
        let mut at = 0;
        let mut eintr = 0;
        while at < n {
            // SAFETY: `msgs[at..n]` describe `hdrs` and frame data that live across the call;
            // sendmmsg only reads them. No address: the socket is bound to its netdev.
            let r = unsafe {
                libc::sendmmsg(
                    fd,
                    msgs[at..].as_mut_ptr(),
                    (n - at) as libc::c_uint,
                    libc::MSG_DONTWAIT,
                )
            };
            self.stats.tx_batches += 1;
            if r > 0 {
                for i in at..at + r as usize {
                    res.sent += 1;
                    res.bytes += u64::from(batch[i].len);
                    self.stats.tx_vnet(&hdrs[i]);
                }
                at += r as usize;
                continue;
            }
            let e = io::Error::last_os_error();
            let errno = e.raw_os_error().unwrap_or(0);
            if errno == libc::EINTR && eintr < 3 {
                eintr += 1;
                continue;
            }
            self.note_errno(&e, "sendmmsg");
            // Message `at` failed; a full buffer or a down link fails the rest alike.
            let rest = if matches!(errno, libc::EAGAIN | libc::ENOBUFS | libc::ENETDOWN)
                || device_gone(errno)
            {
                n - at
            } else {
                1
            };
            if matches!(errno, libc::EAGAIN | libc::ENOBUFS | libc::ENETDOWN) {
                self.stats.tx_dropped += rest as u64;
            } else {
                self.stats.tx_errors += rest as u64;
            }
            res.dropped += rest as u32;
            at += rest;
        }
        for d in batch {
            frames.free(d.addr);
        }
    }
}

/// How many frames to ask the next `recvmmsg` for, after asking for `want` (the target was
/// `target`) and getting `got`: double while calls come back full, fall to what came when they
/// do not. An idle port asks for one, so an empty poll allocates one frame and one large
/// buffer instead of [`BATCH`] of each.
fn next_want(target: usize, want: usize, got: usize) -> usize {
    if got == want && want == target {
        (target * 2).min(BATCH)
    } else if got < want {
        got.clamp(1, BATCH)
    } else {
        target
    }
}

/// `bind(fd, {AF_PACKET, ETH_P_ALL, ifindex})`.
fn bind(fd: &OwnedFd, ifindex: u32) -> io::Result<()> {
    // SAFETY: all-zero is a valid sockaddr_ll.
    let mut sa: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sa.sll_family = libc::AF_PACKET as u16;
    sa.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
    sa.sll_ifindex = ifindex as i32;
    // SAFETY: `sa` is a live sockaddr_ll and its size is passed; bind only reads it.
    let r = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&raw const sa).cast(),
            size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// The VLAN tag (TPID, TCI) the kernel removed from a received frame, from its
/// `PACKET_AUXDATA` control message.
fn aux_vlan(h: &libc::msghdr) -> Option<(u16, u16)> {
    // SAFETY: `h` was filled by recvmmsg: msg_control/msg_controllen describe the control
    // buffer the kernel wrote; the CMSG_* macros stay within msg_controllen.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(h);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_PACKET && (*c).cmsg_type == libc::PACKET_AUXDATA {
                let a: libc::tpacket_auxdata = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast());
                return vlan_of(&a);
            }
            c = libc::CMSG_NXTHDR(h, c);
        }
    }
    None
}

/// The tag `PACKET_AUXDATA` reports, if any (TPID 0x8100 when the kernel does not say).
fn vlan_of(a: &libc::tpacket_auxdata) -> Option<(u16, u16)> {
    if a.tp_status & libc::TP_STATUS_VLAN_VALID == 0 {
        return None;
    }
    let tpid = if a.tp_status & libc::TP_STATUS_VLAN_TPID_VALID != 0 {
        a.tp_vlan_tpid
    } else {
        0x8100
    };
    Some((tpid, a.tp_vlan_tci))
}

/// Put a VLAN tag back after the MAC addresses, using 4 bytes of headroom: the 802.1Q push of
/// the pipeline ([`vlan::push`]), then the TPID the kernel reported (802.1ad's 0x88a8, say).
fn insert_tag(frames: &mut Frames, d: Desc, tpid: u16, tci: u16) -> Desc {
    let chunk = frames.chunk_mut(d.chunk());
    let start = vlan::push(chunk, d.headroom(), tci);
    chunk[start + 12..start + 14].copy_from_slice(&tpid.to_be_bytes());
    Desc {
        addr: d.addr - vlan::TAG_LEN as u64,
        len: d.len + vlan::TAG_LEN as u32,
        ..d
    }
}

impl Port for AfpacketPort {
    fn kind(&self) -> PortKind {
        PortKind::Afpacket
    }

    fn rx_burst(&mut self, frames: &mut Frames, out: &mut Vec<Desc>, max: usize) -> usize {
        let Some(fd) = self.fd.as_ref().map(|f| f.as_raw_fd()) else {
            return 0;
        };
        // `room` counts frames, not messages: a UDP GSO message becomes up to 64 datagrams.
        // Once such messages arrive, a read asks for as many messages as 64-datagram ones fit
        // (at least one), so a burst ends at most 63 frames past `max` (the first read of the
        // first such message excepted).
        let start = out.len();
        let mut room = max;
        while room > 0 {
            let fit = if self.uso_seen {
                (room / crate::pipeline::uso_max_segs()).max(1)
            } else {
                room
            };
            let want = self.rx_want.min(fit);
            let got = self.recv_batch(fd, frames, out, want);
            room = max.saturating_sub(out.len() - start);
            self.rx_want = next_want(self.rx_want, want, got);
            if got < want {
                break;
            }
        }
        out.len() - start
    }

    fn tx_burst(&mut self, frames: &mut Frames, batch: &mut Vec<Desc>) -> TxResult {
        let mut res = TxResult::default();
        let Some(fd) = self.fd.as_ref().map(|f| f.as_raw_fd()) else {
            res.dropped = batch.len() as u32;
            self.stats.tx_errors += batch.len() as u64;
            for d in batch.drain(..) {
                frames.free(d.addr);
            }
            return res;
        };
        for chunk in batch.chunks(BATCH) {
            self.send_batch(fd, frames, chunk, &mut res);
        }
        batch.clear();
        self.stats.tx_packets += u64::from(res.sent);
        self.stats.tx_bytes += res.bytes;
        res
    }

    fn service(&mut self, _frames: &mut Frames) {}

    fn poll_fds(&self, out: &mut Vec<RawFd>) {
        out.extend(self.fd.as_ref().map(|f| f.as_raw_fd()));
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

    fn offload_out(&self) -> bool {
        true
    }

    fn uso_out(&self) -> bool {
        true
    }

    fn housekeep(&mut self, _frames: &mut Frames, _now_ms: u64) {
        let Some(fd) = self.fd.as_ref() else { return };
        let mut s = libc::tpacket_stats {
            tp_packets: 0,
            tp_drops: 0,
        };
        let mut len = size_of::<libc::tpacket_stats>() as libc::socklen_t;
        // SAFETY: `s` and `len` are live and describe a tpacket_stats; the kernel writes at
        // most `len` bytes (and resets its counters: they are summed here).
        let r = unsafe {
            libc::getsockopt(
                fd.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_STATISTICS,
                (&raw mut s).cast(),
                &mut len,
            )
        };
        if r == 0 {
            self.stats.kernel_drops += u64::from(s.tp_drops);
        }
    }

    fn kernel_counters(&self) -> Vec<(&'static str, u64)> {
        vec![
            ("socket_rcvbuf_drops", self.stats.kernel_drops),
            ("recv_errors", self.stats.rx_errors),
            ("rx_bad_vnet", self.stats.rx_bad_vnet),
            ("rx_oversize", self.stats.rx_oversize),
        ]
    }

    fn details(&self) -> String {
        let mut s = format!(
            "ifindex={} mtu={} offload=csum,tso batch={BATCH}",
            self.ifindex, self.mtu
        );
        if self.fd.is_none() {
            s.push_str(" closed");
        }
        s
    }

    fn close(&mut self, _frames: &mut Frames) {
        self.release();
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
    fn mtu_limit_names_the_netdev() {
        assert!(check_mtu("v0", 1500).is_ok());
        let e = check_mtu("v0", 9000).unwrap_err().to_string();
        assert!(
            e.contains("v0") && e.contains("9000") && e.contains("1774"),
            "{e}"
        );
        let e = AfpacketPort::open("uvs-no-such0", 1)
            .unwrap_err()
            .to_string();
        assert!(e.contains("uvs-no-such0"), "{e}");
    }

    #[test]
    fn receive_batches_grow_under_load_and_shrink_when_idle() {
        let mut t = 1;
        let mut seen = vec![];
        for _ in 0..7 {
            t = next_want(t, t, t); // every call full
            seen.push(t);
        }
        assert_eq!(seen, [2, 4, 8, 16, 32, 32, 32]);
        assert_eq!(next_want(32, 32, 5), 5);
        assert_eq!(next_want(32, 32, 0), 1);
        // The last call of a burst asked for less than the target (the burst's room): keep it.
        assert_eq!(next_want(32, 10, 10), 32);
    }

    #[test]
    fn vlan_tags_from_auxdata() {
        let mut a = libc::tpacket_auxdata {
            tp_status: 0,
            tp_len: 0,
            tp_snaplen: 0,
            tp_mac: 0,
            tp_net: 0,
            tp_vlan_tci: 0x2005,
            tp_vlan_tpid: 0x88a8,
        };
        assert_eq!(vlan_of(&a), None);
        a.tp_status = libc::TP_STATUS_VLAN_VALID;
        assert_eq!(vlan_of(&a), Some((0x8100, 0x2005)));
        a.tp_status |= libc::TP_STATUS_VLAN_TPID_VALID;
        assert_eq!(vlan_of(&a), Some((0x88a8, 0x2005)));
    }

    #[test]
    fn tag_is_put_back_after_the_macs() {
        let mut frames = Frames::new(64).unwrap();
        let mut d = frames.alloc().unwrap();
        let f: Vec<u8> = (0..60u8).collect();
        d.len = 60;
        frames.data_mut(d).copy_from_slice(&f);
        let t = insert_tag(&mut frames, d, 0x8100, 7);
        let b = frames.data(t);
        assert_eq!(t.len, 64);
        assert_eq!(t.addr, d.addr - 4);
        assert_eq!(&b[..12], &f[..12]);
        assert_eq!(&b[12..16], &[0x81, 0x00, 0x00, 0x07]);
        assert_eq!(&b[16..], &f[12..]);
        // An 802.1ad tag keeps its TPID.
        let mut d = frames.alloc().unwrap();
        d.len = 60;
        frames.data_mut(d).copy_from_slice(&f);
        let t = insert_tag(&mut frames, d, 0x88a8, 0x2005);
        let b = frames.data(t);
        assert_eq!(&b[..12], &f[..12]);
        assert_eq!(&b[12..16], &[0x88, 0xa8, 0x20, 0x05]);
        assert_eq!(&b[16..], &f[12..]);
    }
}
