//! Which connection a fragmented IPv4 datagram belongs to, for the fragments after its first
//! (VPP NAT44's "shallow virtual reassembly": nothing is reassembled or buffered).
//!
//! Contract:
//! - A datagram is named by what every one of its fragments carries: source, destination,
//!   protocol and IP identification ([`DatagramId`]). Its first fragment (offset 0) carries
//!   the transport header, so its connection is known; the caller
//!   [`remember`](DatagramTable::remember)s a value for it (the connection's tuple as the
//!   first fragment carried it, or the worker that owns it) and
//!   [`recall`](DatagramTable::recall)s it for each later fragment.
//! - A later fragment that arrives before its first, or whose first was never seen, recalls
//!   nothing: the caller decides (NAT drops it when a rule would translate it).
//! - Fixed size: [`SLOTS`] entries, direct-mapped by a hash of the id, allocated on the first
//!   `remember`; a datagram that hashes to a taken slot replaces its entry (the older
//!   datagram's later fragments then recall nothing). No clock: an entry lives until it is
//!   replaced, and a datagram that reuses an id replaces it with its own first fragment.
//! - Lookups and inserts do not allocate (after the first) and never fail.

/// How many datagrams a table remembers at once (a power of two).
pub const SLOTS: usize = 8192;

/// What every fragment of one IPv4 datagram carries (RFC 791's reassembly key).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DatagramId {
    /// Source address.
    pub src: [u8; 4],
    /// Destination address.
    pub dst: [u8; 4],
    /// Protocol.
    pub proto: u8,
    /// Identification.
    pub id: u16,
}

impl DatagramId {
    fn slot(&self) -> usize {
        let x = (u64::from(u32::from_be_bytes(self.src)) << 32
            | u64::from(u32::from_be_bytes(self.dst)))
            ^ (u64::from(self.id) << 8 | u64::from(self.proto)).wrapping_mul(0xC2B2_AE3D_27D4_EB4F);
        (x.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) as usize & (SLOTS - 1)
    }
}

/// Counters of a [`DatagramTable`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FragmentStats {
    /// First fragments remembered.
    pub remembered: u64,
    /// Entries of another datagram replaced by a new one.
    pub replaced: u64,
    /// Later fragments whose datagram was found.
    pub recalled: u64,
    /// Later fragments whose datagram was not (first fragment late, lost or replaced).
    pub unknown: u64,
}

/// See the module documentation.
#[derive(Debug, Clone)]
pub struct DatagramTable<V> {
    slots: Vec<Option<(DatagramId, V)>>,
    stats: FragmentStats,
}

impl<V> Default for DatagramTable<V> {
    fn default() -> Self {
        DatagramTable {
            slots: Vec::new(),
            stats: FragmentStats::default(),
        }
    }
}

impl<V: Copy> DatagramTable<V> {
    /// The first fragment of datagram `d` belongs to `v`.
    pub fn remember(&mut self, d: DatagramId, v: V) {
        if self.slots.is_empty() {
            self.slots = vec![None; SLOTS];
        }
        let slot = &mut self.slots[d.slot()];
        if slot.is_some_and(|(old, _)| old != d) {
            self.stats.replaced += 1;
        }
        *slot = Some((d, v));
        self.stats.remembered += 1;
    }

    /// What the first fragment of datagram `d` was remembered with, for a later fragment.
    pub fn recall(&mut self, d: &DatagramId) -> Option<V> {
        let v = self
            .slots
            .get(d.slot())
            .copied()
            .flatten()
            .filter(|(id, _)| id == d)
            .map(|(_, v)| v);
        match v {
            Some(_) => self.stats.recalled += 1,
            None => self.stats.unknown += 1,
        }
        v
    }

    /// Counters.
    pub fn stats(&self) -> FragmentStats {
        self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u16) -> DatagramId {
        DatagramId {
            src: [10, 0, 0, 2],
            dst: [192, 0, 2, 1],
            proto: 17,
            id: n,
        }
    }

    #[test]
    fn later_fragments_recall_their_first_and_nothing_else() {
        let mut t = DatagramTable::<u32>::default();
        assert_eq!(t.recall(&id(1)), None, "before its first fragment");
        t.remember(id(1), 7);
        t.remember(id(2), 8);
        assert_eq!(t.recall(&id(1)), Some(7));
        assert_eq!(t.recall(&id(1)), Some(7), "every later fragment");
        assert_eq!(t.recall(&id(2)), Some(8));
        // Same id, another protocol or address: another datagram.
        assert_eq!(t.recall(&DatagramId { proto: 6, ..id(1) }), None);
        assert_eq!(
            t.recall(&DatagramId {
                src: [10, 0, 0, 3],
                ..id(1)
            }),
            None
        );
        // A reused id takes the new first fragment's value.
        t.remember(id(1), 9);
        assert_eq!(t.recall(&id(1)), Some(9));
        let s = t.stats();
        assert_eq!((s.remembered, s.recalled, s.unknown), (3, 4, 3));
    }

    #[test]
    fn a_full_table_replaces_and_stays_bounded() {
        let mut t = DatagramTable::<u16>::default();
        for n in 0..u16::MAX {
            t.remember(id(n), n);
        }
        assert_eq!(t.slots.len(), SLOTS);
        // The most recent datagrams are mostly still known; every recalled value is right.
        let known = (u16::MAX - 1000..u16::MAX)
            .filter(|&n| t.recall(&id(n)) == Some(n))
            .count();
        assert!(known > 850, "{known} of the last 1,000");
        for n in 0..u16::MAX {
            assert!(t.recall(&id(n)).is_none_or(|v| v == n));
        }
        assert!(t.stats().replaced >= u64::from(u16::MAX) - SLOTS as u64);
    }
}
