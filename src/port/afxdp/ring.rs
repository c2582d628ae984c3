//! One AF_XDP ring (rx, tx, fill or completion) mapped from an XSK socket.
//!
//! Contract:
//! - A [`Ring<T>`] owns the `mmap` of one ring and unmaps it on drop. `T` is the entry type:
//!   `xdp_desc` for rx/tx, `u64` (a UMEM address) for fill/completion.
//! - The process is the producer of fill and tx rings and the consumer of rx and completion rings.
//!   Use only the producer methods ([`Ring::reserve`], [`Ring::write`], [`Ring::submit`]) on the
//!   first two and only the consumer methods ([`Ring::peek`], [`Ring::read`], [`Ring::release`]) on
//!   the other two.
//! - The shared producer/consumer words are read with `Acquire` and written with `Release`; the
//!   local side keeps cached copies so that a burst touches the shared cache lines at most twice.
//! - Nothing here allocates; every method is O(1) apart from the caller's per-entry loop.

use std::io;
use std::marker::PhantomData;
use std::os::fd::RawFd;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};

/// One mapped ring. See the module doc for which methods apply to which ring.
pub struct Ring<T: Copy> {
    map: NonNull<u8>,
    map_len: usize,
    producer: NonNull<AtomicU32>,
    consumer: NonNull<AtomicU32>,
    flags: NonNull<AtomicU32>,
    descs: NonNull<T>,
    mask: u32,
    size: u32,
    /// Producer rings: our next producer index. Consumer rings: last producer index seen.
    cached_prod: u32,
    /// Producer rings: last consumer index seen plus `size`. Consumer rings: our next consumer
    /// index.
    cached_cons: u32,
    _t: PhantomData<T>,
}

// SAFETY: the ring memory is a MAP_SHARED mapping owned by this value; only the kernel and the
// single owner of this value touch it, and the owner may live on any thread.
unsafe impl<T: Copy> Send for Ring<T> {}

impl<T: Copy> Ring<T> {
    /// Map the ring of `size` entries at page offset `pgoff` of socket `fd`, with the layout
    /// `off` reported by `XDP_MMAP_OFFSETS`. `producer_side` says whether this process produces.
    pub fn map(
        fd: RawFd,
        size: u32,
        pgoff: i64,
        off: &libc::xdp_ring_offset,
        producer_side: bool,
    ) -> io::Result<Ring<T>> {
        debug_assert!(size.is_power_of_two());
        let map_len = off.desc as usize + size as usize * size_of::<T>();
        // SAFETY: a fresh shared mapping of the socket's ring; no address hint; result checked.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                fd,
                pgoff,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base = p.cast::<u8>();
        let at = |o: u64| {
            // SAFETY: the kernel's offsets lie inside the mapping of `map_len` bytes.
            NonNull::new(unsafe { base.add(o as usize) }).expect("mmap returned null")
        };
        let mut ring = Ring {
            map: NonNull::new(base).expect("mmap returned null"),
            map_len,
            producer: at(off.producer).cast(),
            consumer: at(off.consumer).cast(),
            flags: at(off.flags).cast(),
            descs: at(off.desc).cast(),
            mask: size - 1,
            size,
            cached_prod: 0,
            cached_cons: 0,
            _t: PhantomData,
        };
        ring.cached_prod = ring.load_producer();
        ring.cached_cons = ring.load_consumer();
        if producer_side {
            ring.cached_cons = ring.cached_cons.wrapping_add(size);
        }
        Ok(ring)
    }

    #[inline]
    fn load_producer(&self) -> u32 {
        // SAFETY: `producer` points at an aligned u32 inside the live mapping.
        unsafe { self.producer.as_ref() }.load(Ordering::Acquire)
    }

    #[inline]
    fn load_consumer(&self) -> u32 {
        // SAFETY: `consumer` points at an aligned u32 inside the live mapping.
        unsafe { self.consumer.as_ref() }.load(Ordering::Acquire)
    }

    /// The ring's flag word (`XDP_RING_NEED_WAKEUP`).
    #[inline]
    pub fn needs_wakeup(&self) -> bool {
        // SAFETY: `flags` points at an aligned u32 inside the live mapping.
        let f = unsafe { self.flags.as_ref() }.load(Ordering::Relaxed);
        f & libc::XDP_RING_NEED_WAKEUP != 0
    }

    /// Number of entries in the ring.
    pub fn size(&self) -> u32 {
        self.size
    }

    // ---- producer side (fill, tx) ----

    /// Free slots available to produce, up to `want` (refreshes the consumer index if needed).
    #[inline]
    pub fn reserve(&mut self, want: u32) -> u32 {
        let mut free = self.cached_cons.wrapping_sub(self.cached_prod);
        if free < want {
            self.cached_cons = self.load_consumer().wrapping_add(self.size);
            free = self.cached_cons.wrapping_sub(self.cached_prod);
        }
        free.min(want)
    }

    /// Write entry `i` (0-based, below the count `reserve` returned) of the pending batch.
    #[inline]
    pub fn write(&mut self, i: u32, v: T) {
        let idx = self.cached_prod.wrapping_add(i) & self.mask;
        // SAFETY: idx <= mask, inside the descriptor array; the slot is ours until `submit`
        // because `reserve` saw it free.
        unsafe { self.descs.as_ptr().add(idx as usize).write_volatile(v) };
    }

    /// Publish the first `n` written entries to the kernel.
    #[inline]
    pub fn submit(&mut self, n: u32) {
        self.cached_prod = self.cached_prod.wrapping_add(n);
        // SAFETY: as in `load_producer`; the Release store orders the entry writes before it.
        unsafe { self.producer.as_ref() }.store(self.cached_prod, Ordering::Release);
    }

    /// Entries produced but not yet consumed by the kernel (refreshes the consumer index).
    #[inline]
    pub fn in_flight(&mut self) -> u32 {
        self.cached_cons = self.load_consumer().wrapping_add(self.size);
        self.size - self.cached_cons.wrapping_sub(self.cached_prod)
    }

    // ---- consumer side (rx, completion) ----

    /// Entries available to consume, up to `want` (refreshes the producer index if needed).
    #[inline]
    pub fn peek(&mut self, want: u32) -> u32 {
        let mut avail = self.cached_prod.wrapping_sub(self.cached_cons);
        if avail < want {
            self.cached_prod = self.load_producer();
            avail = self.cached_prod.wrapping_sub(self.cached_cons);
        }
        avail.min(want)
    }

    /// Read entry `i` (0-based, below the count `peek` returned).
    #[inline]
    pub fn read(&self, i: u32) -> T {
        let idx = self.cached_cons.wrapping_add(i) & self.mask;
        // SAFETY: idx <= mask, inside the descriptor array; the Acquire load in `peek` ordered
        // the kernel's write of this slot before this read.
        unsafe { self.descs.as_ptr().add(idx as usize).read_volatile() }
    }

    /// Hand the first `n` peeked entries back to the kernel.
    #[inline]
    pub fn release(&mut self, n: u32) {
        self.cached_cons = self.cached_cons.wrapping_add(n);
        // SAFETY: as in `load_consumer`; the Release store orders our reads before it.
        unsafe { self.consumer.as_ref() }.store(self.cached_cons, Ordering::Release);
    }
}

impl<T: Copy> Drop for Ring<T> {
    fn drop(&mut self) {
        // SAFETY: map/map_len are exactly what mmap returned; no reference into it outlives self.
        unsafe {
            libc::munmap(self.map.as_ptr().cast(), self.map_len);
        }
    }
}
