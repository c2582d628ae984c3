//! OpenFlow events from a real daemon in network namespaces (root; skipped otherwise, and
//! without `ovs-ofctl`): `ovs-ofctl -O OpenFlow13 monitor` and the default OpenFlow 1.0 one on
//! `BRIDGE.mgmt` see the PACKET_IN of a host's ARP through a table-miss flow
//! `priority=0,actions=controller`, PORT_STATUS when the port's veth goes down and up and when
//! the port is deleted, and FLOW_REMOVED when a `send_flow_rem` flow's idle timeout ends.

mod common;

use common::netns::*;
use common::openflow::{Monitor, have_ofctl, wait_for};

#[test]
fn monitors_see_packet_in_port_status_and_flow_removed() {
    if !root_or_skip("monitors_see_packet_in_port_status_and_flow_removed") {
        return;
    }
    if !have_ofctl() {
        return;
    }
    let p = prefix("oe");
    let n = |s: &str| format!("{p}{s}");
    let dir = std::env::temp_dir().join(format!("uvs-oe-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut t = Topology::default();
    let d = Daemon::start(&p, &["--mgmt-dir", dir.to_str().unwrap()]);
    d.ctl(&["add-br", "br0"]);
    let sock = dir.join("br0.mgmt");
    wait_for(|| sock.exists(), "the br0.mgmt socket");
    let target = format!("unix:{}", sock.display());
    let m13 = Monitor::start(&target, &dir, Some("OpenFlow13"), "13");
    let m10 = Monitor::start(&target, &dir, None, "10");
    t.container(&n("h1"), &n("p1"), "10.0.52.1/24");
    d.ctl(&["add-port", "br0", &n("p1"), "type=afxdp"]);
    for m in [&m13, &m10] {
        m.wait("ADD: 1(", 1);
    }
    // With the port's hardware address (the veth's).
    let mac = std::fs::read_to_string(format!("/sys/class/net/{}/address", n("p1"))).unwrap();
    let add = format!("ADD: 1({}): addr:{}", n("p1"), mac.trim());
    assert!(m13.text().contains(&add), "{add}\n{}", m13.text());
    d.ctl(&["add-flow", "br0", "priority=0,actions=controller"]);
    d.ctl(&[
        "add-flow",
        "br0",
        "send_flow_rem,idle_timeout=1,priority=9,udp,actions=drop",
    ]);
    // The host's ARP for a neighbour goes to the controller (unanswered: ping fails).
    assert!(!ping(&n("h1"), "10.0.52.2", 1));
    m13.wait("(via no_match)", 1);
    m10.wait("(via action)", 1);
    assert!(m13.text().contains("arp,vlan_tci=0x0000"), "{}", m13.text());
    // The port's netdev set down and up: the port goes down and comes back (MODIFY).
    sh(&["ip", "link", "set", &n("p1"), "down"]);
    for m in [&m13, &m10] {
        m.wait("MOD: 1(", 1);
    }
    sh(&["ip", "link", "set", &n("p1"), "up"]);
    for m in [&m13, &m10] {
        m.wait("MOD: 1(", 2);
        m.wait("reason=idle", 1);
    }
    d.ctl(&["del-port", &n("p1")]);
    for m in [&m13, &m10] {
        m.wait("DEL: 1(", 1);
    }
    let text = m13.text();
    eprintln!("{text}");
    assert!(text.contains("priority=9,udp reason=idle"), "{text}");
    drop((m13, m10));
    let _ = std::fs::remove_dir_all(&dir);
}
