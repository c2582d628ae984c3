//! Per-burst flow batching (OVS's `packet_batch_per_flow`, one flow deep): a frame with the
//! packet key of the frame before it in its burst takes that frame's decision without the
//! exact-match cache or the action loop.
//!
//! Contract:
//! - Only frames the exact-match cache may answer for (`Classifier::cacheable`) are batched:
//!   for them the first flow is a function of the packed key words alone, and the classifier
//!   does not change while the flow stage runs a burst, so equal words give the same flow.
//! - A [`Verdict`] is used only for flows whose actions cannot depend on the frame or change
//!   anything but the flow's counters: no action, or one `NORMAL`, `output:P`, `FLOOD` or
//!   `IN_PORT` (see [`simple`]), and only when the first frame sent no copies. The next frame
//!   with the same words gets that decision and is credited to that flow (a packet and its own
//!   bytes), as the full path would have done. A frame with other words takes the full path
//!   and its decision becomes the one kept.
//! - A batched frame is neither an exact-match cache hit nor a miss (`Emc::hits` counts only
//!   lookups).

use crate::flow::{Action, Classifier, FlowId, Words};
use crate::pipeline::Dest;

/// Whether a flow with `actions` decides every frame alike and changes nothing but its own
/// counters (see the module docs).
#[inline]
pub(crate) fn simple(actions: &[Action]) -> bool {
    match actions {
        [] => true,
        [a] => matches!(
            a,
            Action::Normal | Action::Output(_) | Action::Flood | Action::InPort
        ),
        _ => false,
    }
}

/// The decision for the last frame of a burst that took the full path (through the cache)
/// and sent no copies.
#[derive(Clone, Copy)]
pub(super) struct Verdict {
    /// Its packed key.
    words: Words,
    /// The flow it matched (credited per frame); None: no flow matched.
    pub flow: Option<FlowId>,
    /// Where it went; None: dropped.
    pub dest: Option<Dest>,
    /// Whether the flow is [`simple`]: looked at when a frame with the same key follows.
    checked: Option<bool>,
}

impl Verdict {
    /// The decision `dest` made by flow `flow` for a frame with key `words`.
    #[inline(always)]
    pub fn new(words: Words, flow: Option<FlowId>, dest: Option<Dest>) -> Verdict {
        Verdict {
            words,
            flow,
            dest,
            checked: None,
        }
    }

    /// Whether a frame with key `words` may take this decision: the same key (compared word
    /// by word: `==` on the arrays is a `memcmp` call) and a [`simple`] flow (looked up once).
    #[inline(always)]
    pub fn applies(&mut self, words: &Words, cls: &Classifier) -> bool {
        if self
            .words
            .iter()
            .zip(words)
            .fold(0, |acc, (a, b)| acc | (a ^ b))
            != 0
        {
            return false;
        }
        let flow = self.flow;
        *self.checked.get_or_insert_with(|| {
            flow.is_none_or(|id| cls.get(id).is_some_and(|f| simple(&f.actions)))
        })
    }
}
