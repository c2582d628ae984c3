//! The plugin's side effects: netlink in the host or in the container's namespace (see
//! [`super::netlink`]), the IPAM plugin, and the uvs control socket. Each failure becomes a
//! [`CniError`] naming what ran.

use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::Value;

use super::conf::Env;
use super::netlink::Rtnl;
use super::{CniError, E_IO, E_IPAM, E_UNKNOWN_CONTAINER, E_UVS};
use crate::control::client;

/// Opens the container's namespace file.
pub fn open_netns(path: &str) -> Result<File, CniError> {
    File::open(path).map_err(|e| {
        CniError::failed(
            E_UNKNOWN_CONTAINER,
            &format!("CNI_NETNS: cannot open '{path}'"),
            e,
        )
    })
}

/// A netlink socket in the host's namespace.
pub fn rtnl() -> Result<Rtnl, CniError> {
    nl("open a NETLINK_ROUTE socket", Rtnl::open())
}

/// A netlink socket in the container's namespace `ns`.
pub fn rtnl_in(ns: &File) -> Result<Rtnl, CniError> {
    nl(
        "open a NETLINK_ROUTE socket in CNI_NETNS",
        Rtnl::open_in(ns),
    )
}

/// A netlink failure of `what` as an I/O error (code 5) naming it.
pub fn nl<T>(what: &str, r: std::io::Result<T>) -> Result<T, CniError> {
    r.map_err(|e| CniError::failed(E_IO, &format!("netlink: {what}"), e))
}

/// Finds `name` in `CNI_PATH`.
pub fn find_plugin(env: &Env, name: &str) -> Result<std::path::PathBuf, CniError> {
    env.path
        .iter()
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            CniError::new(
                E_IPAM,
                format!("ipam.type: plugin '{name}' not found in CNI_PATH"),
            )
            .details(format!("{:?}", env.path))
        })
}

/// Runs the IPAM plugin with `command` (ADD/DEL/CHECK), the environment of this invocation and
/// `stdin`; returns its stdout parsed (`null` when empty).
pub fn ipam(env: &Env, plugin: &str, command: &str, stdin: &[u8]) -> Result<Value, CniError> {
    let exe = find_plugin(env, plugin)?;
    let mut child = Command::new(&exe)
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", &env.container_id)
        .env("CNI_NETNS", &env.netns)
        .env("CNI_IFNAME", &env.ifname)
        .env("CNI_ARGS", &env.args)
        .env(
            "CNI_PATH",
            std::env::join_paths(&env.path).unwrap_or_default(),
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            CniError::failed(
                E_IPAM,
                &format!("ipam {plugin}: cannot run {}", exe.display()),
                e,
            )
        })?;
    if let Some(mut i) = child.stdin.take() {
        let _ = i.write_all(stdin);
    }
    let out = child
        .wait_with_output()
        .map_err(|e| CniError::failed(E_IPAM, &format!("ipam {plugin} {command}"), e))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(ipam_error(plugin, command, &text, &out.stderr, out.status));
    }
    if text.trim().is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_str(&text).map_err(|e| {
        CniError::failed(
            E_IPAM,
            &format!("ipam {plugin} {command}: result is not JSON"),
            e,
        )
    })
}

/// The error of IPAM plugin `plugin` that failed running `command` with `stdout`, `stderr` and
/// `status`. Its own error JSON is passed on with its code (the spec: a delegated plugin's
/// error is returned), its `msg` prefixed; without one it is code 101 with what it printed.
/// The details are its `details` and stderr, whichever are there.
pub fn ipam_error(
    plugin: &str,
    command: &str,
    stdout: &str,
    stderr: &[u8],
    status: std::process::ExitStatus,
) -> CniError {
    let v: Value = serde_json::from_str(stdout).unwrap_or(Value::Null);
    let stderr = String::from_utf8_lossy(stderr);
    let stderr = stderr.trim();
    let theirs = v["code"].as_u64().and_then(|c| u32::try_from(c).ok());
    let (code, msg) = match (theirs, v["msg"].as_str()) {
        (Some(c), m) => (c, m.unwrap_or("failed").to_string()),
        (None, _) => {
            let said = stderr.lines().chain(stdout.trim().lines()).next();
            let said = said.unwrap_or("no error message");
            (E_IPAM, format!("{said} ({status}, no error JSON)"))
        }
    };
    let details: Vec<&str> = [v["details"].as_str().unwrap_or_default(), stderr]
        .into_iter()
        .filter(|d| !d.trim().is_empty())
        .collect();
    CniError::new(code, format!("ipam {plugin} {command}: {msg}")).details(details.join("; "))
}

/// One control request; the daemon's error becomes [`E_UVS`], its message `uvs METHOD: why`,
/// its details the whole request.
pub fn uvs(socket: &Path, method: &str, params: &[String]) -> Result<Value, CniError> {
    client::call(socket, method, params)
        .map(|r| r.data)
        .map_err(|e| {
            let request = format!("{method} {}", params.join(" "));
            CniError::new(E_UVS, format!("uvs {method}: {e}"))
                .details(format!("uvs ctl {}: {e}", request.trim_end()))
        })
}

/// How long an invocation waits for another one on the same daemon.
pub const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// An exclusive `flock` on `SOCKET.cni-lock`, held until dropped: invocations on one daemon run
/// one at a time, so that a rule's `nat-show` index is still its index at `nat-del`, and two
/// ADDs never both create a network's bridge and masquerade rule. Waits up to [`LOCK_WAIT`],
/// then fails with "try again later" (code 11).
pub fn lock(socket: &Path) -> Result<File, CniError> {
    let mut path = socket.as_os_str().to_owned();
    path.push(".cni-lock");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| {
            CniError::failed(
                E_IO,
                &format!("cannot open lock file {}", Path::new(&path).display()),
                e,
            )
        })?;
    let start = std::time::Instant::now();
    loop {
        // SAFETY: flock on a descriptor we own; no memory is passed.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return Ok(f);
        }
        if start.elapsed() > LOCK_WAIT {
            return Err(CniError::new(
                super::E_TRY_AGAIN,
                format!(
                    "another uvs-cni holds {} for over {}s",
                    Path::new(&path).display(),
                    LOCK_WAIT.as_secs()
                ),
            ));
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
