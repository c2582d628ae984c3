//! The flow `ct(...)` action: connection tracking per zone for OpenFlow-style stateful rules
//! (`ct_state=+trk+new`, `ct(commit)`, `ct(nat(src=...))`), as ovs-ofctl writes them.
//!
//! Contract:
//! - Each bridge keeps one connection table per zone, made on first use. `ct` looks the packet
//!   up and returns its `ct_state`: `+trk` always; `+inv` for packets it cannot track (not IPv4
//!   TCP/UDP/ICMP echo, truncated, a later fragment whose first was not seen); otherwise
//!   `+new` until the connection has seen a reply, `+est` after, `+rpl` for reply-direction
//!   packets, `+snat`/`+dnat` when translated.
//! - An IPv4 ICMP error (unreachable, time exceeded, ...) that quotes a packet of a tracked
//!   connection of the zone is `+trk+rel` (with `+rpl` when it travels in the connection's
//!   reply direction, toward the original sender), carries the connection's mark, label and
//!   original tuple, and with `nat` is translated back as the connection was (outer addresses,
//!   quoted packet, checksums). It creates nothing (`commit` does not apply) and is not
//!   counted on the connection. One that quotes no tracked connection is `+trk+inv`, as OVS.
//! - `commit` creates the connection if the packet is new (with `nat(src=...)`/`nat(dst=...)`
//!   it is translated; from an address range, by a hash of the source address for SNAT, so a
//!   host keeps one address, and of the source address and port for DNAT); `nat` alone applies the translation of an existing connection.
//! - `exec(set_field:...->ct_mark|ct_label)` (with `commit`) writes the connection's mark and
//!   label; every packet of a tracked connection then carries them (`CtResult`), untracked or
//!   uncommitted packets carry 0. They are kept here, beside the connection table, keyed by the
//!   connection's slot and checked against its original tuple and creation time, so a slot
//!   reused by another connection starts at 0.
//! - IPv4 fragments (no reassembly, as the router's NAT): a first fragment is tracked by the
//!   tuple it carries and its datagram remembered per zone; a later fragment gets its first
//!   one's connection and `ct_state` (counted without a TCP state step; under `nat` only its
//!   addresses are rewritten). Flows after `ct` still see a later fragment's own fields (no
//!   ports: `nw_frag=later`), where OVS's reassembly would show the whole datagram's.
//! - IPv6 is tracked by `v6.rs` with the same `ct_state` meaning (no NAT).
//! - Time is seconds on the worker's clock; entries expire with the conntrack timeouts.

mod v6;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use super::{Meta, nat};
use crate::conntrack::{
    Conntrack, CtConfig, DatagramTable, Direction, FlowKey, NatInfo, NatKind, Owner, PROTO_ICMP,
    PROTO_TCP, PROTO_UDP, PoolId, PortAllocator,
};
use crate::flow::{CtAction, CtNat, ct_state};
use crate::packet::Frames;
use crate::wire::{EtherType, icmp, ipv4};

/// Connections per zone: at most this many per zone table.
pub const ZONE_LIMIT: usize = 65536;

/// One bridge's connection tracking for flows.
#[derive(Default)]
pub struct FlowConntrack {
    zones: BTreeMap<u16, Zone>,
}

/// What a `ct` action tells the packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CtResult {
    /// `ct_state` flags.
    pub state: u8,
    /// The connection's `ct_mark` (0 if none).
    pub mark: u32,
    /// The connection's `ct_label` (0 if none).
    pub label: u128,
    /// The original direction's (source, destination, protocol, source port or ICMP type,
    /// destination port or ICMP code): the connection's, or the packet's own when it has none
    /// yet (OVS's `ct_nw_*`/`ct_tp_*`); zeros for invalid packets. An ICMP connection's
    /// original direction is its echo request (type 8, code 0), as OVS only starts ICMP
    /// connections from requests.
    pub orig: (u32, u32, u8, u16, u16),
}

impl CtResult {
    fn only(state: u8) -> CtResult {
        CtResult {
            state,
            ..CtResult::default()
        }
    }
}

/// (source, destination, protocol, `sp`, `dp`) of `k`.
fn tuple(k: &FlowKey, sp: u16, dp: u16) -> (u32, u32, u8, u16, u16) {
    (
        u32::from_be_bytes(k.src),
        u32::from_be_bytes(k.dst),
        k.proto,
        sp,
        dp,
    )
}

/// A connection's mark and label, with what identifies the connection in its slot.
struct Marks {
    orig: FlowKey,
    created: u32,
    mark: u32,
    label: u128,
}

/// A source-NAT pool set: (address, first port, last port) and its TCP, UDP, ICMP pools.
type SnatPools = (([u8; 4], u16, u16), [PoolId; 3]);

struct Zone {
    ct: Conntrack,
    /// Source-NAT pools made so far.
    pools: Vec<SnatPools>,
    /// Marks and labels of connections that have one.
    marks: std::collections::HashMap<crate::conntrack::ConnId, Marks>,
    /// The tuple each fragmented datagram's first fragment carried, for the later ones.
    frags: DatagramTable<FlowKey>,
    /// IPv6 connections.
    v6: v6::Table6,
}

impl FlowConntrack {
    /// Connections tracked in all zones.
    pub fn len(&self) -> usize {
        self.zones.values().map(|z| z.ct.len() + z.v6.len()).sum()
    }

    /// True if nothing is tracked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Expire old connections (`budget` slots per zone).
    pub fn expire(&mut self, now: u32, budget: usize) {
        for z in self.zones.values_mut() {
            z.ct.expire(now, budget);
            z.v6.expire(now);
        }
    }

    /// `ct-show` lines: `zone=N <connection>`.
    pub fn rows(&self, now: u32) -> Vec<String> {
        self.zones
            .iter()
            .flat_map(|(zone, z)| {
                z.ct.iter(now)
                    .map(move |c| format!("zone={zone} {c}"))
                    .chain(z.v6.rows(*zone))
            })
            .collect()
    }

    /// Zone `id`'s tables, made on first use (None if they cannot be made).
    fn zone(&mut self, id: u16) -> Option<&mut Zone> {
        match self.zones.entry(id) {
            std::collections::btree_map::Entry::Occupied(e) => Some(e.into_mut()),
            std::collections::btree_map::Entry::Vacant(e) => {
                let ct = Conntrack::new(CtConfig {
                    limit: ZONE_LIMIT,
                    ..CtConfig::default()
                })
                .ok()?;
                Some(e.insert(Zone {
                    ct,
                    pools: Vec::new(),
                    marks: Default::default(),
                    frags: Default::default(),
                    v6: Default::default(),
                }))
            }
        }
    }

    /// Run `a` for the frame in `m`, received on port `owner` (a connection it commits is
    /// charged to that port: see the conntrack module's max-min sharing); returns the packet's
    /// ct_state, mark and label.
    pub(super) fn apply(
        &mut self,
        frames: &mut Frames,
        m: &Meta,
        owner: Owner,
        a: &CtAction,
        now: u32,
    ) -> CtResult {
        let inv = CtResult::only(ct_state::TRK | ct_state::INV);
        if m.ethertype == EtherType::IPV6 {
            let Some(zone) = self.zone(a.zone) else {
                return inv;
            };
            let data = frames.data(m.desc);
            return zone
                .v6
                .apply(&data[(m.l3 as usize).min(data.len())..], a, now);
        }
        if m.ethertype != EtherType::IPV4 {
            return inv;
        }
        let l3 = m.l3 as usize;
        let (hl, total) = {
            let data = frames.data(m.desc);
            match ipv4::Packet::new_checked(&data[l3.min(data.len())..]) {
                Ok(p) => (p.header_len(), p.total_len() as usize),
                Err(_) => return inv,
            }
        };
        let ip = &frames.data(m.desc)[l3..l3 + total];
        // A later fragment carries no ports: its datagram's first fragment named the tuple.
        let (key, flags, later) = match nat::flow_key(ip, hl) {
            Some((k, f)) => (k, f, false),
            None => match nat::piece(ip) {
                nat::Piece::First => {
                    let Some((k, f)) = nat::first_fragment_key(ip, hl) else {
                        return inv;
                    };
                    let d = nat::datagram_id(ip);
                    let Some(zone) = self.zone(a.zone) else {
                        return inv;
                    };
                    zone.frags.remember(d, k);
                    (k, f, false)
                }
                nat::Piece::Later => {
                    let d = nat::datagram_id(ip);
                    match self.zones.get_mut(&a.zone).and_then(|z| z.frags.recall(&d)) {
                        Some(k) => (k, 0, true),
                        None => return inv,
                    }
                }
                nat::Piece::Whole => {
                    let ip = &mut frames.data_mut(m.desc)[l3..l3 + total];
                    return self.related(ip, hl, a, now).unwrap_or(inv);
                }
            },
        };
        let own = {
            let l4 = &frames.data(m.desc)[l3 + hl..];
            let (sp, dp) = match key.proto {
                PROTO_ICMP if later => (8, 0),
                PROTO_ICMP => (u16::from(l4[0]), u16::from(l4[1])),
                _ => (key.sport, key.dport),
            };
            tuple(&key, sp, dp)
        };
        let new = CtResult {
            orig: own,
            ..CtResult::only(ct_state::TRK | ct_state::NEW)
        };
        let Some(zone) = self.zone(a.zone) else {
            return inv;
        };
        let found = zone.ct.lookup(&key, now);
        // An echo reply is valid only as the answer to a tracked echo request (as Linux and
        // OVS have it): alone, or sent the request's way, it is invalid, not a new
        // connection or part of the request's (an ICMP key holds no type to tell them apart).
        if key.proto == PROTO_ICMP
            && !later
            && own.3 == u16::from(icmp::ECHO_REPLY)
            && !matches!(found, Some((_, Direction::Reply)))
        {
            return inv;
        }
        let (id, dir) = match found {
            Some(hit) => hit,
            None if a.commit => match zone.commit(owner, key, a.nat.as_ref(), now) {
                Some(id) => (id, Direction::Original),
                // Table full or ports exhausted: the packet is new and stays untracked.
                None => return new,
            },
            None => return new,
        };
        if later {
            // Counted only: the first fragment's header made any state transition.
            zone.ct.count(id, dir, total as u32, now);
        } else {
            zone.ct.update(id, dir, total as u32, flags, now);
        }
        let Some(conn) = zone.ct.conn(id) else {
            return new;
        };
        let ident = (conn.orig, conn.created);
        let orig = match conn.orig.proto {
            PROTO_ICMP => tuple(&conn.orig, 8, 0),
            _ => tuple(&conn.orig, conn.orig.sport, conn.orig.dport),
        };
        let mut st = ct_state::TRK;
        st |= match dir {
            Direction::Reply => ct_state::RPL | ct_state::EST,
            Direction::Original if conn.packets[Direction::Reply.index()] > 0 => ct_state::EST,
            Direction::Original => ct_state::NEW,
        };
        if a.nat.is_some()
            && let Some(n) = conn.nat
        {
            let to = conn.rewrite(dir);
            let ip = &mut frames.data_mut(m.desc)[l3..l3 + total];
            if later {
                nat::put_addrs(ip, to.src, to.dst);
            } else {
                nat::rewrite(ip, hl, &key, &to);
            }
            st |= match n.kind {
                NatKind::Snat => ct_state::SNAT,
                NatKind::Dnat => ct_state::DNAT,
            };
        }
        let (mark, label) = zone.marks(id, ident, a);
        CtResult {
            state: st,
            mark,
            label,
            orig,
        }
    }
}

impl FlowConntrack {
    /// `ct` for an ICMP error `ip` (header length `hl`): `+rel` when it quotes a packet of a
    /// connection of `a`'s zone, None otherwise (see the module documentation).
    fn related(&mut self, ip: &mut [u8], hl: usize, a: &CtAction, now: u32) -> Option<CtResult> {
        let quoted = nat::quoted_key(ip, hl)?;
        let zone = self.zones.get_mut(&a.zone)?;
        // The quoted packet is one the connection carried, as it was sent (translated, if
        // it was): reversed, it is the tuple of the other direction.
        let (id, dir) = zone.ct.lookup(&quoted.reverse(), now)?;
        let conn = zone.ct.conn(id)?;
        let (ident, nat_kind) = ((conn.orig, conn.created), conn.nat.map(|n| n.kind));
        let orig = match conn.orig.proto {
            PROTO_ICMP => tuple(&conn.orig, 8, 0),
            _ => tuple(&conn.orig, conn.orig.sport, conn.orig.dport),
        };
        // Found by its reply tuple: the quoted packet went the original way, so the error
        // goes back the reply way.
        let mut state = ct_state::TRK | ct_state::REL;
        if dir == Direction::Reply {
            state |= ct_state::RPL;
        }
        if a.nat.is_some()
            && let Some(kind) = nat_kind
            && nat::translate_icmp_error(&mut zone.ct, ip, hl, now)
        {
            state |= match kind {
                NatKind::Snat => ct_state::SNAT,
                NatKind::Dnat => ct_state::DNAT,
            };
        }
        let (mark, label) = zone.current_marks(id, ident);
        Some(CtResult {
            state,
            mark,
            label,
            orig,
        })
    }
}

/// The address of `first..=last` (just `first` without a range) for a connection whose
/// `seed` is given: a hash of it, so the choice is spread and repeatable.
fn pick(first: Ipv4Addr, last: Option<Ipv4Addr>, seed: u32) -> Ipv4Addr {
    let Some(last) = last else { return first };
    let n = u64::from(u32::from(last) - u32::from(first)) + 1;
    let h = u64::from(seed.wrapping_mul(0x9e37_79b1) ^ (seed >> 16));
    Ipv4Addr::from(u32::from(first) + (h % n) as u32)
}

impl Zone {
    /// The mark and label connection `id` (identified by `orig` and `created`) carries now.
    fn current_marks(
        &self,
        id: crate::conntrack::ConnId,
        (orig, created): (FlowKey, u32),
    ) -> (u32, u128) {
        self.marks
            .get(&id)
            .filter(|m| m.orig == orig && m.created == created)
            .map_or((0, 0), |m| (m.mark, m.label))
    }

    /// The mark and label of connection `id` after `a`'s `exec(...)` (applied when `a`
    /// commits).
    fn marks(
        &mut self,
        id: crate::conntrack::ConnId,
        (orig, created): (FlowKey, u32),
        a: &CtAction,
    ) -> (u32, u128) {
        let same = |m: &Marks| m.orig == orig && m.created == created;
        let cur = self
            .marks
            .get(&id)
            .filter(|m| same(m))
            .map_or((0, 0), |m| (m.mark, m.label));
        if !a.commit || (a.mark.is_none() && a.label.is_none()) {
            return cur;
        }
        let mark = a.mark.map_or(cur.0, |m| (cur.0 & !m.mask) | m.value);
        let label = a.label.map_or(cur.1, |l| (cur.1 & !l.mask) | l.value);
        if self.marks.len() >= ZONE_LIMIT {
            // Forget the marks of connections that are gone.
            let ct = &self.ct;
            self.marks.retain(|i, m| {
                ct.conn(*i)
                    .is_some_and(|c| c.orig == m.orig && c.created == m.created)
            });
        }
        self.marks.insert(
            id,
            Marks {
                orig,
                created,
                mark,
                label,
            },
        );
        (mark, label)
    }

    /// Create the connection for `key`, translated as `nat` says.
    fn commit(
        &mut self,
        owner: Owner,
        key: FlowKey,
        nat: Option<&CtNat>,
        now: u32,
    ) -> Option<crate::conntrack::ConnId> {
        match nat {
            Some(CtNat::Src { addr, last, ports }) => {
                let range = ports.unwrap_or((32768, 60999));
                // An address range: each source address keeps one address of it.
                let addr = pick(*addr, *last, u32::from_be_bytes(key.src));
                let pools = self.pools_for(addr.octets(), range)?;
                let pool = match key.proto {
                    PROTO_TCP => pools[0],
                    PROTO_UDP => pools[1],
                    _ => pools[2],
                };
                self.ct.snat(owner, key, pool, now).ok()
            }
            Some(CtNat::Dst { addr, last, port }) => {
                let addr = &pick(
                    *addr,
                    *last,
                    u32::from_be_bytes(key.src) ^ u32::from(key.sport).rotate_left(16),
                );
                let port = match key.proto {
                    PROTO_ICMP => key.dport,
                    _ => port.unwrap_or(key.dport),
                };
                self.ct
                    .create_nat_conn(owner, key, NatInfo::dnat(addr.octets(), port), now)
                    .ok()
            }
            Some(CtNat::Existing) | None => self.ct.insert(owner, key, now).ok(),
        }
    }

    fn pools_for(&mut self, addr: [u8; 4], (lo, hi): (u16, u16)) -> Option<[PoolId; 3]> {
        if let Some((_, p)) = self.pools.iter().find(|(k, _)| *k == (addr, lo, hi)) {
            return Some(*p);
        }
        let mut ids = [0; 3];
        for (i, proto) in [PROTO_TCP, PROTO_UDP, PROTO_ICMP].into_iter().enumerate() {
            let range = if proto == PROTO_ICMP {
                1..=65535
            } else {
                lo..=hi
            };
            ids[i] = self
                .ct
                .add_pool(PortAllocator::new(addr, proto, range).ok()?);
        }
        self.pools.push(((addr, lo, hi), ids));
        Some(ids)
    }
}
