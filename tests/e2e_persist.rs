//! State that survives: the real daemon keeps its running configuration in a database file
//! (`--db`), reloads `--config` on SIGHUP, refuses to start next to a live daemon or on a
//! locked database, and logs every change with the client's pid and uid.
//!
//! Daemons run in a private temporary directory (socket, database, config, log) and are
//! stopped by PID. Tests that create TAP devices need root and skip without it; the others run
//! as any user.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::netns::{Topology, flow_packets, prefix, root_or_skip, stop_child, try_sh};

const BIN: &str = env!("CARGO_BIN_EXE_uvs");

/// A private directory, removed on drop.
struct Dir(PathBuf);

impl Dir {
    fn new(tag: &str) -> Dir {
        let d = std::env::temp_dir().join(format!("uvs-persist-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Dir(d)
    }
    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A `uvs run` daemon, stopped by PID (SIGTERM, then SIGKILL) on drop.
struct Uvs {
    child: Child,
    socket: PathBuf,
    log: PathBuf,
}

impl Uvs {
    /// Start `uvs run --socket S --db DB [extra]` with stderr to `log`; wait for the socket.
    fn start(socket: &Path, db: &Path, log: &Path, extra: &[&str]) -> Uvs {
        let _ = std::fs::remove_file(socket);
        let child = Command::new(BIN)
            .arg("run")
            .arg("--socket")
            .arg(socket)
            .arg("--db")
            .arg(db)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .expect("start uvs");
        let mut u = Uvs {
            child,
            socket: socket.to_path_buf(),
            log: log.to_path_buf(),
        };
        let t = Instant::now();
        while !u.ctl_raw(&["version"]).status.success() {
            if let Ok(Some(s)) = u.child.try_wait() {
                panic!("uvs exited ({s}): {}", u.log_text());
            }
            assert!(t.elapsed() < Duration::from_secs(20), "uvs did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        u
    }

    fn ctl_raw(&self, args: &[&str]) -> std::process::Output {
        Command::new(BIN)
            .arg("ctl")
            .arg("--socket")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("run uvs ctl")
    }

    fn ctl(&self, args: &[&str]) -> String {
        let out = self.ctl_raw(args);
        assert!(
            out.status.success(),
            "uvs ctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn signal(&self, sig: i32) {
        // SAFETY: kill takes a pid and a signal; the pid is our own child.
        unsafe {
            libc::kill(self.child.id() as i32, sig);
        }
    }

    /// SIGKILL and reap.
    fn kill9(mut self) {
        self.signal(libc::SIGKILL);
        let _ = self.child.wait();
    }

    /// Poll the log for up to 10 s until it says `what`.
    fn wait_log(&self, what: &str) -> String {
        self.wait_log_n(what, 1)
    }

    /// Poll the log for up to 10 s until it says `what` `n` times.
    fn wait_log_n(&self, what: &str, n: usize) -> String {
        let t = Instant::now();
        loop {
            let l = self.log_text();
            if l.matches(what).count() >= n {
                return l;
            }
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "log never said '{what}':\n{l}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Uvs {
    fn drop(&mut self) {
        stop_child(&mut self.child);
    }
}

/// `show` lists port `name` open (not `state=pending`).
fn opened(show: &str, name: &str) -> bool {
    show.lines()
        .any(|l| l.contains(&format!("port {name}:")) && !l.contains("state=pending"))
}

fn link_exists(name: &str) -> bool {
    try_sh(&["ip", "link", "show", name])
}

/// Everything `save-config` can hold, built with `uvs ctl`, comes back equal from a fresh
/// daemon started with the saved file on an empty database; and a restart on the same
/// database after kill -9 gives the same configuration again.
#[test]
fn save_config_reproduces_the_running_configuration() {
    if !root_or_skip("save_config_reproduces_the_running_configuration") {
        return;
    }
    let p = prefix("ps");
    let tap = format!("{p}t1");
    let dir = Dir::new("save");
    let (sock, db, log) = (dir.path("s.sock"), dir.path("a.db"), dir.path("a.log"));
    let a = Uvs::start(&sock, &db, &log, &[]);
    for args in [
        vec!["add-br", "up", "gateway=10.251.0.1/24", "aging=60"],
        vec![
            "add-br",
            "br0",
            "gateway=172.31.77.1/24",
            "fdb_capacity=1024",
        ],
        vec!["add-br", "gone"],
        vec!["add-port", "br0", &tap, "type=tap", "vlan=5", "mtu=1400"],
        vec![
            "add-port",
            "br0",
            "vx",
            "type=vxlan",
            "vni=42",
            "local_ip=10.251.0.1",
            "remote_ip=10.251.0.2,10.251.0.3",
        ],
        vec![
            "set-br",
            "up",
            "gateway=10.251.0.1/24",
            "gateway_mac=02:00:00:00:01:01",
        ],
        vec!["route-add", "10.9.0.0/16", "via", "10.251.0.2"],
        vec!["route-add", "10.8.0.0/16", "via", "10.251.0.3"],
        vec!["route-del", "10.8.0.0/16"],
        vec!["nat-add", "masquerade", "src=172.31.77.0/24", "out=up"],
        vec![
            "nat-add",
            "dnat",
            "in=up",
            "proto=tcp",
            "port=8080",
            "to=172.31.77.5:80",
        ],
        vec!["add-meter", "br0", "meter=3,kbps,band=type=drop,rate=2000"],
        vec![
            "add-flow",
            "br0",
            "priority=100,in_port=vx,tcp,tp_dst=22,actions=drop",
        ],
        vec![
            "add-flow",
            "br0",
            &format!("priority=50,in_port={tap},actions=meter:3,normal"),
        ],
        vec![
            "add-flow",
            "br0",
            "cookie=0x7,table=1,priority=5,udp,actions=drop",
        ],
        vec!["del-flows", "up"],
        vec!["fdb-add", "br0", "02:00:00:00:00:aa", &tap, "vlan=5"],
        vec![
            "fdb-add",
            "br0",
            "02:00:00:00:00:bb",
            "vx",
            "remote_ip=10.251.0.3",
        ],
        vec!["del-br", "gone"],
    ] {
        a.ctl(&args);
    }
    let saved = a.ctl(&["save-config"]);
    for want in [
        "name = \"up\"",
        "gateway_mac = \"02:00:00:00:01:01\"",
        "flows = []",
        "tp_dst=22",
        "meter=3,kbps",
        "mtu = 1400",
        "vni = \"42\"",
        "prefix = \"10.9.0.0/16\"",
        "port = 8080",
        "02:00:00:00:00:bb",
    ] {
        assert!(saved.contains(want), "save-config lacks {want}:\n{saved}");
    }
    assert!(
        !saved.contains("gone") && !saved.contains("10.8.0.0"),
        "{saved}"
    );
    // The database holds exactly what save-config prints.
    assert_eq!(std::fs::read_to_string(&db).unwrap(), saved);

    // kill -9, restart on the same database: the same configuration, TAP re-created.
    a.kill9();
    let a = Uvs::start(&sock, &db, &log, &[]);
    assert_eq!(a.ctl(&["save-config"]), saved);
    assert!(link_exists(&tap));
    drop(a);
    assert!(!link_exists(&tap), "SIGTERM removes the TAP");

    // A fresh daemon on an empty database, started from the saved file.
    let file = dir.path("saved.toml");
    std::fs::write(&file, &saved).unwrap();
    let b = Uvs::start(
        &sock,
        &dir.path("b.db"),
        &dir.path("b.log"),
        &["--config", file.to_str().unwrap()],
    );
    assert_eq!(b.ctl(&["save-config"]), saved);
    assert!(b.ctl(&["dump-flows", "up"]).trim().is_empty());
}

/// Changes acknowledged while a client hammers the daemon all survive a kill -9 at an
/// arbitrary moment (no root needed: bridges and routes only).
#[test]
fn kill_9_loses_no_acknowledged_change() {
    let dir = Dir::new("kill");
    let (sock, db, log) = (dir.path("s.sock"), dir.path("conf.db"), dir.path("log"));
    let a = Uvs::start(&sock, &db, &log, &[]);
    let sock2 = sock.clone();
    let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let acked2 = acked.clone();
    let client = std::thread::spawn(move || {
        for i in 0..400 {
            let name = format!("k{i}");
            let ok = uvs::control::call(&sock2, "add-br", std::slice::from_ref(&name)).is_ok();
            if !ok {
                break;
            }
            acked2.lock().unwrap().push(name);
        }
    });
    // Kill once some changes went through, while the client is still sending.
    let t = Instant::now();
    while acked.lock().unwrap().len() < 20 {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "no changes acknowledged"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    a.kill9();
    client.join().unwrap();
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() < 400,
        "the kill came before the client finished"
    );
    let a = Uvs::start(&sock, &db, &log, &[]);
    let show = a.ctl(&["show"]);
    for name in &acked {
        assert!(
            show.contains(&format!("bridge {name} ")),
            "acknowledged {name} lost after kill -9 ({} acknowledged)",
            acked.len()
        );
    }
    // At most the one change in flight (applied, not yet acknowledged) may be there too.
    let n = show.lines().filter(|l| l.starts_with("bridge k")).count();
    assert!(
        n == acked.len() || n == acked.len() + 1,
        "{n} vs {}",
        acked.len()
    );
}

/// An OpenFlow controller's changes are written to the database by the flusher, coalesced, 50
/// ms after the last one, not once per FLOW_MOD: each FLOW_MOD wrote the whole configuration,
/// so ovs-ofctl's 2,000 (each followed by a barrier) on a table of 12,000 flows took 21 s
/// (11.7 s without a database, where the configuration was still built for each). Once
/// written, a kill -9 loses none. No root.
#[test]
fn openflow_changes_are_written_coalesced_not_one_by_one() {
    if !common::openflow::have_ofctl() {
        return;
    }
    let dir = Dir::new("ofbarrier");
    let (sock, db, log) = (dir.path("s.sock"), dir.path("conf.db"), dir.path("log"));
    let mgmt = dir.path("mgmt");
    let a = Uvs::start(&sock, &db, &log, &["--mgmt-dir", mgmt.to_str().unwrap()]);
    a.ctl(&["add-br", "br0"]);
    a.ctl(&["set-log-level", "debug"]);
    let flows = dir.path("flows.txt");
    let lines: String = (0..500)
        .map(|i| {
            format!(
                "priority=300,ip,nw_dst=10.1.{}.{},actions=drop\n",
                i / 250,
                i % 250
            )
        })
        .collect();
    std::fs::write(&flows, lines).unwrap();
    let written_before = a.log_text().matches(" written (").count();
    // FLOW_MODs one by one on one connection, then a barrier (ovs-ofctl waits for its reply).
    let out = Command::new("ovs-ofctl")
        .args(["--timeout=60", "add-flows"])
        .arg(format!("unix:{}", mgmt.join("br0.mgmt").display()))
        .arg(&flows)
        .output()
        .expect("run ovs-ofctl");
    assert!(
        out.status.success(),
        "ovs-ofctl add-flows: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let l = a.log_text();
    let writes = l.matches(" written (").count() - written_before;
    let added = l.matches("ctl add-flows br0 priority=300").count();
    eprintln!("{added} FLOW_MODs, {writes} database writes");
    assert_eq!(added, 500, "every FLOW_MOD was a change");
    assert!(
        writes * 4 <= added,
        "{writes} database writes for {added} FLOW_MODs"
    );
    // Written by the flusher after the last one: nothing lost to a kill -9 then.
    let t = Instant::now();
    let written_after_the_last =
        |l: &str| l.rfind(" written (") > l.rfind("ctl add-flows br0 priority=300");
    while !written_after_the_last(&a.log_text()) {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "no database write after the last FLOW_MOD"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    a.kill9();
    let a = Uvs::start(&sock, &db, &log, &["--mgmt-dir", mgmt.to_str().unwrap()]);
    let dump = a.ctl(&["dump-flows", "br0"]);
    let n = dump.lines().filter(|l| l.contains("priority=300")).count();
    assert_eq!(n, 500, "flows lost after kill -9 past the barrier");
}

/// Bridge options changed with set-br (rp_filter, isolated, icc) survive a restart.
#[test]
fn bridge_options_survive_a_restart() {
    if !root_or_skip("bridge_options_survive_a_restart") {
        return;
    }
    let dir = Dir::new("bopt");
    let (sock, db, log) = (dir.path("s.sock"), dir.path("conf.db"), dir.path("log"));
    let a = Uvs::start(&sock, &db, &log, &[]);
    a.ctl(&["add-br", "b1", "gateway=10.71.0.1/24"]);
    a.ctl(&["set-br", "b1", "rp_filter=loose", "isolated=on", "icc=off"]);
    let before = a.ctl(&["show"]);
    assert!(before.contains("rp_filter=loose"), "{before}");
    a.kill9();
    let a = Uvs::start(&sock, &db, &log, &[]);
    let show = a.ctl(&["show"]);
    for want in ["rp_filter=loose", "isolated", "icc=off"] {
        assert!(show.contains(want), "{want} lost after a restart:\n{show}");
    }
}

/// A port whose netdev is missing does not stop the start: it is logged, kept in the
/// database (with the flows and FDB entries that need it), and the rest applies.
#[test]
fn missing_netdev_is_kept_pending() {
    let dir = Dir::new("missing");
    let p = prefix("pm");
    let ghost = format!("{p}ghost");
    let cfg = dir.path("c.toml");
    let text = format!(
        "[[bridge]]\nname = \"br0\"\ngateway = \"172.31.78.1/24\"\n\
         flows = [\"priority=10,in_port={ghost} actions=drop\", \"priority=0 actions=NORMAL\"]\n\
         [[bridge.port]]\nname = \"{ghost}\"\ntype = \"afxdp\"\n\
         [[bridge.fdb]]\nmac = \"02:00:00:00:00:cc\"\nport = \"{ghost}\"\n\
         [[bridge]]\nname = \"br1\"\n"
    );
    std::fs::write(&cfg, &text).unwrap();
    let (sock, db, log) = (dir.path("s.sock"), dir.path("conf.db"), dir.path("log"));
    let a = Uvs::start(&sock, &db, &log, &["--config", cfg.to_str().unwrap()]);
    let show = a.ctl(&["show"]);
    assert!(
        show.contains("bridge br0") && show.contains("bridge br1"),
        "{show}"
    );
    // Listed as pending with its error, as `ovs-vsctl show` lists a port it could not open
    // (it was in `save-config` alone, invisible to `show`, `stats` and the metrics).
    let line = show
        .lines()
        .find(|l| l.contains(&format!("port {ghost}:")))
        .unwrap_or_else(|| panic!("{show}"));
    assert!(line.contains("state=pending ("), "{line}");
    let stats = a.ctl(&["--json", "stats"]);
    let stats: serde_json::Value = serde_json::from_str(&stats).unwrap();
    assert_eq!(stats["ports"][&ghost]["state"], "pending", "{stats}");
    assert!(a.log_text().contains("1 ports pending"), "{}", a.log_text());
    let saved = a.ctl(&["save-config"]);
    for want in [
        format!("name = \"{ghost}\""),
        format!("in_port={ghost}"),
        "02:00:00:00:00:cc".to_string(),
    ] {
        assert!(saved.contains(&want), "save-config lacks {want}:\n{saved}");
    }
    // A later change rewrites the database with the pending port still in it.
    a.ctl(&["add-br", "br2"]);
    let db_text = std::fs::read_to_string(&db).unwrap();
    assert!(
        db_text.contains(&ghost) && db_text.contains("br2"),
        "{db_text}"
    );
    if root_or_skip("missing_netdev_is_kept_pending (retry on SIGHUP)") {
        // The netdev appears; SIGHUP tries the pending port, its flow and FDB entry again.
        let mut t = Topology::default();
        let peer = format!("{p}gp");
        assert!(try_sh(&[
            "ip",
            "link",
            "add",
            &ghost,
            "numrxqueues",
            "1",
            "type",
            "veth",
            "peer",
            "name",
            &peer,
            "numrxqueues",
            "1"
        ]));
        t.links.push(ghost.clone());
        assert!(try_sh(&["ip", "link", "set", &ghost, "up"]));
        assert!(try_sh(&["ip", "link", "set", &peer, "up"]));
        a.signal(libc::SIGHUP);
        let l = a.wait_log("reloaded");
        assert!(opened(&a.ctl(&["show"]), &ghost), "{l}");
        assert!(
            a.ctl(&["dump-flows", "--names", "br0"])
                .contains(&format!("in_port={ghost}")),
            "{l}"
        );
        assert!(
            a.ctl(&["fdb-show", "br0"]).contains("02:00:00:00:00:cc"),
            "{l}"
        );
        assert_eq!(
            std::fs::read_to_string(&db).unwrap(),
            a.ctl(&["save-config"])
        );
        a.ctl(&["del-port", &ghost]);
        assert!(!a.ctl(&["show"]).contains(&format!("port {ghost}:")));
        return;
    }
    // del-port forgets it.
    a.ctl(&["del-port", &ghost]);
    assert!(
        !a.ctl(&["save-config"])
            .contains(&format!("name = \"{ghost}\""))
    );
}

/// A pending port opens by itself once its netdev appears (a container's veth made after uvs
/// started, or a previous socket on it still being released): no SIGHUP, no ctl command; its
/// flow and FDB entry come with it and the database keeps them.
#[test]
fn pending_port_opens_by_itself_when_its_netdev_appears() {
    if !root_or_skip("pending_port_opens_by_itself_when_its_netdev_appears") {
        return;
    }
    let dir = Dir::new("selfretry");
    let p = prefix("pr");
    let late = format!("{p}late");
    // A TAP member: nothing of `late`'s may ever reach it (the table drops all of it).
    let tap = format!("{p}tap");
    let cfg = dir.path("c.toml");
    let text = format!(
        "[[bridge]]\nname = \"br0\"\n\
         flows = [\"priority=10,in_port={late} actions=drop\", \"priority=0 actions=NORMAL\"]\n\
         [[bridge.port]]\nname = \"{tap}\"\ntype = \"tap\"\n\
         [[bridge.port]]\nname = \"{late}\"\ntype = \"afxdp\"\n\
         [[bridge.fdb]]\nmac = \"02:00:00:00:00:cd\"\nport = \"{late}\"\n"
    );
    std::fs::write(&cfg, &text).unwrap();
    let (sock, db, log) = (dir.path("s.sock"), dir.path("conf.db"), dir.path("log"));
    let a = Uvs::start(&sock, &db, &log, &["--config", cfg.to_str().unwrap()]);
    assert!(!opened(&a.ctl(&["show"]), &late));
    let mut t = Topology::default();
    let peer = format!("{p}lp");
    assert!(try_sh(&[
        "ip", "link", "add", &late, "type", "veth", "peer", "name", &peer
    ]));
    t.links.push(late.clone());
    assert!(try_sh(&["ip", "link", "set", &tap, "up"]));
    let tap_rx = || {
        std::fs::read_to_string(format!("/sys/class/net/{tap}/statistics/rx_packets"))
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .unwrap_or(u64::MAX)
    };
    assert!(try_sh(&["ip", "link", "set", &late, "up"]));
    assert!(try_sh(&["ip", "link", "set", &peer, "up"]));
    // Broadcast frames into `late` from before uvs opens it until after: were the port to
    // forward before its flow is in, some would flood to the TAP.
    let flood = format!(
        "import socket, time\n\
         s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)\n\
         s.bind(('{peer}', 0))\n\
         f = b'\\xff' * 6 + bytes.fromhex('0200000000ab') + b'\\x08\\x00' + bytes(46)\n\
         end = time.time() + 20\n\
         while time.time() < end:\n    s.send(f)\n    time.sleep(0.0005)\n"
    );
    let mut sender = Command::new("python3")
        .args(["-c", &flood])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let tap_before = tap_rx();
    let t0 = std::time::Instant::now();
    while !opened(&a.ctl(&["show"]), &late) {
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(15),
            "the pending port did not open by itself:\n{}",
            a.log_text()
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    // The port is added before its bridge's flow table is replaced (the table names it), so
    // `show` may list it a moment before `dump-flows` lists its flow (seen once in a
    // two-worker run); it is held meanwhile (carries nothing: `PortSpec::hold`).
    let has_flow = || {
        a.ctl(&["dump-flows", "--names", "br0"])
            .contains(&format!("in_port={late}"))
    };
    while !has_flow() {
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(15),
            "its flow: dump-flows said:\n{}\nshow:\n{}\nlog:\n{}",
            a.ctl(&["dump-flows", "--names", "br0"]),
            a.ctl(&["show"]),
            a.log_text()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // The port ran under its flow from its first frame: the drop rule counted them, and not
    // one reached the TAP.
    std::thread::sleep(std::time::Duration::from_millis(300));
    stop_child(&mut sender);
    let dump = a.ctl(&["dump-flows", "--names", "br0"]);
    let dropped = flow_packets(&dump, &format!("in_port={late}")).unwrap_or(0);
    assert!(dropped > 0, "the drop rule saw nothing: {dump}");
    assert_eq!(
        tap_rx(),
        tap_before,
        "frames from {late} reached the TAP ({dropped} dropped by the flow)\n{dump}"
    );
    assert!(
        a.ctl(&["fdb-show", "br0"]).contains("02:00:00:00:00:cd"),
        "its FDB entry"
    );
    assert!(a.log_text().contains(&format!("pending: + port {late}")));
    assert!(
        !a.log_text().contains("reloaded"),
        "opened without a reload"
    );
    assert_eq!(
        std::fs::read_to_string(&db).unwrap(),
        a.ctl(&["save-config"])
    );
}

/// A second daemon on a live socket exits with a clear error before it creates anything; a
/// second daemon on a locked database (other socket) too; the first keeps running.
#[test]
fn second_daemon_changes_nothing() {
    if !root_or_skip("second_daemon_changes_nothing") {
        return;
    }
    let dir = Dir::new("second");
    let p = prefix("p2");
    let tap = format!("{p}t");
    let (sock, db, log) = (dir.path("s.sock"), dir.path("conf.db"), dir.path("log"));
    let a = Uvs::start(&sock, &db, &log, &[]);
    a.ctl(&["add-br", "br0"]);
    let cfg = dir.path("c.toml");
    std::fs::write(
        &cfg,
        format!("[[bridge]]\nname = \"x\"\n[[bridge.port]]\nname = \"{tap}\"\ntype = \"tap\"\n"),
    )
    .unwrap();
    let run = |socket: &Path, db: &Path| {
        Command::new(BIN)
            .arg("run")
            .arg("--socket")
            .arg(socket)
            .arg("--db")
            .arg(db)
            .arg("--config")
            .arg(&cfg)
            .output()
            .unwrap()
    };
    let out = run(&sock, &dir.path("other.db"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("another uvs is already running on"), "{err}");
    assert!(!link_exists(&tap), "the second daemon created its TAP");
    assert!(
        !dir.path("other.db").exists(),
        "the second daemon wrote a database"
    );
    let out = run(&dir.path("s2.sock"), &db);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("is in use by another uvs"), "{err}");
    assert!(!link_exists(&tap));
    // The first daemon is unharmed and its database unchanged.
    assert!(a.ctl(&["show"]).contains("bridge br0"));
    assert!(std::fs::read_to_string(&db).unwrap().contains("br0"));
    assert!(
        !std::fs::read_to_string(&db)
            .unwrap()
            .contains("name = \"x\"")
    );
}

/// SIGHUP applies the difference of a changed --config file (a bridge and a route appear, a
/// bridge goes); a broken file is refused as a whole and the daemon runs on unchanged.
#[test]
fn sighup_reloads_the_config_file() {
    let dir = Dir::new("hup");
    let cfg = dir.path("c.toml");
    let one = "[[bridge]]\nname = \"up\"\ngateway = \"10.252.0.1/24\"\n\
               [[bridge]]\nname = \"old\"\n";
    std::fs::write(&cfg, one).unwrap();
    let (sock, db, log) = (dir.path("s.sock"), dir.path("conf.db"), dir.path("log"));
    let a = Uvs::start(&sock, &db, &log, &["--config", cfg.to_str().unwrap()]);
    assert!(a.ctl(&["show"]).contains("bridge old"));
    let two = "[[bridge]]\nname = \"up\"\ngateway = \"10.252.0.1/24\"\n\
               [[bridge]]\nname = \"new\"\ngateway = \"172.31.79.1/24\"\n\
               flows = [\"priority=7,icmp actions=drop\"]\n\
               [[route]]\nprefix = \"10.7.0.0/16\"\nvia = \"10.252.0.9\"\n";
    std::fs::write(&cfg, two).unwrap();
    a.signal(libc::SIGHUP);
    a.wait_log("reloaded");
    let show = a.ctl(&["show"]);
    assert!(
        show.contains("bridge new") && !show.contains("bridge old"),
        "{show}"
    );
    assert!(a.ctl(&["route-show"]).contains("10.7.0.0/16"));
    assert_eq!(a.ctl(&["dump-flows", "new"]).lines().count(), 1);
    let log_text = a.log_text();
    assert!(log_text.contains("reload: + bridge new"), "{log_text}");
    assert!(log_text.contains("reload: - bridge old"), "{log_text}");
    let before = a.ctl(&["save-config"]);
    assert_eq!(std::fs::read_to_string(&db).unwrap(), before);

    // An empty file (one being rewritten: `save-config > FILE` truncates it first) is refused;
    // it removed everything.
    std::fs::write(&cfg, "\n").unwrap();
    a.signal(libc::SIGHUP);
    a.wait_log("the file is empty");
    assert_eq!(a.ctl(&["save-config"]), before);

    // A file asking for other worker cores: said to need a restart (it answered "0 changes").
    std::fs::write(&cfg, format!("cores = \"0,99\"\n{two}")).unwrap();
    a.signal(libc::SIGHUP);
    let l = a.wait_log("cores = \"0,99\"");
    assert!(l.contains("core 99 does not exist"), "{l}");
    a.wait_log_n("reloaded", 2);
    assert_eq!(a.ctl(&["save-config"]), before);

    // A file that does not validate: refused, nothing changes, the daemon lives.
    std::fs::write(
        &cfg,
        format!("{two}[[bridge]]\nname = \"bad\"\n[[bridge.port]]\nname = \"x\"\ntype = \"tap\"\nvlan = 5000\n"),
    )
    .unwrap();
    a.signal(libc::SIGHUP);
    a.wait_log_n("refusing", 2);
    assert_eq!(a.ctl(&["save-config"]), before);
    assert_eq!(std::fs::read_to_string(&db).unwrap(), before);

    // Changing a bridge's aging changes it in place; a bridge made with ctl and absent from
    // the file goes (the file is the whole configuration).
    a.ctl(&["add-br", "byctl"]);
    std::fs::write(
        &cfg,
        two.replace("name = \"up\"\n", "name = \"up\"\naging = 30\n"),
    )
    .unwrap();
    a.signal(libc::SIGHUP);
    a.wait_log_n("reloaded", 3);
    let show = a.ctl(&["show"]);
    assert!(
        show.contains("bridge up (fdb 0/8192, aging 30s"),
        "{show}{}",
        a.log_text()
    );
    assert!(!show.contains("byctl"), "{show}");
    assert!(a.ctl(&["route-show"]).contains("10.7.0.0/16"));
    assert!(a.ctl(&["save-config"]).contains("aging = 30"));

    // A restart with a database: the database is the state, the (changed) file is not applied.
    let state = a.ctl(&["save-config"]);
    drop(a);
    std::fs::write(&cfg, one).unwrap();
    let a = Uvs::start(&sock, &db, &log, &["--config", cfg.to_str().unwrap()]);
    assert_eq!(a.ctl(&["save-config"]), state);
    a.wait_log("not applied");
}

/// A `--metrics` address in use is refused before anything starts: no control socket, no
/// database (it was found after the daemon had listened and written its database).
#[test]
fn a_metrics_address_in_use_is_refused_before_anything_starts() {
    let dir = Dir::new("metrics");
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = held.local_addr().unwrap().to_string();
    let (sock, db) = (dir.path("s.sock"), dir.path("conf.db"));
    let out = Command::new(BIN)
        .arg("run")
        .arg("--socket")
        .arg(&sock)
        .arg("--db")
        .arg(&db)
        .args([
            "--metrics",
            &addr,
            "--mgmt-dir",
            "none",
            "--dns-upstream",
            "off",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains(&format!("--metrics {addr}")) && err.contains("not starting"),
        "{err}"
    );
    assert!(!db.exists(), "a database was written");
    assert!(!sock.exists(), "a control socket was made");
}

/// A reload that changes a bridge's `aging` and `fdb_capacity` changes them in place, as
/// `set-br` does: the bridge's ports are kept, a TAP moved into a container's namespace
/// among them. (It re-created the bridge: the container's TAP vanished and a new one of its
/// name appeared in the host's namespace; found trying uvs as a new user.)
#[test]
fn a_reload_changing_aging_keeps_the_bridge_and_its_ports() {
    if !root_or_skip("a_reload_changing_aging_keeps_the_bridge_and_its_ports") {
        return;
    }
    let dir = Dir::new("aging");
    let p = prefix("ag");
    let tap = format!("{p}t");
    let ns = format!("{p}ns");
    let cfg = dir.path("c.toml");
    let text = |aging: u32, cap: u32| {
        format!(
            "[[bridge]]\nname = \"br0\"\naging = {aging}\nfdb_capacity = {cap}\n\
             [[bridge.port]]\nname = \"{tap}\"\ntype = \"tap\"\n"
        )
    };
    std::fs::write(&cfg, text(300, 8192)).unwrap();
    let (sock, db, log) = (dir.path("s.sock"), dir.path("conf.db"), dir.path("log"));
    let a = Uvs::start(&sock, &db, &log, &["--config", cfg.to_str().unwrap()]);
    a.ctl(&["fdb-add", "br0", "02:00:00:00:00:aa", &tap]);
    let mut t = Topology::default();
    t.netns(&ns);
    let ifindex = || {
        let out = Command::new("ip")
            .args(["-n", &ns, "-o", "link", "show", &tap])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .split(':')
            .next()
            .unwrap_or_default()
            .trim()
            .to_string()
    };
    assert!(try_sh(&["ip", "link", "set", &tap, "netns", &ns]));
    let before = ifindex();
    assert!(!before.is_empty(), "the TAP is in the namespace");
    std::fs::write(&cfg, text(45, 100)).unwrap();
    a.signal(libc::SIGHUP);
    a.wait_log("reloaded");
    let log_text = a.log_text();
    assert!(
        log_text.contains("reload: ~ bridge br0 options"),
        "{log_text}"
    );
    assert!(!log_text.contains("reload: - bridge br0"), "{log_text}");
    assert_eq!(ifindex(), before, "the container's TAP is still there");
    assert!(
        !link_exists(&tap),
        "no new TAP of its name in the host's namespace"
    );
    let show = a.ctl(&["show"]);
    assert!(show.contains("/100, aging 45s"), "{show}");
    assert!(
        a.ctl(&["fdb-show", "br0"]).contains("02:00:00:00:00:aa"),
        "entries kept"
    );
    assert!(show.contains(&format!("port {tap}:")), "{show}");
    let saved = a.ctl(&["save-config"]);
    assert!(
        saved.contains("aging = 45") && saved.contains("fdb_capacity = 100"),
        "{saved}"
    );
    // set-br does the same live; a capacity below the static entries is refused.
    a.ctl(&["set-br", "br0", "aging=60", "fdb_capacity=2"]);
    let show = a.ctl(&["show"]);
    assert!(show.contains("/2, aging 60s"), "{show}");
    assert!(
        a.ctl(&["fdb-show", "br0"]).contains("02:00:00:00:00:aa"),
        "the static kept"
    );
    // aging=0 is refused as the configuration refuses it (it was saved, and the database
    // then did not load at the next start).
    let bad = a.ctl_raw(&["set-br", "br0", "aging=0"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("aging: must be at least 1"));
    let bad = a.ctl_raw(&["set-br", "br0", "fdb_capacity=abc"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("fdb_capacity: 'abc'"));
    // With --json the error is a JSON object on stdout too (stdout was empty).
    let bad = a.ctl_raw(&["--json", "set-br", "br0", "fdb_capacity=abc"]);
    assert!(!bad.status.success());
    let v: serde_json::Value = serde_json::from_slice(&bad.stdout).unwrap();
    assert!(
        v["error"].as_str().unwrap().contains("fdb_capacity: 'abc'"),
        "{v}"
    );
    drop(a);
}

/// Every change is logged once at info level with the command, the client's pid and uid,
/// and the result; read-only commands are not.
#[test]
fn changes_are_logged_with_the_client() {
    let dir = Dir::new("log");
    let (sock, db, log) = (dir.path("s.sock"), dir.path("conf.db"), dir.path("log"));
    let a = Uvs::start(&sock, &db, &log, &[]);
    let child = Command::new(BIN)
        .arg("ctl")
        .arg("--socket")
        .arg(&sock)
        .args(["add-br", "logged"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    assert!(child.wait_with_output().unwrap().status.success());
    let bad = a.ctl_raw(&["route-add", "10.1.0.0/16", "via", "10.99.0.1"]);
    assert!(!bad.status.success());
    a.ctl(&["show"]);
    // SAFETY: getuid has no preconditions and cannot fail.
    let uid = unsafe { libc::getuid() };
    let l = a.wait_log("route-add");
    assert!(
        l.contains(&format!("ctl add-br logged from pid {pid} uid {uid}: ok")),
        "{l}"
    );
    assert!(
        l.contains("ctl route-add 10.1.0.0/16 via 10.99.0.1 from pid"),
        "{l}"
    );
    assert!(l.contains(": error: via"), "{l}");
    assert!(!l.contains("ctl show"), "{l}");
    assert!(!l.contains("\x1b["), "no colour codes in a log file: {l}");
}

/// `set-log-level` changes what the running daemon logs (ovs-appctl vlog/set); a filter that
/// does not parse is refused naming FILTER and the old one stays.
#[test]
fn the_log_level_changes_while_the_daemon_runs() {
    let dir = Dir::new("loglevel");
    let (sock, db, log) = (dir.path("s.sock"), dir.path("conf.db"), dir.path("log"));
    let a = Uvs::start(&sock, &db, &log, &[]);
    assert_eq!(a.ctl(&["log-level"]), "info\n");
    a.ctl(&["set-log-level", "warn"]);
    a.ctl(&["add-br", "quiet"]);
    let bad = a.ctl_raw(&["set-log-level", "uvs=loud"]);
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains("FILTER: 'uvs=loud' is not a log filter"),
        "{err}"
    );
    assert_eq!(a.ctl(&["log-level"]), "warn\n");
    a.ctl(&["set-log-level", "debug"]);
    a.ctl(&["fdb-show", "quiet"]);
    let l = a.wait_log("ctl fdb-show quiet");
    assert!(!l.contains("ctl add-br quiet"), "logged at warn: {l}");
    assert!(l.contains("uvs=loud"), "a refused change is a warning: {l}");
    assert!(l.contains("ctl set-log-level debug from pid"), "{l}");
}

/// ovs-vsctl's options where ovs-vsctl takes them, before the command (only after it was
/// accepted: found re-testing as an OVS user).
#[test]
fn ovs_vsctl_options_before_the_command() {
    let dir = Dir::new("mayexist");
    let (sock, db, log) = (dir.path("s.sock"), dir.path("conf.db"), dir.path("log"));
    let a = Uvs::start(&sock, &db, &log, &[]);
    a.ctl(&["add-br", "b1"]);
    a.ctl(&["--may-exist", "add-br", "b1"]);
    a.ctl(&["--if-exists", "del-br", "b9"]);
    a.ctl(&["--if-exists", "del-br", "b1"]);
    assert_eq!(a.ctl(&["list-br"]), "");
    assert!(!a.ctl_raw(&["--if-exists", "add-br", "b2"]).status.success());
}

/// OpenFlow port numbers survive a restart, flows keep pointing at the same ports, mirrors
/// are kept.
#[test]
fn port_numbers_survive_a_restart() {
    if !root_or_skip("port_numbers_survive_a_restart") {
        return;
    }
    let p = prefix("pn");
    let (t1, t2) = (format!("{p}t1"), format!("{p}t2"));
    let dir = Dir::new("ofport");
    let (sock, db, log) = (dir.path("s.sock"), dir.path("a.db"), dir.path("a.log"));
    let a = Uvs::start(&sock, &db, &log, &[]);
    a.ctl(&["add-br", "br0"]);
    a.ctl(&["add-port", "br0", &t1, "type=tap"]);
    a.ctl(&["add-port", "br0", &t2, "type=tap", "ofport_request=9"]);
    a.ctl(&[
        "add-flow",
        "br0",
        &format!("in_port={t1},actions=output:{t2}"),
    ]);
    a.ctl(&[
        "add-mirror",
        "br0",
        "m0",
        &format!("select={t1}"),
        &format!("output={t2}"),
    ]);
    let before = a.ctl(&["dump-flows", "br0"]);
    assert!(before.contains("in_port=1 actions=output:9"), "{before}");
    a.kill9();
    let b = Uvs::start(&sock, &db, &log, &[]);
    let show = b.ctl(&["show"]);
    assert!(
        show.contains(&format!("port {t1}: ofport=1 "))
            && show.contains(&format!("port {t2}: ofport=9 ")),
        "{show}"
    );
    let mirrors = b.ctl(&["mirror-show"]);
    assert!(
        mirrors.contains("m0") && mirrors.contains(&t2),
        "mirror kept: {mirrors}"
    );
    let after = b.ctl(&["dump-flows", "--names", "br0"]);
    assert!(
        after.contains(&format!("in_port={t1} actions=output:{t2}")),
        "{after}"
    );
    for t in [&t1, &t2] {
        b.ctl(&["del-port", t]);
    }
}

/// A configuration file's `ofport_request`s are given before any port takes a free number: a
/// port listed first without a request does not take the number a later one asks for, at start
/// or at SIGHUP (where the port that held it moves to another number). Two ports asking for one
/// number is a file that does not validate. (Found trying uvs as a new user: the later port
/// stayed pending, and the reload said 0 errors.)
#[test]
fn requested_port_numbers_come_before_free_ones() {
    if !root_or_skip("requested_port_numbers_come_before_free_ones") {
        return;
    }
    let p = prefix("pq");
    let (t1, t2, t3) = (format!("{p}t1"), format!("{p}t2"), format!("{p}t3"));
    let dir = Dir::new("ofreq");
    let cfg = dir.path("c.toml");
    let file = |reqs: [Option<u16>; 3]| {
        let mut f = String::from("[[bridge]]\nname = \"br0\"\n");
        for (t, r) in [&t1, &t2, &t3].iter().zip(reqs) {
            f += &format!("[[bridge.port]]\nname = \"{t}\"\ntype = \"tap\"\n");
            if let Some(n) = r {
                f += &format!("ofport_request = {n}\n");
            }
        }
        f
    };
    std::fs::write(&cfg, file([None, Some(1), None])).unwrap();
    let (sock, db, log) = (dir.path("s.sock"), dir.path("a.db"), dir.path("a.log"));
    let a = Uvs::start(&sock, &db, &log, &["--config", cfg.to_str().unwrap()]);
    let number = |t: &str| {
        let show = a.ctl(&["show"]);
        let line = show
            .lines()
            .find(|l| l.contains(&format!("port {t}: ")))
            .unwrap_or_else(|| panic!("{t} not up: {show}{}", a.log_text()));
        let at = line.find("ofport=").unwrap() + 7;
        line[at..]
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .unwrap()
            .parse::<u16>()
            .unwrap()
    };
    assert_eq!(number(&t2), 1, "the requested number");
    assert_eq!((number(&t1), number(&t3)), (2, 3));
    // The file now gives t1's number to t3: t3 gets it, t1 moves; nothing pending.
    std::fs::write(&cfg, file([None, Some(1), Some(2)])).unwrap();
    a.signal(libc::SIGHUP);
    a.wait_log("reloaded");
    assert_eq!((number(&t2), number(&t3)), (1, 2));
    assert!(![1, 2].contains(&number(&t1)));
    let l = a.log_text();
    assert!(l.contains("changes, 0 errors, 0 ports pending"), "{l}");
    assert!(!l.contains("kept in the configuration, pending"), "{l}");
    // Two ports asking for one number: refused as a whole, nothing changes.
    let before = a.ctl(&["save-config"]);
    std::fs::write(&cfg, file([Some(2), Some(1), Some(2)])).unwrap();
    a.signal(libc::SIGHUP);
    a.wait_log("refusing");
    assert!(
        a.log_text()
            .contains(&format!("ofport_request: 2 is also port '{t1}'s")),
        "{}",
        a.log_text()
    );
    assert_eq!(a.ctl(&["save-config"]), before);
}

/// A database uvs wrote must load again: deleting a port takes it out of the mirrors at once
/// (a mirror whose output goes, goes), and a gateway that static routes or NAT rules depend
/// on cannot be removed or moved from under them (as del-br refuses a bridge with routes).
/// Before, both were accepted and the next start refused the database (found trying uvs as a
/// new user).
#[test]
fn the_database_stays_loadable_through_port_and_gateway_changes() {
    if !root_or_skip("the_database_stays_loadable_through_port_and_gateway_changes") {
        return;
    }
    let p = prefix("pm");
    let t = |i: u8| format!("{p}t{i}");
    let dir = Dir::new("dbok");
    let (sock, db, log) = (dir.path("s.sock"), dir.path("a.db"), dir.path("a.log"));
    let a = Uvs::start(&sock, &db, &log, &[]);
    a.ctl(&["add-br", "br0", "gateway=10.77.0.254/24"]);
    for i in 1..=3 {
        a.ctl(&["add-port", "br0", &t(i), "type=tap"]);
    }
    let sel = format!("select={},{}", t(1), t(2));
    a.ctl(&["add-mirror", "br0", "m0", &sel, &format!("output={}", t(3))]);
    a.ctl(&["del-port", &t(1)]);
    let m = a.ctl(&["mirror-show"]);
    assert!(
        m.contains(&format!(
            "select_src [{}] select_dst [{}] output {}",
            t(2),
            t(2),
            t(3)
        )),
        "{m}"
    );
    assert!(!a.ctl(&["save-config"]).contains(&t(1)));
    a.ctl(&["del-port", &t(3)]);
    assert!(!a.ctl(&["mirror-show"]).contains("m0"));
    assert!(!a.ctl(&["save-config"]).contains("mirrors"));

    a.ctl(&["route-add", "10.99.0.0/16", "via", "10.77.0.2"]);
    let refused = |args: &[&str], want: &str| {
        let o = a.ctl_raw(args);
        let e = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(!o.status.success() && e.contains(want), "{args:?}: {e}");
    };
    refused(&["set-br", "br0", "gateway=none"], "10.99.0.0/16");
    refused(
        &[
            "set-br",
            "br0",
            "gateway=none",
            "gateway_mac=02:00:00:00:00:01",
        ],
        "gateway_mac: there is no gateway",
    );
    refused(&["set-br", "br0", "gateway=10.90.0.1/24"], "static routes");
    // Within the subnet the next hop stays reachable: allowed.
    a.ctl(&["set-br", "br0", "gateway=10.77.0.1/24"]);
    a.ctl(&["route-del", "10.99.0.0/16"]);
    a.ctl(&["add-br", "up", "gateway=10.78.0.1/24"]);
    a.ctl(&["nat-add", "masquerade", "src=10.77.0.0/24", "out=up"]);
    refused(&["set-br", "up", "gateway=10.78.0.9/24"], "NAT rule");
    refused(&["set-br", "up", "gateway=none"], "NAT rule");
    a.ctl(&[
        "nat-add",
        "dnat",
        "in=br0",
        "proto=tcp",
        "port=8080",
        "to=10.78.0.5:80",
    ]);
    refused(&["set-br", "br0", "gateway=none"], "NAT rule");
    // A port mapping follows a gateway that moves: allowed.
    a.ctl(&["set-br", "br0", "gateway=10.77.0.3/24"]);
    let saved = a.ctl(&["save-config"]);
    a.kill9();
    let b = Uvs::start(&sock, &db, &log, &[]);
    assert_eq!(b.ctl(&["save-config"]), saved);
    assert!(b.ctl(&["show"]).contains(&format!("port {}", t(2))));
}

/// A SIGHUP that moves a bridge's gateway takes the NAT rules on it off first and puts them
/// back on the new address (the switch refuses to move a gateway from under them).
#[test]
fn sighup_moves_a_gateway_with_its_nat_rules() {
    let dir = Dir::new("hupnat");
    let cfg = dir.path("c.toml");
    let file = |gw: &str| {
        format!(
            "[[bridge]]\nname = \"up\"\ngateway = \"{gw}\"\n\
             [[bridge]]\nname = \"in\"\ngateway = \"10.253.0.1/24\"\n\
             [[nat]]\nkind = \"masquerade\"\nsrc = \"10.253.0.0/24\"\nout = \"up\"\n\
             [[nat]]\nkind = \"dnat\"\nin = \"up\"\nproto = \"tcp\"\nport = 8080\nto = \"10.253.0.5:80\"\n"
        )
    };
    std::fs::write(&cfg, file("10.252.0.1/24")).unwrap();
    let (sock, db, log) = (dir.path("s.sock"), dir.path("conf.db"), dir.path("log"));
    let a = Uvs::start(&sock, &db, &log, &["--config", cfg.to_str().unwrap()]);
    std::fs::write(&cfg, file("10.252.0.9/24")).unwrap();
    a.signal(libc::SIGHUP);
    let l = a.wait_log("reloaded");
    assert!(l.contains("0 errors"), "{l}");
    let saved = a.ctl(&["save-config"]);
    assert!(saved.contains("10.252.0.9/24"), "{saved}");
    let nat = a.ctl(&["nat-show"]);
    assert!(
        nat.contains("masquerade src=10.253.0.0/24 out=up") && nat.contains("8080"),
        "{nat}"
    );
}

/// A VXLAN port's underlay (the bridge whose gateway is its `local_ip`) keeps its address while
/// the port uses it: `set-br` moving or removing that gateway and `del-br` of the underlay are
/// refused, naming the port, and change nothing. (Found trying uvs as a new user: they were
/// taken, the port was left with `inner_mtu=0`, and the database refused to start.) A reload
/// that re-creates the underlay (an option changed) takes the port off first and puts it back.
#[test]
fn a_vxlan_port_keeps_its_underlay_gateway() {
    let dir = Dir::new("vxul");
    let cfg = dir.path("c.toml");
    let file = |aging: u32| {
        format!(
            "[[bridge]]\nname = \"ul\"\ngateway = \"10.79.0.1/24\"\naging = {aging}\n\
             [[bridge]]\nname = \"ov\"\n\
             [[bridge.port]]\nname = \"vx0\"\ntype = \"vxlan\"\nvni = 5\n\
             local_ip = \"10.79.0.1\"\nremote_ip = \"10.79.0.2\"\n"
        )
    };
    std::fs::write(&cfg, file(300)).unwrap();
    let (sock, db, log) = (dir.path("s.sock"), dir.path("conf.db"), dir.path("log"));
    let a = Uvs::start(&sock, &db, &log, &["--config", cfg.to_str().unwrap()]);
    let inner = |a: &Uvs| {
        let show = a.ctl(&["show"]);
        assert!(show.contains("inner_mtu=1450"), "{show}");
    };
    inner(&a);
    for args in [
        &["set-br", "ul", "gateway=10.79.1.1/24"][..],
        &["set-br", "ul", "gateway=none"],
        &["del-br", "ul"],
    ] {
        let o = a.ctl_raw(args);
        let e = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(!o.status.success() && e.contains("vx0"), "{args:?}: {e}");
    }
    inner(&a);
    std::fs::write(&cfg, file(100)).unwrap();
    a.signal(libc::SIGHUP);
    let l = a.wait_log("reloaded");
    assert!(l.contains("0 errors"), "{l}");
    inner(&a);
    let saved = a.ctl(&["save-config"]);
    assert!(
        saved.contains("aging = 100") && saved.contains("vx0"),
        "{saved}"
    );
    a.kill9();
    let b = Uvs::start(&sock, &db, &log, &[]);
    inner(&b);
}

/// A SIGHUP with an unchanged file changes nothing: a meter written without its burst and a
/// group are the same as the running ones (found trying uvs as a new user: every reload
/// re-added them, logged phantom changes and zeroed their counters).
#[test]
fn sighup_with_the_same_meters_and_groups_changes_nothing() {
    let dir = Dir::new("hupsame");
    let cfg = dir.path("c.toml");
    std::fs::write(
        &cfg,
        "[[bridge]]\nname = \"br0\"\n\
         meters = [\"meter=1,kbps,band=type=drop,rate=800\"]\n\
         groups = [\"group_id=5,type=all,bucket=actions=drop\"]\n\
         flows = [\"priority=5,actions=meter:1,group:5\"]\n",
    )
    .unwrap();
    let (sock, db, log) = (dir.path("s.sock"), dir.path("conf.db"), dir.path("log"));
    let a = Uvs::start(&sock, &db, &log, &["--config", cfg.to_str().unwrap()]);
    a.signal(libc::SIGHUP);
    let l = a.wait_log("reloaded");
    assert!(l.contains(": 0 changes, 0 errors"), "{l}");
}

/// A step of the database that fails at start (here a flow through a meter the database does
/// not have) is logged and left out; the rest of the switch starts (it refused to start). A
/// --config file's failing step still stops the start: that file is the user's to fix.
#[test]
fn a_database_step_that_fails_is_left_out_and_the_rest_starts() {
    let dir = Dir::new("dbstep");
    let (sock, db, log) = (dir.path("s.sock"), dir.path("a.db"), dir.path("a.log"));
    let text = "[[bridge]]\nname = \"br0\"\nflows = [\"priority=5,actions=meter:9,normal\"]\n\
                [[bridge]]\nname = \"br1\"\n";
    std::fs::write(&db, text).unwrap();
    let a = Uvs::start(&sock, &db, &log, &[]);
    let show = a.ctl(&["show"]);
    assert!(
        show.contains("bridge br0") && show.contains("bridge br1"),
        "{show}"
    );
    assert!(
        a.log_text().contains("left out, the rest runs"),
        "{}",
        a.log_text()
    );
    drop(a);
    let cfg = dir.path("c.toml");
    std::fs::write(&cfg, text).unwrap();
    let (sock2, db2) = (dir.path("t.sock"), dir.path("none.db"));
    // (`timeout`: a daemon that wrongly starts must not hang the test.)
    let out = Command::new("timeout")
        .args(["20", BIN, "run", "--socket", sock2.to_str().unwrap()])
        .args(["--db", db2.to_str().unwrap()])
        .args(["--config", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("meter"), "{err}");
}
