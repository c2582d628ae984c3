//! Derived state a control-plane adapter (the etcd overlay, `crate::etcd`) programs into the
//! datapath: gateways, routes, PERMANENT neighbours and static FDB entries with their VTEP.
//!
//! Contract:
//! - Ops are applied in order; each one that fails is reported by index and message, the
//!   others still apply (the adapter resyncs from its own view of what should be).
//! - Everything an op adds is remembered as *derived* ([`Derived`]): the running configuration
//!   (database, `save-config`) leaves it out, so a reload never removes it and a restart does
//!   not bring back a peer that left while the switch was down: the adapter programs it again
//!   from etcd.
//! - Adds replace: a route, neighbour or FDB entry that exists is overwritten with the new
//!   value (a peer that came back with a new VTEP MAC or address).

use std::collections::HashSet;
use std::net::Ipv4Addr;

use serde_json::{Value, json};

use super::Worker;
use crate::datapath::Gateway;
use crate::route::{Route, RouteKind};
use crate::wire::MacAddr;

/// One change to derived state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OverlayOp {
    /// Set `bridge`'s gateway to `ip/len`, keeping its MAC (or the host's default MAC for the
    /// bridge when it has none). The answer carries the MAC.
    Gateway {
        /// Bridge name.
        bridge: String,
        /// Address.
        ip: Ipv4Addr,
        /// Prefix length of the connected subnet.
        len: u8,
    },
    /// Route `prefix/len` via `via` (the egress bridge is the one whose subnet holds `via`).
    Route {
        /// Network.
        prefix: Ipv4Addr,
        /// Length.
        len: u8,
        /// Next hop.
        via: Ipv4Addr,
    },
    /// Remove a derived route.
    RouteDel {
        /// Network.
        prefix: Ipv4Addr,
        /// Length.
        len: u8,
    },
    /// A PERMANENT neighbour `ip` -> `mac` on `bridge`.
    Neigh {
        /// Bridge name.
        bridge: String,
        /// Address.
        ip: Ipv4Addr,
        /// MAC.
        mac: MacAddr,
    },
    /// Remove a PERMANENT neighbour.
    NeighDel {
        /// Bridge name.
        bridge: String,
        /// Address.
        ip: Ipv4Addr,
    },
    /// A static FDB entry `mac` on vxlan `port` of `bridge`, behind VTEP `remote` (which is
    /// also accepted as a sender on the port, without joining its flood list).
    Fdb {
        /// Bridge name.
        bridge: String,
        /// MAC.
        mac: MacAddr,
        /// VXLAN port name.
        port: String,
        /// Remote VTEP.
        remote: Ipv4Addr,
    },
    /// Remove a derived FDB entry if it is still behind `remote` (flannel deletes by MAC and
    /// address: a newer lease with the same VtepMAC keeps its entry), and stop accepting
    /// `remote` when no other static entry sends to it.
    FdbDel {
        /// Bridge name.
        bridge: String,
        /// MAC.
        mac: MacAddr,
        /// VXLAN port name.
        port: String,
        /// Remote VTEP it had.
        remote: Ipv4Addr,
    },
}

/// What the adapters programmed, left out of the running configuration.
#[derive(Debug, Default)]
pub(crate) struct Derived {
    /// Bridges whose gateway is derived.
    pub gateways: HashSet<String>,
    /// Derived routes (prefix, len).
    pub routes: HashSet<(u32, u8)>,
    /// Derived FDB entries (bridge, MAC).
    pub fdb: HashSet<(u16, u64)>,
}

impl Worker {
    /// Apply `ops` (see the module contract); answers `{"applied": N, "errors": [...],
    /// "gateway_macs": {bridge: MAC}}`.
    pub(crate) fn overlay_apply(&mut self, ops: Vec<OverlayOp>, now: u64) -> Value {
        let mut errors = Vec::new();
        let mut macs = serde_json::Map::new();
        let mut applied = 0;
        for (i, op) in ops.into_iter().enumerate() {
            match self.overlay_op(op, now as u32) {
                Ok(Some((b, m))) => {
                    macs.insert(b, json!(m.to_string()));
                    applied += 1;
                }
                Ok(None) => applied += 1,
                Err(e) => errors.push(json!({"op": i, "error": e})),
            }
        }
        json!({"applied": applied, "errors": errors, "gateway_macs": macs})
    }

    /// Whether what the adapter programmed is all still there: each derived gateway's bridge
    /// has a gateway, each derived route and static FDB entry exists. A reload that re-created
    /// a bridge, `route-del` or `fdb-del` can take it away; the adapter then programs it all
    /// again (`etcd::agent`; found trying uvs as a new user: a SIGHUP that changed the
    /// container bridge left the host's containers without their gateway for good). Records
    /// of what is gone are forgotten here (programming again records it anew); those of a
    /// bridge that no longer exists are forgotten without counting as lost (nothing could
    /// put them back).
    pub(crate) fn overlay_check(&mut self) -> bool {
        let dp = &self.dp;
        let d = &mut self.specs.derived;
        let mut intact = true;
        d.gateways
            .retain(|name| match dp.bridge_id(name).and_then(|b| dp.bridge(b)) {
                None => false,
                Some(b) => {
                    intact &= b.gateway.is_some();
                    b.gateway.is_some()
                }
            });
        d.routes.retain(|&(prefix, len)| {
            let there = dp.routes.get(Ipv4Addr::from(prefix), len).is_some();
            intact &= there;
            there
        });
        d.fdb.retain(|&(b, mac)| match dp.bridge(b) {
            None => false,
            Some(br) => {
                let there = br.fdb.lookup(0, mac).is_some();
                intact &= there;
                there
            }
        });
        intact
    }

    fn overlay_op(&mut self, op: OverlayOp, now: u32) -> Result<Option<(String, MacAddr)>, String> {
        match op {
            OverlayOp::Gateway { bridge, ip, len } => {
                let mac = self.overlay_gateway(&bridge, ip, len)?;
                Ok(Some((bridge, mac)))
            }
            OverlayOp::Route { prefix, len, via } => {
                // A route being replaced goes first: it may cover its own next hop.
                let old = match self.dp.routes.get(prefix, len) {
                    Some(r) if matches!(r.kind, RouteKind::Connected { .. }) => {
                        return Err(format!("{prefix}/{len} is a connected route here"));
                    }
                    Some(_) => Some(self.dp.routes.del(prefix, len).map_err(|e| e.to_string())?),
                    None => None,
                };
                let bridge = match self.dp.routes.lookup(via.octets()) {
                    Some(r) if matches!(r.kind, RouteKind::Connected { .. }) => r.bridge(),
                    _ => {
                        if let Some(o) = old {
                            let _ = self.dp.routes.add(o);
                        }
                        return Err(format!("via: {via} is not on any bridge's subnet"));
                    }
                };
                let kind = RouteKind::Via {
                    gateway: via,
                    bridge,
                };
                self.dp
                    .routes
                    .add(Route { prefix, len, kind })
                    .map_err(|e| e.to_string())?;
                self.specs.derived.routes.insert((u32::from(prefix), len));
                Ok(None)
            }
            OverlayOp::RouteDel { prefix, len } => {
                if self.specs.derived.routes.remove(&(u32::from(prefix), len)) {
                    self.dp.routes.del(prefix, len).map_err(|e| e.to_string())?;
                }
                Ok(None)
            }
            OverlayOp::Neigh { bridge, ip, mac } => {
                let b = self.bridge_id_of(&bridge)?;
                if !self.dp.neigh.set_permanent(b, ip.octets(), mac, now) {
                    return Err(format!("neighbour {ip}: table full"));
                }
                Ok(None)
            }
            OverlayOp::NeighDel { bridge, ip } => {
                let b = self.bridge_id_of(&bridge)?;
                self.dp.neigh.remove_permanent(b, ip.octets());
                Ok(None)
            }
            OverlayOp::Fdb {
                bridge,
                mac,
                port,
                remote,
            } => self
                .overlay_fdb(&bridge, mac, &port, remote, now)
                .map(|_| None),
            OverlayOp::FdbDel {
                bridge,
                mac,
                port,
                remote,
            } => self
                .overlay_fdb_del(&bridge, mac, &port, remote)
                .map(|_| None),
        }
    }

    /// Set `bridge`'s gateway to `ip/len` keeping its MAC (or the host's default one);
    /// returns the MAC.
    fn overlay_gateway(&mut self, bridge: &str, ip: Ipv4Addr, len: u8) -> Result<MacAddr, String> {
        let b = self.bridge_id_of(bridge)?;
        let br = self.dp.bridge(b).expect("checked");
        let mac = br
            .gateway
            .map(|g| g.mac)
            .unwrap_or_else(|| Gateway::host_mac(crate::host::host_id(), bridge));
        let g = Gateway {
            ip: ip.octets(),
            len,
            mac,
        };
        if br.gateway != Some(g) {
            self.dp.set_gateway(b, Some(g))?;
            self.announce_gateway(b);
        }
        self.specs.derived.gateways.insert(bridge.to_string());
        Ok(mac)
    }

    /// A derived static FDB entry `mac` -> vxlan `port` behind `remote` (replacing any entry
    /// for the MAC); the remote is accepted as a sender.
    fn overlay_fdb(
        &mut self,
        bridge: &str,
        mac: MacAddr,
        port: &str,
        remote: Ipv4Addr,
        now: u32,
    ) -> Result<(), String> {
        let (b, pid) = self.tunnel_port(bridge, port)?;
        let fdb = &mut self.dp.bridge_mut(b).expect("checked").fdb;
        fdb.remove(0, mac.to_u64());
        fdb.add_static(0, mac.to_u64(), pid, now)
            .map_err(|_| format!("bridge '{bridge}': FDB full"))?;
        let t = self.dp.port_mut(pid).and_then(|s| s.tunnel.as_mut());
        let t = t.expect("checked tunnel");
        t.add_static(0, mac.to_u64(), remote.octets());
        t.add_peer(remote.octets());
        self.specs.derived.fdb.insert((b, mac.to_u64()));
        Ok(())
    }

    /// Remove the derived FDB entry `mac` if it is still behind `remote` (flannel deletes by
    /// MAC and address: another lease may have pointed the MAC elsewhere since), and stop
    /// accepting `remote` once no static entry sends to it.
    fn overlay_fdb_del(
        &mut self,
        bridge: &str,
        mac: MacAddr,
        port: &str,
        remote: Ipv4Addr,
    ) -> Result<(), String> {
        let (b, pid) = self.tunnel_port(bridge, port)?;
        let key = mac.to_u64();
        let t = self.dp.port_mut(pid).and_then(|s| s.tunnel.as_mut());
        let t = t.expect("checked tunnel");
        let ours = t.remote_of(0, key).is_none_or(|r| r == remote.octets());
        if ours {
            t.forget(0, key);
        }
        if !t.static_uses(remote.octets()) {
            t.remove_peer(remote.octets());
        }
        if ours && self.specs.derived.fdb.remove(&(b, key)) {
            let br = self.dp.bridge_mut(b).expect("checked");
            br.fdb.remove(0, key);
        }
        Ok(())
    }

    fn bridge_id_of(&self, name: &str) -> Result<u16, String> {
        self.dp
            .bridge_id(name)
            .ok_or_else(|| format!("no bridge named '{name}'"))
    }

    /// (bridge id, port id) of vxlan port `port` in `bridge`.
    fn tunnel_port(&self, bridge: &str, port: &str) -> Result<(u16, u16), String> {
        let b = self.bridge_id_of(bridge)?;
        let pid = self
            .dp
            .port_id(port)
            .filter(|id| {
                self.dp
                    .port(*id)
                    .is_some_and(|s| s.bridge == b && s.tunnel.is_some())
            })
            .ok_or_else(|| format!("no vxlan port named '{port}' in bridge '{bridge}'"))?;
        Ok((b, pid))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::config::{BridgeSpec, PortSpec};
    use crate::worker::Command;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    /// Every page of the overlay bridge's FDB, as JSON text.
    fn fdb_all(w: &crate::worker::WorkerHandle) -> String {
        let mut all = String::new();
        let mut from = Some(0);
        while let Some(f) = from {
            let bridge = "flannel".to_string();
            let v = w.call(Command::FdbShow { bridge, from: f }).unwrap();
            from = v["next"].as_u64().map(|n| n as usize);
            all += &v["entries"].to_string();
        }
        all
    }

    /// The remote behind `mac` in the overlay bridge's FDB (None: no entry).
    pub(crate) fn fdb_remote(w: &crate::worker::WorkerHandle, mac: MacAddr) -> Option<String> {
        let mut from = Some(0);
        while let Some(f) = from {
            let bridge = "flannel".to_string();
            let v = w.call(Command::FdbShow { bridge, from: f }).unwrap();
            from = v["next"].as_u64().map(|n| n as usize);
            for e in v["entries"].as_array().into_iter().flatten() {
                if e["mac"] == mac.to_string().as_str() {
                    return e["remote"].as_str().map(str::to_string);
                }
            }
        }
        None
    }

    /// A worker with an underlay bridge `ul` (10.252.0.1/24), `br0` and the overlay bridge
    /// `flannel` holding vxlan port `flannel.1` (VNI 1, port 8472).
    pub(crate) fn overlay_worker() -> crate::worker::WorkerHandle {
        let w = crate::worker::spawn_for_tests();
        let ul = BridgeSpec::from_args("ul", &s(&["gateway=10.252.0.1/24"])).unwrap();
        w.call(Command::AddBridge(ul)).unwrap();
        for b in ["br0", "flannel"] {
            let spec = BridgeSpec::from_args(b, &[]).unwrap();
            w.call(Command::AddBridge(spec)).unwrap();
        }
        let vx = PortSpec::from_args(
            "flannel.1",
            &s(&[
                "type=vxlan",
                "vni=1",
                "local_ip=10.252.0.1",
                "dst_port=8472",
            ]),
        )
        .unwrap();
        let bridge = "flannel".into();
        w.call(Command::AddPort { bridge, spec: vx }).unwrap();
        w
    }

    /// Deleting the FDB entry of a lease whose VtepMAC a newer lease re-pointed leaves the
    /// newer one's entry: flannel deletes by (MAC, address). Found by a tester: a host's stale
    /// lease expiring cut the host off.
    #[test]
    fn fdb_del_removes_the_entry_only_behind_its_own_remote() {
        let w = overlay_worker();
        let mac: MacAddr = "02:00:00:00:00:42".parse().unwrap();
        let fdb = |remote: &str| OverlayOp::Fdb {
            bridge: "flannel".into(),
            mac,
            port: "flannel.1".into(),
            remote: remote.parse().unwrap(),
        };
        let fdb_del = |remote: &str| OverlayOp::FdbDel {
            bridge: "flannel".into(),
            mac,
            port: "flannel.1".into(),
            remote: remote.parse().unwrap(),
        };
        let v = w.call(Command::Overlay(vec![
            fdb("10.252.0.2"),
            fdb("10.252.0.12"),
        ]));
        assert_eq!(v.unwrap()["applied"], 2);
        assert_eq!(fdb_remote(&w, mac).as_deref(), Some("10.252.0.12"));
        w.call(Command::Overlay(vec![fdb_del("10.252.0.2")]))
            .unwrap();
        assert_eq!(fdb_remote(&w, mac).as_deref(), Some("10.252.0.12"));
        let intact = w.call(Command::OverlayIntact).unwrap();
        assert_eq!(intact["intact"], true, "{intact}");
        w.call(Command::Overlay(vec![fdb_del("10.252.0.12")]))
            .unwrap();
        assert_eq!(fdb_remote(&w, mac), None);
        w.shutdown();
    }

    #[test]
    fn derived_entries_are_programmed_replaced_removed_and_never_saved() {
        let w = overlay_worker();
        let ip = |a: &str| a.parse::<Ipv4Addr>().unwrap();
        let mac: MacAddr = "02:00:00:00:00:42".parse().unwrap();
        let mac2: MacAddr = "02:00:00:00:00:43".parse().unwrap();
        let peer = |mac: MacAddr, public: &str| {
            vec![
                OverlayOp::Neigh {
                    bridge: "flannel".into(),
                    ip: ip("10.5.2.0"),
                    mac,
                },
                OverlayOp::Fdb {
                    bridge: "flannel".into(),
                    mac,
                    port: "flannel.1".into(),
                    remote: ip(public),
                },
                OverlayOp::Route {
                    prefix: ip("10.5.2.0"),
                    len: 24,
                    via: ip("10.5.2.0"),
                },
            ]
        };
        let mut ops = vec![
            OverlayOp::Gateway {
                bridge: "br0".into(),
                ip: ip("10.5.1.1"),
                len: 24,
            },
            OverlayOp::Gateway {
                bridge: "flannel".into(),
                ip: ip("10.5.1.0"),
                len: 16,
            },
        ];
        ops.extend(peer(mac, "10.252.0.2"));
        let v = w.call(Command::Overlay(ops)).unwrap();
        assert_eq!(v["applied"], 5, "{v}");
        assert!(v["gateway_macs"]["flannel"].is_string(), "{v}");
        let routes = w.call(Command::RouteShow).unwrap().to_string();
        assert!(
            routes.contains("10.5.2.0/24") && routes.contains("10.5.0.0/16"),
            "{routes}"
        );
        let neigh = w.call(Command::NeighShow { from: 0 }).unwrap().to_string();
        assert!(
            neigh.contains("PERMANENT") && neigh.contains(&mac.to_string()),
            "{neigh}"
        );
        let fdb = fdb_all(&w);
        assert!(
            fdb.contains("10.252.0.2") && fdb.contains(&mac.to_string()),
            "{fdb}"
        );
        let saved = w.call(Command::RunningConfig).unwrap().to_string();
        assert!(
            !saved.contains("10.5.") && !saved.contains(&mac.to_string()),
            "derived state is not configuration: {saved}"
        );
        // The peer comes back with a new VtepMAC and address: replaced.
        let mut ops = vec![OverlayOp::FdbDel {
            bridge: "flannel".into(),
            mac,
            port: "flannel.1".into(),
            remote: ip("10.252.0.2"),
        }];
        ops.extend(peer(mac2, "10.252.0.9"));
        let v = w.call(Command::Overlay(ops)).unwrap();
        assert_eq!(v["errors"].as_array().map(Vec::len), Some(0), "{v}");
        let fdb = fdb_all(&w);
        assert!(
            fdb.contains("10.252.0.9") && !fdb.contains(&mac.to_string()),
            "{fdb}"
        );
        // Removed.
        let del = vec![
            OverlayOp::RouteDel {
                prefix: ip("10.5.2.0"),
                len: 24,
            },
            OverlayOp::NeighDel {
                bridge: "flannel".into(),
                ip: ip("10.5.2.0"),
            },
            OverlayOp::FdbDel {
                bridge: "flannel".into(),
                mac: mac2,
                port: "flannel.1".into(),
                remote: ip("10.252.0.9"),
            },
        ];
        w.call(Command::Overlay(del)).unwrap();
        let routes = w.call(Command::RouteShow).unwrap().to_string();
        assert!(!routes.contains("10.5.2.0/24"), "{routes}");
        let neigh = w.call(Command::NeighShow { from: 0 }).unwrap().to_string();
        assert!(!neigh.contains("PERMANENT"), "{neigh}");
        // Errors are reported per op; the rest still applies.
        let bad = vec![
            OverlayOp::Route {
                prefix: ip("10.7.0.0"),
                len: 24,
                via: ip("10.99.0.1"),
            },
            OverlayOp::Neigh {
                bridge: "nope".into(),
                ip: ip("10.5.3.0"),
                mac,
            },
            OverlayOp::RouteDel {
                prefix: ip("10.7.0.0"),
                len: 24,
            },
        ];
        let v = w.call(Command::Overlay(bad)).unwrap();
        assert_eq!(v["applied"], 1, "{v}");
        assert!(
            v["errors"][0]["error"].as_str().unwrap().contains("via"),
            "{v}"
        );
        w.shutdown();
    }
}
