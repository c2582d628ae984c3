//! Liveness and room on a bridge's OpenFlow socket (`BRIDGE.mgmt`): what keeps a few silent or
//! stuck clients from holding every connection.
//!
//! Contract (the times are [`Limits`]; the listener applies them, see `listener.rs`):
//! - A connection must send its HELLO within `hello_timeout` of being accepted, or it is closed.
//! - A connection that sent no whole message for `probe_interval` is sent an ECHO_REQUEST (OVS's
//!   inactivity probe); if still no whole message arrives within another `probe_interval`, it
//!   is closed. Bytes of a message that never completes (a partial header, a byte now and
//!   then) are not activity. A connection whose message is being handled is left alone.
//! - At most `max_conns` connections per bridge: when full, a new connection closes the oldest
//!   one that has not sent its HELLO yet, else the one silent longest (no whole message for the
//!   longest time) that is not being served, so a new client gets in unless every connection
//!   is in the middle of a request.
//! - A refused connection is logged at most once a second, with the number refused since the
//!   last line (`crate::log_limit`).
//!
//! The policy ([`verdict`], [`pick_victim`]) takes the time as an argument, so its tests need
//! no clock.

use std::time::{Duration, Instant};

/// Connections one bridge serves at a time.
pub const MAX_CONNS: usize = 64;
/// Silence (no whole message) after which a connection is probed with an ECHO_REQUEST, and the
/// time it then has to send a message (OVS's default inactivity probe for controllers).
pub const PROBE_INTERVAL: Duration = Duration::from_secs(5);
/// A connection's HELLO must arrive within this time of its accept.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the deadlines are checked.
pub const TICK: Duration = Duration::from_millis(250);

/// The limits of one bridge's socket; [`Limits::default`] uses the constants of this module.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections served at once.
    pub max_conns: usize,
    /// See [`PROBE_INTERVAL`].
    pub probe_interval: Duration,
    /// See [`HELLO_TIMEOUT`].
    pub hello_timeout: Duration,
    /// See [`TICK`].
    pub tick: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_conns: MAX_CONNS,
            probe_interval: PROBE_INTERVAL,
            hello_timeout: HELLO_TIMEOUT,
            tick: TICK,
        }
    }
}

/// What the listener knows of one connection's liveness.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Liveness {
    /// When it was accepted.
    pub accepted: Instant,
    /// The version its HELLO negotiated (None: no HELLO yet).
    pub version: Option<u8>,
    /// When its last whole message arrived or was answered (its accept before any).
    pub heard: Instant,
    /// A message of it is being handled (or answered).
    pub busy: bool,
    /// When an ECHO_REQUEST was sent that has not been answered by a message since.
    pub probed: Option<Instant>,
}

impl Liveness {
    /// A connection accepted at `now`.
    pub fn new(now: Instant) -> Self {
        Liveness {
            accepted: now,
            version: None,
            heard: now,
            busy: false,
            probed: None,
        }
    }
}

/// Why a connection is closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Close {
    /// No HELLO within `hello_timeout`.
    NoHello,
    /// No message within `probe_interval` of an inactivity probe.
    NoProbeReply,
}

impl std::fmt::Display for Close {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Close::NoHello => "no HELLO in time",
            Close::NoProbeReply => "no reply to an inactivity probe",
        })
    }
}

/// What to do with a connection now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing.
    Keep,
    /// Send an ECHO_REQUEST of this version.
    Probe(u8),
    /// Close it.
    Close(Close),
}

/// What to do at `now` with a connection in state `l`.
pub fn verdict(l: &Liveness, now: Instant, limits: &Limits) -> Verdict {
    if l.busy {
        return Verdict::Keep;
    }
    let since = |t: Instant| now.saturating_duration_since(t);
    let Some(version) = l.version else {
        if since(l.accepted) > limits.hello_timeout {
            return Verdict::Close(Close::NoHello);
        }
        return Verdict::Keep;
    };
    match l.probed {
        Some(t) if since(t) > limits.probe_interval => Verdict::Close(Close::NoProbeReply),
        Some(_) => Verdict::Keep,
        None if since(l.heard) > limits.probe_interval => Verdict::Probe(version),
        None => Verdict::Keep,
    }
}

/// The connection to close to admit a new one: the oldest without HELLO, else the one not busy
/// that was heard from longest ago; None when every connection is busy.
pub fn pick_victim<'a, K: Copy + 'a>(
    conns: impl IntoIterator<Item = (K, &'a Liveness)>,
) -> Option<K> {
    conns
        .into_iter()
        .filter(|(_, l)| !l.busy)
        .min_by_key(|(_, l)| (l.version.is_some(), l.heard))
        .map(|(k, _)| k)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn limits() -> Limits {
        Limits {
            probe_interval: 5 * S,
            hello_timeout: 5 * S,
            ..Limits::default()
        }
    }

    #[test]
    fn no_hello_is_closed_at_its_deadline() {
        let t0 = Instant::now();
        let l = Liveness::new(t0);
        assert_eq!(verdict(&l, t0 + 5 * S, &limits()), Verdict::Keep);
        assert_eq!(
            verdict(&l, t0 + 6 * S, &limits()),
            Verdict::Close(Close::NoHello)
        );
    }

    #[test]
    fn silence_is_probed_then_closed_and_a_message_clears_the_probe() {
        let t0 = Instant::now();
        let mut l = Liveness {
            version: Some(4),
            ..Liveness::new(t0)
        };
        assert_eq!(verdict(&l, t0 + 4 * S, &limits()), Verdict::Keep);
        assert_eq!(verdict(&l, t0 + 6 * S, &limits()), Verdict::Probe(4));
        l.probed = Some(t0 + 6 * S);
        assert_eq!(verdict(&l, t0 + 10 * S, &limits()), Verdict::Keep);
        assert_eq!(
            verdict(&l, t0 + 12 * S, &limits()),
            Verdict::Close(Close::NoProbeReply)
        );
        // The ECHO_REPLY (any whole message) came at 9 s: alive, heard from at 9 s.
        l.probed = None;
        l.heard = t0 + 9 * S;
        assert_eq!(verdict(&l, t0 + 12 * S, &limits()), Verdict::Keep);
        assert_eq!(verdict(&l, t0 + 15 * S, &limits()), Verdict::Probe(4));
    }

    #[test]
    fn a_connection_being_served_is_left_alone() {
        let t0 = Instant::now();
        let l = Liveness {
            busy: true,
            probed: Some(t0),
            ..Liveness::new(t0)
        };
        assert_eq!(verdict(&l, t0 + 60 * S, &limits()), Verdict::Keep);
        assert_eq!(pick_victim([(1, &l)]), None);
    }

    #[test]
    fn victim_is_the_oldest_without_hello_else_the_silent_longest() {
        let t0 = Instant::now();
        let talker = Liveness {
            version: Some(1),
            heard: t0 + 9 * S,
            ..Liveness::new(t0)
        };
        let quiet = Liveness {
            version: Some(1),
            heard: t0 + 2 * S,
            ..Liveness::new(t0 + S)
        };
        let no_hello_new = Liveness::new(t0 + 8 * S);
        let no_hello_old = Liveness::new(t0 + 7 * S);
        let busy_no_hello = Liveness {
            busy: true,
            ..Liveness::new(t0)
        };
        let all = [
            (1, &talker),
            (2, &quiet),
            (3, &no_hello_new),
            (4, &no_hello_old),
            (5, &busy_no_hello),
        ];
        assert_eq!(pick_victim(all), Some(4));
        assert_eq!(pick_victim([all[0], all[1], all[4]]), Some(2));
        assert_eq!(pick_victim([all[0]]), Some(1));
    }
}
