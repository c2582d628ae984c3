//! End-to-end tests of the router under churn, in network namespaces (root; an explicit skip
//! otherwise): inbound routed connections next to masquerade, the first packet to an unresolved
//! next hop, neighbours that change MAC, isolated bridges and icc=off, host-unique gateway MACs,
//! ICMP fragmentation needed in front of a VXLAN tunnel.

mod common;

use common::netns::*;

/// Containers `c1` (172.30.0.2 on br0, gateway .1) and an outside host `o` (10.251.0.2 on ext,
/// gateway 10.251.0.1), each with a route through uvs to the other's subnet.
fn two_bridges(t: &mut Topology, d: &Daemon, p: &str) {
    let n = |s: &str| format!("{p}{s}");
    d.ctl(&["add-br", "br0", "gateway=172.30.0.1/24"]);
    d.ctl(&["add-br", "ext", "gateway=10.251.0.1/24"]);
    attach(
        t,
        d,
        ("br0", &n("c1"), &n("p1")),
        "afxdp",
        "172.30.0.2/24",
        &[],
    );
    attach(
        t,
        d,
        ("ext", &n("o"), &n("po")),
        "afxdp",
        "10.251.0.2/24",
        &[],
    );
    sh(&[
        "ip",
        "-n",
        &n("c1"),
        "route",
        "add",
        "default",
        "via",
        "172.30.0.1",
    ]);
    sh(&[
        "ip",
        "-n",
        &n("o"),
        "route",
        "add",
        "172.30.0.0/24",
        "via",
        "10.251.0.1",
    ]);
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
