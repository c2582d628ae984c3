//! The packed classifier key (`PacketKey::words`) of an IPv4 frame, read straight from the
//! frame into its five words for the table-0 lookup every frame makes on a bridge with flows.
//!
//! Contract: `frame_words(data, m, in_port, tun_id)` equals
//! `packet_key(data, m, in_port, tun_id, (0, 0)).words()` for every frame and `Meta` (a unit
//! test compares them on random and mutated frames). Building a `PacketKey` field by field and
//! packing it cost ~85 instructions a frame; IPv4 frames take a direct path here, everything
//! else (IPv6, ARP, MPLS, short frames) the general one.

use super::packet_key;
use crate::flow::Words;
use crate::flow::match_::{MAC48, TCI_PRESENT, TUN_ID_BITS};
use crate::pipeline::Meta;
use crate::wire::{EtherType, vlan};

/// The packed key of frame `data` (metadata `m`) received on OpenFlow port `in_port` with
/// tunnel id `tun_id`, before any `ct` action.
#[inline(always)]
pub(crate) fn frame_words(data: &[u8], m: &Meta, in_port: u16, tun_id: u64) -> Words {
    if m.ethertype == EtherType::IPV4
        && let Some(w) = ipv4_words(data, m, in_port, tun_id)
    {
        return w;
    }
    packet_key(data, m, in_port, tun_id, (0, 0)).words()
}

/// `frame_words` of an IPv4 frame with at least 20 bytes from its L3 offset; None otherwise.
#[inline(always)]
fn ipv4_words(data: &[u8], m: &Meta, in_port: u16, tun_id: u64) -> Option<Words> {
    let ip = data.get(m.l3 as usize..)?;
    let h = ip.first_chunk::<20>()?;
    // The key's (PCP, present, VID) is the tag's TCI with the CFI/DEI bit replaced by
    // "present".
    let tci = vlan::tci(data).map_or(0, |t| u64::from(t) | TCI_PRESENT);
    let hl = usize::from(h[0] & 0x0f) * 4;
    let ff = u16::from_be_bytes([h[6], h[7]]);
    let first = ff & 0x1fff == 0;
    // MF set or an offset: a fragment; an offset: a later one.
    let frag = u64::from(ff & 0x3fff != 0) | u64::from(!first) << 1;
    let proto = h[9];
    // (tp_src << 16 | tp_dst): TCP/UDP ports, ICMP type and code; only in a first fragment.
    let ports = match ip.get(hl..).and_then(|l4| l4.first_chunk::<4>()) {
        Some(l4) if first => match proto {
            6 | 17 => u64::from(u32::from_be_bytes(*l4)),
            1 => u64::from(l4[0]) << 16 | u64::from(l4[1]),
            _ => 0,
        },
        _ => 0,
    };
    let addrs = u64::from_be_bytes([h[12], h[13], h[14], h[15], h[16], h[17], h[18], h[19]]);
    Some([
        (tun_id & TUN_ID_BITS) | frag << 56,
        (m.src & MAC48) | u64::from(in_port) << 48,
        (m.dst & MAC48) | u64::from(EtherType::IPV4) << 48,
        addrs,
        ports << 32 | tci << 16 | u64::from(proto) << 8 | u64::from(h[1]),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::Desc;
    use crate::pipeline::Dest;

    /// splitmix64: deterministic randomness without a dependency.
    struct Mix(u64);

    impl Mix {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }
        fn pick<T: Copy>(&mut self, from: &[T]) -> T {
            from[(self.next() % from.len() as u64) as usize]
        }
    }

    /// A frame of `len` bytes: Ethernet (tagged if `tagged`), then IPv4 with IHL `ihl`,
    /// fragment field `ff` and protocol `proto`; the rest random.
    fn frame(r: &mut Mix, tagged: bool, ihl: u8, ff: u16, proto: u8, len: usize) -> Vec<u8> {
        let mut b: Vec<u8> = (0..len.max(64)).map(|_| r.next() as u8).collect();
        let l3 = if tagged {
            b[12..14].copy_from_slice(&[0x81, 0x00]);
            b[16..18].copy_from_slice(&[0x08, 0x00]);
            18
        } else {
            b[12..14].copy_from_slice(&[0x08, 0x00]);
            14
        };
        b[l3] = 0x40 | ihl;
        b[l3 + 6..l3 + 8].copy_from_slice(&ff.to_be_bytes());
        b[l3 + 9] = proto;
        b.truncate(len);
        b
    }

    #[test]
    fn the_direct_words_equal_the_packed_packet_key() {
        let mut r = Mix(7);
        let mut direct = 0;
        for i in 0..200_000u32 {
            let tagged = r.next().is_multiple_of(3);
            let ihl = r.pick(&[5, 5, 5, 6, 15, 0, 4]);
            let ff = r.pick(&[0, 0, 0x4000, 0x2000, 0x0001, 0x2001, 0x1fff, 0x8000]);
            let proto = r.pick(&[6, 17, 1, 47, 58, 0]);
            let len = r.pick(&[14, 18, 30, 34, 37, 38, 41, 42, 54, 60, 64, 90]);
            let mut b = frame(&mut r, tagged, ihl, ff, proto, len);
            if i.is_multiple_of(4) && !b.is_empty() {
                // A random byte anywhere.
                let at = (r.next() % b.len() as u64) as usize;
                b[at] = r.next() as u8;
            }
            let at = |b: &[u8], i: usize| b.get(i).copied().unwrap_or(0);
            let ethertype = if i.is_multiple_of(5) {
                r.pick(&[0x86dd, 0x0806, 0x8847, 0x0800])
            } else {
                0x0800
            };
            let l3 = if i.is_multiple_of(7) {
                r.pick(&[0, 14, 18, 22, 60, 200])
            } else if tagged {
                18
            } else {
                14
            };
            let mac = |o: usize| (0..6).fold(0u64, |a, k| a << 8 | u64::from(at(&b, o + k)));
            let m = Meta {
                desc: Desc::new(0, b.len() as u32),
                vlan: 0,
                tagged,
                dst: mac(0),
                src: mac(6),
                ethertype,
                l3,
                dest: Dest::Normal,
                raw: false,
            };
            let (port, tun) = (r.next() as u16, r.next());
            let want = packet_key(&b, &m, port, tun, (0, 0)).words();
            assert_eq!(
                frame_words(&b, &m, port, tun),
                want,
                "frame {b:02x?}, l3 {l3}, ethertype {ethertype:#x}"
            );
            direct += usize::from(ipv4_words(&b, &m, port, tun).is_some());
        }
        // Most cases took the direct path (the comparison is not only of the fallback).
        assert!(direct > 100_000, "{direct}");
    }
}
