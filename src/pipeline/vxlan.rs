//! VXLAN encapsulation and decapsulation (RFC 7348) over a underlay routed by uvs itself.
//!
//! - `encap` drains the queues of tunnel ports after a burst: each frame gets outer Ethernet,
//!   IPv4, UDP and VXLAN headers written into its headroom (the payload does not move), toward
//!   the VTEP behind its destination MAC, or one copy per remote VTEP (head-end replication) for
//!   broadcast, multicast and unknown unicast. The outer destination MAC comes from the router's
//!   ARP cache on the underlay bridge (while it resolves, the outer packet waits in the
//!   neighbour's hold queue, as routed packets do); the UDP source port is a hash of the inner
//!   headers (ECMP entropy, as the Linux kernel does), the UDP checksum is zero (allowed for
//!   IPv4). Frames that would exceed the underlay MTU are dropped and counted (`mtu-exceeded` on
//!   the tunnel port).
//! - `decap` takes a UDP packet addressed to a gateway address: if a tunnel listens on that
//!   address and port, the VXLAN header is checked (I flag, known VNI, listed remote VTEP,
//!   lengths) and the inner frame is cut out by moving the frame start; it then enters the
//!   tunnel's bridge through the tunnel port (the pipeline runs it as a burst from that port).

use super::{Dest, Meta, l3};
use crate::counters::DropReason;
use crate::datapath::Datapath;
use crate::fdb::PortId;
use crate::neigh::{Held, Resolve};
use crate::packet::{Desc, Frames};
use crate::udp_port_set::UdpPortSet;
use crate::wire::checksum::{fold, sum};
use crate::wire::vxlan::{self, OVERHEAD};
use crate::wire::{EtherType, IpProtocol, MacAddr, ethernet, ipv4, udp};

/// Encapsulate every frame queued on a tunnel port; the outer frames are appended to `made`
/// (to be delivered in their underlay bridge). `scratch` is reused between calls. Returns the
/// number of frames taken from the tunnel ports' queues.
pub(super) fn encap(
    dp: &mut Datapath,
    frames: &mut Frames,
    made: &mut Vec<Meta>,
    scratch: &mut Vec<Desc>,
    now: u32,
) -> usize {
    let mut n = 0;
    let mut out = Encapped {
        made,
        last: None,
        last_remote: None,
        sent: (0, 0),
    };
    for i in 0..dp.tunnels.len() {
        let p = dp.tunnels[i];
        if dp.out[p as usize].is_empty() {
            continue;
        }
        if let Some(s) = dp.ports.get_mut(p as usize).and_then(|s| s.as_mut())
            && s.config.drops_tx()
        {
            // `mod-port down|no-forward` on the tunnel port: nothing is encapsulated.
            let q = &mut dp.out[p as usize];
            s.counters.drops[DropReason::PortNoFwd as usize] += q.len() as u64;
            for d in q.drain(..) {
                frames.free(d.addr);
            }
            continue;
        }
        std::mem::swap(&mut dp.out[p as usize], scratch);
        n += scratch.len();
        for d in scratch.drain(..) {
            encap_one(dp, frames, p, d, &mut out, now);
        }
        let (packets, bytes) = std::mem::take(&mut out.sent);
        if let Some(s) = dp.port_mut(p) {
            s.counters.tx_packets += packets;
            s.counters.tx_bytes += bytes;
        }
    }
    n
}

/// Where outer frames go, and a one-entry cache of the last remote VTEP's resolved underlay
/// path (VPP's adjacency reuse): the frames drained in one call mostly go to a few VTEPs, and
/// routes, neighbours and FDBs do not change during the call, so the route lookup, neighbour
/// resolution and egress FDB lookup run once per remote, not once per frame.
struct Encapped<'a> {
    made: &'a mut Vec<Meta>,
    /// The last (tunnel port, remote) sent to: its resolved underlay, the destination the
    /// outer frames take, and their headers.
    last: Option<Cached>,
    /// The last (tunnel port, VLAN << 48 | destination MAC) looked up in its tunnel's
    /// MAC-to-VTEP table, and the remote found (the table does not change during the call).
    last_remote: Option<(PortId, u64, [u8; 4])>,
    /// Outer frames made (and their bytes) for the tunnel port being drained: its `tx`
    /// counters, added once per port.
    sent: (u64, u64),
}

/// A resolved (tunnel port, remote VTEP) pair (see [`Encapped`]).
#[derive(Clone, Copy)]
struct Cached {
    port: PortId,
    remote: [u8; 4],
    underlay: Underlay,
    dest: Dest,
    outer: Outer,
    /// The outer frames' MACs as the pipeline keys them (`Meta::dst`, `Meta::src`).
    dst_mac: u64,
    src_mac: u64,
    /// When `dest` is one port that the (untagged) outer frames leave unchanged: that port and
    /// the longest frame its MTU takes. Outer frames within it go straight onto the port's
    /// queue (VPP's encap node hands its adjacency's interface the frame), not through
    /// another output pass, which would only find the same (see `output::plain_egress`).
    direct: Option<(PortId, u32)>,
}

pub(super) fn count(dp: &mut Datapath, p: PortId, r: DropReason) {
    if let Some(s) = dp.port_mut(p) {
        s.counters.drop(r);
    }
}

/// Up to this many remote VTEPs get a copy of one flooded frame.
const MAX_FANOUT: usize = 64;

/// The tunnel settings an outer header needs: local address, VNI, UDP port, TTL, DF.
type Conf = ([u8; 4], u32, u16, u8, bool);

fn encap_one(
    dp: &mut Datapath,
    frames: &mut Frames,
    p: PortId,
    d: Desc,
    out: &mut Encapped<'_>,
    now: u32,
) {
    // One look at the frame for all three (its outer UDP source port too).
    let (dst, vlan, sport) = {
        let data = frames.data(d);
        let vlan = crate::wire::vlan::tci(data).map_or(0, |t| t & 0x0fff);
        (
            ethernet::Frame::new_unchecked(data).dst_u64(),
            vlan,
            source_port(data),
        )
    };
    let key = (vlan as u64) << 48 | dst;
    let remote = match out.last_remote {
        Some((lp, lk, r)) if lp == p && lk == key => Some(r),
        _ => {
            let Some(s) = dp.port(p) else {
                frames.free(d.addr);
                return;
            };
            let Some(t) = s.tunnel.as_ref() else {
                frames.free(d.addr);
                return;
            };
            // The table's VTEP only while the bridge's FDB still has the MAC on this port: a
            // MAC aged out or flushed there is unknown unicast again, sent to every remote.
            let bvlan = s.vlan.bridge_vlan(vlan);
            let r = t.remote_of(bvlan, dst).filter(|_| {
                dp.bridge(s.bridge)
                    .is_some_and(|b| b.fdb.lookup(bvlan, dst) == Some(p))
            });
            out.last_remote = r.map(|r| (p, key, r));
            r
        }
    };
    match remote {
        // The common case: one known VTEP, no copy of the remote list.
        Some(r) if !super::ingress::is_group(dst) => {
            send_to(dp, frames, (p, d), r, sport, out, now);
        }
        _ => flood(dp, frames, p, d, sport, out, now),
    }
}

/// Head-end replication: one copy of `d` per remote VTEP of tunnel port `p`.
#[inline(never)]
fn flood(
    dp: &mut Datapath,
    frames: &mut Frames,
    p: PortId,
    d: Desc,
    sport: u16,
    out: &mut Encapped<'_>,
    now: u32,
) {
    let mut remotes = [[0u8; 4]; MAX_FANOUT];
    let n = match dp.port(p).and_then(|s| s.tunnel.as_ref()) {
        Some(t) => {
            let n = t.conf.remotes.len().min(MAX_FANOUT);
            remotes[..n].copy_from_slice(&t.conf.remotes[..n]);
            n
        }
        None => 0,
    };
    if n == 0 {
        count(dp, p, DropReason::VxlanNoRemote);
        frames.free(d.addr);
        return;
    }
    for (i, remote) in remotes[..n].iter().enumerate() {
        let copy = if i + 1 == n {
            Some(d)
        } else {
            frames.clone_frame(d)
        };
        let Some(copy) = copy else {
            count(dp, p, DropReason::NoBuffer);
            continue;
        };
        send_to(dp, frames, (p, copy), *remote, sport, out, now);
    }
}

/// Encapsulate frame `d` of tunnel port `p` toward `remote` and hand the outer frame on (or
/// hold it while the underlay next hop resolves).
#[inline(always)]
fn send_to(
    dp: &mut Datapath,
    frames: &mut Frames,
    (p, copy): (PortId, Desc),
    remote: [u8; 4],
    sport: u16,
    out: &mut Encapped<'_>,
    now: u32,
) {
    // A hit borrows the cached headers: no copy of the template per frame.
    if let Some(c) = out
        .last
        .as_ref()
        .filter(|c| c.port == p && c.remote == remote)
    {
        return emit_outer(dp, frames, (p, copy), sport, c, out.made, &mut out.sent);
    }
    let Some(conf) = dp.port(p).and_then(|s| s.tunnel.as_ref()).map(|t| {
        let c = &t.conf;
        (c.local_ip, c.vni, c.dst_port, c.ttl, c.df)
    }) else {
        frames.free(copy.addr);
        return;
    };
    match underlay(dp, frames, remote, out.made, now) {
        Ok(u) => {
            let (_, src_mac, dst_mac, _, _) = u;
            let dest = egress(dp, &u);
            let direct = match dest {
                Dest::Port(e) => super::output::plain_egress(dp, e, 0).map(|max| (e, max)),
                _ => None,
            };
            let c = Cached {
                port: p,
                remote,
                underlay: u,
                dest,
                outer: Outer::new((src_mac, dst_mac.unwrap_or_default()), conf, remote),
                dst_mac: dst_mac.unwrap_or_default().to_u64(),
                src_mac: src_mac.to_u64(),
                direct,
            };
            emit_outer(dp, frames, (p, copy), sport, &c, out.made, &mut out.sent);
            if dst_mac.is_some() {
                out.last = Some(c);
            }
        }
        Err(r) => {
            count(dp, p, r);
            frames.free(copy.addr);
        }
    }
}

/// Prepend `c`'s outer headers to frame `copy` of tunnel port `p` and queue the outer frame
/// in `made` (or hold it while the underlay next hop resolves).
#[inline(always)]
fn emit_outer(
    dp: &mut Datapath,
    frames: &mut Frames,
    (p, copy): (PortId, Desc),
    sport: u16,
    c: &Cached,
    made: &mut Vec<Meta>,
    sent: &mut (u64, u64),
) {
    let (bridge, _, dst_mac, mtu, nh) = c.underlay;
    if copy.len as usize + OVERHEAD - 14 > mtu {
        count(dp, p, DropReason::MtuExceeded);
        frames.free(copy.addr);
        return;
    }
    let outer = c.outer.prepend(frames, copy, sport);
    sent.0 += 1;
    sent.1 += outer.len as u64;
    if dst_mac.is_none() {
        // The VTEP's next hop is resolving: the outer packet waits for the reply (the release
        // writes its destination MAC), like a routed packet.
        let h = Held {
            desc: outer,
            l3: 14,
            in_port: p,
        };
        if dp.neigh.hold(bridge, nh, h).is_err() {
            count(dp, p, DropReason::ArpQueueFull);
            frames.free(outer.addr);
        }
        return;
    }
    if let Some((e, max)) = c.direct
        && outer.len <= max
    {
        dp.out[e as usize].push(outer);
        return;
    }
    made.push(Meta {
        desc: outer,
        vlan: 0,
        tagged: false,
        dst: c.dst_mac,
        src: c.src_mac,
        ethertype: EtherType::IPV4,
        l3: 14,
        dest: c.dest,
        raw: false,
    });
}

/// The underlay route of an outer packet to `remote`.
type Underlay = (u16, MacAddr, Option<MacAddr>, usize, [u8; 4]);

/// Where an outer packet to `remote` leaves: (underlay bridge, its gateway MAC, next-hop MAC or
/// None while it resolves, the bridge's MTU, the next hop's address). Sends the ARP request or
/// probe the neighbour entry asks for.
fn underlay(
    dp: &mut Datapath,
    frames: &mut Frames,
    remote: [u8; 4],
    made: &mut Vec<Meta>,
    now: u32,
) -> Result<Underlay, DropReason> {
    let route = dp
        .routes
        .lookup(remote)
        .copied()
        .ok_or(DropReason::NoRoute)?;
    let bridge = route.bridge();
    let b = dp.bridge(bridge).ok_or(DropReason::NoRoute)?;
    let gw = b.gateway.ok_or(DropReason::NoGateway)?;
    let mtu = b.l3_mtu as usize;
    let nh = route.next_hop(remote.into()).octets();
    let dst = match dp.neigh.resolve(bridge, nh, now) {
        Resolve::Mac(m) => Some(m),
        Resolve::Probe(m) => {
            l3::send_request(dp, frames, bridge, gw, (nh, m), made);
            Some(m)
        }
        Resolve::SendRequest => {
            l3::arp_request(dp, frames, bridge, gw, nh, made);
            None
        }
        Resolve::Pending => None,
        Resolve::Failed => return Err(DropReason::ArpFailed),
        Resolve::Refused => return Err(DropReason::ArpPending),
    };
    Ok((bridge, gw.mac, dst, mtu, nh))
}

/// The destination of outer frames on underlay `u`: the underlay bridge's port that learned the
/// next hop's MAC, or the bridge (output floods there) while it is unknown or resolving.
fn egress(dp: &Datapath, u: &Underlay) -> Dest {
    let (bridge, _, dst_mac, _, _) = *u;
    dst_mac
        .and_then(|m| dp.bridge(bridge)?.fdb.lookup(0, m.to_u64()))
        .map_or(Dest::Bridge(bridge), Dest::Port)
}

/// 49152 + a 14-bit hash of the inner flow, so one flow keeps one outer source port and
/// flows spread over ECMP paths and the receiver's queues (RFC 7348 5.): the IPv4 or IPv6
/// addresses and protocol, with the TCP/UDP/SCTP ports of unfragmented packets, after at most
/// one VLAN tag; the Ethernet addresses and type for other frames. The top bits of a
/// multiplication are kept: each depends on every input bit.
#[inline]
fn source_port(inner: &[u8]) -> u16 {
    // The common case, untagged IPv4 without options, from one fixed-size read.
    if let Some(f) = inner.first_chunk::<{ 14 + 20 + 4 }>()
        && f[12..15] == [0x08, 0x00, 0x45]
    {
        let proto = f[23];
        let whole = (f[20] & 0x3f) | f[21] == 0;
        let ports = if whole && matches!(proto, 6 | 17 | 132) {
            u64::from(u32::from_le_bytes([f[34], f[35], f[36], f[37]]))
        } else {
            0
        };
        let addrs = u64::from_le_bytes(f[26..34].try_into().expect("8 bytes"));
        return mix(addrs ^ ports.rotate_left(29) ^ u64::from(proto) << 56);
    }
    source_port_other(inner)
}

/// 49152 + the top 14 bits of `h` multiplied (each depends on every bit of `h`).
#[inline(always)]
fn mix(h: u64) -> u16 {
    let h = (h ^ h >> 32).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    49152 + (h >> 50) as u16
}

/// [`source_port`] of frames other than untagged IPv4 without options.
#[inline(never)]
fn source_port_other(inner: &[u8]) -> u16 {
    let word = |at: usize| -> u64 {
        inner
            .get(at..at + 8)
            .map_or(0, |b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
    };
    let half = |at: usize| -> u64 {
        inner.get(at..at + 4).map_or(0, |b| {
            u64::from(u32::from_le_bytes(b.try_into().expect("4 bytes")))
        })
    };
    let be16 = |at: usize| {
        inner
            .get(at..at + 2)
            .map_or(0, |b| u16::from_be_bytes([b[0], b[1]]))
    };
    let with_ports = |proto: u8| matches!(proto, 6 | 17 | 132);
    let (mut l3, mut et) = (14, be16(12));
    if et == 0x8100 || et == 0x88a8 {
        (l3, et) = (18, be16(16));
    }
    let h = match et {
        0x0800 if inner.len() >= l3 + 20 => {
            let ihl = usize::from(inner[l3] & 0x0f) * 4;
            let proto = inner[l3 + 9];
            // Ports only when the packet is whole (no MF flag, offset 0): one flow, one port.
            let whole = be16(l3 + 6) & 0x3fff == 0;
            let ports = if whole && with_ports(proto) {
                half(l3 + ihl)
            } else {
                0
            };
            word(l3 + 12) ^ ports.rotate_left(29) ^ u64::from(proto) << 56
        }
        0x86dd if inner.len() >= l3 + 40 => {
            let next = inner[l3 + 6];
            let ports = if with_ports(next) { half(l3 + 40) } else { 0 };
            let src = word(l3 + 8) ^ word(l3 + 16).rotate_left(17);
            let dst = word(l3 + 24).rotate_left(31) ^ word(l3 + 32).rotate_left(47);
            src ^ dst ^ ports.rotate_left(7) ^ u64::from(next) << 56
        }
        _ => word(0) ^ word(6).rotate_left(21),
    };
    mix(h)
}

/// The outer headers toward one remote VTEP of one tunnel (OVS's tunnel push header): written
/// once per (tunnel, remote) and drain, stamped in front of each frame with only its lengths,
/// the IPv4 checksum and the UDP source port filled in.
#[derive(Clone, Copy)]
struct Outer {
    /// Ethernet, IPv4 (total length and checksum 0), UDP (source port, length 0; checksum 0:
    /// none, allowed over IPv4, RFC 7348), VXLAN.
    hdr: [u8; OVERHEAD],
    /// The IPv4 header's one's-complement sum without its total length, folded to 16 bits:
    /// adding a 16-bit length then needs one fold, not four.
    ip_sum: u32,
}

impl Outer {
    fn new(
        (src_mac, dst_mac): (MacAddr, MacAddr),
        (local, vni, dst_port, ttl, df): Conf,
        remote: [u8; 4],
    ) -> Outer {
        let mut hdr = [0u8; OVERHEAD];
        let mut eth = ethernet::Frame::new_unchecked(&mut hdr[..]);
        eth.set_addrs(dst_mac, src_mac);
        eth.set_ethertype(EtherType::IPV4);
        // Total length and checksum 0: stamped per frame (`prepend`).
        let mut ip = ipv4::Packet::new_unchecked(&mut hdr[14..34]);
        ip.set_header(IpProtocol::UDP, local, remote, 0);
        ip.set_dont_frag(df);
        ip.set_ttl_raw(ttl);
        let ip_sum = u32::from(fold(sum(0, &hdr[14..34])));
        udp::Datagram::new_unchecked(&mut hdr[34..42]).set_ports(0, dst_port);
        vxlan::Repr { vni }.emit(&mut hdr[42..50]);
        Outer { hdr, ip_sum }
    }

    /// Prepend the headers to `inner` in its headroom. Returns the outer frame.
    #[inline(always)]
    fn prepend(&self, frames: &mut Frames, inner: Desc, sport: u16) -> Desc {
        let outer = Desc::new(inner.addr - OVERHEAD as u64, inner.len + OVERHEAD as u32);
        let ip_len = (outer.len as usize - 14) as u16;
        let b = frames.data_mut(outer);
        b[..OVERHEAD].copy_from_slice(&self.hdr);
        // At most 0xffff + 0xffff: one fold leaves no carry (and equals folding the unfolded
        // sum plus the length).
        let s = self.ip_sum + u32::from(ip_len);
        let c = !(((s & 0xffff) + (s >> 16)) as u16);
        ipv4::Packet::new_unchecked(&mut b[14..34]).stamp_len(ip_len, c);
        let mut udp = udp::Datagram::new_unchecked(&mut b[34..42]);
        udp.set_src_port(sport);
        udp.set_len(ip_len - 20);
        outer
    }
}

/// The tunnel a burst last decapsulated for, and from which remote VTEP (accepted): the
/// frames of a burst mostly come from one VTEP on one VNI, and tunnels do not change during a
/// burst, so the next such frame skips the tunnel scans and the remote check.
#[derive(Clone, Copy, Debug)]
pub(super) struct DecapHit {
    local: [u8; 4],
    dport: u16,
    vni: u32,
    remote: [u8; 4],
    port: PortId,
}

/// What [`decap`] made of a VXLAN packet for one of our tunnels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Opened {
    /// The tunnel port and the inner frame (inside the outer frame's buffer), for the tunnel
    /// port's pass.
    Inner(PortId, Desc),
    /// Dropped, counted on the tunnel port (`vxlan-nested`: the inner frame is itself VXLAN to
    /// one of our tunnels, [`nested`]; `port-no-recv`: the port is set `down`/`no-receive`),
    /// nothing learned; the caller frees the outer frame.
    Dropped,
}

/// If the IPv4 packet in `m` (header length `hl`, total length `total`, addressed to a gateway)
/// is VXLAN for one of our tunnels, check it and open it ([`Opened`]). Ok(None): not for a
/// tunnel (the caller handles it as local traffic). `last`: the burst's last accepted tunnel
/// (read and updated).
pub(super) fn decap(
    dp: &mut Datapath,
    frames: &Frames,
    m: &Meta,
    (hl, total): (usize, usize),
    last: &mut Option<DecapHit>,
) -> Result<Option<Opened>, DropReason> {
    let l3 = m.l3 as usize;
    let data = frames.data(m.desc);
    // The caller checked the IPv4 header (lengths, checksum) and that it is addressed to us.
    let ip = ipv4::Packet::new_unchecked(&data[l3..l3 + total]);
    if ip.ip_protocol() != IpProtocol::UDP {
        return Ok(None);
    }
    let Ok(udp) = udp::Datagram::new_checked(&data[l3 + hl..l3 + total]) else {
        return Ok(None);
    };
    let (local, dport, remote) = (ip.dst(), udp.dst_port(), ip.src());
    if ip.is_fragment() {
        // Not reassembled: the first fragment of a VXLAN packet is dropped (it would yield a
        // truncated inner frame); a later one has no UDP header to tell (what was read as one
        // is payload), so it is left to local delivery like any other fragment.
        return if ip.frag_offset() == 0 && dp.tunnel_listens(local, dport) {
            Err(DropReason::VxlanTruncated)
        } else {
            Ok(None)
        };
    }
    let hit = last.filter(|h| h.local == local && h.dport == dport && h.remote == remote);
    if hit.is_none() && !dp.tunnel_listens(local, dport) {
        return Ok(None);
    }
    // A UDP length beyond the IP payload is a lie (Linux drops it too); a shorter one
    // leaves trailing bytes, which are not the inner frame's.
    let udp_len = udp.len() as usize;
    if udp_len > total - hl || udp_len < udp::HEADER_LEN + vxlan::HEADER_LEN + 14 {
        return Err(DropReason::VxlanTruncated);
    }
    let vx_at = l3 + hl + udp::HEADER_LEN;
    let vx = vxlan::Repr::parse(&data[vx_at..l3 + total]).map_err(|_| DropReason::VxlanBadFlags)?;
    let hit = hit.filter(|h| h.vni == vx.vni);
    let port = match hit {
        Some(h) => h.port,
        None => dp
            .tunnel_for(local, dport, vx.vni)
            .ok_or(DropReason::VxlanUnknownVni)?,
    };
    let inner_at = vx_at + vxlan::HEADER_LEN;
    let inner = Desc::new(
        m.desc.addr + inner_at as u64,
        (udp_len - udp::HEADER_LEN - vxlan::HEADER_LEN) as u32,
    );
    let inner_bytes = &data[inner_at..inner_at + inner.len as usize];
    let src = ethernet::Frame::new_unchecked(inner_bytes).src_u64();
    let tag = crate::wire::vlan::tci(inner_bytes).map_or(0, |t| t & 0x0fff);
    let nested = nested(&dp.tunnel_udp_ports, inner_bytes);
    let Some(s) = dp.port_mut(port) else {
        return Err(DropReason::VxlanUnknownVni);
    };
    if nested {
        s.counters.drop(DropReason::VxlanNested);
        return Ok(Some(Opened::Dropped));
    }
    if s.config.drops_rx() {
        // `mod-port down|no-receive` on the tunnel port (the decapsulation fast path keeps no
        // template across the change: `mod-port` bumps the datapath's epoch).
        s.counters.rx_packets += 1;
        s.counters.drop(DropReason::PortNoRecv);
        return Ok(Some(Opened::Dropped));
    }
    let Some(t) = s.tunnel.as_mut() else {
        return Err(DropReason::VxlanUnknownVni);
    };
    if hit.is_none() {
        if !t.accepts(remote) {
            return Err(DropReason::VxlanUnknownVtep);
        }
        *last = Some(DecapHit {
            local,
            dport,
            vni: vx.vni,
            remote,
            port,
        });
    }
    learn_remote(dp, port, tag, src, remote);
    Ok(Some(Opened::Inner(port, inner)))
}

/// Tunnel `port` learns `mac`, an inner frame's source with 802.1Q id `tag` (0: untagged),
/// behind `remote` if it learns, and publishes it when new. The key is the bridge VLAN, as the
/// FDB has it (an access port's own VLAN). A full table first drops what the bridge's FDB no
/// longer has on the port (aged, flushed, never admitted: a remote's MAC flood cannot keep it
/// full), at most once a second.
pub(super) fn learn_remote(dp: &mut Datapath, port: PortId, tag: u16, mac: u64, remote: [u8; 4]) {
    let now_ms = dp.now_ms;
    // One port lookup a frame: the FDB (for a sweep) is a field apart from the ports.
    let Datapath { ports, bridges, .. } = dp;
    let Some(s) = ports.get_mut(port as usize).and_then(|p| p.as_mut()) else {
        return;
    };
    let (vlan, bridge) = (s.vlan.bridge_vlan(tag), s.bridge);
    let Some(t) = s.tunnel.as_mut().filter(|t| t.conf.learning) else {
        return;
    };
    if t.sweep_due(now_ms) && t.remote_of(vlan, mac).is_none() {
        sweep_remotes(
            t,
            bridges.get(bridge as usize).and_then(|b| b.as_ref()),
            port,
            now_ms,
        );
    }
    if t.learn(vlan, mac, remote) {
        record_remote(dp, port, vlan, mac, remote);
    }
}

/// Keep only the static entries of tunnel `port`'s MAC -> VTEP table (`t`) and those its
/// bridge's FDB still has on the port.
#[cold]
#[inline(never)]
fn sweep_remotes(
    t: &mut crate::vxlan::Tunnel,
    b: Option<&crate::datapath::Bridge>,
    port: PortId,
    now_ms: u64,
) {
    if let Some(b) = b {
        t.retain(now_ms, |vlan, mac| b.fdb.lookup(vlan, mac) == Some(port));
    }
}

/// Publish a MAC a tunnel learned behind `remote` (for the other workers).
#[cold]
fn record_remote(dp: &mut Datapath, port: PortId, vlan: u16, mac: u64, remote: [u8; 4]) {
    crate::learned::record(
        dp,
        crate::learned::Learned::Remote {
            port,
            vlan,
            mac,
            remote,
        },
    );
}

/// True if the inner frame `b` (its bytes) is itself VXLAN: IPv4 UDP to a port one of our
/// tunnels listens on (`ports`). Nested tunnels are not opened twice: `decap` drops such a
/// frame (`vxlan-nested`, counted on its tunnel port).
#[inline(always)]
pub(super) fn nested(ports: &UdpPortSet, b: &[u8]) -> bool {
    let Some(h) = b.first_chunk::<{ 14 + 20 + 8 }>() else {
        return false;
    };
    if h[12..14] != EtherType::IPV4.to_be_bytes() || h[23] != 17 {
        return false;
    }
    let dport = if h[14] == 0x45 {
        // No options (the common case): the port at a constant offset.
        u16::from_be_bytes([h[36], h[37]])
    } else {
        let hl = ((h[14] & 0x0f) as usize) * 4;
        match b.get(14 + hl + 2..14 + hl + 4) {
            Some(p) => u16::from_be_bytes([p[0], p[1]]),
            None => return false,
        }
    };
    ports.contains(dport)
}

#[cfg(test)]
mod tests {
    use super::{UdpPortSet, nested};

    /// An untagged IPv4 frame with header length `ihl` words and protocol `proto`, whose
    /// L4 destination port is `dport`, cut to `len` bytes.
    fn inner(ihl: u8, proto: u8, dport: u16, len: usize) -> Vec<u8> {
        let hl = usize::from(ihl) * 4;
        let mut b = vec![0u8; (14 + hl + 8).max(64)];
        b[12..14].copy_from_slice(&[0x08, 0x00]);
        b[14] = 0x40 | ihl;
        b[23] = proto;
        b[14 + hl + 2..14 + hl + 4].copy_from_slice(&dport.to_be_bytes());
        b.truncate(len);
        b
    }

    #[test]
    fn nested_finds_udp_to_a_tunnel_port_with_and_without_options() {
        let ports = UdpPortSet::new([4789, 8472]);
        for ihl in [5, 6, 15] {
            assert!(nested(&ports, &inner(ihl, 17, 4789, 200)), "ihl {ihl}");
            assert!(nested(&ports, &inner(ihl, 17, 8472, 200)), "ihl {ihl}");
            assert!(!nested(&ports, &inner(ihl, 17, 53, 200)), "ihl {ihl}");
            assert!(!nested(&ports, &inner(ihl, 6, 4789, 200)), "ihl {ihl}");
        }
        // The port beyond the frame's end (options, short frame): not nested.
        assert!(!nested(&ports, &inner(15, 17, 4789, 64)));
        assert!(!nested(&ports, &inner(5, 17, 4789, 41)));
        assert!(!nested(&UdpPortSet::default(), &inner(5, 17, 4789, 64)));
        // One port.
        assert!(nested(&UdpPortSet::new([4789]), &inner(5, 17, 4789, 64)));
        assert!(nested(&UdpPortSet::new([4789]), &inner(6, 17, 4789, 64)));
        assert!(!nested(&UdpPortSet::new([4789]), &inner(5, 17, 8472, 64)));
        // Not IPv4.
        let mut v6 = inner(5, 17, 4789, 64);
        v6[12..14].copy_from_slice(&[0x86, 0xdd]);
        assert!(!nested(&ports, &v6));
    }
}
