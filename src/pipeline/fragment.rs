//! `ip4-frag`: an IPv4 packet routed toward a bridge whose MTU it exceeds, without DF, is cut
//! into fragments, as RFC 791/1812 ask of a router (Linux's `ip_fragment`, VPP's `ip4-frag`).
//!
//! Contract:
//! - [`fragment`] keeps the packet's first piece in its own frame and makes every other piece a
//!   new frame of the pool: a copy of the bytes before the IP header (Ethernet, any VLAN tag),
//!   of the 20-byte IP header, and of its part of the payload. Each piece carries at most `mtu`
//!   bytes of IP packet (and fits a pool frame, whatever the MTU); every piece's payload but the last is a multiple of 8 bytes; every
//!   piece but the last has more-fragments set, the last keeps the packet's own (a fragment
//!   cut again); offsets continue the packet's own offset. Total length and header checksum
//!   are rewritten in every piece; identification, TTL, ToS and addresses are kept.
//! - Refused, the frame unchanged: a header with options (their copy flags are not
//!   interpreted), an MTU that leaves no 8 bytes of payload, DF set, a packet that fits.
//!   Pieces are taken only above the pool's copy floor, as flood copies are
//!   ([`DropReason::NoBuffer`] otherwise, nothing taken).
//! - Bytes after the IP total length (Ethernet padding) are not copied.
//! - The L4 checksum is not touched: it covers the datagram, which the receiver puts back
//!   together. The caller completes a partial checksum first.

use crate::counters::DropReason;
use crate::packet::{Desc, Frames, MAX_FRAME_LEN, Offload};
use crate::wire::ipv4;

/// More fragments (in the flags/offset word).
const MF: u16 = 0x2000;
/// Don't fragment.
const DF: u16 = 0x4000;

/// Cut the IPv4 packet at `l3` of frame `d` into pieces of at most `mtu` bytes: `d` keeps the
/// first (its length shortened), the others are appended to `out` in order. See the module
/// documentation.
pub(super) fn fragment(
    frames: &mut Frames,
    d: &mut Desc,
    l3: usize,
    mtu: usize,
    out: &mut Vec<Desc>,
) -> Result<(), DropReason> {
    let data = frames.data(*d);
    let ip = data.get(l3..).ok_or(DropReason::IpMalformed)?;
    let h = ipv4::Packet::new_checked(ip).map_err(|_| DropReason::IpMalformed)?;
    let (hl, total) = (h.header_len(), h.total_len() as usize);
    let word = u16::from_be_bytes([ip[6], ip[7]]);
    if hl != 20 || word & DF != 0 || total <= mtu || mtu < hl + 8 || !d.ol.is_none() {
        return Err(DropReason::MtuExceeded);
    }
    // Pieces are made in pool frames: a larger MTU (jumbo frames) still gets pieces that fit
    // one (smaller than the MTU is legal).
    let chunk = (mtu - hl).min(MAX_FRAME_LEN - l3 - hl) & !7;
    let payload = total - hl;
    let (own_mf, offset) = (word & MF != 0, (word & 0x1fff) as usize * 8);
    let head_len = l3 + hl;
    // Every piece is a new frame: like flood copies, never below the copy floor (the frames
    // receive rings need).
    if frames.spare() < payload.div_ceil(chunk) - 1 {
        return Err(DropReason::NoBuffer);
    }
    let mut at = chunk;
    while at < payload {
        let len = chunk.min(payload - at);
        let mut f = frames.alloc().ok_or(DropReason::NoBuffer)?;
        f.len = (head_len + len) as u32;
        // The L2 bytes and the IP header, then this piece of the payload.
        frames.copy_bytes(d.addr, f.addr, head_len);
        let src = d.addr + (head_len + at) as u64;
        frames.copy_bytes(src, f.addr + head_len as u64, len);
        let more = at + len < payload || own_mf;
        put_piece(&mut frames.data_mut(f)[l3..], hl + len, offset + at, more);
        out.push(f);
        at += len;
    }
    // The first piece: the packet's own frame, shortened.
    d.len = (l3 + hl + chunk) as u32;
    d.ol = Offload::NONE;
    put_piece(&mut frames.data_mut(*d)[l3..], hl + chunk, offset, true);
    Ok(())
}

/// Write a piece's total length and flags/offset (`offset` bytes, a multiple of 8) into its
/// IP header and refill the header checksum.
fn put_piece(ip: &mut [u8], total: usize, offset: usize, more: bool) {
    let word = (if more { MF } else { 0 }) | (offset / 8) as u16;
    ip[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    ip[6..8].copy_from_slice(&word.to_be_bytes());
    ipv4::Packet::new_unchecked(ip).fill_checksum();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::Frames;
    use etherparse::PacketBuilder;

    fn frame(frames: &mut Frames, bytes: &[u8]) -> Desc {
        let mut d = if bytes.len() > crate::packet::MAX_FRAME_LEN {
            frames.alloc_big().unwrap()
        } else {
            frames.alloc().unwrap()
        };
        d.len = bytes.len() as u32;
        frames.data_mut(d).copy_from_slice(bytes);
        d
    }

    fn udp(payload_len: usize, df: bool) -> Vec<u8> {
        let payload: Vec<u8> = (0..payload_len).map(|i| (i * 7) as u8).collect();
        let mut ip = etherparse::Ipv4Header::new(
            0,
            64,
            etherparse::IpNumber::UDP,
            [10, 0, 0, 2],
            [192, 0, 2, 9],
        )
        .unwrap();
        ip.dont_fragment = df;
        ip.identification = 0x4242;
        let mut f = Vec::new();
        PacketBuilder::ethernet2([2; 6], [4; 6])
            .ip(etherparse::IpHeaders::Ipv4(ip, Default::default()))
            .udp(4000, 53)
            .write(&mut f, &payload)
            .unwrap();
        f
    }

    /// Put the pieces back together (as a receiver would) and compare with the packet.
    fn reassembled(frames: &Frames, pieces: &[Desc]) -> Vec<u8> {
        let mut payload = Vec::new();
        let mut first_head = None;
        for (i, d) in pieces.iter().enumerate() {
            let b = frames.data(*d);
            let ip = ipv4::Packet::new_checked(&b[14..]).unwrap();
            assert!(ip.verify_checksum(), "piece {i}: header checksum");
            assert_eq!(ip.total_len() as usize, b.len() - 14, "piece {i}: length");
            assert!(ip.total_len() <= 1000, "piece {i} fits the MTU");
            assert_eq!(
                ip.frag_offset() as usize * 8,
                payload.len(),
                "piece {i}: offset"
            );
            let more = u16::from_be_bytes([b[20], b[21]]) & MF != 0;
            assert_eq!(more, i + 1 < pieces.len(), "piece {i}: MF");
            assert_eq!(ip.ident(), 0x4242);
            if i + 1 < pieces.len() {
                assert_eq!((b.len() - 34) % 8, 0, "piece {i}: a multiple of 8");
            }
            payload.extend_from_slice(&b[34..]);
            first_head.get_or_insert_with(|| b[..34].to_vec());
        }
        let mut f = first_head.unwrap();
        f.extend_from_slice(&payload);
        f
    }

    #[test]
    fn a_packet_over_the_mtu_is_cut_and_goes_back_together() {
        let mut frames = Frames::new(64).unwrap();
        for len in [973, 981, 1000, 1700, 2953, 8000] {
            let packet = udp(len, false);
            let mut d = frame(&mut frames, &packet);
            let mut out = Vec::new();
            fragment(&mut frames, &mut d, 14, 1000, &mut out).unwrap();
            let mut pieces = vec![d];
            pieces.extend(out.iter().copied());
            assert_eq!(pieces.len(), (len + 8).div_ceil(976), "{len}");
            let back = reassembled(&frames, &pieces);
            // Same bytes but the header's flags, length and checksum, which reassembly resets.
            assert_eq!(back[34..], packet[34..], "{len}: payload");
            assert_eq!(back[..16], packet[..16]);
            assert_eq!(back[18..20], packet[18..20]);
            assert_eq!(back[22..24], packet[22..24], "TTL and protocol kept");
            assert_eq!(back[26..34], packet[26..34], "addresses kept");
            for p in pieces {
                frames.free(p.addr);
            }
        }
    }

    #[test]
    fn a_fragment_cut_again_keeps_its_offset_and_more_fragments() {
        let mut frames = Frames::new(16).unwrap();
        let mut packet = udp(1692, false);
        // A middle fragment at offset 800 (the original datagram goes on after it).
        packet[20..22].copy_from_slice(&(MF | 100).to_be_bytes());
        ipv4::Packet::new_unchecked(&mut packet[14..]).fill_checksum();
        let mut d = frame(&mut frames, &packet);
        let mut out = Vec::new();
        fragment(&mut frames, &mut d, 14, 1000, &mut out).unwrap();
        let word = |d: Desc| {
            let b = frames.data(d);
            u16::from_be_bytes([b[20], b[21]])
        };
        assert_eq!(word(d), MF | 100);
        assert_eq!(out.len(), 1);
        assert_eq!(word(out[0]), MF | (100 + 122), "the last keeps MF");
    }

    #[test]
    fn refused_when_df_options_fit_or_no_buffer() {
        let mut frames = Frames::new(2).unwrap();
        let mut out = Vec::new();
        let df = udp(1500, true);
        let mut d = frame(&mut frames, &df);
        assert_eq!(
            fragment(&mut frames, &mut d, 14, 1000, &mut out),
            Err(DropReason::MtuExceeded)
        );
        assert_eq!(frames.data(d), &df[..], "unchanged");
        frames.free(d.addr);
        let small = udp(100, false);
        let mut d = frame(&mut frames, &small);
        assert!(fragment(&mut frames, &mut d, 14, 1000, &mut out).is_err());
        frames.free(d.addr);
        // One free frame after this one: a packet needing two more pieces cannot be cut.
        let big = udp(1700, false);
        let mut d = frame(&mut frames, &big);
        assert_eq!(
            fragment(&mut frames, &mut d, 14, 600, &mut out),
            Err(DropReason::NoBuffer)
        );
        assert!(out.is_empty());
        assert_eq!(frames.data(d), &big[..], "unchanged");
        frames.free(d.addr);
        // Everything went back to the pool.
        let all: Vec<Desc> = (0..3).map_while(|_| frames.alloc()).collect();
        assert_eq!(all.len(), 2);
    }
}
