//! In-memory tests of OpenFlow port numbers and action lists: per-bridge numbers that flows
//! refer to (a flow can never reach another bridge's port, whatever the datapath's internal
//! ids do), and every action of a list running in order on the frame as it is at that point.

mod common;

use common::*;
use uvs::datapath::{PortState, VlanMode};
use uvs::port::PortKind;
use uvs::port::mem::MemPort;

fn udp(src: u8, dst: u8) -> Vec<u8> {
    let mut v = Vec::new();
    etherparse::PacketBuilder::ethernet2(mac(src), mac(dst))
        .ipv4([10, 0, 0, src], [10, 0, 0, dst], 64)
        .udp(1000, 2000)
        .write(&mut v, b"data")
        .unwrap();
    v
}

#[test]
fn numbers_are_per_bridge_stable_and_requestable() {
    let mut h = Harness::new();
    let a = h.bridge("a");
    let b = h.bridge("b");
    let a1 = h.port(a, "a1", VlanMode::default_trunk());
    let b1 = h.port(b, "b1", VlanMode::default_trunk());
    assert_eq!(h.dp.port(a1).unwrap().ofport, 1);
    assert_eq!(h.dp.port(b1).unwrap().ofport, 1, "numbers are per bridge");
    let id = h.dp.next_port_id().unwrap();
    let st = PortState {
        ofport: 40,
        ..PortState::new("a2", PortKind::Mem, a, VlanMode::default_trunk(), 1500)
    };
    h.dp.add_port(id, st).unwrap();
    h.ports.push(MemPort::new(id));
    assert_eq!(h.dp.port(id).unwrap().ofport, 40, "ofport_request honoured");
    let err = h.dp.choose_ofport(a, "a3", Some(40)).unwrap_err();
    assert!(
        err.contains("ofport_request") && err.contains("a2"),
        "{err}"
    );
}

/// The case: a flow on bridge a outputs to a port number; that port goes and a port
/// of bridge b takes its internal id. The flow must not reach bridge b.
#[test]
fn a_flow_never_reaches_another_bridge() {
    let mut h = Harness::new();
    let a = h.bridge("a");
    let b = h.bridge("b");
    let a1 = h.port(a, "a1", VlanMode::default_trunk());
    let a2 = h.port(a, "a2", VlanMode::default_trunk());
    let a2_num = h.dp.port(a2).unwrap().ofport;
    h.add_flow(a, &format!("in_port=a1,actions=output:{a2_num}"));
    h.send(a1, &udp(1, 2));
    assert_eq!(h.outputs()[a2 as usize].len(), 1, "a1 -> a2 by number");
    // a2 goes; b1 is added and gets a2's internal id.
    h.dp.del_port(a2).unwrap();
    let id = h.dp.next_port_id().unwrap();
    assert_eq!(id, a2, "the internal id is reused");
    h.dp.add_port(
        id,
        PortState::new("b1", PortKind::Mem, b, VlanMode::default_trunk(), 1500),
    )
    .unwrap();
    h.ports[id as usize] = MemPort::new(id);
    h.send(a1, &udp(1, 2));
    assert!(h.outputs()[id as usize].is_empty(), "nothing leaks into b");
    assert_eq!(
        h.drops(a1, uvs::counters::DropReason::FlowDrop),
        1,
        "output to a number no port has: dropped and counted"
    );
    // a2 comes back: it gets its number again and the flow works again.
    let id2 = h.dp.next_port_id().unwrap();
    h.dp.add_port(
        id2,
        PortState::new("a2", PortKind::Mem, a, VlanMode::default_trunk(), 1500),
    )
    .unwrap();
    h.ports.push(MemPort::new(id2));
    assert_eq!(
        h.dp.port(id2).unwrap().ofport,
        a2_num,
        "same name, same number"
    );
    h.send(a1, &udp(1, 2));
    assert_eq!(h.outputs()[id2 as usize].len(), 1);
}

#[test]
fn numbers_flows_refer_to_are_not_given_to_new_ports() {
    let mut h = Harness::new();
    let a = h.bridge("a");
    h.port(a, "a1", VlanMode::default_trunk());
    h.add_flow(a, "in_port=1,actions=output:2");
    let p = h.port(a, "a9", VlanMode::default_trunk());
    assert_eq!(h.dp.port(p).unwrap().ofport, 3, "2 is a flow's");
}

#[test]
fn normal_then_output_runs_both() {
    let mut n = FlowNet::new();
    let (h, b, p) = (&mut n.h, n.b, n.p);
    // Teach the FDB where mac(2) is, then mirror everything p1 sends to p3 as well.
    h.send(p[1], &udp(2, 1));
    h.outputs();
    h.add_flow(b, "in_port=p1,actions=NORMAL,output:p3");
    h.send(p[0], &udp(1, 2));
    let out = h.outputs();
    assert_eq!(out[p[1] as usize], vec![udp(1, 2)], "NORMAL: learned port");
    assert_eq!(out[p[2] as usize], vec![udp(1, 2)], "then output:p3");
    // The other order.
    h.add_flow(b, "priority=40000,in_port=p1,actions=output:p3,NORMAL");
    h.send(p[0], &udp(1, 2));
    let out = h.outputs();
    assert_eq!(out[p[1] as usize], vec![udp(1, 2)]);
    assert_eq!(out[p[2] as usize], vec![udp(1, 2)]);
}

#[test]
fn each_output_sends_the_frame_as_it_is_then() {
    let mut n = FlowNet::new();
    let (h, b, p) = (&mut n.h, n.b, n.p);
    h.add_flow(b, "in_port=p1,actions=output:p2,mod_vlan_vid:5,output:p3");
    h.send(p[0], &udp(1, 2));
    let out = h.outputs();
    assert_eq!(out[p[1] as usize], vec![udp(1, 2)], "before the rewrite");
    assert_eq!(
        out[p[2] as usize],
        vec![tagged(&udp(1, 2), 5)],
        "after the rewrite"
    );
    assert!(out[p[0] as usize].is_empty());
    assert_eq!(h.frames.free_count(), 4096, "no frame leaked");
}

/// The output stage checks at execution that a flow's frame stays in its bridge, whatever the
/// number table says (here made stale by hand).
#[test]
fn output_stage_refuses_another_bridges_port() {
    let mut h = Harness::new();
    let a = h.bridge("a");
    let b = h.bridge("b");
    let a1 = h.port(a, "a1", VlanMode::default_trunk());
    let b1 = h.port(b, "b1", VlanMode::default_trunk());
    let ft = &mut h.dp.bridge_mut(a).unwrap().flows;
    ft.ports.insert("stale", 9, b1);
    h.add_flow(a, "in_port=a1,actions=output:9");
    h.send(a1, &udp(1, 2));
    assert!(h.outputs()[b1 as usize].is_empty());
    assert_eq!(h.drops(b1, uvs::counters::DropReason::FlowOtherBridge), 1);
}
