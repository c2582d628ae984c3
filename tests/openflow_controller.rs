//! `set-controller`: the switch connects out to a controller (here a minimal one written in
//! the test, on 127.0.0.1), answers it with the configured datapath id, sends it PORT_STATUS,
//! and reconnects after the controller drops the connection. Fail modes: `standalone` makes a
//! bridge without a connected controller a learning switch, `secure` keeps its flows. No root:
//! in-process switch with in-memory ports.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use common::openflow::{Switch, udp_frame, wait_for};

/// Attach to `br0` a port that receives `n` broadcast UDP frames (NORMAL floods them to every
/// other port); a sink when `n` is 0.
fn attach_broadcast(s: &Switch, name: &str, n: u64) {
    s.attach_frame(name, udp_frame([0xff; 6], [10, 0, 0, 255]), n);
}

/// `br0` as `show` describes it.
fn bridge(s: &Switch) -> serde_json::Value {
    s.ok(&["show"])["bridges"][0].clone()
}

/// Read one OpenFlow message.
fn read_msg(s: &mut TcpStream) -> Vec<u8> {
    let mut h = [0u8; 8];
    s.read_exact(&mut h).unwrap();
    let len = usize::from(u16::from_be_bytes([h[2], h[3]]));
    let mut m = h.to_vec();
    m.resize(len, 0);
    s.read_exact(&mut m[8..]).unwrap();
    m
}

/// Accept the switch, say HELLO (1.3), ask for FEATURES; returns the stream and the datapath
/// id it announced.
fn handshake(l: &TcpListener) -> (TcpStream, u64) {
    let (mut s, _) = l.accept().unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let hello = read_msg(&mut s);
    assert_eq!(hello[1], 0, "HELLO first");
    s.write_all(&[4, 0, 0, 8, 0, 0, 0, 1]).unwrap();
    s.write_all(&[4, 5, 0, 8, 0, 0, 0, 2]).unwrap();
    loop {
        let m = read_msg(&mut s);
        if m[1] == 6 {
            assert_eq!(m[0], 4);
            return (s, u64::from_be_bytes(m[8..16].try_into().unwrap()));
        }
    }
}

#[test]
fn switch_connects_out_with_its_datapath_id_and_reconnects() {
    let s = Switch::start("out");
    s.ok(&["add-br", "br0", "datapath_id=0xa1"]);
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let target = format!("tcp:{}", l.local_addr().unwrap());
    s.ok(&["set-controller", "br0", &target]);
    let b = bridge(&s);
    assert_eq!(b["controller"][0], target.as_str());
    assert_eq!(b["datapath_id"], "00000000000000a1");
    let (mut c, dpid) = handshake(&l);
    assert_eq!(dpid, 0xa1);
    wait_for(
        || s.ok(&["get-controller", "br0"])["controllers"][0]["is_connected"] == true,
        "is_connected: true",
    );
    // Port events reach the controller.
    attach_broadcast(&s, "p1", 0);
    loop {
        let m = read_msg(&mut c);
        if m[1] == 12 {
            assert_eq!(m[8], 0, "OFPPR_ADD");
            assert_eq!(&m[16..20], &[0, 0, 0, 1], "port 1");
            break;
        }
    }
    // The controller drops the connection: the switch comes back (1 s back-off).
    drop(c);
    let t = Instant::now();
    let (_c2, dpid) = handshake(&l);
    assert_eq!(dpid, 0xa1);
    eprintln!("reconnected after {:?}", t.elapsed());
    assert!(t.elapsed() < Duration::from_secs(5));
    // set-br changes the datapath id; a bad one is refused with the field's name.
    s.ok(&["set-br", "br0", "datapath_id=0x2a"]);
    assert_eq!(bridge(&s)["datapath_id"], "000000000000002a");
    let e = s.call(&["set-br", "br0", "datapath_id=xyz"]).unwrap_err();
    assert!(e.contains("datapath_id"), "{e}");
    let e = s
        .call(&["set-controller", "br0", "ssl:1.2.3.4:1"])
        .unwrap_err();
    assert!(e.contains("controller: 'ssl:1.2.3.4:1'"), "{e}");
    s.ok(&["del-controller", "br0"]);
    assert_eq!(bridge(&s)["controller"], serde_json::json!([]));
}

#[test]
fn fail_mode_standalone_falls_back_to_learning_and_secure_keeps_flows() {
    let s = Switch::start("fail");
    s.ok(&["add-br", "br0"]);
    s.ok(&["add-flow", "br0", "priority=0,actions=drop"]);
    attach_broadcast(&s, "p2", 0);
    // A controller nobody listens on.
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let target = format!("tcp:{}", l.local_addr().unwrap());
    drop(l);
    s.ok(&["set-fail-mode", "br0", "secure"]);
    s.ok(&["set-controller", "br0", &target]);
    std::thread::sleep(Duration::from_millis(1200));
    assert_eq!(bridge(&s)["fail_open"], false);
    attach_broadcast(&s, "p1", 20);
    wait_for(
        || s.ok(&["stats"])["ports"]["p1"]["rx_packets"].as_u64() == Some(20),
        "20 frames in",
    );
    assert_eq!(s.tx("p2"), 0, "secure: the drop flow holds");
    s.ok(&["del-port", "p1"]);
    // Standalone: no controller connected, so the bridge is a learning switch.
    s.ok(&["set-fail-mode", "br0", "standalone"]);
    wait_for(|| bridge(&s)["fail_open"] == true, "fail_open");
    attach_broadcast(&s, "p1", 20);
    wait_for(|| s.tx("p2") == 20, "20 frames flooded to p2");
    // Without controllers the flows apply again.
    s.ok(&["del-controller", "br0"]);
    wait_for(|| bridge(&s)["fail_open"] == false, "fail_open off");
    assert_eq!(s.ok(&["get-fail-mode", "br0"])["fail_mode"], "standalone");
}
