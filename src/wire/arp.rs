//! ARP for IPv4 over Ethernet (RFC 826): view and Repr.

use super::{MacAddr, Result, WireError};

mod field {
    use std::ops::Range;
    pub const HTYPE: Range<usize> = 0..2;
    pub const PTYPE: Range<usize> = 2..4;
    pub const HLEN: usize = 4;
    pub const PLEN: usize = 5;
    pub const OPER: Range<usize> = 6..8;
    pub const SHA: Range<usize> = 8..14;
    pub const SPA: Range<usize> = 14..18;
    pub const THA: Range<usize> = 18..24;
    pub const TPA: Range<usize> = 24..28;
}

/// Length of an Ethernet/IPv4 ARP packet.
pub const PACKET_LEN: usize = 28;

/// ARP operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// who-has
    Request,
    /// is-at
    Reply,
}

/// An Ethernet/IPv4 ARP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    /// Request or reply.
    pub op: Operation,
    /// Sender hardware address.
    pub sender_mac: MacAddr,
    /// Sender protocol address.
    pub sender_ip: [u8; 4],
    /// Target hardware address.
    pub target_mac: MacAddr,
    /// Target protocol address.
    pub target_ip: [u8; 4],
}

impl Repr {
    /// Parse an ARP packet (the Ethernet payload). Only Ethernet/IPv4 requests and replies.
    pub fn parse(b: &[u8]) -> Result<Repr> {
        if b.len() < PACKET_LEN {
            return Err(WireError::Truncated);
        }
        if b[field::HTYPE] != [0, 1]
            || b[field::PTYPE] != [8, 0]
            || b[field::HLEN] != 6
            || b[field::PLEN] != 4
        {
            return Err(WireError::Malformed);
        }
        let op = match u16::from_be_bytes([b[6], b[7]]) {
            1 => Operation::Request,
            2 => Operation::Reply,
            _ => return Err(WireError::Malformed),
        };
        let ip = |r: std::ops::Range<usize>| -> [u8; 4] {
            [b[r.start], b[r.start + 1], b[r.start + 2], b[r.start + 3]]
        };
        Ok(Repr {
            op,
            sender_mac: MacAddr::from_bytes(&b[field::SHA]),
            sender_ip: ip(field::SPA),
            target_mac: MacAddr::from_bytes(&b[field::THA]),
            target_ip: ip(field::TPA),
        })
    }

    /// Write into `b` (at least `PACKET_LEN` bytes).
    pub fn emit(&self, b: &mut [u8]) {
        b[field::HTYPE].copy_from_slice(&[0, 1]);
        b[field::PTYPE].copy_from_slice(&[8, 0]);
        b[field::HLEN] = 6;
        b[field::PLEN] = 4;
        let op: u16 = match self.op {
            Operation::Request => 1,
            Operation::Reply => 2,
        };
        b[field::OPER].copy_from_slice(&op.to_be_bytes());
        b[field::SHA].copy_from_slice(&self.sender_mac.0);
        b[field::SPA].copy_from_slice(&self.sender_ip);
        b[field::THA].copy_from_slice(&self.target_mac.0);
        b[field::TPA].copy_from_slice(&self.target_ip);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    static REQUEST: [u8; 28] = [
        0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 192, 0,
        2, 1, 0, 0, 0, 0, 0, 0, 192, 0, 2, 254,
    ];

    #[test]
    fn test_deconstruct() {
        let r = Repr::parse(&REQUEST).unwrap();
        assert_eq!(r.op, Operation::Request);
        assert_eq!(r.sender_ip, [192, 0, 2, 1]);
        assert_eq!(r.target_ip, [192, 0, 2, 254]);
        assert_eq!(r.sender_mac, MacAddr([2, 0, 0, 0, 0, 1]));
        let e = etherparse::ArpPacketSlice::from_slice(&REQUEST).unwrap();
        assert_eq!(e.target_protocol_addr(), &[192, 0, 2, 254]);
    }

    #[test]
    fn test_construct() {
        let mut b = [0u8; 28];
        Repr::parse(&REQUEST).unwrap().emit(&mut b);
        assert_eq!(b, REQUEST);
    }

    #[test]
    fn rejects_bad() {
        assert_eq!(Repr::parse(&REQUEST[..27]), Err(WireError::Truncated));
        let mut b = REQUEST;
        b[7] = 9;
        assert_eq!(Repr::parse(&b), Err(WireError::Malformed));
        let mut b = REQUEST;
        b[4] = 8;
        assert_eq!(Repr::parse(&b), Err(WireError::Malformed));
    }
}
