//! Completing partial TCP/UDP checksums (CHECKSUM_PARTIAL frames from veth with tx offload).
//!
//! A container's veth leaves the L4 checksum field holding only the pseudo-header sum; AF_XDP
//! hands such frames over as they are, and a receiver that gets them unchanged drops them (ping
//! works, TCP never connects). The switch completes them in software: IPv4 and IPv6 (no
//! extension headers), TCP and UDP, whole packets only (fragments carry no L4 header to fix).

use crate::wire::checksum::{complete_partial, l4_csum_offset, pseudo_v4, pseudo_v6};
use crate::wire::{EtherType, ipv4};

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
    let Ok(p) = ipv4::Packet::new_checked(&*l3) else {
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

fn complete_v6(l3: &mut [u8]) -> bool {
    if l3.len() < 40 || l3[0] >> 4 != 6 {
        return false;
    }
    let next = l3[6];
    let Some(off) = l4_csum_offset(next) else {
        return false;
    };
    let plen = u16::from_be_bytes([l3[4], l3[5]]) as usize;
    if l3.len() < 40 + plen {
        return false;
    }
    let pseudo = pseudo_v6(&l3[8..24], &l3[24..40], next, plen as u32);
    complete_partial(&mut l3[40..40 + plen], off, pseudo, next == 17)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::checksum::fold;

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
