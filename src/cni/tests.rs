//! Every command and error code that needs no root: VERSION, the checks of environment and
//! configuration, and the failures of IPAM and of the control socket.

use std::collections::HashMap;

use serde_json::{Value, json};

use super::*;

fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
    let m: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |k| m.get(k).cloned()
}

fn conf(extra: Value) -> Vec<u8> {
    let mut c = json!({
        "cniVersion": "1.0.0", "name": "n1", "type": "uvs-cni",
        "uvs_socket": std::env::temp_dir().join("uvs-cni-unit-no-daemon.sock"),
        "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.9.0.0/24"}]]}
    });
    for (k, v) in extra.as_object().unwrap() {
        c[k] = v.clone();
    }
    serde_json::to_vec(&c).unwrap()
}

fn env(cmd: &str) -> Vec<(&str, &str)> {
    vec![
        ("CNI_COMMAND", cmd),
        ("CNI_CONTAINERID", "c0ffee"),
        ("CNI_NETNS", "/proc/self/ns/net"),
        // Not a name of the host's (ADD refuses a CNI_IFNAME that exists in CNI_NETNS).
        ("CNI_IFNAME", "uvsunit0"),
        ("CNI_PATH", "/nonexistent"),
    ]
}

/// Runs the plugin; returns (stdout JSON or Null, exit status).
fn invoke(e: &[(&str, &str)], stdin: &[u8]) -> (Value, i32) {
    let (out, rc) = main_with(vars(e), stdin);
    (serde_json::from_str(&out).unwrap_or(Value::Null), rc)
}

fn code(e: &[(&str, &str)], stdin: &[u8]) -> u64 {
    let (v, rc) = invoke(e, stdin);
    assert_eq!(rc, 1, "{v}");
    assert!(v["msg"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
    assert!(v["cniVersion"].is_string(), "{v}");
    v["code"].as_u64().unwrap()
}

#[test]
fn version_lists_supported_versions() {
    let (v, rc) = invoke(&[("CNI_COMMAND", "VERSION")], b"");
    assert_eq!(rc, 0);
    assert_eq!(v["cniVersion"], "1.0.0");
    assert!(
        v["supportedVersions"]
            .as_array()
            .unwrap()
            .contains(&json!("1.0.0"))
    );
}

#[test]
fn environment_errors_are_code_4() {
    assert_eq!(code(&[], b""), 4);
    assert_eq!(code(&env("FROB"), &conf(json!({}))), 4);
    let mut e = env("ADD");
    e.retain(|(k, _)| *k != "CNI_CONTAINERID");
    assert_eq!(code(&e, &conf(json!({}))), 4);
    let mut e = env("ADD");
    e.retain(|(k, _)| *k != "CNI_NETNS");
    assert_eq!(code(&e, &conf(json!({}))), 4);
    let mut e = env("ADD");
    e[3] = ("CNI_IFNAME", "a-very-long-interface-name");
    assert_eq!(code(&e, &conf(json!({}))), 4);
}

#[test]
fn config_errors_have_the_spec_codes() {
    assert_eq!(code(&env("ADD"), b"{not json"), 6);
    assert_eq!(code(&env("ADD"), &conf(json!({"cniVersion": "9.9.9"}))), 1);
    assert_eq!(code(&env("ADD"), &conf(json!({"ipam": {}}))), 7);
    assert_eq!(code(&env("ADD"), &conf(json!({"mtu": 9000}))), 7);
    let sctp = json!({"runtimeConfig": {"portMappings": [
        {"hostPort": 1, "containerPort": 2, "protocol": "sctp"}]}});
    assert_eq!(code(&env("ADD"), &conf(sctp)), 2);
    let host_ip = json!({"runtimeConfig": {"portMappings": [
        {"hostPort": 1, "containerPort": 2, "hostIP": "::1"}]}});
    assert_eq!(code(&env("ADD"), &conf(host_ip)), 2);
    // The error reply carries the config's version.
    let (v, _) = invoke(
        &env("ADD"),
        &conf(json!({"cniVersion": "0.4.0", "ipam": {}})),
    );
    assert_eq!(v["cniVersion"], "0.4.0");
}

/// CHECK came with CNI 0.4.0: a 0.3.x configuration asking for it is refused up front with
/// the incompatible-version code, as the reference plugins' skeleton answers (it went on to
/// check the container).
#[test]
fn check_needs_cni_0_4_0() {
    let (v, status) = invoke(&env("CHECK"), &conf(json!({"cniVersion": "0.3.1"})));
    assert_eq!((v["code"].as_u64(), status), (Some(1), 1), "{v}");
    let msg = v["msg"].as_str().unwrap_or_default();
    assert!(
        msg.starts_with("cniVersion: '0.3.1' does not allow CHECK"),
        "{msg}"
    );
}

#[test]
fn add_with_missing_netns_is_code_3() {
    let mut e = env("ADD");
    e[2] = ("CNI_NETNS", "/nonexistent/netns");
    assert_eq!(code(&e, &conf(json!({}))), 3);
}

/// ADD of a `CNI_IFNAME` the namespace has already (`lo` here) is refused first, code 4 naming
/// it: before IPAM (which, missing, would be code 101) and before anything is made.
#[test]
fn add_of_an_existing_ifname_is_code_4_before_ipam() {
    let mut e = env("ADD");
    e[3] = ("CNI_IFNAME", "lo");
    let (v, rc) = invoke(&e, &conf(json!({})));
    assert_eq!((rc, v["code"].as_u64()), (1, Some(4)), "{v}");
    let msg = v["msg"].as_str().unwrap_or_default();
    assert!(
        msg.contains("CNI_IFNAME") && msg.contains("lo already exists"),
        "{v}"
    );
}

#[test]
fn add_without_the_ipam_plugin_is_code_101() {
    assert_eq!(code(&env("ADD"), &conf(json!({}))), u64::from(E_IPAM));
}

#[test]
fn del_without_the_daemon_is_code_100_and_check_needs_prev_result() {
    let mut e = env("DEL");
    e.retain(|(k, _)| *k != "CNI_NETNS");
    assert_eq!(code(&e, &conf(json!({}))), u64::from(E_UVS));
    assert_eq!(code(&env("CHECK"), &conf(json!({}))), 7);
}

#[test]
fn a_lock_file_that_cannot_be_made_is_code_5() {
    let c = conf(json!({"uvs_socket": "/nonexistent/dir/uvs.sock"}));
    assert_eq!(code(&env("ADD"), &c), 5);
}

#[test]
fn host_names_are_stable_short_and_distinct() {
    let e = |id: &str, ifn: &str| {
        Env::from_vars(&vars(&[
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", id),
            ("CNI_IFNAME", ifn),
        ]))
        .unwrap()
    };
    let a = e("abc", "eth0").host_ifname();
    assert_eq!(a, e("abc", "eth0").host_ifname());
    assert!(a.len() <= 15 && a.starts_with("uv"));
    assert_ne!(a, e("abc", "eth1").host_ifname());
    assert_ne!(a, e("abd", "eth0").host_ifname());
}

#[test]
fn lease_gateway_defaults_to_the_first_address() {
    let l = ops::lease_of(&json!({"ips": [{"address": "10.9.0.7/24"}]})).unwrap();
    assert_eq!(l.gateway.to_string(), "10.9.0.1");
    let l = ops::lease_of(&json!({"ips": [{"address": "10.9.0.7/24", "gateway": "10.9.0.254"}]}))
        .unwrap();
    assert_eq!((l.addr.to_string(), l.len), ("10.9.0.7".into(), 24));
    assert_eq!(l.gateway.to_string(), "10.9.0.254");
    assert!(ops::lease_of(&json!({"ips": []})).is_err());
}

/// ADD installs the IPAM result's routes, one without `gw` via the lease's gateway, and a
/// default route via the gateway when the result has none; IPv6 routes are refused (code 7),
/// a bad one is an IPAM error naming it. They were dropped but for the default route.
#[test]
fn ipam_routes_are_installed_with_the_lease_gateway() {
    let lease = ops::lease_of(&json!({"ips": [{"address": "10.9.0.7/24"}]})).unwrap();
    let texts = |r: &Value| {
        ops::routes_to_install(r, &lease).map(|v| {
            v.iter()
                .map(|r| format!("{} via {}", r.dst_text(), r.gw))
                .collect::<Vec<_>>()
        })
    };
    assert_eq!(texts(&json!({})).unwrap(), ["0.0.0.0/0 via 10.9.0.1"]);
    let r = json!({"routes": [{"dst": "192.168.7.0/24", "gw": "10.9.0.254"},
                              {"dst": "172.30.9.1/24"}, {"dst": "192.168.7.0/24"}]});
    assert_eq!(
        texts(&r).unwrap(),
        [
            "0.0.0.0/0 via 10.9.0.1",
            "192.168.7.0/24 via 10.9.0.254",
            "172.30.9.0/24 via 10.9.0.1"
        ]
    );
    let r = json!({"routes": [{"dst": "10.1.0.0/16"}, {"dst": "0.0.0.0/0", "gw": "10.9.0.9"}]});
    assert_eq!(
        texts(&r).unwrap(),
        ["10.1.0.0/16 via 10.9.0.1", "0.0.0.0/0 via 10.9.0.9"]
    );
    let e = texts(&json!({"routes": [{"dst": "::/0"}]})).unwrap_err();
    assert_eq!(e.code, E_INVALID_CONFIG);
    assert!(e.msg.contains("'::/0'"), "{e}");
    let e = texts(&json!({"routes": [{"dst": "10.1.0.0/40"}]})).unwrap_err();
    assert_eq!(e.code, E_IPAM);
    assert!(e.msg.contains("10.1.0.0/40"), "{e}");
    let e = texts(&json!({"routes": [{"dst": "10.1.0.0/16", "gw": "nope"}]})).unwrap_err();
    assert!(e.msg.contains("gw 'nope'"), "{e}");
}

/// An IPAM result with more than one address (a second range, an IPv6 one) is refused naming
/// the extra ones (they were leased and dropped silently).
#[test]
fn an_ipam_result_with_two_addresses_is_refused() {
    let one = json!({"ips": [{"address": "10.9.0.7/24"}]});
    assert!(ops::single_lease(&one).is_ok());
    for extra in ["10.9.1.7/24", "fd00::7/64"] {
        let two = json!({"ips": [{"address": "10.9.0.7/24"}, {"address": extra}]});
        let e = ops::single_lease(&two).unwrap_err();
        assert_eq!(e.code, E_INVALID_CONFIG);
        assert!(
            e.msg.contains(extra) && e.msg.contains("10.9.0.7/24"),
            "{e}"
        );
    }
}

#[test]
fn runtime_config_capabilities_parse() {
    let c = NetConf::parse(&conf(json!({"runtimeConfig": {
        "portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp", "hostIP": ""}],
        "ips": ["10.9.0.9/24"], "mac": "02:00:00:00:00:09"}})))
    .unwrap();
    assert_eq!(c.runtime_config.port_mappings[0].host_port, 8080);
    assert_eq!(c.runtime_config.mac.as_deref(), Some("02:00:00:00:00:09"));
    assert_eq!(c.runtime_config.ips, vec!["10.9.0.9/24".to_string()]);
    assert_eq!(c.bridge(), "n1");
    assert_eq!(c.dnat_bridge(), "n1");
}

/// A mapping without `hostPort` parses as 0 (uvs picks); DEL and CHECK find a picked port's
/// rule by bridge, protocol and target, a given port's only by that port too.
#[test]
fn port_mappings_with_host_port_zero_match_any_picked_port() {
    let c = NetConf::parse(&conf(
        json!({"uplink": "ext", "runtimeConfig": {"portMappings": [
        {"containerPort": 80, "protocol": "tcp"}, {"hostPort": 8080, "containerPort": 80}]}}),
    ))
    .unwrap();
    let pm = &c.runtime_config.port_mappings;
    assert_eq!(pm[0].host_port, 0);
    let a: std::net::Ipv4Addr = "10.9.0.2".parse().unwrap();
    let is = |p, r| ops::is_mapping(&c, p, a, r);
    assert!(is(
        &pm[0],
        "dnat in=ext proto=tcp port=32768 to=10.9.0.2:80"
    ));
    assert!(!is(
        &pm[0],
        "dnat in=ext proto=tcp port=32768 to=10.9.0.22:80"
    ));
    assert!(!is(
        &pm[0],
        "dnat in=ext proto=udp port=32768 to=10.9.0.2:80"
    ));
    assert!(!is(
        &pm[0],
        "dnat in=n1 proto=tcp port=32768 to=10.9.0.2:80"
    ));
    assert!(is(&pm[1], "dnat in=ext proto=tcp port=8080 to=10.9.0.2:80"));
    assert!(!is(
        &pm[1],
        "dnat in=ext proto=tcp port=8081 to=10.9.0.2:80"
    ));
}

/// `bandwidth` becomes port shapers in kbit/s and kbit (rounded up, bursts at least 16 kbit);
/// a rate without a burst (or the reverse) is an invalid config naming the field.
#[test]
fn bandwidth_becomes_port_shapers() {
    let bw = |b: Value| NetConf::parse(&conf(json!({"runtimeConfig": {"bandwidth": b}})));
    let c = bw(json!({"ingressRate": 10_000_000, "ingressBurst": 1_000_000,
                      "egressRate": 2_500_500, "egressBurst": 100}))
    .unwrap();
    let opts = c.runtime_config.bandwidth.unwrap().port_options();
    assert_eq!(opts, ["rate_tx=10000/1000", "rate_rx=2501/16"]);
    let c = bw(json!({"egressRate": 8000, "egressBurst": 16000})).unwrap();
    assert_eq!(
        c.runtime_config.bandwidth.unwrap().port_options(),
        ["rate_rx=8/16"]
    );
    for bad in [json!({"ingressRate": 1000}), json!({"egressBurst": 1000})] {
        let e = bw(bad).unwrap_err();
        assert_eq!(e.code, E_INVALID_CONFIG);
        assert!(e.msg.contains("runtimeConfig.bandwidth"), "{e}");
    }
    assert!(bw(json!({"ingressRate": 200_000_000_000u64, "ingressBurst": 1})).is_err());
}

/// DEL with the daemon stopped (`podman rm` while uvs is down) still releases the IPAM lease,
/// else the address leaks for good; the error (code 100) names the uvs port it could not
/// remove and how to remove it.
#[test]
fn del_without_the_daemon_still_releases_the_lease() {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("uvs-cni-unit-ipam-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let calls = dir.join("calls");
    let _ = std::fs::remove_file(&calls);
    let plugin = dir.join("rec-ipam");
    let script = format!("#!/bin/sh\necho \"$CNI_COMMAND\" >> {}\n", calls.display());
    std::fs::write(&plugin, script).unwrap();
    std::fs::set_permissions(&plugin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut e = env("DEL");
    let path = dir.to_string_lossy().into_owned();
    e[4] = ("CNI_PATH", &path);
    let (v, rc) = invoke(&e, &conf(json!({"ipam": {"type": "rec-ipam"}})));
    assert_eq!((rc, v["code"].as_u64()), (1, Some(u64::from(E_UVS))), "{v}");
    let host = Env::from_vars(&vars(&e)).unwrap().host_ifname();
    let text = format!("{} {}", v["msg"], v["details"]);
    assert!(text.contains(&format!("del-port n1 {host}")), "{v}");
    let ran = std::fs::read_to_string(&calls).unwrap_or_default();
    assert_eq!(ran.trim(), "DEL", "the IPAM plugin's DEL must run");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `portType` picks the uvs port type of the host end: afpacket unless the config says afxdp;
/// anything else is refused naming the field.
#[test]
fn port_type_defaults_to_afpacket_and_names_a_bad_value() {
    let t = |extra: Value| NetConf::parse(&conf(extra)).map(|c| c.port_type().to_string());
    assert_eq!(t(json!({})).unwrap(), "afpacket");
    assert_eq!(t(json!({"portType": "system"})).unwrap(), "afpacket");
    assert_eq!(t(json!({"portType": "afxdp"})).unwrap(), "afxdp");
    let e = t(json!({"portType": "tap"})).unwrap_err();
    assert_eq!(e.code, E_INVALID_CONFIG);
    assert!(e.msg.starts_with("portType: 'tap'"), "{e}");
}

/// `runtimeConfig.mac` is parsed as a `wire::MacAddr` (see `ops::setup_container`): six hex
/// bytes; a wrong count or digit is refused.
#[test]
fn mac_strings_parse_as_mac_addr() {
    use crate::wire::MacAddr;
    assert_eq!(
        "02:00:00:00:36:01".parse::<MacAddr>(),
        Ok(MacAddr([2, 0, 0, 0, 0x36, 1]))
    );
    assert!("02:00:00:00:36".parse::<MacAddr>().is_err());
    assert!("zz:00:00:00:36:01".parse::<MacAddr>().is_err());
}

/// CHECK passes a container's port only when `show` says it is `up`: a pending one (its veth
/// missing or not opened), a `down` or `gone` one cut the container off, and the error names
/// the state. DEL removes a port it named in any state, a pending one too.
#[test]
fn only_an_up_port_passes_check() {
    let b = json!({"name": "n1", "ports": [
        {"name": "uv0123456789ab", "state": "up"},
        {"name": "uvaaaaaaaaaaaa", "state": "pending"},
        {"name": "uvcccccccccccc", "state": "down"},
        {"name": "uvdddddddddddd", "state": "gone"},
    ]});
    let verdict = |p: &str| super::ops::port_is_up("n1", p, super::ops::port_state(&b, p));
    assert_eq!(verdict("uv0123456789ab"), Ok(()));
    for (p, s) in [
        ("uvaaaaaaaaaaaa", "pending"),
        ("uvcccccccccccc", "down"),
        ("uvdddddddddddd", "gone"),
    ] {
        let e = verdict(p).unwrap_err();
        assert!(e.contains(p) && e.contains(&format!("is {s}")), "{e}");
    }
    assert!(
        verdict("uvbbbbbbbbbbbb")
            .unwrap_err()
            .contains("has no port")
    );
    assert_eq!(
        super::ops::port_state(&b, "uvaaaaaaaaaaaa"),
        Some("pending")
    );
    assert_eq!(super::ops::port_state(&b, "uvbbbbbbbbbbbb"), None);
}

/// CHECK compares the container interface's MAC with the result's sandbox interface entry
/// (not the host end's, of the same result).
#[test]
fn check_takes_the_mac_of_the_sandbox_interface() {
    let r = json!({"interfaces": [
        {"name": "uv0123456789ab", "mac": "02:00:00:00:00:01"},
        {"name": "eth0", "mac": "02:00:00:00:00:02", "sandbox": "/run/netns/x"},
    ]});
    assert_eq!(
        super::ops::sandbox_mac(&r, "eth0"),
        Some("02:00:00:00:00:02")
    );
    assert_eq!(super::ops::sandbox_mac(&r, "uv0123456789ab"), None);
    assert_eq!(super::ops::sandbox_mac(&r, "eth1"), None);
}

/// An error's `msg` says what failed and why (it was the bare sub-command, "uvs show "),
/// `details` keep the request; never a lone space.
#[test]
fn uvs_errors_say_why_in_msg() {
    let mut e = env("DEL");
    e.retain(|(k, _)| *k != "CNI_NETNS");
    let (v, rc) = invoke(&e, &conf(json!({})));
    assert_eq!((rc, v["code"].as_u64()), (1, Some(u64::from(E_UVS))), "{v}");
    let msg = v["msg"].as_str().unwrap();
    assert!(msg.starts_with("uvs show: cannot connect to "), "{v}");
    let details = v["details"].as_str().unwrap();
    assert!(details.starts_with("uvs ctl show: cannot connect"), "{v}");
}

/// An IPAM plugin's own error is passed through with its code (the spec's delegation rule:
/// host-local's are 999), its message prefixed; one without error JSON is 101 with what it
/// printed. The details are never a lone space.
#[test]
fn ipam_errors_pass_through_with_their_code() {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("uvs-cni-unit-ipamerr-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let plugin = |name: &str, body: &str| {
        let p = dir.join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\nexit 1\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    };
    plugin(
        "full-ipam",
        r#"echo '{"code": 999, "msg": "no IP addresses available"}'"#,
    );
    plugin(
        "loud-ipam",
        r#"echo '{"code": 11, "msg": "busy", "details": "d"}'; echo oops >&2"#,
    );
    plugin("mute-ipam", "echo boom >&2");
    let path = dir.to_string_lossy().into_owned();
    let mut e = env("ADD");
    e[4] = ("CNI_PATH", &path);
    let run = |t: &str| invoke(&e, &conf(json!({"ipam": {"type": t}}))).0;
    let v = run("full-ipam");
    assert_eq!(v["code"], 999, "{v}");
    assert_eq!(
        v["msg"], "ipam full-ipam ADD: no IP addresses available",
        "{v}"
    );
    assert_eq!(v["details"], "", "{v}");
    let v = run("loud-ipam");
    assert_eq!(
        (v["code"].as_u64(), v["details"].as_str()),
        (Some(11), Some("d; oops")),
        "{v}"
    );
    let v = run("mute-ipam");
    assert_eq!(v["code"].as_u64(), Some(u64::from(E_IPAM)), "{v}");
    assert!(v["msg"].as_str().unwrap().contains("boom"), "{v}");
    assert_eq!(v["details"], "boom", "{v}");
    let _ = std::fs::remove_dir_all(&dir);
}
