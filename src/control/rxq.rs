//! `set-port PORT rxq_affinity=QUEUE:CORE[,...]` (OVS's `other_config:pmd-rxq-affinity`),
//! `rxq-show` (OVS's `dpif-netdev/pmd-rxq-show`: which worker polls which rx queue of each
//! AF_XDP port, with the frames each queue received since its socket was opened) and
//! `rxq-rebalance [SECONDS]` (OVS's `dpif-netdev/pmd-rxq-rebalance` with
//! `pmd-rxq-assign=cycles`, measured in frames rather than cycles: uvs counts frames per queue,
//! not cycles).
//!
//! Contract of `rxq-rebalance`: the queues' loads over SECONDS (at most 5: the command is a
//! configuration change and holds the configuration lock meanwhile) decide a new assignment,
//! applied only if it lowers the busiest worker's load by 25 % (OVS's improvement threshold)
//! and that worker receives at least 1000 frames/s. It is kept as each moved port's
//! `rxq_affinity` (shown by `save-config`; `set-port P rxq_affinity=` returns a port to
//! round-robin, and so does a `--config` reload of a file without the key). A port down on
//! some worker shows only the queues the others hold. The assignment rules are
//! `port::afxdp::rxq`; the worker side is `worker::rxq`.

use std::fmt::Write as _;
use std::sync::Arc;

use serde_json::Value;

use super::registry::{CtlError, Registry, Reply};
use crate::worker::{Command, WorkerHandle};

/// Whether every queue `affinity` pins exists on netdev `port` (its `rx-*` queues in sysfs,
/// read here, off the workers). A port whose netdev is not there (pending) is not checked.
pub fn check_queues(port: &str, affinity: Option<&str>) -> Result<(), CtlError> {
    let Some(text) = affinity else {
        return Ok(());
    };
    let pins = crate::port::afxdp::rxq::parse_affinity(text).map_err(CtlError::new)?;
    // A core this machine lacks is refused as `--cores` refuses it, with one worker too
    // (where the pins choose nothing until a restart with several): found trying uvs as a new
    // user, core 7 of a 2-CPU machine was saved, and the port was left out at the next start.
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    if let Some((_, core)) = pins.iter().find(|(_, c)| *c >= cpus) {
        return Err(CtlError::new(format!(
            "rxq_affinity: core {core} does not exist (this machine has {cpus})"
        )));
    }
    let Ok(n) = crate::port::afxdp::rx_queues(port) else {
        return Ok(());
    };
    match pins.iter().find(|(q, _)| *q >= n) {
        Some((q, _)) => Err(CtlError::new(format!(
            "rxq_affinity: queue {q}: '{port}' has {n} rx queue(s) (0 to {})",
            n - 1
        ))),
        None => Ok(()),
    }
}

/// Register `set-port` and `rxq-show`.
pub fn register(reg: &mut Registry, worker: Arc<WorkerHandle>) {
    let w = worker.clone();
    reg.register(
        "set-port",
        "set-port PORT [vlan=N|none] [trunks=N,M|all] [vlan_mode=MODE] [mac_limit=N|none] [flood_rate=N[/BURST]|off|default] [peer=PORT] | rxq_affinity=QUEUE:CORE[,QUEUE:CORE...] (empty: round-robin)",
        2,
        6,
        move |a| {
            let affinity = match a[1].split_once('=') {
                Some(("rxq_affinity", v)) if a.len() == 2 => Some(v.to_string()),
                Some(("rxq_affinity", _)) => {
                    return Err(CtlError::new(
                        "rxq_affinity: set it alone (it reopens the port)".to_string(),
                    ));
                }
                _ => {
                    // VLAN configuration, MAC limit and flood budget, changed in place.
                    let options = crate::worker::PortOptions::parse(&a[1..])
                        .map_err(CtlError::new)?;
                    let v = w
                        .call(Command::SetPortOptions {
                            port: a[0].clone(),
                            options,
                        })
                        .map_err(CtlError::new)?;
                    return Ok(Reply::new(String::new(), v));
                }
            };
            check_queues(&a[0], affinity.as_deref())?;
            let v = w
                .call(Command::SetPortRxq {
                    port: a[0].clone(),
                    affinity,
                })
                .map_err(CtlError::new)?;
            Ok(Reply::new(String::new(), v))
        },
    );
    let w = worker.clone();
    reg.register("rxq-show", "rxq-show", 0, 0, move |_| {
        let data = snapshot(&w)?;
        Ok(Reply::new(render(&data), data))
    });
    reg.set_read_only(&["rxq-show"]);
    let w = worker;
    reg.register(
        "rxq-rebalance",
        "rxq-rebalance [SECONDS] (measure each queue's load for SECONDS, default 1, then reassign)",
        0,
        1,
        move |a| {
            let secs: f64 = match a.first() {
                None => 1.0,
                Some(s) => s
                    .parse()
                    .ok()
                    .filter(|x: &f64| (0.1..=5.0).contains(x))
                    .ok_or_else(|| {
                        CtlError::new(format!("SECONDS: '{s}' (a number from 0.1 to 5)"))
                    })?,
            };
            rebalance(&w, secs)
        },
    );
}

/// Each worker's core and rx queues (`rxq-show`'s data).
fn snapshot(w: &WorkerHandle) -> Result<Value, CtlError> {
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
    Ok(Value::Array(data))
}

/// Every (port, queue, worker, frames received) in a snapshot.
fn queues(v: &Value) -> Vec<(String, u32, usize, u64)> {
    let mut out = Vec::new();
    for (i, w) in v.as_array().into_iter().flatten().enumerate() {
        for p in w["rxqs"].as_array().into_iter().flatten() {
            let port = p["port"].as_str().unwrap_or("").to_string();
            for q in p["queues"].as_array().into_iter().flatten() {
                let (Some(queue), Some(n)) = (q["queue"].as_u64(), q["rx_packets"].as_u64()) else {
                    continue;
                };
                out.push((port.clone(), queue as u32, i, n));
            }
        }
    }
    out
}

/// Keep the current assignment unless the new one lowers the busiest worker's load by at least
/// this share (OVS's `pmd-auto-lb-improvement-threshold`, 25 % by default): moving a queue
/// reopens its port's sockets, which is not worth a few percent.
const IMPROVEMENT_PCT: u64 = 25;
/// Nor below this load on the busiest worker (frames/s): a nearly idle switch (a few neighbour
/// solicitations) has nothing worth moving.
const MIN_RATE: f64 = 1000.0;

/// `rxq-rebalance`: OVS's `pmd-rxq-rebalance` with `pmd-rxq-assign=cycles`, by frames: sample
/// every queue's receive count over `secs`, assign queues by [`crate::port::afxdp::rxq::balance`]
/// and, if that lowers the busiest worker's load by [`IMPROVEMENT_PCT`], pin them (`set-port
/// rxq_affinity`) on the ports whose assignment changes. A port that fails to move is reported
/// and the others still move (the answer lists both).
fn rebalance(w: &WorkerHandle, secs: f64) -> Result<Reply, CtlError> {
    let before = snapshot(w)?;
    let cores: Vec<Option<u64>> = before
        .as_array()
        .into_iter()
        .flatten()
        .map(|w| w["core"].as_u64())
        .collect();
    if cores.len() < 2 {
        return Err(CtlError::new(
            "rxq-rebalance: one worker polls every queue; nothing to balance (run with --cores)",
        ));
    }
    if cores.iter().any(Option::is_none) {
        return Err(CtlError::new(
            "rxq-rebalance: workers are not pinned to cores (rxq_affinity names cores)",
        ));
    }
    let t0 = std::time::Instant::now();
    std::thread::sleep(std::time::Duration::from_secs_f64(secs));
    let after = snapshot(w)?;
    let measured = t0.elapsed().as_secs_f64();
    let old = queues(&before);
    let now = queues(&after);
    // The same socket in both samples: same port, queue and worker, and a count that did not go
    // back. Otherwise the socket was opened during the window and all its count is in it.
    let loads: Vec<u64> = now
        .iter()
        .map(|(p, q, wk, n)| {
            match old
                .iter()
                .find(|(op, oq, ow, _)| op == p && oq == q && ow == wk)
            {
                Some((_, _, _, o)) if o <= n => n - o,
                _ => *n,
            }
        })
        .collect();
    let to = crate::port::afxdp::rxq::balance(&loads, cores.len() as u32);
    let from: Vec<u32> = now.iter().map(|(_, _, wk, _)| *wk as u32).collect();
    let port_of: Vec<usize> = now
        .iter()
        .map(|(p, ..)| now.iter().position(|(x, ..)| x == p).unwrap_or(0))
        .collect();
    let to = crate::port::afxdp::rxq::sticky(&loads, &from, to, &port_of, cores.len() as u32);
    let busiest = |owner: &dyn Fn(usize) -> usize| {
        let mut t = vec![0u64; cores.len()];
        for (i, l) in loads.iter().enumerate() {
            t[owner(i)] += l;
        }
        t.into_iter().max().unwrap_or(0)
    };
    let (was, will) = (busiest(&|i| now[i].2), busiest(&|i| to[i] as usize));
    let busy = was as f64 / measured >= MIN_RATE;
    let apply = busy && will * 100 <= was * (100 - IMPROVEMENT_PCT);
    let mut ports: Vec<&str> = now.iter().map(|(p, ..)| p.as_str()).collect();
    ports.sort_unstable();
    ports.dedup();
    let mut text = String::new();
    let mut rows = Vec::new();
    let mut errors = Vec::new();
    for port in ports {
        let mut mine: Vec<(u32, usize, usize, u64, u64)> = now
            .iter()
            .zip(&to)
            .zip(&loads)
            .filter(|(((p, ..), _), _)| p == port)
            .map(|(((_, q, from, n), w), l)| (*q, *from, *w as usize, *l, *n))
            .collect();
        mine.sort_unstable();
        for (q, from, w, l, n) in &mine {
            let rate = *l as f64 / measured;
            let w = if apply { *w } else { *from };
            let _ = writeln!(
                text,
                "port: {port:<16} queue-id: {q:>3}  {rate:>12.0} frames/s  worker {from} -> {w}"
            );
            rows.push(
                serde_json::json!({"port": port, "queue": q, "load": l, "rx_total": n,
                "from": from, "to": w}),
            );
        }
        if apply && mine.iter().any(|(_, from, w, ..)| from != w) {
            let affinity: Vec<String> = mine
                .iter()
                .map(|(q, _, w, ..)| format!("{q}:{}", cores[*w].expect("checked")))
                .collect();
            if let Err(e) = w_set(w, port, affinity.join(",")) {
                let _ = writeln!(text, "port {port} not moved: {e}");
                errors.push(format!("{port}: {e}"));
            }
        }
    }
    if rows.is_empty() {
        text.push_str("no AF_XDP rx queues to balance\n");
    }
    let _ = writeln!(
        text,
        "busiest worker: {was} frames in {measured:.1} s now, {will} after: {}",
        if apply {
            "applied".to_string()
        } else if !busy {
            format!("kept (under {MIN_RATE} frames/s)")
        } else {
            format!("kept (less than {IMPROVEMENT_PCT}% better)")
        }
    );
    Ok(Reply::new(
        text,
        serde_json::json!({"seconds": measured, "queues": rows, "busiest_before": was,
            "busiest_after": will, "applied": apply, "errors": errors}),
    ))
}

fn w_set(w: &WorkerHandle, port: &str, affinity: String) -> Result<Value, CtlError> {
    w.call(Command::SetPortRxq {
        port: port.to_string(),
        affinity: Some(affinity),
    })
    .map_err(|e| CtlError::new(format!("rxq-rebalance: port {port}: {e}")))
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

#[cfg(test)]
mod tests {
    use super::check_queues;

    /// A core the machine lacks is refused whatever the netdev (here none: not checked for
    /// queues); an existing one passes.
    #[test]
    fn a_core_the_machine_lacks_is_refused() {
        let e = check_queues("uvs-no-such-dev", Some("0:4096")).unwrap_err();
        assert!(e.to_string().contains("core 4096 does not exist"), "{e}");
        check_queues("uvs-no-such-dev", Some("0:0")).unwrap();
        check_queues("uvs-no-such-dev", None).unwrap();
    }
}
