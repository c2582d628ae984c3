//! Steering with several workers: which worker owns the connection of a frame NAT may
//! translate, so that both directions of a translated connection meet one conntrack table.
//!
//! Contract:
//! - Each worker keeps its own connection table (no lock); its NAT port pools hand out only
//!   its share of the ports (`PortAllocator::partitioned`: port % workers == worker). The
//!   kernel spreads frames over workers by its own hash, so a frame may reach a worker that
//!   does not hold its connection: [`split`] takes such frames out of a received burst, with
//!   their owner, before the pipeline sees them; the worker hands them (copied) to the owner,
//!   which runs them through its pipeline as received on the same port. Frames never cross
//!   threads otherwise.
//! - The owner is computed from the frame alone, the same way for both directions of a
//!   connection (checked in order; the first that applies decides):
//!   1. to a mapped port (`dnat`) of a gateway address: a hash of the client's address and
//!      port (so one mapping's connections spread over the workers);
//!   2. from a `dnat` target address and port (an answer of a mapped connection): the same
//!      hash of its destination, the client; a hairpin answer, to a pool address: the worker
//!      of the pool port the client was translated to (its owner's share);
//!   3. to the address of a NAT port pool (masquerade/SNAT answers, even after their rule was
//!      deleted): the worker of the destination port (ICMP echo: the identifier), which that
//!      worker's pool handed out;
//!   4. to or from an address inside a source rule's prefix (a connection being translated,
//!      or an outside host reaching a container by a route, tracked untranslated): a hash of
//!      the tuple that is the same both ways.
//!
//!   ICMP errors are steered as the answer to the packet they quote.
//! - On a bridge where a `ct(...)` flow was added (`FlowTable::ct_steered`), a frame NAT does
//!   not claim goes to the worker of a hash of its tuple that is the same in both directions
//!   ([`ct_owner`]; an ICMP error: of the tuple it quotes; fragments as below).
//! - Fragments: a first fragment is steered by the tuple it carries, as a whole packet; the
//!   worker that received it remembers its owner for the datagram ([`DatagramTable`], per
//!   receiving worker) and steers the later fragments (no ports) the same way. The kernel
//!   hashes every fragment of a datagram alike (addresses only), so they reach one worker; a
//!   later fragment whose first it did not see stays where it is.
//! - Anything else (no NAT rule and no `ct` flow, frames not sent to the gateway's MAC,
//!   other protocols) stays on the worker that received it.
//! - One worker (`workers == 1`), or no NAT rule, tracked NAT connection or `ct` flow: nothing
//!   is examined.
//! - Reads the datapath and the frames, changes nothing but the datagram table.

use crate::conntrack::{DatagramTable, FlowKey, PROTO_ICMP};
use crate::datapath::Datapath;
use crate::fdb::PortId;
use crate::packet::{Desc, Frames};
use crate::wire::EtherType;

use super::nat::{self, Piece};

/// Move the frames of `batch` that worker `me` of `workers` does not own to `away`, with
/// their owner. Keeps the order of the rest. `frags`: this worker's memory of the owners of
/// fragmented datagrams.
pub fn split(
    dp: &Datapath,
    frames: &Frames,
    in_port: PortId,
    batch: &mut Vec<Desc>,
    (me, workers): (u32, u32),
    away: &mut Vec<(u32, Desc)>,
    frags: &mut DatagramTable<u32>,
) {
    if workers < 2 {
        return;
    }
    let Some(b) = dp.port(in_port).and_then(|p| dp.bridge(p.bridge)) else {
        return;
    };
    let nat_mac = b
        .gateway
        .filter(|_| !dp.nat.rules.is_empty())
        .map(|g| g.mac.0);
    let ct = b.flows.ct_steered;
    if nat_mac.is_none() && !ct {
        return;
    }
    batch.retain(|&d| {
        let f = frames.data(d);
        let w = nat_mac
            .and_then(|mac| fragment_owner(dp, f, mac, workers, frags))
            .or_else(|| ct.then(|| ct_fragment_owner(f, workers, frags)).flatten());
        match w {
            Some(w) if w != me => {
                away.push((w, d));
                false
            }
            _ => true,
        }
    });
}

/// The worker of a connection `ct()` flows track: a hash of its tuple that is the same for
/// both directions (no NAT involved).
pub fn ct_owner(frame: &[u8], workers: u32) -> Option<u32> {
    let (ip, hl) = ipv4_of(frame)?;
    let k = match super::nat::flow_key(ip, hl) {
        Some((k, _)) => k,
        None => super::nat::quoted_key(ip, hl)?,
    };
    Some(symmetric(&k, workers))
}

/// The IPv4 header of an Ethernet frame (after any VLAN tags) and its length, trimmed to the
/// packet's total length.
fn ipv4_of(frame: &[u8]) -> Option<(&[u8], usize)> {
    let mut l3 = 12;
    let mut ethertype = u16::from_be_bytes([*frame.get(12)?, *frame.get(13)?]);
    while (ethertype == EtherType::VLAN || ethertype == EtherType::QINQ) && frame.len() > l3 + 6 {
        l3 += 4;
        ethertype = u16::from_be_bytes([frame[l3], frame[l3 + 1]]);
    }
    l3 += 2;
    if ethertype != EtherType::IPV4 || frame.len() < l3 + 20 {
        return None;
    }
    let ip = &frame[l3..];
    let hl = ((ip[0] & 0x0f) as usize) * 4;
    let total = (u16::from_be_bytes([ip[2], ip[3]]) as usize).min(ip.len());
    if hl < 20 || total < hl {
        return None;
    }
    Some((&ip[..total], hl))
}

/// The worker that owns the connection of `frame` (see the module documentation), None when
/// it needs none. A later fragment: None (see [`split`]).
pub fn owner(dp: &Datapath, frame: &[u8], gw_mac: [u8; 6], workers: u32) -> Option<u32> {
    if frame.len() < 14 + 20 || frame[0..6] != gw_mac {
        return None;
    }
    let (ip, hl) = ipv4_of(frame)?;
    let key = match super::nat::flow_key(ip, hl) {
        Some((k, _)) => k,
        None if nat::piece(ip) == Piece::First => nat::first_fragment_key(ip, hl)?.0,
        None => super::nat::quoted_key(ip, hl)?.reverse(),
    };
    key_owner(dp, &key, workers)
}

/// [`ct_owner`], remembering a first fragment's owner in `frags` for its datagram's later
/// fragments, which get it from there.
fn ct_fragment_owner(frame: &[u8], workers: u32, frags: &mut DatagramTable<u32>) -> Option<u32> {
    let (ip, hl) = ipv4_of(frame)?;
    match nat::piece(ip) {
        Piece::Whole => ct_owner(frame, workers),
        Piece::First => {
            let w = symmetric(&nat::first_fragment_key(ip, hl)?.0, workers);
            frags.remember(nat::datagram_id(ip), w);
            Some(w)
        }
        Piece::Later => frags.recall(&nat::datagram_id(ip)),
    }
}

/// [`owner`], remembering a first fragment's owner in `frags` for its datagram's later
/// fragments, which get it from there.
fn fragment_owner(
    dp: &Datapath,
    frame: &[u8],
    gw_mac: [u8; 6],
    workers: u32,
    frags: &mut DatagramTable<u32>,
) -> Option<u32> {
    let piece = match ipv4_of(frame) {
        Some((ip, _)) if frame[0..6] == gw_mac => nat::piece(ip),
        _ => Piece::Whole,
    };
    match piece {
        Piece::Whole => owner(dp, frame, gw_mac, workers),
        Piece::First => {
            let w = owner(dp, frame, gw_mac, workers)?;
            let (ip, _) = ipv4_of(frame)?;
            frags.remember(nat::datagram_id(ip), w);
            Some(w)
        }
        Piece::Later => frags.recall(&nat::datagram_id(ipv4_of(frame)?.0)),
    }
}

/// [`owner`] for a connection tuple.
pub fn key_owner(dp: &Datapath, k: &FlowKey, workers: u32) -> Option<u32> {
    let gateway_of = |b: u16| dp.bridge(b).and_then(|b| b.gateway).map(|g| g.ip);
    // A mapped port: the worker of the client's address and port, which the answers carry
    // as their destination. (By the mapping's target, every connection of one mapping went
    // to one worker, the others copying all they received to it: found trying uvs as a new
    // user, `iperf3 -P8` into a mapped port lost throughput with two workers.)
    if dp
        .nat
        .dest_for(k.proto, k.dst, k.dport, gateway_of)
        .is_some()
    {
        return Some(spread(k.src, k.sport, workers));
    }
    if dp
        .nat
        .mapped_port_of_target(k.proto, k.src, k.sport)
        .is_some()
    {
        // A hairpin connection's client was translated to a pool port of its owner's share.
        if dp.nat.ct.is_pool_address(k.dst) {
            return Some(k.dport as u32 % workers);
        }
        return Some(spread(k.dst, k.dport, workers));
    }
    // An answer to a translated address: the port (ICMP: identifier) that worker's pool gave.
    if dp.nat.ct.is_pool_address(k.dst) {
        let port = if k.proto == PROTO_ICMP {
            k.sport
        } else {
            k.dport
        };
        return Some(port as u32 % workers);
    }
    // To or from a translated prefix: a hash of the tuple, the same both ways.
    if dp.nat.is_translated_source(k.src) || dp.nat.is_translated_source(k.dst) {
        return Some(symmetric(k, workers));
    }
    None
}

/// A worker for a connection tuple, the same for both directions.
fn symmetric(k: &FlowKey, workers: u32) -> u32 {
    // ICMP echo keys carry the identifier as the source "port" in both directions.
    let dport = if k.proto == PROTO_ICMP {
        k.sport
    } else {
        k.dport
    };
    let (a, b) = ((k.src, k.sport), (k.dst, dport));
    let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
    let pack = |(ip, port): ([u8; 4], u16)| (u32::from_be_bytes(ip) as u64) << 16 | port as u64;
    let x = pack(lo).wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ pack(hi).wrapping_mul(0xC2B2_AE3D_27D4_EB4F)
        ^ k.proto as u64;
    ((x >> 32) % workers as u64) as u32
}

/// A worker for an (address, port) pair.
#[inline]
fn spread(ip: [u8; 4], port: u16, workers: u32) -> u32 {
    let x = (u32::from_be_bytes(ip) as u64) << 16 | port as u64;
    ((x.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) % workers as u64) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fragmented datagram's pieces go where a whole packet of its connection goes: the
    /// first by the tuple it carries, the later ones after it (none before it).
    #[test]
    fn fragments_follow_their_first_to_the_connections_worker() {
        use etherparse::PacketBuilder;
        let mut frags = DatagramTable::default();
        let mut seen = std::collections::BTreeSet::new();
        for (i, sport) in (1000..1200u16).enumerate() {
            let mut whole = Vec::new();
            PacketBuilder::ethernet2([2; 6], [4; 6])
                .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
                .udp(sport, 53)
                .write(&mut whole, &[7u8; 64])
                .unwrap();
            let w = ct_owner(&whole, 4).expect("a tuple");
            let mut first = whole.clone();
            let ident = (i as u16).to_be_bytes();
            first[18..20].copy_from_slice(&ident);
            first[20] = 0x20; // more fragments, offset 0
            let mut later = first[..34].to_vec();
            later.extend_from_slice(&[9u8; 16]);
            later[16..18].copy_from_slice(&36u16.to_be_bytes());
            later[20..22].copy_from_slice(&[0x00, 0x09]); // offset 72, the last
            assert_eq!(
                ct_fragment_owner(&later, 4, &mut frags),
                None,
                "before its first"
            );
            assert_eq!(ct_fragment_owner(&first, 4, &mut frags), Some(w));
            assert_eq!(ct_fragment_owner(&later, 4, &mut frags), Some(w));
            // Without the memory, the later fragment has no owner of its own.
            assert_eq!(ct_owner(&later, 4), None);
            seen.insert(w);
        }
        assert_eq!(seen.len(), 4, "the tuples spread over the workers");
    }

    /// Both directions of a TCP connection and of an ICMP echo get one worker.
    #[test]
    fn ct_owner_is_the_same_both_ways() {
        use etherparse::PacketBuilder;
        let (a, b) = ([10, 0, 0, 1], [10, 0, 0, 2]);
        for workers in [2u32, 3, 4, 16] {
            for p in 1000..1100u16 {
                let mut there = Vec::new();
                PacketBuilder::ethernet2([2; 6], [4; 6])
                    .ipv4(a, b, 64)
                    .tcp(p, 80, 1, 1000)
                    .write(&mut there, b"x")
                    .unwrap();
                let mut back = Vec::new();
                PacketBuilder::ethernet2([4; 6], [2; 6])
                    .ipv4(b, a, 64)
                    .tcp(80, p, 1, 1000)
                    .write(&mut back, b"x")
                    .unwrap();
                assert_eq!(ct_owner(&there, workers), ct_owner(&back, workers));
                let mut echo = Vec::new();
                PacketBuilder::ethernet2([2; 6], [4; 6])
                    .ipv4(a, b, 64)
                    .icmpv4_echo_request(p, 1)
                    .write(&mut echo, b"x")
                    .unwrap();
                let mut reply = Vec::new();
                PacketBuilder::ethernet2([4; 6], [2; 6])
                    .ipv4(b, a, 64)
                    .icmpv4_echo_reply(p, 1)
                    .write(&mut reply, b"x")
                    .unwrap();
                assert_eq!(
                    ct_owner(&echo, workers),
                    ct_owner(&reply, workers),
                    "id {p}"
                );
                assert!(ct_owner(&echo, workers).unwrap() < workers);
            }
        }
    }
}
