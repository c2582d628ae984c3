//! In-memory tests of OpenFlow groups (`group:N`): `all` sends a copy through every bucket,
//! `select` one bucket per connection (weighted), `indirect` its one bucket; bucket actions
//! change only their copy, and the flow's later actions see the frame as it was.

mod common;

use common::*;
use uvs::datapath::VlanMode;
use uvs::flow::group::parse_group;

fn add_group(h: &mut Harness, b: u16, text: &str) {
    let g = parse_group(text).unwrap();
    let ft = &mut h.dp.bridge_mut(b).unwrap().flows;
    ft.groups.insert(g.id, g);
    ft.emc.clear();
}

fn udp(src_port: u16) -> Vec<u8> {
    let mut v = Vec::new();
    etherparse::PacketBuilder::ethernet2(mac(1), mac(2))
        .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
        .udp(src_port, 2000)
        .write(&mut v, b"data")
        .unwrap();
    v
}

/// A bridge with ports 1-4 (ids 0-3).
fn setup() -> (Harness, u16) {
    let mut h = Harness::new();
    let b = h.bridge("br0");
    for i in 1..=4 {
        h.port(b, &format!("p{i}"), VlanMode::default_trunk());
    }
    (h, b)
}

#[test]
fn all_group_copies_to_every_bucket_and_the_flow_goes_on() {
    let (mut h, b) = setup();
    add_group(
        &mut h,
        b,
        "group_id=1,type=all,bucket=output:2,bucket=mod_vlan_vid:9,output:3",
    );
    h.add_flow(b, "priority=10,in_port=1,actions=group:1,output:4");
    let f = udp(1000);
    h.send(0, &f);
    let out = h.outputs();
    assert_eq!(out[1], vec![f.clone()], "bucket 1: the frame as it is");
    assert_eq!(out[2], vec![tagged(&f, 9)], "bucket 2: its own tagged copy");
    assert_eq!(
        out[3],
        vec![f.clone()],
        "after the group: the frame unchanged"
    );
    assert!(out[0].is_empty());
    // Counted on the group and on both buckets (OpenFlow's group statistics).
    h.send(0, &f);
    let st = &h.dp.bridge(b).unwrap().flows.group_stats[&1];
    let len = f.len() as u64;
    assert_eq!((st.packets, st.bytes), (2, 2 * len));
    assert_eq!(st.buckets, vec![(2, 2 * len), (2, 2 * len)]);
}

#[test]
fn select_group_keeps_a_connection_on_one_bucket_and_spreads_connections() {
    let (mut h, b) = setup();
    add_group(
        &mut h,
        b,
        "group_id=5,type=select,bucket=output:2,bucket=weight:1,output:3,bucket=weight:0,output:4",
    );
    h.add_flow(b, "priority=10,in_port=1,actions=group:5");
    // One connection: always the same port.
    for _ in 0..10 {
        h.send(0, &udp(4242));
    }
    let out = h.outputs();
    let counts: Vec<usize> = out.iter().map(Vec::len).collect();
    assert!(
        counts == vec![0, 10, 0, 0] || counts == vec![0, 0, 10, 0],
        "{counts:?}"
    );
    // 400 connections: both weighted buckets, never the weight-0 one, nothing lost.
    for p in 0..400u16 {
        h.send(0, &udp(10_000 + p));
    }
    let counts: Vec<usize> = h.outputs().iter().map(Vec::len).collect();
    assert_eq!(counts[1] + counts[2], 400, "{counts:?}");
    assert!(counts[1] > 100 && counts[2] > 100, "{counts:?}");
    assert_eq!(counts[3], 0, "weight 0 is never chosen");
}

#[test]
fn indirect_group_and_a_missing_group() {
    let (mut h, b) = setup();
    add_group(
        &mut h,
        b,
        "group_id=2,type=indirect,bucket=mod_dl_dst:02:00:00:00:00:09,output:4",
    );
    h.add_flow(b, "priority=10,in_port=1,actions=group:2");
    h.add_flow(b, "priority=10,in_port=2,actions=group:77");
    h.send(0, &udp(1));
    let out = h.outputs();
    assert_eq!(out[3].len(), 1);
    assert_eq!(&out[3][0][..6], &[2, 0, 0, 0, 0, 9], "the bucket's rewrite");
    h.send(1, &udp(1));
    let out = h.outputs();
    assert!(
        out.iter().all(Vec::is_empty),
        "group 77 does not exist: nothing is sent"
    );
    assert_eq!(h.drops(1, uvs::counters::DropReason::FlowDrop), 1);
}
