//! End-to-end tests of `type=afpacket` ports in network namespaces (root; an explicit skip
//! otherwise). The containers sit on veth pairs as with AF_XDP, but the port is an AF_PACKET
//! socket with `PACKET_VNET_HDR`, so the containers' TCP super-frames (64 KiB, partial
//! checksums) cross uvs whole:
//! - bridged afpacket <-> afpacket: tshark in the receiving container sees super-frames whose
//!   TCP checksums are either complete and right or the right partial (pseudo-header) sum;
//! - afpacket -> AF_XDP: output cuts super-frames and completes checksums (tshark: all good,
//!   every frame fits the MTU);
//! - routed and masqueraded: the router and NAT rewrite super-frames' headers, checked the same
//!   way on the outside host's wire;
//! - lifecycle: the container's namespace deleted -> port `gone`; a new veth of that name ->
//!   `up` again and forwarding, without a ctl command.
//!
//! Throughput is printed, not asserted beyond "data moved".

mod common;

use common::netns::*;
use common::wire::*;
use std::time::Instant;

/// Average bytes per frame of `dir` ("rx" or "tx") on port `name`.
fn avg_frame(d: &Daemon, name: &str, dir: &str) -> u64 {
    let j = d.port_stats(name);
    let pk = j[format!("{dir}_packets")].as_u64().unwrap_or(0);
    let by = j[format!("{dir}_bytes")].as_u64().unwrap_or(0);
    by / pk.max(1)
}

#[test]
fn afpacket_bridged_carries_super_frames_with_right_checksums() {
    let Some((d, _t, p)) = two_on_one_bridge(("afpacket", "afpacket"), "ka", "10.78.0") else {
        return;
    };
    let (n1, n2) = (format!("{p}n1"), format!("{p}n2"));
    let show = d.ctl(&["show"]);
    assert!(
        show.contains("afpacket") && show.contains("offload=csum,tso"),
        "{show}"
    );
    let (w, bps) = capture_during(&n2, "eth0", "tcp and src host 10.78.0.1", || {
        iperf3_tcp(&n2, &n1, "10.78.0.2", 2)
    });
    eprintln!("afpacket -> afpacket: iperf3 TCP {:.2} Gbit/s", bps / 1e9);
    assert!(bps > 10e6, "TCP carried {bps} bit/s");
    assert!(w.frames >= 100, "captured {} frames", w.frames);
    assert!(w.bad.is_empty(), "bad checksums:\n{}", w.bad.join("\n"));
    assert!(
        w.longest > 1514 && w.average > 1600,
        "super-frames reached the container: longest {} average {}",
        w.longest,
        w.average
    );
    // uvs received and sent super-frames (the port counters, not only the capture).
    let rx = avg_frame(&d, &format!("{p}p1"), "rx");
    let tx = avg_frame(&d, &format!("{p}p2"), "tx");
    eprintln!("average frame: {rx} B received on p1, {tx} B sent on p2");
    assert!(rx > 1600 && tx > 1600, "rx {rx} tx {tx}");
    let back = iperf3_tcp(&n1, &n2, "10.78.0.1", 2);
    eprintln!("afpacket <- afpacket: iperf3 TCP {:.2} Gbit/s", back / 1e9);
    assert!(back > 10e6, "reverse TCP carried {back} bit/s");
}

#[test]
fn afpacket_to_afxdp_is_segmented_with_good_checksums() {
    let Some((d, _t, p)) = two_on_one_bridge(("afpacket", "afxdp"), "kx", "10.78.0") else {
        return;
    };
    let (n1, n2) = (format!("{p}n1"), format!("{p}n2"));
    let (w, bps) = capture_during(&n2, "eth0", "tcp and src host 10.78.0.1", || {
        iperf3_tcp(&n2, &n1, "10.78.0.2", 2)
    });
    eprintln!("afpacket -> afxdp: iperf3 TCP {:.2} Gbit/s", bps / 1e9);
    assert!(bps > 10e6, "TCP carried {bps} bit/s");
    assert!(w.frames >= 100, "captured {} frames", w.frames);
    assert_eq!(w.good, w.frames, "bad:\n{}", w.bad.join("\n"));
    assert!(w.longest <= 1514, "segments fit the MTU: {}", w.longest);
    let rx = avg_frame(&d, &format!("{p}p1"), "rx");
    assert!(rx > 1600, "afpacket received super-frames: {rx}");
}

#[test]
fn afpacket_super_frames_routed_and_masqueraded() {
    if !root_or_skip("afpacket_super_frames_routed_and_masqueraded") {
        return;
    }
    let p = prefix("kr");
    let n = |s: &str| format!("{p}{s}");
    let mut t = Topology::default();
    let d = Daemon::start(&p, &[]);
    inside_outside(&mut t, &d, &p, "afpacket", "172.31.78", "10.251.8");
    route_add(&n("o"), "172.31.78.0/24", "10.251.8.1");
    assert!(ping(&n("c1"), "10.251.8.2", 2), "routed ping");
    let (w, bps) = capture_during(&n("o"), "eth0", "tcp and src host 172.31.78.2", || {
        iperf3_tcp(&n("o"), &n("c1"), "10.251.8.2", 2)
    });
    eprintln!("afpacket routed: iperf3 TCP {:.2} Gbit/s", bps / 1e9);
    assert!(bps > 10e6, "routed TCP carried {bps} bit/s");
    assert!(w.frames >= 100 && w.bad.is_empty(), "{}", w.bad.join("\n"));
    assert!(
        w.average > 1600,
        "routed super-frames: average {}",
        w.average
    );

    // Masquerade: the outside has no route back; only NAT lets replies return.
    sh(&["ip", "-n", &n("o"), "route", "del", "172.31.78.0/24"]);
    d.ctl(&["nat-add", "masquerade", "src=172.31.78.0/24", "out=ext"]);
    let (w, bps) = capture_during(&n("o"), "eth0", "tcp and src host 10.251.8.1", || {
        iperf3_tcp(&n("o"), &n("c1"), "10.251.8.2", 2)
    });
    eprintln!("afpacket masquerade: iperf3 TCP {:.2} Gbit/s", bps / 1e9);
    assert!(bps > 10e6, "TCP through masquerade carried {bps} bit/s");
    assert!(w.frames >= 100 && w.bad.is_empty(), "{}", w.bad.join("\n"));
    assert!(
        w.average > 1600,
        "masqueraded super-frames: average {}",
        w.average
    );
    let tx = avg_frame(&d, &n("po"), "tx");
    assert!(tx > 1600, "super-frames sent on the outside port: {tx}");
}

#[test]
fn afpacket_port_follows_its_container() {
    let Some((d, mut t, p)) = two_on_one_bridge(("afpacket", "afpacket"), "kl", "10.78.0") else {
        return;
    };
    let n = |s: &str| format!("{p}{s}");
    sh(&["ip", "netns", "del", &n("n2")]);
    sh(&["ip", "-n", &n("n1"), "neigh", "flush", "all"]);
    let t0 = Instant::now();
    d.wait_state(&n("p2"), "gone", 10);
    eprintln!("afpacket port gone after {:?}", t0.elapsed());
    // The container restarts: a new veth of the same name; no ctl command.
    t.container(&n("n2"), &n("p2"), "10.78.0.2/24");
    d.wait_state(&n("p2"), "up", 10);
    assert!(ping(&n("n1"), "10.78.0.2", 3), "n1 -> restarted n2");
    // Link down / up follows the netdev too.
    sh(&["ip", "link", "set", "dev", &n("p2"), "down"]);
    d.wait_state(&n("p2"), "down", 10);
    sh(&["ip", "link", "set", "dev", &n("p2"), "up"]);
    d.wait_state(&n("p2"), "up", 10);
    assert!(ping(&n("n1"), "10.78.0.2", 3), "n1 -> n2 after down/up");
}

#[test]
fn wire_check_tells_a_right_partial_sum_from_a_wrong_one() {
    // 10.0.0.1 -> 10.0.0.2, TCP length 60040: 0x0a00 + 0x0001 + 0x0a00 + 0x0002 + 6 + 60040.
    let want = pseudo_sum("10.0.0.1", "10.0.0.2", 60040);
    assert_eq!(want, (0x0a00 + 1 + 0x0a00 + 2 + 6 + 60040u32) as u16);
    let line = |status: &str, csum: u16| {
        format!("{status}\t10.0.0.1\t10.0.0.2\t60060\t20\t{csum:#06x}\t60074")
    };
    let out = [line("1", 0x1234), line("0", want), line("0", want ^ 1)].join("\n");
    let w = check_wire(&out);
    assert_eq!((w.frames, w.good, w.partial, w.bad.len()), (3, 1, 1, 1));
    assert_eq!(w.longest, 60074);
}

/// A port's netdev renamed (`ip link set X name Y`) is `gone (netdev renamed to Y)`, not
/// `down (netdev set down)` while the device is up under its new name (found trying uvs as a
/// new user); renaming it back attaches it again.
#[test]
fn a_renamed_netdev_is_gone_until_renamed_back() {
    let Some((d, _t, p)) = two_on_one_bridge(("afxdp", "afpacket"), "obr", "10.78.0") else {
        return;
    };
    let n = |s: &str| format!("{p}{s}");
    for (port, new) in [(n("p1"), n("p1r")), (n("p2"), n("p2r"))] {
        sh(&["ip", "link", "set", "dev", &port, "down"]);
        d.wait_state(&port, "down", 10);
        sh(&["ip", "link", "set", "dev", &port, "name", &new]);
        sh(&["ip", "link", "set", "dev", &new, "up"]);
        d.wait_state(&port, "gone", 10);
        let reason = d.port_show(&port)["reason"].clone();
        assert_eq!(reason, format!("netdev renamed to {new}"), "{port}");
        // Renamed back (a rename needs the device down): up and forwarding again.
        sh(&["ip", "link", "set", "dev", &new, "down"]);
        sh(&["ip", "link", "set", "dev", &new, "name", &port]);
        sh(&["ip", "link", "set", "dev", &port, "up"]);
        d.wait_state(&port, "up", 10);
    }
    assert!(ping(&n("n1"), "10.78.0.2", 3), "n1 -> n2 after the renames");
}
