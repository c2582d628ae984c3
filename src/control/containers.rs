//! What a SIGHUP reload keeps that the `--config` file does not name: the containers the CNI
//! plugin attached. A reload makes the running configuration the file's, and the file of a
//! container host describes the host (uplink, overlay), not its containers; without this a
//! reload cut every running container off (found trying uvs as a new user).
//!
//! Contract ([`keep_containers`], pure):
//! - A container port is one named as the CNI plugin names its host ends, `uv` + 12 lowercase
//!   hex digits ([`is_container_port`]).
//! - A running bridge that holds container ports keeps them: added to the file's bridge of
//!   that name when the file has one (its settings are the file's), or the whole running
//!   bridge is kept when the file has none.
//! - For those bridges, the running NAT rules the file lacks are kept when they lead into
//!   (`dnat ... to=` an address of the bridge's subnet) or out of (`masquerade`/`snat src=`
//!   inside the subnet) it, and so are the DNS names registered on them.
//! - Everything else follows the file (routes, other bridges, ports, rules).

use std::net::Ipv4Addr;

use crate::config::{Config, NatSpec};

/// True for a name the CNI plugin gives a container's host-side veth (`uv` + 12 hex digits).
pub fn is_container_port(name: &str) -> bool {
    name.len() == 14
        && name.starts_with("uv")
        && name[2..]
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// `A.B.C.D/N` (a gateway or a prefix) as (network, length).
fn subnet(s: &str) -> Option<(u32, u8)> {
    let (a, l) = s.split_once('/')?;
    let a: Ipv4Addr = a.parse().ok()?;
    let l: u8 = l.parse().ok().filter(|l| *l <= 32)?;
    Some((u32::from(a) & crate::route::mask(l), l))
}

fn inside(addr: u32, (net, len): (u32, u8)) -> bool {
    addr & crate::route::mask(len) == net
}

/// Does NAT rule `r` lead into or out of a subnet in `nets`?
fn serves(r: &NatSpec, nets: &[(u32, u8)]) -> bool {
    let addr = match r.kind.as_str() {
        "dnat" => {
            r.to.as_deref()
                .and_then(|t| t.split(':').next()?.parse::<Ipv4Addr>().ok())
        }
        _ => r
            .src
            .as_deref()
            .and_then(subnet)
            .map(|(n, _)| Ipv4Addr::from(n)),
    };
    addr.is_some_and(|a| nets.iter().any(|&n| inside(u32::from(a), n)))
}

/// A NAT rule as `nat-add` arguments, for the log.
fn describe(r: &NatSpec) -> String {
    let mut s = r.kind.clone();
    for (k, v) in [
        ("src", r.src.clone()),
        ("out", r.out.clone()),
        ("in", r.inb.clone()),
        ("proto", r.proto.clone()),
        ("port", r.port.map(|p| p.to_string())),
        ("to", r.to.clone()),
    ] {
        if let Some(v) = v {
            s.push_str(&format!(" {k}={v}"));
        }
    }
    s
}

/// `file` with what `running` holds for the CNI plugin's containers added (see the module
/// documentation), and one line per thing kept, for the log.
pub fn keep_containers(running: &Config, file: &Config) -> (Config, Vec<String>) {
    let mut out = file.clone();
    let mut kept = Vec::new();
    let mut nets = Vec::new();
    let mut bridges = Vec::new();
    for rb in &running.bridge {
        let ports: Vec<_> = rb
            .port
            .iter()
            .filter(|p| is_container_port(&p.name))
            .collect();
        if ports.is_empty() {
            continue;
        }
        bridges.push(rb.name.clone());
        match out.bridge.iter_mut().find(|b| b.name == rb.name) {
            Some(fb) => {
                for p in ports {
                    if !fb.port.iter().any(|x| x.name == p.name) {
                        fb.port.push(p.clone());
                        kept.push(format!("container port {} (bridge {})", p.name, rb.name));
                    }
                }
                // The file's gateway, or the running one where the file gives none.
                let gw = fb.gateway.as_deref().or(rb.gateway.as_deref());
                nets.extend(gw.and_then(subnet));
            }
            None => {
                out.bridge.push(rb.clone());
                kept.push(format!(
                    "bridge {} with {} container port(s)",
                    rb.name,
                    ports.len()
                ));
                nets.extend(rb.gateway.as_deref().and_then(subnet));
            }
        }
    }
    for r in &running.nat {
        if !out.nat.contains(r) && serves(r, &nets) {
            out.nat.push(r.clone());
            kept.push(format!("nat {}", describe(r)));
        }
    }
    for d in &running.dns {
        if bridges.contains(&d.bridge) && !out.dns.iter().any(|x| x == d) {
            out.dns.push(d.clone());
            kept.push(format!("dns {} {} (bridge {})", d.name, d.ip, d.bridge));
        }
    }
    (out, kept)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(text: &str) -> Config {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn container_ports_their_bridges_rules_and_names_are_kept() {
        let running = cfg(r#"
            [[bridge]]
            name = "ext"
            gateway = "10.250.0.1/24"
            [[bridge.port]]
            name = "veth-up"
            type = "afxdp"
            [[bridge]]
            name = "net1"
            gateway = "10.88.7.1/24"
            isolated = true
            [[bridge.port]]
            name = "uv0123456789ab"
            type = "afxdp"
            [[bridge]]
            name = "lab"
            [[bridge.port]]
            name = "tap-lab"
            type = "tap"
            [[nat]]
            kind = "masquerade"
            src = "10.88.7.0/24"
            out = "ext"
            [[nat]]
            kind = "dnat"
            in = "ext"
            proto = "tcp"
            port = 8080
            to = "10.88.7.2:80"
            [[nat]]
            kind = "masquerade"
            src = "10.9.0.0/16"
            out = "ext"
            [[dns]]
            bridge = "net1"
            name = "web"
            ip = "10.88.7.2"
        "#);
        let file = cfg(r#"
            [[bridge]]
            name = "ext"
            gateway = "10.250.0.1/24"
            [[bridge.port]]
            name = "veth-up"
            type = "afxdp"
        "#);
        let (out, kept) = keep_containers(&running, &file);
        let names: Vec<&str> = out.bridge.iter().map(|b| b.name.as_str()).collect();
        assert_eq!(
            names,
            ["ext", "net1"],
            "lab (no containers) follows the file"
        );
        assert_eq!(out.bridge[1], running.bridge[1]);
        assert_eq!(
            out.nat,
            running.nat[..2].to_vec(),
            "the 10.9/16 rule follows the file"
        );
        assert_eq!(out.dns, running.dns);
        assert_eq!(kept.len(), 4, "{kept:?}");
        // A file naming the bridge gives its settings; the container port is added to it.
        let file = cfg(r#"
            [[bridge]]
            name = "net1"
            gateway = "10.88.7.1/24"
            icc = false
        "#);
        let (out, _) = keep_containers(&running, &file);
        assert!(!out.bridge[0].icc);
        assert_eq!(out.bridge[0].port, running.bridge[1].port);
        // A file naming the bridge without a gateway: its rules still go by the running one.
        let file = cfg(r#"
            [[bridge]]
            name = "net1"
        "#);
        let (out, _) = keep_containers(&running, &file);
        assert_eq!(out.nat, running.nat[..2].to_vec());
        // Without container ports nothing is kept.
        let (out, kept) = keep_containers(&file, &Config::default());
        assert_eq!((out, kept.len()), (Config::default(), 0));
        assert!(is_container_port("uv0123456789ab"));
        assert!(!is_container_port("uv0123456789aB") && !is_container_port("uvs0"));
    }
}
