//! The DNS answering core: a query's bytes in, what to send out. IO-free, time injected, generic
//! over the token `T` that says where an answer goes (a UDP client, a TCP connection).
//!
//! Contract:
//! - Messages are parsed and built with `hickory-proto` only.
//! - A query for a name registered on the asking bridge is answered here: A records (TTL
//!   [`TTL`]) for `A`/`ANY`, an empty NOERROR answer for other types; `PTR` for
//!   `in-addr.arpa` names of registered addresses answers the name. Names of other bridges are
//!   not seen (the registry is asked per bridge).
//! - Any other query is forwarded to the upstream resolver with a fresh message id
//!   ([`Outcome::Forward`]); the upstream's answer goes back to the client with the client's
//!   id ([`Core::upstream_reply`]). With several upstreams (resolv.conf's nameservers, in
//!   order), a query goes to the preferred one ([`Core::upstream_of`]); one not answered
//!   within the timeout, or that could not be sent, is sent again to the next upstream
//!   ([`Next::Again`]), which becomes the preferred one for later queries, until every
//!   upstream was tried once: then SERVFAIL ([`Core::expire`], [`Core::upstream_failed`]).
//!   Without an upstream the answer is NXDOMAIN.
//! - Bytes that do not parse as a DNS query are counted (`malformed`) and dropped, never
//!   answered; a query with other than one question or another opcode gets FORMERR / NOTIMP.
//! - At most [`MAX_PENDING`] forwarded queries wait at once, shared between bridges and client
//!   addresses so that no tenant holds the table against the others ([`Core::query`] takes the
//!   asker's bridge and address): a query from an address with [`MAX_PENDING_PER_SOURCE`]
//!   waiting (on its bridge) takes the place of that address's own oldest (`source_limited`);
//!   a query that finds the table full takes the place of the oldest of the address holding
//!   the most of the bridge holding the most (the asker's own bridge, then address, on a tie:
//!   `evicted`). A tenant using many addresses of its subnet is one bridge, so other bridges
//!   keep their queries; within a bridge, containers share it by address. The query pushed out
//!   gets SERVFAIL (counted in `servfail` too; its upstream's late answer is
//!   `upstream_unmatched`), handed out by the next [`Core::expire`]: the client's resolver
//!   moves on at once instead of waiting out its timeout and asking again. So a new query is
//!   always forwarded.
//! - A forwarded query's EDNS buffer size is capped at [`MAX_UDP_PAYLOAD`], so the upstream's
//!   answer fits one frame back to the client (a larger one comes back truncated).

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr};

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, PTR};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use serde::Serialize;

use super::registry::Registry;

/// TTL of the answers for registered names (Docker's embedded DNS uses 600 s).
pub const TTL: u32 = 600;
/// Most forwarded queries waiting for the upstream at once.
pub const MAX_PENDING: usize = 1024;
/// Most forwarded queries one client address (of one bridge) has waiting at once.
pub const MAX_PENDING_PER_SOURCE: usize = 256;
/// Largest UDP answer asked of the upstream (EDNS buffer size; DNS flag day 2020's value).
pub const MAX_UDP_PAYLOAD: u16 = 1232;
/// Default wait for the upstream's answer before SERVFAIL (milliseconds).
pub const DEFAULT_UPSTREAM_TIMEOUT_MS: u64 = 2000;

/// What to do with a query.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Send these bytes back to the client.
    Answer(Vec<u8>),
    /// Send these bytes to the upstream resolver (the answer comes back via `upstream_reply`).
    Forward(Vec<u8>),
    /// Nothing to send (malformed, counted).
    Drop,
}

/// Counters of the DNS service (`dns-show --json` prints them).
#[derive(Debug, Default, Clone, Serialize)]
pub struct DnsCounters {
    /// Queries received (parsed).
    pub queries: u64,
    /// Answered from the registry.
    pub answered_local: u64,
    /// Forwarded to the upstream.
    pub forwarded: u64,
    /// Upstream answers relayed to clients.
    pub relayed: u64,
    /// Answered NXDOMAIN (no upstream).
    pub nxdomain: u64,
    /// Answered SERVFAIL (every upstream timed out or unreachable, or pushed out of the
    /// forwarding table: `evicted`, `source_limited`).
    pub servfail: u64,
    /// Forwarded queries answered SERVFAIL to make room for a query that found
    /// [`MAX_PENDING`] waiting: the oldest of the address holding the most of the bridge
    /// holding the most.
    pub evicted: u64,
    /// Forwarded queries answered SERVFAIL because their address asked another with
    /// [`MAX_PENDING_PER_SOURCE`] waiting: its own oldest.
    pub source_limited: u64,
    /// Sent again to the next upstream (the one asked did not answer in time, or could not
    /// be reached).
    pub retried: u64,
    /// Bytes that were not a DNS query (dropped).
    pub malformed: u64,
    /// Upstream messages matching no waiting query (late, spoofed or malformed; dropped).
    pub upstream_unmatched: u64,
}

struct Pending<T> {
    client: T,
    /// Who asked: bridge (name) and client address (the forwarding table's shares).
    bridge: String,
    src: Ipv4Addr,
    id: u16,
    query: Query,
    rd: bool,
    deadline_ms: u64,
    /// The message as forwarded (to send it to the next upstream).
    sent: Vec<u8>,
    /// The upstream asked, and how many have been.
    at: usize,
    tried: usize,
}

/// What to do about a forwarded query that got no answer in time or could not be sent.
#[derive(Debug, PartialEq, Eq)]
pub enum Next<T> {
    /// Send these bytes again, to the upstream [`Core::upstream_of`] now names.
    Again(Vec<u8>),
    /// Every upstream was tried: send this SERVFAIL to the client.
    Fail(T, Vec<u8>),
}

/// One bridge's share of the forwarding table.
#[derive(Default)]
struct Share {
    /// Queries waiting, over its addresses.
    held: usize,
    /// Per client address: its waiting queries' ids, oldest first.
    sources: HashMap<Ipv4Addr, VecDeque<u16>>,
}

/// Why a waiting query is pushed out of the forwarding table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Evict {
    /// Its address asked another with [`MAX_PENDING_PER_SOURCE`] waiting.
    SourceLimit,
    /// The table was full.
    Full,
}

/// See the module documentation.
pub struct Core<T> {
    pending: HashMap<u16, Pending<T>>,
    /// The pending queries by bridge and address (see [`Share`]).
    shares: HashMap<String, Share>,
    /// Pushed-out queries' SERVFAILs, handed out by the next `expire`.
    pushed_out: Vec<Next<T>>,
    next_id: u16,
    /// Wait for an upstream before the next one, or SERVFAIL (milliseconds).
    pub timeout_ms: u64,
    /// Counters.
    pub counters: DnsCounters,
    /// How many upstreams there are, and the one new queries go to.
    upstreams: usize,
    preferred: usize,
}

impl<T> Default for Core<T> {
    fn default() -> Self {
        Core {
            pending: HashMap::new(),
            shares: HashMap::new(),
            pushed_out: Vec::new(),
            // Not zero: ids start away from what a client is likely to use itself.
            next_id: 0x3c5a,
            timeout_ms: DEFAULT_UPSTREAM_TIMEOUT_MS,
            counters: DnsCounters::default(),
            upstreams: 1,
            preferred: 0,
        }
    }
}

impl<T> Core<T> {
    /// A core that waits `timeout_ms` for the upstream.
    pub fn with_timeout(timeout_ms: u64) -> Core<T> {
        Core {
            timeout_ms,
            ..Core::default()
        }
    }

    /// Set the number of upstreams (at least one is assumed when forwarding).
    pub fn set_upstreams(&mut self, n: usize) {
        self.upstreams = n.max(1);
        self.preferred = 0;
    }

    /// The upstream (index) a forwarded message goes to: the one its query is at, else the
    /// preferred one.
    pub fn upstream_of(&self, forwarded: &[u8]) -> usize {
        let id = forwarded.get(..2).map(|b| u16::from_be_bytes([b[0], b[1]]));
        id.and_then(|id| self.pending.get(&id))
            .map_or(self.preferred, |p| p.at)
    }

    /// Answer or forward `bytes`, a query from `client` (address `src`) on `bridge`;
    /// `upstream`: whether there is an upstream to forward to. Forwarding may push out another
    /// waiting query (see the module documentation).
    #[allow(clippy::too_many_arguments)]
    pub fn query(
        &mut self,
        reg: &Registry,
        bridge: &str,
        src: Ipv4Addr,
        bytes: &[u8],
        client: T,
        now_ms: u64,
        upstream: bool,
    ) -> Outcome {
        let req = match Message::from_vec(bytes) {
            Ok(m) if m.metadata.message_type == MessageType::Query => m,
            _ => {
                self.counters.malformed += 1;
                return Outcome::Drop;
            }
        };
        self.counters.queries += 1;
        let id = req.metadata.id;
        if req.metadata.op_code != OpCode::Query {
            return self.error(&req, ResponseCode::NotImp);
        }
        let [q] = req.queries.as_slice() else {
            return self.error(&req, ResponseCode::FormErr);
        };
        if let Some(answers) = local_answers(reg, bridge, q) {
            self.counters.answered_local += 1;
            return encode(response(&req, q, ResponseCode::NoError, answers));
        }
        if !upstream {
            self.counters.nxdomain += 1;
            return self.error(&req, ResponseCode::NXDomain);
        }
        let new_id = self.fresh_id();
        let mut fwd = req.clone();
        fwd.metadata.id = new_id;
        // The answer must fit one frame on its way back (no IP fragmentation): a larger one
        // comes back truncated and the client retries over TCP.
        if let Some(e) = fwd.edns.as_mut()
            && e.max_payload() > MAX_UDP_PAYLOAD
        {
            e.set_max_payload(MAX_UDP_PAYLOAD);
        }
        let Ok(out) = fwd.to_vec() else {
            self.counters.servfail += 1;
            return self.error(&req, ResponseCode::ServFail);
        };
        if !self.make_room(bridge, src) {
            // Not reached: a full table always has a query to push out.
            self.counters.servfail += 1;
            return self.error(&req, ResponseCode::ServFail);
        }
        let share = self.shares.entry(bridge.to_string()).or_default();
        share.held += 1;
        share.sources.entry(src).or_default().push_back(new_id);
        self.pending.insert(
            new_id,
            Pending {
                client,
                bridge: bridge.to_string(),
                src,
                id,
                query: q.clone(),
                rd: req.metadata.recursion_desired,
                deadline_ms: now_ms + self.timeout_ms,
                sent: out.clone(),
                at: self.preferred,
                tried: 1,
            },
        );
        self.counters.forwarded += 1;
        Outcome::Forward(out)
    }

    /// An answer from the upstream: the client it belongs to and the bytes to send it (the
    /// upstream's message with the client's id), or None if it matches no waiting query.
    pub fn upstream_reply(&mut self, bytes: &[u8]) -> Option<(T, Vec<u8>)> {
        let m = match Message::from_vec(bytes) {
            Ok(m) if m.metadata.message_type == MessageType::Response => m,
            _ => {
                self.counters.upstream_unmatched += 1;
                return None;
            }
        };
        let same = |p: &Pending<T>| m.queries.first() == Some(&p.query);
        match self.pending.get(&m.metadata.id) {
            Some(p) if same(p) => {}
            _ => {
                self.counters.upstream_unmatched += 1;
                return None;
            }
        }
        let p = self.take(m.metadata.id)?;
        let mut out = bytes.to_vec();
        // The header's first two bytes are the message id (RFC 1035 4.1.1): the client's.
        out[0..2].copy_from_slice(&p.id.to_be_bytes());
        self.counters.relayed += 1;
        Some((p.client, out))
    }

    /// The upstream could not be asked for the query sent as `forwarded` at `now_ms`: the
    /// next upstream, or SERVFAIL when all were tried.
    pub fn upstream_failed(&mut self, forwarded: &[u8], now_ms: u64) -> Option<Next<T>> {
        let id = u16::from_be_bytes([*forwarded.first()?, *forwarded.get(1)?]);
        self.next(id, now_ms)
    }

    /// The SERVFAILs of queries pushed out of the forwarding table since the last call, then
    /// the queries whose upstream answer is overdue at `now_ms`: each goes to the next
    /// upstream, or gets SERVFAIL when all were tried.
    pub fn expire(&mut self, now_ms: u64) -> Vec<Next<T>> {
        let late: Vec<u16> = self
            .pending
            .iter()
            .filter(|(_, p)| p.deadline_ms <= now_ms)
            .map(|(id, _)| *id)
            .collect();
        let mut out = std::mem::take(&mut self.pushed_out);
        out.extend(late.into_iter().filter_map(|id| self.next(id, now_ms)));
        out
    }

    /// Make room for a query from `src` on `bridge` (see the module documentation): push out
    /// the waiting query it displaces, if any. False only when the table is full and holds
    /// nothing to push out (not reached).
    fn make_room(&mut self, bridge: &str, src: Ipv4Addr) -> bool {
        let Some((victim, why)) = self.victim(bridge, src) else {
            return self.pending.len() < MAX_PENDING;
        };
        let Some(p) = self.take(victim) else {
            return self.pending.len() < MAX_PENDING;
        };
        match why {
            Evict::SourceLimit => self.counters.source_limited += 1,
            Evict::Full => self.counters.evicted += 1,
        }
        self.counters.servfail += 1;
        let b = servfail(&p);
        self.pushed_out.push(Next::Fail(p.client, b));
        self.pending.len() < MAX_PENDING
    }

    /// The waiting query a new one from `src` on `bridge` displaces: with
    /// [`MAX_PENDING_PER_SOURCE`] of `src`'s waiting, its oldest; else, when the table is
    /// full, the oldest of the address holding the most of the bridge holding the most (the
    /// asker's own bridge, then address, on a tie); else none.
    fn victim(&self, bridge: &str, src: Ipv4Addr) -> Option<(u16, Evict)> {
        let own = self.shares.get(bridge).and_then(|s| s.sources.get(&src));
        if let Some(q) = own
            && q.len() >= MAX_PENDING_PER_SOURCE
        {
            return Some((*q.front()?, Evict::SourceLimit));
        }
        if self.pending.len() < MAX_PENDING {
            return None;
        }
        let (name, share) = self
            .shares
            .iter()
            .max_by_key(|(name, s)| (s.held, name.as_str() == bridge))?;
        let (_, queue) = share
            .sources
            .iter()
            .max_by_key(|(a, q)| (q.len(), name.as_str() == bridge && **a == src))?;
        Some((*queue.front()?, Evict::Full))
    }

    /// Remove waiting query `id`, from the table and from its asker's share.
    fn take(&mut self, id: u16) -> Option<Pending<T>> {
        let p = self.pending.remove(&id)?;
        if let Some(share) = self.shares.get_mut(&p.bridge) {
            if let Some(q) = share.sources.get_mut(&p.src)
                && let Some(at) = q.iter().position(|&i| i == id)
            {
                q.remove(at);
                share.held = share.held.saturating_sub(1);
                if q.is_empty() {
                    share.sources.remove(&p.src);
                }
            }
            if share.held == 0 {
                self.shares.remove(&p.bridge);
            }
        }
        Some(p)
    }

    /// Query `id` got nothing from its upstream: on to the next (which new queries then
    /// prefer), or SERVFAIL.
    fn next(&mut self, id: u16, now_ms: u64) -> Option<Next<T>> {
        let p = self.pending.get_mut(&id)?;
        if p.tried < self.upstreams {
            p.tried += 1;
            p.at = (p.at + 1) % self.upstreams;
            p.deadline_ms = now_ms + self.timeout_ms;
            self.preferred = p.at;
            self.counters.retried += 1;
            return Some(Next::Again(p.sent.clone()));
        }
        let p = self.take(id)?;
        self.counters.servfail += 1;
        let b = servfail(&p);
        Some(Next::Fail(p.client, b))
    }

    /// Queries waiting for the upstream.
    pub fn waiting(&self) -> usize {
        self.pending.len()
    }

    fn fresh_id(&mut self) -> u16 {
        // A Weyl sequence over u16 (odd step): every id once per 65536, skipping ones in use.
        loop {
            self.next_id = self.next_id.wrapping_add(0x9e37);
            if !self.pending.contains_key(&self.next_id) {
                return self.next_id;
            }
        }
    }

    fn error(&mut self, req: &Message, code: ResponseCode) -> Outcome {
        let mut r = Message::error_msg(req.metadata.id, req.metadata.op_code, code);
        r.metadata.recursion_desired = req.metadata.recursion_desired;
        r.metadata.recursion_available = true;
        r.add_queries(req.queries.iter().cloned());
        encode(r)
    }
}

/// SERVFAIL for a waiting query.
fn servfail<T>(p: &Pending<T>) -> Vec<u8> {
    let mut r = Message::error_msg(p.id, OpCode::Query, ResponseCode::ServFail);
    r.metadata.recursion_desired = p.rd;
    r.metadata.recursion_available = true;
    r.add_query(p.query.clone());
    r.to_vec().unwrap_or_default()
}

/// The answer records for `q` if its name is registered on `bridge` (None: not ours).
fn local_answers(reg: &Registry, bridge: &str, q: &Query) -> Option<Vec<Record>> {
    let name = q.name().to_lowercase();
    let text = name.to_ascii();
    let text = text.trim_end_matches('.');
    if q.query_type() == RecordType::PTR {
        let Ok(net) = name.parse_arpa_name() else {
            return None;
        };
        let IpAddr::V4(ip) = net.addr() else {
            return None;
        };
        if net.prefix_len() != 32 {
            return None;
        }
        let host = reg.reverse(bridge, ip)?;
        let target = Name::from_ascii(format!("{host}.")).ok()?;
        return Some(vec![Record::from_rdata(
            q.name().clone(),
            TTL,
            RData::PTR(PTR(target)),
        )]);
    }
    let ips: Vec<Ipv4Addr> = reg.lookup(bridge, text);
    if ips.is_empty() {
        return None;
    }
    if !matches!(q.query_type(), RecordType::A | RecordType::ANY) {
        return Some(Vec::new());
    }
    Some(
        ips.into_iter()
            .map(|ip| Record::from_rdata(q.name().clone(), TTL, RData::A(A(ip))))
            .collect(),
    )
}

fn response(req: &Message, q: &Query, code: ResponseCode, answers: Vec<Record>) -> Message {
    let mut r = Message::response(req.metadata.id, OpCode::Query);
    r.metadata.response_code = code;
    r.metadata.recursion_desired = req.metadata.recursion_desired;
    r.metadata.recursion_available = true;
    r.add_query(q.clone());
    r.add_answers(answers);
    r
}

fn encode(m: Message) -> Outcome {
    match m.to_vec() {
        Ok(b) => Outcome::Answer(b),
        Err(_) => Outcome::Drop,
    }
}
