//! VXLAN (RFC 7348): the 8-byte header and the sizes of an IPv4/UDP encapsulation.
//!
//! ```text
//! |R|R|R|R|I|R|R|R|  reserved (24)  |   VNI (24)   | reserved (8) |
//! ```
//! The I flag (0x08) must be set for the VNI to be valid; the other bits are reserved (sent as
//! zero, ignored on receipt, as the RFC says).

use super::{Result, WireError};

/// IANA-assigned UDP port.
pub const UDP_PORT: u16 = 4789;
/// VXLAN header length.
pub const HEADER_LEN: usize = 8;
/// Outer Ethernet + IPv4 + UDP + VXLAN: what encapsulation adds in front of the inner frame.
pub const OVERHEAD: usize = 14 + 20 + 8 + HEADER_LEN;
/// The I flag: the VNI field is valid.
pub const FLAG_VNI: u8 = 0x08;
/// Largest VNI (24 bits).
pub const MAX_VNI: u32 = (1 << 24) - 1;

/// A parsed VXLAN header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    /// The VXLAN network identifier.
    pub vni: u32,
}

impl Repr {
    /// Parse the 8 bytes at the start of `b`. Fails without the I flag.
    pub fn parse(b: &[u8]) -> Result<Repr> {
        if b.len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        if b[0] & FLAG_VNI == 0 {
            return Err(WireError::Malformed);
        }
        Ok(Repr {
            vni: u32::from_be_bytes([0, b[4], b[5], b[6]]),
        })
    }

    /// Write the header into the first 8 bytes of `b`.
    pub fn emit(&self, b: &mut [u8]) {
        b[..HEADER_LEN].copy_from_slice(&[0; HEADER_LEN]);
        b[0] = FLAG_VNI;
        b[4..7].copy_from_slice(&self.vni.to_be_bytes()[1..]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    static HDR: [u8; 8] = [0x08, 0, 0, 0, 0x00, 0x00, 0x2a, 0];

    #[test]
    fn test_deconstruct() {
        assert_eq!(Repr::parse(&HDR).unwrap().vni, 42);
        assert_eq!(Repr::parse(&HDR[..7]), Err(WireError::Truncated));
        let mut no_i = HDR;
        no_i[0] = 0;
        assert_eq!(Repr::parse(&no_i), Err(WireError::Malformed));
    }

    #[test]
    fn test_construct() {
        let mut b = [0xffu8; 8];
        Repr { vni: 42 }.emit(&mut b);
        assert_eq!(b, HDR);
        Repr { vni: MAX_VNI }.emit(&mut b);
        assert_eq!(Repr::parse(&b).unwrap().vni, MAX_VNI);
    }
}
