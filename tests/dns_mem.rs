//! In-memory tests of the DNS punt path on mem ports: what the L3 stage hands to the DNS
//! service (only port 53 on the ingress bridge's own gateway), the drop reasons when it cannot,
//! the service's replies sent from the gateway; and `[[dns]]` in the configuration file.

mod common;

use common::*;
use etherparse::{PacketBuilder, SlicedPacket, TransportSlice};
use uvs::counters::DropReason;
use uvs::dns::punt::{Punted, Reply};
use uvs::wire::MacAddr;

fn udp(src_mac: [u8; 6], dst_mac: MacAddr, src: [u8; 4], dst: [u8; 4], port: u16) -> Vec<u8> {
    let mut f = Vec::new();
    PacketBuilder::ethernet2(src_mac, dst_mac.0)
        .ipv4(src, dst, 64)
        .udp(40000, port)
        .write(&mut f, b"\x12\x34query")
        .unwrap();
    f
}

#[test]
fn only_port_53_on_the_own_gateway_is_punted() {
    let mut n = routed();
    let (tx, rx) = crossbeam_channel::bounded::<Punted>(2);
    n.h.dp.punt.connect(Some(tx));
    let q = udp(mac(2), n.gw0, [10, 0, 1, 2], GW0, 53);
    n.h.send(n.a, &q);
    let p = rx.try_recv().expect("punted");
    assert_eq!((p.bridge_name.as_str(), p.in_port), ("br0", n.a));
    assert_eq!((p.client_mac, p.gw_mac, p.gw_len), (mac(2), n.gw0.0, 24));
    assert_eq!(p.packet, q[14..], "the whole IPv4 packet");
    assert_eq!(n.h.drops(n.a, DropReason::LocalUnsupported), 0);
    assert!(n.h.outputs().iter().all(|o| o.is_empty()), "consumed");
    // Another port on the gateway: refused (ICMP port unreachable).
    n.h.send(n.a, &udp(mac(2), n.gw0, [10, 0, 1, 2], GW0, 54));
    assert_eq!(n.h.drops(n.a, DropReason::LocalRefused), 1);
    assert_eq!(n.h.outputs()[n.a as usize].len(), 1, "port unreachable");
    // Another bridge's gateway (routed to br0's gateway from br1): not punted, refused.
    n.h.send(n.b, &udp(mac(3), n.gw1, [10, 0, 2, 2], GW0, 53));
    assert_eq!(n.h.drops(n.b, DropReason::LocalRefused), 1);
    assert_eq!(n.h.outputs()[n.b as usize].len(), 1, "port unreachable");
    assert!(rx.try_recv().is_err());
    // A full queue: counted on the ingress port.
    for _ in 0..3 {
        n.h.send(n.a, &udp(mac(2), n.gw0, [10, 0, 1, 2], GW0, 53));
    }
    assert_eq!(n.h.drops(n.a, DropReason::DnsQueueFull), 1);
    assert_eq!(n.h.dp.punt.counters.punted, 3);
}

#[test]
fn replies_leave_from_the_gateway_out_of_the_query_port() {
    let mut n = routed();
    let packet = uvs::dns::service::udp_packet(
        (GW0.into(), 53),
        ([10, 0, 1, 2].into(), 40000),
        b"\x12\x34answer",
    );
    let r = Reply {
        bridge: 0,
        port: n.a,
        dst_mac: mac(2),
        src_mac: n.gw0.0,
        packet,
    };
    assert!(uvs::pipeline::send_reply(&mut n.h.dp, &mut n.h.frames, &r));
    n.h.run();
    let out = n.h.outputs();
    assert_eq!(out[n.a as usize].len(), 1);
    assert!(out[n.b as usize].is_empty());
    let f = &out[n.a as usize][0];
    assert_eq!((&f[0..6], &f[6..12]), (&mac(2)[..], &n.gw0.0[..]));
    let s = SlicedPacket::from_ethernet(f).unwrap();
    let Some(TransportSlice::Udp(u)) = s.transport else {
        panic!("not UDP");
    };
    assert_eq!((u.source_port(), u.destination_port()), (53, 40000));
    assert_eq!(u.payload(), b"\x12\x34answer");
    // A port that is not on the reply's bridge gets nothing.
    let wrong = Reply { port: n.b, ..r };
    assert!(!uvs::pipeline::send_reply(
        &mut n.h.dp,
        &mut n.h.frames,
        &wrong
    ));
}

#[test]
fn config_file_takes_dns_names() {
    let text = r#"
dns_upstream = "none"
[[bridge]]
name = "br0"
gateway = "10.0.1.1/24"
[[dns]]
bridge = "br0"
name = "web"
ip = "10.0.1.2"
aliases = ["www"]
"#;
    let c = uvs::config::Config::parse(text).unwrap();
    assert_eq!(c.dns.len(), 1);
    assert_eq!(c.dns[0].aliases, ["www"]);
    assert_eq!(c.dns_upstream.as_deref(), Some("none"));
    let e = uvs::config::Config::parse(&text.replace("bridge = \"br0\"", "bridge = \"x\""))
        .unwrap_err();
    assert!(e.contains("bridge: no bridge named 'x'"), "{e}");
    let e = uvs::config::Config::parse(&text.replace("10.0.1.2", "10.0.1")).unwrap_err();
    assert!(e.contains("ip:"), "{e}");
}

/// The gateway's DNS answers its own bridge's hosts (the connected subnet) only, as Docker's
/// embedded DNS answers its containers: a query from a host routed to the bridge (the uplink's
/// gateway, reached from beyond it) is refused with ICMP port unreachable, not forwarded (it
/// was an open recursive resolver on the uplink address).
#[test]
fn dns_answers_the_bridges_own_subnet_only() {
    let mut n = routed();
    let (tx, rx) = crossbeam_channel::bounded::<Punted>(4);
    n.h.dp.punt.connect(Some(tx));
    let b0 = n.h.dp.bridge_id("br0").unwrap();
    n.h.dp
        .routes
        .add(uvs::route::Route {
            prefix: [10, 9, 0, 0].into(),
            len: 16,
            kind: uvs::route::RouteKind::Via {
                gateway: [10, 0, 1, 254].into(),
                bridge: b0,
            },
        })
        .unwrap();
    n.h.send(n.a, &udp(mac(2), n.gw0, [10, 9, 0, 7], GW0, 53));
    assert!(rx.try_recv().is_err(), "not punted");
    let out = n.h.outputs();
    assert_eq!(out[n.a as usize].len(), 1, "port unreachable back");
    let s = SlicedPacket::from_ethernet(&out[n.a as usize][0]).unwrap();
    let Some(TransportSlice::Icmpv4(icmp)) = s.transport else {
        panic!("icmp")
    };
    assert_eq!((icmp.type_u8(), icmp.code_u8()), (3, 3));
    assert_eq!(n.h.drops(n.a, DropReason::LocalRefused), 1);
    // A host of the bridge's own subnet still is.
    n.h.send(n.a, &udp(mac(2), n.gw0, [10, 0, 1, 2], GW0, 53));
    assert!(rx.try_recv().is_ok(), "punted");
}
