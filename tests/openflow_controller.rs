//! `set-controller`: the switch connects out to a controller (here a minimal one written in
//! the test, on 127.0.0.1), answers it with the configured datapath id, sends it PORT_STATUS,
//! and reconnects after the controller drops the connection. Fail modes: `standalone` makes a
//! bridge without a connected controller a learning switch, `secure` keeps its flows. No root:
//! in-process switch with in-memory ports.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use uvs::clock::MonotonicClock;
use uvs::control::Registry;
use uvs::port::mem::MemPort;
use uvs::worker::{self, Command, WorkerHandle, WorkerOptions};

struct Switch {
    dir: std::path::PathBuf,
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

fn start(tag: &str) -> Switch {
    let dir = std::env::temp_dir().join(format!("uvs-ofc-{}-{tag}", std::process::id()));
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
    let of = uvs::openflow::Manager::start(dir.clone(), reg.clone(), Some(w.events())).unwrap();
    Switch {
        dir,
        reg,
        w,
        of: Some(of),
    }
}

impl Switch {
    fn call(&self, args: &[&str]) -> Result<serde_json::Value, String> {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        self.reg
            .call(&args[0], &args[1..])
            .map(|r| r.data)
            .map_err(|e| e.message().to_string())
    }

    fn ok(&self, args: &[&str]) -> serde_json::Value {
        self.call(args).unwrap_or_else(|e| panic!("{args:?}: {e}"))
    }

    fn attach(&self, name: &str, n: u64) {
        // Broadcast UDP frames: NORMAL floods them to every other port.
        let mut f = vec![
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0, 0, 0, 0, 1, 0x08, 0x00,
        ];
        f.extend_from_slice(&[
            0x45, 0, 0, 28, 0, 0, 0, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 255,
        ]);
        f.extend_from_slice(&[0x30, 0x39, 0, 80, 0, 8, 0, 0]);
        f.resize(60, 0);
        self.w
            .call(Command::AttachPort {
                bridge: "br0".into(),
                name: name.into(),
                build: Box::new(move |id| {
                    if n == 0 {
                        Box::new(MemPort::sink(id))
                    } else {
                        Box::new(MemPort::replay(id, &f, n))
                    }
                }),
            })
            .unwrap();
    }

    fn tx(&self, port: &str) -> u64 {
        self.ok(&["stats"])["ports"][port]["tx_packets"]
            .as_u64()
            .unwrap_or(0)
    }

    fn bridge(&self) -> serde_json::Value {
        self.ok(&["show"])["bridges"][0].clone()
    }
}

fn wait_for(mut ok: impl FnMut() -> bool, what: &str) {
    let end = Instant::now() + Duration::from_secs(15);
    while !ok() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Read one OpenFlow message.
fn read_msg(s: &mut TcpStream) -> Vec<u8> {
    let mut h = [0u8; 8];
    s.read_exact(&mut h).unwrap();
    let len = usize::from(u16::from_be_bytes([h[2], h[3]]));
    let mut m = h.to_vec();
    m.resize(len, 0);
    s.read_exact(&mut m[8..]).unwrap();
    m
}

/// Accept the switch, say HELLO (1.3), ask for FEATURES; returns the stream and the datapath
/// id it announced.
fn handshake(l: &TcpListener) -> (TcpStream, u64) {
    let (mut s, _) = l.accept().unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let hello = read_msg(&mut s);
    assert_eq!(hello[1], 0, "HELLO first");
    s.write_all(&[4, 0, 0, 8, 0, 0, 0, 1]).unwrap();
    s.write_all(&[4, 5, 0, 8, 0, 0, 0, 2]).unwrap();
    loop {
        let m = read_msg(&mut s);
        if m[1] == 6 {
            assert_eq!(m[0], 4);
            return (s, u64::from_be_bytes(m[8..16].try_into().unwrap()));
        }
    }
}

#[test]
fn switch_connects_out_with_its_datapath_id_and_reconnects() {
    let s = start("out");
    s.ok(&["add-br", "br0", "datapath_id=0xa1"]);
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let target = format!("tcp:{}", l.local_addr().unwrap());
    s.ok(&["set-controller", "br0", &target]);
    let b = s.bridge();
    assert_eq!(b["controller"][0], target.as_str());
    assert_eq!(b["datapath_id"], "00000000000000a1");
    let (mut c, dpid) = handshake(&l);
    assert_eq!(dpid, 0xa1);
    wait_for(
        || s.ok(&["get-controller", "br0"])["controllers"][0]["is_connected"] == true,
        "is_connected: true",
    );
    // Port events reach the controller.
    s.attach("p1", 0);
    loop {
        let m = read_msg(&mut c);
        if m[1] == 12 {
            assert_eq!(m[8], 0, "OFPPR_ADD");
            assert_eq!(&m[16..20], &[0, 0, 0, 1], "port 1");
            break;
        }
    }
    // The controller drops the connection: the switch comes back (1 s back-off).
    drop(c);
    let t = Instant::now();
    let (_c2, dpid) = handshake(&l);
    assert_eq!(dpid, 0xa1);
    eprintln!("reconnected after {:?}", t.elapsed());
    assert!(t.elapsed() < Duration::from_secs(5));
    // set-br changes the datapath id; a bad one is refused with the field's name.
    s.ok(&["set-br", "br0", "datapath_id=0x2a"]);
    assert_eq!(s.bridge()["datapath_id"], "000000000000002a");
    let e = s.call(&["set-br", "br0", "datapath_id=xyz"]).unwrap_err();
    assert!(e.contains("datapath_id"), "{e}");
    let e = s
        .call(&["set-controller", "br0", "ssl:1.2.3.4:1"])
        .unwrap_err();
    assert!(e.contains("controller: 'ssl:1.2.3.4:1'"), "{e}");
    s.ok(&["del-controller", "br0"]);
    assert_eq!(s.bridge()["controller"], serde_json::json!([]));
}

#[test]
fn fail_mode_standalone_falls_back_to_learning_and_secure_keeps_flows() {
    let s = start("fail");
    s.ok(&["add-br", "br0"]);
    s.ok(&["add-flow", "br0", "priority=0,actions=drop"]);
    s.attach("p2", 0);
    // A controller nobody listens on.
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let target = format!("tcp:{}", l.local_addr().unwrap());
    drop(l);
    s.ok(&["set-fail-mode", "br0", "secure"]);
    s.ok(&["set-controller", "br0", &target]);
    std::thread::sleep(Duration::from_millis(1200));
    assert_eq!(s.bridge()["fail_open"], false);
    s.attach("p1", 20);
    wait_for(
        || s.ok(&["stats"])["ports"]["p1"]["rx_packets"].as_u64() == Some(20),
        "20 frames in",
    );
    assert_eq!(s.tx("p2"), 0, "secure: the drop flow holds");
    s.ok(&["del-port", "p1"]);
    // Standalone: no controller connected, so the bridge is a learning switch.
    s.ok(&["set-fail-mode", "br0", "standalone"]);
    wait_for(|| s.bridge()["fail_open"] == true, "fail_open");
    s.attach("p1", 20);
    wait_for(|| s.tx("p2") == 20, "20 frames flooded to p2");
    // Without controllers the flows apply again.
    s.ok(&["del-controller", "br0"]);
    wait_for(|| s.bridge()["fail_open"] == false, "fail_open off");
    assert_eq!(s.ok(&["get-fail-mode", "br0"])["fail_mode"], "standalone");
}
