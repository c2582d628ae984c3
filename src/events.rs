//! Events from the datapath worker to the control plane: packets for the controller
//! (PACKET_IN), flows removed (FLOW_REMOVED) and port changes (PORT_STATUS), which the OpenFlow
//! listeners (`openflow::hub`) deliver to every connection of the bridge.
//!
//! Contract:
//! - `channel(capacity)` gives the worker's `EventSink` and the control plane's receiver. The
//!   sink never blocks: when the receiver lags and the channel is full the event is dropped and
//!   counted (`EventCounters::dropped`), so a slow controller cannot stall forwarding.
//! - Events are only made while someone listens (`EventSink::listening`: an OpenFlow
//!   connection is open on some bridge), so a switch without controllers copies no packet and
//!   fills no channel. A `controller` action without a listener drops its copy (as OVS does
//!   with no controller connected), counted `no_listener`.
//! - The sink is plain data (a channel sender and atomics): no IO, usable in the IO-free core.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};

use crossbeam_channel::{Receiver, Sender, TrySendError};

use crate::flow::Flow;
use crate::openflow::PortInfo;

/// Events the channel holds before new ones are dropped.
pub const CAPACITY: usize = 1024;

/// A packet for the controller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PacketIn {
    /// The bridge's name.
    pub bridge: String,
    /// The table of the flow that sent it.
    pub table: u8,
    /// That flow's cookie.
    pub cookie: u64,
    /// OFPR_* reason (see `flow::REASON_*`).
    pub reason: u8,
    /// The sending flow is a table-miss flow (priority 0, empty match): OpenFlow 1.3
    /// connections see reason `no_match`, as OVS reports an explicit miss.
    pub table_miss: bool,
    /// OpenFlow port the packet came in on.
    pub in_port: u16,
    /// Its tunnel id (0: none).
    pub tun_id: u64,
    /// The frame's whole length.
    pub total_len: u16,
    /// The frame as the actions made it, cut to the action's `max_len`.
    pub data: Vec<u8>,
}

/// A flow that was removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowRemoved {
    /// The bridge's name.
    pub bridge: String,
    /// The flow.
    pub flow: Flow,
    /// OFPRR_*: 0 idle timeout, 1 hard timeout, 2 delete.
    pub reason: u8,
    /// How long it existed, in milliseconds.
    pub duration_ms: u64,
    /// Packets it matched.
    pub packets: u64,
    /// Bytes it matched.
    pub bytes: u64,
}

/// OFPRR_IDLE_TIMEOUT.
pub const REMOVED_IDLE: u8 = 0;
/// OFPRR_HARD_TIMEOUT.
pub const REMOVED_HARD: u8 = 1;
/// OFPRR_DELETE.
pub const REMOVED_DELETE: u8 = 2;
/// OFPRR_GROUP_DELETE: the group the flow sent packets to was deleted.
pub const REMOVED_GROUP_DELETE: u8 = 3;

/// A port that was added, deleted or changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortStatus {
    /// The bridge's name.
    pub bridge: String,
    /// OFPPR_*: 0 add, 1 delete, 2 modify.
    pub reason: u8,
    /// The port as it is now (as it was, for a delete).
    pub port: PortInfo,
}

/// OFPPR_ADD.
pub const PORT_ADD: u8 = 0;
/// OFPPR_DELETE.
pub const PORT_DELETE: u8 = 1;
/// OFPPR_MODIFY.
pub const PORT_MODIFY: u8 = 2;

/// One event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// PACKET_IN.
    PacketIn(PacketIn),
    /// FLOW_REMOVED (boxed: a flow is large, and these are rare).
    FlowRemoved(Box<FlowRemoved>),
    /// PORT_STATUS.
    PortStatus(PortStatus),
}

impl Event {
    /// The bridge the event belongs to.
    pub fn bridge(&self) -> &str {
        match self {
            Event::PacketIn(p) => &p.bridge,
            Event::FlowRemoved(f) => &f.bridge,
            Event::PortStatus(p) => &p.bridge,
        }
    }
}

/// What happened to events, for `stats`.
#[derive(Debug, Default)]
pub struct EventCounters {
    /// Events queued for the control plane.
    pub sent: AtomicU64,
    /// Events dropped because the channel was full (the consumer lagged).
    pub dropped: AtomicU64,
    /// `controller` copies not made because no OpenFlow connection was open.
    pub no_listener: AtomicU64,
}

/// The worker's end. Cloning shares the channel and the counters.
#[derive(Debug, Clone, Default)]
pub struct EventSink {
    tx: Option<Sender<Event>>,
    listeners: Arc<AtomicUsize>,
    counters: Arc<EventCounters>,
    /// A second (third, ...) worker's sink: it sends the packet-ins of its own traffic, but
    /// not the flow-removed and port-status events every worker would report alike.
    replica: bool,
}

/// The control plane's end: the events, and the listener count it keeps up to date.
#[derive(Debug, Clone)]
pub struct EventSource {
    /// The events, in the order the worker made them.
    pub rx: Receiver<Event>,
    /// Open OpenFlow connections (the sink makes events only while this is above 0).
    pub listeners: Arc<AtomicUsize>,
    /// The sink's counters.
    pub counters: Arc<EventCounters>,
    /// Commands that may have changed the configuration, taken by the workers so far
    /// (`WorkerHandle::call` counts them): while it stays the same, so do the bridges and
    /// their OpenFlow settings that `show` reports, and a watcher need not ask (asking wakes
    /// every worker).
    pub changes: Arc<std::sync::atomic::AtomicU64>,
}

/// A bounded channel of `capacity` events.
pub fn channel(capacity: usize) -> (EventSink, EventSource) {
    let (tx, rx) = crossbeam_channel::bounded(capacity);
    let listeners = Arc::new(AtomicUsize::new(0));
    let counters = Arc::new(EventCounters::default());
    (
        EventSink {
            tx: Some(tx),
            listeners: listeners.clone(),
            counters: counters.clone(),
            replica: false,
        },
        EventSource {
            rx,
            listeners,
            counters,
            changes: Arc::default(),
        },
    )
}

impl EventSink {
    /// Someone listens: events are worth making.
    #[inline]
    pub fn listening(&self) -> bool {
        self.tx.is_some() && self.listeners.load(Relaxed) > 0
    }

    /// This sink's copy for another worker (see `replica`).
    pub fn for_replica(&self) -> EventSink {
        EventSink {
            replica: true,
            ..self.clone()
        }
    }

    /// Queue `e` without blocking; false (and counted) when the channel is full or nobody
    /// listens. A replica's flow-removed and port-status events are left to worker 0's.
    pub fn send(&self, e: Event) -> bool {
        if self.replica && !matches!(e, Event::PacketIn(_)) {
            return true;
        }
        let Some(tx) = self.tx.as_ref().filter(|_| self.listening()) else {
            self.counters.no_listener.fetch_add(1, Relaxed);
            return false;
        };
        match tx.try_send(e) {
            Ok(()) => {
                self.counters.sent.fetch_add(1, Relaxed);
                true
            }
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.counters.dropped.fetch_add(1, Relaxed);
                false
            }
        }
    }

    /// A `controller` copy that was not made because nobody listens.
    pub fn unheard(&self) {
        self.counters.no_listener.fetch_add(1, Relaxed);
    }

    /// The counters as JSON (`stats`).
    pub fn json(&self) -> serde_json::Value {
        let c = &self.counters;
        serde_json::json!({
            "sent": c.sent.load(Relaxed),
            "dropped": c.dropped.load(Relaxed),
            "no_listener": c.no_listener.load(Relaxed),
            "listeners": self.listeners.load(Relaxed),
        })
    }
}

/// FLOW_REMOVED events for the `send_flow_rem` flows among `gone` (expired at `now_ms`).
pub fn flows_removed(sink: &EventSink, bridge: &str, gone: Vec<crate::flow::Expired>, now_ms: u64) {
    if !sink.listening() {
        return;
    }
    for e in gone.into_iter().filter(|e| e.flow.send_flow_rem) {
        sink.send(Event::FlowRemoved(Box::new(FlowRemoved {
            bridge: bridge.to_string(),
            reason: if e.hard { REMOVED_HARD } else { REMOVED_IDLE },
            duration_ms: now_ms.saturating_sub(e.stats.created_ms),
            packets: e.stats.n_packets,
            bytes: e.stats.n_bytes,
            flow: e.flow,
        })));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn port_event(n: u16) -> Event {
        Event::PortStatus(PortStatus {
            bridge: "br0".into(),
            reason: PORT_ADD,
            port: PortInfo {
                ofport: n,
                name: format!("p{n}"),
                up: true,
                mac: 0,
                config: 0,
            },
        })
    }

    #[test]
    fn nothing_is_made_without_a_listener() {
        let (sink, src) = channel(4);
        assert!(!sink.listening());
        assert!(!sink.send(port_event(1)));
        assert!(src.rx.try_recv().is_err());
        assert_eq!(src.counters.no_listener.load(Relaxed), 1);
    }

    #[test]
    fn a_full_channel_drops_and_counts_without_blocking() {
        let (sink, src) = channel(2);
        src.listeners.fetch_add(1, Relaxed);
        assert!(sink.send(port_event(1)));
        assert!(sink.send(port_event(2)));
        let t = std::time::Instant::now();
        assert!(!sink.send(port_event(3)));
        assert!(t.elapsed() < std::time::Duration::from_millis(100));
        assert_eq!(src.counters.dropped.load(Relaxed), 1);
        assert_eq!(src.counters.sent.load(Relaxed), 2);
        assert_eq!(src.rx.try_recv().unwrap(), port_event(1));
        assert_eq!(src.rx.try_recv().unwrap(), port_event(2));
        // Room again: the next one goes through.
        assert!(sink.send(port_event(4)));
        assert_eq!(src.rx.try_recv().unwrap(), port_event(4));
    }
}
