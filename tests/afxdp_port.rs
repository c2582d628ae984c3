//! End-to-end test of AF_XDP ports (needs root): two namespaces, each behind a veth pair whose
//! root-namespace ends are AF_XDP ports on one shared UMEM; a loop moves descriptors between the
//! two ports and `ping` must cross it (ARP and ICMP both ways). Afterwards no XDP program may be
//! left attached and every frame must be back in the pool.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use uvs::packet::{Desc, Frames};
use uvs::port::Port;
use uvs::port::afxdp::{AfxdpError, AfxdpOptions, AfxdpPort, XdpMode};

fn sh(args: &[&str]) -> std::process::Output {
    Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

fn run(args: &[&str]) {
    let o = sh(args);
    assert!(
        o.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Namespaces and links created by this test; removed on drop, by name.
struct Topo {
    p: String,
}

impl Topo {
    fn a(&self) -> String {
        format!("{}A", self.p)
    }
    fn b(&self) -> String {
        format!("{}B", self.p)
    }
    fn ns(&self, i: u8) -> String {
        format!("{}n{i}", self.p)
    }

    /// `tag` keeps the names of tests running in parallel apart.
    fn new(tag: char) -> Topo {
        let t = Topo {
            p: format!("axt{}{tag}", std::process::id() % 100_000),
        };
        for (end, i, ip) in [(t.a(), 1, "192.0.2.1/24"), (t.b(), 2, "192.0.2.2/24")] {
            let ns = t.ns(i);
            let peer = format!("{end}p");
            run(&["ip", "netns", "add", &ns]);
            run(&[
                "ip",
                "link",
                "add",
                &end,
                "numtxqueues",
                "2",
                "numrxqueues",
                "2",
                "type",
                "veth",
                "peer",
                "name",
                &peer,
                "netns",
                &ns,
                "numtxqueues",
                "2",
                "numrxqueues",
                "2",
            ]);
            run(&[
                "ip", "netns", "exec", &ns, "ip", "addr", "add", ip, "dev", &peer,
            ]);
            run(&["ip", "netns", "exec", &ns, "ip", "link", "set", &peer, "up"]);
            run(&["ip", "netns", "exec", &ns, "ip", "link", "set", "lo", "up"]);
            run(&["ip", "link", "set", &end, "up"]);
            // Steer the namespace end's sends from CPU 1 to its tx queue 1, which veth delivers
            // on rx queue 1 of our end: the ping below runs on CPU 1, so queue 1 gets traffic.
            if two_cpus() {
                for (q, mask) in [(0, "1"), (1, "2")] {
                    let f = format!("/sys/class/net/{peer}/queues/tx-{q}/xps_cpus");
                    run(&[
                        "ip",
                        "netns",
                        "exec",
                        &ns,
                        "sh",
                        "-c",
                        &format!("echo {mask} > {f}"),
                    ]);
                }
            }
        }
        t
    }
}

impl Drop for Topo {
    fn drop(&mut self) {
        for l in [self.a(), self.b()] {
            let _ = sh(&["ip", "link", "del", &l]);
        }
        for i in [1, 2] {
            let _ = sh(&["ip", "netns", "del", &self.ns(i)]);
        }
    }
}

fn two_cpus() -> bool {
    std::thread::available_parallelism().is_ok_and(|n| n.get() >= 2)
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Move everything received on `from` to `to`.
fn forward(
    frames: &mut Frames,
    from: &mut AfxdpPort,
    to: &mut AfxdpPort,
    buf: &mut Vec<Desc>,
) -> usize {
    let n = from.rx_burst(frames, buf, 64);
    if n > 0 {
        let r = to.tx_burst(frames, buf);
        assert_eq!(r.sent + r.dropped, n as u32);
    }
    n
}

#[test]
fn afxdp_ping_across_two_ports_auto() {
    ping_across_two_ports(XdpMode::Auto, 'a');
}

#[test]
fn afxdp_ping_across_two_ports_generic() {
    ping_across_two_ports(XdpMode::Generic, 'g');
}

/// Run `ping ARGS` in namespace 1, on CPU 1, while forwarding between the two ports (bounded to
/// 8 s). Returns (ping succeeded, frames forwarded A->B, frames forwarded B->A).
fn ping_through(
    topo: &Topo,
    frames: &mut Frames,
    pa: &mut AfxdpPort,
    pb: &mut AfxdpPort,
    args: &[&str],
) -> (bool, usize, usize) {
    let cpu = if two_cpus() { "1" } else { "0" };
    let mut ping = Command::new("taskset")
        .args(["-c", cpu, "ip", "netns", "exec", &topo.ns(1), "ping"])
        .args(args)
        .arg("192.0.2.2")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut buf = Vec::with_capacity(64);
    let (mut ab, mut ba) = (0, 0);
    let deadline = Instant::now() + Duration::from_secs(8);
    let status = loop {
        ab += forward(frames, pa, pb, &mut buf);
        ba += forward(frames, pb, pa, &mut buf);
        pa.service(frames);
        pb.service(frames);
        if let Some(st) = ping.try_wait().unwrap() {
            break Some(st);
        }
        if Instant::now() > deadline {
            let _ = ping.kill();
            break None;
        }
    };
    let out = ping.wait_with_output().unwrap();
    println!("{}", String::from_utf8_lossy(&out.stdout));
    println!(
        "forwarded A->B {ab}, B->A {ba}; A {:?}; B {:?}",
        pa.stats(),
        pb.stats()
    );
    (status.is_some_and(|s| s.success()), ab, ba)
}

fn ping_across_two_ports(mode: XdpMode, tag: char) {
    if !is_root() {
        println!("SKIP: needs root");
        return;
    }
    let topo = Topo::new(tag);
    let mut frames = Frames::new(16384).unwrap();
    let opts = AfxdpOptions {
        mode,
        ..AfxdpOptions::default()
    };
    let mut pa = AfxdpPort::open(&topo.a(), 1, &mut frames, None, &opts).unwrap();
    let mut pb = AfxdpPort::open(&topo.b(), 2, &mut frames, Some(pa.umem_fd()), &opts).unwrap();
    println!("A: {}  B: {}", pa.details(), pb.details());
    assert_eq!(pa.queues(), 2);
    assert!(
        pa.details().contains("copy queues=2 mtu=1500"),
        "{}",
        pa.details()
    );
    assert_ne!(pa.xdp_mode(), XdpMode::Auto);
    if mode == XdpMode::Generic {
        assert!(pa.details().starts_with("mode=generic"), "{}", pa.details());
    }
    let mut fds = Vec::new();
    pa.poll_fds(&mut fds);
    pb.poll_fds(&mut fds);
    assert_eq!(fds.len(), 4);

    let (ok, ab, ba) = ping_through(
        &topo,
        &mut frames,
        &mut pa,
        &mut pb,
        &["-c3", "-i0.3", "-W1"],
    );
    assert!(ok, "ping across the AF_XDP loop failed");
    assert!(ab >= 4 && ba >= 4, "ARP + 3 echo each way: {ab} {ba}");
    let (mut qa, mut qb) = (Vec::new(), Vec::new());
    pa.rx_per_queue(&mut qa);
    pb.rx_per_queue(&mut qb);
    println!("rx per queue: A {qa:?} B {qb:?}");
    // Generic XDP on veth sees every packet as rx queue 0 (see the afxdp module doc).
    if two_cpus() && pa.xdp_mode() == XdpMode::Native {
        assert!(qa[1] > 0, "nothing received on queue 1 of A: {qa:?}");
    }

    // Bursts: a preloaded flood of 1000-byte pings (bursts above the 32 descriptors one copy-mode
    // sendto sends); afterwards every transmitted frame must come back by the completion ring.
    let flood = ["-f", "-l64", "-c3000", "-s1000", "-q", "-W1"];
    let (_, fab, fba) = ping_through(&topo, &mut frames, &mut pa, &mut pb, &flood);
    assert!(
        fab >= 2700 && fba >= 2700,
        "flood forwarded A->B {fab}, B->A {fba}"
    );
    let deadline = Instant::now() + Duration::from_secs(2);
    while (pa.tx_pending() || pb.tx_pending()) && Instant::now() < deadline {
        pa.service(&mut frames);
        pb.service(&mut frames);
    }
    assert!(
        !pa.tx_pending() && !pb.tx_pending(),
        "completions outstanding"
    );
    // Everything not held in the two ports' rings is free, and what they hold for receiving
    // stays within their budget targets.
    let held = (pa.held() + pb.held()) as usize;
    assert_eq!(frames.free_count(), frames.capacity() - held);
    let targets: u32 = pa.fill_targets().iter().chain(&pb.fill_targets()).sum();
    assert!(held as u32 <= targets, "held {held} > targets {targets}");
    println!(
        "fill targets after the flood: A {:?} B {:?}",
        pa.fill_targets(),
        pb.fill_targets()
    );

    for l in [topo.a(), topo.b()] {
        let o = sh(&["ip", "-d", "link", "show", &l]);
        assert!(
            String::from_utf8_lossy(&o.stdout).contains("xdp"),
            "no XDP program on {l}"
        );
    }
    pb.close(&mut frames);
    pa.close(&mut frames);
    drop(pb);
    drop(pa);
    assert_eq!(frames.free_count(), frames.capacity());
    // Closing the link fd detaches the program, but the kernel frees a BPF link from a
    // workqueue (bpf_link_put defers it): poll for a moment.
    for l in [topo.a(), topo.b()] {
        let t = std::time::Instant::now();
        loop {
            let o = sh(&["ip", "-d", "link", "show", &l]);
            let s = String::from_utf8_lossy(&o.stdout).into_owned();
            assert!(o.status.success());
            if !s.contains("xdp") {
                break;
            }
            assert!(
                t.elapsed() < std::time::Duration::from_secs(3),
                "XDP program still attached to {l}: {s}"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

#[test]
fn afxdp_errors_name_interface_and_step() {
    let mut frames = Frames::new(64).unwrap();
    let e = AfxdpPort::open(
        "axtnosuchdev0",
        1,
        &mut frames,
        None,
        &AfxdpOptions::default(),
    )
    .unwrap_err();
    assert!(matches!(e, AfxdpError::NoDevice { .. }));
    assert_eq!(e.to_string(), "axtnosuchdev0: netdev does not exist");
    let bad = AfxdpOptions {
        ring_size: 1000,
        ..AfxdpOptions::default()
    };
    let e = AfxdpPort::open("lo", 1, &mut frames, None, &bad).unwrap_err();
    assert!(e.to_string().contains("ring_size 1000"), "{e}");
    // lo's MTU (65536) does not fit a frame.
    let e = AfxdpPort::open("lo", 1, &mut frames, None, &AfxdpOptions::default()).unwrap_err();
    assert!(
        matches!(e, AfxdpError::MtuTooLarge { mtu: 65536, .. }),
        "{e}"
    );
    assert!(e.to_string().contains("1792"), "{e}");
    assert_eq!(frames.free_count(), frames.capacity());
}

/// `rx_packets` of the namespace end of `end`'s veth pair.
fn peer_rx_packets(topo: &Topo, ns: u8, end: &str) -> u64 {
    let f = format!("/sys/class/net/{end}p/statistics/rx_packets");
    let o = sh(&["ip", "netns", "exec", &topo.ns(ns), "cat", &f]);
    String::from_utf8_lossy(&o.stdout).trim().parse().unwrap()
}

/// `n` broadcast frames of 60 bytes (an unknown EtherType, which the peer counts and drops).
fn broadcast_frames(frames: &mut Frames, n: usize) -> Vec<Desc> {
    (0..n)
        .map(|i| {
            let mut d = frames.alloc().unwrap();
            d.len = 60;
            let b = frames.data_mut(d);
            b[..6].fill(0xff);
            b[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 1]);
            b[12..14].copy_from_slice(&[0x88, 0xb5]);
            b[14] = i as u8;
            d
        })
        .collect()
}

/// Wait up to 2 s for the peer to count `want` frames.
fn wait_rx(topo: &Topo, end: &str, want: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let got = peer_rx_packets(topo, 1, end);
        if got >= want || Instant::now() > deadline {
            return got;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `tx_queue` leaves the copy-mode doorbell for `tx_kick` (service does not ring it), until 32
/// frames wait; `tx_burst` rings at once. Every frame arrives exactly once.
#[test]
fn afxdp_tx_queue_leaves_the_doorbell_for_tx_kick() {
    if !is_root() {
        println!("SKIP: needs root");
        return;
    }
    let topo = Topo::new('k');
    // Our end sends nothing of its own (IPv6 DAD, MLD), so the peer counts only our frames.
    run(&[
        "sysctl",
        "-qw",
        &format!("net.ipv6.conf.{}.disable_ipv6=1", topo.a()),
    ]);
    let mut frames = Frames::new(4096).unwrap();
    let mut pa =
        AfxdpPort::open(&topo.a(), 1, &mut frames, None, &AfxdpOptions::default()).unwrap();
    assert!(pa.details().contains("copy"), "{}", pa.details());
    let a = topo.a();
    // Let the namespace end's own start-up traffic (IPv6 DAD, router solicitations) pass.
    std::thread::sleep(Duration::from_millis(300));
    let base = peer_rx_packets(&topo, 1, &a);

    let mut batch = broadcast_frames(&mut frames, 5);
    let r = pa.tx_queue(&mut frames, &mut batch);
    assert_eq!((r.sent, r.dropped, r.kick_deferred), (5, 0, true));
    for _ in 0..20 {
        pa.service(&mut frames);
        std::thread::sleep(Duration::from_millis(5));
    }
    // No doorbell yet: nothing was sent.
    assert_eq!(
        peer_rx_packets(&topo, 1, &a),
        base,
        "sent before the doorbell"
    );
    assert!(pa.tx_kick(), "five frames waited");
    assert!(!pa.tx_kick(), "nothing waits after the doorbell");
    assert_eq!(wait_rx(&topo, &a, base + 5), base + 5);

    // 40 frames: the port rings by itself at 32; the rest waits.
    let mut batch = broadcast_frames(&mut frames, 40);
    let r = pa.tx_queue(&mut frames, &mut batch);
    assert_eq!(
        (r.sent, r.kick_deferred),
        (40, false),
        "40 >= 32 rang at once"
    );
    assert_eq!(wait_rx(&topo, &a, base + 45), base + 45);
    let mut batch = broadcast_frames(&mut frames, 3);
    assert!(pa.tx_queue(&mut frames, &mut batch).kick_deferred);
    let mut batch = broadcast_frames(&mut frames, 2);
    let r = pa.tx_burst(&mut frames, &mut batch);
    assert_eq!((r.sent, r.kick_deferred), (2, false), "tx_burst rings");
    assert_eq!(wait_rx(&topo, &a, base + 50), base + 50);
    assert!(!pa.tx_kick());

    let deadline = Instant::now() + Duration::from_secs(2);
    while pa.tx_pending() && Instant::now() < deadline {
        pa.service(&mut frames);
    }
    assert!(!pa.tx_pending(), "completions outstanding");
    pa.close(&mut frames);
    drop(pa);
    assert_eq!(frames.free_count(), frames.capacity());
}
