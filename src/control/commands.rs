//! The daemon's commands: each parses its arguments, asks the worker, and renders the answer as
//! text for people (the JSON `data` is the worker's answer, for scripts).
//!
//! Names follow ovs-vsctl / ovs-appctl where they overlap (`add-br`, `del-br`, `add-port`,
//! `del-port`, `show`, `fdb/show` is `fdb-show`).

use std::fmt::Write as _;
use std::sync::Arc;

use serde_json::Value;

use super::registry::{CtlError, Registry, Reply, UNLIMITED};
use crate::config::{BridgeSpec, NatSpec, PortSpec, RouteSpec, on_off, parse_gateway};
use crate::worker::{Command, WorkerHandle};

/// `field=v` as a number, or an error naming the field.
fn number<T: std::str::FromStr>(field: &str, v: &str) -> Result<T, CtlError> {
    v.trim()
        .parse()
        .map_err(|_| CtlError::new(format!("{field}: '{v}' is not a valid number")))
}

/// Register every datapath command on `reg`, answered by `worker`.
pub fn register(reg: &mut Registry, worker: Arc<WorkerHandle>) {
    let w = worker.clone();
    reg.register("show", "show [BRIDGE]", 0, 1, move |a| {
        let mut v = ask(&w, Command::Show)?;
        // `show BRIDGE` (as ovs-ofctl show BRIDGE): that bridge alone.
        if let Some(name) = a.first() {
            let b = bridge_of(&v, |b| b["name"] == name.as_str())
                .cloned()
                .ok_or_else(|| CtlError::new(format!("BRIDGE: no bridge named '{name}'")))?;
            v["bridges"] = Value::Array(vec![b]);
        }
        v["mirrors"] = crate::observe::commands::mirrors_json(&w);
        if let (Some(name), Some(list)) = (a.first(), v["mirrors"].as_array_mut()) {
            list.retain(|m| m["bridge"] == name.as_str());
        }
        let mut text = render_show(&v) + &crate::observe::commands::render_mirrors(&v["mirrors"]);
        if let Some(line) = crate::etcd::show_line() {
            v["overlay"] = Value::String(line.trim_end().to_string());
            text += &line;
        }
        Ok(Reply::new(text, v))
    });
    let w = worker.clone();
    reg.register(
        "add-br",
        "add-br [--may-exist] BRIDGE [fdb_capacity=N] [aging=SECONDS] [gateway=A.B.C.D/LEN] [gateway_mac=MAC] [isolated=on|off] [icc=on|off] [rp_filter=strict|loose|off] [datapath_id=0xHEX]",
        1,
        10,
        move |a| {
            let (may_exist, a) = flag(a, "--may-exist")?;
            if a.is_empty() {
                return Err(CtlError::new("usage: add-br [--may-exist] BRIDGE ...".to_string()));
            }
            if may_exist && bridge_of(&ask(&w, Command::Show)?, |b| b["name"] == a[0]).is_some() {
                return Ok(Reply::new(String::new(), serde_json::json!({"exists": a[0]})));
            }
            let spec = BridgeSpec::from_args(&a[0], &a[1..]).map_err(CtlError::new)?;
            let v = ask(&w, Command::AddBridge(spec))?;
            Ok(Reply::new(String::new(), v))
        },
    );
    let w = worker.clone();
    reg.register("del-br", "del-br [--if-exists] BRIDGE", 1, 2, move |a| {
        let (if_exists, a) = flag(a, "--if-exists")?;
        if a.len() != 1 {
            return Err(CtlError::new(
                "usage: del-br [--if-exists] BRIDGE".to_string(),
            ));
        }
        if if_exists && bridge_of(&ask(&w, Command::Show)?, |b| b["name"] == a[0]).is_none() {
            return Ok(Reply::new(
                String::new(),
                serde_json::json!({"absent": a[0]}),
            ));
        }
        let v = ask(&w, Command::DelBridge(a[0].clone()))?;
        let text = stale_nat_note(&v, "its subnet");
        Ok(Reply::new(text, v))
    });
    let w = worker.clone();
    reg.register(
        "add-port",
        "add-port [--may-exist] BRIDGE PORT [type=afxdp|afpacket|tap|internal|vxlan|patch peer=PORT] [vlan=N (tag=N) | trunks=N,M,...] [vlan_mode=access|trunk|native-untagged|native-tagged] [xdp_mode=auto|native|generic] [mtu=N] [ofport_request=N] [mac_limit=N] [rate_rx=KBPS[/BURST]] [rate_tx=KBPS[/BURST]] [flood_rate=N[/BURST]|off] [rxq_affinity=QUEUE:CORE,...] [vni=N local_ip=A remote_ip=B[,C...] dst_port=N learning=on|off ttl=N df=on|off]",
        2,
        15,
        move |a| {
            let (may_exist, a) = flag(a, "--may-exist")?;
            if a.len() < 2 {
                return Err(CtlError::new("usage: add-port [--may-exist] BRIDGE PORT ...".to_string()));
            }
            // As ovs-vsctl: a port of that name in that bridge is fine, in another an error.
            if may_exist && port_in_bridge(&ask(&w, Command::Show)?, &a[0], &a[1]).is_ok() {
                return Ok(Reply::new(String::new(), serde_json::json!({"exists": a[1]})));
            }
            let spec = PortSpec::from_args(&a[1], &a[2..]).map_err(CtlError::new)?;
            super::rxq::check_queues(&spec.name, spec.rxq_affinity.as_deref())?;
            let v = ask(
                &w,
                Command::AddPort {
                    bridge: a[0].clone(),
                    spec,
                },
            )?;
            let text = v["details"].as_str().unwrap_or_default().to_string();
            Ok(Reply::new(text, v))
        },
    );
    let w = worker.clone();
    reg.register(
        "del-port",
        "del-port [--if-exists] [BRIDGE] PORT",
        1,
        3,
        move |a| {
            let (if_exists, a) = flag(a, "--if-exists")?;
            let a = a.as_slice();
            if a.is_empty() || a.len() > 2 {
                return Err(CtlError::new(
                    "usage: del-port [--if-exists] [BRIDGE] PORT".to_string(),
                ));
            }
            if if_exists {
                let show = ask(&w, Command::Show)?;
                let port = &a[a.len() - 1];
                let found = match a {
                    [bridge, _] => port_in_bridge(&show, bridge, port).is_ok(),
                    _ => bridge_of(&show, |b| holds(b, port)).is_some(),
                };
                if !found {
                    return Ok(Reply::new(
                        String::new(),
                        serde_json::json!({"absent": port}),
                    ));
                }
            }
            if let [bridge, port] = a {
                // As ovs-vsctl: a bridge named is checked, so a typo removes nothing.
                port_in_bridge(&ask(&w, Command::Show)?, bridge, port)?;
            }
            let v = ask(&w, Command::DelPort(a[a.len() - 1].clone()))?;
            Ok(Reply::new(String::new(), v))
        },
    );
    let w = worker.clone();
    reg.register("list-br", "list-br", 0, 0, move |_| {
        let names = sorted_names(ask(&w, Command::Show)?["bridges"].as_array());
        Ok(Reply::new(
            lines(&names),
            serde_json::json!({ "bridges": names }),
        ))
    });
    let w = worker.clone();
    reg.register("list-ports", "list-ports BRIDGE", 1, 1, move |a| {
        let show = ask(&w, Command::Show)?;
        let Some(b) = bridge_of(&show, |b| b["name"] == a[0].as_str()) else {
            return Err(CtlError::new(format!("BRIDGE: no bridge named '{}'", a[0])));
        };
        let names = sorted_names(b["ports"].as_array());
        let v = serde_json::json!({ "bridge": a[0], "ports": names });
        Ok(Reply::new(lines(&names), v))
    });
    let w = worker.clone();
    reg.register("port-to-br", "port-to-br PORT", 1, 1, move |a| {
        let show = ask(&w, Command::Show)?;
        let Some(b) = bridge_of(&show, |b| holds(b, &a[0])) else {
            return Err(CtlError::new(format!("PORT: no port named '{}'", a[0])));
        };
        let name = str_of(&b["name"]).to_string();
        let v = serde_json::json!({ "port": a[0], "bridge": name });
        Ok(Reply::new(format!("{name}\n"), v))
    });
    let w = worker.clone();
    reg.register("fdb-show", "fdb-show BRIDGE", 1, 1, move |a| {
        let mut rows = fdb_rows(&w, &a[0])?;
        let key = |r: &Value| {
            (
                str_of(&r["port"]).to_string(),
                r["vlan"].as_u64(),
                str_of(&r["mac"]).to_string(),
            )
        };
        rows.sort_by_cached_key(key);
        let v = serde_json::json!({"bridge": a[0], "entries": rows});
        Ok(Reply::new(render_fdb(&v), v))
    });
    let w = worker.clone();
    reg.register("fdb-del", "fdb-del BRIDGE MAC [vlan=N]", 2, 3, move |a| {
        let mac: crate::wire::MacAddr = a[1]
            .parse()
            .map_err(|e: String| CtlError::new(format!("MAC: {e}")))?;
        let vlan = match a.get(2).map(|kv| kv.split_once('=')) {
            None => 0,
            Some(Some(("vlan", v))) => v
                .parse()
                .ok()
                .filter(|n| *n <= 4094)
                .ok_or_else(|| CtlError::new(format!("vlan: '{v}' (0 to 4094)")))?,
            Some(_) => {
                return Err(CtlError::new(format!("'{}': fdb-del takes vlan=N", a[2])));
            }
        };
        // The entry may be learned by any worker: look in the table they show together.
        let text = mac.to_string();
        let rows = fdb_rows(&w, &a[0])?;
        let Some(row) = rows
            .iter()
            .find(|r| r["mac"] == text.as_str() && r["vlan"].as_u64() == Some(u64::from(vlan)))
        else {
            return Err(CtlError::new(format!(
                "MAC: {text} is not in bridge '{}''s FDB in VLAN {vlan}",
                a[0]
            )));
        };
        let port = str_of(&row["port"]).to_string();
        let bridge = a[0].clone();
        ask(&w, Command::FdbDel { bridge, mac, vlan })?;
        let v = serde_json::json!({"bridge": a[0], "mac": text, "vlan": vlan, "port": port});
        Ok(Reply::new(String::new(), v))
    });
    let w = worker.clone();
    reg.register(
        "fdb-add",
        "fdb-add BRIDGE MAC PORT [vlan=N] [remote_ip=ADDRESS]",
        3,
        5,
        move |a| {
            let mac = a[1]
                .parse()
                .map_err(|e: String| CtlError::new(format!("MAC: {e}")))?;
            let mut vlan = 0u16;
            let mut remote = None;
            for kv in &a[3..] {
                match kv.split_once('=') {
                    Some(("vlan", v)) => {
                        vlan = v
                            .parse()
                            .ok()
                            .filter(|n| *n <= 4094)
                            .ok_or_else(|| CtlError::new(format!("vlan: '{v}' (0 to 4094)")))?
                    }
                    Some(("remote_ip", v)) => {
                        remote = Some(
                            v.parse::<std::net::Ipv4Addr>()
                                .map_err(|_| {
                                    CtlError::new(format!(
                                        "remote_ip: '{v}' is not an IPv4 address"
                                    ))
                                })?
                                .octets(),
                        )
                    }
                    _ => {
                        return Err(CtlError::new(format!(
                            "'{kv}': fdb-add takes vlan=N and remote_ip=ADDRESS"
                        )));
                    }
                }
            }
            let v = ask(
                &w,
                Command::FdbAdd {
                    bridge: a[0].clone(),
                    mac,
                    port: a[2].clone(),
                    vlan,
                    remote,
                },
            )?;
            Ok(Reply::new(String::new(), v))
        },
    );
    let w = worker.clone();
    reg.register("fdb-flush", "fdb-flush BRIDGE [PORT]", 1, 2, move |a| {
        let v = ask(
            &w,
            Command::FdbFlush {
                bridge: a[0].clone(),
                port: a.get(1).cloned(),
            },
        )?;
        let text = format!("flushed {} entries\n", v["flushed"]);
        Ok(Reply::new(text, v))
    });
    let w = worker.clone();
    reg.register(
        "set-br",
        "set-br BRIDGE [gateway=A.B.C.D/LEN|none [gateway_mac=MAC]] [isolated=on|off] [icc=on|off] [rp_filter=strict|loose|off] [aging=SECONDS] [fdb_capacity=N] [datapath_id=0xHEX|default]",
        2,
        9,
        move |a| {
            let (mut gw, mut mac, mut isolated, mut icc) = (None, None, None, None);
            let (mut rp_filter, mut dpid) = (None, None);
            let (mut aging, mut fdb_capacity) = (None, None);
            for kv in &a[1..] {
                match kv.split_once('=') {
                    Some((k @ "aging", v)) => aging = Some(number(k, v)?),
                    Some((k @ "fdb_capacity", v)) => fdb_capacity = Some(number(k, v)?),
                    Some(("datapath_id", v)) => dpid = Some(v.to_string()),
                    Some(("gateway", v)) => gw = Some(v.to_string()),
                    Some(("gateway_mac", v)) => mac = Some(v.to_string()),
                    Some((k @ "isolated", v)) => isolated = Some(on_off(k, v).map_err(CtlError::new)?),
                    Some((k @ "icc", v)) => icc = Some(on_off(k, v).map_err(CtlError::new)?),
                    Some((k @ "rp_filter", v)) => {
                        rp_filter = Some(crate::route::RpFilter::parse(k, v).map_err(CtlError::new)?)
                    }
                    _ => {
                        return Err(CtlError::new(format!(
                            "'{kv}': set-br takes gateway=A.B.C.D/LEN|none [gateway_mac=MAC] isolated=on|off icc=on|off rp_filter=strict|loose|off aging=SECONDS fdb_capacity=N datapath_id=0xHEX|default"
                        )));
                    }
                }
            }
            if gw.is_none() && mac.is_some() {
                return Err(CtlError::new("gateway_mac: needs gateway= too"));
            }
            let gateway = match gw.as_deref() {
                None => None,
                // A MAC for no gateway was dropped without a word (found trying uvs as a
                // new user).
                Some("none") if mac.is_some() => {
                    return Err(CtlError::new("gateway_mac: there is no gateway with gateway=none"));
                }
                Some("none") => Some(None),
                Some(g) => Some(parse_gateway(&a[0], Some(g), mac.as_deref()).map_err(CtlError::new)?),
            };
            let mut v = Value::Null;
            if let Some(d) = dpid {
                v = crate::openflow::control::set_datapath_id(&w, &a[0], &d)?;
            }
            if isolated.is_some()
                || icc.is_some()
                || rp_filter.is_some()
                || aging.is_some()
                || fdb_capacity.is_some()
            {
                v = ask(
                    &w,
                    Command::SetBridgeOptions {
                        bridge: a[0].clone(),
                        isolated,
                        icc,
                        rp_filter,
                        aging,
                        fdb_capacity,
                    },
                )?;
            }
            let mut text = String::new();
            if let Some(gateway) = gateway {
                v = ask(
                    &w,
                    Command::SetGateway {
                        bridge: a[0].clone(),
                        gateway,
                    },
                )?;
                text = stale_nat_note(&v, "the old subnet");
            }
            Ok(Reply::new(text, v))
        },
    );
    let w = worker.clone();
    reg.register(
        "route-add",
        "route-add PREFIX via ADDRESS",
        3,
        3,
        move |a| {
            let spec = RouteSpec::from_args(a).map_err(CtlError::new)?;
            let v = ask(&w, Command::RouteAdd(spec))?;
            Ok(Reply::new(String::new(), v))
        },
    );
    let w = worker.clone();
    reg.register("route-del", "route-del PREFIX", 1, 1, move |a| {
        let v = ask(&w, Command::RouteDel(a[0].clone()))?;
        Ok(Reply::new(String::new(), v))
    });
    let w = worker.clone();
    reg.register("route-show", "route-show", 0, 0, move |_| {
        let v = ask(&w, Command::RouteShow)?;
        let mut s = String::new();
        for r in v["routes"].as_array().into_iter().flatten() {
            let _ = match r["type"].as_str() {
                Some("static") => writeln!(
                    s,
                    "{:<20} via {:<15} bridge {}",
                    str_of(&r["prefix"]),
                    str_of(&r["via"]),
                    str_of(&r["bridge"])
                ),
                _ => writeln!(
                    s,
                    "{:<20} connected       bridge {}",
                    str_of(&r["prefix"]),
                    str_of(&r["bridge"])
                ),
            };
        }
        Ok(Reply::new(s, v))
    });
    let w = worker.clone();
    reg.register("neigh-show", "neigh-show", 0, 0, move |_| {
        // Page by page (bounded work per worker request), sorted here.
        let (mut rows, mut from) = (Vec::new(), Some(0u64));
        while let Some(f) = from {
            let mut v = ask(&w, Command::NeighShow { from: f })?;
            from = v["next"].as_u64();
            if let Value::Array(page) = v["neighbours"].take() {
                rows.extend(page);
            }
        }
        let key = |r: &Value| {
            let ip: std::net::Ipv4Addr = r["ip"]
                .as_str()
                .unwrap_or("0.0.0.0")
                .parse()
                .unwrap_or(std::net::Ipv4Addr::UNSPECIFIED);
            (str_of(&r["bridge"]).to_string(), ip)
        };
        rows.sort_by_key(key);
        let v = serde_json::json!({"neighbours": rows});
        let mut s = String::from(
            " bridge           address          MAC                state       age queued\n",
        );
        for r in v["neighbours"].as_array().into_iter().flatten() {
            let _ = writeln!(
                s,
                " {:<16} {:<16} {:<18} {:<11} {:>3} {}",
                str_of(&r["bridge"]),
                str_of(&r["ip"]),
                r["mac"].as_str().unwrap_or("-"),
                str_of(&r["state"]),
                r["age"],
                r["queued"]
            );
        }
        Ok(Reply::new(s, v))
    });
    let w = worker.clone();
    reg.register("neigh-flush", "neigh-flush [BRIDGE]", 0, 1, move |a| {
        let v = ask(&w, Command::NeighFlush(a.first().cloned()))?;
        Ok(Reply::new(
            format!("flushed {} neighbours\n", v["flushed"]),
            v,
        ))
    });
    let w = worker.clone();
    reg.register(
        "nat-add",
        "nat-add masquerade src=PREFIX out=BRIDGE | snat src=PREFIX out=BRIDGE to=ADDRESS | dnat in=BRIDGE proto=tcp|udp [port=N|0] to=ADDRESS:PORT",
        3,
        5,
        move |a| {
            let spec = NatSpec::from_args(a).map_err(CtlError::new)?;
            let v = ask(&w, Command::NatAdd(spec))?;
            Ok(Reply::new(format!("rule #{} {}\n", v["index"], str_of(&v["rule"])), v))
        },
    );
    let w = worker.clone();
    reg.register("set-nat", "set-nat port_range=A-B", 1, 1, move |a| {
        let r = match a[0].split_once('=') {
            Some(("port_range", v)) => crate::nat::parse_port_range("port_range", v),
            _ => Err(format!("'{}': set-nat takes port_range=A-B", a[0])),
        }
        .map_err(CtlError::new)?;
        let v = ask(&w, Command::SetNatPorts(r))?;
        Ok(Reply::new(
            format!("port=0 picks from {}\n", str_of(&v["port_range"])),
            v,
        ))
    });
    let w = worker.clone();
    reg.register(
        "nat-del",
        "nat-del INDEX | nat-del RULE (as nat-show prints it)",
        1,
        UNLIMITED,
        move |a| {
            // A rule number, or the rule's text, which the worker finds and removes in one step
            // (an index can move between a client's nat-show and its nat-del).
            let v = match a[0].trim_start_matches('#').parse::<usize>() {
                Ok(i) if a.len() == 1 => ask(&w, Command::NatDel(i))?,
                _ => ask(&w, Command::NatDelRule(a.join(" ")))?,
            };
            Ok(Reply::new(String::new(), v))
        },
    );
    let w = worker.clone();
    reg.register("nat-show", "nat-show", 0, 0, move |_| {
        let v = ask(&w, Command::NatShow)?;
        let mut s = String::new();
        for r in v["rules"].as_array().into_iter().flatten() {
            let _ = writeln!(s, "#{} {}", r["index"], str_of(&r["rule"]));
        }
        let _ = writeln!(s, "port=0 picks from {}", str_of(&v["port_range"]));
        Ok(Reply::new(s, v))
    });
    let w = worker.clone();
    reg.register("ct-show", "ct-show", 0, 0, move |_| {
        // Page by page: bounded work per worker request.
        let (mut conns, mut from, mut v) = (Vec::new(), Some(0), Value::Null);
        while let Some(f) = from {
            v = ask(&w, Command::CtShow { from: f })?;
            from = v["next"].as_u64().map(|n| n as usize);
            if let Value::Array(page) = v["connections"].take() {
                conns.extend(page);
            }
        }
        let mut s = String::new();
        for c in &conns {
            let _ = writeln!(s, "{}", str_of(c));
        }
        let _ = writeln!(
            s,
            "{} connections (limit {}, {} per source)",
            conns.len(),
            v["limit"],
            v["per_source"]
        );
        let v = serde_json::json!({"count": conns.len(), "connections": conns,
            "limit": v["limit"], "per_source": v["per_source"]});
        Ok(Reply::new(s, v))
    });
    register_flows(reg, worker.clone());
    register_packet_out(reg, worker.clone());
    crate::observe::commands::register(reg, worker.clone());
    crate::openflow::control::register(reg, worker.clone());
    super::runtime::register(reg, worker.clone());
    super::rxq::register(reg, worker.clone());
    let w = worker;
    reg.register("stats", "stats", 0, 0, move |_| {
        let v = ask(&w, Command::Stats)?;
        Ok(Reply::new(render_stats(&v), v))
    });
    reg.set_read_only(&READ_ONLY);
}

/// The commands that change nothing; every other one is a change (journalled and logged).
pub const READ_ONLY: [&str; 14] = [
    "show",
    "list-br",
    "list-ports",
    "port-to-br",
    "fdb-show",
    "route-show",
    "neigh-show",
    "nat-show",
    "ct-show",
    "dump-flows",
    "dump-meters",
    "trace",
    "stats",
    "save-config",
];

/// Make `store` the journal of every change and register `save-config`, which prints the
/// running configuration in the `--config` file format, with the start-time `[etcd]` table
/// the daemon runs with (not part of the running configuration, so not in the database; a
/// saved file without it did not start the same daemon: found trying uvs as a new user).
pub fn register_store(
    reg: &mut Registry,
    store: Arc<crate::control::store::Store>,
    etcd: Option<crate::etcd::EtcdSpec>,
) {
    reg.set_journal(store.clone());
    reg.register("save-config", "save-config", 0, 0, move |_| {
        let mut c = store.running().map_err(CtlError::new)?;
        c.etcd.clone_from(&etcd);
        let text = c.to_toml().map_err(CtlError::new)?;
        let data = serde_json::to_value(&c).unwrap_or(Value::Null);
        Ok(Reply::new(text, data))
    });
    reg.set_read_only(&["save-config"]);
}

/// A note on the NAT rules a change left naming an address of a subnet that is gone (the
/// `stale_nat` rows of the answer), or nothing.
fn stale_nat_note(v: &Value, what: &str) -> String {
    let rows: Vec<&str> = v["stale_nat"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    if rows.is_empty() {
        return String::new();
    }
    format!(
        "note: NAT rules still name {what} (kept; `nat-del N` removes one): {}\n",
        rows.join("; ")
    )
}

fn ask(w: &WorkerHandle, cmd: Command) -> Result<Value, CtlError> {
    w.call(cmd).map_err(CtlError::new)
}

fn render_show(v: &Value) -> String {
    let mut s = String::new();
    for b in v["bridges"].as_array().into_iter().flatten() {
        let gw = match b["gateway"].as_str() {
            Some(g) => format!(", gateway {g} {}", str_of(&b["gateway_mac"])),
            None => String::new(),
        };
        let mut flags = String::new();
        if b["isolated"].as_bool() == Some(true) {
            flags.push_str(", isolated");
        }
        if b["icc"].as_bool() == Some(false) {
            flags.push_str(", icc=off");
        }
        if b["rp_filter"].as_str().is_some_and(|m| m != "strict") {
            let _ = write!(flags, ", rp_filter={}", str_of(&b["rp_filter"]));
        }
        let _ = writeln!(
            s,
            "bridge {} (fdb {}/{}, aging {}s{gw}{flags})",
            str_of(&b["name"]),
            b["fdb_entries"],
            b["fdb_capacity"],
            b["aging"]
        );
        s.push_str(&crate::openflow::control::show_line(b));
        for p in b["ports"].as_array().into_iter().flatten() {
            // The port's own details repeat the MTU when it is the netdev's: print it once.
            let mtu = format!("mtu={}", p["mtu"]);
            let details: Vec<&str> = str_of(&p["details"])
                .split(' ')
                .filter(|t| *t != mtu)
                .collect();
            let _ = writeln!(
                s,
                "    port {}: ofport={} type={} {} {mtu} {}",
                str_of(&p["name"]),
                p["ofport"],
                str_of(&p["type"]),
                str_of(&p["vlan"]),
                details.join(" ")
            );
        }
    }
    let w = &v["worker"];
    let core = if w["core"].is_null() {
        "unpinned".to_string()
    } else {
        format!("core {}", w["core"])
    };
    let _ = write!(
        s,
        "worker: {core}, frames {} ({} free)",
        w["frames"], w["frames_free"]
    );
    let b = &w["budget"];
    if b.is_object() {
        let _ = write!(
            s,
            ", budget: reserve {} committed {} lent {} available {}",
            b["reserve"], b["committed"], b["lent"], b["available"]
        );
    }
    s.push('\n');
    // Several workers: which rx queues each polls (`rxq-show` has the counts).
    for (i, w) in v["workers"].as_array().into_iter().flatten().enumerate() {
        let rxqs: Vec<String> = w["rxqs"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| {
                let qs: Vec<String> = p["queues"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|q| q["queue"].to_string())
                    .collect();
                let qs = if qs.is_empty() {
                    "-".to_string()
                } else {
                    qs.join(",")
                };
                format!("{}:{qs}", str_of(&p["port"]))
            })
            .collect();
        if !rxqs.is_empty() {
            let _ = writeln!(s, "worker {i} rx queues: {}", rxqs.join(" "));
        }
    }
    s
}

fn render_fdb(v: &Value) -> String {
    let mut s = String::from(" port             VLAN  MAC                Age     remote VTEP\n");
    for e in v["entries"].as_array().into_iter().flatten() {
        let age = if e["static"].as_bool() == Some(true) {
            "static".to_string()
        } else {
            e["age"].to_string()
        };
        let _ = writeln!(
            s,
            " {:<16} {:>4}  {}  {:<7} {}",
            str_of(&e["port"]),
            e["vlan"].as_u64().unwrap_or(0),
            str_of(&e["mac"]),
            age,
            str_of(&e["remote"])
        );
    }
    s
}

fn render_stats(v: &Value) -> String {
    let mut s = String::new();
    if let Some(ports) = v["ports"].as_object() {
        for (name, p) in ports {
            let _ = writeln!(
                s,
                "port {name} (bridge {}, state {}, frames {}): rx {} pkts {} bytes, tx {} pkts {} bytes, csum completed {}",
                str_of(&p["bridge"]),
                str_of(&p["state"]),
                p["frames"],
                p["rx_packets"],
                p["rx_bytes"],
                p["tx_packets"],
                p["tx_bytes"],
                p["csum_completed"]
            );
            if let Some(d) = p["drops"].as_object().filter(|d| !d.is_empty()) {
                let list: Vec<String> = d.iter().map(|(k, n)| format!("{k}={n}")).collect();
                let _ = writeln!(s, "    drops: {}", list.join(" "));
            }
            // (`--json` has every kernel counter the port has, zeros too: series from the
            // start for the metrics; the text lists those that moved.)
            let moved: Vec<String> = p["kernel"]
                .as_object()
                .into_iter()
                .flatten()
                .filter(|(_, n)| n.as_u64() != Some(0))
                .map(|(k, n)| format!("{k}={n}"))
                .collect();
            if !moved.is_empty() {
                let list = moved;
                let _ = writeln!(
                    s,
                    "    lost before uvs (kernel counters): {}",
                    list.join(" ")
                );
            }
        }
    }
    if let Some(bridges) = v["bridges"].as_object() {
        for (name, b) in bridges {
            let _ = writeln!(
                s,
                "bridge {name}: fdb {} entries, learned {}, moves {}, fdb-full {}, replaced {}, aged {}, flooded {}",
                b["fdb_entries"],
                b["learned"],
                b["moves"],
                b["fdb_full"],
                b["fdb_replaced"],
                b["aged"],
                b["flooded"]
            );
        }
    }
    let r = &v["router"];
    if r.is_object() {
        let _ = writeln!(
            s,
            "router: routed {}, arp replies {}, arp requests {}, arp queued {}, echo replies {}, \
             icmp errors {} (rate-limited {}), tcp resets {}, fragmented {} (into {})",
            r["routed"],
            r["arp_replies"],
            r["arp_requests"],
            r["arp_queued"],
            r["echo_replies"],
            r["icmp_errors"],
            r["icmp_rate_limited"],
            r["resets"],
            r["fragmented"],
            r["fragments"]
        );
        let n = &v["neigh"];
        if n.is_object() {
            let _ = writeln!(
                s,
                "neighbours: evicted {}, full {}, arp rate-limited {}",
                n["evicted"], n["full"], n["rate_limited"]
            );
        }
    }
    let ra = &v["reassembly"];
    if ra["reassembled"].as_u64().unwrap_or(0)
        + ra["timed_out"].as_u64().unwrap_or(0)
        + ra["refused"].as_u64().unwrap_or(0)
        > 0
    {
        let _ = writeln!(
            s,
            "reassembly: datagrams reassembled {}, timed out {}, refused {}",
            ra["reassembled"], ra["timed_out"], ra["refused"]
        );
    }
    // Several workers list each one (`workers`); one worker has `worker` alone.
    let workers = match v["workers"].as_array() {
        Some(all) => all.clone(),
        None => vec![v["worker"].clone()],
    };
    for (i, w) in workers.iter().enumerate() {
        let cpu = w["cpu_ns"].as_f64().unwrap_or(0.0);
        let wall = w["wall_ns"].as_f64().unwrap_or(1.0).max(1.0);
        let which = if workers.len() > 1 {
            format!("worker {i}")
        } else {
            "worker".to_string()
        };
        let _ = writeln!(
            s,
            "{which}: rx {} tx {} frames, {} iterations ({} busy), {} sleeps, cpu {:.1}% of one \
             core since start ({:.1}% forwarding)",
            w["rx_packets"],
            w["tx_packets"],
            w["iterations"],
            w["busy_iterations"],
            w["sleeps"],
            100.0 * cpu / wall,
            100.0 * w["busy_ns"].as_f64().unwrap_or(0.0) / wall
        );
        let b = &w["budget"];
        if b.is_object() {
            let _ = writeln!(
                s,
                "    frames {} ({} in use), budget: reserve {} committed {} lent {} available {}",
                w["frames"],
                w["frames_in_use"],
                b["reserve"],
                b["committed"],
                b["lent"],
                b["available"]
            );
        }
    }
    let e = &v["events"];
    let _ = writeln!(
        s,
        "openflow events: {} sent, {} dropped (controllers lagging), {} with no listener",
        e["sent"], e["dropped"], e["no_listener"]
    );
    s
}

fn str_of(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}

/// `packet-out BRIDGE PORT[,PORT...] HEX`: send a frame out of ports (OpenFlow PACKET_OUT uses
/// it). It changes no configuration, so it is not journalled.
fn register_packet_out(reg: &mut Registry, worker: Arc<WorkerHandle>) {
    let w = worker.clone();
    reg.register(
        "packet-out",
        "packet-out BRIDGE PORT[,PORT...] HEX (OpenFlow port numbers; the frame in hex)",
        3,
        3,
        move |a| {
            let outputs = a[1]
                .split(',')
                .map(|p| p.parse::<u16>())
                .collect::<Result<Vec<u16>, _>>()
                .map_err(|_| {
                    CtlError::new(format!("PORT: '{}' is not a list of port numbers", a[1]))
                })?;
            let hex = a[2].as_bytes();
            if hex.len() % 2 != 0 || !hex.iter().all(u8::is_ascii_hexdigit) {
                return Err(CtlError::new("HEX: not an even number of hex digits"));
            }
            let frame = hex
                .chunks(2)
                .map(|c| {
                    u8::from_str_radix(std::str::from_utf8(c).unwrap_or("00"), 16).unwrap_or(0)
                })
                .collect();
            let v = ask(
                &worker,
                Command::PacketOut {
                    bridge: a[0].clone(),
                    outputs,
                    frame,
                },
            )?;
            Ok(Reply::new(String::new(), v))
        },
    );
    reg.register(
        "mod-port",
        "mod-port BRIDGE PORT ACTION... (ovs-ofctl's: up, down, receive, no-receive, forward, no-forward, flood, no-flood, packet-in, no-packet-in; PORT a name, a number or LOCAL)",
        3,
        UNLIMITED,
        move |a| {
            let (mut bits, mut mask) = (0u32, 0u32);
            for word in &a[2..] {
                let (b, m) = match word.strip_prefix("config=") {
                    // OFPT_PORT_MOD's bits: config=BITS/MASK (hex or decimal).
                    Some(v) => {
                        let n = |s: &str| {
                            crate::flow::parse_num::<u32>("config", s, u64::from(u32::MAX))
                                .map_err(|e| CtlError::new(e.to_string()))
                        };
                        let (b, m) = v.split_once('/').unwrap_or((v, "0xffffffff"));
                        (n(b)?, n(m)?)
                    }
                    None => crate::port_admin::PortConfig::parse_word(word)
                        .map_err(|e| CtlError::new(format!("ACTION: {e}")))?,
                };
                bits = (bits & !m) | (b & m);
                mask |= m;
            }
            let v = ask(
                &w,
                Command::ModPort {
                    bridge: a[0].clone(),
                    port: a[1].clone(),
                    bits,
                    mask,
                },
            )?;
            let words = v["config"].as_array().map_or(String::new(), |c| {
                c.iter().filter_map(|x| x.as_str()).collect::<Vec<_>>().join(",")
            });
            let text = format!(
                "{}: {}\n",
                v["port"].as_str().unwrap_or("?"),
                if words.is_empty() { "up" } else { &words }
            );
            Ok(Reply::new(text, v))
        },
    );
    // Not configuration (as in OVS): nothing to write to the database.
    reg.set_read_only(&["packet-out", "mod-port"]);
}

/// The ovs-ofctl-like flow commands.
fn register_flows(reg: &mut Registry, worker: Arc<WorkerHandle>) {
    use crate::flow::{parse_filter, parse_flow};
    let w = worker.clone();
    reg.register("add-flow", "add-flow BRIDGE FLOW", 2, UNLIMITED, move |a| {
        let text = a[1..].join(" ");
        let flow = parse_flow(&text).map_err(|e| CtlError::new(e.to_string()))?;
        let v = ask(
            &w,
            Command::FlowAdd {
                bridge: a[0].clone(),
                flows: vec![flow],
            },
        )?;
        Ok(Reply::new(String::new(), v))
    });
    let w = worker.clone();
    // The flows come as arguments: `uvs ctl add-flows BRIDGE FILE` reads FILE itself and sends
    // its lines (the daemon never opens a path a client names).
    reg.register(
        "add-flows",
        "add-flows BRIDGE FLOW... (uvs ctl add-flows BRIDGE FILE|- reads the file)",
        2,
        UNLIMITED,
        move |a| {
            let mut flows = Vec::with_capacity(a.len() - 1);
            for (i, line) in a[1..].iter().enumerate() {
                let f =
                    parse_flow(line).map_err(|e| CtlError::new(format!("flow {}: {e}", i + 1)))?;
                flows.push(f);
            }
            let v = ask(
                &w,
                Command::FlowAdd {
                    bridge: a[0].clone(),
                    flows,
                },
            )?;
            let text = format!("added {}, replaced {}\n", v["added"], v["replaced"]);
            Ok(Reply::new(text, v))
        },
    );
    let w = worker.clone();
    reg.register(
        "del-flows",
        "del-flows [--strict] BRIDGE [MATCH]",
        1,
        UNLIMITED,
        move |a| {
            // `--strict` anywhere (ovs-ofctl users write it first).
            let (strict, a) = flag(a, "--strict")?;
            let Some(bridge) = a.first() else {
                return Err(CtlError::new("usage: del-flows [--strict] BRIDGE [MATCH]"));
            };
            let rest: Vec<&str> = a[1..].iter().map(|s| s.as_str()).collect();
            let filter = if rest.is_empty() {
                None
            } else {
                Some(parse_filter(&rest.join(" ")).map_err(|e| CtlError::new(e.to_string()))?)
            };
            let v = ask(
                &w,
                Command::FlowDel {
                    bridge: bridge.to_string(),
                    filter,
                    strict,
                },
            )?;
            Ok(Reply::new(String::new(), v))
        },
    );
    let w = worker.clone();
    reg.register(
        "dump-flows",
        "dump-flows [--names] BRIDGE [MATCH]",
        1,
        UNLIMITED,
        move |a| {
            let (names, a) = flag(a, "--names")?;
            let Some(bridge) = a.first() else {
                return Err(CtlError::new("usage: dump-flows [--names] BRIDGE [MATCH]"));
            };
            let rest: Vec<&str> = a[1..].iter().map(|s| s.as_str()).collect();
            let filter = if rest.is_empty() {
                None
            } else {
                Some(parse_filter(&rest.join(" ")).map_err(|e| CtlError::new(e.to_string()))?)
            };
            let v = ask(
                &w,
                Command::FlowDump {
                    bridge: bridge.to_string(),
                    filter,
                    names,
                },
            )?;
            let mut s = String::new();
            for l in v["flows"].as_array().into_iter().flatten() {
                let _ = writeln!(s, " {}", str_of(l));
            }
            Ok(Reply::new(s, v))
        },
    );
    for (name, write) in [
        ("add-meter", crate::flow::EntryWrite::Add),
        ("mod-meter", crate::flow::EntryWrite::Modify),
    ] {
        let w = worker.clone();
        let usage = format!("{name} BRIDGE meter=N,kbps,band=type=drop,rate=R[,burst_size=B]");
        reg.register(name, &usage, 2, 2, move |a| {
            let v = ask(
                &w,
                Command::MeterAdd {
                    bridge: a[0].clone(),
                    spec: a[1].clone(),
                    write,
                },
            )?;
            Ok(Reply::new(String::new(), v))
        });
    }
    let w = worker.clone();
    reg.register(
        "del-meters",
        "del-meters BRIDGE [meter=N] (and the flows that use them)",
        1,
        2,
        move |a| {
            let id = match a.get(1).map(|s| s.split_once('=')) {
                None => None,
                Some(Some(("meter", "all"))) => None,
                Some(Some(("meter", v))) => {
                    Some(v.parse::<u32>().ok().filter(|&n| n > 0).ok_or_else(|| {
                        CtlError::new(format!("meter: '{v}' is not a meter id (1..) or all"))
                    })?)
                }
                Some(_) => return Err(CtlError::new(format!("'{}': want meter=N", a[1]))),
            };
            let c = crate::worker::OfCommand::MeterDel {
                bridge: a[0].clone(),
                id,
            };
            let v = ask(&w, Command::Openflow(c))?;
            let text = format!(
                "deleted {} meter(s), {} flow(s)\n",
                v["deleted"], v["flows_deleted"]
            );
            Ok(Reply::new(text, v))
        },
    );
    let w = worker.clone();
    reg.register("dump-meters", "dump-meters BRIDGE", 1, 1, move |a| {
        let v = ask(&w, Command::MeterDump(a[0].clone()))?;
        let mut s = String::new();
        for m in v["meters"].as_array().into_iter().flatten() {
            let _ = writeln!(
                s,
                "meter={} kbps rate={} burst_size={} flows={} passed={} dropped={} duration={}",
                m["meter"],
                m["rate_kbps"],
                m["burst_kbits"],
                m["flow_count"],
                m["passed"],
                m["dropped"],
                crate::flow::Seconds(m["duration_ms"].as_u64().unwrap_or(0))
            );
        }
        Ok(Reply::new(s, v))
    });
    let w = worker;
    reg.register(
        "trace",
        "trace BRIDGE PACKET (a match: in_port=P,icmp,dl_src=...,nw_dst=...)",
        2,
        UNLIMITED,
        move |a| {
            let f = parse_filter(&a[1..].join(" ")).map_err(|e| CtlError::new(e.to_string()))?;
            if f.out_port.is_some() {
                return Err(CtlError::new(
                    "out_port: not part of a packet (a dump-flows/del-flows filter)",
                ));
            }
            let v = ask(
                &w,
                Command::Trace {
                    bridge: a[0].clone(),
                    packet: f.m,
                },
            )?;
            let mut s = String::new();
            for l in v["trace"].as_array().into_iter().flatten() {
                let _ = writeln!(s, "{}", str_of(l));
            }
            Ok(Reply::new(s, v))
        },
    );
}

/// Every visible FDB entry of `bridge` (all workers'), fetched page by page (bounded work per
/// worker request).
fn fdb_rows(w: &WorkerHandle, bridge: &str) -> Result<Vec<Value>, CtlError> {
    let mut rows = Vec::new();
    let mut from = Some(0);
    while let Some(f) = from {
        let bridge = bridge.to_string();
        let mut v = ask(w, Command::FdbShow { bridge, from: f })?;
        from = v["next"].as_u64().map(|n| n as usize);
        if let Value::Array(page) = v["entries"].take() {
            rows.extend(page);
        }
    }
    Ok(rows)
}

/// Whether `show` (its JSON) has port `port` in bridge `bridge`: an error naming the field
/// that is wrong otherwise.
/// `args` without the option `name` (ovs-vsctl's `--may-exist` / `--if-exists`, taken
/// anywhere among them) and whether it was there; another `--` option is an error naming it.
fn flag(args: &[String], name: &str) -> Result<(bool, Vec<String>), CtlError> {
    if let Some(bad) = args.iter().find(|a| a.starts_with("--") && *a != name) {
        return Err(CtlError::new(format!(
            "unknown option '{bad}' (this command takes {name})"
        )));
    }
    let rest: Vec<String> = args.iter().filter(|a| *a != name).cloned().collect();
    Ok((rest.len() != args.len(), rest))
}

/// The `name`s of `items` (bridges or ports in `show`), sorted as ovs-vsctl lists them.
fn sorted_names(items: Option<&Vec<Value>>) -> Vec<String> {
    let mut names: Vec<String> = items
        .into_iter()
        .flatten()
        .map(|i| str_of(&i["name"]).to_string())
        .collect();
    names.sort();
    names
}

/// One name a line, as ovs-vsctl's `list-br` and `list-ports` print them.
fn lines(names: &[String]) -> String {
    names.iter().map(|n| format!("{n}\n")).collect()
}

/// Whether bridge `b` of `show` has a port named `port`.
fn holds(b: &Value, port: &str) -> bool {
    b["ports"]
        .as_array()
        .is_some_and(|ps| ps.iter().any(|p| p["name"] == port))
}

/// The first bridge of `show` that `pick` accepts.
fn bridge_of(show: &Value, pick: impl Fn(&Value) -> bool) -> Option<&Value> {
    show["bridges"].as_array()?.iter().find(|b| pick(b))
}

fn port_in_bridge(show: &Value, bridge: &str, port: &str) -> Result<(), CtlError> {
    let Some(b) = bridge_of(show, |b| b["name"] == bridge) else {
        return Err(CtlError::new(format!("BRIDGE: no bridge named '{bridge}'")));
    };
    if holds(b, port) {
        return Ok(());
    }
    Err(CtlError::new(
        match bridge_of(show, |b| holds(b, port)).map(|b| str_of(&b["name"])) {
            Some(other) => format!("PORT: port '{port}' is in bridge '{other}', not '{bridge}'"),
            None => format!("PORT: bridge '{bridge}' has no port named '{port}'"),
        },
    ))
}

#[cfg(test)]
mod show_tests {
    use serde_json::json;

    /// A port line names the MTU once, also when the port's details repeat it, and keeps a
    /// different MTU in the details (the netdev's, when the port's was set lower).
    #[test]
    fn a_port_line_prints_the_mtu_once() {
        let v = json!({"bridges": [{"name": "br0", "fdb_entries": 0, "fdb_capacity": 8192,
            "aging": 300, "ports": [
                {"name": "p1", "ofport": 1, "type": "afxdp", "vlan": "trunk=all", "mtu": 1500,
                 "details": "mode=native copy queues=1 mtu=1500"},
                {"name": "p2", "ofport": 2, "type": "tap", "vlan": "trunk=all", "mtu": 1400,
                 "details": "ifindex=7 mtu=1500 offload=csum,tso"}]}],
            "worker": {}});
        let text = super::render_show(&v);
        let line = |p: &str| text.lines().find(|l| l.contains(p)).unwrap().to_string();
        assert_eq!(
            line("port p1"),
            "    port p1: ofport=1 type=afxdp trunk=all mtu=1500 mode=native copy queues=1"
        );
        assert_eq!(line("port p2").matches("mtu=").count(), 2, "{text}");
    }

    /// `stats` prints the reassembly counters once a fragmented datagram was seen (they were
    /// in `--json` and the metrics only).
    #[test]
    fn stats_print_reassembly_once_there_is_some() {
        let mut v = json!({"worker": {}, "events": {},
            "reassembly": {"reassembled": 0, "timed_out": 0, "refused": 0}});
        assert!(!super::render_stats(&v).contains("reassembly"));
        v["reassembly"] = json!({"reassembled": 3, "timed_out": 1, "refused": 2});
        let text = super::render_stats(&v);
        assert!(
            text.contains("reassembly: datagrams reassembled 3, timed out 1, refused 2"),
            "{text}"
        );
    }

    /// `show` and `stats` print the frame budget (it was only in `--json`).
    #[test]
    fn show_and_stats_print_the_frame_budget() {
        let budget = json!({"reserve": 256, "committed": 384, "lent": 12, "available": 64880});
        let v = json!({"bridges": [], "worker": {"core": null, "frames": 65536,
            "frames_free": 65100, "budget": budget}});
        assert!(
            super::render_show(&v).contains(
                "worker: unpinned, frames 65536 (65100 free), budget: reserve 256 committed 384 \
                 lent 12 available 64880"
            ),
            "{}",
            super::render_show(&v)
        );
        let v = json!({"worker": {"rx_packets": 1, "tx_packets": 1, "iterations": 5,
            "busy_iterations": 1, "sleeps": 1, "cpu_ns": 1, "wall_ns": 10, "busy_ns": 1,
            "frames": 65536, "frames_in_use": 436, "budget": budget}, "events": {}});
        let text = super::render_stats(&v);
        assert!(
            text.contains(
                "frames 65536 (436 in use), budget: reserve 256 committed 384 lent 12 available 64880"
            ),
            "{text}"
        );
    }
}
