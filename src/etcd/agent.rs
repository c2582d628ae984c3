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
use tracing::{info, warn};

use super::schema::{self, BackendData, LeaseAttrs, NetConfig};
use super::{EtcdSpec, PeerLease, own_gateway_ops, peer_del_ops, peer_ops};
use crate::worker::{Command, OverlayOp, WorkerHandle};

/// Ops per worker request (bounded work per request).
const OPS_PER_CALL: usize = 512;
/// Back-off bounds.
const BACKOFF_MIN: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// How often the agent checks that what it programmed is still in the switch (`repair`).
const CHECK_EVERY: Duration = Duration::from_secs(2);

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
    /// What was programmed (None: nothing, see `error`).
    programmed: bool,
    error: Option<String>,
}

struct Own {
    subnet: Ipv4Addr,
    len: u8,
    lease_id: i64,
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
}

/// Start the agent thread. `state_file` is where the subnet is kept across restarts.
pub fn start(
    spec: EtcdSpec,
    state_file: std::path::PathBuf,
    worker: Arc<WorkerHandle>,
) -> Result<Agent, String> {
    spec.validate()?;
    let public_ip = match spec.public_ip {
        Some(ip) => ip,
        None => vxlan_local_ip(&worker, &spec)?,
    };
    let status: Status = Arc::new(Mutex::new(json!({"connected": false})));
    let mut st = State {
        spec,
        state_file,
        worker,
        status: status.clone(),
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
    };
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

/// The `local_ip` of the vxlan port (from `show`).
fn vxlan_local_ip(w: &WorkerHandle, spec: &EtcdSpec) -> Result<Ipv4Addr, String> {
    let v = w.call(Command::Show)?;
    let ports = v["bridges"].as_array().into_iter().flatten();
    let port = ports
        .flat_map(|b| b["ports"].as_array().into_iter().flatten())
        .find(|p| p["name"] == spec.vxlan_port.as_str());
    let details = port.and_then(|p| p["details"].as_str()).unwrap_or_default();
    details
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix("local_ip="))
        .and_then(|ip| ip.parse().ok())
        .ok_or_else(|| {
            format!(
                "etcd.public_ip: not set, and there is no vxlan port '{}' to take its local_ip from",
                spec.vxlan_port
            )
        })
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
        let opts = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(2))
            .with_timeout(Duration::from_secs(5));
        let mut c = Client::connect(&self.spec.endpoints, Some(opts))
            .await
            .map_err(|e| format!("connect {:?}: {e}", self.spec.endpoints))?;
        let key = format!("{}/config", self.spec.prefix.trim_end_matches('/'));
        let r = c
            .get(key.clone(), None)
            .await
            .map_err(|e| format!("get {key}: {e}"))?;
        let kv = r.kvs().first().ok_or_else(|| format!("{key}: missing"))?;
        let cfg = NetConfig::parse(kv.value())?;
        if self.cfg.as_ref().is_some_and(|old| *old != cfg) {
            warn!("etcd: {key} changed; taking a new lease");
            self.drop_all_peers();
            self.own = None;
        }
        self.cfg = Some(cfg);
        self.connected = true;
        self.acquire(&mut c).await?;
        let rev = self.resync(&mut c).await?;
        let own = self.own.as_ref().expect("acquired");
        let (mut keeper, mut acks) = c
            .lease_keep_alive(own.lease_id)
            .await
            .map_err(|e| format!("keep-alive: {e}"))?;
        let prefix = format!("{}/subnets/", self.spec.prefix.trim_end_matches('/'));
        let wopts = WatchOptions::new()
            .with_prefix()
            .with_start_revision(rev + 1);
        let mut watch = c
            .watch(prefix, Some(wopts))
            .await
            .map_err(|e| format!("watch: {e}"))?;
        let period = Duration::from_secs((self.spec.ttl / 3).max(1));
        // The first tick is at once: renewing confirms the lease at every (re)connect.
        let mut tick = tokio::time::interval(period);
        let mut check = tokio::time::interval(CHECK_EVERY);
        self.last_error = None;
        self.publish();
        loop {
            tokio::select! {
                _ = tick.tick() => self.renew(&mut keeper, &mut acks).await?,
                _ = check.tick() => self.repair(),
                m = watch.message() => {
                    let m = m.map_err(|e| format!("watch: {e}"))?;
                    self.on_watch(m.ok_or("watch: closed by etcd")?)?;
                }
            }
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
        let mut ops = Vec::new();
        for p in self.peers.values().filter(|p| p.programmed) {
            if let Ok(o) = peer_ops(&cfg, &self.spec, &p.lease) {
                ops.extend(o);
            }
        }
        self.apply(ops);
        self.publish();
    }

    /// Renew our lease once (over the keep-alive stream).
    async fn renew(
        &mut self,
        keeper: &mut etcd_client::LeaseKeeper,
        acks: &mut etcd_client::LeaseKeepAliveStream,
    ) -> Result<(), String> {
        let r = match keeper.keep_alive().await {
            Ok(()) => acks.message().await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
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
                return Err(format!("lease renewal: {e}"));
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
        let mut ops = Vec::new();
        for ev in m.events() {
            let Some(kv) = ev.kv() else { continue };
            let k = kv.key_str().unwrap_or_default().to_string();
            match ev.event_type() {
                EventType::Put => self.upsert(&k, kv.value(), &mut ops),
                EventType::Delete => self.remove(&k, &mut ops),
            }
            self.revision = self.revision.max(kv.mod_revision());
        }
        self.apply(ops);
        if self.lost_own_subnet() {
            return Err("our subnet's lease was deleted or taken; leasing again".into());
        }
        self.publish();
        Ok(())
    }

    /// Make sure we hold a lease: ours if etcd still has it, else the subnet of the state file
    /// (or of our last lease) if free or still ours by PublicIP, else the first free one.
    async fn acquire(&mut self, c: &mut Client) -> Result<(), String> {
        let cfg = self.cfg.clone().expect("config read");
        let prefix = format!("{}/subnets/", self.spec.prefix.trim_end_matches('/'));
        for _attempt in 0..16 {
            let r = c
                .get(prefix.clone(), Some(GetOptions::new().with_prefix()))
                .await
                .map_err(|e| format!("list subnets: {e}"))?;
            let wanted = self
                .own
                .as_ref()
                .map(|o| (o.subnet, o.len))
                .or_else(|| self.saved_subnet());
            let mut taken = Vec::new();
            let mut mine = None;
            for kv in r.kvs() {
                let key = kv.key_str().unwrap_or_default();
                let Some((s, l)) = schema::parse_subnet_key(&self.spec.prefix, key) else {
                    continue;
                };
                taken.push(s);
                if wanted == Some((s, l)) {
                    let attrs = LeaseAttrs::parse(kv.value()).ok();
                    mine = Some((kv.lease(), kv.mod_revision(), attrs));
                }
            }
            if let (Some(o), Some((lease, _, Some(a)))) = (&self.own, &mine)
                && *lease == o.lease_id
                && a.public_ip == self.public_ip
            {
                return Ok(()); // etcd kept our lease (it was only unreachable).
            }
            let key = |s| schema::subnet_key(&self.spec.prefix, s, cfg.subnet_len);
            let (subnet, cmp) = match (wanted, &mine) {
                // Our subnet, free: create it.
                (Some((s, l)), None) if cfg.owns(s, l) => {
                    (s, Compare::create_revision(key(s), CompareOp::Equal, 0))
                }
                // Our subnet, still held under our PublicIP (a lease before a restart).
                (Some((s, l)), Some((_, modrev, Some(a))))
                    if cfg.owns(s, l) && a.public_ip == self.public_ip =>
                {
                    (s, Compare::mod_revision(key(s), CompareOp::Equal, *modrev))
                }
                _ => {
                    let s = cfg
                        .first_free(&taken)
                        .ok_or("no free subnet left in the Network")?;
                    (s, Compare::create_revision(key(s), CompareOp::Equal, 0))
                }
            };
            if self.take(c, &cfg, subnet, cmp).await? {
                return Ok(());
            }
        }
        Err("could not lease a subnet after 16 attempts".into())
    }

    /// Program our gateways for `subnet` and write its lease if `cmp` holds; false when
    /// another host got there first.
    async fn take(
        &mut self,
        c: &mut Client,
        cfg: &NetConfig,
        subnet: Ipv4Addr,
        cmp: Compare,
    ) -> Result<bool, String> {
        let len = cfg.subnet_len;
        let vtep_mac = self.program_own(cfg, subnet)?;
        let ttl = self.spec.ttl as i64;
        let g = c
            .lease_grant(ttl, None)
            .await
            .map_err(|e| format!("lease grant: {e}"))?;
        let attrs = LeaseAttrs {
            public_ip: self.public_ip,
            backend_type: cfg.backend_type().into(),
            backend_data: match cfg.backend {
                schema::Backend::Vxlan { vni, .. } => Some(BackendData {
                    vni,
                    vtep_mac: vtep_mac.clone(),
                }),
                schema::Backend::HostGw => None,
            },
        };
        let key = schema::subnet_key(&self.spec.prefix, subnet, len);
        let put = TxnOp::put(
            key.clone(),
            attrs.to_json(),
            Some(PutOptions::new().with_lease(g.id())),
        );
        let t = c
            .txn(Txn::new().when(vec![cmp]).and_then(vec![put]))
            .await
            .map_err(|e| format!("lease txn: {e}"))?;
        if !t.succeeded() {
            let _ = c.lease_revoke(g.id()).await;
            info!("etcd: {key} was taken meanwhile; trying another subnet");
            self.own = None;
            return Ok(false);
        }
        info!(
            "etcd: leased {subnet}/{len} (lease {:x}, ttl {ttl}s) as {}",
            g.id(),
            self.public_ip
        );
        let mtu = match cfg.backend {
            schema::Backend::Vxlan { .. } => 1450,
            schema::Backend::HostGw => 1500,
        };
        if let Err(e) = std::fs::write(&self.state_file, schema::subnet_env(cfg, subnet, mtu)) {
            warn!("etcd: state file {}: {e}", self.state_file.display());
        }
        self.own = Some(Own {
            subnet,
            len,
            lease_id: g.id(),
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
        let r = c
            .get(prefix, Some(GetOptions::new().with_prefix()))
            .await
            .map_err(|e| format!("list subnets: {e}"))?;
        let rev = r.header().map_or(0, |h| h.revision());
        let mut ops = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for kv in r.kvs() {
            let k = kv.key_str().unwrap_or_default();
            if let Some(s) = schema::parse_subnet_key(&self.spec.prefix, k) {
                seen.insert(s);
            }
            self.upsert(k, kv.value(), &mut ops);
        }
        let gone: Vec<(Ipv4Addr, u8)> = self
            .peers
            .keys()
            .filter(|k| !seen.contains(k))
            .copied()
            .collect();
        for (s, l) in gone {
            self.remove(&schema::subnet_key(&self.spec.prefix, s, l), &mut ops);
        }
        self.apply(ops);
        self.revision = rev;
        self.resyncs += 1;
        info!("etcd: resync at revision {rev}: {} peers", self.peers.len());
        Ok(rev)
    }

    /// A lease was written: program it (or replace what it had), unless it is ours.
    fn upsert(&mut self, key: &str, value: &[u8], ops: &mut Vec<OverlayOp>) {
        let (Some((subnet, len)), Some(cfg)) = (
            schema::parse_subnet_key(&self.spec.prefix, key),
            self.cfg.clone(),
        ) else {
            return;
        };
        if self
            .own
            .as_ref()
            .is_some_and(|o| o.subnet == subnet && o.len == len)
        {
            let ours = LeaseAttrs::parse(value).is_ok_and(|a| a.public_ip == self.public_ip);
            if !ours {
                warn!("etcd: {key}, our subnet, was written by another host");
                self.own_lost = true;
            }
            return;
        }
        let attrs = match LeaseAttrs::parse(value) {
            Ok(a) => a,
            Err(e) => {
                warn!("etcd: {key}: {e}");
                return;
            }
        };
        let lease = PeerLease { subnet, len, attrs };
        if let Some(p) = self.peers.get(&(subnet, len)) {
            if p.lease == lease && p.programmed {
                return;
            }
            if p.programmed {
                ops.extend(peer_del_ops(&cfg, &self.spec, &p.lease));
            }
        }
        let (programmed, error) = match peer_ops(&cfg, &self.spec, &lease) {
            Ok(o) => {
                ops.extend(o);
                (true, None)
            }
            Err(e) => {
                warn!("etcd: {key}: {e}");
                (false, Some(e))
            }
        };
        info!("etcd: peer {subnet}/{len} at {}", lease.attrs.public_ip);
        self.peers.insert(
            (subnet, len),
            Peer {
                lease,
                since: unix_now(),
                programmed,
                error,
            },
        );
    }

    /// A lease was deleted or expired: remove what it programmed.
    fn remove(&mut self, key: &str, ops: &mut Vec<OverlayOp>) {
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
                ops.extend(peer_del_ops(cfg, &self.spec, &p.lease));
            }
        }
    }

    fn lost_own_subnet(&mut self) -> bool {
        std::mem::take(&mut self.own_lost)
    }

    fn drop_all_peers(&mut self) {
        let mut ops = Vec::new();
        let keys: Vec<_> = self.peers.keys().copied().collect();
        for (s, l) in keys {
            self.remove(&schema::subnet_key(&self.spec.prefix, s, l), &mut ops);
        }
        self.apply(ops);
    }

    /// Send ops to the worker in bounded batches; errors are logged.
    fn apply(&mut self, ops: Vec<OverlayOp>) {
        for chunk in ops.chunks(OPS_PER_CALL) {
            match self.worker.call(Command::Overlay(chunk.to_vec())) {
                Ok(v) => {
                    for e in v["errors"].as_array().into_iter().flatten() {
                        let i = e["op"].as_u64().unwrap_or(0) as usize;
                        warn!("etcd: programming {:?}: {}", chunk.get(i), e["error"]);
                        self.last_error = Some(format!("{:?}: {}", chunk.get(i), e["error"]));
                    }
                }
                Err(e) => warn!("etcd: worker: {e}"),
            }
        }
    }

    /// Rewrite the status `overlay-show` reads.
    fn publish(&self) {
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
            "last_error": self.last_error,
        });
        if let Ok(mut s) = self.status.lock() {
            *s = v;
        }
    }
}
