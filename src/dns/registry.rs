//! The DNS registry: names (and aliases) registered per bridge, mapped to IPv4 addresses.
//!
//! Contract:
//! - A record is `(bridge, name, address, aliases)`. A name is unique within its bridge:
//!   registering it again replaces its address and aliases (a restarted container with a new
//!   address is followed at once). Aliases may be shared by several records (Docker's network
//!   aliases): a lookup answers every address that carries the name or alias.
//! - Names are case-insensitive and stored lower-case: labels of letters, digits, `-` and `_`,
//!   1-63 bytes each, 253 bytes in all, no leading or trailing dot.
//! - Lookups see only their own bridge's records: a name registered on another bridge is not
//!   found. `NAME` and `NAME.BRIDGE` both find a record of bridge `BRIDGE`.
//! - Bounded: at most [`MAX_RECORDS`] records in all, [`MAX_ALIASES`] aliases a record.
//!   IO-free; the worker owns the writes (control requests), the DNS service reads.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

/// Most records of all bridges together.
pub const MAX_RECORDS: usize = 65_536;
/// Most aliases of one record.
pub const MAX_ALIASES: usize = 16;

/// One registered name, as `dns-add` takes it and the configuration file stores it
/// (`[[dns]]` tables: `bridge`, `name`, `ip`, optional `aliases`).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DnsSpec {
    /// Bridge whose gateway answers for the name.
    pub bridge: String,
    /// The name (e.g. a container's name).
    pub name: String,
    /// Its IPv4 address.
    pub ip: String,
    /// Further names for the same address.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
}

impl DnsSpec {
    /// Parse `dns-add BRIDGE NAME IP [ALIAS...]` arguments (bridge not checked here).
    pub fn from_args(args: &[String]) -> Result<DnsSpec, String> {
        let [bridge, name, ip, aliases @ ..] = args else {
            return Err("usage: dns-add BRIDGE NAME IP [ALIAS...]".into());
        };
        let s = DnsSpec {
            bridge: bridge.clone(),
            name: name.clone(),
            ip: ip.clone(),
            aliases: aliases.to_vec(),
        };
        s.validate()?;
        Ok(s)
    }

    /// Check the name, the aliases and the address; errors name the field.
    pub fn validate(&self) -> Result<(Ipv4Addr, String, Vec<String>), String> {
        let ip: Ipv4Addr = self
            .ip
            .parse()
            .map_err(|_| format!("ip: '{}' is not an IPv4 address", self.ip))?;
        if ip.is_unspecified() || ip.is_broadcast() || ip.is_multicast() {
            return Err(format!("ip: '{ip}' is not a unicast address"));
        }
        let name = check_name(&self.name).map_err(|e| format!("name: {e}"))?;
        if self.aliases.len() > MAX_ALIASES {
            return Err(format!("aliases: at most {MAX_ALIASES}"));
        }
        let mut aliases = Vec::new();
        for a in &self.aliases {
            let a = check_name(a).map_err(|e| format!("alias: {e}"))?;
            if a != name && !aliases.contains(&a) {
                aliases.push(a);
            }
        }
        Ok((ip, name, aliases))
    }
}

/// Whether `name` (lower-case) is one no record may have: every resolver means the host
/// itself by `localhost` (RFC 6761 6.3), so a record would send a container's `localhost` to
/// another host.
pub fn reserved(name: &str) -> bool {
    name == "localhost" || name.ends_with(".localhost")
}

/// Validate a DNS name and return it lower-case.
pub fn check_name(name: &str) -> Result<String, String> {
    let n = name.to_ascii_lowercase();
    if n.parse::<Ipv4Addr>().is_ok() {
        return Err(format!("'{name}' is an IPv4 address, not a name"));
    }
    if n.is_empty() || n.len() > 253 {
        return Err(format!("'{name}' must be 1 to 253 characters"));
    }
    for label in n.split('.') {
        let ok = (1..=63).contains(&label.len())
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            && !label.starts_with('-')
            && !label.ends_with('-');
        if !ok {
            return Err(format!(
                "'{name}' is not a DNS name (labels of letters, digits, '-', '_', 1-63 long)"
            ));
        }
    }
    Ok(n)
}

/// One record (see the module documentation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Address.
    pub ip: Ipv4Addr,
    /// Aliases, lower-case.
    pub aliases: Vec<String>,
}

/// One bridge's records, indexed by name, alias and address (lookups never scan).
#[derive(Debug, Default)]
struct Zone {
    /// name -> record (ordered: stable `dns-show` and running configuration).
    names: BTreeMap<String, Record>,
    /// alias -> the names carrying it.
    aliases: HashMap<String, BTreeSet<String>>,
    /// address -> the names that have it.
    addrs: HashMap<Ipv4Addr, BTreeSet<String>>,
}

impl Zone {
    fn insert(&mut self, name: String, r: Record) -> Option<Record> {
        let old = self.remove(&name);
        for a in &r.aliases {
            self.aliases
                .entry(a.clone())
                .or_default()
                .insert(name.clone());
        }
        self.addrs.entry(r.ip).or_default().insert(name.clone());
        self.names.insert(name, r);
        old
    }

    fn remove(&mut self, name: &str) -> Option<Record> {
        let r = self.names.remove(name)?;
        for a in &r.aliases {
            unindex(&mut self.aliases, a, name);
        }
        unindex(&mut self.addrs, &r.ip, name);
        Some(r)
    }

    /// The addresses of the record named `q` and of every record with alias `q`.
    fn find(&self, q: &str) -> Vec<Ipv4Addr> {
        let mut out: Vec<Ipv4Addr> = self.names.get(q).map(|r| r.ip).into_iter().collect();
        for n in self.aliases.get(q).into_iter().flatten() {
            if let Some(r) = self.names.get(n)
                && !out.contains(&r.ip)
            {
                out.push(r.ip);
            }
        }
        out
    }
}

/// Take `name` out of the index entry `k` of `m` (the entry goes when it empties).
fn unindex<K: std::hash::Hash + Eq>(m: &mut HashMap<K, BTreeSet<String>>, k: &K, name: &str) {
    if let Some(set) = m.get_mut(k) {
        set.remove(name);
        if set.is_empty() {
            m.remove(k);
        }
    }
}

/// Names per bridge.
#[derive(Debug, Default)]
pub struct Registry {
    bridges: BTreeMap<String, Zone>,
    count: usize,
}

impl Registry {
    /// Register (or replace) `spec`. Returns the address it replaced, if any.
    pub fn add(&mut self, spec: &DnsSpec) -> Result<Option<Ipv4Addr>, String> {
        let (ip, name, aliases) = spec.validate()?;
        // Checked when a record is added, not when a configuration is parsed: a database an
        // older uvs wrote with such a record still loads (the record is left out, logged).
        if let Some(why) = crate::datapath::not_lan_unicast(ip.octets()) {
            return Err(format!("ip: '{ip}' is not a unicast address ({why})"));
        }
        if reserved(&name) {
            return Err(format!(
                "name: '{name}' is reserved (RFC 6761: the host itself)"
            ));
        }
        if let Some(a) = aliases.iter().find(|a| reserved(a)) {
            return Err(format!(
                "alias: '{a}' is reserved (RFC 6761: the host itself)"
            ));
        }
        let zone = self.bridges.entry(spec.bridge.clone()).or_default();
        let exists = zone.names.contains_key(&name);
        if !exists && self.count >= MAX_RECORDS {
            return Err(format!("at most {MAX_RECORDS} DNS records"));
        }
        if !exists {
            self.count += 1;
        }
        Ok(zone.insert(name, Record { ip, aliases }).map(|r| r.ip))
    }

    /// Remove `name` of `bridge`; with `ip`, only if it still has that address (a late removal
    /// of a container's old registration leaves its new one alone). Returns the removed address.
    pub fn del(&mut self, bridge: &str, name: &str, ip: Option<Ipv4Addr>) -> Option<Ipv4Addr> {
        let name = name.to_ascii_lowercase();
        let zone = self.bridges.get_mut(bridge)?;
        if ip.is_some_and(|ip| zone.names.get(&name).is_some_and(|r| r.ip != ip)) {
            return None;
        }
        let r = zone.remove(&name)?;
        self.count -= 1;
        if zone.names.is_empty() {
            self.bridges.remove(bridge);
        }
        Some(r.ip)
    }

    /// Forget every record of `bridge` (the bridge was deleted).
    pub fn del_bridge(&mut self, bridge: &str) -> usize {
        let n = self.bridges.remove(bridge).map_or(0, |z| z.names.len());
        self.count -= n;
        n
    }

    /// Addresses of `qname` (lower-case, no trailing dot) on `bridge`: the record of that name
    /// and every record carrying it as an alias; `NAME.BRIDGE` is `NAME`.
    pub fn lookup(&self, bridge: &str, qname: &str) -> Vec<Ipv4Addr> {
        let Some(zone) = self.bridges.get(bridge) else {
            return Vec::new();
        };
        let found = zone.find(qname);
        if !found.is_empty() {
            return found;
        }
        // DNS names are case-insensitive: `qname` is lower-case, a bridge name may not be
        // (found trying uvs as a new user: `web.Net1` went to the upstream resolver).
        let cut = qname.len().checked_sub(bridge.len());
        match cut.filter(|&c| qname.is_char_boundary(c)) {
            Some(c) if c > 0 && qname[c..].eq_ignore_ascii_case(bridge) => {
                let n = &qname[..c];
                match n.strip_suffix('.') {
                    Some(name) => zone.find(name),
                    None => Vec::new(),
                }
            }
            _ => Vec::new(),
        }
    }

    /// The name of `ip` on `bridge` (for PTR), if one is registered (the first by name).
    pub fn reverse(&self, bridge: &str, ip: Ipv4Addr) -> Option<&str> {
        let zone = self.bridges.get(bridge)?;
        zone.addrs.get(&ip)?.iter().next().map(String::as_str)
    }

    /// Every record, as specs (bridge order, then name order); of one bridge with `bridge`.
    pub fn specs(&self, bridge: Option<&str>) -> Vec<DnsSpec> {
        self.bridges
            .iter()
            .filter(|(b, _)| bridge.is_none_or(|x| x == b.as_str()))
            .flat_map(|(b, zone)| {
                zone.names.iter().map(move |(n, r)| DnsSpec {
                    bridge: b.clone(),
                    name: n.clone(),
                    ip: r.ip.to_string(),
                    aliases: r.aliases.clone(),
                })
            })
            .collect()
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.count
    }

    /// True without records.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(b: &str, n: &str, ip: &str, aliases: &[&str]) -> DnsSpec {
        DnsSpec {
            bridge: b.into(),
            name: n.into(),
            ip: ip.into(),
            aliases: aliases.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn names_resolve_per_bridge_and_follow_re_registration() {
        let mut r = Registry::default();
        r.add(&spec("br0", "Web", "10.1.0.2", &["www"])).unwrap();
        r.add(&spec("br1", "db", "10.2.0.2", &[])).unwrap();
        let ip = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        assert_eq!(r.lookup("br0", "web"), vec![ip("10.1.0.2")]);
        assert_eq!(r.lookup("br0", "www"), vec![ip("10.1.0.2")]);
        assert_eq!(r.lookup("br0", "web.br0"), vec![ip("10.1.0.2")]);
        assert!(r.lookup("br0", "db").is_empty(), "another bridge's name");
        assert!(r.lookup("br1", "web").is_empty());
        assert_eq!(r.reverse("br0", ip("10.1.0.2")), Some("web"));
        assert_eq!(r.reverse("br1", ip("10.1.0.2")), None);
        // Re-registered with a new address: the name follows; a stale removal is ignored.
        let old = r.add(&spec("br0", "web", "10.1.0.9", &[])).unwrap();
        assert_eq!(old, Some(ip("10.1.0.2")));
        assert_eq!(r.lookup("br0", "web"), vec![ip("10.1.0.9")]);
        assert!(
            r.lookup("br0", "www").is_empty(),
            "the old alias went with the old record"
        );
        assert_eq!(r.reverse("br0", ip("10.1.0.2")), None);
        assert_eq!(r.reverse("br0", ip("10.1.0.9")), Some("web"));
        assert_eq!(r.del("br0", "web", Some(ip("10.1.0.2"))), None);
        assert_eq!(r.len(), 2);
        assert_eq!(r.del("br0", "web", None), Some(ip("10.1.0.9")));
        assert!(r.lookup("br0", "web").is_empty());
        assert_eq!(r.del_bridge("br1"), 1);
        assert!(r.is_empty());
    }

    /// `NAME.BRIDGE` matches a bridge name with capitals (the query is lower-cased); a name
    /// that only ends like the bridge, without the dot, does not.
    #[test]
    fn name_dot_bridge_ignores_the_bridge_names_case() {
        let mut r = Registry::default();
        r.add(&spec("Net1", "web", "10.1.0.2", &[])).unwrap();
        let ip = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        assert_eq!(r.lookup("Net1", "web.net1"), vec![ip("10.1.0.2")]);
        assert!(r.lookup("Net1", "webnet1").is_empty());
        assert!(r.lookup("Net1", "net1").is_empty());
    }

    /// Loopback and other non-host addresses, and `localhost`, are refused naming the field
    /// (`127.0.0.1` was taken, and `localhost` then answered another host to every container).
    #[test]
    fn loopback_and_localhost_are_refused() {
        let mut r = Registry::default();
        for (name, ip, want) in [
            (
                "lo",
                "127.0.0.1",
                "ip: '127.0.0.1' is not a unicast address (loopback)",
            ),
            ("z", "0.0.0.0", "ip: '0.0.0.0'"),
            ("b", "255.255.255.255", "ip: '255.255.255.255'"),
            ("localhost", "10.1.0.2", "name: 'localhost' is reserved"),
            (
                "db.localhost",
                "10.1.0.2",
                "name: 'db.localhost' is reserved",
            ),
        ] {
            let e = r.add(&spec("br0", name, ip, &[])).unwrap_err();
            assert!(e.starts_with(want), "{e}");
        }
        let e = r.add(&spec("br0", "web", "10.1.0.2", &["localhost"]));
        assert!(e.unwrap_err().starts_with("alias: 'localhost'"));
        assert!(r.is_empty());
    }

    #[test]
    fn shared_aliases_answer_every_address() {
        let mut r = Registry::default();
        r.add(&spec("br0", "a", "10.1.0.2", &["svc"])).unwrap();
        r.add(&spec("br0", "b", "10.1.0.3", &["svc"])).unwrap();
        assert_eq!(r.lookup("br0", "svc").len(), 2);
        assert_eq!(r.specs(Some("br0")).len(), 2);
    }

    #[test]
    fn errors_name_the_field() {
        let e = |s: DnsSpec| s.validate().unwrap_err();
        assert!(e(spec("b", "1.2.3.4", "10.0.0.4", &[])).starts_with("name: '1.2.3.4' is an IPv4"));
        assert!(e(spec("b", "x", "10.0.0.300", &[])).starts_with("ip:"));
        assert!(e(spec("b", "x", "0.0.0.0", &[])).starts_with("ip:"));
        assert!(e(spec("b", "bad name", "10.0.0.1", &[])).starts_with("name:"));
        assert!(e(spec("b", "a..b", "10.0.0.1", &[])).starts_with("name:"));
        assert!(e(spec("b", "-a", "10.0.0.1", &[])).starts_with("name:"));
        assert!(e(spec("b", "ok", "10.0.0.1", &["x/y"])).starts_with("alias:"));
        let long = "a".repeat(64);
        assert!(e(spec("b", &long, "10.0.0.1", &[])).starts_with("name:"));
        assert!(DnsSpec::from_args(&["b".into()]).is_err());
    }
}
