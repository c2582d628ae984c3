//! Segmentation and checksum completion checked byte for byte against frames built
//! independently with etherparse.

use super::*;
use crate::packet::{GsoType, Offload};
use etherparse::{
    EtherType as Et, Ethernet2Header, IpNumber, Ipv4Header, Ipv6Header, TcpHeader, TcpOptionElement,
};

const SRC4: [u8; 4] = [10, 1, 0, 2];
const DST4: [u8; 4] = [10, 2, 0, 9];

/// Flags of a TCP header: (psh, fin, cwr).
type Flags = (bool, bool, bool);

/// One Ethernet + IP + TCP frame with a complete checksum, or a partial one (the pseudo-header
/// sum in the field) when `partial`.
fn tcp_frame(v6: bool, seq: u32, id: u16, f: Flags, payload: &[u8], partial: bool) -> Vec<u8> {
    let mut tcp = TcpHeader::new(40000, 5201, seq, 502);
    tcp.ack = true;
    tcp.acknowledgment_number = 77;
    (tcp.psh, tcp.fin, tcp.cwr) = f;
    tcp.set_options(&[
        TcpOptionElement::Noop,
        TcpOptionElement::Noop,
        TcpOptionElement::Timestamp(1, 2),
    ])
    .unwrap();
    let l4_len = tcp.header_len() + payload.len();
    let mut v = Vec::new();
    let et = if v6 { Et::IPV6 } else { Et::IPV4 };
    Ethernet2Header {
        source: [2, 0, 0, 0, 0, 1],
        destination: [2, 0, 0, 0, 0, 2],
        ether_type: et,
    }
    .write(&mut v)
    .unwrap();
    let pseudo;
    if v6 {
        let ip = Ipv6Header {
            payload_length: l4_len as u16,
            next_header: IpNumber::TCP,
            hop_limit: 64,
            source: [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2],
            destination: [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9],
            ..Default::default()
        };
        tcp.checksum = tcp.calc_checksum_ipv6(&ip, payload).unwrap();
        pseudo = pseudo_v6(&ip.source, &ip.destination, 6, l4_len as u32);
        ip.write(&mut v).unwrap();
    } else {
        let mut ip = Ipv4Header::new(l4_len as u16, 64, IpNumber::TCP, SRC4, DST4).unwrap();
        ip.identification = id;
        ip.dont_fragment = true;
        ip.header_checksum = ip.calc_header_checksum();
        tcp.checksum = tcp.calc_checksum_ipv4(&ip, payload).unwrap();
        pseudo = pseudo_v4(&SRC4, &DST4, 6, l4_len as u16);
        ip.write(&mut v).unwrap();
    }
    if partial {
        tcp.checksum = fold(pseudo);
    }
    tcp.write(&mut v).unwrap();
    v.extend_from_slice(payload);
    v
}

fn payload(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 + i / 251) as u8).collect()
}

/// Put `bytes` into a large buffer with offload state `ol`.
fn big(frames: &mut Frames, bytes: &[u8], ol: Offload) -> Desc {
    let mut d = frames.alloc_big().unwrap();
    d.len = bytes.len() as u32;
    d.ol = ol;
    frames.data_mut(d).copy_from_slice(bytes);
    d
}

fn check_segments(v6: bool, total: usize, mss: usize, gso_size: u16) {
    let mut frames = Frames::new(256).unwrap();
    let data = payload(total);
    let t = if v6 { GsoType::Tcp6 } else { GsoType::Tcp4 };
    let sup = tcp_frame(v6, 0xffff_f000, 0xfffe, (true, true, true), &data, true);
    let d = big(&mut frames, &sup, Offload::gso(t, gso_size));
    let mut out = Vec::new();
    let n = segment(&mut frames, d, mss, &mut out).unwrap();
    assert_eq!(n, total.div_ceil(mss));
    assert_eq!(out.len(), n);
    for (i, s) in out.iter().enumerate() {
        let off = i * mss;
        let chunk = &data[off..(off + mss).min(total)];
        let (first, last) = (i == 0, i + 1 == n);
        let seq = 0xffff_f000u32.wrapping_add(off as u32);
        let want = tcp_frame(
            v6,
            seq,
            0xfffeu16.wrapping_add(i as u16),
            (last, last, first),
            chunk,
            false,
        );
        assert!(!s.is_big() && s.ol.is_none());
        assert_eq!(frames.data(*s), &want[..], "segment {i} of {n}");
        // And etherparse finds it well formed.
        etherparse::SlicedPacket::from_ethernet(frames.data(*s)).unwrap();
    }
    assert_eq!(frames.big_free_count(), crate::packet::BIG_COUNT as usize);
}

#[test]
fn segments_ipv4_byte_exact() {
    check_segments(false, 60_000, 1448, 1448);
    check_segments(false, 1448 * 3, 1448, 1448);
    check_segments(false, 100, 1448, 1448);
}

#[test]
fn segments_ipv6_byte_exact() {
    check_segments(true, 30_001, 1428, 1428);
}

#[test]
fn segments_finer_than_the_sender_when_the_egress_mtu_is_smaller() {
    check_segments(false, 20_000, 1398, 1448);
}

#[test]
fn segments_a_vlan_tagged_super_frame() {
    let mut frames = Frames::new(64).unwrap();
    let data = payload(4000);
    let mut sup = tcp_frame(false, 1, 5, (true, false, false), &data, true);
    sup.splice(12..12, [0x81, 0x00, 0x00, 0x07]);
    let d = big(&mut frames, &sup, Offload::gso(GsoType::Tcp4, 1448));
    let mut out = Vec::new();
    assert_eq!(segment(&mut frames, d, 1448, &mut out), Ok(3));
    for (i, s) in out.iter().enumerate() {
        let off = i * 1448;
        let last = i == 2;
        let chunk = &data[off..(off + 1448).min(4000)];
        let mut want = tcp_frame(
            false,
            1 + off as u32,
            5 + i as u16,
            (last, false, false),
            chunk,
            false,
        );
        want.splice(12..12, [0x81, 0x00, 0x00, 0x07]);
        assert_eq!(frames.data(*s), &want[..]);
    }
}

#[test]
fn completes_and_refreshes_partial_checksums() {
    let data = payload(999);
    let good = tcp_frame(false, 9, 1, (false, false, false), &data, false);
    let mut v = tcp_frame(false, 9, 1, (false, false, false), &data, true);
    let at = locate(&v).unwrap();
    assert_eq!((at.l3, at.l4, at.proto, at.v6), (14, 34, 6, false));
    complete(&mut v, &at);
    assert_eq!(v, good);
    // A rewrite of the addresses (what NAT does) leaves a stale pseudo sum: refresh recomputes
    // it from the header, and completing then matches a frame built with the new addresses.
    let mut v = tcp_frame(false, 9, 1, (false, false, false), &data, true);
    v[26..30].copy_from_slice(&[198, 18, 0, 1]);
    v[36..38].copy_from_slice(&[0x12, 0x34]);
    refresh_partial(&mut v, &at);
    let p = fold(pseudo_v4(&[198, 18, 0, 1], &DST4, 6, 32 + 999));
    assert_eq!(u16::from_be_bytes([v[50], v[51]]), p);
    complete(&mut v, &at);
    let s = etherparse::SlicedPacket::from_ethernet(&v).unwrap();
    let (Some(etherparse::NetSlice::Ipv4(ip)), Some(etherparse::TransportSlice::Tcp(t))) =
        (s.net, s.transport)
    else {
        panic!("not ipv4/tcp");
    };
    let want = t
        .to_header()
        .calc_checksum_ipv4(&ip.header().to_header(), t.payload())
        .unwrap();
    assert_eq!(t.checksum(), want);
}

#[test]
fn odd_frames_are_not_offloadable() {
    assert_eq!(locate(&[0u8; 10]), None);
    let mut v = tcp_frame(false, 9, 1, (false, false, false), b"x", false);
    v[20] = 0x20; // more fragments
    assert_eq!(locate(&v), None);
    let mut v = tcp_frame(false, 9, 1, (false, false, false), b"x", false);
    v.truncate(40);
    assert_eq!(locate(&v), None);
}

#[test]
fn segment_size_for_the_mtu_check() {
    let sup = tcp_frame(false, 1, 1, (false, false, false), &payload(9000), true);
    let d = Desc {
        ol: Offload::gso(GsoType::Tcp4, 1448),
        ..Desc::new(0, sup.len() as u32)
    };
    assert_eq!(seg_l3_len(&sup, d, 14), 20 + 32 + 1448);
    assert_eq!(seg_l3_len(&sup, Desc::new(0, 1), 14), sup.len() - 14);
}

#[test]
fn segments_keep_the_port_their_super_frame_came_in_on() {
    let mut frames = Frames::new(64).unwrap();
    let sup = tcp_frame(false, 1, 1, (false, false, false), &payload(1200), true);
    let mut d = frames.alloc().unwrap();
    d.len = sup.len() as u32;
    d.ol = Offload::gso(GsoType::Tcp4, 400);
    frames.data_mut(d).copy_from_slice(&sup);
    frames.mark_received(d.addr, 7);
    let mut out = Vec::new();
    assert_eq!(segment(&mut frames, d, 400, &mut out), Ok(3));
    for s in &out {
        assert_eq!(frames.received_on(s.addr), Some(7));
    }
}

/// `outer` (Ethernet + IPv4 + UDP + VXLAN, VNI 42) in front of the inner frame `inner`, with
/// the outer lengths for it, IP id `id` and a zero UDP checksum.
fn vxlan_frame(inner: &[u8], id: u16) -> Vec<u8> {
    let mut v = Vec::new();
    Ethernet2Header {
        source: [2, 0, 0, 0, 0, 0x11],
        destination: [2, 0, 0, 0, 0, 0x22],
        ether_type: Et::IPV4,
    }
    .write(&mut v)
    .unwrap();
    let udp_len = 8 + 8 + inner.len();
    let mut ip = Ipv4Header::new(
        udp_len as u16,
        64,
        IpNumber::UDP,
        [10, 252, 0, 2],
        [10, 252, 0, 1],
    )
    .unwrap();
    ip.identification = id;
    ip.header_checksum = ip.calc_header_checksum();
    ip.write(&mut v).unwrap();
    v.extend_from_slice(&40000u16.to_be_bytes());
    v.extend_from_slice(&4789u16.to_be_bytes());
    v.extend_from_slice(&(udp_len as u16).to_be_bytes());
    v.extend_from_slice(&[0, 0]);
    v.extend_from_slice(&[0x08, 0, 0, 0, 0, 0, 42, 0]);
    v.extend_from_slice(inner);
    v
}

/// A kernel VXLAN device's TCP super-frame, encapsulated whole (UDP-tunnel GSO): cut into
/// VXLAN packets of one segment each, byte for byte what the sender's segments encapsulated
/// one by one would be (outer id +1 each, zero UDP checksum), and `tunnel_l4_offsets` finds
/// the inner TCP checksum the kernel's `csum_start` names.
#[test]
fn splits_a_udp_tunnel_super_frame_into_vxlan_segments() {
    let mut frames = Frames::new(64).unwrap();
    let data = payload(4000);
    let inner = tcp_frame(false, 7, 100, (true, false, false), &data, true);
    let sup = vxlan_frame(&inner, 900);
    // Outer 14 + 20 + 8 + 8, inner 14 + 20: the TCP checksum at 84 + 16.
    assert_eq!(super::super::tunnel_l4_offsets(&sup), Some((84, 16)));
    assert_eq!(
        super::super::tunnel_l4_offsets(&inner),
        None,
        "not a tunnel frame"
    );
    let d = big(&mut frames, &sup, Offload::NONE);
    let mut out = Vec::new();
    assert_eq!(split_tunnel(&mut frames, d, 1448, &mut out), Ok(3));
    for (i, s) in out.iter().enumerate() {
        let off = i * 1448;
        let chunk = &data[off..(off + 1448).min(data.len())];
        let last = i == 2;
        let seg = tcp_frame(
            false,
            7 + off as u32,
            100 + i as u16,
            (last, false, false),
            chunk,
            false,
        );
        let want = vxlan_frame(&seg, 900 + i as u16);
        assert_eq!(frames.data(*s), &want[..], "packet {i}");
    }
    assert_eq!(frames.big_free_count(), crate::packet::BIG_COUNT as usize);
    // Not a VXLAN-encapsulated TCP frame: refused, freed.
    let d = big(&mut frames, &inner, Offload::NONE);
    assert_eq!(
        split_tunnel(&mut frames, d, 1448, &mut out),
        Err(DropReason::Runt)
    );
    assert_eq!(frames.big_free_count(), crate::packet::BIG_COUNT as usize);
}
