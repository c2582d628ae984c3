//! Per-port rate limits on in-memory ports: `rate_rx` holds back what a port sends beyond its
//! bucket and rate before the frame is switched, `rate_tx` what is queued toward a port; the
//! held frames leave as tokens come, the overflow beyond the queue bound is dropped and counted
//! by reason, and other ports are untouched.

mod common;

use common::*;
use uvs::counters::DropReason;
use uvs::datapath::VlanMode;
use uvs::pipeline::ratelimit::Shaper;

/// 60-byte frames are 480 bits: a 16 kbit bucket passes 33 of them at once, 1 Mbit/s refills
/// 1000 bits a millisecond, and the queue holds 25 ms of the rate plus the burst (5125 bytes:
/// 85 frames).
#[test]
fn rate_limits_hold_then_drop_beyond_bucket_and_rate_per_direction() {
    let mut h = Harness::new();
    let br = h.bridge("br0");
    let trunk = VlanMode::default_trunk;
    let (p0, p1, p2) = (
        h.port(br, "p0", trunk()),
        h.port(br, "p1", trunk()),
        h.port(br, "p2", trunk()),
    );
    h.dp.now_ms = 1000;
    h.dp.port_mut(p0).unwrap().rate_rx = Some(Shaper::new(1_000, 16));
    h.dp.port_mut(p1).unwrap().rate_tx = Some(Shaper::new(1_000, 16));
    // p1 and p2 announce themselves (p1's own frame is sent, not received: not limited).
    h.send(p1, &frame(BCAST, mac(1), 0));
    h.send(p2, &frame(BCAST, mac(2), 0));
    h.outputs();

    // rx: 200 frames from p0 to p2 in one millisecond: 33 pass, 85 wait, 82 are dropped.
    for _ in 0..200 {
        h.send(p0, &frame(mac(2), mac(10), 1));
    }
    assert_eq!(h.outputs()[p2 as usize].len(), 33);
    assert_eq!(h.drops(p0, DropReason::RateRx), 82);
    // Dropped frames count as received in bytes as in packets (the bytes left them out).
    let c = &h.dp.port(p0).unwrap().counters;
    let len = frame(mac(2), mac(10), 1).len() as u64;
    assert_eq!((c.rx_packets, c.rx_bytes), (33 + 82, (33 + 82) * len));
    assert!(h.dp.rate_limited_waiting());
    // 10 ms later the bucket holds 10 kbit plus the 160 bits left: 21 waiting frames leave.
    h.dp.now_ms += 10;
    h.run();
    assert_eq!(h.outputs()[p2 as usize].len(), 21);
    // The worker runs every millisecond: within 40 ms more every waiting frame is gone.
    for _ in 0..40 {
        h.dp.now_ms += 1;
        h.run();
    }
    assert_eq!(h.outputs()[p2 as usize].len(), 64);
    assert!(!h.dp.rate_limited_waiting());

    // tx: 200 frames from p2 to p1: 33 reach p1 at once, 82 dropped; p2 is not limited.
    for _ in 0..200 {
        h.send(p2, &frame(mac(1), mac(2), 2));
    }
    assert_eq!(h.outputs()[p1 as usize].len(), 33);
    assert_eq!(h.drops(p1, DropReason::RateTx), 82);
    assert_eq!(h.drops(p2, DropReason::RateRx), 0);
    for _ in 0..50 {
        h.dp.now_ms += 1;
        h.run();
    }
    assert_eq!(h.outputs()[p1 as usize].len(), 85);
    // Removing a port frees what waits in its limits.
    h.send(p2, &frame(mac(1), mac(2), 2));
    let before = h.frames.free_count();
    for _ in 0..100 {
        h.send(p2, &frame(mac(1), mac(2), 2));
    }
    assert!(h.dp.rate_limited_waiting());
    let left = h.dp.del_port(p1).unwrap();
    assert!(!left.is_empty());
    for d in left {
        h.frames.free(d.addr);
    }
    assert!(h.frames.free_count() >= before - 1);
}
