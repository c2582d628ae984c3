//! ovs-ofctl flow syntax: `add-flow` text to a `Flow`, `del-flows`/`dump-flows` text to a
//! `FlowFilter`.
//!
//! Contract:
//! - Fields are `key=value` or a shorthand (`ip, arp, icmp, tcp, udp`), separated by commas
//!   and/or whitespace, in any order. Everything after the first `actions=` (or `action=`, as
//!   ovs-ofctl; at the start or after a separator) is the action list, so `actions=` is last; it is required by
//!   `parse_flow` and refused by `parse_filter`.
//! - Numbers are decimal or `0x` hex. Masks: `dl_src/dl_dst` `MAC/MAC`; `nw_src/nw_dst`
//!   `IP/PREFIX` or `IP/MASK`; `tp_src/tp_dst` and `tun_id` `N/MASK`; values are normalised
//!   (`value &= mask`, a zero mask drops the field). `tun_id` values and masks are at most 32
//!   bits (a 64-bit all-ones mask, OVS's exact match, is taken as 0xffffffff).
//! - `ct_state` is `+FLAG-FLAG...` or `VALUE[/MASK]` (see `ct.rs`), `ct_zone` 0-65535; neither
//!   has prerequisites.
//! - Prerequisites as OVS's normal form, checked after all fields are read (order does not
//!   matter): `nw_src, nw_dst, nw_proto` need dl_type ip or arp, `nw_tos` ip, `tp_src, tp_dst`
//!   tcp or udp (`tcp_*`, `udp_*`, `icmp_type`, `icmp_code` their protocol). A flow missing one
//!   is refused, never widened.
//! - A field given twice with different values (also through a shorthand) is refused.
//! - The stats keys of a dump-flows line (`duration, n_packets, n_bytes, idle_age, hard_age`)
//!   are accepted and ignored, so a dump-flows line parses back to its flow.
//! - `out_port=P` (a port number or name) is `parse_filter`'s only: the flows that output to P
//!   (`FlowFilter::out_port`); `parse_flow` refuses it, naming it.
//! - Every error names the offending text (`FlowError`).

use std::net::Ipv4Addr;
use std::str::FromStr;

use super::action::{Action, parse_actions};
use super::ct::{CtNat, parse_ct_state};
use super::ext::{ExtField, parse_ipv6, parse_masked_bits, parse_xreg};
use super::match_::{
    DEFAULT_PRIORITY, ETH_ARP, ETH_IP, ETH_IPV6, ETH_MPLS, ETH_MPLSM, FRAG_NAMES, MAC48,
    MPLS_PARTS, Masked, Match, NO_VLAN, PROTO_ICMP, PROTO_ICMPV6, PROTO_SCTP, PROTO_TCP, PROTO_UDP,
    PortRef, TUN_ID_BITS,
};
use super::{Flow, FlowError};
use crate::wire::ethernet::MacAddr;

/// The match part of `del-flows` and `dump-flows` (and `--strict` deletes).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FlowFilter {
    /// Only this table (`None`: every table).
    pub table: Option<u8>,
    /// For strict deletes (`None`: the default priority, 32768).
    pub priority: Option<u16>,
    /// `cookie=V/M`: flows whose cookie & M == V (`-1` is an all-ones mask).
    pub cookie: Option<Masked<u64>>,
    /// `out_port=P` (ovs-ofctl's): only flows with an output to port P (a number or a name).
    pub out_port: Option<PortRef>,
    /// The fields.
    pub m: Match,
}

fn bad_value(field: &str, value: &str, why: impl Into<String>) -> FlowError {
    FlowError::BadValue {
        field: field.to_string(),
        value: value.to_string(),
        why: why.into(),
    }
}

fn bad_mask(field: &str, mask: &str, why: impl Into<String>) -> FlowError {
    FlowError::BadMask {
        field: field.to_string(),
        mask: mask.to_string(),
        why: why.into(),
    }
}

/// A decimal or `0x` hex number no larger than `max`.
pub fn parse_num<T: TryFrom<u64>>(field: &str, s: &str, max: u64) -> Result<T, FlowError> {
    let n = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(h) => u64::from_str_radix(h, 16),
        None => s.parse::<u64>(),
    }
    .map_err(|_| bad_value(field, s, "not a number"))?;
    if n > max {
        return Err(bad_value(field, s, format!("out of range (max {max})")));
    }
    T::try_from(n).map_err(|_| bad_value(field, s, "out of range"))
}

/// A port: all digits is a number, `LOCAL` (any case, as ovs-ofctl) the bridge's local port,
/// otherwise a name of `[A-Za-z0-9_.-]`, at most 64 bytes.
pub fn parse_port(s: &str) -> Result<PortRef, FlowError> {
    if s.eq_ignore_ascii_case("local") {
        return Ok(PortRef::Num(crate::ofport::OFPP_LOCAL));
    }
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return parse_num("port", s, 0xffff).map(PortRef::Num);
    }
    let ok = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.';
    if s.is_empty() || s.len() > 64 || !s.bytes().all(ok) {
        return Err(bad_value("port", s, "not a port name or number"));
    }
    Ok(PortRef::Name(s.to_string()))
}

fn parse_mac(field: &str, s: &str) -> Result<Option<Masked<u64>>, FlowError> {
    let (v, m) = s.split_once('/').map_or((s, None), |(v, m)| (v, Some(m)));
    let value = MacAddr::from_str(v)
        .map_err(|e| bad_value(field, v, e))?
        .to_u64();
    let mask = match m {
        None => MAC48,
        Some(m) => MacAddr::from_str(m)
            .map_err(|e| bad_mask(field, m, e))?
            .to_u64(),
    };
    Ok((mask != 0).then_some(Masked {
        value: value & mask,
        mask,
    }))
}

fn parse_ip(field: &str, s: &str) -> Result<Option<Masked<u32>>, FlowError> {
    let (v, m) = s.split_once('/').map_or((s, None), |(v, m)| (v, Some(m)));
    let value =
        u32::from(Ipv4Addr::from_str(v).map_err(|_| bad_value(field, v, "not an IPv4 address"))?);
    let mask = match m {
        None => u32::MAX,
        Some(m) if !m.is_empty() && m.bytes().all(|b| b.is_ascii_digit()) => {
            let n: u32 = m.parse().unwrap_or(u32::MAX);
            if n > 32 {
                return Err(bad_mask(field, m, "prefix longer than 32"));
            }
            u32::MAX.checked_shl(32 - n).unwrap_or(0)
        }
        Some(m) => u32::from(
            Ipv4Addr::from_str(m)
                .map_err(|_| bad_mask(field, m, "not a prefix length or IPv4 mask"))?,
        ),
    };
    Ok((mask != 0).then_some(Masked {
        value: value & mask,
        mask,
    }))
}

/// `N` or `N/MASK`; `-1` as a mask is all ones (ovs-ofctl's cookie spelling).
fn parse_masked<T>(field: &str, s: &str, max: u64) -> Result<Option<Masked<T>>, FlowError>
where
    T: TryFrom<u64> + Copy + PartialEq + Default + std::ops::BitAnd<Output = T>,
{
    let (v, m) = s.split_once('/').map_or((s, None), |(v, m)| (v, Some(m)));
    let value: T = parse_num(field, v, max)?;
    let mask: T = match m {
        None | Some("-1") => parse_num(field, &max.to_string(), max)?,
        Some(m) => parse_num(field, m, max)
            .map_err(|_| bad_mask(field, m, format!("not a number up to {max:#x}")))?,
    };
    Ok((mask != T::default()).then_some(Masked {
        value: value & mask,
        mask,
    }))
}

/// `tun_id=N[/MASK]`, at most 32 bits (a 64-bit all-ones or `-1` mask is an exact match).
fn parse_tun_id(field: &str, s: &str) -> Result<Option<Masked<u64>>, FlowError> {
    const WHY: &str = "at most 32 bits in this datapath";
    let (v, m) = s.split_once('/').map_or((s, None), |(v, m)| (v, Some(m)));
    let value: u64 = parse_num(field, v, u64::MAX)?;
    if value > TUN_ID_BITS {
        return Err(bad_value(field, v, WHY));
    }
    let mask = match m {
        None | Some("-1") => TUN_ID_BITS,
        Some(m) => match parse_num::<u64>(field, m, u64::MAX) {
            Ok(u64::MAX) => TUN_ID_BITS,
            Ok(n) if n <= TUN_ID_BITS => n,
            Ok(_) => return Err(bad_mask(field, m, WHY)),
            Err(_) => return Err(bad_mask(field, m, "not a number")),
        },
    };
    Ok((mask != 0).then_some(Masked {
        value: value & mask,
        mask,
    }))
}

fn set<T: PartialEq>(
    slot: &mut Option<T>,
    v: Option<T>,
    token: &str,
    field: &str,
) -> Result<(), FlowError> {
    let Some(v) = v else { return Ok(()) };
    match slot {
        Some(old) if *old != v => Err(FlowError::Conflict {
            token: token.to_string(),
            field: field.to_string(),
        }),
        _ => {
            *slot = Some(v);
            Ok(())
        }
    }
}

/// The spelling of a field with prerequisites, and what it needs: one of `dl_types`, and (if
/// `protos` is not empty) one of the (dl_type, nw_proto) pairs of `protos`.
#[derive(Clone, Copy)]
struct Need<'a> {
    name: &'a str,
    dl_types: &'static [u16],
    protos: &'static [(u16, u8)],
}

#[derive(Default)]
struct Fields<'a> {
    table: Option<u8>,
    priority: Option<u16>,
    cookie: Option<Masked<u64>>,
    idle: Option<u16>,
    hard: Option<u16>,
    send_flow_rem: bool,
    out_port: Option<PortRef>,
    m: Match,
    needs: Vec<Need<'a>>,
    /// `nd_target` as written, if given (it needs icmp_type 135 or 136).
    nd: Option<&'a str>,
    /// A `ct_nw_*`/`ct_tp_*` field as written, if given (it needs a ct_state that implies a
    /// connection).
    ct_tuple: Option<&'a str>,
    /// A `ct_tp_*` field as written, if given (it needs ct_nw_proto).
    ct_ports: Option<&'a str>,
}

const IP_OR_ARP: &[u16] = &[ETH_IP, ETH_ARP];
const IP_ANY: &[u16] = &[ETH_IP, ETH_IPV6];
const TCP: &[(u16, u8)] = &[(ETH_IP, PROTO_TCP), (ETH_IPV6, PROTO_TCP)];
const UDP: &[(u16, u8)] = &[(ETH_IP, PROTO_UDP), (ETH_IPV6, PROTO_UDP)];
const TCP_UDP: &[(u16, u8)] = &[
    (ETH_IP, PROTO_TCP),
    (ETH_IPV6, PROTO_TCP),
    (ETH_IP, PROTO_UDP),
    (ETH_IPV6, PROTO_UDP),
];
const ICMP_ANY: &[(u16, u8)] = &[(ETH_IP, PROTO_ICMP), (ETH_IPV6, PROTO_ICMPV6)];
const ICMPV6: &[(u16, u8)] = &[(ETH_IPV6, PROTO_ICMPV6)];

impl<'a> Fields<'a> {
    fn need(&mut self, name: &'a str, dl_types: &'static [u16], protos: &'static [(u16, u8)]) {
        self.needs.push(Need {
            name,
            dl_types,
            protos,
        });
    }

    fn shorthand(&mut self, tok: &str, dl_type: u16, proto: Option<u8>) -> Result<(), FlowError> {
        set(&mut self.m.dl_type, Some(dl_type), tok, "dl_type")?;
        set(&mut self.m.nw_proto, proto, tok, "nw_proto")
    }

    fn field(&mut self, tok: &'a str, filter: bool) -> Result<(), FlowError> {
        let Some((k, v)) = tok.split_once('=') else {
            return match tok {
                "ip" => self.shorthand(tok, ETH_IP, None),
                "arp" => self.shorthand(tok, ETH_ARP, None),
                "icmp" => self.shorthand(tok, ETH_IP, Some(PROTO_ICMP)),
                "tcp" => self.shorthand(tok, ETH_IP, Some(PROTO_TCP)),
                "udp" => self.shorthand(tok, ETH_IP, Some(PROTO_UDP)),
                "sctp" => self.shorthand(tok, ETH_IP, Some(PROTO_SCTP)),
                "ipv6" | "ip6" => self.shorthand(tok, ETH_IPV6, None),
                "icmp6" => self.shorthand(tok, ETH_IPV6, Some(PROTO_ICMPV6)),
                "tcp6" => self.shorthand(tok, ETH_IPV6, Some(PROTO_TCP)),
                "udp6" => self.shorthand(tok, ETH_IPV6, Some(PROTO_UDP)),
                "sctp6" => self.shorthand(tok, ETH_IPV6, Some(PROTO_SCTP)),
                "mpls" => self.shorthand(tok, ETH_MPLS, None),
                "mplsm" => self.shorthand(tok, ETH_MPLSM, None),
                "send_flow_rem" if !filter => {
                    self.send_flow_rem = true;
                    Ok(())
                }
                _ => Err(FlowError::UnknownField(tok.to_string())),
            };
        };
        let m = &mut self.m;
        match k {
            "ip" | "arp" | "icmp" | "tcp" | "udp" | "sctp" | "ipv6" | "ip6" | "icmp6" | "tcp6"
            | "udp6" | "sctp6" | "mpls" | "mplsm" => {
                return Err(bad_value(k, v, "a shorthand takes no value"));
            }
            "priority" => set(&mut self.priority, Some(parse_num(k, v, 0xffff)?), tok, k)?,
            "table" => set(&mut self.table, Some(parse_num(k, v, 254)?), tok, k)?,
            "cookie" => {
                let c = parse_masked::<u64>(k, v, u64::MAX)?;
                if !filter && c.is_some_and(|c| c.mask != u64::MAX) {
                    let mask = v.split_once('/').map_or("", |x| x.1);
                    return Err(bad_mask(
                        k,
                        mask,
                        "cookie masks are for del-flows and dump-flows",
                    ));
                }
                set(
                    &mut self.cookie,
                    Some(c.unwrap_or(Masked { value: 0, mask: 0 })),
                    tok,
                    k,
                )?;
            }
            "idle_timeout" | "hard_timeout" if filter => {
                return Err(FlowError::NotAllowed {
                    field: k.to_string(),
                });
            }
            "idle_timeout" => set(&mut self.idle, Some(parse_num(k, v, 0xffff)?), tok, k)?,
            "hard_timeout" => set(&mut self.hard, Some(parse_num(k, v, 0xffff)?), tok, k)?,
            "duration" | "n_packets" | "n_bytes" | "idle_age" | "hard_age" => {}
            "out_port" if filter => set(
                &mut self.out_port,
                Some(parse_port(v).map_err(|_| bad_value(k, v, "not a port name or number"))?),
                tok,
                k,
            )?,
            "out_port" => {
                return Err(bad_value(
                    k,
                    v,
                    "selects flows in del-flows and dump-flows; a flow has none",
                ));
            }
            "in_port" => set(
                &mut m.in_port,
                Some(parse_port(v).map_err(|_| bad_value(k, v, "not a port name or number"))?),
                tok,
                k,
            )?,
            "dl_src" | "eth_src" => set(&mut m.dl_src, parse_mac(k, v)?, tok, "dl_src")?,
            "dl_dst" | "eth_dst" => set(&mut m.dl_dst, parse_mac(k, v)?, tok, "dl_dst")?,
            "dl_type" | "eth_type" => set(
                &mut m.dl_type,
                Some(parse_num(k, v, 0xffff)?),
                tok,
                "dl_type",
            )?,
            "dl_vlan" => {
                let vid: u16 = parse_num(k, v, 0xffff)?;
                if vid > 4095 && vid != NO_VLAN {
                    return Err(bad_value(
                        k,
                        v,
                        "want a VLAN id 0-4095, or 0xffff for no VLAN",
                    ));
                }
                set(&mut m.dl_vlan, Some(vid), tok, k)?;
            }
            "dl_vlan_pcp" => set(&mut m.dl_vlan_pcp, Some(parse_num(k, v, 7)?), tok, k)?,
            "vlan_tci" => {
                let t = parse_masked::<u16>(k, v, 0xffff)?;
                set(&mut m.vlan_tci, t, tok, k)?;
            }
            "ip_frag" | "nw_frag" => {
                let f = match FRAG_NAMES.iter().find(|n| n.0 == v) {
                    Some(&(_, value, mask)) => Some(Masked { value, mask }),
                    None => parse_masked::<u8>(k, v, 3).map_err(|_| {
                        bad_value(
                            k,
                            v,
                            "want no, yes, first, later, not_later or VALUE/MASK (0-3)",
                        )
                    })?,
                };
                set(&mut m.nw_frag, f, tok, "ip_frag")?;
                self.need(k, IP_ANY, &[]);
            }
            "nw_src" | "ip_src" | "arp_spa" => {
                set(&mut m.nw_src, parse_ip(k, v)?, tok, "nw_src")?;
                self.need(k, dl_types_for(k), &[]);
            }
            "nw_dst" | "ip_dst" | "arp_tpa" => {
                set(&mut m.nw_dst, parse_ip(k, v)?, tok, "nw_dst")?;
                self.need(k, dl_types_for(k), &[]);
            }
            "nw_proto" | "ip_proto" | "arp_op" => {
                set(
                    &mut m.nw_proto,
                    Some(parse_num(k, v, 0xff)?),
                    tok,
                    "nw_proto",
                )?;
                self.need(k, dl_types_for(k), &[]);
            }
            "nw_tos" => {
                let t: u8 = parse_num(k, v, 0xff)?;
                if t & 3 != 0 {
                    return Err(bad_value(k, v, "ECN bits set (want a multiple of 4)"));
                }
                set(&mut m.nw_tos, Some(t), tok, k)?;
                self.need(k, IP_ANY, &[]);
            }
            // OVS's MFF_IP_DSCP_SHIFTED: the DSCP as 0-63, held as nw_tos.
            "ip_dscp" => {
                let d: u8 = parse_num(k, v, 63)?;
                set(&mut m.nw_tos, Some(d << 2), tok, "nw_tos")?;
                self.need(k, IP_ANY, &[]);
            }
            "nw_ecn" | "ip_ecn" => {
                set(&mut m.nw_ecn, Some(parse_num(k, v, 3)?), tok, "nw_ecn")?;
                self.need(k, IP_ANY, &[]);
            }
            "tp_src" | "tcp_src" | "udp_src" | "tp_dst" | "tcp_dst" | "udp_dst" => {
                let p = parse_masked::<u16>(k, v, 0xffff)?;
                let slot = if k.ends_with("src") {
                    &mut m.tp_src
                } else {
                    &mut m.tp_dst
                };
                set(
                    slot,
                    p,
                    tok,
                    if k.ends_with("src") {
                        "tp_src"
                    } else {
                        "tp_dst"
                    },
                )?;
                let protos = match &k[..3] {
                    "tcp" => TCP,
                    "udp" => UDP,
                    _ => TCP_UDP,
                };
                self.need(k, IP_ANY, protos);
            }
            "icmp_type" | "icmp_code" | "icmpv6_type" | "icmpv6_code" => {
                let n: u16 = parse_num(k, v, 0xff)?;
                let slot = if k.ends_with("type") {
                    &mut m.tp_src
                } else {
                    &mut m.tp_dst
                };
                let f = if k.ends_with("type") {
                    "tp_src"
                } else {
                    "tp_dst"
                };
                set(
                    slot,
                    Some(Masked {
                        value: n,
                        mask: 0xffff,
                    }),
                    tok,
                    f,
                )?;
                let v6 = k.starts_with("icmpv6");
                self.need(
                    k,
                    if v6 { &[ETH_IPV6] } else { IP_ANY },
                    if v6 { ICMPV6 } else { ICMP_ANY },
                );
            }
            "ipv6_src" | "ipv6_dst" | "nd_target" => {
                let f = match k {
                    "ipv6_src" => ExtField::Ipv6Src,
                    "ipv6_dst" => ExtField::Ipv6Dst,
                    _ => ExtField::NdTarget,
                };
                m.ext.set(f, parse_ipv6(k, v)?, tok)?;
                self.need(k, &[ETH_IPV6], if k == "nd_target" { ICMPV6 } else { &[] });
                if k == "nd_target" {
                    self.nd = Some(k);
                }
            }
            "nw_ttl" => {
                let t: u8 = parse_num(k, v, 0xff)?;
                m.ext.set(
                    ExtField::NwTtl,
                    Masked {
                        value: u128::from(t),
                        mask: 0xff,
                    },
                    tok,
                )?;
                self.need(k, IP_ANY, &[]);
            }
            "tcp_flags" => {
                m.ext
                    .set(ExtField::TcpFlags, super::ext::parse_tcp_flags(k, v)?, tok)?;
                self.need(k, IP_ANY, TCP);
            }
            "ipv6_label" => {
                m.ext
                    .set(ExtField::Ipv6Label, parse_masked_bits(k, v, 20)?, tok)?;
                self.need(k, &[ETH_IPV6], &[]);
            }
            "ct_mark" => m
                .ext
                .set(ExtField::CtMark, parse_masked_bits(k, v, 32)?, tok)?,
            "ct_label" => m
                .ext
                .set(ExtField::CtLabel, parse_masked_bits(k, v, 128)?, tok)?,
            "ct_nw_src" | "ct_nw_dst" => {
                let f = ExtField::by_name(k).expect("named");
                let a = parse_ip(k, v)?.unwrap_or(Masked { value: 0, mask: 0 });
                let x = Masked {
                    value: u128::from(a.value),
                    mask: u128::from(a.mask),
                };
                m.ext.set(f, x, tok)?;
                self.need(k, &[ETH_IP], &[]);
                self.ct_tuple = Some(k);
            }
            "ct_nw_proto" => {
                let p: u8 = parse_num(k, v, 0xff)?;
                let x = Masked {
                    value: u128::from(p),
                    mask: 0xff,
                };
                m.ext.set(ExtField::CtNwProto, x, tok)?;
                self.need(k, IP_ANY, &[]);
                self.ct_tuple = Some(k);
            }
            "ct_tp_src" | "ct_tp_dst" => {
                let f = ExtField::by_name(k).expect("named");
                m.ext.set(f, parse_masked_bits(k, v, 16)?, tok)?;
                self.need(k, IP_ANY, &[]);
                self.ct_tuple = Some(k);
                self.ct_ports = Some(k);
            }
            "mpls_label" | "mpls_tc" | "mpls_bos" | "mpls_ttl" => {
                let &(_, shift, bits) = MPLS_PARTS.iter().find(|p| p.0 == k).expect("listed");
                let n: u32 = parse_num(k, v, (1 << bits) - 1)?;
                let part = Masked {
                    value: n << shift,
                    mask: ((1u32 << bits) - 1) << shift,
                };
                let cur = m.mpls.unwrap_or(Masked { value: 0, mask: 0 });
                if cur.mask & part.mask != 0 && cur.value & part.mask != part.value {
                    return Err(FlowError::Conflict {
                        token: tok.to_string(),
                        field: k.to_string(),
                    });
                }
                m.mpls = Some(Masked {
                    value: cur.value | part.value,
                    mask: cur.mask | part.mask,
                });
                self.need(k, &[ETH_MPLS, ETH_MPLSM], &[]);
            }
            "metadata" => m
                .ext
                .set(ExtField::Metadata, parse_masked_bits(k, v, 64)?, tok)?,
            _ if k.starts_with("xreg") => {
                for (f, x) in parse_xreg(k, &k[4..], v)? {
                    m.ext.set(f, x, tok)?;
                }
            }
            _ if ExtField::by_name(k).is_some_and(|f| matches!(f, ExtField::Reg(_))) => {
                let f = ExtField::by_name(k).expect("checked");
                m.ext.set(f, parse_masked_bits(k, v, 32)?, tok)?;
            }
            "tun_id" | "tunnel_id" => set(&mut m.tun_id, parse_tun_id(k, v)?, tok, "tun_id")?,
            "ct_state" => set(&mut m.ct_state, parse_ct_state(k, v)?, tok, k)?,
            "ct_zone" => set(&mut m.ct_zone, Some(parse_num(k, v, 0xffff)?), tok, k)?,
            _ => return Err(FlowError::UnknownField(k.to_string())),
        }
        Ok(())
    }

    /// Prerequisites and contradictions, after every field is read.
    fn check(&self) -> Result<(), FlowError> {
        for n in &self.needs {
            let dl_ok = self.m.dl_type.is_some_and(|t| n.dl_types.contains(&t));
            let proto_ok = n.protos.is_empty()
                || self
                    .m
                    .dl_type
                    .zip(self.m.nw_proto)
                    .is_some_and(|p| n.protos.contains(&p));
            if !dl_ok || !proto_ok {
                return Err(FlowError::Prerequisite {
                    field: n.name.to_string(),
                    needs: describe(n),
                });
            }
        }
        let nd_type = self
            .m
            .tp_src
            .is_some_and(|t| t.mask == 0xffff && (t.value == 135 || t.value == 136));
        if let (Some(nd), false) = (self.nd, nd_type) {
            return Err(FlowError::Prerequisite {
                field: nd.to_string(),
                needs: "icmp_type=135 or 136 (neighbour solicitation or advertisement)".into(),
            });
        }
        if let Some(k) = self.ct_tuple {
            // OVS: the ct_state match must imply a connection (one of new, est, rel, rpl,
            // snat, dnat set, or +trk-inv).
            use super::ct::ct_state as cs;
            let st = self.m.ct_state.unwrap_or(Masked { value: 0, mask: 0 });
            let implied = cs::NEW | cs::EST | cs::REL | cs::RPL | cs::SNAT | cs::DNAT;
            let trk_not_inv =
                st.value & cs::TRK != 0 && st.mask & cs::INV != 0 && st.value & cs::INV == 0;
            if st.value & implied == 0 && !trk_not_inv {
                return Err(FlowError::Prerequisite {
                    field: k.to_string(),
                    needs: "a ct_state with +trk and one of +new, +est, +rel, +rpl, or -inv".into(),
                });
            }
        }
        if let Some(k) = self.ct_ports
            && self.m.ext.get(ExtField::CtNwProto).is_none()
        {
            return Err(FlowError::Prerequisite {
                field: k.to_string(),
                needs: "ct_nw_proto".into(),
            });
        }
        if self.m.vlan_tci.is_some() && (self.m.dl_vlan.is_some() || self.m.dl_vlan_pcp.is_some()) {
            return Err(FlowError::Conflict {
                token: "vlan_tci".into(),
                field: "dl_vlan/dl_vlan_pcp (give one spelling)".into(),
            });
        }
        if self.m.dl_vlan == Some(NO_VLAN) && self.m.dl_vlan_pcp.is_some() {
            return Err(FlowError::Conflict {
                token: "dl_vlan_pcp".into(),
                field: "dl_vlan=0xffff (no VLAN)".into(),
            });
        }
        Ok(())
    }
}

fn dl_types_for(k: &str) -> &'static [u16] {
    match k {
        "ip_proto" => IP_ANY,
        "nw_proto" => &[ETH_IP, ETH_ARP, ETH_IPV6],
        _ if k.starts_with("ip_") => &[ETH_IP],
        _ if k.starts_with("arp_") => &[ETH_ARP],
        _ => IP_OR_ARP,
    }
}

fn describe(n: &Need<'_>) -> String {
    let proto = |&(d, p): &(u16, u8)| match (d, p) {
        (ETH_IP, PROTO_ICMP) => "icmp",
        (ETH_IP, PROTO_TCP) => "tcp",
        (ETH_IP, PROTO_UDP) => "udp",
        (ETH_IPV6, PROTO_ICMPV6) => "icmp6",
        (ETH_IPV6, PROTO_TCP) => "tcp6",
        (ETH_IPV6, PROTO_UDP) => "udp6",
        _ => "?",
    };
    if !n.protos.is_empty() {
        let ps: Vec<&str> = n.protos.iter().map(proto).collect();
        return ps.join(" or ");
    }
    let ds: Vec<&str> = n
        .dl_types
        .iter()
        .map(|d| match *d {
            ETH_IP => "0x0800 (ip)",
            ETH_IPV6 => "0x86dd (ipv6)",
            ETH_MPLS => "0x8847 (mpls)",
            ETH_MPLSM => "0x8848 (mplsm)",
            _ => "0x0806 (arp)",
        })
        .collect();
    format!("dl_type={}", ds.join(" or "))
}

/// Split at the first `actions=` (or `action=`, which ovs-ofctl takes as the same key) that
/// starts a field.
fn split_actions(s: &str) -> (&str, Option<&str>) {
    let mut from = 0;
    while let Some(i) = s[from..].find("action") {
        let at = from + i;
        let rest = &s[at + "action".len()..];
        let key = if rest.starts_with("s=") {
            "actions=".len()
        } else if rest.starts_with('=') {
            "action=".len()
        } else {
            0
        };
        if key != 0 && (at == 0 || s[..at].ends_with([',', ' ', '\t'])) {
            return (&s[..at], Some(&s[at + key..]));
        }
        from = at + 1;
    }
    (s, None)
}

fn read_fields(s: &str, filter: bool) -> Result<Fields<'_>, FlowError> {
    let mut f = Fields::default();
    for tok in s
        .split([',', ' ', '\t', '\n', '\r'])
        .filter(|t| !t.is_empty())
    {
        f.field(tok, filter)?;
    }
    f.check()?;
    f.m.normalize();
    Ok(f)
}

/// Parse an `add-flow` line (also a whole `dump-flows` line).
pub fn parse_flow(s: &str) -> Result<Flow, FlowError> {
    let (fields, actions) = split_actions(s.trim());
    let f = read_fields(fields, false)?;
    let actions = actions.ok_or(FlowError::MissingActions)?;
    let table = f.table.unwrap_or(0);
    let flow = Flow {
        table,
        priority: f.priority.unwrap_or(DEFAULT_PRIORITY),
        cookie: f.cookie.map_or(0, |c| c.value),
        idle_timeout: f.idle.unwrap_or(0),
        hard_timeout: f.hard.unwrap_or(0),
        m: f.m,
        actions: parse_actions(actions, table)?,
        send_flow_rem: f.send_flow_rem,
    };
    fn find_nat(list: &[Action]) -> Option<&Action> {
        list.iter().find_map(|a| match a {
            Action::Ct(c) if matches!(c.nat, Some(CtNat::Src { .. } | CtNat::Dst { .. })) => {
                Some(a)
            }
            Action::Clone(inner) => find_nat(inner),
            _ => None,
        })
    }
    if flow.m.dl_type == Some(ETH_IPV6)
        && let Some(a) = find_nat(&flow.actions)
    {
        return Err(FlowError::BadAction {
            action: a.to_string(),
            why: "NAT of IPv6 is not supported".into(),
        });
    }
    Ok(flow)
}

/// Parse the match of `del-flows` / `dump-flows` (no `actions=`, no timeouts).
pub fn parse_filter(s: &str) -> Result<FlowFilter, FlowError> {
    let (fields, actions) = split_actions(s.trim());
    if actions.is_some() {
        return Err(FlowError::NotAllowed {
            field: "actions".into(),
        });
    }
    let f = read_fields(fields, true)?;
    Ok(FlowFilter {
        table: f.table,
        priority: f.priority,
        cookie: f.cookie.filter(|c| c.mask != 0),
        out_port: f.out_port,
        m: f.m,
    })
}

impl FromStr for Flow {
    type Err = FlowError;
    fn from_str(s: &str) -> Result<Flow, FlowError> {
        parse_flow(s)
    }
}

impl FromStr for FlowFilter {
    type Err = FlowError;
    fn from_str(s: &str) -> Result<FlowFilter, FlowError> {
        parse_filter(s)
    }
}
