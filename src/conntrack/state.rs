//! Connection states, the TCP state machine and the timeouts of every state.
//!
//! The TCP tracker is simplified (no sequence-number windows) but follows the real handshake
//! and teardown:
//!
//! ```text
//!  NEW --SYN--> SYN_SENT --SYN-ACK (reply)--> SYN_RECV --ACK (orig)--> ESTABLISHED
//!   |               `-- any other reply packet ---------------------------^
//!   `-- non-SYN first packet (mid-stream pickup, like Linux's tcp_loose=1) -^
//!  ESTABLISHED (or earlier) --FIN one way--> FIN_WAIT --FIN other way--> LAST_ACK
//!  LAST_ACK --ACK from the side that did not send the second FIN--> TIME_WAIT
//!  any state --RST--> CLOSE;   TIME_WAIT/CLOSE --SYN (orig)--> SYN_SENT (port reuse)
//! ```
//!
//! UDP, ICMP and other protocols are `UNREPLIED` until a packet is seen in the reply direction,
//! then `REPLIED` (Linux's "seen reply", not assured); a replied UDP connection that sees a
//! packet 2 s or more after its first becomes `ASSURED` ([`State::Stream`]: Linux's assured
//! UDP stream, 180 s).

use std::fmt;

use super::Direction;

/// TCP FIN flag.
pub const TCP_FIN: u8 = 0x01;
/// TCP SYN flag.
pub const TCP_SYN: u8 = 0x02;
/// TCP RST flag.
pub const TCP_RST: u8 = 0x04;
/// TCP ACK flag.
pub const TCP_ACK: u8 = 0x10;

/// The state of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum State {
    /// TCP: created, no packet accounted yet.
    New,
    /// TCP: SYN seen from the originator.
    SynSent,
    /// TCP: SYN-ACK seen from the responder.
    SynRecv,
    /// TCP: handshake completed (or picked up mid-stream).
    Established,
    /// TCP: FIN seen in one direction (closing).
    FinWait,
    /// TCP: FIN seen both ways, waiting for the last ACK.
    LastAck,
    /// TCP: FIN both ways and the last ACK seen.
    TimeWait,
    /// TCP: reset.
    Close,
    /// UDP/ICMP/other: only the original direction seen.
    Unreplied,
    /// UDP/ICMP/other: traffic seen in both directions (UDP: within 2 s of its first
    /// packet; not assured).
    Replied,
    /// UDP: traffic both ways and still active [`UDP_STREAM_AFTER_S`] after its first packet
    /// (Linux's assured UDP stream; a lone query and its answer stay [`State::Replied`]).
    Stream,
}

/// A replied UDP connection that sees a packet this many seconds after its first (after the
/// reply) becomes a
/// [`State::Stream`] (Linux: `stream_ts`, 2 s).
pub const UDP_STREAM_AFTER_S: u32 = 2;

impl State {
    /// Upper-case name, as conntrack-tools prints it.
    pub fn name(self) -> &'static str {
        match self {
            State::New => "NEW",
            State::SynSent => "SYN_SENT",
            State::SynRecv => "SYN_RECV",
            State::Established => "ESTABLISHED",
            State::FinWait => "FIN_WAIT",
            State::LastAck => "LAST_ACK",
            State::TimeWait => "TIME_WAIT",
            State::Close => "CLOSE",
            State::Unreplied => "UNREPLIED",
            State::Replied => "REPLIED",
            State::Stream => "ASSURED",
        }
    }
}

impl State {
    /// Not assured (Linux's !IPS_ASSURED): TCP before ESTABLISHED or after a reset or the
    /// last ACK; UDP but a [`State::Stream`]; ICMP and other protocols (Linux assures neither).
    /// A full table may drop these early, so one tenant's one-shot UDP exchanges (a query
    /// and its answer) cannot hold the table against everyone's new connections.
    pub fn unassured(self) -> bool {
        !matches!(
            self,
            State::Established | State::FinWait | State::LastAck | State::Stream
        )
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Idle timeouts in seconds: a connection is removed once `now - last_seen >= timeout` for its
/// current state. Every packet accounted with `update` restarts the timer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP NEW and SYN_SENT. Default 40 s (Linux 120 s): longer than a client's longest SYN
    /// retransmission gap (32 s), short enough that unanswered SYNs (a scan, a SYN flood)
    /// leave the table three times sooner.
    pub tcp_syn_sent: u32,
    /// TCP SYN_RECV. Default 30 s (Linux 60 s).
    pub tcp_syn_recv: u32,
    /// TCP ESTABLISHED. Default 7440 s (2 h 4 min), the minimum RFC 5382 (REQ-5) allows a NAT;
    /// Linux uses 432000 s (5 days), which keeps dead flows and their NAT ports for too long.
    pub tcp_established: u32,
    /// TCP FIN_WAIT (one FIN seen). Default 120 s (Linux `nf_conntrack_tcp_timeout_fin_wait`).
    pub tcp_fin_wait: u32,
    /// TCP LAST_ACK. Default 30 s (Linux `nf_conntrack_tcp_timeout_last_ack`).
    pub tcp_last_ack: u32,
    /// TCP TIME_WAIT. Default 120 s (Linux `nf_conntrack_tcp_timeout_time_wait`).
    pub tcp_time_wait: u32,
    /// TCP CLOSE (after RST). Default 10 s (Linux `nf_conntrack_tcp_timeout_close`).
    pub tcp_close: u32,
    /// UDP with no reply yet, or replied within 2 s of its first packet. Default 30 s (Linux
    /// `nf_conntrack_udp_timeout`).
    pub udp_unreplied: u32,
    /// UDP stream (seen both ways, active 2 s after its first packet). Default 180 s (Linux
    /// before 5.x; 120 s since; RFC 4787 REQ-5 asks for >= 120 s).
    pub udp_replied: u32,
    /// ICMP (echo), either state. Default 30 s (Linux `nf_conntrack_icmp_timeout`).
    pub icmp: u32,
    /// Any other protocol, either state. Default 600 s (Linux `nf_conntrack_generic_timeout`).
    pub other: u32,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            tcp_syn_sent: 40,
            tcp_syn_recv: 30,
            tcp_established: 7440,
            tcp_fin_wait: 120,
            tcp_last_ack: 30,
            tcp_time_wait: 120,
            tcp_close: 10,
            udp_unreplied: 30,
            udp_replied: 180,
            icmp: 30,
            other: 600,
        }
    }
}

impl Timeouts {
    /// The timeout of `state` for protocol `proto`.
    #[inline]
    pub fn of(&self, proto: u8, state: State) -> u32 {
        use super::key::{PROTO_ICMP, PROTO_UDP};
        match state {
            State::New | State::SynSent => self.tcp_syn_sent,
            State::SynRecv => self.tcp_syn_recv,
            State::Established => self.tcp_established,
            State::FinWait => self.tcp_fin_wait,
            State::LastAck => self.tcp_last_ack,
            State::TimeWait => self.tcp_time_wait,
            State::Close => self.tcp_close,
            State::Stream => self.udp_replied,
            State::Unreplied | State::Replied => match proto {
                PROTO_UDP => self.udp_unreplied,
                PROTO_ICMP => self.icmp,
                _ => self.other,
            },
        }
    }
}

/// Per-connection TCP teardown memory: which directions sent a FIN, and who sent the second.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct TcpMemo {
    /// Bit 0: FIN from the originator; bit 1: FIN from the responder.
    fins: u8,
    /// Direction bit of the FIN that completed `fins` (valid in LAST_ACK).
    last_fin: u8,
}

#[inline]
fn dir_bit(dir: Direction) -> u8 {
    match dir {
        Direction::Original => 1,
        Direction::Reply => 2,
    }
}

/// The next TCP state after a segment with `flags` travelling in `dir`.
#[inline]
pub(crate) fn tcp_next(state: State, memo: &mut TcpMemo, dir: Direction, flags: u8) -> State {
    let syn = flags & TCP_SYN != 0;
    let ack = flags & TCP_ACK != 0;
    if flags & TCP_RST != 0 {
        return State::Close;
    }
    if syn {
        return tcp_syn(state, memo, dir, ack);
    }
    if flags & TCP_FIN != 0 {
        return tcp_fin(state, memo, dir);
    }
    match (state, dir) {
        (State::New, _) => State::Established,
        (State::SynSent | State::SynRecv, Direction::Reply) => State::Established,
        (State::SynRecv, Direction::Original) if ack => State::Established,
        (State::LastAck, d) if ack && dir_bit(d) != memo.last_fin => State::TimeWait,
        (s, _) => s,
    }
}

fn tcp_syn(state: State, memo: &mut TcpMemo, dir: Direction, ack: bool) -> State {
    match (state, dir, ack) {
        (State::New | State::SynSent, Direction::Original, false) => State::SynSent,
        (State::TimeWait | State::Close, Direction::Original, false) => {
            // A new connection reusing the tuple (Linux re-creates the entry the same way).
            *memo = TcpMemo::default();
            State::SynSent
        }
        (State::New | State::SynSent, Direction::Reply, true) => State::SynRecv,
        (s, _, _) => s,
    }
}

fn tcp_fin(state: State, memo: &mut TcpMemo, dir: Direction) -> State {
    match state {
        State::LastAck | State::TimeWait | State::Close => state,
        _ => {
            let bit = dir_bit(dir);
            memo.fins |= bit;
            if memo.fins == 3 {
                memo.last_fin = bit;
                State::LastAck
            } else {
                State::FinWait
            }
        }
    }
}

/// The next state of a UDP/ICMP/other connection after a packet in `dir`, `age` seconds after
/// its first packet (`udp`: the connection is UDP).
#[inline]
pub(crate) fn other_next(state: State, dir: Direction, udp: bool, age: u32) -> State {
    match (state, dir) {
        (State::Unreplied, Direction::Original) => State::Unreplied,
        // A reply already seen and traffic 2 s on (Linux: IPS_SEEN_REPLY is set after the
        // packet that brings it, so a first reply never assures, however late).
        (State::Replied, _) if udp && age >= UDP_STREAM_AFTER_S => State::Stream,
        (State::Unreplied, Direction::Reply) => State::Replied,
        (s, _) => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Direction::{Original as O, Reply as R};

    fn run(steps: &[(Direction, u8, State)]) {
        let mut s = State::New;
        let mut m = TcpMemo::default();
        for (i, &(d, f, want)) in steps.iter().enumerate() {
            s = tcp_next(s, &mut m, d, f);
            assert_eq!(s, want, "step {i}: {d:?} flags {f:#x}");
        }
    }

    #[test]
    fn handshake_and_orderly_close() {
        run(&[
            (O, TCP_SYN, State::SynSent),
            (O, TCP_SYN, State::SynSent),
            (R, TCP_SYN | TCP_ACK, State::SynRecv),
            (O, TCP_ACK, State::Established),
            (R, TCP_ACK, State::Established),
            (O, TCP_FIN | TCP_ACK, State::FinWait),
            (R, TCP_ACK, State::FinWait),
            (R, TCP_FIN | TCP_ACK, State::LastAck),
            (R, TCP_ACK, State::LastAck),
            (O, TCP_ACK, State::TimeWait),
            (O, TCP_SYN, State::SynSent),
        ]);
    }

    #[test]
    fn reply_traffic_after_syn_establishes_and_rst_closes() {
        run(&[
            (O, TCP_SYN, State::SynSent),
            (R, TCP_ACK, State::Established),
            (R, TCP_RST, State::Close),
            (R, TCP_ACK, State::Close),
        ]);
        run(&[(O, TCP_ACK, State::Established)]);
        run(&[(O, TCP_RST | TCP_ACK, State::Close)]);
    }

    #[test]
    fn responder_closes_first() {
        run(&[
            (O, TCP_SYN, State::SynSent),
            (R, TCP_SYN | TCP_ACK, State::SynRecv),
            (O, TCP_ACK, State::Established),
            (R, TCP_FIN | TCP_ACK, State::FinWait),
            (O, TCP_FIN | TCP_ACK, State::LastAck),
            (O, TCP_ACK, State::LastAck),
            (R, TCP_ACK, State::TimeWait),
        ]);
    }

    #[test]
    fn timeouts_per_protocol() {
        let t = Timeouts::default();
        assert_eq!(t.of(6, State::Established), 7440);
        assert_eq!(t.of(17, State::Unreplied), 30);
        assert_eq!(t.of(17, State::Replied), 30);
        assert_eq!(t.of(17, State::Stream), 180);
        assert_eq!(t.of(1, State::Replied), 30);
        assert_eq!(t.of(47, State::Unreplied), 600);
    }
}
