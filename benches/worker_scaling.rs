//! Worker scaling, in memory: aggregate frames/s forwarded by 1, 2, 4, ... workers.
//!
//!   cargo bench --bench worker_scaling                              # --workers 1,2
//!   cargo bench --bench worker_scaling -- --workers 1,2,4,8,16 --seconds 3 --macs 1000
//!   cargo bench --bench worker_scaling -- --workers 1,8,16 --load-all
//!
//! Each run starts the workers with `uvs::worker::spawn_workers` (worker i pinned to core i
//! while there are cores, unpinned beyond), adds bridge br0 and attaches on every worker an
//! in-memory replay port `src` (64-byte frames from a per-worker source MAC to destination
//! `worker % macs`; the FDB holds `--macs` static entries) and a sink port `sink`. The workers run
//! their real loop (requests, burst, pipeline, flush, shared learning); the bench reads `stats`
//! (summed over the workers) after a warm-up and again `--seconds` later and prints frames/s,
//! the ratio to the first row, the CPU the workers used (cores) and each worker's share of a
//! core. Every run takes about `seconds + 1` s: `--workers 1,2,4,8,16 --seconds 3` finishes in
//! well under a minute. A ratio is only meaningful within one run of this program on an
//! otherwise idle machine. The bench does not check that the machine is idle: it shows what
//! each worker got, and a row where a worker got under 90% of a core is flagged (other
//! processes took its core, or there are more workers than CPUs), since its ratio is then low.
//!
//! `--load-all` keeps every CPU busy in every run: the cores no worker uses each run a spinning
//! thread, so one worker is measured under the same clock and host sharing as sixteen. On a
//! virtual machine one busy core runs faster than sixteen (all-core turbo, host SMT siblings):
//! on the 16-core machine of session 22, one worker alone did 41.6 Mframes/s and beside 7 busy
//! cores 31.7, so `--load-all` separates uvs's own scaling from the machine's.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

mod common;

use common::{arg, udp64};
use uvs::config::BridgeSpec;
use uvs::port::mem::MemPort;
use uvs::wire::MacAddr;
use uvs::worker::{Command, WorkerOptions, spawn_workers};

fn dst_mac(i: u32) -> [u8; 6] {
    let b = i.to_be_bytes();
    [0x02, 0xd0, b[0], b[1], b[2], b[3]]
}

/// Threads spinning on cores `from..cpus`, each pinned to one, until dropped.
struct Spinners {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Spinners {
    fn start(from: usize, cpus: usize) -> Spinners {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (from..cpus)
            .map(|c| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    core_affinity::set_for_current(core_affinity::CoreId { id: c });
                    while !stop.load(Ordering::Relaxed) {
                        std::hint::spin_loop();
                    }
                })
            })
            .collect();
        Spinners { stop, threads }
    }
}

impl Drop for Spinners {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Frames/s and CPU (cores) of each of the `n` workers over `secs`; with `load_all`, the cores
/// the workers leave idle spin meanwhile.
fn run(n: usize, secs: f64, macs: u32, load_all: bool) -> (f64, Vec<f64>) {
    let cpus = std::thread::available_parallelism().map_or(1, |c| c.get());
    let cores: Vec<Option<usize>> = (0..n).map(|i| (i < cpus).then_some(i)).collect();
    let _spinners = load_all.then(|| Spinners::start(n.min(cpus), cpus));
    let clock = Arc::new(uvs::clock::MonotonicClock::default());
    let opts = WorkerOptions {
        core: None,
        frames: 4096,
        ..Default::default()
    };
    let w = spawn_workers(opts, &cores, clock).expect("start the workers");
    // The FDB holds every static destination (the default capacity is 8192).
    let capacity = format!("fdb_capacity={}", (macs as usize).max(8192) * 2);
    w.call(Command::AddBridge(
        BridgeSpec::from_args("br0", &[capacity]).unwrap(),
    ))
    .unwrap();
    w.attach_each("br0", "sink", |_, id| Box::new(MemPort::sink(id)))
        .unwrap();
    for i in 0..macs {
        w.call(Command::FdbAdd {
            bridge: "br0".into(),
            mac: MacAddr(dst_mac(i)),
            port: "sink".into(),
            vlan: 0,
            remote: None,
        })
        .unwrap();
    }
    // One replay port per worker, each cycling through the destinations.
    w.attach_each("br0", "src", move |worker, id| {
        let src = [0x02, 0x5c, 0, 0, 0, worker as u8];
        let mut p = MemPort::replay(id, &udp64(dst_mac(worker as u32 % macs), src), u64::MAX);
        p.set_replay_full_copy(false);
        Box::new(p)
    })
    .unwrap();
    let sample = || {
        let v = w.call(Command::Stats).unwrap();
        let tx = v["ports"]["sink"]["tx_packets"].as_u64().unwrap_or(0);
        let cpu: Vec<u64> = v["workers"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|x| x["cpu_ns"].as_u64().unwrap_or(0))
                    .collect()
            })
            .unwrap_or_else(|| vec![v["worker"]["cpu_ns"].as_u64().unwrap_or(0)]);
        (tx, cpu, Instant::now())
    };
    std::thread::sleep(Duration::from_millis(500));
    let (tx0, cpu0, t0) = sample();
    std::thread::sleep(Duration::from_secs_f64(secs));
    let (tx1, cpu1, t1) = sample();
    w.shutdown();
    let wall = (t1 - t0).as_secs_f64();
    let per_worker = cpu1
        .iter()
        .zip(&cpu0)
        .map(|(c1, c0)| (c1 - c0) as f64 / 1e9 / wall)
        .collect();
    ((tx1 - tx0) as f64 / wall, per_worker)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let workers: Vec<usize> = arg(&args, "--workers")
        .unwrap_or_else(|| "1,2".into())
        .split(',')
        .map(|s| s.trim().parse().expect("--workers 1,2,4"))
        .collect();
    let secs: f64 = arg(&args, "--seconds").map_or(3.0, |s| s.parse().expect("--seconds"));
    let macs: u32 = arg(&args, "--macs").map_or(1, |s| s.parse().expect("--macs"));
    let load_all = args.iter().any(|a| a == "--load-all");
    let cpus = std::thread::available_parallelism().map_or(1, |c| c.get());
    // What this bench does to the CPUs no worker uses; whether they were idle is not checked
    // (the per-worker CPU column shows what each worker got).
    let idle = if load_all {
        "the other CPUs spinning"
    } else {
        "nothing started on the other CPUs (idle not checked: see CPU per worker)"
    };
    println!(
        "worker scaling, in memory: 64 B frames, L2 to {macs} static MACs, {cpus} CPUs, {idle}"
    );
    println!("| workers | Mframes/s | vs first | CPU (cores) | CPU per worker (cores) |");
    println!("|---:|---:|---:|---:|---|");
    let mut first = None;
    let mut short = Vec::new();
    for n in workers {
        let (fps, per_worker) = run(n, secs, macs.max(1), load_all);
        let base = *first.get_or_insert(fps);
        let cpu: f64 = per_worker.iter().sum();
        let each: Vec<String> = per_worker.iter().map(|c| format!("{c:.2}")).collect();
        let low = per_worker.iter().filter(|&&c| c < 0.9).count();
        let mark = if low > 0 { " (!)" } else { "" };
        println!(
            "| {n} | {:.2} | {:.2}x | {cpu:.2} | {}{mark} |",
            fps / 1e6,
            fps / base,
            each.join(" ")
        );
        if low > 0 {
            short.push(format!(
                "{n}-worker row: {low} of them under 0.90 of a core{}",
                if n > cpus {
                    " (more workers than CPUs)"
                } else {
                    " (other processes on their cores?)"
                }
            ));
        }
    }
    if !short.is_empty() {
        println!();
        println!(
            "(!) WARNING: a worker got under 90% of a core, so the row's frames/s and ratio \
             are lower than the workers can do: {}",
            short.join("; ")
        );
    }
}
