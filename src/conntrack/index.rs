//! The hash index: packed key -> (connection slot, direction).
//!
//! Open addressing with linear probing and backward-shift deletion (as in `fdb.rs`), over a
//! power-of-two array of u128 slots sized for a load factor of at most 1/2. One slot is 16 bytes:
//! the 104-bit key, a 22-bit connection number, a direction bit and an occupied bit, so a probe
//! compares one u128 and four slots share a cache line. No allocation after construction.
//!
//! The home slot comes from a keyed hash (two seed words and two odd multipliers spread from the
//! table's seed, random in production), and no key lies more than [`MAX_PROBE`] slots from its
//! home: a lookup reads at most that many slots and an insert that finds no free slot that near
//! fails (counted by the table), so tuples crafted to collide cost bounded work.

use super::Direction;
use super::key::{KEY_BITS, KEY_MASK};

/// The farthest a key may lie from its home slot.
pub(crate) const MAX_PROBE: usize = 64;

const OCCUPIED: u128 = 1 << 127;
const REPLY: u128 = 1 << 126;
const CONN_BITS: u32 = 22;
/// The largest number of connections an index can name (2^22 = 4,194,304).
pub(crate) const MAX_CONNS: usize = 1 << CONN_BITS;
const MATCH_MASK: u128 = OCCUPIED | KEY_MASK;

pub(crate) struct Index {
    slots: Box<[u128]>,
    mask: usize,
    shift: u32,
    /// Hash key: two xor words and two odd multipliers.
    k: [u64; 4],
    len: usize,
}

/// splitmix64: spreads one seed into independent-looking words.
fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Index {
    /// An index for up to `entries` keys (load factor <= 1/2).
    pub(crate) fn new(entries: usize, seed: u64) -> Index {
        let n = (entries.max(1) * 2).next_power_of_two().max(16);
        Index {
            slots: vec![0u128; n].into_boxed_slice(),
            mask: n - 1,
            shift: 64 - n.trailing_zeros(),
            k: [
                mix(seed),
                mix(seed ^ 1),
                mix(seed ^ 2) | 1,
                mix(seed ^ 3) | 1,
            ],
            len: 0,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    #[inline]
    fn home(&self, packed: u128) -> usize {
        let a = (packed as u64 ^ self.k[0]).wrapping_mul(self.k[2]);
        let b = ((packed >> 64) as u64 ^ self.k[1]).wrapping_mul(self.k[3]);
        let h = a ^ b.rotate_left(29);
        ((h ^ (h >> 32)).wrapping_mul(0x1656_67B1_9E37_79F9) >> self.shift) as usize
    }

    /// `Ok(slot)` holding `packed`, or `Err(Some(slot))`: the empty slot ending its probe chain
    /// within [`MAX_PROBE`] of its home, or `Err(None)` when there is none that near.
    #[inline]
    fn find(&self, packed: u128) -> Result<usize, Option<usize>> {
        let want = OCCUPIED | packed;
        let mut i = self.home(packed);
        for _ in 0..MAX_PROBE {
            let s = self.slots[i];
            if s & MATCH_MASK == want {
                return Ok(i);
            }
            if s == 0 {
                return Err(Some(i));
            }
            i = (i + 1) & self.mask;
        }
        Err(None)
    }

    /// The connection number and direction stored for `packed`.
    #[inline]
    pub(crate) fn get(&self, packed: u128) -> Option<(u32, Direction)> {
        let s = self.slots[self.find(packed).ok()?];
        let conn = ((s >> KEY_BITS) as u32) & (MAX_CONNS as u32 - 1);
        let dir = if s & REPLY != 0 {
            Direction::Reply
        } else {
            Direction::Original
        };
        Some((conn, dir))
    }

    /// Add `packed` -> (conn, dir). Returns false (and changes nothing) if the key is present
    /// or no slot within [`MAX_PROBE`] of its home is free. The caller keeps `len` under half
    /// the slots and `conn < MAX_CONNS`.
    pub(crate) fn insert(&mut self, packed: u128, conn: u32, dir: Direction) -> bool {
        debug_assert!((conn as usize) < MAX_CONNS);
        debug_assert!(self.len < self.slots.len() / 2 + 1);
        match self.find(packed) {
            Ok(_) | Err(None) => false,
            Err(Some(i)) => {
                let d = if dir == Direction::Reply { REPLY } else { 0 };
                self.slots[i] = OCCUPIED | d | (conn as u128) << KEY_BITS | packed;
                self.len += 1;
                true
            }
        }
    }

    /// Remove `packed`. Returns true if it was present.
    pub(crate) fn remove(&mut self, packed: u128) -> bool {
        match self.find(packed) {
            Ok(i) => {
                self.remove_at(i);
                true
            }
            Err(_) => false,
        }
    }

    /// Backward-shift deletion: keeps every probe chain unbroken without tombstones.
    fn remove_at(&mut self, mut hole: usize) {
        self.slots[hole] = 0;
        self.len -= 1;
        let mut i = (hole + 1) & self.mask;
        while self.slots[i] != 0 {
            let home = self.home(self.slots[i] & KEY_MASK);
            let dist_i = i.wrapping_sub(home) & self.mask;
            let dist_hole = i.wrapping_sub(hole) & self.mask;
            if dist_i >= dist_hole {
                self.slots[hole] = self.slots[i];
                self.slots[i] = 0;
                hole = i;
            }
            i = (i + 1) & self.mask;
        }
    }

    /// Remove every key.
    pub(crate) fn clear(&mut self) {
        self.slots.fill(0);
        self.len = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_get_remove_with_collisions() {
        let mut ix = Index::new(600, 7);
        for k in 0..600u128 {
            let dir = if k % 2 == 0 {
                Direction::Original
            } else {
                Direction::Reply
            };
            assert!(ix.insert(k * 0x1_0000_0001, (k / 2) as u32, dir));
        }
        assert!(!ix.insert(0, 9, Direction::Reply), "duplicate refused");
        for k in (0..600u128).step_by(3) {
            assert!(ix.remove(k * 0x1_0000_0001));
        }
        for k in 0..600u128 {
            let got = ix.get(k * 0x1_0000_0001);
            if k % 3 == 0 {
                assert_eq!(got, None);
            } else {
                assert_eq!(got.map(|g| g.0), Some((k / 2) as u32), "key {k}");
            }
        }
        assert_eq!(ix.len(), 400);
    }
}
