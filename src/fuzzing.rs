//! Fuzz entry points, shared by the cargo-fuzz targets in `fuzz/` and by the stable-Rust smoke
//! test (`tests/fuzz_smoke.rs`) that runs them over pseudo-random inputs in every `cargo test`.
//!
//! Each function must never panic on any input; the assertions inside check invariants (no frame
//! leaked, counters add up), so a violation is a finding.

use crate::datapath::{BridgeOptions, Datapath, PortState, VlanMode};
use crate::packet::Frames;
use crate::pipeline::Pipeline;
use crate::port::mem::MemPort;
use crate::port::{Port, PortKind};

/// Split `data` into frames (a length byte, then that many bytes) and send them through a bridge
/// of four mem ports (trunk of all, access 10, trunk 10/20 with checksum completion, access 20),
/// the port chosen by each frame's length byte. Checks that every frame is either transmitted or
/// counted as a drop, and that no frame buffer leaks.
pub fn pipeline(data: &[u8]) {
    let mut frames = Frames::new(256).expect("map frames");
    let mut dp = Datapath::new();
    let b = dp
        .add_bridge(
            "br0",
            &BridgeOptions {
                fdb_capacity: 8,
                aging: 300,
            },
        )
        .expect("bridge");
    let modes = [
        VlanMode::default_trunk(),
        VlanMode::Access(10),
        VlanMode::parse(None, Some("10,20")).expect("trunks"),
        VlanMode::Access(20),
    ];
    let mut ports = Vec::new();
    for (i, m) in modes.into_iter().enumerate() {
        dp.add_port(
            i as u16,
            PortState {
                mtu: if i == 3 { 100 } else { 1500 },
                partial_csum_in: i == 2,
                ..PortState::new(&format!("p{i}"), PortKind::Mem, b, m, 1500)
            },
        )
        .expect("port");
        ports.push(MemPort::new(i as u16));
    }
    let mut pipeline = Pipeline::new();
    let mut batch = Vec::new();
    let mut rest = data;
    let mut now = 1;
    while let Some((&len, tail)) = rest.split_first() {
        let n = (len as usize).min(tail.len());
        let (frame, tail) = tail.split_at(n);
        rest = tail;
        let port = (len % 4) as usize;
        ports[port].inject(frame);
        ports[port].rx_burst(&mut frames, &mut batch, 64);
        pipeline.process(&mut dp, &mut frames, port as u16, &mut batch, now);
        now += (len & 1) as u64;
        for (i, p) in ports.iter_mut().enumerate() {
            p.tx_burst(&mut frames, &mut dp.out[i]);
        }
        dp.age_fdbs(now as u32, 64);
    }
    assert_eq!(frames.free_count(), frames.capacity(), "frame leaked");
}

/// Parse `data` as a TOML config; must return Ok or Err, never panic.
pub fn config(data: &[u8]) {
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = crate::config::Config::parse(s);
    }
}

/// Feed `data` to the control protocol as one connection's bytes; never panics.
pub fn control(data: &[u8]) {
    let reg = crate::control::Registry::new();
    let mut out = Vec::new();
    let _ = crate::control::server::handle_connection(data, &mut out, &reg);
}

/// Parse `data` as an ovs-ofctl flow; whatever parses must print and parse back to itself.
pub fn flow(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(f) = crate::flow::parse_flow(s) {
        let text = f.to_string();
        let again = crate::flow::parse_flow(&text)
            .unwrap_or_else(|e| panic!("display of a parsed flow does not parse: {text}: {e}"));
        assert_eq!(again, f, "round trip changed the flow: {text}");
    }
    let _ = crate::flow::parse_filter(s);
}
