//! Control commands for capture and mirrors (registered next to the datapath commands).
//!
//! - `capture-start PORT [direction=rx|tx|both] [count=N] [duration=S] [snaplen=N]
//!   [filter=EXPR]`, `capture-read ID`, `capture-stop ID`: see [`super::capture`]; people use
//!   `uvs ctl capture`, which drives them.
//! - `add-mirror BRIDGE NAME select=PORTS|select_src=PORTS|select_dst=PORTS output=PORT`,
//!   `del-mirror BRIDGE NAME`, `mirror-show`: see [`super::mirror`]; `show` lists mirrors too.

use std::fmt::Write as _;
use std::sync::Arc;

use serde_json::Value;

use super::ObserveCmd;
use super::capture::{Sessions, StartArgs};
use super::mirror::MirrorSpec;
use crate::control::registry::{CtlError, Registry, Reply, UNLIMITED};
use crate::worker::{Command, WorkerHandle};

fn ask(w: &WorkerHandle, cmd: ObserveCmd) -> Result<Value, CtlError> {
    w.call(Command::Observe(cmd)).map_err(CtlError::new)
}

fn session_id(s: &str) -> Result<u64, CtlError> {
    s.parse()
        .map_err(|_| CtlError::new(format!("ID: '{s}' is not a capture session id")))
}

/// Stop sessions nobody reads for `capture::ABANDONED`, every second, while the registry
/// lives (the thread ends once the sessions or the worker are gone). Reaping only when the
/// next capture started left a dead client's tap copying its port's frames until then
/// (found trying uvs as a new user).
fn reap_abandoned(sessions: &Arc<Sessions>, worker: &Arc<WorkerHandle>) {
    let (s, w) = (Arc::downgrade(sessions), Arc::downgrade(worker));
    let spawned = std::thread::Builder::new()
        .name("capture-reap".into())
        .spawn(move || {
            loop {
                std::thread::sleep(std::time::Duration::from_secs(1));
                let (Some(s), Some(w)) = (s.upgrade(), w.upgrade()) else {
                    return;
                };
                reap(&s, &w);
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(
            "capture: no reaper thread ({e}): abandoned sessions end at the next capture-start"
        );
    }
}

/// Stop the sessions nobody read for `capture::ABANDONED`, logging each.
fn reap(s: &Sessions, w: &WorkerHandle) {
    for e in s.reap() {
        tracing::info!("{e}");
        let _ = ask(w, ObserveCmd::CaptureStop(e.id));
    }
}

/// Register the capture and mirror commands.
pub fn register(reg: &mut Registry, worker: Arc<WorkerHandle>) {
    let sessions = Arc::new(Sessions::default());
    reap_abandoned(&sessions, &worker);
    reg.register_client("capture", super::capture::CLIENT_USAGE);
    let (w, s) = (worker.clone(), sessions.clone());
    reg.register(
        "capture-start",
        "capture-start PORT [direction=rx|tx|both] [count=N] [duration=S] [snaplen=N] [filter=EXPR]",
        1,
        6,
        move |a| {
            reap(&s, &w);
            let args = StartArgs::parse(&a[1..]).map_err(|e| CtlError::new(e.to_string()))?;
            let (id, spec) = s.open(&a[0], args);
            match ask(&w, ObserveCmd::CaptureStart(Box::new(spec))) {
                Ok(v) => Ok(Reply::new(format!("capture {id}\n"), v)),
                Err(e) => {
                    s.forget(id);
                    Err(e)
                }
            }
        },
    );
    let s = sessions.clone();
    reg.register("capture-read", "capture-read ID", 1, 1, move |a| {
        let v = s.read(session_id(&a[0])?).map_err(CtlError::new)?;
        let n = v["packets"].as_array().map_or(0, Vec::len);
        Ok(Reply::new(format!("{n} packets\n"), v))
    });
    let (w, s) = (worker.clone(), sessions);
    reg.register("capture-stop", "capture-stop ID", 1, 1, move |a| {
        let id = session_id(&a[0])?;
        let ended = s.close(id);
        if let Some(e) = &ended {
            tracing::info!("{e}");
        }
        let v = ask(&w, ObserveCmd::CaptureStop(id))?;
        if ended.is_none() && v["stopped"] != true {
            return Err(CtlError::new(format!("no capture session {id}")));
        }
        Ok(Reply::new(String::new(), v))
    });
    let w = worker.clone();
    reg.register(
        "add-mirror",
        "add-mirror BRIDGE NAME select=PORTS|select_src=PORTS|select_dst=PORTS output=PORT",
        3,
        UNLIMITED,
        move |a| {
            let spec = MirrorSpec::from_args(&a[0], &a[1], &a[2..]).map_err(CtlError::new)?;
            let v = ask(&w, ObserveCmd::MirrorAdd(spec))?;
            Ok(Reply::new(String::new(), v))
        },
    );
    let w = worker.clone();
    reg.register("del-mirror", "del-mirror BRIDGE NAME", 2, 2, move |a| {
        let v = ask(
            &w,
            ObserveCmd::MirrorDel {
                bridge: a[0].clone(),
                name: a[1].clone(),
            },
        )?;
        Ok(Reply::new(String::new(), v))
    });
    let w = worker;
    reg.register("mirror-show", "mirror-show", 0, 0, move |_| {
        let v = ask(&w, ObserveCmd::MirrorShow)?;
        Ok(Reply::new(render_mirrors(&v["mirrors"]), v))
    });
    // Captures change no configuration: not journalled (the poll runs 4 times a second).
    reg.set_read_only(&[
        "capture-start",
        "capture-read",
        "capture-stop",
        "mirror-show",
    ]);
}

/// Mirrors ask the worker separately from `show`'s main answer.
pub fn mirrors_json(w: &WorkerHandle) -> Value {
    ask(w, ObserveCmd::MirrorShow).map_or(Value::Null, |v| v["mirrors"].clone())
}

/// `mirror NAME on BRIDGE: select_src [..] select_dst [..] output P (N packets, M dropped)`.
pub fn render_mirrors(rows: &Value) -> String {
    let mut s = String::new();
    let list = |v: &Value| {
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(",")
    };
    for m in rows.as_array().into_iter().flatten() {
        let _ = writeln!(
            s,
            "mirror {} on {}: select_src [{}] select_dst [{}] output {} ({} packets, {} dropped)",
            m["name"].as_str().unwrap_or(""),
            m["bridge"].as_str().unwrap_or(""),
            list(&m["select_src"]),
            list(&m["select_dst"]),
            m["output"].as_str().unwrap_or(""),
            m["packets"],
            m["dropped"]
        );
    }
    s
}
