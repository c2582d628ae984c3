//! MPLS label stack entries (RFC 3032): label (20 bits), traffic class (3), bottom of stack
//! (1), TTL (8), one big-endian 32-bit word each.
//!
//! Contract: the functions read or write the top entry at the start of the slice they are
//! given and answer None / do nothing when it is shorter than an entry.

/// Bytes of one label stack entry.
pub const LSE_LEN: usize = 4;

/// The bottom-of-stack bit of an entry.
pub const BOTTOM: u32 = 0x100;

/// The top entry, if `b` holds one.
#[inline]
pub fn lse(b: &[u8]) -> Option<u32> {
    let e = b.get(..LSE_LEN)?;
    Some(u32::from_be_bytes([e[0], e[1], e[2], e[3]]))
}

/// Write `lse` as the top entry of `b` (nothing when `b` is too short).
#[inline]
pub fn set_lse(b: &mut [u8], lse: u32) {
    if let Some(e) = b.get_mut(..LSE_LEN) {
        e.copy_from_slice(&lse.to_be_bytes());
    }
}

/// An entry's TTL.
#[inline]
pub fn ttl(lse: u32) -> u8 {
    lse as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_read_back_and_short_slices_are_left_alone() {
        let mut b = [0u8; 6];
        set_lse(&mut b, (1000 << 12) | (5 << 9) | BOTTOM | 64);
        assert_eq!(&b[..4], &[0x00, 0x3e, 0x8b, 0x40]);
        let e = lse(&b).unwrap();
        assert_eq!(
            (e >> 12, (e >> 9) & 7, e & BOTTOM != 0, ttl(e)),
            (1000, 5, true, 64)
        );
        let mut short = [9u8; 3];
        set_lse(&mut short, 0);
        assert_eq!((short, lse(&short)), ([9; 3], None));
    }
}
