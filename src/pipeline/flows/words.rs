//! The packed classifier key (`PacketKey::words`) of an IPv4 frame, read straight from the
//! frame into its five words for the table-0 lookup every frame makes on a bridge with flows.
//!
//! Contract: `frame_words(data, m, in_port, tun_id)` equals
//! `packet_key(data, m, in_port, tun_id, (0, 0)).words()` for every frame and `Meta` (a unit
//! test compares them on random and mutated frames). Building a `PacketKey` field by field and
//! packing it cost ~85 instructions a frame; IPv4 frames take a direct path here, everything
//! else (IPv6, ARP, MPLS, short frames) the general one.
//! - [`Raw`]: the bytes an IPv4 frame's words are made of, as loaded; frames of one burst with
//!   equal `Raw`s have equal words (unit test), so a run of one key is compared by them.

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

/// The bytes of an IPv4 frame its key is read from, as loaded (see [`Raw::read`]): two frames
/// of one burst with equal `Raw`s have equal key words, so within a run of frames with one key
/// the flow stage compares each frame's bytes with the run's `Raw` ([`Raw::matches_at`])
/// instead of packing its words.
#[derive(Clone, Copy)]
pub(crate) struct Raw {
    /// The L3 offset (14 or 18).
    l3: u8,
    /// The source MAC (`Meta::src` as it is).
    src: u64,
    /// The destination MAC.
    dst: u64,
    /// Frame bytes 8..16: the end of the source MAC, then the EtherType and IPv4 version/IHL
    /// and TOS (untagged) or the tag's TPID and TCI (tagged; its EtherType, IPv4, is `m`'s).
    eth: u64,
    /// IPv4 header bytes 0..2: version/IHL and TOS (within `eth` when untagged).
    head: u16,
    /// IPv4 header bytes 6..10 as a little-endian word under [`FRAG_PROTO`]: the fragment
    /// field and the protocol (the TTL masked out).
    frag_proto: u32,
    /// IPv4 header bytes 12..20: the source and destination addresses.
    addrs: u64,
    /// IPv4 header bytes 20..24: the L4 ports.
    ports: u32,
}

/// IPv4 header bytes 6..10 loaded as a little-endian word (byte i is bits 8i..8i+8) keep the
/// fragment field (6..8) and the protocol (9), not the TTL (8). A 32-bit mask is an immediate
/// operand, so the run loop keeps no register for it.
const FRAG_PROTO: u32 = 0xff00_ffff;

/// The frame words a `Raw` is made of, for an L3 offset `L3`: `h` is the frame's first
/// `L3 + 24` bytes. `read` and `matches_at` both load through these, so they read the same
/// bytes the same way. The key's bytes are read as unmasked spans where they are contiguous
/// (`eth`, `addrs`, `ports`) and one masked word (`frag_proto`): the bytes between (length,
/// id, checksum) are never loaded.
#[inline(always)]
fn eth_word(h: &[u8]) -> u64 {
    u64::from_le_bytes(*h[8..].first_chunk().expect("16 bytes or more"))
}

/// IPv4 header bytes 0..2 (version/IHL, TOS).
#[inline(always)]
fn head_word<const L3: usize>(h: &[u8]) -> u16 {
    u16::from_le_bytes(*h[L3..].first_chunk().expect("L3 + 2 bytes or more"))
}

/// IPv4 header bytes 6..10 under [`FRAG_PROTO`].
#[inline(always)]
fn frag_proto_word<const L3: usize>(h: &[u8]) -> u32 {
    u32::from_le_bytes(*h[L3 + 6..].first_chunk().expect("L3 + 10 bytes or more")) & FRAG_PROTO
}

/// IPv4 header bytes 12..20: the addresses.
#[inline(always)]
fn addrs_word<const L3: usize>(h: &[u8]) -> u64 {
    u64::from_le_bytes(*h[L3 + 12..].first_chunk().expect("L3 + 20 bytes or more"))
}

/// IPv4 header bytes 20..24: the L4 ports.
#[inline(always)]
fn ports_word<const L3: usize>(h: &[u8]) -> u32 {
    u32::from_le_bytes(*h[L3 + 20..].first_chunk().expect("L3 + 24 bytes or more"))
}

impl Raw {
    /// The raw key of an IPv4 frame with a 20-byte header (IHL 5) and the 4 bytes after it,
    /// untagged (L3 at 14) or with one tag (L3 at 18); None for any other frame.
    #[inline(always)]
    pub fn read(data: &[u8], m: &Meta) -> Option<Raw> {
        if m.ethertype != EtherType::IPV4 {
            return None;
        }
        match m.l3 {
            14 => Raw::read_at::<14>(data, m),
            18 => Raw::read_at::<18>(data, m),
            _ => None,
        }
    }

    #[inline(always)]
    fn read_at<const L3: usize>(data: &[u8], m: &Meta) -> Option<Raw> {
        let h = data.get(..L3 + 24)?;
        // Version 4, IHL 5 (kept in `head`, and in `eth` when untagged, so `matches_at` needs
        // no check of its own).
        if h[L3] != 0x45 {
            return None;
        }
        Some(Raw {
            l3: m.l3,
            src: m.src,
            dst: m.dst,
            eth: eth_word(h),
            head: head_word::<L3>(h),
            frag_proto: frag_proto_word::<L3>(h),
            addrs: addrs_word::<L3>(h),
            ports: ports_word::<L3>(h),
        })
    }

    /// The L3 offset of the frame the key was read from: 14 (untagged) or 18 (one tag).
    #[inline(always)]
    pub fn l3(&self) -> u8 {
        self.l3
    }

    /// Whether frame `data` (metadata `m`) has this raw key, i.e. `Raw::read(data, m)` is
    /// `Some(*self)` (so its key words are this key's), without building one. (The flow
    /// stage calls [`Raw::matches_at`] with the offset fixed for the whole run.)
    #[cfg(test)]
    pub fn matches(&self, data: &[u8], m: &Meta) -> bool {
        if self.l3 == 14 {
            self.matches_at::<14>(data, m)
        } else {
            self.matches_at::<18>(data, m)
        }
    }

    /// Whether frame `data` (metadata `m`) has this raw key, for a key whose L3 offset is `L3`
    /// (`self.l3()`): the frame's bytes are loaded at constant offsets after one length check
    /// and compared word by word, the first difference ending the comparison (a run of one key
    /// loops over this).
    #[inline(always)]
    pub fn matches_at<const L3: usize>(&self, data: &[u8], m: &Meta) -> bool {
        debug_assert_eq!(usize::from(self.l3), L3);
        let Some(h) = data.get(..L3 + 24) else {
            return false;
        };
        // Untagged, `eth` holds the IPv4 bytes 0..2 (`head`): equal, the IHL byte is 0x45 as
        // `read` required. Tagged, `head` is compared on its own.
        usize::from(m.l3) == L3
            && m.ethertype == EtherType::IPV4
            && m.src == self.src
            && m.dst == self.dst
            && ports_word::<L3>(h) == self.ports
            && addrs_word::<L3>(h) == self.addrs
            && frag_proto_word::<L3>(h) == self.frag_proto
            && eth_word(h) == self.eth
            && (L3 + 2 <= 16 || head_word::<L3>(h) == self.head)
    }
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

    /// A frame's Meta as ethernet-input builds it (addresses from the bytes, L3 after one
    /// 0x8100 tag if there is one).
    fn meta_of(b: &[u8]) -> Meta {
        let at = |i: usize| b.get(i).copied().unwrap_or(0);
        let mac = |o: usize| (0..6).fold(0u64, |a, k| a << 8 | u64::from(at(o + k)));
        let tagged = at(12) == 0x81 && at(13) == 0;
        let (l3, et) = if tagged { (18, 16) } else { (14, 12) };
        Meta {
            desc: Desc::new(0, b.len() as u32),
            vlan: 0,
            tagged,
            dst: mac(0),
            src: mac(6),
            ethertype: u16::from_be_bytes([at(et), at(et + 1)]),
            l3,
            dest: Dest::Normal,
            raw: false,
        }
    }

    #[test]
    fn frames_that_match_a_raw_key_have_its_words() {
        let mut r = Mix(11);
        let (mut same, mut differ, mut matched_other_bytes) = (0, 0, 0);
        for i in 0..200_000u32 {
            let tagged = r.next().is_multiple_of(3);
            let ihl = r.pick(&[5, 5, 5, 5, 6]);
            let ff = r.pick(&[0, 0, 0x4000, 0x2000, 0x0001, 0x2001]);
            let proto = r.pick(&[6, 17, 1, 47]);
            let len = r.pick(&[38, 41, 42, 46, 60, 64]);
            let a = frame(&mut r, tagged, ihl, ff, proto, len);
            let ma = meta_of(&a);
            let (port, tun) = (r.next() as u16, r.next());
            let Some(raw) = Raw::read(&a, &ma) else {
                continue;
            };
            assert!(
                raw.matches(&a, &ma),
                "a frame matches its own raw key: {a:02x?}"
            );
            // Another frame: the same with one or two bytes changed (any byte: key fields,
            // masked ones, the tag), sometimes shorter, sometimes with other metadata.
            let mut b = a.clone();
            for _ in 0..1 + r.next() % 2 {
                let at = (r.next() % b.len() as u64) as usize;
                b[at] = if r.next().is_multiple_of(2) {
                    b[at] ^ 1 << (r.next() % 8)
                } else {
                    r.next() as u8
                };
            }
            if i.is_multiple_of(9) {
                b.truncate(r.pick(&[30, 37, 40, 41]));
            }
            let mut mb = meta_of(&b);
            match i % 13 {
                0 => mb.l3 = r.pick(&[14, 18, 22, 0]),
                1 => mb.ethertype = r.pick(&[0x0800, 0x86dd]),
                2 => mb.src ^= 1 << 40,
                3 => mb.dst |= 1 << 50,
                _ => {}
            }
            if raw.matches(&b, &mb) {
                assert_eq!(
                    frame_words(&b, &mb, port, tun),
                    frame_words(&a, &ma, port, tun),
                    "{a:02x?} / {b:02x?}"
                );
                same += 1;
                matched_other_bytes += usize::from(a != b);
            } else {
                differ += 1;
            }
        }
        // Both outcomes, and frames that differ in bytes outside the key (length, id, TTL,
        // checksum, payload) still matched.
        assert!(same > 10_000 && differ > 10_000, "{same} {differ}");
        assert!(matched_other_bytes > 10_000, "{matched_other_bytes}");
    }
}
