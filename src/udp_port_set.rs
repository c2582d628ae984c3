//! A small set of UDP ports (the VXLAN tunnels' destination ports), asked on the fast path
//! whether it holds a datagram's port: by the decapsulation shortcut and its full check, the
//! nested-VXLAN check and output's USO merging.
//!
//! Contract: `contains(p)` is true exactly when `p` was among the ports `new` was given. One
//! port (the common case, 4789) is one compare; more are an inlined loop over the sorted,
//! distinct ports (`<[u16]>::contains` is an out-of-line call, ~22 instructions for a list of
//! one port, measured with callgrind, where this inlines to a few).

/// The set; see the module docs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UdpPortSet(Vec<u16>);

impl UdpPortSet {
    /// The set of `ports` (duplicates kept once).
    pub fn new(ports: impl IntoIterator<Item = u16>) -> UdpPortSet {
        let mut v: Vec<u16> = ports.into_iter().collect();
        v.sort_unstable();
        v.dedup();
        UdpPortSet(v)
    }

    /// Whether `port` is in the set.
    #[inline(always)]
    pub fn contains(&self, port: u16) -> bool {
        match self.0.as_slice() {
            [p] => *p == port,
            // A loop, not `contains`: see the module docs.
            #[allow(clippy::manual_contains)]
            ports => ports.iter().any(|&p| p == port),
        }
    }

    /// No port at all (no tunnel).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The ports, ascending.
    pub fn as_slice(&self) -> &[u16] {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_exactly_the_ports_it_was_given() {
        for given in [
            vec![],
            vec![4789],
            vec![8472, 4789, 4789],
            vec![1, 65535, 4789, 2],
        ] {
            let s = UdpPortSet::new(given.iter().copied());
            for p in [0, 1, 2, 4789, 4790, 8472, 65535] {
                assert_eq!(s.contains(p), given.contains(&p), "{given:?} {p}");
            }
            assert_eq!(s.is_empty(), given.is_empty());
            assert!(s.as_slice().is_sorted());
        }
        assert_eq!(UdpPortSet::new([4789, 4789]).as_slice(), &[4789]);
    }
}
