//! TCP receive offload at output (the kernel's GRO, VPP's `gro` node): consecutive TCP
//! segments of one flow queued toward a port that takes GSO frames (`PortState::offload_out`:
//! AF_PACKET with `PACKET_VNET_HDR`, TAP with `IFF_VNET_HDR`) are merged into one TCP
//! super-frame, so the port makes one `sendmmsg`/`writev` entry and the receiving stack one
//! skb instead of one per segment. It matters where segments arrive MTU-sized although the
//! sender made super-frames: behind a VXLAN tunnel (the remote VTEP cut them to the underlay
//! MTU) or from an AF_XDP port.
//!
//! Contract ([`coalesce`], run by [`run`] on every offload-capable port's queue just before it
//! is flushed):
//! - Only adjacent frames of the queue merge (no flow table): a run starts at a mergeable
//!   segment and takes the following ones while each is the next segment of the same flow. A
//!   run of one frame is left exactly as it was; frames that are not mergeable are left as they
//!   are, in their place (the queue keeps its order).
//! - Mergeable: Ethernet (one optional VLAN tag), IPv4 without options, DF set, no fragment,
//!   and TCP with at least one payload byte and flags ACK and optionally PSH only (no
//!   SYN/FIN/RST/URG/ECE/CWR); no offload state or a partial checksum (a super-frame is not
//!   merged again); a complete checksum must verify (a corrupted segment is never hidden
//!   behind a partial checksum: it goes on alone and the receiver drops it). The sum is
//!   checked only when a segment would join a run (head and next), never for a lone one.
//! - The next segment of a run (the kernel's `tcp_gro_receive` rules): the same Ethernet
//!   header, IPv4 TOS, TTL, DF, addresses; the same ports, acknowledgement number, header
//!   length, flags (PSH aside), window and option bytes (timestamps included); the sequence
//!   number right after the run's last byte; at most as many payload bytes as the run's first
//!   segment (its MSS). A segment shorter than the MSS or with PSH ends the run after it; the
//!   run also ends before the IPv4 total length would exceed 65535.
//! - A merged run becomes one frame in a large buffer with the first segment's headers: IPv4
//!   total length and header checksum rewritten, PSH set if any segment had it, the TCP
//!   checksum field holding the pseudo-header sum, offload state `gso(Tcp4, MSS)`. The
//!   segments' frames are freed. Without a free large buffer the run stays unmerged.
//! - Then, on ports with `uso_out`, the VXLAN datagrams that encapsulation queued are merged
//!   into UDP GSO frames the same way (`super::uso`); `gro_merged` counts both.

use super::gso;
use crate::datapath::Datapath;
use crate::packet::{Desc, Frames, GsoType, MAX_BIG_LEN, Offload};
use crate::wire::checksum::{fold, pseudo_v4, sum};
use crate::wire::{ipv4, tcp};

/// TCP flags a mergeable segment may carry: ACK and PSH.
const ACK: u8 = tcp::Flags::ACK;
const PSH: u8 = tcp::Flags::PSH;

/// Merge segments in the output queue of every port that takes GSO frames; returns the number
/// of segments that went into super-frames.
/// On ports that also take UDP GSO (`uso_out`), VXLAN datagrams to this switch's tunnels are
/// merged too (`super::uso`).
pub fn run(dp: &mut Datapath, frames: &mut Frames) -> u64 {
    let mut merged = 0;
    let Datapath {
        ports,
        out,
        tunnel_udp_ports: vx,
        ..
    } = dp;
    for (id, q) in out.iter_mut().enumerate() {
        if q.len() < 2 {
            continue;
        }
        let Some(port) = ports.get_mut(id).and_then(|p| p.as_mut()) else {
            continue;
        };
        if !port.offload_out {
            continue;
        }
        let mut n = coalesce(frames, q);
        if port.uso_out && !vx.is_empty() {
            n += super::uso::coalesce(frames, q, vx);
        }
        port.counters.gro_merged += n;
        merged += n;
    }
    merged
}

/// Where the headers of a mergeable segment are, and its payload.
#[derive(Clone, Copy)]
struct Seg {
    /// Offset of the IPv4 header (14 or 18).
    l3: usize,
    /// Offset of the TCP header (`l3 + 20`).
    l4: usize,
    /// Offset of the payload.
    payload: usize,
    /// Payload bytes.
    plen: usize,
    seq: u32,
    flags: u8,
    /// Its TCP checksum is complete (not partial) and must verify before it is merged.
    verify: bool,
}

/// The segment's layout if frame `d` may be merged (see the module documentation).
fn mergeable(data: &[u8], d: Desc) -> Option<Seg> {
    if d.ol.gso_type().is_some() {
        return None;
    }
    let at = gso::locate(data)?;
    if at.v6 || at.proto != 6 || at.l4 - at.l3 != 20 {
        return None;
    }
    let ip = &data[at.l3..];
    if ip[6] & 0x40 == 0 {
        return None; // DF clear: ids would have to be checked.
    }
    let tcp = tcp::Segment::new_unchecked(&data[at.l4..]);
    let (thl, flags) = (tcp.header_len(), tcp.flags());
    let total = u16::from_be_bytes([ip[2], ip[3]]) as usize;
    let end = at.l3 + total;
    let payload = at.l4 + thl;
    if thl < 20 || payload >= end || flags & !PSH != ACK {
        return None;
    }
    let seq = tcp.seq();
    Some(Seg {
        l3: at.l3,
        l4: at.l4,
        payload,
        plen: end - payload,
        seq,
        flags,
        verify: !d.ol.is_partial(),
    })
}

/// True if the segment's complete TCP checksum verifies (or it is partial: nothing to check).
/// Checked only when a segment is about to be merged, so a lone segment costs no sum.
fn verified(data: &[u8], s: &Seg) -> bool {
    if !s.verify {
        return true;
    }
    let ip = &data[s.l3..];
    let end = s.payload + s.plen;
    let p = pseudo_v4(&ip[12..16], &ip[16..20], 6, (end - s.l4) as u16);
    fold(sum(p, &data[s.l4..end])) == 0xffff
}

/// True if `next` (bytes `nb`) continues the run whose head is `head` (bytes `hb`), which holds
/// `len` payload bytes so far with segment size `mss`.
fn continues(hb: &[u8], head: &Seg, nb: &[u8], next: &Seg, len: usize, mss: usize) -> bool {
    let (h3, n3) = (head.l3, next.l3);
    let (h4, n4) = (head.l4, next.l4);
    h3 == n3
        && next.payload - n4 == head.payload - h4
        && next.plen <= mss
        && next.seq == head.seq.wrapping_add(len as u32)
        && head.payload - h3 + len + next.plen <= 65535
        && head.payload + len + next.plen <= MAX_BIG_LEN
        // Ethernet (and VLAN tag); IPv4 version/IHL, TOS; flags/fragment, TTL, protocol;
        // addresses.
        && hb[..h3 + 2] == nb[..n3 + 2]
        && hb[h3 + 6..h3 + 10] == nb[n3 + 6..n3 + 10]
        && hb[h3 + 12..h3 + 20] == nb[n3 + 12..n3 + 20]
        // Ports; acknowledgement number; header length; flags but PSH; window; options.
        && hb[h4..h4 + 4] == nb[n4..n4 + 4]
        && hb[h4 + 8..h4 + 13] == nb[n4 + 8..n4 + 13]
        && (hb[h4 + 13] | PSH) == (nb[n4 + 13] | PSH)
        && hb[h4 + 14..h4 + 16] == nb[n4 + 14..n4 + 16]
        && hb[h4 + 20..head.payload] == nb[n4 + 20..next.payload]
}

/// GRO's rules for [`super::coalesce`].
struct Tcp;

impl super::coalesce::Merge for Tcp {
    type Unit = Seg;

    fn unit(&self, data: &[u8], d: Desc) -> Option<Seg> {
        mergeable(data, d)
    }

    fn payload(s: &Seg) -> (usize, usize) {
        (s.payload, s.plen)
    }

    fn joins(
        &self,
        (hb, head): (&[u8], &Seg),
        (nb, next): (&[u8], &Seg),
        len: usize,
        count: usize,
    ) -> bool {
        continues(hb, head, nb, next, len, head.plen)
            && verified(nb, next)
            // The second segment: the head's checksum must verify too.
            && (count > 1 || verified(hb, head))
    }

    fn ends(&self, head: &Seg, s: &Seg) -> bool {
        s.flags & PSH != 0 || s.plen < head.plen
    }

    fn finish(&self, b: &mut [u8], h: &Seg, last: &Seg, len: usize) -> Offload {
        let mut ip = ipv4::Packet::new_unchecked(&mut b[h.l3..h.l4]);
        ip.set_total_len((h.payload - h.l3 + len) as u16);
        // PSH ends a run, so only its last segment can carry it.
        if last.flags & PSH != 0 {
            let mut tcp = tcp::Segment::new_unchecked(&mut b[h.l4..h.payload]);
            tcp.set_flags(tcp.flags() | PSH);
        }
        let at = gso::locate(b).expect("a merged run parses as its head did");
        gso::refresh_partial(b, &at);
        Offload::gso(GsoType::Tcp4, h.plen as u16)
    }
}

/// Merge runs of consecutive segments in `q` in place (see the module documentation); returns
/// the number of segments that went into super-frames.
pub(crate) fn coalesce(frames: &mut Frames, q: &mut Vec<Desc>) -> u64 {
    super::coalesce::coalesce(&Tcp, frames, q)
}

#[cfg(test)]
#[path = "gro_tests.rs"]
mod tests;
