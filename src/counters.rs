//! Counters: per-port packet/byte counts and drops by reason.
//!
//! Drop reasons are declared once here, each with a name (used by `stats` and scripts) and a
//! description. Counters are plain u64s owned by the worker; the control plane reads a snapshot
//! through the worker's request channel, so no atomics are touched per packet.

use serde::Serialize;

macro_rules! drop_reasons {
    ($($variant:ident => $name:literal, $desc:literal;)*) => {
        /// Why a frame was dropped.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        #[repr(u8)]
        pub enum DropReason {
            $(#[doc = $desc] $variant,)*
        }

        impl DropReason {
            /// Every reason, in declaration order.
            pub const ALL: &'static [DropReason] = &[$(DropReason::$variant,)*];
            /// Number of reasons.
            pub const COUNT: usize = Self::ALL.len();

            /// Short name, as shown by `stats`.
            pub fn name(self) -> &'static str {
                match self { $(DropReason::$variant => $name,)* }
            }

            /// One-line description.
            pub fn description(self) -> &'static str {
                match self { $(DropReason::$variant => $desc,)* }
            }
        }
    };
}

drop_reasons! {
    Runt => "runt", "frame shorter than an Ethernet header (14 bytes), or a VLAN-tagged frame that ends right after its tag (18 bytes or fewer)";
    SrcMulticast => "src-mac-multicast", "source MAC is a group (multicast/broadcast) address";
    SrcZero => "src-mac-zero", "source MAC is 00:00:00:00:00:00";
    VlanDenied => "vlan-denied", "VLAN not carried by the ingress port (tag on an access port, VLAN not in trunks)";
    QinQ => "qinq", "802.1ad (QinQ) frames are not supported";
    SamePort => "same-port", "destination MAC was learned on the ingress port (filtered, as a bridge does)";
    NoBridge => "no-bridge", "ingress port is not attached to a bridge";
    MtuExceeded => "mtu-exceeded", "frame larger than the egress port's MTU (a routed packet without DF is fragmented unless it has IP options)";
    NoBuffer => "no-buffer", "frame pool empty when copying a flooded frame";
    TxRingFull => "tx-full", "egress port could not take the frame (ring full or device gone)";
    IpMalformed => "ip-malformed", "IPv4 header truncated, bad version/IHL or total length";
    IpBadChecksum => "ip-bad-checksum", "IPv4 header checksum does not verify";
    IpNotUnicast => "ip-not-unicast", "broadcast/multicast IPv4 destination sent to the gateway MAC (255.255.255.255, multicast, 0.0.0.0, or a gateway subnet's directed broadcast such as 10.0.0.255 of a /24: not forwarded, not answered, never ARPed for)";
    TtlExpired => "ttl-expired", "TTL 0 or 1 on a packet to route (ICMP time exceeded sent)";
    NoRoute => "no-route", "no route to the destination (ICMP net unreachable sent)";
    ArpPending => "arp-pending", "next hop unresolved and no ARP request may go out for it now (the egress bridge's neighbour bound or ARP rate limit reached)";
    GatewayVlan => "gateway-vlan", "frame to a gateway arrived on a VLAN other than 0 (gateways are untagged)";
    NoGateway => "no-gateway", "route's egress bridge has no gateway address";
    LocalUnsupported => "local-unsupported", "packet to a gateway address left unanswered: ICMP other than echo, a TCP reset, a later fragment, a malformed TCP header; or IPv6 to a gateway's MAC (the router is IPv4 only)";
    LocalRefused => "local-refused", "UDP or other non-TCP packet to a gateway address with no service: ICMP port/protocol unreachable sent (rate limited)";
    FragNeeded => "frag-needed", "routed packet larger than the egress MTU with DF set (ICMP frag needed sent)";
    CtFull => "ct-full", "connection table full: a new translated connection was refused";
    NatPortsExhausted => "nat-ports-exhausted", "no free NAT source port toward that destination";
    VxlanBadFlags => "bad-vxlan-flags", "VXLAN header without the I (valid VNI) flag";
    VxlanUnknownVni => "vxlan-unknown-vni", "VXLAN packet for a VNI no tunnel port on that address carries";
    VxlanUnknownVtep => "vxlan-unknown-vtep", "VXLAN packet from a VTEP that is not one of the port's remotes";
    VxlanTruncated => "vxlan-truncated", "VXLAN packet too short for its headers and an inner Ethernet frame (fragments are put back together first)";
    VxlanNested => "vxlan-in-vxlan", "VXLAN packet found inside a decapsulated frame";
    FlowDrop => "flow-drop", "dropped by the flow table (drop action, no matching flow, meter, dec_ttl at 0, more than 64 nested resubmits or 4,096 lookups: `trace` says which)";
    VxlanNoRemote => "vxlan-no-remote", "frame for a tunnel port that has no remote VTEP to send it to";
    FlowOtherBridge => "flow-other-bridge", "frame a flow action sent to this port from another bridge (refused at output)";
    ArpQueueFull => "arp-queue-full", "next hop unresolved and its hold queue (3 packets; 64 per bridge, 256 in all) full";
    ArpFailed => "arp-failed", "next hop did not answer ARP (held packets dropped; new ones dropped for 3 s)";
    BridgeIsolated => "bridge-isolated", "routed between two bridges that are both isolated=on";
    LinkLocal => "link-local", "frame to an IEEE 802.1D reserved address (01:80:c2:00:00:00-0f: STP, PAUSE, LACP, 802.1X, LLDP) that NORMAL switching does not forward (as OVS; a flow may output it)";
    IccDenied => "icc-denied", "port-to-port frame inside a bridge with icc=off (only the gateway is reachable)";
    CtSourceLimit => "ct-source-limit", "new translated connection refused: its source address holds its per-source limit";
    RateRx => "rate-rx", "received from a port beyond its rate_rx rate (the CNI bandwidth capability's egressRate)";
    RateTx => "rate-tx", "queued toward a port beyond its rate_tx rate (the CNI bandwidth capability's ingressRate)";
    RpFilter => "rp-filter", "routed packet whose source address is not reachable back through the bridge it came from (rp_filter), or a martian source (the gateway's own address, 0.0.0.0, multicast, class E)";
    DnsQueueFull => "dns-queue-full", "DNS query to a gateway dropped: the DNS service's queue is full";
    HandoffFull => "handoff-full", "several workers: the worker that owns the frame's connection was too busy to take it";
    DnsRateLimited => "dns-rate-limited", "DNS query to a gateway dropped: its source sent more than its rate (200/s, bursts of 400)";
    PortHeld => "port-held", "toward a port added by a reload or a pending port's retry while its bridge's flow table was being installed (milliseconds)";
    FragReassembly => "frag-reassembly", "fragment of a datagram to the switch itself (VXLAN) that could not be put back together: overlapping, more than 8 fragments, larger than a pool frame, or the pool empty (incomplete ones are dropped after 1 s, counted in stats' reassembly)";
    NatFragment => "nat-fragment", "IPv4 fragment after the first of a datagram a source NAT rule would translate, whose first fragment was not seen (not reassembled): dropped rather than sent with its untranslated source address";
    FloodLimit => "flood-limit", "flooded frame (broadcast, multicast, unknown unicast) from a port beyond its flood_rate (storm control; default 10,000 a second)";
    NatUntranslatable => "nat-untranslatable", "packet a source NAT rule would translate that uvs cannot track (a protocol other than TCP, UDP and ICMP, a header cut short, an ICMP error about no tracked connection): dropped rather than sent with its untranslated source address";
    PatchNoPeer => "patch-no-peer", "toward a patch port whose peer does not exist or does not name it back (`peer=`)";
    PatchLoop => "patch-loop", "frame that would have crossed more than 64 patch ports in one pass of the worker: a loop of patch ports (OVS's translation depth)";
    PortNoRecv => "port-no-recv", "received on a port set `down` or `no-receive` (`mod-port`, OpenFlow PORT_MOD)";
    PortNoFwd => "port-no-fwd", "toward a port set `down` or `no-forward` (`mod-port`, OpenFlow PORT_MOD)";
    IpBadOptions => "ip-bad-options", "IPv4 packet to the gateway MAC whose options do not parse (a length below 2 or past the header, a bad Record Route/Timestamp pointer, a repeated option), as Linux drops it";
    IpSourceRoute => "ip-source-route", "IPv4 packet to the gateway MAC with a loose or strict source route option (LSRR/SSRR), as Linux drops it by default (accept_source_route=0)";
}

/// Counters of one port.
#[derive(Debug, Clone)]
pub struct PortCounters {
    /// Frames received (all, including ones dropped later).
    pub rx_packets: u64,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Frames handed to the port for transmission.
    pub tx_packets: u64,
    /// Bytes handed to the port for transmission.
    pub tx_bytes: u64,
    /// L4 checksums completed in software for frames received with a partial checksum.
    pub csum_completed: u64,
    /// TCP segments merged into super-frames on their way out of this port (`pipeline::gro`).
    pub gro_merged: u64,
    /// Source MACs not learned because the port holds its `mac_limit` (the frames still go on).
    pub mac_limit_refused: u64,
    /// Frames from the bridge's own gateway MAC, whose source is not learned (they still go on).
    pub gateway_mac_refused: u64,
    /// Drops charged to this port (ingress reasons on rx, egress reasons on tx), by reason.
    pub drops: [u64; DropReason::COUNT],
}

// Manual: `Default` is not derived for arrays longer than 32.
impl Default for PortCounters {
    fn default() -> Self {
        PortCounters {
            rx_packets: 0,
            rx_bytes: 0,
            tx_packets: 0,
            tx_bytes: 0,
            csum_completed: 0,
            gro_merged: 0,
            mac_limit_refused: 0,
            gateway_mac_refused: 0,
            drops: [0; DropReason::COUNT],
        }
    }
}

impl PortCounters {
    /// Count one drop.
    #[inline]
    pub fn drop(&mut self, r: DropReason) {
        self.drops[r as usize] += 1;
    }

    /// Total drops.
    pub fn total_drops(&self) -> u64 {
        self.drops.iter().sum()
    }

    /// A serialisable snapshot (only non-zero drop reasons).
    pub fn snapshot(&self) -> PortStats {
        PortStats {
            rx_packets: self.rx_packets,
            rx_bytes: self.rx_bytes,
            tx_packets: self.tx_packets,
            tx_bytes: self.tx_bytes,
            csum_completed: self.csum_completed,
            gro_merged: self.gro_merged,
            mac_limit_refused: self.mac_limit_refused,
            gateway_mac_refused: self.gateway_mac_refused,
            drops: DropReason::ALL
                .iter()
                .filter(|r| self.drops[**r as usize] != 0)
                .map(|r| (r.name().to_string(), self.drops[*r as usize]))
                .collect(),
        }
    }
}

/// What `stats` reports for a port.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct PortStats {
    /// Frames received.
    pub rx_packets: u64,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Frames transmitted.
    pub tx_packets: u64,
    /// Bytes transmitted.
    pub tx_bytes: u64,
    /// Partial checksums completed.
    pub csum_completed: u64,
    /// TCP segments merged into super-frames toward this port.
    #[serde(default)]
    pub gro_merged: u64,
    /// Source MACs not learned because of the port's `mac_limit`.
    #[serde(default)]
    pub mac_limit_refused: u64,
    /// Frames from the bridge's gateway MAC (source not learned).
    #[serde(default)]
    pub gateway_mac_refused: u64,
    /// Drops by reason name.
    pub drops: std::collections::BTreeMap<String, u64>,
}

/// Counters of the router (all bridges' gateways).
#[derive(Debug, Clone, Default, Serialize)]
pub struct RouterCounters {
    /// Packets routed between or within bridges.
    pub routed: u64,
    /// ARP requests for a gateway address answered.
    pub arp_replies: u64,
    /// ARP requests sent to resolve next hops.
    pub arp_requests: u64,
    /// Packets held while their next hop was resolved.
    pub arp_queued: u64,
    /// ICMP echo requests to a gateway answered.
    pub echo_replies: u64,
    /// ICMP errors sent (time exceeded, unreachable, fragmentation needed).
    pub icmp_errors: u64,
    /// ICMP errors not sent: over the rate limit (`pipeline::local_refuse::IcmpLimit`).
    pub icmp_rate_limited: u64,
    /// TCP resets sent for segments to a gateway address with no service.
    pub resets: u64,
    /// Packets over the egress MTU without DF, cut into fragments.
    pub fragmented: u64,
    /// Fragments those made (the first included).
    pub fragments: u64,
}

/// Counters of one bridge's learning.
#[derive(Debug, Clone, Default, Serialize)]
pub struct BridgeCounters {
    /// New MACs learned.
    pub learned: u64,
    /// MACs that moved to another port.
    pub moves: u64,
    /// MACs not learned because the FDB was full.
    pub fdb_full: u64,
    /// MACs learned into a full FDB in the place of an entry of the port holding the most
    /// (see `fdb`).
    pub fdb_replaced: u64,
    /// MACs not learned because no free slot was near their hash (see `fdb::MAX_PROBE`).
    pub fdb_collisions: u64,
    /// MACs not learned because their port held its `mac_limit` (summed over ports).
    pub mac_limit: u64,
    /// Entries removed by aging.
    pub aged: u64,
    /// Frames flooded (broadcast, multicast, unknown unicast).
    pub flooded: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_snapshot_skips_zero() {
        let mut names: Vec<_> = DropReason::ALL.iter().map(|r| r.name()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), DropReason::COUNT);
        let mut c = PortCounters::default();
        c.drop(DropReason::Runt);
        c.drop(DropReason::Runt);
        let s = c.snapshot();
        assert_eq!(s.drops.get("runt"), Some(&2));
        assert_eq!(s.drops.len(), 1);
        assert_eq!(c.total_drops(), 2);
    }
}
