//! Connection tracking in flows: the `ct_state` match flags and the `ct(...)` action, in
//! ovs-ofctl syntax.
//!
//! Contract:
//! - `ct_state` is written as signed flags (`+trk+new`, `-trk`, `+trk-new+est`: each named flag
//!   sets its mask bit, `+` also its value bit) or as `VALUE[/MASK]` numbers (`0x21/0x21`; no
//!   mask is a mask of 0xff). Display is ovs-ofctl's: the flags in the mask, in bit order
//!   (new, est, rel, rpl, inv, trk, snat, dnat), each with its sign.
//! - `ct(ARGS)` takes `commit`, `zone=N` (0-65535, default 0), `table=N` (0-254, any table: a
//!   recirculation may go back), `nat`, `nat(src=ADDR[:PORT[-PORT]])`,
//!   `nat(dst=ADDR[:PORT])` (both with `ADDR-ADDR` ranges), `exec(...)` with `set_field`/`load` into `ct_mark`/`ct_label`
//!   (needs `commit`), each at most once. `force`, `alg=...`,
//!   `nat(src)`/`nat(dst)` without an address, nat flags and other actions in `exec` are
//!   refused by name. Display order: commit, table, zone (when not 0), nat, exec;
//!   `parse(display(a)) == a`.

use std::fmt;
use std::net::Ipv4Addr;

use super::FlowError;
use super::ext::{ExtField, parse_masked_bits};
use super::match_::Masked;
use super::parse::parse_num;
use super::regs::{Field, parse_load_into};

/// The `ct_state` flags (OVS's `CS_*` bits).
pub mod ct_state {
    /// `new`: the first packet of a connection (not committed yet).
    pub const NEW: u8 = 0x01;
    /// `est`: part of an established (committed, seen both ways) connection.
    pub const EST: u8 = 0x02;
    /// `rel`: related to an existing connection (e.g. an ICMP error).
    pub const REL: u8 = 0x04;
    /// `rpl`: in the reply direction.
    pub const RPL: u8 = 0x08;
    /// `inv`: invalid (conntrack could not make sense of it).
    pub const INV: u8 = 0x10;
    /// `trk`: went through conntrack (the other flags are valid).
    pub const TRK: u8 = 0x20;
    /// `snat`: source address translated.
    pub const SNAT: u8 = 0x40;
    /// `dnat`: destination address translated.
    pub const DNAT: u8 = 0x80;
}

/// Flag names in bit order (bit i is `1 << i`).
const FLAG_NAMES: [&str; 8] = ["new", "est", "rel", "rpl", "inv", "trk", "snat", "dnat"];

fn bad_value(field: &str, value: &str, why: impl Into<String>) -> FlowError {
    FlowError::BadValue {
        field: field.to_string(),
        value: value.to_string(),
        why: why.into(),
    }
}

/// Parse a `ct_state` value (`field` is the key as written). `None`: a zero mask (wildcard).
pub(crate) fn parse_ct_state(field: &str, s: &str) -> Result<Option<Masked<u8>>, FlowError> {
    if s.starts_with(['+', '-']) {
        let (mut value, mut mask) = (0u8, 0u8);
        let mut rest = s;
        while !rest.is_empty() {
            let plus = rest.starts_with('+');
            let body = rest
                .strip_prefix(['+', '-'])
                .ok_or_else(|| bad_value(field, s, "want +FLAG or -FLAG"))?;
            let end = body.find(['+', '-']).unwrap_or(body.len());
            let name = &body[..end];
            rest = &body[end..];
            let i = FLAG_NAMES.iter().position(|n| *n == name).ok_or_else(|| {
                bad_value(
                    field,
                    s,
                    format!("unknown flag '{name}' (want {})", FLAG_NAMES.join(", ")),
                )
            })?;
            let bit = 1u8 << i;
            if mask & bit != 0 && (value & bit != 0) != plus {
                return Err(bad_value(
                    field,
                    s,
                    format!("flag '{name}' both set and cleared"),
                ));
            }
            mask |= bit;
            if plus {
                value |= bit;
            }
        }
        return Ok(Some(Masked { value, mask }));
    }
    if s.is_empty() {
        return Err(bad_value(field, s, "want +FLAG-FLAG... or VALUE/MASK"));
    }
    let (v, m) = s.split_once('/').map_or((s, None), |(v, m)| (v, Some(m)));
    let value: u8 = parse_num(field, v, 0xff).map_err(|_| {
        bad_value(
            field,
            s,
            "want flags (+trk+new) or a number 0-0xff with an optional /MASK",
        )
    })?;
    let mask: u8 = match m {
        None => 0xff,
        Some(m) => parse_num(field, m, 0xff).map_err(|_| FlowError::BadMask {
            field: field.to_string(),
            mask: m.to_string(),
            why: "not a number up to 0xff".into(),
        })?,
    };
    Ok((mask != 0).then_some(Masked {
        value: value & mask,
        mask,
    }))
}

/// Displays a `ct_state` match as ovs-ofctl does: `+new+trk`, `-trk`, `+est-rel+trk`.
pub(crate) struct CtStateFlags(pub Masked<u8>);

impl fmt::Display for CtStateFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, name) in FLAG_NAMES.iter().enumerate() {
            let bit = 1u8 << i;
            if self.0.mask & bit != 0 {
                let sign = if self.0.value & bit != 0 { '+' } else { '-' };
                write!(f, "{sign}{name}")?;
            }
        }
        Ok(())
    }
}

/// The `nat` argument of a `ct` action.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum CtNat {
    /// `nat`: apply the connection's existing translation
    Existing,
    /// `nat(src=ADDR[-ADDR][:PORT[-PORT]])`
    Src {
        /// The new source address (the first of the range).
        addr: Ipv4Addr,
        /// The last address of the range, if one (`addr < last`).
        last: Option<Ipv4Addr>,
        /// The source port range (inclusive, `lo <= hi`; `:P` is `(P, P)`), if any.
        ports: Option<(u16, u16)>,
    },
    /// `nat(dst=ADDR[-ADDR][:PORT])`
    Dst {
        /// The new destination address (the first of the range).
        addr: Ipv4Addr,
        /// The last address of the range, if one (`addr < last`).
        last: Option<Ipv4Addr>,
        /// The new destination port, if any.
        port: Option<u16>,
    },
}

/// `ct(...)`: send the packet through connection tracking.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct CtAction {
    /// `commit`: create the connection entry if there is none.
    pub commit: bool,
    /// `zone=N` (0 when not given).
    pub zone: u16,
    /// `table=N`: continue (recirculate) in table N with `ct_state`/`ct_zone` set; without it
    /// the packet continues with the next action.
    pub table: Option<u8>,
    /// `nat` / `nat(...)`.
    pub nat: Option<CtNat>,
    /// `exec(set_field:V/M->ct_mark)`: bits of the connection's mark to set on commit.
    pub mark: Option<Masked<u32>>,
    /// `exec(set_field:V/M->ct_label)`: bits of the connection's label to set on commit.
    pub label: Option<Masked<u128>>,
}

/// An error about the whole `ct(...)` action `t`.
fn bad(t: &str, why: impl Into<String>) -> FlowError {
    FlowError::BadAction {
        action: t.to_string(),
        why: why.into(),
    }
}

/// A feature of OVS's `ct` that uvs does not implement.
fn unsupported(what: &str) -> FlowError {
    bad("ct", format!("'{what}' is not supported"))
}

fn num<T: TryFrom<u64>>(t: &str, key: &str, s: &str, max: u64) -> Result<T, FlowError> {
    parse_num(key, s, max).map_err(|e| match e {
        FlowError::BadValue { value, why, .. } => {
            bad(t, format!("{key}: bad value '{value}' ({why})"))
        }
        e => e,
    })
}

fn addr(t: &str, s: &str) -> Result<Ipv4Addr, FlowError> {
    if s.contains(':') || s.parse::<std::net::Ipv6Addr>().is_ok() {
        return Err(bad(t, "NAT of IPv6 is not supported"));
    }
    s.parse::<Ipv4Addr>()
        .map_err(|_| bad(t, format!("'{s}' is not an IPv4 address")))
}

/// `ADDR` or `ADDR-ADDR` (first, last if a range).
fn addr_range(t: &str, s: &str) -> Result<(Ipv4Addr, Option<Ipv4Addr>), FlowError> {
    let Some((a, b)) = s.split_once('-') else {
        return Ok((addr(t, s)?, None));
    };
    let (a, b) = (addr(t, a)?, addr(t, b)?);
    match a.cmp(&b) {
        std::cmp::Ordering::Less => Ok((a, Some(b))),
        std::cmp::Ordering::Equal => Ok((a, None)),
        std::cmp::Ordering::Greater => Err(bad(t, format!("nat address range '{s}' is empty"))),
    }
}

fn port(t: &str, s: &str) -> Result<u16, FlowError> {
    let p: u16 = num(t, "nat port", s, 0xffff)?;
    if p == 0 {
        return Err(bad(t, format!("nat port '{s}' is 0")));
    }
    Ok(p)
}

/// `src=ADDR[:PORT[-PORT]]` or `dst=ADDR[:PORT]` (the inside of `nat(...)`).
fn parse_nat(t: &str, inner: &str) -> Result<CtNat, FlowError> {
    let parts: Vec<&str> = inner
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect();
    let mut nat = None;
    for p in parts {
        let (k, v) = p.split_once('=').map_or((p, None), |(k, v)| (k, Some(v)));
        let n = match (k, v) {
            ("src" | "dst", None) => {
                return Err(bad(
                    "ct",
                    format!("'nat({k})' without an address is not supported"),
                ));
            }
            ("src" | "dst", Some(v)) => {
                if v.starts_with('[') || v.matches(':').count() > 1 {
                    return Err(bad(t, "NAT of IPv6 is not supported"));
                }
                let (a, ports) = v.split_once(':').map_or((v, None), |(a, p)| (a, Some(p)));
                let (addr, last) = addr_range(t, a)?;
                if k == "src" {
                    let ports = match ports {
                        None => None,
                        Some(ps) => {
                            let (lo, hi) = ps.split_once('-').unwrap_or((ps, ps));
                            let (lo, hi) = (port(t, lo)?, port(t, hi)?);
                            if lo > hi {
                                return Err(bad(t, format!("nat port range '{ps}' is empty")));
                            }
                            Some((lo, hi))
                        }
                    };
                    CtNat::Src { addr, last, ports }
                } else {
                    let port = match ports {
                        None => None,
                        Some(ps) if ps.contains('-') => {
                            return Err(bad(
                                "ct",
                                format!("port ranges in nat(dst=...) are not supported ('{ps}')"),
                            ));
                        }
                        Some(ps) => Some(port(t, ps)?),
                    };
                    CtNat::Dst { addr, last, port }
                }
            }
            ("random" | "hash" | "persistent" | "port_hash" | "port_random", None) => {
                return Err(unsupported(k));
            }
            _ => return Err(bad(t, format!("unknown nat argument '{p}'"))),
        };
        if nat.replace(n).is_some() {
            return Err(bad(t, "nat(...) takes one of src=... or dst=..."));
        }
    }
    nat.ok_or_else(|| {
        bad(
            t,
            "want nat, nat(src=ADDR[:PORT[-PORT]]) or nat(dst=ADDR[:PORT])",
        )
    })
}

/// Parse the arguments of `ct(ARGS)`; `t` is the whole action as written (for errors).
pub(crate) fn parse_ct(t: &str, args: &str) -> Result<CtAction, FlowError> {
    let mut ct = CtAction {
        commit: false,
        zone: 0,
        table: None,
        nat: None,
        mark: None,
        label: None,
    };
    let mut exec = false;
    let (mut zone, mut seen_commit) = (false, false);
    for a in super::action::split_top(args)? {
        let (k, v) = a.split_once('=').map_or((a, None), |(k, v)| (k, Some(v)));
        let name = k.split('(').next().unwrap_or(k).trim();
        let twice = |what: &str| bad(t, format!("'{what}' given twice"));
        match (k, v) {
            ("commit", None) => {
                if seen_commit {
                    return Err(twice("commit"));
                }
                seen_commit = true;
                ct.commit = true;
            }
            ("zone", Some(v)) => {
                if zone {
                    return Err(twice("zone"));
                }
                zone = true;
                ct.zone = num(t, "zone", v, 0xffff)?;
            }
            ("table", Some(v)) => {
                if ct.table.is_some() {
                    return Err(twice("table"));
                }
                ct.table = Some(num(t, "table", v, 254)?);
            }
            ("nat", None) if a == "nat" => {
                if ct.nat.is_some() {
                    return Err(twice("nat"));
                }
                ct.nat = Some(CtNat::Existing);
            }
            _ if a.starts_with("nat(") && a.ends_with(')') => {
                if ct.nat.is_some() {
                    return Err(twice("nat"));
                }
                ct.nat = Some(parse_nat(t, &a[4..a.len() - 1])?);
            }
            _ if a.starts_with("exec(") && a.ends_with(')') => {
                if exec {
                    return Err(twice("exec"));
                }
                exec = true;
                parse_exec(t, &a[5..a.len() - 1], &mut ct)?;
            }
            _ if matches!(name, "force" | "exec" | "alg") => return Err(unsupported(name)),
            _ => return Err(bad(t, format!("unknown argument '{a}'"))),
        }
    }
    if (ct.mark.is_some() || ct.label.is_some()) && !ct.commit {
        return Err(bad(t, "exec(...) needs commit"));
    }
    Ok(ct)
}

/// The actions of `exec(...)`: `set_field:V[/M]->ct_mark|ct_label` and
/// `load:V->ct_mark[BITS]|ct_label[BITS]` (also `NXM_NX_CT_MARK`/`NXM_NX_CT_LABEL`), merged
/// into `ct.mark`/`ct.label` in order (a later write wins on the bits it sets).
fn parse_exec(t: &str, inner: &str, ct: &mut CtAction) -> Result<(), FlowError> {
    for a in super::action::split_top(inner)? {
        let (name, arg) = a.split_once(':').unwrap_or((a, ""));
        let (field, value, mask) = match name.trim() {
            "set_field" => {
                let (v, f) = arg
                    .split_once("->")
                    .ok_or_else(|| bad(t, "want set_field:VALUE->FIELD in exec(...)"))?;
                let field = ExtField::by_name(f.trim())
                    .filter(|f| matches!(f, ExtField::CtMark | ExtField::CtLabel));
                let field = field.ok_or_else(|| {
                    bad(
                        t,
                        format!(
                            "exec(...) can only set ct_mark or ct_label, not '{}'",
                            f.trim()
                        ),
                    )
                })?;
                let m = parse_masked_bits(t, v.trim(), field.bits())?;
                (field, m.value & m.mask, m.mask)
            }
            "load" => {
                let (v, d) = parse_load_into(t, arg, true)?;
                match d.field {
                    Field::Ext(f @ (ExtField::CtMark | ExtField::CtLabel)) => (f, v, d.mask()),
                    other => {
                        return Err(bad(
                            t,
                            format!("exec(...) can only set ct_mark or ct_label, not '{other}'"),
                        ));
                    }
                }
            }
            other => {
                return Err(bad(
                    t,
                    format!("'{other}' in exec(...) is not supported (only set_field and load)"),
                ));
            }
        };
        if field == ExtField::CtMark {
            let old = ct.mark.unwrap_or(Masked { value: 0, mask: 0 });
            let (v, m) = (value as u32, mask as u32);
            ct.mark = Some(Masked {
                value: (old.value & !m) | v,
                mask: old.mask | m,
            });
        } else {
            let old = ct.label.unwrap_or(Masked { value: 0, mask: 0 });
            ct.label = Some(Masked {
                value: (old.value & !mask) | value,
                mask: old.mask | mask,
            });
        }
    }
    Ok(())
}

impl fmt::Display for CtNat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CtNat::Existing => f.write_str("nat"),
            CtNat::Src { addr, last, ports } => {
                write!(f, "nat(src={addr}")?;
                if let Some(l) = last {
                    write!(f, "-{l}")?;
                }
                match ports {
                    Some((lo, hi)) if lo == hi => write!(f, ":{lo}")?,
                    Some((lo, hi)) => write!(f, ":{lo}-{hi}")?,
                    None => {}
                }
                f.write_str(")")
            }
            CtNat::Dst { addr, last, port } => {
                write!(f, "nat(dst={addr}")?;
                if let Some(l) = last {
                    write!(f, "-{l}")?;
                }
                if let Some(p) = port {
                    write!(f, ":{p}")?;
                }
                f.write_str(")")
            }
        }
    }
}

impl fmt::Display for CtAction {
    /// `ct(commit,table=2,zone=5,nat(src=10.0.0.1:1024-2048))`: the order `ovs-ofctl
    /// parse-flow` prints (checked against Open vSwitch 3.1).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut sep = "";
        f.write_str("ct(")?;
        if self.commit {
            f.write_str("commit")?;
            sep = ",";
        }
        if let Some(t) = self.table {
            write!(f, "{sep}table={t}")?;
            sep = ",";
        }
        if self.zone != 0 {
            write!(f, "{sep}zone={}", self.zone)?;
            sep = ",";
        }
        if let Some(n) = &self.nat {
            write!(f, "{sep}{n}")?;
            sep = ",";
        }
        if self.mark.is_some() || self.label.is_some() {
            write!(f, "{sep}exec(")?;
            let mut s2 = "";
            if let Some(m) = self.mark {
                write!(f, "set_field:{:#x}", m.value)?;
                if m.mask != u32::MAX {
                    write!(f, "/{:#x}", m.mask)?;
                }
                f.write_str("->ct_mark")?;
                s2 = ",";
            }
            if let Some(l) = self.label {
                write!(f, "{s2}set_field:{:#x}", l.value)?;
                if l.mask != u128::MAX {
                    write!(f, "/{:#x}", l.mask)?;
                }
                f.write_str("->ct_label")?;
            }
            f.write_str(")")?;
        }
        f.write_str(")")
    }
}
