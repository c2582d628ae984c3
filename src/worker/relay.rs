//! A port this worker has no socket on (several workers, an AF_XDP netdev with fewer queues
//! than workers): it receives nothing here, and what this worker sends out of it is handed
//! (copied) to the worker that owns a queue of the netdev, which transmits it.
//!
//! Contract:
//! - Wraps the opened port (`Port::tx_by_worker` is Some): release, close, counters and
//!   details are the wrapped port's. `tx_burst` copies each frame into one
//!   `PeerMsg::Transmit` per burst, frees it here and wakes the owner; it reports nothing
//!   sent, the owner counts what its socket sends (so `stats`, summed over the workers, counts
//!   each frame once). The owner drops (and counts `no-buffer`) a frame it has no buffer for.
//! - Bounded per port and, within it, per input port: frames handed to the owner and not yet
//!   sent (the owner gives their credit back as it sends them) are counted by the port each
//!   came in on (`Frames::received_on`, hashed into [`SOURCES`] buckets; frames made here
//!   share one). A source with nothing in flight hands its whole burst; one with frames in
//!   flight only up to [`RELAY_FRAMES`] of them, and only while the port has fewer than
//!   [`RELAY_TOTAL`] in flight. Beyond that its frames are dropped here, counted `tx-full` on
//!   the port, unless their flow keeps little in flight (`fair`: a source's ping beside its own
//!   bulk TCP passes; at most `fair::LIGHT_SOURCE` such frames a source, beyond its share and
//!   the port's total). So a source flooding an output it shares with others loses its own excess:
//!   a victim's frames through the same congested output still go (one tail-drop bound per
//!   output dropped theirs with the flood's), and the other relayed ports' frames still
//!   reach the owner (the channel is shared by all).
//! - Frames never change pools: the owner copies into its own.

use std::os::fd::RawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use crossbeam_channel::Sender;

use super::fair::{self, FLOW_BUCKETS, LIGHT_FRAMES, LIGHT_SOURCE};
use super::peers::{Handoffs, PeerMsg};
use crate::packet::{Desc, Frames};
use crate::port::wait::Waker;
use crate::port::{Port, PortKind, TxResult};

/// Frames one source (input port) may have handed to the owner through one relayed port and
/// not yet sent before its next burst is cut (four bursts): a source whose frames were all sent
/// hands its whole burst, however large, so only a source the owner cannot keep up with meets it.
pub(crate) const RELAY_FRAMES: u32 = 4 * crate::datapath::BATCH as u32;

/// Frames one relayed port may have in flight, all sources together, before only sources with
/// nothing in flight may hand more.
pub(crate) const RELAY_TOTAL: u32 = 4 * RELAY_FRAMES;

/// Buckets the sources of a relayed port's frames are counted in: the input port's id modulo
/// `SOURCES - 1`; the last bucket holds frames made here (flood copies keep their source).
pub(crate) const SOURCES: usize = 64;

/// What one relayed port has in flight at its owner, per source bucket and in all; and of
/// that, what passed over its source's share as a light flow's (`fair`), per source and per
/// flow bucket.
pub(crate) struct InFlight {
    per_source: [AtomicU32; SOURCES],
    total: AtomicU32,
    light_source: [AtomicU32; SOURCES],
    light_flow: [AtomicU32; FLOW_BUCKETS],
}

impl Default for InFlight {
    fn default() -> Self {
        InFlight {
            per_source: std::array::from_fn(|_| AtomicU32::new(0)),
            total: AtomicU32::new(0),
            light_source: std::array::from_fn(|_| AtomicU32::new(0)),
            light_flow: std::array::from_fn(|_| AtomicU32::new(0)),
        }
    }
}

/// The credit a `PeerMsg::Transmit` holds: given back to its port's [`InFlight`] when the owner
/// has sent the frames, or when the message is dropped unsent (the owner gone).
pub(crate) struct Credit {
    to: Arc<InFlight>,
    per_source: Vec<(u8, u32)>,
    /// Of those, light flows' frames: (source bucket, flow bucket, frames).
    light: Vec<(u8, u16, u32)>,
}

impl Drop for Credit {
    fn drop(&mut self) {
        let mut total = 0;
        for &(b, n) in &self.per_source {
            self.to.per_source[b as usize].fetch_sub(n, Ordering::Relaxed);
            total += n;
        }
        self.to.total.fetch_sub(total, Ordering::Relaxed);
        for &(b, f, n) in &self.light {
            self.to.light_source[b as usize].fetch_sub(n, Ordering::Relaxed);
            self.to.light_flow[f as usize].fetch_sub(n, Ordering::Relaxed);
        }
    }
}

/// The bucket of a frame received on `port` (None: made here).
fn source(port: Option<u16>) -> usize {
    port.map_or(SOURCES - 1, |p| p as usize % (SOURCES - 1))
}

/// See the module documentation.
pub(crate) struct RelayPort {
    inner: Box<dyn Port>,
    to: Sender<PeerMsg>,
    waker: Arc<Waker>,
    port_id: u16,
    /// Frames handed to the owner and not yet sent by it.
    in_flight: Arc<InFlight>,
}

impl RelayPort {
    /// Relay port `port_id` (`inner`) to the worker reached by `to`.
    pub fn new(inner: Box<dyn Port>, port_id: u16, to: Sender<PeerMsg>, waker: Arc<Waker>) -> Self {
        RelayPort {
            inner,
            to,
            waker,
            port_id,
            in_flight: Arc::default(),
        }
    }
}

impl Port for RelayPort {
    fn kind(&self) -> PortKind {
        self.inner.kind()
    }
    fn rx_burst(&mut self, frames: &mut Frames, out: &mut Vec<Desc>, max: usize) -> usize {
        self.inner.rx_burst(frames, out, max)
    }
    fn tx_burst(&mut self, frames: &mut Frames, batch: &mut Vec<Desc>) -> TxResult {
        let flight = &*self.in_flight;
        let total = flight.total.load(Ordering::Relaxed);
        // What each source hands in this burst: all of it with nothing in flight (one flush
        // may carry a pass's output, super-frames cut into many), else what its share and
        // the port's total have room for.
        let mut taken = [0u32; SOURCES];
        // Light flows' frames taken over their source's share (`fair`), by (source, flow).
        let mut light: Vec<(u8, u16, u32)> = Vec::new();
        let mut keep = Vec::with_capacity(batch.len());
        let mut bytes = 0;
        let mut room = RELAY_TOTAL.saturating_sub(total);
        for d in batch.iter() {
            let b = source(frames.received_on(d.addr));
            let before = flight.per_source[b].load(Ordering::Relaxed);
            let mut ok = before == 0 || (before + taken[b] < RELAY_FRAMES && room > 0);
            if !ok {
                let f = fair::bucket(b, frames.data(*d)) as u16;
                let (src, flow) = light.iter().fold((0, 0), |(s, l), &(lb, lf, n)| {
                    (
                        s + if lb as usize == b { n } else { 0 },
                        l + if lf == f { n } else { 0 },
                    )
                });
                ok = flight.light_source[b].load(Ordering::Relaxed) + src < LIGHT_SOURCE
                    && flight.light_flow[f as usize].load(Ordering::Relaxed) + flow < LIGHT_FRAMES;
                if ok {
                    match light
                        .iter_mut()
                        .find(|(lb, lf, _)| *lb as usize == b && *lf == f)
                    {
                        Some(e) => e.2 += 1,
                        None => light.push((b as u8, f, 1)),
                    }
                }
            }
            if ok {
                taken[b] += 1;
                room = room.saturating_sub(1);
                bytes += d.len as usize;
            }
            keep.push(ok);
        }
        let n: u32 = taken.iter().sum();
        let offered = batch.len() as u32;
        let mut handed = Handoffs::default();
        handed.reserve(n as usize, bytes);
        for (d, ok) in batch.drain(..).zip(keep) {
            if ok {
                handed.push(self.port_id, d.ol, frames.data(d));
            }
            frames.free(d.addr);
        }
        // The source's excess (or the port's): the owner has not sent its earlier frames yet.
        let mut dropped = offered - n;
        if n > 0 {
            let mut per_source = Vec::new();
            for (b, &k) in taken.iter().enumerate() {
                if k > 0 {
                    flight.per_source[b].fetch_add(k, Ordering::Relaxed);
                    per_source.push((b as u8, k));
                }
            }
            flight.total.fetch_add(n, Ordering::Relaxed);
            for &(b, f, k) in &light {
                flight.light_source[b as usize].fetch_add(k, Ordering::Relaxed);
                flight.light_flow[f as usize].fetch_add(k, Ordering::Relaxed);
            }
            let credit = Credit {
                to: self.in_flight.clone(),
                per_source,
                light,
            };
            if self.to.send(PeerMsg::Transmit(handed, credit)).is_ok() {
                self.waker.wake();
            } else {
                // The owner is gone (shutting down); the credit went back with the message.
                dropped += n;
            }
        }
        TxResult {
            dropped,
            ..TxResult::default()
        }
    }
    fn service(&mut self, frames: &mut Frames) {
        self.inner.service(frames)
    }
    fn poll_fds(&self, out: &mut Vec<RawFd>) {
        self.inner.poll_fds(out)
    }
    fn mtu(&self) -> u32 {
        self.inner.mtu()
    }
    fn set_mtu(&mut self, mtu: u32) {
        self.inner.set_mtu(mtu)
    }
    fn ifindex(&self) -> u32 {
        self.inner.ifindex()
    }
    fn fault(&self) -> Option<&str> {
        self.inner.fault()
    }
    fn frames_held(&self) -> u32 {
        self.inner.frames_held()
    }
    fn housekeep(&mut self, frames: &mut Frames, now_ms: u64) {
        self.inner.housekeep(frames, now_ms)
    }
    fn partial_csum_in(&self) -> bool {
        self.inner.partial_csum_in()
    }
    fn offload_out(&self) -> bool {
        self.inner.offload_out()
    }
    fn uso_out(&self) -> bool {
        self.inner.uso_out()
    }
    fn kernel_counters(&self) -> Vec<(&'static str, u64)> {
        self.inner.kernel_counters()
    }
    fn details(&self) -> String {
        self.inner.details()
    }
    fn rx_queues(&self) -> Vec<(u32, u64)> {
        self.inner.rx_queues()
    }
    fn attach(&mut self, id: u16, frames: &mut Frames) -> Result<(), String> {
        self.inner.attach(id, frames)
    }
    fn release(&mut self) {
        self.inner.release()
    }
    fn shared_umem_fd(&self) -> Option<RawFd> {
        self.inner.shared_umem_fd()
    }
    fn tx_by_worker(&self) -> Option<usize> {
        self.inner.tx_by_worker()
    }
    fn close(&mut self, frames: &mut Frames) {
        self.inner.close(frames)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::port::mem::MemPort;

    /// `n` frames received on `port` (None: made here).
    fn burst(frames: &mut Frames, n: usize, port: Option<u16>) -> Vec<Desc> {
        (0..n)
            .map(|_| {
                let mut d = frames.alloc().unwrap();
                d.len = 60;
                if let Some(p) = port {
                    frames.mark_received(d.addr, p);
                }
                d
            })
            .collect()
    }

    /// What reached the owner, per relayed port, with the credits held (the owner not done).
    fn received(rx: &crossbeam_channel::Receiver<PeerMsg>) -> (Vec<u32>, Vec<Credit>) {
        let mut per_port = vec![0u32; 4];
        let mut credits = Vec::new();
        for m in rx.try_iter() {
            let PeerMsg::Transmit(h, credit) = m else {
                panic!("not a transmit")
            };
            for port in h.ports() {
                per_port[port as usize] += 1;
            }
            credits.push(credit);
        }
        (per_port, credits)
    }

    #[test]
    fn a_flooding_source_loses_its_own_excess_not_a_victims_frames_through_the_same_port() {
        let mut frames = Frames::new(8192).unwrap();
        let (tx, rx) = crossbeam_channel::unbounded();
        let waker = Arc::new(Waker::new().unwrap());
        let mut uplink = RelayPort::new(Box::new(MemPort::new(1)), 1, tx.clone(), waker.clone());
        let mut other = RelayPort::new(Box::new(MemPort::new(2)), 2, tx, waker);
        const FLOOD: Option<u16> = Some(5);
        const VICTIM: Option<u16> = Some(6);
        // The owner is slow: eight passes before it sends anything. Each pass the flood's
        // output leaves by the uplink, and with it one frame of a victim's.
        let (mut dropped, mut offered) = (0, 0);
        for _ in 0..8 {
            let mut b = burst(&mut frames, 2 * crate::datapath::BATCH, FLOOD);
            b.extend(burst(&mut frames, 1, VICTIM));
            offered += b.len() as u32;
            dropped += uplink.tx_burst(&mut frames, &mut b).dropped;
            assert!(b.is_empty());
        }
        // The flood had nothing in flight at first: its first burst went whole, then more up
        // to its share; the victim's eight all went.
        let flood_sent = RELAY_FRAMES + LIGHT_FRAMES; // its one flow's light frames too
        assert_eq!(offered - dropped, flood_sent + 8);
        // Frames made here (flood copies) count apart from both.
        let mut b = burst(&mut frames, 3, None);
        assert_eq!(uplink.tx_burst(&mut frames, &mut b).dropped, 0);
        // Another relayed port's frames are not held back by the uplink's.
        let mut b = burst(&mut frames, 3, FLOOD);
        assert_eq!(other.tx_burst(&mut frames, &mut b).dropped, 0);
        assert_eq!(
            frames.free_count(),
            frames.capacity(),
            "copies sent, frames freed"
        );
        let (per_port, credits) = received(&rx);
        assert_eq!(per_port[1..3], [flood_sent + 8 + 3, 3]);
        let total = uplink.in_flight.total.load(Ordering::Relaxed);
        assert_eq!(total, flood_sent + 8 + 3);
        // The owner sent them: every credit back, and a burst goes whole again, however large
        // (a pass's output of super-frames cut to the MTU).
        drop(credits);
        assert_eq!(uplink.in_flight.total.load(Ordering::Relaxed), 0);
        assert!(
            uplink
                .in_flight
                .per_source
                .iter()
                .all(|s| s.load(Ordering::Relaxed) == 0)
        );
        let mut b = burst(&mut frames, 3 * RELAY_FRAMES as usize, FLOOD);
        assert_eq!(uplink.tx_burst(&mut frames, &mut b).dropped, 0);
    }

    /// Frames received on `port` of flow `flow` (its source MAC; non-IP frames hash by MACs).
    fn flow_burst(frames: &mut Frames, n: usize, port: u16, flow: u16) -> Vec<Desc> {
        let b = burst(frames, n, Some(port));
        for d in &b {
            let f = frames.data_mut(*d);
            f[6..8].copy_from_slice(&flow.to_be_bytes());
            f[12..14].copy_from_slice(&0x88b5u16.to_be_bytes());
        }
        b
    }

    #[test]
    fn a_sources_light_flow_passes_beside_its_own_bulk_flow_and_the_source_stays_bounded() {
        let mut frames = Frames::new(8192).unwrap();
        let (tx, rx) = crossbeam_channel::unbounded();
        let waker = Arc::new(Waker::new().unwrap());
        let mut uplink = RelayPort::new(Box::new(MemPort::new(1)), 1, tx, waker);
        // A slow owner; the source's bulk flow fills its share and one frame of another flow
        // (a ping) comes each pass: it goes every time, the bulk flow's excess does not.
        let pings = 4;
        let mut dropped = 0;
        for _ in 0..pings {
            let mut b = flow_burst(&mut frames, 128, 7, 1);
            b.extend(flow_burst(&mut frames, 1, 7, 2));
            dropped += uplink.tx_burst(&mut frames, &mut b).dropped;
        }
        let (per_port, credits) = received(&rx);
        // The bulk flow: the share and its light frames, less the first ping's place in the
        // share; every ping went (the other three as a light flow).
        assert_eq!(per_port[1], RELAY_FRAMES + LIGHT_FRAMES + pings - 1);
        assert_eq!(dropped, pings * 129 - per_port[1]);
        // The owner sends them: every count comes back.
        drop(credits);
        let f = &uplink.in_flight;
        assert_eq!(f.total.load(Ordering::Relaxed), 0);
        assert!(
            f.light_source
                .iter()
                .all(|s| s.load(Ordering::Relaxed) == 0)
        );
        assert!(f.light_flow.iter().all(|s| s.load(Ordering::Relaxed) == 0));
        // A source making a new flow per frame: its share plus LIGHT_SOURCE, no more.
        let mut sent = 0;
        for pass in 0..20u16 {
            let mut b: Vec<Desc> = (0..64)
                .flat_map(|i| flow_burst(&mut frames, 1, 9, 1000 + pass * 64 + i))
                .collect();
            let n = b.len() as u32;
            sent += n - uplink.tx_burst(&mut frames, &mut b).dropped;
        }
        assert_eq!(sent, RELAY_FRAMES + LIGHT_SOURCE);
        assert_eq!(frames.free_count(), frames.capacity());
    }

    #[test]
    fn the_port_total_bounds_many_busy_sources_but_not_a_quiet_one() {
        let mut frames = Frames::new(16384).unwrap();
        let (tx, rx) = crossbeam_channel::unbounded();
        let waker = Arc::new(Waker::new().unwrap());
        let mut uplink = RelayPort::new(Box::new(MemPort::new(1)), 1, tx, waker);
        // Ten sources, each with frames in flight, offer more and more: the port stops at its
        // total, give or take the sources' first (whole) bursts.
        for _ in 0..4 {
            for src in 10..20 {
                let mut b = burst(&mut frames, 200, Some(src));
                uplink.tx_burst(&mut frames, &mut b);
            }
        }
        let total = uplink.in_flight.total.load(Ordering::Relaxed);
        assert!(total <= RELAY_TOTAL + 10 * (200 + LIGHT_FRAMES), "{total}");
        assert!(total >= RELAY_TOTAL, "{total}");
        // A source with nothing in flight still hands its frames.
        let mut b = burst(&mut frames, 2, Some(40));
        assert_eq!(uplink.tx_burst(&mut frames, &mut b).dropped, 0);
        // Gone owner: the frames are dropped and their credit comes back.
        drop(rx);
        let before = uplink.in_flight.total.load(Ordering::Relaxed);
        let mut b = burst(&mut frames, 2, Some(41));
        assert_eq!(uplink.tx_burst(&mut frames, &mut b).dropped, 2);
        assert_eq!(uplink.in_flight.total.load(Ordering::Relaxed), before);
    }
}
