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
