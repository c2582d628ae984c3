//! The datapath worker: a poll-mode thread, pinned to a core, that owns the frame region, the
//! ports, the datapath tables and the pipeline.
//!
//! Contract:
//! - Everything the worker owns is touched only by the worker thread: no locks on the fast path.
//!   The control plane talks to it through a channel of [`Request`]s and an eventfd that wakes it
//!   from sleep; each request is applied between two loop iterations and answered on its own
//!   reply channel. The kernel side of a port (devices, sockets, XDP programs) is opened and
//!   closed on the caller's thread (the lifecycle's on the worker's port thread), and the worker
//!   only attaches the opened port (giving it frames) and takes its frames back after it was
//!   released (see `open`): a BPF load, bind or ioctl never stalls forwarding. A port's frames
//!   never cross threads.
//! - One loop iteration: apply pending requests, read the clock once, for every port service
//!   it and receive a burst and run it through the pipeline, then flush every output queue with
//!   one tx burst per port; ring the transmit doorbells those bursts left waiting when the
//!   pass received nothing or the oldest waited `kicks::KICK_DELAY_NS` (see `kicks`). Every
//!   1024 iterations: housekeeping (FDB aging).
//! - Idle back-off: empty iterations yield the core (`sched_yield`) to any other runnable thread
//!   (at most every `YIELD_EVERY_NS`);
//!   after `SPIN_BEFORE_SLEEP` of them (`SPIN_WHEN_LIVE` while a flow is live, see
//!   `RECENT_TRAFFIC`, and the linger, `WorkerOptions::linger`, default `POLL_LINGER`, once it
//!   has woken the worker `LINGER_AFTER` times in a row) the worker sleeps in poll(2)
//!   on every port's descriptors, the netlink link-event socket and the eventfd (at most 100 ms,
//!   for housekeeping), so an idle switch uses almost no CPU. With `busy_poll` (`uvs run
//!   --busy-poll`) it never sleeps: a frame never waits for a sleeping worker to be woken (the
//!   lower latency OVS's PMDs get), at the price of a core always busy.
//! - Housekeeping (every 1024 iterations and after every sleep) also runs the port lifecycle
//!   (`life`): link events, fd faults, re-attach, frame-budget growth and shrink. A port whose
//!   device is down or gone is closed there, so nothing dead is polled or kicked.

mod dns;
mod events;
mod fair;
mod flows;
mod kicks;
mod life;
mod nat;
mod open;
mod overlay;
mod peers;
pub mod pending;
mod port_options;
mod relay;
mod requests;
mod running;
mod runtime;
mod rxq;
mod set;

use std::os::fd::RawFd;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

pub use dns::DnsCmd;
pub use events::OfCommand;
pub use life::{LinkState, PortLife};
pub use overlay::OverlayOp;
#[cfg(test)]
pub(crate) use overlay::tests as overlay_tests;
pub use port_options::PortOptions;
pub use requests::Command;
pub use set::spawn_workers;

use crate::clock::Clock;
use crate::datapath::{BATCH, Datapath};
use crate::packet::{DEFAULT_FRAME_COUNT, Desc, Frames};
use crate::pipeline::Pipeline;
use crate::port::Port;
use crate::port::wait::{Waker, thread_cpu_ns, wait_readable};

/// How long the worker spins on empty iterations before sleeping, when it has been idle a while.
pub const SPIN_BEFORE_SLEEP: Duration = Duration::from_micros(200);
/// How long it spins by default once a flow has kept coming back (see `LINGER_AFTER`), the
/// linger. A sleeping worker's next frame waits for its core to be woken: on this 2-vCPU VM
/// ~75 us after 10 ms asleep (the vCPU halts), where a spinning worker takes it at once; on a
/// core shared with a CPU-bound task the wake can be milliseconds late and a burst then
/// overruns the kernel's rings. So a flow whose packets come less than this apart (50 a second
/// or more) keeps the worker polling, as OVS's PMD always does; sparser traffic and an idle
/// switch sleep. `uvs run --poll-linger-us` sets it (0: sleep after `SPIN_BEFORE_SLEEP`).
pub const POLL_LINGER: Duration = Duration::from_millis(20);
/// How long it spins while a flow is live (see `RECENT_TRAFFIC`) but has not yet woken the
/// worker `LINGER_AFTER` times in a row: a few packets close together (a fresh interface's
/// IPv6 router solicitations and MLD reports, an ARP exchange) cost 2 ms each, not the linger.
const SPIN_WHEN_LIVE: Duration = Duration::from_millis(2);
/// Sleeps in a row while a flow was live after which the worker spins the linger: a flow that
/// woke it this often within `RECENT_TRAFFIC` of its last frame is coming back (a ping every
/// 10 ms pays four wake-ups, then none).
const LINGER_AFTER: u32 = 3;
/// A flow is live when the worker carried traffic within this time before its last sleep, or
/// has carried traffic for over `LIVE_AFTER_MS` since it woke; then it spins `SPIN_WHEN_LIVE`,
/// or the linger after `LINGER_AFTER` such sleeps in a row.
/// A lone packet after a quiet spell (a neighbour probe, a router solicitation, a ping) gets
/// `SPIN_BEFORE_SLEEP`: its answer is back well within that, and 2 ms of spinning per such
/// packet was most of an idle worker's CPU.
pub const RECENT_TRAFFIC: Duration = Duration::from_millis(100);
/// See `RECENT_TRAFFIC`.
const LIVE_AFTER_MS: u64 = 1;
/// While spinning, the worker yields its core (`sched_yield`) at most this often, so another
/// thread that wants the core waits at most this long for it; between yields an empty pass
/// skips the syscall and the pass through the scheduler (~390 ns on this VM, more than the rest
/// of the pass), which a frame arriving meanwhile would wait for (docs/design.md, "Yielding
/// while spinning").
const YIELD_EVERY_NS: u64 = 5_000;
/// Scheduler slice requested for the worker thread (see `request_short_slice`).
const WORKER_SLICE_NS: u64 = 100_000;

/// How long the worker answers queued control requests before it forwards a pass: a request
/// that started within this time runs to its end, then forwarding gets its turn and the rest
/// wait for the next pass. (30 concurrent dumps of a 20,000-flow table, ~10 ms each, were
/// answered back to back and stalled every bridge for 1.7 s: found trying uvs as a hostile
/// client.)
const REQUEST_SLICE_NS: u64 = 2_000_000;
/// Longest sleep (housekeeping still runs this often when idle).
const MAX_SLEEP_MS: i32 = 100;
/// Patch ports a frame may cross in one pass (OVS's translation depth, 64); beyond, it is in a
/// loop of patch ports and dropped as `patch-loop` (see `Worker::cross_patches`).
pub const PATCH_DEPTH: usize = 64;
/// FDB slots aged per housekeeping pass per bridge.
const AGE_BUDGET: usize = 4096;
/// Flows added per loop iteration by a large `add-flows` (about a millisecond of work), so a
/// bulk install never stops forwarding for longer than that.
const FLOW_CHUNK: usize = 1000;

/// A large flow install in progress: applied `FLOW_CHUNK` flows per loop iteration.
struct PendingFlows {
    bridge: u16,
    flows: std::vec::IntoIter<crate::flow::Flow>,
    added: u64,
    replaced: u64,
    reply: Sender<Result<serde_json::Value, String>>,
    /// A `FlowReplace`: the new table built here beside the running one (which keeps
    /// forwarding), swapped in once complete; and the flows its check refused.
    staged: Option<(crate::flow::Classifier, Vec<serde_json::Value>)>,
}

/// A request to the worker and where to send the answer.
pub struct Request {
    /// What to do.
    pub cmd: Command,
    /// Where the answer goes.
    pub reply: Sender<Result<serde_json::Value, String>>,
    /// Where the ports the request removed go, to be released off the worker (see `open`);
    /// None: the worker closes them itself.
    pub retire: Option<Sender<Vec<open::Retired>>>,
}

/// Worker settings.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// Core to pin to (None: not pinned).
    pub core: Option<usize>,
    /// Frames in the region.
    pub frames: u32,
    /// Never sleep (OVS's PMD): the lowest latency, a whole core always busy. Off: idle
    /// back-off (see the module documentation).
    pub busy_poll: bool,
    /// How long to keep polling after a returning flow's last frame before sleeping (see
    /// [`POLL_LINGER`]).
    pub linger: Duration,
}

impl Default for WorkerOptions {
    fn default() -> Self {
        WorkerOptions {
            core: None,
            frames: DEFAULT_FRAME_COUNT,
            busy_poll: false,
            linger: POLL_LINGER,
        }
    }
}

/// Loop statistics, for `stats`.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct LoopStats {
    pub iterations: u64,
    pub busy_iterations: u64,
    pub sleeps: u64,
    /// Time spent in passes that moved frames (from one pass's start to the next's): what
    /// OVS's `pmd-stats-show` calls processing cycles.
    pub busy_ns: u64,
}

/// The control plane's handle on a running worker.
pub struct WorkerHandle {
    tx: Sender<Request>,
    events: crate::events::EventSource,
    waker: Arc<Waker>,
    dns_names: Arc<std::sync::RwLock<crate::dns::Registry>>,
    thread: std::sync::Mutex<Option<JoinHandle<()>>>,
    /// The worker's frame region (address, length), for the first AF_XDP socket to register
    /// as its UMEM (see `open`).
    region: (usize, usize),
    /// Serialises port changes (`add-port`, `del-port`, `add-br`, `del-br`) across callers.
    port_ops: std::sync::Mutex<()>,
    /// The other workers, when there are several (see `set`): this one is worker 0.
    others: Vec<WorkerHandle>,
    /// Serialises configuration commands across all workers (see `set`).
    set_ops: std::sync::Mutex<()>,
    /// This worker's number and every worker's core (see [`open::Share`]).
    share: open::Share,
    /// Ports the configuration keeps pending, listed by `show` and `stats` (see `pending`).
    pending: std::sync::Mutex<Vec<pending::PendingPort>>,
}

impl WorkerHandle {
    /// Send `cmd` and wait for the answer (at most 30 s). Ports are opened and released on
    /// this thread, not on the worker (see `open`).
    pub fn call(&self, cmd: Command) -> Result<serde_json::Value, String> {
        let change = !set::reads_only(&cmd);
        let merge: Option<fn(&mut serde_json::Value, &[pending::PendingPort])> = match cmd {
            Command::Show => Some(pending::merge_show),
            Command::Stats => Some(pending::merge_stats),
            _ => None,
        };
        let mut answer = if self.others.is_empty() {
            self.call_one(cmd)
        } else {
            self.call_each(cmd)
        };
        if let (Some(merge), Ok(v)) = (merge, answer.as_mut()) {
            merge(v, &self.pending.lock().unwrap_or_else(|e| e.into_inner()));
        }
        if change {
            // After the command: a watcher that sees the new count sees its effect.
            self.events
                .changes
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        answer
    }

    /// Replace the ports `show` and `stats` list as pending (the store's, see `pending`).
    pub fn set_pending(&self, ports: Vec<pending::PendingPort>) {
        *self.pending.lock().unwrap_or_else(|e| e.into_inner()) = ports;
    }

    /// [`WorkerHandle::call`] on this worker alone.
    fn call_one(&self, cmd: Command) -> Result<serde_json::Value, String> {
        match cmd {
            Command::AddPort { bridge, spec } if spec.kind.has_device() => {
                let _g = self.port_ops.lock().unwrap_or_else(|e| e.into_inner());
                self.add_port_off_worker(bridge, spec)
            }
            Command::AddBridge(spec) if spec.port.iter().any(|p| p.kind.has_device()) => {
                let _g = self.port_ops.lock().unwrap_or_else(|e| e.into_inner());
                self.add_bridge_off_worker(spec)
            }
            cmd @ (Command::DelPort(_) | Command::DelBridge(_) | Command::AddBridge(_)) => {
                let _g = self.port_ops.lock().unwrap_or_else(|e| e.into_inner());
                self.call_raw(cmd)
            }
            cmd => self.call_raw(cmd),
        }
    }

    /// Send `cmd` as it is; release and give back the ports it removed.
    fn call_raw(&self, cmd: Command) -> Result<serde_json::Value, String> {
        let (reply, rx) = crossbeam_channel::bounded(1);
        let (retire, retired) = crossbeam_channel::unbounded();
        self.tx
            .send(Request {
                cmd,
                reply,
                retire: Some(retire),
            })
            .map_err(|_| "the datapath worker has stopped".to_string())?;
        self.waker.wake();
        let Ok(answer) = rx.recv_timeout(Duration::from_secs(30)) else {
            self.give_back_late(retired);
            return Err("the datapath worker did not answer".to_string());
        };
        let ports: Vec<open::Retired> = retired.try_iter().flatten().collect();
        if !ports.is_empty() {
            self.give_back(ports);
        }
        answer
    }

    /// The worker's eventfd waker (the DNS service wakes it when replies wait).
    pub fn waker(&self) -> Arc<Waker> {
        self.waker.clone()
    }

    /// The DNS names (written by the worker on `dns-add`/`dns-del`; read by the DNS service).
    pub fn dns_names(&self) -> Arc<std::sync::RwLock<crate::dns::Registry>> {
        self.dns_names.clone()
    }

    /// The worker's events (packet-in, flow removed, port status) and their counters. The
    /// receiver is shared: each event goes to one of its clones.
    pub fn events(&self) -> crate::events::EventSource {
        self.events.clone()
    }

    /// Stop the workers, closing every port, and wait for them.
    pub fn shutdown(&self) {
        for o in &self.others {
            o.shutdown();
        }
        let _ = self.call_one(Command::Shutdown);
        let t = self.thread.lock().ok().and_then(|mut t| t.take());
        if let Some(t) = t {
            let _ = t.join();
        }
    }
}

/// Start a worker thread.
pub fn spawn(opts: WorkerOptions, clock: Arc<dyn Clock>) -> std::io::Result<WorkerHandle> {
    let cores: Arc<[Option<usize>]> = Arc::from(vec![opts.core]);
    let (w, h) = prepare(opts, clock, 0, cores)?;
    start(w, h, "uvs-worker".into())
}

/// Build worker `index` (of the workers on `cores`) and its handle, not started yet (see `set`).
fn prepare(
    opts: WorkerOptions,
    clock: Arc<dyn Clock>,
    index: usize,
    cores: Arc<[Option<usize>]>,
) -> std::io::Result<(Worker, WorkerHandle)> {
    let share = open::Share {
        index,
        cores: cores.clone(),
    };
    let frames = Frames::new(opts.frames)?;
    let region = (frames.region().base() as usize, frames.region().len());
    let waker = Arc::new(Waker::new()?);
    let (tx, rx) = crossbeam_channel::unbounded();
    let (sink, events) = crate::events::channel(crate::events::CAPACITY);
    let (jobs, job_rx) = crossbeam_channel::unbounded();
    {
        let (tx, waker, share) = (tx.clone(), waker.clone(), share.clone());
        std::thread::Builder::new()
            .name("uvs-ports".into())
            .spawn(move || open::janitor(job_rx, tx, waker, region, share))?;
    }
    let mut w = Worker::new(frames, rx, waker.clone(), clock, opts.core);
    w.jobs = jobs;
    w.share = share.clone();
    w.observe.replica = index != 0;
    w.busy_poll = opts.busy_poll;
    w.linger = opts.linger;
    let dns_names = w.dns_names.clone();
    w.dp.events = sink;
    let h = WorkerHandle {
        tx,
        events,
        waker,
        dns_names,
        thread: std::sync::Mutex::new(None),
        region,
        port_ops: std::sync::Mutex::new(()),
        others: Vec::new(),
        set_ops: std::sync::Mutex::new(()),
        share,
        pending: Default::default(),
    };
    Ok((w, h))
}

/// Start a prepared worker's thread.
fn start(w: Worker, h: WorkerHandle, name: String) -> std::io::Result<WorkerHandle> {
    let thread = std::thread::Builder::new()
        .name(name)
        .spawn(move || w.run())?;
    *h.thread.lock().unwrap_or_else(|e| e.into_inner()) = Some(thread);
    Ok(h)
}

/// The worker's state. See the module documentation.
pub struct Worker {
    pub(crate) frames: Frames,
    pub(crate) dp: Datapath,
    pipeline: Pipeline,
    pub(crate) ports: Vec<Option<Box<dyn Port>>>,
    /// Lifecycle of each port (same index as `ports`): state, reason, how to reopen it.
    pub(crate) life: Vec<Option<PortLife>>,
    /// Link events (netlink) for the lifecycle.
    links: life::Links,
    /// AF_XDP sockets that share the UMEM, for the next AF_XDP port to bind to.
    pub(crate) umem_fds: Vec<(u16, RawFd)>,
    /// The inboxes of this worker's patch ports (`port::patch`).
    pub(crate) patches: crate::port::patch::Inboxes,
    /// The ids of its patch ports.
    pub(crate) patch_ids: Vec<u16>,
    /// Ports the current request removed, for its caller to release (see `open`).
    pub(crate) retired: Vec<open::Retired>,
    /// Ids of ports being released by a caller or the port thread: not handed out (nor
    /// reopened) until they are reclaimed.
    pub(crate) closing: Vec<u16>,
    /// The port thread's jobs (see `open::janitor`).
    pub(crate) jobs: Sender<open::Job>,
    /// Numbers the lifecycle's reopen attempts.
    pub(crate) open_seq: u64,
    rx: Receiver<Request>,
    waker: Arc<Waker>,
    clock: Arc<dyn Clock>,
    pub(crate) core: Option<usize>,
    pub(crate) stats: LoopStats,
    pub(crate) started: Instant,
    pub(crate) stop: bool,
    pending_flows: Option<PendingFlows>,
    /// What the running configuration needs that the datapath does not keep.
    pub(crate) specs: running::Specs,
    /// Captures and mirrors (see `observe`).
    pub(crate) observe: crate::observe::Observe,
    /// Registered DNS names (shared with the DNS service, which reads them).
    pub(crate) dns_names: Arc<std::sync::RwLock<crate::dns::Registry>>,
    /// Answers from the DNS service, to send from the gateways.
    pub(crate) dns_replies: Option<Receiver<crate::dns::punt::Reply>>,
    /// Links to the other workers (see `peers`); None: the only worker.
    pub(crate) peers: Option<peers::Peers>,
    /// This worker's number and every worker's core, for `rxq_affinity` (see [`open::Share`]).
    pub(crate) share: open::Share,
    /// Never sleep (see [`WorkerOptions::busy_poll`]).
    busy_poll: bool,
    /// Polling after a returning flow's last frame (see [`WorkerOptions::linger`]).
    linger: Duration,
    /// Rate limits' buckets shared with the other workers (None: the only worker).
    pub(crate) buckets: Option<Arc<set::SharedBuckets>>,
    /// Ports whose transmit doorbell waits for the end of a pass (see `kicks`).
    pub(crate) kicks: kicks::TxKicks,
    /// Scratch for ringing them.
    kick_ports: Vec<u16>,
}

impl Worker {
    fn new(
        frames: Frames,
        rx: Receiver<Request>,
        waker: Arc<Waker>,
        clock: Arc<dyn Clock>,
        core: Option<usize>,
    ) -> Worker {
        Worker {
            frames,
            dp: Datapath::new(),
            pipeline: Pipeline::new(),
            ports: Vec::new(),
            life: Vec::new(),
            links: life::Links::open(),
            umem_fds: Vec::new(),
            patches: Default::default(),
            patch_ids: Vec::new(),
            retired: Vec::new(),
            closing: Vec::new(),
            // Replaced by `spawn`; until then (no port thread) sends fail and ports close here.
            jobs: crossbeam_channel::unbounded().0,
            open_seq: 0,
            rx,
            waker,
            clock,
            core,
            stats: LoopStats::default(),
            started: Instant::now(),
            stop: false,
            pending_flows: None,
            specs: running::Specs::default(),
            observe: crate::observe::Observe::default(),
            dns_names: Arc::default(),
            dns_replies: None,
            peers: None,
            share: open::Share {
                index: 0,
                cores: Arc::from(vec![core]),
            },
            busy_poll: false,
            linger: POLL_LINGER,
            buckets: None,
            kicks: kicks::TxKicks::default(),
            kick_ports: Vec::new(),
        }
    }

    fn run(mut self) {
        if let Some(c) = self.core
            && !core_affinity::set_for_current(core_affinity::CoreId { id: c })
        {
            tracing::warn!("could not pin the worker to core {c}; running unpinned");
            self.core = None;
        }
        crate::port::wait::request_short_slice(WORKER_SLICE_NS);
        // One clock read per iteration (milliseconds); seconds for the tables derive from it.
        let recent_ms = RECENT_TRAFFIC.as_millis() as u64;
        let mut last_traffic_ms = 0u64;
        // The last traffic before the last sleep, and the first since it.
        let (mut traffic_before_sleep_ms, mut first_traffic_ms) = (0u64, None::<u64>);
        // Sleeps in a row taken while a flow was live (see `LINGER_AFTER`).
        let mut live_sleeps = 0u32;
        let mut batch: Vec<Desc> = Vec::with_capacity(BATCH);
        let mut fds: Vec<RawFd> = Vec::new();
        let mut pollfds = Vec::new();
        let mut idle_since: Option<Instant> = None;
        // A port woke the worker: the wake's housekeeping runs at the first empty iteration.
        let mut housekeep_due = false;
        let mut now_ms = self.clock.now_ms();
        let mut now = now_ms / 1000;
        // The current pass's start, and whether the last pass moved frames (`busy_ns`).
        let (mut pass_start_ns, mut pass_moved) = (0u64, false);
        // When the spinning worker last yielded its core (see `YIELD_EVERY_NS`).
        let mut yielded_ns = 0u64;
        while !self.stop {
            // Requests wait while a bulk flow install is in progress, so they apply in order;
            // they take at most about `REQUEST_SLICE_NS` before a forwarding pass.
            // (The clock is read only when there is a request: not on the forwarding path.)
            let mut requests_from = None;
            while self.pending_flows.is_none()
                && requests_from
                    .is_none_or(|t: u64| self.clock.now_ns().saturating_sub(t) < REQUEST_SLICE_NS)
                && let Ok(req) = self.rx.try_recv()
            {
                if requests_from.is_none() {
                    requests_from = Some(self.clock.now_ns());
                }
                // A request may close or reopen a port: what it queued goes out first.
                if self.kicks.waiting() {
                    self.ring_kicks();
                }
                self.dp.changed();
                match req.cmd {
                    Command::FlowAdd { bridge, mut flows } if flows.len() > FLOW_CHUNK => {
                        match self.flows_check(&bridge, &mut flows) {
                            Ok(b) => {
                                self.pending_flows = Some(PendingFlows {
                                    bridge: b,
                                    flows: flows.into_iter(),
                                    added: 0,
                                    replaced: 0,
                                    reply: req.reply,
                                    staged: None,
                                })
                            }
                            Err(e) => {
                                let _ = req.reply.send(Err(e));
                            }
                        }
                    }
                    Command::FlowReplace { bridge, flows } if flows.len() > FLOW_CHUNK => {
                        match self.flows_partition(&bridge, flows) {
                            Ok((b, good, refused)) => {
                                self.pending_flows = Some(PendingFlows {
                                    bridge: b,
                                    flows: good.into_iter(),
                                    added: 0,
                                    replaced: 0,
                                    reply: req.reply,
                                    staged: Some((crate::flow::Classifier::new(), refused)),
                                })
                            }
                            Err(e) => {
                                let _ = req.reply.send(Err(e));
                            }
                        }
                    }
                    cmd => {
                        let answer = self.apply(cmd, now);
                        self.hand_back(req.retire);
                        let _ = req.reply.send(answer);
                    }
                }
            }
            if self.pending_flows.is_some() {
                self.dp.changed();
                self.flows_step();
            }
            if self.stop {
                break;
            }
            self.stats.iterations += 1;
            let now_ns = self.clock.now_ns();
            if pass_moved {
                self.stats.busy_ns += now_ns.saturating_sub(pass_start_ns);
            }
            pass_start_ns = now_ns;
            now_ms = now_ns / 1_000_000;
            now = now_ms / 1000;
            self.dp.now_ms = now_ms;
            self.kicks.start_pass(now_ns);
            let mut moved = self.poll_once(&mut batch, now);
            if self.peers.is_some() {
                moved += self.peer_messages(&mut batch, now);
            }
            if self.kicks.due(moved > 0) && self.ring_kicks() && moved == 0 {
                // A pass that only rang doorbells forwarded: the kernel transmitted (and, on a
                // veth, delivered) the frames inside those calls.
                self.stats.busy_ns += self.clock.now_ns().saturating_sub(pass_start_ns);
            }
            if self.stats.iterations.is_multiple_of(1024) {
                self.housekeep(now_ms);
            }
            pass_moved = moved > 0;
            if moved > 0 {
                self.stats.busy_iterations += 1;
                idle_since = None;
                last_traffic_ms = now_ms;
                first_traffic_ms.get_or_insert(now_ms);
                continue;
            }
            if self.pending_flows.is_some() {
                continue;
            }
            if std::mem::take(&mut housekeep_due) {
                self.housekeep(self.clock.now_ms());
            }
            let since = *idle_since.get_or_insert_with(Instant::now);
            let live = now_ms.saturating_sub(traffic_before_sleep_ms) < recent_ms
                || first_traffic_ms
                    .is_some_and(|t| last_traffic_ms.saturating_sub(t) > LIVE_AFTER_MS);
            let spin = match live {
                true if live_sleeps >= LINGER_AFTER => self.linger.max(SPIN_BEFORE_SLEEP),
                true => SPIN_WHEN_LIVE,
                false => SPIN_BEFORE_SLEEP,
            };
            if self.busy_poll || since.elapsed() < spin {
                // Give the core away if another thread wants it (a second switch, a VTEP peer,
                // the application on a shared core): a spinning worker otherwise holds it for
                // its whole slice while the frames it waits for cannot be produced. Alone on
                // its core, this returns at once, but not for free: at most every
                // `YIELD_EVERY_NS`.
                if pass_start_ns.saturating_sub(yielded_ns) >= YIELD_EVERY_NS {
                    std::thread::yield_now();
                    yielded_ns = pass_start_ns;
                } else {
                    std::hint::spin_loop();
                }
                continue;
            }
            if !self.rx.is_empty() {
                // Requests left for the next pass (`REQUEST_SLICE_NS`): no sleep.
                continue;
            }
            // Sleep until a port is readable, the control plane wakes us, or housekeeping.
            // (A held port's pending frames wait for its release, which wakes the worker.)
            let now_ms = self.dp.now_ms;
            let pending_tx = self
                .ports
                .iter()
                .enumerate()
                .filter(|(id, _)| !self.dp.port(*id as u16).is_some_and(|s| s.held(now_ms)))
                .any(|(_, p)| p.as_ref().is_some_and(|p| p.tx_pending()))
                || self.dp.rate_limited_waiting()
                || self.peers.as_ref().is_some_and(|p| p.waiting());
            fds.clear();
            fds.push(self.waker.fd());
            fds.extend(self.links.monitor.as_ref().map(|m| m.fd()));
            let first_port = fds.len();
            for (id, p) in self.ports.iter().enumerate() {
                // A held port is not read (a readable one would wake the worker at once, for
                // nothing); its release wakes the worker, its expiry the next timeout.
                let held = self
                    .dp
                    .port(id as u16)
                    .is_some_and(|s| s.held(self.dp.now_ms));
                if let Some(p) = p.as_ref().filter(|_| !held) {
                    p.poll_fds(&mut fds);
                }
            }
            debug_assert!(!self.kicks.waiting(), "a transmit doorbell left unrung");
            self.stats.sleeps += 1;
            live_sleeps = if live {
                live_sleeps.saturating_add(1)
            } else {
                0
            };
            if first_traffic_ms.take().is_some() {
                traffic_before_sleep_ms = last_traffic_ms;
            }
            wait_readable(
                &fds,
                &mut pollfds,
                if pending_tx { 1 } else { MAX_SLEEP_MS },
            );
            // Woken by a port (or waiting on completions): forward first and spin again; the
            // wake's housekeeping waits for the first empty iteration, so the frame that woke
            // the worker does not wait for it. Woken by a timeout, a link event or a control
            // request: housekeeping, one pass over the ports, then straight back to sleep, so
            // link-event storms (hundreds of veths elsewhere) cost no spinning.
            if pollfds[0].revents != 0 {
                self.waker.drain();
            }
            let port_ready = pollfds.iter().skip(first_port).any(|p| p.revents != 0);
            if port_ready || pending_tx {
                idle_since = None;
                housekeep_due = true;
            } else {
                self.housekeep(self.clock.now_ms());
            }
        }
        self.ring_kicks();
        self.close_all();
    }

    /// Ring every waiting transmit doorbell (see `kicks`); true if one made a syscall.
    fn ring_kicks(&mut self) -> bool {
        self.kicks.take(&mut self.kick_ports);
        let mut rang = false;
        for &id in &self.kick_ports {
            if let Some(Some(p)) = self.ports.get_mut(id as usize) {
                rang |= p.tx_kick();
            }
        }
        rang
    }

    /// Housekeeping at `now_ms`, every 1024 loop passes and after every sleep (the pass count
    /// does not move while asleep): FDB aging (which also says the datapath changed, for the
    /// port lifecycle too), the port lifecycle and the neighbour timers.
    fn housekeep(&mut self, now_ms: u64) {
        self.dp.now_ms = now_ms;
        self.dp.age_fdbs((now_ms / 1000) as u32, AGE_BUDGET);
        self.housekeep_ports(now_ms);
        crate::pipeline::neigh_timers(&mut self.dp, &mut self.frames);
    }

    /// One pass over every port: service, receive and process a burst, then flush outputs;
    /// then what crossed patch ports, bridge after bridge (`cross_patches`). Returns the
    /// number of frames received.
    fn poll_once(&mut self, batch: &mut Vec<Desc>, now: u64) -> usize {
        let mut moved = self.dns_replies();
        for id in 0..self.ports.len() {
            moved += self.poll_port(id, batch, now);
        }
        self.flush_pass();
        if self.patches.waiting() > 0 {
            moved += self.cross_patches(batch, now);
        }
        moved
    }

    /// Service port `id`, receive a burst from it and run it through the pipeline. Returns
    /// the frames received.
    #[inline]
    fn poll_port(&mut self, id: usize, batch: &mut Vec<Desc>, now: u64) -> usize {
        let Some(port) = self.ports[id].as_mut() else {
            return 0;
        };
        if self
            .dp
            .port(id as u16)
            .is_some_and(|s| s.held(self.dp.now_ms))
        {
            // Read once its bridge's flow table is in (`PortSpec::hold`).
            return 0;
        }
        let mut moved = 0;
        port.service(&mut self.frames);
        port.rx_burst(&mut self.frames, batch, BATCH);
        if !batch.is_empty()
            && let Some(st) = self.dp.port_mut(id as u16)
            && st.config.drops_rx()
        {
            // `mod-port down|no-receive`: read (so nothing stale waits in the ring) and
            // dropped.
            let n = batch.len();
            st.counters.rx_packets += n as u64;
            st.counters.rx_bytes += batch.iter().map(|d| u64::from(d.len)).sum::<u64>();
            st.counters.drops[crate::counters::DropReason::PortNoRecv as usize] += n as u64;
            for d in batch.drain(..) {
                self.frames.free(d.addr);
            }
            return n;
        }
        crate::pipeline::ratelimit::shape_rx(&mut self.dp, &mut self.frames, id as u16, batch);
        if let Some(p) = self.peers.as_mut() {
            // Several workers: where a frame came in decides its share of a congested
            // output relayed to another worker (`relay`).
            for d in batch.iter() {
                self.frames.mark_received(d.addr, id as u16);
            }
            moved += p.steer(&self.dp, &mut self.frames, id as u16, batch);
        }
        let n = batch.len();
        if n > 0 {
            moved += n;
            if self.observe.rx_tapped(id as u16) {
                self.observe
                    .on_rx(id as u16, &mut self.dp, &mut self.frames, batch);
            }
            // Several workers: decapsulated frames are steered like received ones.
            let mut steer = self.peers.as_mut().map(peers::Peers::steerer);
            self.pipeline.process_steered(
                &mut self.dp,
                &mut self.frames,
                id as u16,
                batch,
                now,
                steer.as_mut().map(|f| f as _),
            );
        }
        moved
    }

    /// Flush every output queue (and, with several workers, the hand-offs).
    fn flush_pass(&mut self) {
        if self.observe.tx_tapped() {
            self.observe.before_flush(&mut self.dp, &mut self.frames);
        }
        flush(
            &mut self.dp,
            &mut self.ports,
            &mut self.frames,
            &mut self.kicks,
        );
        if let Some(p) = self.peers.as_mut() {
            p.send_all(&mut self.dp);
        }
    }

    /// Frames sent to patch ports in this pass cross into the peer bridges now, one bridge
    /// per round, as OVS translates a patch port inside one lookup: a frame that would cross
    /// more than [`PATCH_DEPTH`] patch ports in one pass is in a loop of them and is dropped
    /// (`patch-loop`; OVS stops at its translation depth, 64, likewise). Returns the frames
    /// received from patch ports.
    fn cross_patches(&mut self, batch: &mut Vec<Desc>, now: u64) -> usize {
        let mut moved = 0;
        for _ in 0..PATCH_DEPTH {
            let mut round = 0;
            for i in 0..self.patch_ids.len() {
                let id = usize::from(self.patch_ids[i]);
                loop {
                    let n = self.poll_port(id, batch, now);
                    round += n;
                    if n == 0 {
                        break;
                    }
                }
            }
            moved += round;
            self.flush_pass();
            // Nothing taken in a round: what waits is for a held port (read once released).
            if self.patches.waiting() == 0 || round == 0 {
                return moved;
            }
        }
        for i in 0..self.patch_ids.len() {
            let id = self.patch_ids[i];
            if self.dp.port(id).is_some_and(|s| s.held(self.dp.now_ms)) {
                // What waits for a held port is read once it is released.
                continue;
            }
            let Some(port) = self.ports[usize::from(id)].as_mut() else {
                continue;
            };
            while port.rx_burst(&mut self.frames, batch, BATCH) > 0 {
                if let Some(st) = self.dp.port_mut(id) {
                    st.counters.drops[crate::counters::DropReason::PatchLoop as usize] +=
                        batch.len() as u64;
                }
                for d in batch.drain(..) {
                    self.frames.free(d.addr);
                }
            }
        }
        moved
    }

    /// Apply the next chunk of a bulk flow install; answer when it is complete.
    fn flows_step(&mut self) {
        let Some(mut p) = self.pending_flows.take() else {
            return;
        };
        let chunk: Vec<crate::flow::Flow> = p.flows.by_ref().take(FLOW_CHUNK).collect();
        let done = chunk.len() < FLOW_CHUNK || p.flows.len() == 0;
        if let Some((mut staged, refused)) = p.staged.take() {
            match flows::stage(&mut staged, chunk, self.dp.now_ms) {
                Ok((a, r)) => {
                    p.added += a;
                    p.replaced += r;
                }
                Err(e) => {
                    let _ = p.reply.send(Err(format!(
                        "after {} flows: {e} (the running table is unchanged)",
                        p.added + p.replaced
                    )));
                    return;
                }
            }
            if !done {
                p.staged = Some((staged, refused));
                self.pending_flows = Some(p);
                return;
            }
            let added = p.added;
            let answer = self
                .flows_swap(p.bridge, staged)
                .map(|()| serde_json::json!({"added": added, "refused": refused}));
            let _ = p.reply.send(answer);
            return;
        }
        match self.flows_apply(p.bridge, chunk.into_iter()) {
            Ok((a, r)) => {
                p.added += a;
                p.replaced += r;
            }
            Err(e) => {
                let _ = p
                    .reply
                    .send(Err(format!("after {} flows: {e}", p.added + p.replaced)));
                return;
            }
        }
        if done {
            let flows = self.dp.bridge(p.bridge).map_or(0, |b| b.flows.cls.len());
            let _ = p.reply.send(Ok(serde_json::json!({
                "added": p.added, "replaced": p.replaced, "flows": flows
            })));
        } else {
            self.pending_flows = Some(p);
        }
    }

    fn close_all(&mut self) {
        for id in 0..self.ports.len() {
            if self.ports[id].is_some() {
                let _ = self.remove_port(id as u16);
            }
        }
        let retired = std::mem::take(&mut self.retired);
        self.reclaim(retired);
    }

    /// The CPU time this thread has used, and the time since it started.
    pub(crate) fn cpu_and_wall_ns(&self) -> (u64, u64) {
        (thread_cpu_ns(), self.started.elapsed().as_nanos() as u64)
    }
}

/// Hand every non-empty output queue to its port and count what was sent; ports that left
/// their transmit doorbell for later are noted in `kicks`.
pub fn flush(
    dp: &mut Datapath,
    ports: &mut [Option<Box<dyn Port>>],
    frames: &mut Frames,
    kicks: &mut kicks::TxKicks,
) {
    crate::pipeline::encap_queued(dp, frames);
    crate::pipeline::ratelimit::shape_tx(dp, frames);
    crate::pipeline::gro::run(dp, frames);
    for (id, q) in dp.out.iter_mut().enumerate() {
        if q.is_empty() {
            continue;
        }
        let Some(Some(port)) = ports.get_mut(id) else {
            for d in q.drain(..) {
                frames.free(d.addr);
            }
            continue;
        };
        if let Some(Some(st)) = dp.ports.get_mut(id)
            && (st.held(dp.now_ms) || st.config.drops_tx())
        {
            let why = match st.config.drops_tx() {
                true => crate::counters::DropReason::PortNoFwd,
                false => crate::counters::DropReason::PortHeld,
            };
            st.counters.drops[why as usize] += q.len() as u64;
            for d in q.drain(..) {
                frames.free(d.addr);
            }
            continue;
        }
        let r = port.tx_queue(frames, q);
        if r.kick_deferred {
            kicks.wait(id as u16);
        }
        if let Some(Some(st)) = dp.ports.get_mut(id) {
            st.counters.tx_packets += r.sent as u64;
            st.counters.tx_bytes += r.bytes;
            let why = r.why.unwrap_or(crate::counters::DropReason::TxRingFull);
            st.counters.drops[why as usize] += r.dropped as u64;
        }
    }
}

/// A worker of 1,024 frames on no particular core, for unit tests of requests.
#[cfg(test)]
pub(crate) fn spawn_for_tests() -> WorkerHandle {
    let clock = Arc::new(crate::clock::MonotonicClock::default());
    let opts = WorkerOptions {
        core: None,
        frames: 1024,
        ..WorkerOptions::default()
    };
    spawn(opts, clock).expect("a test worker")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::counters::DropReason;
    use crate::datapath::{BridgeOptions, PortState, VlanMode};
    use crate::port::PortKind;
    use crate::port::mem::MemPort;

    /// A held port sends nothing (what was queued toward it is dropped as `port-held`) until
    /// its hold ends.
    #[test]
    fn a_held_port_sends_nothing_until_its_hold_ends() {
        let mut dp = Datapath::new();
        let b = dp.add_bridge("br0", &BridgeOptions::default()).unwrap();
        let id = dp.next_port_id().unwrap();
        let st = PortState {
            held_until_ms: 1000,
            ..PortState::new("p", PortKind::Mem, b, VlanMode::default_trunk(), 1500)
        };
        dp.add_port(id, st).unwrap();
        let mut ports: Vec<Option<Box<dyn Port>>> = (0..=id).map(|_| None).collect();
        ports[id as usize] = Some(Box::new(MemPort::sink(id)));
        let mut frames = Frames::new(64).unwrap();
        let queue = |dp: &mut Datapath, frames: &mut Frames| {
            let mut d = frames.alloc().unwrap();
            d.len = 60;
            dp.out[id as usize].push(d);
        };
        let free = frames.free_count();
        for (now_ms, sent, held) in [(0, 0, 1), (999, 0, 2), (1000, 1, 2)] {
            dp.now_ms = now_ms;
            queue(&mut dp, &mut frames);
            flush(
                &mut dp,
                &mut ports,
                &mut frames,
                &mut kicks::TxKicks::default(),
            );
            let c = &dp.port(id).unwrap().counters;
            assert_eq!(c.tx_packets, sent, "at {now_ms} ms");
            assert_eq!(
                c.drops[DropReason::PortHeld as usize],
                held,
                "at {now_ms} ms"
            );
        }
        // Every frame came back to the pool (held ones freed, the sent one by the sink).
        assert_eq!(frames.free_count(), free);
    }
}
