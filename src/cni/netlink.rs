//! The few rtnetlink requests the CNI plugin makes, on a `NETLINK_ROUTE` socket of the host's
//! namespace ([`Rtnl::open`]) or of a container's ([`Rtnl::open_in`]): create a veth pair
//! with its peer in another namespace, look links up, set them up / their MAC, delete them,
//! add an IPv4 address and a route (`dst/len` via a gateway out of a link; the default route
//! is one), and list addresses and routes.
//!
//! Contract: every request asks for an acknowledgement and waits for it (or for the end of a
//! dump), so when a call returns the kernel has applied it; a kernel error comes back as the
//! `io::Error` of its errno. Message building and parsing ([`Msg`], [`attrs`]) are IO-free.
//!
//! Why hand-written, as `port/link.rs`: eight message shapes are ~300 lines; the `rtnetlink`
//! crate brings an async runtime, and `netlink-packet-route` a large tree, for that. The
//! socket and the message and attribute walks are `port::rtnl`'s, shared with the link monitor.

use std::fs::File;
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use crate::port::rtnl::{self, NLMSG_HDRLEN as HDR, align};
use crate::port::sys::in_netns;

const RTM_NEWLINK: u16 = 16;
const RTM_DELLINK: u16 = 17;
const RTM_GETLINK: u16 = 18;
const RTM_NEWADDR: u16 = 20;
const RTM_GETADDR: u16 = 22;
const RTM_NEWROUTE: u16 = 24;
const RTM_GETROUTE: u16 = 26;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
const NLM_F_DUMP: u16 = 0x300;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;
const IFLA_ADDRESS: u16 = 1;
const IFLA_IFNAME: u16 = 3;
const IFLA_MTU: u16 = 4;
const IFLA_LINKINFO: u16 = 18;
const IFLA_NET_NS_FD: u16 = 28;
const IFLA_NUM_TX_QUEUES: u16 = 31;
const IFLA_NUM_RX_QUEUES: u16 = 32;
const IFLA_INFO_KIND: u16 = 1;
const IFLA_INFO_DATA: u16 = 2;
const VETH_INFO_PEER: u16 = 1;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;
const RTA_TABLE: u16 = 15;
const RT_TABLE_MAIN: u8 = 254;
const AF_INET: u8 = libc::AF_INET as u8;

/// One request being built: the header, a fixed family header, then attributes (nests are
/// opened with [`Msg::nest`] and closed with [`Msg::end`]).
pub struct Msg {
    buf: Vec<u8>,
}

impl Msg {
    /// A request of `kind` with `flags` (REQUEST and ACK are added) and family header `fixed`.
    pub fn new(kind: u16, flags: u16, fixed: &[u8]) -> Msg {
        let mut buf = vec![0u8; HDR];
        buf[4..6].copy_from_slice(&kind.to_ne_bytes());
        buf[6..8].copy_from_slice(&(flags | NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
        buf.extend_from_slice(fixed);
        buf.resize(align(buf.len()), 0);
        Msg { buf }
    }

    /// Append attribute `kind` with `data`.
    pub fn attr(&mut self, kind: u16, data: &[u8]) -> &mut Msg {
        let len = 4 + data.len();
        self.buf.extend_from_slice(&(len as u16).to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(data);
        self.buf.resize(align(self.buf.len()), 0);
        self
    }

    /// Open a nested attribute; returns where it starts, for [`Msg::end`].
    pub fn nest(&mut self, kind: u16) -> usize {
        let at = self.buf.len();
        self.attr(kind, &[]);
        at
    }

    /// Append raw bytes inside the current nest (a family header in a nest).
    pub fn raw(&mut self, data: &[u8]) -> &mut Msg {
        self.buf.extend_from_slice(data);
        self.buf.resize(align(self.buf.len()), 0);
        self
    }

    /// Close the nest opened at `at`.
    pub fn end(&mut self, at: usize) {
        let len = (self.buf.len() - at) as u16;
        self.buf[at..at + 2].copy_from_slice(&len.to_ne_bytes());
    }

    /// The finished message with sequence number `seq`.
    pub fn finish(mut self, seq: u32) -> Vec<u8> {
        let len = self.buf.len() as u32;
        self.buf[0..4].copy_from_slice(&len.to_ne_bytes());
        self.buf[8..12].copy_from_slice(&seq.to_ne_bytes());
        self.buf
    }
}

/// `struct ifinfomsg` for link `index` with `flags` under `change`.
pub fn ifinfo(index: u32, flags: u32, change: u32) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[4..8].copy_from_slice(&(index as i32).to_ne_bytes());
    b[8..12].copy_from_slice(&flags.to_ne_bytes());
    b[12..16].copy_from_slice(&change.to_ne_bytes());
    b
}

/// The attributes in `buf` (after a family header): (kind without flag bits, payload).
pub fn attrs(buf: &[u8]) -> Vec<(u16, &[u8])> {
    rtnl::attrs(buf).collect()
}

fn nul_name(name: &str) -> Vec<u8> {
    let mut v = name.as_bytes().to_vec();
    v.push(0);
    v
}

fn ipv4(data: &[u8]) -> Option<Ipv4Addr> {
    <[u8; 4]>::try_from(data).ok().map(Ipv4Addr::from)
}

/// A route as [`Rtnl::routes`] lists it: (destination and prefix length, gateway, output
/// ifindex).
pub type RouteEntry = ((Ipv4Addr, u8), Option<Ipv4Addr>, u32);

/// A `NETLINK_ROUTE` socket.
pub struct Rtnl {
    fd: OwnedFd,
    seq: u32,
}

impl Rtnl {
    /// A socket in this thread's network namespace.
    pub fn open() -> io::Result<Rtnl> {
        let fd = rtnl::socket(false)?;
        Ok(Rtnl { fd, seq: 1 })
    }

    /// A socket in the namespace `ns` (opened by a helper thread that enters it; the socket
    /// stays in that namespace after the thread ends).
    pub fn open_in(ns: &File) -> io::Result<Rtnl> {
        in_netns(ns.as_fd(), Rtnl::open)?
    }

    /// Send `m` and collect the replies until the acknowledgement or the end of a dump.
    fn request(&mut self, m: Msg) -> io::Result<Vec<(u16, Vec<u8>)>> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let msg = m.finish(seq);
        // SAFETY: sends `msg.len()` bytes from a live buffer; the kernel is the destination
        // (a netlink socket without a connect sends to the kernel, port 0).
        let n = unsafe { libc::send(self.fd.as_raw_fd(), msg.as_ptr().cast(), msg.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut out = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            // SAFETY: receives into a live buffer of its length.
            let n =
                unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            for m in rtnl::messages(&buf[..n as usize]) {
                if m.seq != seq {
                    continue;
                }
                let body = m.body;
                match m.kind {
                    NLMSG_DONE => return Ok(out),
                    NLMSG_ERROR => {
                        let err = i32::from_ne_bytes(body[..4].try_into().unwrap_or([0; 4]));
                        return if err == 0 {
                            Ok(out)
                        } else {
                            Err(io::Error::from_raw_os_error(-err))
                        };
                    }
                    _ => out.push((m.kind, body.to_vec())),
                }
            }
        }
    }

    /// The ifindex of link `name`, None when there is none.
    pub fn index(&mut self, name: &str) -> io::Result<Option<u32>> {
        Ok(self.link(name)?.map(|(i, _)| i))
    }

    /// Link `name`: its ifindex and MAC (`aa:bb:..`), None when there is none.
    pub fn link(&mut self, name: &str) -> io::Result<Option<(u32, String)>> {
        let mut m = Msg::new(RTM_GETLINK, 0, &ifinfo(0, 0, 0));
        m.attr(IFLA_IFNAME, &nul_name(name));
        let replies = match self.request(m) {
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => return Ok(None),
            r => r?,
        };
        Ok(replies.iter().find_map(|(_, body)| {
            let index = u32::from_ne_bytes(body.get(4..8)?.try_into().ok()?);
            let mac = attrs(body.get(16..)?)
                .into_iter()
                .find(|(k, _)| *k == IFLA_ADDRESS)
                .map(|(_, d)| {
                    d.iter()
                        .map(|b| format!("{b:02x}"))
                        .collect::<Vec<_>>()
                        .join(":")
                })
                .unwrap_or_default();
            Some((index, mac))
        }))
    }

    fn need(&mut self, name: &str) -> io::Result<u32> {
        self.index(name)?
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("no link named {name}")))
    }

    /// A veth pair: `name` here, `peer` in the namespace `peer_ns`, both with `mtu` and
    /// `queues` receive and transmit queues (one per uvs worker, so each polls one).
    pub fn add_veth(
        &mut self,
        name: &str,
        peer: &str,
        (mtu, queues): (u32, u32),
        peer_ns: &File,
    ) -> io::Result<()> {
        let queues = queues.max(1);
        let mut m = Msg::new(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, &ifinfo(0, 0, 0));
        m.attr(IFLA_IFNAME, &nul_name(name));
        m.attr(IFLA_MTU, &mtu.to_ne_bytes());
        m.attr(IFLA_NUM_TX_QUEUES, &queues.to_ne_bytes());
        m.attr(IFLA_NUM_RX_QUEUES, &queues.to_ne_bytes());
        let info = m.nest(IFLA_LINKINFO);
        m.attr(IFLA_INFO_KIND, b"veth");
        let data = m.nest(IFLA_INFO_DATA);
        let p = m.nest(VETH_INFO_PEER);
        m.raw(&ifinfo(0, 0, 0));
        m.attr(IFLA_IFNAME, &nul_name(peer));
        m.attr(IFLA_MTU, &mtu.to_ne_bytes());
        m.attr(IFLA_NUM_TX_QUEUES, &queues.to_ne_bytes());
        m.attr(IFLA_NUM_RX_QUEUES, &queues.to_ne_bytes());
        m.attr(IFLA_NET_NS_FD, &(peer_ns.as_raw_fd() as u32).to_ne_bytes());
        m.end(p);
        m.end(data);
        m.end(info);
        self.request(m).map(drop)
    }

    /// Set link `name` up, and its MAC when `mac` is given.
    pub fn set_up(&mut self, name: &str, mac: Option<[u8; 6]>) -> io::Result<()> {
        let i = self.need(name)?;
        let up = libc::IFF_UP as u32;
        let mut m = Msg::new(RTM_NEWLINK, 0, &ifinfo(i, up, up));
        if let Some(mac) = mac {
            m.attr(IFLA_ADDRESS, &mac);
        }
        self.request(m).map(drop)
    }

    /// Set link `name`'s MAC (the link down or up as it is).
    pub fn set_mac(&mut self, name: &str, mac: [u8; 6]) -> io::Result<()> {
        let i = self.need(name)?;
        let mut m = Msg::new(RTM_NEWLINK, 0, &ifinfo(i, 0, 0));
        m.attr(IFLA_ADDRESS, &mac);
        self.request(m).map(drop)
    }

    /// Delete link `name` (its veth peer goes with it).
    pub fn del(&mut self, name: &str) -> io::Result<()> {
        let i = self.need(name)?;
        self.request(Msg::new(RTM_DELLINK, 0, &ifinfo(i, 0, 0)))
            .map(drop)
    }

    /// Add `addr/len` to link `name`.
    pub fn add_addr(&mut self, name: &str, addr: Ipv4Addr, len: u8) -> io::Result<()> {
        let i = self.need(name)?;
        let mut fixed = [0u8; 8];
        fixed[0] = AF_INET;
        fixed[1] = len;
        fixed[4..8].copy_from_slice(&i.to_ne_bytes());
        let mut m = Msg::new(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, &fixed);
        m.attr(IFA_LOCAL, &addr.octets());
        m.attr(IFA_ADDRESS, &addr.octets());
        self.request(m).map(drop)
    }

    /// The IPv4 addresses of link `name` (empty when it does not exist).
    pub fn addrs(&mut self, name: &str) -> io::Result<Vec<(Ipv4Addr, u8)>> {
        let Some(i) = self.index(name)? else {
            return Ok(Vec::new());
        };
        let mut fixed = [0u8; 8];
        fixed[0] = AF_INET;
        let replies = self.request(Msg::new(RTM_GETADDR, NLM_F_DUMP, &fixed))?;
        Ok(replies
            .iter()
            .filter(|(_, b)| b.len() >= 8 && u32::from_ne_bytes(b[4..8].try_into().unwrap()) == i)
            .filter_map(|(_, b)| {
                let a = attrs(&b[8..]);
                let local = a.iter().find(|(k, _)| *k == IFA_LOCAL);
                let addr = local.or_else(|| a.iter().find(|(k, _)| *k == IFA_ADDRESS))?;
                Some((ipv4(addr.1)?, b[1]))
            })
            .collect())
    }

    /// A route to `dst/len` via `gw` out of link `name` (main table).
    pub fn add_route(
        &mut self,
        (dst, len): (Ipv4Addr, u8),
        gw: Ipv4Addr,
        name: &str,
    ) -> io::Result<()> {
        let i = self.need(name)?;
        // family, dst_len, src_len, tos, table, protocol (boot), scope (universe), type
        // (unicast), flags.
        let fixed = [AF_INET, len, 0, 0, RT_TABLE_MAIN, 3, 0, 1, 0, 0, 0, 0];
        let mut m = Msg::new(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL, &fixed);
        if len > 0 {
            m.attr(RTA_DST, &dst.octets());
        }
        m.attr(RTA_GATEWAY, &gw.octets());
        m.attr(RTA_OIF, &i.to_ne_bytes());
        self.request(m).map(drop)
    }

    /// A default route via `gw` out of link `name` (main table).
    pub fn add_default_route(&mut self, gw: Ipv4Addr, name: &str) -> io::Result<()> {
        self.add_route((Ipv4Addr::UNSPECIFIED, 0), gw, name)
    }

    /// The IPv4 routes of the main table: (destination, prefix length, gateway, output
    /// ifindex).
    pub fn routes(&mut self) -> io::Result<Vec<RouteEntry>> {
        let fixed = [AF_INET, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        let replies = self.request(Msg::new(RTM_GETROUTE, NLM_F_DUMP, &fixed))?;
        Ok(replies
            .iter()
            .filter(|(_, b)| b.len() >= 12)
            .filter_map(|(_, b)| {
                let a = attrs(&b[12..]);
                let find = |kind: u16| a.iter().find(|(k, _)| *k == kind).map(|(_, d)| *d);
                let table = find(RTA_TABLE)
                    .and_then(|d| d.first().copied())
                    .unwrap_or(b[4]);
                (table == RT_TABLE_MAIN).then_some(())?;
                let dst = find(RTA_DST)
                    .and_then(ipv4)
                    .unwrap_or(Ipv4Addr::UNSPECIFIED);
                let gw = find(RTA_GATEWAY).and_then(ipv4);
                let oif = find(RTA_OIF)
                    .and_then(|d| Some(u32::from_ne_bytes(d.try_into().ok()?)))
                    .unwrap_or(0);
                Some(((dst, b[1]), gw, oif))
            })
            .collect())
    }

    /// The IPv4 default routes of the main table: (gateway, output ifindex).
    pub fn default_routes(&mut self) -> io::Result<Vec<(Option<Ipv4Addr>, u32)>> {
        Ok(self
            .routes()?
            .into_iter()
            .filter(|((_, len), _, _)| *len == 0)
            .map(|(_, gw, oif)| (gw, oif))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A nested request has the lengths and alignment the kernel parses.
    #[test]
    fn nested_attributes_carry_their_lengths() {
        let mut m = Msg::new(RTM_NEWLINK, NLM_F_CREATE, &ifinfo(0, 0, 0));
        m.attr(IFLA_IFNAME, &nul_name("uv1"));
        let info = m.nest(IFLA_LINKINFO);
        m.attr(IFLA_INFO_KIND, b"veth");
        m.end(info);
        let b = m.finish(7);
        assert_eq!(
            u32::from_ne_bytes(b[0..4].try_into().unwrap()) as usize,
            b.len()
        );
        assert_eq!(u16::from_ne_bytes([b[4], b[5]]), RTM_NEWLINK);
        assert_eq!(
            u16::from_ne_bytes([b[6], b[7]]),
            NLM_F_CREATE | NLM_F_REQUEST | NLM_F_ACK
        );
        assert_eq!(u32::from_ne_bytes(b[8..12].try_into().unwrap()), 7);
        let a = attrs(&b[HDR + 16..]);
        assert_eq!(a.len(), 2);
        assert_eq!(a[0], (IFLA_IFNAME, &b"uv1\0"[..]));
        assert_eq!(a[1].0, IFLA_LINKINFO);
        let inner = attrs(a[1].1);
        assert_eq!(inner, vec![(IFLA_INFO_KIND, &b"veth"[..])]);
        assert_eq!(b.len() % 4, 0);
    }
}
