//! The frame pool: region + free list + owner tags + the frame budget.

use std::io;

use super::budget::FrameBudget;
use super::{BIG_BASE, BIG_COUNT, BIG_SIZE, Desc, FRAME_SIZE, HEADROOM, Owner, Region};

/// The large buffers (see the module documentation): a mapping, its free offsets, and which
/// are in use (to catch double frees).
struct BigPool {
    region: Region,
    free: Vec<u64>,
    used: Vec<bool>,
}

impl BigPool {
    fn new() -> io::Result<BigPool> {
        Ok(BigPool {
            region: Region::map(BIG_COUNT as usize * BIG_SIZE, false)?,
            free: (0..BIG_COUNT as u64)
                .rev()
                .map(|i| i * BIG_SIZE as u64)
                .collect(),
            used: vec![false; BIG_COUNT as usize],
        })
    }
}

/// All frames of one worker: the region, the free chunks, who holds each chunk, and how they are
/// shared between receive rings (see [`FrameBudget`]).
pub struct Frames {
    region: Region,
    free: Vec<u64>,
    owner: Vec<u16>,
    big: Option<BigPool>,
    /// The budget AF_XDP ports are admitted against.
    pub budget: FrameBudget,
}

impl Frames {
    /// Map `count` frames, all free.
    pub fn new(count: u32) -> io::Result<Frames> {
        let region = Region::new(count)?;
        let free = (0..count as u64)
            .rev()
            .map(|i| i * FRAME_SIZE as u64)
            .collect();
        let owner = vec![Owner::Free.encode(); count as usize];
        Ok(Frames {
            region,
            free,
            owner,
            big: None,
            budget: FrameBudget::new(count),
        })
    }

    /// The region (for UMEM registration).
    pub fn region(&self) -> &Region {
        &self.region
    }

    /// Number of frames in the region.
    pub fn capacity(&self) -> usize {
        self.owner.len()
    }

    /// Number of free frames.
    pub fn free_count(&self) -> usize {
        self.free.len()
    }

    /// Frames not on the free list (in rings, in flight, queued).
    pub fn in_use(&self) -> usize {
        self.capacity() - self.free_count()
    }

    /// Take a free chunk for a receive (fill) ring of `owner`, unless the free list is down to
    /// the budget's worker floor (see [`FrameBudget`]).
    #[inline]
    pub fn alloc_fill(&mut self, owner: Owner) -> Option<u64> {
        if self.free.len() <= self.budget.worker_floor() as usize {
            return None;
        }
        let c = self.alloc_chunk(owner)?;
        self.budget.ring_in(1);
        Some(c)
    }

    /// Free frames above the copy floor (see [`FrameBudget::copy_floor`]): what flood copies
    /// and transmit queues may still take.
    #[inline]
    pub fn spare(&self) -> usize {
        self.free
            .len()
            .saturating_sub(self.budget.copy_floor() as usize)
    }

    /// Take a free chunk for `owner`; returns the chunk's start offset.
    #[inline]
    pub fn alloc_chunk(&mut self, owner: Owner) -> Option<u64> {
        let chunk = self.free.pop()?;
        self.owner[(chunk / FRAME_SIZE as u64) as usize] = owner.encode();
        Some(chunk)
    }

    /// Take a free frame for the worker, positioned after the standard headroom, length 0.
    #[inline]
    pub fn alloc(&mut self) -> Option<Desc> {
        self.alloc_chunk(Owner::Worker)
            .map(|c| Desc::new(c + HEADROOM as u64, 0))
    }

    /// Return the frame containing `addr` to the free list.
    #[inline]
    pub fn free(&mut self, addr: u64) {
        if addr >= BIG_BASE {
            return self.free_big(addr);
        }
        let chunk = addr & !(FRAME_SIZE as u64 - 1);
        let idx = (chunk / FRAME_SIZE as u64) as usize;
        debug_assert_ne!(
            self.owner[idx],
            Owner::Free.encode(),
            "double free of {chunk}"
        );
        self.owner[idx] = Owner::Free.encode();
        self.free.push(chunk);
    }

    /// Record that the frame containing `addr` is now held by `owner`.
    #[inline]
    pub fn set_owner(&mut self, addr: u64, owner: Owner) {
        if addr >= BIG_BASE {
            return;
        }
        let idx = (addr / FRAME_SIZE as u64) as usize;
        self.owner[idx] = owner.encode();
    }

    /// The worker holds the frame containing `addr`, received on port `port`: a congested
    /// output shares its room by the port frames came in on (`worker::relay`). Not kept for
    /// large frames.
    #[inline]
    pub fn mark_received(&mut self, addr: u64, port: u16) {
        if addr >= BIG_BASE {
            return;
        }
        let idx = (addr / FRAME_SIZE as u64) as usize;
        self.owner[idx] = Owner::encode_received(port);
    }

    /// The port a frame the worker holds was marked received on (see [`Frames::mark_received`]);
    /// None for a frame made here (an ARP request, an ICMP error) or a large one. Flood copies
    /// and TCP segments cut from a marked super-frame keep the mark; a reply written into the
    /// request's frame (an echo reply) keeps it too.
    #[inline]
    pub fn received_on(&self, addr: u64) -> Option<u16> {
        if addr >= BIG_BASE {
            return None;
        }
        Owner::received_on(self.owner[(addr / FRAME_SIZE as u64) as usize])
    }

    /// Who holds the frame containing `addr`.
    pub fn owner_of(&self, addr: u64) -> Owner {
        if addr >= BIG_BASE {
            let i = ((addr - BIG_BASE) / BIG_SIZE as u64) as usize;
            let used = self.big.as_ref().is_some_and(|b| b.used[i]);
            return if used { Owner::Worker } else { Owner::Free };
        }
        Owner::decode(self.owner[(addr / FRAME_SIZE as u64) as usize])
    }

    /// Return every frame held by `owner` to the free list (a removed port's rings). Returns the
    /// number reclaimed.
    pub fn reclaim(&mut self, owner: Owner) -> usize {
        let tag = owner.encode();
        let mut n = 0;
        for (i, o) in self.owner.iter_mut().enumerate() {
            if *o == tag {
                *o = Owner::Free.encode();
                self.free.push(i as u64 * FRAME_SIZE as u64);
                n += 1;
            }
        }
        n
    }

    /// The data bytes of a frame the caller owns.
    #[inline(always)]
    pub fn data_mut(&mut self, d: Desc) -> &mut [u8] {
        self.bytes_mut(d.addr, d.len as usize)
    }

    /// The bytes `addr .. addr + len` of either mapping.
    #[inline(always)]
    fn bytes_mut(&mut self, addr: u64, len: usize) -> &mut [u8] {
        if addr >= BIG_BASE {
            let big = self
                .big
                .as_mut()
                .expect("a large descriptor implies the large pool");
            return big.region.bytes_mut(addr - BIG_BASE, len);
        }
        self.region.bytes_mut(addr, len)
    }

    /// The first `N` data bytes of a frame the caller owns in the standard pool, read-only;
    /// None for a frame shorter than `N` or in a large buffer (its address, at or above
    /// `BIG_BASE`, lies past the standard region). Cheaper than `data` in a loop: one length
    /// and one address compare, no dispatch between the pools.
    #[inline(always)]
    pub fn head<const N: usize>(&self, d: Desc) -> Option<&[u8; N]> {
        if (d.len as usize) < N {
            return None;
        }
        self.region.head::<N>(d.addr)
    }

    /// The data bytes of a frame the caller owns in the standard pool, read-only; None for a
    /// frame in a large buffer (its address lies past the standard region). One bound to
    /// compare against, no dispatch between the pools: for loops that send large frames the
    /// general way.
    #[inline(always)]
    pub fn standard_data(&self, d: Desc) -> Option<&[u8]> {
        self.region.get(d.addr, d.len as usize)
    }

    /// The data bytes of a frame the caller owns, read-only.
    #[inline]
    pub fn data(&self, d: Desc) -> &[u8] {
        if d.addr >= BIG_BASE {
            let big = self
                .big
                .as_ref()
                .expect("a large descriptor implies the large pool");
            return big.region.bytes(d.addr - BIG_BASE, d.len as usize);
        }
        self.region.bytes(d.addr, d.len as usize)
    }

    /// The whole chunk of a frame, from its start: for writing received data or prepending.
    #[inline]
    pub fn chunk_mut(&mut self, chunk: u64) -> &mut [u8] {
        let size = if chunk >= BIG_BASE {
            BIG_SIZE
        } else {
            FRAME_SIZE
        };
        self.bytes_mut(chunk, size)
    }

    /// Take a free large buffer for the worker, positioned after the standard headroom, length
    /// 0. The large pool is mapped on the first call; None when it is exhausted (or cannot be
    /// mapped).
    pub fn alloc_big(&mut self) -> Option<Desc> {
        if self.big.is_none() {
            self.big = Some(BigPool::new().ok()?);
        }
        let big = self.big.as_mut().expect("made above");
        let off = big.free.pop()?;
        big.used[(off / BIG_SIZE as u64) as usize] = true;
        Some(Desc::new(BIG_BASE + off + HEADROOM as u64, 0))
    }

    /// Free large buffers (all of them before the first [`Frames::alloc_big`]).
    pub fn big_free_count(&self) -> usize {
        self.big
            .as_ref()
            .map_or(BIG_COUNT as usize, |b| b.free.len())
    }

    fn free_big(&mut self, addr: u64) {
        let big = self
            .big
            .as_mut()
            .expect("a large descriptor implies the large pool");
        let off = (addr - BIG_BASE) & !(BIG_SIZE as u64 - 1);
        let i = (off / BIG_SIZE as u64) as usize;
        debug_assert!(big.used[i], "double free of large buffer {i}");
        big.used[i] = false;
        big.free.push(off);
    }

    /// Copy `len` bytes from `src` to `dst` (offsets of distinct frames the caller owns, in
    /// either mapping). Panics if a range leaves its mapping.
    pub fn copy_bytes(&mut self, src: u64, dst: u64, len: usize) {
        match (src >= BIG_BASE, dst >= BIG_BASE) {
            (false, false) => self.region.copy(src, dst, len),
            (s_big, d_big) => {
                let big = self
                    .big
                    .as_mut()
                    .expect("a large descriptor implies the large pool");
                if s_big && d_big {
                    return big.region.copy(src - BIG_BASE, dst - BIG_BASE, len);
                }
                let (small, big) = (&mut self.region, &mut big.region);
                if s_big {
                    small
                        .bytes_mut(dst, len)
                        .copy_from_slice(big.bytes(src - BIG_BASE, len));
                } else {
                    big.bytes_mut(dst - BIG_BASE, len)
                        .copy_from_slice(small.bytes(src, len));
                }
            }
        }
    }

    /// Copy a frame into a newly allocated one (for flooding). None when the free list is down
    /// to the copy floor (see [`FrameBudget`]): copies never take frames receive rings need.
    pub fn clone_frame(&mut self, d: Desc) -> Option<Desc> {
        if self.spare() == 0 {
            return None;
        }
        let n = if d.is_big() {
            self.alloc_big()?
        } else {
            self.alloc()?
        };
        let n = Desc {
            addr: n.chunk() + d.headroom() as u64,
            len: d.len,
            ol: d.ol,
        };
        self.copy_bytes(d.addr, n.addr, d.len as usize);
        if let Some(port) = self.received_on(d.addr) {
            self.mark_received(n.addr, port);
        }
        Some(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_head_is_a_standard_frame_of_at_least_its_length() {
        let mut f = Frames::new(8).unwrap();
        let mut a = f.alloc().unwrap();
        a.len = 42;
        f.data_mut(a).copy_from_slice(&[5; 42]);
        assert_eq!(f.head::<42>(a), Some(&[5; 42]));
        assert_eq!(f.head::<38>(a), Some(&[5; 38]));
        assert!(f.head::<43>(a).is_none(), "shorter than the head");
        assert_eq!(f.standard_data(a), Some(&[5; 42][..]));
        // A large buffer's frame is refused, however long.
        if let Some(mut big) = f.alloc_big() {
            big.len = 100;
            assert!(f.head::<38>(big).is_none());
            assert!(f.standard_data(big).is_none());
            assert_eq!(f.data(big).len(), 100);
        }
    }

    #[test]
    fn a_received_frame_keeps_its_port_until_it_changes_hands() {
        let mut f = Frames::new(8).unwrap();
        let mut a = f.alloc().unwrap();
        a.len = 60;
        assert_eq!(f.received_on(a.addr), None, "made here");
        f.mark_received(a.addr + 4, 1023);
        assert_eq!(f.received_on(a.addr), Some(1023));
        assert_eq!(f.owner_of(a.addr), Owner::Worker, "still the worker's");
        let copy = f.clone_frame(a).unwrap();
        assert_eq!(
            f.received_on(copy.addr),
            Some(1023),
            "a flood copy keeps it"
        );
        f.set_owner(a.addr, Owner::Port(7));
        assert_eq!(
            (f.received_on(a.addr), f.owner_of(a.addr)),
            (None, Owner::Port(7))
        );
        assert_eq!(f.reclaim(Owner::Port(7)), 1);
        f.free(copy.addr);
        assert_eq!(f.free_count(), 8);
        // Ids beyond the encoding stay the worker's, unmarked.
        let b = f.alloc().unwrap();
        f.mark_received(b.addr, u16::MAX - 1);
        assert_eq!(
            (f.received_on(b.addr), f.owner_of(b.addr)),
            (None, Owner::Worker)
        );
    }

    #[test]
    fn alloc_free_reclaim() {
        let mut f = Frames::new(8).unwrap();
        assert_eq!(f.free_count(), 8);
        let a = f.alloc().unwrap();
        assert_eq!(a.headroom(), HEADROOM);
        assert_eq!(f.owner_of(a.addr), Owner::Worker);
        let c = f.alloc_chunk(Owner::Port(3)).unwrap();
        let d = f.alloc_chunk(Owner::Port(3)).unwrap();
        assert_eq!(f.free_count(), 5);
        assert_eq!(f.reclaim(Owner::Port(3)), 2);
        assert_eq!(f.free_count(), 7);
        assert_eq!(f.owner_of(c), Owner::Free);
        assert_eq!(f.owner_of(d), Owner::Free);
        f.free(a.addr + 10);
        assert_eq!(f.free_count(), 8);
    }

    #[test]
    fn fill_allocations_leave_the_workers_floor() {
        let mut f = Frames::new(64).unwrap();
        assert_eq!(f.budget.reserve(), 8);
        assert_eq!(f.budget.worker_floor(), 4);
        let mut n = 0;
        while f.alloc_fill(Owner::Port(1)).is_some() {
            n += 1;
        }
        assert_eq!(n, 60);
        assert_eq!(f.in_use(), 60);
        // Copies stop at the floor too.
        assert_eq!(f.spare(), 0);
        // The worker still gets frames for itself.
        assert!(f.alloc().is_some());
        assert_eq!(f.reclaim(Owner::Port(1)), 60);
    }

    #[test]
    fn a_region_fully_committed_and_lent_still_floods() {
        // 512 frames: reserve 64; three one-queue ports commit 384, two busy ones are lent the
        // last 64 (32 each, a socket's share), and every ring is stocked. The free list is the reserve: copies (ARP requests
        // flooded) must still find frames, and the worker's floor is left.
        let mut f = Frames::new(512).unwrap();
        for _ in 0..3 {
            f.budget.admit(128).unwrap();
        }
        assert_eq!(f.budget.lend(128, 0), 32);
        assert_eq!(f.budget.lend(128, 0), 32);
        assert_eq!(f.budget.available(), 0);
        let ring: Vec<u64> = (0..448)
            .filter_map(|_| f.alloc_fill(Owner::Port(1)))
            .collect();
        assert_eq!(ring.len(), 448);
        assert_eq!(f.budget.debt(), 0);
        let mut a = f.alloc().unwrap();
        a.len = 60;
        let copies: Vec<Desc> = std::iter::from_fn(|| f.clone_frame(a)).collect();
        assert_eq!(copies.len(), 31, "63 free, 32 kept for the worker");
        assert_eq!(f.free_count(), 32);
        assert!(f.alloc().is_some(), "the worker still gets frames");
    }

    #[test]
    fn copies_never_take_what_receive_rings_are_owed() {
        let mut f = Frames::new(64).unwrap();
        f.budget.admit(40).unwrap();
        let mut a = f.alloc().unwrap();
        a.len = 1;
        // Floor: 4 (the worker's half of the reserve) + 40 owed; 63 free -> 19 copies, then
        // refused.
        let copies: Vec<Desc> = std::iter::from_fn(|| f.clone_frame(a)).collect();
        assert_eq!(copies.len(), 19);
        assert_eq!(f.free_count(), 44);
        // The rings get every frame they are owed, and the reserve is still there.
        let ring: Vec<u64> = (0..40)
            .filter_map(|_| f.alloc_fill(Owner::Port(1)))
            .collect();
        assert_eq!(ring.len(), 40);
        assert_eq!(f.free_count(), 4);
        assert!(f.alloc().is_some(), "the worker still gets frames");
    }

    #[test]
    fn clone_copies_bytes_and_headroom() {
        let mut f = Frames::new(4).unwrap();
        let mut a = f.alloc().unwrap();
        a.len = 5;
        f.data_mut(a).copy_from_slice(b"hello");
        let b = f.clone_frame(a).unwrap();
        assert_ne!(a.chunk(), b.chunk());
        assert_eq!(f.data(b), b"hello");
        assert_eq!(b.headroom(), a.headroom());
    }

    #[test]
    fn large_buffers_are_separate_and_copyable() {
        let mut f = Frames::new(4).unwrap();
        let mut big = f.alloc_big().unwrap();
        assert!(big.is_big());
        assert_eq!(big.headroom(), HEADROOM);
        big.len = 60_000;
        big.ol = crate::packet::Offload::partial();
        f.data_mut(big)[59_999] = 7;
        let c = f.clone_frame(big).unwrap();
        assert!(c.is_big() && c.chunk() != big.chunk());
        assert_eq!((f.data(c)[59_999], c.ol), (7, big.ol));
        let mut small = f.alloc().unwrap();
        small.len = 100;
        f.copy_bytes(big.addr + 59_900, small.addr, 100);
        assert_eq!(f.data(small)[99], 7);
        assert_eq!(f.owner_of(big.addr), Owner::Worker);
        f.free(big.addr);
        f.free(c.addr);
        assert_eq!(f.owner_of(big.addr), Owner::Free);
        assert_eq!(f.big_free_count(), crate::packet::BIG_COUNT as usize);
        assert_eq!(f.free_count(), 3, "small frames untouched by large ones");
    }
}
