//! What the two ports that read and write whole frames through a kernel descriptor share: TAP
//! (`readv`/`writev` on a tun fd) and AF_PACKET (`recvmmsg`/`sendmmsg` on a packet socket), each
//! frame behind a `virtio_net_hdr` ([`super::vnet`]). No system call here: the ports make them.
//!
//! Contract:
//! - `rx_iovecs` lays out one receive: the header, the pool frame after its headroom
//!   ([`MAX_FRAME_LEN`] bytes), then the rest of a large buffer, or (without one) a single
//!   overflow byte that only detects an oversize frame.
//! - `into_big` moves a received frame that continued into its large buffer there: its first
//!   [`MAX_FRAME_LEN`] bytes are copied in front and the pool frame is freed.
//! - [`DeviceStats`] are the counters of both ports (a field one port does not count stays 0);
//!   `DeviceStats::rx_offload` turns a received header into the frame's offload state or a
//!   drop, `DeviceStats::tx_vnet` counts a transmitted header, `DeviceStats::note_errno`
//!   records a failed call and sets the port's fault when the device is gone.

use std::io;

use super::vnet::{NEEDS_CSUM, VNET_HDR_LEN, offload_of, virtio_net_hdr};
use crate::packet::{Desc, Frames, MAX_BIG_LEN, MAX_FRAME_LEN};

/// Counters of one TAP or AF_PACKET port.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeviceStats {
    /// Frames received and handed to the worker (TAP: runts included).
    pub rx_packets: u64,
    /// Bytes of those frames.
    pub rx_bytes: u64,
    /// `recvmmsg` calls that returned frames (rx_packets / rx_batches = frames per call;
    /// AF_PACKET).
    pub rx_batches: u64,
    /// TCP super-frames received.
    pub rx_gso: u64,
    /// Frames received with a partial checksum (super-frames included).
    pub rx_csum_partial: u64,
    /// Frames received with a VLAN tag the kernel had removed (put back; AF_PACKET).
    pub rx_vlan: u64,
    /// Frames shorter than an Ethernet header, handed on all the same (the pipeline drops them;
    /// TAP).
    pub rx_runts: u64,
    /// Frames too large for their buffers (larger than [`MAX_FRAME_LEN`] and not a super-frame,
    /// or truncated by the kernel): dropped.
    pub rx_oversize: u64,
    /// Frames whose `virtio_net_hdr` could not be honoured (UDP segmentation a port cannot
    /// take, a super-frame the pipeline cannot parse): dropped.
    pub rx_bad_vnet: u64,
    /// Reads that failed with an error other than EAGAIN/EINTR (EBADFD: the device was deleted).
    pub rx_errors: u64,
    /// Frames sent.
    pub tx_packets: u64,
    /// Bytes of those frames.
    pub tx_bytes: u64,
    /// `sendmmsg` calls (AF_PACKET).
    pub tx_batches: u64,
    /// TCP super-frames sent.
    pub tx_gso: u64,
    /// Frames sent with a partial checksum (super-frames included).
    pub tx_csum_partial: u64,
    /// Frames the device refused for now (EAGAIN, ENOBUFS; TAP: EIO, link down; AF_PACKET:
    /// ENETDOWN): dropped.
    pub tx_dropped: u64,
    /// Frames refused otherwise (EINVAL: a TAP frame shorter than 14 bytes; EMSGSIZE; EBADFD,
    /// ENXIO: the device was deleted; or the port was closed): dropped.
    pub tx_errors: u64,
    /// Frames the kernel dropped because the socket's receive buffer was full
    /// (`PACKET_STATISTICS`, summed at housekeeping; AF_PACKET).
    pub kernel_drops: u64,
    /// errno of the last failed read or write, 0 if none failed.
    pub last_errno: i32,
}

impl DeviceStats {
    /// Give the received frame `d` the offload state its header `h` describes, counting it.
    /// None: the header cannot be honoured; `d` was freed and the drop counted.
    pub(super) fn rx_offload(
        &mut self,
        frames: &mut Frames,
        h: &virtio_net_hdr,
        mut d: Desc,
    ) -> Option<Desc> {
        match offload_of(h, frames.data_mut(d)) {
            Some(ol) => d.ol = ol,
            None => {
                frames.free(d.addr);
                self.rx_bad_vnet += 1;
                return None;
            }
        }
        self.rx_csum_partial += u64::from(d.ol.is_partial());
        self.rx_gso += u64::from(d.ol.gso_type().is_some());
        Some(d)
    }

    /// Count the header `h` of a frame the kernel took.
    pub(super) fn tx_vnet(&mut self, h: &[u8; VNET_HDR_LEN]) {
        self.tx_csum_partial += u64::from(h[0] & NEEDS_CSUM);
        self.tx_gso += u64::from(h[1] != 0);
    }

    /// Record the errno of failed call `e`; when it says the device is gone
    /// ([`super::sys::device_gone`]) and `fault` is not set yet, set it to `why(e)`.
    pub(super) fn note_errno(
        &mut self,
        fault: &mut Option<String>,
        e: &io::Error,
        why: impl FnOnce(&io::Error) -> String,
    ) {
        let errno = e.raw_os_error().unwrap_or(0);
        self.last_errno = errno;
        super::sys::note_gone(fault, errno, || why(e));
    }
}

/// The iovecs of one receive into pool frame `small` (after its headroom), continuing into the
/// large buffer `big` after its first [`MAX_FRAME_LEN`] bytes, or into `overflow` without one;
/// the `virtio_net_hdr` goes to `hdr` (a port without one passes `&iov[1..]`).
pub(super) fn rx_iovecs(
    frames: &mut Frames,
    small: Desc,
    big: Option<Desc>,
    hdr: &mut [u8; VNET_HDR_LEN],
    overflow: &mut [u8; 1],
) -> [libc::iovec; 3] {
    [
        libc::iovec {
            iov_base: hdr.as_mut_ptr().cast(),
            iov_len: VNET_HDR_LEN,
        },
        libc::iovec {
            iov_base: frames.chunk_mut(small.chunk())[small.headroom()..]
                .as_mut_ptr()
                .cast(),
            iov_len: MAX_FRAME_LEN,
        },
        match big {
            Some(b) => libc::iovec {
                iov_base: frames.chunk_mut(b.chunk())[b.headroom() + MAX_FRAME_LEN..]
                    .as_mut_ptr()
                    .cast(),
                iov_len: MAX_BIG_LEN - MAX_FRAME_LEN,
            },
            None => libc::iovec {
                iov_base: overflow.as_mut_ptr().cast(),
                iov_len: overflow.len(),
            },
        },
    ]
}

/// The frame of `len` bytes (more than [`MAX_FRAME_LEN`]) received into `d` and continued into
/// `big` (see [`rx_iovecs`]), moved into `big`: the first bytes are copied in front, `d` is
/// freed.
pub(super) fn into_big(frames: &mut Frames, d: Desc, mut big: Desc, len: usize) -> Desc {
    frames.copy_bytes(d.addr, big.addr, MAX_FRAME_LEN);
    frames.free(d.addr);
    big.len = len as u32;
    big
}
