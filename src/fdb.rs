//! The forwarding database (CAM table) of one bridge: (VLAN, MAC) -> port, with aging.
//!
//! Contract:
//! - Keys pack the MAC (48 bits) and VLAN id (12 bits) into one u64; the table is open
//!   addressing with linear probing over a power-of-two slot array sized for a load factor of at
//!   most 1/2 at `capacity`.
//! - The slot of a key comes from a keyed hash: a per-table random seed and two random odd
//!   multipliers with a xor-shift between them, so MACs crafted to collide on one switch do
//!   not collide on another (or on another bridge). No entry lies more than [`MAX_PROBE`] slots
//!   from its home: a lookup reads at most that many slots, and a new key whose free slot would
//!   be farther is refused (`Learn::Collision`) like a full table.
//! - At most `capacity` entries. When full, a new MAC takes the place of a learned entry near
//!   its home slot (among the [`MAX_PROBE`] slots from it): one of the learning port's own, or
//!   of a port holding more learned entries than it; of those, one of the port holding the
//!   most, seen longest ago (`Learn::Replaced`). So a port flooding random MACs churns its own
//!   entries once it holds as many as any other port, and takes nothing from a port holding
//!   fewer (OVS evicts by age alone: a flood pushes out everyone); any port's new MAC gets in
//!   while some port holds more than it (max-min fair shares of the table). When no entry may
//!   go, `learn` refuses (`Learn::Full`) and the caller floods. Existing entries are
//!   still refreshed and moved. A per-port limit (`learn_limited`) refuses new MACs of a port
//!   that holds that many (`Learn::PortLimit`).
//! - Time is passed in (seconds). Maintenance is incremental: `flush` takes O(ports) time
//!   whatever the table's size. Flushed entries become invisible at once (a lookup, learn or
//!   remove treats them as absent; each slot records the flush epoch it was written in, and a
//!   pending flush hides the older ones of its port), and `age` removes them, with the expired
//!   dynamic entries, `budget` slots per call, so the worker spreads the work over many loop
//!   iterations. `len` counts visible entries only.
//! - Static entries (added by the control plane) never age, are not moved by learning, and go
//!   only when their port is flushed.
//! - No allocation after construction except the per-port counters (grown to the largest port
//!   id seen) and the list of pending flushes (at most [`MAX_PENDING`]).

/// Ports are u16 ids.
pub type PortId = u16;

/// The farthest (in slots) an entry may lie from its home slot.
pub const MAX_PROBE: usize = 64;

/// Flushes in progress at once; one more first finishes the oldest (a whole-table pass).
pub const MAX_PENDING: usize = 32;

const OCCUPIED: u64 = 1 << 63;
const STATIC: u16 = 1;
/// Epochs are 15 bits (the rest of `flags`).
const EPOCH_MASK: u16 = 0x7fff;

#[derive(Clone, Copy, Default)]
#[repr(C)]
struct Slot {
    /// `OCCUPIED | vlan << 48 | mac`, or 0 when empty.
    key: u64,
    /// Last time (seconds) this MAC was seen as a source.
    stamp: u32,
    port: PortId,
    /// `STATIC | epoch << 1`: the flush epoch the slot was written in (or last swept in).
    flags: u16,
}

const _: () = assert!(std::mem::size_of::<Slot>() == 16);

impl Slot {
    #[inline]
    fn epoch(&self) -> u16 {
        self.flags >> 1
    }

    #[inline]
    fn is_static(&self) -> bool {
        self.flags & STATIC != 0
    }
}

/// What `learn` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Learn {
    /// Already known on this port: timestamp refreshed.
    Refreshed,
    /// Already known on this port, last seen at least [`crate::learned::RENEW_S`] seconds
    /// ago: timestamp refreshed (workers share it again, see `learned`).
    Renewed,
    /// A new entry.
    New,
    /// Known on another port: moved (a MAC move).
    Moved {
        /// The port it was on.
        from: PortId,
    },
    /// A new entry, in the place of one of the port's own or of a port holding more (the table
    /// was full).
    Replaced,
    /// Not learned: the table is full (of static entries, or near the key's home of entries of
    /// other ports holding no more than the learning port).
    Full,
    /// Not learned: a static entry owns this key.
    Static,
    /// Not learned: the port already holds its limit of learned MACs.
    PortLimit,
    /// Not learned: no free slot within [`MAX_PROBE`] of the key's home (a hash collision
    /// flood, or a table crowded with flushed entries not yet swept).
    Collision,
}

/// Why a static entry could not be added.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FdbFull {
    /// The table holds `capacity` entries already.
    #[error("FDB full")]
    Full,
    /// No free slot near the key's home.
    #[error("FDB full near this MAC's slot (more than {MAX_PROBE} colliding entries)")]
    Collision,
}

/// One entry, for display.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// VLAN id (0: untagged).
    pub vlan: u16,
    /// MAC address.
    pub mac: u64,
    /// Port.
    pub port: PortId,
    /// Last seen (seconds, the caller's clock); static entries keep their insertion time.
    pub stamp: u32,
    /// Static (configured) entry.
    pub is_static: bool,
}

/// A flush whose entries are hidden but not all removed yet.
#[derive(Debug, Clone, Copy)]
struct Pending {
    /// The port flushed, or `None`: every dynamic entry.
    port: Option<PortId>,
    /// With a port: its static entries are flushed too (the port is going).
    statics: bool,
    /// Slots written before this epoch are flushed.
    epoch: u16,
    /// The flush is complete when the sweep has advanced past this many slots in all.
    until: u64,
}

impl Pending {
    #[inline]
    fn hides(&self, s: &Slot) -> bool {
        let mine = match self.port {
            Some(p) => s.port == p && (self.statics || !s.is_static()),
            None => !s.is_static(),
        };
        // Written before the flush: epoch difference in 1..2^14 (modulo 2^15).
        let d = self.epoch.wrapping_sub(s.epoch()) & EPOCH_MASK;
        mine && d != 0 && d < 0x4000
    }
}

/// Entries per port (for the per-port limit and for O(1) flush accounting).
#[derive(Debug, Clone, Copy, Default)]
struct PortCount {
    dynamic: u32,
    statics: u32,
}

/// A bridge's FDB.
pub struct Fdb {
    slots: Box<[Slot]>,
    mask: usize,
    shift: u32,
    /// Hash key: xor seed and two odd multipliers.
    seed: u64,
    mul1: u64,
    mul2: u64,
    /// Visible entries.
    len: usize,
    /// Flushed entries still in slots.
    hidden: usize,
    capacity: usize,
    /// Where `age` goes on from.
    age_cursor: usize,
    /// Slots `age` has advanced past, in all.
    swept: u64,
    /// The current flush epoch (15 bits).
    epoch: u16,
    pending: Vec<Pending>,
    per_port: Vec<PortCount>,
}

#[inline]
fn make_key(vlan: u16, mac: u64) -> u64 {
    OCCUPIED | ((vlan as u64 & 0xfff) << 48) | (mac & 0xffff_ffff_ffff)
}

/// A random u64 from the standard library's per-process random keys.
fn random_u64(salt: u64) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(salt);
    h.finish()
}

impl Fdb {
    /// A table holding at most `capacity` entries (at least 1), with a random hash key.
    pub fn new(capacity: usize) -> Fdb {
        Fdb::with_seed(capacity, random_u64(capacity as u64))
    }

    /// [`Fdb::new`] with the hash key derived from `seed` (tests, fuzzing).
    pub fn with_seed(capacity: usize, seed: u64) -> Fdb {
        let capacity = capacity.max(1);
        let slots = (capacity * 2).next_power_of_two().max(16);
        let mix = |x: u64| {
            // splitmix64: spreads one seed into independent-looking words.
            let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        Fdb {
            slots: vec![Slot::default(); slots].into_boxed_slice(),
            mask: slots - 1,
            shift: 64 - slots.trailing_zeros(),
            seed: mix(seed),
            mul1: mix(seed ^ 1) | 1,
            mul2: mix(seed ^ 2) | 1,
            len: 0,
            hidden: 0,
            capacity,
            age_cursor: 0,
            swept: 0,
            epoch: 0,
            pending: Vec::new(),
            per_port: Vec::new(),
        }
    }

    /// Entries in use (flushed ones not counted).
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The entry limit.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Dynamic (learned) entries on `port`.
    pub fn learned_on(&self, port: PortId) -> usize {
        self.per_port
            .get(port as usize)
            .map_or(0, |c| c.dynamic as usize)
    }

    /// Flushes whose entries are not all removed yet (0 once the sweep caught up).
    pub fn pending_flushes(&self) -> usize {
        self.pending.len()
    }

    #[inline]
    fn home(&self, key: u64) -> usize {
        let mut h = (key ^ self.seed).wrapping_mul(self.mul1);
        h ^= h >> 29;
        (h.wrapping_mul(self.mul2) >> self.shift) as usize
    }

    #[inline]
    fn hidden_slot(&self, s: &Slot) -> bool {
        !self.pending.is_empty() && self.hidden_by_a_flush(s)
    }

    /// Out of line: only while a flush is being swept (lookups stay small enough to inline).
    #[cold]
    #[inline(never)]
    fn hidden_by_a_flush(&self, s: &Slot) -> bool {
        self.pending.iter().any(|f| f.hides(s))
    }

    /// `Ok(slot)` of `key`, or `Err(Some(free slot))` within [`MAX_PROBE`] of its home, or
    /// `Err(None)`. A hidden (flushed) slot of `key` is returned as `Ok`; callers check.
    #[inline]
    fn find(&self, key: u64) -> Result<usize, Option<usize>> {
        let mut i = self.home(key);
        for _ in 0..MAX_PROBE {
            let k = self.slots[i].key;
            if k == key {
                return Ok(i);
            }
            if k == 0 {
                return Err(Some(i));
            }
            i = (i + 1) & self.mask;
        }
        Err(None)
    }

    fn count(&mut self, port: PortId) -> &mut PortCount {
        let i = port as usize;
        if i >= self.per_port.len() {
            self.per_port.resize(i + 1, PortCount::default());
        }
        &mut self.per_port[i]
    }

    #[inline]
    fn flags(&self, is_static: bool) -> u16 {
        (self.epoch << 1) | if is_static { STATIC } else { 0 }
    }

    /// The port for (vlan, mac), if known.
    #[inline]
    pub fn lookup(&self, vlan: u16, mac: u64) -> Option<PortId> {
        let i = self.find(make_key(vlan, mac)).ok()?;
        let s = &self.slots[i];
        (!self.hidden_slot(s)).then_some(s.port)
    }

    /// Learn that (vlan, mac) was seen on `port` at `now`.
    #[inline]
    pub fn learn(&mut self, vlan: u16, mac: u64, port: PortId, now: u32) -> Learn {
        self.learn_limited(vlan, mac, port, now, u32::MAX)
    }

    /// [`Fdb::learn`] refusing a new (or moved-in) MAC when `port` already holds `limit`
    /// learned entries.
    #[inline]
    pub fn learn_limited(
        &mut self,
        vlan: u16,
        mac: u64,
        port: PortId,
        now: u32,
        limit: u32,
    ) -> Learn {
        let key = make_key(vlan, mac);
        let i = match self.find(key) {
            Ok(i) if self.hidden_slot(&self.slots[i]) => {
                // A flushed entry of this key: reuse its slot for the new one.
                if self.learned_on(port) >= limit as usize {
                    return Learn::PortLimit;
                }
                if self.len >= self.capacity {
                    return self.learn_in_place(key, port, now, limit);
                }
                self.hidden -= 1;
                i
            }
            Ok(i) => return self.refresh(i, port, now, limit),
            Err(Some(i)) => {
                if self.learned_on(port) >= limit as usize {
                    return Learn::PortLimit;
                }
                if self.len >= self.capacity {
                    return self.learn_in_place(key, port, now, limit);
                }
                i
            }
            Err(None) => return Learn::Collision,
        };
        self.slots[i] = Slot {
            key,
            stamp: now,
            port,
            flags: self.flags(false),
        };
        self.len += 1;
        self.count(port).dynamic += 1;
        Learn::New
    }

    /// The table is full and `port` has a new MAC (`key`): forget the learned entry near the
    /// key's home that the contract names, then learn it (`Learn::Replaced`), or refuse
    /// (`Learn::Full`). At most [`MAX_PROBE`] slots read: a MAC flood into a full table costs
    /// that much a frame.
    #[cold]
    #[inline(never)]
    fn learn_in_place(&mut self, key: u64, port: PortId, now: u32, limit: u32) -> Learn {
        let mine = self.learned_on(port);
        let mut best: Option<(usize, usize, u32)> = None;
        let mut i = self.home(key);
        for _ in 0..MAX_PROBE {
            let s = self.slots[i];
            if s.key != 0 && !s.is_static() && !self.hidden_slot(&s) {
                let n = self.learned_on(s.port);
                let age = now.wrapping_sub(s.stamp);
                let may_go = s.port == port || n > mine;
                if may_go && best.is_none_or(|(_, bn, ba)| (n, age) > (bn, ba)) {
                    best = Some((i, n, age));
                }
            }
            i = (i + 1) & self.mask;
        }
        let Some((victim, ..)) = best else {
            return Learn::Full;
        };
        self.remove_at(victim);
        // Below capacity now, so this learns it (or finds no slot near its home).
        match self.learn_limited(
            (key >> 48 & 0xfff) as u16,
            key & 0xffff_ffff_ffff,
            port,
            now,
            limit,
        ) {
            Learn::New => Learn::Replaced,
            other => other,
        }
    }

    #[inline]
    fn refresh(&mut self, i: usize, port: PortId, now: u32, limit: u32) -> Learn {
        let s = self.slots[i];
        if s.is_static() {
            return Learn::Static;
        }
        if s.port == port {
            if s.stamp != now {
                self.slots[i].stamp = now;
                if now.wrapping_sub(s.stamp) >= crate::learned::RENEW_S {
                    return Learn::Renewed;
                }
            }
            return Learn::Refreshed;
        }
        if self.learned_on(port) >= limit as usize {
            return Learn::PortLimit;
        }
        self.count(s.port).dynamic -= 1;
        self.count(port).dynamic += 1;
        let flags = self.flags(false);
        let s = &mut self.slots[i];
        let from = s.port;
        s.stamp = now;
        s.port = port;
        // Moved after any pending flush of its new port: not hidden by it.
        s.flags = flags;
        Learn::Moved { from }
    }

    /// Add or replace a static entry. A table full of learned entries makes room by forgetting
    /// the one seen longest ago (an operator's entry outranks a learned one; a MAC flood must
    /// not lock the operator out: found trying uvs as a new user). Fails when the table is
    /// full of static entries, or the key's neighbourhood is full.
    pub fn add_static(
        &mut self,
        vlan: u16,
        mac: u64,
        port: PortId,
        now: u32,
    ) -> Result<(), FdbFull> {
        let key = make_key(vlan, mac);
        if self.len >= self.capacity && self.find(key).is_err() {
            // O(table), once per static entry added to a full table (a control command).
            let oldest = (0..self.slots.len())
                .filter(|&i| {
                    let s = &self.slots[i];
                    s.key != 0 && !s.is_static() && !self.hidden_slot(s)
                })
                .max_by_key(|&i| now.wrapping_sub(self.slots[i].stamp));
            if let Some(i) = oldest {
                self.remove_at(i);
            }
        }
        let i = match self.find(key) {
            Ok(i) if self.hidden_slot(&self.slots[i]) => {
                if self.len >= self.capacity {
                    return Err(FdbFull::Full);
                }
                self.hidden -= 1;
                self.len += 1;
                i
            }
            Ok(i) => {
                let old = self.slots[i];
                let c = self.count(old.port);
                if old.is_static() {
                    c.statics -= 1;
                } else {
                    c.dynamic -= 1;
                }
                i
            }
            Err(Some(i)) => {
                if self.len >= self.capacity {
                    return Err(FdbFull::Full);
                }
                self.len += 1;
                i
            }
            Err(None) => return Err(FdbFull::Collision),
        };
        self.slots[i] = Slot {
            key,
            stamp: now,
            port,
            flags: self.flags(true),
        };
        self.count(port).statics += 1;
        Ok(())
    }

    /// Remove (vlan, mac). Returns true if it was present.
    pub fn remove(&mut self, vlan: u16, mac: u64) -> bool {
        match self.find(make_key(vlan, mac)) {
            Ok(i) => {
                let visible = !self.hidden_slot(&self.slots[i]);
                self.remove_at(i);
                visible
            }
            Err(_) => false,
        }
    }

    /// Remove slot `hole` (visible or hidden, with the counts), then backward-shift the entries
    /// after it: keeps every probe chain unbroken without tombstones, and only ever moves an
    /// entry closer to its home.
    fn remove_at(&mut self, mut hole: usize) -> usize {
        let s = self.slots[hole];
        if self.hidden_slot(&s) {
            self.hidden -= 1;
        } else {
            self.len -= 1;
            let c = self.count(s.port);
            if s.is_static() {
                c.statics -= 1;
            } else {
                c.dynamic -= 1;
            }
        }
        self.slots[hole] = Slot::default();
        let mut i = (hole + 1) & self.mask;
        let mut scanned = 1;
        while self.slots[i].key != 0 {
            scanned += 1;
            let home = self.home(self.slots[i].key);
            // Move slot i into the hole if its home is not in (hole, i] (cyclically).
            let dist_i = i.wrapping_sub(home) & self.mask;
            let dist_hole = i.wrapping_sub(hole) & self.mask;
            if dist_i >= dist_hole {
                self.slots[hole] = self.slots[i];
                self.slots[i] = Slot::default();
                hole = i;
            }
            i = (i + 1) & self.mask;
        }
        scanned
    }

    /// Maintenance, bounded: about `budget` slot visits (a removal's backward shift counts the
    /// slots it moves through) from where the last call stopped, removing flushed entries and
    /// dynamic entries older than `max_age` seconds. Returns the number of entries removed by
    /// aging (flushed ones are not counted).
    pub fn age(&mut self, now: u32, max_age: u32, budget: usize) -> usize {
        let mut removed = 0;
        let epoch_flags = self.epoch << 1;
        let mut work = 0;
        let budget = budget.min(self.slots.len());
        while work < budget {
            work += 1;
            let i = self.age_cursor;
            let s = self.slots[i];
            if s.key != 0 {
                if self.hidden_slot(&s) {
                    work += self.remove_at(i);
                    // A later entry may have shifted into slot i: look at it again.
                    continue;
                }
                if !s.is_static() && now.saturating_sub(s.stamp) > max_age {
                    work += self.remove_at(i);
                    removed += 1;
                    continue;
                }
                if !self.pending.is_empty() {
                    // Visible now: keep its epoch recent so that epochs never wrap around it.
                    self.slots[i].flags = (s.flags & STATIC) | epoch_flags;
                }
            }
            self.age_cursor = (i + 1) & self.mask;
            self.swept += 1;
        }
        if !self.pending.is_empty() {
            let swept = self.swept;
            self.pending.retain(|f| f.until > swept);
        }
        removed
    }

    /// Flush every entry on `port`, static ones too (the port is going), or every dynamic
    /// entry when `port` is None: they vanish from lookups at once and are removed by later
    /// `age` calls. Takes O(ports) time (O(table) only when [`MAX_PENDING`] flushes are in
    /// progress already). Returns the number of entries flushed.
    pub fn flush(&mut self, port: Option<PortId>) -> usize {
        self.flush_where(port, true)
    }

    /// Flush the learned (dynamic) entries on `port` (every port: None), as `fdb-flush`
    /// does; static entries stay (`remove` takes one out).
    pub fn flush_learned(&mut self, port: Option<PortId>) -> usize {
        self.flush_where(port, false)
    }

    fn flush_where(&mut self, port: Option<PortId>, statics: bool) -> usize {
        if self.pending.len() >= MAX_PENDING {
            self.finish_oldest_flush();
        }
        let n = match port {
            Some(p) if statics => {
                let c = std::mem::take(self.count(p));
                (c.dynamic + c.statics) as usize
            }
            Some(p) => std::mem::take(&mut self.count(p).dynamic) as usize,
            None => self
                .per_port
                .iter_mut()
                .map(|c| std::mem::take(&mut c.dynamic) as usize)
                .sum(),
        };
        self.len -= n;
        self.hidden += n;
        // The epoch moves only with a pending flush, whose sweep pass then refreshes every
        // visible slot's epoch: no slot falls more than ~MAX_PENDING epochs behind.
        if n != 0 {
            self.epoch = (self.epoch + 1) & EPOCH_MASK;
            self.pending.push(Pending {
                port,
                statics,
                epoch: self.epoch,
                until: self.swept + self.slots.len() as u64,
            });
        }
        n
    }

    /// Runs the sweep until the oldest pending flush is complete.
    fn finish_oldest_flush(&mut self) {
        let before = self.pending.len();
        while before != 0 && self.pending.len() == before {
            // Aging with an age limit nothing reaches removes only flushed entries.
            self.age(0, u32::MAX, 4096);
        }
    }

    /// Removes every flushed entry now (a whole-table pass); for tests and shutdown.
    pub fn complete_flushes(&mut self) {
        while !self.pending.is_empty() {
            self.finish_oldest_flush();
        }
    }

    /// Static entries in the table (visible ones).
    pub fn static_count(&self) -> usize {
        self.per_port.iter().map(|c| c.statics as usize).sum()
    }

    /// One page of [`Fdb::iter`]: the visible entries of at most `slots` slots from slot `from`,
    /// and where the next page starts (`None`: this was the last). Lets a caller show a large
    /// table in bounded steps; entries that move between calls may be missed or seen twice.
    pub fn page(&self, from: usize, slots: usize) -> (Vec<Entry>, Option<usize>) {
        let end = from.saturating_add(slots).min(self.slots.len());
        let from = from.min(end);
        let entries = self.slots[from..end]
            .iter()
            .filter(|s| s.key != 0 && !self.hidden_slot(s))
            .map(|s| Entry {
                vlan: ((s.key >> 48) & 0xfff) as u16,
                mac: s.key & 0xffff_ffff_ffff,
                port: s.port,
                stamp: s.stamp,
                is_static: s.is_static(),
            })
            .collect();
        (entries, (end < self.slots.len()).then_some(end))
    }

    /// A table of `capacity` entries (a new hash key) holding this one's visible entries: the
    /// static ones first, then the learned ones seen most recently (at `now`) while there is
    /// room; each keeps its port and last-seen time. O(entries), with one allocation of the
    /// new table (a control request: `set-br fdb_capacity=`).
    pub fn resized(&self, capacity: usize, now: u32) -> Fdb {
        let mut f = Fdb::new(capacity);
        let mut learned: Vec<Entry> = Vec::new();
        for e in self.iter() {
            if e.is_static {
                let _ = f.add_static(e.vlan, e.mac, e.port, e.stamp);
            } else {
                learned.push(e);
            }
        }
        learned.sort_by_key(|e| now.wrapping_sub(e.stamp));
        for e in learned {
            if f.len >= f.capacity {
                break;
            }
            f.learn(e.vlan, e.mac, e.port, e.stamp);
        }
        f
    }

    /// All visible entries, in slot order.
    pub fn iter(&self) -> impl Iterator<Item = Entry> + '_ {
        self.slots
            .iter()
            .filter(|s| s.key != 0 && !self.hidden_slot(s))
            .map(|s| Entry {
                vlan: ((s.key >> 48) & 0xfff) as u16,
                mac: s.key & 0xffff_ffff_ffff,
                port: s.port,
                stamp: s.stamp,
                is_static: s.is_static(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resized_keeps_statics_then_the_most_recent() {
        let mut f = Fdb::new(8);
        f.add_static(0, 0x1, 9, 5).unwrap();
        for (mac, seen) in [(0xa, 10), (0xb, 30), (0xc, 20), (0xd, 40)] {
            f.learn(7, mac, 1, seen);
        }
        let g = f.resized(3, 50);
        assert_eq!((g.capacity(), g.len()), (3, 3));
        assert_eq!(g.lookup(0, 0x1), Some(9), "the static entry");
        assert_eq!(g.lookup(7, 0xd), Some(1), "seen last");
        assert_eq!(g.lookup(7, 0xb), Some(1), "seen next");
        assert_eq!(g.lookup(7, 0xc), None);
        assert_eq!(g.static_count(), 1);
        let stamps: Vec<u32> = g.iter().filter(|e| !e.is_static).map(|e| e.stamp).collect();
        assert!(
            stamps.contains(&40) && stamps.contains(&30),
            "last-seen times kept"
        );
        // Larger: everything.
        let h = f.resized(1000, 50);
        assert_eq!(h.len(), 5);
        assert_eq!(h.learned_on(1), 4);
    }

    #[test]
    fn learn_lookup_move_refresh() {
        let mut f = Fdb::new(8);
        assert_eq!(f.learn(0, 0xa, 1, 10), Learn::New);
        assert_eq!(f.lookup(0, 0xa), Some(1));
        assert_eq!(f.lookup(5, 0xa), None, "VLANs are separate");
        assert_eq!(f.learn(0, 0xa, 1, 11), Learn::Refreshed);
        assert_eq!(f.learn(0, 0xa, 2, 12), Learn::Moved { from: 1 });
        assert_eq!(f.lookup(0, 0xa), Some(2));
        assert_eq!(f.len(), 1);
    }

    #[test]
    fn a_static_entry_takes_the_place_of_the_oldest_learned_one_in_a_full_table() {
        let mut f = Fdb::new(3);
        for (m, t) in [(1, 20), (2, 10), (3, 30)] {
            assert_eq!(f.learn(0, m, 1, t), Learn::New);
        }
        assert_eq!(f.add_static(0, 9, 2, 40), Ok(()));
        assert_eq!(f.lookup(0, 9), Some(2));
        assert_eq!(f.lookup(0, 2), None, "the one seen longest ago went");
        assert_eq!((f.len(), f.static_count()), (3, 1));
        // Full of static entries: refused.
        let mut g = Fdb::new(1);
        assert_eq!(g.add_static(0, 1, 1, 0), Ok(()));
        assert_eq!(g.add_static(0, 2, 1, 0), Err(FdbFull::Full));
    }

    #[test]
    fn a_full_table_refreshes_and_moves_old_entries() {
        let mut f = Fdb::new(3);
        for m in 1..=3 {
            assert_eq!(f.learn(0, m, 1, 0), Learn::New);
        }
        assert_eq!(f.learn(0, 2, 1, 5), Learn::Refreshed);
        assert_eq!(f.learn(0, 3, 2, 5), Learn::Moved { from: 1 });
        assert_eq!(f.len(), 3);
    }

    /// A full table (a MAC flood from one port, in any VLAN): the flooding port's new MACs take
    /// the place of its own oldest entries, never another port's; another port's new MAC takes
    /// the place of one of the port holding the most (it was refused and flooded for as long as
    /// the flood lasted: found trying uvs as a tenant). Full of static entries, or of entries
    /// of ports holding fewer than the learning port: refused.
    #[test]
    fn a_full_table_takes_new_macs_from_the_port_holding_the_most() {
        let mut f = Fdb::new(100);
        assert_eq!(f.learn(10, 0x77, 2, 0), Learn::New);
        for m in 0..99u64 {
            assert_eq!(f.learn(20, 0x1000 + m, 1, m as u32), Learn::New);
        }
        for m in 0..500u64 {
            let r = f.learn(20, 0x5000 + m, 1, 200);
            assert!(matches!(r, Learn::Replaced | Learn::Full), "{r:?}");
        }
        assert_eq!(f.len(), 100);
        assert_eq!(f.lookup(10, 0x77), Some(2), "the other port's MAC stays");
        assert_eq!(f.learned_on(1), 99);
        // Another port's new MAC (a container that came back) gets in, in any VLAN.
        assert_eq!(f.learn(10, 0x78, 3, 201), Learn::Replaced);
        assert_eq!(f.lookup(10, 0x78), Some(3));
        assert_eq!((f.learned_on(1), f.learned_on(3)), (98, 1));
        // The flooding port replaces its oldest: an entry seen at 200, not one of port 2 or 3.
        assert_eq!(f.learn(20, 0x9999, 1, 202), Learn::Replaced);
        assert_eq!((f.learned_on(2), f.learned_on(3)), (1, 1));
        // Ports holding fewer than the learner are not pushed out, even when older.
        let mut g = Fdb::new(3);
        assert_eq!(g.learn(0, 1, 2, 0), Learn::New);
        assert_eq!(g.learn(0, 2, 1, 5), Learn::New);
        assert_eq!(g.learn(0, 3, 1, 6), Learn::New);
        assert_eq!(g.learn(0, 4, 1, 7), Learn::Replaced);
        assert_eq!(g.lookup(0, 1), Some(2));
        assert_eq!(g.lookup(0, 2), None, "port 1's oldest");
        let mut h = Fdb::new(1);
        h.add_static(0, 1, 1, 0).unwrap();
        assert_eq!(h.learn(0, 2, 2, 0), Learn::Full);
        // Two ports holding as many: neither takes the other's (it did when ties were broken
        // by slot order: review finding).
        let mut e = Fdb::new(2);
        assert_eq!(e.learn(0, 1, 1, 0), Learn::New);
        assert_eq!(e.learn(0, 2, 2, 0), Learn::New);
        assert_eq!(e.learn(0, 3, 1, 0), Learn::Replaced);
        assert_eq!((e.lookup(0, 2), e.lookup(0, 3)), (Some(2), Some(1)));
    }

    /// An uplink holding most of a full table and a port flooding random MACs: the flood takes
    /// the uplink's entries only down to an equal share (max-min), then churns its own.
    #[test]
    fn a_flood_takes_no_more_than_an_equal_share() {
        let mut f = Fdb::new(1000);
        for m in 0..900u64 {
            assert_eq!(f.learn(0, 0x1_0000 + m, 1, 0), Learn::New);
        }
        for m in 0..20_000u64 {
            f.learn(0, 0x9_0000 + m, 2, 1);
        }
        let (uplink, flood) = (f.learned_on(1), f.learned_on(2));
        assert_eq!(uplink + flood, 1000);
        assert!(
            (500..=510).contains(&uplink),
            "uplink {uplink}, flood {flood}"
        );
    }

    #[test]
    fn aging_with_manual_time() {
        let mut f = Fdb::new(100);
        f.learn(0, 1, 1, 100);
        f.learn(0, 2, 1, 200);
        f.add_static(0, 3, 4, 0).unwrap();
        assert_eq!(
            f.age(350, 300, usize::MAX),
            0,
            "nothing older than 300 s yet"
        );
        assert_eq!(f.age(401, 300, usize::MAX), 1);
        assert_eq!(f.lookup(0, 1), None);
        assert_eq!(f.lookup(0, 2), Some(1));
        assert_eq!(f.age(10_000, 300, usize::MAX), 1);
        assert_eq!(f.lookup(0, 3), Some(4), "static entries never age");
        assert_eq!(f.learn(0, 3, 1, 1), Learn::Static);
    }

    #[test]
    fn removal_keeps_probe_chains() {
        // Many keys in a small table force collisions and wrap-around.
        let mut f = Fdb::new(400);
        for m in 0..400u64 {
            assert_eq!(
                f.learn((m % 3) as u16, m * 7919, (m % 5) as u16, 0),
                Learn::New
            );
        }
        for m in (0..400u64).step_by(2) {
            assert!(f.remove((m % 3) as u16, m * 7919));
        }
        for m in 0..400u64 {
            let want = if m % 2 == 0 {
                None
            } else {
                Some((m % 5) as u16)
            };
            assert_eq!(f.lookup((m % 3) as u16, m * 7919), want, "mac {m}");
        }
        assert_eq!(f.len(), 200);
        assert_eq!(f.flush(Some(1)), 40);
        assert!(f.iter().all(|e| e.port != 1));
        assert_eq!(f.len(), 160);
        assert_eq!(f.flush(None), 160);
        assert!(f.is_empty());
    }

    #[test]
    fn incremental_aging_covers_whole_table() {
        let mut f = Fdb::new(1000);
        for m in 0..1000u64 {
            f.learn(0, m, 1, 0);
        }
        let mut removed = 0;
        for _ in 0..1000 {
            removed += f.age(1000, 300, 64);
        }
        assert_eq!(removed, 1000);
        assert!(f.is_empty());
    }

    /// `n` keys whose home slot is the same in `f` (found by brute force, as an attacker who
    /// knew the table's hash key would).
    fn colliding_keys(f: &Fdb, n: usize) -> Vec<u64> {
        let target = f.home(make_key(0, 0));
        (0u64..)
            .filter(|&m| f.home(make_key(0, m)) == target)
            .take(n)
            .collect()
    }

    #[test]
    fn crafted_collisions_are_bounded_and_do_not_transfer() {
        let mut a = Fdb::with_seed(8192, 1);
        let keys = colliding_keys(&a, 200);
        let mut collisions = 0;
        for &m in &keys {
            match a.learn(0, m, 1, 0) {
                Learn::New => {}
                Learn::Collision => collisions += 1,
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(a.len(), MAX_PROBE, "only MAX_PROBE keys fit near one home");
        assert_eq!(collisions, 200 - MAX_PROBE);
        // A lookup reads at most MAX_PROBE slots, even for a key in the crowded area.
        assert_eq!(a.lookup(0, keys[199]), None);
        // Another table (another seed, as every bridge gets) spreads the same keys.
        let b = Fdb::with_seed(8192, 2);
        let mut homes: Vec<usize> = keys.iter().map(|&m| b.home(make_key(0, m))).collect();
        homes.sort();
        homes.dedup();
        assert!(homes.len() > 180, "{} distinct homes of 200", homes.len());
        // Random seeds differ between tables.
        assert_ne!(Fdb::new(64).seed, Fdb::new(64).seed);
    }

    #[test]
    fn flush_hides_at_once_and_the_sweep_removes_in_bounded_steps() {
        let mut f = Fdb::with_seed(200_000, 7);
        for m in 0..100_000u64 {
            assert_eq!(f.learn(0, m, (m % 4) as PortId, 0), Learn::New);
        }
        f.add_static(0, 1 << 40, 1, 0).unwrap();
        assert_eq!(f.learned_on(1), 25_000);
        assert_eq!(
            f.flush(Some(1)),
            25_001,
            "dynamic and static entries of the port"
        );
        assert_eq!(f.len(), 75_000);
        assert_eq!(f.lookup(0, 1), None, "hidden at once");
        assert_eq!(f.lookup(0, 1 << 40), None);
        assert_eq!(f.lookup(0, 2), Some(2));
        assert!(f.iter().all(|e| e.port != 1));
        assert_eq!(f.learned_on(1), 0);
        // A new port with the same id learns afresh, even a MAC that was hidden.
        assert_eq!(f.learn(0, 5, 1, 1), Learn::New);
        assert_eq!(f.learn(0, 1_000_001, 1, 1), Learn::New);
        assert_eq!(f.lookup(0, 5), Some(1));
        assert_eq!(f.learn(0, 6, 1, 1), Learn::Moved { from: 2 });
        // flush(None): every dynamic entry; the static one of port 3 stays.
        f.add_static(0, 2 << 40, 3, 0).unwrap();
        assert_eq!(f.flush(None), 75_002);
        assert_eq!(f.len(), 1);
        assert_eq!(f.lookup(0, 2 << 40), Some(3));
        assert_eq!(f.pending_flushes(), 2);
        // The sweep: bounded steps until every hidden slot is gone.
        let mut steps = 0;
        while f.pending_flushes() != 0 {
            assert_eq!(f.age(1, 300, 4096), 0, "nothing ages");
            steps += 1;
            assert!(steps < 1000);
        }
        assert_eq!(f.hidden, 0);
        assert_eq!(f.slots.iter().filter(|s| s.key != 0).count(), 1);
        assert_eq!(f.lookup(0, 2 << 40), Some(3));
        println!("swept 100k flushed entries in {steps} steps of 4096 slots");
    }

    /// `fdb-flush BRIDGE PORT` forgets what the port learned and keeps its static entries
    /// (as `fdb-flush BRIDGE` does for every port); removing the port takes both.
    #[test]
    fn a_learned_flush_of_a_port_keeps_its_static_entries() {
        let mut f = Fdb::with_seed(64, 5);
        for m in 1..=5u64 {
            f.learn(0, m, 1, 0);
        }
        f.learn(0, 6, 2, 0);
        f.add_static(7, 100, 1, 0).unwrap();
        assert_eq!(f.flush_learned(Some(1)), 5);
        assert_eq!((f.len(), f.learned_on(1)), (2, 0));
        assert_eq!(f.lookup(0, 3), None, "learned: hidden at once");
        assert_eq!(f.lookup(7, 100), Some(1), "static: kept");
        assert_eq!(f.lookup(0, 6), Some(2), "another port's: kept");
        f.complete_flushes();
        assert_eq!((f.hidden, f.static_count()), (0, 1));
        assert_eq!(f.slots.iter().filter(|s| s.key != 0).count(), 2);
        // The port goes: its static entry with it.
        assert_eq!(f.flush(Some(1)), 1);
        assert_eq!(f.lookup(7, 100), None);
        f.complete_flushes();
        assert_eq!((f.len(), f.static_count()), (1, 0));
        assert_eq!(f.slots.iter().filter(|s| s.key != 0).count(), 1);
    }

    #[test]
    fn epochs_never_wrap_around_a_live_entry() {
        let mut f = Fdb::with_seed(8, 3);
        assert_eq!(f.learn(0, 99, 2, 0), Learn::New);
        for round in 0..40_000u64 {
            assert_eq!(f.learn(0, 1000 + round, 1, 0), Learn::New);
            assert_eq!(f.flush(Some(1)), 1);
            assert_eq!(f.lookup(0, 1000 + round), None, "round {round}");
            f.age(0, 300, 3);
        }
        assert_eq!(f.lookup(0, 99), Some(2));
        assert!(f.pending_flushes() <= MAX_PENDING);
        f.complete_flushes();
        assert_eq!(f.len(), 1);
        assert_eq!(f.iter().count(), 1);
    }

    #[test]
    fn pages_cover_the_table_once() {
        let mut f = Fdb::with_seed(1000, 6);
        for m in 0..1000u64 {
            f.learn(0, m, 1, 0);
        }
        f.flush(None);
        for m in 0..500u64 {
            f.learn(0, m, 2, 0);
        }
        f.add_static(0, 5000, 3, 0).unwrap();
        assert_eq!(f.static_count(), 1);
        let (mut all, mut next) = (Vec::new(), Some(0));
        while let Some(from) = next {
            let (page, n) = f.page(from, 100);
            assert!(page.len() <= 100);
            all.extend(page);
            next = n;
        }
        let mut macs: Vec<u64> = all.iter().map(|e| e.mac).collect();
        macs.sort();
        let mut want: Vec<u64> = (0..500).collect();
        want.push(5000);
        assert_eq!(macs, want, "every visible entry once, no flushed one");
    }

    #[test]
    fn per_port_limit_refuses_new_and_moved_in_macs() {
        let mut f = Fdb::with_seed(100, 4);
        assert_eq!(f.learn_limited(0, 1, 1, 0, 2), Learn::New);
        assert_eq!(f.learn_limited(0, 2, 1, 0, 2), Learn::New);
        assert_eq!(f.learn_limited(0, 3, 1, 0, 2), Learn::PortLimit);
        assert_eq!(
            f.learn_limited(0, 1, 1, 5, 2),
            Learn::Refreshed,
            "known MACs refresh"
        );
        assert_eq!(f.learn(0, 4, 2, 0), Learn::New);
        assert_eq!(
            f.learn_limited(0, 4, 1, 0, 2),
            Learn::PortLimit,
            "no move into a full port"
        );
        assert_eq!(f.lookup(0, 4), Some(2));
        f.add_static(0, 10, 1, 0).unwrap();
        assert_eq!(f.learned_on(1), 2, "static entries do not count");
        assert!(f.remove(0, 2));
        assert_eq!(f.learn_limited(0, 3, 1, 0, 2), Learn::New);
        f.flush(Some(1));
        assert_eq!(f.learned_on(1), 0);
        assert_eq!(f.learn_limited(0, 7, 1, 0, 2), Learn::New);
    }

    #[test]
    fn maintenance_of_a_large_table_is_bounded_per_call() {
        // 1M entries; the worker calls age() with a budget of 4096 slots per housekeeping pass.
        let n = 1 << 20;
        let mut f = Fdb::with_seed(n, 5);
        for m in 0..n as u64 {
            f.learn(0, m * 0x1_0001, (m % 8) as PortId, 0);
        }
        let t = std::time::Instant::now();
        let flushed = f.flush(Some(3)) + f.flush(None);
        let flush = t.elapsed();
        assert_eq!(flushed, n);
        let mut worst = std::time::Duration::ZERO;
        let mut calls = 0;
        while f.pending_flushes() != 0 {
            let t = std::time::Instant::now();
            f.age(1, 300, 4096);
            worst = worst.max(t.elapsed());
            calls += 1;
        }
        // Then aging a full table that expires at once.
        for m in 0..n as u64 {
            f.learn(0, m, (m % 8) as PortId, 0);
        }
        let mut worst_age = std::time::Duration::ZERO;
        while !f.is_empty() {
            let t = std::time::Instant::now();
            f.age(1000, 300, 4096);
            worst_age = worst_age.max(t.elapsed());
        }
        println!(
            "1M entries: flush {flush:?}; sweep {calls} calls, worst {worst:?}; aging worst {worst_age:?} per call (this build)"
        );
        assert!(flush < std::time::Duration::from_millis(1), "{flush:?}");
    }
}
