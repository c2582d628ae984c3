//! Flow actions: ovs-ofctl action syntax, parsed and displayed.
//!
//! Contract:
//! - `parse_actions` takes the text after `actions=`: actions separated by commas (commas
//!   inside parentheses belong to the action, as in `ct(commit,zone=1)`), names
//!   case-insensitive (`NORMAL` or `normal`). An empty list or `drop` means drop and is stored
//!   as an empty `Vec`; `drop` must be the only action.
//! - `name(VALUE)` is the same as `name:VALUE` (`mod_dl_dst(50:54:00:00:00:0a)`), as in
//!   ovs-ofctl; `clone(ACTIONS)` holds a nested list (no `goto_table`, `meter` or tunnel id
//!   writes in it).
//! - Instruction order as OpenFlow: `meter:N` only first, `goto_table:T` only last, each at most
//!   once. A bare number `N` is `output:N`.
//! - Display is ovs-ofctl's spelling (`NORMAL`, `FLOOD`, `IN_PORT`, `output:p2`, `drop` for an
//!   empty list), and `parse_actions(display(a)) == a`.
//! - `ct(...)` is parsed into a `CtAction` (see `ct.rs` for the arguments uvs takes and the
//!   ones it refuses); its execution belongs to the conntrack stage. `ct(table=N)` may name any
//!   table (a recirculation, unlike `goto_table`). A bare `ct` is `ct()`.
//! - Prerequisites of rewrite actions are not checked against the match (ovs-ofctl accepts
//!   `mod_nw_src` on any flow with OpenFlow 1.0): the datapath applies L3/L4 rewrites only to
//!   packets that have those headers, and keeps checksums right.

use std::fmt;
use std::net::Ipv4Addr;

use super::FlowError;
use super::ct::{CtAction, parse_ct};
use super::ext::{ExtField, parse_masked_bits};
use super::learn::{Learn, parse_learn};
use super::match_::PortRef;
use super::parse::{parse_num, parse_port};
use super::regs::{Subfield, parse_load, parse_move};
use crate::wire::ethernet::MacAddr;

/// A field `set_field` can write.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SetField {
    /// `eth_src` (`dl_src`).
    DlSrc(MacAddr),
    /// `eth_dst` (`dl_dst`).
    DlDst(MacAddr),
    /// `vlan_vid` (`dl_vlan`): 0-4095 (an OpenFlow 1.3 value with 0x1000 set is accepted).
    VlanVid(u16),
    /// `vlan_pcp` (`dl_vlan_pcp`): 0-7.
    VlanPcp(u8),
    /// `ip_src` (`nw_src`).
    NwSrc(Ipv4Addr),
    /// `ip_dst` (`nw_dst`).
    NwDst(Ipv4Addr),
    /// `nw_tos`: a multiple of 4.
    NwTos(u8),
    /// `tp_src` (`tcp_src`, `udp_src`).
    TpSrc(u16),
    /// `tp_dst` (`tcp_dst`, `udp_dst`).
    TpDst(u16),
    /// `tun_id` (`tunnel_id`).
    TunId(u64),
    /// A register or metadata: (field, value, mask), `value & mask == value`.
    Ext(ExtField, u128, u128),
}

/// One action.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Action {
    /// The learning switch and router (`NORMAL`).
    Normal,
    /// Every port of the bridge but the ingress one (`FLOOD`).
    Flood,
    /// Every port of the bridge but the ingress one, whatever its configuration (`ALL`,
    /// OpenFlow's OFPP_ALL): `FLOOD`'s ports and those set `no-flood` (`mod-port`).
    All,
    /// Back out of the ingress port (`IN_PORT`).
    InPort,
    /// `output:P`.
    Output(PortRef),
    /// `output(port=P,max_len=N)`: a copy of the frame cut to at most N bytes (14-65535) to P.
    OutputTrunc(PortRef, u16),
    /// `mod_vlan_vid:V`: set the VID, pushing a tag if there is none.
    ModVlanVid(u16),
    /// `mod_vlan_pcp:P`: set the priority, pushing a tag if there is none.
    ModVlanPcp(u8),
    /// `strip_vlan` (`pop_vlan`).
    StripVlan,
    /// `push_vlan:TPID` (0x8100 or 0x88a8).
    PushVlan(u16),
    /// `mod_dl_src:MAC`.
    ModDlSrc(MacAddr),
    /// `mod_dl_dst:MAC`.
    ModDlDst(MacAddr),
    /// `mod_nw_src:IP`.
    ModNwSrc(Ipv4Addr),
    /// `mod_nw_dst:IP`.
    ModNwDst(Ipv4Addr),
    /// `mod_tp_src:N`.
    ModTpSrc(u16),
    /// `mod_tp_dst:N`.
    ModTpDst(u16),
    /// `dec_ttl`: drop when the TTL reaches 0.
    DecTtl,
    /// `set_field:V->F`.
    SetField(SetField),
    /// `set_tunnel:N`: the VNI for a following output to a tunnel port.
    SetTunnel(u64),
    /// `resubmit(,T)`: look the packet up in table T, then continue here.
    Resubmit(u8),
    /// `goto_table:T`: continue in a later table T.
    GotoTable(u8),
    /// `meter:N`: pass the packet through meter N first.
    Meter(u32),
    /// `ct(ARGS)`: send through connection tracking.
    Ct(CtAction),
    /// `ct_clear`: forget the connection tracking state (ct_state, ct_zone back to 0).
    CtClear,
    /// `mod_nw_tos:TOS`: set the DSCP bits of IPv4 (a multiple of 4; ECN kept).
    ModNwTos(u8),
    /// `mod_nw_ecn:ECN`: set the ECN bits of IPv4 (0-3; DSCP kept).
    ModNwEcn(u8),
    /// `mod_nw_ttl:TTL`: set the IPv4 TTL (header checksum updated) or IPv6 hop limit.
    ModNwTtl(u8),
    /// `note:HEX.HEX...`: does nothing (a comment for controllers).
    Note(Vec<u8>),
    /// `load:VALUE->DST[BITS]` (value already shifted into the destination's bits).
    Load(u128, Subfield),
    /// `move:SRC[BITS]->DST[BITS]`.
    Move(Subfield, Subfield),
    /// `clone(ACTIONS)`: run ACTIONS on a copy of the frame (no `goto_table`, `meter`).
    Clone(Vec<Action>),
    /// `push_mpls:ETHERTYPE` (0x8847 or 0x8848): add an MPLS label stack entry (a copy of the
    /// top one without bottom-of-stack, or label 0 (IPv6: 2) with the IP TTL and DSCP-derived
    /// TC, as OVS).
    PushMpls(u16),
    /// `pop_mpls:ETHERTYPE`: remove the top MPLS label stack entry; the frame's EtherType
    /// becomes ETHERTYPE.
    PopMpls(u16),
    /// `set_mpls_label:L` (`set_field:L->mpls_label`), 20 bits.
    SetMplsLabel(u32),
    /// `set_mpls_tc:TC` (`set_field:TC->mpls_tc`), 0-7.
    SetMplsTc(u8),
    /// `set_mpls_ttl:TTL`.
    SetMplsTtl(u8),
    /// `dec_mpls_ttl`: drop when the MPLS TTL reaches 0.
    DecMplsTtl,
    /// `learn(...)`: add a flow built from this packet (see `learn.rs`).
    Learn(Box<Learn>),
    /// `group:N`: send the packet through group N (see `group.rs`); no group N: nothing.
    Group(u32),
    /// `controller`, `controller:MAX_LEN`, `controller(max_len=N,reason=R)`: a copy of the
    /// frame (its first `max_len` bytes) goes to the bridge's OpenFlow controllers as a
    /// PACKET_IN with reason R (`action`, `no_match` or `invalid_ttl`).
    Controller(ToController),
}

/// What `controller(...)` sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ToController {
    /// Bytes of the frame sent (65535: all of it).
    pub max_len: u16,
    /// OFPR_* reason: 0 no_match, 1 action, 2 invalid_ttl.
    pub reason: u8,
}

impl Default for ToController {
    fn default() -> Self {
        ToController {
            max_len: u16::MAX,
            reason: REASON_ACTION,
        }
    }
}

/// OFPR_NO_MATCH.
pub const REASON_NO_MATCH: u8 = 0;
/// OFPR_ACTION.
pub const REASON_ACTION: u8 = 1;
/// OFPR_INVALID_TTL.
pub const REASON_INVALID_TTL: u8 = 2;

const REASONS: [&str; 3] = ["no_match", "action", "invalid_ttl"];

/// `controller:N` or the inside of `controller(...)`.
fn parse_controller(t: &str, arg: &str) -> Result<ToController, FlowError> {
    let mut c = ToController::default();
    if arg.is_empty() {
        return Ok(c);
    }
    if arg.bytes().all(|b| b.is_ascii_digit()) || arg.starts_with("0x") {
        c.max_len = num(t, arg, 0xffff)?;
        return Ok(c);
    }
    for kv in arg.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        match kv.split_once('=') {
            Some(("max_len", v)) => c.max_len = num(t, v, 0xffff)?,
            Some(("reason", v)) => {
                c.reason = REASONS.iter().position(|r| *r == v.trim()).ok_or_else(|| {
                    bad(
                        t,
                        format!(
                            "reason '{v}' is not supported (want action, no_match or invalid_ttl)"
                        ),
                    )
                })? as u8;
            }
            Some(("id", "0")) => {}
            _ => {
                let k = kv.split_once('=').map_or(kv, |x| x.0);
                return Err(bad(t, format!("'{k}' is not supported")));
            }
        }
    }
    Ok(c)
}

fn bad(action: &str, why: impl Into<String>) -> FlowError {
    FlowError::BadAction {
        action: action.to_string(),
        why: why.into(),
    }
}

fn mac(action: &str, s: &str) -> Result<MacAddr, FlowError> {
    s.parse::<MacAddr>().map_err(|e| bad(action, e))
}

fn ip(action: &str, s: &str) -> Result<Ipv4Addr, FlowError> {
    s.parse::<Ipv4Addr>()
        .map_err(|_| bad(action, format!("'{s}' is not an IPv4 address")))
}

fn num<T: TryFrom<u64>>(action: &str, s: &str, max: u64) -> Result<T, FlowError> {
    parse_num(action, s, max).map_err(|e| match e {
        FlowError::BadValue { value, why, .. } => {
            bad(action, format!("bad value '{value}' ({why})"))
        }
        e => e,
    })
}

/// Split `s` at commas outside parentheses, trimming each piece and skipping empty ones.
pub(crate) fn split_top(s: &str) -> Result<Vec<&str>, FlowError> {
    let mut out = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth = depth
                    .checked_sub(1)
                    .ok_or_else(|| bad(s[start..=i].trim(), "unbalanced ')'"))?;
            }
            ',' if depth == 0 => {
                out.push(s[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err(bad(s[start..].trim(), "unbalanced '('"));
    }
    out.push(s[start..].trim());
    out.retain(|p| !p.is_empty());
    Ok(out)
}

fn parse_set_field(t: &str, arg: &str) -> Result<SetField, FlowError> {
    let (v, f) = arg
        .split_once("->")
        .ok_or_else(|| bad(t, "want set_field:VALUE->FIELD"))?;
    let (v, f) = (v.trim(), f.trim());
    if let Some(e) = ExtField::by_name(f) {
        if matches!(e, ExtField::CtMark | ExtField::CtLabel) {
            return Err(bad(
                t,
                format!("{e} can only be set inside ct(commit,exec(...))"),
            ));
        }
        if !e.writable() {
            return Err(bad(t, format!("{e} is read-only")));
        }
        let m = parse_masked_bits(t, v, e.bits())?;
        if m.mask == 0 {
            return Err(bad(t, "a zero mask sets nothing"));
        }
        return Ok(SetField::Ext(e, m.value & m.mask, m.mask));
    }
    if v.contains('/') {
        return Err(bad(t, "a masked set_field is not supported"));
    }
    Ok(match f {
        "eth_src" | "dl_src" => SetField::DlSrc(mac(t, v)?),
        "eth_dst" | "dl_dst" => SetField::DlDst(mac(t, v)?),
        "vlan_vid" | "dl_vlan" => {
            let n: u16 = num(t, v, 0x1fff)?;
            if n > 0xfff && n & 0x1000 == 0 {
                return Err(bad(t, format!("'{v}' is not a VLAN id (0-4095)")));
            }
            SetField::VlanVid(n & 0xfff)
        }
        "vlan_pcp" | "dl_vlan_pcp" => SetField::VlanPcp(num(t, v, 7)?),
        "ip_src" | "nw_src" => SetField::NwSrc(ip(t, v)?),
        "ip_dst" | "nw_dst" => SetField::NwDst(ip(t, v)?),
        "nw_tos" => {
            let n: u8 = num(t, v, 255)?;
            if n & 3 != 0 {
                return Err(bad(
                    t,
                    format!("'{v}' has ECN bits set (want a multiple of 4)"),
                ));
            }
            SetField::NwTos(n)
        }
        "tp_src" | "tcp_src" | "udp_src" => SetField::TpSrc(num(t, v, 0xffff)?),
        "tp_dst" | "tcp_dst" | "udp_dst" => SetField::TpDst(num(t, v, 0xffff)?),
        "tun_id" | "tunnel_id" => SetField::TunId(num(t, v, u64::MAX)?),
        _ => return Err(bad(t, format!("unknown or unsupported field '{f}'"))),
    })
}

fn parse_one(t: &str) -> Result<Option<Action>, FlowError> {
    let cut = t.find([':', '(']).unwrap_or(t.len());
    let name = t[..cut].trim().to_ascii_lowercase();
    let arg = t[cut..].strip_prefix(':').unwrap_or(&t[cut..]).trim();
    // `name(VALUE)` is `name:VALUE` (ovs-ofctl takes both), except for actions whose
    // parentheses hold a list.
    let paren = !matches!(
        name.as_str(),
        "resubmit" | "ct" | "clone" | "output" | "learn"
    );
    let arg = match arg.strip_prefix('(').and_then(|a| a.strip_suffix(')')) {
        Some(inner) if paren => inner.trim(),
        _ => arg,
    };
    let no_arg = |a: Action| {
        if arg.is_empty() {
            Ok(Some(a))
        } else {
            Err(bad(t, format!("{name} takes no argument")))
        }
    };
    let need_arg = || {
        if arg.is_empty() {
            Err(bad(t, format!("want {name}:VALUE")))
        } else {
            Ok(arg)
        }
    };
    Ok(Some(match name.as_str() {
        "drop" if arg.is_empty() => return Ok(None),
        "drop" => return Err(bad(t, "drop takes no argument")),
        "normal" => return no_arg(Action::Normal),
        "flood" => return no_arg(Action::Flood),
        "all" => return no_arg(Action::All),
        "in_port" => return no_arg(Action::InPort),
        "local" => {
            return no_arg(Action::Output(PortRef::Num(crate::ofport::OFPP_LOCAL)));
        }
        "strip_vlan" | "pop_vlan" => return no_arg(Action::StripVlan),
        "dec_ttl" => return no_arg(Action::DecTtl),
        "ct_clear" => return no_arg(Action::CtClear),
        "dec_mpls_ttl" => return no_arg(Action::DecMplsTtl),
        "push_mpls" | "pop_mpls" => {
            let e: u16 = num(t, need_arg()?, 0xffff)?;
            match (name.as_str(), e) {
                ("push_mpls", 0x8847 | 0x8848) => Action::PushMpls(e),
                ("push_mpls", _) => {
                    return Err(bad(
                        t,
                        format!("'{arg}' is not an MPLS EtherType (0x8847 or 0x8848)"),
                    ));
                }
                _ => Action::PopMpls(e),
            }
        }
        "set_mpls_label" => Action::SetMplsLabel(num(t, need_arg()?, 0xf_ffff)?),
        "set_mpls_tc" => Action::SetMplsTc(num(t, need_arg()?, 7)?),
        "set_mpls_ttl" => Action::SetMplsTtl(num(t, need_arg()?, 255)?),
        "mod_nw_tos" => {
            let n: u8 = num(t, need_arg()?, 255)?;
            if n & 3 != 0 {
                return Err(bad(
                    t,
                    format!("'{arg}' has ECN bits set (want a multiple of 4)"),
                ));
            }
            Action::ModNwTos(n)
        }
        "mod_nw_ecn" => Action::ModNwEcn(num(t, need_arg()?, 3)?),
        "mod_nw_ttl" => Action::ModNwTtl(num(t, need_arg()?, 255)?),
        "note" => Action::Note(parse_note(t, arg)?),
        "controller" => Action::Controller(parse_controller(t, arg)?),
        "group" => Action::Group(num(t, need_arg()?, u64::from(super::group::GROUP_MAX))?),
        "load" => match load_into_ip_bits(t, need_arg()?)? {
            Some(a) => a,
            None => {
                let (v, d) = parse_load(t, arg)?;
                Action::Load(v, d)
            }
        },
        "move" => {
            let (src, dst) = parse_move(t, need_arg()?)?;
            Action::Move(src, dst)
        }
        "output" if t[cut..].starts_with('(') => parse_output_trunc(t, arg)?,
        "learn" => {
            let inner = arg
                .strip_prefix('(')
                .and_then(|a| a.strip_suffix(')'))
                .ok_or_else(|| bad(t, "want learn(ARGS)"))?;
            Action::Learn(Box::new(parse_learn(t, inner)?))
        }
        "clone" => {
            let inner = arg
                .strip_prefix('(')
                .and_then(|a| a.strip_suffix(')'))
                .ok_or_else(|| bad(t, "want clone(ACTIONS)"))?;
            let list = parse_actions(inner, 0)?;
            if let Some(a) = list.iter().find(|a| {
                matches!(
                    a,
                    Action::GotoTable(_)
                        | Action::Meter(_)
                        | Action::SetTunnel(_)
                        | Action::SetField(SetField::TunId(_))
                )
            }) {
                return Err(bad(t, format!("'{a}' is not allowed inside clone(...)")));
            }
            Action::Clone(list)
        }
        "output" => Action::Output(parse_port(need_arg()?).map_err(|e| bad(t, e.to_string()))?),
        "mod_vlan_vid" => Action::ModVlanVid(num(t, need_arg()?, 4095)?),
        "mod_vlan_pcp" => Action::ModVlanPcp(num(t, need_arg()?, 7)?),
        "push_vlan" => match num::<u16>(t, need_arg()?, 0xffff)? {
            tpid @ (0x8100 | 0x88a8) => Action::PushVlan(tpid),
            _ => {
                return Err(bad(
                    t,
                    format!("'{arg}' is not a VLAN TPID (0x8100 or 0x88a8)"),
                ));
            }
        },
        "mod_dl_src" => Action::ModDlSrc(mac(t, need_arg()?)?),
        "mod_dl_dst" => Action::ModDlDst(mac(t, need_arg()?)?),
        "mod_nw_src" => Action::ModNwSrc(ip(t, need_arg()?)?),
        "mod_nw_dst" => Action::ModNwDst(ip(t, need_arg()?)?),
        "mod_tp_src" => Action::ModTpSrc(num(t, need_arg()?, 0xffff)?),
        "mod_tp_dst" => Action::ModTpDst(num(t, need_arg()?, 0xffff)?),
        "set_field" if need_arg()?.trim_end().ends_with("->mpls_label") => {
            let v = arg.rsplit_once("->").map_or("", |x| x.0).trim();
            Action::SetMplsLabel(num(t, v, 0xf_ffff)?)
        }
        "set_field" if need_arg()?.trim_end().ends_with("->mpls_tc") => {
            let v = arg.rsplit_once("->").map_or("", |x| x.0).trim();
            Action::SetMplsTc(num(t, v, 7)?)
        }
        "set_field" => {
            let arg = need_arg()?;
            // The IP TTL and ECN bits: the same actions as `mod_nw_ttl` / `mod_nw_ecn` (and
            // written as those).
            match arg.split_once("->").map(|(v, f)| (v.trim(), f.trim())) {
                Some((v, "nw_ttl")) => Action::ModNwTtl(num(t, v, 255)?),
                Some((v, "nw_ecn" | "ip_ecn")) => Action::ModNwEcn(num(t, v, 3)?),
                _ => Action::SetField(parse_set_field(t, arg)?),
            }
        }
        "set_tunnel" | "set_tunnel64" => Action::SetTunnel(num(t, need_arg()?, u64::MAX)?),
        "goto_table" => Action::GotoTable(num(t, need_arg()?, 254)?),
        "meter" => {
            let n: u32 = num(t, need_arg()?, u64::from(u32::MAX))?;
            if n == 0 {
                return Err(bad(t, "meter ids start at 1"));
            }
            Action::Meter(n)
        }
        "resubmit" => {
            let inner = arg
                .strip_prefix('(')
                .and_then(|a| a.strip_suffix(')'))
                .and_then(|a| a.trim().strip_prefix(','))
                .ok_or_else(|| bad(t, "only resubmit(,TABLE) is supported"))?;
            Action::Resubmit(num(t, inner.trim(), 254)?)
        }
        "ct" => {
            let inner = if arg.is_empty() {
                ""
            } else {
                arg.strip_prefix('(')
                    .and_then(|a| a.strip_suffix(')'))
                    .ok_or_else(|| bad(t, "want ct(ARGS)"))?
                    .trim()
            };
            Action::Ct(parse_ct(t, inner)?)
        }
        _ if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) => {
            Action::Output(parse_port(t).map_err(|e| bad(t, e.to_string()))?)
        }
        _ => return Err(FlowError::UnknownAction(t.to_string())),
    }))
}

/// A `load` into the whole IP TTL or ECN field (`load:0x9->NXM_NX_IP_TTL[]`, as ovs-ofctl's
/// OpenFlow 1.0 dumps write `mod_nw_ttl:9`) is that `mod_nw_ttl` / `mod_nw_ecn`; `None` for
/// any other destination.
fn load_into_ip_bits(t: &str, arg: &str) -> Result<Option<Action>, FlowError> {
    let Some((v, d)) = arg.split_once("->") else {
        return Ok(None);
    };
    let (v, max) = (v.trim(), |bits: u32| (1u64 << bits) - 1);
    Ok(Some(match d.trim() {
        "NXM_NX_IP_TTL[]" | "nw_ttl[]" | "NXM_NX_IP_TTL[0..7]" | "nw_ttl[0..7]" => {
            Action::ModNwTtl(num(t, v, max(8))?)
        }
        "NXM_NX_IP_ECN[]" | "nw_ecn[]" | "NXM_NX_IP_ECN[0..1]" | "nw_ecn[0..1]" => {
            Action::ModNwEcn(num(t, v, max(2))?)
        }
        _ => return Ok(None),
    }))
}

/// `output(port=P,max_len=N)` (`arg` with its parentheses).
fn parse_output_trunc(t: &str, arg: &str) -> Result<Action, FlowError> {
    let inner = arg
        .strip_prefix('(')
        .and_then(|a| a.strip_suffix(')'))
        .ok_or_else(|| bad(t, "want output(port=P,max_len=N)"))?;
    let (mut port, mut max_len) = (None, None);
    for kv in inner.split(',').map(str::trim) {
        match kv.split_once('=') {
            Some(("port", p)) if port.is_none() => {
                port = Some(parse_port(p.trim()).map_err(|e| bad(t, e.to_string()))?);
            }
            Some(("max_len", n)) if max_len.is_none() => {
                let n: u16 = num(t, n.trim(), 0xffff)?;
                if n < 14 {
                    return Err(bad(t, format!("max_len {n} is less than 14")));
                }
                max_len = Some(n);
            }
            _ => return Err(bad(t, format!("unknown or repeated argument '{kv}'"))),
        }
    }
    match (port, max_len) {
        (Some(p), Some(n)) => Ok(Action::OutputTrunc(p, n)),
        _ => Err(bad(t, "want output(port=P,max_len=N)")),
    }
}

/// `note:` bytes: hex pairs, optionally separated by dots (`01.02.ab`); may be empty.
fn parse_note(t: &str, arg: &str) -> Result<Vec<u8>, FlowError> {
    let hex: String = arg.chars().filter(|c| *c != '.').collect();
    if !hex.len().is_multiple_of(2) || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad(t, format!("'{arg}' is not hex bytes (01.02.ab)")));
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).map_err(|_| bad(t, "bad hex")))
        .collect()
}

/// Parse the text after `actions=`. `table` is the flow's table (`goto_table` must go later).
pub fn parse_actions(s: &str, table: u8) -> Result<Vec<Action>, FlowError> {
    let pieces = split_top(s)?;
    let mut out = Vec::with_capacity(pieces.len());
    let n = pieces.len();
    for (i, t) in pieces.iter().enumerate() {
        match parse_one(t)? {
            None if n > 1 => return Err(bad(t, "drop must be the only action")),
            None => {}
            Some(Action::Meter(_)) if i != 0 => {
                return Err(bad(t, "meter must be the first action"));
            }
            Some(Action::GotoTable(_)) if i != n - 1 => {
                return Err(bad(t, "goto_table must be the last action"));
            }
            Some(Action::GotoTable(g)) if g <= table => {
                return Err(bad(t, format!("must go to a later table than {table}")));
            }
            Some(a) => out.push(a),
        }
    }
    Ok(out)
}

impl fmt::Display for SetField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SetField::DlSrc(m) => write!(f, "{m}->eth_src"),
            SetField::DlDst(m) => write!(f, "{m}->eth_dst"),
            SetField::VlanVid(v) => write!(f, "{v}->vlan_vid"),
            SetField::VlanPcp(v) => write!(f, "{v}->vlan_pcp"),
            SetField::NwSrc(a) => write!(f, "{a}->ip_src"),
            SetField::NwDst(a) => write!(f, "{a}->ip_dst"),
            SetField::NwTos(v) => write!(f, "{v}->nw_tos"),
            SetField::TpSrc(v) => write!(f, "{v}->tp_src"),
            SetField::TpDst(v) => write!(f, "{v}->tp_dst"),
            SetField::TunId(v) => write!(f, "{v:#x}->tun_id"),
            SetField::Ext(e, v, m) if *m == e.full() => write!(f, "{v:#x}->{e}"),
            SetField::Ext(e, v, m) => write!(f, "{v:#x}/{m:#x}->{e}"),
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Normal => f.write_str("NORMAL"),
            Action::Flood => f.write_str("FLOOD"),
            Action::All => f.write_str("ALL"),
            Action::InPort => f.write_str("IN_PORT"),
            // As ovs-ofctl prints it.
            Action::Output(PortRef::Num(crate::ofport::OFPP_LOCAL)) => f.write_str("LOCAL"),
            Action::Output(p) => write!(f, "output:{p}"),
            Action::OutputTrunc(p, n) => write!(f, "output(port={p},max_len={n})"),
            Action::ModVlanVid(v) => write!(f, "mod_vlan_vid:{v}"),
            Action::ModVlanPcp(v) => write!(f, "mod_vlan_pcp:{v}"),
            Action::StripVlan => f.write_str("strip_vlan"),
            Action::PushVlan(t) => write!(f, "push_vlan:{t:#06x}"),
            Action::ModDlSrc(m) => write!(f, "mod_dl_src:{m}"),
            Action::ModDlDst(m) => write!(f, "mod_dl_dst:{m}"),
            Action::ModNwSrc(a) => write!(f, "mod_nw_src:{a}"),
            Action::ModNwDst(a) => write!(f, "mod_nw_dst:{a}"),
            Action::ModTpSrc(p) => write!(f, "mod_tp_src:{p}"),
            Action::ModTpDst(p) => write!(f, "mod_tp_dst:{p}"),
            Action::DecTtl => f.write_str("dec_ttl"),
            Action::SetField(s) => write!(f, "set_field:{s}"),
            Action::SetTunnel(v) => write!(f, "set_tunnel:{v:#x}"),
            Action::Resubmit(t) => write!(f, "resubmit(,{t})"),
            Action::GotoTable(t) => write!(f, "goto_table:{t}"),
            Action::Meter(m) => write!(f, "meter:{m}"),
            Action::Ct(a) => write!(f, "{a}"),
            Action::CtClear => f.write_str("ct_clear"),
            Action::ModNwTos(v) => write!(f, "mod_nw_tos:{v}"),
            Action::ModNwEcn(v) => write!(f, "mod_nw_ecn:{v}"),
            Action::ModNwTtl(v) => write!(f, "mod_nw_ttl:{v}"),
            Action::Note(b) => {
                f.write_str("note:")?;
                for (i, x) in b.iter().enumerate() {
                    write!(f, "{}{x:02x}", if i == 0 { "" } else { "." })?;
                }
                Ok(())
            }
            Action::Load(v, d) => write!(f, "load:{:#x}->{d}", v >> d.ofs),
            Action::Move(s, d) => write!(f, "move:{s}->{d}"),
            Action::Clone(a) => write!(f, "clone({})", Actions(a)),
            Action::PushMpls(e) => write!(f, "push_mpls:{e:#06x}"),
            Action::PopMpls(e) => write!(f, "pop_mpls:{e:#06x}"),
            Action::SetMplsLabel(l) => write!(f, "set_mpls_label:{l}"),
            Action::SetMplsTc(v) => write!(f, "set_mpls_tc:{v}"),
            Action::SetMplsTtl(v) => write!(f, "set_mpls_ttl:{v}"),
            Action::DecMplsTtl => f.write_str("dec_mpls_ttl"),
            Action::Learn(l) => write!(f, "{l}"),
            Action::Group(g) => write!(f, "group:{g}"),
            Action::Controller(c) if c.reason == REASON_ACTION => {
                write!(f, "CONTROLLER:{}", c.max_len)
            }
            Action::Controller(c) => {
                write!(f, "controller(reason={}", REASONS[usize::from(c.reason)])?;
                if c.max_len != u16::MAX {
                    write!(f, ",max_len={}", c.max_len)?;
                }
                f.write_str(")")
            }
        }
    }
}

/// ovs-ofctl's spelling of an action list: comma-separated, `drop` when empty.
pub struct Actions<'a>(pub &'a [Action]);

impl fmt::Display for Actions<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("drop");
        }
        for (i, a) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{a}")?;
        }
        Ok(())
    }
}

/// What an action list decides when it decides every frame alike and changes nothing but its
/// flow's counters: no action (drop), or exactly one `NORMAL`, `FLOOD` (or `ALL`), `IN_PORT` or
/// `output:P` (by number). Anything else is `Many` (the action loop runs it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Single {
    /// Not one decision.
    Many,
    /// No action: drop.
    Drop,
    /// `NORMAL`.
    Normal,
    /// `FLOOD`.
    Flood,
    /// `ALL` (`FLOOD`'s ports and the `no-flood` ones).
    All,
    /// `IN_PORT`.
    InPort,
    /// `output:P`, the OpenFlow port number.
    Output(u16),
}

impl Single {
    /// The decision of `actions`.
    #[inline]
    pub fn of(actions: &[Action]) -> Single {
        match actions {
            [] => Single::Drop,
            [Action::Normal] => Single::Normal,
            [Action::Flood] => Single::Flood,
            [Action::All] => Single::All,
            [Action::InPort] => Single::InPort,
            [Action::Output(p)] => Single::Output(p.num()),
            _ => Single::Many,
        }
    }

    /// As two bytes' worth (kind, port) for a cache slot, and back.
    #[inline(always)]
    pub(crate) fn pack(self) -> (u8, u16) {
        match self {
            Single::Many => (0, 0),
            Single::Drop => (1, 0),
            Single::Normal => (2, 0),
            Single::Flood => (3, 0),
            Single::InPort => (4, 0),
            Single::Output(p) => (5, p),
            Single::All => (6, 0),
        }
    }

    /// See [`Single::pack`].
    #[inline(always)]
    pub(crate) fn unpack((kind, port): (u8, u16)) -> Single {
        match kind {
            1 => Single::Drop,
            2 => Single::Normal,
            3 => Single::Flood,
            4 => Single::InPort,
            5 => Single::Output(port),
            6 => Single::All,
            _ => Single::Many,
        }
    }
}
