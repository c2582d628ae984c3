//! `uvs demo`: a throwaway topology that shows the switch working.
//!
//! It makes three network-namespace "containers": c1 and c2 on veth pairs attached as AF_XDP
//! ports, c3 on a TAP device that uvs creates and then moves into c3's namespace. All three sit
//! on bridge `br0` of an in-process uvs (with a control socket, so `uvs ctl` works during
//! `--hold`). It pings between them, prints the FDB and the counters, and removes everything it
//! made (namespaces, links, socket), also when a step fails.

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use crate::clock::MonotonicClock;
use crate::control::{self, Registry};
use crate::worker::{self, WorkerOptions};

struct Cleanup {
    namespaces: Vec<String>,
    links: Vec<String>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for l in &self.links {
            let _ = quiet(&["ip", "link", "del", l]);
        }
        for n in &self.namespaces {
            let _ = quiet(&["ip", "netns", "del", n]);
        }
        println!(
            "cleaned up: namespaces {:?}, links {:?}",
            self.namespaces, self.links
        );
    }
}

fn quiet(args: &[&str]) -> bool {
    Command::new(args[0])
        .args(&args[1..])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

fn run_cmd(args: &[&str]) -> Result<(), String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| format!("{}: {e}", args[0]))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`{}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
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
    for tool in ["ip", "ping"] {
        if !quiet(&["sh", "-c", &format!("command -v {tool}")]) {
            return Err(format!(
                "uvs demo needs `{tool}` (Debian: iproute2, iputils-ping)"
            ));
        }
    }
    let id = std::process::id() % 10_000;
    let ns = |i: u32| format!("uvsdemo{id}-c{i}");
    let host = |i: u32| format!("ud{id}c{i}");
    let ip = |i: u32| format!("10.99.0.{i}");
    let mut cleanup = Cleanup {
        namespaces: Vec::new(),
        links: Vec::new(),
    };

    println!("== uvs demo: three containers on one uvs bridge ==");
    let socket = std::env::temp_dir().join(format!("uvs-demo-{id}.sock"));
    let w = Arc::new(
        worker::spawn(
            WorkerOptions::default(),
            Arc::new(MonotonicClock::default()),
        )
        .map_err(|e| format!("cannot start the worker: {e}"))?,
    );
    let mut reg = Registry::new();
    control::commands::register(&mut reg, w.clone());
    let reg = Arc::new(reg);
    let server = control::serve(&socket, reg.clone(), control::DEFAULT_SOCKET_MODE)
        .map_err(|e| format!("control socket {}: {e}", socket.display()))?;
    let ctl = |args: &[&str]| -> Result<String, String> {
        println!("$ uvs ctl --socket {} {}", socket.display(), args.join(" "));
        let a: Vec<String> = args[1..].iter().map(|s| s.to_string()).collect();
        reg.call(args[0], &a)
            .map(|r| r.text)
            .map_err(|e| e.to_string())
    };

    let result = (|| -> Result<(), String> {
        ctl(&["add-br", "br0"])?;
        for i in 1..=3u32 {
            run_cmd(&["ip", "netns", "add", &ns(i)])?;
            cleanup.namespaces.push(ns(i));
            run_cmd(&["ip", "-n", &ns(i), "link", "set", "lo", "up"])?;
        }
        for i in 1..=2u32 {
            println!("# container {} on veth {} (AF_XDP port)", ns(i), host(i));
            run_cmd(&[
                "ip",
                "link",
                "add",
                &host(i),
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                &ns(i),
            ])?;
            cleanup.links.push(host(i));
            run_cmd(&["ip", "link", "set", &host(i), "up"])?;
            run_cmd(&[
                "ip",
                "-n",
                &ns(i),
                "addr",
                "add",
                &format!("{}/24", ip(i)),
                "dev",
                "eth0",
            ])?;
            run_cmd(&["ip", "-n", &ns(i), "link", "set", "eth0", "up"])?;
            print!("{}", ctl(&["add-port", "br0", &host(i), "type=afxdp"])?);
            println!();
        }
        println!(
            "# container {} on TAP {} (created by uvs, moved into the namespace)",
            ns(3),
            host(3)
        );
        print!("{}", ctl(&["add-port", "br0", &host(3), "type=tap"])?);
        println!();
        run_cmd(&["ip", "link", "set", &host(3), "netns", &ns(3)])?;
        run_cmd(&[
            "ip",
            "-n",
            &ns(3),
            "addr",
            "add",
            &format!("{}/24", ip(3)),
            "dev",
            &host(3),
        ])?;
        run_cmd(&["ip", "-n", &ns(3), "link", "set", &host(3), "up"])?;
        print!("{}", ctl(&["show"])?);

        let mut failed = Vec::new();
        for (a, b) in [(1, 2), (2, 3), (3, 1)] {
            let ok = quiet(&[
                "ip",
                "netns",
                "exec",
                &ns(a),
                "ping",
                "-c",
                "3",
                "-i",
                "0.2",
                "-W",
                "1",
                &ip(b),
            ]);
            println!(
                "ping {} ({}) -> {} ({}): {}",
                ns(a),
                ip(a),
                ns(b),
                ip(b),
                if ok { "3/3 replies" } else { "FAILED" }
            );
            if !ok {
                failed.push(format!("{a}->{b}"));
            }
        }
        print!("{}", ctl(&["fdb-show", "br0"])?);
        print!("{}", ctl(&["stats"])?);
        if hold > 0 {
            println!(
                "holding {hold} s: try `uvs ctl --socket {} show`",
                socket.display()
            );
            std::thread::sleep(Duration::from_secs(hold));
        }
        if failed.is_empty() {
            println!("demo OK: every container reached every other through uvs");
            Ok(())
        } else {
            Err(format!("demo: pings failed: {}", failed.join(", ")))
        }
    })();
    drop(server);
    w.shutdown();
    drop(cleanup);
    result
}
