//! Per-node runtime counters (VPP's `show runtime`): for every pipeline stage ("node") of one
//! worker, how often it ran (calls), how many frames it handled (vectors) and the CPU ticks it
//! took, so `uvs ctl show-runtime` can print vectors/call and ticks per vector.
//!
//! Contract:
//! - Always on and cheap: one tick read per node call (per burst, never per frame), one add to
//!   each of three counters. A node that handles no frame of a burst is not charged a call.
//! - Ticks come from the time-stamp counter (`rdtsc`) on x86_64 and from a monotonic clock in ns
//!   elsewhere; they only describe cost and never change what the pipeline does (the datapath
//!   stays deterministic). [`ticks_per_ns`] calibrates them once for display.
//! - The counters live in the worker's `Pipeline` and are touched by that worker alone; the
//!   control plane reads and clears them through the worker's request channel.
//! - Drop reasons are not counted a second time here: each [`DropReason`] belongs to one node
//!   ([`node_of`]), and `show-runtime` groups the per-port drop counters by node.

use serde::Serialize;

use crate::counters::DropReason;

macro_rules! nodes {
    ($($variant:ident => $name:literal, $desc:literal;)*) => {
        /// A pipeline stage, as `show-runtime` names it.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        #[repr(u8)]
        pub enum Node {
            $(#[doc = $desc] $variant,)*
        }

        impl Node {
            /// Every node, in pipeline order.
            pub const ALL: &'static [Node] = &[$(Node::$variant,)*];
            /// Number of nodes.
            pub const COUNT: usize = Self::ALL.len();

            /// Name, as shown by `show-runtime` (VPP's names where a VPP node does the same).
            pub fn name(self) -> &'static str {
                match self { $(Node::$variant => $name,)* }
            }

            /// One-line description.
            pub fn description(self) -> &'static str {
                match self { $(Node::$variant => $desc,)* }
            }
        }
    };
}

nodes! {
    GatewayInput => "gateway-input", "frames at the head of a burst sent to the bridge's gateway (untagged IPv4 on a bridge without an active flow table), parsed, learned and routed in one pass: what ethernet-input, l2-learn, l2-fwd and ip4-input do for them (their drops are listed under those nodes)";
    EthernetInput => "ethernet-input", "parse Ethernet and VLAN, classify into a VLAN, complete partial checksums (one call per received burst)";
    Flows => "flows", "the bridge's flow tables (only on bridges with flows other than the default NORMAL)";
    L2Learn => "l2-learn", "learn source MACs into the FDB";
    L2Fwd => "l2-fwd", "FDB lookup of the destination MAC: one port, flood, or the router";
    Ip4Input => "ip4-input", "ARP and IPv4 for the gateway: routing, NAT, ICMP, and VXLAN decapsulation of what vxlan4-input did not take (vectors: frames sent to the router, ARP included)";
    Output => "interface-output", "egress VLAN tag, MTU check, per-port output queues, flood copies (vectors: the whole burst, frames dropped earlier included, except what gateway-input queued itself: routed frames a port takes unchanged, and the frames before them)";
    Vxlan4Input => "vxlan4-input", "VXLAN packets to a VTEP's gateway address, taken off the underlay port before ethernet-input and decapsulated (ip4-vxlan-bypass); ticks include queueing the inner frames for their tunnel's bridge, whose own pass counts in the nodes above";
    Vxlan4Encap => "vxlan4-encap", "encapsulation of frames queued on tunnel ports (outer headers, underlay next hop; outer frames to a known underlay port queued there directly)";
}

/// Counters of one node.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct NodeStats {
    /// Bursts the node ran over (with at least one frame).
    pub calls: u64,
    /// Frames it handled.
    pub vectors: u64,
    /// Ticks spent (see [`ticks`]).
    pub ticks: u64,
}

/// One worker's per-node counters.
#[derive(Debug, Clone)]
pub struct Runtime {
    nodes: [NodeStats; Node::COUNT],
    /// The ports' drop counters (summed) when the counters were last cleared: reports show
    /// the drops since then.
    drop_base: [u64; DropReason::COUNT],
}

impl Default for Runtime {
    fn default() -> Self {
        Runtime {
            nodes: Default::default(),
            drop_base: [0; DropReason::COUNT],
        }
    }
}

/// The drop counters of every port, summed by reason.
fn summed<'a>(
    port_drops: impl Iterator<Item = &'a [u64; DropReason::COUNT]>,
) -> [u64; DropReason::COUNT] {
    let mut drops = [0u64; DropReason::COUNT];
    for d in port_drops {
        for (sum, n) in drops.iter_mut().zip(d) {
            *sum += n;
        }
    }
    drops
}

impl Runtime {
    /// Charge `node` one call of `vectors` frames that took `ticks`. Nothing if `vectors` is 0.
    #[inline(always)]
    pub fn add(&mut self, node: Node, vectors: usize, ticks: u64) {
        if vectors != 0 {
            let n = &mut self.nodes[node as usize];
            n.calls += 1;
            n.vectors += vectors as u64;
            n.ticks += ticks;
        }
    }

    /// Charge `node` time spent on frames another call of it already counted (no call, no
    /// vectors).
    #[inline(always)]
    pub fn add_ticks(&mut self, node: Node, ticks: u64) {
        self.nodes[node as usize].ticks += ticks;
    }

    /// Counters of `node`.
    pub fn get(&self, node: Node) -> NodeStats {
        self.nodes[node as usize]
    }

    /// Zero every counter (`show-runtime clear`); the drops reported from then on are those
    /// counted after `port_drops` (the ports' drop counters now, which `stats` keeps showing
    /// whole).
    pub fn clear<'a>(&mut self, port_drops: impl Iterator<Item = &'a [u64; DropReason::COUNT]>) {
        self.nodes = Default::default();
        self.drop_base = summed(port_drops);
    }
}

/// The current tick count: the CPU's time-stamp counter on x86_64, monotonic ns elsewhere.
#[inline(always)]
pub fn ticks() -> u64 {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: `rdtsc` has no preconditions: it reads the time-stamp counter, which every
        // x86_64 CPU has; it touches no memory.
        unsafe { core::arch::x86_64::_rdtsc() }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        use std::sync::OnceLock;
        static START: OnceLock<std::time::Instant> = OnceLock::new();
        START
            .get_or_init(std::time::Instant::now)
            .elapsed()
            .as_nanos() as u64
    }
}

/// Ticks per nanosecond, measured once (about 20 ms against the monotonic clock) and cached.
/// The first call sleeps: make it off the worker (`show-runtime` calls it before asking).
pub fn ticks_per_ns() -> f64 {
    use std::sync::OnceLock;
    static RATE: OnceLock<f64> = OnceLock::new();
    *RATE.get_or_init(|| {
        let (t0, c0) = (std::time::Instant::now(), ticks());
        std::thread::sleep(std::time::Duration::from_millis(20));
        let (ns, c) = (t0.elapsed().as_nanos() as f64, ticks().wrapping_sub(c0));
        if ns > 0.0 && c > 0 {
            c as f64 / ns
        } else {
            1.0
        }
    })
}

/// The node a drop reason is counted in.
pub fn node_of(r: DropReason) -> Node {
    use DropReason::*;
    match r {
        Runt | SrcMulticast | SrcZero | VlanDenied | QinQ | NoBridge | RateRx | HandoffFull => {
            Node::EthernetInput
        }
        FlowDrop => Node::Flows,
        SamePort | IccDenied | LinkLocal | FloodLimit => Node::L2Fwd,
        VxlanBadFlags | VxlanUnknownVni | VxlanUnknownVtep | VxlanTruncated | VxlanNested => {
            Node::Vxlan4Input
        }
        VxlanNoRemote => Node::Vxlan4Encap,
        MtuExceeded | NoBuffer | TxRingFull | FlowOtherBridge | RateTx | PortHeld | PatchNoPeer
        | PortNoFwd | PatchLoop => Node::Output,
        PortNoRecv => Node::EthernetInput,
        IpMalformed | IpBadChecksum | IpNotUnicast | TtlExpired | NoRoute | ArpPending
        | GatewayVlan | NoGateway | LocalUnsupported | LocalRefused | FragNeeded | CtFull
        | NatPortsExhausted | ArpQueueFull | ArpFailed | BridgeIsolated | CtSourceLimit
        | RpFilter | DnsQueueFull | DnsRateLimited | NatFragment | NatUntranslatable
        | FragReassembly | IpBadOptions | IpSourceRoute => Node::Ip4Input,
    }
}

/// What `show-runtime` reports for one node of one worker.
#[derive(Debug, Clone, Serialize)]
pub struct NodeReport {
    /// Node name.
    pub name: &'static str,
    /// Bursts handled.
    pub calls: u64,
    /// Frames handled.
    pub vectors: u64,
    /// Frames per call.
    pub vectors_per_call: f64,
    /// Ticks in total.
    pub ticks: u64,
    /// Ticks per frame.
    pub ticks_per_vector: f64,
    /// Nanoseconds per frame (ticks converted with [`ticks_per_ns`]).
    pub ns_per_vector: f64,
    /// Drops counted in this node since the last `clear`, by reason (summed over ports).
    pub drops: std::collections::BTreeMap<&'static str, u64>,
}

/// The report of every node, drops taken from `port_drops` (per-port drop counter arrays).
pub fn report<'a>(
    rt: &Runtime,
    port_drops: impl Iterator<Item = &'a [u64; DropReason::COUNT]>,
) -> Vec<NodeReport> {
    let mut drops = summed(port_drops);
    // A port removed since the clear takes its drops along: never below zero.
    for (d, base) in drops.iter_mut().zip(&rt.drop_base) {
        *d = d.saturating_sub(*base);
    }
    let rate = ticks_per_ns();
    Node::ALL
        .iter()
        .map(|&node| {
            let s = rt.get(node);
            let per = |x: u64| {
                if s.vectors == 0 {
                    0.0
                } else {
                    x as f64 / s.vectors as f64
                }
            };
            NodeReport {
                name: node.name(),
                calls: s.calls,
                vectors: s.vectors,
                vectors_per_call: if s.calls == 0 {
                    0.0
                } else {
                    s.vectors as f64 / s.calls as f64
                },
                ticks: s.ticks,
                ticks_per_vector: per(s.ticks),
                ns_per_vector: per(s.ticks) / rate,
                drops: DropReason::ALL
                    .iter()
                    .filter(|r| node_of(**r) == node && drops[**r as usize] != 0)
                    .map(|r| (r.name(), drops[*r as usize]))
                    .collect(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_skips_empty_calls_and_clear_zeroes() {
        let mut rt = Runtime::default();
        rt.add(Node::L2Fwd, 0, 100);
        assert_eq!(rt.get(Node::L2Fwd), NodeStats::default());
        rt.add(Node::L2Fwd, 32, 100);
        rt.add(Node::L2Fwd, 8, 50);
        assert_eq!(
            rt.get(Node::L2Fwd),
            NodeStats {
                calls: 2,
                vectors: 40,
                ticks: 150
            }
        );
        rt.clear(std::iter::empty());
        assert_eq!(rt.get(Node::L2Fwd), NodeStats::default());
    }

    #[test]
    fn names_unique_and_drops_grouped_by_node() {
        let mut names: Vec<_> = Node::ALL.iter().map(|n| n.name()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), Node::COUNT);
        let mut a = [0u64; DropReason::COUNT];
        let mut b = [0u64; DropReason::COUNT];
        a[DropReason::Runt as usize] = 2;
        b[DropReason::Runt as usize] = 1;
        b[DropReason::NoRoute as usize] = 5;
        let r = report(&Runtime::default(), [&a, &b].into_iter());
        let by = |n: Node| &r[n as usize];
        assert_eq!(by(Node::EthernetInput).drops.get("runt"), Some(&3));
        assert_eq!(by(Node::Ip4Input).drops.get("no-route"), Some(&5));
        assert!(by(Node::L2Fwd).drops.is_empty());
    }

    #[test]
    fn ticks_advance() {
        let a = ticks();
        std::thread::sleep(std::time::Duration::from_millis(1));
        assert!(ticks() > a);
        assert!(ticks_per_ns() > 0.0);
    }
}
