//! The OpenFlow fuzz entry point: arbitrary bytes on one OpenFlow connection, served by the
//! real framing loop (`listener::serve_connection`) and `Session`, against an in-memory bridge
//! that keeps its flows in a real `Classifier`.
//!
//! Contract (what a finding violates):
//! - no input panics;
//! - the switch's output is a sequence of whole OpenFlow messages (header length == bytes), our
//!   HELLO first, then replies of one version (1.0 or 1.3; errors before negotiation may carry
//!   the peer's version clamped to 1..=4), each answering the request just read, with its xid;
//! - replies parse back: an OFPT_ERROR carries a (type, code) uvs defines for that version and
//!   echoes the request's first 64 bytes; an echo reply echoes the body; stats / multipart
//!   replies are tiled by their entries, and flow entries' matches and actions decode again;
//! - the connection closes early only after HELLO_FAILED or a header length below 8.

use std::cell::{Cell, RefCell};
use std::io::{Read, Write};

use crate::flow::group::parse_group;
use crate::flow::{Classifier, Flow, FlowFilter, PortRef};
use crate::openflow::codec::{HEADER_LEN, Header, NX_VENDOR, OF10, OF13, OfErr, Reader};
use crate::openflow::flowmod::decode_oxm_match;
use crate::openflow::ofmatch::{self, Tlv};
use crate::openflow::{FlowEntry, PortCounters, PortInfo, Session, Switch, actions, listener};

/// Flows the stand-in bridge holds before it refuses more.
const MAX_FLOWS: usize = 128;
/// Groups it holds before it refuses more.
const MAX_GROUPS: usize = 16;
/// Its ports.
const PORTS: [u16; 3] = [1, 2, 3];

/// An in-memory bridge: flows in a real classifier, groups as `add-group` text.
#[derive(Default)]
struct Bridge {
    flows: RefCell<Classifier>,
    now: Cell<u64>,
    groups: RefCell<Vec<(u32, String)>>,
}

fn resolve(p: &PortRef) -> Option<u16> {
    match p {
        PortRef::Num(n) => Some(*n),
        PortRef::Name(_) => None,
    }
}

impl Switch for Bridge {
    fn bridge(&self) -> &str {
        "br0"
    }
    fn datapath_id(&self) -> u64 {
        0x42
    }
    fn ports(&self) -> Result<Vec<PortInfo>, String> {
        Ok(PORTS
            .iter()
            .map(|&p| PortInfo {
                ofport: p,
                name: format!("p{p}"),
                up: p != 3,
                mac: 0x0200_0000_0000 | u64::from(p),
                config: 0,
            })
            .collect())
    }
    fn port_stats(&self) -> Result<Vec<PortCounters>, String> {
        Ok(PORTS
            .iter()
            .map(|&p| PortCounters {
                ofport: p,
                rx_packets: u64::from(p) * 7,
                ..Default::default()
            })
            .collect())
    }
    fn add_flows(&self, flows: &[Flow]) -> Result<(), String> {
        let mut c = self.flows.borrow().clone();
        let now = self.now.get() + 1;
        self.now.set(now);
        for f in flows {
            c.add(f.clone(), now, resolve).map_err(|e| e.to_string())?;
        }
        if c.len() > MAX_FLOWS {
            return Err("table full".into());
        }
        *self.flows.borrow_mut() = c;
        Ok(())
    }
    fn del_flows(&self, filter: &FlowFilter, strict: bool) -> Result<(), String> {
        let mut c = self.flows.borrow_mut();
        c.del(filter, strict, resolve).map_err(|e| e.to_string())?;
        Ok(())
    }
    fn dump_flows(&self, filter: &FlowFilter) -> Result<Vec<FlowEntry>, String> {
        let c = self.flows.borrow();
        let now = self.now.get();
        let rows = c.dump(Some(filter), resolve).map_err(|e| e.to_string())?;
        Ok(rows
            .into_iter()
            .map(|(_, f, st)| FlowEntry {
                flow: f.clone(),
                n_packets: st.n_packets,
                n_bytes: st.n_bytes,
                duration_ms: now.saturating_sub(st.created_ms),
                idle_age_s: 0,
            })
            .collect())
    }
    fn packet_out(&self, outputs: &[u16], frame: &[u8]) -> Result<(), String> {
        assert!(frame.len() >= 14, "packet-out of a runt frame");
        match outputs.iter().find(|p| !PORTS.contains(p)) {
            Some(p) => Err(format!("no port {p}")),
            None => Ok(()),
        }
    }
    fn add_meter(&self, spec: &str, _write: crate::flow::EntryWrite) -> Result<(), String> {
        assert!(spec.starts_with("meter="), "meter spec {spec:?}");
        Ok(())
    }
    fn del_meters(&self, _id: Option<u32>) -> Result<(), String> {
        Ok(())
    }
    fn meters(&self) -> Result<Vec<crate::openflow::MeterInfo>, String> {
        // Meter 7: the seeds add meter 1, which an existing one would refuse (METER_EXISTS).
        Ok(vec![crate::openflow::MeterInfo {
            id: 7,
            rate_kbps: 1000,
            burst_kbits: 100,
            flow_count: 1,
            duration_ms: 2_500,
            packets: 5,
            bytes: 300,
            band_packets: 2,
            band_bytes: 120,
        }])
    }
    fn group_stats(&self) -> Result<Vec<crate::openflow::GroupStatsInfo>, String> {
        Ok(self
            .groups
            .borrow()
            .iter()
            .map(|(id, _)| crate::openflow::GroupStatsInfo {
                id: *id,
                ref_count: 0,
                duration_ms: 1_250,
                packets: 3,
                bytes: 180,
                buckets: vec![(3, 180), (1, 60)],
            })
            .collect())
    }
    fn add_group(&self, spec: &str, _write: crate::flow::EntryWrite) -> Result<(), String> {
        let g = parse_group(spec).map_err(|e| e.to_string())?;
        let mut gs = self.groups.borrow_mut();
        gs.retain(|(id, _)| *id != g.id);
        if gs.len() >= MAX_GROUPS {
            return Err("too many groups".into());
        }
        gs.push((g.id, spec.to_string()));
        Ok(())
    }
    fn del_groups(&self, id: Option<u32>) -> Result<(), String> {
        self.groups
            .borrow_mut()
            .retain(|(g, _)| id.is_some_and(|id| id != *g));
        Ok(())
    }
    fn dump_groups(&self) -> Result<Vec<String>, String> {
        Ok(self
            .groups
            .borrow()
            .iter()
            .map(|(_, s)| s.clone())
            .collect())
    }
}

/// The connection: reads of pseudo-random sizes from `input`; writes recorded with the input
/// position at which they were made.
struct Pipe {
    input: Vec<u8>,
    pos: usize,
    rng: u64,
    output: Vec<u8>,
    /// (offset in `output`, input position) of each write.
    writes: Vec<(usize, usize)>,
}

impl Read for Pipe {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let chunk = match self.rng % 4 {
            0 => 1 + (self.rng >> 8) as usize % 3,
            1 => 1 + (self.rng >> 8) as usize % 40,
            _ => usize::MAX,
        };
        let n = buf.len().min(self.input.len() - self.pos).min(chunk);
        buf[..n].copy_from_slice(&self.input[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

impl Write for Pipe {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.writes.push((self.output.len(), self.pos));
        self.output.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// What one connection did (for the smoke test's checks that inputs reach the decoders).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OfRun {
    /// Replies other than errors (our HELLO not counted).
    pub replies: usize,
    /// OFPT_ERROR messages.
    pub errors: usize,
    /// Of those, OFPBRC_BAD_LEN.
    pub bad_len: usize,
    /// The switch closed the connection before the input's end.
    pub closed_early: bool,
}

/// Feed `data` to one connection. The first byte picks the prelude (bits 0-1: a 1.0 HELLO, a
/// 1.3 HELLO with a 1.0+1.3 bitmap, a 1.3 HELLO without one, or none: `data` negotiates) and
/// seeds the read sizes (the rest of its bits); the other bytes are the stream.
pub fn openflow(data: &[u8]) -> OfRun {
    let Some((&mode, stream)) = data.split_first() else {
        return OfRun::default();
    };
    let mut input = match mode & 3 {
        0 => vec![OF10, 0, 0, 8, 0, 0, 0, 1],
        1 => vec![OF13, 0, 0, 16, 0, 0, 0, 1, 0, 1, 0, 8, 0, 0, 0, 0x12],
        2 => vec![OF13, 0, 0, 8, 0, 0, 0, 1],
        _ => Vec::new(),
    };
    input.extend_from_slice(stream);
    let mut pipe = Pipe {
        input,
        pos: 0,
        rng: 0x9e37_79b9_7f4a_7c15 ^ u64::from(mode),
        output: Vec::new(),
        writes: Vec::new(),
    };
    listener::serve_connection(&mut pipe, &Bridge::default());
    check_conversation(&pipe)
}

/// One framed request: its bytes (at most the header when its length is below 8).
fn requests(input: &[u8]) -> Vec<(usize, &[u8])> {
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(h) = Header::parse(&input[at..]) {
        let len = usize::from(h.length).max(HEADER_LEN);
        if at + len > input.len() {
            break;
        }
        out.push((at + len, &input[at..at + len]));
        at += len;
        if usize::from(h.length) < HEADER_LEN {
            break;
        }
    }
    out
}

fn check_conversation(p: &Pipe) -> OfRun {
    let mut run = OfRun::default();
    let reqs = requests(&p.input);
    let mut at = 0;
    let mut version = None;
    let mut closed_by = None;
    let mut first = true;
    while at < p.output.len() {
        let h = Header::parse(&p.output[at..]).expect("a whole header");
        let len = usize::from(h.length);
        assert!(len >= HEADER_LEN && at + len <= p.output.len(), "{h:?}");
        let msg = &p.output[at..at + len];
        let wpos = p
            .writes
            .iter()
            .rev()
            .find(|w| w.0 <= at)
            .expect("a write")
            .1;
        at += len;
        if first {
            assert_eq!(msg, Session::hello(), "our HELLO first");
            first = false;
            continue;
        }
        assert!(closed_by.is_none(), "a reply after the connection closed");
        let (i, req) = reqs
            .iter()
            .enumerate()
            .find(|(_, r)| r.0 == wpos)
            .map(|(i, r)| (i, r.1))
            .expect("a reply answers the request just read");
        let rh = Header::parse(req).expect("a request header");
        assert_eq!(h.xid, rh.xid, "a reply carries its request's xid");
        if i == 0 {
            // Before negotiation only errors (HELLO_FAILED, BAD_LEN) are sent.
            assert!(h.typ == 1 && (1..=OF13).contains(&h.version), "{msg:02x?}");
        } else {
            let v = *version.get_or_insert(h.version);
            assert_eq!(h.version, v, "one version per connection");
        }
        if h.typ == 1 {
            let (t, c) = check_error(msg, req);
            run.errors += 1;
            run.bad_len += usize::from((t, c) == OfErr::BadLen.code(h.version));
            if t == 0 || (t, c) == OfErr::BadLen.code(h.version) && rh.length < 8 {
                closed_by = Some((t, c));
            }
        } else {
            check_reply(h, msg, req);
            run.replies += 1;
        }
    }
    run.closed_early = p.pos < p.input.len();
    if run.closed_early {
        assert!(
            closed_by.is_some(),
            "closed early without HELLO_FAILED or a framing error"
        );
    }
    run
}

/// An OFPT_ERROR: (type, code) one uvs defines; data echoes the request. Returns (type, code).
fn check_error(msg: &[u8], req: &[u8]) -> (u16, u16) {
    assert!(msg.len() >= 12, "error too short: {msg:02x?}");
    let mut t = u16::from_be_bytes([msg[8], msg[9]]);
    let mut c = u16::from_be_bytes([msg[10], msg[11]]);
    if t == 0 {
        assert_eq!(c, 0, "HELLO_FAILED/INCOMPATIBLE");
        return (t, c);
    }
    // OpenFlow 1.0's Nicira vendor error (NXET_VENDOR, NXVC_VENDOR_ERROR): Nicira's id, then
    // the extension error's type and code, then the echo.
    let mut echo_at = 12;
    if msg[0] == crate::openflow::codec::OF10 && t == 0xb0c2 {
        assert!(msg.len() >= 20 && c == 0, "vendor error: {msg:02x?}");
        assert_eq!(&msg[12..16], &0x2320u32.to_be_bytes(), "Nicira's vendor id");
        t = u16::from_be_bytes([msg[16], msg[17]]);
        c = u16::from_be_bytes([msg[18], msg[19]]);
        assert!(c >= 256, "only extension codes are wrapped: ({t}, {c})");
        echo_at = 20;
    }
    assert!(
        OfErr::ALL.iter().any(|e| e.code(msg[0]) == (t, c)),
        "unknown error ({t}, {c}) for version {}",
        msg[0]
    );
    assert_eq!(
        &msg[echo_at..],
        &req[..req.len().min(64)],
        "error data echoes the request"
    );
    (t, c)
}

fn check_reply(h: Header, msg: &[u8], req: &[u8]) {
    let v = h.version;
    let body = &msg[HEADER_LEN..];
    match (v, h.typ) {
        (_, 3) => assert_eq!(body, &req[HEADER_LEN..], "echo reply echoes"),
        (OF10, 6) => assert_eq!((body.len() - 24) % 48, 0, "features + phy ports"),
        (_, 6) => assert_eq!(body.len(), 24),
        (_, 8) => assert_eq!(body.len(), 4),
        (OF10, 19) | (OF13, 21) | (OF13, 27) => {
            assert_eq!(body.len(), if h.typ == 27 { 24 } else { 0 })
        }
        (OF13, 25) => assert_eq!(body.len(), 16),
        (OF10, 17) | (OF13, 19) => check_stats(v, msg),
        _ => panic!("unexpected reply type {} for version {v}", h.typ),
    }
}

/// Entries of `body`, each led by its u16 length (at least `min` bytes), tiling the body.
fn tiles(body: &[u8], min: usize) -> Vec<&[u8]> {
    assert!(min >= 2);
    let mut out = Vec::new();
    let mut r = Reader::new(body);
    while r.left() > 0 {
        let mut peek = r;
        let len = usize::from(peek.u16().expect("an entry length"));
        assert!(len >= min, "entry of {len} bytes (minimum {min})");
        out.push(r.bytes(len).expect("entries tile the body"));
    }
    out
}

/// OFPMP_METER entries: their length (after the meter id) covers 40 bytes and 16 per band.
fn meter_stats(body: &[u8]) {
    let mut r = Reader::new(body);
    while r.left() > 0 {
        let mut peek = r;
        peek.skip(4).expect("meter id");
        let len = usize::from(peek.u16().expect("an entry length"));
        assert!(
            len >= 40 && (len - 40) % 16 == 0,
            "meter stats entry of {len}"
        );
        r.bytes(len).expect("entries tile the body");
    }
}

fn fixed(body: &[u8], size: usize) {
    assert_eq!(body.len() % size, 0, "entries of {size} bytes");
}

fn check_stats(v: u8, msg: &[u8]) {
    let mut r = Reader::new(&msg[HEADER_LEN..]);
    let typ = r.u16().expect("stats type");
    let flags = r.u16().expect("stats flags");
    assert!(flags <= 1, "flags {flags}");
    if v != OF10 {
        r.skip(4).expect("pad");
    }
    let mut sub = None;
    if typ == 0xffff {
        let vendor = r.u32().expect("vendor");
        let s = r.u32().expect("subtype");
        if vendor != NX_VENDOR {
            assert_eq!((vendor, s), (0x4f4e_4600, 1870), "ONF flow monitor");
            assert_eq!(r.left(), 0);
            return;
        }
        if v == OF10 {
            r.skip(4).expect("pad");
        }
        sub = Some(s);
    }
    let body = r.rest();
    match (typ, sub) {
        (0, _) => assert_eq!(body.len(), 1056, "desc"),
        (1, _) => tiles(body, if v == OF10 { 88 } else { 56 })
            .into_iter()
            .for_each(|e| flow_entry(v, e)),
        (2, _) | (0xffff, Some(1)) => assert_eq!(body.len(), 24, "aggregate"),
        (3, _) => fixed(body, if v == OF10 { 64 } else { 24 }),
        (4, _) => fixed(body, if v == OF10 { 104 } else { 112 }),
        (6, _) => tiles(body, 40)
            .into_iter()
            .for_each(|e| assert_eq!((e.len() - 40) % 16, 0, "group stats buckets")),
        (7, _) => tiles(body, 8).into_iter().for_each(group_desc),
        (8, _) => assert_eq!(body.len(), 40, "group features"),
        (9, _) => meter_stats(body),
        (10, _) => tiles(body, 8)
            .into_iter()
            .for_each(|e| assert_eq!((e.len() - 8) % 16, 0, "meter config bands")),
        (11, _) => assert_eq!(body.len(), 16, "meter features"),
        (12, _) => assert_eq!(tiles(body, 64).len(), 255, "table features"),
        (13, _) => fixed(body, if v == OF10 { 48 } else { 64 }),
        (0xffff, Some(0)) => tiles(body, 48).into_iter().for_each(nx_flow_entry),
        (0xffff, Some(2)) => assert!(body.is_empty(), "flow monitor"),
        _ => panic!("unexpected stats reply {typ} {sub:?}"),
    }
}

/// An OFPST_FLOW / OFPMP_FLOW entry decodes again.
fn flow_entry(v: u8, e: &[u8]) {
    let mut r = Reader::new(e);
    if v == OF10 {
        r.skip(4).expect("length, table");
        ofmatch::decode_of10(&mut r).expect("the match decodes");
        // Durations, priority, timeouts, padding, cookie, counters.
        r.skip(44).expect("the fixed part");
        actions::decode10(r).expect("the actions decode");
    } else {
        r.skip(48).expect("the fixed part");
        decode_oxm_match(&mut r).expect("the match decodes");
        actions::decode13_instructions(r).expect("the instructions decode");
    }
}

/// An NXST_FLOW entry decodes again.
fn nx_flow_entry(e: &[u8]) {
    let mut r = Reader::new(e);
    r.skip(18).expect("the fixed part");
    let mlen = usize::from(r.u16().expect("match_len"));
    r.skip(28).expect("the fixed part");
    let m = r.bytes(mlen).expect("the match fits");
    r.skip((8 - mlen % 8) % 8).expect("the match padding");
    ofmatch::decode_tlv_cookie(Tlv::Nxm, Reader::new(m)).expect("the match decodes");
    actions::decode10(r).expect("the actions decode");
}

/// A GROUP_DESC entry: buckets tile it and their actions decode again.
fn group_desc(e: &[u8]) {
    for b in tiles(&e[8..], 16) {
        actions::decode13_actions(Reader::new(&b[16..])).expect("bucket actions decode");
    }
}
