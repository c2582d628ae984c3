//! ICMPv4 messages (RFC 792): the 8-byte header (type, code, checksum, and four bytes whose
//! meaning depends on the type: an echo's identifier and sequence number, an error's unused
//! word or next-hop MTU) and the body.
//!
//! Contract: `Message::new_checked` accepts at least 8 bytes; the setters of a single field
//! keep the checksum right incrementally (RFC 1624), `fill_checksum` recomputes it over the
//! whole buffer (a message written from scratch).

use super::checksum::{checksum, update16};
use super::{Result, WireError, be16};

/// Echo reply.
pub const ECHO_REPLY: u8 = 0;
/// Destination unreachable.
pub const DEST_UNREACH: u8 = 3;
/// Source quench (deprecated, still quotes a packet).
pub const SOURCE_QUENCH: u8 = 4;
/// Redirect (quotes a packet too).
pub const REDIRECT: u8 = 5;
/// Echo request.
pub const ECHO_REQUEST: u8 = 8;
/// Time exceeded.
pub const TIME_EXCEEDED: u8 = 11;
/// Parameter problem.
pub const PARAM_PROBLEM: u8 = 12;

/// Destination-unreachable codes.
pub mod unreach {
    /// Network unreachable.
    pub const NET: u8 = 0;
    /// Host unreachable.
    pub const HOST: u8 = 1;
    /// Fragmentation needed and DF set (the next-hop MTU in the header's last two bytes).
    pub const FRAG_NEEDED: u8 = 4;
}

/// Bytes of the ICMP header.
pub const HEADER_LEN: usize = 8;

mod field {
    use core::ops::Range;
    pub const TYPE: usize = 0;
    pub const CODE: usize = 1;
    pub const CHECKSUM: Range<usize> = 2..4;
    pub const IDENT: Range<usize> = 4..6;
    pub const REST: Range<usize> = 4..8;
}

/// A view over an ICMP message (header and body).
#[derive(Debug, Clone)]
pub struct Message<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Message<T> {
    /// Wrap without checking the length.
    #[inline]
    pub fn new_unchecked(buffer: T) -> Message<T> {
        Message { buffer }
    }

    /// Wrap, checking that the header fits.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Message<T>> {
        let m = Message::new_unchecked(buffer);
        m.check_len()?;
        Ok(m)
    }

    /// At least the 8-byte header.
    #[inline]
    pub fn check_len(&self) -> Result<()> {
        if self.buffer.as_ref().len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        Ok(())
    }

    /// The message type.
    #[inline]
    pub fn msg_type(&self) -> u8 {
        self.buffer.as_ref()[field::TYPE]
    }

    /// The code.
    #[inline]
    pub fn code(&self) -> u8 {
        self.buffer.as_ref()[field::CODE]
    }

    /// The checksum field.
    #[inline]
    pub fn checksum(&self) -> u16 {
        be16(self.buffer.as_ref(), field::CHECKSUM.start)
    }

    /// An echo request's or reply's identifier.
    #[inline]
    pub fn echo_ident(&self) -> u16 {
        be16(self.buffer.as_ref(), field::IDENT.start)
    }

    /// True for an echo request or reply.
    #[inline]
    pub fn is_echo(&self) -> bool {
        matches!(self.msg_type(), ECHO_REQUEST | ECHO_REPLY)
    }

    /// True for an error that quotes the packet it is about (destination unreachable, source
    /// quench, redirect, time exceeded, parameter problem: the types Linux's conntrack relates
    /// to a connection).
    #[inline]
    pub fn is_error(&self) -> bool {
        matches!(
            self.msg_type(),
            DEST_UNREACH | SOURCE_QUENCH | REDIRECT | TIME_EXCEEDED | PARAM_PROBLEM
        )
    }

    /// The body after the header (an echo's data, an error's quoted packet).
    #[inline]
    pub fn body(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..]
    }

    /// True if the checksum over the whole buffer is right.
    pub fn verify_checksum(&self) -> bool {
        checksum(self.buffer.as_ref()) == 0
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Message<T> {
    #[inline(always)]
    fn put_checksum(&mut self, c: u16) {
        self.buffer.as_mut()[field::CHECKSUM].copy_from_slice(&c.to_be_bytes());
    }

    /// Set the type; the checksum follows (incremental).
    #[inline]
    pub fn set_msg_type(&mut self, t: u8) {
        let b = self.buffer.as_ref();
        let old = be16(b, field::TYPE);
        let new = u16::from_be_bytes([t, b[field::CODE]]);
        self.buffer.as_mut()[field::TYPE] = t;
        let c = update16(self.checksum(), old, new);
        self.put_checksum(c);
    }

    /// Set an echo's identifier; the checksum follows (incremental).
    #[inline]
    pub fn set_echo_ident(&mut self, id: u16) {
        let old = self.echo_ident();
        self.buffer.as_mut()[field::IDENT].copy_from_slice(&id.to_be_bytes());
        let c = update16(self.checksum(), old, id);
        self.put_checksum(c);
    }

    /// Write the header of a new message: type, code, the four type-specific bytes (`rest`,
    /// e.g. an unreachable's next-hop MTU); the checksum is left 0 for `fill_checksum`.
    #[inline]
    pub fn set_header(&mut self, t: u8, code: u8, rest: u32) {
        let b = self.buffer.as_mut();
        b[field::TYPE] = t;
        b[field::CODE] = code;
        b[field::CHECKSUM].copy_from_slice(&[0, 0]);
        b[field::REST].copy_from_slice(&rest.to_be_bytes());
    }

    /// The body, writable.
    #[inline]
    pub fn body_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[HEADER_LEN..]
    }

    /// Recompute the checksum over the whole buffer.
    #[inline]
    pub fn fill_checksum(&mut self) {
        self.put_checksum(0);
        let c = checksum(self.buffer.as_ref());
        self.put_checksum(c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // An echo request, identifier 0x1234, sequence 1, data "abcd", valid checksum.
    fn echo() -> Vec<u8> {
        let mut b = vec![8, 0, 0, 0, 0x12, 0x34, 0, 1, b'a', b'b', b'c', b'd'];
        let c = checksum(&b);
        b[2..4].copy_from_slice(&c.to_be_bytes());
        b
    }

    #[test]
    fn fields_read_as_etherparse_reads_them() {
        let b = echo();
        let (h, rest) = etherparse::Icmpv4Header::from_slice(&b).unwrap();
        let m = Message::new_checked(&b[..]).unwrap();
        assert_eq!(m.checksum(), h.checksum);
        assert!(m.is_echo() && !m.is_error() && m.verify_checksum());
        assert_eq!((m.msg_type(), m.code(), m.echo_ident()), (8, 0, 0x1234));
        assert_eq!(m.body(), rest);
        assert_eq!(
            Message::new_checked(&b[..7]).unwrap_err(),
            WireError::Truncated
        );
    }

    #[test]
    fn single_field_setters_keep_the_checksum_right() {
        let mut b = echo();
        let mut m = Message::new_unchecked(&mut b[..]);
        m.set_msg_type(ECHO_REPLY);
        assert!(m.verify_checksum());
        for id in [0, 1, 0xffff, 0x8000, 0x1234] {
            m.set_echo_ident(id);
            assert_eq!(m.echo_ident(), id);
            assert!(m.verify_checksum(), "ident {id:#x}");
        }
        let mut e = [0u8; 8 + 28];
        let mut m = Message::new_unchecked(&mut e[..]);
        m.set_header(DEST_UNREACH, unreach::FRAG_NEEDED, 1400);
        m.body_mut()[0] = 0x45;
        m.fill_checksum();
        assert!(m.is_error() && m.verify_checksum());
        assert_eq!(&e[4..8], &[0, 0, 0x05, 0x78]);
    }
}
