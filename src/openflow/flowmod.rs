//! FLOW_MOD (OpenFlow 1.0, Nicira NXT_FLOW_MOD, OpenFlow 1.3) decoded and applied to a bridge.
//!
//! Contract:
//! - `decode*` turn the message body into a `FlowMod` or the `OfErr` to send; `apply` carries
//!   it out through `Switch`: ADD adds (replacing a flow with the same match and priority),
//!   MODIFY[_STRICT] replaces the actions of the flows selected (OpenFlow 1.0: adds when none is
//!   selected, as the spec says, and without a cookie mask gives them the message's cookie, as
//!   OVS; counters restart), DELETE[_STRICT] removes them (with an
//!   out_port or out_group, only the flows that output there / send to that group, also from
//!   inside `clone(...)`).
//! - Every flow is checked by the flow parser (`parse_flow` of its text) before it reaches the
//!   bridge, so prerequisites and action order are the ones `uvs ctl add-flow` enforces
//!   (missing prerequisite: BadPrereq).
//! - OFPFF_SEND_FLOW_REM on an add becomes the flow's `send_flow_rem` (a FLOW_REMOVED is sent
//!   when it expires or is deleted).
//! - Not supported: buffer ids (no packet is buffered: BufferUnknown), OFPFF_CHECK_OVERLAP
//!   (accepted, not checked).

use super::actions::{self, port};
use super::codec::{OF10, OfErr, OfResult, Reader};
use super::ofmatch::{self, Tlv};
use super::{Switch, any_flow};
use crate::flow::{Flow, FlowError, FlowFilter, Masked, parse_flow};

/// OFPG_ANY: no out_group filter.
pub const ANY_GROUP: u32 = 0xffff_ffff;

/// OFPFF_SEND_FLOW_REM.
pub const SEND_FLOW_REM: u16 = 1;

/// One decoded flow_mod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowMod {
    /// OFPFC_* (0 add, 1 modify, 2 modify strict, 3 delete, 4 delete strict).
    pub command: u8,
    /// Table, priority, cookie, timeouts, match and actions.
    pub flow: Flow,
    /// Table 255: every table (delete/modify).
    pub all_tables: bool,
    /// Cookie mask for modify/delete (0: any cookie).
    pub cookie_mask: u64,
    /// Out port filter for delete (1.0 numbering; `port::NONE`: any).
    pub out_port: u32,
    /// Out group filter for delete (1.3; `ANY_GROUP`: any): only flows that send to it.
    pub out_group: u32,
    /// OFPFF_* flags.
    pub flags: u16,
}

/// A flow from its parts. `..Flow::default()` keeps this compiling, with defaults, when the
/// flow language gains fields.
#[allow(clippy::needless_update)]
fn make_flow(
    table: u8,
    priority: u16,
    cookie: u64,
    (idle, hard): (u16, u16),
    m: crate::flow::Match,
    actions: Vec<crate::flow::Action>,
) -> Flow {
    Flow {
        table,
        priority,
        cookie,
        idle_timeout: idle,
        hard_timeout: hard,
        m,
        actions,
        ..Flow::default()
    }
}

fn command(c: u16, table_ext: bool) -> OfResult<(u8, Option<u8>)> {
    let (table, cmd) = if table_ext {
        ((c >> 8) as u8, c & 0xff)
    } else {
        (0, c)
    };
    if cmd > 4 {
        return Err(OfErr::BadCommand);
    }
    Ok((cmd as u8, Some(table)))
}

fn check_buffer(b: u32) -> OfResult<()> {
    if b != u32::MAX {
        return Err(OfErr::BufferUnknown);
    }
    Ok(())
}

/// OpenFlow 1.0 / 1.3 OFPT_FLOW_MOD body.
pub fn decode(version: u8, table_ext: bool, mut r: Reader<'_>) -> OfResult<FlowMod> {
    if version == OF10 {
        let m = ofmatch::decode_of10(&mut r)?;
        let cookie = r.u64()?;
        let (cmd, table) = command(r.u16()?, table_ext)?;
        let idle = r.u16()?;
        let hard = r.u16()?;
        let prio = r.u16()?;
        let buffer = r.u32()?;
        let out_port = u32::from(r.u16()?);
        let flags = r.u16()?;
        let acts = if cmd <= 2 {
            actions::decode10(r)?
        } else {
            Vec::new()
        };
        if cmd <= 2 {
            check_buffer(buffer)?;
        }
        let table = table.unwrap_or(0);
        return Ok(FlowMod {
            command: cmd,
            flow: make_flow(
                if table == 255 { 0 } else { table },
                prio,
                cookie,
                (idle, hard),
                m,
                acts,
            ),
            all_tables: table == 255 || (!table_ext && cmd >= 1),
            cookie_mask: 0,
            out_port,
            out_group: ANY_GROUP,
            flags,
        });
    }
    let cookie = r.u64()?;
    let cookie_mask = r.u64()?;
    let table = r.u8()?;
    let cmd = r.u8()?;
    if cmd > 4 {
        return Err(OfErr::BadCommand);
    }
    let idle = r.u16()?;
    let hard = r.u16()?;
    let prio = r.u16()?;
    let buffer = r.u32()?;
    let out_port = actions::port_from13(r.u32()?);
    let out_group = r.u32()?;
    let flags = r.u16()?;
    r.skip(2)?;
    let m = decode_oxm_match(&mut r)?;
    if table == 255 && cmd < 3 {
        return Err(OfErr::BadTableId);
    }
    let acts = if cmd <= 2 {
        check_buffer(buffer)?;
        actions::decode13_instructions(r)?
    } else {
        Vec::new()
    };
    Ok(FlowMod {
        command: cmd,
        flow: make_flow(
            if table == 255 { 0 } else { table },
            prio,
            cookie,
            (idle, hard),
            m,
            acts,
        ),
        all_tables: table == 255,
        cookie_mask,
        out_port,
        out_group,
        flags,
    })
}

/// An OpenFlow 1.3 `ofp_match` (type OXM, length, fields, padding to 8).
pub fn decode_oxm_match(r: &mut Reader<'_>) -> OfResult<crate::flow::Match> {
    let typ = r.u16()?;
    let len = usize::from(r.u16()?);
    if typ != 1 {
        return Err(OfErr::BadMatchType);
    }
    if len < 4 {
        return Err(OfErr::BadMatchLen);
    }
    let fields = r.bytes(len - 4).map_err(|_| OfErr::BadMatchLen)?;
    r.skip((8 - len % 8) % 8).map_err(|_| OfErr::BadMatchLen)?;
    ofmatch::decode_tlv(Tlv::Oxm, Reader::new(fields))
}

/// Nicira NXT_FLOW_MOD body (after the vendor id and subtype).
pub fn decode_nx(table_ext: bool, mut r: Reader<'_>) -> OfResult<FlowMod> {
    let cookie = r.u64()?;
    let (cmd, table) = command(r.u16()?, table_ext)?;
    let idle = r.u16()?;
    let hard = r.u16()?;
    let prio = r.u16()?;
    let buffer = r.u32()?;
    let out_port = u32::from(r.u16()?);
    let flags = r.u16()?;
    let match_len = usize::from(r.u16()?);
    r.skip(6)?;
    let mb = r.bytes(match_len).map_err(|_| OfErr::BadMatchLen)?;
    r.skip((8 - match_len % 8) % 8)
        .map_err(|_| OfErr::BadMatchLen)?;
    let (m, ck) = ofmatch::decode_tlv_cookie(Tlv::Nxm, Reader::new(mb))?;
    let acts = if cmd <= 2 {
        check_buffer(buffer)?;
        actions::decode10(r)?
    } else {
        Vec::new()
    };
    let table = table.unwrap_or(0);
    let ck = ck.unwrap_or(Masked { value: 0, mask: 0 });
    Ok(FlowMod {
        command: cmd,
        flow: make_flow(
            if table == 255 { 0 } else { table },
            prio,
            if cmd == 0 { cookie } else { ck.value },
            (idle, hard),
            m,
            acts,
        ),
        all_tables: table == 255 || (!table_ext && cmd >= 1),
        cookie_mask: if cmd == 0 { 0 } else { ck.mask },
        out_port,
        out_group: ANY_GROUP,
        flags,
    })
}

/// Check a flow as `uvs ctl add-flow` would (prerequisites, action order), by its text.
fn check(f: &Flow) -> OfResult<Flow> {
    parse_flow(&f.to_string()).map_err(|e| {
        tracing::debug!("openflow: flow refused: {e}");
        match e {
            FlowError::Prerequisite { .. } => OfErr::BadPrereq,
            FlowError::BadMask { .. } => OfErr::BadMask,
            FlowError::BadValue { .. } => OfErr::BadValue,
            FlowError::BadAction { .. } => OfErr::BadActionArg,
            _ => OfErr::FlowModFailed,
        }
    })
}

fn filter_of(fm: &FlowMod, strict: bool) -> FlowFilter {
    let mut f = any_flow();
    f.table = (!fm.all_tables).then_some(fm.flow.table);
    f.priority = strict.then_some(fm.flow.priority);
    f.cookie = (fm.cookie_mask != 0).then_some(Masked {
        value: fm.flow.cookie & fm.cookie_mask,
        mask: fm.cookie_mask,
    });
    f.m = fm.flow.m.clone();
    f
}

fn failed(sw: &dyn Switch, what: &str, e: String) -> OfErr {
    tracing::warn!("openflow {}: {what}: {e}", sw.bridge());
    // A flow to a missing group: the error OVS sends (OFPBAC_BAD_OUT_GROUP).
    if e.contains(": no such group") {
        return OfErr::BadOutGroup;
    }
    OfErr::FlowModFailed
}

/// The flows a modify or delete selects.
fn selected(fm: &FlowMod, strict: bool, sw: &dyn Switch) -> OfResult<Vec<Flow>> {
    let filter = filter_of(fm, strict);
    let rows = sw.dump_flows(&filter).map_err(|e| failed(sw, "dump", e))?;
    Ok(rows
        .into_iter()
        .map(|e| e.flow)
        .filter(|f| !strict || (f.priority == fm.flow.priority && f.m == fm.flow.m))
        .filter(|f| fm.out_port == port::NONE || actions::outputs_to(&f.actions, fm.out_port))
        .filter(|f| fm.out_group == ANY_GROUP || f.uses_group(fm.out_group))
        .collect())
}

/// Carry out a flow_mod on the bridge.
pub fn apply(version: u8, fm: &FlowMod, sw: &dyn Switch) -> OfResult<()> {
    match fm.command {
        0 => {
            let mut f = fm.flow.clone();
            f.send_flow_rem = fm.flags & SEND_FLOW_REM != 0;
            let f = check(&f)?;
            sw.add_flows(&[f]).map_err(|e| failed(sw, "add", e))
        }
        1 | 2 => {
            check(&fm.flow)?;
            let mut flows = selected(fm, fm.command == 2, sw)?;
            if flows.is_empty() {
                if version == OF10 {
                    let f = check(&fm.flow)?;
                    return sw.add_flows(&[f]).map_err(|e| failed(sw, "add", e));
                }
                return Ok(());
            }
            // OpenFlow 1.0 (and NXT_FLOW_MOD) without a cookie mask: the message's cookie is
            // the flows' new cookie, as OVS does; 1.3's MODIFY never changes cookies.
            // (A cookie of all ones means "leave it", as in OVS.)
            let new_cookie = (version == OF10 && fm.cookie_mask == 0 && fm.flow.cookie != u64::MAX)
                .then_some(fm.flow.cookie);
            for f in &mut flows {
                f.actions = fm.flow.actions.clone();
                if let Some(c) = new_cookie {
                    f.cookie = c;
                }
            }
            sw.add_flows(&flows).map_err(|e| failed(sw, "modify", e))
        }
        _ => {
            let strict = fm.command == 4;
            if fm.out_port == port::NONE && fm.out_group == ANY_GROUP {
                return sw
                    .del_flows(&filter_of(fm, strict), strict)
                    .map_err(|e| failed(sw, "delete", e));
            }
            for f in selected(fm, strict, sw)? {
                let mut one = any_flow();
                one.table = Some(f.table);
                one.priority = Some(f.priority);
                one.m = f.m;
                sw.del_flows(&one, true)
                    .map_err(|e| failed(sw, "delete", e))?;
            }
            Ok(())
        }
    }
}
