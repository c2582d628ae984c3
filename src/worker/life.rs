//! Port lifecycle: ports whose netdev goes down, disappears, comes back or changes MTU.
//!
//! Contract:
//! - Every AF_XDP and TAP port has a [`PortLife`]: its configuration (to reopen it), its state
//!   ([`LinkState`]: `up`, `down`, `gone`) and the reason for the last change. A port that is
//!   not `up` keeps its name, id, bridge, VLAN mode, flows and counters in the datapath, but its
//!   kernel resources are closed and its frames are back in the pool: frames sent to it are
//!   freed at flush, the worker polls nothing of it and goes back to sleep.
//! - Sources, all handled in housekeeping (never on the fast path): link events from the
//!   netlink socket ([`LinkMonitor`]), a full reread of sysfs after the socket overflowed (or
//!   every second if it could not be opened), and [`Port::fault`] (an fd error such as EBADFD on
//!   a TAP whose namespace was deleted, ENXIO on an AF_XDP socket the kernel unbound).
//! - AF_XDP and AF_PACKET (the same rules): `RTM_DELLINK` of the port's ifindex -> `gone`;
//!   `IFF_UP` cleared -> `down`; the port's ifindex under another name (`ip link set X name Y`)
//!   -> `gone (netdev renamed to Y)`, as the device the port names no longer exists; a
//!   netdev of the port's name that is up (a new ifindex: a container restarted with a new veth
//!   of the same name, or the same one set up again) -> reopened (sockets and XDP on the new
//!   ifindex) -> `up`. An MTU change is applied live; an MTU a frame cannot hold takes the port
//!   `down` with the reason, and it reopens once the MTU fits again.
//! - TAP: the state is `up` or `gone`. A TAP moved into a container's namespace leaves uvs's
//!   namespace (an `RTM_DELLINK` here) while its fd keeps working, so only the fd says it is
//!   gone. uvs does not recreate a gone TAP by itself (its container is gone; a new one is
//!   handed a new TAP by `add-port`, which replaces a port that is not `up`), but a TAP device of
//!   that name appearing in uvs's namespace (`ip tuntap add NAME mode tap`) is attached again.
//! - Each change is logged once (tracing, `info`): port, bridge, old -> new state, reason.
//! - The rules themselves are [`decide`], IO-free and unit-tested; the worker methods here only
//!   carry out its steps (close, reopen, apply an MTU). Closing and reopening a device happen
//!   on the worker's port thread; the worker only swaps the result in (see `worker::open`).

use crate::config::PortSpec;
use crate::port::link::{LinkChange, LinkEvent, LinkMonitor, query};
use crate::port::{Port, PortKind};

use super::Worker;

/// Without a netlink socket, sysfs is reread this often (ms).
const RESYNC_MS: u64 = 1000;
/// A failed reopen of a netdev that is up is tried again this often (ms).
pub const RETRY_MS: u64 = 500;

/// A port's state, as `show` and `stats` report it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkState {
    /// Open and forwarding.
    Up,
    /// The netdev exists but is administratively down (or its MTU does not fit a frame).
    Down,
    /// The netdev is gone.
    Gone,
}

impl std::fmt::Display for LinkState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LinkState::Up => "up",
            LinkState::Down => "down",
            LinkState::Gone => "gone",
        })
    }
}

/// What the worker knows about a port's device. See the module documentation.
#[derive(Debug, Clone)]
pub struct PortLife {
    /// How to reopen it (None: in-memory and tunnel ports, always up).
    pub spec: Option<PortSpec>,
    /// The state.
    pub state: LinkState,
    /// Why it is in that state.
    pub reason: String,
    /// The ifindex of the device the port was opened on.
    pub ifindex: u32,
    /// The port's details when it was last open.
    pub details: String,
    /// Reopening failed while the netdev was up (EBUSY while the kernel still releases the old
    /// sockets, ...), or had to wait for the previous device's release: housekeeping tries
    /// again every [`RETRY_MS`].
    pub retry: bool,
    /// The reopen attempt the port thread is working on (see `worker::open`), if any.
    pub opening: Option<u64>,
}

impl PortLife {
    /// An open port.
    pub fn up(spec: Option<PortSpec>, ifindex: u32, details: String) -> PortLife {
        PortLife {
            spec,
            state: LinkState::Up,
            reason: "added".into(),
            ifindex,
            details,
            retry: false,
            opening: None,
        }
    }
}

/// The link-event side of the worker, kept together.
#[derive(Default)]
pub(crate) struct Links {
    /// The netlink socket (None if it could not be opened: sysfs is polled instead).
    pub monitor: Option<LinkMonitor>,
    /// Reused event buffer.
    events: Vec<LinkEvent>,
    /// When sysfs was last reread (ms).
    last_resync_ms: u64,
    /// When failed reopens were last retried (ms).
    last_retry_ms: u64,
}

impl Links {
    /// Open the netlink socket; without it, fall back to polling sysfs.
    pub fn open() -> Links {
        let monitor = match LinkMonitor::open() {
            Ok(m) => Some(m),
            Err(e) => {
                tracing::warn!("no netlink link events ({e}); polling sysfs every second");
                None
            }
        };
        Links {
            monitor,
            ..Links::default()
        }
    }
}

/// What a link event asks of a port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// Move to this state (closing the port unless it is `Up`), for this reason.
    State(LinkState, &'static str),
    /// The device was renamed to the event's name: `gone`, with the new name in the reason.
    Renamed,
    /// Open the port again on the device that now has its name.
    Reopen,
    /// The device's MTU is now this.
    Mtu(u32),
}

/// The lifecycle rules (see the module documentation), IO-free: what event `ev` on the device of
/// a port named `name` of `kind` in `state`, opened on ifindex `known`, asks for, in order.
/// `ev` is about the port's device when it carries the port's name or its ifindex.
pub(crate) fn decide(
    kind: PortKind,
    state: LinkState,
    (name, known): (&str, u32),
    ev: &LinkEvent,
) -> Vec<Step> {
    let mut steps = Vec::new();
    if ev.name != name {
        // Only the port's own device under a new name concerns it.
        if let LinkChange::New { .. } = ev.change
            && kind.on_netdev()
            && ev.ifindex == known
            && state != LinkState::Gone
        {
            steps.push(Step::Renamed);
        }
        if !(matches!(ev.change, LinkChange::Del) && ev.ifindex == known) {
            return steps;
        }
    }
    match (kind, &ev.change) {
        (k, LinkChange::Del)
            if k.on_netdev() && ev.ifindex == known && state != LinkState::Gone =>
        {
            steps.push(Step::State(LinkState::Gone, "netdev deleted"));
        }
        (k, &LinkChange::New { up, mtu }) if k.on_netdev() => {
            let mut state = state;
            if state == LinkState::Up && ev.ifindex != known {
                steps.push(Step::State(LinkState::Gone, "netdev replaced"));
                state = LinkState::Gone;
            }
            match (up, state) {
                (false, LinkState::Up) => {
                    steps.push(Step::State(LinkState::Down, "netdev set down"));
                }
                (false, LinkState::Gone) => {
                    steps.push(Step::State(LinkState::Down, "netdev is back but down"));
                }
                (false, LinkState::Down) => {}
                (true, LinkState::Up) => steps.push(Step::Mtu(mtu)),
                (true, _) => steps.push(Step::Reopen),
            }
        }
        (PortKind::Tap, &LinkChange::New { mtu, .. }) => {
            if state == LinkState::Gone {
                steps.push(Step::Reopen);
            } else if ev.ifindex == known {
                steps.push(Step::Mtu(mtu));
            }
        }
        _ => {}
    }
    steps
}

impl Worker {
    /// The lifecycle record of port `id`.
    pub(crate) fn life(&self, id: u16) -> Option<&PortLife> {
        self.life.get(id as usize).and_then(|l| l.as_ref())
    }

    /// Housekeeping for ports: link events, faults, budgets. Called every 1024 iterations and
    /// after every sleep.
    pub(crate) fn housekeep_ports(&mut self, now_ms: u64) {
        self.observe.housekeep(&self.dp);
        self.read_link_events(now_ms);
        if now_ms.saturating_sub(self.links.last_retry_ms) >= RETRY_MS {
            self.links.last_retry_ms = now_ms;
            let retry: Vec<u16> = (0..self.life.len() as u16)
                .filter(|&id| self.life(id).is_some_and(|l| l.retry))
                .collect();
            for id in retry {
                self.reopen(id);
            }
        }
        for id in 0..self.ports.len() {
            let fault = self.ports[id]
                .as_ref()
                .and_then(|p| p.fault().map(str::to_string));
            if let Some(reason) = fault {
                self.set_state(id as u16, LinkState::Gone, reason);
            }
        }
        for p in self.ports.iter_mut().flatten() {
            p.housekeep(&mut self.frames, now_ms);
        }
    }

    /// Apply the link events queued since the last read (or reread sysfs, see the module
    /// documentation). Also called by `add-port` before it attaches a device: events queued
    /// before the port existed describe the netdev's past (created down, then set up), and a
    /// busy worker, which reads them only every 1,024 iterations, applied them to the new port
    /// (down, then reopened: its first frames lost, with no counter; found under load).
    pub(crate) fn read_link_events(&mut self, now_ms: u64) {
        let mut evs = std::mem::take(&mut self.links.events);
        let overflow = match self.links.monitor.as_mut() {
            Some(m) => m.read(&mut evs),
            None => now_ms.saturating_sub(self.links.last_resync_ms) >= RESYNC_MS,
        };
        for ev in evs.drain(..) {
            self.on_link(ev);
        }
        self.links.events = evs;
        if overflow {
            self.links.last_resync_ms = now_ms;
            self.resync();
        }
    }

    /// Reread every port's device from sysfs (after lost events).
    fn resync(&mut self) {
        let names: Vec<(u16, String)> = self
            .life
            .iter()
            .enumerate()
            .filter_map(|(i, l)| Some((i as u16, l.as_ref()?.spec.as_ref()?.name.clone())))
            .collect();
        for (id, name) in names {
            match query(&name) {
                Some((ifindex, up, mtu)) => self.on_link(LinkEvent {
                    ifindex,
                    name,
                    change: LinkChange::New { up, mtu },
                }),
                // A TAP in a container's namespace is not in sysfs here: its fd decides.
                None if self.life(id).is_some_and(|l| l.state != LinkState::Gone)
                    && self.port(id).is_some_and(|s| s.kind.on_netdev()) =>
                {
                    self.set_state(id, LinkState::Gone, "netdev not found".into());
                }
                None => {}
            }
        }
    }

    fn port(&self, id: u16) -> Option<&crate::datapath::PortState> {
        self.dp.port(id)
    }

    /// Apply one link event to the port of that name and to the port opened on that ifindex
    /// under another name (renamed), if any.
    fn on_link(&mut self, ev: LinkEvent) {
        let by_name = self.dp.port_id(&ev.name);
        let by_ifindex = (ev.ifindex != 0)
            .then(|| {
                self.life.iter().position(|l| {
                    l.as_ref().is_some_and(|l| {
                        l.ifindex == ev.ifindex
                            && l.spec.as_ref().is_some_and(|s| s.name != ev.name)
                    })
                })
            })
            .flatten()
            .map(|i| i as u16);
        for id in by_name.into_iter().chain(by_ifindex) {
            self.on_link_of(id, &ev);
        }
    }

    /// Apply link event `ev` to port `id`.
    fn on_link_of(&mut self, id: u16, ev: &LinkEvent) {
        let Some(life) = self.life(id) else { return };
        let Some(spec) = life.spec.as_ref() else {
            return;
        };
        for step in decide(spec.kind, life.state, (&spec.name, life.ifindex), ev) {
            match step {
                Step::State(state, why) => self.set_state(id, state, why.into()),
                Step::Renamed => {
                    let why = format!("netdev renamed to {}", ev.name);
                    self.set_state(id, LinkState::Gone, why);
                }
                Step::Reopen => self.reopen(id),
                Step::Mtu(mtu) => self.apply_mtu(id, mtu),
            }
        }
    }

    /// A new MTU on an open port's device.
    fn apply_mtu(&mut self, id: u16, mtu: u32) {
        let Some(st) = self.dp.port(id) else { return };
        if mtu == 0 || mtu == st.mtu {
            return;
        }
        let (name, bridge, old) = (st.name.clone(), st.bridge, st.mtu);
        let fits = match st.kind {
            PortKind::Afxdp => crate::port::afxdp::check_mtu(&name, mtu).map_err(|e| e.to_string()),
            PortKind::Afpacket => {
                crate::port::afpacket::check_mtu(&name, mtu).map_err(|e| e.to_string())
            }
            _ => Ok(()),
        };
        if let Err(e) = fits {
            self.set_state(id, LinkState::Down, e);
            return;
        }
        if let Some(Some(p)) = self.ports.get_mut(id as usize) {
            p.set_mtu(mtu);
        }
        if let Some(st) = self.dp.port_mut(id) {
            st.mtu = mtu;
        }
        self.dp.update_l3_mtu(bridge);
        let b = self.bridge_name(bridge);
        tracing::info!("port {name} (bridge {b}): mtu {old} -> {mtu}");
    }

    /// Open a port that is not up again, from its configuration: on the port thread (see
    /// `worker::open`), which answers with `Command::Reopened`. While the previous device is
    /// still being released, or an attempt is under way, the reopen waits for housekeeping.
    pub(crate) fn reopen(&mut self, id: u16) {
        let Some(spec) = self.life(id).and_then(|l| l.spec.clone()) else {
            return;
        };
        let busy = self.closing.contains(&id);
        let Some(Some(l)) = self.life.get_mut(id as usize) else {
            return;
        };
        if l.opening.is_some() {
            return;
        }
        if busy {
            l.retry = true;
            return;
        }
        self.open_seq += 1;
        let seq = self.open_seq;
        l.opening = Some(seq);
        let umem = match spec.kind {
            PortKind::Afxdp => self.umem_dup().unwrap_or(None),
            _ => None,
        };
        let job = super::open::Job::Open {
            id,
            seq,
            spec: Box::new(spec),
            umem,
        };
        if self.jobs.send(job).is_err() {
            // No port thread (a worker not made by `spawn`): open here.
            if let Some(Some(l)) = self.life.get_mut(id as usize) {
                l.opening = None;
            }
            let Some(spec) = self.life(id).and_then(|l| l.spec.clone()) else {
                return;
            };
            // (Reopens are of AF_XDP and AF_PACKET ports: no TAP address to give.)
            let r = self.open_io(id, &spec, "");
            self.reopen_done(id, &spec, r);
        }
    }

    /// The port thread's answer to reopen attempt `seq` of port `id`. An answer the port no
    /// longer waits for (deleted, replaced, its netdev gone again) is released again.
    pub(crate) fn reopened(&mut self, id: u16, seq: u64, port: Result<Box<dyn Port>, String>) {
        let wanted = self.life(id).is_some_and(|l| l.opening == Some(seq));
        if !wanted {
            if let Ok(p) = port {
                self.release_later(None, p);
            }
            return;
        }
        if let Some(Some(l)) = self.life.get_mut(id as usize) {
            l.opening = None;
        }
        let Some(spec) = self.life(id).and_then(|l| l.spec.clone()) else {
            return;
        };
        let r = port.and_then(|mut p| match p.attach(id, &mut self.frames) {
            Ok(()) => {
                if let Some(fd) = p.shared_umem_fd() {
                    self.umem_fds.push((id, fd));
                }
                Ok(p)
            }
            Err(e) => {
                self.release_later(None, p);
                Err(e)
            }
        });
        self.reopen_done(id, &spec, r);
    }

    /// Swap a reopened port in, or record why it could not be reopened.
    fn reopen_done(&mut self, id: u16, spec: &PortSpec, r: Result<Box<dyn Port>, String>) {
        match r {
            Ok(p) => {
                let (ifindex, mtu, details) = (p.ifindex(), p.mtu(), p.details());
                let bridge = self.dp.port(id).map(|s| s.bridge);
                if let Some(st) = self.dp.port_mut(id) {
                    st.mtu = mtu;
                }
                if let Some(b) = bridge {
                    self.dp.update_l3_mtu(b);
                }
                self.ports[id as usize] = Some(self.relayed(id, p));
                if let Some(Some(l)) = self.life.get_mut(id as usize) {
                    l.ifindex = ifindex;
                    l.details = details;
                    l.retry = false;
                }
                self.set_state(id, LinkState::Up, format!("reattached (ifindex {ifindex})"));
            }
            Err(e) => {
                // A TAP is up or gone; an AF_XDP port whose device exists is down. Retry while
                // the device is there (and up, for AF_XDP): EBUSY is common right after the
                // previous owner let go (the kernel releasing old sockets, `ip tuntap add`
                // still holding the TAP).
                let now = query(&spec.name);
                let tap = spec.kind == PortKind::Tap;
                let next = match now {
                    Some(_) if !tap => LinkState::Down,
                    _ => LinkState::Gone,
                };
                self.set_state(id, next, format!("reopen failed: {e}"));
                if let Some(Some(l)) = self.life.get_mut(id as usize) {
                    l.retry = matches!(now, Some((_, up, _)) if up || tap);
                }
            }
        }
    }

    /// Change port `id`'s state; leaving `up` closes its kernel resources, returns its frames
    /// and forgets the MACs learned on it. Logs the change.
    pub(crate) fn set_state(&mut self, id: u16, new: LinkState, reason: String) {
        let Some(Some(life)) = self.life.get_mut(id as usize) else {
            return;
        };
        let old = life.state;
        if new != LinkState::Up {
            // An attempt under way is for a device that went again: its answer is dropped.
            life.opening = None;
        }
        if old == new && life.reason == reason {
            return;
        }
        life.state = new;
        life.reason = reason.clone();
        if new == LinkState::Up {
            life.retry = false;
        }
        if new != LinkState::Up
            && let Some(p) = self.ports.get_mut(id as usize).and_then(Option::take)
        {
            life.details = p.details();
            self.umem_fds.retain(|(p, _)| *p != id);
            // Released on the port thread, reclaimed when it comes back (`worker::open`).
            self.release_later(Some(id), p);
        }
        let Some(st) = self.dp.port(id) else { return };
        let (name, bridge) = (st.name.clone(), st.bridge);
        if new != LinkState::Up
            && let Some(b) = self.dp.bridge_mut(bridge)
        {
            b.fdb.flush(Some(id));
        }
        let b = self.bridge_name(bridge);
        tracing::info!("port {name} (bridge {b}): {old} -> {new} ({reason})");
        if old != new {
            self.port_status(id, crate::events::PORT_MODIFY);
        }
    }

    fn bridge_name(&self, b: u16) -> String {
        self.dp
            .bridge(b)
            .map(|b| b.name.clone())
            .unwrap_or_default()
    }

    /// After `add-port`: an AF_XDP or AF_PACKET port whose netdev is administratively down starts `down`.
    pub(crate) fn check_initial_state(&mut self, id: u16, name: &str) {
        if self.port(id).is_some_and(|s| s.kind.on_netdev())
            && let Some((_, false, _)) = query(name)
        {
            self.set_state(id, LinkState::Down, "netdev is down".into());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use LinkState::{Down, Gone, Up};

    fn new(ifindex: u32, up: bool, mtu: u32) -> LinkEvent {
        LinkEvent {
            ifindex,
            name: "p".into(),
            change: LinkChange::New { up, mtu },
        }
    }

    fn del(ifindex: u32) -> LinkEvent {
        LinkEvent {
            ifindex,
            name: "p".into(),
            change: LinkChange::Del,
        }
    }

    #[test]
    fn afxdp_veth_deleted_then_recreated() {
        let k = PortKind::Afxdp;
        assert_eq!(
            decide(k, Up, ("p", 7), &del(7)),
            [Step::State(Gone, "netdev deleted")]
        );
        // Another device's deletion, or a second one, changes nothing.
        assert!(decide(k, Up, ("p", 7), &del(9)).is_empty());
        assert!(decide(k, Gone, ("p", 7), &del(7)).is_empty());
        // The new veth appears down, then is set up: reopen on it.
        assert_eq!(
            decide(k, Gone, ("p", 7), &new(12, false, 1500)),
            [Step::State(Down, "netdev is back but down")]
        );
        assert_eq!(
            decide(k, Down, ("p", 7), &new(12, true, 1500)),
            [Step::Reopen]
        );
        // Replaced while we missed the deletion (netlink overflow): close, then reopen.
        assert_eq!(
            decide(k, Up, ("p", 7), &new(12, true, 1500)),
            [Step::State(Gone, "netdev replaced"), Step::Reopen]
        );
    }

    #[test]
    fn afxdp_down_up_and_mtu() {
        let k = PortKind::Afxdp;
        assert_eq!(
            decide(k, Up, ("p", 7), &new(7, false, 1500)),
            [Step::State(Down, "netdev set down")]
        );
        assert!(decide(k, Down, ("p", 7), &new(7, false, 1500)).is_empty());
        assert_eq!(
            decide(k, Down, ("p", 7), &new(7, true, 1500)),
            [Step::Reopen]
        );
        assert_eq!(
            decide(k, Up, ("p", 7), &new(7, true, 1400)),
            [Step::Mtu(1400)]
        );
    }

    #[test]
    fn afpacket_follows_its_netdev_like_afxdp() {
        let k = PortKind::Afpacket;
        assert_eq!(
            decide(k, Up, ("p", 7), &del(7)),
            [Step::State(Gone, "netdev deleted")]
        );
        assert_eq!(
            decide(k, Gone, ("p", 7), &new(12, true, 1500)),
            [Step::Reopen]
        );
        assert_eq!(
            decide(k, Up, ("p", 7), &new(7, false, 1500)),
            [Step::State(Down, "netdev set down")]
        );
        assert_eq!(
            decide(k, Up, ("p", 7), &new(7, true, 1400)),
            [Step::Mtu(1400)]
        );
    }

    fn named(name: &str, ev: LinkEvent) -> LinkEvent {
        LinkEvent {
            name: name.into(),
            ..ev
        }
    }

    #[test]
    fn a_renamed_netdev_is_gone_and_renaming_back_reattaches() {
        for k in [PortKind::Afxdp, PortKind::Afpacket] {
            // `ip link set p down; ip link set p name q; ip link set q up`.
            assert_eq!(
                decide(k, Up, ("p", 7), &new(7, false, 1500)),
                [Step::State(Down, "netdev set down")]
            );
            let q = |up| named("q", new(7, up, 1500));
            assert_eq!(decide(k, Down, ("p", 7), &q(false)), [Step::Renamed]);
            // Renamed while up (live rename): gone too.
            assert_eq!(decide(k, Up, ("p", 7), &q(true)), [Step::Renamed]);
            // Once gone, the device's changes under its new name are not the port's.
            assert!(decide(k, Gone, ("p", 7), &q(true)).is_empty());
            assert!(decide(k, Gone, ("p", 7), &named("q", del(7))).is_empty());
            // Another device of another name: not the port's.
            assert!(decide(k, Up, ("p", 7), &named("q", new(9, true, 1500))).is_empty());
            // Renamed back: reattached as any device of the port's name.
            assert_eq!(
                decide(k, Gone, ("p", 7), &new(7, false, 1500)),
                [Step::State(Down, "netdev is back but down")]
            );
            assert_eq!(
                decide(k, Down, ("p", 7), &new(7, true, 1500)),
                [Step::Reopen]
            );
        }
        // A TAP's fd follows the device whatever its name: not a rename here.
        let tap = named("q", new(5, true, 1500));
        assert!(decide(PortKind::Tap, Up, ("p", 5), &tap).is_empty());
    }

    #[test]
    fn tap_moves_are_not_deaths() {
        let k = PortKind::Tap;
        // Moving a TAP into a container's namespace looks like a deletion here.
        assert!(decide(k, Up, ("p", 5), &del(5)).is_empty());
        assert!(
            decide(k, Up, ("p", 5), &new(5, false, 1500))
                .iter()
                .all(|s| *s == Step::Mtu(1500))
        );
        assert_eq!(
            decide(k, Up, ("p", 5), &new(5, true, 9000)),
            [Step::Mtu(9000)]
        );
        // A TAP of that name appearing after the port went: attach it.
        assert_eq!(
            decide(k, Gone, ("p", 5), &new(8, true, 1500)),
            [Step::Reopen]
        );
        // Another namespace's device of another ifindex while up: ignored.
        assert!(decide(k, Up, ("p", 5), &new(8, true, 1500)).is_empty());
    }
}
