//! The header rewrites and register writes of the flow stage's actions (`super::run_actions`
//! calls them): VLAN, MAC, IPv4 address and port rewrites with incremental checksums, ToS/ECN,
//! TTL, MPLS push/pop/set, truncated copies, and `load`/`move`/`set_field` into registers.
//! Actions whose headers the frame lacks leave it alone, as OVS does.

use super::{Emitted, Ingress, MPLS, MPLSM, Stack, packet_key};
use crate::fdb::PortId;
use crate::flow::{
    Action, ExtField, ExtKey, Field, NO_VLAN, PacketKey, PktField, SetField, Subfield,
};
use crate::packet::Frames;
use crate::pipeline::{Dest, Meta};
use crate::wire::checksum::update16;
use crate::wire::{EtherType, vlan};

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
            frames.data_mut(m.desc)[6..12].copy_from_slice(&mac.0);
            m.src = mac.to_u64();
        }
        Action::ModDlDst(mac) | Action::SetField(SetField::DlDst(mac)) => {
            frames.data_mut(m.desc)[0..6].copy_from_slice(&mac.0);
            m.dst = mac.to_u64();
        }
        Action::ModVlanVid(v) | Action::SetField(SetField::VlanVid(v)) => {
            set_vlan(frames, m, Some(*v & 0x0fff), None)
        }
        Action::ModVlanPcp(p) | Action::SetField(SetField::VlanPcp(p)) => {
            set_vlan(frames, m, None, Some(*p))
        }
        Action::PushVlan(_) if !m.tagged => set_vlan(frames, m, Some(0), None),
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
            ip_field(frames, m, 12, Some(ip.octets()), None)
        }
        Action::ModNwDst(ip) | Action::SetField(SetField::NwDst(ip)) => {
            ip_field(frames, m, 16, Some(ip.octets()), None)
        }
        Action::ModTpSrc(p) | Action::SetField(SetField::TpSrc(p)) => {
            ip_field(frames, m, 0, None, Some(*p))
        }
        Action::ModTpDst(p) | Action::SetField(SetField::TpDst(p)) => {
            ip_field(frames, m, 2, None, Some(*p))
        }
        Action::SetField(SetField::NwTos(t)) | Action::ModNwTos(t) => tos_bits(frames, m, 0xfc, *t),
        Action::ModNwEcn(e) => tos_bits(frames, m, 0x03, *e),
        Action::PushMpls(e) => return push_mpls(frames, m, *e),
        Action::PopMpls(e) => pop_mpls(frames, m, *e),
        Action::SetMplsLabel(l) => set_lse(frames, m, |x| (x & 0xfff) | (l << 12)),
        Action::SetMplsTc(tc) => set_lse(frames, m, |x| (x & !0xe00) | (u32::from(*tc) << 9)),
        Action::SetMplsTtl(ttl) => set_lse(frames, m, |x| (x & !0xff) | u32::from(*ttl)),
        Action::DecMplsTtl if is_mpls(m) => {
            let d = frames.data(m.desc);
            let l3 = m.l3 as usize;
            if d.len() < l3 + 4 || d[l3 + 3] <= 1 {
                return false;
            }
            set_lse(frames, m, |x| x - 1);
        }
        Action::DecTtl => {
            if m.ethertype != EtherType::IPV4 {
                return true;
            }
            let l3 = m.l3 as usize;
            let d = frames.data_mut(m.desc);
            if d.len() < l3 + 20 || d[l3 + 8] <= 1 {
                return false;
            }
            let old = u16::from_be_bytes([d[l3 + 8], d[l3 + 9]]);
            d[l3 + 8] -= 1;
            let new = u16::from_be_bytes([d[l3 + 8], d[l3 + 9]]);
            let c = u16::from_be_bytes([d[l3 + 10], d[l3 + 11]]);
            d[l3 + 10..l3 + 12].copy_from_slice(&update16(c, old, new).to_be_bytes());
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
    let l3 = m.l3 as usize;
    let d = frames.data_mut(m.desc);
    if is_mpls(m) && d.len() >= l3 + 4 {
        let x = u32::from_be_bytes([d[l3], d[l3 + 1], d[l3 + 2], d[l3 + 3]]);
        d[l3..l3 + 4].copy_from_slice(&f(x).to_be_bytes());
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
    chunk[at..at + 4].copy_from_slice(&lse.to_be_bytes());
    chunk[at - 2..at].copy_from_slice(&etype.to_be_bytes());
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
    let at = start + 4 + l3;
    chunk[at - 2..at].copy_from_slice(&etype.to_be_bytes());
    m.desc.addr += 4;
    m.desc.len -= 4;
    m.ethertype = etype;
}

/// Set the `mask` bits of the IPv4 ToS byte (DSCP 0xfc, ECN 0x03) to `v`, updating the header
/// checksum. Other frames are left alone.
fn tos_bits(frames: &mut Frames, m: &Meta, mask: u8, v: u8) {
    if m.ethertype != EtherType::IPV4 {
        return;
    }
    let l3 = m.l3 as usize;
    let d = frames.data_mut(m.desc);
    if d.len() >= l3 + 20 {
        let old = u16::from_be_bytes([d[l3], d[l3 + 1]]);
        d[l3 + 1] = (d[l3 + 1] & !mask) | (v & mask);
        let new = u16::from_be_bytes([d[l3], d[l3 + 1]]);
        let c = u16::from_be_bytes([d[l3 + 10], d[l3 + 11]]);
        d[l3 + 10..l3 + 12].copy_from_slice(&update16(c, old, new).to_be_bytes());
    }
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
    let mut tci = u16::from_be_bytes([d[14], d[15]]);
    if let Some(v) = vid {
        tci = (tci & 0xf000) | v;
        m.vlan = v;
    }
    if let Some(p) = pcp {
        tci = (tci & 0x1fff) | ((p as u16 & 7) << 13);
    }
    d[14..16].copy_from_slice(&tci.to_be_bytes());
}

/// Rewrite an IPv4 address (at `off` in the IP header) or a TCP/UDP port (at `off` in the L4
/// header), updating the IP and L4 checksums. Frames that are not IPv4 (or not TCP/UDP for
/// ports) are left alone, as OVS does for actions whose fields the packet lacks.
fn ip_field(frames: &mut Frames, m: &Meta, off: usize, addr: Option<[u8; 4]>, port: Option<u16>) {
    if m.ethertype != EtherType::IPV4 {
        return;
    }
    let l3 = m.l3 as usize;
    let d = frames.data_mut(m.desc);
    if d.len() < l3 + 20 {
        return;
    }
    let hl = ((d[l3] & 0x0f) as usize) * 4;
    let proto = d[l3 + 9];
    let first = u16::from_be_bytes([d[l3 + 6], d[l3 + 7]]) & 0x1fff == 0;
    let l4 = l3 + hl;
    let csum_at = match proto {
        6 if first && d.len() >= l4 + 18 => Some(l4 + 16),
        17 if first && d.len() >= l4 + 8 && d[l4 + 6..l4 + 8] != [0, 0] => Some(l4 + 6),
        _ => None,
    };
    if let Some(a) = addr {
        let old = [
            d[l3 + off],
            d[l3 + off + 1],
            d[l3 + off + 2],
            d[l3 + off + 3],
        ];
        let ipc = u16::from_be_bytes([d[l3 + 10], d[l3 + 11]]);
        d[l3 + 10..l3 + 12]
            .copy_from_slice(&crate::wire::checksum::update32(ipc, old, a).to_be_bytes());
        if let Some(c) = csum_at {
            let l4c = u16::from_be_bytes([d[c], d[c + 1]]);
            d[c..c + 2]
                .copy_from_slice(&crate::wire::checksum::update32(l4c, old, a).to_be_bytes());
        }
        d[l3 + off..l3 + off + 4].copy_from_slice(&a);
    }
    if let Some(p) = port {
        if !(proto == 6 || proto == 17) || !first || d.len() < l4 + 4 {
            return;
        }
        let old = u16::from_be_bytes([d[l4 + off], d[l4 + off + 1]]);
        if let Some(c) = csum_at {
            let l4c = u16::from_be_bytes([d[c], d[c + 1]]);
            d[c..c + 2].copy_from_slice(&update16(l4c, old, p).to_be_bytes());
        }
        d[l4 + off..l4 + off + 2].copy_from_slice(&p.to_be_bytes());
    }
}
