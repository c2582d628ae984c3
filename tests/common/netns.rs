//! Root-only helpers for end-to-end tests: network namespaces, veth pairs, the uvs daemon.
//! Everything created is removed by Drop guards; processes are stopped by PID.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// True when running as root; otherwise prints an explicit skip line.
pub fn root_or_skip(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        eprintln!("SKIP {test}: needs root (network namespaces, AF_XDP, TAP)");
    }
    root
}

/// Run a command, panicking with its stderr when it fails.
pub fn sh(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .expect(args[0]);
    assert!(
        out.status.success(),
        "{:?} failed: {}",
        args,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `ip -n NS route add DEST via VIA`, panicking with ip's error when it fails.
pub fn route_add(ns: &str, dest: &str, via: &str) {
    sh(&["ip", "-n", ns, "route", "add", dest, "via", via]);
}

/// Run a command; return success.
pub fn try_sh(args: &[&str]) -> bool {
    Command::new(args[0])
        .args(&args[1..])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// A short unique prefix for names (netdev names are at most 15 bytes).
pub fn prefix(tag: &str) -> String {
    format!("{tag}{}", std::process::id() % 100_000)
}

/// A TCP port free on 127.0.0.1 right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Poll `ok` every 100 ms until it holds or `secs` pass (checked once more at the end); true
/// when it held.
pub fn eventually(secs: u64, mut ok: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    ok()
}

/// Stop a child by PID: SIGTERM, up to 5 s, then SIGKILL; always reaped.
pub fn stop_child(child: &mut Child) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    // SAFETY: kill takes a pid and a signal; the pid is our own (not yet reaped) child.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(5) {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Namespaces and links made by a test, removed on drop.
#[derive(Default)]
pub struct Topology {
    pub namespaces: Vec<String>,
    pub links: Vec<String>,
}

impl Topology {
    /// A namespace with lo up.
    pub fn netns(&mut self, name: &str) {
        sh(&["ip", "netns", "add", name]);
        self.namespaces.push(name.to_string());
        sh(&["ip", "-n", name, "link", "set", "lo", "up"]);
    }

    /// A veth pair: `host` stays in the root namespace (up), `inner` goes into `ns` as `eth0`
    /// with `addr` (CIDR), up.
    pub fn container(&mut self, ns: &str, host: &str, addr: &str) {
        self.netns(ns);
        sh(&[
            "ip", "link", "add", host, "type", "veth", "peer", "name", "eth0", "netns", ns,
        ]);
        self.links.push(host.to_string());
        sh(&["ip", "link", "set", host, "up"]);
        sh(&["ip", "-n", ns, "addr", "add", addr, "dev", "eth0"]);
        sh(&["ip", "-n", ns, "link", "set", "eth0", "up"]);
    }

    /// Move a (TAP) device into `ns` as-is and give it `addr`.
    pub fn adopt(&mut self, ns: &str, dev: &str, addr: &str) {
        sh(&["ip", "link", "set", dev, "netns", ns]);
        sh(&["ip", "-n", ns, "addr", "add", addr, "dev", dev]);
        sh(&["ip", "-n", ns, "link", "set", dev, "up"]);
    }

    /// `ip netns exec NS args...`, returning success.
    pub fn exec_ok(&self, ns: &str, args: &[&str]) -> bool {
        let mut v = vec!["ip", "netns", "exec", ns];
        v.extend_from_slice(args);
        try_sh(&v)
    }

    /// The MAC of `dev` in `ns`.
    pub fn mac(&self, ns: &str, dev: &str) -> String {
        let out = sh(&["ip", "-n", ns, "-br", "link", "show", dev]);
        out.split_whitespace()
            .nth(2)
            .unwrap_or_default()
            .to_string()
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        for l in &self.links {
            let _ = try_sh(&["ip", "link", "del", l]);
        }
        for n in &self.namespaces {
            let _ = try_sh(&["ip", "netns", "del", n]);
        }
    }
}

/// A running `uvs run` daemon, killed by PID on drop.
pub struct Daemon {
    pub child: Child,
    pub socket: PathBuf,
}

impl Daemon {
    /// Start `uvs run --socket <tmp> [extra...]` and wait for its socket.
    pub fn start(tag: &str, extra: &[&str]) -> Daemon {
        Daemon::start_env(tag, extra, &[])
    }

    /// `start` with extra environment variables for the daemon.
    pub fn start_env(tag: &str, extra: &[&str], env: &[(&str, &str)]) -> Daemon {
        Daemon::start_to(tag, extra, env, Stdio::inherit())
    }

    /// `start` with the daemon's log (stderr) written to `log`.
    pub fn start_logged(tag: &str, extra: &[&str], log: &std::path::Path) -> Daemon {
        let f = std::fs::File::create(log).expect("daemon log file");
        Daemon::start_to(tag, extra, &[], Stdio::from(f))
    }

    fn start_to(tag: &str, extra: &[&str], env: &[(&str, &str)], stderr: Stdio) -> Daemon {
        let socket = std::env::temp_dir().join(format!("uvs-{tag}-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&socket);
        let child = Command::new(env!("CARGO_BIN_EXE_uvs"))
            .arg("run")
            .arg("--socket")
            .arg(&socket)
            .args(extra)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("start uvs");
        let d = Daemon { child, socket };
        let t = Instant::now();
        while !d.socket.exists() {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "uvs did not create its socket"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        d
    }

    /// `uvs ctl --socket S args...`: stdout on success, panics with stderr otherwise.
    pub fn ctl(&self, args: &[&str]) -> String {
        let out = self.ctl_raw(args);
        assert!(
            out.status.success(),
            "uvs ctl {:?} failed: {}",
            args,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `uvs ctl` without asserting success.
    pub fn ctl_raw(&self, args: &[&str]) -> std::process::Output {
        Command::new(env!("CARGO_BIN_EXE_uvs"))
            .arg("ctl")
            .arg("--socket")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("run uvs ctl")
    }

    /// `uvs ctl --json args...`, parsed; panics when it fails or is not JSON.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut v = vec!["--json"];
        v.extend_from_slice(args);
        serde_json::from_str(&self.ctl(&v)).expect("uvs ctl --json")
    }

    /// Port `name`'s counters from `stats` (null when it has none).
    pub fn port_stats(&self, name: &str) -> serde_json::Value {
        self.json(&["stats"])["ports"][name].clone()
    }

    /// Port `name` as `show` describes it, from whichever bridge holds it (null when none).
    pub fn port_show(&self, name: &str) -> serde_json::Value {
        let show = self.json(&["show"]);
        show["bridges"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|b| b["ports"].as_array().cloned().unwrap_or_default())
            .find(|p| p["name"] == name)
            .unwrap_or_default()
    }

    /// Wait up to `secs` until port `name`'s state in `show` is `state`; panics with `show`
    /// otherwise.
    pub fn wait_state(&self, name: &str, state: &str, secs: u64) {
        let ok = eventually(secs, || self.port_show(name)["state"] == state);
        assert!(
            ok,
            "{name} not {state} after {secs}s:\n{}",
            self.ctl(&["show"])
        );
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        stop_child(&mut self.child);
        // The CNI plugin's lock file next to the socket (uvs leaves lock files in place).
        let mut lock = self.socket.clone().into_os_string();
        lock.push(".cni-lock");
        let _ = std::fs::remove_file(lock);
    }
}

/// Run an iperf3 TCP test from `client_ns` to `server_ip` (server started in `server_ns`) for
/// `secs` seconds; returns the receiver's bits per second. The server is stopped by PID.
pub fn iperf3_tcp(server_ns: &str, client_ns: &str, server_ip: &str, secs: u32) -> f64 {
    iperf3_tcp_streams(server_ns, client_ns, server_ip, secs, 1)
}

/// [`iperf3_tcp`] with `streams` parallel connections (`-P`): the total.
pub fn iperf3_tcp_streams(
    server_ns: &str,
    client_ns: &str,
    server_ip: &str,
    secs: u32,
    streams: u32,
) -> f64 {
    let v = iperf3(
        (server_ns, client_ns, server_ip),
        secs,
        &["-P", &streams.to_string()],
    );
    v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .unwrap_or(0.0)
}

/// Offer UDP at `rate` (iperf3 `-b`, e.g. "50M") from `client_ns` to `server_ip` for `secs`
/// seconds; `reverse`: from the server to the client instead (`-R`). Returns iperf3's JSON
/// report.
pub fn iperf3_udp(
    (server_ns, client_ns, server_ip): (&str, &str, &str),
    secs: u32,
    rate: &str,
    reverse: bool,
) -> serde_json::Value {
    let mut args = vec!["-u", "-b", rate];
    if reverse {
        args.push("-R");
    }
    iperf3((server_ns, client_ns, server_ip), secs, &args)
}

/// Run iperf3 with `args` from `client_ns` to `server_ip` (server started in `server_ns`, and
/// stopped by PID) for `secs` seconds: its JSON report.
fn iperf3(
    (server_ns, client_ns, server_ip): (&str, &str, &str),
    secs: u32,
    args: &[&str],
) -> serde_json::Value {
    let port = 20000 + (std::process::id() % 20000) as u16 + (server_ip.len() as u16);
    let pidfile = std::env::temp_dir().join(format!("uvs-iperf-{server_ns}.pid"));
    let _ = std::fs::remove_file(&pidfile);
    sh(&[
        "ip",
        "netns",
        "exec",
        server_ns,
        "iperf3",
        "-s",
        "-1",
        "-D",
        "-p",
        &port.to_string(),
        "-I",
        pidfile.to_str().unwrap(),
    ]);
    // `-D` returns when it forks; the child listens a little later.
    let t = Instant::now();
    let listening = format!(":{port} ");
    while !sh(&["ip", "netns", "exec", server_ns, "ss", "-Hltn"]).contains(&listening) {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "iperf3 not listening in {server_ns} on port {port}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = Command::new("ip")
        .args([
            "netns", "exec", client_ns, "timeout", "30", "iperf3", "-J", "-c", server_ip,
        ])
        .args(["-p", &port.to_string(), "-t", &secs.to_string()])
        .args(args)
        .output()
        .expect("iperf3");
    if let Ok(pid) = std::fs::read_to_string(&pidfile) {
        if let Ok(pid) = pid.trim().trim_end_matches('\0').parse::<i32>() {
            // SAFETY: kill takes a pid and a signal; the pid is the server this call started.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
        let _ = std::fs::remove_file(&pidfile);
    }
    serde_json::from_slice(&out.stdout).unwrap_or_default()
}

/// Bridge br0 on daemon `d` with two containers on AF_XDP ports: namespaces `{p}a` and `{p}b`
/// (host ends `{p}pa`, `{p}pb`) at `{net}.1/24` and `{net}.2/24`; returns `{net}.2`, b's
/// address. The caller checks reachability (its own way: a plain ping, one with a ToS).
pub fn two_on_br0(t: &mut Topology, d: &Daemon, p: &str, net: &str) -> String {
    let n = |s: &str| format!("{p}{s}");
    d.ctl(&["add-br", "br0"]);
    t.container(&n("a"), &n("pa"), &format!("{net}.1/24"));
    t.container(&n("b"), &n("pb"), &format!("{net}.2/24"));
    d.ctl(&["add-port", "br0", &n("pa"), "type=afxdp"]);
    d.ctl(&["add-port", "br0", &n("pb"), "type=afxdp"]);
    format!("{net}.2")
}

/// True if `ping -c COUNT` from `ns` to `ip` gets every reply.
pub fn ping(ns: &str, ip: &str, count: u32) -> bool {
    ping_with(ns, ip, count, &[])
}

/// `ping` with the echo requests' IP ToS byte set to `tos` (`ping -Q`: DSCP and ECN bits).
pub fn ping_tos(ns: &str, ip: &str, tos: u8, count: u32) -> bool {
    ping_with(ns, ip, count, &["-Q", &tos.to_string()])
}

/// `ping` with the echo requests' IP TTL set to `ttl` (`ping -t`).
pub fn ping_ttl(ns: &str, ip: &str, ttl: u8, count: u32) -> bool {
    ping_with(ns, ip, count, &["-t", &ttl.to_string()])
}

/// A UDP echo server in namespace `ns` on `ip:port` (python3; each datagram goes back to its
/// sender, reversed when `reversed`), given 300 ms to bind; killed (by PID) when dropped.
pub struct UdpEcho(std::process::Child);

impl UdpEcho {
    pub fn start(ns: &str, ip: &str, port: u16, reversed: bool) -> UdpEcho {
        let back = if reversed { "d[::-1]" } else { "d" };
        let script = format!(
            "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n\
             s.bind(('{ip}',{port}))\ns.settimeout(30)\nwhile True:\n    \
             d,a=s.recvfrom(65535)\n    s.sendto({back},a)\n"
        );
        let child = std::process::Command::new("ip")
            .args(["netns", "exec", ns, "python3", "-c", &script])
            .spawn()
            .expect("python3 UDP echo server");
        std::thread::sleep(std::time::Duration::from_millis(300));
        UdpEcho(child)
    }
}

impl Drop for UdpEcho {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Run python3 `script` in namespace `ns`: its stdout (trimmed) and stderr.
pub fn python_in(ns: &str, script: &str) -> (String, String) {
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", ns, "python3", "-c", script])
        .output()
        .expect("python3");
    (
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `ping` with `size` bytes of payload (`ping -s`; over the MTU the echo and its reply go as
/// fragments: `-M dont` lets the sender fragment).
pub fn ping_size(ns: &str, ip: &str, size: usize, count: u32) -> bool {
    ping_with(ns, ip, count, &["-s", &size.to_string(), "-M", "dont"])
}

/// The `n_packets` of the first line of `dump-flows` output `dump` that contains `needle`;
/// None if no line does (or it has no count).
pub fn flow_packets(dump: &str, needle: &str) -> Option<u64> {
    dump.lines()
        .find(|l| l.contains(needle))?
        .split("n_packets=")
        .nth(1)?
        .split(',')
        .next()?
        .trim()
        .parse()
        .ok()
}

fn ping_with(ns: &str, ip: &str, count: u32, extra: &[&str]) -> bool {
    let count = count.to_string();
    let mut args = vec![
        "ip", "netns", "exec", ns, "ping", "-c", &count, "-i", "0.2", "-W", "1",
    ];
    args.extend_from_slice(extra);
    args.push(ip);
    try_sh(&args)
}

/// A python3 HTTP server in a namespace serving `dir`, logging requests to `log`; killed by PID
/// on drop, and its directory removed.
pub struct HttpServer {
    child: Child,
    dir: PathBuf,
    /// The request log (python's http.server writes one line per request to stderr).
    pub log: PathBuf,
}

impl HttpServer {
    /// Serve `body` as /index.html on `addr:port` in `ns`.
    pub fn start(ns: &str, addr: &str, port: u16, body: &str) -> HttpServer {
        let dir = std::env::temp_dir().join(format!("uvs-http-{ns}-{port}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("index.html"), body).unwrap();
        let log = dir.join("requests.log");
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                ns,
                "python3",
                "-m",
                "http.server",
                &port.to_string(),
            ])
            .args(["--bind", addr, "--directory", dir.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("python3 http.server");
        // Wait until it listens.
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(5) {
            let ss = sh(&["ip", "netns", "exec", ns, "ss", "-ltn"]);
            if ss.contains(&format!(":{port}")) {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        HttpServer { child, dir, log }
    }

    /// What the log says so far.
    pub fn requests(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `curl -s --max-time 5 URL` from `ns`: the body, or None on failure.
pub fn curl(ns: &str, url: &str) -> Option<String> {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "curl", "-s", "--max-time", "5", url])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// VXLAN host A: uvs with uplink bridge `ul` (gateway 10.252.0.1/24, the local VTEP) holding an
/// AF_XDP port on a veth whose other end is `eth0` (10.252.0.2/24) in host B's namespace `hb`,
/// and bridge `br0` holding container `{p}c1` (192.168.42.1/24, MTU 1450) and
/// `vx0 type=vxlan vni=42` toward 10.252.0.2.
pub fn vxlan_uvs_side(t: &mut Topology, d: &Daemon, p: &str, hb: &str) {
    vxlan_uvs_side_on(t, d, p, hb, "afxdp");
}

/// [`vxlan_uvs_side`] with ports of type `kind` (afxdp or afpacket) on the two veths.
pub fn vxlan_uvs_side_on(t: &mut Topology, d: &Daemon, p: &str, hb: &str, kind: &str) {
    let n = |s: &str| format!("{p}{s}");
    d.ctl(&["add-br", "ul", "gateway=10.252.0.1/24"]);
    d.ctl(&["add-br", "br0"]);
    attach(t, d, ("ul", hb, &n("ua")), kind, "10.252.0.2/24", &[]);
    t.container(&n("c1"), &n("p1"), "192.168.42.1/24");
    sh(&["ip", "-n", &n("c1"), "link", "set", "eth0", "mtu", "1450"]);
    let ty = format!("type={kind}");
    d.ctl(&["add-port", "br0", &n("p1"), &ty]);
    d.ctl(&[
        "add-port",
        "br0",
        "vx0",
        "type=vxlan",
        "vni=42",
        "local_ip=10.252.0.1",
        "remote_ip=10.252.0.2",
    ]);
}

/// Host B's kernel VTEP `vx42` (VNI 42, port 4789, 10.252.0.2 -> 10.252.0.1) in namespace
/// `hb`, the peer of [`vxlan_uvs_side`]; down and without an address.
pub fn kernel_vtep(hb: &str) {
    sh(&[
        "ip",
        "-n",
        hb,
        "link",
        "add",
        "vx42",
        "type",
        "vxlan",
        "id",
        "42",
        "dstport",
        "4789",
        "local",
        "10.252.0.2",
        "remote",
        "10.252.0.1",
    ]);
}

/// Attach a container: afxdp, afpacket => veth made by the test; tap => uvs makes the TAP device, which is
/// then moved into the namespace. Returns the namespace's interface name.
/// `at` is (bridge, namespace, port name).
pub fn attach(
    t: &mut Topology,
    d: &Daemon,
    at: (&str, &str, &str),
    kind: &str,
    ip: &str,
    opts: &[&str],
) -> String {
    let (br, ns, port) = at;
    let mut args = vec!["add-port", br, port];
    let ty = format!("type={kind}");
    args.push(&ty);
    args.extend_from_slice(opts);
    if kind == "afxdp" || kind == "afpacket" {
        t.container(ns, port, ip);
        d.ctl(&args);
        "eth0".into()
    } else {
        t.netns(ns);
        d.ctl(&args);
        t.adopt(ns, port, ip);
        port.into()
    }
}

/// [`attach`] container `{p}{name}` behind port `{p}p{name}` of type `kind` on bridge `br`,
/// with address `addr` (CIDR) and no port options; returns the namespace's interface name.
pub fn member(
    t: &mut Topology,
    d: &Daemon,
    p: &str,
    br: &str,
    name: &str,
    kind: &str,
    addr: &str,
) -> String {
    let (ns, port) = (format!("{p}{name}"), format!("{p}p{name}"));
    attach(t, d, (br, &ns, &port), kind, addr, &[])
}

/// A daemon with bridge `br0` holding containers `{p}n1` (`{net}.1/24`, port `{p}p1`) and
/// `{p}n2` (`{net}.2/24`, port `{p}p2`) on ports of `kinds`, which ping each other; returns the
/// daemon, the topology and the prefix `p`. None (after a skip line) without root.
pub fn two_on_one_bridge(
    kinds: (&str, &str),
    tag: &str,
    net: &str,
) -> Option<(Daemon, Topology, String)> {
    if !root_or_skip(tag) {
        return None;
    }
    let p = prefix(tag);
    let mut t = Topology::default();
    let d = Daemon::start(&p, &[]);
    d.ctl(&["add-br", "br0"]);
    let (n1, n2) = (format!("{p}n1"), format!("{p}n2"));
    let (v1, v2) = (format!("{p}p1"), format!("{p}p2"));
    attach(
        &mut t,
        &d,
        ("br0", &n1, &v1),
        kinds.0,
        &format!("{net}.1/24"),
        &[],
    );
    attach(
        &mut t,
        &d,
        ("br0", &n2, &v2),
        kinds.1,
        &format!("{net}.2/24"),
        &[],
    );
    assert!(ping(&n1, &format!("{net}.2"), 2), "ping through uvs");
    Some((d, t, p))
}

/// A routed inside and outside: bridge `br0` (gateway `{inside}.1/24`) with container `{p}c1`
/// at `{inside}.2` on port `{p}p1`, whose default route is that gateway, and bridge `ext`
/// (gateway `{outside}.1/24`) with host `{p}o` at `{outside}.2` on port `{p}po`; both ports of
/// type `kind`. The outside host has no route back: add one, or masquerade.
pub fn inside_outside(
    t: &mut Topology,
    d: &Daemon,
    p: &str,
    kind: &str,
    inside: &str,
    outside: &str,
) {
    let n = |s: &str| format!("{p}{s}");
    d.ctl(&["add-br", "br0", &format!("gateway={inside}.1/24")]);
    d.ctl(&["add-br", "ext", &format!("gateway={outside}.1/24")]);
    attach(
        t,
        d,
        ("br0", &n("c1"), &n("p1")),
        kind,
        &format!("{inside}.2/24"),
        &[],
    );
    attach(
        t,
        d,
        ("ext", &n("o"), &n("po")),
        kind,
        &format!("{outside}.2/24"),
        &[],
    );
    route_add(&n("c1"), "default", &format!("{inside}.1"));
}

/// Container `c2` behind VXLAN host B: a veth `c2v` in host B's namespace `hb` (up) whose peer
/// is `c2`'s `eth0` (192.168.42.2/24, MTU 1450 for the overlay, up).
pub fn host_b_container(t: &mut Topology, hb: &str, c2: &str) {
    t.netns(c2);
    sh(&[
        "ip", "-n", hb, "link", "add", "c2v", "type", "veth", "peer", "name", "eth0", "netns", c2,
    ]);
    sh(&["ip", "-n", hb, "link", "set", "c2v", "up"]);
    sh(&[
        "ip",
        "-n",
        c2,
        "addr",
        "add",
        "192.168.42.2/24",
        "dev",
        "eth0",
    ]);
    sh(&["ip", "-n", c2, "link", "set", "eth0", "mtu", "1450"]);
    sh(&["ip", "-n", c2, "link", "set", "eth0", "up"]);
}

/// Host B as a kernel VTEP: [`kernel_vtep`] and [`host_b_container`] `c2` on a kernel bridge
/// `kbr` in `hb`, all up.
pub fn kernel_bridged_vtep(t: &mut Topology, hb: &str, c2: &str) {
    kernel_vtep(hb);
    sh(&["ip", "-n", hb, "link", "add", "kbr", "type", "bridge"]);
    sh(&["ip", "-n", hb, "link", "set", "vx42", "master", "kbr"]);
    host_b_container(t, hb, c2);
    sh(&["ip", "-n", hb, "link", "set", "c2v", "master", "kbr"]);
    for dev in ["vx42", "kbr", "c2v"] {
        sh(&["ip", "-n", hb, "link", "set", dev, "up"]);
    }
}

/// Run `tshark` on `dev` in `ns` until it says it is capturing; returns the child.
pub fn tshark(ns: &str, dev: &str, args: &[&str]) -> std::process::Child {
    use std::io::BufRead;
    let mut cap = std::process::Command::new("ip")
        .args(["netns", "exec", ns, "timeout", "25", "tshark", "-i", dev])
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("tshark");
    let err = cap.stderr.take().expect("tshark stderr");
    let mut lines = std::io::BufReader::new(err).lines();
    let t0 = std::time::Instant::now();
    while t0.elapsed() < std::time::Duration::from_secs(15) {
        match lines.next() {
            Some(Ok(l)) if l.contains("Capturing on") => break,
            Some(_) => continue,
            None => break,
        }
    }
    std::thread::spawn(move || for _ in lines {});
    cap
}
