//! Fuzz entry points, shared by the cargo-fuzz targets in `fuzz/` and by the stable-Rust smoke
//! test (`tests/fuzz_smoke.rs`) that runs them over pseudo-random inputs in every `cargo test`.
//!
//! Each function must never panic on any input; the assertions inside check invariants (no frame
//! leaked, counters add up), so a violation is a finding.

mod openflow;
mod stateful;

pub use openflow::{OfRun, openflow};
pub use stateful::stateful;

use crate::datapath::{BridgeOptions, Datapath, PortState, VlanMode};
use crate::packet::Frames;
use crate::pipeline::Pipeline;
use crate::port::mem::MemPort;
use crate::port::{Port, PortKind};

/// Split `data` into frames (a length byte, then that many bytes) and send them through a bridge
/// of four mem ports (trunk of all, access 10, trunk 10/20 with checksum completion, access 20),
/// the port chosen by each frame's length byte. Checks that every frame is either transmitted or
/// counted as a drop, and that no frame buffer leaks.
pub fn pipeline(data: &[u8]) {
    let mut frames = Frames::new(256).expect("map frames");
    let mut dp = Datapath::new();
    let b = dp
        .add_bridge(
            "br0",
            &BridgeOptions {
                fdb_capacity: 8,
                aging: 300,
            },
        )
        .expect("bridge");
    let modes = [
        VlanMode::default_trunk(),
        VlanMode::Access(10),
        VlanMode::parse(None, Some("10,20")).expect("trunks"),
        VlanMode::Access(20),
    ];
    let mut ports = Vec::new();
    for (i, m) in modes.into_iter().enumerate() {
        dp.add_port(
            i as u16,
            PortState {
                mtu: if i == 3 { 100 } else { 1500 },
                partial_csum_in: i == 2,
                ..PortState::new(&format!("p{i}"), PortKind::Mem, b, m, 1500)
            },
        )
        .expect("port");
        ports.push(MemPort::new(i as u16));
    }
    let mut pipeline = Pipeline::new();
    let mut batch = Vec::new();
    let mut rest = data;
    let mut now = 1;
    while let Some((&len, tail)) = rest.split_first() {
        let n = (len as usize).min(tail.len());
        let (frame, tail) = tail.split_at(n);
        rest = tail;
        let port = (len % 4) as usize;
        ports[port].inject(frame);
        ports[port].rx_burst(&mut frames, &mut batch, 64);
        pipeline.process(&mut dp, &mut frames, port as u16, &mut batch, now);
        now += (len & 1) as u64;
        for (i, p) in ports.iter_mut().enumerate() {
            p.tx_burst(&mut frames, &mut dp.out[i]);
        }
        dp.age_fdbs(now as u32, 64);
    }
    assert_eq!(frames.free_count(), frames.capacity(), "frame leaked");
}

/// Parse `data` as a TOML config; must return Ok or Err, never panic.
pub fn config(data: &[u8]) {
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = crate::config::Config::parse(s);
    }
}

/// Feed `data` to the control protocol as one connection's bytes; never panics.
pub fn control(data: &[u8]) {
    let reg = crate::control::Registry::new();
    let mut out = Vec::new();
    let _ = crate::control::server::handle_connection(data, &mut out, &reg);
}

/// Parse `data` as an ovs-ofctl flow; whatever parses must print and parse back to itself.
pub fn flow(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(f) = crate::flow::parse_flow(s) {
        let text = f.to_string();
        let again = crate::flow::parse_flow(&text)
            .unwrap_or_else(|e| panic!("display of a parsed flow does not parse: {text}: {e}"));
        assert_eq!(again, f, "round trip changed the flow: {text}");
    }
    let _ = crate::flow::parse_filter(s);
}

/// The router, NAT, VXLAN and flow stages under fuzz: bridge `br0` (gateway 10.0.1.1/24, a
/// flow table with rewrites and a VXLAN port to 10.252.0.2) and bridge `ul` (gateway
/// 10.252.0.1/24, masquerade out of it, a port mapping on it). `data` is split like
/// [`pipeline`]; the length byte's low bit picks the port (br0's or ul's). Checks no panic and
/// no leaked frame.
pub fn router(data: &[u8]) {
    use crate::datapath::Gateway;
    let mut frames = Frames::new(512).expect("map frames");
    let mut dp = Datapath::new();
    let br0 = dp
        .add_bridge("br0", &BridgeOptions::default())
        .expect("br0");
    let ul = dp.add_bridge("ul", &BridgeOptions::default()).expect("ul");
    let gw0 = Gateway::default_mac("br0");
    let gw1 = Gateway::default_mac("ul");
    dp.set_gateway(
        br0,
        Some(Gateway {
            ip: [10, 0, 1, 1],
            len: 24,
            mac: gw0,
        }),
    )
    .expect("gw0");
    dp.set_gateway(
        ul,
        Some(Gateway {
            ip: [10, 252, 0, 1],
            len: 24,
            mac: gw1,
        }),
    )
    .expect("gw1");
    let mut a = PortState::new("a", PortKind::Mem, br0, VlanMode::default_trunk(), 1500);
    a.partial_csum_in = true;
    dp.add_port(0, a).expect("a");
    dp.add_port(
        1,
        PortState::new("u", PortKind::Mem, ul, VlanMode::default_trunk(), 1400),
    )
    .expect("u");
    let mut vx = PortState::new(
        "vx0",
        PortKind::Vxlan,
        br0,
        VlanMode::default_trunk(),
        65535,
    );
    vx.partial_csum_in = true;
    vx.tunnel = Some(Box::new(crate::vxlan::Tunnel::new(
        crate::vxlan::TunnelConf {
            vni: 42,
            local_ip: [10, 252, 0, 1],
            remotes: vec![[10, 252, 0, 2]],
            ..crate::vxlan::TunnelConf::default()
        },
    )));
    dp.add_port(2, vx).expect("vx0");
    dp.refresh_tunnels();
    dp.neigh.learn(
        ul,
        [10, 252, 0, 2],
        crate::wire::MacAddr([2, 0, 0, 0, 0, 2]),
        1,
    );
    dp.nat
        .add_source(0x0a00_0100, 24, ul, None, [10, 252, 0, 1])
        .expect("masquerade");
    dp.nat
        .add_dest(ul, 6, 8080, [10, 0, 1, 2], 80)
        .expect("dnat");
    dp.nat.ensure_hairpin(br0, [10, 0, 1, 1]).expect("hairpin");
    {
        let ft = &mut dp.bridge_mut(br0).expect("br0").flows;
        for text in [
            "priority=10,udp,tp_dst=7,actions=mod_nw_dst:10.0.1.9,mod_tp_dst:9,dec_ttl,NORMAL",
            "priority=9,dl_vlan=5,actions=strip_vlan,resubmit(,1),mod_vlan_vid:6,output:0",
            "table=1,priority=1,actions=push_vlan:0x8100,mod_vlan_pcp:3,NORMAL",
            "priority=8,tcp,actions=set_field:10.0.1.3->ip_src,mod_tp_src:1,NORMAL",
            "priority=11,udp,ct_state=-trk,actions=ct(table=2,zone=3,nat)",
            "table=2,priority=5,udp,ct_state=+trk+new,actions=ct(commit,zone=3,nat(src=10.0.1.77:2000-2003)),NORMAL",
            "table=2,priority=4,ct_state=+trk+est,actions=NORMAL",
            "table=2,priority=3,ct_state=+inv,actions=drop",
            "priority=0,actions=NORMAL",
        ] {
            let f = crate::flow::parse_flow(text).expect("fuzz flow");
            ft.cls.add(f, 0, |_| Some(0)).expect("add fuzz flow");
        }
        ft.refresh();
    }
    let mut ports = [MemPort::new(0), MemPort::new(1)];
    let mut pipeline = Pipeline::new();
    let mut batch = Vec::new();
    let mut rest = data;
    let mut now = 1;
    while let Some((&len, tail)) = rest.split_first() {
        let n = (len as usize).min(tail.len());
        let (frame, tail) = tail.split_at(n);
        rest = tail;
        let port = (len & 1) as usize;
        ports[port].inject(frame);
        ports[port].rx_burst(&mut frames, &mut batch, 64);
        pipeline.process(&mut dp, &mut frames, port as u16, &mut batch, now);
        now += (len >> 7) as u64;
        dp.now_ms = now * 1000;
        for (i, p) in ports.iter_mut().enumerate() {
            p.tx_burst(&mut frames, &mut dp.out[i]);
        }
        for d in dp.out[2].drain(..) {
            frames.free(d.addr);
        }
        dp.age_fdbs(now as u32, 64);
    }
    // Packets waiting for a next hop are held, not leaked.
    for h in dp.neigh.take_all_held() {
        frames.free(h.desc.addr);
    }
    assert_eq!(frames.free_count(), frames.capacity(), "frame leaked");
}

/// DNS messages through the gateways' answering core (`dns::answer`): the first byte picks
/// whether an upstream exists, the rest is split like `pipeline`'s frames (a length byte, then
/// the bytes) into queries; every forwarded query is answered back by an "upstream" that echoes
/// it with the QR bit set and its tail mutated by the next chunk. Checks: no panic; an answer
/// parses and carries the query's id; no more than `MAX_PENDING` queries wait; expiry empties
/// the table.
pub fn dns(data: &[u8]) {
    use crate::dns::answer::{Core, MAX_PENDING, Outcome};
    use hickory_proto::op::Message;
    let Some((&mode, mut rest)) = data.split_first() else {
        return;
    };
    let mut reg = crate::dns::Registry::default();
    for (n, ip) in [("web", "10.1.0.2"), ("db", "10.1.0.3")] {
        let spec = crate::dns::DnsSpec {
            bridge: "br0".into(),
            name: n.into(),
            ip: ip.into(),
            aliases: vec!["svc".into()],
        };
        reg.add(&spec).expect("valid record");
    }
    let mut core = Core::<usize>::default();
    let mut i = 0;
    while let Some((&len, tail)) = rest.split_first() {
        let chunk = &tail[..(len as usize).min(tail.len())];
        rest = &tail[chunk.len()..];
        i += 1;
        let src = std::net::Ipv4Addr::new(10, 0, 0, (i % 4) as u8);
        match core.query(&reg, "br0", src, chunk, i, i as u64, mode & 1 == 1) {
            Outcome::Answer(a) => {
                let m = Message::from_vec(&a).expect("an answer parses");
                assert_eq!(&a[..2], &chunk[..2], "the answer keeps the query's id");
                assert!(m.metadata.message_type == hickory_proto::op::MessageType::Response);
            }
            Outcome::Forward(mut f) => {
                f[2] |= 0x80;
                let n = f.len().min(rest.len()).min(4);
                let at = f.len() - n;
                f[at..].copy_from_slice(&rest[..n]);
                if let Some((c, a)) = core.upstream_reply(&f) {
                    assert_eq!(c, i, "relayed to the client that asked");
                    assert_eq!(&a[..2], &chunk[..2]);
                }
            }
            Outcome::Drop => {}
        }
        assert!(core.waiting() <= MAX_PENDING);
    }
    core.expire(u64::MAX);
    assert_eq!(core.waiting(), 0);
}
