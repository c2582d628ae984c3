//! The mechanics `gro` (TCP segments) and `uso` (VXLAN datagrams) share when they merge the
//! frames of an output queue: runs of adjacent mergeable units, the head moved into a large
//! buffer when the second unit joins, each further unit's payload appended and its frame freed,
//! the head's headers rewritten once the run ends. A protocol's rules are a [`Merge`].
//!
//! Contract: the queue keeps its order; frames that are not mergeable, and runs of one, are
//! left exactly as they were; without a free large buffer a run stays unmerged.

use crate::packet::{Desc, Frames, Offload};

/// One protocol's merge rules.
pub(super) trait Merge {
    /// Where a mergeable unit's headers and payload are.
    type Unit: Copy;
    /// The unit's layout if frame `d` (bytes `data`) may be merged at all.
    fn unit(&self, data: &[u8], d: Desc) -> Option<Self::Unit>;
    /// Offset of the unit's payload in its frame, and its length.
    fn payload(u: &Self::Unit) -> (usize, usize);
    /// True if `next` (bytes `nb`) may join the run headed by `head` (bytes `hb`), which holds
    /// `len` payload bytes in `count` units; checks what the second unit needs of the head too.
    fn joins(
        &self,
        head: (&[u8], &Self::Unit),
        next: (&[u8], &Self::Unit),
        len: usize,
        count: usize,
    ) -> bool;
    /// True if nothing may join the run of `head` after `u` (the head itself, or a unit that
    /// just joined).
    fn ends(&self, head: &Self::Unit, u: &Self::Unit) -> bool;
    /// Rewrite the headers of the merged frame `b` (`len` payload bytes, `last` its last
    /// unit); returns its offload state.
    fn finish(&self, b: &mut [u8], head: &Self::Unit, last: &Self::Unit, len: usize) -> Offload;
}

/// An open run: where its head sits in the (compacted) queue and what it holds so far.
struct Run<U> {
    at: usize,
    head: U,
    last: U,
    /// Payload bytes so far.
    len: usize,
    /// Units merged (1: the head alone, still in its own frame).
    count: usize,
    /// No further unit may join.
    closed: bool,
}

/// Merge the runs of `q` in place by `m`'s rules; returns the units that went into merged
/// frames.
pub(super) fn coalesce<M: Merge>(m: &M, frames: &mut Frames, q: &mut Vec<Desc>) -> u64 {
    let mut w = 0;
    let mut run: Option<Run<M::Unit>> = None;
    let mut merged = 0;
    for r in 0..q.len() {
        let d = q[r];
        let u = m.unit(frames.data(d), d);
        if let (Some(u), Some(cur)) = (u, run.as_mut())
            && !cur.closed
            && join(m, frames, q, cur, d, &u)
        {
            continue;
        }
        if let Some(cur) = run.take() {
            merged += finish(m, frames, q, &cur);
        }
        q[w] = d;
        run = u.map(|u| Run {
            at: w,
            head: u,
            last: u,
            len: M::payload(&u).1,
            count: 1,
            closed: m.ends(&u, &u),
        });
        w += 1;
    }
    if let Some(cur) = run.take() {
        merged += finish(m, frames, q, &cur);
    }
    q.truncate(w);
    merged
}

/// Append unit `u` (frame `d`) to run `cur` if it may join; false (nothing changed) if not.
fn join<M: Merge>(
    m: &M,
    frames: &mut Frames,
    q: &mut [Desc],
    cur: &mut Run<M::Unit>,
    d: Desc,
    u: &M::Unit,
) -> bool {
    let head = q[cur.at];
    let hb = frames.data(head);
    if !m.joins((hb, &cur.head), (frames.data(d), u), cur.len, cur.count) {
        return false;
    }
    if cur.count == 1 {
        // The second unit: move the head into a large buffer.
        let Some(mut big) = frames.alloc_big() else {
            return false;
        };
        big.len = head.len;
        frames.copy_bytes(head.addr, big.addr, head.len as usize);
        frames.free(head.addr);
        q[cur.at] = big;
    }
    let mut head = q[cur.at];
    let (at, plen) = M::payload(u);
    let tail = M::payload(&cur.head).0 + cur.len;
    frames.copy_bytes(d.addr + at as u64, head.addr + tail as u64, plen);
    frames.free(d.addr);
    head.len = (tail + plen) as u32;
    q[cur.at] = head;
    cur.len += plen;
    cur.count += 1;
    cur.last = *u;
    cur.closed = m.ends(&cur.head, u);
    true
}

/// Rewrite a merged run's headers; returns the units it holds (0 for a lone unit, left as it
/// was).
fn finish<M: Merge>(m: &M, frames: &mut Frames, q: &mut [Desc], cur: &Run<M::Unit>) -> u64 {
    if cur.count < 2 {
        return 0;
    }
    let mut d = q[cur.at];
    d.ol = m.finish(frames.data_mut(d), &cur.head, &cur.last, cur.len);
    q[cur.at] = d;
    cur.count as u64
}
