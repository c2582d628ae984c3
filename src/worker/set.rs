//! Several workers: one pinned poll-mode thread per core, each a full replica of the datapath
//! (its own frame region, ports' sockets, tables and pipeline), driven through worker 0's
//! [`WorkerHandle`].
//!
//! Contract:
//! - Configuration: every command that changes the configuration is applied by every worker,
//!   worker 0 first, one command at a time over all workers (`set_ops`), so the replicas apply
//!   the same changes in the same order and give out the same ids; the answer is worker 0's.
//!   Worker 0 refusing a command stops it there; a later worker refusing what worker 0
//!   accepted (it should not) is undone where an undo exists (ports, bridges) and answered as
//!   an error naming the worker. `add-port` replacing a port worker 0 saw down or gone also
//!   replaces it on a worker that has not seen the netdev go yet.
//! - Ports: each worker opens its own sockets and transmits on them (see `open::open_device`):
//!   AF_PACKET fanout, AF_XDP queue shares, multi-queue TAPs. A worker without a queue on a
//!   port (AF_XDP with fewer queues than workers, a single-queue TAP made outside uvs) hands
//!   what it sends there to the worker that has one (`relay`). In-memory ports (tests,
//!   benches) are attached per worker with [`WorkerHandle::attach_each`].
//! - Learned state (FDB, VXLAN remotes, neighbours, flow use and timeouts) is shared (see
//!   `learned`).
//! - NAT and `ct()` flows: each worker tracks the connections it owns; NAT port pools hand out
//!   only its share of ports, and a frame that reaches another worker is handed to the owner
//!   (`pipeline::steer`, `peers`).
//! - Rate limits (`rate_rx`/`rate_tx`) and meters: each worker shapes or meters what it
//!   handles, all drawing from one token bucket per port direction or meter (`SharedBuckets`,
//!   `tokens`), so the configured rate holds in total.
//! - Captures: every worker captures what it handles of the port into the one stream (frames
//!   of different workers interleave in arrival order), counting down one shared count.
//!   Mirrors are replicated: each worker mirrors what it forwards.
//! - OpenFlow: settings, groups and controller state are replicated; every worker's packet-ins
//!   go to the one event stream, flow-removed and port-status events come from worker 0 only.
//!   PACKET_OUT is sent by worker 0 (its sockets reach every port).
//! - DNS: the names are one registry (written through worker 0); every worker punts the
//!   queries its gateways receive to the service, and worker 0 sends the answers.
//! - Reads: `stats`, `dump-flows`, `dump-meters` and the metrics' counts sum every worker's
//!   counters (table sizes are not summed) and `stats`/`show` list each worker;
//!   `show-runtime` lists every worker's nodes; `ct-show` pages through every worker's table;
//!   other tables and the running configuration are read from worker 0 (replicas).
//! - Not available with several workers, refused with an error that says so: `learn()` flow
//!   actions (learned flows would differ per worker).

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

use serde_json::Value;

use super::{Command, Worker, WorkerHandle, WorkerOptions, prepare, start};
use crate::clock::Clock;
use crate::flow::Flow;
use crate::observe::ObserveCmd;
use crate::pipeline::ratelimit::{Shaper, SharedBucket};
use crate::port::Port;

/// Start one worker per entry of `cores` (None: unpinned), sharing what they learn. One entry
/// (or none) starts one worker, exactly as [`super::spawn`].
pub fn spawn_workers(
    opts: WorkerOptions,
    cores: &[Option<usize>],
    clock: Arc<dyn Clock>,
) -> std::io::Result<WorkerHandle> {
    let n = cores.len().max(1);
    if n == 1 {
        let core = cores.first().copied().flatten();
        return super::spawn(WorkerOptions { core, ..opts }, clock);
    }
    let mut built: Vec<(Worker, WorkerHandle)> = Vec::with_capacity(n);
    let all: Arc<[Option<usize>]> = Arc::from(cores.to_vec());
    for &core in cores {
        let o = WorkerOptions {
            core,
            ..opts.clone()
        };
        built.push(prepare(o, clock.clone(), built.len(), all.clone())?);
    }
    // Wire the channels between workers: worker i receives on its own, sends on the others'.
    let channels: Vec<_> = (0..n).map(|_| crossbeam_channel::unbounded()).collect();
    let frame_channels: Vec<_> = (0..n)
        .map(|_| crossbeam_channel::bounded(super::peers::FRAME_MESSAGES))
        .collect();
    let wakers: Vec<_> = built.iter().map(|(_, h)| h.waker.clone()).collect();
    let backlogs: Vec<Arc<AtomicUsize>> = (0..n).map(|_| Arc::default()).collect();
    let events = built[0].0.dp.events.clone();
    let buckets = Arc::new(SharedBuckets::default());
    let names = built[0].1.dns_names.clone();
    for (i, (w, h)) in built.iter_mut().enumerate() {
        let to = (0..n)
            .map(|j| {
                (j != i).then(|| super::peers::Link {
                    learned_and_relayed: channels[j].0.clone(),
                    learned_backlog: backlogs[j].clone(),
                    frames: frame_channels[j].0.clone(),
                    waker: wakers[j].clone(),
                })
            })
            .collect();
        let rx = (channels[i].1.clone(), frame_channels[i].1.clone());
        w.peers = Some(super::peers::Peers::new(i, rx, backlogs[i].clone(), to));
        w.dp.learned_out = Some(Vec::new());
        w.dp.expires_flows = i == 0;
        w.dp.nat.set_share(i as u16, n as u16);
        w.dp.neigh.share_arp_rate(n as u32);
        w.buckets = Some(buckets.clone());
        // One event stream and one DNS name registry for all.
        w.dp.events = if i == 0 {
            events.clone()
        } else {
            events.for_replica()
        };
        w.dns_names = names.clone();
        h.dns_names = names.clone();
    }
    let mut handles = Vec::with_capacity(n);
    for (i, (w, h)) in built.into_iter().enumerate() {
        let name = if i == 0 {
            "uvs-worker".to_string()
        } else {
            format!("uvs-worker{i}")
        };
        match start(w, h, name) {
            Ok(h) => handles.push(h),
            Err(e) => {
                for h in &handles {
                    h.shutdown();
                }
                return Err(e);
            }
        }
    }
    let mut first = handles.remove(0);
    first.others = handles;
    Ok(first)
}

/// The token buckets the workers' copies of a rate limit or meter draw from (see `tokens`):
/// one per (what, rate, burst) while some copy holds it.
#[derive(Default)]
pub(crate) struct SharedBuckets(std::sync::Mutex<Vec<BucketEntry>>);

/// What is limited (`rx PORT`, `tx PORT`, `meter BRIDGE N`), its rate and burst, and its
/// bucket while some copy holds it.
type BucketEntry = ((String, u64, u64), std::sync::Weak<SharedBucket>);

impl SharedBuckets {
    /// The bucket of `what` at `rate_kbps` with `burst_kbits`.
    pub fn bucket(&self, what: String, rate_kbps: u64, burst_kbits: u64) -> Arc<SharedBucket> {
        let key = (what, rate_kbps, burst_kbits);
        let mut all = self.0.lock().unwrap_or_else(|e| e.into_inner());
        all.retain(|(_, w)| w.strong_count() > 0);
        if let Some(b) = all
            .iter()
            .find(|(k, _)| *k == key)
            .and_then(|(_, w)| w.upgrade())
        {
            return b;
        }
        let b = Arc::new(SharedBucket::new((burst_kbits * 1000) as i64));
        all.push((key, Arc::downgrade(&b)));
        b
    }

    /// `shaper` drawing from the bucket of `port` (`rx`: its received direction).
    pub fn share(&self, port: &str, rx: bool, shaper: Shaper) -> Shaper {
        let what = format!("{} {port}", if rx { "rx" } else { "tx" });
        let b = self.bucket(what, shaper.rate_kbps, shaper.burst_kbits);
        shaper.share(b)
    }
}

/// `ct-show` page positions with several workers: worker number above this bit, slot below.
const CT_WORKER_SHIFT: usize = 40;

/// Why `cmd` cannot run with several workers yet, if it cannot.
fn single_worker_only(cmd: &Command) -> Option<&'static str> {
    Some(match cmd {
        Command::FlowAdd { flows, .. } | Command::FlowReplace { flows, .. } => {
            return flows.iter().find_map(flow_single_worker_only);
        }
        Command::AttachPort { .. } => "attaching one port object (use attach_each)",
        _ => return None,
    })
}

/// Why a flow cannot run with several workers yet, if it cannot.
fn flow_single_worker_only(f: &Flow) -> Option<&'static str> {
    use crate::flow::Action;
    fn walk(list: &[Action]) -> Option<&'static str> {
        list.iter().find_map(|a| match a {
            Action::Learn(_) => Some("the learn() action (learned flows are per worker)"),
            Action::Ct(c) if c.nat.is_some() => {
                Some("ct(nat(...)) (its NAT ports are not shared between the workers)")
            }
            Action::Clone(inner) => walk(inner),
            _ => None,
        })
    }
    walk(&f.actions)
}

/// Whether `cmd` only reads (shows, dumps, counters, checks): it cannot change the
/// configuration. Anything not listed counts as a change ([`EventSource::changes`]), so a
/// new read only costs a watcher one extra look.
///
/// [`EventSource::changes`]: crate::events::EventSource::changes
pub(super) fn reads_only(cmd: &Command) -> bool {
    use crate::observe::ObserveCmd as O;
    use crate::worker::{DnsCmd, OfCommand};
    matches!(
        cmd,
        Command::Show
            | Command::FdbShow { .. }
            | Command::RouteShow
            | Command::NeighShow { .. }
            | Command::NatShow
            | Command::CtShow { .. }
            | Command::FlowsCanonical { .. }
            | Command::FlowDump { .. }
            | Command::MeterDump(_)
            | Command::Trace { .. }
            | Command::Stats
            | Command::Runtime { .. }
            | Command::RunningConfig
            | Command::PortCheck { .. }
            | Command::Observe(O::MirrorShow | O::Counts)
            | Command::Dns(DnsCmd::Show(_))
            | Command::Openflow(OfCommand::GroupDump { .. })
            | Command::Openflow(OfCommand::GroupStats { .. })
    )
}

/// A copy of `cmd` for another worker: the commands that change the configuration. None for
/// reads and for commands that carry something only one worker can own.
fn replicate(cmd: &Command) -> Option<Command> {
    Some(match cmd {
        Command::AddBridge(b) => Command::AddBridge(b.clone()),
        Command::DelBridge(b) => Command::DelBridge(b.clone()),
        Command::AddPort { bridge, spec } => Command::AddPort {
            bridge: bridge.clone(),
            spec: spec.clone(),
        },
        Command::DelPort(p) => Command::DelPort(p.clone()),
        Command::FdbAdd {
            bridge,
            mac,
            port,
            vlan,
            remote,
        } => Command::FdbAdd {
            bridge: bridge.clone(),
            mac: *mac,
            port: port.clone(),
            vlan: *vlan,
            remote: *remote,
        },
        Command::FdbFlush { bridge, port } => Command::FdbFlush {
            bridge: bridge.clone(),
            port: port.clone(),
        },
        Command::FdbDel { bridge, mac, vlan } => Command::FdbDel {
            bridge: bridge.clone(),
            mac: *mac,
            vlan: *vlan,
        },
        Command::SetGateway { bridge, gateway } => Command::SetGateway {
            bridge: bridge.clone(),
            gateway: *gateway,
        },
        Command::SetBridgeOptions {
            bridge,
            isolated,
            icc,
            rp_filter,
            aging,
            fdb_capacity,
        } => Command::SetBridgeOptions {
            bridge: bridge.clone(),
            isolated: *isolated,
            icc: *icc,
            rp_filter: *rp_filter,
            aging: *aging,
            fdb_capacity: *fdb_capacity,
        },
        Command::SetPortRxq { port, affinity } => Command::SetPortRxq {
            port: port.clone(),
            affinity: affinity.clone(),
        },
        Command::SetPortOptions { port, options } => Command::SetPortOptions {
            port: port.clone(),
            options: options.clone(),
        },
        Command::ModPort {
            bridge,
            port,
            bits,
            mask,
        } => Command::ModPort {
            bridge: bridge.clone(),
            port: port.clone(),
            bits: *bits,
            mask: *mask,
        },
        Command::RouteAdd(r) => Command::RouteAdd(r.clone()),
        Command::RouteDel(r) => Command::RouteDel(r.clone()),
        Command::NeighFlush(b) => Command::NeighFlush(b.clone()),
        Command::NatAdd(n) => Command::NatAdd(n.clone()),
        Command::SetNatPorts(r) => Command::SetNatPorts(r.clone()),
        Command::NatDel(i) => Command::NatDel(*i),
        Command::NatDelRule(r) => Command::NatDelRule(r.clone()),
        Command::FlowAdd { bridge, flows } => Command::FlowAdd {
            bridge: bridge.clone(),
            flows: flows.clone(),
        },
        Command::ReleasePorts(b) => Command::ReleasePorts(b.clone()),
        Command::FlowReplace { bridge, flows } => Command::FlowReplace {
            bridge: bridge.clone(),
            flows: flows.clone(),
        },
        Command::FlowDel {
            bridge,
            filter,
            strict,
        } => Command::FlowDel {
            bridge: bridge.clone(),
            filter: filter.clone(),
            strict: *strict,
        },
        Command::Overlay(ops) => Command::Overlay(ops.clone()),
        Command::MeterAdd {
            bridge,
            spec,
            write,
        } => Command::MeterAdd {
            bridge: bridge.clone(),
            spec: spec.clone(),
            write: *write,
        },
        Command::Openflow(crate::worker::OfCommand::GroupDump { .. }) => return None,
        Command::Openflow(crate::worker::OfCommand::GroupStats { .. }) => return None,
        Command::Observe(ObserveCmd::CaptureStop(id)) => {
            Command::Observe(ObserveCmd::CaptureStop(*id))
        }
        Command::Observe(ObserveCmd::MirrorAdd(m)) => {
            Command::Observe(ObserveCmd::MirrorAdd(m.clone()))
        }
        Command::Observe(ObserveCmd::MirrorDel { bridge, name }) => {
            Command::Observe(ObserveCmd::MirrorDel {
                bridge: bridge.clone(),
                name: name.clone(),
            })
        }
        Command::Openflow(c) => Command::Openflow(c.clone()),
        _ => return None,
    })
}

/// For `add-port`: the port's name and a copy of the command, to replace a port worker 0
/// replaced (down or gone there) on a worker that still has it.
fn stale_port(cmd: &Command) -> Option<(String, Command)> {
    match cmd {
        Command::AddPort { spec, .. } => Some((spec.name.clone(), replicate(cmd)?)),
        _ => None,
    }
}

/// How to undo `cmd` on a worker that applied it, when a later worker refused it.
fn undo(cmd: &Command) -> Option<Command> {
    match cmd {
        Command::AddBridge(b) => Some(Command::DelBridge(b.name.clone())),
        Command::AddPort { spec, .. } => Some(Command::DelPort(spec.name.clone())),
        _ => None,
    }
}

impl WorkerHandle {
    /// How many workers run (1: this one alone).
    pub fn worker_count(&self) -> usize {
        1 + self.others.len()
    }

    /// [`WorkerHandle::call`] with several workers (see the module documentation).
    pub(super) fn call_each(&self, cmd: Command) -> Result<Value, String> {
        if let Some(what) = single_worker_only(&cmd) {
            return Err(format!(
                "{what} is not available with several workers yet ({} running); run with one \
                 core (--cores N)",
                self.worker_count()
            ));
        }
        match cmd {
            Command::Dns(crate::worker::DnsCmd::Connect { punted, replies }) => {
                // Every worker punts queries to the service; answers come back to worker 0,
                // whose sockets reach every port. The names are one registry for all.
                for w in &self.others {
                    w.call_one(Command::Dns(crate::worker::DnsCmd::Connect {
                        punted: punted.clone(),
                        replies: crossbeam_channel::never(),
                    }))?;
                }
                self.call_one(Command::Dns(crate::worker::DnsCmd::Connect {
                    punted,
                    replies,
                }))
            }
            Command::Observe(ObserveCmd::CaptureStart(mut spec)) => {
                // Every worker captures what it handles into the one stream, counting down one
                // shared count.
                let copies: Vec<_> = self
                    .others
                    .iter()
                    .map(|_| spec.for_another_worker())
                    .collect();
                let answer = self.call_one(Command::Observe(ObserveCmd::CaptureStart(spec)))?;
                for (w, c) in self.others.iter().zip(copies) {
                    w.call_one(Command::Observe(ObserveCmd::CaptureStart(Box::new(c))))?;
                }
                Ok(answer)
            }
            Command::Stats => self.stats_each(),
            Command::Openflow(crate::worker::OfCommand::GroupStats { bridge }) => {
                let c = || {
                    Command::Openflow(crate::worker::OfCommand::GroupStats {
                        bridge: bridge.clone(),
                    })
                };
                let mut total = self.call_one(c())?;
                for w in &self.others {
                    let v = w.call_one(c())?;
                    sum_counters(&mut total, &v);
                }
                Ok(total)
            }
            Command::MeterDump(b) => {
                let mut total = self.call_one(Command::MeterDump(b.clone()))?;
                for w in &self.others {
                    let v = w.call_one(Command::MeterDump(b.clone()))?;
                    sum_counters(&mut total, &v);
                }
                Ok(total)
            }
            Command::Observe(ObserveCmd::Counts) => {
                let mut total = self.call_one(Command::Observe(ObserveCmd::Counts))?;
                for w in &self.others {
                    let v = w.call_one(Command::Observe(ObserveCmd::Counts))?;
                    sum_counters(&mut total, &v);
                }
                Ok(total)
            }
            Command::Show => self.show_each(),
            Command::CtShow { from } => self.ct_show_each(from),
            Command::Runtime { clear } => self.runtime_each(clear),
            Command::FlowDump {
                bridge,
                filter,
                names,
            } => self.flow_dump_each(bridge, filter, names),
            Command::Shutdown => {
                self.shutdown();
                Ok(Value::Null)
            }
            cmd => match replicate(&cmd) {
                Some(copy) => self.apply_each(cmd, copy),
                // Reads: the replicas hold the same tables.
                None => self.call_one(cmd),
            },
        }
    }

    /// Apply a configuration command on worker 0, then on the others.
    fn apply_each(&self, cmd: Command, copy: Command) -> Result<Value, String> {
        let rollback = undo(&cmd);
        // One command at a time over all workers, so every replica applies them in one order.
        let _g = self.set_ops.lock().unwrap_or_else(|e| e.into_inner());
        let answer = self.call_one(cmd)?;
        let mut done: Vec<&WorkerHandle> = vec![self];
        let mut next = Some(copy);
        for (i, w) in self.others.iter().enumerate() {
            let Some(c) = next.take() else { break };
            next = replicate(&c);
            let retry = stale_port(&c);
            let port_name = retry.as_ref().map(|(n, _)| n.clone());
            let mut r = w.call_one(c);
            // Worker 0 replaced a port that was down or gone there; this worker may not have
            // seen the netdev go yet (each follows link events on its own): replace it too.
            if let (Err(e), Some((name, again))) = (&r, retry)
                && e.contains("already exists")
            {
                let _ = w.call_one(Command::DelPort(name));
                r = w.call_one(again);
            }
            // Port ids name ports in what the workers tell each other: they must agree.
            if let (Ok(v), Some(name)) = (&r, &port_name)
                && v["id"] != answer["id"]
            {
                let _ = w.call_one(Command::DelPort(name.clone()));
                r = Err(format!(
                    "port '{name}' got id {} here but {} on worker 0 (a port of that id is \
                     still being released here); try again",
                    v["id"], answer["id"]
                ));
            }
            if let Err(e) = r {
                if let Some(u) = &rollback {
                    for d in &done {
                        if let Some(u) = replicate(u) {
                            let _ = d.call_one(u);
                        }
                    }
                }
                tracing::error!("worker {} refused what worker 0 accepted: {e}", i + 1);
                return Err(format!("worker {}: {e}", i + 1));
            }
            done.push(w);
        }
        Ok(answer)
    }

    /// `stats`: every worker's counters summed, and each worker's loop figures.
    fn stats_each(&self) -> Result<Value, String> {
        let mut total = self.call_one(Command::Stats)?;
        let mut workers = vec![total["worker"].clone()];
        for w in &self.others {
            let v = w.call_one(Command::Stats)?;
            add_worker_stats(&mut total, v.clone());
            workers.push(v["worker"].clone());
        }
        for (i, w) in workers.iter_mut().enumerate() {
            w["index"] = Value::from(i);
        }
        total["workers"] = Value::Array(workers);
        Ok(total)
    }

    /// `ct-show` pages over every worker's connection table: `from` carries the worker in its
    /// high bits ([`CT_WORKER_SHIFT`]) and the slot in the rest.
    fn ct_show_each(&self, from: usize) -> Result<Value, String> {
        let (w, slot) = (from >> CT_WORKER_SHIFT, from & ((1 << CT_WORKER_SHIFT) - 1));
        let all: Vec<&WorkerHandle> = std::iter::once(self).chain(self.others.iter()).collect();
        let worker = all
            .get(w)
            .ok_or_else(|| format!("ct-show: no worker {w}"))?;
        let mut v = worker.call_one(Command::CtShow { from: slot })?;
        // Each worker has its own table of the same size, and a share of the per-source
        // limit: the switch's limits are the sums, as `uvs_conntrack_limit` reports (found
        // trying uvs as a new user: ct-show said one worker's 65536 beside a metric of 131072).
        let n = all.len() as u64;
        for k in ["limit", "per_source"] {
            if let Some(x) = v[k].as_u64() {
                v[k] = Value::from(x * n);
            }
        }
        v["next"] = match v["next"].as_u64() {
            Some(n) => Value::from((w << CT_WORKER_SHIFT) | n as usize),
            None if w + 1 < all.len() => Value::from((w + 1) << CT_WORKER_SHIFT),
            None => Value::Null,
        };
        Ok(v)
    }

    /// `show-runtime`: every worker's nodes.
    fn runtime_each(&self, clear: bool) -> Result<Value, String> {
        let mut v = self.call_one(Command::Runtime { clear })?;
        let mut all = v["workers"].as_array().cloned().unwrap_or_default();
        for w in &self.others {
            let o = w.call_one(Command::Runtime { clear })?;
            all.extend(o["workers"].as_array().cloned().unwrap_or_default());
        }
        v["workers"] = Value::Array(all);
        Ok(v)
    }

    /// `dump-flows`: worker 0's lines with every worker's packet and byte counts summed (the
    /// replicas hold the same flows in the same order).
    fn flow_dump_each(
        &self,
        bridge: String,
        filter: Option<crate::flow::FlowFilter>,
        names: bool,
    ) -> Result<Value, String> {
        let ask = |w: &WorkerHandle| {
            w.call_one(Command::FlowDump {
                bridge: bridge.clone(),
                filter: filter.clone(),
                names,
            })
        };
        let mut v = ask(self)?;
        let mut lines: Vec<String> = v["flows"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|l| l.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        for w in &self.others {
            let o = ask(w)?;
            let theirs = o["flows"].as_array().cloned().unwrap_or_default();
            if theirs.len() != lines.len() {
                tracing::error!(
                    "dump-flows: worker flow tables differ ({} vs {})",
                    theirs.len(),
                    lines.len()
                );
                continue;
            }
            for (line, other) in lines.iter_mut().zip(&theirs) {
                let other = other.as_str().unwrap_or_default();
                for key in ["n_packets=", "n_bytes="] {
                    let add = counter_in(other, key).unwrap_or(0);
                    if let Some(sum) = counter_in(line, key).map(|c| c + add) {
                        *line = with_counter(line, key, sum);
                    }
                }
            }
        }
        v["flows"] = lines.into_iter().map(Value::from).collect();
        Ok(v)
    }

    /// `show`: worker 0's description, and every worker's frame figures under `workers`.
    fn show_each(&self) -> Result<Value, String> {
        let mut v = self.call_one(Command::Show)?;
        let mut workers = vec![v["worker"].clone()];
        for w in &self.others {
            let other = w.call_one(Command::Show)?;
            add_port_frames(&mut v, &other);
            workers.push(other["worker"].clone());
        }
        v["workers"] = Value::Array(workers);
        Ok(v)
    }

    /// Attach an in-memory port to `bridge` on every worker: `build(worker, id)` makes each
    /// worker's copy (on that worker's thread). Returns worker 0's answer. All or nothing.
    pub fn attach_each(
        &self,
        bridge: &str,
        name: &str,
        build: impl Fn(usize, u16) -> Box<dyn Port> + Send + Sync + 'static,
    ) -> Result<Value, String> {
        let build = Arc::new(build);
        let _g = self.set_ops.lock().unwrap_or_else(|e| e.into_inner());
        let all: Vec<&WorkerHandle> = std::iter::once(self).chain(self.others.iter()).collect();
        let mut answer = Value::Null;
        for (i, w) in all.iter().enumerate() {
            let b = build.clone();
            let r = w.call_one(Command::AttachPort {
                bridge: bridge.to_string(),
                name: name.to_string(),
                build: Box::new(move |id| b(i, id)),
            });
            match r {
                Ok(v) if i == 0 => answer = v,
                Ok(_) => {}
                Err(e) => {
                    for d in &all[..i] {
                        let _ = d.call_one(Command::DelPort(name.to_string()));
                    }
                    return Err(e);
                }
            }
        }
        Ok(answer)
    }
}

/// The number after `key` in a `dump-flows` line.
fn counter_in(line: &str, key: &str) -> Option<u64> {
    let at = line.find(key)? + key.len();
    let digits: String = line[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// `line` with the number after `key` replaced by `value`.
fn with_counter(line: &str, key: &str, value: u64) -> String {
    let Some(at) = line.find(key).map(|i| i + key.len()) else {
        return line.to_string();
    };
    let end = at + line[at..].chars().take_while(char::is_ascii_digit).count();
    format!("{}{value}{}", &line[..at], &line[end..])
}

/// Add the frames another worker's sockets hold for each port (`other`, its `show`) into
/// `show`'s ports (each worker stocks its own sockets from its own pool: worker 0's alone was
/// shown), in the `frames` field and in the `details` text.
fn add_port_frames(show: &mut Value, other: &Value) {
    let Some(bridges) = show["bridges"].as_array_mut() else {
        return;
    };
    for b in bridges {
        let theirs = other["bridges"]
            .as_array()
            .and_then(|o| o.iter().find(|x| x["name"] == b["name"]));
        let (Some(ports), Some(theirs)) = (b["ports"].as_array_mut(), theirs) else {
            continue;
        };
        for p in ports {
            let held = theirs["ports"]
                .as_array()
                .and_then(|o| o.iter().find(|x| x["name"] == p["name"]))
                .and_then(|x| x["frames"].as_u64());
            let (Some(held), Some(mine)) = (held, p["frames"].as_u64()) else {
                continue;
            };
            let sum = mine.saturating_add(held);
            p["frames"] = Value::from(sum);
            if let Some(d) = p["details"].as_str() {
                p["details"] = Value::from(with_counter(d, "frames=", sum));
            }
        }
    }
}

/// Add worker `v`'s `stats` into `total` (worker 0's, or the sum so far). Counters of events
/// that every worker's replica of a shared table sees alike (an FDB entry aging out, a
/// neighbour evicted or refused at a full bridge) are worker 0's, not the sum: they counted
/// double with two workers (found in a soak test). `events` counters are one set shared by the
/// workers' sinks: not summed either.
pub(crate) fn add_worker_stats(total: &mut Value, mut v: Value) {
    if let Some(bridges) = v["bridges"].as_object_mut() {
        for b in bridges.values_mut() {
            if let Some(b) = b.as_object_mut() {
                b.remove("aged");
            }
        }
    }
    if let Some(n) = v["neigh"].as_object_mut() {
        n.remove("evicted");
        n.remove("full");
    }
    for key in ["ports", "bridges", "router", "neigh", "reassembly"] {
        sum_counters(&mut total[key], &v[key]);
    }
    // The frames a port's sockets hold are a gauge per worker (each stocks its own sockets
    // from its own pool), not a table size: they add up.
    if let (Some(mine), Some(theirs)) = (total["ports"].as_object_mut(), v["ports"].as_object()) {
        for (name, p) in theirs {
            if let (Some(m), Some(t)) = (mine.get_mut(name), p["frames"].as_u64())
                && let Some(held) = m["frames"].as_u64()
            {
                m["frames"] = Value::from(held.saturating_add(t));
            }
        }
    }
}

/// Add every counter of `from` into `into`, recursively by key. Numbers that are not counters
/// (table sizes, frame counts, ids, MTUs) are left as worker 0 has them.
pub(crate) fn sum_counters(into: &mut Value, from: &Value) {
    const NOT_COUNTERS: &[&str] = &[
        "nat_rules",
        "captures",
        "mirrors",
        "netdev_rx_dropped",
        "meter",
        "rate_kbps",
        "burst_kbits",
        "flow_count",
        "group_id",
        "ref_count",
        "duration_ms",
        "fdb_entries",
        "frames",
        "entries",
        "held",
        "id",
        "mtu",
        "ofport",
        "capacity",
    ];
    match (into, from) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, bv) in b {
                if NOT_COUNTERS.contains(&k.as_str()) {
                    continue;
                }
                match a.get_mut(k) {
                    Some(av) => sum_counters(av, bv),
                    None if bv.is_number() => {
                        a.insert(k.clone(), bv.clone());
                    }
                    None => {}
                }
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (x, y) in a.iter_mut().zip(b) {
                sum_counters(x, y);
            }
        }
        (a @ Value::Number(_), Value::Number(b)) => {
            if let (Some(x), Some(y)) = (a.as_u64(), b.as_u64()) {
                *a = Value::from(x.saturating_add(y));
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Two workers' `stats`: port and per-worker traffic counters add up; counters of events
    /// each worker's replica of a shared table sees alike (FDB aging, neighbour eviction and
    /// refusal) are counted once (100 MACs aged out read +200 with two workers: found in a
    /// soak test).
    #[test]
    fn replicated_table_events_are_counted_once() {
        let one = |rx: u64| {
            json!({
                "ports": {"p1": {"rx_packets": rx, "mtu": 1500}},
                "bridges": {"br0": {"aged": 100, "learned": 60, "fdb_entries": 7}},
                "router": {"routed": rx},
                "neigh": {"evicted": 100, "full": 3, "rate_limited": 2},
                "reassembly": {},
            })
        };
        let mut total = one(10);
        add_worker_stats(&mut total, one(5));
        assert_eq!(total["ports"]["p1"]["rx_packets"], 15);
        assert_eq!(total["ports"]["p1"]["mtu"], 1500);
        assert_eq!(total["router"]["routed"], 15);
        assert_eq!(total["bridges"]["br0"]["aged"], 100);
        assert_eq!(total["bridges"]["br0"]["learned"], 120);
        assert_eq!(total["bridges"]["br0"]["fdb_entries"], 7);
        assert_eq!(total["neigh"]["evicted"], 100);
        assert_eq!(total["neigh"]["full"], 3);
        assert_eq!(total["neigh"]["rate_limited"], 4);
    }

    /// The frames each worker's sockets hold for a port add up in `stats` and `show` (worker
    /// 0's alone were shown: found in a soak test).
    #[test]
    fn frames_held_for_a_port_add_up_over_the_workers() {
        let stats = |held: u64| json!({"ports": {"p1": {"frames": held, "rx_packets": 1}}});
        let mut total = stats(2048);
        add_worker_stats(&mut total, stats(1024));
        assert_eq!(total["ports"]["p1"]["frames"], 3072);
        let show = |held: u64| {
            json!({"bridges": [{"name": "br0", "ports": [{"name": "p1", "frames": held,
                "details": format!("state=up frames={held} afxdp")}]}]})
        };
        let mut v = show(2048);
        add_port_frames(&mut v, &show(1024));
        let p = &v["bridges"][0]["ports"][0];
        assert_eq!(p["frames"], 3072);
        assert_eq!(p["details"], "state=up frames=3072 afxdp");
    }
}
