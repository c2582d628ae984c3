//! `ip4-reassembly`: fragmented IPv4 datagrams addressed to the switch itself (VXLAN from a
//! peer whose underlay path is smaller than its packets: Linux's vxlan with `df unset`, its
//! default, fragments the outer packet) are put back together before decapsulation, as the
//! kernel's own VTEP would.
//!
//! Contract:
//! - [`Reassembly::offer`] takes a fragment's frame (IPv4 at `l3`, 20-byte header): it is held
//!   until its datagram (source, destination, protocol, identification) is complete, then the
//!   datagram is one new frame of the pool (the L2 bytes and IP header of the first fragment,
//!   the payloads in order, total length, flags and header checksum rewritten) and every
//!   fragment's frame is freed.
//! - Bounded: at most [`MAX_DATAGRAMS`] datagrams wait, each with at most [`MAX_PIECES`]
//!   fragments, and a datagram whose whole would not fit a pool frame is refused. A datagram
//!   not complete within [`TIMEOUT_MS`] is dropped with its frames ([`Reassembly::expire`]);
//!   when the table is full the oldest datagram is dropped for the new one. Overlapping or
//!   duplicate fragments drop their datagram (RFC 5722's rule, which IPv4 stacks follow too).
//!   Frames are never leaked: whatever is not returned is held, or freed and counted.
//! - Time is given (milliseconds); no IO.

use crate::conntrack::DatagramId;
use crate::counters::DropReason;
use crate::packet::{Desc, Frames, MAX_FRAME_LEN};
use crate::wire::ipv4;

/// Datagrams waiting at once.
pub const MAX_DATAGRAMS: usize = 64;
/// Fragments one datagram may have.
pub const MAX_PIECES: usize = 8;
/// How long a datagram may take to complete.
pub const TIMEOUT_MS: u64 = 1000;

/// More fragments.
const MF: u16 = 0x2000;

/// What happened to an offered fragment.
#[derive(Debug, PartialEq, Eq)]
pub enum Offer {
    /// Held until its datagram is complete.
    Held,
    /// The datagram is complete: this frame holds it (same `l3`); the fragments are freed.
    Done(Desc),
    /// Refused (its frame freed, and its datagram's other fragments too).
    Dropped(DropReason),
}

/// Counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct ReassemblyStats {
    /// Datagrams put back together.
    pub reassembled: u64,
    /// Datagrams dropped: incomplete in time, or pushed out of a full table.
    pub timed_out: u64,
    /// Datagrams dropped: overlapping fragments, too many, or too large.
    pub refused: u64,
}

struct Pending {
    id: DatagramId,
    /// (offset in bytes, payload length, frame).
    pieces: Vec<(usize, usize, Desc)>,
    /// The payload length once the last fragment (no MF) was seen.
    total: Option<usize>,
    started_ms: u64,
    l3: usize,
}

/// See the module documentation.
#[derive(Default)]
pub struct Reassembly {
    pending: Vec<Pending>,
    stats: ReassemblyStats,
}

impl Reassembly {
    /// Counters.
    pub fn stats(&self) -> ReassemblyStats {
        self.stats
    }

    /// Datagrams waiting.
    pub fn waiting(&self) -> usize {
        self.pending.len()
    }

    /// Take fragment `d` (IPv4 at `l3`) at `now_ms`. See the module documentation.
    pub fn offer(&mut self, frames: &mut Frames, d: Desc, l3: usize, now_ms: u64) -> Offer {
        let Some((id, offset, len, more)) = piece(frames.data(d), l3) else {
            frames.free(d.addr);
            self.stats.refused += 1;
            return Offer::Dropped(DropReason::IpMalformed);
        };
        let i = match self.pending.iter().position(|p| p.id == id) {
            Some(i) => i,
            None => {
                if self.pending.len() >= MAX_DATAGRAMS {
                    let oldest = (0..self.pending.len())
                        .min_by_key(|&i| self.pending[i].started_ms)
                        .expect("full");
                    let p = self.pending.swap_remove(oldest);
                    self.stats.timed_out += 1;
                    free_all(frames, &p);
                }
                self.pending.push(Pending {
                    id,
                    pieces: Vec::with_capacity(4),
                    total: None,
                    started_ms: now_ms,
                    l3,
                });
                self.pending.len() - 1
            }
        };
        let p = &mut self.pending[i];
        let overlaps = p
            .pieces
            .iter()
            .any(|&(o, l, _)| offset < o + l && o < offset + len.max(1));
        let end = offset + len;
        let too_long = end + 20 + l3 > MAX_FRAME_LEN
            || p.total.is_some_and(|t| end > t || !more && end != t)
            || !more && p.pieces.iter().any(|&(o, l, _)| o + l > end);
        if overlaps || too_long || p.pieces.len() >= MAX_PIECES || p.l3 != l3 {
            let p = self.pending.swap_remove(i);
            free_all(frames, &p);
            frames.free(d.addr);
            self.stats.refused += 1;
            return Offer::Dropped(DropReason::IpMalformed);
        }
        p.pieces.push((offset, len, d));
        if !more {
            p.total = Some(end);
        }
        let have: usize = p.pieces.iter().map(|&(_, l, _)| l).sum();
        if p.total != Some(have) {
            return Offer::Held;
        }
        let mut p = self.pending.swap_remove(i);
        p.pieces.sort_by_key(|&(o, _, _)| o);
        match join(frames, &p) {
            Some(whole) => {
                free_all(frames, &p);
                self.stats.reassembled += 1;
                Offer::Done(whole)
            }
            None => {
                free_all(frames, &p);
                self.stats.refused += 1;
                Offer::Dropped(DropReason::NoBuffer)
            }
        }
    }

    /// Drop the datagrams older than [`TIMEOUT_MS`] at `now_ms`, freeing their frames.
    /// Returns how many were dropped.
    pub fn expire(&mut self, frames: &mut Frames, now_ms: u64) -> usize {
        let before = self.pending.len();
        let mut i = 0;
        while i < self.pending.len() {
            if now_ms.saturating_sub(self.pending[i].started_ms) >= TIMEOUT_MS {
                let p = self.pending.swap_remove(i);
                free_all(frames, &p);
                self.stats.timed_out += 1;
            } else {
                i += 1;
            }
        }
        before - self.pending.len()
    }
}

/// A fragment's datagram, offset, payload length and more-fragments flag (None for a header
/// with options or lengths that do not hold).
fn piece(data: &[u8], l3: usize) -> Option<(DatagramId, usize, usize, bool)> {
    let ip = data.get(l3..)?;
    let h = ipv4::Packet::new_checked(ip).ok()?;
    let (hl, total) = (h.header_len(), h.total_len() as usize);
    if hl != 20 || total < hl || total > ip.len() {
        return None;
    }
    let word = u16::from_be_bytes([ip[6], ip[7]]);
    let (offset, len, more) = ((word & 0x1fff) as usize * 8, total - hl, word & MF != 0);
    // Every fragment but the last carries a multiple of 8 bytes.
    if more && (len == 0 || len % 8 != 0) {
        return None;
    }
    let id = DatagramId {
        src: h.src(),
        dst: h.dst(),
        proto: h.protocol(),
        id: h.ident(),
    };
    Some((id, offset, len, more))
}

/// The datagram `p` (complete, its pieces in offset order) as one new frame; None when the
/// pool has no frame above its copy floor.
fn join(frames: &mut Frames, p: &Pending) -> Option<Desc> {
    let order = &p.pieces;
    let head = p.l3 + 20;
    let total = p.total?;
    if frames.spare() == 0 {
        return None;
    }
    let mut whole = frames.alloc()?;
    whole.len = (head + total) as u32;
    // The first fragment's L2 bytes and IP header, then each payload at its offset.
    frames.copy_bytes(order.first()?.2.addr, whole.addr, head);
    for &(offset, len, d) in order {
        let src = d.addr + head as u64;
        frames.copy_bytes(src, whole.addr + (head + offset) as u64, len);
    }
    let ip = &mut frames.data_mut(whole)[p.l3..];
    ip[2..4].copy_from_slice(&((20 + total) as u16).to_be_bytes());
    ip[6..8].fill(0);
    ipv4::Packet::new_unchecked(ip).fill_checksum();
    Some(whole)
}

fn free_all(frames: &mut Frames, p: &Pending) {
    for &(_, _, d) in &p.pieces {
        frames.free(d.addr);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::PacketBuilder;

    fn datagram(ident: u16, len: usize) -> Vec<u8> {
        let payload: Vec<u8> = (0..len).map(|i| (i * 13) as u8).collect();
        let mut f = Vec::new();
        PacketBuilder::ethernet2([2; 6], [4; 6])
            .ipv4([192, 0, 2, 2], [192, 0, 2, 1], 64)
            .udp(50000, 4789)
            .write(&mut f, &payload)
            .unwrap();
        f[18..20].copy_from_slice(&ident.to_be_bytes());
        f[20..22].fill(0);
        ipv4::Packet::new_unchecked(&mut f[14..]).fill_checksum();
        f
    }

    /// Cut `f` (20-byte header) into fragments of `chunk` payload bytes.
    fn cut(f: &[u8], chunk: usize) -> Vec<Vec<u8>> {
        let (head, payload) = f.split_at(34);
        payload
            .chunks(chunk)
            .enumerate()
            .map(|(i, c)| {
                let mut p = head.to_vec();
                p.extend_from_slice(c);
                let more = (i + 1) * chunk < payload.len();
                let word = (if more { MF } else { 0 }) | (i * chunk / 8) as u16;
                p[16..18].copy_from_slice(&((20 + c.len()) as u16).to_be_bytes());
                p[20..22].copy_from_slice(&word.to_be_bytes());
                ipv4::Packet::new_unchecked(&mut p[14..]).fill_checksum();
                p
            })
            .collect()
    }

    fn frame(frames: &mut Frames, bytes: &[u8]) -> Desc {
        let mut d = frames.alloc().unwrap();
        d.len = bytes.len() as u32;
        frames.data_mut(d).copy_from_slice(bytes);
        d
    }

    #[test]
    fn fragments_in_any_order_make_the_datagram_again() {
        let mut frames = Frames::new(32).unwrap();
        let mut r = Reassembly::default();
        for order in [[0usize, 1, 2], [2, 0, 1], [1, 2, 0]] {
            let whole = datagram(0x100 + order[0] as u16, 1400);
            let pieces = cut(&whole, 600);
            assert_eq!(pieces.len(), 3);
            let mut done = None;
            for (k, &i) in order.iter().enumerate() {
                let d = frame(&mut frames, &pieces[i]);
                match r.offer(&mut frames, d, 14, 5) {
                    Offer::Held => assert!(k < 2),
                    Offer::Done(w) => done = Some(w),
                    o => panic!("{o:?}"),
                }
            }
            let w = done.expect("complete");
            assert_eq!(frames.data(w), &whole[..], "{order:?}");
            frames.free(w.addr);
        }
        assert_eq!(r.stats().reassembled, 3);
        assert_eq!(r.waiting(), 0);
        // Every frame is back in the pool.
        let all: Vec<Desc> = (0..40).map_while(|_| frames.alloc()).collect();
        assert_eq!(all.len(), 32);
    }

    #[test]
    fn incomplete_overlapping_and_crowded_datagrams_free_their_frames() {
        let mut frames = Frames::new(256).unwrap();
        let mut r = Reassembly::default();
        // Incomplete: expires after the timeout, frames freed.
        let pieces = cut(&datagram(1, 1400), 600);
        let d = frame(&mut frames, &pieces[0]);
        assert_eq!(r.offer(&mut frames, d, 14, 0), Offer::Held);
        assert_eq!(r.expire(&mut frames, TIMEOUT_MS - 1), 0);
        assert_eq!(r.expire(&mut frames, TIMEOUT_MS), 1);
        // Overlap (the same fragment twice): the datagram is dropped.
        let d = frame(&mut frames, &pieces[0]);
        assert_eq!(r.offer(&mut frames, d, 14, 0), Offer::Held);
        let d = frame(&mut frames, &pieces[0]);
        assert!(matches!(r.offer(&mut frames, d, 14, 0), Offer::Dropped(_)));
        assert_eq!(r.waiting(), 0);
        // A full table pushes out the oldest.
        for id in 0..=MAX_DATAGRAMS as u16 {
            let pieces = cut(&datagram(1000 + id, 1400), 600);
            let d = frame(&mut frames, &pieces[0]);
            assert_eq!(r.offer(&mut frames, d, 14, u64::from(id)), Offer::Held);
        }
        assert_eq!(r.waiting(), MAX_DATAGRAMS);
        assert_eq!(r.expire(&mut frames, 10_000), MAX_DATAGRAMS);
        let s = r.stats();
        assert_eq!((s.timed_out, s.refused), (2 + MAX_DATAGRAMS as u64, 1));
        let all: Vec<Desc> = (0..300).map_while(|_| frames.alloc()).collect();
        assert_eq!(all.len(), 256, "no frame leaked");
    }
}
