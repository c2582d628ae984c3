//! L3 stage: the bridges' gateway interfaces and the router between them.
//!
//! Runs after the L2 forwarding decision and before output. It takes:
//! - ARP frames on a bridge with a gateway: requests for the gateway's address are answered
//!   (the request still floods, as on a Linux bridge with an address), and senders the router
//!   asked about are learned into the neighbour table;
//! - frames sent to a gateway's MAC (`Dest::Router`): ICMP echo to a gateway address is answered;
//!   other IPv4 is routed: TTL check (ICMP time exceeded), longest-prefix match (ICMP net
//!   unreachable), next-hop resolution by ARP (while the request is out the packet is held in
//!   the neighbour's short queue and sent when the reply arrives; overflow and failed resolutions
//!   are counted drops), MAC rewrite, TTL decrement with an incremental checksum update, MTU check with DF
//!   (ICMP fragmentation needed). The routed frame continues as `Dest::Port` of the egress
//!   bridge's port that learned the next hop's MAC, or as `Dest::Bridge(egress)` (flooded
//!   there) when the FDB does not know it.
//!
//! Reverse-path filtering (the bridge's `rp_filter`, strict by default) runs before anything
//! else on a packet sent to the gateway MAC: strict wants the route back to the source to
//! leave by the ingress bridge, loose wants some route back (counted `rp-filter`).
//!
//! A gateway subnet's directed broadcast address (10.0.0.255 of 10.0.0.1/24; none on /31 and
//! /32) is dropped as `ip-not-unicast`, from its own bridge or routed from another, as Linux
//! drops it by default (`bc_forwarding=0`, `icmp_echo_ignore_broadcasts=1`): never ARPed for.
//!
//! Documented rules: gateways live in VLAN 0 (untagged); fragments are routed like any packet;
//! IP options are kept (the header length is honoured) once they parse: options that do not
//! (`ip-bad-options`) and source routes (`ip-source-route`) are dropped, as Linux with its
//! default `accept_source_route=0` drops them; packets with a bad header checksum,
//! broadcast/multicast destinations sent to the gateway MAC, and TTL 0/1 are counted drops.
//! Frames the router creates (ARP, ICMP) are appended to `made` and delivered after the burst.

use super::{Dest, Meta, nat, vxlan};
use crate::conntrack::{
    ConnId, Conntrack, CtError, Direction, FlowKey, NatInfo, PROTO_TCP, PROTO_UDP,
};
use crate::counters::DropReason;
use crate::datapath::{Datapath, Gateway};
use crate::fdb::PortId;
use crate::neigh::{Held, Released, Resolve};
use crate::packet::{Desc, Frames};
use crate::route::{Route, RouteKind, RouteTable, RpFilter};
use crate::wire::{EtherType, IpProtocol, MacAddr, arp, ethernet, icmp, ipv4, transport};

/// Run the L3 stage over `meta` (frames received on `in_port` of `bridge`). Returns the number
/// of frames it handled (ARP, and frames sent to the router), for `show-runtime`.
pub(super) fn run(
    dp: &mut Datapath,
    frames: &mut Frames,
    bridge: u16,
    in_port: PortId,
    meta: &mut [Meta],
    made: &mut Vec<Meta>,
    now: u32,
) -> usize {
    let Some(mut burst) = Burst::new(dp, bridge, in_port) else {
        // No gateway on this bridge: nothing is addressed to a router.
        return 0;
    };
    let gw = burst.gw;
    let mut handled = 0;
    for m in meta.iter_mut() {
        if m.raw || matches!(m.dest, Dest::Pending | Dest::SamePort) {
            continue;
        }
        if m.ethertype == EtherType::ARP {
            handled += 1;
            // An ARP may change a neighbour the burst's routing decision holds.
            burst.last_hop = None;
            if m.vlan == 0 {
                arp_in(dp, frames, bridge, gw, in_port, m, made, now);
            }
            if matches!(m.dest, Dest::Router) {
                frames.free(m.desc.addr);
                m.dest = Dest::Pending;
            }
            continue;
        }
        if !matches!(m.dest, Dest::Router) {
            continue;
        }
        handled += 1;
        let verdict = if m.vlan != 0 {
            Err(DropReason::GatewayVlan)
        } else if m.ethertype != EtherType::IPV4 {
            Err(DropReason::LocalUnsupported)
        } else {
            ip_in(dp, frames, &mut burst, m, made, now)
        };
        if let Err(r) = verdict {
            drop_frame(dp, frames, in_port, m, r);
        }
    }
    handled
}

/// Route `m`, an untagged IPv4 frame of `burst` sent to its bridge's gateway MAC (VLAN 0,
/// `Dest::Router`), as [`run`] routes such a frame: on return its destination is decided (a
/// port, a bridge, `Dest::Decap`, or `Dest::Pending`: dropped and counted, or held).
#[inline(always)]
pub(super) fn route_ipv4(
    dp: &mut Datapath,
    frames: &mut Frames,
    burst: &mut Burst,
    m: &mut Meta,
    made: &mut Vec<Meta>,
    now: u32,
) {
    if let Err(r) = ip_in(dp, frames, burst, m, made, now) {
        drop_frame(dp, frames, burst.in_port, m, r);
    }
}

/// Count `r` on `in_port`, free the frame; nothing more is done with it.
#[inline(always)]
fn drop_frame(
    dp: &mut Datapath,
    frames: &mut Frames,
    in_port: PortId,
    m: &mut Meta,
    r: DropReason,
) {
    count_drop(dp, in_port, r);
    frames.free(m.desc.addr);
    m.dest = Dest::Pending;
}

/// The ingress side of one burst, read once, and one-entry caches of the burst's last route
/// and reverse-path lookups (VPP's last-hit caches): the route table does not change during a
/// burst, and the frames of a burst mostly belong to a few flows.
pub(super) struct Burst {
    pub(super) bridge: u16,
    pub(super) gw: Gateway,
    pub(super) in_port: PortId,
    /// The ingress bridge's reverse-path filter mode.
    rp: RpFilter,
    /// The ingress bridge is isolated.
    isolated: bool,
    /// Last destination looked up: its route, and what it is to the router.
    last_route: Option<([u8; 4], Option<Route>, Addressed)>,
    /// Last source checked by the reverse-path filter, and the verdict.
    last_rp: Option<([u8; 4], bool)>,
    /// Tracked connections found for the burst's TCP and UDP packets, with their translations
    /// (see [`CtHit`]), in [`CT_SLOTS`] slots chosen by the packets' tuple bytes: a burst of a
    /// few interleaved connections finds each in its own slot.
    conns: [Option<CtHit>; CT_SLOTS],
    /// Last next-hop MAC looked up in an egress bridge's FDB: (bridge, VLAN + MAC key, port).
    last_fdb: Option<(u16, u64, Option<PortId>)>,
    /// Last tunnel VXLAN was decapsulated for.
    last_decap: Option<vxlan::DecapHit>,
    /// NAT rules or tracked connections exist. Read once: without either at the start of the
    /// burst, none is created during it (only a rule creates a connection here; flows' `ct`
    /// ran before this stage).
    nat_on: bool,
    /// The burst's last routed destination (untranslated, or a tracked connection's after
    /// translation) and everything decided for it (see [`HopHit`]).
    last_hop: Option<HopHit>,
}

/// What a destination is to the router, besides its route ([`Burst::route`]).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Addressed {
    /// A gateway's own address.
    Gateway,
    /// A gateway subnet's directed broadcast address (not routed: `ip-not-unicast`).
    Broadcast,
    /// Anything else.
    Other,
}

/// Slots of the router's per-burst connection cache ([`Burst::ct_lookup`]).
const CT_SLOTS: usize = 16;

/// The slot of [`Burst`]'s connection cache for a packet with tuple bytes `b`.
#[inline(always)]
fn ct_slot(b: &nat::TupleBytes) -> usize {
    (b.mix() >> (64 - CT_SLOTS.trailing_zeros())) as usize
}

/// A tracked connection `lookup` found for a packet's tuple, kept for the burst's next packets
/// with that tuple: the connection's tuples never change while it lives, and its table slot
/// holds it until it is removed, so while the table counts no removal since
/// (`Conntrack::removals`) and it has not expired, the answer and the translation (the new
/// tuple and the checksum deltas, worked out once) are `lookup`'s.
#[derive(Clone, Copy)]
struct CtHit {
    key: FlowKey,
    /// The packet's tuple bytes (TCP, UDP): the burst's next packets are compared by these.
    bytes: Option<nat::TupleBytes>,
    id: ConnId,
    dir: Direction,
    removals: u64,
    /// None: the packet leaves with its own tuple.
    translation: Option<nat::Translation>,
}

impl CtHit {
    /// Translate `ip` (header length `hl`), a packet with this connection's tuple in its
    /// direction; returns its destination after translation.
    #[inline(always)]
    fn translate(&self, ip: &mut [u8], hl: usize) -> [u8; 4] {
        match &self.translation {
            Some(t) => {
                t.apply(ip, hl);
                t.to.dst
            }
            None => self.key.dst,
        }
    }
}

/// What routing decided for a destination (after any translation of a tracked connection's
/// packet; a new connection's NAT decision is never reused) for the rest of the burst: the route,
/// the egress bridge's facts (isolation, gateway, MTU), the next hop's resolved MAC and the
/// egress port do not change while the router stage runs (nothing it does on this path
/// changes the route table, the FDB or a resolved neighbour, and `now` is the burst's; an ARP
/// frame of the burst may change a neighbour, so it forgets the decision).
/// Per frame what depends on the frame is still checked: header and checksum, the
/// reverse-path filter (its own cache), TTL and the length against the MTU.
#[derive(Clone, Copy)]
struct HopHit {
    dst: [u8; 4],
    mtu: usize,
    /// The next hop's MAC and the egress gateway's, as `Meta` holds them.
    dst_mac: u64,
    src_mac: u64,
    /// The same two MACs as the frame's first 12 bytes hold them (written as they are).
    mac_bytes: [u8; 12],
    /// The egress port, or the egress bridge (flooded there: its FDB does not know the MAC).
    dest: Dest,
}

impl Burst {
    /// The router's state for a burst received on `in_port` of `bridge`; None if the bridge
    /// has no gateway (nothing is addressed to a router).
    #[inline(always)]
    pub(super) fn new(dp: &Datapath, bridge: u16, in_port: PortId) -> Option<Burst> {
        let b = dp.bridge(bridge)?;
        let gw = b.gateway?;
        Some(Burst {
            bridge,
            gw,
            in_port,
            rp: b.rp_filter,
            isolated: b.isolated,
            last_route: None,
            last_rp: None,
            conns: [None; CT_SLOTS],
            last_fdb: None,
            last_decap: None,
            nat_on: !dp.nat.rules.is_empty() || !dp.nat.ct.is_empty(),
            last_hop: None,
        })
    }

    /// `Routes::rp_ok` for this burst's bridge, through the one-entry cache; a martian source
    /// (the gateway's own address, 0.0.0.0, multicast or class E: spoofed or broken, as Linux
    /// has it) is refused whatever the mode.
    #[inline(always)]
    fn rp_ok(&mut self, routes: &RouteTable, src: [u8; 4]) -> bool {
        match self.last_rp {
            Some((s, ok)) if s == src => ok,
            _ => {
                let martian = src == self.gw.ip || src == [0; 4] || src[0] >= 224;
                let ok = !martian && routes.rp_ok(self.rp, self.bridge, src);
                self.last_rp = Some((src, ok));
                ok
            }
        }
    }

    /// `Conntrack::lookup`, with the translation of the packet's direction worked out once and
    /// kept for the burst's next packets with the same tuple `bytes` (see [`CtHit`]; the slot's
    /// earlier connection, if any, is forgotten). Packets without tuple bytes (ICMP) are not
    /// kept.
    #[inline(always)]
    fn ct_lookup(
        &mut self,
        ct: &mut Conntrack,
        k: &FlowKey,
        bytes: Option<nat::TupleBytes>,
        now: u32,
    ) -> Option<CtHit> {
        let (id, dir) = ct.lookup(k, now)?;
        let to = ct.conn(id).map_or(*k, |c| c.rewrite(dir));
        let h = CtHit {
            key: *k,
            bytes,
            id,
            dir,
            removals: ct.removals(),
            translation: (to != *k).then(|| nat::Translation::new(k, &to)),
        };
        if let Some(b) = bytes {
            self.conns[ct_slot(&b)] = Some(h);
        }
        Some(h)
    }

    /// The port of `bridge` that learned `mac` in `vlan` (None: unknown or a group address),
    /// through the one-entry cache (the FDB does not change while the router runs).
    #[inline(always)]
    fn egress_port(&mut self, dp: &Datapath, bridge: u16, vlan: u16, mac: u64) -> Option<PortId> {
        if super::ingress::is_group(mac) {
            return None;
        }
        let key = mac | (vlan as u64) << 48;
        if let Some((b, k, p)) = self.last_fdb
            && b == bridge
            && k == key
        {
            return p;
        }
        let p = dp.bridge(bridge).and_then(|b| b.fdb.lookup(vlan, mac));
        self.last_fdb = Some((bridge, key, p));
        p
    }

    /// The route to `dst`, and whether `dst` is a gateway's own address or its subnet's
    /// directed broadcast (either lies in that gateway's connected route), through the
    /// one-entry cache.
    #[inline(always)]
    fn route(&mut self, dp: &Datapath, dst: [u8; 4]) -> (Option<Route>, Addressed) {
        if let Some((d, r, to)) = self.last_route
            && d == dst
        {
            return (r, to);
        }
        let r = dp.routes.lookup(dst).copied();
        let gw = r.and_then(|r| match r.kind {
            RouteKind::Connected { bridge: b } => dp.bridge(b).and_then(|b| b.gateway),
            _ => None,
        });
        let to = match gw {
            Some(g) if g.ip == dst => Addressed::Gateway,
            Some(g) if g.is_broadcast(dst) => Addressed::Broadcast,
            _ => Addressed::Other,
        };
        self.last_route = Some((dst, r, to));
        (r, to)
    }
}

fn count_drop(dp: &mut Datapath, port: PortId, r: DropReason) {
    if let Some(p) = dp.port_mut(port) {
        p.counters.drop(r);
    }
}

/// Handle an ARP frame seen on a bridge whose gateway is `gw`. Out of line: ARP is rare next
/// to the frames `Pipeline::run` forwards, and inlined here its code (the learned-state record
/// with several workers) cost every forwarded frame ~9 instructions of register pressure
/// (callgrind, l2_forward).
#[allow(clippy::too_many_arguments)]
#[inline(never)]
fn arp_in(
    dp: &mut Datapath,
    frames: &mut Frames,
    bridge: u16,
    gw: Gateway,
    in_port: PortId,
    m: &Meta,
    made: &mut Vec<Meta>,
    now: u32,
) {
    let data = frames.data(m.desc);
    let Ok(a) = arp::Repr::parse(&data[m.l3 as usize..]) else {
        return;
    };
    // The gateway's address, or a `snat to=` address leaving by this bridge (proxy ARP).
    let ours = a.target_ip == gw.ip
        || (a.op == arp::Operation::Request && dp.nat.snat_address_on(bridge, a.target_ip));
    if a.sender_ip != [0; 4] && a.sender_ip != gw.ip {
        // Any ARP from a known sender updates it (a replaced host is followed at once); a reply
        // to us confirms; a new sender is learned only when it asks us and is on our subnet.
        let confirms = a.op == arp::Operation::Reply && a.target_ip == gw.ip;
        let on_subnet = gw.on_subnet(a.sender_ip);
        let may_create = ours && on_subnet;
        if let Some(r) =
            dp.neigh
                .arp_seen(bridge, a.sender_ip, a.sender_mac, now, confirms, may_create)
        {
            release(dp, frames, bridge, &r, made);
        }
        crate::learned::record(
            dp,
            crate::learned::Learned::Arp {
                bridge,
                ip: a.sender_ip,
                mac: a.sender_mac,
                confirms,
                may_create,
            },
        );
    }
    if a.op == arp::Operation::Request && ours && a.sender_ip != [0; 4] {
        let reply = arp::Repr {
            op: arp::Operation::Reply,
            sender_mac: gw.mac,
            sender_ip: a.target_ip,
            target_mac: a.sender_mac,
            target_ip: a.sender_ip,
        };
        if let Some(d) = build_arp(frames, a.sender_mac, gw.mac, &reply) {
            dp.router.arp_replies += 1;
            made.push(generated(
                d,
                a.sender_mac,
                gw.mac,
                EtherType::ARP,
                Dest::Port(in_port),
            ));
        }
    }
}

/// Handle an IPv4 packet sent to the gateway MAC. Ok: the frame was consumed or re-targeted.
#[inline(always)]
fn ip_in(
    dp: &mut Datapath,
    frames: &mut Frames,
    burst: &mut Burst,
    m: &mut Meta,
    made: &mut Vec<Meta>,
    now: u32,
) -> Result<(), DropReason> {
    let (bridge, in_port) = (burst.bridge, burst.in_port);
    let l3 = m.l3 as usize;
    // The frame's bytes, taken once for the fast paths (the hit of the burst's decision, a
    // packet of a connection the burst found already).
    let data = frames.data_mut(m.desc);
    let ipv4::Summary {
        src,
        dst,
        ttl,
        df,
        header_len: hl,
        total_len: total,
    } = ipv4::summary(data.get(l3..).unwrap_or_default()).map_err(|f| match f {
        ipv4::HeaderFault::Malformed => DropReason::IpMalformed,
        ipv4::HeaderFault::BadChecksum => DropReason::IpBadChecksum,
        ipv4::HeaderFault::BadOptions => DropReason::IpBadOptions,
        ipv4::HeaderFault::SourceRoute => DropReason::IpSourceRoute,
    })?;
    // (Class D and E, 255.255.255.255 among them, and 0.0.0.0.)
    if dst[0] >= 224 || dst == [0; 4] {
        return Err(DropReason::IpNotUnicast);
    }
    // Reverse-path filter: a source another bridge owns (a spoofed address) is not routed.
    if !burst.rp_ok(&dp.routes, src) {
        return Err(DropReason::RpFilter);
    }
    // The burst's last destination, decided already (no NAT): what is left is per frame.
    if !burst.nat_on && hop_hit(dp, data, burst.last_hop, m, (dst, ttl, total)) {
        return Ok(());
    }
    // NAT, first half: a packet of a tracked connection is translated now; a new one may match
    // a port mapping (DNAT), applied once the route is known.
    // Without rules or tracked connections there is nothing to translate: skip the lookups.
    let nat_on = burst.nat_on;
    let mut dst = dst;
    let mut tracked = false;
    // An ICMP error translated back (it has no key, and is the connection's own).
    let mut error_translated = false;
    let mut key = None;
    if nat_on {
        let mut bytes = None;
        if let Some(to) = same_conn(dp, data, burst, (l3, hl, total), now, &mut bytes) {
            // Translated: the rest is plain routing to `to`.
            if hop_hit(dp, data, burst.last_hop, m, (to, ttl, total)) {
                return Ok(());
            }
            tracked = true;
            dst = to;
        } else {
            key = match bytes {
                Some((b, flags)) => Some((b.key(), flags)),
                None => nat::flow_key(&frames.data(m.desc)[l3..l3 + total], hl),
            };
            let bytes = bytes.map(|(b, _)| b);
            if key.is_none() {
                let ip = &mut frames.data_mut(m.desc)[l3..l3 + total];
                match nat::piece(ip) {
                    // An ICMP error about a translated packet goes back to its real sender.
                    nat::Piece::Whole => {
                        if nat::translate_icmp_error(&mut dp.nat.ct, ip, hl, now) {
                            dst = ipv4::Packet::new_unchecked(&*ip).dst();
                            error_translated = true;
                        }
                    }
                    // A first fragment is its datagram's connection, as a whole packet would
                    // be; its later fragments find that connection through the datagram.
                    nat::Piece::First => {
                        key = nat::first_fragment_key(ip, hl);
                        if let Some((k, _)) = key {
                            dp.nat.frags.remember(nat::datagram_id(ip), k);
                        }
                    }
                    nat::Piece::Later => {
                        if let Some(to) = later_fragment(dp, ip, total, now) {
                            tracked = true;
                            dst = to;
                        }
                    }
                }
            }
            if let Some((k, flags)) = key
                && let Some(h) = burst.ct_lookup(&mut dp.nat.ct, &k, bytes, now)
            {
                tracked = true;
                dp.nat.ct.update(h.id, h.dir, total as u32, flags, now);
                dst = h.translate(&mut frames.data_mut(m.desc)[l3..l3 + total], hl);
            }
        }
    }
    let mut dnat = None;
    if !tracked && let Some((k, _)) = key {
        dnat = dp.nat.dest_for(k.proto, k.dst, k.dport, |b| {
            dp.bridge(b).and_then(|b| b.gateway).map(|g| g.ip)
        });
        if let Some((to, _)) = dnat {
            dst = to;
        }
    }
    // A tracked connection's packet, translated: the rest is plain routing to `dst`.
    if tracked
        && hop_hit(
            dp,
            frames.data_mut(m.desc),
            burst.last_hop,
            m,
            (dst, ttl, total),
        )
    {
        return Ok(());
    }
    let (route, to) = burst.route(dp, dst);
    // Addressed to one of our gateways, or to a gateway subnet's directed broadcast? (Both lie
    // in the gateway's connected route; one test on the routed path.)
    if to != Addressed::Other && (to == Addressed::Broadcast || (!tracked && dnat.is_none())) {
        // A subnet's directed broadcast is neither forwarded (Linux's `bc_forwarding=0`) nor
        // answered (`icmp_echo_ignore_broadcasts=1`), whichever bridge it came from: no ARP
        // for it.
        if to == Addressed::Broadcast {
            return Err(DropReason::IpNotUnicast);
        }
        let mut total = total;
        // A fragment of a datagram to us (VXLAN from a peer whose path fragments): put back
        // together first, as the kernel's VTEP would.
        if !dp.tunnels.is_empty() && is_udp_fragment(frames.data(m.desc), l3) {
            match reassemble(dp, frames, m, in_port) {
                Some(t) => total = t,
                None => return Ok(()),
            }
        }
        if !dp.tunnels.is_empty()
            && let Some(opened) = vxlan::decap(dp, frames, m, (hl, total), &mut burst.last_decap)?
        {
            match opened {
                vxlan::Opened::Inner(port, inner) => {
                    m.desc = inner;
                    m.dest = Dest::Decap(port);
                }
                vxlan::Opened::Dropped => {
                    frames.free(m.desc.addr);
                    m.dest = Dest::Pending;
                }
            }
            return Ok(());
        }
        // Only for the bridge's own hosts (its connected subnet), as Docker's embedded DNS
        // answers its containers alone: the uplink's gateway was an open recursive resolver
        // to any host routed to it. Others are refused as any port that serves nothing.
        if burst.gw.ip == dst
            && dp.punt.enabled()
            && burst.gw.on_subnet(src)
            && is_dns(frames.data(m.desc), l3, hl, total)
        {
            return punt_dns(dp, frames, bridge, burst.gw, in_port, m, (l3, total));
        }
        return local_in(
            dp,
            frames,
            m,
            (l3, hl, total),
            (dst, burst.gw),
            in_port,
            made,
        );
    }
    if ttl <= 1 {
        icmp_error(
            dp,
            frames,
            burst.gw,
            m,
            in_port,
            icmp::TIME_EXCEEDED,
            0,
            0,
            made,
        );
        return Err(DropReason::TtlExpired);
    }
    let Some(route) = route else {
        icmp_error(
            dp,
            frames,
            burst.gw,
            m,
            in_port,
            icmp::DEST_UNREACH,
            icmp::unreach::NET,
            0,
            made,
        );
        return Err(DropReason::NoRoute);
    };
    let egress = route.bridge();
    // The egress bridge's facts, read once.
    let (egress_isolated, out_gw, mtu) = dp.bridge(egress).map_or((false, None, 1500), |b| {
        (b.isolated, b.gateway, b.l3_mtu as usize)
    });
    if egress != bridge && burst.isolated && egress_isolated {
        // Docker's isolation of user networks: two isolated bridges do not route to each other.
        return Err(DropReason::BridgeIsolated);
    }
    let Some(out_gw) = out_gw else {
        return Err(DropReason::NoGateway);
    };
    // A packet with no key uvs can track (a later fragment before its first, a protocol other
    // than TCP/UDP/ICMP such as GRE or ESP, a header cut short, an ICMP error about no tracked
    // connection) that a source rule would translate is dropped rather than sent with its
    // untranslated (private) source address.
    if nat_on
        && !tracked
        && !error_translated
        && key.is_none()
        && dnat.is_none()
        && dp.nat.source_for(src, egress).is_some()
    {
        let ip = ipv4::Packet::new_unchecked(&frames.data(m.desc)[l3..]);
        return Err(if ip.is_fragment() {
            DropReason::NatFragment
        } else {
            DropReason::NatUntranslatable
        });
    }
    // NAT, second half: a new connection that a rule translates is tracked and rewritten.
    if !tracked && let Some((k, flags)) = key {
        let pool_of = |pools: [crate::conntrack::PoolId; 3]| match k.proto {
            PROTO_TCP => pools[0],
            PROTO_UDP => pools[1],
            _ => pools[2],
        };
        // Ports a translated connection must not take on the gateway address: port mappings'
        // host ports (a reply to one would be taken for a new mapped connection, and with
        // several workers steered to another worker) and the VXLAN UDP ports.
        let (rules, tunnel_ports) = (&dp.nat.rules, &dp.tunnel_udp_ports);
        let reserved = |port: u16| {
            crate::nat::mapped_port(rules, k.proto, port)
                || (k.proto == PROTO_UDP && tunnel_ports.contains(port))
        };
        let created = match dnat {
            // Hairpin: the mapped target sits on the bridge the client came from, so its answer
            // would go straight back and bypass us: also rewrite the source to the gateway.
            Some(to) if egress == bridge => Some(match dp.nat.hairpin_pools(egress) {
                Some(pools) => {
                    dp.nat
                        .ct
                        .snat_after(in_port, k, Some(to), pool_of(pools), now, reserved)
                }
                None => Err(CtError::NoSuchPool { pool: u16::MAX }),
            }),
            Some((to, to_port)) => Some(dp.nat.ct.create_nat_conn(
                in_port,
                k,
                NatInfo::dnat(to, to_port),
                now,
            )),
            None => match dp.nat.source_for(src, egress) {
                Some(pools) => {
                    Some(
                        dp.nat
                            .ct
                            .snat_after(in_port, k, None, pool_of(pools), now, reserved),
                    )
                }
                // Arrives untranslated, but its answers would match a source rule on the way
                // back: track it untranslated so they are seen as replies and left alone (the
                // first packet of a connection decides, as with Linux conntrack). Only such
                // connections are tracked, so the table holds nothing for plain routing.
                None if dp.nat.source_for(k.dst, bridge).is_some() => {
                    Some(dp.nat.ct.insert(in_port, k, now))
                }
                None => None,
            },
        };
        match created {
            Some(Ok(id)) => {
                let to = dp
                    .nat
                    .ct
                    .conn(id)
                    .map(|c| c.rewrite(Direction::Original))
                    .unwrap_or(k);
                dp.nat
                    .ct
                    .update(id, Direction::Original, total as u32, flags, now);
                if to != k {
                    nat::rewrite(&mut frames.data_mut(m.desc)[l3..l3 + total], hl, &k, &to);
                }
            }
            Some(Err(e @ CtError::PortsExhausted { .. })) => {
                log_limited(now, &e);
                return Err(DropReason::NatPortsExhausted);
            }
            Some(Err(e @ CtError::SourceLimit { .. })) => {
                log_limited(now, &e);
                return Err(DropReason::CtSourceLimit);
            }
            Some(Err(e)) => {
                log_limited(now, &e);
                return Err(DropReason::CtFull);
            }
            None => {}
        }
    }
    let next_hop = route.next_hop(dst.into()).octets();
    if next_hop == out_gw.ip {
        return Err(DropReason::NoRoute);
    }
    // A TCP super-frame leaves as segments: those must fit (see `gso`).
    let total = match m.desc.ol.gso_type() {
        Some(_) => super::gso::seg_l3_len(frames.data(m.desc), m.desc, l3),
        None => total,
    };
    if total > mtu && df {
        icmp_error(
            dp,
            frames,
            burst.gw,
            m,
            in_port,
            icmp::DEST_UNREACH,
            icmp::unreach::FRAG_NEEDED,
            mtu as u16,
            made,
        );
        return Err(DropReason::FragNeeded);
    }
    let hop = NextHop {
        bridge: egress,
        gw: out_gw,
        ip: next_hop,
    };
    if total > mtu {
        // Without DF a router fragments (`ip4-frag`).
        return fragmented(dp, frames, m, (ttl, mtu), hop, in_port, made, now);
    }
    let resolved = to_next_hop(dp, frames, m, ttl, hop, in_port, made, now)?;
    // The egress port now, from the egress bridge's FDB through the burst's cache (output would
    // look the same MAC up for every frame otherwise); an unknown MAC floods there.
    if let Dest::Bridge(b) = m.dest
        && let Some(p) = burst.egress_port(dp, b, m.vlan, m.dst)
    {
        m.dest = Dest::Port(p);
    }
    // Routed to a resolved neighbour, untranslated or as a tracked connection's packet (a new
    // connection's NAT decision is the frame's own): the rest of the burst's frames to `dst`
    // that need no NAT decision either reuse it.
    if resolved && (!nat_on || tracked) {
        burst.last_hop = Some(HopHit {
            dst,
            mtu,
            dst_mac: m.dst,
            src_mac: m.src,
            mac_bytes: ethernet::addr_bytes(m.dst, m.src),
            dest: m.dest,
        });
    }
    Ok(())
}

/// Whether the IPv4 packet at `l3` of `data` is a UDP fragment.
fn is_udp_fragment(data: &[u8], l3: usize) -> bool {
    let ip = ipv4::Packet::new_unchecked(&data[l3..]);
    ip.ip_protocol() == IpProtocol::UDP && ip.is_fragment()
}

/// Offer the fragment in `m` to the reassembly table: the datagram's total length once it is
/// complete (`m` then holds it); None when the fragment was taken (held, or dropped: counted
/// on `in_port`), `m` being then `Pending` (its frame is the table's or freed).
#[cold]
#[inline(never)]
fn reassemble(
    dp: &mut Datapath,
    frames: &mut Frames,
    m: &mut Meta,
    in_port: PortId,
) -> Option<usize> {
    use super::reassembly::Offer;
    let l3 = m.l3 as usize;
    let now_ms = dp.now_ms;
    match dp.reassembly.offer(frames, m.desc, l3, now_ms) {
        Offer::Done(whole) => {
            m.desc = whole;
            Some(whole.len as usize - l3)
        }
        Offer::Held => {
            m.dest = Dest::Pending;
            None
        }
        Offer::Dropped(_) => {
            m.dest = Dest::Pending;
            if let Some(p) = dp.port_mut(in_port) {
                p.counters.drop(DropReason::FragReassembly);
            }
            None
        }
    }
}

/// A routed packet over the egress MTU without DF: cut into fragments (see `fragment`), each
/// sent to the next hop as the packet would have been. The first stays in `m`; the others go
/// out after the burst (`made`). A piece that cannot be sent (its next hop's hold queue full)
/// is counted on the ingress port and freed.
#[cold]
#[inline(never)]
#[allow(clippy::too_many_arguments)]
fn fragmented(
    dp: &mut Datapath,
    frames: &mut Frames,
    m: &mut Meta,
    (ttl, mtu): (u8, usize),
    hop: NextHop,
    in_port: PortId,
    made: &mut Vec<Meta>,
    now: u32,
) -> Result<(), DropReason> {
    let l3 = m.l3 as usize;
    // The L4 checksum covers the whole datagram: complete a partial one before cutting.
    if m.desc.ol.is_partial() {
        let data = frames.data_mut(m.desc);
        let at = super::gso::locate(data).ok_or(DropReason::MtuExceeded)?;
        super::gso::complete(data, &at);
        m.desc.ol = crate::packet::Offload::NONE;
    }
    let mut pieces = Vec::new();
    super::fragment::fragment(frames, &mut m.desc, l3, mtu, &mut pieces)?;
    dp.router.fragmented += 1;
    dp.router.fragments += 1 + pieces.len() as u64;
    for d in pieces {
        let mut p = Meta { desc: d, ..*m };
        match to_next_hop(dp, frames, &mut p, ttl, hop, in_port, made, now) {
            Ok(_) if p.dest == Dest::Pending => {}
            Ok(_) => made.push(p),
            Err(r) => {
                frames.free(d.addr);
                if let Some(port) = dp.port_mut(in_port) {
                    port.counters.drops[r as usize] += 1;
                }
            }
        }
    }
    to_next_hop(dp, frames, m, ttl, hop, in_port, made, now).map(|_| ())
}

/// A later fragment (`ip`, `total` bytes) of a datagram whose first fragment belonged to a
/// tracked connection: counted on it and given its addresses (no ports to translate: the
/// first fragment carried them). Returns its destination; None when the datagram or its
/// connection is not known (the caller's NAT checks then decide).
#[cold]
#[inline(never)]
fn later_fragment(dp: &mut Datapath, ip: &mut [u8], total: usize, now: u32) -> Option<[u8; 4]> {
    let k = dp.nat.frags.recall(&nat::datagram_id(ip))?;
    let ct = &mut dp.nat.ct;
    let (id, dir) = ct.lookup(&k, now)?;
    let to = ct.conn(id)?.rewrite(dir);
    // Counted only: the first fragment's header made any state transition.
    ct.count(id, dir, total as u32, now);
    nat::put_addrs(ip, to.src, to.dst);
    Some(to.dst)
}

/// A packet of a connection an earlier packet of the burst found, in the same direction (the
/// burst's cache slot for its tuple bytes holds it: [`CtHit`]), which its tuple bytes tell
/// (`nat::tuple_bytes`: TCP and UDP, whole, not a fragment) without a key: counted on the
/// connection and translated. Returns its destination after translation; None (nothing done):
/// `miss` holds the packet's tuple bytes and TCP flags if it has them (its key is theirs), for
/// `Burst::ct_lookup`; else `flow_key` tells.
#[inline(always)]
fn same_conn(
    dp: &mut Datapath,
    data: &mut [u8],
    burst: &Burst,
    (l3, hl, total): (usize, usize, usize),
    now: u32,
    miss: &mut Option<(nat::TupleBytes, u8)>,
) -> Option<[u8; 4]> {
    let ip = &mut data[l3..l3 + total];
    let (b, flags) = nat::tuple_bytes(ip, hl)?;
    let ct = &mut dp.nat.ct;
    let h = match &burst.conns[ct_slot(&b)] {
        Some(h)
            if h.bytes == Some(b)
                && h.removals == ct.removals()
                && ct.update_live(h.id, h.dir, total as u32, flags, now) =>
        {
            h
        }
        _ => {
            *miss = Some((b, flags));
            return None;
        }
    };
    Some(h.translate(ip, hl))
}

/// Route `m` (IPv4 to `dst` with `ttl`, `total` bytes long) as the burst's last hop `h`
/// decided, if `h` is for `dst` and the frame passes what is its own (TTL, no segmentation,
/// the egress MTU); false: the frame takes the whole path (which answers the errors).
#[inline(always)]
fn hop_hit(
    dp: &mut Datapath,
    data: &mut [u8],
    h: Option<HopHit>,
    m: &mut Meta,
    (dst, ttl, total): ([u8; 4], u8, usize),
) -> bool {
    let Some(h) = h else { return false };
    if h.dst != dst || ttl <= 1 || m.desc.ol.gso_type().is_some() || total > h.mtu {
        return false;
    }
    let macs = (h.dst_mac, h.src_mac, h.mac_bytes);
    forward_routed(dp, data, m, ttl, macs, h.dest);
    true
}

/// The routed packet's rewrite, the same on the full path and the hit: TTL - 1 (checksum
/// updated), the next hop's and the egress gateway's MACs (packed as `Meta` holds them, and
/// as the frame's first 12 bytes: the burst decision makes those once), then on to `dest`;
/// counted routed.
#[inline(always)]
fn forward_routed(
    dp: &mut Datapath,
    data: &mut [u8],
    m: &mut Meta,
    ttl: u8,
    (dst_mac, src_mac, bytes): (u64, u64, [u8; 12]),
    dest: Dest,
) {
    dec_ttl(data, m.l3 as usize, ttl);
    if let Some(h) = data.first_chunk_mut::<12>() {
        *h = bytes;
    }
    (m.dst, m.src, m.dest) = (dst_mac, src_mac, dest);
    dp.router.routed += 1;
}

/// Where a routed packet leaves: egress bridge, its gateway, the next hop's address.
#[derive(Clone, Copy)]
struct NextHop {
    bridge: u16,
    gw: Gateway,
    ip: [u8; 4],
}

/// Rewrite a routed packet for `hop` and send it there, or hold it while the next hop resolves.
/// Ok(true): sent to a MAC the neighbour table holds as reachable (no probe due), which the
/// rest of the burst may reuse.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn to_next_hop(
    dp: &mut Datapath,
    frames: &mut Frames,
    m: &mut Meta,
    ttl: u8,
    hop: NextHop,
    in_port: PortId,
    made: &mut Vec<Meta>,
    now: u32,
) -> Result<bool, DropReason> {
    let (mac, resolved) = match dp.neigh.resolve(hop.bridge, hop.ip, now) {
        Resolve::Mac(mac) => (mac, true),
        Resolve::Probe(mac) => {
            send_request(dp, frames, hop.bridge, hop.gw, (hop.ip, mac), made);
            (mac, false)
        }
        r => {
            unresolved(dp, frames, m, ttl, hop, in_port, made, r)?;
            return Ok(false);
        }
    };
    let (dst_mac, src_mac) = (mac.to_u64(), hop.gw.mac.to_u64());
    let macs = (dst_mac, src_mac, ethernet::addr_bytes(dst_mac, src_mac));
    forward_routed(
        dp,
        frames.data_mut(m.desc),
        m,
        ttl,
        macs,
        Dest::Bridge(hop.bridge),
    );
    Ok(resolved)
}

/// Address the frame `data` from `src` to `dst`.
#[inline(always)]
fn set_macs(data: &mut [u8], dst: MacAddr, src: MacAddr) {
    ethernet::Frame::new_unchecked(data).set_addrs(dst, src);
}

/// TTL - 1 of the IPv4 header at `l3` (its checksum updated incrementally).
#[inline(always)]
fn dec_ttl(data: &mut [u8], l3: usize, ttl: u8) {
    debug_assert_eq!(data.get(l3 + 8), Some(&ttl));
    ipv4::Packet::new_unchecked(&mut data[l3..]).decrement_ttl();
}

/// The next hop is not resolved (`r`): hold the packet (TTL already decremented, MACs written
/// on release; it keeps its sender's MAC so a failed resolution can answer it), or, when
/// resolution failed, answer ICMP host unreachable and drop.
#[cold]
#[allow(clippy::too_many_arguments)]
fn unresolved(
    dp: &mut Datapath,
    frames: &mut Frames,
    m: &mut Meta,
    ttl: u8,
    hop: NextHop,
    in_port: PortId,
    made: &mut Vec<Meta>,
    r: Resolve,
) -> Result<(), DropReason> {
    if r == Resolve::Refused {
        return Err(DropReason::ArpPending);
    }
    if r == Resolve::Failed {
        if let Some(gw) = dp.bridge(bridge_of(dp, in_port)).and_then(|b| b.gateway) {
            let (ty, code) = (icmp::DEST_UNREACH, icmp::unreach::HOST);
            icmp_error(dp, frames, gw, m, in_port, ty, code, 0, made);
        }
        return Err(DropReason::ArpFailed);
    }
    if r == Resolve::SendRequest {
        arp_request(dp, frames, hop.bridge, hop.gw, hop.ip, made);
    }
    dec_ttl(frames.data_mut(m.desc), m.l3 as usize, ttl);
    let h = Held {
        desc: m.desc,
        l3: m.l3,
        in_port,
    };
    dp.neigh
        .hold(hop.bridge, hop.ip, h)
        .map_err(|_| DropReason::ArpQueueFull)?;
    dp.router.arp_queued += 1;
    m.dest = Dest::Pending;
    Ok(())
}

fn bridge_of(dp: &Datapath, port: PortId) -> u16 {
    dp.port(port).map_or(u16::MAX, |p| p.bridge)
}

/// Send the packets a resolution released on `bridge` (they were rewritten when held, but for
/// the MACs).
pub(super) fn release(
    dp: &mut Datapath,
    frames: &mut Frames,
    bridge: u16,
    r: &Released,
    made: &mut Vec<Meta>,
) {
    let Some(gw) = dp.bridge(bridge).and_then(|b| b.gateway) else {
        for h in r.frames() {
            frames.free(h.desc.addr);
        }
        return;
    };
    for h in r.frames() {
        set_macs(frames.data_mut(h.desc), r.mac, gw.mac);
        let mut g = generated(h.desc, r.mac, gw.mac, EtherType::IPV4, Dest::Bridge(bridge));
        g.l3 = h.l3;
        g.tagged = h.l3 as usize != 14;
        made.push(g);
        dp.router.routed += 1;
    }
}

/// A packet for the gateway address `to` (`ingress`: the ingress bridge's gateway): answer ICMP
/// echo in place, refuse the rest (`local_refuse`).
fn local_in(
    dp: &mut Datapath,
    frames: &mut Frames,
    m: &mut Meta,
    (l3, hl, total): (usize, usize, usize),
    (to, ingress): ([u8; 4], Gateway),
    in_port: PortId,
    made: &mut Vec<Meta>,
) -> Result<(), DropReason> {
    let data = frames.data_mut(m.desc);
    let (eth, ip) = data.split_at_mut(l3);
    let (header, l4) = ip[..total].split_at_mut(hl);
    let mut ip = ipv4::Packet::new_unchecked(header);
    if ip.ip_protocol() != IpProtocol::ICMP {
        let answering = super::local_refuse::answering(to, ingress);
        return super::local_refuse::refuse(
            dp,
            frames,
            m,
            (l3, hl, total),
            answering,
            in_port,
            made,
        );
    }
    let mut echo = icmp::Message::new_checked(l4).map_err(|_| DropReason::LocalUnsupported)?;
    if echo.msg_type() != icmp::ECHO_REQUEST {
        return Err(DropReason::LocalUnsupported);
    }
    // Echo reply: swap MACs and addresses, type 8 -> 0, TTL 64, checksums updated (the
    // request's header checksum was verified on the way in: the updates keep it right).
    let mut f = ethernet::Frame::new_unchecked(eth);
    let (dmac, smac) = (f.dst(), f.src());
    f.set_dst(smac);
    f.set_src(dmac);
    let (src, dst) = (ip.src(), ip.dst());
    ip.set_src(dst);
    ip.set_dst(src);
    ip.set_ttl(64);
    echo.set_msg_type(icmp::ECHO_REPLY);
    m.dst = smac.to_u64();
    m.src = dmac.to_u64();
    m.dest = Dest::Port(in_port);
    dp.router.echo_replies += 1;
    Ok(())
}

/// A whole (unfragmented) UDP or TCP packet to port 53.
fn is_dns(data: &[u8], l3: usize, hl: usize, total: usize) -> bool {
    let ip = ipv4::Packet::new_unchecked(&data[l3..]);
    let proto = ip.ip_protocol();
    (proto == IpProtocol::UDP || proto == IpProtocol::TCP)
        && !ip.is_fragment()
        && total >= hl + 4
        && transport::Ports::new_unchecked(proto, &data[l3 + hl..]).dst_port() == 53
}

/// A DNS query to the ingress bridge's own gateway: copied to the DNS service (see
/// `dns::punt`), the frame freed.
#[cold]
#[inline(never)]
fn punt_dns(
    dp: &mut Datapath,
    frames: &mut Frames,
    bridge: u16,
    gw: Gateway,
    in_port: PortId,
    m: &mut Meta,
    (l3, total): (usize, usize),
) -> Result<(), DropReason> {
    // A container's veth leaves TCP/UDP checksums to offload: the DNS service's TCP stack
    // checks them (it dropped every SYN from an afpacket or TAP port), so finish it here.
    if m.desc.ol.is_partial() {
        let data = frames.data_mut(m.desc);
        if let Some(at) = super::gso::locate(data) {
            super::gso::complete(data, &at);
        }
    }
    let data = frames.data(m.desc);
    let ip = &data[l3..l3 + total];
    let src = ipv4::Packet::new_unchecked(ip).src();
    let p = crate::dns::punt::Punted {
        bridge,
        bridge_name: dp
            .bridge(bridge)
            .map(|b| b.name.clone())
            .unwrap_or_default(),
        in_port,
        client_mac: ethernet::Frame::new_unchecked(data).src().0,
        gw_mac: gw.mac.0,
        gw_len: gw.len,
        packet: ip.to_vec(),
    };
    let now_ms = dp.now_ms;
    dp.punt.offer(src, p, now_ms)?;
    frames.free(m.desc.addr);
    m.dest = Dest::Pending;
    Ok(())
}

/// Metadata of a frame the router made (untagged, VLAN 0).
fn generated(d: Desc, dst: MacAddr, src: MacAddr, ethertype: u16, dest: Dest) -> Meta {
    Meta {
        desc: d,
        vlan: 0,
        tagged: false,
        dst: dst.to_u64(),
        src: src.to_u64(),
        ethertype,
        l3: 14,
        dest,
        raw: false,
    }
}

/// A new frame holding an Ethernet header and an ARP packet.
fn build_arp(frames: &mut Frames, dst: MacAddr, src: MacAddr, a: &arp::Repr) -> Option<Desc> {
    let mut d = frames.alloc()?;
    d.len = 60; // minimum Ethernet frame (without FCS), zero padded
    let b = frames.data_mut(d);
    b.fill(0);
    let mut f = ethernet::Frame::new_unchecked(&mut *b);
    f.set_addrs(dst, src);
    f.set_ethertype(EtherType::ARP);
    a.emit(&mut b[14..14 + arp::PACKET_LEN]);
    Some(d)
}

/// Broadcast an ARP request for `ip` from `gw` on `bridge`.
pub(super) fn arp_request(
    dp: &mut Datapath,
    frames: &mut Frames,
    bridge: u16,
    gw: Gateway,
    ip: [u8; 4],
    made: &mut Vec<Meta>,
) {
    send_request(dp, frames, bridge, gw, (ip, MacAddr::BROADCAST), made);
}

/// Send an ARP request for `ip` from `gw` on `bridge` to `dst` (broadcast, or the known MAC for
/// a unicast probe).
pub(super) fn send_request(
    dp: &mut Datapath,
    frames: &mut Frames,
    bridge: u16,
    gw: Gateway,
    (ip, dst): ([u8; 4], MacAddr),
    made: &mut Vec<Meta>,
) {
    let req = arp::Repr {
        op: arp::Operation::Request,
        sender_mac: gw.mac,
        sender_ip: gw.ip,
        target_mac: MacAddr::default(),
        target_ip: ip,
    };
    if let Some(d) = build_arp(frames, dst, gw.mac, &req) {
        dp.router.arp_requests += 1;
        made.push(generated(
            d,
            dst,
            gw.mac,
            EtherType::ARP,
            Dest::Bridge(bridge),
        ));
    }
}

/// Send an ICMP error about the packet in `m` back to its sender, from `gw`'s address. `extra`
/// is the next-hop MTU for fragmentation needed. Errors are never sent about ICMP errors.
#[allow(clippy::too_many_arguments)]
#[cold]
#[inline(never)]
pub(super) fn icmp_error(
    dp: &mut Datapath,
    frames: &mut Frames,
    gw: Gateway,
    m: &Meta,
    in_port: PortId,
    ty: u8,
    code: u8,
    extra: u16,
    made: &mut Vec<Meta>,
) {
    // Fragmentation needed is never limited (Linux: "don't limit PMTU discovery"): a sender
    // that does not learn the path MTU stalls.
    let pmtu = ty == icmp::DEST_UNREACH && code == icmp::unreach::FRAG_NEEDED;
    if !pmtu && !dp.icmp_limit.allow(dp.now_ms) {
        dp.router.icmp_rate_limited += 1;
        return;
    }
    let l3 = m.l3 as usize;
    let (orig_src, quote) = {
        let ip = &frames.data(m.desc)[l3..];
        let h = ipv4::Packet::new_unchecked(ip);
        let hl = h.header_len();
        // No error about an error (any ICMP but an echo, even a truncated one).
        let ty = ip.get(hl).copied();
        if h.ip_protocol() == IpProtocol::ICMP
            && ty.is_some_and(|t| !matches!(t, icmp::ECHO_REQUEST | icmp::ECHO_REPLY))
        {
            return;
        }
        // The offending packet's header and first 8 bytes of payload (RFC 792).
        let q = (hl + 8).min(ip.len());
        let mut quote = [0u8; 68];
        quote[..q].copy_from_slice(&ip[..q]);
        (h.src(), (quote, q))
    };
    let Some(mut d) = frames.alloc() else { return };
    let (quote, qlen) = quote;
    let ip_len = 20 + icmp::HEADER_LEN + qlen;
    d.len = (14 + ip_len).max(60) as u32;
    let src_mac = MacAddr::from_u64(m.src);
    let b = frames.data_mut(d);
    b.fill(0);
    let mut f = ethernet::Frame::new_unchecked(&mut *b);
    f.set_dst(src_mac);
    f.set_src(gw.mac);
    f.set_ethertype(EtherType::IPV4);
    let (header, message) = b[14..14 + ip_len].split_at_mut(20);
    let mut ip = ipv4::Packet::new_unchecked(header);
    ip.set_header(IpProtocol::ICMP, gw.ip, orig_src, ip_len as u16);
    ip.fill_checksum();
    let mut e = icmp::Message::new_unchecked(message);
    e.set_header(ty, code, extra as u32);
    e.body_mut()[..qlen].copy_from_slice(&quote[..qlen]);
    e.fill_checksum();
    // About a translated packet (masquerade, a port mapping): it quotes the packet as it was
    // translated, so it is translated back as an error from elsewhere would be: its sender
    // must recognise its own packet (a container behind masquerade never learns the path MTU
    // otherwise, and TCP stalls on a smaller link).
    if !dp.nat.rules.is_empty() {
        let now = (dp.now_ms / 1000) as u32;
        let ip = &mut b[14..14 + ip_len];
        nat::translate_icmp_error(&mut dp.nat.ct, ip, 20, now);
    }
    dp.router.icmp_errors += 1;
    // Back out of the port the offending packet came in on: its sender is behind it.
    made.push(generated(
        d,
        src_mac,
        gw.mac,
        EtherType::IPV4,
        Dest::Port(in_port),
    ));
}

/// A held packet whose next hop failed to resolve: answer its sender with ICMP host
/// unreachable from the ingress bridge's gateway (as Linux does), then free it. VXLAN outer
/// packets (held for a tunnel port) are only freed.
pub(super) fn unreachable(dp: &mut Datapath, frames: &mut Frames, h: Held, made: &mut Vec<Meta>) {
    let port = dp.port(h.in_port);
    let gw = port
        .filter(|p| p.tunnel.is_none())
        .and_then(|p| dp.bridge(p.bridge))
        .and_then(|b| b.gateway);
    if let Some(gw) = gw {
        let src = MacAddr::from_bytes(&frames.data(h.desc)[6..12]);
        let mut m = generated(h.desc, gw.mac, src, EtherType::IPV4, Dest::Pending);
        m.l3 = h.l3;
        icmp_error(
            dp,
            frames,
            gw,
            &m,
            h.in_port,
            icmp::DEST_UNREACH,
            icmp::unreach::HOST,
            0,
            made,
        );
    }
    frames.free(h.desc.addr);
}

/// Print a NAT failure at most once per second (the drop counters count every one).
#[cold]
fn log_limited(now: u32, e: &CtError) {
    use std::sync::atomic::{AtomicU32, Ordering};
    static LAST: AtomicU32 = AtomicU32::new(0);
    if LAST.swap(now, Ordering::Relaxed) != now {
        tracing::warn!("NAT: {e} (packet dropped; see `uvs ctl stats`)");
    }
}

/// A gratuitous ARP for `bridge`'s gateway (sent when the address is set or changed, so hosts
/// update caches that held an old MAC). Returns its metadata, or None without a gateway or a
/// free frame.
pub(super) fn gratuitous_arp(dp: &Datapath, frames: &mut Frames, bridge: u16) -> Option<Meta> {
    let gw = dp.bridge(bridge)?.gateway?;
    let a = arp::Repr {
        op: arp::Operation::Request,
        sender_mac: gw.mac,
        sender_ip: gw.ip,
        target_mac: MacAddr::default(),
        target_ip: gw.ip,
    };
    let d = build_arp(frames, MacAddr::BROADCAST, gw.mac, &a)?;
    Some(generated(
        d,
        MacAddr::BROADCAST,
        gw.mac,
        EtherType::ARP,
        Dest::Bridge(bridge),
    ))
}
