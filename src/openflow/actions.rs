//! Actions and instructions on the wire, mapped onto `flow::Action`.
//!
//! Contract:
//! - OpenFlow 1.0 (`ofp_action_*`, with Nicira vendor actions) and OpenFlow 1.3 (instructions
//!   APPLY_ACTIONS, GOTO_TABLE, METER, CLEAR_ACTIONS; actions OUTPUT, PUSH/POP_VLAN, SET_FIELD,
//!   SET_NW_TTL, DEC_NW_TTL, GROUP, and Nicira experimenter actions) decode to a `Vec<Action>`
//!   in uvs's order: `meter` first, `goto_table` last.
//! - Nicira actions, alike in both versions: RESUBMIT_TABLE (in_port IN_PORT), DEC_TTL,
//!   CONTROLLER, SET_TUNNEL(64), REG_LOAD, REG_MOVE and NOTE. The fields a load or move names
//!   (`ofmatch::action_field`, NXM or OXM headers): registers and `metadata` as destinations;
//!   move sources also the connection's fields (`ct_mark`, `ct_nw_src`, ...) and the packet
//!   fields of `flow::PktField`. A load of the whole NXM_NX_IP_TTL / NXM_NX_IP_ECN is
//!   `mod_nw_ttl` / `mod_nw_ecn` (how OVS sends those in 1.0). A note keeps its padding, as
//!   OVS reads it. 1.3 SET_FIELD of NXM_NX_REGn or OXM_OF_METADATA is `SetField::Ext` (the whole
//!   field), of NXM_NX_IP_TTL `mod_nw_ttl`.
//! - What uvs cannot execute is refused with the error OVS uses (unknown type: BadActionType,
//!   WRITE_ACTIONS: UnsupInst, output to LOCAL/TABLE: BadOutPort, a bad length:
//!   BadActionLen; a load/move field uvs does not know: BadSetType, bits past its end or none:
//!   BadSetLen, a destination uvs cannot write or some bits of the TTL/ECN: BadSetArg, a load
//!   value wider than its bits: BadActionArg). NXAST_RESUBMIT (`resubmit:N`: in_port N, the
//!   current table) is BadActionExpType: uvs's `resubmit(,T)` keeps the in_port and names its
//!   table. Output to CONTROLLER and NXAST_CONTROLLER are `Action::Controller`. Nothing is
//!   half-applied: the whole flow_mod is refused.
//! - Encoding writes the same actions back as OVS writes them: load/move/note as the Nicira
//!   actions in both versions (a move of `tp_src`/`tp_dst` names the flow's `udp`/`sctp` header);
//!   set_field of a whole register or metadata as SET_FIELD in 1.3, otherwise a REG_LOAD per run
//!   of mask bits; `mod_nw_ttl`/`mod_nw_ecn` in 1.0 as loads (ovs-ofctl shows
//!   `load:0x9->NXM_NX_IP_TTL[]`). Actions with no OpenFlow encoding in the version (`ct(...)`,
//!   `ct_clear`, `learn`, `clone`, the MPLS actions, `output(port=..,max_len=..)`; in 1.0 also
//!   `push_vlan`, `group`, `meter`) are left out of stats replies; the README lists them. In
//!   1.0 `goto_table:T` is NXAST_RESUBMIT_TABLE, as OVS writes it (read back as
//!   `resubmit(,T)`).

use std::net::Ipv4Addr;

use super::codec::{NX_VENDOR, OF10, OfErr, OfResult, Reader, Writer};
use super::ofmatch::{self, Tlv};
use crate::flow::{
    Action, ExtField, Field, PortRef, REASON_ACTION, REASON_INVALID_TTL, SetField, Subfield,
    ToController,
};
use crate::wire::MacAddr;

/// Reserved port numbers (OpenFlow 1.0 values; 1.3 ones are 0xffff_ff00 higher).
pub mod port {
    /// Packet-out only: the ingress port.
    pub const IN_PORT: u32 = 0xfff8;
    /// Packet-out only: the flow table.
    pub const TABLE: u32 = 0xfff9;
    /// The learning switch.
    pub const NORMAL: u32 = 0xfffa;
    /// All ports but the ingress one.
    pub const FLOOD: u32 = 0xfffb;
    /// All ports.
    pub const ALL: u32 = 0xfffc;
    /// The controller.
    pub const CONTROLLER: u32 = 0xfffd;
    /// The local port.
    pub const LOCAL: u32 = 0xfffe;
    /// No port / any port.
    pub const NONE: u32 = 0xffff;
}

/// An OpenFlow 1.3 port number in OpenFlow 1.0 terms (reserved ports mapped down).
pub fn port_from13(p: u32) -> u32 {
    if p >= 0xffff_ff00 { p - 0xffff_0000 } else { p }
}

/// An OpenFlow 1.0 port number in OpenFlow 1.3 terms.
pub fn port_to13(p: u32) -> u32 {
    if p >= 0xff00 { p + 0xffff_0000 } else { p }
}

fn output(p: u32, max_len: u16) -> OfResult<Action> {
    Ok(match p {
        port::CONTROLLER => Action::Controller(ToController {
            max_len,
            reason: REASON_ACTION,
        }),
        port::IN_PORT => Action::InPort,
        port::NORMAL => Action::Normal,
        port::FLOOD => Action::Flood,
        port::ALL => Action::All,
        port::LOCAL => Action::Output(PortRef::Num(crate::ofport::OFPP_LOCAL)),
        1..=0xfeff => Action::Output(PortRef::Num(p as u16)),
        _ => return Err(OfErr::BadOutPort),
    })
}

fn mac(r: &mut Reader<'_>) -> OfResult<MacAddr> {
    Ok(MacAddr::from_u64(r.mac()?))
}

fn check_len(len: usize, want: usize) -> OfResult<()> {
    if len == want {
        Ok(())
    } else {
        Err(OfErr::BadActionLen)
    }
}

/// Decode an OpenFlow 1.0 action list (the rest of a flow_mod or packet_out).
pub fn decode10(mut r: Reader<'_>) -> OfResult<Vec<Action>> {
    let mut out = Vec::new();
    while r.left() > 0 {
        let typ = r.u16()?;
        let len = usize::from(r.u16()?);
        if len < 8 || len % 8 != 0 || len - 4 > r.left() {
            return Err(OfErr::BadActionLen);
        }
        let mut b = Reader::new(r.bytes(len - 4)?);
        let a = match typ {
            0 => {
                check_len(len, 8)?;
                output(u32::from(b.u16()?), b.u16()?)?
            }
            1 => {
                check_len(len, 8)?;
                let v = b.u16()?;
                if v > 4095 {
                    return Err(OfErr::BadActionArg);
                }
                Action::ModVlanVid(v)
            }
            2 => {
                check_len(len, 8)?;
                Action::ModVlanPcp(b.u8()? & 7)
            }
            3 => Action::StripVlan,
            4 | 5 => {
                check_len(len, 16)?;
                let m = mac(&mut b)?;
                if typ == 4 {
                    Action::ModDlSrc(m)
                } else {
                    Action::ModDlDst(m)
                }
            }
            6 | 7 => {
                check_len(len, 8)?;
                let a = Ipv4Addr::from(b.u32()?);
                if typ == 6 {
                    Action::ModNwSrc(a)
                } else {
                    Action::ModNwDst(a)
                }
            }
            8 => {
                check_len(len, 8)?;
                Action::SetField(SetField::NwTos(b.u8()? & 0xfc))
            }
            9 | 10 => {
                check_len(len, 8)?;
                let p = b.u16()?;
                if typ == 9 {
                    Action::ModTpSrc(p)
                } else {
                    Action::ModTpDst(p)
                }
            }
            0xffff => decode_nx(&mut b, len)?,
            _ => return Err(OfErr::BadActionType),
        };
        out.push(a);
    }
    Ok(out)
}

/// A Nicira vendor action; `b` is after type and length.
fn decode_nx(b: &mut Reader<'_>, len: usize) -> OfResult<Action> {
    if b.u32()? != NX_VENDOR {
        return Err(OfErr::BadVendor);
    }
    let sub = b.u16().map_err(|_| OfErr::BadActionLen)?;
    Ok(match sub {
        // NXAST_RESUBMIT_TABLE: in_port, table.
        14 => {
            check_len(len, 16)?;
            let in_port = b.u16()?;
            let table = b.u8()?;
            if u32::from(in_port) != port::IN_PORT || table == 255 {
                return Err(OfErr::BadActionArg);
            }
            Action::Resubmit(table)
        }
        // NXAST_DEC_TTL.
        18 => Action::DecTtl,
        // NXAST_CONTROLLER: max_len, controller id, reason.
        20 => {
            check_len(len, 16)?;
            let max_len = b.u16()?;
            let _id = b.u16()?;
            let reason = b.u8()?;
            if reason > REASON_INVALID_TTL {
                return Err(OfErr::BadActionArg);
            }
            Action::Controller(ToController { max_len, reason })
        }
        // NXAST_SET_TUNNEL (32 bits) / NXAST_SET_TUNNEL64.
        2 => {
            b.skip(2)?;
            Action::SetTunnel(u64::from(b.u32()?))
        }
        9 => {
            b.skip(6)?;
            Action::SetTunnel(b.u64()?)
        }
        // NXAST_REG_LOAD: ofs_nbits, dst header, value.
        7 => {
            check_len(len, 24)?;
            let ofs_nbits = b.u16()?;
            let dst = b.u32()?;
            reg_load(ofs_nbits >> 6, (ofs_nbits & 0x3f) + 1, dst, b.u64()?)?
        }
        // NXAST_REG_MOVE: n_bits, src_ofs, dst_ofs, src header, dst header, zeros.
        6 => {
            if len < 24 {
                return Err(OfErr::BadActionLen);
            }
            let (n_bits, src_ofs, dst_ofs) = (b.u16()?, b.u16()?, b.u16()?);
            let (src, dst) = (b.u32()?, b.u32()?);
            // OVS: NXBRC_MUST_BE_ZERO, which uvs does not have.
            if b.rest().iter().any(|x| *x != 0) {
                return Err(OfErr::BadActionArg);
            }
            reg_move(n_bits, (src, src_ofs), (dst, dst_ofs))?
        }
        // NXAST_NOTE: the bytes to the end, padding included (as OVS reads them).
        8 => {
            if len < 16 {
                return Err(OfErr::BadActionLen);
            }
            Action::Note(b.rest().to_vec())
        }
        _ => return Err(OfErr::BadActionExpType),
    })
}

/// `h[ofs..ofs + n_bits]` as a uvs subfield, checked as OVS checks it (unknown field:
/// BadSetType, bits past its end: BadSetLen); `dst`: it must be writable (BadSetArg).
fn subfield(h: u32, ofs: u16, n_bits: u16, dst: bool) -> OfResult<Subfield> {
    let field = ofmatch::action_field(h).ok_or(OfErr::BadSetType)?;
    let width = field.bits();
    if n_bits == 0 || u32::from(ofs) + u32::from(n_bits) > width {
        return Err(OfErr::BadSetLen);
    }
    if dst && !matches!(field, Field::Ext(e) if e.writable()) {
        return Err(OfErr::BadSetArg);
    }
    // Both fit: widths are at most 128 bits.
    Ok(Subfield {
        field,
        ofs: ofs as u8,
        n_bits: n_bits as u8,
    })
}

/// NXM_NX_IP_TTL and NXM_NX_IP_ECN: where OVS's OpenFlow 1.0 `mod_nw_ttl` / `mod_nw_ecn` load
/// (1.0 has no action for them).
const NXM_NX_IP_TTL: u32 = 0x0001_3a01;
const NXM_NX_IP_ECN: u32 = 0x0001_3801;

fn reg_load(ofs: u16, n_bits: u16, dst: u32, value: u64) -> OfResult<Action> {
    // The whole TTL / ECN field: uvs's own actions; some of their bits: none uvs has.
    match (dst, ofs, n_bits) {
        (NXM_NX_IP_TTL, 0, 8) if value < 256 => return Ok(Action::ModNwTtl(value as u8)),
        (NXM_NX_IP_ECN, 0, 2) if value < 4 => return Ok(Action::ModNwEcn(value as u8)),
        (NXM_NX_IP_TTL, 0, 8) | (NXM_NX_IP_ECN, 0, 2) => return Err(OfErr::BadActionArg),
        (NXM_NX_IP_TTL | NXM_NX_IP_ECN, _, _) => return Err(OfErr::BadSetArg),
        _ => {}
    }
    let d = subfield(dst, ofs, n_bits, true)?;
    if n_bits < 64 && value >> n_bits != 0 {
        return Err(OfErr::BadActionArg);
    }
    Ok(Action::Load(u128::from(value) << d.ofs, d))
}

fn reg_move(
    n_bits: u16,
    (src, src_ofs): (u32, u16),
    (dst, dst_ofs): (u32, u16),
) -> OfResult<Action> {
    let s = subfield(src, src_ofs, n_bits, false)?;
    let d = subfield(dst, dst_ofs, n_bits, true)?;
    Ok(Action::Move(s, d))
}

/// Decode OpenFlow 1.3 instructions into uvs actions.
pub fn decode13_instructions(mut r: Reader<'_>) -> OfResult<Vec<Action>> {
    let (mut meter, mut apply, mut goto) = (None, Vec::new(), None);
    while r.left() > 0 {
        let typ = r.u16()?;
        let len = usize::from(r.u16()?);
        if len < 8 || len - 4 > r.left() {
            return Err(OfErr::BadLen);
        }
        let mut b = Reader::new(r.bytes(len - 4)?);
        match typ {
            1 => {
                let t = b.u8()?;
                if t == 255 {
                    return Err(OfErr::BadTableId);
                }
                goto = Some(Action::GotoTable(t));
            }
            4 => {
                b.skip(4)?;
                apply = decode13_actions(b)?;
            }
            5 => {} // CLEAR_ACTIONS: uvs keeps no action set, so there is nothing to clear.
            6 => meter = Some(Action::Meter(b.u32()?)),
            2 | 3 => return Err(OfErr::UnsupInst),
            _ => return Err(OfErr::UnknownInst),
        }
    }
    Ok(meter.into_iter().chain(apply).chain(goto).collect())
}

/// Decode an OpenFlow 1.3 action list.
pub fn decode13_actions(mut r: Reader<'_>) -> OfResult<Vec<Action>> {
    let mut out = Vec::new();
    while r.left() > 0 {
        let typ = r.u16()?;
        let len = usize::from(r.u16()?);
        if len < 8 || len % 8 != 0 || len - 4 > r.left() {
            return Err(OfErr::BadActionLen);
        }
        let mut b = Reader::new(r.bytes(len - 4)?);
        out.push(match typ {
            0 => {
                check_len(len, 16)?;
                output(port_from13(b.u32()?), b.u16()?)?
            }
            17 => match b.u16()? {
                t @ (0x8100 | 0x88a8) => Action::PushVlan(t),
                _ => return Err(OfErr::BadActionArg),
            },
            18 => Action::StripVlan,
            22 => {
                check_len(len, 8)?;
                let g = b.u32()?;
                if g > crate::flow::group::GROUP_MAX {
                    return Err(OfErr::BadActionArg);
                }
                Action::Group(g)
            }
            23 => {
                check_len(len, 8)?;
                Action::ModNwTtl(b.u8()?)
            }
            24 => Action::DecTtl,
            25 => set_field(&mut b)?,
            0xffff => decode_nx(&mut b, len)?,
            _ => return Err(OfErr::BadActionType),
        });
    }
    Ok(out)
}

fn set_field(b: &mut Reader<'_>) -> OfResult<Action> {
    let class = b.u16()?;
    let fh = b.u8()?;
    let len = usize::from(b.u8()?);
    if fh & 1 == 1 {
        return Err(OfErr::BadActionArg);
    }
    let v = b.bytes(len).map_err(|_| OfErr::BadActionLen)?;
    let n = v.iter().fold(0u64, |a, &x| (a << 8) | u64::from(x));
    // A register (NXM_NX_REGn) or metadata: OVS's `set_field:V->reg0`.
    let oxm_len = u8::try_from(len).map_err(|_| OfErr::BadActionLen)?;
    if let Some(e) = ofmatch::set_field_ext(class, fh >> 1, oxm_len) {
        return Ok(Action::SetField(SetField::Ext(e, u128::from(n), e.full())));
    }
    // NXM_NX_IP_TTL (`set_field:9->nw_ttl`): uvs's mod_nw_ttl.
    if (class, fh >> 1, oxm_len) == (0x0001, 29, 1) {
        return Ok(Action::ModNwTtl(n as u8));
    }
    let want = |l: usize| {
        if len == l {
            Ok(())
        } else {
            Err(OfErr::BadActionLen)
        }
    };
    let sf = match (class, fh >> 1) {
        (0x8000, 3) | (0x8000, 4) => {
            want(6)?;
            let m = MacAddr::from_u64(n);
            if fh >> 1 == 3 {
                SetField::DlDst(m)
            } else {
                SetField::DlSrc(m)
            }
        }
        (0x8000, 6) => {
            want(2)?;
            SetField::VlanVid((n & 0xfff) as u16)
        }
        (0x8000, 7) => {
            want(1)?;
            SetField::VlanPcp((n & 7) as u8)
        }
        (0x8000, 8) => {
            want(1)?;
            SetField::NwTos(((n & 0x3f) << 2) as u8)
        }
        // OXM_OF_IP_ECN: uvs's mod_nw_ecn.
        (0x8000, 9) => {
            want(1)?;
            return Ok(Action::ModNwEcn((n & 3) as u8));
        }
        (0x8000, 11) | (0x8000, 12) => {
            want(4)?;
            let a = Ipv4Addr::from(n as u32);
            if fh >> 1 == 11 {
                SetField::NwSrc(a)
            } else {
                SetField::NwDst(a)
            }
        }
        (0x8000, 13 | 15) => {
            want(2)?;
            SetField::TpSrc(n as u16)
        }
        (0x8000, 14 | 16) => {
            want(2)?;
            SetField::TpDst(n as u16)
        }
        (0x8000, 38) => {
            want(8)?;
            SetField::TunId(n)
        }
        _ => return Err(OfErr::BadActionArg),
    };
    // uvs's own spelling where it has one (the same rewrite): mod_dl_src, mod_nw_dst, ...
    Ok(match sf {
        SetField::DlSrc(m) => Action::ModDlSrc(m),
        SetField::DlDst(m) => Action::ModDlDst(m),
        SetField::NwSrc(a) => Action::ModNwSrc(a),
        SetField::NwDst(a) => Action::ModNwDst(a),
        SetField::TpSrc(p) => Action::ModTpSrc(p),
        SetField::TpDst(p) => Action::ModTpDst(p),
        sf => Action::SetField(sf),
    })
}

fn out_port(a: &Action) -> Option<u32> {
    Some(match a {
        Action::Normal => port::NORMAL,
        Action::Flood => port::FLOOD,
        Action::All => port::ALL,
        Action::InPort => port::IN_PORT,
        Action::Output(p) => u32::from(p.num()),
        _ => return None,
    })
}

fn nx_resubmit(w: &mut Writer, t: u8) {
    w.u16(0xffff).u16(16).u32(NX_VENDOR).u16(14);
    w.u16(port::IN_PORT as u16).u8(t).zeros(3);
}

/// `controller(...)`: an output to CONTROLLER (reason `action`, in the version's output
/// format: `port13`), else NXAST_CONTROLLER.
fn controller(w: &mut Writer, c: &ToController, port13: bool) {
    match (c.reason == REASON_ACTION, port13) {
        (true, false) => {
            w.u16(0).u16(8).u16(port::CONTROLLER as u16).u16(c.max_len);
        }
        (true, true) => {
            w.u16(0).u16(16).u32(port_to13(port::CONTROLLER));
            w.u16(c.max_len).zeros(6);
        }
        (false, _) => {
            w.u16(0xffff).u16(16).u32(NX_VENDOR).u16(20);
            w.u16(c.max_len).u16(0).u8(c.reason).u8(0);
        }
    }
}

/// NXAST_REG_LOAD of `v` into `n_bits` bits at `ofs` of the field with header `h`.
fn put_reg_load(w: &mut Writer, h: u32, ofs: u8, n_bits: u8, v: u64) {
    w.u16(0xffff).u16(24).u32(NX_VENDOR).u16(7);
    w.u16((u16::from(ofs) << 6) | u16::from(n_bits - 1))
        .u32(h)
        .u64(v);
}

/// `set_field:V/MASK->F` (a register or metadata) as OVS writes it where it is not one
/// OFPAT_SET_FIELD: an NXAST_REG_LOAD for each run of ones in the mask.
fn ext_loads(w: &mut Writer, f: ExtField, v: u128, mask: u128) {
    let Some(h) = ofmatch::action_header(Field::Ext(f), None) else {
        tracing::debug!("openflow: no header for {f}");
        return;
    };
    let mut ofs = 0u32;
    while ofs < f.bits() {
        if mask >> ofs & 1 == 0 {
            ofs += 1;
            continue;
        }
        let mut n = 0u32;
        while ofs + n < f.bits() && n < 64 && mask >> (ofs + n) & 1 == 1 {
            n += 1;
        }
        let bits = (v >> ofs) & (u128::MAX >> (128 - n));
        put_reg_load(w, h, ofs as u8, n as u8, bits as u64);
        ofs += n;
    }
}

/// The Nicira actions both versions write alike (`load`, `move`, `note`); false if `a` is
/// none of them. `l4`: the flow's IP protocol (which port headers a `move` names).
fn nx_common(w: &mut Writer, a: &Action, l4: Option<u8>) -> bool {
    match a {
        Action::Load(v, d) => {
            match ofmatch::action_header(d.field, l4) {
                Some(h) if d.n_bits <= 64 => {
                    put_reg_load(w, h, d.ofs, d.n_bits, ((v & d.mask()) >> d.ofs) as u64)
                }
                _ => tracing::debug!("openflow: no encoding for action {a}"),
            }
            true
        }
        Action::Move(s, d) => {
            match (
                ofmatch::action_header(s.field, l4),
                ofmatch::action_header(d.field, l4),
            ) {
                (Some(hs), Some(hd)) => {
                    w.u16(0xffff).u16(24).u32(NX_VENDOR).u16(6);
                    w.u16(u16::from(d.n_bits))
                        .u16(u16::from(s.ofs))
                        .u16(u16::from(d.ofs));
                    w.u32(hs).u32(hd);
                }
                _ => tracing::debug!("openflow: no encoding for action {a}"),
            }
            true
        }
        // Within an action's 16-bit length.
        Action::Note(b) if b.len() <= 0xfff0 => {
            let start = w.len();
            w.u16(0xffff).u16(0).u32(NX_VENDOR).u16(8).bytes(b);
            if w.len() - start < 16 {
                w.zeros(16 - (w.len() - start));
            }
            w.pad8_from(start);
            let n = (w.len() - start) as u16;
            w.put_u16(start + 2, n);
            true
        }
        _ => false,
    }
}

fn nx_simple(w: &mut Writer, sub: u16) {
    w.u16(0xffff).u16(16).u32(NX_VENDOR).u16(sub).zeros(6);
}

/// Encode actions as an OpenFlow 1.0 (with Nicira extensions) action list.
pub fn encode10(w: &mut Writer, actions: &[Action]) {
    encode10_in(w, actions, None)
}

/// [`encode10`] for a flow whose match says IP protocol `l4` (a `move` of `tp_src` names
/// UDP's port on a `udp` flow, as OVS reads it back).
pub fn encode10_in(w: &mut Writer, actions: &[Action], l4: Option<u8>) {
    for a in actions {
        if nx_common(w, a, l4) {
            continue;
        }
        if let Some(p) = out_port(a) {
            w.u16(0).u16(8).u16(p as u16).u16(0xffff);
            continue;
        }
        match a {
            Action::ModVlanVid(v) | Action::SetField(SetField::VlanVid(v)) => {
                w.u16(1).u16(8).u16(*v).u16(0);
            }
            Action::ModVlanPcp(p) | Action::SetField(SetField::VlanPcp(p)) => {
                w.u16(2).u16(8).u8(*p).zeros(3);
            }
            Action::StripVlan => {
                w.u16(3).u16(8).zeros(4);
            }
            Action::ModDlSrc(m) | Action::SetField(SetField::DlSrc(m)) => {
                w.u16(4).u16(16).mac(m.to_u64()).zeros(6);
            }
            Action::ModDlDst(m) | Action::SetField(SetField::DlDst(m)) => {
                w.u16(5).u16(16).mac(m.to_u64()).zeros(6);
            }
            Action::ModNwSrc(a) | Action::SetField(SetField::NwSrc(a)) => {
                w.u16(6).u16(8).u32(u32::from(*a));
            }
            Action::ModNwDst(a) | Action::SetField(SetField::NwDst(a)) => {
                w.u16(7).u16(8).u32(u32::from(*a));
            }
            Action::SetField(SetField::NwTos(t)) | Action::ModNwTos(t) => {
                w.u16(8).u16(8).u8(*t).zeros(3);
            }
            Action::ModTpSrc(p) | Action::SetField(SetField::TpSrc(p)) => {
                w.u16(9).u16(8).u16(*p).u16(0);
            }
            Action::ModTpDst(p) | Action::SetField(SetField::TpDst(p)) => {
                w.u16(10).u16(8).u16(*p).u16(0);
            }
            // 1.0 has no goto_table instruction: OVS writes it as NXAST_RESUBMIT_TABLE (its
            // dump reads `resubmit(,T)`); goto_table is last in the list, so the two agree.
            Action::Resubmit(t) | Action::GotoTable(t) => nx_resubmit(w, *t),
            Action::Controller(c) => controller(w, c, false),
            Action::DecTtl => nx_simple(w, 18),
            Action::SetTunnel(v) | Action::SetField(SetField::TunId(v)) => {
                w.u16(0xffff).u16(24).u32(NX_VENDOR).u16(9).zeros(6).u64(*v);
            }
            Action::SetField(SetField::Ext(f, v, mask)) => ext_loads(w, *f, *v, *mask),
            // 1.0 has no actions for these: OVS loads the fields.
            Action::ModNwTtl(t) => put_reg_load(w, NXM_NX_IP_TTL, 0, 8, u64::from(*t)),
            Action::ModNwEcn(e) => put_reg_load(w, NXM_NX_IP_ECN, 0, 2, u64::from(*e & 3)),
            _ => tracing::debug!("openflow: no OpenFlow 1.0 encoding for action {a}"),
        }
    }
}

fn set_field13(w: &mut Writer, field: u8, v: u64, len: u8) {
    let start = w.len();
    w.u16(25).u16(0).u16(0x8000).u8(field << 1).u8(len);
    w.bytes(&v.to_be_bytes()[8 - usize::from(len)..]);
    w.pad8_from(start);
    let n = (w.len() - start) as u16;
    w.put_u16(start + 2, n);
}

/// Encode actions as OpenFlow 1.3 instructions (METER, APPLY_ACTIONS, GOTO_TABLE).
pub fn encode13(w: &mut Writer, actions: &[Action]) {
    encode13_in(w, actions, None, true)
}

/// [`encode13`] for a flow whose match says IP protocol `l4` and whether it only takes tagged
/// frames (`tagged`): its port rewrites are that protocol's set-fields (`udp_dst` on a `udp`
/// flow, as OVS reads them back; TCP's otherwise), and a `mod_vlan_vid` on a flow that may see
/// untagged frames is `push_vlan:0x8100` before the `set_field` (what it does to an untagged
/// frame; 1.3 has no implicit push, so without it the dump could not be added back), and so is
/// a `mod_vlan_pcp`; the tag state follows the list (`push_vlan`, `strip_vlan`).
pub fn encode13_in(w: &mut Writer, actions: &[Action], l4: Option<u8>, tagged: bool) {
    for a in actions {
        if let Action::Meter(m) = a {
            w.u16(6).u16(8).u32(*m);
        }
    }
    let apply: Vec<&Action> = actions
        .iter()
        .filter(|a| !matches!(a, Action::Meter(_) | Action::GotoTable(_)))
        .collect();
    if !apply.is_empty() {
        let start = w.len();
        w.u16(4).u16(0).zeros(4);
        // Whether the frame has a tag at this point of the list.
        let mut tagged = tagged;
        for a in apply {
            match a {
                Action::ModVlanVid(_) | Action::ModVlanPcp(_) if !tagged => {
                    w.u16(17).u16(8).u16(0x8100).u16(0);
                    tagged = true;
                }
                Action::PushVlan(_) => tagged = true,
                Action::StripVlan => tagged = false,
                _ => {}
            }
            encode13_action(w, a, l4);
        }
        let n = (w.len() - start) as u16;
        w.put_u16(start + 2, n);
    }
    for a in actions {
        if let Action::GotoTable(t) = a {
            w.u16(1).u16(8).u8(*t).zeros(3);
        }
    }
}

/// One OpenFlow 1.3 action (as in an apply_actions instruction or a group bucket).
pub fn encode13_one(w: &mut Writer, a: &Action) {
    encode13_action(w, a, None)
}

fn encode13_action(w: &mut Writer, a: &Action, l4: Option<u8>) {
    // OXM_OF_{TCP,UDP,SCTP}_SRC; _DST is one more.
    let tp_src = match l4 {
        Some(17) => 15,
        Some(132) => 17,
        _ => 13,
    };
    if nx_common(w, a, l4) {
        return;
    }
    if let Some(p) = out_port(a) {
        w.u16(0).u16(16).u32(port_to13(p)).u16(0xffff).zeros(6);
        return;
    }
    match a {
        Action::ModVlanVid(v) | Action::SetField(SetField::VlanVid(v)) => {
            set_field13(w, 6, u64::from(0x1000 | v), 2)
        }
        Action::ModVlanPcp(p) | Action::SetField(SetField::VlanPcp(p)) => {
            set_field13(w, 7, u64::from(*p), 1)
        }
        Action::StripVlan => {
            w.u16(18).u16(8).zeros(4);
        }
        Action::PushVlan(t) => {
            w.u16(17).u16(8).u16(*t).u16(0);
        }
        Action::ModDlSrc(m) | Action::SetField(SetField::DlSrc(m)) => {
            set_field13(w, 4, m.to_u64(), 6)
        }
        Action::ModDlDst(m) | Action::SetField(SetField::DlDst(m)) => {
            set_field13(w, 3, m.to_u64(), 6)
        }
        Action::ModNwSrc(a) | Action::SetField(SetField::NwSrc(a)) => {
            set_field13(w, 11, u64::from(u32::from(*a)), 4)
        }
        Action::ModNwDst(a) | Action::SetField(SetField::NwDst(a)) => {
            set_field13(w, 12, u64::from(u32::from(*a)), 4)
        }
        Action::SetField(SetField::NwTos(t)) | Action::ModNwTos(t) => {
            set_field13(w, 8, u64::from(t >> 2), 1)
        }
        Action::ModTpSrc(p) | Action::SetField(SetField::TpSrc(p)) => {
            set_field13(w, tp_src, u64::from(*p), 2)
        }
        Action::ModTpDst(p) | Action::SetField(SetField::TpDst(p)) => {
            set_field13(w, tp_src + 1, u64::from(*p), 2)
        }
        Action::SetTunnel(v) | Action::SetField(SetField::TunId(v)) => set_field13(w, 38, *v, 8),
        Action::DecTtl => {
            w.u16(24).u16(8).zeros(4);
        }
        Action::ModNwTtl(t) => {
            w.u16(23).u16(8).u8(*t).zeros(3);
        }
        Action::ModNwEcn(e) => set_field13(w, 9, u64::from(*e), 1),
        Action::Resubmit(t) => nx_resubmit(w, *t),
        Action::Controller(c) => controller(w, c, true),
        Action::Group(g) => {
            w.u16(22).u16(8).u32(*g);
        }
        // The whole field: OFPAT_SET_FIELD; some bits: NXAST_REG_LOAD (as OVS).
        Action::SetField(SetField::Ext(f, v, mask)) => match ofmatch::set_field_header(*f) {
            Some((class, field, len)) if *mask == f.full() => {
                let start = w.len();
                w.u16(25).u16(0).u16(class).u8(field << 1).u8(len);
                w.bytes(&v.to_be_bytes()[16 - usize::from(len)..]);
                w.pad8_from(start);
                let n = (w.len() - start) as u16;
                w.put_u16(start + 2, n);
            }
            _ => ext_loads(w, *f, *v, *mask),
        },
        _ => tracing::debug!("openflow: no OpenFlow 1.3 encoding for action {a}"),
    }
}

/// Decode the actions of a version's flow_mod / stats entry (1.0: action list; 1.3:
/// instructions).
pub fn decode(version: u8, r: Reader<'_>) -> OfResult<Vec<Action>> {
    if version == OF10 {
        decode10(r)
    } else {
        decode13_instructions(r)
    }
}

/// Encode a flow's actions for a version (1.0: action list; 1.3: instructions as its match
/// `m` says, see [`encode13_in`]).
pub fn encode(version: u8, w: &mut Writer, actions: &[Action], m: &crate::flow::Match) {
    if version == OF10 {
        encode10_in(w, actions, m.nw_proto)
    } else {
        let tagged = m.dl_vlan.is_some_and(|v| v != crate::flow::NO_VLAN)
            || m.dl_vlan_pcp.is_some()
            || m.vlan_tci.is_some_and(|t| t.mask & t.value & 0x1000 != 0);
        encode13_in(w, actions, m.nw_proto, tagged)
    }
}

/// The match dialect of a version's TLV matches.
pub fn tlv_of(version: u8) -> Tlv {
    if version == OF10 { Tlv::Nxm } else { Tlv::Oxm }
}

/// Does `a` output to OpenFlow port `p` (1.0 numbering)? For out_port filters.
pub fn outputs_to(actions: &[Action], p: u32) -> bool {
    // As `Flow::outputs_to` (what `uvs ctl ... out_port=P` selects) for ports, and OVS: inside
    // `clone(...)` and truncated outputs too; plus the reserved ports.
    actions.iter().any(|a| match a {
        Action::Clone(inner) => outputs_to(inner, p),
        Action::OutputTrunc(q, _) => u32::from(q.num()) == p,
        Action::Controller(_) => p == port::CONTROLLER,
        _ => out_port(a) == Some(p),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::parse_actions;

    fn acts(s: &str) -> Vec<Action> {
        parse_actions(s, 0).unwrap()
    }

    #[test]
    fn of10_roundtrip() {
        let a = acts(
            "mod_vlan_vid:5,strip_vlan,mod_dl_src:00:11:22:33:44:55,mod_nw_dst:10.0.0.1,mod_tp_dst:80,resubmit(,3),dec_ttl,output:2,NORMAL",
        );
        let mut w = Writer::default();
        encode10(&mut w, &a);
        assert_eq!(decode10(Reader::new(&w.buf)).unwrap(), a);
    }

    #[test]
    fn of13_roundtrip() {
        let a = acts(
            "meter:1,push_vlan:0x8100,set_field:7->vlan_vid,pop_vlan,mod_nw_src:10.0.0.9,set_field:8->nw_tos,output:3,goto_table:2",
        );
        let mut w = Writer::default();
        encode13(&mut w, &a);
        let got = decode13_instructions(Reader::new(&w.buf)).unwrap();
        assert_eq!(got, a);
    }

    #[test]
    fn mod_vlan_vid_reads_back_with_the_push_it_needs_where_the_frame_has_no_tag() {
        let pushes = |text: &str, tagged: bool| {
            let mut w = Writer::default();
            encode13_in(&mut w, &acts(text), None, tagged);
            let got = decode13_instructions(Reader::new(&w.buf)).unwrap();
            got.iter()
                .filter(|a| matches!(a, Action::PushVlan(_)))
                .count()
        };
        assert_eq!(pushes("mod_vlan_vid:5,output:2", false), 1);
        assert_eq!(pushes("mod_vlan_vid:5,output:2", true), 0);
        assert_eq!(pushes("mod_vlan_vid:5,mod_vlan_vid:6,output:2", false), 1);
        assert_eq!(pushes("push_vlan:0x8100,mod_vlan_vid:5,output:2", false), 1);
        assert_eq!(pushes("strip_vlan,mod_vlan_vid:5,output:2", true), 1);
        assert_eq!(pushes("mod_vlan_pcp:3,output:2", false), 1);
    }

    #[test]
    fn controller_bytes() {
        // What ovs-ofctl 3.1 sends: `CONTROLLER:128` as OFPAT_OUTPUT to 0xfffd with max_len
        // 128 (1.0) / 0xfffffffd (1.3); `controller(reason=no_match)` as NXAST_CONTROLLER.
        let mut w = Writer::default();
        encode10(&mut w, &acts("controller:128"));
        assert_eq!(w.buf, [0, 0, 0, 8, 0xff, 0xfd, 0, 128]);
        assert_eq!(
            decode10(Reader::new(&w.buf)).unwrap(),
            acts("CONTROLLER:128")
        );
        let mut w = Writer::default();
        encode13(&mut w, &acts("controller"));
        assert_eq!(
            w.buf,
            [
                0, 4, 0, 24, 0, 0, 0, 0, 0, 0, 0, 16, 0xff, 0xff, 0xff, 0xfd, 0xff, 0xff, 0, 0, 0,
                0, 0, 0
            ]
        );
        let nx = acts("controller(reason=no_match,max_len=64)");
        let mut w = Writer::default();
        encode10(&mut w, &nx);
        assert_eq!(
            w.buf,
            [
                0xff, 0xff, 0, 16, 0, 0, 0x23, 0x20, 0, 20, 0, 64, 0, 0, 0, 0
            ]
        );
        assert_eq!(decode10(Reader::new(&w.buf)).unwrap(), nx);
        assert_eq!(nx[0].to_string(), "controller(reason=no_match,max_len=64)");
    }

    #[test]
    fn output_bytes() {
        // OFPAT_OUTPUT port 2, max_len 0xffff (what ovs-ofctl sends for `output:2`).
        let mut w = Writer::default();
        encode10(&mut w, &acts("output:2"));
        assert_eq!(w.buf, [0, 0, 0, 8, 0, 2, 0xff, 0xff]);
        let mut w = Writer::default();
        encode13(&mut w, &acts("output:2"));
        assert_eq!(
            w.buf,
            [
                0, 4, 0, 24, 0, 0, 0, 0, 0, 0, 0, 16, 0, 0, 0, 2, 0xff, 0xff, 0, 0, 0, 0, 0, 0
            ]
        );
    }

    #[test]
    fn output_to_all_is_ofpp_all_both_ways() {
        // OFPP_ALL: 0xfffc in 1.0, 0xfffffffc in 1.3 (as FLOOD's 0xfffb / 0xfffffffb).
        let all = acts("ALL");
        assert_eq!(all, [Action::All]);
        let mut w = Writer::default();
        encode10(&mut w, &all);
        assert_eq!(w.buf, [0, 0, 0, 8, 0xff, 0xfc, 0xff, 0xff]);
        assert_eq!(decode10(Reader::new(&w.buf)).unwrap(), all);
        let mut w = Writer::default();
        encode13(&mut w, &all);
        assert_eq!(w.buf[8..16], [0, 0, 0, 16, 0xff, 0xff, 0xff, 0xfc]);
        assert_eq!(decode13_instructions(Reader::new(&w.buf)).unwrap(), all);
        assert!(outputs_to(&all, port::ALL) && !outputs_to(&all, port::FLOOD));
        // Inside clone and truncated, as `Flow::outputs_to` (uvs ctl's out_port=) selects.
        for text in ["clone(output:4)", "output(port=4,max_len=64)"] {
            let a = acts(text);
            let f = crate::flow::parse_flow(&format!("actions={text}")).unwrap();
            assert!(outputs_to(&a, 4) && f.outputs_to(4), "{text}");
            assert!(!outputs_to(&a, 5) && !f.outputs_to(5), "{text}");
        }
    }

    /// Nicira vendor action bytes: type 0xffff, `len`, NX_VENDOR, `sub`, then `body`.
    fn nx(sub: u16, body: &[u8]) -> Vec<u8> {
        let len = (10 + body.len()) as u16;
        let mut v = vec![0xff, 0xff];
        v.extend(len.to_be_bytes());
        v.extend([0, 0, 0x23, 0x20]);
        v.extend(sub.to_be_bytes());
        v.extend(body);
        v
    }

    #[test]
    fn reg_load_move_and_note_bytes_as_ovs_ofctl_sends_them() {
        // NXAST_REG_LOAD `load:0x5->NXM_NX_REG2[8..15]`: ofs_nbits (8 << 6 | 7), NXM_NX_REG2
        // (0x00010404), value 5.
        let load = nx(7, &[0x02, 0x07, 0, 1, 4, 4, 0, 0, 0, 0, 0, 0, 0, 5]);
        // NXAST_REG_MOVE `move:NXM_OF_ETH_SRC[0..31]->OXM_OF_METADATA[16..47]`: n_bits 32,
        // src_ofs 0, dst_ofs 16, NXM_OF_ETH_SRC (0x00000406), OXM_OF_METADATA (0x80000408).
        let mv = nx(6, &[0, 32, 0, 0, 0, 16, 0, 0, 4, 6, 0x80, 0, 4, 8]);
        // NXAST_NOTE `note:01.02.03.04.05.06`.
        let note = nx(8, &[1, 2, 3, 4, 5, 6]);
        let want = acts(
            "load:0x5->reg2[8..15],move:eth_src[0..31]->metadata[16..47],note:01.02.03.04.05.06",
        );
        let wire = [load, mv, note].concat();
        assert_eq!(decode10(Reader::new(&wire)).unwrap(), want);
        let mut w = Writer::default();
        encode10(&mut w, &want);
        assert_eq!(w.buf, wire);
        // The same actions in an OpenFlow 1.3 apply_actions instruction.
        let mut inst = vec![0, 4];
        inst.extend(((8 + wire.len()) as u16).to_be_bytes());
        inst.extend([0, 0, 0, 0]);
        inst.extend(&wire);
        assert_eq!(decode13_instructions(Reader::new(&inst)).unwrap(), want);
        let mut w = Writer::default();
        encode13(&mut w, &want);
        assert_eq!(w.buf, inst);
        // A note is padded to 8 bytes with zeros, which read back as part of it (as in OVS).
        let mut w = Writer::default();
        encode10(&mut w, &acts("note:ab"));
        assert_eq!(w.buf, nx(8, &[0xab, 0, 0, 0, 0, 0]));
        assert_eq!(
            decode10(Reader::new(&w.buf)).unwrap(),
            acts("note:ab.00.00.00.00.00")
        );
    }

    #[test]
    fn set_field_of_a_register_and_metadata_in_openflow13() {
        // `set_field:0x7->reg4` as ovs-ofctl -O OpenFlow13 sends it: OFPAT_SET_FIELD with
        // NXM_NX_REG4 (0x00010804); metadata is OXM_OF_METADATA.
        let reg4 = [0, 25, 0, 16, 0, 1, 8, 4, 0, 0, 0, 7, 0, 0, 0, 0];
        let meta = [0, 25, 0, 16, 0x80, 0, 4, 8, 0, 0, 0, 0, 0, 0, 0x12, 0x34];
        let want = acts("set_field:0x7->reg4,set_field:0x1234->metadata");
        assert_eq!(
            decode13_actions(Reader::new(&[reg4, meta].concat())).unwrap(),
            want
        );
        let mut w = Writer::default();
        for a in &want {
            encode13_one(&mut w, a);
        }
        assert_eq!(w.buf, [reg4, meta].concat());
        // A masked one is NXAST_REG_LOAD, one per run of ones (1.0: always), as OVS writes it.
        let mut w = Writer::default();
        encode13_one(&mut w, &acts("set_field:0x10/0xf0->reg5")[0]);
        assert_eq!(
            w.buf,
            nx(7, &[0x01, 0x03, 0, 1, 0x0a, 4, 0, 0, 0, 0, 0, 0, 0, 1])
        );
        let mut w = Writer::default();
        encode10(&mut w, &acts("set_field:0x101/0xf0f->reg5"));
        assert_eq!(
            w.buf,
            [
                nx(7, &[0x00, 0x03, 0, 1, 0x0a, 4, 0, 0, 0, 0, 0, 0, 0, 1]),
                nx(7, &[0x02, 0x03, 0, 1, 0x0a, 4, 0, 0, 0, 0, 0, 0, 0, 1])
            ]
            .concat()
        );
    }

    #[test]
    fn reg_load_and_move_refusals_are_ovss() {
        let load = |ofs_nbits: u16, hdr: u32, v: u64| {
            let mut b = ofs_nbits.to_be_bytes().to_vec();
            b.extend(hdr.to_be_bytes());
            b.extend(v.to_be_bytes());
            decode10(Reader::new(&nx(7, &b)))
        };
        // Unknown field: OFPBAC_BAD_SET_TYPE; past its end: BAD_SET_LEN; a value wider than
        // the bits: BAD_ARGUMENT; a field uvs cannot write (eth_type): BAD_SET_ARGUMENT.
        assert_eq!(load(31, 0x0001_7e04, 1), Err(OfErr::BadSetType));
        assert_eq!(load(1 << 6 | 31, 0x0001_0004, 1), Err(OfErr::BadSetLen));
        assert_eq!(load(7, 0x0001_0004, 0x100), Err(OfErr::BadActionArg));
        assert_eq!(load(15, 0x0000_0602, 1), Err(OfErr::BadSetArg));
        assert_eq!(load(31, 0x0001_0004, 1).unwrap(), acts("load:1->reg0[]"));
        let mv = |n: u16, so: u16, doff: u16, src: u32, dst: u32, pad: &[u8]| {
            let mut b = [n, so, doff]
                .iter()
                .flat_map(|x| x.to_be_bytes())
                .collect::<Vec<_>>();
            b.extend(src.to_be_bytes());
            b.extend(dst.to_be_bytes());
            b.extend(pad);
            decode10(Reader::new(&nx(6, &b)))
        };
        assert_eq!(
            mv(0, 0, 0, 0x0001_0004, 0x0001_0204, &[]),
            Err(OfErr::BadSetLen)
        );
        assert_eq!(
            mv(16, 0, 20, 0x0001_0004, 0x0001_0204, &[]),
            Err(OfErr::BadSetLen)
        );
        assert_eq!(
            mv(8, 0, 0, 0x0001_0004, 0x0000_0c01, &[]),
            Err(OfErr::BadSetArg)
        );
        assert_eq!(
            mv(8, 0, 0, 0x0001_7e04, 0x0001_0204, &[]),
            Err(OfErr::BadSetType)
        );
        assert_eq!(
            mv(8, 0, 0, 0x0001_0004, 0x0001_0204, &[0; 8]).unwrap(),
            acts("move:reg0[0..7]->reg1[0..7]")
        );
        assert_eq!(
            mv(8, 0, 0, 0x0001_0004, 0x0001_0204, &[0, 0, 0, 0, 0, 0, 0, 1]),
            Err(OfErr::BadActionArg)
        );
        // Too short for its headers.
        assert_eq!(
            decode10(Reader::new(&nx(6, &[0, 8, 0, 0, 0, 0]))),
            Err(OfErr::BadActionLen)
        );
        // A vendor action too short for its subtype.
        assert_eq!(
            decode10(Reader::new(&[0xff, 0xff, 0, 8, 0, 0, 0x23, 0x20])),
            Err(OfErr::BadActionLen)
        );
    }

    #[test]
    fn mod_nw_ttl_and_ecn_in_openflow10_are_reg_loads_as_ovs_writes_them() {
        // OpenFlow 1.0 has no set_nw_ttl: OVS sends `mod_nw_ttl:9` as NXAST_REG_LOAD of
        // NXM_NX_IP_TTL[] (0x00013a01) and `mod_nw_ecn:2` of NXM_NX_IP_ECN[] (0x00013801).
        let ttl = nx(7, &[0, 7, 0, 1, 0x3a, 1, 0, 0, 0, 0, 0, 0, 0, 9]);
        let ecn = nx(7, &[0, 1, 0, 1, 0x38, 1, 0, 0, 0, 0, 0, 0, 0, 2]);
        let want = acts("mod_nw_ttl:9,mod_nw_ecn:2");
        let wire = [ttl, ecn].concat();
        assert_eq!(decode10(Reader::new(&wire)).unwrap(), want);
        let mut w = Writer::default();
        encode10(&mut w, &want);
        assert_eq!(w.buf, wire);
        // Some of the TTL's bits: uvs has no such action.
        let part = nx(7, &[0, 3, 0, 1, 0x3a, 1, 0, 0, 0, 0, 0, 0, 0, 1]);
        assert_eq!(decode10(Reader::new(&part)), Err(OfErr::BadSetArg));
        // OpenFlow 1.3's set_field of NXM_NX_IP_TTL (`set_field:9->nw_ttl`).
        let sf = [0, 25, 0, 16, 0, 1, 0x3a, 1, 9, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(
            decode13_actions(Reader::new(&sf)).unwrap(),
            acts("mod_nw_ttl:9")
        );
    }

    #[test]
    fn mod_nw_tos_is_written_as_set_nw_tos() {
        // `mod_nw_tos:8` (uvs ctl's spelling) as OVS writes it: OFPAT10_SET_NW_TOS in 1.0,
        // set_field OXM_OF_IP_DSCP (8 >> 2) in 1.3; it reads back as the same rewrite.
        let mut w = Writer::default();
        encode10(&mut w, &acts("mod_nw_tos:8"));
        assert_eq!(w.buf, [0, 8, 0, 8, 8, 0, 0, 0]);
        assert_eq!(
            decode10(Reader::new(&w.buf)).unwrap(),
            acts("set_field:8->nw_tos")
        );
        let mut w = Writer::default();
        encode13_one(&mut w, &acts("mod_nw_tos:8")[0]);
        assert_eq!(
            w.buf,
            [0, 25, 0, 16, 0x80, 0, 16, 1, 2, 0, 0, 0, 0, 0, 0, 0]
        );
    }

    #[test]
    fn refusals() {
        // Output to LOCAL is the local port's number; to NONE refused; unknown action type,
        // bad length.
        let local = [0, 0, 0, 8, 0xff, 0xfe, 0, 0];
        assert_eq!(
            decode10(Reader::new(&local)),
            Ok(vec![Action::Output(PortRef::Num(
                crate::ofport::OFPP_LOCAL
            ))])
        );
        let none = [0, 0, 0, 8, 0xff, 0xff, 0, 0];
        assert_eq!(decode10(Reader::new(&none)), Err(OfErr::BadOutPort));
        assert_eq!(
            decode10(Reader::new(&[0, 42, 0, 8, 0, 0, 0, 0])),
            Err(OfErr::BadActionType)
        );
        assert_eq!(
            decode10(Reader::new(&[0, 0, 0, 9, 0, 0, 0, 0, 0])),
            Err(OfErr::BadActionLen)
        );
        // WRITE_ACTIONS.
        assert_eq!(
            decode13_instructions(Reader::new(&[0, 3, 0, 8, 0, 0, 0, 0])),
            Err(OfErr::UnsupInst)
        );
    }
}
