//! Delivery of the worker's events to OpenFlow connections: each connection joins the hub of
//! its bridge once served; one dispatcher thread takes events off the channel and writes each to
//! every connection of the event's bridge, encoded for that connection (`async_msg`).
//!
//! Contract:
//! - The hub keeps the worker's listener count (`events::EventSource::listeners`) equal to the
//!   number of joined connections, so the worker makes no events while none is open.
//! - A connection's replies and its events share one writer under a lock, so messages never
//!   interleave. Sockets have a write timeout (`WRITE_TIMEOUT`): a controller that stops reading
//!   is cut off instead of stalling delivery to the others; the worker itself never waits (its
//!   channel drops and counts what the dispatcher cannot take).

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use super::async_msg::{self, Prefs};
use crate::events::{Event, EventSource};

/// Shuts a connection's socket down (its reader then ends).
pub type ShutdownFn = Arc<dyn Fn() + Send + Sync>;

/// Longest a write to one connection may block.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(2);

/// One served connection's writing side.
pub struct Conn {
    /// The bridge it controls.
    pub bridge: String,
    out: Mutex<Box<dyn Write + Send>>,
    prefs: Mutex<Prefs>,
    dead: AtomicBool,
    shutdown: Option<ShutdownFn>,
    /// The bridge's roles and this connection's id there: a master another connection has
    /// replaced gets a slave's async messages.
    roles: std::sync::OnceLock<(Arc<super::roles::Roles>, u64)>,
}

impl Conn {
    /// A connection writing to `out` (version 0 until negotiated); `shutdown`, if given, is
    /// called when a write fails, so the connection closes (a controller that stops reading
    /// is disconnected, as OVS does).
    pub fn new(bridge: &str, out: Box<dyn Write + Send>, shutdown: Option<ShutdownFn>) -> Conn {
        Conn {
            bridge: bridge.to_string(),
            out: Mutex::new(out),
            prefs: Mutex::new(Prefs::new(0)),
            dead: AtomicBool::new(false),
            shutdown,
            roles: std::sync::OnceLock::new(),
        }
    }

    /// Tie the connection to its session's place in the bridge's roles (once).
    pub fn set_roles(&self, roles: Arc<super::roles::Roles>, id: u64) {
        let _ = self.roles.set((roles, id));
    }

    /// Write one message whole; false (and the connection marked dead) on an error.
    pub fn send(&self, m: &[u8]) -> bool {
        if self.dead.load(Ordering::Relaxed) {
            return false;
        }
        let ok = match self.out.lock() {
            Ok(mut w) => w.write_all(m).and_then(|_| w.flush()).is_ok(),
            Err(_) => false,
        };
        if !ok && !self.dead.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                "openflow {}: a connection stopped taking messages; closing it",
                self.bridge
            );
            if let Some(f) = &self.shutdown {
                f();
            }
        }
        ok
    }

    /// Close the connection (its reader ends; nothing more is written to it).
    pub fn close(&self) {
        if !self.dead.swap(true, Ordering::Relaxed)
            && let Some(f) = &self.shutdown
        {
            f();
        }
    }

    /// The connection is broken (a write failed) or was closed.
    pub fn is_dead(&self) -> bool {
        self.dead.load(Ordering::Relaxed)
    }

    /// Record what the session negotiated.
    pub fn set_prefs(&self, p: Prefs) {
        if let Ok(mut g) = self.prefs.lock() {
            *g = p;
        }
    }

    /// What the session negotiated, with the role it has now.
    fn prefs(&self) -> Prefs {
        let mut p = self.prefs.lock().map(|g| *g).unwrap_or(Prefs::new(0));
        if let Some((t, id)) = self.roles.get() {
            p.role = t.effective(*id, p.role);
        }
        p
    }
}

/// The connections of every bridge.
pub struct Hub {
    conns: Mutex<Vec<Arc<Conn>>>,
    listeners: Arc<AtomicUsize>,
    /// Each bridge's OpenFlow 1.3 controller roles (kept while uvs runs: generation ids
    /// outlive connections).
    roles: Mutex<std::collections::HashMap<String, Arc<super::roles::Roles>>>,
}

impl Hub {
    /// A hub keeping `listeners` up to date.
    pub fn new(listeners: Arc<AtomicUsize>) -> Arc<Hub> {
        Arc::new(Hub {
            conns: Mutex::new(Vec::new()),
            listeners,
            roles: Mutex::default(),
        })
    }

    /// Bridge `bridge`'s controller roles, shared by its connections.
    pub fn roles(&self, bridge: &str) -> Arc<super::roles::Roles> {
        let mut m = self.roles.lock().unwrap_or_else(|p| p.into_inner());
        m.entry(bridge.to_string()).or_default().clone()
    }

    /// Add a connection.
    pub fn join(&self, c: Arc<Conn>) {
        if let Ok(mut v) = self.conns.lock() {
            v.push(c);
            self.listeners.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Remove a connection.
    pub fn leave(&self, c: &Arc<Conn>) {
        if let Ok(mut v) = self.conns.lock() {
            let before = v.len();
            v.retain(|x| !Arc::ptr_eq(x, c));
            if v.len() < before {
                self.listeners.fetch_sub(1, Ordering::SeqCst);
            }
        }
    }

    /// Connections of `bridge` (negotiated or not).
    pub fn count(&self, bridge: &str) -> usize {
        self.conns
            .lock()
            .map(|v| v.iter().filter(|c| c.bridge == bridge).count())
            .unwrap_or(0)
    }

    /// Write `e` to every live connection of its bridge; returns how many got it.
    pub fn deliver(&self, e: &Event) -> usize {
        // The worker does no IO: a port's hardware address is looked up here.
        let filled;
        let e = match e {
            Event::PortStatus(ps) if ps.port.mac == 0 => {
                let mut ps = ps.clone();
                ps.port.mac = super::port_mac(&ps.bridge, &ps.port.name, "");
                filled = Event::PortStatus(ps);
                &filled
            }
            _ => e,
        };
        let targets: Vec<Arc<Conn>> = match self.conns.lock() {
            Ok(v) => v
                .iter()
                .filter(|c| c.bridge == e.bridge() && !c.is_dead())
                .cloned()
                .collect(),
            Err(_) => return 0,
        };
        targets
            .iter()
            .filter(|c| async_msg::encode(e, &c.prefs()).is_some_and(|m| c.send(&m)))
            .count()
    }
}

/// The dispatcher thread: events from `src` to `hub` until `stop`.
pub fn dispatch(
    hub: Arc<Hub>,
    src: EventSource,
    stop: Arc<AtomicBool>,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("of-events".into())
        .spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                if let Ok(e) = src.rx.recv_timeout(Duration::from_millis(200)) {
                    hub.deliver(&e);
                }
            }
        })
}
