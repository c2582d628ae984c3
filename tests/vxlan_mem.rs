//! In-memory VXLAN tests: head-end replication, encapsulation headers (checked with etherparse),
//! decapsulation and learning against the remote VTEP, unicast to a learned VTEP, MTU, and bad
//! input counted by reason.

mod common;

use common::*;
use etherparse::{NetSlice, SlicedPacket, TransportSlice};
use uvs::counters::DropReason;
use uvs::datapath::{Gateway, VlanMode};
use uvs::vxlan::TunnelConf;
use uvs::wire::MacAddr;

const LOCAL: [u8; 4] = [10, 252, 0, 1];
const R2: [u8; 4] = [10, 252, 0, 2];
const R3: [u8; 4] = [10, 252, 0, 3];
const R2_MAC: [u8; 6] = [0x02, 0, 0, 0, 0xee, 2];

struct Net {
    h: Harness,
    ul: u16,
    a: u16,
    vx: u16,
    gw: MacAddr,
}

fn net() -> Net {
    let mut h = Harness::new();
    let ulb = h.bridge("ul");
    let br0 = h.bridge("br0");
    let gw = Gateway::default_mac("ul");
    h.dp.set_gateway(
        ulb,
        Some(Gateway {
            ip: LOCAL,
            len: 24,
            mac: gw,
        }),
    )
    .unwrap();
    let ul = h.port(ulb, "uplink", VlanMode::default_trunk());
    let a = h.port(br0, "a", VlanMode::default_trunk());
    let vx = h.tunnel(
        br0,
        "vx0",
        TunnelConf {
            vni: 42,
            local_ip: LOCAL,
            remotes: vec![R2, R3],
            ..TunnelConf::default()
        },
    );
    for (ip, last) in [(R2, 2u8), (R3, 3)] {
        let mut m = R2_MAC;
        m[5] = last;
        h.dp.neigh.learn(ulb, ip, MacAddr(m), 1);
    }
    Net { h, ul, a, vx, gw }
}

impl Net {
    /// Receive `burst` on the uplink as one burst and run it.
    fn uplink_burst(&mut self, burst: &[Vec<u8>]) {
        for f in burst {
            self.h.ports[self.ul as usize].inject(f);
        }
        self.h.run();
    }
}

/// An outer VXLAN packet from `src` to LOCAL carrying `inner`.
fn vxlan_pkt(gw: MacAddr, src: [u8; 4], flags: u8, vni: u32, inner: &[u8]) -> Vec<u8> {
    let mut payload = vec![flags, 0, 0, 0];
    payload.extend_from_slice(&vni.to_be_bytes()[1..]);
    payload.push(0);
    payload.extend_from_slice(inner);
    let mut f = Vec::new();
    etherparse::PacketBuilder::ethernet2(R2_MAC, gw.0)
        .ipv4(src, LOCAL, 64)
        .udp(50000, 4789)
        .write(&mut f, &payload)
        .unwrap();
    f
}

/// Recompute the outer IPv4 header checksum of a VXLAN packet after a header byte changed.
fn fix_outer_checksum(f: &mut [u8]) {
    f[24..26].copy_from_slice(&[0, 0]);
    let c = uvs::wire::checksum::checksum(&f[14..34]);
    f[24..26].copy_from_slice(&c.to_be_bytes());
}

/// (outer dst ip, VNI, inner frame) of an encapsulated packet, checking the outer checksums.
fn outer(f: &[u8]) -> ([u8; 4], u32, Vec<u8>) {
    let s = SlicedPacket::from_ethernet(f).unwrap();
    let NetSlice::Ipv4(ip) = s.net.unwrap() else {
        panic!("ipv4")
    };
    let h = ip.header().to_header();
    assert_eq!(h.header_checksum, h.calc_header_checksum());
    assert_eq!(h.source, LOCAL);
    assert!(h.dont_fragment, "DF set by default");
    let Some(TransportSlice::Udp(u)) = s.transport else {
        panic!("udp")
    };
    assert_eq!(u.destination_port(), 4789);
    assert!(u.source_port() >= 49152, "entropy source port");
    let p = u.payload();
    assert_eq!(p[0], 0x08, "I flag");
    (
        h.destination,
        u32::from_be_bytes([0, p[4], p[5], p[6]]),
        p[8..].to_vec(),
    )
}

#[test]
fn floods_to_every_remote_then_learns_and_unicasts() {
    let mut n = net();
    let bc = frame(BCAST, mac(1), 7);
    n.h.send(n.a, &bc);
    let out = n.h.outputs();
    assert_eq!(
        out[n.ul as usize].len(),
        2,
        "head-end replication to both VTEPs"
    );
    let mut dsts: Vec<[u8; 4]> = Vec::new();
    for f in &out[n.ul as usize] {
        let (dst, vni, inner) = outer(f);
        assert_eq!(vni, 42);
        assert_eq!(inner, bc, "inner frame unchanged");
        dsts.push(dst);
    }
    dsts.sort();
    assert_eq!(dsts, vec![R2, R3]);

    // A frame from behind R2 to mac(1): decapsulated, delivered to a, learned against R2.
    let inner = frame(mac(1), mac(9), 8);
    n.h.send(n.ul, &vxlan_pkt(n.gw, R2, 0x08, 42, &inner));
    let out = n.h.outputs();
    assert_eq!(out[n.a as usize], vec![inner]);
    let rows = n.h.dp.fdb_rows(n.h.dp.bridge_id("br0").unwrap(), 1);
    let r = rows
        .iter()
        .find(|r| r.mac == "02:00:00:00:00:09")
        .expect("learned");
    assert_eq!(
        (r.port.as_str(), r.remote.as_deref()),
        ("vx0", Some("10.252.0.2"))
    );

    // Unicast back to mac(9): one copy, to R2 only.
    n.h.send(n.a, &frame(mac(9), mac(1), 9));
    let out = n.h.outputs();
    assert_eq!(out[n.ul as usize].len(), 1);
    assert_eq!(outer(&out[n.ul as usize][0]).0, R2);
    assert_eq!(n.h.dp.port(n.vx).unwrap().counters.tx_packets, 3);
}

#[test]
fn inner_frames_over_the_underlay_mtu_are_dropped() {
    let mut n = net();
    let mut big = frame(BCAST, mac(1), 1);
    big.resize(14 + 1451, 0); // 1465 bytes: + 36 of outer IP/UDP/VXLAN > 1500
    n.h.send(n.a, &big);
    let mut ok = frame(BCAST, mac(1), 1);
    ok.resize(14 + 1450, 0);
    n.h.send(n.a, &ok);
    let out = n.h.outputs();
    assert_eq!(
        out[n.ul as usize].len(),
        2,
        "only the 1450-byte frame, to both VTEPs"
    );
    assert_eq!(n.h.drops(n.vx, DropReason::MtuExceeded), 2);
    assert_eq!(n.h.dp.inner_mtu(n.vx), Some(1450));
}

#[test]
fn bad_vxlan_is_counted() {
    let mut n = net();
    let inner = frame(mac(1), mac(9), 8);
    n.h.send(n.ul, &vxlan_pkt(n.gw, R2, 0x00, 42, &inner));
    n.h.send(n.ul, &vxlan_pkt(n.gw, R2, 0x08, 43, &inner));
    n.h.send(n.ul, &vxlan_pkt(n.gw, [10, 252, 0, 9], 0x08, 42, &inner));
    n.h.send(n.ul, &vxlan_pkt(n.gw, R2, 0x08, 42, &inner[..10]));
    // VXLAN inside VXLAN: the inner frame is itself VXLAN to our address.
    let nested = vxlan_pkt(n.gw, R2, 0x08, 42, &inner);
    n.h.send(n.ul, &vxlan_pkt(n.gw, R2, 0x08, 42, &nested));
    // An outer UDP length beyond the IP payload (it was clamped and the inner frame delivered;
    // found trying uvs as a new user). The UDP checksum is 0 (none), so only the length lies.
    let mut long = vxlan_pkt(n.gw, R2, 0x08, 42, &inner);
    let udp_len = u16::from_be_bytes([long[38], long[39]]);
    long[38..40].copy_from_slice(&(udp_len + 100).to_be_bytes());
    long[40..42].copy_from_slice(&[0, 0]);
    n.h.send(n.ul, &long);
    assert!(n.h.outputs()[n.a as usize].is_empty());
    assert_eq!(n.h.drops(n.ul, DropReason::VxlanBadFlags), 1);
    assert_eq!(n.h.drops(n.ul, DropReason::VxlanUnknownVni), 1);
    assert_eq!(n.h.drops(n.ul, DropReason::VxlanUnknownVtep), 1);
    assert_eq!(n.h.drops(n.ul, DropReason::VxlanTruncated), 2);
    assert_eq!(n.h.drops(n.vx, DropReason::VxlanNested), 1);
    n.h.assert_no_frame_leaked();
}

/// VXLAN inside VXLAN in the middle of a burst of good packets from the same VTEP (outer
/// headers equal to theirs, so the burst's shortcut sees it): dropped where it is opened,
/// counted on the tunnel port, its inner source not learned; the good ones around it are
/// delivered in order.
#[test]
fn nested_vxlan_within_a_burst_is_dropped_where_it_is_opened() {
    let mut n = net();
    let inner = |src: u8| frame(mac(9), mac(src), src);
    let nested = vxlan_pkt(n.gw, R2, 0x08, 42, &inner(7));
    let burst = [
        vxlan_pkt(n.gw, R2, 0x08, 42, &inner(1)),
        vxlan_pkt(n.gw, R2, 0x08, 42, &nested),
        vxlan_pkt(n.gw, R2, 0x08, 42, &inner(4)),
    ];
    n.uplink_burst(&burst);
    let srcs: Vec<u8> = n.h.outputs()[n.a as usize].iter().map(|f| f[11]).collect();
    assert_eq!(srcs, vec![1, 4], "the good frames, in order");
    assert_eq!(n.h.drops(n.vx, DropReason::VxlanNested), 1);
    let t = n.h.dp.port(n.vx).unwrap().tunnel.as_ref().unwrap();
    assert_eq!(t.remote_of(0, MacAddr(mac(1)).to_u64()), Some(R2));
    assert_eq!(
        t.remote_of(0, MacAddr(R2_MAC).to_u64()),
        None,
        "the nested frame's inner source is not learned"
    );
    assert_eq!(n.h.dp.port(n.ul).unwrap().counters.rx_packets, 3);
    n.h.assert_no_frame_leaked();
}

/// One burst mixing remote VTEPs and VNIs: each frame is checked on its own (the burst's
/// cached tunnel is reused only for the same VTEP, VNI and address), so the unknown VTEP and
/// the unknown VNI between two good frames are refused and the good ones delivered.
#[test]
fn a_burst_of_mixed_vteps_is_checked_frame_by_frame() {
    let mut n = net();
    let inner = |src: u8| frame(mac(9), mac(src), src);
    let burst = [
        vxlan_pkt(n.gw, R2, 0x08, 42, &inner(1)),
        vxlan_pkt(n.gw, [10, 252, 0, 9], 0x08, 42, &inner(2)),
        vxlan_pkt(n.gw, R2, 0x08, 43, &inner(3)),
        vxlan_pkt(n.gw, R2, 0x08, 42, &inner(4)),
        vxlan_pkt(n.gw, R3, 0x08, 42, &inner(5)),
    ];
    n.uplink_burst(&burst);
    let out = &n.h.outputs()[n.a as usize];
    let srcs: Vec<u8> = out.iter().map(|f| f[11]).collect();
    assert_eq!(srcs, vec![1, 4, 5], "the good frames, in order");
    assert_eq!(n.h.drops(n.ul, DropReason::VxlanUnknownVtep), 1);
    assert_eq!(n.h.drops(n.ul, DropReason::VxlanUnknownVni), 1);
}

/// `show-runtime`'s VXLAN nodes move: encapsulation counts the frames taken from the tunnel
/// port's queue (one flooded frame, two outer copies), decapsulation the outer packets it takes
/// as they come off the underlay port (neither ethernet-input nor the router sees them).
#[test]
fn runtime_counts_vxlan_nodes() {
    use uvs::pipeline::runtime::Node;
    let mut n = net();
    n.h.send(n.a, &frame(BCAST, mac(1), 7));
    assert_eq!(n.h.outputs()[n.ul as usize].len(), 2);
    let rt = |h: &Harness, node: Node| {
        let s = h.pipeline.runtime().get(node);
        (s.calls, s.vectors)
    };
    assert_eq!(rt(&n.h, Node::Vxlan4Encap), (1, 1));
    assert_eq!(rt(&n.h, Node::Vxlan4Input), (0, 0));
    let inner = frame(mac(1), mac(9), 8);
    n.h.send(n.ul, &vxlan_pkt(n.gw, R2, 0x08, 42, &inner));
    assert_eq!(n.h.outputs()[n.a as usize], vec![inner]);
    assert_eq!(rt(&n.h, Node::Vxlan4Input), (1, 1));
    assert_eq!(
        rt(&n.h, Node::Ip4Input),
        (0, 0),
        "the outer packet bypassed the router"
    );
    // The burst from a and the inner burst from vx0: the uplink's burst (all VXLAN to the
    // gateway) was taken whole by vxlan4-input, before ethernet-input.
    assert_eq!(rt(&n.h, Node::EthernetInput), (2, 2));
}

/// With several workers, frames decapsulated from a tunnel are steered like received ones: a
/// container behind a remote VTEP masqueraded by br0's gateway has its connection handled by
/// the worker that owns its tuple, whichever worker decapsulated the outer frame.
#[test]
fn decapsulated_frames_are_steered_to_their_owner() {
    use uvs::pipeline::steer;
    const GW_BR0: [u8; 4] = [10, 9, 0, 1];
    let mut w: Vec<Net> = (0..2).map(|_| net()).collect();
    for (i, n) in w.iter_mut().enumerate() {
        let br0 = n.h.dp.bridge_id("br0").unwrap();
        let ul = n.h.dp.bridge_id("ul").unwrap();
        let gw = Gateway {
            ip: GW_BR0,
            len: 24,
            mac: Gateway::default_mac("br0"),
        };
        n.h.dp.set_gateway(br0, Some(gw)).unwrap();
        n.h.dp.nat.set_share(i as u16, 2);
        n.h.dp
            .nat
            .add_source(u32::from_be_bytes([10, 9, 0, 0]), 24, ul, None, LOCAL)
            .unwrap();
    }
    let gw0 = Gateway::default_mac("br0");
    let mut seen = [0usize; 2];
    for sport in 1000..1032u16 {
        let mut inner = Vec::new();
        etherparse::PacketBuilder::ethernet2(mac(9), gw0.0)
            .ipv4([10, 9, 0, 5], [10, 252, 0, 9], 64)
            .udp(sport, 53)
            .write(&mut inner, b"q")
            .unwrap();
        let o = steer::owner(&w[0].h.dp, &inner, gw0.0, 2).expect("masqueraded: owned");
        assert_eq!(steer::owner(&w[1].h.dp, &inner, gw0.0, 2), Some(o));
        // The outer frame reaches worker 0 whatever the owner.
        let n = &mut w[0];
        let outer = vxlan_pkt(n.gw, R2, 0x08, 42, &inner);
        let ul = n.ul;
        n.h.ports[ul as usize].inject(&outer);
        let mut batch = Vec::new();
        uvs::port::Port::rx_burst(&mut n.h.ports[ul as usize], &mut n.h.frames, &mut batch, 64);
        let ct_before = n.h.dp.nat.ct.len();
        let mut away: Vec<(u32, uvs::packet::Desc)> = Vec::new();
        let mut frags = uvs::conntrack::DatagramTable::default();
        let mut take = |dp: &uvs::datapath::Datapath,
                        frames: &mut uvs::packet::Frames,
                        port: u16,
                        b: &mut Vec<uvs::packet::Desc>| {
            steer::split(dp, frames, port, b, (0, 2), &mut away, &mut frags);
        };
        n.h.pipeline.process_steered(
            &mut n.h.dp,
            &mut n.h.frames,
            ul,
            &mut batch,
            n.h.now,
            Some(&mut take),
        );
        if o == 0 {
            assert!(away.is_empty(), "worker 0 owns it: kept");
            assert_eq!(n.h.dp.nat.ct.len(), ct_before + 1, "tracked by worker 0");
        } else {
            assert_eq!(away.len(), 1, "handed to worker 1");
            assert_eq!(away[0].0, 1);
            assert_eq!(n.h.dp.nat.ct.len(), ct_before, "not tracked by worker 0");
            let d = away[0].1;
            assert_eq!(n.h.frames.data(d), &inner[..], "the inner frame, unchanged");
            n.h.frames.free(d.addr);
            // The owner runs it as received on the tunnel port (`Peers::inject`): tracked there.
            let o1 = &mut w[1];
            let mut b = Vec::new();
            let mut c = o1.h.frames.alloc().unwrap();
            c.len = inner.len() as u32;
            o1.h.frames.data_mut(c).copy_from_slice(&inner);
            b.push(c);
            let before = o1.h.dp.nat.ct.len();
            let vx = o1.vx;
            o1.h.pipeline
                .process_handed(&mut o1.h.dp, &mut o1.h.frames, vx, &mut b, 1, None);
            assert_eq!(o1.h.dp.nat.ct.len(), before + 1, "tracked by worker 1");
            o1.h.run();
            o1.h.outputs();
        }
        seen[o as usize] += 1;
        let n = &mut w[0];
        n.h.run();
        n.h.outputs();
    }
    assert!(
        seen[0] > 0 && seen[1] > 0,
        "both owners exercised: {seen:?}"
    );
}

/// VXLAN to the underlay gateway is decapsulated before the underlay bridge forwards it
/// (`ip4-vxlan-bypass`), but the underlay still learns the peer VTEP's MAC (encapsulation's
/// egress lookup needs it), and what the bypass does not take runs the router's path as before:
/// in one burst, a bad outer checksum is counted, the first fragment of a VXLAN packet is
/// dropped (not reassembled), a ping to the gateway is answered, and the good packets around
/// them are delivered in order.
#[test]
fn vxlan_bypass_takes_only_plain_packets() {
    let mut n = net();
    let inner = |src: u8| frame(mac(9), mac(src), src);
    let mut bad_sum = vxlan_pkt(n.gw, R2, 0x08, 42, &inner(2));
    bad_sum[24] ^= 0x40; // the outer IPv4 checksum's first byte
    let mut first_frag = vxlan_pkt(n.gw, R2, 0x08, 42, &inner(3));
    first_frag[20] |= 0x20; // MF
    first_frag[24..26].copy_from_slice(&[0, 0]);
    let c = uvs::wire::checksum::checksum(&first_frag[14..34]);
    first_frag[24..26].copy_from_slice(&c.to_be_bytes());
    let mut ping = Vec::new();
    etherparse::PacketBuilder::ethernet2(R2_MAC, n.gw.0)
        .ipv4(R2, LOCAL, 64)
        .icmpv4_echo_request(7, 1)
        .write(&mut ping, b"hi")
        .unwrap();
    let burst = [
        vxlan_pkt(n.gw, R2, 0x08, 42, &inner(1)),
        bad_sum,
        first_frag,
        ping,
        vxlan_pkt(n.gw, R2, 0x08, 42, &inner(4)),
    ];
    n.uplink_burst(&burst);
    let out = n.h.outputs();
    let srcs: Vec<u8> = out[n.a as usize].iter().map(|f| f[11]).collect();
    assert_eq!(srcs, vec![1, 4], "the good packets, in order");
    assert_eq!(n.h.drops(n.ul, DropReason::IpBadChecksum), 1);
    // The "first fragment" goes to reassembly, which refuses it: a fragment with more to come
    // carries a multiple of 8 bytes, and this one does not.
    assert_eq!(n.h.drops(n.ul, DropReason::VxlanTruncated), 0);
    assert_eq!(n.h.drops(n.ul, DropReason::FragReassembly), 1);
    let replies: Vec<&Vec<u8>> = out[n.ul as usize]
        .iter()
        .filter(|f| f.len() > 34 && f[23] == 1 && f[34] == 0)
        .collect();
    assert_eq!(replies.len(), 1, "the echo reply from the gateway");
    let ul = n.h.dp.bridge_id("ul").unwrap();
    let rows = n.h.dp.fdb_rows(ul, 1);
    assert!(
        rows.iter()
            .any(|r| r.mac == "02:00:00:00:ee:02" && r.port == "uplink"),
        "the underlay learned the peer VTEP's MAC: {rows:?}"
    );
    n.h.assert_no_frame_leaked();
}

/// A MAC that moves between remote VTEPs within one burst ends up learned behind the VTEP
/// of its last packet, and a new MAC behind the same VTEP is learned too (the bypass's
/// per-burst learning shortcut hides neither).
#[test]
fn a_mac_moving_between_vteps_within_a_burst_is_learned() {
    for (order, last) in [
        ([R2, R2, R3, R3, R2, R2], R2),
        ([R2, R2, R2, R3, R3, R3], R3),
    ] {
        let mut n = net();
        let inner = frame(mac(1), mac(9), 1);
        for r in order {
            n.h.ports[n.ul as usize].inject(&vxlan_pkt(n.gw, r, 0x08, 42, &inner));
        }
        // And a new MAC behind the last VTEP, in the same burst.
        let other = frame(mac(1), mac(10), 2);
        n.h.ports[n.ul as usize].inject(&vxlan_pkt(n.gw, last, 0x08, 42, &other));
        n.h.run();
        assert_eq!(n.h.outputs()[n.a as usize].len(), 7);
        let t = n.h.dp.port(n.vx).unwrap().tunnel.as_ref().unwrap();
        let m = |n: u8| uvs::wire::MacAddr(mac(n)).to_u64();
        assert_eq!(t.remote_of(0, m(9)), Some(last), "{order:?}");
        assert_eq!(t.remote_of(0, m(10)), Some(last), "{order:?}");
    }
}

/// A flow on the underlay bridge decides before the bypass: VXLAN it drops is not decapsulated.
#[test]
fn underlay_flows_decide_before_the_vxlan_bypass() {
    let mut n = net();
    let ul = n.h.dp.bridge_id("ul").unwrap();
    n.h.add_flow(ul, "priority=10,udp,tp_dst=4789 actions=drop");
    n.h.add_flow(ul, "priority=0 actions=NORMAL");
    let inner = frame(mac(1), mac(9), 8);
    n.h.send(n.ul, &vxlan_pkt(n.gw, R2, 0x08, 42, &inner));
    assert!(n.h.outputs()[n.a as usize].is_empty());
    assert_eq!(n.h.drops(n.ul, DropReason::FlowDrop), 1);
}

/// An inner frame's partial checksum (what a kernel VTEP on a veth leaves) is completed when
/// the outer frame came in on a port whose frames may carry partial checksums, and only then
/// looked for: behind a port that cannot carry them the field is left as it came.
#[test]
fn inner_partial_checksums_are_completed_behind_ports_that_carry_them() {
    use uvs::wire::checksum::{fold, pseudo_v4};
    let (src, dst) = ([192, 168, 42, 2], [192, 168, 42, 1]);
    let mut complete = Vec::new();
    etherparse::PacketBuilder::ethernet2(mac(9), mac(1))
        .ipv4(src, dst, 64)
        .tcp(40000, 5201, 1000, 500)
        .write(&mut complete, b"hello world")
        .unwrap();
    let mut partial = complete.clone();
    let p = fold(pseudo_v4(&src, &dst, 6, 20 + 11));
    partial[50..52].copy_from_slice(&p.to_be_bytes());
    assert_ne!(partial, complete);
    for underlay_partial in [true, false] {
        let mut n = net();
        n.h.dp.port_mut(n.ul).unwrap().partial_csum_in = underlay_partial;
        let outer = vxlan_pkt(n.gw, R2, 0x08, 42, &partial);
        n.h.ports[n.ul as usize].inject(&outer);
        n.h.run();
        let want = if underlay_partial {
            &complete
        } else {
            &partial
        };
        assert_eq!(
            n.h.outputs()[n.a as usize],
            vec![want.clone()],
            "underlay partial_csum_in={underlay_partial}"
        );
        let completed = n.h.dp.port(n.vx).unwrap().counters.csum_completed;
        assert_eq!(completed, u64::from(underlay_partial));
    }
}

/// A burst that mixes two VNIs (two tunnel ports) delivers each tunnel's inner frames in the
/// order they arrived: grouping the decapsulated frames by tunnel port keeps their order.
#[test]
fn inner_frames_keep_their_order_when_a_burst_mixes_tunnels() {
    let mut n = net();
    let br1 = n.h.bridge("br1");
    let b = n.h.port(br1, "b", VlanMode::default_trunk());
    n.h.tunnel(
        br1,
        "vx1",
        TunnelConf {
            vni: 43,
            local_ip: LOCAL,
            remotes: vec![R2],
            ..TunnelConf::default()
        },
    );
    // 64 frames (one burst), the VNIs in an irregular pattern.
    let mut want = [Vec::new(), Vec::new()];
    for seq in 0..64u8 {
        let second = (u32::from(seq) * 7 + u32::from(seq) / 5) % 3 == 0;
        let vni = if second { 43 } else { 42 };
        let f = frame(mac(9), mac(1), seq);
        want[usize::from(second)].push(seq);
        n.h.ports[n.ul as usize].inject(&vxlan_pkt(n.gw, R2, 0x08, vni, &f));
    }
    n.h.run();
    let out = n.h.outputs();
    let got = |p: u16| -> Vec<u8> { out[p as usize].iter().map(|f| f[14]).collect() };
    assert_eq!(got(n.a), want[0], "VNI 42 in order");
    assert_eq!(got(b), want[1], "VNI 43 in order");
}

/// Outer frames to a VTEP whose underlay port is known go straight onto that port's queue;
/// the port's own MTU still holds there (an outer frame that fits the underlay bridge's MTU
/// but not the port's is counted and dropped on the port, as the output stage does).
#[test]
fn outer_frames_handed_to_the_underlay_port_respect_its_mtu() {
    let mut n = net();
    // mac(9) behind R2 (and R2's MAC on the uplink), learned from one packet.
    n.h.send(
        n.ul,
        &vxlan_pkt(n.gw, R2, 0x08, 42, &frame(mac(1), mac(9), 1)),
    );
    n.h.outputs();
    n.h.dp.port_mut(n.ul).unwrap().mtu = 1400;
    let sized = |len: usize, tag: u8| {
        let mut f = frame(mac(9), mac(1), tag);
        f.resize(len, tag);
        f
    };
    // Outer = inner + 50: 1414 bytes is the most a 1400-byte port MTU takes.
    for (len, tag) in [(1365, 2), (1364, 3), (200, 4)] {
        n.h.send(n.a, &sized(len, tag));
    }
    let out = n.h.outputs();
    let sent: Vec<(usize, [u8; 4], u8)> = out[n.ul as usize]
        .iter()
        .map(|f| {
            let (dst, _, inner) = outer(f);
            (f.len(), dst, inner[14])
        })
        .collect();
    assert_eq!(sent, vec![(1414, R2, 3), (250, R2, 4)]);
    assert_eq!(n.h.drops(n.ul, DropReason::MtuExceeded), 1);
    assert_eq!(n.h.drops(n.vx, DropReason::MtuExceeded), 0);
    n.h.assert_no_frame_leaked();
}

/// VXLAN taken off the underlay port before `ethernet-input` is still counted as received on
/// that port, its outer source MAC is checked (a group address is dropped as `ethernet-input`
/// drops it, not decapsulated) and learned by the port's rules (not at all when the port does
/// not learn), and a tagged inner frame is learned behind its VTEP in its own VLAN.
#[test]
fn vxlan_taken_off_the_port_is_counted_checked_and_learned_as_before() {
    for learns in [true, false] {
        let mut n = net();
        n.h.dp.port_mut(n.ul).unwrap().learn = learns;
        let plain = vxlan_pkt(n.gw, R2, 0x08, 42, &frame(mac(1), mac(9), 1));
        let tagged_inner = tagged(&frame(mac(1), mac(10), 2), 5);
        let in_vlan = vxlan_pkt(n.gw, R2, 0x08, 42, &tagged_inner);
        let mut group_src = vxlan_pkt(n.gw, R2, 0x08, 42, &frame(mac(1), mac(11), 3));
        group_src[6] |= 1;
        let mut ping = Vec::new();
        etherparse::PacketBuilder::ethernet2(R2_MAC, n.gw.0)
            .ipv4(R2, LOCAL, 64)
            .icmpv4_echo_request(7, 1)
            .write(&mut ping, b"hi")
            .unwrap();
        let burst = [plain.clone(), group_src, in_vlan, ping, plain];
        n.uplink_burst(&burst);
        let out = n.h.outputs();
        let srcs: Vec<u8> = out[n.a as usize].iter().map(|f| f[11]).collect();
        assert_eq!(srcs, vec![9, 10, 9], "learns={learns}");
        assert_eq!(n.h.drops(n.ul, DropReason::SrcMulticast), 1);
        let c = &n.h.dp.port(n.ul).unwrap().counters;
        assert_eq!(c.rx_packets, burst.len() as u64);
        let bytes: usize = burst.iter().map(|f| f.len()).sum();
        assert_eq!(c.rx_bytes, bytes as u64);
        let ul = n.h.dp.bridge_id("ul").unwrap();
        let learned =
            n.h.dp
                .fdb_rows(ul, 1)
                .iter()
                .any(|r| r.mac == "02:00:00:00:ee:02" && r.port == "uplink");
        assert_eq!(learned, learns, "the peer VTEP's MAC learned on the uplink");
        let t = n.h.dp.port(n.vx).unwrap().tunnel.as_ref().unwrap();
        let m = |n: u8| uvs::wire::MacAddr(mac(n)).to_u64();
        assert_eq!(
            t.remote_of(5, m(10)),
            Some(R2),
            "the tagged inner frame's VLAN"
        );
        assert_eq!(t.remote_of(0, m(10)), None);
        n.h.assert_no_frame_leaked();
    }
}

/// After a good packet, the burst's packets that share its outer headers take a short path
/// (`vxlan4-input`'s template); each one that differs from it anywhere that matters is judged
/// by the full check: the VXLAN I flag cleared, another VNI, a UDP length shorter than the IP
/// payload (padding: still decapsulated, without the padding), an IPv4 total length the frame
/// does not hold, a TTL change (a good packet: same verdict as the template's).
#[test]
fn packets_like_the_bursts_last_good_one_are_still_checked_one_by_one() {
    let mut n = net();
    let inner = |src: u8| frame(mac(9), mac(src), src);
    let no_flag = vxlan_pkt(n.gw, R2, 0x00, 42, &inner(2));
    let other_vni = vxlan_pkt(n.gw, R2, 0x08, 43, &inner(3));
    let mut padded = vxlan_pkt(n.gw, R2, 0x08, 42, &inner(4));
    padded.extend_from_slice(&[0; 4]);
    let total = u16::from_be_bytes([padded[16], padded[17]]) + 4;
    padded[16..18].copy_from_slice(&total.to_be_bytes());
    fix_outer_checksum(&mut padded);
    let mut too_long = vxlan_pkt(n.gw, R2, 0x08, 42, &inner(5));
    let total = u16::from_be_bytes([too_long[16], too_long[17]]) + 4;
    too_long[16..18].copy_from_slice(&total.to_be_bytes());
    fix_outer_checksum(&mut too_long);
    let mut ttl = vxlan_pkt(n.gw, R2, 0x08, 42, &inner(6));
    ttl[22] = 3;
    fix_outer_checksum(&mut ttl);
    let burst = [
        vxlan_pkt(n.gw, R2, 0x08, 42, &inner(1)),
        no_flag,
        other_vni,
        padded,
        too_long,
        ttl,
        vxlan_pkt(n.gw, R2, 0x08, 42, &inner(7)),
    ];
    n.uplink_burst(&burst);
    let out = n.h.outputs();
    let got: Vec<(u8, usize)> = out[n.a as usize].iter().map(|f| (f[11], f.len())).collect();
    assert_eq!(got, vec![(1, 60), (4, 60), (6, 60), (7, 60)]);
    assert_eq!(n.h.drops(n.ul, DropReason::VxlanBadFlags), 1);
    assert_eq!(n.h.drops(n.ul, DropReason::VxlanUnknownVni), 1);
    assert_eq!(n.h.drops(n.ul, DropReason::IpMalformed), 1);
    n.h.assert_no_frame_leaked();
}

/// The burst shortcut ignores the outer TOS (it may follow the inner one) but compares the
/// fragment field and the protocol: a packet like the burst's last good one with another TOS
/// is decapsulated, one that is a fragment or not UDP is left to the whole path, which does not
/// deliver it.
#[test]
fn packets_like_the_bursts_last_good_one_differ_in_tos_fragment_protocol_or_header_length() {
    let mut n = net();
    let inner = |src: u8| frame(mac(9), mac(src), src);
    let with = |src: u8, at: usize, v: u8| {
        let mut f = vxlan_pkt(n.gw, R2, 0x08, 42, &inner(src));
        f[at] = v;
        fix_outer_checksum(&mut f);
        f
    };
    let burst = [
        vxlan_pkt(n.gw, R2, 0x08, 42, &inner(1)),
        with(2, 15, 0xb8),
        with(3, 20, 0x20),
        with(4, 21, 0x01),
        with(5, 23, 6),
        with(6, 20, 0x40),
        // IHL 6 (a header with options, which this one does not hold: the full check reads
        // the UDP header 4 bytes on and drops it).
        with(8, 14, 0x46),
        vxlan_pkt(n.gw, R2, 0x08, 42, &inner(7)),
    ];
    n.uplink_burst(&burst);
    let out = n.h.outputs();
    let got: Vec<(u8, usize)> = out[n.a as usize].iter().map(|f| (f[11], f.len())).collect();
    // (3: more fragments; 4: an offset; 5: TCP; 8: IHL 6. 6: DF set, as OVS sends.) The two
    // fragments wait for reassembly (they overlap: dropped) or expire.
    assert_eq!(got, vec![(1, 60), (2, 60), (6, 60), (7, 60)]);
    let now = n.h.dp.now_ms;
    n.h.housekeep(now + uvs::pipeline::reassembly::TIMEOUT_MS);
    n.h.assert_no_frame_leaked();
}

/// Across bursts (nothing changed in between, the same second) a burst's first packet takes
/// the last burst's template: the peer VTEP's MAC, which the full check learns on the uplink,
/// is not learned again (the template had it learned this second). A change said with
/// `Datapath::changed`, or the next second, sends the next burst's first packet through the
/// full check again; and a first packet that differs from the template is judged by it.
#[test]
fn the_next_burst_reuses_the_template_until_the_datapath_changes_or_a_second_passes() {
    let mut n = net();
    let inner = |src: u8| frame(mac(9), mac(src), src);
    let gw = n.gw;
    let good = move |src: u8| vxlan_pkt(gw, R2, 0x08, 42, &inner(src));
    let ul = n.h.dp.bridge_id("ul").unwrap();
    let learned = |n: &Net| {
        n.h.dp
            .fdb_rows(ul, n.h.now as u32)
            .iter()
            .any(|r| r.mac == "02:00:00:00:ee:02" && r.port == "uplink")
    };
    let flush = |n: &mut Net| {
        n.h.dp.bridge_mut(ul).unwrap().fdb.flush(None);
    };
    let next_burst = |n: &mut Net, burst: &[Vec<u8>]| {
        for f in burst {
            n.h.ports[n.ul as usize].inject(f);
        }
        n.h.run_next_burst();
    };
    n.uplink_burst(&[good(1), good(2)]);
    assert!(learned(&n), "the full check learns the peer VTEP's MAC");
    // Flushed behind forwarding's back: the next burst's template does not learn it again.
    flush(&mut n);
    next_burst(&mut n, &[good(3), good(4)]);
    assert!(!learned(&n), "the next burst took the last one's template");
    // The next second: the full check again.
    n.h.now += 1;
    next_burst(&mut n, &[good(5)]);
    assert!(learned(&n), "a new second: the full check learned it again");
    // A change said (as the worker says after every request): the full check again.
    flush(&mut n);
    n.h.dp.changed();
    next_burst(&mut n, &[good(6)]);
    assert!(
        learned(&n),
        "after Datapath::changed the full check learned it again"
    );
    // First packets that differ from the template: judged by the full check.
    next_burst(&mut n, &[vxlan_pkt(gw, R2, 0x00, 42, &inner(7)), good(8)]);
    next_burst(&mut n, &[vxlan_pkt(gw, R2, 0x08, 43, &inner(10)), good(11)]);
    let mut bad_sum = good(12);
    bad_sum[24] ^= 0xff;
    next_burst(&mut n, &[bad_sum, good(13)]);
    assert_eq!(n.h.drops(n.ul, DropReason::VxlanBadFlags), 1);
    assert_eq!(n.h.drops(n.ul, DropReason::VxlanUnknownVni), 1);
    let out = n.h.outputs();
    let got: Vec<u8> = out[n.a as usize].iter().map(|f| f[11]).collect();
    assert_eq!(got, vec![1, 2, 3, 4, 5, 6, 8, 11, 13]);
    n.h.assert_no_frame_leaked();
}

/// A run of packets from one remote learns every inner (VLAN, source MAC) it carries on the
/// tunnel, even where consecutive inner frames share the source MAC and differ only in the
/// VLAN tag (the run compares the untagged frames' source bytes as one word, the tagged ones'
/// keys one by one).
#[test]
fn a_run_learns_each_inner_vlan_and_source_once() {
    let mut n = net();
    let m = |x: u8| uvs::wire::MacAddr(mac(x)).to_u64();
    let burst = [
        vxlan_pkt(n.gw, R2, 0x08, 42, &frame(mac(9), mac(1), 1)),
        vxlan_pkt(n.gw, R2, 0x08, 42, &frame(mac(9), mac(1), 2)),
        vxlan_pkt(n.gw, R2, 0x08, 42, &tagged(&frame(mac(9), mac(1), 3), 5)),
        vxlan_pkt(n.gw, R2, 0x08, 42, &tagged(&frame(mac(9), mac(1), 4), 6)),
        vxlan_pkt(n.gw, R2, 0x08, 42, &tagged(&frame(mac(9), mac(1), 5), 6)),
        vxlan_pkt(n.gw, R2, 0x08, 42, &frame(mac(9), mac(2), 6)),
        vxlan_pkt(n.gw, R2, 0x08, 42, &tagged(&frame(mac(9), mac(3), 7), 7)),
    ];
    n.uplink_burst(&burst);
    let t = n.h.dp.port(n.vx).unwrap().tunnel.as_ref().unwrap();
    for (vlan, src) in [(0, 1), (5, 1), (6, 1), (0, 2), (7, 3)] {
        assert_eq!(t.remote_of(vlan, m(src)), Some(R2), "VLAN {vlan} MAC {src}");
    }
    assert_eq!(t.remote_of(7, m(1)), None);
    assert_eq!(t.remote_of(0, m(3)), None);
    n.h.outputs();
    n.h.assert_no_frame_leaked();
}

/// A peer whose underlay path fragments its VXLAN packets (Linux's vxlan with `df unset`):
/// the fragments, in any order, are put back together and the inner frame is delivered once;
/// a datagram that never completes is dropped after the timeout with its frames.
#[test]
fn fragmented_vxlan_packets_are_reassembled() {
    use common::fragments::fragments;
    let mut n = net();
    // A full-size inner frame (1,514 bytes): its VXLAN packet is over a 1,500 path.
    let mut inner = frame(mac(1), mac(9), 8);
    inner.resize(1514, 0x5a);
    let outer = vxlan_pkt(n.gw, R2, 0x08, 42, &inner);
    let (first, last) = fragments(&outer, 1480, 0x1234);
    n.h.send(n.ul, &last);
    assert!(
        n.h.outputs()[n.a as usize].is_empty(),
        "waiting for the first"
    );
    n.h.send(n.ul, &first);
    let out = n.h.outputs();
    assert_eq!(
        out[n.a as usize],
        vec![inner.clone()],
        "delivered once, whole"
    );
    assert_eq!(n.h.dp.reassembly.stats().reassembled, 1);
    // In order too.
    let (first, last) = fragments(&outer, 1480, 0x1235);
    n.h.send(n.ul, &first);
    n.h.send(n.ul, &last);
    assert_eq!(n.h.outputs()[n.a as usize], vec![inner]);
    // A first fragment alone: held, then dropped after the timeout, its frame freed.
    let (first, _) = fragments(&outer, 1480, 0x1236);
    n.h.send(n.ul, &first);
    assert_eq!(n.h.dp.reassembly.waiting(), 1);
    let now = n.h.dp.now_ms;
    n.h.housekeep(now + uvs::pipeline::reassembly::TIMEOUT_MS);
    assert_eq!(n.h.dp.reassembly.waiting(), 0);
    assert_eq!(n.h.dp.reassembly.stats().timed_out, 1);
    n.h.assert_no_frame_leaked();
}

/// A MAC the bridge's FDB has forgotten (flushed, aged) is unknown unicast again: sent to every
/// remote VTEP, not to the one the tunnel once learned it behind (a host that moved silently to
/// another VTEP stays reachable, as with Linux's vxlan).
#[test]
fn a_mac_the_fdb_forgot_goes_to_every_remote_again() {
    let mut n = net();
    n.h.send(
        n.ul,
        &vxlan_pkt(n.gw, R2, 0x08, 42, &frame(mac(1), mac(9), 1)),
    );
    n.h.outputs();
    n.h.send(n.a, &frame(mac(9), mac(1), 2));
    let out = n.h.outputs();
    assert_eq!(out[n.ul as usize].len(), 1, "known: to R2 only");
    let br0 = n.h.dp.bridge_id("br0").unwrap();
    n.h.dp.bridge_mut(br0).unwrap().fdb.flush_learned(None);
    n.h.send(n.a, &frame(mac(9), mac(1), 3));
    let out = n.h.outputs();
    let mut dsts: Vec<[u8; 4]> = out[n.ul as usize].iter().map(|f| outer(f).0).collect();
    dsts.sort();
    assert_eq!(dsts, vec![R2, R3], "flushed: head-end replicated");
    n.h.assert_no_frame_leaked();
}

/// A VXLAN port mapped to a VLAN (`vlan=10`: its frames are untagged in the tunnel) learns
/// remotes under the bridge's VLAN, as the FDB and `fdb-show` have them, and sends known
/// unicast to the learned VTEP and to a static entry's VTEP only.
#[test]
fn a_vlan_mapped_tunnel_port_keys_its_vteps_by_the_bridge_vlan() {
    let mut n = net();
    n.h.dp.port_mut(n.a).unwrap().vlan = VlanMode::Access(10);
    n.h.dp.port_mut(n.vx).unwrap().vlan = VlanMode::Access(10);
    n.h.send(
        n.ul,
        &vxlan_pkt(n.gw, R2, 0x08, 42, &frame(mac(1), mac(9), 1)),
    );
    n.h.outputs();
    let br0 = n.h.dp.bridge_id("br0").unwrap();
    let rows = n.h.dp.fdb_rows(br0, 1);
    let r = rows.iter().find(|r| r.mac == "02:00:00:00:00:09").unwrap();
    assert_eq!((r.vlan, r.remote.as_deref()), (10, Some("10.252.0.2")));
    n.h.send(n.a, &frame(mac(9), mac(1), 2));
    let out = n.h.outputs();
    assert_eq!(out[n.ul as usize].len(), 1, "learned: to R2 only");
    assert_eq!(outer(&out[n.ul as usize][0]).0, R2);
    // A static entry (as `fdb-add ... remote_ip=` writes it: the FDB's VLAN).
    let m7 = MacAddr(mac(7)).to_u64();
    n.h.dp
        .bridge_mut(br0)
        .unwrap()
        .fdb
        .add_static(10, m7, n.vx, 1)
        .unwrap();
    let t = n.h.dp.port_mut(n.vx).unwrap().tunnel.as_mut().unwrap();
    t.add_static(10, m7, R3);
    n.h.send(n.a, &frame(mac(7), mac(1), 3));
    let out = n.h.outputs();
    assert_eq!(out[n.ul as usize].len(), 1, "static: to R3 only");
    assert_eq!(outer(&out[n.ul as usize][0]).0, R3);
    n.h.assert_no_frame_leaked();
}

/// A tunnel whose MAC -> VTEP table a remote's MAC flood filled (entries the FDB never kept
/// or has aged out) still learns a new host: the full table drops what the FDB no longer has
/// on the port, and unicast to the new host goes to its VTEP only.
#[test]
fn a_full_remote_table_makes_room_for_a_new_host() {
    let mut n = net();
    let t = n.h.dp.port_mut(n.vx).unwrap().tunnel.as_mut().unwrap();
    for i in 0..uvs::vxlan::MAX_REMOTE_MACS as u64 {
        t.learn(0, 0x0600_0000_0000 | i, R3);
    }
    assert!(t.is_full());
    n.h.send(
        n.ul,
        &vxlan_pkt(n.gw, R2, 0x08, 42, &frame(mac(1), mac(9), 1)),
    );
    n.h.outputs();
    let t = n.h.dp.port(n.vx).unwrap().tunnel.as_ref().unwrap();
    assert_eq!(t.remote_of(0, MacAddr(mac(9)).to_u64()), Some(R2));
    assert!(!t.is_full(), "the flood's entries are gone");
    n.h.send(n.a, &frame(mac(9), mac(1), 2));
    let out = n.h.outputs();
    assert_eq!(out[n.ul as usize].len(), 1);
    assert_eq!(outer(&out[n.ul as usize][0]).0, R2);
    n.h.assert_no_frame_leaked();
}

/// The outer UDP source port spreads inner flows (ECMP, the receiver's queues): IPv4 flows that
/// differ only in the destination port, IPv6 flows, and VLAN-tagged flows each get many ports
/// (RFC 7348 5.), and the packets of one flow keep one.
#[test]
fn the_outer_source_port_follows_the_inner_flow() {
    let mut n = net();
    let eth = |b: etherparse::PacketBuilderStep<etherparse::Ethernet2Header>| b;
    let v4 = |dport: u16| {
        let mut f = Vec::new();
        eth(etherparse::PacketBuilder::ethernet2(mac(1), BCAST))
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .udp(1001, dport)
            .write(&mut f, b"x")
            .unwrap();
        f
    };
    let v6 = |sport: u16| {
        let mut f = Vec::new();
        let (a, b) = ([0xfd; 16], [0xfe; 16]);
        eth(etherparse::PacketBuilder::ethernet2(mac(1), BCAST))
            .ipv6(a, b, 64)
            .udp(sport, sport + 100)
            .write(&mut f, b"x")
            .unwrap();
        f
    };
    let mut ports = |frames: Vec<Vec<u8>>| -> std::collections::BTreeSet<u16> {
        let mut set = std::collections::BTreeSet::new();
        for f in frames {
            n.h.send(n.a, &f);
            for o in &n.h.outputs()[n.ul as usize] {
                let s = SlicedPacket::from_ethernet(o).unwrap();
                let Some(TransportSlice::Udp(u)) = s.transport else {
                    panic!("udp")
                };
                set.insert(u.source_port());
            }
        }
        set
    };
    let by_dport = ports((2001..2017).map(v4).collect());
    assert!(
        by_dport.len() >= 10,
        "16 IPv4 flows by destination port: {by_dport:?}"
    );
    let v6_flows = ports((3001..3017).map(v6).collect());
    assert!(v6_flows.len() >= 10, "16 IPv6 flows: {v6_flows:?}");
    let tagged_flows = ports((2001..2017).map(|p| tagged(&v4(p), 5)).collect());
    assert!(
        tagged_flows.len() >= 10,
        "16 tagged flows: {tagged_flows:?}"
    );
    assert_eq!(ports(vec![v4(2001); 4]).len(), 1, "one flow, one port");
    assert_eq!(ports(vec![v6(3001); 4]).len(), 1, "one flow, one port");
}
