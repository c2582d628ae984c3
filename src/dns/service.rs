//! The DNS service thread: takes punted packets from the worker, answers them (UDP here, TCP
//! through [`super::tcp`]), forwards the rest to the upstream resolver over a UDP socket, and
//! sends the answers back to the worker, waking it.
//!
//! Contract:
//! - Control-plane side: this thread does socket IO (the upstream), never the worker.
//! - Upstreams in order (`--dns-upstream ADDR[:PORT][,ADDR[:PORT]...]`, default the
//!   `nameserver` lines of /etc/resolv.conf; `none`: answer NXDOMAIN for names not
//!   registered). All of one address family (the first's; others are left out with a warning),
//!   over one UDP socket; answers are taken from any of them. A query the preferred upstream
//!   does not answer in time goes to the next, which becomes the preferred one (as glibc's
//!   resolver moves on, but remembered). A nameserver on loopback (systemd-resolved's
//!   127.0.0.53) is used as it is: the daemon runs on the host.
//! - Counters are published after every batch for `dns-show`.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use serde::Serialize;
use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{IpAddress, IpProtocol, Ipv4Packet, Ipv4Repr, UdpPacket, UdpRepr};
use tracing::{info, warn};

use super::answer::{Core, DnsCounters, Next, Outcome};
use super::punt::{Punted, Reply};
use super::registry::Registry;
use super::tcp::{TcpClient, TcpDns};

/// Where an answer goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Client {
    /// A UDP client.
    Udp(UdpClient),
    /// A TCP connection.
    Tcp(TcpClient),
}

/// A UDP client: its address and where its frames come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpClient {
    /// Bridge id.
    pub bridge: u16,
    /// Port the query came in on.
    pub port: u16,
    /// Client MAC.
    pub mac: [u8; 6],
    /// Gateway MAC.
    pub gw_mac: [u8; 6],
    /// Gateway address (the answer's source).
    pub gw: Ipv4Addr,
    /// Client address.
    pub ip: Ipv4Addr,
    /// Client UDP port.
    pub udp_port: u16,
}

/// Service settings.
#[derive(Debug, Clone)]
pub struct ServiceOptions {
    /// The upstream resolvers, in order (empty: NXDOMAIN for names not registered).
    pub upstreams: Vec<SocketAddr>,
    /// Wait for an upstream before the next one, or SERVFAIL (milliseconds).
    pub timeout_ms: u64,
}

/// What `dns-show` prints of the service.
#[derive(Debug, Default, Clone, Serialize)]
pub struct ServiceStatus {
    /// The upstreams, as text ("a,b"; "none" without).
    pub upstream: String,
    /// The upstream new queries go to now (after the ones that did not answer).
    pub preferred: String,
    /// Counters.
    pub counters: DnsCounters,
    /// Forwarded queries waiting.
    pub waiting: usize,
    /// TCP sockets open.
    pub tcp_sockets: usize,
    /// TCP connections closed to admit others (see `tcp::pick_victim`).
    pub tcp: super::tcp::TcpCounters,
    /// Answers dropped because the worker's reply queue was full.
    pub reply_queue_full: u64,
}

/// A running service.
pub struct DnsService {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    status: Arc<Mutex<ServiceStatus>>,
}

impl DnsService {
    /// Counters and state, as of the last batch.
    pub fn status(&self) -> ServiceStatus {
        self.status.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

impl Drop for DnsService {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The upstreams named by `spec` (`ADDR[:PORT][,ADDR[:PORT]...]`, `none`), or by
/// /etc/resolv.conf's `nameserver` lines when `spec` is None; only those of the first one's
/// address family (one socket asks them all).
pub fn upstreams_from(spec: Option<&str>) -> Result<Vec<SocketAddr>, String> {
    let parse = |s: &str| -> Result<SocketAddr, String> {
        s.parse::<SocketAddr>()
            .or_else(|_| {
                s.parse::<std::net::IpAddr>()
                    .map(|a| SocketAddr::new(a, 53))
            })
            .map_err(|_| format!("dns upstream: '{s}' is not ADDRESS[:PORT] or none"))
    };
    let all = match spec {
        Some("none") => return Ok(Vec::new()),
        Some(s) => s
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(parse)
            .collect::<Result<Vec<_>, _>>()?,
        None => std::fs::read_to_string("/etc/resolv.conf")
            .map(|t| nameservers(&t))
            .unwrap_or_default(),
    };
    if spec.is_some() && all.is_empty() {
        return Err("dns upstream: empty (give ADDRESS[:PORT][,...], none or off)".into());
    }
    Ok(one_family(all))
}

/// The upstreams of the first one's address family, each once; the others are left out with
/// a warning.
fn one_family(all: Vec<SocketAddr>) -> Vec<SocketAddr> {
    let Some(v4) = all.first().map(SocketAddr::is_ipv4) else {
        return all;
    };
    let mut out: Vec<SocketAddr> = Vec::new();
    for a in all {
        if a.is_ipv4() != v4 {
            warn!("dns: upstream {a} left out: the first upstream's address family is used");
        } else if !out.contains(&a) {
            out.push(a);
        }
    }
    out
}

/// The `nameserver` lines of a resolv.conf text, in order.
pub fn nameservers(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|a| a.trim().parse::<std::net::IpAddr>().ok())
        .map(|a| SocketAddr::new(a, 53))
        .collect()
}

/// Upstreams as `dns-show` prints them.
fn upstreams_text(a: &[SocketAddr]) -> String {
    if a.is_empty() {
        return "none".into();
    }
    a.iter()
        .map(|a| a.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// Start the service thread.
pub fn start(
    punted: Receiver<Punted>,
    replies: Sender<Reply>,
    wake: Arc<dyn Fn() + Send + Sync>,
    registry: Arc<RwLock<Registry>>,
    opts: ServiceOptions,
) -> std::io::Result<DnsService> {
    let stop = Arc::new(AtomicBool::new(false));
    let upstreams = one_family(opts.upstreams.clone());
    let status = Arc::new(Mutex::new(ServiceStatus {
        upstream: upstreams_text(&upstreams),
        preferred: upstreams_text(&upstreams[..upstreams.len().min(1)]),
        ..ServiceStatus::default()
    }));
    let (up_tx, up_rx) = crossbeam_channel::bounded::<Vec<u8>>(1024);
    let sock = match upstreams.first() {
        Some(a) => {
            let bind: SocketAddr = if a.is_ipv4() {
                "0.0.0.0:0".parse().expect("literal")
            } else {
                "[::]:0".parse().expect("literal")
            };
            // Not connected: an upstream that is unreachable now (no route yet) must not stop
            // the daemon; each send says so, and its query goes to the next upstream.
            let s = UdpSocket::bind(bind)?;
            s.set_read_timeout(Some(Duration::from_millis(200)))?;
            let r = s.try_clone()?;
            let st = stop.clone();
            let from = upstreams.clone();
            std::thread::Builder::new()
                .name("uvs-dns-up".into())
                .spawn(move || upstream_reader(r, &from, up_tx, st))?;
            Some(s)
        }
        None => None,
    };
    info!(
        "dns: answering on gateway addresses, upstream {}",
        upstreams_text(&upstreams)
    );
    let mut core = Core::with_timeout(opts.timeout_ms);
    core.set_upstreams(upstreams.len());
    let mut svc = Service {
        core,
        upstreams,
        tcp: TcpDns::default(),
        registry,
        sock,
        replies,
        wake,
        started: Instant::now(),
        reply_queue_full: 0,
    };
    let (st, stat) = (stop.clone(), status.clone());
    let thread = std::thread::Builder::new()
        .name("uvs-dns".into())
        .spawn(move || svc.run(&punted, &up_rx, &st, &stat))?;
    Ok(DnsService {
        stop,
        thread: Some(thread),
        status,
    })
}

/// Reads the upstreams' answers (from their addresses only) into `tx`.
fn upstream_reader(
    s: UdpSocket,
    upstreams: &[SocketAddr],
    tx: Sender<Vec<u8>>,
    stop: Arc<AtomicBool>,
) {
    let mut buf = vec![0u8; 65_535];
    while !stop.load(Ordering::SeqCst) {
        match s.recv_from(&mut buf) {
            Ok((n, from)) if upstreams.contains(&from) => {
                let _ = tx.try_send(buf[..n].to_vec());
            }
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            // ICMP port unreachable from the upstream shows up here: keep reading.
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

/// How often the service looks at its timers while a query or a TCP connection is pending.
const BUSY_TICK: Duration = Duration::from_millis(50);
/// How often it wakes with nothing pending (to see `stop`).
const IDLE_TICK: Duration = Duration::from_secs(1);

struct Service {
    core: Core<Client>,
    tcp: TcpDns,
    registry: Arc<RwLock<Registry>>,
    /// The upstreams, in order, and the socket toward them.
    upstreams: Vec<SocketAddr>,
    sock: Option<UdpSocket>,
    replies: Sender<Reply>,
    wake: Arc<dyn Fn() + Send + Sync>,
    started: Instant,
    reply_queue_full: u64,
}

impl Service {
    fn run(
        &mut self,
        punted: &Receiver<Punted>,
        upstream: &Receiver<Vec<u8>>,
        stop: &AtomicBool,
        status: &Mutex<ServiceStatus>,
    ) {
        // With no upstream there is no reader thread, so `upstream` is disconnected from the
        // start: a disconnected channel is always ready, and `select!` would spin on it.
        let never = crossbeam_channel::never();
        let mut up = upstream;
        while !stop.load(Ordering::SeqCst) {
            // Timers (a forwarded query's expiry, TCP's retransmits and closes) need a look
            // every `BUSY_TICK`; with none pending only `IDLE_TICK` (for `stop`): an idle
            // daemon's DNS thread then wakes once a second instead of twenty times.
            let tick = if self.core.waiting() > 0 || self.tcp.active() {
                BUSY_TICK
            } else {
                IDLE_TICK
            };
            let mut out = Vec::new();
            crossbeam_channel::select! {
                recv(punted) -> p => match p {
                    Ok(p) => self.packet(p, &mut out),
                    Err(_) => break,
                },
                recv(up) -> m => match m {
                    Ok(m) => self.upstream_answer(&m, &mut out),
                    Err(_) => up = &never,
                },
                default(tick) => {}
            }
            // Take whatever else is queued, bounded, before answering.
            for p in punted.try_iter().take(256) {
                self.packet(p, &mut out);
            }
            for m in upstream.try_iter().take(256) {
                self.upstream_answer(&m, &mut out);
            }
            let now = self.now_ms();
            self.tcp_poll(now, &mut out);
            for next in self.core.expire(now) {
                self.next(next, now, &mut out);
            }
            self.send(out);
            if let Ok(mut s) = status.lock() {
                s.counters = self.core.counters.clone();
                s.waiting = self.core.waiting();
                s.tcp_sockets = self.tcp.sockets();
                s.tcp = self.tcp.counters;
                s.reply_queue_full = self.reply_queue_full;
                s.preferred = self
                    .upstreams
                    .get(self.core.upstream_of(&[]))
                    .map_or("none".into(), |a| a.to_string());
            }
        }
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn send(&mut self, out: Vec<Reply>) {
        if out.is_empty() {
            return;
        }
        for r in out {
            if self.replies.try_send(r).is_err() {
                if self.reply_queue_full == 0 {
                    warn!("dns: the worker's reply queue is full; answers are dropped (counted)");
                }
                self.reply_queue_full += 1;
            }
        }
        (self.wake)();
    }

    /// One punted packet.
    fn packet(&mut self, p: Punted, out: &mut Vec<Reply>) {
        let now = self.now_ms();
        let (src, dst, proto) = match Ipv4Packet::new_checked(&p.packet[..]) {
            Ok(ip) => (ip.src_addr(), ip.dst_addr(), ip.next_header()),
            Err(_) => {
                self.core.counters.malformed += 1;
                return;
            }
        };
        match proto {
            IpProtocol::Tcp => {
                let len = p.gw_len;
                self.tcp.input(p, dst, len, now);
            }
            IpProtocol::Udp => {
                let ip = Ipv4Packet::new_unchecked(&p.packet[..]);
                let Ok(udp) = UdpPacket::new_checked(ip.payload()) else {
                    self.core.counters.malformed += 1;
                    return;
                };
                let client = Client::Udp(UdpClient {
                    bridge: p.bridge,
                    port: p.in_port,
                    mac: p.client_mac,
                    gw_mac: p.gw_mac,
                    gw: dst,
                    ip: src,
                    udp_port: udp.src_port(),
                });
                let outcome = {
                    let reg = self.registry.read().unwrap_or_else(|e| e.into_inner());
                    let up = self.sock.is_some();
                    self.core
                        .query(&reg, &p.bridge_name, src, udp.payload(), client, now, up)
                };
                match outcome {
                    Outcome::Answer(b) => self.answer(client, &b, now, out),
                    Outcome::Forward(b) => self.forward(&b, now, out),
                    Outcome::Drop => {}
                }
            }
            _ => self.core.counters.malformed += 1,
        }
    }

    /// Send a forwarded query to the upstream the core names for it; one that cannot be sent
    /// goes on to the next upstream, or gets SERVFAIL when every one failed.
    fn forward(&mut self, q: &[u8], now: u64, out: &mut Vec<Reply>) {
        let at = self.core.upstream_of(q);
        let sent = match (&self.sock, self.upstreams.get(at)) {
            (Some(s), Some(a)) => s.send_to(q, a).is_ok(),
            _ => false,
        };
        if !sent && let Some(next) = self.core.upstream_failed(q, now) {
            self.next(next, now, out);
        }
    }

    /// A query its upstream did not answer: ask the next one, or answer SERVFAIL.
    fn next(&mut self, next: Next<Client>, now: u64, out: &mut Vec<Reply>) {
        match next {
            // Bounded: each failure moves the query on, and after the last upstream it is
            // Fail.
            Next::Again(q) => self.forward(&q, now, out),
            Next::Fail(c, b) => self.answer(c, &b, now, out),
        }
    }

    fn upstream_answer(&mut self, m: &[u8], out: &mut Vec<Reply>) {
        if let Some((c, b)) = self.core.upstream_reply(m) {
            let now = self.now_ms();
            self.answer(c, &b, now, out);
        }
    }

    fn answer(&mut self, c: Client, msg: &[u8], now: u64, out: &mut Vec<Reply>) {
        match c {
            Client::Udp(u) => out.push(Reply {
                bridge: u.bridge,
                port: u.port,
                dst_mac: u.mac,
                src_mac: u.gw_mac,
                packet: udp_packet((u.gw, 53), (u.ip, u.udp_port), msg),
            }),
            Client::Tcp(t) => out.extend(self.tcp.deliver(t, msg, now)),
        }
    }

    fn tcp_poll(&mut self, now: u64, out: &mut Vec<Reply>) {
        let (replies, forward) = {
            let reg = self.registry.read().unwrap_or_else(|e| e.into_inner());
            let up = self.sock.is_some();
            self.tcp.poll(&mut self.core, &reg, up, now)
        };
        out.extend(replies);
        for q in forward {
            self.forward(&q, now, out);
        }
    }
}

/// An IPv4/UDP packet (TTL 64, checksums filled).
pub fn udp_packet(src: (Ipv4Addr, u16), dst: (Ipv4Addr, u16), payload: &[u8]) -> Vec<u8> {
    let udp = UdpRepr {
        src_port: src.1,
        dst_port: dst.1,
    };
    let ip = Ipv4Repr {
        src_addr: src.0,
        dst_addr: dst.0,
        next_header: IpProtocol::Udp,
        payload_len: udp.header_len() + payload.len(),
        hop_limit: 64,
    };
    let mut buf = vec![0u8; ip.buffer_len() + ip.payload_len];
    let caps = ChecksumCapabilities::default();
    let mut p = Ipv4Packet::new_unchecked(&mut buf[..]);
    ip.emit(&mut p, &caps);
    let mut u = UdpPacket::new_unchecked(p.payload_mut());
    udp.emit(
        &mut u,
        &IpAddress::Ipv4(src.0),
        &IpAddress::Ipv4(dst.0),
        payload.len(),
        |b| b.copy_from_slice(payload),
        &caps,
    );
    buf
}
