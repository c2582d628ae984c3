//! Wire formats: zero-copy views over frame bytes, one file per protocol (smoltcp's style).
//!
//! Each view is `Packet<T: AsRef<[u8]>>` with `new_unchecked`, `new_checked` (which runs
//! `check_len`) and accessors that never panic once `check_len` passed. Reprs parse and emit.

pub mod arp;
pub mod checksum;
pub mod ethernet;
pub mod icmp;
pub mod ipv4;
pub mod ipv6;
pub mod mpls;
pub mod tcp;
pub mod transport;
pub mod udp;
pub mod vlan;
pub mod vxlan;

pub use ethernet::{EtherType, MacAddr};
pub use ipv4::IpProtocol;

/// A frame or header too short, or with a field out of range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Fewer bytes than the header needs.
    #[error("truncated")]
    Truncated,
    /// A field holds a value the format forbids.
    #[error("malformed")]
    Malformed,
}

/// The big-endian u16 at `b[at..at + 2]`.
#[inline(always)]
pub(crate) fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// The big-endian u32 at `b[at..at + 4]`.
#[inline(always)]
pub(crate) fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Write the source and destination ports at the start of a TCP or UDP header `b`.
#[inline(always)]
pub(crate) fn put_ports(b: &mut [u8], src: u16, dst: u16) {
    b[0..2].copy_from_slice(&src.to_be_bytes());
    b[2..4].copy_from_slice(&dst.to_be_bytes());
}

/// Result of a wire parse.
pub type Result<T> = core::result::Result<T, WireError>;
