//! `nat-add` on the worker: validates a [`NatSpec`] against the running bridges and adds the
//! rule. A `dnat` without a host port (0 or missing) gets one picked from the DNAT port range
//! (see [`crate::nat`]): unused by any mapping of that protocol on the same gateway address.
//!
//! Answer: `{"index": N, "rule": TEXT}` (the rule as `nat-show` prints it), plus `"port": P`
//! for `dnat` (the host port, picked or given).

use serde_json::{Value, json};

use super::Worker;
use crate::config::NatSpec;

impl Worker {
    /// Rule `rule` was deleted: a port mapping's connections go with it (`Nat::forget_mapped`).
    pub(super) fn nat_deleted(&mut self, rule: &crate::nat::NatRule) {
        if let crate::nat::NatRule::Dest {
            inb, proto, port, ..
        } = *rule
            && let Some(g) = self.dp.bridge(inb).and_then(|b| b.gateway)
        {
            self.dp.nat.forget_mapped(g.ip, proto, port);
        }
    }

    pub(super) fn nat_add(&mut self, spec: &NatSpec) -> Result<Value, String> {
        spec.check()?;
        let bridge = |name: &Option<String>, field: &str| -> Result<u16, String> {
            let n = name.as_deref().unwrap_or_default();
            self.dp
                .bridge_id(n)
                .ok_or_else(|| format!("{field}: no bridge named '{n}'"))
        };
        let mut port = None;
        let index = match spec.kind.as_str() {
            "dnat" => {
                let inb = bridge(&spec.inb, "in")?;
                let Some(gw) = self.dp.bridge(inb).and_then(|b| b.gateway) else {
                    return Err("in: the bridge has no gateway address to map".into());
                };
                let (to, to_port) = spec.dnat_to()?;
                // A target no host can be (it was accepted and answered nothing, or net
                // unreachable). Checked here, when a rule is added, not when a configuration
                // is parsed: a database an older uvs wrote with one still loads (the rule is
                // left out, logged).
                if let Some(why) = crate::datapath::not_lan_unicast(to) {
                    return Err(format!(
                        "to: {} is not a host address ({why})",
                        std::net::Ipv4Addr::from(to)
                    ));
                }
                // A gateway's own address (the mapping's, or another bridge's) is the switch:
                // mapped there, packets would loop or answer nothing.
                if self
                    .dp
                    .bridges()
                    .any(|(_, b)| b.gateway.is_some_and(|g| g.ip == to))
                {
                    return Err(format!(
                        "to: {} is a gateway address of this switch, not a host",
                        std::net::Ipv4Addr::from(to)
                    ));
                }
                let proto = spec.dnat_proto()?;
                let host_port = match spec.port.unwrap_or(0) {
                    0 => {
                        // Bridges sharing this gateway address share its port space.
                        let same: Vec<u16> = self
                            .dp
                            .bridges()
                            .filter(|(_, b)| b.gateway.is_some_and(|g| g.ip == gw.ip))
                            .map(|(id, _)| id)
                            .collect();
                        self.dp.nat.pick_dest_port(proto, |b| same.contains(&b))?
                    }
                    p => p,
                };
                // Hairpin needs pools on the gateway of the target's bridge.
                if let Some(r) = self.dp.routes.lookup(to)
                    && let Some(g) = self.dp.bridge(r.bridge()).and_then(|b| b.gateway)
                {
                    self.dp.nat.ensure_hairpin(r.bridge(), g.ip)?;
                }
                port = Some(host_port);
                let name = spec.inb.as_deref().unwrap_or_default();
                let i = self
                    .dp
                    .nat
                    .add_dest(inb, proto, host_port, to, to_port)
                    .map_err(|e| e.replace("that bridge", &format!("bridge '{name}'")))?;
                self.dp.nat.forget_mapped(gw.ip, proto, host_port);
                i
            }
            kind => {
                let out = bridge(&spec.out, "out")?;
                let (p, l) = crate::route::parse_prefix(spec.src.as_deref().unwrap_or_default())?;
                let (to, addr) = if kind == "snat" {
                    let a = spec.snat_to()?;
                    (Some(a), a)
                } else {
                    let g = self
                        .dp
                        .bridge(out)
                        .and_then(|b| b.gateway)
                        .ok_or("out: masquerade needs a gateway address on the bridge")?;
                    (None, g.ip)
                };
                self.dp.nat.add_source(u32::from(p), l, out, to, addr)?
            }
        };
        let names = |b: u16| {
            self.dp
                .bridge(b)
                .map(|b| b.name.clone())
                .unwrap_or_default()
        };
        let rule = self
            .dp
            .nat
            .rows(names)
            .into_iter()
            .nth(index)
            .map(|r| r.rule)
            .unwrap_or_default();
        let mut v = json!({"index": index, "rule": rule});
        if let Some(p) = port {
            v["port"] = json!(p);
        }
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{BridgeSpec, NatSpec};
    use crate::worker::Command;

    fn s(a: &[&str]) -> Vec<String> {
        a.iter().map(|x| x.to_string()).collect()
    }

    /// Deleting a bridge, or moving its gateway to another subnet, answers the NAT rules that
    /// still name its (old) subnet, which are kept (they were left behind without a word).
    #[test]
    fn a_deleted_or_moved_bridge_names_the_nat_rules_left_on_its_subnet() {
        let w = crate::worker::spawn_for_tests();
        for (name, gw) in [
            ("ext", "10.250.0.1/24"),
            ("br0", "172.31.51.1/24"),
            ("br1", "172.31.52.1/24"),
        ] {
            let b = BridgeSpec::from_args(name, &s(&[&format!("gateway={gw}")])).unwrap();
            w.call(Command::AddBridge(b)).unwrap();
        }
        for rule in [
            vec!["masquerade", "src=172.31.51.0/24", "out=ext"],
            vec![
                "dnat",
                "in=ext",
                "proto=tcp",
                "port=8080",
                "to=172.31.51.2:80",
            ],
            vec!["masquerade", "src=172.31.52.0/24", "out=ext"],
        ] {
            w.call(Command::NatAdd(NatSpec::from_args(&s(&rule)).unwrap()))
                .unwrap();
        }
        let v = w.call(Command::DelBridge("br0".into())).unwrap();
        assert_eq!(
            v["stale_nat"],
            serde_json::json!([
                "#0 masquerade src=172.31.51.0/24 out=ext",
                "#1 dnat in=ext proto=tcp port=8080 to=172.31.51.2:80"
            ])
        );
        let gw = crate::config::parse_gateway("br1", Some("172.31.60.1/24"), None).unwrap();
        let v = w
            .call(Command::SetGateway {
                bridge: "br1".into(),
                gateway: gw,
            })
            .unwrap();
        assert_eq!(
            v["stale_nat"],
            serde_json::json!(["#2 masquerade src=172.31.52.0/24 out=ext"])
        );
    }

    /// A mapping to an address no host can be (0.0.0.0, broadcast, multicast, loopback) or to
    /// a gateway of the switch itself is refused naming `to` (they were accepted and
    /// answered nothing, or looped).
    #[test]
    fn dnat_to_a_non_host_or_a_gateway_is_refused() {
        let w = crate::worker::spawn_for_tests();
        for (name, gw) in [("ext", "10.250.0.1/24"), ("br0", "172.31.5.1/24")] {
            let b = BridgeSpec::from_args(name, &s(&[&format!("gateway={gw}")])).unwrap();
            w.call(Command::AddBridge(b)).unwrap();
        }
        for (to, want) in [
            ("0.0.0.0", "0.0.0.0/8"),
            ("255.255.255.255", "240.0.0.0/4"),
            ("224.0.0.5", "multicast"),
            ("127.0.0.1", "loopback"),
            ("10.250.0.1", "gateway address"),
            ("172.31.5.1", "gateway address"),
        ] {
            let a = s(&[
                "dnat",
                "in=ext",
                "proto=tcp",
                "port=9100",
                &format!("to={to}:80"),
            ]);
            let e = match NatSpec::from_args(&a) {
                Err(e) => e,
                Ok(spec) => w.call(Command::NatAdd(spec)).unwrap_err(),
            };
            assert!(e.starts_with("to: ") && e.contains(want), "{to}: {e}");
        }
        let a = s(&[
            "dnat",
            "in=ext",
            "proto=tcp",
            "port=9100",
            "to=172.31.5.2:80",
        ]);
        w.call(Command::NatAdd(NatSpec::from_args(&a).unwrap()))
            .unwrap();
    }

    /// `dnat ... port=0` picks the next free port of the range, answers it, keeps it in
    /// `nat-show` and the running configuration; a full range is an error naming the range.
    #[test]
    fn dnat_port_zero_picks_a_free_host_port() {
        let w = crate::worker::spawn_for_tests();
        for (name, gw) in [("ext", "10.250.0.1/24"), ("br0", "172.31.5.1/24")] {
            let b = BridgeSpec::from_args(name, &s(&[&format!("gateway={gw}")])).unwrap();
            w.call(Command::AddBridge(b)).unwrap();
        }
        w.call(Command::SetNatPorts(40000..=40002)).unwrap();
        let add = |port: &str, proto: &str| {
            let mut a = s(&["dnat", "in=ext", proto, "to=172.31.5.2:80"]);
            if !port.is_empty() {
                a.push(port.into());
            }
            w.call(Command::NatAdd(NatSpec::from_args(&a).unwrap()))
        };
        // A fixed mapping of 40001 is skipped; the missing port and port=0 both pick.
        add("port=40001", "proto=tcp").unwrap();
        let a = add("", "proto=tcp").unwrap();
        assert_eq!(a["port"], 40000, "{a}");
        assert_eq!(
            a["rule"],
            "dnat in=ext proto=tcp port=40000 to=172.31.5.2:80"
        );
        let b = add("port=0", "proto=tcp").unwrap();
        assert_eq!(b["port"], 40002, "{b}");
        // UDP has its own port space.
        assert_eq!(add("port=0", "proto=udp").unwrap()["port"], 40000);
        let e = add("port=0", "proto=tcp").unwrap_err();
        assert!(e.contains("40000-40002") && e.contains("tcp"), "{e}");
        // Deleting one frees it; the next pick finds it.
        w.call(Command::NatDelRule(
            "dnat in=ext proto=tcp port=40000 to=172.31.5.2:80".into(),
        ))
        .unwrap();
        assert_eq!(add("", "proto=tcp").unwrap()["port"], 40000);
        let show = w.call(Command::NatShow).unwrap();
        assert_eq!(show["port_range"], "40000-40002");
        let c: crate::config::Config =
            serde_json::from_value(w.call(Command::RunningConfig).unwrap()).unwrap();
        assert_eq!(c.nat_port_range.as_deref(), Some("40000-40002"));
        assert!(
            c.nat.iter().all(|n| n.port.unwrap_or(0) != 0),
            "{:?}",
            c.nat
        );
        // The running configuration reads back as a valid file.
        crate::config::Config::parse(&c.to_toml().unwrap()).unwrap();
        w.shutdown();
    }
}
