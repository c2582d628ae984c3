//! Runs the fuzz entry points over pseudo-random and mutated inputs on stable Rust, so every
//! `cargo test` exercises what `cargo fuzz` explores longer (see fuzz/README.md).

/// xorshift64*: deterministic, seedable.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// Plausible frames: mostly valid Ethernet (some tagged, some IPv4/UDP) with random corruption,
/// so inputs get past the first checks.
fn frame_like(r: &mut Rng) -> Vec<u8> {
    let len = (r.next() % 120) as usize;
    let mut f = r.bytes(len);
    if f.len() >= 14 && !r.next().is_multiple_of(4) {
        f[0..6].copy_from_slice(&[0x02, 0, 0, 0, 0, (r.next() % 4) as u8]);
        f[6] &= 0xfe;
        match r.next() % 4 {
            0 => f[12..14].copy_from_slice(&[0x81, 0x00]),
            1 => f[12..14].copy_from_slice(&[0x08, 0x00]),
            _ => {}
        }
        if f.len() >= 34 && f[12] == 0x08 {
            f[14] = 0x45;
            f[23] = if r.next().is_multiple_of(2) { 17 } else { 6 };
        }
    }
    f
}

#[test]
fn pipeline_survives_random_frames() {
    let mut r = Rng(0x5eed_1234);
    for _ in 0..2000 {
        let mut data = Vec::new();
        for _ in 0..(r.next() % 20) {
            let f = frame_like(&mut r);
            let port_pick = (r.next() % 4) as u8;
            // Length byte: frame length rounded so that len % 4 picks the port.
            let len = ((f.len() as u8) & !3) | port_pick;
            data.push(len);
            data.extend_from_slice(&f[..(len as usize).min(f.len())]);
        }
        uvs::fuzzing::pipeline(&data);
    }
}

#[test]
fn config_and_control_survive_random_input() {
    let mut r = Rng(42);
    let seeds: [&[u8]; 3] = [
        b"[[bridge]]\nname = \"br0\"\n[[bridge.port]]\nname = \"t\"\ntype = \"tap\"\nvlan = 10\n",
        b"{\"method\": \"list-commands\", \"params\": [], \"id\": 1}",
        b"{\"method\": \"version\", \"params\": [\"x\", 1], \"id\": null}{\"method\":5}",
    ];
    for _ in 0..3000 {
        let mut d = seeds[(r.next() % 3) as usize].to_vec();
        for _ in 0..(r.next() % 4) {
            let i = (r.next() as usize) % d.len();
            d[i] = r.next() as u8;
        }
        if r.next().is_multiple_of(3) {
            d.truncate((r.next() as usize) % d.len());
        }
        uvs::fuzzing::config(&d);
        uvs::fuzzing::control(&d);
    }
}

#[test]
fn flow_parser_round_trips_mutated_real_flows() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/seeds/flow");
    let seeds: Vec<Vec<u8>> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect();
    assert!(seeds.len() >= 10);
    let mut r = Rng(7);
    for s in &seeds {
        uvs::fuzzing::flow(s);
        assert!(
            uvs::flow::parse_flow(std::str::from_utf8(s).unwrap()).is_ok(),
            "seed parses"
        );
    }
    for _ in 0..20000 {
        let mut d = seeds[(r.next() as usize) % seeds.len()].clone();
        for _ in 0..(r.next() % 3) {
            let i = (r.next() as usize) % d.len();
            d[i] = b",=:/-.0123456789abcdefxip_ "[(r.next() as usize) % 27];
        }
        uvs::fuzzing::flow(&d);
    }
}

/// Frames that reach the router: to a gateway MAC, IPv4 with a valid header checksum most of the
/// time, to addresses the router knows, TCP/UDP/ICMP, some VXLAN to the local VTEP.
fn routed_like(r: &mut Rng) -> Vec<u8> {
    let gw0 = uvs::datapath::Gateway::default_mac("br0").0;
    let gw1 = uvs::datapath::Gateway::default_mac("ul").0;
    let mut f = Vec::new();
    f.extend_from_slice(if r.next().is_multiple_of(2) {
        &gw0
    } else {
        &gw1
    });
    f.extend_from_slice(&[0x02, 0, 0, 0, 1, (r.next() % 4) as u8]);
    if r.next().is_multiple_of(5) {
        f.extend_from_slice(&[0x81, 0x00, 0x00, 0x05]);
    }
    f.extend_from_slice(&[0x08, 0x00]);
    let l3 = f.len();
    let dsts: [[u8; 4]; 6] = [
        [10, 0, 1, 1],
        [10, 0, 1, 2],
        [10, 252, 0, 1],
        [10, 252, 0, 2],
        [10, 0, 9, 9],
        [224, 0, 0, 1],
    ];
    let src: [[u8; 4]; 3] = [[10, 0, 1, 2], [10, 252, 0, 2], [10, 252, 0, 9]];
    let proto = [6u8, 17, 1, 47][(r.next() % 4) as usize];
    let l4len = (r.next() % 80) as usize;
    let total = 20 + l4len;
    f.extend_from_slice(&[0x45, 0, (total >> 8) as u8, total as u8, 0, 0, 0, 0]);
    f.push((r.next() % 4) as u8 * 40);
    f.push(proto);
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(&src[(r.next() % 3) as usize]);
    f.extend_from_slice(&dsts[(r.next() % 6) as usize]);
    let mut l4 = r.bytes(l4len);
    if l4.len() >= 4 {
        let dport: u16 = [80, 8080, 4789, 7, 53][(r.next() % 5) as usize];
        l4[2..4].copy_from_slice(&dport.to_be_bytes());
        if dport == 4789 && l4.len() >= 16 {
            l4[8] = 0x08;
            l4[12..15].copy_from_slice(&[0, 0, if r.next().is_multiple_of(3) { 43 } else { 42 }]);
        }
    }
    if proto == 1 && !l4.is_empty() {
        l4[0] = [0u8, 3, 8, 11][(r.next() % 4) as usize];
    }
    f.extend_from_slice(&l4);
    if !r.next().is_multiple_of(8) {
        let c = uvs::wire::checksum::checksum(&f[l3..l3 + 20]);
        f[l3 + 10..l3 + 12].copy_from_slice(&c.to_be_bytes());
    }
    if r.next().is_multiple_of(10) {
        let cut = (r.next() as usize) % f.len();
        f.truncate(cut);
    }
    f
}

#[test]
fn router_nat_vxlan_flows_survive_random_frames() {
    let mut r = Rng(0xdead_beef);
    for _ in 0..1500 {
        let mut data = Vec::new();
        for _ in 0..(r.next() % 24) {
            let f = if r.next().is_multiple_of(3) {
                frame_like(&mut r)
            } else {
                routed_like(&mut r)
            };
            let f = &f[..f.len().min(254)];
            // Length byte: the frame length with its low bit choosing the port.
            let len = (f.len() as u8 & !1) | (r.next() % 2) as u8;
            data.push(len);
            data.extend_from_slice(&f[..(len as usize).min(f.len())]);
        }
        uvs::fuzzing::router(&data);
    }
}

/// The DNS core over real queries with random corruption and over random bytes.
#[test]
fn dns_core_survives_mutated_queries() {
    let mut r = Rng(0xd05e_0053);
    // A real query for "web." (id 0x1234, RD), then mutated copies and random chunks.
    let q: &[u8] = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x03web\x00\x00\x01\x00\x01";
    for _ in 0..1000 {
        let mut data = vec![r.next() as u8];
        for _ in 0..(r.next() % 16) {
            let mut m = if r.next().is_multiple_of(4) {
                let n = (r.next() % 60) as usize;
                r.bytes(n)
            } else {
                q.to_vec()
            };
            for _ in 0..(r.next() % 4) {
                if !m.is_empty() {
                    let i = r.next() as usize % m.len();
                    m[i] = r.next() as u8;
                }
            }
            data.push(m.len() as u8);
            data.extend_from_slice(&m);
        }
        uvs::fuzzing::dns(&data);
    }
}

/// The stateful target over random operation sequences: `UVS_FUZZ_ITERS` inputs (default 300,
/// each up to 600 bytes: ~100 operations).
#[test]
fn stateful_switch_keeps_its_invariants() {
    let iters: usize = std::env::var("UVS_FUZZ_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let mut r = Rng(0x57a7_e001);
    let t = std::time::Instant::now();
    let mut ops = 0usize;
    for _ in 0..iters {
        let n = (r.next() % 600) as usize;
        let data = r.bytes(n);
        ops += n / 6;
        uvs::fuzzing::stateful(&data);
    }
    eprintln!(
        "stateful: {iters} inputs, ~{ops} operations, {:.1} s",
        t.elapsed().as_secs_f64()
    );
}

/// Split a captured stream into its messages (by header length).
fn of_messages(mut s: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while s.len() >= 8 {
        let len = usize::from(u16::from_be_bytes([s[2], s[3]])).clamp(8, s.len());
        out.push(s[..len].to_vec());
        s = &s[len..];
    }
    out
}

/// One mangled message: truncated (length fixed, or left claiming more than it has), bytes
/// flipped, a length below 8, another version or type, or a random body.
fn of_mutate(r: &mut Rng, mut m: Vec<u8>) -> Vec<u8> {
    match r.next() % 8 {
        0 | 1 => {
            let cut = 8 + (r.next() as usize) % (m.len() - 7);
            m.truncate(cut);
            if r.next().is_multiple_of(4) {
                return m; // the header still claims the old length
            }
        }
        2 | 3 => {
            for _ in 0..1 + r.next() % 4 {
                let i = 8 + (r.next() as usize) % (m.len() - 7).max(1);
                if i < m.len() {
                    m[i] = r.next() as u8;
                }
            }
        }
        4 => {
            m[2] = 0;
            m[3] = (r.next() % 8) as u8;
            return m;
        }
        5 => m[0] = [0u8, 1, 2, 3, 4, 5, 0xff][(r.next() % 7) as usize],
        6 => m[1] = (r.next() % 32) as u8,
        _ => {
            let n = (r.next() % 48) as usize;
            m.truncate(8);
            m.extend(r.bytes(n));
        }
    }
    let len = m.len() as u16;
    m[2..4].copy_from_slice(&len.to_be_bytes());
    m
}

/// Real `ovs-ofctl` conversations (fuzz/seeds/openflow) with some messages mangled, through the
/// OpenFlow fuzz target: no panic, every reply a whole well-formed message answering its
/// request, errors for the mangled ones, and the connection closed only on HELLO_FAILED or a
/// length below 8.
#[test]
fn openflow_survives_mutated_real_messages() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/seeds/openflow");
    let seeds: Vec<Vec<u8>> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect();
    assert!(seeds.len() >= 10);
    let mut seed_replies = Vec::new();
    for s in &seeds {
        let run = uvs::fuzzing::openflow(s);
        assert_eq!(
            (run.errors, run.closed_early),
            (0, false),
            "seed answered cleanly"
        );
        seed_replies.push(run.replies);
    }
    let t = std::time::Instant::now();
    let mut r = Rng(0x0f10_0f13);
    let (mut total, mut closed, mut unmangled) = (OfRunSum::default(), 0, 0);
    for _ in 0..4000 {
        let k = (r.next() as usize) % seeds.len();
        let seed = &seeds[k];
        unmangled += seed_replies[k];
        let mut msgs = of_messages(&seed[1..]);
        // Extra messages from other captures of the same version, then mangle a few.
        for _ in 0..r.next() % 3 {
            let other = of_messages(&seeds[(r.next() as usize) % seeds.len()][1..]);
            let m = other[1 + (r.next() as usize) % (other.len() - 1)].clone();
            if m[0] == msgs[0][0] {
                msgs.insert(1 + (r.next() as usize) % msgs.len(), m);
            }
        }
        for _ in 0..1 + r.next() % 3 {
            // The HELLO is mangled rarely (that ends the conversation).
            let i = if r.next().is_multiple_of(16) {
                0
            } else {
                1 + (r.next() as usize) % (msgs.len() - 1)
            };
            msgs[i] = of_mutate(&mut r, msgs[i].clone());
        }
        let mut data = vec![3 | (r.next() as u8 & 0xfc)];
        data.extend(msgs.concat());
        let run = uvs::fuzzing::openflow(&data);
        total.add(run);
        closed += usize::from(run.closed_early);
    }
    let secs = t.elapsed().as_secs_f64();
    eprintln!(
        "openflow: 4000 conversations, {total:?} ({unmangled} replies unmangled), {closed} closed early, {secs:.1} s"
    );
    assert!(total.errors > 2000 && total.bad_len > 500, "{total:?}");
    // A mangled message costs its own reply, and a closed connection the rest; the others
    // are still answered.
    assert!(total.replies * 2 > unmangled, "{total:?} of {unmangled}");
    assert!(closed > 50 && closed < 1000, "{closed} closed early");
}

#[derive(Debug, Default)]
struct OfRunSum {
    replies: usize,
    errors: usize,
    bad_len: usize,
}

impl OfRunSum {
    fn add(&mut self, r: uvs::fuzzing::OfRun) {
        self.replies += r.replies;
        self.errors += r.errors;
        self.bad_len += r.bad_len;
    }
}
