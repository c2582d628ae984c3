//! Fields beyond the packed classifier key: registers (`reg0`..`reg15`, `xreg0`..`xreg7`),
//! `metadata`, the connection's `ct_mark`/`ct_label`, the IPv6 addresses, flow label and
//! ND target, TCP's flags (`tcp_flags`, 12 bits as OVS: the 9 flags and 3 reserved bits) and
//! the IPv4 TTL or IPv6 hop limit (`nw_ttl`).
//! - TCP flags and the TTL come from the frame only while some flow of the table matches one
//!   of them (`Classifier::reads_ip_fields`); IP packets' exact-match cache and per-burst
//!   batching are off meanwhile (a SYN and an ACK of one connection, or one flow's packets
//!   before and after a router, share a packed key).
//!
//! Contract:
//! - `ExtKey` holds their values for one packet: the IPv6 ones come from the frame,
//!   `ct_mark`/`ct_label` from the connection a `ct` action found (0 before), registers and
//!   metadata start at 0 and are written by actions (`load:`, `move:`, `set_field:`).
//! - `ExtMatch` is a flow's matches on them: a list sorted by field, each `Masked<u128>` in normal
//!   form (`value & mask == value`, `mask != 0`), so two spellings of a match compare equal.
//!   The classifier hashes the packed key only; a rule with an `ExtMatch` is checked against the
//!   `ExtKey` after its packed key matched (rules with equal packed keys are chained, best
//!   first), so flows without these fields pay nothing.
//! - `xregN` is `reg(2N)` (high 32 bits) and `reg(2N+1)` (low 32 bits), as in OVS; it is stored
//!   as the two registers.
//! - Display: `reg0=0x5`, `reg0=0x5/0xff`, `metadata=0x1`, `ipv6_src=fc00::/64`,
//!   `ipv6_label=0x00005`, `nd_target=fc00::1`; all parse back.

use std::fmt::{self, Write as _};
use std::net::Ipv6Addr;
use std::str::FromStr;

use super::FlowError;
use super::match_::Masked;
use super::parse::parse_num;

/// A field of `ExtKey`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ExtField {
    /// `ct_mark` (32 bits): the connection's mark, set by `ct(commit,exec(...))`.
    CtMark,
    /// `ct_label` (128 bits): the connection's label.
    CtLabel,
    /// `ct_nw_src`: source address of the connection's original direction.
    CtNwSrc,
    /// `ct_nw_dst`: its destination address.
    CtNwDst,
    /// `ct_nw_proto`: its IP protocol.
    CtNwProto,
    /// `ct_tp_src`: its source port (ICMP: type).
    CtTpSrc,
    /// `ct_tp_dst`: its destination port (ICMP: code).
    CtTpDst,
    /// `metadata` (64 bits).
    Metadata,
    /// `regN` (32 bits), N 0-15.
    Reg(u8),
    /// `ipv6_src`.
    Ipv6Src,
    /// `ipv6_dst`.
    Ipv6Dst,
    /// `ipv6_label` (20 bits).
    Ipv6Label,
    /// `nd_target` (ICMPv6 neighbour solicitation/advertisement).
    NdTarget,
    /// `tcp_flags` (12 bits: FIN 0x001 .. CWR 0x080, NS 0x100, three reserved bits).
    TcpFlags,
    /// `nw_ttl`: the IPv4 TTL or IPv6 hop limit (8 bits).
    NwTtl,
}

/// TCP flag names by bit, as OVS writes them (`packet_tcp_flag_to_string`).
pub const TCP_FLAG_NAMES: [(&str, u16); 12] = [
    ("fin", 0x001),
    ("syn", 0x002),
    ("rst", 0x004),
    ("psh", 0x008),
    ("ack", 0x010),
    ("urg", 0x020),
    ("ece", 0x040),
    ("cwr", 0x080),
    ("ns", 0x100),
    ("[200]", 0x200),
    ("[400]", 0x400),
    ("[800]", 0x800),
];

/// `tcp_flags=`: `+flag-flag...` (the named flags set or clear, the others wildcarded),
/// `flag|flag` (exactly those set), or `VALUE[/MASK]` (12 bits).
pub(crate) fn parse_tcp_flags(field: &str, s: &str) -> Result<Masked<u128>, FlowError> {
    let bit = |name: &str| {
        TCP_FLAG_NAMES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, b)| u128::from(*b))
            .ok_or_else(|| {
                bad_value(
                    field,
                    name,
                    "unknown TCP flag (fin, syn, rst, psh, ack, urg, ece, cwr, ns)",
                )
            })
    };
    if s.starts_with('+') || s.starts_with('-') {
        let (mut value, mut mask) = (0u128, 0u128);
        let mut rest = s;
        while let Some(sign) = rest.chars().next() {
            let body = &rest[1..];
            let end = body.find(['+', '-']).unwrap_or(body.len());
            let (name, tail) = body.split_at(end);
            let b = bit(name)?;
            if mask & b != 0 {
                return Err(bad_value(field, s, format!("flag '{name}' given twice")));
            }
            mask |= b;
            if sign == '+' {
                value |= b;
            }
            rest = tail;
        }
        return Ok(Masked { value, mask });
    }
    if s.chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '[')
    {
        let mut value = 0u128;
        for name in s.split('|') {
            value |= bit(name)?;
        }
        return Ok(Masked { value, mask: 0xfff });
    }
    parse_masked_bits(field, s, 12)
}

/// Write a `tcp_flags` match as OVS does: `flag|flag` (or `0`) with the whole field
/// matched, else `+flag-flag` over the matched bits.
fn write_tcp_flags(s: &mut String, m: Masked<u128>) {
    let name = |b: u16| {
        TCP_FLAG_NAMES
            .iter()
            .find(|(_, x)| *x == b)
            .map_or("?", |(n, _)| n)
    };
    let (v, k) = (m.value as u16, m.mask as u16);
    if k == 0xfff {
        let set: Vec<&str> = (0..12)
            .map(|i| 1u16 << i)
            .filter(|b| v & b != 0)
            .map(name)
            .collect();
        s.push_str(&if set.is_empty() {
            "0".to_string()
        } else {
            set.join("|")
        });
        return;
    }
    for b in (0..12).map(|i| 1u16 << i).filter(|b| k & b != 0) {
        s.push(if v & b != 0 { '+' } else { '-' });
        s.push_str(name(b));
    }
}

impl ExtField {
    /// Width in bits.
    pub fn bits(self) -> u32 {
        match self {
            ExtField::Metadata => 64,
            ExtField::Reg(_) | ExtField::CtMark | ExtField::CtNwSrc | ExtField::CtNwDst => 32,
            ExtField::CtNwProto => 8,
            ExtField::CtTpSrc | ExtField::CtTpDst => 16,
            ExtField::CtLabel => 128,
            ExtField::Ipv6Label => 20,
            ExtField::TcpFlags => 12,
            ExtField::NwTtl => 8,
            ExtField::Ipv6Src | ExtField::Ipv6Dst | ExtField::NdTarget => 128,
        }
    }

    /// All ones over the field's width.
    pub fn full(self) -> u128 {
        u128::MAX >> (128 - self.bits())
    }

    /// Whether actions may write it (registers and metadata).
    pub fn writable(self) -> bool {
        matches!(self, ExtField::Metadata | ExtField::Reg(_))
    }

    /// Whether its value comes from the packet (IPv6 fields): the only ext fields that can be
    /// non-zero at the first lookup.
    pub fn from_packet(self) -> bool {
        matches!(
            self,
            ExtField::Ipv6Src | ExtField::Ipv6Dst | ExtField::Ipv6Label | ExtField::NdTarget
        )
    }

    /// The field of a register, metadata or connection mark/label name (`reg3`,
    /// `NXM_NX_REG3`, `metadata`, `OXM_OF_METADATA`, `ct_mark`, `NXM_NX_CT_MARK`, `ct_label`,
    /// `NXM_NX_CT_LABEL`); `xregN` is not one field (see `parse_xreg`).
    pub fn by_name(name: &str) -> Option<ExtField> {
        let reg = name
            .strip_prefix("reg")
            .or_else(|| name.strip_prefix("NXM_NX_REG"))
            .and_then(|n| n.parse::<u8>().ok().filter(|n| *n < 16));
        match name {
            "metadata" | "OXM_OF_METADATA" => Some(ExtField::Metadata),
            "ct_mark" | "NXM_NX_CT_MARK" => Some(ExtField::CtMark),
            "ct_label" | "NXM_NX_CT_LABEL" => Some(ExtField::CtLabel),
            "ct_nw_src" | "NXM_NX_CT_NW_SRC" => Some(ExtField::CtNwSrc),
            "ct_nw_dst" | "NXM_NX_CT_NW_DST" => Some(ExtField::CtNwDst),
            "ct_nw_proto" | "NXM_NX_CT_NW_PROTO" => Some(ExtField::CtNwProto),
            "ct_tp_src" | "NXM_NX_CT_TP_SRC" => Some(ExtField::CtTpSrc),
            "ct_tp_dst" | "NXM_NX_CT_TP_DST" => Some(ExtField::CtTpDst),
            _ => reg.map(ExtField::Reg),
        }
    }
}

impl fmt::Display for ExtField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExtField::CtMark => f.write_str("ct_mark"),
            ExtField::CtLabel => f.write_str("ct_label"),
            ExtField::CtNwSrc => f.write_str("ct_nw_src"),
            ExtField::CtNwDst => f.write_str("ct_nw_dst"),
            ExtField::CtNwProto => f.write_str("ct_nw_proto"),
            ExtField::CtTpSrc => f.write_str("ct_tp_src"),
            ExtField::CtTpDst => f.write_str("ct_tp_dst"),
            ExtField::Metadata => f.write_str("metadata"),
            ExtField::Reg(n) => write!(f, "reg{n}"),
            ExtField::Ipv6Src => f.write_str("ipv6_src"),
            ExtField::Ipv6Dst => f.write_str("ipv6_dst"),
            ExtField::Ipv6Label => f.write_str("ipv6_label"),
            ExtField::NdTarget => f.write_str("nd_target"),
            ExtField::TcpFlags => f.write_str("tcp_flags"),
            ExtField::NwTtl => f.write_str("nw_ttl"),
        }
    }
}

/// The values of the `ExtField`s for one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ExtKey {
    /// The connection's mark (after a `ct` action).
    pub ct_mark: u32,
    /// The connection's label.
    pub ct_label: u128,
    /// The connection's original direction (after a `ct` action; the packet's own tuple for a
    /// new, uncommitted one): (source, destination, protocol, source port or ICMP type,
    /// destination port or ICMP code).
    pub ct_orig: (u32, u32, u8, u16, u16),
    /// `reg0`..`reg15`.
    pub regs: [u32; 16],
    /// `metadata`.
    pub metadata: u64,
    /// IPv6 source address (0 for other packets).
    pub ipv6_src: u128,
    /// IPv6 destination address.
    pub ipv6_dst: u128,
    /// IPv6 flow label (20 bits).
    pub ipv6_label: u32,
    /// The target address of an ICMPv6 neighbour solicitation or advertisement.
    pub nd_target: u128,
    /// TCP's flags (12 bits; 0 for other packets, and while no flow matches them).
    pub tcp_flags: u16,
    /// The IPv4 TTL or IPv6 hop limit (0 for other packets, and while no flow matches it).
    pub nw_ttl: u8,
}

impl ExtKey {
    /// All zero (a packet before any action, not IPv6).
    pub const ZERO: ExtKey = ExtKey {
        ct_mark: 0,
        ct_label: 0,
        ct_orig: (0, 0, 0, 0, 0),
        regs: [0; 16],
        metadata: 0,
        ipv6_src: 0,
        ipv6_dst: 0,
        ipv6_label: 0,
        nd_target: 0,
        tcp_flags: 0,
        nw_ttl: 0,
    };

    /// The value of `f`.
    #[inline]
    pub fn get(&self, f: ExtField) -> u128 {
        match f {
            ExtField::CtMark => u128::from(self.ct_mark),
            ExtField::CtLabel => self.ct_label,
            ExtField::CtNwSrc => u128::from(self.ct_orig.0),
            ExtField::CtNwDst => u128::from(self.ct_orig.1),
            ExtField::CtNwProto => u128::from(self.ct_orig.2),
            ExtField::CtTpSrc => u128::from(self.ct_orig.3),
            ExtField::CtTpDst => u128::from(self.ct_orig.4),
            ExtField::Metadata => u128::from(self.metadata),
            ExtField::Reg(n) => u128::from(self.regs[n as usize & 15]),
            ExtField::Ipv6Src => self.ipv6_src,
            ExtField::Ipv6Dst => self.ipv6_dst,
            ExtField::Ipv6Label => u128::from(self.ipv6_label),
            ExtField::NdTarget => self.nd_target,
            ExtField::TcpFlags => u128::from(self.tcp_flags),
            ExtField::NwTtl => u128::from(self.nw_ttl),
        }
    }

    /// Write the bits of `mask` of `f` from `value` (other bits kept).
    #[inline]
    pub fn set(&mut self, f: ExtField, value: u128, mask: u128) {
        let v = (self.get(f) & !mask) | (value & mask);
        match f {
            ExtField::CtMark => self.ct_mark = v as u32,
            ExtField::CtLabel => self.ct_label = v,
            ExtField::CtNwSrc => self.ct_orig.0 = v as u32,
            ExtField::CtNwDst => self.ct_orig.1 = v as u32,
            ExtField::CtNwProto => self.ct_orig.2 = v as u8,
            ExtField::CtTpSrc => self.ct_orig.3 = v as u16,
            ExtField::CtTpDst => self.ct_orig.4 = v as u16,
            ExtField::Metadata => self.metadata = v as u64,
            ExtField::Reg(n) => self.regs[n as usize & 15] = v as u32,
            ExtField::Ipv6Src => self.ipv6_src = v,
            ExtField::Ipv6Dst => self.ipv6_dst = v,
            ExtField::Ipv6Label => self.ipv6_label = (v & 0xf_ffff) as u32,
            ExtField::NdTarget => self.nd_target = v,
            ExtField::TcpFlags => self.tcp_flags = (v & 0xfff) as u16,
            ExtField::NwTtl => self.nw_ttl = v as u8,
        }
    }
}

/// A flow's matches on `ExtField`s, sorted by field, in normal form.
#[derive(Debug, Clone, PartialEq, Eq, Default, Hash)]
pub struct ExtMatch(Vec<(ExtField, Masked<u128>)>);

impl ExtMatch {
    /// No ext fields matched.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The matched fields.
    pub fn iter(&self) -> impl Iterator<Item = (ExtField, Masked<u128>)> + '_ {
        self.0.iter().copied()
    }

    /// The match on `f`, if any.
    pub fn get(&self, f: ExtField) -> Option<Masked<u128>> {
        self.0.iter().find(|(g, _)| *g == f).map(|(_, m)| *m)
    }

    /// Match `f` against `m` (normalised; a zero mask removes the match). Fails if `f` is
    /// already matched with a different value.
    pub fn set(&mut self, f: ExtField, m: Masked<u128>, token: &str) -> Result<(), FlowError> {
        let m = Masked {
            value: m.value & m.mask & f.full(),
            mask: m.mask & f.full(),
        };
        match self.0.binary_search_by_key(&f, |(g, _)| *g) {
            Ok(i) if self.0[i].1 != m => Err(FlowError::Conflict {
                token: token.to_string(),
                field: f.to_string(),
            }),
            Ok(_) => Ok(()),
            Err(_) if m.mask == 0 => Ok(()),
            Err(i) => {
                self.0.insert(i, (f, m));
                Ok(())
            }
        }
    }

    /// Whether `k` matches.
    #[inline]
    pub fn matches(&self, k: &ExtKey) -> bool {
        self.0.iter().all(|(f, m)| k.get(*f) & m.mask == m.value)
    }

    /// Whether any matched field comes from the packet (IPv6).
    pub fn uses_packet(&self) -> bool {
        self.0.iter().any(|(f, _)| f.from_packet())
    }

    /// Whether a field read from the IP or TCP header (`tcp_flags`, `nw_ttl`) is matched.
    pub fn uses_ip_fields(&self) -> bool {
        self.0
            .iter()
            .any(|(f, _)| matches!(f, ExtField::TcpFlags | ExtField::NwTtl))
    }

    /// Whether every packet `self` matches is matched by `wider` (for non-strict deletes):
    /// each field of `wider` is matched here at least as precisely, with the same bits.
    pub fn within(&self, wider: &ExtMatch) -> bool {
        wider.0.iter().all(|(f, w)| {
            self.get(*f)
                .is_some_and(|m| m.mask & w.mask == w.mask && m.value & w.mask == w.value)
        })
    }

    /// Write the fields in `field` order, each after a comma.
    pub(crate) fn write(&self, s: &mut String, which: impl Fn(ExtField) -> bool) {
        for (f, m) in self.0.iter().filter(|(f, _)| which(*f)) {
            let _ = write!(s, ",{f}=");
            match f {
                ExtField::Ipv6Src | ExtField::Ipv6Dst | ExtField::NdTarget => {
                    let _ = write!(s, "{}", Ipv6Addr::from(m.value));
                    if m.mask != u128::MAX {
                        if m.mask.leading_ones() + m.mask.trailing_zeros() == 128 {
                            let _ = write!(s, "/{}", m.mask.leading_ones());
                        } else {
                            let _ = write!(s, "/{}", Ipv6Addr::from(m.mask));
                        }
                    }
                }
                ExtField::CtNwSrc | ExtField::CtNwDst => {
                    let (v, k) = (m.value as u32, m.mask as u32);
                    let _ = write!(s, "{}", std::net::Ipv4Addr::from(v));
                    if k != u32::MAX {
                        if k.leading_ones() + k.trailing_zeros() == 32 {
                            let _ = write!(s, "/{}", k.leading_ones());
                        } else {
                            let _ = write!(s, "/{}", std::net::Ipv4Addr::from(k));
                        }
                    }
                }
                ExtField::TcpFlags => write_tcp_flags(s, *m),
                ExtField::CtNwProto | ExtField::CtTpSrc | ExtField::CtTpDst | ExtField::NwTtl
                    if m.mask == f.full() =>
                {
                    let _ = write!(s, "{}", m.value);
                }
                _ => {
                    let _ = write!(s, "{:#x}", m.value);
                    if m.mask != f.full() {
                        let _ = write!(s, "/{:#x}", m.mask);
                    }
                }
            }
        }
    }
}

fn bad_value(field: &str, value: &str, why: impl Into<String>) -> FlowError {
    FlowError::BadValue {
        field: field.to_string(),
        value: value.to_string(),
        why: why.into(),
    }
}

/// `N[/MASK]` over `bits` bits (`-1` as a mask: all ones).
pub(crate) fn parse_masked_bits(
    field: &str,
    s: &str,
    bits: u32,
) -> Result<Masked<u128>, FlowError> {
    let full = u128::MAX >> (128 - bits);
    let num = |t: &str| -> Result<u128, FlowError> {
        let n = match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
            Some(h) => u128::from_str_radix(h, 16),
            None => t.parse::<u128>(),
        }
        .map_err(|_| bad_value(field, t, "not a number"))?;
        if n > full {
            return Err(bad_value(field, t, format!("wider than {bits} bits")));
        }
        Ok(n)
    };
    let (v, m) = s.split_once('/').map_or((s, None), |(v, m)| (v, Some(m)));
    let value = num(v)?;
    let mask = match m {
        None | Some("-1") => full,
        Some(m) => num(m).map_err(|_| FlowError::BadMask {
            field: field.to_string(),
            mask: m.to_string(),
            why: format!("not a number of at most {bits} bits"),
        })?,
    };
    Ok(Masked { value, mask })
}

/// `ADDR[/PREFIX|/MASK]` for IPv6 fields.
pub(crate) fn parse_ipv6(field: &str, s: &str) -> Result<Masked<u128>, FlowError> {
    let (v, m) = s.split_once('/').map_or((s, None), |(v, m)| (v, Some(m)));
    let value =
        u128::from(Ipv6Addr::from_str(v).map_err(|_| bad_value(field, v, "not an IPv6 address"))?);
    let mask = match m {
        None => u128::MAX,
        Some(m) if !m.is_empty() && m.bytes().all(|b| b.is_ascii_digit()) => {
            let n: u32 = m.parse().unwrap_or(u32::MAX);
            if n > 128 {
                return Err(FlowError::BadMask {
                    field: field.to_string(),
                    mask: m.to_string(),
                    why: "prefix longer than 128".into(),
                });
            }
            u128::MAX.checked_shl(128 - n).unwrap_or(0)
        }
        Some(m) => u128::from(Ipv6Addr::from_str(m).map_err(|_| FlowError::BadMask {
            field: field.to_string(),
            mask: m.to_string(),
            why: "not a prefix length or IPv6 mask".into(),
        })?),
    };
    Ok(Masked { value, mask })
}

/// `xregN=V[/M]` (N 0-7) as the two 32-bit registers it spans.
pub(crate) fn parse_xreg(
    field: &str,
    n: &str,
    s: &str,
) -> Result<[(ExtField, Masked<u128>); 2], FlowError> {
    let n: u8 = parse_num(field, n, 7)?;
    let m = parse_masked_bits(field, s, 64)?;
    let half = |shift: u32| Masked {
        value: (m.value >> shift) & 0xffff_ffff,
        mask: (m.mask >> shift) & 0xffff_ffff,
    };
    Ok([
        (ExtField::Reg(2 * n), half(32)),
        (ExtField::Reg(2 * n + 1), half(0)),
    ])
}
