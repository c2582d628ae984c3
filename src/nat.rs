//! NAT rules (Docker's MASQUERADE and `-p` port mappings) and the connection table they use.
//!
//! Contract:
//! - `masquerade src=PFX out=BRIDGE`: connections from `PFX` leaving through `BRIDGE` get their
//!   source rewritten to the bridge's gateway address and a port from its pool.
//! - `snat src=PFX out=BRIDGE to=ADDR`: the same with a fixed address.
//! - `dnat in=BRIDGE proto=tcp|udp port=N to=ADDR:PORT`: connections to the gateway address of
//!   `BRIDGE`, port N, go to ADDR:PORT instead, whichever bridge they arrive on.
//! - Rules are validated when added: overlapping source rules for one egress bridge and two
//!   mappings of one (bridge, protocol, port) are refused with the reason.
//! - Tracked: connections that a rule translates, and connections that arrive untranslated but
//!   whose answers a source rule would match (an outside host reaching a container by address
//!   through a route to its subnet): those are tracked untranslated so their answers are replies,
//!   not new connections to masquerade. Other forwarding stays stateless.
//! - Fragments (VPP NAT44's shallow virtual reassembly, no buffering): a first fragment carries
//!   the ports and is tracked and translated as a whole packet is; its datagram is remembered
//!   ([`Nat::frags`]) so that the later fragments (same source, destination, protocol and
//!   identification) get the same connection's addresses. A later fragment whose first was
//!   not seen (reordered, lost, or its entry replaced) is dropped when a source rule would
//!   translate it, else routed as is.
//! - `dnat` with port 0 picks the host port: the next port of the DNAT port range (Docker's
//!   32768-60999 by default; `set-nat port_range=A-B`) after the last one picked, wrapping,
//!   that no other mapping of that protocol uses on the same gateway address. The rule keeps
//!   the concrete port (so `nat-show` and the database show it); a full range is an error
//!   naming the range.
//! - The first packet of a connection picks the rule; later packets (both directions) follow the
//!   connection table until it expires, even if rules change.

use std::net::Ipv4Addr;
use std::ops::RangeInclusive;

use serde::Serialize;

use crate::conntrack::{
    Conntrack, CtConfig, DatagramTable, FlowKey, PROTO_ICMP, PROTO_TCP, PROTO_UDP, PoolId,
    PortAllocator,
};

/// One rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NatRule {
    /// Source NAT to the egress bridge's gateway address (or a fixed address).
    Source {
        /// Source prefix network.
        src: u32,
        /// Source prefix length.
        len: u8,
        /// Egress bridge.
        out: u16,
        /// Fixed address (`snat`), or None for masquerade.
        to: Option<[u8; 4]>,
        /// Port pools (TCP, UDP, ICMP) on the translated address.
        pools: [PoolId; 3],
        /// The translated address the pools were made for.
        addr: [u8; 4],
    },
    /// Destination NAT of one port on a bridge's gateway address.
    Dest {
        /// Bridge whose gateway address is mapped.
        inb: u16,
        /// TCP or UDP.
        proto: u8,
        /// Mapped port.
        port: u16,
        /// Target address.
        to: [u8; 4],
        /// Target port.
        to_port: u16,
    },
}

/// The NAT state of the router: rules plus the connection table.
pub struct Nat {
    /// Rules in the order they were added.
    pub rules: Vec<NatRule>,
    /// Tracked (translated) connections.
    pub ct: Conntrack,
    /// The connection each fragmented datagram's first fragment belonged to (its tuple as it
    /// arrived), for its later fragments, which carry no ports.
    pub frags: DatagramTable<FlowKey>,
    /// Port pools on each bridge's gateway address for hairpin connections (made when a port
    /// mapping targets a host on that bridge).
    hairpin: Vec<(u16, [PoolId; 3])>,
    /// Host ports that `dnat ... port=0` picks from.
    dnat_ports: RangeInclusive<u16>,
    /// Where the next pick starts looking (just after the last port picked).
    dnat_next: u16,
    /// This worker's share of every port pool (part, parts): see
    /// [`PortAllocator::partitioned`]; (0, 1) with one worker.
    share: (u16, u16),
}

/// Whether a port mapping of `rules` for `proto` uses host port `port` (on any address: a
/// pool leaves it alone, see `Conntrack::snat_after`).
#[inline]
pub fn mapped_port(rules: &[NatRule], proto: u8, port: u16) -> bool {
    rules
        .iter()
        .any(|r| matches!(r, NatRule::Dest { proto: p, port: q, .. } if *p == proto && *q == port))
}

/// The host ports `dnat ... port=0` picks from unless `set-nat port_range=` says otherwise
/// (Docker's default, the kernel's ephemeral range).
pub const DEFAULT_DNAT_PORTS: RangeInclusive<u16> = 32768..=60999;

/// The source ports of translated TCP and UDP connections: Linux's MASQUERADE range for a
/// source port above 1023 (`nf_nat_l4proto_unique_tuple`), ~64.5k per peer. It was the
/// ephemeral range (28,232), and two containers within their per-source limit could take
/// every port toward one destination.
pub const SOURCE_NAT_PORTS: RangeInclusive<u16> = 1024..=65535;

/// Parse a port range `A-B` (1 <= A <= B <= 65535); errors name `field`.
pub fn parse_port_range(field: &str, s: &str) -> Result<RangeInclusive<u16>, String> {
    let bad = || format!("{field}: '{s}' is not a port range A-B (1 <= A <= B <= 65535)");
    let (a, b) = s.split_once('-').ok_or_else(bad)?;
    let a: u16 = a.trim().parse().map_err(|_| bad())?;
    let b: u16 = b.trim().parse().map_err(|_| bad())?;
    if a == 0 || a > b {
        return Err(bad());
    }
    Ok(a..=b)
}

/// `A-B`, as [`parse_port_range`] reads it.
pub fn port_range_text(r: &RangeInclusive<u16>) -> String {
    format!("{}-{}", r.start(), r.end())
}

impl Default for Nat {
    fn default() -> Self {
        Nat {
            rules: Vec::new(),
            ct: Conntrack::new(CtConfig::default()).expect("default conntrack config is valid"),
            frags: DatagramTable::default(),
            hairpin: Vec::new(),
            dnat_ports: DEFAULT_DNAT_PORTS,
            dnat_next: *DEFAULT_DNAT_PORTS.start(),
            share: (0, 1),
        }
    }
}

/// A rule as shown by `nat-show`.
#[derive(Debug, Clone, Serialize)]
pub struct NatRow {
    /// Position (for `nat-del`).
    pub index: usize,
    /// The rule in `nat-add` syntax.
    pub rule: String,
}

fn prefix_text(net: u32, len: u8) -> String {
    format!("{}/{len}", Ipv4Addr::from(net))
}

fn proto_name(p: u8) -> &'static str {
    match p {
        PROTO_TCP => "tcp",
        PROTO_UDP => "udp",
        _ => "?",
    }
}

impl Nat {
    /// NAT state with a connection table of `config`.
    pub fn with_config(config: CtConfig) -> Result<Nat, String> {
        Ok(Nat {
            rules: Vec::new(),
            ct: Conntrack::new(config).map_err(|e| e.to_string())?,
            frags: DatagramTable::default(),
            hairpin: Vec::new(),
            dnat_ports: DEFAULT_DNAT_PORTS,
            dnat_next: *DEFAULT_DNAT_PORTS.start(),
            share: (0, 1),
        })
    }

    /// Make this table worker `part` of `parts`: the port pools made from now on hand out only
    /// this worker's share of their ports, and a source may hold its share of the per-source
    /// limit here (its connections spread over the workers' tables, so its total stays the
    /// configured limit, as its ports do). Set before any rule is added.
    pub fn set_share(&mut self, part: u16, parts: u16) {
        self.share = (part, parts.max(1));
        let per = self.ct.per_source() / self.share.1 as usize;
        self.ct.set_per_source(per);
    }

    /// The mapped host port of the `dnat` rule whose target is `to:to_port` (`proto`): the
    /// answers of a mapped connection come from there.
    #[inline]
    pub fn mapped_port_of_target(&self, proto: u8, to: [u8; 4], to_port: u16) -> Option<u16> {
        self.rules.iter().find_map(|r| match r {
            NatRule::Dest {
                proto: p,
                port,
                to: t,
                to_port: tp,
                ..
            } if *p == proto && *t == to && *tp == to_port => Some(*port),
            _ => None,
        })
    }

    /// True if `ip` is an address source rules translate to (a `snat to=` address or, for
    /// masquerade, the egress gateway's: `addr`).
    #[inline]
    pub fn is_translated_address(&self, ip: [u8; 4]) -> bool {
        self.rules
            .iter()
            .any(|r| matches!(r, NatRule::Source { addr, .. } if *addr == ip))
    }

    /// True if `ip` is a `snat to=` address of a rule leaving by `bridge`: the gateway answers
    /// ARP for it there (proxy ARP), as a host owning that address would; without it replies
    /// to translated packets never came back (found checking the README's claims).
    pub fn snat_address_on(&self, bridge: u16, ip: [u8; 4]) -> bool {
        self.rules.iter().any(
            |r| matches!(r, NatRule::Source { out, to: Some(t), .. } if *out == bridge && *t == ip),
        )
    }

    /// True if `ip` is inside the source prefix of a source rule.
    #[inline]
    pub fn is_translated_source(&self, ip: [u8; 4]) -> bool {
        let a = u32::from_be_bytes(ip);
        self.rules.iter().any(|r| match r {
            NatRule::Source { src, len, .. } => a & crate::route::mask(*len) == *src,
            NatRule::Dest { .. } => false,
        })
    }

    /// The host ports `dnat ... port=0` picks from.
    pub fn dnat_ports(&self) -> RangeInclusive<u16> {
        self.dnat_ports.clone()
    }

    /// Set the range `dnat ... port=0` picks from (rules already made keep their ports).
    pub fn set_dnat_ports(&mut self, r: RangeInclusive<u16>) {
        self.dnat_next = *r.start();
        self.dnat_ports = r;
    }

    /// Pick a free host port for a `proto` mapping: the first port of the range, starting just
    /// after the last one picked and wrapping, that no mapping of `proto` on a bridge for which
    /// `same_addr` holds (one with the same gateway address) uses. Errors name the range.
    pub fn pick_dest_port(
        &mut self,
        proto: u8,
        same_addr: impl Fn(u16) -> bool,
    ) -> Result<u16, String> {
        let used: std::collections::HashSet<u16> = self
            .rules
            .iter()
            .filter_map(|r| match r {
                NatRule::Dest {
                    inb,
                    proto: p,
                    port,
                    ..
                } if *p == proto && same_addr(*inb) => Some(*port),
                _ => None,
            })
            .collect();
        let (lo, hi) = (*self.dnat_ports.start(), *self.dnat_ports.end());
        let start = self.dnat_next.clamp(lo, hi);
        let candidates = (start..=hi).chain(lo..start);
        for p in candidates {
            if !used.contains(&p) {
                self.dnat_next = if p == hi { lo } else { p + 1 };
                return Ok(p);
            }
        }
        Err(format!(
            "port: every {} port of the range {} is mapped on that address (set-nat port_range=A-B)",
            proto_name(proto),
            port_range_text(&self.dnat_ports)
        ))
    }

    /// Add a source rule (masquerade when `to` is None). `addr` is the translated address (the
    /// bridge's gateway for masquerade).
    pub fn add_source(
        &mut self,
        src: u32,
        len: u8,
        out: u16,
        to: Option<[u8; 4]>,
        addr: [u8; 4],
    ) -> Result<usize, String> {
        let m = crate::route::mask(len);
        if src & !m != 0 {
            return Err(format!("src: {} has host bits set", prefix_text(src, len)));
        }
        for r in &self.rules {
            if let NatRule::Source {
                src: s,
                len: l,
                out: o,
                ..
            } = r
                && *o == out
            {
                let common = crate::route::mask(len.min(*l));
                if s & common == src & common {
                    return Err(format!(
                        "src: {} overlaps {} already translated on that bridge; delete it first",
                        prefix_text(src, len),
                        prefix_text(*s, *l)
                    ));
                }
            }
        }
        let pools = self.pools_for(addr)?;
        self.rules.push(NatRule::Source {
            src,
            len,
            out,
            to,
            pools,
            addr,
        });
        Ok(self.rules.len() - 1)
    }

    /// TCP, UDP and ICMP port pools on `addr`.
    fn pools_for(&mut self, addr: [u8; 4]) -> Result<[PoolId; 3], String> {
        let mut pools = [0; 3];
        for (i, proto) in [PROTO_TCP, PROTO_UDP, PROTO_ICMP].into_iter().enumerate() {
            let range = if proto == PROTO_ICMP {
                1..=65535
            } else {
                SOURCE_NAT_PORTS
            };
            let p = PortAllocator::new(addr, proto, range)
                .map_err(|e| e.to_string())?
                .partitioned(self.share.0, self.share.1);
            pools[i] = self.ct.add_pool(p);
        }
        Ok(pools)
    }

    /// Make sure hairpin connections to hosts on `bridge` (gateway `addr`) have port pools.
    pub fn ensure_hairpin(&mut self, bridge: u16, addr: [u8; 4]) -> Result<(), String> {
        if self.hairpin.iter().all(|(b, _)| *b != bridge) {
            let pools = self.pools_for(addr)?;
            self.hairpin.push((bridge, pools));
        }
        Ok(())
    }

    /// The hairpin pools of `bridge`.
    #[inline]
    pub fn hairpin_pools(&self, bridge: u16) -> Option<[PoolId; 3]> {
        self.hairpin
            .iter()
            .find(|(b, _)| *b == bridge)
            .map(|(_, p)| *p)
    }

    /// Add a port mapping.
    pub fn add_dest(
        &mut self,
        inb: u16,
        proto: u8,
        port: u16,
        to: [u8; 4],
        to_port: u16,
    ) -> Result<usize, String> {
        if port == 0 || to_port == 0 {
            return Err("port: must be 1 to 65535".into());
        }
        let held = self.rules.iter().enumerate().find_map(|(i, r)| match *r {
            NatRule::Dest {
                inb: b,
                proto: p,
                port: q,
                to: t,
                to_port: tp,
            } if b == inb && p == proto && q == port => Some((i, t, tp)),
            _ => None,
        });
        if let Some((i, t, tp)) = held {
            // Named with its target and number: a leftover (a container removed while uvs was
            // down) is told apart from a live mapping and deleted in one step.
            return Err(format!(
                "port: {}/{port} on that bridge is already mapped to {}:{tp} (rule #{i}); delete it first (nat-del {i})",
                proto_name(proto),
                std::net::Ipv4Addr::from(t)
            ));
        }
        self.rules.push(NatRule::Dest {
            inb,
            proto,
            port,
            to,
            to_port,
        });
        Ok(self.rules.len() - 1)
    }

    /// Remove rule `index`. Existing connections keep their translation until they expire (the
    /// worker removes a port mapping's connections itself: [`Nat::forget_mapped`]).
    pub fn del(&mut self, index: usize) -> Result<NatRule, String> {
        if index >= self.rules.len() {
            return Err(format!("no NAT rule #{index} (nat-show lists them)"));
        }
        Ok(self.rules.remove(index))
    }

    /// Remove the connections made to `gw:port` (`proto`), a port mapping's host side: when a
    /// mapping is deleted or made, its (or an earlier mapping's) connections go too, so a
    /// client that keeps sending (UDP refreshes its entry with every datagram) reaches the new
    /// target instead of the old one for as long as it sends (as Docker and CNI's `portmap`
    /// delete UDP conntrack entries). O(connections); a control-plane change. Returns how many.
    pub fn forget_mapped(&mut self, gw: [u8; 4], proto: u8, port: u16) -> usize {
        let ids: Vec<_> = self
            .ct
            .iter(0)
            .filter(|c| c.orig.dst == gw && c.orig.proto == proto && c.orig.dport == port)
            .map(|c| c.id)
            .collect();
        ids.into_iter().filter(|&id| self.ct.remove(id)).count()
    }

    /// Remove every rule that names bridge `b` (the bridge is going away).
    pub fn del_bridge(&mut self, b: u16) {
        self.rules.retain(|r| match r {
            NatRule::Source { out, .. } => *out != b,
            NatRule::Dest { inb, .. } => *inb != b,
        });
    }

    /// The port pools (TCP, UDP, ICMP) of the source rule for a connection from `src` leaving
    /// through bridge `out`.
    #[inline]
    pub fn source_for(&self, src: [u8; 4], out: u16) -> Option<[PoolId; 3]> {
        let a = u32::from_be_bytes(src);
        self.rules.iter().find_map(|r| match r {
            NatRule::Source {
                src: s,
                len,
                out: o,
                pools,
                ..
            } if *o == out && a & crate::route::mask(*len) == *s => Some(*pools),
            _ => None,
        })
    }

    /// The mapping for a connection to `dst:port` (`proto`), if `dst` is the gateway address of
    /// a mapped bridge (`gateways` gives each bridge's gateway).
    #[inline]
    pub fn dest_for(
        &self,
        proto: u8,
        dst: [u8; 4],
        port: u16,
        gateway_of: impl Fn(u16) -> Option<[u8; 4]>,
    ) -> Option<([u8; 4], u16)> {
        self.rules.iter().find_map(|r| match r {
            NatRule::Dest {
                inb,
                proto: p,
                port: q,
                to,
                to_port,
            } if *p == proto && *q == port && gateway_of(*inb) == Some(dst) => {
                Some((*to, *to_port))
            }
            _ => None,
        })
    }

    /// Rows for `nat-show`; `bridge_name` maps ids to names.
    /// The rules that name an address of the subnet `net`/`len` (a source prefix inside it, a
    /// mapping's target in it), by index: what a deleted or moved bridge leaves behind.
    pub fn naming_subnet(&self, net: u32, len: u8) -> Vec<usize> {
        let m = crate::route::mask(len);
        let inside = |a: u32| a & m == net & m;
        self.rules
            .iter()
            .enumerate()
            .filter(|(_, r)| match r {
                NatRule::Source { src, len: l, .. } => *l >= len && inside(*src),
                NatRule::Dest { to, .. } => inside(u32::from_be_bytes(*to)),
            })
            .map(|(i, _)| i)
            .collect()
    }

    pub fn rows(&self, bridge_name: impl Fn(u16) -> String) -> Vec<NatRow> {
        self.rules
            .iter()
            .enumerate()
            .map(|(index, r)| NatRow {
                index,
                rule: match r {
                    NatRule::Source {
                        src,
                        len,
                        out,
                        to: None,
                        ..
                    } => format!(
                        "masquerade src={} out={}",
                        prefix_text(*src, *len),
                        bridge_name(*out)
                    ),
                    NatRule::Source {
                        src,
                        len,
                        out,
                        to: Some(t),
                        ..
                    } => format!(
                        "snat src={} out={} to={}",
                        prefix_text(*src, *len),
                        bridge_name(*out),
                        Ipv4Addr::from(*t)
                    ),
                    NatRule::Dest {
                        inb,
                        proto,
                        port,
                        to,
                        to_port,
                    } => format!(
                        "dnat in={} proto={} port={port} to={}:{to_port}",
                        bridge_name(*inb),
                        proto_name(*proto),
                        Ipv4Addr::from(*to)
                    ),
                },
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_ranges_parse_and_name_the_field() {
        assert_eq!(parse_port_range("f", "32768-60999").unwrap(), 32768..=60999);
        assert_eq!(parse_port_range("f", "80-80").unwrap(), 80..=80);
        for bad in ["", "80", "0-10", "10-9", "1-65536", "a-b"] {
            let e = parse_port_range("port_range", bad).unwrap_err();
            assert!(e.starts_with("port_range:"), "{e}");
        }
    }

    /// Picks go round the range after the last pick (a freed port is not reused at once) and
    /// skip ports mapped on bridges that share the address; other bridges do not count.
    #[test]
    fn picks_wrap_and_skip_mapped_ports_on_the_same_address() {
        let mut n = Nat::default();
        n.set_dnat_ports(100..=103);
        n.add_dest(1, PROTO_TCP, 101, [10, 0, 0, 2], 80).unwrap();
        n.add_dest(2, PROTO_TCP, 102, [10, 0, 0, 2], 80).unwrap();
        let same = |b: u16| b == 1;
        assert_eq!(n.pick_dest_port(PROTO_TCP, same).unwrap(), 100);
        assert_eq!(n.pick_dest_port(PROTO_TCP, same).unwrap(), 102);
        assert_eq!(n.pick_dest_port(PROTO_TCP, same).unwrap(), 103);
        // Wrapped: 100 again (it was never added as a rule), 101 stays taken.
        assert_eq!(n.pick_dest_port(PROTO_TCP, same).unwrap(), 100);
        n.add_dest(1, PROTO_TCP, 100, [10, 0, 0, 2], 80).unwrap();
        n.add_dest(1, PROTO_TCP, 102, [10, 0, 0, 2], 80).unwrap();
        n.add_dest(1, PROTO_TCP, 103, [10, 0, 0, 2], 80).unwrap();
        let e = n.pick_dest_port(PROTO_TCP, same).unwrap_err();
        assert!(e.contains("100-103"), "{e}");
        // One cursor for both protocols: UDP starts after the last pick.
        assert_eq!(n.pick_dest_port(PROTO_UDP, same).unwrap(), 101);
    }
}
