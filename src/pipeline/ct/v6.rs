//! Connection tracking of IPv6 for the flow `ct(...)` action (the shared conntrack tables key
//! on IPv4 tuples): one table per zone, with the same `ct_state` meaning as IPv4.
//!
//! Contract:
//! - Tracked: TCP, UDP and ICMPv6 echo (the identifier is the port) whose header follows the
//!   IPv6 header directly; an ICMPv6 error quoting a packet of a tracked connection is
//!   `+trk+rel` (`+rpl` toward the original sender; packet too big among them, so path MTU
//!   discovery passes a `+rel` flow); anything else (other ICMPv6 types, extension headers,
//!   fragments, truncated packets) is `+trk+inv`.
//! - A packet of no connection is `+new` (committed or not); a connection is `+new` until it
//!   has seen a reply, `+est` after; reply-direction packets are `+rpl`. `commit` creates it,
//!   with `exec(...)`'s mark and label.
//! - Timeouts are the conntrack ones (`Timeouts::default()`): TCP before a reply as SYN_SENT,
//!   after as ESTABLISHED, after a RST as CLOSE, after FINs both ways as TIME_WAIT; UDP as
//!   UNREPLIED/REPLIED/ASSURED (a UDP stream, as in `conntrack::State::Stream`); ICMPv6 as ICMP. Expired entries are removed when met and by `expire`.
//! - At most `ZONE_LIMIT` connections per zone: beyond, commits leave packets `+new`.
//! - NAT of IPv6 is not done: a `ct` with `nat(src=...)`/`nat(dst=...)` on an IPv6 packet gives
//!   `+trk+inv` (flows that say so for IPv6 are refused when added).

use std::collections::HashMap;

use super::{CtResult, ZONE_LIMIT};
use crate::conntrack::{State, TCP_FIN, TCP_RST, Timeouts};
use crate::flow::{CtAction, CtNat, ct_state};

/// One direction of an IPv6 connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct Key6 {
    src: u128,
    dst: u128,
    proto: u8,
    sport: u16,
    dport: u16,
}

impl Key6 {
    fn reverse(&self) -> Key6 {
        Key6 {
            src: self.dst,
            dst: self.src,
            proto: self.proto,
            sport: self.dport,
            dport: self.sport,
        }
    }
}

struct Conn6 {
    state: State,
    replied: bool,
    /// Seconds at the first packet (a replied UDP flow active 2 s on is a stream).
    created: u32,
    fin: [bool; 2],
    last_seen: u32,
    mark: u32,
    label: u128,
}

/// The IPv6 connections of one zone, by original-direction tuple.
#[derive(Default)]
pub(super) struct Table6 {
    conns: HashMap<Key6, Conn6>,
    /// When `expire` last swept (seconds): it sweeps at most once a second.
    swept: u32,
}

const ICMP6_ECHO_REQUEST: u8 = 128;
const ICMP6_ECHO_REPLY: u8 = 129;

/// The tuple and TCP flags of an IPv6 packet `ip`, and for ICMPv6 its type and code; None if
/// it cannot be tracked.
pub(super) fn key6(ip: &[u8]) -> Option<(Key6, u8, (u16, u16))> {
    if ip.len() < 40 {
        return None;
    }
    let word = |i: usize| u128::from_be_bytes(ip[i..i + 16].try_into().expect("16 bytes"));
    let (src, dst, proto) = (word(8), word(24), ip[6]);
    let l4 = &ip[40..];
    let port = |o: usize| u16::from_be_bytes([l4[o], l4[o + 1]]);
    let (sport, dport, flags, tc) = match proto {
        6 if l4.len() >= 20 => (port(0), port(2), l4[13], (port(0), port(2))),
        17 if l4.len() >= 8 => (port(0), port(2), 0, (port(0), port(2))),
        58 if l4.len() >= 8 && matches!(l4[0], ICMP6_ECHO_REQUEST | ICMP6_ECHO_REPLY) => {
            let tc = (u16::from(l4[0]), u16::from(l4[1]));
            (port(4), port(4), 0, tc)
        }
        _ => return None,
    };
    let key = Key6 {
        src,
        dst,
        proto,
        sport,
        dport,
    };
    Some((key, flags, tc))
}

fn timeout(proto: u8, c: &Conn6) -> u32 {
    // ICMPv6 takes ICMP's timeout.
    Timeouts::default().of(if proto == 58 { 1 } else { proto }, c.state)
}

impl Table6 {
    /// Connections tracked.
    pub(super) fn len(&self) -> usize {
        self.conns.len()
    }

    /// Remove expired connections (a whole sweep, at most once a second).
    pub(super) fn expire(&mut self, now: u32) {
        if now == self.swept || self.conns.is_empty() {
            return;
        }
        self.swept = now;
        self.conns
            .retain(|k, c| now.wrapping_sub(c.last_seen) < timeout(k.proto, c));
    }

    /// `ct-show` lines.
    pub(super) fn rows(&self, zone: u16) -> Vec<String> {
        self.conns
            .iter()
            .map(|(k, c)| {
                format!(
                    "zone={zone} ipv6 proto={} src={} sport={} dst={} dport={} {}",
                    k.proto,
                    std::net::Ipv6Addr::from(k.src),
                    k.sport,
                    std::net::Ipv6Addr::from(k.dst),
                    k.dport,
                    c.state
                )
            })
            .collect()
    }

    /// Run `a` for the IPv6 packet `ip` at `now` (seconds).
    pub(super) fn apply(&mut self, ip: &[u8], a: &CtAction, now: u32) -> CtResult {
        let inv = CtResult::only(ct_state::TRK | ct_state::INV);
        if matches!(a.nat, Some(CtNat::Src { .. } | CtNat::Dst { .. })) {
            return inv;
        }
        let Some((key, flags, (tp_src, tp_dst))) = key6(ip) else {
            return self.related(ip, now).unwrap_or(inv);
        };
        let tuple = |k: &Key6, sp, dp| (0, 0, k.proto, sp, dp);
        let new = CtResult {
            orig: tuple(&key, tp_src, tp_dst),
            ..CtResult::only(ct_state::TRK | ct_state::NEW)
        };
        let (orig, reply) = match self.find(&key, now) {
            Some(found) => found,
            None if a.commit && self.conns.len() < ZONE_LIMIT => {
                let state = if key.proto == 6 {
                    State::SynSent
                } else {
                    State::Unreplied
                };
                let c = Conn6 {
                    state,
                    replied: false,
                    created: now,
                    fin: [false; 2],
                    last_seen: now,
                    mark: 0,
                    label: 0,
                };
                self.conns.insert(key, c);
                (key, false)
            }
            None => return new,
        };
        let c = self.conns.get_mut(&orig).expect("found or inserted");
        c.last_seen = now;
        if reply {
            c.replied = true;
        }
        if orig.proto == 6 {
            c.fin[usize::from(reply)] |= flags & TCP_FIN != 0;
            c.state = match () {
                _ if flags & TCP_RST != 0 => State::Close,
                _ if c.fin == [true, true] => State::TimeWait,
                _ if c.replied => State::Established,
                _ => State::SynSent,
            };
        } else if c.replied {
            // (A reply already seen before this packet, as `conntrack::State::Stream`.)
            let stream = orig.proto == 17
                && (c.state == State::Stream
                    || (c.state == State::Replied
                        && now.wrapping_sub(c.created) >= crate::conntrack::UDP_STREAM_AFTER_S));
            c.state = if stream {
                State::Stream
            } else {
                State::Replied
            };
        }
        if a.commit {
            if let Some(m) = a.mark {
                c.mark = (c.mark & !m.mask) | m.value;
            }
            if let Some(l) = a.label {
                c.label = (c.label & !l.mask) | l.value;
            }
        }
        let mut state = ct_state::TRK;
        state |= match (reply, c.replied) {
            (true, _) => ct_state::RPL | ct_state::EST,
            (false, true) => ct_state::EST,
            (false, false) => ct_state::NEW,
        };
        let orig_tc = match orig.proto {
            58 => (u16::from(ICMP6_ECHO_REQUEST), 0),
            _ => (orig.sport, orig.dport),
        };
        CtResult {
            state,
            mark: c.mark,
            label: c.label,
            orig: tuple(&orig, orig_tc.0, orig_tc.1),
        }
    }

    /// `+trk+rel` (and `+rpl` back toward the original sender) for an ICMPv6 error (destination
    /// unreachable, packet too big, time exceeded, parameter problem) that quotes a packet of a
    /// connection of this zone; None otherwise. Nothing is counted or changed.
    fn related(&mut self, ip: &[u8], now: u32) -> Option<CtResult> {
        if ip.len() < 48 || ip[6] != 58 || !(1..=4).contains(&ip[40]) {
            return None;
        }
        // The quoted packet (as it was sent) starts after the 8-byte ICMPv6 header; it is one
        // the connection carried, so reversed it is the other direction's tuple.
        let (quoted, _, _) = key6(&ip[48..])?;
        let (orig, quoted_was_reply) = self.find(&quoted.reverse(), now)?;
        let c = &self.conns[&orig];
        let mut state = ct_state::TRK | ct_state::REL;
        // `find` says whether the reversed tuple is the reply direction: then the quoted
        // packet went the original way and the error goes back the reply way.
        if quoted_was_reply {
            state |= ct_state::RPL;
        }
        let orig_tc = match orig.proto {
            58 => (u16::from(ICMP6_ECHO_REQUEST), 0),
            _ => (orig.sport, orig.dport),
        };
        Some(CtResult {
            state,
            mark: c.mark,
            label: c.label,
            orig: (0, 0, orig.proto, orig_tc.0, orig_tc.1),
        })
    }

    /// The connection of `key` (its original tuple, and whether `key` is the reply
    /// direction); an expired one is removed.
    fn find(&mut self, key: &Key6, now: u32) -> Option<(Key6, bool)> {
        let rev = key.reverse();
        let (orig, reply) = if self.conns.contains_key(key) {
            (*key, false)
        } else if self.conns.contains_key(&rev) {
            (rev, true)
        } else {
            return None;
        };
        let c = &self.conns[&orig];
        if now.wrapping_sub(c.last_seen) >= timeout(orig.proto, c) {
            self.conns.remove(&orig);
            return None;
        }
        Some((orig, reply))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An IPv6 UDP packet a -> b with ports.
    fn udp(a: u8, b: u8, sp: u16, dp: u16) -> Vec<u8> {
        let mut ip = vec![0u8; 48];
        ip[0] = 0x60;
        ip[4..6].copy_from_slice(&8u16.to_be_bytes());
        ip[6] = 17;
        ip[7] = 64;
        ip[23] = a;
        ip[39] = b;
        ip[40..42].copy_from_slice(&sp.to_be_bytes());
        ip[42..44].copy_from_slice(&dp.to_be_bytes());
        ip
    }

    fn commit() -> CtAction {
        CtAction {
            commit: true,
            ..CtAction::default()
        }
    }

    #[test]
    fn states_and_timeouts() {
        let mut t = Table6::default();
        let (look, c) = (CtAction::default(), commit());
        let new = ct_state::TRK | ct_state::NEW;
        assert_eq!(t.apply(&udp(1, 2, 5, 53), &look, 0).state, new);
        assert_eq!(t.len(), 0, "not committed");
        assert_eq!(t.apply(&udp(1, 2, 5, 53), &c, 0).state, new);
        assert_eq!(t.len(), 1);
        let r = t.apply(&udp(2, 1, 53, 5), &look, 10);
        assert_eq!(r.state, ct_state::TRK | ct_state::EST | ct_state::RPL);
        assert_eq!(r.orig, (0, 0, 17, 5, 53));
        assert_eq!(
            t.apply(&udp(1, 2, 5, 53), &look, 20).state,
            ct_state::TRK | ct_state::EST
        );
        // UDP seen both ways 2 s on (a stream) times out after 180 s without packets.
        t.expire(199);
        assert_eq!(t.len(), 1);
        t.expire(200);
        assert_eq!(t.len(), 0);
        assert_eq!(t.apply(&udp(2, 1, 53, 5), &look, 201).state, new);
        // Not trackable: truncated, or NAT asked for.
        assert_eq!(
            t.apply(&udp(1, 2, 5, 53)[..44], &c, 0).state,
            ct_state::TRK | ct_state::INV
        );
        let nat = CtAction {
            nat: Some(CtNat::Dst {
                addr: std::net::Ipv4Addr::new(1, 2, 3, 4),
                last: None,
                port: None,
            }),
            ..commit()
        };
        assert_eq!(
            t.apply(&udp(1, 2, 5, 53), &nat, 0).state,
            ct_state::TRK | ct_state::INV
        );
    }
}
