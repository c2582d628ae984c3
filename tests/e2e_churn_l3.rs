//! End-to-end tests of the router under churn, in network namespaces (root; an explicit skip
//! otherwise): inbound routed connections next to masquerade, the first packet to an unresolved
//! next hop, neighbours that change MAC, isolated bridges and icc=off, host-unique gateway MACs,
//! ICMP fragmentation needed in front of a VXLAN tunnel.

mod common;

use common::netns::*;

/// Containers `c1` (172.30.0.2 on br0, gateway .1) and an outside host `o` (10.251.0.2 on ext,
/// gateway 10.251.0.1), each with a route through uvs to the other's subnet.
fn two_bridges(t: &mut Topology, d: &Daemon, p: &str) {
    inside_outside(t, d, p, "afxdp", "172.30.0", "10.251.0");
    route_add(&format!("{p}o"), "172.30.0.0/24", "10.251.0.1");
}

#[test]
fn masquerade_keeps_inbound_routed_connections() {
    if !root_or_skip("masquerade_keeps_inbound_routed_connections") {
        return;
    }
    let p = prefix("cm");
    let n = |s: &str| format!("{p}{s}");
    let mut t = Topology::default();
    let d = Daemon::start(&p, &[]);
    two_bridges(&mut t, &d, &p);
    d.ctl(&["nat-add", "masquerade", "src=172.30.0.0/24", "out=ext"]);
    let inside = HttpServer::start(&n("c1"), "172.30.0.2", 80, "inside\n");
    assert!(
        ping(&n("o"), "172.30.0.2", 2),
        "the outside host pings the container by address"
    );
    assert_eq!(
        curl(&n("o"), "http://172.30.0.2/").as_deref(),
        Some("inside\n"),
        "and reaches its server"
    );
    assert!(
        inside.requests().contains("10.251.0.2 - -"),
        "the container sees the real client: {}",
        inside.requests()
    );
    // Outbound connections are still masqueraded.
    let outside = HttpServer::start(&n("o"), "10.251.0.2", 8000, "outside\n");
    assert_eq!(
        curl(&n("c1"), "http://10.251.0.2:8000/").as_deref(),
        Some("outside\n")
    );
    assert!(
        outside.requests().contains("10.251.0.1 - -"),
        "{}",
        outside.requests()
    );
    let ct = d.ctl(&["ct-show"]);
    assert!(
        ct.contains("10.251.0.2") && ct.contains("172.30.0.2"),
        "{ct}"
    );
}

#[test]
fn first_packet_to_an_unresolved_host_is_delivered() {
    if !root_or_skip("first_packet_to_an_unresolved_host_is_delivered") {
        return;
    }
    let p = prefix("cq");
    let n = |s: &str| format!("{p}{s}");
    let mut t = Topology::default();
    let d = Daemon::start(&p, &[]);
    d.ctl(&["add-br", "br0", "gateway=172.30.0.1/24"]);
    d.ctl(&["add-br", "ext", "gateway=10.251.0.1/24"]);
    // A port joining a bridge with a gateway hears a gratuitous ARP for it: with arp_accept the
    // container's kernel makes a neighbour entry from it without ever asking.
    t.container(&n("c1"), &n("p1"), "172.30.0.2/24");
    sh(&[
        "ip",
        "netns",
        "exec",
        &n("c1"),
        "sysctl",
        "-qw",
        "net.ipv4.conf.eth0.arp_accept=1",
    ]);
    d.ctl(&["add-port", "br0", &n("p1"), "type=afxdp"]);
    assert!(
        eventually(5, || sh(&[
            "ip",
            "-n",
            &n("c1"),
            "neigh",
            "show",
            "172.30.0.1"
        ])
        .contains("lladdr 02:75:76")),
        "gratuitous ARP on port join"
    );
    member(&mut t, &d, &p, "ext", "o", "afxdp", "10.251.0.2/24");
    route_add(&n("c1"), "default", "172.30.0.1");
    route_add(&n("o"), "172.30.0.0/24", "10.251.0.1");
    // Nothing resolved 10.251.0.2 yet: the first echo waits in the hold queue for the ARP reply.
    assert!(
        t.exec_ok(&n("c1"), &["ping", "-c", "1", "-W", "3", "10.251.0.2"]),
        "the very first ping gets its reply"
    );
    let stats = d.ctl(&["stats"]);
    assert!(!stats.contains("arp queued 0,"), "{stats}");
    assert!(!stats.contains("arp-pending"), "{stats}");
    let neigh = d.ctl(&["neigh-show"]);
    assert!(
        neigh
            .lines()
            .any(|l| l.contains("10.251.0.2") && l.contains("REACHABLE")),
        "{neigh}"
    );
    // Nobody at 10.251.0.99: after 3 requests the sender hears host unreachable, as from Linux.
    let out = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &n("c1"),
            "ping",
            "-c",
            "1",
            "-W",
            "6",
            "10.251.0.99",
        ])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.contains("Destination Host Unreachable"), "{out}");
    let neigh = d.ctl(&["neigh-show"]);
    assert!(
        neigh
            .lines()
            .any(|l| l.contains("10.251.0.99") && l.contains("FAILED")),
        "{neigh}"
    );
}

#[test]
fn neighbour_follows_a_host_replaced_behind_the_same_address() {
    if !root_or_skip("neighbour_follows_a_host_replaced_behind_the_same_address") {
        return;
    }
    let p = prefix("cr");
    let n = |s: &str| format!("{p}{s}");
    let mut t = Topology::default();
    let d = Daemon::start(&p, &[]);
    two_bridges(&mut t, &d, &p);
    assert!(ping(&n("c1"), "10.251.0.2", 2));
    // The host behind 10.251.0.2 is replaced by one with another MAC that says nothing (Linux
    // sends no gratuitous ARP for that by default).
    sh(&[
        "ip",
        "-n",
        &n("o"),
        "link",
        "set",
        "eth0",
        "address",
        "02:00:00:aa:bb:cc",
    ]);
    assert!(
        !ping(&n("c1"), "10.251.0.2", 1),
        "the router still uses the old MAC right after the change"
    );
    // REACHABLE (30 s) -> STALE -> DELAY (5 s) -> unicast probes to the old MAC (3 s) ->
    // broadcast: the new host answers. Linux's timers, not the 300 s aging.
    let t0 = std::time::Instant::now();
    assert!(
        eventually(50, || ping(&n("c1"), "10.251.0.2", 1)),
        "reachable again well before the aging time: {}",
        d.ctl(&["neigh-show"])
    );
    eprintln!("reachable again after {:.1} s", t0.elapsed().as_secs_f64());
    let neigh = d.ctl(&["neigh-show"]);
    assert!(neigh.contains("02:00:00:aa:bb:cc"), "{neigh}");
}

#[test]
fn isolated_bridges_and_icc_off_like_docker() {
    if !root_or_skip("isolated_bridges_and_icc_off_like_docker") {
        return;
    }
    let p = prefix("ci");
    let n = |s: &str| format!("{p}{s}");
    let mut t = Topology::default();
    let d = Daemon::start(&p, &[]);
    // Two user networks (isolated, one with icc off) and a non-isolated uplink.
    d.ctl(&[
        "add-br",
        "neta",
        "gateway=172.30.1.1/24",
        "isolated=on",
        "icc=off",
    ]);
    d.ctl(&["add-br", "netb", "gateway=172.30.2.1/24", "isolated=on"]);
    d.ctl(&["add-br", "ext", "gateway=10.251.0.1/24"]);
    member(&mut t, &d, &p, "neta", "a", "afxdp", "172.30.1.2/24");
    member(&mut t, &d, &p, "neta", "a2", "afxdp", "172.30.1.3/24");
    member(&mut t, &d, &p, "netb", "b", "afxdp", "172.30.2.2/24");
    member(&mut t, &d, &p, "ext", "o", "afxdp", "10.251.0.2/24");
    for (ns, gw) in [
        ("a", "172.30.1.1"),
        ("a2", "172.30.1.1"),
        ("b", "172.30.2.1"),
    ] {
        route_add(&n(ns), "default", gw);
    }
    d.ctl(&["nat-add", "masquerade", "src=172.30.1.0/24", "out=ext"]);
    let show = d.ctl(&["show"]);
    assert!(show.contains("isolated, icc=off"), "{show}");

    assert!(
        !ping(&n("a"), "172.30.2.2", 1),
        "isolated from the other network"
    );
    assert!(
        ping(&n("a"), "10.251.0.2", 1),
        "masquerade out through the uplink"
    );
    let _web = HttpServer::start(&n("a"), "172.30.1.2", 80, "a\n");
    d.ctl(&[
        "nat-add",
        "dnat",
        "in=ext",
        "proto=tcp",
        "port=8080",
        "to=172.30.1.2:80",
    ]);
    assert_eq!(
        curl(&n("o"), "http://10.251.0.1:8080/").as_deref(),
        Some("a\n"),
        "port mapping in"
    );
    assert!(
        !ping(&n("a"), "172.30.1.3", 1),
        "icc=off: no container to container"
    );
    assert!(
        ping(&n("a"), "172.30.1.1", 1),
        "icc=off: the gateway answers"
    );
    let stats = d.ctl(&["stats"]);
    assert!(
        stats.contains("bridge-isolated=") && stats.contains("icc-denied="),
        "{stats}"
    );

    d.ctl(&["set-br", "neta", "isolated=off", "icc=on"]);
    // (The containers' kernels retry their failed ARP entries at their own pace.)
    assert!(
        eventually(10, || ping(&n("a"), "172.30.2.2", 1)),
        "isolation lifted"
    );
    assert!(
        eventually(10, || ping(&n("a"), "172.30.1.3", 1)),
        "icc on again"
    );
    let err =
        String::from_utf8_lossy(&d.ctl_raw(&["set-br", "neta", "icc=maybe"]).stderr).into_owned();
    assert!(err.contains("icc"), "{err}");
}

#[test]
fn gateway_mac_is_unique_per_host_and_stable() {
    if !root_or_skip("gateway_mac_is_unique_per_host_and_stable") {
        return;
    }
    let p = prefix("ch");
    let n = |s: &str| format!("{p}{s}");
    let dir = std::env::temp_dir().join(format!("uvs-hostid-{p}"));
    let _ = std::fs::remove_dir_all(&dir);
    let id_a = dir.join("a/host-id");
    let id_b = dir.join("b/host-id");
    let gw_mac = |d: &Daemon| -> String {
        let show = d.ctl(&["show"]);
        let line = show
            .lines()
            .find(|l| l.starts_with("bridge ul"))
            .unwrap()
            .to_string();
        line.split_whitespace()
            .find(|w| w.starts_with("02:75:76"))
            .unwrap_or_else(|| panic!("{show}"))
            .trim_end_matches([')', ','])
            .to_string()
    };
    // Two "hosts" name their uplink bridge alike.
    let start = |tag: &str, file: &std::path::Path| {
        let d = Daemon::start_env(
            &n(tag),
            &[],
            &[("UVS_HOST_ID_FILE", file.to_str().unwrap())],
        );
        d.ctl(&["add-br", "ul", "gateway=10.252.0.1/24"]);
        d
    };
    let mut t = Topology::default();
    let a = start("a", &id_a);
    let mac_a = gw_mac(&a);
    {
        let b = start("b", &id_b);
        assert_ne!(mac_a, gw_mac(&b), "two hosts, two gateway MACs");
    }
    assert!(id_a.exists() && id_b.exists(), "ids persisted");
    // A container on host A resolves the gateway to that MAC.
    attach(
        &mut t,
        &a,
        ("ul", &n("c"), &n("pc")),
        "afxdp",
        "10.252.0.2/24",
        &[],
    );
    assert!(ping(&n("c"), "10.252.0.1", 1));
    let neigh = sh(&["ip", "-n", &n("c"), "neigh", "show", "10.252.0.1"]);
    assert!(neigh.contains(&mac_a), "{neigh} vs {mac_a}");
    drop(t);
    drop(a);
    // Restarted, host A keeps its MAC.
    let a = start("a2", &id_a);
    assert_eq!(gw_mac(&a), mac_a, "stable across restarts");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn routed_packet_too_big_for_the_tunnel_gets_frag_needed() {
    if !root_or_skip("routed_packet_too_big_for_the_tunnel_gets_frag_needed") {
        return;
    }
    let p = prefix("cv");
    let n = |s: &str| format!("{p}{s}");
    let mut t = Topology::default();
    let d = Daemon::start(&p, &[]);
    let hb = n("hb");
    vxlan_uvs_side(&mut t, &d, &p, &hb);
    // Host B: a kernel vxlan device with an address in the overlay (its MTU: 1450).
    kernel_vtep(&hb);
    sh(&[
        "ip",
        "-n",
        &hb,
        "addr",
        "add",
        "192.168.42.2/24",
        "dev",
        "vx42",
    ]);
    sh(&["ip", "-n", &hb, "link", "set", "vx42", "up"]);
    route_add(&hb, "10.9.0.0/24", "192.168.42.254");
    // The overlay bridge gets a gateway; container c2 (MTU 1500) on br1 is routed into it.
    d.ctl(&["set-br", "br0", "gateway=192.168.42.254/24"]);
    d.ctl(&["add-br", "br1", "gateway=10.9.0.1/24"]);
    attach(
        &mut t,
        &d,
        ("br1", &n("c2"), &n("p2")),
        "afxdp",
        "10.9.0.2/24",
        &[],
    );
    route_add(&n("c2"), "default", "10.9.0.1");
    assert!(ping(&n("c2"), "192.168.42.2", 2), "routed into the tunnel");
    // 1472 + 28 = 1500 bytes of IP: 50 too many for the tunnel. DF set: the router says so.
    let big = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &n("c2"),
            "ping",
            "-M",
            "do",
            "-s",
            "1472",
            "-c",
            "1",
        ])
        .args(["-W", "2", "192.168.42.2"])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&big.stdout).into_owned();
    assert!(
        out.contains("mtu = 1450"),
        "ICMP fragmentation needed:\n{out}"
    );
    let stats = d.ctl(&["stats"]);
    assert!(stats.contains("frag-needed=1"), "{stats}");
    // The sender learned the path MTU: the largest packet that fits goes through.
    assert!(
        t.exec_ok(
            &n("c2"),
            &[
                "ping",
                "-M",
                "do",
                "-s",
                "1422",
                "-c",
                "1",
                "-W",
                "2",
                "192.168.42.2"
            ]
        ),
        "1450 bytes fit"
    );
}
