//! VXLAN tunnel ports: configuration and the remote-VTEP table of each.
//!
//! Contract:
//! - A VXLAN port belongs to one bridge and carries one VNI between `local_ip` (a gateway
//!   address of an uplink bridge: the underlay is routed by uvs itself) and a list of remote
//!   VTEPs, on UDP `dst_port` (default 4789).
//! - Frames the bridge sends to the port are encapsulated: toward the remote VTEP learned or
//!   configured for the destination MAC while the bridge's FDB has that MAC on this port, or
//!   to every remote (head-end replication) for broadcast, multicast and unknown unicast (a
//!   MAC the FDB aged out or flushed is unknown again, as with Linux's vxlan).
//! - Entries are keyed by the bridge VLAN (the FDB's): an access-mode port (`vlan=N`, the
//!   VLAN-to-VNI mapping) keeps its MACs under N although its frames are untagged inside.
//! - Frames received for (`local_ip`, `dst_port`, VNI) from a listed remote are decapsulated and
//!   enter the bridge through the port; with `learning` on, the inner source MAC is learned
//!   against the remote it came from (in the FDB, on this port, and here for its VTEP address).
//! - The remote table is bounded (`MAX_REMOTE_MACS`); when full, learning first drops the
//!   entries the FDB no longer has on the port. Lookups hash a packed u64 and never allocate.

use crate::neigh::U64Map;
use crate::wire::vxlan::{MAX_VNI, UDP_PORT};

/// Most MAC -> VTEP entries a port learns.
pub const MAX_REMOTE_MACS: usize = 65536;

/// A VXLAN port's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunnelConf {
    /// VXLAN network identifier.
    pub vni: u32,
    /// Our VTEP address (a gateway address of the uplink bridge).
    pub local_ip: [u8; 4],
    /// Remote VTEPs for flooding (and the only ones accepted).
    pub remotes: Vec<[u8; 4]>,
    /// UDP destination port.
    pub dst_port: u16,
    /// Learn inner source MACs from decapsulated frames.
    pub learning: bool,
    /// Outer TTL.
    pub ttl: u8,
    /// Set DF on outer packets.
    pub df: bool,
}

impl Default for TunnelConf {
    fn default() -> Self {
        TunnelConf {
            vni: 0,
            local_ip: [0; 4],
            remotes: Vec::new(),
            dst_port: UDP_PORT,
            learning: true,
            ttl: 64,
            df: true,
        }
    }
}

impl TunnelConf {
    /// Parse `vni=N local_ip=A remote_ip=B[,C...] [dst_port=N] [learning=on|off] [ttl=N]
    /// [df=on|off]` option pairs.
    pub fn from_pairs<'a>(
        pairs: impl Iterator<Item = (&'a str, &'a str)>,
    ) -> Result<TunnelConf, String> {
        let mut t = TunnelConf::default();
        let mut vni = None;
        let mut local = None;
        for (k, v) in pairs {
            match k {
                "vni" => {
                    vni = Some(
                        v.parse::<u32>()
                            .ok()
                            .filter(|n| *n <= MAX_VNI)
                            .ok_or_else(|| format!("vni: '{v}' is not a VNI (0 to {MAX_VNI})"))?,
                    )
                }
                "local_ip" => local = Some(ip(v, "local_ip")?),
                "remote_ip" => {
                    t.remotes = v
                        .split(',')
                        .map(|r| ip(r, "remote_ip"))
                        .collect::<Result<_, _>>()?
                }
                "dst_port" => {
                    t.dst_port = v
                        .parse()
                        .ok()
                        .filter(|p| *p != 0)
                        .ok_or_else(|| format!("dst_port: '{v}' is not a port"))?
                }
                "learning" => t.learning = on_off(v, "learning")?,
                "df" => t.df = on_off(v, "df")?,
                "ttl" => {
                    t.ttl = v
                        .parse()
                        .ok()
                        .filter(|n| *n != 0)
                        .ok_or_else(|| format!("ttl: '{v}' (1 to 255)"))?
                }
                _ => {
                    return Err(format!(
                        "unknown vxlan option '{k}' (vni, local_ip, remote_ip, dst_port, learning, ttl, df)"
                    ));
                }
            }
        }
        t.vni = vni.ok_or("vni: missing (type=vxlan needs vni=N)")?;
        t.local_ip = local.ok_or("local_ip: missing (type=vxlan needs local_ip=A.B.C.D)")?;
        if t.remotes.contains(&t.local_ip) {
            return Err("remote_ip: the local address cannot be a remote".into());
        }
        Ok(t)
    }

    /// Text for `show`.
    pub fn describe(&self, inner_mtu: u32) -> String {
        let remotes: Vec<String> = self
            .remotes
            .iter()
            .map(|r| std::net::Ipv4Addr::from(*r).to_string())
            .collect();
        format!(
            "vni={} local_ip={} remote_ip={} dst_port={} learning={} ttl={} df={} inner_mtu={inner_mtu}",
            self.vni,
            std::net::Ipv4Addr::from(self.local_ip),
            if remotes.is_empty() {
                "none".into()
            } else {
                remotes.join(",")
            },
            self.dst_port,
            if self.learning { "on" } else { "off" },
            self.ttl,
            if self.df { "on" } else { "off" },
        )
    }
}

fn ip(v: &str, field: &str) -> Result<[u8; 4], String> {
    v.parse::<std::net::Ipv4Addr>()
        .map(|a| a.octets())
        .map_err(|_| format!("{field}: '{v}' is not an IPv4 address"))
}

fn on_off(v: &str, field: &str) -> Result<bool, String> {
    match v {
        "on" | "true" | "yes" => Ok(true),
        "off" | "false" | "no" => Ok(false),
        _ => Err(format!("{field}: '{v}' (on, off)")),
    }
}

/// A VXLAN port's state: its settings and the MAC -> remote VTEP table.
#[derive(Debug)]
pub struct Tunnel {
    /// Settings.
    pub conf: TunnelConf,
    remote_of: U64Map<([u8; 4], bool)>,
    /// VTEPs accepted besides `conf.remotes` without being flooded to (overlay peers a
    /// control-plane adapter programs, as flannel's `nolearning` device accepts any sender).
    peers: std::collections::HashSet<[u8; 4]>,
    /// The last (key, remote) `learn` found or put in `remote_of`: learning it again changes
    /// nothing, so the frames of one inner flow skip the map. Cleared by every other change.
    last_learned: Option<(u64, [u8; 4])>,
    /// When a full table was last swept (`retain`, ms): at most once a second, so a table
    /// full of entries the FDB still has is not swept for every new MAC.
    swept_ms: Option<u64>,
}

#[inline]
fn mac_key(vlan: u16, mac: u64) -> u64 {
    (vlan as u64) << 48 | mac
}

impl Tunnel {
    /// A tunnel with an empty remote table.
    pub fn new(conf: TunnelConf) -> Tunnel {
        Tunnel {
            conf,
            remote_of: U64Map::default(),
            peers: Default::default(),
            last_learned: None,
            swept_ms: None,
        }
    }

    /// The VTEP behind (vlan, mac), if known.
    #[inline]
    pub fn remote_of(&self, vlan: u16, mac: u64) -> Option<[u8; 4]> {
        self.remote_of.get(&mac_key(vlan, mac)).map(|(ip, _)| *ip)
    }

    /// Learn that (vlan, mac) is behind `remote` (static entries are not overwritten). True
    /// if that is new (a new MAC, or one that moved to another remote).
    #[inline]
    pub fn learn(&mut self, vlan: u16, mac: u64, remote: [u8; 4]) -> bool {
        let k = mac_key(vlan, mac);
        if self.last_learned == Some((k, remote)) {
            return false;
        }
        let room = self.remote_of.len() < MAX_REMOTE_MACS;
        let changed = match self.remote_of.get_mut(&k) {
            Some((_, true)) => false,
            Some(e) => std::mem::replace(&mut e.0, remote) != remote,
            None if room => {
                self.remote_of.insert(k, (remote, false));
                true
            }
            None => return false,
        };
        self.last_learned = Some((k, remote));
        changed
    }

    /// True when the table holds `MAX_REMOTE_MACS` entries (learning adds no new MAC).
    #[inline]
    pub fn is_full(&self) -> bool {
        self.remote_of.len() >= MAX_REMOTE_MACS
    }

    /// True when the table is full and was not swept in the last second (at `now_ms`).
    #[inline]
    pub fn sweep_due(&self, now_ms: u64) -> bool {
        self.is_full()
            && self
                .swept_ms
                .is_none_or(|t| now_ms.saturating_sub(t) >= 1000)
    }

    /// Keep the static entries and the learned ones `keep(vlan, mac)` says (a sweep at
    /// `now_ms`).
    pub fn retain(&mut self, now_ms: u64, mut keep: impl FnMut(u16, u64) -> bool) {
        self.swept_ms = Some(now_ms);
        self.last_learned = None;
        self.remote_of
            .retain(|k, (_, fixed)| *fixed || keep((k >> 48) as u16, k & 0xffff_ffff_ffff));
    }

    /// A static (vlan, mac) -> remote entry.
    pub fn add_static(&mut self, vlan: u16, mac: u64, remote: [u8; 4]) {
        self.last_learned = None;
        self.remote_of.insert(mac_key(vlan, mac), (remote, true));
    }

    /// Forget a MAC (`fdb-del`, the overlay). Entries the FDB has aged or flushed may stay:
    /// encapsulation uses an entry only while the FDB has the MAC on the port, and a full table
    /// drops them (`pipeline::vxlan::learn_remote`).
    pub fn forget(&mut self, vlan: u16, mac: u64) {
        self.last_learned = None;
        self.remote_of.remove(&mac_key(vlan, mac));
    }

    /// True if `ip` is one of the configured remotes.
    #[inline]
    pub fn accepts(&self, ip: [u8; 4]) -> bool {
        self.conf.remotes.contains(&ip) || (!self.peers.is_empty() && self.peers.contains(&ip))
    }

    /// Accept VXLAN from `ip` (an overlay peer; not flooded to).
    pub fn add_peer(&mut self, ip: [u8; 4]) {
        self.peers.insert(ip);
    }

    /// Stop accepting `ip` as an overlay peer.
    pub fn remove_peer(&mut self, ip: [u8; 4]) {
        self.peers.remove(&ip);
    }

    /// True if a static entry still sends to `ip` (its peer is then still in use).
    pub fn static_uses(&self, ip: [u8; 4]) -> bool {
        self.remote_of.values().any(|(r, fixed)| *fixed && *r == ip)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(s: &str) -> Vec<(&str, &str)> {
        s.split_whitespace()
            .map(|kv| kv.split_once('=').unwrap())
            .collect()
    }

    /// `show` prints every option of the tunnel, `ttl` and `df` too (`df=off` was set and not
    /// shown: found in session 31).
    #[test]
    fn describe_names_every_option() {
        let t = TunnelConf::from_pairs(
            pairs("vni=7 local_ip=10.0.0.1 remote_ip=10.0.0.2 ttl=9 df=off").into_iter(),
        )
        .unwrap();
        assert_eq!(
            t.describe(1450),
            "vni=7 local_ip=10.0.0.1 remote_ip=10.0.0.2 dst_port=4789 learning=on ttl=9 df=off \
             inner_mtu=1450"
        );
    }

    #[test]
    fn parses_options_and_names_bad_fields() {
        let t = TunnelConf::from_pairs(
            pairs("vni=42 local_ip=10.252.0.1 remote_ip=10.252.0.2,10.252.0.3 learning=off")
                .into_iter(),
        )
        .unwrap();
        assert_eq!(t.vni, 42);
        assert_eq!(t.remotes.len(), 2);
        assert!(!t.learning);
        assert_eq!(t.dst_port, 4789);
        for (bad, field) in [
            ("vni=16777216 local_ip=1.1.1.1", "vni"),
            ("local_ip=1.1.1.1", "vni"),
            ("vni=1", "local_ip"),
            ("vni=1 local_ip=1.1.1.x", "local_ip"),
            ("vni=1 local_ip=1.1.1.1 remote_ip=1.1.1.1", "remote_ip"),
            ("vni=1 local_ip=1.1.1.1 dst_port=0", "dst_port"),
            ("vni=1 local_ip=1.1.1.1 colour=red", "colour"),
        ] {
            let e = TunnelConf::from_pairs(pairs(bad).into_iter()).unwrap_err();
            assert!(e.contains(field), "{bad}: {e}");
        }
    }

    #[test]
    fn remote_table_learns_and_keeps_static() {
        let mut t = Tunnel::new(TunnelConf::default());
        t.learn(0, 7, [1, 1, 1, 1]);
        assert_eq!(t.remote_of(0, 7), Some([1, 1, 1, 1]));
        t.learn(0, 7, [2, 2, 2, 2]);
        assert_eq!(
            t.remote_of(0, 7),
            Some([2, 2, 2, 2]),
            "MAC moved to another VTEP"
        );
        t.add_static(0, 8, [3, 3, 3, 3]);
        t.learn(0, 8, [4, 4, 4, 4]);
        assert_eq!(t.remote_of(0, 8), Some([3, 3, 3, 3]), "static wins");
        assert_eq!(t.remote_of(5, 7), None, "per VLAN");
        t.forget(0, 7);
        assert_eq!(t.remote_of(0, 7), None);
        // Learning again after a forget puts it back (the last-learned shortcut is cleared).
        t.learn(0, 9, [5, 5, 5, 5]);
        t.forget(0, 9);
        t.learn(0, 9, [5, 5, 5, 5]);
        assert_eq!(t.remote_of(0, 9), Some([5, 5, 5, 5]));
        // A static entry replacing a learned one is not overwritten by the same learn.
        t.add_static(0, 9, [6, 6, 6, 6]);
        t.learn(0, 9, [5, 5, 5, 5]);
        assert_eq!(t.remote_of(0, 9), Some([6, 6, 6, 6]));
    }
}
