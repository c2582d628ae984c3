//! Output stage: egress VLAN handling (push/pop the tag in place), MTU check, and queueing on
//! the destination ports. Flooding copies the frame for every port but the last.
//!
//! Frames with offload state (partial checksum, TCP super-frame) leave as they are toward
//! ports that take offloads (`PortState::offload_out`: TAP with `IFF_VNET_HDR`), their
//! pseudo-header sum refreshed; toward every other port they are finished here, once (see
//! [`super::gso`]): checksums completed, super-frames cut to the egress MTU.

use super::{Dest, Meta, gso};
use crate::counters::DropReason;
use crate::datapath::{Datapath, PortState, VlanMode};
use crate::fdb::PortId;
use crate::packet::{Desc, Frames};
use crate::wire::vlan;

/// Ethernet header bytes in front of the L3 packet the MTU limits (untagged frames).
const ETH_HEADER_LEN: u32 = 14;

/// No ingress port to skip (routed and generated frames).
pub(super) const NO_PORT: PortId = PortId::MAX;

/// Queue every frame in `meta` on its destination port(s).
pub(super) fn run(
    dp: &mut Datapath,
    frames: &mut Frames,
    bridge: u16,
    in_port: PortId,
    meta: &[Meta],
) {
    // One-entry cache of the last port a frame left by untouched (its untagged VLAN domain on
    // an access port, or VLAN 0 on a trunk; no flow output) and the longest frame its MTU takes:
    // the next frame of the burst toward that port and VLAN skips the port lookup and the tag
    // decision. Ports and VLAN modes do not change during a burst.
    let mut plain: Option<(PortId, u16, u32)> = None;
    // Frames `l2-fwd` found addressed to their own ingress port (counted here, where they are
    // freed: counting them there cost its per-frame loop).
    let mut same_port = 0u64;
    for m in meta {
        if let Some((lp, lv, max)) = plain
            && m.dest == Dest::Port(lp)
            && m.vlan == lv
            && !(m.tagged | m.raw)
            && m.desc.ol.is_none()
            && m.desc.len <= max
        {
            dp.out[lp as usize].push(m.desc);
            continue;
        }
        match m.dest {
            Dest::Pending | Dest::Decap(_) => {}
            Dest::Router | Dest::Normal => frames.free(m.desc.addr),
            Dest::SamePort => {
                frames.free(m.desc.addr);
                same_port += 1;
            }
            Dest::LinkLocal => {
                frames.free(m.desc.addr);
                count_link_local(dp, in_port);
            }
            // The common case, without touching the bridge.
            Dest::Port(p) => match dp.ports.get_mut(p as usize).and_then(|x| x.as_mut()) {
                // A flow's output (raw) may only reach its own bridge's ports.
                Some(port) if !m.raw || port.bridge == bridge => {
                    if !m.raw && !m.tagged {
                        plain = plain_max(port, m.vlan).map(|max| (p, m.vlan, max));
                    }
                    emit(frames, port, &mut dp.out[p as usize], m, m.desc)
                }
                Some(port) => {
                    port.counters.drop(DropReason::FlowOtherBridge);
                    frames.free(m.desc.addr);
                }
                None => frames.free(m.desc.addr),
            },
            Dest::Flood | Dest::All => deliver(dp, frames, bridge, in_port, m, m.dest),
            Dest::Bridge(b) => {
                // Routed or generated: look the destination up in the egress bridge's FDB.
                let dest = match dp.bridge(b).and_then(|br| br.fdb.lookup(m.vlan, m.dst)) {
                    Some(p) if !super::ingress::is_group(m.dst) => Dest::Port(p),
                    _ => Dest::Flood,
                };
                deliver(dp, frames, b, NO_PORT, m, dest);
            }
        }
    }
    if same_port != 0 {
        count_same_port(dp, in_port, same_port);
    }
}

#[cold]
#[inline(never)]
fn count_link_local(dp: &mut Datapath, in_port: PortId) {
    if let Some(p) = dp.port_mut(in_port) {
        p.counters.drop(DropReason::LinkLocal);
    }
}

#[cold]
#[inline(never)]
fn count_same_port(dp: &mut Datapath, in_port: PortId, n: u64) {
    if let Some(p) = dp.port_mut(in_port) {
        p.counters.drops[DropReason::SamePort as usize] += n;
    }
}

/// The longest frame (Ethernet header included) that port `p` takes as it is for a frame of
/// VLAN `v` that arrives untagged, without offload state and not sent by a flow: one `run`
/// would queue such a frame unchanged (the port leaves `v` untagged) if it is no longer. None:
/// no such port, or it would tag the frame or refuse its VLAN. Ports and VLAN modes do not
/// change during a burst.
pub(super) fn plain_egress(dp: &Datapath, p: PortId, v: u16) -> Option<u32> {
    plain_max(dp.ports.get(p as usize)?.as_ref()?, v)
}

/// [`plain_egress`] for a port at hand (`run`'s one-entry cache uses the same rule).
#[inline]
fn plain_max(port: &PortState, v: u16) -> Option<u32> {
    port.vlan
        .leaves_untagged(v)
        .then(|| port.mtu.saturating_add(ETH_HEADER_LEN))
}

/// Queue one frame for one port or flood it over `bridge` (skipping `in_port`).
#[inline]
fn deliver(
    dp: &mut Datapath,
    frames: &mut Frames,
    bridge: u16,
    in_port: PortId,
    m: &Meta,
    dest: Dest,
) {
    let Datapath {
        bridges,
        ports,
        out,
        ..
    } = dp;
    let Some(b) = bridges.get_mut(bridge as usize).and_then(|b| b.as_mut()) else {
        frames.free(m.desc.addr);
        return;
    };
    match dest {
        Dest::Port(p) => {
            if let Some(port) = ports.get_mut(p as usize).and_then(|x| x.as_mut()) {
                emit(frames, port, &mut out[p as usize], m, m.desc);
            } else {
                frames.free(m.desc.addr);
            }
        }
        _ => {
            b.counters.flooded += 1;
            let mut pending: Option<PortId> = None;
            for &p in &b.ports {
                let Some(port) = ports.get(p as usize).and_then(|x| x.as_ref()) else {
                    continue;
                };
                if p == in_port
                    || (!m.raw && !port.vlan.carries(m.vlan))
                    || (port.config.no_flood() && dest != Dest::All)
                {
                    continue;
                }
                // Send a copy to the previous candidate; the last one gets the original.
                if let Some(prev) = pending.replace(p) {
                    let port = ports[prev as usize].as_mut().expect("checked above");
                    match frames.clone_frame(m.desc) {
                        Some(copy) => emit(frames, port, &mut out[prev as usize], m, copy),
                        None => port.counters.drop(DropReason::NoBuffer),
                    }
                }
            }
            match pending {
                Some(last) => {
                    let port = ports[last as usize].as_mut().expect("checked above");
                    emit(frames, port, &mut out[last as usize], m, m.desc);
                }
                None => frames.free(m.desc.addr),
            }
        }
    }
}

/// Adjust the tag of frame `d` for `port`, check the MTU, and queue it.
#[inline(always)]
fn emit(frames: &mut Frames, port: &mut PortState, queue: &mut Vec<Desc>, m: &Meta, d: Desc) {
    if !d.ol.is_none() {
        return emit_offloaded(frames, port, queue, m, d);
    }
    let Some((d, l3_len)) = retag(frames, port, m, d) else {
        return;
    };
    if l3_len > port.mtu as usize {
        port.counters.drop(DropReason::MtuExceeded);
        frames.free(d.addr);
        return;
    }
    queue.push(d);
}

/// Frame `d` as it leaves toward `port`, and its L3 length: the tag pushed, popped or
/// rewritten as the port's VLAN mode wants (an explicit flow output leaves as the actions left
/// it). None, counted and freed, when the port does not carry the frame's VLAN. Offload state
/// is kept; no MTU check.
#[inline(always)]
fn retag(
    frames: &mut Frames,
    port: &mut PortState,
    m: &Meta,
    mut d: Desc,
) -> Option<(Desc, usize)> {
    if m.raw {
        let l3_len = d.len as usize - 14 - if m.tagged { vlan::TAG_LEN } else { 0 };
        return Some((d, l3_len));
    }
    if !port.vlan.carries(m.vlan) {
        port.counters.drop(DropReason::VlanDenied);
        frames.free(d.addr);
        return None;
    }
    let want_tag = match &port.vlan {
        VlanMode::Trunk(_) => m.vlan != 0,
        VlanMode::Access(_) => false,
        VlanMode::Native { vlan, tagged, .. } => *tagged || m.vlan != *vlan,
    };
    if want_tag && m.tagged {
        // Keep the tag (and its PCP) but make sure it names the frame's VLAN: a priority tag
        // (VID 0) received on an access port leaves a trunk with the access VLAN.
        crate::wire::vlan::set_vid(frames.data_mut(d), m.vlan);
    } else if want_tag != m.tagged {
        let chunk = frames.chunk_mut(d.chunk());
        let start = d.headroom();
        if want_tag {
            let n = vlan::push(chunk, start, m.vlan);
            d.addr -= (start - n) as u64;
            d.len += vlan::TAG_LEN as u32;
        } else {
            let n = vlan::pop(chunk, start);
            d.addr += (n - start) as u64;
            d.len -= vlan::TAG_LEN as u32;
        }
    }
    Some((
        d,
        d.len as usize - 14 - if want_tag { vlan::TAG_LEN } else { 0 },
    ))
}

/// `emit` for a frame with offload state: adjust the tag as for any frame, then pass it on to a
/// port that takes offloads or finish it for one that does not.
#[cold]
#[inline(never)]
fn emit_offloaded(
    frames: &mut Frames,
    port: &mut PortState,
    queue: &mut Vec<Desc>,
    m: &Meta,
    d: Desc,
) {
    // The tag as for any frame; the MTU check depends on what happens to the frame below.
    let Some((mut d1, _)) = retag(frames, port, m, d) else {
        return;
    };
    let data = frames.data_mut(d1);
    let Some(at) = gso::locate(data) else {
        // Not TCP/UDP over IP any more (a flow rewrote it): nothing we can finish.
        port.counters.drop(DropReason::Runt);
        frames.free(d1.addr);
        return;
    };
    let seg = gso::seg_l3_len(data, d1, at.l3);
    if port.offload_out {
        if seg > port.mtu as usize {
            port.counters.drop(DropReason::MtuExceeded);
            frames.free(d1.addr);
            return;
        }
        gso::refresh_partial(data, &at);
        queue.push(d1);
    } else if d1.ol.gso_type().is_some() {
        let thl = (data[at.l4 + 12] >> 4) as usize * 4;
        let mss = (port.mtu as usize).saturating_sub(at.l4 - at.l3 + thl);
        let mss = mss.min(d1.ol.gso_size() as usize);
        if let Err(r) = gso::segment(frames, d1, mss, queue) {
            port.counters.drop(r);
        }
    } else {
        gso::complete(data, &at);
        d1.ol = crate::packet::Offload::NONE;
        if d1.is_big() || seg > port.mtu as usize {
            port.counters.drop(DropReason::MtuExceeded);
            frames.free(d1.addr);
            return;
        }
        queue.push(d1);
    }
}
