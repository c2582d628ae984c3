//! Byte-exact tests of the asynchronous messages (`async_msg`). Each expected message was
//! checked with `ovs-ofctl ofp-print HEX` (Debian's 3.1), whose decoding is quoted next to it.

use super::async_msg::{Prefs, encode};
use super::codec::{OF10, OF13};
use crate::events::{
    Event, FlowRemoved, PORT_ADD, PacketIn, PortStatus, REMOVED_DELETE, REMOVED_HARD,
};
use crate::flow::parse_flow;
use crate::openflow::PortInfo;

fn hex_of(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn prefs(version: u8, nxm: bool) -> Prefs {
    Prefs {
        nxm,
        ..Prefs::new(version)
    }
}

/// A 60-byte UDP frame 10.0.0.1 -> 10.1.2.3.
fn frame() -> Vec<u8> {
    let mut f = vec![0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1, 0x08, 0x00];
    f.extend_from_slice(&[
        0x45, 0, 0, 28, 0, 0, 0, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 1, 2, 3,
    ]);
    f.extend_from_slice(&[0x30, 0x39, 0, 80, 0, 8, 0, 0]);
    f.resize(60, 0);
    f
}

fn packet_in(table_miss: bool, data: Vec<u8>) -> Event {
    Event::PacketIn(PacketIn {
        bridge: "br0".into(),
        table: 2,
        cookie: 0x42,
        reason: 1,
        table_miss,
        in_port: 3,
        tun_id: 0,
        total_len: 60,
        data,
    })
}

fn show(tag: &str, m: &[u8]) {
    eprintln!("{tag}: {}", hex_of(m));
}

#[test]
fn packet_in_bytes() {
    let e = packet_in(false, frame()[..20].to_vec());
    let m = encode(&e, &prefs(OF10, false)).unwrap();
    show("pin10", &m);
    // OFPT_PACKET_IN (xid=0x0): total_len=60 in_port=3 (via action) data_len=20 (unbuffered)
    assert_eq!(
        hex_of(&m),
        "010a002600000000ffffffff003c0003010002000000000202000000000108004500001c0000"
    );
    let m = encode(&e, &prefs(OF13, false)).unwrap();
    show("pin13", &m);
    // OFPT_PACKET_IN (OF1.3) (xid=0x0): table_id=2 cookie=0x42 total_len=60 in_port=3 (via
    // action) data_len=20 (unbuffered)
    assert_eq!(
        hex_of(&m),
        "040a003e00000000ffffffff003c010200000000000000420001000c800000040000000300000000000002000000000202000000000108004500001c0000"
    );
}

#[test]
fn table_miss_packet_in_is_no_match_on_13_and_cut_to_miss_send_len() {
    let e = packet_in(true, frame());
    let mut p = prefs(OF13, false);
    p.miss_send_len = 16;
    let m = encode(&e, &p).unwrap();
    show("miss13", &m);
    // reason byte (offset 14) is OFPR_NO_MATCH, 16 bytes of data after 2 bytes of padding.
    assert_eq!(m[14], 0);
    assert_eq!(m.len(), 8 + 16 + 16 + 2 + 16);
    let m = encode(&e, &prefs(OF10, false)).unwrap();
    assert_eq!(m[16], 1, "OpenFlow 1.0 reports an explicit miss as action");
}

fn removed(reason: u8) -> Event {
    let mut flow =
        parse_flow("table=1,cookie=0x7,priority=5,hard_timeout=9,arp,actions=drop").unwrap();
    flow.send_flow_rem = true;
    Event::FlowRemoved(Box::new(FlowRemoved {
        bridge: "br0".into(),
        flow,
        reason,
        duration_ms: 9_250,
        packets: 4,
        bytes: 240,
    }))
}

#[test]
fn flow_removed_bytes() {
    let e = removed(REMOVED_HARD);
    let m = encode(&e, &prefs(OF10, false)).unwrap();
    show("fr10", &m);
    // OFPT_FLOW_REMOVED (xid=0x0): priority=5,arp reason=hard cookie:0x7 duration9.250s idle0
    // pkts4 bytes240
    assert_eq!(m.len(), 88);
    assert_eq!(
        hex_of(&m),
        "010b005800000000003820ef000000000000000000000000000000000000080600000000000000000000000000000000000000000000000700050100000000090ee6b28000000000000000000000000400000000000000f0"
    );
    let m = encode(&e, &prefs(OF10, true)).unwrap();
    show("frnx", &m);
    // NXT_FLOW_REMOVED (xid=0x0): priority=5,arp reason=hard table_id=1 cookie:0x7
    // duration9.250s idle0 pkts4 bytes240
    assert_eq!(
        hex_of(&m),
        "0104004000000000000023200000000e000000000000000700050102000000090ee6b28000000006000000000000000400000000000000f00000060208060000"
    );
    let m = encode(&removed(REMOVED_DELETE), &prefs(OF13, false)).unwrap();
    show("fr13", &m);
    // OFPT_FLOW_REMOVED (OF1.3) (xid=0x0): priority=5,arp reason=delete table_id=1
    // cookie:0x7 duration9.250s idle0 hard9 pkts4 bytes240
    assert_eq!(
        hex_of(&m),
        "040b004000000000000000000000000700050201000000090ee6b28000000009000000000000000400000000000000f00001000a80000a020806000000000000"
    );
}

#[test]
fn port_status_bytes() {
    let e = Event::PortStatus(PortStatus {
        bridge: "br0".into(),
        reason: PORT_ADD,
        port: PortInfo {
            ofport: 1,
            name: "p1".into(),
            up: true,
            mac: 0x0200_0000_0001,
            config: 0,
        },
    });
    let m = encode(&e, &prefs(OF10, false)).unwrap();
    show("ps10", &m);
    // OFPT_PORT_STATUS (xid=0x0): ADD: 1(p1): addr:02:00:00:00:00:01
    assert_eq!(
        hex_of(&m),
        "010c0040000000000000000000000000000102000000000170310000000000000000000000000000000000000000000000000000000000000000000000000000"
    );
    let m = encode(&e, &prefs(OF13, false)).unwrap();
    show("ps13", &m);
    // OFPT_PORT_STATUS (OF1.3) (xid=0x0): ADD: 1(p1): addr:02:00:00:00:00:01 ... state: LIVE
    assert_eq!(
        hex_of(&m),
        "040c005000000000000000000000000000000001000000000200000000010000703100000000000000000000000000000000000000000004000000000000000000000000000000000000000000000000"
    );
    assert_eq!(encode(&e, &prefs(0, false)), None, "nothing before HELLO");
}

#[test]
fn role_and_async_config_choose_what_a_connection_gets() {
    use super::Session;
    use super::session::DEFAULT_ASYNC;
    let sw = super::tests::fake();
    let mut s = Session::default();
    assert_eq!(s.handle(&[4, 0, 0, 8, 0, 0, 0, 1], &sw), (vec![], false));
    // ROLE_REQUEST slave, generation 7 -> ROLE_REPLY slave, 7.
    let req = [
        4, 24, 0, 24, 0, 0, 0, 9, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7,
    ];
    let (out, _) = s.handle(&req, &sw);
    assert_eq!(
        hex_of(&out[0]),
        "041900180000000900000003000000000000000000000007"
    );
    assert_eq!(s.role, 3);
    // GET_ASYNC_REQUEST -> the defaults.
    let (out, _) = s.handle(&[4, 26, 0, 8, 0, 0, 0, 10], &sw);
    assert_eq!(out[0].len(), 32);
    assert_eq!(&out[0][8..12], &DEFAULT_ASYNC[0].to_be_bytes());
    let slave = Prefs {
        role: 3,
        ..Prefs::new(OF13)
    };
    let pi = packet_in(false, frame());
    assert_eq!(encode(&pi, &slave), None, "a slave gets no packet-in");
    assert!(encode(&removed(REMOVED_HARD), &slave).is_none());
    // SET_ASYNC: no flow-removed for master/equal, packet-in of action only.
    let mut set = vec![4, 28, 0, 32, 0, 0, 0, 11];
    for m in [0x2u32, 0, 0x7, 0x7, 0, 0] {
        set.extend_from_slice(&m.to_be_bytes());
    }
    s.handle(&set, &sw);
    let p = Prefs {
        async_masks: s.async_masks,
        ..Prefs::new(OF13)
    };
    assert!(encode(&pi, &p).is_some());
    assert!(
        encode(&packet_in(true, frame()), &p).is_none(),
        "no_match is off"
    );
    assert!(encode(&removed(REMOVED_HARD), &p).is_none());
}

#[test]
fn a_packet_in_never_outgrows_a_message() {
    let mut big = frame();
    big.resize(70_000, 0);
    let e = Event::PacketIn(PacketIn {
        total_len: u16::MAX,
        data: big,
        ..match packet_in(false, Vec::new()) {
            Event::PacketIn(p) => p,
            _ => unreachable!(),
        }
    });
    for v in [OF10, OF13] {
        let m = encode(&e, &prefs(v, false)).unwrap();
        assert_eq!(m.len(), 65535);
        assert_eq!(u16::from_be_bytes([m[2], m[3]]), 65535);
    }
}
