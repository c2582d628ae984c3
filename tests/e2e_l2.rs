//! End-to-end L2 tests in network namespaces (root; an explicit skip otherwise): "containers"
//! on AF_XDP ports, on TAP ports, and mixed ping each other and carry iperf3 TCP; the FDB shows
//! their MACs on the right ports; a second bridge stays isolated; VLAN access and trunk ports
//! carry 802.1Q tags to and from a namespace; bad control commands get errors naming the problem.

mod common;

use common::netns::*;

fn two_containers(kinds: (&str, &str), tag: &str) {
    if !root_or_skip(tag) {
        return;
    }
    let p = prefix(tag);
    let mut t = Topology::default();
    let d = Daemon::start(&p, &[]);
    d.ctl(&["add-br", "br0"]);
    let (n1, n2) = (format!("{p}n1"), format!("{p}n2"));
    let (v1, v2) = (format!("{p}p1"), format!("{p}p2"));
    let i1 = attach(&mut t, &d, ("br0", &n1, &v1), kinds.0, "192.0.2.1/24", &[]);
    let i2 = attach(&mut t, &d, ("br0", &n2, &v2), kinds.1, "192.0.2.2/24", &[]);
    assert!(ping(&n1, "192.0.2.2", 3), "ping c1 -> c2 through uvs");
    assert!(ping(&n2, "192.0.2.1", 3), "ping c2 -> c1 through uvs");
    let bps = iperf3_tcp(&n2, &n1, "192.0.2.2", 2);
    eprintln!("{tag}: iperf3 TCP {:.2} Gbit/s", bps / 1e9);
    assert!(bps > 10e6, "TCP through uvs carried {bps} bit/s");
    // The FDB has each container's MAC on its own port.
    let fdb = d.ctl(&["fdb-show", "br0"]);
    let (m1, m2) = (t.mac(&n1, &i1), t.mac(&n2, &i2));
    let line_of = |m: &str| {
        fdb.lines()
            .find(|l| l.contains(m))
            .unwrap_or_default()
            .to_string()
    };
    assert!(line_of(&m1).contains(&v1), "{m1} on {v1} in:\n{fdb}");
    assert!(line_of(&m2).contains(&v2), "{m2} on {v2} in:\n{fdb}");
    assert!(d.port_stats(&v1)["tx_packets"].as_u64().unwrap() > 100);
}

#[test]
fn afxdp_containers_ping_and_tcp() {
    two_containers(("afxdp", "afxdp"), "ea");
}

#[test]
fn tap_containers_ping_and_tcp() {
    two_containers(("tap", "tap"), "et");
}

#[test]
fn mixed_afxdp_and_tap_ping_and_tcp() {
    two_containers(("afxdp", "tap"), "em");
}

#[test]
fn second_bridge_is_isolated() {
    if !root_or_skip("second_bridge_is_isolated") {
        return;
    }
    let p = prefix("ei");
    let mut t = Topology::default();
    let d = Daemon::start(&p, &[]);
    d.ctl(&["add-br", "br0"]);
    d.ctl(&["add-br", "br1"]);
    let n = |s: &str| format!("{p}{s}");
    member(&mut t, &d, &p, "br0", "a", "afxdp", "192.0.2.1/24");
    member(&mut t, &d, &p, "br0", "b", "tap", "192.0.2.2/24");
    member(&mut t, &d, &p, "br1", "c", "afxdp", "192.0.2.3/24");
    member(&mut t, &d, &p, "br1", "d", "afxdp", "192.0.2.4/24");
    assert!(ping(&n("a"), "192.0.2.2", 2));
    assert!(ping(&n("c"), "192.0.2.4", 2));
    assert!(!ping(&n("a"), "192.0.2.3", 2), "br0 must not reach br1");
    assert!(!ping(&n("d"), "192.0.2.2", 2), "br1 must not reach br0");
    let fdb0 = d.ctl(&["fdb-show", "br0"]);
    assert!(
        !fdb0.contains(&n("pc")) && !fdb0.contains(&n("pd")),
        "{fdb0}"
    );
}

#[test]
fn vlan_access_and_trunk_carry_tags() {
    if !root_or_skip("vlan_access_and_trunk_carry_tags") {
        return;
    }
    let p = prefix("ev");
    let mut t = Topology::default();
    let d = Daemon::start(&p, &[]);
    d.ctl(&["add-br", "br0"]);
    let n = |s: &str| format!("{p}{s}");
    attach(
        &mut t,
        &d,
        ("br0", &n("a"), &n("pa")),
        "afxdp",
        "192.0.2.1/24",
        &["vlan=10"],
    );
    attach(
        &mut t,
        &d,
        ("br0", &n("b"), &n("pb")),
        "tap",
        "192.0.2.2/24",
        &["vlan=20"],
    );
    // A trunk to a namespace that speaks 802.1Q itself (this kernel has no 8021q module, so a
    // raw-socket probe sends tagged ARP requests and checks the replies come back tagged).
    t.container(&n("t"), &n("pt"), "198.51.100.1/24");
    d.ctl(&["add-port", "br0", &n("pt"), "type=afxdp", "trunks=10,20"]);
    let probe = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/tools/vlan_arp_probe.py");
    let arp = |vid: &str, target: &str| {
        t.exec_ok(
            &n("t"),
            &["python3", probe, "eth0", vid, "192.0.2.99", target, "2"],
        )
    };
    assert!(
        arp("10", "192.0.2.1"),
        "trunk VLAN 10 reaches the access-10 container"
    );
    assert!(
        arp("20", "192.0.2.2"),
        "trunk VLAN 20 reaches the access-20 (tap) container"
    );
    assert!(
        !arp("20", "192.0.2.1"),
        "VLAN 20 must not reach the VLAN 10 container"
    );
    assert!(
        !ping(&n("a"), "192.0.2.2", 2),
        "VLAN 10 and 20 are separate"
    );
    let fdb = d.ctl(&["fdb-show", "br0"]);
    assert!(
        fdb.lines()
            .any(|l| l.contains(&n("pt")) && l.contains(" 10 ")),
        "{fdb}"
    );
    assert!(
        fdb.lines()
            .any(|l| l.contains(&n("pt")) && l.contains(" 20 ")),
        "{fdb}"
    );
    // `set-port` moves the access port to VLAN 20 in place (OVS's `set port P tag=20`): the
    // two containers reach each other, the trunk's VLAN 10 no longer reaches it, and the
    // change is the port's configuration.
    d.ctl(&["set-port", &n("pa"), "vlan=20"]);
    assert!(d.ctl(&["show"]).contains(&format!("port {}: ", n("pa"))));
    assert!(ping(&n("a"), "192.0.2.2", 3), "both in VLAN 20 now");
    assert!(arp("20", "192.0.2.1"), "trunk VLAN 20 reaches it");
    assert!(!arp("10", "192.0.2.1"), "VLAN 10 no longer does");
    let saved = d.ctl(&["save-config"]);
    assert!(saved.contains("vlan = 20"), "{saved}");
    let err = |args: &[&str]| String::from_utf8_lossy(&d.ctl_raw(args).stderr).into_owned();
    assert!(err(&["set-port", &n("pa"), "vlan=x"]).contains("vlan: 'x'"));
    let e = err(&["set-port", &n("pa"), "trunks=10"]);
    assert!(e.contains("vlan= and trunks= cannot both be set"), "{e}");
    assert!(
        e.contains("vlan=none trunks=... makes this access port a trunk"),
        "{e}"
    );
    assert!(err(&["set-port", "nosuch", "vlan=5"]).contains("no port named 'nosuch'"));
    let show = d.ctl(&["show"]);
    assert!(
        show.lines()
            .any(|l| l.contains(&n("pa")) && l.contains("vlan=20")),
        "a refused change changes nothing: {show}"
    );
}

#[test]
fn bad_commands_get_errors_and_daemon_keeps_serving() {
    if !root_or_skip("bad_commands_get_errors_and_daemon_keeps_serving") {
        return;
    }
    let p = prefix("ee");
    let d = Daemon::start(&p, &[]);
    let err = |args: &[&str]| {
        let o = d.ctl_raw(args);
        assert!(!o.status.success(), "{args:?} should fail");
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    assert!(err(&["add-port", "nobr", "x"]).contains("no bridge named 'nobr'"));
    d.ctl(&["add-br", "br0"]);
    assert!(err(&["add-br", "br0"]).contains("already exists"));
    // A port name taken on another bridge: the error says where.
    let tp = format!("{p}tp");
    d.ctl(&["add-port", "br0", &tp, "type=tap"]);
    d.ctl(&["add-br", "brq"]);
    let e = err(&["add-port", "brq", &tp, "type=tap"]);
    assert!(
        e.contains(&format!("port '{tp}' already exists (in bridge 'br0')")),
        "{e}"
    );
    d.ctl(&["del-br", "brq"]);
    d.ctl(&["del-port", &tp]);
    let missing = format!("{p}none");
    assert!(err(&["add-port", "br0", &missing, "type=afxdp"]).contains("does not exist"));
    assert!(err(&["add-port", "br0", "x", "type=gre"]).contains("type: 'gre'"));
    assert!(err(&["add-port", "br0", "x", "vlan=9999"]).contains("vlan"));
    assert!(err(&["fdb-show"]).contains("usage"));
    assert!(err(&["frobnicate"]).contains("unknown command"));
    assert!(err(&["del-port", "nothere"]).contains("no port named"));
    // Options where ovs-ofctl users put them; unknown ones named.
    let v: serde_json::Value = serde_json::from_str(&d.ctl(&["stats", "--json"])).unwrap();
    assert!(v.is_object(), "{v}");
    assert!(err(&["dump-flows", "--bogus", "br0"]).contains("unknown option '--bogus'"));
    d.ctl(&["add-flows", "br0", "priority=5,udp,actions=drop"]);
    assert!(
        d.ctl(&["dump-flows", "br0"])
            .contains("priority=5,udp actions=drop")
    );
    d.ctl(&["del-flows", "--strict", "br0", "priority=5,udp"]);
    assert!(!d.ctl(&["dump-flows", "br0"]).contains("priority=5,udp"));
    assert!(
        err(&["add-port", "br0", "x", "type=tap", "ofport_request=70000"])
            .contains("ofport_request: 70000 out of range (1 to 65279)")
    );
    // A bridge named with del-port is checked (as ovs-vsctl): a typo removes nothing.
    let tap = format!("{p}t");
    d.ctl(&["add-port", "br0", &tap, "type=tap"]);
    d.ctl(&["add-br", "br1"]);
    assert!(err(&["del-port", "nobr", &tap]).contains("BRIDGE: no bridge named 'nobr'"));
    assert!(
        err(&["del-port", "br1", &tap])
            .contains(&format!("PORT: port '{tap}' is in bridge 'br0', not 'br1'"))
    );
    assert!(err(&["del-port", "br1", "nothere"]).contains("has no port named 'nothere'"));
    assert!(d.ctl(&["show"]).contains(&format!("port {tap}")));
    // Static FDB entries: fdb-add puts one in a VLAN its port carries (an access port's
    // own when none is given), fdb-flush (with or without a port) forgets learned entries
    // only, fdb-del removes one.
    let acc = format!("{p}v");
    d.ctl(&["add-port", "br0", &acc, "type=tap", "vlan=20"]);
    assert!(
        err(&["fdb-add", "br0", "02:00:00:00:00:97", &acc, "vlan=30"])
            .contains("vlan: the port (vlan=20) does not carry VLAN 30")
    );
    d.ctl(&["fdb-add", "br0", "02:00:00:00:00:98", &acc]);
    d.ctl(&["fdb-add", "br0", "02:00:00:00:00:99", &tap]);
    let statics = |fdb: &str| {
        fdb.lines()
            .any(|l| l.contains(&acc) && l.contains(" 20 ") && l.contains("02:00:00:00:00:98"))
            && fdb
                .lines()
                .any(|l| l.contains(&tap) && l.contains("02:00:00:00:00:99"))
    };
    let fdb = d.ctl(&["fdb-show", "br0"]);
    assert!(statics(&fdb), "{fdb}");
    // (The TAP devices' own frames may have taught a learned entry or two: those go.)
    d.ctl(&["fdb-flush", "br0", &acc]);
    d.ctl(&["fdb-flush", "br0"]);
    let fdb = d.ctl(&["fdb-show", "br0"]);
    assert!(statics(&fdb), "static entries stay: {fdb}");
    assert!(
        err(&["fdb-del", "br0", "02:00:00:00:00:98"])
            .contains("MAC: 02:00:00:00:00:98 is not in bridge 'br0''s FDB in VLAN 0")
    );
    d.ctl(&["fdb-del", "br0", "02:00:00:00:00:98", "vlan=20"]);
    let after = d.ctl(&["fdb-show", "br0"]);
    assert!(
        !after.contains("02:00:00:00:00:98") && after.contains("02:00:00:00:00:99"),
        "{after}"
    );
    d.ctl(&["del-port", "br0", &acc]);
    d.ctl(&["del-port", "br0", &tap]);
    d.ctl(&["del-br", "br1"]);
    // Still serving, and nothing half-made.
    let show = d.ctl(&["show"]);
    assert!(
        show.contains("bridge br0") && !show.contains("port "),
        "{show}"
    );
    assert!(d.ctl(&["list-commands"]).contains("fdb-flush"));
}

#[test]
fn ports_come_and_go_live() {
    if !root_or_skip("ports_come_and_go_live") {
        return;
    }
    let p = prefix("el");
    let mut t = Topology::default();
    let d = Daemon::start(&p, &[]);
    d.ctl(&["add-br", "br0"]);
    let n = |s: &str| format!("{p}{s}");
    member(&mut t, &d, &p, "br0", "a", "afxdp", "192.0.2.1/24");
    member(&mut t, &d, &p, "br0", "b", "afxdp", "192.0.2.2/24");
    member(&mut t, &d, &p, "br0", "c", "tap", "192.0.2.3/24");
    assert!(ping(&n("a"), "192.0.2.3", 2));
    // A ping stream between a and b keeps flowing while c is removed and re-added.
    let stream = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &n("a"),
            "ping",
            "-c",
            "30",
            "-i",
            "0.1",
            "-W",
            "1",
            "192.0.2.2",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("ping");
    let ns_c = n("c");
    let pc = n("pc");
    let churn = std::thread::scope(|s| {
        let h = s.spawn(|| {
            std::thread::sleep(std::time::Duration::from_millis(500));
            d.ctl(&["del-port", "br0", &pc]);
            let gone = !t.exec_ok(&ns_c, &["ip", "link", "show", &pc]);
            d.ctl(&["add-port", "br0", &pc, "type=tap"]);
            gone
        });
        h.join().unwrap()
    });
    let out = stream.wait_with_output().expect("ping output");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(churn, "del-port removed the TAP device");
    assert!(
        text.contains(" 0% packet loss"),
        "no loss between untouched ports:\n{text}"
    );
    // The re-added TAP is new: move it into c again and reach it.
    t.adopt(&n("c"), &n("pc"), "192.0.2.3/24");
    assert!(ping(&n("b"), "192.0.2.3", 2), "re-added port works");
    let show = d.ctl(&["show"]);
    assert!(show.contains(&n("pc")), "{show}");
}
