//! TCP header view: the fields the switch reads and rewrites (ports, sequence and
//! acknowledgement numbers, header length, flags, window, checksum field).
//!
//! Setters change only their field: the checksum is the caller's (it may be complete or a
//! partial pseudo-header sum, see `pipeline::gso`), as in smoltcp's `TcpPacket`.

use super::{Result, WireError};

mod field {
    use std::ops::Range;
    pub const SRC_PORT: Range<usize> = 0..2;
    pub const DST_PORT: Range<usize> = 2..4;
    pub const SEQ: Range<usize> = 4..8;
    pub const ACK: Range<usize> = 8..12;
    pub const OFFSET: usize = 12;
    pub const FLAGS: usize = 13;
    pub const WINDOW: Range<usize> = 14..16;
    pub const CHECKSUM: Range<usize> = 16..18;
}

/// Minimum header length.
pub const MIN_HEADER_LEN: usize = 20;
/// Offset of the checksum field.
pub const CHECKSUM_AT: usize = field::CHECKSUM.start;

/// TCP flag bits (the low byte of the flags word).
pub struct Flags;

impl Flags {
    /// FIN.
    pub const FIN: u8 = 0x01;
    /// SYN.
    pub const SYN: u8 = 0x02;
    /// RST.
    pub const RST: u8 = 0x04;
    /// PSH.
    pub const PSH: u8 = 0x08;
    /// ACK.
    pub const ACK: u8 = 0x10;
    /// URG.
    pub const URG: u8 = 0x20;
    /// ECE.
    pub const ECE: u8 = 0x40;
    /// CWR.
    pub const CWR: u8 = 0x80;
}

/// A view of a TCP segment (header and payload).
#[derive(Debug)]
pub struct Segment<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Segment<T> {
    /// Wrap without checks.
    #[inline]
    pub fn new_unchecked(buffer: T) -> Segment<T> {
        Segment { buffer }
    }

    /// Wrap and check that the header (as its data offset says) fits the buffer.
    pub fn new_checked(buffer: T) -> Result<Segment<T>> {
        let s = Self::new_unchecked(buffer);
        let len = s.buffer.as_ref().len();
        if len < MIN_HEADER_LEN {
            return Err(WireError::Truncated);
        }
        let hl = s.header_len();
        if hl < MIN_HEADER_LEN {
            return Err(WireError::Malformed);
        }
        if len < hl {
            return Err(WireError::Truncated);
        }
        Ok(s)
    }

    #[inline(always)]
    fn u16_at(&self, r: std::ops::Range<usize>) -> u16 {
        super::be16(self.buffer.as_ref(), r.start)
    }

    #[inline(always)]
    fn u32_at(&self, r: std::ops::Range<usize>) -> u32 {
        super::be32(self.buffer.as_ref(), r.start)
    }

    /// Source port.
    #[inline]
    pub fn src_port(&self) -> u16 {
        self.u16_at(field::SRC_PORT)
    }

    /// Destination port.
    #[inline]
    pub fn dst_port(&self) -> u16 {
        self.u16_at(field::DST_PORT)
    }

    /// Sequence number.
    #[inline]
    pub fn seq(&self) -> u32 {
        self.u32_at(field::SEQ)
    }

    /// Acknowledgement number.
    #[inline]
    pub fn ack(&self) -> u32 {
        self.u32_at(field::ACK)
    }

    /// Header length in bytes (data offset x 4).
    #[inline]
    pub fn header_len(&self) -> usize {
        (self.buffer.as_ref()[field::OFFSET] >> 4) as usize * 4
    }

    /// The flag bits ([`Flags`]).
    #[inline]
    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[field::FLAGS]
    }

    /// Receive window.
    #[inline]
    pub fn window(&self) -> u16 {
        self.u16_at(field::WINDOW)
    }

    /// The checksum field as stored.
    #[inline]
    pub fn checksum(&self) -> u16 {
        self.u16_at(field::CHECKSUM)
    }

    /// The option bytes (between the fixed header and the payload).
    #[inline]
    pub fn options(&self) -> &[u8] {
        &self.buffer.as_ref()[MIN_HEADER_LEN..self.header_len()]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Segment<T> {
    /// Set the ports (the checksum is the caller's: a header being written).
    #[inline]
    pub fn set_ports(&mut self, src: u16, dst: u16) {
        super::put_ports(self.buffer.as_mut(), src, dst);
    }

    /// Set the header length (a multiple of 4 from 20 to 60 bytes), clearing the reserved bits.
    #[inline]
    pub fn set_header_len(&mut self, len: usize) {
        self.buffer.as_mut()[field::OFFSET] = ((len / 4) as u8) << 4;
    }

    /// Set the sequence number.
    #[inline]
    pub fn set_seq(&mut self, seq: u32) {
        self.buffer.as_mut()[field::SEQ].copy_from_slice(&seq.to_be_bytes());
    }

    /// Set the acknowledgement number.
    #[inline]
    pub fn set_ack(&mut self, ack: u32) {
        self.buffer.as_mut()[field::ACK].copy_from_slice(&ack.to_be_bytes());
    }

    /// Set the flag bits.
    #[inline]
    pub fn set_flags(&mut self, flags: u8) {
        self.buffer.as_mut()[field::FLAGS] = flags;
    }

    /// Set the checksum field.
    #[inline]
    pub fn set_checksum(&mut self, c: u16) {
        self.buffer.as_mut()[field::CHECKSUM].copy_from_slice(&c.to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_read_as_etherparse_reads_them() {
        let mut h = etherparse::TcpHeader::new(40000, 443, 0x1234_5678, 501);
        h.acknowledgment_number = 0x0bad_cafe;
        h.ack = true;
        h.psh = true;
        h.set_options(&[etherparse::TcpOptionElement::Timestamp(1, 2)])
            .unwrap();
        let mut b = h.to_bytes().to_vec();
        b.extend_from_slice(b"payload");
        let mut s = Segment::new_checked(&mut b[..]).unwrap();
        assert_eq!((s.src_port(), s.dst_port()), (40000, 443));
        assert_eq!(
            (s.seq(), s.ack(), s.window()),
            (0x1234_5678, 0x0bad_cafe, 501)
        );
        assert_eq!(s.header_len(), h.header_len());
        assert_eq!(s.flags(), Flags::ACK | Flags::PSH);
        assert_eq!(s.options().len(), h.header_len() - 20);
        s.set_seq(7);
        s.set_ack(9);
        s.set_flags(Flags::ACK | Flags::FIN);
        s.set_checksum(0xbeef);
        let e = etherparse::TcpHeaderSlice::from_slice(&b).unwrap();
        assert_eq!(e.sequence_number(), 7);
        assert_eq!(e.acknowledgment_number(), 9);
        assert!(e.fin() && e.ack() && !e.psh());
        assert_eq!(e.checksum(), 0xbeef);
    }

    #[test]
    fn short_or_bad_offsets_are_errors() {
        let b = [0u8; 19];
        assert_eq!(
            Segment::new_checked(&b[..]).unwrap_err(),
            WireError::Truncated
        );
        let mut b = [0u8; 20];
        b[12] = 0x40; // 16 bytes
        assert_eq!(
            Segment::new_checked(&b[..]).unwrap_err(),
            WireError::Malformed
        );
        b[12] = 0x60; // 24 bytes in a 20-byte buffer
        assert_eq!(
            Segment::new_checked(&b[..]).unwrap_err(),
            WireError::Truncated
        );
    }
}
