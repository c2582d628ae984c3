//! NAT on the router path: find a packet's connection (or create one when a rule applies) and
//! rewrite addresses, ports and checksums in place (incremental updates, RFC 1624).

use crate::conntrack::{Conntrack, Direction, FlowKey, PROTO_ICMP, PROTO_TCP, PROTO_UDP};
use crate::wire::checksum::{checksum, update16, update32};

const ICMP_ECHO_REQUEST: u8 = 8;
const ICMP_ECHO_REPLY: u8 = 0;

/// The packet's 5-tuple and TCP flags, for TCP, UDP and ICMP echo; None for other protocols,
/// fragments and truncated L4 headers. `ip` is the IPv4 packet (header length `hl`, total
/// length checked by the caller).
#[inline]
pub(super) fn flow_key(ip: &[u8], hl: usize) -> Option<(FlowKey, u8)> {
    if u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff != 0 {
        return None; // fragment
    }
    let proto = ip[9];
    let src = [ip[12], ip[13], ip[14], ip[15]];
    let dst = [ip[16], ip[17], ip[18], ip[19]];
    let l4 = ip.get(hl..)?;
    let port = |o: usize| u16::from_be_bytes([l4[o], l4[o + 1]]);
    match proto {
        PROTO_TCP if l4.len() >= 20 => {
            Some((FlowKey::new(proto, src, port(0), dst, port(2)), l4[13]))
        }
        PROTO_UDP if l4.len() >= 8 => Some((FlowKey::new(proto, src, port(0), dst, port(2)), 0)),
        PROTO_ICMP if l4.len() >= 8 && matches!(l4[0], ICMP_ECHO_REQUEST | ICMP_ECHO_REPLY) => {
            Some((FlowKey::icmp_echo(src, dst, port(4)), 0))
        }
        _ => None,
    }
}

/// Rewrite the packet from tuple `from` to tuple `to` (addresses, ports or ICMP identifier),
/// keeping the IP and L4 checksums right.
#[inline]
pub(super) fn rewrite(ip: &mut [u8], hl: usize, from: &FlowKey, to: &FlowKey) {
    let proto = from.proto;
    // Offset of the L4 checksum; UDP checksum 0 means "none" and stays 0.
    let csum_at = match proto {
        PROTO_TCP => Some(hl + 16),
        PROTO_UDP if ip[hl + 6..hl + 8] != [0, 0] => Some(hl + 6),
        PROTO_ICMP => Some(hl + 2),
        _ => None,
    };
    let pseudo = proto != PROTO_ICMP;
    let mut ipc = u16::from_be_bytes([ip[10], ip[11]]);
    let mut l4c = csum_at.map(|o| u16::from_be_bytes([ip[o], ip[o + 1]]));
    if from.src != to.src {
        ipc = update32(ipc, from.src, to.src);
        if pseudo {
            l4c = l4c.map(|c| update32(c, from.src, to.src));
        }
        ip[12..16].copy_from_slice(&to.src);
    }
    if from.dst != to.dst {
        ipc = update32(ipc, from.dst, to.dst);
        if pseudo {
            l4c = l4c.map(|c| update32(c, from.dst, to.dst));
        }
        ip[16..20].copy_from_slice(&to.dst);
    }
    // ICMP echo keeps its identifier in `sport`, at offset 4 of the ICMP header.
    let sport_at = if proto == PROTO_ICMP { hl + 4 } else { hl };
    if from.sport != to.sport {
        l4c = l4c.map(|c| update16(c, from.sport, to.sport));
        ip[sport_at..sport_at + 2].copy_from_slice(&to.sport.to_be_bytes());
    }
    if proto != PROTO_ICMP && from.dport != to.dport {
        l4c = l4c.map(|c| update16(c, from.dport, to.dport));
        ip[hl + 2..hl + 4].copy_from_slice(&to.dport.to_be_bytes());
    }
    ip[10..12].copy_from_slice(&ipc.to_be_bytes());
    if let (Some(o), Some(mut c)) = (csum_at, l4c) {
        if proto == PROTO_UDP && c == 0 {
            c = 0xffff;
        }
        ip[o..o + 2].copy_from_slice(&c.to_be_bytes());
    }
}

/// ICMP error types whose payload quotes the offending packet.
const ICMP_ERRORS: [u8; 3] = [3, 11, 12];

/// Translate an ICMP error about a packet of a translated connection: the quoted packet gets
/// back its untranslated addresses and ports, the outer destination becomes the quoted packet's
/// original sender (and the outer source the original destination, if the error came from the
/// translated endpoint). Checksums are recomputed. Returns true if the packet was translated.
/// `ip` is the whole IPv4 packet (header length `hl`).
pub(super) fn translate_icmp_error(ct: &mut Conntrack, ip: &mut [u8], hl: usize, now: u32) -> bool {
    if ip[9] != PROTO_ICMP || ip.len() < hl + 8 + 28 || !ICMP_ERRORS.contains(&ip[hl]) {
        return false;
    }
    let q = hl + 8; // quoted IP header
    let qhl = ((ip[q] & 0x0f) as usize) * 4;
    if qhl < 20 || ip.len() < q + qhl + 8 {
        return false;
    }
    let Some((quoted, _)) = flow_key_any(&ip[q..], qhl) else {
        return false;
    };
    // The quoted packet went out translated; its answer direction is what the table knows.
    let Some((id, dir)) = ct.lookup(&quoted.reverse(), now) else {
        return false;
    };
    let Some(conn) = ct.conn(id) else {
        return false;
    };
    let sent_dir = match dir {
        Direction::Original => Direction::Reply,
        Direction::Reply => Direction::Original,
    };
    let orig = *conn.key(sent_dir);
    // Rewrite the quoted header and ports, then the outer addresses.
    ip[q + 12..q + 16].copy_from_slice(&orig.src);
    ip[q + 16..q + 20].copy_from_slice(&orig.dst);
    if orig.proto == PROTO_ICMP {
        ip[q + qhl + 4..q + qhl + 6].copy_from_slice(&orig.sport.to_be_bytes());
    } else {
        ip[q + qhl..q + qhl + 2].copy_from_slice(&orig.sport.to_be_bytes());
        ip[q + qhl + 2..q + qhl + 4].copy_from_slice(&orig.dport.to_be_bytes());
    }
    ip[q + 10..q + 12].copy_from_slice(&[0, 0]);
    let c = checksum(&ip[q..q + qhl]);
    ip[q + 10..q + 12].copy_from_slice(&c.to_be_bytes());
    if ip[12..16] == quoted.dst {
        ip[12..16].copy_from_slice(&orig.dst);
    }
    ip[16..20].copy_from_slice(&orig.src);
    ip[10..12].copy_from_slice(&[0, 0]);
    let c = checksum(&ip[..hl]);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    ip[hl + 2..hl + 4].copy_from_slice(&[0, 0]);
    let c = checksum(&ip[hl..]);
    ip[hl + 2..hl + 4].copy_from_slice(&c.to_be_bytes());
    true
}

/// Like `flow_key`, but for a quoted header: any ICMP type with an identifier is not needed,
/// only echo; fragments' offset is not checked (a quote is the first fragment's header).
/// The tuple an ICMP error (`ip`, header length `hl`) quotes: the packet that caused it, as it
/// was sent (None when `ip` is not an ICMP error or quotes too little).
pub(super) fn quoted_key(ip: &[u8], hl: usize) -> Option<FlowKey> {
    if ip[9] != PROTO_ICMP || ip.len() < hl + 8 + 28 || !ICMP_ERRORS.contains(&ip[hl]) {
        return None;
    }
    let q = hl + 8;
    let qhl = ((ip[q] & 0x0f) as usize) * 4;
    if qhl < 20 || ip.len() < q + qhl + 8 {
        return None;
    }
    flow_key_any(&ip[q..], qhl).map(|(k, _)| k)
}

fn flow_key_any(ip: &[u8], hl: usize) -> Option<(FlowKey, u8)> {
    let mut first = [0u8; 60];
    let n = ip.len().min(60);
    first[..n].copy_from_slice(&ip[..n]);
    first[6] &= 0xc0; // ignore fragment fields of the quote
    first[7] = 0;
    flow_key(&first[..n], hl)
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{PacketBuilder, SlicedPacket, TransportSlice};

    fn check(ip: &[u8]) {
        let s = SlicedPacket::from_ip(ip).unwrap();
        let h = match s.net.unwrap() {
            etherparse::NetSlice::Ipv4(v) => v.header().to_header(),
            _ => panic!(),
        };
        assert_eq!(h.header_checksum, h.calc_header_checksum());
        match s.transport.unwrap() {
            TransportSlice::Tcp(t) => {
                assert_eq!(
                    t.checksum(),
                    t.to_header().calc_checksum_ipv4(&h, t.payload()).unwrap()
                )
            }
            TransportSlice::Udp(u) => {
                assert_eq!(
                    u.checksum(),
                    u.to_header().calc_checksum_ipv4(&h, u.payload()).unwrap()
                )
            }
            TransportSlice::Icmpv4(i) => {
                assert_eq!(i.checksum(), i.icmp_type().calc_checksum(i.payload()))
            }
            _ => panic!(),
        }
    }

    #[test]
    fn rewrites_tcp_udp_icmp_with_valid_checksums() {
        let builders: Vec<Vec<u8>> = {
            let mut v = Vec::new();
            let mut t = Vec::new();
            PacketBuilder::ipv4([172, 31, 5, 2], [198, 51, 100, 9], 64)
                .tcp(40000, 80, 7, 1000)
                .syn()
                .write(&mut t, b"GET /")
                .unwrap();
            v.push(t);
            let mut u = Vec::new();
            PacketBuilder::ipv4([172, 31, 5, 2], [198, 51, 100, 9], 64)
                .udp(5353, 53)
                .write(&mut u, b"q")
                .unwrap();
            v.push(u);
            let mut i = Vec::new();
            PacketBuilder::ipv4([172, 31, 5, 2], [198, 51, 100, 9], 64)
                .icmpv4_echo_request(77, 1)
                .write(&mut i, b"ping")
                .unwrap();
            v.push(i);
            v
        };
        for mut ip in builders {
            let (k, flags) = flow_key(&ip, 20).unwrap();
            if k.proto == PROTO_TCP {
                assert_eq!(flags & 0x02, 0x02, "SYN flag read");
            }
            let mut to = k;
            to.src = [10, 250, 0, 1];
            to.sport = 33333;
            to.dst = [10, 0, 0, 7];
            if k.proto != PROTO_ICMP {
                to.dport = 8080;
            }
            rewrite(&mut ip, 20, &k, &to);
            check(&ip);
            assert_eq!(flow_key(&ip, 20).unwrap().0, to);
        }
    }

    #[test]
    fn no_key_for_fragments_and_short_headers() {
        let mut t = Vec::new();
        PacketBuilder::ipv4([1, 1, 1, 1], [2, 2, 2, 2], 64)
            .udp(1, 2)
            .write(&mut t, b"x")
            .unwrap();
        let mut frag = t.clone();
        frag[6] = 0x20; // MF
        assert!(flow_key(&frag, 20).is_none());
        assert!(flow_key(&t[..24], 20).is_none());
    }
}
