//! The router's IPv4 table: connected routes (from bridges' gateway addresses) and static routes,
//! looked up by longest prefix match.
//!
//! Contract:
//! - `lookup` is one or two array reads in a DIR-24-8 table (`lpm`), then one read of the route:
//!   no allocation, no hashing, no lock, and the same cost with 1 or 1M prefixes.
//! - One route per prefix: `add` refuses duplicates and prefixes with host bits set, naming the
//!   prefix in the error; `del` of a prefix brings back the shorter prefixes it covered.
//! - The table is built by the control plane and handed to workers whole (RCU style: build or
//!   clone, modify, swap). `Clone` copies only the parts of the 64 MiB first level ever written,
//!   so small tables clone in microseconds; a table with routes covering most of the address space
//!   costs a 64 MiB copy (see `benches/route_lookup.rs` for measured figures).
//! - `iter` lists routes longest prefix first, then by address (`route-show` order).
//! - IO-free: no clock needed, nothing here touches the kernel.

mod lpm;

use std::fmt;
use std::net::Ipv4Addr;

pub use lpm::{Lpm, mask};

/// Bridges are u16 ids.
pub type BridgeId = u16;

/// Where a route sends packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RouteKind {
    /// The destination is on this bridge (the route of a bridge's gateway address).
    Connected {
        /// Egress bridge.
        bridge: BridgeId,
    },
    /// Static route: forward to `gateway`, resolved by ARP on `bridge`.
    Via {
        /// Next hop address.
        gateway: Ipv4Addr,
        /// Egress bridge on which the gateway is resolved.
        bridge: BridgeId,
    },
}

/// One route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Route {
    /// Network address (no host bits).
    pub prefix: Ipv4Addr,
    /// Prefix length, 0..=32.
    pub len: u8,
    /// What to do with matching packets.
    pub kind: RouteKind,
}

impl Route {
    /// Egress bridge.
    #[inline]
    pub fn bridge(&self) -> BridgeId {
        match self.kind {
            RouteKind::Connected { bridge } | RouteKind::Via { bridge, .. } => bridge,
        }
    }

    /// The address to resolve (ARP) on the egress bridge for a packet to `dst`: `dst` itself on
    /// a connected route, the gateway otherwise.
    #[inline]
    pub fn next_hop(&self, dst: Ipv4Addr) -> Ipv4Addr {
        match self.kind {
            RouteKind::Connected { .. } => dst,
            RouteKind::Via { gateway, .. } => gateway,
        }
    }

    /// True when `addr` is inside this route's prefix.
    pub fn contains(&self, addr: Ipv4Addr) -> bool {
        u32::from(addr) & mask(self.len) == u32::from(self.prefix)
    }
}

impl fmt::Display for Route {
    /// `10.9.0.0/24 connected bridge 1` or `0.0.0.0/0 via 198.18.0.254 bridge 2`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{} ", self.prefix, self.len)?;
        match self.kind {
            RouteKind::Connected { bridge } => write!(f, "connected bridge {bridge}"),
            RouteKind::Via { gateway, bridge } => write!(f, "via {gateway} bridge {bridge}"),
        }
    }
}

/// Why a change to the table was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// A route for this prefix exists already.
    #[error("route {prefix}/{len} already exists ({existing}); delete it first")]
    Duplicate {
        /// Network address.
        prefix: Ipv4Addr,
        /// Prefix length.
        len: u8,
        /// The route in the table.
        existing: Route,
    },
    /// Bits beyond the prefix length are set.
    #[error("{prefix}/{len} has host bits set; did you mean {network}/{len}?")]
    HostBits {
        /// The address given.
        prefix: Ipv4Addr,
        /// Prefix length.
        len: u8,
        /// The address with host bits cleared.
        network: Ipv4Addr,
    },
    /// Prefix length above 32.
    #[error("{prefix}/{len}: prefix length must be 0..=32")]
    BadLength {
        /// The address given.
        prefix: Ipv4Addr,
        /// The length given.
        len: u8,
    },
    /// No route for this prefix.
    #[error("no route {prefix}/{len}")]
    NotFound {
        /// Network address.
        prefix: Ipv4Addr,
        /// Prefix length.
        len: u8,
    },
    /// The table holds `MAX_ROUTES` routes.
    #[error("route table full ({MAX_ROUTES} routes); cannot add {prefix}/{len}")]
    Full {
        /// Network address.
        prefix: Ipv4Addr,
        /// Prefix length.
        len: u8,
    },
}

/// Most routes a table holds (the LPM's 24-bit values index the route slots).
pub const MAX_ROUTES: usize = lpm::MAX_VALUE as usize;

/// Parse `A.B.C.D/LEN` (or a bare `A.B.C.D`, meaning /32, as `ip route` does). Host bits are not
/// checked here (`RouteTable::add` refuses them with a hint).
pub fn parse_prefix(text: &str) -> Result<(Ipv4Addr, u8), String> {
    let bad =
        |why: &str| format!("bad prefix {text:?}: {why} (expected A.B.C.D/LEN, e.g. 10.0.0.0/24)");
    let (addr, len) = match text.trim().split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (text.trim(), None),
    };
    let addr: Ipv4Addr = addr.parse().map_err(|_| bad("not an IPv4 address"))?;
    let len = match len {
        None => 32,
        Some(l) => match l.parse::<u8>() {
            Ok(l) if l <= 32 => l,
            _ => return Err(bad("length must be 0..=32")),
        },
    };
    Ok((addr, len))
}

/// Check `prefix/len` is a valid network (length <= 32, no host bits).
pub fn check_prefix(prefix: Ipv4Addr, len: u8) -> Result<(), RouteError> {
    if len > 32 {
        return Err(RouteError::BadLength { prefix, len });
    }
    let network = Ipv4Addr::from(u32::from(prefix) & mask(len));
    if network != prefix {
        return Err(RouteError::HostBits {
            prefix,
            len,
            network,
        });
    }
    Ok(())
}

/// The routing table: routes in slots, indexed by a DIR-24-8 LPM (value = slot + 1).
#[derive(Clone, Default)]
pub struct RouteTable {
    lpm: Lpm,
    /// Route slots; a freed slot keeps a stale route until reused (the LPM never points to it).
    slots: Vec<Route>,
    free: Vec<u32>,
}

impl RouteTable {
    /// An empty table.
    pub fn new() -> RouteTable {
        RouteTable::default()
    }

    /// Build a table from routes (the control plane's rebuild path).
    pub fn from_routes(routes: impl IntoIterator<Item = Route>) -> Result<RouteTable, RouteError> {
        let mut t = RouteTable::new();
        for r in routes {
            t.add(r)?;
        }
        Ok(t)
    }

    /// Routes installed.
    pub fn len(&self) -> usize {
        self.lpm.len()
    }

    /// True when there is no route.
    pub fn is_empty(&self) -> bool {
        self.lpm.is_empty()
    }

    /// Add a route. Refuses host bits, lengths above 32 and a second route for the same prefix.
    pub fn add(&mut self, route: Route) -> Result<(), RouteError> {
        let (prefix, len) = (route.prefix, route.len);
        check_prefix(prefix, len)?;
        if let Some(existing) = self.get(prefix, len) {
            return Err(RouteError::Duplicate {
                prefix,
                len,
                existing: *existing,
            });
        }
        let slot = match self.free.pop() {
            Some(s) => {
                self.slots[s as usize] = route;
                s
            }
            None if self.slots.len() < MAX_ROUTES => {
                self.slots.push(route);
                (self.slots.len() - 1) as u32
            }
            None => return Err(RouteError::Full { prefix, len }),
        };
        self.lpm.insert(u32::from(prefix), len, slot + 1);
        Ok(())
    }

    /// Delete the route for exactly `prefix/len`, returning it.
    pub fn del(&mut self, prefix: Ipv4Addr, len: u8) -> Result<Route, RouteError> {
        check_prefix(prefix, len)?;
        let v = self
            .lpm
            .remove(u32::from(prefix), len)
            .ok_or(RouteError::NotFound { prefix, len })?;
        self.free.push(v - 1);
        Ok(self.slots[(v - 1) as usize])
    }

    /// Delete every route leaving through `bridge` (when the bridge or its gateway goes away);
    /// returns them.
    pub fn del_bridge(&mut self, bridge: BridgeId) -> Vec<Route> {
        let gone: Vec<Route> = self
            .iter()
            .filter(|r| r.bridge() == bridge)
            .copied()
            .collect();
        for r in &gone {
            // Cannot fail: the route was just listed.
            let _ = self.del(r.prefix, r.len);
        }
        gone
    }

    /// The route for exactly `prefix/len`, if any.
    pub fn get(&self, prefix: Ipv4Addr, len: u8) -> Option<&Route> {
        if len > 32 {
            return None;
        }
        let v = self.lpm.get(u32::from(prefix), len)?;
        Some(&self.slots[(v - 1) as usize])
    }

    /// The longest-prefix route for `dst` (bytes as in the IPv4 header). The hot path.
    #[inline]
    pub fn lookup(&self, dst: [u8; 4]) -> Option<&Route> {
        self.lookup_u32(u32::from_be_bytes(dst))
    }

    /// `lookup` for an address as a host-order u32.
    #[inline]
    pub fn lookup_u32(&self, dst: u32) -> Option<&Route> {
        match self.lpm.lookup(dst) {
            0 => None,
            v => self.slots.get((v - 1) as usize),
        }
    }

    /// Routes, longest prefix first, then by address.
    pub fn iter(&self) -> impl Iterator<Item = &Route> + '_ {
        self.lpm
            .iter()
            .map(|(_, _, v)| &self.slots[(v - 1) as usize])
    }

    /// Approximate bytes held (written first-level pages, groups, side table, route slots).
    pub fn memory(&self) -> usize {
        self.lpm.memory() + self.slots.capacity() * std::mem::size_of::<Route>()
    }

    /// The LPM index (values are route slot + 1), for benches and stats.
    pub fn lpm(&self) -> &Lpm {
        &self.lpm
    }

    /// Second-level (tbl8) groups in use: one per /24 holding a prefix longer than /24.
    pub fn groups(&self) -> usize {
        self.lpm.groups()
    }
}

/// Reverse-path filtering of packets a gateway routes (Linux's `rp_filter`), per bridge.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RpFilter {
    /// The route back to the source must leave by the bridge the packet came from (RFC 3704
    /// strict mode; the default).
    #[default]
    Strict,
    /// Some route back to the source must exist (RFC 3704 loose mode).
    Loose,
    /// No check.
    Off,
}

impl RpFilter {
    /// The option's name (`strict`, `loose`, `off`).
    pub fn name(self) -> &'static str {
        match self {
            RpFilter::Strict => "strict",
            RpFilter::Loose => "loose",
            RpFilter::Off => "off",
        }
    }

    /// Parse `strict|loose|off` for the option `field`.
    pub fn parse(field: &str, v: &str) -> Result<RpFilter, String> {
        match v {
            "strict" => Ok(RpFilter::Strict),
            "loose" => Ok(RpFilter::Loose),
            "off" => Ok(RpFilter::Off),
            _ => Err(format!("{field}: '{v}' is not strict, loose or off")),
        }
    }
}

impl RouteTable {
    /// True when a packet from `src` that arrived on `bridge` passes reverse-path filtering
    /// `mode`: one more LPM lookup (strict: the route back leaves by `bridge`; loose: there is
    /// a route back).
    #[inline]
    pub fn rp_ok(&self, mode: RpFilter, bridge: BridgeId, src: [u8; 4]) -> bool {
        match mode {
            RpFilter::Off => true,
            RpFilter::Loose => self.lookup(src).is_some(),
            RpFilter::Strict => self.lookup(src).is_some_and(|r| r.bridge() == bridge),
        }
    }
}

impl fmt::Debug for RouteTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

#[cfg(test)]
mod tests;
