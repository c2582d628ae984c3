//! Connections out to controllers (`set-controller`): one thread per (bridge, target) that
//! connects, serves the connection like an accepted one (`listener::serve_joined`, so it gets
//! the bridge's events), and reconnects with back-off when it breaks.
//!
//! Contract:
//! - Back-off between attempts: 1 s, doubling to `MAX_BACKOFF` (8 s, as OVS), reset after a
//!   connection. Connect attempts time out after `CONNECT_TIMEOUT`.
//! - `Controllers::sync` runs in the manager's loop: it starts and stops connections as the
//!   bridges' settings change, and reports to the worker (`controller-state`) which targets
//!   are connected and whether the bridge fails open (standalone, controllers set, none
//!   connected), only when that changes; a link that connects reports at once that the bridge
//!   no longer fails open, so a controller's flows apply from its first message.
//! - Dropping a connection's handle shuts its socket down and joins its thread.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::Value;

use super::control::{Target, parse_target};
use super::hub::{Conn, Hub};
use super::listener::{RegistrySwitch, serve_joined};
use crate::control::Registry;

/// Longest wait between two connection attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(8);
/// Longest a connection attempt may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

type Shutdown = Arc<Mutex<Option<super::hub::ShutdownFn>>>;

struct Link {
    stop: Arc<AtomicBool>,
    connected: Arc<AtomicBool>,
    shutdown: Shutdown,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Link {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let shut = self.shutdown.lock().ok().and_then(|mut s| s.take());
        if let Some(f) = shut {
            f();
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Sleep `d` in small steps, returning early when `stop` is set.
fn nap(d: Duration, stop: &AtomicBool) {
    let end = std::time::Instant::now() + d;
    while !stop.load(Ordering::SeqCst) && std::time::Instant::now() < end {
        std::thread::sleep(Duration::from_millis(50));
    }
}

struct LinkCtx {
    bridge: String,
    text: String,
    target: Target,
    reg: Arc<Registry>,
    hub: Arc<Hub>,
    stop: Arc<AtomicBool>,
    connected: Arc<AtomicBool>,
    shutdown: Shutdown,
}

fn run_link(c: LinkCtx) {
    let mut backoff = Duration::from_secs(1);
    let mut failed_before = false;
    while !c.stop.load(Ordering::SeqCst) {
        match c.target.connect(CONNECT_TIMEOUT) {
            Ok((r, w, shut)) => {
                if let Ok(mut s) = c.shutdown.lock() {
                    *s = Some(shut.clone());
                }
                if c.stop.load(Ordering::SeqCst) {
                    break;
                }
                tracing::info!("openflow {}: connected to controller {}", c.bridge, c.text);
                backoff = Duration::from_secs(1);
                failed_before = false;
                c.connected.store(true, Ordering::SeqCst);
                // A connected controller ends fail-open at once (the manager's next pass
                // completes the list of connected targets).
                let args = [c.bridge.clone(), "fail_open=off".into(), c.text.clone()];
                if let Err(e) = c.reg.call("controller-state", &args) {
                    tracing::debug!("openflow {}: controller-state: {}", c.bridge, e.message());
                }
                let conn = Arc::new(Conn::new(&c.bridge, w, Some(shut)));
                let sw = RegistrySwitch::new(c.reg.clone(), &c.bridge);
                serve_joined(r, conn, &c.hub, &sw);
                c.connected.store(false, Ordering::SeqCst);
                if let Ok(mut s) = c.shutdown.lock() {
                    s.take();
                }
                tracing::warn!("openflow {}: controller {} disconnected", c.bridge, c.text);
            }
            Err(e) if !failed_before => {
                tracing::warn!(
                    "openflow {}: controller {}: {e}; retrying every {}s at most",
                    c.bridge,
                    c.text,
                    MAX_BACKOFF.as_secs()
                );
                failed_before = true;
            }
            Err(e) => tracing::debug!("openflow {}: controller {}: {e}", c.bridge, c.text),
        }
        nap(backoff, &c.stop);
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// The controller connections of every bridge.
#[derive(Default)]
pub struct Controllers {
    links: HashMap<(String, String), Link>,
}

impl Controllers {
    /// Bring the connections in line with `bridges` (the `show` entries) and report changes.
    pub fn sync(&mut self, bridges: &[Value], reg: &Arc<Registry>, hub: &Arc<Hub>) {
        let mut want: HashMap<(String, String), Target> = HashMap::new();
        for b in bridges {
            let name = b["name"].as_str().unwrap_or_default();
            for t in b["controller"].as_array().into_iter().flatten() {
                let t = t.as_str().unwrap_or_default();
                if let Ok(target) = parse_target(t) {
                    want.insert((name.to_string(), t.to_string()), target);
                }
            }
        }
        self.links.retain(|k, _| want.contains_key(k));
        for (k, target) in want {
            if self.links.contains_key(&k) {
                continue;
            }
            let (stop, connected) = (Arc::new(AtomicBool::new(false)), Arc::default());
            let shutdown: Shutdown = Arc::default();
            let ctx = LinkCtx {
                bridge: k.0.clone(),
                text: k.1.clone(),
                target,
                reg: reg.clone(),
                hub: hub.clone(),
                stop: stop.clone(),
                connected: Arc::clone(&connected),
                shutdown: shutdown.clone(),
            };
            let thread = std::thread::Builder::new()
                .name(format!("of-{}-ctl", k.0))
                .spawn(move || run_link(ctx))
                .ok();
            self.links.insert(
                k,
                Link {
                    stop,
                    connected,
                    shutdown,
                    thread,
                },
            );
        }
        for b in bridges {
            self.report(b, reg);
        }
    }

    fn report(&mut self, b: &Value, reg: &Registry) {
        let name = b["name"].as_str().unwrap_or_default();
        let mut connected: Vec<String> = self
            .links
            .iter()
            .filter(|((br, _), l)| br == name && l.connected.load(Ordering::SeqCst))
            .map(|((_, t), _)| t.clone())
            .collect();
        connected.sort();
        let has = b["controller"].as_array().is_some_and(|c| !c.is_empty());
        let secure = b["fail_mode"] == "secure";
        let fail_open = has && !secure && connected.is_empty();
        let now = (fail_open, connected);
        // Compared with what the worker holds (this pass's `show`), not with what this manager
        // last sent: a connection's own thread reports too (`run_link`), so a controller that
        // connects and goes away between two passes would otherwise leave the worker's state
        // stale (out of fail-open with nothing connected).
        let mut held: Vec<String> = b["controller_connected"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t.as_str().map(String::from))
            .collect();
        held.sort();
        if (b["fail_open"].as_bool().unwrap_or(false), held) == now {
            return;
        }
        let mut args = vec![
            name.to_string(),
            format!("fail_open={}", if now.0 { "on" } else { "off" }),
        ];
        args.extend(now.1.iter().cloned());
        if let Err(e) = reg.call("controller-state", &args) {
            tracing::debug!("openflow {name}: controller-state: {}", e.message());
        }
    }
}
