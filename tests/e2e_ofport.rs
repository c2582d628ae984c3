//! End-to-end tests of OpenFlow port numbers and action lists in network namespaces (root; an
//! explicit skip otherwise): flows by number stay in their bridge when ports come and go, a port
//! that comes back gets its number again, `in_port=N` is accepted, `NORMAL,output:P` runs both
//! actions and `trace` says so, `dump-flows --names` shows names; an internal port named as
//! its bridge is OpenFlow's `LOCAL` for uvs and for `ovs-ofctl` (1.0 and 1.3).

mod common;

use common::netns::*;

/// tx packets uvs sent on `port`, from `stats --json`.
fn tx_packets(d: &Daemon, port: &str) -> u64 {
    d.port_stats(port)["tx_packets"].as_u64().unwrap_or(0)
}

/// The ofport `show --json` reports for `port`.
fn ofport(d: &Daemon, port: &str) -> u64 {
    d.port_show(port)["ofport"]
        .as_u64()
        .unwrap_or_else(|| panic!("no port {port}"))
}

#[test]
fn flows_by_number_stay_in_their_bridge() {
    if !root_or_skip("flows_by_number_stay_in_their_bridge") {
        return;
    }
    let p = prefix("eo");
    let n = |s: &str| format!("{p}{s}");
    let mut t = Topology::default();
    let d = Daemon::start(&p, &[]);
    d.ctl(&["add-br", "a"]);
    d.ctl(&["add-br", "b"]);
    // a1 and a2 on bridge a; b1 on bridge b has a2's address, so a leak would be answered.
    t.container(&n("a1"), &n("pa1"), "10.0.7.1/24");
    t.container(&n("a2"), &n("pa2"), "10.0.7.2/24");
    t.container(&n("b1"), &n("pb1"), "10.0.7.2/24");
    d.ctl(&["add-port", "a", &n("pa1"), "type=afxdp"]);
    d.ctl(&["add-port", "a", &n("pa2"), "type=afxdp", "ofport_request=7"]);
    assert_eq!(ofport(&d, &n("pa1")), 1);
    assert_eq!(ofport(&d, &n("pa2")), 7, "ofport_request");
    let show = d.ctl(&["show"]);
    assert!(show.contains("ofport=7"), "{show}");
    // Numbers, both in_port= and output:.
    d.ctl(&["add-flow", "a", "priority=10,in_port=1,actions=output:7"]);
    d.ctl(&["add-flow", "a", "priority=10,in_port=7,actions=output:1"]);
    assert!(ping(&n("a1"), "10.0.7.2", 2), "a1 <-> a2 by port numbers");
    let dump = d.ctl(&["dump-flows", "a"]);
    assert!(dump.contains("in_port=1 actions=output:7"), "{dump}");
    let named = d.ctl(&["dump-flows", "--names", "a"]);
    assert!(
        named.contains(&format!("in_port={} actions=output:{}", n("pa1"), n("pa2"))),
        "{named}"
    );

    // a2 goes, b1 comes on bridge b (it takes a2's internal slot): nothing may reach b1.
    d.ctl(&["del-port", &n("pa2")]);
    d.ctl(&["add-port", "b", &n("pb1"), "type=afxdp"]);
    assert_eq!(ofport(&d, &n("pb1")), 1, "numbers are per bridge");
    let before = tx_packets(&d, &n("pb1"));
    assert!(
        !ping(&n("a1"), "10.0.7.2", 2),
        "a flow of bridge a must not reach bridge b"
    );
    let after = tx_packets(&d, &n("pb1"));
    assert_eq!(before, after, "uvs sent nothing to b1");

    // a2 comes back: same number, the flows work again without being touched.
    t.exec_ok(&n("a2"), &["true"]);
    d.ctl(&["add-port", "a", &n("pa2"), "type=afxdp"]);
    assert_eq!(ofport(&d, &n("pa2")), 7, "same name, same number");
    assert!(ping(&n("a1"), "10.0.7.2", 2));

    // A new port does not take a number a flow refers to.
    t.container(&n("a3"), &n("pa3"), "10.0.7.3/24");
    d.ctl(&["add-flow", "a", "priority=5,in_port=2,actions=drop"]);
    d.ctl(&["add-port", "a", &n("pa3"), "type=afxdp"]);
    assert_eq!(
        ofport(&d, &n("pa3")),
        3,
        "1 and 7 are ports', 2 is a flow's"
    );
    let o = d.ctl_raw(&["add-port", "b", &n("pa3"), "ofport_request=1"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("already exists") || err.contains("ofport_request"),
        "{err}"
    );
}

#[test]
fn normal_then_output_runs_both_and_trace_says_so() {
    if !root_or_skip("normal_then_output_runs_both_and_trace_says_so") {
        return;
    }
    let p = prefix("en");
    let n = |s: &str| format!("{p}{s}");
    let mut t = Topology::default();
    let d = Daemon::start(&p, &[]);
    d.ctl(&["add-br", "br0"]);
    t.container(&n("a"), &n("pa"), "10.0.8.1/24");
    t.container(&n("b"), &n("pb"), "10.0.8.2/24");
    t.container(&n("m"), &n("pm"), "10.0.8.3/24");
    for port in ["pa", "pb", "pm"] {
        d.ctl(&["add-port", "br0", &n(port), "type=afxdp"]);
    }
    assert!(ping(&n("a"), "10.0.8.2", 1), "learn the MACs");
    let pa = n("pa");
    d.ctl(&[
        "add-flow",
        "br0",
        &format!(
            "priority=10,in_port={pa},icmp,actions=NORMAL,output:{}",
            n("pm")
        ),
    ]);
    let before = tx_packets(&d, &n("pm"));
    assert!(ping(&n("a"), "10.0.8.2", 3), "NORMAL still switches");
    let copies = tx_packets(&d, &n("pm")) - before;
    assert!(copies >= 3, "output:pm ran after NORMAL: {copies} copies");

    // The other order.
    d.ctl(&[
        "add-flow",
        "br0",
        &format!(
            "priority=10,in_port={pa},icmp,actions=output:{},NORMAL",
            n("pm")
        ),
    ]);
    let before = tx_packets(&d, &n("pm"));
    assert!(ping(&n("a"), "10.0.8.2", 3), "NORMAL after output");
    assert!(tx_packets(&d, &n("pm")) - before >= 3);

    let mac_a = t.mac(&n("a"), "eth0");
    let mac_b = t.mac(&n("b"), "eth0");
    let tr = d.ctl(&[
        "trace",
        "br0",
        &format!("in_port={pa},icmp,dl_src={mac_a},dl_dst={mac_b},nw_src=10.0.8.1,nw_dst=10.0.8.2"),
    ]);
    let out_line = tr
        .lines()
        .position(|l| l.contains("output to port 3"))
        .unwrap_or_else(|| panic!("{tr}"));
    let normal_line = tr
        .lines()
        .position(|l| l.contains(&format!("learned on port {}", n("pb"))))
        .unwrap_or_else(|| panic!("{tr}"));
    assert!(out_line < normal_line, "in action order:\n{tr}");
}

/// `trace` admits the packet to a VLAN as ingress does before any table: an access port's
/// VLAN for untagged frames, a trunk's listed VLANs; what the port does not carry is a
/// `vlan-denied` drop; an `in_port` the bridge does not have is an error. (It traced every
/// packet in VLAN 0 or its own tag; found trying uvs as a new user.)
#[test]
fn trace_admits_to_the_ingress_ports_vlan() {
    if !root_or_skip("trace_admits_to_the_ingress_ports_vlan") {
        return;
    }
    let p = prefix("ev");
    let n = |s: &str| format!("{p}{s}");
    let d = Daemon::start(&p, &[]);
    d.ctl(&["add-br", "br0"]);
    d.ctl(&["add-port", "br0", &n("a"), "type=tap", "vlan=10"]);
    d.ctl(&["add-port", "br0", &n("t"), "type=tap", "trunks=10,20"]);
    d.ctl(&["fdb-add", "br0", "02:00:00:00:00:55", &n("t"), "vlan=10"]);
    let trace = |m: &str| {
        let o = d.ctl_raw(&["trace", "br0", m]);
        let text =
            String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr);
        (o.status.success(), text)
    };
    let (ok, tr) = trace(&format!(
        "in_port={},dl_src=02:00:00:00:00:03,dl_dst=02:00:00:00:00:55",
        n("a")
    ));
    assert!(ok, "{tr}");
    assert!(
        tr.contains(&format!("ingress: port {} (vlan=10) -> VLAN 10", n("a"))),
        "{tr}"
    );
    assert!(
        tr.contains(&format!("learned on port {} (VLAN 10)", n("t"))),
        "{tr}"
    );
    for (m, what) in [
        (
            "dl_vlan=30,",
            "does not carry VLAN 30 -> drop (vlan-denied)",
        ),
        ("", "does not carry untagged frames -> drop (vlan-denied)"),
    ] {
        let (ok, tr) = trace(&format!(
            "in_port={},{m}dl_src=02:00:00:00:00:03,dl_dst=02:00:00:00:00:55",
            n("t")
        ));
        assert!(ok && tr.contains(what), "{tr}");
        assert!(!tr.contains("normal:"), "{tr}");
    }
    // NORMAL sees the frame as the actions left it (it traced the ingress VLAN and MAC): a
    // rewritten destination is looked up in the FDB; a tag a flow put on a frame from the
    // access port is refused, as OVS; a trunk frame retagged into a VLAN it carries floods
    // there.
    d.ctl(&["fdb-add", "br0", "02:00:00:00:00:66", &n("t"), "vlan=20"]);
    d.ctl(&[
        "add-flow",
        "br0",
        "priority=9,dl_dst=02:00:00:00:00:77,actions=mod_dl_dst:02:00:00:00:00:55,NORMAL",
    ]);
    d.ctl(&[
        "add-flow",
        "br0",
        "priority=9,dl_dst=02:00:00:00:00:88,actions=mod_vlan_vid:20,NORMAL",
    ]);
    let (ok, tr) = trace(&format!(
        "in_port={},dl_src=02:00:00:00:00:03,dl_dst=02:00:00:00:00:77",
        n("a")
    ));
    assert!(
        ok && tr.contains("02:00:00:00:00:55 learned on port"),
        "{tr}"
    );
    let (ok, tr) = trace(&format!(
        "in_port={},dl_src=02:00:00:00:00:03,dl_dst=02:00:00:00:00:88",
        n("a")
    ));
    assert!(
        ok && tr.contains("normal: a frame tagged (VLAN 20) from access port")
            && tr.contains("-> drop (vlan-denied)"),
        "{tr}"
    );
    let (ok, tr) = trace(&format!(
        "in_port={},dl_vlan=10,dl_src=02:00:00:00:00:03,dl_dst=02:00:00:00:00:88",
        n("t")
    ));
    assert!(ok && tr.contains("unknown in VLAN 20 -> flood"), "{tr}");
    // A flow of another table is printed once with its table (it read `table 3: table=3, ...`).
    d.ctl(&[
        "add-flow",
        "br0",
        "priority=9,dl_dst=02:00:00:00:00:99,actions=goto_table:3",
    ]);
    d.ctl(&["add-flow", "br0", "table=3,priority=10,actions=NORMAL"]);
    let (ok, tr) = trace(&format!(
        "in_port={},dl_src=02:00:00:00:00:03,dl_dst=02:00:00:00:00:99",
        n("a")
    ));
    assert!(
        ok && tr.contains("table 3: priority=10 actions=NORMAL") && !tr.contains("table=3"),
        "{tr}"
    );
    // An IPv6 packet's addresses are printed as given (they read 0.0.0.0).
    let (ok, tr) = trace(&format!(
        "in_port={},icmp6,ipv6_src=2001:db8::1,ipv6_dst=2001:db8::2",
        n("a")
    ));
    assert!(
        ok && tr.contains("ipv6_src=2001:db8::1 ipv6_dst=2001:db8::2"),
        "{tr}"
    );
    let (ok, tr) = trace("in_port=99,dl_dst=02:00:00:00:00:55");
    assert!(
        !ok && tr.contains("in_port: no port 99 in bridge 'br0'"),
        "{tr}"
    );
    for port in ["a", "t"] {
        d.ctl(&["del-port", &n(port)]);
    }
}

#[test]
fn an_internal_port_named_as_its_bridge_is_local() {
    if !root_or_skip("an_internal_port_named_as_its_bridge_is_local") {
        return;
    }
    if !common::openflow::have_ofctl() {
        return;
    }
    let p = prefix("el");
    let n = |s: &str| format!("{p}{s}");
    let br = n("br");
    let dir = std::env::temp_dir().join(format!("uvs-el-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut t = Topology::default();
    let d = Daemon::start(&p, &["--mgmt-dir", dir.to_str().unwrap()]);
    d.ctl(&["add-br", &br]);
    t.container(&n("h1"), &n("p1"), "10.0.61.2/24");
    d.ctl(&["add-port", &br, &n("p1"), "type=afxdp"]);
    d.ctl(&["add-port", &br, &br, "type=internal"]);
    assert_eq!(
        ofport(&d, &br),
        65534,
        "the bridge's own internal port is LOCAL"
    );
    // As OVS, the bridge's own port ignores ofport_request; a port named LOCAL is refused.
    d.ctl(&["del-port", &br]);
    d.ctl(&["add-port", &br, &br, "type=internal", "ofport_request=7"]);
    assert_eq!(
        ofport(&d, &br),
        65534,
        "ofport_request made it an ordinary port"
    );
    let bad = d.ctl_raw(&["add-port", &br, "LOCAL", "type=internal"]);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("OpenFlow's LOCAL"));
    // Its address is the same each time it is made (the host's neighbours keep it right).
    let mac = std::fs::read_to_string(format!("/sys/class/net/{br}/address")).unwrap();
    let want = uvs::wire::MacAddr::from_u64(uvs::openflow::made_mac(&br, &br));
    assert_eq!(mac.trim(), want.to_string());
    assert_eq!(ofport(&d, &n("p1")), 1);
    // The internal port is a TAP: the host side (here moved into a namespace) reaches h1.
    t.netns(&n("lo"));
    t.adopt(&n("lo"), &br, "10.0.61.1/24");
    assert!(ping(&n("h1"), "10.0.61.1", 2), "h1 -> LOCAL");
    let sock = dir.join(format!("{br}.mgmt"));
    common::openflow::wait_for(|| sock.exists(), "the bridge's .mgmt socket");
    let target = format!("unix:{}", sock.display());
    let of = |proto: Option<&str>, args: &[&str]| common::openflow::ofctl_at(&target, proto, args);
    for proto in [None, Some("OpenFlow13")] {
        let show = of(proto, &["show"]);
        assert!(show.contains(&format!("LOCAL({br})")), "{proto:?}: {show}");
    }
    // A flow on in_port=LOCAL drops the replies the local port sends.
    d.ctl(&[
        "add-flow",
        &br,
        "priority=100,icmp,in_port=LOCAL,actions=drop",
    ]);
    d.ctl(&["add-flow", &br, "priority=0,actions=NORMAL"]);
    assert!(
        !ping(&n("h1"), "10.0.61.1", 1),
        "in_port=LOCAL did not match"
    );
    let dump = d.ctl(&["dump-flows", &br]);
    assert!(
        flow_packets(&dump, "in_port=LOCAL").unwrap_or(0) > 0,
        "{dump}"
    );
    for proto in [None, Some("OpenFlow13")] {
        let dump = of(proto, &["dump-flows"]);
        assert!(dump.contains("in_port=LOCAL"), "{proto:?}: {dump}");
    }
    // ovs-ofctl 1.3 replaces it: ICMP from p1 goes only to LOCAL (output:LOCAL), replies NORMAL.
    of(Some("OpenFlow13"), &["del-flows", "in_port=LOCAL"]);
    of(
        Some("OpenFlow13"),
        &["add-flow", "priority=100,icmp,in_port=1,actions=LOCAL"],
    );
    assert!(ping(&n("h1"), "10.0.61.1", 2), "output:LOCAL");
    let dump = of(Some("OpenFlow13"), &["dump-flows"]);
    let line = dump
        .lines()
        .find(|l| l.contains("in_port=1"))
        .unwrap_or_default();
    assert!(line.contains("actions=LOCAL"), "{dump}");
    assert!(flow_packets(&dump, "in_port=1").unwrap_or(0) > 0, "{dump}");
    // LOCAL is given by the name again: no request for it in the running configuration.
    let saved = d.ctl(&["save-config"]);
    assert!(!saved.contains("65534"), "{saved}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn mod_port_takes_a_port_down_and_out_of_floods() {
    if !root_or_skip("mod_port_takes_a_port_down_and_out_of_floods") {
        return;
    }
    let p = prefix("em");
    let n = |s: &str| format!("{p}{s}");
    let dir = std::env::temp_dir().join(format!("uvs-em-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut t = Topology::default();
    let d = Daemon::start(&p, &["--mgmt-dir", dir.to_str().unwrap()]);
    d.ctl(&["add-br", "br0"]);
    t.container(&n("h1"), &n("p1"), "10.0.62.1/24");
    t.container(&n("h2"), &n("p2"), "10.0.62.2/24");
    d.ctl(&["add-port", "br0", &n("p1"), "type=afxdp"]);
    d.ctl(&["add-port", "br0", &n("p2"), "type=afxdp"]);
    assert!(ping(&n("h1"), "10.0.62.2", 2));
    let drops = |reason: &str| {
        d.port_stats(&n("p2"))["drops"][reason]
            .as_u64()
            .unwrap_or(0)
    };
    // down: nothing in, nothing out, counted; the link stays up.
    let out = d.ctl(&["mod-port", "br0", &n("p2"), "down"]);
    assert!(out.contains("down"), "{out}");
    assert!(!ping(&n("h1"), "10.0.62.2", 2), "a down port forwarded");
    assert!(drops("port-no-fwd") > 0 && drops("port-no-recv") > 0);
    let show = d.port_show(&n("p2"));
    assert_eq!(show["state"], "up", "{show}");
    assert!(
        show["details"].as_str().unwrap().contains("config=down"),
        "{show}"
    );
    d.ctl(&["mod-port", "br0", "2", "up"]);
    assert!(ping(&n("h1"), "10.0.62.2", 2), "up again");
    // no-flood: frames to unknown destinations no longer reach p2. (Pings to a MAC nobody has:
    // a flushed FDB is learned again by any frame h2 sends, and with two workers a learned
    // record in flight can undo a flush, so the test does not rely on one.)
    d.ctl(&["mod-port", "br0", &n("p2"), "no-flood"]);
    assert!(t.exec_ok(
        &n("h1"),
        &[
            "ip",
            "neigh",
            "replace",
            "10.0.62.9",
            "lladdr",
            "02:00:00:00:00:99",
            "dev",
            "eth0"
        ]
    ));
    let tx2 = || d.port_stats(&n("p2"))["tx_packets"].as_u64().unwrap_or(0);
    let before = tx2();
    let _ = ping(&n("h1"), "10.0.62.9", 5);
    let flooded = tx2() - before;
    assert!(
        flooded < 5,
        "{flooded} frames to an unknown MAC reached a no-flood port"
    );
    d.ctl(&["mod-port", "br0", &n("p2"), "flood"]);
    assert!(ping(&n("h1"), "10.0.62.2", 2));
    // A flow's ALL still reaches a no-flood port; its FLOOD does not (static neighbours: no
    // ARP broadcast decides the outcome).
    let (m1, m2) = (t.mac(&n("h1"), "eth0"), t.mac(&n("h2"), "eth0"));
    for (ns, ip, mac) in [(n("h1"), "10.0.62.2", &m2), (n("h2"), "10.0.62.1", &m1)] {
        assert!(t.exec_ok(
            &ns,
            &["ip", "neigh", "replace", ip, "lladdr", mac, "dev", "eth0"]
        ));
    }
    d.ctl(&["mod-port", "br0", &n("p2"), "no-flood"]);
    d.ctl(&["add-flow", "br0", "priority=10,icmp,actions=ALL"]);
    assert!(
        ping(&n("h1"), "10.0.62.2", 2),
        "ALL left out a no-flood port"
    );
    d.ctl(&["add-flow", "br0", "priority=10,icmp,actions=FLOOD"]);
    assert!(
        !ping(&n("h1"), "10.0.62.2", 1),
        "FLOOD reached a no-flood port"
    );
    d.ctl(&["del-flows", "br0", "icmp"]);
    d.ctl(&["mod-port", "br0", &n("p2"), "flood"]);
    // trace says what mod-port does to a frame.
    d.ctl(&["mod-port", "br0", &n("p2"), "no-forward"]);
    let to_h2 = format!("in_port=1,icmp,dl_src={m1},dl_dst={m2},nw_src=10.0.62.1,nw_dst=10.0.62.2");
    let trace = d.ctl(&["trace", "br0", &to_h2]);
    assert!(
        trace.contains("no-forward -> drop (port-no-fwd)"),
        "{trace}"
    );
    d.ctl(&["mod-port", "br0", &n("p1"), "no-receive"]);
    let trace = d.ctl(&["trace", "br0", &to_h2]);
    assert!(
        trace.contains("no-receive -> drop (port-no-recv)"),
        "{trace}"
    );
    d.ctl(&["mod-port", "br0", &n("p1"), "receive"]);
    d.ctl(&["mod-port", "br0", &n("p2"), "forward"]);
    // Words it does not know are refused, naming them.
    let bad = d.ctl_raw(&["mod-port", "br0", &n("p2"), "no-stp"]);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("no STP"));
    let bad = d.ctl_raw(&["mod-port", "br0", "nosuch", "down"]);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("no port 'nosuch'"));
    // The same over OpenFlow 1.0 and 1.3 with ovs-ofctl (PORT_MOD, and PORT_DESC's config).
    if common::openflow::have_ofctl() {
        let sock = dir.join("br0.mgmt");
        common::openflow::wait_for(|| sock.exists(), "the br0.mgmt socket");
        let target = format!("unix:{}", sock.display());
        let of =
            |proto: Option<&str>, args: &[&str]| common::openflow::ofctl_at(&target, proto, args);
        for proto in [None, Some("OpenFlow13")] {
            of(proto, &["mod-port", &n("p2"), "down"]);
            let desc = of(proto, &["show"]);
            assert!(desc.contains("PORT_DOWN"), "{proto:?}: {desc}");
            // As OVS (which sets the netdev down), the link reads down to a controller.
            if proto.is_some() {
                assert!(desc.contains("LINK_DOWN"), "{proto:?}: {desc}");
            }
            assert!(
                !ping(&n("h1"), "10.0.62.2", 1),
                "{proto:?}: down over OpenFlow"
            );
            of(proto, &["mod-port", &n("p2"), "up"]);
            assert!(
                ping(&n("h1"), "10.0.62.2", 2),
                "{proto:?}: up over OpenFlow"
            );
        }
        of(None, &["mod-port", &n("p2"), "no-flood"]);
        assert!(of(None, &["show"]).contains("NO_FLOOD"));
        // 1.3 port statistics say how long each port has been there (it read 0 s).
        let ports = of(Some("OpenFlow13"), &["dump-ports"]);
        let secs: Vec<f64> = ports
            .split("duration=")
            .skip(1)
            .filter_map(|r| r.split('s').next()?.parse().ok())
            .collect();
        assert!(secs.len() == 2 && secs.iter().all(|&s| s > 2.0), "{ports}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
