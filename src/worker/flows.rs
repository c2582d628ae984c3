//! Flow-table requests: add-flow(s), del-flows, dump-flows, add-meter, trace.
//!
//! Flows arrive parsed (the control thread parses ovs-ofctl text); here they are validated
//! against the bridge (ports exist, actions this datapath executes) and applied all or nothing.

use serde_json::{Value, json};

use super::Worker;
use crate::flow::meter::parse_meter;
use crate::flow::{Action, Flow, FlowFilter, PacketKey, PortRef};
use crate::wire::MacAddr;

impl Worker {
    fn flow_bridge(&self, bridge: &str) -> Result<u16, String> {
        self.dp
            .bridge_id(bridge)
            .ok_or_else(|| format!("no bridge named '{bridge}'"))
    }

    /// Check flows for a bridge (ports exist, actions this datapath executes, table in range).
    /// Returns the bridge id.
    pub(crate) fn flows_check(&self, bridge: &str, flows: &[Flow]) -> Result<u16, String> {
        let b = self.flow_bridge(bridge)?;
        let ft = &self.dp.bridge(b).expect("checked").flows;
        for (i, f) in flows.iter().enumerate() {
            let at = if flows.len() > 1 {
                format!("flow {}: ", i + 1)
            } else {
                String::new()
            };
            for (what, p) in f.ports() {
                if ft.resolve(p).is_none() {
                    return Err(format!(
                        "{at}{what}: unknown port '{p}' in bridge '{bridge}'"
                    ));
                }
            }
            for a in &f.actions {
                match a {
                    Action::SetTunnel(_) | Action::SetField(crate::flow::SetField::TunId(_)) => {
                        return Err(format!(
                            "{at}set_tunnel: not supported (a vxlan port carries its own VNI)"
                        ));
                    }
                    Action::Meter(m) if !ft.meters.contains_key(m) => {
                        return Err(format!("{at}meter:{m}: no such meter (add-meter first)"));
                    }
                    _ => {}
                }
            }
            if f.table == 255 {
                return Err(format!("{at}table: 255 out of range (max 254)"));
            }
        }
        Ok(b)
    }

    /// Add checked flows to bridge `b` (one step of a possibly chunked add). Returns (added,
    /// replaced).
    pub(crate) fn flows_apply(
        &mut self,
        b: u16,
        flows: impl Iterator<Item = Flow>,
    ) -> Result<(u64, u64), String> {
        let now = self.dp.now_ms;
        let ft = &mut self.dp.bridge_mut(b).expect("checked").flows;
        let names = ft.names.clone();
        let resolve = |r: &PortRef| match r {
            PortRef::Name(n) => names.iter().find(|(s, _)| s == n).map(|(_, id)| *id),
            PortRef::Num(n) => names.iter().find(|(_, id)| id == n).map(|(_, id)| *id),
        };
        let (mut added, mut replaced) = (0, 0);
        for f in flows {
            let r = ft.cls.add(f, now, resolve).map_err(|e| e.to_string())?;
            if r.replaced {
                replaced += 1;
            } else {
                added += 1;
            }
        }
        ft.refresh();
        Ok((added, replaced))
    }

    /// Add flows to a bridge at once (requests of at most `FLOW_CHUNK` flows; larger ones are
    /// applied in chunks by the worker loop).
    pub(crate) fn flows_add(&mut self, bridge: &str, flows: Vec<Flow>) -> Result<Value, String> {
        let b = self.flows_check(bridge, &flows)?;
        let (added, replaced) = self.flows_apply(b, flows.into_iter())?;
        let ft = &self.dp.bridge(b).expect("checked").flows;
        Ok(json!({"added": added, "replaced": replaced, "flows": ft.cls.len()}))
    }

    /// Delete flows matching `filter` (all without one).
    pub(crate) fn flows_del(
        &mut self,
        bridge: &str,
        filter: Option<FlowFilter>,
        strict: bool,
    ) -> Result<Value, String> {
        let b = self.flow_bridge(bridge)?;
        let ft = &mut self.dp.bridge_mut(b).expect("checked").flows;
        let filter = filter.unwrap_or(FlowFilter {
            table: None,
            priority: None,
            cookie: None,
            m: Default::default(),
        });
        let names = ft.names.clone();
        let resolve = |r: &PortRef| match r {
            PortRef::Name(n) => names.iter().find(|(s, _)| s == n).map(|(_, id)| *id),
            PortRef::Num(n) => Some(*n),
        };
        let removed = ft
            .cls
            .del(&filter, strict, resolve)
            .map_err(|e| e.to_string())?;
        ft.refresh();
        Ok(json!({"deleted": removed.len(), "flows": ft.cls.len()}))
    }

    /// dump-flows lines.
    pub(crate) fn flows_dump(
        &self,
        bridge: &str,
        filter: Option<FlowFilter>,
    ) -> Result<Value, String> {
        let b = self.flow_bridge(bridge)?;
        let ft = &self.dp.bridge(b).expect("checked").flows;
        let resolve = |r: &PortRef| ft.resolve(r);
        let rows = ft
            .cls
            .dump(filter.as_ref(), resolve)
            .map_err(|e| e.to_string())?;
        let now = self.dp.now_ms;
        let lines: Vec<String> = rows.iter().map(|(_, f, s)| f.dump_line(s, now)).collect();
        Ok(json!({"bridge": bridge, "flows": lines}))
    }

    /// add-meter.
    pub(crate) fn meter_add(&mut self, bridge: &str, text: &str) -> Result<Value, String> {
        let b = self.flow_bridge(bridge)?;
        let (id, meter) = parse_meter(text)?;
        let ft = &mut self.dp.bridge_mut(b).expect("checked").flows;
        let replaced = ft.meters.insert(id, meter).is_some();
        Ok(json!({"meter": id, "replaced": replaced}))
    }

    /// Meters with their counters.
    pub(crate) fn meters_dump(&self, bridge: &str) -> Result<Value, String> {
        let b = self.flow_bridge(bridge)?;
        let ft = &self.dp.bridge(b).expect("checked").flows;
        let rows: Vec<Value> = ft
            .meters
            .iter()
            .map(|(id, m)| {
                json!({"meter": id, "rate_kbps": m.rate_kbps, "burst_kbits": m.burst_kbits,
                       "passed": m.passed, "dropped": m.dropped})
            })
            .collect();
        Ok(json!({"meters": rows}))
    }

    /// `trace`: which flows a described packet hits, their actions, and where NORMAL sends it.
    pub(crate) fn trace(&self, bridge: &str, m: &crate::flow::Match) -> Result<Value, String> {
        let b = self.flow_bridge(bridge)?;
        let br = self.dp.bridge(b).expect("checked");
        let ft = &br.flows;
        let resolve = |r: &PortRef| ft.resolve(r);
        let key = m.to_packet_key(&resolve).map_err(|e| e.to_string())?;
        let mut lines = Vec::new();
        lines.push(format!("bridge {bridge}: {}", describe_key(&key, self)));
        let mut table = 0u8;
        let mut normal = false;
        for _ in 0..crate::pipeline::flows::MAX_DEPTH {
            let Some(id) = ft.cls.lookup(table, &key) else {
                lines.push(format!("table {table}: no matching flow -> drop"));
                break;
            };
            let f = ft.cls.get(id).expect("looked up");
            lines.push(format!("table {table}: {f}"));
            let mut next = None;
            for a in &f.actions {
                match a {
                    Action::Normal => normal = true,
                    Action::Output(p) => lines.push(format!(
                        "    output to port {} ({p})",
                        ft.resolve(p).map_or("?".into(), |id| self.port_name(id))
                    )),
                    Action::Flood => lines.push("    flood to every other port".into()),
                    Action::InPort => lines.push("    back out of the ingress port".into()),
                    Action::GotoTable(t) | Action::Resubmit(t) => next = Some(*t),
                    other => lines.push(format!(
                        "    {}",
                        crate::flow::Actions(std::slice::from_ref(other))
                    )),
                }
            }
            if f.actions.is_empty() {
                lines.push("    drop".into());
            }
            match next {
                Some(t) if !normal => table = t,
                _ => break,
            }
        }
        if normal {
            lines.push(self.trace_normal(b, &key));
        }
        Ok(json!({"trace": lines}))
    }

    fn trace_normal(&self, b: u16, key: &PacketKey) -> String {
        let br = self.dp.bridge(b).expect("checked");
        let vlan = if key.vlan == crate::flow::NO_VLAN {
            0
        } else {
            key.vlan
        };
        if let Some(g) = br.gateway
            && g.mac.to_u64() == key.dl_dst
        {
            let dst = std::net::Ipv4Addr::from(key.nw_dst);
            return match self.dp.routes.lookup(dst.octets()) {
                Some(r) => format!(
                    "normal: to gateway {} -> route {r} -> bridge {}",
                    std::net::Ipv4Addr::from(g.ip),
                    self.dp
                        .bridge(r.bridge())
                        .map_or("?".into(), |x| x.name.clone())
                ),
                None => format!("normal: to gateway -> no route to {dst} (ICMP unreachable)"),
            };
        }
        if MacAddr::from_u64(key.dl_dst).is_multicast() {
            return format!(
                "normal: {} is a group address -> flood (VLAN {vlan})",
                MacAddr::from_u64(key.dl_dst)
            );
        }
        match br.fdb.lookup(vlan, key.dl_dst) {
            Some(p) if p == key.in_port => {
                "normal: destination learned on the ingress port -> drop".into()
            }
            Some(p) => format!(
                "normal: {} learned on port {} (VLAN {vlan}) -> output {}",
                MacAddr::from_u64(key.dl_dst),
                self.port_name(p),
                self.port_name(p)
            ),
            None => format!(
                "normal: {} unknown in VLAN {vlan} -> flood",
                MacAddr::from_u64(key.dl_dst)
            ),
        }
    }

    fn port_name(&self, id: u16) -> String {
        self.dp
            .port(id)
            .map_or(format!("#{id}"), |p| p.name.clone())
    }
}

fn describe_key(k: &PacketKey, w: &Worker) -> String {
    format!(
        "in_port={} dl_src={} dl_dst={} dl_type=0x{:04x} nw_src={} nw_dst={} nw_proto={} tp_src={} tp_dst={}",
        w.port_name(k.in_port),
        MacAddr::from_u64(k.dl_src),
        MacAddr::from_u64(k.dl_dst),
        k.dl_type,
        std::net::Ipv4Addr::from(k.nw_src),
        std::net::Ipv4Addr::from(k.nw_dst),
        k.nw_proto,
        k.tp_src,
        k.tp_dst
    )
}
