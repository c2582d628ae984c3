//! Opening and closing ports off the worker: the kernel work of `add-port` and `del-port` runs
//! on the caller's thread (a control-socket connection, the store, the etcd agent), never on
//! the worker, so adding or removing a port does not stall forwarding on the others.
//!
//! Contract (the threads: "caller" is whoever called [`WorkerHandle::call`]):
//! - `add-port` of an AF_XDP, AF_PACKET or TAP port is three steps, serialised with every other
//!   port change of this worker by `WorkerHandle::port_ops`:
//!   1. worker, `Command::PortCheck`: everything that can be checked before a device is opened
//!      (the spec, the bridge, the name, the VLAN mode, a free id, the OpenFlow number), in the
//!      order and with the messages of the worker-side `add-port`. For AF_XDP it also hands
//!      over a duplicate of a bound socket that owns the UMEM, if there is one.
//!   2. caller, [`open_device`]: the kernel side (TAP creation, AF_PACKET socket and its
//!      ioctls, AF_XDP: XDP program load and `BPF_LINK_CREATE`, socket creation, ring mmaps,
//!      `bind` on the shared UMEM or registering the worker's frame region, XSKMAP inserts).
//!      An error here leaves nothing behind and names the field (`port::*` errors do).
//!   3. worker, `Command::AddOpened`: the checks again (another client may have changed the
//!      bridge meanwhile), then [`crate::port::Port::attach`] (AF_XDP: frame-budget admission
//!      and stocking the fill rings from the worker's pool: the only part that needs the pool),
//!      then the datapath attach. If anything fails there the port comes back to the caller,
//!      which releases it as below: no device, program or port is left.
//! - Every request that removes ports (`del-port`, `del-br`, a failed attach) leaves them in
//!   `Worker::retired` instead of closing them. After the request the worker hands them to the
//!   caller (the request's `retire` channel) and keeps their ids reserved; the caller calls
//!   [`crate::port::Port::release`] on each (XDP detach, socket and TAP close: the RCU waits of
//!   `xsk_release`, `packet_release` and netdev unregistration happen here), then sends
//!   `Command::Reclaim`, on which the worker calls `close` (returns the frames and the budget,
//!   no syscall) and frees the ids. A request without a caller (shutdown) closes on the worker.
//! - The port lifecycle (`worker::life`) has no caller: it uses the worker's port thread
//!   ([`janitor`], `uvs-ports`). A port whose netdev went down or away is taken out of the worker
//!   and sent there to be released ([`Job::Release`]), its frames reclaimed when it comes back
//!   (`Command::Reclaim`); a netdev that came back is opened there ([`Job::Open`], with the same
//!   EBUSY wait as `add-port`) and the worker attaches the result (`Command::Reopened`), unless
//!   the port changed meanwhile (deleted, replaced, or its netdev went again: the attempt's
//!   number no longer matches), in which case the opened device is released again. A reopen
//!   waits (housekeeping retries it) while the port's previous device is still being released,
//!   so the port's frame owner tag is never shared by two devices.
//! - `add-br` with ports listed in it: the bridge alone on the worker, then each port as
//!   `add-port` above (all or nothing: a port that fails deletes the bridge again, and with it
//!   the ports added so far, released as for `del-br`).
//! - UMEM sharing: the duplicate fd of step 1 keeps the owning socket, and so the UMEM, alive
//!   while step 2 binds to it, even if that port is removed meanwhile. `port_ops` keeps
//!   `del-port` from removing it during step 2; the lifecycle can still close that port
//!   (netdev set down) during the bind: its socket then lives, bound but without a program
//!   redirecting to it, until the duplicate is dropped right after the bind. If no AF_XDP port
//!   is open at step 1 the caller registers the frame region as the UMEM itself; should the
//!   lifecycle reopen an AF_XDP port in the same instant, the region is registered twice (two
//!   UMEMs over the same memory, pinned twice; frames are named by offset, so forwarding
//!   between them should still work, but this corner is not tested).

use std::os::fd::{AsRawFd, OwnedFd};

use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};
use serde_json::{Value, json};

use super::life::LinkState;
use super::{Command, Request, Waker, Worker, WorkerHandle};
use crate::config::{PortSpec, XdpModeSpec};
use crate::port::afxdp::{AfxdpOptions, AfxdpPort, Umem, XdpMode};
use crate::port::tap::{TapError, TapOptions, TapPort};
use crate::port::{Port, PortKind};

/// A port taken out of the worker, to be released by the caller and closed by the worker (its
/// id, if it was attached: reserved until then).
pub type Retired = (Option<u16>, Box<dyn Port>);

/// Work the worker hands to its port thread ([`janitor`]).
pub(crate) enum Job {
    /// Release these ports, then have the worker reclaim their frames (`Command::Reclaim`).
    Release(Vec<Retired>),
    /// Open the device of port `id` again (attempt `seq`) and hand it to the worker
    /// (`Command::Reopened`). `umem`: a duplicate of a socket that owns the UMEM, if any.
    Open {
        /// The port.
        id: u16,
        /// The attempt.
        seq: u64,
        /// Its configuration (boxed: the job channel carries small messages).
        spec: Box<PortSpec>,
        /// A socket owning the UMEM (None: register the region).
        umem: Option<OwnedFd>,
    },
}

/// The worker's port thread: releases and opens devices for the lifecycle, answering through
/// the worker's request channel. Ends when the worker drops its `Job` sender.
pub(super) fn janitor(
    jobs: Receiver<Job>,
    worker: Sender<Request>,
    waker: Arc<crate::port::wait::Waker>,
    region: (usize, usize),
    share: Share,
) {
    for job in jobs {
        let cmd = match job {
            Job::Release(mut ports) => {
                for (_, p) in &mut ports {
                    p.release();
                }
                Command::Reclaim(ports)
            }
            Job::Open {
                id,
                seq,
                spec,
                umem,
            } => {
                let fd = umem.as_ref().map(|f| f.as_raw_fd());
                let u = Umem::shared_or_register(fd, region.0 as *mut u8, region.1);
                let port = open_device(&spec, u, BUSY_WAIT, &share, None);
                drop(umem);
                Command::Reopened { id, seq, port }
            }
        };
        let (reply, _) = crossbeam_channel::bounded(1);
        let req = Request {
            cmd,
            reply,
            retire: None,
        };
        if worker.send(req).is_err() {
            return;
        }
        waker.wake();
    }
}

/// Which worker a device is opened for: its number and the core of every worker (index =
/// worker number; the length is the number of workers).
#[derive(Clone, Debug)]
pub(crate) struct Share {
    pub index: usize,
    pub cores: Arc<[Option<usize>]>,
}

impl Share {
    /// Number of workers.
    pub fn workers(&self) -> usize {
        self.cores.len().max(1)
    }

    /// `spec`'s `rxq_affinity` with each core resolved to the worker running on it. Err names
    /// the field and a core no worker runs on.
    pub fn pins(&self, spec: &PortSpec) -> Result<Vec<crate::port::afxdp::rxq::Pin>, String> {
        let Some(text) = spec.rxq_affinity.as_deref() else {
            return Ok(Vec::new());
        };
        if self.workers() == 1 {
            // One worker polls every queue: the pins choose nothing (and may name the cores
            // of a configuration saved with several workers).
            return Ok(Vec::new());
        }
        crate::port::afxdp::rxq::parse_affinity(text)?
            .into_iter()
            .map(|(q, core)| {
                let w = self.cores.iter().position(|c| *c == Some(core));
                w.map(|w| (q, w as u32)).ok_or_else(|| {
                    let on: Vec<String> =
                        self.cores.iter().flatten().map(|c| c.to_string()).collect();
                    format!(
                        "rxq_affinity: core {core} runs no worker (workers on cores: {})",
                        if on.is_empty() {
                            "none pinned".to_string()
                        } else {
                            on.join(",")
                        }
                    )
                })
            })
            .collect()
    }
}

/// How long an off-worker AF_XDP open retries a bind that answers EBUSY (see
/// `AfxdpOptions::busy_wait`): a port deleted and added again at once meets it.
pub const BUSY_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// Open the kernel side of an AF_XDP, AF_PACKET or TAP port; AF_XDP binds to `umem` and
/// retries an EBUSY bind for `busy_wait` (zero on the worker). The port is not attached yet
/// (see [`crate::port::Port::attach`]). With several workers (`worker` of `workers`) each
/// opens its own sockets: AF_PACKET sockets join the netdev's fanout group (the kernel spreads
/// received frames by a symmetric flow hash); AF_XDP sockets bind this worker's share of the
/// netdev's queues (the kernel's rx queue choice spreads frames) under one shared XDP program;
/// TAP ports are multi-queue TAPs, one queue per worker (the first worker's open creates it);
/// a single-queue TAP made outside uvs is held by worker 0, the others send through it.
pub(crate) fn open_device(
    spec: &PortSpec,
    umem: Umem,
    busy_wait: std::time::Duration,
    share: &Share,
    bridge: Option<&str>,
) -> Result<Box<dyn Port>, String> {
    let (worker, workers) = (share.index, share.workers());
    match spec.kind {
        PortKind::Afxdp => {
            let opts = AfxdpOptions {
                mode: match spec.xdp_mode {
                    XdpModeSpec::Auto => XdpMode::Auto,
                    XdpModeSpec::Native => XdpMode::Native,
                    XdpModeSpec::Generic => XdpMode::Generic,
                },
                busy_wait,
                share: (workers > 1).then_some((worker as u32, workers as u32)),
                pinned: share.pins(spec)?,
                ..AfxdpOptions::default()
            };
            Ok(Box::new(
                AfxdpPort::prepare(&spec.name, umem, &opts).map_err(|e| e.to_string())?,
            ))
        }
        PortKind::Afpacket => Ok(Box::new(
            crate::port::afpacket::AfpacketPort::open_shared(&spec.name, 0, workers > 1)
                .map_err(|e| e.to_string())?,
        )),
        PortKind::Tap => {
            // The bridge's own (LOCAL) port keeps one address across restarts, as OVS keeps its
            // bridge's: the host's neighbours' ARP entries for it stay right.
            let mac = bridge.filter(|b| *b == spec.name).map(|b| {
                crate::wire::MacAddr::from_u64(crate::openflow::made_mac(b, &spec.name)).0
            });
            let opts = TapOptions {
                mtu: spec.mtu,
                multi_queue: workers > 1,
                mac,
                ..TapOptions::default()
            };
            match TapPort::create(&spec.name, 0, &opts) {
                Ok(p) => Ok(Box::new(p)),
                // A single-queue TAP made outside uvs: worker 0 holds its one queue, the
                // others send through worker 0.
                Err(TapError::NotMultiQueue { .. }) if worker == 0 => {
                    let single = TapOptions {
                        multi_queue: false,
                        ..opts
                    };
                    TapPort::create(&spec.name, 0, &single)
                        .map(|p| Box::new(p) as Box<dyn Port>)
                        .map_err(|e| e.to_string())
                }
                Err(e @ TapError::NotMultiQueue { .. }) => {
                    match crate::port::queueless::QueuelessPort::new(&spec.name, PortKind::Tap, 0) {
                        Some(p) => Ok(Box::new(p)),
                        None => Err(e.to_string()),
                    }
                }
                Err(e) => Err(e.to_string()),
            }
        }
        k => Err(format!("type {k}: no device to open")),
    }
}

impl WorkerHandle {
    /// `add-port` of a port with a device: the three steps of the module documentation.
    pub(super) fn add_port_off_worker(
        &self,
        bridge: String,
        spec: PortSpec,
    ) -> Result<Value, String> {
        let (umem_tx, umem_rx) = crossbeam_channel::bounded(1);
        self.call_raw(Command::PortCheck {
            bridge: bridge.clone(),
            spec: spec.clone(),
            umem: umem_tx,
        })?;
        let shared: Option<OwnedFd> = umem_rx.try_recv().ok();
        let fd = shared.as_ref().map(|f| f.as_raw_fd());
        let umem = Umem::shared_or_register(fd, self.region.0 as *mut u8, self.region.1);
        let port = open_device(&spec, umem, BUSY_WAIT, &self.share, Some(&bridge));
        drop(shared);
        self.call_raw(Command::AddOpened {
            bridge,
            spec,
            port: port?,
        })
    }

    /// `add-br` of a bridge that lists ports with devices (see the module documentation).
    pub(super) fn add_bridge_off_worker(
        &self,
        mut spec: crate::config::BridgeSpec,
    ) -> Result<Value, String> {
        let ports = std::mem::take(&mut spec.port);
        let name = spec.name.clone();
        let made = self.call_raw(Command::AddBridge(spec))?;
        for p in ports {
            let r = if p.kind.has_device() {
                self.add_port_off_worker(name.clone(), p)
            } else {
                self.call_raw(Command::AddPort {
                    bridge: name.clone(),
                    spec: p,
                })
            };
            if let Err(e) = r {
                let _ = self.call_raw(Command::DelBridge(name));
                return Err(e);
            }
        }
        Ok(made)
    }

    /// Release `ports` here, then have the worker take their frames back.
    pub(super) fn give_back(&self, ports: Vec<Retired>) {
        give_back_via(&self.tx, &self.waker, ports);
    }

    /// After a call that timed out: the worker may still finish the command and hand ports
    /// back on `retired`; a thread releases them when it does (else their frames and ids would
    /// stay taken until uvs stops). It ends when the worker drops the request.
    pub(super) fn give_back_late(&self, retired: Receiver<Vec<Retired>>) {
        let (tx, waker) = (self.tx.clone(), self.waker.clone());
        let spawned = std::thread::Builder::new()
            .name("uvs-retire".into())
            .spawn(move || {
                for ports in retired.iter() {
                    give_back_via(&tx, &waker, ports);
                }
            });
        if let Err(e) = spawned {
            tracing::error!("cannot start a thread to release ports after a timeout: {e}");
        }
    }
}

/// [`WorkerHandle::give_back`] from the parts of a handle.
fn give_back_via(tx: &Sender<Request>, waker: &Waker, mut ports: Vec<Retired>) {
    for (_, p) in &mut ports {
        p.release();
    }
    let (reply, rx) = crossbeam_channel::bounded(1);
    let req = Request {
        cmd: Command::Reclaim(ports),
        reply,
        retire: None,
    };
    if tx.send(req).is_ok() {
        waker.wake();
        let _ = rx.recv_timeout(std::time::Duration::from_secs(30));
    }
}

impl Worker {
    /// Step 1 of an off-worker `add-port` (see the module documentation). Changes nothing.
    pub(super) fn port_check(
        &mut self,
        bridge: &str,
        spec: &PortSpec,
        umem: Sender<OwnedFd>,
    ) -> Result<Value, String> {
        spec.validate()?;
        let b = self.bridge_id(bridge)?;
        if let Some(id) = self.dp.port_id(&spec.name)
            && !self
                .life(id)
                .is_some_and(|l| l.spec.is_some() && l.state != LinkState::Up)
        {
            return Err(self.dp.port_exists(id));
        }
        spec.vlan_mode()?;
        self.free_port_id()?;
        self.dp
            .choose_ofport(b, &spec.name, spec.ofport_wanted(bridge))?;
        if spec.kind == PortKind::Afxdp
            && let Some(dup) = self.umem_dup()?
        {
            let _ = umem.send(dup);
        }
        Ok(Value::Null)
    }

    /// Send `port` (taken out of port `id`, attached or not) to the port thread to be released
    /// and reclaimed; closes it here if that thread is gone.
    pub(super) fn release_later(&mut self, id: Option<u16>, port: Box<dyn Port>) {
        match self.jobs.send(Job::Release(vec![(id, port)])) {
            Ok(()) => self.closing.extend(id),
            Err(e) => {
                if let Job::Release(ports) = e.into_inner() {
                    self.reclaim(ports);
                }
            }
        }
    }

    /// A duplicate of a socket that owns the UMEM, if an AF_XDP port is open.
    pub(super) fn umem_dup(&self) -> Result<Option<OwnedFd>, String> {
        match self.umem_fds.first() {
            Some((_, fd)) => crate::port::afxdp::socket::dup_fd(*fd)
                .map(Some)
                .map_err(|e| format!("could not share the UMEM: {e}")),
            None => Ok(None),
        }
    }

    /// Open an AF_XDP, AF_PACKET or TAP port as port `id` on the worker itself (`add-br` with
    /// ports, a worker without a port thread): [`open_device`] and `attach`. AF_XDP ports
    /// register their socket for the next one to share the UMEM.
    pub(crate) fn open_io(
        &mut self,
        id: u16,
        spec: &PortSpec,
        bridge: &str,
    ) -> Result<Box<dyn Port>, String> {
        let region = self.frames.region();
        let fd = self.umem_fds.first().map(|(_, fd)| *fd);
        let umem = Umem::shared_or_register(fd, region.base(), region.len());
        let mut p = open_device(
            spec,
            umem,
            std::time::Duration::ZERO,
            &self.share,
            Some(bridge),
        )?;
        if let Err(e) = p.attach(id, &mut self.frames) {
            p.close(&mut self.frames);
            return Err(e);
        }
        if let Some(fd) = p.shared_umem_fd() {
            self.umem_fds.push((id, fd));
        }
        Ok(p)
    }

    /// The first port id that is neither in use nor reserved by a port being closed.
    pub(super) fn free_port_id(&self) -> Result<u16, String> {
        self.dp.next_port_id_avoiding(&self.closing)
    }

    /// After a request: hand the ports it removed to its caller (`retire`), reserving their
    /// ids, or close them here if there is no caller.
    pub(super) fn hand_back(&mut self, retire: Option<Sender<Vec<Retired>>>) {
        if self.retired.is_empty() {
            return;
        }
        let ports = std::mem::take(&mut self.retired);
        let ids: Vec<u16> = ports.iter().filter_map(|(id, _)| *id).collect();
        let ports = match retire {
            Some(r) => match r.send(ports) {
                Ok(()) => {
                    self.closing.extend(ids);
                    return;
                }
                Err(e) => e.into_inner(),
            },
            None => ports,
        };
        self.reclaim(ports);
    }

    /// Close `ports` (released already, or released now) and free their ids.
    pub(super) fn reclaim(&mut self, ports: Vec<Retired>) -> Value {
        let n = ports.len();
        for (id, mut p) in ports {
            p.close(&mut self.frames);
            if let Some(id) = id {
                self.closing.retain(|c| *c != id);
                // A reopen that waited for this release goes ahead now.
                if self
                    .life(id)
                    .is_some_and(|l| l.retry && l.state != LinkState::Up)
                {
                    self.reopen(id);
                }
            }
        }
        json!({"reclaimed": n})
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::super::{WorkerOptions, spawn};
    use crate::config::{BridgeSpec, PortSpec};
    use crate::packet::{Desc, Frames};
    use crate::port::{Port, PortKind, TxResult};
    use crate::worker::Command;

    /// The threads `release` and `close` ran on.
    type Log = Arc<Mutex<Vec<(&'static str, String)>>>;

    /// A port that records where its kernel side was released and where it was closed.
    struct Recorder(Log);

    fn here() -> String {
        std::thread::current().name().unwrap_or("?").to_string()
    }

    impl Port for Recorder {
        fn kind(&self) -> PortKind {
            PortKind::Mem
        }
        fn rx_burst(&mut self, _: &mut Frames, _: &mut Vec<Desc>, _: usize) -> usize {
            0
        }
        fn tx_burst(&mut self, frames: &mut Frames, batch: &mut Vec<Desc>) -> TxResult {
            for d in batch.drain(..) {
                frames.free(d.addr);
            }
            TxResult::default()
        }
        fn service(&mut self, _: &mut Frames) {}
        fn poll_fds(&self, _: &mut Vec<std::os::fd::RawFd>) {}
        fn mtu(&self) -> u32 {
            1500
        }
        fn release(&mut self) {
            self.0.lock().unwrap().push(("release", here()));
        }
        fn close(&mut self, _: &mut Frames) {
            self.0.lock().unwrap().push(("close", here()));
        }
    }

    /// `del-port` and `del-br` release the port on the caller's thread and close it (return its
    /// frames) on the worker, once; the id stays taken until then and is free again after.
    #[test]
    fn removed_ports_are_released_by_the_caller_and_closed_by_the_worker() {
        let clock = Arc::new(crate::clock::MonotonicClock::default());
        let opts = WorkerOptions {
            core: None,
            frames: 1024,
            ..WorkerOptions::default()
        };
        let w = spawn(opts, clock).unwrap();
        let b = BridgeSpec::from_args("br0", &[]).unwrap();
        w.call(Command::AddBridge(b)).unwrap();
        let log: Log = Arc::default();
        let attach = |name: &str| {
            let l = log.clone();
            let v = w
                .call(Command::AttachPort {
                    bridge: "br0".into(),
                    name: name.into(),
                    build: Box::new(move |_| Box::new(Recorder(l))),
                })
                .unwrap();
            v["id"].as_u64().unwrap()
        };
        let id = attach("p0");
        w.call(Command::DelPort("p0".into())).unwrap();
        let me = here();
        assert_eq!(
            *log.lock().unwrap(),
            [("release", me.clone()), ("close", "uvs-worker".into())]
        );
        // Reclaimed: the id is handed out again.
        assert_eq!(attach("p1"), id);
        log.lock().unwrap().clear();
        w.call(Command::DelBridge("br0".into())).unwrap();
        assert_eq!(
            *log.lock().unwrap(),
            [("release", me), ("close", "uvs-worker".into())]
        );
        w.shutdown();
    }

    /// `add-br` with ports: opened off the worker, all or nothing (root: TAP devices).
    #[test]
    fn add_br_with_ports_opens_them_off_the_worker_all_or_nothing() {
        if !crate::port::wait::is_root() {
            eprintln!("SKIP add_br_with_ports_opens_them_off_the_worker_all_or_nothing: not root");
            return;
        }
        let exists = |n: &str| std::path::Path::new("/sys/class/net").join(n).exists();
        let pid = std::process::id() % 100_000;
        let (t1, t2) = (format!("uob{pid}a"), format!("uob{pid}b"));
        let tap = |n: &str| PortSpec::from_args(n, &["type=tap".to_string()]).unwrap();
        let clock = Arc::new(crate::clock::MonotonicClock::default());
        let w = spawn(WorkerOptions::default(), clock).unwrap();
        let mut b = BridgeSpec::from_args("br0", &[]).unwrap();
        b.port = vec![tap(&t1), tap(&t2)];
        w.call(Command::AddBridge(b)).unwrap();
        assert!(exists(&t1) && exists(&t2));
        let v = w.call(Command::RunningConfig).unwrap();
        assert_eq!(
            v["bridge"][0]["port"].as_array().map(Vec::len),
            Some(2),
            "{v}"
        );
        w.call(Command::DelBridge("br0".into())).unwrap();
        assert!(!exists(&t1) && !exists(&t2));
        // The second port cannot open (no such netdev): the bridge and the first port go.
        let mut b = BridgeSpec::from_args("br1", &[]).unwrap();
        let ghost = PortSpec::from_args(&format!("uob{pid}g"), &[]).unwrap();
        b.port = vec![tap(&t1), ghost];
        assert!(w.call(Command::AddBridge(b)).is_err());
        assert!(!exists(&t1), "the first port's TAP is released again");
        let v = w.call(Command::RunningConfig).unwrap();
        assert!(v["bridge"].as_array().is_none_or(Vec::is_empty), "{v}");
        w.shutdown();
    }

    /// Without a caller to hand them to (shutdown), ports are closed on the worker.
    #[test]
    fn shutdown_closes_ports_on_the_worker() {
        let clock = Arc::new(crate::clock::MonotonicClock::default());
        let w = spawn(WorkerOptions::default(), clock).unwrap();
        let b = BridgeSpec::from_args("br0", &[]).unwrap();
        w.call(Command::AddBridge(b)).unwrap();
        let log: Log = Arc::default();
        let l = log.clone();
        w.call(Command::AttachPort {
            bridge: "br0".into(),
            name: "p0".into(),
            build: Box::new(move |_| Box::new(Recorder(l))),
        })
        .unwrap();
        w.shutdown();
        let log = log.lock().unwrap();
        assert_eq!(log.len(), 1, "{log:?}");
        assert_eq!(log[0], ("close", "uvs-worker".to_string()));
    }
}
