//! FEATURES and the statistics / multipart family: DESC, FLOW, AGGREGATE, TABLE, PORT (stats),
//! PORT_DESC, and Nicira's NXST_FLOW / NXST_AGGREGATE, for OpenFlow 1.0 and 1.3.
//!
//! Contract: a request decodes to the same `FlowFilter` a `dump-flows` would use and the reply
//! carries the bridge's flows and counters; replies longer than one message are split with the
//! REPLY_MORE flag. Unknown stats types are BadStat, unknown Nicira subtypes BadSubtype.

use super::actions::{self, port};
use super::codec::{NX_VENDOR, OF10, OfErr, OfResult, Reader, Writer, finish, start};
use super::flowmod::decode_oxm_match;
use super::ofmatch::{self, Tlv};
use super::{FlowEntry, PortInfo, Switch, any_flow};
use crate::flow::{FlowFilter, Masked};

/// Largest body put in one reply message before REPLY_MORE splits it.
const MAX_BODY: usize = 60_000;
/// Tables uvs has (0 to 254).
const N_TABLES: u8 = 255;

fn sw_err(sw: &dyn Switch, e: String) -> OfErr {
    tracing::warn!("openflow {}: {e}", sw.bridge());
    OfErr::Eperm
}

/// OFPT_FEATURES_REPLY.
pub fn features_reply(v: u8, xid: u32, sw: &dyn Switch) -> OfResult<Vec<u8>> {
    let mut w = start(v, 6, xid);
    w.u64(sw.datapath_id()).u32(0).u8(N_TABLES);
    // Capabilities: FLOW_STATS | TABLE_STATS | PORT_STATS.
    let caps = 1 | 2 | 4;
    if v == OF10 {
        w.zeros(3).u32(caps).u32(0x7ff);
        for p in sw.ports().map_err(|e| sw_err(sw, e))? {
            phy_port10(&mut w, &p);
        }
    } else {
        w.u8(0).zeros(2).u32(caps).u32(0);
    }
    Ok(finish(w))
}

pub(super) fn phy_port10(w: &mut Writer, p: &PortInfo) {
    w.u16(p.ofport).mac(p.mac).str_field(&p.name, 16);
    w.u32(p.config).u32(u32::from(!p.up)).zeros(16);
}

pub(super) fn port13(w: &mut Writer, p: &PortInfo) {
    w.u32(super::actions::port_to13(u32::from(p.ofport)))
        .zeros(4)
        .mac(p.mac)
        .zeros(2);
    w.str_field(&p.name, 16);
    let state = if p.up { 4 } else { 1 };
    // 1.3 has no NO_FLOOD bit.
    let config = p.config & !crate::port_admin::NO_FLOOD;
    w.u32(config).u32(state).zeros(24);
}

/// Which stats reply header to write.
#[derive(Clone, Copy)]
struct Kind {
    v: u8,
    typ: u16,
    nx_sub: Option<u32>,
}

fn reply_start(k: Kind, xid: u32, more: bool) -> Writer {
    let flags = u16::from(more);
    if k.v == OF10 {
        let mut w = start(k.v, 17, xid);
        w.u16(k.typ).u16(flags);
        if let Some(s) = k.nx_sub {
            w.u32(NX_VENDOR).u32(s).zeros(4);
        }
        w
    } else {
        let mut w = start(k.v, 19, xid);
        w.u16(k.typ).u16(flags).zeros(4);
        if let Some(s) = k.nx_sub {
            w.u32(NX_VENDOR).u32(s);
        }
        w
    }
}

/// Replies carrying `entries`, split so each message stays under 64 KiB.
fn replies(k: Kind, xid: u32, entries: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
    let mut chunks: Vec<Vec<Vec<u8>>> = vec![Vec::new()];
    let mut size = 0;
    for e in entries {
        if size + e.len() > MAX_BODY && size > 0 {
            chunks.push(Vec::new());
            size = 0;
        }
        size += e.len();
        chunks.last_mut().expect("one chunk").push(e);
    }
    let n = chunks.len();
    chunks
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            let mut w = reply_start(k, xid, i + 1 < n);
            for e in c {
                w.bytes(&e);
            }
            finish(w)
        })
        .collect()
}

/// A decoded flow or aggregate stats request.
struct FlowReq {
    filter: FlowFilter,
    out_port: u32,
    /// 1.3's out_group (`flowmod::ANY_GROUP`: any).
    out_group: u32,
}

impl FlowReq {
    fn new(table: u8, out_port: u32, m: crate::flow::Match, cookie: Option<Masked<u64>>) -> Self {
        let mut filter = any_flow();
        filter.table = (table != 255).then_some(table);
        filter.cookie = cookie.filter(|c| c.mask != 0);
        filter.m = m;
        FlowReq {
            filter,
            out_port,
            out_group: super::flowmod::ANY_GROUP,
        }
    }

    fn rows(&self, sw: &dyn Switch) -> OfResult<Vec<FlowEntry>> {
        let rows = sw.dump_flows(&self.filter).map_err(|e| sw_err(sw, e))?;
        Ok(rows
            .into_iter()
            .filter(|e| {
                self.out_port == port::NONE || actions::outputs_to(&e.flow.actions, self.out_port)
            })
            .filter(|e| {
                self.out_group == super::flowmod::ANY_GROUP || e.flow.uses_group(self.out_group)
            })
            .collect())
    }
}

/// A stats / multipart request (body after the common header).
pub fn request(v: u8, xid: u32, mut r: Reader<'_>, sw: &dyn Switch) -> OfResult<Vec<Vec<u8>>> {
    let typ = r.u16()?;
    let _flags = r.u16()?;
    if v != OF10 {
        r.skip(4)?;
    }
    let k = Kind {
        v,
        typ,
        nx_sub: None,
    };
    match typ {
        0 => Ok(replies(k, xid, vec![desc(sw)])),
        1 | 2 => {
            let req = if v == OF10 {
                let m = ofmatch::decode_of10(&mut r)?;
                let table = r.u8()?;
                r.skip(1)?;
                FlowReq::new(table, u32::from(r.u16()?), m, None)
            } else {
                let table = r.u8()?;
                r.skip(3)?;
                let out = actions::port_from13(r.u32()?);
                let out_group = r.u32()?;
                r.skip(4)?;
                let cookie = Masked {
                    value: r.u64()?,
                    mask: r.u64()?,
                };
                let m = decode_oxm_match(&mut r)?;
                FlowReq {
                    out_group,
                    ..FlowReq::new(table, out, m, Some(cookie))
                }
            };
            flow_reply(k, xid, &req, sw)
        }
        3 => Ok(replies(k, xid, table_stats(v, sw)?)),
        7 if v != OF10 => Ok(replies(k, xid, super::groups::desc(sw)?)),
        6 | 8 if v != OF10 => Ok(replies(k, xid, group_stats_reply(typ, &mut r, sw)?)),
        9..=11 if v != OF10 => Ok(replies(k, xid, meter_reply(typ, &mut r, sw)?)),
        12 if v != OF10 => {
            if r.left() > 0 {
                // Setting table features is not supported.
                return Err(OfErr::Eperm);
            }
            Ok(replies(k, xid, table_features()))
        }
        4 => {
            let p = if v == OF10 {
                u32::from(r.u16()?)
            } else {
                actions::port_from13(r.u32()?)
            };
            Ok(replies(k, xid, port_stats(v, p, sw)?))
        }
        13 => {
            let ports = sw.ports().map_err(|e| sw_err(sw, e))?;
            let rows = ports
                .iter()
                .map(|p| {
                    let mut w = Writer::default();
                    if v == OF10 {
                        phy_port10(&mut w, p);
                    } else {
                        port13(&mut w, p);
                    }
                    w.buf
                })
                .collect();
            Ok(replies(k, xid, rows))
        }
        0xffff => nx_request(v, xid, r, sw),
        _ => Err(OfErr::BadStat),
    }
}

/// OFPMP_GROUP (6: each group's counters and its buckets', for the group a request names or
/// `OFPG_ALL`) and OFPMP_GROUP_FEATURES (8: all, select and indirect groups; weighted select;
/// the actions a bucket may hold). A group's duration is its age since it was last written.
fn group_stats_reply(typ: u16, r: &mut Reader<'_>, sw: &dyn Switch) -> OfResult<Vec<Vec<u8>>> {
    const OFPG_ALL: u32 = 0xffff_fffc;
    if typ == 8 {
        // Actions (1 << OFPAT_*): output, copy/dec TTL, push/pop VLAN, group, set_nw_ttl,
        // dec_nw_ttl, set_field.
        let actions: u32 = (1 << 0)
            | (1 << 11)
            | (1 << 12)
            | (1 << 17)
            | (1 << 18)
            | (1 << 22)
            | (1 << 23)
            | (1 << 24)
            | (1 << 25);
        let mut w = Writer::default();
        // Types all, select, indirect; OFPGFC_SELECT_WEIGHT; then max groups and actions per
        // type (all, select, indirect, fast failover).
        w.u32(0b111).u32(1);
        for kind in 0..4 {
            w.u32(if kind < 3 { 0xffff_ff00 } else { 0 });
        }
        for kind in 0..4 {
            w.u32(if kind < 3 { actions } else { 0 });
        }
        return Ok(vec![w.buf]);
    }
    let want = r.u32()?;
    let groups = sw.group_stats().map_err(|e| {
        tracing::warn!("openflow {}: group stats: {e}", sw.bridge());
        OfErr::BadStat
    })?;
    Ok(groups
        .iter()
        .filter(|g| want == OFPG_ALL || g.id == want)
        .map(|g| {
            let mut w = Writer::default();
            let len = 40 + 16 * g.buckets.len();
            w.u16(len as u16)
                .zeros(2)
                .u32(g.id)
                .u32(g.ref_count)
                .zeros(4);
            w.u64(g.packets).u64(g.bytes);
            duration(&mut w, g.duration_ms);
            for &(p, b) in &g.buckets {
                w.u64(p).u64(b);
            }
            w.buf
        })
        .collect())
}

/// The meters one kbps drop band each, as OpenFlow 1.3 reports them: OFPMP_METER (9:
/// statistics), OFPMP_METER_CONFIG (10) for the meter a request names (`OFPM_ALL`: every
/// one), and OFPMP_METER_FEATURES (11). A meter's duration is its age since it was last
/// written.
fn meter_reply(typ: u16, r: &mut Reader<'_>, sw: &dyn Switch) -> OfResult<Vec<Vec<u8>>> {
    const OFPM_ALL: u32 = 0xffff_ffff;
    const KBPS_BURST_STATS: u16 = 1 | 4 | 8;
    if typ == 11 {
        let mut w = Writer::default();
        // max_meter, band_types (1 << OFPMBT_DROP), capabilities, max_bands, max_color.
        w.u32(65_535)
            .u32(1 << 1)
            .u32(u32::from(KBPS_BURST_STATS))
            .u8(1)
            .u8(0)
            .zeros(2);
        return Ok(vec![w.buf]);
    }
    let want = r.u32()?;
    let meters = sw.meters().map_err(|e| {
        tracing::warn!("openflow {}: meters: {e}", sw.bridge());
        OfErr::BadStat
    })?;
    Ok(meters
        .iter()
        .filter(|m| want == OFPM_ALL || m.id == want)
        .map(|m| {
            let mut w = Writer::default();
            if typ == 9 {
                w.u32(m.id).u16(56).zeros(6).u32(m.flow_count);
                w.u64(m.packets).u64(m.bytes);
                duration(&mut w, m.duration_ms);
                w.u64(m.band_packets).u64(m.band_bytes);
            } else {
                w.u16(24).u16(KBPS_BURST_STATS).u32(m.id);
                w.u16(1)
                    .u16(16)
                    .u32(m.rate_kbps)
                    .u32(m.burst_kbits)
                    .zeros(4);
            }
            w.buf
        })
        .collect())
}

/// The ONF experimenter id (ONFST_FLOW_MONITOR in OpenFlow 1.3).
const ONF_VENDOR: u32 = 0x4f4e_4600;

fn nx_request(v: u8, xid: u32, mut r: Reader<'_>, sw: &dyn Switch) -> OfResult<Vec<Vec<u8>>> {
    let vendor = r.u32()?;
    if vendor == ONF_VENDOR && v != OF10 && r.u32()? == 1870 {
        // ONFST_FLOW_MONITOR: as NXST_FLOW_MONITOR below.
        let mut w = reply_start(
            Kind {
                v,
                typ: 0xffff,
                nx_sub: None,
            },
            xid,
            false,
        );
        w.u32(ONF_VENDOR).u32(1870);
        return Ok(vec![finish(w)]);
    }
    if vendor != NX_VENDOR {
        return Err(OfErr::BadVendor);
    }
    let sub = r.u32()?;
    if v == OF10 {
        r.skip(4)?;
    }
    let k = Kind {
        v,
        typ: 0xffff,
        nx_sub: Some(sub),
    };
    if sub == 2 {
        // NXST_FLOW_MONITOR (`ovs-ofctl monitor ... watch:`): accepted with an empty reply;
        // uvs sends no flow updates (its events are PACKET_IN, FLOW_REMOVED, PORT_STATUS).
        return Ok(replies(k, xid, Vec::new()));
    }
    if sub > 1 {
        return Err(OfErr::BadSubtype);
    }
    let out_port = u32::from(r.u16()?);
    let match_len = usize::from(r.u16()?);
    let table = r.u8()?;
    r.skip(3)?;
    let mb = r.bytes(match_len).map_err(|_| OfErr::BadMatchLen)?;
    let (m, cookie) = ofmatch::decode_tlv_cookie(Tlv::Nxm, Reader::new(mb))?;
    let req = FlowReq::new(table, out_port, m, cookie);
    flow_reply(k, xid, &req, sw)
}

fn flow_reply(k: Kind, xid: u32, req: &FlowReq, sw: &dyn Switch) -> OfResult<Vec<Vec<u8>>> {
    let rows = req.rows(sw)?;
    let aggregate = matches!((k.typ, k.nx_sub), (2, None) | (0xffff, Some(1)));
    if aggregate {
        let mut w = Writer::default();
        let packets = rows.iter().map(|e| e.n_packets).sum();
        let bytes = rows.iter().map(|e| e.n_bytes).sum();
        w.u64(packets).u64(bytes).u32(rows.len() as u32).zeros(4);
        return Ok(replies(k, xid, vec![w.buf]));
    }
    let nx = k.nx_sub.is_some();
    let entries = rows
        .iter()
        .map(|e| {
            if nx {
                nx_flow_stats(e)
            } else {
                flow_stats(k.v, e)
            }
        })
        .collect();
    Ok(replies(k, xid, entries))
}

fn duration(w: &mut Writer, ms: u64) {
    w.u32((ms / 1000) as u32)
        .u32(((ms % 1000) * 1_000_000) as u32);
}

/// OFPST_FLOW (1.0) / OFPMP_FLOW (1.3) reply entry.
fn flow_stats(v: u8, e: &FlowEntry) -> Vec<u8> {
    let f = &e.flow;
    let mut w = Writer::default();
    w.u16(0).u8(f.table).u8(0);
    if v == OF10 {
        ofmatch::encode_of10(&mut w, &f.m);
        duration(&mut w, e.duration_ms);
        w.u16(f.priority)
            .u16(f.idle_timeout)
            .u16(f.hard_timeout)
            .zeros(6);
        w.u64(f.cookie).u64(e.n_packets).u64(e.n_bytes);
    } else {
        duration(&mut w, e.duration_ms);
        w.u16(f.priority).u16(f.idle_timeout).u16(f.hard_timeout);
        w.u16(u16::from(f.send_flow_rem)).zeros(4);
        w.u64(f.cookie).u64(e.n_packets).u64(e.n_bytes);
        encode_oxm_match(&mut w, &f.m);
    }
    actions::encode(v, &mut w, &f.actions, &f.m);
    let n = w.len() as u16;
    w.put_u16(0, n);
    w.buf
}

/// An OpenFlow 1.3 `ofp_match`.
pub fn encode_oxm_match(w: &mut Writer, m: &crate::flow::Match) {
    let start = w.len();
    w.u16(1).u16(0);
    let n = ofmatch::encode_tlv(w, Tlv::Oxm, m);
    w.put_u16(start + 2, (n + 4) as u16);
    w.pad8_from(start);
}

/// NXST_FLOW reply entry.
fn nx_flow_stats(e: &FlowEntry) -> Vec<u8> {
    let f = &e.flow;
    let mut m = Writer::default();
    let mlen = ofmatch::encode_tlv(&mut m, Tlv::Nxm, &f.m);
    let mut w = Writer::default();
    w.u16(0).u8(f.table).u8(0);
    duration(&mut w, e.duration_ms);
    w.u16(f.priority).u16(f.idle_timeout).u16(f.hard_timeout);
    let idle_age = u16::try_from(e.idle_age_s + 1).unwrap_or(u16::MAX);
    w.u16(mlen as u16).u16(idle_age).u16(0);
    w.u64(f.cookie).u64(e.n_packets).u64(e.n_bytes);
    let at = w.len();
    w.bytes(&m.buf).pad8_from(at);
    actions::encode10_in(&mut w, &f.actions, f.m.nw_proto);
    let n = w.len() as u16;
    w.put_u16(0, n);
    w.buf
}

fn desc(sw: &dyn Switch) -> Vec<u8> {
    let mut w = Writer::default();
    w.str_field("uvs", 256);
    w.str_field("uvs userspace virtual switch", 256);
    w.str_field(env!("CARGO_PKG_VERSION"), 256);
    w.str_field("None", 32);
    w.str_field(sw.bridge(), 256);
    w.buf
}

/// OXM headers (class 0x8000, field, length) of the fields uvs matches (OFPMP_TABLE_FEATURES).
const MATCH_FIELDS: &[(u8, u8)] = &[
    (0, 4),
    (3, 6),
    (4, 6),
    (5, 2),
    (6, 2),
    (7, 1),
    (8, 1),
    (10, 1),
    (11, 4),
    (12, 4),
    (13, 2),
    (14, 2),
    (15, 2),
    (16, 2),
    (19, 1),
    (20, 1),
    (21, 2),
    (22, 4),
    (23, 4),
];
/// The fields `set_field` writes.
const SET_FIELDS: &[(u8, u8)] = &[
    (3, 6),
    (4, 6),
    (6, 2),
    (7, 1),
    (8, 1),
    (11, 4),
    (12, 4),
    (13, 2),
    (14, 2),
    (15, 2),
    (16, 2),
];

fn prop(w: &mut Writer, typ: u16, body: impl FnOnce(&mut Writer)) {
    let start = w.len();
    w.u16(typ).u16(0);
    body(w);
    let n = (w.len() - start) as u16;
    w.put_u16(start + 2, n);
    w.pad8_from(start);
}

fn oxm_list(w: &mut Writer, list: &[(u8, u8)]) {
    for &(f, len) in list {
        w.u16(0x8000).u8(f << 1).u8(len);
    }
}

/// OFPMP_TABLE_FEATURES reply entries: every table with the properties OVS requires.
fn table_features() -> Vec<Vec<u8>> {
    (0..N_TABLES)
        .map(|t| {
            let mut w = Writer::default();
            w.u16(0).u8(t).zeros(5);
            w.str_field(&format!("table{t}"), 32);
            w.u64(0).u64(0).u32(0).u32(1_000_000);
            // INSTRUCTIONS: GOTO_TABLE, APPLY_ACTIONS, CLEAR_ACTIONS, METER.
            prop(&mut w, 0, |w| {
                for i in [1u16, 4, 5, 6] {
                    w.u16(i).u16(4);
                }
            });
            prop(&mut w, 2, |w| {
                for n in t.saturating_add(1)..N_TABLES {
                    w.u8(n);
                }
            });
            prop(&mut w, 4, |_| {});
            // APPLY_ACTIONS: OUTPUT, PUSH_VLAN, POP_VLAN, DEC_NW_TTL, SET_FIELD.
            prop(&mut w, 6, |w| {
                for a in [0u16, 17, 18, 24, 25] {
                    w.u16(a).u16(4);
                }
            });
            prop(&mut w, 8, |w| oxm_list(w, MATCH_FIELDS));
            prop(&mut w, 10, |w| oxm_list(w, MATCH_FIELDS));
            prop(&mut w, 12, |_| {});
            prop(&mut w, 14, |w| oxm_list(w, SET_FIELDS));
            let n = w.len() as u16;
            w.put_u16(0, n);
            w.buf
        })
        .collect()
}

fn table_stats(v: u8, sw: &dyn Switch) -> OfResult<Vec<Vec<u8>>> {
    let rows = sw.dump_flows(&any_flow()).map_err(|e| sw_err(sw, e))?;
    let max = rows.iter().map(|e| e.flow.table).max().unwrap_or(0);
    Ok((0..=max)
        .map(|t| {
            let active = rows.iter().filter(|e| e.flow.table == t).count() as u32;
            let matched: u64 = rows
                .iter()
                .filter(|e| e.flow.table == t)
                .map(|e| e.n_packets)
                .sum();
            let mut w = Writer::default();
            w.u8(t).zeros(3);
            if v == OF10 {
                let name = if t == 0 {
                    "classifier".to_string()
                } else {
                    format!("table{t}")
                };
                w.str_field(&name, 32).u32((1 << 22) - 1).u32(1_000_000);
            }
            w.u32(active).u64(matched).u64(matched);
            w.buf
        })
        .collect())
}

fn port_stats(v: u8, p: u32, sw: &dyn Switch) -> OfResult<Vec<Vec<u8>>> {
    let all = sw.port_stats().map_err(|e| sw_err(sw, e))?;
    let any = p == port::NONE;
    if !any && !all.iter().any(|c| u32::from(c.ofport) == p) {
        return Err(OfErr::BadPort);
    }
    Ok(all
        .iter()
        .filter(|c| any || u32::from(c.ofport) == p)
        .map(|c| {
            let mut w = Writer::default();
            if v == OF10 {
                w.u16(c.ofport).zeros(6);
            } else {
                w.u32(super::actions::port_to13(u32::from(c.ofport)))
                    .zeros(4);
            }
            w.u64(c.rx_packets)
                .u64(c.tx_packets)
                .u64(c.rx_bytes)
                .u64(c.tx_bytes);
            w.u64(c.rx_dropped).u64(c.tx_dropped);
            // rx/tx errors, frame, overrun, crc errors, collisions: uvs counts none of these.
            w.zeros(6 * 8);
            if v != OF10 {
                let ms = c.duration_ms;
                w.u32((ms / 1000) as u32)
                    .u32((ms % 1000) as u32 * 1_000_000);
            }
            w.buf
        })
        .collect())
}
