//! DNS registration by the CNI plugin: on ADD the container's name (`K8S_POD_NAME` in
//! `CNI_ARGS`, which podman sets to the container name) and its aliases (the `aliases`
//! capability: `runtimeConfig.aliases = {NETWORK: [ALIAS...]}`, podman's `--network-alias`) are
//! registered on the network's bridge with `dns-add`; on DEL they are removed with `dns-del`
//! (only while the name still has this container's address, so the DEL of a container that was
//! replaced leaves its successor's name alone; errors are ignored: DEL is idempotent).
//! Names that are not valid DNS names are skipped, not errors: a container whose name is not
//! one (podman allows `web-`, 64+ characters) is registered under its short container id with
//! its valid aliases, and
//! any container the runtime names gets the gateway as its nameserver, so it resolves the
//! others (found trying uvs as a new user: such a container had no DNS at all).

use std::net::Ipv4Addr;

use serde_json::Value;

use super::CniError;
use super::conf::{Env, NetConf};
use super::sys::uvs;
use crate::dns::registry::{MAX_ALIASES, check_name, reserved};

/// The container's name, if the runtime passed a valid one.
pub fn name(env: &Env) -> Option<String> {
    env.arg("K8S_POD_NAME")
        .and_then(|n| check_name(&n).ok())
        .filter(|n| !reserved(n))
}

/// The aliases of this network from the `aliases` capability (valid names only).
pub fn aliases(c: &NetConf) -> Vec<String> {
    c.runtime_config
        .aliases
        .get(&c.name)
        .into_iter()
        .flatten()
        .filter_map(|a| check_name(a).ok())
        .filter(|a| !reserved(a))
        .take(MAX_ALIASES)
        .collect()
}

/// The name to register and its aliases: the container's name, or when it is not a valid DNS
/// name (and it has aliases) its short container id, unique to it, so aliases that replicas
/// share stay aliases (a record of the same name replaces the one before).
fn names(env: &Env, c: &NetConf) -> Option<(String, Vec<String>)> {
    let aliases = aliases(c);
    match name(env) {
        Some(n) => Some((n, aliases)),
        None if !aliases.is_empty() => {
            let id: String = env.container_id.chars().take(12).collect();
            check_name(&id).ok().map(|id| (id, aliases))
        }
        None => None,
    }
}

/// ADD: register the name (if any) with `addr`. Returns whether the container uses the
/// network's DNS: a name was registered, or the runtime named the container (even with a name
/// that is not a DNS name), so the gateway becomes its nameserver.
pub fn register(env: &Env, c: &NetConf, addr: Ipv4Addr) -> Result<bool, CniError> {
    let named = env.arg("K8S_POD_NAME").is_some_and(|n| !n.is_empty());
    let Some((n, aliases)) = names(env, c) else {
        return Ok(named);
    };
    let mut args = vec![c.bridge().to_string(), n, addr.to_string()];
    args.extend(aliases);
    uvs(&c.socket(), "dns-add", &args)?;
    Ok(true)
}

/// DEL: remove the name, only while it has `addr` (when known).
pub fn unregister(env: &Env, c: &NetConf, addr: Option<Ipv4Addr>) {
    let Some((n, _)) = names(env, c) else { return };
    let mut args = vec![c.bridge().to_string(), n];
    args.extend(addr.map(|a| a.to_string()));
    let _ = uvs(&c.socket(), "dns-del", &args);
}

/// The result's `dns`: the IPAM plugin's, else the gateway as the nameserver when the container
/// uses the network's DNS (`register`; the gateway answers DNS, as Docker's embedded DNS server).
pub fn result_dns(ipam: &Value, gateway: Ipv4Addr, registered: bool) -> Value {
    match ipam.get("dns") {
        Some(d)
            if d.get("nameservers")
                .is_some_and(|n| n.as_array().is_some_and(|a| !a.is_empty())) =>
        {
            d.clone()
        }
        _ if registered => serde_json::json!({"nameservers": [gateway.to_string()]}),
        other => other.cloned().unwrap_or(serde_json::json!({})),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn env(args: &str) -> Env {
        let vars = |k: &str| match k {
            "CNI_COMMAND" => Some("ADD".to_string()),
            "CNI_CONTAINERID" => Some("c0ffee".into()),
            "CNI_NETNS" => Some("/proc/self/ns/net".into()),
            "CNI_IFNAME" => Some("eth0".into()),
            "CNI_PATH" => Some("/nonexistent".into()),
            "CNI_ARGS" => Some(args.to_string()),
            _ => None,
        };
        Env::from_vars(&vars).unwrap()
    }

    fn conf(rc: serde_json::Value) -> NetConf {
        let c = json!({"cniVersion": "1.0.0", "name": "n1", "type": "uvs-cni",
            "ipam": {"type": "host-local"}, "runtimeConfig": rc});
        NetConf::parse(&serde_json::to_vec(&c).unwrap()).unwrap()
    }

    #[test]
    fn the_name_comes_from_k8s_pod_name_and_aliases_from_the_capability() {
        let e = env("IgnoreUnknown=1;K8S_POD_NAME=Web-1");
        assert_eq!(name(&e).as_deref(), Some("web-1"));
        assert_eq!(name(&env("IgnoreUnknown=1")), None);
        assert_eq!(
            name(&env("K8S_POD_NAME=bad name!")),
            None,
            "invalid: skipped"
        );
        let c = conf(json!({"aliases": {"n1": ["db", "no good", "cache"], "n2": ["x"]}}));
        assert_eq!(aliases(&c), ["db", "cache"], "this network's valid aliases");
        assert!(aliases(&conf(json!({}))).is_empty());
        // A container name that is not a DNS name (podman allows `web-`): registered under
        // its short id, with its valid aliases.
        let (n, rest) = names(&env("K8S_POD_NAME=web-"), &c).unwrap();
        assert_eq!(
            (n.as_str(), rest),
            ("c0ffee", vec!["db".to_string(), "cache".to_string()])
        );
        assert!(names(&env("K8S_POD_NAME=web-"), &conf(json!({}))).is_none());
        // Nothing to register, but a named container still uses the network's DNS (the
        // gateway as nameserver); an unnamed one does not.
        let a = Ipv4Addr::new(10, 9, 0, 2);
        assert!(register(&env("K8S_POD_NAME=web-"), &conf(json!({})), a).unwrap());
        assert!(!register(&env("IgnoreUnknown=1"), &conf(json!({})), a).unwrap());
    }

    #[test]
    fn the_result_names_the_gateway_as_nameserver_when_a_name_was_registered() {
        let gw = Ipv4Addr::new(10, 9, 0, 1);
        let ipam = json!({"ips": []});
        assert_eq!(
            result_dns(&ipam, gw, true),
            json!({"nameservers": ["10.9.0.1"]})
        );
        assert_eq!(result_dns(&ipam, gw, false), json!({}));
        let own = json!({"dns": {"nameservers": ["10.0.0.53"]}});
        assert_eq!(result_dns(&own, gw, true), own["dns"], "IPAM's dns wins");
    }
}
