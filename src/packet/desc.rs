//! Frame descriptors and owner tags.

use super::FRAME_SIZE;

/// One frame: the offset of its first data byte in the region, and its length.
///
/// 12 bytes, `Copy`: descriptors move through the pipeline and the AF_XDP rings by value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Desc {
    /// Offset of the first data byte inside the region.
    pub addr: u64,
    /// Data length in bytes.
    pub len: u32,
}

impl Desc {
    /// The start of this frame's chunk.
    #[inline]
    pub fn chunk(&self) -> u64 {
        self.addr & !(FRAME_SIZE as u64 - 1)
    }

    /// Bytes of headroom in front of the data.
    #[inline]
    pub fn headroom(&self) -> usize {
        (self.addr - self.chunk()) as usize
    }

    /// Bytes free after the data, up to the chunk end.
    #[inline]
    pub fn tailroom(&self) -> usize {
        FRAME_SIZE - self.headroom() - self.len as usize
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

impl Owner {
    pub(super) fn encode(self) -> u16 {
        match self {
            Owner::Free => u16::MAX,
            Owner::Worker => u16::MAX - 1,
            Owner::Port(p) => {
                debug_assert!(p < u16::MAX - 1);
                p
            }
        }
    }

    pub(super) fn decode(v: u16) -> Owner {
        match v {
            u16::MAX => Owner::Free,
            x if x == u16::MAX - 1 => Owner::Worker,
            p => Owner::Port(p),
        }
    }
}
