use super::*;

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn conn(p: &str, bridge: u16) -> Route {
    let (prefix, len) = parse_prefix(p).unwrap();
    Route {
        prefix,
        len,
        kind: RouteKind::Connected { bridge },
    }
}

fn via(p: &str, gw: &str, bridge: u16) -> Route {
    let (prefix, len) = parse_prefix(p).unwrap();
    Route {
        prefix,
        len,
        kind: RouteKind::Via {
            gateway: ip(gw),
            bridge,
        },
    }
}

/// The prefix (as text) of the route `dst` takes.
fn hit(t: &RouteTable, dst: &str) -> Option<String> {
    t.lookup(ip(dst).octets())
        .map(|r| format!("{}/{}", r.prefix, r.len))
}

#[test]
fn longest_match_wins() {
    let mut t = RouteTable::new();
    t.add(via("0.0.0.0/0", "198.18.0.254", 3)).unwrap();
    t.add(conn("10.0.0.0/8", 1)).unwrap();
    t.add(conn("10.1.0.0/16", 1)).unwrap();
    t.add(conn("10.1.2.0/24", 2)).unwrap();
    t.add(via("10.1.2.3/32", "10.1.2.1", 2)).unwrap();
    assert_eq!(hit(&t, "10.1.2.3").as_deref(), Some("10.1.2.3/32"));
    assert_eq!(hit(&t, "10.1.2.4").as_deref(), Some("10.1.2.0/24"));
    assert_eq!(hit(&t, "10.1.3.4").as_deref(), Some("10.1.0.0/16"));
    assert_eq!(hit(&t, "10.200.3.4").as_deref(), Some("10.0.0.0/8"));
    assert_eq!(hit(&t, "8.8.8.8").as_deref(), Some("0.0.0.0/0"));
    let r = t.lookup(ip("8.8.8.8").octets()).unwrap();
    assert_eq!(
        (r.bridge(), r.next_hop(ip("8.8.8.8"))),
        (3, ip("198.18.0.254"))
    );
    let r = t.lookup_u32(u32::from(ip("10.1.2.9"))).unwrap();
    assert_eq!(
        (r.bridge(), r.next_hop(ip("10.1.2.9"))),
        (2, ip("10.1.2.9"))
    );
    assert_eq!(t.len(), 5);
}

#[test]
fn no_route_without_default() {
    let mut t = RouteTable::new();
    assert_eq!(hit(&t, "1.2.3.4"), None);
    t.add(conn("172.30.0.0/24", 0)).unwrap();
    assert_eq!(hit(&t, "172.30.1.1"), None);
    assert_eq!(hit(&t, "172.30.0.255").as_deref(), Some("172.30.0.0/24"));
}

#[test]
fn delete_restores_the_shorter_covering_prefix() {
    let mut t = RouteTable::new();
    t.add(conn("10.0.0.0/8", 1)).unwrap();
    t.add(conn("10.1.0.0/16", 2)).unwrap();
    t.add(conn("10.1.2.0/24", 3)).unwrap();
    assert_eq!(t.del(ip("10.1.0.0"), 16).unwrap(), conn("10.1.0.0/16", 2));
    assert_eq!(hit(&t, "10.1.3.1").as_deref(), Some("10.0.0.0/8"));
    assert_eq!(
        hit(&t, "10.1.2.1").as_deref(),
        Some("10.1.2.0/24"),
        "longer one untouched"
    );
    t.del(ip("10.1.2.0"), 24).unwrap();
    assert_eq!(hit(&t, "10.1.2.1").as_deref(), Some("10.0.0.0/8"));
    t.del(ip("10.0.0.0"), 8).unwrap();
    assert_eq!(hit(&t, "10.1.2.1"), None);
    assert!(t.is_empty());
    let e = t.del(ip("10.0.0.0"), 8).unwrap_err();
    assert_eq!(e.to_string(), "no route 10.0.0.0/8");
}

#[test]
fn prefixes_longer_than_24() {
    let mut t = RouteTable::new();
    t.add(conn("192.168.1.0/24", 1)).unwrap();
    t.add(conn("192.168.1.128/25", 2)).unwrap();
    t.add(conn("192.168.1.192/26", 3)).unwrap();
    t.add(conn("192.168.1.200/29", 4)).unwrap();
    t.add(conn("192.168.1.255/32", 5)).unwrap();
    assert_eq!(hit(&t, "192.168.1.127").as_deref(), Some("192.168.1.0/24"));
    assert_eq!(
        hit(&t, "192.168.1.128").as_deref(),
        Some("192.168.1.128/25")
    );
    assert_eq!(
        hit(&t, "192.168.1.199").as_deref(),
        Some("192.168.1.192/26")
    );
    assert_eq!(
        hit(&t, "192.168.1.207").as_deref(),
        Some("192.168.1.200/29")
    );
    assert_eq!(
        hit(&t, "192.168.1.208").as_deref(),
        Some("192.168.1.192/26")
    );
    assert_eq!(
        hit(&t, "192.168.1.254").as_deref(),
        Some("192.168.1.192/26")
    );
    assert_eq!(
        hit(&t, "192.168.1.255").as_deref(),
        Some("192.168.1.255/32")
    );
    t.del(ip("192.168.1.192"), 26).unwrap();
    assert_eq!(
        hit(&t, "192.168.1.207").as_deref(),
        Some("192.168.1.200/29")
    );
    assert_eq!(
        hit(&t, "192.168.1.208").as_deref(),
        Some("192.168.1.128/25")
    );
    t.del(ip("192.168.1.0"), 24).unwrap();
    assert_eq!(hit(&t, "192.168.1.1"), None);
    assert_eq!(
        hit(&t, "192.168.1.255").as_deref(),
        Some("192.168.1.255/32")
    );
    for p in ["192.168.1.128/25", "192.168.1.200/29", "192.168.1.255/32"] {
        let (a, l) = parse_prefix(p).unwrap();
        t.del(a, l).unwrap();
    }
    assert!(t.is_empty());
    assert_eq!(t.lpm.groups(), 0, "groups recycled");
    assert_eq!(hit(&t, "192.168.1.255"), None);
}

#[test]
fn boundary_addresses() {
    let mut t = RouteTable::new();
    t.add(conn("0.0.0.0/32", 1)).unwrap();
    t.add(conn("255.255.255.255/32", 2)).unwrap();
    t.add(conn("0.0.0.0/1", 3)).unwrap();
    t.add(conn("128.0.0.0/1", 4)).unwrap();
    t.add(conn("255.255.255.0/24", 5)).unwrap();
    assert_eq!(hit(&t, "0.0.0.0").as_deref(), Some("0.0.0.0/32"));
    assert_eq!(hit(&t, "0.0.0.1").as_deref(), Some("0.0.0.0/1"));
    assert_eq!(hit(&t, "127.255.255.255").as_deref(), Some("0.0.0.0/1"));
    assert_eq!(hit(&t, "128.0.0.0").as_deref(), Some("128.0.0.0/1"));
    assert_eq!(
        hit(&t, "255.255.255.254").as_deref(),
        Some("255.255.255.0/24")
    );
    assert_eq!(
        hit(&t, "255.255.255.255").as_deref(),
        Some("255.255.255.255/32")
    );
    t.add(conn("0.0.0.0/2", 6)).unwrap();
    assert_eq!(hit(&t, "1.0.0.0").as_deref(), Some("0.0.0.0/2"));
    t.del(ip("0.0.0.0"), 2).unwrap();
    assert_eq!(
        hit(&t, "1.0.0.0").as_deref(),
        Some("0.0.0.0/1"),
        "a /1 covers again"
    );
    t.del(ip("0.0.0.0"), 1).unwrap();
    assert_eq!(hit(&t, "0.0.0.1"), None);
    assert_eq!(hit(&t, "0.0.0.0").as_deref(), Some("0.0.0.0/32"));
    t.del(ip("255.255.255.0"), 24).unwrap();
    assert_eq!(hit(&t, "255.255.255.254").as_deref(), Some("128.0.0.0/1"));
}

#[test]
fn host_bits_and_bad_lengths_are_refused() {
    let mut t = RouteTable::new();
    let e = t.add(conn("10.0.0.1/24", 1)).unwrap_err();
    assert_eq!(
        e.to_string(),
        "10.0.0.1/24 has host bits set; did you mean 10.0.0.0/24?"
    );
    let e = t.add(conn("0.0.0.1/0", 1)).unwrap_err();
    assert_eq!(
        e.to_string(),
        "0.0.0.1/0 has host bits set; did you mean 0.0.0.0/0?"
    );
    let r = Route {
        prefix: ip("10.0.0.0"),
        len: 33,
        kind: RouteKind::Connected { bridge: 1 },
    };
    assert_eq!(
        t.add(r).unwrap_err().to_string(),
        "10.0.0.0/33: prefix length must be 0..=32"
    );
    assert!(t.del(ip("10.0.0.1"), 24).is_err());
    assert!(t.is_empty());
}

#[test]
fn duplicates_are_refused() {
    let mut t = RouteTable::new();
    t.add(conn("10.9.0.0/24", 1)).unwrap();
    let e = t.add(via("10.9.0.0/24", "10.9.0.254", 2)).unwrap_err();
    assert_eq!(
        e.to_string(),
        "route 10.9.0.0/24 already exists (10.9.0.0/24 connected bridge 1); delete it first"
    );
    t.add(conn("10.9.0.0/25", 1)).unwrap();
    assert_eq!(t.len(), 2);
    assert_eq!(
        t.lookup(ip("10.9.0.200").octets()),
        Some(&conn("10.9.0.0/24", 1))
    );
}

#[test]
fn parse_prefix_accepts_and_names_bad_text() {
    assert_eq!(parse_prefix("10.254.9.0/24"), Ok((ip("10.254.9.0"), 24)));
    assert_eq!(parse_prefix("0.0.0.0/0"), Ok((ip("0.0.0.0"), 0)));
    assert_eq!(parse_prefix("1.2.3.4"), Ok((ip("1.2.3.4"), 32)));
    for bad in [
        "10.0.0.0/33",
        "10.0.0/8",
        "10.0.0.0/",
        "x/8",
        "10.0.0.0/-1",
        "",
    ] {
        let e = parse_prefix(bad).unwrap_err();
        assert!(e.contains(&format!("{bad:?}")), "{e}");
    }
}

#[test]
fn iter_is_longest_first_then_by_address_and_display() {
    let mut t = RouteTable::new();
    for p in [
        "0.0.0.0/0",
        "10.0.0.0/8",
        "192.168.0.0/24",
        "10.1.0.0/24",
        "10.1.0.7/32",
    ] {
        t.add(conn(p, 1)).unwrap();
    }
    let shown: Vec<String> = t.iter().map(|r| r.to_string()).collect();
    assert_eq!(
        shown,
        [
            "10.1.0.7/32 connected bridge 1",
            "10.1.0.0/24 connected bridge 1",
            "192.168.0.0/24 connected bridge 1",
            "10.0.0.0/8 connected bridge 1",
            "0.0.0.0/0 connected bridge 1",
        ]
    );
    assert_eq!(
        via("0.0.0.0/0", "1.2.3.4", 7).to_string(),
        "0.0.0.0/0 via 1.2.3.4 bridge 7"
    );
}

#[test]
fn del_bridge_and_slot_reuse() {
    let mut t = RouteTable::new();
    t.add(conn("10.1.0.0/24", 1)).unwrap();
    t.add(conn("10.2.0.0/24", 2)).unwrap();
    t.add(via("10.3.0.0/16", "10.2.0.9", 2)).unwrap();
    let gone = t.del_bridge(2);
    assert_eq!(gone.len(), 2);
    assert_eq!(t.len(), 1);
    assert_eq!(hit(&t, "10.3.0.1"), None);
    t.add(conn("10.4.0.0/24", 3)).unwrap();
    t.add(conn("10.5.0.0/24", 4)).unwrap();
    assert_eq!(t.slots.len(), 3, "freed slots reused");
    assert_eq!(t.lookup(ip("10.5.0.1").octets()).unwrap().bridge(), 4);
}

#[test]
fn clone_is_independent() {
    let mut t = RouteTable::new();
    t.add(conn("10.1.0.0/24", 1)).unwrap();
    let mut c = t.clone();
    c.add(conn("10.1.0.128/25", 2)).unwrap();
    c.del(ip("10.1.0.0"), 24).unwrap();
    assert_eq!(hit(&t, "10.1.0.200").as_deref(), Some("10.1.0.0/24"));
    assert_eq!(hit(&c, "10.1.0.200").as_deref(), Some("10.1.0.128/25"));
    assert_eq!(hit(&c, "10.1.0.1"), None);
    let rebuilt = RouteTable::from_routes(c.iter().copied()).unwrap();
    assert_eq!(format!("{rebuilt:?}"), format!("{c:?}"));
}

/// xorshift64*: deterministic randomness without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The naive reference: a linear scan for the longest containing prefix.
fn naive(routes: &[Route], dst: Ipv4Addr) -> Option<&Route> {
    routes
        .iter()
        .filter(|r| r.contains(dst))
        .max_by_key(|r| r.len)
}

/// A random prefix, clustered in a few /8s so prefixes nest; lengths 8..=32 (plus a rare /0).
fn random_route(rng: &mut Rng) -> Route {
    let len = if rng.below(200) == 0 {
        0
    } else {
        8 + rng.below(25) as u8
    };
    let top = [10u32, 172, 192, 255][rng.below(4) as usize] << 24;
    let spread = if rng.below(2) == 0 { 0xffff } else { 0xff_ffff };
    let addr = (top | (rng.next() as u32 & spread)) & mask(len);
    let bridge = rng.below(4) as u16;
    Route {
        prefix: Ipv4Addr::from(addr),
        len,
        kind: RouteKind::Connected { bridge },
    }
}

/// A destination near the installed prefixes (or anywhere).
fn random_dst(rng: &mut Rng, routes: &[Route]) -> Ipv4Addr {
    if routes.is_empty() || rng.below(8) == 0 {
        return Ipv4Addr::from(rng.next() as u32);
    }
    let r = routes[rng.below(routes.len() as u64) as usize];
    Ipv4Addr::from(u32::from(r.prefix) | (rng.next() as u32 & !mask(r.len)))
}

#[test]
fn randomized_against_linear_scan_with_deletes() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut t = RouteTable::new();
    let mut reference: Vec<Route> = Vec::new();
    for round in 0..6 {
        // Grow by ~1000 prefixes, then delete ~a third at random, checking lookups each time.
        for _ in 0..1000 {
            let r = random_route(&mut rng);
            let dup = reference
                .iter()
                .any(|x| (x.prefix, x.len) == (r.prefix, r.len));
            assert_eq!(t.add(r).is_err(), dup, "add {r}");
            if !dup {
                reference.push(r);
            }
        }
        for _ in 0..reference.len() / 3 {
            let i = rng.below(reference.len() as u64) as usize;
            let r = reference.swap_remove(i);
            assert_eq!(t.del(r.prefix, r.len), Ok(r));
        }
        assert_eq!(t.len(), reference.len());
        for _ in 0..3000 {
            let dst = random_dst(&mut rng, &reference);
            let want = naive(&reference, dst);
            assert_eq!(t.lookup(dst.octets()), want, "round {round}: lookup {dst}");
        }
    }
    // A clone answers the same; emptying the table frees every group.
    let c = t.clone();
    for _ in 0..2000 {
        let dst = random_dst(&mut rng, &reference);
        assert_eq!(c.lookup(dst.octets()), t.lookup(dst.octets()));
    }
    for r in reference.drain(..) {
        t.del(r.prefix, r.len).unwrap();
    }
    assert!(t.is_empty());
    assert_eq!(t.lpm.groups(), 0);
    assert_eq!(hit(&t, "10.0.0.1"), None);
}
