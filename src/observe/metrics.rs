//! Prometheus metrics: `uvs run --metrics ADDR:PORT` serves `GET /metrics` in the OpenMetrics
//! text format (`prometheus-client`), built at each scrape from the worker's `stats` answer and
//! its observation counts: the datapath is asked through its request channel, exactly as
//! `uvs ctl stats` asks it, so the fast path is untouched.
//!
//! A plain HTTP/1.1 responder on a std `TcpListener`: a thread per connection, one request per
//! connection, then `Connection: close`. A request head longer than 8 KiB, or not complete
//! [`REQUEST_DEADLINE`] after the connection was taken, is dropped: an idle or trickling
//! client cannot hold up a scrape (found trying uvs as a new user: one thread answered
//! connections in turn, and two idle ones made Prometheus' 10 s scrape time out). Any path
//! other than `/metrics` (and `/`, a pointer to it) is a 404.
//!
//! No client can lock the others out (found trying uvs as a hostile client: 64 connections
//! that never finished their request, re-opened as they timed out, had every scrape answered
//! 503). At most [`MAX_CLIENTS`] connections at once, at most [`MAX_PER_SOURCE`] of them from
//! one source address; when either is reached, a new connection takes the place of one that
//! has not finished its request: of that source's the one accepted first, or (all taken) of
//! the source holding the most, the one accepted first; only when none is still reading its
//! request, the one writing its answer the longest. A connection whose request is being
//! scraped is never evicted; when every connection is, the newcomer is answered 503 at once.
//! An evicted connection still reading is answered 503 (its request never runs); one writing
//! is cut. A scrape sends its whole request at once, so it is served beside any number of
//! stalled clients, from the same address (127.0.0.1) too. Evictions and refusals are counted
//! (`uvs_metrics_evicted_total`, `uvs_metrics_refused_total`) and logged (warn) at most once
//! a second with the count since the last line (`crate::log_limit`).
//!
//! Metrics (counters end in `_total`; labels in braces):
//! - `uvs_build_info{version}`: 1.
//! - `uvs_port_{rx,tx}_{packets,bytes}_total{port,bridge}`, `uvs_port_{csum_completed,
//!   gro_merged,mac_limit_refused}_total`,
//!   `uvs_port_drops_total{port,bridge,reason}` (every reason `uvs ctl stats` names, zeros
//!   included, so a series exists before its first drop),
//!   `uvs_port_kernel_drops_total{port,bridge,counter}` (lost before uvs saw them);
//!   `uvs_port_up{port,bridge}` (gauge: 1 while the port's device is present, up and open,
//!   else 0) and `uvs_port_state{port,bridge,state}` (gauge, one series for each of `up`,
//!   `down`, `gone`, `pending`: 1 for the port's state, as `uvs ctl show` names it).
//! - `uvs_bridge_fdb_entries{bridge}` (gauge), `uvs_bridge_{learned,moves,fdb_full,fdb_replaced,
//!   fdb_collisions,mac_limit,aged,flooded}_total{bridge}`.
//! - `uvs_router_{routed,arp_replies,arp_requests,arp_queued,echo_replies,icmp_errors,
//!   icmp_rate_limited,resets,fragmented,fragments}_total`, `uvs_neigh_{evicted,full,
//!   rate_limited}_total`, `process_start_time_seconds`, `uvs_reassembly_{reassembled,timed_out,refused}_total`.
//! - `uvs_conntrack_connections`, `uvs_conntrack_limit` (gauges), `uvs_conntrack_{inserted,
//!   expired,evicted,table_full,clashes,ports_exhausted,early_dropped,source_limited,
//!   collisions,reclaimed}_total`; `uvs_flow_conntrack_connections`;
//!   `uvs_nat_rules`.
//! - `uvs_worker_{iterations,busy_iterations,sleeps}_total{worker}`,
//!   `uvs_worker_{cpu,busy}_seconds_total{worker}`, `uvs_worker_uptime_seconds{worker}`,
//!   `uvs_worker_frames{worker}`, `uvs_worker_frames_free{worker}`: one series per worker
//!   (`worker="0"`, `"1"`, ...), as `stats` lists them.
//! - `uvs_captures`, `uvs_mirrors` (gauges).
//! - With the DNS service running: `uvs_dns_{queries,answered_local,forwarded,relayed,nxdomain,
//!   retried,servfail,evicted,source_limited,malformed,upstream_unmatched,reply_queue_full}_total`,
//!   `uvs_dns_waiting` (gauge), as `uvs ctl dns-show` counts them.
//! - `uvs_metrics_{evicted,refused}_total`: this endpoint's own connections closed unfinished
//!   to admit a new one, and answered 503 at once (see above).

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use prometheus_client::encoding::text::encode;

use crate::log_limit::LogLimit;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;
use serde_json::Value;

use super::ObserveCmd;
use crate::dns::service::DnsService;
use crate::worker::{Command, WorkerHandle};

type Labels = Vec<(String, String)>;
type Counters = Family<Labels, Counter>;
type Gauges = Family<Labels, Gauge>;

/// The OpenMetrics content type.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A registry filled from JSON snapshots.
struct Builder {
    reg: Registry,
}

impl Builder {
    fn counter(&mut self, name: &str, help: &str, rows: Vec<(Labels, u64)>) {
        let f = Counters::default();
        for (l, v) in rows {
            f.get_or_create(&l).inc_by(v);
        }
        self.reg.register(name, help, f);
    }

    fn gauge(&mut self, name: &str, help: &str, rows: Vec<(Labels, i64)>) {
        let f = Gauges::default();
        for (l, v) in rows {
            f.get_or_create(&l).set(v);
        }
        self.reg.register(name, help, f);
    }

    fn one_counter(&mut self, name: &str, help: &str, v: &Value) {
        self.counter(name, help, vec![(Vec::new(), v.as_u64().unwrap_or(0))]);
    }

    fn one_gauge(&mut self, name: &str, help: &str, v: &Value) {
        self.gauge(name, help, vec![(Vec::new(), v.as_i64().unwrap_or(0))]);
    }
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// When this process started (seconds since the Unix epoch), read at the first scrape's
/// render or sooner: the daemon forces it at start ([`serve`]).
static PROCESS_START: std::sync::LazyLock<f64> = std::sync::LazyLock::new(|| {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
});

/// Render the metrics from a `stats` answer and an observation `Counts` answer.
pub fn render(stats: &Value, counts: &Value, dns: Option<&Value>, http: &HttpCounts) -> String {
    let mut b = Builder {
        reg: Registry::default(),
    };
    b.reg.register(
        "uvs_build",
        "uvs build information",
        Info::new(labels(&[("version", env!("CARGO_PKG_VERSION"))])),
    );
    ports(&mut b, stats);
    bridges(&mut b, stats);
    let r = &stats["router"];
    for (k, help) in [
        ("routed", "Packets routed"),
        ("arp_replies", "ARP requests for a gateway answered"),
        ("arp_requests", "ARP requests sent to resolve next hops"),
        (
            "arp_queued",
            "Packets held while their next hop was resolved",
        ),
        ("echo_replies", "ICMP echo requests to a gateway answered"),
        ("icmp_errors", "ICMP errors sent"),
        (
            "icmp_rate_limited",
            "ICMP errors not sent: over the rate limit (1,000 a second, bursts of 50, per worker)",
        ),
        (
            "resets",
            "TCP resets sent for segments to a gateway address with no service",
        ),
        (
            "fragmented",
            "Routed packets over the egress MTU without DF, cut into fragments",
        ),
        ("fragments", "Fragments made of those packets"),
    ] {
        b.one_counter(&format!("uvs_router_{k}"), help, &r[k]);
    }
    let n = &stats["neigh"];
    for (k, help) in [
        (
            "evicted",
            "Neighbour entries evicted to make room (a bridge at its bound)",
        ),
        ("full", "Neighbour resolutions refused: table full"),
        (
            "rate_limited",
            "ARP requests not sent: a bridge's broadcast budget spent",
        ),
    ] {
        b.one_counter(&format!("uvs_neigh_{k}"), help, &n[k]);
    }
    // The daemon's start, for Prometheus to see counter resets across restarts (the
    // standard `process_start_time_seconds`).
    let start = Family::<Labels, Gauge<f64, AtomicU64>>::default();
    start.get_or_create(&Vec::new()).set(*PROCESS_START);
    b.reg.register(
        "process_start_time_seconds",
        "Start time of the process since the Unix epoch in seconds",
        start,
    );
    let ra = &stats["reassembly"];
    for (k, help) in [
        (
            "reassembled",
            "Fragmented datagrams to the switch (VXLAN) put back together",
        ),
        (
            "timed_out",
            "Fragmented datagrams to the switch dropped incomplete (1 s, or a full table)",
        ),
        (
            "refused",
            "Fragmented datagrams to the switch refused (overlapping, too many or too large)",
        ),
    ] {
        b.one_counter(&format!("uvs_reassembly_{k}"), help, &ra[k]);
    }
    let ct = &counts["conntrack"];
    b.one_gauge(
        "uvs_conntrack_connections",
        "Tracked NAT connections",
        &ct["connections"],
    );
    b.one_gauge(
        "uvs_conntrack_limit",
        "Connection table limit",
        &ct["limit"],
    );
    for (k, help) in [
        ("inserted", "Connections created"),
        ("expired", "Connections removed by timeout"),
        ("evicted", "Expired connections evicted by a full table"),
        ("table_full", "Connections refused: table full"),
        ("clashes", "Connections refused: tuple clash"),
        (
            "ports_exhausted",
            "NAT port allocations that found no free port",
        ),
        (
            "early_dropped",
            "Unassured connections dropped by a full table",
        ),
        ("source_limited", "Connections refused: source at its limit"),
        ("collisions", "Connections refused: hash collision"),
        (
            "reclaimed",
            "Connections of the port holding the most removed by a full table for a port holding fewer",
        ),
    ] {
        b.one_counter(&format!("uvs_conntrack_{k}"), help, &ct[k]);
    }
    b.one_gauge(
        "uvs_flow_conntrack_connections",
        "Connections tracked by flow ct() actions",
        &counts["flow_conntrack"],
    );
    b.one_gauge("uvs_nat_rules", "NAT rules", &counts["nat_rules"]);
    b.one_gauge(
        "uvs_captures",
        "Running packet captures",
        &counts["captures"],
    );
    b.one_gauge("uvs_mirrors", "Port mirrors", &counts["mirrors"]);
    workers(&mut b, stats, counts);
    if let Some(d) = dns {
        dns_service(&mut b, d);
    }
    b.counter(
        "uvs_metrics_evicted",
        "Connections to this endpoint closed unfinished to admit a new one (full, or their source at its limit)",
        vec![(Vec::new(), http.evicted)],
    );
    b.counter(
        "uvs_metrics_refused",
        "Connections to this endpoint answered 503 at once (full, every connection being scraped)",
        vec![(Vec::new(), http.refused)],
    );
    let mut out = String::new();
    let _ = encode(&mut out, &b.reg);
    out
}

/// The DNS service's counters (`ServiceStatus` as JSON).
fn dns_service(b: &mut Builder, d: &Value) {
    let c = &d["counters"];
    for (k, help) in [
        ("queries", "DNS queries received"),
        (
            "answered_local",
            "DNS queries answered from the registered names",
        ),
        ("forwarded", "DNS queries forwarded to the upstream"),
        ("relayed", "Upstream DNS answers relayed to clients"),
        ("nxdomain", "DNS queries answered NXDOMAIN (no upstream)"),
        (
            "retried",
            "Forwarded DNS queries sent again to the next upstream (the one asked was silent or unreachable)",
        ),
        (
            "servfail",
            "DNS queries answered SERVFAIL (every upstream timed out or unreachable, or pushed out of the forwarding table)",
        ),
        (
            "evicted",
            "Forwarded DNS queries answered SERVFAIL to make room in a full forwarding table (the oldest of the address holding the most of the bridge holding the most)",
        ),
        (
            "source_limited",
            "Forwarded DNS queries answered SERVFAIL because their client address asked another with its limit waiting (its own oldest)",
        ),
        (
            "malformed",
            "Messages to the DNS service that were not DNS queries",
        ),
        (
            "upstream_unmatched",
            "Upstream messages matching no waiting query",
        ),
    ] {
        b.one_counter(&format!("uvs_dns_{k}"), help, &c[k]);
    }
    b.one_counter(
        "uvs_dns_reply_queue_full",
        "DNS answers dropped: the worker's reply queue was full",
        &d["reply_queue_full"],
    );
    b.one_gauge(
        "uvs_dns_waiting",
        "Forwarded DNS queries waiting for the upstream",
        &d["waiting"],
    );
}

fn ports(b: &mut Builder, stats: &Value) {
    let empty = serde_json::Map::new();
    let ports = stats["ports"].as_object().unwrap_or(&empty);
    let per = |k: &str| -> Vec<(Labels, u64)> {
        ports
            .iter()
            .map(|(n, p)| {
                let br = p["bridge"].as_str().unwrap_or("");
                (
                    labels(&[("port", n), ("bridge", br)]),
                    p[k].as_u64().unwrap_or(0),
                )
            })
            .collect()
    };
    for (k, help) in [
        ("rx_packets", "Frames received"),
        ("rx_bytes", "Bytes received"),
        ("tx_packets", "Frames handed to the port for transmission"),
        ("tx_bytes", "Bytes handed to the port for transmission"),
        (
            "csum_completed",
            "Partial L4 checksums completed in software",
        ),
        ("gro_merged", "Frames merged into TCP super-frames (GRO)"),
        (
            "mac_limit_refused",
            "Source MACs not learned: the port's mac_limit",
        ),
    ] {
        b.counter(&format!("uvs_port_{k}"), help, per(k));
    }
    let by = |field: &str, label: &str| -> Vec<(Labels, u64)> {
        let mut rows = Vec::new();
        for (n, p) in ports {
            let br = p["bridge"].as_str().unwrap_or("");
            for (r, v) in p[field].as_object().into_iter().flatten() {
                let l = labels(&[("port", n), ("bridge", br), (label, r)]);
                rows.push((l, v.as_u64().unwrap_or(0)));
            }
        }
        rows
    };
    // Every reason of every port, zeros too: a series that appears with its first drops
    // already counted is invisible to `increase()`/`rate()` (an alert on any drop never
    // fired for the first ones).
    let mut drops = Vec::new();
    for (n, p) in ports {
        let br = p["bridge"].as_str().unwrap_or("");
        for r in crate::counters::DropReason::ALL {
            let l = labels(&[("port", n), ("bridge", br), ("reason", r.name())]);
            drops.push((l, p["drops"][r.name()].as_u64().unwrap_or(0)));
        }
    }
    b.counter("uvs_port_drops", "Frames dropped, by reason", drops);
    b.counter(
        "uvs_port_kernel_drops",
        "Frames lost before uvs saw them (kernel counters)",
        by("kernel", "counter"),
    );
    let state = |p: &Value| p["state"].as_str().unwrap_or("up").to_string();
    b.gauge(
        "uvs_port_up",
        "1 while the port's device is present, up and open, else 0",
        ports
            .iter()
            .map(|(n, p)| {
                let br = p["bridge"].as_str().unwrap_or("");
                (
                    labels(&[("port", n), ("bridge", br)]),
                    i64::from(state(p) == "up"),
                )
            })
            .collect(),
    );
    let mut rows = Vec::new();
    for (n, p) in ports {
        let br = p["bridge"].as_str().unwrap_or("");
        let now = state(p);
        for s in ["up", "down", "gone", "pending"] {
            let l = labels(&[("port", n), ("bridge", br), ("state", s)]);
            rows.push((l, i64::from(now == s)));
        }
    }
    b.gauge(
        "uvs_port_state",
        "The port's state (up, down: device administratively down, gone: device missing): 1 for the current one",
        rows,
    );
}

fn bridges(b: &mut Builder, stats: &Value) {
    let empty = serde_json::Map::new();
    let bridges = stats["bridges"].as_object().unwrap_or(&empty);
    let per = |k: &str| -> Vec<(Labels, u64)> {
        bridges
            .iter()
            .map(|(n, v)| (labels(&[("bridge", n)]), v[k].as_u64().unwrap_or(0)))
            .collect()
    };
    let entries = per("fdb_entries")
        .into_iter()
        .map(|(l, v)| (l, v as i64))
        .collect();
    b.gauge("uvs_bridge_fdb_entries", "MACs in the FDB", entries);
    for (k, help) in [
        ("learned", "New MACs learned"),
        ("moves", "MACs that moved to another port"),
        ("fdb_full", "MACs not learned: FDB full"),
        (
            "fdb_replaced",
            "MACs learned into a full FDB in the place of an entry of the port holding the most",
        ),
        (
            "fdb_collisions",
            "MACs not learned: no free slot near their hash",
        ),
        (
            "mac_limit",
            "MACs not learned: their port held its mac_limit",
        ),
        ("aged", "FDB entries aged out"),
        ("flooded", "Frames flooded"),
    ] {
        b.counter(&format!("uvs_bridge_{k}"), help, per(k));
    }
}

/// The loop figures of every worker, labelled `worker="N"` (the `workers` list of a `stats`
/// answer from several workers; a single worker's answer has only `worker`, which is worker 0).
fn workers(b: &mut Builder, stats: &Value, counts: &Value) {
    let list: Vec<(String, &Value)> = match stats["workers"].as_array() {
        Some(ws) if !ws.is_empty() => ws
            .iter()
            .enumerate()
            .map(|(i, w)| (w["index"].as_u64().unwrap_or(i as u64).to_string(), w))
            .collect(),
        _ => vec![("0".to_string(), &stats["worker"])],
    };
    let rows = |key: &str| -> Vec<(Labels, u64)> {
        list.iter()
            .map(|(i, w)| (labels(&[("worker", i)]), w[key].as_u64().unwrap_or(0)))
            .collect()
    };
    for (k, help) in [
        ("iterations", "Worker loop iterations"),
        ("busy_iterations", "Loop iterations that received frames"),
        ("sleeps", "Times the worker slept in poll(2)"),
    ] {
        b.counter(&format!("uvs_worker_{k}"), help, rows(k));
    }
    let secs = |v: &Value| v.as_f64().unwrap_or(0.0) / 1e9;
    for (name, help, key) in [
        (
            "uvs_worker_cpu_seconds",
            "CPU time used by the worker",
            "cpu_ns",
        ),
        (
            "uvs_worker_busy_seconds",
            "Time the worker spent in loop passes that moved frames (OVS: processing cycles)",
            "busy_ns",
        ),
    ] {
        let c = Family::<Labels, Counter<f64, AtomicU64>>::default();
        for (i, w) in &list {
            c.get_or_create(&labels(&[("worker", i)]))
                .inc_by(secs(&w[key]));
        }
        b.reg.register(name, help, c);
    }
    let up = Family::<Labels, Gauge<f64, AtomicU64>>::default();
    for (i, w) in &list {
        up.get_or_create(&labels(&[("worker", i)]))
            .set(secs(&w["wall_ns"]));
    }
    b.reg.register(
        "uvs_worker_uptime_seconds",
        "Time since the worker started",
        up,
    );
    // Each worker has its own frame region; an answer without a per-worker size (older
    // workers) falls back to the observation counts' one region.
    let frames = list
        .iter()
        .map(|(i, w)| {
            let n = w["frames"].as_i64().or(counts["frames"].as_i64());
            (labels(&[("worker", i)]), n.unwrap_or(0))
        })
        .collect();
    b.gauge("uvs_worker_frames", "Frames in the region", frames);
    let free = list
        .iter()
        .map(|(i, w)| {
            (
                labels(&[("worker", i)]),
                w["frames_free"].as_i64().unwrap_or(0),
            )
        })
        .collect();
    b.gauge("uvs_worker_frames_free", "Frames free in the region", free);
}

/// Ask the worker (and the DNS service, if it runs) and render, with the server's own `http`
/// counters.
pub fn scrape(
    w: &WorkerHandle,
    dns: Option<&DnsService>,
    http: &HttpCounts,
) -> Result<String, String> {
    let stats = w.call(Command::Stats)?;
    let counts = w.call(Command::Observe(ObserveCmd::Counts))?;
    let dns = dns.and_then(|d| serde_json::to_value(d.status()).ok());
    Ok(render(&stats, &counts, dns.as_ref(), http))
}

/// A running metrics listener; dropping it stops it.
pub struct MetricsServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl MetricsServer {
    /// The address it listens on (the port is chosen by the kernel for `:0`).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if TcpStream::connect_timeout(&self.addr, Duration::from_secs(1)).is_ok()
            && let Some(t) = self.thread.take()
        {
            let _ = t.join();
        }
    }
}

/// Connections answered at once; when full, a new one takes the place of one that has not
/// finished its request (see the module docs).
pub const MAX_CLIENTS: usize = 64;
/// Connections one source address may hold at once; past that, a new one from it takes the
/// place of its own oldest unfinished one.
pub const MAX_PER_SOURCE: usize = 32;
/// The most time a client has to send its request head, from when its connection is taken.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(3);

/// What a connection is doing, for eviction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Reading its request head since it was accepted.
    Reading(Instant),
    /// Asking the worker for the metrics (never evicted: it is short and bounded).
    Scraping,
    /// Writing its answer since the instant (evicted only when no connection is reading).
    Writing(Instant),
}

/// One connection being answered.
struct Conn {
    /// A clone of its socket, to shut it down on eviction.
    stream: TcpStream,
    source: IpAddr,
    phase: Phase,
    /// Evicted: its thread ends at its next step, and it no longer counts.
    closing: bool,
}

/// What to do with a new connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Admit<K> {
    /// There is room.
    Room,
    /// Close this one, then take the new one.
    Evict(K),
    /// Every connection that could make room is asking the worker: answer 503.
    Refuse,
}

/// Where a connection from `source` goes, given the live connections `(key, source, phase)`:
/// - `source` holding `max_per_source`: the place of its own longest-waiting unfinished one;
/// - all `max_clients` taken: the place of a connection still reading its request (the one
///   of the source holding the most, then the one accepted first), else of one writing its
///   answer (the longest writing);
/// - a connection asking the worker is never evicted; when nothing else can go, `Refuse`.
fn admit<K: Copy>(
    conns: &[(K, IpAddr, Phase)],
    source: IpAddr,
    max_clients: usize,
    max_per_source: usize,
) -> Admit<K> {
    let holding = |ip: IpAddr| conns.iter().filter(|(_, s, _)| *s == ip).count();
    let own = holding(source) >= max_per_source;
    if !own && conns.len() < max_clients {
        return Admit::Room;
    }
    conns
        .iter()
        .filter(|(_, s, _)| !own || *s == source)
        .filter_map(|&(k, s, p)| match p {
            Phase::Reading(t) => Some(((false, std::cmp::Reverse(holding(s)), t), k)),
            Phase::Writing(t) => Some(((true, std::cmp::Reverse(0), t), k)),
            Phase::Scraping => None,
        })
        .min_by_key(|(key, _)| *key)
        .map_or(Admit::Refuse, |(_, k)| Admit::Evict(k))
}

/// The server's own counters, shown as `uvs_metrics_*` in every scrape.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct HttpCounts {
    /// Connections closed to admit a new one.
    pub evicted: u64,
    /// Connections answered 503 at once (nothing could be evicted).
    pub refused: u64,
}

/// The connections being answered and the counters, shared by the accept thread and the
/// connections' threads.
#[derive(Default)]
struct Shared {
    conns: Mutex<HashMap<u64, Conn>>,
    evicted: AtomicU64,
    refused: AtomicU64,
}

impl Shared {
    fn conns(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Conn>> {
        self.conns.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn counts(&self) -> HttpCounts {
        HttpCounts {
            evicted: self.evicted.load(Ordering::Relaxed),
            refused: self.refused.load(Ordering::Relaxed),
        }
    }

    /// Sets connection `id`'s phase; false when it was evicted (it must end).
    fn track(&self, id: u64, phase: Phase) -> bool {
        match self.conns().get_mut(&id) {
            Some(c) if !c.closing => {
                c.phase = phase;
                true
            }
            _ => false,
        }
    }
}

/// Serve metrics for `worker` on `addr` (e.g. `127.0.0.1:9477`).
pub fn serve(
    listener: TcpListener,
    worker: Arc<WorkerHandle>,
    dns: Option<Arc<DnsService>>,
) -> io::Result<MetricsServer> {
    let addr = listener.local_addr()?;
    std::sync::LazyLock::force(&PROCESS_START);
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let thread = std::thread::Builder::new()
        .name("uvs-metrics".into())
        .spawn(move || {
            let shared = Arc::new(Shared::default());
            let (mut evictions, mut refusals) = (LogLimit::default(), LogLimit::default());
            for (id, conn) in (0u64..).zip(listener.incoming()) {
                if s.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(c) = conn else { continue };
                let Ok(clone) = c.try_clone() else { continue };
                let source = c
                    .peer_addr()
                    .map_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), |a| a.ip());
                let now = Instant::now();
                {
                    let mut conns = shared.conns();
                    let live: Vec<(u64, IpAddr, Phase)> = conns
                        .iter()
                        .filter(|(_, c)| !c.closing)
                        .map(|(k, c)| (*k, c.source, c.phase))
                        .collect();
                    match admit(&live, source, MAX_CLIENTS, MAX_PER_SOURCE) {
                        Admit::Room => {}
                        Admit::Evict(k) => {
                            if let Some(v) = conns.get_mut(&k) {
                                evict(v);
                            }
                            shared.evicted.fetch_add(1, Ordering::Relaxed);
                            if let Some(held) = evictions.admit(now) {
                                tracing::warn!(
                                    "metrics: {MAX_CLIENTS} connections ({MAX_PER_SOURCE} a source); \
                                     closed {} unfinished connection(s) to admit new ones \
                                     (logged at most once a second)",
                                    held + 1
                                );
                            }
                        }
                        Admit::Refuse => {
                            drop(conns);
                            shared.refused.fetch_add(1, Ordering::Relaxed);
                            if let Some(held) = refusals.admit(now) {
                                tracing::warn!(
                                    "metrics: {MAX_CLIENTS} connections, each being scraped; \
                                     refused {} connection(s) (logged at most once a second)",
                                    held + 1
                                );
                            }
                            let _ = refuse(&c, Duration::from_secs(1));
                            continue;
                        }
                    }
                    conns.insert(
                        id,
                        Conn {
                            stream: clone,
                            source,
                            phase: Phase::Reading(now),
                            closing: false,
                        },
                    );
                }
                let (w, d, sh) = (worker.clone(), dns.clone(), shared.clone());
                let spawned = std::thread::Builder::new()
                    .name("uvs-metrics-conn".into())
                    .spawn(move || {
                        let _ = answer(c, &w, d.as_deref(), &|p| sh.track(id, p), &|| {
                            sh.counts()
                        });
                        sh.conns().remove(&id);
                    });
                if spawned.is_err() {
                    shared.conns().remove(&id);
                }
            }
        })?;
    Ok(MetricsServer {
        addr,
        stop,
        thread: Some(thread),
    })
}

/// Closes a connection to make room: one still reading its request is answered 503 first
/// (its request never runs); one writing its answer is only cut.
fn evict(v: &mut Conn) {
    v.closing = true;
    if matches!(v.phase, Phase::Reading(_)) {
        let _ = refuse(&v.stream, Duration::from_millis(100));
    }
    let _ = v.stream.shutdown(Shutdown::Both);
}

/// Answer a client that cannot be taken, or that was evicted before its request was read.
fn refuse(c: &TcpStream, timeout: Duration) -> io::Result<()> {
    c.set_write_timeout(Some(timeout))?;
    let mut w = c;
    w.write_all(
        b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    )
}

/// A connection's reads, each given what is left until `until` (then `TimedOut`).
struct Deadline<'a> {
    c: &'a TcpStream,
    until: Instant,
}

impl io::Read for Deadline<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "request head not complete in time",
            ));
        }
        self.c.set_read_timeout(Some(left))?;
        let mut c = self.c;
        c.read(buf)
    }
}

/// Read one request head and answer it; `track` is told each phase and says false once the
/// connection was evicted (it then ends without an answer).
fn answer(
    c: TcpStream,
    worker: &WorkerHandle,
    dns: Option<&DnsService>,
    track: &dyn Fn(Phase) -> bool,
    http: &dyn Fn() -> HttpCounts,
) -> io::Result<()> {
    c.set_write_timeout(Some(Duration::from_secs(5)))?;
    let until = Instant::now() + REQUEST_DEADLINE;
    let mut r = BufReader::new(Deadline { c: &c, until }.take(8192));
    let mut line = String::new();
    r.read_line(&mut line)?;
    // Skip the headers up to the blank line.
    let mut h = String::new();
    while r.read_line(&mut h)? > 2 {
        h.clear();
    }
    let evicted = || io::Error::new(io::ErrorKind::ConnectionAborted, "evicted");
    if !track(Phase::Scraping) {
        return Err(evicted());
    }
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = path.split('?').next().unwrap_or("");
    let (status, ctype, body) = match (method, path) {
        ("GET" | "HEAD", "/metrics") => match scrape(worker, dns, &http()) {
            Ok(b) => ("200 OK", CONTENT_TYPE, b),
            Err(e) => ("503 Service Unavailable", "text/plain", format!("{e}\n")),
        },
        ("GET" | "HEAD", "/") => ("200 OK", "text/plain", "uvs: see /metrics\n".into()),
        _ => ("404 Not Found", "text/plain", "not found\n".into()),
    };
    if !track(Phase::Writing(Instant::now())) {
        return Err(evicted());
    }
    let mut w = &c;
    write!(
        w,
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    if method != "HEAD" {
        w.write_all(body.as_bytes())?;
    }
    w.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Idle clients (connected, sending nothing) do not hold up a scrape: it is answered at
    /// once beside them, and they are dropped after [`REQUEST_DEADLINE`].
    #[test]
    fn idle_clients_do_not_hold_up_a_scrape() {
        use std::io::Read as _;
        let w = Arc::new(crate::worker::spawn_for_tests());
        let m = serve(TcpListener::bind("127.0.0.1:0").unwrap(), w, None).unwrap();
        let idle: Vec<TcpStream> = (0..12)
            .map(|_| TcpStream::connect(m.addr()).unwrap())
            .collect();
        let t0 = Instant::now();
        let mut c = TcpStream::connect(m.addr()).unwrap();
        c.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut body = String::new();
        c.read_to_string(&mut body).unwrap();
        assert!(body.starts_with("HTTP/1.1 200 OK"), "{body}");
        // (Served in turn, each idle client ahead of it held the scrape up 5 s: 60 s here.)
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "scrape took {:?} beside idle clients",
            t0.elapsed()
        );
        // The idle ones are closed once their deadline passed.
        let mut first = &idle[0];
        first
            .set_read_timeout(Some(REQUEST_DEADLINE + Duration::from_secs(5)))
            .unwrap();
        let mut buf = [0u8; 16];
        assert_eq!(
            first.read(&mut buf).unwrap_or(0),
            0,
            "closed without an answer"
        );
    }

    /// [`MAX_CLIENTS`] connections that never finish their request (silent, or a partial
    /// request line), opened again as they are closed, do not lock a scrape out: it is answered
    /// 200 within 2 s beside them (each took the place of the oldest one), again and again
    /// (found trying uvs as a hostile client: every scrape was answered 503).
    #[test]
    fn stalled_clients_cannot_lock_out_a_scrape() {
        use std::io::Read as _;
        let w = Arc::new(crate::worker::spawn_for_tests());
        let m = serve(TcpListener::bind("127.0.0.1:0").unwrap(), w, None).unwrap();
        let stall = |i: usize| {
            let mut c = TcpStream::connect(m.addr()).unwrap();
            if i % 2 == 1 {
                let _ = c.write_all(b"GET /metrics HT");
            }
            c
        };
        let mut stalled: Vec<TcpStream> = (0..MAX_CLIENTS).map(stall).collect();
        for round in 0..3 {
            let t0 = Instant::now();
            let mut c = TcpStream::connect(m.addr()).unwrap();
            c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            c.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
                .unwrap();
            let mut body = String::new();
            let read = c.read_to_string(&mut body);
            assert!(
                read.is_ok() && body.starts_with("HTTP/1.1 200 OK") && body.ends_with("# EOF\n"),
                "round {round}: scrape beside {} stalled clients: {read:?} after {:?}: {body}",
                MAX_CLIENTS,
                t0.elapsed()
            );
            assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
            if round > 0 {
                let n = body
                    .lines()
                    .find_map(|l| l.strip_prefix("uvs_metrics_evicted_total "))
                    .and_then(|v| v.parse::<u64>().ok());
                assert!(n.is_some_and(|n| n >= MAX_CLIENTS as u64), "{n:?}: {body}");
            }
            // The attacker opens as many again.
            stalled.extend((0..MAX_CLIENTS).map(stall));
        }
        // The first one was closed to make room, told 503 (its request never ran).
        let mut first = &stalled[0];
        first
            .set_read_timeout(Some(Duration::from_secs(1)))
            .unwrap();
        let mut got = String::new();
        let _ = first.read_to_string(&mut got);
        assert!(got.starts_with("HTTP/1.1 503"), "{got:?}");
        drop(stalled);
    }

    #[test]
    fn admit_evicts_the_oldest_unfinished_of_the_heaviest_source() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let (a, b, c): (IpAddr, IpAddr, IpAddr) = (
            "10.0.0.1".parse().unwrap(),
            "10.0.0.2".parse().unwrap(),
            "10.0.0.3".parse().unwrap(),
        );
        let conns = [
            (1, b, Phase::Reading(t0)),
            (2, a, Phase::Reading(t0 + s)),
            (3, a, Phase::Reading(t0 + 2 * s)),
            (4, b, Phase::Scraping),
            (5, c, Phase::Writing(t0)),
        ];
        assert_eq!(admit(&conns, c, 6, 3), Admit::Room);
        // Full: the oldest still reading of the source holding the most (a: 2, b: 2 with one
        // being scraped, so b's count is 2 too: then the one accepted first).
        assert_eq!(admit(&conns, c, 5, 3), Admit::Evict(1));
        assert_eq!(admit(&conns[1..], c, 4, 3), Admit::Evict(2));
        // The source holding the most goes first, even when another's is older.
        assert_eq!(admit(&conns[..3], c, 3, 3), Admit::Evict(2));
        // Nothing reading: the longest writing; nothing but scrapes: refused.
        assert_eq!(admit(&conns[3..], a, 2, 3), Admit::Evict(5));
        assert_eq!(admit(&conns[3..4], a, 1, 3), Admit::Refuse);
        // A source at its cap takes the place of its own oldest, never another's.
        assert_eq!(admit(&conns, a, 64, 2), Admit::Evict(2));
        assert_eq!(admit(&conns[3..], b, 64, 1), Admit::Refuse);
    }

    #[test]
    fn render_names_and_labels() {
        let stats = json!({
            "ports": {"p1": {"bridge": "br0", "rx_packets": 7, "rx_bytes": 700, "tx_packets": 3,
                "tx_bytes": 300, "csum_completed": 0, "drops": {"no-route": 2},
                "kernel": {"rx_dropped": 1}, "state": "up"},
                "p2": {"bridge": "br0", "state": "gone"}},
            "bridges": {"br0": {"fdb_entries": 2, "learned": 2, "moves": 0, "fdb_full": 0,
                "aged": 0, "flooded": 5}},
            "router": {"routed": 9, "arp_replies": 1, "arp_requests": 0, "echo_replies": 4,
                "icmp_errors": 0},
            "worker": {"iterations": 100, "busy_iterations": 10, "sleeps": 3,
                "cpu_ns": 1_500_000_000u64, "busy_ns": 250_000_000u64, "wall_ns": 3_000_000_000u64,
                "frames_free": 10}
        });
        let counts = json!({"conntrack": {"connections": 3, "limit": 65536, "inserted": 5},
            "nat_rules": 1, "flow_conntrack": 0, "captures": 0, "mirrors": 1, "frames": 64});
        let dnsv = json!({"counters": {"queries": 12, "answered_local": 9, "forwarded": 3,
            "evicted": 4},
            "waiting": 1, "reply_queue_full": 0});
        let http = HttpCounts {
            evicted: 4,
            refused: 1,
        };
        let text = render(&stats, &counts, Some(&dnsv), &http);
        for line in [
            "uvs_build_info{version=\"",
            "uvs_port_rx_packets_total{port=\"p1\",bridge=\"br0\"} 7",
            "uvs_port_tx_bytes_total{port=\"p1\",bridge=\"br0\"} 300",
            "uvs_port_drops_total{port=\"p1\",bridge=\"br0\",reason=\"no-route\"} 2",
            // Every reason from the start, zeros too (increase() misses a series' first value).
            "uvs_port_drops_total{port=\"p1\",bridge=\"br0\",reason=\"vlan-denied\"} 0",
            "uvs_port_drops_total{port=\"p2\",bridge=\"br0\",reason=\"runt\"} 0",
            "uvs_port_kernel_drops_total{port=\"p1\",bridge=\"br0\",counter=\"rx_dropped\"} 1",
            "uvs_port_up{port=\"p1\",bridge=\"br0\"} 1",
            "uvs_port_up{port=\"p2\",bridge=\"br0\"} 0",
            "uvs_port_state{port=\"p2\",bridge=\"br0\",state=\"gone\"} 1",
            "uvs_port_state{port=\"p2\",bridge=\"br0\",state=\"up\"} 0",
            "uvs_bridge_fdb_entries{bridge=\"br0\"} 2",
            "uvs_bridge_flooded_total{bridge=\"br0\"} 5",
            "uvs_router_routed_total 9",
            "uvs_router_arp_queued_total 0",
            "uvs_neigh_rate_limited_total 0",
            "uvs_port_mac_limit_refused_total{port=\"p1\",bridge=\"br0\"} 0",
            "uvs_bridge_fdb_collisions_total{bridge=\"br0\"} 0",
            "process_start_time_seconds ",
            "uvs_conntrack_connections 3",
            "uvs_conntrack_limit 65536",
            "uvs_conntrack_inserted_total 5",
            "uvs_worker_busy_iterations_total{worker=\"0\"} 10",
            "uvs_worker_cpu_seconds_total{worker=\"0\"} 1.5",
            "uvs_worker_busy_seconds_total{worker=\"0\"} 0.25",
            "uvs_worker_frames{worker=\"0\"} 64",
            "uvs_mirrors 1",
            "uvs_dns_queries_total 12",
            "uvs_dns_answered_local_total 9",
            "uvs_dns_evicted_total 4",
            "uvs_dns_source_limited_total 0",
            "uvs_dns_waiting 1",
            "uvs_metrics_evicted_total 4",
            "uvs_metrics_refused_total 1",
            "# EOF",
        ] {
            assert!(text.contains(line), "missing {line} in:\n{text}");
        }
    }

    #[test]
    fn every_worker_has_its_own_series() {
        let w = |i: u64, iters: u64, busy: u64| {
            json!({"index": i, "iterations": iters, "busy_iterations": 1, "sleeps": 0,
                "cpu_ns": 1_000_000_000u64, "busy_ns": busy, "wall_ns": 2_000_000_000u64,
                "frames": 4096, "frames_free": 4000 + i})
        };
        let stats = json!({"ports": {}, "bridges": {}, "router": {},
            "worker": w(0, 100, 500_000_000), "workers": [w(0, 100, 500_000_000), w(1, 300, 750_000_000)]});
        let counts = json!({"conntrack": {}, "frames": 4096});
        let text = render(&stats, &counts, None, &HttpCounts::default());
        for line in [
            "uvs_worker_iterations_total{worker=\"0\"} 100",
            "uvs_worker_iterations_total{worker=\"1\"} 300",
            "uvs_worker_busy_seconds_total{worker=\"1\"} 0.75",
            "uvs_worker_frames_free{worker=\"1\"} 4001",
            "uvs_worker_uptime_seconds{worker=\"1\"} 2.0",
        ] {
            assert!(text.contains(line), "missing {line} in:\n{text}");
        }
        // One series per worker: no unlabelled total beside them.
        assert!(!text.contains("uvs_worker_iterations_total "), "{text}");
    }
}
