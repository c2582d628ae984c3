//! End-to-end observation tests in network namespaces (root; an explicit skip otherwise):
//! Debian's Prometheus scrapes `uvs run --metrics` and its query API returns a non-zero packet
//! rate for a port carrying a ping; `uvs ctl capture` files (and a live pipe) are read back by
//! tshark with the expected ICMP packets, directions, translated (NAT) addresses and VXLAN
//! encapsulation; a mirror copies a port's traffic to a third namespace where tshark sees it;
//! `uvs top` renders port rates under tmux; a client stalling every `--metrics` connection does
//! not lock a scrape out.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::netns::*;

/// A background process stopped by PID on drop.
struct Bg(Child);

impl Drop for Bg {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A continuous ping from `ns` to `ip` (at most `secs` seconds).
fn pinging(ns: &str, ip: &str, secs: u32) -> Bg {
    let c = Command::new("ip")
        .args(["netns", "exec", ns, "ping", "-q", "-i", "0.2", "-w"])
        .arg(secs.to_string())
        .arg(ip)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("ping");
    Bg(c)
}

fn have(tool: &str, test: &str) -> bool {
    let ok = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("SKIP {test}: {tool} is not installed (scripts/setup.sh installs it)");
    }
    ok
}

/// Two containers on br0 (AF_XDP), `10.231.N.1` and `.2`; returns (ns1, ns2, port1, port2).
fn two(t: &mut Topology, d: &Daemon, p: &str, net: u8) -> (String, String, String, String) {
    let n = |s: &str| format!("{p}{s}");
    d.ctl(&["add-br", "br0"]);
    let a1 = format!("10.231.{net}.1/24");
    let a2 = format!("10.231.{net}.2/24");
    attach(t, d, ("br0", &n("n1"), &n("p1")), "afxdp", &a1, &[]);
    attach(t, d, ("br0", &n("n2"), &n("p2")), "afxdp", &a2, &[]);
    (n("n1"), n("n2"), n("p1"), n("p2"))
}

/// GET a URL with curl (query parameters URL-encoded); the body.
fn curl_get(url: &str, query: &str) -> String {
    let out = Command::new("curl")
        .args(["-s", "-m", "3", "-G", url, "--data-urlencode", query])
        .output()
        .expect("curl");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A capture whose client went away (started, never read) is stopped after
/// `capture::ABANDONED` (10 s) by itself, not only when the next capture starts: found trying
/// uvs as a new user, the tap kept copying its port's frames (and `uvs_captures` stayed 1).
#[test]
fn an_abandoned_capture_ends_by_itself() {
    let test = "an_abandoned_capture_ends_by_itself";
    if !root_or_skip(test) || !have("curl", test) {
        return;
    }
    let p = prefix("oa");
    let mut t = Topology::default();
    let maddr = format!("127.0.0.1:{}", free_port());
    let d = Daemon::start(&p, &["--metrics", &maddr]);
    let (_n1, _n2, p1, _p2) = two(&mut t, &d, &p, 1);
    let captures = || {
        let body = curl_get(&format!("http://{maddr}/metrics"), "x=1");
        body.lines()
            .find_map(|l| l.strip_prefix("uvs_captures "))
            .map(|v| v.trim().to_string())
    };
    let started = d.ctl(&["capture-start", &p1]);
    assert!(started.starts_with("capture "), "{started}");
    assert_eq!(captures().as_deref(), Some("1"));
    let t0 = std::time::Instant::now();
    assert!(
        eventually(30, || captures().as_deref() == Some("0")),
        "the abandoned capture still runs: uvs_captures {:?}",
        captures()
    );
    assert!(
        t0.elapsed() >= std::time::Duration::from_secs(8),
        "not before it was abandoned"
    );
}

/// A client holding every metrics connection with requests it never finishes (a byte every
/// 100 ms, re-opening each one as it is closed) does not lock a scrape out: every curl of
/// `/metrics` beside it gets 200 within 2 s, the evictions are counted
/// (`uvs_metrics_evicted_total`) and logged at most once a second (found trying uvs as a
/// hostile client: every scrape was answered 503 for as long as it went on).
#[test]
fn stalled_metrics_clients_cannot_lock_out_a_scrape() {
    use std::io::Write as _;
    use std::net::TcpStream;
    let test = "stalled_metrics_clients_cannot_lock_out_a_scrape";
    if !root_or_skip(test) || !have("curl", test) {
        return;
    }
    let p = prefix("ol");
    let maddr = format!("127.0.0.1:{}", free_port());
    let log = std::env::temp_dir().join(format!("uvs-{p}.log"));
    let d = Daemon::start_logged(&p, &["--metrics", &maddr], &log);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (a, s) = (maddr.clone(), stop.clone());
    let attacker = std::thread::spawn(move || {
        let head = b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: ";
        let open = || TcpStream::connect(&a).ok();
        let mut conns: Vec<(Option<TcpStream>, usize)> = (0..64).map(|_| (open(), 0)).collect();
        let mut reopened = 0u64;
        while !s.load(std::sync::atomic::Ordering::SeqCst) {
            for (c, sent) in conns.iter_mut() {
                let alive = c.as_mut().is_some_and(|c| {
                    let b = head.get(*sent).copied().unwrap_or(b'a');
                    c.write_all(&[b]).is_ok()
                });
                *sent += 1;
                if !alive {
                    (*c, *sent) = (open(), 0);
                    reopened += 1;
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        reopened
    });
    std::thread::sleep(Duration::from_millis(500));
    let mut last = String::new();
    for i in 0..10 {
        let t0 = Instant::now();
        let out = Command::new("curl")
            .args(["-s", "-m", "2", "-w", "\n%{http_code}"])
            .arg(format!("http://{maddr}/metrics"))
            .output()
            .expect("curl");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            text.ends_with("# EOF\n\n200"),
            "scrape {i} beside 64 stalled clients, after {:?}: {text}",
            t0.elapsed()
        );
        assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
        last = text;
        std::thread::sleep(Duration::from_millis(300));
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let reopened = attacker.join().unwrap();
    let evicted = last
        .lines()
        .find_map(|l| l.strip_prefix("uvs_metrics_evicted_total "))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    eprintln!("{test}: attacker re-opened {reopened} connections, {evicted} evicted");
    assert!(evicted >= 10, "{evicted} evictions counted:\n{last}");
    drop(d);
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = std::fs::remove_file(&log);
    let lines = text
        .lines()
        .filter(|l| l.contains("unfinished connection(s) to admit new ones"))
        .count();
    // About 5 s of evictions: a line a second at most.
    assert!((1..=8).contains(&lines), "{lines} eviction lines:\n{text}");
}

#[test]
fn prometheus_scrapes_port_rates() {
    let test = "prometheus_scrapes_port_rates";
    if !root_or_skip(test) || !have("prometheus", test) || !have("curl", test) {
        return;
    }
    let p = prefix("om");
    let mut t = Topology::default();
    let mport = free_port();
    let maddr = format!("127.0.0.1:{mport}");
    let d = Daemon::start(&p, &["--metrics", &maddr]);
    let (n1, _n2, p1, p2) = two(&mut t, &d, &p, 1);
    let _ping = pinging(&n1, "10.231.1.2", 60);
    // Our own endpoint first: OpenMetrics text with the port's counters.
    let body = curl_get(&format!("http://{maddr}/metrics"), "x=1");
    assert!(
        body.contains(&format!(
            "uvs_port_rx_packets_total{{port=\"{p1}\",bridge=\"br0\"}}"
        )),
        "{body}"
    );
    assert!(
        body.contains("uvs_build_info") && body.ends_with("# EOF\n"),
        "{body}"
    );
    // The DNS service runs by default: its counters are there too.
    assert!(body.contains("uvs_dns_queries_total "), "{body}");
    // Every worker's loop figures, one series each (the suite runs with 1 and with 2 workers).
    let workers = d.json(&["stats"])["workers"]
        .as_array()
        .map_or(1, |w| w.len());
    for i in 0..workers {
        for name in [
            "uvs_worker_iterations_total",
            "uvs_worker_busy_seconds_total",
        ] {
            assert!(
                body.contains(&format!("{name}{{worker=\"{i}\"}} ")),
                "{name} of worker {i} (of {workers}) missing:\n{body}"
            );
        }
    }

    // A port's state: its device set down, then up again, shows in the next scrapes.
    let up = |v: u8| format!("uvs_port_up{{port=\"{p2}\",bridge=\"br0\"}} {v}");
    assert!(body.contains(&up(1)), "{body}");
    let scrape_until = |want: &str| {
        let t0 = Instant::now();
        loop {
            let b = curl_get(&format!("http://{maddr}/metrics"), "x=1");
            if b.contains(want) {
                return b;
            }
            assert!(t0.elapsed() < Duration::from_secs(10), "no {want} in:\n{b}");
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    assert!(try_sh(&["ip", "link", "set", &p2, "down"]));
    let b = scrape_until(&up(0));
    let down = format!("uvs_port_state{{port=\"{p2}\",bridge=\"br0\",state=\"down\"}} 1");
    assert!(b.contains(&down), "{b}");
    assert!(try_sh(&["ip", "link", "set", &p2, "up"]));
    scrape_until(&up(1));

    let dir = std::env::temp_dir().join(format!("uvs-prom-{p}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("prometheus.yml");
    std::fs::write(
        &cfg,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: uvs\n    static_configs:\n      - targets: ['{maddr}']\n"
        ),
    )
    .unwrap();
    let pport = free_port();
    let prom = Command::new("prometheus")
        .arg(format!("--config.file={}", cfg.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{pport}"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("log")).unwrap())
        .spawn()
        .expect("prometheus");
    let _prom = Bg(prom);
    let api = format!("http://127.0.0.1:{pport}/api/v1/query");
    let q = format!("query=rate(uvs_port_rx_packets_total{{port=\"{p1}\"}}[5s])");
    let t0 = Instant::now();
    let mut last = String::new();
    let rate = loop {
        assert!(
            t0.elapsed() < Duration::from_secs(45),
            "no non-zero rate from Prometheus; last answer: {last}\nlog: {}",
            std::fs::read_to_string(dir.join("log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(500));
        last = curl_get(&api, &q);
        let v: serde_json::Value = serde_json::from_str(&last).unwrap_or_default();
        let r = v["data"]["result"][0]["value"][1]
            .as_str()
            .and_then(|s| s.parse::<f64>().ok())
            .unwrap_or(0.0);
        // The first non-zero rates come from two samples of a window that is still filling.
        if r > 1.0 {
            break r;
        }
    };
    eprintln!("{test}: Prometheus sees {rate:.2} packets/s received on {p1}");
    // A ping every 0.2 s: about 5 requests a second (ARP aside).
    assert!(rate > 1.0 && rate < 50.0, "rate {rate}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `uvs ctl capture ARGS FILE` while `ping` runs; the capture's exit status and stderr.
fn capture_while_pinging(d: &Daemon, args: &[&str], ns: &str, ip: &str) -> String {
    let mut c = Command::new(env!("CARGO_BIN_EXE_uvs"))
        .arg("ctl")
        .arg("--socket")
        .arg(&d.socket)
        .arg("capture")
        .args(args)
        .stderr(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("uvs ctl capture");
    let _ping = pinging(ns, ip, 20);
    let t0 = Instant::now();
    while c.try_wait().unwrap().is_none() {
        if t0.elapsed() > Duration::from_secs(20) {
            let _ = c.kill();
            panic!("capture {args:?} did not finish");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = c.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "capture {args:?}: {err}");
    err
}

/// tshark's fields of every packet in `file`, one line per packet, tab-separated.
fn tshark_fields(file: &std::path::Path, fields: &[&str]) -> String {
    let mut args = vec!["-r", file.to_str().unwrap(), "-T", "fields"];
    for f in fields {
        args.extend(["-e", f]);
    }
    let out = Command::new("tshark").args(&args).output().expect("tshark");
    assert!(
        out.status.success(),
        "tshark: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn capture_icmp_read_by_tshark() {
    let test = "capture_icmp_read_by_tshark";
    if !root_or_skip(test) || !have("tshark", test) {
        return;
    }
    let p = prefix("oc");
    let mut t = Topology::default();
    let d = Daemon::start(&p, &[]);
    let (n1, _n2, p1, _p2) = two(&mut t, &d, &p, 2);
    let file = std::env::temp_dir().join(format!("uvs-cap-{p}.pcapng"));
    let err = capture_while_pinging(
        &d,
        &[
            "--count",
            "6",
            "--filter",
            "icmp",
            &p1,
            file.to_str().unwrap(),
        ],
        &n1,
        "10.231.2.2",
    );
    assert!(err.contains("captured 6 packets"), "{err}");
    let f = ["ip.src", "ip.dst", "icmp.type", "frame.interface_name"];
    let lines = tshark_fields(&file, &f);
    let _ = std::fs::remove_file(&file);
    assert_eq!(lines.lines().count(), 6, "{lines}");
    // p1 receives n1's echo requests and sends it the replies.
    let req = format!("10.231.2.1\t10.231.2.2\t8\t{p1}");
    let rep = format!("10.231.2.2\t10.231.2.1\t0\t{p1}");
    assert!(lines.contains(&req) && lines.contains(&rep), "{lines}");
    assert!(
        lines.lines().all(|l| l == req || l == rep),
        "only ICMP: {lines}"
    );

    // Live: straight into tshark through a pipe, received frames only.
    let sh_cmd = format!(
        "{} ctl --socket {} capture --direction rx --count 3 --filter 'icmp and src host 10.231.2.1' {p1} - | tshark -r - -T fields -e ip.src -e icmp.type",
        env!("CARGO_BIN_EXE_uvs"),
        d.socket.display()
    );
    let child = Command::new("sh")
        .args(["-c", &sh_cmd])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut child = Bg(child);
    let _ping = pinging(&n1, "10.231.2.2", 20);
    let t0 = Instant::now();
    while child.0.try_wait().unwrap().is_none() {
        assert!(t0.elapsed() < Duration::from_secs(20), "live capture hung");
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut out = String::new();
    use std::io::Read;
    child
        .0
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert_eq!(out, "10.231.2.1\t8\n".repeat(3), "live pipe");

    // --duration ends a capture that sees nothing.
    let t0 = Instant::now();
    let out = d.ctl_raw(&["capture", "--duration", "1", "--filter", "port 9", &p1, "-"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    assert!(String::from_utf8_lossy(&out.stderr).contains("captured 0 packets"));

    // Errors name the problem.
    let bad = d.ctl_raw(&["capture", "--filter", "host nowhere", &p1, "-"]);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("nowhere"));
    let bad = d.ctl_raw(&["capture", "nope", "-"]);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("no port named 'nope'"));
}

/// The snaplen in the pcapng header and the daemon's snaplen: one parser for both. An out of
/// range `--snaplen` was clamped by the daemon and replaced by the default in the header, and
/// `--snaplen 10 --snaplen 20` gave a header of 10 and packets of 20 (found trying uvs as a new
/// user). Both are refused now, by the client and by `capture-start`.
#[test]
fn capture_snaplen_is_parsed_once() {
    let test = "capture_snaplen_is_parsed_once";
    if !root_or_skip(test) {
        return;
    }
    let p = prefix("obs");
    let mut t = Topology::default();
    let d = Daemon::start(&p, &[]);
    let (n1, _n2, p1, _p2) = two(&mut t, &d, &p, 7);
    let file = std::env::temp_dir().join(format!("uvs-cap-{p}.pcapng"));
    let f = file.to_str().unwrap();
    for bad in [&["4294967296"][..], &["0"], &["262145"], &["10", "20"]] {
        let mut args = vec!["capture", "--duration", "1"];
        for v in bad {
            args.extend(["--snaplen", v]);
        }
        args.extend([p1.as_str(), f]);
        let out = d.ctl_raw(&args);
        let left = std::fs::remove_file(&file).is_ok();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{bad:?} accepted: {err}");
        assert!(err.contains("--snaplen: "), "{bad:?}: {err}");
        assert!(!left, "{bad:?} left {f}");
    }
    for bad in [&["snaplen=4294967296"][..], &["snaplen=10", "snaplen=20"]] {
        let mut args = vec!["capture-start", p1.as_str()];
        args.extend(bad);
        let out = d.ctl_raw(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{bad:?} accepted: {err}");
        assert!(err.contains("snaplen: "), "{bad:?}: {err}");
    }
    let args = [
        "--snaplen",
        "20",
        "--count",
        "4",
        "--filter",
        "icmp",
        &p1,
        f,
    ];
    capture_while_pinging(&d, &args, &n1, "10.231.7.2");
    let bytes = std::fs::read(&file).unwrap();
    let _ = std::fs::remove_file(&file);
    let mut r = pcap_file::pcapng::PcapNgReader::new(&bytes[..]).unwrap();
    let (mut snaplen, mut lens) = (None, Vec::new());
    while let Some(b) = r.next_block() {
        match b.unwrap() {
            pcap_file::pcapng::Block::InterfaceDescription(i) => snaplen = Some(i.snaplen),
            pcap_file::pcapng::Block::EnhancedPacket(e) => {
                lens.push((e.data.len(), e.original_len))
            }
            _ => {}
        }
    }
    assert_eq!(snaplen, Some(20));
    assert_eq!(lens.len(), 4);
    assert!(lens.iter().all(|&(c, o)| c == 20 && o > 20), "{lens:?}");
}

/// `uvs ctl capture ARGS` started in the background, its stderr piped.
fn capture_bg(d: &Daemon, args: &[&str]) -> Bg {
    let c = Command::new(env!("CARGO_BIN_EXE_uvs"))
        .arg("ctl")
        .arg("--socket")
        .arg(&d.socket)
        .arg("capture")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("uvs ctl capture");
    Bg(c)
}

/// Wait (at most 15 s) for a background capture to end: its success and stderr.
fn finish(mut c: Bg) -> (bool, String) {
    let t0 = Instant::now();
    while c.0.try_wait().unwrap().is_none() {
        assert!(
            t0.elapsed() < Duration::from_secs(15),
            "the capture did not end"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut err = String::new();
    use std::io::Read;
    let _ = c.0.stderr.take().unwrap().read_to_string(&mut err);
    (c.0.wait().unwrap().success(), err)
}

/// A capture says why it ended: the client when its port is deleted or the daemon goes away
/// (it said "captured N packets" with status 0, and "bad reply ... connection closed"), and the
/// daemon's log, which showed only its start (found trying uvs as a new user).
#[test]
fn capture_says_why_it_ended() {
    let test = "capture_says_why_it_ended";
    if !root_or_skip(test) {
        return;
    }
    let p = prefix("obe");
    let mut t = Topology::default();
    let log = std::env::temp_dir().join(format!("uvs-{p}.log"));
    let mut d = Daemon::start_logged(&p, &[], &log);
    let text = || std::fs::read_to_string(&log).unwrap_or_default();
    let (n1, _n2, p1, p2) = two(&mut t, &d, &p, 8);
    let file = std::env::temp_dir().join(format!("uvs-cap-{p}.pcapng"));
    let f = file.to_str().unwrap();
    let logged = |what: &str| {
        let ok = eventually(10, || text().contains(what));
        assert!(ok, "not logged: {what}\n{}", text());
    };

    // Its duration passed: status 0, and the daemon logs both ends.
    let c = capture_bg(&d, &["--duration", "1", &p2, f]);
    let (ok, err) = finish(c);
    assert!(ok && err.contains("captured "), "{err}");
    logged(&format!("capture 1 on {p2} ended (its duration passed)"));

    // The port is deleted under a running capture.
    let _ping = pinging(&n1, "10.231.8.2", 20);
    let c = capture_bg(&d, &[&p1, f]);
    // (Each worker logs the start: one line per worker with `--cores 0,1`.)
    logged(&format!("capture started capture=2 port={p1}"));
    d.ctl(&["del-port", &p1]);
    let (ok, err) = finish(c);
    assert!(!ok, "status 0 after the port was deleted: {err}");
    assert!(
        err.contains(&format!("capture on {p1} ended: the port was deleted (")),
        "{err}"
    );
    logged(&format!("capture 2 on {p1} ended (the port was deleted)"));

    // The daemon goes away.
    let c = capture_bg(&d, &[&p2, f]);
    logged(&format!("capture started capture=3 port={p2}"));
    let _ = d.child.kill();
    let _ = d.child.wait();
    let (ok, err) = finish(c);
    let _ = std::fs::remove_file(&file);
    let _ = std::fs::remove_file(&d.socket);
    let _ = std::fs::remove_file(&log);
    assert!(!ok, "status 0 after the daemon went away: {err}");
    assert!(
        err.contains(&format!("capture on {p2} ended: the daemon went away (")),
        "{err}"
    );
    assert!(!err.contains("bad reply"), "{err}");
}

/// `list-commands` lists `capture`, the documented command, which `uvs ctl` runs (it listed
/// only capture-start/read/stop: found trying uvs as a new user); the daemon, asked for it,
/// says where it runs.
#[test]
fn list_commands_lists_capture() {
    if !root_or_skip("list_commands_lists_capture") {
        return;
    }
    let d = Daemon::start(&prefix("obl"), &[]);
    let text = d.ctl(&["list-commands"]);
    assert!(
        text.contains("\n  capture PORT [--count N] [--duration S]"),
        "{text}"
    );
    let err = uvs::control::call(&d.socket, "capture", &["p1".into(), "-".into()]).unwrap_err();
    assert!(err.to_string().contains("uvs ctl capture"), "{err}");
}

#[test]
fn capture_shows_nat_translation() {
    let test = "capture_shows_nat_translation";
    if !root_or_skip(test) || !have("tshark", test) {
        return;
    }
    let p = prefix("on");
    let n = |s: &str| format!("{p}{s}");
    let mut t = Topology::default();
    let d = Daemon::start(&p, &[]);
    inside_outside(&mut t, &d, &p, "afxdp", "172.31.6", "10.251.0");
    d.ctl(&["nat-add", "masquerade", "src=172.31.6.0/24", "out=ext"]);
    // Sent on the outside port: the request leaves with the gateway's address as source.
    let file = std::env::temp_dir().join(format!("uvs-nat-{p}.pcapng"));
    capture_while_pinging(
        &d,
        &[
            "--direction",
            "tx",
            "--count",
            "2",
            "--filter",
            "icmp",
            &n("po"),
            file.to_str().unwrap(),
        ],
        &n("c1"),
        "10.251.0.2",
    );
    let lines = tshark_fields(&file, &["ip.src", "ip.dst", "icmp.type"]);
    let _ = std::fs::remove_file(&file);
    assert_eq!(
        lines,
        "10.251.0.1\t10.251.0.2\t8\n".repeat(2),
        "masqueraded"
    );
}

#[test]
fn capture_shows_vxlan_encapsulation() {
    let test = "capture_shows_vxlan_encapsulation";
    if !root_or_skip(test) || !have("tshark", test) {
        return;
    }
    let p = prefix("ov");
    let n = |s: &str| format!("{p}{s}");
    let mut t = Topology::default();
    let d = Daemon::start(&p, &[]);
    let hb = n("hb");
    vxlan_uvs_side(&mut t, &d, &p, &hb);
    // Host B: a kernel VTEP for VNI 42 with the address 192.168.42.2 on it.
    let ip = |args: &[&str]| {
        let mut v = vec!["ip", "-n", &hb];
        v.extend_from_slice(args);
        sh(&v);
    };
    kernel_vtep(&hb);
    ip(&["addr", "add", "192.168.42.2/24", "dev", "vx42"]);
    ip(&["link", "set", "vx42", "up"]);
    // Sent on the uplink port: VXLAN VNI 42 around the container's echo request.
    let file = std::env::temp_dir().join(format!("uvs-vx-{p}.pcapng"));
    capture_while_pinging(
        &d,
        &[
            "--direction",
            "tx",
            "--count",
            "8",
            "--filter",
            "udp port 4789",
            &n("ua"),
            file.to_str().unwrap(),
        ],
        &n("c1"),
        "192.168.42.2",
    );
    let lines = tshark_fields(&file, &["vxlan.vni", "ip.src", "ip.dst", "icmp.type"]);
    let _ = std::fs::remove_file(&file);
    let want = "42\t10.252.0.1,192.168.42.1\t10.252.0.2,192.168.42.2\t8\n";
    // The first frames may be the ARP for 192.168.42.2 (encapsulated, no ICMP).
    assert!(
        lines.lines().all(|l| l.starts_with("42\t10.252.0.1")),
        "{lines}"
    );
    eprintln!("{test}: {lines}");
    assert!(lines.contains(want), "{lines}");
}

#[test]
fn mirror_copies_to_a_monitor_namespace() {
    let test = "mirror_copies_to_a_monitor_namespace";
    if !root_or_skip(test) || !have("tshark", test) {
        return;
    }
    let p = prefix("oo");
    let n = |s: &str| format!("{p}{s}");
    let mut t = Topology::default();
    let d = Daemon::start(&p, &[]);
    let (n1, _n2, p1, _p2) = two(&mut t, &d, &p, 3);
    attach(
        &mut t,
        &d,
        ("br0", &n("n3"), &n("p3")),
        "afxdp",
        "10.231.3.3/24",
        &[],
    );
    // Learn every MAC first so nothing is flooded to the monitor port.
    assert!(ping(&n1, "10.231.3.2", 1));
    d.ctl(&[
        "add-mirror",
        "br0",
        "m0",
        &format!("select={p1}"),
        &format!("output={}", n("p3")),
    ]);
    let show = d.ctl(&["show"]);
    assert!(
        show.contains(&format!(
            "mirror m0 on br0: select_src [{p1}] select_dst [{p1}] output {}",
            n("p3")
        )),
        "{show}"
    );
    let cap = Command::new("ip")
        .args([
            "netns",
            "exec",
            &n("n3"),
            "timeout",
            "20",
            "tshark",
            "-i",
            "eth0",
            "-c",
            "4",
        ])
        .args([
            "-f",
            "icmp",
            "-T",
            "fields",
            "-e",
            "ip.src",
            "-e",
            "ip.dst",
            "-e",
            "icmp.type",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("tshark");
    let mut cap = Bg(cap);
    let _ping = pinging(&n1, "10.231.3.2", 20);
    let t0 = Instant::now();
    while cap.0.try_wait().unwrap().is_none() {
        assert!(
            t0.elapsed() < Duration::from_secs(25),
            "tshark in the monitor hung"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut out = String::new();
    use std::io::Read;
    cap.0
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert!(
        out.contains("10.231.3.1\t10.231.3.2\t8"),
        "requests mirrored: {out}"
    );
    assert!(
        out.contains("10.231.3.2\t10.231.3.1\t0"),
        "replies mirrored: {out}"
    );
    let v: serde_json::Value = serde_json::from_str(&d.ctl(&["--json", "mirror-show"])).unwrap();
    assert!(v["mirrors"][0]["packets"].as_u64().unwrap() >= 4, "{v}");
    d.ctl(&["del-mirror", "br0", "m0"]);
    assert!(!d.ctl(&["show"]).contains("mirror m0"));
    let e = d.ctl_raw(&["add-mirror", "br0", "m1", "select=nope", "output=x"]);
    assert!(String::from_utf8_lossy(&e.stderr).contains("'x'"));
}

/// A private tmux server (`tmux -L NAME`), stopped by its PID on drop.
struct Tmux(String);

impl Tmux {
    fn run(&self, args: &[&str]) -> std::process::Output {
        Command::new("tmux")
            .arg("-L")
            .arg(&self.0)
            .args(args)
            .output()
            .expect("tmux")
    }

    fn pane(&self) -> String {
        String::from_utf8_lossy(&self.run(&["capture-pane", "-p", "-t", "top"]).stdout).into_owned()
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let out = self.run(&["display-message", "-p", "#{pid}"]);
        if let Ok(pid) = String::from_utf8_lossy(&out.stdout).trim().parse::<i32>() {
            // SAFETY: kill takes a pid and a signal; the pid is the tmux server this test started.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
    }
}

/// The rx pkt/s cell of `port`'s row in a `uvs top` screen.
fn top_rx_pps(screen: &str, port: &str) -> Option<String> {
    screen.lines().find_map(|l| {
        let l = l.replace('│', " ");
        let w: Vec<&str> = l.split_whitespace().collect();
        let i = w.iter().position(|x| *x == port)?;
        w.get(i + 2).map(|s| s.to_string())
    })
}

#[test]
fn top_renders_rates_under_tmux() {
    let test = "top_renders_rates_under_tmux";
    if !root_or_skip(test) || !have("tmux", test) {
        return;
    }
    let p = prefix("ot");
    let mut t = Topology::default();
    let d = Daemon::start(&p, &[]);
    let (n1, _n2, p1, p2) = two(&mut t, &d, &p, 4);
    // Without a terminal: a clear error, not a panic (found trying uvs as a new user).
    let o = Command::new(env!("CARGO_BIN_EXE_uvs"))
        .args(["top", "--socket", d.socket.to_str().unwrap()])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        o.status.code() == Some(1) && e.contains("top: needs a terminal"),
        "{:?}: {e}",
        o.status
    );
    let _ping = pinging(&n1, "10.231.4.2", 30);
    let tmux = Tmux(format!("uvs-test-{p}"));
    let cmd = format!(
        "{} top --socket {}",
        env!("CARGO_BIN_EXE_uvs"),
        d.socket.display()
    );
    let out = tmux.run(&[
        "new-session",
        "-d",
        "-s",
        "top",
        "-x",
        "160",
        "-y",
        "40",
        &cmd,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let t0 = Instant::now();
    let screen = loop {
        let s = tmux.pane();
        if top_rx_pps(&s, &p1).is_some_and(|v| v != "0") {
            break s;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "no rate for {p1}:\n{s}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    eprintln!("{test}: screen:\n{screen}");
    assert!(
        screen.contains("uvs top") && screen.contains("by pkts/s"),
        "{screen}"
    );
    assert!(
        // One line per worker, with its core ("unpinned" unless UVS_CORES pins it).
        screen.contains(&p2) && screen.contains("worker 0 (") && screen.contains("): cpu "),
        "{screen}"
    );
    // Sort by name, then quit.
    tmux.run(&["send-keys", "-t", "top", "n"]);
    let t0 = Instant::now();
    while !tmux.pane().contains("by name") {
        assert!(t0.elapsed() < Duration::from_secs(5), "{}", tmux.pane());
        std::thread::sleep(Duration::from_millis(100));
    }
    let s = tmux.pane();
    let (a, b) = (s.find(&p1), s.find(&p2));
    assert!(a.is_some() && a < b, "{p1} above {p2} by name:\n{s}");
    tmux.run(&["send-keys", "-t", "top", "q"]);
    let t0 = Instant::now();
    while tmux.run(&["has-session", "-t", "top"]).status.success() {
        assert!(t0.elapsed() < Duration::from_secs(5), "q did not quit");
        std::thread::sleep(Duration::from_millis(100));
    }
}
