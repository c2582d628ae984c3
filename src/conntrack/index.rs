//! The hash index: packed key -> (connection slot, direction).
//!
//! Open addressing with linear probing and backward-shift deletion (as in `fdb.rs`), over a
//! power-of-two array of u128 slots sized for a load factor of at most 1/2. One slot is 16 bytes:
//! the 104-bit key, a 22-bit connection number, a direction bit and an occupied bit, so a probe
//! compares one u128 and four slots share a cache line. No allocation after construction.

use super::Direction;
use super::key::{KEY_BITS, KEY_MASK, hash};

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
    seed: u64,
    len: usize,
}

impl Index {
    /// An index for up to `entries` keys (load factor <= 1/2).
    pub(crate) fn new(entries: usize, seed: u64) -> Index {
        let n = (entries.max(1) * 2).next_power_of_two().max(16);
        Index {
            slots: vec![0u128; n].into_boxed_slice(),
            mask: n - 1,
            shift: 64 - n.trailing_zeros(),
            seed,
            len: 0,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    #[inline]
    fn home(&self, packed: u128) -> usize {
        (hash(packed, self.seed) >> self.shift) as usize
    }

    /// `Ok(slot)` holding `packed`, or `Err(slot)`: the empty slot ending its probe chain.
    #[inline]
    fn find(&self, packed: u128) -> Result<usize, usize> {
        let want = OCCUPIED | packed;
        let mut i = self.home(packed);
        loop {
            let s = self.slots[i];
            if s & MATCH_MASK == want {
                return Ok(i);
            }
            if s == 0 {
                return Err(i);
            }
            i = (i + 1) & self.mask;
        }
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

    /// Add `packed` -> (conn, dir). Returns false (and changes nothing) if the key is present.
    /// The caller keeps `len` under half the slots and `conn < MAX_CONNS`.
    pub(crate) fn insert(&mut self, packed: u128, conn: u32, dir: Direction) -> bool {
        debug_assert!((conn as usize) < MAX_CONNS);
        debug_assert!(self.len < self.slots.len() / 2 + 1);
        match self.find(packed) {
            Ok(_) => false,
            Err(i) => {
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
