//! ADD, DEL and CHECK (see the module docs of [`super`] for the contract).

use std::fs::File;
use std::net::Ipv4Addr;
use std::path::Path;

use serde_json::{Value, json};

use super::conf::{Env, NetConf, network, parse_cidr};
use super::sys::{ip, ip_in, ipam, open_netns, uvs};
use super::{CniError, E_CHECK, E_IPAM, E_UVS};

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

/// The uvs bridge `name` from `show`, if it exists.
fn find_bridge(show: &Value, name: &str) -> Option<Value> {
    show["bridges"]
        .as_array()?
        .iter()
        .find(|b| b["name"] == name)
        .cloned()
}

/// Makes sure the bridge exists; returns its `show` entry.
fn ensure_bridge(c: &NetConf, sock: &Path, lease: &Lease) -> Result<Value, CniError> {
    let name = c.bridge();
    if let Some(b) = find_bridge(&uvs(sock, "show", &[])?, name) {
        return Ok(b);
    }
    let mut args = vec![
        name.to_string(),
        format!("gateway={}/{}", lease.gateway, lease.len),
    ];
    if c.isolated.unwrap_or(true) {
        args.push("isolated=on".into());
    }
    if c.icc == Some(false) {
        args.push("icc=off".into());
    }
    // A concurrent ADD may have created it first: that is fine.
    if let Err(e) = uvs(sock, "add-br", &args) {
        find_bridge(&uvs(sock, "show", &[])?, name).ok_or(e)?;
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
    find_bridge(&uvs(sock, "show", &[])?, name)
        .ok_or_else(|| CniError::new(E_UVS, format!("bridge '{name}' vanished")))
}

/// The index of the first NAT rule whose text satisfies `f`.
fn nat_index(sock: &Path, f: impl Fn(&str) -> bool) -> Result<Option<u64>, CniError> {
    let v = uvs(sock, "nat-show", &[])?;
    Ok(v["rules"].as_array().into_iter().flatten().find_map(|r| {
        f(r["rule"].as_str().unwrap_or_default()).then(|| r["index"].as_u64().unwrap_or(0))
    }))
}

/// The port mappings' rule prefixes (`dnat in=B proto=P port=N to=`), unique per bridge.
fn dnat_prefixes(c: &NetConf) -> Vec<String> {
    c.runtime_config
        .port_mappings
        .iter()
        .map(|p| {
            format!(
                "dnat in={} proto={} port={} to=",
                c.dnat_bridge(),
                p.proto(),
                p.host_port
            )
        })
        .collect()
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

fn add_with_lease(
    env: &Env,
    c: &NetConf,
    ns: &File,
    ipam_result: &Value,
) -> Result<Value, CniError> {
    let lease = lease_of(ipam_result)?;
    let sock = c.socket();
    let bridge = ensure_bridge(c, &sock, &lease)?;
    let mtu = mtu_for(c, &bridge).to_string();
    let host = env.host_ifname();
    let nspath = env.netns.as_str();
    ip(&[
        "link",
        "add",
        &host,
        "mtu",
        &mtu,
        "type",
        "veth",
        "peer",
        "name",
        &env.ifname,
        "mtu",
        &mtu,
        "netns",
        nspath,
    ])?;
    let ifn = env.ifname.as_str();
    let mac = c.runtime_config.mac.clone().or_else(|| env.arg("MAC"));
    let default_route = setup_container(ns, ifn, &lease, mac.as_deref())?;
    ip(&["link", "set", &host, "up"])?;
    uvs(
        &sock,
        "add-port",
        &[c.bridge().into(), host.clone(), "type=afxdp".into()],
    )?;
    for (p, prefix) in c.runtime_config.port_mappings.iter().zip(dnat_prefixes(c)) {
        let rule = format!("{prefix}{}:{}", lease.addr, p.container_port);
        let parts: Vec<String> = rule.split(' ').map(str::to_string).collect();
        uvs(&sock, "nat-add", &parts)?;
    }
    let named = super::dns::register(env, c, lease.addr)?;
    let cmac = link_mac(ip_in(ns, &["-j", "link", "show", "dev", ifn])?);
    let hmac = link_mac(ip(&["-j", "link", "show", "dev", &host])?);
    let cidr = format!("{}/{}", lease.addr, lease.len);
    let routes: Vec<Value> = default_route
        .then(|| json!({"dst": "0.0.0.0/0", "gw": lease.gateway.to_string()}))
        .into_iter()
        .collect();
    let mut ipe = json!({"address": cidr, "gateway": lease.gateway.to_string(), "interface": 1});
    if c.cni_version != "1.0.0" {
        ipe["version"] = json!("4");
    }
    Ok(json!({
        "cniVersion": c.cni_version,
        "interfaces": [
            {"name": host, "mac": hmac},
            {"name": ifn, "mac": cmac, "sandbox": env.netns},
        ],
        "ips": [ipe],
        "routes": routes,
        "dns": super::dns::result_dns(ipam_result, lease.gateway, named),
    }))
}

/// The container side: MAC, address, up, and the default route via the gateway unless the
/// namespace has one already (a container on a second network keeps its first default route).
/// Returns whether the default route was added.
fn setup_container(
    ns: &File,
    ifn: &str,
    lease: &Lease,
    mac: Option<&str>,
) -> Result<bool, CniError> {
    if let Some(m) = mac {
        ip_in(ns, &["link", "set", ifn, "address", m])?;
    }
    let cidr = format!("{}/{}", lease.addr, lease.len);
    ip_in(ns, &["addr", "add", &cidr, "dev", ifn])?;
    ip_in(ns, &["link", "set", ifn, "up"])?;
    if !default_routes(ns)?.is_empty() {
        return Ok(false);
    }
    let gw = lease.gateway.to_string();
    ip_in(ns, &["route", "add", "default", "via", &gw, "dev", ifn])?;
    Ok(true)
}

/// The namespace's IPv4 default routes (`ip -j route show default`).
fn default_routes(ns: &File) -> Result<Vec<Value>, CniError> {
    let text = ip_in(ns, &["-j", "route", "show", "default"])?;
    Ok(serde_json::from_str::<Value>(&text)
        .ok()
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default())
}

/// The `address` of `ip -j link show` output.
fn link_mac(json_text: String) -> String {
    serde_json::from_str::<Value>(&json_text)
        .ok()
        .and_then(|v| v.get(0)?.get("address")?.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// Removes what ADD made in uvs and the host (not the lease); missing pieces are fine. Port
/// mappings are removed only when the container's address `addr` is known (from prevResult or
/// the lease): a mapping of the same host port to another container is never touched.
fn teardown(env: &Env, c: &NetConf, addr: Option<Ipv4Addr>) -> Result<(), CniError> {
    let sock = c.socket();
    let host = env.host_ifname();
    super::dns::unregister(env, c, addr);
    for prefix in addr.map(|_| dnat_prefixes(c)).unwrap_or_default() {
        let want = format!("{prefix}{}:", addr.unwrap_or(Ipv4Addr::UNSPECIFIED));
        while let Some(i) = nat_index(&sock, |r| r.starts_with(&want))? {
            uvs(&sock, "nat-del", &[i.to_string()])?;
        }
    }
    let show = uvs(&sock, "show", &[])?;
    if find_bridge(&show, c.bridge()).is_some_and(|b| has_port(&b, &host)) {
        uvs(&sock, "del-port", &[c.bridge().into(), host.clone()])?;
    }
    if ip(&["link", "show", "dev", &host]).is_ok() {
        ip(&["link", "del", "dev", &host])?;
    }
    Ok(())
}

fn has_port(bridge: &Value, port: &str) -> bool {
    bridge["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|p| p["name"] == port)
}

/// DEL: idempotent.
pub fn del(env: &Env, c: &NetConf, stdin: &[u8]) -> Result<(), CniError> {
    let addr = c
        .prev_result
        .as_ref()
        .and_then(|p| lease_of(p).ok())
        .map(|l| l.addr);
    teardown(env, c, addr)?;
    ipam(env, c.ipam_type(), "DEL", stdin)?;
    Ok(())
}

/// CHECK: the container interface, address and default route, the uvs port, then IPAM.
pub fn check(env: &Env, c: &NetConf, stdin: &[u8]) -> Result<(), CniError> {
    let prev = c
        .prev_result
        .as_ref()
        .ok_or_else(|| CniError::new(super::E_INVALID_CONFIG, "prevResult: required by CHECK"))?;
    let lease = lease_of(prev)?;
    let ns = open_netns(&env.netns)?;
    let ifn = env.ifname.as_str();
    let fail = |m: String| CniError::new(E_CHECK, m);
    let addrs = ip_in(&ns, &["-j", "addr", "show", "dev", ifn])
        .map_err(|e| fail(format!("interface {ifn} missing in CNI_NETNS")).details(e.msg))?;
    let want = lease.addr.to_string();
    let has_addr = serde_json::from_str::<Value>(&addrs)
        .ok()
        .and_then(|v| v.get(0).cloned())
        .is_some_and(|l| {
            l["addr_info"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|a| a["local"] == want.as_str() && a["prefixlen"] == u64::from(lease.len))
        });
    if !has_addr {
        return Err(fail(format!("{ifn} lacks {want}/{}", lease.len)));
    }
    let gw = lease.gateway.to_string();
    let wants_route = prev["routes"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|r| r["dst"] == "0.0.0.0/0");
    let has_route = default_routes(&ns)?
        .iter()
        .any(|r| r["gateway"] == gw.as_str() && r["dev"] == ifn);
    if wants_route && !has_route {
        return Err(fail(format!("no default route via {gw} on {ifn}")));
    }
    let host = env.host_ifname();
    let show = uvs(&c.socket(), "show", &[])?;
    let port_ok = find_bridge(&show, c.bridge()).is_some_and(|b| has_port(&b, &host));
    if !port_ok {
        return Err(fail(format!(
            "uvs bridge '{}' has no port {host}",
            c.bridge()
        )));
    }
    for prefix in dnat_prefixes(c) {
        let want = format!("{prefix}{}:", lease.addr);
        if nat_index(&c.socket(), |r| r.starts_with(&want))?.is_none() {
            return Err(fail(format!(
                "port mapping missing: {prefix}{}",
                lease.addr
            )));
        }
    }
    ipam(env, c.ipam_type(), "CHECK", stdin)?;
    Ok(())
}
