//! The worker's OpenFlow side: PORT_STATUS events (see `crate::events`) when a port is added,
//! deleted or its link state changes (made only while an OpenFlow connection listens), and a
//! bridge's OpenFlow settings (datapath id, controllers, fail mode: kept in its spec, so in the
//! running configuration) with the controllers' connection state and fail-open flag that the
//! OpenFlow manager reports.

use super::{LinkState, Worker};
use crate::events::{Event, PortStatus};
use crate::flow::EntryWrite;
use crate::openflow::PortInfo;

impl Worker {
    /// Tell the control plane that port `id` was added, deleted or changed (`reason`, OFPPR_*).
    /// For a delete, call it before the port is removed.
    pub(crate) fn port_status(&self, id: u16, reason: u8) {
        if !self.dp.events.listening() {
            return;
        }
        let Some(st) = self.dp.port(id) else { return };
        let linked = self
            .ports
            .get(id as usize)
            .and_then(|p| p.as_ref())
            .is_none_or(|p| p.down_reason().is_none());
        // A port set `down` (mod-port) reads as down to controllers too (OVS sets the netdev
        // down: its LINK_DOWN follows), though its netdev stays up.
        let up = self.life(id).is_none_or(|l| l.state == LinkState::Up)
            && st.config.bits() & crate::port_admin::PORT_DOWN == 0
            && linked
            && reason != crate::events::PORT_DELETE;
        let bridge = self
            .dp
            .bridge(st.bridge)
            .map(|b| b.name.clone())
            .unwrap_or_default();
        // Ports without a netdev have an address made from their names (no IO); the others'
        // is read off the worker (`openflow::port_mac`).
        let mac = match st.kind {
            crate::port::PortKind::Patch | crate::port::PortKind::Vxlan => {
                crate::openflow::made_mac(&bridge, &st.name)
            }
            _ => 0,
        };
        self.dp.events.send(Event::PortStatus(PortStatus {
            bridge,
            reason,
            port: PortInfo {
                ofport: st.ofport,
                name: st.name.clone(),
                up,
                mac,
                config: st.config.bits(),
            },
        }));
    }
}

/// The OpenFlow requests to the worker (`Command::Openflow`).
#[derive(Debug, Clone)]
pub enum OfCommand {
    /// Change a bridge's OpenFlow settings (None: unchanged), kept in its spec so they are
    /// part of the running configuration.
    Set {
        /// Bridge name.
        bridge: String,
        /// `datapath_id` (Some(None): back to the default).
        datapath_id: Option<Option<String>>,
        /// Controller targets.
        controller: Option<Vec<String>>,
        /// `fail_mode` (Some(None): back to the default, standalone).
        fail_mode: Option<Option<String>>,
    },
    /// The controllers of a bridge that are connected now, and whether the bridge fails open
    /// (standalone with none connected: flows are bypassed, it is a learning switch). Derived
    /// state from the OpenFlow manager, not configuration.
    ControllerState {
        /// Bridge name.
        bridge: String,
        /// Connected targets.
        connected: Vec<String>,
        /// Fail open.
        fail_open: bool,
    },
    /// `add-group` / `mod-group BRIDGE GROUP`: write a group.
    GroupAdd {
        /// Bridge name.
        bridge: String,
        /// The group in ovs-ofctl syntax.
        group: String,
        /// Add (the id must be free), modify (it must exist), or either.
        write: crate::flow::EntryWrite,
    },
    /// `del-groups BRIDGE [group_id=N]`: remove one group or all, and the flows that send
    /// packets to them (FLOW_REMOVED reason `group_delete` for those that asked).
    GroupDel {
        /// Bridge name.
        bridge: String,
        /// The group (None: all).
        id: Option<u32>,
    },
    /// `del-meters BRIDGE [meter=N]`: remove one meter or all, and the flows that use them (as
    /// OVS does; FLOW_REMOVED reason `delete` for those that asked).
    MeterDel {
        /// Bridge name.
        bridge: String,
        /// The meter (None: all).
        id: Option<u32>,
    },
    /// `dump-group-stats BRIDGE`: each group's counters (summed over the workers).
    GroupStats {
        /// Bridge name.
        bridge: String,
    },
    /// `dump-groups BRIDGE`.
    GroupDump {
        /// Bridge name.
        bridge: String,
    },
}

/// Flows a group or meter delete removed: how many, and those that asked for FLOW_REMOVED.
struct RemovedFlows {
    count: usize,
    asked: Vec<(crate::flow::Flow, crate::flow::FlowStats)>,
    reason: u8,
}

impl RemovedFlows {
    /// Send the FLOW_REMOVED events; returns how many flows were removed.
    fn report(self, events: &crate::events::EventSink, bridge: &str, now_ms: u64) -> usize {
        for removed in self.asked {
            super::flows::removed_event(events, bridge, now_ms, removed, self.reason);
        }
        self.count
    }
}

/// Remove the flows of `ft` that use (`uses`) one of the ids `gone` (groups or meters just
/// deleted), keeping those that asked for FLOW_REMOVED (`reason`) while a controller listens.
fn remove_flows_using(
    ft: &mut crate::pipeline::flows::FlowTable,
    gone: &[u32],
    uses: impl Fn(&crate::flow::Flow, u32) -> bool,
    (listening, reason): (bool, u8),
) -> RemovedFlows {
    let mut out = RemovedFlows {
        count: 0,
        asked: Vec::new(),
        reason,
    };
    if !gone.is_empty() {
        out.count = ft.cls.remove_where(
            |f| gone.iter().any(|&id| uses(f, id)),
            |f, st| {
                if listening && f.send_flow_rem {
                    out.asked.push((f, st));
                }
            },
        );
        ft.refresh();
    }
    ft.emc.clear();
    out
}

/// The groups of a bridge as `dump-groups` lines (id order).
fn group_lines(ft: &crate::pipeline::flows::FlowTable) -> Vec<String> {
    ft.groups.values().map(|g| g.to_string()).collect()
}

impl Worker {
    /// `OfCommand::GroupAdd`: write a group (its bucket ports bound to numbers).
    fn group_add(
        &mut self,
        bridge: &str,
        text: &str,
        write: EntryWrite,
    ) -> Result<serde_json::Value, String> {
        let b = self.bridge_id(bridge)?;
        let mut g = crate::flow::group::parse_group(text).map_err(|e| e.to_string())?;
        let now_ms = self.dp.now_ms;
        let ft = &mut self.dp.bridge_mut(b).expect("checked").flows;
        match (write, ft.groups.contains_key(&g.id)) {
            (EntryWrite::Add, true) => {
                return Err(format!(
                    "group_id: group {} already exists on bridge '{bridge}' (mod-group replaces it)",
                    g.id
                ));
            }
            (EntryWrite::Modify, false) => {
                return Err(format!("group_id: no group {} on bridge '{bridge}'", g.id));
            }
            _ => {}
        }
        for bucket in &mut g.buckets {
            let mut f = crate::flow::Flow {
                actions: std::mem::take(&mut bucket.actions),
                ..Default::default()
            };
            ft.bind_ports(&mut f)
                .map_err(|(what, p)| format!("group {}: {what}: unknown port '{p}'", g.id))?;
            bucket.actions = f.actions;
        }
        let st = crate::flow::group::GroupStats::of(&g, now_ms);
        ft.group_stats.insert(g.id, st);
        let replaced = ft.groups.insert(g.id, g).is_some();
        ft.emc.clear();
        Ok(serde_json::json!({"bridge": bridge, "replaced": replaced, "groups": ft.groups.len()}))
    }

    /// `OfCommand::GroupDel`: remove group `id` (None: all) and the flows that use it.
    fn group_del(&mut self, bridge: &str, id: Option<u32>) -> Result<serde_json::Value, String> {
        let b = self.bridge_id(bridge)?;
        let events = self.dp.events.clone();
        let now_ms = self.dp.now_ms;
        let ft = &mut self.dp.bridge_mut(b).expect("checked").flows;
        let gone: Vec<u32> = match id {
            Some(id) => ft.groups.remove(&id).map(|g| g.id).into_iter().collect(),
            None => std::mem::take(&mut ft.groups).into_keys().collect(),
        };
        for g in &gone {
            ft.group_stats.remove(g);
        }
        let uses = |f: &crate::flow::Flow, g: u32| f.uses_group(g);
        let why = (events.listening(), crate::events::REMOVED_GROUP_DELETE);
        let flows = remove_flows_using(ft, &gone, uses, why).report(&events, bridge, now_ms);
        Ok(serde_json::json!({"bridge": bridge, "deleted": gone.len(), "flows_deleted": flows}))
    }

    /// `OfCommand::MeterDel`: remove meter `id` (None: all) and the flows that use it.
    fn meter_del(&mut self, bridge: &str, id: Option<u32>) -> Result<serde_json::Value, String> {
        let b = self.bridge_id(bridge)?;
        let events = self.dp.events.clone();
        let now_ms = self.dp.now_ms;
        let ft = &mut self.dp.bridge_mut(b).expect("checked").flows;
        let gone: Vec<u32> = match id {
            Some(id) => ft.meters.remove(&id).map(|_| id).into_iter().collect(),
            None => std::mem::take(&mut ft.meters).into_keys().collect(),
        };
        let uses = |f: &crate::flow::Flow, m: u32| f.uses_meter(m);
        let why = (events.listening(), crate::events::REMOVED_DELETE);
        let flows = remove_flows_using(ft, &gone, uses, why).report(&events, bridge, now_ms);
        Ok(serde_json::json!({"bridge": bridge, "deleted": gone.len(), "flows_deleted": flows}))
    }

    /// Carry out an `OfCommand`.
    pub(crate) fn openflow(&mut self, c: OfCommand) -> Result<serde_json::Value, String> {
        // Groups change what flows do: frames in flight are re-looked-up (EMC cleared above).
        match c {
            OfCommand::Set {
                bridge,
                datapath_id,
                controller,
                fail_mode,
            } => self.set_openflow(&bridge, datapath_id, controller, fail_mode),
            OfCommand::ControllerState {
                bridge,
                connected,
                fail_open,
            } => self.controller_state(&bridge, connected, fail_open),
            OfCommand::GroupAdd {
                bridge,
                group,
                write,
            } => self.group_add(&bridge, &group, write),
            OfCommand::GroupDel { bridge, id } => self.group_del(&bridge, id),
            OfCommand::MeterDel { bridge, id } => self.meter_del(&bridge, id),
            OfCommand::GroupStats { bridge } => {
                let b = self.bridge_id(&bridge)?;
                let now_ms = self.dp.now_ms;
                let ft = &self.dp.bridge(b).expect("checked").flows;
                let users = ft.flows_using(|a| match a {
                    crate::flow::Action::Group(g) => Some(*g),
                    _ => None,
                });
                let rows: Vec<serde_json::Value> = ft
                    .group_stats
                    .iter()
                    .map(|(id, st)| {
                        let refs = users.get(id).copied().unwrap_or(0);
                        let buckets: Vec<[u64; 2]> =
                            st.buckets.iter().map(|&(p, b)| [p, b]).collect();
                        serde_json::json!({"group_id": id, "ref_count": refs,
                            "duration_ms": now_ms.saturating_sub(st.created_ms),
                            "packet_count": st.packets, "byte_count": st.bytes,
                            "buckets": buckets})
                    })
                    .collect();
                Ok(serde_json::json!({"bridge": bridge, "stats": rows}))
            }
            OfCommand::GroupDump { bridge } => {
                let b = self.bridge_id(&bridge)?;
                let ft = &self.dp.bridge(b).expect("checked").flows;
                Ok(serde_json::json!({"bridge": bridge, "groups": group_lines(ft)}))
            }
        }
    }

    /// `OfCommand::Set`: change the bridge's spec (the running configuration keeps it).
    pub(crate) fn set_openflow(
        &mut self,
        bridge: &str,
        datapath_id: Option<Option<String>>,
        controller: Option<Vec<String>>,
        fail_mode: Option<Option<String>>,
    ) -> Result<serde_json::Value, String> {
        let b = self.bridge_id(bridge)?;
        let mut next = self
            .specs
            .bridges
            .get(bridge)
            .cloned()
            .unwrap_or_else(|| crate::config::BridgeSpec::new(bridge));
        if let Some(d) = datapath_id {
            next.datapath_id = d;
        }
        if let Some(c) = controller {
            next.controller = c;
        }
        if let Some(f) = fail_mode {
            next.fail_mode = f;
        }
        crate::openflow::control::validate_bridge(&next)?;
        let next_dpid = next.datapath_id.clone();
        self.dpid_taken(bridge, next_dpid.as_deref())?;
        let spec = self
            .specs
            .bridges
            .entry(bridge.to_string())
            .or_insert_with(|| crate::config::BridgeSpec::new(bridge));
        *spec = next;
        if spec.controller.is_empty()
            && let Some(br) = self.dp.bridge_mut(b)
        {
            br.fail_open = false;
        }
        let mut v = serde_json::json!({"bridge": bridge});
        if let Some(br) = self.dp.bridge(b) {
            self.openflow_json(br, &mut v);
        }
        Ok(v)
    }

    /// `OfCommand::ControllerState`: which controllers are connected, and fail-open.
    pub(crate) fn controller_state(
        &mut self,
        bridge: &str,
        connected: Vec<String>,
        fail_open: bool,
    ) -> Result<serde_json::Value, String> {
        let b = self.bridge_id(bridge)?;
        let br = self.dp.bridge_mut(b).expect("checked");
        if br.fail_open != fail_open {
            let how = if fail_open {
                "no controller connected: standalone, working as a learning switch"
            } else {
                "back under its flows"
            };
            tracing::info!("bridge {bridge}: {how}");
            br.fail_open = fail_open;
            br.flows.emc.clear();
        }
        self.specs.connected.insert(bridge.to_string(), connected);
        Ok(serde_json::json!({"bridge": bridge, "fail_open": fail_open}))
    }

    /// The OpenFlow fields of a bridge's `show` entry.
    pub(crate) fn openflow_json(&self, br: &crate::datapath::Bridge, v: &mut serde_json::Value) {
        let spec = self.specs.bridges.get(&br.name);
        let dpid = crate::openflow::control::bridge_dpid(&br.name, spec);
        v["datapath_id"] = serde_json::json!(format!("{dpid:016x}"));
        v["controller"] = serde_json::json!(spec.map_or(&[][..], |s| &s.controller[..]));
        v["fail_mode"] = serde_json::json!(spec.and_then(|s| s.fail_mode.clone()));
        v["controller_connected"] = serde_json::json!(
            self.specs
                .connected
                .get(&br.name)
                .cloned()
                .unwrap_or_default()
        );
        v["fail_open"] = serde_json::json!(br.fail_open);
    }
}
