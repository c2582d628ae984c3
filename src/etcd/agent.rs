//! The etcd agent: one thread, a current-thread tokio runtime, sessions with back-off (see the
//! module contract in `etcd/mod.rs`). It does the IO; what to program comes from the pure
//! functions of the parent module.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, PutOptions, Txn, TxnOp,
    WatchOptions,
};
use serde_json::{Value, json};
use tracing::{error, info, warn};

use super::schema::{self, BackendData, LeaseAttrs, NetConfig};
use super::{
    EtcdSpec, OwnKey, PeerLease, check_peer, own_gateway_ops, own_key, peer_del_ops, peer_ops,
};
use crate::worker::{Command, OverlayOp, WorkerHandle};

/// Ops per worker request (bounded work per request).
const OPS_PER_CALL: usize = 512;
/// Back-off bounds.
const BACKOFF_MIN: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// How often the agent checks that what it programmed is still in the switch (`repair`).
const CHECK_EVERY: Duration = Duration::from_secs(2);
/// HTTP/2 keep-alive ping interval on the etcd connection: a silent path (packets dropped,
/// etcd frozen) fails the open streams (the watch) even while nothing is asked. etcd's
/// servers refuse pings more often than every 5 s (`--grpc-keepalive-min-time`).
const KEEPALIVE_EVERY: Duration = Duration::from_secs(10);

/// How often `overlay-show`'s status is rewritten while leases keep coming (each rewrite
/// copies every peer: once per watch event, 5,000 leases written one by one cost minutes).
const PUBLISH_EVERY: Duration = Duration::from_millis(200);

/// The Network's vxlan Backend and our vxlan port disagree: leasing would announce a VNI
/// and port this host does not use, and no packet would pass between it and its peers.
#[derive(Debug, thiserror::Error)]
#[error(
    "{key}: Backend VNI {vni} Port {port}, but vxlan port '{name}' has vni={port_vni} dst_port={port_dst}: not leasing until they match"
)]
pub struct BackendMismatch {
    /// The configuration key.
    pub key: String,
    /// The Network's `Backend.VNI`.
    pub vni: u32,
    /// The Network's `Backend.Port`.
    pub port: u16,
    /// The vxlan port's name.
    pub name: String,
    /// Its `vni`.
    pub port_vni: u32,
    /// Its `dst_port`.
    pub port_dst: u16,
}

/// An etcd request that got no answer in time (a silent path or a frozen etcd: no error
/// comes otherwise, and the session would wait forever).
#[derive(Debug, thiserror::Error)]
#[error("{what}: no answer from etcd in {after:?}")]
pub struct Timeout {
    /// The request.
    pub what: String,
    /// How long it waited.
    pub after: Duration,
}

/// How long one etcd request (a renewal included) may take: a third of the TTL (so a
/// renewal that hangs still ends the session before the lease expires), between 2 and 10 s.
pub fn request_timeout(ttl: u64) -> Duration {
    Duration::from_secs(ttl / 3).clamp(Duration::from_secs(2), Duration::from_secs(10))
}

/// `f`, or a [`Timeout`] after `after`; errors are prefixed with `what`.
async fn within<T, E: std::fmt::Display>(
    after: Duration,
    what: &str,
    f: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, String> {
    match tokio::time::timeout(after, f).await {
        Ok(r) => r.map_err(|e| format!("{what}: {e}")),
        Err(_) => Err(Timeout {
            what: what.to_string(),
            after,
        }
        .to_string()),
    }
}

/// What `overlay-show` reads: the agent's view, rewritten after every change.
pub type Status = Arc<Mutex<Value>>;

/// A running agent (its thread ends with the process).
pub struct Agent {
    /// Shared status for `overlay-show`.
    pub status: Status,
}

struct Peer {
    lease: PeerLease,
    /// When this value was first seen (unix seconds).
    since: u64,
    /// Its etcd mod revision: of two leases with one VtepMAC, the newer one's PublicIP gets
    /// the FDB entry (a host that came back with a new address, or without its state file).
    rev: i64,
    /// Everything it needs was applied without an error (set by `apply`, not before).
    programmed: bool,
    /// Why it is not programmed: refused (see `refused`) or an error applying it.
    error: Option<String>,
    /// Refused before anything was tried ([`check_peer`], or a value this network cannot
    /// program): not tried again until the lease changes.
    refused: bool,
}

/// A subnet lease's key: (subnet, length).
type Key = (Ipv4Addr, u8);

/// Ops for the worker, each with the peer it programs (None: a removal, whose failure
/// changes no peer's state), so that `apply` can tell which peers were programmed.
#[derive(Default)]
struct Batch {
    ops: Vec<OverlayOp>,
    owner: Vec<Option<Key>>,
}

impl Batch {
    fn add(&mut self, owner: Option<Key>, ops: impl IntoIterator<Item = OverlayOp>) {
        for op in ops {
            self.ops.push(op);
            self.owner.push(owner);
        }
    }

    fn append(&mut self, mut other: Batch) {
        self.ops.append(&mut other.ops);
        self.owner.append(&mut other.owner);
    }
}

struct Own {
    subnet: Ipv4Addr,
    len: u8,
    lease_id: i64,
    /// The key's etcd create revision when we took it: a write over the key keeps it (the
    /// subnet is still ours: written back), a key deleted and created again changes it.
    create_rev: i64,
    vtep_mac: String,
    /// Last successful renewal (unix seconds).
    renewed: u64,
    renew_error: Option<String>,
}

struct State {
    spec: EtcdSpec,
    state_file: std::path::PathBuf,
    worker: Arc<WorkerHandle>,
    status: Status,
    public_ip: Ipv4Addr,
    cfg: Option<NetConfig>,
    own: Option<Own>,
    peers: BTreeMap<(Ipv4Addr, u8), Peer>,
    connected: bool,
    revision: i64,
    last_error: Option<String>,
    resyncs: u64,
    /// Times the programmed state was found removed and programmed again (`repair`).
    repairs: u64,
    /// Our own key was deleted (by someone else): take it again.
    own_lost: bool,
    /// Our own key was overwritten by another host (at this mod revision, with this value):
    /// write ours back.
    overwritten: Option<(i64, String)>,
    /// The WARN lines for ignored leases and keys (a host writing thousands of them).
    ignored_log: crate::log_limit::LogLimit,
    /// When `overlay-show`'s status was last rewritten, and when it is next due (None: up
    /// to date): rewritten at most every [`PUBLISH_EVERY`] while leases keep coming.
    published: Instant,
    publish_due: Option<Instant>,
    /// Why the overlay is down: our subnet was deleted and leased by another host while we
    /// held it (see [`OwnKey::Taken`]); the bridges keep their addresses.
    down: Option<String>,
    /// Keys under `PREFIX/subnets/` that are no lease key (`garbage`, `10.5.300.0-24`), or
    /// leases whose value is no flannel JSON: key -> why, shown by `overlay-show`.
    bad_keys: BTreeMap<String, String>,
}

impl State {
    /// A state with nothing leased, learned or connected yet.
    fn new(
        spec: EtcdSpec,
        state_file: std::path::PathBuf,
        worker: Arc<WorkerHandle>,
        status: Status,
        public_ip: Ipv4Addr,
    ) -> State {
        State {
            spec,
            state_file,
            worker,
            status,
            public_ip,
            cfg: None,
            own: None,
            peers: BTreeMap::new(),
            connected: false,
            revision: 0,
            last_error: None,
            resyncs: 0,
            repairs: 0,
            own_lost: false,
            overwritten: None,
            ignored_log: crate::log_limit::LogLimit::default(),
            published: Instant::now(),
            publish_due: None,
            down: None,
            bad_keys: BTreeMap::new(),
        }
    }
}

/// Start the agent thread. `state_file` is where the subnet is kept across restarts.
pub fn start(
    spec: EtcdSpec,
    state_file: std::path::PathBuf,
    worker: Arc<WorkerHandle>,
) -> Result<Agent, String> {
    spec.validate()?;
    let public_ip = public_ip_of(&worker, &spec)?;
    let status: Status = Arc::new(Mutex::new(json!({"connected": false})));
    let mut st = State::new(spec, state_file, worker, status.clone(), public_ip);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("etcd: tokio runtime: {e}"))?;
    std::thread::Builder::new()
        .name("uvs-etcd".into())
        .spawn(move || rt.block_on(st.run()))
        .map_err(|e| format!("etcd: thread: {e}"))?;
    Ok(Agent { status })
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The vxlan port's settings (from `show`) the overlay depends on.
#[derive(Debug, Clone, Copy)]
struct VxlanPort {
    local_ip: Ipv4Addr,
    vni: u32,
    dst_port: u16,
    /// The MTU its inner frames can have (its underlay bridge's MTU - 50).
    inner_mtu: u32,
}

/// The vxlan port `spec.vxlan_port`'s settings, as `show` describes them now.
fn vxlan_port(w: &WorkerHandle, spec: &EtcdSpec) -> Result<VxlanPort, String> {
    let v = w.call(Command::Show)?;
    let ports = v["bridges"].as_array().into_iter().flatten();
    let port = ports
        .flat_map(|b| b["ports"].as_array().into_iter().flatten())
        .find(|p| p["name"] == spec.vxlan_port.as_str());
    let details = port.and_then(|p| p["details"].as_str()).unwrap_or_default();
    let field = |k: &str| {
        details
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix(k)?.strip_prefix('='))
    };
    let parsed = || {
        Some(VxlanPort {
            local_ip: field("local_ip")?.parse().ok()?,
            vni: field("vni")?.parse().ok()?,
            dst_port: field("dst_port")?.parse().ok()?,
            inner_mtu: field("inner_mtu")?.parse().ok()?,
        })
    };
    parsed().ok_or_else(|| format!("there is no vxlan port '{}'", spec.vxlan_port))
}

/// This host's PublicIP now: `etcd.public_ip`, else the vxlan port's `local_ip` (which a
/// reload or `set-port` may move).
fn public_ip_of(w: &WorkerHandle, spec: &EtcdSpec) -> Result<Ipv4Addr, String> {
    match spec.public_ip {
        Some(ip) => Ok(ip),
        None => vxlan_port(w, spec)
            .map(|p| p.local_ip)
            .map_err(|e| format!("etcd.public_ip: not set, and {e} to take its local_ip from")),
    }
}

impl State {
    async fn run(&mut self) {
        self.program_saved();
        let mut backoff = BACKOFF_MIN;
        loop {
            let t0 = Instant::now();
            let e = self.session().await.err().unwrap_or_default();
            // A session that got as far as following the watch (it clears `last_error`) ended
            // on a new problem: retry soon again, whatever the failures before it had grown the
            // wait to (a subnet deleted right after etcd came back waited 4 s).
            if self.last_error.is_none() || t0.elapsed() > Duration::from_secs(10) {
                backoff = BACKOFF_MIN;
            }
            self.connected = false;
            if let Some(o) = self.own.as_mut() {
                o.renew_error.get_or_insert_with(|| e.clone());
            }
            warn!("etcd: {e}; keeping what is programmed, retrying in {backoff:?}");
            self.last_error = Some(e);
            self.publish();
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    /// Connect, (re)take our lease, resync, then renew and follow the watch until an error.
    async fn session(&mut self) -> Result<(), String> {
        let t = request_timeout(self.spec.ttl);
        let opts = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(2))
            .with_timeout(t)
            .with_keep_alive(KEEPALIVE_EVERY, t)
            .with_keep_alive_while_idle(true);
        let what = format!("connect {:?}", self.spec.endpoints);
        let mut c = within(t, &what, Client::connect(&self.spec.endpoints, Some(opts))).await?;
        let key = format!("{}/config", self.spec.prefix.trim_end_matches('/'));
        let r = within(t, &format!("get {key}"), c.get(key.clone(), None)).await?;
        let kv = r.kvs().first().ok_or_else(|| format!("{key}: missing"))?;
        let cfg = NetConfig::parse(kv.value()).map_err(|e| format!("{key}: {e}"))?;
        if let schema::Backend::Vxlan { vni, port } = cfg.backend {
            let p = vxlan_port(&self.worker, &self.spec)?;
            if (p.vni, p.dst_port) != (vni, port) {
                return Err(BackendMismatch {
                    key,
                    vni,
                    port,
                    name: self.spec.vxlan_port.clone(),
                    port_vni: p.vni,
                    port_dst: p.dst_port,
                }
                .to_string());
            }
        }
        let ip = public_ip_of(&self.worker, &self.spec)?;
        if ip != self.public_ip {
            warn!(
                "etcd: PublicIP moved from {} to {ip} (the vxlan port's local_ip); announcing it",
                self.public_ip
            );
            self.public_ip = ip;
        }
        if self.cfg.as_ref().is_some_and(|old| *old != cfg) {
            warn!("etcd: {key} changed; taking a new lease");
            self.drop_all_peers();
            if let Some(old) = self.own.take() {
                self.revoke(&mut c, &old).await;
            }
        }
        self.cfg = Some(cfg);
        self.connected = true;
        self.acquire(&mut c).await?;
        let rev = self.resync(&mut c).await?;
        self.write_back(&mut c).await?;
        let own = self.own.as_ref().expect("acquired");
        let (mut keeper, mut acks) =
            within(t, "keep-alive", c.lease_keep_alive(own.lease_id)).await?;
        let prefix = format!("{}/subnets/", self.spec.prefix.trim_end_matches('/'));
        let wopts = WatchOptions::new()
            .with_prefix()
            .with_start_revision(rev + 1);
        let mut watch = within(t, "watch", c.watch(prefix, Some(wopts))).await?;
        let period = Duration::from_secs((self.spec.ttl / 3).max(1));
        // The first tick is at once: renewing confirms the lease at every (re)connect.
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut check = tokio::time::interval(CHECK_EVERY);
        self.last_error = None;
        self.publish();
        loop {
            let due = self.publish_due.map(tokio::time::Instant::from_std);
            let far = tokio::time::Instant::now() + Duration::from_secs(3600);
            tokio::select! {
                _ = tick.tick() => self.renew(&mut keeper, &mut acks).await?,
                _ = tokio::time::sleep_until(due.unwrap_or(far)), if due.is_some() => {
                    self.publish();
                }
                _ = check.tick() => {
                    self.flush_ignored();
                    self.repair();
                    self.follow_public_ip(&mut c).await?;
                }
                m = watch.message() => {
                    let m = m.map_err(|e| format!("watch: {e}"))?;
                    self.on_watch(m.ok_or("watch: closed by etcd")?)?;
                    self.write_back(&mut c).await?;
                }
            }
        }
    }

    /// Revoke the etcd lease of a subnet we leave (the Network changed): its key goes at once
    /// instead of with its TTL (24 h by default), during which every host kept routing the
    /// old subnet to us (found by a tester). A failure is logged; the key then expires.
    async fn revoke(&self, c: &mut Client, old: &Own) {
        let key = schema::subnet_key(&self.spec.prefix, old.subnet, old.len);
        let t = request_timeout(self.spec.ttl);
        match within(t, "lease revoke", c.lease_revoke(old.lease_id)).await {
            Ok(_) => info!("etcd: revoked our lease of {key}"),
            Err(e) => warn!("etcd: {key}: {e}; it expires with its TTL"),
        }
    }

    /// A reload (or `set-port`) moved the vxlan port's `local_ip`: announce the new PublicIP
    /// in our lease, same subnet and same etcd lease (a transaction that holds while the key
    /// is still on our lease; else the session ends and `acquire` takes it again). Found by
    /// a tester: the lease kept announcing the old address, renewed forever, and peers sent
    /// to it. A `public_ip` set in `[etcd]` never moves.
    async fn follow_public_ip(&mut self, c: &mut Client) -> Result<(), String> {
        if self.spec.public_ip.is_some() {
            return Ok(());
        }
        // No such port for now (a reload re-creating it): the next check looks again.
        let Ok(ip) = public_ip_of(&self.worker, &self.spec) else {
            return Ok(());
        };
        let (Some(cfg), Some(own)) = (self.cfg.clone(), self.own.as_ref()) else {
            return Ok(());
        };
        if ip == self.public_ip {
            return Ok(());
        }
        let old = std::mem::replace(&mut self.public_ip, ip);
        let key = schema::subnet_key(&self.spec.prefix, own.subnet, own.len);
        let value = self.own_attrs(&cfg, &own.vtep_mac).to_json();
        let put = TxnOp::put(
            key.clone(),
            value,
            Some(PutOptions::new().with_lease(own.lease_id)),
        );
        let held = Compare::lease(key.clone(), CompareOp::Equal, own.lease_id);
        let txn = c.txn(Txn::new().when(vec![held]).and_then(vec![put]));
        let t = request_timeout(self.spec.ttl);
        if !within(t, "announcing our new PublicIP", txn)
            .await?
            .succeeded()
        {
            return Err(format!(
                "{key} is no longer on our lease; leasing again as {ip}"
            ));
        }
        warn!(
            "etcd: PublicIP moved from {old} to {ip} (the vxlan port's local_ip): {key} announces it"
        );
        self.publish();
        Ok(())
    }

    /// Our lease's value: PublicIP, backend and (vxlan) VNI and VtepMAC.
    fn own_attrs(&self, cfg: &NetConfig, vtep_mac: &str) -> LeaseAttrs {
        LeaseAttrs {
            public_ip: self.public_ip,
            backend_type: cfg.backend_type().into(),
            backend_data: match cfg.backend {
                schema::Backend::Vxlan { vni, .. } => Some(BackendData {
                    vni,
                    vtep_mac: vtep_mac.to_string(),
                }),
                schema::Backend::HostGw => None,
            },
        }
    }

    /// Program our gateways and every peer again if the switch lost some of it (a reload
    /// re-created a bridge, an operator deleted a route or FDB entry): see
    /// `Worker::overlay_check`. Cheap when nothing was lost (one request to the worker).
    fn repair(&mut self) {
        // Nothing programmed yet (no lease): nothing to check, no request to the worker.
        let Some(subnet) = self.own.as_ref().map(|o| o.subnet) else {
            return;
        };
        let intact = self
            .worker
            .call(Command::OverlayIntact)
            .map_or(true, |v| v["intact"] != false);
        let Some(cfg) = self.cfg.clone().filter(|_| !intact) else {
            return;
        };
        warn!("etcd: programmed state was removed from the switch; programming it again");
        self.repairs += 1;
        if let Err(e) = self.program_own(&cfg, subnet) {
            warn!("etcd: {e}");
            self.last_error = Some(e);
        }
        let ops = self.all_peer_ops(&cfg, |p| p.programmed);
        self.apply(ops);
        self.publish();
    }

    /// What programs the peers `which` picks, oldest lease first, so that where two leases
    /// share a VtepMAC the newer one's PublicIP ends up in the FDB.
    fn all_peer_ops(&self, cfg: &NetConfig, which: impl Fn(&Peer) -> bool) -> Batch {
        let mut peers: Vec<&Peer> = self.peers.values().filter(|p| which(p)).collect();
        peers.sort_by_key(|p| p.rev);
        let mut ops = Batch::default();
        for p in peers {
            if let Ok(o) = peer_ops(cfg, &self.spec, &p.lease) {
                ops.add(Some((p.lease.subnet, p.lease.len)), o);
            }
        }
        ops
    }

    /// Renew our lease once (over the keep-alive stream), waiting at most
    /// [`request_timeout`] for etcd's answer.
    async fn renew(
        &mut self,
        keeper: &mut etcd_client::LeaseKeeper,
        acks: &mut etcd_client::LeaseKeepAliveStream,
    ) -> Result<(), String> {
        let t = request_timeout(self.spec.ttl);
        let r = within(t, "renewal", async {
            keeper.keep_alive().await?;
            acks.message().await
        })
        .await;
        let o = self.own.as_mut().expect("acquired");
        match r {
            Ok(Some(a)) if a.ttl() > 0 => {
                o.renewed = unix_now();
                o.renew_error = None;
            }
            Ok(_) => {
                o.renew_error = Some("lease expired".into());
                return Err("our lease expired; taking it again".into());
            }
            Err(e) => {
                o.renew_error = Some(e.clone());
                return Err(format!("lease {e}"));
            }
        }
        self.publish();
        Ok(())
    }

    /// Apply one watch response's events.
    fn on_watch(&mut self, m: etcd_client::WatchResponse) -> Result<(), String> {
        if m.canceled() {
            return Err(format!(
                "watch cancelled (compacted at {})",
                m.compact_revision()
            ));
        }
        let mut ops = Batch::default();
        for ev in m.events() {
            let Some(kv) = ev.kv() else { continue };
            let k = kv.key_str().unwrap_or_default().to_string();
            match ev.event_type() {
                EventType::Put if self.is_own_key(&k) => self.check_own(&k, Some(kv)),
                EventType::Put => self.upsert(&k, kv.value(), kv.mod_revision(), &mut ops),
                EventType::Delete => self.remove(&k, &mut ops),
            }
            self.revision = self.revision.max(kv.mod_revision());
        }
        self.apply(ops);
        if self.lost_own_subnet() {
            return Err("our subnet's lease was deleted or taken; leasing it again".into());
        }
        self.publish_soon();
        Ok(())
    }

    /// Make sure we hold a lease. Holding one already (this process leased it): that subnet
    /// and no other (`keep`). Else the subnet of the state file if free or still ours by
    /// PublicIP, else a lease of the Network etcd holds under our PublicIP and backend
    /// (flannel's `findLeaseByIP`: a restart that lost the state file, e.g. a reboot with it
    /// on /run), else the first free one.
    async fn acquire(&mut self, c: &mut Client) -> Result<(), String> {
        let cfg = self.cfg.clone().expect("config read");
        let prefix = format!("{}/subnets/", self.spec.prefix.trim_end_matches('/'));
        let t = request_timeout(self.spec.ttl);
        for _attempt in 0..16 {
            let list = c.get(prefix.clone(), Some(GetOptions::new().with_prefix()));
            let r = within(t, "list subnets", list).await?;
            if self.own.is_some() {
                if self.keep(c, &cfg, r.kvs()).await? {
                    return Ok(());
                }
                continue;
            }
            let wanted = self
                .own
                .as_ref()
                .map(|o| (o.subnet, o.len))
                .or_else(|| self.saved_subnet());
            let mut taken = Vec::new();
            let mut mine = None;
            let mut by_ip = None;
            for kv in r.kvs() {
                let key = kv.key_str().unwrap_or_default();
                let Some((s, l)) = schema::parse_subnet_key(&self.spec.prefix, key) else {
                    continue;
                };
                taken.push(s);
                let attrs = LeaseAttrs::parse(kv.value()).ok();
                let ours = attrs.as_ref().is_some_and(|a| {
                    a.public_ip == self.public_ip && a.backend_type == cfg.backend_type()
                });
                if wanted == Some((s, l)) {
                    mine = Some((kv.mod_revision(), kv.create_revision(), attrs));
                } else if ours && by_ip.is_none() && cfg.owns(s, l) {
                    by_ip = Some((s, kv.mod_revision(), kv.create_revision()));
                }
            }
            let key = |s| schema::subnet_key(&self.spec.prefix, s, cfg.subnet_len);
            let (subnet, cmp, crev) = match (wanted, &mine) {
                // Our subnet, free: create it.
                (Some((s, l)), None) if cfg.owns(s, l) => (
                    s,
                    Compare::create_revision(key(s), CompareOp::Equal, 0),
                    None,
                ),
                // Our subnet, still held under our PublicIP (a lease before a restart).
                (Some((s, l)), Some((modrev, crev, Some(a))))
                    if cfg.owns(s, l) && a.public_ip == self.public_ip =>
                {
                    let cmp = Compare::mod_revision(key(s), CompareOp::Equal, *modrev);
                    (s, cmp, Some(*crev))
                }
                _ => match by_ip {
                    // Not ours by the state file, but etcd holds one under our PublicIP.
                    Some((s, modrev, crev)) => {
                        info!("etcd: {} holds our PublicIP: taking it back", key(s));
                        let cmp = Compare::mod_revision(key(s), CompareOp::Equal, modrev);
                        (s, cmp, Some(crev))
                    }
                    None => {
                        let s = cfg.first_free(&taken).ok_or_else(|| {
                            format!(
                                "no free subnet left from SubnetMin {} to SubnetMax {} ({} leases in etcd)",
                                cfg.subnet_min,
                                cfg.subnet_max,
                                taken.len()
                            )
                        })?;
                        (
                            s,
                            Compare::create_revision(key(s), CompareOp::Equal, 0),
                            None,
                        )
                    }
                },
            };
            if self.take(c, &cfg, subnet, cmp, crev).await? {
                return Ok(());
            }
        }
        Err("could not lease a subnet after 16 attempts".into())
    }

    /// `acquire` while we hold a subnet (`kvs`: every lease now): keep it, whatever another
    /// host wrote (see [`own_key`]). Ours: nothing; overwritten (also while we were away):
    /// ours written back; gone (deleted, or expired during an outage): the same subnet
    /// leased again if free; created again by another host: the overlay is DOWN, the bridges
    /// keep their addresses, and the session ends with why (tried again with back-off).
    /// Never another subnet: renumbering the containers' bridge cuts off every container on
    /// it (found trying uvs as a hostile peer). False when a transaction lost a race.
    async fn keep(
        &mut self,
        c: &mut Client,
        cfg: &NetConfig,
        kvs: &[etcd_client::KeyValue],
    ) -> Result<bool, String> {
        let o = self.own.as_ref().expect("held");
        let (subnet, len) = (o.subnet, o.len);
        let key = schema::subnet_key(&self.spec.prefix, subnet, len);
        let kv = kvs.iter().find(|kv| kv.key() == key.as_bytes());
        let attrs = kv.and_then(|kv| LeaseAttrs::parse(kv.value()).ok());
        let ours = self.own_attrs(cfg, &o.vtep_mac);
        let seen = kv.map(|kv| (kv.lease(), kv.create_revision(), attrs.as_ref()));
        let theirs = || {
            kv.map_or(String::new(), |kv| {
                String::from_utf8_lossy(kv.value()).into()
            })
        };
        let (cmp, crev) = match own_key(o.lease_id, o.create_rev, &ours, seen) {
            // etcd kept our lease (it was only unreachable).
            OwnKey::Ours => {
                self.down = None;
                return Ok(true);
            }
            OwnKey::Overwritten => {
                let kv = kv.expect("a key");
                let mine = kv.lease() == o.lease_id
                    && attrs
                        .as_ref()
                        .is_some_and(|a| a.vtep_mac() == ours.vtep_mac());
                if mine {
                    info!(
                        "etcd: {key} announces our old PublicIP: announcing {}",
                        self.public_ip
                    );
                } else {
                    error!(
                        "etcd: {key}, our subnet, was overwritten by another host ({}); writing ours back: that host believes it holds our subnet",
                        theirs()
                    );
                }
                let modrev = kv.mod_revision();
                let cmp = Compare::mod_revision(key.clone(), CompareOp::Equal, modrev);
                (cmp, Some(kv.create_revision()))
            }
            OwnKey::Gone => {
                warn!(
                    "etcd: {key}, our subnet, is gone (deleted, or expired with our lease): leasing it again"
                );
                (
                    Compare::create_revision(key.clone(), CompareOp::Equal, 0),
                    None,
                )
            }
            // Created again under our PublicIP (by hand, or by our own earlier lease): ours.
            OwnKey::Taken
                if attrs
                    .as_ref()
                    .is_some_and(|a| a.public_ip == self.public_ip) =>
            {
                let kv = kv.expect("a key");
                let cmp = Compare::mod_revision(key.clone(), CompareOp::Equal, kv.mod_revision());
                (cmp, Some(kv.create_revision()))
            }
            OwnKey::Taken => {
                let gw = Ipv4Addr::from(u32::from(subnet) + 1);
                let why = format!(
                    "{key}, our subnet, was deleted and is now held by another host ({}): the overlay is DOWN; bridge {} keeps {gw}/{len} for its containers, and nothing is leased until that key goes (retried) or uvs restarts without its state file (a new subnet: re-address the containers)",
                    theirs(),
                    self.spec.bridge
                );
                if self.down.is_none() {
                    error!("etcd: {why}");
                }
                self.down = Some(why.clone());
                return Err(why);
            }
        };
        let ok = self.take(c, cfg, subnet, cmp, crev).await?;
        if ok {
            self.down = None;
        }
        Ok(ok)
    }

    /// Program our gateways for `subnet` and write its lease if `cmp` holds; false when
    /// another host got there first.
    async fn take(
        &mut self,
        c: &mut Client,
        cfg: &NetConfig,
        subnet: Ipv4Addr,
        cmp: Compare,
        create_rev: Option<i64>,
    ) -> Result<bool, String> {
        let len = cfg.subnet_len;
        let vtep_mac = self.program_own(cfg, subnet)?;
        let ttl = self.spec.ttl as i64;
        let t = request_timeout(self.spec.ttl);
        let g = within(t, "lease grant", c.lease_grant(ttl, None)).await?;
        let attrs = self.own_attrs(cfg, &vtep_mac);
        let key = schema::subnet_key(&self.spec.prefix, subnet, len);
        let put = TxnOp::put(
            key.clone(),
            attrs.to_json(),
            Some(PutOptions::new().with_lease(g.id())),
        );
        let txn = c.txn(Txn::new().when(vec![cmp]).and_then(vec![put]));
        let r = within(t, "lease txn", txn).await?;
        if !r.succeeded() {
            let _ = within(t, "lease revoke", c.lease_revoke(g.id())).await;
            info!("etcd: {key} changed meanwhile; looking again");
            return Ok(false);
        }
        // Created now: its create revision is our transaction's.
        let create_rev = create_rev.unwrap_or_else(|| r.header().map_or(0, |h| h.revision()));
        info!(
            "etcd: leased {subnet}/{len} (lease {:x}, ttl {ttl}s) as {}",
            g.id(),
            self.public_ip
        );
        // What the containers' MTU must be (CNI's flannel plugin gives them FLANNEL_MTU):
        // the tunnel's inner MTU, as flannel writes its underlay MTU - 50.
        let mtu = match cfg.backend {
            schema::Backend::Vxlan { .. } => vxlan_port(&self.worker, &self.spec)?.inner_mtu,
            schema::Backend::HostGw => 1500,
        };
        if let Err(e) = std::fs::write(&self.state_file, schema::subnet_env(cfg, subnet, mtu)) {
            warn!("etcd: state file {}: {e}", self.state_file.display());
        }
        self.own = Some(Own {
            subnet,
            len,
            lease_id: g.id(),
            create_rev,
            vtep_mac,
            renewed: unix_now(),
            renew_error: None,
        });
        Ok(true)
    }

    /// Set our gateways for `subnet`; returns the VtepMAC (the overlay bridge's gateway MAC).
    fn program_own(&mut self, cfg: &NetConfig, subnet: Ipv4Addr) -> Result<String, String> {
        let v = self
            .worker
            .call(Command::Overlay(own_gateway_ops(cfg, &self.spec, subnet)))?;
        if let Some(e) = v["errors"].as_array().and_then(|a| a.first()) {
            return Err(format!("programming our gateways: {}", e["error"]));
        }
        let b = match cfg.backend {
            schema::Backend::Vxlan { .. } => &self.spec.overlay_bridge,
            schema::Backend::HostGw => &self.spec.bridge,
        };
        Ok(v["gateway_macs"][b]
            .as_str()
            .unwrap_or_default()
            .to_string())
    }

    /// At start, before etcd answers: the gateways of the lease the state file records, so
    /// this host's containers keep their gateway (and each other) through an etcd outage;
    /// peers come with the first resync. (Found trying uvs as a new user: a host restarted
    /// while etcd was down came up with its containers cut off.) The session that follows
    /// takes the same subnet back when it can, or programs the one it gets.
    fn program_saved(&mut self) {
        let Some((cfg, subnet)) = std::fs::read_to_string(&self.state_file)
            .ok()
            .and_then(|t| schema::saved_config(&t))
        else {
            return;
        };
        let ops = own_gateway_ops(&cfg, &self.spec, subnet);
        match self.worker.call(Command::Overlay(ops)) {
            Ok(v) if v["errors"].as_array().is_none_or(|e| e.is_empty()) => info!(
                "etcd: gateways of our last subnet {subnet}/{} (state file) programmed until etcd answers",
                cfg.subnet_len
            ),
            Ok(v) => warn!("etcd: programming our last subnet: {}", v["errors"]),
            Err(e) => warn!("etcd: programming our last subnet: {e}"),
        }
    }

    fn saved_subnet(&self) -> Option<(Ipv4Addr, u8)> {
        let t = std::fs::read_to_string(&self.state_file).ok()?;
        schema::parse_subnet_env(&t)
    }

    /// List every lease at one revision and make the programmed peers equal to it.
    async fn resync(&mut self, c: &mut Client) -> Result<i64, String> {
        let prefix = format!("{}/subnets/", self.spec.prefix.trim_end_matches('/'));
        let list = c.get(prefix, Some(GetOptions::new().with_prefix()));
        let r = within(request_timeout(self.spec.ttl), "list subnets", list).await?;
        let rev = r.header().map_or(0, |h| h.revision());
        if let Some(o) = &self.own {
            let own = schema::subnet_key(&self.spec.prefix, o.subnet, o.len);
            let kv = r.kvs().iter().find(|kv| kv.key() == own.as_bytes());
            self.check_own(&own, kv);
            if self.lost_own_subnet() {
                return Err(format!(
                    "{own}: our lease went before the resync; leasing it again"
                ));
            }
        }
        let kvs = r.kvs().iter().map(|kv| {
            let k = kv.key_str().unwrap_or_default();
            (k, kv.value(), kv.mod_revision())
        });
        self.sync_to(kvs);
        self.revision = rev;
        self.resyncs += 1;
        info!("etcd: resync at revision {rev}: {} peers", self.peers.len());
        Ok(rev)
    }

    /// Make the peers equal to `kvs` (every lease at one revision: key, value, mod revision),
    /// then program every peer again, whatever this agent believes is programmed: a resync
    /// also repairs what the switch lost without the repair check seeing it.
    fn sync_to<'a>(&mut self, kvs: impl Iterator<Item = (&'a str, &'a [u8], i64)>) {
        let mut ops = Batch::default();
        let mut seen = std::collections::HashSet::new();
        let mut seen_keys = std::collections::HashSet::new();
        for (k, v, rev) in kvs {
            if let Some(s) = schema::parse_subnet_key(&self.spec.prefix, k) {
                seen.insert(s);
            }
            seen_keys.insert(k.to_string());
            self.upsert(k, v, rev, &mut ops);
        }
        self.bad_keys.retain(|k, _| seen_keys.contains(k));
        let gone: Vec<(Ipv4Addr, u8)> = self
            .peers
            .keys()
            .filter(|k| !seen.contains(k))
            .copied()
            .collect();
        for (s, l) in gone {
            self.remove(&schema::subnet_key(&self.spec.prefix, s, l), &mut ops);
        }
        if let Some(cfg) = self.cfg.clone() {
            ops.append(self.all_peer_ops(&cfg, |p| !p.refused));
        }
        self.apply(ops);
    }

    /// A lease was written: program it (or replace what it had), unless it is ours or
    /// [`check_peer`] refuses it (then it is shown with the reason, and logged once).
    fn upsert(&mut self, key: &str, value: &[u8], rev: i64, ops: &mut Batch) {
        let (subnet, len) = match schema::check_subnet_key(&self.spec.prefix, key) {
            Ok(k) => k,
            Err(e) => return self.ignore_key(key, format!("ignored: {e}")),
        };
        self.bad_keys.remove(key);
        let Some(cfg) = self.cfg.clone() else {
            return;
        };
        if self
            .own
            .as_ref()
            .is_some_and(|o| o.subnet == subnet && o.len == len)
        {
            return; // see `check_own`
        }
        let attrs = match LeaseAttrs::parse(value) {
            Ok(a) => a,
            Err(e) => return self.ignore_key(key, format!("ignored: {e}")),
        };
        let lease = PeerLease { subnet, len, attrs };
        if let Some(p) = self.peers.get_mut(&(subnet, len))
            && p.lease == lease
            && (p.programmed || p.refused)
        {
            p.rev = rev;
            return;
        }
        if let Some(p) = self.peers.remove(&(subnet, len))
            && p.programmed
        {
            ops.add(None, peer_del_ops(&cfg, &self.spec, &p.lease));
            self.repoint(&cfg, &p.lease, ops);
        }
        let own = self.own.as_ref().map(|o| (o.subnet, o.len));
        let own_mac = self.own.as_ref().and_then(|o| o.vtep_mac.parse().ok());
        let planned = check_peer(&cfg, own, self.public_ip, own_mac, &lease)
            .map_err(|e| e.to_string())
            .and_then(|()| peer_ops(&cfg, &self.spec, &lease));
        let error = match planned {
            Ok(o) => {
                self.warn_shared_mac(key, &lease);
                ops.add(Some((subnet, len)), o);
                info!("etcd: peer {subnet}/{len} at {}", lease.attrs.public_ip);
                None
            }
            Err(e) => {
                self.warn_ignored(key, &e);
                Some(e)
            }
        };
        self.peers.insert(
            (subnet, len),
            Peer {
                lease,
                since: unix_now(),
                rev,
                programmed: false,
                refused: error.is_some(),
                error,
            },
        );
    }

    /// A key under `PREFIX/subnets/` that is no lease (`why`): shown by `overlay-show`,
    /// logged when it is new or its reason changed.
    fn ignore_key(&mut self, key: &str, why: String) {
        if self.bad_keys.get(key) != Some(&why) {
            self.warn_ignored(key, &why);
            self.bad_keys.insert(key.to_string(), why);
        }
    }

    fn is_own_key(&self, key: &str) -> bool {
        self.own.as_ref().is_some_and(|o| {
            schema::parse_subnet_key(&self.spec.prefix, key) == Some((o.subnet, o.len))
        })
    }

    /// Our key as etcd shows it now (`kv`, None when it is gone), while we hold it: see
    /// [`own_key`]. Overwritten: noted for `write_back`; gone or taken: the session ends
    /// and `acquire` decides (the same subnet again, or the overlay down; never another).
    fn check_own(&mut self, key: &str, kv: Option<&etcd_client::KeyValue>) {
        let (Some(cfg), Some(o)) = (self.cfg.as_ref(), self.own.as_ref()) else {
            return;
        };
        let ours = self.own_attrs(cfg, &o.vtep_mac);
        let attrs = kv.and_then(|kv| LeaseAttrs::parse(kv.value()).ok());
        let seen = kv.map(|kv| (kv.lease(), kv.create_revision(), attrs.as_ref()));
        match own_key(o.lease_id, o.create_rev, &ours, seen) {
            OwnKey::Ours => {}
            OwnKey::Overwritten => {
                let kv = kv.expect("a key");
                let v = String::from_utf8_lossy(kv.value());
                let v: String = v.chars().take(200).collect();
                self.overwritten = Some((kv.mod_revision(), v));
            }
            OwnKey::Gone | OwnKey::Taken => {
                warn!("etcd: our lease {key} was deleted or created again by another host");
                self.own_lost = true;
            }
        }
    }

    /// Write our value back over our key after another host wrote it (a transaction on the
    /// mod revision of that write: a newer one comes through the watch), on our etcd lease,
    /// and log the writer (ERROR: two hosts then believe they hold one subnet).
    async fn write_back(&mut self, c: &mut Client) -> Result<(), String> {
        let Some((modrev, theirs)) = self.overwritten.take() else {
            return Ok(());
        };
        let (Some(cfg), Some(o)) = (self.cfg.as_ref(), self.own.as_ref()) else {
            return Ok(());
        };
        let key = schema::subnet_key(&self.spec.prefix, o.subnet, o.len);
        let ours = self.own_attrs(cfg, &o.vtep_mac).to_json();
        let put = TxnOp::put(
            key.clone(),
            ours.clone(),
            Some(PutOptions::new().with_lease(o.lease_id)),
        );
        let same = Compare::mod_revision(key.clone(), CompareOp::Equal, modrev);
        let txn = c.txn(Txn::new().when(vec![same]).and_then(vec![put]));
        let t = request_timeout(self.spec.ttl);
        if within(t, &format!("{key}: writing our lease back"), txn)
            .await?
            .succeeded()
        {
            error!(
                "etcd: {key}, our subnet, was overwritten by another host ({theirs}); wrote ours back ({ours}, lease {:x}): that host believes it holds our subnet",
                o.lease_id
            );
        } else {
            info!("etcd: {key} was written again before we wrote ours back");
        }
        Ok(())
    }

    /// A lease was deleted or expired: remove what it programmed.
    fn remove(&mut self, key: &str, ops: &mut Batch) {
        self.bad_keys.remove(key);
        let (Some(k), Some(cfg)) = (
            schema::parse_subnet_key(&self.spec.prefix, key),
            self.cfg.as_ref(),
        ) else {
            return;
        };
        if self.own.as_ref().is_some_and(|o| (o.subnet, o.len) == k) {
            warn!("etcd: our lease {key} was deleted");
            self.own_lost = true;
            return;
        }
        if let Some(p) = self.peers.remove(&k) {
            info!("etcd: peer {}/{} left", k.0, k.1);
            if p.programmed {
                let cfg = cfg.clone();
                ops.add(None, peer_del_ops(&cfg, &self.spec, &p.lease));
                self.repoint(&cfg, &p.lease, ops);
            }
        }
    }

    /// After `gone`'s entries were removed: program again the FDB entry (and with it the
    /// accepted VTEP) of every remaining peer that shares its VtepMAC or PublicIP, oldest
    /// first, so the newest remaining lease's PublicIP ends up behind the MAC. (Found by a
    /// tester: a stale lease of a host that came back under a new address took the live
    /// lease's FDB entry with it when it expired.)
    fn repoint(&self, cfg: &NetConfig, gone: &PeerLease, ops: &mut Batch) {
        let mac = gone.attrs.vtep_mac().ok();
        let ip = gone.attrs.public_ip;
        let shares = |p: &Peer| {
            p.programmed
                && (p.lease.attrs.public_ip == ip
                    || (mac.is_some() && p.lease.attrs.vtep_mac().ok() == mac))
        };
        let all = self.all_peer_ops(cfg, shares);
        for (op, owner) in all.ops.into_iter().zip(all.owner) {
            if matches!(op, OverlayOp::Fdb { .. }) {
                ops.add(owner, [op]);
            }
        }
    }

    /// Log a lease whose VtepMAC another peer announces under another PublicIP (hosts with
    /// one machine-id, or a host's stale lease): the newer lease gets the MAC's FDB entry.
    fn warn_shared_mac(&self, key: &str, lease: &PeerLease) {
        let Ok(mac) = lease.attrs.vtep_mac() else {
            return;
        };
        let other = self.peers.values().find(|p| {
            p.lease.attrs.vtep_mac().ok() == Some(mac)
                && p.lease.attrs.public_ip != lease.attrs.public_ip
        });
        if let Some(p) = other {
            warn!(
                "etcd: {key}: VtepMAC {mac} is also announced by {}/{} at {}; it now goes to {}",
                p.lease.subnet, p.lease.len, p.lease.attrs.public_ip, lease.attrs.public_ip
            );
        }
    }

    fn lost_own_subnet(&mut self) -> bool {
        std::mem::take(&mut self.own_lost)
    }

    fn drop_all_peers(&mut self) {
        let mut ops = Batch::default();
        let keys: Vec<_> = self.peers.keys().copied().collect();
        for (s, l) in keys {
            self.remove(&schema::subnet_key(&self.spec.prefix, s, l), &mut ops);
        }
        self.apply(ops);
    }

    /// Send ops to the worker in bounded batches; errors are logged. Each peer with ops in
    /// the batch is then `programmed` if all of them applied, else not, with the first error.
    fn apply(&mut self, batch: Batch) {
        let mut failed: BTreeMap<Key, String> = BTreeMap::new();
        for (n, chunk) in batch.ops.chunks(OPS_PER_CALL).enumerate() {
            let base = n * OPS_PER_CALL;
            let errors = match self.worker.call(Command::Overlay(chunk.to_vec())) {
                Ok(v) => v["errors"].as_array().cloned().unwrap_or_default(),
                Err(e) => {
                    warn!("etcd: worker: {e}");
                    let all = (0..chunk.len()).map(|i| json!({"op": i, "error": e.clone()}));
                    all.collect()
                }
            };
            for e in errors {
                let i = e["op"].as_u64().unwrap_or(0) as usize;
                let msg = format!("{:?}: {}", chunk.get(i), e["error"]);
                warn!("etcd: programming {msg}");
                if let Some(Some(k)) = batch.owner.get(base + i) {
                    failed.entry(*k).or_insert_with(|| msg.clone());
                }
                self.last_error = Some(msg);
            }
        }
        for k in batch.owner.iter().flatten() {
            if let Some(p) = self.peers.get_mut(k) {
                p.error = failed.get(k).cloned();
                p.programmed = p.error.is_none();
            }
        }
    }

    /// Rewrite the status `overlay-show` reads.
    /// `publish` now if it was not done within [`PUBLISH_EVERY`], else when that is over.
    fn publish_soon(&mut self) {
        let due = self.published + PUBLISH_EVERY;
        if Instant::now() >= due {
            self.publish();
        } else {
            self.publish_due = Some(due);
        }
    }

    /// Log an ignored lease or key, at most one line a second (with the count of those not
    /// logged since); `overlay-show` lists them all.
    fn warn_ignored(&mut self, key: &str, why: &str) {
        if let Some(n) = self.ignored_log.admit(Instant::now()) {
            let more = if n > 0 {
                format!(
                    " ({n} more leases or keys ignored since the last such line: overlay-show lists them)"
                )
            } else {
                String::new()
            };
            warn!("etcd: {key}: not programmed: {why}{more}");
        }
    }

    /// The count of ignored leases not logged yet, once their second is over.
    fn flush_ignored(&mut self) {
        if let Some(n) = self.ignored_log.flush(Instant::now()) {
            warn!(
                "etcd: {n} more leases or keys ignored, not logged one by one: overlay-show lists them"
            );
        }
    }

    fn publish(&mut self) {
        self.published = Instant::now();
        self.publish_due = None;
        let own = self.own.as_ref().map(|o| {
            json!({
                "subnet": format!("{}/{}", o.subnet, o.len),
                "lease_id": format!("{:x}", o.lease_id),
                "public_ip": self.public_ip.to_string(),
                "vtep_mac": o.vtep_mac,
                "ttl": self.spec.ttl,
                "renewed_at": o.renewed,
                "renew_error": o.renew_error,
            })
        });
        let peers: Vec<Value> = self
            .peers
            .values()
            .map(|p| {
                json!({
                    "subnet": format!("{}/{}", p.lease.subnet, p.lease.len),
                    "public_ip": p.lease.attrs.public_ip.to_string(),
                    "backend": p.lease.attrs.backend_type,
                    "vtep_mac": p.lease.attrs.backend_data.as_ref().map(|d| d.vtep_mac.clone()),
                    "seen_at": p.since,
                    "programmed": p.programmed,
                    "error": p.error,
                })
            })
            .collect();
        let ignored: Vec<Value> = self
            .bad_keys
            .iter()
            .map(|(k, e)| json!({"key": k, "error": e}))
            .collect();
        let cfg = self.cfg.as_ref().map(|c| {
            json!({
                "network": format!("{}/{}", c.network.0, c.network.1),
                "subnet_len": c.subnet_len,
                "backend": c.backend_type(),
            })
        });
        let v = json!({
            "endpoints": self.spec.endpoints,
            "prefix": self.spec.prefix,
            "connected": self.connected,
            "revision": self.revision,
            "resyncs": self.resyncs,
            "repairs": self.repairs,
            "config": cfg,
            "lease": own,
            "peers": peers,
            "ignored_keys": ignored,
            "down": self.down,
            "last_error": self.last_error,
        });
        if let Ok(mut s) = self.status.lock() {
            *s = v;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::MacAddr;
    use crate::worker::overlay_tests::{fdb_remote, overlay_worker};

    /// An agent state on a test worker, holding 10.5.1.0/24 of 10.5.0.0/16 (vxlan) as
    /// 10.252.0.1, its gateways programmed; no etcd.
    fn state(w: Arc<WorkerHandle>) -> State {
        let cfg =
            NetConfig::parse(br#"{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}"#).unwrap();
        let mut st = State::new(
            EtcdSpec::new("http://127.0.0.1:2379"),
            std::env::temp_dir().join("uvs-agent-unit.subnet.env"),
            w,
            Arc::new(Mutex::new(json!({}))),
            Ipv4Addr::new(10, 252, 0, 1),
        );
        st.cfg = Some(cfg.clone());
        st.connected = true;
        let subnet = Ipv4Addr::new(10, 5, 1, 0);
        let vtep_mac = st.program_own(&cfg, subnet).unwrap();
        st.own = Some(Own {
            subnet,
            len: 24,
            lease_id: 1,
            create_rev: 1,
            vtep_mac,
            renewed: 0,
            renew_error: None,
        });
        st
    }

    fn key(subnet: &str) -> String {
        format!("/coreos.com/network/subnets/{subnet}")
    }

    fn value(ip: &str, mac: &str) -> Vec<u8> {
        format!(
            r#"{{"PublicIP":"{ip}","BackendType":"vxlan","BackendData":{{"VNI":1,"VtepMAC":"{mac}"}}}}"#
        )
        .into_bytes()
    }

    fn put(st: &mut State, subnet: &str, ip: &str, mac: &str, rev: i64) {
        let mut ops = Batch::default();
        st.upsert(&key(subnet), &value(ip, mac), rev, &mut ops);
        st.apply(ops);
    }

    fn del(st: &mut State, subnet: &str) {
        let mut ops = Batch::default();
        st.remove(&key(subnet), &mut ops);
        st.apply(ops);
    }

    /// Two live leases with one VtepMAC (a host back under a new address, its old lease not
    /// expired yet): removing either leaves the MAC behind the other one's PublicIP, and a
    /// resync programs again an entry the switch lost. Found by a tester: the old lease's
    /// expiry removed the live one's FDB entry, and nothing put it back.
    #[test]
    fn removing_a_lease_keeps_what_another_live_lease_uses() {
        let w = Arc::new(overlay_worker());
        let mut st = state(w.clone());
        let m = "02:75:76:ef:da:bb";
        let mac: MacAddr = m.parse().unwrap();
        put(&mut st, "10.5.2.0-24", "10.252.0.2", m, 10);
        put(&mut st, "10.5.3.0-24", "10.252.0.12", m, 11);
        assert_eq!(fdb_remote(&w, mac).as_deref(), Some("10.252.0.12"));
        // The old lease expires: the new one keeps the MAC.
        del(&mut st, "10.5.2.0-24");
        assert_eq!(fdb_remote(&w, mac).as_deref(), Some("10.252.0.12"));
        // The other way round: the newer lease goes, the MAC goes back to the older one.
        put(&mut st, "10.5.2.0-24", "10.252.0.2", m, 12);
        assert_eq!(fdb_remote(&w, mac).as_deref(), Some("10.252.0.2"));
        put(&mut st, "10.5.4.0-24", "10.252.0.4", m, 13);
        del(&mut st, "10.5.4.0-24");
        assert_eq!(fdb_remote(&w, mac).as_deref(), Some("10.252.0.2"));
        // The entry lost (the switch's state went without the agent knowing): a resync
        // programs it again although nothing changed in etcd.
        let d = Command::FdbDel {
            bridge: "flannel".into(),
            mac,
            vlan: 0,
        };
        w.call(d).unwrap();
        assert_eq!(fdb_remote(&w, mac), None);
        let (v2, v3) = (value("10.252.0.2", m), value("10.252.0.12", m));
        let (k2, k3) = (key("10.5.2.0-24"), key("10.5.3.0-24"));
        let kvs = [(k2.as_str(), &v2[..], 12), (k3.as_str(), &v3[..], 11)];
        st.sync_to(kvs.into_iter());
        assert_eq!(fdb_remote(&w, mac).as_deref(), Some("10.252.0.2"));
        assert!(st.peers.values().all(|p| p.programmed));
        // Both gone: the entry goes.
        del(&mut st, "10.5.2.0-24");
        assert_eq!(fdb_remote(&w, mac).as_deref(), Some("10.252.0.12"));
        del(&mut st, "10.5.3.0-24");
        assert_eq!(fdb_remote(&w, mac), None);
    }

    /// A peer announcing our own VtepMAC (two hosts with one machine-id: cloned VMs, or
    /// netns "hosts" on one machine) is refused and shown with the reason: its FDB entry
    /// would send our own overlay MAC into the tunnel. Found by a tester: such hosts broke
    /// each other silently (the duplicate was only logged between two peers).
    #[test]
    fn a_peer_announcing_our_own_vtep_mac_is_refused() {
        let w = Arc::new(overlay_worker());
        let mut st = state(w.clone());
        let ours = st.own.as_ref().unwrap().vtep_mac.clone();
        let mac: MacAddr = ours.parse().unwrap();
        put(&mut st, "10.5.2.0-24", "10.252.0.2", &ours, 10);
        let p = peer(&st, "10.5.2.0-24");
        assert!(!p.programmed);
        let e = p.error.as_deref().unwrap_or_default();
        assert!(e.contains(&ours) && e.contains("machine-id"), "{e}");
        assert_eq!(fdb_remote(&w, mac), None);
    }

    /// Keys under subnets/ that are no lease key, and lease values that are no flannel JSON,
    /// are listed by `overlay-show` with the reason (and logged), until deleted or resynced
    /// away. Found trying uvs as a hostile peer: such keys were dropped without a word.
    #[test]
    fn keys_that_are_no_lease_are_shown_with_the_reason() {
        let w = Arc::new(overlay_worker());
        let mut st = state(w);
        let v = value("10.252.0.9", "02:00:00:00:00:09");
        for name in [
            "garbage",
            "10.5.300.0-24",
            "10.5.1.0-16",
            "10.5.1.0-24/extra",
        ] {
            let mut ops = Batch::default();
            st.upsert(&key(name), &v, 5, &mut ops);
        }
        let mut ops = Batch::default();
        st.upsert(&key("10.5.3.0-24"), b"{not json", 6, &mut ops);
        st.publish();
        let shown = st.status.lock().unwrap()["ignored_keys"].clone();
        let all = shown.as_array().cloned().unwrap_or_default();
        assert_eq!(all.len(), 5, "{shown}");
        for p in &all {
            let e = p["error"].as_str().unwrap_or_default();
            assert!(e.starts_with("ignored: "), "{p}");
        }
        assert!(
            shown
                .to_string()
                .contains("/coreos.com/network/subnets/garbage")
        );
        let mut shown = st.status.lock().unwrap().clone();
        shown["lease"] = Value::Null; // as register() would complete it
        let text = super::super::render(&shown);
        assert!(
            text.contains(
                "key /coreos.com/network/subnets/10.5.300.0-24 not programmed: ignored: "
            ),
            "{text}"
        );
        let mut ops = Batch::default();
        st.remove(&key("garbage"), &mut ops);
        st.sync_to([(key("10.5.300.0-24").as_str(), &v[..], 7)].into_iter());
        st.publish();
        let shown = st.status.lock().unwrap()["ignored_keys"].clone();
        assert_eq!(shown.as_array().map(Vec::len), Some(1), "{shown}");
    }

    fn peer<'a>(st: &'a State, subnet: &str) -> &'a Peer {
        let (ip, len) = subnet.split_once('-').unwrap();
        &st.peers[&(ip.parse().unwrap(), len.parse().unwrap())]
    }

    /// Leases that are no SubnetLen subnet of the Network (one halving our own subnet) are
    /// shown with the reason and get nothing; a peer is `programmed` only once the switch
    /// applied all of it. Found by a tester: a /25 of our subnet was routed away, and leases
    /// whose route failed were shown "programmed".
    #[test]
    fn refused_and_failed_leases_are_not_shown_programmed() {
        let w = Arc::new(overlay_worker());
        let mut st = state(w.clone());
        let m = "02:00:00:00:28:01";
        for (i, subnet) in ["10.5.1.128-25", "192.168.77.0-24", "10.5.50.0-26"]
            .iter()
            .enumerate()
        {
            put(&mut st, subnet, "10.252.0.7", m, 20 + i as i64);
            let p = peer(&st, subnet);
            assert!(!p.programmed, "{subnet}");
            assert!(
                p.error.as_deref().unwrap().starts_with("ignored: "),
                "{subnet}"
            );
        }
        put(&mut st, "10.5.3.0-24", "10.252.0.1", m, 30);
        assert!(
            peer(&st, "10.5.3.0-24")
                .error
                .as_deref()
                .unwrap()
                .contains("ours")
        );
        let routes = w.call(Command::RouteShow).unwrap().to_string();
        for r in [
            "10.5.1.128/25",
            "192.168.77.0/24",
            "10.5.50.0/26",
            "10.5.3.0/24",
        ] {
            assert!(!routes.contains(r), "{r}: {routes}");
        }
        // The switch refuses part of a valid lease (no such vxlan port here): not programmed.
        st.spec.vxlan_port = "nope".into();
        put(&mut st, "10.5.2.0-24", "10.252.0.2", m, 31);
        let p = peer(&st, "10.5.2.0-24");
        assert!(!p.programmed);
        assert!(
            p.error.as_deref().unwrap().contains("nope"),
            "{:?}",
            p.error
        );
        // Once it applies (the next resync), it is.
        st.spec.vxlan_port = "flannel.1".into();
        let v = value("10.252.0.2", m);
        let k = key("10.5.2.0-24");
        st.sync_to([(k.as_str(), &v[..], 31)].into_iter());
        let p = peer(&st, "10.5.2.0-24");
        assert!(p.programmed && p.error.is_none(), "{:?}", p.error);
        assert!(st.peers.len() == 1, "the others were deleted by the resync");
    }
}
