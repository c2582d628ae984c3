//! OpenFlow events from a real daemon in network namespaces (root; skipped otherwise, and
//! without `ovs-ofctl`): `ovs-ofctl -O OpenFlow13 monitor` and the default OpenFlow 1.0 one on
//! `BRIDGE.mgmt` see the PACKET_IN of a host's ARP through a table-miss flow
//! `priority=0,actions=controller`, PORT_STATUS when the port's veth goes down and up and when
//! the port is deleted, and FLOW_REMOVED when a `send_flow_rem` flow's idle timeout ends.

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::netns::*;

struct Monitor {
    child: Child,
    out: PathBuf,
}

impl Drop for Monitor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.out);
    }
}

impl Monitor {
    fn start(target: &str, rundir: &std::path::Path, version: Option<&str>, tag: &str) -> Monitor {
        let out = rundir.join(format!("monitor-{tag}.txt"));
        let f = std::fs::File::create(&out).unwrap();
        let mut c = Command::new("ovs-ofctl");
        if let Some(v) = version {
            c.args(["-O", v]);
        }
        let child = c
            .args(["monitor", target, "watch:"])
            .env("OVS_RUNDIR", rundir)
            .stdin(Stdio::null())
            .stdout(f.try_clone().unwrap())
            .stderr(f)
            .spawn()
            .expect("ovs-ofctl monitor");
        let m = Monitor { child, out };
        m.wait("FLOW_MONITOR reply", 1);
        m
    }

    fn text(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    fn wait(&self, what: &str, n: usize) {
        let end = Instant::now() + Duration::from_secs(20);
        while self.text().matches(what).count() < n {
            assert!(
                Instant::now() < end,
                "no {n} x '{what}' from the monitor:\n{}",
                self.text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[test]
fn monitors_see_packet_in_port_status_and_flow_removed() {
    if !root_or_skip("monitors_see_packet_in_port_status_and_flow_removed") {
        return;
    }
    if Command::new("ovs-ofctl").arg("--version").output().is_err() {
        eprintln!("skipped: ovs-ofctl is not installed");
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
    let end = Instant::now() + Duration::from_secs(10);
    while !sock.exists() {
        assert!(Instant::now() < end, "no {}", sock.display());
        std::thread::sleep(Duration::from_millis(20));
    }
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
