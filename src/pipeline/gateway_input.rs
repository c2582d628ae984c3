//! `gateway-input`: the frames at the head of a burst that are sent to the bridge's gateway
//! (routed traffic: a container's packets to anything off its network), parsed, learned and
//! routed in one pass, before `ethernet-input`. VPP runs such a frame through `ethernet-input`,
//! `l2-learn`, `l2-fwd` and the BVI into `ip4-input`, one vector per node; here the whole
//! burst would pass three loops (learn, forward, the router's dispatch) and its metadata would
//! be written once and read back in each, to learn one source and reach one decision.
//!
//! Contract:
//! - Runs on a port whose untagged VLAN is 0 of a bridge with a gateway and no active flow
//!   table (the flows decide first: then everything takes the whole pipeline).
//! - Takes the burst's frames in order while each is untagged IPv4 to the gateway's MAC from
//!   a valid source MAC (not a group address, not zero, not the gateway's own); the first
//!   frame that is anything else (ARP, another destination, tagged, a runt) and every frame
//!   after it stay in the burst and run the whole pipeline as before, so the burst's frames
//!   are handled in their order of arrival.
//! - A taken frame is counted received on its port (`rx_packets`, `rx_bytes`, a completed
//!   partial checksum in `csum_completed`), exactly as `ethernet-input` counts; its source is
//!   learned on the port (once per source per run, the port's learning switch and MAC limit
//!   honoured), then it is routed as the router stage routes it (`l3::route_ipv4`: NAT, ICMP
//!   errors, VXLAN to a tunnel, DNS to the gateway, held while ARP resolves; drops counted on
//!   the port by reason). Its metadata, with its destination decided, is appended to `meta`
//!   for `interface-output`; the frames the router made (ARP, ICMP) to `made`. A frame routed
//!   to a port it leaves by untouched (untagged there, no offload state, within its MTU: what
//!   `interface-output` would queue unchanged) is queued on that port here instead, once the
//!   metadata before it has been output ([`Taken::output`] says how much of `meta` that is),
//!   so the burst leaves in its order either way.
//! - One difference from the whole pipeline, by design: there every source of the burst is
//!   learned before any frame is forwarded; here a taken frame is routed once the frames
//!   before it are learned. Only a routed frame whose next hop is on its own ingress bridge
//!   and whose MAC that bridge first learns from a later frame of the same burst can tell:
//!   it floods there instead of going to the one port (delivered either way).

use super::l3::{self, Burst};
use super::{Dest, Meta, csum, ingress::is_group, l2, output};
use crate::datapath::{Datapath, VlanMode};
use crate::fdb::PortId;
use crate::packet::{Desc, Frames};
use crate::wire::{EtherType, ethernet};

/// What [`run`] did with a burst.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Taken {
    /// Frames taken off the head of the burst.
    pub frames: usize,
    /// Entries at the head of `meta` already output (`output::run`): what is left starts here.
    pub output: usize,
}

/// Route the frames at the head of `batch` that are sent to the gateway (see the module
/// docs); they are removed from `batch`, their metadata appended to `meta` (which `run`
/// expects empty) unless they were queued on their port here. `partial_csum`: whether to
/// complete partial checksums (None: as the port says).
#[allow(clippy::too_many_arguments)]
pub(super) fn run(
    dp: &mut Datapath,
    frames: &mut Frames,
    in_port: PortId,
    batch: &mut Vec<Desc>,
    meta: &mut Vec<Meta>,
    made: &mut Vec<Meta>,
    partial_csum: Option<bool>,
    now: u64,
) -> Taken {
    let none = Taken::default();
    let Some(port) = dp.port(in_port) else {
        return none;
    };
    // Untagged frames from this port are in VLAN 0 (where gateways live).
    let untagged_in_0 = match &port.vlan {
        VlanMode::Access(v) => *v == 0,
        VlanMode::Trunk(set) => set.contains(0),
        VlanMode::Native { .. } => false,
    };
    let (bridge, fix) = (port.bridge, partial_csum.unwrap_or(port.partial_csum_in));
    if !untagged_in_0
        || dp
            .bridge(bridge)
            .is_none_or(|b| b.flows.active && !b.fail_open)
    {
        return none;
    }
    let Some(burst) = Burst::new(dp, bridge, in_port) else {
        return none;
    };
    let (taken, bytes, completed) = if fix {
        take::<true>(dp, frames, burst, batch, meta, made, now)
    } else {
        take::<false>(dp, frames, burst, batch, meta, made, now)
    };
    if taken.frames != 0 {
        if let Some(p) = dp.port_mut(in_port) {
            p.counters.rx_packets += taken.frames as u64;
            p.counters.rx_bytes += bytes;
            p.counters.csum_completed += completed;
        }
        batch.drain(..taken.frames);
    }
    taken
}

/// [`run`]'s loop over the burst's head; returns what it took, the frames' bytes and the
/// checksums completed. `FIX`: complete partial checksums.
#[inline(always)]
fn take<const FIX: bool>(
    dp: &mut Datapath,
    frames: &mut Frames,
    mut burst: Burst,
    batch: &[Desc],
    meta: &mut Vec<Meta>,
    made: &mut Vec<Meta>,
    now: u64,
) -> (Taken, u64, u64) {
    let (bridge, in_port) = (burst.bridge, burst.in_port);
    // The port the burst's routed frames last left by untouched and the longest frame it
    // takes so (see `output::plain_egress`): ports do not change during a burst.
    let mut plain: Option<(PortId, u32)> = None;
    let mut output_done = 0;
    let gw_mac = burst.gw.mac.to_u64();
    let (mut bytes, mut completed) = (0u64, 0u64);
    // The source learned last (u64::MAX is never a 48-bit MAC).
    let mut learned = u64::MAX;
    let mut taken = 0;
    for &d in batch {
        let data = frames.data_mut(d);
        let Ok(eth) = ethernet::Frame::new_checked(&*data) else {
            break;
        };
        let (dst, src) = (eth.dst_u64(), eth.src_u64());
        // (A frame from the gateway's own MAC is left to `l2-learn`, which does not learn it.)
        if dst != gw_mac
            || eth.ethertype() != EtherType::IPV4
            || is_group(src)
            || src == 0
            || src == dst
        {
            break;
        }
        if FIX {
            completed += csum::complete(EtherType::IPV4, &mut data[ethernet::HEADER_LEN..]) as u64;
        }
        bytes += d.len as u64;
        taken += 1;
        if src != learned {
            learned = src;
            l2::learn_one(dp, bridge, in_port, (0, src), now);
        }
        let mut m = Meta {
            desc: d,
            vlan: 0,
            tagged: false,
            dst,
            src,
            ethertype: EtherType::IPV4,
            l3: ethernet::HEADER_LEN as u8,
            dest: Dest::Router,
            raw: false,
        };
        l3::route_ipv4(dp, frames, &mut burst, &mut m, made, now as u32);
        if let Dest::Port(p) = m.dest
            && m.desc.ol.is_none()
        {
            if plain.is_none_or(|(lp, _)| lp != p) {
                plain = output::plain_egress(dp, p, 0).map(|max| (p, max));
            }
            if let Some((_, max)) = plain
                && m.desc.len <= max
            {
                // What came before it leaves first.
                if meta.len() > output_done {
                    output::run(dp, frames, bridge, in_port, &meta[output_done..]);
                    output_done = meta.len();
                }
                dp.out[p as usize].push(m.desc);
                continue;
            }
        }
        meta.push(m);
    }
    let taken = Taken {
        frames: taken,
        output: output_done,
    };
    (taken, bytes, completed)
}
