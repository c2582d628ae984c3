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
    Frames(Handoffs),
    /// Frames to send out of their ports (the port each names is the output port): the sender
    /// has no socket there (see `relay`).
    Transmit(Handoffs),
}

/// Copies of frames handed to another worker: their bytes one after the other in one buffer,
/// reserved for the whole burst, so a burst costs two allocations, not one per frame.
#[derive(Default)]
pub(crate) struct Handoffs {
    bytes: Vec<u8>,
    items: Vec<Handoff>,
}

/// One frame of [`Handoffs`]: its port, offload state and bytes `start .. start + len`.
#[derive(Clone, Copy)]
struct Handoff {
    port: u16,
    ol: Offload,
    start: usize,
    len: usize,
}

impl Handoffs {
    /// Room for `n` more frames of `bytes` bytes in all (reserved before a burst's copies, so
    /// the burst costs one allocation per buffer).
    pub fn reserve(&mut self, n: usize, bytes: usize) {
        self.items.reserve(n);
        self.bytes.reserve(bytes);
    }

    /// Append a copy of a frame for port `port`.
    pub fn push(&mut self, port: u16, ol: Offload, bytes: &[u8]) {
        self.items.push(Handoff {
            port,
            ol,
            start: self.bytes.len(),
            len: bytes.len(),
        });
        self.bytes.extend_from_slice(bytes);
    }

    /// Number of frames.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// No frame.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The port of each frame, in order.
    fn ports(&self) -> impl Iterator<Item = u16> + '_ {
        self.items.iter().map(|h| h.port)
    }

    /// The bytes of frame `h`.
    fn bytes(&self, h: &Handoff) -> &[u8] {
        &self.bytes[h.start..h.start + h.len]
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
    out: Vec<Handoffs>,
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
            out: (0..n).map(|_| Handoffs::default()).collect(),
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

    /// Send frames to worker `w` and wake it; the frames back (nothing sent) when its channel
    /// is full.
    fn send_frames(&self, w: usize, frames: Handoffs) -> Result<(), Handoffs> {
        let Some(Some(l)) = self.to.get(w) else {
            return Err(frames);
        };
        match l.frames.try_send(PeerMsg::Frames(frames)) {
            Ok(()) => {
                l.waker.wake();
                Ok(())
            }
            Err(e) => match e.into_inner() {
                PeerMsg::Frames(f) => Err(f),
                _ => Err(Handoffs::default()),
            },
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
        if n == 0 {
            return 0;
        }
        self.handed_out += n as u64;
        for (w, out) in self.out.iter_mut().enumerate() {
            let (n, bytes) = self
                .away
                .iter()
                .filter(|(to, _)| *to as usize == w)
                .fold((0, 0), |(n, b), (_, d)| (n + 1, b + d.len as usize));
            if n > 0 {
                out.reserve(n, bytes);
            }
        }
        for (w, d) in self.away.drain(..) {
            self.out[w as usize].push(in_port, d.ol, frames.data(d));
            frames.free(d.addr);
        }
        n
    }

    /// [`Peers::steer`] as the pipeline's hook for decapsulated frames
    /// ([`crate::pipeline::Pipeline::process_steered`]).
    pub fn steerer(&mut self) -> impl FnMut(&Datapath, &mut Frames, u16, &mut Vec<Desc>) + '_ {
        move |dp, frames, port, inner| {
            self.steer(dp, frames, port, inner);
        }
    }

    /// Send the queued frames and what `dp` learned since the last call. Frames an owner
    /// cannot take (its channel full) are dropped and counted on their ports (`handoff-full`).
    pub fn send_all(&mut self, dp: &mut Datapath) {
        // Learned state first: an owner applies it before the frames that depend on it (a
        // remote VTEP learned while decapsulating the frames handed with it).
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
        for w in 0..self.out.len() {
            if !self.out[w].is_empty() {
                let frames = std::mem::take(&mut self.out[w]);
                if let Err(lost) = self.send_frames(w, frames) {
                    self.handed_out -= lost.len() as u64;
                    self.handoff_dropped += lost.len() as u64;
                    for p in lost.ports() {
                        if let Some(st) = dp.port_mut(p) {
                            st.counters.drop(DropReason::HandoffFull);
                        }
                    }
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
    fn inject(&mut self, handed: Handoffs, batch: &mut Vec<Desc>, now: u64) -> usize {
        let n = handed.len();
        let mut at = 0;
        while let Some(port) = self.next_run(&handed, &mut at, batch, BATCH) {
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
            let mut steer = self.peers.as_mut().map(Peers::steerer);
            self.pipeline.process_handed(
                &mut self.dp,
                &mut self.frames,
                port,
                batch,
                now,
                steer.as_mut().map(|f| f as _),
            );
        }
        n
    }

    /// Send frames another worker sends through this one's sockets (see `relay`): straight
    /// to the port, counted as sent there. They were shaped (rate_tx) by the sender already.
    fn transmit(&mut self, handed: Handoffs) -> usize {
        let n = handed.len();
        let mut batch: Vec<Desc> = Vec::new();
        let mut at = 0;
        while let Some(port) = self.next_run(&handed, &mut at, &mut batch, usize::MAX) {
            // A port this worker holds no socket of either (its queues moved while the sender
            // still thought otherwise: `set-port rxq_affinity`) is not relayed on again, so a
            // frame can never bounce between two workers: dropped, counted tx-full.
            let own = self.ports.get_mut(port as usize).and_then(|p| p.as_mut());
            let Some(p) = own.filter(|p| p.tx_by_worker().is_none()) else {
                let relays = self.ports.get(port as usize).is_some_and(|p| p.is_some());
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
        handed: &Handoffs,
        at: &mut usize,
        batch: &mut Vec<Desc>,
        max: usize,
    ) -> Option<u16> {
        let port = handed.items.get(*at)?.port;
        batch.clear();
        while let Some(h) = handed.items.get(*at).filter(|h| h.port == port) {
            if batch.len() >= max {
                break;
            }
            *at += 1;
            match self.copy_in(h.ol, handed.bytes(h)) {
                Some(d) => batch.push(d),
                None => {
                    if let Some(st) = self.dp.port_mut(port) {
                        st.counters.drop(DropReason::NoBuffer);
                    }
                }
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

    /// A frame of this worker's pool holding `bytes`.
    fn copy_in(&mut self, ol: Offload, bytes: &[u8]) -> Option<Desc> {
        let mut d = if bytes.len() <= MAX_FRAME_LEN {
            self.frames.alloc()?
        } else {
            self.frames.alloc_big()?
        };
        d.len = bytes.len() as u32;
        d.ol = ol;
        self.frames.data_mut(d).copy_from_slice(bytes);
        Some(d)
    }
}
