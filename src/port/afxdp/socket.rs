//! One AF_XDP (XSK) socket bound to one queue of a netdev, with its four rings mapped.
//!
//! Contract:
//! - [`XskSocket::open`] creates the socket, either registers the UMEM on it
//!   ([`Umem::Register`]) or shares an existing one ([`Umem::Shared`]), sizes and maps its own
//!   rx, tx, fill and completion rings, then binds it to `(ifindex, queue)`.
//! - A sharing socket always has its own fill and completion rings (it may be on another device
//!   or queue, kernel >= 5.10) and binds with `XDP_SHARED_UMEM` alone: the kernel rejects
//!   `XDP_COPY`, `XDP_ZEROCOPY` and `XDP_USE_NEED_WAKEUP` together with it, and gives the socket
//!   the copy/zero-copy mode and need-wakeup setting of the socket that registered the UMEM.
//! - All `mmap`s happen before `bind`: the kernel refuses ring mmaps on a bound socket (EBUSY).
//! - Dropping the socket unmaps the rings and closes the fd, which also removes it from any
//!   XSKMAP. Frames still in its rings are the owner's to reclaim (`Frames::reclaim`).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use super::AfxdpError;
use super::ring::Ring;
use crate::packet::FRAME_SIZE;

/// Where a socket's UMEM comes from.
#[derive(Clone, Copy, Debug)]
pub enum Umem {
    /// Register the region `base .. base + len` (page aligned) as a new UMEM on this socket.
    Register { base: *mut u8, len: usize },
    /// Share the UMEM of this already bound XSK socket of the process.
    Shared(RawFd),
}

impl Umem {
    /// Share the UMEM of the bound socket `shared` when there is one, else register the region
    /// `base .. base + len` (the worker's frames).
    pub fn shared_or_register(shared: Option<RawFd>, base: *mut u8, len: usize) -> Umem {
        match shared {
            Some(fd) => Umem::Shared(fd),
            None => Umem::Register { base, len },
        }
    }
}

/// A bound XSK socket and its rings. Rings are declared before the fd so they unmap first.
pub struct XskSocket {
    /// Received descriptors (kernel produces).
    pub rx: Ring<libc::xdp_desc>,
    /// Descriptors to transmit (we produce).
    pub tx: Ring<libc::xdp_desc>,
    /// Empty chunks for the kernel to receive into (we produce).
    pub fill: Ring<u64>,
    /// Transmitted chunks handed back (kernel produces).
    pub comp: Ring<u64>,
    fd: OwnedFd,
    /// The netdev queue this socket is bound to.
    pub queue: u32,
    /// Frames given to the kernel for receiving on this socket (in the fill or rx ring).
    pub rx_held: u32,
    /// Frames received on this socket since open.
    pub rx_packets: u64,
}

/// `XDP_MAX_TX_SKB_BUDGET` from `linux/if_xdp.h` (Linux 6.17), not yet in the libc crate.
const XDP_MAX_TX_SKB_BUDGET: libc::c_int = 9;

fn setsockopt<T>(fd: RawFd, opt: libc::c_int, v: &T) -> io::Result<()> {
    // SAFETY: `v` is a live value of the size passed; the kernel only reads it.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_XDP,
            opt,
            (v as *const T).cast(),
            size_of::<T>() as libc::socklen_t,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// A duplicate (close-on-exec) of the socket `fd`, to bind a socket of another thread to its
/// UMEM: the duplicate keeps the socket, and so the UMEM registration, alive until it is
/// dropped even if the port owning `fd` closes meanwhile.
pub fn dup_fd(fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: fcntl(F_DUPFD_CLOEXEC) reads no memory; an invalid fd is answered with EBADF.
    let r = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `r` is a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(r) })
}

impl XskSocket {
    /// Create, set up and bind a socket on `(ifindex, queue)` with `ring_size` entries per ring.
    /// `bind_flags` is used only with [`Umem::Register`]; a sharing socket binds with
    /// `XDP_SHARED_UMEM` alone.
    pub fn open(
        ifname: &str,
        ifindex: u32,
        queue: u32,
        ring_size: u32,
        umem: Umem,
        bind_flags: u16,
    ) -> Result<XskSocket, AfxdpError> {
        let step = |what: &str| format!("{what} (queue {queue})");
        let err = |what: &str, e: io::Error| AfxdpError::sys(ifname, step(what), e);
        // SAFETY: plain socket(2) call; the result is checked.
        let raw = unsafe { libc::socket(libc::AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            return Err(err("socket(AF_XDP)", io::Error::last_os_error()));
        }
        // SAFETY: `raw` is a new fd that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let s = fd.as_raw_fd();

        if let Umem::Register { base, len } = umem {
            let reg = libc::xdp_umem_reg {
                addr: base as u64,
                len: len as u64,
                chunk_size: FRAME_SIZE as u32,
                headroom: 0,
                flags: 0,
                tx_metadata_len: 0,
            };
            setsockopt(s, libc::XDP_UMEM_REG, &reg).map_err(|e| err("XDP_UMEM_REG", e))?;
        }
        for (opt, name) in [
            (libc::XDP_UMEM_FILL_RING, "XDP_UMEM_FILL_RING"),
            (libc::XDP_UMEM_COMPLETION_RING, "XDP_UMEM_COMPLETION_RING"),
            (libc::XDP_RX_RING, "XDP_RX_RING"),
            (libc::XDP_TX_RING, "XDP_TX_RING"),
        ] {
            setsockopt(s, opt, &ring_size).map_err(|e| err(name, e))?;
        }
        // Copy mode sends at most 32 descriptors per sendto unless told otherwise (Linux >= 6.17,
        // XDP_MAX_TX_SKB_BUDGET, range 32..=tx ring size): let one kick drain the whole ring.
        // Older kernels answer ENOPROTOOPT and keep 32, which only costs more kicks.
        let _ = setsockopt(s, XDP_MAX_TX_SKB_BUDGET, &ring_size);

        // SAFETY: xdp_mmap_offsets is plain integers; all-zero is a valid value.
        let mut off: libc::xdp_mmap_offsets = unsafe { std::mem::zeroed() };
        let mut optlen = size_of::<libc::xdp_mmap_offsets>() as libc::socklen_t;
        // SAFETY: `off`/`optlen` are live and sized as declared; the kernel writes at most optlen.
        let r = unsafe {
            libc::getsockopt(
                s,
                libc::SOL_XDP,
                libc::XDP_MMAP_OFFSETS,
                (&mut off as *mut libc::xdp_mmap_offsets).cast(),
                &mut optlen,
            )
        };
        if r < 0 {
            return Err(err("XDP_MMAP_OFFSETS", io::Error::last_os_error()));
        }
        if optlen as usize != size_of::<libc::xdp_mmap_offsets>() {
            return Err(AfxdpError::sys(
                ifname,
                step("XDP_MMAP_OFFSETS"),
                io::Error::other("kernel too old: ring offsets without a flags word"),
            ));
        }
        let rx = Ring::map(s, ring_size, libc::XDP_PGOFF_RX_RING, &off.rx, false)
            .map_err(|e| err("mmap rx ring", e))?;
        let tx = Ring::map(s, ring_size, libc::XDP_PGOFF_TX_RING, &off.tx, true)
            .map_err(|e| err("mmap tx ring", e))?;
        let fill = Ring::map(
            s,
            ring_size,
            libc::XDP_UMEM_PGOFF_FILL_RING as i64,
            &off.fr,
            true,
        )
        .map_err(|e| err("mmap fill ring", e))?;
        let comp = Ring::map(
            s,
            ring_size,
            libc::XDP_UMEM_PGOFF_COMPLETION_RING as i64,
            &off.cr,
            false,
        )
        .map_err(|e| err("mmap completion ring", e))?;

        let (flags, shared_fd) = match umem {
            Umem::Register { .. } => (bind_flags, 0),
            Umem::Shared(f) => (libc::XDP_SHARED_UMEM, f as u32),
        };
        let sa = libc::sockaddr_xdp {
            sxdp_family: libc::AF_XDP as u16,
            sxdp_flags: flags,
            sxdp_ifindex: ifindex,
            sxdp_queue_id: queue,
            sxdp_shared_umem_fd: shared_fd,
        };
        // SAFETY: `sa` is a live sockaddr_xdp and its exact size is passed.
        let r = unsafe {
            libc::bind(
                s,
                (&sa as *const libc::sockaddr_xdp).cast(),
                size_of::<libc::sockaddr_xdp>() as libc::socklen_t,
            )
        };
        if r < 0 {
            return Err(err("bind", io::Error::last_os_error()));
        }
        Ok(XskSocket {
            rx,
            tx,
            fill,
            comp,
            fd,
            queue,
            rx_held: 0,
            rx_packets: 0,
        })
    }

    /// The socket fd.
    #[inline]
    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Ask the kernel to transmit what is in the tx ring. Returns the errno of an unexpected
    /// error (ENXIO: the socket was unbound because its netdev went away); EAGAIN, EBUSY,
    /// ENOBUFS and ENETDOWN mean "try again next iteration" and give None.
    #[inline]
    pub fn kick_tx(&self) -> Option<i32> {
        // SAFETY: a zero-length send with null buffers is the AF_XDP tx doorbell.
        let r = unsafe {
            libc::sendto(
                self.fd(),
                std::ptr::null(),
                0,
                libc::MSG_DONTWAIT,
                std::ptr::null(),
                0,
            )
        };
        if r >= 0 {
            return None;
        }
        let e = io::Error::last_os_error();
        (!transient(&e)).then(|| e.raw_os_error().unwrap_or(0))
    }

    /// Wake the kernel's rx path (needed when the fill ring has NEED_WAKEUP set, zero-copy).
    #[inline]
    pub fn kick_rx(&self) {
        // SAFETY: a zero-length receive with null buffers is the AF_XDP rx doorbell.
        unsafe {
            libc::recvfrom(
                self.fd(),
                std::ptr::null_mut(),
                0,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
            );
        }
    }

    /// True if the kernel runs this socket in zero-copy mode (`XDP_OPTIONS`).
    pub fn is_zero_copy(&self) -> bool {
        let fd = self.fd();
        let mut o = libc::xdp_options { flags: 0 };
        let mut len = size_of::<libc::xdp_options>() as libc::socklen_t;
        // SAFETY: `o`/`len` are live and sized as declared.
        let r = unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_XDP,
                libc::XDP_OPTIONS,
                (&mut o as *mut libc::xdp_options).cast(),
                &mut len,
            )
        };
        r == 0 && o.flags & libc::XDP_OPTIONS_ZEROCOPY != 0
    }

    /// The kernel's `XDP_STATISTICS` for this socket (zeros if the call fails).
    pub fn statistics(&self) -> libc::xdp_statistics {
        // SAFETY: plain integers; all-zero is valid.
        let mut st: libc::xdp_statistics = unsafe { std::mem::zeroed() };
        let mut len = size_of::<libc::xdp_statistics>() as libc::socklen_t;
        // SAFETY: `st`/`len` are live and sized as declared.
        unsafe {
            libc::getsockopt(
                self.fd(),
                libc::SOL_XDP,
                libc::XDP_STATISTICS,
                (&mut st as *mut libc::xdp_statistics).cast(),
                &mut len,
            );
        }
        st
    }
}

fn transient(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EAGAIN | libc::EBUSY | libc::ENOBUFS | libc::ENETDOWN)
    )
}
