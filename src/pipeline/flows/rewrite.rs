//! The header rewrites and register writes of the flow stage's actions (`super::run_actions`
//! calls them): VLAN, MAC, IPv4 address and port rewrites with incremental checksums, ToS/ECN,
//! TTL, MPLS push/pop/set, truncated copies, and `load`/`move`/`set_field` into registers.
//! Actions whose headers the frame lacks leave it alone, as OVS does. Header fields are
//! written through the `wire` views; MPLS push/pop move the link-layer header by hand and
//! write the EtherType that ends it.

use super::{Emitted, Ingress, MPLS, MPLSM, Stack, packet_key};
use crate::fdb::PortId;
use crate::flow::{
    Action, ExtField, ExtKey, Field, NO_VLAN, PacketKey, PktField, SetField, Subfield,
};
use crate::packet::Frames;
use crate::pipeline::{Dest, Meta};
use crate::wire::{EtherType, IpProtocol, MacAddr, ethernet, ipv4, mpls, transport, vlan};

/// Send a copy of the frame, cut to `max_len` bytes, to port `id` (`output(port,max_len)`).
#[inline(never)]
pub(super) fn truncated_copy(
    frames: &mut Frames,
    m: &Meta,
    out: &mut Emitted,
    id: PortId,
    max_len: u16,
) {
    let Some(mut copy) = frames.clone_frame(m.desc) else {
        return;
    };
    copy.len = copy.len.min(u32::from(max_len));
    out.made.push(Meta {
        desc: copy,
        dest: Dest::Port(id),
        raw: true,
        ..*m
    });
}

/// Run a register action (`load`, `move`, `set_field` into a register or metadata) on the
/// scratch ext key; returns the field written. Out of line: the packet key it may read is
/// rebuilt here, so the hot path's `packet_key` stays inlined.
#[inline(never)]
pub(super) fn register_write(
    data: &[u8],
    m: &Meta,
    port: Ingress,
    ct: (u8, u16),
    a: &Action,
    stack: &mut Stack,
) -> ExtField {
    let key = packet_key(data, m, port.ofport, port.tun_id, ct);
    let (f, v, mask) = register_value(a, &key, &stack.ext);
    stack.ext.set(f, v, mask);
    stack.dirty = true;
    f
}

/// What a register action writes: (field, value, mask), the value already in the field's bits.
fn register_value(a: &Action, key: &PacketKey, ext: &ExtKey) -> (ExtField, u128, u128) {
    let ext_of = |d: &Subfield| match d.field {
        Field::Ext(f) => f,
        // Refused by the parser (destinations are registers or metadata).
        Field::Pkt(_) => ExtField::Reg(0),
    };
    match a {
        Action::Load(v, d) => (ext_of(d), *v, d.mask()),
        Action::Move(src, d) => {
            let whole = match src.field {
                Field::Ext(f) => ext.get(f),
                Field::Pkt(p) => pkt_field(key, p),
            };
            let bits = (whole & src.mask()) >> src.ofs;
            (ext_of(d), bits << d.ofs, d.mask())
        }
        Action::SetField(SetField::Ext(f, v, m)) => (*f, *v, *m),
        _ => (ExtField::Reg(0), 0, 0),
    }
}

/// The value of a packet field for `move`.
fn pkt_field(k: &PacketKey, p: PktField) -> u128 {
    u128::from(match p {
        PktField::InPort => u64::from(k.in_port),
        PktField::EthSrc => k.dl_src,
        PktField::EthDst => k.dl_dst,
        PktField::EthType => u64::from(k.dl_type),
        PktField::VlanTci if k.vlan == NO_VLAN => 0,
        PktField::VlanTci => {
            u64::from((u16::from(k.vlan_pcp & 7) << 13) | 0x1000 | (k.vlan & 0xfff))
        }
        PktField::IpSrc => u64::from(k.nw_src),
        PktField::IpDst => u64::from(k.nw_dst),
        PktField::NwProto => u64::from(k.nw_proto),
        PktField::TpSrc => u64::from(k.tp_src),
        PktField::TpDst => u64::from(k.tp_dst),
        PktField::TunId => k.tun_id,
    })
}

/// Apply a header rewrite. Returns false when the frame must be dropped (dec_ttl at 0/1).
pub(super) fn rewrite(frames: &mut Frames, m: &mut Meta, a: &Action) -> bool {
    match a {
        Action::ModDlSrc(mac) | Action::SetField(SetField::DlSrc(mac)) => {
            ethernet::Frame::new_unchecked(frames.data_mut(m.desc)).set_src(MacAddr(mac.0));
            m.src = mac.to_u64();
        }
        Action::ModDlDst(mac) | Action::SetField(SetField::DlDst(mac)) => {
            ethernet::Frame::new_unchecked(frames.data_mut(m.desc)).set_dst(MacAddr(mac.0));
            m.dst = mac.to_u64();
        }
        Action::ModVlanVid(v) | Action::SetField(SetField::VlanVid(v)) => {
            set_vlan(frames, m, Some(*v & 0x0fff), None)
        }
        Action::ModVlanPcp(p) | Action::SetField(SetField::VlanPcp(p)) => {
            set_vlan(frames, m, None, Some(*p))
        }
        Action::PushVlan(tpid) if !m.tagged => {
            set_vlan(frames, m, Some(0), None);
            // The tag's type as the action names it (802.1ad's 0x88a8 too, as OVS sends it).
            frames.data_mut(m.desc)[12..14].copy_from_slice(&tpid.to_be_bytes());
        }
        Action::StripVlan if m.tagged => {
            let chunk = frames.chunk_mut(m.desc.chunk());
            let start = m.desc.headroom();
            let n = vlan::pop(chunk, start);
            m.desc.addr += (n - start) as u64;
            m.desc.len -= vlan::TAG_LEN as u32;
            m.tagged = false;
            m.vlan = 0;
            m.l3 -= vlan::TAG_LEN as u8;
        }
        Action::ModNwSrc(ip) | Action::SetField(SetField::NwSrc(ip)) => {
            ip_field(frames, m, IpField::Src(ip.octets()))
        }
        Action::ModNwDst(ip) | Action::SetField(SetField::NwDst(ip)) => {
            ip_field(frames, m, IpField::Dst(ip.octets()))
        }
        Action::ModTpSrc(p) | Action::SetField(SetField::TpSrc(p)) => {
            ip_field(frames, m, IpField::SrcPort(*p))
        }
        Action::ModTpDst(p) | Action::SetField(SetField::TpDst(p)) => {
            ip_field(frames, m, IpField::DstPort(*p))
        }
        Action::SetField(SetField::NwTos(t)) | Action::ModNwTos(t) => tos_bits(frames, m, 0xfc, *t),
        Action::ModNwEcn(e) => tos_bits(frames, m, 0x03, *e),
        Action::ModNwTtl(ttl) => match m.ethertype {
            EtherType::IPV4 => {
                if let Some(mut ip) = ipv4_of(frames, m) {
                    ip.set_ttl(*ttl);
                }
            }
            EtherType::IPV6 => {
                if let Some(h) = frames.data_mut(m.desc).get_mut(m.l3 as usize + 7) {
                    *h = *ttl;
                }
            }
            _ => {}
        },
        Action::PushMpls(e) => return push_mpls(frames, m, *e),
        Action::PopMpls(e) => pop_mpls(frames, m, *e),
        Action::SetMplsLabel(l) => set_lse(frames, m, |x| (x & 0xfff) | (l << 12)),
        Action::SetMplsTc(tc) => set_lse(frames, m, |x| (x & !0xe00) | (u32::from(*tc) << 9)),
        Action::SetMplsTtl(ttl) => set_lse(frames, m, |x| (x & !0xff) | u32::from(*ttl)),
        Action::DecMplsTtl if is_mpls(m) => {
            let top = frames.data(m.desc).get(m.l3 as usize..).and_then(mpls::lse);
            if top.is_none_or(|e| mpls::ttl(e) <= 1) {
                return false;
            }
            set_lse(frames, m, |x| x - 1);
        }
        Action::DecTtl => {
            if m.ethertype != EtherType::IPV4 {
                return true;
            }
            let Some(mut ip) = ipv4_of(frames, m) else {
                return false;
            };
            let ttl = ip.ttl();
            if ttl <= 1 {
                return false;
            }
            ip.set_ttl(ttl - 1);
        }
        // Refused when the flow is added (set_tunnel, ct); nothing to do here.
        _ => {}
    }
    true
}

fn is_mpls(m: &Meta) -> bool {
    m.ethertype == MPLS || m.ethertype == MPLSM
}

/// Rewrite the top MPLS label stack entry of an MPLS frame with `f` (others: left alone).
fn set_lse(frames: &mut Frames, m: &Meta, f: impl Fn(u32) -> u32) {
    if !is_mpls(m) {
        return;
    }
    let Some(top) = frames.data_mut(m.desc).get_mut(m.l3 as usize..) else {
        return;
    };
    if let Some(x) = mpls::lse(top) {
        mpls::set_lse(top, f(x));
    }
}

/// `push_mpls`: insert a label stack entry before the L3 header, moving the Ethernet (and
/// VLAN) header 4 bytes into the headroom, and set the EtherType to `etype`. The new entry is
/// a copy of the top one without bottom-of-stack, or for other frames label 0 (IPv6: 2), TC
/// from the DSCP, TTL from the IP TTL (64 for non-IP), bottom of stack (OVS's
/// `flow_push_mpls`). False (drop) when there is no headroom.
fn push_mpls(frames: &mut Frames, m: &mut Meta, etype: u16) -> bool {
    let l3 = m.l3 as usize;
    let lse = {
        let d = frames.data(m.desc);
        let ip = d.get(l3..).unwrap_or_default();
        match m.ethertype {
            _ if is_mpls(m) && ip.len() >= 4 => {
                u32::from_be_bytes([ip[0], ip[1], ip[2], ip[3]]) & !0x100
            }
            EtherType::IPV4 if ip.len() >= 20 => {
                let tc = u32::from(ip[1] >> 2) & 7;
                (tc << 9) | 0x100 | u32::from(if ip[8] == 0 { 64 } else { ip[8] })
            }
            EtherType::IPV6 if ip.len() >= 40 => {
                let tclass = (u16::from_be_bytes([ip[0], ip[1]]) >> 4) as u8;
                let tc = u32::from(tclass >> 2) & 7;
                (2 << 12) | (tc << 9) | 0x100 | u32::from(if ip[7] == 0 { 64 } else { ip[7] })
            }
            _ => 0x100 | 64,
        }
    };
    let start = m.desc.headroom();
    if start < 4 || frames.data(m.desc).len() < l3 {
        return false;
    }
    let chunk = frames.chunk_mut(m.desc.chunk());
    chunk.copy_within(start..start + l3, start - 4);
    let at = start - 4 + l3;
    mpls::set_lse(&mut chunk[at..], lse);
    set_ethertype(&mut chunk[start - 4..at], etype);
    m.desc.addr -= 4;
    m.desc.len += 4;
    m.ethertype = etype;
    true
}

/// `pop_mpls`: remove the top label stack entry of an MPLS frame and set the EtherType to
/// `etype` (other frames: left alone).
fn pop_mpls(frames: &mut Frames, m: &mut Meta, etype: u16) {
    let l3 = m.l3 as usize;
    if !is_mpls(m) || frames.data(m.desc).len() < l3 + 4 {
        return;
    }
    let start = m.desc.headroom();
    let chunk = frames.chunk_mut(m.desc.chunk());
    chunk.copy_within(start..start + l3, start + 4);
    set_ethertype(&mut chunk[start + 4..start + 4 + l3], etype);
    m.desc.addr += 4;
    m.desc.len -= 4;
    m.ethertype = etype;
}

/// Set the `mask` bits of the IPv4 ToS byte (DSCP 0xfc, ECN 0x03) to `v`, updating the header
/// checksum. Other frames are left alone.
fn tos_bits(frames: &mut Frames, m: &Meta, mask: u8, v: u8) {
    if let Some(mut ip) = ipv4_of(frames, m) {
        ip.set_tos_bits(mask, v);
    }
}

/// The IPv4 header of an IPv4 frame (None for other frames or a truncated header).
fn ipv4_of<'a>(frames: &'a mut Frames, m: &Meta) -> Option<ipv4::Packet<&'a mut [u8]>> {
    if m.ethertype != EtherType::IPV4 {
        return None;
    }
    let l3 = frames.data_mut(m.desc).get_mut(m.l3 as usize..)?;
    if l3.len() < ipv4::MIN_HEADER_LEN {
        return None;
    }
    Some(ipv4::Packet::new_unchecked(l3))
}

/// Set the EtherType that ends the link-layer header `l2` (after any VLAN tag).
fn set_ethertype(l2: &mut [u8], etype: u16) {
    let n = l2.len();
    l2[n - 2..].copy_from_slice(&etype.to_be_bytes());
}

/// Set the VID and/or PCP, pushing a tag if the frame has none.
fn set_vlan(frames: &mut Frames, m: &mut Meta, vid: Option<u16>, pcp: Option<u8>) {
    if !m.tagged {
        let chunk = frames.chunk_mut(m.desc.chunk());
        let start = m.desc.headroom();
        let n = vlan::push(chunk, start, 0);
        m.desc.addr -= (start - n) as u64;
        m.desc.len += vlan::TAG_LEN as u32;
        m.tagged = true;
        m.l3 += vlan::TAG_LEN as u8;
    }
    let d = frames.data_mut(m.desc);
    let mut tci = vlan::tci(d).unwrap_or_default();
    if let Some(v) = vid {
        tci = (tci & 0xf000) | v;
        m.vlan = v;
    }
    if let Some(p) = pcp {
        tci = (tci & 0x1fff) | ((p as u16 & 7) << 13);
    }
    vlan::set_tci(d, tci);
}

/// A field `ip_field` rewrites.
#[derive(Clone, Copy)]
enum IpField {
    Src([u8; 4]),
    Dst([u8; 4]),
    SrcPort(u16),
    DstPort(u16),
}

/// Rewrite an IPv4 address or a TCP/UDP port, updating the IP and L4 checksums. Frames that
/// are not IPv4 (or not TCP/UDP with a whole header, in the first fragment, for ports) are left
/// alone, as OVS does for actions whose fields the packet lacks; an address of a later fragment
/// (no L4 header) changes with the IP checksum only.
fn ip_field(frames: &mut Frames, m: &Meta, f: IpField) {
    let Some(ip) = ipv4_of(frames, m) else {
        return;
    };
    let proto = ip.ip_protocol();
    let first = ip.frag_offset() == 0;
    let hl = ip.header_len().max(ipv4::MIN_HEADER_LEN);
    let Some((header, l4)) = ip.into_inner().split_at_mut_checked(hl) else {
        return;
    };
    let mut ip = ipv4::Packet::new_unchecked(header);
    let mut l4 = (first && (proto == IpProtocol::TCP || proto == IpProtocol::UDP))
        .then(|| transport::Ports::new_checked(proto, l4).ok())
        .flatten();
    match f {
        IpField::Src(a) => {
            let old = ip.src();
            ip.set_src(a);
            if let Some(l4) = l4.as_mut() {
                l4.address_changed(old, a);
            }
        }
        IpField::Dst(a) => {
            let old = ip.dst();
            ip.set_dst(a);
            if let Some(l4) = l4.as_mut() {
                l4.address_changed(old, a);
            }
        }
        IpField::SrcPort(p) => {
            if let Some(l4) = l4.as_mut() {
                l4.set_src_port(p);
            }
        }
        IpField::DstPort(p) => {
            if let Some(l4) = l4.as_mut() {
                l4.set_dst_port(p);
            }
        }
    }
}
