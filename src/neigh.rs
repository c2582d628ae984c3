//! The neighbour table (ARP cache): (bridge, IPv4 address) -> MAC, with Linux's states, a short
//! queue of packets per unresolved entry, and aging.
//!
//! Contract:
//! - Lookups hash a packed u64 key with one multiply (no SipHash) and never allocate; inserting
//!   a new neighbour may grow the table, bounded per bridge (`bridge_limit`, default
//!   [`DEFAULT_NEIGH_PER_BRIDGE`]) and in all (`capacity`). A bridge at its bound first evicts
//!   an unused entry of its own (`FAILED`, then the least recently used `STALE` one, among at
//!   most [`EVICT_SCAN`] looked at), else the new neighbour is refused: one bridge's tenants
//!   cannot push out another bridge's neighbours. (Keys are addresses the caller already
//!   checked against a subnet, so the fixed hash is not a flooding target past that bound.)
//! - Broadcast requests (a new resolution, retransmissions) are limited to one per second per
//!   entry (Linux's retrans_time) and [`ARP_RATE`] per second per bridge: past that a new
//!   resolution is refused (`Resolve::Refused`, counted `rate_limited`) and retransmissions
//!   wait. Unicast probes to a known MAC are only limited per entry.
//! - States follow Linux's neighbour state machine (`ip neigh`): `INCOMPLETE` while broadcast
//!   requests are out (up to [`MCAST_PROBES`], one per [`RETRANS_TIME`]), `REACHABLE` for
//!   [`REACHABLE_TIME`] after a confirmation (an ARP reply to the router), then `STALE`; a stale
//!   entry is still used, and its first use starts `DELAY`; after [`DELAY_TIME`] without a
//!   confirmation it goes to `PROBE`: up to [`UCAST_PROBES`] unicast requests to the known MAC
//!   (packets still go to it), then broadcast requests again (`INCOMPLETE`), then `FAILED`:
//!   packets are dropped for [`FAILED_HOLD`] seconds, then resolution starts again.
//! - Any ARP packet (request, reply, gratuitous) whose sender address is already in the table
//!   updates it: a reply to the router confirms (`REACHABLE`); any other ARP with a new MAC makes
//!   the entry `STALE` with that MAC (so a replaced host is followed at once). New entries are
//!   only created by the caller's choice (`may_create`: senders on the gateway's subnet).
//! - An unresolved entry holds up to [`QUEUE_LEN`] packets (Linux keeps 3); at most
//!   [`QUEUE_PER_BRIDGE`] per bridge and [`QUEUE_TOTAL`] in all are held, so one bridge cannot
//!   pin the frame pool. Held frames are returned by the update that resolves the entry, or put
//!   on the `dropped` list when it fails or is removed (the caller frees and counts them).
//! - Time is passed in (seconds). `age` runs the timers: it queues requests that are due
//!   (`take_due`), fails entries out of probes, and removes entries unused for `aging` seconds.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use crate::fdb::PortId;
use crate::packet::Desc;
use crate::wire::MacAddr;

/// Default neighbour aging time (seconds): an entry unused this long is removed.
pub const DEFAULT_NEIGH_AGING: u32 = 300;
/// Default most neighbours.
pub const DEFAULT_NEIGH_CAPACITY: usize = 65536;
/// Seconds an entry stays `REACHABLE` after a confirmation (Linux: base_reachable_time 30 s).
pub const REACHABLE_TIME: u32 = 30;
/// Seconds in `DELAY` before unicast probes start (Linux: delay_first_probe_time 5 s).
pub const DELAY_TIME: u32 = 5;
/// Seconds between two requests for one address (Linux: retrans_time 1 s).
pub const RETRANS_TIME: u32 = 1;
/// Unicast probes in `PROBE` before broadcasting (Linux: ucast_solicit 3).
pub const UCAST_PROBES: u8 = 3;
/// Broadcast requests before `FAILED` (Linux: mcast_solicit 3).
pub const MCAST_PROBES: u8 = 3;
/// Seconds a `FAILED` entry drops packets before resolution is tried again.
pub const FAILED_HOLD: u32 = 3;
/// Packets held per unresolved entry (Linux: unres_qlen_bytes, about 3 packets).
pub const QUEUE_LEN: usize = 3;
/// Packets held per bridge, all entries together.
pub const QUEUE_PER_BRIDGE: usize = 64;
/// Packets held in all.
pub const QUEUE_TOTAL: usize = 256;
/// Default most neighbours per bridge (Linux: gc_thresh3 1024 per table).
pub const DEFAULT_NEIGH_PER_BRIDGE: usize = 4096;
/// Broadcast ARP requests per second per bridge, all entries together.
pub const ARP_RATE: u32 = 100;
/// Entries looked at to find one to evict when a bridge is at its bound.
pub const EVICT_SCAN: usize = 64;

/// A multiply-shift hasher for packed u64 keys.
#[derive(Default)]
pub struct U64Hasher(u64);

impl Hasher for U64Hasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ *b as u64).wrapping_mul(0x100_0000_01b3);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = v.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(32);
    }
}

/// A `HashMap` keyed by packed u64s, hashed with one multiply.
pub type U64Map<V> = HashMap<u64, V, BuildHasherDefault<U64Hasher>>;

/// Resolution state (Linux's NUD_* states).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Broadcast requests out, no MAC yet.
    Incomplete,
    /// Confirmed within [`REACHABLE_TIME`].
    Reachable,
    /// MAC known but not confirmed lately; still used.
    Stale,
    /// Used while stale: waiting [`DELAY_TIME`] for a confirmation before probing.
    Delay,
    /// Unicast requests to the known MAC.
    Probe,
    /// Resolution failed: packets dropped for [`FAILED_HOLD`] seconds.
    Failed,
    /// Static (`ip neigh replace ... nud permanent`): set by the control plane, never aged,
    /// probed or changed by ARP; removed only by [`Neighbours::remove_permanent`].
    Permanent,
}

impl State {
    /// Upper-case name, as `ip neigh` prints it.
    pub fn name(self) -> &'static str {
        match self {
            State::Incomplete => "INCOMPLETE",
            State::Reachable => "REACHABLE",
            State::Stale => "STALE",
            State::Delay => "DELAY",
            State::Probe => "PROBE",
            State::Failed => "FAILED",
            State::Permanent => "PERMANENT",
        }
    }
}

/// A packet waiting for its next hop: the frame (rewritten except the destination MAC), its L3
/// offset, and the port it came from (charged if it is dropped).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Held {
    /// The frame.
    pub desc: Desc,
    /// Offset of the IPv4 header.
    pub l3: u8,
    /// Ingress port.
    pub in_port: PortId,
}

/// Packets released by a resolution, to send to `mac`.
#[derive(Debug, Clone, Copy)]
pub struct Released {
    /// The resolved MAC.
    pub mac: MacAddr,
    held: [Held; QUEUE_LEN],
    n: usize,
}

impl Released {
    /// The released packets, oldest first.
    pub fn frames(&self) -> &[Held] {
        &self.held[..self.n]
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    state: State,
    mac: MacAddr,
    /// Reachable: last confirmation. Delay: since. Incomplete/Probe: last request. Failed: since.
    stamp: u32,
    /// Last time a packet used the entry (or it was created/updated).
    used: u32,
    /// Requests sent in the current Incomplete or Probe phase.
    probes: u8,
    qlen: u8,
    queue: [Held; QUEUE_LEN],
}

impl Entry {
    fn new(state: State, mac: MacAddr, now: u32) -> Entry {
        Entry {
            state,
            mac,
            stamp: now,
            used: now,
            probes: if state == State::Incomplete { 1 } else { 0 },
            qlen: 0,
            queue: [Held::default(); QUEUE_LEN],
        }
    }
}

/// What the caller should do for a packet to (bridge, ip).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolve {
    /// Send to this MAC.
    Mac(MacAddr),
    /// Send to this MAC, and send a unicast ARP request to it (the entry is being probed).
    Probe(MacAddr),
    /// Unknown: broadcast an ARP request now, and hold the packet.
    SendRequest,
    /// A request is already out: hold the packet.
    Pending,
    /// Resolution failed lately: drop the packet (and tell its sender).
    Failed,
    /// No resolution could start: the bridge's neighbour bound is reached with nothing to
    /// evict, or its ARP request rate is spent. Drop the packet (counted `arp-pending`).
    Refused,
}

/// An ARP request the timers want sent: (bridge, address, Some(MAC) for a unicast probe).
pub type Due = (u16, [u8; 4], Option<MacAddr>);

/// One row for `neigh-show`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct NeighRow {
    /// Bridge id.
    pub bridge: u16,
    /// Address.
    pub ip: std::net::Ipv4Addr,
    /// MAC, or None while incomplete or failed.
    pub mac: Option<String>,
    /// State name (REACHABLE, STALE, ...).
    pub state: &'static str,
    /// Seconds since the state's stamp (confirmation, last request, ...).
    pub age: u32,
    /// Packets held for this neighbour.
    pub queued: u8,
}

/// Events counted by the table (shown by `stats`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct NeighCounters {
    /// Unused entries evicted to make room on a bridge at its bound.
    pub evicted: u64,
    /// New neighbours refused: the bridge (or the table) full of entries in use.
    pub full: u64,
    /// Broadcast requests not sent (a new resolution refused, a retransmission postponed)
    /// because the bridge's [`ARP_RATE`] was spent.
    pub rate_limited: u64,
}

/// Per-bridge bookkeeping: its keys (for bounded eviction and flush) and request rate.
#[derive(Debug, Default)]
struct PerBridge {
    keys: Vec<u64>,
    /// Where the next eviction scan starts in `keys`.
    cursor: usize,
    /// The second `sent` counts requests for.
    rate_at: u32,
    sent: u32,
}

impl PerBridge {
    /// Take one broadcast request out of this second's `cap`.
    fn token(&mut self, now: u32, cap: u32) -> bool {
        if self.rate_at != now {
            self.rate_at = now;
            self.sent = 0;
        }
        if self.sent >= cap {
            return false;
        }
        self.sent += 1;
        true
    }
}

/// The neighbour table of all bridges.
pub struct Neighbours {
    map: U64Map<Entry>,
    capacity: usize,
    bridge_limit: usize,
    bridges: Vec<PerBridge>,
    counters: NeighCounters,
    aging: u32,
    /// The last resolved (key, MAC, valid until): consecutive packets usually go to the same
    /// next hop. Cleared by every change to the table.
    last: Option<(u64, MacAddr, u32)>,
    held_total: usize,
    held_bridge: Vec<u16>,
    dropped: Vec<Held>,
    due: Vec<Due>,
    /// Each bridge's broadcast requests per second ([`ARP_RATE`], or this worker's share).
    arp_rate: u32,
}

#[inline]
fn key(bridge: u16, ip: [u8; 4]) -> u64 {
    (bridge as u64) << 32 | u32::from_be_bytes(ip) as u64
}

fn unkey(k: u64) -> (u16, [u8; 4]) {
    ((k >> 32) as u16, (k as u32).to_be_bytes())
}

impl Neighbours {
    /// An empty table.
    pub fn new(capacity: usize, aging: u32) -> Neighbours {
        Neighbours {
            map: U64Map::default(),
            capacity,
            bridge_limit: DEFAULT_NEIGH_PER_BRIDGE.min(capacity),
            bridges: Vec::new(),
            counters: NeighCounters::default(),
            aging,
            last: None,
            held_total: 0,
            held_bridge: Vec::new(),
            dropped: Vec::with_capacity(QUEUE_TOTAL),
            due: Vec::new(),
            arp_rate: ARP_RATE,
        }
    }

    /// Allow this table `1 / workers` of each bridge's [`ARP_RATE`] (several workers: each
    /// resolves on its own, the bridge's total stays the rate). At least one a second.
    pub fn share_arp_rate(&mut self, workers: u32) {
        self.arp_rate = (ARP_RATE / workers.max(1)).max(1);
    }

    /// The same, with at most `limit` entries per bridge.
    pub fn with_bridge_limit(mut self, limit: usize) -> Neighbours {
        self.bridge_limit = limit;
        self
    }

    /// What the table counted.
    pub fn counters(&self) -> NeighCounters {
        self.counters
    }

    /// Entries of `bridge`.
    pub fn bridge_len(&self, bridge: u16) -> usize {
        self.bridges
            .get(bridge as usize)
            .map_or(0, |b| b.keys.len())
    }

    fn per_bridge(&mut self, bridge: u16) -> &mut PerBridge {
        let b = bridge as usize;
        if self.bridges.len() <= b {
            self.bridges.resize_with(b + 1, PerBridge::default);
        }
        &mut self.bridges[b]
    }

    /// Make room for one new entry of `bridge`: true when there is (an unused entry may have
    /// been evicted), false (counted `full`) when its bound or the table's is reached with
    /// nothing to evict.
    fn room(&mut self, bridge: u16) -> bool {
        let bridge_full = self.bridge_len(bridge) >= self.bridge_limit;
        if !bridge_full && self.map.len() < self.capacity {
            return true;
        }
        if self.evict(bridge) {
            self.counters.evicted += 1;
            return !bridge_full || self.bridge_len(bridge) < self.bridge_limit;
        }
        self.counters.full += 1;
        false
    }

    /// Remove one unused entry of `bridge`: a FAILED one, else the least recently used STALE
    /// one, among at most [`EVICT_SCAN`] entries from a rotating cursor.
    fn evict(&mut self, bridge: u16) -> bool {
        let Some(pb) = self.bridges.get_mut(bridge as usize) else {
            return false;
        };
        let n = pb.keys.len();
        let mut best: Option<(usize, bool, u32)> = None;
        for i in 0..n.min(EVICT_SCAN) {
            let at = (pb.cursor + i) % n;
            let Some(e) = self.map.get(&pb.keys[at]) else {
                continue;
            };
            let cand = match e.state {
                State::Failed => (at, true, e.used),
                State::Stale if e.qlen == 0 => (at, false, e.used),
                _ => continue,
            };
            if cand.1 {
                best = Some(cand);
                break;
            }
            if best.is_none_or(|b| !b.1 && cand.2 < b.2) {
                best = Some(cand);
            }
        }
        pb.cursor = (pb.cursor + EVICT_SCAN) % n.max(1);
        let Some((at, _, _)) = best else {
            return false;
        };
        let k = pb.keys.swap_remove(at);
        self.map.remove(&k);
        self.last = None;
        true
    }

    /// Insert a new entry (room was made).
    fn insert(&mut self, k: u64, e: Entry) {
        self.map.insert(k, e);
        self.per_bridge(unkey(k).0).keys.push(k);
    }

    /// Rebuild the per-bridge key lists after entries were removed in bulk.
    fn rebuild_keys(&mut self) {
        for pb in &mut self.bridges {
            pb.keys.clear();
            pb.cursor = 0;
        }
        let keys: Vec<u64> = self.map.keys().copied().collect();
        for k in keys {
            self.per_bridge(unkey(k).0).keys.push(k);
        }
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Packets held in all.
    pub fn held(&self) -> usize {
        self.held_total
    }

    /// The state of (bridge, ip), if known.
    pub fn state(&self, bridge: u16, ip: [u8; 4]) -> Option<State> {
        self.map.get(&key(bridge, ip)).map(|e| e.state)
    }

    /// Decide how to reach `ip` on `bridge` at `now`.
    #[inline]
    pub fn resolve(&mut self, bridge: u16, ip: [u8; 4], now: u32) -> Resolve {
        let k = key(bridge, ip);
        if let Some((lk, m, until)) = self.last
            && lk == k
            && now < until
        {
            return Resolve::Mac(m);
        }
        self.resolve_entry(k, now)
    }

    /// `resolve` past the one-entry cache: the table and the state machine.
    #[inline(never)]
    fn resolve_entry(&mut self, k: u64, now: u32) -> Resolve {
        let bridge = unkey(k).0;
        let cap = self.arp_rate;
        // One probe of the map: a known next hop (the common case) goes on with its entry.
        let Some(e) = self.map.get_mut(&k) else {
            // The rate first: a refused resolution must not evict anything.
            if !self.per_bridge(bridge).token(now, cap) {
                self.counters.rate_limited += 1;
                return Resolve::Refused;
            }
            if !self.room(bridge) {
                return Resolve::Refused;
            }
            self.insert(k, Entry::new(State::Incomplete, MacAddr::default(), now));
            return Resolve::SendRequest;
        };
        let Some(pb) = self.bridges.get_mut(bridge as usize) else {
            return Resolve::Refused;
        };
        e.used = now;
        let since = now.saturating_sub(e.stamp);
        match e.state {
            State::Permanent => Resolve::Mac(e.mac),
            State::Reachable if since < REACHABLE_TIME => {
                self.last = Some((k, e.mac, e.stamp + REACHABLE_TIME));
                Resolve::Mac(e.mac)
            }
            State::Reachable | State::Stale => {
                e.state = State::Delay;
                e.stamp = now;
                Resolve::Mac(e.mac)
            }
            State::Delay if since < DELAY_TIME => Resolve::Mac(e.mac),
            State::Delay => {
                e.state = State::Probe;
                e.stamp = now;
                e.probes = 1;
                Resolve::Probe(e.mac)
            }
            State::Probe if since < RETRANS_TIME => Resolve::Mac(e.mac),
            State::Probe if e.probes < UCAST_PROBES => {
                e.stamp = now;
                e.probes += 1;
                Resolve::Probe(e.mac)
            }
            State::Probe if !pb.token(now, cap) => {
                self.counters.rate_limited += 1;
                Resolve::Mac(e.mac)
            }
            State::Probe => {
                *e = Entry::new(State::Incomplete, e.mac, now);
                Resolve::SendRequest
            }
            State::Incomplete if since < RETRANS_TIME => Resolve::Pending,
            State::Incomplete if e.probes < MCAST_PROBES => {
                if !pb.token(now, cap) {
                    self.counters.rate_limited += 1;
                    return Resolve::Pending;
                }
                e.stamp = now;
                e.probes += 1;
                Resolve::SendRequest
            }
            State::Incomplete => {
                self.fail(k, now);
                Resolve::Failed
            }
            State::Failed if since < FAILED_HOLD => Resolve::Failed,
            State::Failed if !pb.token(now, cap) => {
                self.counters.rate_limited += 1;
                Resolve::Refused
            }
            State::Failed => {
                *e = Entry::new(State::Incomplete, MacAddr::default(), now);
                Resolve::SendRequest
            }
        }
    }

    /// Hold a packet for an unresolved (bridge, ip). Err gives it back when the entry is not
    /// unresolved or a queue bound is reached (the caller drops and counts it).
    pub fn hold(&mut self, bridge: u16, ip: [u8; 4], h: Held) -> Result<(), Held> {
        let b = bridge as usize;
        if self.held_total >= QUEUE_TOTAL
            || self
                .held_bridge
                .get(b)
                .is_some_and(|n| *n as usize >= QUEUE_PER_BRIDGE)
        {
            return Err(h);
        }
        let Some(e) = self.map.get_mut(&key(bridge, ip)) else {
            return Err(h);
        };
        if e.state != State::Incomplete || e.qlen as usize >= QUEUE_LEN {
            return Err(h);
        }
        e.queue[e.qlen as usize] = h;
        e.qlen += 1;
        if self.held_bridge.len() <= b {
            self.held_bridge.resize(b + 1, 0);
        }
        self.held_bridge[b] += 1;
        self.held_total += 1;
        Ok(())
    }

    /// An ARP packet from `ip` at `mac` was seen on `bridge`. `confirms`: a reply addressed to
    /// the router (the entry becomes REACHABLE); otherwise a changed MAC makes it STALE.
    /// `may_create`: add the sender if unknown. Returns the packets the entry held, if it was
    /// unresolved, to be sent to `mac`.
    pub fn arp_seen(
        &mut self,
        bridge: u16,
        ip: [u8; 4],
        mac: MacAddr,
        now: u32,
        confirms: bool,
        may_create: bool,
    ) -> Option<Released> {
        self.last = None;
        let k = key(bridge, ip);
        let state = if confirms {
            State::Reachable
        } else {
            State::Stale
        };
        let Some(e) = self.map.get_mut(&k) else {
            if may_create && self.room(bridge) {
                self.insert(k, Entry::new(state, mac, now));
            }
            return None;
        };
        if e.state == State::Permanent {
            return None;
        }
        let unresolved = matches!(e.state, State::Incomplete | State::Failed);
        if confirms || unresolved || e.mac != mac {
            e.state = state;
            e.mac = mac;
            e.stamp = now;
            e.probes = 0;
        }
        if e.qlen == 0 {
            return None;
        }
        let r = Released {
            mac,
            held: e.queue,
            n: e.qlen as usize,
        };
        e.qlen = 0;
        self.unheld(bridge, r.n);
        Some(r)
    }

    fn unheld(&mut self, bridge: u16, n: usize) {
        self.held_total -= n;
        if let Some(c) = self.held_bridge.get_mut(bridge as usize) {
            *c -= n as u16;
        }
    }

    /// Move an entry to FAILED and its held packets to the dropped list.
    fn fail(&mut self, k: u64, now: u32) {
        let Some(e) = self.map.get_mut(&k) else {
            return;
        };
        e.state = State::Failed;
        e.stamp = now;
        let n = e.qlen as usize;
        self.dropped.extend_from_slice(&e.queue[..n]);
        e.qlen = 0;
        self.unheld(unkey(k).0, n);
    }

    /// Learn `ip` is at `mac` on `bridge` as a confirmed (REACHABLE) entry, creating it if
    /// there is room (static set-up in tests and benches). Packets it held are dropped. Returns
    /// false when the table is full and the address is new.
    pub fn learn(&mut self, bridge: u16, ip: [u8; 4], mac: MacAddr, now: u32) -> bool {
        let k = key(bridge, ip);
        if !self.map.contains_key(&k) && !self.room(bridge) {
            return false;
        }
        if let Some(r) = self.arp_seen(bridge, ip, mac, now, true, true) {
            self.dropped.extend_from_slice(r.frames());
        }
        true
    }

    /// Make `ip` on `bridge` a PERMANENT entry at `mac` (created, or replacing whatever state
    /// it had; packets it held go to the dropped list). Returns false when the table is full
    /// and the address is new.
    pub fn set_permanent(&mut self, bridge: u16, ip: [u8; 4], mac: MacAddr, now: u32) -> bool {
        self.last = None;
        let k = key(bridge, ip);
        if let Some(e) = self.map.get_mut(&k) {
            let n = e.qlen as usize;
            self.dropped.extend_from_slice(&e.queue[..n]);
            *e = Entry::new(State::Permanent, mac, now);
            self.unheld(bridge, n);
            return true;
        }
        if !self.room(bridge) {
            return false;
        }
        self.insert(k, Entry::new(State::Permanent, mac, now));
        true
    }

    /// Remove the PERMANENT entry for `ip` on `bridge`; true if there was one (entries in
    /// other states are left alone).
    pub fn remove_permanent(&mut self, bridge: u16, ip: [u8; 4]) -> bool {
        self.last = None;
        let k = key(bridge, ip);
        if self
            .map
            .get(&k)
            .is_some_and(|e| e.state == State::Permanent)
        {
            self.map.remove(&k);
            if let Some(pb) = self.bridges.get_mut(bridge as usize)
                && let Some(i) = pb.keys.iter().position(|x| *x == k)
            {
                pb.keys.swap_remove(i);
            }
            return true;
        }
        false
    }

    /// Run the timers at `now`: probes and requests that are due go to the `take_due` list,
    /// entries out of probes fail (their packets go to the dropped list), failed entries past
    /// [`FAILED_HOLD`] and entries unused for the aging time are removed. Returns how many
    /// entries were removed.
    pub fn age(&mut self, now: u32) -> usize {
        self.last = None;
        let before = self.map.len();
        let aging = self.aging;
        let mut failed = Vec::new();
        let (bridges, cap) = (&mut self.bridges, self.arp_rate);
        let counters = &mut self.counters;
        let mut token = |b: u16| {
            let ok = bridges
                .get_mut(b as usize)
                .is_some_and(|pb| pb.token(now, cap));
            counters.rate_limited += u64::from(!ok);
            ok
        };
        for (k, e) in self.map.iter_mut() {
            let since = now.saturating_sub(e.stamp);
            let (b, ip) = unkey(*k);
            match e.state {
                State::Delay if since >= DELAY_TIME => {
                    e.state = State::Probe;
                    e.stamp = now;
                    e.probes = 1;
                    self.due.push((b, ip, Some(e.mac)));
                }
                State::Probe if since >= RETRANS_TIME && e.probes < UCAST_PROBES => {
                    e.stamp = now;
                    e.probes += 1;
                    self.due.push((b, ip, Some(e.mac)));
                }
                // No token this second: retried on the next pass.
                State::Probe if since >= RETRANS_TIME && token(b) => {
                    *e = Entry::new(State::Incomplete, e.mac, now);
                    self.due.push((b, ip, None));
                }
                State::Incomplete if since >= RETRANS_TIME && e.probes < MCAST_PROBES => {
                    if !token(b) {
                        continue;
                    }
                    e.stamp = now;
                    e.probes += 1;
                    self.due.push((b, ip, None));
                }
                State::Incomplete if since >= RETRANS_TIME => failed.push(*k),
                State::Reachable if since >= REACHABLE_TIME => e.state = State::Stale,
                _ => {}
            }
        }
        for k in failed {
            self.fail(k, now);
        }
        self.map.retain(|_, e| match e.state {
            State::Failed => now.saturating_sub(e.stamp) < FAILED_HOLD,
            State::Incomplete | State::Probe | State::Permanent => true,
            _ => now.saturating_sub(e.used) <= aging,
        });
        let removed = before - self.map.len();
        if removed > 0 {
            self.rebuild_keys();
        }
        removed
    }

    /// Requests the timers want sent (drained).
    pub fn take_due(&mut self) -> Vec<Due> {
        std::mem::take(&mut self.due)
    }

    /// Held packets that were dropped (resolution failed, entry flushed); the caller frees
    /// them and counts `arp-failed` on their ingress port. Drained.
    pub fn take_dropped(&mut self) -> Vec<Held> {
        std::mem::replace(&mut self.dropped, Vec::with_capacity(QUEUE_TOTAL))
    }

    /// Every packet held or waiting on the dropped list, taken out (the entries stay): for a
    /// caller that stops, or a test that accounts for every frame.
    pub fn take_all_held(&mut self) -> Vec<Held> {
        let mut v = self.take_dropped();
        for e in self.map.values_mut() {
            v.extend_from_slice(&e.queue[..e.qlen as usize]);
            e.qlen = 0;
        }
        self.held_total = 0;
        self.held_bridge.iter_mut().for_each(|n| *n = 0);
        v
    }

    /// True when timers queued requests or dropped packets to hand out.
    pub fn has_work(&self) -> bool {
        !self.due.is_empty() || !self.dropped.is_empty()
    }

    /// Forget every neighbour of `bridge` (their held packets go to the dropped list); O(the
    /// bridge's entries). Returns how many were removed.
    pub fn flush_bridge(&mut self, bridge: u16) -> usize {
        self.flush_where(bridge, |_| true)
    }

    /// `neigh-flush`: remove bridge `bridge`'s learned entries, keeping the permanent ones
    /// (what the etcd overlay programs), as Linux's `ip neigh flush` does. Returns how many
    /// went. (Found trying uvs as a new user: a flush removed the overlay's entries for good.)
    pub fn flush_learned(&mut self, bridge: u16) -> usize {
        self.flush_where(bridge, |e| e.state != State::Permanent)
    }

    /// A port left `bridge`: forget the learned entries whose MAC `was_on_it` says, so the
    /// next packet to such an address asks again instead of going to a MAC that is gone (a
    /// container re-created with its address and a new MAC is reachable at once, not after the
    /// entry ages). Permanent entries stay. O(the bridge's entries); returns how many went.
    pub fn forget_macs(&mut self, bridge: u16, was_on_it: impl Fn(u64) -> bool) -> usize {
        self.flush_where(bridge, |e| {
            e.state != State::Permanent && was_on_it(e.mac.to_u64())
        })
    }

    /// Remove `bridge`'s entries that `gone` picks (their held packets go to the dropped
    /// list), O(the bridge's entries); returns how many.
    fn flush_where(&mut self, bridge: u16, gone: impl Fn(&Entry) -> bool) -> usize {
        self.last = None;
        let Some(pb) = self.bridges.get_mut(bridge as usize) else {
            return 0;
        };
        let mut keys = std::mem::take(&mut pb.keys);
        let before = keys.len();
        keys.retain(|k| {
            let Some(e) = self.map.get(k) else {
                return false;
            };
            if !gone(e) {
                return true;
            }
            let n = e.qlen as usize;
            self.dropped.extend_from_slice(&e.queue[..n]);
            self.map.remove(k);
            self.unheld(bridge, n);
            false
        });
        let n = before - keys.len();
        let pb = &mut self.bridges[bridge as usize];
        pb.keys = keys;
        pb.cursor = 0;
        n
    }

    /// All entries, sorted by bridge then address.
    /// At most `max` rows from position `from` (bridge in the high 32 bits, index in its key
    /// list in the low 32), unsorted, and where the next page starts (None: done). Bounded
    /// work per call, so `neigh-show` of a full table never stalls the worker; entries that
    /// change between pages may be missed or seen twice, as with `fdb-show`.
    pub fn rows_page(&self, from: u64, max: usize, now: u32) -> (Vec<NeighRow>, Option<u64>) {
        let (mut b, mut i) = ((from >> 32) as usize, (from & 0xffff_ffff) as usize);
        let mut out = Vec::with_capacity(max.min(1024));
        while b < self.bridges.len() {
            let keys = &self.bridges[b].keys;
            while i < keys.len() {
                if out.len() == max {
                    return (out, Some(((b as u64) << 32) | i as u64));
                }
                if let Some(e) = self.map.get(&keys[i]) {
                    out.push(self.row(keys[i], e, now));
                }
                i += 1;
            }
            b += 1;
            i = 0;
        }
        (out, None)
    }

    fn row(&self, k: u64, e: &Entry, now: u32) -> NeighRow {
        NeighRow {
            bridge: unkey(k).0,
            ip: std::net::Ipv4Addr::from(k as u32),
            mac: (!matches!(e.state, State::Incomplete | State::Failed)).then(|| e.mac.to_string()),
            state: e.state.name(),
            age: now.saturating_sub(e.stamp),
            queued: e.qlen,
        }
    }

    /// Every row, sorted by bridge and address (tests and small tables; `rows_page` for the
    /// control socket).
    pub fn rows(&self, now: u32) -> Vec<NeighRow> {
        let mut v: Vec<NeighRow> = self.map.iter().map(|(k, e)| self.row(*k, e, now)).collect();
        v.sort_by_key(|r| (r.bridge, r.ip));
        v
    }
}

#[cfg(test)]
mod tests;
