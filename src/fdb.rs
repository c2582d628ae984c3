//! The forwarding database (CAM table) of one bridge: (VLAN, MAC) -> port, with aging.
//!
//! Contract:
//! - Keys pack the MAC (48 bits) and VLAN id (12 bits) into one u64; the table is open
//!   addressing with linear probing over a power-of-two slot array sized for a load factor of at
//!   most 1/2 at `capacity`, so a lookup is a multiply, a shift and (almost always) one cache line.
//! - At most `capacity` entries: when full, `learn` refuses new MACs (`Learn::Full`) and the
//!   caller floods; existing entries are still refreshed and moved.
//! - Time is passed in (seconds). `age` removes dynamic entries idle longer than the aging time,
//!   `budget` slots at a time, so the worker can spread the scan over many iterations.
//! - Static entries (added by the control plane) never age and are not moved by learning.
//! - No allocation after construction.

/// Ports are u16 ids.
pub type PortId = u16;

const OCCUPIED: u64 = 1 << 63;
const STATIC: u16 = 1;

#[derive(Clone, Copy, Default)]
#[repr(C)]
struct Slot {
    /// `OCCUPIED | vlan << 48 | mac`, or 0 when empty.
    key: u64,
    /// Last time (seconds) this MAC was seen as a source.
    stamp: u32,
    port: PortId,
    flags: u16,
}

const _: () = assert!(std::mem::size_of::<Slot>() == 16);

/// What `learn` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Learn {
    /// Already known on this port: timestamp refreshed.
    Refreshed,
    /// A new entry.
    New,
    /// Known on another port: moved (a MAC move).
    Moved {
        /// The port it was on.
        from: PortId,
    },
    /// Not learned: the table is full.
    Full,
    /// Not learned: a static entry owns this key.
    Static,
}

/// The table holds `capacity` entries already.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("FDB full")]
pub struct FdbFull;

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

/// A bridge's FDB.
pub struct Fdb {
    slots: Box<[Slot]>,
    mask: usize,
    shift: u32,
    len: usize,
    capacity: usize,
    age_cursor: usize,
}

#[inline]
fn make_key(vlan: u16, mac: u64) -> u64 {
    OCCUPIED | ((vlan as u64 & 0xfff) << 48) | (mac & 0xffff_ffff_ffff)
}

impl Fdb {
    /// A table holding at most `capacity` entries (at least 1).
    pub fn new(capacity: usize) -> Fdb {
        let capacity = capacity.max(1);
        let slots = (capacity * 2).next_power_of_two().max(16);
        Fdb {
            slots: vec![Slot::default(); slots].into_boxed_slice(),
            mask: slots - 1,
            shift: 64 - slots.trailing_zeros(),
            len: 0,
            capacity,
            age_cursor: 0,
        }
    }

    /// Entries in use.
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

    #[inline]
    fn home(&self, key: u64) -> usize {
        (key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> self.shift) as usize
    }

    #[inline]
    fn find(&self, key: u64) -> Result<usize, usize> {
        let mut i = self.home(key);
        loop {
            let k = self.slots[i].key;
            if k == key {
                return Ok(i);
            }
            if k == 0 {
                return Err(i);
            }
            i = (i + 1) & self.mask;
        }
    }

    /// The port for (vlan, mac), if known.
    #[inline]
    pub fn lookup(&self, vlan: u16, mac: u64) -> Option<PortId> {
        self.find(make_key(vlan, mac))
            .ok()
            .map(|i| self.slots[i].port)
    }

    /// Learn that (vlan, mac) was seen on `port` at `now`.
    #[inline]
    pub fn learn(&mut self, vlan: u16, mac: u64, port: PortId, now: u32) -> Learn {
        let key = make_key(vlan, mac);
        match self.find(key) {
            Ok(i) => {
                let s = &mut self.slots[i];
                if s.flags & STATIC != 0 {
                    return Learn::Static;
                }
                if s.stamp != now {
                    s.stamp = now;
                }
                if s.port == port {
                    Learn::Refreshed
                } else {
                    let from = s.port;
                    s.port = port;
                    Learn::Moved { from }
                }
            }
            Err(i) => {
                if self.len >= self.capacity {
                    return Learn::Full;
                }
                self.slots[i] = Slot {
                    key,
                    stamp: now,
                    port,
                    flags: 0,
                };
                self.len += 1;
                Learn::New
            }
        }
    }

    /// Add or replace a static entry. Fails when the table is full.
    pub fn add_static(
        &mut self,
        vlan: u16,
        mac: u64,
        port: PortId,
        now: u32,
    ) -> Result<(), FdbFull> {
        let key = make_key(vlan, mac);
        let i = match self.find(key) {
            Ok(i) => i,
            Err(i) => {
                if self.len >= self.capacity {
                    return Err(FdbFull);
                }
                self.len += 1;
                i
            }
        };
        self.slots[i] = Slot {
            key,
            stamp: now,
            port,
            flags: STATIC,
        };
        Ok(())
    }

    /// Remove (vlan, mac). Returns true if it was present.
    pub fn remove(&mut self, vlan: u16, mac: u64) -> bool {
        match self.find(make_key(vlan, mac)) {
            Ok(i) => {
                self.remove_at(i);
                true
            }
            Err(_) => false,
        }
    }

    /// Backward-shift deletion: keeps every probe chain unbroken without tombstones.
    fn remove_at(&mut self, mut hole: usize) {
        self.slots[hole] = Slot::default();
        self.len -= 1;
        let mut i = (hole + 1) & self.mask;
        while self.slots[i].key != 0 {
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
    }

    /// Remove dynamic entries older than `max_age` seconds, scanning at most `budget` slots from
    /// where the last call stopped. Returns the number removed.
    pub fn age(&mut self, now: u32, max_age: u32, budget: usize) -> usize {
        let mut removed = 0;
        for _ in 0..budget.min(self.slots.len()) {
            let i = self.age_cursor;
            let s = self.slots[i];
            if s.key != 0 && s.flags & STATIC == 0 && now.saturating_sub(s.stamp) > max_age {
                self.remove_at(i);
                removed += 1;
                // A later entry may have shifted into slot i: look at it again.
                continue;
            }
            self.age_cursor = (i + 1) & self.mask;
        }
        removed
    }

    /// Remove every entry on `port` (or every dynamic entry when `port` is None). Static entries
    /// go only when their port is flushed. Returns the number removed.
    pub fn flush(&mut self, port: Option<PortId>) -> usize {
        let mut removed = 0;
        let mut i = 0;
        while i < self.slots.len() {
            let s = self.slots[i];
            let hit = s.key != 0
                && match port {
                    Some(p) => s.port == p,
                    None => s.flags & STATIC == 0,
                };
            if hit {
                self.remove_at(i);
                removed += 1;
                // Re-examine slot i, which may have received a shifted entry; a shift can also
                // wrap an entry from the start of the array to the end, which we then meet later.
            } else {
                i += 1;
            }
        }
        // Entries shifted across the wrap point into slots < i were examined already only if
        // they were there before; one extra pass catches any that moved there.
        if port.is_some() && self.iter().any(|e| Some(e.port) == port) {
            removed += self.flush(port);
        }
        removed
    }

    /// All entries, in slot order.
    pub fn iter(&self) -> impl Iterator<Item = Entry> + '_ {
        self.slots.iter().filter(|s| s.key != 0).map(|s| Entry {
            vlan: ((s.key >> 48) & 0xfff) as u16,
            mac: s.key & 0xffff_ffff_ffff,
            port: s.port,
            stamp: s.stamp,
            is_static: s.flags & STATIC != 0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn capacity_limit_refuses_new_but_refreshes_old() {
        let mut f = Fdb::new(3);
        for m in 1..=3 {
            assert_eq!(f.learn(0, m, 1, 0), Learn::New);
        }
        assert_eq!(f.learn(0, 4, 1, 0), Learn::Full);
        assert_eq!(f.lookup(0, 4), None);
        assert_eq!(f.learn(0, 2, 1, 5), Learn::Refreshed);
        assert_eq!(f.learn(0, 3, 2, 5), Learn::Moved { from: 1 });
        assert_eq!(f.len(), 3);
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
}
