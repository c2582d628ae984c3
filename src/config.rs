//! Configuration: bridge and port specs, from a TOML file or from `key=value` control-command
//! arguments, validated before anything is applied.
//!
//! File format (every key documented on its field below; unknown keys are errors):
//! ```toml
//! [[bridge]]
//! name = "br0"            # 1-15 chars [A-Za-z0-9_.-]
//! fdb_capacity = 8192     # most MACs learned (per bridge); when full, unknown MACs flood
//! aging = 300             # seconds a learned MAC lives without traffic
//! # flows = ["priority=10,in_port=veth1 actions=drop", "priority=0 actions=NORMAL"]
//! # meters = ["meter=1,kbps,band=type=drop,rate=1000"]
//!
//! [[bridge.port]]
//! name = "veth1"          # netdev name (afxdp, afpacket: must exist; tap: uvs creates it)
//! type = "afxdp"          # afxdp | afpacket (alias system) | tap
//! vlan = 10               # access port in VLAN 10 (omit for a trunk)
//! # trunks = [10, 20]     # trunk of these VLANs (0: untagged frames; omit both: all VLANs)
//! # vlan_mode = "native-untagged"  # with vlan and trunks: untagged frames are VLAN `vlan`
//! # xdp_mode = "auto"     # afxdp only: auto | native | generic
//! # mtu = 1500            # tap only: set the device MTU
//!
//! # [[bridge.fdb]]         # a static FDB entry
//! # mac = "02:00:00:00:00:0a"
//! # port = "veth1"
//! # vlan = 10             # remote_ip = "A.B.C.D" for a vxlan port
//! ```
//! `uvs ctl save-config` prints the running configuration in this format (see
//! docs/persistence.md); [`Config::to_toml`] writes it.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::datapath::{
    BridgeOptions, DEFAULT_AGING, DEFAULT_FDB_CAPACITY, VlanMode, validate_name,
};
use crate::port::PortKind;

/// How to attach the XDP program of an afxdp port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum XdpModeSpec {
    /// Native (driver) mode if the driver has it, else generic.
    #[default]
    Auto,
    /// Driver mode only.
    Native,
    /// Generic (skb) mode.
    Generic,
}

/// A whole configuration file.
#[derive(Debug, Clone, Deserialize, Serialize, Default, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Bridges, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bridge: Vec<BridgeSpec>,
    /// Static routes, added after the bridges.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub route: Vec<RouteSpec>,
    /// NAT rules, added after the routes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nat: Vec<NatSpec>,
    /// Host ports `nat-add dnat ... port=0` picks from, `A-B` (default 32768-60999, as Docker;
    /// `uvs ctl set-nat port_range=A-B` changes it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nat_port_range: Option<String>,
    /// DNS names (`[[dns]]`: bridge, name, ip, aliases; see [`crate::dns::DnsSpec`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns: Vec<crate::dns::DnsSpec>,
    /// The DNS service's upstream (`ADDRESS[:PORT]` or `none`): read from the `--config` file
    /// at start (`--dns-upstream` wins); never part of the running configuration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_upstream: Option<String>,
    /// The etcd overlay (`[etcd]`, see [`crate::etcd::EtcdSpec`]): read from the `--config`
    /// file at start; never part of the running configuration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etcd: Option<crate::etcd::EtcdSpec>,
    /// Cores of the datapath workers, one worker per core (`"0,1"`): read from the `--config`
    /// file at start (`--cores`, then the `UVS_CORES` environment variable, win); never part
    /// of the running configuration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cores: Option<String>,
}

/// A NAT rule: `kind` is masquerade | snat | dnat; the other fields as `nat-add` takes them.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(deny_unknown_fields)]
pub struct NatSpec {
    /// masquerade | snat | dnat
    pub kind: String,
    /// Source prefix (masquerade, snat), e.g. "172.31.5.0/24".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub src: Option<String>,
    /// Egress bridge (masquerade, snat).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub out: Option<String>,
    /// Bridge whose gateway address is mapped (dnat).
    #[serde(rename = "in", default, skip_serializing_if = "Option::is_none")]
    pub inb: Option<String>,
    /// tcp | udp (dnat).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proto: Option<String>,
    /// Mapped port (dnat); 0 or missing in `nat-add`: pick a free one from the DNAT port range
    /// (a file names the port).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// snat: the address; dnat: ADDRESS:PORT.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
}

impl NatSpec {
    /// Parse `nat-add KIND key=value...` arguments.
    pub fn from_args(args: &[String]) -> Result<NatSpec, String> {
        let (kind, rest) = args
            .split_first()
            .ok_or("usage: nat-add masquerade|snat|dnat ...")?;
        let mut n = NatSpec {
            kind: kind.clone(),
            ..NatSpec::default()
        };
        for (k, v) in kv_pairs(rest)? {
            let v = Some(v.to_string());
            match k {
                "src" => n.src = v,
                "out" => n.out = v,
                "in" => n.inb = v,
                "proto" => n.proto = v,
                "port" => n.port = Some(num("port", v.as_deref().unwrap_or_default())?),
                "to" => n.to = v,
                _ => {
                    return Err(format!(
                        "unknown NAT option '{k}' (src, out, in, proto, port, to)"
                    ));
                }
            }
        }
        n.check()?;
        Ok(n)
    }

    /// Check that the fields a kind needs are there and parse.
    pub fn check(&self) -> Result<(), String> {
        let need = |f: &Option<String>, name: &str| {
            f.as_ref()
                .map(|_| ())
                .ok_or_else(|| format!("{name}: missing for {}", self.kind))
        };
        match self.kind.as_str() {
            "masquerade" | "snat" => {
                need(&self.src, "src")?;
                need(&self.out, "out")?;
                let (p, l) = crate::route::parse_prefix(self.src.as_deref().unwrap_or_default())
                    .map_err(|e| format!("src: {e}"))?;
                crate::route::check_prefix(p, l).map_err(|e| format!("src: {e}"))?;
                if self.kind == "snat" {
                    need(&self.to, "to")?;
                    self.snat_to()?;
                } else if self.to.is_some() {
                    return Err("to: masquerade uses the bridge's gateway address; use snat".into());
                }
            }
            "dnat" => {
                need(&self.inb, "in")?;
                need(&self.to, "to")?;
                self.dnat_proto()?;
                self.dnat_to()?;
            }
            k => return Err(format!("kind: '{k}' (masquerade, snat, dnat)")),
        }
        Ok(())
    }

    /// snat's address.
    pub fn snat_to(&self) -> Result<[u8; 4], String> {
        let t = self.to.as_deref().unwrap_or_default();
        t.parse::<std::net::Ipv4Addr>()
            .map(|a| a.octets())
            .map_err(|_| format!("to: '{t}' is not an IPv4 address"))
    }

    /// dnat's protocol number.
    pub fn dnat_proto(&self) -> Result<u8, String> {
        match self.proto.as_deref() {
            Some("tcp") => Ok(6),
            Some("udp") => Ok(17),
            Some(p) => Err(format!("proto: '{p}' (tcp, udp)")),
            None => Err("proto: missing for dnat (tcp, udp)".into()),
        }
    }

    /// dnat's target.
    pub fn dnat_to(&self) -> Result<([u8; 4], u16), String> {
        let t = self.to.as_deref().unwrap_or_default();
        let (a, p) = t
            .rsplit_once(':')
            .ok_or_else(|| format!("to: '{t}' must be ADDRESS:PORT"))?;
        let a: std::net::Ipv4Addr = a
            .parse()
            .map_err(|_| format!("to: '{a}' is not an IPv4 address"))?;
        let p: u16 = p
            .parse()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("to: port '{p}' must be 1 to 65535"))?;
        Ok((a.octets(), p))
    }
}

/// A static route: `prefix` via `via`, resolved on the bridge whose subnet holds `via`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RouteSpec {
    /// Destination prefix, e.g. "10.254.9.0/24".
    pub prefix: String,
    /// Next hop address, e.g. "10.250.0.2".
    pub via: String,
}

impl RouteSpec {
    /// Parse `route-add PREFIX via ADDR` arguments.
    pub fn from_args(args: &[String]) -> Result<RouteSpec, String> {
        match args {
            [p, kw, via] if kw == "via" => {
                let r = RouteSpec {
                    prefix: p.clone(),
                    via: via.clone(),
                };
                r.parsed()?;
                Ok(r)
            }
            _ => Err("usage: route-add PREFIX via ADDRESS".into()),
        }
    }

    /// The prefix, length and next hop.
    pub fn parsed(&self) -> Result<(std::net::Ipv4Addr, u8, std::net::Ipv4Addr), String> {
        let (p, l) =
            crate::route::parse_prefix(&self.prefix).map_err(|e| format!("prefix: {e}"))?;
        crate::route::check_prefix(p, l).map_err(|e| format!("prefix: {e}"))?;
        let via = self
            .via
            .parse()
            .map_err(|_| format!("via: '{}' is not an IPv4 address", self.via))?;
        Ok((p, l, via))
    }
}

/// One bridge.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BridgeSpec {
    /// Bridge name.
    pub name: String,
    /// FDB capacity (default 8192).
    #[serde(default = "default_capacity")]
    pub fdb_capacity: usize,
    /// FDB aging time in seconds (default 300).
    #[serde(default = "default_aging")]
    pub aging: u32,
    /// Gateway address with prefix length, e.g. "172.31.5.1/24" (like docker0's address).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    /// Gateway MAC (default: 02:75:76 + a hash of the host id and the bridge name, stable
    /// across restarts, different between hosts; see `host`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway_mac: Option<String>,
    /// Docker's isolation of user networks (default false): no routed traffic between this bridge
    /// and any other isolated bridge; non-isolated bridges (an uplink) stay reachable.
    #[serde(default, skip_serializing_if = "is_false")]
    pub isolated: bool,
    /// Inter-container communication inside the bridge (default true). `icc = false` drops
    /// port-to-port traffic; the gateway and port mappings still work.
    #[serde(default = "default_true", skip_serializing_if = "is_true")]
    pub icc: bool,
    /// Ports of this bridge.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub port: Vec<PortSpec>,
    /// The flow table in ovs-ofctl syntax, one flow a string (`dump-flows` lines without
    /// counters). Present: the table holds exactly these flows (`[]`: an empty table, which
    /// drops everything). Absent: a new bridge gets `priority=0,actions=normal` and a SIGHUP
    /// reload leaves an existing bridge's flows as they are.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flows: Option<Vec<String>>,
    /// Meters in `add-meter` syntax (`meter=1,kbps,band=type=drop,rate=1000`). Absent: none on
    /// a new bridge; a reload leaves an existing bridge's meters as they are.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meters: Option<Vec<String>>,
    /// Port mirrors as `add-mirror` takes them after the bridge: `NAME select_src=P,Q
    /// select_dst=P output=M` (absent or empty: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirrors: Option<Vec<String>>,
    /// Static FDB entries (`fdb-add`). Absent: none on a new bridge; a reload leaves an
    /// existing bridge's static entries as they are.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fdb: Option<Vec<FdbSpec>>,
    /// Reverse-path filtering of what the gateway routes: `strict` (default), `loose`, `off`.
    #[serde(default, skip_serializing_if = "is_strict")]
    pub rp_filter: crate::route::RpFilter,
    /// OpenFlow datapath id, hex (`0x00000000000000a1`); absent: derived from the name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub datapath_id: Option<String>,
    /// OpenFlow controllers to connect to (`tcp:IP:PORT`, `unix:PATH`), as `set-controller`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub controller: Vec<String>,
    /// `standalone` (absent: the default) or `secure`, as `set-fail-mode`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fail_mode: Option<String>,
    /// OpenFlow groups as `add-group` takes them (`group_id=1,type=all,bucket=output:1,...`).
    /// Absent: none on a new bridge; a reload adds or replaces the listed ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub groups: Option<Vec<String>>,
}

fn is_strict(v: &crate::route::RpFilter) -> bool {
    *v == crate::route::RpFilter::Strict
}

/// A static FDB entry, as `fdb-add BRIDGE MAC PORT [vlan=N] [remote_ip=A]` takes it.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct FdbSpec {
    /// The MAC address (unicast).
    pub mac: String,
    /// The port (a port of the same bridge).
    pub port: String,
    /// VLAN (0: untagged, the default).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub vlan: u16,
    /// The remote VTEP (only and always for a vxlan port).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_ip: Option<String>,
}

fn is_false(b: &bool) -> bool {
    !*b
}
fn is_true(b: &bool) -> bool {
    *b
}
fn is_zero(v: &u16) -> bool {
    *v == 0
}
fn is_auto(m: &XdpModeSpec) -> bool {
    *m == XdpModeSpec::Auto
}

fn default_true() -> bool {
    true
}

fn default_capacity() -> usize {
    DEFAULT_FDB_CAPACITY
}
fn default_aging() -> u32 {
    DEFAULT_AGING
}

/// One port.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
// No deny_unknown_fields here: serde does not support it with `flatten`; `validate` refuses
// unknown keys itself.
pub struct PortSpec {
    /// Netdev name.
    pub name: String,
    /// Port type.
    #[serde(rename = "type")]
    pub kind: PortKind,
    /// Access VLAN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vlan: Option<u16>,
    /// Trunk VLANs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trunks: Option<Vec<u16>>,
    /// OVS's `vlan_mode`: `access`, `trunk`, `native-untagged`, `native-tagged` (None: access
    /// with `vlan`, else trunk).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vlan_mode: Option<String>,
    /// XDP attach mode (afxdp).
    #[serde(default, skip_serializing_if = "is_auto")]
    pub xdp_mode: XdpModeSpec,
    /// Device MTU to set (tap).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// The OpenFlow port number asked for (1..0xfeff); None: the lowest free one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ofport_request: Option<u16>,
    /// VXLAN options (vxlan): `vni`, `local_ip`, `remote_ip` ("A,B"), `dst_port`, `learning`
    /// ("on"/"off"), `ttl`, `df`, as `add-port` takes them.
    #[serde(default, flatten)]
    pub tunnel: std::collections::BTreeMap<String, toml::Value>,
    /// Most source MACs learned on this port (port security; 1..=16777216); further new
    /// MACs are not learned and counted in `mac_limit_refused`. None: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac_limit: Option<u32>,
    /// Police what the switch receives from this port: `KBPS[/BURST_KBIT]` (see
    /// [`crate::pipeline::ratelimit`]). None: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_rx: Option<String>,
    /// Police what the switch sends to this port: `KBPS[/BURST_KBIT]`. None: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_tx: Option<String>,
    /// Storm control: flooded frames a second this port may send into its bridge,
    /// `N[/BURST]` or `off` (see [`crate::pipeline::flood_limit`]). None: the default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flood_rate: Option<String>,
    /// Rx queues pinned to worker cores (afxdp): `QUEUE:CORE[,QUEUE:CORE...]`, OVS's
    /// `pmd-rxq-affinity` (see [`crate::port::afxdp::rxq`]). None: round-robin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rxq_affinity: Option<String>,
    /// The other port of a `type=patch` pair (OVS's `options:peer=`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
    /// Not configuration (never read or written): the store adds a port of a bridge with a
    /// flow table *held* (it neither receives nor sends) until that table is installed, so no
    /// frame crosses the port under the table it had before (`Command::ReleasePorts`).
    #[serde(skip)]
    pub hold: bool,
}

impl BridgeSpec {
    /// The datapath options.
    pub fn options(&self) -> BridgeOptions {
        BridgeOptions {
            fdb_capacity: self.fdb_capacity,
            aging: self.aging,
        }
    }

    /// The gateway, parsed (None when not configured).
    pub fn gateway(&self) -> Result<Option<crate::datapath::Gateway>, String> {
        parse_gateway(
            &self.name,
            self.gateway.as_deref(),
            self.gateway_mac.as_deref(),
        )
    }

    /// Parse `add-br NAME [fdb_capacity=N] [aging=S]` arguments.
    pub fn from_args(name: &str, args: &[String]) -> Result<BridgeSpec, String> {
        let mut b = BridgeSpec {
            name: name.to_string(),
            fdb_capacity: DEFAULT_FDB_CAPACITY,
            aging: DEFAULT_AGING,
            gateway: None,
            gateway_mac: None,
            isolated: false,
            icc: true,
            port: Vec::new(),
            flows: None,
            meters: None,
            mirrors: None,
            fdb: None,
            rp_filter: Default::default(),
            datapath_id: None,
            controller: Vec::new(),
            fail_mode: None,
            groups: None,
        };
        for (k, v) in kv_pairs(args)? {
            match k {
                "fdb_capacity" => b.fdb_capacity = num(k, v)?,
                "aging" => b.aging = num(k, v)?,
                "gateway" => b.gateway = Some(v.to_string()),
                "gateway_mac" => b.gateway_mac = Some(v.to_string()),
                "isolated" => b.isolated = on_off(k, v)?,
                "icc" => b.icc = on_off(k, v)?,
                "rp_filter" => b.rp_filter = crate::route::RpFilter::parse(k, v)?,
                "datapath_id" => {
                    let d = crate::openflow::control::parse_dpid(v)?;
                    b.datapath_id = Some(format!("{d:#018x}"));
                }
                _ => {
                    return Err(format!(
                        "unknown bridge option '{k}' (fdb_capacity, aging, gateway, gateway_mac, isolated, icc, rp_filter, datapath_id)"
                    ));
                }
            }
        }
        b.validate()?;
        Ok(b)
    }

    /// Check the values.
    pub fn validate(&self) -> Result<(), String> {
        validate_name(&self.name, "bridge")?;
        if self.fdb_capacity == 0 || self.fdb_capacity > 16 << 20 {
            return Err(format!(
                "fdb_capacity: {} out of range (1 to 16777216)",
                self.fdb_capacity
            ));
        }
        if self.aging == 0 {
            return Err("aging: must be at least 1 second".into());
        }
        self.gateway()?;
        crate::openflow::control::validate_bridge(self)?;
        for p in &self.port {
            p.validate()?;
        }
        self.validate_tables()
            .map_err(|e| format!("bridge '{}': {e}", self.name))
    }
}

impl PortSpec {
    /// Parse `add-port BRIDGE NAME [type=afxdp|afpacket|tap] [vlan=N] [trunks=N,M] [xdp_mode=M] [mtu=N]`
    /// option arguments (type defaults to afxdp).
    pub fn from_args(name: &str, args: &[String]) -> Result<PortSpec, String> {
        let mut p = PortSpec {
            name: name.to_string(),
            kind: PortKind::Afxdp,
            vlan: None,
            trunks: None,
            vlan_mode: None,
            xdp_mode: XdpModeSpec::Auto,
            mtu: None,
            ofport_request: None,
            tunnel: Default::default(),
            mac_limit: None,
            rate_rx: None,
            flood_rate: None,
            rate_tx: None,
            rxq_affinity: None,
            peer: None,
            hold: false,
        };
        for (k, v) in kv_pairs(args)? {
            match k {
                "type" => {
                    p.kind = match v {
                        "afxdp" => PortKind::Afxdp,
                        "afpacket" | "system" => PortKind::Afpacket,
                        "tap" | "internal" => PortKind::Tap,
                        "vxlan" => PortKind::Vxlan,
                        "patch" => PortKind::Patch,
                        _ => {
                            return Err(format!(
                                "type: '{v}' is not a port type (afxdp, afpacket, tap, internal, vxlan, patch)"
                            ));
                        }
                    }
                }
                "vlan" | "tag" => p.vlan = Some(num("vlan", v)?),
                "vlan_mode" => p.vlan_mode = Some(v.to_string()),
                "trunks" => p.trunks = Some(vid_list("trunks", v)?),
                "xdp_mode" => {
                    p.xdp_mode = match v {
                        "auto" => XdpModeSpec::Auto,
                        "native" => XdpModeSpec::Native,
                        "generic" => XdpModeSpec::Generic,
                        _ => return Err(format!("xdp_mode: '{v}' (auto, native, generic)")),
                    }
                }
                "mtu" => p.mtu = Some(num(k, v)?),
                "ofport_request" => {
                    let n: u32 = num(k, v)?;
                    let max = u32::from(crate::ofport::OFPP_MAX);
                    if !(1..=max).contains(&n) {
                        return Err(crate::ofport::OfPortError::OutOfRange(n).to_string());
                    }
                    p.ofport_request = Some(n as u16);
                }
                "mac_limit" => p.mac_limit = Some(num(k, v)?),
                "rate_rx" => p.rate_rx = Some(v.to_string()),
                "rate_tx" => p.rate_tx = Some(v.to_string()),
                "flood_rate" => p.flood_rate = Some(v.to_string()),
                "rxq_affinity" => p.rxq_affinity = Some(v.to_string()).filter(|v| !v.is_empty()),
                "peer" => p.peer = Some(v.to_string()),
                "vni" | "local_ip" | "remote_ip" | "dst_port" | "learning" | "ttl" | "df" => {
                    p.tunnel
                        .insert(k.to_string(), toml::Value::String(v.to_string()));
                }
                _ => {
                    return Err(format!(
                        "unknown port option '{k}' (type, vlan, trunks, vlan_mode, xdp_mode, mtu, ofport_request, mac_limit, rate_rx, rate_tx, flood_rate, rxq_affinity; patch: peer; vxlan: vni, local_ip, remote_ip, dst_port, learning, ttl, df)"
                    ));
                }
            }
        }
        p.validate()?;
        Ok(p)
    }

    /// The OpenFlow number this port asks for on bridge `bridge`: `LOCAL` for a TAP named as
    /// the bridge (OVS's bridge-local internal port, whose `ofport_request` OVS ignores too),
    /// else its `ofport_request`.
    pub fn ofport_wanted(&self, bridge: &str) -> Option<u16> {
        if self.kind == PortKind::Tap && self.name == bridge {
            return Some(crate::ofport::OFPP_LOCAL);
        }
        self.ofport_request
    }

    /// The tunnel settings of a `type=vxlan` port.
    pub fn tunnel_conf(&self) -> Result<crate::vxlan::TunnelConf, String> {
        let text: Vec<(String, String)> = self
            .tunnel
            .iter()
            .map(|(k, v)| {
                let s = match v {
                    toml::Value::String(s) => s.clone(),
                    toml::Value::Array(a) => a
                        .iter()
                        .map(|x| {
                            x.as_str()
                                .map(str::to_string)
                                .unwrap_or_else(|| x.to_string())
                        })
                        .collect::<Vec<_>>()
                        .join(","),
                    toml::Value::Boolean(b) => if *b { "on" } else { "off" }.to_string(),
                    other => other.to_string(),
                };
                (k.clone(), s)
            })
            .collect();
        crate::vxlan::TunnelConf::from_pairs(text.iter().map(|(k, v)| (k.as_str(), v.as_str())))
    }

    /// The VLAN mode.
    pub fn vlan_mode(&self) -> Result<VlanMode, String> {
        let a = self.vlan.map(|v| v.to_string());
        let t = self.trunks.as_ref().map(|t| {
            t.iter()
                .map(|v| v.to_string())
                .collect::<Vec<_>>()
                .join(",")
        });
        VlanMode::parse_mode(a.as_deref(), t.as_deref(), self.vlan_mode.as_deref())
    }

    /// The rx and tx shapers, parsed.
    pub fn shapers(
        &self,
    ) -> Result<
        (
            Option<crate::pipeline::ratelimit::Shaper>,
            Option<crate::pipeline::ratelimit::Shaper>,
        ),
        String,
    > {
        let parse = |f: &str, v: &Option<String>| {
            v.as_deref()
                .map(|s| crate::pipeline::ratelimit::Shaper::parse(f, s))
                .transpose()
        };
        Ok((
            parse("rate_rx", &self.rate_rx)?,
            parse("rate_tx", &self.rate_tx)?,
        ))
    }

    /// The port's flood budget (`flood_rate`, else the default).
    pub fn flood_limit(&self) -> Result<crate::pipeline::flood_limit::FloodLimit, String> {
        self.flood_rate.as_deref().map_or(
            Ok(Default::default()),
            crate::pipeline::flood_limit::FloodLimit::parse,
        )
    }

    /// Check the values.
    pub fn validate(&self) -> Result<(), String> {
        validate_name(&self.name, "port")?;
        if self.name.eq_ignore_ascii_case("local") {
            return Err(format!(
                "port name '{}' is OpenFlow's LOCAL (the bridge's own port: add-port BRIDGE BRIDGE type=internal)",
                self.name
            ));
        }
        self.vlan_mode()
            .map_err(|e| format!("port '{}': {e}", self.name))?;
        if self.kind == PortKind::Mem {
            return Err(format!("port '{}': type mem is for tests only", self.name));
        }
        if self.xdp_mode != XdpModeSpec::Auto && self.kind != PortKind::Afxdp {
            return Err(format!(
                "port '{}': xdp_mode: applies to type=afxdp ports only (this one is {})",
                self.name, self.kind
            ));
        }
        if let Some(n) = self.mac_limit.filter(|n| !(1..=1 << 24).contains(n)) {
            return Err(format!(
                "port '{}': mac_limit: {n} out of range (1 to 16777216)",
                self.name
            ));
        }
        self.shapers()
            .map_err(|e| format!("port '{}': {e}", self.name))?;
        self.flood_limit()
            .map_err(|e| format!("port '{}': {e}", self.name))?;
        if let Some(a) = &self.rxq_affinity {
            if a.trim().is_empty() {
                return Err(format!(
                    "port '{}': rxq_affinity: empty (leave the key out for round-robin)",
                    self.name
                ));
            }
            crate::port::afxdp::rxq::parse_affinity(a)
                .map_err(|e| format!("port '{}': {e}", self.name))?;
            if self.kind != PortKind::Afxdp {
                return Err(format!(
                    "port '{}': rxq_affinity: applies to type=afxdp ports only (they have rx queues to pin)",
                    self.name
                ));
            }
        }
        const TUNNEL_KEYS: [&str; 7] = [
            "vni",
            "local_ip",
            "remote_ip",
            "dst_port",
            "learning",
            "ttl",
            "df",
        ];
        if let Some(k) = self
            .tunnel
            .keys()
            .find(|k| !TUNNEL_KEYS.contains(&k.as_str()))
        {
            return Err(format!(
                "port '{}': unknown field '{k}' (type, vlan, trunks, vlan_mode, xdp_mode, mtu, ofport_request, mac_limit, rate_rx, rate_tx, flood_rate, rxq_affinity; patch: peer; vxlan: {})",
                self.name,
                TUNNEL_KEYS.join(", ")
            ));
        }
        if self.kind == PortKind::Vxlan {
            self.tunnel_conf()?;
        } else if let Some(k) = self.tunnel.keys().next() {
            return Err(format!("{k}: applies to type=vxlan ports only"));
        }
        match (&self.peer, self.kind) {
            (None, PortKind::Patch) => {
                return Err(format!(
                    "port '{}': peer: a patch port needs peer=NAME (the other port of the pair)",
                    self.name
                ));
            }
            (Some(p), PortKind::Patch) => {
                validate_name(p, "peer").map_err(|e| format!("port '{}': {e}", self.name))?;
                if *p == self.name {
                    return Err(format!(
                        "port '{}': peer: a patch port cannot be its own peer",
                        self.name
                    ));
                }
            }
            (Some(_), _) => {
                return Err(format!(
                    "port '{}': peer: applies to type=patch ports only (this one is {})",
                    self.name, self.kind
                ));
            }
            (None, _) => {}
        }
        if self.mtu.is_some() && self.kind != PortKind::Tap {
            return Err(format!(
                "port '{}': mtu= applies to tap ports only",
                self.name
            ));
        }
        if let Some(m) = self.mtu
            && !(68..=(crate::packet::MAX_FRAME_LEN as u32 - 18)).contains(&m)
        {
            return Err(format!(
                "mtu: {m} out of range (68 to {})",
                crate::packet::MAX_FRAME_LEN - 18
            ));
        }
        Ok(())
    }
}

impl Config {
    /// Parse and validate TOML text.
    pub fn parse(text: &str) -> Result<Config, String> {
        let c: Config = toml::from_str(text).map_err(|e| e.to_string())?;
        c.validate()?;
        Ok(c)
    }

    /// Read, parse and validate a file; errors name the file.
    pub fn load(path: &Path) -> Result<Config, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Config::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Check names are unique and every spec is valid.
    pub fn validate(&self) -> Result<(), String> {
        let mut bridges = std::collections::HashSet::new();
        let mut ports = std::collections::HashSet::new();
        for b in &self.bridge {
            b.validate()?;
            if !bridges.insert(&b.name) {
                return Err(format!("bridge '{}' defined twice", b.name));
            }
            let mut numbers = std::collections::HashMap::new();
            for p in &b.port {
                if !ports.insert(&p.name) {
                    return Err(format!("port '{}' defined twice", p.name));
                }
                if let Some(n) = p.ofport_request
                    && let Some(other) = numbers.insert(n, &p.name)
                {
                    return Err(format!(
                        "port '{}': ofport_request: {n} is also port '{other}'s (bridge '{}')",
                        p.name, b.name
                    ));
                }
            }
        }
        for r in &self.route {
            r.parsed()?;
        }
        for n in &self.nat {
            n.check()?;
        }
        for d in &self.dns {
            d.validate().map_err(|e| format!("dns {}: {e}", d.name))?;
            if !self.bridge.iter().any(|b| b.name == d.bridge) {
                return Err(format!(
                    "dns {}: bridge: no bridge named '{}'",
                    d.name, d.bridge
                ));
            }
        }
        self.check_references()
    }
}

// ---- Persistence: flows, meters and static FDB entries in the file; cross-references ----

impl FdbSpec {
    /// The parsed entry: MAC, VLAN and remote VTEP.
    pub fn parsed(&self) -> Result<(crate::wire::MacAddr, u16, Option<[u8; 4]>), String> {
        let mac: crate::wire::MacAddr = self.mac.parse().map_err(|e| format!("fdb mac: {e}"))?;
        if mac.is_multicast() || mac.is_zero() {
            return Err(format!("fdb mac: {mac} must be a unicast address"));
        }
        if self.vlan > 4094 {
            return Err(format!("fdb vlan: {} (0 to 4094)", self.vlan));
        }
        let remote = match &self.remote_ip {
            Some(r) => Some(
                r.parse::<std::net::Ipv4Addr>()
                    .map_err(|_| format!("fdb remote_ip: '{r}' is not an IPv4 address"))?
                    .octets(),
            ),
            None => None,
        };
        Ok((mac, self.vlan, remote))
    }
}

impl BridgeSpec {
    /// A bridge spec with the defaults and no ports, flows, meters or FDB entries.
    pub fn new(name: &str) -> BridgeSpec {
        BridgeSpec {
            name: name.to_string(),
            fdb_capacity: DEFAULT_FDB_CAPACITY,
            aging: DEFAULT_AGING,
            gateway: None,
            gateway_mac: None,
            isolated: false,
            icc: true,
            port: Vec::new(),
            flows: None,
            meters: None,
            mirrors: None,
            fdb: None,
            rp_filter: Default::default(),
            datapath_id: None,
            controller: Vec::new(),
            fail_mode: None,
            groups: None,
        }
    }

    /// Check `flows`, `meters` and `fdb` parse, and that FDB entries and flows name ports of
    /// this bridge.
    fn validate_tables(&self) -> Result<(), String> {
        let has_port = |n: &str| self.port.iter().any(|p| p.name == n);
        let mut meters = Vec::new();
        for (i, m) in self.meters.iter().flatten().enumerate() {
            let (id, _) =
                crate::flow::meter::parse_meter(m).map_err(|e| format!("meters[{i}]: {e}"))?;
            meters.push(id);
        }
        let mut groups = Vec::new();
        for (i, g) in self.groups.iter().flatten().enumerate() {
            let g = crate::flow::group::parse_group(g).map_err(|e| format!("groups[{i}]: {e}"))?;
            groups.push(g.id);
        }
        // A file that lists the bridge's meters (groups) is the whole set: a flow's `meter:N`
        // (`group:N`) must be one of them, as the switch checks when the flow is added.
        // Each flow parsed once: its port names, then its meter and group references.
        for (i, f) in self.flows.iter().flatten().enumerate() {
            let flow = crate::flow::parse_flow(f).map_err(|e| format!("flows[{i}]: {e}"))?;
            for (what, p) in flow.ports() {
                if let crate::flow::PortRef::Name(n) = p
                    && !has_port(n)
                {
                    return Err(format!("flows[{i}]: {what}: no port '{n}' in the bridge"));
                }
            }
            let mut missing = None;
            flow.any_action(|a| {
                missing = match a {
                    crate::flow::Action::Meter(m)
                        if self.meters.is_some() && !meters.contains(m) =>
                    {
                        Some(format!("meter:{m}: no such meter in the bridge's meters"))
                    }
                    crate::flow::Action::Group(g)
                        if self.groups.is_some() && !groups.contains(g) =>
                    {
                        Some(format!("group:{g}: no such group in the bridge's groups"))
                    }
                    _ => None,
                };
                missing.is_some()
            });
            if let Some(why) = missing {
                return Err(format!("flows[{i}]: {why}"));
            }
        }
        for (i, m) in self.mirrors.iter().flatten().enumerate() {
            let spec = crate::observe::mirror::MirrorSpec::parse_text(&self.name, m)
                .map_err(|e| format!("mirrors[{i}]: {e}"))?;
            let named = (spec.select_src.iter().map(|p| ("select_src", p)))
                .chain(spec.select_dst.iter().map(|p| ("select_dst", p)))
                .chain([("output", &spec.output)]);
            for (what, p) in named {
                if !has_port(p) {
                    return Err(format!("mirrors[{i}]: {what}: no port '{p}' in the bridge"));
                }
            }
        }
        for e in self.fdb.iter().flatten() {
            e.parsed()?;
            let Some(p) = self.port.iter().find(|p| p.name == e.port) else {
                return Err(format!("fdb port: no port '{}' in the bridge", e.port));
            };
            let (_, vlan, _) = e.parsed()?;
            p.vlan_mode()?
                .fdb_vlan(vlan)
                .map_err(|err| format!("fdb {} port {}: {err}", e.mac, e.port))?;
            if (p.kind == PortKind::Vxlan) != e.remote_ip.is_some() {
                return Err(format!(
                    "fdb {}: remote_ip is needed for, and only for, a vxlan port",
                    e.mac
                ));
            }
        }
        Ok(())
    }
}

impl Config {
    /// Check what the file's parts say about each other, as the switch would when applying it:
    /// a route's next hop lies on a bridge's gateway subnet, NAT rules name bridges of the file
    /// (with a gateway where the rule needs one), a vxlan port's `local_ip` is another bridge's
    /// gateway address.
    pub fn check_references(&self) -> Result<(), String> {
        let mut gateways = Vec::new();
        for b in &self.bridge {
            if let Some(g) = b.gateway()? {
                gateways.push((b.name.as_str(), g));
            }
        }
        // Two bridges cannot share a gateway address or subnet (the connected route is one).
        for (i, (a, g)) in gateways.iter().enumerate() {
            for (b, h) in &gateways[..i] {
                if g.ip == h.ip || g.subnet() == h.subnet() {
                    let (net, len) = g.subnet();
                    return Err(format!(
                        "bridge '{a}': gateway: {} or its subnet {net}/{len} is already bridge '{b}''s",
                        std::net::Ipv4Addr::from(g.ip)
                    ));
                }
            }
        }
        let on_subnet = |a: [u8; 4]| gateways.iter().find(|(_, g)| g.on_subnet(a));
        for r in &self.route {
            let (_, _, via) = r.parsed()?;
            match on_subnet(via.octets()) {
                None => {
                    return Err(format!(
                        "route {}: via {via} is not on any bridge's gateway subnet",
                        r.prefix
                    ));
                }
                Some((_, g)) if g.ip == via.octets() => {
                    return Err(format!(
                        "route {}: via {via} is the bridge's own gateway address",
                        r.prefix
                    ));
                }
                _ => {}
            }
        }
        let gw_of = |name: &Option<String>, field: &str| -> Result<bool, String> {
            let n = name.as_deref().unwrap_or_default();
            if !self.bridge.iter().any(|b| b.name == n) {
                return Err(format!("nat {field}: no bridge named '{n}'"));
            }
            Ok(gateways.iter().any(|(b, _)| *b == n))
        };
        if let Some(r) = &self.nat_port_range {
            crate::nat::parse_port_range("nat_port_range", r)?;
        }
        // Rules the switch would refuse next to each other: a host port mapped twice on one
        // bridge, source prefixes that overlap on one bridge.
        for (i, n) in self.nat.iter().enumerate() {
            for (j, o) in self.nat[..i].iter().enumerate() {
                let clash = match (n.kind.as_str(), o.kind.as_str()) {
                    ("dnat", "dnat") => {
                        n.inb == o.inb
                            && n.port == o.port
                            && n.dnat_proto().ok() == o.dnat_proto().ok()
                    }
                    ("dnat", _) | (_, "dnat") => false,
                    _ => {
                        let prefix = |x: &NatSpec| {
                            crate::route::parse_prefix(x.src.as_deref().unwrap_or_default()).ok()
                        };
                        n.out == o.out
                            && prefix(n).zip(prefix(o)).is_some_and(|((a, l), (b, m))| {
                                let common = crate::route::mask(l.min(m));
                                u32::from(a) & common == u32::from(b) & common
                            })
                    }
                };
                if clash {
                    let field = if n.kind == "dnat" { "port" } else { "src" };
                    return Err(format!(
                        "nat[{i}] ({}): {field}: clashes with nat[{j}] ({}) on the same bridge",
                        n.kind, o.kind
                    ));
                }
            }
        }
        for n in &self.nat {
            if n.kind == "dnat" && n.port.unwrap_or(0) == 0 {
                return Err(
                    "nat dnat: port: a file names the host port (0 picks one only in nat-add)"
                        .into(),
                );
            }
            let ok = match n.kind.as_str() {
                "dnat" => gw_of(&n.inb, "in")?,
                "masquerade" => gw_of(&n.out, "out")?,
                _ => gw_of(&n.out, "out").map(|_| true)?,
            };
            if !ok {
                return Err(format!("nat {}: the bridge has no gateway address", n.kind));
            }
        }
        for b in &self.bridge {
            for p in b.port.iter().filter(|p| p.kind == PortKind::Vxlan) {
                let conf = p.tunnel_conf()?;
                match gateways.iter().find(|(_, g)| g.ip == conf.local_ip) {
                    Some((owner, _)) if *owner != b.name => {}
                    _ => {
                        return Err(format!(
                            "port '{}': local_ip {} is not the gateway address of another bridge",
                            p.name,
                            std::net::Ipv4Addr::from(conf.local_ip)
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// The file text: TOML in the `--config` format, which [`Config::parse`] reads back to an
    /// equal value.
    pub fn to_toml(&self) -> Result<String, String> {
        toml::to_string(self).map_err(|e| format!("cannot write the configuration: {e}"))
    }
}

/// Parse `gateway=A.B.C.D/LEN` and `gateway_mac=` values for bridge `bridge`.
pub fn parse_gateway(
    bridge: &str,
    gateway: Option<&str>,
    mac: Option<&str>,
) -> Result<Option<crate::datapath::Gateway>, String> {
    let Some(g) = gateway else {
        if mac.is_some() {
            return Err("gateway_mac: needs gateway= too".into());
        }
        return Ok(None);
    };
    let (ip, len) = g
        .split_once('/')
        .ok_or_else(|| format!("gateway: '{g}' needs a prefix length (e.g. 172.31.5.1/24)"))?;
    let ip: std::net::Ipv4Addr = ip
        .parse()
        .map_err(|_| format!("gateway: '{ip}' is not an IPv4 address"))?;
    let len: u8 = len
        .parse()
        .ok()
        .filter(|l| (1..=30).contains(l))
        .ok_or_else(|| format!("gateway: prefix length '/{len}' out of range (1 to 30)"))?;
    let mac = match mac {
        Some(m) => {
            let m: crate::wire::MacAddr = m.parse().map_err(|e| format!("gateway_mac: {e}"))?;
            if m.is_multicast() || m.is_zero() {
                return Err(format!("gateway_mac: {m} must be a unicast address"));
            }
            m
        }
        None => crate::datapath::Gateway::host_mac(crate::host::host_id(), bridge),
    };
    Ok(Some(crate::datapath::Gateway {
        ip: ip.octets(),
        len,
        mac,
    }))
}

/// Parse an `on|off` (or `true|false`) option value.
pub fn on_off(field: &str, v: &str) -> Result<bool, String> {
    match v {
        "on" | "true" | "yes" => Ok(true),
        "off" | "false" | "no" => Ok(false),
        _ => Err(format!("{field}: '{v}' is not on or off")),
    }
}

fn kv_pairs(args: &[String]) -> Result<Vec<(&str, &str)>, String> {
    let pairs: Vec<(&str, &str)> = args
        .iter()
        .map(|a| {
            a.split_once('=')
                .filter(|(k, _)| !k.is_empty())
                .ok_or_else(|| format!("'{a}' is not key=value"))
        })
        .collect::<Result<_, _>>()?;
    // A key given twice is refused, not decided by its last value (found trying uvs as a new
    // user: `fdb_capacity=10 fdb_capacity=20` took 20 without a word).
    if let Some((_, (k, _))) = pairs
        .iter()
        .enumerate()
        .find(|(i, (k, _))| pairs[..*i].iter().any(|(x, _)| x == k))
    {
        return Err(format!("{k}: given twice"));
    }
    Ok(pairs)
}

/// A number for `field`; the error names the field and the value. (`add-port`'s and
/// `set-port`'s options are parsed with this and [`vid_list`] alike.)
pub(crate) fn num<T: std::str::FromStr>(field: &str, v: &str) -> Result<T, String> {
    v.trim()
        .parse()
        .map_err(|_| format!("{field}: '{v}' is not a valid number"))
}

/// A comma-separated list of VLAN ids for `field` (`trunks=10,20`); ranges are checked with the
/// VLAN mode.
pub(crate) fn vid_list(field: &str, v: &str) -> Result<Vec<u16>, String> {
    v.split(',').map(|x| num(field, x)).collect()
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
