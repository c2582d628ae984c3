//! Asynchronous OpenFlow messages seen by a real client: `ovs-ofctl monitor BRIDGE watch:`
//! (Debian's 3.1), OpenFlow 1.0 (its default) and `-O OpenFlow13`, receives the PACKET_IN of a
//! `controller` flow, the PORT_STATUS of a port added and deleted, and the FLOW_REMOVED of a
//! `send_flow_rem` flow whose hard timeout ends. No root: the switch runs in-process with
//! in-memory ports; skipped when `ovs-ofctl` is not installed.

use std::path::PathBuf;
use std::process::{Child, Command as Proc, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use uvs::clock::MonotonicClock;
use uvs::control::Registry;
use uvs::port::mem::MemPort;
use uvs::worker::{self, Command, WorkerHandle, WorkerOptions};

struct Switch {
    dir: PathBuf,
    reg: Arc<Registry>,
    w: Arc<WorkerHandle>,
    of: Option<uvs::openflow::Manager>,
}

impl Drop for Switch {
    fn drop(&mut self) {
        self.of.take();
        self.w.shutdown();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A monitor process, killed by its own handle when dropped.
struct Monitor {
    child: Child,
    out: PathBuf,
}

impl Drop for Monitor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Monitor {
    fn text(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }
}

fn have_ofctl() -> bool {
    let ok = Proc::new("ovs-ofctl").arg("--version").output().is_ok();
    if !ok {
        eprintln!("skipped: ovs-ofctl is not installed");
    }
    ok
}

fn wait_for(mut ok: impl FnMut() -> bool, what: &str, log: impl Fn() -> String) {
    let end = Instant::now() + Duration::from_secs(10);
    while !ok() {
        assert!(
            Instant::now() < end,
            "timed out waiting for {what}:\n{}",
            log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn start(tag: &str) -> Switch {
    let dir = std::env::temp_dir().join(format!("uvs-ofev-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let w = Arc::new(
        worker::spawn(
            WorkerOptions {
                core: None,
                frames: 4096,
            },
            Arc::new(MonotonicClock::default()),
        )
        .unwrap(),
    );
    let mut reg = Registry::new();
    uvs::control::commands::register(&mut reg, w.clone());
    let reg = Arc::new(reg);
    reg.call("add-br", &["br0".to_string()]).unwrap();
    let of = uvs::openflow::Manager::start(dir.clone(), reg.clone(), Some(w.events())).unwrap();
    let s = Switch {
        dir,
        reg,
        w,
        of: Some(of),
    };
    let sock = s.dir.join("br0.mgmt");
    wait_for(|| sock.exists(), "the br0.mgmt socket", String::new);
    s
}

impl Switch {
    fn target(&self) -> String {
        format!("unix:{}", self.dir.join("br0.mgmt").display())
    }

    fn call(&self, args: &[&str]) -> serde_json::Value {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        self.reg
            .call(&args[0], &args[1..])
            .unwrap_or_else(|e| panic!("{args:?}: {}", e.message()))
            .data
    }

    /// Attach a port that receives `n` UDP frames (60 bytes each).
    fn attach(&self, name: &str, n: u64) {
        let mut f = vec![0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1, 0x08, 0x00];
        f.extend_from_slice(&[
            0x45, 0, 0, 28, 0, 0, 0, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 1, 2, 3,
        ]);
        f.extend_from_slice(&[0x30, 0x39, 0, 80, 0, 8, 0, 0]);
        f.resize(60, 0);
        self.w
            .call(Command::AttachPort {
                bridge: "br0".into(),
                name: name.into(),
                build: Box::new(move |id| Box::new(MemPort::replay(id, &f, n))),
            })
            .unwrap();
    }

    /// `ovs-ofctl [-O VERSION] monitor BRIDGE watch:` writing to a file.
    fn monitor(&self, version: Option<&str>, tag: &str) -> Monitor {
        let out = self.dir.join(format!("monitor-{tag}.txt"));
        let file = std::fs::File::create(&out).unwrap();
        let mut cmd = Proc::new("ovs-ofctl");
        if let Some(v) = version {
            cmd.args(["-O", v]);
        }
        let child = cmd
            .args(["monitor", &self.target(), "watch:"])
            .env("OVS_RUNDIR", &self.dir)
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .stdin(Stdio::null())
            .spawn()
            .expect("run ovs-ofctl monitor");
        let m = Monitor { child, out };
        let hub = self.of.as_ref().unwrap().hub();
        wait_for(
            || hub.count("br0") >= 1,
            "the monitor to connect",
            || m.text(),
        );
        // ovs-ofctl discards what arrives while it sets itself up (it waits for replies to
        // its own requests); the flow monitor's reply is the last step.
        wait_for(
            || m.text().contains("FLOW_MONITOR reply"),
            "the monitor's setup",
            || m.text(),
        );
        m
    }
}

/// Flows, a port, its packets, the flow's expiry and the port's removal, as the monitor sees
/// them; returns the monitor's text.
fn scenario(version: Option<&str>, tag: &str, want: &[&str]) {
    if !have_ofctl() {
        return;
    }
    let s = start(tag);
    let m = s.monitor(version, tag);
    s.call(&["add-flow", "br0", "priority=0,actions=controller"]);
    s.call(&[
        "add-flow",
        "br0",
        "send_flow_rem,hard_timeout=1,priority=5,arp,actions=drop",
    ]);
    s.attach("p1", 3);
    wait_for(
        || m.text().matches("PACKET_IN").count() >= 3,
        "3 packet-ins",
        || m.text(),
    );
    wait_for(
        || m.text().contains("FLOW_REMOVED"),
        "flow removed",
        || m.text(),
    );
    s.call(&["del-port", "p1"]);
    wait_for(|| m.text().contains("DEL:"), "port deleted", || m.text());
    // A delete of a send_flow_rem flow says so too (and one without the flag says nothing).
    s.call(&[
        "add-flow",
        "br0",
        "send_flow_rem,priority=7,icmp,actions=drop",
    ]);
    s.call(&["add-flow", "br0", "priority=8,tcp,actions=drop"]);
    s.call(&["del-flows", "br0", "ip"]);
    wait_for(
        || m.text().contains("reason=delete"),
        "flow removed by a delete",
        || m.text(),
    );
    let text = m.text();
    eprintln!("{text}");
    for w in want {
        assert!(text.contains(w), "'{w}' not in:\n{text}");
    }
    let st = s.call(&["stats"]);
    assert_eq!(st["events"]["dropped"], 0, "{st}");
}

#[test]
fn monitor_openflow10_sees_packet_in_port_status_flow_removed() {
    scenario(
        None,
        "of10",
        &[
            "total_len=60 in_port=1 (via action) data_len=60 (unbuffered)",
            "ADD: 1(p1)",
            "DEL: 1(p1)",
            "reason=hard",
            "priority=7,icmp reason=delete",
            "udp,vlan_tci=0x0000,dl_src=02:00:00:00:00:01,dl_dst=02:00:00:00:00:02,nw_src=10.0.0.1,nw_dst=10.1.2.3",
        ],
    );
}

#[test]
fn monitor_openflow13_sees_packet_in_port_status_flow_removed() {
    scenario(
        Some("OpenFlow13"),
        "of13",
        &[
            "(OF1.3)",
            "in_port=1 (via no_match) data_len=60 (unbuffered)",
            "ADD: 1(p1)",
            "DEL: 1(p1)",
            "reason=hard",
            "priority=7,icmp reason=delete",
        ],
    );
}

/// A controller connection that stops reading cannot stall forwarding: the worker keeps
/// switching every frame, the events it cannot queue are dropped and counted, and the
/// connection is closed once a write has waited `hub::WRITE_TIMEOUT`.
#[test]
fn a_controller_that_stops_reading_does_not_stall_forwarding() {
    use std::io::{Read, Write};
    let s = start("slow");
    let mut c = std::os::unix::net::UnixStream::connect(s.dir.join("br0.mgmt")).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut hello = [0u8; 16];
    c.read_exact(&mut hello).unwrap();
    c.write_all(&[4, 0, 0, 8, 0, 0, 0, 1]).unwrap();
    let hub = s.of.as_ref().unwrap().hub();
    wait_for(
        || hub.count("br0") == 1,
        "the connection to join",
        String::new,
    );
    // Every frame goes to the controller and is switched.
    s.call(&["add-flow", "br0", "priority=0,actions=controller,NORMAL"]);
    let n = 200_000u64;
    s.w.call(Command::AttachPort {
        bridge: "br0".into(),
        name: "sink".into(),
        build: Box::new(|id| Box::new(MemPort::sink(id))),
    })
    .unwrap();
    let t = Instant::now();
    s.attach("p1", n);
    let tx = || {
        s.call(&["stats"])["ports"]["sink"]["tx_packets"]
            .as_u64()
            .unwrap_or(0)
    };
    let end = Instant::now() + Duration::from_secs(60);
    while tx() < n {
        assert!(Instant::now() < end, "only {} of {n} frames switched", tx());
        std::thread::sleep(Duration::from_millis(20));
    }
    let took = t.elapsed();
    let ev = s.call(&["stats"])["events"].clone();
    eprintln!("{n} frames switched in {took:?} with a stalled controller; events {ev}");
    let count = |k: &str| ev[k].as_u64().unwrap();
    assert!(count("dropped") > 0, "{ev}");
    // n packet-ins and the two ports' PORT_STATUS.
    assert_eq!(
        count("sent") + count("dropped") + count("no_listener"),
        n + 2,
        "every event queued, or dropped and counted: {ev}"
    );
    // The stalled controller is disconnected (as OVS does), and leaves the bridge.
    wait_for(
        || hub.count("br0") == 0,
        "the stalled connection to close",
        String::new,
    );
    let mut rest = Vec::new();
    assert!(
        c.read_to_end(&mut rest).is_ok(),
        "EOF after the queued messages"
    );
}
