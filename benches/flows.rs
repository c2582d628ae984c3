//! Flow-stage benchmark on mem ports: the per-frame cost of L2 forwarding 64-byte frames with
//! F flows spread over M distinct masks installed on the bridge, against plain NORMAL switching
//! (flow stage inactive). One core, batch 32, the same datapath as `benches/l2_forward.rs`.
//!
//! Two paths are measured:
//! - **EMC hit** (default): every frame is identical and hits a `priority=65000,ip,
//!   nw_src=192.0.2.1,actions=NORMAL` flow through the exact-match cache; the other F-1 flows
//!   are `actions=drop` flows that the frame does not match.
//! - **miss** (`--emc-miss`): every frame carries a different IPv4 destination (a 32-bit counter
//!   written into the frame before the pipeline; no flow looks at nw_dst), so the exact-match
//!   cache never answers, and none of the F drop flows match: the classifier visits all M
//!   subtables and ends in the default `priority=0,actions=NORMAL` flow (M+1 hash probes).
//!
//! - **EMC hit, interleaved** (`--keys K`, 2-256): as the EMC hit, but the frames cycle through
//!   K IPv4 destinations (192.0.2.0 + i mod K), so no frame has the key of the one before it:
//!   each is an exact-match cache hit (the flow stage's per-burst batching of same-key frames,
//!   `pipeline/flows/batch.rs`, never applies). The default (K = 1) is the batched case.
//!
//! The bench loop writes the 4 nw_dst bytes of every frame in every mode (the same value for
//! the EMC-hit and plain runs), so the harness cost is the same in all modes and cancels out.
//!
//! Masks (in order; M masks = the first M): nw_src prefixes /8../32 alone or combined with
//! `tp_dst`, `dl_vlan` and `in_port` (see `MASKS`). All drop flows have nw_src in 10.0.0.0/8 or
//! a `dl_vlan` (the measured frame is untagged, from 192.0.2.1), so they never match it.
//!
//!   cargo bench --bench flows                        # Markdown table, ns/frame, median of 5
//!                                                    # (pinned to the last core)
//!   cargo bench --bench flows -- --frames N --flows F --masks M [--keys K] [--emc-miss] [--plain] --quiet
//!
//! The second form is one run, for `benches/callgrind.sh flows "--flows 1 --masks 1" ...`
//! (instructions per frame = difference of an N and a 2N run, divided by N).

mod common;

use std::time::Instant;

use uvs::datapath::{BridgeOptions, Datapath, PortState, VlanMode};
use uvs::flow::{PortRef, parse_flow};
use uvs::packet::Frames;
use uvs::pipeline::Pipeline;
use uvs::port::mem::MemPort;
use uvs::port::{Port, PortKind};

const BURST: usize = 32;
const DST: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
const SRC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
/// Offset of the IPv4 destination address in the frame (the per-frame counter goes there).
const NW_DST_AT: usize = 14 + 16;
/// The flow the EMC-hit frames hit (mask 0: `ip,nw_src=/32`).
const HIT_FLOW: &str = "priority=65000,ip,nw_src=192.0.2.1,actions=NORMAL";

/// (nw_src prefix length (0: none), tp_dst, dl_vlan, in_port): 20 distinct masks.
const MASKS: [(u32, bool, bool, bool); 20] = [
    (32, false, false, false),
    (24, true, false, false),
    (16, true, false, false),
    (8, true, false, false),
    (0, true, true, false),
    (32, false, false, true),
    (24, false, true, false),
    (16, false, true, false),
    (28, false, false, false),
    (20, true, false, false),
    (12, true, false, false),
    (32, true, false, false),
    (24, false, false, true),
    (16, true, false, true),
    (8, true, true, false),
    (30, false, false, false),
    (26, true, false, false),
    (22, false, true, false),
    (18, true, false, true),
    (32, true, true, false),
];

/// The `k`-th drop flow of mask `i`: distinct for every k below the mask's capacity (at least
/// 65536), never matching the measured frame.
fn drop_flow(i: usize, k: u64) -> String {
    let (p, tp, vlan, in_port) = MASKS[i];
    let mut k = k;
    let mut s = format!("priority={},{}", 100 + i, if tp { "udp" } else { "ip" });
    if in_port {
        s += ",in_port=1";
    }
    if p > 8 {
        let bits = p - 8;
        let v = k & ((1u64 << bits) - 1);
        k >>= bits;
        let a = (10u32 << 24) | ((v as u32) << (32 - p));
        s += &format!(
            ",nw_src={}.{}.{}.{}/{p}",
            a >> 24,
            (a >> 16) & 255,
            (a >> 8) & 255,
            a & 255
        );
    } else if p == 8 {
        s += ",nw_src=10.0.0.0/8";
    }
    if tp {
        s += &format!(",tp_dst={}", 1 + k % 65535);
        k /= 65535;
    }
    if vlan {
        s += &format!(",dl_vlan={}", 1 + k % 4094);
        k /= 4094;
    }
    assert_eq!(k, 0, "mask {i}: flow index beyond the mask's capacity");
    s + ",actions=drop"
}

fn template() -> Vec<u8> {
    // IPv4/UDP 192.0.2.1:12345 -> 192.0.2.2:53, 64 bytes.
    common::udp64(DST, SRC)
}

fn state(name: &str, bridge: u16) -> PortState {
    PortState::new(name, PortKind::Mem, bridge, VlanMode::default_trunk(), 1500)
}

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    /// Only the default flow: the flow stage is skipped.
    Plain,
    /// Identical frames hitting the high-priority NORMAL flow through the EMC.
    EmcHit,
    /// Every frame different, matching only the default flow.
    Miss,
}

struct Bench {
    frames: Frames,
    dp: Datapath,
    pipeline: Pipeline,
    batch: Vec<uvs::packet::Desc>,
    /// Seconds spent in `Classifier::add` (parsing excluded) for the flows.
    add_s: f64,
    /// The per-frame counter (continues across runs, so repeated runs never repeat a key).
    ctr: u32,
}

/// A bridge with ports in (0) and out (1), the destination learned on out, and `flows` flows
/// over `masks` masks (none for `Mode::Plain`).
fn setup(flows: usize, masks: usize, mode: Mode) -> Bench {
    let frames = Frames::new(4096).unwrap();
    let mut dp = Datapath::new();
    let b = dp
        .add_bridge(
            "br0",
            &BridgeOptions {
                fdb_capacity: 16,
                aging: 300,
            },
        )
        .unwrap();
    dp.add_port(0, state("in", b)).unwrap();
    dp.add_port(1, state("out", b)).unwrap();
    let dst = u64::from_be_bytes([0, 0, DST[0], DST[1], DST[2], DST[3], DST[4], DST[5]]);
    let br = dp.bridge_mut(b).unwrap();
    br.fdb.learn(0, dst, 1, 1);
    let mut add_s = 0.0;
    if mode != Mode::Plain {
        let ft = &mut br.flows;
        let masks = masks.clamp(1, MASKS.len());
        let mut texts = Vec::with_capacity(flows);
        for j in 0..flows {
            if j == 0 && mode == Mode::EmcHit {
                texts.push(HIT_FLOW.to_string());
            } else {
                texts.push(drop_flow(j % masks, (j / masks) as u64));
            }
        }
        let parsed: Vec<_> = texts
            .iter()
            .map(|t| {
                let mut f = parse_flow(t).unwrap_or_else(|e| panic!("{t}: {e}"));
                ft.bind_ports(&mut f)
                    .unwrap_or_else(|e| panic!("{t}: {e:?}"));
                f
            })
            .collect();
        let t = Instant::now();
        for f in parsed {
            let a = ft.cls.add(f, 0, |r: &PortRef| Some(r.num())).unwrap();
            assert!(!a.replaced, "flows are distinct");
        }
        add_s = t.elapsed().as_secs_f64();
        ft.refresh();
        assert_eq!(ft.cls.len(), flows + 1, "the flows and the default");
        assert_eq!(
            ft.cls.masks(0),
            masks.min(flows) + 1,
            "distinct masks (plus the default's)"
        );
        assert!(ft.active);
    }
    Bench {
        frames,
        dp,
        pipeline: Pipeline::new(),
        batch: Vec::with_capacity(BURST),
        add_s,
        ctr: 0x0a0b_0c0d,
    }
}

/// Forward `n` frames; returns ns per frame.
fn run(bench: &mut Bench, n: u64, mode: Mode, vary: bool, keys: u32) -> f64 {
    let Bench {
        frames,
        dp,
        pipeline,
        batch,
        ctr,
        ..
    } = bench;
    let mut rx = MemPort::replay(0, &template(), n);
    let mut sink = MemPort::sink(1);
    // The counter goes into every frame; else 192.0.2.0 + counter mod `keys` (the same
    // instructions for every `keys`).
    let vary_mask: u32 = if vary { !0 } else { 0 };
    let keys = keys.clamp(1, 256);
    let t = Instant::now();
    loop {
        let got = rx.rx_burst(frames, batch, BURST);
        if got == 0 {
            break;
        }
        for d in batch.iter() {
            *ctr = ctr.wrapping_add(1);
            let v = (*ctr & vary_mask) | ((0xc000_0200 | (*ctr % keys)) & !vary_mask);
            frames.data_mut(*d)[NW_DST_AT..NW_DST_AT + 4].copy_from_slice(&v.to_be_bytes());
        }
        pipeline.process(dp, frames, 0, batch, 1);
        sink.tx_burst(frames, &mut dp.out[1]);
    }
    let ns = t.elapsed().as_nanos() as f64 / n as f64;
    assert_eq!(sink.tx_count(), n, "every frame forwarded");
    if mode != Mode::Plain {
        let emc = &dp.bridge(0).unwrap().flows.emc;
        if mode == Mode::Miss {
            assert!(emc.hits < 64, "miss mode: {} EMC hits", emc.hits);
        } else {
            assert!(
                emc.misses < 64 * u64::from(keys),
                "hit mode: {} EMC misses",
                emc.misses
            );
            if keys > 1 {
                assert!(
                    emc.hits > n / 2,
                    "interleaved: {} of {n} EMC hits",
                    emc.hits
                );
            }
        }
    }
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
    let has = |k: &str| args.iter().any(|a| a == k);
    let vary = has("--emc-miss");
    if let Some(n) = get("--frames") {
        let flows = get("--flows").unwrap_or(1) as usize;
        let masks = get("--masks").unwrap_or(1) as usize;
        let mode = if has("--plain") {
            Mode::Plain
        } else if vary {
            Mode::Miss
        } else {
            Mode::EmcHit
        };
        let keys = get("--keys").unwrap_or(1) as u32;
        let mut b = setup(flows, masks, mode);
        let ns = run(&mut b, n, mode, vary, keys);
        if !has("--quiet") {
            println!(
                "{n} frames, {flows} flows, {masks} masks, {}: {ns:.1} ns/frame",
                match mode {
                    Mode::Plain => "plain NORMAL",
                    Mode::EmcHit => "EMC hit",
                    Mode::Miss => "EMC miss, classifier miss",
                }
            );
        }
        return;
    }
    const N: u64 = 2_000_000;
    const REPS: usize = 5;
    // The worker's core, as uvs pins its worker (less noise from migrations).
    if let Some(core) = core_affinity::get_core_ids().and_then(|c| c.last().copied()) {
        core_affinity::set_for_current(core);
    }
    println!(
        "| flows | masks | plain ns/frame | EMC hit ns/frame | EMC hit - plain | miss ns/frame | miss - plain | Classifier::add flows/s |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    let cases = [
        (1, 1),
        (100, 1),
        (100, 5),
        (100, 20),
        (10_000, 1),
        (10_000, 5),
        (10_000, 20),
        (100_000, 1),
        (100_000, 5),
        (100_000, 20),
    ];
    let med = |mut v: Vec<f64>| {
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        v[v.len() / 2]
    };
    for (flows, masks) in cases {
        let mut plain_b = setup(0, 0, Mode::Plain);
        let mut hit_b = setup(flows, masks, Mode::EmcHit);
        let mut miss_b = setup(flows, masks, Mode::Miss);
        // Interleaved: each repetition runs plain, hit, plain (varying frames), miss back to
        // back, and the differences are taken within a repetition (the machine is shared).
        let (mut plain, mut hit, mut miss, mut dhit, mut dmiss) =
            (vec![], vec![], vec![], vec![], vec![]);
        for _ in 0..REPS {
            let p = run(&mut plain_b, N, Mode::Plain, false, 1);
            let h = run(&mut hit_b, N, Mode::EmcHit, false, 1);
            let pv = run(&mut plain_b, N, Mode::Plain, true, 1);
            let m = run(&mut miss_b, N, Mode::Miss, true, 1);
            plain.push(p);
            hit.push(h);
            miss.push(m);
            dhit.push(h - p);
            dmiss.push(m - pv);
        }
        let rate = if flows >= 10_000 {
            format!("{:.0}", flows as f64 / hit_b.add_s.min(miss_b.add_s))
        } else {
            "-".into()
        };
        println!(
            "| {flows} | {masks} | {:.1} | {:.1} | {:+.1} | {:.1} | {:+.1} | {rate} |",
            med(plain),
            med(hit),
            med(dhit),
            med(miss),
            med(dmiss)
        );
    }
    println!(
        "(medians of {REPS} interleaved repetitions of {N} frames each, mem ports included; \
         differences are medians of per-repetition differences; plain = flow stage inactive)"
    );
}
