//! The connection table: a slot array of connections, the two-entry-per-connection index and
//! the NAT port pools (see the module contract in `mod.rs`).

use std::collections::HashMap;
use std::fmt;

use super::index::Index;
use super::key::{FlowKey, PROTO_ICMP, PROTO_TCP, PROTO_UDP};
use super::ports::PortAllocator;
use super::state::{State, TcpMemo, Timeouts, other_next, tcp_next};
use super::{CtConfig, CtError, Direction, EVICT_SCAN, MAX_LIMIT, Owner, RECLAIM_SCAN};

/// A connection's slot number. Valid until the connection is removed (`remove`, `flush`,
/// `expire`, a lookup that finds it expired, or an `insert` that evicts it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnId(u32);

impl ConnId {
    /// The slot number.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// A NAT pool's number in its table.
pub type PoolId = u16;

/// Which address of the original direction NAT rewrites.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NatKind {
    /// Source NAT (masquerade): the original packet's source becomes `addr:port`.
    Snat,
    /// Destination NAT (port mapping): the original packet's destination becomes `addr:port`.
    Dnat,
}

/// The translation applied to a connection's original direction (the reply direction gets the
/// inverse).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NatInfo {
    /// What is rewritten.
    pub kind: NatKind,
    /// The new address.
    pub addr: [u8; 4],
    /// The new port (ICMP: identifier).
    pub port: u16,
    /// The pool the port was allocated from (released on removal); set only by
    /// [`Conntrack::snat`].
    pool: Option<PoolId>,
}

impl NatInfo {
    /// Source NAT to `addr:port`.
    pub fn snat(addr: [u8; 4], port: u16) -> NatInfo {
        NatInfo {
            kind: NatKind::Snat,
            addr,
            port,
            pool: None,
        }
    }

    /// Destination NAT to `addr:port`.
    pub fn dnat(addr: [u8; 4], port: u16) -> NatInfo {
        NatInfo {
            kind: NatKind::Dnat,
            addr,
            port,
            pool: None,
        }
    }

    /// The pool owning the port, if it came from one.
    pub fn pool(&self) -> Option<PoolId> {
        self.pool
    }

    /// `orig` as it leaves after translation.
    #[inline]
    pub fn apply(&self, orig: &FlowKey) -> FlowKey {
        let mut k = *orig;
        match self.kind {
            NatKind::Snat => {
                k.src = self.addr;
                k.sport = self.port;
            }
            NatKind::Dnat => {
                k.dst = self.addr;
                k.dport = self.port;
            }
        }
        k
    }

    /// The reply tuple of a connection with original tuple `orig` under this translation.
    #[inline]
    pub fn reply_of(&self, orig: &FlowKey) -> FlowKey {
        self.apply(orig).reverse()
    }
}

/// One tracked connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conn {
    /// The tuple of the first packet.
    pub orig: FlowKey,
    /// The tuple replies carry (after NAT).
    pub reply: FlowKey,
    /// Current state.
    pub state: State,
    /// Time (seconds) of creation.
    pub created: u32,
    /// Time (seconds) of the last packet accounted.
    pub last_seen: u32,
    /// The translation, if any.
    pub nat: Option<NatInfo>,
    /// Who it is charged to (the port its first packet came in on).
    pub owner: Owner,
    /// Packets per direction (index: [`Direction::index`]).
    pub packets: [u64; 2],
    /// Bytes per direction.
    pub bytes: [u64; 2],
    memo: TcpMemo,
    /// The timeout of `state` under the table's timeouts (seconds), kept with the state: the
    /// per-packet expiry check reads it instead of working it out from protocol and state.
    timeout: u32,
}

impl Conn {
    /// The tuple a packet travelling in `dir` must carry after translation: the reverse of the
    /// other direction's tuple (identity without NAT).
    #[inline]
    pub fn rewrite(&self, dir: Direction) -> FlowKey {
        match dir {
            Direction::Original => self.reply.reverse(),
            Direction::Reply => self.orig.reverse(),
        }
    }

    /// The tuple a packet in `dir` carries on arrival.
    pub fn key(&self, dir: Direction) -> &FlowKey {
        match dir {
            Direction::Original => &self.orig,
            Direction::Reply => &self.reply,
        }
    }
}

/// One connection, for `ct-show`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnInfo {
    /// Slot number.
    pub id: ConnId,
    /// Original tuple.
    pub orig: FlowKey,
    /// Reply tuple.
    pub reply: FlowKey,
    /// State.
    pub state: State,
    /// The translation, if any.
    pub nat: Option<NatInfo>,
    /// Seconds since creation.
    pub age: u32,
    /// Seconds left before expiry if no packet comes.
    pub timeout_left: u32,
    /// Packets per direction.
    pub packets: [u64; 2],
    /// Bytes per direction.
    pub bytes: [u64; 2],
}

impl fmt::Display for ConnInfo {
    /// conntrack-tools style: `tcp 7439 ESTABLISHED src=.. dst=.. sport=.. dport=.. packets=..
    /// bytes=.. src=.. (reply tuple) .. age=.. [snat=A:P]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} {} {} packets={} bytes={} {} packets={} bytes={} age={}",
            self.orig.proto_name(),
            self.timeout_left,
            self.state,
            self.orig,
            self.packets[0],
            self.bytes[0],
            self.reply,
            self.packets[1],
            self.bytes[1],
            self.age
        )?;
        if let Some(n) = self.nat {
            let [a, b, c, d] = n.addr;
            let kind = match n.kind {
                NatKind::Snat => "snat",
                NatKind::Dnat => "dnat",
            };
            write!(f, " {kind}={a}.{b}.{c}.{d}:{}", n.port)?;
            // A hairpin connection is source-translated after a port mapping chose its
            // destination (`snat_after`): the reply tuple holds that one.
            let (r, o) = (&self.reply, self.orig.reverse());
            if n.kind == NatKind::Snat
                && (r.src != o.src || (r.proto != PROTO_ICMP && r.sport != o.sport))
            {
                let [a, b, c, d] = r.src;
                write!(f, " dnat={a}.{b}.{c}.{d}:{}", r.sport)?;
            }
        }
        Ok(())
    }
}

/// Table counters (one table per worker, so plain integers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CtStats {
    /// Connections created.
    pub inserted: u64,
    /// Connections removed because their timeout passed (by `expire` or found by a lookup).
    pub expired: u64,
    /// Expired connections removed by a full table's `insert` to make room.
    pub evicted: u64,
    /// Inserts refused: table full (the caller drops the packet).
    pub table_full: u64,
    /// Inserts refused: a tuple clashed with a live connection.
    pub clashes: u64,
    /// NAT port allocations that found no free port (the caller drops the packet).
    pub ports_exhausted: u64,
    /// Unassured connections (no reply yet, or closing) dropped by a full table's `insert` to
    /// make room (Linux's early_drop).
    pub early_dropped: u64,
    /// Inserts refused: the source address held its `per_source` connections.
    pub source_limited: u64,
    /// Inserts refused: no free index slot near a tuple's hash.
    pub collisions: u64,
    /// Connections of an owner holding more removed by a full table's `insert` to make room
    /// for an owner holding fewer (max-min sharing).
    pub reclaimed: u64,
}

/// How far and for what [`Conntrack::scan_for_room`] looks (see there).
struct Scan {
    /// Slots walked at most.
    window: usize,
    /// An expired connection of anyone makes room (a full table), not only one of ours (a
    /// source at its limit: another source's would not lower its count).
    expired_anywhere: bool,
    /// Established connections may go too, not only unassured ones.
    any_state: bool,
}

/// What [`Conntrack::scan_for_room`] did.
enum Room {
    /// Removed an expired connection.
    Expired,
    /// Removed a live one (the caller counts it).
    Taken,
    /// Found nothing to remove.
    Nothing,
}

/// The connection table of one worker.
pub struct Conntrack {
    conns: Vec<Option<Conn>>,
    free: Vec<u32>,
    index: Index,
    pools: Vec<PortAllocator>,
    timeouts: Timeouts,
    limit: usize,
    per_source: usize,
    /// Live connections per original source address.
    sources: HashMap<[u8; 4], u32>,
    /// Live connections per owner (index: [`Owner`]; grown to the highest owner seen).
    owners: Vec<u32>,
    len: usize,
    cursor: usize,
    stats: CtStats,
    /// Connections removed so far (wrapping): see [`Conntrack::removals`].
    removals: u64,
}

/// True if `c`'s timeout (that of its state under the table's timeouts) has passed at `now`.
#[inline(always)]
fn expired_by(c: &Conn, now: u32) -> bool {
    now.saturating_sub(c.last_seen) >= c.timeout
}

/// Move `c` to `state`, its timeout with it (under `timeouts`).
#[inline(always)]
fn set_state(c: &mut Conn, state: State, timeouts: &Timeouts) {
    if state != c.state {
        c.state = state;
        c.timeout = timeouts.of(c.orig.proto, state);
    }
}

/// Account a packet of `len` bytes travelling in `dir` on `c`: counters, last-seen time and
/// state (`tcp_flags` is ignored for other protocols).
#[inline(always)]
fn account(c: &mut Conn, dir: Direction, len: u32, tcp_flags: u8, now: u32, timeouts: &Timeouts) {
    c.packets[dir.index()] += 1;
    c.bytes[dir.index()] += len as u64;
    c.last_seen = now;
    let state = if c.orig.proto == PROTO_TCP {
        tcp_next(c.state, &mut c.memo, dir, tcp_flags)
    } else {
        other_next(
            c.state,
            dir,
            c.orig.proto == PROTO_UDP,
            now.wrapping_sub(c.created),
        )
    };
    set_state(c, state, timeouts);
}

impl Conntrack {
    /// A table for `cfg.limit` connections (slot array and index allocated here).
    pub fn new(cfg: CtConfig) -> Result<Conntrack, CtError> {
        if cfg.limit == 0 || cfg.limit > MAX_LIMIT {
            return Err(CtError::BadLimit { limit: cfg.limit });
        }
        Ok(Conntrack {
            conns: Vec::with_capacity(cfg.limit),
            free: Vec::with_capacity(cfg.limit),
            index: Index::new(cfg.limit * 2, cfg.hash_seed),
            pools: Vec::new(),
            timeouts: cfg.timeouts,
            limit: cfg.limit,
            per_source: cfg.per_source.clamp(1, cfg.limit),
            sources: HashMap::with_capacity(cfg.limit.min(1 << 16)),
            owners: Vec::new(),
            len: 0,
            cursor: 0,
            stats: CtStats::default(),
            removals: 0,
        })
    }

    /// Live connections (some may have expired and not been collected yet).
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when no connection is stored.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The connection limit.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// The per-source connection limit.
    pub fn per_source(&self) -> usize {
        self.per_source
    }

    /// Change the per-source limit (at least 1; connections over it stay until they end).
    pub fn set_per_source(&mut self, per_source: usize) {
        self.per_source = per_source.clamp(1, self.limit);
    }

    /// Live connections whose original source is `src`.
    pub fn source_count(&self, src: [u8; 4]) -> usize {
        self.sources.get(&src).map_or(0, |n| *n as usize)
    }

    /// Live connections charged to `owner`.
    pub fn owned(&self, owner: Owner) -> usize {
        self.owners.get(owner as usize).map_or(0, |n| *n as usize)
    }

    /// The timeouts in force.
    pub fn timeouts(&self) -> &Timeouts {
        &self.timeouts
    }

    /// Change the timeouts; they apply to existing connections at once.
    pub fn set_timeouts(&mut self, t: Timeouts) {
        self.timeouts = t;
        for c in self.conns.iter_mut().flatten() {
            c.timeout = t.of(c.orig.proto, c.state);
        }
    }

    /// Counters.
    pub fn stats(&self) -> &CtStats {
        &self.stats
    }

    /// Add a NAT port pool (control plane; may allocate). Returns its id.
    pub fn add_pool(&mut self, pool: PortAllocator) -> PoolId {
        self.pools.push(pool);
        (self.pools.len() - 1) as PoolId
    }

    /// A pool, for display.
    /// True if `ip` is the address of one of the table's port pools (a translated address,
    /// whether or not the rule that made the pool is still there).
    pub fn is_pool_address(&self, ip: [u8; 4]) -> bool {
        self.pools
            .iter()
            .any(|p| p.addr() == ip && p.range().end() >= p.range().start())
    }

    pub fn pool(&self, id: PoolId) -> Option<&PortAllocator> {
        self.pools.get(id as usize)
    }

    /// The connection in slot `id`, if live.
    #[inline]
    pub fn conn(&self, id: ConnId) -> Option<&Conn> {
        self.conns.get(id.index())?.as_ref()
    }

    #[inline(always)]
    fn expired(&self, c: &Conn, now: u32) -> bool {
        expired_by(c, now)
    }

    /// The connection `key` belongs to and the packet's direction. An expired connection found
    /// here is removed and reported as absent.
    #[inline]
    pub fn lookup(&mut self, key: &FlowKey, now: u32) -> Option<(ConnId, Direction)> {
        let (slot, dir) = self.index.get(key.pack())?;
        let c = self.conns.get(slot as usize)?.as_ref()?;
        if self.expired(c, now) {
            self.remove_expired(ConnId(slot));
            return None;
        }
        Some((ConnId(slot), dir))
    }

    /// How many connections were removed so far (wrapping). A slot's connection, its tuples and
    /// its translation change only when it is removed, so an answer of [`Conntrack::lookup`]
    /// kept while this is unchanged still names the same connection (whether it has expired
    /// since is [`Conntrack::update_live`]'s answer).
    #[inline(always)]
    pub fn removals(&self) -> u64 {
        self.removals
    }

    /// If connection `id` is live and has not expired at `now`, account a packet of `len`
    /// bytes travelling in `dir` as [`Conntrack::update`] does and return true; else change
    /// nothing and return false (a kept `lookup` answer no longer holds: `lookup` again).
    #[inline(always)]
    pub fn update_live(
        &mut self,
        id: ConnId,
        dir: Direction,
        len: u32,
        tcp_flags: u8,
        now: u32,
    ) -> bool {
        let timeouts = &self.timeouts;
        match self.conns.get_mut(id.index()) {
            Some(Some(c)) if !expired_by(c, now) => {
                account(c, dir, len, tcp_flags, now, timeouts);
                true
            }
            _ => false,
        }
    }

    /// The rare path of `lookup`, kept out of line.
    #[cold]
    #[inline(never)]
    fn remove_expired(&mut self, id: ConnId) {
        self.remove(id);
        self.stats.expired += 1;
    }

    /// True if `key` belongs to a connection that has not expired at `now` (read-only).
    #[inline]
    pub fn is_live(&self, key: &FlowKey, now: u32) -> bool {
        match self.index.get(key.pack()) {
            Some((slot, _)) => match self.conns.get(slot as usize) {
                Some(Some(c)) => !self.expired(c, now),
                _ => false,
            },
            None => false,
        }
    }

    /// Track a new connection without NAT (reply tuple: `orig` reversed), charged to `owner`
    /// (as are the connections of the calls below).
    pub fn insert(&mut self, owner: Owner, orig: FlowKey, now: u32) -> Result<ConnId, CtError> {
        self.insert_conn(owner, orig, orig.reverse(), None, now)
    }

    /// Track a new connection translated by `nat`: computes the reply tuple and inserts both
    /// index entries, or nothing on error.
    pub fn create_nat_conn(
        &mut self,
        owner: Owner,
        orig: FlowKey,
        nat: NatInfo,
        now: u32,
    ) -> Result<ConnId, CtError> {
        self.insert_conn(owner, orig, nat.reply_of(&orig), Some(nat), now)
    }

    /// Masquerade: allocate a port from `pool` whose reply tuple is free and track the
    /// connection with source NAT to the pool's address and that port.
    pub fn snat(
        &mut self,
        owner: Owner,
        orig: FlowKey,
        pool: PoolId,
        now: u32,
    ) -> Result<ConnId, CtError> {
        self.snat_after(owner, orig, None, pool, now, |_| false)
    }

    /// Source NAT after an optional destination NAT to `dnat` (address, port): both
    /// translations on one connection, as hairpin NAT needs (a container reaching a port mapped
    /// to itself or a neighbour through the gateway address: without the source rewrite the
    /// answer would bypass the router). Never hands out a port `reserved` says the address's
    /// other users hold (a port mapping's host port, a VXLAN UDP port): a reply to such a port
    /// would be taken for theirs (and, with several workers, steered to another).
    pub fn snat_after(
        &mut self,
        owner: Owner,
        orig: FlowKey,
        dnat: Option<([u8; 4], u16)>,
        pool: PoolId,
        now: u32,
        reserved: impl Fn(u16) -> bool,
    ) -> Result<ConnId, CtError> {
        let mut target = orig;
        if let Some((a, p)) = dnat {
            target.dst = a;
            target.dport = p;
        }
        let Some(p) = self.pools.get_mut(pool as usize) else {
            return Err(CtError::NoSuchPool { pool });
        };
        if p.proto() != orig.proto {
            let pool_proto = p.proto();
            return Err(CtError::PoolProto {
                pool,
                pool_proto,
                proto: orig.proto,
            });
        }
        let addr = p.addr();
        // Borrow the pool out so `is_live` can read the table (no allocation: the placeholder
        // owns an empty slice).
        let mut p = std::mem::replace(p, PortAllocator::placeholder());
        let port = p.alloc(&orig, |port| {
            reserved(port) || self.is_live(&NatInfo::snat(addr, port).reply_of(&target), now)
        });
        self.pools[pool as usize] = p;
        let Some(port) = port else {
            self.stats.ports_exhausted += 1;
            return Err(CtError::PortsExhausted {
                addr,
                proto: orig.proto,
                remote: orig.dst,
                rport: orig.dport,
            });
        };
        let mut nat = NatInfo::snat(addr, port);
        nat.pool = Some(pool);
        self.insert_conn(owner, orig, nat.reply_of(&target), Some(nat), now)
    }

    /// Insert both tuples or nothing. A pooled port in `nat` is owned by this call: released
    /// on error, by the connection's removal otherwise.
    fn insert_conn(
        &mut self,
        owner: Owner,
        orig: FlowKey,
        reply: FlowKey,
        nat: Option<NatInfo>,
        now: u32,
    ) -> Result<ConnId, CtError> {
        if let Err(e) = self.make_room(owner, &orig, &reply, now) {
            self.release_nat(nat.as_ref());
            return Err(e);
        }
        let slot = match self.free.pop() {
            Some(s) => s,
            None => {
                self.conns.push(None);
                (self.conns.len() - 1) as u32
            }
        };
        let state = if orig.proto == PROTO_TCP {
            State::New
        } else {
            State::Unreplied
        };
        self.conns[slot as usize] = Some(Conn {
            orig,
            reply,
            state,
            created: now,
            last_seen: now,
            nat,
            owner,
            packets: [0; 2],
            bytes: [0; 2],
            memo: TcpMemo::default(),
            timeout: self.timeouts.of(orig.proto, state),
        });
        let a = self.index.insert(orig.pack(), slot, Direction::Original);
        if !a || !self.index.insert(reply.pack(), slot, Direction::Reply) {
            // No free index slot near a tuple's hash (tuples checked absent by make_room).
            if a {
                self.index.remove(orig.pack());
            }
            let c = self.conns[slot as usize].take();
            self.removals = self.removals.wrapping_add(1);
            self.free.push(slot);
            self.release_nat(c.and_then(|c| c.nat).as_ref());
            self.stats.collisions += 1;
            let key = if a { reply } else { orig };
            return Err(CtError::Collision { key });
        }
        *self.sources.entry(orig.src).or_insert(0) += 1;
        if self.owners.len() <= owner as usize {
            // Once per new highest owner (a port number): no allocation on later inserts.
            self.owners.resize(owner as usize + 1, 0);
        }
        self.owners[owner as usize] += 1;
        self.len += 1;
        self.stats.inserted += 1;
        Ok(ConnId(slot))
    }

    /// Check both tuples are free (removing expired holders) and that a slot is free
    /// (evicting a connection if the table is full: `evict_for`).
    fn make_room(
        &mut self,
        owner: Owner,
        orig: &FlowKey,
        reply: &FlowKey,
        now: u32,
    ) -> Result<(), CtError> {
        for key in [orig, reply] {
            if self.lookup(key, now).is_some() {
                self.stats.clashes += 1;
                return Err(CtError::Exists { key: *key });
            }
        }
        if orig.pack() == reply.pack() {
            // One index entry cannot tell the two directions apart.
            self.stats.clashes += 1;
            return Err(CtError::Exists { key: *orig });
        }
        if self.source_count(orig.src) >= self.per_source && !self.evict_from_source(orig.src, now)
        {
            self.stats.source_limited += 1;
            return Err(CtError::SourceLimit {
                src: orig.src,
                limit: self.per_source,
            });
        }
        if self.len >= self.limit && !self.evict_for(owner, now) {
            self.stats.table_full += 1;
            return Err(CtError::TableFull { limit: self.limit });
        }
        Ok(())
    }

    /// Make room in a full table for a connection of `owner` (max-min sharing, see the module
    /// contract): the victim owner is the one holding the most if it holds at least two more
    /// than `owner` (it still holds at least as many afterwards, so two owners never take turns
    /// evicting each other), else `owner` itself. Walks slots from the expiry cursor (which
    /// advances, so repeated attempts look at new slots): the first expired connection found
    /// goes, whoever holds it; otherwise, among the victim's connections seen (at most
    /// [`EVICT_SCAN`] of them, within [`RECLAIM_SCAN`] slots, or [`EVICT_SCAN`] slots for
    /// `owner`'s own), its least recently seen unassured one, or (another owner's only) its
    /// least recently seen.
    fn evict_for(&mut self, owner: Owner, now: u32) -> bool {
        let mine = self.owned(owner);
        let (top, most) = self
            .owners
            .iter()
            .enumerate()
            .max_by_key(|(_, n)| **n)
            .map_or((owner, 0), |(o, n)| (o as Owner, *n as usize));
        let reclaim = most >= mine + 2;
        let (victim, window) = if reclaim {
            (top, RECLAIM_SCAN)
        } else {
            (owner, EVICT_SCAN)
        };
        let scan = Scan {
            window,
            expired_anywhere: true,
            any_state: reclaim,
        };
        match self.scan_for_room(scan, now, |c| c.owner == victim) {
            Room::Expired => true,
            Room::Nothing => false,
            Room::Taken if reclaim => {
                self.stats.reclaimed += 1;
                true
            }
            Room::Taken => {
                self.stats.early_dropped += 1;
                true
            }
        }
    }

    /// Make room for source `src` at its per-source limit from its own connections: the first
    /// expired one found, else the least recently seen unassured one among the first
    /// [`EVICT_SCAN`] of its connections found within [`RECLAIM_SCAN`] slots of the cursor.
    #[cold]
    fn evict_from_source(&mut self, src: [u8; 4], now: u32) -> bool {
        let scan = Scan {
            window: RECLAIM_SCAN,
            expired_anywhere: false,
            any_state: false,
        };
        match self.scan_for_room(scan, now, |c| c.orig.src == src) {
            Room::Expired => true,
            Room::Nothing => false,
            Room::Taken => {
                self.stats.early_dropped += 1;
                true
            }
        }
    }

    /// The bounded scan both evictions make: walk at most `scan.window` slots from the expiry
    /// cursor (which advances, so repeated attempts look at new slots). The first expired
    /// connection found goes at once (whoever holds it with `expired_anywhere`, else only one
    /// of `ours`; counted `evicted`). Otherwise, among the first [`EVICT_SCAN`] connections of
    /// `ours` seen, the least recently seen unassured one goes, or with `any_state` the least
    /// recently seen of any state (unassured ones still first). The caller counts a `Taken`.
    fn scan_for_room(&mut self, scan: Scan, now: u32, ours: impl Fn(&Conn) -> bool) -> Room {
        let n = self.conns.len();
        // (slot, unassured, last seen) of the best candidate so far.
        let mut best: Option<(usize, bool, u32)> = None;
        let mut seen = 0;
        for _ in 0..scan.window.min(n) {
            let i = self.cursor % n;
            self.cursor = (i + 1) % n;
            let Some(c) = &self.conns[i] else {
                continue;
            };
            let mine = ours(c);
            if (mine || scan.expired_anywhere) && self.expired(c, now) {
                self.remove(ConnId(i as u32));
                self.stats.evicted += 1;
                return Room::Expired;
            }
            if !mine {
                continue;
            }
            let unassured = c.state.unassured();
            if unassured || scan.any_state {
                let better = best.is_none_or(|(_, u, t)| {
                    (unassured, std::cmp::Reverse(c.last_seen)) > (u, std::cmp::Reverse(t))
                });
                if better {
                    best = Some((i, unassured, c.last_seen));
                }
            }
            seen += 1;
            if seen == EVICT_SCAN {
                break;
            }
        }
        let Some((i, _, _)) = best else {
            return Room::Nothing;
        };
        self.remove(ConnId(i as u32));
        Room::Taken
    }

    fn release_nat(&mut self, nat: Option<&NatInfo>) {
        if let Some(&NatInfo {
            pool: Some(p),
            port,
            ..
        }) = nat
            && let Some(pool) = self.pools.get_mut(p as usize)
        {
            pool.release(port);
        }
    }

    /// Account a packet of `len` bytes travelling in `dir`: counters, last-seen time and state
    /// (`tcp_flags` is ignored for other protocols). Returns the new state, or None if `id` is
    /// not a live connection.
    #[inline]
    pub fn update(
        &mut self,
        id: ConnId,
        dir: Direction,
        len: u32,
        tcp_flags: u8,
        now: u32,
    ) -> Option<State> {
        let c = self.conns.get_mut(id.index())?.as_mut()?;
        account(c, dir, len, tcp_flags, now, &self.timeouts);
        Some(c.state)
    }

    /// Count a packet of `len` bytes in `dir` and refresh the connection's last-seen time,
    /// without a state transition (a later fragment: its datagram's first fragment made that).
    /// False if `id` is not live.
    pub fn count(&mut self, id: ConnId, dir: Direction, len: u32, now: u32) -> bool {
        let Some(c) = self.conns.get_mut(id.index()).and_then(Option::as_mut) else {
            return false;
        };
        c.packets[dir.index()] += 1;
        c.bytes[dir.index()] += len as u64;
        c.last_seen = now;
        true
    }

    /// Advance a TCP connection's state for a segment with `flags` in `dir` and refresh its
    /// last-seen time (no counters). Returns the new state, or None if `id` is not live.
    #[inline]
    pub fn update_tcp(&mut self, id: ConnId, dir: Direction, flags: u8, now: u32) -> Option<State> {
        let c = self.conns.get_mut(id.index())?.as_mut()?;
        c.last_seen = now;
        let state = tcp_next(c.state, &mut c.memo, dir, flags);
        set_state(c, state, &self.timeouts);
        Some(c.state)
    }

    /// Remove a connection: both index entries, its slot, its NAT port. False if not live.
    pub fn remove(&mut self, id: ConnId) -> bool {
        let Some(c) = self.conns.get_mut(id.index()).and_then(Option::take) else {
            return false;
        };
        self.removals = self.removals.wrapping_add(1);
        self.index.remove(c.orig.pack());
        self.index.remove(c.reply.pack());
        self.release_nat(c.nat.as_ref());
        if let Some(n) = self.sources.get_mut(&c.orig.src) {
            *n -= 1;
            if *n == 0 {
                self.sources.remove(&c.orig.src);
            }
        }
        if let Some(n) = self.owners.get_mut(c.owner as usize) {
            *n -= 1;
        }
        self.free.push(id.0);
        self.len -= 1;
        true
    }

    /// Remove connections whose timeout has passed at `now`, examining at most `budget` slots
    /// from where the last call stopped. Returns the number removed.
    pub fn expire(&mut self, now: u32, budget: usize) -> usize {
        let n = self.conns.len();
        let mut removed = 0;
        for _ in 0..budget.min(n) {
            let i = self.cursor % n;
            self.cursor = (i + 1) % n;
            let hit = matches!(&self.conns[i], Some(c) if self.expired(c, now));
            if hit {
                self.remove(ConnId(i as u32));
                removed += 1;
            }
        }
        self.stats.expired += removed as u64;
        removed
    }

    /// Remove every connection (releasing NAT ports). Returns the number removed.
    pub fn flush(&mut self) -> usize {
        let mut removed = 0;
        for i in 0..self.conns.len() {
            removed += self.remove(ConnId(i as u32)) as usize;
        }
        debug_assert_eq!(self.index.len(), 0);
        self.index.clear();
        removed
    }

    /// One page of `iter`: the connections in slots `from..from + slots`, and where the next
    /// page starts (None: done). Bounded work for a worker answering `ct-show`.
    pub fn page(&self, now: u32, from: usize, slots: usize) -> (Vec<ConnInfo>, Option<usize>) {
        let end = from.saturating_add(slots).min(self.conns.len());
        let v = (from.min(end)..end)
            .filter_map(|i| self.info(i, now))
            .collect();
        (v, (end < self.conns.len()).then_some(end))
    }

    /// Every connection not yet collected, described at time `now` (expired ones show a
    /// `timeout_left` of 0).
    pub fn iter(&self, now: u32) -> impl Iterator<Item = ConnInfo> + '_ {
        (0..self.conns.len()).filter_map(move |i| self.info(i, now))
    }

    fn info(&self, i: usize, now: u32) -> Option<ConnInfo> {
        let c = self.conns[i].as_ref()?;
        let timeout = c.timeout;
        Some(ConnInfo {
            id: ConnId(i as u32),
            orig: c.orig,
            reply: c.reply,
            state: c.state,
            nat: c.nat,
            age: now.saturating_sub(c.created),
            timeout_left: timeout.saturating_sub(now.saturating_sub(c.last_seen)),
            packets: c.packets,
            bytes: c.bytes,
        })
    }
}
