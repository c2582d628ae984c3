//! In-memory tests of the flow features taken from OVS's flow language (see
//! tests/ovs_flow_corpus.rs): IPv6 matches, registers and metadata with load/move/set_field,
//! mod_nw_tos/mod_nw_ecn, ct_clear and note, each checked on the frames that leave.

mod common;

use common::*;
use etherparse::{NetSlice, PacketBuilder, SlicedPacket};
use uvs::datapath::VlanMode;

impl FlowNet {
    /// Send `f` on port `from` and return which ports (0, 1, 2) got it, and the frames.
    fn send(&mut self, from: usize, f: &[u8]) -> Vec<(usize, Vec<u8>)> {
        self.h.send(self.p[from], f);
        let out = self.h.outputs();
        (0..3)
            .flat_map(|i| {
                out[self.p[i] as usize]
                    .iter()
                    .map(move |f| (i, f.clone()))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    fn ports(&mut self, from: usize, f: &[u8]) -> Vec<usize> {
        self.send(from, f).into_iter().map(|(i, _)| i).collect()
    }
}

fn v6(s: &str) -> [u8; 16] {
    s.parse::<std::net::Ipv6Addr>().unwrap().octets()
}

fn tcp6(src: &str, dst: &str, dport: u16) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ethernet2(mac(1), mac(2))
        .ipv6(v6(src), v6(dst), 64)
        .tcp(1000, dport, 1, 100)
        .write(&mut v, b"data")
        .unwrap();
    v
}

fn udp6(src: &str, dst: &str, dport: u16) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ethernet2(mac(1), mac(2))
        .ipv6(v6(src), v6(dst), 64)
        .udp(1000, dport)
        .write(&mut v, b"data")
        .unwrap();
    v
}

/// An ICMPv6 neighbour advertisement (136) for `target`.
fn na(src: &str, target: &str) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ethernet2(mac(1), mac(2))
        .ipv6(v6(src), v6("ff02::1"), 255)
        .icmpv6_raw(136, 0, [0x60, 0, 0, 0])
        .write(&mut v, &v6(target))
        .unwrap();
    v
}

fn udp4(src: u8, tos: u8) -> Vec<u8> {
    udp4_tos(src, src, 1000, 53, tos, b"data")
}

#[test]
fn ipv6_matches_select_ports() {
    let mut n = FlowNet::new();
    n.add("priority=100,tcp6,tp_dst=80,actions=output:p2");
    n.add("priority=90,ipv6,ipv6_src=fc00::/64,actions=output:p3");
    n.add("priority=80,icmp6,icmp_type=136,nd_target=fc00::9,actions=output:p2");
    n.add("priority=70,ipv6,ipv6_label=0x12345,actions=output:p3");
    n.add("priority=1,actions=drop");
    assert_eq!(n.ports(0, &tcp6("fd00::1", "fd00::2", 80)), vec![1]);
    assert_eq!(
        n.ports(0, &tcp6("fd00::1", "fd00::2", 81)),
        Vec::<usize>::new()
    );
    // Same packed key (ports, protocol) with another source: the exact-match cache must not
    // answer for IPv6 frames while flows match IPv6 addresses.
    for _ in 0..3 {
        assert_eq!(n.ports(0, &udp6("fc00::1", "fd00::2", 9)), vec![2]);
        assert_eq!(
            n.ports(0, &udp6("fd00::1", "fd00::2", 9)),
            Vec::<usize>::new()
        );
    }
    assert_eq!(n.ports(0, &na("fd00::1", "fc00::9")), vec![1]);
    assert_eq!(n.ports(0, &na("fd00::1", "fc00::8")), Vec::<usize>::new());
    // IPv6 header at 14: version and traffic class, then the 20-bit flow label.
    let mut labelled = udp6("fd00::1", "fd00::2", 9);
    labelled[15..18].copy_from_slice(&[0x02, 0x34, 0x56]);
    assert_eq!(n.ports(0, &labelled), Vec::<usize>::new(), "label 0x23456");
    labelled[15..18].copy_from_slice(&[0x01, 0x23, 0x45]);
    assert_eq!(n.ports(0, &labelled), vec![2], "label 0x12345");
    // The frames leave unchanged.
    let f = tcp6("fd00::1", "fd00::2", 80);
    assert_eq!(n.send(0, &f), vec![(1, f)]);
}

#[test]
fn registers_carry_state_between_tables() {
    let mut n = FlowNet::new();
    n.add("table=0,in_port=p1,actions=load:0x2a->NXM_NX_REG0[],resubmit(,1)");
    // mac(n) is 02:00:00:00:00:0n: the low 16 bits of the source are n.
    n.add("table=0,in_port=p2,actions=move:NXM_OF_ETH_SRC[0..15]->reg0[16..31],goto_table:1");
    n.add("table=0,in_port=p3,actions=set_field:0x5->metadata,load:0x1->xreg2[33],goto_table:1");
    n.add("table=1,priority=10,reg0=0x2a,actions=output:p3");
    n.add("table=1,priority=10,reg0=0x70000/0xffff0000,actions=output:p1");
    n.add("table=1,priority=10,metadata=0x5,reg4=0x2,actions=output:p2");
    n.add("table=1,priority=0,actions=drop");
    let f = frame(mac(2), mac(7), 1);
    assert_eq!(n.ports(0, &f), vec![2], "reg0=0x2a from load");
    assert_eq!(
        n.ports(1, &f),
        vec![0],
        "reg0[16..31]=7 from the source MAC"
    );
    let g = frame(mac(2), mac(8), 1);
    assert_eq!(
        n.ports(1, &g),
        Vec::<usize>::new(),
        "reg0[16..31]=8: no flow"
    );
    assert_eq!(
        n.ports(2, &f),
        vec![1],
        "metadata and xreg2 bit 33 (reg4 bit 1)"
    );
    // Registers start at 0 for every frame: in_port=p3 no longer loads them.
    n.add("table=0,in_port=p3,actions=goto_table:1");
    assert_eq!(n.ports(2, &f), Vec::<usize>::new());
}

#[test]
fn tos_and_ecn_rewrites_keep_the_checksum() {
    let mut n = FlowNet::new();
    n.add("priority=10,ip,actions=mod_nw_tos:0x20,mod_nw_ecn:3,note:01.02,output:p2");
    let out = n.send(0, &udp4(1, 0x41));
    assert_eq!(out.len(), 1);
    let s = SlicedPacket::from_ethernet(&out[0].1).unwrap();
    let Some(NetSlice::Ipv4(ip)) = s.net else {
        panic!("not IPv4")
    };
    let h = ip.header().to_header();
    assert_eq!(h.dscp.value(), 0x20 >> 2);
    assert_eq!(h.ecn.value(), 3);
    assert_eq!(h.header_checksum, h.calc_header_checksum());
}

#[test]
fn ttl_rewrites_keep_the_checksum_and_later_tables_see_them() {
    let mut n = FlowNet::new();
    // set_field on the TTL and ECN bits is mod_nw_ttl / mod_nw_ecn (and written so).
    n.add("priority=10,ip,actions=set_field:9->nw_ttl,set_field:1->ip_ecn,resubmit(,1)");
    n.add("table=1,ip,nw_ttl=9,actions=output:p2");
    n.add("table=1,priority=0,actions=output:p3");
    let out = n.send(0, &udp4(1, 0x41));
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, 1, "table 1 matched the new TTL");
    let s = SlicedPacket::from_ethernet(&out[0].1).unwrap();
    let Some(NetSlice::Ipv4(ip)) = s.net else {
        panic!("not IPv4")
    };
    let h = ip.header().to_header();
    assert_eq!(h.time_to_live, 9);
    assert_eq!(h.ecn.value(), 1);
    assert_eq!(h.dscp.value(), 0x41 >> 2, "DSCP kept");
    assert_eq!(h.header_checksum, h.calc_header_checksum());
}

#[test]
fn ct_clear_forgets_the_ct_state() {
    let mut n = FlowNet::new();
    n.add("table=0,ip,actions=ct(table=1)");
    n.add("table=1,ct_state=+trk,ip,actions=ct_clear,resubmit(,2)");
    n.add("table=2,priority=10,ct_state=-trk,actions=output:p2");
    n.add("table=2,priority=10,ct_state=+trk,actions=output:p3");
    assert_eq!(n.ports(0, &udp4(1, 0)), vec![1]);
    n.add("table=1,ct_state=+trk,ip,actions=resubmit(,2)");
    assert_eq!(n.ports(0, &udp4(1, 0)), vec![2], "without ct_clear: +trk");
}

fn udp(src: u8, dst: u8, sport: u16, dport: u16) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ethernet2(mac(src), mac(dst))
        .ipv4([10, 0, 0, src], [10, 0, 0, dst], 64)
        .udp(sport, dport)
        .write(&mut v, b"data")
        .unwrap();
    v
}

#[test]
fn ct_mark_and_label_follow_the_connection() {
    let mut n = FlowNet::new();
    n.add("table=0,priority=10,ip,ct_state=-trk,actions=ct(table=1)");
    n.add(
        "table=1,priority=20,in_port=p1,udp,tp_dst=53,ct_state=+trk+new,\
         actions=ct(commit,exec(set_field:0x5->ct_mark,set_field:0x1/0x1->ct_label)),output:p2",
    );
    n.add("table=1,priority=10,in_port=p1,udp,ct_state=+trk+new,actions=ct(commit),output:p2");
    n.add("table=1,priority=10,in_port=p1,ct_state=+trk+est,ct_mark=5,actions=output:p2");
    n.add(
        "table=1,priority=20,in_port=p2,ct_state=+trk+est,ct_mark=5,ct_label=1,actions=output:p1",
    );
    n.add("table=1,priority=10,in_port=p2,ct_state=+trk+est,actions=output:p3");
    n.add("table=1,priority=0,actions=drop");
    // A connection committed with a mark: its replies and later packets carry it.
    assert_eq!(n.ports(0, &udp(1, 2, 1000, 53)), vec![1]);
    assert_eq!(
        n.ports(1, &udp(2, 1, 53, 1000)),
        vec![0],
        "reply: ct_mark=5"
    );
    assert_eq!(n.ports(0, &udp(1, 2, 1000, 53)), vec![1], "est: ct_mark=5");
    // One committed without: mark 0.
    assert_eq!(n.ports(0, &udp(1, 2, 1001, 54)), vec![1]);
    assert_eq!(
        n.ports(1, &udp(2, 1, 54, 1001)),
        vec![2],
        "reply: ct_mark=0"
    );
    assert_eq!(n.ports(0, &udp(1, 2, 1001, 54)), Vec::<usize>::new());
}

/// UDP from 10.0.0.1 with the IPv4 MF flag and fragment offset (in 8-byte units) given.
fn fragment(mf: bool, offset: u16) -> Vec<u8> {
    let mut f = udp(1, 2, 1000, 53);
    let ff = (u16::from(mf) << 13) | offset;
    f[20..22].copy_from_slice(&ff.to_be_bytes());
    f[24..26].copy_from_slice(&[0, 0]);
    let h = etherparse::Ipv4HeaderSlice::from_slice(&f[14..])
        .unwrap()
        .to_header();
    f[24..26].copy_from_slice(&h.calc_header_checksum().to_be_bytes());
    f
}

#[test]
fn ip_frag_and_vlan_tci_select_ports() {
    let mut n = FlowNet::new();
    n.add("priority=10,ip,ip_frag=no,actions=output:p2");
    n.add("priority=10,ip,ip_frag=first,actions=output:p3");
    n.add("priority=10,ip,ip_frag=later,actions=drop");
    n.add("priority=20,in_port=p2,vlan_tci=0x1000/0x1000,actions=pop_vlan,output:p3");
    n.add("priority=1,actions=drop");
    assert_eq!(n.ports(0, &fragment(false, 0)), vec![1], "not a fragment");
    assert_eq!(n.ports(0, &fragment(true, 0)), vec![2], "first fragment");
    assert_eq!(
        n.ports(0, &fragment(true, 100)),
        Vec::<usize>::new(),
        "later"
    );
    assert_eq!(
        n.ports(0, &fragment(false, 100)),
        Vec::<usize>::new(),
        "last"
    );
    let f = udp(2, 1, 53, 1000);
    assert_eq!(
        n.send(1, &tagged(&f, 7)),
        vec![(2, f.clone())],
        "tagged: popped"
    );
    assert_eq!(n.ports(2, &f), vec![1], "untagged: not a fragment flow");
}

#[test]
fn clone_runs_on_a_copy() {
    let mut n = FlowNet::new();
    n.add(
        "table=0,in_port=p1,ip,actions=clone(mod_dl_dst(02:00:00:00:00:09),\
         set_field:10.0.0.9->ip_dst,output:p3),output:p2",
    );
    let f = udp(1, 2, 1000, 53);
    let out = n.send(0, &f);
    assert_eq!(out.len(), 2, "{out:?}");
    assert!(
        out.contains(&(1, f.clone())),
        "the original leaves unchanged"
    );
    let (_, c) = out.iter().find(|(p, _)| *p == 2).unwrap();
    assert_eq!(&c[0..6], &mac(9));
    let s = SlicedPacket::from_ethernet(c).unwrap();
    let Some(NetSlice::Ipv4(ip)) = s.net else {
        panic!("not IPv4")
    };
    let h = ip.header().to_header();
    assert_eq!(h.destination, [10, 0, 0, 9]);
    assert_eq!(h.header_checksum, h.calc_header_checksum());
    // Registers set inside the clone stay there; resubmit works inside it.
    n.add("table=0,in_port=p2,actions=clone(load:1->reg0[],resubmit(,1)),resubmit(,1)");
    n.add("table=1,priority=10,reg0=1,actions=output:p3");
    n.add("table=1,priority=10,reg0=0,actions=output:p1");
    let mut got = n.ports(1, &f);
    got.sort();
    assert_eq!(got, vec![0, 2]);
}

#[test]
fn output_with_max_len_truncates_a_copy() {
    let mut n = FlowNet::new();
    n.add("in_port=p1,actions=output(port=p2,max_len=20),output:p3");
    let f = udp(1, 2, 1000, 53);
    let out = n.send(0, &f);
    assert_eq!(out, vec![(1, f[..20].to_vec()), (2, f.clone())]);
    let short = &f[..14];
    let mut g = short.to_vec();
    g.extend_from_slice(&[0; 4]);
    assert_eq!(
        n.send(0, &g),
        vec![(1, g.clone()), (2, g.clone())],
        "shorter: as is"
    );
}

/// (source address, source port) of an IPv4 UDP frame, and whether its checksums are right.
fn udp_src(f: &[u8]) -> ([u8; 4], u16, bool) {
    let s = SlicedPacket::from_ethernet(f).unwrap();
    let Some(NetSlice::Ipv4(ip)) = &s.net else {
        panic!("not IPv4")
    };
    let h = ip.header().to_header();
    let Some(etherparse::TransportSlice::Udp(u)) = &s.transport else {
        panic!("not UDP")
    };
    let ok = h.header_checksum == h.calc_header_checksum()
        && u.checksum() == u.to_header().calc_checksum_ipv4(&h, u.payload()).unwrap();
    (h.source, u.source_port(), ok)
}

#[test]
fn snat_from_an_address_range() {
    let mut n = FlowNet::new();
    n.add("in_port=p1,ip,actions=ct(commit,nat(src=10.1.1.240-10.1.1.243)),output:p2");
    n.add("in_port=p2,ip,actions=ct(nat),output:p1");
    let range = [10, 1, 1, 240]..=[10, 1, 1, 243];
    let out = n.send(0, &udp(1, 2, 1000, 53));
    let (a, port, ok) = udp_src(&out[0].1);
    assert!(ok && range.contains(&a), "{a:?}");
    // The same host keeps its address on another connection.
    let again = n.send(0, &udp(1, 2, 1001, 53));
    assert_eq!(udp_src(&again[0].1).0, a);
    // The reply is translated back.
    let mut reply = Vec::new();
    PacketBuilder::ethernet2(mac(2), mac(1))
        .ipv4([10, 0, 0, 2], a, 64)
        .udp(53, port)
        .write(&mut reply, b"data")
        .unwrap();
    let back = n.send(1, &reply);
    assert_eq!(back.len(), 1);
    let s = SlicedPacket::from_ethernet(&back[0].1).unwrap();
    let Some(NetSlice::Ipv4(ip)) = s.net else {
        panic!()
    };
    assert_eq!(ip.header().destination(), [10, 0, 0, 1]);
    // Hosts spread over the range.
    let mut used = std::collections::BTreeSet::new();
    for h in 3..40 {
        let out = n.send(0, &udp(h, 2, 1000, 53));
        let (a, _, ok) = udp_src(&out[0].1);
        assert!(ok && range.contains(&a));
        used.insert(a);
    }
    assert!(used.len() > 1, "{used:?}");
}

#[test]
fn mpls_push_match_pop() {
    let mut n = FlowNet::new();
    n.add("in_port=p1,ip,actions=push_mpls:0x8847,set_mpls_label:4,output:p2");
    n.add("in_port=p2,mpls,mpls_label=4,mpls_bos=1,actions=pop_mpls:0x0800,output:p1");
    let f = udp4(1, 0x41); // DSCP 0x10: TC 0x10 & 7 = 0
    let out = n.send(0, &f);
    assert_eq!(out.len(), 1);
    let g = &out[0].1;
    let mut want = f[..12].to_vec();
    want.extend_from_slice(&[0x88, 0x47]);
    // label 4, TC 0, bottom of stack, TTL 64 (the IP TTL).
    want.extend_from_slice(&((4u32 << 12) | 0x100 | 64).to_be_bytes());
    want.extend_from_slice(&f[14..]);
    assert_eq!(g, &want);
    // Back in through p2: popped to the original frame.
    assert_eq!(n.send(1, g), vec![(0, f.clone())]);
    // Two labels, matched table by table on the top one (OVS's system test).
    n.add(
        "table=0,in_port=p3,ip,actions=push_mpls:0x8847,set_mpls_label:4,\
         push_mpls:0x8847,set_field:2->mpls_label,resubmit(,1)",
    );
    n.add("table=1,mpls,mpls_label=2,mpls_bos=0,actions=pop_mpls:0x8847,resubmit(,2)");
    n.add("table=2,mpls,mpls_label=4,mpls_bos=1,actions=pop_mpls:0x0800,output:p1");
    assert_eq!(n.send(2, &f), vec![(0, f.clone())]);
    // dec_mpls_ttl drops at TTL 1.
    n.add("in_port=p2,mpls,mpls_ttl=1,actions=dec_mpls_ttl,output:p3");
    n.add("in_port=p2,mpls,mpls_ttl=9,actions=dec_mpls_ttl,output:p3");
    let mut t1 = want.clone();
    t1[17] = 1;
    assert_eq!(n.ports(1, &t1), Vec::<usize>::new());
    t1[17] = 9;
    let out = n.send(1, &t1);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].1[17], 8);
}

#[test]
fn output_to_the_ingress_port_is_skipped() {
    let mut n = FlowNet::new();
    n.add("in_port=p1,actions=output:p1,output:p2");
    n.add("in_port=p2,actions=in_port");
    let f = udp(1, 2, 1000, 53);
    assert_eq!(n.ports(0, &f), vec![1], "output:p1 from p1 does nothing");
    assert_eq!(n.ports(1, &f), vec![1], "in_port sends back");
}

/// The multi-table VLAN switch of Open vSwitch's advanced tutorial (Documentation/tutorials/
/// ovs-advanced.rst, see the file for the commit): table 0 admission, table 1 VLAN input,
/// table 2 MAC learning with `learn(...)` into table 10 and register 0, table 3 lookup, table
/// 4 output by reg0. The last flow of the file is one the tutorial shows learn() making.
const TUTORIAL: &str = include_str!("data/ovs-tutorial-flows.txt");

#[test]
fn tutorial_vlan_switch_learns() {
    let mut h = Harness::new();
    let b = h.bridge("br0");
    let p: Vec<u16> = (1..=4)
        .map(|i| h.port(b, &format!("p{i}"), VlanMode::default_trunk()))
        .collect();
    let mut n = FlowNet {
        h,
        b,
        p: [p[0], p[1], p[2]],
    };
    let flows: Vec<&str> = TUTORIAL
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .collect();
    // All but the learned example (table 10 starts empty).
    for f in &flows[..flows.len() - 1] {
        n.add(f);
    }
    let ofport = |n: &FlowNet, i: usize| n.h.dp.port(p[i]).unwrap().ofport;
    assert_eq!(
        (1..=4).collect::<Vec<u16>>(),
        (0..4).map(|i| ofport(&n, i)).collect::<Vec<_>>()
    );
    let send = |n: &mut FlowNet, i: usize, f: &[u8]| {
        n.h.send(p[i], f);
        let out = n.h.outputs();
        (0..4)
            .flat_map(|j| {
                out[p[j] as usize]
                    .iter()
                    .map(move |f| (j + 1, f.clone()))
                    .collect::<Vec<_>>()
            })
            .collect::<Vec<_>>()
    };
    // A (untagged on access port 2, VLAN 20) to an unknown B: flooded in VLAN 20, i.e. tagged
    // to trunk port 1 only (port 2 is the ingress).
    let a_to_b = udp(0xa, 0xb, 1000, 53);
    assert_eq!(send(&mut n, 1, &a_to_b), vec![(1, tagged(&a_to_b, 20))]);
    // The learned flow: VLAN 20, dl_dst=A -> reg0=2.
    let learned: Vec<String> = {
        let ft = &n.h.dp.bridge(n.b).unwrap().flows;
        ft.cls
            .iter()
            .filter(|(_, f)| f.table == 10)
            .map(|(_, f)| f.to_string())
            .collect()
    };
    assert_eq!(
        learned,
        vec![
            "table=10, vlan_tci=0x0014/0x0fff,dl_dst=02:00:00:00:00:0a actions=load:0x2->reg0[0..15]"
        ]
    );
    // B answers tagged 20 on the trunk: delivered to A only, untagged.
    let b_to_a = udp(0xb, 0xa, 53, 1000);
    assert_eq!(
        send(&mut n, 0, &tagged(&b_to_a, 20)),
        vec![(2, b_to_a.clone())]
    );
    // And now B is known too: A to B goes to the trunk only, tagged.
    assert_eq!(send(&mut n, 1, &a_to_b), vec![(1, tagged(&a_to_b, 20))]);
    let ft = &n.h.dp.bridge(n.b).unwrap().flows;
    assert_eq!(ft.cls.iter().filter(|(_, f)| f.table == 10).count(), 2);
    // VLAN 30 does not see VLAN 20's hosts: C on port 3 to A floods in VLAN 30 (trunk, port 4).
    let c_to_a = udp(0xc, 0xa, 1000, 53);
    let mut got = send(&mut n, 2, &c_to_a);
    got.sort();
    assert_eq!(got, vec![(1, tagged(&c_to_a, 30)), (4, c_to_a.clone())]);
    // Learning the same host again changes nothing (no new flow, the cache stays valid).
    let generation = n.h.dp.bridge(n.b).unwrap().flows.cls.generation();
    send(&mut n, 1, &a_to_b);
    assert_eq!(
        n.h.dp.bridge(n.b).unwrap().flows.cls.generation(),
        generation
    );
}

fn ping(src: u8, dst: u8) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ethernet2(mac(src), mac(dst))
        .ipv4([10, 0, 0, src], [10, 0, 0, dst], 64)
        .icmpv4_echo_request(7, 1)
        .write(&mut v, b"ping")
        .unwrap();
    v
}

#[test]
fn ct_original_tuple_matches() {
    let mut n = FlowNet::new();
    n.add("table=0,ip,ct_state=-trk,actions=ct(table=1)");
    n.add(
        "table=1,priority=10,ip,ct_nw_proto=17,ct_tp_src=1000,ct_tp_dst=53,\
         ct_state=+new+trk,actions=ct(commit),output:p2",
    );
    n.add(
        "table=1,priority=10,ip,ct_nw_src=10.0.0.1,ct_nw_dst=10.0.0.0/24,\
         ct_state=+est+trk,actions=output:p1",
    );
    n.add(
        "table=1,priority=10,ip,ct_nw_proto=1,ct_tp_src=8,ct_tp_dst=0,ct_state=+new+trk,\
         actions=ct(commit),output:p3",
    );
    n.add("table=1,priority=0,actions=drop");
    assert_eq!(
        n.ports(0, &udp(1, 2, 1000, 53)),
        vec![1],
        "new: the packet's tuple"
    );
    assert_eq!(
        n.ports(0, &udp(1, 2, 1001, 53)),
        Vec::<usize>::new(),
        "other port"
    );
    assert_eq!(
        n.ports(1, &udp(2, 1, 53, 1000)),
        vec![0],
        "reply: the connection's original tuple"
    );
    assert_eq!(n.ports(0, &ping(1, 2)), vec![2], "ICMP: type 8, code 0");
}

fn tcp6_ports(src: &str, dst: &str, sport: u16, dport: u16) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ethernet2(mac(1), mac(2))
        .ipv6(v6(src), v6(dst), 64)
        .tcp(sport, dport, 1, 100)
        .syn()
        .write(&mut v, b"data")
        .unwrap();
    v
}

fn ping6(src: &str, dst: &str, reply: bool) -> Vec<u8> {
    let mut v = Vec::new();
    let b = PacketBuilder::ethernet2(mac(1), mac(2)).ipv6(v6(src), v6(dst), 64);
    if reply {
        b.icmpv6_echo_reply(9, 1).write(&mut v, b"ping").unwrap();
    } else {
        b.icmpv6_echo_request(9, 1).write(&mut v, b"ping").unwrap();
    }
    v
}

#[test]
fn ipv6_stateful_firewall() {
    let mut n = FlowNet::new();
    n.add("table=0,ipv6,ct_state=-trk,actions=ct(table=1,zone=3)");
    n.add(
        "table=1,priority=10,in_port=p1,tcp6,ct_state=+trk+new,\
         actions=ct(commit,zone=3,exec(set_field:0x7->ct_mark)),output:p2",
    );
    n.add("table=1,priority=10,in_port=p1,icmp6,ct_state=+trk+new,ct_nw_proto=58,ct_tp_src=128,actions=ct(commit,zone=3),output:p2");
    n.add("table=1,priority=10,in_port=p2,ipv6,ct_state=+trk+est+rpl,ct_zone=3,actions=output:p1");
    n.add(
        "table=1,priority=20,in_port=p2,tcp6,ct_state=+trk+est+rpl,ct_mark=0x7,actions=output:p3",
    );
    n.add("table=1,priority=10,in_port=p1,ipv6,ct_state=+trk+est-rpl,actions=output:p2");
    n.add("table=1,priority=0,actions=drop");
    // p1 opens a TCP connection; the reply comes back with the connection's mark.
    let syn = tcp6_ports("fc00::1", "fc00::2", 40000, 80);
    assert_eq!(n.ports(0, &syn), vec![1]);
    let back = tcp6_ports("fc00::2", "fc00::1", 80, 40000);
    assert_eq!(n.ports(1, &back), vec![2], "reply, ct_mark=7");
    assert_eq!(n.ports(0, &syn), vec![1], "established");
    // p2 cannot open one.
    let other = tcp6_ports("fc00::2", "fc00::1", 81, 40000);
    assert_eq!(n.ports(1, &other), Vec::<usize>::new());
    // Ping: request from p1 is new (ICMPv6 type 128 as the original tuple), the reply is +rpl.
    assert_eq!(n.ports(0, &ping6("fc00::1", "fc00::2", false)), vec![1]);
    assert_eq!(n.ports(1, &ping6("fc00::2", "fc00::1", true)), vec![0]);
    // Unsolicited reply, and ND (not tracked: +inv): dropped.
    assert_eq!(
        n.ports(1, &ping6("fc00::2", "fc00::9", true)),
        Vec::<usize>::new()
    );
    assert_eq!(n.ports(1, &na("fc00::2", "fc00::1")), Vec::<usize>::new());
    let ct = &n.h.dp.bridge(n.b).unwrap().flows.ct;
    assert_eq!(ct.len(), 2, "{:?}", ct.rows(0));
}

/// An ICMP port unreachable from `src` to `dst` (hosts 10.0.0.N; `to` overrides the
/// destination address) quoting the IP header and first 8 bytes of frame `quoted`.
fn port_unreachable(src: u8, dst: u8, to: Option<[u8; 4]>, quoted: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ethernet2(mac(src), mac(dst))
        .ipv4([10, 0, 0, src], to.unwrap_or([10, 0, 0, dst]), 64)
        .icmpv4(etherparse::Icmpv4Type::DestinationUnreachable(
            etherparse::icmpv4::DestUnreachableHeader::Port,
        ))
        .write(&mut v, &quoted[14..14 + 28])
        .unwrap();
    v
}

/// A stateful firewall's `+rel` flows: an ICMP error about a packet of a tracked connection
/// is `+trk+rel` (`+rpl` when it goes back to the original sender) and carries the
/// connection's mark; one about no connection is `+trk+inv`.
#[test]
fn icmp_errors_about_a_tracked_connection_are_related() {
    let mut n = FlowNet::new();
    n.add("table=0,priority=10,ip,ct_state=-trk,actions=ct(table=1)");
    n.add(
        "table=1,priority=20,in_port=p1,udp,ct_state=+trk+new,\
         actions=ct(commit,exec(set_field:0x7->ct_mark)),output:p2",
    );
    n.add("table=1,priority=20,in_port=p2,ct_state=+trk+est+rpl,actions=output:p1");
    n.add("table=1,priority=20,in_port=p2,ct_state=+trk+rel+rpl,ct_mark=7,actions=output:p1");
    n.add("table=1,priority=20,in_port=p1,ct_state=+trk+rel-rpl,actions=output:p2");
    n.add("table=1,priority=10,ct_state=+trk+inv,actions=output:p3");
    n.add("table=1,priority=0,actions=drop");
    let out = udp(1, 2, 1000, 53);
    assert_eq!(n.ports(0, &out), vec![1], "committed");
    // Host 2 has nothing on port 53: its error comes back related, to the sender.
    assert_eq!(
        n.ports(1, &port_unreachable(2, 1, None, &out)),
        vec![0],
        "+rel+rpl, ct_mark=7"
    );
    // An error about a packet of no connection: +inv.
    assert_eq!(
        n.ports(1, &port_unreachable(2, 1, None, &udp(1, 2, 1001, 54))),
        vec![2]
    );
    // An answer, then an error about it from host 1: related, the original way.
    let back = udp(2, 1, 53, 1000);
    assert_eq!(n.ports(1, &back), vec![0], "+est+rpl");
    assert_eq!(
        n.ports(0, &port_unreachable(1, 2, None, &back)),
        vec![1],
        "+rel-rpl"
    );
    // Without a +rel flow a firewall drops it (the error is not +est or +new).
    n.add("table=1,priority=20,in_port=p2,ct_state=+trk+rel+rpl,ct_mark=7,actions=drop");
    assert!(n.ports(1, &port_unreachable(2, 1, None, &out)).is_empty());
}

/// With `ct(nat)`, a related ICMP error is translated back as its connection was: the outer
/// destination and the quoted packet get the original sender's address and port again.
#[test]
fn related_icmp_errors_are_translated_back_with_nat() {
    let mut n = FlowNet::new();
    n.add("table=0,priority=10,ip,ct_state=-trk,actions=ct(table=1,nat)");
    n.add(
        "table=1,priority=20,in_port=p1,udp,ct_state=+trk+new,\
         actions=ct(commit,nat(src=10.0.0.100:5000-5010)),output:p2",
    );
    n.add("table=1,priority=20,in_port=p2,ct_state=+trk+rel+rpl+snat,actions=output:p1");
    n.add("table=1,priority=10,ct_state=+trk+rel,actions=output:p3");
    n.add("table=1,priority=0,actions=drop");
    let sent = n.send(0, &udp(1, 2, 1000, 53));
    assert_eq!(sent.len(), 1);
    let (port, translated) = &sent[0];
    assert_eq!(*port, 1);
    assert_eq!(&translated[26..30], &[10, 0, 0, 100], "source translated");
    let err = port_unreachable(2, 1, Some([10, 0, 0, 100]), translated);
    let got = n.send(1, &err);
    assert_eq!(got.len(), 1, "{got:?}");
    let (port, f) = &got[0];
    assert_eq!(*port, 0, "+rel+rpl+snat");
    let s = SlicedPacket::from_ethernet(f).unwrap();
    let Some(NetSlice::Ipv4(ip)) = s.net else {
        panic!("ipv4")
    };
    let h = ip.header().to_header();
    assert_eq!(h.destination, [10, 0, 0, 1], "back to the original sender");
    assert_eq!(h.header_checksum, h.calc_header_checksum());
    let icmp = &f[34..];
    assert_eq!(uvs::wire::checksum::checksum(icmp), 0, "ICMP checksum");
    // The quoted packet is the one host 1 sent: its address and port.
    assert_eq!(&icmp[8 + 12..8 + 16], &[10, 0, 0, 1]);
    assert_eq!(&icmp[8 + 20..8 + 22], &1000u16.to_be_bytes());
}

/// `ct` on fragments (no reassembly): the first fragment is tracked by the ports it carries
/// and the later ones share its connection's `ct_state`, so a `+est` flow passes a fragmented
/// answer; a later fragment whose first was not seen is `+inv`; under `ct(nat)` the later
/// fragments get the connection's addresses.
#[test]
fn fragments_share_their_first_fragments_connection() {
    use common::fragments::{fragments, reassemble};
    let big = |src: u8, dst: u8, sport: u16, dport: u16| {
        let payload: Vec<u8> = (0..600u32).map(|i| i as u8).collect();
        let mut v = Vec::new();
        PacketBuilder::ethernet2(mac(src), mac(dst))
            .ipv4([10, 0, 0, src], [10, 0, 0, dst], 64)
            .udp(sport, dport)
            .write(&mut v, &payload)
            .unwrap();
        v
    };
    let mut n = FlowNet::new();
    n.add("table=0,priority=10,ip,ct_state=-trk,actions=ct(table=1)");
    n.add("table=1,priority=20,in_port=p1,ip,ct_state=+trk+new,actions=ct(commit),output:p2");
    n.add("table=1,priority=20,in_port=p1,ip,ct_state=+trk+est,actions=output:p2");
    n.add("table=1,priority=20,in_port=p2,ip,ct_state=+trk+est+rpl,actions=output:p1");
    n.add("table=1,priority=10,ct_state=+trk+inv,actions=output:p3");
    n.add("table=1,priority=0,actions=drop");
    assert_eq!(n.ports(0, &udp(1, 2, 1000, 53)), vec![1], "opened by p1");
    // A fragmented answer: both pieces are +est+rpl.
    let (first, last) = fragments(&big(2, 1, 53, 1000), 256, 0x77);
    assert_eq!(n.ports(1, &first), vec![0]);
    assert_eq!(n.ports(1, &last), vec![0], "the later fragment too");
    // A later fragment of a datagram whose first was never seen: +inv.
    let (_, orphan) = fragments(&big(2, 1, 53, 1000), 256, 0x78);
    assert_eq!(n.ports(1, &orphan), vec![2]);
    // A fragmented datagram p2 opens: neither piece passes (+new from p2 has no flow).
    let (first, last) = fragments(&big(2, 1, 4000, 4001), 256, 0x79);
    assert!(n.ports(1, &first).is_empty());
    assert!(n.ports(1, &last).is_empty());

    // Under ct(nat): every piece of a fragmented datagram leaves translated.
    let mut n = FlowNet::new();
    n.add("table=0,priority=10,ip,ct_state=-trk,actions=ct(table=1,nat)");
    n.add(
        "table=1,priority=20,in_port=p1,ip,ct_state=+trk+new,\
         actions=ct(commit,nat(src=10.0.0.100:5000-5010)),output:p2",
    );
    n.add("table=1,priority=20,in_port=p1,ip,ct_state=+trk+est,actions=output:p2");
    n.add("table=1,priority=0,actions=drop");
    let (first, last) = fragments(&big(1, 2, 1000, 53), 256, 0x80);
    let mut out: Vec<Vec<u8>> = n.send(0, &first).into_iter().map(|(_, f)| f).collect();
    out.extend(n.send(0, &last).into_iter().map(|(_, f)| f));
    assert_eq!(out.len(), 2);
    for f in &out {
        assert_eq!(&f[26..30], &[10, 0, 0, 100], "translated source");
    }
    let whole = reassemble(&out);
    let s = SlicedPacket::from_ethernet(&whole).unwrap();
    let (Some(NetSlice::Ipv4(ip)), Some(etherparse::TransportSlice::Udp(u))) = (s.net, s.transport)
    else {
        panic!("udp")
    };
    let h = ip.header().to_header();
    assert!((5000..=5010).contains(&u.source_port()));
    assert_eq!(
        u.checksum(),
        u.to_header().calc_checksum_ipv4(&h, u.payload()).unwrap(),
        "the datagram's UDP checksum holds after translation"
    );
}

/// IPv6 path MTU discovery through a stateful firewall: an ICMPv6 packet too big about a
/// tracked connection's packet is `+trk+rel+rpl` (with the connection's mark), one about no
/// connection is `+trk+inv`.
#[test]
fn icmpv6_packet_too_big_about_a_tracked_connection_is_related() {
    let ptb = |src: &str, dst: &str, quoted: &[u8]| {
        let mut v = Vec::new();
        PacketBuilder::ethernet2(mac(2), mac(1))
            .ipv6(v6(src), v6(dst), 64)
            .icmpv6(etherparse::Icmpv6Type::PacketTooBig { mtu: 1280 })
            .write(&mut v, &quoted[14..])
            .unwrap();
        v
    };
    let mut n = FlowNet::new();
    n.add("table=0,ipv6,ct_state=-trk,actions=ct(table=1,zone=3)");
    n.add(
        "table=1,priority=10,in_port=p1,tcp6,ct_state=+trk+new,\
         actions=ct(commit,zone=3,exec(set_field:0x7->ct_mark)),output:p2",
    );
    n.add("table=1,priority=10,in_port=p2,ipv6,ct_state=+trk+rel+rpl,ct_mark=7,actions=output:p1");
    n.add("table=1,priority=10,ipv6,ct_state=+trk+inv,actions=output:p3");
    n.add("table=1,priority=0,actions=drop");
    let syn = tcp6_ports("fc00::1", "fc00::2", 40000, 80);
    assert_eq!(n.ports(0, &syn), vec![1]);
    // A router on the way (fc00::fe) says the segment was too big.
    assert_eq!(n.ports(1, &ptb("fc00::fe", "fc00::1", &syn)), vec![0]);
    let stranger = tcp6_ports("fc00::1", "fc00::2", 40001, 80);
    assert_eq!(n.ports(1, &ptb("fc00::fe", "fc00::1", &stranger)), vec![2]);
}
