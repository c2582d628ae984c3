//! DNS over TCP on gateway addresses: one smoltcp interface (`Medium::Ip`) per bridge, fed with
//! the punted TCP segments, whose output goes back to the worker as replies.
//!
//! Contract:
//! - Each bridge's endpoint listens on `GATEWAY:53` with a few spare listening sockets (several
//!   clients may connect at once), at most [`MAX_CONNS`] sockets a bridge; a connection idle for
//!   [`IDLE_MS`] is aborted.
//! - No client address holds a bridge's sockets against the others ([`pick_victim`]): a new
//!   connection (a SYN for a connection the endpoint does not have) from an address holding
//!   [`MAX_PER_SOURCE`] closes that address's own connection idle longest
//!   (`TcpCounters::source_limited`); one that finds no socket listening closes the connection
//!   idle longest of the address holding the most (closing ones first; the newcomer's own on a
//!   tie: `TcpCounters::evicted`), so a new client always gets in. The closed connection is reset.
//! - A connection carries DNS messages with the two-byte length prefix of RFC 1035 4.2.2; each
//!   is answered through the same [`Core`] as UDP queries (a forwarded one is answered when the
//!   upstream answers, over UDP upstream). A malformed message closes the connection.
//! - Segments leave toward the MAC and port the client's last segment came from.

use std::collections::{HashMap, VecDeque};
use std::net::Ipv4Addr;

use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{Device, DeviceCapabilities, Medium, RxToken, TxToken};
use smoltcp::socket::tcp;
use smoltcp::time::Instant;
use smoltcp::wire::{HardwareAddress, IpAddress, IpCidr};

use super::answer::{Core, Outcome};
use super::punt::{Punted, Reply};
use super::registry::Registry;
use crate::fdb::PortId;

/// Most TCP sockets (connections and listeners) of one bridge.
pub const MAX_CONNS: usize = 64;
/// Most connections one client address holds on one bridge.
pub const MAX_PER_SOURCE: usize = 16;
/// Listening sockets kept ready per bridge.
const SPARE_LISTENERS: usize = 4;
/// A connection idle this long is aborted (milliseconds).
pub const IDLE_MS: u64 = 10_000;
/// Most bytes buffered per connection (one DNS message is at most 65535 + 2).
const BUF: usize = 65_537;

/// Where a forwarded TCP query's answer goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpClient {
    /// Bridge id.
    pub bridge: u16,
    /// The connection.
    pub socket: SocketHandle,
}

/// A queue device: punted packets in, packets for the worker out (tests drive a client with it).
#[derive(Default)]
pub(super) struct Queue {
    pub(super) rx: VecDeque<Vec<u8>>,
    pub(super) tx: VecDeque<Vec<u8>>,
}

pub(super) struct Rx(Vec<u8>);
pub(super) struct Tx<'a>(&'a mut VecDeque<Vec<u8>>);

impl RxToken for Rx {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl TxToken for Tx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut b = vec![0; len];
        let r = f(&mut b);
        self.0.push_back(b);
        r
    }
}

impl Device for Queue {
    type RxToken<'a> = Rx;
    type TxToken<'a> = Tx<'a>;

    fn receive(&mut self, _: Instant) -> Option<(Rx, Tx<'_>)> {
        let p = self.rx.pop_front()?;
        Some((Rx(p), Tx(&mut self.tx)))
    }

    fn transmit(&mut self, _: Instant) -> Option<Tx<'_>> {
        Some(Tx(&mut self.tx))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut c = DeviceCapabilities::default();
        c.medium = Medium::Ip;
        c.max_transmission_unit = 1500;
        c
    }
}

/// Per-connection state.
#[derive(Default)]
struct Conn {
    buf: Vec<u8>,
    last_ms: u64,
}

/// One bridge's TCP endpoint.
struct Endpoint {
    name: String,
    gw: Ipv4Addr,
    gw_mac: [u8; 6],
    dev: Queue,
    iface: Interface,
    sockets: SocketSet<'static>,
    conns: HashMap<SocketHandle, Conn>,
    /// client address -> (MAC, port) of its last segment.
    clients: HashMap<Ipv4Addr, ([u8; 6], PortId)>,
}

impl Endpoint {
    fn new(name: &str, gw: Ipv4Addr, len: u8, gw_mac: [u8; 6], now: Instant) -> Endpoint {
        let mut dev = Queue::default();
        let mut cfg = Config::new(HardwareAddress::Ip);
        cfg.random_seed = u64::from(u32::from(gw)) ^ now.total_millis() as u64;
        let mut iface = Interface::new(cfg, &mut dev, now);
        iface.update_ip_addrs(|a| {
            let _ = a.push(IpCidr::new(IpAddress::Ipv4(gw), len));
        });
        Endpoint {
            name: name.to_string(),
            gw,
            gw_mac,
            dev,
            iface,
            sockets: SocketSet::new(Vec::new()),
            conns: HashMap::new(),
            clients: HashMap::new(),
        }
    }

    /// Keep `SPARE_LISTENERS` sockets listening (within `MAX_CONNS`); their idle clocks start
    /// at `now_ms` (from 0, a SYN that reached a new listener before `serve` saw it listening
    /// found it idle for the daemon's whole life, and the connection was reset at once).
    fn listen(&mut self, now_ms: u64) {
        let listening = self
            .sockets
            .iter()
            .filter(|(_, s)| matches!(s, smoltcp::socket::Socket::Tcp(t) if t.is_listening()))
            .count();
        for _ in listening..SPARE_LISTENERS {
            if self.conns.len() >= MAX_CONNS {
                break;
            }
            let mut s = tcp::Socket::new(
                tcp::SocketBuffer::new(vec![0; 4096]),
                tcp::SocketBuffer::new(vec![0; 16384]),
            );
            if s.listen(53).is_err() {
                break;
            }
            let h = self.sockets.add(s);
            self.conns.insert(
                h,
                Conn {
                    buf: Vec::new(),
                    last_ms: now_ms,
                },
            );
        }
    }
}

/// Connections closed to admit others, over every bridge (`dns-show --json`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct TcpCounters {
    /// A new connection found no socket free: the longest-idle one of the address holding the
    /// most was closed.
    pub evicted: u64,
    /// A new connection from an address holding [`MAX_PER_SOURCE`]: its own longest-idle one
    /// was closed.
    pub source_limited: u64,
}

/// The TCP endpoints of every bridge (see the module documentation).
#[derive(Default)]
pub struct TcpDns {
    endpoints: HashMap<u16, Endpoint>,
    /// Connections closed to admit others.
    pub counters: TcpCounters,
}

/// Why a connection is closed to admit another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Evict {
    /// The newcomer's address holds [`MAX_PER_SOURCE`]: one of its own goes.
    SourceLimit,
    /// No socket free: one of the address holding the most goes.
    Full,
}

/// A connection as [`pick_victim`] sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Held<K> {
    /// Which connection.
    pub key: K,
    /// The client's address.
    pub src: Ipv4Addr,
    /// Past ESTABLISHED (closing, waiting out TIME_WAIT): serves no one.
    pub closing: bool,
    /// When it last received data (its open before any).
    pub last_ms: u64,
}

/// The connection to close so a new one from `src` gets in: with `per_source` of `src`'s held,
/// its own idle longest; else, when `full`, closing ones first, then the connection idle
/// longest of the address holding the most (`src`'s own on a tie); else none.
pub fn pick_victim<K: Copy>(
    held: &[Held<K>],
    src: Ipv4Addr,
    full: bool,
    per_source: usize,
) -> Option<(K, Evict)> {
    let count = |a: Ipv4Addr| held.iter().filter(|h| h.src == a).count();
    let oldest = |it: &mut dyn Iterator<Item = &Held<K>>| {
        it.min_by_key(|h| (!h.closing, h.last_ms)).map(|h| h.key)
    };
    if count(src) >= per_source {
        let own = oldest(&mut held.iter().filter(|h| h.src == src))?;
        return Some((own, Evict::SourceLimit));
    }
    if !full {
        return None;
    }
    let victim = held.iter().min_by_key(|h| {
        (
            !h.closing,
            std::cmp::Reverse(count(h.src)),
            h.src != src,
            h.last_ms,
        )
    })?;
    Some((victim.key, Evict::Full))
}

/// The source address and port of `packet` when it is a TCP SYN (without ACK) to port 53.
fn syn_to_53(packet: &[u8]) -> Option<(Ipv4Addr, u16)> {
    let ihl = usize::from(packet.first()? & 0x0f) * 4;
    if packet.len() < ihl + 14 || packet[9] != 6 || ihl < 20 {
        return None;
    }
    let tcp = &packet[ihl..];
    let flags = tcp[13];
    let dst = u16::from_be_bytes([tcp[2], tcp[3]]);
    (flags & 0x12 == 0x02 && dst == 53).then(|| {
        let src = Ipv4Addr::new(packet[12], packet[13], packet[14], packet[15]);
        (src, u16::from_be_bytes([tcp[0], tcp[1]]))
    })
}

impl Endpoint {
    /// Make room for a new connection from `src`:`port` (see [`pick_victim`]): the segments
    /// queued so far run first, so the sockets' states are current; the victim is reset.
    fn make_room(&mut self, src: Ipv4Addr, port: u16, now_ms: u64) -> Option<Evict> {
        let now = Instant::from_millis(now_ms as i64);
        self.iface.poll(now, &mut self.dev, &mut self.sockets);
        self.listen(now_ms);
        let mut held = Vec::new();
        let mut listening = 0;
        for &h in self.conns.keys() {
            let t = self.sockets.get::<tcp::Socket>(h);
            if t.is_listening() {
                listening += 1;
                continue;
            }
            let Some(remote) = t.remote_endpoint() else {
                continue;
            };
            let IpAddress::Ipv4(a) = remote.addr;
            if a == src && remote.port == port {
                // A retransmitted SYN of a connection it has.
                return None;
            }
            held.push(Held {
                key: h,
                src: a,
                closing: !matches!(t.state(), tcp::State::SynReceived | tcp::State::Established),
                last_ms: self.conns.get(&h).map_or(0, |c| c.last_ms),
            });
        }
        let (victim, why) = pick_victim(&held, src, listening == 0, MAX_PER_SOURCE)?;
        self.sockets.get_mut::<tcp::Socket>(victim).abort();
        // Out goes its reset; then its socket makes room for a listener.
        self.iface.poll(now, &mut self.dev, &mut self.sockets);
        self.sockets.remove(victim);
        self.conns.remove(&victim);
        self.listen(now_ms);
        Some(why)
    }
}

type Answers = (Vec<Reply>, Vec<Vec<u8>>);

impl TcpDns {
    /// Take a punted TCP segment (`gw`/`len`: the gateway address it was sent to).
    pub fn input(&mut self, p: Punted, gw: Ipv4Addr, len: u8, now_ms: u64) {
        let now = Instant::from_millis(now_ms as i64);
        let stale = self
            .endpoints
            .get(&p.bridge)
            .is_some_and(|e| e.name != p.bridge_name || e.gw != gw || e.gw_mac != p.gw_mac);
        if stale {
            self.endpoints.remove(&p.bridge);
        }
        let ep = self
            .endpoints
            .entry(p.bridge)
            .or_insert_with(|| Endpoint::new(&p.bridge_name, gw, len, p.gw_mac, now));
        ep.listen(now_ms);
        if p.packet.len() >= 20 {
            let src = Ipv4Addr::new(p.packet[12], p.packet[13], p.packet[14], p.packet[15]);
            if ep.clients.len() < 4 * MAX_CONNS || ep.clients.contains_key(&src) {
                ep.clients.insert(src, (p.client_mac, p.in_port));
            }
        }
        if let Some((src, port)) = syn_to_53(&p.packet) {
            match ep.make_room(src, port, now_ms) {
                Some(Evict::Full) => self.counters.evicted += 1,
                Some(Evict::SourceLimit) => self.counters.source_limited += 1,
                None => {}
            }
        }
        ep.dev.rx.push_back(p.packet);
    }

    /// Run every endpoint: answer complete messages through `core`; returns the packets for
    /// the worker and the queries to forward upstream.
    pub fn poll(
        &mut self,
        core: &mut Core<super::service::Client>,
        reg: &Registry,
        upstream: bool,
        now_ms: u64,
    ) -> Answers {
        let now = Instant::from_millis(now_ms as i64);
        let mut out = (Vec::new(), Vec::new());
        for (&bridge, ep) in self.endpoints.iter_mut() {
            ep.iface.poll(now, &mut ep.dev, &mut ep.sockets);
            let handles: Vec<SocketHandle> = ep.conns.keys().copied().collect();
            for h in handles {
                serve(ep, bridge, h, core, reg, upstream, now_ms, &mut out.1);
            }
            ep.listen(now_ms);
            ep.iface.poll(now, &mut ep.dev, &mut ep.sockets);
            drain(ep, bridge, &mut out.0);
        }
        out
    }

    /// The upstream's answer for a forwarded TCP query.
    pub fn deliver(&mut self, c: TcpClient, msg: &[u8], now_ms: u64) -> Vec<Reply> {
        let now = Instant::from_millis(now_ms as i64);
        let mut out = Vec::new();
        if let Some(ep) = self.endpoints.get_mut(&c.bridge)
            && ep.conns.contains_key(&c.socket)
        {
            let s = ep.sockets.get_mut::<tcp::Socket>(c.socket);
            send_msg(s, msg);
            ep.iface.poll(now, &mut ep.dev, &mut ep.sockets);
            drain(ep, c.bridge, &mut out);
        }
        out
    }

    /// Whether any bridge has a connection past listening (its timers need polls) or input
    /// not yet run.
    pub fn active(&self) -> bool {
        self.endpoints.values().any(|e| {
            !e.dev.rx.is_empty()
                || e.sockets
                    .iter()
                    .any(|(_, s)| matches!(s, smoltcp::socket::Socket::Tcp(t) if !t.is_listening()))
        })
    }

    /// Open connections (listeners included) of every bridge.
    pub fn sockets(&self) -> usize {
        self.endpoints.values().map(|e| e.conns.len()).sum()
    }
}

/// Read what `h` received, answer the complete messages, close or reap it when done.
#[allow(clippy::too_many_arguments)]
fn serve(
    ep: &mut Endpoint,
    bridge: u16,
    h: SocketHandle,
    core: &mut Core<super::service::Client>,
    reg: &Registry,
    upstream: bool,
    now_ms: u64,
    forward: &mut Vec<Vec<u8>>,
) {
    let s = ep.sockets.get_mut::<tcp::Socket>(h);
    let conn = ep.conns.entry(h).or_default();
    if s.state() == tcp::State::Closed {
        ep.sockets.remove(h);
        ep.conns.remove(&h);
        return;
    }
    if s.is_listening() {
        conn.last_ms = now_ms;
        return;
    }
    let mut chunk = [0u8; 2048];
    while s.can_recv() {
        match s.recv_slice(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) if conn.buf.len() + n <= BUF => {
                conn.buf.extend_from_slice(&chunk[..n]);
                conn.last_ms = now_ms;
            }
            Ok(_) => {
                s.abort();
                return;
            }
        }
    }
    while conn.buf.len() >= 2 {
        let len = u16::from_be_bytes([conn.buf[0], conn.buf[1]]) as usize;
        if conn.buf.len() < 2 + len {
            break;
        }
        let msg: Vec<u8> = conn.buf.drain(..2 + len).skip(2).collect();
        let client = super::service::Client::Tcp(TcpClient { bridge, socket: h });
        let src = match s.remote_endpoint() {
            Some(e) => {
                let IpAddress::Ipv4(a) = e.addr;
                a
            }
            None => Ipv4Addr::UNSPECIFIED,
        };
        match core.query(reg, &ep.name, src, &msg, client, now_ms, upstream) {
            Outcome::Answer(a) => send_msg(s, &a),
            Outcome::Forward(f) => forward.push(f),
            Outcome::Drop => {
                s.close();
                conn.buf.clear();
                return;
            }
        }
    }
    if s.state() == tcp::State::CloseWait && s.send_queue() == 0 {
        s.close();
    } else if now_ms.saturating_sub(conn.last_ms) > IDLE_MS {
        s.abort();
    }
}

/// Write one length-prefixed message (dropped if it does not fit the send buffer).
fn send_msg(s: &mut tcp::Socket, msg: &[u8]) {
    if msg.len() > u16::MAX as usize || s.send_capacity() - s.send_queue() < msg.len() + 2 {
        return;
    }
    let _ = s.send_slice(&(msg.len() as u16).to_be_bytes());
    let _ = s.send_slice(msg);
}

/// The interface's output as replies toward the clients' MACs and ports.
fn drain(ep: &mut Endpoint, bridge: u16, out: &mut Vec<Reply>) {
    while let Some(pkt) = ep.dev.tx.pop_front() {
        if pkt.len() < 20 {
            continue;
        }
        let dst = Ipv4Addr::new(pkt[16], pkt[17], pkt[18], pkt[19]);
        if let Some(&(mac, port)) = ep.clients.get(&dst) {
            out.push(Reply {
                bridge,
                port,
                dst_mac: mac,
                src_mac: ep.gw_mac,
                packet: pkt,
            });
        }
    }
}
