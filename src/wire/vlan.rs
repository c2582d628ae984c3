//! 802.1Q VLAN tags: reading the tag after the MAC addresses, pushing and popping it in place.
//!
//! Push and pop move only the 12 bytes of MAC addresses, using the frame's headroom: the payload
//! never moves.

/// Bytes of one 802.1Q tag (TPID + TCI).
pub const TAG_LEN: usize = 4;

/// A VLAN id is 12 bits; 0 means "no VLAN / priority tag", 4095 is reserved.
pub const MAX_VID: u16 = 4094;

/// The TCI of a tagged frame (`frame[14..16]`), if `frame[12..14]` is the 802.1Q TPID.
#[inline]
pub fn tci(frame: &[u8]) -> Option<u16> {
    if frame.len() >= 18 && frame[12] == 0x81 && frame[13] == 0x00 {
        Some(u16::from_be_bytes([frame[14], frame[15]]))
    } else {
        None
    }
}

/// Set the TCI of a tagged frame's tag (`frame[14..16]`). The caller checked that the frame is
/// tagged.
#[inline]
pub fn set_tci(frame: &mut [u8], tci: u16) {
    frame[14..16].copy_from_slice(&tci.to_be_bytes());
}

/// Set the VLAN id of a tagged frame's tag, keeping its priority and DEI bits. The caller
/// checked that the frame is tagged.
#[inline]
pub fn set_vid(frame: &mut [u8], vid: u16) {
    let tci = (u16::from_be_bytes([frame[14], frame[15]]) & 0xf000) | (vid & 0x0fff);
    set_tci(frame, tci);
}

/// Remove the tag from `chunk[start..start+len]` by moving the MAC addresses 4 bytes forward.
/// Returns the new start. The caller checked that the frame is tagged.
#[inline]
pub fn pop(chunk: &mut [u8], start: usize) -> usize {
    chunk.copy_within(start..start + 12, start + TAG_LEN);
    start + TAG_LEN
}

/// Insert a tag with `tci` in front of the EtherType of `chunk[start..]` by moving the MAC
/// addresses 4 bytes back into the headroom. Returns the new start. Needs `start >= 4`.
#[inline]
pub fn push(chunk: &mut [u8], start: usize, tci: u16) -> usize {
    let n = start - TAG_LEN;
    chunk.copy_within(start..start + 12, n);
    chunk[n + 12] = 0x81;
    chunk[n + 13] = 0x00;
    chunk[n + 14..n + 16].copy_from_slice(&tci.to_be_bytes());
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_vid_keeps_the_priority() {
        let mut f = [
            1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 0x81, 0x00, 0xb0, 0x00, 0x08, 0x00,
        ];
        set_vid(&mut f, 10);
        assert_eq!(tci(&f), Some(0xb00a));
        set_vid(&mut f, 0xf123);
        assert_eq!(tci(&f), Some(0xb123), "only 12 bits of id");
    }

    const UNTAGGED: [u8; 16] = [1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 0x08, 0x00, 0x45, 0x00];
    const TAGGED: [u8; 20] = [
        1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 0x81, 0x00, 0x20, 0x0a, 0x08, 0x00, 0x45, 0x00,
    ];

    #[test]
    fn test_deconstruct() {
        assert_eq!(tci(&TAGGED), Some(0x200a));
        assert_eq!(tci(&UNTAGGED), None);
        assert_eq!(tci(&TAGGED[..17]), None);
    }

    #[test]
    fn test_construct_push_pop() {
        let mut chunk = [0u8; 32];
        chunk[8..24].copy_from_slice(&UNTAGGED);
        let s = push(&mut chunk, 8, 0x200a);
        assert_eq!(s, 4);
        assert_eq!(&chunk[4..24], &TAGGED);
        let s = pop(&mut chunk, s);
        assert_eq!(s, 8);
        assert_eq!(&chunk[8..24], &UNTAGGED);
    }
}
