//! A bridge's flow tables: a tuple-space-search classifier with per-flow counters and timeouts.
//!
//! Contract:
//! - Flows are grouped per table by mask: one subtable (open-addressing hash table keyed by the
//!   masked packed key, linear probing, load <= 1/2) per distinct mask. Flows with the same mask
//!   and masked key are chained in descending priority. Each subtable knows its best
//!   (priority, sequence); `lookup` visits subtables best-first and stops as soon as no remaining
//!   subtable can beat the flow found.
//! - Semantics: the highest priority wins; among matching flows of equal priority the most
//!   recently added (or replaced) one wins (OVS leaves this unspecified; ours is deterministic).
//! - `add` with the same table, match and priority as an existing flow replaces it in place
//!   (same `FlowId`, counters and age reset, as `ovs-ofctl add-flow`).
//! - `del(filter, strict)`: strict removes the flow with exactly that match and priority
//!   (default 32768); non-strict every flow at least as specific as the filter (its match
//!   implies the filter's), at any priority. `filter.table == None` means every table.
//! - Counters are shared atomics (`Arc`) so that clones of the classifier (the snapshots
//!   workers read) credit the same counters; workers call `credit` once per batch per flow, not
//!   per packet. Time is milliseconds from the caller's clock.
//! - `generation` changes on every change to the flows (add, replace, delete, expiry): the
//!   exact-match caches compare it. Generations only grow along one lineage of clones.
//! - `lookup` takes `&self`, never allocates and never panics on any key or table number.
//! - Ports are resolved by the caller's closure when a flow is added: `in_port` is compiled to
//!   the port id, outputs are only checked to exist.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use super::ext::ExtKey;
use super::match_::{Compiled, ETH_IP, ETH_IPV6, PacketKey, PortRef, Words};
use super::subtable::{Rule, Subtable, and, hash_words};
use super::{DEFAULT_PRIORITY, Flow, FlowError, FlowFilter};

pub(crate) const NONE: u32 = u32::MAX;

/// A flow's handle in one classifier (reused after the flow is removed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowId(pub u32);

/// A flow's counters, for dump-flows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FlowStats {
    /// Packets that hit the flow.
    pub n_packets: u64,
    /// Bytes of those packets.
    pub n_bytes: u64,
    /// When the flow was added or last replaced (ms).
    pub created_ms: u64,
    /// Last hit (ms), or `created_ms` if none.
    pub used_ms: u64,
}

/// A flow `expire_flows` removed.
#[derive(Debug, Clone)]
pub struct Expired {
    /// Its id (now free).
    pub id: FlowId,
    /// The flow.
    pub flow: Flow,
    /// Its counters when it was removed.
    pub stats: FlowStats,
    /// The hard timeout ended it (else the idle timeout).
    pub hard: bool,
}

/// What `add` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Added {
    /// The flow's id.
    pub id: FlowId,
    /// An identical match+priority existed and was replaced.
    pub replaced: bool,
}

#[derive(Debug, Default)]
struct Counters {
    packets: AtomicU64,
    bytes: AtomicU64,
    used_ms: AtomicU64,
}

/// The cold part.
#[derive(Clone)]
struct Entry {
    flow: Flow,
    mask: Words,
    counters: Arc<Counters>,
    created_ms: u64,
    /// The flow's text as the running configuration writes it, made at the first
    /// [`Classifier::config_lines`] (a flow's text never changes: a modify replaces the entry).
    text: std::sync::OnceLock<Box<str>>,
}

#[derive(Clone, Default)]
struct Table {
    subs: Vec<Subtable>,
    /// Non-empty subtables, best bound first.
    order: Vec<u16>,
    by_mask: HashMap<Words, u16>,
}

impl Table {
    fn reorder(&mut self) {
        let subs = &self.subs;
        self.order.clear();
        self.order
            .extend((0..subs.len() as u16).filter(|&i| !subs[i as usize].ranks.is_empty()));
        self.order
            .sort_unstable_by(|a, b| subs[*b as usize].bound.cmp(&subs[*a as usize].bound));
    }
}

/// All flow tables of one bridge. `Clone` makes a snapshot for workers (counters are shared).
#[derive(Clone)]
pub struct Classifier {
    rules: Vec<Rule>,
    entries: Vec<Option<Entry>>,
    free: Vec<u32>,
    tables: Vec<Table>,
    seq: u64,
    generation: u64,
    len: usize,
    /// Flows with an idle or hard timeout.
    timed: BTreeSet<u32>,
    /// Flows matching ext fields that come from the packet (IPv6 addresses, label, ND
    /// target): the exact-match cache, which keys on the packed key only, is not used for IPv6
    /// frames while there are any.
    packet_ext: usize,
    /// Rules matching fields read per frame from the IP or TCP header (`tcp_flags`, `nw_ttl`):
    /// while there are any, they are read from IP frames, and the exact-match cache is not
    /// used for IPv4 or IPv6 frames.
    ip_fields: usize,
}

impl Default for Classifier {
    fn default() -> Self {
        Classifier::new()
    }
}

fn covers(filter: &Compiled, key: &Words, mask: &Words) -> bool {
    (0..5).all(|i| {
        mask[i] & filter.mask[i] == filter.mask[i] && key[i] & filter.mask[i] == filter.value[i]
    })
}

impl Classifier {
    /// No flows (not even the default one: add `Flow::default_normal()`).
    pub fn new() -> Classifier {
        Classifier {
            rules: Vec::new(),
            entries: Vec::new(),
            free: Vec::new(),
            tables: Vec::new(),
            seq: 1,
            generation: 1,
            len: 0,
            timed: BTreeSet::new(),
            packet_ext: 0,
            ip_fields: 0,
        }
    }

    /// Number of flows in all tables.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when there are no flows.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Changes on every change to the flows.
    #[inline]
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Distinct masks (non-empty subtables) in `table`.
    pub fn masks(&self, table: u8) -> usize {
        self.tables.get(table as usize).map_or(0, |t| t.order.len())
    }

    /// Add a flow at `now_ms`, or replace the flow with the same table, match and priority.
    pub fn add(
        &mut self,
        flow: Flow,
        now_ms: u64,
        resolve: impl Fn(&PortRef) -> Option<u16>,
    ) -> Result<Added, FlowError> {
        let mut flow = flow;
        flow.m.normalize();
        if flow.table == 255 {
            return Err(FlowError::BadValue {
                field: "table".into(),
                value: "255".into(),
                why: "out of range (max 254)".into(),
            });
        }
        for (what, p) in flow.ports() {
            if resolve(p).is_none() {
                let what = if what == "output" {
                    format!("output:{p}")
                } else {
                    what.to_string()
                };
                return Err(FlowError::UnknownPort {
                    what,
                    port: p.to_string(),
                });
            }
        }
        let c = flow.m.compile(&resolve)?;
        let ti = flow.table as usize;
        if self.tables.len() <= ti {
            self.tables.resize_with(ti + 1, Table::default);
        }
        let (seq, prio) = (self.seq, flow.priority);
        self.seq += 1;
        self.generation += 1;
        let entry = Entry {
            mask: c.mask,
            counters: Arc::new(Counters {
                used_ms: AtomicU64::new(now_ms),
                ..Counters::default()
            }),
            created_ms: now_ms,
            flow,
            text: std::sync::OnceLock::new(),
        };
        let timed = entry.flow.idle_timeout != 0 || entry.flow.hard_timeout != 0;
        let t = &mut self.tables[ti];
        let si = match t.by_mask.get(&c.mask) {
            Some(&si) => si,
            None => {
                let si = u16::try_from(t.subs.len()).map_err(|_| FlowError::BadValue {
                    field: "table".into(),
                    value: ti.to_string(),
                    why: "more than 65535 distinct masks".into(),
                })?;
                t.subs.push(Subtable::new(c.mask));
                t.by_mask.insert(c.mask, si);
                si
            }
        };
        let st = &mut t.subs[si as usize];
        // Replace an identical flow in place.
        if let Ok(i) = st.find(&c.value, hash_words(&c.value, 0), &self.rules) {
            let mut cur = st.slots[i].head;
            let same = |id: u32| {
                self.rules[id as usize].prio == prio
                    && self.entries[id as usize]
                        .as_ref()
                        .is_some_and(|e| e.flow.m.ext == entry.flow.m.ext)
            };
            while cur != NONE && !same(cur) {
                cur = self.rules[cur as usize].next;
            }
            if cur != NONE {
                // Take it out of its chain and put it back with its new rank: flows with one
                // packed key and priority but other ext fields share the chain, newest first.
                st.remove(cur, &mut self.rules);
                self.rules[cur as usize].seq = seq;
                st.insert(cur, &mut self.rules);
                t.reorder();
                self.entries[cur as usize] = Some(entry);
                self.set_timed(cur, timed);
                return Ok(Added {
                    id: FlowId(cur),
                    replaced: true,
                });
            }
        }
        let ext = &entry.flow.m.ext;
        self.packet_ext += usize::from(ext.uses_packet());
        self.ip_fields += usize::from(ext.uses_ip_fields());
        let rule = Rule {
            key: c.value,
            seq,
            prio,
            table: ti as u8,
            sub: si,
            next: NONE,
            ext: !ext.is_empty(),
        };
        let id = match self.free.pop() {
            Some(id) => {
                self.rules[id as usize] = rule;
                self.entries[id as usize] = Some(entry);
                id
            }
            None => {
                self.rules.push(rule);
                self.entries.push(Some(entry));
                (self.rules.len() - 1) as u32
            }
        };
        let t = &mut self.tables[ti];
        t.subs[si as usize].insert(id, &mut self.rules);
        t.reorder();
        self.len += 1;
        self.set_timed(id, timed);
        Ok(Added {
            id: FlowId(id),
            replaced: false,
        })
    }

    /// Add a flow made by `learn(...)` at `now_ms`: when an identical flow (table, match,
    /// priority, cookie, timeouts, actions) is there already, only its timers restart (its
    /// counters stay and the generation does not change, so the exact-match caches stay
    /// valid); otherwise as `add`. Port numbers in it must be valid numbers.
    pub fn learn(&mut self, flow: Flow, now_ms: u64) -> Result<Added, FlowError> {
        let mut flow = flow;
        flow.m.normalize();
        let c = flow.m.compile(&|p: &PortRef| Some(p.num()))?;
        let same = self
            .tables
            .get(flow.table as usize)
            .and_then(|t| t.by_mask.get(&c.mask).map(|&si| &t.subs[si as usize]))
            .and_then(|st| {
                let i = st
                    .find(&c.value, hash_words(&c.value, 0), &self.rules)
                    .ok()?;
                let mut cur = st.slots[i].head;
                while cur != NONE {
                    let hit = self.entries[cur as usize]
                        .as_ref()
                        .is_some_and(|e| e.flow == flow);
                    if hit {
                        return Some(cur);
                    }
                    cur = self.rules[cur as usize].next;
                }
                None
            });
        if let Some(id) = same
            && let Some(e) = self.entries[id as usize].as_mut()
        {
            e.created_ms = now_ms;
            e.counters.used_ms.fetch_max(now_ms, Relaxed);
            return Ok(Added {
                id: FlowId(id),
                replaced: true,
            });
        }
        self.add(flow, now_ms, |p| {
            (1..=crate::ofport::OFPP_MAX)
                .contains(&p.num())
                .then_some(p.num())
        })
    }

    fn set_timed(&mut self, id: u32, timed: bool) {
        if timed {
            self.timed.insert(id);
        } else {
            self.timed.remove(&id);
        }
    }

    /// Remove one flow; returns it.
    pub fn remove(&mut self, id: FlowId) -> Option<Flow> {
        let e = self.entries.get_mut(id.0 as usize)?.take()?;
        let r = self.rules[id.0 as usize];
        let t = &mut self.tables[r.table as usize];
        t.subs[r.sub as usize].remove(id.0, &mut self.rules);
        t.reorder();
        self.free.push(id.0);
        self.timed.remove(&id.0);
        self.packet_ext -= usize::from(e.flow.m.ext.uses_packet());
        self.ip_fields -= usize::from(e.flow.m.ext.uses_ip_fields());
        self.len -= 1;
        self.generation += 1;
        Some(e.flow)
    }

    fn cookie_ok(filter: &FlowFilter, flow: &Flow) -> bool {
        filter
            .cookie
            .is_none_or(|c| flow.cookie & c.mask == c.value)
    }

    /// The port number of `filter`'s `out_port`, if it has one (an unknown name is refused).
    fn out_port(
        filter: &FlowFilter,
        resolve: impl Fn(&PortRef) -> Option<u16>,
    ) -> Result<Option<u16>, FlowError> {
        filter
            .out_port
            .as_ref()
            .map(|p| {
                resolve(p).ok_or_else(|| FlowError::UnknownPort {
                    what: "out_port".into(),
                    port: p.to_string(),
                })
            })
            .transpose()
    }

    /// The flows `filter` selects, non-strict: at least as specific, any priority; with
    /// `out_port` (resolved), only those that output there.
    fn select(&self, filter: &FlowFilter, c: &Compiled, out_port: Option<u16>) -> Vec<u32> {
        let mut out = Vec::new();
        for (i, e) in self.entries.iter().enumerate() {
            let Some(e) = e else { continue };
            let r = &self.rules[i];
            if filter.table.is_none_or(|t| t == r.table)
                && Self::cookie_ok(filter, &e.flow)
                && out_port.is_none_or(|p| e.flow.outputs_to(p))
                && covers(c, &r.key, &e.mask)
                && e.flow.m.ext.within(&filter.m.ext)
            {
                out.push(i as u32);
            }
        }
        out
    }

    /// `del-flows [--strict] FILTER`: the removed flows' ids.
    pub fn del(
        &mut self,
        filter: &FlowFilter,
        strict: bool,
        resolve: impl Fn(&PortRef) -> Option<u16>,
    ) -> Result<Vec<FlowId>, FlowError> {
        self.del_with(filter, strict, resolve, |_, _| {})
    }

    /// `del`, handing each removed flow and its last counters to `gone`.
    pub fn del_with(
        &mut self,
        filter: &FlowFilter,
        strict: bool,
        resolve: impl Fn(&PortRef) -> Option<u16>,
        mut gone: impl FnMut(Flow, FlowStats),
    ) -> Result<Vec<FlowId>, FlowError> {
        let c = filter.m.compile(&resolve)?;
        let out_port = Self::out_port(filter, &resolve)?;
        let ids = if strict {
            let prio = filter.priority.unwrap_or(DEFAULT_PRIORITY);
            let mut ids = Vec::new();
            for (ti, t) in self.tables.iter().enumerate() {
                if filter.table.is_some_and(|f| f as usize != ti) {
                    continue;
                }
                let Some(&si) = t.by_mask.get(&c.mask) else {
                    continue;
                };
                let st = &t.subs[si as usize];
                let Ok(i) = st.find(&c.value, hash_words(&c.value, 0), &self.rules) else {
                    continue;
                };
                let mut cur = st.slots[i].head;
                while cur != NONE {
                    let e = self.entries[cur as usize].as_ref();
                    if self.rules[cur as usize].prio == prio
                        && e.is_some_and(|e| {
                            Self::cookie_ok(filter, &e.flow)
                                && e.flow.m.ext == filter.m.ext
                                && out_port.is_none_or(|p| e.flow.outputs_to(p))
                        })
                    {
                        ids.push(cur);
                    }
                    cur = self.rules[cur as usize].next;
                }
            }
            ids
        } else {
            self.select(filter, &c, out_port)
        };
        self.remove_ids(&ids, &mut gone);
        Ok(ids.into_iter().map(FlowId).collect())
    }

    /// Remove flows `ids`, handing each and its last counters to `gone`.
    fn remove_ids(&mut self, ids: &[u32], gone: &mut impl FnMut(Flow, FlowStats)) {
        for &id in ids {
            let stats = self.stats(FlowId(id));
            if let (Some(f), Some(st)) = (self.remove(FlowId(id)), stats) {
                gone(f, st);
            }
        }
    }

    /// Remove every flow `pick` selects, handing each and its last counters to `gone`;
    /// returns how many.
    pub fn remove_where(
        &mut self,
        pick: impl Fn(&Flow) -> bool,
        mut gone: impl FnMut(Flow, FlowStats),
    ) -> usize {
        let ids: Vec<u32> = (0..self.entries.len() as u32)
            .filter(|&i| {
                self.entries[i as usize]
                    .as_ref()
                    .is_some_and(|e| pick(&e.flow))
            })
            .collect();
        self.remove_ids(&ids, &mut gone);
        ids.len()
    }

    /// The best flow for `key` in `table`, if any.
    #[inline]
    pub fn lookup(&self, table: u8, key: &PacketKey) -> Option<FlowId> {
        self.lookup_ext(table, key, &ExtKey::ZERO)
    }

    /// `lookup` with the ext fields (registers, metadata, IPv6) of `ext`.
    #[inline]
    pub fn lookup_ext(&self, table: u8, key: &PacketKey, ext: &ExtKey) -> Option<FlowId> {
        self.lookup_words_ext(table, &key.words(), ext)
    }

    /// `lookup_ext` of a packed key.
    #[inline]
    pub(crate) fn lookup_words_ext(&self, table: u8, w: &Words, ext: &ExtKey) -> Option<FlowId> {
        let id = self.lookup_words(table, w, ext);
        (id != NONE).then_some(FlowId(id))
    }

    /// Whether the exact-match cache (keyed on the packed key, ext fields taken as 0) may
    /// answer for `key`: not for IPv6 frames while flows match IPv6 ext fields.
    #[inline]
    pub fn cacheable(&self, key: &PacketKey) -> bool {
        self.cacheable_type(key.dl_type)
    }

    /// `cacheable` for a frame of EtherType `dl_type`.
    #[inline]
    pub fn cacheable_type(&self, dl_type: u16) -> bool {
        (self.packet_ext == 0 || dl_type != ETH_IPV6)
            && (self.ip_fields == 0 || (dl_type != ETH_IP && dl_type != ETH_IPV6))
    }

    /// Whether some rule matches `tcp_flags` or `nw_ttl` (they must then be read from each IP
    /// frame).
    #[inline]
    pub fn reads_ip_fields(&self) -> bool {
        self.ip_fields > 0
    }

    /// The first rule of the chain from `id` (rules with one packed key, best first) whose ext
    /// fields match `ext`; NONE if none.
    #[inline(never)]
    fn walk_ext(&self, mut id: u32, ext: &ExtKey) -> u32 {
        while id != NONE {
            let r = &self.rules[id as usize];
            let ok = !r.ext
                || self.entries[id as usize]
                    .as_ref()
                    .is_some_and(|e| e.flow.m.ext.matches(ext));
            if ok {
                return id;
            }
            id = r.next;
        }
        NONE
    }

    /// `lookup` over a packed key; NONE for no match.
    #[inline]
    pub(crate) fn lookup_words(&self, table: u8, w: &Words, ext: &ExtKey) -> u32 {
        let Some(t) = self.tables.get(table as usize) else {
            return NONE;
        };
        let mut best = (0u16, 0u64);
        let mut found = NONE;
        for &si in &t.order {
            let Some(st) = t.subs.get(si as usize) else {
                break;
            };
            if st.bound < best {
                break;
            }
            let m = and(w, &st.mask);
            if let Ok(i) = st.find(&m, hash_words(&m, 0), &self.rules) {
                let mut id = st.slots[i].head;
                if self.rules[id as usize].ext {
                    id = self.walk_ext(id, ext);
                    if id == NONE {
                        continue;
                    }
                }
                let r = &self.rules[id as usize];
                if (r.prio, r.seq) > best {
                    best = (r.prio, r.seq);
                    found = id;
                }
            }
        }
        found
    }

    /// The flow with this id.
    pub fn get(&self, id: FlowId) -> Option<&Flow> {
        self.entries.get(id.0 as usize)?.as_ref().map(|e| &e.flow)
    }

    /// The [`super::Single`] decision of a lookup's answer: `Drop` when no flow matched.
    #[inline]
    pub fn single(&self, flow: Option<FlowId>) -> super::Single {
        flow.map_or(super::Single::Drop, |id| {
            self.get(id)
                .map_or(super::Single::Many, |f| super::Single::of(&f.actions))
        })
    }

    /// Add `packets`/`bytes` to a flow's counters and mark it used at `now_ms`.
    #[inline]
    pub fn credit(&self, id: FlowId, packets: u64, bytes: u64, now_ms: u64) {
        if let Some(Some(e)) = self.entries.get(id.0 as usize) {
            e.counters.packets.fetch_add(packets, Relaxed);
            e.counters.bytes.fetch_add(bytes, Relaxed);
            e.counters.used_ms.fetch_max(now_ms, Relaxed);
        }
    }

    /// A flow's counters.
    pub fn stats(&self, id: FlowId) -> Option<FlowStats> {
        let e = self.entries.get(id.0 as usize)?.as_ref()?;
        Some(FlowStats {
            n_packets: e.counters.packets.load(Relaxed),
            n_bytes: e.counters.bytes.load(Relaxed),
            created_ms: e.created_ms,
            used_ms: e.counters.used_ms.load(Relaxed),
        })
    }

    /// Remove flows whose idle or hard timeout has passed at `now_ms`; returns their ids.
    pub fn expire(&mut self, now_ms: u64) -> Vec<FlowId> {
        self.expire_flows(now_ms)
            .into_iter()
            .map(|e| e.id)
            .collect()
    }

    /// `expire`, returning each removed flow with its counters and why it expired.
    pub fn expire_flows(&mut self, now_ms: u64) -> Vec<Expired> {
        let mut out = Vec::new();
        for &id in &self.timed {
            let Some(Some(e)) = self.entries.get(id as usize) else {
                continue;
            };
            let (idle, hard) = (
                u64::from(e.flow.idle_timeout),
                u64::from(e.flow.hard_timeout),
            );
            let used = e.counters.used_ms.load(Relaxed);
            let hard_hit = hard != 0 && now_ms >= e.created_ms.saturating_add(hard * 1000);
            if hard_hit || (idle != 0 && now_ms >= used.saturating_add(idle * 1000)) {
                out.push((FlowId(id), hard_hit));
            }
        }
        out.into_iter()
            .filter_map(|(id, hard)| {
                let stats = self.stats(id)?;
                let flow = self.remove(id)?;
                Some(Expired {
                    id,
                    flow,
                    stats,
                    hard,
                })
            })
            .collect()
    }

    /// The flows with an idle timeout hit at or after `since_ms`, with their last hit.
    pub fn idle_used_since(
        &self,
        since_ms: u64,
    ) -> impl Iterator<Item = (FlowId, &Flow, u64)> + '_ {
        self.timed.iter().filter_map(move |&id| {
            let e = self.entries.get(id as usize)?.as_ref()?;
            let used = e.counters.used_ms.load(Relaxed);
            (e.flow.idle_timeout != 0 && used >= since_ms).then_some((FlowId(id), &e.flow, used))
        })
    }

    /// Every flow, in id order.
    pub fn iter(&self) -> impl Iterator<Item = (FlowId, &Flow)> {
        self.entries
            .iter()
            .enumerate()
            .filter_map(|(i, e)| e.as_ref().map(|e| (FlowId(i as u32), &e.flow)))
    }

    /// Every flow as the running configuration writes it (its text, no counters), in `dump`
    /// order. Each flow's text is made once and kept with it: the configuration is built for
    /// every database write, and formatting 12,000 flows each time took ~5 ms of the worker.
    pub fn config_lines(&self) -> Vec<String> {
        let mut ids: Vec<u32> = self.iter().map(|(id, _)| id.0).collect();
        ids.sort_by_key(|&id| self.dump_rank(id));
        ids.into_iter()
            .filter_map(|id| {
                let e = self.entries.get(id as usize)?.as_ref()?;
                Some(e.text.get_or_init(|| e.flow.to_string().into()).to_string())
            })
            .collect()
    }

    /// Where flow `id` comes in a dump: table, then priority (highest first), then age.
    fn dump_rank(&self, id: u32) -> (u8, std::cmp::Reverse<u16>, u64) {
        let (table, prio) = self
            .entries
            .get(id as usize)
            .and_then(Option::as_ref)
            .map_or((0, 0), |e| (e.flow.table, e.flow.priority));
        (table, std::cmp::Reverse(prio), self.rules[id as usize].seq)
    }

    /// `dump-flows [FILTER]`: matching flows (non-strict) with their counters, sorted by table,
    /// then priority (highest first), then age (oldest first).
    pub fn dump(
        &self,
        filter: Option<&FlowFilter>,
        resolve: impl Fn(&PortRef) -> Option<u16>,
    ) -> Result<Vec<(FlowId, &Flow, FlowStats)>, FlowError> {
        let ids: Vec<u32> = match filter {
            Some(f) => self.select(f, &f.m.compile(&resolve)?, Self::out_port(f, &resolve)?),
            None => self.iter().map(|(id, _)| id.0).collect(),
        };
        let mut out: Vec<(FlowId, &Flow, FlowStats)> = ids
            .into_iter()
            .filter_map(|id| Some((FlowId(id), self.get(FlowId(id))?, self.stats(FlowId(id))?)))
            .collect();
        out.sort_by_key(|(id, _, _)| self.dump_rank(id.0));
        Ok(out)
    }
}
