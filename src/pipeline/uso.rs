//! UDP GSO toward a VXLAN underlay: the encapsulated segments of one TCP super-frame, queued
//! back to back toward a port that takes IPv4 UDP GSO frames (`PortState::uso_out`: AF_PACKET),
//! are laid end to end as the payload of one outer UDP datagram with `gso(Udp4, size)`, so the
//! port sends one message and the kernel (or a NIC with USO) cuts it into the same datagrams
//! again, each behind a copy of the outer headers. Linux's AF_PACKET takes no UDP-tunnel GSO
//! (see docs/design.md), but it takes `VIRTIO_NET_HDR_GSO_UDP_L4`, and every piece it makes is
//! an ordinary VXLAN packet because every piece was one before.
//!
//! Contract ([`coalesce`], run by `gro::run` on the queue of every `uso_out` port):
//! - Only adjacent datagrams merge; a run of one is left as it was; the queue keeps its order.
//! - Mergeable: Ethernet (one optional VLAN tag) + IPv4 without options, not a fragment, UDP to
//!   one of `ports` (the tunnels' destination ports), at least one payload byte, no offload
//!   state, and a UDP checksum that is zero (as uvs's encapsulation writes) or verifies.
//! - The next datagram of a run: the same Ethernet header, IPv4 version/IHL/TOS, flags, TTL,
//!   protocol and addresses, the same UDP ports, at most as many payload bytes as the run's
//!   first (the segment size); a shorter one ends the run after it. At most [`MAX_SEGS`]
//!   datagrams and an IPv4 total length of at most 65535.
//! - A merged run becomes one frame in a large buffer with the first datagram's headers: IPv4
//!   total length and header checksum rewritten, UDP length of the whole, the UDP checksum field
//!   holding the pseudo-header sum (partial), offload `gso(Udp4, first payload size)`. The
//!   datagrams' frames are freed. Without a free large buffer the run stays unmerged.

use super::gso;
use crate::packet::{Desc, Frames, GsoType, MAX_BIG_LEN, Offload};
use crate::udp_port_set::UdpPortSet;
use crate::wire::checksum::{fold, pseudo_v4, sum};
use crate::wire::{ipv4, udp};

/// Most datagrams in one UDP GSO frame (the kernel's `UDP_MAX_SEGMENTS`).
pub(crate) const MAX_SEGS: usize = 64;

/// Layout of a mergeable datagram.
#[derive(Clone, Copy)]
struct Dgram {
    l3: usize,
    l4: usize,
    /// UDP payload bytes.
    plen: usize,
    /// It carries a UDP checksum, which must verify before it is merged.
    csum: bool,
}

fn mergeable(data: &[u8], d: Desc, ports: &UdpPortSet) -> Option<Dgram> {
    if !d.ol.is_none() {
        return None;
    }
    let at = gso::locate(data)?;
    if at.v6 || at.proto != 17 || at.l4 - at.l3 != 20 {
        return None;
    }
    let u = &data[at.l4..];
    let dport = u16::from_be_bytes([u[2], u[3]]);
    let ulen = u16::from_be_bytes([u[4], u[5]]) as usize;
    let total = u16::from_be_bytes([data[at.l3 + 2], data[at.l3 + 3]]) as usize;
    if !ports.contains(dport) || ulen <= 8 || ulen != total - 20 {
        return None;
    }
    Some(Dgram {
        l3: at.l3,
        l4: at.l4,
        plen: ulen - 8,
        csum: u[6..8] != [0, 0],
    })
}

/// True if the datagram's UDP checksum verifies (or it has none). Checked only when it would
/// be merged, so a lone datagram costs no sum.
fn verified(data: &[u8], g: &Dgram) -> bool {
    if !g.csum {
        return true;
    }
    let ip = &data[g.l3..];
    let ulen = 8 + g.plen;
    let p = pseudo_v4(&ip[12..16], &ip[16..20], 17, ulen as u16);
    fold(sum(p, &data[g.l4..g.l4 + ulen])) == 0xffff
}

fn continues(hb: &[u8], h: &Dgram, nb: &[u8], n: &Dgram, len: usize) -> bool {
    let (h3, n3) = (h.l3, n.l3);
    h3 == n3
        && n.plen <= h.plen
        && 28 + len + n.plen <= 65535
        && h.l4 + 8 + len + n.plen <= MAX_BIG_LEN
        && hb[..h3 + 2] == nb[..n3 + 2]
        && hb[h3 + 6..h3 + 10] == nb[n3 + 6..n3 + 10]
        && hb[h3 + 12..h3 + 20] == nb[n3 + 12..n3 + 20]
        && hb[h.l4..h.l4 + 4] == nb[n.l4..n.l4 + 4]
}

/// USO's rules for [`super::coalesce`]: VXLAN datagrams to one of `ports`.
struct Vxlan<'a> {
    ports: &'a UdpPortSet,
}

impl super::coalesce::Merge for Vxlan<'_> {
    type Unit = Dgram;

    fn unit(&self, data: &[u8], d: Desc) -> Option<Dgram> {
        mergeable(data, d, self.ports)
    }

    fn payload(g: &Dgram) -> (usize, usize) {
        (g.l4 + 8, g.plen)
    }

    fn joins(
        &self,
        (hb, head): (&[u8], &Dgram),
        (nb, next): (&[u8], &Dgram),
        len: usize,
        count: usize,
    ) -> bool {
        count < MAX_SEGS
            && continues(hb, head, nb, next, len)
            && verified(nb, next)
            && (count > 1 || verified(hb, head))
    }

    fn ends(&self, head: &Dgram, g: &Dgram) -> bool {
        g.plen < head.plen
    }

    fn finish(&self, b: &mut [u8], h: &Dgram, _last: &Dgram, len: usize) -> Offload {
        let mut ip = ipv4::Packet::new_unchecked(&mut b[h.l3..h.l4]);
        ip.set_total_len((28 + len) as u16);
        udp::Datagram::new_unchecked(&mut b[h.l4..]).set_len((8 + len) as u16);
        let at = gso::locate(b).expect("a merged run parses as its head did");
        gso::refresh_partial(b, &at);
        Offload::gso(GsoType::Udp4, h.plen as u16)
    }
}

/// Merge runs of VXLAN datagrams (to one of `ports`) in `q` in place; returns the number of
/// datagrams that went into UDP GSO frames.
pub(crate) fn coalesce(frames: &mut Frames, q: &mut Vec<Desc>, ports: &UdpPortSet) -> u64 {
    super::coalesce::coalesce(&Vxlan { ports }, frames, q)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::gso::split_udp;
    use etherparse::PacketBuilder;

    /// An outer VXLAN-like datagram (UDP to 4789, checksum zero) with `payload`.
    fn dgram(id: u16, payload: &[u8], sport: u16) -> Vec<u8> {
        let b = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4([10, 252, 0, 1], [10, 252, 0, 2], 64)
            .udp(sport, 4789);
        let mut v = Vec::new();
        b.write(&mut v, payload).unwrap();
        v[18..20].copy_from_slice(&id.to_be_bytes());
        v[24..26].fill(0);
        let c = crate::wire::checksum::checksum(&v[14..34]);
        v[24..26].copy_from_slice(&c.to_be_bytes());
        v[40..42].fill(0); // UDP checksum zero, as encapsulation writes it
        v
    }

    fn put(frames: &mut Frames, bytes: &[u8]) -> Desc {
        let mut d = frames.alloc().unwrap();
        d.len = bytes.len() as u32;
        frames.data_mut(d).copy_from_slice(bytes);
        d
    }

    fn body(i: usize, n: usize) -> Vec<u8> {
        (0..n).map(|k| (k * 3 + i * 11) as u8).collect()
    }

    #[test]
    fn datagrams_merge_and_split_back() {
        let mut frames = Frames::new(256).unwrap();
        let sizes = [1000, 1000, 1000, 400];
        let segs: Vec<Vec<u8>> = sizes
            .iter()
            .enumerate()
            .map(|(i, n)| dgram(7 + i as u16, &body(i, *n), 50000))
            .collect();
        let mut q: Vec<Desc> = segs.iter().map(|s| put(&mut frames, s)).collect();
        assert_eq!(coalesce(&mut frames, &mut q, &UdpPortSet::new([4789])), 4);
        assert_eq!(q.len(), 1);
        assert_eq!(q[0].ol, Offload::gso(GsoType::Udp4, 1000));
        // etherparse reads one UDP datagram holding all the payloads, with the partial sum.
        let all: Vec<u8> = (0..4).flat_map(|i| body(i, sizes[i])).collect();
        let m = frames.data(q[0]).to_vec();
        let p = etherparse::SlicedPacket::from_ethernet(&m).unwrap();
        let Some(etherparse::TransportSlice::Udp(u)) = p.transport else {
            panic!("not udp")
        };
        assert_eq!(u.payload(), &all[..]);
        assert_eq!(u.length() as usize, 8 + all.len());
        let pseudo = fold(pseudo_v4(
            &[10, 252, 0, 1],
            &[10, 252, 0, 2],
            17,
            u.length(),
        ));
        assert_eq!(u.checksum(), pseudo);
        // Cut again: the same datagrams, each with a partial checksum for its own length.
        let mut out = Vec::new();
        assert_eq!(split_udp(&mut frames, q[0], &mut out), Ok(4));
        for (i, s) in out.iter().enumerate() {
            assert_eq!(s.ol, Offload::partial());
            let mut got = frames.data(*s).to_vec();
            let ulen = u16::from_be_bytes([got[38], got[39]]);
            let want_sum = fold(pseudo_v4(&[10, 252, 0, 1], &[10, 252, 0, 2], 17, ulen));
            assert_eq!(u16::from_be_bytes([got[40], got[41]]), want_sum);
            got[40..42].fill(0);
            assert_eq!(got, segs[i], "datagram {i}");
            frames.free(s.addr);
        }
        assert_eq!(frames.in_use(), 0);
    }

    #[test]
    fn other_datagrams_stay_whole() {
        let mut frames = Frames::new(64).unwrap();
        let a = dgram(1, &body(0, 1000), 50000);
        let longer = dgram(2, &body(1, 1200), 50000);
        let other_flow = dgram(3, &body(2, 1000), 50001);
        let mut not_vxlan = dgram(4, &body(3, 1000), 50000);
        not_vxlan[36..38].copy_from_slice(&53u16.to_be_bytes());
        let mut bad_sum = dgram(5, &body(4, 1000), 50000);
        bad_sum[40..42].copy_from_slice(&[0x12, 0x34]);
        for second in [longer, other_flow, not_vxlan, bad_sum] {
            let segs = [a.clone(), second];
            let mut q: Vec<Desc> = segs.iter().map(|s| put(&mut frames, s)).collect();
            assert_eq!(coalesce(&mut frames, &mut q, &UdpPortSet::new([4789])), 0);
            let got: Vec<Vec<u8>> = q.iter().map(|d| frames.data(*d).to_vec()).collect();
            assert_eq!(got, segs);
            for d in q {
                frames.free(d.addr);
            }
        }
        // A head whose checksum fails goes alone; the datagrams after it still merge.
        let mut bad_head = dgram(1, &body(0, 1000), 50000);
        bad_head[40..42].copy_from_slice(&[0x12, 0x34]);
        let segs = [
            bad_head.clone(),
            dgram(2, &body(1, 1000), 50000),
            dgram(3, &body(2, 1000), 50000),
        ];
        let mut q: Vec<Desc> = segs.iter().map(|s| put(&mut frames, s)).collect();
        assert_eq!(coalesce(&mut frames, &mut q, &UdpPortSet::new([4789])), 2);
        assert_eq!(frames.data(q[0]), &bad_head[..]);
        assert_eq!(q[1].ol, Offload::gso(GsoType::Udp4, 1000));
        for d in q {
            frames.free(d.addr);
        }
        // A short datagram ends a run: 1000, 500 | 1000.
        let segs = [
            dgram(1, &body(0, 1000), 50000),
            dgram(2, &body(1, 500), 50000),
            dgram(3, &body(2, 1000), 50000),
        ];
        let mut q: Vec<Desc> = segs.iter().map(|s| put(&mut frames, s)).collect();
        assert_eq!(coalesce(&mut frames, &mut q, &UdpPortSet::new([4789])), 2);
        assert_eq!(q.len(), 2);
        assert_eq!(frames.data(q[1]), &segs[2][..]);
    }
}
