//! A bridge's OpenFlow settings as `uvs ctl` commands, in `ovs-vsctl`'s terms: controllers
//! (`set-controller BRIDGE tcp:IP:PORT|unix:PATH ...`, `del-controller`, `get-controller`), the
//! fail mode (`set-fail-mode BRIDGE standalone|secure`, `del-fail-mode`, `get-fail-mode`) and
//! the datapath id (`set-br BRIDGE datapath_id=0x...`, `add-br ... datapath_id=`).
//!
//! Contract:
//! - Settings are validated here (errors name the field and the value), kept in the bridge's
//!   spec by the worker (`OfCommand::Set`), so they are journalled, persisted with
//!   `--db` and shown by `show` / `save-config`.
//! - Fail modes as OVS: `standalone` (the default) makes a bridge whose controllers are all
//!   disconnected a plain learning switch (its flows are bypassed until one connects again);
//!   `secure` keeps its flows and never falls back. A bridge without controllers uses its flows.
//! - The connections themselves belong to the OpenFlow manager (`listener::Manager`), which
//!   reports them back with `OfCommand::ControllerState`.

use crate::flow::EntryWrite;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;

use serde_json::{Value, json};

use crate::config::BridgeSpec;
use crate::control::{CtlError, Registry, Reply};
use crate::worker::{Command, OfCommand, WorkerHandle};

/// The port of `tcp:IP` without one (OpenFlow's IANA port).
pub const DEFAULT_PORT: u16 = 6653;
/// Controllers one bridge may have.
pub const MAX_CONTROLLERS: usize = 8;

/// A connection's reading side, writing side, and shutdown.
pub type Connected = (
    Box<dyn std::io::Read + Send>,
    Box<dyn std::io::Write + Send>,
    super::hub::ShutdownFn,
);

/// Where a controller listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `tcp:IP[:PORT]`.
    Tcp(SocketAddr),
    /// `unix:PATH`.
    Unix(PathBuf),
}

/// Parse `tcp:IP[:PORT]` or `unix:PATH`.
pub fn parse_target(s: &str) -> Result<Target, String> {
    let bad = |why: &str| format!("controller: '{s}' {why}");
    if let Some(path) = s.strip_prefix("unix:") {
        if !path.starts_with('/') {
            return Err(bad("needs an absolute path (unix:/PATH)"));
        }
        return Ok(Target::Unix(PathBuf::from(path)));
    }
    let rest = s
        .strip_prefix("tcp:")
        .ok_or_else(|| bad("is not tcp:IP[:PORT] or unix:PATH"))?;
    let with_port = match rest.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V6(a)) => format!("[{a}]:{DEFAULT_PORT}"),
        Ok(a) => format!("{a}:{DEFAULT_PORT}"),
        Err(_) => rest.to_string(),
    };
    let addr: SocketAddr = with_port
        .parse()
        .map_err(|_| bad("is not tcp:IP[:PORT] (an address, not a name)"))?;
    if addr.port() == 0 {
        return Err(bad("has port 0"));
    }
    Ok(Target::Tcp(addr))
}

impl Target {
    /// Connect, waiting at most `timeout`: the reading side, the writing side (with a write
    /// timeout) and a function that shuts the connection down (to stop its reader).
    pub fn connect(&self, timeout: std::time::Duration) -> std::io::Result<Connected> {
        let wt = Some(super::hub::WRITE_TIMEOUT);
        match self {
            Target::Tcp(a) => {
                let a = a
                    .to_socket_addrs()?
                    .next()
                    .ok_or(std::io::ErrorKind::InvalidInput)?;
                let s = std::net::TcpStream::connect_timeout(&a, timeout)?;
                s.set_nodelay(true)?;
                let (w, k) = (s.try_clone()?, s.try_clone()?);
                w.set_write_timeout(wt)?;
                let shut = move || {
                    let _ = k.shutdown(std::net::Shutdown::Both);
                };
                Ok((Box::new(s), Box::new(w), Arc::new(shut)))
            }
            Target::Unix(p) => {
                let s = std::os::unix::net::UnixStream::connect(p)?;
                let (w, k) = (s.try_clone()?, s.try_clone()?);
                w.set_write_timeout(wt)?;
                let shut = move || {
                    let _ = k.shutdown(std::net::Shutdown::Both);
                };
                Ok((Box::new(s), Box::new(w), Arc::new(shut)))
            }
        }
    }
}

/// Parse a datapath id: 1 to 16 hex digits, `0x` optional, not 0.
pub fn parse_dpid(s: &str) -> Result<u64, String> {
    let h = s.strip_prefix("0x").unwrap_or(s);
    let bad = |why: &str| format!("datapath_id: '{s}' {why}");
    if h.is_empty() || h.len() > 16 {
        return Err(bad("wants 1 to 16 hex digits"));
    }
    let v = u64::from_str_radix(h, 16).map_err(|_| bad("is not hex"))?;
    if v == 0 {
        return Err(bad("must not be 0"));
    }
    Ok(v)
}

/// The datapath id of bridge `name` with spec `spec`: its `datapath_id`, else derived from the
/// name (`openflow::datapath_id`).
pub fn bridge_dpid(name: &str, spec: Option<&BridgeSpec>) -> u64 {
    spec.and_then(|s| s.datapath_id.as_deref())
        .and_then(|d| parse_dpid(d).ok())
        .unwrap_or_else(|| super::datapath_id(name))
}

/// Check a bridge spec's OpenFlow settings.
pub fn validate_bridge(b: &BridgeSpec) -> Result<(), String> {
    if let Some(d) = &b.datapath_id {
        parse_dpid(d)?;
    }
    if b.controller.len() > MAX_CONTROLLERS {
        return Err(format!(
            "controller: {} targets, at most {MAX_CONTROLLERS}",
            b.controller.len()
        ));
    }
    for c in &b.controller {
        parse_target(c)?;
    }
    for g in b.groups.iter().flatten() {
        crate::flow::group::parse_group(g).map_err(|e| format!("groups: '{g}': {e}"))?;
    }
    match b.fail_mode.as_deref() {
        None | Some("standalone") | Some("secure") => Ok(()),
        Some(m) => Err(format!("fail_mode: '{m}' is not standalone or secure")),
    }
}

fn ask(w: &WorkerHandle, cmd: Command) -> Result<Value, CtlError> {
    w.call(cmd).map_err(CtlError::new)
}

fn set(
    w: &WorkerHandle,
    bridge: &str,
    datapath_id: Option<Option<String>>,
    controller: Option<Vec<String>>,
    fail_mode: Option<Option<String>>,
) -> Result<Value, CtlError> {
    ask(
        w,
        Command::Openflow(OfCommand::Set {
            bridge: bridge.to_string(),
            datapath_id,
            controller,
            fail_mode,
        }),
    )
}

/// `set-br BRIDGE datapath_id=0xHEX|default`.
pub fn set_datapath_id(w: &WorkerHandle, bridge: &str, v: &str) -> Result<Value, CtlError> {
    let d = if v == "default" {
        None
    } else {
        Some(format!("{:#018x}", parse_dpid(v).map_err(CtlError::new)?))
    };
    set(w, bridge, Some(d), None, None)
}

/// The bridge's `show` entry.
fn bridge_show(w: &WorkerHandle, bridge: &str) -> Result<Value, CtlError> {
    let v = ask(w, Command::Show)?;
    v["bridges"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|b| b["name"] == bridge)
        .cloned()
        .ok_or_else(|| CtlError::new(format!("bridge: no bridge named '{bridge}'")))
}

/// The OpenFlow line of a bridge in `show`'s text: `    openflow: datapath_id=...,
/// controller tcp:IP:PORT (connected), fail_mode=secure, fail-open` (controllers, fail mode and
/// fail-open only when there are some).
pub fn show_line(b: &Value) -> String {
    let mut s = format!(
        "    openflow: datapath_id=0x{}",
        b["datapath_id"].as_str().unwrap_or("")
    );
    let connected = &b["controller_connected"];
    for c in b["controller"].as_array().into_iter().flatten() {
        let up = connected.as_array().is_some_and(|v| v.contains(c));
        let state = if up { "connected" } else { "not connected" };
        s.push_str(&format!(
            ", controller {} ({state})",
            c.as_str().unwrap_or("")
        ));
    }
    if let Some(m) = b["fail_mode"].as_str() {
        s.push_str(&format!(", fail_mode={m}"));
    }
    if b["fail_open"] == true {
        s.push_str(", fail-open (learning switch)");
    }
    s.push('\n');
    s
}

/// Register the commands (see the module documentation).
pub fn register(reg: &mut Registry, worker: Arc<WorkerHandle>) {
    let w = worker.clone();
    reg.register(
        "set-controller",
        "set-controller BRIDGE tcp:IP[:PORT]|unix:PATH...",
        2,
        1 + MAX_CONTROLLERS,
        move |a| {
            let targets: Vec<String> = a[1..].to_vec();
            for t in &targets {
                parse_target(t).map_err(CtlError::new)?;
            }
            let v = set(&w, &a[0], None, Some(targets), None)?;
            Ok(Reply::new(String::new(), v))
        },
    );
    let w = worker.clone();
    reg.register("del-controller", "del-controller BRIDGE", 1, 1, move |a| {
        let v = set(&w, &a[0], None, Some(Vec::new()), None)?;
        Ok(Reply::new(String::new(), v))
    });
    let w = worker.clone();
    reg.register("get-controller", "get-controller BRIDGE", 1, 1, move |a| {
        let b = bridge_show(&w, &a[0])?;
        let connected: Vec<&str> = b["controller_connected"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        let mut text = String::new();
        let mut list = Vec::new();
        for c in b["controller"].as_array().into_iter().flatten() {
            let c = c.as_str().unwrap_or("");
            let up = connected.contains(&c);
            text.push_str(&format!("Controller \"{c}\"\n    is_connected: {up}\n"));
            list.push(json!({"target": c, "is_connected": up}));
        }
        Ok(Reply::new(
            text,
            json!({"bridge": a[0], "controllers": list}),
        ))
    });
    let w = worker.clone();
    reg.register(
        "set-fail-mode",
        "set-fail-mode BRIDGE standalone|secure",
        2,
        2,
        move |a| {
            let m = a[1].as_str();
            if m != "standalone" && m != "secure" {
                return Err(CtlError::new(format!(
                    "fail_mode: '{m}' is not standalone or secure"
                )));
            }
            let v = set(&w, &a[0], None, None, Some(Some(m.to_string())))?;
            Ok(Reply::new(String::new(), v))
        },
    );
    let w = worker.clone();
    reg.register("del-fail-mode", "del-fail-mode BRIDGE", 1, 1, move |a| {
        let v = set(&w, &a[0], None, None, Some(None))?;
        Ok(Reply::new(String::new(), v))
    });
    let w = worker.clone();
    reg.register("get-fail-mode", "get-fail-mode BRIDGE", 1, 1, move |a| {
        let b = bridge_show(&w, &a[0])?;
        let m = b["fail_mode"].as_str().unwrap_or("");
        let text = if m.is_empty() {
            String::new()
        } else {
            format!("{m}\n")
        };
        Ok(Reply::new(
            text,
            json!({"bridge": a[0], "fail_mode": b["fail_mode"]}),
        ))
    });
    let w = worker.clone();
    for (name, usage, write) in [
        ("add-group", "add-group BRIDGE GROUP", EntryWrite::Add),
        ("mod-group", "mod-group BRIDGE GROUP", EntryWrite::Modify),
    ] {
        let w = w.clone();
        reg.register(name, usage, 2, 2, move |a| {
            crate::flow::group::parse_group(&a[1]).map_err(|e| CtlError::new(e.to_string()))?;
            let c = OfCommand::GroupAdd {
                bridge: a[0].clone(),
                group: a[1].clone(),
                write,
            };
            Ok(Reply::new(String::new(), ask(&w, Command::Openflow(c))?))
        });
    }
    let w = worker.clone();
    reg.register(
        "del-groups",
        "del-groups BRIDGE [group_id=N]",
        1,
        2,
        move |a| {
            let id = match a.get(1).map(|s| s.split_once('=')) {
                None => None,
                Some(Some(("group_id", v))) => Some(
                    crate::flow::group::parse_group_id(v)
                        .map_err(|e| CtlError::new(e.to_string()))?,
                ),
                Some(_) => return Err(CtlError::new(format!("'{}': want group_id=N", a[1]))),
            };
            let c = OfCommand::GroupDel {
                bridge: a[0].clone(),
                id,
            };
            Ok(Reply::new(String::new(), ask(&w, Command::Openflow(c))?))
        },
    );
    let w = worker.clone();
    reg.register("dump-groups", "dump-groups BRIDGE", 1, 1, move |a| {
        let c = OfCommand::GroupDump {
            bridge: a[0].clone(),
        };
        let v = ask(&w, Command::Openflow(c))?;
        let text: String = v["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|g| format!(" {}\n", g.as_str().unwrap_or("")))
            .collect();
        Ok(Reply::new(text, v))
    });
    let w = worker.clone();
    reg.register(
        "dump-group-stats",
        "dump-group-stats BRIDGE",
        1,
        1,
        move |a| {
            let c = OfCommand::GroupStats {
                bridge: a[0].clone(),
            };
            let v = ask(&w, Command::Openflow(c))?;
            let mut text = String::new();
            for g in v["stats"].as_array().into_iter().flatten() {
                let buckets: Vec<String> = g["buckets"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .enumerate()
                    .map(|(i, b)| format!("bucket{i}:packet_count={},byte_count={}", b[0], b[1]))
                    .collect();
                text.push_str(&format!(
                    " group_id={},duration={},ref_count={},packet_count={},byte_count={}{}{}\n",
                    g["group_id"],
                    crate::flow::Seconds(g["duration_ms"].as_u64().unwrap_or(0)),
                    g["ref_count"],
                    g["packet_count"],
                    g["byte_count"],
                    if buckets.is_empty() { "" } else { ":" },
                    buckets.join(",")
                ));
            }
            Ok(Reply::new(text, v))
        },
    );
    let w = worker;
    reg.register(
        "controller-state",
        "controller-state BRIDGE fail_open=on|off [TARGET...] (internal: the OpenFlow manager's report)",
        2,
        1 + MAX_CONTROLLERS,
        move |a| {
            let fail_open = match a[1].as_str() {
                "fail_open=on" => true,
                "fail_open=off" => false,
                x => {
                    return Err(CtlError::new(format!(
                        "fail_open: '{x}' is not fail_open=on|off"
                    )));
                }
            };
            let v = ask(
                &w,
                Command::Openflow(OfCommand::ControllerState {
                    bridge: a[0].clone(),
                    connected: a[2..].to_vec(),
                    fail_open,
                }),
            )?;
            Ok(Reply::new(String::new(), v))
        },
    );
    reg.set_read_only(&[
        "get-controller",
        "get-fail-mode",
        "controller-state",
        "dump-groups",
    ]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_and_ids() {
        assert_eq!(
            parse_target("tcp:127.0.0.1").unwrap(),
            Target::Tcp("127.0.0.1:6653".parse().unwrap())
        );
        assert_eq!(
            parse_target("tcp:127.0.0.1:6633").unwrap(),
            Target::Tcp("127.0.0.1:6633".parse().unwrap())
        );
        assert!(
            parse_target("ssl:1.2.3.4:6653")
                .unwrap_err()
                .contains("'ssl:1.2.3.4:6653'")
        );
        assert!(parse_target("tcp:host:1").is_err());
        assert!(parse_target("unix:rel").is_err());
        assert_eq!(parse_dpid("0x00000000000000a1"), Ok(0xa1));
        assert_eq!(parse_dpid("a1"), Ok(0xa1));
        assert!(parse_dpid("0x").unwrap_err().contains("datapath_id"));
        assert!(parse_dpid("0").is_err());
        assert!(parse_dpid("12345678901234567").is_err());
        let mut b = BridgeSpec::new("br0");
        b.fail_mode = Some("open".into());
        assert!(validate_bridge(&b).unwrap_err().contains("fail_mode"));
        b.fail_mode = Some("secure".into());
        b.datapath_id = Some("0x2a".into());
        assert_eq!(bridge_dpid("br0", Some(&b)), 0x2a);
        assert_eq!(
            bridge_dpid("br0", None),
            crate::openflow::datapath_id("br0")
        );
    }
}
