//! The punt path between the datapath worker and the DNS service: what goes over the two
//! channels, and the worker's side of it. IO-free (channels are memory).
//!
//! Contract:
//! - The L3 stage offers a packet sent to its ingress bridge's own gateway address on UDP or
//!   TCP port 53 ([`Punt::offer`]): its IPv4 packet is copied into a [`Punted`] and sent on a
//!   bounded channel to the service; the frame itself is freed. A full channel drops it
//!   (`dns-queue-full` on the ingress port), and a source over its rate
//!   ([`RATE_PER_S`] packets a second, bursts of [`BURST`], per bridge and source address) is
//!   dropped before that
//!   (`dns-rate-limited`), so one tenant cannot fill the queue for the others.
//! - The service answers with [`Reply`]s on a second channel and wakes the worker; the worker
//!   sends each from the gateway's MAC to the client's MAC out of the port the query came in on
//!   (if that port is still on that bridge).
//! - Without a service connected, nothing is punted (the packet is `local-unsupported`).

use std::collections::HashMap;

use crossbeam_channel::{Sender, TrySendError};

use crate::counters::DropReason;
use crate::fdb::PortId;

/// Queries queued for the service at most.
pub const QUEUE: usize = 1024;
/// Packets a second one source address may punt.
pub const RATE_PER_S: u32 = 200;
/// Packets one source may punt in a burst.
pub const BURST: u32 = 400;
/// Sources tracked by the rate limiter at most (idle ones are forgotten first).
const MAX_SOURCES: usize = 4096;

/// A packet for the DNS service.
#[derive(Debug, Clone)]
pub struct Punted {
    /// Bridge id (where the reply goes).
    pub bridge: u16,
    /// Bridge name (the registry's key).
    pub bridge_name: String,
    /// Port it came in on.
    pub in_port: PortId,
    /// The client's MAC.
    pub client_mac: [u8; 6],
    /// The gateway's MAC.
    pub gw_mac: [u8; 6],
    /// The gateway's prefix length.
    pub gw_len: u8,
    /// The IPv4 packet (header and payload).
    pub packet: Vec<u8>,
}

/// A packet from the DNS service, to send from a gateway.
#[derive(Debug, Clone)]
pub struct Reply {
    /// Bridge id.
    pub bridge: u16,
    /// Port to send it out of.
    pub port: PortId,
    /// Destination MAC (the client).
    pub dst_mac: [u8; 6],
    /// Source MAC (the gateway).
    pub src_mac: [u8; 6],
    /// The IPv4 packet.
    pub packet: Vec<u8>,
}

/// Punt counters (`dns-show --json`, `stats` as drop reasons on the ports).
#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct PuntCounters {
    /// Packets handed to the service.
    pub punted: u64,
    /// Replies sent from gateways.
    pub replies: u64,
    /// Replies dropped (port gone, no frame free).
    pub replies_dropped: u64,
}

/// The worker's side of the punt path.
#[derive(Default)]
pub struct Punt {
    tx: Option<Sender<Punted>>,
    /// Token buckets by (bridge, source address): tenants of two bridges never share one.
    sources: HashMap<(u16, [u8; 4]), Bucket>,
    /// Counters.
    pub counters: PuntCounters,
}

#[derive(Clone, Copy)]
struct Bucket {
    tokens: u32,
    at_ms: u64,
}

impl Punt {
    /// Start punting to `tx` (None: stop).
    pub fn connect(&mut self, tx: Option<Sender<Punted>>) {
        self.tx = tx;
    }

    /// True when a service is connected.
    #[inline]
    pub fn enabled(&self) -> bool {
        self.tx.is_some()
    }

    /// Hand `p` (from `src`) to the service, or say why not.
    pub fn offer(&mut self, src: [u8; 4], p: Punted, now_ms: u64) -> Result<(), DropReason> {
        let Some(tx) = &self.tx else {
            return Err(DropReason::LocalUnsupported);
        };
        if !take_token(&mut self.sources, (p.bridge, src), now_ms) {
            return Err(DropReason::DnsRateLimited);
        }
        match tx.try_send(p) {
            Ok(()) => {
                self.counters.punted += 1;
                Ok(())
            }
            Err(TrySendError::Full(_)) => Err(DropReason::DnsQueueFull),
            Err(TrySendError::Disconnected(_)) => {
                self.tx = None;
                Err(DropReason::LocalUnsupported)
            }
        }
    }
}

/// Token bucket per source address.
fn take_token(
    sources: &mut HashMap<(u16, [u8; 4]), Bucket>,
    src: (u16, [u8; 4]),
    now_ms: u64,
) -> bool {
    if sources.len() >= MAX_SOURCES && !sources.contains_key(&src) {
        // Forget sources that have been quiet long enough to be full again.
        let full_after = (BURST as u64 * 1000).div_ceil(RATE_PER_S as u64);
        sources.retain(|_, b| now_ms.saturating_sub(b.at_ms) < full_after);
        if sources.len() >= MAX_SOURCES {
            return false;
        }
    }
    let b = sources.entry(src).or_insert(Bucket {
        tokens: BURST,
        at_ms: now_ms,
    });
    let refill = now_ms.saturating_sub(b.at_ms) * RATE_PER_S as u64 / 1000;
    if refill > 0 {
        b.tokens = (b.tokens as u64 + refill).min(BURST as u64) as u32;
        b.at_ms = now_ms;
    }
    if b.tokens == 0 {
        return false;
    }
    b.tokens -= 1;
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn punted() -> Punted {
        Punted {
            bridge: 0,
            bridge_name: "br0".into(),
            in_port: 1,
            client_mac: [2, 0, 0, 0, 0, 1],
            gw_mac: [2, 0, 0, 0, 0, 2],
            gw_len: 24,
            packet: vec![0x45],
        }
    }

    #[test]
    fn one_source_over_its_rate_does_not_starve_another() {
        let (tx, rx) = crossbeam_channel::bounded(QUEUE);
        let mut p = Punt::default();
        p.connect(Some(tx));
        let (a, b) = ([10, 0, 0, 2], [10, 0, 0, 3]);
        let mut limited = 0;
        for _ in 0..(BURST + 100) {
            if p.offer(a, punted(), 0) == Err(DropReason::DnsRateLimited) {
                limited += 1;
            }
        }
        assert_eq!(limited, 100);
        assert_eq!(
            p.offer(b, punted(), 0),
            Ok(()),
            "another source still gets through"
        );
        // Refill: a second later, RATE_PER_S more.
        assert_eq!(p.offer(a, punted(), 1000), Ok(()));
        assert_eq!(rx.len(), BURST as usize + 2);
        assert_eq!(p.counters.punted, BURST as u64 + 2);
    }

    #[test]
    fn full_queue_drops_with_its_reason_and_no_service_punts_nothing() {
        let (tx, rx) = crossbeam_channel::bounded(2);
        let mut p = Punt::default();
        assert_eq!(
            p.offer([10, 0, 0, 2], punted(), 0),
            Err(DropReason::LocalUnsupported)
        );
        p.connect(Some(tx));
        for i in 0..3u8 {
            let r = p.offer([10, 0, 0, i], punted(), 0);
            assert_eq!(r.is_ok(), i < 2);
            if i == 2 {
                assert_eq!(r, Err(DropReason::DnsQueueFull));
            }
        }
        drop(rx);
        assert_eq!(
            p.offer([10, 0, 0, 9], punted(), 0),
            Err(DropReason::LocalUnsupported)
        );
        assert!(!p.enabled());
    }
}
