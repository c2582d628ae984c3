//! NAT on the router path: find a packet's connection (or create one when a rule applies) and
//! rewrite addresses, ports and checksums in place (incremental updates, RFC 1624), through the
//! `wire` views (`ipv4::Packet`, `transport::Ports`, `icmp::Message`): no raw offsets here.

use crate::conntrack::{Conntrack, DatagramId, Direction, FlowKey};
use crate::wire::checksum::fold;
use crate::wire::ipv4::{self, Packet};
use crate::wire::transport::{self, Ports};
use crate::wire::{IpProtocol, icmp};

/// The packet's 5-tuple and TCP flags, for TCP, UDP and ICMP echo; None for other protocols,
/// fragments and truncated L4 headers. `ip` is the IPv4 packet (header length `hl`, total
/// length checked by the caller).
#[inline]
pub(super) fn flow_key(ip: &[u8], hl: usize) -> Option<(FlowKey, u8)> {
    key_of(ip, hl, false)
}

/// Where a packet sits in its datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Piece {
    /// Not fragmented.
    Whole,
    /// The first fragment (offset 0, more fragments): it carries the transport header.
    First,
    /// A later fragment (an offset): no transport header.
    Later,
}

/// Where IPv4 packet `ip` sits in its datagram.
#[inline]
pub(super) fn piece(ip: &[u8]) -> Piece {
    let h = Packet::new_unchecked(ip);
    match (h.is_fragment(), h.frag_offset()) {
        (false, _) => Piece::Whole,
        (true, 0) => Piece::First,
        (true, _) => Piece::Later,
    }
}

/// What names the datagram IPv4 packet `ip` is a fragment of.
#[inline]
pub(super) fn datagram_id(ip: &[u8]) -> DatagramId {
    let h = Packet::new_unchecked(ip);
    DatagramId {
        src: h.src(),
        dst: h.dst(),
        proto: h.protocol(),
        id: h.ident(),
    }
}

/// The 5-tuple and TCP flags a first fragment carries ([`flow_key`] for the datagram it
/// starts); None when the fragment is too short to hold the transport header.
#[inline]
pub(super) fn first_fragment_key(ip: &[u8], hl: usize) -> Option<(FlowKey, u8)> {
    key_of(ip, hl, true)
}

/// Write addresses `src` and `dst` into IPv4 packet `ip` (a later fragment: no transport
/// header to fix), keeping the header checksum right.
#[inline]
pub(super) fn put_addrs(ip: &mut [u8], src: [u8; 4], dst: [u8; 4]) {
    let mut h = Packet::new_unchecked(ip);
    let (changed, delta) = ipv4::addrs_change((h.src(), h.dst()), (src, dst));
    if changed {
        h.put_addrs(src, dst, fold(delta));
    }
}

/// [`flow_key`]; with `whole_header`, the fragment fields are not looked at (a quote is the
/// first fragment's header, and a first fragment carries the transport header).
#[inline]
fn key_of(ip: &[u8], hl: usize, whole_header: bool) -> Option<(FlowKey, u8)> {
    let h = Packet::new_unchecked(ip);
    if !whole_header && h.is_fragment() {
        return None;
    }
    let l4 = Ports::new_checked(h.ip_protocol(), ip.get(hl..)?).ok()?;
    let (src, dst) = (h.src(), h.dst());
    let key = FlowKey::new(h.protocol(), src, l4.src_port(), dst, l4.dst_port());
    Some((key, l4.tcp_flags()))
}

/// A TCP or UDP packet's tuple as its bytes sit in the packet: both addresses, both ports (the
/// transport header's first four bytes) and the protocol, compared without building a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct TupleBytes {
    addrs: u64,
    ports: u32,
    proto: u8,
}

impl TupleBytes {
    /// The key [`flow_key`] gives the packet these bytes came from.
    #[inline(always)]
    pub fn key(&self) -> FlowKey {
        let a = self.addrs.to_ne_bytes();
        let p = self.ports.to_ne_bytes();
        FlowKey::new(
            self.proto,
            [a[0], a[1], a[2], a[3]],
            u16::from_be_bytes([p[0], p[1]]),
            [a[4], a[5], a[6], a[7]],
            u16::from_be_bytes([p[2], p[3]]),
        )
    }

    /// A cheap mix of the bytes (one multiply): callers take its top bits to spread tuples
    /// over a few cache slots.
    #[inline(always)]
    pub fn mix(&self) -> u64 {
        (self.addrs ^ u64::from(self.ports) << 13 ^ u64::from(self.proto))
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
    }
}

/// The tuple bytes and TCP flags of a TCP or UDP packet `ip` (header length `hl`, total length
/// checked by the caller) that [`flow_key`] gives a key: not a fragment, its transport header
/// whole (TCP 20 bytes, UDP 8). Two such packets with equal bytes have equal keys, and the
/// flags are `flow_key`'s. None for anything else (ICMP among them, whose key is not a run of
/// bytes), which then takes `flow_key`.
#[inline(always)]
pub(super) fn tuple_bytes(ip: &[u8], hl: usize) -> Option<(TupleBytes, u8)> {
    let h = ip.first_chunk::<20>()?;
    if u16::from_be_bytes([h[6], h[7]]) & 0x3fff != 0 {
        return None;
    }
    let l4 = ip.get(hl..)?;
    let flags = match IpProtocol(h[9]) {
        IpProtocol::TCP if l4.len() >= 20 => l4[13],
        IpProtocol::UDP if l4.len() >= 8 => 0,
        _ => return None,
    };
    let addrs = u64::from_ne_bytes([h[12], h[13], h[14], h[15], h[16], h[17], h[18], h[19]]);
    let ports = u32::from_ne_bytes([l4[0], l4[1], l4[2], l4[3]]);
    Some((
        TupleBytes {
            addrs,
            ports,
            proto: h[9],
        },
        flags,
    ))
}

/// How packets carrying one tuple are rewritten to another, worked out once (which fields
/// change, the RFC 1624 checksum deltas) and applied to each packet that carries `from`: a
/// connection's packets in one direction all take the same one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Translation {
    /// The tuple the packet leaves with.
    pub to: FlowKey,
    /// An address changes: both are written, `ip_delta` added to the header checksum.
    addrs: bool,
    /// (Deltas folded to 16 bits: `checksum::apply_folded` adds them in one step.)
    ip_delta: u16,
    /// A port (an echo's identifier) changes: both are written.
    ports: bool,
    /// Added to the transport checksum (addresses of the pseudo-header and ports).
    l4_delta: u16,
}

impl Translation {
    /// The translation from tuple `from` to tuple `to` (same protocol).
    #[inline]
    pub fn new(from: &FlowKey, to: &FlowKey) -> Translation {
        let (addrs, ip_delta) = ipv4::addrs_change((from.src, from.dst), (to.src, to.dst));
        let (ports, l4_delta) = transport::ports_change(
            IpProtocol(from.proto),
            (from.sport, from.dport),
            (to.sport, to.dport),
            ip_delta,
        );
        Translation {
            to: *to,
            addrs,
            ip_delta: fold(ip_delta),
            ports,
            l4_delta: fold(l4_delta),
        }
    }

    /// Rewrite `ip` (an IPv4 packet with header length `hl` whose tuple is this translation's
    /// `from`, as [`flow_key`] read it) to `to`, keeping the IP and transport checksums right.
    #[inline(always)]
    pub fn apply(&self, ip: &mut [u8], hl: usize) {
        let (header, l4) = ip.split_at_mut(hl);
        if self.addrs {
            Packet::new_unchecked(header).put_addrs(self.to.src, self.to.dst, self.ip_delta);
        }
        let mut p = Ports::new_unchecked(IpProtocol(self.to.proto), l4);
        if self.ports {
            p.put_ports(self.to.sport, self.to.dport);
        }
        p.add_to_checksum(self.l4_delta);
    }
}

/// Rewrite the packet from tuple `from` to tuple `to` (addresses, ports or ICMP identifier),
/// keeping the IP and L4 checksums right.
#[inline]
pub(super) fn rewrite(ip: &mut [u8], hl: usize, from: &FlowKey, to: &FlowKey) {
    debug_assert_eq!(
        key_of(ip, hl, true).map(|(k, _)| k),
        Some(*from),
        "the packet carries `from`"
    );
    Translation::new(from, to).apply(ip, hl);
}

/// Translate an ICMP error about a packet of a translated connection: the quoted packet gets
/// back its untranslated addresses and ports, the outer destination becomes the quoted packet's
/// original sender (and the outer source the original destination, if the error came from the
/// translated endpoint). Checksums are recomputed. Returns true if the packet was translated.
/// `ip` is the whole IPv4 packet (header length `hl`).
pub(super) fn translate_icmp_error(ct: &mut Conntrack, ip: &mut [u8], hl: usize, now: u32) -> bool {
    let Some((quoted, q, qhl)) = quote(ip, hl) else {
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
    // Rewrite the quoted header and ports, then the outer addresses; every checksum anew.
    let (header, message) = ip.split_at_mut(hl);
    let (quoted_header, quoted_l4) = message[q - hl..].split_at_mut(qhl);
    let mut qh = Packet::new_unchecked(quoted_header);
    qh.set_src(orig.src);
    qh.set_dst(orig.dst);
    qh.fill_checksum();
    Ports::new_unchecked(qh.ip_protocol(), quoted_l4).put_ports(orig.sport, orig.dport);
    icmp::Message::new_unchecked(message).fill_checksum();
    let mut h = Packet::new_unchecked(header);
    if h.src() == quoted.dst {
        h.set_src(orig.dst);
    }
    h.set_dst(orig.src);
    h.fill_checksum();
    true
}

/// The tuple an ICMP error (`ip`, header length `hl`) quotes: the packet that caused it, as it
/// was sent (None when `ip` is not an ICMP error or quotes too little).
pub(super) fn quoted_key(ip: &[u8], hl: usize) -> Option<FlowKey> {
    quote(ip, hl).map(|(k, _, _)| k)
}

/// An ICMP error's quoted packet: its tuple, where its header starts in `ip` and its length
/// (None when `ip` is not an ICMP error or quotes too little: a header and 8 bytes).
#[cold]
#[inline(never)]
fn quote(ip: &[u8], hl: usize) -> Option<(FlowKey, usize, usize)> {
    let h = Packet::new_unchecked(ip);
    if h.ip_protocol() != crate::wire::IpProtocol::ICMP || ip.len() < hl + icmp::HEADER_LEN + 28 {
        return None;
    }
    if !icmp::Message::new_unchecked(&ip[hl..]).is_error() {
        return None;
    }
    let q = hl + icmp::HEADER_LEN;
    let qhl = Packet::new_unchecked(&ip[q..]).header_len();
    if qhl < 20 || ip.len() < q + qhl + 8 {
        return None;
    }
    key_of(&ip[q..], qhl, true).map(|(k, _)| (k, q, qhl))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conntrack::{PROTO_ICMP, PROTO_TCP};
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

    /// `tuple_bytes` against `flow_key` on TCP, UDP and ICMP packets with and without options,
    /// mutated (protocol, fragment bits, ports, addresses, flags) and cut short: bytes only where
    /// `flow_key` gives a key and the packet is TCP or UDP, the flags `flow_key`'s, and equal
    /// bytes only for equal keys.
    #[test]
    fn tuple_bytes_agree_with_flow_key() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut rnd = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut seen: Vec<(TupleBytes, FlowKey)> = Vec::new();
        for i in 0..20_000 {
            let r = rnd();
            let (src, dst) = ([10, 0, (r & 1) as u8, 2], [10, 0, 2, (r >> 1 & 1) as u8]);
            let b = PacketBuilder::ipv4(src, dst, 64);
            let mut ip = Vec::new();
            let (sp, dp) = ((r >> 2 & 3) as u16 * 0x5555, (r >> 4 & 1) as u16 + 80);
            match r >> 5 & 3 {
                0 => b.tcp(sp, dp, 1, 100).write(&mut ip, b"data"),
                1 => b.udp(sp, dp).write(&mut ip, b"data"),
                _ => b.icmpv4_echo_request(sp, dp).write(&mut ip, b"data"),
            }
            .unwrap();
            let mut hl = 20;
            if r >> 7 & 3 == 0 {
                // Four bytes of options (NOPs): the transport header moves.
                ip.splice(20..20, [1, 1, 1, 1]);
                ip[0] = 0x46;
                hl = 24;
            }
            match r >> 9 & 7 {
                0 => ip[6] |= 0x20,                                       // MF
                1 => ip[7] |= (r >> 12) as u8 | 1,                        // an offset
                2 => ip[9] = [6, 17, 1, 47][(r >> 12 & 3) as usize],      // another protocol
                3 => ip.truncate(hl + (r >> 12) as usize % 21), // a short transport header
                4 if ip.len() > hl + 13 => ip[hl + 13] = (r >> 12) as u8, // TCP flags
                _ => {}
            }
            let key = flow_key(&ip, hl);
            let bytes = tuple_bytes(&ip, hl);
            match (bytes, key) {
                (Some((b, flags)), Some((k, kflags))) => {
                    assert!(matches!(k.proto, 6 | 17), "{i}: {k:?}");
                    assert_eq!(flags, kflags, "{i}");
                    assert_eq!(b.key(), k, "{i}");
                    for (ob, ok) in &seen {
                        assert_eq!(*ob == b, *ok == k, "{i}: {k:?} and {ok:?}");
                    }
                    if seen.len() < 64 && !seen.iter().any(|(ob, _)| *ob == b) {
                        seen.push((b, k));
                    }
                }
                (None, Some((k, _))) => assert_eq!(k.proto, PROTO_ICMP, "{i}: {k:?}"),
                (Some(_), None) => panic!("{i}: bytes without a key: {ip:?}"),
                (None, None) => {}
            }
        }
        assert!(seen.len() >= 32, "enough distinct tuples: {}", seen.len());
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
