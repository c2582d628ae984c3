//! OpenFlow-style flow tables in ovs-ofctl syntax: parsing, display, a tuple-space classifier
//! and a per-worker exact-match cache. IO-free: time is passed in (milliseconds).
//!
//! Contract:
//! - `parse_flow` reads an `add-flow` line (and a whole `dump-flows` line); `Display` for
//!   `Flow` writes ovs-ofctl's `dump-flows` spelling without the stats, `Flow::dump_line` with
//!   them; both parse back to the same `Flow` (`parse_flow(&f.to_string()) == Ok(f)`).
//! - `Classifier` holds every table of one bridge: highest priority wins; among overlapping
//!   flows of equal priority the most recently added (or replaced) one wins (OVS leaves this
//!   unspecified; ours is deterministic). Lookups take `&self` and never allocate.
//! - `Emc` is a worker's exact-match cache in front of the classifier, invalidated by the
//!   classifier's generation number.
//! - Conntrack: `ct_state`/`ct_zone` matches and the `ct(...)` action (`CtAction`) are parsed
//!   and displayed here (`ct.rs`); running them is the datapath's job.
//! - Ports in flows are `PortRef`s (names or numbers); the caller resolves them to ids with a
//!   closure when a flow is added, deleted or dumped with a filter.

mod action;
mod classifier;
mod ct;
mod emc;
mod ext;
pub mod group;
mod learn;
pub(crate) mod match_;
pub mod meter;
mod parse;
mod regs;
mod subtable;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_ovs;

use std::fmt;

pub use action::{
    Action, Actions, REASON_ACTION, REASON_INVALID_TTL, REASON_NO_MATCH, SetField, Single,
    ToController, parse_actions,
};
pub use classifier::{Added, Classifier, Expired, FlowId, FlowStats};
pub use ct::{CtAction, CtNat, ct_state};
pub use emc::Emc;
pub use ext::{ExtField, ExtKey, ExtMatch};
pub use learn::{Learn, LearnSpec, LearnSrc};
pub(crate) use match_::Words;
pub use match_::{DEFAULT_PRIORITY, Masked, Match, NO_VLAN, PacketKey, PortRef};
pub use parse::{FlowFilter, parse_filter, parse_flow, parse_num, parse_port};
pub use regs::{Field, PktField, Subfield};

/// How a group or meter is written: OpenFlow's GROUP_MOD and METER_MOD commands, ovs-ofctl's
/// `add-group`/`mod-group` and `add-meter`/`mod-meter`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryWrite {
    /// ADD: refused when the id exists (OFPGMFC_GROUP_EXISTS, OFPMMFC_METER_EXISTS).
    Add,
    /// MODIFY: refused when the id does not exist (OFPGMFC_UNKNOWN_GROUP,
    /// OFPMMFC_UNKNOWN_METER).
    Modify,
    /// Add or replace (restoring the running configuration).
    AddOrModify,
}

/// Why a flow (or a filter) was refused. Every message names the offending text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FlowError {
    /// A key that is not a field.
    #[error("unknown field '{0}'")]
    UnknownField(String),
    /// A value that does not parse or is out of range.
    #[error("{field}: bad value '{value}' ({why})")]
    BadValue {
        /// The field as written.
        field: String,
        /// The value as written.
        value: String,
        /// What is wrong.
        why: String,
    },
    /// A mask that does not parse or is out of range.
    #[error("{field}: bad mask '{mask}' ({why})")]
    BadMask {
        /// The field as written.
        field: String,
        /// The mask as written.
        mask: String,
        /// What is wrong.
        why: String,
    },
    /// A field whose prerequisite (dl_type, nw_proto) is missing.
    #[error("{field}: needs {needs} (prerequisite)")]
    Prerequisite {
        /// The field as written.
        field: String,
        /// What it needs, e.g. `nw_proto=6 (tcp) or 17 (udp)`.
        needs: String,
    },
    /// A field set twice with different values.
    #[error("'{token}': conflicts with an earlier {field}")]
    Conflict {
        /// The text that conflicts.
        token: String,
        /// The field it sets.
        field: String,
    },
    /// `add-flow` without `actions=`.
    #[error("missing 'actions=' (add-flow needs one, last, e.g. actions=drop)")]
    MissingActions,
    /// A key allowed in `add-flow` but not in a match (del-flows, dump-flows).
    #[error("{field}: not allowed in a match (del-flows, dump-flows)")]
    NotAllowed {
        /// The key as written.
        field: String,
    },
    /// An action name uvs does not know.
    #[error("unknown action '{0}'")]
    UnknownAction(String),
    /// A known action with a bad argument or in a bad place.
    #[error("{action}: {why}")]
    BadAction {
        /// The action as written.
        action: String,
        /// What is wrong.
        why: String,
    },
    /// A port name the bridge does not have.
    #[error("{what}: unknown port '{port}'")]
    UnknownPort {
        /// Where it was named (`in_port`, `output:p9`).
        what: String,
        /// The port as written.
        port: String,
    },
}

/// One flow: where it lives, what it matches, what it does.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Flow {
    /// Table 0-254.
    pub table: u8,
    /// Higher wins; `DEFAULT_PRIORITY` (32768) when not given.
    pub priority: u16,
    /// Opaque controller value.
    pub cookie: u64,
    /// Seconds without a hit before the flow expires (0: never).
    pub idle_timeout: u16,
    /// Seconds after installation before the flow expires (0: never).
    pub hard_timeout: u16,
    /// The match.
    pub m: Match,
    /// The actions (empty: drop).
    pub actions: Vec<Action>,
    /// `send_flow_rem` (OFPFF_SEND_FLOW_REM): a FLOW_REMOVED goes to the bridge's OpenFlow
    /// connections when the flow expires or is deleted.
    pub send_flow_rem: bool,
}

impl Default for Flow {
    /// `priority=32768, actions=drop` matching everything in table 0.
    fn default() -> Flow {
        Flow {
            table: 0,
            priority: DEFAULT_PRIORITY,
            cookie: 0,
            idle_timeout: 0,
            hard_timeout: 0,
            m: Match::default(),
            actions: Vec::new(),
            send_flow_rem: false,
        }
    }
}

impl Flow {
    /// `priority=0,actions=NORMAL`: every bridge's default flow.
    pub fn default_normal() -> Flow {
        Flow {
            priority: 0,
            actions: vec![Action::Normal],
            ..Flow::default()
        }
    }

    /// Every port the flow names (in_port, outputs, also inside `clone(...)`), for validation
    /// against a bridge.
    pub fn ports(&self) -> impl Iterator<Item = (&'static str, &PortRef)> {
        fn outs<'a>(list: &'a [Action], v: &mut Vec<(&'static str, &'a PortRef)>) {
            for a in list {
                match a {
                    Action::Output(p) | Action::OutputTrunc(p, _) => v.push(("output", p)),
                    Action::Clone(inner) => outs(inner, v),
                    _ => {}
                }
            }
        }
        let mut v = Vec::new();
        outs(&self.actions, &mut v);
        self.m
            .in_port
            .as_ref()
            .map(|p| ("in_port", p))
            .into_iter()
            .chain(v)
    }

    /// True if one of the flow's actions, or of the actions inside its `clone(...)`s, is one
    /// `pick` says.
    pub fn any_action(&self, mut pick: impl FnMut(&Action) -> bool) -> bool {
        fn any(list: &[Action], pick: &mut dyn FnMut(&Action) -> bool) -> bool {
            list.iter().any(|a| match a {
                Action::Clone(inner) => any(inner, pick),
                a => pick(a),
            })
        }
        any(&self.actions, &mut pick)
    }

    /// True if the flow outputs to OpenFlow port `port` (`output:P`, `output(port=P,..)`, also
    /// inside `clone(...)`): what ovs-ofctl's `out_port=P` selects. Ports are numbers once the
    /// flow is in a bridge.
    pub fn outputs_to(&self, port: u16) -> bool {
        self.any_action(
            |a| matches!(a, Action::Output(p) | Action::OutputTrunc(p, _) if p.num() == port),
        )
    }

    /// True if the flow sends packets to group `id` (`group:N`, also inside `clone(...)`):
    /// deleting the group deletes the flow, as OpenFlow and OVS do.
    pub fn uses_group(&self, id: u32) -> bool {
        self.any_action(|a| matches!(a, Action::Group(g) if *g == id))
    }

    /// True if the flow's actions use meter `id` (`meter:N`, also inside `clone(...)`).
    pub fn uses_meter(&self, id: u32) -> bool {
        self.any_action(|a| matches!(a, Action::Meter(m) if *m == id))
    }

    /// True if the flow tracks connections (`ct(...)`, also inside `clone(...)`).
    pub fn uses_ct(&self) -> bool {
        self.any_action(|a| matches!(a, Action::Ct(_)))
    }

    /// Every port reference of the flow (in_port, outputs), to rewrite them (names to numbers
    /// when a flow is added, numbers to names for `dump-flows --names`).
    pub fn ports_mut(&mut self) -> impl Iterator<Item = &mut PortRef> {
        fn outs<'a>(list: &'a mut [Action], v: &mut Vec<&'a mut PortRef>) {
            for a in list {
                match a {
                    Action::Output(p) | Action::OutputTrunc(p, _) => v.push(p),
                    Action::Clone(inner) => outs(inner, v),
                    _ => {}
                }
            }
        }
        let mut v = Vec::new();
        outs(&mut self.actions, &mut v);
        self.m.in_port.as_mut().into_iter().chain(v)
    }

    /// The match and actions, ovs-ofctl style: `priority=100,icmp,nw_src=10.0.0.1 actions=drop`.
    fn write_body(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.m.to_string();
        if self.priority != DEFAULT_PRIORITY {
            write!(f, "priority={}", self.priority)?;
            if !m.is_empty() {
                f.write_str(",")?;
            }
        }
        f.write_str(&m)?;
        if self.priority != DEFAULT_PRIORITY || !m.is_empty() {
            f.write_str(" ")?;
        }
        write!(f, "actions={}", Actions(&self.actions))
    }

    /// The `dump-flows` line: `cookie=0x0, duration=1.234s, table=0, n_packets=3, n_bytes=294,
    /// idle_timeout=10, idle_age=1, priority=100,icmp actions=drop`.
    pub fn dump_line(&self, stats: &FlowStats, now_ms: u64) -> String {
        struct D<'a>(&'a Flow, &'a FlowStats, u64);
        impl fmt::Display for D<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                let (fl, st, now) = (self.0, self.1, self.2);
                write!(
                    f,
                    "cookie={:#x}, duration={}, table={}, n_packets={}, n_bytes={}, ",
                    fl.cookie,
                    Seconds(now.saturating_sub(st.created_ms)),
                    fl.table,
                    st.n_packets,
                    st.n_bytes
                )?;
                if fl.idle_timeout != 0 {
                    write!(f, "idle_timeout={}, ", fl.idle_timeout)?;
                }
                if fl.hard_timeout != 0 {
                    write!(f, "hard_timeout={}, ", fl.hard_timeout)?;
                }
                if fl.send_flow_rem {
                    f.write_str("send_flow_rem ")?;
                }
                write!(f, "idle_age={}, ", now.saturating_sub(st.used_ms) / 1000)?;
                fl.write_body(f)
            }
        }
        D(self, stats, now_ms).to_string()
    }
}

impl fmt::Display for Flow {
    /// `dump-flows --no-stats` style: `cookie=0x5, table=1, idle_timeout=10, priority=100,icmp
    /// actions=drop` (cookie, table and timeouts only when not zero).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.cookie != 0 {
            write!(f, "cookie={:#x}, ", self.cookie)?;
        }
        if self.table != 0 {
            write!(f, "table={}, ", self.table)?;
        }
        if self.idle_timeout != 0 {
            write!(f, "idle_timeout={}, ", self.idle_timeout)?;
        }
        if self.hard_timeout != 0 {
            write!(f, "hard_timeout={}, ", self.hard_timeout)?;
        }
        if self.send_flow_rem {
            f.write_str("send_flow_rem ")?;
        }
        self.write_body(f)
    }
}

/// A duration in milliseconds as OVS prints one: seconds with three decimals (`1.234s`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seconds(pub u64);

impl fmt::Display for Seconds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:03}s", self.0 / 1000, self.0 % 1000)
    }
}
