//! The benchmarks' XDP live-frames generator (`uvs bench gen`, `uvs::port::afxdp::xdpgen`),
//! needs root: a veth pair in the root namespace; the frames the generator offers out of one
//! end arrive at the other, byte for byte, while the peer runs NAPI (GRO on), and are dropped
//! (not delivered) while it does not.

use std::process::Command;

use uvs::port::afxdp::xdpgen::{GenError, Generator};

fn run(args: &[&str]) {
    let o = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        o.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

fn rx_packets(dev: &str) -> u64 {
    std::fs::read_to_string(format!("/sys/class/net/{dev}/statistics/rx_packets"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// A veth pair, deleted on drop.
struct Pair(String);

impl Drop for Pair {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", &self.0]).status();
    }
}

/// A raw socket on `dev` that receives frames of EtherType `proto`.
struct Sniffer(std::os::fd::OwnedFd);

impl Sniffer {
    fn new(dev: &str, proto: u16) -> Sniffer {
        use std::os::fd::FromRawFd;
        let name = std::ffi::CString::new(dev).unwrap();
        // SAFETY: `name` is a valid C string for the call.
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
        assert!(ifindex > 0, "{dev}");
        // SAFETY: plain socket(2); the fd is owned right after.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, i32::from(proto.to_be())) };
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        // SAFETY: `fd` is a new descriptor nothing else owns.
        let owned = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
        // SAFETY: an all-zero sockaddr_ll is valid; the fields are set below.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = proto.to_be();
        sll.sll_ifindex = ifindex as i32;
        // SAFETY: `sll` is a valid sockaddr_ll of the size given.
        let r = unsafe {
            libc::bind(
                fd,
                (&sll as *const libc::sockaddr_ll).cast(),
                size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        assert_eq!(r, 0, "bind: {}", std::io::Error::last_os_error());
        let tv = libc::timeval {
            tv_sec: 2,
            tv_usec: 0,
        };
        // SAFETY: `tv` is a valid timeval of the size given.
        let r = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                size_of::<libc::timeval>() as u32,
            )
        };
        assert_eq!(r, 0);
        Sniffer(owned)
    }

    fn recv(&self) -> Vec<u8> {
        use std::os::fd::AsRawFd;
        let mut buf = vec![0u8; 2048];
        // SAFETY: `buf` is writable for its length.
        let n = unsafe { libc::recv(self.0.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        assert!(n > 0, "no frame: {}", std::io::Error::last_os_error());
        buf.truncate(n as usize);
        buf
    }
}

#[test]
fn generated_frames_arrive_at_the_peer_byte_for_byte() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIP: needs root (veth, XDP)");
        return;
    }
    let p = format!("xg{}", std::process::id() % 100_000);
    let (a, b) = (format!("{p}a"), format!("{p}b"));
    run(&["ip", "link", "add", &a, "type", "veth", "peer", "name", &b]);
    let _pair = Pair(a.clone());
    for d in [&a, &b] {
        run(&[
            "sysctl",
            "-qw",
            &format!("net.ipv6.conf.{d}.disable_ipv6=1"),
        ]);
        run(&["ip", "link", "set", d, "up"]);
    }
    // EtherType 0x88b5 (local experimental) to an address that is not b's: nothing answers.
    let mut frame = vec![0x02, 0, 0, 0, 0, 0xb2, 0x02, 0, 0, 0, 0, 0xa1, 0x88, 0xb5];
    frame.extend((0..46u8).map(|i| i.wrapping_mul(7)));
    let g = Generator::new(&a, &frame).unwrap();

    // Without NAPI on the peer (no XDP program, GRO off) a veth takes no XDP frame.
    run(&["ethtool", "-K", &b, "gro", "off"]);
    let before = rx_packets(&b);
    let (offered, _) = g.run(0.1, 64).unwrap();
    assert!(offered > 0);
    assert_eq!(rx_packets(&b), before, "delivered without the peer's NAPI");

    run(&["ethtool", "-K", &b, "gro", "on"]);
    let sniff = Sniffer::new(&b, 0x88b5);
    let before = rx_packets(&b);
    let (offered, took) = g.run(0.2, 64).unwrap();
    assert!(took.as_secs_f64() >= 0.2, "{took:?}");
    let got = rx_packets(&b) - before;
    // A full peer ring may drop some (the generator offers, it does not wait).
    assert!(
        offered > 1000 && got > 0 && got <= offered,
        "offered {offered}, received {got}"
    );
    assert_eq!(sniff.recv(), frame);

    // Bad input is refused with the reason.
    assert!(matches!(
        Generator::new(&a, &frame[..10]),
        Err(GenError::FrameLength(10))
    ));
    assert!(matches!(
        Generator::new(&format!("{p}none"), &frame),
        Err(GenError::NoDevice(_))
    ));
}
