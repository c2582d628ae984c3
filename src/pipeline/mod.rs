//! The packet pipeline: one burst from one port runs through each stage before the next (VPP's
//! vector processing): with tunnels, `vxlan4-input` (VXLAN to a VTEP's gateway taken off the
//! burst and decapsulated) -> ingress (parse, VLAN, checksum completion) -> learn -> forward (FDB
//! lookup, or to the gateway) -> l3 (gateway ARP/ICMP, routing) -> output (egress VLAN, MTU,
//! per-port queues).
//!
//! Contract: `Pipeline::process` consumes every descriptor of the burst. Each frame ends up
//! queued in `Datapath::out[port]` for one or more ports (flooding copies it) or is dropped:
//! freed and counted with a `DropReason`. No allocation, no IO, no clock: `now` is passed in.

mod coalesce;
mod csum;
pub mod ct;
pub mod flood_limit;
pub mod flows;
mod fragment;
mod gateway_input;
pub mod gro;
mod gso;
mod ingress;
mod inner;
mod l2;
mod l3;
pub mod local_refuse;
mod nat;
mod output;
pub mod ratelimit;
pub mod reassembly;
pub mod runtime;
pub mod steer;
mod uso;
mod vxlan;
mod vxlan_input;

use crate::datapath::{BATCH, Datapath};
use crate::fdb::PortId;
use crate::packet::{Desc, Frames};
use inner::InnerBursts;
use runtime::{Node, Runtime};

/// Takes, out of a burst of decapsulated inner frames from a tunnel port, the frames another
/// worker owns (see [`Pipeline::process_steered`]).
pub type SteerFn<'a> = dyn FnMut(&Datapath, &mut Frames, PortId, &mut Vec<Desc>) + 'a;

/// Where a frame goes after the forwarding stage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Dest {
    /// Consumed or dropped (the frame was freed or re-queued elsewhere).
    Pending,
    /// Its destination sits on its ingress port: counted and freed by `output` (doing that
    /// in `l2-fwd` cost its per-frame loop a call's register pressure and a counter). Next to
    /// `Pending`, so "either of the two" is one comparison.
    SamePort,
    /// Not decided yet: the learning switch and router decide (NORMAL).
    Normal,
    /// One port.
    Port(PortId),
    /// Every other port of the bridge carrying the VLAN (but those set `no-flood`).
    Flood,
    /// A flow's `ALL`: `Flood`'s ports and those set `no-flood`.
    All,
    /// To the bridge's gateway (the router stage takes it).
    Router,
    /// Routed or generated: deliver within this bridge by its FDB (no ingress port to skip).
    Bridge(u16),
    /// Decapsulated: the inner frame enters its bridge through this tunnel port.
    Decap(PortId),
    /// To an IEEE 802.1D reserved address (01:80:c2:00:00:0X): not switched, counted
    /// `link-local` and freed by `output`.
    LinkLocal,
}

/// Per-frame metadata carried between stages.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Meta {
    pub desc: Desc,
    /// VLAN the frame belongs to (0: untagged domain).
    pub vlan: u16,
    /// The frame carries an 802.1Q tag now.
    pub tagged: bool,
    pub dst: u64,
    pub src: u64,
    /// EtherType after any VLAN tag.
    pub ethertype: u16,
    /// Offset of the L3 header from the frame start (14 or 18).
    pub l3: u8,
    pub dest: Dest,
    /// Sent by an explicit flow output: leaves exactly as it is (no egress VLAN translation).
    pub raw: bool,
}

/// Reusable per-worker scratch space for bursts.
pub struct Pipeline {
    meta: Vec<Meta>,
    /// Frames the router made during this burst (ARP, ICMP), and decapsulated inner frames.
    generated: Vec<Meta>,
    /// Copies that flow actions sent to NORMAL (appended to the burst after the flow stage).
    normal: Vec<Meta>,
    /// Outer frames made by encapsulation.
    encapped: Vec<Meta>,
    /// Inner frames to run through the pipeline from their tunnel port, grouped by tunnel port
    /// and by whether the outer frames came in on a port whose frames may carry partial
    /// checksums (only then can an inner frame's L4 checksum be partial, as a peer kernel VTEP
    /// on a veth leaves it, so only then does the inner pass look for one: `ingress`).
    decapped: InnerBursts,
    /// The groups being run while inner frames decapsulated during that pass collect in
    /// `decapped` (kept for their capacity).
    running: InnerBursts,
    /// Reused buffer.
    scratch: Vec<Desc>,
    /// Per-node runtime counters (`show-runtime`).
    runtime: Runtime,
    /// `vxlan4-input`'s template from the last burst (see `vxlan_input::Memo`).
    decap_memo: Option<vxlan_input::Memo>,
}

impl Default for Pipeline {
    fn default() -> Self {
        Pipeline {
            meta: Vec::with_capacity(BATCH * 4),
            generated: Vec::with_capacity(BATCH * 2),
            normal: Vec::with_capacity(BATCH),
            encapped: Vec::with_capacity(BATCH * 2),
            decapped: InnerBursts::default(),
            running: InnerBursts::default(),
            scratch: Vec::with_capacity(BATCH * 2),
            runtime: Runtime::default(),
            decap_memo: None,
        }
    }
}

/// Flood a gratuitous ARP for `bridge`'s gateway into the bridge (queued on its ports for the
/// next tx burst).
pub fn announce_gateway(dp: &mut Datapath, frames: &mut Frames, bridge: u16) {
    if let Some(m) = l3::gratuitous_arp(dp, frames, bridge) {
        output::run(dp, frames, bridge, output::NO_PORT, &[m]);
    }
}

/// Encapsulate what waits on tunnel ports' queues outside a burst: frames the switch makes
/// between bursts (the neighbour timers' ARP retries and probes, a gratuitous ARP, DNS replies,
/// packets a peer worker's ARP released) toward a VXLAN port. A burst encapsulates its own
/// output (`Pipeline::tunnels`); a tunnel port has no device, so whatever reached the ports'
/// transmit still queued on one was lost (found trying uvs as a new user: every ARP retry and
/// probe toward a VXLAN port was counted `tx-full` and never sent). Call before the ports
/// transmit (`worker::flush`); one check per tunnel port when nothing waits.
pub fn encap_queued(dp: &mut Datapath, frames: &mut Frames) {
    if !dp
        .tunnels
        .iter()
        .any(|&p| dp.out.get(p as usize).is_some_and(|q| !q.is_empty()))
    {
        return;
    }
    encap_queued_slow(dp, frames);
}

#[cold]
#[inline(never)]
fn encap_queued_slow(dp: &mut Datapath, frames: &mut Frames) {
    let (mut made, mut scratch) = (Vec::new(), Vec::new());
    let now = (dp.now_ms / 1000) as u32;
    vxlan::encap(dp, frames, &mut made, &mut scratch, now);
    if !made.is_empty() {
        output::run(dp, frames, 0, output::NO_PORT, &made);
    }
}

/// Neighbour timers' output: answer and free the packets whose next hop failed to resolve
/// (counted `arp-failed` on their ingress port, ICMP host unreachable to their senders) and send the ARP requests and probes that are due (queued
/// on the bridges' ports for the next tx burst). Call after `Datapath::age_fdbs`; cheap when
/// there is nothing to do.
pub fn neigh_timers(dp: &mut Datapath, frames: &mut Frames) {
    if dp.reassembly.waiting() > 0 {
        let now_ms = dp.now_ms;
        dp.reassembly.expire(frames, now_ms);
    }
    if !dp.neigh.has_work() {
        return;
    }
    let mut made = Vec::new();
    for h in dp.neigh.take_dropped() {
        if let Some(p) = dp.port_mut(h.in_port) {
            p.counters.drop(crate::counters::DropReason::ArpFailed);
        }
        l3::unreachable(dp, frames, h, &mut made);
    }
    for (b, ip, mac) in dp.neigh.take_due() {
        if let Some(gw) = dp.bridge(b).and_then(|x| x.gateway) {
            let dst = mac.unwrap_or(crate::wire::MacAddr::BROADCAST);
            l3::send_request(dp, frames, b, gw, (ip, dst), &mut made);
        }
    }
    if !made.is_empty() {
        output::run(dp, frames, 0, output::NO_PORT, &made);
    }
}

/// Apply an ARP another worker's gateway saw (see `learned`): the neighbour entry as
/// `Neighbours::arp_seen` makes it, and the packets it held go out.
pub fn arp_learned(
    dp: &mut Datapath,
    frames: &mut Frames,
    bridge: u16,
    (ip, mac): ([u8; 4], crate::wire::MacAddr),
    confirms: bool,
    may_create: bool,
    now: u32,
) {
    if let Some(r) = dp
        .neigh
        .arp_seen(bridge, ip, mac, now, confirms, may_create)
    {
        let mut made = Vec::new();
        l3::release(dp, frames, bridge, &r, &mut made);
        if !made.is_empty() {
            output::run(dp, frames, 0, output::NO_PORT, &made);
        }
    }
}

/// Send a DNS service reply (see `dns::punt`) from the gateway of its bridge out of its port:
/// false (nothing sent) if the port left that bridge, the packet does not fit a frame, or no
/// frame is free.
pub fn send_reply(dp: &mut Datapath, frames: &mut Frames, r: &crate::dns::punt::Reply) -> bool {
    let on_bridge = dp.port(r.port).is_some_and(|p| p.bridge == r.bridge);
    if !on_bridge || r.packet.len() + 14 > crate::packet::MAX_FRAME_LEN {
        return false;
    }
    let Some(mut d) = frames.alloc() else {
        return false;
    };
    d.len = (14 + r.packet.len()).max(60) as u32;
    let b = frames.data_mut(d);
    b.fill(0);
    let mut f = crate::wire::ethernet::Frame::new_unchecked(&mut *b);
    f.set_dst(crate::wire::MacAddr(r.dst_mac));
    f.set_src(crate::wire::MacAddr(r.src_mac));
    f.set_ethertype(crate::wire::EtherType::IPV4);
    b[14..14 + r.packet.len()].copy_from_slice(&r.packet);
    let m = Meta {
        desc: d,
        vlan: 0,
        tagged: false,
        dst: crate::wire::MacAddr(r.dst_mac).to_u64(),
        src: crate::wire::MacAddr(r.src_mac).to_u64(),
        ethertype: crate::wire::EtherType::IPV4,
        l3: 14,
        dest: Dest::Port(r.port),
        raw: false,
    };
    output::run(dp, frames, r.bridge, output::NO_PORT, &[m]);
    true
}

/// Offsets of a TCP/UDP frame's L4 header and of the checksum field inside it, as output finds
/// them (see `gso`): for ports that describe offloads to the kernel (TAP's `virtio_net_hdr`).
pub fn l4_offsets(data: &[u8]) -> Option<(usize, usize)> {
    gso::locate(data).map(|a| (a.l4, a.csum_off))
}

/// Most datagrams one received UDP GSO frame is cut into (the kernel's `UDP_MAX_SEGMENTS`).
pub fn uso_max_segs() -> usize {
    uso::MAX_SEGS
}

/// True for an IPv4 UDP frame (after an optional 802.1Q tag), as output finds it (see `gso`).
pub fn is_udp4(data: &[u8]) -> bool {
    gso::locate(data).is_some_and(|a| !a.v6 && a.proto == 17)
}

/// Cut a received IPv4 UDP GSO frame into its datagrams (see `gso`), appended to `out`; `d`
/// is freed. For ports whose kernel hands them such frames (AF_PACKET on a veth that carries a
/// peer's UDP GSO): the rest of the pipeline sees only datagrams. Err: why nothing (or not
/// everything) was made.
pub fn split_udp(
    frames: &mut Frames,
    d: Desc,
    out: &mut Vec<Desc>,
) -> Result<usize, crate::counters::DropReason> {
    gso::split_udp(frames, d, out)
}

/// The TCP checksum offsets (`csum_start`, `csum_offset` as a `virtio_net_hdr` gives them) of
/// the inner frame of an IPv4 VXLAN packet carrying a TCP frame (see `gso::split_tunnel`).
pub fn tunnel_l4_offsets(data: &[u8]) -> Option<(usize, usize)> {
    gso::locate_tunnel(data).map(|(_, inner, at)| (inner + at.l4, at.csum_off))
}

/// Cut a received UDP-tunnel super-frame (an IPv4 VXLAN packet whose inner frame is a TCP
/// super-frame, `mss` payload bytes a segment) into VXLAN packets of one segment each,
/// appended to `out`; `d` is freed. For AF_PACKET ports on a veth whose peer is a kernel
/// VXLAN device's underlay. Err: why nothing (or not everything) was made.
pub fn split_tunnel(
    frames: &mut Frames,
    d: Desc,
    mss: usize,
    out: &mut Vec<Desc>,
) -> Result<usize, crate::counters::DropReason> {
    gso::split_tunnel(frames, d, mss, out)
}

impl Pipeline {
    /// A pipeline with preallocated scratch space.
    pub fn new() -> Pipeline {
        Pipeline::default()
    }

    /// This worker's per-node runtime counters.
    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    /// Zero the per-node runtime counters; `port_drops`: the ports' drop counters now (see
    /// [`Runtime::clear`]).
    pub fn clear_runtime<'a>(
        &mut self,
        port_drops: impl Iterator<Item = &'a [u64; crate::counters::DropReason::COUNT]>,
    ) {
        self.runtime.clear(port_drops);
    }

    /// Process one burst received on `in_port`; drains `batch`.
    pub fn process(
        &mut self,
        dp: &mut Datapath,
        frames: &mut Frames,
        in_port: PortId,
        batch: &mut Vec<Desc>,
        now: u64,
    ) {
        self.process_steered(dp, frames, in_port, batch, now, None);
    }

    /// [`Pipeline::process`] for one of several workers: `steer` takes, out of each burst of
    /// decapsulated inner frames (as from their tunnel port), the frames another worker owns
    /// (see [`steer`]), before they run here; what it leaves runs here.
    pub fn process_steered(
        &mut self,
        dp: &mut Datapath,
        frames: &mut Frames,
        in_port: PortId,
        batch: &mut Vec<Desc>,
        now: u64,
        steer: Option<&mut SteerFn>,
    ) {
        neigh_timers(dp, frames);
        self.run(dp, frames, in_port, batch, now, None);
        self.tunnels(dp, frames, now, steer);
    }

    /// Run a burst another worker handed to this one as received on `in_port`
    /// ([`Pipeline::process_steered`]); frames from a tunnel port are inner frames the other
    /// worker decapsulated: they run as a decapsulating worker runs the inner frames it keeps
    /// (VXLAN found inside them dropped as nested), and are not steered again.
    pub fn process_handed(
        &mut self,
        dp: &mut Datapath,
        frames: &mut Frames,
        in_port: PortId,
        batch: &mut Vec<Desc>,
        now: u64,
        steer: Option<&mut SteerFn>,
    ) {
        if dp.port(in_port).is_none_or(|p| p.tunnel.is_none()) {
            return self.process_steered(dp, frames, in_port, batch, now, steer);
        }
        neigh_timers(dp, frames);
        // Where the outer frames came in is not handed over: look for partial checksums.
        for d in batch.drain(..) {
            self.decapped.push(in_port, true, d);
        }
        self.tunnels(dp, frames, now, None);
    }

    /// After a burst: run decapsulated frames through the pipeline as bursts from their tunnel
    /// ports (once: VXLAN found inside is dropped; with `steer`, frames another worker owns go
    /// to it instead), then encapsulate what was queued on tunnel ports and deliver the outer
    /// frames on their underlay bridges.
    fn tunnels(
        &mut self,
        dp: &mut Datapath,
        frames: &mut Frames,
        now: u64,
        mut steer: Option<&mut SteerFn>,
    ) {
        if dp.tunnels.is_empty() {
            return;
        }
        let mut t0 = runtime::ticks();
        // Inner frames decapsulated while these run would be VXLAN in VXLAN: they collect in
        // the (empty) `decapped` and are dropped below.
        std::mem::swap(&mut self.decapped, &mut self.running);
        let mut running = std::mem::take(&mut self.running);
        for g in running.groups_mut() {
            // (Nested VXLAN was dropped where it was opened: `vxlan::decap`.)
            if let Some(steer) = steer.as_mut() {
                steer(dp, frames, g.port, &mut g.frames);
            }
            if !g.frames.is_empty() {
                // The frames were counted where they were decapsulated (`vxlan::bypass`, or
                // the router): only the time spent queueing them is charged here.
                let t = runtime::ticks();
                self.runtime
                    .add_ticks(Node::Vxlan4Input, t.wrapping_sub(t0));
                self.run(dp, frames, g.port, &mut g.frames, now, Some(g.partial));
                t0 = runtime::ticks();
            }
        }
        running.clear();
        self.running = running;
        // Frames decapsulated while running inner frames would be VXLAN in VXLAN.
        if !self.decapped.is_empty() {
            for (p, d) in self.decapped.drain() {
                if let Some(s) = dp.port_mut(p) {
                    s.counters.drop(crate::counters::DropReason::VxlanNested);
                }
                frames.free(d.addr);
            }
        }
        self.encapped.clear();
        let t0 = runtime::ticks();
        let n_encap = vxlan::encap(
            dp,
            frames,
            &mut self.encapped,
            &mut self.scratch,
            now as u32,
        );
        let t1 = runtime::ticks();
        self.runtime
            .add(Node::Vxlan4Encap, n_encap, t1.wrapping_sub(t0));
        if !self.encapped.is_empty() {
            output::run(dp, frames, 0, output::NO_PORT, &self.encapped);
            let n = self.encapped.len();
            self.runtime
                .add(Node::Output, n, runtime::ticks().wrapping_sub(t1));
        }
    }

    /// Charge `node` a call over `n` frames that began at tick `since`; returns the tick now.
    #[inline(always)]
    fn lap(&mut self, node: Node, n: usize, since: u64) -> u64 {
        let t = runtime::ticks();
        self.runtime.add(node, n, t.wrapping_sub(since));
        t
    }

    /// Run one burst from `in_port`. `partial_csum`: whether its frames may carry partial
    /// checksums (None: as the port says; inner frames: as the port their outer frames came
    /// in on says).
    fn run(
        &mut self,
        dp: &mut Datapath,
        frames: &mut Frames,
        in_port: PortId,
        batch: &mut Vec<Desc>,
        now: u64,
        partial_csum: Option<bool>,
    ) {
        let mut t = runtime::ticks();
        if !dp.tunnels.is_empty() {
            // VXLAN to a VTEP's gateway leaves the burst here, before ethernet-input.
            let n = vxlan_input::run(
                dp,
                frames,
                in_port,
                batch,
                (&mut self.decapped, &mut self.decap_memo),
                now,
            );
            if n > 0 {
                t = self.lap(Node::Vxlan4Input, n, t);
                if batch.is_empty() {
                    return;
                }
            }
        }
        self.meta.clear();
        self.generated.clear();
        // Routed frames at the head of the burst are parsed, learned and routed in one pass.
        let taken = gateway_input::run(
            dp,
            frames,
            in_port,
            batch,
            &mut self.meta,
            &mut self.generated,
            partial_csum,
            now,
        );
        if taken.frames > 0 {
            t = self.lap(Node::GatewayInput, taken.frames, t);
            if batch.is_empty() {
                let bridge = dp.port(in_port).map_or(0, |p| p.bridge);
                return self.finish(dp, frames, (bridge, in_port), taken.output, t);
            }
        }
        let received = batch.len();
        let Some(bridge) = ingress::run(dp, frames, in_port, batch, &mut self.meta, partial_csum)
        else {
            return;
        };
        let mut t = self.lap(Node::EthernetInput, received, t);
        if dp
            .bridge(bridge)
            .is_some_and(|b| b.flows.active && !b.fail_open)
        {
            let n = self.meta.len();
            let mut out = flows::Emitted {
                made: &mut self.generated,
                normal: &mut self.normal,
            };
            flows::run(dp, frames, bridge, in_port, &mut self.meta, &mut out);
            self.meta.append(&mut self.normal);
            t = self.lap(Node::Flows, n, t);
        }
        l2::learn(dp, bridge, in_port, &self.meta, now);
        t = self.lap(Node::L2Learn, self.meta.len(), t);
        l2::forward(dp, frames, bridge, in_port, &mut self.meta);
        t = self.lap(Node::L2Fwd, self.meta.len(), t);
        let routed = l3::run(
            dp,
            frames,
            bridge,
            in_port,
            &mut self.meta,
            &mut self.generated,
            now as u32,
        );
        t = self.lap(Node::Ip4Input, routed, t);
        self.finish(dp, frames, (bridge, in_port), taken.output, t);
    }

    /// The end of a burst from `in_port` of `bridge` (the metadata's destinations decided):
    /// output (of the metadata from `output_done` on: `gateway-input` output what came
    /// before), then decapsulated inner frames queued for the tunnel pass.
    #[inline(always)]
    fn finish(
        &mut self,
        dp: &mut Datapath,
        frames: &mut Frames,
        (bridge, in_port): (u16, PortId),
        output_done: usize,
        t: u64,
    ) {
        let meta = &self.meta[output_done..];
        output::run(dp, frames, bridge, in_port, meta);
        output::run(dp, frames, bridge, output::NO_PORT, &self.generated);
        let n = meta.len() + self.generated.len();
        self.lap(Node::Output, n, t);
        // Only the router's VXLAN decapsulation makes `Dest::Decap`, and only with tunnels.
        if !dp.tunnels.is_empty() {
            let partial = dp.port(in_port).is_none_or(|p| p.partial_csum_in);
            for m in self.meta.iter().chain(self.generated.iter()) {
                if let Dest::Decap(p) = m.dest {
                    self.decapped.push(p, partial, m.desc);
                }
            }
        }
    }
}
