//! In-memory tests of frames with offload state through the pipeline (what TAP ports with
//! `IFF_VNET_HDR` hand over): TCP super-frames and partial checksums flooded to a port that
//! takes offloads (passed as they are) and to one that does not (segmented, checksums
//! completed), routed and masqueraded (headers rewritten, partial checksum refreshed from the
//! new header). Checked with etherparse.

mod common;

use common::*;
use etherparse::{NetSlice, PacketBuilder, SlicedPacket, TransportSlice};
use uvs::datapath::VlanMode;
use uvs::packet::{Desc, GsoType, Offload};
use uvs::wire::checksum::{fold, pseudo_v4};

/// An Ethernet/IPv4/TCP frame whose checksum field holds the pseudo-header sum (partial).
fn tcp_partial(dst: [u8; 6], src: [u8; 4], dstip: [u8; 4], payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    PacketBuilder::ethernet2(mac(2), dst)
        .ipv4(src, dstip, 64)
        .tcp(40000, 5201, 1000, 500)
        .write(&mut f, payload)
        .unwrap();
    let p = fold(pseudo_v4(&src, &dstip, 6, (20 + payload.len()) as u16));
    f[50..52].copy_from_slice(&p.to_be_bytes());
    f
}

fn payload(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 253) as u8).collect()
}

/// Hand `bytes` to the pipeline as received on `port` (in a large buffer if it needs one, as
/// TAP ports do) with offload `ol`.
fn inject(h: &mut Harness, port: u16, bytes: &[u8], ol: Offload) {
    let mut d = if bytes.len() > uvs::packet::MAX_FRAME_LEN {
        h.frames.alloc_big().unwrap()
    } else {
        h.frames.alloc().unwrap()
    };
    d.len = bytes.len() as u32;
    d.ol = ol;
    h.frames.data_mut(d).copy_from_slice(bytes);
    let mut batch = vec![d];
    h.pipeline
        .process(&mut h.dp, &mut h.frames, port, &mut batch, h.now);
}

/// Take what is queued on an offload-taking port (as a TAP port's tx would).
fn take_queued(h: &mut Harness, port: u16) -> Vec<(Vec<u8>, Desc)> {
    let q: Vec<Desc> = h.dp.out[port as usize].drain(..).collect();
    q.into_iter()
        .map(|d| {
            let v = h.frames.data(d).to_vec();
            h.frames.free(d.addr);
            (v, d)
        })
        .collect()
}

/// Check a segment's checksums; returns (ip source, tcp seq, payload).
fn check_segment(f: &[u8]) -> ([u8; 4], u32, Vec<u8>) {
    let s = SlicedPacket::from_ethernet(f).unwrap();
    let (Some(NetSlice::Ipv4(ip)), Some(TransportSlice::Tcp(t))) = (s.net, s.transport) else {
        panic!("not ipv4/tcp");
    };
    let iph = ip.header().to_header();
    assert_eq!(iph.header_checksum, iph.calc_header_checksum());
    let want = t.to_header().calc_checksum_ipv4(&iph, t.payload()).unwrap();
    assert_eq!(t.checksum(), want, "tcp checksum complete and right");
    assert!(f.len() - 14 <= 1500);
    (iph.source, t.sequence_number(), t.payload().to_vec())
}

#[test]
fn flooded_super_frame_passes_to_tap_and_is_segmented_for_others() {
    let mut h = Harness::new();
    let br = h.bridge("br0");
    let a = h.port(br, "a", VlanMode::default_trunk());
    let plain = h.port(br, "plain", VlanMode::default_trunk());
    let tap = h.port(br, "tap", VlanMode::default_trunk());
    h.dp.port_mut(tap).unwrap().offload_out = true;
    let data = payload(10_000);
    let sup = tcp_partial(mac(9), H_A, H_B, &data);
    inject(&mut h, a, &sup, Offload::gso(GsoType::Tcp4, 1448));

    let q = take_queued(&mut h, tap);
    assert_eq!(q.len(), 1, "one super-frame for the offload-taking port");
    assert_eq!(q[0].0, sup, "passed through untouched");
    assert_eq!(q[0].1.ol, Offload::gso(GsoType::Tcp4, 1448));

    h.run();
    let out = h.outputs();
    let segs = &out[plain as usize];
    assert_eq!(segs.len(), 7, "10000 bytes in 1448-byte segments");
    let mut got = Vec::new();
    for (i, f) in segs.iter().enumerate() {
        let (_, seq, p) = check_segment(f);
        assert_eq!(seq, 1000 + (i * 1448) as u32);
        got.extend_from_slice(&p);
    }
    assert_eq!(got, data);
    assert_eq!(h.frames.big_free_count(), uvs::packet::BIG_COUNT as usize);

    // A partial checksum without segmentation is completed for the plain port only.
    let small = tcp_partial(mac(9), H_A, H_B, b"hello");
    inject(&mut h, a, &small, Offload::partial());
    let q = take_queued(&mut h, tap);

    assert_eq!((q[0].0.clone(), q[0].1.ol), (small, Offload::partial()));
    h.run();
    check_segment(&h.outputs()[plain as usize][0]);
}

/// [`routed`], with both hosts announced (nothing waits for ARP) and the outputs cleared.
fn net() -> Routed {
    let mut n = routed();
    let (h, a, b) = (&mut n.h, n.a, n.b);
    for (p, m, ip, gw) in [(a, mac(2), H_A, GW0), (b, mac(3), H_B, GW1)] {
        let mut f = Vec::new();
        f.extend_from_slice(&[0xff; 6]);
        f.extend_from_slice(&m);
        f.extend_from_slice(&[0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 1]);
        f.extend_from_slice(&m);
        f.extend_from_slice(&ip);
        f.extend_from_slice(&[0; 6]);
        f.extend_from_slice(&gw);
        f.resize(60, 0);
        h.send(p, &f);
    }
    h.outputs();
    n
}

#[test]
fn routed_and_masqueraded_super_frames_keep_offload_state_right() {
    let mut n = net();
    let b1 = n.h.dp.bridge_id("br1").unwrap();
    n.h.dp
        .nat
        .add_source(u32::from_be_bytes([10, 0, 1, 0]), 24, b1, None, GW1)
        .unwrap();
    let data = payload(20_000);
    let sup = tcp_partial(n.gw0.0, H_A, H_B, &data);

    // To a port that takes offloads: routed (TTL 63), masqueraded (source GW1), still a
    // super-frame, its partial checksum the pseudo-header sum of the new header.
    n.h.dp.port_mut(n.b).unwrap().offload_out = true;
    inject(&mut n.h, n.a, &sup, Offload::gso(GsoType::Tcp4, 1448));
    let q = take_queued(&mut n.h, n.b);
    assert_eq!(q.len(), 1);
    let (f, d) = &q[0];
    assert_eq!(d.ol, Offload::gso(GsoType::Tcp4, 1448));
    assert_eq!(f.len(), sup.len());
    let s = SlicedPacket::from_ethernet(f).unwrap();
    let (Some(NetSlice::Ipv4(ip)), Some(TransportSlice::Tcp(t))) = (s.net, s.transport) else {
        panic!("not ipv4/tcp");
    };
    let iph = ip.header().to_header();
    assert_eq!(
        (iph.source, iph.destination, iph.time_to_live),
        (GW1, H_B, 63)
    );
    assert_eq!(iph.header_checksum, iph.calc_header_checksum());
    let l4 = (f.len() - 34) as u16;
    assert_eq!(
        t.checksum(),
        fold(pseudo_v4(&GW1, &H_B, 6, l4)),
        "pseudo sum refreshed"
    );
    let sport = t.source_port();
    assert_eq!(t.payload(), &data[..]);

    // To a port that does not: the same connection leaves as complete segments.
    n.h.dp.port_mut(n.b).unwrap().offload_out = false;
    inject(&mut n.h, n.a, &sup, Offload::gso(GsoType::Tcp4, 1448));
    n.h.run();
    let out = n.h.outputs();
    let segs = &out[n.b as usize];
    assert_eq!(segs.len(), 14);
    let mut got = Vec::new();
    for f in segs {
        let (src, _, p) = check_segment(f);
        assert_eq!(src, GW1);
        let s = SlicedPacket::from_ethernet(f).unwrap();
        let Some(TransportSlice::Tcp(t)) = s.transport else {
            panic!("tcp")
        };
        assert_eq!(t.source_port(), sport, "same masqueraded connection");
        got.extend_from_slice(&p);
    }
    assert_eq!(got, data);
    assert_eq!(n.h.dp.nat.ct.len(), 1);
}

#[test]
fn super_frame_whose_segments_exceed_the_route_mtu_gets_frag_needed() {
    let mut n = net();
    let b1 = n.h.dp.bridge_id("br1").unwrap();
    let _ = b1;
    let data = payload(5000);
    let mut sup = tcp_partial(n.gw0.0, H_A, H_B, &data);
    sup[20] |= 0x40; // DF
    let c = uvs::wire::checksum::checksum(&{
        let mut h = sup[14..34].to_vec();
        h[10..12].fill(0);
        h
    });
    sup[24..26].copy_from_slice(&c.to_be_bytes());
    // Segments of 1448 fit the 1500 MTU: routed although the frame is 5054 bytes long.
    inject(&mut n.h, n.a, &sup, Offload::gso(GsoType::Tcp4, 1448));
    n.h.run();
    assert_eq!(n.h.outputs()[n.b as usize].len(), 4);
    // Segments of 4000 do not: frag-needed back to the sender, nothing forwarded.
    inject(&mut n.h, n.a, &sup, Offload::gso(GsoType::Tcp4, 4000));
    n.h.run();
    let out = n.h.outputs();
    assert!(out[n.b as usize].is_empty());
    assert_eq!(out[n.a as usize].len(), 1, "ICMP frag needed");
    assert_eq!(n.h.drops(n.a, uvs::counters::DropReason::FragNeeded), 1);
}

/// A routed frame whose checksum is left partial (a TAP's small TCP segment) is finished by
/// output for a port that does not take offloads, however it was routed (`gateway-input`
/// queues frames without offload state on their port itself): it leaves with its checksum
/// complete, and as it is (partial, refreshed) toward a port that takes offloads.
#[test]
fn a_routed_partial_checksum_is_completed_for_a_port_without_offloads() {
    let mut n = net();
    let data = payload(100);
    let f = tcp_partial(n.gw0.0, H_A, H_B, &data);
    inject(&mut n.h, n.a, &f, Offload::partial());
    n.h.run();
    let out = n.h.outputs();
    assert_eq!(out[n.b as usize].len(), 1);
    let (src, _, p) = check_segment(&out[n.b as usize][0]);
    assert_eq!((src, p), (H_A, data.clone()));
    n.h.dp.port_mut(n.b).unwrap().offload_out = true;
    inject(&mut n.h, n.a, &f, Offload::partial());
    let q = take_queued(&mut n.h, n.b);
    assert_eq!(q.len(), 1);
    assert_eq!(q[0].1.ol, Offload::partial());
}
