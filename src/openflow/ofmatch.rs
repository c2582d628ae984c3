//! Matches on the wire: OpenFlow 1.0's fixed `ofp_match`, and the TLV matches (Nicira's NXM,
//! used by `ovs-ofctl` with OpenFlow 1.0, and OpenFlow 1.3's OXM), mapped onto `flow::Match`.
//!
//! Contract:
//! - Decoding gives a `Match` (ports as `PortRef::Num`), or the `OfErr` OVS would send
//!   (unknown field: `BadField`, a mask uvs cannot hold: `BadMask`, duplicate: `DupField`, a bad
//!   length: `BadMatchLen`). Prerequisites are checked later, by the flow parser.
//! - OpenFlow 1.0 matches are normalised as OVS does: fields whose prerequisites are missing
//!   (nw_* without IP/ARP, tp_* without TCP/UDP/ICMP) are ignored.
//! - Encoding writes the fields a `Match` holds; NXM and OXM share one TLV layout and differ in
//!   classes and field numbers (`Tlv`). ICMP type/code and ARP fields follow `dl_type` and
//!   `nw_proto` as in the flow syntax. Fields OpenFlow 1.0 cannot express (tun_id, ct_*) and
//!   partial MAC masks are left out of an `ofp_match`.
//! - Actions name fields by the same headers: `action_header`/`action_field` map the fields a
//!   `load`/`move` may name (registers, metadata, the connection's fields, `flow::PktField`)
//!   to the NXM/OXM headers OVS writes in NXAST_REG_LOAD/REG_MOVE and back (either dialect's
//!   header); `set_field_header`/`set_field_ext` the registers and metadata of 1.3's SET_FIELD.

use super::codec::{OfErr, OfResult, Reader, Writer};
use crate::flow::{ExtField, Field, Masked, Match, NO_VLAN, PktField, PortRef};

const ETH_IP: u16 = 0x0800;
const ETH_ARP: u16 = 0x0806;

/// OpenFlow 1.0 wildcard bits.
mod w10 {
    pub const IN_PORT: u32 = 1;
    pub const DL_VLAN: u32 = 1 << 1;
    pub const DL_SRC: u32 = 1 << 2;
    pub const DL_DST: u32 = 1 << 3;
    pub const DL_TYPE: u32 = 1 << 4;
    pub const NW_PROTO: u32 = 1 << 5;
    pub const TP_SRC: u32 = 1 << 6;
    pub const TP_DST: u32 = 1 << 7;
    pub const NW_SRC_SHIFT: u32 = 8;
    pub const NW_DST_SHIFT: u32 = 14;
    pub const DL_VLAN_PCP: u32 = 1 << 20;
    pub const NW_TOS: u32 = 1 << 21;
    pub const ALL: u32 = (1 << 22) - 1;
}

/// Size of an OpenFlow 1.0 `ofp_match`.
pub const OFP10_MATCH_LEN: usize = 40;

fn prefix_mask(bits: u32) -> u32 {
    if bits == 0 {
        0
    } else {
        u32::MAX << (32 - bits.min(32))
    }
}

fn full<T: Copy>(v: T, m: T) -> Option<Masked<T>> {
    Some(Masked { value: v, mask: m })
}

/// Decode an OpenFlow 1.0 `ofp_match` (40 bytes).
pub fn decode_of10(r: &mut Reader<'_>) -> OfResult<Match> {
    let wc = r.u32()?;
    let in_port = r.u16()?;
    let dl_src = r.mac()?;
    let dl_dst = r.mac()?;
    let dl_vlan = r.u16()?;
    let pcp = r.u8()?;
    r.skip(1)?;
    let dl_type = r.u16()?;
    let tos = r.u8()?;
    let proto = r.u8()?;
    r.skip(2)?;
    let nw_src = r.u32()?;
    let nw_dst = r.u32()?;
    let tp_src = r.u16()?;
    let tp_dst = r.u16()?;
    let mut m = Match::default();
    let has = |bit: u32| wc & bit == 0;
    if has(w10::IN_PORT) {
        m.in_port = Some(port10(in_port)?);
    }
    if has(w10::DL_SRC) {
        m.dl_src = full(dl_src, 0xffff_ffff_ffff);
    }
    if has(w10::DL_DST) {
        m.dl_dst = full(dl_dst, 0xffff_ffff_ffff);
    }
    if has(w10::DL_VLAN) {
        if dl_vlan > 4095 && dl_vlan != NO_VLAN {
            return Err(OfErr::BadValue);
        }
        m.dl_vlan = Some(dl_vlan);
    }
    if has(w10::DL_VLAN_PCP) && m.dl_vlan != Some(NO_VLAN) {
        m.dl_vlan_pcp = Some(pcp & 7);
    }
    if has(w10::DL_TYPE) {
        m.dl_type = Some(dl_type);
    }
    let ip = m.dl_type == Some(ETH_IP);
    let l3 = ip || m.dl_type == Some(ETH_ARP);
    if l3 {
        let src_bits = 32u32.saturating_sub((wc >> w10::NW_SRC_SHIFT) & 0x3f);
        let dst_bits = 32u32.saturating_sub((wc >> w10::NW_DST_SHIFT) & 0x3f);
        if src_bits > 0 {
            let mk = prefix_mask(src_bits);
            m.nw_src = full(nw_src & mk, mk);
        }
        if dst_bits > 0 {
            let mk = prefix_mask(dst_bits);
            m.nw_dst = full(nw_dst & mk, mk);
        }
        if has(w10::NW_PROTO) {
            m.nw_proto = Some(proto);
        }
    }
    if ip && has(w10::NW_TOS) {
        m.nw_tos = Some(tos & 0xfc);
    }
    if ip && matches!(m.nw_proto, Some(1 | 6 | 17)) {
        if has(w10::TP_SRC) {
            m.tp_src = full(tp_src, 0xffff);
        }
        if has(w10::TP_DST) {
            m.tp_dst = full(tp_dst, 0xffff);
        }
    }
    m.normalize();
    Ok(m)
}

fn port10(p: u16) -> OfResult<PortRef> {
    if p == 0 || (p > crate::ofport::OFPP_MAX && p != crate::ofport::OFPP_LOCAL) {
        return Err(OfErr::BadPort);
    }
    Ok(PortRef::Num(p))
}

/// Encode `m` as an OpenFlow 1.0 `ofp_match`.
pub fn encode_of10(w: &mut Writer, m: &Match) {
    let mut wc = w10::ALL;
    let mut clear = |bit: u32| wc &= !bit;
    if m.in_port.is_some() {
        clear(w10::IN_PORT);
    }
    let exact_mac = |x: &Option<Masked<u64>>| x.filter(|x| x.mask == 0xffff_ffff_ffff);
    let src = exact_mac(&m.dl_src);
    let dst = exact_mac(&m.dl_dst);
    if src.is_some() {
        clear(w10::DL_SRC);
    }
    if dst.is_some() {
        clear(w10::DL_DST);
    }
    if m.dl_vlan.is_some() {
        clear(w10::DL_VLAN);
    }
    if m.dl_vlan_pcp.is_some() {
        clear(w10::DL_VLAN_PCP);
    }
    if m.dl_type.is_some() {
        clear(w10::DL_TYPE);
    }
    if m.nw_proto.is_some() {
        clear(w10::NW_PROTO);
    }
    if m.nw_tos.is_some() {
        clear(w10::NW_TOS);
    }
    if m.tp_src.is_some() {
        clear(w10::TP_SRC);
    }
    if m.tp_dst.is_some() {
        clear(w10::TP_DST);
    }
    let wild_bits = |x: Option<Masked<u32>>| x.map_or(32, |x| x.mask.count_zeros());
    wc &= !(0x3f << w10::NW_SRC_SHIFT) & !(0x3f << w10::NW_DST_SHIFT);
    wc |= wild_bits(m.nw_src) << w10::NW_SRC_SHIFT;
    wc |= wild_bits(m.nw_dst) << w10::NW_DST_SHIFT;
    w.u32(wc);
    w.u16(m.in_port.as_ref().map_or(0, PortRef::num));
    w.mac(src.map_or(0, |x| x.value));
    w.mac(dst.map_or(0, |x| x.value));
    w.u16(m.dl_vlan.unwrap_or(0));
    w.u8(m.dl_vlan_pcp.unwrap_or(0)).u8(0);
    w.u16(m.dl_type.unwrap_or(0));
    w.u8(m.nw_tos.unwrap_or(0))
        .u8(m.nw_proto.unwrap_or(0))
        .u16(0);
    w.u32(m.nw_src.map_or(0, |x| x.value));
    w.u32(m.nw_dst.map_or(0, |x| x.value));
    w.u16(m.tp_src.map_or(0, |x| x.value));
    w.u16(m.tp_dst.map_or(0, |x| x.value));
}

/// Which TLV dialect: Nicira NXM (OpenFlow 1.0) or OXM (OpenFlow 1.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tlv {
    /// NXM_OF_* / NXM_NX_* headers.
    Nxm,
    /// OXM_OF_* headers (with NXM_NX_* for Nicira fields).
    Oxm,
}

/// The fields uvs knows, independent of the dialect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum F {
    InPort,
    EthDst,
    EthSrc,
    EthType,
    VlanTci,
    VlanVid,
    VlanPcp,
    IpTos,
    IpDscp,
    IpEcn,
    IpProto,
    IpSrc,
    IpDst,
    TcpSrc,
    TcpDst,
    UdpSrc,
    UdpDst,
    IcmpType,
    IcmpCode,
    ArpOp,
    ArpSpa,
    ArpTpa,
    TunId,
    CtState,
    CtZone,
    Cookie,
    TcpFlags,
    IpTtl,
}

/// The ONF experimenter id of OpenFlow 1.3's experimenter OXM fields (ONFOXM_ET_*), and the
/// field of `tcp_flags` there (ONFOXM_ET_TCP_FLAGS, which OVS writes for OpenFlow 1.3).
const ONF_EXPERIMENTER: u32 = 0x4f4e_4600;
const ONF_TCP_FLAGS: u8 = 42;
/// The class of experimenter OXM fields (an experimenter id follows the header).
const OXM_EXPERIMENTER: u16 = 0xffff;

const NXM_OF: u16 = 0x0000;
const NXM_NX: u16 = 0x0001;
const OXM_BASIC: u16 = 0x8000;

/// (dialect, class, field) of each `F`, with the value length.
const TABLE: &[(Tlv, u16, u8, F, u8)] = &[
    (Tlv::Nxm, NXM_OF, 0, F::InPort, 2),
    (Tlv::Nxm, NXM_OF, 1, F::EthDst, 6),
    (Tlv::Nxm, NXM_OF, 2, F::EthSrc, 6),
    (Tlv::Nxm, NXM_OF, 3, F::EthType, 2),
    (Tlv::Nxm, NXM_OF, 4, F::VlanTci, 2),
    (Tlv::Nxm, NXM_OF, 5, F::IpTos, 1),
    (Tlv::Nxm, NXM_OF, 6, F::IpProto, 1),
    (Tlv::Nxm, NXM_OF, 7, F::IpSrc, 4),
    (Tlv::Nxm, NXM_OF, 8, F::IpDst, 4),
    (Tlv::Nxm, NXM_OF, 9, F::TcpSrc, 2),
    (Tlv::Nxm, NXM_OF, 10, F::TcpDst, 2),
    (Tlv::Nxm, NXM_OF, 11, F::UdpSrc, 2),
    (Tlv::Nxm, NXM_OF, 12, F::UdpDst, 2),
    (Tlv::Nxm, NXM_OF, 13, F::IcmpType, 1),
    (Tlv::Nxm, NXM_OF, 14, F::IcmpCode, 1),
    (Tlv::Nxm, NXM_OF, 15, F::ArpOp, 2),
    (Tlv::Nxm, NXM_OF, 16, F::ArpSpa, 4),
    (Tlv::Nxm, NXM_OF, 17, F::ArpTpa, 4),
    (Tlv::Nxm, NXM_NX, 16, F::TunId, 8),
    (Tlv::Nxm, NXM_NX, 28, F::IpEcn, 1),
    (Tlv::Nxm, NXM_NX, 30, F::Cookie, 8),
    (Tlv::Nxm, NXM_NX, 34, F::TcpFlags, 2),
    (Tlv::Oxm, NXM_NX, 34, F::TcpFlags, 2),
    // NXM_NX_IP_TTL: OVS uses it in OpenFlow 1.3 too (there is no OXM_OF_ one).
    (Tlv::Nxm, NXM_NX, 29, F::IpTtl, 1),
    (Tlv::Oxm, NXM_NX, 29, F::IpTtl, 1),
    (Tlv::Oxm, OXM_BASIC, 0, F::InPort, 4),
    (Tlv::Oxm, OXM_BASIC, 3, F::EthDst, 6),
    (Tlv::Oxm, OXM_BASIC, 4, F::EthSrc, 6),
    (Tlv::Oxm, OXM_BASIC, 5, F::EthType, 2),
    (Tlv::Oxm, OXM_BASIC, 6, F::VlanVid, 2),
    (Tlv::Oxm, OXM_BASIC, 7, F::VlanPcp, 1),
    (Tlv::Oxm, OXM_BASIC, 8, F::IpDscp, 1),
    (Tlv::Oxm, OXM_BASIC, 9, F::IpEcn, 1),
    (Tlv::Oxm, OXM_BASIC, 10, F::IpProto, 1),
    (Tlv::Oxm, OXM_BASIC, 11, F::IpSrc, 4),
    (Tlv::Oxm, OXM_BASIC, 12, F::IpDst, 4),
    (Tlv::Oxm, OXM_BASIC, 13, F::TcpSrc, 2),
    (Tlv::Oxm, OXM_BASIC, 14, F::TcpDst, 2),
    (Tlv::Oxm, OXM_BASIC, 15, F::UdpSrc, 2),
    (Tlv::Oxm, OXM_BASIC, 16, F::UdpDst, 2),
    (Tlv::Oxm, OXM_BASIC, 19, F::IcmpType, 1),
    (Tlv::Oxm, OXM_BASIC, 20, F::IcmpCode, 1),
    (Tlv::Oxm, OXM_BASIC, 21, F::ArpOp, 2),
    (Tlv::Oxm, OXM_BASIC, 22, F::ArpSpa, 4),
    (Tlv::Oxm, OXM_BASIC, 23, F::ArpTpa, 4),
    (Tlv::Oxm, OXM_BASIC, 38, F::TunId, 8),
    // Nicira fields, in both dialects.
    (Tlv::Nxm, NXM_NX, 105, F::CtState, 4),
    (Tlv::Nxm, NXM_NX, 106, F::CtZone, 2),
    (Tlv::Oxm, NXM_NX, 105, F::CtState, 4),
    (Tlv::Oxm, NXM_NX, 106, F::CtZone, 2),
];

fn lookup(d: Tlv, class: u16, field: u8) -> Option<(F, u8)> {
    TABLE
        .iter()
        .find(|e| e.0 == d && e.1 == class && e.2 == field)
        .map(|e| (e.3, e.4))
}

fn header_of(d: Tlv, f: F) -> (u16, u8, u8) {
    let e = TABLE
        .iter()
        .find(|e| e.0 == d && e.3 == f)
        .expect("every field encoded has a header in its dialect");
    (e.1, e.2, e.4)
}

fn be(b: &[u8]) -> u64 {
    b.iter().fold(0u64, |a, &x| (a << 8) | u64::from(x))
}

fn set<T>(slot: &mut Option<T>, v: T) -> OfResult<()> {
    if slot.is_some() {
        return Err(OfErr::DupField);
    }
    *slot = Some(v);
    Ok(())
}

fn masked<T: Copy + TryFrom<u64>>(v: u64, m: u64) -> OfResult<Masked<T>> {
    let c = |x: u64| T::try_from(x).map_err(|_| OfErr::BadValue);
    Ok(Masked {
        value: c(v & m)?,
        mask: c(m)?,
    })
}

/// Decode a TLV match (NXM or OXM entries, without any padding or OXM match header).
pub fn decode_tlv(d: Tlv, r: Reader<'_>) -> OfResult<Match> {
    decode_tlv_cookie(d, r).map(|x| x.0)
}

/// `decode_tlv`, also returning an NXM_NX_COOKIE entry (flow_mod and stats request matches).
pub fn decode_tlv_cookie(d: Tlv, mut r: Reader<'_>) -> OfResult<(Match, Option<Masked<u64>>)> {
    let mut st = TlvState::default();
    while r.left() > 0 {
        let class = r.u16()?;
        let fh = r.u8()?;
        let len = usize::from(r.u8()?);
        let (field, has_mask) = (fh >> 1, fh & 1 == 1);
        let mut body = r.bytes(len).map_err(|_| OfErr::BadMatchLen)?;
        let (f, vlen) = if class == OXM_EXPERIMENTER && d == Tlv::Oxm {
            // An experimenter field: its id, then the value (and mask).
            let id = body.get(..4).map(be).ok_or(OfErr::BadMatchLen)?;
            body = &body[4..];
            match (id as u32, field) {
                (ONF_EXPERIMENTER, ONF_TCP_FLAGS) => (F::TcpFlags, 2),
                _ => return Err(OfErr::BadField),
            }
        } else {
            lookup(d, class, field).ok_or(OfErr::BadField)?
        };
        let len = body.len();
        let vlen = usize::from(vlen);
        if len != vlen * if has_mask { 2 } else { 1 } {
            return Err(OfErr::BadMatchLen);
        }
        let v = be(&body[..vlen]);
        let all = if vlen == 8 {
            u64::MAX
        } else {
            (1u64 << (vlen * 8)) - 1
        };
        let mk = if has_mask { be(&body[vlen..]) } else { all };
        st.field(f, v, mk, mk == all)?;
    }
    let mut m = st.m;
    if let Some((v, mk)) = st.tci {
        apply_tci(&mut m, v, mk)?;
    }
    if st.any_tag && m.dl_vlan_pcp.is_none() {
        // Any tagged frame (OXM `vlan_vid=0x1000/0x1000`): the CFI bit of `vlan_tci`.
        if m.vlan_tci.is_some() {
            return Err(OfErr::DupField);
        }
        m.vlan_tci = Some(Masked {
            value: 0x1000,
            mask: 0x1000,
        });
    }
    m.normalize();
    Ok((m, st.cookie))
}

/// What a TLV match has set so far.
#[derive(Default)]
struct TlvState {
    m: Match,
    cookie: Option<Masked<u64>>,
    any_tag: bool,
    tci: Option<(u16, u16)>,
}

impl TlvState {
    /// One field with its value and mask (`exact`: the mask is all ones).
    fn field(&mut self, f: F, v: u64, mk: u64, exact: bool) -> OfResult<()> {
        let m = &mut self.m;
        let need_exact = || if exact { Ok(()) } else { Err(OfErr::BadMask) };
        match f {
            F::InPort => {
                need_exact()?;
                // OXM's 32-bit reserved numbers (LOCAL) in 1.0 terms.
                let p = u32::try_from(v).map_err(|_| OfErr::BadPort)?;
                let p =
                    u16::try_from(super::actions::port_from13(p)).map_err(|_| OfErr::BadPort)?;
                set(&mut m.in_port, port10(p)?)
            }
            F::EthDst => set(&mut m.dl_dst, masked(v, mk)?),
            F::EthSrc => set(&mut m.dl_src, masked(v, mk)?),
            F::EthType => need_exact().and_then(|_| set(&mut m.dl_type, v as u16)),
            F::VlanTci if self.tci.is_some() => Err(OfErr::DupField),
            F::VlanTci => {
                self.tci = Some((v as u16, mk as u16));
                Ok(())
            }
            F::VlanVid => match (v as u16, mk as u16) {
                (0, 0xffff) | (0, 0x1fff) => set(&mut m.dl_vlan, NO_VLAN),
                (v, 0xffff | 0x1fff) if v & 0x1000 != 0 => set(&mut m.dl_vlan, v & 0xfff),
                // Any tagged frame: uvs holds that only as implied by a vlan_pcp match.
                (0x1000, 0x1000) => {
                    self.any_tag = true;
                    Ok(())
                }
                _ => Err(OfErr::BadMask),
            },
            F::VlanPcp => set(&mut m.dl_vlan_pcp, (v & 7) as u8),
            F::IpTos => need_exact().and_then(|_| set(&mut m.nw_tos, (v & 0xfc) as u8)),
            F::IpDscp => need_exact().and_then(|_| set(&mut m.nw_tos, ((v & 0x3f) << 2) as u8)),
            F::IpEcn => need_exact().and_then(|_| set(&mut m.nw_ecn, (v & 3) as u8)),
            F::IpProto => need_exact().and_then(|_| set(&mut m.nw_proto, v as u8)),
            F::ArpOp => {
                need_exact()?;
                set(
                    &mut m.nw_proto,
                    u8::try_from(v).map_err(|_| OfErr::BadValue)?,
                )
            }
            F::IpSrc | F::ArpSpa => set(&mut m.nw_src, masked(v, mk)?),
            F::IpDst | F::ArpTpa => set(&mut m.nw_dst, masked(v, mk)?),
            F::TcpSrc | F::UdpSrc => set(&mut m.tp_src, masked(v, mk)?),
            F::TcpDst | F::UdpDst => set(&mut m.tp_dst, masked(v, mk)?),
            F::IcmpType => need_exact().and_then(|_| set(&mut m.tp_src, masked(v, 0xffff)?)),
            F::IcmpCode => need_exact().and_then(|_| set(&mut m.tp_dst, masked(v, 0xffff)?)),
            F::TunId => set(&mut m.tun_id, masked(v, mk)?),
            F::Cookie => set(&mut self.cookie, masked(v, mk)?),
            F::CtState => set(&mut m.ct_state, masked(v, mk)?),
            F::CtZone => need_exact().and_then(|_| set(&mut m.ct_zone, v as u16)),
            F::IpTtl => {
                need_exact()?;
                if m.ext.get(ExtField::NwTtl).is_some() {
                    return Err(OfErr::DupField);
                }
                let x = Masked {
                    value: u128::from(v),
                    mask: 0xff,
                };
                m.ext
                    .set(ExtField::NwTtl, x, "nw_ttl")
                    .map_err(|_| OfErr::BadValue)
            }
            F::TcpFlags => {
                if m.ext.get(ExtField::TcpFlags).is_some() {
                    return Err(OfErr::DupField);
                }
                let x = Masked {
                    value: u128::from(v & mk),
                    mask: u128::from(mk),
                };
                m.ext
                    .set(ExtField::TcpFlags, x, "tcp_flags")
                    .map_err(|_| OfErr::BadValue)
            }
        }
    }
}

/// NXM_OF_VLAN_TCI value/mask → dl_vlan / dl_vlan_pcp (the forms ovs-ofctl writes).
fn apply_tci(m: &mut Match, v: u16, mk: u16) -> OfResult<()> {
    if v == 0 && mk == 0xffff {
        m.dl_vlan = Some(NO_VLAN);
        return Ok(());
    }
    if v & 0x1000 == 0 || mk & 0x1000 == 0 {
        return Err(OfErr::BadMask);
    }
    match mk & 0xefff {
        0x0fff => m.dl_vlan = Some(v & 0xfff),
        0xe000 => m.dl_vlan_pcp = Some((v >> 13) as u8),
        0xefff => {
            m.dl_vlan = Some(v & 0xfff);
            m.dl_vlan_pcp = Some((v >> 13) as u8);
        }
        // Any other mask (`vlan_tci=0x1000/0x1000`: any tagged frame) as `vlan_tci` itself.
        _ => {
            m.vlan_tci = Some(Masked {
                value: v & mk,
                mask: mk,
            })
        }
    }
    Ok(())
}

fn put(w: &mut Writer, d: Tlv, f: F, v: u64, mask: Option<u64>) {
    let (class, field, len) = header_of(d, f);
    let all = if len == 8 {
        u64::MAX
    } else {
        (1u64 << (u32::from(len) * 8)) - 1
    };
    let mask = mask.filter(|m| *m != all);
    w.u16(class);
    w.u8((field << 1) | u8::from(mask.is_some()));
    w.u8(len * if mask.is_some() { 2 } else { 1 });
    let n = usize::from(len);
    w.bytes(&v.to_be_bytes()[8 - n..]);
    if let Some(m) = mask {
        w.bytes(&m.to_be_bytes()[8 - n..]);
    }
}

/// (class, field, length) of an ext field in a dialect, as OVS writes it (the NXM_NX_ and
/// OXM_OF_ headers of nicira-ext.h / openflow-1.3.h); None for those written elsewhere
/// (`tcp_flags`, `nw_ttl`).
fn ext_header(d: Tlv, f: ExtField) -> Option<(u16, u8, u8)> {
    let oxm = d == Tlv::Oxm;
    Some(match f {
        ExtField::Reg(n) if n < 16 => (NXM_NX, n, 4),
        ExtField::Metadata => (OXM_BASIC, 2, 8),
        ExtField::Ipv6Src if oxm => (OXM_BASIC, 26, 16),
        ExtField::Ipv6Src => (NXM_NX, 19, 16),
        ExtField::Ipv6Dst if oxm => (OXM_BASIC, 27, 16),
        ExtField::Ipv6Dst => (NXM_NX, 20, 16),
        ExtField::Ipv6Label if oxm => (OXM_BASIC, 28, 4),
        ExtField::Ipv6Label => (NXM_NX, 27, 4),
        ExtField::NdTarget if oxm => (OXM_BASIC, 31, 16),
        ExtField::NdTarget => (NXM_NX, 23, 16),
        ExtField::CtMark => (NXM_NX, 107, 4),
        ExtField::CtLabel => (NXM_NX, 108, 16),
        ExtField::CtNwProto => (NXM_NX, 119, 1),
        ExtField::CtNwSrc => (NXM_NX, 120, 4),
        ExtField::CtNwDst => (NXM_NX, 121, 4),
        ExtField::CtTpSrc => (NXM_NX, 124, 2),
        ExtField::CtTpDst => (NXM_NX, 125, 2),
        _ => return None,
    })
}

/// The packet fields an action can name (`move`'s sources), with their NXM headers as OVS
/// writes them in actions (class, field, value length); TCP's ports stand for uvs's `tp_*`.
const PKT_HEADERS: &[(PktField, u16, u8, u8)] = &[
    (PktField::InPort, NXM_OF, 0, 2),
    (PktField::EthDst, NXM_OF, 1, 6),
    (PktField::EthSrc, NXM_OF, 2, 6),
    (PktField::EthType, NXM_OF, 3, 2),
    (PktField::VlanTci, NXM_OF, 4, 2),
    (PktField::NwProto, NXM_OF, 6, 1),
    (PktField::IpSrc, NXM_OF, 7, 4),
    (PktField::IpDst, NXM_OF, 8, 4),
    (PktField::TpSrc, NXM_OF, 9, 2),
    (PktField::TpDst, NXM_OF, 10, 2),
    (PktField::TunId, NXM_NX, 16, 8),
];

/// Other headers that name the same packet fields (UDP's and SCTP's ports, the OXM_OF_ forms
/// of the same width), for decoding.
const PKT_ALIASES: &[(PktField, u16, u8, u8)] = &[
    (PktField::TpSrc, NXM_OF, 11, 2),
    (PktField::TpDst, NXM_OF, 12, 2),
    (PktField::EthDst, OXM_BASIC, 3, 6),
    (PktField::EthSrc, OXM_BASIC, 4, 6),
    (PktField::EthType, OXM_BASIC, 5, 2),
    (PktField::NwProto, OXM_BASIC, 10, 1),
    (PktField::IpSrc, OXM_BASIC, 11, 4),
    (PktField::IpDst, OXM_BASIC, 12, 4),
    (PktField::TpSrc, OXM_BASIC, 13, 2),
    (PktField::TpDst, OXM_BASIC, 14, 2),
    (PktField::TpSrc, OXM_BASIC, 15, 2),
    (PktField::TpDst, OXM_BASIC, 16, 2),
    (PktField::TpSrc, OXM_BASIC, 17, 2),
    (PktField::TpDst, OXM_BASIC, 18, 2),
    (PktField::TunId, OXM_BASIC, 38, 8),
];

fn nxm_header((class, field, len): (u16, u8, u8)) -> u32 {
    (u32::from(class) << 16) | (u32::from(field) << 9) | u32::from(len)
}

/// The ext fields an action may name on the wire: those the flow syntax names (registers,
/// metadata, the connection's fields), not the IPv6 ones, `tcp_flags` or `nw_ttl`.
fn action_ext(f: ExtField) -> bool {
    !matches!(
        f,
        ExtField::Ipv6Src
            | ExtField::Ipv6Dst
            | ExtField::Ipv6Label
            | ExtField::NdTarget
            | ExtField::TcpFlags
            | ExtField::NwTtl
    )
}

/// The 32-bit NXM/OXM header (no mask) of a field an action names (`load`'s destination,
/// `move`'s source and destination), as OVS writes it there: NXM_OF_/NXM_NX_ where there is
/// one, OXM_OF_METADATA; `l4` (the flow's IP protocol) picks UDP's or SCTP's port headers
/// for `tp_src`/`tp_dst`.
pub fn action_header(f: Field, l4: Option<u8>) -> Option<u32> {
    match f {
        Field::Ext(e) if action_ext(e) => ext_header(Tlv::Nxm, e).map(nxm_header),
        Field::Ext(_) => None,
        Field::Pkt(p @ (PktField::TpSrc | PktField::TpDst)) => {
            let dst = u8::from(p == PktField::TpDst);
            Some(nxm_header(match l4 {
                Some(17) => (NXM_OF, 11 + dst, 2),
                Some(132) => (OXM_BASIC, 17 + dst, 2),
                _ => (NXM_OF, 9 + dst, 2),
            }))
        }
        Field::Pkt(p) => PKT_HEADERS
            .iter()
            .find(|e| e.0 == p)
            .map(|e| nxm_header((e.1, e.2, e.3))),
    }
}

/// The field an action's NXM/OXM header names, if uvs has it (either dialect's header; no
/// mask bit).
pub fn action_field(h: u32) -> Option<Field> {
    let ext = (0..16u8)
        .map(ExtField::Reg)
        .chain([
            ExtField::Metadata,
            ExtField::CtMark,
            ExtField::CtLabel,
            ExtField::CtNwSrc,
            ExtField::CtNwDst,
            ExtField::CtNwProto,
            ExtField::CtTpSrc,
            ExtField::CtTpDst,
        ])
        .find(|e| ext_header(Tlv::Nxm, *e).map(nxm_header) == Some(h));
    if let Some(e) = ext {
        return Some(Field::Ext(e));
    }
    PKT_HEADERS
        .iter()
        .chain(PKT_ALIASES)
        .find(|e| nxm_header((e.1, e.2, e.3)) == h)
        .map(|e| Field::Pkt(e.0))
}

/// The OXM header (class, field, length) of OpenFlow 1.3's set_field of a register or
/// `metadata` (NXM_NX_REGn, OXM_OF_METADATA), as OVS writes it.
pub fn set_field_header(f: ExtField) -> Option<(u16, u8, u8)> {
    match f {
        ExtField::Reg(_) | ExtField::Metadata => ext_header(Tlv::Oxm, f),
        _ => None,
    }
}

/// The register or `metadata` an OpenFlow 1.3 set_field's header names.
pub fn set_field_ext(class: u16, field: u8, len: u8) -> Option<ExtField> {
    (0..16u8)
        .map(ExtField::Reg)
        .chain([ExtField::Metadata])
        .find(|e| set_field_header(*e) == Some((class, field, len)))
}

/// One TLV entry with a value of up to 16 bytes (`len`), masked unless the mask is all ones.
fn put_raw(w: &mut Writer, (class, field, len): (u16, u8, u8), v: u128, mask: Option<u128>) {
    let all = if len >= 16 {
        u128::MAX
    } else {
        (1u128 << (u32::from(len) * 8)) - 1
    };
    let mask = mask.map(|m| m & all).filter(|m| *m != all);
    w.u16(class);
    w.u8((field << 1) | u8::from(mask.is_some()));
    w.u8(len * if mask.is_some() { 2 } else { 1 });
    let n = usize::from(len);
    w.bytes(&(v & all).to_be_bytes()[16 - n..]);
    if let Some(m) = mask {
        w.bytes(&m.to_be_bytes()[16 - n..]);
    }
}

/// Encode `m` as TLV entries (no padding). Returns the number of bytes written.
pub fn encode_tlv(w: &mut Writer, d: Tlv, m: &Match) -> usize {
    let start = w.len();
    if let Some(p) = &m.in_port {
        let n = u32::from(p.num());
        let n = match d {
            Tlv::Oxm => super::actions::port_to13(n),
            Tlv::Nxm => n,
        };
        put(w, d, F::InPort, u64::from(n), None);
    }
    if let Some(x) = m.dl_dst {
        put(w, d, F::EthDst, x.value, Some(x.mask));
    }
    if let Some(x) = m.dl_src {
        put(w, d, F::EthSrc, x.value, Some(x.mask));
    }
    if let Some(t) = m.dl_type {
        put(w, d, F::EthType, u64::from(t), None);
    }
    encode_vlan(w, d, m);
    let arp = m.dl_type == Some(ETH_ARP);
    if let Some(p) = m.nw_proto {
        let f = if arp { F::ArpOp } else { F::IpProto };
        put(w, d, f, u64::from(p), None);
    }
    if let Some(t) = m.nw_tos {
        match d {
            Tlv::Nxm => put(w, d, F::IpTos, u64::from(t), None),
            Tlv::Oxm => put(w, d, F::IpDscp, u64::from(t >> 2), None),
        }
    }
    if let Some(e) = m.nw_ecn {
        put(w, d, F::IpEcn, u64::from(e), None);
    }
    let (src, dst) = if arp {
        (F::ArpSpa, F::ArpTpa)
    } else {
        (F::IpSrc, F::IpDst)
    };
    if let Some(x) = m.nw_src {
        put(w, d, src, u64::from(x.value), Some(u64::from(x.mask)));
    }
    if let Some(x) = m.nw_dst {
        put(w, d, dst, u64::from(x.value), Some(u64::from(x.mask)));
    }
    let (s, t, bits) = match m.nw_proto {
        Some(6) => (F::TcpSrc, F::TcpDst, 0xffff),
        Some(17) => (F::UdpSrc, F::UdpDst, 0xffff),
        _ => (F::IcmpType, F::IcmpCode, 0xff),
    };
    if let Some(x) = m.tp_src {
        put(
            w,
            d,
            s,
            u64::from(x.value & bits),
            Some(u64::from(x.mask & bits)),
        );
    }
    if let Some(x) = m.tp_dst {
        put(
            w,
            d,
            t,
            u64::from(x.value & bits),
            Some(u64::from(x.mask & bits)),
        );
    }
    if let Some(x) = m.tun_id {
        put(w, d, F::TunId, x.value, Some(x.mask));
    }
    if let Some(x) = m.ct_state {
        put(
            w,
            d,
            F::CtState,
            u64::from(x.value),
            Some(u64::from(x.mask)),
        );
    }
    if let Some(z) = m.ct_zone {
        put(w, d, F::CtZone, u64::from(z), None);
    }
    if let Some(x) = m.nw_frag {
        // NXM_NX_IP_FRAG (OVS writes it in OpenFlow 1.3 too): the `frag::` bits are its bits.
        put_raw(
            w,
            (NXM_NX, 26, 1),
            u128::from(x.value),
            Some(u128::from(x.mask)),
        );
    }
    for (f, x) in m.ext.iter() {
        if let Some(h) = ext_header(d, f) {
            put_raw(w, h, x.value, Some(x.mask));
        }
    }
    if let Some(t) = m.ext.get(ExtField::NwTtl) {
        put(w, d, F::IpTtl, t.value as u64, None);
    }
    if let Some(x) = m.ext.get(ExtField::TcpFlags) {
        let (v, mk) = (x.value as u64, x.mask as u64);
        match d {
            Tlv::Nxm => put(w, d, F::TcpFlags, v, Some(mk)),
            // As OVS writes it for OpenFlow 1.3: ONF's experimenter field.
            Tlv::Oxm => {
                let mask = (mk != 0xffff).then_some(mk);
                w.u16(OXM_EXPERIMENTER);
                w.u8((ONF_TCP_FLAGS << 1) | u8::from(mask.is_some()));
                w.u8(4 + if mask.is_some() { 4 } else { 2 });
                w.u32(ONF_EXPERIMENTER);
                w.u16(v as u16);
                if let Some(mk) = mask {
                    w.u16(mk as u16);
                }
            }
        }
    }
    w.len() - start
}

fn encode_vlan(w: &mut Writer, d: Tlv, m: &Match) {
    // A `vlan_tci` match the other fields cannot say (any tagged frame, partial masks).
    if let Some(t) = m.vlan_tci {
        match d {
            Tlv::Nxm => put(
                w,
                d,
                F::VlanTci,
                u64::from(t.value),
                Some(u64::from(t.mask)),
            ),
            Tlv::Oxm => {
                let vid_mask = t.mask & 0x1fff;
                if vid_mask != 0 {
                    let v = u64::from(t.value & 0x1fff);
                    put(w, d, F::VlanVid, v, Some(u64::from(vid_mask)));
                }
                if t.mask & 0xe000 == 0xe000 {
                    put(w, d, F::VlanPcp, u64::from(t.value >> 13), None);
                }
            }
        }
        return;
    }
    match (d, m.dl_vlan, m.dl_vlan_pcp) {
        (_, None, None) => {}
        (Tlv::Nxm, Some(NO_VLAN), _) => put(w, d, F::VlanTci, 0, None),
        (Tlv::Nxm, vid, pcp) => {
            let mut v = 0x1000u16;
            let mut mk = 0x1000u16;
            if let Some(vid) = vid {
                v |= vid & 0xfff;
                mk |= 0x0fff;
            }
            if let Some(p) = pcp {
                v |= u16::from(p & 7) << 13;
                mk |= 0xe000;
            }
            put(w, d, F::VlanTci, u64::from(v), Some(u64::from(mk)));
        }
        (Tlv::Oxm, vid, pcp) => {
            match vid {
                Some(NO_VLAN) => put(w, d, F::VlanVid, 0, None),
                Some(v) => put(w, d, F::VlanVid, u64::from(0x1000 | v), None),
                None => put(w, d, F::VlanVid, 0x1000, Some(0x1000)),
            }
            if let Some(p) = pcp {
                put(w, d, F::VlanPcp, u64::from(p), None);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::parse_filter;

    fn m(s: &str) -> Match {
        parse_filter(s).unwrap().m
    }

    fn roundtrip(d: Tlv, s: &str) {
        let want = m(s);
        let mut w = Writer::default();
        encode_tlv(&mut w, d, &want);
        let got = decode_tlv(d, Reader::new(&w.buf)).unwrap();
        assert_eq!(got, want, "{s} via {d:?}");
    }

    #[test]
    fn tlv_roundtrips() {
        for d in [Tlv::Nxm, Tlv::Oxm] {
            roundtrip(d, "in_port=3,tcp,nw_src=10.0.0.0/8,tp_dst=80");
            roundtrip(d, "dl_vlan=5,dl_src=00:11:22:33:44:55/ff:ff:ff:00:00:00");
            roundtrip(d, "dl_vlan=0xffff,arp,arp_spa=10.0.0.1,arp_op=2");
            roundtrip(d, "icmp,icmp_type=8,icmp_code=0,nw_tos=16");
            roundtrip(d, "udp,nw_tos=184,nw_ecn=3");
            roundtrip(d, "udp,tp_src=0x100/0xff00,dl_vlan_pcp=3");
            roundtrip(d, "tcp,tcp_flags=+syn-ack");
            roundtrip(d, "tcp6,tcp_flags=fin|ack,tp_dst=80");
            roundtrip(d, "ip,nw_ttl=1");
            roundtrip(d, "tcp,nw_ttl=64,tcp_flags=+syn");
            roundtrip(d, "in_port=LOCAL,icmp");
        }
        // LOCAL on the wire: NXM's 16-bit 0xfffe, OXM's 32-bit 0xfffffffe.
        for (d, want) in [
            (Tlv::Nxm, &[0xff, 0xfe][..]),
            (Tlv::Oxm, &[0xff, 0xff, 0xff, 0xfe][..]),
        ] {
            let mut w = Writer::default();
            encode_tlv(&mut w, d, &m("in_port=LOCAL"));
            assert_eq!(&w.buf[4..], want, "{d:?}");
        }
        let mut w = Writer::default();
        encode_of10(&mut w, &m("in_port=LOCAL"));
        assert_eq!(
            decode_of10(&mut Reader::new(&w.buf)).unwrap(),
            m("in_port=LOCAL")
        );
    }

    #[test]
    fn tcp_flags_as_ovs_writes_them_for_openflow13() {
        // tcp,tcp_flags=+syn-ack: ... ONFOXM_ET_TCP_FLAGS: class 0xffff, field 42, masked,
        // length 8: experimenter 0x4f4e4600, value 0x0002, mask 0x0012.
        let mut w = Writer::default();
        encode_tlv(&mut w, Tlv::Oxm, &m("tcp,tcp_flags=+syn-ack"));
        let tail = [
            0xff,
            0xff,
            42 << 1 | 1,
            8,
            0x4f,
            0x4e,
            0x46,
            0,
            0,
            2,
            0,
            0x12,
        ];
        assert!(w.buf.ends_with(&tail), "{:02x?}", w.buf);
        // Another experimenter's field, or one cut short: refused, named.
        let mut b = tail;
        b[4] = 0x00;
        assert_eq!(decode_tlv(Tlv::Oxm, Reader::new(&b)), Err(OfErr::BadField));
        assert_eq!(
            decode_tlv(Tlv::Oxm, Reader::new(&[0xff, 0xff, 42 << 1, 2, 0x4f, 0x4e])),
            Err(OfErr::BadMatchLen)
        );
        // Given twice (NXM and ONF spellings).
        let mut w = Writer::default();
        encode_tlv(&mut w, Tlv::Oxm, &m("tcp,tcp_flags=+syn-ack"));
        let mut b = w.buf.clone();
        b.extend_from_slice(&[0, 1, 34 << 1, 2, 0, 2]);
        assert_eq!(decode_tlv(Tlv::Oxm, Reader::new(&b)), Err(OfErr::DupField));
    }

    #[test]
    fn nxm_bytes_as_ovs_ofctl_sends_them() {
        // in_port=1,dl_type=0x0800 as NXM: NXM_OF_IN_PORT(0x00000002) 0001,
        // NXM_OF_ETH_TYPE(0x00000602) 0800.
        let b = [0, 0, 0, 2, 0, 1, 0, 0, 6, 2, 8, 0];
        let got = decode_tlv(Tlv::Nxm, Reader::new(&b)).unwrap();
        assert_eq!(got, m("in_port=1,ip"));
        let mut w = Writer::default();
        encode_tlv(&mut w, Tlv::Nxm, &got);
        assert_eq!(w.buf, b);
    }

    #[test]
    fn oxm_errors() {
        // OXM_OF_IPV6_SRC: not a field uvs has.
        let b = [0x80, 0, 26 << 1, 16]
            .iter()
            .chain([0u8; 16].iter())
            .copied();
        let b: Vec<u8> = b.collect();
        assert_eq!(decode_tlv(Tlv::Oxm, Reader::new(&b)), Err(OfErr::BadField));
        // ETH_TYPE twice.
        let b = [0x80, 0, 10, 2, 8, 0, 0x80, 0, 10, 2, 8, 6];
        assert_eq!(decode_tlv(Tlv::Oxm, Reader::new(&b)), Err(OfErr::DupField));
        // Truncated.
        assert_eq!(
            decode_tlv(Tlv::Oxm, Reader::new(&[0x80, 0, 10, 2, 8])),
            Err(OfErr::BadMatchLen)
        );
    }

    #[test]
    fn of10_match_roundtrip_and_normalisation() {
        let want = m("in_port=2,tcp,nw_dst=10.1.0.0/16,tp_dst=22,dl_vlan=7");
        let mut w = Writer::default();
        encode_of10(&mut w, &want);
        assert_eq!(w.len(), OFP10_MATCH_LEN);
        assert_eq!(decode_of10(&mut Reader::new(&w.buf)).unwrap(), want);
        // tp_dst without a transport protocol is ignored (OVS normalises the same way).
        let mut w = Writer::default();
        encode_of10(&mut w, &m("ip,nw_src=1.2.3.4"));
        let mut b = w.buf.clone();
        b[0..4].copy_from_slice(&(w10::ALL & !w10::DL_TYPE & !w10::TP_DST).to_be_bytes());
        b[38..40].copy_from_slice(&80u16.to_be_bytes());
        assert_eq!(decode_of10(&mut Reader::new(&b)).unwrap(), m("ip"));
    }
}
