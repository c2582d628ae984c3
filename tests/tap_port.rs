//! TAP port against the kernel: create a TAP device, move it into a network namespace, and
//! exchange frames with the namespace's IP stack (ping). Needs root; skips otherwise.

use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use uvs::packet::{Desc, Frames};
use uvs::port::tap::{TapError, TapOptions, TapPort};
use uvs::port::{Port, PortKind};

const PEER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x20];
const NS_ADDR: &str = "192.0.2.10/24";
const PEER_IP: &str = "192.0.2.20";

/// Effective uid 0, read from /proc (no unsafe in tests).
fn is_root() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1).map(|e| e == "0"))
        .unwrap_or(false)
}

macro_rules! need_root {
    () => {
        if !is_root() {
            println!("SKIP: needs root");
            return;
        }
    };
}

/// Run a command; return (success, stdout + stderr).
fn run(args: &[&str]) -> (bool, String) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    let mut s = String::from_utf8_lossy(&out.stdout).into_owned();
    s.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), s)
}

fn must(args: &[&str]) -> String {
    let (ok, s) = run(args);
    assert!(ok, "{args:?} failed: {s}");
    s
}

/// A unique name for this test process: `tpt<pid><tag>` (at most 15 bytes).
fn name(tag: &str) -> String {
    let n = format!("tpt{}{tag}", std::process::id());
    assert!(n.len() <= 15);
    n
}

/// A network namespace deleted on drop.
struct Netns(String);

impl Netns {
    fn new(name: String) -> Netns {
        let _ = run(&["ip", "netns", "del", &name]);
        must(&["ip", "netns", "add", &name]);
        Netns(name)
    }

    fn exec(&self, args: &[&str]) -> (bool, String) {
        let mut v = vec!["ip", "netns", "exec", &self.0];
        v.extend_from_slice(args);
        run(&v)
    }

    fn must(&self, args: &[&str]) -> String {
        let (ok, s) = self.exec(args);
        assert!(ok, "in {}: {args:?} failed: {s}", self.0);
        s
    }

    fn spawn(&self, args: &[&str]) -> Child {
        Command::new("ip")
            .args(["netns", "exec", &self.0])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// Move `dev` here, then [`Netns::setup`] it.
    fn take(&self, dev: &str) {
        must(&["ip", "link", "set", dev, "netns", &self.0]);
        self.setup(dev, None);
    }

    /// Address `dev` (already here), bring it up, add the static peer neighbour.
    fn setup(&self, dev: &str, mtu: Option<u32>) {
        self.must(&["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"]);
        self.must(&["ip", "addr", "add", NS_ADDR, "dev", dev]);
        if let Some(m) = mtu {
            self.must(&["ip", "link", "set", dev, "mtu", &m.to_string()]);
        }
        self.must(&["ip", "link", "set", dev, "up"]);
        self.must(&[
            "ip",
            "neigh",
            "add",
            PEER_IP,
            "lladdr",
            "02:00:00:00:00:20",
            "dev",
            dev,
            "nud",
            "permanent",
        ]);
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = run(&["ip", "netns", "del", &self.0]);
    }
}

/// A link deleted on drop.
struct Link(String);

impl Drop for Link {
    fn drop(&mut self) {
        let _ = run(&["ip", "link", "del", &self.0]);
    }
}

fn link_exists(dev: &str) -> bool {
    run(&["ip", "link", "show", dev]).0
}

/// True once `dev` is gone, within 2 s: closing a TAP's last fd unregisters the device, but the
/// kernel may finish that after `close` returns (seen with a busy machine).
fn link_gone(dev: &str) -> bool {
    let until = std::time::Instant::now() + Duration::from_secs(2);
    while link_exists(dev) {
        if std::time::Instant::now() > until {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

/// Poll the port until a frame matching `pred` arrives (other frames are discarded).
fn recv_until(
    port: &mut TapPort,
    frames: &mut Frames,
    timeout: Duration,
    pred: impl Fn(&[u8]) -> bool,
) -> Option<Vec<u8>> {
    let deadline = Instant::now() + timeout;
    let mut out = Vec::with_capacity(32);
    while Instant::now() < deadline {
        port.rx_burst(frames, &mut out, 32);
        let mut found = None;
        for d in out.drain(..) {
            let bytes = frames.data(d).to_vec();
            frames.free(d.addr);
            if found.is_none() && pred(&bytes) {
                found = Some(bytes);
            }
        }
        if found.is_some() {
            return found;
        }
        sleep(Duration::from_millis(1));
    }
    None
}

fn is_echo_request_to_peer(f: &[u8]) -> bool {
    f.len() >= 14 + 20 + 8
        && f[..6] == PEER_MAC
        && f[12..14] == [0x08, 0x00]
        && f[14 + 9] == 1
        && f[14 + ((f[14] & 0x0f) as usize) * 4] == 8
}

fn csum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for c in data.chunks(2) {
        let w = if c.len() == 2 {
            u16::from_be_bytes([c[0], c[1]])
        } else {
            u16::from(c[0]) << 8
        };
        sum += u32::from(w);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Turn an Ethernet/IPv4/ICMP echo request into the echo reply from its destination.
fn echo_reply(req: &[u8]) -> Vec<u8> {
    let mut f = req.to_vec();
    let (dst, src) = (req[0..6].to_vec(), req[6..12].to_vec());
    f[0..6].copy_from_slice(&src);
    f[6..12].copy_from_slice(&dst);
    let ihl = ((f[14] & 0x0f) as usize) * 4;
    let ip = 14..14 + ihl;
    let (s, d) = (req[26..30].to_vec(), req[30..34].to_vec());
    f[26..30].copy_from_slice(&d);
    f[30..34].copy_from_slice(&s);
    f[14 + 8] = 64;
    f[24..26].fill(0);
    let c = csum(&f[ip.clone()]);
    f[24..26].copy_from_slice(&c.to_be_bytes());
    let tot = u16::from_be_bytes([f[16], f[17]]) as usize;
    let icmp = ip.end..14 + tot;
    f[icmp.start] = 0;
    f[icmp.start + 2..icmp.start + 4].fill(0);
    let c = csum(&f[icmp.clone()]);
    f[icmp.start + 2..icmp.start + 4].copy_from_slice(&c.to_be_bytes());
    f
}

fn tx_one(port: &mut TapPort, frames: &mut Frames, bytes: &[u8]) -> uvs::port::TxResult {
    let mut d: Desc = frames.alloc().unwrap();
    d.len = bytes.len() as u32;
    frames.data_mut(d).copy_from_slice(bytes);
    let mut batch = vec![d];
    let r = port.tx_burst(frames, &mut batch);
    assert!(batch.is_empty());
    r
}

#[test]
fn ping_through_tap_in_another_namespace() {
    need_root!();
    let dev = name("a");
    let ns = Netns::new(name("n"));
    let mut frames = Frames::new(256).unwrap();
    let mut port = TapPort::create(&dev, 7, &TapOptions::default()).unwrap();
    assert_eq!(port.kind(), PortKind::Tap);
    assert_eq!(port.mtu(), 1500);
    assert!(!port.attached());
    assert!(
        port.details()
            .starts_with(&format!("ifindex={} mtu=1500", port.ifindex()))
    );
    let mut fds = Vec::new();
    port.poll_fds(&mut fds);
    assert_eq!(fds.len(), 1);
    assert!(
        must(&["ip", "link", "show", &dev]).contains(",UP"),
        "link is up"
    );

    ns.take(&dev);
    assert!(!link_exists(&dev), "moved out of this namespace");

    let mut ping = ns.spawn(&["ping", "-c", "1", "-W", "2", PEER_IP]);
    let req = recv_until(
        &mut port,
        &mut frames,
        Duration::from_secs(5),
        is_echo_request_to_peer,
    );
    let Some(req) = req else {
        let _ = ping.kill();
        panic!(
            "no ICMP echo request to {PEER_IP} read from the TAP fd; stats {:?}",
            port.stats()
        );
    };
    assert_eq!(
        frames.free_count(),
        256,
        "received frames were all returned"
    );
    let r = tx_one(&mut port, &mut frames, &echo_reply(&req));
    assert_eq!((r.sent, r.dropped), (1, 0), "{:?}", port.stats());
    assert_eq!(r.bytes, req.len() as u64);
    assert_eq!(
        frames.free_count(),
        256,
        "transmitted frame returned to the pool"
    );
    let out = ping.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "ping failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let st = port.stats();
    assert!(
        st.rx_packets >= 1 && st.tx_packets == 1 && st.tx_dropped == 0,
        "{st:?}"
    );
    let link = ns.must(&["ip", "-s", "link", "show", &dev]);
    println!("stats {st:?}\n{link}");

    // Closing the fd removes the (non-persistent) device, wherever it is.
    port.close(&mut frames);
    assert_eq!(port.fd(), None);
    assert!(port.details().ends_with(" closed"));
    assert!(
        !ns.exec(&["ip", "link", "show", &dev]).0,
        "device gone after close"
    );
    assert_eq!(tx_one(&mut port, &mut frames, &req).dropped, 1);
    assert_eq!(frames.free_count(), 256);
}

#[test]
fn link_down_oversize_and_deleted_device_are_counted() {
    need_root!();
    let dev = name("b");
    let ns = Netns::new(name("m"));
    let mut frames = Frames::new(64).unwrap();
    let mut port = TapPort::create(&dev, 1, &TapOptions::default()).unwrap();
    must(&["ip", "link", "set", &dev, "netns", &ns.0]);

    // Moving the device took its link down: writes fail at once (no blocking) and are dropped.
    let mut frame = vec![0u8; 60];
    frame[..6].copy_from_slice(&[0xff; 6]);
    frame[6..12].copy_from_slice(&PEER_MAC);
    frame[12..14].copy_from_slice(&[0x08, 0x00]);
    let t = Instant::now();
    let r = tx_one(&mut port, &mut frames, &frame);
    assert_eq!((r.sent, r.dropped), (0, 1));
    assert!(t.elapsed() < Duration::from_secs(1), "a blocked write");
    let st = port.stats();
    println!("down: {st:?}");
    assert_eq!((st.tx_dropped, st.tx_errors), (1, 0), "{st:?}");
    assert_eq!(st.last_errno, libc::EIO);
    // Reading a down device: at most what the kernel queued while the link was up in this
    // namespace (IPv6 autoconfiguration), then EAGAIN, which is not an error.
    let mut out = Vec::new();
    port.rx_burst(&mut frames, &mut out, 32);
    for d in out.drain(..) {
        frames.free(d.addr);
    }
    assert_eq!(port.rx_burst(&mut frames, &mut out, 32), 0);
    assert_eq!(port.stats().rx_errors, 0, "EAGAIN is not an error");

    // Up in the namespace with an MTU larger than a frame: an oversize frame is dropped, not
    // truncated, and the next frame is still read.
    ns.setup(&dev, Some(4000));
    let (ok, s) = ns.exec(&["ping", "-c", "1", "-W", "1", "-s", "3000", PEER_IP]);
    assert!(!ok, "nobody answers: {s}");
    let (ok, s) = ns.exec(&["ping", "-c", "1", "-W", "1", "-s", "100", PEER_IP]);
    assert!(!ok, "nobody answers: {s}");
    let small = recv_until(
        &mut port,
        &mut frames,
        Duration::from_secs(2),
        is_echo_request_to_peer,
    )
    .expect("the small echo request is read after the oversize one");
    assert_eq!(small.len(), 14 + 20 + 8 + 100);
    let st = port.stats();
    println!("oversize: {st:?}");
    assert_eq!(st.rx_oversize, 1, "{st:?}");
    assert_eq!(frames.free_count(), 64);

    // A frame shorter than an Ethernet header is refused by the kernel.
    let r = tx_one(&mut port, &mut frames, &frame[..10]);
    assert_eq!(r.dropped, 1);
    println!("runt tx: {:?}", port.stats());

    // Deleting the namespace deletes the device; the fd stays open but is dead.
    drop(ns);
    let deadline = Instant::now() + Duration::from_secs(3);
    while port.rx_burst(&mut frames, &mut out, 32) == 0 && port.stats().rx_errors == 0 {
        assert!(
            Instant::now() < deadline,
            "no error after the device was deleted"
        );
        sleep(Duration::from_millis(10));
    }
    for d in out.drain(..) {
        frames.free(d.addr);
    }
    let st = port.stats();
    println!("deleted: {st:?}");
    assert_eq!(st.last_errno, libc::EBADFD, "{st:?}");
    let r = tx_one(&mut port, &mut frames, &frame);
    assert_eq!(r.dropped, 1);
    assert_eq!(frames.free_count(), 64);
}

#[test]
fn mtu_option_and_drop_removes_device() {
    need_root!();
    let dev = name("c");
    {
        let port = TapPort::create(
            &dev,
            2,
            &TapOptions {
                mtu: Some(1400),
                ..TapOptions::default()
            },
        )
        .unwrap();
        assert_eq!(port.mtu(), 1400);
        let s = must(&["ip", "link", "show", &dev]);
        assert!(s.contains("mtu 1400") && s.contains(",UP"), "{s}");
        assert!(port.details().contains("mtu=1400"));
    }
    assert!(link_gone(&dev), "device removed when the port is dropped");
}

#[test]
fn existing_tap_is_attached_and_non_tap_is_refused() {
    need_root!();
    let dummy = name("d");
    let _g = Link(dummy.clone());
    // (A veth: the dummy driver is not built on every kernel.)
    must(&[
        "ip",
        "link",
        "add",
        &dummy,
        "type",
        "veth",
        "peer",
        "name",
        &name("f"),
    ]);
    let e = TapPort::create(&dummy, 3, &TapOptions::default()).unwrap_err();
    assert!(matches!(e, TapError::NotTap { .. }), "{e}");
    assert!(e.to_string().contains(&dummy), "{e}");
    println!("{e}");

    let tap = name("e");
    let _g2 = Link(tap.clone());
    must(&["ip", "tuntap", "add", "dev", &tap, "mode", "tap"]);
    {
        let port = TapPort::create(&tap, 4, &TapOptions::default()).unwrap();
        assert!(port.attached());
        assert!(port.details().ends_with(" attached"));
        // A second open of the same single-queue device is refused, with the errno named.
        let e = TapPort::create(&tap, 5, &TapOptions::default()).unwrap_err();
        println!("{e}");
        assert!(
            e.to_string().contains(&tap) && e.to_string().contains("EBUSY"),
            "{e}"
        );
    }
    assert!(
        link_exists(&tap),
        "a persistent device made by someone else stays"
    );
}
