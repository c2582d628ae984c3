//! The store: the one writer of the running configuration. Every change goes through it, one
//! at a time; it applies configurations (at start and on reload) as a difference against what
//! runs, and keeps the database equal to the last acknowledged state.
//!
//! Contract:
//! - [`Store::change`] holds the store's lock while it runs a change and, if the change
//!   succeeded, writes the running configuration to the database before it returns: a client
//!   is answered only once its change is on disk, and changes never interleave.
//! - [`Store::apply`] makes the running configuration equal to a validated [`Config`]: removes
//!   what the file lacks (NAT rules, routes, ports, bridges), adds what is new, replaces what
//!   changed. Per bridge, `flows`, `meters` and `fdb` apply only when the file has the key
//!   (flows are replaced as a whole table; meters and static FDB entries are added or
//!   replaced, never removed). Each step is logged.
//! - A port that cannot be opened (its netdev is missing), and the flows and static FDB
//!   entries that need it, do not stop the rest: they are logged and kept *pending*, part of
//!   the running configuration written to the database, until their bridge is deleted, the
//!   port is deleted with `del-port`, or a port of that name is added; every apply (a SIGHUP
//!   reload) tries them again, and so does the daemon by itself when a pending AF_XDP or
//!   AF_PACKET port's netdev exists ([`Store::pending_ready`], every 2 s, backing off to a
//!   minute while the retries fail).

use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::Value;
use tracing::{info, warn};

use super::db::Db;
use super::registry::{CtlError, Journal, Reply};
use crate::config::{BridgeSpec, Config, FdbSpec, PortSpec};
use crate::worker::{Command, WorkerHandle};

/// Configuration kept in the database that the switch could not apply (see the module docs).
#[derive(Debug, Default)]
struct Pending {
    /// (bridge, port).
    ports: Vec<(String, PortSpec)>,
    /// (bridge, flow text).
    flows: Vec<(String, String)>,
    /// (bridge, entry).
    fdb: Vec<(String, FdbSpec)>,
    /// Why each pending port did not open (its last error), by name.
    why: std::collections::HashMap<String, String>,
    /// Deferred changes (`later` of [`Journal::change`]) not written to the database yet.
    unsaved: bool,
}

/// What [`Store::apply`] did.
#[derive(Debug, Default)]
pub struct Applied {
    /// One line per change made ("+ bridge br1", "- route 10.9.0.0/16 via 10.0.0.2").
    pub changes: Vec<String>,
    /// Steps that failed and were not kept pending.
    pub errors: Vec<String>,
    /// Ports that could not be added and are kept pending (tried again at the next SIGHUP, or
    /// when their netdev appears), with why.
    pub pending: Vec<String>,
    /// Bridges whose new ports were added held (`PortSpec::hold`), released once their
    /// flow tables are in.
    held: Vec<String>,
}

impl Applied {
    /// Record the outcome of one step.
    fn step(&mut self, r: Result<Value, String>, what: String) {
        match r {
            Ok(_) => self.changes.push(what),
            Err(e) => self.errors.push(format!("{what}: {e}")),
        }
    }
}

/// How long the flusher waits after a deferred change before it writes the database, so a
/// controller's stream of FLOW_MODs is written once, not once per message.
pub const FLUSH_DELAY: std::time::Duration = std::time::Duration::from_millis(50);

/// The single writer of the configuration.
pub struct Store {
    worker: Arc<WorkerHandle>,
    db: Option<Db>,
    pending: Mutex<Pending>,
    /// Wakes the flusher thread ([`Store::start_flusher`]) after a deferred change.
    flusher: std::sync::OnceLock<crossbeam_channel::Sender<()>>,
}

impl Store {
    /// A store for `worker`, persisting to `db` (None: nothing persists).
    pub fn new(worker: Arc<WorkerHandle>, db: Option<Db>) -> Store {
        Store {
            worker,
            db,
            pending: Mutex::new(Pending::default()),
            flusher: std::sync::OnceLock::new(),
        }
    }

    /// Start the thread that writes deferred changes (`later` of [`Journal::change`]) to the
    /// database [`FLUSH_DELAY`] after the first of them (no-op without a database, or when
    /// started already). Without it deferred changes are written at once. The thread ends
    /// with the store.
    pub fn start_flusher(self: &Arc<Self>) -> std::io::Result<()> {
        if self.db.is_none() || self.flusher.get().is_some() {
            return Ok(());
        }
        let (wake, woken) = crossbeam_channel::bounded::<()>(1);
        let store = Arc::downgrade(self);
        std::thread::Builder::new()
            .name("uvs-db-flush".into())
            .spawn(move || {
                let mut failed = crate::log_limit::LogLimit::default();
                for () in woken.iter() {
                    std::thread::sleep(FLUSH_DELAY);
                    let Some(s) = store.upgrade() else { return };
                    if let Err(e) = Journal::sync(&*s)
                        && let Some(held) = failed.admit(std::time::Instant::now())
                    {
                        tracing::error!(
                            "the database could not be written: {e} ({held} more failures \
                             since the last line); the changes run and are written with the \
                             next one"
                        );
                    }
                }
            })?;
        let _ = self.flusher.set(wake);
        Ok(())
    }

    fn lock(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The running configuration, pending parts included.
    pub fn running(&self) -> Result<Config, String> {
        let p = self.lock();
        self.running_locked(&p)
    }

    fn running_locked(&self, p: &Pending) -> Result<Config, String> {
        let v = self.worker.call(Command::RunningConfig)?;
        let mut c: Config = serde_json::from_value(v).map_err(|e| e.to_string())?;
        for b in &mut c.bridge {
            for (_, s) in p.ports.iter().filter(|(x, _)| *x == b.name) {
                b.port.push(s.clone());
            }
            let flows: Vec<String> = p
                .flows
                .iter()
                .filter(|(x, _)| *x == b.name)
                .map(|(_, f)| f.clone())
                .collect();
            if !flows.is_empty() {
                b.flows.get_or_insert_with(Vec::new).extend(flows);
            }
            let fdb: Vec<FdbSpec> = p
                .fdb
                .iter()
                .filter(|(x, _)| *x == b.name)
                .map(|(_, f)| f.clone())
                .collect();
            if !fdb.is_empty() {
                b.fdb.get_or_insert_with(Vec::new).extend(fdb);
            }
        }
        Ok(c)
    }

    /// Write the running configuration to the database (no-op without one).
    fn commit(&self, p: &mut Pending) -> Result<(), String> {
        if self.db.is_none() && p.ports.is_empty() && p.flows.is_empty() && p.fdb.is_empty() {
            // Nothing to prune or write: the running configuration (every flow as text,
            // formatted on the worker) is not needed. It was asked for on every change, so a
            // controller's FLOW_MODs one by one cost O(table) each.
            self.publish_pending(p);
            return Ok(());
        }
        let running = self.running_locked(p)?;
        // Forget pending parts whose bridge is gone or whose port now runs.
        let has_bridge = |b: &str| running.bridge.iter().any(|x| x.name == b);
        // `running` lists a pending port that also runs twice (once from the worker).
        let runs = |n: &str| {
            running
                .bridge
                .iter()
                .flat_map(|b| &b.port)
                .filter(|s| s.name == n)
                .count()
                > 1
        };
        let before = (p.ports.len(), p.flows.len(), p.fdb.len());
        p.ports.retain(|(b, s)| has_bridge(b) && !runs(&s.name));
        p.flows.retain(|(b, _)| has_bridge(b));
        p.fdb.retain(|(b, _)| has_bridge(b));
        let running = if before != (p.ports.len(), p.flows.len(), p.fdb.len()) {
            self.running_locked(p)?
        } else {
            running
        };
        self.publish_pending(p);
        let Some(db) = &self.db else { return Ok(()) };
        db.save(&running.to_toml()?)?;
        p.unsaved = false;
        Ok(())
    }

    /// Tell the worker handle which ports are pending and why (`show`, `stats`, metrics).
    fn publish_pending(&self, p: &mut Pending) {
        p.why
            .retain(|name, _| p.ports.iter().any(|(_, s)| s.name == *name));
        let ports = p
            .ports
            .iter()
            .map(|(b, s)| crate::worker::pending::PendingPort {
                bridge: b.clone(),
                name: s.name.clone(),
                kind: s.kind.to_string(),
                reason: p.why.get(&s.name).cloned().unwrap_or_default(),
            })
            .collect();
        self.worker.set_pending(ports);
    }

    /// True when a pending port could open now: its netdev exists (AF_XDP, AF_PACKET ports;
    /// the container's veth appeared, or the previous socket on it is gone). The daemon asks
    /// every few seconds and then calls [`Store::retry_pending`].
    pub fn pending_ready(&self) -> bool {
        self.lock().ports.iter().any(|(_, s)| {
            s.kind.on_netdev()
                && std::path::Path::new("/sys/class/net")
                    .join(&s.name)
                    .exists()
        })
    }

    /// Apply the running configuration again, pending parts included (as a reload with an
    /// unchanged file does), and write the database: pending ports, and the flows and FDB
    /// entries waiting for them, are tried again.
    /// One lock throughout, so no client change slips in between.
    pub fn retry_pending(&self) -> Result<Applied, String> {
        let mut p = self.lock();
        let running = self.running_locked(&p)?;
        let a = self.apply_locked(&mut p, &running);
        self.commit(&mut p)?;
        Ok(a)
    }

    /// Write the database now (after the start-up apply).
    pub fn save(&self) -> Result<(), String> {
        let mut p = self.lock();
        self.commit(&mut p)
    }

    /// Make the running configuration equal to `new` (see the module documentation). The
    /// caller writes the database afterwards with [`Store::save`] (at start only if it all
    /// applied).
    pub fn apply(&self, new: &Config) -> Applied {
        let mut p = self.lock();
        self.apply_locked(&mut p, new)
    }

    /// SIGHUP: [`Store::apply`] `file`, keeping what the CNI plugin's containers use when the
    /// file does not name it ([`super::containers::keep_containers`]); also returns one line
    /// per thing kept.
    pub fn reload(&self, file: &Config) -> (Applied, Vec<String>) {
        let mut p = self.lock();
        self.apply_keeping(&mut p, file, true)
    }

    fn apply_locked(&self, p: &mut Pending, new: &Config) -> Applied {
        self.apply_keeping(p, new, false).0
    }

    /// [`Store::apply`] `new`, with the CNI plugin's containers kept when `keep` (SIGHUP), the
    /// running configuration read once for both.
    fn apply_keeping(&self, p: &mut Pending, new: &Config, keep: bool) -> (Applied, Vec<String>) {
        let mut out = Applied::default();
        let (merged, old) = match (
            self.running_locked(p),
            self.running_locked(&Pending::default()),
        ) {
            (Ok(m), Ok(o)) => (m, o),
            (Err(e), _) | (_, Err(e)) => {
                out.errors.push(e);
                return (out, Vec::new());
            }
        };
        let (mut new, kept) = if keep {
            super::containers::keep_containers(&merged, new)
        } else {
            (new.clone(), Vec::new())
        };
        // Pending parts are tried again: diff against what really runs; a bridge whose file
        // entry leaves its flows or FDB entries alone keeps them, pending ones included.
        for nb in &mut new.bridge {
            let mine = |b: &String| *b == nb.name;
            if nb.flows.is_none() && p.flows.iter().any(|(b, _)| mine(b)) {
                nb.flows = find(&merged, &nb.name).and_then(|b| b.flows.clone());
            }
            if nb.fdb.is_none() && p.fdb.iter().any(|(b, _)| mine(b)) {
                nb.fdb = find(&merged, &nb.name).and_then(|b| b.fdb.clone());
            }
        }
        // A port the file gives no OpenFlow number keeps the one it has: without this, every
        // such port compared unequal with the running one (which names its number) and a
        // reload of an unchanged file deleted and re-added it (a TAP device deleted under its
        // container).
        // (Unless the file gives that number to another port: then this one is re-added.)
        for nb in &mut new.bridge {
            let Some(ob) = find(&old, &nb.name) else {
                continue;
            };
            let asked: Vec<u16> = nb.port.iter().filter_map(|x| x.ofport_request).collect();
            for np in nb.port.iter_mut().filter(|np| np.ofport_request.is_none()) {
                if let Some(op) = ob.port.iter().find(|op| op.name == np.name)
                    && op.ofport_request.is_none_or(|n| !asked.contains(&n))
                {
                    np.ofport_request = op.ofport_request;
                }
            }
        }
        *p = Pending::default();
        self.apply_diff(p, &old, &new, &mut out);
        self.publish_pending(p);
        (out, kept)
    }

    fn call(&self, cmd: Command) -> Result<Value, String> {
        self.worker.call(cmd)
    }

    fn apply_diff(&self, p: &mut Pending, old: &Config, new: &Config, out: &mut Applied) {
        // A bridge that goes or changes its gateway must first lose the static
        // routes through it (they come back below if the new configuration has them).
        for r in &old.route {
            let Ok((_, _, via)) = r.parsed() else {
                continue;
            };
            let through = old.bridge.iter().find(|b| {
                b.gateway()
                    .ok()
                    .flatten()
                    .is_some_and(|g| g.on_subnet(via.octets()))
            });
            if let Some(b) = through
                && find(new, &b.name).is_none_or(|nb| nb.gateway != b.gateway)
            {
                let what = format!("- route {} via {}", r.prefix, r.via);
                out.step(self.call(Command::RouteDel(r.prefix.clone())), what);
            }
        }
        // Likewise the NAT rules on the gateway address of a bridge whose gateway changes
        // (masquerade translates to it, a port mapping listens on it): the switch refuses the
        // change while they are there; they come back below, on the new address.
        let moved = |name: &Option<String>| {
            let name = name.as_deref().unwrap_or_default();
            find(old, name)
                .is_some_and(|b| find(new, name).is_none_or(|nb| nb.gateway != b.gateway))
        };
        for (i, n) in old.nat.iter().enumerate().rev() {
            let uses = match n.kind.as_str() {
                "masquerade" => moved(&n.out),
                "dnat" => moved(&n.inb),
                _ => false,
            };
            if uses {
                out.step(self.call(Command::NatDel(i)), format!("- nat #{i}"));
            }
        }
        self.bridges_diff(p, old, new, out);
        // Removing or re-creating a bridge also removed its routes and NAT rules: compare
        // those (and the tables) with what runs now.
        let now = match self.running_locked(p) {
            Ok(c) => c,
            Err(e) => return out.errors.push(e),
        };
        for r in now.route.iter().filter(|r| !new.route.contains(r)) {
            let what = format!("- route {} via {}", r.prefix, r.via);
            out.step(self.call(Command::RouteDel(r.prefix.clone())), what);
        }
        for r in new.route.iter().filter(|r| !now.route.contains(r)) {
            let what = format!("+ route {} via {}", r.prefix, r.via);
            out.step(self.call(Command::RouteAdd(r.clone())), what);
        }
        if now.nat_port_range != new.nat_port_range {
            let text = new.nat_port_range.as_deref().unwrap_or("default");
            let range = match &new.nat_port_range {
                Some(t) => crate::nat::parse_port_range("nat_port_range", t),
                None => Ok(crate::nat::DEFAULT_DNAT_PORTS),
            };
            let r = range.and_then(|r| self.call(Command::SetNatPorts(r)));
            out.step(r, format!("~ nat_port_range {text}"));
        }
        // NAT rules apply in order: keep the common leading run, replace the rest.
        let keep = now
            .nat
            .iter()
            .zip(&new.nat)
            .take_while(|(a, b)| a == b)
            .count();
        for i in (keep..now.nat.len()).rev() {
            out.step(self.call(Command::NatDel(i)), format!("- nat #{i}"));
        }
        for n in &new.nat[keep..] {
            let what = format!("+ nat {}", n.kind);
            out.step(self.call(Command::NatAdd(n.clone())), what);
        }
        for nb in &new.bridge {
            let ob = now.bridge.iter().find(|b| b.name == nb.name);
            self.tables_diff(p, ob, nb, out);
            if out.held.contains(&nb.name) {
                // Whatever the table's steps did: a held port must not wait for its timeout.
                if let Err(e) = self.call(Command::ReleasePorts(nb.name.clone())) {
                    out.errors
                        .push(format!("release the ports of bridge {}: {e}", nb.name));
                }
            }
        }
        self.dns_diff(&now, new, out);
    }

    /// DNS names: remove those `new` lacks, add or replace the rest.
    fn dns_diff(&self, now: &Config, new: &Config, out: &mut Applied) {
        use crate::worker::DnsCmd;
        let same = |a: &crate::dns::DnsSpec, b: &crate::dns::DnsSpec| {
            a.bridge == b.bridge && a.name.eq_ignore_ascii_case(&b.name)
        };
        for d in now
            .dns
            .iter()
            .filter(|d| !new.dns.iter().any(|n| same(d, n)))
        {
            let cmd = DnsCmd::Del {
                bridge: d.bridge.clone(),
                name: d.name.clone(),
                ip: None,
            };
            let what = format!("- dns {} on {}", d.name, d.bridge);
            out.step(self.call(Command::Dns(cmd)), what);
        }
        for d in new.dns.iter().filter(|d| !now.dns.contains(d)) {
            let what = format!("+ dns {} {} on {}", d.name, d.ip, d.bridge);
            out.step(self.call(Command::Dns(DnsCmd::Add(d.clone()))), what);
        }
    }

    /// Bridges and ports: remove what `new` lacks, re-create bridges whose options changed,
    /// change gateways in place, add what is new.
    fn bridges_diff(&self, p: &mut Pending, old: &Config, new: &Config, out: &mut Applied) {
        // A bridge the file keeps (by name) is changed in place, its options with `set-br`
        // below: its ports that go or change go first, then the bridges that go.
        for b in &old.bridge {
            if let Some(nb) = find(new, &b.name) {
                self.ports_del(p, b, nb, out);
            }
        }
        // Those holding tunnels before the underlays they ride.
        let mut going: Vec<&BridgeSpec> = old.bridge.iter().collect();
        going.sort_by_key(|b| {
            !b.port
                .iter()
                .any(|s| s.kind == crate::port::PortKind::Vxlan)
        });
        for b in going {
            match find(new, &b.name) {
                Some(_) => {}
                None => {
                    let r = self.call(Command::DelBridge(b.name.clone()));
                    out.step(r, format!("- bridge {}", b.name));
                    p.ports.retain(|(x, _)| *x != b.name);
                    p.flows.retain(|(x, _)| *x != b.name);
                    p.fdb.retain(|(x, _)| *x != b.name);
                }
            }
        }
        let empty = |n: &str| BridgeSpec::new(n);
        let mut base = Vec::new();
        for nb in &new.bridge {
            match find(old, &nb.name) {
                Some(ob) => {
                    if ob.gateway != nb.gateway || ob.gateway_mac != nb.gateway_mac {
                        let what = format!("~ bridge {} gateway {:?}", nb.name, nb.gateway);
                        let r = nb.gateway().and_then(|g| {
                            self.call(Command::SetGateway {
                                bridge: nb.name.clone(),
                                gateway: g,
                            })
                        });
                        out.step(r, what);
                    }
                    if (ob.isolated, ob.icc, ob.rp_filter, ob.aging, ob.fdb_capacity)
                        != (nb.isolated, nb.icc, nb.rp_filter, nb.aging, nb.fdb_capacity)
                    {
                        let what = format!("~ bridge {} options", nb.name);
                        let r = self.call(Command::SetBridgeOptions {
                            bridge: nb.name.clone(),
                            isolated: Some(nb.isolated),
                            icc: Some(nb.icc),
                            rp_filter: Some(nb.rp_filter),
                            aging: Some(nb.aging),
                            fdb_capacity: Some(nb.fdb_capacity),
                        });
                        out.step(r, what);
                    }
                    if let Some(c) = openflow_change(ob, nb) {
                        let what = format!("~ bridge {} openflow", nb.name);
                        out.step(self.call(c), what);
                    }
                    base.push(ob.clone());
                }
                None => {
                    let r = self.call(Command::AddBridge(bare(nb)));
                    let ok = r.is_ok();
                    out.step(r, format!("+ bridge {}", nb.name));
                    base.push(if ok { empty(&nb.name) } else { nb.clone() });
                }
            }
        }
        // Ports once every bridge and gateway is there (a vxlan port needs its uplink's).
        for (ob, nb) in base.iter().zip(&new.bridge) {
            self.ports_add(p, ob, nb, out);
        }
    }

    /// Remove the ports of `old` that `new` lacks or changes.
    fn ports_del(&self, p: &mut Pending, old: &BridgeSpec, new: &BridgeSpec, out: &mut Applied) {
        for s in old.port.iter().filter(|s| !new.port.contains(s)) {
            if new.port.iter().any(|n| rxq_change(s, n)) {
                continue; // changed live by `ports_add`
            }
            let what = format!("- port {} (bridge {})", s.name, old.name);
            let before = p.ports.len();
            p.ports.retain(|(_, x)| x.name != s.name);
            if p.ports.len() != before {
                out.changes.push(what);
                continue;
            }
            match self.call(Command::DelPort(s.name.clone())) {
                Ok(_) => out.changes.push(what),
                Err(e) => out.errors.push(format!("{what}: {e}")),
            }
        }
    }

    /// Add the ports `new` adds or changes; one that cannot be opened stays pending. Those
    /// that ask for an OpenFlow number go first, so a port that asks for none cannot take a
    /// number the file gives another (OVS reserves requested numbers the same way).
    fn ports_add(&self, p: &mut Pending, old: &BridgeSpec, new: &BridgeSpec, out: &mut Applied) {
        let mut adds: Vec<&PortSpec> = new.port.iter().filter(|s| !old.port.contains(s)).collect();
        adds.sort_by_key(|s| s.ofport_request.is_none());
        for s in adds {
            if old.port.iter().any(|o| rxq_change(o, s)) {
                let what = format!("~ port {} rxq_affinity (bridge {})", s.name, new.name);
                let r = self.call(Command::SetPortRxq {
                    port: s.name.clone(),
                    affinity: s.rxq_affinity.clone(),
                });
                out.step(r, what);
                continue;
            }
            let what = format!("+ port {} (bridge {})", s.name, new.name);
            // A bridge with a flow table: the port waits for the table (added below, in
            // `tables_diff`) before it carries anything.
            let hold = new.flows.as_ref().is_some_and(|f| !f.is_empty());
            match self.call(Command::AddPort {
                bridge: new.name.clone(),
                spec: PortSpec { hold, ..s.clone() },
            }) {
                Ok(_) => {
                    if hold && !out.held.contains(&new.name) {
                        out.held.push(new.name.clone());
                    }
                    out.changes.push(what)
                }
                Err(e) => {
                    warn!("{what}: {e}; kept in the configuration, pending");
                    out.pending.push(format!("{what}: {e}"));
                    p.ports.push((new.name.clone(), s.clone()));
                    p.why.insert(s.name.clone(), e);
                }
            }
        }
    }

    /// Flows, meters and static FDB entries of bridge `new` (see the module documentation).
    fn tables_diff(
        &self,
        p: &mut Pending,
        old: Option<&BridgeSpec>,
        new: &BridgeSpec,
        out: &mut Applied,
    ) {
        let b = &new.name;
        let canon_m = |t: &String| crate::flow::meter::canonical(t).unwrap_or_else(|| t.clone());
        let canon_g = |t: &String| {
            crate::flow::group::parse_group(t).map_or_else(|_| t.clone(), |g| g.to_string())
        };
        let old_meters = old.and_then(|o| o.meters.as_deref());
        for m in added(old_meters, new.meters.as_deref(), canon_m) {
            let what = format!("+ meter {m} (bridge {b})");
            let r = self.call(Command::MeterAdd {
                bridge: b.clone(),
                spec: m.clone(),
                write: crate::flow::EntryWrite::AddOrModify,
            });
            out.step(r, what);
        }
        let old_groups = old.and_then(|o| o.groups.as_deref());
        for g in added(old_groups, new.groups.as_deref(), canon_g) {
            let what = format!("+ group {g} (bridge {b})");
            let c = crate::worker::OfCommand::GroupAdd {
                bridge: b.clone(),
                group: g.clone(),
                write: crate::flow::EntryWrite::AddOrModify,
            };
            out.step(self.call(Command::Openflow(c)), what);
        }
        if let Some(flows) = &new.flows
            && old.and_then(|o| o.flows.as_ref()) != Some(flows)
            && !self.same_flows(b, old.and_then(|o| o.flows.as_deref()), flows)
        {
            self.replace_flows(p, b, flows, out);
        }
        self.mirrors_diff(old, new, out);
        let old_fdb = old.and_then(|o| o.fdb.clone()).unwrap_or_default();
        for e in new.fdb.iter().flatten().filter(|e| !old_fdb.contains(e)) {
            let what = format!("+ fdb {} port {} (bridge {b})", e.mac, e.port);
            let r = e.parsed().and_then(|(mac, vlan, remote)| {
                self.call(Command::FdbAdd {
                    bridge: b.clone(),
                    mac,
                    port: e.port.clone(),
                    vlan,
                    remote,
                })
            });
            match r {
                Ok(_) => out.changes.push(what),
                Err(err) if p.ports.iter().any(|(_, s)| s.name == e.port) => {
                    warn!("{what}: {err}; pending");
                    p.fdb.push((b.clone(), e.clone()));
                }
                Err(err) => out.errors.push(format!("{what}: {err}")),
            }
        }
    }

    /// Mirrors: those the old spec had and the new one lacks go, new ones are added (after
    /// ports and flows, since a mirror names ports).
    fn mirrors_diff(&self, old: Option<&BridgeSpec>, new: &BridgeSpec, out: &mut Applied) {
        use crate::observe::{ObserveCmd, mirror::MirrorSpec};
        let b = &new.name;
        let old_m = old.and_then(|o| o.mirrors.clone()).unwrap_or_default();
        let new_m = new.mirrors.clone().unwrap_or_default();
        for m in old_m.iter().filter(|m| !new_m.contains(m)) {
            let name = m.split_whitespace().next().unwrap_or_default().to_string();
            let what = format!("- mirror {name} (bridge {b})");
            let cmd = ObserveCmd::MirrorDel {
                bridge: b.clone(),
                name,
            };
            match self.call(Command::Observe(cmd)) {
                Ok(_) => out.changes.push(what),
                Err(e) => out.errors.push(format!("{what}: {e}")),
            }
        }
        for m in new_m.iter().filter(|m| !old_m.contains(m)) {
            let what = format!("+ mirror {m} (bridge {b})");
            let r = MirrorSpec::parse_text(b, m)
                .and_then(|s| self.call(Command::Observe(ObserveCmd::MirrorAdd(s))));
            match r {
                Ok(_) => out.changes.push(what),
                Err(e) => out.errors.push(format!("{what}: {e}")),
            }
        }
    }

    /// True if `flows` (a file's text) are the running flows `old` (the running configuration's
    /// text), in any order and spelling (`in_port=NAME` or a number, `table=0`, spaces): then a
    /// reload leaves the table, its counters and its flows' ages alone.
    fn same_flows(&self, b: &str, old: Option<&[String]>, flows: &[String]) -> bool {
        let Some(old) = old else { return false };
        let parsed: Result<Vec<_>, _> = flows.iter().map(|f| crate::flow::parse_flow(f)).collect();
        let Ok(parsed) = parsed else { return false };
        let canonical = self.call(Command::FlowsCanonical {
            bridge: b.to_string(),
            flows: parsed,
        });
        let Ok(Value::Array(new)) = canonical else {
            return false;
        };
        let mut new: Vec<&str> = new.iter().filter_map(Value::as_str).collect();
        let mut old: Vec<&str> = old.iter().map(String::as_str).collect();
        new.sort_unstable();
        old.sort_unstable();
        new == old
    }

    /// Replace bridge `b`'s flow table with `flows` in one worker request
    /// (`Command::FlowReplace`: no packet meets an empty or partial table); flows naming a
    /// pending port stay pending.
    fn replace_flows(&self, p: &mut Pending, b: &str, flows: &[String], out: &mut Applied) {
        // Texts that parse go to the worker (`sent[i]` is the text of the i-th); the others,
        // and those the worker refuses, are refused with their reason.
        let (mut parsed, mut sent, mut refused) = (Vec::new(), Vec::new(), Vec::new());
        for f in flows {
            match crate::flow::parse_flow(f) {
                Ok(flow) => {
                    parsed.push(flow);
                    sent.push(f);
                }
                Err(e) => refused.push((f, e.to_string())),
            }
        }
        let v = match self.call(Command::FlowReplace {
            bridge: b.to_string(),
            flows: parsed,
        }) {
            Ok(v) => v,
            // The running table is unchanged, and so is what waits for a pending port.
            Err(e) => return out.errors.push(format!("~ flows (bridge {b}): {e}")),
        };
        for r in v["refused"].as_array().into_iter().flatten() {
            let i = r[0].as_u64().unwrap_or(u64::MAX) as usize;
            if let Some(f) = sent.get(i) {
                refused.push((f, r[1].as_str().unwrap_or_default().to_string()));
            }
        }
        p.flows.retain(|(x, _)| x != b);
        let waits = p.ports.iter().any(|(x, _)| x == b);
        for (f, e) in refused {
            if waits {
                warn!("flow '{f}' (bridge {b}): {e}; pending");
                p.flows.push((b.to_string(), f.clone()));
            } else {
                out.errors.push(format!("+ flow '{f}' (bridge {b}): {e}"));
            }
        }
        out.changes
            .push(format!("~ flows (bridge {b}): {} flows", v["added"]));
    }
}

fn find<'a>(c: &'a Config, name: &str) -> Option<&'a BridgeSpec> {
    c.bridge.iter().find(|b| b.name == name)
}

/// True if port specs `old` and `new` differ in their `rxq_affinity` alone: applied live with
/// `set-port` (the port keeps its id, flows and counters) instead of deleted and added again.
fn rxq_change(old: &PortSpec, new: &PortSpec) -> bool {
    let mut o = old.clone();
    o.rxq_affinity = new.rxq_affinity.clone();
    o == *new && old != new
}

/// A bridge spec without its ports and tables: what `AddBridge` is given.
fn bare(b: &BridgeSpec) -> BridgeSpec {
    let mut x = BridgeSpec::new(&b.name);
    x.fdb_capacity = b.fdb_capacity;
    x.aging = b.aging;
    x.gateway = b.gateway.clone();
    x.gateway_mac = b.gateway_mac.clone();
    x.isolated = b.isolated;
    x.icc = b.icc;
    x.rp_filter = b.rp_filter;
    x.datapath_id = b.datapath_id.clone();
    x.controller = b.controller.clone();
    x.fail_mode = b.fail_mode.clone();
    x
}

/// The command that changes `old`'s OpenFlow settings to `new`'s, if they differ.
fn openflow_change(old: &BridgeSpec, new: &BridgeSpec) -> Option<Command> {
    let same = old.datapath_id == new.datapath_id
        && old.controller == new.controller
        && old.fail_mode == new.fail_mode;
    (!same).then(|| {
        Command::Openflow(crate::worker::OfCommand::Set {
            bridge: new.name.clone(),
            datapath_id: Some(new.datapath_id.clone()),
            controller: Some(new.controller.clone()),
            fail_mode: Some(new.fail_mode.clone()),
        })
    })
}

impl Journal for Store {
    fn sync(&self) -> Result<(), String> {
        let mut p = self.lock();
        if p.unsaved {
            self.commit(&mut p)?;
        }
        Ok(())
    }

    /// `later`: the database write is left to the flusher, if it runs.
    fn change(
        &self,
        method: &str,
        params: &[String],
        later: bool,
        run: &mut dyn FnMut() -> Result<Reply, CtlError>,
    ) -> Result<Reply, CtlError> {
        let mut p = self.lock();
        let reply;
        // A pending port is not in the switch: deleting it only forgets it.
        let named: Vec<&String> = params.iter().filter(|a| *a != "--if-exists").collect();
        if method == "del-port"
            && let Some(name) = named.last()
            && let Some(i) = p
                .ports
                .iter()
                .position(|(b, s)| &s.name == *name && (named.len() < 2 || *named[0] == *b))
        {
            let (b, _) = p.ports.remove(i);
            info!("forgot pending port {name} (bridge {b})");
            reply = Reply::new("", serde_json::json!({"deleted": name}));
        } else {
            reply = run()?;
            if method == "del-flows" && params.len() == 1 {
                p.flows.retain(|(b, _)| *b != params[0]);
            }
        }
        if later
            && self.db.is_some()
            && let Some(wake) = self.flusher.get()
        {
            p.unsaved = true;
            let _ = wake.try_send(());
            return Ok(reply);
        }
        self.commit(&mut p).map_err(|e| {
            CtlError::new(format!(
                "the change was applied but the database could not be written: {e}"
            ))
        })?;
        Ok(reply)
    }
}

/// The items of `new` that `old` lacks, compared as `canon` writes them (meters and groups as
/// the running configuration writes them, defaults spelled out: the same one written another
/// way is no change).
fn added<'a>(
    old: Option<&[String]>,
    new: Option<&'a [String]>,
    canon: impl Fn(&String) -> String,
) -> Vec<&'a String> {
    let old: Vec<String> = old.into_iter().flatten().map(&canon).collect();
    new.into_iter()
        .flatten()
        .filter(|x| !old.contains(&canon(x)))
        .collect()
}
