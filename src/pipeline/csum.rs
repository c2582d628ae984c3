//! Completing partial TCP/UDP checksums (CHECKSUM_PARTIAL frames from veth with tx offload).
//!
//! A container's veth leaves the L4 checksum field holding only the pseudo-header sum; AF_XDP
//! hands such frames over as they are, and a receiver that gets them unchanged drops them (ping
//! works, TCP never connects). The switch completes them in software: IPv4 and IPv6 (no
//! extension headers), TCP and UDP, whole packets only (fragments carry no L4 header to fix).

use crate::wire::checksum::{complete_partial, fold, l4_csum_offset, pseudo_v6};
use crate::wire::{EtherType, ipv6};

/// Complete the checksum of the L3 packet `l3` with EtherType `ethertype` if it is partial.
/// Returns true when the field was rewritten. Malformed packets are left alone.
#[inline]
pub(crate) fn complete(ethertype: u16, l3: &mut [u8]) -> bool {
    match ethertype {
        EtherType::IPV4 => complete_v4(l3),
        EtherType::IPV6 => complete_v6(l3),
        _ => false,
    }
}

fn complete_v4(l3: &mut [u8]) -> bool {
    // The header's fields read straight from its first 20 bytes (every frame of a port with
    // partial checksums comes through here: a tunnel's inner frames, a veth's): the checks of
    // `ipv4::Packet::new_checked`, then the protocol and fragment tests, then the field itself
    // before any sum: offload never leaves 0 there (the folded pseudo-header sum of a packet
    // with a protocol number is not 0), and 0 is what a UDP packet without a checksum (such
    // as most VXLAN) carries, so most complete packets are told apart without summing.
    let Some(h) = l3.first_chunk::<20>() else {
        return false;
    };
    let proto = h[9];
    let Some(off) = l4_csum_offset(proto) else {
        return false;
    };
    let (hl, tl) = (
        usize::from(h[0] & 0x0f) * 4,
        usize::from(u16::from_be_bytes([h[2], h[3]])),
    );
    if h[0] >> 4 != 4 || hl < 20 || tl < hl + off + 2 || l3.len() < tl {
        return false;
    }
    if (h[6] & 0x3f) | h[7] != 0 {
        return false;
    }
    let field = u16::from_be_bytes([l3[hl + off], l3[hl + off + 1]]);
    if field == 0 {
        return false;
    }
    let word = |i: usize| u64::from(u32::from_be_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]));
    let pseudo = word(12) + word(16) + u64::from(proto) + (tl - hl) as u64;
    if fold(pseudo) != field {
        return false;
    }
    complete_partial(&mut l3[hl..tl], off, pseudo, proto == 17)
}

fn complete_v6(l3: &mut [u8]) -> bool {
    let Ok(ip) = ipv6::Packet::new_checked(&*l3) else {
        return false;
    };
    let next = ip.next_header().0;
    let Some(off) = l4_csum_offset(next) else {
        return false;
    };
    let plen = usize::from(ip.payload_len());
    let pseudo = pseudo_v6(&ip.src(), &ip.dst(), next, plen as u32);
    let l4 = &mut l3[ipv6::HEADER_LEN..ipv6::HEADER_LEN + plen];
    complete_partial(l4, off, pseudo, next == 17)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::checksum::pseudo_v4;

    fn tcp_v4_partial() -> Vec<u8> {
        let payload = b"hello world";
        let builder = etherparse::PacketBuilder::ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .tcp(1234, 80, 1, 1000);
        let mut v = Vec::new();
        builder.write(&mut v, payload).unwrap();
        // Replace the full checksum with what offload leaves: the folded pseudo-header sum.
        let l4len = (v.len() - 20) as u16;
        let p = fold(pseudo_v4(&v[12..16], &v[16..20], 6, l4len));
        v[36..38].copy_from_slice(&p.to_be_bytes());
        v
    }

    #[test]
    fn completes_v4_tcp_to_what_etherparse_computes() {
        let mut v = tcp_v4_partial();
        assert!(complete(EtherType::IPV4, &mut v));
        let copy = v.clone();
        let s = etherparse::SlicedPacket::from_ip(&copy).unwrap();
        let (ip, tcp) = match (s.net.unwrap(), s.transport.unwrap()) {
            (etherparse::NetSlice::Ipv4(ip), etherparse::TransportSlice::Tcp(t)) => (ip, t),
            _ => panic!("not ipv4/tcp"),
        };
        let want = tcp
            .to_header()
            .calc_checksum_ipv4(&ip.header().to_header(), tcp.payload())
            .unwrap();
        assert_eq!(tcp.checksum(), want);
        // Second pass leaves it alone.
        let before = v.clone();
        complete(EtherType::IPV4, &mut v);
        assert_eq!(v, before);
    }

    #[test]
    fn completes_v6_udp() {
        let mut v = Vec::new();
        etherparse::PacketBuilder::ipv6([1; 16], [2; 16], 64)
            .udp(5000, 53)
            .write(&mut v, b"abc")
            .unwrap();
        let good = v.clone();
        let p = fold(pseudo_v6(&v[8..24], &v[24..40], 17, 11));
        v[46..48].copy_from_slice(&p.to_be_bytes());
        assert!(complete(EtherType::IPV6, &mut v));
        assert_eq!(v, good);
    }

    /// The reading `complete_v4` had before its header reads were inlined: through
    /// `ipv4::Packet`.
    fn complete_v4_reference(l3: &mut [u8]) -> bool {
        let Ok(p) = crate::wire::ipv4::Packet::new_checked(&*l3) else {
            return false;
        };
        let proto = p.protocol();
        let Some(off) = l4_csum_offset(proto) else {
            return false;
        };
        if p.is_fragment() {
            return false;
        }
        let (hl, tl) = (p.header_len(), p.total_len() as usize);
        let pseudo = pseudo_v4(&l3[12..16], &l3[16..20], proto, (tl - hl) as u16);
        complete_partial(&mut l3[hl..tl], off, pseudo, proto == 17)
    }

    #[test]
    fn v4_agrees_with_the_reference_on_mutated_headers() {
        let base = tcp_v4_partial();
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for i in 0..5000 {
            let mut v = base.clone();
            // Mutate one or two header bytes (version/IHL, lengths, fragment bits, protocol,
            // addresses, the TCP checksum field) and sometimes truncate.
            for _ in 0..1 + i % 2 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let at = [0, 2, 3, 6, 7, 9, 12, 19, 36, 37][(seed % 10) as usize];
                // Zero sometimes: a zero checksum field is told apart before any sum.
                v[at] = if seed.is_multiple_of(11) {
                    0
                } else {
                    (seed >> 24) as u8
                };
            }
            if i % 7 == 0 {
                v.truncate((seed >> 40) as usize % base.len());
            }
            let mut a = v.clone();
            let mut b = v.clone();
            assert_eq!(
                complete_v4(&mut a),
                complete_v4_reference(&mut b),
                "{v:02x?}"
            );
            assert_eq!(a, b, "{v:02x?}");
        }
    }

    #[test]
    fn malformed_is_left_alone() {
        let mut v = tcp_v4_partial();
        v.truncate(30);
        let before = v.clone();
        assert!(!complete(EtherType::IPV4, &mut v));
        assert_eq!(v, before);
        assert!(!complete(EtherType::IPV6, &mut [0u8; 10]));
        assert!(!complete(EtherType::ARP, &mut [0u8; 28]));
    }
}
