//! Register actions in ovs-ofctl syntax: `load:VALUE->DST[S..E]`, `move:SRC[S..E]->DST[S..E]`
//! and the subfields they name.
//!
//! Contract:
//! - A destination is a register or metadata (`reg0`..`reg15`, `NXM_NX_REG0`, `xreg0`..`xreg7`,
//!   `metadata`, `OXM_OF_METADATA`); writing packet headers this way is refused by name (use
//!   `set_field`/`mod_*`). A move source may also be a packet field (`in_port`, `eth_src`,
//!   `eth_dst`, `eth_type`, `vlan_tci`, `ip_src`, `ip_dst`, `nw_proto`, `tcp_src`/`udp_src`/
//!   `tp_src`, `tcp_dst`/`udp_dst`/`tp_dst`, `tun_id`; OVS's `NXM_OF_*`/`NXM_NX_*` names too).
//! - `[]` is the whole field, `[N]` one bit, `[S..E]` bits S to E inclusive; ranges must fit
//!   the field, a move's two ranges must have the same width, a load's value must fit its
//!   range.
//! - `xregN[S..E]` is mapped onto the register that holds those bits (a range that spans both
//!   halves is refused).
//! - Display: `load:0x5->reg0[0..7]`, `move:eth_src[0..31]->reg1[]`; it parses back.

use std::fmt;

use super::FlowError;
use super::ext::ExtField;

/// A packet field a `move` can read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PktField {
    /// OpenFlow ingress port (16 bits).
    InPort,
    /// Source MAC.
    EthSrc,
    /// Destination MAC.
    EthDst,
    /// EtherType.
    EthType,
    /// 802.1Q TCI with the CFI bit meaning "tagged" (OVS's `vlan_tci`).
    VlanTci,
    /// IPv4 source.
    IpSrc,
    /// IPv4 destination.
    IpDst,
    /// IP protocol.
    NwProto,
    /// TCP/UDP source port.
    TpSrc,
    /// TCP/UDP destination port.
    TpDst,
    /// Tunnel id.
    TunId,
}

const PKT: &[(PktField, &[&str], u32)] = &[
    (PktField::InPort, &["in_port", "NXM_OF_IN_PORT"], 16),
    (
        PktField::EthSrc,
        &["eth_src", "dl_src", "NXM_OF_ETH_SRC"],
        48,
    ),
    (
        PktField::EthDst,
        &["eth_dst", "dl_dst", "NXM_OF_ETH_DST"],
        48,
    ),
    (
        PktField::EthType,
        &["eth_type", "dl_type", "NXM_OF_ETH_TYPE"],
        16,
    ),
    (PktField::VlanTci, &["vlan_tci", "NXM_OF_VLAN_TCI"], 16),
    (PktField::IpSrc, &["ip_src", "nw_src", "NXM_OF_IP_SRC"], 32),
    (PktField::IpDst, &["ip_dst", "nw_dst", "NXM_OF_IP_DST"], 32),
    (
        PktField::NwProto,
        &["nw_proto", "ip_proto", "NXM_OF_IP_PROTO"],
        8,
    ),
    (
        PktField::TpSrc,
        &[
            "tp_src",
            "tcp_src",
            "udp_src",
            "NXM_OF_TCP_SRC",
            "NXM_OF_UDP_SRC",
        ],
        16,
    ),
    (
        PktField::TpDst,
        &[
            "tp_dst",
            "tcp_dst",
            "udp_dst",
            "NXM_OF_TCP_DST",
            "NXM_OF_UDP_DST",
        ],
        16,
    ),
    (
        PktField::TunId,
        &["tun_id", "tunnel_id", "NXM_NX_TUN_ID"],
        64,
    ),
];

/// Where a subfield lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Field {
    /// A register, metadata or IPv6 field.
    Ext(ExtField),
    /// A packet header field (read only).
    Pkt(PktField),
}

impl Field {
    /// Width in bits.
    pub fn bits(self) -> u32 {
        match self {
            Field::Ext(f) => f.bits(),
            Field::Pkt(p) => PKT.iter().find(|x| x.0 == p).map_or(0, |x| x.2),
        }
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Field::Ext(e) => write!(f, "{e}"),
            Field::Pkt(p) => f.write_str(PKT.iter().find(|x| x.0 == *p).map_or("?", |x| x.1[0])),
        }
    }
}

/// Bits `ofs .. ofs + n_bits` of a field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Subfield {
    /// The field.
    pub field: Field,
    /// First bit.
    pub ofs: u8,
    /// Width in bits (1-128).
    pub n_bits: u8,
}

impl Subfield {
    /// The mask of these bits within the field.
    pub fn mask(&self) -> u128 {
        (u128::MAX >> (128 - u32::from(self.n_bits))) << self.ofs
    }
}

impl fmt::Display for Subfield {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if u32::from(self.n_bits) == self.field.bits() {
            write!(f, "{}[]", self.field)
        } else if self.n_bits == 1 {
            write!(f, "{}[{}]", self.field, self.ofs)
        } else {
            let end = u32::from(self.ofs) + u32::from(self.n_bits) - 1;
            write!(f, "{}[{}..{end}]", self.field, self.ofs)
        }
    }
}

fn bad(action: &str, why: impl Into<String>) -> FlowError {
    FlowError::BadAction {
        action: action.to_string(),
        why: why.into(),
    }
}

/// Parse `NAME[...]`; `dst` restricts it to registers and metadata.
pub(crate) fn parse_subfield(t: &str, s: &str, dst: bool) -> Result<Subfield, FlowError> {
    let sf = parse_subfield_any(t, s, dst)?;
    match sf.field {
        Field::Ext(f @ (ExtField::CtMark | ExtField::CtLabel)) if dst => Err(bad(
            t,
            format!("{f} can only be written inside ct(commit,exec(...))"),
        )),
        Field::Ext(f) if dst && !f.writable() => Err(bad(t, format!("{f} is read-only"))),
        _ => Ok(sf),
    }
}

/// `parse_subfield` that also takes `ct_mark`/`ct_label` as destinations (for `ct(exec(...))`).
pub(crate) fn parse_subfield_any(t: &str, s: &str, dst: bool) -> Result<Subfield, FlowError> {
    let s = s.trim();
    let (name, range) = match s.find('[') {
        Some(i) if s.ends_with(']') => (&s[..i], &s[i + 1..s.len() - 1]),
        _ => (s, ""),
    };
    // xregN: 64 bits over reg(2N) (high) and reg(2N+1) (low).
    let xreg = name
        .strip_prefix("xreg")
        .or_else(|| name.strip_prefix("NXM_NX_XREG"))
        .and_then(|n| n.parse::<u8>().ok().filter(|n| *n < 8));
    let (field, width) = if xreg.is_some() {
        (None, 64)
    } else if let Some(f) = ExtField::by_name(name) {
        (Some(Field::Ext(f)), f.bits())
    } else if let Some(p) = PKT.iter().find(|x| x.1.contains(&name)) {
        if dst {
            return Err(bad(
                t,
                format!("writing '{name}' this way is not supported (use set_field or mod_*)"),
            ));
        }
        (Some(Field::Pkt(p.0)), p.2)
    } else {
        return Err(bad(t, format!("unknown or unsupported field '{name}'")));
    };
    let num = |x: &str| {
        x.trim()
            .parse::<u32>()
            .map_err(|_| bad(t, format!("bad bit range '[{range}]'")))
    };
    let (ofs, end) = match range.split_once("..") {
        _ if range.is_empty() => (0, width - 1),
        Some((a, b)) => (num(a)?, num(b)?),
        None => {
            let b = num(range)?;
            (b, b)
        }
    };
    if end < ofs || end >= width {
        return Err(bad(
            t,
            format!("bits [{ofs}..{end}] do not fit '{name}' ({width} bits)"),
        ));
    }
    let field = match (field, xreg) {
        (Some(f), _) => f,
        (None, Some(n)) if ofs >= 32 => {
            return Ok(Subfield {
                field: Field::Ext(ExtField::Reg(2 * n)),
                ofs: (ofs - 32) as u8,
                n_bits: (end - ofs + 1) as u8,
            });
        }
        (None, Some(n)) if end < 32 => Field::Ext(ExtField::Reg(2 * n + 1)),
        _ => {
            return Err(bad(
                t,
                format!("'{s}' spans both registers of {name} (not supported)"),
            ));
        }
    };
    Ok(Subfield {
        field,
        ofs: ofs as u8,
        n_bits: (end - ofs + 1) as u8,
    })
}

/// `load:VALUE->DST[..]`: (value already shifted to the subfield's bits, destination).
pub(crate) fn parse_load(t: &str, arg: &str) -> Result<(u128, Subfield), FlowError> {
    parse_load_into(t, arg, false)
}

/// `parse_load`; `ct` also allows `ct_mark`/`ct_label` destinations.
pub(crate) fn parse_load_into(t: &str, arg: &str, ct: bool) -> Result<(u128, Subfield), FlowError> {
    let (v, d) = arg
        .split_once("->")
        .ok_or_else(|| bad(t, "want load:VALUE->DST[BITS]"))?;
    let dst = if ct {
        parse_subfield_any(t, d, true)?
    } else {
        parse_subfield(t, d, true)?
    };
    let v = v.trim();
    let value = match v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) {
        Some(h) => u128::from_str_radix(h, 16),
        None => v.parse::<u128>(),
    }
    .map_err(|_| bad(t, format!("'{v}' is not a number")))?;
    if dst.n_bits < 128 && value >> dst.n_bits != 0 {
        return Err(bad(t, format!("'{v}' does not fit in {} bits", dst.n_bits)));
    }
    Ok((value << dst.ofs, dst))
}

/// `move:SRC[..]->DST[..]`.
pub(crate) fn parse_move(t: &str, arg: &str) -> Result<(Subfield, Subfield), FlowError> {
    let (s, d) = arg
        .split_once("->")
        .ok_or_else(|| bad(t, "want move:SRC[BITS]->DST[BITS]"))?;
    let (src, dst) = (parse_subfield(t, s, false)?, parse_subfield(t, d, true)?);
    if src.n_bits != dst.n_bits {
        return Err(bad(
            t,
            format!("source has {} bits, destination {}", src.n_bits, dst.n_bits),
        ));
    }
    Ok((src, dst))
}
