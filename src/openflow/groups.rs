//! OpenFlow 1.3 groups: OFPT_GROUP_MOD (add, modify, delete) and the GROUP_DESC multipart
//! (`ovs-ofctl -O OpenFlow13 add-group / mod-group / del-groups / dump-groups`).
//!
//! Contract: a GROUP_MOD becomes the bridge's `add-group` (OFPGC_ADD), `mod-group`
//! (OFPGC_MODIFY) or `del-groups` (OFPGC_DELETE; OFPG_ALL: every group; the flows that send
//! packets to a deleted group are deleted with it, as OVS does); types all, select and
//! indirect; bucket watch ports and groups are ignored (no fast-failover). Errors, as OVS
//! answers them: adding an id that exists is OFPGMFC_GROUP_EXISTS, modifying one that does not
//! OFPGMFC_UNKNOWN_GROUP (checked against the bridge's groups first; two controllers racing on
//! one id may instead get the bridge's refusal below), an unknown type OFPGMFC_BAD_TYPE, an
//! unknown command OFPGMFC_BAD_COMMAND, what the bridge refuses (an indirect group without
//! exactly one bucket, a port it does not have) OFPGMFC_INVALID_GROUP, with the reason in the
//! log.

use super::Switch;
use super::actions;
use super::codec::{OfErr, OfResult, Reader, Writer};
use crate::flow::EntryWrite;
use crate::flow::group::{Bucket, Group, GroupType, parse_group};

/// OFPG_ALL.
const ALL: u32 = 0xffff_fffc;
/// OFPG_ANY / OFPP_ANY (watch_group / watch_port: none).
const ANY: u32 = 0xffff_ffff;

/// OFPT_GROUP_MOD body.
pub fn group_mod(mut r: Reader<'_>, sw: &dyn Switch) -> OfResult<()> {
    let cmd = r.u16()?;
    let typ = r.u8()?;
    r.skip(1)?;
    let id = r.u32()?;
    if cmd == 2 {
        let id = (id != ALL).then_some(id);
        return sw.del_groups(id).map_err(|e| failed(sw, e));
    }
    if cmd > 2 {
        return Err(OfErr::GroupBadCommand);
    }
    let kind = GroupType::from_wire(typ).ok_or(OfErr::GroupBadType)?;
    let mut buckets = Vec::new();
    while r.left() > 0 {
        let len = usize::from(r.u16()?);
        if len < 16 || len - 2 > r.left() {
            return Err(OfErr::BadLen);
        }
        let mut b = Reader::new(r.bytes(len - 2)?);
        let weight = match (kind, b.u16()?) {
            // Other types carry 0; uvs keeps the default weight for them.
            (GroupType::Select, w) => w,
            _ => 1,
        };
        b.skip(12)?;
        let acts = actions::decode13_actions(b)?;
        buckets.push(Bucket {
            weight,
            actions: acts,
        });
    }
    let g = Group { id, kind, buckets };
    // The text goes through the same parser (and checks) as `uvs ctl add-group`.
    let text = g.to_string();
    let write = if cmd == 0 {
        EntryWrite::Add
    } else {
        EntryWrite::Modify
    };
    // dump-groups lines start `group_id=N,`: the id is compared, the line not parsed.
    let prefix = format!("group_id={id},");
    let exists = sw
        .dump_groups()
        .map_err(|e| failed(sw, e))?
        .iter()
        .any(|l| l.starts_with(&prefix));
    match (write, exists) {
        (EntryWrite::Add, true) => return Err(OfErr::GroupExists),
        (EntryWrite::Modify, false) => return Err(OfErr::GroupUnknown),
        _ => {}
    }
    sw.add_group(&text, write).map_err(|e| failed(sw, e))
}

fn failed(sw: &dyn Switch, e: String) -> OfErr {
    tracing::warn!("openflow {}: group: {e}", sw.bridge());
    OfErr::GroupInvalid
}

/// GROUP_DESC reply entries.
pub fn desc(sw: &dyn Switch) -> OfResult<Vec<Vec<u8>>> {
    let lines = sw.dump_groups().map_err(|e| failed(sw, e))?;
    let mut out = Vec::new();
    for l in lines {
        let g = parse_group(&l).map_err(|e| failed(sw, e.to_string()))?;
        let mut w = Writer::default();
        w.u16(0).u8(g.kind.wire()).u8(0).u32(g.id);
        for b in &g.buckets {
            let at = w.len();
            // Weights mean something for select groups only (OpenFlow: 0 for the others).
            let weight = if g.kind == GroupType::Select {
                b.weight
            } else {
                0
            };
            w.u16(0).u16(weight).u32(ANY).u32(ANY).zeros(4);
            for a in &b.actions {
                actions::encode13_one(&mut w, a);
            }
            let n = (w.len() - at) as u16;
            w.put_u16(at, n);
        }
        let n = w.len() as u16;
        w.put_u16(0, n);
        out.push(w.buf);
    }
    Ok(out)
}
