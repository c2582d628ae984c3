//! End-to-end port churn (root; an explicit skip otherwise): ports whose netdev goes away, goes
//! down, comes back or changes MTU, and 200 containers on AF_XDP ports with default settings.
//! The daemon is never told about any of it: it follows link events and fd errors by itself.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::netns::*;

/// CPU ticks (utime + stime, 1/100 s) of the daemon's worker thread.
fn worker_ticks(pid: u32) -> u64 {
    let mut total = 0;
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).expect("tasks") {
        let stat = std::fs::read_to_string(t.unwrap().path().join("stat")).unwrap_or_default();
        let Some((comm, rest)) = stat.split_once(") ") else {
            continue;
        };
        if comm.ends_with("(uvs-worker") {
            let f: Vec<u64> = rest
                .split_whitespace()
                .map(|x| x.parse().unwrap_or(0))
                .collect();
            // After "pid (comm) ": state is field 0, utime field 11, stime field 12.
            total += f[11] + f[12];
        }
    }
    total
}

/// Percent of one core the worker used over `secs` seconds.
fn worker_cpu_percent(pid: u32, secs: u64) -> f64 {
    let t0 = worker_ticks(pid);
    let start = Instant::now();
    std::thread::sleep(Duration::from_secs(secs));
    let ticks = worker_ticks(pid) - t0;
    ticks as f64 / start.elapsed().as_secs_f64()
}

/// The worker's frames in use.
fn frames_in_use(d: &Daemon) -> u64 {
    d.json(&["stats"])["worker"]["frames_in_use"]
        .as_u64()
        .expect("frames_in_use")
}

#[test]
fn tap_namespace_deleted_goes_gone_and_worker_idles() {
    if !root_or_skip("tap_namespace_deleted_goes_gone_and_worker_idles") {
        return;
    }
    let p = prefix("ct");
    let n = |s: &str| format!("{p}{s}");
    let mut t = Topology::default();
    let d = Daemon::start(&p, &[]);
    d.ctl(&["add-br", "br0"]);
    member(&mut t, &d, &p, "br0", "a", "afxdp", "10.77.1.1/24");
    member(&mut t, &d, &p, "br0", "b", "afxdp", "10.77.1.2/24");
    member(&mut t, &d, &p, "br0", "c", "tap", "10.77.1.3/24");
    assert!(ping(&n("a"), "10.77.1.3", 2), "a -> tap container");
    assert_eq!(d.port_show(&n("pc"))["state"], "up");

    sh(&["ip", "netns", "del", &n("c")]);
    // The next container of that name gets a new MAC: a's neighbour cache must not keep the old.
    sh(&["ip", "-n", &n("a"), "neigh", "flush", "all"]);
    let t0 = Instant::now();
    d.wait_state(&n("pc"), "gone", 10);
    eprintln!("tap gone after {:?}", t0.elapsed());
    let show = d.ctl(&["show"]);
    assert!(show.contains("state=gone"), "{show}");
    // The worker does not spin on the dead fd.
    let cpu = worker_cpu_percent(d.child.id(), 2);
    eprintln!("worker cpu with a gone TAP: {cpu:.1}%");
    assert!(cpu < 5.0, "worker uses {cpu:.1}% of a core");
    // The other ports of the bridge still forward.
    assert!(ping(&n("a"), "10.77.1.2", 3), "a -> b after the TAP went");
    let stats = d.json(&["stats"]);
    assert_eq!(stats["ports"][n("pc")]["state"], "gone");
    let text = d.ctl(&["stats"]);
    assert!(text.contains("state gone, frames 0"), "{text}");
    // add-port of the same name replaces the gone port.
    t.netns(&n("c"));
    d.ctl(&["add-port", "br0", &n("pc"), "type=tap"]);
    t.adopt(&n("c"), &n("pc"), "10.77.1.3/24");
    assert_eq!(d.port_show(&n("pc"))["state"], "up");
    assert!(ping(&n("a"), "10.77.1.3", 2), "a -> new tap container");

    // Gone again; this time a persistent TAP of that name is made in uvs's namespace (as an
    // orchestrator would, to set its owner): the port attaches it by itself.
    sh(&["ip", "netns", "del", &n("c")]);
    d.wait_state(&n("pc"), "gone", 10);
    sh(&["ip", "tuntap", "add", &n("pc"), "mode", "tap"]);
    t.links.push(n("pc"));
    d.wait_state(&n("pc"), "up", 10);
    assert!(
        d.port_show(&n("pc"))["details"]
            .as_str()
            .unwrap()
            .contains("attached")
    );
    t.netns(&n("c"));
    t.adopt(&n("c"), &n("pc"), "10.77.1.3/24");
    sh(&["ip", "-n", &n("a"), "neigh", "flush", "all"]);
    assert!(
        ping(&n("a"), "10.77.1.3", 2),
        "a -> container on the attached TAP"
    );
}

#[test]
fn afxdp_veth_gone_reclaims_frames_and_reattaches() {
    if !root_or_skip("afxdp_veth_gone_reclaims_frames_and_reattaches") {
        return;
    }
    let p = prefix("cx");
    let n = |s: &str| format!("{p}{s}");
    let mut t = Topology::default();
    let d = Daemon::start(&p, &[]);
    d.ctl(&["add-br", "br0"]);
    member(&mut t, &d, &p, "br0", "a", "afxdp", "10.77.2.1/24");
    member(&mut t, &d, &p, "br0", "b", "afxdp", "10.77.2.2/24");
    assert!(ping(&n("a"), "10.77.2.2", 2), "a -> b");
    let held = d.port_show(&n("pb"))["frames"].as_u64().unwrap();
    let in_use = frames_in_use(&d);
    assert!(held > 0, "an open AF_XDP port holds frames");

    sh(&["ip", "netns", "del", &n("b")]);
    // The restarted container has a new MAC: a's neighbour cache must not keep the old one.
    sh(&["ip", "-n", &n("a"), "neigh", "flush", "all"]);
    d.wait_state(&n("pb"), "gone", 10);
    assert_eq!(d.port_show(&n("pb"))["frames"], 0);
    // The port is `gone` at once; its socket is released on the port thread (xsk_release
    // waits for an RCU grace period, longer on a loaded machine) and only then are its
    // frames reclaimed: wait for that, bounded.
    let reclaimed = eventually(10, || frames_in_use(&d) + held / 2 <= in_use);
    let after = frames_in_use(&d);
    eprintln!("frames in use: {in_use} with b, {after} after b's veth went ({held} held by b)");
    assert!(
        reclaimed,
        "frames not reclaimed in 10 s: {in_use} -> {after}"
    );
    let cpu = worker_cpu_percent(d.child.id(), 2);
    eprintln!("worker cpu with a gone AF_XDP port: {cpu:.1}%");
    assert!(cpu < 5.0, "worker uses {cpu:.1}% of a core");

    // The container restarts: a new veth pair with the same name. No ctl command.
    t.container(&n("b"), &n("pb"), "10.77.2.2/24");
    d.wait_state(&n("pb"), "up", 10);
    assert!(ping(&n("a"), "10.77.2.2", 3), "a -> restarted b");
    assert_eq!(d.port_show(&n("pb"))["id"], 1, "the port keeps its id");

    // The port whose socket registered the shared UMEM goes too: b keeps forwarding on the
    // UMEM its own sockets share, and a's new veth re-attaches to it.
    sh(&["ip", "netns", "del", &n("a")]);
    d.wait_state(&n("pa"), "gone", 10);
    t.container(&n("a"), &n("pa"), "10.77.2.1/24");
    d.wait_state(&n("pa"), "up", 10);
    sh(&["ip", "-n", &n("b"), "neigh", "flush", "all"]);
    assert!(ping(&n("b"), "10.77.2.1", 3), "b -> restarted a");
}

#[test]
fn afxdp_link_down_up_and_mtu_follow_the_netdev() {
    if !root_or_skip("afxdp_link_down_up_and_mtu_follow_the_netdev") {
        return;
    }
    let p = prefix("cd");
    let n = |s: &str| format!("{p}{s}");
    let mut t = Topology::default();
    let d = Daemon::start(&p, &[]);
    d.ctl(&["add-br", "br0"]);
    member(&mut t, &d, &p, "br0", "a", "afxdp", "10.77.3.1/24");
    member(&mut t, &d, &p, "br0", "b", "afxdp", "10.77.3.2/24");
    assert!(ping(&n("a"), "10.77.3.2", 2), "a -> b");

    sh(&["ip", "link", "set", "dev", &n("pb"), "down"]);
    d.wait_state(&n("pb"), "down", 10);
    assert_eq!(d.port_show(&n("pb"))["frames"], 0);
    assert!(d.ctl(&["show"]).contains("state=down"));
    sh(&["ip", "link", "set", "dev", &n("pb"), "up"]);
    d.wait_state(&n("pb"), "up", 10);
    assert!(
        eventually(5, || ping(&n("a"), "10.77.3.2", 1)),
        "a -> b after down/up"
    );

    // MTU: picked up live; one a frame cannot hold takes the port down with the reason.
    sh(&["ip", "link", "set", "dev", &n("pa"), "mtu", "1400"]);
    assert!(
        eventually(2, || d.port_show(&n("pa"))["mtu"] == 1400),
        "mtu not updated:\n{}",
        d.ctl(&["show"])
    );
    assert!(d.ctl(&["show"]).contains("mtu=1400"));
    assert_eq!(d.port_show(&n("pa"))["state"], "up");
    if try_sh(&["ip", "link", "set", "dev", &n("pb"), "mtu", "4000"]) {
        d.wait_state(&n("pb"), "down", 10);
        let reason = d.port_show(&n("pb"))["reason"].to_string();
        assert!(reason.contains("MTU 4000"), "{reason}");
        sh(&["ip", "link", "set", "dev", &n("pb"), "mtu", "1500"]);
        d.wait_state(&n("pb"), "up", 10);
    } else {
        eprintln!("the kernel refused MTU 4000 on a veth with XDP attached; not checked");
    }
    assert!(
        eventually(5, || ping(&n("a"), "10.77.3.2", 1)),
        "a -> b at the end"
    );
}

/// `add-port` of a veth created and set up a moment before, while the switch is busy (as a CNI
/// ADD on a loaded host): the netdev's link events from before the port existed (created
/// down, then set up) were still queued when the port was attached, and the worker, which
/// reads them every 1,024 iterations under load, applied them to the new port: down, then
/// reopened ~20 ms later, losing what the container sent first with no counter (the port
/// flapped in ~45% of such attaches; 5-11 of 80 first pings were lost). The port stays as
/// added, and the container's first ping gets through.
#[test]
fn ports_added_under_load_keep_their_first_frames() {
    if !root_or_skip("ports_added_under_load_keep_their_first_frames") {
        return;
    }
    // Its iperf3 load would be the timing tests' noise (and theirs its).
    let _one = timed_one_at_a_time();
    let p = prefix("cl");
    let n = |s: &str| format!("{p}{s}");
    let mut t = Topology::default();
    let d = Daemon::start(&p, &["--dns-upstream", "off"]);
    d.ctl(&["add-br", "br0"]);
    member(&mut t, &d, &p, "br0", "a", "afpacket", "10.77.6.1/24");
    member(&mut t, &d, &p, "br0", "b", "afpacket", "10.77.6.2/24");
    assert!(ping(&n("a"), "10.77.6.2", 2), "a -> b");
    let (flapped, first_lost) = std::thread::scope(|s| {
        let load = s.spawn(|| iperf3_tcp_streams(&n("b"), &n("a"), "10.77.6.2", 12, 4));
        std::thread::sleep(Duration::from_secs(1));
        let (mut flapped, mut first_lost) = (Vec::new(), 0);
        for i in 0..10 {
            let (ns, host) = (n(&format!("c{i}")), n(&format!("h{i}")));
            t.container(&ns, &host, &format!("10.77.6.{}/24", 10 + i));
            d.ctl(&["add-port", "br0", &host, "type=afpacket"]);
            if !ping(&ns, "10.77.6.2", 1) {
                first_lost += 1;
            }
        }
        // A port that went down and was reopened says so in its reason.
        std::thread::sleep(Duration::from_millis(500));
        for i in 0..10 {
            let host = n(&format!("h{i}"));
            let port = d.port_show(&host);
            if port["state"] != "up" || port["reason"] != "added" {
                flapped.push(format!("{host}: {} ({})", port["state"], port["reason"]));
            }
        }
        let bps = load.join().expect("iperf3 thread");
        eprintln!("load meanwhile: {:.2} Gbit/s", bps / 1e9);
        (flapped, first_lost)
    });
    eprintln!("first pings lost: {first_lost} of 10; ports that went down: {flapped:?}");
    assert!(
        flapped.is_empty(),
        "ports went down after add-port: {flapped:?}"
    );
    assert!(first_lost <= 1, "{first_lost} of 10 first pings lost");
}

/// `MemAvailable` from /proc/meminfo, KiB.
fn mem_available_kib() -> u64 {
    let m = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    m.lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Run `f` over `items` on `threads` threads.
fn parallel<T: Sync>(items: &[T], threads: usize, f: impl Fn(&T) + Sync) {
    let chunk = items.len().div_ceil(threads).max(1);
    std::thread::scope(|s| {
        for part in items.chunks(chunk) {
            let f = &f;
            s.spawn(move || part.iter().for_each(f));
        }
    });
}

/// `ip [-n NS] -batch -` with `lines` on stdin.
fn ip_batch(ns: Option<&str>, lines: &str) {
    use std::io::Write;
    let mut cmd = std::process::Command::new("ip");
    if let Some(ns) = ns {
        cmd.args(["-n", ns]);
    }
    let mut child = cmd
        .args(["-batch", "-"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("ip -batch");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(lines.as_bytes())
        .unwrap();
    assert!(
        child.wait().unwrap().success(),
        "ip -batch failed:\n{lines}"
    );
}

#[test]
fn two_hundred_afxdp_containers_with_default_settings() {
    if !root_or_skip("two_hundred_afxdp_containers_with_default_settings") {
        return;
    }
    // 200 namespaces and XDP attaches hold the kernel's rtnl lock often: the timing tests of
    // this binary would see it.
    let _one = timed_one_at_a_time();
    const N: usize = 200;
    let start = Instant::now();
    let p = prefix("cm");
    let mut t = Topology::default();
    let d = Daemon::start(&p, &[]);
    d.ctl(&["add-br", "br0", "gateway=10.78.0.1/16"]);
    let ids: Vec<usize> = (0..N).collect();
    let ns = |i: usize| format!("{p}n{i}");
    let host = |i: usize| format!("{p}h{i}");
    let ip = |i: usize| format!("10.78.{}.{}", 1 + i / 200, 2 + i % 200);
    // Everything the Drop guard removes is registered before it is made.
    for &i in &ids {
        t.namespaces.push(ns(i));
        t.links.push(host(i));
    }
    let mut root = String::new();
    for &i in &ids {
        root += &format!("netns add {}\n", ns(i));
    }
    for &i in &ids {
        root += &format!(
            "link add {} numtxqueues 1 numrxqueues 1 type veth peer name eth0 netns {}\nlink set {} up\n",
            host(i),
            ns(i),
            host(i)
        );
    }
    ip_batch(None, &root);
    parallel(&ids, 8, |&i| {
        let lines = format!(
            "link set lo up\nlink set eth0 addrgenmode none\naddr add {}/16 dev eth0\nlink set eth0 up\n",
            ip(i)
        );
        ip_batch(Some(&ns(i)), &lines);
    });
    eprintln!("{N} namespaces and veths in {:?}", start.elapsed());
    let t1 = Instant::now();
    let mem0 = mem_available_kib();
    parallel(&ids, 4, |&i| {
        d.ctl(&["add-port", "br0", &host(i), "type=afxdp"]);
    });
    eprintln!(
        "{N} AF_XDP ports added in {:?}; MemAvailable fell by {} MiB",
        t1.elapsed(),
        mem0.saturating_sub(mem_available_kib()) / 1024
    );
    let show = d.json(&["show"]);
    let ports = show["bridges"][0]["ports"].as_array().unwrap();
    assert_eq!(ports.len(), N);
    assert!(ports.iter().all(|p| p["state"] == "up"), "all up");
    eprintln!("frames: {}", show["worker"]);
    // Every container reaches the gateway (ARP + ICMP answered by the switch).
    let t2 = Instant::now();
    let failed = std::sync::Mutex::new(Vec::new());
    parallel(&ids, 8, |&i| {
        let ok = (0..3).any(|_| {
            try_sh(&[
                "ip",
                "netns",
                "exec",
                &ns(i),
                "ping",
                "-c",
                "1",
                "-W",
                "2",
                "10.78.0.1",
            ])
        });
        if !ok {
            failed.lock().unwrap().push(i);
        }
    });
    eprintln!("{N} containers pinged the gateway in {:?}", t2.elapsed());
    let failed = failed.into_inner().unwrap();
    assert!(failed.is_empty(), "unreachable: {failed:?}");
    // 200 idle ports: the worker sleeps.
    let cpu = worker_cpu_percent(d.child.id(), 2);
    eprintln!("worker cpu with {N} idle AF_XDP ports: {cpu:.1}%");
    assert!(cpu < 10.0, "worker uses {cpu:.1}% of a core");
    // Two containers reach each other through the switch.
    assert!(ping(&ns(0), &ip(N - 1), 1), "first -> last container");
    let stats = d.json(&["stats"]);
    let drops = stats["ports"]
        .as_object()
        .unwrap()
        .values()
        .filter_map(|p| p["drops"]["no-buffer"].as_u64())
        .sum::<u64>();
    let held: u64 = stats["ports"]
        .as_object()
        .unwrap()
        .values()
        .filter_map(|p| p["frames"].as_u64())
        .sum();
    assert_eq!(
        drops, 0,
        "no-buffer drops; ports hold {held}: {}",
        stats["worker"]
    );
    // One more port beyond the budget would be refused with the numbers, never starve others:
    // the budget still has room for a few, and what is committed is what 200 ports need.
    let budget = &stats["worker"]["budget"];
    assert!(
        budget["committed"].as_u64().unwrap() >= (N as u64) * 128,
        "{budget}"
    );
    eprintln!("total {:?}", start.elapsed());
}

#[test]
fn small_frame_region_refuses_the_port_it_cannot_serve() {
    if !root_or_skip("small_frame_region_refuses_the_port_it_cannot_serve") {
        return;
    }
    let p = prefix("cb");
    let n = |s: &str| format!("{p}{s}");
    let mut t = Topology::default();
    // 512 frames: 64 in reserve, 448 to commit; a one-queue veth needs 128.
    let d = Daemon::start(&p, &["--frames", "512"]);
    d.ctl(&["add-br", "br0"]);
    for (i, c) in ["a", "b", "c"].iter().enumerate() {
        let ip = format!("10.77.4.{}/24", i + 1);
        member(&mut t, &d, &p, "br0", c, "afxdp", &ip);
    }
    t.container(&n("d"), &n("pd"), "10.77.4.4/24");
    let out = d.ctl_raw(&["add-port", "br0", &n("pd"), "type=afxdp"]);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "the 4th port was accepted");
    // 64 are free unless an admitted port is borrowing for a burst it just had (IPv6 router
    // solicitations of the new veths can be enough): then fewer, and the message says so.
    assert!(
        err.contains("needs 128 frames")
            && err.contains("384 committed to other ports")
            && (err.contains("only 64 of 512") || !err.contains(", 0 lent to busy ports")),
        "{err}"
    );
    // The refusal comes after the device was opened off the worker: it was released again.
    let link = sh(&["ip", "-d", "link", "show", &n("pd")]);
    assert!(!link.contains("xdp"), "XDP program left behind: {link}");
    assert!(!d.ctl(&["show"]).contains(&n("pd")));
    // The admitted ports are not starved.
    assert!(ping(&n("a"), "10.77.4.2", 3), "a -> b");
    assert!(ping(&n("c"), "10.77.4.1", 3), "c -> a");
    let stats = d.json(&["stats"]);
    let w = &stats["worker"];
    assert_eq!(w["budget"]["committed"], 384, "{w}");
    assert!(w["frames_free"].as_u64().unwrap() >= 64, "{w}");
    assert!(d.ctl(&["show"]).contains("frames 512"));
    // A burst makes c's socket borrow the last uncommitted frames (for up to 2 s): the other
    // ports must still flood, i.e. a can still resolve b. (Until 2026-12-03 the copies' floor was
    // the whole reserve, so with every frame committed or lent no flood copy was made, and this
    // ARP request reached only the bridge's last port.)
    let burst = "import socket\n\
                 s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
                 s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)\n\
                 for _ in range(3000): s.sendto(bytes(64), ('10.77.4.255', 9))\n";
    sh(&["ip", "netns", "exec", &n("c"), "python3", "-c", burst]);
    let budget = d.json(&["stats"])["worker"]["budget"].clone();
    sh(&[
        "ip",
        "netns",
        "exec",
        &n("a"),
        "ip",
        "neigh",
        "flush",
        "all",
    ]);
    assert!(
        ping(&n("a"), "10.77.4.2", 3),
        "a -> b after c's burst (budget then: {budget}); {}",
        d.json(&["stats"])["worker"]
    );
}

/// RTTs (ms) of every reply in `ping` output, and how many requests were sent.
fn ping_rtts(out: &str) -> (Vec<f64>, usize) {
    let rtts = out
        .lines()
        .filter_map(|l| {
            l.split("time=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .collect();
    let sent = out
        .lines()
        .find_map(|l| l.split(" packets transmitted").next()?.parse().ok())
        .unwrap_or(0);
    (rtts, sent)
}

/// Pings over 20 ms (or lost) allowed of 1500 in the two timing tests (see the churn test).
const MAX_SLOW: usize = 45;

/// The two timing tests run one at a time: each one's churn is the other's noise.
/// `add-port` of a device just deleted from uvs: the kernel may still be tearing the old
/// AF_XDP socket down (EBUSY past uvs's own 1 s wait on a loaded machine); retry that, for at
/// most 5 s, and fail on anything else.
fn add_port_retrying_busy(d: &Daemon, dev: &str, kind: &str) {
    let t0 = Instant::now();
    loop {
        let out = d.ctl_raw(&["add-port", "br0", dev, &format!("type={kind}")]);
        if out.status.success() {
            return;
        }
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            err.to_lowercase().contains("busy") && t0.elapsed() < Duration::from_secs(5),
            "add-port {dev} type={kind}: {err}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn timed_one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static ONE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    ONE.lock().unwrap_or_else(|e| e.into_inner())
}

/// 1500 echo requests from namespace `ns` to `ip`, one every 2 ms (3 s), while `busy` runs on
/// another thread until they are done (it is told by its flag); returns what `busy` returns
/// and ping's output.
fn ping_while<B: Send>(
    ns: &str,
    ip: &str,
    busy: impl FnOnce(&AtomicBool) -> B + Send,
) -> (B, std::process::Output) {
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let busy = s.spawn(|| busy(&stop));
        let out = std::process::Command::new("ip")
            .args(["netns", "exec", ns, "timeout", "20", "ping", "-n"])
            .args(["-i", "0.002", "-c", "1500", "-W", "2", ip])
            .output()
            .expect("ping");
        stop.store(true, Ordering::Relaxed);
        (busy.join().expect("busy thread"), out)
    })
}

/// The bound of the two timing tests on `ping_while`'s output: all 1500 sent, at most
/// `MAX_SLOW` over 20 ms and at most `MAX_SLOW` lost; `during` names what went on meanwhile.
fn assert_forwarding_kept_pace(during: &str, out: &std::process::Output) {
    let (rtts, sent) = ping_rtts(&String::from_utf8_lossy(&out.stdout));
    let slow = rtts.iter().filter(|r| **r > 20.0).count();
    let max = rtts.iter().cloned().fold(0.0, f64::max);
    eprintln!(
        "{during}: {sent} pings, {} lost, {slow} over 20 ms, max {max:.2} ms",
        sent - rtts.len()
    );
    assert_eq!(sent, 1500, "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        slow <= MAX_SLOW && rtts.len() + MAX_SLOW >= sent,
        "forwarding stalled {during}: {slow} of {sent} pings over 20 ms, {} lost",
        sent - rtts.len()
    );
}

/// Forwarding between two containers goes on while a client adds and deletes AF_XDP,
/// AF_PACKET and TAP ports on the same bridge in a loop (container churn through uvs-cni): the
/// devices are opened and released off the worker (`worker::open`), so the worker never stops
/// for a BPF load, a bind or a socket close. Afterwards nothing is left: no port, no TAP device,
/// no XDP program, no frame.
#[test]
fn forwarding_continues_during_port_churn() {
    let _one = timed_one_at_a_time();
    if !root_or_skip("forwarding_continues_during_port_churn") {
        return;
    }
    let p = prefix("cq");
    let n = |s: &str| format!("{p}{s}");
    let mut t = Topology::default();
    let d = Daemon::start(&p, &[]);
    d.ctl(&["add-br", "br0"]);
    member(&mut t, &d, &p, "br0", "a", "afxdp", "10.77.5.1/24");
    member(&mut t, &d, &p, "br0", "b", "afxdp", "10.77.5.2/24");
    // Churn ports: two veths left in the root namespace, and a TAP uvs creates each time.
    let churn = [(n("x"), "afxdp"), (n("k"), "afpacket"), (n("t"), "tap")];
    for (dev, _) in &churn[..2] {
        sh(&[
            "ip",
            "link",
            "add",
            dev,
            "type",
            "veth",
            "peer",
            "name",
            &format!("{dev}q"),
        ]);
        t.links.push(dev.clone());
        sh(&["ip", "link", "set", dev, "up"]);
        sh(&["ip", "link", "set", &format!("{dev}q"), "up"]);
    }
    assert!(ping(&n("a"), "10.77.5.2", 3), "a -> b before the churn");
    let in_use = frames_in_use(&d);

    let (ops, out) = ping_while(&n("a"), "10.77.5.2", |stop| {
        let mut ops = 0u32;
        while !stop.load(Ordering::Relaxed) {
            for (dev, kind) in &churn {
                add_port_retrying_busy(&d, dev, kind);
                d.ctl(&["del-port", dev]);
                ops += 2;
            }
        }
        ops
    });
    eprintln!("churn: {ops} add/del");
    // The churn really ran through the whole ping (each add+del cycle takes 5-60 ms).
    assert!(ops >= 30, "only {ops} churn operations");
    // The bound: a worker that opens and closes ports itself stops for 5-60 ms per operation
    // (XDP load and bind 30-55 ms, socket or TAP close 5-40 ms; measured with
    // benches/port_churn.sh), so at ~50 operations a second several percent of the pings wait
    // over 20 ms: main's binary (the worker opening ports itself) had 142 of 1500 in this
    // test. Off the worker, a quiet run on this 2-core machine sees none; under load (the
    // other tests of this binary, parallel builds) up to 24 were seen, so the bound is
    // MAX_SLOW (3%), still well under what a stalling worker gives.
    assert_forwarding_kept_pace("during churn", &out);

    // Nothing left behind: no churn port, no TAP, no XDP program, every frame back.
    let show = d.ctl(&["show"]);
    for (dev, _) in &churn {
        assert!(!show.contains(dev.as_str()), "{dev} still in show:\n{show}");
    }
    assert!(!try_sh(&["ip", "link", "show", &n("t")]), "TAP left behind");
    for (dev, _) in &churn[..2] {
        let link = sh(&["ip", "-d", "link", "show", dev]);
        assert!(!link.contains("xdp"), "XDP program left on {dev}: {link}");
    }
    assert!(
        eventually(5, || frames_in_use(&d) <= in_use),
        "frames in use {} > {in_use} before the churn",
        frames_in_use(&d)
    );
    assert!(ping(&n("a"), "10.77.5.2", 3), "a -> b after the churn");
}

/// The port lifecycle closes and reopens devices off the worker too: while a third port's veth
/// goes down and up in a loop (each time uvs closes its sockets and XDP program, then opens
/// them again by itself), forwarding between two other containers goes on. Same bound and
/// reasoning as `forwarding_continues_during_port_churn`.
#[test]
fn forwarding_continues_while_a_port_flaps() {
    let _one = timed_one_at_a_time();
    if !root_or_skip("forwarding_continues_while_a_port_flaps") {
        return;
    }
    let p = prefix("cf");
    let n = |s: &str| format!("{p}{s}");
    let mut t = Topology::default();
    let d = Daemon::start(&p, &[]);
    d.ctl(&["add-br", "br0"]);
    member(&mut t, &d, &p, "br0", "a", "afxdp", "10.77.6.1/24");
    member(&mut t, &d, &p, "br0", "b", "afxdp", "10.77.6.2/24");
    member(&mut t, &d, &p, "br0", "c", "afxdp", "10.77.6.3/24");
    assert!(ping(&n("a"), "10.77.6.2", 3), "a -> b before");
    let (flaps, out) = ping_while(&n("a"), "10.77.6.2", |stop| {
        let mut flaps = 0u32;
        while !stop.load(Ordering::Relaxed) {
            sh(&["ip", "link", "set", "dev", &n("pc"), "down"]);
            std::thread::sleep(Duration::from_millis(30));
            sh(&["ip", "link", "set", "dev", &n("pc"), "up"]);
            std::thread::sleep(Duration::from_millis(70));
            flaps += 1;
        }
        flaps
    });
    eprintln!("flaps: {flaps} down/up");
    assert!(flaps >= 10, "only {flaps} flaps");
    assert_forwarding_kept_pace("while a port flapped", &out);
    // The flapping port is reattached and forwards.
    d.wait_state(&n("pc"), "up", 10);
    assert!(
        eventually(5, || ping(&n("c"), "10.77.6.1", 1)),
        "c -> a after the flaps:\n{}",
        d.ctl(&["show"])
    );
}
