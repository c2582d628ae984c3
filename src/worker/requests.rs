//! Requests the control plane sends to the worker, and how the worker applies them.
//!
//! Every request is validated before it changes anything; an error leaves the datapath as it
//! was. Answers are JSON values (the control layer renders them as text for people).

use serde_json::{Value, json};

use super::Worker;
use super::life::{LinkState, PortLife};
use crate::config::{BridgeSpec, PortSpec};
use crate::datapath::PortState;
use crate::port::{Port, PortKind};

/// Table slots one `FdbShow` page covers (bounded work for the worker per request).
pub const FDB_PAGE_SLOTS: usize = 4096;
/// Neighbours one `NeighShow` page covers (each formatted on the worker: well under 1 ms a page).
const NEIGH_PAGE: usize = 1024;
/// Connection slots one `CtShow` page covers (each formatted on the worker: ~0.5 µs).
pub const CT_PAGE_SLOTS: usize = 1024;

/// Longest a port stays held (`PortSpec::hold`) when nobody releases it: a store that failed
/// halfway never strands a port.
pub const HOLD_MS: u64 = 5000;

/// What the control plane can ask of the worker.
pub enum Command {
    /// Create a bridge (and its ports, if the spec lists any).
    AddBridge(BridgeSpec),
    /// Remove a bridge and all its ports.
    DelBridge(String),
    /// Open a port and attach it to a bridge.
    AddPort {
        /// Bridge name.
        bridge: String,
        /// The port.
        spec: PortSpec,
    },
    /// Attach an already built port (in-memory ports in tests).
    AttachPort {
        /// Bridge name.
        bridge: String,
        /// Port name.
        name: String,
        /// Builds the port given its id.
        build: Box<dyn FnOnce(u16) -> Box<dyn Port> + Send>,
    },
    /// Detach a port; its caller releases it and sends it back with `Reclaim` (see
    /// `worker::open`).
    DelPort(String),
    /// Check an `add-port` before its device is opened off the worker; for AF_XDP, send a
    /// duplicate of a socket that owns the UMEM on `umem` (see `worker::open`).
    PortCheck {
        /// Bridge name.
        bridge: String,
        /// The port.
        spec: PortSpec,
        /// Where the UMEM socket goes.
        umem: crossbeam_channel::Sender<std::os::fd::OwnedFd>,
    },
    /// Attach a port whose device was opened off the worker (see `worker::open`).
    AddOpened {
        /// Bridge name.
        bridge: String,
        /// The port.
        spec: PortSpec,
        /// Its opened device.
        port: Box<dyn Port>,
    },
    /// Take back the frames of ports released off the worker and free their ids.
    Reclaim(Vec<super::open::Retired>),
    /// The port thread opened port `id`'s device again (lifecycle attempt `seq`).
    Reopened {
        /// The port.
        id: u16,
        /// The attempt.
        seq: u64,
        /// The opened device, or why it could not be opened.
        port: Result<Box<dyn Port>, String>,
    },
    /// Describe bridges and ports.
    Show,
    /// One page of a bridge's FDB: the entries of [`FDB_PAGE_SLOTS`] table slots from slot
    /// `from` (unsorted), and `next`, where the following page starts (null: done).
    FdbShow {
        /// Bridge name.
        bridge: String,
        /// First slot.
        from: usize,
    },
    /// Add a static FDB entry (with the remote VTEP for a tunnel port).
    FdbAdd {
        /// Bridge name.
        bridge: String,
        /// MAC address.
        mac: crate::wire::MacAddr,
        /// Port name.
        port: String,
        /// VLAN.
        vlan: u16,
        /// Remote VTEP (tunnel ports).
        remote: Option<[u8; 4]>,
    },
    /// Flush a bridge's FDB (dynamic entries), or one port's entries.
    FdbFlush {
        /// Bridge name.
        bridge: String,
        /// Only this port's entries.
        port: Option<String>,
    },
    /// `fdb-del BRIDGE MAC [vlan=N]`: remove one entry, static or learned.
    FdbDel {
        /// Bridge name.
        bridge: String,
        /// The address.
        mac: crate::wire::MacAddr,
        /// Its VLAN.
        vlan: u16,
    },
    /// Set or remove (None) a bridge's gateway.
    SetGateway {
        /// Bridge name.
        bridge: String,
        /// The new gateway.
        gateway: Option<crate::datapath::Gateway>,
    },
    /// Change a bridge's isolation and inter-container communication (None: unchanged).
    SetBridgeOptions {
        /// Bridge name.
        bridge: String,
        /// `isolated=on|off`.
        isolated: Option<bool>,
        /// `icc=on|off`.
        icc: Option<bool>,
        /// `rp_filter=strict|loose|off`.
        rp_filter: Option<crate::route::RpFilter>,
        /// `aging=SECONDS`.
        aging: Option<u32>,
        /// `fdb_capacity=N` (the FDB is rebuilt with its entries).
        fdb_capacity: Option<usize>,
    },
    /// Pin a port's rx queues to worker cores (`set-port PORT rxq_affinity=`; None: round-robin).
    SetPortRxq {
        /// Port name.
        port: String,
        /// `QUEUE:CORE[,QUEUE:CORE...]`.
        affinity: Option<String>,
    },
    /// Change a port's VLAN configuration or MAC limit in place (`set-port PORT vlan=..`).
    SetPortOptions {
        /// Port name.
        port: String,
        /// The fields given.
        options: super::PortOptions,
    },
    /// Change a port's OpenFlow configuration bits (`mod-port`, OFPT_PORT_MOD): those of
    /// `mask` taken from `bits` (see `port_admin`).
    ModPort {
        /// Bridge name.
        bridge: String,
        /// Port name, or its OpenFlow number.
        port: String,
        /// OFPPC bits.
        bits: u32,
        /// Which bits change.
        mask: u32,
    },
    /// OpenFlow settings and controller state (see `worker::events`).
    Openflow(super::events::OfCommand),
    /// Add a static route.
    RouteAdd(crate::config::RouteSpec),
    /// Remove a static route (`PREFIX`).
    RouteDel(String),
    /// The routing table.
    RouteShow,
    /// The neighbour (ARP) table.
    NeighShow {
        /// Where the page starts (0 first; then the previous answer's `next`).
        from: u64,
    },
    /// Forget the neighbours of one bridge (by name), or of all.
    NeighFlush(Option<String>),
    /// Add a NAT rule.
    NatAdd(crate::config::NatSpec),
    /// Remove NAT rule #N.
    NatDel(usize),
    /// Remove the NAT rule whose `nat-show` text is this (atomic: no index can move between a
    /// client's `nat-show` and its delete).
    NatDelRule(String),
    /// The NAT rules.
    NatShow,
    /// Set the host port range `dnat ... port=0` picks from.
    SetNatPorts(std::ops::RangeInclusive<u16>),
    /// One page of tracked connections: the NAT table's slots from `from` (the flow tables'
    /// connections come with the first page), and `next` (null: done).
    CtShow {
        /// First slot.
        from: usize,
    },
    /// Add flows to a bridge (all or nothing).
    FlowAdd {
        /// Bridge name.
        bridge: String,
        /// Parsed flows.
        flows: Vec<crate::flow::Flow>,
    },
    /// Release the held ports of a bridge (see `PortSpec::hold`). Answers `released`.
    ReleasePorts(String),
    /// Replace a bridge's whole flow table in one step (a reload, a pending port's retry):
    /// every flow is checked first; those that pass are built into a new table beside the
    /// running one (over several loop passes, `FLOW_CHUNK` flows each, when there are more,
    /// with other requests waiting meanwhile) which then replaces it at once, so no packet
    /// meets an empty or half-built table. Answers `added` and `refused` ([index, reason]
    /// pairs for the flows left out).
    FlowReplace {
        /// Bridge name.
        bridge: String,
        /// Parsed flows.
        flows: Vec<crate::flow::Flow>,
    },
    /// The flows as the running configuration writes them (`add-flow` text with port names
    /// bound to numbers), for comparing a `--config` file's flows with the running ones. Reads
    /// only.
    FlowsCanonical {
        /// Bridge name.
        bridge: String,
        /// Parsed flows.
        flows: Vec<crate::flow::Flow>,
    },
    /// Delete flows.
    FlowDel {
        /// Bridge name.
        bridge: String,
        /// Which (None: all).
        filter: Option<crate::flow::FlowFilter>,
        /// Exact match and priority only.
        strict: bool,
    },
    /// dump-flows.
    FlowDump {
        /// Bridge name.
        bridge: String,
        /// Which (None: all).
        filter: Option<crate::flow::FlowFilter>,
        /// Show ports by name (`--names`) instead of by number.
        names: bool,
    },
    /// add-meter.
    MeterAdd {
        /// Bridge name.
        bridge: String,
        /// `meter=N,kbps,band=type=drop,rate=R`.
        spec: String,
        /// add-meter, mod-meter, or either (a configuration restore).
        write: crate::flow::EntryWrite,
    },
    /// dump-meters.
    MeterDump(String),
    /// trace.
    Trace {
        /// Bridge name.
        bridge: String,
        /// The packet, as a match.
        packet: crate::flow::Match,
    },
    /// Counters.
    Stats,
    /// Per-node runtime counters (`show-runtime`); `clear` zeroes them after reading.
    Runtime {
        /// Zero the counters after reading them.
        clear: bool,
    },
    /// Send a frame out of ports of a bridge (OpenFlow PACKET_OUT with output actions).
    PacketOut {
        /// Bridge name.
        bridge: String,
        /// OpenFlow port numbers to send it to.
        outputs: Vec<u16>,
        /// The frame.
        frame: Vec<u8>,
    },
    /// The running configuration, as a [`crate::config::Config`] serialised to JSON.
    RunningConfig,
    /// Captures, mirrors and counts for metrics (see `observe`).
    Observe(crate::observe::ObserveCmd),
    /// Program derived state for a control-plane adapter (the etcd overlay).
    Overlay(Vec<super::OverlayOp>),
    /// Whether the derived state is all still there (`{"intact": bool}`; see
    /// `Worker::overlay_check`).
    OverlayIntact,
    /// DNS names and the DNS service's channels.
    Dns(super::DnsCmd),
    /// Close every port and stop.
    Shutdown,
}

impl Worker {
    /// Apply one command. `now` is the worker's clock in seconds.
    pub(crate) fn apply(&mut self, cmd: Command, now: u64) -> Result<Value, String> {
        match cmd {
            Command::AddBridge(spec) => self.add_bridge(spec),
            Command::DelBridge(name) => self.del_bridge(&name),
            Command::AddPort { bridge, spec } => self.add_port(&bridge, &spec),
            Command::PortCheck { bridge, spec, umem } => self.port_check(&bridge, &spec, umem),
            Command::AddOpened { bridge, spec, port } => {
                let mut opened = Some(port);
                let r = self.add_port_with(&bridge, &spec, &mut opened);
                if let Some(p) = opened {
                    self.retired.push((None, p));
                }
                r
            }
            Command::Reclaim(ports) => Ok(self.reclaim(ports)),
            Command::Reopened { id, seq, port } => {
                self.reopened(id, seq, port);
                Ok(Value::Null)
            }
            Command::AttachPort {
                bridge,
                name,
                build,
            } => {
                let b = self.bridge_id(&bridge)?;
                self.check_port_name(&name)?;
                let id = self.free_port_id()?;
                let port = build(id);
                self.attach(
                    id,
                    b,
                    (name.clone(), None),
                    crate::datapath::VlanMode::default_trunk(),
                    port,
                    0,
                )?;
                let ofport = self.dp.port(id).map_or(0, |p| p.ofport);
                Ok(json!({"port": name, "id": id, "ofport": ofport}))
            }
            Command::DelPort(name) => {
                let id = self
                    .dp
                    .port_id(&name)
                    .ok_or_else(|| format!("no port named '{name}'"))?;
                self.remove_port(id)?;
                Ok(json!({"deleted": name}))
            }
            Command::Show => Ok(self.show()),
            Command::FdbShow { bridge, from } => {
                let b = self.bridge_id(&bridge)?;
                let (rows, next) = self.dp.fdb_rows_page(b, now as u32, from, FDB_PAGE_SLOTS);
                Ok(json!({"bridge": bridge, "entries": rows, "next": next}))
            }
            Command::FdbFlush { bridge, port } => {
                let b = self.bridge_id(&bridge)?;
                let pid = match &port {
                    Some(p) => Some(
                        self.dp
                            .port_id(p)
                            .filter(|id| self.dp.port(*id).is_some_and(|s| s.bridge == b))
                            .ok_or_else(|| format!("no port named '{p}' in bridge '{bridge}'"))?,
                    ),
                    None => None,
                };
                let fdb = &mut self.dp.bridge_mut(b).expect("checked").fdb;
                let n = fdb.flush_learned(pid);
                Ok(json!({"bridge": bridge, "flushed": n}))
            }
            Command::FdbDel { bridge, mac, vlan } => {
                let b = self.bridge_id(&bridge)?;
                let key = mac.to_u64();
                let fdb = &mut self.dp.bridge_mut(b).expect("checked").fdb;
                // Learned entries are each worker's own: one that never saw it has nothing
                // to remove (the control plane checked the bridge's table as a whole).
                let Some(pid) = fdb.lookup(vlan, key) else {
                    return Ok(json!({"bridge": bridge, "removed": false}));
                };
                fdb.remove(vlan, key);
                self.specs.derived.fdb.remove(&(b, key));
                if let Some(t) = self.dp.port_mut(pid).and_then(|s| s.tunnel.as_mut()) {
                    t.forget(vlan, key);
                }
                let port = self
                    .dp
                    .port(pid)
                    .map(|p| p.name.clone())
                    .unwrap_or_default();
                Ok(json!({"bridge": bridge, "removed": true, "port": port}))
            }
            Command::SetGateway { bridge, gateway } => {
                let b = self.bridge_id(&bridge)?;
                if let Some(why) = self.dp.gateway_change_refused(b, gateway) {
                    return Err(why);
                }
                let old = self
                    .dp
                    .bridge(b)
                    .and_then(|b| b.gateway)
                    .map(|g| g.subnet());
                self.dp.set_gateway(b, gateway)?;
                self.announce_gateway(b);
                let mut v = json!({"bridge": bridge, "gateway": gateway.map(gateway_text)});
                if let Some(old) = old.filter(|o| Some(*o) != gateway.map(|g| g.subnet())) {
                    v["stale_nat"] = self.nat_naming(old);
                }
                Ok(v)
            }
            Command::SetBridgeOptions {
                bridge,
                isolated,
                icc,
                rp_filter,
                aging,
                fdb_capacity,
            } => {
                let b = self.bridge_id(&bridge)?;
                // As the configuration checks it (a database with 0 would not load again).
                if aging == Some(0) {
                    return Err("aging: must be at least 1 second".into());
                }
                if let Some(c) = fdb_capacity {
                    self.dp.set_fdb_capacity(b, c, now as u32)?;
                }
                let br = self.dp.bridge_mut(b).expect("checked");
                br.isolated = isolated.unwrap_or(br.isolated);
                br.icc = icc.unwrap_or(br.icc);
                br.rp_filter = rp_filter.unwrap_or(br.rp_filter);
                br.aging = aging.unwrap_or(br.aging);
                Ok(
                    json!({"bridge": bridge, "isolated": br.isolated, "icc": br.icc,
                    "rp_filter": br.rp_filter.name(), "aging": br.aging,
                    "fdb_capacity": br.fdb.capacity()}),
                )
            }
            Command::SetPortRxq { port, affinity } => self.set_port_rxq(&port, affinity),
            Command::SetPortOptions { port, options } => self.set_port_options(&port, &options),
            Command::ModPort {
                bridge,
                port,
                bits,
                mask,
            } => self.mod_port(&bridge, &port, bits, mask),
            Command::Openflow(c) => self.openflow(c),
            Command::RouteAdd(spec) => self.route_add(&spec),
            Command::RouteDel(prefix) => {
                let (p, l) = crate::route::parse_prefix(&prefix)?;
                match self.dp.routes.get(p, l) {
                    Some(r) if matches!(r.kind, crate::route::RouteKind::Connected { .. }) => {
                        return Err(format!(
                            "{prefix} is a connected route; change the bridge's gateway instead"
                        ));
                    }
                    None => return Err(format!("no route {prefix}")),
                    _ => {}
                }
                self.dp.routes.del(p, l).map_err(|e| e.to_string())?;
                Ok(json!({"deleted": prefix}))
            }
            Command::RouteShow => Ok(self.route_rows()),
            Command::Overlay(ops) => Ok(self.overlay_apply(ops, now)),
            Command::OverlayIntact => Ok(json!({"intact": self.overlay_check()})),
            Command::NeighShow { from } => {
                let (rows, next) = self.dp.neigh.rows_page(from, NEIGH_PAGE, now as u32);
                let rows: Vec<Value> = rows
                    .into_iter()
                    .map(|r| {
                        json!({
                            "bridge": self.dp.bridge(r.bridge).map(|b| b.name.clone()),
                            "ip": r.ip.to_string(),
                            "mac": r.mac,
                            "state": r.state,
                            "age": r.age,
                            "queued": r.queued,
                        })
                    })
                    .collect();
                Ok(json!({"neighbours": rows, "next": next}))
            }
            Command::NeighFlush(bridge) => {
                let ids: Vec<u16> = match bridge {
                    Some(name) => vec![self.bridge_id(&name)?],
                    None => self.dp.bridges().map(|(id, _)| id).collect(),
                };
                let flushed: usize = ids.iter().map(|b| self.dp.neigh.flush_learned(*b)).sum();
                Ok(json!({"flushed": flushed}))
            }
            Command::NatAdd(spec) => self.nat_add(&spec),
            Command::Dns(c) => self.dns_apply(c),
            Command::NatDel(i) => {
                let rule = self.dp.nat.del(i)?;
                self.nat_deleted(&rule);
                Ok(json!({"deleted": i}))
            }
            Command::NatDelRule(text) => {
                let names = |b: u16| {
                    self.dp
                        .bridge(b)
                        .map(|b| b.name.clone())
                        .unwrap_or_default()
                };
                let want = text.split_whitespace().collect::<Vec<_>>().join(" ");
                let i = self
                    .dp
                    .nat
                    .rows(names)
                    .into_iter()
                    .find(|r| r.rule == want)
                    .map(|r| r.index)
                    .ok_or_else(|| format!("RULE: no NAT rule '{want}' (see nat-show)"))?;
                let rule = self.dp.nat.del(i)?;
                self.nat_deleted(&rule);
                Ok(json!({"deleted": i, "rule": want}))
            }
            Command::NatShow => {
                let rows = self.dp.nat.rows(|b| {
                    self.dp
                        .bridge(b)
                        .map(|b| b.name.clone())
                        .unwrap_or_default()
                });
                let range = crate::nat::port_range_text(&self.dp.nat.dnat_ports());
                Ok(json!({"rules": rows, "port_range": range}))
            }
            Command::SetNatPorts(r) => {
                self.dp.nat.set_dnat_ports(r.clone());
                Ok(json!({"port_range": crate::nat::port_range_text(&r)}))
            }
            Command::CtShow { from } => {
                let (page, next) = self.dp.nat.ct.page(now as u32, from, CT_PAGE_SLOTS);
                let mut conns: Vec<String> = page.iter().map(|c| c.to_string()).collect();
                for (_, b) in self.dp.bridges().filter(|_| from == 0) {
                    conns.extend(
                        b.flows
                            .ct
                            .rows(now as u32)
                            .into_iter()
                            .map(|r| format!("bridge={} {r}", b.name)),
                    );
                }
                let count = conns.len();
                Ok(json!({"connections": conns, "count": count, "next": next,
                    "limit": self.dp.nat.ct.limit(), "per_source": self.dp.nat.ct.per_source()}))
            }
            Command::FdbAdd {
                bridge,
                mac,
                port,
                vlan,
                remote,
            } => {
                let b = self.bridge_id(&bridge)?;
                let pid = self
                    .dp
                    .port_id(&port)
                    .filter(|id| self.dp.port(*id).is_some_and(|s| s.bridge == b))
                    .ok_or_else(|| format!("no port named '{port}' in bridge '{bridge}'"))?;
                if mac.is_multicast() || mac.is_zero() {
                    return Err(format!("MAC: {mac} must be a unicast address"));
                }
                let vlan = match self.dp.port(pid) {
                    Some(p) => p
                        .vlan
                        .fdb_vlan(vlan)
                        .map_err(|e| format!("{e} ('{port}')"))?,
                    None => vlan,
                };
                let is_tunnel = self.dp.port(pid).is_some_and(|s| s.tunnel.is_some());
                match (remote, is_tunnel) {
                    (Some(_), false) => return Err("remote_ip: only for vxlan ports".into()),
                    (None, true) => {
                        return Err("remote_ip: needed for an entry on a vxlan port".into());
                    }
                    _ => {}
                }
                let fdb = &mut self.dp.bridge_mut(b).expect("checked").fdb;
                fdb.add_static(vlan, mac.to_u64(), pid, now as u32)
                    .map_err(|_| format!("bridge '{bridge}': FDB full"))?;
                if let (Some(r), Some(t)) = (
                    remote,
                    self.dp.port_mut(pid).and_then(|s| s.tunnel.as_mut()),
                ) {
                    t.add_static(vlan, mac.to_u64(), r);
                }
                Ok(json!({"bridge": bridge, "mac": mac.to_string(), "port": port}))
            }
            Command::FlowAdd { bridge, flows } => self.flows_add(&bridge, flows),
            Command::FlowReplace { bridge, flows } => self.flows_replace(&bridge, flows),
            Command::ReleasePorts(bridge) => {
                let b = self.flow_bridge(&bridge)?;
                let mut released = 0;
                for st in self.dp.ports.iter_mut().flatten() {
                    if st.bridge == b && st.held_until_ms != 0 {
                        st.held_until_ms = 0;
                        released += 1;
                    }
                }
                if released > 0 {
                    // The gateway's announcement to the newcomers was held too.
                    self.announce_gateway(b);
                }
                Ok(json!({"released": released}))
            }
            Command::FlowsCanonical { bridge, mut flows } => {
                self.flows_check(&bridge, &mut flows)?;
                Ok(json!(
                    flows.iter().map(|f| f.to_string()).collect::<Vec<_>>()
                ))
            }
            Command::FlowDel {
                bridge,
                filter,
                strict,
            } => self.flows_del(&bridge, filter, strict),
            Command::FlowDump {
                bridge,
                filter,
                names,
            } => self.flows_dump(&bridge, filter, names),
            Command::MeterAdd {
                bridge,
                spec,
                write,
            } => self.meter_add(&bridge, &spec, write),
            Command::MeterDump(bridge) => self.meters_dump(&bridge),
            Command::Trace { bridge, packet } => self.trace(&bridge, &packet, now),
            Command::Stats => Ok(self.stats_json()),
            Command::Runtime { clear } => Ok(self.runtime_json(clear)),
            Command::PacketOut {
                bridge,
                outputs,
                frame,
            } => self.packet_out(&bridge, &outputs, &frame),
            Command::RunningConfig => {
                serde_json::to_value(self.running_config()).map_err(|e| e.to_string())
            }
            Command::Observe(c) => self.observe_apply(c),
            Command::Shutdown => {
                self.stop = true;
                Ok(json!({"stopped": true}))
            }
        }
    }

    fn route_add(&mut self, spec: &crate::config::RouteSpec) -> Result<Value, String> {
        let (prefix, len, via) = spec.parsed()?;
        // The next hop must sit on a bridge's connected subnet: that bridge is the egress.
        let bridge = match self.dp.routes.lookup(via.octets()) {
            Some(r) if matches!(r.kind, crate::route::RouteKind::Connected { .. }) => r.bridge(),
            _ => {
                return Err(format!(
                    "via: {via} is not on any bridge's subnet (set a gateway= on the bridge first)"
                ));
            }
        };
        if let Some(g) = self.dp.bridge(bridge).and_then(|b| b.gateway) {
            if g.ip == via.octets() {
                return Err(format!("via: {via} is the bridge's own gateway address"));
            }
            // Nor the subnet's network or broadcast address (Linux: "Nexthop has invalid
            // gateway"; found trying uvs as a new user).
            if g.is_subnet_edge(via) {
                let (net, len) = g.subnet();
                return Err(format!(
                    "via: {via} is the network or broadcast address of {net}/{len}"
                ));
            }
        }
        let route = crate::route::Route {
            prefix,
            len,
            kind: crate::route::RouteKind::Via {
                gateway: via,
                bridge,
            },
        };
        self.dp.routes.add(route).map_err(|e| match e {
            crate::route::RouteError::Duplicate {
                prefix,
                len,
                existing,
            } => format!(
                "route {prefix}/{len} already exists ({}); delete it first",
                self.dp.route_text(&existing)
            ),
            e => e.to_string(),
        })?;
        Ok(json!({"route": format!("{prefix}/{len}"), "via": via.to_string()}))
    }

    fn route_rows(&self) -> Value {
        let rows: Vec<Value> = self
            .dp
            .routes
            .iter()
            .map(|r| {
                let bridge = self.dp.bridge(r.bridge()).map(|b| b.name.clone());
                match r.kind {
                    crate::route::RouteKind::Connected { .. } => json!({
                        "prefix": format!("{}/{}", r.prefix, r.len),
                        "type": "connected",
                        "bridge": bridge,
                    }),
                    crate::route::RouteKind::Via { gateway, .. } => json!({
                        "prefix": format!("{}/{}", r.prefix, r.len),
                        "type": "static",
                        "via": gateway.to_string(),
                        "bridge": bridge,
                    }),
                }
            })
            .collect();
        json!({"routes": rows})
    }

    pub(crate) fn bridge_id(&self, name: &str) -> Result<u16, String> {
        self.dp
            .bridge_id(name)
            .ok_or_else(|| format!("no bridge named '{name}'"))
    }

    fn check_port_name(&self, name: &str) -> Result<(), String> {
        if let Some(id) = self.dp.port_id(name) {
            return Err(self.dp.port_exists(id));
        }
        Ok(())
    }

    /// Why bridge `bridge` may not take OpenFlow datapath id `dpid`: another bridge has it (a
    /// controller could not tell them apart; found trying uvs as a new user).
    pub(crate) fn dpid_taken(&self, bridge: &str, dpid: Option<&str>) -> Result<(), String> {
        let Some(d) = dpid else { return Ok(()) };
        match self
            .specs
            .bridges
            .iter()
            .find(|(n, s)| n.as_str() != bridge && s.datapath_id.as_deref() == Some(d))
        {
            Some((n, _)) => Err(format!("datapath_id: {d} is bridge '{n}''s already")),
            None => Ok(()),
        }
    }

    fn add_bridge(&mut self, spec: BridgeSpec) -> Result<Value, String> {
        spec.validate()?;
        self.dpid_taken(&spec.name, spec.datapath_id.as_deref())?;
        for p in &spec.port {
            self.check_port_name(&p.name)?;
        }
        let gateway = spec.gateway()?;
        let id = self.dp.add_bridge(&spec.name, &spec.options())?;
        if let Some(b) = self.dp.bridge_mut(id) {
            b.isolated = spec.isolated;
            b.icc = spec.icc;
            b.rp_filter = spec.rp_filter;
        }
        if let Err(e) = self.dp.set_gateway(id, gateway) {
            let _ = self.dp.del_bridge(id);
            return Err(e);
        }
        self.specs.add_bridge(&spec);
        for p in &spec.port {
            if let Err(e) = self.add_port(&spec.name, p) {
                // All or nothing: undo the ports added so far and the bridge.
                let _ = self.del_bridge(&spec.name);
                return Err(e);
            }
        }
        Ok(json!({"bridge": spec.name, "id": id}))
    }

    fn del_bridge(&mut self, name: &str) -> Result<Value, String> {
        let b = self.bridge_id(name)?;
        // Refused before any of its ports is removed (nothing half done).
        if let Some(why) = self.dp.del_bridge_refused(b) {
            return Err(why);
        }
        let ports = self
            .dp
            .bridge(b)
            .map(|b| b.ports.clone())
            .unwrap_or_default();
        for p in ports {
            self.remove_port(p)?;
        }
        let subnet = self
            .dp
            .bridge(b)
            .and_then(|b| b.gateway)
            .map(|g| g.subnet());
        self.dp.del_bridge(b)?;
        self.specs.bridges.remove(name);
        self.dns_forget_bridge(name);
        let mut v = json!({"deleted": name});
        if let Some(subnet) = subnet {
            v["stale_nat"] = self.nat_naming(subnet);
        }
        Ok(v)
    }

    /// `nat-show`'s rows ("#N RULE") of the rules that still name an address of `subnet` (a
    /// deleted bridge's or a moved gateway's): told to the user, who decides (they may serve
    /// a network that comes back).
    pub(super) fn nat_naming(&self, (net, len): (std::net::Ipv4Addr, u8)) -> Value {
        let hit = self.dp.nat.naming_subnet(u32::from(net), len);
        let rows = self.dp.nat.rows(|b| {
            self.dp
                .bridge(b)
                .map(|b| b.name.clone())
                .unwrap_or_default()
        });
        rows.iter()
            .filter(|r| hit.contains(&r.index))
            .map(|r| json!(format!("#{} {}", r.index, r.rule)))
            .collect()
    }

    fn add_port(&mut self, bridge: &str, spec: &PortSpec) -> Result<Value, String> {
        self.add_port_with(bridge, spec, &mut None)
    }

    /// `add-port`, with the port's device already `opened` off the worker (taken from it once
    /// it is attached; left there on an error before) or opened here if None.
    pub(super) fn add_port_with(
        &mut self,
        bridge: &str,
        spec: &PortSpec,
        opened: &mut Option<Box<dyn Port>>,
    ) -> Result<Value, String> {
        spec.validate()?;
        let b = self.bridge_id(bridge)?;
        if spec.kind.has_device() {
            // The netdev's past events first, so they are not taken as news about the new
            // port; `check_initial_state` reads its present state once it is attached.
            self.read_link_events(self.dp.now_ms);
        }
        let device = opened.as_ref().map(|p| p.ifindex()).filter(|&i| i != 0);
        self.replace_dead_port(&spec.name, device)?;
        self.check_port_name(&spec.name)?;
        let vlan = spec.vlan_mode()?;
        let id = self.free_port_id()?;
        // The number is checked before any kernel resource is opened.
        let ofport = self
            .dp
            .choose_ofport(b, &spec.name, spec.ofport_wanted(bridge))?;
        let mut tunnel = None;
        let port: Box<dyn Port> = match (spec.kind, opened.take()) {
            (_, Some(mut p)) => {
                if let Err(e) = p.attach(id, &mut self.frames) {
                    self.retired.push((None, p));
                    return Err(e);
                }
                if let Some(fd) = p.shared_umem_fd() {
                    self.umem_fds.push((id, fd));
                }
                p
            }
            (PortKind::Afxdp | PortKind::Afpacket | PortKind::Tap, None) => {
                self.open_io(id, spec, bridge)?
            }
            (PortKind::Vxlan, None) => {
                let conf = spec.tunnel_conf()?;
                let owner = self
                    .dp
                    .bridges()
                    .find(|(_, br)| br.gateway.is_some_and(|g| g.ip == conf.local_ip))
                    .map(|(id, _)| id);
                match owner {
                    None => {
                        return Err(format!(
                            "local_ip: {} is not the gateway address of any bridge (the underlay is routed by uvs: add-br UPLINK gateway={}/LEN first)",
                            std::net::Ipv4Addr::from(conf.local_ip),
                            std::net::Ipv4Addr::from(conf.local_ip)
                        ));
                    }
                    Some(u) if u == b => {
                        return Err(
                            "local_ip: the uplink bridge cannot carry its own tunnel".into()
                        );
                    }
                    Some(_) => {}
                }
                if let Some((_, other)) = self.dp.ports().find(|(_, p)| {
                    p.tunnel.as_ref().is_some_and(|t| {
                        t.conf.local_ip == conf.local_ip
                            && t.conf.vni == conf.vni
                            && t.conf.dst_port == conf.dst_port
                    })
                }) {
                    return Err(format!(
                        "vni: {} on that address is already port '{}'",
                        conf.vni, other.name
                    ));
                }
                tunnel = Some(Box::new(crate::vxlan::Tunnel::new(conf)));
                Box::new(crate::port::virt::TunnelPort)
            }
            (PortKind::Patch, None) => Box::new(crate::port::patch::PatchPort::new(
                &spec.name,
                spec.peer.as_deref().unwrap_or_default(),
                &mut self.patches,
            )),
            (PortKind::Mem, None) => return Err("type mem is for tests only".into()),
        };
        let details = port.details();
        self.attach(
            id,
            b,
            (spec.name.clone(), Some(spec.clone())),
            vlan,
            port,
            ofport,
        )?;
        if spec.kind == PortKind::Patch {
            self.patch_ids.push(id);
            // Its peer's link comes up with it (PORT_STATUS, as its state in `show`).
            if let Some(peer) = spec.peer.as_deref().and_then(|p| self.dp.port_id(p)) {
                self.port_status(peer, crate::events::PORT_MODIFY);
            }
        }
        // (A hold is not part of the running configuration.)
        self.specs.ports.insert(
            id,
            PortSpec {
                hold: false,
                ..spec.clone()
            },
        );
        let until = self.dp.now_ms + HOLD_MS;
        if spec.hold
            && let Some(st) = self.dp.port_mut(id)
        {
            st.held_until_ms = until;
        }
        self.check_initial_state(id, &spec.name);
        if let Some(t) = tunnel
            && let Some(st) = self.dp.port_mut(id)
        {
            st.learn = t.conf.learning;
            st.tunnel = Some(t);
            self.dp.refresh_tunnels();
        }
        Ok(json!({"port": spec.name, "id": id, "ofport": ofport, "details": details}))
    }

    /// `mod-port BRIDGE PORT WORD` / OFPT_PORT_MOD: the port's OpenFlow configuration bits.
    fn mod_port(
        &mut self,
        bridge: &str,
        port: &str,
        bits: u32,
        mask: u32,
    ) -> Result<Value, String> {
        let b = self.bridge_id(bridge)?;
        let ports = &self.dp.bridge(b).expect("looked up").flows.ports;
        let ofport = match port.parse::<u16>() {
            Ok(n) => Some(n).filter(|&n| ports.port(n).is_some()),
            Err(_) => crate::flow::parse_port(port)
                .ok()
                .and_then(|r| match r {
                    crate::flow::PortRef::Num(n) => Some(n),
                    crate::flow::PortRef::Name(n) => ports.by_name(&n),
                })
                .filter(|&n| ports.port(n).is_some()),
        }
        .ok_or_else(|| format!("port: no port '{port}' in bridge '{bridge}'"))?;
        let id = ports.port(ofport).expect("checked");
        let st = self.dp.port_mut(id).expect("a numbered port");
        let new = st.config.with(bits, mask)?;
        let changed = new != st.config;
        st.config = new;
        let words = new.words();
        let name = st.name.clone();
        if changed {
            // Cached decisions (the decapsulation template) are taken again.
            self.dp.changed();
            let said = if words.is_empty() {
                "clear".to_string()
            } else {
                words.join(",")
            };
            if self.share.index == 0 {
                // Once, not by every replica.
                tracing::info!("port {name}: mod-port config {said}");
            }
            self.port_status(id, crate::events::PORT_MODIFY);
        }
        Ok(json!({"port": name, "ofport": ofport, "config": words, "changed": changed}))
    }

    /// `add-port` of a name whose port is down or gone replaces that port (a container
    /// restarted and is handed its port again). Also when the port is up again on `device`,
    /// the netdev the caller just opened for this `add-port`: the lifecycle saw that netdev
    /// appear while the caller was opening it and reattached the old port to it (a
    /// multi-queue TAP takes both).
    fn replace_dead_port(&mut self, name: &str, device: Option<u32>) -> Result<(), String> {
        let Some(id) = self.dp.port_id(name) else {
            return Ok(());
        };
        if self.life(id).is_some_and(|l| {
            l.spec.is_some() && (l.state != LinkState::Up || device == Some(l.ifindex))
        }) {
            tracing::info!("port {name}: replaced by add-port while not up");
            self.remove_port(id)?;
        }
        Ok(())
    }

    fn attach(
        &mut self,
        id: u16,
        bridge: u16,
        (name, spec): (String, Option<PortSpec>),
        vlan: crate::datapath::VlanMode,
        port: Box<dyn Port>,
        ofport: u16,
    ) -> Result<(), String> {
        let mac_limit = spec.as_ref().and_then(|s| s.mac_limit).unwrap_or(u32::MAX);
        let mut flood = match &spec {
            Some(s) => s.flood_limit()?,
            None => crate::pipeline::flood_limit::FloodLimit::default(),
        };
        let (mut rate_rx, mut rate_tx) = match &spec {
            Some(s) => s.shapers()?,
            None => (None, None),
        };
        if let Some(b) = &self.buckets {
            rate_rx = rate_rx.map(|s| b.share(&name, true, s));
            rate_tx = rate_tx.map(|s| b.share(&name, false, s));
            // Thousandths of a frame, as the bucket counts bits: it starts full. A `set-port`
            // of another rate keeps the bucket (`FloodLimit::keeping`).
            let (rate, burst) = (u64::from(flood.rate()), u64::from(flood.burst()));
            flood = flood.shared(b.bucket(format!("flood {name}"), rate, burst));
        }
        let life = PortLife::up(spec, port.ifindex(), port.details());
        let state = PortState {
            partial_csum_in: port.partial_csum_in(),
            offload_out: port.offload_out(),
            uso_out: port.uso_out(),
            ofport,
            mac_limit,
            rate_rx,
            rate_tx,
            flood,
            ..PortState::new(&name, port.kind(), bridge, vlan, port.mtu())
        };
        let mut port = Some(port);
        if let Err(e) = self.dp.add_port(id, state) {
            if let Some(p) = port.take() {
                // Attached: its frames come back once the caller released it.
                self.retired.push((Some(id), p));
            }
            self.umem_fds.retain(|(p, _)| *p != id);
            return Err(e);
        }
        let i = id as usize;
        if self.ports.len() <= i {
            self.ports.resize_with(i + 1, || None);
        }
        self.ports[i] = port.map(|p| self.relayed(id, p));
        if self.life.len() <= i {
            self.life.resize_with(i + 1, || None);
        }
        self.life[i] = Some(life);
        self.port_status(id, crate::events::PORT_ADD);
        // Tell the newcomer (and everyone) where the gateway is, as a host joining a LAN hears.
        self.announce_gateway(bridge);
        Ok(())
    }

    /// Flood a gratuitous ARP for `bridge`'s gateway (see `pipeline::announce_gateway`): by
    /// the first worker only, every worker applying the same change (with two workers each
    /// sent one: found trying uvs as a new user).
    pub(crate) fn announce_gateway(&mut self, bridge: u16) {
        if self.peers.as_ref().is_none_or(|p| p.me == 0) {
            crate::pipeline::announce_gateway(&mut self.dp, &mut self.frames, bridge);
        }
    }

    /// Detach and close port `id`, returning its frames to the pool.
    pub(crate) fn remove_port(&mut self, id: u16) -> Result<(), String> {
        self.port_status(id, crate::events::PORT_DELETE);
        let peer = self
            .specs
            .ports
            .get(&id)
            .filter(|s| s.kind == PortKind::Patch)
            .and_then(|s| s.peer.as_deref())
            .and_then(|p| self.dp.port_id(p));
        let queued = self.dp.del_port(id)?;
        for d in queued {
            self.frames.free(d.addr);
        }
        if let Some(p) = self.peers.as_mut() {
            p.forget_port(id);
        }
        if let Some(mut p) = self.ports.get_mut(id as usize).and_then(|p| p.take()) {
            if peer.is_some() {
                // A patch port has no kernel side: released here, it unlinks at once.
                p.release();
            }
            // Closed after the request: released by its caller, then reclaimed (`open`).
            self.retired.push((Some(id), p));
        }
        self.umem_fds.retain(|(p, _)| *p != id);
        self.patch_ids.retain(|&p| p != id);
        self.specs.ports.remove(&id);
        if let Some(l) = self.life.get_mut(id as usize) {
            *l = None;
        }
        self.observe.prune(&self.dp);
        if let Some(peer) = peer {
            // A patch port's peer goes down with it. (Its own frames are closed out of the
            // inbox with the port, after the request: `retired`.)
            self.port_status(peer, crate::events::PORT_MODIFY);
        }
        Ok(())
    }

    /// Why patch port `id` is not linked, naming what its peer is instead.
    fn unpaired_reason(&self, id: u16) -> Option<String> {
        let spec = self.specs.ports.get(&id)?;
        let (name, peer) = (&spec.name, spec.peer.as_deref()?);
        let Some(other) = self.dp.port_id(peer) else {
            return Some(format!("no peer: no port '{peer}'"));
        };
        let kind = self.dp.port(other)?.kind;
        if kind != PortKind::Patch {
            return Some(format!(
                "no peer: port '{peer}' is a {kind} port, not a patch port"
            ));
        }
        let theirs = self.specs.ports.get(&other)?.peer.as_deref()?;
        Some(format!(
            "no peer: patch port '{peer}' has peer={theirs}, not {name}"
        ))
    }

    /// A port's state, why, the frames it holds, and its details (the last known ones while it
    /// is closed).
    fn port_life_json(&self, id: u16) -> (String, String, u32, String) {
        let io = self.ports.get(id as usize).and_then(|x| x.as_ref());
        let held = io.map_or(0, |p| p.frames_held());
        if let Some(why) = io.and_then(|p| p.down_reason())
            && self.life(id).is_none_or(|l| l.state == LinkState::Up)
        {
            return (
                "down".into(),
                self.unpaired_reason(id).unwrap_or(why),
                held,
                io.map(|p| p.details()).unwrap_or_default(),
            );
        }
        match self.life(id) {
            Some(l) => (
                l.state.to_string(),
                l.reason.clone(),
                held,
                io.map_or_else(|| l.details.clone(), |p| p.details()),
            ),
            None => (
                "up".into(),
                String::new(),
                held,
                io.map(|p| p.details()).unwrap_or_default(),
            ),
        }
    }

    fn show(&self) -> Value {
        let bridges: Vec<Value> = self
            .dp
            .bridges()
            .map(|(_, b)| {
                let ports: Vec<Value> = b
                    .ports
                    .iter()
                    .filter_map(|&p| {
                        let st = self.dp.port(p)?;
                        let (state, reason, held, io_details) = self.port_life_json(p);
                        let details = match &st.tunnel {
                            Some(t) => t.conf.describe(self.dp.inner_mtu(p).unwrap_or(0)),
                            None => io_details,
                        };
                        let why = match state.as_str() {
                            "up" => String::new(),
                            _ => format!(" ({reason})"),
                        };
                        let rate = |s: &Option<crate::pipeline::ratelimit::Shaper>| {
                            s.as_ref().map(|s| s.text())
                        };
                        let (rx, tx) = (rate(&st.rate_rx), rate(&st.rate_tx));
                        // The flood budget when it is not the default.
                        let flood = (!st.flood.is_default()).then(|| st.flood.describe());
                        let config = (!st.config.is_clear()).then(|| st.config.words().join(","));
                        let limits: String = [
                            ("rate_rx", &rx),
                            ("rate_tx", &tx),
                            ("flood_rate", &flood),
                            ("config", &config),
                        ]
                        .iter()
                        .filter_map(|(k, v)| Some(format!(" {k}={}", v.as_ref()?)))
                        .collect();
                        Some(json!({
                            "name": st.name,
                            "id": p,
                            "ofport": st.ofport,
                            "type": st.kind.to_string(),
                            "vlan": st.vlan.describe(),
                            "mtu": self.dp.inner_mtu(p).unwrap_or(st.mtu),
                            "state": state,
                            "reason": reason,
                            "frames": held,
                            "rate_rx": rx,
                            "rate_tx": tx,
                            "flood_rate": st.flood.describe(),
                            "config": st.config.words(),
                            "age_ms": self.dp.now_ms.saturating_sub(st.added_ms),
                            "config_bits": st.config.bits(),
                            "details": format!("state={state}{why} frames={held} {details}{limits}"),
                        }))
                    })
                    .collect();
                let mut v = json!({
                    "name": b.name,
                    "gateway": b.gateway.map(gateway_text),
                    "gateway_mac": b.gateway.map(|g| g.mac.to_string()),
                    "fdb_entries": b.fdb.len(),
                    "fdb_capacity": b.fdb.capacity(),
                    "aging": b.aging,
                    "isolated": b.isolated,
                    "icc": b.icc,
                    "rp_filter": b.rp_filter.name(),
                    "ports": ports,
                });
                self.openflow_json(b, &mut v);
                v
            })
            .collect();
        json!({
            "bridges": bridges,
            "worker": {
                "core": self.core,
                "rxqs": self.rxqs_json(),
                "frames": self.frames.capacity(),
                "frames_free": self.frames.free_count(),
                "frames_in_use": self.frames.in_use(),
                "budget": self.budget_json(),
            }
        })
    }

    fn stats_json(&self) -> Value {
        let ports: serde_json::Map<String, Value> = self
            .dp
            .ports()
            .map(|(_, p)| {
                let bridge = self.dp.bridge(p.bridge).map(|b| b.name.clone());
                let mut v = serde_json::to_value(p.counters.snapshot()).unwrap_or(Value::Null);
                v["bridge"] = json!(bridge);
                let id = self.dp.port_id(&p.name).unwrap_or(u16::MAX);
                let (state, reason, held, _) = self.port_life_json(id);
                v["state"] = json!(state);
                v["reason"] = json!(reason);
                v["frames"] = json!(held);
                if p.rate_rx.is_some() || p.rate_tx.is_some() {
                    let backlog = |s: &Option<crate::pipeline::ratelimit::Shaper>| {
                        s.as_ref().map_or(0, |s| s.backlog_bytes())
                    };
                    v["shaper_backlog"] =
                        json!({"rx": backlog(&p.rate_rx), "tx": backlog(&p.rate_tx)});
                }
                if let Some(Some(io)) = self.ports.get(id as usize) {
                    let k: serde_json::Map<String, Value> = io
                        .kernel_counters()
                        .into_iter()
                        .map(|(name, n)| (name.to_string(), json!(n)))
                        .collect();
                    v["kernel"] = Value::Object(k);
                }
                (p.name.clone(), v)
            })
            .collect();
        let bridges: serde_json::Map<String, Value> = self
            .dp
            .bridges()
            .map(|(_, b)| {
                let mut v = serde_json::to_value(&b.counters).unwrap_or(Value::Null);
                v["fdb_entries"] = json!(b.fdb.len());
                (b.name.clone(), v)
            })
            .collect();
        let (cpu, wall) = self.cpu_and_wall_ns();
        let (rx, tx) = self.dp.ports().fold((0u64, 0u64), |(r, t), (_, p)| {
            (r + p.counters.rx_packets, t + p.counters.tx_packets)
        });
        json!({
            "ports": ports,
            "bridges": bridges,
            "router": serde_json::to_value(&self.dp.router).unwrap_or(Value::Null),
            "neigh": serde_json::to_value(self.dp.neigh.counters()).unwrap_or(Value::Null),
            "reassembly": serde_json::to_value(self.dp.reassembly.stats()).unwrap_or(Value::Null),
            "events": self.dp.events.json(),
            "worker": {
                "core": self.core,
                "rx_packets": rx,
                "tx_packets": tx,
                "handed_out": self.peers.as_ref().map_or(0, |p| p.handed_out),
                "handed_in": self.peers.as_ref().map_or(0, |p| p.handed_in),
                "handoff_dropped": self.peers.as_ref().map_or(0, |p| p.handoff_dropped),
                "learned_dropped": self.peers.as_ref().map_or(0, |p| p.learned_dropped),
                "learned_applied": self.peers.as_ref().map_or(0, |p| p.learned_applied),
                "iterations": self.stats.iterations,
                "busy_iterations": self.stats.busy_iterations,
                "sleeps": self.stats.sleeps,
                "busy_ns": self.stats.busy_ns,
                "cpu_ns": cpu,
                "wall_ns": wall,
                "frames": self.frames.capacity(),
                "frames_free": self.frames.free_count(),
                "frames_in_use": self.frames.in_use(),
                "budget": self.budget_json(),
            }
        })
    }
}

impl Worker {
    /// The frame budget's figures.
    fn budget_json(&self) -> Value {
        let b = &self.frames.budget;
        json!({
            "reserve": b.reserve(),
            "committed": b.committed(),
            "lent": b.elastic(),
            "available": b.available(),
        })
    }
}

/// `172.31.5.1/24`
pub(crate) fn gateway_text(g: crate::datapath::Gateway) -> String {
    format!("{}/{}", std::net::Ipv4Addr::from(g.ip), g.len)
}

#[cfg(test)]
mod tests {
    use super::Command;
    use crate::config::{BridgeSpec, NatSpec};

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    /// `nat-del RULE` finds the rule by its `nat-show` text and removes it in one worker step;
    /// a text that names no rule is an error naming it.
    #[test]
    fn nat_rules_are_deleted_by_their_text() {
        let w = crate::worker::spawn_for_tests();
        for (name, gw) in [("ext", "10.250.0.1/24"), ("br0", "172.31.5.1/24")] {
            let b = BridgeSpec::from_args(name, &s(&[&format!("gateway={gw}")])).unwrap();
            w.call(Command::AddBridge(b)).unwrap();
        }
        for rule in [
            s(&["masquerade", "src=172.31.5.0/24", "out=ext"]),
            s(&[
                "dnat",
                "in=ext",
                "proto=tcp",
                "port=8080",
                "to=172.31.5.2:80",
            ]),
        ] {
            w.call(Command::NatAdd(NatSpec::from_args(&rule).unwrap()))
                .unwrap();
        }
        let rules = w.call(Command::NatShow).unwrap();
        let texts: Vec<String> = rules["rules"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["rule"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(texts.len(), 2, "{rules}");
        // Delete the first rule by its text: the second one is what is left.
        let v = w.call(Command::NatDelRule(texts[0].clone())).unwrap();
        assert_eq!(v["deleted"], 0, "{v}");
        let left = w.call(Command::NatShow).unwrap();
        let left = left["rules"].as_array().unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0]["rule"], texts[1]);
        let e = w.call(Command::NatDelRule(texts[0].clone())).unwrap_err();
        assert!(e.contains("no NAT rule") && e.contains("RULE"), "{e}");
        w.shutdown();
    }

    /// Two bridges cannot have one OpenFlow datapath id (add-br, or set later); the bridge
    /// that has it may set it again.
    #[test]
    fn two_bridges_cannot_share_a_datapath_id() {
        let w = crate::worker::spawn_for_tests();
        let br = |name: &str, dpid: &str| {
            let args = vec![format!("datapath_id={dpid}")];
            BridgeSpec::from_args(name, &args).unwrap()
        };
        w.call(Command::AddBridge(br("a", "0x1"))).unwrap();
        let e = w.call(Command::AddBridge(br("b", "0x1"))).unwrap_err();
        assert!(e.contains("datapath_id") && e.contains("'a'"), "{e}");
        w.call(Command::AddBridge(br("b", "0x2"))).unwrap();
        let set = |bridge: &str, dpid: &str| {
            w.call(Command::Openflow(super::super::events::OfCommand::Set {
                bridge: bridge.into(),
                datapath_id: Some(Some(format!(
                    "{:#018x}",
                    u64::from_str_radix(dpid, 16).unwrap()
                ))),
                controller: None,
                fail_mode: None,
            }))
        };
        assert!(set("b", "1").unwrap_err().contains("'a'"));
        set("a", "1").unwrap();
        set("b", "3").unwrap();
    }

    /// A static route's next hop may be neither the gateway nor its subnet's network or
    /// broadcast address (found trying uvs as a new user: the broadcast address was taken).
    #[test]
    fn a_route_via_the_subnets_broadcast_is_refused() {
        let w = crate::worker::spawn_for_tests();
        let mut b = BridgeSpec::new("br0");
        b.gateway = Some("10.7.0.1/24".into());
        w.call(Command::AddBridge(b)).unwrap();
        let add = |via: &str| {
            w.call(Command::RouteAdd(crate::config::RouteSpec {
                prefix: "10.99.0.0/16".into(),
                via: via.into(),
            }))
        };
        for (via, why) in [
            ("10.7.0.255", "broadcast"),
            ("10.7.0.0", "network"),
            ("10.7.0.1", "own gateway"),
        ] {
            let e = add(via).unwrap_err();
            assert!(e.starts_with("via: ") && e.contains(why), "{via}: {e}");
        }
        add("10.7.0.2").unwrap();
    }

    /// A flow naming a group the bridge lacks is refused, inside `clone(...)` too, as OVS
    /// does (OFPBAC_BAD_OUT_GROUP): the database would hold a flow it could not load again.
    /// Once the group exists the flow is taken. (Found trying uvs as a new user.)
    #[test]
    fn a_flow_to_a_missing_group_is_refused() {
        let w = crate::worker::spawn_for_tests();
        w.call(Command::AddBridge(BridgeSpec::new("br0"))).unwrap();
        let add = |text: &str| {
            w.call(Command::FlowAdd {
                bridge: "br0".into(),
                flows: vec![crate::flow::parse_flow(text).unwrap()],
            })
        };
        for text in ["actions=group:5", "actions=clone(group:5),normal"] {
            let e = add(text).unwrap_err();
            assert!(e.contains("group:5: no such group"), "{text}: {e}");
        }
        let e = add("actions=meter:2,normal").unwrap_err();
        assert!(e.contains("meter:2: no such meter"), "{e}");
        w.call(Command::Openflow(
            super::super::events::OfCommand::GroupAdd {
                bridge: "br0".into(),
                group: "group_id=5,type=all,bucket=actions=drop".into(),
                write: crate::flow::EntryWrite::Add,
            },
        ))
        .unwrap();
        add("actions=clone(group:5),normal").unwrap();
    }

    /// `FlowReplace` checks every flow, installs those that pass as the whole table in one
    /// step and names each refused one by its index.
    #[test]
    fn a_flow_table_is_replaced_whole_with_the_refused_flows_named() {
        let w = crate::worker::spawn_for_tests();
        w.call(Command::AddBridge(BridgeSpec::new("br0"))).unwrap();
        let flows = |texts: &[&str]| -> Vec<crate::flow::Flow> {
            texts
                .iter()
                .map(|t| crate::flow::parse_flow(t).unwrap())
                .collect()
        };
        let replace = |texts: &[&str]| {
            w.call(Command::FlowReplace {
                bridge: "br0".into(),
                flows: flows(texts),
            })
            .unwrap()
        };
        let dump = || {
            let v = w
                .call(Command::FlowDump {
                    bridge: "br0".into(),
                    filter: None,
                    names: true,
                })
                .unwrap();
            v["flows"].as_array().unwrap().len()
        };
        let v = replace(&["priority=5,udp actions=drop", "priority=1 actions=normal"]);
        assert_eq!((v["added"].as_u64(), dump()), (Some(2), 2), "{v}");
        let v = replace(&[
            "priority=10,in_port=late actions=drop",
            "priority=0 actions=normal",
        ]);
        assert_eq!(v["added"], 1, "{v}");
        assert_eq!(v["refused"][0][0], 0, "{v}");
        let why = v["refused"][0][1].as_str().unwrap();
        assert!(why.contains("unknown port 'late'"), "{why}");
        // The old two flows are gone, the one that passed is the table.
        assert_eq!(dump(), 1);
        let e = w
            .call(Command::FlowReplace {
                bridge: "nope".into(),
                flows: flows(&["actions=drop"]),
            })
            .unwrap_err();
        assert!(e.contains("nope"), "{e}");
        // Over FLOW_CHUNK flows: built beside the running table over several loop passes,
        // then swapped in whole; the refused one is named by its index all the same.
        let mut texts: Vec<String> = (0..2500)
            .map(|i| {
                format!(
                    "priority={},udp,tp_dst={} actions=drop",
                    100 + i % 50,
                    i + 1
                )
            })
            .collect();
        texts.insert(1234, "in_port=ghost actions=drop".into());
        let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
        let v = replace(&texts);
        assert_eq!(v["added"], 2500, "{v}");
        assert_eq!(v["refused"][0][0], 1234, "{v}");
        assert_eq!(dump(), 2500);
        // And back to a small table in one pass.
        let v = replace(&["priority=0 actions=normal"]);
        assert_eq!((v["added"].as_u64(), dump()), (Some(1), 1), "{v}");
        w.shutdown();
    }
}
