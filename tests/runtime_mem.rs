//! Per-node runtime counters (`show-runtime`), in memory: the counters of each pipeline node
//! move as frames pass it (L2, routed, dropped, flows), `clear` zeroes them, and the control
//! command answers through a real worker and registry over the unix socket.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use uvs::datapath::{Gateway, VlanMode};
use uvs::pipeline::runtime::{Node, NodeStats};
use uvs::wire::MacAddr;

fn stats(h: &Harness, n: Node) -> NodeStats {
    h.pipeline.runtime().get(n)
}

#[test]
fn l2_frames_move_ingress_learn_fwd_output() {
    let mut h = Harness::new();
    let b = h.bridge("br0");
    let p0 = h.port(b, "p0", VlanMode::default_trunk());
    let p1 = h.port(b, "p1", VlanMode::default_trunk());
    for i in 0..5 {
        h.ports[p0 as usize].inject(&frame(mac(2), mac(1), i));
    }
    h.run();
    for n in [
        Node::EthernetInput,
        Node::L2Learn,
        Node::L2Fwd,
        Node::Output,
    ] {
        let s = stats(&h, n);
        assert_eq!((s.calls, s.vectors), (1, 5), "{}", n.name());
    }
    // The bridge has no gateway and no flows: those nodes never ran.
    for n in [
        Node::GatewayInput,
        Node::Ip4Input,
        Node::Flows,
        Node::Vxlan4Encap,
        Node::Vxlan4Input,
    ] {
        assert_eq!(stats(&h, n), NodeStats::default(), "{}", n.name());
    }
    h.send(p1, &frame(mac(1), mac(2), 9));
    assert_eq!(stats(&h, Node::EthernetInput).calls, 2);
    assert_eq!(stats(&h, Node::EthernetInput).vectors, 6);
    assert_eq!(h.outputs()[p0 as usize].len(), 1);
    // A runt is counted in ethernet-input's vectors and its drop reason belongs there.
    h.send(p0, &[0u8; 10]);
    assert_eq!(stats(&h, Node::EthernetInput).vectors, 7);
    let drops = [h.dp.port(p0).unwrap().counters.drops];
    let r = uvs::pipeline::runtime::report(h.pipeline.runtime(), drops.iter());
    assert_eq!(r[Node::EthernetInput as usize].drops.get("runt"), Some(&1));
    assert_eq!(r[Node::EthernetInput as usize].vectors_per_call, 7.0 / 3.0);
    h.pipeline.clear_runtime(drops.iter());
    assert_eq!(stats(&h, Node::EthernetInput), NodeStats::default());
    // Drops too: the report counts from the clear, the port keeps its total.
    let r = uvs::pipeline::runtime::report(h.pipeline.runtime(), drops.iter());
    assert!(
        r[Node::EthernetInput as usize].drops.is_empty(),
        "{:?}",
        r[0].drops
    );
    h.send(p0, &[0u8; 10]);
    let drops = [h.dp.port(p0).unwrap().counters.drops];
    let r = uvs::pipeline::runtime::report(h.pipeline.runtime(), drops.iter());
    assert_eq!(r[Node::EthernetInput as usize].drops.get("runt"), Some(&1));
    assert_eq!(h.drops(p0, uvs::counters::DropReason::Runt), 2);
}

#[test]
fn routed_frames_move_gateway_input_or_ip4_input() {
    let mut h = Harness::new();
    let b0 = h.bridge("br0");
    let b1 = h.bridge("br1");
    let a = h.port(b0, "a", VlanMode::default_trunk());
    let _b = h.port(b1, "b", VlanMode::default_trunk());
    let gw0 = Gateway::default_mac("br0");
    for (br, ip, name) in [(b0, [10, 0, 1, 1], "br0"), (b1, [10, 0, 2, 1], "br1")] {
        let gw = Gateway {
            ip,
            len: 24,
            mac: Gateway::default_mac(name),
        };
        h.dp.set_gateway(br, Some(gw)).unwrap();
    }
    h.dp.neigh
        .learn(b1, [10, 0, 2, 2], MacAddr([2, 0, 0, 0, 0, 0x0b]), 1);
    let mut f = Vec::new();
    etherparse::PacketBuilder::ethernet2(mac(0x0a), gw0.0)
        .ipv4([10, 0, 1, 2], [10, 0, 2, 2], 64)
        .udp(4000, 53)
        .write(&mut f, b"routed")
        .unwrap();
    for _ in 0..3 {
        h.ports[a as usize].inject(&f);
    }
    h.run();
    // At the head of the burst: parsed, learned and routed by gateway-input alone.
    let gw = stats(&h, Node::GatewayInput);
    assert_eq!((gw.calls, gw.vectors), (1, 3));
    assert_eq!(stats(&h, Node::EthernetInput), NodeStats::default());
    assert_eq!(stats(&h, Node::Ip4Input), NodeStats::default());
    assert_eq!(h.dp.router.routed, 3);
    assert_eq!(h.outputs()[1].len(), 3, "routed out of br1's port");
    // Behind a frame that is not for the gateway, routed frames take the whole pipeline.
    h.ports[a as usize].inject(&frame(mac(7), mac(0x0a), 1));
    h.ports[a as usize].inject(&f);
    h.ports[a as usize].inject(&f);
    h.run();
    let ip = stats(&h, Node::Ip4Input);
    assert_eq!((ip.calls, ip.vectors), (1, 2));
    assert_eq!(stats(&h, Node::EthernetInput).vectors, 3);
    assert_eq!(stats(&h, Node::GatewayInput).vectors, 3);
    assert_eq!(h.dp.router.routed, 5);
    // L2 frames on a bridge with a gateway are charged to neither.
    h.send(a, &frame(mac(7), mac(0x0a), 1));
    assert_eq!(stats(&h, Node::Ip4Input).vectors, 2);
    assert_eq!(stats(&h, Node::GatewayInput).vectors, 3);
    assert_eq!(stats(&h, Node::EthernetInput).vectors, 4);
}

#[test]
fn flows_node_runs_only_with_flows() {
    let mut h = Harness::new();
    let b = h.bridge("br0");
    let p0 = h.port(b, "p0", VlanMode::default_trunk());
    let _p1 = h.port(b, "p1", VlanMode::default_trunk());
    h.send(p0, &frame(mac(2), mac(1), 1));
    assert_eq!(stats(&h, Node::Flows).calls, 0);
    let mut fl =
        uvs::flow::parse_flow("priority=10,dl_src=02:00:00:00:00:01,actions=drop").unwrap();
    let t = &mut h.dp.bridge_mut(b).unwrap().flows;
    t.bind_ports(&mut fl).unwrap();
    t.cls.add(fl, 0, |r| Some(r.num())).unwrap();
    t.refresh();
    h.send(p0, &frame(mac(2), mac(1), 2));
    h.send(p0, &frame(mac(2), mac(3), 3));
    let s = stats(&h, Node::Flows);
    assert_eq!((s.calls, s.vectors), (2, 2));
    // Output is charged the whole burst (a dropped frame passes it as a freed slot).
    assert_eq!(stats(&h, Node::Output).vectors, 3);
    assert_eq!(h.outputs()[1].len(), 2, "the dropped frame never left");
}

/// A daemon in-process: worker, registry with the datapath commands, control socket in a
/// directory of its own (`tag` names it).
struct Daemon {
    w: Arc<uvs::worker::WorkerHandle>,
    server: Option<uvs::control::ServerHandle>,
    dir: std::path::PathBuf,
}

impl Daemon {
    fn start(tag: &str) -> Daemon {
        let w = Arc::new(
            uvs::worker::spawn(
                uvs::worker::WorkerOptions {
                    core: None,
                    frames: 4096,
                    ..Default::default()
                },
                Arc::new(uvs::clock::MonotonicClock::default()),
            )
            .unwrap(),
        );
        let mut reg = uvs::control::Registry::new();
        uvs::control::commands::register(&mut reg, w.clone());
        let dir = std::env::temp_dir().join(format!("uvs-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let server = uvs::control::serve(&dir.join("uvs.sock"), Arc::new(reg), 0o600).unwrap();
        Daemon {
            w,
            server: Some(server),
            dir,
        }
    }

    fn call(&self, args: &[&str]) -> Result<uvs::control::Reply, uvs::control::ClientError> {
        let (cmd, rest) = args.split_first().unwrap();
        let rest: Vec<String> = rest.iter().map(|s| s.to_string()).collect();
        uvs::control::call(self.server.as_ref().unwrap().path(), cmd, &rest)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        drop(self.server.take());
        self.w.shutdown();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One replay port feeding a sink, counted per node over the control socket.
#[test]
fn show_runtime_over_the_control_socket() {
    let d = Daemon::start("rt");
    let (w, call) = (&d.w, |args: &[&str]| d.call(args));
    call(&["add-br", "br0"]).unwrap();
    let f = frame(mac(2), mac(1), 7);
    for (name, n) in [("sink", 0u64), ("src", 1000)] {
        let f = f.clone();
        w.call(uvs::worker::Command::AttachPort {
            bridge: "br0".into(),
            name: name.into(),
            build: Box::new(move |id| {
                if n == 0 {
                    Box::new(uvs::port::mem::MemPort::sink(id))
                } else {
                    Box::new(uvs::port::mem::MemPort::replay(id, &f, n))
                }
            }),
        })
        .unwrap();
    }
    let node = |v: &serde_json::Value, n: &str| {
        v["workers"][0]["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["name"] == n)
            .cloned()
            .unwrap()
    };
    let end = Instant::now() + Duration::from_secs(10);
    let v = loop {
        let v = call(&["show-runtime"]).unwrap().data;
        if node(&v, "ethernet-input")["vectors"] == 1000 {
            break v;
        }
        assert!(Instant::now() < end, "1000 frames never all counted: {v}");
        std::thread::sleep(Duration::from_millis(10));
    };
    let ing = node(&v, "ethernet-input");
    assert!(ing["calls"].as_u64().unwrap() >= 1000 / 64);
    assert!(ing["vectors_per_call"].as_f64().unwrap() > 1.0);
    assert!(ing["ticks"].as_u64().unwrap() > 0);
    assert_eq!(node(&v, "interface-output")["vectors"], 1000);
    let text = call(&["show-runtime", "clear"]).unwrap().text;
    assert!(
        text.contains("ethernet-input") && text.contains("Vectors/Call"),
        "{text}"
    );
    assert!(text.contains("(counters cleared)"), "{text}");
    let v = call(&["show-runtime"]).unwrap().data;
    assert_eq!(node(&v, "ethernet-input")["vectors"], 0);
    let e = call(&["show-runtime", "reset"]).unwrap_err().to_string();
    assert!(e.contains("'reset'"), "{e}");
}

/// `list-br`, `list-ports` and `port-to-br` answer as ovs-vsctl's: one sorted name a line,
/// an error naming the argument for a bridge or port that is not there.
#[test]
fn list_br_list_ports_port_to_br_and_show_bridge_as_ovs() {
    let d = Daemon::start("list");
    assert_eq!(d.call(&["list-br"]).unwrap().text, "");
    for br in ["zeta", "alpha"] {
        d.call(&["add-br", br]).unwrap();
    }
    for (br, port) in [("alpha", "p2"), ("alpha", "p10"), ("zeta", "z1")] {
        d.w.call(uvs::worker::Command::AttachPort {
            bridge: br.into(),
            name: port.into(),
            build: Box::new(|id| Box::new(uvs::port::mem::MemPort::sink(id))),
        })
        .unwrap();
    }
    let r = d.call(&["list-br"]).unwrap();
    assert_eq!(r.text, "alpha\nzeta\n");
    assert_eq!(r.data["bridges"], serde_json::json!(["alpha", "zeta"]));
    let r = d.call(&["list-ports", "alpha"]).unwrap();
    assert_eq!(r.text, "p10\np2\n");
    assert_eq!(d.call(&["list-ports", "zeta"]).unwrap().text, "z1\n");
    let e = d.call(&["list-ports", "beta"]).unwrap_err().to_string();
    assert!(e.contains("BRIDGE: no bridge named 'beta'"), "{e}");
    assert_eq!(d.call(&["port-to-br", "z1"]).unwrap().text, "zeta\n");
    let e = d.call(&["port-to-br", "z2"]).unwrap_err().to_string();
    assert!(e.contains("PORT: no port named 'z2'"), "{e}");
    // `show BRIDGE`: that bridge alone, its mirrors too.
    d.call(&["add-mirror", "alpha", "m1", "select=p2", "output=p10"])
        .unwrap();
    assert!(d.call(&["show"]).unwrap().text.contains("mirror m1"));
    assert!(
        !d.call(&["show", "zeta"])
            .unwrap()
            .text
            .contains("mirror m1")
    );
    let r = d.call(&["show", "zeta"]).unwrap();
    assert!(
        r.text.contains("bridge zeta") && !r.text.contains("bridge alpha"),
        "{}",
        r.text
    );
    let e = d.call(&["show", "beta"]).unwrap_err().to_string();
    assert!(e.contains("BRIDGE: no bridge named 'beta'"), "{e}");
    d.call(&["del-br", "zeta"]).unwrap();
    assert_eq!(d.call(&["list-br"]).unwrap().text, "alpha\n");
}

/// ovs-vsctl's `--may-exist` and `--if-exists`: what is already there (or already gone) is
/// fine; a port of that name in another bridge is still an error; other options are named.
#[test]
fn may_exist_and_if_exists_as_ovs_vsctl() {
    let d = Daemon::start("mayexist");
    d.call(&["add-br", "br0"]).unwrap();
    assert!(d.call(&["add-br", "br0"]).is_err());
    d.call(&["add-br", "--may-exist", "br0"]).unwrap();
    d.call(&["add-br", "br1", "--may-exist"]).unwrap();
    assert_eq!(d.call(&["list-br"]).unwrap().text, "br0\nbr1\n");
    d.w.call(uvs::worker::Command::AttachPort {
        bridge: "br0".into(),
        name: "p1".into(),
        build: Box::new(|id| Box::new(uvs::port::mem::MemPort::sink(id))),
    })
    .unwrap();
    d.call(&["add-port", "--may-exist", "br0", "p1"]).unwrap();
    let e = d
        .call(&["add-port", "--may-exist", "br1", "p1"])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("port 'p1' already exists (in bridge 'br0')"),
        "{e}"
    );
    d.call(&["del-port", "--if-exists", "br1", "p9"]).unwrap();
    d.call(&["del-port", "--if-exists", "p9"]).unwrap();
    assert!(d.call(&["del-port", "p9"]).is_err());
    d.call(&["del-br", "--if-exists", "br9"]).unwrap();
    assert!(d.call(&["del-br", "br9"]).is_err());
    d.call(&["del-br", "--if-exists", "br1"]).unwrap();
    assert_eq!(d.call(&["list-br"]).unwrap().text, "br0\n");
    let e = d
        .call(&["add-br", "--if-exists", "x"])
        .unwrap_err()
        .to_string();
    assert!(e.contains("unknown option '--if-exists'"), "{e}");
    assert!(
        d.call(&["add-br", "--may-exist"])
            .unwrap_err()
            .to_string()
            .contains("usage")
    );
}
