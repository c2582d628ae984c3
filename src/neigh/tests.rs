//! Unit tests of the neighbour table: states on a manual clock, the hold queue and its bounds.

use super::*;

const M: MacAddr = MacAddr([2, 0, 0, 0, 0, 7]);
const M2: MacAddr = MacAddr([2, 0, 0, 0, 0, 8]);
const IP: [u8; 4] = [10, 0, 0, 2];

fn held(n: u64) -> Held {
    Held {
        desc: Desc::new(n, 60),
        l3: 14,
        in_port: 1,
    }
}

#[test]
fn incomplete_requests_once_per_second_then_fails_then_retries() {
    let mut n = Neighbours::new(16, 300);
    assert_eq!(n.resolve(1, IP, 100), Resolve::SendRequest);
    assert_eq!(n.resolve(1, IP, 100), Resolve::Pending);
    assert_eq!(n.resolve(1, IP, 101), Resolve::SendRequest);
    assert_eq!(n.resolve(1, IP, 102), Resolve::SendRequest);
    assert_eq!(n.resolve(1, IP, 103), Resolve::Failed, "3 broadcasts");
    assert_eq!(n.state(1, IP), Some(State::Failed));
    assert_eq!(n.resolve(1, IP, 105), Resolve::Failed, "held down");
    assert_eq!(n.resolve(1, IP, 106), Resolve::SendRequest, "tried again");
    assert_eq!(n.resolve(2, IP, 106), Resolve::SendRequest, "per bridge");
}

#[test]
fn held_packets_are_released_by_the_reply() {
    let mut n = Neighbours::new(16, 300);
    assert_eq!(n.resolve(1, IP, 10), Resolve::SendRequest);
    for i in 0..QUEUE_LEN as u64 {
        n.hold(1, IP, held(i)).unwrap();
    }
    assert_eq!(n.hold(1, IP, held(9)), Err(held(9)), "queue of 3");
    assert_eq!(n.held(), 3);
    let r = n.arp_seen(1, IP, M, 10, true, false).expect("released");
    assert_eq!(r.mac, M);
    assert_eq!(r.frames(), &[held(0), held(1), held(2)]);
    assert_eq!(n.held(), 0);
    assert_eq!(n.state(1, IP), Some(State::Reachable));
    assert_eq!(n.resolve(1, IP, 11), Resolve::Mac(M));
    assert_eq!(
        n.hold(1, IP, held(5)),
        Err(held(5)),
        "resolved: nothing held"
    );
}

#[test]
fn hold_bounds_per_bridge_and_total() {
    let mut n = Neighbours::new(100_000, 300);
    let mut ok = 0;
    for i in 0..100u32 {
        let ip = (0x0a00_0000 + i).to_be_bytes();
        n.resolve(1, ip, 1);
        for _ in 0..QUEUE_LEN {
            ok += n.hold(1, ip, held(i as u64)).is_ok() as usize;
        }
    }
    assert_eq!(ok, QUEUE_PER_BRIDGE, "one bridge holds at most its share");
    for b in 2..20u16 {
        for i in 0..30u32 {
            let ip = (0x0a00_0000 + i).to_be_bytes();
            n.resolve(b, ip, 1);
            let _ = n.hold(b, ip, held(0));
        }
    }
    assert_eq!(n.held(), QUEUE_TOTAL, "and all bridges at most the total");
}

#[test]
fn failed_resolution_drops_held_packets() {
    let mut n = Neighbours::new(16, 300);
    n.resolve(1, IP, 0);
    n.hold(1, IP, held(1)).unwrap();
    n.age(1);
    n.age(2);
    assert_eq!(
        n.take_due(),
        vec![(1, IP, None), (1, IP, None)],
        "timers retransmit the broadcast request"
    );
    n.age(3);
    assert_eq!(n.state(1, IP), Some(State::Failed));
    assert_eq!(n.take_dropped(), vec![held(1)]);
    assert_eq!(n.held(), 0);
    n.age(6);
    assert!(n.is_empty(), "failed entries are forgotten after the hold");
}

#[test]
fn reachable_goes_stale_delay_probe_then_broadcast() {
    let mut n = Neighbours::new(16, 300);
    n.resolve(1, IP, 0);
    n.arp_seen(1, IP, M, 0, true, false);
    assert_eq!(n.resolve(1, IP, 29), Resolve::Mac(M));
    n.age(30);
    assert_eq!(n.state(1, IP), Some(State::Stale));
    assert_eq!(n.resolve(1, IP, 31), Resolve::Mac(M), "stale is still used");
    assert_eq!(n.state(1, IP), Some(State::Delay));
    assert_eq!(n.resolve(1, IP, 35), Resolve::Mac(M));
    assert_eq!(n.resolve(1, IP, 36), Resolve::Probe(M), "unicast probe");
    assert_eq!(n.resolve(1, IP, 36), Resolve::Mac(M));
    assert_eq!(n.resolve(1, IP, 37), Resolve::Probe(M));
    assert_eq!(n.resolve(1, IP, 38), Resolve::Probe(M));
    assert_eq!(n.resolve(1, IP, 39), Resolve::SendRequest, "then broadcast");
    assert_eq!(n.state(1, IP), Some(State::Incomplete));
    // The host's replacement answers with another MAC.
    n.arp_seen(1, IP, M2, 39, true, false);
    assert_eq!(n.resolve(1, IP, 40), Resolve::Mac(M2));
}

#[test]
fn a_probe_answer_confirms() {
    let mut n = Neighbours::new(16, 300);
    n.learn(1, IP, M, 0);
    n.age(30);
    n.resolve(1, IP, 31);
    n.age(36);
    assert_eq!(n.take_due(), vec![(1, IP, Some(M))], "timer-driven probe");
    n.arp_seen(1, IP, M, 36, true, false);
    assert_eq!(n.state(1, IP), Some(State::Reachable));
}

#[test]
fn any_arp_from_a_known_sender_updates_its_mac() {
    let mut n = Neighbours::new(16, 300);
    n.learn(1, IP, M, 0);
    // A gratuitous ARP (or a request to someone else) from the same address, new MAC.
    n.arp_seen(1, IP, M2, 5, false, false);
    assert_eq!(n.state(1, IP), Some(State::Stale));
    assert_eq!(n.resolve(1, IP, 6), Resolve::Mac(M2), "followed at once");
    // Unknown senders are only added when the caller allows it.
    n.arp_seen(1, [10, 0, 0, 3], M, 6, false, false);
    assert_eq!(n.state(1, [10, 0, 0, 3]), None);
    n.arp_seen(1, [10, 0, 0, 3], M, 6, false, true);
    assert_eq!(n.state(1, [10, 0, 0, 3]), Some(State::Stale));
}

#[test]
fn aging_removes_unused_entries() {
    let mut n = Neighbours::new(16, 10);
    n.learn(0, IP, M, 1);
    assert_eq!(n.age(11), 0);
    assert_eq!(n.age(12), 1);
    assert!(n.is_empty());
}

#[test]
fn capacity_is_enforced() {
    let mut n = Neighbours::new(2, 300);
    assert!(n.learn(0, [1, 1, 1, 1], M, 0));
    assert!(n.learn(0, [1, 1, 1, 2], M, 0));
    assert!(!n.learn(0, [1, 1, 1, 3], M, 0));
    assert!(n.learn(0, [1, 1, 1, 2], M, 5), "existing entry updates");
    assert_eq!(n.resolve(0, [1, 1, 1, 4], 0), Resolve::Refused);
    assert_eq!(n.counters().full, 2);
    assert_eq!(n.rows(0).len(), 2);
}

#[test]
fn flush_drops_held_packets() {
    let mut n = Neighbours::new(16, 300);
    n.resolve(3, IP, 0);
    n.hold(3, IP, held(4)).unwrap();
    n.flush_bridge(3);
    assert_eq!(n.take_dropped(), vec![held(4)]);
    assert_eq!(n.held(), 0);
    assert!(n.is_empty());
}

#[test]
fn permanent_entries_are_never_aged_probed_or_changed_by_arp() {
    let mut n = Neighbours::new(16, 300);
    assert_eq!(n.resolve(1, IP, 100), Resolve::SendRequest);
    n.hold(1, IP, held(1)).unwrap();
    assert!(n.set_permanent(1, IP, M, 100));
    assert_eq!(n.take_dropped().len(), 1, "what it held is dropped");
    assert_eq!(n.held(), 0);
    assert_eq!(n.resolve(1, IP, 100_000), Resolve::Mac(M));
    assert!(n.arp_seen(1, IP, M2, 100_001, true, true).is_none());
    n.age(1_000_000);
    assert_eq!(
        n.resolve(1, IP, 1_000_000),
        Resolve::Mac(M),
        "not aged, not moved"
    );
    assert_eq!(n.rows(0)[0].state, "PERMANENT");
    assert!(n.set_permanent(1, IP, M2, 1_000_001));
    assert_eq!(n.resolve(1, IP, 1_000_001), Resolve::Mac(M2), "replaced");
    assert!(n.remove_permanent(1, IP));
    assert!(!n.remove_permanent(1, IP));
    assert_eq!(n.state(1, IP), None);
    let mut full = Neighbours::new(1, 300);
    assert!(full.set_permanent(1, IP, M, 0));
    assert!(
        !full.set_permanent(1, [10, 0, 0, 3], M, 0),
        "capacity bounds it"
    );
}

fn ip(i: u32) -> [u8; 4] {
    (0x0a00_0000 + i).to_be_bytes()
}

#[test]
fn a_bridge_at_its_bound_evicts_its_own_unused_entries_only() {
    let mut n = Neighbours::new(1000, 300).with_bridge_limit(10);
    // Bridge 2 (the victim) has neighbours in use.
    for i in 0..5 {
        assert!(n.learn(2, ip(i), M, 0));
    }
    // Bridge 1 fills its bound with entries in use (reachable): nothing to evict.
    for i in 0..10 {
        assert!(n.learn(1, ip(i), M, 0));
    }
    assert!(!n.learn(1, ip(10), M, 0), "bound reached, all in use");
    assert_eq!(n.resolve(1, ip(11), 0), Resolve::Refused);
    assert_eq!(n.bridge_len(1), 10);
    assert_eq!(n.bridge_len(2), 5, "the other bridge is untouched");
    assert!(n.learn(2, ip(5), M, 0), "and can still learn");
    // Entries go stale (unused ones first) and make room again.
    n.age(31);
    n.resolve(1, ip(3), 31); // in use again: DELAY
    assert!(n.learn(1, ip(20), M, 31), "a stale entry was evicted");
    assert_eq!(n.state(1, ip(3)), Some(State::Delay), "not the one in use");
    assert_eq!(n.bridge_len(1), 10);
    assert_eq!(n.counters().evicted, 1);
    // Failed entries go first.
    assert!(n.flush_bridge(1) == 10);
    for i in 0..10 {
        assert!(n.learn(1, ip(i), M, 40));
    }
    n.age(71);
    n.resolve(1, ip(100), 71); // full of stale entries: one is evicted
    assert_eq!(n.state(1, ip(100)), Some(State::Incomplete));
    for t in 72..=74 {
        n.age(t);
    }
    assert_eq!(n.state(1, ip(100)), Some(State::Failed));
    assert!(n.learn(1, ip(200), M, 74));
    assert_eq!(
        n.state(1, ip(100)),
        None,
        "the failed entry was evicted first"
    );
}

#[test]
fn broadcast_requests_are_rate_limited_per_bridge() {
    let mut n = Neighbours::new(100_000, 300);
    let mut sent = 0;
    for i in 0..1000 {
        match n.resolve(1, ip(i), 7) {
            Resolve::SendRequest => sent += 1,
            r => assert_eq!(r, Resolve::Refused),
        }
    }
    assert_eq!(sent, ARP_RATE as usize, "one second's worth");
    assert_eq!(n.counters().rate_limited, 1000 - ARP_RATE as u64);
    assert_eq!(n.len(), ARP_RATE as usize, "refused addresses are not kept");
    assert_eq!(
        n.resolve(2, ip(0), 7),
        Resolve::SendRequest,
        "another bridge has its own rate"
    );
    // Retransmissions of the pending ones share the next second's rate with new ones.
    n.age(8);
    assert_eq!(
        n.take_due().len(),
        ARP_RATE as usize + 1,
        "bridge 1 and bridge 2"
    );
    assert_eq!(
        n.resolve(1, ip(5000), 8),
        Resolve::Refused,
        "spent by retransmissions"
    );
    // One per second per entry: a known pending address never sends twice in a second.
    assert_eq!(n.resolve(1, ip(0), 8), Resolve::Pending);
}

#[test]
fn flush_of_one_bridge_keeps_the_others() {
    let mut n = Neighbours::new(100, 300);
    n.learn(1, ip(1), M, 0);
    n.learn(2, ip(1), M, 0);
    assert_eq!(n.flush_bridge(1), 1);
    assert_eq!(n.state(1, ip(1)), None);
    assert_eq!(n.state(2, ip(1)), Some(State::Reachable));
    assert_eq!(n.flush_bridge(9), 0);
}

#[test]
fn pages_cover_every_entry_once_in_bounded_steps() {
    let mut n = Neighbours::new(10_000, 300);
    for b in 1..=3u16 {
        for i in 0..700 {
            assert!(n.learn(b, ip(i), M, 0));
        }
    }
    let (mut seen, mut from, mut pages) = (Vec::new(), Some(0u64), 0);
    while let Some(f) = from {
        let (rows, next) = n.rows_page(f, 500, 1);
        assert!(rows.len() <= 500, "a page is bounded");
        seen.extend(rows.into_iter().map(|r| (r.bridge, r.ip)));
        from = next;
        pages += 1;
    }
    assert_eq!(pages, 5, "2,100 entries in pages of 500");
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 2100, "every entry exactly once");
}

/// `neigh-flush` keeps permanent entries (the etcd overlay's), as `ip neigh flush` does; it
/// removes the learned ones and drops what they held. Removing the bridge removes all.
#[test]
fn flush_keeps_permanent_entries() {
    let mut n = Neighbours::new(16, 300);
    assert!(n.set_permanent(1, [10, 5, 2, 0], M, 0));
    assert!(n.learn(1, [10, 5, 1, 7], M, 0));
    n.resolve(1, IP, 0);
    n.hold(1, IP, held(4)).unwrap();
    assert_eq!(n.flush_learned(1), 2);
    assert_eq!(n.take_dropped(), vec![held(4)]);
    assert_eq!(n.state(1, [10, 5, 2, 0]), Some(State::Permanent));
    assert_eq!(n.bridge_len(1), 1);
    assert_eq!(n.flush_bridge(1), 1);
    assert!(n.is_empty());
}
