//! Offload fallback at output (VPP's `gso` node): frames that carry offload state (a partial
//! checksum, a TCP super-frame) are passed on as they are to ports that take them (TAP with
//! `IFF_VNET_HDR`) and finished here, once, for every other port (AF_XDP, mem, VXLAN tunnels).
//!
//! Contract:
//! - [`locate`] finds the L4 header by parsing (Ethernet, one optional VLAN tag, IPv4 without
//!   fragmentation or IPv6 without extension headers); frames it cannot parse are not
//!   offloadable (TAP rx completes those at once).
//! - [`refresh_partial`] rewrites a partial checksum field to the pseudo-header sum of the
//!   header as it is now, so nodes that rewrote addresses (NAT, flows' `set_field`) or lengths
//!   need not know about offloads: the field is recomputed from the header, never updated
//!   incrementally.
//! - [`complete`] turns a partial checksum into a complete one; [`segment`] cuts a TCP
//!   super-frame into frames of the pool with `mss` payload bytes each: the IPv4 total length,
//!   id (+1 per segment) and header checksum, the IPv6 payload length, the TCP sequence number,
//!   flags (FIN and PSH on the last segment only, CWR on the first only) and a complete TCP
//!   checksum per segment. The super-frame is freed.
//! - TCP may be cut finer than the sender's segment size (a smaller egress MTU): that is legal
//!   TCP, unlike refragmenting UDP, which is why only TCP super-frames are cut at output. UDP
//!   GSO frames (`Udp4`) are cut only where they arrive, at their own size (`split_udp`: an
//!   afpacket port receiving a peer's VXLAN datagrams sent as one UDP GSO message).

use crate::counters::DropReason;
use crate::packet::{Desc, Frames, MAX_FRAME_LEN, Offload};
use crate::wire::checksum::{fold, pseudo_v4, pseudo_v6, sum};
use crate::wire::tcp::{self, Flags};
use crate::wire::{EtherType, ipv4, ipv6, udp};

/// Where the headers of an offloadable frame are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct L4At {
    /// Offset of the IP header.
    pub l3: usize,
    /// Offset of the TCP/UDP header.
    pub l4: usize,
    /// 6 (TCP) or 17 (UDP).
    pub proto: u8,
    /// IPv6 (else IPv4).
    pub v6: bool,
    /// Offset of the checksum field inside the L4 header (16 or 6).
    pub csum_off: usize,
}

impl L4At {
    /// L4 bytes (header and payload) according to the IP header.
    fn l4_len(&self, data: &[u8]) -> usize {
        let ip = &data[self.l3..];
        if self.v6 {
            ipv6::Packet::new_unchecked(ip).payload_len() as usize
        } else {
            ipv4::Packet::new_unchecked(ip).total_len() as usize - (self.l4 - self.l3)
        }
    }

    /// Write the L4 checksum field.
    fn put_checksum(&self, data: &mut [u8], c: u16) {
        let l4 = &mut data[self.l4..];
        if self.proto == 6 {
            tcp::Segment::new_unchecked(l4).set_checksum(c);
        } else {
            udp::Datagram::new_unchecked(l4).set_checksum(c);
        }
    }

    /// The pseudo-header sum for `l4_len` L4 bytes.
    fn pseudo(&self, data: &[u8], l4_len: usize) -> u64 {
        let l3 = self.l3;
        if self.v6 {
            let ip = ipv6::Packet::new_unchecked(&data[l3..]);
            pseudo_v6(&ip.src(), &ip.dst(), self.proto, l4_len as u32)
        } else {
            let ip = ipv4::Packet::new_unchecked(&data[l3..]);
            pseudo_v4(&ip.src(), &ip.dst(), self.proto, l4_len as u16)
        }
    }
}

/// Find the L4 header of a TCP/UDP frame, or None if the frame is something else, malformed, or
/// shorter than its IP header says.
pub(crate) fn locate(data: &[u8]) -> Option<L4At> {
    if data.len() < 14 {
        return None;
    }
    let (mut l3, mut et) = (14, u16::from_be_bytes([data[12], data[13]]));
    if et == EtherType::VLAN {
        if data.len() < 18 {
            return None;
        }
        (l3, et) = (18, u16::from_be_bytes([data[16], data[17]]));
    }
    let ip = data.get(l3..)?;
    let (l4, proto, v6, end) = match et {
        EtherType::IPV4 if ip.len() >= 20 && ip[0] >> 4 == 4 => {
            let hl = (ip[0] & 0x0f) as usize * 4;
            let frag = u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff;
            let tl = u16::from_be_bytes([ip[2], ip[3]]) as usize;
            if hl < 20 || frag != 0 || tl < hl {
                return None;
            }
            (l3 + hl, ip[9], false, l3 + tl)
        }
        EtherType::IPV6 if ip.len() >= 40 && ip[0] >> 4 == 6 => {
            let plen = u16::from_be_bytes([ip[4], ip[5]]) as usize;
            (l3 + 40, ip[6], true, l3 + 40 + plen)
        }
        _ => return None,
    };
    let csum_off = match proto {
        6 => 16,
        17 => 6,
        _ => return None,
    };
    let min = if proto == 6 { 20 } else { 8 };
    if end > data.len() || end < l4 + min {
        return None;
    }
    Some(L4At {
        l3,
        l4,
        proto,
        v6,
        csum_off,
    })
}

/// Set a partial checksum field to the pseudo-header sum of the header as it is now.
pub(crate) fn refresh_partial(data: &mut [u8], at: &L4At) {
    let p = fold(at.pseudo(data, at.l4_len(data)));
    at.put_checksum(data, p);
}

/// Compute the complete L4 checksum of the frame (whatever the field held).
pub(crate) fn complete(data: &mut [u8], at: &L4At) {
    let len = at.l4_len(data);
    at.put_checksum(data, 0);
    let mut c = !fold(sum(at.pseudo(data, len), &data[at.l4..at.l4 + len]));
    if at.proto == 17 && c == 0 {
        c = 0xffff;
    }
    at.put_checksum(data, c);
}

/// The L3 length of the largest segment a GSO frame makes (the MTU check's figure), or the
/// frame's own L3 length when it is not GSO or cannot be parsed.
pub(crate) fn seg_l3_len(data: &[u8], d: Desc, l3: usize) -> usize {
    let whole = data.len().saturating_sub(l3);
    if d.ol.gso_type().is_none() {
        return whole;
    }
    match locate(data) {
        Some(at) if at.proto == 6 => {
            let thl = (data[at.l4 + 12] >> 4) as usize * 4;
            (at.l4 - at.l3 + thl + d.ol.gso_size() as usize).min(whole)
        }
        _ => whole,
    }
}

/// Cut the TCP super-frame `d` into segments of at most `mss` payload bytes, appended to `out`
/// (see the module documentation). `d` is freed whatever the outcome.
pub(crate) fn segment(
    frames: &mut Frames,
    d: Desc,
    mss: usize,
    out: &mut Vec<Desc>,
) -> Result<usize, DropReason> {
    let r = segment_into(frames, d, mss, out);
    frames.free(d.addr);
    r
}

fn segment_into(
    frames: &mut Frames,
    d: Desc,
    mss: usize,
    out: &mut Vec<Desc>,
) -> Result<usize, DropReason> {
    let at = locate(frames.data(d))
        .filter(|a| a.proto == 6)
        .ok_or(DropReason::Runt)?;
    cut_tcp(frames, d, (0, at), mss, out, |_, _| {})
}

/// Cut the TCP super-frame whose IP header starts at `inner` of `d` (its L4 at `at`, relative
/// to `inner`) into segments of at most `mss` payload bytes, appended to `out`: every header
/// in front of the TCP payload copied, the segment's own headers fixed (`fix_segment`), then
/// `outer(frame, index)` for whatever encloses it (a tunnel's headers). `d` is not freed.
fn cut_tcp(
    frames: &mut Frames,
    d: Desc,
    (inner, at): (usize, L4At),
    mss: usize,
    out: &mut Vec<Desc>,
    outer: impl Fn(&mut [u8], usize),
) -> Result<usize, DropReason> {
    let data = frames.data(d);
    let seg = &data[inner..];
    let thl = tcp::Segment::new_unchecked(&seg[at.l4..]).header_len();
    let hdr = inner + at.l4 + thl;
    let end = inner + at.l4 + at.l4_len(seg);
    if thl < 20 || end < hdr || end > data.len() || mss == 0 {
        return Err(DropReason::Runt);
    }
    if hdr + mss.min(end - hdr) > MAX_FRAME_LEN {
        return Err(DropReason::MtuExceeded);
    }
    let payload = end - hdr;
    let n = payload.div_ceil(mss).max(1);
    if frames.spare() < n {
        return Err(DropReason::NoBuffer);
    }
    let seq0 = tcp::Segment::new_unchecked(&seg[at.l4..]).seq();
    for i in 0..n {
        let off = i * mss;
        let plen = mss.min(payload - off);
        let Some(mut s) = frames.alloc() else {
            return Err(DropReason::NoBuffer);
        };
        s.len = (hdr + plen) as u32;
        frames.copy_bytes(d.addr, s.addr, hdr);
        frames.copy_bytes(d.addr + (hdr + off) as u64, s.addr + hdr as u64, plen);
        // The segments come from where the super-frame came in (a relayed output's share).
        if let Some(p) = frames.received_on(d.addr) {
            frames.mark_received(s.addr, p);
        }
        let b = frames.data_mut(s);
        let segment = &mut b[inner..];
        tcp::Segment::new_unchecked(&mut segment[at.l4..]).set_seq(seq0.wrapping_add(off as u32));
        fix_segment(segment, &at, thl, plen, (i as u32, i == 0, i + 1 == n));
        outer(b, i);
        out.push(s);
    }
    Ok(n)
}

/// Fix the headers of one segment (`plen` payload bytes): lengths, IPv4 id and checksum, TCP
/// flags and checksum. `pos` is (index, first, last).
fn fix_segment(b: &mut [u8], at: &L4At, thl: usize, plen: usize, pos: (u32, bool, bool)) {
    let (i, first, last) = pos;
    let l3 = at.l3;
    if at.v6 {
        ipv6::Packet::new_unchecked(&mut b[l3..]).set_payload_len((thl + plen) as u16);
    } else {
        // The super-frame's header checksum may be anything (the sender's stack left it to
        // segmentation): lengths and id set, then the sum computed whole.
        let hl = at.l4 - l3;
        let mut ip = ipv4::Packet::new_unchecked(&mut b[l3..at.l4]);
        ip.set_total_len((hl + thl + plen) as u16);
        ip.set_ident(ip.ident().wrapping_add(i as u16));
        ip.fill_checksum();
    }
    let mut seg = tcp::Segment::new_unchecked(&mut b[at.l4..]);
    let mut f = seg.flags();
    if !last {
        f &= !(Flags::FIN | Flags::PSH);
    }
    if !first {
        f &= !Flags::CWR;
    }
    seg.set_flags(f);
    complete(b, at);
}

/// Cut the IPv4 UDP GSO frame `d` (offload `gso(Udp4, size)`) into its datagrams of `size`
/// payload bytes (the last may be shorter), appended to `out`: the headers copied in front of
/// each, IPv4 total length, id (+1 per datagram) and header checksum, UDP length, and a partial
/// UDP checksum (the pseudo-header sum; output completes it or passes it on). `d` is freed
/// whatever the outcome.
pub(crate) fn split_udp(
    frames: &mut Frames,
    d: Desc,
    out: &mut Vec<Desc>,
) -> Result<usize, DropReason> {
    let r = split_udp_into(frames, d, out);
    frames.free(d.addr);
    r
}

fn split_udp_into(frames: &mut Frames, d: Desc, out: &mut Vec<Desc>) -> Result<usize, DropReason> {
    let data = frames.data(d);
    let at = locate(data)
        .filter(|a| a.proto == 17 && !a.v6)
        .ok_or(DropReason::Runt)?;
    let size = d.ol.gso_size() as usize;
    let hdr = at.l4 + 8;
    let end = at.l4 + at.l4_len(data);
    if size == 0 || end < hdr || hdr + size > MAX_FRAME_LEN {
        return Err(DropReason::Runt);
    }
    let payload = end - hdr;
    let n = payload.div_ceil(size).max(1);
    if frames.spare() < n {
        return Err(DropReason::NoBuffer);
    }
    for i in 0..n {
        let off = i * size;
        let plen = size.min(payload - off);
        let Some(mut s) = frames.alloc() else {
            return Err(DropReason::NoBuffer);
        };
        s.len = (hdr + plen) as u32;
        s.ol = Offload::partial();
        frames.copy_bytes(d.addr, s.addr, hdr);
        frames.copy_bytes(d.addr + (hdr + off) as u64, s.addr + hdr as u64, plen);
        let b = frames.data_mut(s);
        let hl = at.l4 - at.l3;
        let mut ip = ipv4::Packet::new_unchecked(&mut b[at.l3..at.l4]);
        ip.set_total_len((hl + udp::HEADER_LEN + plen) as u16);
        ip.set_ident(ip.ident().wrapping_add(i as u16));
        ip.fill_checksum();
        udp::Datagram::new_unchecked(&mut b[at.l4..]).set_len((udp::HEADER_LEN + plen) as u16);
        refresh_partial(b, &at);
        out.push(s);
    }
    Ok(n)
}

/// Bytes of a VXLAN header (after the outer UDP header).
const VXLAN_HLEN: usize = 8;

/// Cut the IPv4 VXLAN packet `d`, whose inner frame is a TCP super-frame, into VXLAN packets of
/// one segment of at most `mss` payload bytes each, appended to `out`: the kernel's UDP-tunnel
/// GSO (`SKB_GSO_UDP_TUNNEL`), as a kernel VXLAN device in another namespace of this host hands
/// its TCP to a veth, and `PACKET_VNET_HDR` describes only by its inner TCP (`csum_start` at
/// the inner TCP header). Each packet: the inner segment as [`segment`] makes it (lengths, id,
/// seq, flags, complete checksums), the outer IPv4 total length, id (+1 per packet) and header
/// checksum, the UDP length, and a zero UDP checksum (none, as RFC 7348 advises for VXLAN over
/// IPv4). `d` is freed whatever the outcome.
pub(crate) fn split_tunnel(
    frames: &mut Frames,
    d: Desc,
    mss: usize,
    out: &mut Vec<Desc>,
) -> Result<usize, DropReason> {
    let r = split_tunnel_into(frames, d, mss, out);
    frames.free(d.addr);
    r
}

/// Where a UDP-tunnel super-frame's headers are: the outer UDP's, the inner frame's offset,
/// and the inner TCP's (relative to the inner frame). None when `data` is not IPv4 UDP
/// carrying a VXLAN-encapsulated TCP frame.
pub(crate) fn locate_tunnel(data: &[u8]) -> Option<(L4At, usize, L4At)> {
    let outer = locate(data).filter(|a| a.proto == 17 && !a.v6)?;
    let inner = outer.l4 + udp::HEADER_LEN + VXLAN_HLEN;
    let at = locate(data.get(inner..)?).filter(|a| a.proto == 6)?;
    Some((outer, inner, at))
}

fn split_tunnel_into(
    frames: &mut Frames,
    d: Desc,
    mss: usize,
    out: &mut Vec<Desc>,
) -> Result<usize, DropReason> {
    let (outer, inner, at) = locate_tunnel(frames.data(d)).ok_or(DropReason::Runt)?;
    cut_tcp(frames, d, (inner, at), mss, out, |b, i| {
        let total = b.len();
        let mut ip = ipv4::Packet::new_unchecked(&mut b[outer.l3..outer.l4]);
        ip.set_total_len((total - outer.l3) as u16);
        ip.set_ident(ip.ident().wrapping_add(i as u16));
        ip.fill_checksum();
        let mut u = udp::Datagram::new_unchecked(&mut b[outer.l4..]);
        u.set_len((total - outer.l4) as u16);
        u.set_checksum(0);
    })
}

#[cfg(test)]
#[path = "gso_tests.rs"]
mod tests;
