//! `local-refuse`: what a gateway address answers for a packet it has no service for, as a
//! Linux host with nothing listening there does, so that a client is told at once instead of
//! timing out ("connection refused"):
//! - a TCP segment without RST gets a reset (RFC 9293 3.10.7.1): to a segment with ACK, a
//!   RST whose sequence number is that ACK; otherwise a RST|ACK acknowledging the segment
//!   (its payload, SYN and FIN counted), sequence number 0;
//! - a UDP datagram gets ICMP port unreachable, any other protocol but ICMP ICMP protocol
//!   unreachable, both sent from the address the packet was sent to;
//! - a fragment other than the first, and ICMP other than echo requests (answered by the
//!   router), get nothing.
//!
//! The reset is written over the segment's own frame (MACs, addresses and ports swapped, IP
//! options and payload dropped, no offload state left) and goes back out of its ingress port.
//! ICMP errors (these and the router's: time exceeded, unreachable, fragmentation needed) are
//! rate limited per worker by [`IcmpLimit`], as Linux's `icmp_msgs_per_sec`/`icmp_msgs_burst`
//! (1,000 a second, bursts of 50); resets are not limited (Linux's are not either).

use super::{Dest, Meta, l3};
use crate::counters::DropReason;
use crate::datapath::{Datapath, Gateway};
use crate::fdb::PortId;
use crate::packet::{Frames, Offload};
use crate::wire::tcp::{self, Flags};
use crate::wire::{IpProtocol, checksum, ethernet, icmp, ipv4};

/// ICMP errors a worker may send a second (Linux's `net.ipv4.icmp_msgs_per_sec`).
pub const ICMP_PER_SEC: u64 = 1_000;
/// ICMP errors a worker may send at once after a quiet spell (`net.ipv4.icmp_msgs_burst`).
pub const ICMP_BURST: u64 = 50;
/// ICMP protocol unreachable.
const PROTO_UNREACH: u8 = 2;
/// ICMP port unreachable.
const PORT_UNREACH: u8 = 3;

/// A token bucket of ICMP errors: [`ICMP_PER_SEC`] earned a second up to [`ICMP_BURST`].
#[derive(Debug, Clone)]
pub struct IcmpLimit {
    /// Tokens, in thousandths of an error.
    milli: u64,
    last_ms: u64,
}

impl Default for IcmpLimit {
    fn default() -> Self {
        IcmpLimit {
            milli: ICMP_BURST * 1000,
            last_ms: 0,
        }
    }
}

impl IcmpLimit {
    /// Take one error's token at `now_ms`; false when the bucket is empty.
    pub fn allow(&mut self, now_ms: u64) -> bool {
        let earned = now_ms.saturating_sub(self.last_ms).min(1 << 20) * ICMP_PER_SEC;
        self.last_ms = self.last_ms.max(now_ms);
        self.milli = (self.milli + earned).min(ICMP_BURST * 1000);
        if self.milli >= 1000 {
            self.milli -= 1000;
            true
        } else {
            false
        }
    }
}

/// Refuse the packet in `m` (an unfragmented or first-fragment IPv4 packet of `total` bytes
/// with a header of `hl` at `l3`, to the gateway address `to`, received on `in_port`). A
/// reset reuses the frame (`m` then goes back out of `in_port`); otherwise the frame is left
/// to the caller to drop with the returned reason.
#[cold]
#[inline(never)]
#[allow(clippy::too_many_arguments)]
pub(super) fn refuse(
    dp: &mut Datapath,
    frames: &mut Frames,
    m: &mut Meta,
    (l3, hl, total): (usize, usize, usize),
    to: Gateway,
    in_port: PortId,
    made: &mut Vec<Meta>,
) -> Result<(), DropReason> {
    let data = frames.data(m.desc);
    let ip = ipv4::Packet::new_unchecked(&data[l3..]);
    if ip.frag_offset() != 0 {
        return Err(DropReason::LocalUnsupported);
    }
    match ip.ip_protocol() {
        IpProtocol::TCP if !ip.is_fragment() => reset(dp, frames, m, (l3, hl, total), in_port),
        IpProtocol::ICMP | IpProtocol::TCP => Err(DropReason::LocalUnsupported),
        p => {
            let code = if p == IpProtocol::UDP {
                PORT_UNREACH
            } else {
                PROTO_UNREACH
            };
            l3::icmp_error(
                dp,
                frames,
                to,
                m,
                in_port,
                icmp::DEST_UNREACH,
                code,
                0,
                made,
            );
            Err(DropReason::LocalRefused)
        }
    }
}

/// Turn the TCP segment in `m` into its reset, in place.
fn reset(
    dp: &mut Datapath,
    frames: &mut Frames,
    m: &mut Meta,
    (l3, hl, total): (usize, usize, usize),
    in_port: PortId,
) -> Result<(), DropReason> {
    let data = frames.data_mut(m.desc);
    let (src, dst) = {
        let ip = ipv4::Packet::new_unchecked(&data[l3..]);
        (ip.src(), ip.dst())
    };
    let seg = tcp::Segment::new_checked(&data[l3 + hl..l3 + total])
        .map_err(|_| DropReason::LocalUnsupported)?;
    // A segment whose checksum does not verify is dropped, not answered (as Linux's
    // `tcp_v4_rcv`): its sequence numbers cannot be trusted. One whose checksum a sender left
    // to offload (partial) is taken as it is.
    if !m.desc.ol.is_partial() {
        let pseudo = checksum::pseudo_v4(&src, &dst, IpProtocol::TCP.0, (total - hl) as u16);
        if checksum::fold(checksum::sum(pseudo, &data[l3 + hl..l3 + total])) != 0xffff {
            return Err(DropReason::LocalUnsupported);
        }
    }
    let flags = seg.flags();
    // Never a reset for a reset (RFC 9293: "an incoming segment containing a RST is
    // discarded").
    if flags & Flags::RST != 0 {
        return Err(DropReason::LocalUnsupported);
    }
    let (seq, ack, rst_flags) = if flags & Flags::ACK != 0 {
        (seg.ack(), 0, Flags::RST)
    } else {
        let payload = (total - hl - seg.header_len()) as u32;
        let len = payload + u32::from(flags & Flags::SYN != 0) + u32::from(flags & Flags::FIN != 0);
        (0, seg.seq().wrapping_add(len), Flags::RST | Flags::ACK)
    };
    let (sport, dport) = (seg.src_port(), seg.dst_port());
    // The reset's frame: the minimum Ethernet frame at least (the segment may have been
    // shorter than that with its header alone; pool frames hold far more).
    const LEN: usize = ipv4::MIN_HEADER_LEN + tcp::MIN_HEADER_LEN;
    let end = l3 + LEN;
    let len = end.max(60);
    m.desc.len = len as u32;
    m.desc.ol = Offload::NONE;
    let data = frames.data_mut(m.desc);
    data[end..].fill(0);
    // Ethernet: back to the sender.
    let mut f = ethernet::Frame::new_unchecked(&mut data[..l3]);
    let (dmac, smac) = (f.dst(), f.src());
    f.set_dst(smac);
    f.set_src(dmac);
    let mut ip = ipv4::Packet::new_unchecked(&mut data[l3..l3 + ipv4::MIN_HEADER_LEN]);
    ip.set_header(IpProtocol::TCP, dst, src, LEN as u16);
    ip.set_dont_frag(true);
    ip.fill_checksum();
    let t = &mut data[l3 + ipv4::MIN_HEADER_LEN..end];
    t.fill(0);
    let mut s = tcp::Segment::new_unchecked(&mut *t);
    s.set_ports(dport, sport);
    s.set_seq(seq);
    s.set_ack(ack);
    s.set_header_len(tcp::MIN_HEADER_LEN);
    s.set_flags(rst_flags);
    let pseudo = checksum::pseudo_v4(&dst, &src, IpProtocol::TCP.0, tcp::MIN_HEADER_LEN as u16);
    let c = checksum::fold(checksum::sum(pseudo, t));
    tcp::Segment::new_unchecked(&mut *t).set_checksum(!c);
    m.dst = smac.to_u64();
    m.src = dmac.to_u64();
    m.dest = Dest::Port(in_port);
    dp.router.resets += 1;
    Ok(())
}

/// The gateway a refusal of a packet to `to` comes from: that address, with the MAC the packet
/// was sent to (the ingress bridge's gateway, which routed it there).
pub(super) fn answering(to: [u8; 4], ingress: Gateway) -> Gateway {
    Gateway { ip: to, ..ingress }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_allows_a_burst_then_the_rate() {
        let mut l = IcmpLimit::default();
        let t0 = 10_000;
        let burst = (0..200).filter(|_| l.allow(t0)).count() as u64;
        assert_eq!(burst, ICMP_BURST);
        // 10 ms later: 10 more (1,000 a second).
        let more = (0..200).filter(|_| l.allow(t0 + 10)).count();
        assert_eq!(more, 10);
        // A clock that goes back earns nothing.
        assert!(!l.allow(t0));
        // A long quiet spell refills to the burst, no more.
        let later = (0..200).filter(|_| l.allow(t0 + 60_000)).count() as u64;
        assert_eq!(later, ICMP_BURST);
    }
}
