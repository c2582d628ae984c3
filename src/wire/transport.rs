//! The part of a TCP, UDP or ICMP echo header that connection tracking keys on and NAT
//! rewrites: the ports (an echo's identifier stands in for the source port; it has no
//! destination port) and the checksum that covers them.
//!
//! Contract: `Ports::new_checked` accepts a TCP header of 20 bytes or more, a UDP header of 8,
//! an ICMP echo request or reply of 8, and refuses anything else (other protocols, ICMP types,
//! short headers). Setters keep the transport checksum right incrementally (RFC 1624): a port
//! or identifier it covers, and (TCP, UDP) an address of the IPv4 pseudo-header, which the IP
//! header's own setters change. A UDP checksum of 0 means "none" and stays 0; a computed 0 is
//! sent as 0xffff (RFC 768). `put_ports` writes ports and leaves the checksum alone, for the
//! truncated copy of a header an ICMP error quotes.

use super::checksum::{apply_folded, delta16, update16, update32};
use super::{IpProtocol, Result, WireError, be16, icmp};

/// What changing a `proto` packet's ports from `old` to `new` (an echo: its identifier, the
/// first of each pair; it has no destination port) does: whether they must be written, and the
/// change to its checksum, counting `addr_delta`, what its addresses' change made to the
/// pseudo-header's sum (`ipv4::addrs_change`; ignored for ICMP, which has none). A port going
/// 0xffff -> 0 adds nothing to the sum but is still written.
#[inline(always)]
pub fn ports_change(
    proto: IpProtocol,
    old: (u16, u16),
    new: (u16, u16),
    addr_delta: u64,
) -> (bool, u64) {
    let icmp = proto == IpProtocol::ICMP;
    let mut delta = if icmp { 0 } else { addr_delta };
    let src_changed = old.0 != new.0;
    let dst_changed = old.1 != new.1 && !icmp;
    if src_changed {
        delta += delta16(old.0, new.0);
    }
    if dst_changed {
        delta += delta16(old.1, new.1);
    }
    (src_changed || dst_changed, delta)
}

/// A view over the ports and checksum of a transport header.
#[derive(Debug, Clone)]
pub struct Ports<T: AsRef<[u8]>> {
    buffer: T,
    proto: IpProtocol,
}

impl<T: AsRef<[u8]>> Ports<T> {
    /// Wrap the transport header (and what follows) of a `proto` packet, unchecked.
    #[inline(always)]
    pub fn new_unchecked(proto: IpProtocol, buffer: T) -> Ports<T> {
        Ports { buffer, proto }
    }

    /// Wrap, checking the protocol, the length and (ICMP) that it is an echo.
    #[inline(always)]
    pub fn new_checked(proto: IpProtocol, buffer: T) -> Result<Ports<T>> {
        let b = buffer.as_ref();
        let ok = match proto {
            IpProtocol::TCP => b.len() >= 20,
            IpProtocol::UDP => b.len() >= 8,
            IpProtocol::ICMP => {
                b.len() >= icmp::HEADER_LEN && matches!(b[0], icmp::ECHO_REQUEST | icmp::ECHO_REPLY)
            }
            _ => return Err(WireError::Malformed),
        };
        if !ok {
            return Err(WireError::Truncated);
        }
        Ok(Ports { buffer, proto })
    }

    /// The protocol.
    #[inline(always)]
    pub fn protocol(&self) -> IpProtocol {
        self.proto
    }

    /// The source port (an echo's identifier).
    #[inline(always)]
    pub fn src_port(&self) -> u16 {
        let at = if self.proto == IpProtocol::ICMP { 4 } else { 0 };
        be16(self.buffer.as_ref(), at)
    }

    /// The destination port (0 for an echo).
    #[inline(always)]
    pub fn dst_port(&self) -> u16 {
        match self.proto {
            IpProtocol::ICMP => 0,
            _ => be16(self.buffer.as_ref(), 2),
        }
    }

    /// TCP's flag bits (0 for the others).
    #[inline(always)]
    pub fn tcp_flags(&self) -> u8 {
        match self.proto {
            IpProtocol::TCP => self.buffer.as_ref()[13],
            _ => 0,
        }
    }

    /// Where the checksum sits, if there is one to keep (UDP's may be 0: none).
    #[inline(always)]
    fn checksum_at(&self) -> Option<usize> {
        match self.proto {
            IpProtocol::TCP => Some(16),
            IpProtocol::UDP if be16(self.buffer.as_ref(), 6) != 0 => Some(6),
            IpProtocol::ICMP => Some(2),
            _ => None,
        }
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ports<T> {
    /// Apply `f` to the checksum, if there is one (a computed 0 sent as 0xffff for UDP).
    #[inline(always)]
    fn update(&mut self, f: impl FnOnce(u16) -> u16) {
        let Some(at) = self.checksum_at() else { return };
        let mut c = f(be16(self.buffer.as_ref(), at));
        if c == 0 && self.proto == IpProtocol::UDP {
            c = 0xffff;
        }
        self.buffer.as_mut()[at..at + 2].copy_from_slice(&c.to_be_bytes());
    }

    /// Set the source port (an echo's identifier); the checksum follows.
    #[inline(always)]
    pub fn set_src_port(&mut self, port: u16) {
        let old = self.src_port();
        let at = if self.proto == IpProtocol::ICMP { 4 } else { 0 };
        self.buffer.as_mut()[at..at + 2].copy_from_slice(&port.to_be_bytes());
        self.update(|c| update16(c, old, port));
    }

    /// Set the destination port (nothing for an echo); the checksum follows.
    #[inline(always)]
    pub fn set_dst_port(&mut self, port: u16) {
        if self.proto == IpProtocol::ICMP {
            return;
        }
        let old = self.dst_port();
        self.buffer.as_mut()[2..4].copy_from_slice(&port.to_be_bytes());
        self.update(|c| update16(c, old, port));
    }

    /// Add `delta` (see [`ports_change`], folded to 16 bits: `checksum::fold`) to the
    /// checksum, if there is one (UDP's may be 0: none); a delta of 0 leaves it as it is.
    #[inline(always)]
    pub fn add_to_checksum(&mut self, delta: u16) {
        if delta != 0 {
            self.update(|c| apply_folded(c, delta));
        }
    }

    /// An address of the pseudo-header changed from `old` to `new` (TCP, UDP; ICMP has no
    /// pseudo-header): the checksum follows.
    #[inline(always)]
    pub fn address_changed(&mut self, old: [u8; 4], new: [u8; 4]) {
        if self.proto != IpProtocol::ICMP {
            self.update(|c| update32(c, old, new));
        }
    }

    /// Write the ports (an echo's identifier: `src`) and leave the checksum as it is (a
    /// quoted, truncated header's cannot be kept anyway).
    #[inline(always)]
    pub fn put_ports(&mut self, src: u16, dst: u16) {
        let b = self.buffer.as_mut();
        if self.proto == IpProtocol::ICMP {
            b[4..6].copy_from_slice(&src.to_be_bytes());
        } else {
            super::put_ports(b, src, dst);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::checksum::{checksum, fold, pseudo_v4, sum};

    /// The transport checksum of `l4` from `src` to `dst` is right (0 for UDP "none").
    fn valid(proto: IpProtocol, src: [u8; 4], dst: [u8; 4], l4: &[u8]) -> bool {
        match proto {
            IpProtocol::ICMP => checksum(l4) == 0,
            _ => {
                let acc = pseudo_v4(&src, &dst, proto.0, l4.len() as u16);
                fold(sum(acc, l4)) == 0xffff || fold(sum(acc, l4)) == 0
            }
        }
    }

    fn packet(proto: IpProtocol, src: [u8; 4], dst: [u8; 4]) -> Vec<u8> {
        let b = etherparse::PacketBuilder::ipv4(src, dst, 64);
        let payload = b"hello, ports";
        let mut out = Vec::new();
        match proto {
            IpProtocol::TCP => b.tcp(40000, 443, 7, 1000).write(&mut out, payload),
            IpProtocol::UDP => b.udp(5353, 53).write(&mut out, payload),
            _ => b.icmpv4_echo_request(0x4242, 3).write(&mut out, payload),
        }
        .unwrap();
        out.split_off(20)
    }

    #[test]
    fn reads_what_etherparse_wrote_and_refuses_the_rest() {
        let (s, d) = ([10, 0, 0, 1], [10, 0, 0, 2]);
        let t = packet(IpProtocol::TCP, s, d);
        let p = Ports::new_checked(IpProtocol::TCP, &t[..]).unwrap();
        assert_eq!((p.src_port(), p.dst_port(), p.tcp_flags()), (40000, 443, 0));
        let i = packet(IpProtocol::ICMP, s, d);
        let p = Ports::new_checked(IpProtocol::ICMP, &i[..]).unwrap();
        assert_eq!((p.src_port(), p.dst_port()), (0x4242, 0));
        assert_eq!(
            Ports::new_checked(IpProtocol::TCP, &t[..19]).unwrap_err(),
            WireError::Truncated
        );
        let mut unreachable = i.clone();
        unreachable[0] = icmp::DEST_UNREACH;
        assert!(Ports::new_checked(IpProtocol::ICMP, &unreachable[..]).is_err());
        assert_eq!(
            Ports::new_checked(IpProtocol(47), &t[..]).unwrap_err(),
            WireError::Malformed
        );
    }

    #[test]
    fn rewrites_keep_the_checksum_right() {
        let (s, d, nat) = ([10, 0, 0, 1], [10, 0, 0, 2], [192, 0, 2, 77]);
        for proto in [IpProtocol::TCP, IpProtocol::UDP, IpProtocol::ICMP] {
            for (sport, dport) in [(1, 2), (0xffff, 0), (40000, 443), (0x8000, 0x7fff)] {
                let mut l4 = packet(proto, s, d);
                let mut p = Ports::new_checked(proto, &mut l4[..]).unwrap();
                p.address_changed(s, nat);
                p.set_src_port(sport);
                p.set_dst_port(dport);
                let want_dport = if proto == IpProtocol::ICMP { 0 } else { dport };
                assert_eq!((p.src_port(), p.dst_port()), (sport, want_dport));
                assert!(valid(proto, nat, d, &l4), "{proto:?} {sport} {dport}");
            }
        }
        // The same through one summed update (NAT's path), from ports that make 0xffff -> 0
        // changes (which add nothing to the sum but must still be written).
        for proto in [IpProtocol::TCP, IpProtocol::UDP, IpProtocol::ICMP] {
            for (sport, dport) in [(1, 2), (0, 0xffff), (40000, 443), (0x8000, 0x7fff)] {
                let mut l4 = packet(proto, s, d);
                let mut p = Ports::new_checked(proto, &mut l4[..]).unwrap();
                p.put_ports(0xffff, 0);
                // Checksum the start state right first.
                let mut full = l4.clone();
                let off = if proto == IpProtocol::TCP {
                    16
                } else if proto == IpProtocol::UDP {
                    6
                } else {
                    2
                };
                full[off..off + 2].copy_from_slice(&[0, 0]);
                let c = match proto {
                    IpProtocol::ICMP => checksum(&full),
                    _ => !fold(sum(pseudo_v4(&s, &d, proto.0, full.len() as u16), &full)),
                };
                l4[off..off + 2].copy_from_slice(&c.to_be_bytes());
                assert!(valid(proto, s, d, &l4));
                let (_, addr_delta) = crate::wire::ipv4::addrs_change((s, d), (nat, d));
                let mut p = Ports::new_checked(proto, &mut l4[..]).unwrap();
                let old = (p.src_port(), p.dst_port());
                let (write, delta) = ports_change(proto, old, (sport, dport), addr_delta);
                if write {
                    p.put_ports(sport, dport);
                }
                p.add_to_checksum(crate::wire::checksum::fold(delta));
                let p = Ports::new_checked(proto, &l4[..]).unwrap();
                let want_dport = if proto == IpProtocol::ICMP { 0 } else { dport };
                assert_eq!((p.src_port(), p.dst_port()), (sport, want_dport));
                assert!(
                    valid(proto, nat, d, &l4),
                    "summed {proto:?} {sport} {dport}"
                );
            }
        }
        // UDP without a checksum keeps none.
        let mut l4 = packet(IpProtocol::UDP, s, d);
        l4[6..8].copy_from_slice(&[0, 0]);
        let mut p = Ports::new_checked(IpProtocol::UDP, &mut l4[..]).unwrap();
        p.address_changed(s, nat);
        p.set_src_port(9);
        assert_eq!(&l4[6..8], &[0, 0]);
        // A quoted header's ports are written, its checksum left.
        let mut l4 = packet(IpProtocol::TCP, s, d);
        let before = l4[16..18].to_vec();
        Ports::new_unchecked(IpProtocol::TCP, &mut l4[..]).put_ports(1, 2);
        assert_eq!((&l4[0..4], &l4[16..18]), (&[0, 1, 0, 2][..], &before[..]));
    }
}
