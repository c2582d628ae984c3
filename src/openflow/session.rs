//! One OpenFlow connection's protocol state: version negotiation and message dispatch.
//!
//! Contract: `Session::hello` is the first message to send; `Session::handle` takes one whole
//! message (header included) and returns the replies and whether the connection must close. It
//! never panics on any input (`uvs::fuzzing::openflow`, cargo fuzz target `openflow`). Every
//! reply is one whole OpenFlow message of the negotiated version. Errors keep the connection
//! except a header length below 8 (the stream cannot be resynchronised) and a failed HELLO.

use super::codec::{
    self, HEADER_LEN, Header, NX_VENDOR, OF10, OF13, OfErr, OfResult, Reader, error_msg, finish,
    start,
};
use super::roles::{self, Roles};
use super::{Switch, actions, flowmod, stats};
use crate::flow::EntryWrite;

/// The versions uvs speaks, as a HELLO bitmap (bits 1 and 4).
const BITMAP: u32 = (1 << OF10) | (1 << OF13);

/// Message types shared by 1.0 and 1.3.
const HELLO: u8 = 0;
const ERROR: u8 = 1;
const ECHO_REQUEST: u8 = 2;
const ECHO_REPLY: u8 = 3;
const VENDOR: u8 = 4;
const FEATURES_REQUEST: u8 = 5;
const GET_CONFIG_REQUEST: u8 = 7;
const SET_CONFIG: u8 = 9;
const PACKET_OUT: u8 = 13;
const FLOW_MOD: u8 = 14;

/// One connection's state.
#[derive(Debug, Clone)]
pub struct Session {
    /// The negotiated version (None until the peer's HELLO).
    pub version: Option<u8>,
    /// NXT_SET_FLOW_FORMAT chose NXM (affects nothing uvs sends unasked).
    pub nxm: bool,
    /// NXT_FLOW_MOD_TABLE_ID: the high byte of an OpenFlow 1.0 flow_mod command is a table.
    pub table_id_ext: bool,
    /// OFPT_SET_CONFIG flags.
    pub config_flags: u16,
    /// OFPT_SET_CONFIG miss_send_len.
    pub miss_send_len: u16,
    /// OpenFlow 1.3 role asked for (OFPCR_ROLE_*: 1 equal, 2 master, 3 slave); see
    /// [`Session::current_role`] for the one it has.
    pub role: u32,
    /// The bridge's roles shared with its other connections, and this connection's id there
    /// (None: a connection on its own, e.g. tests and the fuzzer).
    pub roles: Option<(std::sync::Arc<Roles>, u64)>,
    /// OpenFlow 1.3 async config: packet-in, port-status, flow-removed masks, each for
    /// (master/equal, slave), as OFPT_SET_ASYNC carries them.
    pub async_masks: [u32; 6],
    /// The ports a PACKET_OUT to FLOOD or ALL went to, and when they were read: a learning
    /// switch controller floods every packet it cannot place, and reading the bridge's ports
    /// asks the worker for its whole `show` (see [`FLOOD_PORTS_FOR`]).
    flood_ports: Option<(std::time::Instant, Vec<(u16, u32)>)>,
}

/// How long a session floods PACKET_OUTs to the ports it read (a port added since waits that
/// long for its first controller flood).
pub const FLOOD_PORTS_FOR: std::time::Duration = std::time::Duration::from_millis(100);

/// OpenFlow 1.3's default async config (packet-in no_match|action, every port status, every
/// flow removed for master/equal; only port status for slaves).
pub const DEFAULT_ASYNC: [u32; 6] = [0x3, 0, 0x7, 0x7, 0xf, 0];

impl Default for Session {
    fn default() -> Self {
        Session {
            version: None,
            nxm: false,
            table_id_ext: false,
            config_flags: 0,
            miss_send_len: 128,
            role: 1,
            roles: None,
            async_masks: DEFAULT_ASYNC,
            flood_ports: None,
        }
    }
}

/// What `handle` returns: messages to send, and whether to close afterwards.
pub type Outcome = (Vec<Vec<u8>>, bool);

impl Session {
    /// A session that shares `roles` with the bridge's other connections.
    pub fn with_roles(roles: std::sync::Arc<Roles>) -> Self {
        let id = roles.register();
        Session {
            roles: Some((roles, id)),
            ..Session::default()
        }
    }

    /// The role this connection has: the one it asked for, except a MASTER that another
    /// connection has replaced since, which is a SLAVE.
    pub fn current_role(&self) -> u32 {
        match &self.roles {
            Some((t, id)) => t.effective(*id, self.role),
            None => self.role,
        }
    }

    /// The connection closes: it gives up mastership.
    pub fn close(&self) {
        if let Some((t, id)) = &self.roles {
            t.leave(*id);
        }
    }

    /// Our HELLO: version 1.3 with a bitmap of 1.0 and 1.3.
    pub fn hello() -> Vec<u8> {
        let mut w = start(OF13, HELLO, 0);
        w.u16(1).u16(8).u32(BITMAP);
        finish(w)
    }

    /// An ECHO_REQUEST of `version` (the listener's inactivity probe; any reply is activity).
    pub fn echo_request(version: u8) -> Vec<u8> {
        finish(start(version, ECHO_REQUEST, 0))
    }

    /// Handle one message. A header length below 8 (or fewer than 8 bytes) breaks the framing:
    /// OFPBRC_BAD_LEN and close. A header length that is not the message's length, or a message
    /// shorter than its type's fixed part (longer, for fixed-size types): OFPBRC_BAD_LEN, and
    /// the connection goes on.
    pub fn handle(&mut self, msg: &[u8], sw: &dyn Switch) -> Outcome {
        let Some(h) = Header::parse(msg).filter(|h| usize::from(h.length) >= HEADER_LEN) else {
            let v = self.version.unwrap_or_else(|| reply_version(msg.first()));
            let xid = Header::parse(msg).map_or(0, |h| h.xid);
            return (vec![error_msg(v, xid, OfErr::BadLen, msg)], true);
        };
        if usize::from(h.length) != msg.len() {
            // Before HELLO there is no version to go on with: close.
            let v = self.version.unwrap_or_else(|| reply_version(msg.first()));
            let e = error_msg(v, h.xid, OfErr::BadLen, msg);
            return (vec![e], self.version.is_none());
        }
        let Some(v) = self.version else {
            return self.negotiate(h, msg);
        };
        if h.version != v {
            return (vec![error_msg(v, h.xid, OfErr::BadVersion, msg)], false);
        }
        if !fixed_part_fits(v, h.typ, msg.len()) {
            return (vec![error_msg(v, h.xid, OfErr::BadLen, msg)], false);
        }
        match self.dispatch(h, msg, sw) {
            Ok(out) => (out, false),
            Err(e) => (vec![error_msg(v, h.xid, e, msg)], false),
        }
    }

    fn negotiate(&mut self, h: Header, msg: &[u8]) -> Outcome {
        if h.typ != HELLO {
            let v = h.version.clamp(OF10, OF13);
            return (vec![hello_failed(v, h.xid, "expected HELLO first")], true);
        }
        let theirs = hello_bitmap(&msg[HEADER_LEN..]);
        let common = match theirs {
            Some(b) => b & BITMAP,
            None => match h.version {
                OF10 => 1 << OF10,
                v if v >= OF13 => 1 << OF13,
                _ => 0,
            },
        };
        if common == 0 {
            let v = h.version.clamp(OF10, OF13);
            let why = format!(
                "we support versions 0x01 and 0x04, peer sent 0x{:02x}",
                h.version
            );
            return (vec![hello_failed(v, h.xid, &why)], true);
        }
        let v = 31 - common.leading_zeros() as u8;
        tracing::debug!("openflow: negotiated version 0x{v:02x}");
        self.version = Some(v);
        (Vec::new(), false)
    }

    fn dispatch(&mut self, h: Header, msg: &[u8], sw: &dyn Switch) -> OfResult<Vec<Vec<u8>>> {
        let v = h.version;
        let body = Reader::new(&msg[HEADER_LEN..]);
        if v == OF13
            && changes_the_switch(h.typ, &msg[HEADER_LEN..])
            && self.current_role() == roles::SLAVE
        {
            return Err(OfErr::IsSlave);
        }
        let one = |m: Vec<u8>| Ok(vec![m]);
        match (v, h.typ) {
            (_, HELLO) | (_, ERROR) | (_, ECHO_REPLY) => Ok(Vec::new()),
            (_, ECHO_REQUEST) => {
                let mut w = start(v, ECHO_REPLY, h.xid);
                w.bytes(&msg[HEADER_LEN..]);
                one(finish(w))
            }
            (_, VENDOR) => self.vendor(h, body, sw),
            (_, FEATURES_REQUEST) => one(stats::features_reply(v, h.xid, sw)?),
            (_, GET_CONFIG_REQUEST) => {
                let mut w = start(v, GET_CONFIG_REQUEST + 1, h.xid);
                w.u16(self.config_flags).u16(self.miss_send_len);
                one(finish(w))
            }
            (_, SET_CONFIG) => {
                let mut r = body;
                self.config_flags = r.u16()?;
                self.miss_send_len = r.u16()?;
                Ok(Vec::new())
            }
            (_, FLOW_MOD) => {
                let fm = flowmod::decode(v, self.table_id_ext, body)?;
                flowmod::apply(v, &fm, sw)?;
                Ok(Vec::new())
            }
            (OF10, 16) | (OF13, 18) => stats::request(v, h.xid, body, sw),
            (OF10, 18) | (OF13, 20) => one(finish(start(v, h.typ + 1, h.xid))),
            (_, PACKET_OUT) => {
                packet_out(v, body, sw, &mut self.flood_ports)?;
                Ok(Vec::new())
            }
            (OF13, 29) => {
                meter_mod(body, sw)?;
                Ok(Vec::new())
            }
            (OF13, 15) => {
                super::groups::group_mod(body, sw)?;
                Ok(Vec::new())
            }
            (OF10, 15) | (OF13, 16) => {
                port_mod(v, body, sw)?;
                Ok(Vec::new())
            }
            (OF13, 24) => one(self.role_request(h.xid, body)?),
            (OF13, 26) => {
                let mut w = start(v, 27, h.xid);
                for m in self.async_masks {
                    w.u32(m);
                }
                one(finish(w))
            }
            (OF13, 28) => {
                let mut r = body;
                let mut masks = [0u32; 6];
                for m in &mut masks {
                    *m = r.u32()?;
                }
                self.async_masks = masks;
                Ok(Vec::new())
            }
            _ => Err(OfErr::BadType),
        }
    }

    /// OFPT_ROLE_REQUEST: take the role asked for (NOCHANGE keeps it) and say which it has.
    /// MASTER demotes the bridge's other master; a MASTER or SLAVE request with a generation
    /// id older than the newest seen on the bridge is refused (OFPRRFC_STALE), see `roles`.
    fn role_request(&mut self, xid: u32, mut r: Reader<'_>) -> OfResult<Vec<u8>> {
        let role = r.u32()?;
        r.skip(4)?;
        let generation = r.u64()?;
        if role > roles::SLAVE {
            return Err(OfErr::BadRole);
        }
        if role != roles::NOCHANGE {
            if let Some((t, id)) = &self.roles {
                t.request(*id, role, generation)
                    .map_err(|_| OfErr::RoleStale)?;
            }
            self.role = role;
        }
        let mut w = start(OF13, 25, xid);
        w.u32(self.current_role()).zeros(4).u64(generation);
        Ok(finish(w))
    }

    /// Nicira vendor (1.0) / experimenter (1.3) messages.
    fn vendor(&mut self, h: Header, mut r: Reader<'_>, sw: &dyn Switch) -> OfResult<Vec<Vec<u8>>> {
        if r.u32()? != NX_VENDOR {
            return Err(OfErr::BadVendor);
        }
        match r.u32()? {
            // NXT_SET_FLOW_FORMAT: 0 = OpenFlow 1.0, 2 = NXM.
            12 => match r.u32()? {
                0 => self.nxm = false,
                2 => self.nxm = true,
                _ => return Err(OfErr::Eperm),
            },
            // NXT_FLOW_MOD.
            13 => {
                let fm = flowmod::decode_nx(self.table_id_ext, r)?;
                flowmod::apply(h.version, &fm, sw)?;
            }
            // NXT_FLOW_MOD_TABLE_ID.
            15 => self.table_id_ext = r.u8()? != 0,
            // NXT_SET_PACKET_IN_FORMAT: only the standard format (0); NXT_PACKET_IN(2) are
            // refused, so clients such as `ovs-ofctl monitor` fall back to OFPT_PACKET_IN.
            16 => {
                if r.u32()? != 0 {
                    return Err(OfErr::Eperm);
                }
            }
            // NXT_SET_CONTROLLER_ID: accepted (one controller id).
            20 => {}
            _ => return Err(OfErr::BadSubtype),
        }
        Ok(Vec::new())
    }
}

/// OFPT_PORT_MOD: a port's configuration bits (`ovs-ofctl mod-port`; see `port_admin`). The
/// hardware address must be the one PORT_DESC gives the port (`port_mac`), as OVS checks; the
/// advertised features are ignored (uvs has no PHY to tell).
fn port_mod(v: u8, mut r: Reader<'_>, sw: &dyn Switch) -> OfResult<()> {
    let port = if v == OF10 {
        u32::from(r.u16()?)
    } else {
        let p = actions::port_from13(r.u32()?);
        r.skip(4)?;
        p
    };
    let hw = r.mac()?;
    if v != OF10 {
        r.skip(2)?;
    }
    let (config, mask) = (r.u32()?, r.u32()?);
    let ports = sw.ports().map_err(|_| OfErr::PortModBadPort)?;
    let p = ports
        .iter()
        .find(|p| u32::from(p.ofport) == port)
        .ok_or(OfErr::PortModBadPort)?;
    if p.mac != 0 && p.mac != hw {
        return Err(OfErr::PortModBadHwAddr);
    }
    // 1.3 has no NO_FLOOD bit: a reserved one there, ignored as OVS ignores it.
    let mask = match v {
        OF10 => mask,
        _ => mask & !crate::port_admin::NO_FLOOD,
    };
    if mask & !crate::port_admin::SUPPORTED != 0 {
        return Err(OfErr::PortModBadConfig);
    }
    sw.mod_port(p.ofport, config, mask).map_err(|e| {
        tracing::debug!("openflow {}: port-mod: {e}", sw.bridge());
        OfErr::PortModBadConfig
    })
}

/// OFPT_PACKET_OUT: a frame (no buffer ids: uvs buffers nothing) sent out of the ports its
/// output actions name; other actions are refused (BadActionType / BadOutPort).
fn packet_out(
    v: u8,
    mut r: Reader<'_>,
    sw: &dyn Switch,
    cache: &mut Option<(std::time::Instant, Vec<(u16, u32)>)>,
) -> OfResult<()> {
    let buffer = r.u32()?;
    let in_port = if v == OF10 {
        u32::from(r.u16()?)
    } else {
        actions::port_from13(r.u32()?)
    };
    let alen = usize::from(r.u16()?);
    if v != OF10 {
        r.skip(6)?;
    }
    let acts = r.bytes(alen)?;
    let acts = if v == OF10 {
        actions::decode10(Reader::new(acts))?
    } else {
        actions::decode13_actions(Reader::new(acts))?
    };
    if buffer != u32::MAX {
        return Err(OfErr::BufferUnknown);
    }
    let frame = r.rest();
    if frame.len() < 14 {
        return Err(OfErr::BadLen);
    }
    // FLOOD and ALL: every port but the in_port (FLOOD not those set no-flood), as OVS sends a
    // controller's flood (a learning-switch controller floods a packet-in it cannot place).
    let mut floods = |all: bool| -> OfResult<Vec<u16>> {
        let fresh = cache
            .as_ref()
            .is_some_and(|(at, _)| at.elapsed() < FLOOD_PORTS_FOR);
        if !fresh {
            let ports = sw.ports().map_err(|_| OfErr::BadOutPort)?;
            let list = ports.iter().map(|p| (p.ofport, p.config)).collect();
            *cache = Some((std::time::Instant::now(), list));
        }
        let ports = cache.as_ref().map_or(&[][..], |(_, l)| l.as_slice());
        Ok(ports
            .iter()
            .filter(|(n, _)| u32::from(*n) != in_port)
            .filter(|(_, c)| all || c & crate::port_admin::NO_FLOOD == 0)
            .map(|(n, _)| *n)
            .collect())
    };
    // As a switch does (and OVS): an output to the packet's own in_port is skipped; only
    // `output:IN_PORT` sends it back there. Outputs in the actions' order.
    let mut outputs = Vec::new();
    for a in &acts {
        match a {
            crate::flow::Action::Flood => outputs.extend(floods(false)?),
            crate::flow::Action::All => outputs.extend(floods(true)?),
            crate::flow::Action::Output(p) if u32::from(p.num()) == in_port => {}
            crate::flow::Action::Output(p) => outputs.push(p.num()),
            // OFPP_MAX (0xff00): numbers below it are ports.
            crate::flow::Action::InPort
                if in_port < 0xff00 || in_port == u32::from(crate::ofport::OFPP_LOCAL) =>
            {
                outputs.push(in_port as u16)
            }
            crate::flow::Action::InPort | crate::flow::Action::Controller(_) => {
                return Err(OfErr::BadOutPort);
            }
            _ => return Err(OfErr::BadActionType),
        }
    }
    if outputs.is_empty() {
        // Nothing left to send (no action, or only the in_port): done, as OVS takes it.
        return Ok(());
    }
    sw.packet_out(&outputs, frame).map_err(|e| {
        tracing::debug!("openflow {}: packet-out: {e}", sw.bridge());
        OfErr::BadOutPort
    })
}

/// OFPT_METER_MOD: ADD and MODIFY of a kbps meter with one drop band become `add-meter` and
/// `mod-meter` (ADD of an existing id: METER_EXISTS, MODIFY of a missing one: UNKNOWN_METER, as
/// OVS); DELETE (of one meter, or `OFPM_ALL`) `del-meters`, which removes the flows that use them.
fn meter_mod(mut r: Reader<'_>, sw: &dyn Switch) -> OfResult<()> {
    let cmd = r.u16()?;
    let flags = r.u16()?;
    let id = r.u32()?;
    if cmd == 2 {
        let which = (id != 0xffff_ffff).then_some(id);
        return sw.del_meters(which).map_err(|e| {
            tracing::warn!("openflow {}: meter delete: {e}", sw.bridge());
            OfErr::MeterFailed
        });
    }
    if cmd > 2 {
        return Err(OfErr::MeterBadCommand);
    }
    // OFPMF_KBPS required; PKTPS unsupported; BURST and STATS are fine.
    if flags & 1 == 0 || flags & 2 != 0 {
        return Err(OfErr::MeterBadFlags);
    }
    let typ = r.u16()?;
    let len = r.u16()?;
    let rate = r.u32()?;
    let burst = r.u32()?;
    r.skip(4)?;
    if typ != 1 || len != 16 || r.left() != 0 {
        return Err(OfErr::MeterBadBand);
    }
    let mut spec = format!("meter={id},kbps,band=type=drop,rate={rate}");
    if flags & 4 != 0 {
        spec.push_str(&format!(",burst_size={burst}"));
    }
    let write = if cmd == 0 {
        EntryWrite::Add
    } else {
        EntryWrite::Modify
    };
    let exists = sw
        .meters()
        .map_err(|e| {
            tracing::warn!("openflow {}: meters: {e}", sw.bridge());
            OfErr::MeterFailed
        })?
        .iter()
        .any(|m| m.id == id);
    match (write, exists) {
        (EntryWrite::Add, true) => return Err(OfErr::MeterExists),
        (EntryWrite::Modify, false) => return Err(OfErr::MeterUnknown),
        _ => {}
    }
    sw.add_meter(&spec, write).map_err(|e| {
        tracing::warn!("openflow {}: meter: {e}", sw.bridge());
        OfErr::MeterFailed
    })
}

/// Does a message of type `typ` (1.3) with body `body` change the switch (flows, groups,
/// meters, ports, tables, or a packet sent)? A slave may not send those (OFPBRC_IS_SLAVE).
fn changes_the_switch(typ: u8, body: &[u8]) -> bool {
    match typ {
        PACKET_OUT | FLOW_MOD => true,
        // GROUP_MOD, PORT_MOD, TABLE_MOD, METER_MOD.
        15..=17 | 29 => true,
        // NXT_FLOW_MOD.
        VENDOR => body.len() >= 8 && body[..8] == [0x00, 0x00, 0x23, 0x20, 0, 0, 0, 13],
        _ => false,
    }
}

/// The version to answer a peer with before negotiation: 1.3 for 1.3 and later, else 1.0.
fn reply_version(peer: Option<&u8>) -> u8 {
    match peer {
        Some(&v) if v >= OF13 => OF13,
        _ => OF10,
    }
}

/// Does a message of `len` bytes hold type `typ`'s fixed part (OVS's `ofpraw` minimum; exactly
/// it for the fixed-size types)? Types uvs does not handle pass, to be refused as BAD_TYPE.
pub(crate) fn fixed_part_fits(v: u8, typ: u8, len: usize) -> bool {
    let (min, exact) = match (v, typ) {
        (_, HELLO | ERROR | ECHO_REQUEST | ECHO_REPLY) => (HEADER_LEN, false),
        (OF10, VENDOR) => (12, false),
        (_, VENDOR) => (16, false),
        (_, FEATURES_REQUEST | GET_CONFIG_REQUEST) => (HEADER_LEN, true),
        (_, SET_CONFIG) => (12, true),
        (OF10, PACKET_OUT) => (16, false),
        (_, PACKET_OUT) => (24, false),
        (OF10, FLOW_MOD) => (72, false),
        (_, FLOW_MOD) => (56, false),
        (OF10, 16) => (12, false),
        (OF13, 18) => (16, false),
        (OF10, 18) | (OF13, 20) | (OF13, 26) => (HEADER_LEN, true),
        (OF13, 15 | 29) => (16, false),
        (OF10, 15) => (32, true),
        (OF13, 16) => (40, true),
        (OF13, 24) => (24, true),
        (OF13, 28) => (32, true),
        _ => (HEADER_LEN, false),
    };
    len >= min && (!exact || len == min)
}

/// The version bitmap of a HELLO body (None: no bitmap element).
fn hello_bitmap(body: &[u8]) -> Option<u32> {
    let mut r = Reader::new(body);
    while r.left() >= 4 {
        let typ = r.u16().ok()?;
        let len = usize::from(r.u16().ok()?);
        if len < 4 {
            return None;
        }
        let b = r.bytes(len - 4).ok()?;
        if typ == 1 && b.len() >= 4 {
            return Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
        }
        r.skip((8 - len % 8) % 8).ok()?;
    }
    None
}

fn hello_failed(v: u8, xid: u32, why: &str) -> Vec<u8> {
    let mut w = start(v, ERROR, xid);
    let (t, c) = OfErr::HelloIncompatible.code(v);
    w.u16(t).u16(c).bytes(why.as_bytes());
    codec::finish(w)
}
