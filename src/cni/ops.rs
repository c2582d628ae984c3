//! ADD, DEL and CHECK (see the module docs of [`super`] for the contract).

use std::fs::File;
use std::net::Ipv4Addr;
use std::path::Path;

use serde_json::{Value, json};

use super::conf::{Env, NetConf, PortMapping, network, parse_cidr};
use super::netlink::Rtnl;
use super::sys::{ipam, nl, open_netns, rtnl, rtnl_in, uvs};
use super::{
    CniError, E_CHECK, E_INVALID_CONFIG, E_INVALID_ENV, E_IO, E_IPAM, E_UNSUPPORTED_FIELD, E_UVS,
};
use crate::wire::MacAddr;

/// The inner MTU of a bridge with a VXLAN port (a 1500 underlay).
pub const VXLAN_MTU: u32 = 1450;

/// What the IPAM plugin gave: the container's address and the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    /// Container address.
    pub addr: Ipv4Addr,
    /// Prefix length.
    pub len: u8,
    /// Gateway (from the result, else the subnet's first address, as the bridge plugin).
    pub gateway: Ipv4Addr,
}

/// The first IPv4 entry of an IPAM (or previous) result.
pub fn lease_of(result: &Value) -> Result<Lease, CniError> {
    let ips = result["ips"].as_array().cloned().unwrap_or_default();
    for e in ips {
        let Some((addr, len)) = e["address"].as_str().and_then(parse_cidr) else {
            continue;
        };
        let gateway = e["gateway"]
            .as_str()
            .and_then(|g| g.parse().ok())
            .unwrap_or_else(|| Ipv4Addr::from(u32::from(network(addr, len)) + 1));
        return Ok(Lease { addr, len, gateway });
    }
    Err(CniError::new(E_IPAM, "ipam result has no IPv4 address").details(result.to_string()))
}

/// The IPAM result's one address as a [`Lease`]. A result with more (a second range, an IPv6
/// range) is refused naming the others (code 7), so that ADD's rollback releases them: a uvs
/// network gives a container one IPv4 address (one subnet per bridge, no IPv6), and the others
/// were leased and dropped silently (found trying uvs as a platform engineer).
pub fn single_lease(result: &Value) -> Result<Lease, CniError> {
    let lease = lease_of(result)?;
    let extra: Vec<&str> = result["ips"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["address"].as_str())
        .filter(|a| parse_cidr(a) != Some((lease.addr, lease.len)))
        .collect();
    if !extra.is_empty() {
        return Err(CniError::new(
            E_INVALID_CONFIG,
            format!(
                "ipam: the result has addresses {} beside {}/{}: a uvs network gives a \
                 container one IPv4 address (one subnet per bridge, no IPv6); configure one \
                 IPv4 range",
                extra.join(", "),
                lease.addr,
                lease.len
            ),
        )
        .details(result.to_string()));
    }
    Ok(lease)
}

/// A route of the container: `dst/len` via `gw`, out of its interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    /// Destination (its network address).
    pub dst: Ipv4Addr,
    /// Prefix length (0: the default route).
    pub len: u8,
    /// Gateway.
    pub gw: Ipv4Addr,
}

impl Route {
    /// The default route (`0.0.0.0/0`)?
    pub fn is_default(&self) -> bool {
        self.len == 0
    }

    /// `dst/len`.
    pub fn dst_text(&self) -> String {
        format!("{}/{}", self.dst, self.len)
    }

    /// As a result's `routes` carry it (with `gw` always).
    pub fn to_json(&self) -> Value {
        json!({"dst": self.dst_text(), "gw": self.gw.to_string()})
    }
}

/// One entry of a result's `routes`: without `gw` it goes via the lease's gateway (as the
/// reference plugins do). An IPv6 route is refused (code 7: uvs networks are IPv4); one that
/// does not parse is an IPAM error (101) naming it.
pub fn route_of(r: &Value, lease: &Lease) -> Result<Route, CniError> {
    let dst = r["dst"].as_str().unwrap_or_default();
    if dst.contains(':') {
        return Err(CniError::new(
            E_INVALID_CONFIG,
            format!("ipam routes: '{dst}' is an IPv6 route: uvs networks are IPv4 only"),
        ));
    }
    let bad = |what: String| CniError::new(E_IPAM, what).details(r.to_string());
    let (a, len) = parse_cidr(dst)
        .ok_or_else(|| bad(format!("ipam routes: dst '{dst}' is not an IPv4 prefix")))?;
    let gw = match r["gw"].as_str() {
        None | Some("") => lease.gateway,
        Some(g) => g.parse().map_err(|_| {
            bad(format!(
                "ipam routes: {dst}: gw '{g}' is not an IPv4 address"
            ))
        })?,
    };
    Ok(Route {
        dst: network(a, len),
        len,
        gw,
    })
}

/// The routes ADD installs: the IPAM result's `routes` (see [`route_of`]; a destination listed
/// twice once, the first), and a default route via the lease's gateway first when the result
/// has none. They were dropped but for the default (found trying uvs as a platform engineer).
pub fn routes_to_install(ipam_result: &Value, lease: &Lease) -> Result<Vec<Route>, CniError> {
    let mut out: Vec<Route> = Vec::new();
    for r in ipam_result["routes"].as_array().into_iter().flatten() {
        let r = route_of(r, lease)?;
        if !out.iter().any(|o| (o.dst, o.len) == (r.dst, r.len)) {
            out.push(r);
        }
    }
    if !out.iter().any(Route::is_default) {
        let default = Route {
            dst: Ipv4Addr::UNSPECIFIED,
            len: 0,
            gw: lease.gateway,
        };
        out.insert(0, default);
    }
    Ok(out)
}

/// The uvs bridge `name` from `show`, if it exists.
fn find_bridge(show: &Value, name: &str) -> Option<Value> {
    show["bridges"]
        .as_array()?
        .iter()
        .find(|b| b["name"] == name)
        .cloned()
}

/// Makes sure the bridge exists as the network configuration says, and its masquerade rule;
/// returns its `show` entry and the number of workers the daemon runs. An existing bridge (an earlier network of that name, one made by
/// `uvs ctl add-br`, a first ADD that failed halfway) is brought in line: `isolated`/`icc` as
/// the configuration sets them (when it does); its gateway moved to the IPAM's when no
/// container is attached (the old subnet's masquerade rule goes), refused with both addresses
/// named when some are (they use the old subnet). (Found trying uvs as a new
/// user: a network re-created with another subnet left its containers with no gateway.)
fn ensure_bridge(c: &NetConf, sock: &Path, lease: &Lease) -> Result<(Value, u32), CniError> {
    let name = c.bridge();
    let want_gw = format!("{}/{}", lease.gateway, lease.len);
    let isolated = c.isolated.unwrap_or(true);
    let icc = c.icc != Some(false);
    let show = uvs(sock, "show", &[])?;
    // One queue per worker (`show` lists several under `workers`), at most 16.
    let workers = show["workers"]
        .as_array()
        .map_or(1, |w| w.len().clamp(1, 16) as u32);
    match find_bridge(&show, name) {
        Some(b) => reconcile_bridge(sock, &b, &want_gw, c)?,
        None => {
            let mut args = vec![name.to_string(), format!("gateway={want_gw}")];
            if isolated {
                args.push("isolated=on".into());
            }
            if !icc {
                args.push("icc=off".into());
            }
            // A concurrent ADD may have created it first: that is fine.
            if let Err(e) = uvs(sock, "add-br", &args) {
                find_bridge(&uvs(sock, "show", &[])?, name).ok_or(e)?;
            }
        }
    }
    if let Some(up) = &c.uplink {
        let rule = format!(
            "masquerade src={}/{} out={up}",
            network(lease.addr, lease.len),
            lease.len
        );
        if nat_index(sock, |r| r == rule)?.is_none() {
            let parts: Vec<String> = rule.split(' ').map(str::to_string).collect();
            // Someone (`uvs ctl`) may have added it meanwhile: then it is there, which is fine.
            if let Err(e) = uvs(sock, "nat-add", &parts) {
                nat_index(sock, |r| r == rule)?.ok_or(e)?;
            }
        }
    }
    let b = find_bridge(&uvs(sock, "show", &[])?, name)
        .ok_or_else(|| CniError::new(E_UVS, format!("bridge '{name}' vanished")))?;
    Ok((b, workers))
}

/// Bring existing bridge `b` (its `show` entry) to gateway `want_gw` and the `isolated`/`icc`
/// settings `c` gives; see [`ensure_bridge`].
fn reconcile_bridge(sock: &Path, b: &Value, want_gw: &str, c: &NetConf) -> Result<(), CniError> {
    let name = b["name"].as_str().unwrap_or_default();
    let mut set = vec![name.to_string()];
    let gw = b["gateway"].as_str();
    if gw != Some(want_gw) {
        // Containers (the plugin's ports), not an uplink or VXLAN port someone added.
        let ports = b["ports"].as_array().map_or(0, |v| {
            v.iter()
                .filter(|p| {
                    crate::control::containers::is_container_port(
                        p["name"].as_str().unwrap_or_default(),
                    )
                })
                .count()
        });
        if ports > 0 {
            return Err(CniError::new(
                E_UVS,
                format!(
                    "bridge '{name}' has gateway {} but the network's IPAM gives {want_gw}, and \
                     {ports} port(s) still use it: remove those containers (or `uvs ctl \
                     set-br {name} gateway={want_gw}`) and try again",
                    gw.unwrap_or("none")
                ),
            ));
        }
        set.push(format!("gateway={want_gw}"));
        // The old subnet's masquerade rule (made by an earlier ADD) goes with it.
        if let (Some(up), Some((ip, len))) = (&c.uplink, gw.and_then(parse_cidr)) {
            let old = format!("masquerade src={}/{len} out={up}", network(ip, len));
            if nat_index(sock, |r| r == old)?.is_some() {
                uvs(sock, "nat-del", &[old])?;
            }
        }
    }
    let on_off = |v: bool| if v { "on" } else { "off" };
    if let Some(want) = c.isolated
        && b["isolated"].as_bool() != Some(want)
    {
        set.push(format!("isolated={}", on_off(want)));
    }
    if let Some(want) = c.icc
        && b["icc"].as_bool() != Some(want)
    {
        set.push(format!("icc={}", on_off(want)));
    }
    if set.len() > 1 {
        uvs(sock, "set-br", &set)?;
    }
    Ok(())
}

/// Every NAT rule as (index, `nat-show` text).
fn nat_rows(sock: &Path) -> Result<Vec<(u64, String)>, CniError> {
    let v = uvs(sock, "nat-show", &[])?;
    Ok(v["rules"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            let text = r["rule"].as_str().unwrap_or_default().to_string();
            (r["index"].as_u64().unwrap_or(0), text)
        })
        .collect())
}

/// Is a port mapping to `to` a leftover of this network, with host-local IPAM: `to` is in
/// this network's subnet (`lease`'s), the lease directory is the one this ADD's own lease is in
/// (so it is the right store), and `to` is leased to no container (its file is gone) or to
/// `container` itself? False otherwise, and for other IPAM plugins (nothing is known about
/// their leases): a live mapping, one of another network or one made by hand is never taken.
fn stale_target(c: &NetConf, lease: &Lease, to: Ipv4Addr, container: &str) -> bool {
    if c.ipam["type"] != "host-local" || network(to, lease.len) != network(lease.addr, lease.len) {
        return false;
    }
    let dir = Path::new(
        c.ipam["dataDir"]
            .as_str()
            .unwrap_or("/var/lib/cni/networks"),
    )
    .join(&c.name);
    let holder = |ip: Ipv4Addr| {
        std::fs::read_to_string(dir.join(ip.to_string()))
            .map(|t| t.lines().next().unwrap_or_default().trim().to_string())
    };
    if holder(lease.addr).ok().as_deref() != Some(container) {
        return false;
    }
    match holder(to) {
        Ok(id) => id == container,
        Err(e) => e.kind() == std::io::ErrorKind::NotFound,
    }
}

/// The index of the first NAT rule whose text satisfies `f`.
fn nat_index(sock: &Path, f: impl Fn(&str) -> bool) -> Result<Option<u64>, CniError> {
    Ok(nat_rows(sock)?
        .into_iter()
        .find(|(_, r)| f(r))
        .map(|(i, _)| i))
}

/// Whether `rule` (as `nat-show` prints it) is mapping `p` of the container at `addr`:
/// `dnat in=B proto=P port=N to=ADDR:C`, with any `N` when the mapping's host port is 0 (uvs
/// picked it). Unique per bridge, protocol and host port, so another container's mapping of
/// the same host port never matches.
pub(super) fn is_mapping(c: &NetConf, p: &PortMapping, addr: Ipv4Addr, rule: &str) -> bool {
    let head = format!("dnat in={} proto={} port=", c.dnat_bridge(), p.proto());
    let tail = format!(" to={addr}:{}", p.container_port);
    let Some(n) = rule.strip_prefix(&head).and_then(|r| r.strip_suffix(&tail)) else {
        return false;
    };
    match p.host_port {
        0 => n.parse::<u16>().is_ok(),
        h => n == h.to_string(),
    }
}

/// The `portMappings` capability: one `dnat` rule per mapping (a host port of 0 lets uvs pick
/// one from its DNAT port range). Returns the mappings with their host ports as made.
fn map_ports(
    c: &NetConf,
    sock: &Path,
    lease: &Lease,
    container: &str,
) -> Result<Vec<Value>, CniError> {
    let addr = lease.addr;
    // A hostIP other than empty/0.0.0.0 must be the mapped bridge's gateway address (`-p
    // 10.250.0.1:8080:80`): ports are mapped there only.
    let pms = &c.runtime_config.port_mappings;
    let named = |q: &&PortMapping| !q.host_ip.is_empty() && q.host_ip != "0.0.0.0";
    if pms.iter().any(|q| named(&q)) {
        let b = c.dnat_bridge();
        let gw = find_bridge(&uvs(sock, "show", &[])?, b)
            .and_then(|v| v["gateway"].as_str().map(str::to_string))
            .unwrap_or_default();
        let gw_ip = gw.split('/').next().unwrap_or_default().to_string();
        if let Some(bad) = pms.iter().filter(named).find(|q| q.host_ip != gw_ip) {
            return Err(CniError::new(
                E_UNSUPPORTED_FIELD,
                format!(
                    "portMappings.hostIP: '{}': uvs maps ports on bridge '{b}''s gateway address{} only (leave hostIP empty or 0.0.0.0)",
                    bad.host_ip,
                    if gw_ip.is_empty() {
                        String::new()
                    } else {
                        format!(" {gw_ip}")
                    }
                ),
            ));
        }
    }
    let mut made = Vec::new();
    for p in &c.runtime_config.port_mappings {
        let mut args = vec![
            "dnat".to_string(),
            format!("in={}", c.dnat_bridge()),
            format!("proto={}", p.proto()),
            format!("to={addr}:{}", p.container_port),
        ];
        if p.host_port != 0 {
            args.push(format!("port={}", p.host_port));
        }
        let v = match uvs(sock, "nat-add", &args) {
            Ok(v) => v,
            Err(e) if p.host_port != 0 => {
                // The host port may hold a leftover: a mapping to an address host-local no
                // longer leases (its container was removed while uvs was down) or leases to
                // this very container (restarted meanwhile). Such a mapping is replaced.
                let head = format!(
                    "dnat in={} proto={} port={} to=",
                    c.dnat_bridge(),
                    p.proto(),
                    p.host_port
                );
                let rule_of = |r: &str| {
                    r.strip_prefix(&head)
                        .and_then(|t| t.split(':').next()?.parse::<Ipv4Addr>().ok())
                };
                let stale = nat_rows(sock)?.into_iter().find_map(|(_, r)| {
                    let to = rule_of(&r)?;
                    stale_target(c, lease, to, container).then_some(r)
                });
                let Some(rule) = stale else {
                    return Err(e);
                };
                // By its text: found and removed in one step, whatever else changed meanwhile.
                uvs(sock, "nat-del", &[rule])?;
                uvs(sock, "nat-add", &args)?
            }
            Err(e) => return Err(e),
        };
        let host_port = v["port"].as_u64().unwrap_or(u64::from(p.host_port));
        made.push(
            json!({"hostPort": host_port, "containerPort": p.container_port,
                         "protocol": p.proto()}),
        );
    }
    Ok(made)
}

/// The container MTU for bridge `b`.
fn mtu_for(c: &NetConf, b: &Value) -> u32 {
    let vxlan = b["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|p| p["type"] == "vxlan");
    let mtu = c.mtu.unwrap_or(1500);
    if vxlan { mtu.min(VXLAN_MTU) } else { mtu }
}

/// ADD: returns the CNI result.
pub fn add(env: &Env, c: &NetConf, stdin: &[u8]) -> Result<Value, CniError> {
    let ns = open_netns(&env.netns)?;
    names_free(env, &ns)?;
    let ipam_result = ipam(env, c.ipam_type(), "ADD", stdin)?;
    match add_with_lease(env, c, &ns, &ipam_result) {
        Ok(v) => Ok(v),
        Err(e) => {
            // Undo: whatever DEL removes, and the lease.
            let addr = lease_of(&ipam_result).ok().map(|l| l.addr);
            let _ = teardown(env, c, addr);
            let _ = ipam(env, c.ipam_type(), "DEL", stdin);
            Err(e)
        }
    }
}

/// Before ADD makes anything (IPAM included): `CNI_IFNAME` is free in the namespace and the
/// host end's name (from container id and interface) in the host; else code 4 naming it, and
/// nothing changed. A second ADD for an attached interface failed later, and its rollback
/// deleted the first ADD's veth and uvs port (found trying uvs as a platform engineer).
fn names_free(env: &Env, ns: &File) -> Result<(), CniError> {
    let ifn = env.ifname.as_str();
    let again = "the container is attached already (a repeated ADD?): DEL it first, or use \
                 another CNI_IFNAME";
    if nl(&format!("look up {ifn}"), rtnl_in(ns)?.index(ifn))?.is_some() {
        return Err(CniError::new(
            E_INVALID_ENV,
            format!(
                "CNI_IFNAME: {ifn} already exists in CNI_NETNS {}",
                env.netns
            ),
        )
        .details(again));
    }
    let host = env.host_ifname();
    if nl(&format!("look up {host}"), rtnl()?.index(&host))?.is_some() {
        return Err(CniError::new(
            E_INVALID_ENV,
            format!(
                "CNI_CONTAINERID/CNI_IFNAME: host interface {host} of container '{}' \
                 interface {ifn} already exists",
                env.container_id
            ),
        )
        .details(again));
    }
    Ok(())
}

fn add_with_lease(
    env: &Env,
    c: &NetConf,
    ns: &File,
    ipam_result: &Value,
) -> Result<Value, CniError> {
    let lease = single_lease(ipam_result)?;
    let routes = routes_to_install(ipam_result, &lease)?;
    let sock = c.socket();
    let (bridge, queues) = ensure_bridge(c, &sock, &lease)?;
    let mtu = mtu_for(c, &bridge);
    let host = env.host_ifname();
    let mut hnl = rtnl()?;
    let mut cnl = rtnl_in(ns)?;
    nl(
        &format!("add veth {host} (peer {} in CNI_NETNS)", env.ifname),
        hnl.add_veth(&host, &env.ifname, (mtu, queues), ns),
    )?;
    let ifn = env.ifname.as_str();
    let mac = c.runtime_config.mac.clone().or_else(|| env.arg("MAC"));
    no_ipv6_in_container(ns, ifn)?;
    let routes = setup_container(&mut cnl, ifn, &lease, &routes, mac.as_deref())?;
    quiet_host_end(&host)?;
    nl(&format!("set {host} up"), hnl.set_up(&host, None))?;
    let port_type = format!("type={}", c.port_type());
    let mut port_args = vec![c.bridge().into(), host.clone(), port_type];
    if let Some(b) = &c.runtime_config.bandwidth {
        port_args.extend(b.port_options());
    }
    uvs(&sock, "add-port", &port_args)?;
    let mapped = map_ports(c, &sock, &lease, &env.container_id)?;
    let named = super::dns::register(env, c, lease.addr)?;
    let mac_of = |r: std::io::Result<Option<(u32, String)>>| r.ok().flatten().map(|l| l.1);
    let cmac = mac_of(cnl.link(ifn)).unwrap_or_default();
    let hmac = mac_of(hnl.link(&host)).unwrap_or_default();
    let cidr = format!("{}/{}", lease.addr, lease.len);
    let routes: Vec<Value> = routes.iter().map(Route::to_json).collect();
    let mut ipe = json!({"address": cidr, "gateway": lease.gateway.to_string(), "interface": 1});
    if c.cni_version != "1.0.0" {
        ipe["version"] = json!("4");
    }
    let mut result = json!({
        "cniVersion": c.cni_version,
        "interfaces": [
            {"name": host, "mac": hmac},
            {"name": ifn, "mac": cmac, "sandbox": env.netns},
        ],
        "ips": [ipe],
        "routes": routes,
        "dns": super::dns::result_dns(ipam_result, lease.gateway, named),
    });
    if !mapped.is_empty() {
        // Not in the spec's result: how a caller learns the host ports uvs picked.
        result["portMappings"] = json!(mapped);
    }
    Ok(result)
}

/// The container side: MAC, address, up, and `routes` (see [`routes_to_install`]), the default
/// route unless the namespace has one already (a container on a second network keeps its first
/// default route). Returns the routes added.
fn setup_container(
    cnl: &mut Rtnl,
    ifn: &str,
    lease: &Lease,
    routes: &[Route],
    mac: Option<&str>,
) -> Result<Vec<Route>, CniError> {
    if let Some(m) = mac {
        let MacAddr(bytes) = m.parse().map_err(|_: String| {
            CniError::new(E_INVALID_CONFIG, format!("mac: '{m}' is not a MAC address"))
        })?;
        nl(&format!("set {ifn} address {m}"), cnl.set_mac(ifn, bytes))?;
    }
    let cidr = format!("{}/{}", lease.addr, lease.len);
    nl(
        &format!("add {cidr} to {ifn}"),
        cnl.add_addr(ifn, lease.addr, lease.len),
    )?;
    nl(&format!("set {ifn} up"), cnl.set_up(ifn, None))?;
    let has_default = !nl("list default routes", cnl.default_routes())?.is_empty();
    let mut made = Vec::new();
    for r in routes {
        if r.is_default() && has_default {
            continue;
        }
        nl(
            &format!("add route {} via {} dev {ifn}", r.dst_text(), r.gw),
            cnl.add_route((r.dst, r.len), r.gw, ifn),
        )?;
        made.push(*r);
    }
    Ok(made)
}

/// Turns IPv6 off on the container's interface `ifn` (in namespace `ns`) before it is up, as
/// Docker does on a network without IPv6 (uvs's CNI networks are IPv4 only): it left the
/// container taking router advertisements, so one container's rogue RA gave its neighbours an
/// IPv6 address and a default route through it (found trying uvs as a tenant). A kernel
/// without IPv6 has nothing to turn off.
fn no_ipv6_in_container(ns: &std::fs::File, ifn: &str) -> Result<(), CniError> {
    use std::os::fd::AsFd;
    let path = format!("/proc/sys/net/ipv6/conf/{ifn}/disable_ipv6");
    // /proc/sys/net is the namespace of the thread that opens it: the helper's.
    let r = crate::port::sys::in_netns(ns.as_fd(), || std::fs::write(&path, "1"))
        .map_err(|e| CniError::failed(E_IO, "enter CNI_NETNS", std::io::Error::from(e)))?;
    match r {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(CniError::failed(
            E_IO,
            &format!("set {path} to 1 in CNI_NETNS"),
            e,
        )),
    }
}

/// Keeps the host's own stack off the veth's host end, which only uvs uses: no IPv6 (no
/// link-local address, so no neighbour discovery sent into the container) and no ARP answers
/// for the host's addresses (`arp_ignore=8`). An afpacket port only taps the host end, so the
/// host stack sees its broadcasts too; with AF_XDP it sees nothing. Set before the link is up.
fn quiet_host_end(host: &str) -> Result<(), CniError> {
    for (path, value) in [
        (format!("/proc/sys/net/ipv6/conf/{host}/disable_ipv6"), "1"),
        (format!("/proc/sys/net/ipv4/conf/{host}/arp_ignore"), "8"),
    ] {
        match std::fs::write(&path, value) {
            Ok(()) => {}
            // A kernel without IPv6 has no such file.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && path.contains("ipv6") => {}
            Err(e) => {
                return Err(CniError::failed(E_IO, &format!("set {path} to {value}"), e));
            }
        }
    }
    Ok(())
}

/// Removes what ADD made in uvs and the host (not the lease); missing pieces are fine. Port
/// mappings are removed only when the container's address `addr` is known (from prevResult or
/// the lease): a mapping of the same host port to another container is never touched. The
/// host end of the veth goes even when uvs cannot be reached; the error then names the uvs
/// port left behind and the command that removes it.
fn teardown(env: &Env, c: &NetConf, addr: Option<Ipv4Addr>) -> Result<(), CniError> {
    let host = env.host_ifname();
    super::dns::unregister(env, c, addr);
    let in_uvs = teardown_uvs(c, &host, addr).map_err(|e| {
        let hint = format!(
            "uvs port {host} may be left on bridge {b}: once uvs runs, remove it with `uvs ctl \
             del-port {b} {host}` (and its port mappings, if any, with `uvs ctl nat-del`)",
            b = c.bridge()
        );
        let details = match e.details.as_str() {
            "" => hint,
            d => format!("{d}; {hint}"),
        };
        e.details(details)
    });
    let mut hnl = rtnl()?;
    if nl(&format!("look up {host}"), hnl.index(&host))?.is_some() {
        nl(&format!("delete {host}"), hnl.del(&host))?;
    }
    in_uvs
}

/// The uvs half of [`teardown`]: the port mappings, then the port.
fn teardown_uvs(c: &NetConf, host: &str, addr: Option<Ipv4Addr>) -> Result<(), CniError> {
    let sock = c.socket();
    for p in addr.map_or(&[][..], |_| &c.runtime_config.port_mappings) {
        let addr = addr.unwrap_or(Ipv4Addr::UNSPECIFIED);
        while let Some(i) = nat_index(&sock, |r| is_mapping(c, p, addr, r))? {
            uvs(&sock, "nat-del", &[i.to_string()])?;
        }
    }
    let show = uvs(&sock, "show", &[])?;
    // In whatever state: a DEL retried once uvs is back finds the port `pending` (its veth
    // went with the first DEL), and it is this DEL's to remove.
    if find_bridge(&show, c.bridge()).is_some_and(|b| port_state(&b, host).is_some()) {
        uvs(&sock, "del-port", &[c.bridge().into(), host.to_string()])?;
    }
    Ok(())
}

/// The uvs port's rate limits are what the `bandwidth` capability asks (none without it).
fn check_rates(c: &NetConf, show: &Value, host: &str) -> Result<(), String> {
    let port = find_bridge(show, c.bridge())
        .and_then(|b| {
            b["ports"]
                .as_array()?
                .iter()
                .find(|p| p["name"] == host)
                .cloned()
        })
        .unwrap_or(Value::Null);
    let want = c
        .runtime_config
        .bandwidth
        .map(|b| b.port_options())
        .unwrap_or_default();
    for key in ["rate_rx", "rate_tx"] {
        let w = want.iter().find_map(|o| o.strip_prefix(&format!("{key}=")));
        let have = port[key].as_str();
        if have != w {
            return Err(format!(
                "port {host}: {key} is {} (bandwidth asks {})",
                have.unwrap_or("none"),
                w.unwrap_or("none")
            ));
        }
    }
    Ok(())
}

/// The `show` state of port `port` of `bridge` (its `show` entry): `up`, `down`, `gone`,
/// `pending`; None when the bridge does not list it.
pub(super) fn port_state<'a>(bridge: &'a Value, port: &str) -> Option<&'a str> {
    let p = bridge["ports"]
        .as_array()?
        .iter()
        .find(|p| p["name"] == port)?;
    Some(p["state"].as_str().unwrap_or("unknown"))
}

/// CHECK's verdict on the container's uvs port `host` of bridge `bridge` from its `show`
/// state: only `up` forwards; `down` (the host end set down), `gone` (the veth deleted, even
/// if eth0 was replaced by another) and `pending` (not opened) cut the container off, and
/// passed (found trying uvs as a platform engineer).
pub(super) fn port_is_up(bridge: &str, host: &str, state: Option<&str>) -> Result<(), String> {
    match state {
        Some("up") => Ok(()),
        None => Err(format!("uvs bridge '{bridge}' has no port {host}")),
        Some(s) => Err(format!(
            "uvs port {host} of bridge '{bridge}' is {s}, not up"
        )),
    }
}

/// The MAC a result gives the container's interface `ifn` (its `interfaces` entry with a
/// `sandbox`); None when it gives none.
pub(super) fn sandbox_mac<'a>(result: &'a Value, ifn: &str) -> Option<&'a str> {
    result["interfaces"]
        .as_array()?
        .iter()
        .find(|i| i["name"] == ifn && i["sandbox"].as_str().is_some_and(|s| !s.is_empty()))?["mac"]
        .as_str()
        .filter(|m| !m.is_empty())
}

/// DEL: idempotent.
pub fn del(env: &Env, c: &NetConf, stdin: &[u8]) -> Result<(), CniError> {
    let addr = c
        .prev_result
        .as_ref()
        .and_then(|p| lease_of(p).ok())
        .map(|l| l.addr);
    let torn = teardown(env, c, addr);
    // The lease goes even when uvs is down (`podman rm` of a container then), else it leaks.
    let released = ipam(env, c.ipam_type(), "DEL", stdin);
    torn?;
    released.map(|_| ())
}

/// CHECK: the container interface and its MAC, address and routes, the uvs port and its
/// state, then IPAM.
pub fn check(env: &Env, c: &NetConf, stdin: &[u8]) -> Result<(), CniError> {
    let prev = c
        .prev_result
        .as_ref()
        .ok_or_else(|| CniError::new(E_INVALID_CONFIG, "prevResult: required by CHECK"))?;
    let lease = lease_of(prev)?;
    let ns = open_netns(&env.netns)?;
    let ifn = env.ifname.as_str();
    let fail = |m: String| CniError::new(E_CHECK, m);
    let mut cnl = rtnl_in(&ns)?;
    let Some((index, mac)) = nl(&format!("look up {ifn}"), cnl.link(ifn))? else {
        return Err(fail(format!("interface {ifn} missing in CNI_NETNS")));
    };
    if let Some(want) = sandbox_mac(prev, ifn)
        && !want.eq_ignore_ascii_case(&mac)
    {
        return Err(fail(format!(
            "{ifn} has MAC {mac}, the result gave it {want}"
        )));
    }
    let addrs = nl(&format!("list addresses of {ifn}"), cnl.addrs(ifn))?;
    if !addrs.contains(&(lease.addr, lease.len)) {
        return Err(fail(format!("{ifn} lacks {}/{}", lease.addr, lease.len)));
    }
    // Every IPv4 route of the result, on this interface (IPv6 ones are a chained plugin's).
    let table = nl("list routes", cnl.routes())?;
    let ipv4 = |r: &&Value| !r["dst"].as_str().unwrap_or_default().contains(':');
    for r in prev["routes"].as_array().into_iter().flatten().filter(ipv4) {
        let r = route_of(r, &lease)?;
        let there = table
            .iter()
            .any(|(d, g, oif)| *d == (r.dst, r.len) && *g == Some(r.gw) && *oif == index);
        if !there {
            return Err(fail(format!(
                "no route {} via {} on {ifn}",
                r.dst_text(),
                r.gw
            )));
        }
    }
    let host = env.host_ifname();
    let show = uvs(&c.socket(), "show", &[])?;
    let bridge = find_bridge(&show, c.bridge());
    let state = bridge.as_ref().and_then(|b| port_state(b, &host));
    port_is_up(c.bridge(), &host, state).map_err(fail)?;
    check_rates(c, &show, &host).map_err(fail)?;
    for p in &c.runtime_config.port_mappings {
        if nat_index(&c.socket(), |r| is_mapping(c, p, lease.addr, r))?.is_none() {
            return Err(fail(format!(
                "port mapping missing: {}/{} -> {}:{}",
                p.proto(),
                p.host_port,
                lease.addr,
                p.container_port
            )));
        }
    }
    ipam(env, c.ipam_type(), "CHECK", stdin)?;
    Ok(())
}
