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
//!   not new connections to masquerade. Other forwarding stays stateless. Fragments are not translated: a fragment that matches no
//!   connection is routed as is, as the first packet of a flow it would carry no ports anyway.
//! - The first packet of a connection picks the rule; later packets (both directions) follow the
//!   connection table until it expires, even if rules change.

use std::net::Ipv4Addr;

use serde::Serialize;

use crate::conntrack::{
    Conntrack, CtConfig, DEFAULT_PORT_RANGE, PROTO_ICMP, PROTO_TCP, PROTO_UDP, PoolId,
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
    /// Port pools on each bridge's gateway address for hairpin connections (made when a port
    /// mapping targets a host on that bridge).
    hairpin: Vec<(u16, [PoolId; 3])>,
}

impl Default for Nat {
    fn default() -> Self {
        Nat {
            rules: Vec::new(),
            ct: Conntrack::new(CtConfig::default()).expect("default conntrack config is valid"),
            hairpin: Vec::new(),
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
            hairpin: Vec::new(),
        })
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
                DEFAULT_PORT_RANGE
            };
            let p = PortAllocator::new(addr, proto, range).map_err(|e| e.to_string())?;
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
        if self.rules.iter().any(|r| {
            matches!(r, NatRule::Dest { inb: b, proto: p, port: q, .. } if *b == inb && *p == proto && *q == port)
        }) {
            return Err(format!(
                "port: {}/{port} on that bridge is already mapped; delete it first",
                proto_name(proto)
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

    /// Remove rule `index`. Existing connections keep their translation until they expire.
    pub fn del(&mut self, index: usize) -> Result<NatRule, String> {
        if index >= self.rules.len() {
            return Err(format!("no NAT rule #{index} (nat-show lists them)"));
        }
        Ok(self.rules.remove(index))
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
