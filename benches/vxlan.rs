//! VXLAN encapsulation and decapsulation on mem ports, 64-byte inner frames, one core, batch 32.
//!
//!   cargo bench --bench vxlan                  # ns/frame: plain L2, encap, decap
//!   cargo bench --bench vxlan -- --frames N --mode l2|encap|decap|decap-partial --quiet
//!     (one run, for callgrind)
//!
//! encap: frames from port `a` to a MAC learned behind the tunnel (one remote VTEP) leave the
//! uplink encapsulated. decap: VXLAN packets arriving on the uplink are decapsulated and leave
//! port `a`. decap-partial: the same with an uplink whose frames may carry partial checksums
//! (as an AF_XDP port on a veth says), so the outer and the inner frames are checked for one.
//! l2: the same inner frame switched between two plain ports (the baseline).

mod common;

use common::{forward_all, median5, mem_port};
use uvs::datapath::{BridgeOptions, Datapath, Gateway};
use uvs::packet::Frames;
use uvs::port::mem::MemPort;
use uvs::vxlan::{Tunnel, TunnelConf};
use uvs::wire::MacAddr;

const LOCAL: [u8; 4] = [10, 252, 0, 1];
const REMOTE: [u8; 4] = [10, 252, 0, 2];
const HOST_A: [u8; 6] = [2, 0, 0, 0, 0, 0x0a];
const HOST_R: [u8; 6] = [2, 0, 0, 0, 0, 0x0b];
const REMOTE_MAC: MacAddr = MacAddr([2, 0, 0, 0, 0xee, 2]);

fn inner(dst: [u8; 6], src: [u8; 6]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&[0x08, 0x00]);
    f.extend_from_slice(&[
        0x45, 0, 0, 46, 0, 0, 0x40, 0, 64, 17, 0, 0, 192, 168, 42, 1, 192, 168, 42, 2, 0x30, 0x39,
        0x00, 0x35, 0, 26, 0, 0,
    ]);
    f.resize(60, 0);
    f
}

fn outer(gw: MacAddr, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&gw.0);
    f.extend_from_slice(&REMOTE_MAC.0);
    f.extend_from_slice(&[0x08, 0x00]);
    let ip_len = 20 + 8 + 8 + payload.len();
    let mut ip = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0];
    ip[2..4].copy_from_slice(&(ip_len as u16).to_be_bytes());
    ip.extend_from_slice(&REMOTE);
    ip.extend_from_slice(&LOCAL);
    let c = uvs::wire::checksum::checksum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(&50000u16.to_be_bytes());
    f.extend_from_slice(&4789u16.to_be_bytes());
    f.extend_from_slice(&((8 + 8 + payload.len()) as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0, 0x08, 0, 0, 0, 0, 0, 42, 0]);
    f.extend_from_slice(payload);
    f
}

fn run(frames_n: u64, mode: &str) -> f64 {
    let mut frames = Frames::new(4096).unwrap();
    let mut dp = Datapath::new();
    let ul = dp.add_bridge("ul", &BridgeOptions::default()).unwrap();
    let br0 = dp.add_bridge("br0", &BridgeOptions::default()).unwrap();
    let gw = Gateway::default_mac("ul");
    dp.set_gateway(
        ul,
        Some(Gateway {
            ip: LOCAL,
            len: 24,
            mac: gw,
        }),
    )
    .unwrap();
    let mut uplink = mem_port("uplink", ul);
    uplink.partial_csum_in = mode == "decap-partial";
    dp.add_port(0, uplink).unwrap();
    dp.add_port(1, mem_port("a", br0)).unwrap();
    let mut vx = mem_port("vx0", br0);
    vx.mtu = u16::MAX as u32;
    vx.partial_csum_in = mode != "l2";
    let mut t = Tunnel::new(TunnelConf {
        vni: 42,
        local_ip: LOCAL,
        remotes: vec![REMOTE],
        ..TunnelConf::default()
    });
    t.add_static(0, MacAddr(HOST_R).to_u64(), REMOTE);
    if mode != "l2" {
        vx.tunnel = Some(Box::new(t));
    }
    dp.add_port(2, vx).unwrap();
    dp.refresh_tunnels();
    dp.neigh.learn(ul, REMOTE, REMOTE_MAC, 1);
    dp.bridge_mut(ul)
        .unwrap()
        .fdb
        .learn(0, REMOTE_MAC.to_u64(), 0, 1);
    dp.bridge_mut(br0)
        .unwrap()
        .fdb
        .learn(0, MacAddr(HOST_R).to_u64(), 2, 1);
    dp.bridge_mut(br0)
        .unwrap()
        .fdb
        .learn(0, MacAddr(HOST_A).to_u64(), 1, 1);
    let (template, in_port, out_port) = match mode {
        "decap" | "decap-partial" => (outer(gw, &inner(HOST_A, HOST_R)), 0u16, 1usize),
        "encap" => (inner(HOST_R, HOST_A), 1, 0),
        _ => (inner(HOST_R, HOST_A), 1, 2),
    };
    let mut rx = MemPort::replay(in_port, &template, frames_n);
    let mut sink = MemPort::sink(out_port as u16);
    forward_all(
        &mut dp,
        &mut frames,
        &mut rx,
        &mut sink,
        (in_port, out_port),
        frames_n,
    )
}

/// The paths `--mode` names.
const MODES: [&str; 4] = ["l2", "encap", "decap", "decap-partial"];

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let get = |k: &str| {
        args.iter()
            .position(|a| a == k)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    if let Some(n) = get("--frames").and_then(|v| v.parse().ok()) {
        let mode = get("--mode").unwrap_or_else(|| "encap".into());
        if !MODES.contains(&mode.as_str()) {
            // Measuring something else under the asked-for name would be worse than nothing.
            eprintln!(
                "vxlan bench: --mode {mode}: not one of {}",
                MODES.join(", ")
            );
            std::process::exit(2);
        }
        let ns = run(n, &mode);
        if !args.iter().any(|a| a == "--quiet") {
            println!("{mode}: {ns:.1} ns/frame");
        }
        return;
    }
    println!("| path | ns/frame (median of 5, 1M frames, mem ports included) |");
    println!("|---|---|");
    for mode in MODES {
        println!("| {mode} | {:.1} |", median5(|| run(1_000_000, mode)));
    }
}
