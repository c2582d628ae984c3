//! In-memory integration tests of the L2 pipeline on mem ports: learning, flooding, unknown
//! unicast, VLAN access/trunk, isolation between bridges, MAC moves, drops, FDB limits, aging.

mod common;

use common::*;
use uvs::counters::DropReason;
use uvs::datapath::{BridgeOptions, Gateway, VlanMode};
use uvs::wire::MacAddr;

fn trunk() -> VlanMode {
    VlanMode::default_trunk()
}

/// Bridge `br0` with `opts` and two trunk ports: (harness, bridge, p1, p2).
fn two_ports(opts: BridgeOptions) -> (Harness, u16, u16, u16) {
    let mut h = Harness::new();
    let b = h.bridge_with("br0", opts);
    let p1 = h.port(b, "p1", trunk());
    let p2 = h.port(b, "p2", trunk());
    (h, b, p1, p2)
}

#[test]
fn learns_floods_unknown_then_forwards_known() {
    let FlowNet {
        mut h,
        b,
        p: [p1, p2, p3],
    } = FlowNet::new();
    let a_to_b = frame(mac(2), mac(1), 1);
    h.send(p1, &a_to_b);
    let out = h.outputs();
    assert_eq!(
        out[p1 as usize].len(),
        0,
        "never back out of the ingress port"
    );
    assert_eq!(
        out[p2 as usize],
        vec![a_to_b.clone()],
        "unknown unicast floods"
    );
    assert_eq!(out[p3 as usize], vec![a_to_b.clone()]);
    let b_to_a = frame(mac(1), mac(2), 2);
    h.send(p2, &b_to_a);
    let out = h.outputs();
    assert_eq!(
        out[p1 as usize],
        vec![b_to_a],
        "known unicast goes to one port"
    );
    assert!(out[p3 as usize].is_empty());
    h.send(p1, &a_to_b);
    let out = h.outputs();
    assert_eq!(out[p2 as usize], vec![a_to_b]);
    assert!(out[p3 as usize].is_empty(), "now learned: no flood");
    let rows = h.dp.fdb_rows(b, 1);
    assert_eq!(rows.len(), 2);
    assert_eq!(
        (rows[0].port.as_str(), rows[0].mac.as_str()),
        ("p1", "02:00:00:00:00:01")
    );
    assert_eq!(
        (rows[1].port.as_str(), rows[1].mac.as_str()),
        ("p2", "02:00:00:00:00:02")
    );
    assert_eq!(h.dp.bridge(b).unwrap().counters.learned, 2);
}

#[test]
fn broadcast_and_multicast_flood_to_all_others() {
    let mut h = Harness::new();
    let b = h.bridge("br0");
    let ports: Vec<u16> = (0..4)
        .map(|i| h.port(b, &format!("p{i}"), trunk()))
        .collect();
    let bc = frame(BCAST, mac(9), 3);
    h.send(ports[2], &bc);
    let mc = frame([0x01, 0x00, 0x5e, 0, 0, 1], mac(9), 4);
    h.send(ports[2], &mc);
    let out = h.outputs();
    for &p in &ports {
        let want = if p == ports[2] {
            vec![]
        } else {
            vec![bc.clone(), mc.clone()]
        };
        assert_eq!(out[p as usize], want, "port {p}");
    }
    assert_eq!(h.dp.port(ports[0]).unwrap().counters.tx_packets, 2);
}

/// Frames to the IEEE 802.1D reserved addresses (01:80:c2:00:00:00-0f: STP, PAUSE, LACP,
/// 802.1X, LLDP) are not switched (as OVS, whose NORMAL drops them), counted `link-local`;
/// 01:80:c2:00:00:10 and above are ordinary multicast.
#[test]
fn reserved_link_local_frames_are_not_switched() {
    let mut h = Harness::new();
    let b = h.bridge("br0");
    let ports: Vec<u16> = (0..3)
        .map(|i| h.port(b, &format!("p{i}"), trunk()))
        .collect();
    for last in [0x00, 0x01, 0x02, 0x03, 0x0e, 0x0f] {
        h.send(
            ports[0],
            &frame([0x01, 0x80, 0xc2, 0, 0, last], mac(9), last),
        );
    }
    let other = frame([0x01, 0x80, 0xc2, 0, 0, 0x10], mac(9), 0x10);
    h.send(ports[0], &other);
    let out = h.outputs();
    assert_eq!(out[ports[1] as usize], vec![other.clone()]);
    assert_eq!(out[ports[2] as usize], vec![other]);
    assert_eq!(h.drops(ports[0], DropReason::LinkLocal), 6);
    h.assert_no_frame_leaked();
}

#[test]
fn bridges_are_isolated() {
    let mut h = Harness::new();
    let b0 = h.bridge("br0");
    let b1 = h.bridge("br1");
    let a = h.port(b0, "a", trunk());
    let a2 = h.port(b0, "a2", trunk());
    let c = h.port(b1, "c", trunk());
    let c2 = h.port(b1, "c2", trunk());
    h.send(a, &frame(BCAST, mac(1), 1));
    let out = h.outputs();
    assert_eq!(out[a2 as usize].len(), 1);
    assert!(out[c as usize].is_empty() && out[c2 as usize].is_empty());
    // Same MAC in both bridges is two separate entries.
    h.send(c, &frame(BCAST, mac(1), 1));
    assert_eq!(h.dp.fdb_rows(b0, 1)[0].port, "a");
    assert_eq!(h.dp.fdb_rows(b1, 1)[0].port, "c");
}

#[test]
fn access_and_trunk_vlans() {
    let mut h = Harness::new();
    let b = h.bridge("br0");
    let a10 = h.port(b, "a10", VlanMode::Access(10));
    let a20 = h.port(b, "a20", VlanMode::Access(20));
    let t = h.port(b, "t", VlanMode::parse(None, Some("10,20")).unwrap());
    let t30 = h.port(b, "t30", VlanMode::parse(None, Some("30")).unwrap());
    let plain = h.port(b, "plain", trunk());

    // Untagged broadcast on access 10: leaves the trunk tagged 10, nowhere else.
    let f = frame(BCAST, mac(1), 7);
    h.send(a10, &f);
    let out = h.outputs();
    assert_eq!(out[t as usize], vec![tagged(&f, 10)]);
    assert_eq!(
        out[plain as usize],
        vec![tagged(&f, 10)],
        "all-VLAN trunk carries 10"
    );
    assert!(out[a20 as usize].is_empty() && out[t30 as usize].is_empty());

    // Tagged 20 from the trunk: arrives untagged on access 20.
    let g = frame(BCAST, mac(2), 8);
    h.send(t, &tagged(&g, 20));
    let out = h.outputs();
    assert_eq!(out[a20 as usize], vec![g.clone()]);
    assert!(out[a10 as usize].is_empty());

    // Learned per VLAN: unicast to mac(1) in VLAN 10 from the trunk goes to a10 untagged.
    let u = frame(mac(1), mac(2), 9);
    h.send(t, &tagged(&u, 10));
    let out = h.outputs();
    assert_eq!(out[a10 as usize], vec![u.clone()]);

    // A tagged frame on an access port, and a VLAN the trunk does not carry: dropped, counted.
    h.send(a10, &tagged(&u, 10));
    h.send(t, &tagged(&u, 30));
    assert!(h.outputs().iter().all(|o| o.is_empty()));
    assert_eq!(h.drops(a10, DropReason::VlanDenied), 1);
    assert_eq!(h.drops(t, DropReason::VlanDenied), 1);

    // VID 4095 is reserved: not even an all-VLAN trunk carries it (nothing learned either).
    h.send(plain, &tagged(&frame(BCAST, mac(7), 3), 4095));
    assert!(h.outputs().iter().all(|o| o.is_empty()));
    assert_eq!(h.drops(plain, DropReason::VlanDenied), 1);
    assert!(
        !h.dp
            .fdb_rows(b, 1)
            .iter()
            .any(|r| r.mac == "02:00:00:00:00:07")
    );
    // An 802.1ad (S-tagged) frame is `qinq` on a trunk without VLAN 0 too, as on every port.
    let mut s_tagged = tagged(&frame(BCAST, mac(8), 4), 10);
    s_tagged[12..14].copy_from_slice(&[0x88, 0xa8]);
    h.send(t, &s_tagged);
    h.send(plain, &s_tagged);
    assert!(h.outputs().iter().all(|o| o.is_empty()));
    assert_eq!(h.drops(t, DropReason::QinQ), 1);
    assert_eq!(h.drops(plain, DropReason::QinQ), 1);

    // Priority tag (VID 0) on an access port counts as untagged.
    h.send(a20, &tagged(&frame(BCAST, mac(5), 1), 0));
    let out = h.outputs();
    assert_eq!(out[t as usize].len(), 1);
    assert_eq!(
        uvs::wire::vlan::tci(&out[t as usize][0]).map(|c| c & 0xfff),
        Some(20)
    );

    // A priority tag over a VLAN-10 tag on the VLAN-20 access port: dropped (it was taken as
    // untagged and left the trunk tagged 20 then 10, the classic double-tag VLAN hop).
    let hop = tagged(&tagged(&frame(BCAST, mac(5), 9), 10), 0);
    h.send(a20, &hop);
    assert!(h.outputs().iter().all(|o| o.is_empty()));
    assert_eq!(h.drops(a20, DropReason::VlanDenied), 1);

    // VLAN 0 (untagged frames) as OVS has it: an all-VLAN trunk carries it, a trunk listing
    // VLANs only if the list has 0. Untagged in from `plain` reaches `t0` (trunks=0,10) and
    // no port of a list without 0; untagged (or priority-tagged) into `t` is dropped.
    let t0 = h.port(b, "t0", VlanMode::parse(None, Some("0,10")).unwrap());
    let n = frame(BCAST, mac(6), 2);
    h.send(plain, &n);
    let out = h.outputs();
    assert_eq!(
        out[t0 as usize],
        vec![n.clone()],
        "untagged out of trunks=0,10"
    );
    assert!(out[t as usize].is_empty() && out[t30 as usize].is_empty());
    h.send(t, &n);
    h.send(t, &tagged(&n, 0));
    assert!(h.outputs().iter().all(|o| o.is_empty()));
    assert_eq!(h.drops(t, DropReason::VlanDenied), 3);
    // A priority tag over a VLAN-30 tag on trunks=0,10: dropped too (taken as untagged, it
    // reached the all-VLAN trunk as a VLAN-30 frame: review).
    let hop30 = tagged(&tagged(&frame(BCAST, mac(5), 9), 30), 0);
    h.send(t0, &hop30);
    assert!(h.outputs().iter().all(|o| o.is_empty()));
    assert_eq!(h.drops(t0, DropReason::VlanDenied), 1);
    // Untagged in from t0 is VLAN 0 (reaches `plain`, untagged); tagged 10 leaves a10.
    h.send(t0, &frame(BCAST, mac(7), 3));
    assert_eq!(h.outputs()[plain as usize], vec![frame(BCAST, mac(7), 3)]);
    h.send(t0, &tagged(&frame(BCAST, mac(7), 4), 10));
    assert_eq!(h.outputs()[a10 as usize], vec![frame(BCAST, mac(7), 4)]);
}

#[test]
fn mac_move_follows_the_station() {
    let FlowNet {
        mut h,
        b,
        p: [p1, p2, p3],
    } = FlowNet::new();
    h.send(p1, &frame(BCAST, mac(1), 1));
    h.send(p2, &frame(BCAST, mac(1), 1));
    h.outputs();
    assert_eq!(h.dp.bridge(b).unwrap().counters.moves, 1);
    h.send(p3, &frame(mac(1), mac(3), 2));
    let out = h.outputs();
    assert_eq!(out[p2 as usize].len(), 1);
    assert!(out[p1 as usize].is_empty());
}

#[test]
fn bad_frames_are_counted_not_forwarded() {
    let (mut h, _, p1, p2) = two_ports(BridgeOptions::default());
    h.send(p1, &[0u8; 13]);
    h.send(p1, &[]);
    h.send(p1, &frame(BCAST, [0x01, 0, 0, 0, 0, 1], 1));
    h.send(p1, &frame(BCAST, [0; 6], 1));
    let mut qinq = frame(BCAST, mac(1), 1);
    qinq[12..14].copy_from_slice(&[0x88, 0xa8]);
    h.send(p1, &qinq);
    let mut short_tag = frame(BCAST, mac(1), 1)[..16].to_vec();
    short_tag[12..14].copy_from_slice(&[0x81, 0x00]);
    h.send(p1, &short_tag);
    // Destination learned on the ingress port: filtered.
    h.send(p1, &frame(BCAST, mac(7), 1));
    h.send(p1, &frame(mac(7), mac(8), 1));
    let out = h.outputs();
    assert_eq!(out[p2 as usize].len(), 1, "only the good broadcast passes");
    assert_eq!(h.drops(p1, DropReason::Runt), 3);
    assert_eq!(h.drops(p1, DropReason::SrcMulticast), 1);
    assert_eq!(h.drops(p1, DropReason::SrcZero), 1);
    assert_eq!(h.drops(p1, DropReason::QinQ), 1);
    assert_eq!(h.drops(p1, DropReason::SamePort), 1);
    assert_eq!(h.dp.port(p1).unwrap().counters.rx_packets, 8);
    h.assert_no_frame_leaked();
}

/// A trunk with a native VLAN (OVS's `vlan_mode=native-untagged` / `native-tagged`, with
/// `vlan=10 trunks=20`): untagged frames join VLAN 10 and leave it untagged (native-untagged)
/// or tagged (native-tagged); VLAN 20 is tagged both ways; other VLANs are refused.
#[test]
fn native_vlan_ports_as_ovs() {
    let mut h = Harness::new();
    let b = h.bridge("br0");
    let mode =
        |m: &str, trunks: Option<&str>| VlanMode::parse_mode(Some("10"), trunks, Some(m)).unwrap();
    let n = h.port(b, "n", mode("native-untagged", Some("20")));
    let nt = h.port(b, "nt", mode("native-tagged", None));
    let a10 = h.port(b, "a10", VlanMode::Access(10));
    let t = h.port(b, "t", trunk());
    let u = frame(BCAST, mac(1), 1);
    h.send(n, &u);
    let out = h.outputs();
    assert_eq!(out[a10 as usize], vec![u.clone()]);
    assert_eq!(out[t as usize], vec![tagged(&u, 10)]);
    assert_eq!(
        out[nt as usize],
        vec![tagged(&u, 10)],
        "native-tagged sends VLAN 10 tagged"
    );
    let u20 = tagged(&frame(BCAST, mac(2), 2), 20);
    h.send(n, &u20);
    let out = h.outputs();
    assert_eq!(out[t as usize], vec![u20.clone()]);
    assert_eq!(out[nt as usize], vec![u20.clone()]);
    assert!(out[a10 as usize].is_empty());
    // A tagged frame of the native VLAN is taken in too (as OVS).
    h.send(n, &tagged(&frame(BCAST, mac(3), 3), 10));
    assert_eq!(h.outputs()[a10 as usize].len(), 1);
    h.send(n, &tagged(&frame(BCAST, mac(4), 4), 30));
    assert!(h.outputs().iter().all(|o| o.is_empty()));
    assert_eq!(h.drops(n, DropReason::VlanDenied), 1);
    // Toward the native port: VLAN 10 untagged, VLAN 20 tagged, VLAN 0 not at all.
    let from_a = frame(BCAST, mac(5), 5);
    h.send(a10, &from_a);
    assert_eq!(h.outputs()[n as usize], vec![from_a]);
    let t20 = tagged(&frame(BCAST, mac(6), 6), 20);
    h.send(t, &t20);
    assert_eq!(h.outputs()[n as usize], vec![t20]);
    h.send(t, &frame(BCAST, mac(7), 7));
    assert!(
        h.outputs()[n as usize].is_empty(),
        "VLAN 0 is not the native port's"
    );
    // Unicast to a MAC learned on the native port's untagged frames: there alone, untagged;
    // a priority-tagged frame from it joins VLAN 10 too.
    let uni = frame(mac(1), mac(8), 8);
    h.send(a10, &uni);
    let out = h.outputs();
    assert_eq!(out[n as usize], vec![uni]);
    assert!(out[t as usize].is_empty() && out[nt as usize].is_empty());
    h.send(n, &tagged(&frame(BCAST, mac(9), 9), 0));
    assert_eq!(h.outputs()[a10 as usize], vec![frame(BCAST, mac(9), 9)]);
    assert_eq!(
        h.dp.port(n).unwrap().vlan.describe(),
        "vlan=10 trunks=20 vlan_mode=native-untagged"
    );
}

/// A full FDB: a port's new MACs take the place of its own oldest entries, and another
/// port's new MAC one of the port holding the most, so a flooding port cannot keep another
/// port's MAC out (it was refused and flooded to for as long as the table stayed full);
/// full of static entries, new MACs are refused and traffic to them floods.
#[test]
fn a_full_fdb_takes_new_macs_from_the_port_holding_the_most() {
    let (mut h, b, p1, p2) = two_ports(BridgeOptions {
        fdb_capacity: 2,
        aging: 300,
    });
    for n in 1..=3 {
        h.send(p1, &frame(BCAST, mac(n), n));
    }
    h.send(p2, &frame(BCAST, mac(9), 4));
    h.outputs();
    let br = h.dp.bridge(b).unwrap();
    assert_eq!(br.fdb.len(), 2);
    assert_eq!((br.counters.fdb_full, br.counters.fdb_replaced), (0, 2));
    assert_eq!(br.fdb.lookup(0, MacAddr(mac(9)).to_u64()), Some(p2));
    // mac(9) was learned: traffic to it goes to p2 alone.
    let p3 = h.port(b, "p3", trunk());
    h.send(p1, &frame(mac(9), mac(3), 5));
    let out = h.outputs();
    assert_eq!(out[p2 as usize].len(), 1);
    assert!(out[p3 as usize].is_empty(), "not flooded");
    // Full of static entries: refused, and traffic to it floods.
    let br = h.dp.bridge_mut(b).unwrap();
    br.fdb.flush(None);
    for n in [20, 21] {
        br.fdb
            .add_static(0, MacAddr(mac(n)).to_u64(), p3, 0)
            .unwrap();
    }
    h.send(p1, &frame(BCAST, mac(30), 6));
    h.send(p2, &frame(mac(30), mac(31), 7));
    let out = h.outputs();
    assert_eq!(out[p1 as usize].len(), 1, "mac(30) not learned: flooded");
    assert_eq!(h.dp.bridge(b).unwrap().counters.fdb_full, 2);
}

/// Storm control: the frames a port floods (broadcast, multicast, unknown unicast) draw from
/// its budget (`flood_rate`); beyond it they are dropped before they are copied to every port,
/// counted `flood-limit` on the sender. Frames to learned MACs and other ports' floods are not
/// charged. (A broadcast storm from one container raised the other tenants' average ping to
/// 3-4 ms: found trying uvs as a tenant.)
#[test]
fn flooded_frames_draw_from_the_ports_flood_budget() {
    use uvs::counters::DropReason;
    use uvs::pipeline::flood_limit::FloodLimit;
    let (mut h, b, p1, p2) = two_ports(BridgeOptions::default());
    let p3 = h.port(b, "p3", trunk());
    h.dp.port_mut(p1).unwrap().flood = FloodLimit::new(1000, 5);
    h.dp.now_ms = 10_000;
    h.send(p2, &frame(BCAST, mac(2), 0)); // p2's MAC learned (p2's own budget: the default)
    h.outputs();
    for n in 0..20 {
        h.ports[p1 as usize].inject(&frame(BCAST, mac(1), n));
    }
    h.run();
    // Unicast to a learned MAC is not a flood.
    for n in 0..20 {
        h.ports[p1 as usize].inject(&frame(mac(2), mac(1), n));
    }
    h.run();
    let out = h.outputs();
    assert_eq!(out[p3 as usize].len(), 5, "the burst");
    assert_eq!(out[p2 as usize].len(), 25, "5 broadcasts, 20 unicast");
    assert_eq!(h.drops(p1, DropReason::FloodLimit), 15);
    // Unknown unicast and multicast count too; 3 ms later, 3 more tokens.
    h.dp.now_ms += 3;
    for n in 0..4 {
        h.ports[p1 as usize].inject(&frame(mac(7), mac(1), n));
        h.ports[p1 as usize].inject(&frame([0x01, 0, 0x5e, 0, 0, 1], mac(1), n));
    }
    h.run();
    assert_eq!(h.outputs()[p3 as usize].len(), 3);
    assert_eq!(h.drops(p1, DropReason::FloodLimit), 20);
    // Another port's floods are not charged to p1's budget.
    h.send(p2, &frame(BCAST, mac(2), 1));
    assert_eq!(h.outputs()[p3 as usize].len(), 1);
    assert_eq!(h.drops(p2, DropReason::FloodLimit), 0);
    h.assert_no_frame_leaked();
}

/// A full FDB says so in the log, at most once a second per bridge (it said nothing: found
/// trying uvs as a tenant, a MAC flood filled the table and only counters moved).
#[test]
fn a_full_fdb_is_logged_once_a_second() {
    use std::sync::{Arc, Mutex};
    #[derive(Clone, Default)]
    struct Log(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Log {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let log = Log::default();
    let sink = log.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || sink.clone())
        .with_ansi(false)
        .finish();
    let (mut h, b, p1, p2) = two_ports(BridgeOptions {
        fdb_capacity: 2,
        aging: 300,
    });
    let br = h.dp.bridge_mut(b).unwrap();
    for n in [20, 21] {
        br.fdb
            .add_static(0, MacAddr(mac(n)).to_u64(), p2, 0)
            .unwrap();
    }
    let lines = || -> Vec<String> {
        String::from_utf8_lossy(&log.0.lock().unwrap())
            .lines()
            .map(str::to_string)
            .collect()
    };
    tracing::subscriber::with_default(subscriber, || {
        for n in 1..=5 {
            h.send(p1, &frame(BCAST, mac(n), n));
        }
        assert_eq!(lines().len(), 1, "{:?}", lines());
        h.now += 1;
        h.send(p1, &frame(BCAST, mac(6), 6));
        h.send(p1, &frame(BCAST, mac(7), 7));
    });
    let l = lines();
    assert_eq!(l.len(), 2, "{l:?}");
    assert!(
        l[0].contains("WARN")
            && l[0].contains("bridge br0: FDB full; 02:00:00:00:00:01 not learned"),
        "{l:?}"
    );
    assert!(l[1].contains("02:00:00:00:00:06"), "{l:?}");
    assert_eq!(h.dp.bridge(b).unwrap().counters.fdb_full, 7);
}

#[test]
fn entries_age_out_with_injected_time() {
    let (mut h, b, p1, _p2) = two_ports(BridgeOptions {
        fdb_capacity: 100,
        aging: 10,
    });
    h.now = 100;
    h.send(p1, &frame(BCAST, mac(1), 1));
    h.dp.age_fdbs(105, 1 << 20);
    assert_eq!(h.dp.fdb_rows(b, 105).len(), 1);
    assert_eq!(h.dp.fdb_rows(b, 105)[0].age, 5);
    h.dp.age_fdbs(111, 1 << 20);
    assert!(h.dp.fdb_rows(b, 111).is_empty());
    assert_eq!(h.dp.bridge(b).unwrap().counters.aged, 1);
}

#[test]
fn mtu_is_enforced_on_egress() {
    let (mut h, _, p1, p2) = two_ports(BridgeOptions::default());
    h.dp.port_mut(p2).unwrap().mtu = 100;
    let mut big = frame(BCAST, mac(1), 1);
    big.resize(14 + 101, 0);
    h.send(p1, &big);
    let mut ok = frame(BCAST, mac(1), 1);
    ok.resize(14 + 100, 0);
    h.send(p1, &ok);
    let out = h.outputs();
    assert_eq!(out[p2 as usize], vec![ok]);
    assert_eq!(h.drops(p2, DropReason::MtuExceeded), 1);
}

#[test]
fn partial_checksums_are_completed_from_flagged_ports() {
    let (mut h, _, p1, p2) = two_ports(BridgeOptions::default());
    h.dp.port_mut(p1).unwrap().partial_csum_in = true;
    let mut f = Vec::new();
    etherparse::PacketBuilder::ethernet2(mac(1), mac(2))
        .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
        .udp(1000, 2000)
        .write(&mut f, b"payload!")
        .unwrap();
    let good = f.clone();
    // What a veth with tx offload hands over: the folded pseudo-header sum.
    let pseudo = uvs::wire::checksum::pseudo_v4(&f[26..30], &f[30..34], 17, 16);
    f[40..42].copy_from_slice(&uvs::wire::checksum::fold(pseudo).to_be_bytes());
    h.send(p1, &f);
    let out = h.outputs();
    assert_eq!(out[p2 as usize], vec![good]);
    assert_eq!(h.dp.port(p1).unwrap().counters.csum_completed, 1);
    assert_eq!(MacAddr(mac(2)).to_string(), "02:00:00:00:00:02");
}

/// A bridge with `n` trunk ports (their ids in order).
fn trunk_bridge(n: usize) -> (Harness, Vec<u16>) {
    let mut h = Harness::new();
    let b = h.bridge("br0");
    let ports = (1..=n)
        .map(|i| h.port(b, &format!("p{i}"), trunk()))
        .collect();
    (h, ports)
}

/// Every frame of `burst` received on `p` in one burst through the pipeline.
fn run_burst(h: &mut Harness, p: u16, burst: &[Vec<u8>]) {
    for f in burst {
        h.ports[p as usize].inject(f);
    }
    h.run();
}

#[test]
fn every_frame_of_a_burst_gets_its_own_mtu_check_and_tag() {
    // Output remembers the last port a frame left by untouched; the frames after it in the
    // same burst toward that port must still be checked and tagged one by one.
    let (mut h, p) = trunk_bridge(2);
    let (p1, p2) = (p[0], p[1]);
    h.dp.port_mut(p2).unwrap().mtu = 100;
    h.send(p2, &frame(BCAST, mac(2), 1));
    h.send(p2, &tagged(&frame(BCAST, mac(2), 1), 10));
    h.outputs();
    let sized = |tag: u8, l3: usize| {
        let mut f = frame(mac(2), mac(1), tag);
        f.resize(14 + l3, tag);
        f
    };
    let burst = [
        sized(1, 100),
        sized(2, 101),
        tagged(&sized(3, 60), 10),
        sized(4, 46),
        sized(5, 200),
    ];
    run_burst(&mut h, p1, &burst);
    let out = h.outputs();
    assert_eq!(
        out[p2 as usize],
        vec![burst[0].clone(), burst[2].clone(), burst[3].clone()]
    );
    assert_eq!(h.drops(p2, DropReason::MtuExceeded), 2);
}

#[test]
fn a_burst_mixing_destinations_keeps_each_frames_decision() {
    // Forward caches the last (VLAN, destination) decision of a burst: frames after it with
    // another destination, or the same MAC in another VLAN, must get their own.
    let (mut h, p) = trunk_bridge(3);
    let (p1, p2, p3) = (p[0], p[1], p[2]);
    h.send(p2, &frame(BCAST, mac(2), 1));
    h.send(p1, &frame(BCAST, mac(1), 1));
    h.send(p3, &tagged(&frame(BCAST, mac(2), 1), 10));
    h.outputs();
    let burst = [
        frame(mac(2), mac(1), 1),              // to p2
        frame(mac(1), mac(9), 2),              // back to its own port p1: dropped
        frame(mac(1), mac(9), 3),              // again
        frame(mac(2), mac(1), 4),              // to p2
        tagged(&frame(mac(2), mac(1), 5), 10), // mac(2) in VLAN 10 sits on p3
        frame(mac(7), mac(1), 6),              // unknown: flooded to p2 and p3
    ];
    run_burst(&mut h, p1, &burst);
    let out = h.outputs();
    assert_eq!(
        out[p2 as usize],
        vec![burst[0].clone(), burst[3].clone(), burst[5].clone()]
    );
    assert_eq!(out[p3 as usize], vec![burst[4].clone(), burst[5].clone()]);
    assert!(out[p1 as usize].is_empty());
    assert_eq!(h.drops(p1, DropReason::SamePort), 2);
}

/// A frame whose source MAC is the bridge's gateway MAC (the switch's own address) is not
/// learned, whatever it is sent to (broadcast, another port's station, the gateway itself, in
/// any VLAN; several in one burst): a port cannot take the gateway's MAC in the FDB. As Linux's
/// bridge, which refuses to learn its own addresses, the frames still go on, counted
/// `gateway_mac_refused` (dropping them broke two uvs VTEPs whose underlay bridges share a
/// gateway MAC). (Found in session 29: such a frame was learned.)
#[test]
fn frames_from_the_gateway_mac_are_not_learned() {
    let (mut h, b, p1, p2) = two_ports(BridgeOptions::default());
    let gw = Gateway {
        ip: [10, 0, 1, 1],
        len: 24,
        mac: Gateway::default_mac("br0"),
    };
    h.dp.set_gateway(b, Some(gw)).unwrap();
    let g = gw.mac.0;
    h.send(p2, &frame(BCAST, mac(2), 1));
    h.outputs();
    run_burst(
        &mut h,
        p1,
        &[
            frame(BCAST, g, 1),
            frame(mac(2), g, 2),
            frame(mac(2), mac(1), 3),
            frame(g, g, 4),
            frame(BCAST, g, 5),
        ],
    );
    // Sent to the gateway, first in its burst (the routed frames' one-pass path).
    h.send(p1, &frame(g, g, 6));
    h.send(p1, &tagged(&frame(BCAST, g, 7), 10));
    let out = h.outputs();
    assert_eq!(
        out[p2 as usize],
        vec![
            frame(BCAST, g, 1),
            frame(mac(2), g, 2),
            frame(mac(2), mac(1), 3),
            frame(BCAST, g, 5),
            tagged(&frame(BCAST, g, 7), 10),
        ]
    );
    assert_eq!(h.dp.port(p1).unwrap().counters.gateway_mac_refused, 6);
    let br = h.dp.bridge(b).unwrap();
    assert_eq!(br.fdb.lookup(0, gw.mac.to_u64()), None);
    assert_eq!(br.fdb.lookup(10, gw.mac.to_u64()), None);
    assert_eq!(br.counters.learned, 2, "mac(1) and mac(2) only");
    h.assert_no_frame_leaked();
}

/// A tagged frame that ends right after its 802.1Q tag (its inner EtherType and nothing
/// more: 18 bytes) is a runt: counted `runt`, not learned, not forwarded. One payload byte
/// more and it is an ordinary frame. (Found in session 31: it was learned and forwarded, with no counter.)
#[test]
fn a_frame_ending_after_its_tag_is_a_runt() {
    let (mut h, b, p1, p2) = two_ports(BridgeOptions::default());
    let f = tagged(&frame(BCAST, mac(1), 1), 10);
    h.send(p1, &f[..18]);
    let out = h.outputs();
    assert!(out[p2 as usize].is_empty(), "not forwarded");
    assert_eq!(h.drops(p1, DropReason::Runt), 1);
    assert_eq!(
        h.dp.bridge(b)
            .unwrap()
            .fdb
            .lookup(10, MacAddr(mac(1)).to_u64()),
        None
    );
    h.send(p1, &f[..19]);
    let out = h.outputs();
    assert_eq!(out[p2 as usize], vec![f[..19].to_vec()]);
    assert_eq!(
        h.dp.bridge(b)
            .unwrap()
            .fdb
            .lookup(10, MacAddr(mac(1)).to_u64()),
        Some(p1)
    );
    h.assert_no_frame_leaked();
}
