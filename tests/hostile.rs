//! Hostile tenants, end to end (root; an explicit skip otherwise): each attack runs for a
//! bounded few seconds against a running `uvs run` while victim containers on another port of
//! the same bridge and on another bridge keep pinging; the test prints their loss and max RTT
//! and asserts that they were not hurt.
//!
//! Covered here: MAC flooding (with `mac_limit`), source MACs crafted to collide in the old
//! fixed FDB hash, `fdb-flush` and `del-port` of a large FDB, and the control socket attacks
//! (paths named to the daemon, slow connections, huge names, `uvs ctl | head`), and on a routed
//! picture (gateways, masquerade): neighbour table exhaustion, ARP amplification, conntrack/NAT
//! exhaustion with `ct-show` of the filled table, and spoofed sources (rp_filter).

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::netns::*;
use serde_json::Value;

/// A victim: `ping -i 0.01` from `ns` to `ip`, started now, read when the attack is over.
struct Victim {
    what: String,
    child: Child,
}

impl Victim {
    fn start(what: &str, ns: &str, ip: &str, secs: u32) -> Victim {
        let count = (secs * 100).to_string();
        let child = Command::new("ip")
            .args([
                "netns", "exec", ns, "ping", "-n", "-q", "-i", "0.01", "-W", "1",
            ])
            .args(["-c", &count, ip])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("ping");
        Victim {
            what: what.to_string(),
            child,
        }
    }

    /// Waits for ping; returns (loss %, max RTT ms) and prints them.
    fn finish(self, attack: &str) -> (f64, f64) {
        let out = self.child.wait_with_output().expect("ping output");
        let text = String::from_utf8_lossy(&out.stdout);
        let loss = text
            .split(',')
            .find(|s| s.contains("packet loss"))
            .and_then(|s| s.trim().split('%').next())
            .and_then(|s| s.parse::<f64>().ok())
            .unwrap_or(100.0);
        let rtt = |i: usize| {
            text.lines()
                .find(|l| l.starts_with("rtt"))
                .and_then(|l| l.split('=').nth(1))
                .and_then(|v| v.trim().split('/').nth(i))
                .and_then(|s| s.parse::<f64>().ok())
                .unwrap_or(f64::INFINITY)
        };
        let (avg, max) = (rtt(1), rtt(2));
        println!(
            "{attack}: victim {}: loss {loss}%, avg RTT {avg:.3} ms, max RTT {max:.2} ms",
            self.what
        );
        (loss, max)
    }
}

/// Sends Ethernet frames on `dev` inside namespace `ns` from a thread that joins the namespace.
/// `frames` is called with the frame number and fills a 60-byte buffer; at most `pps` frames a
/// second for `secs` seconds (`pps` 0: as fast as possible). Returns the frames sent.
fn blast(
    ns: &str,
    dev: &str,
    pps: u64,
    secs: f64,
    frames: impl Fn(u64, &mut [u8; 60]) + Send + 'static,
) -> std::thread::JoinHandle<u64> {
    let (ns, dev) = (ns.to_string(), dev.to_string());
    std::thread::spawn(move || {
        let nsf = std::fs::File::open(format!("/run/netns/{ns}")).expect("netns file");
        use std::os::fd::AsRawFd;
        // SAFETY: setns on this thread with a namespace fd we hold open; it only changes this
        // thread's network namespace, which ends with the thread.
        let rc = unsafe { libc::setns(nsf.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns");
        let name = std::ffi::CString::new(dev).unwrap();
        // SAFETY: a NUL-terminated name.
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
        assert!(ifindex != 0, "no device in {ns}");
        // SAFETY: plain socket creation; the fd is closed below.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
        assert!(fd >= 0, "AF_PACKET socket");
        // SAFETY: sockaddr_ll is plain data; all-zero is a valid start.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_ifindex = ifindex as i32;
        addr.sll_halen = 6;
        let start = Instant::now();
        let mut buf = [0u8; 60];
        let mut sent = 0u64;
        while start.elapsed().as_secs_f64() < secs {
            if pps != 0 {
                let due = (start.elapsed().as_secs_f64() * pps as f64) as u64;
                if sent >= due {
                    std::thread::sleep(Duration::from_micros(200));
                    continue;
                }
            }
            frames(sent, &mut buf);
            // SAFETY: buf and addr are valid for the lengths given.
            let n = unsafe {
                libc::sendto(
                    fd,
                    buf.as_ptr().cast(),
                    buf.len(),
                    0,
                    (&addr as *const libc::sockaddr_ll).cast(),
                    std::mem::size_of::<libc::sockaddr_ll>() as u32,
                )
            };
            if n > 0 {
                sent += 1;
            }
        }
        // SAFETY: our fd.
        unsafe { libc::close(fd) };
        sent
    })
}

/// A frame to broadcast from `src` (an IPv4 ethertype, zero payload).
fn frame_from(src: u64, buf: &mut [u8; 60]) {
    buf[..6].copy_from_slice(&[0xff; 6]);
    buf[6..12].copy_from_slice(&src.to_be_bytes()[2..]);
    buf[12] = 0x08;
    buf[13] = 0x00;
}

/// `n` unicast MACs that all share one slot in the FDB hash uvs used before issue 9 (a fixed
/// multiplier over `vlan << 48 | mac`, 16,384 slots for the default 8,192 entries): what an
/// attacker who read that code would send. Found by walking multiples of the inverse.
fn old_hash_collisions(n: usize) -> Vec<u64> {
    const A: u64 = 0x9E37_79B9_7F4A_7C15;
    // A's inverse modulo 2^64 (Newton's iteration).
    let mut inv: u64 = A;
    for _ in 0..6 {
        inv = inv.wrapping_mul(2u64.wrapping_sub(A.wrapping_mul(inv)));
    }
    assert_eq!(A.wrapping_mul(inv), 1);
    let home = 0x1234u64; // any of the 2^14 slots
    let mut out = Vec::with_capacity(n);
    let mut t: u64 = 0;
    while out.len() < n {
        // key * A = home << 50 | t  =>  key = (home << 50 | t) * inv
        let key = ((home << 50) | t).wrapping_mul(inv);
        t += 1;
        // A valid key: occupied bit, VLAN 0, a unicast non-zero MAC.
        if key >> 48 == 0x8000 && key & (1 << 40) == 0 && key & 0xffff_ffff_ffff != 0 {
            out.push(key & 0xffff_ffff_ffff);
        }
    }
    out
}

/// Two victim pairs: c1 <-> c2 on `br0` (the attacker's bridge) and c3 <-> c4 on `br1`.
fn victims(t: &mut Topology, d: &Daemon, n: &dyn Fn(&str) -> String) {
    d.ctl(&["add-br", "br1"]);
    for (br, c, ip) in [
        ("br0", "c1", "10.91.0.11/24"),
        ("br0", "c2", "10.91.0.12/24"),
        ("br1", "c3", "10.92.0.13/24"),
        ("br1", "c4", "10.92.0.14/24"),
    ] {
        attach(t, d, (br, &n(c), &n(&format!("p{c}"))), "afxdp", ip, &[]);
    }
    assert!(ping(&n("c1"), "10.91.0.12", 2), "victims on br0 ping");
    assert!(ping(&n("c3"), "10.92.0.14", 2), "victims on br1 ping");
}

/// What an attack on bridge `br0` starts with: the attack lock (see `one_attack_at_a_time`),
/// the name prefix, a daemon with `br0` (made with `br0_args`) and the victims of `victims`
/// attached. None, after a skip line, without root.
struct Attack {
    _alone: std::sync::MutexGuard<'static, ()>,
    p: String,
    t: Topology,
    d: Daemon,
}

fn attack_on_br0(test: &str, tag: &str, br0_args: &[&str]) -> Option<Attack> {
    if !root_or_skip(test) {
        return None;
    }
    let _alone = one_attack_at_a_time();
    let p = prefix(tag);
    let n = |s: &str| format!("{p}{s}");
    let mut t = Topology::default();
    let d = Daemon::start(&p, &[]);
    let mut args = vec!["add-br", "br0"];
    args.extend_from_slice(br0_args);
    d.ctl(&args);
    victims(&mut t, &d, &n);
    Some(Attack { _alone, p, t, d })
}

fn start_victims(n: &dyn Fn(&str) -> String, secs: u32) -> [Victim; 2] {
    [
        Victim::start("br0 c1->c2", &n("c1"), "10.91.0.12", secs),
        Victim::start("br1 c3->c4", &n("c3"), "10.92.0.14", secs),
    ]
}

/// Victims' loss and max RTT against bounds that separate the failure being guarded against
/// (stalls of seconds: an 11.7 s flush, 18.7 s del-port, 0.73 s unpaged fdb-show; a locked-out
/// socket) from the noise of a loaded 2-core machine (max RTTs of ~300 ms seen in CI while
/// other builds ran). The printed figures are the measurement; these are regression guards.
/// A TCP victim: iperf3 from namespace `client` to `ip` (served in `server`) for `secs`
/// while an attack runs.
fn start_tcp_victim(server: String, client: String, ip: &'static str, secs: u32) -> TcpVictim {
    TcpVictim(std::thread::spawn(move || {
        iperf3_tcp(&server, &client, ip, secs)
    }))
}

struct TcpVictim(std::thread::JoinHandle<f64>);

impl TcpVictim {
    /// Print the victim's throughput and require that TCP kept working (> 1 Mbit/s; the figure
    /// itself depends on the machine's load, so it is printed, not asserted).
    fn check(self, attack: &str) {
        let bps = self.0.join().expect("iperf3 thread");
        println!("{attack}: victim TCP {:.2} Gbit/s", bps / 1e9);
        assert!(bps > 1e6, "{attack}: victim TCP {bps} bit/s");
    }
}

/// The attacks run one at a time (the test harness runs tests in parallel): each victim's
/// figures then measure that attack, not the sum of five on a 2-core machine.
fn one_attack_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static ONE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    ONE.lock().unwrap_or_else(|e| e.into_inner())
}

/// Loss bound for ping victims: a stall of the kind guarded against (a second or more) loses at
/// least 20% of a 5 s, 100/s ping; scheduler noise on a loaded 2-core machine (load average 10,
/// five builds) has cost up to 2.7%, so the bound sits well between the two.
const MAX_LOSS: f64 = 6.0;

fn check(attack: &str, v: [Victim; 2], max_rtt_ms: f64) {
    let max_loss = MAX_LOSS;
    for v in v {
        let (loss, max) = v.finish(attack);
        assert!(loss <= max_loss, "{attack}: loss {loss}% > {max_loss}%");
        assert!(
            max <= max_rtt_ms,
            "{attack}: max RTT {max} ms > {max_rtt_ms} ms"
        );
    }
}

#[test]
fn mac_flood_and_crafted_collisions_spare_the_victims() {
    let Some(Attack {
        _alone,
        p,
        mut t,
        d,
    }) = attack_on_br0(
        "mac_flood_and_crafted_collisions_spare_the_victims",
        "hm",
        &[],
    )
    else {
        return;
    };
    let n = |s: &str| format!("{p}{s}");
    // Attacker a: crafted collisions, no limit. Attacker b: a MAC flood on a limited port.
    member(&mut t, &d, &p, "br0", "a", "afxdp", "10.91.0.1/24");
    attach(
        &mut t,
        &d,
        ("br0", &n("b"), &n("pb")),
        "afxdp",
        "10.91.0.2/24",
        &["mac_limit=32"],
    );
    let t0 = Instant::now();
    let crafted = old_hash_collisions(2000);
    println!(
        "found {} colliding MACs in {:?}",
        crafted.len(),
        t0.elapsed()
    );

    let secs = 3;
    let v = start_victims(&n, secs);
    let tcp = start_tcp_victim(n("c4"), n("c3"), "10.92.0.14", secs);
    let a = blast(&n("a"), "eth0", 7500, secs as f64, move |i, buf| {
        frame_from(crafted[i as usize % crafted.len()], buf)
    });
    let b = blast(&n("b"), "eth0", 7500, secs as f64, |i, buf| {
        frame_from(0x0200_0000_0000 | ((i * 7919) & 0xff_ffff_ffff), buf)
    });
    let (sa, sb) = (a.join().unwrap(), b.join().unwrap());
    println!("attack: {sa} crafted-collision frames, {sb} MAC-flood frames in {secs} s");
    check("mac flood + collisions", v, 1000.0);
    tcp.check("mac flood + collisions");

    let s = d.json(&["stats"]);
    let br0 = &s["bridges"]["br0"];
    println!(
        "br0: fdb_entries {} learned {} fdb_collisions {} mac_limit {}; pb mac_limit_refused {}",
        br0["fdb_entries"],
        br0["learned"],
        br0["fdb_collisions"],
        br0["mac_limit"],
        s["ports"][&n("pb")]["mac_limit_refused"]
    );
    assert!(s["ports"][&n("pb")]["mac_limit_refused"].as_u64().unwrap() > 0);
    let fdb = d.json(&["fdb-show", "br0"]);
    let on_b = fdb
        .as_array()
        .or_else(|| fdb["entries"].as_array())
        .map(|a| a.iter().filter(|e| e["port"] == n("pb")).count())
        .unwrap_or(0);
    assert!(on_b <= 32, "{on_b} MACs learned on a port limited to 32");
    // The crafted MACs no longer collide: (nearly) all of the ones sent were learned.
    let learned_crafted = br0["fdb_entries"].as_u64().unwrap() as usize - on_b;
    assert!(
        learned_crafted >= 1900.min(sa as usize),
        "only {learned_crafted} crafted MACs learned; collisions {}",
        br0["fdb_collisions"]
    );
}

/// A broadcast storm from one container (as fast as it can send): a port's flooded frames
/// (broadcast, multicast, unknown unicast) draw from a per-port budget (default 10,000 a
/// second) and the excess is dropped before it is copied to every port (`flood-limit`). The
/// storm runs twice, first with the budget lifted (`set-port ... flood_rate=off`) as the
/// baseline, then with the default back (`flood_rate=default`), and the victims' figures of
/// both are printed (timings are the machine's; the frame counts are asserted). Found trying
/// uvs as a tenant: a storm from a port without `rate_rx` raised the other tenants' average
/// ping to 3-4 ms.
#[test]
fn broadcast_storm_spares_the_victims() {
    let Some(Attack {
        _alone,
        p,
        mut t,
        d,
    }) = attack_on_br0("broadcast_storm_spares_the_victims", "hb", &[])
    else {
        return;
    };
    let n = |s: &str| format!("{p}{s}");
    member(&mut t, &d, &p, "br0", "a", "afxdp", "10.91.0.1/24");
    let secs = 3;
    let storm = |what: &str| {
        let s0 = d.json(&["stats"]);
        let v = start_victims(&n, secs);
        let a = blast(&n("a"), "eth0", 0, secs as f64, |_, buf| {
            frame_from(0x0200_0000_00aa, buf)
        });
        let sent = a.join().unwrap();
        let s = d.json(&["stats"]);
        let limited =
            drops_of(&s, &n("pa"), "flood-limit") - drops_of(&s0, &n("pa"), "flood-limit");
        let tx = |s: &Value| s["ports"][n("pc1")]["tx_packets"].as_u64().unwrap_or(0);
        let to_c1 = tx(&s) - tx(&s0);
        println!(
            "broadcast storm ({what}): {sent} frames sent, {limited} dropped flood-limit, \
             {to_c1} frames to c1"
        );
        check(&format!("broadcast storm ({what})"), v, 1000.0);
        (sent, limited, to_c1)
    };
    let off = d.json(&["set-port", &n("pa"), "flood_rate=off"]);
    assert_eq!(off["flood_rate"], "off", "{off}");
    let (_, limited, to_c1) = storm("flood_rate=off");
    assert_eq!(limited, 0);
    d.ctl(&["set-port", &n("pa"), "flood_rate=default"]);
    let (sent, limited, to_c1_limited) = storm("default flood_rate");
    // What reached c1: the budget (10,000 a second, bursts of 10,000) over the attack, a
    // second's slack for the clock, and the victims' own pings and ARP.
    let bound = 10_000 * (secs as u64 + 1) + 10_000 + 2_000;
    assert!(
        to_c1_limited <= bound,
        "{to_c1_limited} frames reached c1 (bound {bound}; {to_c1} without the budget)"
    );
    if sent > 100_000 {
        assert!(limited > 0, "the flood budget stopped the storm");
    }
}

/// Many concurrent dumps of a flow table (30 `dump-flows` of 5,000 flows on a bridge with no
/// ports) while victims ping on other bridges: the worker answers control requests for about
/// 2 ms before it forwards a pass, so the victims wait for one dump at a time, not for all of
/// them. (Answered back to back, 30 dumps of 20,000 flows stalled every bridge for 1.7 s and
/// 60 for 2.9 s with loss, in a release build: found trying uvs as a hostile client. The
/// sizes here make the same stall in a debug build, ~40 ms a dump: 1.0 s with 3,000 flows
/// before, 0.15 s after.)
#[test]
fn concurrent_flow_dumps_spare_the_victims() {
    let Some(Attack {
        _alone,
        p,
        t: _t,
        d,
    }) = attack_on_br0("concurrent_flow_dumps_spare_the_victims", "hd", &[])
    else {
        return;
    };
    let n = |s: &str| format!("{p}{s}");
    d.ctl(&["add-br", "fz"]);
    let file = std::env::temp_dir().join(format!("{p}-flows.txt"));
    let flows: String = (0..5_000u32)
        .map(|i| {
            format!(
                "priority={},ip,nw_src=10.{}.{}.{},actions=drop\n",
                i % 60_000 + 1,
                i / 62_500,
                i / 250 % 250,
                i % 250
            )
        })
        .collect();
    std::fs::write(&file, flows).unwrap();
    d.ctl(&["add-flows", "fz", file.to_str().unwrap()]);
    let _ = std::fs::remove_file(&file);
    let secs = 4;
    let v = start_victims(&n, secs);
    std::thread::sleep(Duration::from_millis(300));
    let t0 = Instant::now();
    let dumps: Vec<_> = (0..30)
        .map(|_| {
            let socket = d.socket.clone();
            std::thread::spawn(move || {
                let out = Command::new(env!("CARGO_BIN_EXE_uvs"))
                    .arg("ctl")
                    .arg("--socket")
                    .arg(&socket)
                    .args(["dump-flows", "fz"])
                    .output()
                    .expect("uvs ctl");
                assert!(out.status.success());
                String::from_utf8_lossy(&out.stdout).lines().count()
            })
        })
        .collect();
    for h in dumps {
        assert!(h.join().unwrap() >= 5_000, "a whole dump");
    }
    println!(
        "30 concurrent dumps of 5,000 flows (the control socket takes 32 at once): {:?}",
        t0.elapsed()
    );
    check("concurrent flow dumps", v, 1000.0);
}

#[test]
fn flushing_a_large_fdb_does_not_stall_forwarding() {
    let Some(Attack {
        _alone,
        p,
        mut t,
        d,
    }) = attack_on_br0(
        "flushing_a_large_fdb_does_not_stall_forwarding",
        "hf",
        &["fdb_capacity=200000"],
    )
    else {
        return;
    };
    let n = |s: &str| format!("{p}{s}");
    member(&mut t, &d, &p, "br0", "a", "afxdp", "10.91.0.1/24");
    // Fill the FDB from the attacker's port for up to 4 s.
    let a = blast(&n("a"), "eth0", 0, 4.0, |i, buf| {
        frame_from(0x0200_0000_0000 | (i + 1), buf)
    });
    let sent = a.join().unwrap();
    let entries = || {
        d.json(&["stats"])["bridges"]["br0"]["fdb_entries"]
            .as_u64()
            .unwrap()
    };
    let filled = entries();
    println!("filled br0's FDB with {filled} entries ({sent} frames sent)");
    assert!(filled > 20_000, "only {filled} entries");

    // fdb-show of the whole table: built page by page, sorted off the worker.
    let v = start_victims(&n, 2);
    let t0 = Instant::now();
    let shown = d.ctl(&["fdb-show", "br0"]).lines().count();
    println!("fdb-show of {shown} lines: {:?}", t0.elapsed());
    check("fdb-show", v, 600.0);

    let v = start_victims(&n, 3);
    std::thread::sleep(Duration::from_millis(300));
    let t0 = Instant::now();
    d.ctl(&["fdb-flush", "br0"]);
    let flush = t0.elapsed();
    assert!(entries() < 10, "flushed");
    // Refill, then delete the port that holds them all.
    let a = blast(&n("a"), "eth0", 0, 1.0, |i, buf| {
        frame_from(0x0400_0000_0000 | (i + 1), buf)
    });
    let refilled = a.join().unwrap();
    let before = entries();
    let t0 = Instant::now();
    d.ctl(&["del-port", "br0", &n("pa")]);
    let del = t0.elapsed();
    println!(
        "fdb-flush of {filled} entries: {flush:?} round trip; del-port with {before} entries ({refilled} frames): {del:?}"
    );
    assert!(entries() < 10);
    check("fdb-flush + del-port", v, 1500.0);
}

#[test]
fn control_socket_attacks_fail_and_others_are_served() {
    let Some(Attack {
        _alone,
        p,
        t: _t,
        d,
    }) = attack_on_br0(
        "control_socket_attacks_fail_and_others_are_served",
        "hc",
        &[],
    )
    else {
        return;
    };
    let n = |s: &str| format!("{p}{s}");
    let v = start_victims(&n, 4);
    let call_raw = |method: &str, params: &[&str]| -> Value {
        let mut s = UnixStream::connect(&d.socket).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let req = serde_json::json!({"method": method, "params": params, "id": 1});
        s.write_all(req.to_string().as_bytes()).unwrap();
        let mut out = String::new();
        let mut buf = [0u8; 65536];
        while !out.ends_with('\n') {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(k) => out.push_str(&String::from_utf8_lossy(&buf[..k])),
            }
        }
        serde_json::from_str(&out).unwrap_or(Value::Null)
    };
    // 1. Paths named to the daemon are never opened: a secret file, a FIFO, /dev/zero.
    let dir = std::env::temp_dir().join(format!("{p}-files"));
    let _ = std::fs::create_dir_all(&dir);
    let secret = dir.join("secret");
    std::fs::write(&secret, "TOPSECRET-LINE\n").unwrap();
    let fifo = dir.join("fifo");
    sh(&["mkfifo", fifo.to_str().unwrap()]);
    for path in [
        secret.to_str().unwrap(),
        fifo.to_str().unwrap(),
        "/dev/zero",
    ] {
        let t0 = Instant::now();
        let r = call_raw("add-flows", &["br0", path]);
        let e = r["error"].as_str().unwrap_or_default().to_string();
        println!(
            "add-flows br0 {path} over the socket: {:?}: {e}",
            t0.elapsed()
        );
        assert!(e.starts_with("flow 1:"), "{e}");
        assert!(!e.contains("TOPSECRET"), "{e}");
        assert!(t0.elapsed() < Duration::from_secs(2));
    }
    let _ = std::fs::remove_dir_all(&dir);
    // 2. Huge names come back capped.
    let big = "x".repeat(900_000);
    let r = call_raw("add-br", &[&big]);
    let e = r["error"].as_str().unwrap_or_default();
    println!("900 KB bridge name: a {}-byte error", e.len());
    assert!(!e.is_empty() && e.len() <= 1100, "{} bytes", e.len());
    // 3. 64 slow clients (a byte now and then) do not lock anyone out.
    let slow: Vec<UnixStream> = (0..64)
        .map(|_| {
            let mut s = UnixStream::connect(&d.socket).unwrap();
            let _ = s.write_all(b"{");
            s
        })
        .collect();
    let t0 = Instant::now();
    let out = d.ctl(&["show"]);
    println!("show with 64 slow connections open: {:?}", t0.elapsed());
    assert!(out.contains("br0"));
    assert!(t0.elapsed() < Duration::from_secs(3));
    drop(slow);
    // 4. `uvs ctl ... | head -1`: no panic on the closed pipe.
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "{} ctl --socket {} list-commands | true",
            env!("CARGO_BIN_EXE_uvs"),
            d.socket.display()
        ))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked") && err.trim().is_empty(), "{err}");
    // 5. The client reads add-flows files itself (with its own permissions).
    let f = std::env::temp_dir().join(format!("{p}-flows.txt"));
    std::fs::write(&f, "priority=5,udp,tp_dst=9,actions=drop\n").unwrap();
    let out = d.ctl(&["add-flows", "br0", f.to_str().unwrap()]);
    let _ = std::fs::remove_file(&f);
    assert!(out.contains("added 1"), "{out}");
    check("control socket", v, 1000.0);
}

// ---- Routed attacks: neighbour table, ARP amplification, conntrack/NAT, spoofed sources ----

/// The routed picture: attacker `a` (10.91.0.2) and victim `c1` (10.91.0.11) on `br0`
/// (10.91.0.1/16), victim `c3` (10.92.0.13) on `br1` (10.92.0.1/16), the outside host `x`
/// (10.93.0.20) on `ext` (10.93.0.1/24); both container bridges masquerade out of `ext`.
/// Returns br0's gateway MAC and the attacker's MAC.
fn routed(t: &mut Topology, d: &Daemon, n: &dyn Fn(&str) -> String) -> ([u8; 6], [u8; 6]) {
    d.ctl(&["add-br", "br0", "gateway=10.91.0.1/16"]);
    d.ctl(&["add-br", "br1", "gateway=10.92.0.1/16"]);
    d.ctl(&["add-br", "ext", "gateway=10.93.0.1/24"]);
    for (br, c, ip, gw) in [
        ("br0", "a", "10.91.0.2/16", "10.91.0.1"),
        ("br0", "c1", "10.91.0.11/16", "10.91.0.1"),
        ("br1", "c3", "10.92.0.13/16", "10.92.0.1"),
        ("ext", "x", "10.93.0.20/24", "10.93.0.1"),
    ] {
        attach(t, d, (br, &n(c), &n(&format!("p{c}"))), "afxdp", ip, &[]);
        if c != "x" {
            route_add(&n(c), "default", gw);
        }
    }
    d.ctl(&["nat-add", "masquerade", "src=10.91.0.0/16", "out=ext"]);
    d.ctl(&["nat-add", "masquerade", "src=10.92.0.0/16", "out=ext"]);
    assert!(ping(&n("c1"), "10.93.0.20", 2), "c1 reaches x");
    assert!(ping(&n("c3"), "10.93.0.20", 2), "c3 reaches x");
    assert!(ping(&n("a"), "10.93.0.20", 2), "a reaches x");
    let show = d.json(&["show"]);
    let gw = show["bridges"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["name"] == "br0")
        .and_then(|b| b["gateway_mac"].as_str())
        .expect("br0 gateway MAC")
        .to_string();
    (parse_mac(&gw), parse_mac(&t.mac(&n("a"), "eth0")))
}

fn parse_mac(s: &str) -> [u8; 6] {
    let mut m = [0u8; 6];
    for (i, p) in s.split(':').enumerate().take(6) {
        m[i] = u8::from_str_radix(p, 16).expect("hex");
    }
    m
}

/// Routed victims: c1 (the attacker's bridge, another port) and c3 (another bridge) ping the
/// outside host through the gateways and NAT.
fn start_routed_victims(n: &dyn Fn(&str) -> String, secs: u32) -> [Victim; 2] {
    [
        Victim::start("br0 c1->x (routed, NAT)", &n("c1"), "10.93.0.20", secs),
        Victim::start("br1 c3->x (routed, NAT)", &n("c3"), "10.93.0.20", secs),
    ]
}

/// The routed victims ping for `secs` while attacker `a` sends what `frames` builds (at most
/// `pps` a second; 0: as fast as it can); returns the victims, to check, and the frames sent.
fn routed_attack(
    n: &dyn Fn(&str) -> String,
    pps: u64,
    secs: u32,
    frames: impl Fn(u64, &mut [u8; 60]) + Send + 'static,
) -> ([Victim; 2], u64) {
    let v = start_routed_victims(n, secs);
    let sent = blast(&n("a"), "eth0", pps, secs as f64, frames)
        .join()
        .unwrap();
    (v, sent)
}

/// An IPv4/UDP frame from `src_mac` to `dst_mac` (valid header checksum, UDP checksum 0).
fn udp_frame(buf: &mut [u8; 60], macs: ([u8; 6], [u8; 6]), src: [u8; 4], dst: [u8; 4], sport: u16) {
    buf.fill(0);
    buf[..6].copy_from_slice(&macs.0);
    buf[6..12].copy_from_slice(&macs.1);
    buf[12..14].copy_from_slice(&[0x08, 0x00]);
    buf[14..24].copy_from_slice(&[0x45, 0, 0, 32, 0, 1, 0x40, 0, 64, 17]);
    buf[26..30].copy_from_slice(&src);
    buf[30..34].copy_from_slice(&dst);
    let mut sum = 0u32;
    for i in (14..34).step_by(2) {
        sum += u16::from_be_bytes([buf[i], buf[i + 1]]) as u32;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    buf[24..26].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    buf[34..36].copy_from_slice(&sport.to_be_bytes());
    buf[36..38].copy_from_slice(&9u16.to_be_bytes());
    buf[38..40].copy_from_slice(&12u16.to_be_bytes());
}

/// An ARP request for `target` from `mac`/`ip`, broadcast.
fn arp_request(buf: &mut [u8; 60], mac: [u8; 6], ip: [u8; 4], target: [u8; 4]) {
    buf.fill(0);
    buf[..6].copy_from_slice(&[0xff; 6]);
    buf[6..12].copy_from_slice(&mac);
    buf[12..22].copy_from_slice(&[0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 1]);
    buf[22..28].copy_from_slice(&mac);
    buf[28..32].copy_from_slice(&ip);
    buf[38..42].copy_from_slice(&target);
}

fn drops_of(s: &Value, port: &str, reason: &str) -> u64 {
    s["ports"][port]["drops"][reason].as_u64().unwrap_or(0)
}

#[test]
fn neighbour_and_arp_floods_spare_the_victims() {
    if !root_or_skip("neighbour_and_arp_floods_spare_the_victims") {
        return;
    }
    let _alone = one_attack_at_a_time();
    let p = prefix("hn");
    let n = |s: &str| format!("{p}{s}");
    let mut t = Topology::default();
    let d = Daemon::start(&p, &[]);
    let (gw, amac) = routed(&mut t, &d, &n);
    let secs = 3;

    // 1. Neighbour table exhaustion: ARP requests for the gateway from 65k senders of br0's
    //    /16 and from off-subnet senders, as fast as the attacker can.
    let (v, sent) = routed_attack(&n, 0, secs, move |i, buf| {
        let ip = if i % 4 == 3 {
            [172, 20, (i >> 8) as u8, i as u8]
        } else {
            [10, 91, (i >> 8) as u8 | 1, i as u8]
        };
        let mut mac = amac;
        mac[4..6].copy_from_slice(&(i as u16).to_be_bytes());
        arp_request(buf, mac, ip, [10, 91, 0, 1]);
    });
    let rows = d.json(&["neigh-show"]);
    let rows = rows["neighbours"].as_array().unwrap();
    let on = |b: &str| rows.iter().filter(|r| r["bridge"] == b).count();
    println!(
        "neighbour flood: {sent} ARP requests; neighbours br0 {}, br1 {}, ext {}",
        on("br0"),
        on("br1"),
        on("ext")
    );
    check("neighbour flood", v, 1000.0);
    assert!(on("br0") <= 4096, "br0 bounded");
    assert!(
        !rows
            .iter()
            .any(|r| r["ip"].as_str().unwrap().starts_with("172.20.")),
        "off-subnet senders are not learned"
    );
    // New resolutions on the other bridges still work: forget ext's neighbours and ping again.
    let flushed = d.ctl(&["neigh-flush", "ext"]);
    println!("neigh-flush ext: {}", flushed.trim());
    assert!(ping(&n("c3"), "10.93.0.20", 2), "c3 resolves x again");
    let f = d.ctl(&["neigh-flush", "br0"]);
    assert!(f.contains("flushed"), "{f}");

    // 2. ARP amplification: UDP to 50k unresolved addresses of br1's /16.
    let window = Instant::now();
    let before = d.json(&["stats"])["router"]["arp_requests"]
        .as_u64()
        .unwrap();
    let (v, sent) = routed_attack(&n, 0, secs, move |i, buf| {
        let dst = [10, 92, 1 + (i >> 8) as u8 % 200, i as u8];
        udp_frame(buf, (gw, amac), [10, 91, 0, 2], dst, 4000);
    });
    let s = d.json(&["stats"]);
    // The limiter's time is the span between the two reads, which is longer than the attack.
    let window = window.elapsed().as_secs_f64();
    let requests = s["router"]["arp_requests"].as_u64().unwrap() - before;
    println!(
        "ARP amplification: {sent} packets to unresolved addresses -> {requests} ARP requests \
         into br1 in {secs} s; arp-pending {}, neighbours {}",
        drops_of(&s, &n("pa"), "arp-pending"),
        s["neigh"]
    );
    check("ARP amplification", v, 1000.0);
    // 100 a second per bridge, plus the bucket's burst and retransmissions' share: never one
    // per packet. (Typically 401 in 3 s; one CI run in session 29 counted 502 in 3.02 s, a
    // second burst's worth, against a bound of 502: the bound allows three seconds' more.)
    assert!(
        requests as f64 <= 100.0 * (window + 3.0),
        "{requests} requests for {sent} packets in {window:.2} s"
    );
}

#[test]
fn conntrack_exhaustion_and_spoofing_spare_the_victims() {
    if !root_or_skip("conntrack_exhaustion_and_spoofing_spare_the_victims") {
        return;
    }
    let _alone = one_attack_at_a_time();
    let p = prefix("hk");
    let n = |s: &str| format!("{p}{s}");
    let mut t = Topology::default();
    let d = Daemon::start(&p, &[]);
    let (gw, amac) = routed(&mut t, &d, &n);
    let secs = 3;

    // 1. Conntrack/NAT exhaustion: new UDP flows to x from every source port, as fast as the
    //    attacker can (each one a masqueraded connection).
    let v = start_routed_victims(&n, secs);
    let tcp = start_tcp_victim(n("x"), n("c3"), "10.93.0.20", secs);
    let a = blast(&n("a"), "eth0", 0, secs as f64, move |i, buf| {
        let sport = 1024 + (i % 60000) as u16;
        udp_frame(buf, (gw, amac), [10, 91, 0, 2], [10, 93, 0, 20], sport);
    });
    let sent = a.join().unwrap();
    let s = d.json(&["stats"]);
    let limited = drops_of(&s, &n("pa"), "ct-source-limit");
    let held = d.json(&["ct-show"])["count"].as_u64().unwrap();
    println!(
        "conntrack flood: {sent} new flows; {held} connections held, ct-source-limit drops \
         {limited}"
    );
    check("conntrack flood", v, 1000.0);
    tcp.check("conntrack flood");
    // The attacker's unanswered flows replace each other within its per-source share (16,384,
    // split between workers): the table never holds more of them than that (the victims' own
    // connections are the slack).
    assert!(held <= 16_384 + 100, "{held} connections held");
    // ct-show of the whole table while the victims ping: paged, the worker never stalls.
    let v = start_routed_victims(&n, 2);
    let t0 = Instant::now();
    let shown = d.ctl(&["ct-show"]);
    let last = shown.lines().last().unwrap_or_default().to_string();
    println!(
        "ct-show of {} lines: {:?} ({last})",
        shown.lines().count(),
        t0.elapsed()
    );
    assert!(last.contains("per source"), "{last}");
    check("ct-show", v, 1000.0);

    // 2. Spoofed sources: the attacker sends as c3 (another bridge's address) and as an
    //    address no route leads back to. Nothing is routed; the drops are counted.
    let s0 = d.json(&["stats"]);
    let before = drops_of(&s0, &n("pa"), "rp-filter");
    let rx = |s: &Value| s["ports"][n("pa")]["rx_packets"].as_u64().unwrap_or(0);
    let rx0 = rx(&s0);
    let (v, sent) = routed_attack(&n, 5000, secs, move |i, buf| {
        let src = if i % 2 == 0 {
            [10, 92, 0, 13]
        } else {
            [198, 51, 100, 7]
        };
        udp_frame(buf, (gw, amac), src, [10, 93, 0, 20], 5000);
    });
    let s1 = d.json(&["stats"]);
    let spoofed = drops_of(&s1, &n("pa"), "rp-filter") - before;
    // What uvs received of them: frames the kernel dropped before uvs saw them (rings full
    // while the worker was preempted) never reach the filter.
    let received = rx(&s1) - rx0;
    println!("spoofed sources: {sent} sent, {received} received, {spoofed} dropped by rp_filter");
    check("spoofed sources", v, 1000.0);
    assert!(
        spoofed * 10 >= received * 9 && received * 10 >= sent,
        "{spoofed} of {received} received ({sent} sent) dropped"
    );
    let show = d.ctl(&["set-br", "br0", "rp_filter=loose"]);
    println!("set-br br0 rp_filter=loose: {}", show.trim());
    assert!(d.ctl(&["show"]).contains("rp_filter=loose"));
}
