//! The Faucet controller (1.10.12 with os-ken 3.1.0, installed by scripts/setup.sh into
//! /opt/uvs/faucet-venv) drives a uvs bridge as its datapath `dp_id` over OpenFlow 1.3: two
//! VLANs on untagged ports, hosts in one VLAN ping each other, the host in the other VLAN
//! (same subnet, so a leak would be answered) reaches neither, and `dump-flows` shows the
//! multi-table pipeline Faucet installed, with the hosts it learned from packet-ins.
//! Root (network namespaces) and the venv are required; otherwise the test says why it skips.
//! Faucet listens on 127.0.0.1 only; its logs go to a temp dir and are printed on failure.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::netns::*;

const VENV: &str = "/opt/uvs/faucet-venv";

/// A running Faucet, stopped by its own PID when dropped; its logs are in `dir`.
struct Faucet {
    child: Child,
    dir: PathBuf,
}

impl Drop for Faucet {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Faucet {
    fn start(dir: &Path, of_port: u16) -> Faucet {
        let yaml = "vlans:\n  office:\n    vid: 100\n  guest:\n    vid: 200\n\
                    dps:\n  uvs1:\n    dp_id: 0xa1\n    hardware: \"Open vSwitch\"\n    interfaces:\n\
                    \x20     1:\n        native_vlan: office\n\
                    \x20     2:\n        native_vlan: office\n\
                    \x20     3:\n        native_vlan: guest\n";
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("faucet.yaml"), yaml).unwrap();
        let path = format!("{VENV}/bin:{}", std::env::var("PATH").unwrap_or_default());
        let out = std::fs::File::create(dir.join("faucet.out")).unwrap();
        let child = Command::new(format!("{VENV}/bin/faucet"))
            .args(["--ryu-ofp-listen-host", "127.0.0.1"])
            .args(["--ryu-ofp-tcp-listen-port", &of_port.to_string()])
            .current_dir(dir)
            .env("PATH", path)
            .env("FAUCET_CONFIG", dir.join("faucet.yaml"))
            .env("FAUCET_LOG", dir.join("faucet.log"))
            .env("FAUCET_EXCEPTION_LOG", dir.join("faucet-exception.log"))
            .env("FAUCET_PROMETHEUS_ADDR", "127.0.0.1")
            .env("FAUCET_PROMETHEUS_PORT", free_port().to_string())
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("start faucet");
        Faucet {
            child,
            dir: dir.to_path_buf(),
        }
    }

    fn logs(&self) -> String {
        ["faucet.log", "faucet-exception.log", "faucet.out"]
            .iter()
            .map(|f| {
                let t = std::fs::read_to_string(self.dir.join(f)).unwrap_or_default();
                format!("--- {f}\n{t}")
            })
            .collect()
    }
}

#[test]
fn faucet_drives_two_vlans_on_a_uvs_bridge() {
    if !root_or_skip("faucet_drives_two_vlans_on_a_uvs_bridge") {
        return;
    }
    if !Path::new(&format!("{VENV}/bin/faucet")).exists() {
        eprintln!("skipped: Faucet is not installed in {VENV} (scripts/setup.sh installs it)");
        return;
    }
    let p = prefix("fc");
    let n = |s: &str| format!("{p}{s}");
    let mut t = Topology::default();
    let d = Daemon::start(&p, &[]);
    d.ctl(&["add-br", "br0", "datapath_id=0xa1"]);
    // h1, h2 in VLAN office (ports 1, 2); h3 in VLAN guest (port 3), same subnet.
    for (i, h) in ["h1", "h2", "h3"].iter().enumerate() {
        t.container(
            &n(h),
            &n(&format!("p{h}")),
            &format!("10.0.51.{}/24", i + 1),
        );
        d.ctl(&[
            "add-port",
            "br0",
            &n(&format!("p{h}")),
            "type=afxdp",
            &format!("ofport_request={}", i + 1),
        ]);
    }
    let of_port = free_port();
    let f = Faucet::start(
        &std::env::temp_dir().join(format!("uvs-faucet-{}", std::process::id())),
        of_port,
    );
    d.ctl(&["set-controller", "br0", &format!("tcp:127.0.0.1:{of_port}")]);
    // Faucet programs the VLAN table for every port it sees up.
    let end = Instant::now() + Duration::from_secs(60);
    loop {
        let dump = d.ctl(&["dump-flows", "br0"]);
        if (1..=3).all(|i| dump.contains(&format!("in_port={i},"))) {
            break;
        }
        assert!(
            Instant::now() < end,
            "Faucet did not program the ports:\n{dump}\n{}\n{}",
            d.ctl(&["show"]),
            f.logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let ok = (0..5).any(|_| ping(&n("h1"), "10.0.51.2", 3));
    let dump = d.ctl(&["dump-flows", "br0"]);
    assert!(ok, "h1 -> h2 (office)\n{dump}\n{}", f.logs());
    assert!(
        !ping(&n("h3"), "10.0.51.1", 3) && !ping(&n("h1"), "10.0.51.3", 3),
        "guest must not reach office\n{}",
        d.ctl(&["dump-flows", "br0"])
    );
    assert!(ping(&n("h2"), "10.0.51.1", 3), "h2 -> h1 (office)");
    let dump = d.ctl(&["dump-flows", "br0"]);
    eprintln!("{dump}");
    // The pipeline: VLAN (0), eth_src (1), eth_dst (2), flood (3), with gotos, VLAN push/pop,
    // packet-ins for learning, and the hosts Faucet learned from them.
    for want in [
        "table=0,",
        "table=1,",
        "table=2,",
        "table=3,",
        "goto_table:1",
        "push_vlan:0x8100",
        "strip_vlan",
        "CONTROLLER:",
    ] {
        assert!(dump.contains(want), "'{want}' not in:\n{dump}");
    }
    let h2 = t.mac(&n("h2"), "eth0");
    assert!(
        dump.lines()
            .any(|l| l.contains("table=2,") && l.contains(&h2)),
        "h2 ({h2}) learned in the eth_dst table:\n{dump}"
    );
    let logs = f.logs();
    assert!(
        !logs.contains("OFError"),
        "Faucet saw OpenFlow errors:\n{logs}"
    );
}
