//! OpenFlow test helpers without root: an in-process switch (a worker on in-memory ports, the
//! control registry, and the OpenFlow manager serving `DIR/BRIDGE.mgmt`), `ovs-ofctl` runs and
//! monitors, and waits that fail with what they waited for. A `Switch` stops its manager and
//! worker and removes its directory when dropped; a `Monitor` kills its process by its handle.

use std::path::{Path, PathBuf};
use std::process::{Child, Command as Proc, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use uvs::clock::MonotonicClock;
use uvs::control::Registry;
use uvs::port::mem::MemPort;
use uvs::worker::{self, Command, WorkerHandle, WorkerOptions};

/// A switch in this process, its OpenFlow sockets in `dir`.
pub struct Switch {
    pub dir: PathBuf,
    pub reg: Arc<Registry>,
    pub w: Arc<WorkerHandle>,
    of: Option<uvs::openflow::Manager>,
}

impl Drop for Switch {
    fn drop(&mut self) {
        // The listeners first: they ask the worker for its bridges.
        self.of.take();
        self.w.shutdown();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Switch {
    /// A switch with no bridge; its directory is named by `tag` and this process.
    pub fn start(tag: &str) -> Switch {
        let dir = std::env::temp_dir().join(format!("uvs-of-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let w = Arc::new(
            worker::spawn(
                WorkerOptions {
                    core: None,
                    frames: 4096,
                    ..WorkerOptions::default()
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

    /// A switch with bridge `br0`, returned once its OpenFlow socket exists.
    pub fn with_br0(tag: &str) -> Switch {
        let s = Switch::start(tag);
        s.ok(&["add-br", "br0"]);
        wait_for(|| s.sock().exists(), "the br0.mgmt socket");
        s
    }

    /// The OpenFlow socket of `br0`.
    pub fn sock(&self) -> PathBuf {
        self.dir.join("br0.mgmt")
    }

    /// `br0`'s socket as an `ovs-ofctl` target.
    pub fn target(&self) -> String {
        format!("unix:{}", self.sock().display())
    }

    /// The OpenFlow connections of the manager (who is connected to which bridge).
    pub fn hub(&self) -> Arc<uvs::openflow::hub::Hub> {
        self.of.as_ref().unwrap().hub()
    }

    /// A control command: its data, or its error message.
    pub fn call(&self, args: &[&str]) -> Result<serde_json::Value, String> {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        self.reg
            .call(&args[0], &args[1..])
            .map(|r| r.data)
            .map_err(|e| e.message().to_string())
    }

    /// A control command that must succeed: its data.
    pub fn ok(&self, args: &[&str]) -> serde_json::Value {
        self.call(args).unwrap_or_else(|e| panic!("{args:?}: {e}"))
    }

    /// Attach to `br0` a port that receives `n` copies of [`udp_frame`] to 02:00:00:00:00:02,
    /// 10.1.2.3 (a sink when `n` is 0).
    pub fn attach(&self, name: &str, n: u64) {
        self.attach_frame(name, udp_frame([0x02, 0, 0, 0, 0, 2], [10, 1, 2, 3]), n);
    }

    /// Attach to `br0` a port that receives `n` copies of `frame` (a sink when `n` is 0).
    pub fn attach_frame(&self, name: &str, frame: Vec<u8>, n: u64) {
        self.w
            .call(Command::AttachPort {
                bridge: "br0".into(),
                name: name.into(),
                build: Box::new(move |id| {
                    if n == 0 {
                        Box::new(MemPort::sink(id))
                    } else {
                        Box::new(MemPort::replay(id, &frame, n))
                    }
                }),
            })
            .unwrap();
    }

    /// Frames port `port` sent (0 for a port the stats do not list).
    pub fn tx(&self, port: &str) -> u64 {
        self.ok(&["stats"])["ports"][port]["tx_packets"]
            .as_u64()
            .unwrap_or(0)
    }

    /// `br0`'s flows as uvs's own `dump-flows` prints them.
    pub fn uvs_flows(&self) -> Vec<String> {
        self.ok(&["dump-flows", "br0"])["flows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l.as_str().unwrap().to_string())
            .collect()
    }
}

/// A 60-byte UDP frame from 02:00:00:00:00:01, 10.0.0.1:12345 to `dst_mac`, `dst_ip`:80.
pub fn udp_frame(dst_mac: [u8; 6], dst_ip: [u8; 4]) -> Vec<u8> {
    let mut f = dst_mac.to_vec();
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 1, 0x08, 0x00]);
    // IPv4, 20-byte header, UDP.
    f.extend_from_slice(&[0x45, 0, 0, 28, 0, 0, 0, 0, 64, 17, 0, 0, 10, 0, 0, 1]);
    f.extend_from_slice(&dst_ip);
    f.extend_from_slice(&[0x30, 0x39, 0, 80, 0, 8, 0, 0]);
    f.resize(60, 0);
    f
}

/// True when `ovs-ofctl` runs; otherwise prints an explicit skip line.
pub fn have_ofctl() -> bool {
    let ok = Proc::new("ovs-ofctl").arg("--version").output().is_ok();
    if !ok {
        eprintln!("skipped: ovs-ofctl is not installed");
    }
    ok
}

/// Run `ovs-ofctl --timeout=10 ARGS`: (success, stdout, stderr).
pub fn ofctl(args: &[&str]) -> (bool, String, String) {
    let out = Proc::new("ovs-ofctl")
        .arg("--timeout=10")
        .args(args)
        .output()
        .expect("run ovs-ofctl");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Run `ovs-ofctl --timeout=10 ARGS`, which must succeed: its stdout.
pub fn ofctl_ok(args: &[&str]) -> String {
    let (good, out, err) = ofctl(args);
    assert!(good, "ovs-ofctl {args:?} failed: {err}{out}");
    out
}

/// [`ofctl_ok`] speaking OpenFlow version `proto` (`-O OpenFlow13`; None: ovs-ofctl's
/// default, OpenFlow 1.0 with NXM).
pub fn ofctl_ok_in(proto: Option<&str>, args: &[&str]) -> String {
    let mut v: Vec<&str> = proto.map_or(vec![], |p| vec!["-O", p]);
    v.extend_from_slice(args);
    ofctl_ok(&v)
}

/// `ovs-ofctl [-O PROTO] COMMAND TARGET ARGS...` (`args[0]` is the command), which must
/// succeed: its stdout.
pub fn ofctl_at(target: &str, proto: Option<&str>, args: &[&str]) -> String {
    let mut v = vec![args[0], target];
    v.extend_from_slice(&args[1..]);
    ofctl_ok_in(proto, &v)
}

/// Poll `ok` every 20 ms; panics naming `what` when it does not hold within 15 s.
pub fn wait_for(ok: impl FnMut() -> bool, what: &str) {
    wait_for_showing(ok, what, String::new)
}

/// As [`wait_for`], and the panic message carries `log()` (a monitor's text, say).
pub fn wait_for_showing(mut ok: impl FnMut() -> bool, what: &str, log: impl Fn() -> String) {
    let end = Instant::now() + Duration::from_secs(15);
    while !ok() {
        assert!(
            Instant::now() < end,
            "timed out waiting for {what}:\n{}",
            log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `ovs-ofctl [-O VERSION] monitor TARGET watch:` writing to a file; the process is killed and
/// the file removed when dropped.
pub struct Monitor {
    child: Child,
    out: PathBuf,
}

impl Drop for Monitor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.out);
    }
}

impl Monitor {
    /// Start a monitor on `target` (its output in `rundir`, named by `tag`) and wait until it
    /// is set up: ovs-ofctl discards what arrives while it waits for replies to its own
    /// requests, and the flow monitor's reply is the last of them.
    pub fn start(target: &str, rundir: &Path, version: Option<&str>, tag: &str) -> Monitor {
        let out = rundir.join(format!("monitor-{tag}.txt"));
        let file = std::fs::File::create(&out).unwrap();
        let mut cmd = Proc::new("ovs-ofctl");
        if let Some(v) = version {
            cmd.args(["-O", v]);
        }
        let child = cmd
            .args(["monitor", target, "watch:"])
            .env("OVS_RUNDIR", rundir)
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .expect("run ovs-ofctl monitor");
        let m = Monitor { child, out };
        m.wait("FLOW_MONITOR reply", 1);
        m
    }

    /// What the monitor printed so far.
    pub fn text(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    /// Wait until `what` occurs `n` times in the text; panics with the text after 20 s.
    pub fn wait(&self, what: &str, n: usize) {
        let end = Instant::now() + Duration::from_secs(20);
        while self.text().matches(what).count() < n {
            assert!(
                Instant::now() < end,
                "no {n} x '{what}' from the monitor:\n{}",
                self.text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
