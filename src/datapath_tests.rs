//! Tests of `datapath` (bridges, ports, gateways, tunnels and their bookkeeping).
use super::*;

/// OVS's `vlan_mode`: native modes take the native VLAN and the others; wrong combinations
/// are refused naming `vlan_mode` (or both fields).
#[test]
fn vlan_mode_native_parse() {
    let p = |a, t, m| VlanMode::parse_mode(a, t, m);
    let n = p(Some("10"), Some("20,30"), Some("native-untagged")).unwrap();
    assert_eq!(
        n.describe(),
        "vlan=10 trunks=20,30 vlan_mode=native-untagged"
    );
    assert_eq!(n.untagged_vlan(), Some(10));
    assert!(n.carries(10) && n.carries(20) && !n.carries(0) && !n.carries(40));
    assert!(n.leaves_untagged(10) && !n.leaves_untagged(20));
    assert_eq!((n.bridge_vlan(0), n.bridge_vlan(20)), (10, 20));
    assert_eq!(n.fdb_vlan(0), Ok(10));
    let t = p(Some("10"), None, Some("native-tagged")).unwrap();
    assert_eq!(t.describe(), "vlan=10 trunks=all vlan_mode=native-tagged");
    assert!(!t.leaves_untagged(10) && t.carries(4000));
    assert_eq!(
        p(Some("10"), None, Some("access")),
        Ok(VlanMode::Access(10))
    );
    assert_eq!(
        p(None, Some("5"), Some("trunk")),
        VlanMode::parse(None, Some("5"))
    );
    for (a, tr, m, want) in [
        (None, None, Some("native-untagged"), "needs vlan=N"),
        (
            Some("10"),
            Some("0"),
            Some("native-untagged"),
            "trunks: '0'",
        ),
        (None, None, Some("access"), "access needs vlan=N"),
        (Some("10"), None, Some("trunk"), "a trunk takes no vlan="),
        (
            None,
            None,
            Some("dot1q-tunnel"),
            "vlan_mode: 'dot1q-tunnel'",
        ),
        (
            Some("10"),
            Some("20"),
            None,
            "without vlan_mode=native-untagged",
        ),
    ] {
        let e = p(a, tr, m).unwrap_err();
        assert!(e.contains(want), "{e}");
    }
}

#[test]
fn vlan_mode_parse() {
    assert_eq!(VlanMode::parse(Some("10"), None), Ok(VlanMode::Access(10)));
    assert!(
        VlanMode::parse(Some("0"), None)
            .unwrap_err()
            .contains("vlan")
    );
    assert!(VlanMode::parse(Some("4095"), None).is_err());
    let t = VlanMode::parse(None, Some("10,20")).unwrap();
    assert_eq!(t.describe(), "trunks=10,20");
    assert!(VlanMode::parse(Some("1"), Some("2")).is_err());
    assert!(
        VlanMode::parse(None, Some("10,x"))
            .unwrap_err()
            .contains("trunks: 'x'")
    );
    assert_eq!(VlanMode::default_trunk().describe(), "trunk=all");
    // A trunk may list VLAN 0 (untagged frames); an access port may not be VLAN 0.
    let t0 = VlanMode::parse(None, Some("0,10")).unwrap();
    assert_eq!(t0.describe(), "trunks=0,10");
    assert_eq!(t0.untagged_vlan(), Some(0));
    assert_eq!(
        t.untagged_vlan(),
        None,
        "trunks=10,20 carries no untagged frames"
    );
    assert_eq!(VlanMode::default_trunk().untagged_vlan(), Some(0));
    assert_eq!(VlanMode::Access(7).untagged_vlan(), Some(7));
    assert!(
        VlanMode::parse(None, Some("4095"))
            .unwrap_err()
            .contains("(0-4094)")
    );
    assert!(
        VlanMode::parse(None, Some("10,20,10"))
            .unwrap_err()
            .contains("VLAN 10 is listed twice")
    );
}

#[test]
fn names_that_read_as_options_or_directories_are_refused() {
    for bad in ["-x", "--", ".", ".."] {
        let e = validate_name(bad, "bridge").unwrap_err();
        assert!(
            e.contains("may not start with '-' or be only dots"),
            "{bad}: {e}"
        );
    }
    for good in ["br0", "a.b", "x-1", "_"] {
        validate_name(good, "bridge").unwrap();
    }
}

/// A gateway must be an address a LAN can use: multicast, loopback, 0.0.0.0/8 and class E are
/// refused, naming the field (found trying uvs as a new user).
#[test]
fn gateways_a_lan_cannot_use_are_refused() {
    let mut dp = Datapath::new();
    let b = dp.add_bridge("br0", &BridgeOptions::default()).unwrap();
    for (ip, why) in [
        ([224, 0, 0, 1], "multicast"),
        ([127, 0, 0, 1], "loopback"),
        ([0, 0, 0, 1], "0.0.0.0/8"),
        ([255, 255, 255, 1], "240.0.0.0/4"),
    ] {
        let g = Gateway {
            ip,
            len: 24,
            mac: Gateway::default_mac("br0"),
        };
        let e = dp.set_gateway(b, Some(g)).unwrap_err();
        assert!(e.starts_with("gateway: ") && e.contains(why), "{e}");
    }
    let ok = Gateway {
        ip: [10, 0, 0, 1],
        len: 24,
        mac: Gateway::default_mac("br0"),
    };
    dp.set_gateway(b, Some(ok)).unwrap();
}

#[test]
fn gateway_mac_is_per_host_and_stable() {
    let a = Gateway::host_mac(b"host-a", "ul");
    assert_eq!(a, Gateway::host_mac(b"host-a", "ul"), "stable");
    assert_ne!(a, Gateway::host_mac(b"host-b", "ul"), "per host");
    assert_ne!(a, Gateway::host_mac(b"host-a", "br0"), "per bridge");
    assert_eq!(&a.0[..3], &[0x02, 0x75, 0x76], "locally administered");
    assert_eq!(Gateway::default_mac("ul"), Gateway::host_mac(&[], "ul"));
}

#[test]
fn a_tunnel_lowers_its_bridge_routed_mtu_to_the_inner_mtu() {
    let mut dp = Datapath::new();
    let ul = dp.add_bridge("ul", &BridgeOptions::default()).unwrap();
    let br = dp.add_bridge("br0", &BridgeOptions::default()).unwrap();
    let gw = Gateway {
        ip: [10, 252, 0, 1],
        len: 24,
        mac: Gateway::default_mac("ul"),
    };
    dp.set_gateway(ul, Some(gw)).unwrap();
    let st = |n: &str, b| PortState::new(n, PortKind::Mem, b, VlanMode::default_trunk(), 1500);
    dp.add_port(dp.next_port_id().unwrap(), st("up", ul))
        .unwrap();
    dp.add_port(dp.next_port_id().unwrap(), st("c1", br))
        .unwrap();
    let vx = dp.next_port_id().unwrap();
    let mut t = st("vx0", br);
    t.mtu = u16::MAX as u32;
    t.tunnel = Some(Box::new(crate::vxlan::Tunnel::new(
        crate::vxlan::TunnelConf {
            vni: 42,
            local_ip: gw.ip,
            remotes: vec![[10, 252, 0, 2]],
            ..Default::default()
        },
    )));
    dp.add_port(vx, t).unwrap();
    dp.refresh_tunnels();
    assert_eq!(dp.bridge(br).unwrap().l3_mtu, 1450, "1500 underlay - 50");
    dp.del_port(vx).unwrap();
    assert_eq!(dp.bridge(br).unwrap().l3_mtu, 1500);
}

#[test]
fn bridge_and_port_bookkeeping() {
    let mut dp = Datapath::new();
    let b = dp.add_bridge("br0", &BridgeOptions::default()).unwrap();
    assert!(dp.add_bridge("br0", &BridgeOptions::default()).is_err());
    assert!(
        dp.add_bridge("bad name", &BridgeOptions::default())
            .is_err()
    );
    let id = dp.next_port_id().unwrap();
    let st = |n: &str| PortState::new(n, PortKind::Mem, b, VlanMode::default_trunk(), 1500);
    dp.add_port(id, st("p1")).unwrap();
    assert!(dp.add_port(dp.next_port_id().unwrap(), st("p1")).is_err());
    assert!(dp.del_bridge(b).is_err(), "bridge with ports");
    dp.bridge_mut(b).unwrap().fdb.learn(0, 42, id, 1);
    dp.del_port(id).unwrap();
    assert!(
        dp.bridge(b).unwrap().fdb.is_empty(),
        "MACs of a removed port go"
    );
    dp.del_bridge(b).unwrap();
    assert!(dp.bridge_id("br0").is_none());
}

#[test]
fn housekeeping_work_is_shared_across_bridges() {
    let mut dp = Datapath::new();
    let opts = BridgeOptions {
        fdb_capacity: 1000,
        aging: 10,
    };
    for i in 0..100 {
        let b = dp.add_bridge(&format!("b{i}"), &opts).unwrap();
        let f = &mut dp.bridge_mut(b).unwrap().fdb;
        for m in 0..1000 {
            f.learn(0, m, 1, 0);
        }
    }
    // Everything has expired; one pass may touch ~8 budgets of slots in all.
    let removed = dp.age_fdbs(100, 4096);
    assert!(removed > 0 && removed <= 8 * 4096, "{removed}");
    let per: Vec<usize> = dp.bridges().map(|(_, b)| 1000 - b.fdb.len()).collect();
    assert!(per.iter().all(|&n| n <= 4096 * 8 / 100), "{per:?}");
}

#[test]
fn bridge_and_port_counts_are_bounded() {
    let mut dp = Datapath::new();
    let small = BridgeOptions {
        fdb_capacity: 16,
        ..Default::default()
    };
    for i in 0..MAX_BRIDGES {
        dp.add_bridge(&format!("b{i}"), &small).unwrap();
    }
    let e = dp.add_bridge("one-more", &small).unwrap_err();
    assert_eq!(
        e,
        format!("too many bridges (limit {MAX_BRIDGES}); delete one first")
    );
    let b = dp.bridge_id("b0").unwrap();
    dp.del_bridge(b).unwrap();
    dp.add_bridge("one-more", &small).unwrap();
    check_fdb_total(MAX_FDB_TOTAL - 16, 16).unwrap();
    let e = check_fdb_total(MAX_FDB_TOTAL - 15, 16).unwrap_err();
    assert!(e.starts_with("fdb_capacity: 16 would bring"), "{e}");
    // Ports: ids run out at MAX_PORTS with a clear error.
    let mut dp = Datapath::new();
    let b = dp.add_bridge("br0", &small).unwrap();
    for i in 0..MAX_PORTS {
        let id = dp.next_port_id().unwrap();
        let st = PortState::new(
            &format!("p{i}"),
            PortKind::Mem,
            b,
            VlanMode::default_trunk(),
            1500,
        );
        dp.add_port(id, st).unwrap();
    }
    assert_eq!(
        dp.next_port_id().unwrap_err(),
        format!("too many ports (limit {MAX_PORTS})")
    );
}

/// A gateway's directed broadcast is its subnet's last address, for subnets up to /30 (as
/// Linux's local table has it: /31 and /32 have none); /0 makes it 255.255.255.255.
#[test]
fn gateway_broadcast_is_the_subnets_last_address() {
    let g = |ip: [u8; 4], len| Gateway {
        ip,
        len,
        mac: MacAddr::default(),
    };
    assert!(g([10, 0, 1, 1], 24).is_broadcast([10, 0, 1, 255]));
    assert!(!g([10, 0, 1, 1], 24).is_broadcast([10, 0, 1, 0]));
    assert!(!g([10, 0, 1, 1], 24).is_broadcast([10, 0, 1, 254]));
    assert!(!g([10, 0, 1, 1], 24).is_broadcast([10, 0, 2, 255]));
    assert!(g([10, 0, 1, 1], 8).is_broadcast([10, 255, 255, 255]));
    assert!(g([10, 0, 1, 1], 30).is_broadcast([10, 0, 1, 3]));
    assert!(!g([10, 0, 1, 0], 31).is_broadcast([10, 0, 1, 1]));
    assert!(!g([10, 0, 1, 1], 32).is_broadcast([10, 0, 1, 1]));
    assert!(g([10, 0, 1, 1], 0).is_broadcast([255, 255, 255, 255]));
}
