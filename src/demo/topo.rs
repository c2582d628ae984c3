//! The demo's topology: two uvs "hosts" and their containers, built with `uvs ctl` commands
//! the narrative prints.
//!
//! ```text
//!  host A (uvs in the root namespace)                        host B (uvs in namespace hostb)
//!  ext  10.99.0.1/24 -- outside 10.99.0.2 (a host "outside": masquerade out, -p 8080:80 in)
//!  net1 10.99.1.1/24 isolated -- c1 .2 (web server), c2 .3     net1 (L2) -- c4 10.99.1.4
//!       vx42 vxlan vni 42 ...................................... vx42
//!  net2 10.99.2.1/24 isolated -- c3 .2 (TAP port)
//!  DNS names: `web` (c1) on net1, `db` (c3) on net2, answered by each network's gateway
//!  ul   10.99.9.1/24 (underlay, local VTEP) -- veth -- ulb 10.99.9.2/24 (host B's VTEP)
//! ```

use super::sys::{Cleanup, Host, run_cmd};

/// Host A's uplink gateway: where published ports live.
pub const EXT_GW: &str = "10.99.0.1";
/// The host "outside", beyond host A's uplink.
pub const OUTSIDE: &str = "10.99.0.2";
/// net1's gateway on host A.
pub const NET1_GW: &str = "10.99.1.1";
/// The containers on net1 (c4 on host B), and c3 on net2 with its gateway.
pub const C1: &str = "10.99.1.2";
/// c2 (net1, host A).
pub const C2: &str = "10.99.1.3";
/// c4 (net1, host B, across VXLAN).
pub const C4: &str = "10.99.1.4";
/// c3 (net2, host A, on a TAP port).
pub const C3: &str = "10.99.2.2";
/// net2's gateway.
pub const NET2_GW: &str = "10.99.2.1";
/// The published port on [`EXT_GW`] (`-p 8080:80` to c1).
pub const PUBLISHED: u16 = 8080;
/// What c1's web server answers.
pub const WEB_BODY: &str = "hello from c1, published through uvs\n";

/// Names of this run's namespaces and links (the PID keeps parallel runs apart).
pub struct Names {
    id: u32,
}

impl Names {
    /// Names for this process.
    pub fn new() -> Names {
        Names {
            id: std::process::id() % 10_000,
        }
    }

    /// A namespace: `uvsdemoID-n`.
    pub fn ns(&self, n: &str) -> String {
        format!("uvsdemo{}-{n}", self.id)
    }

    /// A link: `udIDn` (at most 15 characters).
    pub fn link(&self, n: &str) -> String {
        format!("ud{}{n}", self.id)
    }

    /// A control socket.
    pub fn socket(&self, host: &str) -> std::path::PathBuf {
        std::env::temp_dir().join(format!("uvs-demo-{}-{host}.sock", self.id))
    }
}

/// One container: a namespace whose `eth0` is a veth whose other end, `link`, stays in the
/// root namespace or moves into `host_ns` (host B's namespace).
pub struct Container<'a> {
    /// Namespace.
    pub ns: &'a str,
    /// Host end of the veth.
    pub link: &'a str,
    /// Address with prefix length.
    pub addr: &'a str,
    /// Default route via.
    pub gw: Option<&'a str>,
    /// MTU of eth0 (1450 on VXLAN-extended networks).
    pub mtu: u32,
    /// Namespace the host end goes to (None: the root namespace).
    pub host_ns: Option<&'a str>,
}

/// Makes a namespace (recorded for cleanup) with loopback up.
pub fn netns(c: &mut Cleanup, ns: &str) -> Result<(), String> {
    run_cmd(&["ip", "netns", "add", ns])?;
    c.namespaces.push(ns.to_string());
    run_cmd(&["ip", "-n", ns, "link", "set", "lo", "up"])?;
    Ok(())
}

/// Makes container `k` (namespace, veth, address, MTU, route).
pub fn container(c: &mut Cleanup, k: &Container) -> Result<(), String> {
    netns(c, k.ns)?;
    run_cmd(&[
        "ip", "link", "add", k.link, "type", "veth", "peer", "name", "eth0", "netns", k.ns,
    ])?;
    c.links.push(k.link.to_string());
    match k.host_ns {
        Some(h) => {
            run_cmd(&["ip", "link", "set", k.link, "netns", h])?;
            run_cmd(&["ip", "-n", h, "link", "set", k.link, "up"])?;
        }
        None => {
            run_cmd(&["ip", "link", "set", k.link, "up"])?;
        }
    }
    let mtu = k.mtu.to_string();
    run_cmd(&["ip", "-n", k.ns, "link", "set", "eth0", "mtu", &mtu, "up"])?;
    run_cmd(&["ip", "-n", k.ns, "addr", "add", k.addr, "dev", "eth0"])?;
    if let Some(gw) = k.gw {
        run_cmd(&["ip", "-n", k.ns, "route", "add", "default", "via", gw])?;
    }
    Ok(())
}

/// Host A: the uplink with the outside host, two isolated networks with gateways (c1 and c2 on
/// AF_XDP ports, c3 on a TAP port uvs creates), masquerade, `-p 8080:80` to c1 and the DNS
/// names `web` (c1, net1) and `db` (c3, net2).
pub fn host_a(a: &Host, n: &Names, c: &mut Cleanup) -> Result<(), String> {
    println!("\n== host A: an uplink and two container networks with gateways ==");
    a.ctl(&["add-br", "ext", &format!("gateway={EXT_GW}/24")])?;
    a.ctl(&[
        "add-br",
        "net1",
        &format!("gateway={NET1_GW}/24"),
        "isolated=on",
    ])?;
    a.ctl(&[
        "add-br",
        "net2",
        &format!("gateway={NET2_GW}/24"),
        "isolated=on",
    ])?;
    let (out, c1, c2) = (n.ns("outside"), n.ns("c1"), n.ns("c2"));
    let outside = Container {
        ns: &out,
        link: &n.link("o"),
        addr: &format!("{OUTSIDE}/24"),
        gw: None,
        mtu: 1500,
        host_ns: None,
    };
    container(c, &outside)?;
    a.ctl(&["add-port", "ext", outside.link, "type=afxdp"])?;
    for (ns, link, ip) in [(&c1, n.link("c1"), C1), (&c2, n.link("c2"), C2)] {
        let k = Container {
            ns,
            link: &link,
            addr: &format!("{ip}/24"),
            gw: Some(NET1_GW),
            mtu: 1450,
            host_ns: None,
        };
        container(c, &k)?;
        a.ctl(&["add-port", "net1", &link, "type=afxdp"])?;
    }
    let (c3, tap) = (n.ns("c3"), n.link("c3"));
    netns(c, &c3)?;
    a.ctl(&["add-port", "net2", &tap, "type=tap"])?;
    run_cmd(&["ip", "link", "set", &tap, "netns", &c3])?;
    run_cmd(&[
        "ip",
        "-n",
        &c3,
        "addr",
        "add",
        &format!("{C3}/24"),
        "dev",
        &tap,
    ])?;
    run_cmd(&["ip", "-n", &c3, "link", "set", &tap, "up"])?;
    run_cmd(&["ip", "-n", &c3, "route", "add", "default", "via", NET2_GW])?;
    a.ctl(&["nat-add", "masquerade", "src=10.99.1.0/24", "out=ext"])?;
    a.ctl(&["nat-add", "masquerade", "src=10.99.2.0/24", "out=ext"])?;
    let to = format!("to={C1}:80");
    let port = format!("port={PUBLISHED}");
    a.ctl(&["nat-add", "dnat", "in=ext", "proto=tcp", &port, &to])?;
    a.ctl(&["dns-add", "net1", "web", C1])?;
    a.ctl(&["dns-add", "net2", "db", C3])?;
    Ok(())
}

/// Host B and the overlay: an underlay veth between the hosts' VTEP bridges, net1 extended to
/// host B by VXLAN (vni 42), and c4 on host B's net1.
pub fn host_b(a: &Host, b: &Host, n: &Names, c: &mut Cleanup) -> Result<(), String> {
    println!("\n== host B: a second uvs, net1 extended to it over VXLAN ==");
    let hb = n.ns("hostb");
    let (ua, ub) = (n.link("ua"), n.link("ub"));
    run_cmd(&[
        "ip", "link", "add", &ua, "type", "veth", "peer", "name", &ub, "netns", &hb,
    ])?;
    c.links.push(ua.clone());
    run_cmd(&["ip", "link", "set", &ua, "up"])?;
    run_cmd(&["ip", "-n", &hb, "link", "set", &ub, "up"])?;
    a.ctl(&["add-br", "ul", "gateway=10.99.9.1/24"])?;
    a.ctl(&["add-port", "ul", &ua, "type=afxdp"])?;
    // Another name than host A's `ul`: the gateway MAC derives from the bridge name and the
    // host id, which both daemons share on this one machine.
    b.ctl(&["add-br", "ulb", "gateway=10.99.9.2/24"])?;
    b.ctl(&["add-port", "ulb", &ub, "type=afxdp"])?;
    b.ctl(&["add-br", "net1"])?;
    let vx = |local: &str, remote: &str| {
        [
            "add-port".to_string(),
            "net1".into(),
            "vx42".into(),
            "type=vxlan".into(),
            "vni=42".into(),
            format!("local_ip={local}"),
            format!("remote_ip={remote}"),
        ]
    };
    let va = vx("10.99.9.1", "10.99.9.2");
    a.ctl(&va.iter().map(String::as_str).collect::<Vec<_>>())?;
    let vb = vx("10.99.9.2", "10.99.9.1");
    b.ctl(&vb.iter().map(String::as_str).collect::<Vec<_>>())?;
    let (c4, l4) = (n.ns("c4"), n.link("c4"));
    let k = Container {
        ns: &c4,
        link: &l4,
        addr: &format!("{C4}/24"),
        gw: Some(NET1_GW),
        mtu: 1450,
        host_ns: Some(&hb),
    };
    container(c, &k)?;
    b.ctl(&["add-port", "net1", &l4, "type=afxdp"])?;
    Ok(())
}
