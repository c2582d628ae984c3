//! OpenFlow on the wire: each bridge is served on a unix socket (`DIR/BRIDGE.mgmt`, as OVS's
//! `/run/openvswitch/br0.mgmt`), so `ovs-ofctl add-flow unix:/run/uvs/br0.mgmt ...` works.
//!
//! Contract:
//! - Versions: OpenFlow 1.0 (with the Nicira extensions `ovs-ofctl` uses by default: NXM flow
//!   format, NXT_FLOW_MOD, NXT_FLOW_MOD_TABLE_ID, NXST_FLOW / NXST_AGGREGATE) and OpenFlow 1.3,
//!   negotiated by HELLO (version bitmaps understood).
//! - The protocol core (`Session`) is IO-free: it takes one framed message and returns the
//!   messages to send back, acting on the bridge through the `Switch` trait. The listener
//!   (`listener.rs`) does the socket IO and implements `Switch` on top of the control registry,
//!   so a flow added over OpenFlow is journalled, logged and persisted like `uvs ctl add-flow`.
//! - A malformed or unsupported message gets an OFPT_ERROR with OVS's type and code for the
//!   negotiated version (`codec::OfErr`); the connection survives unless the framing itself is
//!   broken (a length below 8) or HELLO fails.
//! - Ports in flows are the bridge's OpenFlow port numbers (`crate::ofport`).

pub mod actions;
pub mod async_msg;
#[cfg(test)]
mod async_tests;
#[cfg(test)]
mod bad_input_tests;
pub mod codec;
mod connect;
pub mod control;
pub(crate) mod flowmod;
mod groups;
pub mod hub;
pub mod listener;
pub mod ofmatch;
pub mod roles;
mod session;
mod stats;
#[cfg(test)]
mod tests;
pub mod watch;

pub use listener::{Manager, RegistrySwitch};
pub use session::Session;

use crate::flow::{Flow, FlowFilter};

/// One port as OpenFlow describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortInfo {
    /// OpenFlow port number.
    pub ofport: u16,
    /// Port name.
    pub name: String,
    /// Link up.
    pub up: bool,
    /// Hardware address (low 48 bits; 0 when unknown).
    pub mac: u64,
    /// OFPPC configuration bits (`mod-port`; see `port_admin`).
    pub config: u32,
}

/// One port's counters (OFPST_PORT).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PortCounters {
    /// OpenFlow port number.
    pub ofport: u16,
    /// Received packets.
    pub rx_packets: u64,
    /// Sent packets.
    pub tx_packets: u64,
    /// Received bytes.
    pub rx_bytes: u64,
    /// Sent bytes.
    pub tx_bytes: u64,
    /// Received packets dropped (any drop reason of the port).
    pub rx_dropped: u64,
    /// Packets that could not be sent.
    pub tx_dropped: u64,
    /// Milliseconds since the port was added.
    pub duration_ms: u64,
}

/// One flow with its statistics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowEntry {
    /// The flow (ports as numbers).
    pub flow: Flow,
    /// Packets matched.
    pub n_packets: u64,
    /// Bytes matched.
    pub n_bytes: u64,
    /// Milliseconds since the flow was added.
    pub duration_ms: u64,
    /// Seconds since the flow was last hit.
    pub idle_age_s: u64,
}

/// What the protocol core needs from one bridge. Errors are messages for the log.
pub trait Switch {
    /// The bridge's name.
    fn bridge(&self) -> &str;
    /// Its datapath id.
    fn datapath_id(&self) -> u64;
    /// Its ports.
    fn ports(&self) -> Result<Vec<PortInfo>, String>;
    /// Its ports' counters.
    fn port_stats(&self) -> Result<Vec<PortCounters>, String>;
    /// Add (or replace) flows, all or nothing.
    fn add_flows(&self, flows: &[Flow]) -> Result<(), String>;
    /// Delete the flows `filter` selects.
    fn del_flows(&self, filter: &FlowFilter, strict: bool) -> Result<(), String>;
    /// The flows `filter` selects, with statistics.
    fn dump_flows(&self, filter: &FlowFilter) -> Result<Vec<FlowEntry>, String>;
    /// Send `frame` out of the ports numbered `outputs`.
    fn packet_out(&self, outputs: &[u16], frame: &[u8]) -> Result<(), String>;
    /// Set port `ofport`'s configuration bits of `mask` to those of `config` (OFPT_PORT_MOD;
    /// see `port_admin`).
    fn mod_port(&self, _ofport: u16, _config: u32, _mask: u32) -> Result<(), String> {
        Err("mod-port: not supported by this switch".into())
    }
    /// Write a meter, in `add-meter` syntax (`meter=N,kbps,band=type=drop,rate=R`):
    /// `add-meter` (Add) or `mod-meter` (Modify).
    fn add_meter(&self, spec: &str, write: crate::flow::EntryWrite) -> Result<(), String>;
    /// Write a group, in `add-group` syntax: `add-group` (Add) or `mod-group` (Modify).
    fn add_group(&self, _spec: &str, _write: crate::flow::EntryWrite) -> Result<(), String> {
        Err("groups are not supported here".into())
    }
    /// Remove group `id` (None: every group).
    fn del_groups(&self, _id: Option<u32>) -> Result<(), String> {
        Err("groups are not supported here".into())
    }
    /// The groups, as `dump-groups` lines.
    fn dump_groups(&self) -> Result<Vec<String>, String> {
        Ok(Vec::new())
    }
    /// Each group's counters.
    fn group_stats(&self) -> Result<Vec<GroupStatsInfo>, String> {
        Ok(Vec::new())
    }
    /// Remove meter `id` (None: every meter) and the flows that use it.
    fn del_meters(&self, _id: Option<u32>) -> Result<(), String> {
        Err("meters cannot be deleted here".into())
    }
    /// The meters, with their counters (summed over the workers).
    fn meters(&self) -> Result<Vec<MeterInfo>, String> {
        Ok(Vec::new())
    }
}

/// A group's counters as OpenFlow's group statistics show them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupStatsInfo {
    /// Group id.
    pub id: u32,
    /// Flows that send packets to it.
    pub ref_count: u32,
    /// Its age (ms since it was written).
    pub duration_ms: u64,
    /// Packets and bytes it took.
    pub packets: u64,
    pub bytes: u64,
    /// (packets, bytes) per bucket.
    pub buckets: Vec<(u64, u64)>,
}

/// A meter as OpenFlow's meter statistics and configuration show it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MeterInfo {
    /// Meter id.
    pub id: u32,
    /// Rate of its one drop band (kbit/s).
    pub rate_kbps: u32,
    /// Burst size (kbit).
    pub burst_kbits: u32,
    /// Flows that use it.
    pub flow_count: u32,
    /// Its age (ms since it was written).
    pub duration_ms: u64,
    /// Packets and bytes that reached it.
    pub packets: u64,
    pub bytes: u64,
    /// Of those, what its band dropped.
    pub band_packets: u64,
    pub band_bytes: u64,
}

/// The hardware address of netdev `name` (sysfs; 0 when it has none, e.g. a port that is not
/// a kernel device or is gone). Read by the control plane, never the worker.
pub fn netdev_mac(name: &str) -> u64 {
    if name.is_empty() || name.contains(['/', '.']) {
        return 0;
    }
    std::fs::read_to_string(format!("/sys/class/net/{name}/address"))
        .ok()
        .and_then(|t| t.trim().parse::<crate::wire::MacAddr>().ok())
        .map_or(0, |m| m.to_u64())
}

/// A filter that selects every flow.
pub fn any_flow() -> FlowFilter {
    crate::flow::parse_filter("").expect("an empty filter parses")
}

/// The hardware address OpenFlow reports for port `name` of `bridge`, of kind `kind` (as
/// `show` names it): its netdev's, read here (off the worker); for a port without a netdev in
/// uvs's namespace (patch, vxlan, a TAP moved into a container) a locally administered
/// address made from the bridge and port names (stable across restarts), as OVS gives its
/// patch and tunnel ports an address of their own. Never all zeros: controllers send LLDP
/// from the port's address (an all-zero source is dropped, `src-mac-zero`).
pub fn port_mac(bridge: &str, name: &str, kind: &str) -> u64 {
    let own = match kind {
        "patch" | "vxlan" => 0,
        _ => netdev_mac(name),
    };
    if own != 0 {
        return own;
    }
    made_mac(bridge, name)
}

/// A locally administered unicast address for port `name` of `bridge` (see [`port_mac`]).
pub fn made_mac(bridge: &str, name: &str) -> u64 {
    let h = datapath_id(&format!("{bridge}/{name}"));
    // 02:..: locally administered, unicast.
    (h & 0x00ff_ffff_ffff) | 0x0200_0000_0000
}

/// A datapath id for a bridge name (48 bits of FNV-1a, stable across restarts).
pub fn datapath_id(bridge: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bridge.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    h & 0xffff_ffff_ffff
}
