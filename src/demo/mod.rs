//! `uvs demo`: a throwaway two-host topology that shows what uvs is for (see [`topo`] for the
//! picture): container networks with gateways, isolated from each other as Docker's user
//! networks; a masqueraded container reaching a host "outside"; a published port (`-p 8080:80`)
//! served by a container's web server; containers finding each other by name through their
//! gateway's DNS, per network; and a network extended to a second uvs "host" (a second daemon in
//! its own namespace) over VXLAN.
//!
//! Contract: each check in [`CHECKS`] runs (a failed one does not stop the others) and prints
//! one line, `PASS name: detail` or `FAIL name: why`; the demo succeeds when all pass. Both
//! daemons, the web server, every namespace, link and socket are removed afterwards by the
//! [`sys::Cleanup`] guard (by PID and by name), also when setup fails. `--hold S` keeps the
//! topology up S seconds after the checks, for `uvs ctl --socket ...`.
//!
//! Adding a step: write a `fn(&Demo) -> Result<String, String>` and list it in [`CHECKS`]
//! (setup it needs goes in [`topo`]).

mod dns;
mod sys;
mod topo;

use std::time::Duration;

use sys::{Cleanup, Host, eventually, in_ns, quiet};
use topo::{C1, C2, C3, C4, EXT_GW, NET1_GW, NET2_GW, Names, OUTSIDE, PUBLISHED, WEB_BODY};

/// What the checks need: the hosts and the names.
pub struct Demo {
    a: Host,
    b: Host,
    n: Names,
}

/// A named check: its detail on success, why on failure.
type Check = (&'static str, fn(&Demo) -> Result<String, String>);

/// The checks, in the order they run and print.
pub const CHECKS: &[Check] = &[
    ("same network", same_network),
    ("isolation", isolation),
    ("masquerade", masquerade),
    ("published port", published_port),
    ("DNS by name", dns_by_name),
    ("overlay", overlay),
];

/// `ping` from `ns` to `ip` (2 echoes, 0.2 s apart, 1 s wait): whether a reply came.
fn ping(ns: &str, ip: &str) -> bool {
    quiet(&[
        "ip", "netns", "exec", ns, "ping", "-c", "2", "-i", "0.2", "-W", "1", ip,
    ])
}

fn same_network(d: &Demo) -> Result<String, String> {
    let c1 = d.n.ns("c1");
    if !ping(&c1, C2) {
        return Err(format!("c1 ({C1}) -> c2 ({C2}): no reply"));
    }
    if !ping(&c1, NET1_GW) {
        return Err(format!("c1 -> its gateway {NET1_GW}: no reply"));
    }
    Ok(format!(
        "c1 ({C1}) pings c2 ({C2}) and its gateway {NET1_GW} on net1"
    ))
}

fn isolation(d: &Demo) -> Result<String, String> {
    let c3 = d.n.ns("c3");
    if !ping(&c3, NET2_GW) {
        return Err(format!("c3 -> its gateway {NET2_GW}: no reply"));
    }
    if quiet(&["ip", "netns", "exec", &c3, "ping", "-c", "1", "-W", "1", C1]) {
        return Err(format!("c3 (net2) reached c1 ({C1}) on net1"));
    }
    Ok(format!(
        "c3 ({C3}, on a TAP port) reaches its gateway {NET2_GW}, not c1 on net1 (isolated=on)"
    ))
}

fn masquerade(d: &Demo) -> Result<String, String> {
    if !ping(&d.n.ns("c1"), OUTSIDE) {
        return Err(format!("c1 -> outside ({OUTSIDE}): no reply"));
    }
    let ct = d.a.ask(&["ct-show"])?;
    let line = ct
        .lines()
        .find(|l| l.contains(OUTSIDE))
        .unwrap_or("")
        .trim();
    Ok(format!(
        "c1 pings the outside host {OUTSIDE} as {EXT_GW}: {line}"
    ))
}

fn published_port(d: &Demo) -> Result<String, String> {
    let url = format!("http://{EXT_GW}:{PUBLISHED}/index.html");
    let out = d.n.ns("outside");
    let mut body = String::new();
    let ok = eventually(5.0, || {
        body = in_ns(&out, &["curl", "-s", "--max-time", "2", &url]).unwrap_or_default();
        body == WEB_BODY
    });
    if !ok {
        return Err(format!("curl {url} from outside: got {body:?}"));
    }
    Ok(format!(
        "curl {url} from outside -> c1:80 answers {:?}",
        body.trim()
    ))
}

/// `web` (c1, registered on net1) resolves from c2 through net1's gateway, `db` (c3, on net2)
/// through net2's; net1's gateway does not know `db` (Docker's per-network DNS).
fn dns_by_name(d: &Demo) -> Result<String, String> {
    let (c2, c3) = (d.n.ns("c2"), d.n.ns("c3"));
    let asks = [
        ("c2", &c2, NET1_GW, "web", C1),
        ("c3", &c3, NET2_GW, "db", C3),
    ];
    for (who, ns, gw, name, want) in asks {
        let got = dns::lookup(ns, gw, name)?;
        if got
            .addrs
            .iter()
            .map(ToString::to_string)
            .ne([want.to_string()])
        {
            return Err(format!(
                "{who} asked {gw} for {name}: {} {:?}, want {want}",
                got.code, got.addrs
            ));
        }
    }
    let cross = dns::lookup(&c2, NET1_GW, "db")?;
    if !cross.addrs.is_empty() {
        return Err(format!(
            "net2's name db resolved on net1: {:?}",
            cross.addrs
        ));
    }
    Ok(format!(
        "c2 asks its gateway {NET1_GW} for web: {C1} (c1); c3 gets db: {C3} from {NET2_GW}; \
         net2's db is unknown on net1 ({})",
        cross.code
    ))
}

fn overlay(d: &Demo) -> Result<String, String> {
    let c1 = d.n.ns("c1");
    if !eventually(3.0, || ping(&c1, C4)) {
        return Err(format!("c1 (host A) -> c4 ({C4}, host B): no reply"));
    }
    if !ping(&d.n.ns("c4"), NET1_GW) {
        return Err(format!(
            "c4 -> net1's gateway {NET1_GW} on host A: no reply"
        ));
    }
    let fdb = d.b.ask(&["fdb-show", "net1"])?;
    let remote = fdb.lines().any(|l| l.contains("vx42"));
    Ok(format!(
        "c1 on host A pings c4 ({C4}) on host B over VXLAN vni 42, c4 reaches its gateway on \
         host A{}",
        if remote {
            "; host B learned c1 behind vx42"
        } else {
            ""
        }
    ))
}

/// Starts c1's web server (busybox httpd, else python3) serving [`WEB_BODY`].
fn web_server(n: &Names, c: &mut Cleanup) -> Result<(), String> {
    let dir = std::env::temp_dir().join(format!("uvs-demo-www-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    c.paths.push(dir.clone());
    std::fs::write(dir.join("index.html"), WEB_BODY).map_err(|e| e.to_string())?;
    let ns = n.ns("c1");
    let d = dir.to_string_lossy().into_owned();
    let mut cmd = std::process::Command::new("ip");
    cmd.args(["netns", "exec", &ns]);
    if quiet(&["sh", "-c", "command -v busybox"]) {
        cmd.args(["busybox", "httpd", "-f", "-p", "80", "-h", &d]);
    } else {
        cmd.args(["python3", "-m", "http.server", "80", "--directory", &d]);
    }
    let child = cmd
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| format!("c1's web server: {e}"))?;
    c.children.push(("web server (c1)".into(), child));
    println!("# c1 serves http on port 80 (published as {EXT_GW}:{PUBLISHED})");
    Ok(())
}

/// Fails with what to install when a tool is missing.
fn tools() -> Result<(), String> {
    for (tool, pkg) in [
        ("ip", "iproute2"),
        ("ping", "iputils-ping"),
        ("curl", "curl"),
    ] {
        if !quiet(&["sh", "-c", &format!("command -v {tool}")]) {
            return Err(format!(
                "uvs demo needs `{tool}` (Debian: {pkg}; scripts/setup.sh installs it)"
            ));
        }
    }
    if !quiet(&["sh", "-c", "command -v busybox || command -v python3"]) {
        return Err("uvs demo needs busybox or python3 for its web server".into());
    }
    Ok(())
}

/// Builds everything, then runs the checks; errors say which check or step failed.
fn build_and_check(n: Names, c: &mut Cleanup, hold: u64) -> Result<(), String> {
    let a = Host::start("A", n.socket("a"), None, c)?;
    let hb = n.ns("hostb");
    topo::netns(c, &hb)?;
    let b = Host::start("B", n.socket("b"), Some(&hb), c)?;
    topo::host_a(&a, &n, c)?;
    web_server(&n, c)?;
    topo::host_b(&a, &b, &n, c)?;
    let d = Demo { a, b, n };
    println!("\n== checks ==");
    let mut failed = Vec::new();
    for (name, check) in CHECKS {
        match check(&d) {
            Ok(detail) => println!("PASS {name}: {detail}"),
            Err(why) => {
                println!("FAIL {name}: {why}");
                failed.push(*name);
            }
        }
    }
    println!("\n[host A] $ uvs ctl show");
    print!("{}", d.a.ask(&["show"])?);
    println!("[host A] $ uvs ctl nat-show");
    print!("{}", d.a.ask(&["nat-show"])?);
    if hold > 0 {
        println!(
            "holding {hold} s: try `uvs ctl --socket {} show` (host B: {})",
            d.a.socket.display(),
            d.b.socket.display()
        );
        std::thread::sleep(Duration::from_secs(hold));
    }
    if failed.is_empty() {
        println!(
            "demo OK: {} of {} checks passed",
            CHECKS.len(),
            CHECKS.len()
        );
        Ok(())
    } else {
        Err(format!("demo: failed checks: {}", failed.join(", ")))
    }
}

/// Run the demo; keep it up `hold` seconds before cleaning up.
pub fn run(hold: u64) -> Result<(), String> {
    if !crate::port::wait::is_root() {
        return Err(
            "uvs demo needs root: it creates network namespaces, veth pairs and a TAP \
                    device (try: sudo uvs demo)"
                .into(),
        );
    }
    tools()?;
    println!(
        "== uvs demo: two uvs hosts, container networks, NAT, a published port, DNS, VXLAN =="
    );
    let mut cleanup = Cleanup::default();
    let r = build_and_check(Names::new(), &mut cleanup, hold);
    drop(cleanup);
    r
}
