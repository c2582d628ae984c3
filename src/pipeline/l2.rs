//! L2 stages: learn source MACs, then decide each frame's destination from the FDB.
//!
//! A frame whose source is its bridge's gateway MAC (the switch's own address) is not learned,
//! so a port cannot take the gateway's MAC in the FDB, and goes on, counted
//! (`gateway_mac_refused`), as Linux's bridge refuses to learn its own address ("received
//! packet on X with own address as source address") and forwards the frame. (Dropping it
//! broke two uvs whose underlay bridges share a gateway MAC: one host id, one bridge name.)
//! Checked before the FDB sees the source, once per run of frames from one source (a full
//! table would otherwise make room for a MAC it then does not keep). A port with learning off
//! is not checked.

use super::{Dest, Meta, ingress::is_group};
use crate::counters::DropReason;
use crate::datapath::Datapath;
use crate::fdb::{Learn, PortId};
use crate::learned::Learned;
use crate::packet::Frames;
use crate::wire::EtherType;

/// Learn every frame's (VLAN, source MAC) on `in_port` (frames still headed for NORMAL);
/// frames from the bridge's gateway MAC are not learned (see the module docs).
pub(super) fn learn(dp: &mut Datapath, bridge: u16, in_port: PortId, meta: &[Meta], now: u64) {
    let Some(mut l) = Learner::new(dp, bridge, in_port, now) else {
        return;
    };
    // One-entry cache (VPP's l2-learn does the same): frames of a burst often share a source,
    // and re-learning the same key within one burst changes nothing.
    let mut last = u64::MAX;
    for m in meta.iter() {
        if !matches!(m.dest, Dest::Normal) {
            continue;
        }
        let key = m.src | (m.vlan as u64) << 48;
        if key == last {
            continue;
        }
        last = key;
        l.learn(m.vlan, m.src);
    }
    if l.finish() {
        count_own(dp, bridge, in_port, meta);
    }
}

/// Count (`gateway_mac_refused` on `in_port`) the frames of `meta` headed for NORMAL whose
/// source is `bridge`'s gateway MAC: [`Learner`] did not learn it. They go on, as Linux's
/// bridge forwards them: two hosts whose bridges share a gateway MAC (cloned machines with one
/// machine id, two uvs on one host, an "anycast" gateway stretched over VXLAN) still reach
/// each other.
#[cold]
#[inline(never)]
fn count_own(dp: &mut Datapath, bridge: u16, in_port: PortId, meta: &[Meta]) {
    let Some(gw) = dp.bridge(bridge).and_then(|b| b.gateway) else {
        return;
    };
    let gw = gw.mac.to_u64();
    let n = meta
        .iter()
        .filter(|m| matches!(m.dest, Dest::Normal) && m.src == gw)
        .count() as u64;
    if let Some(p) = dp.port_mut(in_port) {
        p.counters.gateway_mac_refused += n;
    }
}

/// Learn one (VLAN, source MAC) on `in_port` of `bridge` (see [`Learner`]; the bridge's gateway
/// MAC is not learned: callers hand such frames to the whole pipeline, which counts them).
pub(super) fn learn_one(
    dp: &mut Datapath,
    bridge: u16,
    in_port: PortId,
    (vlan, src): (u16, u64),
    now: u64,
) {
    if let Some(mut l) = Learner::new(dp, bridge, in_port, now) {
        l.learn(vlan, src);
        l.finish();
    }
}

/// Learning on one port of one bridge for a burst: the port's learning switch and MAC limit,
/// the bridge's counters, and the record of what other workers must learn too.
struct Learner<'a> {
    fdb_bridge: &'a mut crate::datapath::Bridge,
    port: Option<&'a mut crate::datapath::PortState>,
    learned_out: &'a mut Option<Vec<Learned>>,
    bridge: u16,
    in_port: PortId,
    limit: u32,
    now: u32,
    refused: u64,
    /// A source was the bridge's gateway MAC (not learned: see the module docs).
    own: bool,
}

/// A warning (at most one a second per bridge) that bridge `b`'s full FDB refused MAC `src`
/// or made room for it by forgetting another (`replaced`): the counters say how often
/// (`fdb_full`, `fdb_replaced`), the log says it started. Found trying uvs as a tenant: a MAC
/// flood filled a bridge's table and nothing said so.
#[cold]
#[inline(never)]
fn log_full(b: &mut crate::datapath::Bridge, now: u32, src: u64, replaced: bool) {
    if std::mem::replace(&mut b.fdb_full_warned, now) == now {
        return;
    }
    let bridge = &b.name;
    let mac = crate::wire::MacAddr::from_u64(src);
    if replaced {
        tracing::warn!(
            "bridge {bridge}: FDB full; learning {mac} forgot another MAC (a port flooding new \
             MACs gives up its own first; see `fdb_replaced` in `uvs ctl stats`)"
        );
    } else {
        tracing::warn!(
            "bridge {bridge}: FDB full; {mac} not learned (frames to it are flooded; see \
             `fdb_full` in `uvs ctl stats`, `set-br {bridge} fdb_capacity=N`)"
        );
    }
}

impl<'a> Learner<'a> {
    /// None: nothing to learn (the port does not learn, or the bridge is gone).
    #[inline(always)]
    fn new(dp: &'a mut Datapath, bridge: u16, in_port: PortId, now: u64) -> Option<Learner<'a>> {
        let port = dp.ports.get_mut(in_port as usize).and_then(|p| p.as_mut());
        let limit = match &port {
            Some(p) if !p.learn => return None,
            Some(p) => p.mac_limit,
            None => u32::MAX,
        };
        let fdb_bridge = dp.bridges.get_mut(bridge as usize)?.as_mut()?;
        Some(Learner {
            fdb_bridge,
            port,
            learned_out: &mut dp.learned_out,
            bridge,
            in_port,
            limit,
            now: now as u32,
            refused: 0,
            own: false,
        })
    }

    #[inline(always)]
    fn learn(&mut self, vlan: u16, src: u64) {
        let b = &mut *self.fdb_bridge;
        // Before the FDB sees it: a full table would make room for it first (a legitimate
        // entry forgotten for a MAC that is then not learned). Once per run of one source.
        if b.gateway.is_some_and(|g| g.mac.to_u64() == src) {
            self.own = true;
            return;
        }
        let r = b
            .fdb
            .learn_limited(vlan, src, self.in_port, self.now, self.limit);
        match r {
            Learn::Refreshed | Learn::Static | Learn::Renewed => {}
            Learn::New => b.counters.learned += 1,
            Learn::Replaced => {
                b.counters.learned += 1;
                b.counters.fdb_replaced += 1;
                log_full(b, self.now, src, true);
            }
            Learn::Moved { .. } => b.counters.moves += 1,
            Learn::Full => {
                b.counters.fdb_full += 1;
                log_full(b, self.now, src, false);
            }
            Learn::Collision => b.counters.fdb_collisions += 1,
            Learn::PortLimit => self.refused += 1,
        }
        if let Some(out) = self.learned_out.as_mut()
            && matches!(
                r,
                Learn::New | Learn::Replaced | Learn::Moved { .. } | Learn::Renewed
            )
        {
            share(
                out,
                (self.bridge, self.in_port),
                (vlan, src),
                matches!(r, Learn::New | Learn::Replaced),
            );
        }
    }

    /// Count what the burst refused; true if a source was the gateway's MAC.
    #[inline(always)]
    fn finish(self) -> bool {
        if self.refused != 0 {
            self.fdb_bridge.counters.mac_limit += self.refused;
            if let Some(p) = self.port {
                p.counters.mac_limit_refused += self.refused;
            }
        }
        self.own
    }
}

/// Record a MAC this worker learned, for the other workers (see `learned`). Out of line: only
/// several workers share, and only new, moved or renewed entries.
#[cold]
#[inline(never)]
fn share(
    out: &mut Vec<Learned>,
    (bridge, port): (u16, PortId),
    (vlan, mac): (u16, u64),
    new: bool,
) {
    out.push(Learned::Mac {
        new,
        bridge,
        vlan,
        mac,
        port,
    });
}

/// 01:80:c2:00:00:00, the first of the 16 IEEE 802.1D reserved link-local addresses.
const LINK_LOCAL: u64 = 0x0180_c200_0000;

/// Set each frame's destination: flood for group and unknown destinations (not the reserved
/// link-local ones, 01:80:c2:00:00:0X: bridges do not forward those, `Dest::LinkLocal`), the learned port
/// otherwise; frames whose destination sits on the ingress port are dropped (`Dest::SamePort`:
/// counted and freed by `output`). With `icc` off only the gateway is reachable: frames
/// to its MAC and ARP broadcasts (which the gateway answers) go to the router, every other
/// frame is dropped and counted `icc-denied`.
#[inline(never)]
pub(super) fn forward(
    dp: &mut Datapath,
    frames: &mut Frames,
    bridge: u16,
    in_port: PortId,
    meta: &mut [Meta],
) {
    let Some(b) = dp.bridges.get(bridge as usize).and_then(|b| b.as_ref()) else {
        return;
    };
    // Frames to the gateway's MAC go to the router (u64::MAX never matches a 48-bit MAC).
    let gw_mac = b.gateway.map_or(u64::MAX, |g| g.mac.to_u64());
    let mut icc_denied = 0u64;
    let mut flood_limited = 0u64;
    if b.icc {
        // One-entry cache of the last (VLAN, destination) of this burst and the decision for
        // it (the FDB does not change during a burst; its frames mostly share a destination).
        // u64::MAX is never a key: VLANs take 12 bits above the 48 of the MAC.
        let mut last: (u64, Dest) = (u64::MAX, Dest::SamePort);
        for m in meta.iter_mut() {
            if !matches!(m.dest, Dest::Normal) {
                continue;
            }
            let key = m.dst | (m.vlan as u64) << 48;
            if key != last.0 {
                let dest = if m.dst == gw_mac {
                    Dest::Router
                } else if is_group(m.dst) {
                    if m.dst >> 4 == LINK_LOCAL >> 4 {
                        Dest::LinkLocal
                    } else {
                        Dest::Flood
                    }
                } else {
                    match b.fdb.lookup(m.vlan, m.dst) {
                        // Its destination sits on the ingress port: dropped by `output`.
                        Some(p) if p == in_port => Dest::SamePort,
                        Some(p) => Dest::Port(p),
                        None => Dest::Flood,
                    }
                };
                last = (key, dest);
            }
            m.dest = last.1;
            if matches!(m.dest, Dest::Flood)
                && !dp
                    .ports
                    .get_mut(in_port as usize)
                    .and_then(Option::as_mut)
                    .is_none_or(|p| p.flood.take(dp.now_ms))
            {
                // Storm control: over the port's flood budget (see `flood_limit`).
                frames.free(m.desc.addr);
                m.dest = Dest::Pending;
                flood_limited += 1;
            }
        }
    } else {
        for m in meta.iter_mut() {
            if !matches!(m.dest, Dest::Normal) {
                continue;
            }
            m.dest = if m.dst == gw_mac
                || (b.gateway.is_some() && m.dst == u64::MAX >> 16 && m.ethertype == EtherType::ARP)
            {
                Dest::Router
            } else {
                frames.free(m.desc.addr);
                icc_denied += 1;
                Dest::Pending
            };
        }
    }
    if icc_denied | flood_limited != 0
        && let Some(p) = dp.port_mut(in_port)
    {
        p.counters.drops[DropReason::IccDenied as usize] += icc_denied;
        p.counters.drops[DropReason::FloodLimit as usize] += flood_limited;
    }
}
