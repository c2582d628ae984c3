//! Ethernet II header view and MAC addresses.

use super::{Result, WireError};

/// A 48-bit MAC address.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// ff:ff:ff:ff:ff:ff
    pub const BROADCAST: MacAddr = MacAddr([0xff; 6]);

    /// From the first 6 bytes of `b`. Panics if `b` is shorter.
    #[inline]
    pub fn from_bytes(b: &[u8]) -> MacAddr {
        let mut m = [0u8; 6];
        m.copy_from_slice(&b[..6]);
        MacAddr(m)
    }

    /// Group bit set: broadcast or multicast.
    #[inline]
    pub fn is_multicast(&self) -> bool {
        self.0[0] & 1 != 0
    }

    /// All zeros.
    #[inline]
    pub fn is_zero(&self) -> bool {
        self.0 == [0; 6]
    }

    /// The address as the low 48 bits of a u64.
    #[inline]
    pub fn to_u64(&self) -> u64 {
        // Two loads (4 + 2 bytes): built from eight single bytes, LLVM emits a ~20-instruction
        // vector shuffle (docs/design.md, "What the instruction-level view showed").
        let b = &self.0;
        u64::from(u32::from_be_bytes([b[0], b[1], b[2], b[3]])) << 16
            | u64::from(u16::from_be_bytes([b[4], b[5]]))
    }

    /// From the low 48 bits of a u64.
    #[inline]
    pub fn from_u64(v: u64) -> MacAddr {
        let b = v.to_be_bytes();
        MacAddr([b[2], b[3], b[4], b[5], b[6], b[7]])
    }
}

impl std::fmt::Display for MacAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl std::fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

impl std::str::FromStr for MacAddr {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let parts: Vec<&str> = s.split([':', '-']).collect();
        if parts.len() != 6 {
            return Err(format!(
                "'{s}' is not a MAC address (want xx:xx:xx:xx:xx:xx)"
            ));
        }
        let mut m = [0u8; 6];
        for (i, p) in parts.iter().enumerate() {
            m[i] = u8::from_str_radix(p, 16)
                .map_err(|_| format!("'{s}' is not a MAC address (bad byte '{p}')"))?;
        }
        Ok(MacAddr(m))
    }
}

/// EtherType values uvs knows.
pub struct EtherType;

impl EtherType {
    /// IPv4.
    pub const IPV4: u16 = 0x0800;
    /// ARP.
    pub const ARP: u16 = 0x0806;
    /// 802.1Q VLAN tag.
    pub const VLAN: u16 = 0x8100;
    /// 802.1ad service tag (QinQ).
    pub const QINQ: u16 = 0x88a8;
    /// IPv6.
    pub const IPV6: u16 = 0x86dd;
}

mod field {
    use std::ops::Range;
    pub const DST: Range<usize> = 0..6;
    pub const SRC: Range<usize> = 6..12;
    pub const ETHERTYPE: Range<usize> = 12..14;
}

/// Length of an Ethernet II header.
pub const HEADER_LEN: usize = 14;

/// A view of an Ethernet II frame.
#[derive(Debug)]
pub struct Frame<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Frame<T> {
    /// Wrap without checking the length.
    pub fn new_unchecked(buffer: T) -> Frame<T> {
        Frame { buffer }
    }

    /// Wrap and check the length.
    pub fn new_checked(buffer: T) -> Result<Frame<T>> {
        let f = Self::new_unchecked(buffer);
        f.check_len()?;
        Ok(f)
    }

    /// Ok if the buffer holds a whole header.
    pub fn check_len(&self) -> Result<()> {
        if self.buffer.as_ref().len() < HEADER_LEN {
            Err(WireError::Truncated)
        } else {
            Ok(())
        }
    }

    /// Destination address.
    #[inline]
    pub fn dst(&self) -> MacAddr {
        MacAddr::from_bytes(&self.buffer.as_ref()[field::DST])
    }

    /// Source address.
    #[inline]
    pub fn src(&self) -> MacAddr {
        MacAddr::from_bytes(&self.buffer.as_ref()[field::SRC])
    }

    /// Destination address as the low 48 bits of a u64 (as [`MacAddr::to_u64`]), read with one
    /// 8-byte load: the per-frame form the pipeline keys its tables with.
    #[inline(always)]
    pub fn dst_u64(&self) -> u64 {
        let b: [u8; 8] = self.buffer.as_ref()[..8].try_into().expect("8 bytes");
        u64::from_be_bytes(b) >> 16
    }

    /// Source address as the low 48 bits of a u64 (see [`Frame::dst_u64`]).
    #[inline(always)]
    pub fn src_u64(&self) -> u64 {
        let b: [u8; 8] = self.buffer.as_ref()[4..12].try_into().expect("8 bytes");
        u64::from_be_bytes(b) & 0xffff_ffff_ffff
    }

    /// EtherType (or TPID of a VLAN tag).
    #[inline]
    pub fn ethertype(&self) -> u16 {
        let b = &self.buffer.as_ref()[field::ETHERTYPE];
        u16::from_be_bytes([b[0], b[1]])
    }

    /// The bytes after the header.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Frame<T> {
    /// Set the destination address.
    pub fn set_dst(&mut self, m: MacAddr) {
        self.buffer.as_mut()[field::DST].copy_from_slice(&m.0);
    }

    /// Set the source address.
    pub fn set_src(&mut self, m: MacAddr) {
        self.buffer.as_mut()[field::SRC].copy_from_slice(&m.0);
    }

    /// Set both addresses (one bounds check for the two: the router's rewrite).
    #[inline]
    pub fn set_addrs(&mut self, dst: MacAddr, src: MacAddr) {
        let h = &mut self.buffer.as_mut()[..12];
        h[..6].copy_from_slice(&dst.0);
        h[6..].copy_from_slice(&src.0);
    }

    /// Set both addresses from their u64 forms (see [`Frame::dst_u64`]): two stores.
    #[inline(always)]
    pub fn set_addrs_u64(&mut self, dst: u64, src: u64) {
        let h: &mut [u8; 12] = (&mut self.buffer.as_mut()[..12])
            .try_into()
            .expect("12 bytes");
        *h = addr_bytes(dst, src);
    }

    /// Set the EtherType.
    pub fn set_ethertype(&mut self, t: u16) {
        self.buffer.as_mut()[field::ETHERTYPE].copy_from_slice(&t.to_be_bytes());
    }
}

/// An Ethernet II header, parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    /// Destination.
    pub dst: MacAddr,
    /// Source.
    pub src: MacAddr,
    /// EtherType.
    pub ethertype: u16,
}

impl Repr {
    /// Parse a checked frame.
    pub fn parse<T: AsRef<[u8]>>(f: &Frame<T>) -> Result<Repr> {
        f.check_len()?;
        Ok(Repr {
            dst: f.dst(),
            src: f.src(),
            ethertype: f.ethertype(),
        })
    }

    /// Header length.
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Write the header into `f`.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, f: &mut Frame<T>) {
        f.set_dst(self.dst);
        f.set_src(self.src);
        f.set_ethertype(self.ethertype);
    }
}

/// The first 12 bytes of a frame to `dst` from `src`, given as packed addresses
/// ([`MacAddr::to_u64`]: the address in the low 48 bits).
#[inline(always)]
pub fn addr_bytes(dst: u64, src: u64) -> [u8; 12] {
    let mut h = [0u8; 12];
    h[..8].copy_from_slice(&(dst << 16 | (src >> 32 & 0xffff)).to_be_bytes());
    h[8..].copy_from_slice(&(src as u32).to_be_bytes());
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    static FRAME: [u8; 18] = [
        0x02, 0x00, 0x00, 0x00, 0x00, 0x02, // dst
        0x02, 0x00, 0x00, 0x00, 0x00, 0x01, // src
        0x08, 0x00, // ipv4
        0xaa, 0xbb, 0xcc, 0xdd,
    ];

    #[test]
    fn test_deconstruct() {
        let f = Frame::new_checked(&FRAME[..]).unwrap();
        assert_eq!(f.dst(), "02:00:00:00:00:02".parse().unwrap());
        assert_eq!(f.src(), MacAddr([2, 0, 0, 0, 0, 1]));
        assert_eq!(f.ethertype(), EtherType::IPV4);
        assert_eq!(f.payload(), &[0xaa, 0xbb, 0xcc, 0xdd]);
    }

    #[test]
    fn test_construct() {
        let mut buf = [0u8; 18];
        buf[14..].copy_from_slice(&[0xaa, 0xbb, 0xcc, 0xdd]);
        let repr = Repr::parse(&Frame::new_checked(&FRAME[..]).unwrap()).unwrap();
        repr.emit(&mut Frame::new_unchecked(&mut buf[..]));
        assert_eq!(buf, FRAME);
    }

    #[test]
    fn u64_addresses_match_mac_addr() {
        let mut buf = [0u8; 14];
        buf[..6].copy_from_slice(&[0xff, 0x01, 0x5e, 0x80, 0x7f, 0xfe]);
        buf[6..12].copy_from_slice(&[0x01, 0xa2, 0x03, 0xc4, 0x05, 0xe6]);
        let f = Frame::new_checked(&buf[..]).unwrap();
        assert_eq!(f.dst_u64(), f.dst().to_u64());
        assert_eq!(f.src_u64(), f.src().to_u64());
        assert_eq!(f.dst_u64(), 0xff01_5e80_7ffe);
        assert_eq!(f.src_u64(), 0x01a2_03c4_05e6);
        let mut out = [0u8; 14];
        Frame::new_unchecked(&mut out[..]).set_addrs_u64(0xff01_5e80_7ffe, 0x01a2_03c4_05e6);
        assert_eq!(out[..12], buf[..12]);
    }

    #[test]
    fn truncated_is_error() {
        assert_eq!(
            Frame::new_checked(&FRAME[..13]).unwrap_err(),
            WireError::Truncated
        );
    }

    #[test]
    fn mac_parse_and_flags() {
        assert!("zz:00:00:00:00:00".parse::<MacAddr>().is_err());
        assert!(
            "01:00:5e:00:00:01"
                .parse::<MacAddr>()
                .unwrap()
                .is_multicast()
        );
        let m: MacAddr = "02:ab:cd:ef:01:23".parse().unwrap();
        assert_eq!(MacAddr::from_u64(m.to_u64()), m);
        assert_eq!(m.to_string(), "02:ab:cd:ef:01:23");
    }
}
