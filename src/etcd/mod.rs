//! The etcd overlay: uvs hosts (and kernel flannel hosts) find each other through etcd, in
//! flannel's schema ([`schema`]), and each host programs routes to the others.
//!
//! Contract:
//! - `uvs run --etcd URL` (or an `[etcd]` table in the `--config` file) starts one thread with
//!   a current-thread tokio runtime ([`agent`]); it never runs on the datapath worker and talks
//!   to it only through [`Command::Overlay`](crate::worker::Command::Overlay), like the control
//!   socket does.
//! - The agent reads `PREFIX/config` (with the vxlan backend, its `VNI` and `Port` must be the
//!   vxlan port's `vni` and `dst_port`, or the session ends with an error naming both and
//!   nothing is leased), leases a subnet `PREFIX/subnets/A.B.C.D-LEN` with an etcd
//!   lease of `ttl` seconds renewed every `ttl/3`, holding `PublicIP` and `BackendData {VNI,
//!   VtepMAC}`; the subnet is written to `state_file` (flannel's `subnet.env` format, with
//!   `FLANNEL_MTU` the vxlan port's inner MTU, plus our `UVS_BACKEND` line) and asked
//!   for again at the next start. Creating a lease is a transaction on the key's create revision
//!   (two hosts never hold one subnet); taking back our own subnet is a transaction on its mod
//!   revision and needs our `PublicIP` in it. Without a subnet of our own (no state file),
//!   a lease of the Network that etcd holds under our `PublicIP` and backend is taken back
//!   (flannel's `findLeaseByIP`) before a free subnet is leased.
//! - Our `PublicIP` (without `public_ip` in `[etcd]`: the vxlan port's `local_ip`) is read
//!   again at every session and every 2 s while connected: when a reload (or `set-port`) moved
//!   it, our lease is rewritten with the new `PublicIP`, same subnet and same etcd lease (a
//!   transaction on the key still being on our lease; else the session ends and the subnet is
//!   taken again under the new address).
//! - Our lease key stays ours while this process holds it ([`own_key`]): a write over it by
//!   anybody else is written back at once (our value on our etcd lease, a transaction on that
//!   write's mod revision) with an ERROR naming the value written, and is never a reason to
//!   take another subnet or to adopt a lease under our PublicIP that appeared meanwhile.
//!   Deleted (or expired with our etcd lease during an outage), the same subnet is leased
//!   again while it is free. Deleted and leased by another host (its create revision
//!   changed), it is lost: the bridges keep their addresses (renumbering the containers'
//!   gateway cuts them all off), `overlay-show` says `overlay DOWN` with the holder's value,
//!   the log says ERROR, and the agent retries with back-off until that key goes. Only a
//!   changed `PREFIX/config`, or a restart that finds the state file's subnet held by
//!   another host, leases another subnet (flanneld logs "lease has been revoked" and exits).
//! - For every other lease that [`check_peer`] accepts (a `SubnetLen` subnet of the Network,
//!   not overlapping ours, not under our own PublicIP or VtepMAC, its PublicIP a unicast
//!   address outside the Network, its VtepMAC a unicast non-zero MAC; the others are shown
//!   with the reason and logged once) it programs what flannel programs ([`peer_ops`]) as derived state
//!   (left out of the database): vxlan: a PERMANENT neighbour for the subnet's first address to
//!   the VtepMAC on the overlay bridge, a static FDB entry VtepMAC -> PublicIP on the vxlan
//!   port, a route to the subnet via that address; host-gw: a route via PublicIP. A deleted or
//!   expired lease removes them; a changed lease replaces them. What leases share is removed
//!   only with the last of them: of leases with one VtepMAC the newest (etcd mod revision)
//!   gets the FDB entry, and when it goes the entry is pointed back at the newest remaining
//!   one (flannel deletes FDB entries by MAC and address); the vxlan port accepts a PublicIP
//!   while any FDB entry sends to it. Every (re)sync programs every peer again.
//! - A changed `PREFIX/config`, noticed at the next session, drops every peer, revokes our
//!   etcd lease (its key goes at once, not with its TTL) and leases in the new Network.
//! - It lists the subnets (a revision R) and watches from R+1: no event is missed. On any error
//!   (etcd down, watch cancelled, lease lost, a request or renewal unanswered for a third of
//!   the TTL, 2 to 10 s, or an HTTP/2 keep-alive ping unanswered: a silent path or a frozen
//!   etcd gives no error otherwise) what is programmed stays (forwarding continues),
//!   the agent retries with back-off (0.5 s doubling to 30 s) and resyncs from a new list.
//! - `uvs ctl overlay-show` shows the lease, its renewal state and every peer with its age and
//!   whether it is programmed: all of its ops applied by the switch, or the refusal or the
//!   switch's first error (retried at the next resync); keys under `subnets/` that are no
//!   lease key (`garbage`, `10.5.300.0-24`, `10.5.1.0-16`) and values that are no flannel
//!   JSON are listed as `key KEY not programmed: ignored: WHY`. Refused leases and such keys
//!   are logged (WARN) at most once a second, the next line counting those not logged. The
//!   status it reads is rewritten at most every 200 ms while leases keep coming (rewriting
//!   it copies every peer: per event, thousands of leases written one by one took minutes).

pub mod agent;
pub mod schema;

use std::net::Ipv4Addr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::wire::MacAddr;
use crate::worker::OverlayOp;
use schema::{Backend, LeaseAttrs, NetConfig};

/// Default lease TTL in seconds (flannel's: 24 h).
pub const DEFAULT_TTL: u64 = 86_400;

fn default_prefix() -> String {
    schema::DEFAULT_PREFIX.to_string()
}
fn default_bridge() -> String {
    "br0".into()
}
fn default_overlay() -> String {
    "flannel".into()
}
fn default_port() -> String {
    "flannel.1".into()
}
fn default_ttl() -> u64 {
    DEFAULT_TTL
}

/// The `[etcd]` table of the configuration file (`--etcd`/`--etcd-prefix` override the first
/// two keys).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct EtcdSpec {
    /// etcd client URLs, e.g. `["http://127.0.0.1:2379"]`.
    pub endpoints: Vec<String>,
    /// Key prefix (flannel's `--etcd-prefix`), default `/coreos.com/network`.
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// The containers' bridge: its gateway becomes the leased subnet's first host address.
    #[serde(default = "default_bridge")]
    pub bridge: String,
    /// vxlan backend: the bridge holding the vxlan port (flannel's `flannel.1` device); its
    /// gateway becomes the subnet's network address on the whole Network, its gateway MAC is
    /// the VtepMAC announced.
    #[serde(default = "default_overlay")]
    pub overlay_bridge: String,
    /// vxlan backend: the vxlan port in `overlay_bridge`; its `vni` and `dst_port` must be the
    /// Network's `Backend.VNI` and `Backend.Port` (checked at every session: nothing is leased
    /// while they differ, and `overlay-show` names both).
    #[serde(default = "default_port")]
    pub vxlan_port: String,
    /// This host's underlay address (default: the vxlan port's `local_ip`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_ip: Option<Ipv4Addr>,
    /// Lease TTL in seconds (renewed every third of it).
    #[serde(default = "default_ttl")]
    pub ttl: u64,
    /// Where the leased subnet is kept across restarts (flannel's subnet.env format); default:
    /// the control socket's path with the extension `subnet.env`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_file: Option<PathBuf>,
}

impl EtcdSpec {
    /// What the overlay needs from the configuration it starts with: its containers' bridge,
    /// and without `public_ip` its vxlan port (whose `local_ip` is this host's address).
    pub fn check_against(&self, c: &crate::config::Config) -> Result<(), String> {
        if !c.bridge.iter().any(|b| b.name == self.bridge) {
            return Err(format!(
                "etcd.bridge: no bridge '{}' in the configuration",
                self.bridge
            ));
        }
        let has_port = c.bridge.iter().any(|b| {
            b.name == self.overlay_bridge
                && b.port
                    .iter()
                    .any(|p| p.name == self.vxlan_port && p.kind == crate::port::PortKind::Vxlan)
        });
        if self.public_ip.is_none() && !has_port {
            return Err(format!(
                "etcd.public_ip: not set, and there is no vxlan port '{}' in bridge '{}' to take its local_ip from",
                self.vxlan_port, self.overlay_bridge
            ));
        }
        Ok(())
    }

    /// A spec with defaults for `endpoint`.
    pub fn new(endpoint: &str) -> EtcdSpec {
        EtcdSpec {
            endpoints: vec![endpoint.to_string()],
            prefix: default_prefix(),
            bridge: default_bridge(),
            overlay_bridge: default_overlay(),
            vxlan_port: default_port(),
            public_ip: None,
            ttl: DEFAULT_TTL,
            state_file: None,
        }
    }

    /// Check the values (errors name the field).
    pub fn validate(&self) -> Result<(), String> {
        if self.endpoints.is_empty() {
            return Err("etcd.endpoints: empty".into());
        }
        for e in &self.endpoints {
            if !(e.starts_with("http://") || e.starts_with("https://")) {
                return Err(format!("etcd.endpoints: '{e}' is not an http:// URL"));
            }
        }
        if !self.prefix.starts_with('/') {
            return Err(format!("etcd.prefix: '{}' must start with /", self.prefix));
        }
        if !(5..=1_000_000).contains(&self.ttl) {
            return Err(format!("etcd.ttl: {} (5 to 1000000 seconds)", self.ttl));
        }
        Ok(())
    }
}

/// A peer's lease, as programmed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerLease {
    /// Its subnet.
    pub subnet: Ipv4Addr,
    /// Subnet length.
    pub len: u8,
    /// Its value.
    pub attrs: LeaseAttrs,
}

/// Why a peer's lease is refused before anything is programmed for it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeerRefused {
    /// Its key is not a `SubnetLen` subnet of the Network (a hand-written or foreign key):
    /// routing it could take any address range, e.g. part of our own containers' subnet.
    #[error(
        "ignored: {subnet}/{len} is not a /{subnet_len} subnet of the Network {network}/{network_len}"
    )]
    NotOfTheNetwork {
        /// The lease's subnet.
        subnet: Ipv4Addr,
        /// Its length.
        len: u8,
        /// The network's `SubnetLen`.
        subnet_len: u8,
        /// The Network.
        network: Ipv4Addr,
        /// The Network's length.
        network_len: u8,
    },
    /// It overlaps the subnet we hold.
    #[error("ignored: {subnet}/{len} overlaps our subnet {own}/{own_len}")]
    OverlapsOurs {
        /// The lease's subnet.
        subnet: Ipv4Addr,
        /// Its length.
        len: u8,
        /// Our subnet.
        own: Ipv4Addr,
        /// Its length.
        own_len: u8,
    },
    /// Its PublicIP is ours: a lease this host left behind (before a Network change, or a
    /// restart that leased another subnet), not a peer.
    #[error("ignored: PublicIP {0} is ours (a lease this host left behind)")]
    OurPublicIp(Ipv4Addr),
    /// Its VtepMAC is ours: another host with our host id (one machine-id: a cloned VM, or
    /// network namespaces playing hosts on one machine). Its FDB entry would send our own
    /// overlay MAC into the tunnel; neither host can reach the other.
    #[error(
        "ignored: VtepMAC {0} is ours: that host has our host id (one machine-id?); give each host its own"
    )]
    OurVtepMac(MacAddr),
    /// Its PublicIP cannot be a VTEP: unspecified, loopback, multicast, broadcast or
    /// reserved (240/4). Its FDB entry would send the tunnel nowhere (or to ourselves).
    #[error("ignored: PublicIP {ip} is not a unicast address ({why})")]
    PublicIpNotUnicast {
        /// The lease's PublicIP.
        ip: Ipv4Addr,
        /// What it is.
        why: &'static str,
    },
    /// Its PublicIP is inside the overlay Network: a VTEP is an underlay address, and the
    /// tunnel to it would itself be routed into the overlay.
    #[error("ignored: PublicIP {ip} is inside the overlay Network {network}/{network_len}")]
    PublicIpInNetwork {
        /// The lease's PublicIP.
        ip: Ipv4Addr,
        /// The Network.
        network: Ipv4Addr,
        /// Its length.
        network_len: u8,
    },
    /// Its VtepMAC (vxlan) is a group (broadcast, multicast) or all-zero address: not a
    /// host's, and `fdb-add` refuses such a static entry.
    #[error("ignored: VtepMAC {mac} is not a unicast address ({why})")]
    VtepMacNotUnicast {
        /// The lease's VtepMAC.
        mac: MacAddr,
        /// What it is.
        why: &'static str,
    },
}

/// Why `ip` cannot be a VTEP's underlay address, or None when it can.
pub fn not_unicast(ip: Ipv4Addr) -> Option<&'static str> {
    if ip.is_unspecified() {
        Some("unspecified")
    } else if ip.is_loopback() {
        Some("loopback")
    } else if ip.is_broadcast() {
        Some("broadcast")
    } else if ip.is_multicast() {
        Some("multicast")
    } else if ip.octets()[0] >= 240 {
        Some("reserved")
    } else {
        None
    }
}

fn mask(len: u8) -> u32 {
    if len == 0 { 0 } else { u32::MAX << (32 - len) }
}

/// Whether a peer's lease may be programmed at all: its key is a `SubnetLen` subnet of the
/// Network, it does not overlap `own` (our subnet), its PublicIP is not `public_ip` (ours)
/// and its VtepMAC is not `own_mac` (ours); its PublicIP is a unicast address outside the
/// Network and (vxlan) its VtepMAC a unicast, non-zero MAC. flannel trusts every key; a stray
/// or hand-written one could route away part of our own containers' subnet (found by a
/// tester), and impossible VTEPs were shown "programmed" (found trying uvs as a hostile peer).
pub fn check_peer(
    cfg: &NetConfig,
    own: Option<(Ipv4Addr, u8)>,
    public_ip: Ipv4Addr,
    own_mac: Option<MacAddr>,
    p: &PeerLease,
) -> Result<(), PeerRefused> {
    let (net, net_len) = cfg.network;
    let s = u32::from(p.subnet);
    if p.len != cfg.subnet_len || s & mask(net_len) != u32::from(net) {
        return Err(PeerRefused::NotOfTheNetwork {
            subnet: p.subnet,
            len: p.len,
            subnet_len: cfg.subnet_len,
            network: net,
            network_len: net_len,
        });
    }
    if let Some((o, ol)) = own {
        let m = mask(ol.min(p.len));
        if s & m == u32::from(o) & m {
            return Err(PeerRefused::OverlapsOurs {
                subnet: p.subnet,
                len: p.len,
                own: o,
                own_len: ol,
            });
        }
    }
    let ip = p.attrs.public_ip;
    if ip == public_ip {
        return Err(PeerRefused::OurPublicIp(public_ip));
    }
    if let Some(why) = not_unicast(ip) {
        return Err(PeerRefused::PublicIpNotUnicast { ip, why });
    }
    if u32::from(ip) & mask(net_len) == u32::from(net) {
        return Err(PeerRefused::PublicIpInNetwork {
            ip,
            network: net,
            network_len: net_len,
        });
    }
    let Backend::Vxlan { .. } = cfg.backend else {
        return Ok(());
    };
    if let Ok(theirs) = p.attrs.vtep_mac() {
        if own_mac == Some(theirs) {
            return Err(PeerRefused::OurVtepMac(theirs));
        }
        let why = if theirs.is_zero() {
            Some("all zeros")
        } else if theirs.is_multicast() {
            Some(if theirs == MacAddr::BROADCAST {
                "broadcast"
            } else {
                "multicast"
            })
        } else {
            None
        };
        if let Some(why) = why {
            return Err(PeerRefused::VtepMacNotUnicast { mac: theirs, why });
        }
    }
    Ok(())
}

/// What etcd holds at our own lease key, and so what the agent does (see [`own_key`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OwnKey {
    /// Our value, on our etcd lease: nothing to do.
    Ours,
    /// Another value (another host's, or ours before our PublicIP moved) written over our
    /// key without deleting it (its create revision is still ours): the subnet is still ours;
    /// write our value back, on our etcd lease (a transaction on the key's mod revision).
    Overwritten,
    /// No such key (deleted, or expired with our etcd lease during an outage): lease the same
    /// subnet again while it is free (a transaction on its create revision).
    Gone,
    /// Created again since we held it (deleted, then leased by another host): the subnet is
    /// lost. The containers' bridge keeps its address (no renumbering under running
    /// containers), the overlay is shown DOWN and nothing is leased until the key is free
    /// again or uvs restarts.
    Taken,
}

/// What a watch event or a list shows at our lease key (`kv`: its etcd lease, create
/// revision and value, if it parses), against what we hold (`lease_id`, the key's
/// `create_rev` when we wrote it, and `ours`, our value). A write by anybody else is never
/// a reason to give the subnet up: only its deletion is (found trying uvs as a hostile peer:
/// one foreign write moved the host to another subnet and renumbered its containers' gateway).
pub fn own_key(
    lease_id: i64,
    create_rev: i64,
    ours: &LeaseAttrs,
    kv: Option<(i64, i64, Option<&LeaseAttrs>)>,
) -> OwnKey {
    match kv {
        None => OwnKey::Gone,
        Some((lease, _, Some(a))) if lease == lease_id && a == ours => OwnKey::Ours,
        Some((_, c, _)) if c == create_rev => OwnKey::Overwritten,
        Some(_) => OwnKey::Taken,
    }
}

/// What flannel programs for a peer's lease (and what removes it: [`peer_del_ops`]).
pub fn peer_ops(cfg: &NetConfig, spec: &EtcdSpec, p: &PeerLease) -> Result<Vec<OverlayOp>, String> {
    if p.attrs.backend_type != cfg.backend_type() {
        return Err(format!(
            "BackendType: '{}' but the network uses '{}'",
            p.attrs.backend_type,
            cfg.backend_type()
        ));
    }
    match cfg.backend {
        Backend::Vxlan { vni, .. } => {
            let mac = p.attrs.vtep_mac()?;
            let data_vni = p.attrs.backend_data.as_ref().map_or(vni, |d| d.vni);
            if data_vni != vni {
                return Err(format!(
                    "BackendData.VNI: {data_vni} but the network uses {vni}"
                ));
            }
            Ok(vec![
                OverlayOp::Neigh {
                    bridge: spec.overlay_bridge.clone(),
                    ip: p.subnet,
                    mac,
                },
                OverlayOp::Fdb {
                    bridge: spec.overlay_bridge.clone(),
                    mac,
                    port: spec.vxlan_port.clone(),
                    remote: p.attrs.public_ip,
                },
                OverlayOp::Route {
                    prefix: p.subnet,
                    len: p.len,
                    via: p.subnet,
                },
            ])
        }
        Backend::HostGw => Ok(vec![OverlayOp::Route {
            prefix: p.subnet,
            len: p.len,
            via: p.attrs.public_ip,
        }]),
    }
}

/// The ops that undo [`peer_ops`] (route first, so nothing routes to a half-removed peer).
pub fn peer_del_ops(cfg: &NetConfig, spec: &EtcdSpec, p: &PeerLease) -> Vec<OverlayOp> {
    let mut v = vec![OverlayOp::RouteDel {
        prefix: p.subnet,
        len: p.len,
    }];
    if let (Backend::Vxlan { .. }, Ok(mac)) = (cfg.backend, p.attrs.vtep_mac()) {
        v.push(OverlayOp::NeighDel {
            bridge: spec.overlay_bridge.clone(),
            ip: p.subnet,
        });
        v.push(OverlayOp::FdbDel {
            bridge: spec.overlay_bridge.clone(),
            mac,
            port: spec.vxlan_port.clone(),
            remote: p.attrs.public_ip,
        });
    }
    v
}

/// The gateways our own lease gives: the containers' bridge gets the subnet's first host
/// address; with vxlan the overlay bridge gets the subnet's network address on the whole
/// Network (flannel gives `flannel.1` `10.5.1.0/32` and routes on-link; the connected Network
/// makes every peer's `.0` address a next hop on the overlay bridge).
pub fn own_gateway_ops(cfg: &NetConfig, spec: &EtcdSpec, subnet: Ipv4Addr) -> Vec<OverlayOp> {
    let mut v = vec![OverlayOp::Gateway {
        bridge: spec.bridge.clone(),
        ip: Ipv4Addr::from(u32::from(subnet) + 1),
        len: cfg.subnet_len,
    }];
    if matches!(cfg.backend, Backend::Vxlan { .. }) {
        v.push(OverlayOp::Gateway {
            bridge: spec.overlay_bridge.clone(),
            ip: subnet,
            len: cfg.network.1,
        });
    }
    v
}

/// The overlay's status, for `show` (set by `register` when the daemon runs with etcd).
static SHOWN: std::sync::OnceLock<agent::Status> = std::sync::OnceLock::new();

/// One line for `show`: the etcd connection and our lease, flagged when it is not renewed
/// (None when the daemon runs without etcd).
pub fn show_line() -> Option<String> {
    let v = SHOWN.get()?.lock().ok()?.clone();
    let lease = match v["lease"].as_object() {
        Some(l) => match l["renew_error"].as_str() {
            Some(e) => format!(
                "lease {} NOT RENEWED: {e}",
                l["subnet"].as_str().unwrap_or("?")
            ),
            None => format!("lease {} renewed", l["subnet"].as_str().unwrap_or("?")),
        },
        None => "no lease yet".into(),
    };
    let conn = if v["down"].is_string() {
        "DOWN (our subnet is held by another host)"
    } else if v["connected"] == true {
        "connected"
    } else {
        "DISCONNECTED"
    };
    Some(format!(
        "overlay: etcd {conn}, {lease} (overlay-show for peers)\n"
    ))
}

/// Register `overlay-show`: the lease, its renewal, the peers and what was programmed for
/// each (`status` is None when the daemon runs without etcd).
pub fn register(reg: &mut crate::control::registry::Registry, status: Option<agent::Status>) {
    use crate::control::registry::{CtlError, Reply};
    if let Some(st) = &status {
        let _ = SHOWN.set(st.clone());
    }
    reg.register("overlay-show", "overlay-show", 0, 0, move |_| {
        let Some(st) = &status else {
            return Err(CtlError::new(
                "no etcd overlay (start with uvs run --etcd URL)",
            ));
        };
        let mut v = st
            .lock()
            .map_err(|_| CtlError::new("etcd status poisoned"))?
            .clone();
        let now = agent::unix_now();
        if let Some(l) = v["lease"].as_object_mut() {
            let at = l.get("renewed_at").and_then(Value::as_u64).unwrap_or(now);
            l.insert("renewed_ago".into(), now.saturating_sub(at).into());
        }
        for p in v["peers"].as_array_mut().into_iter().flatten() {
            let at = p["seen_at"].as_u64().unwrap_or(now);
            p["age"] = now.saturating_sub(at).into();
        }
        Ok(Reply::new(render(&v), v))
    });
    reg.set_read_only(&["overlay-show"]);
}

fn render(v: &Value) -> String {
    use std::fmt::Write as _;
    let s_ = |v: &Value| v.as_str().map_or_else(|| v.to_string(), str::to_string);
    let mut s = format!(
        "etcd {} prefix {}: {}, revision {}, resyncs {}\n",
        v["endpoints"],
        s_(&v["prefix"]),
        if v["connected"] == true {
            "connected"
        } else {
            "DISCONNECTED"
        },
        v["revision"],
        v["resyncs"]
    );
    if let Some(c) = v["config"].as_object() {
        let _ = writeln!(
            s,
            "network {} subnet_len {} backend {}",
            s_(&c["network"]),
            c["subnet_len"],
            s_(&c["backend"])
        );
    }
    match v["lease"].as_object() {
        Some(l) => {
            let renew = match l["renew_error"].as_str() {
                Some(e) => format!("NOT RENEWED: {e}"),
                None => "renewed".into(),
            };
            let _ = writeln!(
                s,
                "lease {} public_ip {} vtep_mac {} ttl {}s: {renew} {}s ago",
                s_(&l["subnet"]),
                s_(&l["public_ip"]),
                s_(&l["vtep_mac"]),
                l["ttl"],
                l["renewed_ago"]
            );
        }
        None => s.push_str("lease: none yet\n"),
    }
    if let Some(d) = v["down"].as_str() {
        let _ = writeln!(s, "overlay DOWN: {d}");
    }
    for p in v["peers"].as_array().into_iter().flatten() {
        let what = match p["error"].as_str() {
            Some(e) => format!("not programmed: {e}"),
            None => "programmed".into(),
        };
        let _ = writeln!(
            s,
            "  peer {:<18} public_ip {:<15} vtep_mac {:<17} age {:>5}s {what}",
            s_(&p["subnet"]),
            s_(&p["public_ip"]),
            p["vtep_mac"].as_str().unwrap_or("-"),
            p["age"]
        );
    }
    for k in v["ignored_keys"].as_array().into_iter().flatten() {
        let _ = writeln!(
            s,
            "  key {} not programmed: {}",
            s_(&k["key"]),
            s_(&k["error"])
        );
    }
    if let Some(e) = v["last_error"].as_str() {
        let _ = writeln!(s, "last error: {e}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The overlay's settings are checked against the configuration before anything starts:
    /// its bridge, and without public_ip its vxlan port.
    #[test]
    fn spec_is_checked_against_the_configuration() {
        let spec = EtcdSpec::new("http://127.0.0.1:2379");
        let cfg = |text: &str| crate::config::Config::parse(text).unwrap();
        let none = cfg("");
        assert!(
            spec.check_against(&none)
                .unwrap_err()
                .starts_with("etcd.bridge: ")
        );
        let no_port = cfg("[[bridge]]\nname = \"cni0\"\n[[bridge]]\nname = \"flannel\"\n");
        let mut s = spec.clone();
        s.bridge = "cni0".into();
        assert!(
            s.check_against(&no_port)
                .unwrap_err()
                .starts_with("etcd.public_ip: ")
        );
        s.public_ip = Some(Ipv4Addr::new(10, 0, 0, 1));
        s.check_against(&no_port).unwrap();
    }
    use schema::BackendData;

    fn cfg(j: &str) -> NetConfig {
        NetConfig::parse(j.as_bytes()).unwrap()
    }

    fn lease(t: &str, mac: Option<&str>) -> PeerLease {
        PeerLease {
            subnet: Ipv4Addr::new(10, 5, 2, 0),
            len: 24,
            attrs: LeaseAttrs {
                public_ip: Ipv4Addr::new(10, 252, 0, 2),
                backend_type: t.into(),
                backend_data: mac.map(|m| BackendData {
                    vni: 1,
                    vtep_mac: m.into(),
                }),
            },
        }
    }

    #[test]
    fn vxlan_peer_gets_what_flannel_programs() {
        let c = cfg(r#"{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}"#);
        let s = EtcdSpec::new("http://127.0.0.1:2379");
        let p = lease("vxlan", Some("02:00:00:00:00:42"));
        let ops = peer_ops(&c, &s, &p).unwrap();
        let mac: crate::wire::MacAddr = "02:00:00:00:00:42".parse().unwrap();
        let net = Ipv4Addr::new(10, 5, 2, 0);
        assert_eq!(
            ops[0],
            OverlayOp::Neigh {
                bridge: "flannel".into(),
                ip: net,
                mac
            }
        );
        assert_eq!(
            ops[1],
            OverlayOp::Fdb {
                bridge: "flannel".into(),
                mac,
                port: "flannel.1".into(),
                remote: Ipv4Addr::new(10, 252, 0, 2)
            }
        );
        assert_eq!(
            ops[2],
            OverlayOp::Route {
                prefix: net,
                len: 24,
                via: net
            }
        );
        let del = peer_del_ops(&c, &s, &p);
        assert_eq!(del.len(), 3);
        assert_eq!(
            del[0],
            OverlayOp::RouteDel {
                prefix: net,
                len: 24
            }
        );
        let own = own_gateway_ops(&c, &s, Ipv4Addr::new(10, 5, 1, 0));
        assert_eq!(
            own,
            vec![
                OverlayOp::Gateway {
                    bridge: "br0".into(),
                    ip: Ipv4Addr::new(10, 5, 1, 1),
                    len: 24
                },
                OverlayOp::Gateway {
                    bridge: "flannel".into(),
                    ip: Ipv4Addr::new(10, 5, 1, 0),
                    len: 16
                },
            ]
        );
    }

    /// Peers' leases outside the Network, of another length, overlapping ours or under our
    /// own PublicIP are refused, each with its reason.
    #[test]
    fn peer_leases_are_checked_against_the_network_and_our_lease() {
        let c = cfg(r#"{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}"#);
        let own = Some((Ipv4Addr::new(10, 5, 1, 0), 24));
        let me = Ipv4Addr::new(10, 252, 0, 1);
        let at = |a: [u8; 4], len: u8| PeerLease {
            subnet: Ipv4Addr::from(a),
            len,
            ..lease("vxlan", Some("02:00:00:00:00:42"))
        };
        check_peer(&c, own, me, None, &at([10, 5, 2, 0], 24)).unwrap();
        let e = |p: &PeerLease| check_peer(&c, own, me, None, p).unwrap_err();
        assert!(matches!(
            e(&at([192, 168, 77, 0], 24)),
            PeerRefused::NotOfTheNetwork { .. }
        ));
        assert!(matches!(
            e(&at([10, 5, 50, 0], 26)),
            PeerRefused::NotOfTheNetwork { .. }
        ));
        let m = e(&at([10, 5, 1, 128], 25)).to_string();
        assert!(m.contains("10.5.1.128/25") && m.contains("/24"), "{m}");
        let mut c26 = c.clone();
        c26.subnet_len = 25;
        let o = check_peer(&c26, own, me, None, &at([10, 5, 1, 128], 25)).unwrap_err();
        assert!(matches!(o, PeerRefused::OverlapsOurs { .. }), "{o}");
        let mut mine = at([10, 5, 3, 0], 24);
        mine.attrs.public_ip = me;
        assert_eq!(e(&mine), PeerRefused::OurPublicIp(me));
    }

    /// Leases whose VTEP cannot be a host's are refused, each naming the address: a PublicIP
    /// unspecified, loopback, multicast, broadcast, reserved or inside the overlay Network; a
    /// VtepMAC broadcast, multicast or all-zero (vxlan only). Found trying uvs as a hostile
    /// peer: all of them were shown "programmed", the MACs as static FDB entries.
    #[test]
    fn leases_with_impossible_vteps_are_refused() {
        let c = cfg(r#"{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}"#);
        let own = Some((Ipv4Addr::new(10, 5, 1, 0), 24));
        let me = Ipv4Addr::new(10, 252, 0, 1);
        let with = |ip: &str, mac: &str| PeerLease {
            attrs: LeaseAttrs {
                public_ip: ip.parse().unwrap(),
                ..lease("vxlan", Some(mac)).attrs
            },
            ..lease("vxlan", Some(mac))
        };
        let good = "02:00:00:00:00:42";
        check_peer(&c, own, me, None, &with("10.252.0.2", good)).unwrap();
        for (ip, why) in [
            ("0.0.0.0", "unspecified"),
            ("127.0.0.1", "loopback"),
            ("224.0.0.1", "multicast"),
            ("255.255.255.255", "broadcast"),
            ("240.0.0.1", "reserved"),
        ] {
            let e = check_peer(&c, own, me, None, &with(ip, good)).unwrap_err();
            let m = e.to_string();
            assert!(m.starts_with("ignored: ") && m.contains(ip), "{m}");
            assert!(
                m.contains("not a unicast address") && m.contains(why),
                "{m}"
            );
        }
        let e = check_peer(&c, own, me, None, &with("10.5.12.1", good)).unwrap_err();
        assert!(matches!(e, PeerRefused::PublicIpInNetwork { .. }), "{e}");
        assert!(e.to_string().contains("10.5.12.1"), "{e}");
        for (mac, why) in [
            ("ff:ff:ff:ff:ff:ff", "broadcast"),
            ("01:00:5e:00:00:01", "multicast"),
            ("00:00:00:00:00:00", "all zeros"),
        ] {
            let e = check_peer(&c, own, me, None, &with("10.252.0.2", mac)).unwrap_err();
            let m = e.to_string();
            assert!(m.starts_with("ignored: VtepMAC ") && m.contains(mac), "{m}");
            assert!(m.contains(why), "{m}");
        }
        // host-gw has no VtepMAC to check.
        let h = cfg(r#"{"Network":"10.5.0.0/16","Backend":{"Type":"host-gw"}}"#);
        let p = with("10.252.0.2", "ff:ff:ff:ff:ff:ff");
        check_peer(&h, own, me, None, &p).unwrap();
    }

    /// A write over our lease key by anybody else keeps the subnet ours (written back); only
    /// a key deleted, or created again by another host, is not ours any more. Found trying
    /// uvs as a hostile peer: one foreign write made the agent lease another subnet.
    #[test]
    fn a_foreign_write_to_our_key_is_overwritten_not_obeyed() {
        let ours = lease("vxlan", Some("02:00:00:00:00:01")).attrs;
        let mut theirs = ours.clone();
        theirs.public_ip = Ipv4Addr::new(10, 252, 0, 66);
        let (id, crev) = (0x77, 40);
        assert_eq!(
            own_key(id, crev, &ours, Some((id, crev, Some(&ours)))),
            OwnKey::Ours
        );
        // Another host's value, on no lease or on its own, or even on ours.
        for lease in [0, 0x99, id] {
            let kv = Some((lease, crev, Some(&theirs)));
            assert_eq!(own_key(id, crev, &ours, kv), OwnKey::Overwritten);
        }
        // Our value on another lease (put by hand), or a value that is no lease at all.
        assert_eq!(
            own_key(id, crev, &ours, Some((0, crev, Some(&ours)))),
            OwnKey::Overwritten
        );
        assert_eq!(
            own_key(id, crev, &ours, Some((0, crev, None))),
            OwnKey::Overwritten
        );
        assert_eq!(own_key(id, crev, &ours, None), OwnKey::Gone);
        // Deleted and created again by another host.
        let kv = Some((0x99, crev + 5, Some(&theirs)));
        assert_eq!(own_key(id, crev, &ours, kv), OwnKey::Taken);
    }

    #[test]
    fn host_gw_routes_via_the_public_ip_and_mismatches_are_refused() {
        let c = cfg(r#"{"Network":"10.5.0.0/16","Backend":{"Type":"host-gw"}}"#);
        let s = EtcdSpec::new("http://127.0.0.1:2379");
        let ops = peer_ops(&c, &s, &lease("host-gw", None)).unwrap();
        assert_eq!(
            ops,
            vec![OverlayOp::Route {
                prefix: Ipv4Addr::new(10, 5, 2, 0),
                len: 24,
                via: Ipv4Addr::new(10, 252, 0, 2)
            }]
        );
        let e = peer_ops(&c, &s, &lease("vxlan", Some("02:00:00:00:00:42"))).unwrap_err();
        assert!(e.contains("BackendType"), "{e}");
        let v = cfg(r#"{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan","VNI":9}}"#);
        let e = peer_ops(&v, &s, &lease("vxlan", Some("02:00:00:00:00:42"))).unwrap_err();
        assert!(e.contains("VNI"), "{e}");
        let e = peer_ops(&v, &s, &lease("vxlan", Some("nope"))).unwrap_err();
        assert!(e.contains("VtepMAC") || e.contains("VNI"), "{e}");
    }

    #[test]
    fn spec_validation_names_the_field() {
        let mut s = EtcdSpec::new("127.0.0.1:2379");
        assert!(s.validate().unwrap_err().contains("etcd.endpoints"));
        s.endpoints = vec!["http://127.0.0.1:2379".into()];
        s.ttl = 1;
        assert!(s.validate().unwrap_err().contains("etcd.ttl"));
        s.ttl = 60;
        s.prefix = "x".into();
        assert!(s.validate().unwrap_err().contains("etcd.prefix"));
        let t: EtcdSpec =
            toml::from_str("endpoints = [\"http://127.0.0.1:2379\"]\nttl = 30\n").unwrap();
        assert_eq!(t.prefix, "/coreos.com/network");
        assert_eq!(t.ttl, 30);
    }
}
