//! Unit tests of the ovs-ofctl syntax taken from OVS's own test suite (tests/ovs_flow_corpus.rs
//! runs the whole corpus): aliases, registers, IPv6 fields, and the actions added for them.

use super::*;

fn flow(s: &str) -> Flow {
    parse_flow(s).unwrap_or_else(|e| panic!("{s}: {e}"))
}

fn err(s: &str) -> String {
    match parse_flow(s) {
        Ok(f) => panic!("{s}: accepted as {f}"),
        Err(e) => e.to_string(),
    }
}

fn round_trip(s: &str) -> Flow {
    let f = flow(s);
    assert_eq!(parse_flow(&f.to_string()), Ok(f.clone()), "{s} -> {f}");
    f
}

#[test]
fn test_action_is_actions() {
    assert_eq!(
        flow("priority=1,action=drop"),
        flow("priority=1,actions=drop")
    );
    assert_eq!(
        flow("table=0 priority=10 arp action=normal"),
        flow("table=0,priority=10,arp,actions=NORMAL")
    );
    // Only a key named exactly `action` or `actions` starts the list.
    assert!(err("priority=1,xaction=drop").contains("xaction"));
    assert!(matches!(
        parse_filter("action=drop"),
        Err(FlowError::NotAllowed { .. })
    ));
    round_trip("in_port=1,action=output:2");
}

#[test]
fn test_ipv6_matches() {
    let f = round_trip(
        "icmp6,icmp_type=136,nd_target=2001::1:0:9,ipv6_src=2001::/64,ipv6_label=5,actions=drop",
    );
    assert_eq!(
        f.to_string(),
        "icmp6,ipv6_src=2001::/64,ipv6_label=0x5,icmp_type=136,nd_target=2001::1:0:9 actions=drop"
    );
    assert_eq!(flow("ip6,actions=drop"), flow("ipv6,actions=drop"));
    assert_eq!(
        flow("tcp6,tp_dst=80,actions=drop").to_string(),
        "tcp6,tp_dst=80 actions=drop"
    );
    assert_eq!(
        flow("icmp6,icmpv6_type=135,icmpv6_code=0,actions=drop").to_string(),
        "icmp6,icmp_type=135,icmp_code=0 actions=drop"
    );
    round_trip("ipv6,nw_proto=4,nw_tos=4,ipv6_dst=fc00::1/ffff::ffff,actions=normal");
    round_trip("sctp,actions=drop");
    // Prerequisites.
    assert!(err("ipv6_src=::1,actions=drop").contains("ipv6_src: needs dl_type=0x86dd"));
    assert!(err("icmp6,nd_target=::1,actions=drop").contains("icmp_type=135 or 136"));
    assert!(err("tcp,icmpv6_type=1,actions=drop").contains("icmp6"));
    assert!(err("ip,icmp_type=1,nw_proto=58,actions=drop").contains("icmp_type"));
    assert!(err("ipv6,ipv6_src=1.2.3.4,actions=drop").contains("not an IPv6 address"));
    // Conntrack of IPv6 works; its NAT is refused by name.
    round_trip("tcp6,actions=ct(commit),2");
    assert!(err("ip6,actions=ct(commit,nat(src=fc00::240-fc00::241)),2").contains("NAT of IPv6"));
    assert!(err("ipv6,actions=ct(commit,nat(dst=1.2.3.4)),2").contains("NAT of IPv6"));
}

#[test]
fn test_registers() {
    let f = round_trip("reg0=5,reg3=0x10/0xf0,metadata=0x7,actions=drop");
    assert_eq!(
        f.to_string(),
        "metadata=0x7,reg0=0x5,reg3=0x10/0xf0 actions=drop"
    );
    // xregN is reg(2N) high, reg(2N+1) low, as in OVS.
    assert_eq!(
        flow("xreg0=0x100000002,actions=drop"),
        flow("reg0=1,reg1=2,actions=drop")
    );
    assert_eq!(flow("xreg0=0,actions=drop").m.ext.iter().count(), 2);
    assert!(matches!(
        parse_flow("reg0=1,reg0=2,actions=drop"),
        Err(FlowError::Conflict { .. })
    ));
    assert!(err("reg16=1,actions=drop").contains("reg16"));
    assert!(err("reg0=0x100000000,actions=drop").contains("wider than 32 bits"));
    let mut key = ExtKey::default();
    assert!(!f.m.ext.matches(&key));
    key.regs[0] = 5;
    key.regs[3] = 0x1f;
    key.metadata = 7;
    assert!(f.m.ext.matches(&key));
}

#[test]
fn test_register_actions() {
    let f = round_trip(
        "actions=load:0x5->NXM_NX_REG0[0..7],move:NXM_OF_ETH_SRC[0..31]->reg1[],\
         set_field:0x3/0xf->reg2,set_field:5->metadata,load:1->reg4[3],move:reg0[]->xreg3[32..63]",
    );
    assert_eq!(
        Actions(&f.actions).to_string(),
        "load:0x5->reg0[0..7],move:eth_src[0..31]->reg1[],set_field:0x3/0xf->reg2,\
         set_field:0x5->metadata,load:0x1->reg4[3],move:reg0[]->reg6[]"
    );
    assert!(err("actions=load:0x100->reg0[0..7]").contains("does not fit in 8 bits"));
    assert!(err("actions=load:1->reg0[0..32]").contains("do not fit"));
    assert!(err("actions=move:reg0[0..3]->reg1[0..4]").contains("source has 4 bits"));
    assert!(err("actions=load:1->eth_src[]").contains("use set_field"));
    assert!(err("actions=move:reg0[]->xreg0[16..47]").contains("spans both"));
}

#[test]
fn test_small_actions() {
    let f = round_trip("ip,actions=mod_nw_tos:8,mod_nw_ecn:2,note:01.02.ab,ct_clear,output:1");
    assert_eq!(
        Actions(&f.actions).to_string(),
        "mod_nw_tos:8,mod_nw_ecn:2,note:01.02.ab,ct_clear,output:1"
    );
    assert_eq!(flow("actions=note:0102ab").actions, f.actions[2..3]);
    assert!(err("actions=mod_nw_tos:5").contains("ECN bits"));
    assert!(err("actions=mod_nw_ecn:4").contains("out of range"));
    assert!(err("actions=note:1").contains("not hex bytes"));
    assert!(err("actions=ct_clear:1").contains("takes no argument"));
}

#[test]
fn test_classifier_ext_chain() {
    let mut c = Classifier::new();
    let none = |_: &PortRef| None;
    let a = c
        .add(flow("priority=5,reg0=1,actions=drop"), 0, none)
        .unwrap();
    let b = c
        .add(flow("priority=5,reg0=2,actions=drop"), 0, none)
        .unwrap();
    let lo = c.add(flow("priority=1,actions=drop"), 0, none).unwrap();
    assert!(
        !a.replaced && !b.replaced,
        "same packed key, other registers: two flows"
    );
    let k = PacketKey::default();
    let mut x = ExtKey::ZERO;
    assert_eq!(c.lookup_ext(0, &k, &x), Some(lo.id));
    x.regs[0] = 2;
    assert_eq!(c.lookup_ext(0, &k, &x), Some(b.id));
    x.regs[0] = 1;
    assert_eq!(c.lookup_ext(0, &k, &x), Some(a.id));
    // Same match again replaces only its own flow.
    let a2 = c
        .add(flow("priority=5,reg0=1,actions=NORMAL"), 0, none)
        .unwrap();
    assert!(a2.replaced);
    assert_eq!(a2.id, a.id);
    // Strict delete names the registers; non-strict deletes what is at least as specific.
    let gone = c
        .del(&parse_filter("priority=5,reg0=2").unwrap(), true, none)
        .unwrap();
    assert_eq!(gone, vec![b.id]);
    let gone = c
        .del(&parse_filter("reg0=1").unwrap(), false, none)
        .unwrap();
    assert_eq!(gone, vec![a.id]);
    assert_eq!(c.len(), 1);
    // IPv6 address matches turn the exact-match cache off for IPv6 frames only.
    let v6 = PacketKey {
        dl_type: 0x86dd,
        ..PacketKey::default()
    };
    assert!(c.cacheable(&v6));
    c.add(flow("ipv6,ipv6_src=::1,actions=drop"), 0, none)
        .unwrap();
    assert!(!c.cacheable(&v6));
    assert!(c.cacheable(&PacketKey::default()));
    c.del(&parse_filter("ipv6").unwrap(), false, none).unwrap();
    assert!(c.cacheable(&v6));
}

#[test]
fn test_ct_mark_label() {
    let f = round_trip("ct_state=+trk,ct_mark=1/3,ct_label=0x5/0x5,ip,actions=drop");
    assert_eq!(
        f.to_string(),
        "ct_state=+trk,ct_mark=0x1/0x3,ct_label=0x5/0x5,ip actions=drop"
    );
    round_trip("ct_label=0x0a000d000005000001,ip,actions=drop");
    let f = round_trip(
        "ip,actions=ct(commit,zone=1,exec(set_field:0x5/0x5->ct_mark,set_field:0x2->ct_mark,\
         load:1->NXM_NX_CT_LABEL[33]),table=2)",
    );
    let Action::Ct(ct) = &f.actions[0] else {
        panic!("{f}")
    };
    // The second set_field overwrites the whole mark.
    assert_eq!(
        ct.mark,
        Some(Masked {
            value: 2,
            mask: u32::MAX
        })
    );
    assert_eq!(
        ct.label,
        Some(Masked {
            value: 1 << 33,
            mask: 1 << 33
        })
    );
    assert_eq!(
        f.to_string(),
        "ip actions=ct(commit,table=2,zone=1,exec(set_field:0x2->ct_mark,\
         set_field:0x200000000/0x200000000->ct_label))"
    );
    assert!(err("ip,actions=ct(exec(set_field:1->ct_mark))").contains("needs commit"));
    assert!(err("ip,actions=ct(commit,exec(set_field:1->reg0))").contains("only set ct_mark"));
    assert!(err("ip,actions=ct(commit,exec(output:1))").contains("not supported"));
    assert!(err("actions=set_field:1->ct_mark").contains("inside ct(commit,exec"));
    assert!(err("actions=load:1->ct_mark[]").contains("inside ct(commit,exec"));
    // ct_mark is readable by move.
    round_trip("actions=move:ct_mark[]->reg0[]");
}

#[test]
fn test_vlan_tci_and_ip_frag() {
    // vlan_tci says what dl_vlan/dl_vlan_pcp say when it can: one normal form.
    assert_eq!(
        flow("vlan_tci=0x1005/0x1fff,actions=drop"),
        flow("dl_vlan=5,actions=drop")
    );
    assert_eq!(
        flow("vlan_tci=0,actions=drop"),
        flow("dl_vlan=0xffff,actions=drop")
    );
    assert_eq!(
        flow("vlan_tci=0xb005,actions=drop"),
        flow("dl_vlan=5,dl_vlan_pcp=5,actions=drop")
    );
    let f = round_trip("priority=100,in_port=1,vlan_tci=0x1000/0x1000,actions=pop_vlan,NORMAL");
    assert_eq!(
        f.to_string(),
        "priority=100,in_port=1,vlan_tci=0x1000/0x1000 actions=strip_vlan,NORMAL"
    );
    let tagged = PacketKey {
        vlan: 7,
        ..PacketKey::default()
    };
    assert!(f.m.matches(
        &PacketKey {
            in_port: 1,
            ..tagged
        },
        &|p| Some(p.num())
    ));
    assert!(!f.m.matches(
        &PacketKey {
            in_port: 1,
            ..PacketKey::default()
        },
        &|p| Some(p.num())
    ));
    assert!(matches!(
        parse_flow("dl_vlan=5,vlan_tci=0x1000/0x1000,actions=drop"),
        Err(FlowError::Conflict { .. })
    ));
    for (name, v, m) in [
        ("no", 0, 1),
        ("yes", 1, 1),
        ("first", 1, 3),
        ("later", 3, 3),
        ("not_later", 0, 2),
    ] {
        let f = round_trip(&format!("ip,ip_frag={name},actions=drop"));
        assert_eq!(f.m.nw_frag, Some(Masked { value: v, mask: m }), "{name}");
        assert!(f.to_string().contains(&format!("ip_frag={name}")));
    }
    round_trip("ipv6,ip_frag=0x2/0x2,actions=drop");
    assert!(err("ip_frag=no,actions=drop").contains("prerequisite"));
    assert!(err("ip,ip_frag=maybe,actions=drop").contains("want no, yes"));
}

#[test]
fn test_clone_and_output_max_len() {
    let f = round_trip(
        "ip,actions=clone(mod_dl_dst(50:54:00:00:00:0a),set_field:192.168.3.3->ip_dst),output:2",
    );
    assert_eq!(
        f.to_string(),
        "ip actions=clone(mod_dl_dst:50:54:00:00:00:0a,set_field:192.168.3.3->ip_dst),output:2"
    );
    round_trip("actions=clone(resubmit(,1),clone(output:3)),resubmit(,2)");
    round_trip("actions=clone()");
    assert!(err("actions=clone(goto_table:3)").contains("not allowed inside clone"));
    assert!(err("actions=clone(meter:1)").contains("not allowed inside clone"));
    assert!(err("actions=clone(set_tunnel:5,output:1)").contains("not allowed inside clone"));
    let f = round_trip("in_port=1,actions=output(port=2,max_len=100),output:4");
    assert_eq!(
        f.to_string(),
        "in_port=1 actions=output(port=2,max_len=100),output:4"
    );
    assert_eq!(f.ports().count(), 3, "in_port and both outputs");
    assert!(err("actions=output(port=2,max_len=10)").contains("less than 14"));
    assert!(err("actions=output(port=2)").contains("want output(port=P,max_len=N)"));
    assert!(err("actions=output(port=2,max_len=20,foo=1)").contains("foo=1"));
    assert_eq!(
        flow("actions=mod_vlan_vid(5)"),
        flow("actions=mod_vlan_vid:5")
    );
}

#[test]
fn test_ipv6_nat_refused_inside_clone() {
    assert!(
        err("ipv6,actions=clone(ct(commit,nat(src=1.2.3.4))),output:1").contains("NAT of IPv6")
    );
}

#[test]
fn test_nat_address_ranges() {
    let f = round_trip("ip,actions=ct(commit,zone=1,nat(src=10.1.1.240-10.1.1.254:20000)),2");
    assert_eq!(
        f.to_string(),
        "ip actions=ct(commit,zone=1,nat(src=10.1.1.240-10.1.1.254:20000)),output:2"
    );
    round_trip("tcp,actions=ct(commit,nat(dst=10.1.1.2-10.1.1.3:80))");
    // A one-address range is that address.
    assert_eq!(
        flow("ip,actions=ct(commit,nat(src=10.0.0.1-10.0.0.1))"),
        flow("ip,actions=ct(commit,nat(src=10.0.0.1))")
    );
    assert!(err("ip,actions=ct(commit,nat(src=10.0.0.1-10.0.0.300))").contains("not an IPv4"));
}

#[test]
fn test_mpls() {
    let f = round_trip(
        "mpls,mpls_label=4,mpls_tc=3,mpls_bos=1,mpls_ttl=5,actions=pop_mpls:0x0800,output:1",
    );
    assert_eq!(
        f.to_string(),
        "mpls,mpls_label=4,mpls_tc=3,mpls_ttl=5,mpls_bos=1 actions=pop_mpls:0x0800,output:1"
    );
    assert_eq!(
        flow("dl_type=0x8848,actions=drop").to_string(),
        "mplsm actions=drop"
    );
    let f = round_trip(
        "ip,actions=push_mpls:0x8847,set_field:2->mpls_label,set_mpls_tc:2,set_mpls_ttl:9,\
         dec_mpls_ttl,set_field:3->mpls_tc",
    );
    assert_eq!(f.actions[1], Action::SetMplsLabel(2));
    assert_eq!(f.actions[5], Action::SetMplsTc(3));
    assert!(err("mpls_label=4,actions=drop").contains("prerequisite"));
    assert!(err("mpls,mpls_label=4,mpls_label=5,actions=drop").contains("conflicts"));
    assert!(err("actions=push_mpls:0x0800").contains("not an MPLS EtherType"));
    assert!(err("actions=set_mpls_label:0x100000").contains("out of range"));
}

#[test]
fn test_learn() {
    let f = round_trip(
        "table=2 actions=learn(table=10, NXM_OF_VLAN_TCI[0..11], \
         NXM_OF_ETH_DST[]=NXM_OF_ETH_SRC[], load:NXM_OF_IN_PORT[]->NXM_NX_REG0[0..15]), \
         resubmit(,3)",
    );
    assert_eq!(
        f.to_string(),
        "table=2, actions=learn(table=10,vlan_tci[0..11],eth_dst[]=eth_src[],\
         load:in_port[]->reg0[0..15]),resubmit(,3)"
    );
    let Action::Learn(l) = &f.actions[0] else {
        panic!()
    };
    let k = PacketKey {
        in_port: 2,
        dl_src: 0x0200_0000_0007,
        vlan: 20,
        ..PacketKey::default()
    };
    let learned = l.flow(&k, &ExtKey::ZERO);
    assert_eq!(
        learned.to_string(),
        "table=10, vlan_tci=0x0014/0x0fff,dl_dst=02:00:00:00:00:07 actions=load:0x2->reg0[0..15]"
    );
    let f = round_trip(
        "actions=learn(table=3,priority=7,idle_timeout=10,hard_timeout=20,cookie=0x5,\
         eth_type=0x800,nw_proto=6,ip_dst=ip_src,tcp_dst[]=tcp_src[],in_port=99,\
         dl_dst=ff:ff:ff:ff:ff:ff,load:5->reg1[],output:NXM_OF_IN_PORT[])",
    );
    let Action::Learn(l) = &f.actions[0] else {
        panic!()
    };
    let k = PacketKey {
        in_port: 4,
        dl_type: 0x800,
        nw_proto: 6,
        nw_src: 0x0a00_0001,
        tp_src: 1234,
        ..PacketKey::default()
    };
    assert_eq!(
        l.flow(&k, &ExtKey::ZERO).to_string(),
        "cookie=0x5, table=3, idle_timeout=10, hard_timeout=20, priority=7,tcp,in_port=99,\
         dl_dst=ff:ff:ff:ff:ff:ff,nw_dst=10.0.0.1,tp_dst=1234 actions=load:0x5->reg1[],output:4"
    );
    assert!(err("actions=learn(ip_src=ip_dst)").contains("eth_type=0x800"));
    assert!(err("actions=learn(eth_type=0x800,tp_src)").contains("nw_proto"));
    assert!(err("actions=learn(limit=5)").contains("'limit' is not supported"));
    assert!(err("actions=learn(in_port[0..7])").contains("whole field"));
    assert!(err("actions=learn(reg0[0..7]=reg1[0..3])").contains("widths differ"));
    assert!(err("actions=learn(ct_mark=1)").contains("cannot be learned"));
}

#[test]
fn test_ct_original_tuple() {
    let f = round_trip(
        "priority=100,in_port=1,ip,ct_nw_proto=17,ct_tp_src=1,ct_tp_dst=2,ct_state=+new+trk,\
         action=ct(commit)",
    );
    assert_eq!(
        f.to_string(),
        "priority=100,ct_state=+new+trk,ct_nw_proto=17,ct_tp_src=1,ct_tp_dst=2,ip,in_port=1 \
         actions=ct(commit)"
    );
    round_trip("ip,ct_state=+trk-inv,ct_nw_src=10.0.0.0/8,ct_nw_dst=1.2.3.4,actions=drop");
    round_trip("ip,ct_state=+est,ct_nw_proto=6,ct_tp_dst=0x50/0xfff0,actions=drop");
    assert!(err("ip,ct_state=+trk,ct_nw_proto=6,actions=drop").contains("ct_state with +trk"));
    assert!(err("ip,ct_nw_proto=6,actions=drop").contains("ct_state"));
    assert!(err("ip,ct_state=+new,ct_tp_src=1,actions=drop").contains("ct_nw_proto"));
    assert!(err("ipv6,ct_state=+new,ct_nw_src=1.2.3.4,actions=drop").contains("prerequisite"));
    assert!(err("actions=load:1->ct_nw_src[]").contains("read-only"));
    assert!(err("ip,actions=ct(commit,exec(set_field:1->ct_nw_proto))").contains("only set"));
}
