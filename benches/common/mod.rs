//! Shared pieces of the mem-port benches: the replay -> pipeline -> sink loop, a port state,
//! argument lookup and medians.
#![allow(dead_code)]

use std::time::Instant;

use uvs::datapath::{Datapath, PortState, VlanMode};
use uvs::packet::Frames;
use uvs::pipeline::Pipeline;
use uvs::port::mem::MemPort;
use uvs::port::{Port, PortKind};

/// Frames per burst.
pub const BURST: usize = 32;

/// A mem port's datapath state in `bridge`.
pub fn mem_port(name: &str, bridge: u16) -> PortState {
    PortState::new(name, PortKind::Mem, bridge, VlanMode::default_trunk(), 1500)
}

/// Receive everything `rx` replays on port `in_port`, run it through the pipeline and hand
/// port `out`'s queue to `sink`; returns ns per frame. Asserts every frame came out.
pub fn forward_all(
    dp: &mut Datapath,
    frames: &mut Frames,
    rx: &mut MemPort,
    sink: &mut MemPort,
    (in_port, out): (u16, usize),
    frames_n: u64,
) -> f64 {
    let mut pipeline = Pipeline::new();
    let mut batch = Vec::with_capacity(BURST);
    let t = Instant::now();
    while rx.rx_burst(frames, &mut batch, BURST) != 0 {
        pipeline.process(dp, frames, in_port, &mut batch, 1);
        sink.tx_burst(frames, &mut dp.out[out]);
    }
    let ns = t.elapsed().as_nanos() as f64 / frames_n as f64;
    assert_eq!(sink.tx_count(), frames_n, "every frame forwarded");
    ns
}

/// A 64-byte (60 without FCS) IPv4/UDP frame from `src` to `dst`.
pub fn udp64(dst: [u8; 6], src: [u8; 6]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&[0x08, 0x00]);
    // IPv4/UDP header bytes and padding up to 64 bytes (60 without FCS).
    f.extend_from_slice(&[
        0x45, 0, 0, 46, 0, 0, 0x40, 0, 64, 17, 0, 0, 192, 0, 2, 1, 192, 0, 2, 2, 0x30, 0x39, 0x00,
        0x35, 0, 26, 0, 0,
    ]);
    f.resize(60, 0xab);
    f
}

/// The value after `--key` on the command line.
pub fn arg(args: &[String], key: &str) -> Option<String> {
    args.iter()
        .position(|a| a == key)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

/// Median of five runs.
pub fn median5(mut f: impl FnMut() -> f64) -> f64 {
    let mut v: Vec<f64> = (0..5).map(|_| f()).collect();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[2]
}
