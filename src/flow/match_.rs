//! Flow matches: the packet fields a flow looks at, with masks, in OVS normal form.
//!
//! Contract:
//! - A `Match` holds the fields an ovs-ofctl flow can name; `None` is a wildcard. Masked fields
//!   are normalised: `value & mask == value` and `mask != 0` (a zero mask is a wildcard, stored
//!   as `None`), so two spellings of one match compare equal. The parser enforces this and the
//!   prerequisites; code that builds a `Match` by hand must keep them (`Match::normalize`).
//! - MACs are u64 (low 48 bits, as `MacAddr::to_u64`); IPv4 addresses are u32
//!   (`u32::from(Ipv4Addr)`).
//! - `PacketKey` is what the datapath extracts from a frame. `Match::compile` turns a match into a
//!   (value, mask) pair over the packed 5-word form of the key (`Words`) that the classifier
//!   hashes; `Match::matches` is the field-by-field definition (trace, and the reference in tests).
//! - VLAN: the packed form holds an 802.1Q TCI whose CFI bit means "tagged" (OVS's vlan_tci):
//!   `dl_vlan=V` matches tagged frames with VID V, `dl_vlan=0xffff` untagged frames, and
//!   `dl_vlan_pcp=P` tagged frames with PCP P (so it implies a tag, as in OVS).
//! - MPLS (`mpls`, `mplsm`): the top label stack entry is matched in the packed key's `nw_src`
//!   bits (an MPLS frame has no IPv4 header there; prerequisites keep `nw_src` and the
//!   `mpls_*` fields in different flows).
//! - `nw_tos` matches the DSCP bits only (mask 0xfc; `ip_dscp=D` is `nw_tos=4D`); `nw_ecn`
//!   (`ip_ecn`) the two ECN bits (mask 0x03), as in OVS.
//! - Conntrack: `ct_state` (flags of `ct_state::*`, with a mask) and `ct_zone` are set by the
//!   datapath's `ct` action before a recirculation; they need no prerequisites. They share word
//!   0 with `tun_id`, which is therefore at most 32 bits here (values and masks).
//! - With `nw_proto=1` (icmp) `tp_src`/`tp_dst` hold the ICMP type and code and are displayed as
//!   `icmp_type`/`icmp_code`.

use std::fmt::{self, Write as _};
use std::net::Ipv4Addr;

use super::FlowError;
use super::ext::{ExtField, ExtKey, ExtMatch};
use crate::wire::ethernet::MacAddr;

/// A port named in a flow: a uvs port name or an OpenFlow-style number. Callers resolve it to a
/// port id with a closure (`Fn(&PortRef) -> Option<u16>`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PortRef {
    /// A port name (never all digits).
    Name(String),
    /// A port number.
    Num(u16),
}

impl PortRef {
    /// The number (0 for a name: flows hold numbers once added to a bridge).
    #[inline]
    pub fn num(&self) -> u16 {
        match self {
            PortRef::Num(n) => *n,
            PortRef::Name(_) => 0,
        }
    }
}

impl fmt::Display for PortRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PortRef::Name(n) => f.write_str(n),
            PortRef::Num(crate::ofport::OFPP_LOCAL) => f.write_str("LOCAL"),
            PortRef::Num(n) => write!(f, "{n}"),
        }
    }
}

/// A value with a mask (`value & mask == value`, `mask != 0`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Masked<T> {
    /// Bits to match.
    pub value: T,
    /// Which bits matter.
    pub mask: T,
}

/// `vlan` value of a `PacketKey` with no VLAN tag (and `dl_vlan=0xffff`: match untagged frames).
pub const NO_VLAN: u16 = 0xffff;
/// The priority of a flow that names none (OpenFlow's default, as OVS).
pub const DEFAULT_PRIORITY: u16 = 32768;
/// EtherType IPv4.
pub const ETH_IP: u16 = 0x0800;
/// EtherType ARP.
pub const ETH_ARP: u16 = 0x0806;
/// EtherType IPv6.
pub const ETH_IPV6: u16 = 0x86dd;
/// EtherType MPLS unicast.
pub const ETH_MPLS: u16 = 0x8847;
/// EtherType MPLS multicast.
pub const ETH_MPLSM: u16 = 0x8848;
/// ICMPv6.
pub const PROTO_ICMPV6: u8 = 58;
/// SCTP (matched by protocol only: no SCTP ports).
pub const PROTO_SCTP: u8 = 132;
/// IP protocol numbers with shorthands.
pub const PROTO_ICMP: u8 = 1;
/// TCP.
pub const PROTO_TCP: u8 = 6;
/// UDP.
pub const PROTO_UDP: u8 = 17;

pub(crate) const MAC48: u64 = 0xffff_ffff_ffff;
pub(crate) const TCI_PRESENT: u64 = 0x1000;

/// The fields of one packet the classifier looks at. Fields absent from the packet are 0, except
/// `vlan`, which is `NO_VLAN` for an untagged frame (`PacketKey::default()` is untagged).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PacketKey {
    /// Ingress port id.
    pub in_port: u16,
    /// Source MAC (low 48 bits).
    pub dl_src: u64,
    /// Destination MAC (low 48 bits).
    pub dl_dst: u64,
    /// EtherType (after any VLAN tag).
    pub dl_type: u16,
    /// VLAN id 0-4095 (higher bits ignored), or `NO_VLAN`.
    pub vlan: u16,
    /// VLAN priority 0-7 (ignored when untagged).
    pub vlan_pcp: u8,
    /// IPv4 source (ARP: sender protocol address; MPLS: the top label stack entry).
    pub nw_src: u32,
    /// IPv4 destination (ARP: target protocol address).
    pub nw_dst: u32,
    /// IP protocol (ARP: opcode, low 8 bits).
    pub nw_proto: u8,
    /// IP ToS byte (only the DSCP bits are matched).
    pub nw_tos: u8,
    /// TCP/UDP source port; ICMP type.
    pub tp_src: u16,
    /// TCP/UDP destination port; ICMP code.
    pub tp_dst: u16,
    /// Tunnel id (VNI) the frame arrived with; 0 if none. Only the low 32 bits are matched.
    pub tun_id: u64,
    /// Connection tracking state (`ct_state::*` flags); 0 before any `ct` action.
    pub ct_state: u8,
    /// Connection tracking zone of the last `ct` action; 0 if none.
    pub ct_zone: u16,
    /// IP fragment bits (`frag::*`): fragment, later fragment; 0 for other packets.
    pub nw_frag: u8,
}

/// The bits of `PacketKey::nw_frag` and of an `ip_frag` match (OVS's `FLOW_NW_FRAG_*`).
pub mod frag {
    /// The packet is a fragment.
    pub const ANY: u8 = 1;
    /// The packet is a fragment with a non-zero offset.
    pub const LATER: u8 = 2;
}

impl Default for PacketKey {
    fn default() -> Self {
        PacketKey {
            in_port: 0,
            dl_src: 0,
            dl_dst: 0,
            dl_type: 0,
            vlan: NO_VLAN,
            vlan_pcp: 0,
            nw_src: 0,
            nw_dst: 0,
            nw_proto: 0,
            nw_tos: 0,
            tp_src: 0,
            tp_dst: 0,
            tun_id: 0,
            ct_state: 0,
            ct_zone: 0,
            nw_frag: 0,
        }
    }
}

/// The bits of word 0 that hold `tun_id` (the rest: `ct_zone` at 32..48, `ct_state` at 48..56,
/// `nw_frag` at 56..58).
pub(crate) const TUN_ID_BITS: u64 = 0xffff_ffff;

/// The packed key: `[nw_frag<<56|ct_state<<48|ct_zone<<32|tun_id, in_port<<48|dl_src, dl_type<<48|dl_dst, nw_src<<32|nw_dst,
/// tp_src<<48|tp_dst<<32|tci<<16|nw_proto<<8|nw_tos]`.
pub(crate) type Words = [u64; 5];

/// The parts of an MPLS label stack entry: (field, shift, bits).
pub(crate) const MPLS_PARTS: [(&str, u32, u32); 4] = [
    ("mpls_label", 12, 20),
    ("mpls_tc", 9, 3),
    ("mpls_ttl", 0, 8),
    ("mpls_bos", 8, 1),
];

/// `ip_frag` spellings: (name, value, mask).
pub(crate) const FRAG_NAMES: [(&str, u8, u8); 5] = [
    ("no", 0, frag::ANY),
    ("yes", frag::ANY, frag::ANY),
    ("first", frag::ANY, frag::ANY | frag::LATER),
    ("later", frag::ANY | frag::LATER, frag::ANY | frag::LATER),
    ("not_later", 0, frag::LATER),
];

fn frag_name(f: Masked<u8>) -> String {
    FRAG_NAMES
        .iter()
        .find(|(_, v, m)| *v == f.value && *m == f.mask)
        .map_or_else(
            || format!("{:#x}/{:#x}", f.value, f.mask),
            |n| n.0.to_string(),
        )
}

impl PacketKey {
    /// The 802.1Q TCI as OVS's `vlan_tci` (CFI bit set when tagged, 0 when untagged).
    #[inline]
    pub fn tci(&self) -> u16 {
        if self.vlan == NO_VLAN {
            0
        } else {
            ((self.vlan_pcp as u16 & 7) << 13) | TCI_PRESENT as u16 | (self.vlan & 0xfff)
        }
    }

    /// The packed form the classifier and the exact-match cache hash.
    #[inline]
    pub(crate) fn words(&self) -> Words {
        let tci = if self.vlan == NO_VLAN {
            0
        } else {
            (u64::from(self.vlan_pcp & 7) << 13) | TCI_PRESENT | u64::from(self.vlan & 0xfff)
        };
        [
            (self.tun_id & TUN_ID_BITS)
                | (u64::from(self.ct_zone) << 32)
                | (u64::from(self.ct_state) << 48)
                | (u64::from(self.nw_frag) << 56),
            (self.dl_src & MAC48) | (u64::from(self.in_port) << 48),
            (self.dl_dst & MAC48) | (u64::from(self.dl_type) << 48),
            (u64::from(self.nw_src) << 32) | u64::from(self.nw_dst),
            (u64::from(self.tp_src) << 48)
                | (u64::from(self.tp_dst) << 32)
                | (tci << 16)
                | (u64::from(self.nw_proto) << 8)
                | u64::from(self.nw_tos),
        ]
    }
}

/// A match compiled against the port names: `value` is already masked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Compiled {
    pub value: Words,
    pub mask: Words,
}

/// The fields a flow matches on. `None` is a wildcard.
#[derive(Debug, Clone, PartialEq, Eq, Default, Hash)]
pub struct Match {
    /// Ingress port.
    pub in_port: Option<PortRef>,
    /// Source MAC with mask.
    pub dl_src: Option<Masked<u64>>,
    /// Destination MAC with mask.
    pub dl_dst: Option<Masked<u64>>,
    /// EtherType.
    pub dl_type: Option<u16>,
    /// VLAN id 0-4095, or `NO_VLAN` for untagged frames.
    pub dl_vlan: Option<u16>,
    /// VLAN priority 0-7 (implies a tag).
    pub dl_vlan_pcp: Option<u8>,
    /// `vlan_tci=TCI/MASK` where `dl_vlan`/`dl_vlan_pcp` cannot say it (the CFI bit 0x1000
    /// means "tagged"); `normalize` turns the other cases into `dl_vlan`/`dl_vlan_pcp`.
    pub vlan_tci: Option<Masked<u16>>,
    /// IPv4 (or ARP sender) address with mask.
    pub nw_src: Option<Masked<u32>>,
    /// IPv4 (or ARP target) address with mask.
    pub nw_dst: Option<Masked<u32>>,
    /// IP protocol (ARP: opcode).
    pub nw_proto: Option<u8>,
    /// IP ToS with the ECN bits zero (a multiple of 4).
    pub nw_tos: Option<u8>,
    /// The ECN bits of the IP ToS / traffic class (0-3).
    pub nw_ecn: Option<u8>,
    /// TCP/UDP source port with mask; ICMP type (mask 0xffff).
    pub tp_src: Option<Masked<u16>>,
    /// TCP/UDP destination port with mask; ICMP code (mask 0xffff).
    pub tp_dst: Option<Masked<u16>>,
    /// Tunnel id with mask, both at most 32 bits (`TUN_ID_BITS`); a full match has mask
    /// 0xffff_ffff.
    pub tun_id: Option<Masked<u64>>,
    /// Connection tracking state (`ct_state::*` flags) with mask.
    pub ct_state: Option<Masked<u8>>,
    /// Connection tracking zone.
    pub ct_zone: Option<u16>,
    /// `ip_frag` (`frag::*` bits with a mask).
    pub nw_frag: Option<Masked<u8>>,
    /// The top MPLS label stack entry (`mpls_label`, `mpls_tc`, `mpls_bos`, `mpls_ttl`: label
    /// << 12 | tc << 9 | bos << 8 | ttl) with a mask; it lives where `nw_src` does for IP,
    /// the prerequisites keep the two apart.
    pub mpls: Option<Masked<u32>>,
    /// Registers, metadata and IPv6 fields (checked after the packed key, see `ext.rs`).
    pub ext: ExtMatch,
}

/// Normalise one masked field: `value &= mask`, zero mask -> wildcard.
fn norm<T>(f: Option<Masked<T>>) -> Option<Masked<T>>
where
    T: Copy + PartialEq + Default + std::ops::BitAnd<Output = T>,
{
    f.and_then(|m| {
        (m.mask != T::default()).then(|| Masked {
            value: m.value & m.mask,
            mask: m.mask,
        })
    })
}

impl Match {
    /// Bring masked fields to normal form (`value &= mask`, zero masks dropped).
    pub fn normalize(&mut self) {
        self.dl_src = norm(self.dl_src.map(|m| Masked {
            value: m.value & MAC48,
            mask: m.mask & MAC48,
        }));
        self.dl_dst = norm(self.dl_dst.map(|m| Masked {
            value: m.value & MAC48,
            mask: m.mask & MAC48,
        }));
        self.nw_src = norm(self.nw_src);
        self.nw_dst = norm(self.nw_dst);
        self.tp_src = norm(self.tp_src);
        self.tp_dst = norm(self.tp_dst);
        self.tun_id = norm(self.tun_id);
        self.ct_state = norm(self.ct_state);
        self.nw_frag = norm(self.nw_frag.map(|f| Masked {
            value: f.value & 3,
            mask: f.mask & 3,
        }));
        self.nw_tos = self.nw_tos.map(|t| t & 0xfc);
        self.nw_ecn = self.nw_ecn.map(|e| e & 3);
        self.mpls = norm(self.mpls);
        self.vlan_tci = norm(self.vlan_tci);
        if let Some(t) = self.vlan_tci
            && self.dl_vlan.is_none()
            && self.dl_vlan_pcp.is_none()
        {
            let tagged = t.value & 0x1000 != 0;
            match (t.mask, tagged) {
                (0xffff, false) if t.value == 0 => self.dl_vlan = Some(NO_VLAN),
                (0x1fff, true) => self.dl_vlan = Some(t.value & 0xfff),
                (0xf000, true) => self.dl_vlan_pcp = Some((t.value >> 13) as u8),
                (0xffff, true) => {
                    self.dl_vlan = Some(t.value & 0xfff);
                    self.dl_vlan_pcp = Some((t.value >> 13) as u8);
                }
                _ => return,
            }
            self.vlan_tci = None;
        }
    }

    /// Compile to the packed (value, mask) form, resolving `in_port` with `resolve`.
    pub(crate) fn compile(
        &self,
        resolve: &dyn Fn(&PortRef) -> Option<u16>,
    ) -> Result<Compiled, FlowError> {
        let mut v: Words = [0; 5];
        let mut m: Words = [0; 5];
        let mut put = |w: usize, shift: u32, value: u64, mask: u64| {
            v[w] |= (value & mask) << shift;
            m[w] |= mask << shift;
        };
        if let Some(t) = self.tun_id {
            if t.mask & !TUN_ID_BITS != 0 || t.value & !TUN_ID_BITS != 0 {
                return Err(FlowError::BadValue {
                    field: "tun_id".into(),
                    value: format!("{:#x}/{:#x}", t.value, t.mask),
                    why: "at most 32 bits in this datapath".into(),
                });
            }
            put(0, 0, t.value, t.mask);
        }
        if let Some(z) = self.ct_zone {
            put(0, 32, u64::from(z), 0xffff);
        }
        if let Some(s) = self.ct_state {
            put(0, 48, u64::from(s.value), u64::from(s.mask));
        }
        if let Some(p) = &self.in_port {
            let id = resolve(p).ok_or_else(|| FlowError::UnknownPort {
                what: "in_port".into(),
                port: p.to_string(),
            })?;
            put(1, 48, u64::from(id), 0xffff);
        }
        if let Some(a) = self.dl_src {
            put(1, 0, a.value & MAC48, a.mask & MAC48);
        }
        if let Some(a) = self.dl_dst {
            put(2, 0, a.value & MAC48, a.mask & MAC48);
        }
        if let Some(t) = self.dl_type {
            put(2, 48, u64::from(t), 0xffff);
        }
        if let Some(a) = self.nw_src {
            put(3, 32, u64::from(a.value), u64::from(a.mask));
        }
        if let Some(l) = self.mpls {
            put(3, 32, u64::from(l.value), u64::from(l.mask));
        }
        if let Some(a) = self.nw_dst {
            put(3, 0, u64::from(a.value), u64::from(a.mask));
        }
        if let Some(p) = self.tp_src {
            put(4, 48, u64::from(p.value), u64::from(p.mask));
        }
        if let Some(p) = self.tp_dst {
            put(4, 32, u64::from(p.value), u64::from(p.mask));
        }
        match self.dl_vlan {
            Some(NO_VLAN) => put(4, 16, 0, 0xffff),
            Some(vid) => put(4, 16, TCI_PRESENT | u64::from(vid & 0xfff), 0x1fff),
            None => {}
        }
        if let Some(pcp) = self.dl_vlan_pcp {
            put(4, 16, (u64::from(pcp & 7) << 13) | TCI_PRESENT, 0xf000);
        }
        if let Some(t) = self.vlan_tci {
            put(4, 16, u64::from(t.value), u64::from(t.mask));
        }
        if let Some(f) = self.nw_frag {
            put(0, 56, u64::from(f.value), u64::from(f.mask));
        }
        if let Some(p) = self.nw_proto {
            put(4, 8, u64::from(p), 0xff);
        }
        if let Some(t) = self.nw_tos {
            put(4, 0, u64::from(t), 0xfc);
        }
        if let Some(e) = self.nw_ecn {
            put(4, 0, u64::from(e), 0x03);
        }
        Ok(Compiled { value: v, mask: m })
    }

    /// Whether `key` matches, field by field (`in_port` resolved with `resolve`; an unknown port
    /// matches nothing), with every ext field (registers, metadata, IPv6) 0.
    pub fn matches(&self, key: &PacketKey, resolve: &dyn Fn(&PortRef) -> Option<u16>) -> bool {
        self.matches_ext(key, &ExtKey::ZERO, resolve)
    }

    /// `matches` with the ext fields of `ext`.
    pub fn matches_ext(
        &self,
        key: &PacketKey,
        ext: &ExtKey,
        resolve: &dyn Fn(&PortRef) -> Option<u16>,
    ) -> bool {
        fn m<T: Copy + PartialEq + std::ops::BitAnd<Output = T>>(
            f: Option<Masked<T>>,
            k: T,
        ) -> bool {
            f.is_none_or(|f| k & f.mask == f.value)
        }
        let tagged = key.vlan != NO_VLAN;
        self.in_port
            .as_ref()
            .is_none_or(|p| resolve(p) == Some(key.in_port))
            && m(self.dl_src, key.dl_src & MAC48)
            && m(self.dl_dst, key.dl_dst & MAC48)
            && self.dl_type.is_none_or(|t| t == key.dl_type)
            && self.dl_vlan.is_none_or(|v| match v {
                NO_VLAN => !tagged,
                v => tagged && key.vlan & 0xfff == v,
            })
            && self
                .dl_vlan_pcp
                .is_none_or(|p| tagged && key.vlan_pcp & 7 == p)
            && m(self.vlan_tci, key.tci())
            && m(self.nw_frag, key.nw_frag)
            && m(self.nw_src, key.nw_src)
            && m(self.mpls, key.nw_src)
            && m(self.nw_dst, key.nw_dst)
            && self.nw_proto.is_none_or(|p| p == key.nw_proto)
            && self.nw_tos.is_none_or(|t| t == key.nw_tos & 0xfc)
            && self.nw_ecn.is_none_or(|e| e == key.nw_tos & 3)
            && m(self.tp_src, key.tp_src)
            && m(self.tp_dst, key.tp_dst)
            && m(self.tun_id, key.tun_id & TUN_ID_BITS)
            && m(self.ct_state, key.ct_state)
            && self.ct_zone.is_none_or(|z| z == key.ct_zone)
            && self.ext.matches(ext)
    }

    /// A packet key with every matched field set to its value (for `trace`): unmatched fields
    /// are 0 (`vlan`: untagged unless `dl_vlan`/`dl_vlan_pcp` say otherwise).
    pub fn to_packet_key(
        &self,
        resolve: &dyn Fn(&PortRef) -> Option<u16>,
    ) -> Result<PacketKey, FlowError> {
        let c = self.compile(resolve)?;
        let mut k = PacketKey {
            in_port: (c.value[1] >> 48) as u16,
            dl_src: c.value[1] & MAC48,
            dl_dst: c.value[2] & MAC48,
            dl_type: (c.value[2] >> 48) as u16,
            nw_src: (c.value[3] >> 32) as u32,
            nw_dst: c.value[3] as u32,
            nw_proto: (c.value[4] >> 8) as u8,
            nw_tos: c.value[4] as u8,
            tp_src: (c.value[4] >> 48) as u16,
            tp_dst: (c.value[4] >> 32) as u16,
            tun_id: c.value[0] & TUN_ID_BITS,
            ct_zone: (c.value[0] >> 32) as u16,
            ct_state: (c.value[0] >> 48) as u8,
            nw_frag: (c.value[0] >> 56) as u8 & 3,
            ..PacketKey::default()
        };
        let tci = (c.value[4] >> 16) as u16;
        if u64::from(tci) & TCI_PRESENT != 0 {
            k.vlan = tci & 0xfff;
            k.vlan_pcp = (tci >> 13) as u8;
        }
        Ok(k)
    }

    /// The protocol shorthand that stands for `dl_type` (and `nw_proto`), if any.
    fn shorthand(&self) -> Option<&'static str> {
        match (self.dl_type?, self.nw_proto) {
            (ETH_IP, Some(PROTO_ICMP)) => Some("icmp"),
            (ETH_IP, Some(PROTO_TCP)) => Some("tcp"),
            (ETH_IP, Some(PROTO_UDP)) => Some("udp"),
            (ETH_IP, _) => Some("ip"),
            (ETH_ARP, _) => Some("arp"),
            (ETH_IPV6, Some(PROTO_ICMPV6)) => Some("icmp6"),
            (ETH_IPV6, Some(PROTO_TCP)) => Some("tcp6"),
            (ETH_IPV6, Some(PROTO_UDP)) => Some("udp6"),
            (ETH_IPV6, _) => Some("ipv6"),
            (ETH_MPLS, _) => Some("mpls"),
            (ETH_MPLSM, _) => Some("mplsm"),
            _ => None,
        }
    }
}

fn write_ip(s: &mut String, name: &str, a: Masked<u32>) {
    let _ = write!(s, ",{name}={}", Ipv4Addr::from(a.value));
    if a.mask != u32::MAX {
        if a.mask.leading_ones() + a.mask.trailing_zeros() == 32 {
            let _ = write!(s, "/{}", a.mask.leading_ones());
        } else {
            let _ = write!(s, "/{}", Ipv4Addr::from(a.mask));
        }
    }
}

fn write_mac(s: &mut String, name: &str, a: Masked<u64>) {
    let _ = write!(s, ",{name}={}", MacAddr::from_u64(a.value));
    if a.mask & MAC48 != MAC48 {
        let _ = write!(s, "/{}", MacAddr::from_u64(a.mask));
    }
}

fn write_tp(s: &mut String, name: &str, p: Masked<u16>) {
    if p.mask == u16::MAX {
        let _ = write!(s, ",{name}={}", p.value);
    } else {
        let _ = write!(s, ",{name}={:#x}/{:#x}", p.value, p.mask);
    }
}

impl fmt::Display for Match {
    /// ovs-ofctl's field order and spelling, comma-separated (no priority: see `Flow`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = String::new();
        let short = self.shorthand();
        if let Some(st) = self.ct_state {
            let _ = write!(s, ",ct_state={}", super::ct::CtStateFlags(st));
        }
        if let Some(z) = self.ct_zone {
            let _ = write!(s, ",ct_zone={z}");
        }
        self.ext.write(&mut s, |f| {
            matches!(
                f,
                ExtField::CtMark
                    | ExtField::CtLabel
                    | ExtField::CtNwSrc
                    | ExtField::CtNwDst
                    | ExtField::CtNwProto
                    | ExtField::CtTpSrc
                    | ExtField::CtTpDst
            )
        });
        if let Some(sh) = short {
            let _ = write!(s, ",{sh}");
        }
        if let Some(t) = self.tun_id {
            let _ = write!(s, ",tun_id={:#x}", t.value);
            if t.mask != TUN_ID_BITS {
                let _ = write!(s, "/{:#x}", t.mask);
            }
        }
        self.ext.write(&mut s, |f| f == ExtField::Metadata);
        if let Some(p) = &self.in_port {
            let _ = write!(s, ",in_port={p}");
        }
        self.ext.write(&mut s, |f| matches!(f, ExtField::Reg(_)));
        match self.dl_vlan {
            Some(NO_VLAN) => s.push_str(",dl_vlan=0xffff"),
            Some(v) => {
                let _ = write!(s, ",dl_vlan={v}");
            }
            None => {}
        }
        if let Some(p) = self.dl_vlan_pcp {
            let _ = write!(s, ",dl_vlan_pcp={p}");
        }
        if let Some(t) = self.vlan_tci {
            let _ = write!(s, ",vlan_tci={:#06x}/{:#06x}", t.value, t.mask);
        }
        if let Some(a) = self.dl_src {
            write_mac(&mut s, "dl_src", a);
        }
        if let Some(a) = self.dl_dst {
            write_mac(&mut s, "dl_dst", a);
        }
        if let (Some(t), None) = (self.dl_type, short) {
            let _ = write!(s, ",dl_type={t:#06x}");
        }
        if let Some(a) = self.nw_src {
            write_ip(&mut s, "nw_src", a);
        }
        if let Some(a) = self.nw_dst {
            write_ip(&mut s, "nw_dst", a);
        }
        self.ext.write(&mut s, |f| {
            matches!(
                f,
                ExtField::Ipv6Src | ExtField::Ipv6Dst | ExtField::Ipv6Label
            )
        });
        match (self.nw_proto, short) {
            (Some(p), Some("arp")) => {
                let _ = write!(s, ",arp_op={p}");
            }
            (Some(p), Some("ip" | "ipv6") | None) => {
                let _ = write!(s, ",nw_proto={p}");
            }
            _ => {}
        }
        if let Some(t) = self.nw_tos {
            let _ = write!(s, ",nw_tos={t}");
        }
        if let Some(e) = self.nw_ecn {
            let _ = write!(s, ",nw_ecn={e}");
        }
        if let Some(f) = self.nw_frag {
            let _ = write!(s, ",ip_frag={}", frag_name(f));
        }
        if let Some(l) = self.mpls {
            for (name, shift, bits) in MPLS_PARTS {
                let mask = ((1u32 << bits) - 1) << shift;
                if l.mask & mask != 0 {
                    let _ = write!(s, ",{name}={}", (l.value & mask) >> shift);
                }
            }
        }
        let icmp = matches!(short, Some("icmp" | "icmp6"));
        if let Some(p) = self.tp_src {
            write_tp(&mut s, if icmp { "icmp_type" } else { "tp_src" }, p);
        }
        if let Some(p) = self.tp_dst {
            write_tp(&mut s, if icmp { "icmp_code" } else { "tp_dst" }, p);
        }
        self.ext.write(&mut s, |f| {
            matches!(f, ExtField::NdTarget | ExtField::TcpFlags | ExtField::NwTtl)
        });
        f.write_str(s.strip_prefix(',').unwrap_or(&s))
    }
}
