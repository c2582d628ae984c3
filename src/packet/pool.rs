//! The frame pool: region + free list + owner tags + the frame budget.

use std::io;

use super::budget::FrameBudget;
use super::{Desc, FRAME_SIZE, HEADROOM, Owner, Region};

/// All frames of one worker: the region, the free chunks, who holds each chunk, and how they are
/// shared between receive rings (see [`FrameBudget`]).
pub struct Frames {
    region: Region,
    free: Vec<u64>,
    owner: Vec<u16>,
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
    /// the budget's reserve (see [`FrameBudget`]).
    #[inline]
    pub fn alloc_fill(&mut self, owner: Owner) -> Option<u64> {
        if self.free.len() <= self.budget.reserve() as usize {
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
        self.alloc_chunk(Owner::Worker).map(|c| Desc {
            addr: c + HEADROOM as u64,
            len: 0,
        })
    }

    /// Return the frame containing `addr` to the free list.
    #[inline]
    pub fn free(&mut self, addr: u64) {
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
        let idx = (addr / FRAME_SIZE as u64) as usize;
        self.owner[idx] = owner.encode();
    }

    /// Who holds the frame containing `addr`.
    pub fn owner_of(&self, addr: u64) -> Owner {
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
    #[inline]
    pub fn data_mut(&mut self, d: Desc) -> &mut [u8] {
        self.region.bytes_mut(d.addr, d.len as usize)
    }

    /// The data bytes of a frame the caller owns, read-only.
    #[inline]
    pub fn data(&self, d: Desc) -> &[u8] {
        self.region.bytes(d.addr, d.len as usize)
    }

    /// The whole chunk of a frame, from its start: for writing received data or prepending.
    #[inline]
    pub fn chunk_mut(&mut self, chunk: u64) -> &mut [u8] {
        self.region.bytes_mut(chunk, FRAME_SIZE)
    }

    /// Copy a frame into a newly allocated one (for flooding). None when the free list is down
    /// to the copy floor (see [`FrameBudget`]): copies never take frames receive rings need.
    pub fn clone_frame(&mut self, d: Desc) -> Option<Desc> {
        if self.spare() == 0 {
            return None;
        }
        let n = self.alloc()?;
        let n = Desc {
            addr: n.chunk() + d.headroom() as u64,
            len: d.len,
        };
        self.region.copy(d.addr, n.addr, d.len as usize);
        Some(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn fill_allocations_leave_the_reserve() {
        let mut f = Frames::new(64).unwrap();
        assert_eq!(f.budget.reserve(), 8);
        let mut n = 0;
        while f.alloc_fill(Owner::Port(1)).is_some() {
            n += 1;
        }
        assert_eq!(n, 56);
        assert_eq!(f.in_use(), 56);
        // Copies stop at the reserve too.
        assert_eq!(f.spare(), 0);
        // The worker still gets frames for itself.
        assert!(f.alloc().is_some());
        assert_eq!(f.reclaim(Owner::Port(1)), 56);
    }

    #[test]
    fn copies_never_take_what_receive_rings_are_owed() {
        let mut f = Frames::new(64).unwrap();
        f.budget.admit(40).unwrap();
        let mut a = f.alloc().unwrap();
        a.len = 1;
        // Floor: 8 (the reserve) + 40 owed; 63 free -> 15 copies, then refused.
        let copies: Vec<Desc> = std::iter::from_fn(|| f.clone_frame(a)).collect();
        assert_eq!(copies.len(), 15);
        assert_eq!(f.free_count(), 48);
        // The rings get every frame they are owed, and the reserve is still there.
        let ring: Vec<u64> = (0..40)
            .filter_map(|_| f.alloc_fill(Owner::Port(1)))
            .collect();
        assert_eq!(ring.len(), 40);
        assert_eq!(f.free_count(), 8);
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
}
