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
//! - Bounded per port, not per channel: while a port has frames handed to the owner and not
//!   yet sent (the owner gives them back as it sends them), it may hand more only up to
//!   [`RELAY_FRAMES`] in flight; beyond that its frames are dropped here, counted `tx-full` on
//!   the port. With nothing in flight a burst goes whole. So a port flooded through a
//!   worker without a socket on it loses its own excess, and the other relayed ports' frames
//!   still reach the owner (a channel shared by all, full of one port's bursts, would drop
//!   theirs too).
//! - Frames never change pools: the owner copies into its own.

use std::os::fd::RawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use crossbeam_channel::Sender;

use super::peers::{Handoffs, PeerMsg};
use crate::packet::{Desc, Frames};
use crate::port::wait::Waker;
use crate::port::{Port, PortKind, TxResult};

/// Frames one relayed port may have handed to its owner and not yet sent before its next
/// burst is cut (four bursts): a port whose owner has sent everything hands its whole burst,
/// however large, so only a port whose owner cannot keep up meets it.
pub(crate) const RELAY_FRAMES: u32 = 4 * crate::datapath::BATCH as u32;

/// See the module documentation.
pub(crate) struct RelayPort {
    inner: Box<dyn Port>,
    to: Sender<PeerMsg>,
    waker: Arc<Waker>,
    port_id: u16,
    /// Frames handed to the owner and not yet sent by it.
    in_flight: Arc<AtomicU32>,
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
        // Nothing in flight: the whole burst, however large (one flush may carry a pass's
        // output, super-frames cut into many); else what the share has room for.
        let in_flight = self.in_flight.load(Ordering::Relaxed);
        let take = match in_flight {
            0 => batch.len(),
            n => batch.len().min(RELAY_FRAMES.saturating_sub(n) as usize),
        };
        let mut handed = Handoffs::default();
        handed.reserve(take, batch[..take].iter().map(|d| d.len as usize).sum());
        let mut dropped = 0;
        for (i, d) in batch.drain(..).enumerate() {
            if i < take {
                handed.push(self.port_id, d.ol, frames.data(d));
            } else {
                // The owner has not sent this port's earlier frames yet: this port's excess.
                dropped += 1;
            }
            frames.free(d.addr);
        }
        let n = handed.len() as u32;
        if n > 0 {
            self.in_flight.fetch_add(n, Ordering::Relaxed);
            let msg = PeerMsg::Transmit(handed, self.in_flight.clone());
            if self.to.send(msg).is_ok() {
                self.waker.wake();
            } else {
                // The owner is gone (shutting down).
                self.in_flight.fetch_sub(n, Ordering::Relaxed);
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

    fn burst(frames: &mut Frames, n: usize) -> Vec<Desc> {
        (0..n)
            .map(|_| {
                let mut d = frames.alloc().unwrap();
                d.len = 60;
                d
            })
            .collect()
    }

    #[test]
    fn a_flooded_port_loses_its_own_excess_not_the_other_ports_frames() {
        let mut frames = Frames::new(4096).unwrap();
        let (tx, rx) = crossbeam_channel::unbounded();
        let waker = Arc::new(Waker::new().unwrap());
        let mut flooded = RelayPort::new(Box::new(MemPort::new(1)), 1, tx.clone(), waker.clone());
        let mut quiet = RelayPort::new(Box::new(MemPort::new(2)), 2, tx, waker);
        // The owner is slow: four passes of a flood before it sends anything.
        let mut dropped = 0;
        for _ in 0..4 {
            let mut b = burst(&mut frames, 2 * crate::datapath::BATCH);
            dropped += flooded.tx_burst(&mut frames, &mut b).dropped;
            assert!(b.is_empty());
        }
        let offered = 8 * crate::datapath::BATCH as u32;
        assert_eq!(dropped, offered - RELAY_FRAMES, "the flooded port's excess");
        let mut b = burst(&mut frames, 3);
        assert_eq!(quiet.tx_burst(&mut frames, &mut b).dropped, 0);
        assert_eq!(
            frames.free_count(),
            frames.capacity(),
            "copies sent, frames freed"
        );
        // What reached the owner: the flooded port's share, and the quiet port's three.
        let mut per_port = [0u32; 3];
        for m in rx.try_iter() {
            let PeerMsg::Transmit(h, in_flight) = m else {
                panic!("not a transmit")
            };
            per_port[if Arc::ptr_eq(&in_flight, &flooded.in_flight) {
                1
            } else {
                2
            }] += h.len() as u32;
            // The owner sent them.
            in_flight.fetch_sub(h.len() as u32, Ordering::Relaxed);
        }
        assert_eq!(per_port[1..], [RELAY_FRAMES, 3]);
        // Sent: nothing in flight, so a burst goes whole, however large (a pass's output of
        // super-frames cut to the MTU).
        let mut b = burst(&mut frames, 3 * RELAY_FRAMES as usize);
        assert_eq!(flooded.tx_burst(&mut frames, &mut b).dropped, 0);
    }
}
