//! L2 forwarding benchmark on mem ports: 64-byte frames to a known MAC, one core, batch 32.
//!
//! A replay port receives copies of one frame; the pipeline learns, looks up the destination
//! (learned on the sink port among `macs` entries) and queues it; the sink counts and frees.
//!
//!   cargo bench --bench l2_forward                      # ns/frame table for 10, 1k, 1M MACs
//!   cargo bench --bench l2_forward -- --frames N --macs M --quiet   # one run (for callgrind)
//!   ... --ports-only                                    # replay -> sink without the pipeline
//!   ... --dsts K      # consecutive frames to K destinations in turn (default 1: a burst
//!                     # shares one; K > 1 defeats the per-burst one-entry caches)
//!
//! `benches/callgrind.sh` runs the second form under callgrind twice (N and 2N frames) and
//! reports instructions per frame as the difference divided by N, so setup cost cancels out.

use std::time::Instant;

mod common;

use common::{median5, mem_port};
use uvs::datapath::{BridgeOptions, Datapath};
use uvs::packet::Frames;
use uvs::pipeline::Pipeline;
use uvs::port::Port;
use uvs::port::mem::MemPort;

const BURST: usize = 32;
const DST: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
const SRC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];

fn template() -> Vec<u8> {
    common::udp64(DST, SRC)
}

/// Forward `frames` frames with `macs` learned MACs; returns ns per frame. With `ports_only`
/// the pipeline is skipped (replay straight to sink): the mem ports' own cost, to subtract.
/// `dsts`: frames go to that many destinations in turn (their last address byte rewritten
/// after receive, in both modes, so the subtraction cancels it).
fn run(frames_n: u64, macs: usize, ports_only: bool, dsts: u8) -> f64 {
    let mut frames = Frames::new(4096).unwrap();
    let mut dp = Datapath::new();
    let b = dp
        .add_bridge(
            "br0",
            &BridgeOptions {
                fdb_capacity: macs.max(16),
                aging: 300,
            },
        )
        .unwrap();
    dp.add_port(0, mem_port("in", b)).unwrap();
    dp.add_port(1, mem_port("out", b)).unwrap();
    let fdb = &mut dp.bridge_mut(b).unwrap().fdb;
    let dst = u64::from_be_bytes([0, 0, DST[0], DST[1], DST[2], DST[3], DST[4], DST[5]]);
    fdb.learn(0, dst, 1, 1);
    for k in 0..dsts {
        fdb.learn(0, dst & !0xff | u64::from(0x10 + k), 1, 1);
    }
    let mut x: u64 = 0x1234_5678;
    for _ in 1..macs.saturating_sub(1) {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        fdb.learn(0, (x >> 16) & 0xfeff_ffff_ffff, 1, 1);
    }
    let mut rx = MemPort::replay(0, &template(), frames_n);
    let mut sink = MemPort::sink(1);
    let mut pipeline = Pipeline::new();
    let mut batch = Vec::with_capacity(BURST);
    let t = Instant::now();
    loop {
        let n = rx.rx_burst(&mut frames, &mut batch, BURST);
        if n == 0 {
            break;
        }
        if dsts > 1 {
            for (i, d) in batch.iter().enumerate() {
                frames.data_mut(*d)[5] = 0x10 + (i % dsts as usize) as u8;
            }
        }
        if ports_only {
            sink.tx_burst(&mut frames, &mut batch);
            continue;
        }
        pipeline.process(&mut dp, &mut frames, 0, &mut batch, 1);
        sink.tx_burst(&mut frames, &mut dp.out[1]);
    }
    let ns = t.elapsed().as_nanos() as f64 / frames_n as f64;
    assert_eq!(sink.tx_count(), frames_n, "every frame forwarded");
    ns
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let get = |k: &str| {
        args.iter()
            .position(|a| a == k)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse::<u64>().ok())
    };
    let quiet = args.iter().any(|a| a == "--quiet");
    let ports_only = args.iter().any(|a| a == "--ports-only");
    if let (Some(n), Some(m)) = (get("--frames"), get("--macs")) {
        let dsts = get("--dsts").unwrap_or(1).clamp(1, 200) as u8;
        let ns = run(n, m as usize, ports_only, dsts);
        if !quiet {
            println!("{n} frames, {m} MACs: {ns:.1} ns/frame");
        }
        return;
    }
    let median = |macs: usize, ports_only: bool| median5(|| run(2_000_000, macs, ports_only, 1));
    let io = median(10, true);
    println!("| learned MACs | ns/frame with mem ports | ns/frame pipeline only |");
    println!("|---|---|---|");
    for macs in [10usize, 1_000, 1_000_000] {
        let t = median(macs, false);
        println!("| {macs} | {t:.1} | {:.1} |", t - io);
    }
    println!("(mem ports alone: {io:.1} ns/frame; medians of 5 runs of 2M frames)");
}
