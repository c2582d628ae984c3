//! The neighbour table (ARP cache): (bridge, IPv4 address) -> MAC, learned from ARP and aged.
//!
//! Contract:
//! - Lookups hash a packed u64 key with one multiply (no SipHash) and never allocate; inserting
//!   a new neighbour may grow the table (bounded by `capacity`, then refused and counted).
//! - An entry is `Reachable` once a MAC is known and `Incomplete` while a request is out; an
//!   incomplete entry remembers when the last request was sent so requests are rate-limited
//!   (one per second per address).
//! - Time is passed in (seconds). `age` removes reachable entries idle longer than the
//!   configured time and incomplete ones after `INCOMPLETE_TIMEOUT`.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use crate::wire::MacAddr;

/// Default neighbour aging time (seconds).
pub const DEFAULT_NEIGH_AGING: u32 = 300;
/// An unanswered request is forgotten after this many seconds.
pub const INCOMPLETE_TIMEOUT: u32 = 3;
/// Default most neighbours.
pub const DEFAULT_NEIGH_CAPACITY: usize = 65536;

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

/// Resolution state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// MAC known.
    Reachable(MacAddr),
    /// Request sent at `since`, no answer yet.
    Incomplete,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    state: State,
    /// Last confirmation (reachable) or last request sent (incomplete).
    stamp: u32,
}

/// What the caller should do for a packet to (bridge, ip).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolve {
    /// Send to this MAC.
    Mac(MacAddr),
    /// Unknown: send an ARP request now (and drop or hold the packet).
    SendRequest,
    /// A request is already out: drop or hold the packet.
    Pending,
}

/// One row for `neigh-show`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct NeighRow {
    /// Bridge id.
    pub bridge: u16,
    /// Address.
    pub ip: std::net::Ipv4Addr,
    /// MAC, or None while incomplete.
    pub mac: Option<String>,
    /// Seconds since last confirmed / requested.
    pub age: u32,
}

/// The neighbour table of all bridges.
pub struct Neighbours {
    map: U64Map<Entry>,
    capacity: usize,
    aging: u32,
    /// The last resolved (key, MAC): consecutive packets usually go to the same next hop.
    /// Cleared by every change to the table.
    last: Option<(u64, MacAddr)>,
}

#[inline]
fn key(bridge: u16, ip: [u8; 4]) -> u64 {
    (bridge as u64) << 32 | u32::from_be_bytes(ip) as u64
}

impl Neighbours {
    /// An empty table.
    pub fn new(capacity: usize, aging: u32) -> Neighbours {
        Neighbours {
            map: U64Map::default(),
            capacity,
            aging,
            last: None,
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

    /// Decide how to reach `ip` on `bridge` at `now`.
    #[inline]
    pub fn resolve(&mut self, bridge: u16, ip: [u8; 4], now: u32) -> Resolve {
        let k = key(bridge, ip);
        if let Some((lk, m)) = self.last
            && lk == k
        {
            return Resolve::Mac(m);
        }
        match self.map.get_mut(&k) {
            Some(Entry {
                state: State::Reachable(m),
                ..
            }) => {
                self.last = Some((k, *m));
                Resolve::Mac(*m)
            }
            Some(e) => {
                if now.saturating_sub(e.stamp) >= 1 {
                    e.stamp = now;
                    Resolve::SendRequest
                } else {
                    Resolve::Pending
                }
            }
            None => {
                if self.map.len() >= self.capacity {
                    return Resolve::Pending;
                }
                self.map.insert(
                    k,
                    Entry {
                        state: State::Incomplete,
                        stamp: now,
                    },
                );
                Resolve::SendRequest
            }
        }
    }

    /// Learn `ip` is at `mac` on `bridge` (from an ARP request or reply). Returns false when the
    /// table is full and the address is new.
    pub fn learn(&mut self, bridge: u16, ip: [u8; 4], mac: MacAddr, now: u32) -> bool {
        self.last = None;
        let k = key(bridge, ip);
        if !self.map.contains_key(&k) && self.map.len() >= self.capacity {
            return false;
        }
        self.map.insert(
            k,
            Entry {
                state: State::Reachable(mac),
                stamp: now,
            },
        );
        true
    }

    /// Refresh `ip` only if it is already known or being resolved (gratuitous ARP and requests
    /// from others must not fill the table).
    pub fn refresh(&mut self, bridge: u16, ip: [u8; 4], mac: MacAddr, now: u32) {
        self.last = None;
        if let Some(e) = self.map.get_mut(&key(bridge, ip)) {
            *e = Entry {
                state: State::Reachable(mac),
                stamp: now,
            };
        }
    }

    /// Remove expired entries. Returns how many.
    pub fn age(&mut self, now: u32) -> usize {
        self.last = None;
        let before = self.map.len();
        let aging = self.aging;
        self.map.retain(|_, e| match e.state {
            State::Reachable(_) => now.saturating_sub(e.stamp) <= aging,
            State::Incomplete => now.saturating_sub(e.stamp) <= INCOMPLETE_TIMEOUT,
        });
        before - self.map.len()
    }

    /// Forget every neighbour of `bridge`.
    pub fn flush_bridge(&mut self, bridge: u16) {
        self.last = None;
        self.map.retain(|k, _| (k >> 32) as u16 != bridge);
    }

    /// All entries, sorted by bridge then address.
    pub fn rows(&self, now: u32) -> Vec<NeighRow> {
        let mut v: Vec<NeighRow> = self
            .map
            .iter()
            .map(|(k, e)| NeighRow {
                bridge: (k >> 32) as u16,
                ip: std::net::Ipv4Addr::from(*k as u32),
                mac: match e.state {
                    State::Reachable(m) => Some(m.to_string()),
                    State::Incomplete => None,
                },
                age: now.saturating_sub(e.stamp),
            })
            .collect();
        v.sort_by_key(|r| (r.bridge, r.ip));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: MacAddr = MacAddr([2, 0, 0, 0, 0, 7]);

    #[test]
    fn resolve_requests_once_per_second_then_learns() {
        let mut n = Neighbours::new(16, 300);
        assert_eq!(n.resolve(1, [10, 0, 0, 2], 100), Resolve::SendRequest);
        assert_eq!(n.resolve(1, [10, 0, 0, 2], 100), Resolve::Pending);
        assert_eq!(n.resolve(1, [10, 0, 0, 2], 101), Resolve::SendRequest);
        n.refresh(1, [10, 0, 0, 2], M, 101);
        assert_eq!(n.resolve(1, [10, 0, 0, 2], 102), Resolve::Mac(M));
        assert_eq!(
            n.resolve(2, [10, 0, 0, 2], 102),
            Resolve::SendRequest,
            "per bridge"
        );
    }

    #[test]
    fn refresh_does_not_add_and_aging_removes() {
        let mut n = Neighbours::new(16, 10);
        n.refresh(0, [10, 0, 0, 9], M, 1);
        assert!(n.is_empty());
        n.learn(0, [10, 0, 0, 9], M, 1);
        n.resolve(0, [10, 0, 0, 8], 1);
        assert_eq!(n.age(5), 1, "incomplete entry timed out");
        assert_eq!(n.age(11), 0);
        assert_eq!(n.age(12), 1);
        assert!(n.is_empty());
    }

    #[test]
    fn capacity_is_enforced() {
        let mut n = Neighbours::new(2, 300);
        assert!(n.learn(0, [1, 1, 1, 1], M, 0));
        assert!(n.learn(0, [1, 1, 1, 2], M, 0));
        assert!(!n.learn(0, [1, 1, 1, 3], M, 0));
        assert!(n.learn(0, [1, 1, 1, 2], M, 5), "existing entry updates");
        assert_eq!(n.resolve(0, [1, 1, 1, 4], 0), Resolve::Pending);
        assert_eq!(n.rows(0).len(), 2);
    }
}
