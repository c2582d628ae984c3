//! Transmit doorbells the worker rings late on purpose: one `sendto` for the frames of several
//! loop passes instead of one per pass.
//!
//! Why: in AF_XDP copy mode (veth, most NICs without zero-copy) every transmit needs a
//! doorbell, a `sendto` that copies the ring's frames into skbs and, on a veth, runs the
//! receiving namespace's whole stack inside the call. A worker that polls fast holds 1-3 frames
//! a pass at a few hundred thousand frames a second; ringing once per pass made uvs issue
//! 1.2-1.7x the doorbells OVS does for the same traffic, and coalescing halved them (measured:
//! docs/design.md, "Transmit doorbells coalesced across passes").
//!
//! Contract:
//! - The worker's `flush` hands each output queue to its port with [`Port::tx_queue`]; a port
//!   that left its doorbell for later says so (`TxResult::kick_deferred`) and is noted here
//!   with [`TxKicks::wait`]. A port rings by itself once `KICK_FRAMES` frames wait (see
//!   `port::afxdp`).
//! - At the end of every loop pass the worker asks [`TxKicks::due`]: the doorbells are rung
//!   ([`Port::tx_kick`] on every noted port) when the pass received nothing (no frame is coming
//!   to share the call with, and the worker is about to yield or sleep) or when the oldest
//!   waiting frame was queued `KICK_DELAY_NS` or more before this pass began. So a frame waits
//!   at most one empty pass when traffic pauses, and about `KICK_DELAY_NS` plus one pass under
//!   a steady trickle; the worker never sleeps with a doorbell unrung. It also rings them
//!   before it applies a control request (which may close or reopen a port) and before it
//!   stops, so queued frames are not dropped with their port.
//! - IO-free and deterministic: time is the pass's clock reading, given by the worker.
//!
//! [`Port::tx_queue`]: crate::port::Port::tx_queue
//! [`Port::tx_kick`]: crate::port::Port::tx_kick

/// The longest a transmitted frame waits for its doorbell while frames keep arriving
/// (nanoseconds, from the start of the pass that queued it).
pub const KICK_DELAY_NS: u64 = 10_000;

/// Ports with an unrung transmit doorbell, and since when.
#[derive(Debug, Default)]
pub struct TxKicks {
    ports: Vec<u16>,
    /// The start of the pass that queued the oldest waiting frame.
    oldest_ns: Option<u64>,
    /// The current pass's start.
    now_ns: u64,
}

impl TxKicks {
    /// A new pass began at `now_ns`.
    #[inline]
    pub fn start_pass(&mut self, now_ns: u64) {
        self.now_ns = now_ns;
    }

    /// Port `port` queued frames and left its doorbell for later.
    #[inline]
    pub fn wait(&mut self, port: u16) {
        if !self.ports.contains(&port) {
            self.ports.push(port);
        }
        self.oldest_ns.get_or_insert(self.now_ns);
    }

    /// True if the doorbells are to be rung at the end of this pass, which `received` frames
    /// (or not).
    #[inline]
    pub fn due(&self, received: bool) -> bool {
        match self.oldest_ns {
            None => false,
            Some(t) => !received || self.now_ns.saturating_sub(t) >= KICK_DELAY_NS,
        }
    }

    /// Take the ports to ring (into `out`, cleared first); nothing waits afterwards.
    #[inline]
    pub fn take(&mut self, out: &mut Vec<u16>) {
        out.clear();
        out.append(&mut self.ports);
        self.oldest_ns = None;
    }

    /// True if some port's doorbell waits.
    pub fn waiting(&self) -> bool {
        self.oldest_ns.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_waits_nothing_is_due() {
        let k = TxKicks::default();
        assert!(!k.due(false));
        assert!(!k.due(true));
        assert!(!k.waiting());
    }

    #[test]
    fn an_empty_pass_rings_at_once() {
        let mut k = TxKicks::default();
        k.start_pass(1_000);
        k.wait(3);
        // The pass that queued received frames: not yet.
        assert!(!k.due(true));
        k.start_pass(1_500);
        assert!(k.due(false));
        let mut out = vec![9];
        k.take(&mut out);
        assert_eq!(out, vec![3]);
        assert!(!k.waiting());
        assert!(!k.due(false));
    }

    #[test]
    fn busy_passes_ring_once_the_oldest_frame_waited_the_delay() {
        let mut k = TxKicks::default();
        k.start_pass(100);
        k.wait(1);
        k.start_pass(100 + KICK_DELAY_NS - 1);
        k.wait(2);
        k.wait(1);
        assert!(!k.due(true), "younger than the delay");
        k.start_pass(100 + KICK_DELAY_NS);
        assert!(k.due(true));
        let mut out = Vec::new();
        k.take(&mut out);
        assert_eq!(out, vec![1, 2], "each port once, in order");
        // The clock restarts with the next waiting frame.
        k.start_pass(200 + KICK_DELAY_NS);
        k.wait(2);
        k.start_pass(250 + KICK_DELAY_NS);
        assert!(!k.due(true));
    }
}
