//! What workers send each other when several run (see `set`): learned state (`learned`) and
//! frames received by a worker that does not own their connection (`pipeline::steer`).
//!
//! Contract:
//! - Each worker has two channels in (learned state: unbounded, it is rare and must not be
//!   lost; frames: at most [`FRAME_MESSAGES`] bursts waiting), and every other worker holds
//!   senders to them and its waker. Messages are applied between bursts, in the order each
//!   sender sent them. A full frame channel (the owner is overloaded) drops the burst at the
//!   sender, counted (`handoff_dropped`; a relayed port's `tx-full`): a worker never blocks on
//!   another, and no queue grows without bound.
//! - A frame handed to another worker is copied (its bytes and offload state) and freed here:
//!   frames never change pools. The owner allocates a frame (a large buffer for a super-frame),
//!   and runs the frames of each port through its pipeline as a burst received on that port
//!   (counted there: the sender counted nothing). No frame for it: dropped and counted as
//!   `no-buffer` on the port.
//! - Nothing here runs with one worker (`Worker::peers` is None).

use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};

use super::Worker;
use crate::counters::DropReason;
use crate::datapath::{BATCH, Datapath};
use crate::learned::Learned;
use crate::packet::{Desc, Frames, MAX_FRAME_LEN, Offload};
use crate::port::Port;
use crate::port::wait::Waker;

/// Frame messages (bursts) a worker's frame channel holds.
pub(crate) const FRAME_MESSAGES: usize = 64;

/// A worker's way to reach another: its channels and its waker.
#[derive(Clone)]
pub(crate) struct Link {
    /// Learned state.
    pub learned: Sender<PeerMsg>,
    /// Frames (bounded).
    pub frames: Sender<PeerMsg>,
    /// Wakes it.
    pub waker: Arc<Waker>,
}

/// A message to another worker.
pub(crate) enum PeerMsg {
    /// What the sender learned.
    Learned(Vec<Learned>),
    /// Frames the receiver owns: run them through its pipeline from their ports.
    Frames(Vec<Handoff>),
    /// Frames to send out of their ports (`Handoff::in_port` names the output port): the
    /// sender has no socket there (see `relay`).
    Transmit(Vec<Handoff>),
}

/// A frame handed to its owner.
pub(crate) struct Handoff {
    in_port: u16,
    ol: Offload,
    bytes: Vec<u8>,
}

impl Handoff {
    /// A copy of a frame for port `port`.
    pub fn new(port: u16, ol: Offload, bytes: Vec<u8>) -> Handoff {
        Handoff {
            in_port: port,
            ol,
            bytes,
        }
    }
}

/// A worker's links to the others.
pub(crate) struct Peers {
    /// This worker's number and the number of workers.
    pub me: u32,
    pub workers: u32,
    /// Learned state from the others.
    pub rx: Receiver<PeerMsg>,
    /// Frames from the others.
    pub frames_rx: Receiver<PeerMsg>,
    /// Each worker's link (None: this one).
    pub to: Vec<Option<Link>>,
    /// Frames waiting to go to each worker (sent after the pass over the ports).
    out: Vec<Vec<Handoff>>,
    /// Scratch for `pipeline::steer::split`.
    away: Vec<(u32, Desc)>,
    /// Frames handed to other workers, and received from them (for `stats`).
    pub handed_out: u64,
    pub handed_in: u64,
    /// Frames not handed over because the owner's channel was full.
    pub handoff_dropped: u64,
}

impl Peers {
    /// Links for worker `me` of `to.len()`.
    pub fn new(
        me: usize,
        (rx, frames_rx): (Receiver<PeerMsg>, Receiver<PeerMsg>),
        to: Vec<Option<Link>>,
    ) -> Peers {
        let n = to.len();
        Peers {
            me: me as u32,
            workers: n as u32,
            rx,
            frames_rx,
            to,
            out: (0..n).map(|_| Vec::new()).collect(),
            away: Vec::new(),
            handed_out: 0,
            handed_in: 0,
            handoff_dropped: 0,
        }
    }

    /// Send learned records to worker `w` and wake it.
    fn send_learned(&self, w: usize, msg: PeerMsg) {
        if let Some(Some(l)) = self.to.get(w)
            && l.learned.send(msg).is_ok()
        {
            l.waker.wake();
        }
    }

    /// Send frames to worker `w` and wake it; false (nothing sent) when its channel is full.
    fn send_frames(&self, w: usize, msg: PeerMsg) -> bool {
        match self.to.get(w) {
            Some(Some(l)) if l.frames.try_send(msg).is_ok() => {
                l.waker.wake();
                true
            }
            _ => false,
        }
    }

    /// Take the frames of `batch` (received on `in_port`) that another worker owns and queue
    /// copies for it. Returns how many were taken.
    pub fn steer(
        &mut self,
        dp: &Datapath,
        frames: &mut Frames,
        in_port: u16,
        batch: &mut Vec<Desc>,
    ) -> usize {
        let share = (self.me, self.workers);
        crate::pipeline::steer::split(dp, frames, in_port, batch, share, &mut self.away);
        let n = self.away.len();
        self.handed_out += n as u64;
        for (w, d) in self.away.drain(..) {
            self.out[w as usize].push(Handoff {
                in_port,
                ol: d.ol,
                bytes: frames.data(d).to_vec(),
            });
            frames.free(d.addr);
        }
        n
    }

    /// Send the queued frames and what `dp` learned since the last call. Frames an owner
    /// cannot take (its channel full) are dropped and counted on their ports (`handoff-full`).
    pub fn send_all(&mut self, dp: &mut Datapath) {
        for w in 0..self.out.len() {
            if !self.out[w].is_empty() {
                let frames = std::mem::take(&mut self.out[w]);
                let ports: Vec<u16> = frames.iter().map(|h| h.in_port).collect();
                if !self.send_frames(w, PeerMsg::Frames(frames)) {
                    self.handed_out -= ports.len() as u64;
                    self.handoff_dropped += ports.len() as u64;
                    for p in ports {
                        if let Some(st) = dp.port_mut(p) {
                            st.counters.drop(DropReason::HandoffFull);
                        }
                    }
                }
            }
        }
        if let Some(out) = dp.learned_out.as_mut()
            && !out.is_empty()
        {
            let records = std::mem::take(out);
            for w in 0..self.to.len() {
                if self.to[w].is_some() {
                    self.send_learned(w, PeerMsg::Learned(records.clone()));
                }
            }
        }
    }
}

impl Worker {
    /// Apply what the other workers sent: learned state, and frames this worker owns (run
    /// through the pipeline and flushed). Returns the number of frames received.
    pub(super) fn peer_messages(&mut self, batch: &mut Vec<Desc>, now: u64) -> usize {
        let Some(p) = &self.peers else { return 0 };
        let msgs: Vec<PeerMsg> = p.rx.try_iter().chain(p.frames_rx.try_iter()).collect();
        let mut moved = 0;
        for m in msgs {
            match m {
                PeerMsg::Learned(records) => {
                    crate::learned::apply(&mut self.dp, &mut self.frames, &records, now as u32)
                }
                PeerMsg::Frames(handed) => moved += self.inject(handed, batch, now),
                PeerMsg::Transmit(handed) => moved += self.transmit(handed),
            }
        }
        if moved > 0 {
            if let Some(p) = self.peers.as_mut() {
                p.handed_in += moved as u64;
            }
            if self.observe.tx_tapped() {
                self.observe.before_flush(&mut self.dp, &mut self.frames);
            }
            super::flush(&mut self.dp, &mut self.ports, &mut self.frames);
        }
        moved
    }

    /// Run frames handed over by another worker through the pipeline, a burst per port.
    fn inject(&mut self, handed: Vec<Handoff>, batch: &mut Vec<Desc>, now: u64) -> usize {
        let n = handed.len();
        let mut it = handed.into_iter().peekable();
        while let Some(port) = self.next_run(&mut it, batch, BATCH) {
            if self.dp.port(port).is_none() {
                for d in batch.drain(..) {
                    self.frames.free(d.addr);
                }
                continue;
            }
            // Captured and mirrored here, where they are received (the sender took them out
            // of its burst before its own taps saw it); not frames decapsulated from a tunnel
            // port, which no tap sees on the worker that keeps them either.
            let tunnel = self.dp.port(port).is_some_and(|p| p.tunnel.is_some());
            if !tunnel && self.observe.rx_tapped(port) {
                self.observe
                    .on_rx(port, &mut self.dp, &mut self.frames, batch);
            }
            self.pipeline
                .process(&mut self.dp, &mut self.frames, port, batch, now);
        }
        n
    }

    /// Send frames another worker sends through this one's sockets (see `relay`): straight
    /// to the port, counted as sent there. They were shaped (rate_tx) by the sender already.
    fn transmit(&mut self, handed: Vec<Handoff>) -> usize {
        let n = handed.len();
        let mut batch: Vec<Desc> = Vec::new();
        let mut it = handed.into_iter().peekable();
        while let Some(port) = self.next_run(&mut it, &mut batch, usize::MAX) {
            // A port this worker holds no socket of either (its queues moved while the sender
            // still thought otherwise: `set-port rxq_affinity`) is not relayed on again, so a
            // frame can never bounce between two workers: dropped, counted tx-full.
            let relays = matches!(self.ports.get(port as usize), Some(Some(p)) if p.tx_by_worker().is_some());
            let (Some(Some(p)), false) = (self.ports.get_mut(port as usize), relays) else {
                let n = batch.len() as u64;
                for d in batch.drain(..) {
                    self.frames.free(d.addr);
                }
                if let Some(st) = self.dp.port_mut(port).filter(|_| relays) {
                    st.counters.drops[DropReason::TxRingFull as usize] += n;
                }
                continue;
            };
            let r = p.tx_burst(&mut self.frames, &mut batch);
            if let Some(st) = self.dp.port_mut(port) {
                st.counters.tx_packets += r.sent as u64;
                st.counters.tx_bytes += r.bytes;
                st.counters.drops[DropReason::TxRingFull as usize] += r.dropped as u64;
            }
        }
        n
    }

    /// Copy the next run of handed frames of one port (at most `max`) into `batch` (cleared
    /// first) from this worker's pool; returns their port, None when `it` is done. A frame
    /// without a buffer is dropped, counted `no-buffer` on its port.
    fn next_run(
        &mut self,
        it: &mut std::iter::Peekable<std::vec::IntoIter<Handoff>>,
        batch: &mut Vec<Desc>,
        max: usize,
    ) -> Option<u16> {
        let first = it.next()?;
        let port = first.in_port;
        batch.clear();
        let mut h = Some(first);
        while let Some(f) = h.take() {
            match self.copy_in(&f) {
                Some(d) => batch.push(d),
                None => {
                    if let Some(st) = self.dp.port_mut(port) {
                        st.counters.drop(DropReason::NoBuffer);
                    }
                }
            }
            if batch.len() < max && it.peek().is_some_and(|x| x.in_port == port) {
                h = it.next();
            }
        }
        Some(port)
    }

    /// A port of this worker's, wrapped to send through another worker when it has no socket
    /// of its own here (see `relay`).
    pub(super) fn relayed(&self, id: u16, port: Box<dyn Port>) -> Box<dyn Port> {
        let Some(w) = port.tx_by_worker() else {
            return port;
        };
        match self
            .peers
            .as_ref()
            .and_then(|p| p.to.get(w).cloned().flatten())
        {
            Some(l) => Box::new(super::relay::RelayPort::new(port, id, l.frames, l.waker)),
            None => port,
        }
    }

    /// A frame of this worker's pool holding `h`.
    fn copy_in(&mut self, h: &Handoff) -> Option<Desc> {
        let mut d = if h.bytes.len() <= MAX_FRAME_LEN {
            self.frames.alloc()?
        } else {
            self.frames.alloc_big()?
        };
        d.len = h.bytes.len() as u32;
        d.ol = h.ol;
        self.frames.data_mut(d).copy_from_slice(&h.bytes);
        Some(d)
    }
}
