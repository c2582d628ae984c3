//! Port mirrors (OVS's `Mirror` table): copies of the frames received on `select_src` ports and
//! sent to `select_dst` ports, queued to an output port of the same bridge.
//!
//! `add-mirror BRIDGE NAME select=PORTS output=PORT` selects the ports both ways (OVS's
//! `select_src_port` and `select_dst_port` together); `select_src=` and `select_dst=` choose one
//! way. Copies are taken as the frames cross the selected port (received frames before any
//! processing, sent frames as handed to the port) and leave the output port unchanged (tags
//! included). The output port must not be selected and cannot be a VXLAN port. Frames that the output port itself sends
//! or receives are never mirrored. A copy that finds the frame pool empty is counted in the
//! mirror's `dropped`. Unlike OVS, the output port still takes part in normal switching (it
//! learns and receives floods); give the monitor a port of its own that nothing else uses.

use serde_json::{Value, json};

use crate::datapath::Datapath;
use crate::packet::{Desc, Frames};

/// What `add-mirror` asks for.
#[derive(Debug, Clone, Default)]
pub struct MirrorSpec {
    /// Bridge name.
    pub bridge: String,
    /// Mirror name.
    pub name: String,
    /// Ports whose received frames are mirrored.
    pub select_src: Vec<String>,
    /// Ports whose sent frames are mirrored.
    pub select_dst: Vec<String>,
    /// Where the copies go.
    pub output: String,
}

impl MirrorSpec {
    /// Parse the configuration file's form, `NAME select_src=P,Q select_dst=P output=M`.
    pub fn parse_text(bridge: &str, text: &str) -> Result<MirrorSpec, String> {
        let mut words = text.split_whitespace().map(str::to_string);
        let name = words
            .next()
            .ok_or_else(|| "empty mirror: NAME select=PORTS output=PORT".to_string())?;
        MirrorSpec::from_args(bridge, &name, &words.collect::<Vec<_>>())
    }

    /// Parse `select=P,Q select_src=.. select_dst=.. output=P`; errors name the key.
    pub fn from_args(bridge: &str, name: &str, args: &[String]) -> Result<MirrorSpec, String> {
        let mut s = MirrorSpec {
            bridge: bridge.to_string(),
            name: name.to_string(),
            ..MirrorSpec::default()
        };
        crate::datapath::validate_name(name, "mirror")?;
        let list = |v: &str| -> Vec<String> {
            v.split(',')
                .filter(|x| !x.is_empty())
                .map(str::to_string)
                .collect()
        };
        for kv in args {
            match kv.split_once('=') {
                Some(("select", v)) => {
                    s.select_src.extend(list(v));
                    s.select_dst.extend(list(v));
                }
                Some(("select_src", v)) => s.select_src.extend(list(v)),
                Some(("select_dst", v)) => s.select_dst.extend(list(v)),
                Some(("output", v)) => s.output = v.to_string(),
                _ => {
                    return Err(format!(
                        "'{kv}': add-mirror takes select=PORTS, select_src=PORTS, select_dst=PORTS, output=PORT"
                    ));
                }
            }
        }
        if s.output.is_empty() {
            return Err("output=: missing (the port that receives the copies)".into());
        }
        if s.select_src.is_empty() && s.select_dst.is_empty() {
            return Err("select=: no port selected".into());
        }
        Ok(s)
    }
}

/// A mirror in the worker.
#[derive(Debug)]
pub struct Mirror {
    /// Bridge id.
    pub bridge: u16,
    /// Name (unique in its bridge).
    pub name: String,
    /// Ports whose received frames are copied (id, name).
    pub src: Vec<(u16, String)>,
    /// Ports whose sent frames are copied.
    pub dst: Vec<(u16, String)>,
    /// The output port.
    pub out: (u16, String),
    /// Copies queued to the output port.
    pub packets: u64,
    /// Copies lost (frame pool empty).
    pub dropped: u64,
}

impl Mirror {
    /// Resolve a spec against the datapath: every port must exist in the bridge.
    pub fn new(spec: MirrorSpec, dp: &Datapath) -> Result<Mirror, String> {
        let b = dp
            .bridge_id(&spec.bridge)
            .ok_or_else(|| format!("no bridge named '{}'", spec.bridge))?;
        let resolve = |n: &String, what: &str| -> Result<(u16, String), String> {
            dp.port_id(n)
                .filter(|id| dp.port(*id).is_some_and(|p| p.bridge == b))
                .map(|id| (id, n.clone()))
                .ok_or_else(|| format!("{what}: no port named '{n}' on bridge '{}'", spec.bridge))
        };
        let out = resolve(&spec.output, "output")?;
        if dp
            .port(out.0)
            .is_some_and(|p| p.kind == crate::port::PortKind::Vxlan)
        {
            return Err(format!(
                "output: '{}' is a VXLAN port (mirror to a port with a device)",
                out.1
            ));
        }
        let mut src = Vec::new();
        let mut dst = Vec::new();
        for n in &spec.select_src {
            src.push(resolve(n, "select")?);
        }
        for n in &spec.select_dst {
            dst.push(resolve(n, "select")?);
        }
        if src.iter().chain(&dst).any(|(id, _)| *id == out.0) {
            return Err(format!(
                "output: '{}' is also selected (a mirror cannot copy its own output)",
                out.1
            ));
        }
        src.dedup();
        dst.dedup();
        Ok(Mirror {
            bridge: b,
            name: spec.name,
            src,
            dst,
            out,
            packets: 0,
            dropped: 0,
        })
    }

    /// Copies frames received on `port`.
    #[inline]
    pub fn selects_src(&self, port: u16) -> bool {
        self.src.iter().any(|(p, _)| *p == port)
    }

    /// Copies frames sent to `port`.
    #[inline]
    pub fn selects_dst(&self, port: u16) -> bool {
        self.dst.iter().any(|(p, _)| *p == port)
    }

    /// Queue copies of `batch` to the output port.
    pub fn copy(
        &mut self,
        batch: &[Desc],
        dp: &mut Datapath,
        frames: &mut Frames,
        scratch: &mut Vec<Desc>,
    ) {
        scratch.clear();
        for d in batch {
            match frames.clone_frame(*d) {
                Some(c) => scratch.push(c),
                None => self.dropped += 1,
            }
        }
        match dp.out.get_mut(self.out.0 as usize) {
            Some(q) => {
                self.packets += scratch.len() as u64;
                q.append(scratch);
            }
            None => {
                self.dropped += scratch.len() as u64;
                for c in scratch.drain(..) {
                    frames.free(c.addr);
                }
            }
        }
    }

    /// True when one of its ports' ids no longer names it.
    pub fn is_stale(&self, dp: &Datapath) -> bool {
        let gone = |(id, n): &(u16, String)| dp.port(*id).is_none_or(|p| p.name != *n);
        gone(&self.out) || self.src.iter().any(gone) || self.dst.iter().any(gone)
    }

    /// Drop removed ports from the selection; false when the mirror itself must go (its
    /// output or its bridge is gone, or nothing is selected any more). `log`: say so.
    pub fn prune(&mut self, dp: &Datapath, log: bool) -> bool {
        let alive = |(id, n): &(u16, String)| dp.port(*id).is_some_and(|p| p.name == *n);
        self.src.retain(alive);
        self.dst.retain(alive);
        let keep = alive(&self.out) && !(self.src.is_empty() && self.dst.is_empty());
        if !keep && log {
            tracing::info!(mirror = %self.name, "mirror removed: its ports are gone");
        }
        keep
    }

    /// The configuration file's form (`MirrorSpec::parse_text` reads it back).
    pub fn spec_text(&self) -> String {
        let list = |v: &[(u16, String)]| {
            v.iter()
                .map(|(_, n)| n.as_str())
                .collect::<Vec<_>>()
                .join(",")
        };
        let mut t = self.name.clone();
        if !self.src.is_empty() {
            t += &format!(" select_src={}", list(&self.src));
        }
        if !self.dst.is_empty() {
            t += &format!(" select_dst={}", list(&self.dst));
        }
        t + &format!(" output={}", self.out.1)
    }

    /// The mirror as `show` lists it.
    pub fn row(&self, dp: &Datapath) -> Value {
        let names = |v: &[(u16, String)]| v.iter().map(|(_, n)| n.clone()).collect::<Vec<_>>();
        json!({
            "bridge": dp.bridge(self.bridge).map(|b| b.name.clone()),
            "name": self.name,
            "select_src": names(&self.src),
            "select_dst": names(&self.dst),
            "output": self.out.1,
            "packets": self.packets,
            "dropped": self.dropped,
        })
    }
}
