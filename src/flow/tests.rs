use std::net::Ipv4Addr;

use super::*;
use crate::wire::ethernet::MacAddr;

fn ports(p: &PortRef) -> Option<u16> {
    match p {
        PortRef::Num(n) => Some(*n),
        PortRef::Name(n) => match n.as_str() {
            "p1" => Some(1),
            "p2" => Some(2),
            "p3" => Some(3),
            _ => None,
        },
    }
}

fn flow(s: &str) -> Flow {
    parse_flow(s).unwrap_or_else(|e| panic!("{s}: {e}"))
}

fn err(s: &str) -> String {
    match parse_flow(s) {
        Ok(f) => panic!("{s}: accepted as {f}"),
        Err(e) => e.to_string(),
    }
}

fn ip(s: &str) -> u32 {
    u32::from(s.parse::<Ipv4Addr>().unwrap())
}

#[test]
fn test_parse_issue_examples() {
    let f = flow("priority=100,icmp,nw_src=10.0.0.1,nw_dst=10.0.0.2,actions=drop");
    assert_eq!(f.priority, 100);
    assert_eq!(f.m.dl_type, Some(0x0800));
    assert_eq!(f.m.nw_proto, Some(1));
    assert_eq!(
        f.m.nw_src,
        Some(Masked {
            value: ip("10.0.0.1"),
            mask: u32::MAX
        })
    );
    assert!(f.actions.is_empty());
    assert_eq!(
        f.to_string(),
        "priority=100,icmp,nw_src=10.0.0.1,nw_dst=10.0.0.2 actions=drop"
    );

    let f = flow("priority=50,in_port=p1,dl_vlan=10,actions=strip_vlan,output:p2");
    assert_eq!(f.m.in_port, Some(PortRef::Name("p1".into())));
    assert_eq!(f.m.dl_vlan, Some(10));
    assert_eq!(
        f.actions,
        vec![
            Action::StripVlan,
            Action::Output(PortRef::Name("p2".into()))
        ]
    );
    assert_eq!(
        f.to_string(),
        "priority=50,in_port=p1,dl_vlan=10 actions=strip_vlan,output:p2"
    );

    let f = flow("priority=0,actions=normal");
    assert_eq!(f, Flow::default_normal());
    assert_eq!(f.to_string(), "priority=0 actions=NORMAL");
    assert_eq!(flow("actions=NORMAL").to_string(), "actions=NORMAL");
}

#[test]
fn test_parse_separators_and_masks() {
    let f =
        flow("tcp  in_port=3 tp_dst=0x1000/0xf000 nw_src=10.1.0.0/255.255.0.0 actions=output:2");
    assert_eq!(
        f.m.tp_dst,
        Some(Masked {
            value: 0x1000,
            mask: 0xf000
        })
    );
    assert_eq!(
        f.m.nw_src,
        Some(Masked {
            value: ip("10.1.0.0"),
            mask: 0xffff_0000
        })
    );
    assert_eq!(f.m.in_port, Some(PortRef::Num(3)));
    assert_eq!(
        f.to_string(),
        "tcp,in_port=3,nw_src=10.1.0.0/16,tp_dst=0x1000/0xf000 actions=output:2"
    );
    // value normalised under its mask; /0 is a wildcard; non-CIDR masks kept.
    let f = flow("ip,nw_dst=10.0.0.77/24,nw_src=1.2.3.4/0,actions=drop");
    assert_eq!(
        f.m.nw_dst,
        Some(Masked {
            value: ip("10.0.0.0"),
            mask: 0xffff_ff00
        })
    );
    assert_eq!(f.m.nw_src, None);
    assert_eq!(
        flow("ip,nw_src=10.0.3.4/255.0.255.0 actions=drop").to_string(),
        "ip,nw_src=10.0.3.0/255.0.255.0 actions=drop"
    );
    let f = flow("dl_dst=01:00:00:00:00:00/01:00:00:00:00:00,actions=flood");
    assert_eq!(
        f.m.dl_dst,
        Some(Masked {
            value: 0x0100_0000_0000,
            mask: 0x0100_0000_0000
        })
    );
    assert_eq!(
        f.to_string(),
        "dl_dst=01:00:00:00:00:00/01:00:00:00:00:00 actions=FLOOD"
    );
    let f = flow("tun_id=0x5/0xff,dl_vlan=0xffff,actions=drop");
    assert_eq!(f.to_string(), "tun_id=0x5/0xff,dl_vlan=0xffff actions=drop");
    assert_eq!(
        flow("udp,tp_src=53,tp_dst=1024/0xfc00 actions=drop").to_string(),
        "udp,tp_src=53,tp_dst=0x400/0xfc00 actions=drop"
    );
    // arp: nw_src/nw_dst/nw_proto allowed, printed with arp_op.
    assert_eq!(
        flow("arp,nw_dst=10.0.0.1,nw_proto=1,actions=normal").to_string(),
        "arp,nw_dst=10.0.0.1,arp_op=1 actions=NORMAL"
    );
    assert_eq!(
        flow("icmp,icmp_type=8,icmp_code=0 actions=drop").to_string(),
        "icmp,icmp_type=8,icmp_code=0 actions=drop"
    );
    assert_eq!(
        flow("dl_type=0x86dd actions=drop").to_string(),
        "ipv6 actions=drop"
    );
    assert_eq!(
        flow("ip,nw_proto=47,nw_tos=184 actions=drop").to_string(),
        "ip,nw_proto=47,nw_tos=184 actions=drop"
    );
    // Order does not matter for prerequisites; a shorthand may repeat what a field says.
    assert_eq!(
        flow("tp_dst=80,tcp,dl_type=0x0800,actions=drop")
            .m
            .tp_dst
            .unwrap()
            .value,
        80
    );
}

#[test]
fn test_parse_actions() {
    let f = flow(
        "table=1,actions=mod_vlan_vid:5,mod_vlan_pcp:3,push_vlan:0x8100,mod_dl_src:00:11:22:33:44:55,\
         mod_dl_dst:00:11:22:33:44:66,mod_nw_src:1.2.3.4,mod_nw_dst:5.6.7.8,mod_tp_src:1,mod_tp_dst:2,\
         dec_ttl,set_field:10.0.0.9->ip_dst,set_field:4196->vlan_vid,set_tunnel:42,resubmit(,3),\
         in_port,pop_vlan,ct(commit,zone=5,nat(src=1.1.1.1)),7,goto_table:4",
    );
    assert_eq!(f.actions[0], Action::ModVlanVid(5));
    assert_eq!(f.actions[11], Action::SetField(SetField::VlanVid(100)));
    assert_eq!(f.actions[12], Action::SetTunnel(42));
    assert_eq!(f.actions[13], Action::Resubmit(3));
    assert_eq!(
        f.actions[16],
        Action::Ct(CtAction {
            commit: true,
            zone: 5,
            table: None,
            nat: Some(CtNat::Src {
                addr: Ipv4Addr::new(1, 1, 1, 1),
                last: None,
                ports: None
            }),
            ..CtAction::default()
        })
    );
    assert_eq!(f.actions[17], Action::Output(PortRef::Num(7)));
    assert_eq!(f.actions[18], Action::GotoTable(4));
    assert_eq!(parse_flow(&f.to_string()), Ok(f.clone()));
    assert!(f.to_string().contains("set_field:10.0.0.9->ip_dst,set_field:100->vlan_vid,set_tunnel:0x2a,resubmit(,3),IN_PORT,strip_vlan"));
    assert_eq!(
        flow("actions=meter:2,output:p1").actions[0],
        Action::Meter(2)
    );
    assert_eq!(flow("actions=").actions, vec![]);
    assert_eq!(
        flow("actions=set_field:00:00:00:00:00:01->eth_dst").actions[0],
        Action::SetField(SetField::DlDst(MacAddr([0, 0, 0, 0, 0, 1])))
    );
}

#[test]
fn test_refuse_unknown_field() {
    assert_eq!(err("priority=1,foo=2,actions=drop"), "unknown field 'foo'");
    assert_eq!(err("ipv7,actions=drop"), "unknown field 'ipv7'");
}

#[test]
fn test_refuse_bad_value() {
    assert_eq!(
        err("ip,nw_src=10.0.0.300,actions=drop"),
        "nw_src: bad value '10.0.0.300' (not an IPv4 address)"
    );
    assert_eq!(
        err("priority=70000,actions=drop"),
        "priority: bad value '70000' (out of range (max 65535))"
    );
    assert!(err("dl_vlan=4096,actions=drop").starts_with("dl_vlan: bad value '4096'"));
    assert!(
        err("dl_src=00:11:22:33:44,actions=drop").starts_with("dl_src: bad value '00:11:22:33:44'")
    );
    assert!(err("ip,nw_tos=3,actions=drop").starts_with("nw_tos: bad value '3'"));
    assert!(err("in_port=p/1,actions=drop").starts_with("in_port: bad value 'p/1'"));
    assert!(err("table=255,actions=drop").starts_with("table: bad value '255'"));
}

#[test]
fn test_refuse_bad_mask() {
    assert_eq!(
        err("ip,nw_src=10.0.0.0/33,actions=drop"),
        "nw_src: bad mask '33' (prefix longer than 32)"
    );
    assert!(
        err("ip,nw_dst=10.0.0.0/255.0.x.0,actions=drop")
            .starts_with("nw_dst: bad mask '255.0.x.0'")
    );
    assert!(err("tcp,tp_dst=80/0x1ffff,actions=drop").starts_with("tp_dst: bad mask '0x1ffff'"));
    assert!(err("dl_src=00:00:00:00:00:01/zz,actions=drop").starts_with("dl_src: bad mask 'zz'"));
    assert!(err("cookie=0x5/0xff,actions=drop").starts_with("cookie: bad mask '0xff'"));
}

#[test]
fn test_refuse_prerequisite() {
    assert_eq!(
        err("tp_dst=80,actions=drop"),
        "tp_dst: needs tcp or tcp6 or udp or udp6 (prerequisite)"
    );
    assert_eq!(
        err("icmp,tp_dst=80,actions=drop"),
        "tp_dst: needs tcp or tcp6 or udp or udp6 (prerequisite)"
    );
    assert_eq!(
        err("nw_src=10.0.0.1,actions=drop"),
        "nw_src: needs dl_type=0x0800 (ip) or 0x0806 (arp) (prerequisite)"
    );
    assert_eq!(
        err("arp,nw_tos=4,actions=drop"),
        "nw_tos: needs dl_type=0x0800 (ip) or 0x86dd (ipv6) (prerequisite)"
    );
    assert_eq!(
        err("udp,tcp_dst=1,actions=drop"),
        "tcp_dst: needs tcp or tcp6 (prerequisite)"
    );
    assert_eq!(
        err("tcp,icmp_type=1,actions=drop"),
        "icmp_type: needs icmp or icmp6 (prerequisite)"
    );
    assert_eq!(
        err("ip,arp_op=1,actions=drop"),
        "arp_op: needs dl_type=0x0806 (arp) (prerequisite)"
    );
}

#[test]
fn test_refuse_conflict() {
    assert_eq!(
        err("tcp,udp,actions=drop"),
        "'udp': conflicts with an earlier nw_proto"
    );
    assert_eq!(
        err("ip,dl_type=0x0806,actions=drop"),
        "'dl_type=0x0806': conflicts with an earlier dl_type"
    );
    assert!(err("dl_vlan=0xffff,dl_vlan_pcp=1,actions=drop").contains("dl_vlan_pcp"));
}

#[test]
fn test_refuse_missing_actions() {
    assert_eq!(
        err("priority=1,ip"),
        "missing 'actions=' (add-flow needs one, last, e.g. actions=drop)"
    );
    assert_eq!(
        err(""),
        "missing 'actions=' (add-flow needs one, last, e.g. actions=drop)"
    );
    // "actions=" inside another word is not the action list.
    assert_eq!(err("apply_actions=drop"), "unknown field 'apply_actions'");
}

#[test]
fn test_refuse_unknown_action() {
    assert_eq!(err("actions=explode"), "unknown action 'explode'");
    assert_eq!(
        err("actions=output:1,priority=5"),
        "unknown action 'priority=5'"
    );
}

#[test]
fn test_refuse_bad_action() {
    assert_eq!(
        err("actions=mod_vlan_vid:5000"),
        "mod_vlan_vid:5000: bad value '5000' (out of range (max 4095))"
    );
    assert_eq!(
        err("actions=drop,output:1"),
        "drop: drop must be the only action"
    );
    assert_eq!(
        err("actions=output:1,meter:1"),
        "meter:1: meter must be the first action"
    );
    assert_eq!(
        err("actions=goto_table:2,output:1"),
        "goto_table:2: goto_table must be the last action"
    );
    assert_eq!(
        err("table=3,actions=goto_table:2"),
        "goto_table:2: must go to a later table than 3"
    );
    assert_eq!(
        err("actions=resubmit:3"),
        "resubmit:3: only resubmit(,TABLE) is supported"
    );
    assert_eq!(
        err("actions=ct(commit,zone=1,bogus)"),
        "ct(commit,zone=1,bogus): unknown argument 'bogus'"
    );
    assert_eq!(
        err("actions=output:1,ct(commit"),
        "ct(commit: unbalanced '('"
    );
    assert_eq!(
        err("actions=push_vlan:0x0800"),
        "push_vlan:0x0800: '0x0800' is not a VLAN TPID (0x8100 or 0x88a8)"
    );
    assert_eq!(
        err("actions=set_field:1->ipv6_label"),
        "set_field:1->ipv6_label: unknown or unsupported field 'ipv6_label'"
    );
    assert_eq!(err("actions=output:"), "output:: want output:VALUE");
    assert_eq!(
        err("actions=normal:1"),
        "normal:1: normal takes no argument"
    );
}

#[test]
fn test_filter() {
    let f = parse_filter("table=2 priority=7 tcp tp_dst=22 cookie=0x10/0xf0").unwrap();
    assert_eq!(f.table, Some(2));
    assert_eq!(f.priority, Some(7));
    assert_eq!(
        f.cookie,
        Some(Masked {
            value: 0x10,
            mask: 0xf0
        })
    );
    assert_eq!(parse_filter("").unwrap(), FlowFilter::default());
    assert_eq!(
        parse_filter("ip actions=drop").unwrap_err().to_string(),
        "actions: not allowed in a match (del-flows, dump-flows)"
    );
    assert_eq!(
        parse_filter("idle_timeout=5").unwrap_err().to_string(),
        "idle_timeout: not allowed in a match (del-flows, dump-flows)"
    );
}

#[test]
fn test_dump_line_round_trip() {
    let f = flow(
        "cookie=0x2a,table=3,idle_timeout=10,hard_timeout=20,priority=100,icmp,nw_src=10.0.0.1 actions=drop",
    );
    assert_eq!(
        f.to_string(),
        "cookie=0x2a, table=3, idle_timeout=10, hard_timeout=20, priority=100,icmp,nw_src=10.0.0.1 actions=drop"
    );
    let st = FlowStats {
        n_packets: 3,
        n_bytes: 294,
        created_ms: 1000,
        used_ms: 1500,
    };
    let line = f.dump_line(&st, 2234);
    assert_eq!(
        line,
        "cookie=0x2a, duration=1.234s, table=3, n_packets=3, n_bytes=294, idle_timeout=10, hard_timeout=20, idle_age=0, priority=100,icmp,nw_src=10.0.0.1 actions=drop"
    );
    assert_eq!(parse_flow(&line), Ok(f.clone()));
    let d = Flow::default_normal();
    let line = d.dump_line(&FlowStats::default(), 0);
    assert_eq!(
        line,
        "cookie=0x0, duration=0.000s, table=0, n_packets=0, n_bytes=0, idle_age=0, priority=0 actions=NORMAL"
    );
    assert_eq!(parse_flow(&line), Ok(d));
}

fn key(in_port: u16, src: &str, dst: &str, proto: u8, tp_dst: u16) -> PacketKey {
    PacketKey {
        in_port,
        dl_type: 0x0800,
        nw_src: ip(src),
        nw_dst: ip(dst),
        nw_proto: proto,
        tp_dst,
        ..PacketKey::default()
    }
}

#[test]
fn test_classifier_priority_and_tiebreak() {
    let mut c = Classifier::new();
    let dflt = c.add(Flow::default_normal(), 0, ports).unwrap().id;
    let drop = c
        .add(
            flow("priority=100,icmp,nw_src=10.0.0.1,nw_dst=10.0.0.2,actions=drop"),
            0,
            ports,
        )
        .unwrap()
        .id;
    let k = key(1, "10.0.0.1", "10.0.0.2", 1, 0);
    assert_eq!(c.lookup(0, &k), Some(drop));
    assert_eq!(
        c.lookup(0, &key(1, "10.0.0.1", "10.0.0.2", 6, 80)),
        Some(dflt)
    );
    assert_eq!(c.lookup(1, &k), None);
    // Equal priority, overlapping, different masks: the newest wins.
    let a = c
        .add(
            flow("priority=100,ip,nw_src=10.0.0.0/8,actions=output:p1"),
            0,
            ports,
        )
        .unwrap()
        .id;
    assert_eq!(c.lookup(0, &k), Some(a));
    let b = c
        .add(flow("priority=100,in_port=p1,actions=output:p2"), 0, ports)
        .unwrap()
        .id;
    assert_eq!(c.lookup(0, &k), Some(b));
    // Re-adding an older one (same match+priority) replaces it and makes it the newest.
    let r = c
        .add(
            flow("priority=100,ip,nw_src=10.0.0.0/8,actions=output:p3"),
            0,
            ports,
        )
        .unwrap();
    assert_eq!(
        r,
        Added {
            id: a,
            replaced: true
        }
    );
    assert_eq!(c.lookup(0, &k), Some(a));
    assert_eq!(
        c.get(a).unwrap().actions,
        vec![Action::Output(PortRef::Name("p3".into()))]
    );
    assert_eq!(c.len(), 4);
    assert_eq!(c.masks(0), 4);
    let higher = c
        .add(flow("priority=101,actions=drop"), 0, ports)
        .unwrap()
        .id;
    assert_eq!(c.lookup(0, &k), Some(higher));
}

#[test]
fn test_classifier_vlan_and_tos() {
    let mut c = Classifier::new();
    let untagged = c
        .add(flow("dl_vlan=0xffff,actions=drop"), 0, ports)
        .unwrap()
        .id;
    let v10 = c.add(flow("dl_vlan=10,actions=drop"), 0, ports).unwrap().id;
    let pcp = c
        .add(flow("priority=40000,dl_vlan_pcp=5,actions=drop"), 0, ports)
        .unwrap()
        .id;
    let tos = c
        .add(flow("priority=50000,ip,nw_tos=8,actions=drop"), 0, ports)
        .unwrap()
        .id;
    let mut k = PacketKey::default();
    assert_eq!(c.lookup(0, &k), Some(untagged));
    k.vlan = 10;
    assert_eq!(c.lookup(0, &k), Some(v10));
    k.vlan_pcp = 5;
    assert_eq!(c.lookup(0, &k), Some(pcp));
    k.vlan = 0;
    assert_eq!(c.lookup(0, &k), Some(pcp));
    k.vlan_pcp = 0;
    assert_eq!(c.lookup(0, &k), None);
    k.dl_type = 0x0800;
    k.nw_tos = 8 | 3; // ECN bits ignored
    assert_eq!(c.lookup(0, &k), Some(tos));
}

#[test]
fn test_ecn_and_shifted_dscp() {
    // ip_dscp is the DSCP as 0-63, held and shown as nw_tos; nw_ecn (ip_ecn) the ECN bits.
    assert_eq!(
        flow("ip,ip_dscp=46,actions=drop").to_string(),
        "ip,nw_tos=184 actions=drop"
    );
    assert_eq!(
        flow("ipv6,ip_ecn=3,nw_tos=8,actions=drop").to_string(),
        "ipv6,nw_tos=8,nw_ecn=3 actions=drop"
    );
    assert_eq!(
        flow("ip,nw_ecn=3,actions=drop"),
        flow(&flow("ip,nw_ecn=3,actions=drop").to_string())
    );
    assert!(err("ip,nw_ecn=4,actions=drop").starts_with("nw_ecn: bad value '4'"));
    assert!(err("ip,ip_dscp=64,actions=drop").starts_with("ip_dscp: bad value '64'"));
    assert!(err("arp,nw_ecn=1,actions=drop").contains("prerequisite"));
    assert!(err("ip,nw_ecn=1,ip_ecn=2,actions=drop").contains("nw_ecn"));

    let ports = &|_: &PortRef| Some(1u16);
    let mut c = Classifier::new();
    let ce = c
        .add(flow("priority=200,ip,nw_ecn=3,actions=drop"), 0, ports)
        .unwrap()
        .id;
    let ef_ce = c
        .add(
            flow("priority=300,ip,ip_dscp=46,nw_ecn=3,actions=drop"),
            0,
            ports,
        )
        .unwrap()
        .id;
    let any = c
        .add(flow("priority=100,ip,actions=drop"), 0, ports)
        .unwrap()
        .id;
    let mut k = PacketKey {
        dl_type: 0x0800,
        ..PacketKey::default()
    };
    for (tos, want) in [
        (0x00, any),
        (0x02, any),   // ECT(0)
        (0x03, ce),    // CE
        (0xb8, any),   // EF, not ECN-capable
        (0xbb, ef_ce), // EF and CE
        (0xba, any),   // EF and ECT(0)
    ] {
        k.nw_tos = tos;
        assert_eq!(c.lookup(0, &k), Some(want), "tos {tos:#x}");
        let f = c.get(want).expect("rule");
        assert!(f.m.matches(&k, ports), "field-by-field match, tos {tos:#x}");
    }
}

#[test]
fn test_classifier_unknown_port() {
    let mut c = Classifier::new();
    let e = c
        .add(flow("in_port=p9,actions=drop"), 0, ports)
        .unwrap_err();
    assert_eq!(e.to_string(), "in_port: unknown port 'p9'");
    let e = c.add(flow("actions=output:p8"), 0, ports).unwrap_err();
    assert_eq!(e.to_string(), "output:p8: unknown port 'p8'");
    assert!(c.is_empty());
}

#[test]
fn test_classifier_del() {
    let mut c = Classifier::new();
    let a = c
        .add(
            flow("priority=10,tcp,nw_src=10.0.0.1,tp_dst=22,actions=drop"),
            0,
            ports,
        )
        .unwrap()
        .id;
    let b = c
        .add(
            flow("priority=20,tcp,nw_src=10.0.0.0/24,actions=drop"),
            0,
            ports,
        )
        .unwrap()
        .id;
    let d = c
        .add(flow("priority=30,ip,actions=drop"), 0, ports)
        .unwrap()
        .id;
    let t1 = c
        .add(
            flow("table=1,priority=10,tcp,nw_src=10.0.0.1,tp_dst=22,actions=drop"),
            0,
            ports,
        )
        .unwrap()
        .id;
    // Strict: exact match and priority only.
    let f = parse_filter("priority=11,tcp,nw_src=10.0.0.1,tp_dst=22").unwrap();
    assert_eq!(c.del(&f, true, ports).unwrap(), vec![]);
    let f = parse_filter("table=0,priority=10,tcp,nw_src=10.0.0.1,tp_dst=22").unwrap();
    assert_eq!(c.del(&f, true, ports).unwrap(), vec![a]);
    assert_eq!(c.len(), 3);
    // Non-strict: every flow at least as specific, any priority, every table.
    let a = c
        .add(
            flow("priority=10,tcp,nw_src=10.0.0.1,tp_dst=22,actions=drop"),
            0,
            ports,
        )
        .unwrap()
        .id;
    let f = parse_filter("tcp,nw_src=10.0.0.0/24").unwrap();
    let mut got = c.del(&f, false, ports).unwrap();
    got.sort();
    let mut want = vec![a, b, t1];
    want.sort();
    assert_eq!(got, want);
    assert_eq!(c.iter().map(|(id, _)| id).collect::<Vec<_>>(), vec![d]);
    assert_eq!(
        c.del(&FlowFilter::default(), false, ports).unwrap(),
        vec![d]
    );
    assert!(c.is_empty());
    assert_eq!(c.lookup(0, &key(1, "10.0.0.1", "1.1.1.1", 6, 22)), None);
}

/// `out_port=P` in del-flows / dump-flows (ovs-ofctl's): only flows with an output to port P
/// (a number, or a name the bridge resolves; also inside `clone(...)`), strict or not. (It was
/// `unknown field 'out_port'`.)
#[test]
fn out_port_filters_select_flows_that_output_there() {
    let mut c = Classifier::new();
    let mut add = |s: &str| c.add(flow(s), 0, ports).unwrap().id;
    let a = add("priority=1,ip,actions=output:2");
    let b = add("priority=2,arp,actions=output:1,output:2");
    let cl = add("priority=3,tcp,actions=clone(output:3)");
    let n = add("priority=4,actions=NORMAL");
    let ids = |f: &str, c: &Classifier| -> Vec<FlowId> {
        let mut v: Vec<FlowId> = c
            .dump(Some(&parse_filter(f).unwrap()), ports)
            .unwrap()
            .iter()
            .map(|(id, _, _)| *id)
            .collect();
        v.sort();
        v
    };
    assert_eq!(
        parse_filter("out_port=p2").unwrap().out_port,
        Some(PortRef::Name("p2".into()))
    );
    assert_eq!(ids("out_port=2", &c), vec![a, b]);
    assert_eq!(ids("out_port=p2,arp", &c), vec![b]);
    assert_eq!(ids("out_port=p3", &c), vec![cl]);
    assert_eq!(ids("out_port=4", &c), vec![]);
    assert_eq!(ids("", &c), vec![a, b, cl, n]);
    let e = c.dump(Some(&parse_filter("out_port=p9").unwrap()), ports);
    assert_eq!(e.unwrap_err().to_string(), "out_port: unknown port 'p9'");
    assert!(
        parse_filter("out_port=x/y")
            .unwrap_err()
            .to_string()
            .starts_with("out_port: "),
        "bad port"
    );
    // A flow has no out_port: add-flow refuses it, naming it.
    assert!(err("out_port=2,actions=drop").starts_with("out_port: "));
    // Strict: priority and match, then the output.
    let strict = |f: &str, c: &mut Classifier| c.del(&parse_filter(f).unwrap(), true, ports);
    assert_eq!(strict("priority=1,ip,out_port=1", &mut c).unwrap(), vec![]);
    assert_eq!(strict("priority=1,ip,out_port=2", &mut c).unwrap(), vec![a]);
    let f = parse_filter("out_port=1").unwrap();
    assert_eq!(c.del(&f, false, ports).unwrap(), vec![b]);
    assert_eq!(ids("", &c), vec![cl, n]);
}

#[test]
fn test_classifier_timeouts_and_counters() {
    let mut c = Classifier::new();
    let idle = c
        .add(
            flow("idle_timeout=10,priority=5,ip,actions=drop"),
            1_000,
            ports,
        )
        .unwrap()
        .id;
    let hard = c
        .add(
            flow("hard_timeout=30,priority=6,arp,actions=drop"),
            1_000,
            ports,
        )
        .unwrap()
        .id;
    c.credit(idle, 2, 200, 9_000);
    c.credit(idle, 1, 60, 10_000);
    let st = c.stats(idle).unwrap();
    assert_eq!(
        (st.n_packets, st.n_bytes, st.created_ms, st.used_ms),
        (3, 260, 1_000, 10_000)
    );
    assert_eq!(c.expire(19_999), vec![]);
    assert_eq!(c.expire(20_000), vec![idle]);
    assert!(c.get(idle).is_none());
    c.credit(hard, 1, 1, 30_000);
    assert_eq!(c.expire(30_999), vec![]);
    assert_eq!(c.expire(31_000), vec![hard]);
    assert!(c.is_empty());
    let d = c.add(Flow::default_normal(), 0, ports).unwrap().id;
    assert_eq!(c.expire(u64::MAX), vec![]);
    let dump = c.dump(None, ports).unwrap();
    assert_eq!(dump.len(), 1);
    assert_eq!(dump[0].0, d);
}

#[test]
fn test_snapshot_shares_counters() {
    let mut c = Classifier::new();
    let id = c.add(Flow::default_normal(), 0, ports).unwrap().id;
    let snap = c.clone();
    snap.credit(id, 5, 500, 7);
    assert_eq!(c.stats(id).unwrap().n_packets, 5);
}

/// The EMC's slot hash spreads the keys one host pair's connections make (source ports in a
/// row, a run of addresses or of MACs): 1,024 such keys in 4,096 direct-mapped slots, then
/// each looked up again, hit at least 740 times (a uniform random hash: ~800, as later keys
/// evict earlier ones; the subtables' hash measured 792-806, this one 812-1,024).
#[test]
fn test_emc_spreads_similar_keys() {
    let mut c = Classifier::new();
    c.add(Flow::default_normal(), 0, ports).unwrap();
    for vary in 0..3 {
        let mut emc = Emc::new(4096);
        let keys: Vec<PacketKey> = (0..1024u32)
            .map(|i| {
                let mut k = key(1, "10.0.0.1", "10.0.0.2", 6, 80);
                match vary {
                    0 => k.tp_src = 32768 + i as u16,
                    1 => k.nw_src += i,
                    _ => k.dl_src = 0x0200_0000_0000 + u64::from(i),
                }
                k
            })
            .collect();
        for k in &keys {
            emc.lookup(&c, 0, k);
        }
        let before = emc.hits;
        for k in &keys {
            emc.lookup(&c, 0, k);
        }
        let hits = emc.hits - before;
        assert!(hits >= 740, "case {vary}: {hits} of 1024 hit");
    }
}

#[test]
fn test_emc_hit_miss_invalidate() {
    let mut c = Classifier::new();
    let dflt = c.add(Flow::default_normal(), 0, ports).unwrap().id;
    let mut emc = Emc::new(1024);
    let k = key(1, "10.0.0.1", "10.0.0.2", 1, 0);
    assert_eq!(emc.lookup(&c, 0, &k), Some(dflt));
    assert_eq!((emc.hits, emc.misses), (0, 1));
    assert_eq!(emc.lookup(&c, 0, &k), Some(dflt));
    assert_eq!((emc.hits, emc.misses), (1, 1));
    // A different table is a different entry; "no flow" is cached too.
    assert_eq!(emc.lookup(&c, 1, &k), None);
    assert_eq!(emc.lookup(&c, 1, &k), None);
    assert_eq!((emc.hits, emc.misses), (2, 2));
    // Any change to the flows invalidates.
    let drop = c
        .add(flow("priority=100,icmp,actions=drop"), 0, ports)
        .unwrap()
        .id;
    assert_eq!(emc.lookup(&c, 0, &k), Some(drop));
    assert_eq!((emc.hits, emc.misses), (2, 3));
    c.remove(drop);
    assert_eq!(emc.lookup(&c, 0, &k), Some(dflt));
    assert_eq!(emc.misses, 4);
    emc.clear();
    assert_eq!(emc.lookup(&c, 0, &k), Some(dflt));
    assert_eq!(emc.misses, 5);
    assert_eq!(Emc::new(0).capacity(), 1);
}

#[test]
fn test_to_packet_key_and_matches() {
    let f = flow("in_port=p2,tcp,dl_vlan=7,dl_vlan_pcp=3,nw_src=10.0.0.1,tp_dst=80,actions=drop");
    let k = f.m.to_packet_key(&ports).unwrap();
    assert_eq!(
        (k.in_port, k.vlan, k.vlan_pcp, k.nw_proto, k.tp_dst),
        (2, 7, 3, 6, 80)
    );
    assert!(f.m.matches(&k, &ports));
    let mut c = Classifier::new();
    let id = c.add(f, 0, ports).unwrap().id;
    assert_eq!(c.lookup(0, &k), Some(id));
}

// ---- conntrack: ct_state, ct_zone, ct(...) ---------------------------------------------------

fn ct_state_of(s: &str) -> Option<Masked<u8>> {
    flow(&format!("ct_state={s},actions=drop")).m.ct_state
}

#[test]
fn test_parse_ct_state() {
    use ct_state::*;
    let ms = |value, mask| Some(Masked { value, mask });
    assert_eq!(ct_state_of("+trk+new"), ms(TRK | NEW, TRK | NEW));
    assert_eq!(ct_state_of("-trk"), ms(0, TRK));
    assert_eq!(ct_state_of("+trk-new+est"), ms(TRK | EST, TRK | NEW | EST));
    assert_eq!(ct_state_of("0x21/0x21"), ms(0x21, 0x21));
    assert_eq!(ct_state_of("0x21"), ms(0x21, 0xff));
    assert_eq!(ct_state_of("0x23/0x21"), ms(0x21, 0x21));
    assert_eq!(ct_state_of("0x21/0"), None);
    assert_eq!(
        ct_state_of("+new+est+rel+rpl+inv+trk+snat+dnat"),
        ms(0xff, 0xff)
    );
    assert_eq!(ct_state_of("-dnat+snat"), ms(SNAT, SNAT | DNAT));
    // Display: flags in bit order, each with its sign; parses back.
    for (text, shown) in [
        ("ct_state=+trk+new", "ct_state=+new+trk"),
        ("ct_state=-trk", "ct_state=-trk"),
        ("ct_state=+trk-rel+est", "ct_state=+est-rel+trk"),
        ("ct_state=0x21/0x21", "ct_state=+new+trk"),
        ("ct_state=0x22/0x23", "ct_state=-new+est+trk"),
        (
            "ct_state=0x21",
            "ct_state=+new-est-rel-rpl-inv+trk-snat-dnat",
        ),
    ] {
        let f = flow(&format!("priority=10,{text},ip,actions=drop"));
        assert_eq!(
            f.to_string(),
            format!("priority=10,{shown},ip actions=drop"),
            "{text}"
        );
        assert_eq!(parse_flow(&f.to_string()), Ok(f));
    }
    // ct_zone, with no prerequisites; shown before the protocol shorthand, as OVS.
    let f = flow("tcp,ct_zone=7,ct_state=+est+trk,actions=drop");
    assert_eq!(f.m.ct_zone, Some(7));
    assert_eq!(
        f.to_string(),
        "ct_state=+est+trk,ct_zone=7,tcp actions=drop"
    );
    assert_eq!(flow("ct_zone=0x10,actions=drop").m.ct_zone, Some(16));
    assert_eq!(flow("ct_zone=65535,actions=drop").m.ct_zone, Some(65535));
    assert_eq!(
        parse_filter("ct_state=-trk").unwrap().m.ct_state,
        ms(0, TRK)
    );
}

#[test]
fn test_refuse_ct_state_and_zone() {
    assert_eq!(
        err("ct_state=+foo,actions=drop"),
        "ct_state: bad value '+foo' (unknown flag 'foo' (want new, est, rel, rpl, inv, trk, snat, dnat))"
    );
    assert!(err("ct_state=+trk-bar,actions=drop").contains("unknown flag 'bar'"));
    assert!(err("ct_state=+trk+,actions=drop").contains("unknown flag ''"));
    assert!(err("ct_state=trk,actions=drop").starts_with("ct_state: bad value 'trk'"));
    assert!(err("ct_state=,actions=drop").starts_with("ct_state: bad value ''"));
    assert!(err("ct_state=+trk-trk,actions=drop").contains("flag 'trk' both set and cleared"));
    assert!(err("ct_state=0x100,actions=drop").starts_with("ct_state: bad value '0x100'"));
    assert_eq!(
        err("ct_state=0x1/0x100,actions=drop"),
        "ct_state: bad mask '0x100' (not a number up to 0xff)"
    );
    assert_eq!(
        err("ct_state=+trk,ct_state=-trk,actions=drop"),
        "'ct_state=-trk': conflicts with an earlier ct_state"
    );
    assert_eq!(
        err("ct_zone=65536,actions=drop"),
        "ct_zone: bad value '65536' (out of range (max 65535))"
    );
    assert_eq!(
        err("ct_zone=1/1,actions=drop"),
        "ct_zone: bad value '1/1' (not a number)"
    );
}

#[test]
fn test_tun_id_32_bits() {
    let f = flow("tun_id=0xffffffff,actions=drop");
    assert_eq!(
        f.m.tun_id,
        Some(Masked {
            value: 0xffff_ffff,
            mask: 0xffff_ffff
        })
    );
    assert_eq!(f.to_string(), "tun_id=0xffffffff actions=drop");
    // OVS's 64-bit exact mask is our 32-bit one.
    assert_eq!(
        flow("tun_id=5/0xffffffffffffffff,actions=drop").m.tun_id,
        flow("tun_id=5,actions=drop").m.tun_id
    );
    assert_eq!(
        flow("tun_id=5/-1,actions=drop").to_string(),
        "tun_id=0x5 actions=drop"
    );
    assert_eq!(
        err("tun_id=0x100000000,actions=drop"),
        "tun_id: bad value '0x100000000' (at most 32 bits in this datapath)"
    );
    assert_eq!(
        err("tunnel_id=0x5/0xff00000000,actions=drop"),
        "tunnel_id: bad mask '0xff00000000' (at most 32 bits in this datapath)"
    );
    // A hand-built match with a wider tun_id is refused when compiled.
    let m = Match {
        tun_id: Some(Masked {
            value: 1 << 40,
            mask: 1 << 40,
        }),
        ..Match::default()
    };
    let e = m.compile(&ports).unwrap_err().to_string();
    assert!(e.contains("at most 32 bits in this datapath"), "{e}");
}

#[test]
fn test_ct_match_packing() {
    let f = flow("tun_id=0x1234/0xffff,ct_zone=9,ct_state=+trk-inv+est,actions=drop");
    let k = f.m.to_packet_key(&ports).unwrap();
    assert_eq!(
        (k.tun_id, k.ct_zone, k.ct_state),
        (0x1234, 9, ct_state::TRK | ct_state::EST)
    );
    assert!(f.m.matches(&k, &ports));
    let mut c = Classifier::new();
    let id = c.add(f.clone(), 0, ports).unwrap().id;
    assert_eq!(c.lookup(0, &k), Some(id));
    let other_bits = PacketKey {
        tun_id: 0xabcd_1234,
        ct_state: k.ct_state | ct_state::RPL | ct_state::SNAT,
        ..k
    };
    assert!(f.m.matches(&other_bits, &ports));
    assert_eq!(c.lookup(0, &other_bits), Some(id));
    for bad in [
        PacketKey { ct_zone: 8, ..k },
        PacketKey {
            ct_state: k.ct_state | ct_state::INV,
            ..k
        },
        PacketKey {
            ct_state: ct_state::EST,
            ..k
        },
        PacketKey {
            tun_id: 0x1235,
            ..k
        },
    ] {
        assert!(!f.m.matches(&bad, &ports), "{bad:?}");
        assert_eq!(c.lookup(0, &bad), None, "{bad:?}");
    }
    // An untracked packet (ct_state 0) matches -trk, not +trk.
    let untracked = flow("priority=5,ct_state=-trk,actions=drop");
    let id2 = c.add(untracked, 0, ports).unwrap().id;
    assert_eq!(c.lookup(0, &PacketKey::default()), Some(id2));
    assert_eq!(
        c.lookup(
            0,
            &PacketKey {
                ct_state: ct_state::TRK,
                ..PacketKey::default()
            }
        ),
        None
    );
}

fn ct_action(s: &str) -> CtAction {
    match flow(&format!("actions={s}")).actions.as_slice() {
        [Action::Ct(c)] => c.clone(),
        a => panic!("{s}: {a:?}"),
    }
}

#[test]
fn test_parse_ct_action() {
    let ct = |commit, zone, table, nat| CtAction {
        commit,
        zone,
        table,
        nat,
        ..CtAction::default()
    };
    let a = |s: &str| s.parse::<Ipv4Addr>().unwrap();
    for (text, want, shown) in [
        (
            "ct(commit,zone=5,table=2,nat(src=10.0.0.1:1024-2048))",
            ct(
                true,
                5,
                Some(2),
                Some(CtNat::Src {
                    addr: a("10.0.0.1"),
                    last: None,
                    ports: Some((1024, 2048)),
                }),
            ),
            "ct(commit,table=2,zone=5,nat(src=10.0.0.1:1024-2048))",
        ),
        ("ct(table=1)", ct(false, 0, Some(1), None), "ct(table=1)"),
        ("ct(commit)", ct(true, 0, None, None), "ct(commit)"),
        (
            "ct(nat)",
            ct(false, 0, None, Some(CtNat::Existing)),
            "ct(nat)",
        ),
        (
            "ct(commit,nat(dst=10.0.0.2:80))",
            ct(
                true,
                0,
                None,
                Some(CtNat::Dst {
                    addr: a("10.0.0.2"),
                    last: None,
                    port: Some(80),
                }),
            ),
            "ct(commit,nat(dst=10.0.0.2:80))",
        ),
        (
            "ct(nat(dst=10.0.0.2))",
            ct(
                false,
                0,
                None,
                Some(CtNat::Dst {
                    addr: a("10.0.0.2"),
                    last: None,
                    port: None,
                }),
            ),
            "ct(nat(dst=10.0.0.2))",
        ),
        (
            "ct(nat(src=10.0.0.1:99),commit)",
            ct(
                true,
                0,
                None,
                Some(CtNat::Src {
                    addr: a("10.0.0.1"),
                    last: None,
                    ports: Some((99, 99)),
                }),
            ),
            "ct(commit,nat(src=10.0.0.1:99))",
        ),
        (
            "CT(table=0x10,zone=0,commit)",
            ct(true, 0, Some(16), None),
            "ct(commit,table=16)",
        ),
        (
            "ct(zone=65535)",
            ct(false, 65535, None, None),
            "ct(zone=65535)",
        ),
        ("ct", ct(false, 0, None, None), "ct()"),
        ("ct()", ct(false, 0, None, None), "ct()"),
    ] {
        let got = ct_action(text);
        assert_eq!(got, want, "{text}");
        assert_eq!(Action::Ct(got.clone()).to_string(), shown, "{text}");
        assert_eq!(ct_action(shown), got, "{shown}");
    }
    // table may point anywhere, also back (a recirculation, not a goto_table).
    let f = flow("table=5,actions=ct(table=0),ct(commit,table=254)");
    assert_eq!(f.actions.len(), 2);
    assert_eq!(parse_flow(&f.to_string()), Ok(f));
}

#[test]
fn test_refuse_ct_action() {
    for (text, want) in [
        ("ct(commit,force)", "ct: 'force' is not supported"),
        ("ct(force)", "ct: 'force' is not supported"),
        (
            "ct(commit,exec(output:1))",
            "ct(commit,exec(output:1)): 'output' in exec(...) is not supported (only set_field and load)",
        ),
        ("ct(commit,alg=ftp)", "ct: 'alg' is not supported"),
        (
            "ct(commit,nat(src=10.0.0.9-10.0.0.1))",
            "ct(commit,nat(src=10.0.0.9-10.0.0.1)): nat address range '10.0.0.9-10.0.0.1' is empty",
        ),
        (
            "ct(commit,nat(src))",
            "ct: 'nat(src)' without an address is not supported",
        ),
        (
            "ct(commit,nat(dst))",
            "ct: 'nat(dst)' without an address is not supported",
        ),
        (
            "ct(commit,nat(src=10.0.0.1,random))",
            "ct: 'random' is not supported",
        ),
        (
            "ct(commit,nat(dst=10.0.0.1:80-90))",
            "ct: port ranges in nat(dst=...) are not supported ('80-90')",
        ),
        (
            "ct(commit,zone=1,bogus)",
            "ct(commit,zone=1,bogus): unknown argument 'bogus'",
        ),
        (
            "ct(zone=65536)",
            "ct(zone=65536): zone: bad value '65536' (out of range (max 65535))",
        ),
        (
            "ct(table=255)",
            "ct(table=255): table: bad value '255' (out of range (max 254))",
        ),
        ("ct(zone=1,zone=1)", "ct(zone=1,zone=1): 'zone' given twice"),
        (
            "ct(table=1,table=2)",
            "ct(table=1,table=2): 'table' given twice",
        ),
        (
            "ct(nat,nat(dst=1.2.3.4))",
            "ct(nat,nat(dst=1.2.3.4)): 'nat' given twice",
        ),
        (
            "ct(commit,commit)",
            "ct(commit,commit): 'commit' given twice",
        ),
        (
            "ct(nat(src=1.2.3.4:2048-1024))",
            "ct(nat(src=1.2.3.4:2048-1024)): nat port range '2048-1024' is empty",
        ),
        (
            "ct(nat(src=1.2.3.4:0))",
            "ct(nat(src=1.2.3.4:0)): nat port '0' is 0",
        ),
        (
            "ct(nat(src=1.2.3.4:x))",
            "ct(nat(src=1.2.3.4:x)): nat port: bad value 'x' (not a number)",
        ),
        (
            "ct(nat(src=fe80::1))",
            "ct(nat(src=fe80::1)): NAT of IPv6 is not supported",
        ),
        (
            "ct(nat(src=1.2.3.4,dst=5.6.7.8))",
            "ct(nat(src=1.2.3.4,dst=5.6.7.8)): nat(...) takes one of src=... or dst=...",
        ),
        (
            "ct(nat())",
            "ct(nat()): want nat, nat(src=ADDR[:PORT[-PORT]]) or nat(dst=ADDR[:PORT])",
        ),
        ("ct:1", "ct:1: want ct(ARGS)"),
        ("ct(commit", "ct(commit: unbalanced '('"),
    ] {
        assert_eq!(err(&format!("actions={text}")), want, "{text}");
    }
}

#[test]
fn test_tcp_flags_match() {
    // The three spellings, written back as OVS writes them.
    assert_eq!(
        flow("tcp,tcp_flags=+syn-ack,actions=drop").to_string(),
        "tcp,tcp_flags=+syn-ack actions=drop"
    );
    assert_eq!(
        flow("tcp,tcp_flags=-ack+syn,actions=drop"),
        flow("tcp,tcp_flags=0x002/0x012,actions=drop")
    );
    assert_eq!(
        flow("tcp6,tcp_flags=syn|ack,actions=drop").to_string(),
        "tcp6,tcp_flags=syn|ack actions=drop"
    );
    assert_eq!(
        flow("tcp,tcp_flags=0,actions=drop").to_string(),
        "tcp,tcp_flags=0 actions=drop"
    );
    assert_eq!(
        flow("tcp,tcp_flags=+ns+[800],actions=drop").to_string(),
        "tcp,tcp_flags=+ns+[800] actions=drop"
    );
    for f in [
        "tcp,tcp_flags=+rst",
        "tcp,tcp_flags=fin|psh|urg",
        "tcp,tcp_flags=0x10/0x10",
    ] {
        let a = flow(&format!("{f},actions=drop"));
        assert_eq!(a, flow(&a.to_string()), "{f} parses back");
    }
    assert!(err("tcp,tcp_flags=+syx,actions=drop").contains("unknown TCP flag"));
    assert!(err("tcp,tcp_flags=+syn+syn,actions=drop").contains("twice"));
    assert!(err("tcp,tcp_flags=0x1000,actions=drop").contains("12 bits"));
    assert!(err("udp,tcp_flags=+syn,actions=drop").contains("prerequisite"));
    assert!(err("ip,tcp_flags=+syn,actions=drop").contains("prerequisite"));

    let ports = &|_: &PortRef| Some(1u16);
    let mut c = Classifier::new();
    assert!(c.cacheable_type(0x0800));
    let syn = c
        .add(
            flow("priority=200,tcp,tcp_flags=+syn-ack,actions=drop"),
            0,
            ports,
        )
        .unwrap()
        .id;
    let any = c
        .add(flow("priority=100,tcp,actions=drop"), 0, ports)
        .unwrap()
        .id;
    // TCP frames' flags are read and their packed key alone no longer decides.
    assert!(c.reads_ip_fields());
    assert!(!c.cacheable_type(0x0800) && !c.cacheable_type(0x86dd));
    assert!(c.cacheable_type(0x0806));
    let k = PacketKey {
        dl_type: 0x0800,
        nw_proto: 6,
        ..PacketKey::default()
    };
    for (flags, want) in [
        (0x002, syn),
        (0x012, any),
        (0x010, any),
        (0x102, syn),
        (0, any),
    ] {
        let x = ExtKey {
            tcp_flags: flags,
            ..ExtKey::ZERO
        };
        assert_eq!(c.lookup_ext(0, &k, &x), Some(want), "flags {flags:#x}");
    }
    c.remove(syn);
    assert!(!c.reads_ip_fields() && c.cacheable_type(0x0800));
}

#[test]
fn test_nw_ttl_match() {
    assert_eq!(
        flow("ip,nw_ttl=1,actions=drop").to_string(),
        "ip,nw_ttl=1 actions=drop"
    );
    assert_eq!(
        flow("ipv6,nw_ttl=255,actions=drop"),
        flow(&flow("ipv6,nw_ttl=255,actions=drop").to_string())
    );
    assert!(err("ip,nw_ttl=256,actions=drop").starts_with("nw_ttl: bad value '256'"));
    // Setting it: mod_nw_ttl, and set_field on nw_ttl / nw_ecn written as the mod_ actions.
    assert_eq!(
        flow("ip,actions=set_field:5->nw_ttl,set_field:2->nw_ecn,output:1").to_string(),
        "ip actions=mod_nw_ttl:5,mod_nw_ecn:2,output:1"
    );
    assert_eq!(
        flow("ip,actions=mod_nw_ttl:5"),
        flow(&flow("ip,actions=mod_nw_ttl:5").to_string())
    );
    assert!(err("ip,actions=mod_nw_ttl:256").contains("mod_nw_ttl"));
    assert!(err("ip,actions=set_field:4->ip_ecn").contains("set_field"));
    assert!(err("arp,nw_ttl=1,actions=drop").contains("prerequisite"));
    assert!(err("nw_ttl=1,actions=drop").contains("prerequisite"));
    let ports = &|_: &PortRef| Some(1u16);
    let mut c = Classifier::new();
    let last = c
        .add(flow("priority=200,ip,nw_ttl=1,actions=drop"), 0, ports)
        .unwrap()
        .id;
    let any = c
        .add(flow("priority=100,ip,actions=drop"), 0, ports)
        .unwrap()
        .id;
    assert!(c.reads_ip_fields() && !c.cacheable_type(0x0800));
    let k = PacketKey {
        dl_type: 0x0800,
        ..PacketKey::default()
    };
    for (ttl, want) in [(1, last), (0, any), (2, any), (64, any)] {
        let x = ExtKey {
            nw_ttl: ttl,
            ..ExtKey::ZERO
        };
        assert_eq!(c.lookup_ext(0, &k, &x), Some(want), "ttl {ttl}");
    }
}

/// ovs-ofctl's OpenFlow 1.0 dumps write `mod_nw_ttl:9` as `load:0x9->NXM_NX_IP_TTL[]` (and
/// `mod_nw_ecn` as a load into `NXM_NX_IP_ECN[]`): such a dump line adds back as the same
/// action; a value that does not fit is refused.
#[test]
fn a_load_into_the_ip_ttl_or_ecn_is_mod_nw_ttl_or_ecn() {
    assert_eq!(
        flow("ip,actions=load:0x9->NXM_NX_IP_TTL[],load:0x1->NXM_NX_IP_ECN[],NORMAL").to_string(),
        "ip actions=mod_nw_ttl:9,mod_nw_ecn:1,NORMAL"
    );
    assert_eq!(
        flow("ip,actions=load:200->nw_ttl[0..7]").to_string(),
        "ip actions=mod_nw_ttl:200"
    );
    let e = parse_flow("ip,actions=load:0x100->NXM_NX_IP_TTL[]").unwrap_err();
    assert!(e.to_string().contains("0x100"), "{e}");
    let e = parse_flow("ip,actions=load:4->NXM_NX_IP_ECN[]").unwrap_err();
    assert!(e.to_string().contains("'4'"), "{e}");
}

/// The running configuration's flow lines (each flow's text made once and kept) are the flows
/// as they are now, in dump order: a replaced flow's new actions, not the text kept for the
/// flow it replaced; a deleted flow's id reused by another flow, that flow's text.
#[test]
fn config_lines_follow_replaces_and_deletes() {
    let mut c = Classifier::new();
    let lines = |c: &Classifier| -> Vec<String> {
        let dumped: Vec<String> = c
            .dump(None, ports)
            .unwrap()
            .iter()
            .map(|(_, f, _)| f.to_string())
            .collect();
        let kept = c.config_lines();
        assert_eq!(kept, dumped);
        kept
    };
    c.add(flow("priority=10,ip,actions=drop"), 0, ports)
        .unwrap();
    c.add(flow("priority=20,tcp,actions=output:2"), 0, ports)
        .unwrap();
    assert_eq!(lines(&c).len(), 2);
    // Replaced in place (same match and priority): its new actions.
    c.add(flow("priority=10,ip,actions=output:3"), 1, ports)
        .unwrap();
    let now = lines(&c);
    assert!(now.iter().any(|l| l.contains("output:3")), "{now:?}");
    assert!(!now.iter().any(|l| l.contains("drop")), "{now:?}");
    // Deleted, and its id taken by another flow: that flow's text.
    c.del(&parse_filter("priority=20,tcp").unwrap(), true, ports)
        .unwrap();
    c.add(flow("priority=30,udp,actions=output:1"), 2, ports)
        .unwrap();
    let now = lines(&c);
    assert_eq!(now.len(), 2, "{now:?}");
    assert!(now[0].contains("udp"), "highest priority first: {now:?}");
}

#[test]
fn local_is_the_bridge_local_port_number() {
    for text in [
        "in_port=LOCAL,actions=output:LOCAL",
        "in_port=local,actions=LOCAL",
    ] {
        let f = flow(text);
        assert_eq!(
            f.m.in_port,
            Some(PortRef::Num(crate::ofport::OFPP_LOCAL)),
            "{text}"
        );
        let again = f.to_string();
        assert!(again.contains("in_port=LOCAL"), "{again}");
        assert_eq!(flow(&again), f, "{again}");
    }
}
