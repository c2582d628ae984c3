//! DNS service discovery on the gateways (Docker's embedded DNS).
//!
//! Each bridge with a gateway answers DNS on its gateway address, UDP and TCP port 53: names
//! registered for that bridge (`dns-add`, the CNI plugin) resolve to their addresses (A, and PTR
//! for their `in-addr.arpa` names); names of other bridges do not; other names are forwarded to
//! the upstream resolver (the host's, from /etc/resolv.conf, or `--dns-upstream`).
//!
//! The pieces, datapath first:
//! - [`punt`]: the worker's L3 stage copies a packet sent to its ingress bridge's own gateway on
//!   port 53 to a bounded channel (per-source rate limit, drops counted with a reason), and sends
//!   the service's replies from the gateway. No IO in the worker.
//! - [`service`]: a control-plane thread that parses the packets, answers through [`answer`]
//!   (the IO-free core: query bytes in, answer or forward out, hickory-proto for the protocol),
//!   speaks TCP through [`tcp`] (smoltcp, `Medium::Ip`, one interface per bridge) and forwards
//!   over a UDP socket to the upstream; it wakes the worker for every batch of replies.
//! - [`registry`]: the names, per bridge; the worker writes it (control requests, so it is part
//!   of the running configuration and the database), the service reads it.

pub mod answer;
pub mod commands;
pub mod punt;
pub mod registry;
pub mod service;
pub mod tcp;

#[cfg(test)]
mod tests;

pub use registry::{DnsSpec, Registry};

/// Start the DNS service for `worker` and connect the worker's punt path to it.
pub fn start(
    worker: &crate::worker::WorkerHandle,
    opts: service::ServiceOptions,
) -> Result<service::DnsService, String> {
    let (punt_tx, punt_rx) = crossbeam_channel::bounded(punt::QUEUE);
    let (reply_tx, reply_rx) = crossbeam_channel::bounded(punt::QUEUE);
    let waker = worker.waker();
    let svc = service::start(
        punt_rx,
        reply_tx,
        std::sync::Arc::new(move || waker.wake()),
        worker.dns_names(),
        opts,
    )
    .map_err(|e| format!("cannot start the DNS service: {e}"))?;
    worker.call(crate::worker::Command::Dns(
        crate::worker::DnsCmd::Connect {
            punted: punt_tx,
            replies: reply_rx,
        },
    ))?;
    Ok(svc)
}
