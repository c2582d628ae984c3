//! `set-port PORT vlan=.. trunks=.. vlan_mode=.. mac_limit=.. flood_rate=..`: a port's VLAN
//! configuration, MAC limit and flood budget changed in place (OVS's `ovs-vsctl set port P tag=20`), without closing it.
//!
//! Contract:
//! - Each given field replaces the port's (`none` clears `vlan`/`mac_limit`, `all` clears
//!   `trunks`, `vlan_mode=` may be empty); the others are kept. The result is checked as
//!   `add-port` checks it and changes nothing on an error, which names the field.
//! - A new VLAN configuration takes effect from the next burst; the MACs learned on the port
//!   are forgotten (they were keyed by the old VLANs) and learned again from its traffic;
//!   static entries stay. A new `mac_limit` applies to MACs learned from then on; a new
//!   `flood_rate` (`default`: back to the default) keeps the tokens the port has left.
//! - `peer=NAME` (patch ports, OVS's `set interface P options:peer=`) joins the port to
//!   another peer: its inbox is kept, what it sends goes to the new peer from the next pass;
//!   the old and new peers' links change with it (PORT_STATUS).
//! - The port keeps its id, OpenFlow number, flows and counters; the change is the port's
//!   configuration (`save-config`, `--db`). Every worker applies it (see `set`).

use serde_json::{Value, json};

use super::Worker;
use crate::config::PortSpec;

/// The fields `set-port` changes here (each: None when not given).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PortOptions {
    /// `vlan=N|none`.
    pub vlan: Option<Option<u16>>,
    /// `trunks=N,M|all`.
    pub trunks: Option<Option<Vec<u16>>>,
    /// `vlan_mode=MODE` (empty: none).
    pub vlan_mode: Option<Option<String>>,
    /// `mac_limit=N|none`.
    pub mac_limit: Option<Option<u32>>,
    /// `flood_rate=N[/BURST]|off|default`.
    pub flood_rate: Option<Option<String>>,
    /// `peer=NAME` (patch ports).
    pub peer: Option<String>,
}

impl PortOptions {
    /// Parse `key=value` arguments; an error names the field.
    pub fn parse(args: &[String]) -> Result<PortOptions, String> {
        use crate::config::{num, vid_list};
        let mut o = PortOptions::default();
        for a in args {
            let Some((k, v)) = a.split_once('=') else {
                return Err(format!("'{a}': set-port takes KEY=VALUE"));
            };
            match k {
                "vlan" | "tag" => {
                    o.vlan = Some(match v {
                        "none" | "" => None,
                        _ => Some(num("vlan", v)?),
                    })
                }
                "trunks" => {
                    o.trunks = Some(match v {
                        "all" | "" => None,
                        _ => Some(vid_list("trunks", v)?),
                    })
                }
                "vlan_mode" => o.vlan_mode = Some((!v.is_empty()).then(|| v.to_string())),
                "mac_limit" => {
                    o.mac_limit = Some(match v {
                        "none" | "" => None,
                        _ => Some(num("mac_limit", v)?),
                    })
                }
                "flood_rate" => {
                    o.flood_rate = Some(match v {
                        "default" | "" => None,
                        _ => {
                            crate::pipeline::flood_limit::FloodLimit::parse(v)?;
                            Some(v.to_string())
                        }
                    })
                }
                "peer" => o.peer = Some(v.to_string()),
                _ => {
                    return Err(format!(
                        "'{k}': set-port takes vlan, trunks, vlan_mode, mac_limit, flood_rate, peer and rxq_affinity"
                    ));
                }
            }
        }
        Ok(o)
    }

    /// `spec` with these fields applied.
    fn apply(&self, spec: &PortSpec) -> PortSpec {
        let mut s = spec.clone();
        if let Some(v) = self.vlan {
            s.vlan = v;
        }
        if let Some(t) = &self.trunks {
            s.trunks = t.clone();
        }
        if let Some(m) = &self.vlan_mode {
            s.vlan_mode = m.clone();
            // A mode change drops what the new mode does not take, unless given with it
            // (`vlan_mode=access` on a native port: its trunks; `trunk`: its VLAN).
            match m.as_deref() {
                Some("access") if self.trunks.is_none() => s.trunks = None,
                Some("trunk") if self.vlan.is_none() => s.vlan = None,
                _ => {}
            }
        }
        if let Some(l) = self.mac_limit {
            s.mac_limit = l;
        }
        if let Some(f) = &self.flood_rate {
            s.flood_rate = f.clone();
        }
        if let Some(p) = &self.peer {
            s.peer = Some(p.clone());
        }
        s
    }
}

impl Worker {
    /// `set-port PORT vlan=.. trunks=.. vlan_mode=.. mac_limit=..`. See the module
    /// documentation.
    pub(crate) fn set_port_options(
        &mut self,
        port: &str,
        o: &PortOptions,
    ) -> Result<Value, String> {
        let id = self
            .dp
            .port_id(port)
            .ok_or_else(|| format!("port: no port named '{port}'"))?;
        let old = self.specs.ports.get(&id).cloned().ok_or_else(|| {
            format!("port: '{port}' has no configuration to change (an in-memory port)")
        })?;
        let spec = o.apply(&old);
        let both = |e: String| match (old.vlan, spec.vlan, &spec.trunks) {
            // An access port given trunks: say how to make it a trunk (found trying uvs as a
            // new user: the message did not say).
            (Some(_), Some(_), Some(_)) if spec.vlan_mode.is_none() => {
                format!("{e} (vlan=none trunks=... makes this access port a trunk)")
            }
            _ => e,
        };
        spec.validate().map_err(both)?;
        let mode = spec.vlan_mode().map_err(both)?;
        let repeer = spec.peer != old.peer;
        let p = self.dp.port_mut(id).expect("looked up above");
        let vlan_changed = p.vlan != mode;
        p.vlan = mode;
        p.mac_limit = spec.mac_limit.unwrap_or(u32::MAX);
        p.flood = spec.flood_limit()?.keeping(&p.flood);
        let (bridge, describe, p_flood) = (p.bridge, p.vlan.describe(), p.flood.describe());
        let mut forgotten = 0;
        if vlan_changed && let Some(b) = self.dp.bridge_mut(bridge) {
            forgotten = b.fdb.flush_learned(Some(id));
        }
        if let Some(Some(l)) = self.life.get_mut(id as usize) {
            l.spec = Some(spec.clone());
        }
        self.specs.ports.insert(id, spec.clone());
        if repeer {
            self.repeer(id, &spec.name, old.peer.as_deref(), spec.peer.as_deref());
        }
        Ok(json!({
            "port": port,
            "vlan": describe,
            "mac_limit": spec.mac_limit,
            "flood_rate": p_flood,
            "forgotten": forgotten,
        }))
    }
}

impl Worker {
    /// Patch port `id` (`name`) joined to `new` instead of `old`: its sending side follows,
    /// and both peers' links change (PORT_STATUS).
    fn repeer(&mut self, id: u16, name: &str, old: Option<&str>, new: Option<&str>) {
        let Some(new) = new else { return };
        if let Some(Some(p)) = self.ports.get_mut(id as usize) {
            p.set_peer(name, new, &mut self.patches);
        }
        for peer in [old, Some(new)].into_iter().flatten() {
            if let Some(q) = self.dp.port_id(peer) {
                self.port_status(q, crate::events::PORT_MODIFY);
            }
        }
        self.port_status(id, crate::events::PORT_MODIFY);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    /// A mode change drops the fields the new mode does not take (a native port back to
    /// access needed `trunks=all` too: found re-testing as an OVS user).
    #[test]
    fn a_mode_change_drops_what_the_mode_does_not_take() {
        let spec = crate::config::PortSpec::from_args(
            "p",
            &args(&["vlan=10", "trunks=20", "vlan_mode=native-untagged"]),
        )
        .unwrap();
        let o = PortOptions::parse(&args(&["vlan_mode=access"])).unwrap();
        let s = o.apply(&spec);
        assert_eq!(s.vlan_mode().unwrap().describe(), "vlan=10");
        let o = PortOptions::parse(&args(&["vlan_mode=trunk"])).unwrap();
        assert_eq!(o.apply(&spec).vlan_mode().unwrap().describe(), "trunks=20");
    }

    #[test]
    fn parse_names_the_field() {
        let o = PortOptions::parse(&args(&[
            "vlan=20",
            "trunks=all",
            "mac_limit=none",
            "flood_rate=500/50",
        ]))
        .unwrap();
        assert_eq!(
            o,
            PortOptions {
                vlan: Some(Some(20)),
                trunks: Some(None),
                vlan_mode: None,
                mac_limit: Some(None),
                flood_rate: Some(Some("500/50".into())),
                peer: None,
            }
        );
        let o = PortOptions::parse(&args(&["flood_rate=default"])).unwrap();
        assert_eq!(o.flood_rate, Some(None));
        for (a, want) in [
            ("vlan=x", "vlan: 'x'"),
            ("flood_rate=lots", "flood_rate: 'lots'"),
            ("trunks=1,y", "trunks: 'y'"),
            ("mac_limit=-1", "mac_limit: '-1'"),
            ("colour=red", "'colour'"),
            ("vlan", "KEY=VALUE"),
        ] {
            let e = PortOptions::parse(&args(&[a])).unwrap_err();
            assert!(e.contains(want), "{a}: {e}");
        }
    }
}
