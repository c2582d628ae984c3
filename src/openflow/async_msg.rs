//! The messages a switch sends unasked: PACKET_IN, FLOW_REMOVED and PORT_STATUS, encoded from
//! the worker's events (`crate::events`) for one connection's negotiated version.
//!
//! Contract:
//! - OpenFlow 1.0: OFPT_PACKET_IN, OFPT_FLOW_REMOVED (Nicira NXT_FLOW_REMOVED when the
//!   connection chose the NXM flow format), OFPT_PORT_STATUS. OpenFlow 1.3: the same types
//!   with OXM matches (a PACKET_IN's match holds `in_port` and, on tunnel ports, `tunnel_id`).
//! - Nothing is buffered: every PACKET_IN has buffer_id OFP_NO_BUFFER and carries the frame
//!   (a PACKET_OUT or FLOW_MOD naming a buffer gets OFPBRC_BUFFER_UNKNOWN).
//! - A packet sent by a table-miss flow (priority 0, empty match) is reported as OVS reports an
//!   explicit miss: reason `no_match` on OpenFlow 1.3, `action` on 1.0; its data is cut to the
//!   connection's miss_send_len (OFPT_SET_CONFIG, default 128). Other packets are cut to the
//!   action's max_len only.
//! - Asynchronous messages have xid 0. OpenFlow 1.3's role and async config (OFPT_ROLE_REQUEST,
//!   OFPT_SET_ASYNC) choose which a connection gets; the defaults pass everything but
//!   invalid-TTL packet-ins, and a slave gets port status only.

use super::codec::{NX_VENDOR, OF10, Writer, finish, start};
use super::ofmatch::{self, Tlv};
use super::stats::{encode_oxm_match, phy_port10, port13};
use crate::events::{Event, FlowRemoved, PacketIn, PortStatus};
use crate::flow::{REASON_ACTION, REASON_NO_MATCH};

/// OFP_NO_BUFFER.
pub const NO_BUFFER: u32 = u32::MAX;
const PACKET_IN: u8 = 10;
const FLOW_REMOVED: u8 = 11;
const PORT_STATUS: u8 = 12;

/// What a connection negotiated that changes how events are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prefs {
    /// The version (0: not negotiated yet; nothing is sent).
    pub version: u8,
    /// NXT_SET_FLOW_FORMAT chose NXM (OpenFlow 1.0: NXT_FLOW_REMOVED).
    pub nxm: bool,
    /// OFPT_SET_CONFIG's miss_send_len.
    pub miss_send_len: u16,
    /// OpenFlow 1.3 role (3: slave).
    pub role: u32,
    /// OpenFlow 1.3 async config (see `Session::async_masks`).
    pub async_masks: [u32; 6],
}

impl Prefs {
    /// A connection of `version` with the defaults.
    pub fn new(version: u8) -> Prefs {
        Prefs {
            version,
            nxm: false,
            miss_send_len: 128,
            role: 1,
            async_masks: super::session::DEFAULT_ASYNC,
        }
    }

    /// The async config lets through a message of kind `k` (0 packet-in, 1 port status,
    /// 2 flow removed) with `reason`.
    fn wants(&self, k: usize, reason: u8) -> bool {
        let slave = usize::from(self.role == 3);
        reason < 32 && self.async_masks[2 * k + slave] & (1 << reason) != 0
    }
}

/// The message for event `e` on a connection with `p`, if it takes one.
pub fn encode(e: &Event, p: &Prefs) -> Option<Vec<u8>> {
    if p.version == 0 {
        return None;
    }
    match e {
        Event::PacketIn(pi) => {
            let reason = if pi.table_miss && p.version != OF10 && pi.reason == REASON_ACTION {
                REASON_NO_MATCH
            } else {
                pi.reason
            };
            p.wants(0, reason).then(|| packet_in(pi, p))
        }
        Event::FlowRemoved(fr) => p.wants(2, fr.reason).then(|| flow_removed(fr, p)),
        Event::PortStatus(ps) => p.wants(1, ps.reason).then(|| port_status(ps, p.version)),
    }
}

fn packet_in(pi: &PacketIn, p: &Prefs) -> Vec<u8> {
    let mut data: &[u8] = &pi.data;
    let mut reason = pi.reason;
    if pi.table_miss {
        data = &data[..data.len().min(usize::from(p.miss_send_len))];
        if reason == REASON_ACTION && p.version != OF10 {
            reason = REASON_NO_MATCH;
        }
    }
    let mut w = start(p.version, PACKET_IN, 0);
    w.u32(NO_BUFFER).u16(pi.total_len);
    if p.version == OF10 {
        w.u16(pi.in_port).u8(reason).u8(0);
    } else {
        w.u8(reason).u8(pi.table).u64(pi.cookie);
        let at = w.len();
        w.u16(1).u16(0);
        // OXM in_port (class 0x8000, field 0, 4 bytes).
        w.u32(0x8000_0004)
            .u32(super::actions::port_to13(u32::from(pi.in_port)));
        if pi.tun_id != 0 {
            // OXM tunnel_id (field 38, 8 bytes).
            w.u32(0x8000_4c08).u64(pi.tun_id);
        }
        let n = (w.len() - at) as u16;
        w.put_u16(at + 2, n);
        w.pad8_from(at);
        w.zeros(2);
    }
    // A message's length is 16 bits: a super-frame (TSO) is cut to what fits.
    let room = usize::from(u16::MAX) - w.len();
    w.bytes(&data[..data.len().min(room)]);
    finish(w)
}

fn duration(w: &mut Writer, ms: u64) {
    w.u32((ms / 1000) as u32)
        .u32(((ms % 1000) * 1_000_000) as u32);
}

fn flow_removed(fr: &FlowRemoved, p: &Prefs) -> Vec<u8> {
    let f = &fr.flow;
    if p.version != OF10 {
        let mut w = start(p.version, FLOW_REMOVED, 0);
        w.u64(f.cookie).u16(f.priority).u8(fr.reason).u8(f.table);
        duration(&mut w, fr.duration_ms);
        w.u16(f.idle_timeout).u16(f.hard_timeout);
        w.u64(fr.packets).u64(fr.bytes);
        encode_oxm_match(&mut w, &f.m);
        return finish(w);
    }
    if p.nxm {
        // NXT_FLOW_REMOVED (subtype 14); its table_id is the table + 1 (0: unknown).
        let mut m = Writer::default();
        let mlen = ofmatch::encode_tlv(&mut m, Tlv::Nxm, &f.m);
        let mut w = start(OF10, 4, 0);
        w.u32(NX_VENDOR).u32(14);
        w.u64(f.cookie)
            .u16(f.priority)
            .u8(fr.reason)
            .u8(f.table.wrapping_add(1));
        duration(&mut w, fr.duration_ms);
        w.u16(f.idle_timeout).u16(mlen as u16);
        w.u64(fr.packets).u64(fr.bytes);
        let at = w.len();
        w.bytes(&m.buf).pad8_from(at);
        return finish(w);
    }
    let mut w = start(OF10, FLOW_REMOVED, 0);
    ofmatch::encode_of10(&mut w, &f.m);
    w.u64(f.cookie).u16(f.priority).u8(fr.reason).u8(0);
    duration(&mut w, fr.duration_ms);
    w.u16(f.idle_timeout).zeros(2);
    w.u64(fr.packets).u64(fr.bytes);
    finish(w)
}

fn port_status(ps: &PortStatus, version: u8) -> Vec<u8> {
    let mut w = start(version, PORT_STATUS, 0);
    w.u8(ps.reason).zeros(7);
    if version == OF10 {
        phy_port10(&mut w, &ps.port);
    } else {
        port13(&mut w, &ps.port);
    }
    finish(w)
}
