//! The CNI environment (`CNI_*`) and the network configuration on stdin, checked up front so
//! that every later step can rely on them. Errors name the variable or field.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use serde::Deserialize;
use serde_json::Value;

use super::{
    CniError, E_DECODE, E_INVALID_CONFIG, E_INVALID_ENV, E_UNSUPPORTED_FIELD, E_VERSION,
    SUPPORTED_VERSIONS,
};

/// The `CNI_*` environment of one invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Env {
    /// `CNI_COMMAND`.
    pub command: String,
    /// `CNI_CONTAINERID`.
    pub container_id: String,
    /// `CNI_NETNS` (may be empty on DEL).
    pub netns: String,
    /// `CNI_IFNAME`.
    pub ifname: String,
    /// `CNI_ARGS` (`K=V;K=V`).
    pub args: String,
    /// `CNI_PATH` directories.
    pub path: Vec<PathBuf>,
}

impl Env {
    /// Reads and checks the variables (VERSION needs only `CNI_COMMAND`).
    pub fn from_vars(vars: &impl Fn(&str) -> Option<String>) -> Result<Env, CniError> {
        let get = |k: &str| vars(k).unwrap_or_default();
        let env = Env {
            command: get("CNI_COMMAND"),
            container_id: get("CNI_CONTAINERID"),
            netns: get("CNI_NETNS"),
            ifname: get("CNI_IFNAME"),
            args: get("CNI_ARGS"),
            path: get("CNI_PATH")
                .split(':')
                .filter(|s| !s.is_empty())
                .map(PathBuf::from)
                .collect(),
        };
        let missing = |k: &str| CniError::new(E_INVALID_ENV, format!("{k} is not set"));
        match env.command.as_str() {
            "" => return Err(missing("CNI_COMMAND")),
            "VERSION" => return Ok(env),
            _ => {}
        }
        if env.container_id.is_empty() {
            return Err(missing("CNI_CONTAINERID"));
        }
        if env.ifname.is_empty() {
            return Err(missing("CNI_IFNAME"));
        }
        if env.ifname.len() > 15 || env.ifname.contains(['/', ' ']) {
            return Err(CniError::new(
                E_INVALID_ENV,
                format!("CNI_IFNAME: '{}' is not an interface name", env.ifname),
            ));
        }
        if env.command != "DEL" && env.netns.is_empty() {
            return Err(missing("CNI_NETNS"));
        }
        Ok(env)
    }

    /// The host end's name: `uv` + 12 hex digits of a hash of container id and interface
    /// (stable, so DEL finds it without state).
    pub fn host_ifname(&self) -> String {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in self
            .container_id
            .bytes()
            .chain([0])
            .chain(self.ifname.bytes())
        {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x100_0000_01b3);
        }
        format!("uv{:012x}", h & 0xffff_ffff_ffff)
    }

    /// `MAC=` from `CNI_ARGS`, if any.
    pub fn arg(&self, key: &str) -> Option<String> {
        self.args.split(';').find_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            (k == key).then(|| v.to_string())
        })
    }
}

/// One `portMappings` entry (runtimeConfig).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortMapping {
    /// Host port (on the uplink's gateway address); 0 or missing: uvs picks a free one from
    /// its DNAT port range and the ADD result's `portMappings` says which.
    #[serde(default)]
    pub host_port: u16,
    /// Port in the container.
    pub container_port: u16,
    /// `tcp` or `udp` (default tcp).
    #[serde(default)]
    pub protocol: String,
    /// Host address (only empty or the uplink gateway make sense for uvs; others are refused).
    #[serde(default, rename = "hostIP")]
    pub host_ip: String,
}

impl PortMapping {
    /// `tcp` or `udp`.
    pub fn proto(&self) -> &str {
        if self.protocol.is_empty() {
            "tcp"
        } else {
            &self.protocol
        }
    }
}

/// `runtimeConfig`: the capabilities uvs-cni declares.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeConfig {
    /// `-p HOST:CONTAINER`.
    #[serde(default)]
    pub port_mappings: Vec<PortMapping>,
    /// Requested addresses (passed to IPAM).
    #[serde(default)]
    pub ips: Vec<String>,
    /// Requested container MAC.
    #[serde(default)]
    pub mac: Option<String>,
    /// Rate limits (the reference `bandwidth` plugin's capability).
    #[serde(default)]
    pub bandwidth: Option<Bandwidth>,
    /// DNS aliases by network name (podman's `--network-alias`).
    #[serde(default)]
    pub aliases: std::collections::HashMap<String, Vec<String>>,
}

/// The `bandwidth` capability: rates in bit/s, bursts in bits, each direction seen from the
/// container (ingress: into it). A direction needs both rate and burst, or neither.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Bandwidth {
    /// Into the container, bit/s.
    #[serde(default)]
    pub ingress_rate: u64,
    /// Into the container, bits.
    #[serde(default)]
    pub ingress_burst: u64,
    /// Out of the container, bit/s.
    #[serde(default)]
    pub egress_rate: u64,
    /// Out of the container, bits.
    #[serde(default)]
    pub egress_burst: u64,
}

impl Bandwidth {
    /// The uvs port options: `rate_tx=` for ingress, `rate_rx=` for egress (kbit/s and
    /// kbit, rounded up; bursts at least 16 kbit, one full-size frame).
    pub fn port_options(&self) -> Vec<String> {
        let kbit = |b: u64| b.div_ceil(1000);
        let mut o = Vec::new();
        for (key, rate, burst) in [
            ("rate_tx", self.ingress_rate, self.ingress_burst),
            ("rate_rx", self.egress_rate, self.egress_burst),
        ] {
            if rate > 0 {
                o.push(format!("{key}={}/{}", kbit(rate), kbit(burst).max(16)));
            }
        }
        o
    }

    fn check(&self) -> Result<(), CniError> {
        for (dir, rate, burst) in [
            ("ingress", self.ingress_rate, self.ingress_burst),
            ("egress", self.egress_rate, self.egress_burst),
        ] {
            let bad = |m: String| Err(CniError::new(E_INVALID_CONFIG, m));
            if (rate == 0) != (burst == 0) {
                return bad(format!(
                    "runtimeConfig.bandwidth: {dir}Rate and {dir}Burst go together (both or neither)"
                ));
            }
            if rate > 100_000_000_000 || burst > 100_000_000_000 {
                return bad(format!(
                    "runtimeConfig.bandwidth: {dir}Rate/{dir}Burst: at most 100 Gbit/s and 100 Gbit"
                ));
            }
        }
        Ok(())
    }
}

/// The network configuration (one plugin of a conflist, as the runtime hands it over).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct NetConf {
    /// `cniVersion`.
    #[serde(rename = "cniVersion")]
    pub cni_version: String,
    /// The network name.
    pub name: String,
    /// The uvs bridge (default: the network name).
    #[serde(default)]
    pub bridge: Option<String>,
    /// The control socket.
    #[serde(default)]
    pub uvs_socket: Option<PathBuf>,
    /// Container MTU (default 1500; capped at the bridge's inner MTU with VXLAN).
    #[serde(default)]
    pub mtu: Option<u32>,
    /// The uvs port type of the container's veth host end: `afpacket` (default; `system` is its
    /// OVS alias) or `afxdp`. afpacket carries the container's 64 KiB TCP super-frames whole
    /// (0.93x the kernel bridge's TCP in docs/benchmarks.md against 0.28x for AF_XDP, whose XDP
    /// program turns the veth's GSO off); afxdp moves ~3x the 64-byte packets per second.
    #[serde(default, rename = "portType")]
    pub port_type: Option<String>,
    /// Create the bridge `isolated=on` (default true, like Docker user networks).
    #[serde(default)]
    pub isolated: Option<bool>,
    /// `icc=off` when false.
    #[serde(default)]
    pub icc: Option<bool>,
    /// The uplink bridge: masquerade out of it, port mappings in on it.
    #[serde(default)]
    pub uplink: Option<String>,
    /// The IPAM section, passed on as is.
    #[serde(default)]
    pub ipam: Value,
    /// Capability arguments.
    #[serde(default, rename = "runtimeConfig")]
    pub runtime_config: RuntimeConfig,
    /// The previous result (CHECK, DEL).
    #[serde(default, rename = "prevResult")]
    pub prev_result: Option<Value>,
}

/// The default control socket.
pub const DEFAULT_SOCKET: &str = "/run/uvs/uvs.sock";

impl NetConf {
    /// The `type=` of the container's port in uvs.
    pub fn port_type(&self) -> &str {
        match self.port_type.as_deref() {
            Some("afxdp") => "afxdp",
            _ => "afpacket",
        }
    }

    /// Parses and checks stdin.
    pub fn parse(stdin: &[u8]) -> Result<NetConf, CniError> {
        let c: NetConf = serde_json::from_slice(stdin).map_err(|e| {
            CniError::failed(E_DECODE, "network configuration is not valid JSON", e)
        })?;
        if !SUPPORTED_VERSIONS.contains(&c.cni_version.as_str()) {
            return Err(CniError::new(
                E_VERSION,
                format!(
                    "cniVersion: '{}' is not supported (supported: {})",
                    c.cni_version,
                    SUPPORTED_VERSIONS.join(", ")
                ),
            ));
        }
        let ipam_type = c.ipam.get("type").and_then(Value::as_str).unwrap_or("");
        if ipam_type.is_empty() || ipam_type.contains('/') {
            return Err(CniError::new(
                E_INVALID_CONFIG,
                "ipam.type: an IPAM plugin name is required (e.g. host-local)",
            ));
        }
        if c.mtu.is_some_and(|m| !(576..=1774).contains(&m)) {
            return Err(CniError::new(
                E_INVALID_CONFIG,
                "mtu: must be 576..=1774 (a uvs port holds 2 KiB frames)",
            ));
        }
        if let Some(t) = &c.port_type
            && !matches!(t.as_str(), "afpacket" | "system" | "afxdp")
        {
            return Err(CniError::new(
                E_INVALID_CONFIG,
                format!("portType: '{t}' is not afpacket, system or afxdp"),
            ));
        }
        if let Some(b) = &c.runtime_config.bandwidth {
            b.check()?;
        }
        for pm in &c.runtime_config.port_mappings {
            if !matches!(pm.proto(), "tcp" | "udp") {
                return Err(CniError::new(
                    E_UNSUPPORTED_FIELD,
                    format!("portMappings.protocol: '{}' is not tcp or udp", pm.protocol),
                ));
            }
            // Which address is the uplink's gateway is known once uvs answers (`map_ports`).
            if !pm.host_ip.is_empty() && pm.host_ip.parse::<Ipv4Addr>().is_err() {
                return Err(CniError::new(
                    E_UNSUPPORTED_FIELD,
                    format!(
                        "portMappings.hostIP: '{}' is not an IPv4 address (uvs maps ports on the uplink's gateway address: leave hostIP empty, 0.0.0.0 or that address)",
                        pm.host_ip
                    ),
                ));
            }
        }
        Ok(c)
    }

    /// The `cniVersion` of stdin, for error replies ("1.0.0" when unreadable).
    pub fn version_of(stdin: &[u8]) -> String {
        serde_json::from_slice::<Value>(stdin)
            .ok()
            .and_then(|v| v.get("cniVersion")?.as_str().map(str::to_string))
            .unwrap_or_else(|| "1.0.0".into())
    }

    /// The uvs bridge name.
    pub fn bridge(&self) -> &str {
        self.bridge.as_deref().unwrap_or(&self.name)
    }

    /// The control socket path.
    pub fn socket(&self) -> PathBuf {
        self.uvs_socket
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET))
    }

    /// The IPAM plugin name.
    pub fn ipam_type(&self) -> &str {
        self.ipam.get("type").and_then(Value::as_str).unwrap_or("")
    }

    /// The bridge on which port mappings are installed.
    pub fn dnat_bridge(&self) -> &str {
        self.uplink.as_deref().unwrap_or(self.bridge())
    }
}

/// An IPv4 address with its prefix length (`10.0.0.2/24`).
pub fn parse_cidr(s: &str) -> Option<(Ipv4Addr, u8)> {
    let (a, l) = s.split_once('/')?;
    let len: u8 = l.parse().ok()?;
    (len <= 32).then_some(())?;
    Some((a.parse().ok()?, len))
}

/// The network address of `a/len`.
pub fn network(a: Ipv4Addr, len: u8) -> Ipv4Addr {
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    Ipv4Addr::from(u32::from(a) & mask)
}
