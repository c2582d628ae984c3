//! End-to-end DNS tests in network namespaces (root; an explicit skip otherwise): gateways
//! answer DNS for the names registered on their bridge, over UDP (busybox nslookup, a real
//! client) and TCP (a client socket made inside the namespace), forward other names to a
//! test-owned upstream on loopback, never answer another bridge's names, follow a name that is
//! re-registered with a new address, and keep the names across a restart (database); with a
//! silent first upstream, forwarded names still resolve through the second; a tenant filling
//! the forwarding table with names the upstream never answers does not starve another bridge.

mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::netns::*;
use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, Record, RecordType};

/// The name the upstream knows, and its address.
const OUTSIDE: (&str, Ipv4Addr) = ("outside.uvs-test.", Ipv4Addr::new(198, 51, 100, 77));

/// Names under this the upstream never answers (a slow or dead authority).
const SILENT: &str = ".silent.uvs-test.";

/// A resolver on loopback: `OUTSIDE` resolves, names under `SILENT` are never answered,
/// everything else is NXDOMAIN. Counts queries.
struct Upstream {
    addr: SocketAddr,
    queries: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Upstream {
    fn start() -> Upstream {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let addr = s.local_addr().unwrap();
        let (queries, stop) = (
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicBool::new(false)),
        );
        let (q, st) = (queries.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 1500];
            while !st.load(Ordering::SeqCst) {
                let Ok((n, from)) = s.recv_from(&mut buf) else {
                    continue;
                };
                let Ok(m) = Message::from_vec(&buf[..n]) else {
                    continue;
                };
                q.fetch_add(1, Ordering::SeqCst);
                if m.queries
                    .first()
                    .is_some_and(|q| q.name().to_ascii().ends_with(SILENT))
                {
                    continue;
                }
                let mut r = Message::response(m.metadata.id, OpCode::Query);
                r.add_queries(m.queries.iter().cloned());
                let qn = m
                    .queries
                    .first()
                    .map(|q| (q.name().to_ascii(), q.query_type()));
                match qn {
                    Some((name, RecordType::A)) if name == OUTSIDE.0 => {
                        let n = Name::from_ascii(OUTSIDE.0).unwrap();
                        r.add_answer(Record::from_rdata(n, 30, RData::A(A(OUTSIDE.1))));
                    }
                    Some((name, _)) if name == OUTSIDE.0 => {}
                    _ => r.metadata.response_code = ResponseCode::NXDomain,
                }
                let _ = s.send_to(&r.to_vec().unwrap(), from);
            }
        });
        Upstream {
            addr,
            queries,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn a_silent_first_upstream_hands_forwarded_names_to_the_second() {
    if !root_or_skip("a_silent_first_upstream_hands_forwarded_names_to_the_second") {
        return;
    }
    let p = prefix("eu");
    let up = Upstream::start();
    // The first upstream takes queries and never answers (a bound socket nobody reads).
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let spec = format!("{},{}", silent.local_addr().unwrap(), up.addr);
    let mut t = Topology::default();
    let d = Daemon::start(&p, &["--dns-upstream", spec.as_str()]);
    d.ctl(&["add-br", "br0", "gateway=10.63.0.1/24"]);
    let c1 = format!("{p}c1");
    attach(
        &mut t,
        &d,
        ("br0", &c1, &format!("{p}p1")),
        "afxdp",
        "10.63.0.2/24",
        &[],
    );
    // The first forwarded query waits out the silent upstream (2 s) before the second answers;
    // busybox nslookup asks again meanwhile, so allow a few tries.
    assert!(
        eventually(15, || answers(&nslookup(&c1, OUTSIDE.0, "10.63.0.1"))
            .contains(&OUTSIDE.1.to_string())),
        "resolves through the second upstream: {}",
        nslookup(&c1, OUTSIDE.0, "10.63.0.1")
    );
    // Now the second is preferred: the next name goes straight to it, the silent one is not
    // asked again.
    silent.set_nonblocking(true).unwrap();
    let drain = || {
        let mut buf = [0u8; 1500];
        std::iter::from_fn(|| silent.recv_from(&mut buf).ok()).count()
    };
    assert!(drain() >= 1, "the silent upstream was asked first");
    let before = up.queries.load(Ordering::SeqCst);
    let out = nslookup(&c1, "nothing.uvs-test.", "10.63.0.1");
    assert!(out.contains("NXDOMAIN"), "{out}");
    assert!(up.queries.load(Ordering::SeqCst) > before);
    assert_eq!(drain(), 0, "the silent upstream is no longer asked");
    let show = d.ctl(&["dns-show"]);
    assert!(
        show.contains(&format!("upstream {spec} (asking {})", up.addr)),
        "{show}"
    );
    let json = d.ctl(&["--json", "dns-show"]);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let data = if v.get("data").is_some() {
        &v["data"]
    } else {
        &v
    };
    let c = &data["service"]["counters"];
    assert!(c["retried"].as_u64().unwrap_or(0) >= 1, "{json}");
    assert_eq!(c["servfail"].as_u64(), Some(0), "{json}");
    drop(d);
}

/// `busybox nslookup NAME SERVER` in `ns` (bounded by `timeout`): its output.
fn nslookup(ns: &str, name: &str, server: &str) -> String {
    let out = std::process::Command::new("timeout")
        .args([
            "10", "ip", "netns", "exec", ns, "busybox", "nslookup", name, server,
        ])
        .output()
        .expect("busybox nslookup");
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

/// The addresses busybox nslookup printed in its answer section.
fn answers(out: &str) -> Vec<String> {
    // The server's own lines come first ("Server:", "Address: SERVER#53"); answers follow
    // a "Name:" line.
    let mut seen_name = false;
    let mut v = Vec::new();
    for l in out.lines() {
        if l.starts_with("Name:") {
            seen_name = true;
        } else if seen_name && let Some(a) = l.strip_prefix("Address:") {
            v.push(a.trim().to_string());
        }
    }
    v
}

/// Run `f` on a thread that has entered network namespace `ns` (sockets it opens live there).
fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/var/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).expect("netns file");
        // SAFETY: setns with a valid namespace fd; it changes only this thread's namespace.
        let r = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(r, 0, "setns {path}");
        f()
    })
    .join()
    .expect("netns thread")
}

/// One DNS query over TCP (RFC 1035 4.2.2 framing) from namespace `ns` to `server`:53.
fn tcp_query(ns: &str, server: Ipv4Addr, name: &str) -> Message {
    let name = name.to_string();
    in_netns(ns, move || {
        let mut q = Message::new(0x5151, MessageType::Query, OpCode::Query);
        q.metadata.recursion_desired = true;
        q.add_query(Query::query(
            Name::from_ascii(&name).unwrap(),
            RecordType::A,
        ));
        let q = q.to_vec().unwrap();
        let addr = SocketAddr::from((server, 53));
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(&(q.len() as u16).to_be_bytes()).unwrap();
        s.write_all(&q).unwrap();
        let mut len = [0u8; 2];
        s.read_exact(&mut len).expect("answer length");
        let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
        s.read_exact(&mut buf).expect("answer");
        Message::from_vec(&buf).expect("answer parses")
    })
}

fn a_of(m: &Message) -> Vec<Ipv4Addr> {
    m.answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.0),
            _ => None,
        })
        .collect()
}

/// Poll `f` until it is true or `secs` pass.
fn eventually(secs: u64, mut f: impl FnMut() -> bool) -> bool {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(secs) {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

#[test]
fn gateways_answer_dns_by_name_udp_and_tcp() {
    if !root_or_skip("gateways_answer_dns_by_name_udp_and_tcp") {
        return;
    }
    let p = prefix("ed");
    let n = |s: &str| format!("{p}{s}");
    let up = Upstream::start();
    let db = std::env::temp_dir().join(format!("uvs-{p}-dns.db"));
    let _ = std::fs::remove_file(&db);
    let dbs = db.to_string_lossy().to_string();
    let upstream = up.addr.to_string();
    let args = ["--db", dbs.as_str(), "--dns-upstream", upstream.as_str()];
    let mut t = Topology::default();
    let d = Daemon::start(&p, &args);
    d.ctl(&["add-br", "br0", "gateway=10.61.0.1/24"]);
    d.ctl(&["add-br", "br1", "gateway=10.62.0.1/24"]);
    let c1 = n("c1");
    let c3 = n("c3");
    attach(
        &mut t,
        &d,
        ("br0", &c1, &n("p1")),
        "afxdp",
        "10.61.0.2/24",
        &[],
    );
    attach(
        &mut t,
        &d,
        ("br1", &c3, &n("p3")),
        "afxdp",
        "10.62.0.2/24",
        &[],
    );
    d.ctl(&["dns-add", "br0", "web", "10.61.0.3", "www"]);
    d.ctl(&["dns-add", "br1", "db", "10.62.0.5"]);
    // Errors name the field.
    let bad = d.ctl_raw(&["dns-add", "br0", "web", "10.61.0.300"]);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("ip:"));
    let bad = d.ctl_raw(&["dns-add", "nope", "web", "10.61.0.3"]);
    assert!(!bad.status.success());

    // UDP, a real client: the name, an alias, NAME.BRIDGE (the first query may wait for ARP).
    assert!(
        eventually(10, || answers(&nslookup(&c1, "web", "10.61.0.1"))
            .contains(&"10.61.0.3".to_string())),
        "web resolves: {}",
        nslookup(&c1, "web", "10.61.0.1")
    );
    let out = nslookup(&c1, "www", "10.61.0.1");
    assert!(answers(&out).contains(&"10.61.0.3".into()), "{out}");
    let out = nslookup(&c1, "web.br0", "10.61.0.1");
    assert!(answers(&out).contains(&"10.61.0.3".into()), "{out}");
    // PTR.
    let out = nslookup(&c1, "10.61.0.3", "10.61.0.1");
    assert!(out.contains("name = web"), "PTR: {out}");
    // Another bridge's name is not answered from br0 (the upstream says NXDOMAIN) but is on br1.
    let out = nslookup(&c1, "db", "10.61.0.1");
    assert!(
        answers(&out).is_empty(),
        "db must not resolve on br0: {out}"
    );
    let out = nslookup(&c3, "db", "10.62.0.1");
    assert!(answers(&out).contains(&"10.62.0.5".into()), "{out}");
    let out = nslookup(&c3, "web", "10.62.0.1");
    assert!(
        answers(&out).is_empty(),
        "web must not resolve on br1: {out}"
    );
    // Forwarded through the test's upstream.
    let before = up.queries.load(Ordering::SeqCst);
    let out = nslookup(&c1, OUTSIDE.0, "10.61.0.1");
    assert!(answers(&out).contains(&OUTSIDE.1.to_string()), "{out}");
    assert!(
        up.queries.load(Ordering::SeqCst) > before,
        "the upstream was asked"
    );

    // TCP.
    let m = tcp_query(&c1, Ipv4Addr::new(10, 61, 0, 1), "web.");
    assert_eq!(a_of(&m), vec![Ipv4Addr::new(10, 61, 0, 3)]);
    assert_eq!(m.metadata.id, 0x5151);
    let m = tcp_query(&c1, Ipv4Addr::new(10, 61, 0, 1), OUTSIDE.0);
    assert_eq!(a_of(&m), vec![OUTSIDE.1], "forwarded over TCP");
    let m = tcp_query(&c3, Ipv4Addr::new(10, 62, 0, 1), "web.");
    assert!(a_of(&m).is_empty(), "other bridge's name over TCP");
    // From an afpacket port (the CNI plugin's default): its veth leaves the SYN's checksum
    // partial, which the DNS service's TCP stack refused until uvs completed it.
    let c4 = n("c4");
    attach(
        &mut t,
        &d,
        ("br0", &c4, &n("p4")),
        "afpacket",
        "10.61.0.4/24",
        &[],
    );
    let m = tcp_query(&c4, Ipv4Addr::new(10, 61, 0, 1), "web.");
    assert_eq!(
        a_of(&m),
        vec![Ipv4Addr::new(10, 61, 0, 3)],
        "TCP from afpacket"
    );

    // Re-registered with a new address: the name follows at once.
    d.ctl(&["dns-add", "br0", "web", "10.61.0.9"]);
    let out = nslookup(&c1, "web", "10.61.0.1");
    assert_eq!(answers(&out), vec!["10.61.0.9".to_string()], "{out}");
    let show = d.ctl(&["dns-show"]);
    assert!(show.contains("br0 web 10.61.0.9"), "{show}");
    assert!(show.contains("br1 db 10.62.0.5"), "{show}");
    let json = d.ctl(&["--json", "dns-show", "br0"]);
    assert!(!json.contains("10.62.0.5"), "{json}");
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let data = if v.get("data").is_some() {
        &v["data"]
    } else {
        &v
    };
    assert!(data["punt"]["punted"].as_u64().unwrap_or(0) >= 8, "{json}");
    assert!(
        data["service"]["counters"]["answered_local"]
            .as_u64()
            .unwrap_or(0)
            >= 5,
        "{json}"
    );

    // Persisted: a restarted daemon still knows the names (from its database).
    drop(d);
    let d = Daemon::start(&p, &args);
    let show = d.ctl(&["dns-show"]);
    assert!(show.contains("br0 web 10.61.0.9"), "after restart: {show}");
    // Removed: no longer answered (the upstream says NXDOMAIN).
    d.ctl(&["dns-del", "br0", "web"]);
    // Deleting it again is an error naming it (as ovs-vsctl del-port of a missing port).
    let again = d.ctl_raw(&["dns-del", "br0", "web"]);
    let e = String::from_utf8_lossy(&again.stderr).into_owned();
    assert!(!again.status.success() && e.contains("no 'web'"), "{e}");
    assert!(!d.ctl(&["dns-show", "br0"]).contains("web"));
    drop(d);
    let _ = std::fs::remove_file(&db);
    let _ = std::fs::remove_file(db.with_extension("db.lock"));
}

/// `n` sequential UDP queries for `name` from namespace `ns` to `server`:53 (1 s timeout each):
/// the round-trip times of those answered with an A record.
fn udp_rtts(ns: &str, server: Ipv4Addr, name: &'static str, n: usize) -> Vec<Duration> {
    in_netns(ns, move || {
        let s = UdpSocket::bind("0.0.0.0:0").unwrap();
        s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
        let mut rtts = Vec::new();
        let mut buf = [0u8; 1500];
        for i in 0..n {
            let mut q = Message::new(i as u16, MessageType::Query, OpCode::Query);
            q.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
            let t = Instant::now();
            s.send_to(&q.to_vec().unwrap(), (server, 53)).unwrap();
            // Skip late answers to earlier queries.
            while let Ok(len) = s.recv(&mut buf) {
                let Ok(m) = Message::from_vec(&buf[..len]) else {
                    continue;
                };
                if m.metadata.id == i as u16 {
                    if !a_of(&m).is_empty() {
                        rtts.push(t.elapsed());
                    }
                    break;
                }
            }
        }
        rtts
    })
}

fn percentile(v: &mut [Duration], p: usize) -> Duration {
    v.sort();
    v[(v.len() - 1) * p / 100]
}

#[test]
fn a_tenant_flooding_dns_does_not_starve_another() {
    if !root_or_skip("a_tenant_flooding_dns_does_not_starve_another") {
        return;
    }
    let p = prefix("ef");
    let n = |s: &str| format!("{p}{s}");
    let mut t = Topology::default();
    let d = Daemon::start(&p, &["--dns-upstream", "none"]);
    d.ctl(&["add-br", "br0", "gateway=10.63.0.1/24"]);
    let (flooder, victim) = (n("c1"), n("c2"));
    attach(
        &mut t,
        &d,
        ("br0", &flooder, &n("p1")),
        "afxdp",
        "10.63.0.2/24",
        &[],
    );
    attach(
        &mut t,
        &d,
        ("br0", &victim, &n("p2")),
        "afxdp",
        "10.63.0.3/24",
        &[],
    );
    d.ctl(&["dns-add", "br0", "web", "10.63.0.9"]);
    let gw = Ipv4Addr::new(10, 63, 0, 1);
    assert!(ping(&victim, "10.63.0.1", 1), "the gateway answers ping");
    let mut quiet = udp_rtts(&victim, gw, "web.", 200);
    assert!(quiet.len() >= 195, "{} of 200 answered", quiet.len());
    let (q50, q99) = (percentile(&mut quiet, 50), percentile(&mut quiet, 99));

    // The flooder sends queries as fast as it can for 3 s while the victim asks 100 times.
    let stop = Arc::new(AtomicBool::new(false));
    let st = stop.clone();
    let f = flooder.clone();
    let flood = std::thread::spawn(move || {
        in_netns(&f, move || {
            let s = UdpSocket::bind("0.0.0.0:0").unwrap();
            s.set_nonblocking(true).unwrap();
            let mut q = Message::new(1, MessageType::Query, OpCode::Query);
            q.add_query(Query::query(
                Name::from_ascii("web.").unwrap(),
                RecordType::A,
            ));
            let q = q.to_vec().unwrap();
            let (mut sent, t) = (0u64, Instant::now());
            let mut buf = [0u8; 1500];
            while !st.load(Ordering::SeqCst) && t.elapsed() < Duration::from_secs(3) {
                if s.send_to(&q, (gw, 53)).is_ok() {
                    sent += 1;
                }
                while s.recv(&mut buf).is_ok() {}
            }
            sent
        })
    });
    std::thread::sleep(Duration::from_millis(300));
    let mut busy = udp_rtts(&victim, gw, "web.", 100);
    stop.store(true, Ordering::SeqCst);
    let sent = flood.join().unwrap();
    let s: serde_json::Value = serde_json::from_str(&d.ctl(&["--json", "stats"])).unwrap();
    let limited = s["ports"][n("p1")]["drops"]["dns-rate-limited"]
        .as_u64()
        .unwrap_or(0);
    let victim_limited = s["ports"][n("p2")]["drops"]["dns-rate-limited"]
        .as_u64()
        .unwrap_or(0);
    assert!(
        busy.len() >= 95,
        "victim: {} of 100 answered during the flood",
        busy.len()
    );
    let (b50, b99) = (percentile(&mut busy, 50), percentile(&mut busy, 99));
    eprintln!(
        "dns over udp: quiet p50 {q50:?} p99 {q99:?}; during a {sent}-query flood p50 {b50:?} \
         p99 {b99:?}; flooder rate-limited {limited}, victim {victim_limited}"
    );
    assert!(limited > 0, "the flooder was rate-limited ({sent} sent)");
    assert_eq!(victim_limited, 0);
}

/// A tenant on br0 asks, from 8 addresses of its subnet, for names the upstream never answers,
/// faster than they time out (1,200 a second, 150 an address, within its punt rate): the
/// forwarding table stays full. A container on br1 still gets its forwarded name answered,
/// each time pushing out one of the tenant's queries (counted).
#[test]
fn a_tenant_filling_the_forwarding_table_does_not_starve_another_bridge() {
    if !root_or_skip("a_tenant_filling_the_forwarding_table_does_not_starve_another_bridge") {
        return;
    }
    let p = prefix("ep");
    let n = |s: &str| format!("{p}{s}");
    let up = Upstream::start();
    let mut t = Topology::default();
    let upstream = up.addr.to_string();
    let d = Daemon::start(&p, &["--dns-upstream", upstream.as_str()]);
    d.ctl(&["add-br", "br0", "gateway=10.64.0.1/24"]);
    d.ctl(&["add-br", "br1", "gateway=10.65.0.1/24"]);
    let (tenant, victim) = (n("c1"), n("c2"));
    let eth = attach(
        &mut t,
        &d,
        ("br0", &tenant, &n("p1")),
        "afxdp",
        "10.64.0.2/24",
        &[],
    );
    attach(
        &mut t,
        &d,
        ("br1", &victim, &n("p2")),
        "afxdp",
        "10.65.0.2/24",
        &[],
    );
    let addrs: Vec<Ipv4Addr> = (10..18).map(|i| Ipv4Addr::new(10, 64, 0, i)).collect();
    for a in &addrs {
        let cidr = format!("{a}/24");
        sh(&[
            "ip", "netns", "exec", &tenant, "ip", "addr", "add", &cidr, "dev", &eth,
        ]);
    }
    assert!(ping(&tenant, "10.64.0.1", 1), "br0's gateway answers ping");
    assert!(ping(&victim, "10.65.0.1", 1), "br1's gateway answers ping");
    let json = || -> serde_json::Value {
        let v: serde_json::Value = serde_json::from_str(&d.ctl(&["--json", "dns-show"])).unwrap();
        let data = if v.get("data").is_some() {
            v["data"].clone()
        } else {
            v
        };
        data["service"].clone()
    };
    let stop = Arc::new(AtomicBool::new(false));
    let st = stop.clone();
    let ns = tenant.clone();
    let flood = std::thread::spawn(move || {
        in_netns(&ns, move || {
            let socks: Vec<UdpSocket> = addrs
                .iter()
                .map(|a| {
                    let s = UdpSocket::bind((*a, 0)).unwrap();
                    s.set_nonblocking(true).unwrap();
                    s
                })
                .collect();
            let gw = Ipv4Addr::new(10, 64, 0, 1);
            let (mut sent, mut buf) = (0u32, [0u8; 1500]);
            let t = Instant::now();
            while !st.load(Ordering::SeqCst) && t.elapsed() < Duration::from_secs(20) {
                // 1,200 a second over the 8 addresses, caught up after a late wake-up.
                let due = t.elapsed().as_millis() as u32 * 6 / 5;
                while sent < due {
                    let s = &socks[sent as usize % socks.len()];
                    let name = format!("q{sent}{SILENT}");
                    let mut q = Message::new(sent as u16, MessageType::Query, OpCode::Query);
                    q.add_query(Query::query(
                        Name::from_ascii(&name).unwrap(),
                        RecordType::A,
                    ));
                    let _ = s.send_to(&q.to_vec().unwrap(), (gw, 53));
                    sent += 1;
                    while s.recv(&mut buf).is_ok() {}
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            sent
        })
    });
    let full = eventually(10, || json()["waiting"].as_u64() == Some(1024));
    let before = json();
    let gw1 = Ipv4Addr::new(10, 65, 0, 1);
    let answered = udp_rtts(&victim, gw1, OUTSIDE.0, 10).len();
    let after = json();
    stop.store(true, Ordering::SeqCst);
    let sent = flood.join().unwrap();
    assert!(full, "the tenant fills the table ({sent} sent): {before}");
    assert_eq!(answered, 10, "br1's container: {answered} of 10 answered");
    let evicted = |v: &serde_json::Value| v["counters"]["evicted"].as_u64().unwrap_or(0);
    // At least the first found the table full (the others may find a slot an answer freed).
    assert!(evicted(&after) > evicted(&before), "{before}\n{after}");
    eprintln!(
        "forwarding table: {sent} silent queries from 8 addresses; br1 answered {answered}/10; \
         {after}"
    );
}
