//! A worker's exact-match cache (OVS's EMC) in front of the classifier.
//!
//! Contract:
//! - Direct-mapped: `entries` (a power of two) slots of one cache line each, holding the full
//!   packed key, its hash, the table, the classifier generation it was filled at, and the
//!   result (a flow or "no flow").
//! - A slot answers only when hash, table, key and generation all match; any change to the
//!   classifier bumps its generation and so invalidates the whole cache at once, without a
//!   walk. A miss asks the classifier and overwrites the slot.
//! - Owned by one worker (`&mut self`), no locks, no allocation after `new`.
//! - Answers as if every ext field (registers, metadata, IPv6) were 0: callers ask the
//!   classifier directly when `Classifier::cacheable` says no.
//! - Every packet is inserted on a miss (OVS inserts with a probability to resist thrashing
//!   under many flows; not done here yet).

use super::classifier::{FlowId, NONE};
use super::match_::{PacketKey, Words};
use super::{Classifier, Single};

/// The slot hash: the key's words folded into two (rotations keep fields that trade places
/// apart) and one 64x64->128 multiply, folded (wyhash's "mum"). Cheaper than the subtables'
/// hash (four multiplies) and weaker, which is enough here: a hit compares the whole key, so a
/// collision costs only a miss, and any tenant with many flows can thrash a direct-mapped
/// cache anyway.
#[inline(always)]
fn slot_hash(w: &Words, table: u8) -> u64 {
    let a = w[0] ^ w[2].rotate_left(29) ^ w[4].rotate_left(47) ^ 0xa076_1d64_78bd_642f;
    let b = w[1] ^ w[3].rotate_left(17) ^ u64::from(table) << 56 ^ 0xe703_7ed1_a0b4_28db;
    let r = u128::from(a) * u128::from(b);
    (r as u64) ^ ((r >> 64) as u64)
}

#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Slot {
    words: Words,
    hash: u64,
    /// 0: empty (classifier generations start at 1).
    generation: u64,
    flow: u32,
    table: u8,
    /// The flow's [`Single`] decision, packed: a flow's actions change only with the
    /// classifier's generation, so it holds as long as the slot does.
    single: u8,
    single_port: u16,
}

const _: () = assert!(std::mem::size_of::<Slot>() == 64);

const EMPTY: Slot = Slot {
    words: [0; 5],
    hash: 0,
    generation: 0,
    flow: NONE,
    table: 0,
    single: 0,
    single_port: 0,
};

/// A per-worker exact-match cache.
pub struct Emc {
    slots: Box<[Slot]>,
    mask: usize,
    /// Lookups answered from the cache.
    pub hits: u64,
    /// Lookups that went to the classifier.
    pub misses: u64,
}

impl Emc {
    /// A cache of `entries` slots (rounded up to a power of two, at least 1).
    pub fn new(entries: usize) -> Emc {
        let n = entries.max(1).next_power_of_two();
        Emc {
            slots: vec![EMPTY; n].into_boxed_slice(),
            mask: n - 1,
            hits: 0,
            misses: 0,
        }
    }

    /// Slots in the cache.
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// The flow for `key` in `table`: from the cache if it holds a current answer, else from
    /// `cls` (and then cached).
    #[inline]
    pub fn lookup(&mut self, cls: &Classifier, table: u8, key: &PacketKey) -> Option<FlowId> {
        self.lookup_words(cls, table, key.words())
    }

    /// `lookup` of a packed key.
    #[inline(always)]
    pub(crate) fn lookup_words(
        &mut self,
        cls: &Classifier,
        table: u8,
        words: Words,
    ) -> Option<FlowId> {
        self.lookup_single(cls, table, words).0
    }

    /// `lookup_words`, with the flow's [`Single`] decision (kept in the slot, so a hit does
    /// not read the flow's actions).
    #[inline(always)]
    pub(crate) fn lookup_single(
        &mut self,
        cls: &Classifier,
        table: u8,
        words: Words,
    ) -> (Option<FlowId>, Single) {
        let h = slot_hash(&words, table);
        let gen_now = cls.generation();
        let slot = &mut self.slots[h as usize & self.mask];
        let (flow, single) = if slot.hash == h
            && slot.generation == gen_now
            && slot.table == table
            // Word by word: `==` on the array compiles to a memcmp call.
            && slot.words.iter().zip(&words).fold(0, |acc, (a, b)| acc | (a ^ b)) == 0
        {
            self.hits += 1;
            (slot.flow, Single::unpack((slot.single, slot.single_port)))
        } else {
            self.misses += 1;
            let flow = cls.lookup_words(table, &words, &super::ext::ExtKey::ZERO);
            let single = cls.single((flow != NONE).then_some(FlowId(flow)));
            let (kind, port) = single.pack();
            *slot = Slot {
                words,
                hash: h,
                generation: gen_now,
                flow,
                table,
                single: kind,
                single_port: port,
            };
            (flow, single)
        };
        ((flow != NONE).then_some(FlowId(flow)), single)
    }

    /// Forget everything.
    pub fn clear(&mut self) {
        self.slots.fill(EMPTY);
    }
}
