//! The Internet checksum (RFC 1071): sums, folding, pseudo-headers, and completing a partial
//! (offloaded) TCP/UDP checksum.

/// Ones'-complement sum of `data` (not folded, not complemented), added to `acc`.
#[inline]
pub fn sum(mut acc: u64, data: &[u8]) -> u64 {
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        let v = u64::from_be_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
        let (s, carry) = acc.overflowing_add(v);
        acc = s + carry as u64;
    }
    // The last (at most 7) bytes sum to less than 2^18, added with an end-around carry: the
    // 8-byte words can leave `acc` anywhere up to 2^64 - 1 (all-ones data does), so a plain
    // add could wrap and lose the carry.
    let rest = chunks.remainder();
    let mut tail = 0u64;
    let mut i = 0;
    while i + 1 < rest.len() {
        tail += u16::from_be_bytes([rest[i], rest[i + 1]]) as u64;
        i += 2;
    }
    if i < rest.len() {
        tail += (rest[i] as u64) << 8;
    }
    add_carry(acc, tail)
}

/// Fold a sum to 16 bits (not complemented).
///
/// Four fixed folds, no loop: after 64 -> 33 bits, each 16-bit fold leaves at most
/// 0xffff + 3, then 0xffff + 1, then at most 0xffff; folding a value below 0x10000 again
/// changes nothing, so this equals folding until the carry is gone.
#[inline]
pub fn fold(acc: u64) -> u16 {
    let a = (acc & 0xffff_ffff) + (acc >> 32);
    let a = (a & 0xffff) + (a >> 16);
    let a = (a & 0xffff) + (a >> 16);
    let a = (a & 0xffff) + (a >> 16);
    a as u16
}

/// The finished checksum of `data`: folded and complemented.
#[inline]
pub fn checksum(data: &[u8]) -> u16 {
    !fold(sum(0, data))
}

/// `acc + v` with the end-around carry (a ones'-complement add): a sum from [`sum`] may lie
/// anywhere up to 2^64 - 1 (all-ones addresses bring it there), so a plain add could wrap.
#[inline(always)]
pub fn add_carry(acc: u64, v: u64) -> u64 {
    let (s, carry) = acc.overflowing_add(v);
    s + carry as u64
}

/// Sum of the IPv4 pseudo-header.
#[inline]
pub fn pseudo_v4(src: &[u8], dst: &[u8], proto: u8, l4_len: u16) -> u64 {
    add_carry(sum(sum(0, src), dst), proto as u64 + l4_len as u64)
}

/// Sum of the IPv6 pseudo-header.
#[inline]
pub fn pseudo_v6(src: &[u8], dst: &[u8], next: u8, l4_len: u32) -> u64 {
    add_carry(sum(sum(0, src), dst), next as u64 + l4_len as u64)
}

/// Offset of the checksum field inside a TCP (6) or UDP (17) header.
#[inline]
pub fn l4_csum_offset(proto: u8) -> Option<usize> {
    match proto {
        6 => Some(16),
        17 => Some(6),
        _ => None,
    }
}

/// Complete a TCP/UDP checksum left partial by checksum offload.
///
/// `l4` is the whole L4 segment and `pseudo` the pseudo-header sum. A partial checksum holds the
/// folded pseudo-header sum (not complemented), which is what offload leaves for the device to
/// finish. When the field holds exactly that value the checksum is recomputed over the segment
/// and written; recomputing a checksum that was in fact already complete writes the same value,
/// so the check is safe either way. Returns true if the field was rewritten.
#[inline]
pub fn complete_partial(l4: &mut [u8], csum_off: usize, pseudo: u64, udp: bool) -> bool {
    if l4.len() < csum_off + 2 {
        return false;
    }
    let field = u16::from_be_bytes([l4[csum_off], l4[csum_off + 1]]);
    let p = fold(pseudo);
    // A UDP checksum of 0 means "none"; offload never leaves 0 for a partial one with p != 0.
    if field != p || (udp && field == 0) {
        return false;
    }
    l4[csum_off] = 0;
    l4[csum_off + 1] = 0;
    let mut c = !fold(sum(pseudo, l4));
    if udp && c == 0 {
        c = 0xffff;
    }
    l4[csum_off..csum_off + 2].copy_from_slice(&c.to_be_bytes());
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fold_equals_folding_until_no_carry() {
        let slow = |mut a: u64| {
            while a >> 16 != 0 {
                a = (a & 0xffff) + (a >> 16);
            }
            a as u16
        };
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let edges = [
            0,
            0xffff,
            0x1_0000,
            0x1_fffe,
            0x1_ffff,
            0xffff_ffff,
            u64::MAX,
            1 << 63,
        ];
        for v in edges.into_iter().chain((0..10_000).map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x >> (x & 63)
        })) {
            assert_eq!(fold(v), slow(v), "{v:#x}");
        }
    }

    #[test]
    fn rfc1071_example() {
        // RFC 1071 section 3 example bytes: sum is 0xddf2.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(fold(sum(0, &data)), 0xddf2);
        assert_eq!(checksum(&data), !0xddf2);
    }

    #[test]
    fn odd_length_and_long_input() {
        let data: Vec<u8> = (0..=255u8).cycle().take(1001).collect();
        // Reference: 16-bit word loop.
        let mut acc = 0u32;
        for w in data.chunks(2) {
            let v = if w.len() == 2 {
                u16::from_be_bytes([w[0], w[1]])
            } else {
                (w[0] as u16) << 8
            };
            acc += v as u32;
        }
        while acc >> 16 != 0 {
            acc = (acc & 0xffff) + (acc >> 16);
        }
        assert_eq!(fold(sum(0, &data)), acc as u16);
    }

    #[test]
    fn completes_partial_udp_and_leaves_full_alone() {
        let src = [192, 0, 2, 1];
        let dst = [192, 0, 2, 2];
        let mut udp = [
            0x30, 0x39, 0x00, 0x35, 0x00, 0x0c, 0, 0, b'a', b'b', b'c', b'd',
        ];
        let pseudo = pseudo_v4(&src, &dst, 17, 12);
        // What offload leaves: the folded pseudo sum.
        udp[6..8].copy_from_slice(&fold(pseudo).to_be_bytes());
        assert!(complete_partial(&mut udp, 6, pseudo, true));
        assert_eq!(fold(sum(pseudo, &udp)), 0xffff, "checksum verifies");
        let before = udp;
        // Already complete: not touched (or rewritten identically).
        complete_partial(&mut udp, 6, pseudo, true);
        assert_eq!(udp, before);
    }
}

/// Incremental update (RFC 1624, eqn. 3): the new checksum after a 16-bit field changed from
/// `old` to `new`. `csum` is the checksum field as stored.
#[inline]
pub fn update16(csum: u16, old: u16, new: u16) -> u16 {
    // HC' = ~(~HC + ~m + m')
    apply_delta(csum, delta16(old, new))
}

/// The change a 16-bit field going from `old` to `new` makes to a sum (RFC 1624 eqn. 3's
/// `~m + m'`): several fields' changes add up, and [`apply_delta`] folds them into a checksum
/// at once, as chained [`update16`] calls would.
#[inline(always)]
pub fn delta16(old: u16, new: u16) -> u64 {
    u64::from(!old) + u64::from(new)
}

/// [`delta16`] for a 32-bit field (an IPv4 address): the field taken as one 32-bit word, which
/// folds to the same ones'-complement value as its two 16-bit halves (and is 0 exactly when
/// both halves' deltas are).
#[inline(always)]
pub fn delta32(old: [u8; 4], new: [u8; 4]) -> u64 {
    u64::from(!u32::from_be_bytes(old)) + u64::from(u32::from_be_bytes(new))
}

/// The checksum `csum` (as stored) after the changes summed in `delta`.
#[inline(always)]
pub fn apply_delta(csum: u16, delta: u64) -> u16 {
    !fold(u64::from(!csum) + delta)
}

/// [`apply_delta`] for a delta already folded to 16 bits (`fold(delta)`: the same
/// ones'-complement value), as a change worked out once and applied to many packets keeps it:
/// one fold of the sum instead of four.
#[inline(always)]
pub fn apply_folded(csum: u16, delta: u16) -> u16 {
    let s = u32::from(!csum) + u32::from(delta);
    !(((s & 0xffff) + (s >> 16)) as u16)
}

/// Incremental update for a 32-bit field (e.g. an IPv4 address) changing from `old` to `new`.
#[inline]
pub fn update32(csum: u16, old: [u8; 4], new: [u8; 4]) -> u16 {
    apply_delta(csum, delta32(old, new))
}

#[cfg(test)]
mod incremental_tests {
    use super::*;

    /// A xorshift generator from `x` (not 0).
    fn xorshift(mut x: u64) -> impl FnMut() -> u64 {
        move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        }
    }

    /// `sum` against a plain 16-bit-word sum with end-around carries, on data of every length
    /// up to 64 bytes drawn mostly from 0xff (so the 8-byte words bring the accumulator near
    /// 2^64 and the last bytes carry out of it), with accumulators near 2^64 too.
    #[test]
    fn sum_keeps_every_carry() {
        fn reference(acc: u64, data: &[u8]) -> u16 {
            let mut s = u32::from(fold(acc));
            for c in data.chunks(2) {
                s += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
                s = (s & 0xffff) + (s >> 16);
            }
            s as u16
        }
        let mut next = xorshift(0x5851_f42d_4c95_7f2d);
        for len in 0..=64usize {
            for _ in 0..2_000 {
                let data: Vec<u8> = (0..len)
                    .map(|_| {
                        let r = next();
                        if r.is_multiple_of(4) {
                            (r >> 8) as u8
                        } else {
                            0xff
                        }
                    })
                    .collect();
                let r = next();
                let acc = [0, u64::MAX, u64::MAX - 1, r][(r >> 62) as usize];
                let got = fold(sum(acc, &data));
                let want = reference(acc, &data);
                // 0x0000 and 0xffff are the same ones'-complement value (only an all-zero
                // sum gives 0x0000 from `fold`).
                let norm = |v: u16| if v == 0 { 0xffff } else { v };
                assert_eq!(norm(got), norm(want), "acc {acc:x} data {data:02x?}");
            }
        }
    }

    /// The pseudo-header sums with all-ones and random addresses (an all-ones IPv6 address
    /// pair brings the address sum to 2^64 - 1) against a plain 16-bit-word sum.
    #[test]
    fn pseudo_headers_keep_every_carry() {
        fn reference(words: &[u8], tail: &[u16]) -> u16 {
            let mut s = 0u32;
            for c in words.chunks(2) {
                s += u32::from(u16::from_be_bytes([c[0], c[1]]));
                s = (s & 0xffff) + (s >> 16);
            }
            for &t in tail {
                s += u32::from(t);
                s = (s & 0xffff) + (s >> 16);
            }
            s as u16
        }
        let norm = |v: u16| if v == 0 { 0xffff } else { v };
        let mut next = xorshift(0x1405_7b7e_f767_814f);
        for i in 0..20_000 {
            let mut a = [0u8; 32];
            for b in a.iter_mut() {
                *b = if i % 3 == 0 { 0xff } else { next() as u8 };
            }
            let (proto, len) = (next() as u8, next() as u16);
            let v6 = fold(pseudo_v6(&a[..16], &a[16..], proto, len.into()));
            let want = reference(&a, &[u16::from(proto), len]);
            assert_eq!(norm(v6), norm(want), "{a:02x?}");
            let v4 = fold(pseudo_v4(&a[..4], &a[4..8], proto, len));
            let want = reference(&a[..8], &[u16::from(proto), len]);
            assert_eq!(norm(v4), norm(want), "{a:02x?}");
        }
    }

    #[test]
    fn summed_deltas_equal_chained_updates() {
        let mut next = xorshift(0x2545_f491_4f6c_dd1d);
        for _ in 0..100_000 {
            let r = next();
            let csum = [0, 0xffff, 0xfffe, 1, r as u16][(r >> 61) as usize % 5];
            let (a, b, c, d) = (next() as u16, next() as u16, next() as u16, next() as u16);
            let (o, n) = ((next() as u32).to_be_bytes(), (next() as u32).to_be_bytes());
            let chained = update32(update16(update16(csum, a, b), c, d), o, n);
            let summed = apply_delta(csum, delta16(a, b) + delta16(c, d) + delta32(o, n));
            assert_eq!(
                chained, summed,
                "{csum:04x} {a:04x}->{b:04x} {c:04x}->{d:04x}"
            );
        }
    }

    #[test]
    fn a_folded_delta_updates_as_the_whole_one() {
        let mut next = xorshift(0x9e37_79b9_7f4a_7c15);
        for _ in 0..200_000 {
            let r = next();
            let csum = [0, 0xffff, 0xfffe, 1, r as u16][(r >> 61) as usize % 5];
            // An address's delta as one 32-bit word updates as its two halves do.
            let (o, n) = ((next() as u32).to_be_bytes(), (next() as u32).to_be_bytes());
            let (o, n) = match r >> 36 & 3 {
                0 => ([0xff; 4], [0; 4]),
                1 => (o, o),
                _ => (o, n),
            };
            let halves = delta16(
                u16::from_be_bytes([o[0], o[1]]),
                u16::from_be_bytes([n[0], n[1]]),
            ) + delta16(
                u16::from_be_bytes([o[2], o[3]]),
                u16::from_be_bytes([n[2], n[3]]),
            );
            assert_eq!(apply_delta(csum, delta32(o, n)), apply_delta(csum, halves));
            assert_eq!(delta32(o, n) == 0, halves == 0, "{o:?} -> {n:?}");
            // Sums of up to six 16-bit deltas, and the corners.
            let n = (r >> 40) as usize % 7;
            let mut delta: u64 = (0..n).map(|_| delta16(next() as u16, next() as u16)).sum();
            if r >> 20 & 7 == 0 {
                delta = [0, 0xffff, 0x1_0000, 0x1_fffe, 0xffff * 6][(r >> 23) as usize % 5];
            }
            assert_eq!(
                apply_folded(csum, fold(delta)),
                apply_delta(csum, delta),
                "{csum:04x} {delta:x}"
            );
        }
    }

    #[test]
    fn incremental_matches_full_recompute() {
        let mut hdr: Vec<u8> = vec![
            0x45, 0, 0, 0x54, 0x12, 0x34, 0x40, 0, 64, 1, 0, 0, 10, 0, 0, 1, 10, 0, 1, 2,
        ];
        let c = checksum(&hdr);
        hdr[10..12].copy_from_slice(&c.to_be_bytes());
        // TTL 64 -> 63 (the TTL/protocol word changes).
        let old = u16::from_be_bytes([hdr[8], hdr[9]]);
        hdr[8] = 63;
        let new = u16::from_be_bytes([hdr[8], hdr[9]]);
        let inc = update16(c, old, new);
        hdr[10..12].copy_from_slice(&[0, 0]);
        assert_eq!(inc, checksum(&hdr));
        // Source address change.
        hdr[10..12].copy_from_slice(&inc.to_be_bytes());
        let inc2 = update32(inc, [10, 0, 0, 1], [198, 51, 100, 7]);
        hdr[12..16].copy_from_slice(&[198, 51, 100, 7]);
        hdr[10..12].copy_from_slice(&[0, 0]);
        assert_eq!(inc2, checksum(&hdr));
    }
}
