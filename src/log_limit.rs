//! At most one log line a second for one kind of event, the events in between counted and
//! reported with the next line: what keeps a flood of refused connections or junk records
//! from flooding the log (the counters count every event; the log says it is happening).
//!
//! Contract: [`LogLimit::admit`] says whether the event at `now` may be logged, with the
//! number of events held back since the last line; [`LogLimit::flush`] reports the held-back
//! count once the second is over when no new event came to carry it. Time is passed in, so
//! the tests need no clock. For the control plane (the etcd agent, the OpenFlow listener);
//! the datapath's once-a-second gates (the FDB-full warning, NAT failures) take the worker's
//! injected clock in whole seconds and keep no count.

use std::time::{Duration, Instant};

/// The least time between two lines.
pub const EVERY: Duration = Duration::from_secs(1);

/// See the module documentation.
#[derive(Debug, Default)]
pub struct LogLimit {
    last: Option<Instant>,
    held: u64,
}

impl LogLimit {
    /// Some(events not logged since the last line, this one excluded) when the event at `now`
    /// may be logged; None (and counted) otherwise.
    pub fn admit(&mut self, now: Instant) -> Option<u64> {
        if self.recent(now) {
            self.held += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.held))
    }

    /// The events not logged, once [`EVERY`] has passed since the last line (None if none).
    pub fn flush(&mut self, now: Instant) -> Option<u64> {
        if self.held == 0 || self.recent(now) {
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.held))
    }

    fn recent(&self, now: Instant) -> bool {
        self.last
            .is_some_and(|t| now.saturating_duration_since(t) < EVERY)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found trying uvs as a hostile peer: 5,000 junk etcd leases gave 5,000 WARN lines, and
    /// every refused OpenFlow connection one.
    #[test]
    fn one_line_a_second_with_the_count_held_back() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut t = LogLimit::default();
        assert_eq!(t.admit(ms(0)), Some(0));
        for i in 1..=500 {
            assert_eq!(t.admit(ms(i)), None);
        }
        assert_eq!(t.flush(ms(900)), None, "within the second");
        assert_eq!(t.admit(ms(1000)), Some(500));
        assert_eq!(t.admit(ms(1001)), None);
        assert_eq!(t.flush(ms(2001)), Some(1));
        assert_eq!(t.flush(ms(4000)), None, "nothing held");
        assert_eq!(t.admit(ms(4001)), Some(0));
    }
}
