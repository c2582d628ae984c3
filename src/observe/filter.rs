//! Capture filters: a small subset of tcpdump's expression language, parsed once in the control
//! plane and evaluated by the worker on each frame of a captured port.
//!
//! Grammar (case-sensitive keywords, as tcpdump):
//! ```text
//! expr    := term (("or" | "||") term)*
//! term    := factor (("and" | "&&") factor)*
//! factor  := ("not" | "!") factor | "(" expr ")" | prim
//! prim    := [src|dst] host A.B.C.D | [src|dst] net A.B.C.D/LEN | [src|dst] port N
//!          | (tcp|udp) [src|dst] port N
//!          | proto (icmp|tcp|udp|N) | icmp | tcp | udp | ip | arp | vlan [N]
//! ```
//! Frames are matched on their outer headers, through at most one 802.1Q/802.1ad tag (`vlan`
//! matches the tag whatever comes before it in the expression). `host` and `net` also match the
//! sender and target addresses of ARP packets, as tcpdump's do; `net A/LEN` with bits set past
//! LEN is refused, as tcpdump refuses it. Ports match TCP and UDP (first
//! fragments only). An empty expression matches every frame.
//!
//! Evaluation never panics on any byte string (short frames simply do not match).

use std::net::Ipv4Addr;

/// Which address or port of a packet a primitive looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The source.
    Src,
    /// The destination.
    Dst,
    /// Either.
    Any,
}

/// One test on a frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Prim {
    /// An IPv4 (or ARP) address.
    Host(Side, u32),
    /// An IPv4 (or ARP) prefix: address and mask (no bits set past the mask).
    Net(Side, u32, u32),
    /// A TCP or UDP port.
    Port(Side, u16),
    /// An IPv4 protocol number.
    Proto(u8),
    /// Any IPv4 packet.
    Ip,
    /// Any ARP packet.
    Arp,
    /// A VLAN tag (any, or this VID).
    Vlan(Option<u16>),
}

/// A parsed filter expression.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Filter {
    /// Every frame (the empty expression).
    #[default]
    All,
    /// One primitive.
    Prim(Prim),
    /// Negation.
    Not(Box<Filter>),
    /// Both.
    And(Box<Filter>, Box<Filter>),
    /// Either.
    Or(Box<Filter>, Box<Filter>),
}

/// Why an expression was refused; the message names the offending word.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("filter: {0}")]
pub struct FilterError(String);

impl FilterError {
    /// What is wrong, without the `filter: ` the message starts with.
    pub fn problem(&self) -> &str {
        &self.0
    }
}

/// The header fields a filter looks at, read once per frame.
#[derive(Debug, Default)]
struct View {
    vlan: Option<u16>,
    ip: Option<IpView>,
    arp: Option<(u32, u32)>,
}

#[derive(Debug)]
struct IpView {
    src: u32,
    dst: u32,
    proto: u8,
    ports: Option<(u16, u16)>,
}

impl View {
    fn of(f: &[u8]) -> View {
        let mut v = View::default();
        let Some(mut ethertype) = be16(f, 12) else {
            return v;
        };
        let mut off = 14;
        if ethertype == 0x8100 || ethertype == 0x88a8 {
            let Some(tci) = be16(f, 14) else { return v };
            v.vlan = Some(tci & 0x0fff);
            let Some(t) = be16(f, 16) else { return v };
            ethertype = t;
            off = 18;
        }
        match ethertype {
            0x0800 => v.ip = ip_view(f.get(off..).unwrap_or_default()),
            0x0806 => {
                let a = f.get(off..).unwrap_or_default();
                if let (Some(s), Some(t)) = (be32(a, 14), be32(a, 24)) {
                    v.arp = Some((s, t));
                }
            }
            _ => {}
        }
        v
    }
}

fn ip_view(p: &[u8]) -> Option<IpView> {
    let ihl = (*p.first()? & 0x0f) as usize * 4;
    if *p.first()? >> 4 != 4 || ihl < 20 {
        return None;
    }
    let proto = *p.get(9)?;
    let frag_off = be16(p, 6)? & 0x1fff;
    let ports = match proto {
        6 | 17 if frag_off == 0 => Some((be16(p, ihl)?, be16(p, ihl + 2)?)),
        _ => None,
    };
    Some(IpView {
        src: be32(p, 12)?,
        dst: be32(p, 16)?,
        proto,
        ports,
    })
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn side_matches(side: Side, src: u32, dst: u32, f: impl Fn(u32) -> bool) -> bool {
    match side {
        Side::Src => f(src),
        Side::Dst => f(dst),
        Side::Any => f(src) || f(dst),
    }
}

impl View {
    /// The IPv4 source and destination, or ARP's sender and target addresses.
    fn addrs(&self) -> Option<(u32, u32)> {
        match (&self.ip, self.arp) {
            (Some(ip), _) => Some((ip.src, ip.dst)),
            (None, arp) => arp,
        }
    }
}

impl Prim {
    fn eval(&self, v: &View) -> bool {
        match *self {
            Prim::Host(side, a) => v
                .addrs()
                .is_some_and(|(s, d)| side_matches(side, s, d, |x| x == a)),
            Prim::Net(side, a, m) => v
                .addrs()
                .is_some_and(|(s, d)| side_matches(side, s, d, |x| x & m == a)),
            Prim::Port(side, p) => {
                v.ip.as_ref()
                    .and_then(|ip| ip.ports)
                    .is_some_and(|(s, d)| side_matches(side, s as u32, d as u32, |x| x == p as u32))
            }
            Prim::Proto(n) => v.ip.as_ref().is_some_and(|ip| ip.proto == n),
            Prim::Ip => v.ip.is_some(),
            Prim::Arp => v.arp.is_some(),
            Prim::Vlan(None) => v.vlan.is_some(),
            Prim::Vlan(Some(id)) => v.vlan == Some(id),
        }
    }
}

impl Filter {
    /// Parse an expression (see the module documentation).
    pub fn parse(text: &str) -> Result<Filter, FilterError> {
        let tokens = tokenize(text);
        if tokens.is_empty() {
            return Ok(Filter::All);
        }
        let mut p = Parser { t: &tokens, i: 0 };
        let f = p.expr()?;
        match p.t.get(p.i) {
            None => Ok(f),
            Some(w) => Err(FilterError(format!("unexpected '{w}'"))),
        }
    }

    /// True when the frame `f` (Ethernet, from its first byte) matches.
    pub fn matches(&self, f: &[u8]) -> bool {
        match self {
            Filter::All => true,
            _ => self.eval(&View::of(f)),
        }
    }

    fn eval(&self, v: &View) -> bool {
        match self {
            Filter::All => true,
            Filter::Prim(p) => p.eval(v),
            Filter::Not(a) => !a.eval(v),
            Filter::And(a, b) => a.eval(v) && b.eval(v),
            Filter::Or(a, b) => a.eval(v) || b.eval(v),
        }
    }
}

fn tokenize(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let spaced = text.replace('(', " ( ").replace(')', " ) ");
    for w in spaced.split_whitespace() {
        // `!tcp` as well as `! tcp`.
        if let Some(rest) = w.strip_prefix('!').filter(|r| !r.is_empty()) {
            out.push("!".to_string());
            out.push(rest.to_string());
        } else {
            out.push(w.to_string());
        }
    }
    out
}

struct Parser<'a> {
    t: &'a [String],
    i: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<&str> {
        self.t.get(self.i).map(String::as_str)
    }

    fn next(&mut self, what: &str) -> Result<&str, FilterError> {
        let w = self
            .t
            .get(self.i)
            .ok_or_else(|| FilterError(format!("{what} expected at the end")))?;
        self.i += 1;
        Ok(w)
    }

    fn expr(&mut self) -> Result<Filter, FilterError> {
        let mut f = self.term()?;
        while matches!(self.peek(), Some("or" | "||")) {
            self.i += 1;
            f = Filter::Or(Box::new(f), Box::new(self.term()?));
        }
        Ok(f)
    }

    fn term(&mut self) -> Result<Filter, FilterError> {
        let mut f = self.factor()?;
        while matches!(self.peek(), Some("and" | "&&")) {
            self.i += 1;
            f = Filter::And(Box::new(f), Box::new(self.factor()?));
        }
        Ok(f)
    }

    fn factor(&mut self) -> Result<Filter, FilterError> {
        match self.peek() {
            Some("not" | "!") => {
                self.i += 1;
                Ok(Filter::Not(Box::new(self.factor()?)))
            }
            Some("(") => {
                self.i += 1;
                let f = self.expr()?;
                match self.next("')'")? {
                    ")" => Ok(f),
                    w => Err(FilterError(format!("')' expected, not '{w}'"))),
                }
            }
            // tcpdump's protocol qualifier: `udp port 53`, `tcp dst port 80`.
            Some(w @ ("tcp" | "udp"))
                if matches!(
                    self.t.get(self.i + 1).map(String::as_str),
                    Some("port" | "src" | "dst")
                ) =>
            {
                let proto = Prim::Proto(if w == "tcp" { 6 } else { 17 });
                self.i += 1;
                match self.prim()? {
                    p @ Prim::Port(..) => Ok(Filter::And(
                        Box::new(Filter::Prim(proto)),
                        Box::new(Filter::Prim(p)),
                    )),
                    _ => Err(FilterError("only 'port' may follow tcp/udp".into())),
                }
            }
            _ => Ok(Filter::Prim(self.prim()?)),
        }
    }

    fn prim(&mut self) -> Result<Prim, FilterError> {
        let mut w = self.next("a primitive")?.to_string();
        let side = match w.as_str() {
            "src" => Side::Src,
            "dst" => Side::Dst,
            _ => Side::Any,
        };
        if side != Side::Any {
            w = self.next("host, net or port")?.to_string();
        }
        match w.as_str() {
            "host" => Ok(Prim::Host(side, self.addr()?)),
            "net" => {
                let v = self.next("A.B.C.D/LEN")?.to_string();
                let (a, len) = v.split_once('/').unwrap_or((&v, "32"));
                let len: u32 =
                    len.parse().ok().filter(|l| *l <= 32).ok_or_else(|| {
                        FilterError(format!("net: '{v}' has a bad prefix length"))
                    })?;
                let a: Ipv4Addr = a
                    .parse()
                    .map_err(|_| FilterError(format!("net: '{v}' is not A.B.C.D/LEN")))?;
                let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
                if u32::from(a) & !mask != 0 {
                    // tcpdump's words.
                    return Err(FilterError(format!("net: non-network bits set in '{v}'")));
                }
                Ok(Prim::Net(side, u32::from(a), mask))
            }
            "port" => {
                let v = self.next("a port number")?;
                let p = v
                    .parse()
                    .map_err(|_| FilterError(format!("port: '{v}' is not a port number")))?;
                Ok(Prim::Port(side, p))
            }
            _ if side != Side::Any => Err(FilterError(format!(
                "'{w}' after src/dst: host, net or port expected"
            ))),
            "proto" => {
                let v = self.next("a protocol")?.to_string();
                proto_of(&v)
                    .map(Prim::Proto)
                    .ok_or_else(|| FilterError(format!("proto: '{v}' (icmp, tcp, udp or 0-255)")))
            }
            "ip" => Ok(Prim::Ip),
            "arp" => Ok(Prim::Arp),
            "vlan" => match self.peek().and_then(|v| v.parse::<u16>().ok()) {
                Some(id) if id <= 4095 => {
                    self.i += 1;
                    Ok(Prim::Vlan(Some(id)))
                }
                Some(id) => Err(FilterError(format!("vlan: {id} is not a VLAN id (0-4095)"))),
                None => Ok(Prim::Vlan(None)),
            },
            p => match proto_of(p).filter(|_| p.parse::<u8>().is_err()) {
                Some(n) => Ok(Prim::Proto(n)),
                None => Err(FilterError(format!("unknown primitive '{p}'"))),
            },
        }
    }

    fn addr(&mut self) -> Result<u32, FilterError> {
        let v = self.next("an IPv4 address")?;
        v.parse::<Ipv4Addr>()
            .map(u32::from)
            .map_err(|_| FilterError(format!("host: '{v}' is not an IPv4 address")))
    }
}

fn proto_of(w: &str) -> Option<u8> {
    match w {
        "icmp" => Some(1),
        "tcp" => Some(6),
        "udp" => Some(17),
        n => n.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ethernet + optional VLAN + IPv4 + 4 bytes of L4 ports.
    fn ipv4(
        vlan: Option<u16>,
        src: [u8; 4],
        dst: [u8; 4],
        proto: u8,
        ports: (u16, u16),
    ) -> Vec<u8> {
        let mut f = vec![0u8; 12];
        if let Some(v) = vlan {
            f.extend_from_slice(&[0x81, 0x00]);
            f.extend_from_slice(&v.to_be_bytes());
        }
        f.extend_from_slice(&[0x08, 0x00]);
        let mut ip = vec![0x45, 0, 0, 24, 0, 0, 0x40, 0, 64, proto, 0, 0];
        ip.extend_from_slice(&src);
        ip.extend_from_slice(&dst);
        ip.extend_from_slice(&ports.0.to_be_bytes());
        ip.extend_from_slice(&ports.1.to_be_bytes());
        f.extend_from_slice(&ip);
        f
    }

    fn arp(spa: [u8; 4], tpa: [u8; 4]) -> Vec<u8> {
        let mut f = vec![0u8; 12];
        f.extend_from_slice(&[0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 1]);
        f.extend_from_slice(&[0; 6]);
        f.extend_from_slice(&spa);
        f.extend_from_slice(&[0; 6]);
        f.extend_from_slice(&tpa);
        f
    }

    fn m(expr: &str, f: &[u8]) -> bool {
        Filter::parse(expr).unwrap().matches(f)
    }

    #[test]
    fn primitives_match_their_fields() {
        let udp = ipv4(None, [10, 0, 0, 1], [10, 0, 1, 2], 17, (5000, 53));
        assert!(m("", &udp));
        assert!(m("host 10.0.0.1", &udp));
        assert!(m("src host 10.0.0.1", &udp));
        assert!(!m("dst host 10.0.0.1", &udp));
        assert!(m("net 10.0.1.0/24", &udp));
        assert!(!m("src net 10.0.1.0/24", &udp));
        assert!(m("port 53 and udp", &udp));
        assert!(m("udp port 53", &udp));
        assert!(m("udp dst port 53", &udp));
        assert!(!m("tcp port 53", &udp));
        assert!(!m("udp src port 53", &udp));
        assert!(m("dst port 53", &udp));
        assert!(!m("src port 53", &udp));
        assert!(!m("tcp or icmp", &udp));
        assert!(m("proto 17 and ip", &udp));
        assert!(!m("vlan", &udp));
        assert!(m("not vlan", &udp));
        let tagged = ipv4(Some(42), [10, 0, 0, 1], [10, 0, 1, 2], 1, (0, 0));
        assert!(m("vlan 42 and icmp", &tagged));
        assert!(!m("vlan 7", &tagged));
        assert!(!m("port 0", &tagged), "ICMP has no ports");
        let a = arp([10, 0, 0, 9], [10, 0, 0, 1]);
        assert!(m("arp and host 10.0.0.9", &a));
        assert!(!m("ip", &a));
    }

    /// `net` is tcpdump's: it matches ARP's sender and target addresses as `host` does, and
    /// refuses an address with host bits set (uvs matched IPv4 only and masked the bits
    /// silently: found trying uvs as a new user).
    #[test]
    fn net_matches_arp_and_refuses_host_bits() {
        let a = arp([10, 77, 0, 1], [10, 77, 0, 2]);
        assert!(m("net 10.77.0.0/30", &a));
        assert!(m("dst net 10.77.0.2/32", &a));
        assert!(m("src net 10.77.0.0/31", &a));
        assert!(!m("dst net 10.77.0.0/31", &a));
        assert!(!m("net 10.78.0.0/16", &a));
        for bad in ["net 10.77.0.5/24", "net 10.77.0.1/0"] {
            let e = Filter::parse(bad).unwrap_err().to_string();
            assert!(e.contains("non-network bits set"), "{bad}: {e}");
        }
        assert!(Filter::parse("net 10.77.0.5").is_ok(), "/32 by default");
        assert!(Filter::parse("net 0.0.0.0/0").is_ok());
    }

    #[test]
    fn precedence_parens_and_negation() {
        let tcp = ipv4(None, [1, 1, 1, 1], [2, 2, 2, 2], 6, (80, 1234));
        assert!(m("udp or tcp and port 80", &tcp));
        assert!(!m("(udp or tcp) and port 81", &tcp));
        assert!(m("!udp && (port 80 || port 81)", &tcp));
        assert!(!m("not (tcp)", &tcp));
    }

    #[test]
    fn errors_name_the_word() {
        for (e, word) in [
            ("host 10.0.0", "10.0.0"),
            ("port x", "x"),
            ("net 10.0.0.0/33", "10.0.0.0/33"),
            ("bogus", "bogus"),
            ("tcp and", "end"),
            ("(tcp", "')'"),
            ("tcp udp", "udp"),
            ("src tcp", "tcp"),
            ("vlan 5000", "5000"),
        ] {
            let msg = Filter::parse(e).unwrap_err().to_string();
            assert!(msg.contains(word), "{e}: {msg}");
        }
    }

    #[test]
    fn short_or_garbage_frames_do_not_panic() {
        let f = Filter::parse("host 1.2.3.4 or port 5 or vlan 3 or arp").unwrap();
        for n in 0..60 {
            let b = vec![0x81u8; n];
            let _ = f.matches(&b);
            let mut ip = ipv4(Some(1), [1, 2, 3, 4], [0; 4], 6, (5, 5));
            ip.truncate(n);
            let _ = f.matches(&ip);
        }
    }
}
