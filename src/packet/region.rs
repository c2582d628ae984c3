//! The mmap'd frame region (the AF_XDP UMEM).

use std::io;
use std::ptr::NonNull;

use super::FRAME_SIZE;

/// A page-aligned, pre-faulted anonymous mapping of `frames * FRAME_SIZE` bytes.
///
/// The kernel may write into chunks that sit in an AF_XDP fill ring at any time, so this type
/// never hands out a slice over the whole region: only over one frame the caller owns.
pub struct Region {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the region is plain memory; ownership of its frames is tracked by `Frames`, and the
// raw pointer is only dereferenced for frames the caller owns.
unsafe impl Send for Region {}

impl Region {
    /// Map `frames` frames. Fails if the mapping fails (e.g. out of memory).
    pub fn new(frames: u32) -> io::Result<Region> {
        Region::map(frames as usize * FRAME_SIZE, true)
    }

    /// Map `len` bytes; `populate` faults every page in now (the UMEM), otherwise pages are
    /// faulted in on first touch (large buffers).
    pub fn map(len: usize, populate: bool) -> io::Result<Region> {
        if len == 0 {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "zero frames"));
        }
        // SAFETY: an anonymous private mapping with no address hint; the result is checked.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE
                    | libc::MAP_ANONYMOUS
                    | if populate {
                        libc::MAP_POPULATE
                    } else {
                        libc::MAP_NORESERVE
                    },
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(ptr.cast::<u8>()).ok_or_else(io::Error::last_os_error)?;
        Ok(Region { ptr, len })
    }

    /// Base address (for UMEM registration).
    pub fn base(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always false: a region has at least one frame.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The bytes `addr .. addr + len`. Panics if the range leaves the region.
    ///
    /// Callers must own the frame (see `Frames`); `&mut self` makes Rust's borrow rules hold
    /// between frames handed out by this process.
    #[inline]
    pub fn bytes_mut(&mut self, addr: u64, len: usize) -> &mut [u8] {
        let start = addr as usize;
        // One add with its carry and one compare (the hot path: every frame of every burst).
        assert!(
            start.checked_add(len).is_some_and(|end| end <= self.len),
            "frame outside region"
        );
        // SAFETY: the range was checked to lie inside the mapping, which lives as long as self;
        // `&mut self` prevents two live slices from this process, and the kernel only writes
        // chunks the caller does not own.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr().add(start), len) }
    }

    /// Copy `len` bytes from offset `src` to offset `dst` (distinct frames the caller owns).
    /// Panics if either range leaves the region or the ranges overlap.
    #[inline]
    pub fn copy(&mut self, src: u64, dst: u64, len: usize) {
        let (s, d) = (src as usize, dst as usize);
        assert!(
            s <= self.len && len <= self.len - s,
            "copy source outside region"
        );
        assert!(
            d <= self.len && len <= self.len - d,
            "copy destination outside region"
        );
        assert!(s + len <= d || d + len <= s, "overlapping frame copy");
        // SAFETY: both ranges lie inside the mapping and do not overlap (checked above).
        unsafe {
            std::ptr::copy_nonoverlapping(self.ptr.as_ptr().add(s), self.ptr.as_ptr().add(d), len);
        }
    }

    /// Read-only view of the `N` bytes from `addr`, as an array; None if they leave the
    /// region (see [`Region::get`]).
    #[inline(always)]
    pub fn head<const N: usize>(&self, addr: u64) -> Option<&[u8; N]> {
        self.get(addr, N)?.first_chunk()
    }

    /// Read-only view of `addr .. addr + len`; None if the range leaves the region (any `addr`
    /// at or above the region's length is refused, a large buffer's among them). One compare
    /// against a bound a caller's loop can keep in a register when `len` is a constant.
    #[inline(always)]
    pub fn get(&self, addr: u64, len: usize) -> Option<&[u8]> {
        let last = self.len.checked_sub(len)?;
        if addr > last as u64 {
            return None;
        }
        // SAFETY: `addr + len <= self.len` (checked above), so the range lies inside the
        // mapping; shared access, as in `bytes`.
        Some(unsafe { std::slice::from_raw_parts(self.ptr.as_ptr().add(addr as usize), len) })
    }

    /// Read-only view of `addr .. addr + len`. Panics if the range leaves the region.
    #[inline]
    pub fn bytes(&self, addr: u64, len: usize) -> &[u8] {
        let start = addr as usize;
        assert!(
            start.checked_add(len).is_some_and(|end| end <= self.len),
            "frame outside region"
        );
        // SAFETY: as in `bytes_mut`; shared access only.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr().add(start), len) }
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: ptr/len are exactly what mmap returned; no slice outlives self.
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::FRAME_SIZE;

    #[test]
    fn ranges_inside_the_mapping_are_handed_out() {
        let mut r = Region::new(2).unwrap();
        let end = 2 * FRAME_SIZE;
        assert_eq!(r.bytes_mut(0, end).len(), end);
        assert_eq!(r.bytes(end as u64 - 14, 14).len(), 14);
        assert_eq!(r.bytes(end as u64, 0).len(), 0);
    }

    #[test]
    fn a_head_is_handed_out_only_inside_the_mapping() {
        let mut r = Region::new(2).unwrap();
        let end = 2 * FRAME_SIZE as u64;
        r.bytes_mut(end - 38, 38).copy_from_slice(&[7; 38]);
        assert_eq!(r.head::<38>(end - 38), Some(&[7; 38]));
        assert_eq!(r.head::<38>(0).map(|h| h.len()), Some(38));
        for addr in [
            end - 37,
            end,
            u64::MAX,
            u64::MAX - 37,
            crate::packet::BIG_BASE,
        ] {
            assert!(r.head::<38>(addr).is_none(), "head::<38>({addr})");
        }
        assert!(
            r.head::<{ 2 * FRAME_SIZE + 1 }>(0).is_none(),
            "longer than the mapping"
        );
        assert_eq!(r.get(end - 38, 38), Some(&[7; 38][..]));
        assert_eq!(r.get(end, 0).map(<[u8]>::len), Some(0));
        for (addr, len) in [(end - 37, 38), (end + 1, 0), (u64::MAX, 2), (0, usize::MAX)] {
            assert!(r.get(addr, len).is_none(), "get({addr}, {len})");
        }
    }

    #[test]
    fn ranges_past_the_end_or_wrapping_panic() {
        let end = 2 * FRAME_SIZE;
        for (addr, len) in [
            (end as u64 - 13, 14),
            (end as u64 + 1, 0),
            (u64::MAX, 2),
            (8, usize::MAX),
        ] {
            let mut r = Region::new(2).unwrap();
            let mutable = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                r.bytes_mut(addr, len);
            }));
            assert!(mutable.is_err(), "bytes_mut({addr}, {len})");
            let shared = std::panic::catch_unwind(|| {
                let _ = Region::new(2).unwrap().bytes(addr, len).len();
            });
            assert!(shared.is_err(), "bytes({addr}, {len})");
        }
    }
}
