//! Stateful fuzzing: a sequence of control operations and frames against an in-memory switch,
//! with the switch's invariants checked after every step.
//!
//! The switch: bridges `b0` (gateway 10.0.1.1/24), `b1` (gateway 10.0.2.1/24) and `b2` (L2
//! only), six mem ports (two per bridge at first; operations move them), small tables (FDB 32
//! per bridge, 16 neighbours per bridge and 64 in all, 64 connections, 16 per source, mac_limit 4
//! on odd ports) so the bounds are reached quickly. Each input byte picks an operation (a frame
//! built from the following bytes, time passing, a gateway change, `neigh-flush`, `fdb-flush`,
//! `rp_filter`/`isolated`/`icc`, a port moving bridges, NAT rules and routes); frames are
//! sometimes IPv4 fragments (first, middle or last of two datagrams).
//!
//! Invariants after each step (a violation panics: a finding):
//! - frame accounting: every frame buffer is free or held by the neighbour table, and every
//!   injected frame was counted received by its port;
//! - isolation: a frame sent on a port carries a source MAC that was injected into that port's
//!   bridge or is (was) that bridge's gateway MAC: nothing crosses bridges except through a
//!   gateway;
//! - bounds: neighbours per bridge and in all, connections in all and per source, FDB entries
//!   per bridge and per port (`mac_limit`), and broadcast ARP requests per bridge and second
//!   ([`crate::neigh::ARP_RATE`]).

use std::collections::{HashMap, HashSet};

use crate::conntrack::CtConfig;
use crate::datapath::{BridgeOptions, Datapath, Gateway, PortState, VlanMode};
use crate::neigh::{ARP_RATE, Neighbours};
use crate::packet::Frames;
use crate::pipeline::Pipeline;
use crate::port::mem::MemPort;
use crate::port::{Port, PortKind};
use crate::route::RpFilter;
use crate::wire::MacAddr;

const PORTS: usize = 6;
const NEIGH_PER_BRIDGE: usize = 16;
const NEIGH_TOTAL: usize = 64;
const CT_LIMIT: usize = 64;
const CT_PER_SOURCE: usize = 16;
const FDB_CAP: usize = 32;
const MAC_LIMIT: u32 = 4;

/// Input bytes, read one at a time (0 once exhausted).
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((b, rest)) => {
                self.0 = rest;
                *b
            }
            None => 0,
        }
    }
}

struct Sim {
    frames: Frames,
    dp: Datapath,
    pipeline: Pipeline,
    ports: Vec<MemPort>,
    /// Each port's bridge while attached.
    bridge_of: [Option<u16>; PORTS],
    /// Frames injected on each port since it was attached.
    injected: [u64; PORTS],
    /// Source MACs injected into each bridge, and MACs its gateway has had.
    macs: [HashSet<[u8; 6]>; 3],
    /// Broadcast ARP requests a gateway sent, per (bridge, second, port): each request is
    /// flooded to every port of the bridge.
    requests: HashMap<(u16, u64, usize), u32>,
    now: u64,
    batch: Vec<crate::packet::Desc>,
}

fn gateway(b: u16, net: u8) -> Gateway {
    Gateway {
        ip: [10, 0, net, 1],
        len: 24,
        mac: MacAddr([2, 0x75, 0x76, 0, b as u8, net]),
    }
}

impl Sim {
    fn new() -> Sim {
        let mut dp = Datapath::new();
        dp.neigh = Neighbours::new(NEIGH_TOTAL, 300).with_bridge_limit(NEIGH_PER_BRIDGE);
        dp.nat = crate::nat::Nat::with_config(CtConfig {
            limit: CT_LIMIT,
            per_source: CT_PER_SOURCE,
            hash_seed: 7,
            ..CtConfig::default()
        })
        .expect("ct config");
        let opts = BridgeOptions {
            fdb_capacity: FDB_CAP,
            aging: 30,
        };
        let mut s = Sim {
            frames: Frames::new(512).expect("map frames"),
            dp,
            pipeline: Pipeline::new(),
            ports: (0..PORTS as u16).map(MemPort::new).collect(),
            bridge_of: [None; PORTS],
            injected: [0; PORTS],
            macs: Default::default(),
            requests: HashMap::new(),
            now: 1,
            batch: Vec::new(),
        };
        for name in ["b0", "b1", "b2"] {
            s.dp.add_bridge(name, &opts).expect("bridge");
        }
        s.set_gateway(0, Some(1));
        s.set_gateway(1, Some(2));
        for p in 0..PORTS {
            s.attach(p, (p / 2) as u16);
        }
        s
    }

    fn set_gateway(&mut self, b: u16, net: Option<u8>) {
        let gw = net.map(|n| gateway(b, n));
        if self.dp.set_gateway(b, gw).is_ok()
            && let Some(g) = gw
        {
            self.macs[b as usize].insert(g.mac.0);
        }
    }

    fn attach(&mut self, p: usize, b: u16) {
        let mut st = PortState::new(
            &format!("p{p}"),
            PortKind::Mem,
            b,
            VlanMode::default_trunk(),
            1500,
        );
        if p % 2 == 1 {
            st.mac_limit = MAC_LIMIT;
        }
        if self.dp.add_port(p as u16, st).is_ok() {
            self.bridge_of[p] = Some(b);
            self.injected[p] = 0;
        }
    }

    fn detach(&mut self, p: usize) {
        if let Ok(descs) = self.dp.del_port(p as u16) {
            for d in descs {
                self.frames.free(d.addr);
            }
            self.bridge_of[p] = None;
        }
    }

    /// One operation, chosen by `op`, its arguments read from `inp`.
    fn step(&mut self, op: u8, inp: &mut Input) {
        if op % 16 > 6 {
            // Everything but sending changes the datapath from outside, as a worker's request.
            self.dp.changed();
        }
        match op % 16 {
            0..=6 => {
                let p = inp.byte() as usize % PORTS;
                let f = frame(inp, self.bridge_of[p]);
                self.send(p, &f);
            }
            7 => {
                self.now += 1 + (inp.byte() % 8) as u64;
                self.dp.now_ms = self.now * 1000;
                self.dp.age_fdbs(self.now as u32, 64);
            }
            8 => {
                let b = inp.byte() % 2;
                let net = [None, Some(1), Some(2), Some(3)][inp.byte() as usize % 4];
                self.set_gateway(b as u16, net);
            }
            9 => {
                self.dp.neigh.flush_bridge(inp.byte() as u16 % 3);
            }
            10 => {
                let b = inp.byte() as u16 % 3;
                if let Some(br) = self.dp.bridge_mut(b) {
                    br.fdb.flush(None);
                }
            }
            11 => {
                let b = inp.byte() as u16 % 3;
                let v = inp.byte();
                if let Some(br) = self.dp.bridge_mut(b) {
                    match v % 3 {
                        0 => {
                            br.rp_filter = [RpFilter::Strict, RpFilter::Loose, RpFilter::Off]
                                [v as usize / 3 % 3]
                        }
                        1 => br.isolated = v & 8 != 0,
                        _ => br.icc = v & 8 != 0,
                    }
                }
            }
            12 => {
                let p = inp.byte() as usize % PORTS;
                let b = inp.byte() as u16 % 3;
                match self.bridge_of[p] {
                    Some(_) => self.detach(p),
                    None => self.attach(p, b),
                }
            }
            13 => self.nat_op(inp.byte()),
            14 => self.route_op(inp.byte()),
            _ => self.flood(inp),
        }
        crate::pipeline::neigh_timers(&mut self.dp, &mut self.frames);
        self.transmit();
    }

    /// Many frames from one port, each to a new address or port, to reach the tables' bounds:
    /// UDP to unresolved addresses of the other bridge (neighbours, ARP rate), UDP from many
    /// source ports to one peer (connections per source, when masquerading), or ARP requests
    /// for the gateway from many senders (learning).
    fn flood(&mut self, inp: &mut Input) {
        let p = inp.byte() as usize % PORTS;
        let (kind, n) = (inp.byte() % 3, 16 + inp.byte() as u16 % 200);
        let Some(b) = self.bridge_of[p] else {
            return;
        };
        let own = b as u8 + 1;
        let gw = gateway(b, own);
        for i in 0..n {
            let x = (i % 250) as u8 + 2;
            let f = match kind {
                0 => udp(gw.mac, [10, 0, own, 2], [10, 0, 3 - own, x], 1000),
                1 => udp(gw.mac, [10, 0, own, 3], [10, 0, 3 - own, 2], 1000 + i),
                _ => arp([2, 0, 0, 1, 0, x], [10, 0, own, x], [10, 0, own, 1], 1),
            };
            self.send(p, &f);
        }
    }

    fn nat_op(&mut self, v: u8) {
        let gw1 = self.dp.bridge(1).and_then(|b| b.gateway);
        match (v % 4, gw1) {
            (0, Some(g)) => {
                let _ = self.dp.nat.add_source(0x0a00_0100, 24, 1, None, g.ip);
            }
            (1, Some(_)) => {
                let _ = self.dp.nat.add_dest(1, 17, 53, [10, 0, 1, 2], 53);
            }
            (2, _) => {
                let _ = self.dp.nat.del(0);
            }
            _ => {
                self.dp.nat.ct.flush();
            }
        }
    }

    fn route_op(&mut self, v: u8) {
        let prefix = std::net::Ipv4Addr::new(172, 16, v % 4, 0);
        if v & 4 == 0 {
            let _ = self.dp.routes.del(prefix, 24);
            return;
        }
        let b = (v >> 3) as u16 % 2;
        if let Some(g) = self.dp.bridge(b).and_then(|x| x.gateway) {
            let via = std::net::Ipv4Addr::new(g.ip[0], g.ip[1], g.ip[2], 254);
            let _ = self.dp.routes.add(crate::route::Route {
                prefix,
                len: 24,
                kind: crate::route::RouteKind::Via {
                    gateway: via,
                    bridge: b,
                },
            });
        }
    }

    fn send(&mut self, p: usize, f: &[u8]) {
        let Some(b) = self.bridge_of[p] else {
            return;
        };
        if f.len() >= 12 {
            self.macs[b as usize].insert(f[6..12].try_into().expect("6 bytes"));
        }
        self.injected[p] += 1;
        self.ports[p].inject(f);
        self.ports[p].rx_burst(&mut self.frames, &mut self.batch, 64);
        self.pipeline.process(
            &mut self.dp,
            &mut self.frames,
            p as u16,
            &mut self.batch,
            self.now,
        );
        self.transmit();
    }

    /// Send every queued frame and check where each went; simulated hosts 10.0.N.2 to
    /// 10.0.N.5 answer the gateways' ARP requests for them.
    fn transmit(&mut self) {
        let mut answers = Vec::new();
        self.transmit_once(&mut answers);
        for (p, f) in answers {
            self.send(p, &f);
        }
    }

    fn transmit_once(&mut self, answers: &mut Vec<(usize, Vec<u8>)>) {
        for p in 0..PORTS {
            if self.bridge_of[p].is_none() {
                assert!(
                    self.dp.out[p].is_empty(),
                    "frames queued on detached port {p}"
                );
                continue;
            }
            self.ports[p].tx_burst(&mut self.frames, &mut self.dp.out[p]);
            let b = self.bridge_of[p].expect("attached");
            for f in self.ports[p].take_output() {
                let src: [u8; 6] = f[6..12].try_into().expect("6 bytes");
                assert!(
                    self.macs[b as usize].contains(&src),
                    "frame from {} on port {p} of bridge {b}, not of this bridge",
                    MacAddr(src)
                );
                let is_arp = f.len() >= 42 && f[12..14] == [0x08, 0x06];
                let from_gw = f[6..9] == [2, 0x75, 0x76];
                if from_gw && is_arp && f[21] == 1 && f[0..6] == [0xff; 6] && f[28..32] != f[38..42]
                {
                    *self.requests.entry((b, self.now, p)).or_default() += 1;
                }
                let target: [u8; 4] = f.get(38..42).map_or([0; 4], |t| t.try_into().expect("4"));
                if is_arp && f[21] == 1 && target[3] > 1 && target[3] < 6 && p % 2 == 0 {
                    let to: [u8; 6] = f[22..28].try_into().expect("6 bytes");
                    let sender: [u8; 4] = f[28..32].try_into().expect("4 bytes");
                    let me = [2, 0, 0, 0, 0, target[3]];
                    answers.push((p, arp_to(to, me, target, sender)));
                }
            }
        }
    }

    fn check(&self) {
        let held = self.dp.neigh.held();
        assert_eq!(
            self.frames.free_count() + held,
            self.frames.capacity(),
            "frame leaked (held {held})"
        );
        for p in 0..PORTS {
            if self.bridge_of[p].is_some() {
                let c = &self.dp.port(p as u16).expect("attached").counters;
                assert_eq!(c.rx_packets, self.injected[p], "port {p} rx count");
            }
        }
        assert!(self.dp.neigh.len() <= NEIGH_TOTAL);
        for b in 0..3u16 {
            assert!(
                self.dp.neigh.bridge_len(b) <= NEIGH_PER_BRIDGE,
                "neighbours of {b}"
            );
            let br = self.dp.bridge(b).expect("bridge");
            assert!(br.fdb.len() <= FDB_CAP, "fdb of {b}");
        }
        for p in (1..PORTS).step_by(2) {
            if let Some(b) = self.bridge_of[p] {
                let fdb = &self.dp.bridge(b).expect("bridge").fdb;
                assert!(
                    fdb.learned_on(p as u16) <= MAC_LIMIT as usize,
                    "mac_limit of {p}"
                );
            }
        }
        let ct = &self.dp.nat.ct;
        assert!(ct.len() <= CT_LIMIT);
        for c in ct.iter(self.now as u32) {
            assert!(ct.source_count(c.orig.src) <= CT_PER_SOURCE);
        }
        for ((b, t, p), n) in &self.requests {
            assert!(
                *n <= ARP_RATE,
                "{n} ARP requests to port {p} of bridge {b} at {t}"
            );
        }
    }

    fn finish(mut self) {
        for h in self.dp.neigh.take_all_held() {
            self.frames.free(h.desc.addr);
        }
        assert_eq!(
            self.frames.free_count(),
            self.frames.capacity(),
            "frame leaked"
        );
    }
}

fn udp(dst: MacAddr, src: [u8; 4], to: [u8; 4], sport: u16) -> Vec<u8> {
    let mut f = Vec::with_capacity(60);
    f.extend_from_slice(&dst.0);
    f.extend_from_slice(&[2, 0, 0, 0, 0, 1]);
    f.extend_from_slice(&[0x08, 0x00, 0x45, 0, 0, 32, 0, 1, 0, 0, 64, 17, 0, 0]);
    f.extend_from_slice(&src);
    f.extend_from_slice(&to);
    let c = crate::wire::checksum::checksum(&f[14..34]);
    f[24..26].copy_from_slice(&c.to_be_bytes());
    f.extend_from_slice(&sport.to_be_bytes());
    f.extend_from_slice(&[0, 53, 0, 12, 0, 0]);
    f.extend_from_slice(b"fuzz");
    f
}

/// An ARP request (`op` 1) or reply (2) from `mac`/`ip` about `target`, broadcast.
fn arp(mac: [u8; 6], ip: [u8; 4], target: [u8; 4], op: u8) -> Vec<u8> {
    let mut f = arp_to([0xff; 6], mac, ip, target);
    f[21] = op;
    f
}

/// An ARP reply from `mac`/`ip` to `to`/`target`.
fn arp_to(to: [u8; 6], mac: [u8; 6], ip: [u8; 4], target: [u8; 4]) -> Vec<u8> {
    let mut f = Vec::with_capacity(60);
    f.extend_from_slice(&to);
    f.extend_from_slice(&mac);
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 2]);
    f.extend_from_slice(&mac);
    f.extend_from_slice(&ip);
    f.extend_from_slice(&to);
    f.extend_from_slice(&target);
    f.resize(60, 0);
    f
}

/// A frame for a port of bridge `b` built from the input: ARP, UDP, TCP or ICMP echo, with
/// addresses from small sets (own subnet, the other subnet, a routed one, spoofed ones) so
/// that neighbours, routes, NAT and the filters are all reached.
fn frame(inp: &mut Input, b: Option<u16>) -> Vec<u8> {
    let kind = inp.byte();
    let host = |v: u8| [2, 0, 0, 0, 0, v % 8];
    // Mostly the port's own subnet (as a container would), else the other bridge's hosts and
    // gateway, a routed network, or an address nobody owns.
    let own = b.map_or(1, |b| b as u8 + 1);
    let addr = |v: u8| match v % 8 {
        0..=2 => [10, 0, own, 2 + (v >> 3) % 4],
        3 => [10, 0, own, 1],
        4 => [10, 0, 3 - own, 2 + (v >> 3) % 4],
        5 => [10, 0, 3 - own, 1],
        6 => [172, 16, (v >> 3) % 4, 9],
        _ => [10, 0, 3, v >> 3],
    };
    let v = inp.byte();
    let dst_mac = match v % 4 {
        0 => [0xff; 6],
        1 => host(v >> 2),
        _ => {
            let gb = if v & 0x10 != 0 { 1 } else { b.unwrap_or(0) };
            gateway(gb, gb as u8 + 1).mac.0
        }
    };
    let src_mac = host(inp.byte());
    let (sip, dip) = (addr(inp.byte()), addr(inp.byte()));
    let mut f = Vec::with_capacity(80);
    f.extend_from_slice(&dst_mac);
    f.extend_from_slice(&src_mac);
    if kind.is_multiple_of(4) {
        // Requests (mostly for the gateway) and replies (mostly to it).
        let op = 1 + (kind >> 2) % 2;
        let gw = [10, 0, own, 1];
        let target = if kind & 0x30 != 0 { gw } else { dip };
        f.extend_from_slice(&[0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, op]);
        f.extend_from_slice(&src_mac);
        f.extend_from_slice(&sip);
        f.extend_from_slice(&[0; 6]);
        f.extend_from_slice(&target);
        f.resize(60, 0);
        return f;
    }
    let proto = [0, 17, 6, 1][kind as usize % 4];
    let l4 = if proto == 6 { 20 } else { 8 };
    let total = 20 + l4 + 4;
    f.extend_from_slice(&[0x08, 0x00, 0x45, 0]);
    f.extend_from_slice(&(total as u16).to_be_bytes());
    // Mostly whole packets; sometimes a first fragment (MF), a later one (an offset) or a
    // middle one, of one of two datagrams (NAT and `ct` track fragments by their first).
    let frag = inp.byte();
    let (ident, flags) = match frag % 8 {
        0..=4 => (1, [0, 0]),
        5 => (frag >> 3 & 1, [0x20, 0]),
        6 => (frag >> 3 & 1, [0, 4]),
        _ => (frag >> 3 & 1, [0x20, 4]),
    };
    f.extend_from_slice(&[
        0,
        ident,
        flags[0],
        flags[1],
        [64, 1, 2, 64][inp.byte() as usize % 4],
        proto,
        0,
        0,
    ]);
    f.extend_from_slice(&sip);
    f.extend_from_slice(&dip);
    let c = crate::wire::checksum::checksum(&f[14..34]);
    f[24..26].copy_from_slice(&c.to_be_bytes());
    let (sport, dport) = (
        1000 + inp.byte() as u16 % 8,
        [53u16, 80, 7][inp.byte() as usize % 3],
    );
    match proto {
        1 => f.extend_from_slice(&[8, 0, 0, 0, 0, 1, 0, 1]),
        _ => {
            f.extend_from_slice(&sport.to_be_bytes());
            f.extend_from_slice(&dport.to_be_bytes());
            if proto == 6 {
                f.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, inp.byte() & 0x17]);
                f.extend_from_slice(&[0xff, 0xff, 0, 0, 0, 0]);
            } else {
                f.extend_from_slice(&((l4 + 4) as u16).to_be_bytes());
                f.extend_from_slice(&[0, 0]);
            }
        }
    }
    f.extend_from_slice(b"fuzz");
    f
}

/// Run the operations `data` encodes against a fresh switch, checking the invariants after
/// each (see the module docs).
pub fn stateful(data: &[u8]) {
    let mut sim = Sim::new();
    let mut inp = Input(data);
    while !inp.0.is_empty() {
        let op = inp.byte();
        sim.step(op, &mut inp);
        sim.check();
    }
    sim.finish();
}
