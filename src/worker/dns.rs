//! The worker's side of DNS: the name registry's writes (control requests, so names are part
//! of the running configuration) and the punt path's channels (see `crate::dns::punt`).
//!
//! Contract: names are registered only on existing bridges and leave with their bridge; the
//! service's replies are drained at most [`REPLIES_PER_ITERATION`] per loop iteration and sent
//! from the gateway of the bridge they belong to.

use std::net::Ipv4Addr;

use crossbeam_channel::{Receiver, Sender};
use serde_json::{Value, json};

use super::Worker;
use crate::dns::DnsSpec;
use crate::dns::punt::{Punted, Reply};

/// Replies sent per loop iteration at most.
pub const REPLIES_PER_ITERATION: usize = 256;

/// DNS requests to the worker.
pub enum DnsCmd {
    /// Register (or replace) a name.
    Add(DnsSpec),
    /// Remove a name (only if it has `ip`, when given).
    Del {
        /// Bridge name.
        bridge: String,
        /// The name.
        name: String,
        /// Its address, if the removal is conditional.
        ip: Option<Ipv4Addr>,
    },
    /// The records (of one bridge) and the punt counters.
    Show(Option<String>),
    /// Connect the DNS service: queries go to `punted`, answers come from `replies`.
    Connect {
        /// Toward the service.
        punted: Sender<Punted>,
        /// From the service.
        replies: Receiver<Reply>,
    },
}

impl Worker {
    /// Apply a DNS request.
    pub(crate) fn dns_apply(&mut self, cmd: DnsCmd) -> Result<Value, String> {
        match cmd {
            DnsCmd::Add(spec) => {
                self.bridge_id(&spec.bridge)?;
                let old = self
                    .dns_names
                    .write()
                    .map_err(|e| e.to_string())?
                    .add(&spec)?;
                Ok(
                    json!({"bridge": spec.bridge, "name": spec.name.to_ascii_lowercase(),
                    "ip": spec.ip, "replaced": old.map(|a| a.to_string())}),
                )
            }
            DnsCmd::Del { bridge, name, ip } => {
                self.bridge_id(&bridge)?;
                let gone = self
                    .dns_names
                    .write()
                    .map_err(|e| e.to_string())?
                    .del(&bridge, &name, ip);
                // Nothing deleted is an error, as `ovs-vsctl del-port` of a missing port is
                // (CNI's DEL ignores it); it answered success (found trying uvs as a new user).
                let Some(gone) = gone else {
                    return Err(match ip {
                        Some(ip) => format!("name: no '{name}' at {ip} on bridge '{bridge}'"),
                        None => format!("name: no '{name}' on bridge '{bridge}'"),
                    });
                };
                Ok(json!({"bridge": bridge, "name": name, "deleted": gone.to_string()}))
            }
            DnsCmd::Show(bridge) => {
                if let Some(b) = &bridge {
                    self.bridge_id(b)?;
                }
                let names = self.dns_names.read().map_err(|e| e.to_string())?;
                Ok(json!({
                    "records": names.specs(bridge.as_deref()),
                    "punt": self.dp.punt.counters,
                    "service": self.dp.punt.enabled(),
                }))
            }
            DnsCmd::Connect { punted, replies } => {
                self.dp.punt.connect(Some(punted));
                self.dns_replies = Some(replies);
                Ok(json!({"connected": true}))
            }
        }
    }

    /// Forget the names of a deleted bridge.
    pub(crate) fn dns_forget_bridge(&mut self, name: &str) {
        if let Ok(mut n) = self.dns_names.write() {
            n.del_bridge(name);
        }
    }

    /// The registered names, for the running configuration.
    pub(crate) fn dns_specs(&self) -> Vec<DnsSpec> {
        self.dns_names
            .read()
            .map(|n| n.specs(None))
            .unwrap_or_default()
    }

    /// Send the DNS service's replies that are waiting (bounded). Returns how many were sent.
    pub(crate) fn dns_replies(&mut self) -> usize {
        let Some(rx) = &self.dns_replies else {
            return 0;
        };
        let mut sent = 0;
        for r in rx.try_iter().take(REPLIES_PER_ITERATION) {
            if crate::pipeline::send_reply(&mut self.dp, &mut self.frames, &r) {
                self.dp.punt.counters.replies += 1;
                sent += 1;
            } else {
                self.dp.punt.counters.replies_dropped += 1;
            }
        }
        sent
    }
}
