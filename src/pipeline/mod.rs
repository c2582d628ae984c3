//! The packet pipeline: one burst from one port runs through each stage before the next (VPP's
//! vector processing): ingress (parse, VLAN, checksum completion) -> learn -> forward (FDB
//! lookup, or to the gateway) -> l3 (gateway ARP/ICMP, routing) -> output (egress VLAN, MTU,
//! per-port queues).
//!
//! Contract: `Pipeline::process` consumes every descriptor of the burst. Each frame ends up
//! queued in `Datapath::out[port]` for one or more ports (flooding copies it) or is dropped:
//! freed and counted with a `DropReason`. No allocation, no IO, no clock: `now` is passed in.

mod csum;
mod ingress;
mod l2;
mod l3;
mod nat;
mod output;

use crate::datapath::{BATCH, Datapath};
use crate::fdb::PortId;
use crate::packet::{Desc, Frames};

/// Where a frame goes after the forwarding stage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Dest {
    /// Not decided yet.
    Pending,
    /// One port.
    Port(PortId),
    /// Every other port of the bridge carrying the VLAN.
    Flood,
    /// To the bridge's gateway (the router stage takes it).
    Router,
    /// Routed or generated: deliver within this bridge by its FDB (no ingress port to skip).
    Bridge(u16),
}

/// Per-frame metadata carried between stages.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Meta {
    pub desc: Desc,
    /// VLAN the frame belongs to (0: untagged domain).
    pub vlan: u16,
    /// The frame carries an 802.1Q tag now.
    pub tagged: bool,
    pub dst: u64,
    pub src: u64,
    /// EtherType after any VLAN tag.
    pub ethertype: u16,
    /// Offset of the L3 header from the frame start (14 or 18).
    pub l3: u8,
    pub dest: Dest,
}

/// Reusable per-worker scratch space for bursts.
pub struct Pipeline {
    meta: Vec<Meta>,
    /// Frames the router made during this burst (ARP, ICMP).
    generated: Vec<Meta>,
}

impl Default for Pipeline {
    fn default() -> Self {
        Pipeline {
            meta: Vec::with_capacity(BATCH * 4),
            generated: Vec::with_capacity(BATCH * 2),
        }
    }
}

impl Pipeline {
    /// A pipeline with preallocated scratch space.
    pub fn new() -> Pipeline {
        Pipeline::default()
    }

    /// Process one burst received on `in_port`; drains `batch`.
    pub fn process(
        &mut self,
        dp: &mut Datapath,
        frames: &mut Frames,
        in_port: PortId,
        batch: &mut Vec<Desc>,
        now: u64,
    ) {
        self.meta.clear();
        let Some(bridge) = ingress::run(dp, frames, in_port, batch, &mut self.meta) else {
            return;
        };
        l2::learn(dp, bridge, in_port, &self.meta, now);
        l2::forward(dp, frames, bridge, in_port, &mut self.meta);
        self.generated.clear();
        l3::run(
            dp,
            frames,
            bridge,
            in_port,
            &mut self.meta,
            &mut self.generated,
            now as u32,
        );
        output::run(dp, frames, bridge, in_port, &self.meta);
        output::run(dp, frames, bridge, output::NO_PORT, &self.generated);
    }
}
