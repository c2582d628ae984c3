//! Packet capture: the worker's taps, the daemon's capture sessions, and the `uvs ctl capture`
//! client that writes pcapng.
//!
//! How frames travel (the control socket answers one request with one response, so a capture
//! is a poll loop, which needs no new protocol mode and works through any JSON-RPC client):
//! 1. `capture-start PORT [direction=rx|tx|both] [count=N] [duration=S] [snaplen=N]
//!    [filter=EXPR]` (each key at most once, snaplen 1 to [`MAX_SNAPLEN`]; [`StartArgs::parse`],
//!    which `uvs ctl capture` also runs on its options) parses the filter, creates a bounded channel ([`QUEUE`] frames) and hands
//!    its sending end to the worker in a [`TapSpec`]; the answer is a session id and the port.
//! 2. `capture-read ID` waits up to [`READ_WAIT`] for the first frame, then returns every frame
//!    queued (at most [`READ_MAX`]), hex-encoded with its wall-clock timestamp, direction and
//!    original length, the number of frames the capture dropped because the queue was full, and
//!    `done` once the count or duration is reached (or the port was removed), with `ended`:
//!    why ([`End`]: `count`, `duration`, `port-deleted`, `stopped`).
//! 3. `capture-stop ID` ends it early. A session nobody reads for [`ABANDONED`] is stopped.
//!    The daemon logs each capture's start (the worker) and end ([`Ended`], when the session
//!    is stopped or reaped: the reason the capture recorded first, packets read, drops).
//!
//! The client (`uvs ctl capture ... FILE|-`) loops on `capture-read` and writes each frame as a
//! pcapng Enhanced Packet Block with its direction flag (inbound/outbound), flushing after
//! every read, so `uvs ctl capture p1 - | tshark -r -` shows packets live. The daemon never
//! opens FILE. It ends with status 0 and `captured N packets` when the count or duration is
//! reached, on Ctrl-C or when its output's reader goes; with status 1 and the reason when the
//! port was deleted (as tcpdump when its interface goes) or the daemon went away, restarted or
//! stopped answering (the file keeps what was captured, complete).

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};
use serde_json::{Value, json};

use super::filter::Filter;
use crate::datapath::Datapath;
use crate::port::PortKind;

/// Frames queued between the worker and the control plane per capture.
pub const QUEUE: usize = 8192;
/// How long `capture-read` waits for a first frame.
pub const READ_WAIT: Duration = Duration::from_millis(250);
/// Most frames returned by one `capture-read`.
pub const READ_MAX: usize = 2048;
/// A session not read for this long is stopped (its client went away).
pub const ABANDONED: Duration = Duration::from_secs(10);
/// Default bytes kept of each frame.
pub const DEFAULT_SNAPLEN: u32 = 262_144;
/// Most bytes a capture may keep of each frame (tcpdump's MAXIMUM_SNAPLEN).
pub const MAX_SNAPLEN: u32 = 262_144;
/// The keys of `capture-start` (`uvs ctl capture`'s options without the `--`).
pub const START_KEYS: [&str; 5] = ["direction", "count", "duration", "snaplen", "filter"];

/// Why `capture-start`'s arguments (which are `uvs ctl capture`'s options) were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArgError {
    /// Not `KEY=VALUE`.
    #[error("'{0}': capture-start takes KEY=VALUE arguments")]
    NotKeyValue(String),
    /// A key that is not one of [`START_KEYS`].
    #[error("'{0}': capture-start takes direction, count, duration, snaplen, filter")]
    Unknown(String),
    /// A key given twice (the client and the daemon once took different ones).
    #[error("{0}: given more than once")]
    Repeated(&'static str),
    /// A value the key does not take.
    #[error("{key}: {problem}")]
    Bad {
        /// The key.
        key: &'static str,
        /// What is wrong with the value (naming it).
        problem: String,
    },
}

impl ArgError {
    /// The message as `uvs ctl capture` words it: about the option `--KEY`.
    pub fn as_option(&self) -> String {
        match self {
            ArgError::Repeated(_) | ArgError::Bad { .. } => format!("--{self}"),
            e => e.to_string(),
        }
    }
}

/// Why a capture ended, as `capture-read`'s `ended` and the daemon's log say it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum End {
    /// Its `count` of frames was taken.
    Count = 1,
    /// Its `duration` passed.
    Duration = 2,
    /// The captured port was deleted.
    PortDeleted = 3,
    /// Its client stopped it (`capture-stop`: the count or duration reached, Ctrl-C, the
    /// reader of its output gone).
    Stopped = 4,
    /// Nobody read it for [`ABANDONED`] (its client went away).
    Abandoned = 5,
}

impl End {
    /// The word on the wire (`capture-read`'s `ended`).
    pub fn as_str(self) -> &'static str {
        match self {
            End::Count => "count",
            End::Duration => "duration",
            End::PortDeleted => "port-deleted",
            End::Stopped => "stopped",
            End::Abandoned => "abandoned",
        }
    }

    fn from_u8(v: u8) -> Option<End> {
        [
            End::Count,
            End::Duration,
            End::PortDeleted,
            End::Stopped,
            End::Abandoned,
        ]
        .into_iter()
        .find(|e| *e as u8 == v)
    }
}

/// Where the first reason a capture ended is kept: shared by the session and every worker's
/// copy of its tap; the first to record one wins.
#[derive(Debug, Clone, Default)]
pub struct EndSlot(Arc<std::sync::atomic::AtomicU8>);

impl EndSlot {
    /// Record `why` unless a reason is recorded already.
    pub fn set(&self, why: End) {
        let _ = self
            .0
            .compare_exchange(0, why as u8, Ordering::AcqRel, Ordering::Acquire);
    }

    /// The recorded reason.
    pub fn get(&self) -> Option<End> {
        End::from_u8(self.0.load(Ordering::Acquire))
    }
}

/// Which frames of a port a capture takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Received frames.
    Rx,
    /// Transmitted frames.
    Tx,
    /// Both.
    Both,
}

impl Direction {
    /// Takes received frames.
    pub fn rx(self) -> bool {
        self != Direction::Tx
    }

    /// Takes transmitted frames.
    pub fn tx(self) -> bool {
        self != Direction::Rx
    }

    fn parse(s: &str) -> Result<Direction, String> {
        match s {
            "rx" | "in" => Ok(Direction::Rx),
            "tx" | "out" => Ok(Direction::Tx),
            "both" | "inout" => Ok(Direction::Both),
            _ => Err(format!("'{s}' (rx, tx or both)")),
        }
    }
}

/// The direction of one captured frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    /// Received by the port.
    Rx,
    /// Sent by the port.
    Tx,
}

/// One captured frame.
#[derive(Debug, Clone)]
pub struct Captured {
    /// Wall-clock nanoseconds since the epoch.
    pub ts_ns: u64,
    /// Received or sent.
    pub dir: Dir,
    /// The frame's length on the wire.
    pub orig_len: u32,
    /// The first `snaplen` bytes.
    pub data: Vec<u8>,
}

/// What the control plane gives the worker to start a capture.
pub struct TapSpec {
    /// Session id.
    pub id: u64,
    /// Port name.
    pub port: String,
    /// Which frames.
    pub dir: Direction,
    /// Which of them.
    pub filter: Filter,
    /// Stop after this many frames.
    pub count: Option<u64>,
    /// Stop at this time on the worker's clock (ms), set by the worker from `duration`.
    pub duration: Option<Duration>,
    /// Bytes kept of each frame.
    pub snaplen: u32,
    /// Where frames go.
    pub tx: Sender<Captured>,
    /// Frames lost because the queue was full.
    pub dropped: Arc<AtomicU64>,
    /// Why it ended (set by the tap, read by the session).
    pub end: EndSlot,
    /// With several workers: the frames still to capture, counted down by every worker's copy
    /// of this capture (so `count` holds in total). None: `count` is this copy's own.
    pub shared_count: Option<Arc<AtomicU64>>,
}

impl TapSpec {
    /// A copy for another worker: the same stream, drop counter and (shared) count.
    pub fn for_another_worker(&mut self) -> TapSpec {
        if let (Some(c), None) = (self.count, &self.shared_count) {
            self.shared_count = Some(Arc::new(AtomicU64::new(c)));
        }
        TapSpec {
            id: self.id,
            port: self.port.clone(),
            dir: self.dir,
            filter: self.filter.clone(),
            count: self.count,
            duration: self.duration,
            snaplen: self.snaplen,
            tx: self.tx.clone(),
            dropped: self.dropped.clone(),
            end: self.end.clone(),
            shared_count: self.shared_count.clone(),
        }
    }
}

/// A capture running in the worker.
pub struct Tap {
    /// Session id.
    pub id: u64,
    /// Port id.
    pub port: u16,
    /// Port name (the tap ends when the id no longer names it).
    pub port_name: String,
    /// Which frames.
    pub dir: Direction,
    filter: Filter,
    /// Frames still to capture (shared with the other workers' copies when several run).
    remaining: Option<Arc<AtomicU64>>,
    until_ms: Option<u64>,
    snaplen: usize,
    tx: Sender<Captured>,
    dropped: Arc<AtomicU64>,
    end: EndSlot,
    gone: bool,
}

impl Tap {
    /// Resolve the spec's port; refuse tunnel ports (capture their uplink instead).
    pub fn start(spec: TapSpec, dp: &Datapath) -> Result<Tap, String> {
        let port = dp
            .port_id(&spec.port)
            .ok_or_else(|| format!("no port named '{}'", spec.port))?;
        if dp.port(port).is_some_and(|p| p.kind == PortKind::Vxlan) {
            return Err(format!(
                "'{}' is a VXLAN port: capture its uplink port to see the encapsulated frames",
                spec.port
            ));
        }
        Ok(Tap {
            id: spec.id,
            port,
            port_name: spec.port,
            dir: spec.dir,
            filter: spec.filter,
            remaining: spec.count.map(|c| {
                spec.shared_count
                    .unwrap_or_else(|| Arc::new(AtomicU64::new(c)))
            }),
            until_ms: spec.duration.map(|d| dp.now_ms + d.as_millis() as u64),
            snaplen: spec.snaplen as usize,
            tx: spec.tx,
            dropped: spec.dropped,
            end: spec.end,
            gone: false,
        })
    }

    /// Offer one frame; false once the capture is finished (then it takes no more).
    pub fn offer(&mut self, ts_ns: u64, dir: Dir, data: &[u8], now_ms: u64) -> bool {
        if self.finished(now_ms) {
            return false;
        }
        if !self.filter.matches(data) {
            return true;
        }
        // Take one frame of the count first: with several workers the count is shared.
        if let Some(r) = &self.remaining
            && r.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
                .is_err()
        {
            return false;
        }
        let c = Captured {
            ts_ns,
            dir,
            orig_len: data.len() as u32,
            data: data[..data.len().min(self.snaplen)].to_vec(),
        };
        match self.tx.try_send(c) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
            Err(TrySendError::Disconnected(_)) => {
                self.gone = true;
                return false;
            }
        }
        !self.finished(now_ms)
    }

    /// True when the count or deadline is reached or the reader went away.
    pub fn finished(&self, now_ms: u64) -> bool {
        self.why_finished(now_ms).is_some()
    }

    /// Why it is finished, if it is (the reader gone: stopped by its client).
    fn why_finished(&self, now_ms: u64) -> Option<End> {
        if self.gone {
            Some(End::Stopped)
        } else if self
            .remaining
            .as_ref()
            .is_some_and(|r| r.load(Ordering::Acquire) == 0)
        {
            Some(End::Count)
        } else if self.until_ms.is_some_and(|t| now_ms >= t) {
            Some(End::Duration)
        } else {
            None
        }
    }

    /// Record why the capture ended, when the worker drops the tap: `why`, or why it finished.
    pub fn record_end(&self, why: Option<End>, now_ms: u64) {
        if let Some(e) = why.or_else(|| self.why_finished(now_ms)) {
            self.end.set(e);
        }
    }
}

/// A capture as the control plane sees it.
struct Session {
    port: String,
    rx: Receiver<Captured>,
    dropped: Arc<AtomicU64>,
    end: EndSlot,
    until: Option<Instant>,
    last_read: Instant,
    /// Frames handed to the client so far.
    read: u64,
}

/// A session that ended, for the daemon's log: `capture ID on PORT ended (REASON): ...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ended {
    /// Session id.
    pub id: u64,
    /// The port.
    pub port: String,
    /// Why.
    pub why: End,
    /// Frames the client read.
    pub packets: u64,
    /// Frames the queue dropped.
    pub dropped: u64,
}

impl std::fmt::Display for Ended {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let why = match self.why {
            End::Count => "its count was reached",
            End::Duration => "its duration passed",
            End::PortDeleted => "the port was deleted",
            End::Stopped => "stopped by its client",
            End::Abandoned => "abandoned: not read for 10 s",
        };
        write!(
            f,
            "capture {} on {} ended ({why}): {} packets read, {} dropped by the capture queue",
            self.id, self.port, self.packets, self.dropped
        )
    }
}

/// The daemon's capture sessions (shared by the control connections).
#[derive(Default)]
pub struct Sessions {
    next: AtomicU64,
    map: Mutex<HashMap<u64, Session>>,
}

/// Parsed `capture-start` arguments (after the port).
pub struct StartArgs {
    /// Which frames.
    pub dir: Direction,
    /// Stop after this many.
    pub count: Option<u64>,
    /// Stop after this long.
    pub duration: Option<Duration>,
    /// Bytes kept.
    pub snaplen: u32,
    /// The filter.
    pub filter: Filter,
}

impl StartArgs {
    /// Parse `key=value` arguments ([`START_KEYS`], each at most once); errors name the key.
    /// The daemon parses `capture-start`'s arguments with it and `uvs ctl capture` its
    /// options, so both agree on every value (the pcapng header's snaplen is the daemon's).
    pub fn parse(args: &[String]) -> Result<StartArgs, ArgError> {
        let mut s = StartArgs {
            dir: Direction::Both,
            count: None,
            duration: None,
            snaplen: DEFAULT_SNAPLEN,
            filter: Filter::All,
        };
        let mut seen = [false; START_KEYS.len()];
        for kv in args {
            let (k, v) = kv
                .split_once('=')
                .ok_or_else(|| ArgError::NotKeyValue(kv.clone()))?;
            let i = START_KEYS
                .iter()
                .position(|x| *x == k)
                .ok_or_else(|| ArgError::Unknown(k.to_string()))?;
            let key = START_KEYS[i];
            if std::mem::replace(&mut seen[i], true) {
                return Err(ArgError::Repeated(key));
            }
            let bad = |problem: String| ArgError::Bad { key, problem };
            let num = || {
                v.parse::<u64>()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| bad(format!("'{v}' is not a positive integer")))
            };
            match key {
                "direction" => s.dir = Direction::parse(v).map_err(bad)?,
                "count" => s.count = Some(num()?),
                "duration" => {
                    let secs: f64 = v
                        .parse()
                        .ok()
                        .filter(|x: &f64| *x > 0.0 && *x < 1e7)
                        .ok_or_else(|| bad(format!("'{v}' is not a number of seconds")))?;
                    s.duration = Some(Duration::from_secs_f64(secs));
                }
                "snaplen" => {
                    s.snaplen = v
                        .parse::<u32>()
                        .ok()
                        .filter(|n| (1..=MAX_SNAPLEN).contains(n))
                        .ok_or_else(|| bad(format!("'{v}' is out of range (1 to {MAX_SNAPLEN})")))?
                }
                _ => s.filter = Filter::parse(v).map_err(|e| bad(e.problem().into()))?,
            }
        }
        Ok(s)
    }
}

impl Sessions {
    /// A new session: its id and the spec to hand to the worker.
    pub fn open(&self, port: &str, a: StartArgs) -> (u64, TapSpec) {
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let (tx, rx) = crossbeam_channel::bounded(QUEUE);
        let dropped = Arc::new(AtomicU64::new(0));
        let end = EndSlot::default();
        let session = Session {
            port: port.to_string(),
            rx,
            dropped: dropped.clone(),
            end: end.clone(),
            until: a.duration.map(|d| Instant::now() + d),
            last_read: Instant::now(),
            read: 0,
        };
        if let Ok(mut m) = self.map.lock() {
            m.insert(id, session);
        }
        let spec = TapSpec {
            id,
            port: port.to_string(),
            dir: a.dir,
            filter: a.filter,
            count: a.count,
            duration: a.duration,
            snaplen: a.snaplen,
            tx,
            dropped,
            end,
            shared_count: None,
        };
        (id, spec)
    }

    /// Forget a session (its tap ends when the worker next sees the channel closed) whose
    /// start failed.
    pub fn forget(&self, id: u64) {
        if let Ok(mut m) = self.map.lock() {
            m.remove(&id);
        }
    }

    /// End session `id` at its client's request (`capture-stop`); what to log (the reason
    /// the capture recorded, if it ended by itself), None for a session not (or no longer)
    /// known.
    pub fn close(&self, id: u64) -> Option<Ended> {
        let s = self.map.lock().ok()?.remove(&id)?;
        Some(ended(id, s, End::Stopped))
    }

    /// Sessions nobody read for [`ABANDONED`]; they are forgotten (their taps are to be
    /// stopped by id). What to log of each.
    pub fn reap(&self) -> Vec<Ended> {
        let Ok(mut m) = self.map.lock() else {
            return Vec::new();
        };
        let old: Vec<u64> = m
            .iter()
            .filter(|(_, s)| s.last_read.elapsed() > ABANDONED)
            .map(|(id, _)| *id)
            .collect();
        old.into_iter()
            .filter_map(|id| Some(ended(id, m.remove(&id)?, End::Abandoned)))
            .collect()
    }

    /// The frames of session `id` queued so far (see the module documentation).
    pub fn read(&self, id: u64) -> Result<Value, String> {
        let (rx, dropped, until, end) = {
            let mut m = self.map.lock().map_err(|_| "capture sessions poisoned")?;
            let s = m
                .get_mut(&id)
                .ok_or_else(|| format!("no capture session {id}"))?;
            s.last_read = Instant::now();
            (s.rx.clone(), s.dropped.clone(), s.until, s.end.clone())
        };
        let mut packets = Vec::new();
        let mut closed = false;
        match rx.recv_timeout(READ_WAIT) {
            Ok(c) => packets.push(c),
            Err(RecvTimeoutError::Disconnected) => closed = true,
            Err(RecvTimeoutError::Timeout) => {}
        }
        while packets.len() < READ_MAX {
            match rx.try_recv() {
                Ok(c) => packets.push(c),
                Err(e) => {
                    closed |= e.is_disconnected();
                    break;
                }
            }
        }
        let expired = until.is_some_and(|t| Instant::now() >= t);
        let done = (closed || expired) && rx.is_empty();
        if expired {
            end.set(End::Duration);
        }
        if let Ok(mut m) = self.map.lock()
            && let Some(s) = m.get_mut(&id)
        {
            s.read += packets.len() as u64;
        }
        let rows: Vec<Value> = packets.iter().map(packet_json).collect();
        let mut v = json!({
            "packets": rows,
            "dropped": dropped.load(Ordering::Relaxed),
            "done": done,
        });
        if done {
            v["ended"] = json!(end.get().unwrap_or(End::Stopped).as_str());
        }
        Ok(v)
    }
}

/// What to log of session `id`, ended: the reason it recorded, or `by`.
fn ended(id: u64, s: Session, by: End) -> Ended {
    Ended {
        id,
        why: s.end.get().unwrap_or(by),
        packets: s.read,
        dropped: s.dropped.load(Ordering::Relaxed),
        port: s.port,
    }
}

fn packet_json(c: &Captured) -> Value {
    json!({
        "t": c.ts_ns,
        "dir": match c.dir { Dir::Rx => "rx", Dir::Tx => "tx" },
        "len": c.orig_len,
        "data": hex(&c.data),
    })
}

fn hex(b: &[u8]) -> String {
    const D: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        s.push(D[(x >> 4) as usize] as char);
        s.push(D[(x & 15) as usize] as char);
    }
    s
}

fn unhex(s: &str) -> Result<Vec<u8>, String> {
    let b = s.as_bytes();
    if !b.len().is_multiple_of(2) {
        return Err("odd-length hex".into());
    }
    let nib = |c: u8| match c {
        b'0'..=b'9' => Ok(c - b'0'),
        b'a'..=b'f' => Ok(c - b'a' + 10),
        b'A'..=b'F' => Ok(c - b'A' + 10),
        _ => Err(format!("bad hex digit '{}'", c as char)),
    };
    b.chunks(2)
        .map(|p| Ok(nib(p[0])? << 4 | nib(p[1])?))
        .collect()
}

/// `uvs ctl capture PORT [--count N] [--duration S] [--direction rx|tx|both] [--filter EXPR]
/// [--snaplen N] FILE|-`: run a capture and write pcapng to FILE (or stdout for `-`).
pub fn client(socket: &Path, args: &[String]) -> Result<(), String> {
    let usage = || format!("usage: {CLIENT_USAGE}");
    let mut kv = Vec::new();
    let mut pos = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.strip_prefix("--") {
            Some(k) if START_KEYS.contains(&k) => {
                let v = it
                    .next()
                    .ok_or_else(|| format!("--{k}: a value is missing"))?;
                kv.push(format!("{k}={v}"));
            }
            Some(k) if !k.is_empty() => {
                return Err(format!("capture: unknown option '--{k}'; {}", usage()));
            }
            _ => pos.push(a.clone()),
        }
    }
    let [port, file] = pos.as_slice() else {
        return Err(usage());
    };
    // The daemon's parser: the header's snaplen is the one the daemon applies, and a bad or
    // repeated option is refused before anything starts.
    let snaplen = StartArgs::parse(&kv).map_err(|e| e.as_option())?.snaplen;
    let mut start = vec![port.clone()];
    start.extend(kv);
    let call = |m: &str, p: &[String]| {
        crate::control::client::call_with_timeout(socket, m, p, Duration::from_secs(10))
    };
    // The file first: one that cannot be written must not leave a session running in the
    // daemon (it ran until reaped).
    let out: Box<dyn Write> = if file == "-" {
        Box::new(std::io::stdout().lock())
    } else {
        Box::new(std::fs::File::create(file).map_err(|e| format!("{file}: {e}"))?)
    };
    let r = call("capture-start", &start).map_err(|e| {
        if file != "-" {
            let _ = std::fs::remove_file(file);
        }
        e.to_string()
    })?;
    let id = r.data["id"]
        .as_u64()
        .ok_or("capture-start: no session id")?;
    // Ctrl-C ends the capture cleanly (the file stays complete, the session is stopped).
    let stop = crate::port::wait::install_stop_handler();
    let mut lost = None;
    let result = pump(out, port, snaplen, || {
        if stop.load(Ordering::SeqCst) {
            return Ok(json!({"packets": [], "done": true}));
        }
        match call("capture-read", &[id.to_string()]) {
            Ok(r) => Ok(r.data),
            Err(e) => match daemon_lost(&e) {
                // Ends the file cleanly: what was captured stays readable.
                Some(why) => {
                    lost = Some(why);
                    Ok(json!({"packets": [], "done": true}))
                }
                None => Err(e.to_string()),
            },
        }
    });
    if lost.is_none() {
        let _ = call("capture-stop", &[id.to_string()]);
    }
    let p = result?;
    let (n, dropped) = (p.packets, p.dropped);
    let counts = format!("{n} packets captured, {dropped} dropped by the capture queue");
    if let Some(why) = lost {
        return Err(format!("capture on {port} ended: {why} ({counts})"));
    }
    if p.ended.as_deref() == Some(End::PortDeleted.as_str()) {
        return Err(format!(
            "capture on {port} ended: the port was deleted ({counts})"
        ));
    }
    eprintln!("uvs: captured {n} packets on {port} ({dropped} dropped by the capture queue)");
    Ok(())
}

/// `capture`'s usage line, as `list-commands` shows it.
pub const CLIENT_USAGE: &str = "capture PORT [--count N] [--duration S] [--direction rx|tx|both] [--filter EXPR] [--snaplen N] FILE|-";

/// Why `capture-read`'s error `e` means the daemon is gone (None: an error it answered).
fn daemon_lost(e: &crate::control::client::ClientError) -> Option<&'static str> {
    use crate::control::client::ClientError as E;
    match e {
        E::Connect { .. } | E::Io { .. } | E::Protocol { .. } => Some("the daemon went away"),
        E::Timeout { .. } => Some("the daemon stopped answering"),
        E::Remote(m) if m.starts_with("no capture session") => {
            Some("the daemon restarted (it no longer knows this capture)")
        }
        E::Remote(_) => None,
    }
}

/// What [`pump`] wrote, and why the capture ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pumped {
    /// Packets written.
    pub packets: u64,
    /// The capture's drop count.
    pub dropped: u64,
    /// The last answer's `ended` ([`End::as_str`]); None when the output's reader went away
    /// first.
    pub ended: Option<String>,
}

/// Write pcapng from successive `capture-read` answers until one says done.
pub fn pump(
    out: Box<dyn Write>,
    port: &str,
    snaplen: u32,
    mut read: impl FnMut() -> Result<Value, String>,
) -> Result<Pumped, String> {
    use pcap_file::DataLink;
    use pcap_file::pcapng::PcapNgWriter;
    use pcap_file::pcapng::blocks::enhanced_packet::{EnhancedPacketBlock, EnhancedPacketOption};
    use pcap_file::pcapng::blocks::interface_description::{
        InterfaceDescriptionBlock, InterfaceDescriptionOption,
    };
    // pcap-file calls every IO error "Error reading bytes": name the real one.
    let io = |e: pcap_file::PcapError| match e {
        pcap_file::PcapError::IoError(e) => format!("writing pcapng: {e}"),
        e => format!("writing pcapng: {e}"),
    };
    // The reader went away (`| head`, tshark -c N): the capture ends quietly, as a pipeline
    // expects (it ended with "writing pcapng: Error reading bytes" and status 1: found trying
    // uvs as a new user).
    let closed = |e: &pcap_file::PcapError| matches!(e, pcap_file::PcapError::IoError(e) if e.kind() == std::io::ErrorKind::BrokenPipe);
    let quiet = |packets, dropped| {
        Ok(Pumped {
            packets,
            dropped,
            ended: None,
        })
    };
    let mut w = match PcapNgWriter::new(out) {
        Ok(w) => w,
        Err(e) if closed(&e) => return quiet(0, 0),
        Err(e) => return Err(io(e)),
    };
    let idb = w.write_pcapng_block(InterfaceDescriptionBlock {
        linktype: DataLink::ETHERNET,
        snaplen,
        options: vec![
            InterfaceDescriptionOption::IfName(port.to_string().into()),
            InterfaceDescriptionOption::IfTsResol(9),
        ],
    });
    match idb.map(|_| w.get_mut().flush()) {
        Ok(Ok(())) => {}
        Err(e) if closed(&e) => return quiet(0, 0),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => return quiet(0, 0),
        Err(e) => return Err(io(e)),
        Ok(Err(e)) => return Err(format!("writing pcapng: {e}")),
    }
    let (mut n, mut dropped) = (0u64, 0u64);
    loop {
        let v = read()?;
        for p in v["packets"].as_array().into_iter().flatten() {
            let data = unhex(p["data"].as_str().unwrap_or_default())?;
            let flags = if p["dir"] == "tx" { 2 } else { 1 };
            let r = w.write_pcapng_block(EnhancedPacketBlock {
                interface_id: 0,
                timestamp: Duration::from_nanos(p["t"].as_u64().unwrap_or(0)),
                original_len: p["len"].as_u64().unwrap_or(data.len() as u64) as u32,
                data: data.into(),
                options: vec![EnhancedPacketOption::Flags(flags)],
            });
            match r {
                Ok(_) => n += 1,
                Err(e) if closed(&e) => return quiet(n, dropped),
                Err(e) => return Err(io(e)),
            }
        }
        match w.get_mut().flush() {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return quiet(n, dropped),
            Err(e) => return Err(format!("writing pcapng: {e}")),
        }
        dropped = v["dropped"].as_u64().unwrap_or(dropped);
        if v["done"].as_bool() == Some(true) {
            let ended = v["ended"].as_str().map(str::to_string);
            return Ok(Pumped {
                packets: n,
                dropped,
                ended,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip() {
        let b: Vec<u8> = (0..=255).collect();
        assert_eq!(unhex(&hex(&b)).unwrap(), b);
        assert!(unhex("abc").is_err());
        assert!(unhex("zz").is_err());
    }

    #[test]
    fn start_args_errors_name_the_key() {
        let a = |v: &[&str]| StartArgs::parse(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert!(a(&["direction=rx", "count=3", "filter=icmp and host 10.0.0.1"]).is_ok());
        for (bad, key) in [
            (&["count=0"][..], "count"),
            (&["snaplen=x"], "snaplen"),
            (&["direction=up"], "direction"),
            (&["duration=x"], "duration"),
            (&["filter=host x"], "filter"),
            (&["colour=red"], "colour"),
        ] {
            let e = a(bad).err().unwrap();
            assert!(e.to_string().contains(key), "{bad:?}: {e}");
            assert!(!e.to_string().contains("filter: filter"), "{e}");
            assert!(e.as_option().contains(key), "{bad:?}: {e}");
        }
    }

    /// `snaplen` out of range is refused (it was clamped to u32::MAX by the daemon while the
    /// client wrote the default in the pcapng header), and so is any key given twice (the
    /// client took the first snaplen, the daemon the last): found trying uvs as a new user.
    #[test]
    fn snaplen_out_of_range_and_repeated_keys_are_refused() {
        let a = |v: &[&str]| StartArgs::parse(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(a(&["snaplen=20"]).unwrap().snaplen, 20);
        assert_eq!(a(&["snaplen=262144"]).unwrap().snaplen, 262_144);
        for bad in [
            "snaplen=0",
            "snaplen=262145",
            "snaplen=4294967296",
            "snaplen=-1",
        ] {
            let e = a(&[bad]).err().unwrap().to_string();
            assert!(e.starts_with("snaplen: "), "{bad}: {e}");
        }
        for twice in [["snaplen=10", "snaplen=20"], ["count=1", "count=1"]] {
            let e = a(&twice).err().unwrap().to_string();
            assert!(e.contains("more than once"), "{twice:?}: {e}");
        }
    }

    /// A session says why its capture ended, to its client (`ended`) and for the log.
    #[test]
    fn sessions_say_why_a_capture_ended() {
        let s = Sessions::default();
        let args = || StartArgs::parse(&[]).unwrap();
        let (id, spec) = s.open("p1", args());
        spec.end.set(End::PortDeleted);
        spec.end.set(End::Stopped); // the first reason stays
        drop(spec);
        let v = s.read(id).unwrap();
        assert_eq!(
            (v["done"].clone(), v["ended"].clone()),
            (json!(true), json!("port-deleted"))
        );
        let e = s.close(id).unwrap();
        assert_eq!((e.id, e.port.as_str(), e.why), (id, "p1", End::PortDeleted));
        assert!(
            e.to_string().contains("on p1 ended (the port was deleted)"),
            "{e}"
        );
        assert!(s.close(id).is_none());
        // Stopped by its client while running: no reason recorded, no `ended` yet.
        let (id, _spec) = s.open("p2", args());
        assert!(s.read(id).unwrap().get("ended").is_none());
        assert_eq!(s.close(id).unwrap().why, End::Stopped);
    }

    /// A reader that went away (`| head`) ends the capture quietly with what was written.
    #[test]
    fn pump_ends_quietly_when_the_reader_goes() {
        struct Head(usize);
        impl Write for Head {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                if self.0 == 0 {
                    return Err(std::io::ErrorKind::BrokenPipe.into());
                }
                self.0 -= 1;
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let pkt = json!({"t": 1u64, "dir": "rx", "len": 14, "data": hex(&[0xaa; 14])});
        let mut reads = 0;
        let r = pump(Box::new(Head(40)), "p1", 65535, || {
            reads += 1;
            Ok(json!({"packets": [pkt.clone(), pkt.clone()], "dropped": 0, "done": reads > 50}))
        });
        let n = r.expect("no error once the reader is gone").packets;
        assert!(n > 0 && n < 100, "stopped writing: {n} packets");
    }

    #[test]
    fn pump_writes_pcapng_with_directions() {
        let buf = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
        struct Shared(std::rc::Rc<std::cell::RefCell<Vec<u8>>>);
        impl Write for Shared {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.borrow_mut().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let mut answers = vec![
            json!({"packets": [], "dropped": 1, "done": true}),
            json!({"packets": [
                {"t": 1_000_000_001u64, "dir": "rx", "len": 60, "data": hex(&[0xaa; 14])},
                {"t": 1_000_000_002u64, "dir": "tx", "len": 14, "data": hex(&[0xbb; 14])}
            ], "dropped": 1, "done": false}),
        ];
        let p = pump(Box::new(Shared(buf.clone())), "p1", 64, || {
            Ok(answers.pop().unwrap())
        })
        .unwrap();
        assert_eq!((p.packets, p.dropped), (2, 1));
        let bytes = buf.borrow().clone();
        let mut r = pcap_file::pcapng::PcapNgReader::new(&bytes[..]).unwrap();
        let mut seen = Vec::new();
        while let Some(b) = r.next_block() {
            if let pcap_file::pcapng::Block::EnhancedPacket(p) = b.unwrap() {
                let opts: Vec<_> = p.options.iter().map(|o| o.clone().into_owned()).collect();
                seen.push((p.original_len, p.data[0], p.timestamp.as_nanos(), opts));
            }
        }
        assert_eq!(seen.len(), 2);
        assert_eq!(seen[0].0, 60);
        assert_eq!(seen[1].1, 0xbb);
        assert_eq!(seen[0].2, 1_000_000_001);
        assert_eq!(
            seen[1].3,
            vec![pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketOption::Flags(2)]
        );
    }
}
