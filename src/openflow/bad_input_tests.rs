//! Malformed and truncated messages: the OFPT_ERROR type and code OpenFlow prescribes
//! (OFPET_BAD_REQUEST = 1 with OFPBRC_BAD_LEN = 6 / OFPBRC_BAD_VERSION = 0, OFPET_HELLO_FAILED
//! = 0), the request echoed, and whether the connection survives.

use super::codec::{OF10, OF13};
use super::tests::fake;
use super::*;

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn session(v: u8, sw: &dyn Switch) -> Session {
    let mut s = Session::default();
    assert_eq!(s.handle(&[v, 0, 0, 8, 0, 0, 0, 1], sw), (vec![], false));
    s
}

/// (type, code, xid) of a single error reply, checking it echoes `req`.
fn error_of(out: &[Vec<u8>], req: &[u8]) -> (u16, u16, u32) {
    assert_eq!(out.len(), 1, "{out:02x?}");
    let e = &out[0];
    assert_eq!(e[1], 1, "OFPT_ERROR");
    assert_eq!(usize::from(u16::from_be_bytes([e[2], e[3]])), e.len());
    assert_eq!(&e[12..], &req[..req.len().min(64)]);
    let t = u16::from_be_bytes([e[8], e[9]]);
    let c = u16::from_be_bytes([e[10], e[11]]);
    (t, c, u32::from_be_bytes([e[4], e[5], e[6], e[7]]))
}

/// Whole messages from `ovs-ofctl` 3.1 (fuzz/seeds/openflow) or hand-built, and the length of
/// their type's fixed part.
const FIXED: &[(&str, usize)] = &[
    // OpenFlow 1.0: FLOW_MOD (strip_vlan,output:3), PACKET_OUT, STATS_REQUEST (desc),
    // SET_CONFIG, VENDOR (NXT_SET_FLOW_FORMAT).
    (
        "010e005800000002003820fc0001000000000000000000000000000500000000000000000000000000000000000000000000000000000000000000000000000affffffffffff000000030008000000000000000800030000",
        72,
    ),
    (
        "010d002600000002ffffffff000100080000000800020000ffffffffffff02000000000108060001",
        16,
    ),
    ("0110000c0000000200000000", 12),
    ("0109000c0000000200000080", 12),
    ("0104001400000006000023200000000c00000002", 12),
    // OpenFlow 1.3: FLOW_MOD (del-flows), PACKET_OUT, GROUP_MOD, METER_MOD, MULTIPART (port
    // stats), ROLE_REQUEST, SET_ASYNC.
    (
        "040e0048000000020000000000000042ffffffffffffffffff03000000008000ffffffffffffffffffffffff000000000001001580000a020800800014011180001e020035000000",
        56,
    ),
    (
        "040d003200000002ffffffff00000001001000000000000000000010000000020000000000000000ffffffffffff02000000000108060001",
        24,
    ),
    (
        "040f00600000000200000100000000010020000affffffffffffffff000000000000001000000001000000000000000000300014ffffffffffffffff000000000019001080000606020000000009000000000010000000020000000000000000",
        16,
    ),
    (
        "041d002000000002000000050000000100010010000003e80000006400000000",
        16,
    ),
    ("04120018000000020004000000000000ffffffff00000000", 16),
    ("041800180000000900000002000000000000000000000007", 24),
    (
        "041c0020000000aa000000030000000000000007000000070000000f00000000",
        32,
    ),
];

#[test]
fn a_message_shorter_than_its_fixed_part_is_bad_len() {
    let sw = fake();
    for (m, fixed) in FIXED {
        let m = hex(m);
        let v = m[0];
        let mut s = session(v, &sw);
        for cut in 8..*fixed {
            let mut t = m[..cut].to_vec();
            t[2..4].copy_from_slice(&(cut as u16).to_be_bytes());
            let (out, close) = s.handle(&t, &sw);
            assert!(!close, "{t:02x?}");
            let (ty, code, xid) = error_of(&out, &t);
            assert_eq!((ty, code), (1, 6), "OFPBRC_BAD_LEN for {t:02x?}");
            assert_eq!(xid, u32::from_be_bytes([t[4], t[5], t[6], t[7]]));
        }
        // The connection goes on: an echo is answered.
        let (out, _) = s.handle(&[v, 2, 0, 8, 0, 0, 0, 77], &sw);
        assert_eq!(out, vec![vec![v, 3, 0, 8, 0, 0, 0, 77]]);
    }
}

#[test]
fn fixed_size_messages_with_extra_bytes_are_bad_len() {
    let sw = fake();
    for (v, typ) in [
        (OF10, 5),
        (OF10, 7),
        (OF10, 9),
        (OF10, 18),
        (OF13, 20),
        (OF13, 24),
        (OF13, 26),
    ] {
        let mut s = session(v, &sw);
        let n = if typ == 9 {
            16
        } else if typ == 24 {
            28
        } else {
            12
        };
        let mut m = vec![0u8; n];
        m[..8].copy_from_slice(&[v, typ, 0, n as u8, 0, 0, 0, 5]);
        let (out, close) = s.handle(&m, &sw);
        assert!(!close);
        assert_eq!(error_of(&out, &m), (1, 6, 5), "type {typ}");
    }
}

#[test]
fn header_length_other_than_the_bytes_is_bad_len() {
    let sw = fake();
    for v in [OF10, OF13] {
        let mut s = session(v, &sw);
        // An echo request claiming 12 bytes with 8, then one claiming 8 with 12.
        let short = [v, 2, 0, 12, 0, 0, 0, 3];
        let (out, close) = s.handle(&short, &sw);
        assert!(!close);
        assert_eq!(error_of(&out, &short), (1, 6, 3));
        let long = [v, 2, 0, 8, 0, 0, 0, 4, 1, 2, 3, 4];
        let (out, close) = s.handle(&long, &sw);
        assert!(!close);
        assert_eq!(error_of(&out, &long), (1, 6, 4));
        let (out, _) = s.handle(&[v, 2, 0, 8, 0, 0, 0, 5], &sw);
        assert_eq!(out.len(), 1);
    }
}

#[test]
fn a_length_below_8_is_bad_len_and_closes() {
    let sw = fake();
    for v in [OF10, OF13] {
        let mut s = session(v, &sw);
        for len in 0..8u8 {
            let m = [v, 2, 0, len, 0, 0, 0, 9];
            let (out, close) = s.handle(&m, &sw);
            assert!(close, "the stream cannot be resynchronised");
            assert_eq!(error_of(&out, &m), (1, 6, 9));
            assert_eq!(out[0][0], v);
        }
    }
    // Before negotiation: the error speaks 1.0 or 1.3, whatever the peer's version byte.
    let (out, close) = Session::default().handle(&[0x7f, 0, 0, 2, 0, 0, 0, 1], &sw);
    assert!(close);
    assert_eq!(out[0][0], OF13);
    // Fewer than 8 bytes.
    let (out, close) = Session::default().handle(&[1, 0, 0], &sw);
    assert!(close);
    assert_eq!(error_of(&out, &[1, 0, 0]), (1, 6, 0));
}

#[test]
fn a_bad_version_is_bad_version_or_hello_failed() {
    let sw = fake();
    // After negotiation: OFPBRC_BAD_VERSION, and the connection goes on.
    for (v, other) in [(OF10, OF13), (OF13, OF10), (OF13, 0x05), (OF10, 0)] {
        let mut s = session(v, &sw);
        let m = [other, 2, 0, 8, 0, 0, 0, 6];
        let (out, close) = s.handle(&m, &sw);
        assert!(!close);
        assert_eq!(error_of(&out, &m), (1, 0, 6));
        assert_eq!(out[0][0], v, "the error speaks the negotiated version");
    }
    // During negotiation: HELLO_FAILED / INCOMPATIBLE, and close.
    for hello in [
        "0200000800000001",
        "0000000800000001",
        "0600001000000001000100080000000c",
    ] {
        let (out, close) = Session::default().handle(&hex(hello), &sw);
        assert!(close, "{hello}");
        assert_eq!(&out[0][8..12], &[0, 0, 0, 0], "{hello}");
    }
    // A message other than HELLO first: HELLO_FAILED too.
    let (out, close) = Session::default().handle(&hex("0402000800000001"), &sw);
    assert!(close);
    assert_eq!((out[0][1], &out[0][8..12]), (1, &[0u8, 0, 0, 0][..]));
}

#[test]
fn the_stream_closes_after_a_length_below_8_only() {
    let mut input = hex("04000010000000010001000800000012"); // HELLO 1.3 (bitmap 1.0+1.3)
    input.extend(hex("0405000c00000002cafef00d")); // FEATURES_REQUEST with 4 extra bytes
    input.extend(hex("0102000800000003")); // a 1.0 echo on a 1.3 connection
    input.extend(hex("0402000800000004")); // echo
    input.extend(hex("0402000300000005")); // length 3
    input.extend(hex("0402000800000006")); // never read
    let mut want = Session::hello();
    want.extend(hex("040100180000000200010006"));
    want.extend(hex("0405000c00000002cafef00d"));
    want.extend(hex("0401001400000003000100000102000800000003"));
    want.extend(hex("0403000800000004"));
    want.extend(hex("0401001400000005000100060402000300000005"));
    assert_eq!(super::tests::converse(input), want);
}
