//! Storm control: a per-port budget of flooded frames (`add-port ... flood_rate=N[/BURST]`).
//!
//! Contract:
//! - A frame that the learning switch (NORMAL) floods from a port (broadcast, multicast other
//!   than the IEEE link-local addresses, unknown unicast) takes one token from that port's
//!   bucket; with none left it is dropped before it is copied to every other port (counted
//!   `flood-limit` on the port it came from). Frames to a learned MAC, to the gateway, and
//!   frames flows send to `FLOOD`/`ALL` or ports take nothing.
//! - The bucket holds at most `burst` frames and fills at `rate` frames a second (time passed
//!   in, whole milliseconds: IO-free). Default [`DEFAULT_FLOOD_RATE`] a second, bursts of
//!   [`DEFAULT_FLOOD_BURST`]: far above what ARP, DHCP, ND and mDNS need, far below a storm
//!   (a container's `trafgen`-style broadcast flood reaches ~250,000 frames a second here,
//!   each copied to every port of the bridge). `flood_rate=0` (or `off`) lifts the limit.
//! - With several workers, every worker's copy of a port's limit draws from one shared bucket
//!   (`tokens::SharedBucket`, the same arithmetic in thousandths of a frame), so a port whose
//!   queues (or fanout share) several workers poll gets the configured budget in total, not
//!   once per worker (it got twice the budget with two workers). One worker alone keeps the
//!   bucket in the limit itself: no atomics.

use std::sync::Arc;

use crate::tokens::{SharedBucket, SharedTokens};

/// Default flooded frames a second a port may send into its bridge.
pub const DEFAULT_FLOOD_RATE: u32 = 10_000;

/// Default burst (frames) of [`DEFAULT_FLOOD_RATE`].
pub const DEFAULT_FLOOD_BURST: u32 = 10_000;

/// The most frames a second (or of burst) `flood_rate` takes.
pub const MAX_FLOOD_RATE: u32 = 100_000_000;

/// One port's budget of flooded frames.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FloodLimit {
    /// Frames a second; 0: no limit.
    rate: u32,
    /// Most frames at once.
    burst: u32,
    /// Tokens, in thousandths of a frame (so a millisecond at any rate adds a whole number).
    milli: u64,
    /// When `milli` was last filled (ms).
    at_ms: u64,
    /// The bucket every worker's copy draws from (several workers), instead of `milli`.
    shared: Option<SharedTokens>,
}

impl Default for FloodLimit {
    fn default() -> Self {
        FloodLimit::new(DEFAULT_FLOOD_RATE, DEFAULT_FLOOD_BURST)
    }
}

impl FloodLimit {
    /// `rate` frames a second, bursts of `burst` (at least 1); rate 0: no limit. Starts full.
    pub fn new(rate: u32, burst: u32) -> FloodLimit {
        let burst = burst.max(1);
        FloodLimit {
            rate,
            burst,
            milli: u64::from(burst) * 1000,
            at_ms: 0,
            shared: None,
        }
    }

    /// No limit.
    pub fn off() -> FloodLimit {
        FloodLimit::new(0, 1)
    }

    /// `N[/BURST]` frames a second (burst: default N, at least 1), or `0`/`off`: no limit.
    /// Errors name the field and the value.
    pub fn parse(text: &str) -> Result<FloodLimit, String> {
        let t = text.trim();
        if t == "off" {
            return Ok(FloodLimit::off());
        }
        let num = |s: &str| -> Result<u32, String> {
            match s.trim().parse::<u32>() {
                Ok(n) if n <= MAX_FLOOD_RATE => Ok(n),
                _ => Err(format!(
                    "flood_rate: '{text}' (frames a second[/burst frames], 0 to {MAX_FLOOD_RATE}, or off)"
                )),
            }
        };
        let (rate, burst) = match t.split_once('/') {
            Some((r, b)) => (num(r)?, num(b)?),
            None => {
                let r = num(t)?;
                (r, r)
            }
        };
        Ok(FloodLimit::new(rate, burst))
    }

    /// Frames a second (0: no limit).
    pub fn rate(&self) -> u32 {
        self.rate
    }

    /// Burst in frames.
    pub fn burst(&self) -> u32 {
        self.burst
    }

    /// The default rate and burst (whatever the bucket holds).
    pub fn is_default(&self) -> bool {
        (self.rate, self.burst) == (DEFAULT_FLOOD_RATE, DEFAULT_FLOOD_BURST)
    }

    /// `N/BURST` or `off`, as `parse` takes it.
    pub fn describe(&self) -> String {
        if self.rate == 0 {
            "off".to_string()
        } else {
            format!("{}/{}", self.rate, self.burst)
        }
    }

    /// The same limit with the bucket's state of `old` kept (a `set-port` changing the rate
    /// does not hand out a fresh burst), capped at the new burst; a shared bucket stays
    /// shared.
    pub fn keeping(self, old: &FloodLimit) -> FloodLimit {
        FloodLimit {
            milli: old.milli.min(u64::from(self.burst) * 1000),
            at_ms: old.at_ms,
            shared: old.shared.clone(),
            ..self
        }
    }

    /// The same limit drawing from `bucket`, which the other workers' copies of this port's
    /// limit draw from too.
    pub fn shared(self, bucket: Arc<SharedBucket>) -> FloodLimit {
        FloodLimit {
            shared: Some(SharedTokens(bucket)),
            ..self
        }
    }

    /// Take a token for one flooded frame at `now_ms`; false: over the limit, drop it.
    #[inline]
    pub fn take(&mut self, now_ms: u64) -> bool {
        if self.rate == 0 {
            return true;
        }
        let full = u64::from(self.burst) * 1000;
        if let Some(SharedTokens(b)) = &self.shared {
            // Frames a second times milliseconds: thousandths of a frame, as below.
            b.refill(u64::from(self.rate), full as i64, now_ms);
            return b.take(1000, full as i64);
        }
        // Filled on every take (time spent full must not count: a bucket that started full
        // and was emptied at once would otherwise be refilled whole).
        let elapsed = now_ms.saturating_sub(self.at_ms);
        self.milli = (self.milli + elapsed.saturating_mul(u64::from(self.rate))).min(full);
        self.at_ms = self.at_ms.max(now_ms);
        if self.milli < 1000 {
            return false;
        }
        self.milli -= 1000;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_rate() {
        let mut f = FloodLimit::new(1000, 10);
        let took = (0..50).filter(|_| f.take(5)).count();
        assert_eq!(took, 10, "the burst");
        // 1,000 a second: one a millisecond.
        assert!(f.take(6));
        assert!(!f.take(6));
        assert_eq!((0..20).filter(|_| f.take(9)).count(), 3);
        // A long idle refills to the burst, no more.
        assert_eq!((0..50).filter(|_| f.take(100_000)).count(), 10);
    }

    /// Time spent full does not count: emptied at once after a long idle, the bucket refills
    /// at the rate, not to a second full burst (the storm test let 10,000 more through).
    #[test]
    fn idle_time_while_full_is_not_credited() {
        let mut f = FloodLimit::new(1000, 100);
        assert_eq!((0..500).filter(|_| f.take(60_000)).count(), 100);
        assert_eq!((0..500).filter(|_| f.take(60_001)).count(), 1);
    }

    #[test]
    fn off_and_parse() {
        let mut f = FloodLimit::parse("off").unwrap();
        assert!((0..100_000).all(|_| f.take(0)));
        assert_eq!(FloodLimit::parse("0").unwrap().describe(), "off");
        assert_eq!(FloodLimit::parse("500").unwrap().describe(), "500/500");
        assert_eq!(FloodLimit::parse(" 500/20 ").unwrap().describe(), "500/20");
        for bad in ["-1", "x", "5/", "/5", "200000000"] {
            let e = FloodLimit::parse(bad).unwrap_err();
            assert!(e.starts_with("flood_rate: '") && e.contains(bad), "{e}");
        }
        assert_eq!(FloodLimit::default().describe(), "10000/10000");
    }

    /// Two copies of a limit sharing a bucket hand out one budget between them.
    #[test]
    fn shared_copies_draw_from_one_bucket() {
        let bucket = Arc::new(SharedBucket::new(100_000));
        let mut a = FloodLimit::new(1000, 100).shared(bucket.clone());
        let mut b = FloodLimit::new(1000, 100).shared(bucket);
        let took = (0..100).filter(|_| a.take(5)).count() + (0..100).filter(|_| b.take(5)).count();
        assert_eq!(took, 100, "one burst between the two");
        assert!(
            a.take(6) && !b.take(6),
            "then one a millisecond between the two"
        );
        let mut c = FloodLimit::new(2000, 100).keeping(&b);
        assert!(!c.take(6), "a new rate keeps the shared bucket");
    }

    #[test]
    fn a_new_rate_keeps_the_bucket() {
        let mut f = FloodLimit::new(100, 100);
        assert_eq!((0..200).filter(|_| f.take(1)).count(), 100);
        let mut g = FloodLimit::new(1000, 1000).keeping(&f);
        assert!(!g.take(1), "no fresh burst");
        assert!(g.take(2));
    }
}
