//! Frame buffers: one pre-allocated region of fixed-size frames shared by every port.
//!
//! Contract:
//! - [`Frames`] owns the region (it is the AF_XDP UMEM), the free list and a per-frame owner tag.
//!   It is created once per worker and never grows: no heap allocation per packet.
//! - A frame is named by a [`Desc`]: the byte offset of its first data byte inside the region and
//!   its length. The frame's chunk is `addr & !(FRAME_SIZE - 1)`; everything between the chunk
//!   start and `addr` is headroom, so headers are prepended by moving `addr` back and stripped by
//!   moving it forward, without moving the payload.
//! - Whoever holds a `Desc` owns that frame until it hands it to a port (tx) or back to the pool.
//!   The owner tag records which port's kernel rings hold a frame, so that removing a port
//!   returns exactly its frames to the pool.
//! - Large frames (TCP super-frames from TAP ports with offloads, up to 64 KiB) live in a second
//!   mapping of [`BIG_SIZE`] buffers, made on first use and never registered with AF_XDP. Their
//!   descriptors have `addr >= BIG_BASE`; every accessor here dispatches on that, so the
//!   pipeline handles both alike. A descriptor also carries its frame's [`Offload`] state.

pub mod budget;
mod desc;
pub mod flow_hash;
mod pool;
mod region;

pub use desc::{Desc, GsoType, Offload, Owner};
pub use pool::Frames;
pub use region::Region;

/// Size of one frame (one UMEM chunk), in bytes. A power of two.
pub const FRAME_SIZE: usize = 2048;
/// Bytes kept free in front of received data: the kernel's XDP_PACKET_HEADROOM, which AF_XDP
/// places before every received frame; TAP and mem ports use the same offset.
pub const HEADROOM: usize = 256;
/// The largest frame (without FCS) that fits one frame after the headroom.
pub const MAX_FRAME_LEN: usize = FRAME_SIZE - HEADROOM;
/// Default number of frames in the region (128 MiB with 2 KiB frames). AF_XDP ports share them
/// under a [`budget::FrameBudget`].
pub const DEFAULT_FRAME_COUNT: u32 = 64 * 1024;
/// Size of one large buffer (a GSO super-frame of up to 64 KiB plus headroom). A power of two.
pub const BIG_SIZE: usize = 128 * 1024;
/// Descriptor addresses at or above this name large buffers (offset `addr - BIG_BASE` in their
/// mapping). A multiple of [`BIG_SIZE`], far above any region of 2 KiB frames.
pub const BIG_BASE: u64 = 1 << 44;
/// The longest frame a large buffer takes after the headroom.
pub const MAX_BIG_LEN: usize = BIG_SIZE - HEADROOM;
/// Large buffers per worker (mapped on first use, pages faulted in as used: 32 MiB at most).
pub const BIG_COUNT: u32 = 256;
