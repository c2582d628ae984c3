//! Several workers, in memory (no root): configuration replicated on every worker, learned
//! MACs shared between them, counters summed, and what is not available yet refused.

mod common;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{frame, mac};
use uvs::config::{BridgeSpec, NatSpec};
use uvs::packet::{Desc, Frames};
use uvs::port::{Port, PortKind, TxResult};
use uvs::worker::{Command, WorkerHandle, WorkerOptions, spawn_workers};

/// One worker's side of a test port: frames the test queues for it to receive, and frames it
/// transmitted.
#[derive(Default)]
struct Pipe {
    rx: VecDeque<Vec<u8>>,
    tx: Vec<Vec<u8>>,
}

type Shared = Arc<Mutex<Pipe>>;

/// A port whose queues the test thread reads and writes while the worker owns the port.
struct PipePort(Shared);

impl Port for PipePort {
    fn kind(&self) -> PortKind {
        PortKind::Mem
    }
    fn rx_burst(&mut self, frames: &mut Frames, out: &mut Vec<Desc>, max: usize) -> usize {
        let mut p = self.0.lock().unwrap();
        let mut n = 0;
        while n < max {
            let Some(bytes) = p.rx.pop_front() else { break };
            let Some(mut d) = frames.alloc() else { break };
            d.len = bytes.len() as u32;
            frames.data_mut(d).copy_from_slice(&bytes);
            out.push(d);
            n += 1;
        }
        n
    }
    fn tx_burst(&mut self, frames: &mut Frames, batch: &mut Vec<Desc>) -> TxResult {
        let mut p = self.0.lock().unwrap();
        let mut r = TxResult::default();
        for d in batch.drain(..) {
            p.tx.push(frames.data(d).to_vec());
            frames.free(d.addr);
            r.sent += 1;
            r.bytes += u64::from(d.len);
        }
        r
    }
    fn service(&mut self, _: &mut Frames) {}
    fn poll_fds(&self, _: &mut Vec<std::os::fd::RawFd>) {}
    fn mtu(&self) -> u32 {
        1500
    }
    fn close(&mut self, _: &mut Frames) {}
}

/// Two workers, bridge br0 with ports a, b, c; `pipes[port][worker]`.
fn two_workers() -> (WorkerHandle, Vec<Vec<Shared>>) {
    two_workers_on(
        Arc::new(uvs::clock::MonotonicClock::default()),
        &["a", "b", "c"],
    )
}

/// Two workers on `clock`, bridge br0 with `ports`; `pipes[port][worker]`.
fn two_workers_on(
    clock: Arc<dyn uvs::clock::Clock>,
    ports: &[&str],
) -> (WorkerHandle, Vec<Vec<Shared>>) {
    let opts = WorkerOptions {
        core: None,
        frames: 2048,
        ..Default::default()
    };
    let w = spawn_workers(opts, &[None, None], clock).unwrap();
    assert_eq!(w.worker_count(), 2);
    w.call(Command::AddBridge(
        BridgeSpec::from_args("br0", &[]).unwrap(),
    ))
    .unwrap();
    let mut pipes = Vec::new();
    for &name in ports {
        let mine: Vec<Shared> = (0..2).map(|_| Shared::default()).collect();
        let given = mine.clone();
        w.attach_each("br0", name, move |worker, _id| {
            Box::new(PipePort(given[worker].clone()))
        })
        .unwrap();
        pipes.push(mine);
    }
    (w, pipes)
}

fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(10);
    while !ok() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Learned records worker `i` has received from the others and applied (`stats`).
fn learned_applied(w: &WorkerHandle, i: usize) -> u64 {
    let v = w.call(Command::Stats).unwrap();
    v["workers"][i]["learned_applied"].as_u64().unwrap()
}

fn sent(p: &Shared) -> usize {
    p.lock().unwrap().tx.len()
}

/// A MAC learned by worker 0 is known to worker 1: its reply goes to one port, not flooded.
#[test]
fn a_mac_learned_by_one_worker_is_forwarded_by_the_other() {
    let (w, pipes) = two_workers();
    let (a, b) = (mac(1), mac(2));
    // Worker 0 receives a -> b (b unknown: flooded to b and c), and learns a on port a.
    pipes[0][0].lock().unwrap().rx.push_back(frame(b, a, 1));
    wait_for("the flood on worker 0", || {
        sent(&pipes[1][0]) == 1 && sent(&pipes[2][0]) == 1
    });
    // Worker 1 receives b -> a on port b: a was learned by worker 0 only. Records are applied
    // between bursts, so wait until worker 1 has applied worker 0's (the `stats` counter).
    wait_for("worker 1 applying what worker 0 learned", || {
        learned_applied(&w, 1) >= 1
    });
    let reply = frame(a, b, 2);
    pipes[1][1].lock().unwrap().rx.push_back(reply.clone());
    wait_for("worker 1 forwarding to a", || sent(&pipes[0][1]) == 1);
    assert_eq!(pipes[0][1].lock().unwrap().tx[0], reply);
    assert_eq!(
        sent(&pipes[2][1]),
        0,
        "worker 1 flooded to c a MAC worker 0 had learned"
    );
    // Worker 0 knows b once it applied worker 1's record: a -> b goes to b alone.
    wait_for("worker 0 applying what worker 1 learned", || {
        learned_applied(&w, 0) >= 1
    });
    pipes[0][0].lock().unwrap().rx.push_back(frame(b, a, 3));
    wait_for("a -> b on worker 0", || sent(&pipes[1][0]) == 2);
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(
        sent(&pipes[2][0]),
        1,
        "worker 0 flooded a MAC worker 1 had learned"
    );
    // Counters are the sum over the workers; each worker's loop is listed.
    let v = w.call(Command::Stats).unwrap();
    assert_eq!(v["ports"]["a"]["rx_packets"], 2, "{v}");
    // Every reply worker 1 received went to a.
    assert_eq!(
        v["ports"]["b"]["rx_packets"],
        sent(&pipes[0][1]) as u64,
        "{v}"
    );
    assert_eq!(
        v["ports"]["a"]["tx_packets"],
        sent(&pipes[0][1]) as u64,
        "{v}"
    );
    assert_eq!(v["bridges"]["br0"]["learned"], 2, "{v}");
    assert_eq!(v["workers"].as_array().map(Vec::len), Some(2), "{v}");
    w.shutdown();
}

/// Configuration reaches every worker: a port deleted on the handle is gone on both, a bridge
/// added later forwards on both.
#[test]
fn configuration_is_applied_by_every_worker() {
    let (w, pipes) = two_workers();
    w.call(Command::DelPort("c".into())).unwrap();
    let (a, b) = (mac(1), mac(2));
    let [pa, pb, pc] = &pipes[..] else {
        unreachable!()
    };
    for (worker, ((a_in, b_out), c_out)) in pa.iter().zip(pb).zip(pc).enumerate() {
        a_in.lock().unwrap().rx.push_back(frame(b, a, 1));
        wait_for("the flood", || sent(b_out) == 1);
        assert_eq!(sent(c_out), 0, "c was deleted on worker {worker}");
    }
    let e = w.call(Command::DelPort("c".into())).unwrap_err();
    assert!(e.contains('c'), "{e}");
    w.shutdown();
}

/// The conntrack limits `ct-show` reports are the switch's (every worker's table summed), as
/// the `uvs_conntrack_limit` metric (the summed counts) says: found trying uvs as a new user,
/// they disagreed by a factor of two with two workers.
#[test]
fn conntrack_limits_are_reported_for_the_whole_switch() {
    let (w, _pipes) = two_workers();
    let ct = w.call(Command::CtShow { from: 0 }).unwrap();
    let counts = w
        .call(Command::Observe(uvs::observe::ObserveCmd::Counts))
        .unwrap();
    assert_eq!(ct["limit"], counts["conntrack"]["limit"], "{ct} / {counts}");
    assert_eq!(ct["limit"], 2 * 65536, "{ct}");
    w.shutdown();
}

/// Give br0 the gateway 10.0.0.1/24.
fn set_gateway(w: &WorkerHandle) {
    let gw = uvs::datapath::Gateway {
        ip: [10, 0, 0, 1],
        len: 24,
        mac: uvs::datapath::Gateway::default_mac("br0"),
    };
    w.call(Command::SetGateway {
        bridge: "br0".into(),
        gateway: Some(gw),
    })
    .unwrap();
}

/// A gateway set on a bridge is announced once (one gratuitous ARP out of each port), not
/// once per worker: found trying uvs as a new user, two workers sent two.
#[test]
fn a_gateway_is_announced_once_with_two_workers() {
    let (w, pipes) = two_workers();
    let total = |port: &Vec<Shared>| port.iter().map(sent).sum::<usize>();
    let before: Vec<usize> = pipes.iter().map(total).collect();
    set_gateway(&w);
    wait_for("the announcement", || {
        pipes.iter().zip(&before).all(|(p, b)| total(p) > *b)
    });
    std::thread::sleep(Duration::from_millis(300));
    for (i, (p, b)) in pipes.iter().zip(&before).enumerate() {
        assert_eq!(total(p) - b, 1, "gratuitous ARPs out of port {i}");
    }
    w.shutdown();
}

/// What needs state per connection or per worker and is not steered is refused, naming why;
/// NAT rules (steered, see `pipeline::steer`) are accepted by every worker.
#[test]
fn what_is_not_available_yet_is_refused() {
    let (w, _pipes) = two_workers();
    set_gateway(&w);
    let args: Vec<String> = ["masquerade", "src=10.1.0.0/24", "out=br0"]
        .map(String::from)
        .into();
    let nat = NatSpec::from_args(&args).unwrap();
    w.call(Command::NatAdd(nat)).unwrap();
    let rules = w.call(Command::NatShow).unwrap();
    assert_eq!(rules["rules"].as_array().map(Vec::len), Some(1), "{rules}");
    let f = uvs::flow::parse_flow(
        "priority=5,actions=learn(table=10,eth_dst[]=eth_src[],load:in_port[]->reg0[0..15]),normal",
    )
    .unwrap();
    let e = w
        .call(Command::FlowAdd {
            bridge: "br0".into(),
            flows: vec![f],
        })
        .unwrap_err();
    assert!(
        e.contains("learn()") && e.contains("several workers"),
        "{e}"
    );
    let f = uvs::flow::parse_flow("priority=5,ip,actions=ct(commit),normal").unwrap();
    w.call(Command::FlowAdd {
        bridge: "br0".into(),
        flows: vec![f],
    })
    .unwrap();
    let f = uvs::flow::parse_flow("priority=5,ip,actions=normal").unwrap();
    w.call(Command::FlowAdd {
        bridge: "br0".into(),
        flows: vec![f],
    })
    .unwrap();
    w.shutdown();
}

/// Deleting a port mapping removes the connections it made, on every worker: a UDP client
/// that keeps sending (each datagram refreshes its entry) would otherwise reach the old target
/// for as long as it sends, even after the mapping was replaced (found trying uvs as a new
/// user: a container re-created behind a UDP mapping never got the stream).
#[test]
fn deleting_a_port_mapping_removes_its_connections() {
    let (w, pipes) = two_workers();
    set_gateway(&w);
    let args: Vec<String> = ["dnat", "in=br0", "proto=udp", "port=9000", "to=10.0.0.3:53"]
        .map(String::from)
        .into();
    w.call(Command::NatAdd(NatSpec::from_args(&args).unwrap()))
        .unwrap();
    let gw = uvs::datapath::Gateway::default_mac("br0");
    let mut f = Vec::new();
    etherparse::PacketBuilder::ethernet2(mac(2), gw.0)
        .ipv4([10, 0, 0, 2], [10, 0, 0, 1], 64)
        .udp(40999, 9000)
        .write(&mut f, b"x")
        .unwrap();
    // The target (10.0.0.3, behind b) asks for the gateway: its neighbour entry is made.
    let mut arp = Vec::new();
    etherparse::PacketBuilder::ethernet2(mac(3), [0xff; 6])
        .arp(
            etherparse::ArpPacket::new(
                etherparse::ArpHardwareId::ETHERNET,
                etherparse::EtherType::IPV4,
                etherparse::ArpOperation::REQUEST,
                &mac(3),
                &[10, 0, 0, 3],
                &[0; 6],
                &[10, 0, 0, 1],
            )
            .unwrap(),
        )
        .write(&mut arp)
        .unwrap();
    for p in &pipes[1] {
        p.lock().unwrap().rx.push_back(arp.clone());
    }
    wait_for("the ARP reply", || {
        pipes[1].iter().map(sent).sum::<usize>() >= 3
    });
    for p in &pipes[0] {
        p.lock().unwrap().rx.push_back(f.clone());
    }
    // Every worker's connections (`ct-show` pages through the workers).
    let count = || {
        let (mut n, mut from) = (0, Some(0));
        while let Some(f) = from {
            let v = w.call(Command::CtShow { from: f }).unwrap();
            n += v["count"].as_u64().unwrap();
            from = v["next"].as_u64().map(|x| x as usize);
        }
        n
    };
    wait_for("the mapping's connection", || count() >= 1);
    w.call(Command::NatDelRule(
        "dnat in=br0 proto=udp port=9000 to=10.0.0.3:53".into(),
    ))
    .unwrap();
    assert_eq!(count(), 0);
    w.shutdown();
}

/// Storm control holds for the port as a whole: a port whose frames reach two workers floods
/// its budget once in total, not once per worker (each worker kept its own bucket: a storm
/// through two workers got twice the configured budget). The clock stands still, so the
/// bucket holds exactly its burst (the default: 10,000 frames).
#[test]
fn a_ports_flood_budget_holds_over_two_workers() {
    let (w, pipes) = two_workers_on(Arc::new(uvs::clock::ManualClock::at(1_000)), &["a", "b"]);
    let per_worker = 15_000;
    for (i, pipe) in pipes[0].iter().enumerate() {
        let mut p = pipe.lock().unwrap();
        for n in 0..per_worker {
            p.rx.push_back(frame([0xff; 6], mac(10 + i as u8), (n % 200) as u8));
        }
    }
    wait_for("both workers receiving the storm", || {
        let v = w.call(Command::Stats).unwrap();
        v["ports"]["a"]["rx_packets"].as_u64() == Some(2 * per_worker)
    });
    let flooded: usize = pipes[1].iter().map(sent).sum();
    let v = w.call(Command::Stats).unwrap();
    assert_eq!(
        flooded,
        uvs::pipeline::flood_limit::DEFAULT_FLOOD_BURST as usize,
        "flooded to b over both workers: {v}"
    );
    w.shutdown();
}
