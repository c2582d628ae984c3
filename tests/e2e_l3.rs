//! End-to-end L3 tests in network namespaces (root; an explicit skip otherwise): the Docker
//! bridge picture. Containers use their bridge's gateway as default route; uvs answers ping for
//! the gateway, routes between bridges (TTL decremented by one), and follows a static route to a
//! network behind a host on the `ext` bridge.

mod common;

use common::netns::*;

fn ping_output(ns: &str, ip: &str) -> String {
    let out = std::process::Command::new("ip")
        .args([
            "netns", "exec", ns, "ping", "-c", "2", "-i", "0.2", "-W", "1", ip,
        ])
        .output()
        .expect("ping");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn gateway_routing_and_static_route() {
    if !root_or_skip("gateway_routing_and_static_route") {
        return;
    }
    let p = prefix("er");
    let n = |s: &str| format!("{p}{s}");
    let mut t = Topology::default();
    let d = Daemon::start(&p, &[]);
    d.ctl(&["add-br", "br0", "gateway=172.31.5.1/24"]);
    d.ctl(&["add-br", "br1", "gateway=10.9.0.1/24"]);
    d.ctl(&["add-br", "ext", "gateway=10.250.0.1/24"]);
    // c1 on AF_XDP in br0, c2 on TAP in br1, "outside" host o on AF_XDP in ext.
    attach(
        &mut t,
        &d,
        ("br0", &n("c1"), &n("p1")),
        "afxdp",
        "172.31.5.2/24",
        &[],
    );
    t.netns(&n("c2"));
    d.ctl(&["add-port", "br1", &n("p2"), "type=tap"]);
    t.adopt(&n("c2"), &n("p2"), "10.9.0.2/24");
    member(&mut t, &d, &p, "ext", "o", "afxdp", "10.250.0.2/24");
    route_add(&n("c1"), "default", "172.31.5.1");
    route_add(&n("c2"), "default", "10.9.0.1");
    route_add(&n("o"), "172.31.5.0/24", "10.250.0.1");
    sh(&[
        "ip",
        "-n",
        &n("o"),
        "addr",
        "add",
        "10.254.9.1/32",
        "dev",
        "lo",
    ]);

    assert!(
        ping(&n("c1"), "172.31.5.1", 2),
        "container pings its gateway"
    );
    let out = ping_output(&n("c1"), "10.9.0.2");
    assert!(out.contains("ttl=63"), "routed once, TTL 63:\n{out}");
    let bps = iperf3_tcp(&n("c2"), &n("c1"), "10.9.0.2", 2);
    eprintln!("routed TCP c1 -> c2: {:.2} Gbit/s", bps / 1e9);
    assert!(bps > 10e6, "TCP across the router carried {bps} bit/s");

    assert!(!ping(&n("c1"), "10.254.9.1", 1), "no route yet");
    d.ctl(&["route-add", "10.254.9.0/24", "via", "10.250.0.2"]);
    assert!(
        ping(&n("c1"), "10.254.9.1", 2),
        "static route via the ext host"
    );
    let routes = d.ctl(&["route-show"]);
    assert!(
        routes.contains("10.254.9.0/24") && routes.contains("via 10.250.0.2"),
        "{routes}"
    );
    let neigh = d.ctl(&["neigh-show"]);
    assert!(
        neigh.contains("10.250.0.2") && neigh.contains("172.31.5.2"),
        "{neigh}"
    );
    d.ctl(&["route-del", "10.254.9.0/24"]);
    assert!(!ping(&n("c1"), "10.254.9.1", 1), "route removed");

    // Bad requests name the field.
    let err = |args: &[&str]| String::from_utf8_lossy(&d.ctl_raw(args).stderr).into_owned();
    assert!(err(&["route-add", "10.0.0.1/24", "via", "10.250.0.2"]).contains("host bits"));
    assert!(err(&["route-add", "10.1.0.0/16", "via", "192.0.2.1"]).contains("via"));
    assert!(err(&["set-br", "br1", "gateway=10.9.0.300/24"]).contains("gateway"));
    assert!(err(&["add-br", "br2", "gateway=172.31.5.1/24"]).contains("already"));
    let stats = d.ctl(&["stats"]);
    assert!(stats.contains("router: routed"), "{stats}");
}

#[test]
fn masquerade_and_port_mapping_like_docker() {
    if !root_or_skip("masquerade_and_port_mapping_like_docker") {
        return;
    }
    let p = prefix("en");
    let n = |s: &str| format!("{p}{s}");
    let mut t = Topology::default();
    let d = Daemon::start(&p, &[]);
    inside_outside(&mut t, &d, &p, "afxdp", "172.31.5", "10.250.0");
    // The outside host has no route back to 172.31.5.0/24: only masquerade lets replies return.
    let outside = HttpServer::start(&n("o"), "10.250.0.2", 8000, "outside\n");
    assert_eq!(
        curl(&n("c1"), "http://10.250.0.2:8000/"),
        None,
        "no NAT yet: no way back"
    );

    d.ctl(&["nat-add", "masquerade", "src=172.31.5.0/24", "out=ext"]);
    assert_eq!(
        curl(&n("c1"), "http://10.250.0.2:8000/").as_deref(),
        Some("outside\n")
    );
    let log = outside.requests();
    assert!(
        log.contains("10.250.0.1 - -"),
        "the outside sees the gateway as client:\n{log}"
    );
    assert!(!log.contains("172.31.5.2"), "{log}");
    assert!(
        ping(&n("c1"), "10.250.0.2", 2),
        "ICMP echo through masquerade"
    );
    let bps = iperf3_tcp(&n("o"), &n("c1"), "10.250.0.2", 2);
    eprintln!("TCP through masquerade: {:.2} Gbit/s", bps / 1e9);
    assert!(bps > 10e6, "TCP through masquerade carried {bps} bit/s");

    // Docker's -p 8080:80: the container serves, the outside reaches it at the gateway address.
    let inside = HttpServer::start(&n("c1"), "172.31.5.2", 80, "inside\n");
    d.ctl(&[
        "nat-add",
        "dnat",
        "in=ext",
        "proto=tcp",
        "port=8080",
        "to=172.31.5.2:80",
    ]);
    assert_eq!(
        curl(&n("o"), "http://10.250.0.1:8080/").as_deref(),
        Some("inside\n")
    );
    assert!(
        inside.requests().contains("10.250.0.2 - -"),
        "{}",
        inside.requests()
    );
    // Hairpin: the container reaches its own mapped port through the ext gateway address.
    assert_eq!(
        curl(&n("c1"), "http://10.250.0.1:8080/").as_deref(),
        Some("inside\n"),
        "hairpin NAT"
    );
    // An ICMP error about a masqueraded packet (port unreachable from the outside host) reaches
    // the container: its connected UDP socket sees ECONNREFUSED.
    let probe = "import socket,sys\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.settimeout(3)\ns.connect(('10.250.0.2',9))\ns.send(b'x')\ntry:\n    s.recv(10)\nexcept ConnectionRefusedError:\n    print('refused')\nexcept Exception as e:\n    print(e)\n";
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", &n("c1"), "python3", "-c", probe])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "refused",
        "ICMP error translated back"
    );
    // Fragmented datagrams through NAT, both ways: an echo over the MTU through masquerade,
    // and a UDP datagram to a mapped port echoed back reversed by the container.
    assert!(
        ping_size(&n("c1"), "10.250.0.2", 4000, 3),
        "fragmented ICMP echo through masquerade"
    );
    d.ctl(&[
        "nat-add",
        "dnat",
        "in=ext",
        "proto=udp",
        "port=7007",
        "to=172.31.5.2:7000",
    ]);
    let echo = UdpEcho::start(&n("c1"), "172.31.5.2", 7000, true);
    let client = "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.settimeout(2)\nd=bytes(range(256))*12\nfor i in range(5):\n    s.sendto(d,('10.250.0.1',7007))\n    try:\n        r,a=s.recvfrom(65535)\n        print('echo', r==d[::-1], a[0], a[1])\n        break\n    except socket.timeout:\n        pass\n";
    let (out, err) = python_in(&n("o"), client);
    drop(echo);
    assert_eq!(
        out, "echo True 10.250.0.1 7007",
        "a 3,072-byte UDP datagram to a mapped port and back, fragmented both ways: {err}"
    );
    // The outside link's MTU drops to 1,280: a container's 1,500-byte fragments (no DF) are
    // cut again to fit it, translated, and the outside host puts the echo back together.
    sh(&["ip", "link", "set", &n("po"), "mtu", "1280"]);
    sh(&["ip", "-n", &n("o"), "link", "set", "eth0", "mtu", "1280"]);
    let po_mtu = || {
        d.ctl(&["show"])
            .lines()
            .any(|l| l.contains(&format!("port {}:", n("po"))) && l.contains("mtu=1280"))
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !po_mtu() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(po_mtu(), "{}", d.ctl(&["show"]));
    assert!(
        ping_size(&n("c1"), "10.250.0.2", 3000, 3),
        "fragments cut again to the outside MTU"
    );
    let router = &d.json(&["stats"])["router"];
    assert!(router["fragmented"].as_u64().unwrap_or(0) >= 3, "{router}");
    // With DF: fragmentation needed, quoting the container's own packet (not the masqueraded
    // one), so its kernel learns the path MTU (`ping -M do` reports it).
    let out = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &n("c1"),
            "ping",
            "-c",
            "1",
            "-W",
            "2",
            "-M",
            "do",
        ])
        .args(["-s", "1400", "10.250.0.2"])
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains("mtu = 1280") || text.contains("mtu=1280"),
        "PMTUD through masquerade: {text}"
    );
    let ct = d.ctl(&["ct-show"]);
    assert!(
        ct.contains("172.31.5.2") && ct.contains("10.250.0.1"),
        "{ct}"
    );
    let rules = d.ctl(&["nat-show"]);
    assert!(
        rules.contains("masquerade src=172.31.5.0/24 out=ext"),
        "{rules}"
    );
    assert!(
        rules.contains("dnat in=ext proto=tcp port=8080 to=172.31.5.2:80"),
        "{rules}"
    );

    // Conflicts and bad fields are refused with the reason.
    let err = |args: &[&str]| String::from_utf8_lossy(&d.ctl_raw(args).stderr).into_owned();
    assert!(
        err(&[
            "nat-add",
            "dnat",
            "in=ext",
            "proto=tcp",
            "port=8080",
            "to=172.31.5.3:80"
        ])
        .contains("port: tcp/8080 on bridge 'ext' is already mapped to 172.31.5.2:80 (rule #")
    );
    assert!(err(&["nat-add", "masquerade", "src=172.31.0.0/16", "out=ext"]).contains("overlaps"));
    assert!(
        err(&[
            "nat-add",
            "dnat",
            "in=ext",
            "proto=sctp",
            "port=1",
            "to=1.2.3.4:5"
        ])
        .contains("proto")
    );
    assert!(
        err(&[
            "nat-add",
            "snat",
            "src=10.0.0.0/8",
            "out=nope",
            "to=1.2.3.4"
        ])
        .contains("out")
    );
    // nat-del by the rule's text (as nat-show prints it): found and removed in one step.
    let rules: serde_json::Value = serde_json::from_str(&d.ctl(&["--json", "nat-show"])).unwrap();
    let mapping = rules["rules"][1]["rule"].as_str().unwrap().to_string();
    assert!(mapping.contains("8080"), "{rules}");
    let words: Vec<&str> = mapping.split_whitespace().collect();
    let mut args = vec!["nat-del"];
    args.extend(&words);
    d.ctl(&args);
    assert_eq!(
        curl(&n("o"), "http://10.250.0.1:8080/"),
        None,
        "mapping removed"
    );
    assert!(
        !d.ctl_raw(&args).status.success(),
        "a second delete names no rule"
    );
}

/// A gateway port that serves nothing refuses at once, as a Linux host with nothing listening
/// does: a TCP connect gets "connection refused" (a reset), a UDP send ICMP port unreachable
/// (the socket's next receive fails with ECONNREFUSED); on an AF_XDP and an AF_PACKET port.
/// (Clients timed out before.)
#[test]
fn a_gateway_port_that_serves_nothing_refuses_at_once() {
    if !root_or_skip("a_gateway_port_that_serves_nothing_refuses_at_once") {
        return;
    }
    let p = prefix("rf");
    let n = |s: &str| format!("{p}{s}");
    let mut t = Topology::default();
    let d = Daemon::start(&p, &["--dns-upstream", "off"]);
    d.ctl(&["add-br", "br0", "gateway=172.31.97.1/24"]);
    d.ctl(&["add-br", "br1", "gateway=172.31.96.1/24"]);
    attach(
        &mut t,
        &d,
        ("br0", &n("c1"), &n("p1")),
        "afxdp",
        "172.31.97.2/24",
        &[],
    );
    attach(
        &mut t,
        &d,
        ("br1", &n("c2"), &n("p2")),
        "afpacket",
        "172.31.96.2/24",
        &[],
    );
    route_add(&n("c1"), "default", "172.31.97.1");
    route_add(&n("c2"), "default", "172.31.96.1");
    let probe = "import socket, sys\n\
        g = sys.argv[1]\n\
        s = socket.socket(); s.settimeout(3)\n\
        try:\n    s.connect((g, 9)); print('tcp: connected')\n\
        except ConnectionRefusedError: print('tcp: refused')\n\
        except Exception as e: print('tcp:', e)\n\
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.settimeout(3)\n\
        u.connect((g, 9)); u.send(b'x')\n\
        try:\n    u.recv(10); print('udp: data')\n\
        except ConnectionRefusedError: print('udp: refused')\n\
        except Exception as e: print('udp:', e)\n";
    for (ns, gw) in [(n("c1"), "172.31.97.1"), (n("c2"), "172.31.96.1")] {
        let out = std::process::Command::new("ip")
            .args(["netns", "exec", &ns, "python3", "-c", probe, gw])
            .output()
            .expect("python3");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("tcp: refused") && text.contains("udp: refused"),
            "{ns}: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let stats = d.ctl(&["stats"]);
    assert!(stats.contains("tcp resets 2"), "{stats}");
}
