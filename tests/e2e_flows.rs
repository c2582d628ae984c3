//! End-to-end flow tests in network namespaces (root; an explicit skip otherwise): a drop flow
//! for ICMP blocks ping but not TCP, its counters move, dump-flows output is accepted back by
//! add-flow (round trip), trace explains the decision, del-flows restores traffic, and bad flows
//! are refused with the offending text.

mod common;

use common::netns::*;

#[test]
fn icmp_drop_flow_round_trip_and_trace() {
    if !root_or_skip("icmp_drop_flow_round_trip_and_trace") {
        return;
    }
    let p = prefix("ef");
    let n = |s: &str| format!("{p}{s}");
    let mut t = Topology::default();
    let d = Daemon::start(&p, &[]);
    two_on_br0(&mut t, &d, &p, "10.0.0");
    assert!(ping(&n("a"), "10.0.0.2", 2));

    d.ctl(&[
        "add-flow",
        "br0",
        "priority=100,icmp,nw_src=10.0.0.1,nw_dst=10.0.0.2,actions=drop",
    ]);
    assert!(!ping(&n("a"), "10.0.0.2", 2), "ICMP dropped by the flow");
    let bps = iperf3_tcp(&n("b"), &n("a"), "10.0.0.2", 1);
    assert!(bps > 1e6, "TCP still passes: {bps} bit/s");
    let dump = d.ctl(&["dump-flows", "br0"]);
    let drop_line = dump
        .lines()
        .find(|l| l.contains("icmp"))
        .unwrap_or_else(|| panic!("{dump}"))
        .trim()
        .to_string();
    assert!(
        drop_line.contains("n_packets=2"),
        "counters moved: {drop_line}"
    );
    assert!(dump.contains("actions=NORMAL"), "{dump}");

    // Round trip: the dump line is accepted back (it replaces the same flow).
    d.ctl(&[
        "del-flows",
        "br0",
        "--strict",
        "priority=100,icmp,nw_src=10.0.0.1,nw_dst=10.0.0.2",
    ]);
    d.ctl(&["add-flow", "br0", &drop_line]);
    let again = d.ctl(&["dump-flows", "br0", "icmp"]);
    let line = again.lines().next().unwrap_or_default();
    let strip = |l: &str| l.split("priority=").nth(1).unwrap_or_default().to_string();
    assert_eq!(
        strip(line.trim()),
        strip(&drop_line),
        "same flow after the round trip"
    );

    let mac_a = t.mac(&n("a"), "eth0");
    let mac_b = t.mac(&n("b"), "eth0");
    let pa = n("pa");
    let tr = d.ctl(&[
        "trace",
        "br0",
        &format!("in_port={pa},icmp,dl_src={mac_a},dl_dst={mac_b},nw_src=10.0.0.1,nw_dst=10.0.0.2"),
    ]);
    assert!(
        tr.contains("table 0: priority=100,icmp") && tr.contains("drop"),
        "{tr}"
    );
    let tr = d.ctl(&[
        "trace",
        "br0",
        &format!("in_port={pa},tcp,dl_src={mac_a},dl_dst={mac_b},nw_src=10.0.0.1,nw_dst=10.0.0.2"),
    ]);
    assert!(
        tr.contains("NORMAL") && tr.contains(&format!("learned on port {}", n("pb"))),
        "{tr}"
    );

    d.ctl(&["del-flows", "br0", "icmp"]);
    assert!(ping(&n("a"), "10.0.0.2", 2), "del-flows restores ping");

    // add-flows from a file, and errors naming the text.
    let file = std::env::temp_dir().join(format!("{p}-flows.txt"));
    std::fs::write(&file, format!("# test\npriority=10,udp,tp_dst=9,actions=drop\npriority=11,in_port={pa},arp,actions=NORMAL\n")).unwrap();
    let out = d.ctl(&["add-flows", "br0", file.to_str().unwrap()]);
    assert!(out.contains("added 2"), "{out}");
    let err = |args: &[&str]| {
        let o = d.ctl_raw(args);
        assert!(!o.status.success(), "{args:?} should fail");
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    assert!(err(&["add-flow", "br0", "priority=1,tp_dst=80,actions=drop"]).contains("tp_dst"));
    assert!(err(&["add-flow", "br0", "priority=1,foo=1,actions=drop"]).contains("foo"));
    assert!(err(&["add-flow", "br0", "priority=1,icmp"]).contains("actions"));
    assert!(err(&["add-flow", "br0", "in_port=nope,actions=drop"]).contains("nope"));
    assert!(err(&["add-flow", "br0", "actions=explode"]).contains("explode"));
    assert!(err(&["add-flow", "br0", "nw_src=10.0.0.300,ip,actions=drop"]).contains("10.0.0.300"));
    // A bulk install (applied in chunks) while traffic flows: no ping lost, all flows there.
    let many: String = (1000..6000)
        .map(|p| format!("priority=5,udp,tp_dst={p},actions=drop\n"))
        .collect();
    std::fs::write(&file, many).unwrap();
    let stream = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &n("a"),
            "ping",
            "-c",
            "20",
            "-i",
            "0.05",
            "-W",
            "1",
            "10.0.0.2",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let out = d.ctl(&["add-flows", "br0", file.to_str().unwrap()]);
    assert!(out.contains("added 5000"), "{out}");
    let ping_out = stream.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&ping_out.stdout);
    assert!(
        text.contains(" 0% packet loss"),
        "forwarding went on during the install:\n{text}"
    );
    let dump: serde_json::Value =
        serde_json::from_str(&d.ctl(&["--json", "dump-flows", "br0"])).unwrap();
    assert_eq!(
        dump["flows"].as_array().unwrap().len(),
        5003,
        "5000 + 2 from the file + NORMAL"
    );
    let _ = std::fs::remove_file(&file);
}

/// A stateful firewall in ovs-ofctl flows: `a` may open connections to `b`, `b` only answers.
#[test]
fn ct_firewall_between_containers() {
    if !root_or_skip("ct_firewall_between_containers") {
        return;
    }
    let p = prefix("ec");
    let n = |s: &str| format!("{p}{s}");
    let mut t = Topology::default();
    let d = Daemon::start(&p, &[]);
    two_on_br0(&mut t, &d, &p, "10.0.0");
    let pa = n("pa");
    for f in [
        "table=0,priority=100,ip,ct_state=-trk,actions=ct(table=1)".to_string(),
        "table=0,priority=10,arp,actions=NORMAL".to_string(),
        format!("table=1,priority=100,in_port={pa},ip,ct_state=+trk+new,actions=ct(commit),NORMAL"),
        "table=1,priority=100,ip,ct_state=+trk+est,actions=NORMAL".to_string(),
        "table=1,priority=1,actions=drop".to_string(),
    ] {
        d.ctl(&["add-flow", "br0", &f]);
    }
    let dump = d.ctl(&["dump-flows", "br0"]);
    assert!(
        dump.contains("ct_state=-trk") && dump.contains("actions=ct(table=1)"),
        "{dump}"
    );
    assert!(
        ping(&n("a"), "10.0.0.2", 2),
        "a -> b allowed (and its replies)"
    );
    assert!(
        !ping(&n("b"), "10.0.0.1", 2),
        "b -> a refused: new connections from b drop"
    );
    // Fragmented echoes and answers: the later fragments share the first one's connection.
    assert!(
        ping_size(&n("a"), "10.0.0.2", 3000, 2),
        "fragmented a -> b allowed (and its fragmented replies)"
    );
    let bps = iperf3_tcp(&n("b"), &n("a"), "10.0.0.2", 1);
    assert!(bps > 1e6, "TCP a -> b through the firewall: {bps} bit/s");
    let ct = d.ctl(&["ct-show"]);
    assert!(
        ct.contains("bridge=br0 zone=0") && ct.contains("10.0.0.1"),
        "{ct}"
    );
    // b's port unreachable about a's UDP datagram is neither +new nor +est: the firewall
    // drops it until a `+rel` flow lets related errors through.
    let probe = |ns: &str| {
        let py = "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.settimeout(2)\ns.connect(('10.0.0.2',9))\ns.send(b'x')\ntry:\n    s.recv(10)\nexcept ConnectionRefusedError:\n    print('refused')\nexcept Exception as e:\n    print(e)\n";
        let out = std::process::Command::new("ip")
            .args(["netns", "exec", ns, "python3", "-c", py])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert_eq!(probe(&n("a")), "timed out", "the error is dropped");
    d.ctl(&[
        "add-flow",
        "br0",
        "table=1,priority=100,ip,ct_state=+trk+rel,actions=NORMAL",
    ]);
    assert_eq!(probe(&n("a")), "refused", "+rel lets the error through");
    let dump = d.ctl(&["dump-flows", "br0"]);
    assert_eq!(flow_packets(&dump, "ct_state=+rel+trk"), Some(1), "{dump}");
    // Round trip of the ct flows.
    for line in dump.lines().filter(|l| l.contains("ct")) {
        d.ctl(&["add-flow", "br0", line.trim()]);
    }
}

#[test]
fn ecn_and_dscp_flows_match_real_frames() {
    if !root_or_skip("ecn_and_dscp_flows_match_real_frames") {
        return;
    }
    let p = prefix("en");
    let n = |s: &str| format!("{p}{s}");
    let mut t = Topology::default();
    let d = Daemon::start(&p, &[]);
    two_on_br0(&mut t, &d, &p, "10.0.7");
    assert!(ping_tos(&n("a"), "10.0.7.2", 0, 2));
    // Drop ECN "congestion experienced" (CE, 3) and, separately, DSCP EF (46) with ECT(0).
    d.ctl(&["add-flow", "br0", "priority=100,icmp,nw_ecn=3,actions=drop"]);
    d.ctl(&[
        "add-flow",
        "br0",
        "priority=90,icmp,ip_dscp=46,ip_ecn=2,actions=drop",
    ]);
    assert!(!ping_tos(&n("a"), "10.0.7.2", 3, 2), "CE dropped");
    assert!(!ping_tos(&n("a"), "10.0.7.2", 0xbb, 2), "EF + CE dropped");
    assert!(
        !ping_tos(&n("a"), "10.0.7.2", 0xba, 2),
        "EF + ECT(0) dropped"
    );
    assert!(ping_tos(&n("a"), "10.0.7.2", 2, 2), "ECT(0) passes");
    assert!(ping_tos(&n("a"), "10.0.7.2", 0xb8, 2), "EF alone passes");
    assert!(ping_tos(&n("a"), "10.0.7.2", 0xb9, 2), "EF + ECT(1) passes");
    let dump = d.ctl(&["dump-flows", "br0"]);
    assert_eq!(flow_packets(&dump, "nw_ecn=3 "), Some(4), "{dump}");
    assert_eq!(
        flow_packets(&dump, "nw_tos=184,nw_ecn=2"),
        Some(2),
        "{dump}"
    );
}

/// `tcp_flags` matches real TCP segments: a connection attempt to a closed port is one SYN
/// (without ACK) and one RST back; a flow dropping such SYNs to that port makes the attempt
/// time out instead of being refused.
#[test]
fn tcp_flags_flows_match_real_segments() {
    if !root_or_skip("tcp_flags_flows_match_real_segments") {
        return;
    }
    let p = prefix("tf");
    let n = |s: &str| format!("{p}{s}");
    let mut t = Topology::default();
    let d = Daemon::start(&p, &[]);
    two_on_br0(&mut t, &d, &p, "10.0.8");
    assert!(ping(&n("a"), "10.0.8.2", 2));
    d.ctl(&[
        "add-flow",
        "br0",
        "priority=300,tcp,tcp_flags=+syn-ack,actions=NORMAL",
    ]);
    d.ctl(&[
        "add-flow",
        "br0",
        "priority=300,tcp,tcp_flags=+rst,actions=NORMAL",
    ]);
    d.ctl(&[
        "add-flow",
        "br0",
        "priority=300,tcp,tcp_flags=+syn+ack,actions=NORMAL",
    ]);
    // Exit status of a connect from a to b's closed port 9 (124: timed out).
    let connect = || {
        std::process::Command::new("ip")
            .args(["netns", "exec", &n("a"), "timeout", "2", "bash", "-c"])
            .arg("exec 3<>/dev/tcp/10.0.8.2/9")
            .stderr(std::process::Stdio::null())
            .status()
            .expect("run bash")
            .code()
    };
    assert_eq!(
        connect(),
        Some(1),
        "refused: the SYN went, the RST came back"
    );
    let dump = d.ctl(&["dump-flows", "br0"]);
    assert!(dump.contains("tcp_flags=+syn-ack"), "{dump}");
    assert_eq!(
        flow_packets(&dump, "tcp_flags=+syn-ack "),
        Some(1),
        "one SYN: {dump}"
    );
    assert_eq!(
        flow_packets(&dump, "tcp_flags=+rst "),
        Some(1),
        "one RST: {dump}"
    );
    assert_eq!(
        flow_packets(&dump, "tcp_flags=+syn+ack "),
        Some(0),
        "no SYN-ACK: {dump}"
    );
    // Drop SYNs to port 9: the attempt now times out; other TCP flags still pass.
    d.ctl(&[
        "add-flow",
        "br0",
        "priority=400,tcp,tp_dst=9,tcp_flags=+syn-ack,actions=drop",
    ]);
    assert_eq!(connect(), Some(124), "timed out: the SYN was dropped");
    // trace builds the segment with the flags its description names.
    let (mac_a, mac_b, pa) = (t.mac(&n("a"), "eth0"), t.mac(&n("b"), "eth0"), n("pa"));
    let trace = |flags: &str| {
        d.ctl(&[
            "trace",
            "br0",
            &format!(
                "in_port={pa},tcp,dl_src={mac_a},dl_dst={mac_b},nw_src=10.0.8.1,\
                 nw_dst=10.0.8.2,tp_dst=9,tcp_flags={flags}"
            ),
        ])
    };
    let syn = trace("+syn-ack");
    assert!(
        syn.contains("priority=400") && syn.contains("drop"),
        "{syn}"
    );
    let ack = trace("+ack");
    assert!(
        !ack.contains("priority=400") && ack.contains("NORMAL"),
        "{ack}"
    );
    let dump = d.ctl(&["dump-flows", "br0"]);
    assert!(
        flow_packets(&dump, "tp_dst=9,tcp_flags").unwrap_or(0) >= 1,
        "{dump}"
    );
    assert_eq!(
        flow_packets(&dump, "tcp_flags=+rst "),
        Some(1),
        "no RST this time: {dump}"
    );
    d.ctl(&["del-flows", "br0", "tcp,tp_dst=9"]);
    assert_eq!(connect(), Some(1), "refused again once the drop is gone");
}

/// `nw_ttl` matches the TTL a frame has at each lookup: `ping -t 1` is dropped by a flow for
/// TTL 1, and after `dec_ttl` a resubmitted frame is matched by its new TTL.
#[test]
fn nw_ttl_flows_match_real_frames_before_and_after_dec_ttl() {
    if !root_or_skip("nw_ttl_flows_match_real_frames_before_and_after_dec_ttl") {
        return;
    }
    let p = prefix("tt");
    let n = |s: &str| format!("{p}{s}");
    let mut t = Topology::default();
    let d = Daemon::start(&p, &[]);
    two_on_br0(&mut t, &d, &p, "10.0.9");
    assert!(ping(&n("a"), "10.0.9.2", 2));
    d.ctl(&["add-flow", "br0", "priority=300,icmp,nw_ttl=1,actions=drop"]);
    assert!(!ping_ttl(&n("a"), "10.0.9.2", 1, 1), "TTL 1 dropped");
    assert!(ping_ttl(&n("a"), "10.0.9.2", 2, 1), "TTL 2 passes");
    // Table 0 decrements and resubmits; table 1 drops what now has TTL 4.
    d.ctl(&["del-flows", "br0"]);
    d.ctl(&[
        "add-flow",
        "br0",
        "priority=300,icmp,actions=dec_ttl,resubmit(,1)",
    ]);
    d.ctl(&[
        "add-flow",
        "br0",
        "table=1,priority=300,icmp,nw_ttl=4,actions=drop",
    ]);
    d.ctl(&["add-flow", "br0", "table=1,priority=0,actions=NORMAL"]);
    d.ctl(&["add-flow", "br0", "priority=0,actions=NORMAL"]);
    assert!(
        !ping_ttl(&n("a"), "10.0.9.2", 5, 1),
        "TTL 5 becomes 4: dropped"
    );
    assert!(
        ping_ttl(&n("a"), "10.0.9.2", 6, 1),
        "TTL 6 becomes 5: passes"
    );
    assert!(
        ping_ttl(&n("a"), "10.0.9.2", 4, 1),
        "TTL 4 becomes 3: passes"
    );
}
