//! The Faucet controller (1.10.12 with os-ken 3.1.0, installed by scripts/setup.sh into
//! /opt/uvs/faucet-venv) drives a uvs bridge as its datapath `dp_id` over OpenFlow 1.3: two
//! VLANs on untagged ports, hosts in one VLAN ping each other, the host in the other VLAN
//! (same subnet, so a leak would be answered) reaches neither, and `dump-flows` shows the
//! multi-table pipeline Faucet installed, with the hosts it learned from packet-ins.
//! A learning switch in the shape of Ryu's `simple_switch_13`, run by os-ken's
//! `osken-manager`, floods by PACKET_OUT(FLOOD) and installs its learned flows.
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

/// A learning switch in the shape of Ryu's `simple_switch_13` (the classic OpenFlow tutorial
/// app), run by os-ken's `osken-manager` from the same venv.
const LEARNING_SWITCH: &str = r#"
from os_ken.base import app_manager
from os_ken.controller import ofp_event
from os_ken.controller.handler import CONFIG_DISPATCHER, MAIN_DISPATCHER, set_ev_cls
from os_ken.ofproto import ofproto_v1_3
from os_ken.lib.packet import packet, ethernet


class LearningSwitch(app_manager.OSKenApp):
    OFP_VERSIONS = [ofproto_v1_3.OFP_VERSION]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.mac_to_port = {}

    @set_ev_cls(ofp_event.EventOFPSwitchFeatures, CONFIG_DISPATCHER)
    def features(self, ev):
        dp = ev.msg.datapath
        ofp, parser = dp.ofproto, dp.ofproto_parser
        actions = [parser.OFPActionOutput(ofp.OFPP_CONTROLLER, ofp.OFPCML_NO_BUFFER)]
        self.add_flow(dp, 0, parser.OFPMatch(), actions)

    def add_flow(self, dp, priority, match, actions):
        ofp, parser = dp.ofproto, dp.ofproto_parser
        inst = [parser.OFPInstructionActions(ofp.OFPIT_APPLY_ACTIONS, actions)]
        dp.send_msg(parser.OFPFlowMod(datapath=dp, priority=priority, match=match,
                                      instructions=inst))

    @set_ev_cls(ofp_event.EventOFPPacketIn, MAIN_DISPATCHER)
    def packet_in(self, ev):
        msg = ev.msg
        dp = msg.datapath
        ofp, parser = dp.ofproto, dp.ofproto_parser
        in_port = msg.match['in_port']
        eth = packet.Packet(msg.data).get_protocols(ethernet.ethernet)[0]
        table = self.mac_to_port.setdefault(dp.id, {})
        table[eth.src] = in_port
        out_port = table.get(eth.dst, ofp.OFPP_FLOOD)
        actions = [parser.OFPActionOutput(out_port)]
        if out_port != ofp.OFPP_FLOOD:
            match = parser.OFPMatch(in_port=in_port, eth_dst=eth.dst, eth_src=eth.src)
            self.add_flow(dp, 1, match, actions)
        data = msg.data if msg.buffer_id == ofp.OFP_NO_BUFFER else None
        dp.send_msg(parser.OFPPacketOut(datapath=dp, buffer_id=msg.buffer_id,
                                        in_port=in_port, actions=actions, data=data))
        self.logger.info("packet-in %s %s -> %s: port %s", in_port, eth.src, eth.dst, out_port)
"#;

#[test]
fn an_os_ken_learning_switch_drives_a_uvs_bridge() {
    if !root_or_skip("an_os_ken_learning_switch_drives_a_uvs_bridge") {
        return;
    }
    if !Path::new(&format!("{VENV}/bin/osken-manager")).exists() {
        eprintln!("skipped: os-ken is not installed in {VENV} (scripts/setup.sh installs it)");
        return;
    }
    let p = prefix("fk");
    let n = |s: &str| format!("{p}{s}");
    let mut t = Topology::default();
    let d = Daemon::start(&p, &[]);
    d.ctl(&["add-br", "br0"]);
    for (i, h) in ["h1", "h2", "h3"].iter().enumerate() {
        t.container(
            &n(h),
            &n(&format!("p{h}")),
            &format!("10.0.53.{}/24", i + 1),
        );
        d.ctl(&["add-port", "br0", &n(&format!("p{h}")), "type=afxdp"]);
    }
    let dir = std::env::temp_dir().join(format!("uvs-osken-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("learning_switch.py"), LEARNING_SWITCH).unwrap();
    let of_port = free_port();
    let out = std::fs::File::create(dir.join("osken.out")).unwrap();
    let child = Command::new(format!("{VENV}/bin/osken-manager"))
        .args(["--ofp-listen-host", "127.0.0.1"])
        .args(["--ofp-tcp-listen-port", &of_port.to_string()])
        .arg(dir.join("learning_switch.py"))
        .current_dir(&dir)
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .expect("start osken-manager");
    // Stopped by its PID and its files removed when the test ends (or fails).
    let app = Faucet {
        child,
        dir: dir.clone(),
    };
    let log = || std::fs::read_to_string(dir.join("osken.out")).unwrap_or_default();
    d.ctl(&["set-controller", "br0", &format!("tcp:127.0.0.1:{of_port}")]);
    let end = Instant::now() + Duration::from_secs(30);
    while !d.ctl(&["dump-flows", "br0"]).contains("actions=CONTROLLER") {
        assert!(Instant::now() < end, "no table-miss flow:\n{}", log());
        std::thread::sleep(Duration::from_millis(200));
    }
    // ARP is flooded by the controller's PACKET_OUT(FLOOD); then it installs the pair's flows.
    let ok = (0..5).any(|_| ping(&n("h1"), "10.0.53.2", 2));
    let dump = d.ctl(&["dump-flows", "br0"]);
    assert!(
        ok,
        "h1 -> h2 through the learning switch\n{dump}\n{}",
        log()
    );
    assert!(ping(&n("h3"), "10.0.53.1", 2), "h3 -> h1\n{}", log());
    let (m1, m2) = (t.mac(&n("h1"), "eth0"), t.mac(&n("h2"), "eth0"));
    let dump = d.ctl(&["dump-flows", "br0"]);
    assert!(
        dump.lines()
            .any(|l| l.contains("priority=1") && l.contains(&m2) && l.contains(&m1)),
        "the controller's learned flows:\n{dump}"
    );
    assert!(
        log().contains("port 4294967291"),
        "a flood by packet-out:\n{}",
        log()
    );
    assert!(
        !log().contains("OFPErrorMsg"),
        "OpenFlow errors:\n{}",
        log()
    );
    drop(app);
}
