//! NAT port allocation for one (NAT address, protocol) pool.
//!
//! Contract:
//! - Ports come from an inclusive range the caller gives (masquerade: 1024..=65535, Linux's
//!   MASQUERADE range, see `nat::SOURCE_NAT_PORTS`); ICMP pools hand out echo identifiers
//!   the same way.
//! - A port is handed out only if the caller's `taken` test says the resulting reply tuple is
//!   not used by a live connection. So one port serves many remotes (Linux's behaviour:
//!   uniqueness is per reply tuple, not per port), and the table stays the single source of
//!   truth.
//! - The connection's own source port (ICMP: echo identifier) is taken when it lies in this
//!   pool's range and share and is free (Linux keeps it the same way); otherwise the search
//!   starts at a point derived from a hash of the connection's key and probes
//!   linearly, at most `max_probes` ports (default 256; Linux tries 128 then halves). When every
//!   probed port is taken the pool is exhausted for that remote: `alloc` returns None.
//! - Every handed-out port is counted until `release`d; the table releases a connection's port
//!   when it removes the connection, so `refs` always equals the live connections using a port.
//! - No allocation after construction.

use std::ops::RangeInclusive;

use super::CtError;
use super::key::{FlowKey, hash};

/// Linux's default `net.ipv4.ip_local_port_range` (a pool's range when a test or bench names
/// none; masquerade uses `nat::SOURCE_NAT_PORTS`).
pub const DEFAULT_PORT_RANGE: RangeInclusive<u16> = 32768..=60999;
/// Default probe bound of one `alloc`.
pub const DEFAULT_MAX_PROBES: u32 = 256;

/// The ports of one NAT address for one protocol.
#[derive(Debug)]
pub struct PortAllocator {
    addr: [u8; 4],
    proto: u8,
    lo: u16,
    size: u32,
    max_probes: u32,
    /// Live connections per port (index: port - lo).
    refs: Box<[u32]>,
    /// Ports with refs > 0.
    in_use: usize,
    /// Hand out only ports `p` with `p % parts == part` (several workers: see
    /// [`PortAllocator::partitioned`]); (0, 1): every port.
    part: u16,
    parts: u16,
}

impl PortAllocator {
    /// A pool of `range` on `addr` for `proto`. Fails on an empty range.
    pub fn new(
        addr: [u8; 4],
        proto: u8,
        range: RangeInclusive<u16>,
    ) -> Result<PortAllocator, CtError> {
        let (lo, hi) = (*range.start(), *range.end());
        if lo > hi {
            return Err(CtError::EmptyPortRange { lo, hi });
        }
        let size = hi as u32 - lo as u32 + 1;
        Ok(PortAllocator {
            addr,
            proto,
            lo,
            size,
            max_probes: DEFAULT_MAX_PROBES,
            refs: vec![0; size as usize].into_boxed_slice(),
            in_use: 0,
            part: 0,
            parts: 1,
        })
    }

    /// Hand out only the ports `p` of the range with `p % parts == part`: with several workers
    /// each owns one share of every pool, so a reply's destination port names the worker that
    /// holds its connection (VPP's NAT44-ED port partitioning; see `pipeline::steer`).
    pub fn partitioned(mut self, part: u16, parts: u16) -> PortAllocator {
        self.parts = parts.max(1);
        self.part = part % self.parts;
        self
    }

    /// Set the probe bound of one `alloc` (at least 1).
    pub fn with_max_probes(mut self, max_probes: u32) -> PortAllocator {
        self.max_probes = max_probes.max(1);
        self
    }

    /// A placeholder without ports (no allocation), used while a pool is borrowed out.
    pub(crate) fn placeholder() -> PortAllocator {
        PortAllocator {
            addr: [0; 4],
            proto: 0,
            lo: 1,
            size: 0,
            max_probes: 0,
            refs: Box::new([]),
            in_use: 0,
            part: 0,
            parts: 1,
        }
    }

    /// The NAT address.
    pub fn addr(&self) -> [u8; 4] {
        self.addr
    }

    /// The protocol.
    pub fn proto(&self) -> u8 {
        self.proto
    }

    /// The port range.
    pub fn range(&self) -> RangeInclusive<u16> {
        self.lo..=(self.lo as u32 + self.size.saturating_sub(1)) as u16
    }

    /// True if `port` is in the range.
    #[inline]
    pub fn contains(&self, port: u16) -> bool {
        (port.wrapping_sub(self.lo) as u32) < self.size
    }

    /// Live connections using `port` (0 outside the range).
    pub fn refs(&self, port: u16) -> u32 {
        if self.contains(port) {
            self.refs[(port - self.lo) as usize]
        } else {
            0
        }
    }

    /// Ports used by at least one live connection.
    pub fn in_use(&self) -> usize {
        self.in_use
    }

    /// A port for a new connection with key `hint` such that `taken(port)` is false, counted
    /// until `release`d. `taken` tells whether the reply tuple that port would give is in use.
    #[inline]
    pub fn alloc(&mut self, hint: &FlowKey, mut taken: impl FnMut(u16) -> bool) -> Option<u16> {
        // The ports of this share: first, first + parts, ... up to the range's end.
        let parts = self.parts as u32;
        let lo = self.lo as u32;
        let first = lo + (self.part as u32 + parts - lo % parts) % parts;
        let end = lo + self.size; // exclusive
        if first >= end {
            return None;
        }
        // The connection's own port (ICMP: its echo identifier) first, when it lies in the
        // range and this share and is free, as Linux's NAT keeps a source port whose
        // translated tuple is unique: a peer sees the port the container chose (with N
        // workers, for the 1/N of ports in this worker's share).
        let own = hint.sport as u32;
        if own >= first && own < end && (own - first).is_multiple_of(parts) && !taken(hint.sport) {
            self.acquire(hint.sport);
            return Some(hint.sport);
        }
        let count = (end - 1 - first) / parts + 1;
        let start = (hash(hint.pack(), 0x5EED) % count as u64) as u32;
        for i in 0..count.min(self.max_probes) {
            let port = (first + ((start + i) % count) * parts) as u16;
            if !taken(port) {
                self.acquire(port);
                return Some(port);
            }
        }
        None
    }

    /// Count one more connection on `port` (ignored outside the range).
    pub(crate) fn acquire(&mut self, port: u16) {
        if self.contains(port) {
            let r = &mut self.refs[(port - self.lo) as usize];
            if *r == 0 {
                self.in_use += 1;
            }
            *r += 1;
        }
    }

    /// A connection using `port` is gone. Ignored outside the range or when not counted.
    pub fn release(&mut self, port: u16) {
        if self.contains(port) {
            let r = &mut self.refs[(port - self.lo) as usize];
            debug_assert!(*r > 0, "release of unused port {port}");
            if *r == 1 {
                self.in_use -= 1;
            }
            *r = r.saturating_sub(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn a_partitioned_pool_hands_out_its_share_only() {
        for (part, parts) in [(0u16, 2u16), (1, 2), (2, 3)] {
            let mut p = PortAllocator::new([1, 2, 3, 4], 6, 1001..=1020)
                .unwrap()
                .partitioned(part, parts);
            let mut used = HashSet::new();
            for i in 0..40u16 {
                let k = FlowKey::new(6, [10, 0, 0, 1], 2000 + i, [8, 8, 8, 8], 80);
                if let Some(port) = p.alloc(&k, |port| used.contains(&port)) {
                    assert_eq!(port % parts, part, "{port}");
                    assert!(used.insert(port) && p.contains(port));
                }
            }
            let share = (1001..=1020u16).filter(|q| q % parts == part).count();
            assert_eq!(used.len(), share, "part {part} of {parts}");
        }
        // A share with no port in the range.
        let mut p = PortAllocator::new([1, 2, 3, 4], 6, 10..=10)
            .unwrap()
            .partitioned(1, 2);
        let k = FlowKey::new(6, [10, 0, 0, 1], 1, [8, 8, 8, 8], 80);
        assert_eq!(p.alloc(&k, |_| false), None);
    }

    #[test]
    fn alloc_respects_taken_and_exhausts() {
        let mut p = PortAllocator::new([1, 2, 3, 4], 6, 1000..=1015).unwrap();
        let mut used = HashSet::new();
        for i in 0..100u16 {
            let k = FlowKey::new(6, [10, 0, 0, 1], 2000 + i, [8, 8, 8, 8], 80);
            match p.alloc(&k, |port| used.contains(&port)) {
                Some(port) => assert!(used.insert(port) && p.contains(port)),
                None => assert_eq!(used.len(), 16),
            }
        }
        assert_eq!(used.len(), 16);
        assert_eq!(p.in_use(), 16);
        p.release(1003);
        assert_eq!(p.in_use(), 15);
        assert_eq!(p.refs(1003), 0);
        let (lo, hi) = (10, 9);
        assert_eq!(
            PortAllocator::new([0; 4], 6, lo..=hi).unwrap_err(),
            CtError::EmptyPortRange { lo: 10, hi: 9 }
        );
        assert_eq!(
            PortAllocator::new([0; 4], 6, 0..=65535).unwrap().range(),
            0..=65535
        );
    }

    /// A connection keeps its own source port when it is free and this pool (and share) may
    /// hand it out, as Linux's NAT does; otherwise the search picks another.
    #[test]
    fn the_own_port_is_kept_when_free() {
        let mut p = PortAllocator::new([10, 0, 0, 1], 6, 32768..=60999).unwrap();
        let mut used = HashSet::new();
        let k = FlowKey::new(6, [10, 0, 0, 2], 40000, [8, 8, 8, 8], 80);
        assert_eq!(p.alloc(&k, |port| used.contains(&port)), Some(40000));
        used.insert(40000);
        // Another container's flow with the same port to the same peer: another port.
        let k2 = FlowKey::new(6, [10, 0, 0, 3], 40000, [8, 8, 8, 8], 80);
        let other = p.alloc(&k2, |port| used.contains(&port)).unwrap();
        assert_ne!(other, 40000);
        // Outside the range (a privileged port): a port of the range.
        let k3 = FlowKey::new(17, [10, 0, 0, 2], 123, [8, 8, 8, 8], 123);
        let got = p.alloc(&k3, |_| false).unwrap();
        assert!(p.contains(got));
        // Another worker's share: not kept (its replies would reach the other worker).
        let mut half = PortAllocator::new([10, 0, 0, 1], 6, 32768..=60999)
            .unwrap()
            .partitioned(1, 2);
        let even = FlowKey::new(6, [10, 0, 0, 2], 40000, [8, 8, 8, 8], 80);
        assert_eq!(half.alloc(&even, |_| false).unwrap() % 2, 1);
        let odd = FlowKey::new(6, [10, 0, 0, 2], 40001, [8, 8, 8, 8], 80);
        assert_eq!(half.alloc(&odd, |_| false), Some(40001));
    }
}
