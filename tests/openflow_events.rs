//! Asynchronous OpenFlow messages seen by a real client: `ovs-ofctl monitor BRIDGE watch:`
//! (Debian's 3.1), OpenFlow 1.0 (its default) and `-O OpenFlow13`, receives the PACKET_IN of a
//! `controller` flow, the PORT_STATUS of a port added and deleted, and the FLOW_REMOVED of a
//! `send_flow_rem` flow whose hard timeout ends. No root: the switch runs in-process with
//! in-memory ports; skipped when `ovs-ofctl` is not installed.

mod common;

use std::time::{Duration, Instant};

use common::openflow::{Monitor, Switch, have_ofctl, wait_for, wait_for_showing};

/// `br0`'s switch and an `ovs-ofctl [-O VERSION] monitor br0 watch:` on it, returned once the
/// monitor is set up and connected.
fn monitored(version: Option<&str>, tag: &str) -> (Switch, Monitor) {
    let s = Switch::with_br0(tag);
    let m = Monitor::start(&s.target(), &s.dir, version, tag);
    let hub = s.hub();
    wait_for_showing(
        || hub.count("br0") >= 1,
        "the monitor to connect",
        || m.text(),
    );
    (s, m)
}

/// Flows, a port, its packets, the flow's expiry and the port's removal, as the monitor sees
/// them; returns the monitor's text.
fn scenario(version: Option<&str>, tag: &str, want: &[&str]) {
    if !have_ofctl() {
        return;
    }
    let (s, m) = monitored(version, tag);
    s.ok(&["add-flow", "br0", "priority=0,actions=controller"]);
    s.ok(&[
        "add-flow",
        "br0",
        "send_flow_rem,hard_timeout=1,priority=5,arp,actions=drop",
    ]);
    s.attach("p1", 3);
    m.wait("PACKET_IN", 3);
    m.wait("FLOW_REMOVED", 1);
    s.ok(&["del-port", "p1"]);
    m.wait("DEL:", 1);
    // A delete of a send_flow_rem flow says so too (and one without the flag says nothing).
    s.ok(&[
        "add-flow",
        "br0",
        "send_flow_rem,priority=7,icmp,actions=drop",
    ]);
    s.ok(&["add-flow", "br0", "priority=8,tcp,actions=drop"]);
    s.ok(&["del-flows", "br0", "ip"]);
    m.wait("reason=delete", 1);
    let text = m.text();
    eprintln!("{text}");
    for w in want {
        assert!(text.contains(w), "'{w}' not in:\n{text}");
    }
    let st = s.ok(&["stats"]);
    assert_eq!(st["events"]["dropped"], 0, "{st}");
}

#[test]
fn monitor_openflow10_sees_packet_in_port_status_flow_removed() {
    scenario(
        None,
        "of10",
        &[
            "total_len=60 in_port=1 (via action) data_len=60 (unbuffered)",
            "ADD: 1(p1)",
            "DEL: 1(p1)",
            "reason=hard",
            "priority=7,icmp reason=delete",
            "udp,vlan_tci=0x0000,dl_src=02:00:00:00:00:01,dl_dst=02:00:00:00:00:02,nw_src=10.0.0.1,nw_dst=10.1.2.3",
        ],
    );
}

#[test]
fn monitor_openflow13_sees_packet_in_port_status_flow_removed() {
    scenario(
        Some("OpenFlow13"),
        "of13",
        &[
            "(OF1.3)",
            "in_port=1 (via no_match) data_len=60 (unbuffered)",
            "ADD: 1(p1)",
            "DEL: 1(p1)",
            "reason=hard",
            "priority=7,icmp reason=delete",
        ],
    );
}

/// A controller connection that stops reading cannot stall forwarding: the worker keeps
/// switching every frame, the events it cannot queue are dropped and counted, and the
/// connection is closed once a write has waited `hub::WRITE_TIMEOUT`.
#[test]
fn a_controller_that_stops_reading_does_not_stall_forwarding() {
    use std::io::{Read, Write};
    let s = Switch::with_br0("slow");
    let mut c = std::os::unix::net::UnixStream::connect(s.sock()).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut hello = [0u8; 16];
    c.read_exact(&mut hello).unwrap();
    c.write_all(&[4, 0, 0, 8, 0, 0, 0, 1]).unwrap();
    let hub = s.hub();
    wait_for(|| hub.count("br0") == 1, "the connection to join");
    // Every frame goes to the controller and is switched.
    s.ok(&["add-flow", "br0", "priority=0,actions=controller,NORMAL"]);
    let n = 200_000u64;
    s.attach("sink", 0);
    // The sink never sends: its MAC is given, so the frames are switched to it rather than
    // flooded (floods from one port draw from its 10,000-a-second budget, `flood_rate`).
    s.ok(&["fdb-add", "br0", "02:00:00:00:00:02", "sink"]);
    let t = Instant::now();
    s.attach("p1", n);
    let tx = || s.tx("sink");
    let end = Instant::now() + Duration::from_secs(60);
    while tx() < n {
        assert!(Instant::now() < end, "only {} of {n} frames switched", tx());
        std::thread::sleep(Duration::from_millis(20));
    }
    let took = t.elapsed();
    let ev = s.ok(&["stats"])["events"].clone();
    eprintln!("{n} frames switched in {took:?} with a stalled controller; events {ev}");
    let count = |k: &str| ev[k].as_u64().unwrap();
    assert!(count("dropped") > 0, "{ev}");
    // n packet-ins and the two ports' PORT_STATUS.
    assert_eq!(
        count("sent") + count("dropped") + count("no_listener"),
        n + 2,
        "every event queued, or dropped and counted: {ev}"
    );
    // The stalled controller is disconnected (as OVS does), and leaves the bridge.
    wait_for(|| hub.count("br0") == 0, "the stalled connection to close");
    let mut rest = Vec::new();
    assert!(
        c.read_to_end(&mut rest).is_ok(),
        "EOF after the queued messages"
    );
}

/// The manager asks the workers for their bridges only after a command that may have changed
/// them (an idle switch is not woken for nothing), and a change made behind the registry's
/// back (as SIGHUP's reload and the etcd agent make them, straight on the worker) still gets
/// its bridge a socket within the manager's poll. Reads do not count as changes.
#[test]
fn a_bridge_added_on_the_worker_directly_gets_its_socket() {
    let s = Switch::start("direct");
    let changes = s.w.events().changes;
    let before = changes.load(std::sync::atomic::Ordering::SeqCst);
    for cmd in [uvs::worker::Command::Show, uvs::worker::Command::Stats] {
        s.w.call(cmd).unwrap();
    }
    s.ok(&["show"]);
    assert_eq!(
        changes.load(std::sync::atomic::Ordering::SeqCst),
        before,
        "reads counted as changes"
    );
    s.w.call(uvs::worker::Command::AddBridge(
        uvs::config::BridgeSpec::new("br0"),
    ))
    .unwrap();
    assert!(changes.load(std::sync::atomic::Ordering::SeqCst) > before);
    // Within a few of the manager's polls (500 ms), well before its 10 s resync.
    let t = Instant::now();
    while !s.sock().exists() {
        assert!(
            t.elapsed() < Duration::from_secs(3),
            "no br0.mgmt 3 s after the bridge was added"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// OpenFlow 1.3 roles between two controllers of one bridge, as the spec and OVS have them: a
/// new master makes the old one a slave, a slave's FLOW_MOD is refused (OFPBRC_IS_SLAVE) and
/// changes nothing, and a role request with an older generation id is refused (OFPRRFC_STALE).
#[test]
fn a_new_master_demotes_the_old_one_and_slaves_cannot_write() {
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;
    let s = Switch::with_br0("roles");
    let connect = || {
        let mut c = UnixStream::connect(s.sock()).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut hello = [0u8; 16];
        c.read_exact(&mut hello).unwrap();
        c.write_all(&[4, 0, 0, 8, 0, 0, 0, 1]).unwrap();
        c
    };
    let read = |c: &mut UnixStream| {
        let mut m = vec![0u8; 8];
        c.read_exact(&mut m).unwrap();
        let len = usize::from(u16::from_be_bytes([m[2], m[3]]));
        m.resize(len, 0);
        c.read_exact(&mut m[8..]).unwrap();
        m
    };
    // ROLE_REQUEST -> the reply's role, or the error's (type, code).
    let role = |c: &mut UnixStream, role: u32, generation: u64| -> Result<u32, (u16, u16)> {
        let mut m = vec![4, 24, 0, 24, 0, 0, 0, 7];
        m.extend(role.to_be_bytes());
        m.extend([0; 4]);
        m.extend(generation.to_be_bytes());
        c.write_all(&m).unwrap();
        let r = read(c);
        match r[1] {
            25 => Ok(u32::from_be_bytes(r[8..12].try_into().unwrap())),
            1 => Err((
                u16::from_be_bytes([r[8], r[9]]),
                u16::from_be_bytes([r[10], r[11]]),
            )),
            t => panic!("unexpected message type {t}"),
        }
    };
    // FLOW_MOD (command 0 add in table 0 at priority 9, 3 delete in every table) then a
    // BARRIER: None when applied, else the error's (type, code).
    let flow_mod = |c: &mut UnixStream, command: u8| -> Option<(u16, u16)> {
        let mut m = vec![4, 14, 0, 56, 0, 0, 0, 8];
        m.extend([0; 16]); // cookie, cookie mask
        m.extend([if command == 3 { 255 } else { 0 }, command]);
        m.extend([0, 0, 0, 0, 0, 9]); // idle, hard, priority
        m.extend([0xff; 12]); // buffer id, out_port, out_group: none / any
        m.extend([0; 4]); // flags, pad
        m.extend([0, 1, 0, 4, 0, 0, 0, 0]); // an empty OXM match
        c.write_all(&m).unwrap();
        c.write_all(&[4, 20, 0, 8, 0, 0, 0, 9]).unwrap();
        let r = read(c);
        match r[1] {
            21 => None,
            1 => {
                let e = (
                    u16::from_be_bytes([r[8], r[9]]),
                    u16::from_be_bytes([r[10], r[11]]),
                );
                assert_eq!(read(c)[1], 21, "the barrier's reply");
                Some(e)
            }
            t => panic!("unexpected message type {t}"),
        }
    };
    let priority9 = || s.uvs_flows().iter().any(|f| f.contains("priority=9"));
    let (mut a, mut b) = (connect(), connect());
    assert_eq!(role(&mut a, 2, 5), Ok(2));
    assert_eq!(flow_mod(&mut a, 0), None);
    assert!(priority9());
    assert_eq!(role(&mut b, 2, 6), Ok(2));
    // a is a slave now: its delete is refused and the flow stays.
    assert_eq!(role(&mut a, 0, 0), Ok(3));
    assert_eq!(flow_mod(&mut a, 3), Some((1, 10)));
    assert!(priority9());
    // An older generation id is stale, whoever sends it; the roles stay.
    assert_eq!(role(&mut a, 2, 4), Err((11, 0)));
    assert_eq!(role(&mut b, 0, 0), Ok(2));
    // EQUAL needs no generation and may write; the master may.
    assert_eq!(role(&mut a, 1, 0), Ok(1));
    assert_eq!(flow_mod(&mut b, 3), None);
    assert!(!priority9());
}
