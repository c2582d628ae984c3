//! Ports the configuration holds that are not open: their netdev is missing, or opening it
//! failed (the store keeps them and tries again, see `control::store`). The store publishes
//! them on the worker handle ([`super::WorkerHandle::set_pending`]) and `show`, `stats` and
//! the metrics list each with state `pending` and the reason, as `ovs-vsctl show` lists a
//! port it could not open with its error (they were in `save-config` alone, so an alert on
//! `uvs_port_up == 0` never saw them).
//!
//! Contract: merging only appends; a port the worker runs is never listed twice (a name the
//! answer already has is skipped).

use serde_json::{Value, json};

/// One port kept pending.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingPort {
    /// Its bridge.
    pub bridge: String,
    /// Its name (the netdev's).
    pub name: String,
    /// Its type (`afxdp`, `afpacket`, ...).
    pub kind: String,
    /// Why it is not open (the last error).
    pub reason: String,
}

/// Add `pending` to a `show` answer's bridges.
pub(crate) fn merge_show(v: &mut Value, pending: &[PendingPort]) {
    let Some(bridges) = v["bridges"].as_array_mut() else {
        return;
    };
    for p in pending {
        let Some(b) = bridges.iter_mut().find(|b| b["name"] == p.bridge.as_str()) else {
            continue;
        };
        let Some(ports) = b["ports"].as_array_mut() else {
            continue;
        };
        if ports.iter().any(|x| x["name"] == p.name.as_str()) {
            continue;
        }
        ports.push(json!({
            "name": p.name,
            "id": null,
            "ofport": null,
            "type": p.kind,
            "vlan": "",
            "mtu": null,
            "state": "pending",
            "reason": p.reason,
            "frames": 0,
            "details": format!("state=pending ({})", p.reason),
        }));
    }
}

/// Add `pending` to a `stats` answer's ports (zero counters).
pub(crate) fn merge_stats(v: &mut Value, pending: &[PendingPort]) {
    let Some(ports) = v["ports"].as_object_mut() else {
        return;
    };
    for p in pending {
        ports.entry(p.name.clone()).or_insert_with(|| {
            json!({
                "bridge": p.bridge,
                "rx_packets": 0, "rx_bytes": 0, "tx_packets": 0, "tx_bytes": 0,
                "csum_completed": 0, "gro_merged": 0, "mac_limit_refused": 0,
                "drops": {},
                "state": "pending",
                "reason": p.reason,
                "frames": 0,
            })
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one() -> Vec<PendingPort> {
        vec![PendingPort {
            bridge: "br0".into(),
            name: "late".into(),
            kind: "afxdp".into(),
            reason: "netdev late: no such device".into(),
        }]
    }

    #[test]
    fn pending_ports_are_appended_once() {
        let mut show = json!({"bridges": [{"name": "br0", "ports": [{"name": "up1"}]},
            {"name": "br1", "ports": []}]});
        merge_show(&mut show, &one());
        let ports = show["bridges"][0]["ports"].as_array().unwrap();
        assert_eq!(ports.len(), 2);
        assert_eq!(ports[1]["state"], "pending");
        assert_eq!(
            ports[1]["details"],
            "state=pending (netdev late: no such device)"
        );
        assert!(show["bridges"][1]["ports"].as_array().unwrap().is_empty());
        // Already listed (it opened meanwhile): not twice.
        merge_show(&mut show, &one());
        assert_eq!(show["bridges"][0]["ports"].as_array().unwrap().len(), 2);

        let mut stats = json!({"ports": {"up1": {"bridge": "br0", "rx_packets": 5}}});
        merge_stats(&mut stats, &one());
        assert_eq!(stats["ports"]["late"]["state"], "pending");
        assert_eq!(stats["ports"]["late"]["rx_packets"], 0);
        assert_eq!(stats["ports"]["up1"]["rx_packets"], 5);
    }
}
