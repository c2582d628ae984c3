//! Which flow a frame belongs to, as a small hash: for sharing a queue fairly between the
//! flows of one source (see `worker::relay` and `worker::peers`), not for lookups.
//!
//! Contract:
//! - [`flow_hash`] reads only the frame's bytes, never panics (any length, any content) and is
//!   the same for every frame of one flow: IPv4 by addresses and protocol, plus an
//!   unfragmented TCP, UDP or SCTP packet's ports and an unfragmented ICMP echo's identifier
//!   (every fragment hashes without them, so all pieces of a datagram hash alike); IPv6 by
//!   addresses and next header; anything else by its MAC addresses and EtherType. VLAN tags
//!   are skipped (the VLAN is not part of the hash).
//! - Pure and cheap (a few loads and multiplies); distinct flows collide with the odds of a
//!   32-bit hash folded to the caller's bucket count.

use crate::wire::EtherType;

/// A hash of the flow `frame` belongs to (see the module documentation).
pub fn flow_hash(frame: &[u8]) -> u32 {
    let word = |at: usize| -> u64 {
        frame
            .get(at..at + 4)
            .map_or(0, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as u64)
    };
    let mut l3 = 12;
    let mut ethertype = match frame.get(12..14) {
        Some(b) => u16::from_be_bytes([b[0], b[1]]),
        None => return mix(word(0) ^ (word(4) << 16)),
    };
    while (ethertype == EtherType::VLAN || ethertype == EtherType::QINQ) && frame.len() >= l3 + 8 {
        l3 += 4;
        ethertype = u16::from_be_bytes([frame[l3], frame[l3 + 1]]);
    }
    l3 += 2;
    let macs = (word(0) << 32 | word(4)) ^ (word(8) << 16) ^ ethertype as u64;
    match ethertype {
        EtherType::IPV4 if frame.len() >= l3 + 20 => {
            let ip = &frame[l3..];
            let hl = ((ip[0] & 0x0f) as usize) * 4;
            let proto = ip[9];
            let fragment = u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff != 0;
            let l4 = match proto {
                6 | 17 | 132 if !fragment => word(l3 + hl),
                // ICMP echo request and reply: the identifier.
                1 if !fragment && matches!(frame.get(l3 + hl), Some(0 | 8)) => {
                    word(l3 + hl + 4) >> 16
                }
                _ => 0,
            };
            mix((word(l3 + 12) << 32 | word(l3 + 16)) ^ (l4 << 8) ^ proto as u64)
        }
        EtherType::IPV6 if frame.len() >= l3 + 40 => {
            let mut h = frame[l3 + 6] as u64;
            for at in (l3 + 8..l3 + 40).step_by(8) {
                h = mix(h ^ (word(at) << 32 | word(at + 4))) as u64;
            }
            h as u32
        }
        _ => mix(macs),
    }
}

/// A 64-bit multiplicative mix folded to 32 bits.
fn mix(v: u64) -> u32 {
    let x = v.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    ((x >> 32) ^ x) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ipv4(proto: u8, src: [u8; 4], dst: [u8; 4], l4: &[u8], frag: u16) -> Vec<u8> {
        let mut f = vec![0u8; 14];
        f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
        let mut ip = [0u8; 20];
        ip[0] = 0x45;
        ip[6..8].copy_from_slice(&frag.to_be_bytes());
        ip[9] = proto;
        ip[12..16].copy_from_slice(&src);
        ip[16..20].copy_from_slice(&dst);
        f.extend_from_slice(&ip);
        f.extend_from_slice(l4);
        f
    }

    #[test]
    fn one_flow_hashes_alike_and_flows_apart() {
        let a = ipv4(
            6,
            [10, 0, 0, 1],
            [10, 0, 0, 2],
            &[0x9c, 0x40, 0, 80, 1, 2, 3, 4],
            0,
        );
        // Another segment of the same connection (other payload, sequence numbers).
        let a2 = ipv4(
            6,
            [10, 0, 0, 1],
            [10, 0, 0, 2],
            &[0x9c, 0x40, 0, 80, 9, 9, 9, 9, 7],
            0,
        );
        let b = ipv4(
            6,
            [10, 0, 0, 1],
            [10, 0, 0, 2],
            &[0x9c, 0x41, 0, 80, 1, 2, 3, 4],
            0,
        );
        assert_eq!(flow_hash(&a), flow_hash(&a2));
        assert_ne!(flow_hash(&a), flow_hash(&b));
        // ICMP echo: by identifier, not sequence number.
        let p1 = ipv4(
            1,
            [10, 0, 0, 1],
            [10, 0, 0, 2],
            &[8, 0, 0, 0, 0, 7, 0, 1],
            0,
        );
        let p2 = ipv4(
            1,
            [10, 0, 0, 1],
            [10, 0, 0, 2],
            &[8, 0, 0xff, 0, 0, 7, 0, 2],
            0,
        );
        let p3 = ipv4(
            1,
            [10, 0, 0, 1],
            [10, 0, 0, 2],
            &[8, 0, 0, 0, 0, 8, 0, 1],
            0,
        );
        assert_eq!(flow_hash(&p1), flow_hash(&p2));
        assert_ne!(flow_hash(&p1), flow_hash(&p3));
        // A datagram's fragments (first with ports, later ones without) hash alike.
        let f1 = ipv4(17, [10, 0, 0, 1], [10, 0, 0, 2], &[0, 53, 0, 53], 0x2000);
        let f2 = ipv4(17, [10, 0, 0, 1], [10, 0, 0, 2], &[1, 2, 3, 4], 0x00b9);
        assert_eq!(flow_hash(&f1), flow_hash(&f2));
        // A VLAN tag does not change it.
        let mut tagged = a[..12].to_vec();
        tagged.extend_from_slice(&[0x81, 0x00, 0x00, 0x05]);
        tagged.extend_from_slice(&a[12..]);
        assert_eq!(flow_hash(&a), flow_hash(&tagged));
    }

    #[test]
    fn any_bytes_hash_without_panicking() {
        let mut seed = 0x1234_5678u32;
        for len in 0..200 {
            let f: Vec<u8> = (0..len)
                .map(|i| {
                    seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                    // Mostly IPv4/VLAN-looking frames, to reach the parsers.
                    match i {
                        12 => [0x08, 0x81, 0x86, 0x88][(seed >> 16) as usize % 4],
                        13 => [0x00, 0x00, 0xdd, 0xa8][(seed >> 16) as usize % 4],
                        _ => (seed >> 16) as u8,
                    }
                })
                .collect();
            let _ = flow_hash(&f);
        }
    }
}
