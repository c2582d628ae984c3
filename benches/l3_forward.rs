//! Routed and NAT'd forwarding on mem ports: 64-byte UDP frames from br0 to a host on br1 via
//! the gateways, one core, batch 32.
//!
//!   cargo bench --bench l3_forward            # ns/frame table: routes 1/1k/1M, NAT 1k/1M conns
//!   cargo bench --bench l3_forward -- --frames N --routes R [--nat --conns C [--flows F]] [--dsts D] --quiet
//!
//! `--dsts D` (D >= 1, routed only): frames cycle through D hosts on br1 (10.0.2.2 ..), each
//! resolved and learned, so with D > 1 every frame goes to another destination than the one
//! before it and the router's per-burst caches miss (the replay port's cycling costs a few
//! instructions per frame more than one template).
//!
//! `--flows F` (F >= 1, with `--nat`): frames cycle through F UDP source ports of host A, so F
//! masqueraded connections, and with F > 1 every frame belongs to another connection than the
//! one before it (the router's per-burst connection cache misses).
//!
//! `benches/callgrind.sh l3_forward "--routes 1" "--routes 1000000" "--nat --conns 1000" ...`
//! gives instructions per frame (setup cancels out: two runs, N and 2N frames).

mod common;

use common::{forward_all, median5, mem_port};
use uvs::conntrack::{CtConfig, FlowKey};
use uvs::datapath::{BridgeOptions, Datapath, Gateway};
use uvs::nat::Nat;
use uvs::packet::Frames;
use uvs::port::mem::MemPort;
use uvs::route::{Route, RouteKind};
use uvs::wire::MacAddr;

const HOST_A: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0a];
const HOST_B: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x0b]);

/// Host `i` of br1: 10.0.2.(2 + i), MAC 02:00:00:00:01:i (host 0 is `HOST_B`).
fn host(i: usize) -> ([u8; 4], MacAddr) {
    let mac = if i == 0 {
        HOST_B
    } else {
        MacAddr([0x02, 0, 0, 0, 1, i as u8])
    };
    ([10, 0, 2, 2 + i as u8], mac)
}

/// The template to host `i` (see [`host`]).
fn template_to(gw0: MacAddr, i: usize) -> Vec<u8> {
    let mut f = template(gw0);
    let ip = &mut f[14..34];
    ip[16..20].copy_from_slice(&host(i).0);
    ip[10..12].fill(0);
    let c = uvs::wire::checksum::checksum(ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    f
}

fn template(gw0: MacAddr) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&gw0.0);
    f.extend_from_slice(&HOST_A);
    f.extend_from_slice(&[0x08, 0x00]);
    let mut ip = [
        0x45, 0, 0, 46, 0, 0, 0x40, 0, 64, 17, 0, 0, 10, 0, 1, 2, 10, 0, 2, 2, 0x30, 0x39, 0x00,
        0x35, 0, 26, 0, 0,
    ];
    let c = uvs::wire::checksum::checksum(&ip[..20]);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    f.extend_from_slice(&ip);
    f.resize(60, 0);
    f
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn run(
    frames_n: u64,
    routes: usize,
    nat: bool,
    conns: usize,
    (dsts, flows): (usize, usize),
) -> f64 {
    assert!((1..=250).contains(&dsts), "--dsts: 1 to 250");
    assert!((1..=10_000).contains(&flows), "--flows: 1 to 10000");
    let mut frames = Frames::new(4096).unwrap();
    let mut dp = Datapath::new();
    let b0 = dp.add_bridge("br0", &BridgeOptions::default()).unwrap();
    let b1 = dp.add_bridge("br1", &BridgeOptions::default()).unwrap();
    let gw0 = Gateway::default_mac("br0");
    let gw1 = Gateway::default_mac("br1");
    dp.set_gateway(
        b0,
        Some(Gateway {
            ip: [10, 0, 1, 1],
            len: 24,
            mac: gw0,
        }),
    )
    .unwrap();
    dp.set_gateway(
        b1,
        Some(Gateway {
            ip: [10, 0, 2, 1],
            len: 24,
            mac: gw1,
        }),
    )
    .unwrap();
    dp.add_port(0, mem_port("in", b0)).unwrap();
    dp.add_port(1, mem_port("out", b1)).unwrap();
    for i in 0..dsts {
        let (ip, mac) = host(i);
        dp.neigh.learn(b1, ip, mac, 1);
        dp.bridge_mut(b1).unwrap().fdb.learn(0, mac.to_u64(), 1, 1);
    }
    let mut r = Rng(0x9e37_79b9);
    let mut added = 2; // the two connected routes
    while added < routes {
        let a = (r.next() as u32) & 0xffff_ff00;
        if a >> 24 == 10 {
            continue;
        }
        let route = Route {
            prefix: a.into(),
            len: 24,
            kind: RouteKind::Via {
                gateway: [10, 0, 2, 2].into(),
                bridge: b1,
            },
        };
        if dp.routes.add(route).is_ok() {
            added += 1;
        }
    }
    if nat {
        let limit = (conns + 16).max(1024);
        dp.nat = Nat::with_config(CtConfig {
            limit,
            // Fixed: the table's layout (probe lengths) depends on the seed, and
            // `benches/callgrind.sh` subtracts two runs that must be alike.
            hash_seed: 1,
            ..CtConfig::default()
        })
        .unwrap();
        dp.nat
            .add_source(0x0a00_0100, 24, b1, None, [10, 0, 2, 1])
            .unwrap();
        for _ in 1..conns {
            let k = FlowKey::new(
                17,
                (r.next() as u32).to_be_bytes(),
                r.next() as u16,
                [10, 0, 2, 2],
                53,
            );
            let _ = dp.nat.ct.insert(0, k, 1);
        }
    }
    let mut rx = if flows > 1 {
        let templates: Vec<Vec<u8>> = (0..flows)
            .map(|i| {
                // The UDP source port (the template carries no UDP checksum).
                let mut f = template(gw0);
                f[34..36].copy_from_slice(&(12345 + i as u16).to_be_bytes());
                f
            })
            .collect();
        MemPort::replay_cycle(0, &templates, frames_n)
    } else if dsts == 1 {
        MemPort::replay(0, &template(gw0), frames_n)
    } else {
        let templates: Vec<Vec<u8>> = (0..dsts).map(|i| template_to(gw0, i)).collect();
        MemPort::replay_cycle(0, &templates, frames_n)
    };
    let mut sink = MemPort::sink(1);
    forward_all(&mut dp, &mut frames, &mut rx, &mut sink, (0, 1), frames_n)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let get = |k: &str| {
        args.iter()
            .position(|a| a == k)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse::<u64>().ok())
    };
    let nat = args.iter().any(|a| a == "--nat");
    if let Some(n) = get("--frames") {
        let ns = run(
            n,
            get("--routes").unwrap_or(2) as usize,
            nat,
            get("--conns").unwrap_or(1) as usize,
            (
                get("--dsts").unwrap_or(1) as usize,
                get("--flows").unwrap_or(1) as usize,
            ),
        );
        if !args.iter().any(|a| a == "--quiet") {
            println!("{ns:.1} ns/frame");
        }
        return;
    }
    let median = |routes: usize, nat: bool, conns: usize| {
        median5(|| run(1_000_000, routes, nat, conns, (1, 1)))
    };
    println!("| case | ns/frame (median of 5, 1M frames, mem ports included) |");
    println!("|---|---|");
    for routes in [2usize, 1_000, 1_000_000] {
        println!(
            "| routed, {routes} routes | {:.1} |",
            median(routes, false, 1)
        );
    }
    for conns in [1_000usize, 1_000_000] {
        println!(
            "| NAT (masquerade, established), {conns} tracked connections | {:.1} |",
            median(2, true, conns)
        );
    }
}
