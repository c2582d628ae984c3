//! The datapath's state: bridges, the ports attached to them, their FDBs and counters, and the
//! per-port output queues. IO-free: ports' kernel resources live in the worker.
//!
//! Contract:
//! - Bridge and port ids are small integers (indices), stable while the object exists and reused
//!   after it is removed. Names are unique.
//! - Every mutation validates first and changes nothing when it fails; errors name the offending
//!   value.
//! - Packet processing lives in `pipeline`; this module owns the tables it reads.

use serde::Serialize;

use crate::counters::{BridgeCounters, PortCounters, RouterCounters};
use crate::fdb::{Fdb, PortId};
use crate::neigh::{DEFAULT_NEIGH_AGING, DEFAULT_NEIGH_CAPACITY, Neighbours};
use crate::packet::Desc;
use crate::port::PortKind;
use crate::route::{Route, RouteKind, RouteTable};
use crate::wire::MacAddr;
use crate::wire::vlan::MAX_VID;

/// Frames processed per burst.
pub const BATCH: usize = 64;
/// Default FDB aging time (seconds), as the Linux bridge and OVS.
pub const DEFAULT_AGING: u32 = 300;
/// Default FDB capacity per bridge.
pub const DEFAULT_FDB_CAPACITY: usize = 8192;
/// Most ports the datapath holds.
pub const MAX_PORTS: usize = 1024;
/// Most bridges the datapath holds (bridge ids are u16; each bridge costs ~520 KiB with the
/// default FDB).
pub const MAX_BRIDGES: usize = 1024;
/// Most FDB entries of all bridges together (the slots take 32 bytes an entry: 512 MiB).
pub const MAX_FDB_TOTAL: usize = 1 << 24;

/// A port's VLAN mode (OVS semantics).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VlanMode {
    /// Untagged frames belong to VLAN `0`; tagged frames are dropped (priority tags, VID 0,
    /// are accepted as untagged). Frames leave untagged.
    Access(u16),
    /// Tagged frames of the allowed VLANs are accepted; untagged (and priority-tagged) frames
    /// belong to VLAN 0 (the untagged domain), which a limited set carries only when it lists
    /// 0 (as OVS: `trunks=10,20` takes and sends tagged frames only, `trunks=0,10` also
    /// untagged ones). An unlimited set (OVS's default port) carries every VLAN and VLAN 0.
    Trunk(Box<VlanSet>),
    /// A trunk with a native VLAN (OVS's `vlan_mode=native-untagged` / `native-tagged`):
    /// untagged (and priority-tagged) frames belong to `vlan`, tagged ones of `vlan` or `set`
    /// are accepted; frames of `vlan` leave untagged (native-untagged) or tagged
    /// (`tagged`: native-tagged), the others tagged.
    Native {
        /// The native VLAN (1-4094).
        vlan: u16,
        /// The other VLANs carried (all: an unlimited set).
        set: Box<VlanSet>,
        /// Frames of `vlan` leave tagged (native-tagged).
        tagged: bool,
    },
}

/// A set of VLAN ids (bitmap); empty means "all".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VlanSet {
    bits: [u64; 64],
    any: bool,
}

impl VlanSet {
    /// Every VLAN.
    pub fn all() -> VlanSet {
        VlanSet {
            bits: [0; 64],
            any: true,
        }
    }

    /// Exactly these VLANs.
    pub fn of(ids: &[u16]) -> VlanSet {
        let mut s = VlanSet {
            bits: [0; 64],
            any: false,
        };
        for &v in ids {
            s.bits[(v >> 6) as usize] |= 1 << (v & 63);
        }
        s
    }

    /// True if `vid` is in the set.
    #[inline]
    pub fn contains(&self, vid: u16) -> bool {
        self.any || self.bits[(vid as usize >> 6) & 63] & (1 << (vid & 63)) != 0
    }

    /// The ids in the set (empty for "all").
    pub fn ids(&self) -> Vec<u16> {
        (0..4096u16)
            .filter(|v| !self.any && self.contains(*v))
            .collect()
    }
}

impl VlanMode {
    /// The default: a trunk of every VLAN.
    pub fn default_trunk() -> VlanMode {
        VlanMode::Trunk(Box::new(VlanSet::all()))
    }

    /// The VLAN that untagged and priority-tagged frames from this port join; None when the
    /// port does not carry them (a trunk whose list lacks VLAN 0).
    #[inline]
    pub fn untagged_vlan(&self) -> Option<u16> {
        match self {
            VlanMode::Access(v) | VlanMode::Native { vlan: v, .. } => Some(*v),
            VlanMode::Trunk(set) => set.contains(0).then_some(0),
        }
    }

    /// Whether a frame with 802.1Q id `vid` (1-4094) is taken in (an access port takes no
    /// tagged frame).
    #[inline]
    pub fn carries_tag(&self, vid: u16) -> bool {
        match self {
            VlanMode::Access(_) => false,
            VlanMode::Trunk(set) => set.contains(vid),
            VlanMode::Native { vlan, set, .. } => vid == *vlan || set.contains(vid),
        }
    }

    /// Whether the port carries bridge VLAN `v` (sends frames of it).
    #[inline]
    pub fn carries(&self, v: u16) -> bool {
        match self {
            VlanMode::Access(a) => *a == v,
            VlanMode::Trunk(set) => set.contains(v),
            VlanMode::Native { vlan, set, .. } => v == *vlan || (v != 0 && set.contains(v)),
        }
    }

    /// Whether a frame of bridge VLAN `v` leaves this port untagged (and the port carries it).
    #[inline]
    pub fn leaves_untagged(&self, v: u16) -> bool {
        match self {
            VlanMode::Access(a) => *a == v,
            VlanMode::Trunk(set) => v == 0 && set.contains(0),
            VlanMode::Native { vlan, tagged, .. } => !tagged && v == *vlan,
        }
    }

    /// The bridge VLAN of a frame this port takes in or sends out with 802.1Q id `tag` (0:
    /// untagged): an access port's own VLAN (its frames are untagged on the wire), a trunk's
    /// tag. The FDB and a tunnel's MAC -> VTEP table are keyed by it.
    #[inline]
    pub fn bridge_vlan(&self, tag: u16) -> u16 {
        match self {
            VlanMode::Access(v) => *v,
            VlanMode::Trunk(_) => tag,
            VlanMode::Native { vlan, .. } if tag == 0 => *vlan,
            VlanMode::Native { .. } => tag,
        }
    }

    /// The VLAN a static FDB entry for this port given VLAN `vlan` (0: none given) lives in:
    /// an access port's own VLAN (given or not), a VLAN a trunk carries. An error naming the
    /// field otherwise (the entry could never be used).
    pub fn fdb_vlan(&self, vlan: u16) -> Result<u16, String> {
        match self {
            VlanMode::Access(a) if vlan == 0 || vlan == *a => Ok(*a),
            VlanMode::Trunk(set) if set.contains(vlan) => Ok(vlan),
            VlanMode::Native { vlan: n, .. } if vlan == 0 => Ok(*n),
            VlanMode::Native { .. } if self.carries(vlan) => Ok(vlan),
            _ => Err(format!(
                "vlan: the port ({}) does not carry VLAN {vlan}",
                self.describe()
            )),
        }
    }

    /// Parse `vlan=N` / `trunks=N,M,...` option values (a trunk may list 0, the untagged
    /// frames).
    pub fn parse(access: Option<&str>, trunks: Option<&str>) -> Result<VlanMode, String> {
        VlanMode::parse_mode(access, trunks, None)
    }

    /// [`VlanMode::parse`] with OVS's `vlan_mode` (`access`, `trunk`, `native-untagged`,
    /// `native-tagged`; None: access with `vlan=`, else trunk). A native mode takes `vlan=`
    /// (the native VLAN, required) and `trunks=` (the other VLANs; none: all).
    pub fn parse_mode(
        access: Option<&str>,
        trunks: Option<&str>,
        mode: Option<&str>,
    ) -> Result<VlanMode, String> {
        let vid = |s: &str, field: &str, low: u16| -> Result<u16, String> {
            match s.trim().parse::<u16>() {
                Ok(v) if (low..=MAX_VID).contains(&v) => Ok(v),
                _ => Err(format!("{field}: '{s}' is not a VLAN id ({low}-{MAX_VID})")),
            }
        };
        let set = |t: Option<&str>, low: u16| -> Result<VlanSet, String> {
            let Some(t) = t else {
                return Ok(VlanSet::all());
            };
            let ids = t
                .split(',')
                .map(|s| vid(s, "trunks", low))
                .collect::<Result<Vec<_>, _>>()?;
            if let Some((_, v)) = ids.iter().enumerate().find(|(i, v)| ids[..*i].contains(v)) {
                return Err(format!("trunks: VLAN {v} is listed twice"));
            }
            Ok(VlanSet::of(&ids))
        };
        match (mode, access, trunks) {
            (Some("native-untagged" | "native-tagged"), Some(a), t) => Ok(VlanMode::Native {
                vlan: vid(a, "vlan", 1)?,
                // VLAN 0 is the native VLAN's here: a list of others starts at 1.
                set: Box::new(set(t, 1)?),
                tagged: mode == Some("native-tagged"),
            }),
            (Some(m @ ("native-untagged" | "native-tagged")), None, _) => Err(format!(
                "vlan_mode: {m} needs vlan=N (the native VLAN)"
            )),
            (Some("access"), None, _) => Err("vlan_mode: access needs vlan=N".into()),
            (Some("access"), Some(_), Some(_)) => {
                Err("vlan_mode: an access port takes no trunks=".into())
            }
            (Some("trunk"), Some(_), _) => Err(
                "vlan_mode: a trunk takes no vlan= (vlan_mode=native-untagged gives it a native VLAN)"
                    .into(),
            ),
            (Some("access" | "trunk") | None, _, _) => match (access, trunks) {
                (Some(_), Some(_)) => Err(
                    "vlan= and trunks= cannot both be set without vlan_mode=native-untagged or native-tagged"
                        .into(),
                ),
                (Some(a), None) => Ok(VlanMode::Access(vid(a, "vlan", 1)?)),
                (None, t) => Ok(VlanMode::Trunk(Box::new(set(t, 0)?))),
            },
            (Some(m), _, _) => Err(format!(
                "vlan_mode: '{m}' (access, trunk, native-untagged, native-tagged)"
            )),
        }
    }

    /// OVS's `vlan_mode` name of this mode.
    pub fn mode_name(&self) -> &'static str {
        match self {
            VlanMode::Access(_) => "access",
            VlanMode::Trunk(_) => "trunk",
            VlanMode::Native { tagged: false, .. } => "native-untagged",
            VlanMode::Native { tagged: true, .. } => "native-tagged",
        }
    }

    /// Text for `show`.
    pub fn describe(&self) -> String {
        match self {
            VlanMode::Access(v) => format!("vlan={v}"),
            VlanMode::Trunk(s) if s.any => "trunk=all".into(),
            VlanMode::Trunk(s) => format!("trunks={}", ids_text(s)),
            VlanMode::Native { vlan, set, .. } => {
                let others = if set.any {
                    "all".to_string()
                } else {
                    ids_text(set)
                };
                format!("vlan={vlan} trunks={others} vlan_mode={}", self.mode_name())
            }
        }
    }
}

/// `10,20,30`.
fn ids_text(s: &VlanSet) -> String {
    s.ids()
        .iter()
        .map(|v| v.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// A port as the datapath sees it.
#[derive(Debug)]
pub struct PortState {
    /// Name (the netdev's, for afxdp and tap).
    pub name: String,
    /// Kind.
    pub kind: PortKind,
    /// The bridge it is attached to.
    pub bridge: u16,
    /// VLAN mode.
    pub vlan: VlanMode,
    /// L3 MTU of the device.
    pub mtu: u32,
    /// Frames from this port may carry partial checksums.
    pub partial_csum_in: bool,
    /// The port takes frames with offload state as they are (partial checksums, TCP
    /// super-frames): TAP with `IFF_VNET_HDR`. Others get them finished at output.
    pub offload_out: bool,
    /// The port also takes IPv4 UDP GSO frames (AF_PACKET): VXLAN datagrams toward it are
    /// merged (`pipeline::gro`).
    pub uso_out: bool,
    /// Learn source MACs of frames received on this port (off: `learning=off` on a tunnel).
    pub learn: bool,
    /// Most source MACs learned on this port (`mac_limit=N`; `u32::MAX`: no limit). Further
    /// ones are not learned (frames to them flood) and counted in `mac_limit_refused`.
    pub mac_limit: u32,
    /// The VXLAN tunnel, for `type=vxlan` ports.
    pub tunnel: Option<Box<crate::vxlan::Tunnel>>,
    /// Shaper of the frames received from this port (`rate_rx=`).
    pub rate_rx: Option<crate::pipeline::ratelimit::Shaper>,
    /// Budget of the frames NORMAL floods from this port (`flood_rate=`; storm control).
    pub flood: crate::pipeline::flood_limit::FloodLimit,
    /// Shaper of the frames sent to this port (`rate_tx=`).
    pub rate_tx: Option<crate::pipeline::ratelimit::Shaper>,
    /// Counters.
    pub counters: PortCounters,
    /// OpenFlow port number in its bridge (see `ofport`); set by `Datapath::add_port`, which
    /// takes a non-zero value here as the `ofport_request`.
    pub ofport: u16,
    /// Held until this time (ms, the worker's clock; 0: not held): the worker neither reads
    /// the port nor sends to it (frames toward it are dropped as `port-held`). See
    /// `PortSpec::hold`.
    pub held_until_ms: u64,
    /// OpenFlow configuration bits (`mod-port`: down, no-receive, no-forward, no-flood,
    /// no-packet-in); clear when added.
    pub config: crate::port_admin::PortConfig,
    /// When it was added (ms, the worker's clock): OpenFlow port statistics' duration.
    pub added_ms: u64,
}

impl PortState {
    /// A port in `bridge` with zeroed counters, learning on, no tunnel, complete checksums.
    pub fn new(name: &str, kind: PortKind, bridge: u16, vlan: VlanMode, mtu: u32) -> PortState {
        PortState {
            name: name.to_string(),
            kind,
            bridge,
            vlan,
            mtu,
            partial_csum_in: false,
            offload_out: false,
            uso_out: false,
            learn: true,
            mac_limit: u32::MAX,
            rate_rx: None,
            rate_tx: None,
            flood: Default::default(),
            tunnel: None,
            counters: PortCounters::default(),
            ofport: 0,
            held_until_ms: 0,
            config: Default::default(),
            added_ms: 0,
        }
    }

    /// Whether the port is held at `now_ms` (see `held_until_ms`).
    #[inline]
    pub fn held(&self, now_ms: u64) -> bool {
        self.held_until_ms > now_ms
    }
}

/// A bridge's gateway interface (docker0's address, VPP's BVI): answers ARP and ICMP echo for
/// `ip`, and routes frames sent to `mac`. It sits in the bridge's untagged domain (VLAN 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gateway {
    /// Address.
    pub ip: [u8; 4],
    /// Prefix length of the connected subnet.
    pub len: u8,
    /// MAC of the gateway.
    pub mac: MacAddr,
}

impl Gateway {
    /// A gateway MAC derived from the bridge name alone (02:75:76 followed by 24 bits of an
    /// FNV-1a hash of the name): for tests and benches. The daemon uses [`Gateway::host_mac`].
    pub fn default_mac(bridge: &str) -> MacAddr {
        Gateway::host_mac(&[], bridge)
    }

    /// The gateway's MAC when none is configured: locally administered, stable for a host and a
    /// bridge name, different between hosts (02:75:76 followed by 24 bits of an FNV-1a hash of
    /// the host id and the name). `host` is [`crate::host::host_id`], passed in by the control
    /// plane: two hosts naming their uplink bridge alike get different MACs on the underlay.
    pub fn host_mac(host: &[u8], bridge: &str) -> MacAddr {
        let fnv = |h: u64, b: &u8| (h ^ *b as u64).wrapping_mul(0x100_0000_01b3);
        let mut h = host.iter().fold(0xcbf2_9ce4_8422_2325u64, fnv);
        if !host.is_empty() {
            h = fnv(h, &0);
        }
        let h = bridge.as_bytes().iter().fold(h, fnv);
        MacAddr([0x02, 0x75, 0x76, (h >> 16) as u8, (h >> 8) as u8, h as u8])
    }

    /// Whether `ip` lies in the connected subnet.
    #[inline]
    pub fn on_subnet(&self, ip: [u8; 4]) -> bool {
        let m = crate::route::mask(self.len);
        u32::from_be_bytes(ip) & m == u32::from_be_bytes(self.ip) & m
    }

    /// The subnet as `(network, len)`.
    pub fn subnet(&self) -> (std::net::Ipv4Addr, u8) {
        let m = crate::route::mask(self.len);
        (
            std::net::Ipv4Addr::from(u32::from_be_bytes(self.ip) & m),
            self.len,
        )
    }

    /// True if `ip` is the subnet's directed broadcast address (its host bits all ones), which
    /// Linux makes a broadcast route of for subnets up to /30 (/31 and /32 have none).
    #[inline]
    pub fn is_broadcast(&self, ip: [u8; 4]) -> bool {
        // The host bits: `!mask(len)` without its branch for /0 (none for /32).
        let host = u32::MAX.checked_shr(u32::from(self.len)).unwrap_or(0);
        self.len < 31 && u32::from_be_bytes(ip) == u32::from_be_bytes(self.ip) | host
    }

    /// True if `ip` is the subnet's network or broadcast address (no host has it).
    pub fn is_subnet_edge(&self, ip: std::net::Ipv4Addr) -> bool {
        let (net, len) = self.subnet();
        let bcast = u32::from(net) | !crate::route::mask(len);
        u32::from(ip) == u32::from(net) || u32::from(ip) == bcast
    }
}

/// A bridge: an isolated L2 domain.
pub struct Bridge {
    /// Name.
    pub name: String,
    /// Learned and static MACs.
    pub fdb: Fdb,
    /// Aging time in seconds.
    pub aging: u32,
    /// Member ports, in the order they were added.
    pub ports: Vec<PortId>,
    /// Learning counters.
    pub counters: BridgeCounters,
    /// The gateway interface, if the bridge has an address.
    pub gateway: Option<Gateway>,
    /// The smallest MTU of the bridge's ports (what a routed packet must fit), kept up to date
    /// as ports come and go; 1500 without ports.
    pub l3_mtu: u32,
    /// The bridge's flow tables (default: one flow, `priority=0,actions=NORMAL`).
    pub flows: crate::pipeline::flows::FlowTable,
    /// Docker's network isolation: no routed traffic to or from another isolated bridge
    /// (counted `bridge-isolated`); non-isolated bridges stay reachable both ways.
    pub isolated: bool,
    /// Inter-container communication: off drops port-to-port frames inside the bridge, flooded
    /// or unicast (counted `icc-denied`); frames to and from the gateway still pass.
    pub icc: bool,
    /// Reverse-path filtering of routed packets from this bridge (counted `rp-filter`).
    pub rp_filter: crate::route::RpFilter,
    /// OpenFlow fail-open: the bridge has controllers, fail mode standalone and none is
    /// connected, so its flows are bypassed and it is a learning switch (NORMAL).
    pub fail_open: bool,
    /// The second (datapath clock) of the last "FDB full" warning: at most one a second.
    pub fdb_full_warned: u32,
}

/// Options for a new bridge.
#[derive(Debug, Clone)]
pub struct BridgeOptions {
    /// FDB capacity.
    pub fdb_capacity: usize,
    /// Aging time in seconds.
    pub aging: u32,
}

impl Default for BridgeOptions {
    fn default() -> Self {
        BridgeOptions {
            fdb_capacity: DEFAULT_FDB_CAPACITY,
            aging: DEFAULT_AGING,
        }
    }
}

/// A row of `fdb-show`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct FdbRow {
    /// Port name.
    pub port: String,
    /// VLAN id (0 = untagged).
    pub vlan: u16,
    /// MAC, as text.
    pub mac: String,
    /// Seconds since last seen.
    pub age: u32,
    /// Static entry.
    #[serde(rename = "static")]
    pub is_static: bool,
    /// For MACs behind a VXLAN port: the remote VTEP's address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote: Option<String>,
}

/// Bridges, ports, the router's tables and output queues.
pub struct Datapath {
    pub(crate) bridges: Vec<Option<Bridge>>,
    pub(crate) ports: Vec<Option<PortState>>,
    /// Frames queued for each port's next tx burst (index = port id).
    pub out: Vec<Vec<Desc>>,
    /// Connected and static routes.
    pub routes: RouteTable,
    /// The ARP cache of every bridge's gateway.
    pub neigh: Neighbours,
    /// Router counters.
    pub router: RouterCounters,
    /// The rate limit of the ICMP errors the router sends.
    pub icmp_limit: crate::pipeline::local_refuse::IcmpLimit,
    /// NAT rules and tracked connections.
    pub nat: crate::nat::Nat,
    /// Ports that are VXLAN tunnels (the encapsulation stage drains their queues).
    pub tunnels: Vec<PortId>,
    /// The tunnels' distinct UDP destination ports (for merging their datagrams at output:
    /// `pipeline::uso`), kept with `tunnels`.
    pub tunnel_udp_ports: crate::udp_port_set::UdpPortSet,
    /// The tunnels' distinct local addresses (a bridge whose gateway has one is a VTEP's
    /// underlay: `pipeline::vxlan_input`), kept with `tunnels`.
    pub tunnel_locals: Vec<[u8; 4]>,
    /// DNS queries to gateways, handed to the DNS service (see `dns::punt`).
    pub punt: crate::dns::punt::Punt,
    /// Fragmented datagrams to the switch's own addresses (VXLAN), put back together.
    pub reassembly: crate::pipeline::reassembly::Reassembly,
    /// Milliseconds on the worker's clock (flow counters, timeouts, meters), set before each
    /// burst by the caller.
    pub now_ms: u64,
    neigh_aged_at: u32,
    /// When flow timeouts were last checked (or, on a worker that does not decide them, the
    /// use of short idle-timed flows last reported): at most once a tenth of a second.
    flows_checked_ms: u64,
    /// When the use of every idle-timed flow was last reported (a worker that does not
    /// decide timeouts): once a second.
    flows_reported_ms: u64,
    /// Events for the control plane (packet-in, flow removed, port status).
    pub events: crate::events::EventSink,
    /// What this worker learned during the current burst, for the other workers (see
    /// `learned`); None: the only worker, nothing recorded.
    pub learned_out: Option<Vec<crate::learned::Learned>>,
    /// False on every worker but the first when several run: flow timeouts are decided by
    /// worker 0 alone (from every worker's use of the flows, see `learned`), which tells the
    /// others what expired.
    pub expires_flows: bool,
    /// Bumped by [`Datapath::changed`]: what forwarding remembers across bursts is good only
    /// while this holds.
    epoch: u64,
}

impl Default for Datapath {
    fn default() -> Self {
        Datapath {
            bridges: Vec::new(),
            ports: Vec::new(),
            out: Vec::new(),
            routes: RouteTable::new(),
            neigh: Neighbours::new(DEFAULT_NEIGH_CAPACITY, DEFAULT_NEIGH_AGING),
            router: RouterCounters::default(),
            icmp_limit: Default::default(),
            nat: crate::nat::Nat::default(),
            tunnels: Vec::new(),
            tunnel_udp_ports: Default::default(),
            tunnel_locals: Vec::new(),
            punt: Default::default(),
            reassembly: Default::default(),
            now_ms: 0,
            neigh_aged_at: 0,
            flows_checked_ms: 0,
            flows_reported_ms: 0,
            events: crate::events::EventSink::default(),
            learned_out: None,
            expires_flows: true,
            epoch: 0,
        }
    }
}

impl Datapath {
    /// An empty datapath.
    pub fn new() -> Datapath {
        Datapath::default()
    }

    /// Say that the datapath changed other than by forwarding frames: configuration (bridges,
    /// ports, gateways, routes, tunnels, flows, NAT), tables changed from outside (FDB flushes,
    /// aging, records learned by other workers). Whoever changes it so calls this (the worker
    /// for every request and housekeeping pass, a test harness before every run); decisions
    /// forwarding remembers across bursts (`vxlan4-input`'s template) are then made afresh.
    pub fn changed(&mut self) {
        self.epoch = self.epoch.wrapping_add(1);
    }

    /// See [`Datapath::changed`].
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Set, change or remove (`None`) the gateway of bridge `id`: the connected route follows.
    /// Refused when the subnet's route already belongs to something else or the address is
    /// another bridge's gateway.
    pub fn set_gateway(&mut self, id: u16, gw: Option<Gateway>) -> Result<(), String> {
        let b = self.bridge(id).ok_or_else(|| format!("no bridge #{id}"))?;
        let old = b.gateway;
        let name = b.name.clone();
        if let Some(g) = gw {
            let ip = std::net::Ipv4Addr::from(g.ip);
            if g.len == 0 || g.len > 30 {
                return Err(format!(
                    "gateway: prefix length /{} out of range (1 to 30)",
                    g.len
                ));
            }
            // Addresses a host cannot be on a LAN with (Linux and Docker refuse them): the
            // gateway would answer ARP for them on the wire (found trying uvs as a new user).
            if let Some(why) = not_lan_unicast(g.ip) {
                return Err(format!(
                    "gateway: {ip} is not a unicast address a LAN can use ({why})"
                ));
            }
            let (net, len) = g.subnet();
            if g.is_subnet_edge(ip) {
                return Err(format!(
                    "gateway: {ip}/{len} is the network or broadcast address"
                ));
            }
            for (oid, other) in self.bridges() {
                if oid != id && other.gateway.is_some_and(|o| o.ip == g.ip) {
                    return Err(format!(
                        "gateway: {ip} is already bridge '{}''s address",
                        other.name
                    ));
                }
            }
            if let Some(r) = self.routes.get(net, len)
                && r.kind != (RouteKind::Connected { bridge: id })
            {
                return Err(format!(
                    "gateway: route {net}/{len} exists already ({}); delete it first",
                    self.route_text(r)
                ));
            }
        }
        if let Some(o) = old {
            let (net, len) = o.subnet();
            let _ = self.routes.del(net, len);
        }
        if let Some(g) = gw {
            let (net, len) = g.subnet();
            if self.routes.get(net, len).is_none() {
                self.routes
                    .add(Route {
                        prefix: net,
                        len,
                        kind: RouteKind::Connected { bridge: id },
                    })
                    .map_err(|e| e.to_string())?;
            }
        }
        let _ = name;
        self.neigh.flush_bridge(id);
        if let Some(b) = self.bridge_mut(id) {
            b.gateway = gw;
        }
        Ok(())
    }

    /// The id of bridge `name`.
    pub fn bridge_id(&self, name: &str) -> Option<u16> {
        self.bridges
            .iter()
            .position(|b| b.as_ref().is_some_and(|b| b.name == name))
            .map(|i| i as u16)
    }

    /// The id of port `name`.
    pub fn port_id(&self, name: &str) -> Option<PortId> {
        self.ports
            .iter()
            .position(|p| p.as_ref().is_some_and(|p| p.name == name))
            .map(|i| i as PortId)
    }

    /// Bridge by id.
    pub fn bridge(&self, id: u16) -> Option<&Bridge> {
        self.bridges.get(id as usize).and_then(|b| b.as_ref())
    }

    /// Bridge by id, mutable.
    pub fn bridge_mut(&mut self, id: u16) -> Option<&mut Bridge> {
        self.bridges.get_mut(id as usize).and_then(|b| b.as_mut())
    }

    /// Port by id.
    pub fn port(&self, id: PortId) -> Option<&PortState> {
        self.ports.get(id as usize).and_then(|p| p.as_ref())
    }

    /// Port by id, mutable.
    pub fn port_mut(&mut self, id: PortId) -> Option<&mut PortState> {
        self.ports.get_mut(id as usize).and_then(|p| p.as_mut())
    }

    /// Bridges with their ids.
    pub fn bridges(&self) -> impl Iterator<Item = (u16, &Bridge)> {
        self.bridges
            .iter()
            .enumerate()
            .filter_map(|(i, b)| b.as_ref().map(|b| (i as u16, b)))
    }

    /// Ports with their ids.
    pub fn ports(&self) -> impl Iterator<Item = (PortId, &PortState)> {
        self.ports
            .iter()
            .enumerate()
            .filter_map(|(i, p)| p.as_ref().map(|p| (i as PortId, p)))
    }

    /// Add a bridge. Fails if the name is taken or invalid.
    pub fn add_bridge(&mut self, name: &str, opts: &BridgeOptions) -> Result<u16, String> {
        validate_name(name, "bridge")?;
        if self.bridge_id(name).is_some() {
            return Err(format!("bridge '{name}' already exists"));
        }
        if opts.fdb_capacity == 0 || opts.fdb_capacity > 16 << 20 {
            return Err(format!(
                "fdb_capacity: {} out of range (1 to 16777216)",
                opts.fdb_capacity
            ));
        }
        let count = self.bridges.iter().flatten().count();
        if count >= MAX_BRIDGES {
            return Err(format!(
                "too many bridges (limit {MAX_BRIDGES}); delete one first"
            ));
        }
        let total: usize = self.bridges().map(|(_, b)| b.fdb.capacity()).sum();
        check_fdb_total(total, opts.fdb_capacity)?;
        let b = Bridge {
            name: name.to_string(),
            fdb: Fdb::new(opts.fdb_capacity),
            aging: opts.aging,
            ports: Vec::new(),
            counters: BridgeCounters::default(),
            gateway: None,
            l3_mtu: 1500,
            flows: Default::default(),
            isolated: false,
            icc: true,
            rp_filter: Default::default(),
            fail_open: false,
            fdb_full_warned: u32::MAX,
        };
        let slot = self.bridges.iter().position(|b| b.is_none());
        Ok(match slot {
            Some(i) => {
                self.bridges[i] = Some(b);
                i as u16
            }
            None => {
                self.bridges.push(Some(b));
                (self.bridges.len() - 1) as u16
            }
        })
    }

    /// A route as users read it: `10.9.0.0/24 connected bridge br0`, `0.0.0.0/0 via
    /// 198.18.0.254 bridge up` (the route table's own text names bridge ids).
    pub fn route_text(&self, r: &Route) -> String {
        let name = |b: u16| self.bridge(b).map_or(format!("#{b}"), |x| x.name.clone());
        match r.kind {
            RouteKind::Connected { bridge } => {
                format!("{}/{} connected bridge {}", r.prefix, r.len, name(bridge))
            }
            RouteKind::Via { gateway, bridge } => {
                format!(
                    "{}/{} via {gateway} bridge {}",
                    r.prefix,
                    r.len,
                    name(bridge)
                )
            }
        }
    }

    /// Why bridge `id`'s gateway may not become `new` now, naming what depends on the one it
    /// has (as `del-br` refuses a bridge that carries static routes): a static route whose next
    /// hop would leave the gateway's subnet, a masquerade rule translating to its address
    /// (when the address goes or changes), a port mapping on it (when it goes).
    pub fn gateway_change_refused(&self, id: u16, new: Option<Gateway>) -> Option<String> {
        let b = self.bridge(id)?;
        let old = b.gateway?;
        if let Some(why) = self.tunnels_refuse(id, new) {
            return Some(why);
        }
        let on_new = |ip: std::net::Ipv4Addr| new.is_some_and(|g| g.on_subnet(ip.octets()));
        let routes: Vec<String> = self
            .routes
            .iter()
            .filter(|r| {
                matches!(r.kind, RouteKind::Via { bridge, gateway } if bridge == id && !on_new(gateway))
            })
            .map(|r| self.route_text(r))
            .collect();
        if !routes.is_empty() {
            return Some(format!(
                "gateway: static routes use bridge '{}''s subnet ({}); delete them first",
                b.name,
                routes.join(", ")
            ));
        }
        let nat = self.nat.rules.iter().filter(|r| match r {
            crate::nat::NatRule::Source { out, to: None, .. } => {
                *out == id && new.is_none_or(|g| g.ip != old.ip)
            }
            crate::nat::NatRule::Dest { inb, .. } => *inb == id && new.is_none(),
            _ => false,
        });
        let n = nat.count();
        (n > 0).then(|| {
            format!(
                "gateway: {n} NAT rule(s) use bridge '{}''s gateway address (nat-show); delete them first",
                b.name
            )
        })
    }

    /// Why bridge `id`'s gateway may not become `new` (None: go, with its bridge or alone):
    /// VXLAN ports elsewhere whose `local_ip` is its address (their underlay). Found trying uvs
    /// as a new user: the change was taken, the tunnels were left up with no underlay
    /// (`inner_mtu=0`), and the database they were saved in refused to start.
    pub fn tunnels_refuse(&self, id: u16, new: Option<Gateway>) -> Option<String> {
        let b = self.bridge(id)?;
        let old = b.gateway?;
        if new.is_some_and(|g| g.ip == old.ip) {
            return None;
        }
        let users: Vec<&str> = self
            .ports()
            .filter(|(_, p)| p.tunnel.as_ref().is_some_and(|t| t.conf.local_ip == old.ip))
            .map(|(_, p)| p.name.as_str())
            .collect();
        (!users.is_empty()).then(|| {
            format!(
                "gateway: vxlan port(s) {} use bridge '{}''s address {} as local_ip (their underlay); delete them first",
                users.join(", "),
                b.name,
                std::net::Ipv4Addr::from(old.ip)
            )
        })
    }

    /// Why bridge `id` may not be removed now, before anything of it is: static routes through
    /// it, VXLAN ports elsewhere using its gateway as their underlay.
    pub fn del_bridge_refused(&self, id: u16) -> Option<String> {
        let b = self.bridge(id)?;
        let used: Vec<String> = self
            .routes
            .iter()
            .filter(|r| matches!(r.kind, RouteKind::Via { bridge, .. } if bridge == id))
            .map(|r| self.route_text(r))
            .collect();
        if !used.is_empty() {
            return Some(format!(
                "bridge '{}' carries static routes ({}); delete them first",
                b.name,
                used.join(", ")
            ));
        }
        self.tunnels_refuse(id, None)
    }

    /// Remove a bridge. Fails while it still has ports (the caller removes them first, since
    /// their kernel resources live elsewhere).
    pub fn del_bridge(&mut self, id: u16) -> Result<(), String> {
        let b = self.bridge(id).ok_or_else(|| format!("no bridge #{id}"))?;
        if !b.ports.is_empty() {
            return Err(format!("bridge '{}' still has ports", b.name));
        }
        if let Some(why) = self.del_bridge_refused(id) {
            return Err(why);
        }
        self.set_gateway(id, None)?;
        self.nat.del_bridge(id);
        self.bridges[id as usize] = None;
        Ok(())
    }

    /// The id a new port would get.
    pub fn next_port_id(&self) -> Result<PortId, String> {
        self.next_port_id_avoiding(&[])
    }

    /// [`Datapath::next_port_id`], skipping the ids in `busy` (ports still being closed).
    pub fn next_port_id_avoiding(&self, busy: &[PortId]) -> Result<PortId, String> {
        let free = |i: usize| !busy.contains(&(i as PortId));
        match self
            .ports
            .iter()
            .enumerate()
            .position(|(i, p)| p.is_none() && free(i))
        {
            Some(i) => Ok(i as PortId),
            None => (self.ports.len()..MAX_PORTS)
                .find(|&i| free(i))
                .map(|i| i as PortId)
                .ok_or_else(|| format!("too many ports (limit {MAX_PORTS})")),
        }
    }

    /// The OpenFlow port number a new port `name` of bridge `bridge` would get (`request`:
    /// `ofport_request`), or why it cannot have one. Changes nothing.
    pub fn choose_ofport(
        &self,
        bridge: u16,
        name: &str,
        request: Option<u16>,
    ) -> Result<u16, String> {
        let ft = &self
            .bridge(bridge)
            .ok_or_else(|| format!("no bridge #{bridge}"))?
            .flows;
        if request == Some(crate::ofport::OFPP_LOCAL) {
            return ft.ports.choose_local().map_err(|e| e.to_string());
        }
        let used = ft.referenced();
        ft.ports
            .choose(name, request.map(u32::from), &|n| used.contains(&n))
            .map_err(|e| e.to_string())
    }

    /// The error for adding a port whose name port `id` has: names the bridge it is in (an
    /// `add-port` onto another bridge did not say where the name was taken).
    pub fn port_exists(&self, id: PortId) -> String {
        let Some(p) = self.port(id) else {
            return format!("port #{id} already exists");
        };
        let bridge = self.bridge(p.bridge).map_or("?", |b| b.name.as_str());
        format!("port '{}' already exists (in bridge '{bridge}')", p.name)
    }

    /// Attach a port (whose IO object the caller holds) under id `id` from `next_port_id`. It
    /// gets an OpenFlow port number in its bridge: `state.ofport` if non-zero (the request),
    /// else as `OfPorts::choose` decides. Returns nothing; `port(id).ofport` has the number.
    pub fn add_port(&mut self, id: PortId, mut state: PortState) -> Result<(), String> {
        validate_name(&state.name, "port")?;
        if let Some(old) = self.port_id(&state.name) {
            return Err(self.port_exists(old));
        }
        let bridge = state.bridge;
        if self.bridge(bridge).is_none() {
            return Err(format!("no bridge #{bridge}"));
        }
        let i = id as usize;
        if i > self.ports.len() || self.ports.get(i).is_some_and(|p| p.is_some()) {
            return Err(format!("port id {id} is not free"));
        }
        let request = (state.ofport != 0).then_some(state.ofport);
        state.ofport = self.choose_ofport(bridge, &state.name, request)?;
        state.added_ms = self.now_ms;
        if i == self.ports.len() {
            self.ports.push(None);
            self.out.push(Vec::with_capacity(BATCH * 2));
        }
        let (name, ofport) = (state.name.clone(), state.ofport);
        self.ports[i] = Some(state);
        if let Some(b) = self.bridge_mut(bridge) {
            b.ports.push(id);
            b.flows.ports.insert(&name, ofport, id);
            b.flows.emc.clear();
        }
        self.update_all_l3_mtu();
        Ok(())
    }

    /// Detach a port: forget it and the MACs learned on it. Its queued output is returned so the
    /// caller can free the frames.
    pub fn del_port(&mut self, id: PortId) -> Result<Vec<Desc>, String> {
        let p = self
            .ports
            .get_mut(id as usize)
            .and_then(|p| p.take())
            .ok_or_else(|| format!("no port #{id}"))?;
        // The gateway's neighbours are untagged (VLAN 0): each one's MAC is looked up, not
        // the whole FDB scanned.
        if let Some(Some(b)) = self.bridges.get(p.bridge as usize) {
            self.neigh
                .forget_macs(p.bridge, |mac| b.fdb.lookup(0, mac) == Some(id));
        }
        if let Some(b) = self.bridge_mut(p.bridge) {
            b.ports.retain(|&x| x != id);
            b.fdb.flush(Some(id));
            b.flows.ports.remove(&p.name);
            b.flows.emc.clear();
        }
        self.update_l3_mtu(p.bridge);
        self.refresh_tunnels();
        let mut left = std::mem::take(&mut self.out[id as usize]);
        for s in [p.rate_rx, p.rate_tx].iter_mut().flatten() {
            left.extend(s.drain());
        }
        Ok(left)
    }

    /// Whether frames wait in a port's rate limit (the worker then sleeps at most 1 ms).
    pub fn rate_limited_waiting(&self) -> bool {
        self.ports.iter().flatten().any(|p| {
            p.rate_rx.as_ref().is_some_and(|s| s.is_waiting())
                || p.rate_tx.as_ref().is_some_and(|s| s.is_waiting())
        })
    }

    /// The MTU inner frames of tunnel port `p` can have: its underlay bridge's MTU minus the 50
    /// bytes of encapsulation (the underlay is the bridge whose gateway is the local address).
    pub fn inner_mtu(&self, p: PortId) -> Option<u32> {
        let t = self.port(p)?.tunnel.as_ref()?;
        let (_, b) = self
            .bridges()
            .find(|(_, b)| b.gateway.is_some_and(|g| g.ip == t.conf.local_ip))?;
        Some(b.l3_mtu.saturating_sub(crate::wire::vxlan::OVERHEAD as u32))
    }

    /// Recompute the list of tunnel ports (after a port change), and the routed MTUs that
    /// depend on them.
    pub fn refresh_tunnels(&mut self) {
        self.tunnels = self
            .ports()
            .filter(|(_, p)| p.tunnel.is_some())
            .map(|(id, _)| id)
            .collect();
        let tunnels = || self.ports().filter_map(|(_, p)| p.tunnel.as_ref());
        let udp = crate::udp_port_set::UdpPortSet::new(tunnels().map(|t| t.conf.dst_port));
        let locals = sorted_distinct(tunnels().map(|t| t.conf.local_ip));
        (self.tunnel_udp_ports, self.tunnel_locals) = (udp, locals);
        self.update_all_l3_mtu();
    }

    /// Recompute every bridge's routed MTU (a tunnel's inner MTU follows its underlay bridge).
    /// Two passes: a tunnel's underlay is settled by the first.
    fn update_all_l3_mtu(&mut self) {
        let ids: Vec<u16> = self.bridges().map(|(id, _)| id).collect();
        for _ in 0..2 {
            for &b in &ids {
                self.update_l3_mtu(b);
            }
        }
    }

    /// The tunnel port for VXLAN packets to `local:dst_port` with `vni`.
    #[inline]
    pub fn tunnel_for(&self, local: [u8; 4], dst_port: u16, vni: u32) -> Option<PortId> {
        self.tunnels.iter().copied().find(|&p| {
            self.port(p)
                .and_then(|s| s.tunnel.as_ref())
                .is_some_and(|t| {
                    t.conf.local_ip == local && t.conf.dst_port == dst_port && t.conf.vni == vni
                })
        })
    }

    /// True if some tunnel listens on `local:dst_port`.
    #[inline]
    pub fn tunnel_listens(&self, local: [u8; 4], dst_port: u16) -> bool {
        self.tunnels.iter().any(|&p| {
            self.port(p)
                .and_then(|s| s.tunnel.as_ref())
                .is_some_and(|t| t.conf.local_ip == local && t.conf.dst_port == dst_port)
        })
    }

    /// Recompute a bridge's routed MTU (after a port change, or a port's MTU change): the
    /// smallest of its ports' MTUs, a VXLAN port counting with its inner MTU (underlay MTU - 50),
    /// so a routed packet too big for the tunnel gets ICMP fragmentation needed with DF set.
    pub fn update_l3_mtu(&mut self, bridge: u16) {
        let Some(b) = self.bridge(bridge) else { return };
        let mtu = b
            .ports
            .iter()
            .filter_map(|&p| {
                let s = self.port(p)?;
                Some(match s.tunnel {
                    Some(_) => self.inner_mtu(p).unwrap_or(s.mtu),
                    None => s.mtu,
                })
            })
            .min()
            .unwrap_or(1500);
        if let Some(b) = self.bridge_mut(bridge) {
            b.l3_mtu = mtu;
        }
    }

    /// FDB rows of a bridge, sorted by port, VLAN, MAC (the whole table at once: tests and
    /// small tables; `fdb_rows_page` for the worker).
    pub fn fdb_rows(&self, bridge: u16, now: u32) -> Vec<FdbRow> {
        let mut rows = self.fdb_rows_page(bridge, now, 0, usize::MAX).0;
        sort_fdb_rows(&mut rows);
        rows
    }

    /// Unsorted FDB rows of at most `slots` table slots from `from`, and where the next page
    /// starts (see `Fdb::page`): bounded work per call, so showing a large FDB never stalls
    /// the worker.
    pub fn fdb_rows_page(
        &self,
        bridge: u16,
        now: u32,
        from: usize,
        slots: usize,
    ) -> (Vec<FdbRow>, Option<usize>) {
        let Some(b) = self.bridge(bridge) else {
            return (Vec::new(), None);
        };
        let (entries, next) = b.fdb.page(from, slots);
        (entries.iter().map(|e| self.fdb_row(e, now)).collect(), next)
    }

    /// The static FDB entries of a bridge (for the running configuration), without building
    /// rows for the learned ones.
    pub fn fdb_static_rows(&self, bridge: u16) -> Vec<FdbRow> {
        let Some(b) = self.bridge(bridge).filter(|b| b.fdb.static_count() != 0) else {
            return Vec::new();
        };
        let mut rows: Vec<FdbRow> = b
            .fdb
            .iter()
            .filter(|e| e.is_static)
            .map(|e| self.fdb_row(&e, 0))
            .collect();
        sort_fdb_rows(&mut rows);
        rows
    }

    fn fdb_row(&self, e: &crate::fdb::Entry, now: u32) -> FdbRow {
        FdbRow {
            port: self
                .port(e.port)
                .map(|p| p.name.clone())
                .unwrap_or_else(|| format!("#{}", e.port)),
            vlan: e.vlan,
            mac: crate::wire::MacAddr::from_u64(e.mac).to_string(),
            age: now.saturating_sub(e.stamp),
            is_static: e.is_static,
            remote: self
                .port(e.port)
                .and_then(|p| p.tunnel.as_ref())
                .and_then(|t| t.remote_of(e.vlan, e.mac))
                .map(|ip| std::net::Ipv4Addr::from(ip).to_string()),
        }
    }

    /// Remove the flows whose idle or hard timeout has passed at `now_ms` (this worker decides
    /// timeouts), telling the other workers and the controllers.
    fn expire_flows(&mut self) {
        let now_ms = self.now_ms;
        for (bid, b) in self.bridges.iter_mut().enumerate() {
            let Some(b) = b.as_mut().filter(|b| b.flows.active) else {
                continue;
            };
            let gone = b.flows.cls.expire_flows(now_ms);
            if gone.is_empty() {
                continue;
            }
            b.flows.refresh();
            if let Some(out) = self.learned_out.as_mut() {
                out.extend(gone.iter().map(|e| crate::learned::Learned::FlowExpired {
                    bridge: bid as u16,
                    id: e.id.0,
                    flow: Box::new(e.flow.clone()),
                }));
            }
            crate::events::flows_removed(&self.events, &b.name, gone, now_ms);
        }
    }

    /// Another worker decides flow timeouts: tell it which flows with an idle timeout under
    /// `below` seconds this one used since `since_ms`.
    fn report_flows_used(&mut self, since_ms: u64, below: u16) {
        let Some(out) = self.learned_out.as_mut() else {
            return;
        };
        for (bid, b) in self.bridges.iter().enumerate() {
            let Some(b) = b.as_ref().filter(|b| b.flows.active) else {
                continue;
            };
            out.extend(
                b.flows
                    .cls
                    .idle_used_since(since_ms)
                    .filter(|(_, f, _)| f.idle_timeout < below)
                    .map(|(id, f, used_ms)| crate::learned::Learned::FlowUsed {
                        bridge: bid as u16,
                        id: id.0,
                        hash: crate::learned::flow_hash(f),
                        used_ms,
                    }),
            );
        }
    }

    /// Housekeeping: age every bridge's FDB by `budget` slots (fewer each with more than 8
    /// bridges), expire neighbours and tracked connections. Returns FDB entries removed.
    pub fn age_fdbs(&mut self, now: u32, budget: usize) -> usize {
        self.changed();
        // Flow timeouts every tenth of a second (once a second left a 1 s idle_timeout flow
        // installed for up to 1.6 s: found trying uvs as a new user, against OVS's ~1.05 s);
        // the workers that do not decide them report the use of flows with short idle timeouts
        // (under 10 s) as often, the others once a second.
        if self.now_ms / 100 != self.flows_checked_ms / 100 {
            if self.expires_flows {
                self.expire_flows();
            } else {
                self.report_flows_used(self.flows_checked_ms, SHORT_IDLE_S);
            }
            self.flows_checked_ms = self.now_ms;
        }
        if now != self.neigh_aged_at {
            // Whole-table scans: once per second is plenty.
            self.neigh.age(now);
            self.neigh_aged_at = now;
            if !self.expires_flows {
                self.report_flows_used(self.flows_reported_ms, u16::MAX);
                self.flows_reported_ms = self.now_ms;
            }
            for b in self.bridges.iter_mut().flatten() {
                b.flows.ct.expire(now, 4096);
            }
        }
        self.nat.ct.expire(now, budget);
        // `budget` slots per bridge, but at most ~8 budgets in all however many bridges there
        // are (at least 64 slots each), so one pass stays bounded with a thousand bridges.
        let bridges = self.bridges.iter().flatten().count().max(1);
        let per = (budget * 8 / bridges).clamp(64.min(budget), budget);
        let mut n = 0;
        for b in self.bridges.iter_mut().flatten() {
            let r = b.fdb.age(now, b.aging, per);
            b.counters.aged += r as u64;
            n += r;
        }
        n
    }
}

impl Datapath {
    /// Give bridge `b`'s FDB room for `capacity` entries, keeping its entries (see
    /// [`Fdb::resized`]). Refused out of range, beyond the bridges' total, or below the
    /// bridge's static entries.
    pub fn set_fdb_capacity(&mut self, b: u16, capacity: usize, now: u32) -> Result<(), String> {
        if capacity == 0 || capacity > 16 << 20 {
            return Err(format!(
                "fdb_capacity: {capacity} out of range (1 to 16777216)"
            ));
        }
        let others: usize = self
            .bridges()
            .filter(|(i, _)| *i != b)
            .map(|(_, x)| x.fdb.capacity())
            .sum();
        check_fdb_total(others, capacity)?;
        let br = self.bridge_mut(b).ok_or("no such bridge")?;
        if br.fdb.capacity() == capacity {
            return Ok(());
        }
        let statics = br.fdb.static_count();
        if statics > capacity {
            return Err(format!(
                "fdb_capacity: {capacity} is below the bridge's {statics} static entries"
            ));
        }
        br.fdb = br.fdb.resized(capacity, now);
        self.changed();
        Ok(())
    }
}

/// Idle timeouts below this many seconds are reported to the deciding worker every tenth of a
/// second (where a second's lag matters), longer ones once a second.
const SHORT_IDLE_S: u16 = 10;

/// Why `ip` cannot be a host on a LAN (multicast, loopback, 0.0.0.0/8, 240.0.0.0/4 with the
/// broadcast address), or None for a usable unicast address.
pub fn not_lan_unicast(ip: [u8; 4]) -> Option<&'static str> {
    let a = std::net::Ipv4Addr::from(ip);
    if a.is_multicast() {
        Some("multicast")
    } else if a.is_loopback() {
        Some("loopback")
    } else if ip[0] == 0 {
        Some("0.0.0.0/8")
    } else if ip[0] >= 240 {
        Some("240.0.0.0/4")
    } else {
        None
    }
}

/// Sorts `fdb-show` rows by port, VLAN, MAC.
pub fn sort_fdb_rows(rows: &mut [FdbRow]) {
    rows.sort_by(|a, b| (&a.port, a.vlan, &a.mac).cmp(&(&b.port, b.vlan, &b.mac)));
}

/// Whether FDBs of `total` entries can take one of `add` more (see [`MAX_FDB_TOTAL`]).
fn check_fdb_total(total: usize, add: usize) -> Result<(), String> {
    if total + add > MAX_FDB_TOTAL {
        return Err(format!(
            "fdb_capacity: {add} would bring the bridges' FDBs to {} entries (limit {MAX_FDB_TOTAL}, 512 MiB); lower it or delete a bridge",
            total + add
        ));
    }
    Ok(())
}

/// Names are 1 to 15 bytes (a netdev name's limit) of [A-Za-z0-9_.-].
pub fn validate_name(name: &str, what: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 15 {
        return Err(format!("{what} name '{name}' must be 1 to 15 characters"));
    }
    if !name
        .bytes()
        .all(|c| c.is_ascii_alphanumeric() || b"_.-".contains(&c))
    {
        return Err(format!(
            "{what} name '{name}' may only contain letters, digits, '_', '.', '-'"
        ));
    }
    // A leading '-' reads as an option on command lines; '.' and '..' name directories (the
    // OpenFlow socket is BRIDGE.mgmt). Found trying uvs as a new user.
    if name.starts_with('-') || name.bytes().all(|c| c == b'.') {
        return Err(format!(
            "{what} name '{name}' may not start with '-' or be only dots"
        ));
    }
    Ok(())
}

/// The distinct items of `it`, sorted.
fn sorted_distinct<T: Ord>(it: impl Iterator<Item = T>) -> Vec<T> {
    let mut v: Vec<T> = it.collect();
    v.sort_unstable();
    v.dedup();
    v
}

#[cfg(test)]
#[path = "datapath_tests.rs"]
mod tests;
