//! Flow-table requests: add-flow(s), del-flows, dump-flows, add-meter, trace.
//!
//! Flows arrive parsed (the control thread parses ovs-ofctl text); here they are validated
//! against the bridge (ports exist, actions this datapath executes) and applied all or nothing.

use serde_json::{Value, json};

use super::Worker;
use crate::flow::meter::parse_meter;
use crate::flow::{Action, Flow, FlowFilter, NO_VLAN, PacketKey, PortRef};
use crate::ofport::OFPP_MAX;
use crate::wire::MacAddr;

/// Add checked flows (ports already numbers) to a table being built; (added, replaced).
pub(crate) fn stage(
    staged: &mut crate::flow::Classifier,
    flows: impl IntoIterator<Item = Flow>,
    now_ms: u64,
) -> Result<(u64, u64), String> {
    let (mut added, mut replaced) = (0, 0);
    for f in flows {
        let r = staged
            .add(f, now_ms, |p| Some(p.num()))
            .map_err(|e| e.to_string())?;
        if r.replaced {
            replaced += 1;
        } else {
            added += 1;
        }
    }
    Ok((added, replaced))
}

/// Tell listeners that `flow` (counters `st`) of `bridge` was deleted.
fn deleted_event(
    events: &crate::events::EventSink,
    bridge: &str,
    now_ms: u64,
    flow: Flow,
    st: crate::flow::FlowStats,
) {
    removed_event(
        events,
        bridge,
        now_ms,
        (flow, st),
        crate::events::REMOVED_DELETE,
    );
}

/// Tell listeners that `flow` (counters `st`) of `bridge` was removed for `reason`.
pub(super) fn removed_event(
    events: &crate::events::EventSink,
    bridge: &str,
    now_ms: u64,
    (flow, st): (Flow, crate::flow::FlowStats),
    reason: u8,
) {
    events.send(crate::events::Event::FlowRemoved(Box::new(
        crate::events::FlowRemoved {
            bridge: bridge.to_string(),
            reason,
            duration_ms: now_ms.saturating_sub(st.created_ms),
            packets: st.n_packets,
            bytes: st.n_bytes,
            flow,
        },
    )));
}

impl Worker {
    pub(crate) fn flow_bridge(&self, bridge: &str) -> Result<u16, String> {
        self.dp
            .bridge_id(bridge)
            .ok_or_else(|| format!("no bridge named '{bridge}'"))
    }

    /// Check flows for a bridge (ports exist, actions this datapath executes, table in range)
    /// and rewrite their port names to the bridge's OpenFlow port numbers, which is what they
    /// hold from then on (as in OVS: a flow refers to a number). Returns the bridge id.
    pub(crate) fn flows_check(&self, bridge: &str, flows: &mut [Flow]) -> Result<u16, String> {
        let b = self.flow_bridge(bridge)?;
        let ft = &self.dp.bridge(b).expect("checked").flows;
        let many = flows.len() > 1;
        for (i, f) in flows.iter_mut().enumerate() {
            let at = if many {
                format!("flow {}: ", i + 1)
            } else {
                String::new()
            };
            ft.bind_ports(f).map_err(|(what, p)| match p {
                PortRef::Name(_) => format!("{at}{what}: unknown port '{p}' in bridge '{bridge}'"),
                PortRef::Num(_) => {
                    format!("{at}{what}: port number {p} out of range (1 to {OFPP_MAX}, or LOCAL)")
                }
            })?;
            // Every action, those inside `clone(...)` too: a flow naming a
            // meter or group the bridge lacks is refused as OVS does (a database holding one
            // would not load again: found trying uvs as a new user, for `group:N`).
            let mut refused = None;
            f.any_action(|a| {
                refused = match a {
                    Action::SetTunnel(_) | Action::SetField(crate::flow::SetField::TunId(_)) => {
                        Some("set_tunnel: not supported (a vxlan port carries its own VNI)".into())
                    }
                    Action::Meter(m) if !ft.meters.contains_key(m) => {
                        Some(format!("meter:{m}: no such meter (add-meter first)"))
                    }
                    Action::Group(g) if !ft.groups.contains_key(g) => {
                        Some(format!("group:{g}: no such group (add-group first)"))
                    }
                    _ => None,
                };
                refused.is_some()
            });
            if let Some(why) = refused {
                return Err(format!("{at}{why}"));
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
        let mut ct = false;
        // Ports are numbers by now (flows_check).
        let r = stage(&mut ft.cls, flows.inspect(|f| ct |= f.uses_ct()), now);
        ft.ct_steered |= ct;
        ft.refresh();
        r
    }

    /// Add flows to a bridge at once (requests of at most `FLOW_CHUNK` flows; larger ones are
    /// applied in chunks by the worker loop).
    pub(crate) fn flows_add(
        &mut self,
        bridge: &str,
        mut flows: Vec<Flow>,
    ) -> Result<Value, String> {
        let b = self.flows_check(bridge, &mut flows)?;
        let (added, replaced) = self.flows_apply(b, flows.into_iter())?;
        let ft = &self.dp.bridge(b).expect("checked").flows;
        Ok(json!({"added": added, "replaced": replaced, "flows": ft.cls.len()}))
    }

    /// Check each of `flows` against bridge `bridge` on its own: (bridge id, the flows that
    /// pass, bound to port numbers, and `[index, reason]` for each one refused).
    pub(crate) fn flows_partition(
        &self,
        bridge: &str,
        flows: Vec<Flow>,
    ) -> Result<(u16, Vec<Flow>, Vec<Value>), String> {
        let b = self.flow_bridge(bridge)?;
        let (mut good, mut refused) = (Vec::with_capacity(flows.len()), Vec::new());
        for (i, mut f) in flows.into_iter().enumerate() {
            match self.flows_check(bridge, std::slice::from_mut(&mut f)) {
                Ok(_) => good.push(f),
                Err(e) => refused.push(json!([i, e])),
            }
        }
        Ok((b, good, refused))
    }

    /// Replace bridge `bridge`'s flow table with the flows of `flows` that pass
    /// [`Worker::flows_check`], in this one request (see `Command::FlowReplace`; a table over
    /// `FLOW_CHUNK` flows is built beside the running one by the worker loop and swapped in
    /// with [`Worker::flows_swap`]).
    pub(crate) fn flows_replace(
        &mut self,
        bridge: &str,
        flows: Vec<Flow>,
    ) -> Result<Value, String> {
        let (b, good, refused) = self.flows_partition(bridge, flows)?;
        let mut staged = crate::flow::Classifier::new();
        let (added, _) = stage(&mut staged, good, self.dp.now_ms)
            .map_err(|e| format!("{e} (the running table is unchanged)"))?;
        self.flows_swap(b, staged)?;
        Ok(json!({"added": added, "refused": refused}))
    }

    /// Make `staged` bridge `b`'s flow table, in this same step. The old table is dropped
    /// whole (not deleted flow by flow: that was O(flows) of removals in one request); its
    /// `send_flow_rem` flows are announced as a `del-flows` would (FLOW_REMOVED, reason
    /// delete) when someone listens.
    pub(crate) fn flows_swap(
        &mut self,
        b: u16,
        staged: crate::flow::Classifier,
    ) -> Result<(), String> {
        let (events, now_ms) = (self.dp.events.clone(), self.dp.now_ms);
        let br = self
            .dp
            .bridge_mut(b)
            .ok_or_else(|| "the bridge went away".to_string())?;
        let ft = &mut br.flows;
        ft.ct_steered |= staged.iter().any(|(_, f)| f.uses_ct());
        let old = std::mem::replace(&mut ft.cls, staged);
        ft.refresh();
        if events.listening() {
            for (id, f) in old.iter().filter(|(_, f)| f.send_flow_rem) {
                if let Some(st) = old.stats(id) {
                    deleted_event(&events, &br.name, now_ms, f.clone(), st);
                }
            }
        }
        Ok(())
    }

    /// Delete flows matching `filter` (all without one).
    pub(crate) fn flows_del(
        &mut self,
        bridge: &str,
        filter: Option<FlowFilter>,
        strict: bool,
    ) -> Result<Value, String> {
        let b = self.flow_bridge(bridge)?;
        let events = self.dp.events.clone();
        let now_ms = self.dp.now_ms;
        let ft = &mut self.dp.bridge_mut(b).expect("checked").flows;
        let filter = filter.unwrap_or_default();
        let ports = ft.ports.clone();
        let resolve = |r: &PortRef| match r {
            PortRef::Name(n) => ports.by_name(n),
            PortRef::Num(n) => Some(*n),
        };
        let listening = events.listening();
        let mut gone = Vec::new();
        let removed = ft
            .cls
            .del_with(&filter, strict, resolve, |f, st| {
                if listening && f.send_flow_rem {
                    gone.push((f, st));
                }
            })
            .map_err(|e| e.to_string())?;
        ft.refresh();
        let (deleted, left) = (removed.len(), ft.cls.len());
        for (flow, st) in gone {
            deleted_event(&events, bridge, now_ms, flow, st);
        }
        Ok(json!({"deleted": deleted, "flows": left}))
    }

    /// dump-flows lines; with `names`, ports that exist are shown by name (`--names`).
    pub(crate) fn flows_dump(
        &self,
        bridge: &str,
        filter: Option<FlowFilter>,
        names: bool,
    ) -> Result<Value, String> {
        let b = self.flow_bridge(bridge)?;
        let ft = &self.dp.bridge(b).expect("checked").flows;
        let resolve = |r: &PortRef| ft.resolve(r);
        let rows = ft
            .cls
            .dump(filter.as_ref(), resolve)
            .map_err(|e| e.to_string())?;
        let now = self.dp.now_ms;
        let named = |f: &Flow| {
            let mut f = f.clone();
            for p in f.ports_mut() {
                // LOCAL stays LOCAL, as ovs-ofctl's --names prints it.
                if p.num() == crate::ofport::OFPP_LOCAL {
                    continue;
                }
                if let Some(n) = ft.ports.name_of(p.num()) {
                    *p = PortRef::Name(n.to_string());
                }
            }
            f
        };
        let lines: Vec<String> = rows
            .iter()
            .map(|(_, f, s)| match names {
                true => named(f).dump_line(s, now),
                false => f.dump_line(s, now),
            })
            .collect();
        Ok(json!({"bridge": bridge, "flows": lines}))
    }

    /// Queue `frame` on the ports of `bridge` numbered `outputs` (sent at the next flush). All
    /// ports are checked before anything is queued.
    pub(crate) fn packet_out(
        &mut self,
        bridge: &str,
        outputs: &[u16],
        frame: &[u8],
    ) -> Result<Value, String> {
        let b = self.flow_bridge(bridge)?;
        if frame.len() < 14 || frame.len() > crate::packet::MAX_FRAME_LEN {
            return Err(format!("packet-out: a frame of {} bytes", frame.len()));
        }
        let ft = &self.dp.bridge(b).expect("checked").flows;
        let ids = outputs
            .iter()
            .map(|&n| {
                ft.ports
                    .port(n)
                    .ok_or_else(|| format!("packet-out: no port {n} in bridge '{bridge}'"))
            })
            .collect::<Result<Vec<_>, String>>()?;
        for id in ids {
            let mut d = self
                .frames
                .alloc()
                .ok_or_else(|| "packet-out: no free frame".to_string())?;
            d.len = frame.len() as u32;
            self.frames.data_mut(d).copy_from_slice(frame);
            match self.dp.out.get_mut(id as usize) {
                Some(q) => q.push(d),
                None => self.frames.free(d.addr),
            }
        }
        Ok(json!({"sent": outputs.len()}))
    }

    /// add-meter (`EntryWrite::Add`: refused when the id exists, as OVS's METER_EXISTS) and
    /// mod-meter (`Modify`: refused when it does not). A written meter starts with zero counters.
    pub(crate) fn meter_add(
        &mut self,
        bridge: &str,
        text: &str,
        write: crate::flow::EntryWrite,
    ) -> Result<Value, String> {
        use crate::flow::EntryWrite;
        let b = self.flow_bridge(bridge)?;
        let (id, mut meter) = parse_meter(text)?;
        let exists = self
            .dp
            .bridge(b)
            .expect("checked")
            .flows
            .meters
            .contains_key(&id);
        match (write, exists) {
            (EntryWrite::Add, true) => {
                return Err(format!(
                    "meter: meter {id} already exists on bridge '{bridge}' (mod-meter replaces it)"
                ));
            }
            (EntryWrite::Modify, false) => {
                return Err(format!("meter: no meter {id} on bridge '{bridge}'"));
            }
            _ => {}
        }
        meter.created_ms = self.dp.now_ms;
        if let Some(buckets) = &self.buckets {
            let what = format!("meter {bridge} {id}");
            let bucket = buckets.bucket(what, meter.rate_kbps, meter.burst_kbits);
            meter = meter.share(bucket);
        }
        let ft = &mut self.dp.bridge_mut(b).expect("checked").flows;
        let replaced = ft.meters.insert(id, meter).is_some();
        Ok(json!({"meter": id, "replaced": replaced}))
    }

    /// Meters with their counters.
    pub(crate) fn meters_dump(&self, bridge: &str) -> Result<Value, String> {
        let b = self.flow_bridge(bridge)?;
        let now_ms = self.dp.now_ms;
        let ft = &self.dp.bridge(b).expect("checked").flows;
        let users = ft.flows_using(|a| match a {
            crate::flow::Action::Meter(m) => Some(*m),
            _ => None,
        });
        let rows: Vec<Value> = ft
            .meters
            .iter()
            .map(|(id, m)| {
                let flows = users.get(id).copied().unwrap_or(0);
                json!({"meter": id, "rate_kbps": m.rate_kbps, "burst_kbits": m.burst_kbits,
                       "passed": m.passed, "dropped": m.dropped,
                       "passed_bytes": m.passed_bytes, "dropped_bytes": m.dropped_bytes,
                       "flow_count": flows,
                       "duration_ms": now_ms.saturating_sub(m.created_ms)})
            })
            .collect();
        Ok(json!({"meters": rows}))
    }

    /// `trace`: the packet a match describes is built as a frame and run through the bridge's
    /// flow tables by the datapath's own code (`pipeline::flows::execute`), without changing any
    /// state (no counters, meters or connections); every lookup, action and decision is
    /// reported in order, and where NORMAL sends the frame.
    pub(crate) fn trace(
        &mut self,
        bridge: &str,
        m: &crate::flow::Match,
        _now: u64,
    ) -> Result<Value, String> {
        let mut budget = TRACE_PATCH_CROSSINGS;
        Ok(json!({"trace": self.trace_lines(bridge, m, 0, &mut budget)?}))
    }

    /// `trace`'s lines for `m` entering `bridge`, `depth` patch crossings into the trace: a
    /// frame sent to a patch port whose peer is linked is traced on into the peer's bridge
    /// (as OVS's `ofproto/trace` goes on through patch ports; a flood into each patch port it
    /// reaches), up to [`TRACE_PATCH_DEPTH`] crossings deep and `budget` in all.
    fn trace_lines(
        &mut self,
        bridge: &str,
        m: &crate::flow::Match,
        depth: usize,
        budget: &mut usize,
    ) -> Result<Vec<String>, String> {
        use crate::pipeline::flows::{Credit, Emitted, Ingress, execute, stack};
        let b = self.flow_bridge(bridge)?;
        let ft = &self.dp.bridge(b).expect("checked").flows;
        let key = m
            .to_packet_key(&|r: &PortRef| ft.resolve(r))
            .map_err(|e| e.to_string())?;
        let in_id = ft.ports.port(key.in_port);
        if in_id.is_none() && key.in_port != 0 {
            return Err(format!(
                "in_port: no port {} in bridge '{bridge}'",
                key.in_port
            ));
        }
        let mut log = TraceLog::default();
        log.items.push(Item::Line(format!(
            "bridge {bridge}: {}",
            describe_key(&key, &m.ext, ft)
        )));
        // A port set `down` or `no-receive` (mod-port) takes nothing in.
        if let Some(port) = in_id.and_then(|p| self.dp.port(p))
            && port.config.drops_rx()
        {
            let mut lines = log.into_lines();
            lines.push(format!(
                "ingress: port {} is set {} -> drop (port-no-recv)",
                port.name,
                port.config.words().join(",")
            ));
            return Ok(lines);
        }
        // Ingress (`ethernet-input`) admits the frame to a VLAN before any table sees it.
        let tag = (key.vlan != crate::flow::NO_VLAN).then_some(key.vlan);
        let vlan = match in_id.and_then(|p| self.dp.port(p)) {
            Some(port) => match crate::pipeline::flows::admitted_vlan(&port.vlan, tag) {
                Some(v) => {
                    log.items.push(Item::Line(format!(
                        "ingress: port {} ({}) -> VLAN {v}",
                        port.name,
                        port.vlan.describe()
                    )));
                    v
                }
                None => {
                    let what = tag.map_or("untagged frames".into(), |v| format!("VLAN {v}"));
                    log.items.push(Item::Line(format!(
                        "ingress: port {} ({}) does not carry {what} -> drop (vlan-denied)",
                        port.name,
                        port.vlan.describe()
                    )));
                    return Ok(log.into_lines());
                }
            },
            None => tag.unwrap_or(0),
        };
        let (desc, mut meta) = trace_frame(&mut self.frames, &key, &m.ext)
            .ok_or_else(|| "trace: no free frame to build the packet in".to_string())?;
        // As ingress leaves it: in the VLAN admitted above.
        meta.vlan = vlan;
        let now_ms = self.dp.now_ms;
        let no_packet_in = in_id
            .and_then(|i| self.dp.port(i))
            .is_some_and(|p| p.config.no_packet_in());
        let ft = &mut self.dp.bridge_mut(b).expect("checked").flows;
        let (mut made, mut extra) = (Vec::new(), Vec::new());
        let port = Ingress {
            id: in_id.unwrap_or(crate::fdb::PortId::MAX),
            ofport: key.in_port,
            tun_id: key.tun_id,
            no_packet_in,
        };
        let mut out = Emitted {
            made: &mut made,
            normal: &mut extra,
        };
        execute(
            ft,
            &mut self.frames,
            port,
            &mut meta,
            &mut out,
            now_ms,
            &mut Credit::default(),
            &mut stack(),
            &mut log,
        );
        self.frames.free(desc.addr);
        let mut lines = Vec::new();
        for it in log.items {
            match it {
                Item::Line(l) => lines.push(l),
                Item::Sent(d, seen) => {
                    lines.push(self.trace_dest(b, (&key, vlan, seen), in_id, d));
                    for p in self.patch_outputs(b, in_id, d, seen) {
                        lines.extend(self.trace_across(p, m, seen, depth, budget)?);
                    }
                }
            }
        }
        Ok(lines)
    }

    /// The trace on the far side of port `p` when it is a linked patch port: the frame enters
    /// the peer's bridge as it left (destination MAC and tag as the actions and `p`'s VLAN
    /// mode left them; other fields as traced), indented under the crossing.
    fn trace_across(
        &mut self,
        p: u16,
        m: &crate::flow::Match,
        seen: Seen,
        depth: usize,
        budget: &mut usize,
    ) -> Result<Vec<String>, String> {
        let Some((peer, peer_bridge, peer_ofport, tag)) = self.patch_peer_of(p, seen.vlan) else {
            return Ok(Vec::new());
        };
        if depth >= TRACE_PATCH_DEPTH || *budget == 0 {
            return Ok(vec![format!(
                "    patch {} -> {peer}: not traced further ({TRACE_PATCH_DEPTH} crossings deep \
                 or {TRACE_PATCH_CROSSINGS} in all)",
                self.port_name(p)
            )]);
        }
        *budget -= 1;
        let m2 = crate::flow::Match {
            in_port: Some(PortRef::Num(peer_ofport)),
            dl_dst: Some(crate::flow::Masked {
                value: seen.dst,
                mask: crate::flow::match_::MAC48,
            }),
            dl_vlan: tag,
            vlan_tci: None,
            ..m.clone()
        };
        let mut lines = vec![format!(
            "    patch {} -> {peer} (bridge {peer_bridge}):",
            self.port_name(p)
        )];
        let inner = self.trace_lines(&peer_bridge, &m2, depth + 1, budget)?;
        lines.extend(inner.into_iter().map(|l| format!("        {l}")));
        Ok(lines)
    }

    /// The patch ports of bridge `b` a traced decision `d` sends the frame (`seen`) to: the
    /// port it names or NORMAL learned, or, for a flood, every patch port but the ingress one
    /// (NORMAL's and FLOOD's skip those set `no-flood`; NORMAL's only those carrying the VLAN).
    fn patch_outputs(
        &self,
        b: u16,
        in_id: Option<u16>,
        d: crate::pipeline::Dest,
        seen: Seen,
    ) -> Vec<u16> {
        use crate::pipeline::Dest;
        let Some(br) = self.dp.bridge(b) else {
            return Vec::new();
        };
        let flood = |vlan: Option<u16>, all: bool| -> Vec<u16> {
            self.patch_ids
                .iter()
                .copied()
                .filter(|&p| Some(p) != in_id)
                .filter(|&p| {
                    self.dp.port(p).is_some_and(|s| {
                        s.bridge == b
                            && (all || !s.config.no_flood())
                            && !s.config.drops_tx()
                            && vlan.is_none_or(|v| s.vlan.carries(v))
                    })
                })
                .collect()
        };
        let sends = |p: u16| self.dp.port(p).is_some_and(|s| !s.config.drops_tx());
        match d {
            Dest::Port(p) if Some(p) != in_id && sends(p) => vec![p],
            Dest::Normal if br.gateway.is_some_and(|g| g.mac.to_u64() == seen.dst) => Vec::new(),
            Dest::Normal => match br.fdb.lookup(seen.vlan, seen.dst) {
                Some(p) if !MacAddr::from_u64(seen.dst).is_multicast() => {
                    if Some(p) == in_id || !sends(p) {
                        Vec::new()
                    } else {
                        vec![p]
                    }
                }
                _ => flood(Some(seen.vlan), false),
            },
            Dest::Flood => flood(None, false),
            Dest::All => flood(None, true),
            _ => Vec::new(),
        }
    }

    /// For a linked patch port `p`: its peer's name, bridge and OpenFlow number, and the tag a
    /// frame of VLAN `vlan` leaves `p` with (None: untagged).
    fn patch_peer_of(&self, p: u16, vlan: u16) -> Option<(String, String, u16, Option<u16>)> {
        let st = self.dp.port(p)?;
        if st.kind != crate::port::PortKind::Patch {
            return None;
        }
        let spec = self.specs.ports.get(&p)?;
        let peer = spec.peer.clone()?;
        let q = self.dp.port_id(&peer)?;
        let qs = self.dp.port(q)?;
        if qs.kind != crate::port::PortKind::Patch
            || self.specs.ports.get(&q)?.peer.as_deref() != Some(&spec.name)
        {
            return None;
        }
        let bridge = self.dp.bridge(qs.bridge)?.name.clone();
        let tag = (!st.vlan.leaves_untagged(vlan)).then_some(vlan);
        Some((peer, bridge, qs.ofport, tag))
    }

    /// A trace line for a decision carried out on the frame as `seen` (the packet `key`,
    /// admitted to `vlan` at ingress).
    fn trace_dest(
        &self,
        b: u16,
        (key, vlan, seen): (&PacketKey, u16, Seen),
        in_id: Option<u16>,
        d: crate::pipeline::Dest,
    ) -> String {
        use crate::pipeline::Dest;
        match d {
            Dest::Normal => {
                // As `readmit`: a tag the actions changed is admitted again, as at ingress.
                let port = in_id.and_then(|p| self.dp.port(p));
                let before = (vlan, key.vlan != NO_VLAN);
                let vlan = match port {
                    Some(p) => {
                        let now = (seen.vlan, seen.tagged);
                        match crate::pipeline::flows::normal_vlan(&p.vlan, before, now, || seen.tag)
                        {
                            Some(v) => v,
                            None if matches!(p.vlan, crate::datapath::VlanMode::Access(_)) => {
                                // As OVS: any tag on an access port (its own VLAN's too).
                                return format!(
                                    "    -> normal: a frame tagged (VLAN {}) from access port {} \
                                     ({}) -> drop (vlan-denied)",
                                    seen.tag.unwrap_or(0),
                                    p.name,
                                    p.vlan.describe()
                                );
                            }
                            None => {
                                let what = seen
                                    .tag
                                    .map_or("untagged frames".into(), |v| format!("VLAN {v}"));
                                return format!(
                                    "    -> normal: port {} ({}) does not carry {what} -> drop \
                                     (vlan-denied)",
                                    p.name,
                                    p.vlan.describe()
                                );
                            }
                        }
                    }
                    None => seen.vlan,
                };
                let key = PacketKey {
                    dl_dst: seen.dst,
                    ..*key
                };
                format!("    -> {}", self.trace_normal(b, (&key, vlan), in_id))
            }
            Dest::Port(p) if Some(p) == in_id => {
                format!("    -> back out of the ingress port {}", self.port_name(p))
            }
            Dest::Port(p) => self.unless_no_fwd(
                p,
                format!(
                    "    -> output to port {} ({})",
                    self.dp.port(p).map_or(0, |s| s.ofport),
                    self.port_name(p)
                ),
            ),
            Dest::Flood => "    -> flood to every other port (not those set no-flood)".into(),
            Dest::All => "    -> to every other port".into(),
            other => format!("    -> {other:?}"),
        }
    }

    /// Where NORMAL sends the traced packet, admitted to `vlan` at ingress.
    fn trace_normal(&self, b: u16, (key, vlan): (&PacketKey, u16), in_id: Option<u16>) -> String {
        let br = self.dp.bridge(b).expect("checked");
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
            Some(p) if Some(p) == in_id => {
                "normal: destination learned on the ingress port -> drop".into()
            }
            Some(p) => self.unless_no_fwd(
                p,
                format!(
                    "normal: {} learned on port {} (VLAN {vlan}) -> output {}",
                    MacAddr::from_u64(key.dl_dst),
                    self.port_name(p),
                    self.port_name(p)
                ),
            ),
            None => format!(
                "normal: {} unknown in VLAN {vlan} -> flood",
                MacAddr::from_u64(key.dl_dst)
            ),
        }
    }

    /// A trace's output `line` to port `p`, with the drop when `mod-port` set it `down` or
    /// `no-forward`.
    fn unless_no_fwd(&self, p: u16, line: String) -> String {
        match self.dp.port(p).filter(|s| s.config.drops_tx()) {
            Some(s) => format!(
                "{line}: set {} -> drop (port-no-fwd)",
                s.config.words().join(",")
            ),
            None => line,
        }
    }

    fn port_name(&self, id: u16) -> String {
        self.dp
            .port(id)
            .map_or(format!("#{id}"), |p| p.name.clone())
    }
}

/// Patch ports a trace follows into the peer bridges (a loop of them is shown this deep).
const TRACE_PATCH_DEPTH: usize = 8;
/// Patch crossings one trace follows in all (floods branch).
const TRACE_PATCH_CROSSINGS: usize = 32;

/// What a trace run reports, in order.
#[derive(Default)]
struct TraceLog {
    items: Vec<Item>,
}

impl TraceLog {
    /// The lines so far, for a trace that ends before any decision is carried out.
    fn into_lines(self) -> Vec<String> {
        self.items
            .into_iter()
            .filter_map(|it| match it {
                Item::Line(l) => Some(l),
                Item::Sent(..) => None,
            })
            .collect()
    }
}

enum Item {
    Line(String),
    Sent(crate::pipeline::Dest, Seen),
}

/// The traced frame as it was when a decision was carried out (the actions may have changed
/// its destination MAC or its tag since ingress).
#[derive(Clone, Copy)]
struct Seen {
    dst: u64,
    /// The VLAN and tag state the pipeline had for it (ingress's until an action changed it).
    vlan: u16,
    tagged: bool,
    /// Its 802.1Q id as it is now (None: untagged).
    tag: Option<u16>,
}

impl crate::pipeline::flows::Tracer for TraceLog {
    const DRY: bool = true;
    fn line(&mut self, f: impl FnOnce() -> String) {
        self.items.push(Item::Line(f()));
    }
    fn sent(
        &mut self,
        dest: crate::pipeline::Dest,
        m: &crate::pipeline::Meta,
        frames: &crate::packet::Frames,
    ) {
        let tag = crate::pipeline::flows::tag_of(frames, m);
        let (dst, vlan, tagged) = (m.dst, m.vlan, m.tagged);
        let seen = Seen {
            dst,
            vlan,
            tagged,
            tag,
        };
        self.items.push(Item::Sent(dest, seen));
    }
}

/// Build the frame a trace key describes (Ethernet, an 802.1Q tag if it has a VLAN, and IPv4
/// with TCP/UDP/ICMP headers, or ARP), with its pipeline metadata.
fn trace_frame(
    frames: &mut crate::packet::Frames,
    k: &PacketKey,
    ext: &crate::flow::ExtMatch,
) -> Option<(crate::packet::Desc, crate::pipeline::Meta)> {
    let mut b = Vec::with_capacity(128);
    b.extend_from_slice(&MacAddr::from_u64(k.dl_dst).0);
    b.extend_from_slice(&MacAddr::from_u64(k.dl_src).0);
    let tagged = k.vlan != crate::flow::NO_VLAN;
    if tagged {
        b.extend_from_slice(&0x8100u16.to_be_bytes());
        b.extend_from_slice(&(((k.vlan_pcp as u16) << 13) | k.vlan).to_be_bytes());
    }
    b.extend_from_slice(&k.dl_type.to_be_bytes());
    let l3 = b.len();
    match k.dl_type {
        crate::wire::EtherType::IPV4 => {
            let l4: Vec<u8> = match k.nw_proto {
                6 => {
                    let mut t = vec![0u8; 20];
                    t[0..2].copy_from_slice(&k.tp_src.to_be_bytes());
                    t[2..4].copy_from_slice(&k.tp_dst.to_be_bytes());
                    // SYN, or the flags the traced match names.
                    let flags = ext
                        .get(crate::flow::ExtField::TcpFlags)
                        .map_or(0x002, |f| f.value as u16);
                    t[12] = 0x50 | (flags >> 8) as u8 & 0x0f;
                    t[13] = flags as u8;
                    t
                }
                17 => {
                    let mut t = vec![0u8; 8];
                    t[0..2].copy_from_slice(&k.tp_src.to_be_bytes());
                    t[2..4].copy_from_slice(&k.tp_dst.to_be_bytes());
                    t[4..6].copy_from_slice(&8u16.to_be_bytes());
                    t
                }
                1 => vec![k.tp_src as u8, k.tp_dst as u8, 0, 0, 0, 0, 0, 0],
                _ => Vec::new(),
            };
            let mut ip = [0u8; 20];
            ip[0] = 0x45;
            ip[1] = k.nw_tos;
            ip[2..4].copy_from_slice(&((20 + l4.len()) as u16).to_be_bytes());
            ip[8] = ext
                .get(crate::flow::ExtField::NwTtl)
                .map_or(64, |t| t.value as u8);
            ip[9] = k.nw_proto;
            // ip_frag: a first fragment has MF set, a later one an offset.
            ip[6] = if k.nw_frag & 2 != 0 {
                0
            } else {
                (k.nw_frag & 1) << 5
            };
            ip[7] = (k.nw_frag >> 1) & 1;
            ip[12..16].copy_from_slice(&k.nw_src.to_be_bytes());
            ip[16..20].copy_from_slice(&k.nw_dst.to_be_bytes());
            let c = crate::wire::checksum::checksum(&ip);
            ip[10..12].copy_from_slice(&c.to_be_bytes());
            b.extend_from_slice(&ip);
            b.extend_from_slice(&l4);
        }
        crate::wire::EtherType::ARP => {
            let mut a = [0u8; 28];
            a[0..8].copy_from_slice(&[0, 1, 8, 0, 6, 4, 0, k.nw_proto.max(1)]);
            a[8..14].copy_from_slice(&MacAddr::from_u64(k.dl_src).0);
            a[14..18].copy_from_slice(&k.nw_src.to_be_bytes());
            a[24..28].copy_from_slice(&k.nw_dst.to_be_bytes());
            b.extend_from_slice(&a);
        }
        _ => b.extend(crate::pipeline::flows::trace_l3(k, ext)),
    }
    b.resize(b.len().max(60), 0);
    let mut d = frames.alloc()?;
    d.len = b.len() as u32;
    frames.data_mut(d).copy_from_slice(&b);
    let m = crate::pipeline::Meta {
        desc: d,
        vlan: if tagged { k.vlan } else { 0 },
        tagged,
        dst: k.dl_dst,
        src: k.dl_src,
        ethertype: k.dl_type,
        l3: l3 as u8,
        dest: crate::pipeline::Dest::Normal,
        raw: false,
    };
    Some((d, m))
}

fn describe_key(
    k: &PacketKey,
    ext: &crate::flow::ExtMatch,
    ft: &crate::pipeline::flows::FlowTable,
) -> String {
    use crate::flow::ExtField;
    // IPv6 addresses are in the match's ext fields (the key's IPv4 ones are 0 then).
    let (src, dst) = if k.dl_type == crate::wire::EtherType::IPV6 {
        let v6 = |f: ExtField| std::net::Ipv6Addr::from(ext.get(f).map_or(0, |m| m.value));
        (
            format!("ipv6_src={}", v6(ExtField::Ipv6Src)),
            format!("ipv6_dst={}", v6(ExtField::Ipv6Dst)),
        )
    } else {
        (
            format!("nw_src={}", std::net::Ipv4Addr::from(k.nw_src)),
            format!("nw_dst={}", std::net::Ipv4Addr::from(k.nw_dst)),
        )
    };
    format!(
        "in_port={} dl_src={} dl_dst={} dl_type=0x{:04x} {src} {dst} nw_proto={} tp_src={} tp_dst={}",
        ft.ports
            .name_of(k.in_port)
            .map_or(k.in_port.to_string(), |n| format!("{}({n})", k.in_port)),
        MacAddr::from_u64(k.dl_src),
        MacAddr::from_u64(k.dl_dst),
        k.dl_type,
        k.nw_proto,
        k.tp_src,
        k.tp_dst
    )
}
