//! What workers send each other when several run (see `set`): learned state (`learned`) and
//! frames received by a worker that does not own their connection (`pipeline::steer`).
//!
//! Contract:
//! - Each worker has two channels in (learned state and frames relayed for transmission:
//!   unbounded, each sender bounds what it sends; steered frames: at most [`FRAME_MESSAGES`]
//!   bursts waiting), and every other worker holds senders to them and its waker. Messages
//!   are applied between bursts, in the order each sender sent them. A worker never blocks on
//!   another, and no queue grows without bound: learned records beyond the receiver's
//!   [`LEARNED_BACKLOG`] are dropped (those that may be), a relayed port's frames beyond its
//!   share in flight too (see `relay`), steered frames wait (below).
//! - Steered frames wait in an outbox per owner until its channel takes them (a full channel
//!   keeps them for the next pass, it does not drop them). While the owner is behind (its
//!   channel full, or an earlier burst, any worker's, not taken yet) a port may add frames up to
//!   [`PORT_SHARE`] waiting, the outbox up to [`OUTBOX_FRAMES`]
//!   and [`OUTBOX_BYTES`]: beyond that a frame is dropped before it is copied, counted
//!   `handoff-full` on its port, unless its flow keeps little waiting (`fair`: at most
//!   `fair::LIGHT_SOURCE` such frames a port beyond these bounds). So a port flooding frames
//!   another worker owns loses its own excess first, the few frames of other ports (a tenant's
//!   pings) still get through, and so do a port's own light flows beside its bulk ones.
//!   The share is a port's: tenants behind one port (NAT answers on an uplink, the inner
//!   frames of one tunnel port) share it. A port deleted here has its waiting frames dropped
//!   (its id may be given to another port). An owner that is gone (shutting down) gets
//!   nothing: its frames are dropped.
//! - A frame handed to another worker is copied (its bytes and offload state) and freed here:
//!   frames never change pools. The owner allocates a frame (a large buffer for a super-frame),
//!   and runs the frames of each port through its pipeline as a burst received on that port
//!   (counted there: the sender counted nothing). No frame for it: dropped and counted as
//!   `no-buffer` on the port.
//! - Nothing here runs with one worker (`Worker::peers` is None).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crossbeam_channel::{Receiver, Sender};

use super::Worker;
use super::fair::{self, LightShare};
use crate::counters::DropReason;
use crate::datapath::{BATCH, Datapath};
use crate::learned::Learned;
use crate::packet::{Desc, Frames, MAX_FRAME_LEN, Offload};
use crate::port::Port;
use crate::port::wait::Waker;

/// Frame messages (bursts) a worker's frame channel holds.
pub(crate) const FRAME_MESSAGES: usize = 64;

/// Frames one port may have waiting in one owner's outbox while that owner is behind (two
/// bursts). An owner that keeps up sets no limit: a pass hands over what it steered, however
/// many (a burst of UDP GSO messages cut into datagrams, a tunnel's whole burst
/// decapsulated).
pub(crate) const PORT_SHARE: u32 = 2 * BATCH as u32;

/// Frames, and bytes, one owner's outbox holds while it is behind, all ports together.
pub(crate) const OUTBOX_FRAMES: usize = 32 * BATCH;
pub(crate) const OUTBOX_BYTES: usize = 4 << 20;

/// Learned records (of the kinds that may be lost, see [`Learned::may_drop`]) one worker may
/// have waiting for it from all the others: a flood of new MACs or ARP senders on one worker
/// must not bury another under records it applies before any frame (each costs about what
/// learning it did). Beyond it they are dropped at the sender, counted `learned_dropped`.
pub(crate) const LEARNED_BACKLOG: usize = 4096;

/// The backlog beyond which every record but a flow's expiry is dropped: the kinds that are
/// otherwise always sent (a moved MAC, an ARP reply) can be flooded too (a MAC bouncing
/// between two ports, unsolicited replies), and no queue may grow without bound.
pub(crate) const LEARNED_HARD_CAP: usize = 4 * LEARNED_BACKLOG;

/// A worker's way to reach another: its channels and its waker.
#[derive(Clone)]
pub(crate) struct Link {
    /// Learned state and frames relayed for transmission (unbounded: each sender bounds what
    /// it puts there, [`LEARNED_BACKLOG`] and `relay::RELAY_FRAMES` per port).
    pub learned_and_relayed: Sender<PeerMsg>,
    /// Learned records sent to it and not yet applied (all senders together).
    pub learned_backlog: Arc<AtomicUsize>,
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
    /// has no socket there (see `relay`). The credit goes back to the relayed port's count of
    /// frames in flight when the receiver drops it, once it has sent (or dropped) them.
    Transmit(Handoffs, super::relay::Credit),
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

    /// Keep only the frames whose port passes `keep` (their bytes moved down); returns how
    /// many were removed.
    fn retain_ports(&mut self, keep: impl Fn(u16) -> bool) -> usize {
        let before = self.items.len();
        let mut at = 0;
        let mut kept = Vec::with_capacity(before);
        for h in &self.items {
            if keep(h.port) {
                self.bytes.copy_within(h.start..h.start + h.len, at);
                kept.push(Handoff { start: at, ..*h });
                at += h.len;
            }
        }
        self.bytes.truncate(at);
        self.items = kept;
        before - self.items.len()
    }

    /// Each frame's port, in order.
    #[cfg(test)]
    pub fn ports(&self) -> impl Iterator<Item = u16> + '_ {
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
    /// Learned state and relayed frames from the others.
    pub rx: Receiver<PeerMsg>,
    /// Learned records sent to this worker and not yet applied (see [`LEARNED_BACKLOG`]).
    backlog: Arc<AtomicUsize>,
    /// Learned records not sent because the receiver's backlog was full.
    pub learned_dropped: u64,
    /// Learned records received from the others and applied.
    pub learned_applied: u64,
    /// Frames from the others.
    pub frames_rx: Receiver<PeerMsg>,
    /// Each worker's link (None: this one).
    pub to: Vec<Option<Link>>,
    /// Frames waiting to go to each worker (sent after the pass over the ports).
    out: Vec<Outbox>,
    /// Scratch for `pipeline::steer::split`.
    away: Vec<(u32, Desc)>,
    /// The owners of the fragmented datagrams this worker steered the first fragment of.
    frag_owners: crate::conntrack::DatagramTable<u32>,
    /// Frames handed to other workers, and received from them (for `stats`).
    pub handed_out: u64,
    pub handed_in: u64,
    /// Frames not handed over: their port's share of the owner's outbox, or the outbox, was
    /// full (the owner too busy to take them).
    pub handoff_dropped: u64,
}

impl Peers {
    /// Links for worker `me` of `to.len()`.
    pub fn new(
        me: usize,
        (rx, frames_rx): (Receiver<PeerMsg>, Receiver<PeerMsg>),
        backlog: Arc<AtomicUsize>,
        to: Vec<Option<Link>>,
    ) -> Peers {
        let n = to.len();
        Peers {
            me: me as u32,
            workers: n as u32,
            rx,
            backlog,
            learned_dropped: 0,
            learned_applied: 0,
            frames_rx,
            to,
            out: (0..n).map(|_| Outbox::default()).collect(),
            away: Vec::new(),
            frag_owners: Default::default(),
            handed_out: 0,
            handed_in: 0,
            handoff_dropped: 0,
        }
    }

    /// Send learned `records` to worker `w` and wake it: those that may be lost only as far
    /// as its backlog has room ([`LEARNED_BACKLOG`], counting the others first), the others
    /// up to [`LEARNED_HARD_CAP`], a flow's expiry always.
    fn send_learned(&mut self, w: usize, records: &[Learned]) {
        let Some(Some(l)) = self.to.get(w) else {
            return;
        };
        let backlog = l.learned_backlog.load(Ordering::Relaxed);
        // Only worker 0 decides flow timeouts: the others have no use for flow hits.
        let flow_used = |r: &Learned| w != 0 && matches!(r, Learned::FlowUsed { .. });
        let records: Vec<&Learned> = records.iter().filter(|r| !flow_used(r)).collect();
        let sent: Vec<Learned> = if backlog + records.len() <= LEARNED_BACKLOG {
            records.into_iter().cloned().collect()
        } else {
            // Room left for the kinds that may be dropped, after those that may not.
            let kept_always = |r: &Learned| {
                !r.may_drop()
                    && (backlog < LEARNED_HARD_CAP || matches!(r, Learned::FlowExpired { .. }))
            };
            let always = records.iter().filter(|r| kept_always(r)).count();
            let mut left = LEARNED_BACKLOG.saturating_sub(backlog + always);
            let kept: Vec<Learned> = records
                .iter()
                .copied()
                .filter(|r| {
                    if kept_always(r) {
                        return true;
                    }
                    let keep = r.may_drop() && left > 0;
                    left -= keep as usize;
                    keep
                })
                .cloned()
                .collect();
            self.learned_dropped += (records.len() - kept.len()) as u64;
            kept
        };
        if sent.is_empty() {
            return;
        }
        l.learned_backlog.fetch_add(sent.len(), Ordering::Relaxed);
        if l.learned_and_relayed.send(PeerMsg::Learned(sent)).is_ok() {
            l.waker.wake();
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
        crate::pipeline::steer::split(
            dp,
            frames,
            in_port,
            batch,
            share,
            &mut self.away,
            &mut self.frag_owners,
        );
        let n = self.away.len();
        if n == 0 {
            return 0;
        }
        for (w, out) in self.out.iter_mut().enumerate() {
            let (n, bytes) = self
                .away
                .iter()
                .filter(|(to, _)| *to as usize == w)
                .fold((0, 0), |(n, b), (_, d)| (n + 1, b + d.len as usize));
            if n > 0 {
                out.frames.reserve(n, bytes);
            }
        }
        let mut handed = 0;
        for (w, d) in self.away.drain(..) {
            if self.out[w as usize].offer(in_port, d.ol, frames.data(d)) {
                handed += 1;
            }
            frames.free(d.addr);
        }
        self.handed_out += handed;
        n
    }

    /// [`Peers::steer`] as the pipeline's hook for decapsulated frames
    /// ([`crate::pipeline::Pipeline::process_steered`]).
    pub fn steerer(&mut self) -> impl FnMut(&Datapath, &mut Frames, u16, &mut Vec<Desc>) + '_ {
        move |dp, frames, port, inner| {
            self.steer(dp, frames, port, inner);
        }
    }

    /// Send the queued frames and what `dp` learned since the last call. Frames an owner's
    /// channel cannot take now wait in its outbox; the drops `steer` counted are added to
    /// their ports (`handoff-full`).
    pub fn send_all(&mut self, dp: &mut Datapath) {
        // Learned state first: an owner applies it before the frames that depend on it (a
        // remote VTEP learned while decapsulating the frames handed with it).
        if let Some(out) = dp.learned_out.as_mut()
            && !out.is_empty()
        {
            let records = std::mem::take(out);
            for w in 0..self.to.len() {
                self.send_learned(w, &records);
            }
        }
        for w in 0..self.out.len() {
            let out = &mut self.out[w];
            for share in out.ports.iter_mut().filter(|s| s.dropped > 0) {
                self.handoff_dropped += share.dropped as u64;
                if let Some(st) = dp.port_mut(share.port) {
                    st.counters.drops[DropReason::HandoffFull as usize] += share.dropped as u64;
                }
                share.dropped = 0;
            }
            if out.frames.is_empty() {
                // Nothing for this owner this pass: the next pass is judged afresh.
                out.ports.clear();
                out.blocked = false;
                continue;
            }
            let frames = std::mem::take(&mut out.frames);
            let n = frames.len() as u64;
            match send_frames(&self.to, w, frames) {
                // Taken: the shares apply to the next pass only if the owner is behind (it
                // has not taken an earlier burst yet).
                Ok(behind) => {
                    self.out[w].ports.clear();
                    self.out[w].blocked = behind;
                }
                // The owner's channel is full: they wait for the next pass, and the shares
                // apply until it takes them.
                Err(Some(kept)) => {
                    self.out[w].frames = kept;
                    self.out[w].blocked = true;
                }
                // The owner is gone.
                Err(None) => {
                    self.handed_out = self.handed_out.saturating_sub(n);
                    self.handoff_dropped += n;
                    self.out[w].ports.clear();
                }
            }
        }
    }

    /// Drop the frames of port `port` waiting in the outboxes (it was deleted: its id may name
    /// another port by the time they would be sent).
    pub fn forget_port(&mut self, port: u16) {
        for out in &mut self.out {
            if out.ports.iter().any(|s| s.port == port && s.waiting > 0) {
                let n = out.frames.retain_ports(|p| p != port);
                self.handed_out = self.handed_out.saturating_sub(n as u64);
                self.handoff_dropped += n as u64;
            }
            // Drops not yet added (the port's counters are gone with it).
            self.handoff_dropped += out
                .ports
                .iter()
                .filter(|s| s.port == port)
                .map(|s| s.dropped as u64)
                .sum::<u64>();
            out.ports.retain(|s| s.port != port);
        }
    }

    /// Frames wait in an outbox for an owner whose channel was full: the worker must pass
    /// again soon rather than sleep.
    pub fn waiting(&self) -> bool {
        self.out.iter().any(|o| !o.frames.is_empty())
    }
}

/// Send frames to worker `w` and wake it: Ok(true) if an earlier burst still waits there (the
/// owner is behind). Err(Some): its channel is full, the frames back (nothing sent);
/// Err(None): it is gone (or is this worker), they are dropped.
fn send_frames(to: &[Option<Link>], w: usize, frames: Handoffs) -> Result<bool, Option<Handoffs>> {
    let Some(Some(l)) = to.get(w) else {
        return Err(None);
    };
    match l.frames.try_send(PeerMsg::Frames(frames)) {
        Ok(()) => {
            l.waker.wake();
            Ok(l.frames.len() > 1)
        }
        Err(crossbeam_channel::TrySendError::Full(PeerMsg::Frames(f))) => Err(Some(f)),
        Err(_) => Err(None),
    }
}

/// Frames waiting for one owner, and how many each port has there (see the module
/// documentation: [`PORT_SHARE`], [`OUTBOX_FRAMES`]).
#[derive(Default)]
struct Outbox {
    frames: Handoffs,
    ports: Vec<PortShare>,
    /// The last send found the owner behind (its channel full, or an earlier burst, any
    /// worker's, not taken yet): the shares apply.
    blocked: bool,
}

/// One port's frames in an [`Outbox`]: waiting (of them, light flows' over the share), and
/// dropped since the last `send_all`.
struct PortShare {
    port: u16,
    waiting: u32,
    dropped: u32,
    light: LightShare,
}

impl Outbox {
    /// Queue a copy of a frame of `port` if it is within the port's share and the outbox's
    /// size (true), else count it dropped.
    fn offer(&mut self, port: u16, ol: Offload, bytes: &[u8]) -> bool {
        let ok = self.admit(port, bytes);
        if ok {
            self.frames.push(port, ol, bytes);
        }
        ok
    }

    /// Whether a frame of `port` may join; counted either way. Over the port's share (or the
    /// outbox's size), a light flow's frame still may (`fair`).
    fn admit(&mut self, port: u16, frame: &[u8]) -> bool {
        let full = self.blocked
            && (self.frames.len() >= OUTBOX_FRAMES || self.frames.bytes.len() >= OUTBOX_BYTES);
        // From the end: a steered burst's frames share one port, the one added last.
        let i = match self.ports.iter().rposition(|s| s.port == port) {
            Some(i) => i,
            None => {
                self.ports.push(PortShare {
                    port,
                    waiting: 0,
                    dropped: 0,
                    light: LightShare::default(),
                });
                self.ports.len() - 1
            }
        };
        let s = &mut self.ports[i];
        if (full || (self.blocked && s.waiting >= PORT_SHARE))
            && !s.light.admit(fair::bucket(port as usize, frame))
        {
            s.dropped += 1;
            false
        } else {
            s.waiting += 1;
            true
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
                    crate::learned::apply(&mut self.dp, &mut self.frames, &records, now as u32);
                    if let Some(p) = self.peers.as_mut() {
                        p.backlog.fetch_sub(records.len(), Ordering::Relaxed);
                        p.learned_applied += records.len() as u64;
                    }
                }
                PeerMsg::Frames(handed) => moved += self.inject(handed, batch, now),
                PeerMsg::Transmit(handed, credit) => {
                    moved += self.transmit(handed);
                    drop(credit);
                }
            }
        }
        if moved > 0 {
            if let Some(p) = self.peers.as_mut() {
                p.handed_in += moved as u64;
            }
            if self.observe.tx_tapped() {
                self.observe.before_flush(&mut self.dp, &mut self.frames);
            }
            super::flush(
                &mut self.dp,
                &mut self.ports,
                &mut self.frames,
                &mut self.kicks,
            );
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
                Some(d) => {
                    // Handed frames name the port they came in on (relayed ones their output
                    // port, which is what a relaying owner then holds them as).
                    self.frames.mark_received(d.addr, port);
                    batch.push(d)
                }
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
            Some(l) => Box::new(super::relay::RelayPort::new(
                port,
                id,
                l.learned_and_relayed,
                l.waker,
            )),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datapath::{BridgeOptions, PortState, VlanMode};
    use crate::port::PortKind;

    const FLOOD: u16 = 0;
    const VICTIM: u16 = 1;

    type Test = (
        Peers,
        Receiver<PeerMsg>,
        Receiver<PeerMsg>,
        Arc<AtomicUsize>,
    );

    /// Worker 0 of two, with its link to worker 1: frame channel `cap` messages.
    fn peers(cap: usize) -> Test {
        peers_of(0, cap)
    }

    /// Worker `me` of two, with its link to the other.
    fn peers_of(me: usize, cap: usize) -> Test {
        let (ltx, lrx) = crossbeam_channel::unbounded();
        let (ftx, frx) = crossbeam_channel::bounded(cap);
        let backlog = Arc::new(AtomicUsize::new(0));
        let link = Link {
            learned_and_relayed: ltx,
            learned_backlog: backlog.clone(),
            frames: ftx,
            waker: Arc::new(Waker::new().unwrap()),
        };
        let own = (
            crossbeam_channel::unbounded().1,
            crossbeam_channel::unbounded().1,
        );
        let to = if me == 0 {
            vec![None, Some(link)]
        } else {
            vec![Some(link), None]
        };
        let p = Peers::new(me, own, Arc::default(), to);
        (p, lrx, frx, backlog)
    }

    fn datapath() -> Datapath {
        let mut dp = Datapath::new();
        let b = dp.add_bridge("br0", &BridgeOptions::default()).unwrap();
        for name in ["flood", "victim"] {
            let st = PortState::new(name, PortKind::Mem, b, VlanMode::default_trunk(), 1500);
            dp.add_port(dp.next_port_id().unwrap(), st).unwrap();
        }
        assert_eq!(
            (dp.port_id("flood"), dp.port_id("victim")),
            (Some(FLOOD), Some(VICTIM))
        );
        dp
    }

    fn frames_of(msg: PeerMsg) -> Vec<u16> {
        match msg {
            PeerMsg::Frames(h) => h.items.iter().map(|h| h.port).collect(),
            _ => panic!("not frames"),
        }
    }

    #[test]
    fn a_flooding_port_loses_its_own_excess_not_the_others_frames() {
        let (mut p, _l, frx, _) = peers(1);
        let mut dp = datapath();
        // The owner is busy: its one-message channel is full.
        p.out[1].offer(FLOOD, Offload::default(), &[0; 60]);
        p.send_all(&mut dp);
        assert!(p.out[1].frames.is_empty());
        // Ten passes: the flood port steers a full burst each, the victim one frame.
        for _ in 0..10 {
            for _ in 0..BATCH {
                p.out[1].offer(FLOOD, Offload::default(), &[1; 60]);
            }
            assert!(p.out[1].offer(VICTIM, Offload::default(), &[2; 60]));
            p.send_all(&mut dp);
        }
        // Over its share, the flood's one flow gains its light frames (`fair`), no more.
        let flood_dropped = (10 * BATCH) as u64 - (PORT_SHARE + fair::LIGHT_FRAMES) as u64;
        assert_eq!(p.handoff_dropped, flood_dropped);
        let drops = |id| dp.port(id).unwrap().counters.drops[DropReason::HandoffFull as usize];
        assert_eq!((drops(FLOOD), drops(VICTIM)), (flood_dropped, 0));
        assert!(p.waiting(), "kept for the owner, not dropped");
        // The owner takes its channel: the next pass sends everything that waited.
        assert_eq!(frames_of(frx.try_recv().unwrap()), vec![FLOOD]);
        p.send_all(&mut dp);
        let sent = frames_of(frx.try_recv().unwrap());
        assert_eq!(sent.iter().filter(|&&x| x == VICTIM).count(), 10);
        assert_eq!(
            sent.iter().filter(|&&x| x == FLOOD).count(),
            (PORT_SHARE + fair::LIGHT_FRAMES) as usize
        );
        assert!(!p.waiting());
        // Shares start again once sent.
        assert!(p.out[1].offer(FLOOD, Offload::default(), &[1; 60]));
    }

    #[test]
    fn an_owner_that_takes_its_frames_gets_the_whole_pass() {
        let (mut p, _l, frx, _) = peers(4);
        let mut dp = datapath();
        let n = 3 * PORT_SHARE as usize;
        for _ in 0..n {
            assert!(p.out[1].offer(FLOOD, Offload::default(), &[1; 60]));
        }
        p.send_all(&mut dp);
        assert_eq!(frames_of(frx.try_recv().unwrap()).len(), n);
        assert_eq!(p.handoff_dropped, 0);
    }

    #[test]
    fn a_deleted_ports_waiting_frames_are_dropped_the_others_kept() {
        let (mut p, _l, frx, _) = peers(1);
        let mut dp = datapath();
        p.out[1].offer(FLOOD, Offload::default(), &[0; 60]);
        p.send_all(&mut dp);
        for i in 0..6u8 {
            let port = if i % 2 == 0 { FLOOD } else { VICTIM };
            p.out[1].offer(port, Offload::default(), &[i; 60]);
        }
        p.send_all(&mut dp);
        assert!(p.waiting());
        p.forget_port(FLOOD);
        assert_eq!(p.handoff_dropped, 3);
        frx.try_recv().unwrap();
        p.send_all(&mut dp);
        let PeerMsg::Frames(h) = frx.try_recv().unwrap() else {
            panic!("not frames")
        };
        let got: Vec<(u16, u8)> = h.items.iter().map(|x| (x.port, h.bytes(x)[0])).collect();
        assert_eq!(got, vec![(VICTIM, 1), (VICTIM, 3), (VICTIM, 5)]);
    }

    #[test]
    fn frames_for_an_owner_that_is_gone_are_dropped_not_kept() {
        let (mut p, _l, frx, _) = peers(1);
        let mut dp = datapath();
        drop(frx);
        p.out[1].offer(FLOOD, Offload::default(), &[0; 60]);
        p.send_all(&mut dp);
        assert!(!p.waiting(), "nothing kept for a worker that is gone");
        assert_eq!(p.handoff_dropped, 1);
    }

    #[test]
    fn the_outbox_is_bounded_for_all_ports_together() {
        let (mut p, _l, _frx, _) = peers(1);
        p.out[1].blocked = true;
        let mut admitted = 0;
        for port in 0..(OUTBOX_FRAMES / PORT_SHARE as usize + 4) as u16 {
            for _ in 0..PORT_SHARE {
                admitted += p.out[1].offer(port, Offload::default(), &[0; 60]) as usize;
            }
        }
        // Full, each further port's one flow gets its light frames (`fair`), no more.
        let light = 4 * fair::LIGHT_FRAMES as usize;
        assert_eq!(admitted, OUTBOX_FRAMES + light);
        assert_eq!(p.out[1].frames.len(), OUTBOX_FRAMES + light);
    }

    /// Frames of one port's flows: `flow` picks the source MAC (non-IP frames hash by MACs).
    fn frame_of_flow(flow: u16) -> [u8; 60] {
        let mut f = [0u8; 60];
        f[6..8].copy_from_slice(&flow.to_be_bytes());
        f[12..14].copy_from_slice(&0x88b5u16.to_be_bytes());
        f
    }

    #[test]
    fn a_ports_light_flow_passes_beside_its_own_bulk_flow_and_the_port_stays_bounded() {
        let (mut p, _l, frx, _) = peers(1);
        let mut dp = datapath();
        p.out[1].offer(FLOOD, Offload::default(), &[0; 60]);
        p.send_all(&mut dp);
        // The owner is behind; each pass the port steers a burst of its bulk flow and one
        // frame of another flow (a ping beside an iperf3).
        for _ in 0..3 {
            for _ in 0..BATCH {
                p.out[1].offer(VICTIM, Offload::default(), &frame_of_flow(1));
            }
            assert!(p.out[1].offer(VICTIM, Offload::default(), &frame_of_flow(2)));
            p.send_all(&mut dp);
        }
        frx.try_recv().unwrap();
        p.send_all(&mut dp);
        let sent = frames_of(frx.try_recv().unwrap());
        // The bulk flow: the share (less the first ping's place in it) and its light frames;
        // the three pings all went (the last two as a light flow).
        assert_eq!(sent.len(), (PORT_SHARE + fair::LIGHT_FRAMES) as usize + 2);
        // A port making a new flow per frame: its share plus its light frames, no more.
        p.out[1].blocked = true;
        let admitted = (0..2000u16)
            .filter(|&f| p.out[1].offer(FLOOD, Offload::default(), &frame_of_flow(1000 + f)))
            .count();
        assert_eq!(admitted, (PORT_SHARE + fair::LIGHT_SOURCE) as usize);
    }

    #[test]
    fn learned_records_beyond_the_backlog_are_dropped_but_flow_timeouts_are_not() {
        // Worker 1 reporting to worker 0 (which decides flow timeouts).
        let (mut p, lrx, _frx, backlog) = peers_of(1, 1);
        let mut dp = datapath();
        backlog.store(LEARNED_BACKLOG - 2, Ordering::Relaxed);
        let mac = |m| Learned::Mac {
            new: true,
            bridge: 0,
            vlan: 0,
            mac: m,
            port: 1,
        };
        let used = Learned::FlowUsed {
            bridge: 0,
            id: 7,
            hash: 9,
            used_ms: 1,
        };
        let mut records: Vec<Learned> = (1..=5).map(mac).collect();
        records.push(used.clone());
        dp.learned_out = Some(records);
        p.send_all(&mut dp);
        match lrx.try_recv().unwrap() {
            PeerMsg::Learned(r) => assert_eq!(r, vec![mac(1), used.clone()]),
            _ => panic!("not learned"),
        }
        assert_eq!(p.learned_dropped, 4);
        assert_eq!(
            backlog.load(Ordering::Relaxed),
            LEARNED_BACKLOG,
            "filled, not past"
        );
        // A full backlog still takes a moved MAC and a flow hit; past the hard cap, not.
        let moved = Learned::Mac {
            new: false,
            bridge: 0,
            vlan: 0,
            mac: 9,
            port: 1,
        };
        dp.learned_out = Some(vec![mac(6), moved.clone(), used.clone()]);
        p.send_all(&mut dp);
        match lrx.try_recv().unwrap() {
            PeerMsg::Learned(r) => assert_eq!(r, vec![moved.clone(), used.clone()]),
            _ => panic!("not learned"),
        }
        assert_eq!(p.learned_dropped, 5);
        backlog.store(LEARNED_HARD_CAP, Ordering::Relaxed);
        dp.learned_out = Some(vec![moved, used.clone()]);
        p.send_all(&mut dp);
        assert!(lrx.try_recv().is_err(), "nothing sent past the hard cap");
        assert_eq!(p.learned_dropped, 7);
        // Worker 0 sends no flow hits: only it uses them.
        let (mut p0, lrx0, _f, _) = peers(1);
        dp.learned_out = Some(vec![used]);
        p0.send_all(&mut dp);
        assert!(lrx0.try_recv().is_err());
        // Under the bound: all sent.
        backlog.store(0, Ordering::Relaxed);
        dp.learned_out = Some((1..=5).map(mac).collect());
        p.send_all(&mut dp);
        match lrx.try_recv().unwrap() {
            PeerMsg::Learned(r) => assert_eq!(r.len(), 5),
            _ => panic!("not learned"),
        }
        assert_eq!(p.learned_dropped, 7);
    }
}
