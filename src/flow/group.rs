//! OpenFlow groups in ovs-ofctl syntax: `group_id=N,type=all|select|indirect,bucket=ACTIONS,...`
//! (a bucket may start with `weight:W,` and spell its actions `actions=...`), and the
//! `group:N` action that sends a packet through group N.
//!
//! Contract:
//! - `all` runs every bucket on its own copy of the packet; `select` runs one bucket chosen by a
//!   hash of the packet's addresses and ports, weighted (weight 0 never chosen; default 1);
//!   `indirect` has exactly one bucket. `fast_failover` is refused by name, and so are OVS's
//!   `selection_method`, `selection_method_param` and `fields(...)` (OpenFlow 1.5 properties
//!   choosing what a select group hashes: uvs's always hashes the same fields).
//! - Bucket actions are flow actions without `goto_table`, `meter`, `group` or
//!   `resubmit` (refused by name); ports are bound to the bridge's numbers when the group is
//!   added, as a flow's are.
//! - Display is what `parse_group` reads back and what `ovs-ofctl -O OpenFlow13 dump-groups`
//!   prints: `bucket=actions=...`, with `weight:W,` first in select groups when W is not 1.

use std::fmt;

use super::FlowError;
use super::action::{Action, Actions, parse_actions};
use super::parse::parse_num;

/// A group's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GroupType {
    /// Every bucket (flooding, mirroring).
    All,
    /// One bucket, chosen per flow of packets (load balancing).
    Select,
    /// One bucket (a shared next hop).
    Indirect,
}

impl GroupType {
    /// ovs-ofctl's name.
    pub fn name(self) -> &'static str {
        match self {
            GroupType::All => "all",
            GroupType::Select => "select",
            GroupType::Indirect => "indirect",
        }
    }

    /// OFPGT_* value.
    pub fn wire(self) -> u8 {
        match self {
            GroupType::All => 0,
            GroupType::Select => 1,
            GroupType::Indirect => 2,
        }
    }

    /// From an OFPGT_* value.
    pub fn from_wire(v: u8) -> Option<GroupType> {
        match v {
            0 => Some(GroupType::All),
            1 => Some(GroupType::Select),
            2 => Some(GroupType::Indirect),
            _ => None,
        }
    }
}

/// One bucket.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Bucket {
    /// Weight (select groups).
    pub weight: u16,
    /// Its actions.
    pub actions: Vec<Action>,
}

/// One group.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Group {
    /// Group id (0 to 0xffffff00).
    pub id: u32,
    /// Type.
    pub kind: GroupType,
    /// Buckets, in order.
    pub buckets: Vec<Bucket>,
}

/// A group's counters: packets and bytes it took, and per bucket those each bucket ran on
/// (OpenFlow's group statistics). Reset when the group is written.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupStats {
    /// When the group was written (ms, the datapath's clock): its age is OpenFlow's duration.
    pub created_ms: u64,
    /// Packets and bytes.
    pub packets: u64,
    pub bytes: u64,
    /// (packets, bytes) per bucket, in bucket order.
    pub buckets: Vec<(u64, u64)>,
}

impl GroupStats {
    /// Zeroed counters for `g`, written at `now_ms`.
    pub fn of(g: &Group, now_ms: u64) -> GroupStats {
        GroupStats {
            created_ms: now_ms,
            buckets: vec![(0, 0); g.buckets.len()],
            ..GroupStats::default()
        }
    }
}

/// Largest group id (OFPG_MAX).
pub const GROUP_MAX: u32 = 0xffff_ff00;
/// Buckets one group may have.
pub const MAX_BUCKETS: usize = 64;

fn bad(what: &str, why: impl Into<String>) -> FlowError {
    FlowError::BadAction {
        action: what.to_string(),
        why: why.into(),
    }
}

fn parse_bucket(text: &str) -> Result<Bucket, FlowError> {
    let mut weight = 1u16;
    let mut rest = text.trim();
    loop {
        if let Some(w) = rest
            .strip_prefix("weight:")
            .or(rest.strip_prefix("weight="))
        {
            let (v, r) = w.split_once(',').unwrap_or((w, ""));
            weight = parse_num("weight", v.trim(), 0xffff)?;
            rest = r.trim();
        } else if rest.starts_with("bucket_id") || rest.starts_with("watch_") {
            let k = rest.split([':', '=']).next().unwrap_or(rest);
            return Err(bad(
                &format!("bucket={text}"),
                format!("'{k}' is not supported"),
            ));
        } else {
            break;
        }
    }
    let acts = rest.strip_prefix("actions=").unwrap_or(rest);
    let actions = parse_actions(acts, 0)?;
    if let Some(a) = actions.iter().find(|a| {
        matches!(
            a,
            Action::GotoTable(_) | Action::Meter(_) | Action::Group(_) | Action::Resubmit(_)
        )
    }) {
        return Err(bad(
            &format!("bucket={text}"),
            format!("'{a}' is not allowed in a bucket"),
        ));
    }
    Ok(Bucket { weight, actions })
}

/// Parse a group id (`group_id=N`'s value, `del-groups`): 0 to `GROUP_MAX`.
pub fn parse_group_id(v: &str) -> Result<u32, FlowError> {
    parse_num("group_id", v, u64::from(GROUP_MAX))
}

/// Parse `group_id=N,type=T,bucket=...,bucket=...` (the text `add-group` takes).
pub fn parse_group(s: &str) -> Result<Group, FlowError> {
    let s = s.trim();
    let mut parts = s.split("bucket=");
    let head = parts.next().unwrap_or_default();
    let (mut id, mut kind) = (None, None);
    for kv in head.split([',', ' ']).filter(|t| !t.is_empty()) {
        // OVS's selection method properties (`fields(F,F)` splits into several tokens).
        let key = kv.split(['=', ':', '(']).next().unwrap_or(kv);
        if matches!(
            key,
            "selection_method" | "selection_method_param" | "fields"
        ) {
            return Err(bad(
                key,
                "not supported (an OpenFlow 1.5 group property: uvs's select groups hash \
                 addresses, protocol and ports, always)",
            ));
        }
        match kv.split_once('=') {
            Some(("group_id", v)) => {
                let n = parse_group_id(v)?;
                id = Some(n);
            }
            Some(("type", v)) => {
                kind = Some(match v {
                    "all" => GroupType::All,
                    "select" => GroupType::Select,
                    "indirect" => GroupType::Indirect,
                    "ff" | "fast_failover" => {
                        return Err(bad("type", "fast_failover groups are not supported"));
                    }
                    _ => return Err(bad("type", format!("'{v}' is not all, select or indirect"))),
                });
            }
            _ => return Err(FlowError::UnknownField(kv.to_string())),
        }
    }
    let id = id.ok_or_else(|| bad("group_id", "missing"))?;
    let kind = kind.ok_or_else(|| bad("type", "missing (all, select or indirect)"))?;
    let buckets = parts
        .map(|b| parse_bucket(b.trim().trim_end_matches(',')))
        .collect::<Result<Vec<_>, _>>()?;
    if buckets.len() > MAX_BUCKETS {
        return Err(bad("bucket", format!("at most {MAX_BUCKETS} buckets")));
    }
    if kind == GroupType::Indirect && buckets.len() != 1 {
        return Err(bad("bucket", "an indirect group has exactly one bucket"));
    }
    Ok(Group { id, kind, buckets })
}

impl fmt::Display for Group {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "group_id={},type={}", self.id, self.kind.name())?;
        for b in &self.buckets {
            f.write_str(",bucket=")?;
            if self.kind == GroupType::Select && b.weight != 1 {
                write!(f, "weight:{},", b.weight)?;
            }
            write!(f, "actions={}", Actions(&b.actions))?;
        }
        Ok(())
    }
}

impl Group {
    /// The bucket a select group runs for a packet with hash `h` (None: no bucket has weight).
    pub fn select(&self, h: u64) -> Option<&Bucket> {
        let total: u64 = self.buckets.iter().map(|b| u64::from(b.weight)).sum();
        if total == 0 {
            return None;
        }
        let mut x = h % total;
        self.buckets.iter().find(|b| {
            let w = u64::from(b.weight);
            if x < w {
                true
            } else {
                x -= w;
                false
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flow_uses_the_groups_its_actions_name() {
        let f =
            crate::flow::parse::parse_flow("priority=5,actions=clone(group:5),group:7").unwrap();
        assert!(f.uses_group(5), "inside clone()");
        assert!(f.uses_group(7));
        assert!(!f.uses_group(6));
        let f = crate::flow::parse::parse_flow("actions=output:1").unwrap();
        assert!(!f.uses_group(1), "a port number is not a group");
    }

    #[test]
    fn parse_and_display_round_trip() {
        let g = parse_group("group_id=1,type=all,bucket=output:1,bucket=mod_vlan_vid:5,output:2")
            .unwrap();
        assert_eq!(g.buckets.len(), 2);
        assert_eq!(g.buckets[1].actions.len(), 2);
        let text = g.to_string();
        assert_eq!(
            text,
            "group_id=1,type=all,bucket=actions=output:1,bucket=actions=mod_vlan_vid:5,output:2"
        );
        assert_eq!(parse_group(&text).unwrap(), g);
        let s =
            parse_group("group_id=7,type=select,bucket=weight:3,actions=output:1,bucket=output:2")
                .unwrap();
        assert_eq!(
            s.to_string(),
            "group_id=7,type=select,bucket=weight:3,actions=output:1,bucket=actions=output:2"
        );
        assert_eq!(parse_group(&s.to_string()).unwrap(), s);
    }

    #[test]
    fn refusals_name_the_problem() {
        let e = |s: &str| parse_group(s).unwrap_err().to_string();
        assert!(e("group_id=1,type=ff,bucket=output:1").contains("fast_failover"));
        assert!(e("type=all,bucket=output:1").contains("group_id"));
        assert!(
            e("group_id=1,type=indirect,bucket=output:1,bucket=output:2").contains("exactly one")
        );
        assert!(e("group_id=1,type=all,bucket=goto_table:2").contains("not allowed in a bucket"));
        assert!(e("group_id=1,type=all,bucket=watch_port:1,output:1").contains("watch_port"));
        // OVS's selection method properties (OpenFlow 1.5): refused by name, never dropped.
        for (g, name) in [
            (
                "group_id=1,type=select,selection_method=hash,fields(ip_src),bucket=output:1",
                "selection_method",
            ),
            (
                "group_id=1,type=select,fields(ip_src,ip_dst),bucket=output:1",
                "fields",
            ),
            (
                "group_id=1,type=select,fields=ip_src,bucket=output:1",
                "fields",
            ),
            (
                "group_id=1,type=select,selection_method_param=7,bucket=output:1",
                "selection_method_param",
            ),
        ] {
            let msg = e(g);
            assert!(msg.starts_with(&format!("{name}: ")), "{g}: {msg}");
            assert!(msg.contains("not supported"), "{g}: {msg}");
        }
    }

    #[test]
    fn select_is_weighted_and_stable() {
        let g =
            parse_group("group_id=1,type=select,bucket=weight:1,output:1,bucket=weight:3,output:2")
                .unwrap();
        let picks: Vec<u16> = (0..400u64).map(|h| g.select(h).unwrap().weight).collect();
        assert_eq!(picks.iter().filter(|w| **w == 3).count(), 300);
        assert_eq!(g.select(5), g.select(5));
    }
}
