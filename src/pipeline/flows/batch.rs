//! Flows that make one decision, and per-burst batching of frames with one key (OVS's
//! `packet_batch_per_flow`, one flow deep).
//!
//! Contract:
//! - [`decision`] is what the action loop would decide for a flow whose actions cannot depend
//!   on the frame or change anything but the flow's counters (`flow::Single`: no action
//!   (drop), or one `NORMAL`, `output:P` (to the ingress port or an unknown port: skipped, so
//!   dropped), `FLOOD` or `IN_PORT`). The exact-match cache keeps each flow's `Single` in its
//!   slot, so a hit does not read the flow's actions. The flow stage takes the decision
//!   without the action loop and credits the flow as the loop would; anything else (None)
//!   runs the loop.
//! - A [`Verdict`] keeps such a decision (or "no flow matched: drop") for a frame's packed key.
//!   The next frame of the burst with the same key takes it without the exact-match cache.
//!   Only frames the cache may answer for (`Classifier::cacheable`) are batched: for them the
//!   first flow is a function of the key words alone, and the classifier does not change while
//!   the flow stage runs a burst (flows that `learn` adds are added after it), so equal words
//!   give the same flow. A frame with other words takes the full path and its decision, if it
//!   is one, becomes the one kept.
//! - Within a run (a frame whose words equal the kept decision's), the frames right after it
//!   are compared by the bytes their words are made of (`words::Raw`, read once from the
//!   run's second frame; IPv4 with a 20-byte header, untagged or one tag) instead of by their
//!   words; equal raw keys give equal words. The first frame that differs ends the run and
//!   takes the whole path.
//! - A batched frame is neither an exact-match cache hit nor a miss (`Emc::hits` counts
//!   lookups).

use crate::fdb::PortId;
use crate::flow::{FlowId, Single, Words};
use crate::ofport::OfPorts;
use crate::packet::Frames;
use crate::pipeline::{Dest, Meta};

/// The decision of a flow whose actions are `single` (see the module docs), if it makes
/// exactly one: Some(None) is a drop (also for no flow, `Single::Drop`). `in_port` is the
/// ingress port; `ports` the bridge's OpenFlow numbers.
#[inline(always)]
pub(super) fn decision(single: Single, ports: &OfPorts, in_port: PortId) -> Option<Option<Dest>> {
    match single {
        Single::Many => None,
        Single::Drop => Some(None),
        Single::Normal => Some(Some(Dest::Normal)),
        Single::Flood => Some(Some(Dest::Flood)),
        Single::All => Some(Some(Dest::All)),
        Single::InPort => Some(Some(Dest::Port(in_port))),
        Single::Output(num) => Some(match ports.port(num) {
            Some(out) if out != in_port => Some(Dest::Port(out)),
            _ => None,
        }),
    }
}

/// Carry out decision `dest` on frame `m` (None: free it, as dropped). Returns whether the
/// frame is kept.
#[inline(always)]
pub(super) fn take(frames: &mut Frames, m: &mut Meta, dest: Option<Dest>) -> bool {
    match dest {
        Some(dest) => {
            m.dest = dest;
            m.raw = dest != Dest::Normal;
            true
        }
        None => {
            frames.free(m.desc.addr);
            m.dest = Dest::Pending;
            false
        }
    }
}

/// The decision kept for the last frame of a burst that took one (see the module docs).
#[derive(Clone, Copy)]
pub(super) struct Verdict {
    /// Its packed key.
    words: Words,
    /// The flow it matched (credited per frame); None: no flow matched.
    pub flow: Option<FlowId>,
    /// Where it went; None: dropped.
    pub dest: Option<Dest>,
}

impl Verdict {
    /// The decision `dest` made by flow `flow` (None: no flow) for a frame with key `words`.
    #[inline(always)]
    pub fn new(words: Words, flow: Option<FlowId>, dest: Option<Dest>) -> Verdict {
        Verdict { words, flow, dest }
    }

    /// Whether a frame with key `words` takes this decision (compared word by word: `==` on
    /// the arrays is a `memcmp` call).
    #[inline(always)]
    pub fn applies(&self, words: &Words) -> bool {
        self.words
            .iter()
            .zip(words)
            .fold(0, |acc, (a, b)| acc | (a ^ b))
            == 0
    }
}
