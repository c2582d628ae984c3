//! Rx queue assignment on the worker: `set-port PORT rxq_affinity=QUEUE:CORE,...` and the
//! per-worker queue list that `show` and `rxq-show` print.
//!
//! Contract:
//! - Which worker binds which queue is [`crate::port::afxdp::rxq::owners`]; every worker applies
//!   `set-port` (see `set`), so each reopens the port with its new share.
//! - `set-port` checks everything first (the port exists and is AF_XDP, the text parses, every
//!   core runs a worker) and changes nothing on an error, which names the field. Then the new
//!   affinity is the port's configuration (`save-config`, `--db`) and, if the port is up, its
//!   sockets are closed and it is reopened from that configuration on the port thread, as a
//!   netdev that came back is (`worker::life`): the port keeps its id, flows and counters, is
//!   `down` ("rx queues reassigned") for the moment the sockets take to move, and MACs learned
//!   on it are learned again. A queue another worker still holds is bound once that worker let
//!   it go (the open retries EBUSY). An open already under way (a link flap, an earlier
//!   `set-port`) is superseded: its answer is dropped and the port opens with the new share.
//!   Setting the affinity it already has changes nothing; with one worker the pins are kept in
//!   the configuration but move nothing (one worker polls every queue).

use serde_json::{Value, json};

use super::Worker;
use super::life::LinkState;
use crate::port::PortKind;

impl Worker {
    /// `set-port PORT rxq_affinity=...` (None: round-robin again). See the module documentation.
    pub(crate) fn set_port_rxq(
        &mut self,
        port: &str,
        affinity: Option<String>,
    ) -> Result<Value, String> {
        let id = self
            .dp
            .port_id(port)
            .ok_or_else(|| format!("port: no port named '{port}'"))?;
        let mut spec =
            self.specs.ports.get(&id).cloned().ok_or_else(|| {
                format!("port: '{port}' has no device (in-memory or tunnel port)")
            })?;
        if spec.kind != PortKind::Afxdp {
            return Err(format!(
                "rxq_affinity: port '{port}' is type {}; only afxdp ports have rx queues to pin",
                spec.kind
            ));
        }
        let affinity = affinity.filter(|a| !a.trim().is_empty());
        if spec.rxq_affinity == affinity {
            return Ok(json!({"port": port, "rxq_affinity": affinity, "reopened": false}));
        }
        spec.rxq_affinity = affinity;
        spec.validate()?;
        self.share.pins(&spec)?;
        self.specs.ports.insert(id, spec.clone());
        // One worker polls every queue whatever the pins say: nothing to move.
        let moves = self.share.workers() > 1;
        let (up, opening) = match self.life.get_mut(id as usize) {
            Some(Some(l)) => {
                l.spec = Some(spec.clone());
                (l.state == LinkState::Up, l.opening.is_some())
            }
            _ => (false, false),
        };
        if moves && up {
            self.set_state(id, LinkState::Down, "rx queues reassigned".into());
            self.reopen(id);
        } else if moves && opening {
            // An open under way binds the old share: its answer is dropped (`reopened` wants
            // the new attempt) and the port opens again with the new one.
            if let Some(Some(l)) = self.life.get_mut(id as usize) {
                l.opening = None;
            }
            self.reopen(id);
        }
        Ok(json!({
            "port": port,
            "rxq_affinity": spec.rxq_affinity,
            "reopened": moves && (up || opening),
        }))
    }

    /// This worker's rx queues, port by port, for `show` and `rxq-show`: ports with queues
    /// of their own only (AF_XDP).
    pub(crate) fn rxqs_json(&self) -> Value {
        let mut out = Vec::new();
        for (id, p) in self.ports.iter().enumerate() {
            let Some(p) = p else { continue };
            let Some(st) = self.dp.port(id as u16) else {
                continue;
            };
            let queues = p.rx_queues();
            if queues.is_empty() && p.tx_by_worker().is_none() {
                continue;
            }
            out.push(json!({
                "port": st.name,
                "queues": queues
                    .iter()
                    .map(|(q, n)| json!({"queue": q, "rx_packets": n}))
                    .collect::<Vec<_>>(),
            }));
        }
        Value::Array(out)
    }
}
