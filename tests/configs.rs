//! Every file in configs/ parses and validates; the TAP-only one is also applied by a real
//! daemon (root), and a bad config stops the daemon at start with an error naming the problem.

mod common;

use common::netns::*;
use uvs::config::Config;

fn config_files() -> Vec<std::path::PathBuf> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/configs");
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    v.sort();
    v
}

#[test]
fn every_config_file_loads() {
    let files = config_files();
    assert!(files.len() >= 2, "configs/ has examples");
    for f in files {
        let c = Config::load(&f).unwrap_or_else(|e| panic!("{e}"));
        assert!(!c.bridge.is_empty(), "{} defines bridges", f.display());
    }
}

#[test]
fn daemon_applies_tap_config() {
    if !root_or_skip("daemon_applies_tap_config") {
        return;
    }
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/configs/l2.toml");
    let d = Daemon::start("cfg", &["--config", path]);
    let show = d.ctl(&["show"]);
    for want in [
        "bridge br0",
        "bridge br1",
        "uvs-tap0",
        "uvs-tap1",
        "uvs-tap2",
        "type=tap",
    ] {
        assert!(show.contains(want), "{want} in:\n{show}");
    }
    assert!(
        try_sh(&["ip", "link", "show", "uvs-tap2"]),
        "TAP device exists"
    );
    drop(d);
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert!(
        !try_sh(&["ip", "link", "show", "uvs-tap2"]),
        "TAP device removed at exit"
    );
}

#[test]
fn bad_vxlan_port_options_are_refused() {
    for (text, field) in [
        ("vni = \"x\"\nlocal_ip = \"10.0.0.1\"", "vni"),
        ("vni = \"1\"", "local_ip"),
        (
            "vni = \"1\"\nlocal_ip = \"10.0.0.1\"\ncolour = \"red\"",
            "colour",
        ),
    ] {
        let cfg = format!(
            "[[bridge]]\nname = \"b\"\n[[bridge.port]]\nname = \"vx\"\ntype = \"vxlan\"\n{text}\n"
        );
        let e = Config::parse(&cfg).unwrap_err();
        assert!(e.contains(field), "{field}: {e}");
    }
    let e = Config::parse(
        "[[bridge]]\nname = \"b\"\n[[bridge.port]]\nname = \"t\"\ntype = \"tap\"\nvni = \"5\"\n",
    )
    .unwrap_err();
    assert!(e.contains("vni") && e.contains("vxlan"), "{e}");
}

#[test]
fn bad_config_is_refused_at_start() {
    let dir = std::env::temp_dir().join(format!("uvs-badcfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("bad.toml");
    std::fs::write(
        &f,
        "[[bridge]]\nname = \"br0\"\n[[bridge.port]]\nname = \"p\"\ntype = \"tap\"\nvlan = 5000\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_uvs"))
        .args(["run", "--socket"])
        .arg(dir.join("s.sock"))
        .arg("--config")
        .arg(&f)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.toml") && err.contains("vlan"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `flood_rate` in a config file: taken as `add-port` takes it, a bad value refused naming
/// the port and the field.
#[test]
fn flood_rate_is_checked_in_config_files() {
    let cfg = |v: &str| {
        format!(
            "[[bridge]]\nname = \"b\"\n[[bridge.port]]\nname = \"t\"\ntype = \"tap\"\nflood_rate = \"{v}\"\n"
        )
    };
    let c = Config::parse(&cfg("500/50")).unwrap();
    let p = &c.bridge[0].port[0];
    assert_eq!(p.flood_limit().unwrap().describe(), "500/50");
    assert_eq!(
        uvs::config::PortSpec::from_args("t", &["type=tap".into(), "flood_rate=off".into()])
            .unwrap()
            .flood_limit()
            .unwrap()
            .describe(),
        "off"
    );
    let e = Config::parse(&cfg("lots")).unwrap_err();
    assert!(
        e.contains("port 't'") && e.contains("flood_rate: 'lots'"),
        "{e}"
    );
}
