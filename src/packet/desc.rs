//! Frame descriptors, their offload state, and owner tags.

use super::{BIG_BASE, BIG_SIZE, FRAME_SIZE};

/// One frame: the offset of its first data byte in the region, its length, and its offload
/// state.
///
/// 16 bytes, `Copy`: descriptors move through the pipeline and the AF_XDP rings by value. An
/// `addr` at or above [`BIG_BASE`] names a large (GSO) buffer of [`BIG_SIZE`] bytes instead of
/// a [`FRAME_SIZE`] chunk of the shared region; such frames come only from TAP ports with
/// `IFF_VNET_HDR` and never reach an AF_XDP ring (output segments them first).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Desc {
    /// Offset of the first data byte inside the region.
    pub addr: u64,
    /// Data length in bytes.
    pub len: u32,
    /// Checksum and segmentation offload state (fits the struct's padding).
    pub ol: Offload,
}

const _: () = assert!(size_of::<Desc>() == 16);

impl Desc {
    /// A frame without offload state.
    #[inline]
    pub fn new(addr: u64, len: u32) -> Desc {
        Desc {
            addr,
            len,
            ol: Offload::NONE,
        }
    }

    /// True if the frame lives in a large buffer (see [`BIG_BASE`]).
    #[inline]
    pub fn is_big(&self) -> bool {
        self.addr >= BIG_BASE
    }

    /// Size of the buffer this frame lives in.
    #[inline]
    pub fn buf_size(&self) -> usize {
        if self.is_big() { BIG_SIZE } else { FRAME_SIZE }
    }

    /// The start of this frame's chunk (or large buffer).
    #[inline]
    pub fn chunk(&self) -> u64 {
        self.addr & !(self.buf_size() as u64 - 1)
    }

    /// Bytes of headroom in front of the data.
    #[inline]
    pub fn headroom(&self) -> usize {
        (self.addr - self.chunk()) as usize
    }

    /// Bytes free after the data, up to the chunk end.
    #[inline]
    pub fn tailroom(&self) -> usize {
        self.buf_size() - self.headroom() - self.len as usize
    }
}

/// Checksum and segmentation offload state of a frame (VPP's `vlib_buffer_t` offload flags,
/// the kernel's `virtio_net_hdr`), packed in 32 bits.
///
/// - **partial**: the TCP/UDP checksum field holds only the pseudo-header sum; the L4 header
///   is found by parsing the frame (Ethernet, one optional VLAN tag, IPv4 or IPv6 without
///   extension headers), so header pushes and pops need no update here. Whoever sends the
///   frame completes it, or passes it to a device that will (TAP with `VIRTIO_NET_HDR_F_NEEDS_CSUM`).
/// - **gso**: the frame is a TCP super-frame to be cut into segments of `gso_size` payload
///   bytes (IP ids, lengths, checksums and TCP sequence numbers and flags fixed per segment).
///   A GSO frame is always partial too. `GsoType::Udp4` frames (one UDP payload to be cut into
///   datagrams of `gso_size` bytes) exist only between `pipeline::uso` and an AF_PACKET port's
///   transmit, and between an AF_PACKET port's receive and its cut (`pipeline::split_udp`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Offload(u32);

/// What kind of segmentation a GSO frame needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GsoType {
    /// TCP over IPv4.
    Tcp4,
    /// TCP over IPv6.
    Tcp6,
    /// UDP over IPv4 (USO): the payload is cut into datagrams of `gso_size` bytes, each behind a
    /// copy of the headers. uvs makes these only for the underlay of its VXLAN tunnels (the
    /// encapsulated segments of one TCP super-frame laid back to back, see `pipeline::gro`)
    /// and cuts received ones at once (`pipeline::split_udp`).
    Udp4,
}

impl Offload {
    /// Nothing offloaded: checksums complete, frame no larger than the MTU.
    pub const NONE: Offload = Offload(0);
    const PARTIAL: u32 = 1 << 16;
    const TCP4: u32 = 1 << 17;
    const TCP6: u32 = 1 << 18;
    const UDP4: u32 = 1 << 19;

    /// A partial checksum, no segmentation.
    pub const fn partial() -> Offload {
        Offload(Self::PARTIAL)
    }

    /// A GSO frame of type `t` with `size` payload bytes per segment (partial checksum too).
    pub const fn gso(t: GsoType, size: u16) -> Offload {
        let bit = match t {
            GsoType::Tcp4 => Self::TCP4,
            GsoType::Tcp6 => Self::TCP6,
            GsoType::Udp4 => Self::UDP4,
        };
        Offload(Self::PARTIAL | bit | size as u32)
    }

    /// True if nothing is offloaded.
    #[inline]
    pub fn is_none(self) -> bool {
        self.0 == 0
    }

    /// True if the L4 checksum is partial.
    #[inline]
    pub fn is_partial(self) -> bool {
        self.0 & Self::PARTIAL != 0
    }

    /// The GSO type, if the frame is a super-frame.
    #[inline]
    pub fn gso_type(self) -> Option<GsoType> {
        if self.0 & Self::TCP4 != 0 {
            Some(GsoType::Tcp4)
        } else if self.0 & Self::TCP6 != 0 {
            Some(GsoType::Tcp6)
        } else if self.0 & Self::UDP4 != 0 {
            Some(GsoType::Udp4)
        } else {
            None
        }
    }

    /// Payload bytes per segment (0 unless GSO).
    #[inline]
    pub fn gso_size(self) -> u16 {
        self.0 as u16
    }
}

/// Who holds a frame: the pool, the worker (in flight in the pipeline), or a port's kernel rings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Owner {
    /// On the free list.
    Free,
    /// Held by the worker between rx and tx.
    Worker,
    /// In the kernel rings (fill, rx, tx, completion) of the port with this id.
    Port(u16),
}

/// Owner encodings: a port's id below `WORKER_FROM`; a frame the worker holds, received on port
/// `p`, `WORKER_FROM | p` (a flood copy keeps its original's); one it holds from nowhere in
/// particular (made here: an ARP request, an ICMP error), `u16::MAX - 1`; a free one
/// `u16::MAX`.
const WORKER_FROM: u16 = 0x8000;

impl Owner {
    pub(super) fn encode(self) -> u16 {
        match self {
            Owner::Free => u16::MAX,
            Owner::Worker => u16::MAX - 1,
            Owner::Port(p) => {
                debug_assert!(p < WORKER_FROM);
                p
            }
        }
    }

    pub(super) fn decode(v: u16) -> Owner {
        match v {
            u16::MAX => Owner::Free,
            x if x >= WORKER_FROM => Owner::Worker,
            p => Owner::Port(p),
        }
    }

    /// Held by the worker, received on port `port` (which [`Owner::received_on`] tells).
    pub(super) fn encode_received(port: u16) -> u16 {
        if port < WORKER_FROM - 2 {
            WORKER_FROM | port
        } else {
            Owner::Worker.encode()
        }
    }

    /// The port a frame the worker holds was received on, if it was marked so.
    pub(super) fn received_on(v: u16) -> Option<u16> {
        (WORKER_FROM..u16::MAX - 1)
            .contains(&v)
            .then_some(v & !WORKER_FROM)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offload_packs() {
        let o = Offload::gso(GsoType::Tcp6, 1448);
        assert!(o.is_partial() && !o.is_none());
        assert_eq!((o.gso_type(), o.gso_size()), (Some(GsoType::Tcp6), 1448));
        let p = Offload::partial();
        assert_eq!((p.gso_type(), p.gso_size()), (None, 0));
        assert!(Offload::NONE.is_none());
    }

    #[test]
    fn big_descriptors_have_their_own_chunks() {
        let d = Desc::new(BIG_BASE + 3 * BIG_SIZE as u64 + 256, 60000);
        assert!(d.is_big());
        assert_eq!(d.chunk(), BIG_BASE + 3 * BIG_SIZE as u64);
        assert_eq!(d.headroom(), 256);
        assert_eq!(d.tailroom(), BIG_SIZE - 256 - 60000);
        assert!(!Desc::new(2048 + 256, 60).is_big());
    }
}
