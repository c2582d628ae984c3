//! A port this worker has no socket on (several workers, an AF_XDP netdev with fewer queues
//! than workers): it receives nothing here, and what this worker sends out of it is handed
//! (copied) to the worker that owns a queue of the netdev, which transmits it.
//!
//! Contract:
//! - Wraps the opened port (`Port::tx_by_worker` is Some): release, close, counters and
//!   details are the wrapped port's. `tx_burst` copies each frame into one
//!   `PeerMsg::Transmit` per burst, frees it here and wakes the owner; it reports nothing
//!   sent, the owner counts what its socket sends (so `stats`, summed over the workers, counts
//!   each frame once). The owner drops (and counts `no-buffer`) a frame it has no buffer for;
//!   a full channel to the owner drops the burst here (counted `tx-full` on the port).
//! - Frames never change pools: the owner copies into its own.

use std::os::fd::RawFd;
use std::sync::Arc;

use crossbeam_channel::Sender;

use super::peers::{Handoffs, PeerMsg};
use crate::packet::{Desc, Frames};
use crate::port::wait::Waker;
use crate::port::{Port, PortKind, TxResult};

/// See the module documentation.
pub(crate) struct RelayPort {
    inner: Box<dyn Port>,
    to: Sender<PeerMsg>,
    waker: Arc<Waker>,
    port_id: u16,
}

impl RelayPort {
    /// Relay port `port_id` (`inner`) to the worker reached by `to`.
    pub fn new(inner: Box<dyn Port>, port_id: u16, to: Sender<PeerMsg>, waker: Arc<Waker>) -> Self {
        RelayPort {
            inner,
            to,
            waker,
            port_id,
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
        let mut handed = Handoffs::default();
        handed.reserve(batch.len(), batch.iter().map(|d| d.len as usize).sum());
        for d in batch.drain(..) {
            handed.push(self.port_id, d.ol, frames.data(d));
            frames.free(d.addr);
        }
        let n = handed.len() as u32;
        if n == 0 {
            return TxResult::default();
        }
        match self.to.try_send(PeerMsg::Transmit(handed)) {
            Ok(()) => {
                self.waker.wake();
                TxResult::default()
            }
            // The owner is overloaded: dropped here, counted as the port's tx-full.
            Err(_) => TxResult {
                dropped: n,
                ..TxResult::default()
            },
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
