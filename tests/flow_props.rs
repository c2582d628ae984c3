//! Property tests for `uvs::flow` with a seeded xorshift PRNG (no proptest dependency):
//! parse(display(flow)) == flow, the tuple-space classifier against a linear-scan reference
//! (lookups, replacement, strict and non-strict deletes), and the exact-match cache against the
//! classifier. `bench_flow_lookup` (ignored) measures lookup cost; run it with
//! `cargo test --release --test flow_props -- --ignored --nocapture`.

use std::hint::black_box;
use std::net::Ipv4Addr;
use std::time::Instant;

use uvs::flow::*;
use uvs::wire::ethernet::MacAddr;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, pct: u64) -> bool {
        self.below(100) < pct
    }
    fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len() as u64) as usize]
    }
}

fn masked64(r: &mut Rng, full: u64) -> Option<Masked<u64>> {
    let mask = match r.below(3) {
        0 => full,
        1 => full & !((1 << r.below(40)) - 1),
        _ => r.next() & full,
    };
    let value = r.next() & mask;
    (mask != 0).then_some(Masked { value, mask })
}

fn masked32(r: &mut Rng) -> Option<Masked<u32>> {
    let mask = match r.below(3) {
        0 => u32::MAX,
        1 => u32::MAX.checked_shl(r.below(33) as u32).unwrap_or(0),
        _ => r.next() as u32,
    };
    (mask != 0).then_some(Masked {
        value: r.next() as u32 & mask,
        mask,
    })
}

fn masked8(r: &mut Rng) -> Option<Masked<u8>> {
    let mask = if r.chance(20) {
        u8::MAX
    } else {
        r.next() as u8
    };
    (mask != 0).then_some(Masked {
        value: r.next() as u8 & mask,
        mask,
    })
}

fn masked16(r: &mut Rng) -> Option<Masked<u16>> {
    let mask = if r.chance(50) {
        u16::MAX
    } else {
        r.next() as u16
    };
    (mask != 0).then_some(Masked {
        value: r.next() as u16 & mask,
        mask,
    })
}

const NAMES: &[&str] = &["p1", "p2", "eth0", "veth-a.1", "uplink_0"];

fn port(r: &mut Rng) -> PortRef {
    if r.chance(50) {
        PortRef::Name(r.pick(NAMES).to_string())
    } else {
        PortRef::Num(r.next() as u16)
    }
}

fn mac(r: &mut Rng) -> MacAddr {
    MacAddr::from_u64(r.next())
}

fn ip(r: &mut Rng) -> Ipv4Addr {
    Ipv4Addr::from(r.next() as u32)
}

/// A register or metadata subfield (`xregN` ranges land on one register, as the parser maps
/// them).
fn gen_subfield(r: &mut Rng, writable: bool) -> Subfield {
    let field = if writable || r.chance(50) {
        Field::Ext(if r.chance(20) {
            ExtField::Metadata
        } else {
            ExtField::Reg(r.below(16) as u8)
        })
    } else {
        *r.pick(&[
            Field::Pkt(PktField::InPort),
            Field::Pkt(PktField::EthSrc),
            Field::Pkt(PktField::VlanTci),
            Field::Pkt(PktField::IpDst),
            Field::Pkt(PktField::TpSrc),
            Field::Pkt(PktField::TunId),
        ])
    };
    let bits: u64 = match field {
        Field::Ext(f) => u64::from(f.bits()),
        Field::Pkt(PktField::EthSrc) => 48,
        Field::Pkt(PktField::IpDst) => 32,
        Field::Pkt(PktField::TunId) => 64,
        Field::Pkt(_) => 16,
    };
    let ofs = r.below(bits);
    let n_bits = 1 + r.below(bits - ofs);
    Subfield {
        field,
        ofs: ofs as u8,
        n_bits: n_bits as u8,
    }
}

/// A `learn(...)` over registers, MACs, the VLAN and constants.
fn gen_learn(r: &mut Rng) -> Learn {
    let whole = |f: Field, bits: u8| Subfield {
        field: f,
        ofs: 0,
        n_bits: bits,
    };
    let specs = (0..1 + r.below(4))
        .map(|_| match r.below(6) {
            0 => LearnSpec::Match {
                dst: whole(Field::Pkt(PktField::EthDst), 48),
                src: LearnSrc::Field(whole(Field::Pkt(PktField::EthSrc), 48)),
            },
            1 => {
                let d = Subfield {
                    field: Field::Pkt(PktField::VlanTci),
                    ofs: 0,
                    n_bits: 12,
                };
                LearnSpec::Match {
                    dst: d,
                    src: LearnSrc::Field(d),
                }
            }
            2 => LearnSpec::Match {
                dst: whole(Field::Pkt(PktField::InPort), 16),
                src: LearnSrc::Imm(1 + r.below(0xfeff) as u128),
            },
            3 => {
                let d = gen_subfield(r, true);
                LearnSpec::Load {
                    dst: d,
                    src: LearnSrc::Imm(u128::from(r.next()) & (d.mask() >> d.ofs)),
                }
            }
            4 => LearnSpec::Output(whole(Field::Pkt(PktField::InPort), 16)),
            _ => {
                let d = Subfield {
                    field: Field::Ext(ExtField::Reg(r.below(16) as u8)),
                    ofs: r.below(16) as u8,
                    n_bits: 1 + r.below(16) as u8,
                };
                LearnSpec::Match {
                    dst: d,
                    src: LearnSrc::Field(Subfield {
                        field: Field::Pkt(PktField::EthSrc),
                        ofs: 0,
                        n_bits: d.n_bits,
                    }),
                }
            }
        })
        .collect();
    Learn {
        table: r.below(255) as u8,
        priority: if r.chance(50) {
            DEFAULT_PRIORITY
        } else {
            r.next() as u16
        },
        idle_timeout: if r.chance(50) { 0 } else { r.next() as u16 },
        hard_timeout: if r.chance(70) { 0 } else { r.next() as u16 },
        cookie: if r.chance(70) { 0 } else { r.next() },
        specs,
    }
}

/// An action on registers, metadata or the other additions from OVS's flow language.
fn gen_ovs_action(r: &mut Rng) -> Action {
    match r.below(16) {
        15 => Action::Learn(Box::new(gen_learn(r))),
        9 => Action::PushMpls(*r.pick(&[0x8847, 0x8848])),
        10 => Action::PopMpls(*r.pick(&[0x0800, 0x8847, 0x86dd])),
        11 => Action::SetMplsLabel(r.below(1 << 20) as u32),
        12 => Action::SetMplsTc(r.below(8) as u8),
        13 => Action::SetMplsTtl(r.next() as u8),
        14 => Action::DecMplsTtl,
        7 => Action::OutputTrunc(port(r), 14 + r.below(65522) as u16),
        8 => Action::Clone(
            (0..r.below(3))
                .map(|_| gen_action(r))
                .filter(|a| {
                    !matches!(
                        a,
                        Action::SetTunnel(_) | Action::SetField(SetField::TunId(_))
                    )
                })
                .collect(),
        ),
        0 => {
            let d = gen_subfield(r, true);
            Action::Load((u128::from(r.next()) << d.ofs) & d.mask(), d)
        }
        1 => {
            let src = gen_subfield(r, false);
            let mut dst = gen_subfield(r, true);
            let width = match dst.field {
                Field::Ext(f) => f.bits() as u8,
                Field::Pkt(_) => unreachable!(),
            };
            dst.n_bits = src.n_bits.min(width);
            dst.ofs = dst.ofs.min(width - dst.n_bits);
            let mut src = src;
            src.n_bits = dst.n_bits;
            Action::Move(src, dst)
        }
        2 => {
            let f = if r.chance(30) {
                ExtField::Metadata
            } else {
                ExtField::Reg(r.below(16) as u8)
            };
            let mask = (u128::from(r.next()) & f.full()) | 1;
            let mask = if r.chance(50) { f.full() } else { mask };
            Action::SetField(SetField::Ext(f, u128::from(r.next()) & mask, mask))
        }
        3 => Action::ModNwTos(r.next() as u8 & 0xfc),
        4 => Action::ModNwEcn(r.below(4) as u8),
        5 => Action::Note((0..r.below(6)).map(|_| r.next() as u8).collect()),
        _ => Action::CtClear,
    }
}

fn gen_action(r: &mut Rng) -> Action {
    if r.chance(20) {
        return gen_ovs_action(r);
    }
    match r.below(20) {
        0 => Action::Normal,
        1 => Action::Flood,
        2 => Action::InPort,
        3 => Action::Output(port(r)),
        4 => Action::ModVlanVid(r.below(4096) as u16),
        5 => Action::ModVlanPcp(r.below(8) as u8),
        6 => Action::StripVlan,
        7 => Action::PushVlan(*r.pick(&[0x8100, 0x88a8])),
        8 => Action::ModDlSrc(mac(r)),
        9 => Action::ModDlDst(mac(r)),
        10 => Action::ModNwSrc(ip(r)),
        11 => Action::ModNwDst(ip(r)),
        12 => Action::ModTpSrc(r.next() as u16),
        13 => Action::ModTpDst(r.next() as u16),
        14 => Action::DecTtl,
        15 => Action::SetTunnel(r.next()),
        16 => Action::Resubmit(r.below(255) as u8),
        17 => Action::Ct(gen_ct(r)),
        _ => Action::SetField(match r.below(10) {
            0 => SetField::DlSrc(mac(r)),
            1 => SetField::DlDst(mac(r)),
            2 => SetField::VlanVid(r.below(4096) as u16),
            3 => SetField::VlanPcp(r.below(8) as u8),
            4 => SetField::NwSrc(ip(r)),
            5 => SetField::NwDst(ip(r)),
            6 => SetField::NwTos(r.next() as u8 & 0xfc),
            7 => SetField::TpSrc(r.next() as u16),
            8 => SetField::TpDst(r.next() as u16),
            _ => SetField::TunId(r.next()),
        }),
    }
}

fn nat_port(r: &mut Rng) -> u16 {
    1 + r.below(0xffff) as u16
}

/// A NAT address below 128.0.0.0 and maybe the end of a range above it.
fn nat_addr(r: &mut Rng) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(ip(r)) & 0x7fff_ffff)
}

fn last(r: &mut Rng) -> Option<Ipv4Addr> {
    r.chance(30)
        .then(|| Ipv4Addr::from(0x8000_0000 | r.next() as u32))
}

fn gen_ct(r: &mut Rng) -> CtAction {
    let mut ct = CtAction {
        commit: r.chance(50),
        zone: if r.chance(50) { 0 } else { r.next() as u16 },
        table: r.chance(50).then(|| r.below(255) as u8),
        nat: match r.below(5) {
            0 | 1 => None,
            2 => Some(CtNat::Existing),
            3 => Some(CtNat::Src {
                addr: nat_addr(r),
                last: last(r),
                ports: match r.below(3) {
                    0 => None,
                    1 => {
                        let p = nat_port(r);
                        Some((p, p))
                    }
                    _ => {
                        let (a, b) = (nat_port(r), nat_port(r));
                        Some((a.min(b), a.max(b)))
                    }
                },
            }),
            _ => Some(CtNat::Dst {
                addr: nat_addr(r),
                last: last(r),
                port: r.chance(50).then(|| nat_port(r)),
            }),
        },
        mark: None,
        label: None,
    };
    if ct.commit && r.chance(40) {
        let m = r.next() as u32 | 1;
        ct.mark = Some(Masked {
            value: r.next() as u32 & m,
            mask: if r.chance(50) { u32::MAX } else { m },
        });
    }
    if ct.commit && r.chance(30) {
        let m = (u128::from(r.next()) << 64 | u128::from(r.next())) | 1;
        let m = if r.chance(50) { u128::MAX } else { m };
        ct.label = Some(Masked {
            value: u128::from(r.next()) & m,
            mask: m,
        });
    }
    ct
}

/// IPv6 ext fields for a flow matching `ipv6` (nd_target only with icmp6).
fn gen_ipv6(r: &mut Rng, m: &mut Match) {
    let addr = |r: &mut Rng| (u128::from(r.next()) << 64) | u128::from(r.next());
    let mask = |r: &mut Rng| match r.below(3) {
        0 => u128::MAX,
        1 => u128::MAX.checked_shl(r.below(129) as u32).unwrap_or(0) | (1 << 127),
        _ => addr(r) | 1,
    };
    for f in [ExtField::Ipv6Src, ExtField::Ipv6Dst] {
        if r.chance(40) {
            let (a, k) = (addr(r), mask(r));
            m.ext.set(f, Masked { value: a, mask: k }, "gen").unwrap();
        }
    }
    if r.chance(20) {
        let k = if r.chance(50) {
            0xf_ffff
        } else {
            u128::from(r.next()) & 0xf_ffff | 1
        };
        m.ext
            .set(
                ExtField::Ipv6Label,
                Masked {
                    value: u128::from(r.next()),
                    mask: k,
                },
                "gen",
            )
            .unwrap();
    }
    if m.nw_proto == Some(58) && r.chance(30) {
        m.ext
            .set(
                ExtField::NdTarget,
                Masked {
                    value: addr(r),
                    mask: u128::MAX,
                },
                "gen",
            )
            .unwrap();
    }
}

/// Register, metadata, ct_mark and ct_label matches.
fn gen_regs(r: &mut Rng, m: &mut Match) {
    for _ in 0..r.below(3) {
        let f = match r.below(9) {
            0 | 1 => ExtField::Metadata,
            2 => ExtField::CtMark,
            3 => ExtField::CtLabel,
            // ct_tp_* only with ct_nw_proto, and only with a valid ct_state (below).
            4 => *r.pick(&[ExtField::CtNwProto, ExtField::CtTpSrc, ExtField::CtTpDst]),
            _ => ExtField::Reg(r.below(16) as u8),
        };
        let wide = (u128::from(r.next()) << 64) | u128::from(r.next());
        let mask = if r.chance(50) {
            f.full()
        } else {
            wide & f.full()
        };
        let v = Masked {
            value: wide.rotate_left(7) & mask,
            mask,
        };
        let v = if f == ExtField::CtNwProto {
            Masked {
                value: v.value & 0xff,
                mask: 0xff,
            }
        } else {
            v
        };
        if matches!(
            f,
            ExtField::CtNwProto | ExtField::CtTpSrc | ExtField::CtTpDst
        ) {
            if !matches!(m.dl_type, Some(0x0800 | 0x86dd)) {
                continue;
            }
            if f != ExtField::CtNwProto && m.ext.get(ExtField::CtNwProto).is_none() {
                let p = Masked {
                    value: 6,
                    mask: 0xff,
                };
                let _ = m.ext.set(ExtField::CtNwProto, p, "gen");
            }
            m.ct_state = Some(Masked {
                value: ct_state::TRK | ct_state::EST,
                mask: ct_state::TRK | ct_state::EST,
            });
        }
        let _ = m.ext.set(f, v, "gen");
    }
}

/// A random valid flow in normal form.
fn gen_flow(r: &mut Rng) -> Flow {
    let mut m = Match::default();
    let class = r.below(7);
    let (dl_type, proto) = match class {
        0 => (None, None),
        1 => (
            Some(0x0800),
            if r.chance(50) {
                Some(r.next() as u8)
            } else {
                None
            },
        ),
        2 => (
            Some(0x0806),
            if r.chance(50) {
                Some(r.next() as u8)
            } else {
                None
            },
        ),
        3 => (Some(0x0800), Some(6)),
        4 => (Some(0x0800), Some(17)),
        5 => (Some(0x0800), Some(1)),
        6 if r.chance(70) => (
            Some(0x86dd),
            r.chance(80).then(|| *r.pick(&[6, 17, 58, 132, 4])),
        ),
        6 if r.chance(50) => (Some(*r.pick(&[0x8847, 0x8848])), None),
        _ => (Some(*r.pick(&[0x86dd, 0x88cc, 0x1234])), None),
    };
    m.dl_type = dl_type;
    m.nw_proto = proto;
    if r.chance(30) {
        m.in_port = Some(port(r));
    }
    if r.chance(30) {
        m.dl_src = masked64(r, 0xffff_ffff_ffff);
    }
    if r.chance(30) {
        m.dl_dst = masked64(r, 0xffff_ffff_ffff);
    }
    if r.chance(30) {
        m.dl_vlan = Some(if r.chance(20) {
            NO_VLAN
        } else {
            r.below(4096) as u16
        });
    }
    if r.chance(20) && m.dl_vlan != Some(NO_VLAN) {
        m.dl_vlan_pcp = Some(r.below(8) as u8);
    }
    if r.chance(20) {
        m.tun_id = masked64(r, 0xffff_ffff);
    }
    if r.chance(20) {
        m.ct_state = masked8(r);
    }
    if r.chance(20) {
        m.ct_zone = Some(if r.chance(30) { 0 } else { r.next() as u16 });
    }
    if matches!(dl_type, Some(0x0800 | 0x0806)) {
        if r.chance(60) {
            m.nw_src = masked32(r);
        }
        if r.chance(60) {
            m.nw_dst = masked32(r);
        }
    }
    if matches!(dl_type, Some(0x0800 | 0x86dd)) && r.chance(30) {
        m.nw_tos = Some(r.next() as u8 & 0xfc);
    }
    if dl_type == Some(0x86dd) {
        gen_ipv6(r, &mut m);
    }
    if matches!(dl_type, Some(0x8847 | 0x8848)) && r.chance(70) {
        // Whole parts of the label stack entry: label, tc, bos, ttl.
        let parts = [0xffff_f000u32, 0xe00, 0x100, 0xff];
        let mask = parts.iter().filter(|_| r.chance(50)).fold(0, |a, p| a | p);
        m.mpls = (mask != 0).then(|| Masked {
            value: r.next() as u32 & mask,
            mask,
        });
    }
    if matches!(dl_type, Some(0x0800 | 0x86dd)) && r.chance(20) {
        let (value, mask) = *r.pick(&[(0, 1), (1, 1), (1, 3), (3, 3), (0, 2), (2, 2)]);
        m.nw_frag = Some(Masked { value, mask });
    }
    if m.dl_vlan.is_none() && m.dl_vlan_pcp.is_none() && r.chance(15) {
        m.vlan_tci = masked16(r);
    }
    gen_regs(r, &mut m);
    match proto {
        Some(6 | 17) if matches!(dl_type, Some(0x0800 | 0x86dd)) => {
            m.tp_src = if r.chance(50) { masked16(r) } else { None };
            m.tp_dst = if r.chance(50) { masked16(r) } else { None };
        }
        Some(58) if dl_type == Some(0x86dd) && m.ext.get(ExtField::NdTarget).is_some() => {
            m.tp_src = Some(Masked {
                value: *r.pick(&[135, 136]),
                mask: 0xffff,
            });
        }
        Some(1) if dl_type == Some(0x0800) => {
            m.tp_src = r.chance(50).then(|| Masked {
                value: r.below(256) as u16,
                mask: 0xffff,
            });
            m.tp_dst = r.chance(50).then(|| Masked {
                value: r.below(256) as u16,
                mask: 0xffff,
            });
        }
        Some(58) if dl_type == Some(0x86dd) => {
            m.tp_src = r.chance(50).then(|| Masked {
                value: r.below(256) as u16,
                mask: 0xffff,
            });
            m.tp_dst = r.chance(50).then(|| Masked {
                value: r.below(256) as u16,
                mask: 0xffff,
            });
        }
        _ => {}
    }
    m.normalize();
    let table = if r.chance(50) { 0 } else { r.below(255) as u8 };
    let mut actions: Vec<Action> = (0..r.below(5)).map(|_| gen_action(r)).collect();
    if dl_type == Some(0x86dd) {
        // ct on IPv6 is refused (also inside clone).
        fn no_ct(list: &mut Vec<Action>) {
            list.retain(|a| !matches!(a, Action::Ct(_)));
            for a in list {
                if let Action::Clone(inner) = a {
                    no_ct(inner);
                }
            }
        }
        no_ct(&mut actions);
    }
    if r.chance(10) {
        actions.insert(0, Action::Meter(1 + r.below(1000) as u32));
    }
    if table < 254 && r.chance(10) {
        actions.push(Action::GotoTable(
            table + 1 + r.below(u64::from(254 - table)) as u8,
        ));
    }
    Flow {
        table,
        priority: if r.chance(20) {
            DEFAULT_PRIORITY
        } else {
            r.next() as u16
        },
        cookie: if r.chance(50) { 0 } else { r.next() },
        idle_timeout: if r.chance(70) { 0 } else { r.next() as u16 },
        hard_timeout: if r.chance(70) { 0 } else { r.next() as u16 },
        m,
        actions,
        send_flow_rem: r.chance(10),
    }
}

#[test]
fn prop_display_parse_round_trip() {
    let mut r = Rng(0x1234_5678_9abc_def1);
    for i in 0..20_000 {
        let f = gen_flow(&mut r);
        let text = f.to_string();
        assert_eq!(parse_flow(&text).as_ref(), Ok(&f), "case {i}: {text}");
        let stats = FlowStats {
            n_packets: r.next() >> 20,
            n_bytes: r.next() >> 10,
            created_ms: r.below(1 << 40),
            used_ms: r.below(1 << 40),
        };
        let line = f.dump_line(&stats, r.below(1 << 41));
        assert_eq!(parse_flow(&line).as_ref(), Ok(&f), "case {i}: {line}");
    }
}

#[test]
fn prop_parser_never_panics_on_mutations() {
    // Byte-level mutations of valid flows must give Ok or Err, never a panic.
    let mut r = Rng(99);
    for _ in 0..20_000 {
        let mut b = gen_flow(&mut r).to_string().into_bytes();
        for _ in 0..1 + r.below(4) {
            let i = r.below(b.len() as u64 + 1) as usize;
            let c = *r.pick(b",= :/()->0xfFabc1.-");
            match r.below(3) {
                0 if i < b.len() => b[i] = c,
                1 if i < b.len() => {
                    b.remove(i);
                }
                _ => b.insert(i, c),
            }
        }
        let s = String::from_utf8_lossy(&b);
        let _ = parse_flow(&s);
        let _ = parse_filter(&s);
    }
}

// ---- classifier against a reference -------------------------------------------------------

/// Names p1..p4 are ports 101..104, numbers are themselves: no two spellings of one port.
fn resolve(p: &PortRef) -> Option<u16> {
    match p {
        PortRef::Num(n) => Some(*n),
        PortRef::Name(n) => n.strip_prefix('p')?.parse::<u16>().ok().map(|k| 100 + k),
    }
}

const MACS: [u64; 3] = [0x0000_0000_0001, 0x0200_0000_0002, 0x0100_5e00_0001];
const TPS: [u16; 4] = [22, 80, 443, 0x1234];

fn small_ip(r: &mut Rng) -> u32 {
    0x0a00_0000 | ((r.below(3) as u32) << 8) | r.below(3) as u32
}

/// A flow over one of a handful of mask templates, with values from small domains.
fn gen_rule(r: &mut Rng, templates: u64, tables: u64) -> Flow {
    let mut m = Match::default();
    let ipm = |v: u32, bits: u32| {
        Some(Masked {
            value: v & (u32::MAX << (32 - bits)),
            mask: u32::MAX << (32 - bits),
        })
    };
    match r.below(templates) {
        0 => {}
        1 => {
            m.in_port = Some(if r.chance(50) {
                PortRef::Num(1 + r.below(3) as u16)
            } else {
                PortRef::Name(format!("p{}", 1 + r.below(2)))
            })
        }
        2 => {
            m.dl_type = Some(0x0800);
            m.nw_src = ipm(small_ip(r), 24);
        }
        3 => {
            m.dl_type = Some(0x0800);
            m.nw_src = ipm(small_ip(r), 32);
            m.nw_dst = ipm(small_ip(r), 32);
        }
        4 => {
            m.dl_type = Some(0x0800);
            m.nw_proto = Some(6);
            m.tp_dst = Some(Masked {
                value: *r.pick(&TPS),
                mask: 0xffff,
            });
        }
        5 => {
            m.dl_dst = Some(Masked {
                value: *r.pick(&MACS),
                mask: 0xffff_ffff_ffff,
            })
        }
        6 => m.dl_vlan = Some(*r.pick(&[NO_VLAN, 10, 20])),
        7 => {
            m.dl_type = Some(0x0800);
            m.nw_proto = Some(6);
            m.nw_src = ipm(small_ip(r), 16);
            m.tp_dst = Some(Masked {
                value: *r.pick(&TPS) & 0xff00,
                mask: 0xff00,
            });
        }
        8 => {
            m.dl_dst = Some(Masked {
                value: 0x0100_0000_0000 & *r.pick(&MACS),
                mask: 0x0100_0000_0000,
            })
        }
        9 => {
            m.dl_type = Some(0x0800);
            m.nw_tos = Some(*r.pick(&[0, 4, 8]));
            m.dl_vlan_pcp = Some(r.below(2) as u8);
        }
        10 => m.ct_state = Some(*r.pick(&CT_MATCHES)),
        11 => {
            m.ct_state = Some(*r.pick(&CT_MATCHES[1..]));
            m.ct_zone = Some(*r.pick(&CT_ZONES));
            m.dl_type = Some(0x0800);
        }
        _ => {
            m.tun_id = Some(Masked {
                value: r.below(2),
                mask: *r.pick(&[1, 0xffff_ffff]),
            });
            m.ct_state = Some(Masked {
                value: ct_state::TRK,
                mask: ct_state::TRK | ct_state::INV,
            });
        }
    }
    // Fields added for OVS's flow language, on top of any template: fragment bits, a TCI
    // mask dl_vlan cannot say, and registers (0 in every looked-up packet: rules with equal
    // packed keys and different registers share a chain).
    if r.chance(10) {
        let (value, mask) = *r.pick(&[(0, 1), (1, 1), (1, 3), (3, 3)]);
        m.nw_frag = Some(Masked { value, mask });
    }
    if m.dl_vlan.is_none() && m.dl_vlan_pcp.is_none() && r.chance(10) {
        m.vlan_tci = Some(*r.pick(&[
            Masked {
                value: 0x1000,
                mask: 0x1000,
            },
            Masked {
                value: 0,
                mask: 0x1000,
            },
            Masked {
                value: 0x100a,
                mask: 0x10ff,
            },
        ]));
    }
    if r.chance(15) {
        let v = Masked {
            value: r.below(2) as u128,
            mask: 0xffff_ffff,
        };
        m.ext.set(ExtField::Reg(0), v, "gen").unwrap();
    }
    m.normalize();
    Flow {
        table: r.below(tables) as u8,
        priority: if r.chance(70) {
            r.below(4) as u16
        } else {
            r.next() as u16
        },
        m,
        actions: vec![Action::Output(PortRef::Num(r.below(8) as u16))],
        ..Flow::default()
    }
}

/// `-trk`, `+trk+new`, `+est+trk`, `+est-rpl+trk`, `+inv+trk`.
const CT_MATCHES: [Masked<u8>; 5] = {
    use ct_state::*;
    [
        Masked {
            value: 0,
            mask: TRK,
        },
        Masked {
            value: TRK | NEW,
            mask: TRK | NEW,
        },
        Masked {
            value: TRK | EST,
            mask: TRK | EST,
        },
        Masked {
            value: TRK | EST,
            mask: TRK | EST | RPL,
        },
        Masked {
            value: TRK | INV,
            mask: TRK | INV,
        },
    ]
};
const CT_ZONES: [u16; 3] = [0, 1, 5];
/// Packet states: untracked, new, established both ways, invalid, related+snat.
const CT_STATES: [u8; 6] = {
    use ct_state::*;
    [
        0,
        TRK | NEW,
        TRK | EST,
        TRK | EST | RPL,
        TRK | INV,
        TRK | REL | SNAT,
    ]
};

fn gen_packet(r: &mut Rng) -> PacketKey {
    PacketKey {
        in_port: *r.pick(&[1, 2, 3, 101, 102, 7]),
        dl_src: *r.pick(&MACS),
        dl_dst: *r.pick(&MACS),
        dl_type: *r.pick(&[0x0800, 0x0800, 0x0806]),
        vlan: *r.pick(&[NO_VLAN, 10, 20, 0]),
        vlan_pcp: r.below(2) as u8,
        nw_src: small_ip(r),
        nw_dst: small_ip(r),
        nw_proto: *r.pick(&[6, 17, 1]),
        nw_tos: r.below(12) as u8,
        tp_src: *r.pick(&TPS),
        tp_dst: *r.pick(&TPS),
        tun_id: *r.pick(&[0, 1, 0x1_0000_0001]),
        ct_state: *r.pick(&CT_STATES),
        ct_zone: *r.pick(&CT_ZONES),
        nw_frag: *r.pick(&[0, 0, 1, 3]),
    }
}

/// The TCI bits a match constrains (`dl_vlan`, `dl_vlan_pcp`, `vlan_tci` together; the CFI
/// bit 0x1000 means tagged).
fn tci_of(m: &Match) -> Option<Masked<u16>> {
    let mut t = Masked {
        value: 0u16,
        mask: 0u16,
    };
    match m.dl_vlan {
        Some(NO_VLAN) => {
            t = Masked {
                value: 0,
                mask: 0xffff,
            }
        }
        Some(v) => {
            t.value |= 0x1000 | v;
            t.mask |= 0x1fff;
        }
        None => {}
    }
    if let Some(p) = m.dl_vlan_pcp {
        t.value |= 0x1000 | (u16::from(p) << 13);
        t.mask |= 0xf000;
    }
    if let Some(x) = m.vlan_tci {
        t.value |= x.value;
        t.mask |= x.mask;
    }
    (t.mask != 0).then_some(t)
}

#[derive(Default)]
struct Reference {
    /// (id, flow, seq) in no particular order.
    flows: Vec<(FlowId, Flow, u64)>,
    seq: u64,
}

impl Reference {
    fn add(&mut self, id: FlowId, f: Flow) -> bool {
        self.seq += 1;
        let same = self
            .flows
            .iter_mut()
            .find(|(_, g, _)| g.table == f.table && g.priority == f.priority && g.m == f.m);
        match same {
            Some(e) => {
                assert_eq!(e.0, id, "replaced a different flow");
                *e = (id, f, self.seq);
                true
            }
            None => {
                self.flows.push((id, f, self.seq));
                false
            }
        }
    }

    fn lookup(&self, table: u8, k: &PacketKey) -> Option<FlowId> {
        self.flows
            .iter()
            .filter(|(_, f, _)| f.table == table && f.m.matches(k, &resolve))
            .max_by_key(|(_, f, s)| (f.priority, *s))
            .map(|(id, _, _)| *id)
    }

    /// Field-wise "flow match at least as specific as filter match".
    fn covers(f: &Match, g: &Match) -> bool {
        fn m<T>(f: Option<Masked<T>>, g: Option<Masked<T>>) -> bool
        where
            T: Copy + PartialEq + std::ops::BitAnd<Output = T>,
        {
            match (f, g) {
                (_, None) => true,
                (None, Some(_)) => false,
                (Some(f), Some(g)) => f.mask & g.mask == g.mask && f.value & g.mask == g.value,
            }
        }
        fn e<T: PartialEq>(f: &Option<T>, g: &Option<T>) -> bool {
            g.is_none() || f == g
        }
        e(
            &f.in_port.as_ref().map(resolve),
            &g.in_port.as_ref().map(resolve),
        ) && m(f.dl_src, g.dl_src)
            && m(f.dl_dst, g.dl_dst)
            && e(&f.dl_type, &g.dl_type)
            && m(tci_of(f), tci_of(g))
            && m(f.nw_src, g.nw_src)
            && m(f.nw_dst, g.nw_dst)
            && e(&f.nw_proto, &g.nw_proto)
            && e(&f.nw_tos, &g.nw_tos)
            && m(f.tp_src, g.tp_src)
            && m(f.tp_dst, g.tp_dst)
            && m(f.tun_id, g.tun_id)
            && m(f.ct_state, g.ct_state)
            && e(&f.ct_zone, &g.ct_zone)
            && m(f.nw_frag, g.nw_frag)
            && f.ext.within(&g.ext)
    }

    fn del(&mut self, filter: &FlowFilter, strict: bool) -> Vec<FlowId> {
        let prio = filter.priority.unwrap_or(DEFAULT_PRIORITY);
        let hit = |f: &Flow| {
            filter.table.is_none_or(|t| t == f.table)
                && if strict {
                    f.priority == prio && f.m == filter.m
                } else {
                    Self::covers(&f.m, &filter.m)
                }
        };
        let mut out: Vec<FlowId> = self
            .flows
            .iter()
            .filter(|(_, f, _)| hit(f))
            .map(|e| e.0)
            .collect();
        self.flows.retain(|(_, f, _)| !hit(f));
        out.sort();
        out
    }
}

fn run_reference(seed: u64, templates: u64, tables: u64, steps: usize) {
    let mut r = Rng(seed);
    let mut c = Classifier::new();
    let mut reference = Reference::default();
    let mut emc = Emc::new(64);
    for step in 0..steps {
        match r.below(100) {
            0..60 => {
                let f = gen_rule(&mut r, templates, tables);
                let added = c.add(f.clone(), 0, resolve).unwrap();
                let replaced = reference.add(added.id, f);
                assert_eq!(added.replaced, replaced, "step {step}");
            }
            60..63 => {
                // Non-strict delete with a random template filter.
                let g = gen_rule(&mut r, templates, tables);
                let filter = FlowFilter {
                    table: r.chance(50).then_some(g.table),
                    m: g.m,
                    ..FlowFilter::default()
                };
                let mut got = c.del(&filter, false, resolve).unwrap();
                got.sort();
                assert_eq!(
                    got,
                    reference.del(&filter, false),
                    "step {step} non-strict {filter:?}"
                );
            }
            63..66 => {
                // Strict delete of an existing flow (or a near miss).
                let Some((_, f, _)) = reference
                    .flows
                    .get(r.below(reference.flows.len() as u64 + 1) as usize)
                    .cloned()
                else {
                    continue;
                };
                let filter = FlowFilter {
                    table: Some(f.table),
                    priority: Some(if r.chance(80) {
                        f.priority
                    } else {
                        f.priority.wrapping_add(1)
                    }),
                    m: f.m,
                    ..FlowFilter::default()
                };
                assert_eq!(
                    c.del(&filter, true, resolve).unwrap(),
                    reference.del(&filter, true),
                    "step {step} strict"
                );
            }
            _ => {
                let k = gen_packet(&mut r);
                let t = r.below(tables) as u8;
                let want = reference.lookup(t, &k);
                let got = c.lookup(t, &k);
                assert_eq!(
                    got,
                    want,
                    "step {step} key {k:?} table {t}: got {:?}, want {:?}",
                    got.and_then(|i| c.get(i)).map(|f| f.to_string()),
                    want.and_then(|i| c.get(i)).map(|f| f.to_string())
                );
                assert_eq!(emc.lookup(&c, t, &k), want, "step {step} emc");
            }
        }
        assert_eq!(c.len(), reference.flows.len());
    }
}

#[test]
fn prop_classifier_matches_reference() {
    for seed in 1..=8u64 {
        run_reference(seed * 0x9e37_79b9, 13, 2, 6_000);
    }
    // Few masks, one table: long chains of equal keys with many priorities.
    run_reference(77, 3, 1, 10_000);
}

#[test]
fn prop_classifier_many_flows() {
    // Thousands of flows, then many lookups, then everything deleted through filters.
    let mut r = Rng(4242);
    let mut c = Classifier::new();
    let mut reference = Reference::default();
    for _ in 0..5_000 {
        let f = gen_rule(&mut r, 13, 1);
        let a = c.add(f.clone(), 0, resolve).unwrap();
        reference.add(a.id, f);
    }
    let mut emc = Emc::new(256);
    let pool: Vec<PacketKey> = (0..300).map(|_| gen_packet(&mut r)).collect();
    for i in 0..20_000 {
        let k = if i % 2 == 0 {
            gen_packet(&mut r)
        } else {
            *r.pick(&pool)
        };
        let want = reference.lookup(0, &k);
        assert_eq!(c.lookup(0, &k), want);
        assert_eq!(emc.lookup(&c, 0, &k), want);
    }
    assert!(emc.hits > 0);
    let mut got = c.del(&FlowFilter::default(), false, resolve).unwrap();
    got.sort();
    assert_eq!(got, reference.del(&FlowFilter::default(), false));
    assert!(c.is_empty());
    assert_eq!(c.lookup(0, &gen_packet(&mut r)), None);
}

// ---- measurement ---------------------------------------------------------------------------

/// Mask number `i` (of up to 20): tcp with varying nw_src/nw_dst prefixes and tp_dst.
fn bench_match(i: usize, r: &mut Rng) -> Match {
    const SRC: [u32; 5] = [8, 16, 24, 32, 0];
    const DST: [u32; 4] = [32, 24, 16, 0];
    let (sb, db) = (SRC[i % 5], DST[i / 5 % 4]);
    let pm = |bits: u32, v: u32| {
        (bits != 0).then(|| {
            let mask = u32::MAX << (32 - bits);
            Masked {
                value: v & mask,
                mask,
            }
        })
    };
    let mut m = Match {
        dl_type: Some(0x0800),
        nw_proto: Some(6),
        nw_src: pm(sb, r.next() as u32),
        nw_dst: pm(db, r.next() as u32),
        tp_dst: Some(Masked {
            value: r.next() as u16,
            mask: 0xffff,
        }),
        ..Match::default()
    };
    m.normalize();
    m
}

fn ns_per(iters: usize, mut f: impl FnMut(usize)) -> f64 {
    let t = Instant::now();
    for i in 0..iters {
        f(i);
    }
    t.elapsed().as_nanos() as f64 / iters as f64
}

#[test]
#[ignore]
fn bench_flow_lookup() {
    let no_ports = |_: &PortRef| None;
    println!("flows  masks  hit ns  miss ns  emc-hit ns  (release build, 1 thread)");
    for &n in &[1usize, 100, 10_000, 100_000] {
        for &masks in &[1usize, 5, 20] {
            let mut r = Rng(7 + n as u64 * 31 + masks as u64);
            let mut c = Classifier::new();
            let mut keys = Vec::new();
            for j in 0..n {
                let m = bench_match(j % masks, &mut r);
                let f = Flow {
                    priority: r.below(1000) as u16,
                    m,
                    actions: vec![Action::Normal],
                    ..Flow::default()
                };
                let k = f.m.to_packet_key(&no_ports).unwrap();
                c.add(f, 0, no_ports).unwrap();
                keys.push(k);
            }
            let hit_keys: Vec<PacketKey> =
                (0..4096).map(|i| keys[(i * 7919) % keys.len()]).collect();
            let miss_keys: Vec<PacketKey> = (0..4096)
                .map(|_| PacketKey {
                    dl_type: 0x0800,
                    nw_proto: 6,
                    nw_src: r.next() as u32,
                    nw_dst: r.next() as u32,
                    tp_dst: r.next() as u16,
                    ..PacketKey::default()
                })
                .collect();
            let iters = 2_000_000;
            let hit = ns_per(iters, |i| {
                black_box(c.lookup(0, black_box(&hit_keys[i & 4095])));
            });
            let miss = ns_per(iters, |i| {
                black_box(c.lookup(0, black_box(&miss_keys[i & 4095])));
            });
            let mut emc = Emc::new(8192);
            for k in &hit_keys[..256] {
                emc.lookup(&c, 0, k);
            }
            let e = ns_per(iters, |i| {
                black_box(emc.lookup(&c, 0, black_box(&hit_keys[i & 255])));
            });
            assert!(c.lookup(0, &hit_keys[0]).is_some());
            println!("{n:>6} {masks:>6} {hit:>7.1} {miss:>8.1} {e:>11.1}");
        }
    }
    // Control-plane cost: adding 100k flows over 20 masks.
    let mut r = Rng(5);
    let flows: Vec<Flow> = (0..100_000)
        .map(|j| Flow {
            priority: r.below(1000) as u16,
            m: bench_match(j % 20, &mut r),
            ..Flow::default()
        })
        .collect();
    let mut c = Classifier::new();
    let t = Instant::now();
    for f in flows {
        c.add(f, 0, no_ports).unwrap();
    }
    let add = t.elapsed();
    let text: Vec<String> = c.iter().map(|(_, f)| f.to_string()).collect();
    let t = Instant::now();
    for s in &text {
        black_box(parse_flow(s).unwrap());
    }
    println!(
        "add 100k flows (20 masks): {add:?}; parse 100k flow lines: {:?}",
        t.elapsed()
    );
}
