//! End-to-end offload tests in network namespaces (root; an explicit skip otherwise). TAP ports
//! open with `IFF_VNET_HDR` and TSO, so the containers' stacks send 64 KiB TCP super-frames
//! with partial checksums:
//! - TAP <-> TAP on one bridge passes them through untouched (both directions);
//! - TAP <-> AF_XDP cuts them in software at output (AF_XDP takes no offloads);
//! - TAP <-> TAP routed between two bridges and through masquerade: the router and NAT rewrite
//!   headers of super-frames, output refreshes the partial checksum.
//!
//! Each asserts that data arrives and that the TAP ports really moved super-frames (the
//! port's `stats` counters), and prints Gbit/s (not a timed assertion).

mod common;

use common::netns::*;

fn tcp_both_ways(tag: &str, a: (&str, &str), b: (&str, &str)) -> (f64, f64) {
    let ab = iperf3_tcp(b.0, a.0, b.1, 2);
    let ba = iperf3_tcp(a.0, b.0, a.1, 2);
    eprintln!(
        "{tag}: iperf3 TCP {:.2} Gbit/s one way, {:.2} Gbit/s the other",
        ab / 1e9,
        ba / 1e9
    );
    assert!(ab > 10e6, "{tag}: TCP carried {ab} bit/s");
    assert!(ba > 10e6, "{tag}: TCP carried {ba} bit/s (reverse)");
    (ab, ba)
}

#[test]
fn tap_to_tap_passes_super_frames_untouched() {
    let Some((d, _t, p)) = two_on_one_bridge(("tap", "tap"), "oo", "10.77.0") else {
        return;
    };
    let show = d.ctl(&["show"]);
    assert!(show.contains("offload=csum,tso"), "{show}");
    let (n1, n2) = (format!("{p}n1"), format!("{p}n2"));
    let feat = sh(&[
        "ip",
        "netns",
        "exec",
        &n1,
        "ethtool",
        "-k",
        &format!("{p}p1"),
    ]);
    assert!(
        feat.contains("tcp-segmentation-offload: on"),
        "the container's TAP end advertises TSO:\n{feat}"
    );
    tcp_both_ways("tap<->tap", (&n1, "10.77.0.1"), (&n2, "10.77.0.2"));
    let j = d.port_stats(&format!("{p}p1"));
    eprintln!("{j}");
    // Frames of more than one MTU went out of uvs on p1: super-frames were passed through.
    let (pk, by) = (
        j["tx_packets"].as_u64().unwrap(),
        j["tx_bytes"].as_u64().unwrap(),
    );
    assert!(
        by / pk.max(1) > 1600,
        "average frame {} bytes",
        by / pk.max(1)
    );
}

#[test]
fn tap_to_afxdp_segments_in_software() {
    let Some((d, _t, p)) = two_on_one_bridge(("tap", "afxdp"), "oa", "10.77.0") else {
        return;
    };
    let (n1, n2) = (format!("{p}n1"), format!("{p}n2"));
    tcp_both_ways("tap<->afxdp", (&n1, "10.77.0.1"), (&n2, "10.77.0.2"));
    let tap = d.port_stats(&format!("{p}p1"));
    let xdp = d.port_stats(&format!("{p}p2"));
    eprintln!("tap {tap}\nafxdp {xdp}");
    // Super-frames came in on the TAP port; the AF_XDP port only sent MTU-sized frames.
    let (pk, by) = (
        tap["rx_packets"].as_u64().unwrap(),
        tap["rx_bytes"].as_u64().unwrap(),
    );
    assert!(by / pk.max(1) > 1600, "TAP received super-frames: {tap}");
    let (pk, by) = (
        xdp["tx_packets"].as_u64().unwrap(),
        xdp["tx_bytes"].as_u64().unwrap(),
    );
    assert!(pk > 0 && by / pk <= 1514, "AF_XDP sent segments: {xdp}");
}

#[test]
fn tap_super_frames_routed_and_masqueraded() {
    if !root_or_skip("tap_super_frames_routed_and_masqueraded") {
        return;
    }
    let p = prefix("or");
    let n = |s: &str| format!("{p}{s}");
    let mut t = Topology::default();
    let d = Daemon::start(&p, &[]);
    inside_outside(&mut t, &d, &p, "tap", "172.31.77", "10.251.0");
    route_add(&n("o"), "172.31.77.0/24", "10.251.0.1");
    assert!(ping(&n("c1"), "10.251.0.2", 2), "routed ping");
    tcp_both_ways(
        "tap routed",
        (&n("c1"), "172.31.77.2"),
        (&n("o"), "10.251.0.2"),
    );
    // Masquerade: the outside has no route back now; only NAT lets replies return.
    sh(&["ip", "-n", &n("o"), "route", "del", "172.31.77.0/24"]);
    d.ctl(&["nat-add", "masquerade", "src=172.31.77.0/24", "out=ext"]);
    let bps = iperf3_tcp(&n("o"), &n("c1"), "10.251.0.2", 2);
    eprintln!("tap masquerade: iperf3 TCP {:.2} Gbit/s", bps / 1e9);
    assert!(bps > 10e6, "TCP through masquerade carried {bps} bit/s");
    let j = d.port_stats(&n("po"));
    eprintln!("{j}");
    let (pk, by) = (
        j["tx_packets"].as_u64().unwrap(),
        j["tx_bytes"].as_u64().unwrap(),
    );
    assert!(by / pk.max(1) > 1600, "super-frames routed out: {j}");
}

#[test]
fn tap_super_frames_segmented_before_vxlan_with_good_checksums_on_the_wire() {
    if !root_or_skip("tap_super_frames_segmented_before_vxlan") {
        return;
    }
    let p = prefix("ov");
    let n = |s: &str| format!("{p}{s}");
    let mut t = Topology::default();
    let d = Daemon::start(&p, &[]);
    let hb = n("hb");
    d.ctl(&["add-br", "ul", "gateway=10.252.0.1/24"]);
    d.ctl(&["add-br", "br0"]);
    attach(
        &mut t,
        &d,
        ("ul", &hb, &n("ua")),
        "afxdp",
        "10.252.0.2/24",
        &[],
    );
    attach(
        &mut t,
        &d,
        ("br0", &n("c1"), &n("p1")),
        "tap",
        "192.168.42.1/24",
        &["mtu=1450"],
    );
    d.ctl(&[
        "add-port",
        "br0",
        "vx0",
        "type=vxlan",
        "vni=42",
        "local_ip=10.252.0.1",
        "remote_ip=10.252.0.2",
    ]);
    // Host B: kernel vxlan 42 on a kernel bridge with container c2 (MTU 1450).
    let c2 = n("c2");
    kernel_bridged_vtep(&mut t, &hb, &c2);
    assert!(
        ping(&n("c1"), "192.168.42.2", 3),
        "c1 -> c2 across the overlay"
    );

    // The underlay on host B: inner TCP checksums must verify (segments made by uvs).
    let cap = tshark(
        &hb,
        "eth0",
        &[
            "-c",
            "300",
            "-f",
            "udp port 4789 and src host 10.252.0.1",
            "-o",
            "tcp.check_checksum:TRUE",
            "-T",
            "fields",
            "-e",
            "tcp.checksum.status",
            "-e",
            "frame.len",
        ],
    );
    let bps = iperf3_tcp(&c2, &n("c1"), "192.168.42.2", 2);
    eprintln!(
        "tap -> vxlan (software GSO): iperf3 TCP {:.2} Gbit/s",
        bps / 1e9
    );
    assert!(bps > 10e6, "TCP across the overlay carried {bps} bit/s");
    let out = cap.wait_with_output().unwrap();
    let lines = String::from_utf8_lossy(&out.stdout).into_owned();
    let tcp: Vec<&str> = lines.lines().filter(|l| !l.starts_with('\t')).collect();
    assert!(tcp.len() >= 100, "captured inner TCP:\n{lines}");
    // tshark: 1 = good, 0 = bad.
    assert!(
        tcp.iter().all(|l| l.starts_with("1\t")),
        "bad checksums:\n{lines}"
    );
    let longest = tcp
        .iter()
        .filter_map(|l| l.split('\t').nth(1)?.parse::<usize>().ok())
        .max()
        .unwrap_or(0);
    assert!(longest <= 1514, "outer frames fit the underlay: {longest}");
    let j = d.port_stats(&n("p1"));
    let (pk, by) = (
        j["rx_packets"].as_u64().unwrap(),
        j["rx_bytes"].as_u64().unwrap(),
    );
    eprintln!("{j}");
    assert!(by / pk.max(1) > 1600, "TAP received super-frames: {j}");
}
