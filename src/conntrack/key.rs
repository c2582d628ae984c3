//! The connection key: a 5-tuple packed into 104 bits for hashing.
//!
//! TCP, UDP and other port-carrying protocols use (src, dst, sport, dport). ICMP echo uses the
//! identifier as `sport` and 0 as `dport`; its reverse keeps the identifier in `sport` (an echo
//! reply carries the same identifier), where every other protocol swaps the ports.

use std::fmt;

/// IP protocol number of ICMP.
pub const PROTO_ICMP: u8 = 1;
/// IP protocol number of TCP.
pub const PROTO_TCP: u8 = 6;
/// IP protocol number of UDP.
pub const PROTO_UDP: u8 = 17;

/// Bits of a packed key: `src << 72 | dst << 40 | sport << 24 | dport << 8 | proto`.
pub(crate) const KEY_BITS: u32 = 104;
/// Mask of the key bits in a packed value.
pub(crate) const KEY_MASK: u128 = (1u128 << KEY_BITS) - 1;

/// One direction of a connection, as seen in a packet's headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct FlowKey {
    /// IP protocol number (6 TCP, 17 UDP, 1 ICMP, ...).
    pub proto: u8,
    /// Source IPv4 address.
    pub src: [u8; 4],
    /// Destination IPv4 address.
    pub dst: [u8; 4],
    /// Source port (ICMP echo: the identifier).
    pub sport: u16,
    /// Destination port (ICMP echo: 0).
    pub dport: u16,
}

impl FlowKey {
    /// A key from its parts.
    pub const fn new(proto: u8, src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16) -> FlowKey {
        FlowKey {
            proto,
            src,
            dst,
            sport,
            dport,
        }
    }

    /// An ICMP echo key: the identifier stands in `sport`, `dport` is 0.
    pub const fn icmp_echo(src: [u8; 4], dst: [u8; 4], ident: u16) -> FlowKey {
        FlowKey::new(PROTO_ICMP, src, ident, dst, 0)
    }

    /// The key packed into the low 104 bits of a u128.
    #[inline]
    pub fn pack(&self) -> u128 {
        (u32::from_be_bytes(self.src) as u128) << 72
            | (u32::from_be_bytes(self.dst) as u128) << 40
            | (self.sport as u128) << 24
            | (self.dport as u128) << 8
            | self.proto as u128
    }

    /// The inverse of [`FlowKey::pack`] (bits above 104 are ignored).
    #[inline]
    pub fn unpack(v: u128) -> FlowKey {
        FlowKey {
            proto: v as u8,
            src: ((v >> 72) as u32).to_be_bytes(),
            dst: ((v >> 40) as u32).to_be_bytes(),
            sport: (v >> 24) as u16,
            dport: (v >> 8) as u16,
        }
    }

    /// The key of a packet going the other way: addresses swapped, ports swapped (ICMP keeps
    /// its identifier in `sport`).
    #[inline]
    pub fn reverse(&self) -> FlowKey {
        let (sport, dport) = if self.proto == PROTO_ICMP {
            (self.sport, self.dport)
        } else {
            (self.dport, self.sport)
        };
        FlowKey {
            proto: self.proto,
            src: self.dst,
            dst: self.src,
            sport,
            dport,
        }
    }

    /// Short protocol name for display.
    pub fn proto_name(&self) -> &'static str {
        match self.proto {
            PROTO_TCP => "tcp",
            PROTO_UDP => "udp",
            PROTO_ICMP => "icmp",
            _ => "ip",
        }
    }
}

impl fmt::Display for FlowKey {
    /// `src=A dst=B sport=P dport=Q` (conntrack-tools style; ICMP shows `id=`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d] = self.src;
        let [e, g, h, i] = self.dst;
        write!(f, "src={a}.{b}.{c}.{d} dst={e}.{g}.{h}.{i} ")?;
        if self.proto == PROTO_ICMP {
            write!(f, "id={}", self.sport)
        } else {
            write!(f, "sport={} dport={}", self.sport, self.dport)
        }
    }
}

/// Hash of a packed key, mixed with a per-table seed, spread over 64 bits (callers take the top
/// bits). Two multiplies and a fold: a few cycles, no allocation.
///
/// The seed makes collisions harder to aim at from outside but is not a cryptographic defence;
/// pass a random seed in production ([`super::CtConfig::hash_seed`]).
#[inline]
pub(crate) fn hash(packed: u128, seed: u64) -> u64 {
    let lo = packed as u64;
    let hi = (packed >> 64) as u64;
    let a = (lo ^ seed).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let b = (hi ^ seed.rotate_left(32)).wrapping_mul(0xC2B2_AE3D_27D4_EB4F);
    let h = a ^ b.rotate_left(29);
    (h ^ (h >> 32)).wrapping_mul(0x1656_67B1_9E37_79F9)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pack_roundtrip_and_fits() {
        let k = FlowKey::new(PROTO_TCP, [10, 0, 0, 1], 40000, [255, 1, 2, 3], 443);
        let p = k.pack();
        assert_eq!(p & !KEY_MASK, 0);
        assert_eq!(FlowKey::unpack(p), k);
        let max = FlowKey::new(255, [255; 4], 65535, [255; 4], 65535);
        assert_eq!(max.pack(), KEY_MASK);
    }

    #[test]
    fn reverse_swaps_ports_but_not_icmp_ident() {
        let k = FlowKey::new(PROTO_UDP, [1, 1, 1, 1], 5, [2, 2, 2, 2], 53);
        assert_eq!(
            k.reverse(),
            FlowKey::new(PROTO_UDP, [2, 2, 2, 2], 53, [1, 1, 1, 1], 5)
        );
        let e = FlowKey::icmp_echo([1, 1, 1, 1], [2, 2, 2, 2], 77);
        assert_eq!(
            e.reverse(),
            FlowKey::icmp_echo([2, 2, 2, 2], [1, 1, 1, 1], 77)
        );
        assert_eq!(e.reverse().reverse(), e);
    }
}
