//! Merging checked byte for byte against super-frames built independently with etherparse, and
//! against the original segments after cutting the merged frame again.

use super::*;
use crate::datapath::{BridgeOptions, PortState, VlanMode};
use crate::port::PortKind;
use crate::wire::checksum::pseudo_v4;
use etherparse::{
    EtherType as Et, Ethernet2Header, IpNumber, Ipv4Header, TcpHeader, TcpOptionElement,
};

const SRC4: [u8; 4] = [10, 1, 0, 2];
const DST4: [u8; 4] = [10, 2, 0, 9];
const MSS: usize = 1000;

/// How a test segment differs from the plain one.
#[derive(Clone, Copy, Default)]
struct Opt {
    psh: bool,
    fin: bool,
    rst: bool,
    urg: bool,
    sport: u16,
    tsval: u32,
    ip_options: bool,
    partial: bool,
}

/// Ethernet + IPv4 (DF) + TCP (ACK, timestamps) with a complete checksum (or the pseudo-header
/// sum when `o.partial`).
fn seg(seq: u32, id: u16, o: Opt, payload: &[u8]) -> Vec<u8> {
    let sport = if o.sport == 0 { 40000 } else { o.sport };
    let mut tcp = TcpHeader::new(sport, 5201, seq, 502);
    tcp.ack = true;
    tcp.acknowledgment_number = 77;
    (tcp.psh, tcp.fin, tcp.rst, tcp.urg) = (o.psh, o.fin, o.rst, o.urg);
    tcp.set_options(&[
        TcpOptionElement::Noop,
        TcpOptionElement::Noop,
        TcpOptionElement::Timestamp(o.tsval, 2),
    ])
    .unwrap();
    let l4_len = tcp.header_len() + payload.len();
    let mut v = Vec::new();
    Ethernet2Header {
        source: [2, 0, 0, 0, 0, 1],
        destination: [2, 0, 0, 0, 0, 2],
        ether_type: Et::IPV4,
    }
    .write(&mut v)
    .unwrap();
    let mut ip = Ipv4Header::new(l4_len as u16, 64, IpNumber::TCP, SRC4, DST4).unwrap();
    ip.identification = id;
    ip.dont_fragment = true;
    if o.ip_options {
        ip.options = [1u8, 1, 1, 0][..].try_into().unwrap();
    }
    ip.header_checksum = ip.calc_header_checksum();
    tcp.checksum = tcp.calc_checksum_ipv4(&ip, payload).unwrap();
    if o.partial {
        tcp.checksum = fold(pseudo_v4(&SRC4, &DST4, 6, l4_len as u16));
    }
    ip.write(&mut v).unwrap();
    tcp.write(&mut v).unwrap();
    v.extend_from_slice(payload);
    v
}

fn payload(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 + i / 251) as u8).collect()
}

fn put(frames: &mut Frames, bytes: &[u8]) -> Desc {
    let mut d = frames.alloc().unwrap();
    d.len = bytes.len() as u32;
    frames.data_mut(d).copy_from_slice(bytes);
    d
}

/// Queue of frames (offload state `ol`), the bytes of each frame after coalescing, and the
/// segments merged.
fn queue_ol(frames: &mut Frames, segs: &[Vec<u8>], ol: Offload) -> (Vec<Desc>, Vec<Vec<u8>>, u64) {
    let mut q: Vec<Desc> = segs
        .iter()
        .map(|s| Desc {
            ol,
            ..put(frames, s)
        })
        .collect();
    let n = coalesce(frames, &mut q);
    let bytes = q.iter().map(|d| frames.data(*d).to_vec()).collect();
    (q, bytes, n)
}

/// [`queue_ol`] for frames with complete checksums; the frames are freed, their bytes kept.
fn run_queue(frames: &mut Frames, segs: &[Vec<u8>]) -> (Vec<Desc>, Vec<Vec<u8>>, u64) {
    let (q, bytes, n) = queue_ol(frames, segs, Offload::NONE);
    for d in &q {
        frames.free(d.addr);
    }
    (q, bytes, n)
}

/// `n` consecutive segments of MSS bytes (the last `last` bytes) of one flow from `seq0`.
fn flow(seq0: u32, n: usize, last: usize, o: Opt) -> (Vec<Vec<u8>>, Vec<u8>) {
    let total = MSS * (n - 1) + last;
    let data = payload(total);
    let segs = (0..n)
        .map(|i| {
            let end = (i * MSS + MSS).min(total);
            seg(
                seq0.wrapping_add((i * MSS) as u32),
                100 + i as u16,
                o,
                &data[i * MSS..end],
            )
        })
        .collect();
    (segs, data)
}

#[test]
fn merges_consecutive_segments_into_one_super_frame() {
    let mut frames = Frames::new(256).unwrap();
    let (segs, data) = flow(0xffff_fc00, 45, 321, Opt::default());
    let (q, bytes, n) = queue_ol(&mut frames, &segs, Offload::NONE);
    assert_eq!((q.len(), n), (1, 45));
    assert!(q[0].is_big());
    assert_eq!(q[0].ol, Offload::gso(GsoType::Tcp4, MSS as u16));
    // The super-frame etherparse builds from the first segment's headers and all the data,
    // with a partial checksum (the pseudo-header sum).
    let want = seg(
        0xffff_fc00,
        100,
        Opt {
            partial: true,
            ..Opt::default()
        },
        &data,
    );
    assert_eq!(bytes[0], want);
    // Cut again at the MSS, it gives back the segments (ids counted from the first's).
    let mut out = Vec::new();
    assert_eq!(gso::segment(&mut frames, q[0], MSS, &mut out), Ok(45));
    for (i, s) in out.iter().enumerate() {
        assert_eq!(frames.data(*s), &segs[i][..], "segment {i}");
        frames.free(s.addr);
    }
    assert_eq!(frames.in_use(), 0, "every segment's frame was freed");
}

#[test]
fn psh_and_a_short_segment_end_a_run() {
    let mut frames = Frames::new(64).unwrap();
    let (mut segs, _) = flow(1, 6, MSS, Opt::default());
    // Segment 2 carries PSH: 0..=2 merge with PSH set; 3 is short: 3..=4 merge; 5 alone.
    let d = payload(MSS * 6);
    segs[2] = seg(
        1 + 2 * MSS as u32,
        102,
        Opt {
            psh: true,
            ..Opt::default()
        },
        &d[2 * MSS..3 * MSS],
    );
    segs[4] = seg(
        1 + 4 * MSS as u32,
        104,
        Opt::default(),
        &d[4 * MSS..4 * MSS + 10],
    );
    segs[5] = seg(
        1 + 4 * MSS as u32 + 10,
        105,
        Opt::default(),
        &d[4 * MSS + 10..5 * MSS],
    );
    let (q, bytes, n) = run_queue(&mut frames, &segs);
    assert_eq!((q.len(), n), (3, 5));
    let psh = Opt {
        psh: true,
        partial: true,
        ..Opt::default()
    };
    assert_eq!(bytes[0], seg(1, 100, psh, &d[..3 * MSS]));
    let partial = Opt {
        partial: true,
        ..Opt::default()
    };
    assert_eq!(
        bytes[1],
        seg(1 + 3 * MSS as u32, 103, partial, &d[3 * MSS..4 * MSS + 10])
    );
    assert_eq!(bytes[2], segs[5], "a lone segment stays as it was");
    assert!(q[2].ol.is_none() && !q[2].is_big());
}

#[test]
fn out_of_order_and_interleaved_flows_are_not_merged() {
    let mut frames = Frames::new(64).unwrap();
    let (a, _) = flow(1, 3, MSS, Opt::default());
    let (b, _) = flow(
        1,
        2,
        MSS,
        Opt {
            sport: 40001,
            ..Opt::default()
        },
    );
    // Out of order: 0, 2, 1.
    let ooo = vec![a[0].clone(), a[2].clone(), a[1].clone()];
    let (q, bytes, n) = run_queue(&mut frames, &ooo);
    assert_eq!((q.len(), n), (3, 0));
    assert_eq!(bytes, ooo);
    // Interleaved flows: adjacent frames only.
    let mixed = vec![a[0].clone(), b[0].clone(), a[1].clone()];
    let (_, bytes, n) = run_queue(&mut frames, &mixed);
    assert_eq!((bytes, n), (mixed, 0));
    // Two flows one after the other: two super-frames, in order.
    let two = vec![a[0].clone(), a[1].clone(), b[0].clone(), b[1].clone()];
    let (q, bytes, n) = run_queue(&mut frames, &two);
    assert_eq!((q.len(), n), (2, 4));
    assert_eq!(u16::from_be_bytes([bytes[1][34], bytes[1][35]]), 40001);
}

/// Segment `i` (MSS bytes) of a flow whose payload is `d`, starting at sequence 1.
fn nth_seg(d: &[u8], i: usize, o: Opt) -> Vec<u8> {
    seg(
        1 + (i * MSS) as u32,
        i as u16,
        o,
        &d[i * MSS..(i + 1) * MSS],
    )
}

#[test]
fn segments_with_other_flags_options_or_protocols_stay_whole() {
    let mut frames = Frames::new(64).unwrap();
    let d = payload(3 * MSS);
    let at = |i: usize, o: Opt| nth_seg(&d, i, o);
    for odd in [
        Opt {
            fin: true,
            ..Opt::default()
        },
        Opt {
            rst: true,
            ..Opt::default()
        },
        Opt {
            urg: true,
            ..Opt::default()
        },
        Opt {
            tsval: 9,
            ..Opt::default()
        },
    ] {
        let segs = vec![at(0, Opt::default()), at(1, odd), at(2, Opt::default())];
        let (q, bytes, n) = run_queue(&mut frames, &segs);
        assert_eq!((q.len(), n), (3, 0));
        assert_eq!(bytes, segs);
    }
    // IP options: nothing merges.
    let ipo = Opt {
        ip_options: true,
        ..Opt::default()
    };
    let segs = vec![at(0, ipo), at(1, ipo)];
    let (_, bytes, n) = run_queue(&mut frames, &segs);
    assert_eq!((bytes, n), (segs, 0));
    // Not TCP: a UDP datagram between two segments.
    let mut udp = at(1, Opt::default());
    udp[23] = 17;
    let segs = vec![at(0, Opt::default()), udp, at(1, Opt::default())];
    let (_, bytes, n) = run_queue(&mut frames, &segs);
    assert_eq!((bytes, n), (segs, 0));
    // A corrupted segment is not hidden behind a partial checksum.
    let mut bad = at(1, Opt::default());
    bad[100] ^= 1;
    let segs = vec![at(0, Opt::default()), bad];
    let (_, bytes, n) = run_queue(&mut frames, &segs);
    assert_eq!((bytes, n), (segs, 0));
    assert_eq!(frames.in_use(), 0);
}

#[test]
fn a_corrupted_head_goes_alone_and_the_segments_after_it_merge() {
    let mut frames = Frames::new(64).unwrap();
    let d = payload(3 * MSS);
    let at = |i: usize, o: Opt| nth_seg(&d, i, o);
    let mut bad = at(0, Opt::default());
    bad[100] ^= 1;
    let segs = vec![bad.clone(), at(1, Opt::default()), at(2, Opt::default())];
    let (q, bytes, n) = run_queue(&mut frames, &segs);
    assert_eq!((q.len(), n), (2, 2));
    assert_eq!(
        bytes[0], bad,
        "the corrupted head is left exactly as it was"
    );
    assert_eq!(q[1].ol.gso_type(), Some(GsoType::Tcp4));
    // A corrupted segment in the middle: nothing merges across it, and it is not merged.
    let mut mid = at(1, Opt::default());
    mid[100] ^= 1;
    let segs = vec![at(0, Opt::default()), mid, at(2, Opt::default())];
    let (_, bytes, n) = run_queue(&mut frames, &segs);
    assert_eq!((bytes, n), (segs, 0));
}

#[test]
fn partial_checksums_merge_too() {
    let mut frames = Frames::new(64).unwrap();
    let p = Opt {
        partial: true,
        ..Opt::default()
    };
    let (segs, data) = flow(7, 3, 500, p);
    let (q, bytes, n) = queue_ol(&mut frames, &segs, Offload::partial());
    assert_eq!((q.len(), n), (1, 3));
    assert_eq!(q[0].ol, Offload::gso(GsoType::Tcp4, MSS as u16));
    assert_eq!(bytes[0], seg(7, 100, p, &data));
    // Marked partial or not, a segment whose field holds the pseudo sum is merged only when
    // its state says partial: as a complete checksum it does not verify.
    let (_, bytes, n) = run_queue(&mut frames, &segs);
    assert_eq!((bytes, n), (segs, 0));
}

#[test]
fn only_ports_that_take_gso_get_super_frames() {
    let mut frames = Frames::new(64).unwrap();
    let mut dp = Datapath::new();
    let br = dp.add_bridge("br0", &BridgeOptions::default()).unwrap();
    let plain = PortState::new("plain", PortKind::Mem, br, VlanMode::Access(0), 1500);
    let mut gso_port = PortState::new("gso", PortKind::Mem, br, VlanMode::Access(0), 1500);
    gso_port.offload_out = true;
    dp.add_port(0, plain).unwrap();
    dp.add_port(1, gso_port).unwrap();
    let (segs, _) = flow(1, 4, MSS, Opt::default());
    for s in &segs {
        let d0 = put(&mut frames, s);
        dp.out[0].push(d0);
        let d1 = put(&mut frames, s);
        dp.out[1].push(d1);
    }
    assert_eq!(run(&mut dp, &mut frames), 4);
    let plain: Vec<Vec<u8>> = dp.out[0].iter().map(|d| frames.data(*d).to_vec()).collect();
    assert_eq!(
        plain, segs,
        "a port without GSO gets the segments as they were"
    );
    assert_eq!(dp.out[1].len(), 1);
    assert_eq!(dp.port(1).unwrap().counters.gro_merged, 4);
    assert_eq!(dp.port(0).unwrap().counters.gro_merged, 0);
}
