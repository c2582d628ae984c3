//! IPv4 header view: the fields the switch reads, and setters that keep the header checksum
//! right (incrementally, RFC 1624, for one field; `fill_checksum` recomputes it whole).

use super::checksum::{apply_folded, delta32, update16, update32};
use super::{Result, WireError};

pub mod options;

mod field {
    use std::ops::Range;
    pub const VER_IHL: usize = 0;
    pub const TOS: usize = 1;
    pub const LENGTH: Range<usize> = 2..4;
    pub const IDENT: Range<usize> = 4..6;
    pub const FLG_OFF: Range<usize> = 6..8;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    pub const CHECKSUM: Range<usize> = 10..12;
    pub const SRC: Range<usize> = 12..16;
    pub const DST: Range<usize> = 16..20;
}

/// Minimum header length.
pub const MIN_HEADER_LEN: usize = 20;

/// A view of an IPv4 packet.
#[derive(Debug)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

/// True if the checksum of a header without options (`h`, its 20 bytes) verifies.
///
/// The header is summed as two 64-bit words and one 32-bit word in the machine's byte order,
/// with end-around carries, then folded to 16 bits (64 -> 32 with its carry, 32 -> 16 by
/// adding the word to itself rotated by 16, whose top half is the end-around sum of its
/// halves). A ones'-complement sum over byte-swapped words is the byte-swapped sum (RFC 1071,
/// 2.(B)), and a good header sums to 0xffff, which is its own byte swap: so no byte swap is
/// needed. Test: `checksum_ok_agrees_with_the_plain_sum`.
#[inline(always)]
pub fn checksum_ok(h: &[u8; MIN_HEADER_LEN]) -> bool {
    let (a, b) = h.split_at(8);
    let (b, c) = b.split_at(8);
    let a = u64::from_ne_bytes(a.try_into().expect("8 bytes"));
    let b = u64::from_ne_bytes(b.try_into().expect("8 bytes"));
    let c = u64::from(u32::from_ne_bytes(c.try_into().expect("4 bytes")));
    let add = super::checksum::add_carry;
    let s = add(add(a, b), c);
    let (s, carry) = (s as u32).overflowing_add((s >> 32) as u32);
    let s = s + u32::from(carry);
    (s.wrapping_add(s.rotate_left(16)) >> 16) == 0xffff
}

/// What changing a header's addresses from (`old_src`, `old_dst`) to (`src`, `dst`) does:
/// whether they must be written, and the change to a ones'-complement sum over them (RFC 1624,
/// see `checksum::delta32`) for the header checksum and a pseudo-header checksum to follow.
/// A change can add 0 (0xffff -> 0x0000 is the same ones'-complement value): the addresses
/// are still written then, the checksums unchanged.
#[inline(always)]
pub fn addrs_change(old: ([u8; 4], [u8; 4]), new: ([u8; 4], [u8; 4])) -> (bool, u64) {
    let mut delta = 0;
    if old.0 != new.0 {
        delta += delta32(old.0, new.0);
    }
    if old.1 != new.1 {
        delta += delta32(old.1, new.1);
    }
    (old != new, delta)
}

/// What a router reads from an IPv4 header, after [`summary`] checked it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Summary {
    pub src: [u8; 4],
    pub dst: [u8; 4],
    pub ttl: u8,
    /// DF (don't fragment) is set.
    pub df: bool,
    /// Header length in bytes.
    pub header_len: usize,
    /// Total length field.
    pub total_len: usize,
}

/// Why [`summary`] refused a header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeaderFault {
    /// Not version 4, a header length below 20, a total length below the header's or beyond
    /// the buffer (what [`Packet::new_checked`] refuses).
    Malformed,
    /// The header checksum does not verify.
    BadChecksum,
    /// The options do not parse ([`options::check`]).
    BadOptions,
    /// A loose or strict source route option ([`options::check`]).
    SourceRoute,
}

/// Check the IPv4 header at the start of `b` as [`Packet::new_checked`] and
/// [`Packet::verify_checksum`] do, and read the fields a router needs. The common header (20
/// bytes, no options) is read as one 20-byte block with one bounds check; a header with
/// options takes the general path, which also checks the options ([`options::check`]).
#[inline(always)]
pub fn summary(b: &[u8]) -> std::result::Result<Summary, HeaderFault> {
    let Some(h) = b.first_chunk::<MIN_HEADER_LEN>() else {
        return Err(HeaderFault::Malformed);
    };
    if h[field::VER_IHL] != 0x45 {
        return summary_general(b);
    }
    let total_len = u16::from_be_bytes([h[2], h[3]]) as usize;
    if total_len < MIN_HEADER_LEN || b.len() < total_len {
        return Err(HeaderFault::Malformed);
    }
    if !checksum_ok(h) {
        return Err(HeaderFault::BadChecksum);
    }
    Ok(Summary {
        src: [h[12], h[13], h[14], h[15]],
        dst: [h[16], h[17], h[18], h[19]],
        ttl: h[field::TTL],
        df: h[field::FLG_OFF.start] & 0x40 != 0,
        header_len: MIN_HEADER_LEN,
        total_len,
    })
}

/// [`summary`] of a header with options (or not IPv4 at all).
#[cold]
fn summary_general(b: &[u8]) -> std::result::Result<Summary, HeaderFault> {
    let p = Packet::new_checked(b).map_err(|_| HeaderFault::Malformed)?;
    if !p.verify_checksum() {
        return Err(HeaderFault::BadChecksum);
    }
    options::check(&b[MIN_HEADER_LEN..p.header_len()]).map_err(|f| match f {
        options::OptionFault::Malformed => HeaderFault::BadOptions,
        options::OptionFault::SourceRoute => HeaderFault::SourceRoute,
    })?;
    Ok(Summary::of(&p))
}

impl Summary {
    /// The fields of a packet already checked.
    fn of<T: AsRef<[u8]>>(p: &Packet<T>) -> Summary {
        Summary {
            src: p.src(),
            dst: p.dst(),
            ttl: p.ttl(),
            df: p.dont_frag(),
            header_len: p.header_len(),
            total_len: p.total_len() as usize,
        }
    }
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wrap without checks.
    pub fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    /// Wrap and check version, IHL and total length against the buffer.
    pub fn new_checked(buffer: T) -> Result<Packet<T>> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// Ok if the header and the total length fit the buffer and are consistent.
    pub fn check_len(&self) -> Result<()> {
        let b = self.buffer.as_ref();
        if b.len() < MIN_HEADER_LEN {
            return Err(WireError::Truncated);
        }
        if self.version() != 4 {
            return Err(WireError::Malformed);
        }
        let hl = self.header_len();
        let tl = self.total_len() as usize;
        if hl < MIN_HEADER_LEN || tl < hl {
            return Err(WireError::Malformed);
        }
        if b.len() < tl {
            return Err(WireError::Truncated);
        }
        Ok(())
    }

    /// Version field.
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_IHL] >> 4
    }

    /// Header length in bytes.
    pub fn header_len(&self) -> usize {
        ((self.buffer.as_ref()[field::VER_IHL] & 0x0f) as usize) * 4
    }

    /// Total length field.
    pub fn total_len(&self) -> u16 {
        let b = &self.buffer.as_ref()[field::LENGTH];
        u16::from_be_bytes([b[0], b[1]])
    }

    /// True for a fragment other than the whole packet (MF set or offset non-zero).
    pub fn is_fragment(&self) -> bool {
        let b = &self.buffer.as_ref()[field::FLG_OFF];
        u16::from_be_bytes([b[0], b[1]]) & 0x3fff != 0
    }

    /// The fragment offset, in 8-byte units (0: the whole packet or its first fragment).
    #[inline]
    pub fn frag_offset(&self) -> u16 {
        super::be16(self.buffer.as_ref(), field::FLG_OFF.start) & 0x1fff
    }

    /// The buffer back.
    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// TTL.
    pub fn ttl(&self) -> u8 {
        self.buffer.as_ref()[field::TTL]
    }

    /// Protocol number.
    pub fn protocol(&self) -> u8 {
        self.buffer.as_ref()[field::PROTOCOL]
    }

    /// Header checksum field.
    pub fn checksum(&self) -> u16 {
        let b = &self.buffer.as_ref()[field::CHECKSUM];
        u16::from_be_bytes([b[0], b[1]])
    }

    /// Source address bytes.
    pub fn src(&self) -> [u8; 4] {
        self.buffer.as_ref()[field::SRC]
            .try_into()
            .unwrap_or([0; 4])
    }

    /// Destination address bytes.
    pub fn dst(&self) -> [u8; 4] {
        self.buffer.as_ref()[field::DST]
            .try_into()
            .unwrap_or([0; 4])
    }

    /// True if the header checksum verifies.
    pub fn verify_checksum(&self) -> bool {
        let b = self.buffer.as_ref();
        let hl = self.header_len();
        if hl == MIN_HEADER_LEN
            && let Some(h) = b.first_chunk::<MIN_HEADER_LEN>()
        {
            return checksum_ok(h);
        }
        super::checksum::checksum(&b[..hl]) == 0
    }

    /// Identification.
    #[inline]
    pub fn ident(&self) -> u16 {
        super::be16(self.buffer.as_ref(), field::IDENT.start)
    }

    /// DF (don't fragment) flag.
    #[inline]
    pub fn dont_frag(&self) -> bool {
        self.buffer.as_ref()[field::FLG_OFF.start] & 0x40 != 0
    }

    /// The protocol as an [`IpProtocol`].
    #[inline]
    pub fn ip_protocol(&self) -> IpProtocol {
        IpProtocol(self.protocol())
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    #[inline(always)]
    fn word(&self, at: usize) -> u16 {
        super::be16(self.buffer.as_ref(), at)
    }

    #[inline(always)]
    fn put_checksum(&mut self, c: u16) {
        self.buffer.as_mut()[field::CHECKSUM].copy_from_slice(&c.to_be_bytes());
    }

    /// Set the TTL; the header checksum follows (incremental).
    #[inline]
    pub fn set_ttl(&mut self, ttl: u8) {
        let old = self.word(field::TTL);
        self.buffer.as_mut()[field::TTL] = ttl;
        let c = update16(self.checksum(), old, self.word(field::TTL));
        self.put_checksum(c);
    }

    /// TTL - 1 (a router forwarding the packet; the TTL must be at least 1), the header checksum
    /// updated incrementally: RFC 1624 eqn. 3 with m' = m - 0x0100, so ~m + m' is the constant
    /// 0xfeff. One bounds check for TTL and checksum, no call: the routed fast path.
    #[inline(always)]
    pub fn decrement_ttl(&mut self) {
        let h: &mut [u8; 4] = (&mut self.buffer.as_mut()[field::TTL..field::CHECKSUM.end])
            .try_into()
            .expect("TTL .. checksum is 4 bytes");
        debug_assert!(h[0] >= 1, "TTL 0 is not forwarded");
        h[0] = h[0].wrapping_sub(1);
        // RFC 1624 eqn. 3 with ~m + m' = -0x0100 = 0xfeff, in the machine's byte order (a
        // ones'-complement sum over byte-swapped words is the byte-swapped sum): no swaps.
        const MINUS_TTL_ONE: u16 = u16::from_ne_bytes(0xfeffu16.to_be_bytes());
        let s = u32::from(!u16::from_ne_bytes([h[2], h[3]])) + u32::from(MINUS_TTL_ONE);
        let c = !(((s & 0xffff) + (s >> 16)) as u16);
        h[2..].copy_from_slice(&c.to_ne_bytes());
    }

    /// The ToS byte (DSCP in its top six bits, ECN in the low two).
    #[inline]
    pub fn tos(&self) -> u8 {
        self.buffer.as_ref()[field::TOS]
    }

    /// Set the `mask` bits of the ToS byte to those of `v` (DSCP: 0xfc, ECN: 0x03); the header
    /// checksum follows (incremental).
    #[inline]
    pub fn set_tos_bits(&mut self, mask: u8, v: u8) {
        let old = self.word(field::VER_IHL);
        let b = self.buffer.as_mut();
        b[field::TOS] = (b[field::TOS] & !mask) | (v & mask);
        let c = update16(self.checksum(), old, self.word(field::VER_IHL));
        self.put_checksum(c);
    }

    /// Set the total length; the header checksum follows (incremental).
    #[inline]
    pub fn set_total_len(&mut self, len: u16) {
        let old = self.total_len();
        self.buffer.as_mut()[field::LENGTH].copy_from_slice(&len.to_be_bytes());
        let c = update16(self.checksum(), old, len);
        self.put_checksum(c);
    }

    /// Set the identification; the header checksum follows (incremental).
    #[inline]
    pub fn set_ident(&mut self, id: u16) {
        let old = self.ident();
        self.buffer.as_mut()[field::IDENT].copy_from_slice(&id.to_be_bytes());
        let c = update16(self.checksum(), old, id);
        self.put_checksum(c);
    }

    /// Set the source address; the header checksum follows (incremental). Transport checksums
    /// cover the address too (pseudo-header): their owners update them.
    #[inline]
    pub fn set_src(&mut self, a: [u8; 4]) {
        let old = self.src();
        self.buffer.as_mut()[field::SRC].copy_from_slice(&a);
        let c = update32(self.checksum(), old, a);
        self.put_checksum(c);
    }

    /// Write both addresses and add `delta` (from [`addrs_change`], for these addresses, folded
    /// to 16 bits: `checksum::fold`) to the header checksum: one update for both.
    #[inline(always)]
    pub fn put_addrs(&mut self, src: [u8; 4], dst: [u8; 4], delta: u16) {
        let b = self.buffer.as_mut();
        b[field::SRC].copy_from_slice(&src);
        b[field::DST].copy_from_slice(&dst);
        let c = apply_folded(self.checksum(), delta);
        self.put_checksum(c);
    }

    /// Set the destination address; as [`Packet::set_src`].
    #[inline]
    pub fn set_dst(&mut self, a: [u8; 4]) {
        let old = self.dst();
        self.buffer.as_mut()[field::DST].copy_from_slice(&a);
        let c = update32(self.checksum(), old, a);
        self.put_checksum(c);
    }

    /// Write a new 20-byte header over the buffer's first 20 bytes: version 4, no options, TOS
    /// 0, identification 0, no fragment flags, TTL 64, `protocol`, `src`, `dst`, `total_len`.
    /// The checksum is left 0: [`Packet::fill_checksum`] after any further change.
    #[inline]
    pub fn set_header(&mut self, protocol: IpProtocol, src: [u8; 4], dst: [u8; 4], total_len: u16) {
        let b = &mut self.buffer.as_mut()[..MIN_HEADER_LEN];
        b.fill(0);
        b[field::VER_IHL] = 0x45;
        b[field::LENGTH].copy_from_slice(&total_len.to_be_bytes());
        b[field::TTL] = 64;
        b[field::PROTOCOL] = protocol.0;
        b[field::SRC].copy_from_slice(&src);
        b[field::DST].copy_from_slice(&dst);
    }

    /// Set or clear DF, leaving the checksum (a header being written: `fill_checksum` after).
    #[inline]
    pub fn set_dont_frag(&mut self, df: bool) {
        let b = &mut self.buffer.as_mut()[field::FLG_OFF.start];
        *b = if df { *b | 0x40 } else { *b & !0x40 };
    }

    /// Set the TTL, leaving the checksum (a header being written: `fill_checksum` after).
    #[inline]
    pub fn set_ttl_raw(&mut self, ttl: u8) {
        self.buffer.as_mut()[field::TTL] = ttl;
    }

    /// Stamp the total length and the checksum the caller computed for it (a header template
    /// whose sum without the length was taken once: VXLAN encapsulation's outer header).
    #[inline]
    pub fn stamp_len(&mut self, len: u16, checksum: u16) {
        self.buffer.as_mut()[field::LENGTH].copy_from_slice(&len.to_be_bytes());
        self.put_checksum(checksum);
    }

    /// Recompute the header checksum from the whole header (after several changes, or for a
    /// header written from scratch).
    #[inline]
    pub fn fill_checksum(&mut self) {
        let hl = self.header_len();
        self.put_checksum(0);
        let c = super::checksum::checksum(&self.buffer.as_ref()[..hl]);
        self.put_checksum(c);
    }
}

/// An IP protocol number (IPv4 `protocol`, IPv6 `next header`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IpProtocol(pub u8);

impl IpProtocol {
    /// ICMP.
    pub const ICMP: IpProtocol = IpProtocol(1);
    /// TCP.
    pub const TCP: IpProtocol = IpProtocol(6);
    /// UDP.
    pub const UDP: IpProtocol = IpProtocol(17);
    /// ICMPv6.
    pub const ICMPV6: IpProtocol = IpProtocol(58);
}

#[cfg(test)]
mod tests {
    use super::*;

    // 192.0.2.1 -> 192.0.2.2, UDP, total length 32, TTL 64, valid checksum.
    static PACKET: [u8; 32] = [
        0x45, 0x00, 0x00, 0x20, 0x00, 0x01, 0x40, 0x00, 0x40, 0x11, 0xb6, 0xc8, 0xc0, 0x00, 0x02,
        0x01, 0xc0, 0x00, 0x02, 0x02, 0x30, 0x39, 0x00, 0x35, 0x00, 0x0c, 0x00, 0x00, 0x61, 0x62,
        0x63, 0x64,
    ];

    /// `summary` refuses exactly what `new_checked`, `verify_checksum` and `options::check`
    /// refuse, and reads the same fields: headers of 20 and 24 bytes (random options, or a
    /// Router Alert half the time) with a right checksum, then one bit flipped anywhere in the
    /// first 24 bytes (version, IHL and lengths included), in buffers of several lengths.
    #[test]
    fn summary_agrees_with_the_packet_view() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) as usize
        };
        let mut refused = [0usize; 4];
        for hl in [20usize, 24] {
            for _ in 0..2000 {
                let len = 16 + next() % 48;
                let mut b: Vec<u8> = (0..len.max(hl)).map(|_| next() as u8).collect();
                b[0] = 0x40 | (hl / 4) as u8;
                let tl = (hl + next() % 40) as u16;
                b[2..4].copy_from_slice(&tl.to_be_bytes());
                if hl == 24 && next() % 2 == 0 {
                    b[20..24].copy_from_slice(&[options::ROUTER_ALERT, 4, 0, 0]);
                }
                Packet::new_unchecked(&mut b[..]).fill_checksum();
                if next() % 2 == 0 {
                    let bit = next() % (hl * 8);
                    b[bit / 8] ^= 1 << (bit % 8);
                }
                b.truncate(len);
                let want = match Packet::new_checked(&b[..]) {
                    Err(_) => Err(HeaderFault::Malformed),
                    Ok(p) if !p.verify_checksum() => Err(HeaderFault::BadChecksum),
                    Ok(p) => match options::check(&b[MIN_HEADER_LEN..p.header_len()]) {
                        Err(options::OptionFault::Malformed) => Err(HeaderFault::BadOptions),
                        Err(options::OptionFault::SourceRoute) => Err(HeaderFault::SourceRoute),
                        Ok(()) => Ok(Summary::of(&p)),
                    },
                };
                let got = summary(&b);
                assert_eq!(got, want, "{b:02x?}");
                if let Err(f) = got {
                    refused[f as usize] += 1;
                }
            }
        }
        // The header refusals happened (the cases are not all good ones), and options were
        // refused too.
        assert!(
            refused[0] > 100 && refused[1] > 100 && refused[2] > 10,
            "{refused:?}"
        );
    }

    /// `checksum_ok` (word sums in the machine's byte order) against the plain 16-bit sum, on
    /// headers made to hit every carry: bytes drawn mostly from 0x00, 0xff, 0x01 and 0xfe,
    /// half of them then given their right checksum, plus all-zero and all-ones headers.
    #[test]
    fn checksum_ok_agrees_with_the_plain_sum() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut good = 0;
        let cases = (0..200_000)
            .map(|_| {
                let mut h = [0u8; MIN_HEADER_LEN];
                for b in h.iter_mut() {
                    let r = next();
                    *b = match r % 6 {
                        0 => 0x00,
                        1 => 0xff,
                        2 => 0x01,
                        3 => 0xfe,
                        _ => (r >> 8) as u8,
                    };
                }
                if next() % 2 == 0 {
                    h[10..12].fill(0);
                    let c = crate::wire::checksum::checksum(&h);
                    h[10..12].copy_from_slice(&c.to_be_bytes());
                }
                h
            })
            .chain([[0u8; MIN_HEADER_LEN], [0xff; MIN_HEADER_LEN]]);
        for h in cases {
            let plain = crate::wire::checksum::checksum(&h) == 0;
            assert_eq!(checksum_ok(&h), plain, "{h:02x?}");
            good += usize::from(plain);
        }
        assert!(good > 90_000, "{good}");
    }

    #[test]
    fn verify_checksum_agrees_with_the_plain_sum_with_and_without_options() {
        // Headers of 20 (the word-sum path) and 24 bytes (options: the generic path), each
        // with its right checksum and then with one bit flipped anywhere in the header.
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for hl in [20usize, 24] {
            for _ in 0..200 {
                let mut h = vec![0u8; hl];
                for b in h.iter_mut() {
                    seed = seed
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    *b = (seed >> 56) as u8;
                }
                h[0] = 0x40 | (hl / 4) as u8;
                h[2..4].copy_from_slice(&(hl as u16).to_be_bytes());
                let mut p = Packet::new_unchecked(&mut h[..]);
                p.fill_checksum();
                assert!(Packet::new_unchecked(&h[..]).verify_checksum());
                let bit = (seed as usize >> 8) % (hl * 8);
                h[bit / 8] ^= 1 << (bit % 8);
                let plain = crate::wire::checksum::checksum(&h[..hl]) == 0;
                let p = Packet::new_unchecked(&h[..]);
                if p.header_len() == hl {
                    assert_eq!(p.verify_checksum(), plain, "{h:02x?}");
                    assert!(!plain, "a flipped bit is caught: {h:02x?}");
                }
            }
        }
    }

    #[test]
    fn test_deconstruct() {
        let p = Packet::new_checked(&PACKET[..]).unwrap();
        assert_eq!(p.header_len(), 20);
        assert_eq!(p.total_len(), 32);
        assert_eq!(p.protocol(), 17);
        assert_eq!(p.ttl(), 64);
        assert_eq!(p.src(), [192, 0, 2, 1]);
        assert_eq!(p.dst(), [192, 0, 2, 2]);
        assert!(!p.is_fragment());
        assert_eq!(p.frag_offset(), 0);
        assert!(p.verify_checksum());
        let e = etherparse::Ipv4HeaderSlice::from_slice(&PACKET).unwrap();
        assert_eq!(e.header_checksum(), p.checksum());
    }

    /// `decrement_ttl` gives the same header as `set_ttl(ttl - 1)` for every TTL and checksum
    /// (RFC 1624's corner cases: sums that end at 0x0000 / 0xffff).
    #[test]
    fn decrement_ttl_matches_the_general_update() {
        for ttl in 1..=255u8 {
            for csum in (0..=0xffffu32)
                .step_by(97)
                .chain([0, 0xfeff, 0xff00, 0xfffe, 0xffff])
            {
                let mut a = PACKET;
                a[8] = ttl;
                a[10..12].copy_from_slice(&(csum as u16).to_be_bytes());
                let mut b = a;
                Packet::new_unchecked(&mut a[..]).set_ttl(ttl - 1);
                Packet::new_unchecked(&mut b[..]).decrement_ttl();
                assert_eq!(a, b, "ttl {ttl} checksum {csum:04x}");
            }
        }
        let mut b = PACKET;
        Packet::new_unchecked(&mut b[..]).decrement_ttl();
        let p = Packet::new_unchecked(&b[..]);
        assert_eq!(p.ttl(), 63);
        assert!(p.verify_checksum());
    }

    /// Every setter leaves a header whose checksum etherparse computes the same way.
    #[test]
    fn setters_keep_the_header_checksum() {
        let mut b = PACKET;
        let mut p = Packet::new_checked(&mut b[..]).unwrap();
        p.set_ttl(63);
        p.set_total_len(28);
        p.set_src([10, 1, 2, 3]);
        p.set_dst([172, 16, 0, 9]);
        p.set_ident(0xfffe);
        // Through `addrs_change` and `put_addrs`, as NAT's translation writes them.
        let set_addrs = |p: &mut Packet<&mut [u8]>, src, dst| {
            let (write, delta) = addrs_change((p.src(), p.dst()), (src, dst));
            if write {
                p.put_addrs(src, dst, crate::wire::checksum::fold(delta));
            }
            delta
        };
        assert_eq!(
            set_addrs(&mut p, [10, 1, 2, 3], [172, 16, 0, 9]),
            0,
            "nothing changed"
        );
        assert_ne!(set_addrs(&mut p, [10, 9, 2, 3], [172, 16, 0, 8]), 0);
        assert!(p.verify_checksum());
        // All-ones to all-zeros adds nothing to the sum but is still written.
        set_addrs(&mut p, [255; 4], [172, 16, 0, 9]);
        assert_eq!(set_addrs(&mut p, [0; 4], [172, 16, 0, 9]), 0);
        assert_eq!(p.src(), [0; 4]);
        assert!(p.verify_checksum());
        set_addrs(&mut p, [10, 1, 2, 3], [172, 16, 0, 9]);
        p.set_tos_bits(0xfc, 0xb8);
        p.set_tos_bits(0x03, 0x01);
        assert_eq!(p.tos(), 0xb9);
        assert!(p.verify_checksum());
        assert_eq!(p.ident(), 0xfffe);
        assert_eq!((p.ttl(), p.total_len()), (63, 28));
        assert_eq!((p.src(), p.dst()), ([10, 1, 2, 3], [172, 16, 0, 9]));
        let e = etherparse::Ipv4HeaderSlice::from_slice(&b)
            .unwrap()
            .to_header();
        assert_eq!(e.calc_header_checksum(), e.header_checksum);
        // A header scribbled on, then filled.
        b[1] = 0xb8;
        let mut p = Packet::new_unchecked(&mut b[..]);
        assert!(!p.verify_checksum());
        p.fill_checksum();
        assert!(p.verify_checksum());
        assert!(p.dont_frag());
        assert_eq!(p.ip_protocol(), IpProtocol::UDP);
    }

    #[test]
    fn a_new_header_reads_back_as_etherparse_reads_it() {
        let mut b = [0xaau8; 28];
        let mut p = Packet::new_unchecked(&mut b[..]);
        p.set_header(IpProtocol::ICMP, [192, 0, 2, 1], [10, 0, 0, 9], 28);
        p.fill_checksum();
        let e = etherparse::Ipv4HeaderSlice::from_slice(&b)
            .unwrap()
            .to_header();
        assert_eq!(e.calc_header_checksum(), e.header_checksum);
        assert_eq!((e.source, e.destination), ([192, 0, 2, 1], [10, 0, 0, 9]));
        assert_eq!((e.time_to_live, e.total_len, e.protocol.0), (64, 28, 1));
        assert!(!e.dont_fragment && !e.more_fragments && e.options.is_empty());
        assert_eq!(&b[20..], &[0xaa; 8], "the payload untouched");
    }

    #[test]
    fn a_stamped_template_is_a_valid_header() {
        let mut b = [0u8; 20];
        let mut p = Packet::new_unchecked(&mut b[..]);
        p.set_header(IpProtocol::UDP, [10, 0, 0, 1], [10, 0, 0, 2], 0);
        p.set_dont_frag(true);
        p.set_ttl_raw(7);
        let s = crate::wire::checksum::sum(0, &b);
        for len in [20u16, 1500, 65535] {
            let c = !crate::wire::checksum::fold(s + u64::from(len));
            let mut p = Packet::new_unchecked(&mut b[..]);
            p.stamp_len(len, c);
            assert!(p.verify_checksum(), "{len}");
            assert!(p.dont_frag() && p.ttl() == 7 && p.total_len() == len);
        }
        let mut p = Packet::new_unchecked(&mut b[..]);
        p.set_dont_frag(false);
        assert!(!p.dont_frag());
    }

    #[test]
    fn bad_lengths_are_errors() {
        assert_eq!(
            Packet::new_checked(&PACKET[..19]).unwrap_err(),
            WireError::Truncated
        );
        assert_eq!(
            Packet::new_checked(&PACKET[..31]).unwrap_err(),
            WireError::Truncated
        );
        let mut bad = PACKET;
        bad[0] = 0x44; // IHL 16 bytes
        assert_eq!(
            Packet::new_checked(&bad[..]).unwrap_err(),
            WireError::Malformed
        );
        let mut bad = PACKET;
        bad[0] = 0x65;
        assert_eq!(
            Packet::new_checked(&bad[..]).unwrap_err(),
            WireError::Malformed
        );
    }
}
