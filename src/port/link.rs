//! Link events: a non-blocking `NETLINK_ROUTE` socket subscribed to `RTNLGRP_LINK`, read by the
//! worker during housekeeping (never on the fast path), and the parser of the messages it gets.
//!
//! Contract:
//! - [`LinkMonitor::open`] binds the socket to the link multicast group of uvs's network
//!   namespace. Only devices in that namespace are seen: a TAP moved into a container shows up
//!   as an `RTM_DELLINK` here (its fd keeps working), so TAP liveness comes from its fd.
//! - [`LinkMonitor::read`] drains every pending message into [`LinkEvent`]s without blocking and
//!   returns `true` when the kernel dropped messages (ENOBUFS: the socket overflowed); the caller
//!   then rereads the state of every device it cares about ([`query`]).
//! - [`parse`] is IO-free: `RTM_NEWLINK`/`RTM_DELLINK` messages with their `IFLA_IFNAME` and
//!   `IFLA_MTU` attributes become events; everything else is skipped; a truncated message ends the
//!   buffer.
//!
//! Why hand-written: one socket, two message types and two attributes are ~150 lines; the
//! `rtnetlink`/`neli` crates would bring an async runtime or a large dependency tree for that.
//! The socket and the message and attribute walks are [`super::rtnl`]'s, shared with the CNI
//! plugin.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use super::rtnl;

/// `RTM_NEWLINK`.
const RTM_NEWLINK: u16 = 16;
/// `RTM_DELLINK`.
const RTM_DELLINK: u16 = 17;
/// `RTMGRP_LINK` (the bit of `RTNLGRP_LINK`).
const RTMGRP_LINK: u32 = 1;
const IFLA_MTU: u16 = 4;
const IFLA_IFNAME: u16 = 3;
/// `sizeof(struct ifinfomsg)`.
const IFINFO_LEN: usize = 16;
/// Receive buffer asked for: a burst of 200 veths being created is a few hundred messages.
const RCVBUF: libc::c_int = 4 << 20;

/// What happened to a device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkChange {
    /// It exists (new, or changed): admin state and MTU.
    New {
        /// `IFF_UP` is set.
        up: bool,
        /// MTU (0 if the message did not carry it).
        mtu: u32,
    },
    /// It was deleted (or moved to another namespace).
    Del,
}

/// One link event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkEvent {
    /// The device's ifindex.
    pub ifindex: u32,
    /// The device's name.
    pub name: String,
    /// What happened.
    pub change: LinkChange,
}

/// Parse a buffer of netlink messages; see the module documentation.
pub fn parse(buf: &[u8], out: &mut Vec<LinkEvent>) {
    for msg in rtnl::messages(buf) {
        let kind = msg.kind;
        if (kind == RTM_NEWLINK || kind == RTM_DELLINK) && msg.body.len() >= IFINFO_LEN {
            let m = msg.body;
            let ifindex = i32::from_ne_bytes(m[4..8].try_into().expect("4")) as u32;
            let flags = u32::from_ne_bytes(m[8..12].try_into().expect("4"));
            let (name, mtu) = name_and_mtu(&m[IFINFO_LEN..]);
            if let Some(name) = name {
                let change = if kind == RTM_DELLINK {
                    LinkChange::Del
                } else {
                    LinkChange::New {
                        up: flags & libc::IFF_UP as u32 != 0,
                        mtu,
                    }
                };
                out.push(LinkEvent {
                    ifindex,
                    name,
                    change,
                });
            }
        }
    }
}

/// `IFLA_IFNAME` and `IFLA_MTU` from a list of `rtattr`s.
fn name_and_mtu(a: &[u8]) -> (Option<String>, u32) {
    let (mut name, mut mtu) = (None, 0);
    for (ty, v) in rtnl::attrs(a) {
        match ty {
            IFLA_IFNAME => {
                let end = v.iter().position(|&b| b == 0).unwrap_or(v.len());
                name = Some(String::from_utf8_lossy(&v[..end]).into_owned());
            }
            IFLA_MTU if v.len() >= 4 => mtu = u32::from_ne_bytes(v[..4].try_into().expect("4")),
            _ => {}
        }
    }
    (name, mtu)
}

/// The netlink socket. See the module documentation.
pub struct LinkMonitor {
    fd: OwnedFd,
    buf: Vec<u8>,
}

impl LinkMonitor {
    /// Open and bind the socket (no privilege needed).
    pub fn open() -> io::Result<LinkMonitor> {
        let fd = rtnl::socket(true)?;
        // SAFETY: SO_RCVBUF reads one c_int from a live local; failure only keeps the default.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUF,
                (&RCVBUF as *const libc::c_int).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
        // SAFETY: sockaddr_nl is plain integers; all-zero is valid.
        let mut sa: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        sa.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        sa.nl_groups = RTMGRP_LINK;
        // SAFETY: `sa` is a live sockaddr_nl and its exact size is passed.
        let r = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&sa as *const libc::sockaddr_nl).cast(),
                size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(LinkMonitor {
            fd,
            buf: vec![0; 64 * 1024],
        })
    }

    /// The descriptor to poll.
    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Drain pending messages into `out`; true if the kernel dropped some (resync needed).
    pub fn read(&mut self, out: &mut Vec<LinkEvent>) -> bool {
        let mut overflow = false;
        loop {
            // SAFETY: the kernel writes at most `buf.len()` bytes into our live buffer.
            let n = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    self.buf.as_mut_ptr().cast(),
                    self.buf.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            if n < 0 {
                match io::Error::last_os_error().raw_os_error() {
                    Some(libc::ENOBUFS) => {
                        overflow = true;
                        continue;
                    }
                    Some(libc::EINTR) => continue,
                    _ => return overflow,
                }
            }
            if n == 0 {
                return overflow;
            }
            parse(&self.buf[..n as usize], out);
        }
    }
}

/// The current state of `name` in uvs's namespace from sysfs: (ifindex, up, mtu), None if there
/// is no such device.
pub fn query(name: &str) -> Option<(u32, bool, u32)> {
    if name.is_empty() || name.contains('/') || name.starts_with('.') {
        return None;
    }
    let read = |f: &str| std::fs::read_to_string(format!("/sys/class/net/{name}/{f}")).ok();
    let ifindex = read("ifindex")?.trim().parse().ok()?;
    let flags = read("flags")?;
    let flags = u32::from_str_radix(flags.trim().trim_start_matches("0x"), 16).ok()?;
    let mtu = read("mtu")?.trim().parse().ok()?;
    Some((ifindex, flags & libc::IFF_UP as u32 != 0, mtu))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::port::rtnl::NLMSG_HDRLEN;

    /// One netlink message: header, ifinfomsg, attributes.
    fn msg(kind: u16, ifindex: i32, flags: u32, attrs: &[(u16, &[u8])]) -> Vec<u8> {
        let mut body = vec![0u8; IFINFO_LEN];
        body[4..8].copy_from_slice(&ifindex.to_ne_bytes());
        body[8..12].copy_from_slice(&flags.to_ne_bytes());
        for (ty, v) in attrs {
            let len = 4 + v.len();
            body.extend_from_slice(&(len as u16).to_ne_bytes());
            body.extend_from_slice(&ty.to_ne_bytes());
            body.extend_from_slice(v);
            body.resize((body.len() + 3) & !3, 0);
        }
        let mut m = vec![0u8; NLMSG_HDRLEN];
        m[0..4].copy_from_slice(&((NLMSG_HDRLEN + body.len()) as u32).to_ne_bytes());
        m[4..6].copy_from_slice(&kind.to_ne_bytes());
        m.extend_from_slice(&body);
        m
    }

    #[test]
    fn new_and_del_links_are_parsed() {
        let mut buf = msg(
            RTM_NEWLINK,
            7,
            libc::IFF_UP as u32 | 0x1000,
            &[
                (IFLA_MTU, &1400u32.to_ne_bytes()),
                (IFLA_IFNAME, b"veth-a\0"),
            ],
        );
        buf.extend(msg(RTM_NEWLINK, 8, 0, &[(IFLA_IFNAME, b"b\0")]));
        buf.extend(msg(20, 9, 0, &[(IFLA_IFNAME, b"addr\0")]));
        buf.extend(msg(RTM_DELLINK, 7, 0, &[(IFLA_IFNAME, b"veth-a\0")]));
        let mut out = Vec::new();
        parse(&buf, &mut out);
        assert_eq!(
            out,
            vec![
                LinkEvent {
                    ifindex: 7,
                    name: "veth-a".into(),
                    change: LinkChange::New {
                        up: true,
                        mtu: 1400
                    }
                },
                LinkEvent {
                    ifindex: 8,
                    name: "b".into(),
                    change: LinkChange::New { up: false, mtu: 0 }
                },
                LinkEvent {
                    ifindex: 7,
                    name: "veth-a".into(),
                    change: LinkChange::Del
                },
            ]
        );
    }

    #[test]
    fn truncated_messages_stop_the_parse() {
        let m = msg(RTM_NEWLINK, 7, 1, &[(IFLA_IFNAME, b"x\0")]);
        let mut out = Vec::new();
        parse(&m[..m.len() - 1], &mut out);
        assert!(out.is_empty());
        // A bogus attribute length ends the attributes, not the program.
        let mut m = msg(RTM_NEWLINK, 7, 1, &[(IFLA_IFNAME, b"x\0")]);
        let at = NLMSG_HDRLEN + IFINFO_LEN;
        m[at..at + 2].copy_from_slice(&200u16.to_ne_bytes());
        parse(&m, &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn query_reads_loopback() {
        let (idx, _up, mtu) = query("lo").expect("lo exists");
        assert_eq!(idx, 1);
        assert_eq!(mtu, 65536);
        assert!(query("no/such").is_none());
    }
}
