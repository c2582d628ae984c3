//! End-to-end VXLAN tests in network namespaces (root; an explicit skip otherwise): a uvs VTEP
//! interoperates with the Linux kernel's vxlan device on a kernel bridge, and with another uvs;
//! containers on both sides ping and carry TCP; the underlay decodes as VXLAN with the right VNI
//! in tshark; the FDB shows remote MACs with their VTEP.

mod common;

use common::netns::*;
use common::wire::{Wire, capture_during};

/// uvs as host A's VTEP (container c1) and host B (namespace `{p}hb`) the kernel's vxlan 42 on
/// a kernel bridge with container c2. (The daemon is dropped before the topology.)
fn uvs_and_kernel_vtep(p: &str) -> (Topology, Daemon) {
    let mut t = Topology::default();
    let d = Daemon::start(p, &[]);
    let hb = format!("{p}hb");
    vxlan_uvs_side(&mut t, &d, p, &hb);
    kernel_bridged_vtep(&mut t, &hb, &format!("{p}c2"));
    (t, d)
}

#[test]
fn interop_with_kernel_vxlan() {
    if !root_or_skip("interop_with_kernel_vxlan") {
        return;
    }
    let p = prefix("ex");
    let n = |s: &str| format!("{p}{s}");
    let (t, d) = uvs_and_kernel_vtep(&p);
    let hb = n("hb");

    // Capture the underlay on host B while pinging: it must decode as VXLAN VNI 42.
    let cap = tshark(
        &hb,
        "eth0",
        &[
            "-c",
            "12",
            "-f",
            "udp port 4789",
            "-T",
            "fields",
            "-e",
            "vxlan.vni",
            "-e",
            "ip.src",
        ],
    );
    assert!(
        ping(&n("c1"), "192.168.42.2", 6),
        "c1 -> c2 across uvs VTEP <-> kernel vxlan"
    );
    let out = cap.wait_with_output().unwrap();
    let lines = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        lines.lines().count() >= 2,
        "captured VXLAN packets:\n{lines}"
    );
    assert!(
        lines.lines().all(|l| l.starts_with("42\t")),
        "VNI 42 on the wire:\n{lines}"
    );
    assert!(
        lines.contains("10.252.0.1") && lines.contains("10.252.0.2"),
        "{lines}"
    );

    assert!(ping(&n("c2"), "192.168.42.1", 2), "c2 -> c1");
    let bps = iperf3_tcp(&n("c2"), &n("c1"), "192.168.42.2", 2);
    eprintln!("TCP over VXLAN (uvs -> kernel): {:.2} Gbit/s", bps / 1e9);
    assert!(bps > 10e6, "TCP across the overlay carried {bps} bit/s");
    let fdb = d.ctl(&["fdb-show", "br0"]);
    let c2_mac = t.mac(&n("c2"), "eth0");
    let line = fdb
        .lines()
        .find(|l| l.contains(&c2_mac))
        .unwrap_or_default();
    assert!(
        line.contains("vx0") && line.contains("10.252.0.2"),
        "c2 learned behind the VTEP:\n{fdb}"
    );
    let show = d.ctl(&["show"]);
    assert!(
        show.contains("vni=42") && show.contains("inner_mtu=1450"),
        "{show}"
    );
    // `mod-port` on the tunnel port: no-forward stops what would be encapsulated,
    // no-receive what is decapsulated, each counted on vx0.
    let drops = |r: &str| d.port_stats("vx0")["drops"][r].as_u64().unwrap_or(0);
    d.ctl(&["mod-port", "br0", "vx0", "no-forward"]);
    assert!(
        !ping(&n("c1"), "192.168.42.2", 1),
        "sent through a no-forward tunnel"
    );
    assert!(drops("port-no-fwd") > 0, "{}", d.port_stats("vx0"));
    d.ctl(&["mod-port", "br0", "vx0", "forward", "no-receive"]);
    assert!(
        !ping(&n("c2"), "192.168.42.1", 1),
        "taken in by a no-receive tunnel"
    );
    assert!(drops("port-no-recv") > 0, "{}", d.port_stats("vx0"));
    d.ctl(&["mod-port", "br0", "vx0", "receive"]);
    assert!(ping(&n("c2"), "192.168.42.1", 2), "c2 -> c1 again");
}

/// An `afpacket` underlay next to a kernel VXLAN device in another namespace of this host: the
/// kernel hands TCP from that side over as UDP-tunnel super-frames (one VXLAN packet holding
/// a whole inner TCP super-frame, described by its inner TCP alone), which the port cuts into
/// VXLAN packets of one segment each. (Found trying uvs as a new user: they were refused as
/// `rx_bad_vnet` and TCP from the kernel side stalled after ~200 KB.)
#[test]
fn kernel_vxlan_tcp_super_frames_on_an_afpacket_underlay_are_cut() {
    if !root_or_skip("kernel_vxlan_tcp_super_frames_on_an_afpacket_underlay_are_cut") {
        return;
    }
    let p = prefix("ez");
    let n = |s: &str| format!("{p}{s}");
    let mut t = Topology::default();
    let d = Daemon::start(&p, &[]);
    let hb = n("hb");
    vxlan_uvs_side_on(&mut t, &d, &p, &hb, "afpacket");
    kernel_bridged_vtep(&mut t, &hb, &n("c2"));
    assert!(ping(&n("c2"), "192.168.42.1", 3), "c2 -> c1");
    let bps = iperf3_tcp(&n("c1"), &n("c2"), "192.168.42.1", 2);
    let v = d.json(&["stats"]);
    let ua = &v["ports"][n("ua").as_str()];
    eprintln!(
        "kernel -> uvs TCP over an afpacket underlay: {:.3} Gbit/s, port {ua}",
        bps / 1e9
    );
    assert!(
        bps > 100e6,
        "TCP from the kernel VTEP carried {bps} bit/s: {ua}"
    );
    assert_eq!(ua["kernel"]["rx_bad_vnet"].as_u64().unwrap_or(0), 0, "{ua}");
}

/// A kernel VTEP whose underlay path is smaller than its packets (its eth0 MTU lowered to
/// 1,400 under a 1,450 overlay) fragments the outer packets (`df unset`, the kernel's
/// default): uvs puts them back together and delivers the inner datagram.
#[test]
fn fragmented_vxlan_from_a_kernel_vtep_is_reassembled() {
    if !root_or_skip("fragmented_vxlan_from_a_kernel_vtep_is_reassembled") {
        return;
    }
    let p = prefix("ey");
    let n = |s: &str| format!("{p}{s}");
    let (_t, d) = uvs_and_kernel_vtep(&p);
    let hb = n("hb");
    assert!(ping(&n("c2"), "192.168.42.1", 3), "c2 -> c1 (learning)");
    sh(&["ip", "-n", &hb, "link", "set", "eth0", "mtu", "1400"]);
    // c1 receives; c2 sends 1,400-byte UDP datagrams without DF (inner 1,428 bytes, outer
    // 1,478: over host B's 1,400).
    let recv = "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.bind(('192.168.42.1',9000))\ns.settimeout(8)\nd,a=s.recvfrom(65535)\nprint(len(d), d==bytes(range(200))*7)\n";
    let receiver = std::process::Command::new("ip")
        .args(["netns", "exec", &n("c1"), "python3", "-c", recv])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    let send = "import socket,time\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.setsockopt(socket.IPPROTO_IP,10,0)\nfor i in range(5):\n    s.sendto(bytes(range(200))*7,('192.168.42.1',9000))\n    time.sleep(0.3)\n";
    sh(&["ip", "netns", "exec", &n("c2"), "python3", "-c", send]);
    let out = receiver.wait_with_output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "1400 True",
        "the inner datagram, whole"
    );
    let stats = d.json(&["stats"]);
    assert!(
        stats["reassembly"]["reassembled"].as_u64().unwrap_or(0) >= 1,
        "{}",
        stats["reassembly"]
    );
}

/// ARP the gateway makes between bursts leaves through a VXLAN port: the gratuitous ARP when
/// the overlay bridge gets its gateway, and the retries of a request nobody answers (3 in
/// all, 1 s apart, as README says). Found trying uvs as a new user: only the first request
/// (made in the burst of the packet that needed it) was sent; the others were counted
/// `tx-full` on the tunnel port, so a routed flow into an overlay lost seconds of traffic each
/// time its neighbour was re-checked.
#[test]
fn gateway_arp_between_bursts_leaves_through_a_vxlan_port() {
    if !root_or_skip("gateway_arp_between_bursts_leaves_through_a_vxlan_port") {
        return;
    }
    let p = prefix("ea");
    let n = |s: &str| format!("{p}{s}");
    let mut t = Topology::default();
    let d = Daemon::start(&p, &[]);
    let hb = n("hb");
    vxlan_uvs_side(&mut t, &d, &p, &hb);
    // A routed client on another bridge; host B's kernel VTEP takes the tunnel's packets.
    d.ctl(&["add-br", "lan", "gateway=10.253.0.1/24"]);
    attach(
        &mut t,
        &d,
        ("lan", &n("c3"), &n("p3")),
        "afxdp",
        "10.253.0.2/24",
        &[],
    );
    route_add(&n("c3"), "default", "10.253.0.1");
    kernel_vtep(&hb);
    sh(&["ip", "-n", &hb, "link", "set", "vx42", "up"]);
    let cap = tshark(
        &hb,
        "eth0",
        &[
            "-a",
            "duration:7",
            "-f",
            "udp port 4789",
            "-Y",
            "arp.opcode == 1",
            "-T",
            "fields",
            "-e",
            "arp.dst.proto_ipv4",
        ],
    );
    // tshark says "Capturing on" a little before it sees the first frames.
    std::thread::sleep(std::time::Duration::from_millis(500));
    d.ctl(&["set-br", "br0", "gateway=192.168.42.254/24"]);
    assert!(
        !ping(&n("c3"), "192.168.42.99", 1),
        "nobody has 192.168.42.99"
    );
    let out = cap.wait_with_output().unwrap();
    let lines = String::from_utf8_lossy(&out.stdout).into_owned();
    let asked = |ip: &str| lines.lines().filter(|l| l.trim() == ip).count();
    assert_eq!(
        asked("192.168.42.99"),
        3,
        "ARP requests for 192.168.42.99 through the tunnel:\n{lines}"
    );
    assert!(
        asked("192.168.42.254") >= 1,
        "the gateway's gratuitous ARP through the tunnel:\n{lines}"
    );
    let vx = d.port_stats("vx0");
    assert_eq!(vx["drops"]["tx-full"].as_u64().unwrap_or(0), 0, "{vx}");
}

#[test]
fn two_uvs_vteps() {
    if !root_or_skip("two_uvs_vteps") {
        return;
    }
    two_uvs_vteps_on("afxdp", "ey");
}

/// The same pair with AF_PACKET ports: the containers' super-frames are cut into segments at
/// host A (the tunnel takes no GSO), their VXLAN datagrams leave A's underlay port as UDP GSO
/// frames (`pipeline::uso`), and B merges the segments again toward c2 (`pipeline::gro`): both
/// ports count merged frames, c2 receives frames larger than the MTU with right checksums.
#[test]
fn two_uvs_vteps_afpacket() {
    if !root_or_skip("two_uvs_vteps_afpacket") {
        return;
    }
    let (c2, ua, wire) = two_uvs_vteps_on("afpacket", "ez");
    // Host A sent the VXLAN datagrams of each super-frame as one UDP GSO message.
    let (dgrams, msgs) = (
        ua["gro_merged"].as_u64().unwrap_or(0),
        ua["tx_packets"].as_u64().unwrap_or(0),
    );
    eprintln!("host A, underlay port: {dgrams} datagrams merged; {msgs} frames sent");
    assert!(
        dgrams > 1000,
        "VXLAN datagrams merged toward the underlay: {dgrams}"
    );
    assert!(
        msgs * 4 < dgrams,
        "{msgs} frames for {dgrams} merged datagrams"
    );
    let merged = c2["gro_merged"].as_u64().unwrap_or(0);
    let (pk, by) = (
        c2["tx_packets"].as_u64().unwrap_or(0),
        c2["tx_bytes"].as_u64().unwrap_or(0),
    );
    eprintln!("host B, c2's port: {merged} segments merged; {pk} frames, {by} bytes sent");
    assert!(merged > 1000, "segments merged toward c2: {merged}");
    assert!(
        by / pk.max(1) > 1514,
        "frames toward c2 average {} bytes",
        by / pk.max(1)
    );
    let w = wire.expect("captured");
    assert!(w.frames > 0, "tshark saw no TCP frame on c2's eth0");
    assert!(
        w.bad.is_empty(),
        "bad TCP checksums on c2's wire: {:?}",
        w.bad
    );
    assert!(
        w.longest > 1514,
        "no super-frame reached c2 (longest {} B)",
        w.longest
    );
}

/// Host A's uvs and host B's own uvs, VTEPs of VNI 42, with ports of type `kind`; ping and 2 s
/// of TCP c1 -> c2 must pass. Returns host B's `stats --json` counters of c2's port, and for
/// afpacket ports what a capture on c2's `eth0` saw during the TCP run; also host A's counters of
/// its underlay port.
fn two_uvs_vteps_on(kind: &str, pfx: &str) -> (serde_json::Value, serde_json::Value, Option<Wire>) {
    let p = prefix(pfx);
    let n = |s: &str| format!("{p}{s}");
    let mut t = Topology::default();
    let d = Daemon::start(&p, &[]);
    let hb = n("hb");
    vxlan_uvs_side_on(&mut t, &d, &p, &hb, kind);
    // Host B runs its own uvs inside its namespace, on the other end of the underlay veth.
    let sock = std::env::temp_dir().join(format!("uvs-{p}-b.sock"));
    let _ = std::fs::remove_file(&sock);
    let mut b = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &hb,
            env!("CARGO_BIN_EXE_uvs"),
            "run",
            "--socket",
        ])
        .arg(&sock)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let t0 = std::time::Instant::now();
    while !sock.exists() && t0.elapsed().as_secs() < 10 {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let ctl_b = |args: &[&str]| {
        let mut v = vec![
            "netns",
            "exec",
            &hb,
            env!("CARGO_BIN_EXE_uvs"),
            "ctl",
            "--socket",
        ];
        let s = sock.to_str().unwrap().to_string();
        v.push(Box::leak(s.into_boxed_str()));
        v.extend_from_slice(args);
        let o = std::process::Command::new("ip").args(&v).output().unwrap();
        assert!(
            o.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    sh(&["ip", "-n", &hb, "addr", "flush", "dev", "eth0"]);
    ctl_b(&["add-br", "ul", "gateway=10.252.0.2/24"]);
    let ty = format!("type={kind}");
    ctl_b(&["add-port", "ul", "eth0", &ty]);
    ctl_b(&["add-br", "br0"]);
    host_b_container(&mut t, &hb, &n("c2"));
    ctl_b(&["add-port", "br0", "c2v", &ty]);
    ctl_b(&[
        "add-port",
        "br0",
        "vx0",
        "type=vxlan",
        "vni=42",
        "local_ip=10.252.0.2",
        "remote_ip=10.252.0.1",
    ]);
    let ok = ping(&n("c1"), "192.168.42.2", 3);
    let tcp = || iperf3_tcp(&n("c2"), &n("c1"), "192.168.42.2", 2);
    let (wire, bps) = match (ok, kind) {
        (false, _) => (None, 0.0),
        // c2's wire: what B's GRO made must carry right (partial) checksums.
        (true, "afpacket") => {
            let (w, b) = capture_during(&n("c2"), "eth0", "tcp and src host 192.168.42.1", tcp);
            (Some(w), b)
        }
        (true, _) => (None, tcp()),
    };
    let stats: serde_json::Value =
        serde_json::from_str(&ctl_b(&["--json", "stats"])).unwrap_or_default();
    // SAFETY: kill takes a pid and a signal; the pid is the `ip netns exec` child we started,
    // which exec'd uvs.
    unsafe {
        libc::kill(b.id() as i32, libc::SIGTERM);
    }
    let _ = b.wait();
    assert!(ok, "c1 -> c2 across two uvs VTEPs");
    eprintln!("TCP over VXLAN (uvs -> uvs): {:.2} Gbit/s", bps / 1e9);
    assert!(bps > 10e6, "TCP across two uvs VTEPs carried {bps} bit/s");
    let a: serde_json::Value = serde_json::from_str(&d.ctl(&["--json", "stats"])).expect("json");
    (
        stats["ports"]["c2v"].clone(),
        a["ports"][n("ua")].clone(),
        wire,
    )
}
