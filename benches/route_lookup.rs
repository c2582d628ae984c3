//! Route lookup benchmark: longest-prefix match of random destinations in tables of 1, 1k and 1M
//! IPv4 prefixes (DIR-24-8, `uvs::route`), one core.
//!
//!   cargo bench --bench route_lookup                     # ns/lookup, build, clone, memory
//!   cargo bench --bench route_lookup -- --prefixes P --frames N --quiet   # one run (callgrind)
//!   benches/callgrind.sh route_lookup "--prefixes 1" "--prefixes 1000" "--prefixes 1000000"
//!
//! `--lookups N` is a synonym of `--frames N` (callgrind.sh passes `--frames`).
//!
//! Tables: 1 prefix is 10.0.0.0/8; larger tables draw prefix lengths like an Internet table
//! (61% /24, 25% /22-/23, 10% /17-/21, 3% /16, 0.2% /8-/15, 1% /25-/32) at random addresses.
//! Destinations are random addresses inside random installed prefixes (every lookup matches),
//! precomputed (1M of them) so the loop measures the lookup; consecutive lookups are independent,
//! as in a batch, so the CPU may overlap their cache misses.

use std::hint::black_box;
use std::net::Ipv4Addr;
use std::time::Instant;

use uvs::route::{Route, RouteKind, RouteTable, mask};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn random_len(rng: &mut Rng) -> u8 {
    match rng.below(1000) {
        0..=1 => 8 + rng.below(8) as u8,
        2..=31 => 16,
        32..=131 => 17 + rng.below(5) as u8,
        132..=381 => 22 + rng.below(2) as u8,
        382..=391 => 25 + rng.below(8) as u8,
        _ => 24,
    }
}

/// The routes of a table of `n` prefixes (deterministic).
fn routes(n: usize) -> Vec<Route> {
    let route = |a: u32, len: u8, i: u64| Route {
        prefix: Ipv4Addr::from(a & mask(len)),
        len,
        kind: RouteKind::Via {
            gateway: Ipv4Addr::new(198, 18, 0, 1 + (i % 200) as u8),
            bridge: (i % 4) as u16,
        },
    };
    if n == 1 {
        return vec![route(0x0a00_0000, 8, 0)];
    }
    let mut rng = Rng(0x1234_5678_9abc_def1);
    let mut seen = std::collections::HashSet::with_capacity(n);
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let len = random_len(&mut rng);
        let a = rng.next() as u32 & mask(len);
        if seen.insert((a, len)) {
            out.push(route(a, len, out.len() as u64));
        }
    }
    out
}

fn destinations(routes: &[Route], n: usize) -> Vec<u32> {
    let mut rng = Rng(0xdead_beef_cafe_f00d);
    (0..n)
        .map(|_| {
            let r = &routes[rng.below(routes.len() as u64) as usize];
            u32::from(r.prefix) | (rng.next() as u32 & !mask(r.len))
        })
        .collect()
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// `lookups` lookups over `dsts` (cycled); returns ns per lookup.
fn run(table: &RouteTable, dsts: &[u32], lookups: u64) -> f64 {
    let m = dsts.len() - 1; // a power of two minus one
    let mut acc = 0u64;
    let t = Instant::now();
    for i in 0..lookups as usize {
        if let Some(r) = table.lookup_u32(dsts[i & m]) {
            acc += r.bridge() as u64;
        }
    }
    let ns = t.elapsed().as_nanos() as f64 / lookups as f64;
    black_box(acc);
    ns
}

/// `run` without reading the route: the LPM arrays alone.
fn run_lpm(table: &RouteTable, dsts: &[u32], lookups: u64) -> f64 {
    let lpm = table.lpm();
    let m = dsts.len() - 1;
    let mut acc = 0u64;
    let t = Instant::now();
    for i in 0..lookups as usize {
        acc += lpm.lookup(dsts[i & m]) as u64;
    }
    let ns = t.elapsed().as_nanos() as f64 / lookups as f64;
    black_box(acc);
    ns
}

fn median5(f: impl Fn() -> f64) -> f64 {
    let mut v: Vec<f64> = (0..5).map(|_| f()).collect();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[2]
}

struct Built {
    table: RouteTable,
    dsts: Vec<u32>,
    build_ms: f64,
    rss_mib: f64,
}

fn build(prefixes: usize) -> Built {
    let rs = routes(prefixes);
    let dsts = destinations(&rs, 1 << 20);
    let rss0 = rss_kib();
    let t = Instant::now();
    let table = RouteTable::from_routes(rs).expect("unique, valid prefixes");
    let build_ms = t.elapsed().as_secs_f64() * 1e3;
    let rss_mib = (rss_kib().saturating_sub(rss0)) as f64 / 1024.0;
    Built {
        table,
        dsts,
        build_ms,
        rss_mib,
    }
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
    if let (Some(n), Some(p)) = (get("--frames").or(get("--lookups")), get("--prefixes")) {
        let b = build(p as usize);
        let ns = run(&b.table, &b.dsts, n);
        if !quiet {
            println!("{n} lookups, {p} prefixes: {ns:.2} ns/lookup");
        }
        return;
    }
    println!(
        "| prefixes | ns/lookup | LPM arrays only | build | clone | RSS of table | memory() | tbl8 groups |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for p in [1usize, 1_000, 1_000_000] {
        let b = build(p);
        let ns = median5(|| run(&b.table, &b.dsts, 20_000_000));
        let lpm_ns = median5(|| run_lpm(&b.table, &b.dsts, 20_000_000));
        let t = Instant::now();
        let c = b.table.clone();
        let clone_ms = t.elapsed().as_secs_f64() * 1e3;
        black_box(&c);
        drop(c);
        println!(
            "| {p} | {ns:.2} | {lpm_ns:.2} | {:.1} ms | {clone_ms:.2} ms | {:.1} MiB | {:.1} MiB | {} |",
            b.build_ms,
            b.rss_mib,
            b.table.memory() as f64 / (1 << 20) as f64,
            b.table.groups(),
        );
    }
    println!("(median of 5 runs of 20M lookups of random destinations inside installed prefixes)");
}
