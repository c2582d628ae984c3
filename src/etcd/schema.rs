//! flannel's etcd schema, IO-free: the network configuration at `PREFIX/config`, the subnet
//! lease keys `PREFIX/subnets/A.B.C.D-LEN` and their JSON values, and subnet allocation.
//!
//! Field names and defaults are flannel's (`pkg/subnet/config.go`, `pkg/lease/lease.go`,
//! `pkg/subnet/etcd/registry.go`): `Network` (/28 or larger), `SubnetLen` (default, as
//! flannel's `CheckNetworkConfig`: 24 for a Network of /22 or larger, else the Network's
//! prefix + 2; one given must be at most 30 and fit four times into the Network), `SubnetMin`
//! (default: the second subnet), `SubnetMax` (default: the last subnet; not below
//! `SubnetMin`), `Backend: {Type, VNI, Port}` (vxlan defaults: VNI 1, UDP 8472; a VNI has 24
//! bits). With vxlan the Network's first subnet is never handed out, even from a `SubnetMin`
//! that names it (the overlay bridge would get the Network's own address, as flannel's
//! comment on its default `SubnetMin` warns). A lease value is
//! `{"PublicIP", "BackendType", "BackendData": {"VNI", "VtepMAC"}}`. Unknown fields are
//! ignored, as flannel does (newer flannels add `PublicIPv6`, `EnableIPv6`, ...).

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use crate::wire::MacAddr;

/// flannel's default key prefix.
pub const DEFAULT_PREFIX: &str = "/coreos.com/network";
/// flannel's default VXLAN VNI.
pub const DEFAULT_VNI: u32 = 1;
/// flannel's default VXLAN UDP port (the Linux kernel's default, not IANA's 4789).
pub const DEFAULT_PORT: u16 = 8472;

/// The backend a network uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// VXLAN encapsulation: route via the peer subnet's first address on the overlay.
    Vxlan {
        /// VNI.
        vni: u32,
        /// UDP destination port.
        port: u16,
    },
    /// No encapsulation: route via the peer's PublicIP (peers share an L2 underlay).
    HostGw,
}

/// The largest VXLAN VNI (24 bits).
pub const MAX_VNI: u32 = (1 << 24) - 1;

/// Why `PREFIX/config` is refused; each message names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// Not JSON of flannel's shape.
    #[error("config: not flannel JSON: {0}")]
    Json(String),
    /// No `Network`.
    #[error("config: Network missing")]
    NoNetwork,
    /// `Network` is no prefix.
    #[error("Network: {0}")]
    Network(String),
    /// `Network` is smaller than a /28.
    #[error("Network: {0} is too small (flannel needs /28 or larger)")]
    NetworkTooSmall(String),
    /// `SubnetLen` above 30, or not leaving four subnets in the Network.
    #[error(
        "SubnetLen: {len} must be at most 30 and fit four times into the Network's /{network_len} (at least {})",
        network_len + 2
    )]
    SubnetLen {
        /// The SubnetLen given.
        len: u8,
        /// The Network's prefix length.
        network_len: u8,
    },
    /// `SubnetMin` or `SubnetMax` is no `SubnetLen` subnet of the Network.
    #[error("{field}: {value} is not a /{subnet_len} subnet of {network}")]
    NotASubnet {
        /// `SubnetMin` or `SubnetMax`.
        field: &'static str,
        /// Its value.
        value: Ipv4Addr,
        /// The SubnetLen.
        subnet_len: u8,
        /// The Network, as written.
        network: String,
    },
    /// `SubnetMin` above `SubnetMax` (either may be the default): nothing to hand out.
    #[error("SubnetMin: {min} is above SubnetMax {max}: no subnet to hand out")]
    MinAboveMax {
        /// SubnetMin.
        min: Ipv4Addr,
        /// SubnetMax.
        max: Ipv4Addr,
    },
    /// `Backend.VNI` above 24 bits.
    #[error("Backend.VNI: {0} does not fit in 24 bits (at most {MAX_VNI})")]
    Vni(u32),
    /// A backend uvs does not speak.
    #[error("Backend.Type: '{0}' (uvs speaks vxlan, host-gw)")]
    BackendType(String),
}

/// The network configuration at `PREFIX/config`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetConfig {
    /// The overlay network.
    pub network: (Ipv4Addr, u8),
    /// Length of each host's subnet.
    pub subnet_len: u8,
    /// First subnet handed out.
    pub subnet_min: Ipv4Addr,
    /// Last subnet handed out.
    pub subnet_max: Ipv4Addr,
    /// Backend.
    pub backend: Backend,
}

#[derive(Deserialize)]
struct RawConfig {
    #[serde(rename = "Network")]
    network: Option<String>,
    #[serde(rename = "SubnetLen", default)]
    subnet_len: Option<u8>,
    #[serde(rename = "SubnetMin", default)]
    subnet_min: Option<Ipv4Addr>,
    #[serde(rename = "SubnetMax", default)]
    subnet_max: Option<Ipv4Addr>,
    #[serde(rename = "Backend", default)]
    backend: Option<RawBackend>,
}

#[derive(Deserialize, Default)]
struct RawBackend {
    #[serde(rename = "Type", default)]
    kind: Option<String>,
    #[serde(rename = "VNI", default)]
    vni: Option<u32>,
    #[serde(rename = "Port", default)]
    port: Option<u16>,
}

fn mask(len: u8) -> u32 {
    if len == 0 { 0 } else { u32::MAX << (32 - len) }
}

impl NetConfig {
    /// Parse and validate flannel's JSON (see the module contract for the defaults).
    pub fn parse(json: &[u8]) -> Result<NetConfig, ConfigError> {
        let raw: RawConfig =
            serde_json::from_slice(json).map_err(|e| ConfigError::Json(e.to_string()))?;
        let net = raw.network.ok_or(ConfigError::NoNetwork)?;
        let (addr, len) = crate::route::parse_prefix(&net).map_err(ConfigError::Network)?;
        if len > 28 {
            return Err(ConfigError::NetworkTooSmall(net));
        }
        // flannel's CheckNetworkConfig: 0 is "not given".
        let subnet_len = match raw.subnet_len.filter(|l| *l > 0) {
            Some(l) if l > 30 || l < len + 2 => {
                return Err(ConfigError::SubnetLen {
                    len: l,
                    network_len: len,
                });
            }
            Some(l) => l,
            None if len <= 22 => 24,
            None => len + 2,
        };
        let base = u32::from(addr) & mask(len);
        let step = 1u32 << (32 - subnet_len);
        let last = (base | !mask(len)) & mask(subnet_len);
        let min = raw.subnet_min.unwrap_or(Ipv4Addr::from(base + step));
        let max = raw.subnet_max.unwrap_or(Ipv4Addr::from(last));
        for (field, value) in [("SubnetMin", min), ("SubnetMax", max)] {
            let v = u32::from(value);
            if v & mask(len) != base || v & !mask(subnet_len) != 0 {
                return Err(ConfigError::NotASubnet {
                    field,
                    value,
                    subnet_len,
                    network: net,
                });
            }
        }
        if min > max {
            return Err(ConfigError::MinAboveMax { min, max });
        }
        let b = raw.backend.unwrap_or_default();
        let backend = match b.kind.as_deref().unwrap_or("udp") {
            "vxlan" => Backend::Vxlan {
                vni: match b.vni.unwrap_or(DEFAULT_VNI) {
                    v if v > MAX_VNI => return Err(ConfigError::Vni(v)),
                    v => v,
                },
                port: b.port.unwrap_or(DEFAULT_PORT),
            },
            "host-gw" => Backend::HostGw,
            other => return Err(ConfigError::BackendType(other.into())),
        };
        Ok(NetConfig {
            network: (Ipv4Addr::from(base), len),
            subnet_len,
            subnet_min: min,
            subnet_max: max,
            backend,
        })
    }

    /// flannel's `BackendType` text.
    pub fn backend_type(&self) -> &'static str {
        match self.backend {
            Backend::Vxlan { .. } => "vxlan",
            Backend::HostGw => "host-gw",
        }
    }

    /// Whether this host can use `subnet` (a subnet of the Network): with vxlan not the
    /// Network's first one, whose network address the overlay bridge would get (the switch
    /// refuses a gateway on a network address, and a lease of it was tried forever).
    fn usable(&self, subnet: u32) -> bool {
        !(matches!(self.backend, Backend::Vxlan { .. }) && subnet == u32::from(self.network.0))
    }

    /// The first free usable subnet from `SubnetMin` to `SubnetMax`, given the subnets taken.
    pub fn first_free(&self, taken: &[Ipv4Addr]) -> Option<Ipv4Addr> {
        let step = 1u32 << (32 - self.subnet_len);
        let mut s = u32::from(self.subnet_min);
        let max = u32::from(self.subnet_max);
        while s <= max {
            if self.usable(s) && !taken.iter().any(|t| u32::from(*t) == s) {
                return Some(Ipv4Addr::from(s));
            }
            s = s.checked_add(step)?;
        }
        None
    }

    /// True if `subnet` is one this network hands out.
    pub fn owns(&self, subnet: Ipv4Addr, len: u8) -> bool {
        let s = u32::from(subnet);
        len == self.subnet_len
            && self.usable(s)
            && s >= u32::from(self.subnet_min)
            && s <= u32::from(self.subnet_max)
            && s & !mask(len) == 0
    }
}

/// The key of a subnet lease: `PREFIX/subnets/10.5.1.0-24`.
pub fn subnet_key(prefix: &str, subnet: Ipv4Addr, len: u8) -> String {
    format!("{}/subnets/{subnet}-{len}", prefix.trim_end_matches('/'))
}

/// The subnet a lease key names, or None when the key is not one.
pub fn parse_subnet_key(prefix: &str, key: &str) -> Option<(Ipv4Addr, u8)> {
    check_subnet_key(prefix, key).ok()
}

/// The subnet a lease key names, or why the key is none (`A.B.C.D-LEN` under
/// `PREFIX/subnets/`, LEN at most 32, no host bits set).
pub fn check_subnet_key(prefix: &str, key: &str) -> Result<(Ipv4Addr, u8), String> {
    let name = key
        .strip_prefix(prefix.trim_end_matches('/'))
        .and_then(|r| r.strip_prefix("/subnets/"))
        .ok_or("not under PREFIX/subnets/")?;
    let bad = || format!("'{name}' is not a subnet lease key (A.B.C.D-LEN)");
    let (ip, len) = name.split_once('-').ok_or_else(bad)?;
    let ip: Ipv4Addr = ip.parse().map_err(|_| bad())?;
    let len: u8 = len.parse().ok().filter(|l| *l <= 32).ok_or_else(bad)?;
    if u32::from(ip) & !mask(len) != 0 {
        return Err(format!(
            "'{name}' is not a subnet lease key: {ip} has host bits set for /{len}"
        ));
    }
    Ok((ip, len))
}

/// flannel's `BackendData` for vxlan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct BackendData {
    /// VNI.
    #[serde(rename = "VNI", default)]
    pub vni: u32,
    /// The host's VTEP MAC, "aa:bb:cc:dd:ee:ff".
    #[serde(rename = "VtepMAC", default)]
    pub vtep_mac: String,
}

/// A subnet lease's value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseAttrs {
    /// The host's underlay address.
    #[serde(rename = "PublicIP")]
    pub public_ip: Ipv4Addr,
    /// "vxlan" or "host-gw".
    #[serde(rename = "BackendType", default)]
    pub backend_type: String,
    /// VXLAN data (absent for host-gw).
    #[serde(
        rename = "BackendData",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub backend_data: Option<BackendData>,
}

impl LeaseAttrs {
    /// Parse a lease value.
    pub fn parse(json: &[u8]) -> Result<LeaseAttrs, String> {
        serde_json::from_slice(json).map_err(|e| format!("lease: not flannel JSON: {e}"))
    }

    /// The VTEP MAC of a vxlan lease.
    pub fn vtep_mac(&self) -> Result<MacAddr, String> {
        let d = self
            .backend_data
            .as_ref()
            .ok_or("BackendData: missing (vxlan)")?;
        d.vtep_mac
            .parse()
            .map_err(|e: String| format!("BackendData.VtepMAC: {e}"))
    }

    /// JSON text, as flannel writes it.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// flannel's `subnet.env` (`/run/flannel/subnet.env`): what CNI plugins read, and what uvs
/// reads back at start to ask for the same subnet again. `mtu` is the containers' MTU (the
/// tunnel's inner MTU with vxlan). One line is uvs's own, `UVS_BACKEND` (CNI's flannel plugin
/// ignores keys it does not know): the MTU alone cannot tell vxlan from host-gw on a jumbo
/// underlay.
pub fn subnet_env(cfg: &NetConfig, subnet: Ipv4Addr, mtu: u32) -> String {
    format!(
        "FLANNEL_NETWORK={}/{}\nFLANNEL_SUBNET={}/{}\nFLANNEL_MTU={mtu}\nFLANNEL_IPMASQ=false\nUVS_BACKEND={}\n",
        cfg.network.0,
        cfg.network.1,
        Ipv4Addr::from(u32::from(subnet) + 1),
        cfg.subnet_len,
        cfg.backend_type()
    )
}

/// The subnet a `subnet.env` text names (`FLANNEL_SUBNET=10.5.1.1/24` -> 10.5.1.0/24).
pub fn parse_subnet_env(text: &str) -> Option<(Ipv4Addr, u8)> {
    let v = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("FLANNEL_SUBNET="))?;
    let (ip, len) = v.split_once('/')?;
    let ip: Ipv4Addr = ip.parse().ok()?;
    let len: u8 = len.parse().ok().filter(|l| *l <= 32)?;
    Some((Ipv4Addr::from(u32::from(ip) & mask(len)), len))
}

/// The network and our subnet as a `subnet.env` we wrote records them, for the gateways of
/// our last lease while etcd does not answer (a start during an etcd outage). The backend is
/// `UVS_BACKEND`, or in a file written before it, told by the MTU (vxlan: below 1500); its VNI
/// and port are not needed for our own gateways and are left at flannel's defaults.
pub fn saved_config(text: &str) -> Option<(NetConfig, Ipv4Addr)> {
    let field = |k: &str| text.lines().find_map(|l| l.trim().strip_prefix(k));
    let (subnet, subnet_len) = parse_subnet_env(text)?;
    let (ip, len) = field("FLANNEL_NETWORK=")?.split_once('/')?;
    let network = (
        ip.parse().ok()?,
        len.parse().ok().filter(|l: &u8| *l <= subnet_len)?,
    );
    let mtu: u32 = field("FLANNEL_MTU=")?.parse().ok()?;
    let vxlan = Backend::Vxlan { vni: 1, port: 8472 };
    let backend = match field("UVS_BACKEND=") {
        Some("host-gw") => Backend::HostGw,
        Some(_) => vxlan,
        None if mtu < 1500 => vxlan,
        None => Backend::HostGw,
    };
    let cfg = NetConfig {
        network,
        subnet_len,
        subnet_min: subnet,
        subnet_max: subnet,
        backend,
    };
    Some((cfg, subnet))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saved_config_gives_back_the_network_subnet_and_backend() {
        let c =
            NetConfig::parse(br#"{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}"#).unwrap();
        let (s, subnet) = saved_config(&subnet_env(&c, Ipv4Addr::new(10, 5, 7, 0), 1450)).unwrap();
        assert_eq!((s.network, s.subnet_len), (c.network, 24));
        assert_eq!(subnet, Ipv4Addr::new(10, 5, 7, 0));
        assert!(matches!(s.backend, Backend::Vxlan { .. }));
        // A vxlan tunnel over a jumbo underlay: its MTU says nothing of the backend.
        let (j, _) = saved_config(&subnet_env(&c, Ipv4Addr::new(10, 5, 7, 0), 8950)).unwrap();
        assert!(matches!(j.backend, Backend::Vxlan { .. }));
        let hg = NetConfig::parse(br#"{"Network":"10.5.0.0/16","Backend":{"Type":"host-gw"}}"#);
        let env = subnet_env(&hg.unwrap(), Ipv4Addr::new(10, 5, 7, 0), 1500);
        assert!(matches!(
            saved_config(&env).unwrap().0.backend,
            Backend::HostGw
        ));
        // Written before UVS_BACKEND: told by the MTU.
        let old = "FLANNEL_NETWORK=10.5.0.0/16\nFLANNEL_SUBNET=10.5.7.1/24\nFLANNEL_MTU=1500\n";
        assert!(matches!(
            saved_config(old).unwrap().0.backend,
            Backend::HostGw
        ));
        assert!(saved_config("FLANNEL_SUBNET=10.5.7.1/24\n").is_none());
    }

    #[test]
    fn flannel_config_with_defaults() {
        let c =
            NetConfig::parse(br#"{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}"#).unwrap();
        assert_eq!(c.network, (Ipv4Addr::new(10, 5, 0, 0), 16));
        assert_eq!(c.subnet_len, 24);
        assert_eq!(
            c.subnet_min,
            Ipv4Addr::new(10, 5, 1, 0),
            "flannel skips the first"
        );
        assert_eq!(c.subnet_max, Ipv4Addr::new(10, 5, 255, 0));
        assert_eq!(c.backend, Backend::Vxlan { vni: 1, port: 8472 });
        let c = NetConfig::parse(
            br#"{"Network":"10.6.0.0/16","SubnetLen":26,"Backend":{"Type":"vxlan","VNI":7,"Port":4789},"EnableIPv6":false}"#,
        )
        .unwrap();
        assert_eq!(c.backend, Backend::Vxlan { vni: 7, port: 4789 });
        assert_eq!(c.subnet_min, Ipv4Addr::new(10, 6, 0, 64));
        let c = NetConfig::parse(br#"{"Network":"10.7.0.0/16","Backend":{"Type":"host-gw"}}"#);
        assert_eq!(c.unwrap().backend, Backend::HostGw);
    }

    #[test]
    fn bad_configs_name_the_field() {
        let e = |j: &str| NetConfig::parse(j.as_bytes()).unwrap_err().to_string();
        assert!(e(r#"{"SubnetLen":24}"#).contains("Network"));
        assert!(e(r#"{"Network":"10.5.0.0/16","SubnetLen":16}"#).contains("SubnetLen"));
        assert!(
            e(r#"{"Network":"10.5.0.0/16","Backend":{"Type":"udp"}}"#).contains("Backend.Type")
        );
        assert!(
            e(r#"{"Network":"10.5.0.0/16","SubnetMin":"10.6.0.0","Backend":{"Type":"vxlan"}}"#)
                .contains("SubnetMin")
        );
        assert!(e("not json").contains("config"));
    }

    fn parse(j: &str) -> Result<NetConfig, String> {
        NetConfig::parse(j.as_bytes()).map_err(|e| e.to_string())
    }

    /// SubnetLen defaults as flannel's (`CheckNetworkConfig`): 24 for a Network of /22 or
    /// larger, else the Network's prefix + 2; one given must fit at least four times into the
    /// Network. Found by a tester: uvs always took 24 and refused a /24 Network.
    #[test]
    fn subnet_len_defaults_as_flannels() {
        let len = |net: &str| {
            parse(&format!(
                r#"{{"Network":"{net}","Backend":{{"Type":"vxlan"}}}}"#
            ))
            .map(|c| c.subnet_len)
        };
        assert_eq!(len("10.0.0.0/8"), Ok(24));
        assert_eq!(len("10.7.0.0/22"), Ok(24));
        assert_eq!(len("10.7.0.0/23"), Ok(25));
        assert_eq!(len("10.7.0.0/24"), Ok(26));
        assert_eq!(len("10.7.0.0/28"), Ok(30));
        assert!(len("10.7.0.0/29").unwrap_err().contains("Network"));
        let c = parse(r#"{"Network":"10.7.0.0/24","Backend":{"Type":"vxlan"}}"#).unwrap();
        assert_eq!(
            (c.subnet_min, c.subnet_max),
            (Ipv4Addr::new(10, 7, 0, 64), Ipv4Addr::new(10, 7, 0, 192))
        );
        let e = parse(r#"{"Network":"10.7.0.0/23","SubnetLen":24,"Backend":{"Type":"vxlan"}}"#)
            .unwrap_err();
        assert!(e.contains("SubnetLen") && e.contains("four"), "{e}");
    }

    /// With vxlan the Network's first subnet is never handed out, even when SubnetMin names
    /// it: the overlay bridge would get the Network's own address. Found by a tester: uvs
    /// leased it, failed to program it and tried the same subnet again forever.
    #[test]
    fn the_networks_first_subnet_is_skipped_with_vxlan() {
        let s = |n: u8| Ipv4Addr::new(10, 7, n, 0);
        let c = parse(
            r#"{"Network":"10.7.0.0/16","SubnetMin":"10.7.0.0","SubnetMax":"10.7.2.0","Backend":{"Type":"vxlan"}}"#,
        )
        .unwrap();
        assert_eq!(c.first_free(&[]), Some(s(1)));
        assert_eq!(c.first_free(&[s(1), s(2)]), None);
        assert!(!c.owns(s(0), 24) && c.owns(s(1), 24));
        // host-gw gives the subnet's .1 to the containers' bridge only: the first one works.
        let h = parse(
            r#"{"Network":"10.7.0.0/16","SubnetMin":"10.7.0.0","Backend":{"Type":"host-gw"}}"#,
        )
        .unwrap();
        assert_eq!(h.first_free(&[]), Some(s(0)));
    }

    /// SubnetMin above SubnetMax is refused naming both (not "no free subnet" at lease
    /// time), and so is a VNI above 24 bits (found by a tester: both were accepted).
    #[test]
    fn subnet_min_above_max_and_a_vni_above_24_bits_are_refused() {
        let e = parse(
            r#"{"Network":"10.5.0.0/16","SubnetMin":"10.5.9.0","SubnetMax":"10.5.3.0","Backend":{"Type":"vxlan"}}"#,
        )
        .unwrap_err();
        for part in ["SubnetMin", "10.5.9.0", "SubnetMax", "10.5.3.0"] {
            assert!(e.contains(part), "{part}: {e}");
        }
        let vni = |v: u32| {
            parse(&format!(
                r#"{{"Network":"10.5.0.0/16","Backend":{{"Type":"vxlan","VNI":{v}}}}}"#
            ))
        };
        let e = vni(16_777_216).unwrap_err();
        assert!(e.contains("Backend.VNI") && e.contains("16777216"), "{e}");
        assert_eq!(
            vni(16_777_215).unwrap().backend,
            Backend::Vxlan {
                vni: 16_777_215,
                port: 8472
            }
        );
    }

    #[test]
    fn lease_keys() {
        let p = DEFAULT_PREFIX;
        let k = subnet_key(p, Ipv4Addr::new(10, 5, 1, 0), 24);
        assert_eq!(k, "/coreos.com/network/subnets/10.5.1.0-24");
        assert_eq!(
            parse_subnet_key(p, &k),
            Some((Ipv4Addr::new(10, 5, 1, 0), 24))
        );
        assert_eq!(parse_subnet_key("/coreos.com/network/", &k).unwrap().1, 24);
        assert_eq!(parse_subnet_key(p, "/coreos.com/network/config"), None);
        assert_eq!(
            parse_subnet_key(p, "/coreos.com/network/subnets/10.5.1.1-24"),
            None
        );
        assert_eq!(
            parse_subnet_key(p, "/coreos.com/network/subnets/x-24"),
            None
        );
        assert_eq!(parse_subnet_key("/other", &k), None);
    }

    /// A key under PREFIX/subnets/ that is no lease key says why, naming it (found trying
    /// uvs as a hostile peer: such keys were dropped without a word).
    #[test]
    fn keys_that_are_no_lease_say_why() {
        let p = "/n";
        for name in [
            "garbage",
            "10.55.300.0-24",
            "10.55.1.0-24/extra",
            "10.55.1.0-33",
        ] {
            let e = check_subnet_key(p, &format!("/n/subnets/{name}")).unwrap_err();
            assert!(e.contains(name) && e.contains("A.B.C.D-LEN"), "{e}");
        }
        let e = check_subnet_key(p, "/n/subnets/10.55.1.0-16").unwrap_err();
        assert!(e.contains("10.55.1.0-16") && e.contains("host bits"), "{e}");
        assert_eq!(
            check_subnet_key(p, "/n/subnets/10.55.1.0-24"),
            Ok((Ipv4Addr::new(10, 55, 1, 0), 24))
        );
    }

    #[test]
    fn lease_values_as_flannel_writes_them() {
        // Verbatim from a flannel v0.22 host's etcd.
        let v = br#"{"PublicIP":"10.252.0.3","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"a6:1c:2d:3e:4f:50"}}"#;
        let l = LeaseAttrs::parse(v).unwrap();
        assert_eq!(l.public_ip, Ipv4Addr::new(10, 252, 0, 3));
        assert_eq!(l.backend_type, "vxlan");
        assert_eq!(l.vtep_mac().unwrap().to_string(), "a6:1c:2d:3e:4f:50");
        let back = LeaseAttrs::parse(l.to_json().as_bytes()).unwrap();
        assert_eq!(back, l);
        assert!(l.to_json().contains(r#""VtepMAC":"a6:1c:2d:3e:4f:50""#));
        let hg = LeaseAttrs::parse(br#"{"PublicIP":"10.252.0.4","BackendType":"host-gw"}"#);
        assert!(hg.unwrap().vtep_mac().unwrap_err().contains("BackendData"));
        assert!(LeaseAttrs::parse(br#"{"BackendType":"vxlan"}"#).is_err());
    }

    #[test]
    fn allocation_skips_taken_subnets_and_stops_at_max() {
        let c = NetConfig::parse(
            br#"{"Network":"10.5.0.0/16","SubnetMin":"10.5.1.0","SubnetMax":"10.5.3.0","Backend":{"Type":"vxlan"}}"#,
        )
        .unwrap();
        let s = |n: u8| Ipv4Addr::new(10, 5, n, 0);
        assert_eq!(c.first_free(&[]), Some(s(1)));
        assert_eq!(c.first_free(&[s(1), s(3)]), Some(s(2)));
        assert_eq!(c.first_free(&[s(1), s(2), s(3)]), None);
        assert!(c.owns(s(2), 24) && !c.owns(s(4), 24) && !c.owns(s(2), 25));
    }

    #[test]
    fn subnet_env_round_trip() {
        let c =
            NetConfig::parse(br#"{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}"#).unwrap();
        let t = subnet_env(&c, Ipv4Addr::new(10, 5, 7, 0), 1450);
        assert!(t.contains("FLANNEL_NETWORK=10.5.0.0/16\n"));
        assert!(t.contains("FLANNEL_SUBNET=10.5.7.1/24\n"));
        assert_eq!(parse_subnet_env(&t), Some((Ipv4Addr::new(10, 5, 7, 0), 24)));
        assert_eq!(parse_subnet_env("junk"), None);
    }
}
