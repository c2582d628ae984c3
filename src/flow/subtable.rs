//! One subtable of the tuple-space classifier: every flow of one table with one mask.
//!
//! Contract:
//! - An open-addressing hash table (linear probing, power-of-two slots, load <= 1/2, deletion by
//!   backward shift, no tombstones) keyed by the masked packed key; a slot holds the key's hash
//!   and the best rule of a chain of rules with that key, in descending (priority, seq).
//! - `bound` is the best (priority, seq) of any rule here, for the lookup's early exit.
//! - Rules live in the classifier's `rules` array, indexed by flow id; this file only links them.
//! - `find` never allocates and never panics; `insert` may grow the slot array.

use std::collections::BTreeSet;

use super::classifier::NONE;
use super::match_::Words;

/// The hot part of a flow, indexed by `FlowId`.
#[derive(Clone, Copy)]
pub(crate) struct Rule {
    /// Masked value.
    pub(crate) key: Words,
    /// Insertion order (tiebreak between equal priorities); unique.
    pub(crate) seq: u64,
    pub(crate) prio: u16,
    pub(crate) table: u8,
    /// Subtable index in its table.
    pub(crate) sub: u16,
    /// Next rule with the same mask and key (lower priority), or NONE.
    pub(crate) next: u32,
    /// The flow also matches ext fields (registers, metadata, IPv6): check them too.
    pub(crate) ext: bool,
}

#[derive(Clone, Copy)]
pub(crate) struct Slot {
    pub(crate) hash: u64,
    /// Best rule of the chain, or NONE when the slot is empty.
    pub(crate) head: u32,
}

pub(crate) const EMPTY: Slot = Slot {
    hash: 0,
    head: NONE,
};
const MIN_SLOTS: usize = 8;

/// 64x64->128 multiply, folded (wyhash's "mum").
#[inline]
fn mum(a: u64, b: u64) -> u64 {
    let r = u128::from(a) * u128::from(b);
    (r as u64) ^ ((r >> 64) as u64)
}

/// The packed-key hash (also the exact-match cache's): three independent multiplies and one
/// to combine them, so the dependency chain is two multiplies deep.
#[inline]
pub(crate) fn hash_words(w: &Words, seed: u64) -> u64 {
    const S: [u64; 6] = [
        0xa076_1d64_78bd_642f,
        0xe703_7ed1_a0b4_28db,
        0x8ebc_6af0_9c88_c6e3,
        0x5899_65cc_7537_4cc3,
        0x1d8e_4e27_c47d_124f,
        0x9e37_79b9_7f4a_7c15,
    ];
    let a = mum(w[0] ^ S[0], w[1] ^ S[1]);
    let b = mum(w[2] ^ S[2], w[3] ^ S[3]);
    let c = mum(w[4] ^ S[4], seed ^ S[5]);
    mum(a ^ c ^ S[1], b ^ S[2])
}

#[inline]
pub(crate) fn and(w: &Words, m: &Words) -> Words {
    [
        w[0] & m[0],
        w[1] & m[1],
        w[2] & m[2],
        w[3] & m[3],
        w[4] & m[4],
    ]
}

#[derive(Clone)]
pub(crate) struct Subtable {
    pub(crate) mask: Words,
    pub(crate) slots: Vec<Slot>,
    /// Occupied slots (distinct masked keys).
    pub(crate) used: usize,
    /// Best (priority, seq) of any rule here; (0, 0) when empty.
    pub(crate) bound: (u16, u64),
    /// (priority, seq) of every rule here.
    pub(crate) ranks: BTreeSet<(u16, u64)>,
}

impl Subtable {
    pub(crate) fn new(mask: Words) -> Subtable {
        Subtable {
            mask,
            slots: vec![EMPTY; MIN_SLOTS],
            used: 0,
            bound: (0, 0),
            ranks: BTreeSet::new(),
        }
    }

    /// The slot holding `key`, or the empty slot where it would go.
    #[inline]
    pub(crate) fn find(&self, key: &Words, h: u64, rules: &[Rule]) -> Result<usize, usize> {
        let mask = self.slots.len() - 1;
        let mut i = h as usize & mask;
        loop {
            let s = self.slots[i];
            if s.head == NONE {
                return Err(i);
            }
            if s.hash == h && rules.get(s.head as usize).is_some_and(|r| r.key == *key) {
                return Ok(i);
            }
            i = (i + 1) & mask;
        }
    }

    fn grow(&mut self) {
        let n = self.slots.len() * 2;
        let old = std::mem::replace(&mut self.slots, vec![EMPTY; n]);
        let mask = self.slots.len() - 1;
        for s in old.into_iter().filter(|s| s.head != NONE) {
            let mut i = s.hash as usize & mask;
            while self.slots[i].head != NONE {
                i = (i + 1) & mask;
            }
            self.slots[i] = s;
        }
    }

    pub(crate) fn insert(&mut self, id: u32, rules: &mut [Rule]) {
        if (self.used + 1) * 2 > self.slots.len() {
            self.grow();
        }
        let r = rules[id as usize];
        let h = hash_words(&r.key, 0);
        match self.find(&r.key, h, rules) {
            Err(i) => {
                self.slots[i] = Slot { hash: h, head: id };
                rules[id as usize].next = NONE;
                self.used += 1;
            }
            Ok(i) => {
                let rank = |x: u32| (rules[x as usize].prio, rules[x as usize].seq);
                let (mut prev, mut cur) = (NONE, self.slots[i].head);
                while cur != NONE && rank(cur) > (r.prio, r.seq) {
                    prev = cur;
                    cur = rules[cur as usize].next;
                }
                rules[id as usize].next = cur;
                if prev == NONE {
                    self.slots[i].head = id;
                } else {
                    rules[prev as usize].next = id;
                }
            }
        }
        self.ranks.insert((r.prio, r.seq));
        self.bound = self.ranks.last().copied().unwrap_or((0, 0));
    }

    pub(crate) fn remove(&mut self, id: u32, rules: &mut [Rule]) {
        let r = rules[id as usize];
        let h = hash_words(&r.key, 0);
        if let Ok(i) = self.find(&r.key, h, rules) {
            if self.slots[i].head == id {
                if r.next == NONE {
                    self.delete_slot(i);
                } else {
                    self.slots[i].head = r.next;
                }
            } else {
                let mut cur = self.slots[i].head;
                while cur != NONE && rules[cur as usize].next != id {
                    cur = rules[cur as usize].next;
                }
                if cur != NONE {
                    rules[cur as usize].next = r.next;
                }
            }
        }
        self.ranks.remove(&(r.prio, r.seq));
        self.bound = self.ranks.last().copied().unwrap_or((0, 0));
        if self.ranks.is_empty() {
            self.slots = vec![EMPTY; MIN_SLOTS];
            self.used = 0;
        }
    }

    /// Linear-probing deletion with backward shift (no tombstones).
    fn delete_slot(&mut self, mut i: usize) {
        let mask = self.slots.len() - 1;
        self.used -= 1;
        self.slots[i] = EMPTY;
        let mut j = i;
        loop {
            j = (j + 1) & mask;
            let s = self.slots[j];
            if s.head == NONE {
                return;
            }
            let home = s.hash as usize & mask;
            // The entry at j may stay if its home lies cyclically in (i, j].
            let stays = if i <= j {
                i < home && home <= j
            } else {
                i < home || home <= j
            };
            if !stays {
                self.slots[i] = s;
                self.slots[j] = EMPTY;
                i = j;
            }
        }
    }
}
