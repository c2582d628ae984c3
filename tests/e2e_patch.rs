//! Patch ports end to end (root; an explicit skip otherwise): two bridges joined by a
//! `type=patch` pair carry ping and TCP between containers on AF_XDP and TAP ports, learn each
//! other's MACs on the patch ports, carry VLANs over a trunk pair, obey OpenFlow flows that
//! match the patch port, stop (counted `patch-no-peer`, saying why) when the peer goes and work
//! again when it comes back; a loop of two pairs is cut after 64 crossings (`patch-loop`, as
//! OVS's translation depth) and undone by deleting one.

mod common;

use common::netns::*;

/// br0 {p}n1 (afxdp) <-> patch {p}ta/{p}tb <-> br1 {p}n2 (tap).
fn joined(tag: &str) -> Option<(Daemon, Topology, String)> {
    if !root_or_skip(tag) {
        return None;
    }
    let p = prefix(tag);
    let mut t = Topology::default();
    let d = Daemon::start(&p, &[]);
    d.ctl(&["add-br", "br0"]);
    d.ctl(&["add-br", "br1"]);
    let (ta, tb) = (format!("{p}ta"), format!("{p}tb"));
    attach(
        &mut t,
        &d,
        ("br0", &format!("{p}n1"), &format!("{p}p1")),
        "afxdp",
        "192.0.2.1/24",
        &[],
    );
    attach(
        &mut t,
        &d,
        ("br1", &format!("{p}n2"), &format!("{p}p2")),
        "tap",
        "192.0.2.2/24",
        &[],
    );
    d.ctl(&["add-port", "br0", &ta, "type=patch", &format!("peer={tb}")]);
    d.ctl(&["add-port", "br1", &tb, "type=patch", &format!("peer={ta}")]);
    Some((d, t, p))
}

#[test]
fn a_patch_pair_joins_two_bridges() {
    let Some((d, t, p)) = joined("xa") else {
        return;
    };
    let (n1, n2, ta, tb) = (
        format!("{p}n1"),
        format!("{p}n2"),
        format!("{p}ta"),
        format!("{p}tb"),
    );
    assert!(
        ping(&n1, "192.0.2.2", 3),
        "ping br0 -> br1 over the patch pair"
    );
    assert!(
        ping(&n2, "192.0.2.1", 3),
        "ping br1 -> br0 over the patch pair"
    );
    let bps = iperf3_tcp(&n2, &n1, "192.0.2.2", 2);
    eprintln!("patch: iperf3 TCP {:.2} Gbit/s", bps / 1e9);
    assert!(bps > 10e6, "TCP over the patch pair carried {bps} bit/s");
    // Each bridge learned the other side's MAC on its patch port.
    let (m1, m2) = (t.mac(&n1, "eth0"), t.mac(&n2, &format!("{p}p2")));
    let on = |br: &str, mac: &str| {
        d.ctl(&["fdb-show", br])
            .lines()
            .find(|l| l.contains(mac))
            .unwrap_or_default()
            .to_string()
    };
    assert!(
        on("br0", &m2).contains(&ta),
        "{m2} on {ta}: {}",
        on("br0", &m2)
    );
    assert!(
        on("br1", &m1).contains(&tb),
        "{m1} on {tb}: {}",
        on("br1", &m1)
    );
    // Counters move on both ends, in both directions; the TAP's super-frames cross with their
    // partial checksums in the descriptor: no checksum is computed at a crossing.
    for port in [&ta, &tb] {
        let s = d.port_stats(port);
        assert!(s["rx_packets"].as_u64().unwrap() > 100, "{port}: {s}");
        assert!(s["tx_packets"].as_u64().unwrap() > 100, "{port}: {s}");
        assert_eq!(s["csum_completed"], 0, "{port}: {s}");
    }
    let show = d.port_show(&ta);
    assert_eq!(show["type"], "patch", "{show}");
    assert_eq!(show["state"], "up", "{show}");
    assert!(
        show["details"]
            .as_str()
            .unwrap()
            .contains(&format!("peer={tb}")),
        "{show}"
    );
    // The pair is part of the running configuration.
    let saved = d.ctl(&["save-config"]);
    assert!(
        saved.contains("type = \"patch\"") && saved.contains(&format!("peer = \"{tb}\"")),
        "{saved}"
    );
}

#[test]
fn a_patch_port_without_its_peer_drops_and_says_why() {
    let Some((d, _t, p)) = joined("xb") else {
        return;
    };
    let (n1, ta, tb) = (format!("{p}n1"), format!("{p}ta"), format!("{p}tb"));
    assert!(ping(&n1, "192.0.2.2", 2));
    d.ctl(&["del-port", &tb]);
    assert!(
        !ping(&n1, "192.0.2.2", 2),
        "br1 reached with the peer deleted"
    );
    let show = d.port_show(&ta);
    assert_eq!(show["state"], "down", "{show}");
    assert!(
        show["reason"]
            .as_str()
            .unwrap()
            .contains(&format!("no port '{tb}'")),
        "{show}"
    );
    let drops = d.port_stats(&ta)["drops"]["patch-no-peer"]
        .as_u64()
        .unwrap();
    assert!(drops > 0, "{}", d.port_stats(&ta));
    // A peer that names another port does not link either.
    d.ctl(&["add-port", "br1", &tb, "type=patch", "peer=elsewhere"]);
    assert!(
        !ping(&n1, "192.0.2.2", 2),
        "linked to a peer that names another port"
    );
    let show = d.port_show(&ta);
    assert_eq!(show["state"], "down");
    assert!(
        show["reason"]
            .as_str()
            .unwrap()
            .contains("has peer=elsewhere"),
        "{show}"
    );
    d.ctl(&["del-port", &tb]);
    d.ctl(&["add-port", "br1", &tb, "type=patch", &format!("peer={ta}")]);
    assert!(ping(&n1, "192.0.2.2", 3), "not linked again by a new peer");
    assert_eq!(d.port_show(&ta)["state"], "up");
    // Bad specs are refused, naming the field.
    for (args, needle) in [
        (vec!["add-port", "br0", "zz1", "type=patch"], "peer"),
        (
            vec!["add-port", "br0", "zz1", "type=patch", "peer=zz1"],
            "peer",
        ),
        (
            vec!["add-port", "br0", "zz1", "type=tap", "peer=zz2"],
            "peer",
        ),
    ] {
        let out = d.ctl_raw(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains(needle),
            "{args:?}: {err}"
        );
    }
}

#[test]
fn vlans_cross_a_trunk_pair_and_flows_match_the_patch_port() {
    if !root_or_skip("vlans_cross_a_trunk_pair") {
        return;
    }
    let p = prefix("xv");
    let mut t = Topology::default();
    let d = Daemon::start(&p, &[]);
    d.ctl(&["add-br", "br0"]);
    d.ctl(&["add-br", "br1"]);
    let n = |s: &str| format!("{p}{s}");
    for (br, name, kind, ip, vlan) in [
        ("br0", "a", "afxdp", "192.0.2.1/24", "vlan=10"),
        ("br0", "b", "afxdp", "198.51.100.1/24", "vlan=20"),
        ("br1", "c", "tap", "192.0.2.2/24", "vlan=10"),
        ("br1", "d", "afxdp", "198.51.100.2/24", "vlan=30"),
    ] {
        let (ns, pt) = (n(name), n(&format!("p{name}")));
        attach(&mut t, &d, (br, &ns, &pt), kind, ip, &[vlan]);
    }
    let (ta, tb) = (n("ta"), n("tb"));
    let peer = |x: &str| format!("peer={x}");
    d.ctl(&[
        "add-port",
        "br0",
        &ta,
        "type=patch",
        &peer(&tb),
        "trunks=10,20",
    ]);
    d.ctl(&[
        "add-port",
        "br1",
        &tb,
        "type=patch",
        &peer(&ta),
        "trunks=10,20,30",
    ]);
    // VLAN 10 crosses; 20 (only in br0) and 30 (only in br1) do not meet.
    assert!(
        ping(&n("a"), "192.0.2.2", 3),
        "VLAN 10 across the trunk pair"
    );
    assert!(!ping(&n("b"), "198.51.100.2", 2), "VLAN 20 reached VLAN 30");
    // br1's MAC table has a's MAC in VLAN 10 on the patch port.
    let fdb = d.ctl(&["fdb-show", "br1"]);
    let ma = t.mac(&n("a"), "eth0");
    let line = fdb.lines().find(|l| l.contains(&ma)).unwrap_or_default();
    assert!(line.contains(&tb) && line.contains("10"), "{fdb}");
    // `trace` follows the frame across the pair into br1, tagged as the trunk sends it.
    let mc = t.mac(&n("c"), &n("pc"));
    let ofport_a = d.port_show(&n("pa"))["ofport"].as_u64().unwrap();
    let trace = d.ctl(&[
        "trace",
        "br0",
        &format!(
            "in_port={ofport_a},icmp,dl_src={ma},dl_dst={mc},nw_src=192.0.2.1,nw_dst=192.0.2.2"
        ),
    ]);
    assert!(
        trace.contains(&format!("patch {ta} -> {tb} (bridge br1)")),
        "{trace}"
    );
    let far = trace
        .lines()
        .skip_while(|l| !l.contains("(bridge br1)"))
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        far.contains("VLAN 10") && far.contains(&format!("learned on port {}", n("pc"))),
        "{trace}"
    );
    // A broadcast is followed through the flood into br1 too.
    let trace = d.ctl(&[
        "trace",
        "br0",
        &format!("in_port={ofport_a},arp,dl_src={ma},dl_dst=ff:ff:ff:ff:ff:ff"),
    ]);
    let far = trace
        .lines()
        .skip_while(|l| !l.contains(&format!("patch {ta} -> {tb} (bridge br1)")))
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        far.contains("ingress: port") && far.contains("VLAN 10") && far.contains("flood"),
        "{trace}"
    );
    // A flow on the patch port's number: ICMP coming in over the pair is dropped.
    let ofport = d.port_show(&tb)["ofport"].as_u64().unwrap();
    d.ctl(&[
        "add-flow",
        "br1",
        &format!("priority=100,icmp,in_port={ofport},actions=drop"),
    ]);
    d.ctl(&["add-flow", "br1", "priority=0,actions=NORMAL"]);
    assert!(!ping(&n("a"), "192.0.2.2", 2), "the flow did not drop ICMP");
    let dump = d.ctl(&["dump-flows", "br1"]);
    assert!(
        flow_packets(&dump, &format!("in_port={ofport}")).unwrap_or(0) > 0,
        "{dump}"
    );
    d.ctl(&["del-flows", "br1", &format!("in_port={ofport}")]);
    assert!(ping(&n("a"), "192.0.2.2", 3), "ICMP after the flow went");
}

#[test]
fn a_loop_of_two_pairs_is_cut_at_64_crossings_and_undone() {
    let Some((d, _t, p)) = joined("xl") else {
        return;
    };
    let (n1, tc, td) = (format!("{p}n1"), format!("{p}tc"), format!("{p}td"));
    // A second pair makes a loop: every flooded frame goes round. Storm control off, so only
    // the crossing bound holds it.
    for (br, port, peer) in [("br0", &tc, &td), ("br1", &td, &tc)] {
        d.ctl(&[
            "add-port",
            br,
            port,
            "type=patch",
            &format!("peer={peer}"),
            "flood_rate=off",
        ]);
    }
    for x in ["ta", "tb"] {
        d.ctl(&["set-port", &format!("{p}{x}"), "flood_rate=off"]);
    }
    // ARP broadcasts enter the loop (the kernel asks 3 times, a second apart): each goes round
    // at most 64 crossings in its pass, then is dropped as patch-loop (as OVS stops at its
    // translation depth); without the bound it went round ~500,000 times a second.
    let rx = |x: &str| d.port_stats(x)["rx_packets"].as_u64().unwrap_or(0);
    let ta = format!("{p}ta");
    let before = rx(&ta);
    let _ = ping(&n1, "192.0.2.77", 1);
    std::thread::sleep(std::time::Duration::from_secs(2));
    let went = rx(&ta) - before;
    let looped: u64 = [ta.clone(), format!("{p}tb"), tc.clone(), td.clone()]
        .iter()
        .map(|x| d.port_stats(x)["drops"]["patch-loop"].as_u64().unwrap_or(0))
        .sum();
    eprintln!("loop: {went} frames round {ta}, {looped} dropped as patch-loop");
    assert!(went > 10, "the broadcast did not go round: {went}");
    assert!(looped > 0, "nothing dropped as patch-loop");
    assert!(went < 5_000, "{went} frames round the loop");
    // trace follows the loop a bounded way.
    let tr = d.ctl(&["trace", "br0", "in_port=1,arp,dl_dst=ff:ff:ff:ff:ff:ff"]);
    assert!(tr.contains("not traced further"), "{tr}");
    assert!(tr.lines().count() < 2_000, "{} lines", tr.lines().count());
    // The switch still answers and, with the loop cut, forwards again.
    d.ctl(&["del-port", &td]);
    d.ctl(&["fdb-flush", "br0"]);
    d.ctl(&["fdb-flush", "br1"]);
    assert!(
        eventually(10, || ping(&n1, "192.0.2.2", 1)),
        "no ping after the loop was cut:\n{}",
        d.ctl(&["stats"])
    );
}

#[test]
fn controllers_see_a_patch_port_link_as_its_peer_comes_and_goes() {
    if !root_or_skip("controllers_see_a_patch_port_link") || !common::openflow::have_ofctl() {
        return;
    }
    // No namespace is needed: patch ports have no netdev.
    let p = prefix("xs");
    let dir = std::env::temp_dir().join(format!("uvs-xs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let d = Daemon::start(&p, &["--mgmt-dir", dir.to_str().unwrap()]);
    d.ctl(&["add-br", "br0"]);
    d.ctl(&["add-br", "br1"]);
    let sock = dir.join("br0.mgmt");
    common::openflow::wait_for(|| sock.exists(), "the br0.mgmt socket");
    let target = format!("unix:{}", sock.display());
    let m = common::openflow::Monitor::start(&target, &dir, Some("OpenFlow13"), "xs");
    let (ta, tb) = (format!("{p}ta"), format!("{p}tb"));
    d.ctl(&["add-port", "br0", &ta, "type=patch", &format!("peer={tb}")]);
    m.wait(&format!("ADD: 1({ta})"), 1);
    m.wait("state:      LINK_DOWN", 1);
    // An address of its own (controllers send LLDP from it; all zeros is no source).
    let mac = uvs::wire::MacAddr::from_u64(uvs::openflow::made_mac("br0", &ta));
    assert!(
        m.text().contains(&format!("ADD: 1({ta}): addr:{mac}")),
        "{mac}: {}",
        m.text()
    );
    d.ctl(&["add-port", "br1", &tb, "type=patch", &format!("peer={ta}")]);
    m.wait(&format!("MOD: 1({ta})"), 1);
    m.wait("state:      LIVE", 1);
    d.ctl(&["del-port", &tb]);
    m.wait(&format!("MOD: 1({ta})"), 2);
    m.wait("state:      LINK_DOWN", 2);
    drop(m);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn set_port_moves_a_patch_port_to_another_peer() {
    let Some((d, mut t, p)) = joined("xp") else {
        return;
    };
    let n = |s: &str| format!("{p}{s}");
    assert!(ping(&n("n1"), "192.0.2.2", 2));
    // A third bridge whose container has br1's container's address.
    d.ctl(&["add-br", "br2"]);
    attach(
        &mut t,
        &d,
        ("br2", &n("n3"), &n("p3")),
        "afxdp",
        "192.0.2.2/24",
        &[],
    );
    d.ctl(&[
        "add-port",
        "br2",
        &n("tc"),
        "type=patch",
        &format!("peer={}", n("ta")),
    ]);
    assert_eq!(
        d.port_show(&n("tc"))["state"],
        "down",
        "tc before ta names it"
    );
    // OVS's `set interface ta options:peer=tc`.
    d.ctl(&["set-port", &n("ta"), &format!("peer={}", n("tc"))]);
    assert_eq!(d.port_show(&n("tc"))["state"], "up");
    let tb = d.port_show(&n("tb"));
    assert_eq!(tb["state"], "down", "{tb}");
    assert!(tb["reason"].as_str().unwrap().contains("has peer="), "{tb}");
    assert!(t.exec_ok(&n("n1"), &["ip", "neigh", "flush", "all"]));
    let before = d.port_stats(&n("p3"))["tx_packets"].as_u64().unwrap_or(0);
    assert!(
        ping(&n("n1"), "192.0.2.2", 2),
        "br2's container over the new pair"
    );
    assert!(d.port_stats(&n("p3"))["tx_packets"].as_u64().unwrap_or(0) > before);
    assert!(
        d.ctl(&["save-config"])
            .contains(&format!("peer = \"{}\"", n("tc")))
    );
    // A non-patch port takes no peer.
    let bad = d.ctl_raw(&["set-port", &n("p3"), "peer=x"]);
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("peer: applies to type=patch ports only")
    );
}
