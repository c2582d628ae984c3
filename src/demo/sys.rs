//! The demo's side effects: commands it runs, the uvs daemons it starts (one per "host"), and
//! the [`Cleanup`] guard that removes everything it made, by PID and by name, even when a step
//! fails or panics.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::control::client;

/// What the demo made; dropped last, it removes all of it.
#[derive(Default)]
pub struct Cleanup {
    /// Processes started (uvs daemons, the web server), stopped by PID.
    pub children: Vec<(String, Child)>,
    /// Links in the root namespace.
    pub links: Vec<String>,
    /// Network namespaces.
    pub namespaces: Vec<String>,
    /// Files (sockets, the web root).
    pub paths: Vec<PathBuf>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        // Servers first (daemons hold the AF_XDP sockets of the links below).
        for (_, c) in self.children.iter_mut().rev() {
            stop(c);
        }
        for l in &self.links {
            let _ = quiet(&["ip", "link", "del", l]);
        }
        for n in &self.namespaces {
            let _ = quiet(&["ip", "netns", "del", n]);
        }
        for p in &self.paths {
            let _ = std::fs::remove_dir_all(p).or_else(|_| std::fs::remove_file(p));
        }
        let names: Vec<&str> = self.children.iter().map(|(n, _)| n.as_str()).collect();
        println!(
            "cleaned up: processes {names:?}, namespaces {:?}, links {:?}",
            self.namespaces, self.links
        );
    }
}

/// SIGTERM, then SIGKILL after 3 s.
fn stop(c: &mut Child) {
    // SAFETY: kill takes a pid and a signal; the pid is a child of this process, not yet
    // waited for, so it cannot have been reused.
    unsafe {
        libc::kill(c.id() as i32, libc::SIGTERM);
    }
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(3) {
        if let Ok(Some(_)) = c.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = c.kill();
    let _ = c.wait();
}

/// Runs a command; true when it succeeded.
pub fn quiet(args: &[&str]) -> bool {
    Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Runs a command; its stdout, or an error naming it with its stderr.
pub fn run_cmd(args: &[&str]) -> Result<String, String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{}: {e}", args[0]))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "`{}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Runs `args` in namespace `ns`.
pub fn in_ns(ns: &str, args: &[&str]) -> Result<String, String> {
    let mut a = vec!["ip", "netns", "exec", ns];
    a.extend_from_slice(args);
    run_cmd(&a)
}

/// Polls `f` every 50 ms until it holds or `secs` pass.
pub fn eventually(secs: f64, mut f: impl FnMut() -> bool) -> bool {
    let t = Instant::now();
    loop {
        if f() {
            return true;
        }
        if t.elapsed() > Duration::from_secs_f64(secs) {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A uvs "host": a `uvs run` daemon (this same binary) with its own control socket, started in
/// a network namespace (None: the root namespace).
pub struct Host {
    /// Shown in the narrative ("A", "B").
    pub name: &'static str,
    /// Its control socket.
    pub socket: PathBuf,
}

impl Host {
    /// Starts the daemon and waits (up to 10 s) for its socket.
    pub fn start(
        name: &'static str,
        socket: PathBuf,
        netns: Option<&str>,
        cleanup: &mut Cleanup,
    ) -> Result<Host, String> {
        let exe = std::env::current_exe().map_err(|e| format!("cannot find uvs itself: {e}"))?;
        let _ = std::fs::remove_file(&socket);
        let mut cmd = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(&exe);
                c
            }
            None => Command::new(&exe),
        };
        // No DNS upstream: the demo's containers have no real outside world, and a name a
        // gateway does not know gets NXDOMAIN at once, without asking the host's resolver.
        cmd.arg("run").arg("--socket").arg(&socket);
        cmd.args(["--dns-upstream", "none"]);
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start host {name}'s uvs: {e}"))?;
        cleanup.children.push((format!("uvs (host {name})"), child));
        cleanup.paths.push(socket.clone());
        if !eventually(10.0, || socket.exists()) {
            return Err(format!(
                "host {name}'s uvs did not create {}",
                socket.display()
            ));
        }
        Ok(Host { name, socket })
    }

    /// `uvs ctl ARGS` on this host, printed as a user would type it; its text answer.
    pub fn ctl(&self, args: &[&str]) -> Result<String, String> {
        println!("[host {}] $ uvs ctl {}", self.name, args.join(" "));
        self.ask(args)
    }

    /// [`Host::ctl`] without printing the command.
    pub fn ask(&self, args: &[&str]) -> Result<String, String> {
        let params: Vec<String> = args[1..].iter().map(|s| s.to_string()).collect();
        client::call(&self.socket, args[0], &params)
            .map(|r| r.text)
            .map_err(|e| format!("host {}: uvs ctl {}: {e}", self.name, args.join(" ")))
    }
}
