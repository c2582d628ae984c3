//! Patch ports: two ports, usually on two bridges, joined back to back inside the switch (OVS's
//! `type=patch` with `options:peer=`). A frame one of them transmits is received by the other
//! in the same pass of the worker (`Worker::cross_patches`), with its offload state (partial
//! checksum, TCP super-frame) in its descriptor as it was: no copy, no kernel, and no checksum
//! work at the crossing (the frame went through its first bridge's ingress, which completed
//! what a descriptor does not carry).
//!
//! Contract:
//! - Each port of a pair has an inbox on its worker ([`Inboxes`], one per worker: each worker
//!   is a replica holding its own pair, and a frame never leaves the frame region of the worker
//!   that holds it). `tx_burst` of `a` (peer `b`) moves the frames into `b`'s inbox;
//!   `rx_burst` of `b` takes them out, in order.
//! - A pair is linked only when each names the other: `a` (peer `b`) sends only while a port
//!   `b` whose peer is `a` exists on the worker; otherwise `tx_burst` drops the frames as
//!   `patch-no-peer` (`TxResult::why`). Frames beyond [`INBOX_FRAMES`] waiting in `b`'s inbox
//!   are dropped as `tx-full`.
//! - `close` returns the frames waiting in the port's own inbox to the pool and unlinks it.
//! - No file descriptor, no frame held but what waits in the inbox (`frames_held`), and
//!   `tx_pending` while something waits, so the worker does not sleep on it. The worker reads
//!   [`Inboxes::waiting`] after each pass's flush and, while frames wait, runs the patch ports
//!   again, bridge after bridge, up to 64 crossings (OVS's translation depth): a frame in a
//!   loop of patch ports is dropped there (`patch-loop`), so a broadcast goes round a loop 64
//!   times, not until storm control stops it.

use std::collections::{HashMap, VecDeque};
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use super::{Port, PortKind, TxResult};
use crate::counters::DropReason;
use crate::packet::{Desc, Frames};

/// Frames that may wait in one patch port's inbox; beyond, its peer's transmissions are
/// dropped (`tx-full`).
pub const INBOX_FRAMES: usize = 1024;

/// The frames waiting for one patch port, and who may send them.
#[derive(Debug, Default)]
struct Inbox {
    frames: VecDeque<Desc>,
    /// The port that receives from this inbox exists.
    open: bool,
    /// The peer it accepts frames from (its `peer=`).
    from: String,
    /// Which port of this name holds it: a port deleted and added again under its name shares
    /// the inbox while the old one is still being closed, and only the holder opens, unlinks or
    /// drains it (the old one's late `release`/`close` left the new one unlinked for good).
    holder: u64,
}

type Shared = Arc<Mutex<Inbox>>;

fn lock(inbox: &Shared) -> MutexGuard<'_, Inbox> {
    // A poisoned lock means a worker panicked holding it: the frames are still consistent.
    inbox.lock().unwrap_or_else(|e| e.into_inner())
}

/// One worker's patch inboxes by port name, and the frames waiting in them.
#[derive(Debug, Default)]
pub struct Inboxes {
    by_name: HashMap<String, Weak<Mutex<Inbox>>>,
    waiting: Arc<AtomicUsize>,
    /// The last [`Inbox::holder`] handed out.
    holders: u64,
}

impl Inboxes {
    fn get(&mut self, name: &str) -> Shared {
        self.by_name.retain(|_, w| w.strong_count() > 0);
        if let Some(i) = self.by_name.get(name).and_then(Weak::upgrade) {
            return i;
        }
        let i = Shared::default();
        self.by_name.insert(name.to_string(), Arc::downgrade(&i));
        i
    }

    /// Frames waiting in this worker's patch inboxes (one load: the worker asks every pass).
    #[inline]
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }
}

/// A patch port. See the module documentation.
#[derive(Debug)]
pub struct PatchPort {
    name: String,
    peer: String,
    own: Shared,
    to_peer: Shared,
    waiting: Arc<AtomicUsize>,
    /// This port's [`Inbox::holder`] token.
    holder: u64,
}

impl PatchPort {
    /// Port `name` joined to port `peer`, with its inbox in `inboxes` (the worker's). It
    /// receives from now on; it sends once `peer` names it back.
    pub fn new(name: &str, peer: &str, inboxes: &mut Inboxes) -> PatchPort {
        let own = inboxes.get(name);
        inboxes.holders += 1;
        let holder = inboxes.holders;
        {
            let mut i = lock(&own);
            i.open = true;
            i.from = peer.to_string();
            i.holder = holder;
        }
        PatchPort {
            name: name.to_string(),
            peer: peer.to_string(),
            own,
            to_peer: inboxes.get(peer),
            waiting: inboxes.waiting.clone(),
            holder,
        }
    }

    /// The peer's name.
    pub fn peer(&self) -> &str {
        &self.peer
    }

    /// True while the peer exists and names this port back.
    pub fn linked(&self) -> bool {
        let p = lock(&self.to_peer);
        p.open && p.from == self.name
    }
}

impl Port for PatchPort {
    fn kind(&self) -> PortKind {
        PortKind::Patch
    }

    fn rx_burst(&mut self, _frames: &mut Frames, out: &mut Vec<Desc>, max: usize) -> usize {
        let mut i = lock(&self.own);
        let n = i.frames.len().min(max);
        out.extend(i.frames.drain(..n));
        self.waiting.fetch_sub(n, Ordering::Relaxed);
        n
    }

    fn tx_burst(&mut self, frames: &mut Frames, batch: &mut Vec<Desc>) -> TxResult {
        let mut p = lock(&self.to_peer);
        if !p.open || p.from != self.name {
            drop(p);
            return TxResult {
                why: Some(DropReason::PatchNoPeer),
                ..TxResult::drop_all(frames, batch)
            };
        }
        let room = INBOX_FRAMES.saturating_sub(p.frames.len()).min(batch.len());
        let mut r = TxResult {
            sent: room as u32,
            ..TxResult::default()
        };
        for d in batch.drain(..room) {
            r.bytes += u64::from(d.len);
            p.frames.push_back(d);
        }
        drop(p);
        self.waiting.fetch_add(room, Ordering::Relaxed);
        if !batch.is_empty() {
            r.dropped = TxResult::drop_all(frames, batch).dropped;
        }
        r
    }

    fn service(&mut self, _frames: &mut Frames) {}

    fn poll_fds(&self, _out: &mut Vec<RawFd>) {}

    fn tx_pending(&self) -> bool {
        !lock(&self.own).frames.is_empty()
    }

    fn mtu(&self) -> u32 {
        // No wire: the ports a frame finally leaves through check their own MTU.
        u32::from(u16::MAX)
    }

    fn frames_held(&self) -> u32 {
        lock(&self.own).frames.len() as u32
    }

    fn offload_out(&self) -> bool {
        true
    }

    fn details(&self) -> String {
        format!("peer={}", self.peer)
    }

    fn set_peer(&mut self, name: &str, peer: &str, inboxes: &mut Inboxes) {
        lock(&self.own).from = peer.to_string();
        self.name = name.to_string();
        self.peer = peer.to_string();
        self.to_peer = inboxes.get(peer);
    }

    fn down_reason(&self) -> Option<String> {
        (!self.linked()).then(|| {
            format!(
                "no peer: no patch port '{}' with peer={}",
                self.peer, self.name
            )
        })
    }

    fn release(&mut self) {
        // No kernel side: unlink (its peer stops sending), frames stay for `close`.
        let mut i = lock(&self.own);
        if i.holder == self.holder {
            i.open = false;
        }
    }

    fn close(&mut self, frames: &mut Frames) {
        let mut i = lock(&self.own);
        if i.holder != self.holder {
            // A port of this name added since holds the inbox (and what waits in it).
            return;
        }
        i.open = false;
        self.waiting.fetch_sub(i.frames.len(), Ordering::Relaxed);
        for d in i.frames.drain(..) {
            frames.free(d.addr);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames_with(f: &mut Frames, n: usize) -> Vec<Desc> {
        (0..n)
            .map(|_| {
                let mut d = f.alloc().expect("frame");
                d.len = 60;
                d
            })
            .collect()
    }

    #[test]
    fn a_linked_pair_hands_frames_over_in_order() {
        let mut inboxes = Inboxes::default();
        let mut f = Frames::new(64).expect("pool");
        let mut a = PatchPort::new("a", "b", &mut inboxes);
        // b does not exist yet: a drops (and frees).
        let mut batch = frames_with(&mut f, 3);
        let r = a.tx_burst(&mut f, &mut batch);
        assert_eq!((r.sent, r.dropped), (0, 3));
        assert_eq!(r.why, Some(DropReason::PatchNoPeer));
        assert!(!a.linked());
        assert_eq!(f.free_count(), 64);
        let mut b = PatchPort::new("b", "a", &mut inboxes);
        assert!(a.linked() && b.linked());
        let mut batch = frames_with(&mut f, 3);
        let want: Vec<u64> = batch.iter().map(|d| d.addr).collect();
        let r = a.tx_burst(&mut f, &mut batch);
        assert_eq!((r.sent, r.dropped, r.bytes), (3, 0, 180));
        assert!(b.tx_pending());
        assert_eq!(b.frames_held(), 3);
        assert_eq!(inboxes.waiting(), 3);
        let mut out = Vec::new();
        assert_eq!(b.rx_burst(&mut f, &mut out, 2), 2);
        assert_eq!(b.rx_burst(&mut f, &mut out, 32), 1);
        let got: Vec<u64> = out.iter().map(|d| d.addr).collect();
        assert_eq!(got, want);
        assert!(!b.tx_pending());
        assert_eq!(inboxes.waiting(), 0);
    }

    #[test]
    fn a_peer_that_names_another_port_is_not_linked() {
        let mut inboxes = Inboxes::default();
        let mut f = Frames::new(64).expect("pool");
        let mut a = PatchPort::new("a", "b", &mut inboxes);
        let _b = PatchPort::new("b", "c", &mut inboxes);
        let mut batch = frames_with(&mut f, 2);
        let r = a.tx_burst(&mut f, &mut batch);
        assert_eq!((r.sent, r.dropped), (0, 2));
        assert!(!a.linked());
    }

    #[test]
    fn closing_frees_what_waits_and_unlinks() {
        let mut inboxes = Inboxes::default();
        let mut f = Frames::new(64).expect("pool");
        let mut a = PatchPort::new("a", "b", &mut inboxes);
        let mut b = PatchPort::new("b", "a", &mut inboxes);
        let mut batch = frames_with(&mut f, 4);
        assert_eq!(a.tx_burst(&mut f, &mut batch).sent, 4);
        assert_eq!(f.free_count(), 60);
        assert_eq!(inboxes.waiting(), 4);
        b.close(&mut f);
        assert_eq!(f.free_count(), 64);
        assert_eq!(inboxes.waiting(), 0);
        assert!(!a.linked());
        let mut batch = frames_with(&mut f, 1);
        assert_eq!(a.tx_burst(&mut f, &mut batch).dropped, 1);
        // A new b links again.
        let _b2 = PatchPort::new("b", "a", &mut inboxes);
        assert!(a.linked());
    }

    /// A port deleted and added again under its name while the old one is still being closed
    /// (its `release` and `close` come after the new one opened): the new one stays linked
    /// and keeps what waits for it.
    #[test]
    fn a_late_close_of_the_old_port_leaves_the_new_one_linked() {
        let mut inboxes = Inboxes::default();
        let mut f = Frames::new(64).expect("pool");
        let mut a = PatchPort::new("a", "b", &mut inboxes);
        let mut old_b = PatchPort::new("b", "a", &mut inboxes);
        let new_b = PatchPort::new("b", "a", &mut inboxes);
        old_b.release();
        let mut batch = frames_with(&mut f, 2);
        assert_eq!(
            a.tx_burst(&mut f, &mut batch).sent,
            2,
            "still linked after release"
        );
        old_b.close(&mut f);
        assert!(a.linked() && new_b.linked());
        assert_eq!(new_b.frames_held(), 2, "the new port's frames were kept");
        assert_eq!(inboxes.waiting(), 2);
    }

    #[test]
    fn a_full_inbox_drops_the_rest() {
        let mut inboxes = Inboxes::default();
        let mut a = PatchPort::new("a", "b", &mut inboxes);
        let b = PatchPort::new("b", "a", &mut inboxes);
        let mut f = Frames::new(INBOX_FRAMES as u32 + 16).expect("pool");
        let mut batch = frames_with(&mut f, INBOX_FRAMES + 5);
        let r = a.tx_burst(&mut f, &mut batch);
        assert_eq!((r.sent as usize, r.dropped), (INBOX_FRAMES, 5));
        assert_eq!(r.why, None, "a full inbox is tx-full");
        assert_eq!(b.frames_held() as usize, INBOX_FRAMES);
    }
}
