//! The running configuration: what the worker holds, written back as a [`Config`] in the
//! `--config` file format (for the database and `uvs ctl save-config`).
//!
//! Contract: applying the returned `Config` to an empty switch (bridges, then ports, routes,
//! NAT rules, meters, flows, static FDB entries) rebuilds the same configuration, and asking
//! again gives an equal value. Learned state (dynamic FDB entries, neighbours, connections,
//! counters) is not part of it. Bridges come in creation order, ports in the order they joined
//! their bridge, routes in table order, NAT rules in rule order, flows in `dump-flows` order
//! (without counters), meters by id, FDB entries sorted by port, VLAN, MAC.

use std::collections::HashMap;

use super::Worker;
use crate::config::{BridgeSpec, Config, FdbSpec, NatSpec, PortSpec, RouteSpec};

/// The specs the running configuration is made of that the datapath does not keep itself.
#[derive(Default)]
pub(crate) struct Specs {
    /// Bridge specs by name, without ports, flows, meters or FDB entries (the datapath has
    /// those); the gateway comes from the datapath too (`set-br` changes it).
    pub bridges: HashMap<String, BridgeSpec>,
    /// Port specs by port id.
    pub ports: HashMap<u16, PortSpec>,
    /// What control-plane adapters programmed (left out of the running configuration).
    pub derived: super::overlay::Derived,
    /// Connected OpenFlow controllers by bridge (derived, not configuration).
    pub connected: HashMap<String, Vec<String>>,
}

impl Specs {
    /// Remember a bridge's spec (its options) when it is created.
    pub fn add_bridge(&mut self, spec: &BridgeSpec) {
        let mut b = spec.clone();
        b.port.clear();
        b.flows = None;
        b.meters = None;
        b.groups = None;
        b.fdb = None;
        self.bridges.insert(b.name.clone(), b);
    }
}

impl Worker {
    /// The running configuration (see the module documentation).
    pub(crate) fn running_config(&self) -> Config {
        let mut c = Config::default();
        for (id, br) in self.dp.bridges() {
            let mut b = self
                .specs
                .bridges
                .get(&br.name)
                .cloned()
                .unwrap_or_else(|| BridgeSpec::new(&br.name));
            b.aging = br.aging;
            b.fdb_capacity = br.fdb.capacity();
            b.isolated = br.isolated;
            b.icc = br.icc;
            b.rp_filter = br.rp_filter;
            let derived_gw = self.specs.derived.gateways.contains(&br.name);
            b.gateway = br
                .gateway
                .filter(|_| !derived_gw)
                .map(super::requests::gateway_text);
            b.gateway_mac = br
                .gateway
                .filter(|_| !derived_gw)
                .map(|g| g.mac)
                .filter(|m| {
                    *m != crate::datapath::Gateway::host_mac(crate::host::host_id(), &br.name)
                })
                .map(|m| m.to_string());
            b.port = br
                .ports
                .iter()
                .filter_map(|p| {
                    // The port's number is part of its configuration: flows refer to it.
                    let mut spec = self.specs.ports.get(p).cloned()?;
                    // LOCAL is given again by the port's name (and is no number to request).
                    spec.ofport_request = self
                        .dp
                        .port(*p)
                        .map(|st| st.ofport)
                        .filter(|&n| n != crate::ofport::OFPP_LOCAL);
                    Some(spec)
                })
                .collect();
            b.flows = Some(self.flow_lines(id));
            let meters: Vec<String> = br
                .flows
                .meters
                .iter()
                .map(|(m, x)| {
                    format!(
                        "meter={m},kbps,band=type=drop,rate={},burst_size={}",
                        x.rate_kbps, x.burst_kbits
                    )
                })
                .collect();
            b.meters = Some(meters).filter(|m| !m.is_empty());
            let groups: Vec<String> = br.flows.groups.values().map(|g| g.to_string()).collect();
            b.groups = Some(groups).filter(|g| !g.is_empty());
            b.mirrors = Some(self.observe.mirror_specs(id)).filter(|m| !m.is_empty());
            let fdb: Vec<FdbSpec> = self
                .dp
                .fdb_static_rows(id)
                .into_iter()
                .filter(|r| {
                    let mac = r.mac.parse::<crate::wire::MacAddr>().map(|m| m.to_u64());
                    !mac.is_ok_and(|m| self.specs.derived.fdb.contains(&(id, m)))
                })
                .map(|r| FdbSpec {
                    mac: r.mac,
                    port: r.port,
                    vlan: r.vlan,
                    remote_ip: r.remote,
                })
                .collect();
            b.fdb = Some(fdb).filter(|f| !f.is_empty());
            c.bridge.push(b);
        }
        for r in self.dp.routes.iter() {
            if self
                .specs
                .derived
                .routes
                .contains(&(u32::from(r.prefix), r.len))
            {
                continue;
            }
            if let crate::route::RouteKind::Via { gateway, .. } = r.kind {
                c.route.push(RouteSpec {
                    prefix: format!("{}/{}", r.prefix, r.len),
                    via: gateway.to_string(),
                });
            }
        }
        let names = |b: u16| {
            self.dp
                .bridge(b)
                .map(|b| b.name.clone())
                .unwrap_or_default()
        };
        for row in self.dp.nat.rows(names) {
            let args: Vec<String> = row.rule.split_whitespace().map(str::to_string).collect();
            match NatSpec::from_args(&args) {
                Ok(n) => c.nat.push(n),
                Err(e) => tracing::warn!("running config: NAT rule '{}': {e}", row.rule),
            }
        }
        let ports = self.dp.nat.dnat_ports();
        c.nat_port_range =
            (ports != crate::nat::DEFAULT_DNAT_PORTS).then(|| crate::nat::port_range_text(&ports));
        c.dns = self.dns_specs();
        c
    }

    /// A bridge's flows as `add-flow` text, in `dump-flows` order, without counters.
    fn flow_lines(&self, b: u16) -> Vec<String> {
        let Some(br) = self.dp.bridge(b) else {
            return Vec::new();
        };
        br.flows.cls.config_lines()
    }
}
