//! The flow stage: each bridge's OpenFlow-style tables (ovs-ofctl syntax) in front of the
//! learning switch and router.
//!
//! Contract:
//! - A bridge starts with one flow, `priority=0,actions=NORMAL`; while that is its only flow the
//!   stage is skipped (`FlowTable::active` is false), so plain switching pays nothing for it.
//! - Otherwise every frame is looked up (per-bridge exact-match cache, then the tuple-space
//!   classifier) in table 0, and its flow's actions run in order: header rewrites change the
//!   frame in place (checksums updated incrementally), `resubmit(,T)`/`goto_table:T` continue in
//!   table T (at most `MAX_DEPTH` nested and `MAX_LOOKUPS` in all a frame; beyond, the frame is dropped whole, as OVS), `meter:N` drops what exceeds the meter's rate,
//!   `NORMAL` hands the frame to the learning switch and router, `output:P`/`FLOOD`/`IN_PORT`
//!   send it as it is (no VLAN translation: what the actions made is what leaves; `output:P`
//!   to the ingress port is skipped, as OpenFlow says: `IN_PORT` sends there). A frame with no
//!   matching flow, an empty action list or `drop` is dropped and counted (`flow-drop`).
//! - A flow that makes one decision and changes nothing (`NORMAL`, `output:P`, `FLOOD`,
//!   `IN_PORT` or drop) is decided without the action loop; within a burst, a frame with the
//!   packed key of the frame before it that took such a decision takes it without the cache
//!   too (`batch`; inside a run of one key, by comparing the bytes the key is made of,
//!   `words::Raw`). Either way the flow is counted per frame. The key itself is read straight
//!   from IPv4 frames (`words`).
//! - Frames that leave by explicit outputs are not learned (as in OVS, learning is part of
//!   NORMAL).

mod batch;
mod groups;
mod rewrite;
mod words;

use self::rewrite::{register_write, rewrite, truncated_copy};
use super::{Dest, Meta};
use crate::counters::DropReason;
use crate::datapath::{Datapath, VlanMode};
use crate::fdb::PortId;
use crate::flow::meter::Meters;
use crate::flow::{
    Action, Actions, Classifier, Emc, ExtKey, Flow, FlowId, NO_VLAN, PacketKey, PortRef, SetField,
    Single, Words,
};
use crate::ofport::{OFPP_MAX, OfPorts};
use crate::packet::Frames;
use crate::wire::{EtherType, vlan};

/// EtherType MPLS unicast.
const MPLS: u16 = 0x8847;
/// EtherType MPLS multicast.
const MPLSM: u16 = 0x8848;

/// Most resubmits (and clones) one frame may have nested at once, as OVS's 64: a flow whose
/// translation goes deeper stops there, carrying out what it decided so far.
pub const MAX_DEPTH: usize = 64;
/// Most table lookups one frame may make in all (resubmit, goto_table and ct(table=) steps;
/// OVS's 64 x 64 resubmits).
pub const MAX_LOOKUPS: usize = 4096;
/// Exact-match cache entries per bridge.
pub const EMC_ENTRIES: usize = 8192;

/// A bridge's flow tables, cache and meters.
pub struct FlowTable {
    /// The flows.
    pub cls: Classifier,
    /// Exact-match cache in front of `cls`.
    pub emc: Emc,
    /// Meters by id.
    pub meters: Meters,
    /// False while only the default NORMAL flow is installed (the stage is skipped).
    pub active: bool,
    /// The bridge's OpenFlow port numbers: `in_port=N` and `output:N` mean these, and only
    /// this bridge's ports can be reached through them.
    pub ports: OfPorts,
    /// Connection tracking for `ct(...)` actions, per zone.
    pub ct: super::ct::FlowConntrack,
    /// Flows `learn(...)` made during the current burst (added after it).
    pub learned: Vec<Flow>,
    /// Groups by id (`group:N`).
    pub groups: std::collections::BTreeMap<u32, crate::flow::group::Group>,
    /// Their counters (an entry per group, written with it).
    pub group_stats: std::collections::BTreeMap<u32, crate::flow::group::GroupStats>,
    /// A flow with a `ct(...)` action was added (never cleared): with several workers the
    /// bridge's frames are steered so that both directions of a connection meet one worker's
    /// table (see `pipeline::steer`).
    pub ct_steered: bool,
    /// The resubmit stack of this bridge's bursts, kept between them (a fresh one is ~45
    /// stores): `first_key` resets its ext fields when they were set, and its frames are
    /// written before they are read.
    pub(crate) stack: Stack,
}

impl Default for FlowTable {
    fn default() -> Self {
        let mut cls = Classifier::new();
        cls.add(Flow::default_normal(), 0, |_| None)
            .expect("the default flow is valid");
        FlowTable {
            cls,
            emc: Emc::new(EMC_ENTRIES),
            meters: Meters::new(),
            active: false,
            ports: OfPorts::default(),
            ct: Default::default(),
            learned: Vec::new(),
            groups: Default::default(),
            group_stats: Default::default(),
            ct_steered: false,
            stack: stack(),
        }
    }
}

impl FlowTable {
    /// Recompute `active` after a change.
    pub fn refresh(&mut self) {
        let only_default =
            self.cls.len() == 1 && self.cls.iter().all(|(_, f)| *f == Flow::default_normal());
        self.active = !only_default;
        self.emc.clear();
    }

    /// The OpenFlow number a port reference means in this bridge: a number as it is (1 to
    /// 0xfeff or `LOCAL`, whether or not a port has it now, as OVS allows), a name if a port
    /// has it.
    pub fn resolve(&self, r: &PortRef) -> Option<u16> {
        match r {
            PortRef::Name(n) => self.ports.by_name(n),
            PortRef::Num(n) => {
                ((1..=OFPP_MAX).contains(n) || *n == crate::ofport::OFPP_LOCAL).then_some(*n)
            }
        }
    }

    /// Rewrite the port names of flow `f` to this bridge's port numbers (what a flow holds once
    /// added). Fails with the field and the reference that names no port of the bridge or is
    /// out of range.
    pub fn bind_ports(&self, f: &mut Flow) -> Result<(), (&'static str, PortRef)> {
        if let Some((what, p)) = f.ports().find(|(_, p)| self.resolve(p).is_none()) {
            return Err((what, p.clone()));
        }
        for p in f.ports_mut() {
            *p = PortRef::Num(self.resolve(p).expect("checked above"));
        }
        Ok(())
    }

    /// How many flows use each id `id_of` reads from an action (a meter's, a group's): one
    /// pass over the flows, a flow counted once per id.
    pub fn flows_using(
        &self,
        id_of: impl Fn(&crate::flow::Action) -> Option<u32>,
    ) -> std::collections::BTreeMap<u32, usize> {
        let mut counts = std::collections::BTreeMap::new();
        let mut ids = Vec::new();
        for (_, f) in self.cls.iter() {
            ids.clear();
            f.any_action(|a| {
                ids.extend(id_of(a));
                false
            });
            ids.sort_unstable();
            ids.dedup();
            for &id in &ids {
                *counts.entry(id).or_insert(0) += 1;
            }
        }
        counts
    }

    /// The port numbers the flows of this bridge name (in_port or output).
    pub fn referenced(&self) -> std::collections::BTreeSet<u16> {
        self.cls
            .iter()
            .flat_map(|(_, f)| f.ports().map(|(_, p)| p.num()).collect::<Vec<_>>())
            .collect()
    }
}

/// The packet key of frame `data` (metadata `m`) received on OpenFlow port `in_port`.
#[inline(always)]
pub(crate) fn packet_key(
    data: &[u8],
    m: &Meta,
    in_port: u16,
    tun_id: u64,
    (ct_state, ct_zone): (u8, u16),
) -> PacketKey {
    let mut k = PacketKey {
        in_port,
        dl_src: m.src,
        dl_dst: m.dst,
        dl_type: m.ethertype,
        tun_id,
        ct_state,
        ct_zone,
        ..PacketKey::default()
    };
    match vlan::tci(data) {
        Some(tci) => {
            k.vlan = tci & 0x0fff;
            k.vlan_pcp = (tci >> 13) as u8;
        }
        None => k.vlan = NO_VLAN,
    }
    let l3 = m.l3 as usize;
    let ip = data.get(l3..).unwrap_or_default();
    match m.ethertype {
        EtherType::IPV4 if ip.len() >= 20 => {
            k.nw_src = u32::from_be_bytes([ip[12], ip[13], ip[14], ip[15]]);
            k.nw_dst = u32::from_be_bytes([ip[16], ip[17], ip[18], ip[19]]);
            k.nw_proto = ip[9];
            k.nw_tos = ip[1];
            let hl = ((ip[0] & 0x0f) as usize) * 4;
            let ff = u16::from_be_bytes([ip[6], ip[7]]);
            let first = ff & 0x1fff == 0;
            // MF set or an offset: a fragment; an offset: a later one.
            k.nw_frag = u8::from(ff & 0x3fff != 0) | (u8::from(!first) << 1);
            if first && ip.len() >= hl + 4 {
                let l4 = &ip[hl..];
                match k.nw_proto {
                    6 | 17 => {
                        k.tp_src = u16::from_be_bytes([l4[0], l4[1]]);
                        k.tp_dst = u16::from_be_bytes([l4[2], l4[3]]);
                    }
                    1 => {
                        k.tp_src = l4[0] as u16;
                        k.tp_dst = l4[1] as u16;
                    }
                    _ => {}
                }
            }
        }
        EtherType::IPV6 if ip.len() >= 40 => {
            k.nw_tos = (u16::from_be_bytes([ip[0], ip[1]]) >> 4) as u8;
            k.nw_proto = ip[6];
            let mut l4 = &ip[40..];
            if k.nw_proto == 44 && l4.len() >= 8 {
                // A fragment header: OVS reports the protocol after it, and the ports of the
                // first fragment.
                let later = u16::from_be_bytes([l4[2], l4[3]]) & 0xfff8 != 0;
                k.nw_frag = 1 | (u8::from(later) << 1);
                k.nw_proto = l4[0];
                if later {
                    return k;
                }
                l4 = &l4[8..];
            }
            match k.nw_proto {
                6 | 17 if l4.len() >= 4 => {
                    k.tp_src = u16::from_be_bytes([l4[0], l4[1]]);
                    k.tp_dst = u16::from_be_bytes([l4[2], l4[3]]);
                }
                58 if l4.len() >= 2 => {
                    k.tp_src = l4[0] as u16;
                    k.tp_dst = l4[1] as u16;
                }
                _ => {}
            }
        }
        MPLS | MPLSM if ip.len() >= 4 => {
            // The top label stack entry, in the nw_src slot (see `flow::Match::mpls`).
            k.nw_src = u32::from_be_bytes([ip[0], ip[1], ip[2], ip[3]]);
        }
        EtherType::ARP if ip.len() >= 28 => {
            k.nw_proto = ip[7];
            k.nw_src = u32::from_be_bytes([ip[14], ip[15], ip[16], ip[17]]);
            k.nw_dst = u32::from_be_bytes([ip[24], ip[25], ip[26], ip[27]]);
        }
        _ => {}
    }
    k
}

/// The IPv6 ext fields of frame `data` (addresses, flow label, ND target) into `x`. The
/// packet key's `nw_proto` is the first next-header (extension headers are not walked).
#[inline(never)]
fn ipv6_ext(data: &[u8], m: &Meta, x: &mut ExtKey) {
    let ip = data.get(m.l3 as usize..).unwrap_or_default();
    if ip.len() < 40 {
        return;
    }
    let word = |i: usize| u128::from_be_bytes(ip[i..i + 16].try_into().expect("16 bytes"));
    x.ipv6_label = u32::from_be_bytes([0, ip[1] & 0x0f, ip[2], ip[3]]);
    x.ipv6_src = word(8);
    x.ipv6_dst = word(24);
    // Neighbour solicitation (135) / advertisement (136): the target follows 8 bytes of
    // ICMPv6 header.
    if ip[6] == 58 && ip.len() >= 64 && (ip[40] == 135 || ip[40] == 136) {
        x.nd_target = word(48);
    }
}

/// The fields `ExtField::NwTtl` and `ExtField::TcpFlags` of frame `data` into `x`: the IPv4
/// TTL or IPv6 hop limit, and TCP's flags (12 bits) of IPv4 (the first or only fragment) or
/// IPv6 (TCP as the first next-header); 0 where the frame has none.
#[inline(never)]
fn ip_fields(data: &[u8], m: &Meta, x: &mut ExtKey) {
    let ip = data.get(m.l3 as usize..).unwrap_or_default();
    let (ttl, l4) = match m.ethertype {
        EtherType::IPV4 if ip.len() >= 20 => {
            let tcp = ip[9] == 6 && (ip[6] & 0x1f) | ip[7] == 0;
            (ip[8], tcp.then(|| usize::from(ip[0] & 0x0f) * 4))
        }
        EtherType::IPV6 if ip.len() >= 40 => (ip[7], (ip[6] == 6).then_some(40)),
        _ => (0, None),
    };
    x.nw_ttl = ttl;
    x.tcp_flags = l4
        .and_then(|l4| ip.get(l4 + 12..l4 + 14))
        .map_or(0, |b| u16::from_be_bytes([b[0], b[1]]) & 0x0fff);
}

/// Run the flow tables over `meta` (frames received on `in_port` of `bridge`). Copies that
/// actions send to NORMAL go to `normal` (the caller appends them to the burst for the learning
/// switch); copies sent to ports go to `made`.
pub(super) fn run(
    dp: &mut Datapath,
    frames: &mut Frames,
    bridge: u16,
    in_port: PortId,
    meta: &mut [Meta],
    out: &mut Emitted,
) {
    let now_ms = dp.now_ms;
    let (tun_id, in_ofport, no_packet_in) = dp.port(in_port).map_or((0, 0, false), |p| {
        (
            p.tunnel.as_ref().map_or(0, |t| t.conf.vni as u64),
            p.ofport,
            p.config.no_packet_in(),
        )
    });
    let events = &dp.events;
    let Some(in_mode) = dp
        .ports
        .get(in_port as usize)
        .and_then(|p| p.as_ref())
        .map(|p| &p.vlan)
    else {
        return;
    };
    let Some(b) = dp.bridges.get_mut(bridge as usize).and_then(|b| b.as_mut()) else {
        return;
    };
    let bridge_name = b.name.as_str();
    let FlowTable {
        cls,
        emc,
        meters,
        ports,
        ct: conntrack,
        learned,
        groups,
        group_stats,
        stack: resubmits,
        ..
    } = &mut b.flows;
    let (mut drops, mut vlan_denied) = (0u64, 0u64);
    let mut credit = Credit::default();
    let port = Ingress {
        id: in_port,
        ofport: in_ofport,
        tun_id,
        no_packet_in,
    };
    let mut env = Env {
        cls,
        meters,
        ports,
        conntrack,
        learned,
        port,
        now_ms,
        events,
        bridge: bridge_name,
        groups,
        group_stats,
    };
    let mut last: Option<batch::Verdict> = None;
    let mut i = 0;
    while let Some(m) = meta.get_mut(i) {
        i += 1;
        if m.dest != Dest::Normal {
            continue;
        }
        let data = frames.data(m.desc);
        let (words, cached) = first_key(&env, data, m, resubmits, &mut NoTrace);
        if cached
            && let Some(v) = &last
            && v.applies(&words)
        {
            // The key of the frame before, which took one decision.
            let raw = words::Raw::read(data, m);
            if let Some(id) = v.flow {
                credit.add(env.cls, id, u64::from(m.desc.len), now_ms);
            }
            drops += u64::from(!batch::take(frames, m, v.dest));
            // A run of frames with one key: the frames right after this one with its raw key
            // take the decision too, compared by the bytes their words would be packed from
            // (read only now, so frames that start no run pay nothing for it).
            if let Some(raw) = raw {
                let run = Run {
                    raw,
                    credited: v.flow.is_some(),
                    dest: v.dest,
                };
                let rest = &mut meta[i..];
                let (n, dropped) = if raw.l3() == 14 {
                    run.take::<14, 38>(frames, rest, &mut credit)
                } else {
                    run.take::<18, 42>(frames, rest, &mut credit)
                };
                i += n;
                drops += dropped;
            }
            continue;
        }
        let (first, single) = first_flow(env.cls, emc, words, cached, resubmits);
        let decided = batch::decision(single, env.ports, in_port);
        last = decided
            .filter(|_| cached)
            .map(|dest| batch::Verdict::new(words, first, dest));
        if let Some(dest) = decided {
            // A flow with one decision (or none matched: drop).
            if let Some(id) = first {
                credit.add(env.cls, id, u64::from(m.desc.len), now_ms);
            }
            drops += u64::from(!batch::take(frames, m, dest));
            continue;
        }
        let (before, normal_from, made_from) =
            ((m.vlan, m.tagged), out.normal.len(), out.made.len());
        let r = run_first(
            &mut env,
            frames,
            m,
            out,
            &mut credit,
            resubmits,
            &mut NoTrace,
            first,
        );
        if !r.kept {
            frames.free(m.desc.addr);
            m.dest = Dest::Pending;
            if !r.emitted {
                drops += 1;
            }
        }
        if resubmits.too_deep {
            take_back(frames, out, made_from, normal_from);
        }
        if (r.kept && (m.vlan, m.tagged) != before) || out.normal.len() != normal_from {
            let n = (&mut *out.normal, normal_from);
            vlan_denied += readmit(in_mode, frames, (m, r.kept), n, before);
        }
    }
    credit.flush(cls, now_ms);
    if !learned.is_empty() {
        learn_flows(&mut b.flows, now_ms);
    }
    if drops + vlan_denied != 0
        && let Some(p) = dp.port_mut(in_port)
    {
        p.counters.drops[DropReason::FlowDrop as usize] += drops;
        p.counters.drops[DropReason::VlanDenied as usize] += vlan_denied;
    }
}

/// The L3 (and L4) headers `trace` builds for a packet key that is IPv6 or MPLS (the IPv4
/// and ARP ones are built by the caller): addresses, flow label and ND target come from the
/// match's ext fields `ext`.
pub(crate) fn trace_l3(k: &PacketKey, ext: &crate::flow::ExtMatch) -> Vec<u8> {
    use crate::flow::ExtField;
    let get = |f: ExtField| ext.get(f).map_or(0, |m| m.value);
    match k.dl_type {
        MPLS | MPLSM => k.nw_src.to_be_bytes().to_vec(),
        EtherType::IPV6 => {
            let l4: Vec<u8> = match k.nw_proto {
                6 => {
                    let mut t = vec![0u8; 20];
                    let mut seg = crate::wire::tcp::Segment::new_unchecked(&mut t[..]);
                    seg.set_ports(k.tp_src, k.tp_dst);
                    seg.set_header_len(20);
                    seg.set_flags(crate::wire::tcp::Flags::SYN);
                    if let Some(f) = ext.get(ExtField::TcpFlags) {
                        t[12] |= (f.value >> 8) as u8 & 0x0f;
                        t[13] = f.value as u8;
                    }
                    t
                }
                17 => {
                    let mut t = vec![0u8; 8];
                    let mut u = crate::wire::udp::Datagram::new_unchecked(&mut t[..]);
                    u.set_ports(k.tp_src, k.tp_dst);
                    u.set_len(8);
                    t
                }
                58 => {
                    let mut t = vec![k.tp_src as u8, k.tp_dst as u8, 0, 0, 0, 0, 0, 0];
                    if matches!(k.tp_src, 135 | 136) {
                        t.extend_from_slice(&get(ExtField::NdTarget).to_be_bytes());
                    }
                    t
                }
                _ => Vec::new(),
            };
            let label = get(ExtField::Ipv6Label) as u32 & 0xf_ffff;
            let mut ip = vec![0u8; crate::wire::ipv6::HEADER_LEN];
            crate::wire::ipv6::Packet::new_unchecked(&mut ip[..]).set_header(
                (k.nw_tos, label),
                crate::wire::IpProtocol(k.nw_proto),
                get(ExtField::Ipv6Src).to_be_bytes(),
                get(ExtField::Ipv6Dst).to_be_bytes(),
                l4.len() as u16,
            );
            ip.extend_from_slice(&l4);
            ip
        }
        _ => Vec::new(),
    }
}

/// Add the flows `learn(...)` made in this burst (an identical flow only has its timers
/// restarted); a flow that cannot be added (an output or in_port number 0) is dropped with a
/// log line.
#[inline(never)]
fn learn_flows(ft: &mut FlowTable, now_ms: u64) {
    let mut added = false;
    for f in std::mem::take(&mut ft.learned) {
        match ft.cls.learn(f, now_ms) {
            Ok(a) => added |= !a.replaced,
            Err(e) => tracing::debug!("learn: flow not added: {e}"),
        }
    }
    if added {
        ft.active = true;
    }
}

/// Flow counters accumulated over consecutive frames of one flow and written to the (shared,
/// atomic) counters once per run of frames instead of once per frame.
#[derive(Default)]
pub(crate) struct Credit {
    flow: Option<FlowId>,
    packets: u64,
    bytes: u64,
}

impl Credit {
    #[inline]
    fn add(&mut self, cls: &Classifier, id: FlowId, bytes: u64, now_ms: u64) {
        if self.flow != Some(id) {
            self.flush(cls, now_ms);
            self.flow = Some(id);
        }
        self.packets += 1;
        self.bytes += bytes;
    }

    /// Credit `packets` more frames of `bytes` in all to the flow credited last.
    #[inline(always)]
    fn again(&mut self, packets: u64, bytes: u64) {
        debug_assert!(self.flow.is_some());
        self.packets += packets;
        self.bytes += bytes;
    }

    pub(crate) fn flush(&mut self, cls: &Classifier, now_ms: u64) {
        if let Some(id) = self.flow.take() {
            cls.credit(id, self.packets, self.bytes, now_ms);
        }
        self.packets = 0;
        self.bytes = 0;
    }
}

/// A run of frames with one key (see `run`): the frames right after one that took a cached
/// decision, compared by the bytes their key words would be packed from.
struct Run {
    raw: words::Raw,
    /// The decision's flow is credited (a flow matched).
    credited: bool,
    dest: Option<Dest>,
}

impl Run {
    /// Give the decision to the leading frames of `meta` that have the run's raw key (with
    /// its L3 offset `L3`, read from the frame's first `H` = `L3 + 24` bytes); returns how
    /// many took it and how many of them were dropped. `count` finds the run, then one
    /// credit and one loop carry out the decision.
    #[inline(never)]
    fn take<const L3: usize, const H: usize>(
        &self,
        frames: &mut Frames,
        meta: &mut [Meta],
        credit: &mut Credit,
    ) -> (usize, u64) {
        let (n, bytes) = self.count::<L3, H>(frames, meta);
        if self.credited {
            credit.again(n as u64, bytes);
        }
        for m in &mut meta[..n] {
            batch::take(frames, m, self.dest);
        }
        (n, if self.dest.is_none() { n as u64 } else { 0 })
    }

    /// How many leading frames of `meta` have the run's raw key, and their bytes. Out of
    /// line and read-only, so its loop keeps the key, the region's bound and its own state
    /// in registers (a large buffer's frame ends the run: it takes the general path).
    #[inline(never)]
    fn count<const L3: usize, const H: usize>(
        &self,
        frames: &Frames,
        meta: &[Meta],
    ) -> (usize, u64) {
        const { assert!(H == L3 + 24) };
        let raw = self.raw;
        let mut bytes = 0u64;
        for (i, m) in meta.iter().enumerate() {
            let hit = m.dest == Dest::Normal
                && frames
                    .head::<H>(m.desc)
                    .is_some_and(|h| raw.matches_at::<L3>(h, m));
            if !hit {
                return (i, bytes);
            }
            bytes += u64::from(m.desc.len);
        }
        (meta.len(), bytes)
    }
}

/// The port a frame arrived on, as the flow tables see it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Ingress {
    /// Internal port id (`IN_PORT` sends back to it).
    pub id: PortId,
    /// Its OpenFlow number (what `in_port=` matches).
    pub ofport: u16,
    /// Its tunnel's VNI (`tun_id`), 0 for other ports.
    pub tun_id: u64,
    /// `mod-port no-packet-in`: no `controller` action sends its frames.
    pub no_packet_in: bool,
}

/// Where copies made by actions go: to ports (`made`), or to NORMAL (`normal`, which the
/// pipeline appends to the burst).
pub(crate) struct Emitted<'a> {
    /// Copies for ports, flood and in_port.
    pub made: &'a mut Vec<Meta>,
    /// Copies for NORMAL.
    pub normal: &'a mut Vec<Meta>,
}

/// Scratch space for `execute`, made once per burst: (flow, next action) of flows waiting for
/// a resubmit to finish, and the ext fields (registers, metadata, IPv6) of the frame.
pub(crate) struct Stack {
    frames: [(FlowId, usize); MAX_DEPTH],
    ext: ExtKey,
    /// `ext` is not all zero.
    dirty: bool,
    /// Table lookups the current frame made (its clones' and group buckets' included).
    lookups: usize,
    /// The current frame's translation went too deep: it is dropped whole (`too_deep`).
    too_deep: bool,
}

/// A fresh `Stack`.
pub(crate) fn stack() -> Stack {
    Stack {
        frames: [(FlowId(0), 0usize); MAX_DEPTH],
        ext: ExtKey::ZERO,
        dirty: false,
        lookups: 0,
        too_deep: false,
    }
}

/// What `execute` did with a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Outcome {
    /// The frame itself carries the last decision in `m.dest` (else the caller frees it).
    pub kept: bool,
    /// At least one copy was sent before.
    pub emitted: bool,
}

/// What `trace` learns from a run of `execute`. The datapath runs with `NoTrace`, which the
/// compiler removes; `DRY` runs change no state (no counters, meters or connections).
pub(crate) trait Tracer {
    /// Run without side effects on tables.
    const DRY: bool;
    /// A line of the trace (built only when tracing).
    fn line(&mut self, f: impl FnOnce() -> String);
    /// A decision was carried out: the frame, as it is now (`m` in `frames`), goes to `dest`.
    fn sent(&mut self, dest: Dest, m: &Meta, frames: &Frames);
}

/// The datapath's tracer: does nothing.
pub(crate) struct NoTrace;

impl Tracer for NoTrace {
    const DRY: bool = false;
    #[inline(always)]
    fn line(&mut self, _: impl FnOnce() -> String) {}
    #[inline(always)]
    fn sent(&mut self, _: Dest, _: &Meta, _: &Frames) {}
}

/// The decision waiting to be carried out (the last output or NORMAL seen) and whether a copy
/// was sent already. The decision is carried out on a copy when a later action changes the
/// frame or decides again, and on the frame itself when the actions end, so every action runs
/// in order on the frame as it is at that point, as in OVS.
struct Pending(Option<Dest>, bool);

impl Pending {
    /// Carry out the waiting decision on a copy of the frame as it is now.
    #[inline(always)]
    fn flush<T: Tracer>(&mut self, frames: &mut Frames, m: &Meta, out: &mut Emitted, t: &mut T) {
        if let Some(dest) = self.0.take() {
            Self::copy(frames, m, out, t, dest);
            self.1 = true;
        }
    }

    /// Send a copy of the frame as it is now to `dest` (out of line: most flows decide once).
    #[inline(never)]
    fn copy<T: Tracer>(frames: &mut Frames, m: &Meta, out: &mut Emitted, t: &mut T, dest: Dest) {
        t.sent(dest, m, frames);
        if T::DRY {
            return;
        }
        let Some(copy) = frames.clone_frame(m.desc) else {
            return;
        };
        let c = Meta {
            desc: copy,
            dest,
            raw: dest != Dest::Normal,
            ..*m
        };
        if dest == Dest::Normal {
            out.normal.push(c);
        } else {
            out.made.push(c);
        }
    }

    /// A new decision: the previous one is carried out first.
    #[inline(always)]
    fn decide<T: Tracer>(
        &mut self,
        frames: &mut Frames,
        m: &Meta,
        out: &mut Emitted,
        t: &mut T,
        dest: Dest,
    ) {
        self.flush(frames, m, out, t);
        self.0 = Some(dest);
    }

    /// The actions are over: the waiting decision takes the frame itself.
    #[inline(always)]
    fn finish<T: Tracer>(self, frames: &Frames, m: &mut Meta, t: &mut T) -> Outcome {
        match self.0 {
            Some(dest) => {
                t.sent(dest, m, frames);
                m.dest = dest;
                m.raw = dest != Dest::Normal;
                Outcome {
                    kept: true,
                    emitted: self.1,
                }
            }
            None => {
                if !self.1 {
                    t.line(|| "    no output action -> drop".into());
                }
                Outcome {
                    kept: false,
                    emitted: self.1,
                }
            }
        }
    }
}

/// The VLAN a port of mode `mode` admits a frame with 802.1Q id `tag` to (None: untagged or
/// priority-tagged), as `ethernet-input` does; None when it does not carry it (`vlan-denied`).
/// NORMAL applies it again to a frame whose tag the flows changed (OVS's
/// `input_vid_is_valid`: a frame a flow tagged on an access port is dropped).
pub(crate) fn admitted_vlan(mode: &VlanMode, tag: Option<u16>) -> Option<u16> {
    match tag.filter(|&v| v != 0) {
        None => mode.untagged_vlan(),
        Some(v) => match mode {
            _ if mode.carries_tag(v) && v != 4095 => Some(v),
            _ => None,
        },
    }
}

/// The VLAN NORMAL switches a frame in whose (VLAN, tagged) state was `before` at ingress and
/// is `now` after its actions: unchanged, `now`'s; changed, the one the input port's ingress
/// admits its 802.1Q id (`tag`, read only then) to, or None (`vlan-denied`). The datapath
/// (`readmit`) and `trace` both decide by this.
pub(crate) fn normal_vlan(
    mode: &VlanMode,
    before: (u16, bool),
    now: (u16, bool),
    tag: impl FnOnce() -> Option<u16>,
) -> Option<u16> {
    if now == before {
        return Some(now.0);
    }
    admitted_vlan(mode, tag())
}

/// The 802.1Q id of frame `m` as it is now (None: untagged).
pub(crate) fn tag_of(frames: &Frames, m: &Meta) -> Option<u16> {
    m.tagged
        .then(|| vlan::tci(frames.data(m.desc)).map(|t| t & 0x0fff))
        .flatten()
}

/// After the flows of a frame received as `before` (VLAN, tagged) ran: the frame itself (when
/// `kept` for NORMAL) and its copies for NORMAL from `normal[from..]` whose tag the actions
/// changed are admitted again as ingress would the frame as it is now (their VLAN set to the
/// one admitted), or dropped. Returns how many were dropped (`vlan-denied`).
#[cold]
#[inline(never)]
fn readmit(
    mode: &VlanMode,
    frames: &mut Frames,
    (m, kept): (&mut Meta, bool),
    (normal, from): (&mut Vec<Meta>, usize),
    before: (u16, bool),
) -> u64 {
    let mut denied = 0;
    let mut admit = |frames: &mut Frames, c: &mut Meta| -> bool {
        match normal_vlan(mode, before, (c.vlan, c.tagged), || tag_of(frames, c)) {
            Some(v) => {
                c.vlan = v;
                true
            }
            None => {
                frames.free(c.desc.addr);
                denied += 1;
                false
            }
        }
    };
    if kept && m.dest == Dest::Normal && !admit(frames, m) {
        m.dest = Dest::Pending;
    }
    let mut i = from;
    while i < normal.len() {
        if admit(frames, &mut normal[i]) {
            i += 1;
        } else {
            normal.remove(i);
        }
    }
    denied
}

/// Free the copies a frame whose translation went too deep made (from `made_from` and
/// `normal_from` on): OVS drops such a packet whole.
#[cold]
#[inline(never)]
fn take_back(frames: &mut Frames, out: &mut Emitted, made_from: usize, normal_from: usize) {
    for c in out
        .made
        .drain(made_from..)
        .chain(out.normal.drain(normal_from..))
    {
        frames.free(c.desc.addr);
    }
}

/// The translation went deeper than `MAX_DEPTH` nested resubmits or `MAX_LOOKUPS` lookups (a
/// loop in the tables, or a pipeline deeper than OVS allows): as OVS, the frame is dropped
/// whole, copies already made included (the caller takes them back when `stack.too_deep`),
/// and `trace` says so.
#[cold]
#[inline(never)]
fn too_deep<T: Tracer>(stack: &mut Stack, m: &mut Meta, t: &mut T) -> Outcome {
    if !stack.too_deep {
        t.line(|| {
            format!(
                "    too deep: more than {MAX_DEPTH} nested resubmits or {MAX_LOOKUPS} table \
                 lookups -> drop (flow-drop)"
            )
        });
    }
    stack.too_deep = true;
    m.dest = Dest::Pending;
    Outcome {
        kept: false,
        emitted: false,
    }
}

/// Run one frame through the tables and its flows' actions, in order (see `Pending`). The
/// datapath (`NoTrace`) and `trace` both run this.
#[allow(clippy::too_many_arguments)]
pub(crate) fn execute<T: Tracer>(
    ft: &mut FlowTable,
    frames: &mut Frames,
    port: Ingress,
    m: &mut Meta,
    out: &mut Emitted,
    now_ms: u64,
    credit: &mut Credit,
    stack: &mut Stack,
    t: &mut T,
) -> Outcome {
    let FlowTable {
        cls,
        emc,
        meters,
        ports,
        ct: conntrack,
        learned,
        groups,
        group_stats,
        ..
    } = ft;
    let events = crate::events::EventSink::default();
    let mut env = Env {
        cls,
        meters,
        ports,
        conntrack,
        learned,
        port,
        now_ms,
        events: &events,
        bridge: "",
        groups,
        group_stats,
    };
    execute_in(&mut env, emc, frames, m, out, credit, stack, t)
}

/// `execute` with the bridge's tables already taken apart (once per burst).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn execute_in<T: Tracer>(
    env: &mut Env,
    emc: &mut Emc,
    frames: &mut Frames,
    m: &mut Meta,
    out: &mut Emitted,
    credit: &mut Credit,
    stack: &mut Stack,
    t: &mut T,
) -> Outcome {
    let (words, cached) = first_key(env, frames.data(m.desc), m, stack, t);
    let (first, _) = first_flow(env.cls, emc, words, cached, stack);
    run_first(env, frames, m, out, credit, stack, t, first)
}

/// The packed key of frame `m` (bytes `data`) for its table-0 lookup, and whether the
/// exact-match cache may answer for it; resets the frame's ext fields first (IPv6 ones read
/// from the frame).
#[inline(always)]
fn first_key<T: Tracer>(
    env: &Env,
    data: &[u8],
    m: &Meta,
    stack: &mut Stack,
    _: &mut T,
) -> (Words, bool) {
    let (cls, port) = (env.cls, env.port);
    if stack.dirty {
        stack.ext = ExtKey::ZERO;
        stack.dirty = false;
    }
    if m.ethertype == EtherType::IPV6 {
        ipv6_ext(data, m, &mut stack.ext);
        stack.dirty = true;
    }
    if cls.reads_ip_fields() {
        ip_fields(data, m, &mut stack.ext);
        stack.dirty = true;
    }
    let words = words::frame_words(data, m, port.ofport, port.tun_id);
    (words, !T::DRY && cls.cacheable_type(m.ethertype))
}

/// The flow of table 0 for key `words` (through the exact-match cache if `cached`) and its
/// [`Single`] decision.
#[inline(always)]
fn first_flow(
    cls: &Classifier,
    emc: &mut Emc,
    words: Words,
    cached: bool,
    stack: &Stack,
) -> (Option<FlowId>, Single) {
    if cached {
        emc.lookup_single(cls, 0, words)
    } else {
        let first = cls.lookup_words_ext(0, &words, &stack.ext);
        (first, cls.single(first))
    }
}

/// Run frame `m`'s actions from its table-0 flow `first` (None: no flow matched, dropped).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn run_first<T: Tracer>(
    env: &mut Env,
    frames: &mut Frames,
    m: &mut Meta,
    out: &mut Emitted,
    credit: &mut Credit,
    stack: &mut Stack,
    t: &mut T,
    first: Option<FlowId>,
) -> Outcome {
    let Some(first) = first else {
        t.line(|| "table 0: no matching flow -> drop".into());
        return Pending(None, false).finish(frames, m, t);
    };
    let start = Start {
        prog: (first, 0),
        list: &[],
        table: 0,
        ct: (0, 0),
        base: 0,
    };
    (stack.lookups, stack.too_deep) = (1, false);
    run_actions(env, frames, m, out, credit, stack, t, start)
}

/// What `run_actions` works with besides the frame: the bridge's tables and where the frame came in.
struct Env<'a> {
    cls: &'a Classifier,
    meters: &'a mut Meters,
    ports: &'a OfPorts,
    conntrack: &'a mut super::ct::FlowConntrack,
    learned: &'a mut Vec<Flow>,
    port: Ingress,
    now_ms: u64,
    /// Where `controller` copies go.
    events: &'a crate::events::EventSink,
    /// The bridge's name (for those events).
    bridge: &'a str,
    /// The bridge's groups.
    groups: &'a std::collections::BTreeMap<u32, crate::flow::group::Group>,
    /// Their counters.
    group_stats: &'a mut std::collections::BTreeMap<u32, crate::flow::group::GroupStats>,
}

/// `FlowId` of the action list `Start::list` (a `clone(...)`'s actions) in `run`'s cursor.
const LIST: FlowId = FlowId(u32::MAX);

/// Where `run` starts: a flow (`prog = (id, 0)`), or the action list `list` (`prog = (LIST,
/// 0)`), in `table`, with the frame's `ct` (ct_state, ct_zone), using the resubmit stack from
/// `base` up.
struct Start<'l> {
    prog: (FlowId, usize),
    list: &'l [Action],
    table: u8,
    ct: (u8, u16),
    base: usize,
}

/// The action loop of `execute` (and of `clone(...)`, which runs it on a copy). Inlined into
/// `execute` so the datapath's loop keeps its registers; `clone` calls an out-of-line copy.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn run_actions<T: Tracer>(
    env: &mut Env,
    frames: &mut Frames,
    m: &mut Meta,
    out: &mut Emitted,
    credit: &mut Credit,
    stack: &mut Stack,
    t: &mut T,
    start: Start,
) -> Outcome {
    let (cls, port, now_ms) = (env.cls, env.port, env.now_ms);
    // (ct_state, ct_zone) after the last ct() action; 0 before any.
    let mut ct = start.ct;
    let mut pending = Pending(None, false);
    let base = start.base;
    let mut depth = base;
    let mut cur = start.prog;
    let mut table = start.table;
    // The actions of `cur.0` (a flow, or `start.list`); entering a flow credits it.
    let list = start.list;
    let actions_of = |id: FlowId| -> &[Action] {
        if id == LIST {
            list
        } else {
            cls.get(id).map_or(&[], |f| &f.actions)
        }
    };
    let enter = |id: FlowId, table: u8, len: u32, credit: &mut Credit, t: &mut T| {
        if let Some(flow) = cls.get(id) {
            if !T::DRY {
                credit.add(cls, id, u64::from(len), now_ms);
            }
            t.line(|| {
                // The flow's text names its table too (`table=3, ...`): once is enough.
                let text = flow.to_string();
                let prefix = format!("table={table}, ");
                let text = text.strip_prefix(&prefix).unwrap_or(&text);
                format!("table {table}: {text}")
            });
        }
        actions_of(id)
    };
    let mut actions = if cur.0 == LIST {
        list
    } else {
        enter(cur.0, table, m.desc.len, credit, t)
    };
    loop {
        let Some(action) = actions.get(cur.1) else {
            // This flow's actions are done: back to the flow that resubmitted, if any.
            if depth == base {
                return pending.finish(frames, m, t);
            }
            depth -= 1;
            cur = stack.frames[depth];
            actions = actions_of(cur.0);
            continue;
        };
        cur.1 += 1;
        match action {
            Action::Normal => pending.decide(frames, m, out, t, Dest::Normal),
            Action::Output(p) => match env.ports.port(p.num()) {
                // OpenFlow: output to the ingress port is dropped (IN_PORT sends there).
                Some(id) if id == port.id => {
                    t.line(|| format!("    output:{p}: the ingress port, skipped (use in_port)"))
                }
                Some(id) => pending.decide(frames, m, out, t, Dest::Port(id)),
                None => t.line(|| format!("    output:{p}: no such port in this bridge, skipped")),
            },
            Action::Flood => pending.decide(frames, m, out, t, Dest::Flood),
            // OFPP_ALL: FLOOD's ports and those set `no-flood` (a flow's flood skips only the
            // ingress port: no VLANs).
            Action::All => {
                t.line(|| "    ALL: every port of the bridge but the ingress one".into());
                pending.decide(frames, m, out, t, Dest::All)
            }
            Action::OutputTrunc(p, max_len) => match env.ports.port(p.num()) {
                Some(id) if id == port.id => {
                    t.line(|| format!("    {action}: the ingress port, skipped (use in_port)"))
                }
                Some(id) => {
                    pending.flush(frames, m, out, t);
                    pending.1 = true;
                    t.sent(Dest::Port(id), m, frames);
                    if !T::DRY {
                        truncated_copy(frames, m, out, id, *max_len);
                    }
                }
                None => t.line(|| format!("    {action}: no such port in this bridge, skipped")),
            },
            Action::InPort => pending.decide(frames, m, out, t, Dest::Port(port.id)),
            Action::Meter(id) => {
                let admit = T::DRY
                    || env
                        .meters
                        .get_mut(id)
                        .is_none_or(|meter| meter.admit(m.desc.len, now_ms));
                if !admit {
                    return pending.finish(frames, m, t);
                }
            }
            Action::Ct(a) => {
                pending.flush(frames, m, out, t);
                ct = (run_ct(env, frames, m, a, stack, t), a.zone);
                if let Some(tb) = a.table {
                    // Recirculate: the packet continues in table T with its ct_state; what
                    // follows ct(table=T) in this flow is not run (put it in table T).
                    stack.lookups += 1;
                    if stack.lookups > MAX_LOOKUPS {
                        return too_deep(stack, m, t);
                    }
                    let key = packet_key(frames.data(m.desc), m, port.ofport, port.tun_id, ct);
                    if cls.reads_ip_fields() {
                        // As the frame is now (a `dec_ttl` before the recirculation).
                        ip_fields(frames.data(m.desc), m, &mut stack.ext);
                    }
                    match cls.lookup_ext(tb, &key, &stack.ext) {
                        Some(id) => {
                            depth = base;
                            cur = (id, 0);
                            table = tb;
                            actions = enter(id, tb, m.desc.len, credit, t);
                        }
                        None => {
                            t.line(|| format!("table {tb}: no matching flow -> end"));
                            return pending.finish(frames, m, t);
                        }
                    }
                }
            }
            Action::Resubmit(tb) | Action::GotoTable(tb) => {
                stack.lookups += 1;
                if stack.lookups > MAX_LOOKUPS {
                    return too_deep(stack, m, t);
                }
                let key = packet_key(frames.data(m.desc), m, port.ofport, port.tun_id, ct);
                if cls.reads_ip_fields() {
                    // As the frame is now (a `dec_ttl` before the resubmit).
                    ip_fields(frames.data(m.desc), m, &mut stack.ext);
                }
                match (cls.lookup_ext(*tb, &key, &stack.ext), action) {
                    (Some(id), Action::Resubmit(_)) => {
                        // A resubmit that ends its flow has nothing to come back to: no
                        // level (OVS forwards a 253-table chain of them; found re-testing).
                        if cur.1 < actions.len() {
                            stack.frames[depth] = cur;
                            depth += 1;
                        }
                        cur = (id, 0);
                        table = *tb;
                        actions = enter(id, *tb, m.desc.len, credit, t);
                    }
                    (Some(id), _) => {
                        cur = (id, 0);
                        table = *tb;
                        actions = enter(id, *tb, m.desc.len, credit, t);
                    }
                    // A resubmit that matches nothing does nothing; goto to nothing ends here.
                    (None, Action::Resubmit(_)) => {
                        t.line(|| format!("table {tb}: no matching flow (resubmit does nothing)"))
                    }
                    (None, _) => {
                        t.line(|| format!("table {tb}: no matching flow -> end"));
                        return pending.finish(frames, m, t);
                    }
                }
                if depth >= MAX_DEPTH {
                    return too_deep(stack, m, t);
                }
            }
            Action::Clone(list) => {
                pending.flush(frames, m, out, t);
                let start = Start {
                    prog: (LIST, 0),
                    list,
                    table,
                    ct,
                    base: depth + 1,
                };
                if run_clone(env, frames, m, out, credit, stack, t, start) {
                    pending.1 = true;
                }
                if stack.too_deep {
                    return too_deep(stack, m, t);
                }
            }
            Action::CtClear => {
                ct = (0, 0);
                stack.ext.ct_mark = 0;
                stack.ext.ct_label = 0;
                stack.ext.ct_orig = (0, 0, 0, 0, 0);
                t.line(|| "    ct_clear: ct_state=0 ct_zone=0".into());
            }
            Action::Note(_) => {}
            Action::Group(g) => {
                pending.flush(frames, m, out, t);
                let at = (table, ct, depth);
                if groups::run(env, frames, m, out, credit, stack, t, *g, at) {
                    pending.1 = true;
                }
            }
            Action::Controller(c) => {
                t.line(|| format!("    {action}"));
                if !T::DRY {
                    to_controller(env, frames, m, c, (cur.0, table));
                }
                pending.1 = true;
            }
            Action::Learn(l) => {
                let key = packet_key(frames.data(m.desc), m, port.ofport, port.tun_id, ct);
                let f = l.flow(&key, &stack.ext);
                t.line(|| format!("    learn: {f}"));
                if !T::DRY {
                    env.learned.push(f);
                }
            }
            Action::Load(..) | Action::Move(..) | Action::SetField(SetField::Ext(..)) => {
                let f = register_write(frames.data(m.desc), m, port, ct, action, stack);
                t.line(|| format!("    {action}: {f}={:#x}", stack.ext.get(f)));
            }
            other => {
                pending.flush(frames, m, out, t);
                if T::DRY {
                    t.line(|| format!("    {}", Actions(std::slice::from_ref(other))));
                }
                if !rewrite(frames, m, other) {
                    t.line(|| "    dec_ttl: TTL expired -> stop".into());
                    return pending.finish(frames, m, t);
                }
            }
        }
    }
}

/// `controller(...)`: a PACKET_IN event with the frame as it is now (cut to `max_len`), from
/// flow `flow` of `table`; nothing is copied while no OpenFlow connection listens.
#[inline(never)]
fn to_controller(
    env: &Env,
    frames: &Frames,
    m: &Meta,
    c: &crate::flow::ToController,
    (flow, table): (FlowId, u8),
) {
    if !env.events.listening() {
        env.events.unheard();
        return;
    }
    let (cookie, table_miss) = env.cls.get(flow).map_or((0, false), |f| {
        (
            f.cookie,
            f.priority == 0 && f.m == crate::flow::Match::default(),
        )
    });
    // `mod-port no-packet-in` holds back table misses only, as OVS does: an explicit
    // `controller` action still sends.
    if env.port.no_packet_in && table_miss {
        return;
    }
    let data = frames.data(m.desc);
    let n = data.len().min(usize::from(c.max_len));
    env.events
        .send(crate::events::Event::PacketIn(crate::events::PacketIn {
            bridge: env.bridge.to_string(),
            table,
            cookie,
            reason: c.reason,
            table_miss,
            in_port: env.port.ofport,
            tun_id: env.port.tun_id,
            total_len: u16::try_from(data.len()).unwrap_or(u16::MAX),
            data: data[..n].to_vec(),
        }));
}

/// `ct(...)`: run connection tracking on the frame, set `ct_mark`/`ct_label` in the ext key;
/// returns the ct_state.
#[inline(never)]
fn run_ct<T: Tracer>(
    env: &mut Env,
    frames: &mut Frames,
    m: &Meta,
    a: &crate::flow::CtAction,
    stack: &mut Stack,
    t: &mut T,
) -> u8 {
    let dry;
    let a = if T::DRY {
        // trace: look the connection up, create and translate nothing.
        dry = crate::flow::CtAction {
            commit: false,
            nat: None,
            ..a.clone()
        };
        &dry
    } else {
        a
    };
    let r = env
        .conntrack
        .apply(frames, m, env.port.id, a, (env.now_ms / 1000) as u32);
    stack.ext.ct_mark = r.mark;
    stack.ext.ct_label = r.label;
    stack.ext.ct_orig = r.orig;
    stack.dirty = true;
    t.line(|| {
        format!(
            "    ct: ct_state={:#x} ct_zone={} ct_mark={:#x} ct_label={:#x}",
            r.state, a.zone, r.mark, r.label
        )
    });
    r.state
}

/// `clone(ACTIONS)`: run the actions on a copy of the frame (with a copy of its registers and
/// ct state); the copy goes where they decide, the frame and its registers stay as they are.
/// Returns whether the copy was sent somewhere.
#[allow(clippy::too_many_arguments)]
#[inline(never)]
fn run_clone<T: Tracer>(
    env: &mut Env,
    frames: &mut Frames,
    m: &Meta,
    out: &mut Emitted,
    credit: &mut Credit,
    stack: &mut Stack,
    t: &mut T,
    start: Start,
) -> bool {
    if start.base >= MAX_DEPTH {
        t.line(|| "    clone: too deep, skipped".into());
        return false;
    }
    let Some(desc) = frames.clone_frame(m.desc) else {
        return false;
    };
    t.line(|| "    clone: start".into());
    let mut c = Meta { desc, ..*m };
    let (ext, dirty) = (stack.ext, stack.dirty);
    let r = run_actions(env, frames, &mut c, out, credit, stack, t, start);
    (stack.ext, stack.dirty) = (ext, dirty);
    t.line(|| "    clone: end".into());
    match (r.kept, T::DRY) {
        (true, false) if c.dest == Dest::Normal => out.normal.push(c),
        (true, false) => out.made.push(c),
        _ => frames.free(c.desc.addr),
    }
    r.kept || r.emitted
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traced_ipv6_headers_parse_as_what_the_key_says() {
        for (proto, len) in [(6u8, 20u16), (17, 8)] {
            let k = PacketKey {
                dl_type: EtherType::IPV6,
                nw_proto: proto,
                nw_tos: 0xb8,
                tp_src: 1234,
                tp_dst: 80,
                ..PacketKey::default()
            };
            let b = trace_l3(&k, &crate::flow::ExtMatch::default());
            let (ip, rest) = etherparse::Ipv6Header::from_slice(&b).unwrap();
            assert_eq!(
                (ip.next_header.0, ip.payload_length, ip.traffic_class),
                (proto, len, 0xb8)
            );
            assert_eq!(rest.len(), len as usize);
            if proto == 6 {
                let (t, _) = etherparse::TcpHeader::from_slice(rest).unwrap();
                assert_eq!((t.source_port, t.destination_port, t.syn), (1234, 80, true));
                assert_eq!(t.header_len(), 20);
            } else {
                let (u, _) = etherparse::UdpHeader::from_slice(rest).unwrap();
                assert_eq!((u.source_port, u.destination_port, u.length), (1234, 80, 8));
            }
        }
    }
}
