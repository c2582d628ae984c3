//! Byte-exact tests against messages captured from `ovs-ofctl` 3.1 (Debian), and a fuzz test of
//! the session: no input panics, malformed ones get an OFPT_ERROR.

use std::cell::RefCell;

use super::codec::{OF10, OF13};
use super::*;
use crate::flow::{parse_filter, parse_flow};

/// A bridge in memory that records what the session asked of it.
#[derive(Default)]
struct Fake {
    flows: RefCell<Vec<Flow>>,
    deletes: RefCell<Vec<(FlowFilter, bool)>>,
    dumps: RefCell<Vec<FlowFilter>>,
    meters: RefCell<Vec<String>>,
    sent: RefCell<Vec<(Vec<u16>, Vec<u8>)>>,
    port_mods: RefCell<Vec<(u16, u32, u32)>>,
    port_reads: std::cell::Cell<usize>,
}

impl Switch for Fake {
    fn mod_port(&self, ofport: u16, config: u32, mask: u32) -> Result<(), String> {
        self.port_mods.borrow_mut().push((ofport, config, mask));
        Ok(())
    }
    fn bridge(&self) -> &str {
        "br0"
    }
    fn datapath_id(&self) -> u64 {
        0x42
    }
    fn ports(&self) -> Result<Vec<PortInfo>, String> {
        self.port_reads.set(self.port_reads.get() + 1);
        Ok(vec![PortInfo {
            ofport: 1,
            name: "p1".into(),
            up: true,
            mac: 0x0200_0000_0001,
            config: 0,
        }])
    }
    fn port_stats(&self) -> Result<Vec<PortCounters>, String> {
        Ok(vec![PortCounters {
            ofport: 1,
            rx_packets: 5,
            ..Default::default()
        }])
    }
    fn add_flows(&self, flows: &[Flow]) -> Result<(), String> {
        self.flows.borrow_mut().extend_from_slice(flows);
        Ok(())
    }
    fn del_flows(&self, filter: &FlowFilter, strict: bool) -> Result<(), String> {
        self.deletes.borrow_mut().push((filter.clone(), strict));
        Ok(())
    }
    fn packet_out(&self, outputs: &[u16], frame: &[u8]) -> Result<(), String> {
        self.sent
            .borrow_mut()
            .push((outputs.to_vec(), frame.to_vec()));
        Ok(())
    }
    fn add_meter(&self, spec: &str, _write: crate::flow::EntryWrite) -> Result<(), String> {
        self.meters.borrow_mut().push(spec.to_string());
        Ok(())
    }
    fn meters(&self) -> Result<Vec<super::MeterInfo>, String> {
        let id = |s: &String| {
            s["meter=".len()..]
                .split(',')
                .next()
                .unwrap()
                .parse()
                .unwrap()
        };
        let meters = self.meters.borrow();
        Ok(meters
            .iter()
            .map(|s| super::MeterInfo {
                id: id(s),
                ..Default::default()
            })
            .collect())
    }
    fn dump_flows(&self, filter: &FlowFilter) -> Result<Vec<FlowEntry>, String> {
        self.dumps.borrow_mut().push(filter.clone());
        Ok(self
            .flows
            .borrow()
            .iter()
            .map(|f| FlowEntry {
                flow: f.clone(),
                n_packets: 3,
                n_bytes: 180,
                duration_ms: 1500,
                idle_age_s: 1,
            })
            .collect())
    }
}

/// A fake bridge for other test modules.
pub(super) fn fake() -> impl Switch {
    Fake::default()
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn session(v: u8) -> Session {
    let mut s = Session::default();
    let hello = [v, 0, 0, 8, 0, 0, 0, 1];
    let (out, close) = s.handle(&hello, &Fake::default());
    assert!(out.is_empty() && !close);
    s
}

/// `ovs-ofctl add-flow SOCK "table=1,cookie=0x42,priority=50,tcp,tp_dst=80,actions=output:2"`:
/// NXT_FLOW_MOD_TABLE_ID, then an OpenFlow 1.0 flow_mod with the table in the command's high
/// byte, then a barrier.
const CAP_TABLE_ID: &str = "0104001800000006000023200000000f0100000000000000";
const CAP_FLOW_MOD: &str = "010e0050000000080038204f00000000000000000000000000000000000008000006000000000000000000000000005000000000000000420100000000000032ffffffffffff00000000000800020000";
/// `ovs-ofctl del-flows SOCK "tcp,tp_dst=80"`.
const CAP_DELETE: &str = "010e0048000000060038204f00000000000000000000000000000000000008000006000000000000000000000000005000000000000000000003000000008000ffffffffffff0000";
/// `ovs-ofctl dump-flows SOCK "cookie=0x42/-1,tcp"`: NXT_SET_FLOW_FORMAT(NXM), NXST_FLOW.
const CAP_SET_NXM: &str = "0104001400000006000023200000000c00000002";
const CAP_NXST_FLOW: &str = "0110003800000008ffff0000000023200000000000000000ffff0017ff00000000000602080000000c010600013c08000000000000004200";

#[test]
fn captured_add_flow_with_table_id() {
    let sw = Fake::default();
    let mut s = session(OF10);
    assert_eq!(s.handle(&hex(CAP_TABLE_ID), &sw), (vec![], false));
    assert!(s.table_id_ext);
    assert_eq!(s.handle(&hex(CAP_FLOW_MOD), &sw), (vec![], false));
    let want =
        parse_flow("table=1,cookie=0x42,priority=50,tcp,tp_dst=80,actions=output:2").unwrap();
    assert_eq!(*sw.flows.borrow(), vec![want]);
    // The barrier is answered with the same xid.
    let (out, _) = s.handle(&hex("0112000800000009"), &sw);
    assert_eq!(out, vec![hex("0113000800000009")]);
}

#[test]
fn captured_delete() {
    let sw = Fake::default();
    let mut s = session(OF10);
    assert_eq!(s.handle(&hex(CAP_DELETE), &sw), (vec![], false));
    let d = sw.deletes.borrow();
    let mut want = parse_filter("tcp,tp_dst=80").unwrap();
    want.table = None;
    assert_eq!(*d, vec![(want, false)]);
}

#[test]
fn captured_nxst_flow_and_reply_bytes() {
    let sw = Fake::default();
    sw.add_flows(&[parse_flow("cookie=0x42,priority=7,tcp,actions=output:2").unwrap()])
        .unwrap();
    let mut s = session(OF10);
    assert_eq!(s.handle(&hex(CAP_SET_NXM), &sw), (vec![], false));
    let (out, close) = s.handle(&hex(CAP_NXST_FLOW), &sw);
    assert!(!close);
    let f = sw.dumps.borrow()[0].clone();
    assert_eq!(f, parse_filter("cookie=0x42/-1,tcp").unwrap());
    // One NXST_FLOW reply: stats header (24), nx_flow_stats (48), the NXM match
    // eth_type=0x0800 (6) + ip_proto=6 (5) padded to 16, output:2 (8).
    assert_eq!(out.len(), 1);
    let r = &out[0];
    assert_eq!(r.len(), 24 + 48 + 16 + 8);
    assert_eq!(&r[..4], &[1, 17, 0, 96]);
    assert_eq!(&r[8..24], &hex("ffff0000000023200000000000000000"));
    let e = &r[24..];
    assert_eq!(&e[0..4], &[0, 72, 0, 0]); // length, table 0
    assert_eq!(&e[4..12], &hex("000000011dcd6500")); // 1 s + 500,000,000 ns
    assert_eq!(&e[12..14], &[0, 7]); // priority
    assert_eq!(&e[18..24], &hex("000b00020000")); // match_len 11, idle_age 1+1, hard_age
    assert_eq!(&e[24..32], &hex("0000000000000042")); // cookie
    assert_eq!(u64::from_be_bytes(e[32..40].try_into().unwrap()), 3);
    assert_eq!(u64::from_be_bytes(e[40..48].try_into().unwrap()), 180);
    assert_eq!(&e[48..64], &hex("00000602080000000c01060000000000")[..]);
    assert_eq!(&e[64..72], &hex("000000080002ffff"));
}

#[test]
fn version_negotiation() {
    let sw = Fake::default();
    // A 1.3 peer with a bitmap of 1.0-1.5: 1.3.
    let mut s = Session::default();
    let h = hex("04000010000000010001000800000032");
    assert_eq!(s.handle(&h, &sw), (vec![], false));
    assert_eq!(s.version, Some(OF13));
    // A 1.0 peer without a bitmap: 1.0.
    let mut s = Session::default();
    s.handle(&hex("0100000800000001"), &sw);
    assert_eq!(s.version, Some(OF10));
    // OpenFlow 1.1 only: HELLO_FAILED / INCOMPATIBLE, and the connection closes.
    let mut s = Session::default();
    let (out, close) = s.handle(&hex("0200000800000001"), &sw);
    assert!(close);
    assert_eq!(&out[0][8..12], &[0, 0, 0, 0]);
    // Our HELLO offers 1.0 and 1.3.
    assert_eq!(Session::hello(), hex("04000010000000000001000800000012"));
}

#[test]
fn errors_keep_the_connection() {
    let sw = Fake::default();
    let mut s = session(OF13);
    // Unknown type: OFPBRC_BAD_TYPE, echoing the request; the session goes on.
    let (out, close) = s.handle(&hex("04630008000000aa"), &sw);
    assert!(!close);
    assert_eq!(out, vec![hex("04010014000000aa0001000104630008000000aa")]);
    // Wrong version after negotiation: OFPBRC_BAD_VERSION.
    let (out, _) = s.handle(&hex("01020008000000ab"), &sw);
    assert_eq!(&out[0][8..12], &[0, 1, 0, 0]);
    // Echo still answered.
    let (out, _) = s.handle(&hex("04020008000000ac"), &sw);
    assert_eq!(out, vec![hex("04030008000000ac")]);
}

#[test]
fn meter_mod_adds_a_drop_meter() {
    let sw = Fake::default();
    let mut s = session(OF13);
    // OFPT_METER_MOD ADD, KBPS|BURST, meter 1, one drop band: rate 1000, burst 100.
    let m = hex("041d002000000005000000050000000100010010000003e80000006400000000");
    assert_eq!(s.handle(&m, &sw), (vec![], false));
    assert_eq!(
        *sw.meters.borrow(),
        vec!["meter=1,kbps,band=type=drop,rate=1000,burst_size=100".to_string()]
    );
    // Packets per second: OFPMMFC_BAD_FLAGS.
    let mut p = m.clone();
    p[11] = 2;
    let (out, _) = s.handle(&p, &sw);
    assert_eq!(&out[0][8..12], &[0, 12, 0, 5]);
    // ADD of meter 1 again: OFPMMFC_METER_EXISTS, nothing written.
    let (out, _) = s.handle(&m, &sw);
    assert_eq!(&out[0][8..12], &[0, 12, 0, 1]);
    assert_eq!(sw.meters.borrow().len(), 1);
    // MODIFY (command 1) of meter 2, which does not exist: OFPMMFC_UNKNOWN_METER.
    let mut md = m.clone();
    md[9] = 1;
    md[15] = 2;
    let (out, _) = s.handle(&md, &sw);
    assert_eq!(&out[0][8..12], &[0, 12, 0, 3]);
    // MODIFY of meter 1: written.
    md[15] = 1;
    assert_eq!(s.handle(&md, &sw), (vec![], false));
    assert_eq!(sw.meters.borrow().len(), 2);
}

#[test]
fn packet_out_sends_the_frame_to_its_outputs() {
    let sw = Fake::default();
    let mut s = session(OF10);
    // OFPT_PACKET_OUT 1.0: no buffer, in_port 1, output:2 (8 bytes), a 14-byte frame.
    let frame = "ffffffffffff0200000000010806";
    let m = hex(&format!(
        "010d0026000000aaffffffff00010008000000080002ffff{frame}"
    ));
    assert_eq!(s.handle(&m, &sw), (vec![], false));
    assert_eq!(*sw.sent.borrow(), vec![(vec![2], hex(frame))]);
    // To the controller: refused, nothing sent.
    let m = hex(&format!(
        "010d0026000000abffffffff0001000800000008fffdffff{frame}"
    ));
    let (out, _) = s.handle(&m, &sw);
    assert_eq!(&out[0][8..12], &[0, 2, 0, 4]);
    assert_eq!(sw.sent.borrow().len(), 1);
    // Nothing left to send (output:1 is the in_port; or no action): taken, as OVS takes it.
    let m = hex(&format!(
        "010d0026000000acffffffff00010008000000080001ffff{frame}"
    ));
    assert_eq!(s.handle(&m, &sw), (vec![], false));
    let m = hex(&format!("010d001e000000adffffffff00010000{frame}"));
    assert_eq!(s.handle(&m, &sw), (vec![], false));
    assert_eq!(sw.sent.borrow().len(), 1, "nothing sent");
    // FLOOD from in_port NONE: every port (a learning-switch controller's flood).
    let m = hex(&format!(
        "010d0026000000aeffffffffffff000800000008fffbffff{frame}"
    ));
    assert_eq!(s.handle(&m, &sw), (vec![], false));
    assert_eq!(sw.sent.borrow().last(), Some(&(vec![1], hex(frame))));
    // From in_port 1, its only port: nothing left, taken.
    let m = hex(&format!(
        "010d0026000000afffffffff0001000800000008fffbffff{frame}"
    ));
    let reads = sw.port_reads.get();
    assert_eq!(s.handle(&m, &sw), (vec![], false));
    assert_eq!(
        sw.port_reads.get(),
        reads,
        "a second flood within FLOOD_PORTS_FOR reads the ports again"
    );
    assert_eq!(sw.sent.borrow().len(), 2);
}

/// A small deterministic generator (xorshift).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn fuzz_never_panics_and_answers_errors() {
    let sw = Fake::default();
    sw.add_flows(&[parse_flow("priority=7,tcp,actions=output:2").unwrap()])
        .unwrap();
    let seeds = [
        CAP_TABLE_ID,
        CAP_FLOW_MOD,
        CAP_DELETE,
        CAP_SET_NXM,
        CAP_NXST_FLOW,
        "0110000c0000000200030000",
        "0412001000000002000c000000000000",
        "0105000800000004",
        // GROUP_MOD add all (bucket output:2), ROLE_REQUEST, SET_ASYNC, GROUP_DESC request.
        "040f003000000009000000000000000100200000ffffffffffffffff000000000000001000000002ffff000000000000",
        "041800180000000900000002000000000000000000000007",
        "041c0020000000aa000000030000000000000007000000070000000f00000000",
        "04120010000000020007000000000000",
    ];
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut errors = 0;
    for round in 0..20_000 {
        let mut m = hex(seeds[round % seeds.len()]);
        let v = m[0];
        match rng.next() % 4 {
            // Truncate (fixing the length so the framing holds).
            0 => m.truncate(8 + (rng.next() as usize % m.len().saturating_sub(7).max(1))),
            // Flip bytes after the header.
            1 => {
                for _ in 0..1 + rng.next() % 4 {
                    let i = 8 + rng.next() as usize % (m.len() - 8).max(1);
                    if i < m.len() {
                        m[i] = rng.next() as u8;
                    }
                }
            }
            // Random body.
            2 => {
                let n = rng.next() as usize % 64;
                m.truncate(8);
                m.extend((0..n).map(|_| rng.next() as u8));
            }
            // Random type.
            _ => m[1] = rng.next() as u8,
        }
        let len = m.len() as u16;
        m[2..4].copy_from_slice(&len.to_be_bytes());
        let mut s = session(v);
        s.table_id_ext = rng.next().is_multiple_of(2);
        let (out, close) = s.handle(&m, &sw);
        assert!(!close, "{m:02x?}");
        for o in &out {
            assert_eq!(o[0], v);
            assert_eq!(usize::from(u16::from_be_bytes([o[2], o[3]])), o.len());
            errors += usize::from(o[1] == 1);
        }
    }
    assert!(
        errors > 1000,
        "only {errors} errors in 20000 mangled messages"
    );
}

/// A stream that reads `input` and collects what is written.
struct Pipe {
    input: std::io::Cursor<Vec<u8>>,
    output: Vec<u8>,
}

impl std::io::Read for Pipe {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.input.read(buf)
    }
}

impl std::io::Write for Pipe {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.output.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// What `serve_connection` writes back for `input` (against a fake bridge).
pub(super) fn converse(input: Vec<u8>) -> Vec<u8> {
    let mut p = Pipe {
        input: std::io::Cursor::new(input),
        output: Vec::new(),
    };
    listener::serve_connection(&mut p, &Fake::default());
    p.output
}

#[test]
fn framing_hello_echo_then_a_bad_length_closes() {
    let mut input = hex("0100000800000001"); // HELLO 1.0
    input.extend(hex("0102000c00000002cafef00d")); // ECHO_REQUEST with 4 bytes
    input.extend(hex("0102000400000003")); // length 4: unframeable
    input.extend(hex("0102000800000004")); // never read
    let mut p = Pipe {
        input: std::io::Cursor::new(input),
        output: Vec::new(),
    };
    listener::serve_connection(&mut p, &Fake::default());
    let mut want = Session::hello();
    want.extend(hex("0103000c00000002cafef00d"));
    want.extend(hex("0101001400000003000100060102000400000003"));
    assert_eq!(hex_of(&p.output), hex_of(&want));
}

fn hex_of(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Ports without a netdev get a stable, locally administered unicast address of their own.
#[test]
fn ports_without_a_netdev_get_an_address_of_their_own() {
    let a = super::made_mac("br0", "patch-a");
    assert_eq!(a, super::made_mac("br0", "patch-a"), "stable");
    assert_ne!(a, super::made_mac("br1", "patch-a"), "per bridge");
    assert_eq!(a >> 40 & 0x03, 0x02, "locally administered unicast: {a:x}");
    // A patch port named like a netdev of the host does not take that netdev's address.
    assert_eq!(
        super::port_mac("br0", "lo", "patch"),
        super::made_mac("br0", "lo")
    );
    assert_eq!(
        super::port_mac("br0", "no-such-dev", "tap"),
        super::made_mac("br0", "no-such-dev")
    );
}

/// OFPT_PORT_MOD in both versions: the port's hardware address is checked, an unknown port or a
/// bit uvs does not keep is refused, and 1.3's reserved no-flood bit is ignored (as OVS).
#[test]
fn port_mod_sets_bits_and_checks_what_it_is_sent() {
    let sw = Fake::default();
    // 1.0: port 1, hw 02:00:00:00:00:01, config PORT_DOWN, mask PORT_DOWN|NO_FLOOD.
    let mut s = session(OF10);
    let m = hex("010f002000000001000102000000000100000001000000110000000000000000");
    assert_eq!(s.handle(&m, &sw), (vec![], false));
    assert_eq!(*sw.port_mods.borrow(), vec![(1, 1, 0x11)]);
    // A wrong hardware address: OFPPMFC_BAD_HW_ADDR (type 4, code 1 in 1.0).
    let m = hex("010f002000000002000102000000000900000001000000010000000000000000");
    let (out, _) = s.handle(&m, &sw);
    assert_eq!(&out[0][8..12], &[0, 4, 0, 1]);
    // No such port: OFPPMFC_BAD_PORT.
    let m = hex("010f002000000003000702000000000100000001000000010000000000000000");
    let (out, _) = s.handle(&m, &sw);
    assert_eq!(&out[0][8..12], &[0, 4, 0, 0]);
    // 1.3: NO_FLOOD (0x10) in the mask is a reserved bit there: ignored, the rest applied.
    let mut s = session(OF13);
    let m = hex("04100028000000040000000100000000020000000001000000000001000000110000000000000000");
    assert_eq!(s.handle(&m, &sw), (vec![], false));
    assert_eq!(sw.port_mods.borrow().last(), Some(&(1, 1, 0x01)));
    // 1.3 NO_STP-like bit 1: not kept by uvs: OFPPMFC_BAD_CONFIG (type 7, code 2).
    let m = hex("04100028000000050000000100000000020000000001000000000002000000020000000000000000");
    let (out, _) = s.handle(&m, &sw);
    assert_eq!(&out[0][8..12], &[0, 7, 0, 2]);
}
