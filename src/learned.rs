//! Learned state shared between workers: what one worker learns from the frames it receives
//! (a new or moved MAC, a neighbour's ARP) is applied by every other worker.
//!
//! Contract:
//! - With several workers each one keeps its own FDB and neighbour table (no lock on the fast
//!   path), but the kernel spreads a port's traffic over the workers by flow hash, so the two
//!   directions of a conversation are often received by different workers. Without sharing,
//!   each would flood what only the other learned, forever, and a gateway would wait for ARP
//!   replies another worker received.
//! - A worker that shares (`Datapath::learned_out` is `Some`) records, while it processes a
//!   burst, every MAC that is new or moved in an FDB or behind a VXLAN tunnel's remote VTEP, every MAC refreshed more than
//!   [`RENEW_S`] seconds after its last sighting (so the others' copies do not age out while
//!   the entry is alive), and every ARP its gateways see. The worker sends the records to its
//!   peers after the burst; a peer applies them between two bursts with [`apply`], without
//!   recording them again and without counting them as its own learning (counters are summed
//!   over the workers on read). One worker alone records nothing (`None`): no cost.
//! - Flow timeouts: with several workers only worker 0 expires flows (idle and hard). The
//!   others report, once a second, the idle-timed flows they hit (`FlowUsed`, credited to
//!   worker 0's copy) and remove what worker 0 reports expired (`FlowExpired`). So a flow busy
//!   on any worker stays, and every worker drops it at once.
//! - Records carry datapath ids (bridge, port, flow): every worker applies every configuration
//!   change in the same order, so ids are the same on all of them.
//! - Applying never fails: a record for a bridge or port that no longer exists is ignored, a
//!   full table refuses it as it would a frame.

use crate::datapath::Datapath;
use crate::fdb::PortId;
use crate::flow::FlowId;
use crate::packet::Frames;
use crate::wire::MacAddr;

/// An FDB entry refreshed this long (seconds) after its last sighting is shared again.
pub const RENEW_S: u32 = 10;

/// One learned fact, to be applied by the other workers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Learned {
    /// `mac` on `vlan` of `bridge` was seen on `port`.
    Mac {
        /// New to the sender's FDB (not moved or renewed): a flood of new sources is what a
        /// busy receiver may miss (see [`Learned::may_drop`]).
        new: bool,
        /// Bridge id.
        bridge: u16,
        /// VLAN (0: untagged domain).
        vlan: u16,
        /// The MAC, as a 48-bit number.
        mac: u64,
        /// Port id.
        port: PortId,
    },
    /// `mac` on `vlan` is behind the remote VTEP `remote` of tunnel port `port`.
    Remote {
        /// The tunnel port.
        port: PortId,
        /// VLAN (0: untagged domain).
        vlan: u16,
        /// The MAC, as a 48-bit number.
        mac: u64,
        /// The remote VTEP's address.
        remote: [u8; 4],
    },
    /// Flow `id` of `bridge` (an idle-timed one) was last hit at `used_ms` on the sender's
    /// clock (workers share one monotonic clock): the worker that decides timeouts counts it.
    FlowUsed {
        /// Bridge id.
        bridge: u16,
        /// The flow's id on the sender (usually the same everywhere: workers add and remove
        /// flows in one order, but an expiry and an add can cross).
        id: u32,
        /// A hash of the flow, to find it where the id differs.
        hash: u64,
        /// Its last hit, ms.
        used_ms: u64,
    },
    /// Flow `id` of `bridge` timed out on worker 0 (idle or hard): removed on every worker
    /// (the flow equal to `flow`, whatever its id there).
    FlowExpired {
        /// Bridge id.
        bridge: u16,
        /// The flow's id.
        id: u32,
        /// The flow, to check the id still names it.
        flow: Box<crate::flow::Flow>,
    },
    /// An ARP packet from `ip` at `mac` was seen by the gateway of `bridge` (see
    /// `Neighbours::arp_seen`).
    Arp {
        /// Bridge id.
        bridge: u16,
        /// Sender address.
        ip: [u8; 4],
        /// Sender MAC.
        mac: MacAddr,
        /// A reply to the gateway (the entry becomes REACHABLE).
        confirms: bool,
        /// The sender may be added if unknown.
        may_create: bool,
    },
}

impl Learned {
    /// Whether a worker too busy to apply it may miss it (the sender drops it rather than
    /// queue it without bound): a MAC new to the FDB (the receiver floods frames to it until
    /// it sees the MAC itself or the entry is renewed after [`RENEW_S`] of silence: delivered,
    /// with extra copies) and an ARP that confirms nothing (an unsolicited sender, what a
    /// flood of senders is). Moved MACs (missing one would misdeliver), remote VTEPs (never
    /// shared again), ARP answers and flow hits go up to a hard cap (`peers`), a flow's
    /// expiry always.
    pub fn may_drop(&self) -> bool {
        matches!(
            self,
            Learned::Mac { new: true, .. }
                | Learned::Arp {
                    confirms: false,
                    ..
                }
        )
    }
}

/// A hash of a flow (`FlowUsed` finds the flow by it where ids differ).
pub fn flow_hash(f: &crate::flow::Flow) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    f.hash(&mut h);
    h.finish()
}

/// Record `l` if this worker shares what it learns (not twice in a row: an ARP storm from
/// one host is one record per burst). Out of line: off the hot loops' registers.
#[cold]
#[inline(never)]
pub fn record(dp: &mut Datapath, l: Learned) {
    if let Some(out) = dp.learned_out.as_mut()
        && out.last() != Some(&l)
    {
        out.push(l);
    }
}

/// Apply what another worker learned. `now`: this worker's clock, seconds. Packets a
/// neighbour entry held (waiting for this ARP) are sent.
pub fn apply(dp: &mut Datapath, frames: &mut Frames, records: &[Learned], now: u32) {
    dp.changed();
    for l in records {
        match l {
            &Learned::Mac {
                new: _,
                bridge,
                vlan,
                mac,
                port,
            } => {
                let limit = match dp.port(port) {
                    Some(p) if p.bridge == bridge => p.mac_limit,
                    _ => continue,
                };
                if let Some(b) = dp.bridges.get_mut(bridge as usize).and_then(|b| b.as_mut()) {
                    let _ = b.fdb.learn_limited(vlan, mac, port, now, limit);
                }
            }
            &Learned::Remote {
                port,
                vlan,
                mac,
                remote,
            } => {
                if let Some(t) = dp.port_mut(port).and_then(|p| p.tunnel.as_mut()) {
                    t.learn(vlan, mac, remote);
                }
            }
            &Learned::Arp {
                bridge,
                ip,
                mac,
                confirms,
                may_create,
            } => crate::pipeline::arp_learned(
                dp,
                frames,
                bridge,
                (ip, mac),
                confirms,
                may_create,
                now,
            ),
            &Learned::FlowUsed {
                bridge,
                id,
                hash,
                used_ms,
            } => {
                if let Some(b) = dp.bridges.get(bridge as usize).and_then(|b| b.as_ref()) {
                    let cls = &b.flows.cls;
                    let found = match cls.get(FlowId(id)) {
                        Some(f) if flow_hash(f) == hash => Some(FlowId(id)),
                        _ => cls
                            .iter()
                            .find(|(_, f)| flow_hash(f) == hash)
                            .map(|(i, _)| i),
                    };
                    if let Some(i) = found {
                        cls.credit(i, 0, 0, used_ms);
                    }
                }
            }
            Learned::FlowExpired { bridge, id, flow } => {
                if let Some(b) = dp
                    .bridges
                    .get_mut(*bridge as usize)
                    .and_then(|b| b.as_mut())
                {
                    let cls = &b.flows.cls;
                    let found = match cls.get(FlowId(*id)) {
                        Some(f) if f == flow.as_ref() => Some(FlowId(*id)),
                        _ => cls
                            .iter()
                            .find(|(_, f)| *f == flow.as_ref())
                            .map(|(i, _)| i),
                    };
                    if let Some(i) = found {
                        b.flows.cls.remove(i);
                        b.flows.refresh();
                    }
                }
            }
        }
    }
}
