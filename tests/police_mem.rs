//! Per-port policers on in-memory ports: `police_rx` drops what a port sends beyond its bucket
//! and rate before the frame is switched; `police_tx` drops what is queued toward a port beyond
//! its bucket and rate; both are counted by reason, and other ports are untouched.

mod common;

use common::*;
use uvs::counters::DropReason;
use uvs::datapath::VlanMode;
use uvs::pipeline::police::Policer;

/// 60-byte frames are 480 bits: a 16 kbit bucket passes 33 of them at once, and 1 Mbit/s
/// refills 1000 bits a millisecond (two frames).
#[test]
fn policers_drop_beyond_bucket_and_rate_per_direction() {
    let mut h = Harness::new();
    let br = h.bridge("br0");
    let trunk = VlanMode::default_trunk;
    let (p0, p1, p2) = (
        h.port(br, "p0", trunk()),
        h.port(br, "p1", trunk()),
        h.port(br, "p2", trunk()),
    );
    h.dp.now_ms = 1000;
    h.dp.port_mut(p0).unwrap().police_rx = Some(Policer::new(1_000, 16));
    h.dp.port_mut(p1).unwrap().police_tx = Some(Policer::new(1_000, 16));
    // p1 and p2 announce themselves (p1's own frame is sent, not received: no tx policing).
    h.send(p1, &frame(BCAST, mac(1), 0));
    h.send(p2, &frame(BCAST, mac(2), 0));
    h.outputs();

    // rx: 100 frames from p0 to p2 in one millisecond; 33 pass.
    for _ in 0..100 {
        h.send(p0, &frame(mac(2), mac(10), 1));
    }
    assert_eq!(h.outputs()[p2 as usize].len(), 33);
    assert_eq!(h.drops(p0, DropReason::PoliceRx), 67);
    // 10 ms later the bucket holds 10 kbit plus the 160 bits left: 21 more.
    h.dp.now_ms += 10;
    for _ in 0..100 {
        h.send(p0, &frame(mac(2), mac(10), 1));
    }
    assert_eq!(h.outputs()[p2 as usize].len(), 21);

    // tx: 100 frames from p2 to p1: 33 reach p1; p2 itself is not policed.
    for _ in 0..100 {
        h.send(p2, &frame(mac(1), mac(2), 2));
    }
    assert_eq!(h.outputs()[p1 as usize].len(), 33);
    assert_eq!(h.drops(p1, DropReason::PoliceTx), 67);
    assert_eq!(h.drops(p2, DropReason::PoliceRx), 0);
}
