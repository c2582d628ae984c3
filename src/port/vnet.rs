//! The `virtio_net_hdr` that TAP devices with `IFF_VNET_HDR` put in front of every frame, and
//! its mapping to and from a descriptor's [`Offload`] state. No IO: `port::tap` reads and
//! writes it.

use crate::packet::{GsoType, Offload};

/// `struct virtio_net_hdr` (10 bytes, native byte order: the tun default without
/// `TUNSETVNETLE`/`BE`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[allow(non_camel_case_types)]
pub struct virtio_net_hdr {
    /// `VIRTIO_NET_HDR_F_NEEDS_CSUM` (1), `_DATA_VALID` (2).
    pub flags: u8,
    /// `VIRTIO_NET_HDR_GSO_NONE` (0), `_TCPV4` (1), `_UDP` (3), `_TCPV6` (4), `_UDP_L4` (5),
    /// `| _ECN` (0x80).
    pub gso_type: u8,
    /// Bytes of headers (Ethernet to the end of TCP) in front of the payload.
    pub hdr_len: u16,
    /// Payload bytes per segment.
    pub gso_size: u16,
    /// Where checksumming starts (the L4 header), from the frame start.
    pub csum_start: u16,
    /// Where the checksum goes, from `csum_start`.
    pub csum_offset: u16,
}

/// Size of [`virtio_net_hdr`] on the wire.
pub const VNET_HDR_LEN: usize = 10;
pub(super) const NEEDS_CSUM: u8 = 1;
const GSO_TCPV4: u8 = 1;
const GSO_TCPV6: u8 = 4;
const GSO_UDP_L4: u8 = 5;
const GSO_ECN: u8 = 0x80;

/// The smallest segment size a received super-frame may ask for when it has more than one
/// segment to give: 512, the TCP payload of Linux's smallest path MTU (`min_pmtu`, 552).
/// Below it a sender is not describing a path but asking the switch to multiply its frames
/// (a container's 20 KB super-frame with `gso_size` 1 became 20,000 one-byte segments and
/// slowed every tenant a hundredfold: found trying uvs as a hostile tenant), so it is refused
/// (`rx_bad_vnet`), as are the other headers uvs cannot honour.
pub const MIN_GSO_SIZE: u16 = 512;

/// True unless `h` asks for segments under [`MIN_GSO_SIZE`] and frame `data` holds more than
/// one of them (its L4 bytes from `csum_start`, the TCP header's 60 bytes at most aside).
fn segments_sane(h: &virtio_net_hdr, data: &[u8]) -> bool {
    h.gso_size >= MIN_GSO_SIZE || data.len() <= h.csum_start as usize + 60 + h.gso_size as usize
}

impl virtio_net_hdr {
    /// The segment size of a UDP-tunnel TCP super-frame `data` this header describes (the
    /// kernel describes one by its inner TCP alone: a TCP GSO type and `csum_start` at the TCP
    /// header behind the VXLAN header); None for any other frame.
    pub(super) fn tunnel_mss(&self, data: &[u8]) -> Option<u16> {
        let tcp = matches!(self.gso_type & !GSO_ECN, GSO_TCPV4 | GSO_TCPV6);
        if !tcp || self.gso_size == 0 || self.flags & NEEDS_CSUM == 0 || !segments_sane(self, data)
        {
            return None;
        }
        // Behind Ethernet, IPv4, UDP, VXLAN and an inner Ethernet and IPv4 header, a tunnel's
        // inner TCP starts at 84 at the least; a container's own TCP super-frame (the common
        // GSO frame) ends the test here, without a parse.
        const MIN_INNER_L4: u16 = 14 + 20 + 8 + 8 + 14 + 20;
        if self.csum_start < MIN_INNER_L4 {
            return None;
        }
        let at = (self.csum_start as usize, self.csum_offset as usize);
        (crate::pipeline::tunnel_l4_offsets(data) == Some(at)).then_some(self.gso_size)
    }

    /// Decode the wire bytes.
    pub fn from_bytes(b: &[u8; VNET_HDR_LEN]) -> virtio_net_hdr {
        let u = |i: usize| u16::from_ne_bytes([b[i], b[i + 1]]);
        virtio_net_hdr {
            flags: b[0],
            gso_type: b[1],
            hdr_len: u(2),
            gso_size: u(4),
            csum_start: u(6),
            csum_offset: u(8),
        }
    }

    /// Encode to wire bytes.
    pub fn to_bytes(self) -> [u8; VNET_HDR_LEN] {
        let mut b = [0; VNET_HDR_LEN];
        b[0] = self.flags;
        b[1] = self.gso_type;
        for (i, v) in [
            self.hdr_len,
            self.gso_size,
            self.csum_start,
            self.csum_offset,
        ]
        .into_iter()
        .enumerate()
        {
            b[2 + 2 * i..4 + 2 * i].copy_from_slice(&v.to_ne_bytes());
        }
        b
    }

    /// The header that describes frame `data` with offload state `ol` (which output made
    /// consistent: the L4 header parses).
    pub fn for_frame(data: &[u8], ol: Offload) -> virtio_net_hdr {
        let mut h = virtio_net_hdr::default();
        if !ol.is_partial() {
            return h;
        }
        let Some(at) = crate::pipeline::l4_offsets(data) else {
            return h;
        };
        h.flags = NEEDS_CSUM;
        h.csum_start = at.0 as u16;
        h.csum_offset = at.1 as u16;
        if let Some(t) = ol.gso_type() {
            h.gso_type = match t {
                GsoType::Tcp4 => GSO_TCPV4,
                GsoType::Tcp6 => GSO_TCPV6,
                GsoType::Udp4 => GSO_UDP_L4,
            };
            h.gso_size = ol.gso_size();
            let thl = match t {
                GsoType::Udp4 => 8,
                _ => data.get(at.0 + 12).map_or(20, |b| (b >> 4) as usize * 4),
            };
            h.hdr_len = (at.0 + thl) as u16;
        }
        h
    }
}

/// What a received `virtio_net_hdr` means for frame `data`: its offload state, or None when it
/// cannot be honoured (the frame is dropped). A partial checksum the pipeline could not find
/// again (`csum_start` is not where parsing puts the L4 header) is completed here.
pub(super) fn offload_of(h: &virtio_net_hdr, data: &mut [u8]) -> Option<Offload> {
    let gso = match h.gso_type & !GSO_ECN {
        0 => None,
        GSO_TCPV4 => Some(GsoType::Tcp4),
        GSO_TCPV6 => Some(GsoType::Tcp6),
        // UDP segmentation (a tunnel underlay's, or an application's UDP_SEGMENT): IPv4 only,
        // cut into datagrams by the port at once.
        GSO_UDP_L4 if crate::pipeline::is_udp4(data) => Some(GsoType::Udp4),
        _ => return None,
    };
    if gso.is_some() && !segments_sane(h, data) {
        return None;
    }
    if h.flags & NEEDS_CSUM == 0 {
        return if gso.is_some() {
            None
        } else {
            Some(Offload::NONE)
        };
    }
    let (start, off) = (h.csum_start as usize, h.csum_offset as usize);
    if crate::pipeline::l4_offsets(data) == Some((start, off)) {
        return Some(match gso {
            Some(t) if h.gso_size > 0 => Offload::gso(t, h.gso_size),
            Some(_) => return None,
            None => Offload::partial(),
        });
    }
    if gso.is_some() || start + off + 2 > data.len() {
        return None;
    }
    // Finish it the way a device would: sum from csum_start (the field holds the
    // pseudo-header sum), store the complement.
    let c = crate::wire::checksum::checksum(&data[start..]);
    data[start + off..start + off + 2].copy_from_slice(&c.to_be_bytes());
    Some(Offload::NONE)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ethernet + IPv4 + TCP (20-byte header) with `payload` bytes, checksum field `csum`.
    fn tcp4(payload: usize, csum: u16) -> Vec<u8> {
        let mut f = vec![0u8; 54 + payload];
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        f[14] = 0x45;
        f[16..18].copy_from_slice(&((40 + payload) as u16).to_be_bytes());
        f[23] = 6;
        f[26..30].copy_from_slice(&[10, 0, 0, 1]);
        f[30..34].copy_from_slice(&[10, 0, 0, 2]);
        f[46] = 0x50;
        f[50..52].copy_from_slice(&csum.to_be_bytes());
        f
    }

    #[test]
    fn vnet_header_round_trip() {
        let f = tcp4(3000, 0);
        let h = virtio_net_hdr::for_frame(&f, Offload::gso(GsoType::Tcp4, 1448));
        assert_eq!(
            h,
            virtio_net_hdr {
                flags: NEEDS_CSUM,
                gso_type: GSO_TCPV4,
                hdr_len: 54,
                gso_size: 1448,
                csum_start: 34,
                csum_offset: 16,
            }
        );
        assert_eq!(virtio_net_hdr::from_bytes(&h.to_bytes()), h);
        let mut g = f.clone();
        assert_eq!(
            offload_of(&h, &mut g),
            Some(Offload::gso(GsoType::Tcp4, 1448))
        );
        assert_eq!(g, f, "nothing rewritten");
        // Nothing offloaded: an all-zero header.
        assert_eq!(
            virtio_net_hdr::for_frame(&f, Offload::NONE),
            virtio_net_hdr::default()
        );
        assert_eq!(
            offload_of(&virtio_net_hdr::default(), &mut g),
            Some(Offload::NONE)
        );
    }

    #[test]
    fn udp_gso_header_round_trip() {
        // Ethernet + IPv4 + UDP with 3000 payload bytes, to be cut into 1000-byte datagrams.
        let mut f = vec![0u8; 42 + 3000];
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        f[14] = 0x45;
        f[16..18].copy_from_slice(&(28u16 + 3000).to_be_bytes());
        f[23] = 17;
        f[38..40].copy_from_slice(&(8u16 + 3000).to_be_bytes());
        let ol = Offload::gso(GsoType::Udp4, 1000);
        let h = virtio_net_hdr::for_frame(&f, ol);
        assert_eq!(
            h,
            virtio_net_hdr {
                flags: NEEDS_CSUM,
                gso_type: GSO_UDP_L4,
                hdr_len: 42,
                gso_size: 1000,
                csum_start: 34,
                csum_offset: 6,
            }
        );
        assert_eq!(offload_of(&h, &mut f), Some(ol));
        // With an 802.1Q tag (an AF_PACKET port puts the tag the kernel stripped back first).
        let mut t = f[..12].to_vec();
        t.extend_from_slice(&[0x81, 0x00, 0x00, 0x05]);
        t.extend_from_slice(&f[12..]);
        let ht = virtio_net_hdr::for_frame(&t, ol);
        assert_eq!((ht.csum_start, ht.hdr_len), (38, 46));
        assert_eq!(offload_of(&ht, &mut t), Some(ol));
        // UDP GSO over IPv6 is not taken.
        let mut g = f.clone();
        g[12..14].copy_from_slice(&[0x86, 0xdd]);
        assert_eq!(offload_of(&h, &mut g), None);
    }

    /// A super-frame asking for segments under 512 bytes is refused when it holds more than
    /// one (a container's 20 KB super-frame with gso_size 1 became 20,000 segments: found
    /// trying uvs as a hostile tenant); 512 (Linux's smallest path MTU) and a small frame that
    /// needs no cutting are taken.
    #[test]
    fn tiny_segment_sizes_are_refused() {
        let f = tcp4(20_000, 0);
        for (gso_size, taken) in [
            (1, false),
            (88, false),
            (511, false),
            (512, true),
            (1448, true),
        ] {
            let h = virtio_net_hdr::for_frame(&f, Offload::gso(GsoType::Tcp4, gso_size));
            let mut g = f.clone();
            assert_eq!(
                offload_of(&h, &mut g).is_some(),
                taken,
                "gso_size {gso_size}"
            );
        }
        // One segment's worth: nothing to multiply.
        let small = tcp4(100, 0);
        let h = virtio_net_hdr::for_frame(&small, Offload::gso(GsoType::Tcp4, 100));
        assert!(offload_of(&h, &mut small.clone()).is_some());
    }

    #[test]
    fn vnet_headers_we_cannot_honour() {
        let mut f = tcp4(100, 0);
        // UDP segmentation whose offsets are not where parsing finds UDP; a super-frame must
        // say NEEDS_CSUM.
        let uso = virtio_net_hdr {
            gso_type: 5,
            flags: NEEDS_CSUM,
            gso_size: 1000,
            csum_start: 34,
            csum_offset: 6,
            ..Default::default()
        };
        assert_eq!(offload_of(&uso, &mut f), None);
        let nocsum = virtio_net_hdr {
            gso_type: GSO_TCPV4,
            gso_size: 1000,
            ..Default::default()
        };
        assert_eq!(offload_of(&nocsum, &mut f), None);
        // A partial checksum somewhere parsing does not find it is finished here, as a device
        // would: sum from csum_start, store the complement.
        let mut f = tcp4(100, 0);
        f[40] = 0x12; // some byte inside the TCP header
        let odd = virtio_net_hdr {
            flags: NEEDS_CSUM,
            csum_start: 38,
            csum_offset: 12,
            ..Default::default()
        };
        assert_eq!(offload_of(&odd, &mut f), Some(Offload::NONE));
        assert_eq!(
            crate::wire::checksum::fold(crate::wire::checksum::sum(0, &f[38..])),
            0xffff
        );
    }
}
