//! DIR-24-8 longest-prefix match for IPv4: prefix -> a 24-bit value, looked up in one or two
//! array reads whatever the number of prefixes.
//!
//! Contract:
//! - `tbl24` has one entry per /24 (2^24 u32 = 64 MiB of address space). It is allocated zeroed
//!   once (`alloc_zeroed`, so the kernel maps pages lazily): a table whose prefixes cover little
//!   address space stays small in RSS, and `Clone` copies only the 4 KiB pages ever written.
//! - An entry is `EXT | group` (the /24 holds prefixes longer than /24: read `tbl8[group * 256 +
//!   low octet]`) or `depth << 24 | value`; 0 means "no prefix of length 1..=32", and the lookup
//!   then answers the default route (length 0), which lives outside the arrays.
//! - Values are `1..=MAX_VALUE`; the caller maps them to next hops.
//! - Control-plane operations keep a side table (one `BTreeMap` per prefix length). Insert and
//!   remove rewrite only the entries inside the prefix's range, using the depth stored in each
//!   entry: insert overwrites entries of depth <= its length; remove replaces entries of exactly
//!   its length with the longest shorter prefix covering it. A tbl8 group whose last prefix longer
//!   than /24 goes away is folded back into its tbl24 entry and recycled.
//! - `lookup` takes `&self`, allocates nothing, hashes nothing.

use std::collections::BTreeMap;

/// First-level entries: one per /24.
const TBL24_LEN: usize = 1 << 24;
/// Marks a tbl24 entry that points to a tbl8 group.
const EXT: u32 = 1 << 31;
const DEPTH_SHIFT: u32 = 24;
const VALUE_MASK: u32 = (1 << 24) - 1;
/// tbl24 entries per 4 KiB page: the unit `Clone` copies.
const PAGE_ENTRIES: usize = 1024;
const PAGES: usize = TBL24_LEN / PAGE_ENTRIES;

/// The largest value a prefix can carry (values are 24 bits, 0 is "none").
pub const MAX_VALUE: u32 = VALUE_MASK;

/// Network mask of a prefix length (0..=32).
#[inline]
pub fn mask(len: u8) -> u32 {
    if len == 0 { 0 } else { u32::MAX << (32 - len) }
}

#[inline]
fn entry(len: u8, value: u32) -> u32 {
    (len as u32) << DEPTH_SHIFT | value
}

#[inline]
fn depth(e: u32) -> u8 {
    (e >> DEPTH_SHIFT) as u8
}

/// A DIR-24-8 table mapping IPv4 prefixes to values.
pub struct Lpm {
    tbl24: Box<[u32; TBL24_LEN]>,
    /// Groups of 256 entries for /24s holding longer prefixes.
    tbl8: Vec<u32>,
    free_groups: Vec<u32>,
    /// Bit per tbl24 page ever written (what `Clone` copies).
    touched: Box<[u64; PAGES / 64]>,
    /// Value of the default route (0: none).
    default: u32,
    /// `rules[len]`: network address -> value.
    rules: [BTreeMap<u32, u32>; 33],
    len: usize,
}

fn zeroed_tbl24() -> Box<[u32; TBL24_LEN]> {
    // `vec![0; n]` allocates with `alloc_zeroed` (calloc, then lazily-mapped zero pages).
    vec![0u32; TBL24_LEN]
        .into_boxed_slice()
        .try_into()
        .expect("length is TBL24_LEN")
}

impl Default for Lpm {
    fn default() -> Lpm {
        Lpm::new()
    }
}

impl Clone for Lpm {
    /// Copies the written pages of tbl24 only (a sparse table clones in microseconds).
    fn clone(&self) -> Lpm {
        let mut tbl24 = zeroed_tbl24();
        for (w, &bits) in self.touched.iter().enumerate() {
            let mut bits = bits;
            while bits != 0 {
                let p = w * 64 + bits.trailing_zeros() as usize;
                bits &= bits - 1;
                let r = p * PAGE_ENTRIES..(p + 1) * PAGE_ENTRIES;
                tbl24[r.clone()].copy_from_slice(&self.tbl24[r]);
            }
        }
        Lpm {
            tbl24,
            tbl8: self.tbl8.clone(),
            free_groups: self.free_groups.clone(),
            touched: self.touched.clone(),
            default: self.default,
            rules: self.rules.clone(),
            len: self.len,
        }
    }
}

impl Lpm {
    /// An empty table (reserves 64 MiB of address space, maps none of it).
    pub fn new() -> Lpm {
        Lpm {
            tbl24: zeroed_tbl24(),
            tbl8: Vec::new(),
            free_groups: Vec::new(),
            touched: Box::new([0; PAGES / 64]),
            default: 0,
            rules: std::array::from_fn(|_| BTreeMap::new()),
            len: 0,
        }
    }

    /// Prefixes installed.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when no prefix is installed.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The value of the longest prefix containing `addr`, or 0 when none does.
    #[inline]
    pub fn lookup(&self, addr: u32) -> u32 {
        let mut e = self.tbl24[(addr >> 8) as usize];
        if e & EXT != 0 {
            e = self.tbl8[((e & VALUE_MASK) << 8 | (addr & 0xff)) as usize];
        }
        let v = e & VALUE_MASK;
        if v == 0 { self.default } else { v }
    }

    /// The value of exactly `prefix/len` (host bits ignored).
    pub fn get(&self, prefix: u32, len: u8) -> Option<u32> {
        self.rules[len as usize].get(&(prefix & mask(len))).copied()
    }

    /// Install `prefix/len -> value` (host bits ignored), returning the value it replaces.
    /// `len <= 32` and `1 <= value <= MAX_VALUE`, or this panics.
    pub fn insert(&mut self, prefix: u32, len: u8, value: u32) -> Option<u32> {
        assert!(len <= 32, "prefix length {len} > 32");
        assert!(
            (1..=MAX_VALUE).contains(&value),
            "value {value} out of range"
        );
        let prefix = prefix & mask(len);
        let old = self.rules[len as usize].insert(prefix, value);
        if old.is_none() {
            self.len += 1;
        }
        if len == 0 {
            self.default = value;
        } else if len <= 24 {
            self.write24(prefix, len, entry(len, value), |d| d <= len);
        } else {
            let g = self.group_for(prefix);
            self.write8(g, prefix, len, entry(len, value), |d| d <= len);
        }
        old
    }

    /// Remove `prefix/len` (host bits ignored), returning its value. Addresses it covered fall
    /// back to the longest shorter prefix that covers them.
    pub fn remove(&mut self, prefix: u32, len: u8) -> Option<u32> {
        if len > 32 {
            return None;
        }
        let prefix = prefix & mask(len);
        let old = self.rules[len as usize].remove(&prefix)?;
        self.len -= 1;
        if len == 0 {
            self.default = 0;
            return Some(old);
        }
        let repl = self.covering(prefix, len);
        if len <= 24 {
            self.write24(prefix, len, repl, |d| d == len);
        } else {
            let i = (prefix >> 8) as usize;
            let g = self.tbl24[i] & VALUE_MASK;
            debug_assert!(self.tbl24[i] & EXT != 0, "a /{len} lives in a group");
            self.write8(g, prefix, len, repl, |d| d == len);
            self.fold_group(i, g);
        }
        Some(old)
    }

    /// The entry of the longest prefix shorter than `len` (and longer than 0) covering `prefix`.
    fn covering(&self, prefix: u32, len: u8) -> u32 {
        (1..len)
            .rev()
            .find_map(|l| {
                self.rules[l as usize]
                    .get(&(prefix & mask(l)))
                    .map(|&v| entry(l, v))
            })
            .unwrap_or(0)
    }

    /// Set `new` on every entry of `prefix/len` (len 1..=24) whose depth passes `pred`,
    /// descending into groups.
    fn write24(&mut self, prefix: u32, len: u8, new: u32, pred: impl Fn(u8) -> bool) {
        let start = (prefix >> 8) as usize;
        let count = 1usize << (24 - len);
        self.touch(start, count);
        for i in start..start + count {
            let e = self.tbl24[i];
            if e & EXT == 0 {
                if pred(depth(e)) {
                    self.tbl24[i] = new;
                }
            } else {
                let g = ((e & VALUE_MASK) as usize) << 8;
                for x in &mut self.tbl8[g..g + 256] {
                    if pred(depth(*x)) {
                        *x = new;
                    }
                }
            }
        }
    }

    /// Set `new` on every entry of `prefix/len` (len 25..=32) in group `g` whose depth passes
    /// `pred`.
    fn write8(&mut self, g: u32, prefix: u32, len: u8, new: u32, pred: impl Fn(u8) -> bool) {
        let start = ((g as usize) << 8) + (prefix & 0xff) as usize;
        let count = 1usize << (32 - len);
        for x in &mut self.tbl8[start..start + count] {
            if pred(depth(*x)) {
                *x = new;
            }
        }
    }

    /// The group under `prefix`'s /24, made (filled with the /24's entry) if needed.
    fn group_for(&mut self, prefix: u32) -> u32 {
        let i = (prefix >> 8) as usize;
        let e = self.tbl24[i];
        if e & EXT != 0 {
            return e & VALUE_MASK;
        }
        let g = match self.free_groups.pop() {
            Some(g) => {
                let s = (g as usize) << 8;
                self.tbl8[s..s + 256].fill(e);
                g
            }
            None => {
                let g = (self.tbl8.len() >> 8) as u32;
                assert!(g <= VALUE_MASK, "tbl8 groups exhausted");
                self.tbl8.resize(self.tbl8.len() + 256, e);
                g
            }
        };
        self.touch(i, 1);
        self.tbl24[i] = EXT | g;
        g
    }

    /// Fold group `g` back into tbl24 entry `i` when it no longer holds a prefix longer than /24.
    fn fold_group(&mut self, i: usize, g: u32) {
        let s = (g as usize) << 8;
        let group = &self.tbl8[s..s + 256];
        if group.iter().all(|&e| depth(e) <= 24) {
            // Prefixes up to /24 cover the whole /24: every entry is the same.
            self.tbl24[i] = group[0];
            self.free_groups.push(g);
        }
    }

    fn touch(&mut self, start: usize, count: usize) {
        for p in start / PAGE_ENTRIES..=(start + count - 1) / PAGE_ENTRIES {
            self.touched[p / 64] |= 1 << (p % 64);
        }
    }

    /// Every prefix as `(network, len, value)`, longest first, then by address.
    pub fn iter(&self) -> impl Iterator<Item = (u32, u8, u32)> + '_ {
        self.rules
            .iter()
            .enumerate()
            .rev()
            .flat_map(|(l, m)| m.iter().map(move |(&p, &v)| (p, l as u8, v)))
    }

    /// Bytes held: written tbl24 pages, tbl8 groups and an estimate of the side table.
    pub fn memory(&self) -> usize {
        let pages: u32 = self.touched.iter().map(|w| w.count_ones()).sum();
        pages as usize * PAGE_ENTRIES * 4
            + self.tbl8.capacity() * 4
            // A B-tree node holds up to 11 (u32, u32) pairs; nodes are about 2/3 full.
            + self.len * 16
    }

    /// tbl8 groups in use (for tests and stats).
    pub fn groups(&self) -> usize {
        (self.tbl8.len() >> 8) - self.free_groups.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(a: u8, b: u8, c: u8, d: u8) -> u32 {
        u32::from_be_bytes([a, b, c, d])
    }

    #[test]
    fn longest_match_wins_and_remove_restores() {
        let mut t = Lpm::new();
        t.insert(ip(10, 0, 0, 0), 8, 8);
        t.insert(ip(10, 1, 0, 0), 16, 16);
        t.insert(ip(10, 1, 2, 0), 24, 24);
        t.insert(ip(10, 1, 2, 128), 25, 25);
        t.insert(ip(10, 1, 2, 130), 32, 32);
        assert_eq!(t.lookup(ip(10, 1, 2, 130)), 32);
        assert_eq!(t.lookup(ip(10, 1, 2, 131)), 25);
        assert_eq!(t.lookup(ip(10, 1, 2, 1)), 24);
        assert_eq!(t.lookup(ip(10, 1, 3, 1)), 16);
        assert_eq!(t.lookup(ip(10, 2, 3, 1)), 8);
        assert_eq!(t.lookup(ip(11, 0, 0, 0)), 0);
        assert_eq!(t.groups(), 1);
        assert_eq!(t.remove(ip(10, 1, 2, 128), 25), Some(25));
        assert_eq!(t.lookup(ip(10, 1, 2, 131)), 24);
        assert_eq!(t.lookup(ip(10, 1, 2, 130)), 32);
        assert_eq!(t.remove(ip(10, 1, 2, 130), 32), Some(32));
        assert_eq!(t.groups(), 0, "group folded back");
        assert_eq!(t.lookup(ip(10, 1, 2, 130)), 24);
        assert_eq!(t.remove(ip(10, 1, 0, 0), 16), Some(16));
        assert_eq!(t.lookup(ip(10, 1, 2, 1)), 24, "longer prefix untouched");
        assert_eq!(t.lookup(ip(10, 1, 3, 1)), 8);
        assert_eq!(t.remove(ip(10, 1, 0, 0), 16), None);
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn shorter_prefix_inserted_after_longer_ones_reaches_into_groups() {
        let mut t = Lpm::new();
        t.insert(ip(192, 168, 1, 64), 26, 26);
        t.insert(ip(192, 168, 0, 0), 16, 16);
        assert_eq!(t.lookup(ip(192, 168, 1, 65)), 26);
        assert_eq!(t.lookup(ip(192, 168, 1, 1)), 16);
        t.insert(ip(0, 0, 0, 0), 0, 1);
        assert_eq!(t.lookup(ip(8, 8, 8, 8)), 1);
        assert_eq!(t.remove(ip(192, 168, 0, 0), 16), Some(16));
        assert_eq!(t.lookup(ip(192, 168, 1, 1)), 1, "default route again");
        assert_eq!(t.lookup(ip(192, 168, 1, 127)), 26);
        assert_eq!(t.insert(ip(192, 168, 1, 64), 26, 7), Some(26), "replace");
        assert_eq!(t.lookup(ip(192, 168, 1, 127)), 7);
    }

    #[test]
    fn clone_copies_only_written_pages_but_answers_the_same() {
        let mut t = Lpm::new();
        t.insert(ip(10, 0, 0, 0), 24, 3);
        t.insert(ip(172, 16, 0, 0), 12, 4);
        t.insert(ip(255, 255, 255, 255), 32, 5);
        let c = t.clone();
        for a in [
            ip(10, 0, 0, 9),
            ip(172, 31, 255, 1),
            ip(255, 255, 255, 255),
            ip(1, 1, 1, 1),
        ] {
            assert_eq!(c.lookup(a), t.lookup(a));
        }
        // /24 -> 1 page, /12 -> 4096 /24s = 4 pages, /32 -> 1 page (+1 group).
        assert_eq!(t.memory(), 6 * 4096 + 256 * 4 + 3 * 16);
    }
}
