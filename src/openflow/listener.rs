//! The OpenFlow listeners: one unix socket per bridge, `DIR/BRIDGE.mgmt`, kept in step with the
//! bridges that exist, and `RegistrySwitch`, the `Switch` that acts through the control registry.
//!
//! Contract:
//! - `Manager::start(dir, registry)` checks the bridges (within `POLL` of a command that may have
//!   changed them, else every `RESYNC`) and opens or closes their
//!   sockets (mode 0600, a stale socket file is replaced, a live one is left alone with a
//!   warning). Dropping the manager closes the listeners and removes their files.
//! - Each connection is served by its own thread (at most `MAX_CONNS` per bridge): HELLO first,
//!   then one message at a time through `Session`. A length below 8 ends the connection (the
//!   stream cannot be resynchronised).
//! - Silent and stuck clients cannot hold a bridge's socket (`watch.rs`, `Manager::start_with`
//!   takes other `Limits`): a HELLO must come within `HELLO_TIMEOUT`, a connection silent for
//!   `PROBE_INTERVAL` gets an ECHO_REQUEST and is closed if it sends nothing in another
//!   `PROBE_INTERVAL`, and a new connection to a full socket closes the oldest one without
//!   HELLO, else the one silent longest (not one whose request is being served); refusals are
//!   logged at most once a second with their count. One watcher thread per bridge checks the
//!   deadlines. Connections out to controllers (`connect.rs`) are not watched.
//! - Changes go through the registry as `add-flows` / `del-flows` commands, so they are
//!   journalled and logged with the peer `openflow BRIDGE`; with `--db` they are written to it
//!   by the store's flusher, coalesced, within `store::FLUSH_DELAY` of the last one (each
//!   FLOW_MOD wrote the whole configuration: O(table) each), and at a clean stop.

use crate::flow::EntryWrite;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::async_msg::Prefs;
use super::codec::HEADER_LEN;
use super::hub::{Conn, Hub, WRITE_TIMEOUT};
pub use super::watch::{Limits, MAX_CONNS};
use super::watch::{Liveness, Verdict, pick_victim, verdict};
use super::{FlowEntry, PortCounters, PortInfo, Session, Switch, datapath_id};
use crate::control::Registry;
use crate::flow::{Flow, FlowFilter, parse_flow};

/// How often the manager looks for new or removed bridges.
pub const POLL: Duration = Duration::from_millis(500);
/// The manager asks for `show` when the workers took a change command since it last did
/// (`EventSource::changes`), and at least this often anyway: asking wakes every worker, and
/// an idle switch should not be woken twice a second for nothing.
pub const RESYNC: Duration = Duration::from_secs(10);

/// The `Switch` of one bridge, acting through the control registry.
pub struct RegistrySwitch {
    reg: Arc<Registry>,
    bridge: String,
    peer: String,
}

impl RegistrySwitch {
    /// The switch for `bridge`.
    pub fn new(reg: Arc<Registry>, bridge: &str) -> Self {
        RegistrySwitch {
            reg,
            bridge: bridge.to_string(),
            peer: format!("openflow {bridge}"),
        }
    }

    /// `add-KIND` (METER_MOD/GROUP_MOD ADD) or `mod-KIND` (MODIFY) of `spec`. They have no
    /// add-or-modify command; only the configuration restore uses that.
    fn write_entry(&self, kind: &str, spec: &str, write: EntryWrite) -> Result<(), String> {
        let verb = match write {
            EntryWrite::Add => "add",
            EntryWrite::Modify => "mod",
            EntryWrite::AddOrModify => {
                return Err("add-or-modify is not an OpenFlow command".into());
            }
        };
        self.change(
            &format!("{verb}-{kind}"),
            vec![self.bridge.clone(), spec.to_string()],
        )
        .map(|_| ())
    }

    fn call(&self, method: &str, params: Vec<String>) -> Result<Value, String> {
        self.reg
            .call_from(method, &params, &self.peer)
            .map(|r| r.data)
            .map_err(|e| e.message().to_string())
    }

    /// [`RegistrySwitch::call`] of a change the database flusher writes, coalesced with the
    /// changes that follow it (`later` of [`crate::control::Journal::change`]). ovs-ofctl
    /// sends a BARRIER after each FLOW_MOD, so a write per barrier would cost the same as one
    /// per change: a barrier means "carried out", as OpenFlow says, not "on disk".
    fn change(&self, method: &str, params: Vec<String>) -> Result<Value, String> {
        self.reg
            .call_deferred_from(method, &params, &self.peer)
            .map(|r| r.data)
            .map_err(|e| e.message().to_string())
    }

    fn bridge_json(&self) -> Result<Value, String> {
        let v = self.call("show", Vec::new())?;
        v["bridges"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|b| b["name"] == self.bridge.as_str())
            .cloned()
            .ok_or_else(|| format!("no bridge named '{}'", self.bridge))
    }
}

/// The text of a filter, as `del-flows` / `dump-flows` read it.
pub fn filter_text(f: &FlowFilter) -> String {
    let mut parts = Vec::new();
    if let Some(t) = f.table {
        parts.push(format!("table={t}"));
    }
    if let Some(p) = f.priority {
        parts.push(format!("priority={p}"));
    }
    if let Some(c) = f.cookie {
        parts.push(format!("cookie={:#x}/{:#x}", c.value, c.mask));
    }
    let m = f.m.to_string();
    if !m.is_empty() {
        parts.push(m);
    }
    parts.join(",")
}

/// A `dump-flows` line's flow and statistics.
pub fn parse_dump_line(line: &str) -> Result<FlowEntry, String> {
    let flow = parse_flow(line).map_err(|e| format!("dump line '{line}': {e}"))?;
    let mut e = FlowEntry {
        flow,
        n_packets: 0,
        n_bytes: 0,
        duration_ms: 0,
        idle_age_s: 0,
    };
    for tok in line.split([',', ' ']).filter(|t| !t.is_empty()) {
        let Some((k, v)) = tok.split_once('=') else {
            continue;
        };
        match k {
            "n_packets" => e.n_packets = v.parse().unwrap_or(0),
            "n_bytes" => e.n_bytes = v.parse().unwrap_or(0),
            "idle_age" => e.idle_age_s = v.parse().unwrap_or(0),
            "duration" => {
                let secs: f64 = v.trim_end_matches('s').parse().unwrap_or(0.0);
                e.duration_ms = (secs * 1000.0) as u64;
            }
            _ => {}
        }
    }
    Ok(e)
}

impl Switch for RegistrySwitch {
    fn bridge(&self) -> &str {
        &self.bridge
    }

    fn datapath_id(&self) -> u64 {
        self.bridge_json()
            .ok()
            .and_then(|b| b["datapath_id"].as_str().map(str::to_string))
            .and_then(|d| u64::from_str_radix(&d, 16).ok())
            .unwrap_or_else(|| datapath_id(&self.bridge))
    }

    fn ports(&self) -> Result<Vec<PortInfo>, String> {
        let b = self.bridge_json()?;
        let mut ports: Vec<PortInfo> = b["ports"]
            .as_array()
            .into_iter()
            .flatten()
            // A port the configuration keeps pending has no OpenFlow number yet: not a port
            // of the switch for a controller (it would read as port 0).
            .filter(|p| p["ofport"].is_u64())
            .map(|p| PortInfo {
                ofport: p["ofport"].as_u64().unwrap_or(0) as u16,
                name: p["name"].as_str().unwrap_or("").to_string(),
                // A port set `down` (mod-port) reads as down, as OVS's LINK_DOWN follows.
                up: p["state"] == "up"
                    && p["config_bits"].as_u64().unwrap_or(0)
                        & u64::from(crate::port_admin::PORT_DOWN)
                        == 0,
                mac: super::port_mac(
                    &self.bridge,
                    p["name"].as_str().unwrap_or(""),
                    p["type"].as_str().unwrap_or(""),
                ),
                config: p["config_bits"].as_u64().unwrap_or(0) as u32,
            })
            .collect();
        ports.sort_by_key(|p| p.ofport);
        Ok(ports)
    }

    fn port_stats(&self) -> Result<Vec<PortCounters>, String> {
        let ports = self.ports()?;
        let ages: std::collections::HashMap<String, u64> = self.bridge_json()?["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| Some((p["name"].as_str()?.to_string(), p["age_ms"].as_u64()?)))
            .collect();
        let stats = self.call("stats", Vec::new())?;
        let n = |v: &Value| v.as_u64().unwrap_or(0);
        Ok(ports
            .iter()
            .map(|p| {
                let s = &stats["ports"][&p.name];
                let drops = s["drops"]
                    .as_object()
                    .map_or(0, |d| d.values().map(n).sum());
                PortCounters {
                    ofport: p.ofport,
                    rx_packets: n(&s["rx_packets"]),
                    tx_packets: n(&s["tx_packets"]),
                    rx_bytes: n(&s["rx_bytes"]),
                    tx_bytes: n(&s["tx_bytes"]),
                    rx_dropped: drops,
                    tx_dropped: 0,
                    duration_ms: ages.get(&p.name).copied().unwrap_or(0),
                }
            })
            .collect())
    }

    fn add_flows(&self, flows: &[Flow]) -> Result<(), String> {
        let mut params = vec![self.bridge.clone()];
        params.extend(flows.iter().map(Flow::to_string));
        self.change("add-flows", params).map(|_| ())
    }

    fn del_flows(&self, filter: &FlowFilter, strict: bool) -> Result<(), String> {
        let mut params = vec![self.bridge.clone()];
        if strict {
            params.push("--strict".into());
        }
        let t = filter_text(filter);
        if !t.is_empty() {
            params.push(t);
        }
        self.change("del-flows", params).map(|_| ())
    }

    fn packet_out(&self, outputs: &[u16], frame: &[u8]) -> Result<(), String> {
        let ports: Vec<String> = outputs.iter().map(u16::to_string).collect();
        let hex: String = frame.iter().map(|b| format!("{b:02x}")).collect();
        self.call(
            "packet-out",
            vec![self.bridge.clone(), ports.join(","), hex],
        )
        .map(|_| ())
    }

    fn mod_port(&self, ofport: u16, config: u32, mask: u32) -> Result<(), String> {
        self.call(
            "mod-port",
            vec![
                self.bridge.clone(),
                ofport.to_string(),
                format!("config={config:#x}/{mask:#x}"),
            ],
        )
        .map(|_| ())
    }

    fn add_meter(&self, spec: &str, write: EntryWrite) -> Result<(), String> {
        self.write_entry("meter", spec, write)
    }

    fn add_group(&self, spec: &str, write: EntryWrite) -> Result<(), String> {
        self.write_entry("group", spec, write)
    }

    fn del_groups(&self, id: Option<u32>) -> Result<(), String> {
        let mut params = vec![self.bridge.clone()];
        params.extend(id.map(|i| format!("group_id={i}")));
        self.change("del-groups", params).map(|_| ())
    }

    fn group_stats(&self) -> Result<Vec<super::GroupStatsInfo>, String> {
        let v = self.call("dump-group-stats", vec![self.bridge.clone()])?;
        let n = |m: &serde_json::Value, k: &str| m[k].as_u64().unwrap_or(0);
        Ok(v["stats"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|g| super::GroupStatsInfo {
                id: n(g, "group_id") as u32,
                ref_count: n(g, "ref_count") as u32,
                duration_ms: n(g, "duration_ms"),
                packets: n(g, "packet_count"),
                bytes: n(g, "byte_count"),
                buckets: g["buckets"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|b| (b[0].as_u64().unwrap_or(0), b[1].as_u64().unwrap_or(0)))
                    .collect(),
            })
            .collect())
    }

    fn del_meters(&self, id: Option<u32>) -> Result<(), String> {
        let mut params = vec![self.bridge.clone()];
        params.extend(id.map(|i| format!("meter={i}")));
        self.change("del-meters", params).map(|_| ())
    }

    fn meters(&self) -> Result<Vec<super::MeterInfo>, String> {
        let v = self.call("dump-meters", vec![self.bridge.clone()])?;
        let n = |m: &serde_json::Value, k: &str| m[k].as_u64().unwrap_or(0);
        Ok(v["meters"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|m| super::MeterInfo {
                id: n(m, "meter") as u32,
                rate_kbps: n(m, "rate_kbps").min(u64::from(u32::MAX)) as u32,
                burst_kbits: n(m, "burst_kbits").min(u64::from(u32::MAX)) as u32,
                flow_count: n(m, "flow_count") as u32,
                duration_ms: n(m, "duration_ms"),
                packets: n(m, "passed") + n(m, "dropped"),
                bytes: n(m, "passed_bytes") + n(m, "dropped_bytes"),
                band_packets: n(m, "dropped"),
                band_bytes: n(m, "dropped_bytes"),
            })
            .collect())
    }

    fn dump_groups(&self) -> Result<Vec<String>, String> {
        let v = self.call("dump-groups", vec![self.bridge.clone()])?;
        Ok(v["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|g| g.as_str().map(str::to_string))
            .collect())
    }

    fn dump_flows(&self, filter: &FlowFilter) -> Result<Vec<FlowEntry>, String> {
        let mut params = vec![self.bridge.clone()];
        let t = filter_text(filter);
        if !t.is_empty() {
            params.push(t);
        }
        let v = self.call("dump-flows", params)?;
        v["flows"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|l| parse_dump_line(l.as_str().unwrap_or("")))
            .collect()
    }
}

/// Serve one connection until the peer closes it or the framing breaks (replies only: no
/// events reach it).
pub fn serve_connection<S: Read + Write>(s: S, sw: &dyn Switch) {
    let cell = RefCell::new(s);
    let send = |m: &[u8]| cell.borrow_mut().write_all(m).is_ok();
    serve_loop(
        Session::default(),
        &mut CellRead(&cell),
        &send,
        sw,
        &|_| {},
        &|_| {},
    );
}

/// What a served connection did, for the listener's watcher.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activity {
    /// A whole message arrived and is being handled.
    Received,
    /// It was handled and its replies written; the version negotiated so far.
    Answered(Option<u8>),
}

/// Serve a connection read from `r` and written through `conn`, which joins `hub` (and so
/// receives the bridge's events) once HELLO has negotiated a version.
pub fn serve_joined(r: impl Read, conn: Arc<Conn>, hub: &Hub, sw: &dyn Switch) {
    serve_watched(r, conn, hub, sw, &|_| {});
}

/// [`serve_joined`] that reports each message to `activity`.
pub fn serve_watched(
    mut r: impl Read,
    conn: Arc<Conn>,
    hub: &Hub,
    sw: &dyn Switch,
    activity: &dyn Fn(Activity),
) {
    let joined = Cell::new(false);
    let send = |m: &[u8]| conn.send(m);
    let seen = |s: &Session| {
        if let Some(version) = s.version {
            conn.set_prefs(Prefs {
                version,
                nxm: s.nxm,
                miss_send_len: s.miss_send_len,
                // The role asked for: `Conn` says which one it has when it sends.
                role: s.role,
                async_masks: s.async_masks,
            });
            if !joined.replace(true) {
                hub.join(conn.clone());
            }
        }
    };
    let session = Session::with_roles(hub.roles(&conn.bridge));
    if let Some((t, id)) = &session.roles {
        conn.set_roles(t.clone(), *id);
    }
    serve_loop(session, &mut r, &send, sw, &seen, activity);
    if joined.get() {
        hub.leave(&conn);
    }
}

struct CellRead<'a, S>(&'a RefCell<S>);

impl<S: Read> Read for CellRead<'_, S> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.borrow_mut().read(buf)
    }
}

fn serve_loop(
    mut session: Session,
    r: &mut dyn Read,
    send: &dyn Fn(&[u8]) -> bool,
    sw: &dyn Switch,
    seen: &dyn Fn(&Session),
    activity: &dyn Fn(Activity),
) {
    serve_session(&mut session, r, send, sw, seen, activity);
    session.close();
}

fn serve_session(
    session: &mut Session,
    r: &mut dyn Read,
    send: &dyn Fn(&[u8]) -> bool,
    sw: &dyn Switch,
    seen: &dyn Fn(&Session),
    activity: &dyn Fn(Activity),
) {
    if !send(&Session::hello()) {
        return;
    }
    let mut buf = vec![0u8; 65536];
    loop {
        if r.read_exact(&mut buf[..HEADER_LEN]).is_err() {
            return;
        }
        let len = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
        // A length below 8 cannot be resynchronised: the session answers BAD_LEN and closes.
        let len = len.max(HEADER_LEN);
        if r.read_exact(&mut buf[HEADER_LEN..len]).is_err() {
            return;
        }
        activity(Activity::Received);
        let (out, close) = session.handle(&buf[..len], sw);
        seen(session);
        for m in out {
            if !send(&m) {
                return;
            }
        }
        if close {
            return;
        }
        activity(Activity::Answered(session.version));
    }
}

struct Listener {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    /// Dropped to stop the watcher.
    watch_stop: Option<crossbeam_channel::Sender<()>>,
    watcher: Option<JoinHandle<()>>,
}

/// One accepted connection as the listener's watcher sees it.
struct Watched {
    live: Liveness,
    conn: Arc<Conn>,
    /// Closed by the watcher or to admit another; no longer counted.
    closing: bool,
}

/// A bridge's accepted connections, by id.
type Table = Arc<Mutex<HashMap<u64, Watched>>>;

fn lock(t: &Table) -> std::sync::MutexGuard<'_, HashMap<u64, Watched>> {
    t.lock().unwrap_or_else(|e| e.into_inner())
}

impl Listener {
    fn open(
        dir: &Path,
        bridge: &str,
        reg: Arc<Registry>,
        hub: Arc<Hub>,
        limits: Limits,
    ) -> std::io::Result<Listener> {
        let path = dir.join(format!("{bridge}.mgmt"));
        if path.exists() {
            if UnixStream::connect(&path).is_ok() {
                return Err(std::io::Error::other("another process serves it"));
            }
            std::fs::remove_file(&path)?;
        }
        let l = UnixListener::bind(&path)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        let stop = Arc::new(AtomicBool::new(false));
        let table: Table = Arc::default();
        let (watch_stop, stopped) = crossbeam_channel::bounded::<()>(0);
        // The accept loop's word to an idle watcher that a connection came.
        let (wake, woken) = crossbeam_channel::bounded::<()>(1);
        let (t, name) = (table.clone(), bridge.to_string());
        let watcher = std::thread::Builder::new()
            .name(format!("of-{bridge}-watch"))
            .spawn(move || watch_loop(&name, &t, &limits, (&stopped, &woken)))?;
        let st = stop.clone();
        let bridge = bridge.to_string();
        let thread = std::thread::Builder::new()
            .name(format!("of-{bridge}"))
            .spawn(move || accept_loop(l, &bridge, reg, &hub, (&st, &wake), &table, &limits))?;
        Ok(Listener {
            path,
            stop,
            thread: Some(thread),
            watch_stop: Some(watch_stop),
            watcher: Some(watcher),
        })
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.watch_stop.take();
        if let Some(t) = self.watcher.take() {
            let _ = t.join();
        }
        self.stop.store(true, Ordering::SeqCst);
        let _ = UnixStream::connect(&self.path);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

fn accept_loop(
    l: UnixListener,
    bridge: &str,
    reg: Arc<Registry>,
    hub: &Arc<Hub>,
    (stop, wake): (&AtomicBool, &crossbeam_channel::Sender<()>),
    table: &Table,
    limits: &Limits,
) {
    let mut refusals = crate::log_limit::LogLimit::default();
    for (id, s) in (0u64..).zip(l.incoming()) {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(s) = s else { continue };
        let (Ok(w), Ok(k)) = (s.try_clone(), s.try_clone()) else {
            continue;
        };
        let _ = w.set_write_timeout(Some(WRITE_TIMEOUT));
        let shut: super::hub::ShutdownFn = Arc::new(move || {
            let _ = k.shutdown(std::net::Shutdown::Both);
        });
        let conn = Arc::new(Conn::new(bridge, Box::new(w), Some(shut)));
        let now = Instant::now();
        {
            let mut t = lock(table);
            if !make_room(&mut t, bridge, limits.max_conns) {
                drop(t);
                if let Some(held) = refusals.admit(now) {
                    tracing::warn!(
                        "openflow {bridge}: {} connections, each with a request being served; \
                         refused {} connection(s) (logged at most once a second)",
                        limits.max_conns,
                        held + 1
                    );
                }
                continue;
            }
            t.insert(
                id,
                Watched {
                    live: Liveness::new(now),
                    conn: conn.clone(),
                    closing: false,
                },
            );
        }
        // Full already: the watcher is awake.
        let _ = wake.try_send(());
        let sw = RegistrySwitch::new(reg.clone(), bridge);
        let hub = hub.clone();
        let t = table.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("of-{bridge}-conn"))
            .spawn(move || {
                let activity = |a: Activity| {
                    if let Some(w) = lock(&t).get_mut(&id) {
                        match a {
                            Activity::Received => w.live.busy = true,
                            Activity::Answered(version) => {
                                w.live.busy = false;
                                w.live.version = version;
                                w.live.heard = Instant::now();
                                w.live.probed = None;
                            }
                        }
                    }
                };
                serve_watched(s, conn, &hub, &sw, &activity);
                lock(&t).remove(&id);
            });
        if spawned.is_err() {
            lock(table).remove(&id);
        }
    }
}

/// Room for one more connection in `t`: true when there is, or one was closed to make it.
fn make_room(t: &mut HashMap<u64, Watched>, bridge: &str, max: usize) -> bool {
    if t.values().filter(|w| !w.closing).count() < max {
        return true;
    }
    let victim = pick_victim(
        t.iter()
            .filter(|(_, w)| !w.closing)
            .map(|(id, w)| (*id, &w.live)),
    );
    let Some(w) = victim.and_then(|id| t.get_mut(&id)) else {
        return false;
    };
    // Debug level: a client connecting in a loop must not flood the log.
    tracing::debug!(
        "openflow {bridge}: closing the connection {} to admit a new one",
        if w.live.version.is_none() {
            "waiting longest for its HELLO"
        } else {
            "silent longest"
        }
    );
    w.closing = true;
    w.conn.close();
    true
}

/// Probes silent connections and closes those past a deadline (`watch::verdict`) every
/// `limits.tick`, until `stopped` is dropped. With no connection it sleeps until `woken` says
/// one came (it ticked four times a second on every bridge of an idle daemon).
fn watch_loop(
    bridge: &str,
    table: &Table,
    limits: &Limits,
    (stopped, woken): (
        &crossbeam_channel::Receiver<()>,
        &crossbeam_channel::Receiver<()>,
    ),
) {
    loop {
        if lock(table).is_empty() {
            crossbeam_channel::select! {
                recv(stopped) -> _ => return,
                recv(woken) -> r => if r.is_err() { return },
            }
        }
        if !matches!(
            stopped.recv_timeout(limits.tick),
            Err(crossbeam_channel::RecvTimeoutError::Timeout)
        ) {
            return;
        }
        let now = Instant::now();
        let mut probes = Vec::new();
        for w in lock(table).values_mut().filter(|w| !w.closing) {
            match verdict(&w.live, now, limits) {
                Verdict::Keep => {}
                Verdict::Probe(version) => {
                    w.live.probed = Some(now);
                    probes.push((w.conn.clone(), version));
                }
                Verdict::Close(why) => {
                    tracing::debug!("openflow {bridge}: closing a connection: {why}");
                    w.closing = true;
                    w.conn.close();
                }
            }
        }
        // Outside the lock: a write may block (up to `WRITE_TIMEOUT`).
        for (conn, version) in probes {
            conn.send(&Session::echo_request(version));
        }
    }
}

/// Keeps one listener per bridge, and delivers the worker's events to their connections.
pub struct Manager {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    events: Option<JoinHandle<()>>,
    hub: Arc<Hub>,
}

impl Manager {
    /// Serve every bridge of `reg` under `dir` (created if missing; None: no sockets, only
    /// controllers), connect to the bridges' controllers; `events` (the worker's,
    /// `WorkerHandle::events`) go to the bridges' connections.
    pub fn start(
        dir: impl Into<Option<PathBuf>>,
        reg: Arc<Registry>,
        events: Option<crate::events::EventSource>,
    ) -> std::io::Result<Manager> {
        Manager::start_with(dir, reg, events, Limits::default())
    }

    /// [`Manager::start`] with other limits on the bridges' sockets.
    pub fn start_with(
        dir: impl Into<Option<PathBuf>>,
        reg: Arc<Registry>,
        events: Option<crate::events::EventSource>,
        limits: Limits,
    ) -> std::io::Result<Manager> {
        let dir: Option<PathBuf> = dir.into();
        if let Some(d) = &dir {
            std::fs::create_dir_all(d)?;
        }
        let stop = Arc::new(AtomicBool::new(false));
        let hub = Hub::new(
            events
                .as_ref()
                .map_or_else(|| Arc::new(AtomicUsize::new(0)), |e| e.listeners.clone()),
        );
        let changes = events.as_ref().map(|e| e.changes.clone());
        let events = match events {
            Some(src) => Some(super::hub::dispatch(hub.clone(), src, stop.clone())?),
            None => None,
        };
        let st = stop.clone();
        let h = hub.clone();
        // `add-br` answers once the new bridge's socket listens: the command's hook asks the
        // manager for a look at once and waits for it (bounded).
        let (wake, woken) = crossbeam_channel::unbounded::<crossbeam_channel::Sender<()>>();
        reg.set_after_change(Box::new(move |method, _| {
            if method == "add-br" {
                let (done, wait) = crossbeam_channel::bounded(1);
                if wake.send(done).is_ok() {
                    let _ = wait.recv_timeout(Duration::from_secs(2));
                }
            }
        }));
        let thread = std::thread::Builder::new()
            .name("openflow".into())
            .spawn(move || {
                let (d, c) = (dir.as_deref(), changes.as_deref());
                manage(d, &reg, &h, &st, c, &woken, &limits);
            })?;
        Ok(Manager {
            stop,
            thread: Some(thread),
            events,
            hub,
        })
    }

    /// The connections and their events.
    pub fn hub(&self) -> Arc<Hub> {
        self.hub.clone()
    }
}

impl Drop for Manager {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in [self.thread.take(), self.events.take()]
            .into_iter()
            .flatten()
        {
            let _ = t.join();
        }
    }
}

fn bridges(reg: &Registry) -> Option<Vec<Value>> {
    let v = reg.call("show", &[]).ok()?.data;
    v["bridges"].as_array().cloned()
}

/// Keeps listeners and controller links in step with `show`'s bridges. With `changes` (the
/// workers' change count), `show` is asked only when it moved, or every `RESYNC`; without,
/// every `POLL`.
fn manage(
    dir: Option<&Path>,
    reg: &Arc<Registry>,
    hub: &Arc<Hub>,
    stop: &AtomicBool,
    changes: Option<&std::sync::atomic::AtomicU64>,
    woken: &crossbeam_channel::Receiver<crossbeam_channel::Sender<()>>,
    limits: &Limits,
) {
    // Sleep `POLL` unless a command asks for a look now (its sender is told when it is done).
    let mut asked: Vec<crossbeam_channel::Sender<()>> = Vec::new();
    let pause = |asked: &mut Vec<crossbeam_channel::Sender<()>>| {
        if let Ok(s) = woken.recv_timeout(POLL) {
            asked.push(s);
            asked.extend(woken.try_iter());
        }
    };
    let mut open: HashMap<String, Listener> = HashMap::new();
    let mut failed: HashMap<String, String> = HashMap::new();
    let mut controllers = super::connect::Controllers::default();
    // The workers' change count at the last `show`, and when that was.
    let mut seen: Option<(u64, std::time::Instant)> = None;
    while !stop.load(Ordering::SeqCst) {
        let count = changes.map(|c| c.load(Ordering::SeqCst));
        let current = count.is_some()
            && seen.is_some_and(|(n, at)| Some(n) == count && at.elapsed() < RESYNC);
        if current && asked.is_empty() {
            pause(&mut asked);
            continue;
        }
        if let Some(list) = bridges(reg) {
            seen = count.map(|n| (n, std::time::Instant::now()));
            controllers.sync(&list, reg, hub);
            let names: Vec<String> = list
                .iter()
                .filter_map(|b| b["name"].as_str().map(str::to_string))
                .collect();
            open.retain(|b, _| names.contains(b));
            failed.retain(|b, _| names.contains(b));
            let Some(dir) = dir else {
                asked.clear();
                pause(&mut asked);
                continue;
            };
            for b in names {
                if open.contains_key(&b) || failed.contains_key(&b) {
                    continue;
                }
                match Listener::open(dir, &b, reg.clone(), hub.clone(), *limits) {
                    Ok(l) => {
                        tracing::info!("openflow: serving bridge {b} on {}", l.path.display());
                        open.insert(b, l);
                    }
                    Err(e) => {
                        tracing::warn!(
                            "openflow: bridge {b}: cannot listen in {}: {e}",
                            dir.display()
                        );
                        failed.insert(b, e.to_string());
                    }
                }
            }
        }
        // Whoever asked for this look: done (dropping the sender answers too).
        asked.clear();
        pause(&mut asked);
    }
}
