//! In-memory tests of taps and mirrors on a datapath (no worker, no IO).

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use super::capture::{Direction, Tap, TapSpec};
use super::filter::Filter;
use super::mirror::{Mirror, MirrorSpec};
use super::*;
use crate::datapath::{BridgeOptions, PortState, VlanMode};
use crate::port::PortKind;

/// A bridge with ports p0..p3 (ids 0..3).
fn setup() -> (Datapath, Frames) {
    let mut dp = Datapath::new();
    let b = dp.add_bridge("br0", &BridgeOptions::default()).unwrap();
    for i in 0..4u16 {
        let st = PortState::new(
            &format!("p{i}"),
            PortKind::Mem,
            b,
            VlanMode::default_trunk(),
            1500,
        );
        dp.add_port(i, st).unwrap();
    }
    (dp, Frames::new(64).unwrap())
}

fn frame(frames: &mut Frames, bytes: &[u8]) -> Desc {
    let mut d = frames.alloc().unwrap();
    d.len = bytes.len() as u32;
    frames.data_mut(d).copy_from_slice(bytes);
    d
}

fn icmp(src: u8, dst: u8) -> Vec<u8> {
    let mut f = vec![0x02, 0, 0, 0, 0, dst, 0x02, 0, 0, 0, 0, src, 0x08, 0x00];
    f.extend_from_slice(&[0x45, 0, 0, 28, 0, 0, 0, 0, 64, 1, 0, 0]);
    f.extend_from_slice(&[10, 0, 0, src, 10, 0, 0, dst]);
    f.extend_from_slice(&[8, 0, 0, 0, 0, 0, 0, 0]);
    f
}

fn mirror(dp: &Datapath, args: &[&str]) -> Mirror {
    let a: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    Mirror::new(MirrorSpec::from_args("br0", "m", &a).unwrap(), dp).unwrap()
}

#[test]
fn mirror_copies_rx_of_src_and_tx_of_dst_ports() {
    let (mut dp, mut frames) = setup();
    let mut obs = Observe::default();
    obs.mirrors.push(mirror(
        &dp,
        &["select_src=p0", "select_dst=p1", "output=p3"],
    ));
    obs.recompute();
    assert!(obs.rx_tapped(0) && !obs.rx_tapped(1) && !obs.rx_tapped(2));
    assert!(obs.tx_tapped());
    // Received on p0: copied to p3's queue, the original untouched.
    let a = frame(&mut frames, &icmp(1, 2));
    obs.on_rx(0, &mut dp, &mut frames, &[a]);
    assert_eq!(dp.out[3].len(), 1);
    assert_ne!(dp.out[3][0].addr, a.addr, "a copy, not the frame itself");
    assert_eq!(frames.data(dp.out[3][0]), &icmp(1, 2)[..]);
    // Queued for p1 (selected dst) and p2 (not selected): only p1's is copied, p1 keeps its own.
    let b = frame(&mut frames, &icmp(2, 1));
    let c = frame(&mut frames, &icmp(2, 9));
    dp.out[1].push(b);
    dp.out[2].push(c);
    obs.before_flush(&mut dp, &mut frames);
    assert_eq!(dp.out[1], vec![b]);
    assert_eq!(dp.out[2], vec![c]);
    assert_eq!(dp.out[3].len(), 2);
    assert_eq!(frames.data(dp.out[3][1]), &icmp(2, 1)[..]);
    assert_eq!(obs.mirrors[0].packets, 2);
    let row = obs.mirror_rows(&dp).remove(0);
    assert_eq!(row["output"], "p3");
    assert_eq!(row["select_src"], serde_json::json!(["p0"]));
}

#[test]
fn mirror_spec_errors_name_the_problem() {
    let (dp, _) = setup();
    let bad = |args: &[&str]| {
        let a: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        MirrorSpec::from_args("br0", "m", &a).and_then(|s| Mirror::new(s, &dp).map(|_| ()))
    };
    assert!(bad(&["select=p0"]).unwrap_err().contains("output"));
    assert!(bad(&["output=p3"]).unwrap_err().contains("select"));
    assert!(
        bad(&["select=p0,p3", "output=p3"])
            .unwrap_err()
            .contains("p3")
    );
    assert!(
        bad(&["select=nope", "output=p3"])
            .unwrap_err()
            .contains("nope")
    );
    assert!(bad(&["colour=red"]).unwrap_err().contains("colour"));
    let mut dp = dp;
    let vx = PortState::new("vx", PortKind::Vxlan, 0, VlanMode::default_trunk(), 1500);
    dp.add_port(4, vx).unwrap();
    let a: Vec<String> = vec!["select=p0".into(), "output=vx".into()];
    let e = Mirror::new(MirrorSpec::from_args("br0", "m", &a).unwrap(), &dp).unwrap_err();
    assert!(e.contains("VXLAN"), "{e}");
}

#[test]
fn removed_ports_leave_mirrors_and_end_taps() {
    let (mut dp, mut frames) = setup();
    let mut obs = Observe::default();
    obs.mirrors
        .push(mirror(&dp, &["select=p0,p1", "output=p3"]));
    let (tx, rx) = crossbeam_channel::bounded(16);
    let end = capture::EndSlot::default();
    let spec = TapSpec {
        id: 1,
        port: "p0".into(),
        dir: Direction::Rx,
        filter: Filter::All,
        count: None,
        duration: None,
        snaplen: 100,
        tx,
        dropped: Arc::new(AtomicU64::new(0)),
        end: end.clone(),
        shared_count: None,
    };
    obs.taps.push(Tap::start(spec, &dp).unwrap());
    obs.recompute();
    dp.del_port(0).unwrap();
    // Another port takes id 0: it is neither captured nor mirrored.
    let st = PortState::new("q0", PortKind::Mem, 0, VlanMode::default_trunk(), 1500);
    dp.add_port(0, st).unwrap();
    let a = frame(&mut frames, &icmp(1, 2));
    obs.on_rx(0, &mut dp, &mut frames, &[a]);
    assert!(
        rx.try_recv().is_err(),
        "the new port's frame is not captured"
    );
    assert!(dp.out[3].is_empty());
    assert!(obs.taps.is_empty());
    assert_eq!(end.get(), Some(capture::End::PortDeleted));
    assert!(!obs.rx_tapped(0) && obs.rx_tapped(1));
    assert_eq!(obs.mirrors[0].src.len(), 1);
    // Removing the output removes the mirror.
    dp.del_port(3).unwrap();
    let b = frame(&mut frames, &icmp(1, 2));
    obs.on_rx(1, &mut dp, &mut frames, &[b]);
    assert!(obs.mirrors.is_empty() && !obs.rx_tapped(1) && !obs.tx_tapped());
}

#[test]
fn tap_filters_counts_and_snaps() {
    let (mut dp, mut frames) = setup();
    let mut obs = Observe::default();
    let (tx, rx) = crossbeam_channel::bounded(2);
    let dropped = Arc::new(AtomicU64::new(0));
    let end = capture::EndSlot::default();
    let spec = TapSpec {
        id: 7,
        port: "p2".into(),
        dir: Direction::Both,
        filter: Filter::parse("icmp and host 10.0.0.5").unwrap(),
        count: Some(3),
        duration: None,
        snaplen: 20,
        tx,
        dropped: dropped.clone(),
        end: end.clone(),
        shared_count: None,
    };
    obs.taps.push(Tap::start(spec, &dp).unwrap());
    obs.recompute();
    let batch: Vec<Desc> = [icmp(5, 1), icmp(1, 9), icmp(1, 5)]
        .iter()
        .map(|f| frame(&mut frames, f))
        .collect();
    obs.on_rx(2, &mut dp, &mut frames, &batch);
    let got: Vec<_> = rx.try_iter().collect();
    assert_eq!(got.len(), 2, "10.0.0.1->9 is filtered out");
    assert_eq!(got[0].data.len(), 20, "snap length");
    assert_eq!(got[0].orig_len, 42);
    assert!(got.iter().all(|c| c.dir == capture::Dir::Rx));
    // Third match: sent. Fourth would exceed the count: the tap is gone after the third.
    let d = frame(&mut frames, &icmp(5, 1));
    dp.out[2].push(d);
    obs.before_flush(&mut dp, &mut frames);
    assert_eq!(rx.try_recv().unwrap().dir, capture::Dir::Tx);
    assert!(obs.taps.is_empty() && !obs.tx_tapped());
    assert_eq!(end.get(), Some(capture::End::Count));
    assert_eq!(dp.out[2], vec![d], "capture leaves the queue as it was");
    assert_eq!(dropped.load(std::sync::atomic::Ordering::Relaxed), 0);
}

#[test]
fn vxlan_ports_are_refused() {
    let (mut dp, _) = setup();
    let st = PortState::new("vx", PortKind::Vxlan, 0, VlanMode::default_trunk(), 1500);
    dp.add_port(4, st).unwrap();
    let (tx, _rx) = crossbeam_channel::bounded(1);
    let spec = TapSpec {
        id: 1,
        port: "vx".into(),
        dir: Direction::Both,
        filter: Filter::All,
        count: None,
        duration: None,
        snaplen: 1,
        tx,
        dropped: Arc::new(AtomicU64::new(0)),
        end: capture::EndSlot::default(),
        shared_count: None,
    };
    let e = Tap::start(spec, &dp).err().unwrap();
    assert!(e.contains("uplink"), "{e}");
}
