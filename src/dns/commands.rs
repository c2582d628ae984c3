//! The DNS control commands: `dns-add`, `dns-del`, `dns-show` (see the README's "DNS by name").
//!
//! `dns-add BRIDGE NAME IP [ALIAS...]` registers (or re-registers: the name follows) one name
//! with its aliases; `dns-del BRIDGE NAME [IP]` removes it (with IP: only while it still has that
//! address; removing a name that is not there is not an error); `dns-show [BRIDGE]` lists the
//! names and, with the service running, its upstream and counters. Errors name the field.

use std::fmt::Write as _;
use std::sync::Arc;

use serde_json::Value;

use super::DnsSpec;
use super::service::DnsService;
use crate::control::registry::{CtlError, Registry, Reply};
use crate::worker::{Command, DnsCmd, WorkerHandle};

/// Register the DNS commands; `service` (None when not running) adds its status to `dns-show`.
pub fn register(reg: &mut Registry, worker: Arc<WorkerHandle>, service: Option<Arc<DnsService>>) {
    let w = worker.clone();
    reg.register(
        "dns-add",
        "dns-add BRIDGE NAME IP [ALIAS...]",
        3,
        3 + super::registry::MAX_ALIASES,
        move |a| {
            let spec = DnsSpec::from_args(a).map_err(CtlError::new)?;
            let v = ask(&w, DnsCmd::Add(spec))?;
            let text = match (v["replaced"].as_str(), v["name"].as_str(), v["ip"].as_str()) {
                (Some(old), Some(name), Some(ip)) => format!("{name} now {ip} (was {old})\n"),
                _ => String::new(),
            };
            Ok(Reply::new(text, v))
        },
    );
    let w = worker.clone();
    reg.register("dns-del", "dns-del BRIDGE NAME [IP]", 2, 3, move |a| {
        let ip = match a.get(2) {
            Some(s) => Some(
                s.parse()
                    .map_err(|_| CtlError::new(format!("IP: '{s}' is not an IPv4 address")))?,
            ),
            None => None,
        };
        let cmd = DnsCmd::Del {
            bridge: a[0].clone(),
            name: a[1].clone(),
            ip,
        };
        Ok(Reply::new(String::new(), ask(&w, cmd)?))
    });
    let w = worker;
    reg.register("dns-show", "dns-show [BRIDGE]", 0, 1, move |a| {
        let mut v = ask(&w, DnsCmd::Show(a.first().cloned()))?;
        if let Some(s) = &service {
            v["service"] = serde_json::to_value(s.status()).unwrap_or(Value::Null);
        }
        Ok(Reply::new(render(&v), v))
    });
    reg.set_read_only(&["dns-show"]);
}

fn ask(w: &WorkerHandle, c: DnsCmd) -> Result<Value, CtlError> {
    w.call(Command::Dns(c)).map_err(CtlError::new)
}

fn render(v: &Value) -> String {
    let mut s = String::new();
    for r in v["records"].as_array().into_iter().flatten() {
        let aliases: Vec<&str> = r["aliases"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        let _ = write!(
            s,
            "{} {} {}",
            r["bridge"].as_str().unwrap_or(""),
            r["name"].as_str().unwrap_or(""),
            r["ip"].as_str().unwrap_or("")
        );
        if !aliases.is_empty() {
            let _ = write!(s, " aliases={}", aliases.join(","));
        }
        s.push('\n');
    }
    let svc = &v["service"];
    if let Some(up) = svc["upstream"].as_str() {
        let c = &svc["counters"];
        // With several upstreams: the one new queries go to (after any that did not answer).
        let preferred = match svc["preferred"].as_str() {
            Some(p) if up.contains(',') => format!(" (asking {p})"),
            _ => String::new(),
        };
        let _ = writeln!(
            s,
            "service: upstream {up}{preferred}, {} queries, {} local, {} forwarded, {} retried, \
             {} servfail, {} malformed",
            c["queries"],
            c["answered_local"],
            c["forwarded"],
            c["retried"],
            c["servfail"],
            c["malformed"]
        );
    } else {
        s.push_str("service: not running\n");
    }
    s
}
