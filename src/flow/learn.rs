//! The `learn(...)` action: a flow that adds (or refreshes) another flow built from the packet,
//! in ovs-ofctl syntax (OVS's MAC-learning tutorial works with it).
//!
//! Contract:
//! - Arguments: `table=T` (default 0), `priority=P` (default 32768), `idle_timeout=S`,
//!   `hard_timeout=S`, `cookie=C`, and specs, in any order:
//!   - `FIELD[BITS]=SRC[BITS]`: the learned flow matches FIELD's bits against the value SRC
//!     has in this packet; `FIELD[BITS]` alone is `FIELD[BITS]=FIELD[BITS]`;
//!   - `FIELD=VALUE`: the learned flow matches FIELD against a constant (number, MAC or IPv4);
//!   - `load:SRC[BITS]->DST[BITS]` / `load:VALUE->DST[BITS]`: the learned flow loads the value
//!     SRC has now (or VALUE) into a register or metadata;
//!   - `output:SRC[BITS]`: the learned flow outputs to the port number SRC has now.
//! - Match fields: `in_port`, `eth_type`, `nw_proto` (whole only), `eth_src`, `eth_dst`,
//!   `vlan_tci`, `ip_src`, `ip_dst`, `tp_src`, `tp_dst`, `tun_id` (32 bits), registers and
//!   metadata (any bits). `ip_*` need an `eth_type=0x800` spec, `tp_*` also `nw_proto=6|17`.
//!   `fin_*_timeout`, `send_flow_rem`, `delete_learned`, `limit`, `result_dst` are refused by
//!   name.
//! - Display: `learn(table=10,vlan_tci[0..11],eth_dst[]=eth_src[],load:in_port[]->reg0[0..15])`
//!   (table, priority, timeouts and cookie only when not the default); it parses back.
//! - The datapath builds the flow with `Learn::flow` and adds it after the burst; an identical
//!   flow already there only has its timers restarted (`Classifier::learn`).

use std::fmt;
use std::net::Ipv4Addr;

use super::action::split_top;
use super::ext::ExtKey;
use super::match_::{DEFAULT_PRIORITY, MAC48, Masked, Match, PacketKey, PortRef, TUN_ID_BITS};
use super::parse::parse_num;
use super::regs::{Field, PktField, Subfield, parse_subfield};
use super::{Action, Flow, FlowError};
use crate::wire::ethernet::MacAddr;

/// Where a learned value comes from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum LearnSrc {
    /// A constant.
    Imm(u128),
    /// Bits of a field of the packet that runs `learn`.
    Field(Subfield),
}

/// One part of the learned flow.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum LearnSpec {
    /// Match `dst`'s bits against `src`.
    Match {
        /// The matched bits.
        dst: Subfield,
        /// Their value.
        src: LearnSrc,
    },
    /// `load:` `src` into `dst`.
    Load {
        /// A register or metadata.
        dst: Subfield,
        /// The value.
        src: LearnSrc,
    },
    /// `output:` to the port number in `src`'s bits.
    Output(Subfield),
}

/// `learn(...)`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Learn {
    /// Table of the learned flow.
    pub table: u8,
    /// Its priority.
    pub priority: u16,
    /// Its idle timeout (seconds, 0: none).
    pub idle_timeout: u16,
    /// Its hard timeout.
    pub hard_timeout: u16,
    /// Its cookie.
    pub cookie: u64,
    /// What it matches and does.
    pub specs: Vec<LearnSpec>,
}

fn bad(t: &str, why: impl Into<String>) -> FlowError {
    FlowError::BadAction {
        action: t.to_string(),
        why: why.into(),
    }
}

/// Bits of a field usable as a learned match (`None`: not a match field here).
fn match_width(f: Field) -> Option<u32> {
    match f {
        Field::Ext(e) if e.writable() => Some(e.bits()),
        Field::Pkt(PktField::TunId) => Some(32),
        Field::Pkt(p) => Some(match p {
            PktField::InPort | PktField::EthType | PktField::VlanTci => 16,
            PktField::TpSrc | PktField::TpDst => 16,
            PktField::EthSrc | PktField::EthDst => 48,
            PktField::IpSrc | PktField::IpDst => 32,
            PktField::NwProto => 8,
            PktField::TunId => 32,
        }),
        Field::Ext(_) => None,
    }
}

/// A constant: a number, a MAC or an IPv4 address.
fn imm(t: &str, s: &str) -> Result<u128, FlowError> {
    if let Ok(n) = parse_num::<u64>("learn", s, u64::MAX) {
        return Ok(u128::from(n));
    }
    if let Ok(m) = s.parse::<MacAddr>() {
        return Ok(u128::from(m.to_u64()));
    }
    if let Ok(a) = s.parse::<Ipv4Addr>() {
        return Ok(u128::from(u32::from(a)));
    }
    Err(bad(
        t,
        format!("'{s}' is not a number, MAC or IPv4 address"),
    ))
}

fn src(t: &str, s: &str) -> Result<LearnSrc, FlowError> {
    if s.starts_with(|c: char| c.is_ascii_digit()) || s.contains([':', '.']) && !s.contains('[') {
        Ok(LearnSrc::Imm(imm(t, s)?))
    } else {
        Ok(LearnSrc::Field(parse_subfield(t, s, false)?))
    }
}

/// A match destination: `FIELD[BITS]` or a whole field name.
fn match_dst(t: &str, s: &str) -> Result<Subfield, FlowError> {
    let d = parse_subfield(t, s, false)?;
    let w = match_width(d.field).ok_or_else(|| bad(t, format!("'{s}' cannot be learned")))?;
    let whole = matches!(
        d.field,
        Field::Pkt(PktField::InPort | PktField::EthType | PktField::NwProto)
    );
    if u32::from(d.ofs) + u32::from(d.n_bits) > w || whole && u32::from(d.n_bits) != w {
        return Err(bad(
            t,
            format!("'{s}': only the whole field can be learned"),
        ));
    }
    Ok(d)
}

/// Parse the inside of `learn(...)`; `t` is the whole action for errors.
pub(crate) fn parse_learn(t: &str, args: &str) -> Result<Learn, FlowError> {
    let mut l = Learn {
        table: 0,
        priority: DEFAULT_PRIORITY,
        idle_timeout: 0,
        hard_timeout: 0,
        cookie: 0,
        specs: Vec::new(),
    };
    for a in split_top(args)? {
        if let Some(rest) = a.strip_prefix("load:") {
            let (s, d) = rest
                .split_once("->")
                .ok_or_else(|| bad(t, "want load:SRC->DST[BITS]"))?;
            let dst = parse_subfield(t, d, true)?;
            let src = src(t, s.trim())?;
            let fits = match &src {
                LearnSrc::Imm(v) => dst.n_bits >= 128 || v >> dst.n_bits == 0,
                LearnSrc::Field(f) => f.n_bits == dst.n_bits,
            };
            if !fits {
                return Err(bad(
                    t,
                    format!("'{a}': source and destination widths differ"),
                ));
            }
            l.specs.push(LearnSpec::Load { dst, src });
            continue;
        }
        if let Some(rest) = a.strip_prefix("output:") {
            l.specs
                .push(LearnSpec::Output(parse_subfield(t, rest, false)?));
            continue;
        }
        let (k, v) = a
            .split_once('=')
            .map_or((a, None), |(k, v)| (k.trim(), Some(v.trim())));
        let num =
            |max: u64| parse_num::<u64>(k, v.unwrap_or(""), max).map_err(|e| bad(t, e.to_string()));
        match k {
            "table" => l.table = num(254)? as u8,
            "priority" => l.priority = num(0xffff)? as u16,
            "idle_timeout" => l.idle_timeout = num(0xffff)? as u16,
            "hard_timeout" => l.hard_timeout = num(0xffff)? as u16,
            "cookie" => l.cookie = num(u64::MAX)?,
            "fin_idle_timeout" | "fin_hard_timeout" | "send_flow_rem" | "delete_learned"
            | "limit" | "result_dst" => {
                return Err(bad(t, format!("learn: '{k}' is not supported")));
            }
            _ => {
                let dst = match_dst(t, k)?;
                let src = match v {
                    None => LearnSrc::Field(dst),
                    Some(v) => src(t, v)?,
                };
                let fits = match &src {
                    LearnSrc::Imm(x) => x >> dst.n_bits == 0,
                    LearnSrc::Field(f) => f.n_bits == dst.n_bits,
                };
                if !fits {
                    return Err(bad(
                        t,
                        format!("'{a}': source and destination widths differ"),
                    ));
                }
                l.specs.push(LearnSpec::Match { dst, src });
            }
        }
    }
    check_prerequisites(t, &l)?;
    Ok(l)
}

/// `ip_*` need `eth_type=0x800`, `tp_*` also `nw_proto=6|17` among the specs.
fn check_prerequisites(t: &str, l: &Learn) -> Result<(), FlowError> {
    let imm_of = |p: PktField| {
        l.specs.iter().find_map(|s| match s {
            LearnSpec::Match {
                dst,
                src: LearnSrc::Imm(v),
            } if dst.field == Field::Pkt(p) => Some(*v),
            _ => None,
        })
    };
    for s in &l.specs {
        let LearnSpec::Match { dst, .. } = s else {
            continue;
        };
        let needs_ip = matches!(
            dst.field,
            Field::Pkt(PktField::IpSrc | PktField::IpDst | PktField::NwProto)
                | Field::Pkt(PktField::TpSrc | PktField::TpDst)
        );
        if needs_ip && imm_of(PktField::EthType) != Some(0x800) {
            return Err(bad(
                t,
                format!("learn: {} needs eth_type=0x800 (prerequisite)", dst.field),
            ));
        }
        let needs_l4 = matches!(dst.field, Field::Pkt(PktField::TpSrc | PktField::TpDst));
        if needs_l4 && !matches!(imm_of(PktField::NwProto), Some(6 | 17)) {
            return Err(bad(
                t,
                format!("learn: {} needs nw_proto=6 or 17 (prerequisite)", dst.field),
            ));
        }
    }
    Ok(())
}

impl Learn {
    /// The flow `learn` adds for a packet with key `k` and ext fields `x`.
    pub fn flow(&self, k: &PacketKey, x: &ExtKey) -> Flow {
        let mut m = Match::default();
        let mut actions = Vec::new();
        let value = |s: &LearnSrc| match s {
            LearnSrc::Imm(v) => *v,
            LearnSrc::Field(f) => (read(k, x, f.field) & f.mask()) >> f.ofs,
        };
        for s in &self.specs {
            match s {
                LearnSpec::Match { dst, src } => put(&mut m, dst, value(src) << dst.ofs),
                LearnSpec::Load { dst, src } => {
                    actions.push(Action::Load(value(src) << dst.ofs, *dst));
                }
                LearnSpec::Output(f) => {
                    let port = value(&LearnSrc::Field(*f)) as u16;
                    actions.push(Action::Output(PortRef::Num(port)));
                }
            }
        }
        m.normalize();
        Flow {
            table: self.table,
            priority: self.priority,
            cookie: self.cookie,
            idle_timeout: self.idle_timeout,
            hard_timeout: self.hard_timeout,
            m,
            actions,
            send_flow_rem: false,
        }
    }
}

/// The whole value of field `f` for key `k` / ext `x`.
pub(crate) fn read(k: &PacketKey, x: &ExtKey, f: Field) -> u128 {
    match f {
        Field::Ext(e) => x.get(e),
        Field::Pkt(p) => u128::from(match p {
            PktField::InPort => u64::from(k.in_port),
            PktField::EthSrc => k.dl_src,
            PktField::EthDst => k.dl_dst,
            PktField::EthType => u64::from(k.dl_type),
            PktField::VlanTci => u64::from(k.tci()),
            PktField::IpSrc => u64::from(k.nw_src),
            PktField::IpDst => u64::from(k.nw_dst),
            PktField::NwProto => u64::from(k.nw_proto),
            PktField::TpSrc => u64::from(k.tp_src),
            PktField::TpDst => u64::from(k.tp_dst),
            PktField::TunId => k.tun_id,
        }),
    }
}

/// Add "bits `d` of the field equal `v`" (already shifted) to match `m`.
fn put(m: &mut Match, d: &Subfield, v: u128) {
    let mask = d.mask();
    fn merge<T>(slot: &mut Option<Masked<T>>, v: T, mask: T)
    where
        T: Copy
            + std::ops::BitOr<Output = T>
            + std::ops::BitAnd<Output = T>
            + std::ops::Not<Output = T>,
    {
        let old = slot.unwrap_or(Masked {
            value: v & !v,
            mask: mask & !mask,
        });
        *slot = Some(Masked {
            value: (old.value & !mask) | (v & mask),
            mask: old.mask | mask,
        });
    }
    match d.field {
        Field::Ext(e) => {
            let old = m.ext.get(e).unwrap_or(Masked { value: 0, mask: 0 });
            let new = Masked {
                value: (old.value & !mask) | (v & mask),
                mask: old.mask | mask,
            };
            // Learned fields replace what an earlier spec said about the same bits.
            let mut ext = super::ext::ExtMatch::default();
            for (f, x) in m.ext.iter().filter(|(f, _)| *f != e) {
                let _ = ext.set(f, x, "learn");
            }
            let _ = ext.set(e, new, "learn");
            m.ext = ext;
        }
        Field::Pkt(p) => match p {
            PktField::InPort => m.in_port = Some(PortRef::Num(v as u16)),
            PktField::EthType => m.dl_type = Some(v as u16),
            PktField::NwProto => m.nw_proto = Some(v as u8),
            PktField::EthSrc => merge(&mut m.dl_src, v as u64 & MAC48, mask as u64 & MAC48),
            PktField::EthDst => merge(&mut m.dl_dst, v as u64 & MAC48, mask as u64 & MAC48),
            PktField::VlanTci => merge(&mut m.vlan_tci, v as u16, mask as u16),
            PktField::IpSrc => merge(&mut m.nw_src, v as u32, mask as u32),
            PktField::IpDst => merge(&mut m.nw_dst, v as u32, mask as u32),
            PktField::TpSrc => merge(&mut m.tp_src, v as u16, mask as u16),
            PktField::TpDst => merge(&mut m.tp_dst, v as u16, mask as u16),
            PktField::TunId => merge(
                &mut m.tun_id,
                v as u64 & TUN_ID_BITS,
                mask as u64 & TUN_ID_BITS,
            ),
        },
    }
}

impl fmt::Display for LearnSrc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LearnSrc::Imm(v) => write!(f, "{v:#x}"),
            LearnSrc::Field(s) => write!(f, "{s}"),
        }
    }
}

impl fmt::Display for Learn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts: Vec<String> = Vec::new();
        parts.push(format!("table={}", self.table));
        if self.priority != DEFAULT_PRIORITY {
            parts.push(format!("priority={}", self.priority));
        }
        if self.idle_timeout != 0 {
            parts.push(format!("idle_timeout={}", self.idle_timeout));
        }
        if self.hard_timeout != 0 {
            parts.push(format!("hard_timeout={}", self.hard_timeout));
        }
        if self.cookie != 0 {
            parts.push(format!("cookie={:#x}", self.cookie));
        }
        for s in &self.specs {
            parts.push(match s {
                LearnSpec::Match {
                    dst,
                    src: LearnSrc::Field(x),
                } if x == dst => format!("{dst}"),
                LearnSpec::Match {
                    dst,
                    src: LearnSrc::Imm(v),
                } if dst.ofs == 0 && match_width(dst.field) == Some(u32::from(dst.n_bits)) => {
                    // ovs-ofctl wants each field's own spelling for a whole-field constant.
                    match dst.field {
                        Field::Pkt(PktField::InPort) => format!("in_port={v}"),
                        Field::Pkt(p @ (PktField::EthSrc | PktField::EthDst)) => {
                            format!("{}={}", Field::Pkt(p), MacAddr::from_u64(*v as u64))
                        }
                        Field::Pkt(p @ (PktField::IpSrc | PktField::IpDst)) => {
                            format!("{}={}", Field::Pkt(p), Ipv4Addr::from(*v as u32))
                        }
                        other => format!("{other}={v:#x}"),
                    }
                }
                LearnSpec::Match { dst, src } => format!("{dst}={src}"),
                LearnSpec::Load { dst, src } => format!("load:{src}->{dst}"),
                LearnSpec::Output(x) => format!("output:{x}"),
            });
        }
        write!(f, "learn({})", parts.join(","))
    }
}
