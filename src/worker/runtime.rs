//! `show-runtime` on the worker: its pipeline's per-node counters (see
//! [`crate::pipeline::runtime`]) with the drops of its ports grouped by node, as JSON.

use serde_json::{Value, json};

use super::Worker;
use crate::pipeline::runtime;

impl Worker {
    /// This worker's per-node counters; with `clear`, zeroed after they are read (the drops
    /// too: they are the ports' counters, which `stats` keeps showing whole, less what they
    /// were at the clear).
    pub(crate) fn runtime_json(&mut self, clear: bool) -> Value {
        let nodes = runtime::report(
            self.pipeline.runtime(),
            self.dp.ports().map(|(_, p)| &p.counters.drops),
        );
        if clear {
            let drops = self.dp.ports().map(|(_, p)| &p.counters.drops);
            self.pipeline.clear_runtime(drops);
        }
        json!({
            "workers": [{
                "worker": self.share.index,
                "core": self.core,
                "nodes": nodes,
            }],
            "clock": if cfg!(target_arch = "x86_64") { "tsc" } else { "ns" },
            "ticks_per_ns": runtime::ticks_per_ns(),
            "cleared": clear,
        })
    }
}
