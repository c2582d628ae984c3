//! Observing the switch: packet capture and port mirroring taken in the datapath, Prometheus
//! metrics and the `uvs top` live view built on the worker's counters; latency percentiles for
//! the benchmarks.
//!
//! Contract:
//! - [`Observe`] is owned by the worker (no locks). The worker calls [`Observe::rx_tapped`]
//!   once per received burst and [`Observe::tx_tapped`] once per loop iteration: one predictable
//!   branch on a per-port flag, so ports nobody captures or mirrors pay nothing else. Only a
//!   flagged port's frames reach [`Observe::on_rx`] / [`Observe::before_flush`].
//! - Captures see a port's frames as they cross it: rx before the pipeline touches them (so
//!   VXLAN encapsulation is still there), tx as handed to the port (after NAT and
//!   encapsulation). Captured frames are copied (up to the snap length) into a bounded channel;
//!   when it is full the frame is counted as dropped by the capture, never waited for.
//! - Mirrors copy frames received on (`select_src`) or sent to (`select_dst`) their ports to the
//!   output port's queue, as OVS mirrors do; frames the output port itself receives or sends are
//!   not mirrored again.
//! - Taps and mirrors name their ports; when a port is removed (its id then names another port
//!   or none) the tap ends and the port leaves the mirror's selection (a mirror whose output is
//!   gone is removed).
//! - The daemon never opens a file a client names: capture data goes back over the control
//!   socket (see [`capture`]) and the client writes the pcapng file.

pub mod capture;
pub mod commands;
pub mod filter;
pub mod latency;
pub mod metrics;
pub mod mirror;
pub mod plot;
pub mod top;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use crate::datapath::Datapath;
use crate::packet::{Desc, Frames};
use crate::worker::Worker;
use capture::{Dir, Tap, TapSpec};
use mirror::{Mirror, MirrorSpec};

/// Port flag: received frames are captured or mirrored.
const RX: u8 = 1;
/// Port flag: transmitted frames are captured or mirrored.
const TX: u8 = 2;

/// What the control plane asks of the worker's observation state.
pub enum ObserveCmd {
    /// Start a capture.
    CaptureStart(Box<TapSpec>),
    /// Stop capture `id` (nothing happens if it already ended).
    CaptureStop(u64),
    /// Add a mirror.
    MirrorAdd(MirrorSpec),
    /// Remove mirror `name` of `bridge`.
    MirrorDel {
        /// Bridge name.
        bridge: String,
        /// Mirror name.
        name: String,
    },
    /// List mirrors.
    MirrorShow,
    /// Conntrack, NAT and observation counts (for metrics).
    Counts,
}

/// The worker's taps and mirrors. See the module documentation.
#[derive(Default)]
pub struct Observe {
    flags: Vec<u8>,
    any_tx: bool,
    taps: Vec<Tap>,
    mirrors: Vec<Mirror>,
    scratch: Vec<Desc>,
    /// Another worker's replica of the captures and mirrors (several workers): worker 0 logs
    /// their starts and ends, once.
    pub(crate) replica: bool,
}

/// Wall-clock nanoseconds since the epoch (capture timestamps).
fn wall_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

impl Observe {
    /// True when frames received on `port` are captured or mirrored.
    #[inline]
    pub fn rx_tapped(&self, port: u16) -> bool {
        self.flags.get(port as usize).is_some_and(|f| f & RX != 0)
    }

    /// True when some port's transmitted frames are captured or mirrored.
    #[inline]
    pub fn tx_tapped(&self) -> bool {
        self.any_tx
    }

    /// Frames just received on `port` (not yet processed): capture and mirror them.
    pub fn on_rx(&mut self, port: u16, dp: &mut Datapath, frames: &mut Frames, batch: &[Desc]) {
        if self.prune_if_stale(dp, port) {
            return;
        }
        let ts = wall_ns();
        let mut ended = false;
        for t in self
            .taps
            .iter_mut()
            .filter(|t| t.port == port && t.dir.rx())
        {
            for d in batch {
                if !t.offer(ts, Dir::Rx, frames.data(*d), dp.now_ms) {
                    ended = true;
                    break;
                }
            }
        }
        for m in self.mirrors.iter_mut() {
            if m.selects_src(port) {
                m.copy(batch, dp, frames, &mut self.scratch);
            }
        }
        if ended {
            self.end_finished(dp);
        }
    }

    /// Before the output queues are flushed: capture and mirror what flagged ports will send.
    pub fn before_flush(&mut self, dp: &mut Datapath, frames: &mut Frames) {
        let mut ts = None;
        let mut ended = false;
        for id in 0..self.flags.len().min(dp.out.len()) {
            if self.flags[id] & TX == 0 || dp.out[id].is_empty() {
                continue;
            }
            if self.prune_if_stale(dp, id as u16) {
                return;
            }
            let ts = *ts.get_or_insert_with(wall_ns);
            let q = std::mem::take(&mut dp.out[id]);
            for t in self
                .taps
                .iter_mut()
                .filter(|t| t.port == id as u16 && t.dir.tx())
            {
                for d in &q {
                    if !t.offer(ts, Dir::Tx, frames.data(*d), dp.now_ms) {
                        ended = true;
                        break;
                    }
                }
            }
            for m in self.mirrors.iter_mut() {
                if m.selects_dst(id as u16) {
                    m.copy(&q, dp, frames, &mut self.scratch);
                }
            }
            // Mirror copies may have been queued to this very port only if it is an output,
            // which selects_dst refuses; put the frames back in front.
            let added = std::mem::replace(&mut dp.out[id], q);
            dp.out[id].extend(added);
        }
        if ended {
            self.end_finished(dp);
        }
    }

    /// Remove taps and mirror members whose port id no longer names their port; true if any.
    fn prune_if_stale(&mut self, dp: &Datapath, port: u16) -> bool {
        let name = dp.port(port).map(|p| p.name.as_str());
        let stale_tap = self
            .taps
            .iter()
            .any(|t| t.port == port && Some(t.port_name.as_str()) != name);
        let stale_mirror = self.mirrors.iter().any(|m| m.is_stale(dp));
        if !stale_tap && !stale_mirror {
            return false;
        }
        self.prune(dp);
        true
    }

    /// A port was removed: end its captures and take it out of the mirrors (a mirror whose
    /// output goes, or that selects nothing any more, goes too), as OVS drops a deleted port
    /// from its Mirror rows. At once, not at the next frame: the running configuration (and
    /// the database written from it) must not name a port that is gone.
    pub fn prune(&mut self, dp: &Datapath) {
        self.taps.retain(|t| {
            let keep = dp.port(t.port).is_some_and(|p| p.name == t.port_name);
            if !keep {
                // The session logs the end, with this reason, when its client stops it.
                t.record_end(Some(capture::End::PortDeleted), dp.now_ms);
            }
            keep
        });
        let log = !self.replica;
        self.mirrors.retain_mut(|m| m.prune(dp, log));
        self.recompute();
    }

    /// Housekeeping: end the captures that finished without being offered a frame (a deadline
    /// passed on a quiet port, or, with several workers, the shared count was reached by
    /// another worker), so their stream closes.
    pub fn housekeep(&mut self, dp: &Datapath) {
        if self.taps.iter().any(|t| t.finished(dp.now_ms)) {
            self.end_finished(dp);
        }
    }

    /// Drop taps that reached their count, deadline, or lost their reader.
    fn end_finished(&mut self, dp: &Datapath) {
        let now = dp.now_ms;
        self.taps.retain(|t| {
            t.record_end(None, now);
            !t.finished(now)
        });
        self.recompute();
    }

    fn recompute(&mut self) {
        self.flags.iter_mut().for_each(|f| *f = 0);
        let mut set = |p: u16, bit: u8| {
            let i = p as usize;
            if self.flags.len() <= i {
                self.flags.resize(i + 1, 0);
            }
            self.flags[i] |= bit;
        };
        for t in &self.taps {
            if t.dir.rx() {
                set(t.port, RX);
            }
            if t.dir.tx() {
                set(t.port, TX);
            }
        }
        for m in &self.mirrors {
            m.src.iter().for_each(|(p, _)| set(*p, RX));
            m.dst.iter().for_each(|(p, _)| set(*p, TX));
        }
        self.any_tx = self.flags.iter().any(|f| f & TX != 0);
    }

    /// The mirrors of `bridge` (all when None), as JSON rows.
    pub fn mirror_rows(&self, dp: &Datapath) -> Vec<Value> {
        self.mirrors.iter().map(|m| m.row(dp)).collect()
    }

    /// The mirrors of bridge `bridge` in the configuration file's form (running config).
    pub fn mirror_specs(&self, bridge: u16) -> Vec<String> {
        self.mirrors
            .iter()
            .filter(|m| m.bridge == bridge)
            .map(|m| m.spec_text())
            .collect()
    }
}

impl Worker {
    /// Apply an [`ObserveCmd`].
    pub(crate) fn observe_apply(&mut self, cmd: ObserveCmd) -> Result<Value, String> {
        let obs = &mut self.observe;
        match cmd {
            ObserveCmd::CaptureStart(spec) => {
                let tap = Tap::start(*spec, &self.dp)?;
                let v = json!({"id": tap.id, "port": tap.port_name});
                if !obs.replica {
                    tracing::info!(capture = tap.id, port = %tap.port_name, "capture started");
                }
                obs.taps.push(tap);
                obs.recompute();
                Ok(v)
            }
            ObserveCmd::CaptureStop(id) => {
                let before = obs.taps.len();
                obs.taps.retain(|t| t.id != id);
                obs.recompute();
                Ok(json!({"stopped": before != obs.taps.len()}))
            }
            ObserveCmd::MirrorAdd(spec) => {
                let m = Mirror::new(spec, &self.dp)?;
                if obs
                    .mirrors
                    .iter()
                    .any(|x| x.bridge == m.bridge && x.name == m.name)
                {
                    return Err(format!("mirror '{}' already exists on that bridge", m.name));
                }
                let row = m.row(&self.dp);
                if !obs.replica {
                    tracing::info!(mirror = %m.name, "mirror added");
                }
                obs.mirrors.push(m);
                obs.recompute();
                Ok(row)
            }
            ObserveCmd::MirrorDel { bridge, name } => {
                let b = self
                    .dp
                    .bridge_id(&bridge)
                    .ok_or_else(|| format!("no bridge named '{bridge}'"))?;
                let before = obs.mirrors.len();
                obs.mirrors.retain(|m| !(m.bridge == b && m.name == name));
                if before == obs.mirrors.len() {
                    return Err(format!("no mirror named '{name}' on bridge '{bridge}'"));
                }
                obs.recompute();
                Ok(json!({"deleted": name}))
            }
            ObserveCmd::MirrorShow => Ok(json!({"mirrors": obs.mirror_rows(&self.dp)})),
            ObserveCmd::Counts => Ok(self.observe_counts()),
        }
    }

    fn observe_counts(&self) -> Value {
        let ct = &self.dp.nat.ct;
        let s = ct.stats();
        let flow_ct: usize = self.dp.bridges().map(|(_, b)| b.flows.ct.len()).sum();
        json!({
            "conntrack": {
                "connections": ct.len(),
                "limit": ct.limit(),
                "inserted": s.inserted,
                "expired": s.expired,
                "evicted": s.evicted,
                "table_full": s.table_full,
                "clashes": s.clashes,
                "ports_exhausted": s.ports_exhausted,
                "early_dropped": s.early_dropped,
                "source_limited": s.source_limited,
                "collisions": s.collisions,
                "reclaimed": s.reclaimed,
            },
            "flow_conntrack": flow_ct,
            "nat_rules": self.dp.nat.rules.len(),
            "captures": self.observe.taps.len(),
            "mirrors": self.observe.mirrors.len(),
            "frames": self.frames.capacity(),
            "frames_free": self.frames.free_count(),
        })
    }
}

#[cfg(test)]
mod tests;
