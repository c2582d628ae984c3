//! A port a worker has no queue of its own on (several workers): a TAP made outside uvs
//! without `multi_queue`, which only one fd can hold. The worker receives nothing there; what
//! it sends out of the port is handed to the worker that holds the device (`worker::relay`
//! wraps this port, see [`Port::tx_by_worker`]).
//!
//! Contract: no fd, no frame, no kernel resource; `tx_burst` drops (the relay never calls it);
//! MTU and ifindex are read from the netdev when opened.

use std::os::fd::RawFd;

use super::{Port, PortKind, TxResult};
use crate::packet::{Desc, Frames};

/// See the module documentation.
pub struct QueuelessPort {
    kind: PortKind,
    ifindex: u32,
    mtu: u32,
    by: usize,
    name: String,
}

impl QueuelessPort {
    /// Port `name` (a netdev of `kind`), transmitted by worker `by`. None if the netdev does
    /// not exist.
    pub fn new(name: &str, kind: PortKind, by: usize) -> Option<QueuelessPort> {
        let (ifindex, _up, mtu) = super::link::query(name)?;
        Some(QueuelessPort {
            kind,
            ifindex,
            mtu,
            by,
            name: name.to_string(),
        })
    }
}

impl Port for QueuelessPort {
    fn kind(&self) -> PortKind {
        self.kind
    }
    fn rx_burst(&mut self, _: &mut Frames, _: &mut Vec<Desc>, _: usize) -> usize {
        0
    }
    fn tx_burst(&mut self, frames: &mut Frames, batch: &mut Vec<Desc>) -> TxResult {
        TxResult::drop_all(frames, batch)
    }
    fn service(&mut self, _: &mut Frames) {}
    fn poll_fds(&self, _: &mut Vec<RawFd>) {}
    fn mtu(&self) -> u32 {
        self.mtu
    }
    fn set_mtu(&mut self, mtu: u32) {
        self.mtu = mtu;
    }
    fn ifindex(&self) -> u32 {
        self.ifindex
    }
    fn details(&self) -> String {
        format!(
            "{} attached by worker {} (no queue here: single-queue device)",
            self.name, self.by
        )
    }
    fn tx_by_worker(&self) -> Option<usize> {
        Some(self.by)
    }
    fn close(&mut self, _: &mut Frames) {}
}
