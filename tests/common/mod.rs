//! Shared helpers for integration tests: an in-memory switch harness, frame builders,
//! root/netns helpers for end-to-end tests, and an in-process OpenFlow switch.
#![allow(dead_code)]

pub mod fragments;
pub mod netns;
pub mod openflow;
pub mod wire;

use uvs::datapath::{BridgeOptions, Datapath, Gateway, PortState, VlanMode};
use uvs::packet::Frames;
use uvs::pipeline::Pipeline;
use uvs::port::mem::MemPort;
use uvs::port::{Port, PortKind};

/// A synchronous switch on mem ports: inject frames, run, collect what each port sent.
pub struct Harness {
    pub frames: Frames,
    pub dp: Datapath,
    pub pipeline: Pipeline,
    pub ports: Vec<MemPort>,
    pub now: u64,
}

impl Harness {
    pub fn new() -> Harness {
        Harness {
            frames: Frames::new(4096).unwrap(),
            dp: Datapath::new(),
            pipeline: Pipeline::new(),
            ports: Vec::new(),
            now: 1,
        }
    }

    pub fn bridge(&mut self, name: &str) -> u16 {
        self.bridge_with(name, BridgeOptions::default())
    }

    pub fn bridge_with(&mut self, name: &str, o: BridgeOptions) -> u16 {
        self.dp.add_bridge(name, &o).unwrap()
    }

    /// Add a mem port; returns its id (== index in `ports`).
    pub fn port(&mut self, bridge: u16, name: &str, vlan: VlanMode) -> u16 {
        let id = self.dp.next_port_id().unwrap();
        assert_eq!(id as usize, self.ports.len(), "harness keeps ids dense");
        let p = MemPort::new(id);
        self.dp
            .add_port(
                id,
                PortState::new(name, PortKind::Mem, bridge, vlan, p.mtu()),
            )
            .unwrap();
        self.ports.push(p);
        id
    }

    /// Add a VXLAN tunnel port (a mem port stands in for its IO side: it never receives).
    pub fn tunnel(&mut self, bridge: u16, name: &str, conf: uvs::vxlan::TunnelConf) -> u16 {
        let id = self.port(bridge, name, VlanMode::default_trunk());
        let st = self.dp.port_mut(id).unwrap();
        st.learn = conf.learning;
        st.partial_csum_in = true;
        st.mtu = u16::MAX as u32;
        st.tunnel = Some(Box::new(uvs::vxlan::Tunnel::new(conf)));
        self.dp.refresh_tunnels();
        id
    }

    /// Inject `frame` on port `p` and run one iteration.
    pub fn send(&mut self, p: u16, frame: &[u8]) {
        self.ports[p as usize].inject(frame);
        self.run();
    }

    /// The worker's timers at `now_ms` (the clock moved on): neighbour timers and the expiry
    /// of incomplete reassemblies.
    pub fn housekeep(&mut self, now_ms: u64) {
        self.dp.now_ms = now_ms;
        uvs::pipeline::neigh_timers(&mut self.dp, &mut self.frames);
    }

    /// Receive a burst on every port, process, flush. The tests change `dp` directly between
    /// runs, so each run starts by saying so (`Datapath::changed`), as the worker does after
    /// every request.
    pub fn run(&mut self) {
        self.dp.changed();
        self.run_next_burst();
    }

    /// `run` as the worker's next burst when nothing but forwarding happened since the last
    /// one: without `Datapath::changed`, so what forwarding remembers across bursts is used.
    pub fn run_next_burst(&mut self) {
        let mut batch = Vec::new();
        for id in 0..self.ports.len() {
            self.ports[id].rx_burst(&mut self.frames, &mut batch, 64);
            uvs::pipeline::ratelimit::shape_rx(
                &mut self.dp,
                &mut self.frames,
                id as u16,
                &mut batch,
            );
            if !batch.is_empty() {
                self.pipeline.process(
                    &mut self.dp,
                    &mut self.frames,
                    id as u16,
                    &mut batch,
                    self.now,
                );
            }
        }
        uvs::pipeline::ratelimit::shape_tx(&mut self.dp, &mut self.frames);
        for id in 0..self.ports.len() {
            let q = &mut self.dp.out[id];
            if !q.is_empty() {
                let r = self.ports[id].tx_burst(&mut self.frames, q);
                let c = &mut self.dp.port_mut(id as u16).unwrap().counters;
                c.tx_packets += r.sent as u64;
            }
        }
    }

    /// Frames each port transmitted since the last call.
    pub fn outputs(&mut self) -> Vec<Vec<Vec<u8>>> {
        self.ports.iter_mut().map(|p| p.take_output()).collect()
    }

    pub fn drops(&self, p: u16, reason: uvs::counters::DropReason) -> u64 {
        self.dp.port(p).unwrap().counters.drops[reason as usize]
    }

    /// Every frame of the pool is free again (nothing leaked, nothing left queued).
    pub fn assert_no_frame_leaked(&self) {
        assert_eq!(
            self.frames.free_count(),
            self.frames.capacity(),
            "no frame leaked"
        );
    }

    /// Add flow `text` to bridge `b`'s table, its ports bound by their OpenFlow numbers;
    /// panics naming the flow when it is refused.
    pub fn add_flow(&mut self, b: u16, text: &str) {
        let ft = &mut self.dp.bridge_mut(b).unwrap().flows;
        let mut f = uvs::flow::parse_flow(text).unwrap_or_else(|e| panic!("{text}: {e}"));
        ft.bind_ports(&mut f).unwrap();
        ft.cls.add(f, 0, |r| Some(r.num())).unwrap();
        ft.refresh();
    }
}

/// Bridge `br0` with ports `p1`, `p2`, `p3` (default trunks, `p[0..3]`), for flow tests.
pub struct FlowNet {
    pub h: Harness,
    pub b: u16,
    pub p: [u16; 3],
}

impl FlowNet {
    pub fn new() -> FlowNet {
        let mut h = Harness::new();
        let b = h.bridge("br0");
        let p = [
            h.port(b, "p1", VlanMode::default_trunk()),
            h.port(b, "p2", VlanMode::default_trunk()),
            h.port(b, "p3", VlanMode::default_trunk()),
        ];
        FlowNet { h, b, p }
    }

    /// [`Harness::add_flow`] on `br0`.
    pub fn add(&mut self, text: &str) {
        self.h.add_flow(self.b, text);
    }
}

/// The gateway of `br0` in [`routed`].
pub const GW0: [u8; 4] = [10, 0, 1, 1];
/// The gateway of `br1` in [`routed`].
pub const GW1: [u8; 4] = [10, 0, 2, 1];
/// A host behind port `a` (on `br0`) in [`routed`].
pub const H_A: [u8; 4] = [10, 0, 1, 2];
/// A host behind port `b` (on `br1`) in [`routed`].
pub const H_B: [u8; 4] = [10, 0, 2, 2];

/// Two bridges joined by their gateways; see [`routed`].
pub struct Routed {
    pub h: Harness,
    pub a: u16,
    pub b: u16,
    pub gw0: uvs::wire::MacAddr,
    pub gw1: uvs::wire::MacAddr,
}

/// Bridge `br0` (gateway [`GW0`]/24, its default MAC) with port `a`, and bridge `br1` (gateway
/// [`GW1`]/24) with port `b`; both ports default trunks.
pub fn routed() -> Routed {
    let mut h = Harness::new();
    let b0 = h.bridge("br0");
    let b1 = h.bridge("br1");
    let a = h.port(b0, "a", VlanMode::default_trunk());
    let b = h.port(b1, "b", VlanMode::default_trunk());
    let (gw0, gw1) = (Gateway::default_mac("br0"), Gateway::default_mac("br1"));
    for (br, ip, mac) in [(b0, GW0, gw0), (b1, GW1, gw1)] {
        h.dp.set_gateway(br, Some(Gateway { ip, len: 24, mac }))
            .unwrap();
    }
    Routed { h, a, b, gw0, gw1 }
}

/// An Ethernet frame: dst, src, EtherType 0x0800 and a 46-byte payload tagged with `tag`.
pub fn frame(dst: [u8; 6], src: [u8; 6], tag: u8) -> Vec<u8> {
    let mut f = Vec::with_capacity(60);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&[0x08, 0x00]);
    f.extend(std::iter::repeat_n(tag, 46));
    f
}

/// The same frame with an 802.1Q tag.
pub fn tagged(f: &[u8], vid: u16) -> Vec<u8> {
    let mut t = f[..12].to_vec();
    t.extend_from_slice(&[0x81, 0x00]);
    t.extend_from_slice(&vid.to_be_bytes());
    t.extend_from_slice(&f[12..]);
    t
}

pub const BCAST: [u8; 6] = [0xff; 6];

/// A UDP/IPv4 frame from `mac(src_mac)` to `mac(2)`, 10.0.0.`src`:`sport` -> 10.0.0.2:`dport`,
/// TTL 64, TOS byte `tos` (DSCP and ECN), carrying `payload`.
pub fn udp4_tos(src_mac: u8, src: u8, sport: u16, dport: u16, tos: u8, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    let mut ip = etherparse::Ipv4Header::new(
        0,
        64,
        etherparse::IpNumber::UDP,
        [10, 0, 0, src],
        [10, 0, 0, 2],
    )
    .unwrap();
    ip.dscp = etherparse::IpDscp::try_new(tos >> 2).unwrap();
    ip.ecn = etherparse::IpEcn::try_new(tos & 3).unwrap();
    etherparse::PacketBuilder::ethernet2(mac(src_mac), mac(2))
        .ip(etherparse::IpHeaders::Ipv4(ip, Default::default()))
        .udp(sport, dport)
        .write(&mut v, payload)
        .unwrap();
    v
}

pub fn mac(n: u8) -> [u8; 6] {
    [0x02, 0, 0, 0, 0, n]
}
