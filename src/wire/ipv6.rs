//! IPv6 fixed header (RFC 8200): version, traffic class, flow label, payload length, next
//! header, hop limit, source and destination (40 bytes). Extension headers are not walked:
//! `next_header` is the first one's type.
//!
//! Contract: `Packet::new_checked` accepts a buffer of at least 40 bytes with version 6 whose
//! payload length fits in it; accessors never panic after that. IPv6 has no header checksum;
//! transport checksums cover the addresses and the payload length (pseudo-header), so their
//! owners update them.

use super::{IpProtocol, Result, WireError, be16};

/// Bytes of the fixed header.
pub const HEADER_LEN: usize = 40;

mod field {
    use core::ops::Range;
    pub const VER_TC_FLOW: Range<usize> = 0..4;
    pub const LENGTH: Range<usize> = 4..6;
    pub const NEXT_HEADER: usize = 6;
    pub const HOP_LIMIT: usize = 7;
    pub const SRC: Range<usize> = 8..24;
    pub const DST: Range<usize> = 24..40;
}

/// A view of an IPv6 packet.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wrap without checking.
    #[inline]
    pub fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    /// Wrap and check.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Packet<T>> {
        let p = Packet::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// The fixed header fits, the version is 6 and the payload fits the buffer.
    pub fn check_len(&self) -> Result<()> {
        let b = self.buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        if b[0] >> 4 != 6 {
            return Err(WireError::Malformed);
        }
        if b.len() < HEADER_LEN + self.payload_len() as usize {
            return Err(WireError::Truncated);
        }
        Ok(())
    }

    #[inline(always)]
    fn first_word(&self) -> u32 {
        let b = &self.buffer.as_ref()[field::VER_TC_FLOW];
        u32::from_be_bytes([b[0], b[1], b[2], b[3]])
    }

    /// The traffic class (DSCP and ECN).
    #[inline]
    pub fn traffic_class(&self) -> u8 {
        (self.first_word() >> 20) as u8
    }

    /// The flow label (20 bits).
    #[inline]
    pub fn flow_label(&self) -> u32 {
        self.first_word() & 0xf_ffff
    }

    /// The payload length (extension headers and the transport).
    #[inline]
    pub fn payload_len(&self) -> u16 {
        be16(self.buffer.as_ref(), field::LENGTH.start)
    }

    /// The first next-header type.
    #[inline]
    pub fn next_header(&self) -> IpProtocol {
        IpProtocol(self.buffer.as_ref()[field::NEXT_HEADER])
    }

    /// The hop limit.
    #[inline]
    pub fn hop_limit(&self) -> u8 {
        self.buffer.as_ref()[field::HOP_LIMIT]
    }

    /// The source address.
    #[inline]
    pub fn src(&self) -> [u8; 16] {
        self.buffer.as_ref()[field::SRC]
            .try_into()
            .expect("16 bytes")
    }

    /// The destination address.
    #[inline]
    pub fn dst(&self) -> [u8; 16] {
        self.buffer.as_ref()[field::DST]
            .try_into()
            .expect("16 bytes")
    }

    /// The source and destination, as they lie (the pseudo-header's first 32 bytes).
    #[inline]
    pub fn addrs(&self) -> &[u8] {
        &self.buffer.as_ref()[field::SRC.start..field::DST.end]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Set the payload length.
    #[inline]
    pub fn set_payload_len(&mut self, len: u16) {
        self.buffer.as_mut()[field::LENGTH].copy_from_slice(&len.to_be_bytes());
    }

    /// Write a new fixed header: version 6, `traffic_class`, `flow_label`, `payload_len`,
    /// `next`, hop limit 64, `src`, `dst`.
    pub fn set_header(
        &mut self,
        (traffic_class, flow_label): (u8, u32),
        next: IpProtocol,
        src: [u8; 16],
        dst: [u8; 16],
        payload_len: u16,
    ) {
        let first = (6u32 << 28) | (u32::from(traffic_class) << 20) | (flow_label & 0xf_ffff);
        let b = self.buffer.as_mut();
        b[field::VER_TC_FLOW].copy_from_slice(&first.to_be_bytes());
        b[field::LENGTH].copy_from_slice(&payload_len.to_be_bytes());
        b[field::NEXT_HEADER] = next.0;
        b[field::HOP_LIMIT] = 64;
        b[field::SRC].copy_from_slice(&src);
        b[field::DST].copy_from_slice(&dst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet() -> Vec<u8> {
        let mut out = Vec::new();
        let src = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        let mut dst = src;
        dst[15] = 2;
        etherparse::PacketBuilder::ipv6(src, dst, 33)
            .udp(5353, 53)
            .write(&mut out, b"abc")
            .unwrap();
        out
    }

    #[test]
    fn fields_read_as_etherparse_reads_them() {
        let b = packet();
        let e = etherparse::Ipv6HeaderSlice::from_slice(&b).unwrap();
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.payload_len(), e.payload_length());
        assert_eq!(p.next_header(), IpProtocol::UDP);
        assert_eq!(p.hop_limit(), 33);
        assert_eq!((p.src(), p.dst()), (e.source(), e.destination()));
        assert_eq!(p.addrs(), &b[8..40]);
        assert_eq!((p.traffic_class(), p.flow_label()), (0, 0));
        assert_eq!(
            Packet::new_checked(&b[..b.len() - 1]).unwrap_err(),
            WireError::Truncated
        );
        let mut v4 = b.clone();
        v4[0] = 0x45;
        assert_eq!(
            Packet::new_checked(&v4[..]).unwrap_err(),
            WireError::Malformed
        );
    }

    #[test]
    fn a_new_header_reads_back() {
        let mut b = [0u8; 48];
        let mut p = Packet::new_unchecked(&mut b[..]);
        p.set_header((0xb8, 0x12345), IpProtocol::TCP, [1; 16], [2; 16], 8);
        p.set_payload_len(7);
        let e = etherparse::Ipv6HeaderSlice::from_slice(&b).unwrap();
        assert_eq!((e.traffic_class(), e.flow_label().value()), (0xb8, 0x12345));
        assert_eq!(
            (e.payload_length(), e.next_header().0, e.hop_limit()),
            (7, 6, 64)
        );
        assert_eq!((e.source(), e.destination()), ([1; 16], [2; 16]));
    }
}
