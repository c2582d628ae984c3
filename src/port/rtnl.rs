//! `NETLINK_ROUTE` basics shared by the link monitor ([`super::link`]) and the CNI plugin's
//! requests (`cni::netlink`): opening the socket, and walking the messages and attributes the
//! kernel sends.
//!
//! Contract:
//! - [`socket`] opens a close-on-exec `NETLINK_ROUTE` socket in the calling thread's network
//!   namespace (`SOCK_NONBLOCK` when asked); binding and options are the caller's.
//! - [`messages`] and [`attrs`] are IO-free: they yield what a buffer holds, in order, and stop
//!   at the first length that is too short or runs past the buffer (a truncated message or
//!   attribute ends the walk; nothing panics).
//! - [`align`] is the 4-byte alignment of messages and attributes (`NLMSG_ALIGN`, `RTA_ALIGN`).

use std::io;
use std::os::fd::{FromRawFd, OwnedFd};

/// `sizeof(struct nlmsghdr)`.
pub const NLMSG_HDRLEN: usize = 16;

/// `n` rounded up to the 4-byte alignment of netlink messages and attributes.
pub fn align(n: usize) -> usize {
    (n + 3) & !3
}

/// A `NETLINK_ROUTE` socket (`SOCK_RAW | SOCK_CLOEXEC`, plus `SOCK_NONBLOCK` when `nonblock`).
pub fn socket(nonblock: bool) -> io::Result<OwnedFd> {
    let flags = if nonblock { libc::SOCK_NONBLOCK } else { 0 };
    // SAFETY: plain socket(2) call; the result is checked before it is owned.
    let raw = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC | flags,
            libc::NETLINK_ROUTE,
        )
    };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// One netlink message of a buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Message<'a> {
    /// `nlmsg_type`.
    pub kind: u16,
    /// `nlmsg_seq`.
    pub seq: u32,
    /// What follows the header (family header, then attributes).
    pub body: &'a [u8],
}

/// The messages of `buf`, in order (see the module documentation).
pub fn messages(buf: &[u8]) -> impl Iterator<Item = Message<'_>> {
    let mut rest = buf;
    std::iter::from_fn(move || {
        if rest.len() < NLMSG_HDRLEN {
            return None;
        }
        let len = u32::from_ne_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        if len < NLMSG_HDRLEN || len > rest.len() {
            return None;
        }
        let m = Message {
            kind: u16::from_ne_bytes([rest[4], rest[5]]),
            seq: u32::from_ne_bytes([rest[8], rest[9], rest[10], rest[11]]),
            body: &rest[NLMSG_HDRLEN..len],
        };
        rest = &rest[align(len).min(rest.len())..];
        Some(m)
    })
}

/// The attributes (`struct rtattr`) of `buf`, which starts after a family header: (type
/// without the nested and byte-order flag bits, payload), in order.
pub fn attrs(buf: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    let mut rest = buf;
    std::iter::from_fn(move || {
        if rest.len() < 4 {
            return None;
        }
        let len = u16::from_ne_bytes([rest[0], rest[1]]) as usize;
        let kind = u16::from_ne_bytes([rest[2], rest[3]]) & 0x3fff;
        if len < 4 || len > rest.len() {
            return None;
        }
        let payload = &rest[4..len];
        rest = &rest[align(len).min(rest.len())..];
        Some((kind, payload))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(kind: u16, v: &[u8]) -> Vec<u8> {
        let mut a = ((4 + v.len()) as u16).to_ne_bytes().to_vec();
        a.extend_from_slice(&kind.to_ne_bytes());
        a.extend_from_slice(v);
        a.resize(align(a.len()), 0);
        a
    }

    fn message(kind: u16, seq: u32, body: &[u8]) -> Vec<u8> {
        let mut m = vec![0u8; NLMSG_HDRLEN];
        m[0..4].copy_from_slice(&((NLMSG_HDRLEN + body.len()) as u32).to_ne_bytes());
        m[4..6].copy_from_slice(&kind.to_ne_bytes());
        m[8..12].copy_from_slice(&seq.to_ne_bytes());
        m.extend_from_slice(body);
        m.resize(align(m.len()), 0);
        m
    }

    #[test]
    fn attributes_in_order_flags_masked_truncation_ends() {
        let mut b = attr(3, b"eth0\0");
        b.extend(attr(0x8000 | 18, &attr(1, b"veth")));
        b.extend(attr(4, &1500u32.to_ne_bytes()));
        let got: Vec<_> = attrs(&b).collect();
        assert_eq!(got.len(), 3);
        assert_eq!(got[0], (3, &b"eth0\0"[..]));
        assert_eq!(got[1].0, 18);
        assert_eq!(attrs(got[1].1).collect::<Vec<_>>(), [(1, &b"veth"[..])]);
        assert_eq!(got[2], (4, &1500u32.to_ne_bytes()[..]));
        // A length past the end stops the walk; so does one shorter than the header.
        let mut bad = b.clone();
        bad[0..2].copy_from_slice(&200u16.to_ne_bytes());
        assert_eq!(attrs(&bad).count(), 0);
        bad[0..2].copy_from_slice(&2u16.to_ne_bytes());
        assert_eq!(attrs(&bad).count(), 0);
        assert_eq!(attrs(&b[..b.len() - 1]).count(), 2);
    }

    #[test]
    fn messages_in_order_truncation_ends() {
        let mut b = message(16, 7, &[1, 2, 3]);
        b.extend(message(3, 8, &[]));
        let got: Vec<_> = messages(&b).collect();
        assert_eq!(
            got,
            [
                Message {
                    kind: 16,
                    seq: 7,
                    body: &[1, 2, 3]
                },
                Message {
                    kind: 3,
                    seq: 8,
                    body: &[]
                }
            ]
        );
        assert_eq!(messages(&b[..b.len() - 1]).count(), 1);
        assert_eq!(messages(&b[..10]).count(), 0);
    }

    #[test]
    fn sockets_open() {
        assert!(socket(true).is_ok());
        assert!(socket(false).is_ok());
    }
}
