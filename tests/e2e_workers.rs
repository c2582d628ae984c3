//! Several workers end to end (root; an explicit skip otherwise): `uvs run --cores 0,1` with
//! AF_PACKET ports on veths. Each worker opens its own socket on every port (a fanout group
//! per netdev), so the kernel spreads the containers' connections over both workers:
//! - bridged: parallel TCP connections are carried, both workers receive and send frames
//!   (`stats` per worker), the bridge learned both containers once (learning is shared, not
//!   repeated per worker) and stops flooding;
//! - routed: the gateways answer and route on whichever worker a packet reaches (ARP replies
//!   seen by one worker resolve the neighbour on all);
//! - what needs one worker (NAT, AF_XDP ports) is refused with an error that says so.

mod common;

use common::netns::*;

fn two_cores() -> bool {
    let n = std::thread::available_parallelism().map_or(1, |n| n.get());
    if n < 2 {
        eprintln!("SKIP: two workers need two cores (this machine has {n})");
    }
    n >= 2
}

#[test]
fn two_workers_share_afpacket_ports_and_both_carry_traffic() {
    if !root_or_skip("two_workers_share_afpacket_ports_and_both_carry_traffic") || !two_cores() {
        return;
    }
    let p = prefix("kw");
    let mut t = Topology::default();
    let d = Daemon::start(&p, &["--cores", "0,1", "--dns-upstream", "off"]);
    d.ctl(&["add-br", "br0"]);
    let (n1, n2) = (format!("{p}n1"), format!("{p}n2"));
    attach(
        &mut t,
        &d,
        ("br0", &n1, &format!("{p}p1")),
        "afpacket",
        "10.79.0.1/24",
        &[],
    );
    attach(
        &mut t,
        &d,
        ("br0", &n2, &format!("{p}p2")),
        "afpacket",
        "10.79.0.2/24",
        &[],
    );
    assert!(ping(&n1, "10.79.0.2", 3), "ping through two workers");
    let bps = iperf3_tcp_streams(&n2, &n1, "10.79.0.2", 3, 8);
    eprintln!("two workers, 8 TCP connections: {:.2} Gbit/s", bps / 1e9);
    assert!(bps > 10e6, "TCP carried {bps} bit/s");
    let v = d.json(&["stats"]);
    let workers = v["workers"].as_array().expect("stats lists the workers");
    assert_eq!(workers.len(), 2, "{v}");
    for (i, w) in workers.iter().enumerate() {
        let (rx, tx) = (w["rx_packets"].as_u64(), w["tx_packets"].as_u64());
        eprintln!("worker {i}: rx {rx:?} tx {tx:?} frames, core {}", w["core"]);
        assert!(
            rx > Some(100) && tx > Some(100),
            "worker {i} carried nothing: {v}"
        );
        assert_eq!(w["core"], i, "worker {i} pinned to core {i}: {v}");
    }
    // Summed counters: what the two workers received is what the ports count.
    let port_rx: u64 = ["p1", "p2"]
        .iter()
        .map(|n| {
            v["ports"][format!("{p}{n}")]["rx_packets"]
                .as_u64()
                .unwrap()
        })
        .sum();
    let worker_rx: u64 = workers
        .iter()
        .map(|w| w["rx_packets"].as_u64().unwrap())
        .sum();
    assert_eq!(port_rx, worker_rx, "{v}");
    // Each container's MAC was learned once, by the worker that saw it first; the other
    // worker took it from there (its copy is not counted), so the bridge floods only the
    // first frames.
    let br = &v["bridges"]["br0"];
    assert!(
        br["learned"].as_u64() <= Some(4),
        "learned per worker: {br}"
    );
    assert!(br["flooded"].as_u64() < Some(50), "flooded: {br}");
    let text = d.ctl(&["stats"]);
    assert!(
        text.contains("worker 0:") && text.contains("worker 1:"),
        "{text}"
    );

    // Refused with several workers, nothing changed.
    let out = d.ctl_raw(&["nat-add", "masquerade", "src=10.79.0.0/24", "out=br0"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("several workers"),
        "{err}"
    );
    assert!(!d.ctl(&["nat-show"]).contains("masquerade"));
}

#[test]
fn two_workers_route_between_gateways() {
    if !root_or_skip("two_workers_route_between_gateways") || !two_cores() {
        return;
    }
    let p = prefix("kv");
    let n = |s: &str| format!("{p}{s}");
    let mut t = Topology::default();
    let d = Daemon::start(&p, &["--cores", "0,1", "--dns-upstream", "off"]);
    inside_outside(&mut t, &d, &p, "afpacket", "172.31.79", "10.251.9");
    route_add(&n("o"), "172.31.79.0/24", "10.251.9.1");
    assert!(ping(&n("c1"), "10.251.9.2", 3), "routed ping");
    assert!(ping(&n("o"), "172.31.79.2", 3), "routed ping back");
    let bps = iperf3_tcp_streams(&n("o"), &n("c1"), "10.251.9.2", 2, 8);
    eprintln!(
        "two workers routed, 8 TCP connections: {:.2} Gbit/s",
        bps / 1e9
    );
    assert!(bps > 10e6, "routed TCP carried {bps} bit/s");
    let v = d.json(&["stats"]);
    let routed = v["router"]["routed"].as_u64().unwrap_or(0);
    assert!(routed > 100, "{v}");
    for (i, w) in v["workers"].as_array().unwrap().iter().enumerate() {
        assert!(
            w["rx_packets"].as_u64() > Some(10),
            "worker {i} routed nothing: {v}"
        );
    }
    // Both workers know the outside host's MAC (one of them may never have seen its ARP).
    let neigh = d.ctl(&["neigh-show"]);
    assert!(neigh.contains("10.251.9.2"), "{neigh}");
    // AF_XDP needs one socket per worker and queue: refused, naming the port.
    t.container(&n("x"), &n("px"), "10.251.9.3/24");
    let out = d.ctl_raw(&["add-port", "ext", &n("px"), "type=afxdp"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains(&n("px")) && err.contains("several workers"),
        "{err}"
    );
}
