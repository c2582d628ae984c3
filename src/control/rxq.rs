//! `set-port PORT rxq_affinity=QUEUE:CORE[,...]` (OVS's `other_config:pmd-rxq-affinity`) and
//! `rxq-show` (OVS's `dpif-netdev/pmd-rxq-show`): which worker polls which rx queue of each
//! AF_XDP port, with the frames each queue received since its socket was opened. The
//! assignment rules are `port::afxdp::rxq`; the worker side is `worker::rxq`.

use std::fmt::Write as _;
use std::sync::Arc;

use serde_json::Value;

use super::registry::{CtlError, Registry, Reply};
use crate::worker::{Command, WorkerHandle};

/// Register `set-port` and `rxq-show`.
pub fn register(reg: &mut Registry, worker: Arc<WorkerHandle>) {
    let w = worker.clone();
    reg.register(
        "set-port",
        "set-port PORT rxq_affinity=QUEUE:CORE[,QUEUE:CORE...] (empty: round-robin)",
        2,
        2,
        move |a| {
            let affinity = match a[1].split_once('=') {
                Some(("rxq_affinity", v)) => Some(v.to_string()),
                _ => {
                    return Err(CtlError::new(format!(
                        "'{}': set-port takes rxq_affinity=QUEUE:CORE[,QUEUE:CORE...]",
                        a[1]
                    )));
                }
            };
            let v = w
                .call(Command::SetPortRxq {
                    port: a[0].clone(),
                    affinity,
                })
                .map_err(CtlError::new)?;
            Ok(Reply::new(String::new(), v))
        },
    );
    let w = worker;
    reg.register("rxq-show", "rxq-show", 0, 0, move |_| {
        let v = w.call(Command::Show).map_err(CtlError::new)?;
        let workers = match v["workers"].as_array() {
            Some(all) => all.clone(),
            None => vec![v["worker"].clone()],
        };
        let data: Vec<Value> = workers
            .iter()
            .enumerate()
            .map(|(i, w)| serde_json::json!({"worker": i, "core": w["core"], "rxqs": w["rxqs"]}))
            .collect();
        let data = Value::Array(data);
        Ok(Reply::new(render(&data), data))
    });
    reg.set_read_only(&["rxq-show"]);
}

/// One block per worker, one line per (port, queue); a port this worker has no queue of is
/// listed as such (its frames leave through another worker).
pub fn render(v: &Value) -> String {
    let mut s = String::new();
    for w in v.as_array().into_iter().flatten() {
        let core = match w["core"].as_u64() {
            Some(c) => format!("core {c}"),
            None => "unpinned".to_string(),
        };
        let _ = writeln!(s, "worker {} ({core}):", w["worker"]);
        for p in w["rxqs"].as_array().into_iter().flatten() {
            let queues = p["queues"].as_array().cloned().unwrap_or_default();
            if queues.is_empty() {
                let _ = writeln!(
                    s,
                    "  port: {:<16} no rx queue here",
                    p["port"].as_str().unwrap_or("")
                );
            }
            for q in queues {
                let _ = writeln!(
                    s,
                    "  port: {:<16} queue-id: {:>3}  rx frames: {}",
                    p["port"].as_str().unwrap_or(""),
                    q["queue"].as_u64().unwrap_or(0),
                    q["rx_packets"]
                );
            }
        }
    }
    s
}
