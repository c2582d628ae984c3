//! `show-runtime [clear]` (VPP's `show runtime`): per worker and pipeline node, calls (bursts),
//! vectors (frames), vectors per call, clock ticks and ns per vector, and the node's drops by
//! reason. `clear` prints the counters and then zeroes them (drops are the ports' counters and
//! stay). Read-only: nothing is journalled.

use std::fmt::Write as _;
use std::sync::Arc;

use serde_json::Value;

use super::registry::{CtlError, Registry, Reply};
use crate::worker::{Command, WorkerHandle};

/// Register `show-runtime`.
pub fn register(reg: &mut Registry, worker: Arc<WorkerHandle>) {
    reg.register("show-runtime", "show-runtime [clear]", 0, 1, move |a| {
        let clear = match a.first().map(String::as_str) {
            None => false,
            Some("clear") => true,
            Some(x) => {
                return Err(CtlError::new(format!(
                    "show-runtime: argument '{x}': expected 'clear' or nothing"
                )));
            }
        };
        // The tick rate is calibrated here, once (a 20 ms sleep), not on the worker.
        crate::pipeline::runtime::ticks_per_ns();
        let v = worker
            .call(Command::Runtime { clear })
            .map_err(CtlError::new)?;
        Ok(Reply::new(render(&v), v))
    });
    reg.set_read_only(&["show-runtime"]);
}

/// The text table: one block per worker, one line per node that ran, drops under their node.
pub fn render(v: &Value) -> String {
    let mut s = String::new();
    let unit = if v["clock"] == "tsc" {
        "Clocks"
    } else {
        "Ticks"
    };
    for w in v["workers"].as_array().into_iter().flatten() {
        let core = match w["core"].as_u64() {
            Some(c) => format!("core {c}"),
            None => "unpinned".to_string(),
        };
        let _ = writeln!(s, "Worker {} ({core}):", w["worker"]);
        let _ = writeln!(
            s,
            "{:<18} {:>12} {:>14} {:>12} {:>13} {:>10}",
            "Name",
            "Calls",
            "Vectors",
            "Vectors/Call",
            format!("{unit}/Vector"),
            "ns/Vector"
        );
        for n in w["nodes"].as_array().into_iter().flatten() {
            let drops = n["drops"].as_object().filter(|d| !d.is_empty());
            if n["calls"].as_u64() == Some(0) && drops.is_none() {
                continue;
            }
            let _ = writeln!(
                s,
                "{:<18} {:>12} {:>14} {:>12.2} {:>13.1} {:>10.1}",
                n["name"].as_str().unwrap_or("?"),
                n["calls"].as_u64().unwrap_or(0),
                n["vectors"].as_u64().unwrap_or(0),
                n["vectors_per_call"].as_f64().unwrap_or(0.0),
                n["ticks_per_vector"].as_f64().unwrap_or(0.0),
                n["ns_per_vector"].as_f64().unwrap_or(0.0)
            );
            if let Some(d) = drops {
                let list: Vec<String> = d.iter().map(|(k, c)| format!("{k}={c}")).collect();
                let _ = writeln!(s, "    drops: {}", list.join(" "));
            }
        }
    }
    if v["cleared"] == true {
        let _ = writeln!(s, "(counters cleared)");
    }
    s
}
