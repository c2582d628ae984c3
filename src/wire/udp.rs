//! UDP header view: ports, length and checksum field.
//!
//! Setters change only their field: the checksum is the caller's (complete, partial, or 0 for
//! "none" over IPv4), as in smoltcp's `UdpPacket`.

use super::{Result, WireError};

mod field {
    use std::ops::Range;
    pub const SRC_PORT: Range<usize> = 0..2;
    pub const DST_PORT: Range<usize> = 2..4;
    pub const LENGTH: Range<usize> = 4..6;
    pub const CHECKSUM: Range<usize> = 6..8;
}

/// Header length.
pub const HEADER_LEN: usize = 8;
/// Offset of the checksum field.
pub const CHECKSUM_AT: usize = field::CHECKSUM.start;

/// A view of a UDP datagram (header and payload).
#[derive(Debug)]
pub struct Datagram<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Datagram<T> {
    /// Wrap without checks.
    #[inline]
    pub fn new_unchecked(buffer: T) -> Datagram<T> {
        Datagram { buffer }
    }

    /// Wrap and check that the header fits.
    pub fn new_checked(buffer: T) -> Result<Datagram<T>> {
        if buffer.as_ref().len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        Ok(Self::new_unchecked(buffer))
    }

    #[inline(always)]
    fn u16_at(&self, r: std::ops::Range<usize>) -> u16 {
        super::be16(self.buffer.as_ref(), r.start)
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

    /// Length field (header and payload).
    #[inline]
    pub fn len(&self) -> u16 {
        self.u16_at(field::LENGTH)
    }

    /// True if the length field says no payload... or less: see [`Datagram::len`].
    #[inline]
    pub fn is_empty(&self) -> bool {
        (self.len() as usize) <= HEADER_LEN
    }

    /// The checksum field as stored.
    #[inline]
    pub fn checksum(&self) -> u16 {
        self.u16_at(field::CHECKSUM)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Datagram<T> {
    /// Set the ports.
    #[inline]
    pub fn set_ports(&mut self, src: u16, dst: u16) {
        super::put_ports(self.buffer.as_mut(), src, dst);
    }

    /// Set the source port.
    #[inline]
    pub fn set_src_port(&mut self, port: u16) {
        self.buffer.as_mut()[field::SRC_PORT].copy_from_slice(&port.to_be_bytes());
    }

    /// Set the length field.
    #[inline]
    pub fn set_len(&mut self, len: u16) {
        self.buffer.as_mut()[field::LENGTH].copy_from_slice(&len.to_be_bytes());
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
    fn fields_read_and_write_as_etherparse_sees_them() {
        let h = etherparse::UdpHeader {
            source_port: 5353,
            destination_port: 4789,
            length: 20,
            checksum: 0x1234,
        };
        let mut b = h.to_bytes().to_vec();
        b.extend_from_slice(&[0; 12]);
        let mut d = Datagram::new_checked(&mut b[..]).unwrap();
        assert_eq!(
            (d.src_port(), d.dst_port(), d.len(), d.checksum()),
            (5353, 4789, 20, 0x1234)
        );
        assert!(!d.is_empty());
        d.set_ports(9, 2);
        d.set_src_port(1);
        d.set_len(8);
        d.set_checksum(0);
        let e = etherparse::UdpHeaderSlice::from_slice(&b).unwrap();
        assert_eq!(
            (
                e.source_port(),
                e.destination_port(),
                e.length(),
                e.checksum()
            ),
            (1, 2, 8, 0)
        );
        assert_eq!(
            Datagram::new_checked(&b[..7]).unwrap_err(),
            WireError::Truncated
        );
    }
}
