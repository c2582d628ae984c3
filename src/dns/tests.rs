//! Tests of the DNS core and service: query bytes in, answers parsed back with hickory-proto.

use std::net::{Ipv4Addr, UdpSocket};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, Record, RecordType};
use smoltcp::wire::{Ipv4Packet, UdpPacket};

use super::answer::{Core, Next, Outcome};
use super::punt::Punted;
use super::registry::{DnsSpec, Registry};
use super::service::{self, ServiceOptions};

/// A client address.
const SRC: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 5);

fn registry() -> Registry {
    let mut r = Registry::default();
    let add = |r: &mut Registry, b: &str, n: &str, ip: &str, al: &[&str]| {
        r.add(&DnsSpec {
            bridge: b.into(),
            name: n.into(),
            ip: ip.into(),
            aliases: al.iter().map(|s| s.to_string()).collect(),
        })
        .unwrap();
    };
    add(&mut r, "br0", "web", "10.1.0.2", &["www"]);
    add(&mut r, "br1", "db", "10.2.0.2", &[]);
    r
}

fn query(id: u16, name: &str, t: RecordType) -> Vec<u8> {
    let mut m = Message::new(id, MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), t));
    m.to_vec().unwrap()
}

fn answer(o: Outcome) -> Message {
    match o {
        Outcome::Answer(b) => Message::from_vec(&b).unwrap(),
        other => panic!("expected an answer, got {other:?}"),
    }
}

fn a_records(m: &Message) -> Vec<Ipv4Addr> {
    m.answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.0),
            _ => None,
        })
        .collect()
}

#[test]
fn registered_names_resolve_with_a_and_ptr() {
    let reg = registry();
    let mut core = Core::<u32>::default();
    let m = answer(core.query(
        &reg,
        "br0",
        SRC,
        &query(7, "web.", RecordType::A),
        1,
        0,
        true,
    ));
    assert_eq!(m.metadata.id, 7);
    assert_eq!(m.metadata.message_type, MessageType::Response);
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert_eq!(a_records(&m), vec![Ipv4Addr::new(10, 1, 0, 2)]);
    // Case-insensitive, aliases, NAME.BRIDGE.
    for n in ["WWW.", "web.br0."] {
        let m = answer(core.query(&reg, "br0", SRC, &query(8, n, RecordType::A), 1, 0, true));
        assert_eq!(a_records(&m), vec![Ipv4Addr::new(10, 1, 0, 2)], "{n}");
    }
    // PTR for a registered address.
    let q = query(9, "2.0.1.10.in-addr.arpa.", RecordType::PTR);
    let m = answer(core.query(&reg, "br0", SRC, &q, 1, 0, true));
    match &m.answers[0].data {
        RData::PTR(p) => assert_eq!(p.0.to_ascii(), "web."),
        other => panic!("not a PTR: {other:?}"),
    }
    // AAAA of a registered name: NOERROR without records (not forwarded).
    let m = answer(core.query(
        &reg,
        "br0",
        SRC,
        &query(10, "web.", RecordType::AAAA),
        1,
        0,
        true,
    ));
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(m.answers.is_empty());
    assert_eq!(core.counters.answered_local, 5);
}

#[test]
fn another_bridge_names_are_not_answered() {
    let reg = registry();
    let mut core = Core::<u32>::default();
    // With an upstream: forwarded, not answered from br1's records.
    let o = core.query(
        &reg,
        "br0",
        SRC,
        &query(1, "db.", RecordType::A),
        1,
        0,
        true,
    );
    assert!(matches!(o, Outcome::Forward(_)));
    // Without: NXDOMAIN.
    let m = answer(core.query(
        &reg,
        "br0",
        SRC,
        &query(2, "db.", RecordType::A),
        1,
        0,
        false,
    ));
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    assert!(m.answers.is_empty());
    let q = query(3, "2.0.2.10.in-addr.arpa.", RecordType::PTR);
    let m = answer(core.query(&reg, "br0", SRC, &q, 1, 0, false));
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
}

/// What a resolver would answer to `fwd`: its id and question, one A record.
fn upstream_answer(fwd: &[u8], ip: Ipv4Addr) -> Vec<u8> {
    let q = Message::from_vec(fwd).unwrap();
    let mut r = Message::response(q.metadata.id, OpCode::Query);
    r.add_query(q.queries[0].clone());
    r.add_answer(Record::from_rdata(
        q.queries[0].name().clone(),
        60,
        RData::A(A(ip)),
    ));
    r.to_vec().unwrap()
}

#[test]
fn forwarded_answers_are_relayed_and_timeouts_servfail() {
    let reg = registry();
    let mut core = Core::<u32>::default();
    let Outcome::Forward(fwd) = core.query(
        &reg,
        "br0",
        SRC,
        &query(0x1234, "example.org.", RecordType::A),
        42,
        0,
        true,
    ) else {
        panic!("not forwarded");
    };
    let sent = Message::from_vec(&fwd).unwrap();
    assert_ne!(sent.metadata.id, 0x1234, "a fresh id goes upstream");
    // A spoofed answer (wrong id) is not relayed.
    let mut wrong = upstream_answer(&fwd, Ipv4Addr::new(6, 6, 6, 6));
    wrong[0] ^= 0xff;
    assert!(core.upstream_reply(&wrong).is_none());
    let (client, bytes) = core
        .upstream_reply(&upstream_answer(&fwd, Ipv4Addr::new(198, 51, 100, 7)))
        .expect("relayed");
    assert_eq!(client, 42);
    let m = Message::from_vec(&bytes).unwrap();
    assert_eq!(m.metadata.id, 0x1234);
    assert_eq!(a_records(&m), vec![Ipv4Addr::new(198, 51, 100, 7)]);
    // Late duplicate: nothing waits for it any more.
    assert!(
        core.upstream_reply(&upstream_answer(&fwd, Ipv4Addr::LOCALHOST))
            .is_none()
    );
    // No answer in time: SERVFAIL with the client's id.
    let o = core.query(
        &reg,
        "br0",
        SRC,
        &query(77, "slow.example.", RecordType::A),
        43,
        1000,
        true,
    );
    assert!(matches!(o, Outcome::Forward(_)));
    assert!(core.expire(1000 + core.timeout_ms - 1).is_empty());
    let late = core.expire(1000 + core.timeout_ms);
    assert_eq!(late.len(), 1);
    let Next::Fail(client, b) = &late[0] else {
        panic!("one upstream: nothing to try next")
    };
    assert_eq!(*client, 43);
    let m = Message::from_vec(b).unwrap();
    assert_eq!(
        (m.metadata.id, m.metadata.response_code),
        (77, ResponseCode::ServFail)
    );
    assert_eq!(core.waiting(), 0);
    assert_eq!(core.counters.servfail, 1);
    assert_eq!(core.counters.upstream_unmatched, 2);
}

#[test]
fn malformed_queries_are_counted_and_dropped() {
    let reg = registry();
    let mut core = Core::<u32>::default();
    let mut bad: Vec<Vec<u8>> = vec![vec![], vec![0; 5], vec![0xff; 12]];
    // A truncated query and a response are not queries either.
    let q = query(5, "web.", RecordType::A);
    bad.push(q[..q.len() - 3].to_vec());
    bad.push(upstream_answer(&q, Ipv4Addr::LOCALHOST));
    for b in &bad {
        assert_eq!(core.query(&reg, "br0", SRC, b, 1, 0, true), Outcome::Drop);
    }
    assert_eq!(core.counters.malformed, bad.len() as u64);
    // Random bytes: never a panic; whatever parses gets some answer.
    let mut x = 0x1234_5678u32;
    for _ in 0..2000 {
        let mut b = q.clone();
        for _ in 0..4 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let i = x as usize % b.len();
            b[i] = (x >> 8) as u8;
        }
        let _ = core.query(&reg, "br0", SRC, &b, 1, 0, false);
    }
    // Two questions: FORMERR.
    let mut m = Message::new(9, MessageType::Query, OpCode::Query);
    m.add_query(Query::query(Name::from_ascii("a.").unwrap(), RecordType::A));
    m.add_query(Query::query(Name::from_ascii("b.").unwrap(), RecordType::A));
    let m = answer(core.query(&reg, "br0", SRC, &m.to_vec().unwrap(), 1, 0, true));
    assert_eq!(m.metadata.response_code, ResponseCode::FormErr);
}

#[test]
fn resolv_conf_and_upstream_flags_parse() {
    let t = "# comment\nsearch example\nnameserver 10.0.0.53\nnameserver 10.0.0.54\n";
    assert_eq!(
        service::nameservers(t),
        vec![
            "10.0.0.53:53".parse().unwrap(),
            "10.0.0.54:53".parse().unwrap()
        ]
    );
    assert_eq!(service::upstreams_from(Some("none")), Ok(vec![]));
    assert_eq!(
        service::upstreams_from(Some("127.0.0.1:5353")),
        Ok(vec!["127.0.0.1:5353".parse().unwrap()])
    );
    assert_eq!(
        service::upstreams_from(Some("10.0.0.1")),
        Ok(vec!["10.0.0.1:53".parse().unwrap()])
    );
    // Several, in order; the first's family only, each once.
    assert_eq!(
        service::upstreams_from(Some("10.0.0.1, 10.0.0.2:5353,[2001:db8::1]:53,10.0.0.1")),
        Ok(vec![
            "10.0.0.1:53".parse().unwrap(),
            "10.0.0.2:5353".parse().unwrap()
        ])
    );
    assert!(
        service::upstreams_from(Some("10.0.0.1,nope"))
            .unwrap_err()
            .contains("'nope'")
    );
    assert!(
        service::upstreams_from(Some(","))
            .unwrap_err()
            .contains("empty")
    );
}

fn punted_udp(bridge: &str, payload: &[u8]) -> Punted {
    let packet = service::udp_packet(
        (Ipv4Addr::new(10, 1, 0, 2), 40000),
        (Ipv4Addr::new(10, 1, 0, 1), 53),
        payload,
    );
    Punted {
        bridge: 3,
        bridge_name: bridge.into(),
        in_port: 5,
        client_mac: [2, 0, 0, 0, 0, 2],
        gw_mac: [2, 0, 0, 0, 0, 1],
        gw_len: 24,
        packet,
    }
}

/// The DNS payload of a reply packet, after checking its addressing.
fn reply_payload(r: &super::punt::Reply) -> Message {
    assert_eq!((r.bridge, r.port), (3, 5));
    assert_eq!(r.dst_mac, [2, 0, 0, 0, 0, 2]);
    assert_eq!(r.src_mac, [2, 0, 0, 0, 0, 1]);
    let ip = Ipv4Packet::new_checked(&r.packet[..]).unwrap();
    assert!(ip.verify_checksum());
    assert_eq!(ip.src_addr(), Ipv4Addr::new(10, 1, 0, 1));
    assert_eq!(ip.dst_addr(), Ipv4Addr::new(10, 1, 0, 2));
    let udp = UdpPacket::new_checked(ip.payload()).unwrap();
    assert_eq!((udp.src_port(), udp.dst_port()), (53, 40000));
    Message::from_vec(udp.payload()).unwrap()
}

#[test]
fn service_answers_over_channels_and_forwards_to_a_fake_upstream() {
    // The fake upstream: answers every query with 198.51.100.9, except "mute." (never).
    let up = UdpSocket::bind("127.0.0.1:0").unwrap();
    up.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let up_addr = up.local_addr().unwrap();
    let fake = std::thread::spawn(move || {
        let mut buf = [0u8; 1500];
        for _ in 0..2 {
            let Ok((n, from)) = up.recv_from(&mut buf) else {
                return;
            };
            let q = Message::from_vec(&buf[..n]).unwrap();
            if q.queries[0].name().to_ascii() != "mute." {
                let a = upstream_answer(&buf[..n], Ipv4Addr::new(198, 51, 100, 9));
                up.send_to(&a, from).unwrap();
            }
        }
    });
    let (ptx, prx) = crossbeam_channel::bounded(16);
    let (rtx, rrx) = crossbeam_channel::bounded(16);
    let woken = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let w = woken.clone();
    let svc = service::start(
        prx,
        rtx,
        Arc::new(move || {
            w.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }),
        Arc::new(RwLock::new(registry())),
        ServiceOptions {
            upstreams: vec![up_addr],
            timeout_ms: 300,
        },
    )
    .unwrap();
    let t = Duration::from_secs(5);
    ptx.send(punted_udp("br0", &query(1, "web.", RecordType::A)))
        .unwrap();
    let m = reply_payload(&rrx.recv_timeout(t).unwrap());
    assert_eq!(a_records(&m), vec![Ipv4Addr::new(10, 1, 0, 2)]);
    ptx.send(punted_udp("br0", &query(2, "example.org.", RecordType::A)))
        .unwrap();
    let m = reply_payload(&rrx.recv_timeout(t).unwrap());
    assert_eq!(m.metadata.id, 2);
    assert_eq!(a_records(&m), vec![Ipv4Addr::new(198, 51, 100, 9)]);
    ptx.send(punted_udp("br0", &query(3, "mute.", RecordType::A)))
        .unwrap();
    let m = reply_payload(&rrx.recv_timeout(t).unwrap());
    assert_eq!(
        (m.metadata.id, m.metadata.response_code),
        (3, ResponseCode::ServFail)
    );
    // Garbage in a UDP packet: counted, no answer, the service lives on.
    ptx.send(punted_udp("br0", b"\x00\x01garbage")).unwrap();
    ptx.send(punted_udp("br0", &query(4, "www.", RecordType::A)))
        .unwrap();
    let m = reply_payload(&rrx.recv_timeout(t).unwrap());
    assert_eq!(m.metadata.id, 4);
    fake.join().unwrap();
    assert!(woken.load(std::sync::atomic::Ordering::SeqCst) >= 4);
    let deadline = std::time::Instant::now() + t;
    while svc.status().counters.malformed == 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let s = svc.status();
    assert_eq!(s.counters.malformed, 1);
    assert_eq!(s.counters.forwarded, 2);
    assert_eq!(s.counters.relayed, 1);
    assert_eq!(s.counters.servfail, 1);
}

#[test]
fn forwarded_queries_ask_for_answers_that_fit_a_frame() {
    let reg = registry();
    let mut core = Core::<u32>::default();
    let mut m = Message::new(11, MessageType::Query, OpCode::Query);
    m.add_query(Query::query(
        Name::from_ascii("big.example.").unwrap(),
        RecordType::TXT,
    ));
    let mut e = hickory_proto::op::Edns::new();
    e.set_max_payload(4096);
    m.set_edns(e);
    let Outcome::Forward(fwd) = core.query(&reg, "br0", SRC, &m.to_vec().unwrap(), 1, 0, true)
    else {
        panic!("not forwarded");
    };
    let sent = Message::from_vec(&fwd).unwrap();
    assert_eq!(
        sent.edns.map(|e| e.max_payload()),
        Some(super::answer::MAX_UDP_PAYLOAD)
    );
}

/// A smoltcp client on 10.1.0.2 talks DNS over TCP to br0's gateway 10.1.0.1 through
/// `TcpDns`, its segments carried as punted packets and replies: a registered name is answered,
/// the connection is closed cleanly. The clock reads an hour since start: the first connection
/// to a new endpoint was reset at once when its listener's idle clock started at 0 (found
/// trying uvs as a new user: every bridge's first TCP query after a start failed).
#[test]
fn tcp_queries_are_answered_through_the_smoltcp_endpoint() {
    const T0: u64 = 3_600_000;
    use smoltcp::iface::{Config, Interface, SocketSet};
    use smoltcp::socket::tcp;
    use smoltcp::time::Instant as SInstant;
    use smoltcp::wire::{HardwareAddress, IpAddress, IpCidr};

    let reg = registry();
    let mut core = Core::<service::Client>::default();
    let mut server = super::tcp::TcpDns::default();
    let mut dev = super::tcp::Queue::default();
    let mut iface = Interface::new(
        Config::new(HardwareAddress::Ip),
        &mut dev,
        SInstant::from_millis(0),
    );
    iface.update_ip_addrs(|a| {
        a.push(IpCidr::new(IpAddress::v4(10, 1, 0, 2), 24)).unwrap();
    });
    let mut sockets = SocketSet::new(Vec::new());
    let h = sockets.add(tcp::Socket::new(
        tcp::SocketBuffer::new(vec![0; 4096]),
        tcp::SocketBuffer::new(vec![0; 4096]),
    ));
    let remote = (IpAddress::v4(10, 1, 0, 1), 53);
    let sock = sockets.get_mut::<tcp::Socket>(h);
    sock.connect(iface.context(), remote, 40001).unwrap();
    let q = query(0x7777, "www.", RecordType::A);
    let (mut sent, mut got) = (false, Vec::new());
    for step in 0..200u64 {
        let now = T0 + step * 10;
        iface.poll(SInstant::from_millis(now as i64), &mut dev, &mut sockets);
        let sock = sockets.get_mut::<tcp::Socket>(h);
        if sock.may_send() && !sent {
            sock.send_slice(&(q.len() as u16).to_be_bytes()).unwrap();
            sock.send_slice(&q).unwrap();
            sent = true;
        }
        let mut buf = [0u8; 512];
        while sock.can_recv() {
            let n = sock.recv_slice(&mut buf).unwrap();
            got.extend_from_slice(&buf[..n]);
        }
        if got.len() >= 2 && got.len() >= 2 + u16::from_be_bytes([got[0], got[1]]) as usize {
            sock.close();
        }
        iface.poll(SInstant::from_millis(now as i64), &mut dev, &mut sockets);
        while let Some(packet) = dev.tx.pop_front() {
            let p = Punted {
                packet,
                ..punted_udp("br0", b"")
            };
            server.input(p, Ipv4Addr::new(10, 1, 0, 1), 24, now);
        }
        let (replies, forwards) = server.poll(&mut core, &reg, false, now);
        assert!(forwards.is_empty());
        for r in replies {
            assert_eq!((r.port, r.dst_mac), (5, [2, 0, 0, 0, 0, 2]));
            dev.rx.push_back(r.packet);
        }
        let state = sockets.get::<tcp::Socket>(h).state();
        if !got.is_empty() && matches!(state, tcp::State::Closed | tcp::State::TimeWait) {
            break;
        }
    }
    assert!(got.len() > 2, "an answer over TCP");
    let m = Message::from_vec(&got[2..]).unwrap();
    assert_eq!(m.metadata.id, 0x7777);
    assert_eq!(a_records(&m), vec![Ipv4Addr::new(10, 1, 0, 2)]);
    assert_eq!(core.counters.answered_local, 1);
}

#[test]
fn a_silent_upstream_hands_its_queries_to_the_next_and_the_next_is_preferred() {
    let reg = registry();
    let mut core = Core::<u32>::default();
    core.set_upstreams(3);
    let t = core.timeout_ms;
    let fwd = |o: Outcome| match o {
        Outcome::Forward(b) => b,
        o => panic!("not forwarded: {o:?}"),
    };
    let q1 = fwd(core.query(
        &reg,
        "br0",
        SRC,
        &query(1, "a.example.", RecordType::A),
        11,
        0,
        true,
    ));
    assert_eq!(core.upstream_of(&q1), 0);
    // Upstream 0 is silent: the same message goes to upstream 1, which new queries prefer.
    assert!(core.expire(t - 1).is_empty());
    assert_eq!(core.expire(t), vec![Next::Again(q1.clone())]);
    assert_eq!(core.upstream_of(&q1), 1);
    assert_eq!(core.upstream_of(&[]), 1);
    let q2 = fwd(core.query(
        &reg,
        "br0",
        SRC,
        &query(2, "b.example.", RecordType::A),
        12,
        t,
        true,
    ));
    assert_eq!(core.upstream_of(&q2), 1);
    // Upstream 1 cannot be reached for q2: on to upstream 2 at once.
    assert_eq!(
        core.upstream_failed(&q2, t + 5),
        Some(Next::Again(q2.clone()))
    );
    assert_eq!(core.upstream_of(&q2), 2);
    // Upstream 2 answers q2; q1 is still waiting at upstream 1 (its deadline restarted).
    let a2 = core.upstream_reply(&upstream_answer(&q2, Ipv4Addr::new(192, 0, 2, 2)));
    let (c, b) = a2.expect("q2 relayed");
    assert_eq!(c, 12);
    assert_eq!(Message::from_vec(&b).unwrap().metadata.id, 2);
    assert!(core.expire(2 * t - 1).is_empty());
    assert_eq!(core.expire(2 * t), vec![Next::Again(q1.clone())]);
    assert_eq!(core.upstream_of(&q1), 2);
    // Every upstream was asked once: SERVFAIL with the client's id, nothing left waiting.
    let late = core.expire(3 * t);
    let [Next::Fail(c, b)] = &late[..] else {
        panic!("expected one SERVFAIL, got {late:?}")
    };
    assert_eq!(*c, 11);
    let m = Message::from_vec(b).unwrap();
    assert_eq!(
        (m.metadata.id, m.metadata.response_code),
        (1, ResponseCode::ServFail)
    );
    assert_eq!(core.waiting(), 0);
    assert_eq!(
        (
            core.counters.retried,
            core.counters.servfail,
            core.counters.relayed
        ),
        (3, 1, 1)
    );
}

#[test]
fn service_moves_on_from_a_silent_upstream_and_stays_with_the_one_that_answers() {
    // Upstream 1 never answers (a socket that only counts); upstream 2 answers everything.
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    silent
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let silent_addr = silent.local_addr().unwrap();
    let up = UdpSocket::bind("127.0.0.1:0").unwrap();
    up.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let up_addr = up.local_addr().unwrap();
    let fake = std::thread::spawn(move || {
        let mut buf = [0u8; 1500];
        for _ in 0..3 {
            let Ok((n, from)) = up.recv_from(&mut buf) else {
                return;
            };
            let a = upstream_answer(&buf[..n], Ipv4Addr::new(198, 51, 100, 10));
            up.send_to(&a, from).unwrap();
        }
    });
    let (ptx, prx) = crossbeam_channel::bounded(16);
    let (rtx, rrx) = crossbeam_channel::bounded(16);
    let svc = service::start(
        prx,
        rtx,
        Arc::new(|| {}),
        Arc::new(RwLock::new(registry())),
        ServiceOptions {
            upstreams: vec![silent_addr, up_addr],
            timeout_ms: 300,
        },
    )
    .unwrap();
    assert_eq!(svc.status().upstream, format!("{silent_addr},{up_addr}"));
    let t = Duration::from_secs(5);
    for id in 1..=3u16 {
        ptx.send(punted_udp("br0", &query(id, "example.org.", RecordType::A)))
            .unwrap();
        let m = reply_payload(&rrx.recv_timeout(t).unwrap());
        assert_eq!(
            (m.metadata.id, m.metadata.response_code),
            (id, ResponseCode::NoError)
        );
        assert_eq!(a_records(&m), vec![Ipv4Addr::new(198, 51, 100, 10)]);
    }
    fake.join().unwrap();
    // Only the first query went to the silent upstream; the others went straight on.
    let mut buf = [0u8; 1500];
    let mut at_silent = 0;
    while silent.recv_from(&mut buf).is_ok() {
        at_silent += 1;
    }
    assert_eq!(at_silent, 1);
    let s = svc.status();
    assert_eq!(s.preferred, up_addr.to_string());
    assert_eq!(
        (s.counters.forwarded, s.counters.retried, s.counters.relayed),
        (3, 1, 3)
    );
    assert_eq!(s.counters.servfail, 0);
}

/// Clients on 10.1.0.2 and 10.1.0.3 (one smoltcp interface) and br0's TCP endpoint, their
/// segments carried between them as punted packets and replies.
struct TcpRig {
    reg: Registry,
    core: Core<service::Client>,
    server: super::tcp::TcpDns,
    dev: super::tcp::Queue,
    iface: smoltcp::iface::Interface,
    sockets: smoltcp::iface::SocketSet<'static>,
    now: u64,
}

impl TcpRig {
    fn new() -> TcpRig {
        use smoltcp::iface::{Config, Interface, SocketSet};
        use smoltcp::wire::{HardwareAddress, IpAddress, IpCidr};
        let mut dev = super::tcp::Queue::default();
        let mut iface = Interface::new(
            Config::new(HardwareAddress::Ip),
            &mut dev,
            smoltcp::time::Instant::from_millis(0),
        );
        iface.update_ip_addrs(|a| {
            a.push(IpCidr::new(IpAddress::v4(10, 1, 0, 2), 24)).unwrap();
            a.push(IpCidr::new(IpAddress::v4(10, 1, 0, 3), 24)).unwrap();
        });
        TcpRig {
            reg: registry(),
            core: Core::default(),
            server: super::tcp::TcpDns::default(),
            dev,
            iface,
            sockets: SocketSet::new(Vec::new()),
            now: 3_600_000,
        }
    }

    /// A connection from `src`:`port` to the gateway's port 53.
    fn connect(&mut self, src: [u8; 4], port: u16) -> smoltcp::iface::SocketHandle {
        use smoltcp::socket::tcp;
        use smoltcp::wire::IpAddress;
        let h = self.sockets.add(tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; 4096]),
            tcp::SocketBuffer::new(vec![0; 4096]),
        ));
        let [a, b, c, d] = src;
        self.sockets
            .get_mut::<tcp::Socket>(h)
            .connect(
                self.iface.context(),
                (IpAddress::v4(10, 1, 0, 1), 53),
                (IpAddress::v4(a, b, c, d), port),
            )
            .unwrap();
        h
    }

    /// `n` steps of 10 ms: segments both ways, the server polled.
    fn run(&mut self, n: u64) {
        for _ in 0..n {
            self.now += 10;
            let t = smoltcp::time::Instant::from_millis(self.now as i64);
            self.iface.poll(t, &mut self.dev, &mut self.sockets);
            while let Some(packet) = self.dev.tx.pop_front() {
                let p = Punted {
                    packet,
                    ..punted_udp("br0", b"")
                };
                self.server
                    .input(p, Ipv4Addr::new(10, 1, 0, 1), 24, self.now);
            }
            let (replies, _) = self.server.poll(&mut self.core, &self.reg, false, self.now);
            self.dev.rx.extend(replies.into_iter().map(|r| r.packet));
        }
    }

    fn state(&self, h: smoltcp::iface::SocketHandle) -> smoltcp::socket::tcp::State {
        self.sockets.get::<smoltcp::socket::tcp::Socket>(h).state()
    }
}

/// One tenant holding every TCP socket of its gateway's DNS (64 idle connections) does not
/// refuse the others: it keeps `MAX_PER_SOURCE` (its own oldest make room for its newer ones),
/// and a neighbour's query is answered. Found trying uvs as a hostile tenant: the 65th
/// connection of the bridge, from anyone, was reset for as long as the 64 stayed.
#[test]
fn one_source_cannot_hold_a_bridges_tcp_dns() {
    use smoltcp::socket::tcp::State;
    let mut rig = TcpRig::new();
    // A few at a time, as a client opening them in a loop does.
    let mut held = Vec::new();
    for i in 0..64 {
        held.push(rig.connect([10, 1, 0, 2], 41000 + i));
        if i % 4 == 3 {
            rig.run(2);
        }
    }
    rig.run(50);
    // A neighbour connects and asks.
    let v = rig.connect([10, 1, 0, 3], 42000);
    let q = query(0x4242, "www.", RecordType::A);
    let mut got = Vec::new();
    for _ in 0..100 {
        rig.run(1);
        let s = rig.sockets.get_mut::<smoltcp::socket::tcp::Socket>(v);
        if s.may_send() && s.send_queue() == 0 && got.is_empty() {
            s.send_slice(&(q.len() as u16).to_be_bytes()).unwrap();
            s.send_slice(&q).unwrap();
        }
        let mut buf = [0u8; 512];
        while s.can_recv() {
            let n = s.recv_slice(&mut buf).unwrap();
            got.extend_from_slice(&buf[..n]);
        }
        if got.len() > 2 {
            break;
        }
    }
    assert!(
        got.len() > 2,
        "the neighbour answered over TCP: {:?}",
        rig.state(v)
    );
    let m = Message::from_vec(&got[2..]).unwrap();
    assert_eq!(m.metadata.id, 0x4242);
    let open = held
        .iter()
        .filter(|&&h| rig.state(h) == State::Established)
        .count();
    assert_eq!(
        open,
        super::tcp::MAX_PER_SOURCE,
        "the attacker's connections kept"
    );
    let c = rig.server.counters;
    assert!(c.source_limited >= 1, "{c:?}");
}

/// The eviction policy alone: a source at its limit loses its own idle-longest connection; a
/// full pool loses a closing connection first, else the idle-longest of the source holding
/// the most (the newcomer's own on a tie); a pool with room loses nothing.
#[test]
fn tcp_dns_eviction_picks_the_biggest_holders_idle_longest() {
    use super::tcp::{Evict, Held, pick_victim};
    let a = Ipv4Addr::new(10, 1, 0, 2);
    let b = Ipv4Addr::new(10, 1, 0, 3);
    let c = Ipv4Addr::new(10, 1, 0, 4);
    let h = |key: u32, src, closing, last_ms| Held {
        key,
        src,
        closing,
        last_ms,
    };
    let held = [
        h(1, a, false, 50),
        h(2, a, false, 10),
        h(3, a, false, 30),
        h(4, b, false, 5),
        h(5, c, false, 1),
    ];
    assert_eq!(pick_victim(&held, b, false, 3), None, "room left");
    assert_eq!(
        pick_victim(&held, a, false, 3),
        Some((2, Evict::SourceLimit))
    );
    assert_eq!(pick_victim(&held, b, true, 3), Some((2, Evict::Full)));
    assert_eq!(pick_victim(&held, c, true, 16), Some((2, Evict::Full)));
    let mut closing = held.to_vec();
    closing[0].closing = true;
    assert_eq!(pick_victim(&closing, c, true, 16), Some((1, Evict::Full)));
    // Sources holding one each: the newcomer's own goes on a tie, else the idle-longest.
    let even = [h(1, a, false, 9), h(2, b, false, 1)];
    assert_eq!(pick_victim(&even, a, true, 16), Some((1, Evict::Full)));
    assert_eq!(pick_victim(&even, c, true, 16), Some((2, Evict::Full)));
}

/// A tenant whose names the upstream never answers fills the forwarding table from many
/// addresses of its bridge: another bridge's queries are still forwarded and answered, each
/// pushing out the tenant's oldest (SERVFAIL, counted).
#[test]
fn one_bridge_filling_the_forwarding_table_does_not_starve_another() {
    use super::answer::MAX_PENDING;
    let reg = registry();
    let mut core = Core::<u32>::default();
    let hostile = |i: u32| Ipv4Addr::new(10, 2, 0, 10 + (i % 8) as u8);
    for i in 0..MAX_PENDING as u32 {
        let q = query(i as u16, &format!("n{i}.slow.example."), RecordType::A);
        let o = core.query(&reg, "br1", hostile(i), &q, i, 0, true);
        assert!(matches!(o, Outcome::Forward(_)), "{i}: {o:?}");
    }
    assert_eq!(core.waiting(), MAX_PENDING);
    let q = query(0x5151, "example.org.", RecordType::A);
    let o = core.query(&reg, "br0", SRC, &q, 100_000, 10, true);
    let Outcome::Forward(fwd) = o else {
        panic!("br0's query was not forwarded: {o:?}");
    };
    assert_eq!(core.waiting(), MAX_PENDING);
    // The pushed-out query: the oldest of one of br1's addresses (they hold 128 each),
    // answered SERVFAIL with its own id.
    let out = core.expire(10);
    let [Next::Fail(c, b)] = out.as_slice() else {
        panic!("one query pushed out: {out:?}");
    };
    assert!(*c < 8, "an address's oldest: {c}");
    let m = Message::from_vec(b).unwrap();
    assert_eq!(
        (m.metadata.id, m.metadata.response_code),
        (*c as u16, ResponseCode::ServFail)
    );
    assert_eq!(
        m.queries[0].name().to_ascii(),
        format!("n{c}.slow.example.")
    );
    assert_eq!((core.counters.evicted, core.counters.servfail), (1, 1));
    let (client, bytes) = core
        .upstream_reply(&upstream_answer(&fwd, Ipv4Addr::new(198, 51, 100, 8)))
        .expect("relayed");
    assert_eq!(client, 100_000);
    assert_eq!(Message::from_vec(&bytes).unwrap().metadata.id, 0x5151);
    // br0 keeps asking while br1 holds more: every br0 query stays, br1's go.
    let mut mine = Vec::new();
    for i in 0..100u32 {
        let q = query(i as u16, &format!("m{i}.example."), RecordType::A);
        let a = Ipv4Addr::new(10, 1, 0, 20 + (i % 3) as u8);
        match core.query(&reg, "br0", a, &q, 200_000 + i, 20, true) {
            Outcome::Forward(f) => mine.push((200_000 + i, f)),
            o => panic!("br0 query {i}: {o:?}"),
        }
    }
    // The first took the slot the relayed answer freed; the 99 others each pushed one out.
    let failed = core.expire(20);
    assert_eq!(failed.len(), 99);
    assert!(
        failed
            .iter()
            .all(|n| matches!(n, Next::Fail(c, _) if *c < MAX_PENDING as u32)),
        "only br1's queries were pushed out"
    );
    for (c, f) in mine {
        let (client, _) = core
            .upstream_reply(&upstream_answer(&f, Ipv4Addr::LOCALHOST))
            .expect("still waiting");
        assert_eq!(client, c);
    }
    assert_eq!(core.counters.evicted, 100);
    assert_eq!(core.counters.source_limited, 0);
}

/// Within one bridge: an address with MAX_PENDING_PER_SOURCE waiting pushes out its own
/// oldest; when the table is full, a neighbour's query pushes out the oldest of the address
/// holding the most, not the neighbour's; the tenant's bridge alone may use the whole table.
#[test]
fn one_address_cannot_hold_its_bridges_share_of_the_forwarding_table() {
    use super::answer::{MAX_PENDING, MAX_PENDING_PER_SOURCE};
    let reg = registry();
    let mut core = Core::<u32>::default();
    let (hostile, neighbour) = (Ipv4Addr::new(10, 1, 0, 66), Ipv4Addr::new(10, 1, 0, 7));
    let fwd = |core: &mut Core<u32>, a: Ipv4Addr, i: u32| {
        let q = query(i as u16, &format!("n{i}.slow.example."), RecordType::A);
        match core.query(&reg, "br0", a, &q, i, u64::from(i), true) {
            Outcome::Forward(f) => f,
            o => panic!("{i}: {o:?}"),
        }
    };
    for i in 0..MAX_PENDING_PER_SOURCE as u32 + 1 {
        fwd(&mut core, hostile, i);
    }
    assert_eq!(core.waiting(), MAX_PENDING_PER_SOURCE);
    assert_eq!(core.counters.source_limited, 1);
    let out = core.expire(1000);
    assert!(matches!(out.as_slice(), [Next::Fail(0, _)]), "{out:?}");
    // The neighbour's query is older than the other addresses' that fill the table.
    let mine = fwd(&mut core, neighbour, 5000);
    let mut i = 10_000;
    while core.waiting() < MAX_PENDING {
        let a = Ipv4Addr::new(10, 1, 1, (i % 200) as u8);
        fwd(&mut core, a, i);
        i += 1;
    }
    // A newcomer pushes out the hostile address's oldest (it holds the most): query 1.
    fwd(&mut core, Ipv4Addr::new(10, 1, 0, 8), 6000);
    let out = core.expire(2000);
    assert!(matches!(out.as_slice(), [Next::Fail(1, _)]), "{out:?}");
    assert_eq!(core.counters.evicted, 1);
    assert_eq!(core.waiting(), MAX_PENDING);
    // The neighbour's query still waits: its upstream answer is relayed.
    let (c, _) = core
        .upstream_reply(&upstream_answer(&mine, Ipv4Addr::LOCALHOST))
        .expect("still waiting");
    assert_eq!(c, 5000);
}

/// Through the service: a tenant's queries the upstream never answers fill the forwarding
/// table from four addresses of bridge 4; a query from bridge 3 is still forwarded and its
/// answer relayed, the tenant's pushed-out query gets SERVFAIL on its own bridge, and the
/// status counts the eviction.
#[test]
fn service_keeps_forwarding_for_a_bridge_while_another_fills_the_table() {
    use super::answer::MAX_PENDING;
    use std::sync::atomic::{AtomicBool, Ordering};
    let up = UdpSocket::bind("127.0.0.1:0").unwrap();
    up.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let up_addr = up.local_addr().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let st = stop.clone();
    // Answers example.org. only; the tenant's names never.
    let fake = std::thread::spawn(move || {
        let mut buf = [0u8; 1500];
        while !st.load(Ordering::SeqCst) {
            let Ok((n, from)) = up.recv_from(&mut buf) else {
                continue;
            };
            let q = Message::from_vec(&buf[..n]).unwrap();
            if q.queries[0].name().to_ascii() == "example.org." {
                let a = upstream_answer(&buf[..n], Ipv4Addr::new(198, 51, 100, 11));
                up.send_to(&a, from).unwrap();
            }
        }
    });
    let (ptx, prx) = crossbeam_channel::bounded(2 * MAX_PENDING);
    let (rtx, rrx) = crossbeam_channel::bounded(2 * MAX_PENDING);
    let svc = service::start(
        prx,
        rtx,
        Arc::new(|| {}),
        Arc::new(RwLock::new(registry())),
        ServiceOptions {
            upstreams: vec![up_addr],
            timeout_ms: 60_000,
        },
    )
    .unwrap();
    for i in 0..MAX_PENDING {
        let mut p = punted_udp(
            "br1",
            &query(i as u16, &format!("n{i}.slow.example."), RecordType::A),
        );
        p.bridge = 4;
        // Source address 10.1.0.(10 + i % 4); the checksums are not checked.
        p.packet[15] = 10 + (i % 4) as u8;
        ptx.send(p).unwrap();
    }
    ptx.send(punted_udp(
        "br0",
        &query(0x6161, "example.org.", RecordType::A),
    ))
    .unwrap();
    let t = Duration::from_secs(10);
    let (mut ours, mut theirs) = (None, None);
    while ours.is_none() || theirs.is_none() {
        let r = rrx.recv_timeout(t).expect("two replies");
        if r.bridge == 3 {
            ours = Some(reply_payload(&r));
        } else {
            let ip = Ipv4Packet::new_checked(&r.packet[..]).unwrap();
            let udp = UdpPacket::new_checked(ip.payload()).unwrap();
            theirs = Some((ip.dst_addr(), Message::from_vec(udp.payload()).unwrap()));
        }
    }
    let m = ours.unwrap();
    assert_eq!(m.metadata.id, 0x6161);
    assert_eq!(a_records(&m), vec![Ipv4Addr::new(198, 51, 100, 11)]);
    let (dst, m) = theirs.unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
    let first = usize::from(m.metadata.id);
    assert!(first < 4, "an address's oldest: {first}");
    assert_eq!(dst, Ipv4Addr::new(10, 1, 0, 10 + first as u8));
    assert!(rrx.try_recv().is_err(), "nothing else answered");
    let deadline = std::time::Instant::now() + t;
    while svc.status().counters.evicted == 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let s = svc.status();
    assert_eq!((s.counters.evicted, s.counters.servfail), (1, 1));
    assert_eq!(s.waiting, MAX_PENDING - 1);
    stop.store(true, Ordering::SeqCst);
    fake.join().unwrap();
}
