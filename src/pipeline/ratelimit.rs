//! Per-port rate limits (`add-port ... rate_rx=KBPS[/BURST] rate_tx=KBPS[/BURST]`): token
//! bucket shapers for what a port sends (rx: frames the switch receives from it, a container's
//! egress) and what it is sent (tx: frames queued toward it, a container's ingress). The CNI
//! plugin's `bandwidth` capability is made of them.
//!
//! Contract:
//! - A bucket holds `burst` kbit (default: one second of the rate, as `add-meter`) and refills
//!   at `rate` kbit/s on the datapath's millisecond clock (`Datapath::now_ms`). A frame leaves
//!   when the bucket holds its length in bits, or the whole bucket when the frame is larger (a
//!   TAP super-frame); it then takes its length, so the bucket may go into debt and the
//!   long-run rate still holds.
//! - Frames that do not fit wait, in order, in the port's queue of at most 25 ms of the rate
//!   plus the burst (the `tbf` limit the reference bandwidth plugin sets); beyond that they are
//!   dropped and counted (`rate-rx`, `rate-tx`). Waiting instead of dropping at once is what
//!   lets TCP settle at the rate: a policer that drops every excess frame costs TCP whole
//!   windows and retransmission timeouts (measured here: half the rate).
//! - rx limits run on each received burst before the pipeline ([`shape_rx`]); tx limits run
//!   over each limited port's output queue just before it is handed to the port
//!   ([`shape_tx`]). Both run every worker iteration, burst or not, so waiting frames leave on
//!   time; the worker sleeps at most 1 ms while any wait ([`Datapath::rate_limited_waiting`]).
//!   Removing the port frees its waiting frames.
//! - With several workers each has its own shaper of a port direction (its own queue of
//!   waiting frames) but they draw from one bucket ([`SharedBucket`], atomics), so the port's
//!   rate is the configured one whichever workers its frames reach. A flow's frames reach one
//!   worker, so they keep their order; but the queues are one per worker, not one FIFO: a new
//!   flow on a worker with an empty queue passes while another worker's queue is full and
//!   drops (one worker: it waits behind the full queue, and is dropped if it arrives while
//!   that queue is full). `stats` shows each port's waiting bytes (`shaper_backlog`, summed
//!   over the workers).
//! - IO-free and deterministic: time comes in as milliseconds.

use std::collections::VecDeque;
use std::sync::Arc;

pub use crate::tokens::SharedBucket;
use crate::tokens::SharedTokens;

use crate::counters::DropReason;
use crate::datapath::Datapath;
use crate::fdb::PortId;
use crate::packet::{Desc, Frames};

/// How long frames may wait, in milliseconds of the rate, beyond the burst.
pub const LATENCY_MS: u64 = 25;

/// One port direction's token bucket and waiting queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shaper {
    /// Rate in kbit/s.
    pub rate_kbps: u64,
    /// Bucket size in kbit.
    pub burst_kbits: u64,
    /// Bits in the bucket (negative: debt from a frame larger than the bucket).
    tokens: i64,
    last_ms: u64,
    /// Frames waiting for tokens, oldest first.
    waiting: VecDeque<Desc>,
    waiting_bytes: u64,
    /// The bucket every worker's shaper of this port direction draws from (several workers);
    /// None: `tokens` and `last_ms` above.
    shared: Option<SharedTokens>,
}

impl Shaper {
    /// A full bucket, nothing waiting.
    pub fn new(rate_kbps: u64, burst_kbits: u64) -> Shaper {
        Shaper {
            rate_kbps,
            burst_kbits,
            tokens: (burst_kbits * 1000) as i64,
            last_ms: 0,
            waiting: VecDeque::new(),
            waiting_bytes: 0,
            shared: None,
        }
    }

    /// Draw from `bucket` (shared with other workers' shapers of this port direction) instead
    /// of this shaper's own.
    pub fn share(mut self, bucket: Arc<SharedBucket>) -> Shaper {
        self.shared = Some(SharedTokens(bucket));
        self
    }

    /// Parse `KBPS[/BURST_KBIT]` (rate 1 kbit/s to 100 Gbit/s; burst at least 16 kbit, one
    /// full-size frame; default one second of the rate). Errors name `field`.
    pub fn parse(field: &str, s: &str) -> Result<Shaper, String> {
        let bad = |what: &str| format!("{field}: '{s}': {what} (KBPS[/BURST_KBIT])");
        let (r, b) = match s.split_once('/') {
            Some((r, b)) => (r, Some(b)),
            None => (s, None),
        };
        let rate: u64 = r.parse().map_err(|_| bad("rate is not a number"))?;
        if !(1..=100_000_000).contains(&rate) {
            return Err(bad("rate must be 1 to 100000000 kbit/s"));
        }
        let burst = match b {
            Some(b) => b.parse().map_err(|_| bad("burst is not a number"))?,
            None => rate.max(64),
        };
        if !(16..=100_000_000).contains(&burst) {
            return Err(bad("burst must be 16 to 100000000 kbit"));
        }
        Ok(Shaper::new(rate, burst))
    }

    /// `KBPS/BURST_KBIT`, as [`Shaper::parse`] reads it.
    pub fn text(&self) -> String {
        format!("{}/{}", self.rate_kbps, self.burst_kbits)
    }

    /// Whether frames are waiting.
    #[inline]
    pub fn is_waiting(&self) -> bool {
        !self.waiting.is_empty()
    }

    /// Bytes waiting for tokens (`stats`' `shaper_backlog`, as `tc -s qdisc`'s backlog).
    pub fn backlog_bytes(&self) -> u64 {
        self.waiting_bytes
    }

    /// Most bytes that may wait.
    fn limit_bytes(&self) -> u64 {
        (self.rate_kbps * LATENCY_MS + self.burst_kbits * 1000) / 8
    }

    fn refill(&mut self, now_ms: u64) {
        let cap = (self.burst_kbits * 1000) as i64;
        if let Some(SharedTokens(b)) = &self.shared {
            b.refill(self.rate_kbps, cap, now_ms);
            return;
        }
        let dt = now_ms.saturating_sub(self.last_ms).min(1 << 20) as i64;
        self.last_ms = self.last_ms.max(now_ms);
        // kbit/s times ms is bits.
        self.tokens = (self.tokens + dt * self.rate_kbps as i64).min(cap);
    }

    /// Take tokens for a frame of `bytes` if the bucket allows it.
    fn take(&mut self, bytes: u32) -> bool {
        let cap = (self.burst_kbits * 1000) as i64;
        let need = i64::from(bytes) * 8;
        if let Some(SharedTokens(b)) = &self.shared {
            return b.take(need, cap);
        }
        if self.tokens >= need.min(cap) {
            self.tokens -= need;
            true
        } else {
            false
        }
    }

    /// Shape `batch` at `now_ms`: on return it holds the frames that may leave now (waiting
    /// ones first, in order); the others wait, or are freed when the queue is full. Returns the
    /// number freed and their bytes.
    pub fn shape(&mut self, batch: &mut Vec<Desc>, now_ms: u64, frames: &mut Frames) -> (u64, u64) {
        self.refill(now_ms);
        let limit = self.limit_bytes();
        let (mut dropped, mut dropped_bytes) = (0, 0);
        for d in batch.drain(..) {
            if !self.waiting.is_empty() && self.waiting_bytes + u64::from(d.len) > limit {
                frames.free(d.addr);
                dropped += 1;
                dropped_bytes += u64::from(d.len);
                continue;
            }
            self.waiting_bytes += u64::from(d.len);
            self.waiting.push_back(d);
        }
        while let Some(&d) = self.waiting.front() {
            if !self.take(d.len) {
                break;
            }
            self.waiting_bytes -= u64::from(d.len);
            batch.extend(self.waiting.pop_front());
        }
        (dropped, dropped_bytes)
    }

    /// The waiting frames (the port is going away).
    pub fn drain(&mut self) -> impl Iterator<Item = Desc> + '_ {
        self.waiting_bytes = 0;
        self.waiting.drain(..)
    }
}

/// Shape what port `id` received (`batch`) by its `rate_rx` limit; frames freed for a full
/// queue are counted as received (packets and bytes) and dropped (`rate-rx`).
#[inline]
pub fn shape_rx(dp: &mut Datapath, frames: &mut Frames, id: PortId, batch: &mut Vec<Desc>) {
    let now = dp.now_ms;
    let Some(port) = dp.ports.get_mut(id as usize).and_then(|p| p.as_mut()) else {
        return;
    };
    let Some(s) = port.rate_rx.as_mut() else {
        return;
    };
    let (dropped, bytes) = s.shape(batch, now, frames);
    port.counters.rx_packets += dropped;
    port.counters.rx_bytes += bytes;
    port.counters.drops[DropReason::RateRx as usize] += dropped;
}

/// Shape each tx-limited port's output queue (call just before the queues go to the ports).
pub fn shape_tx(dp: &mut Datapath, frames: &mut Frames) {
    let now = dp.now_ms;
    let Datapath { ports, out, .. } = dp;
    for (id, slot) in ports.iter_mut().enumerate() {
        let Some(port) = slot.as_mut() else { continue };
        let Some(s) = port.rate_tx.as_mut() else {
            continue;
        };
        let Some(q) = out.get_mut(id) else { continue };
        if q.is_empty() && !s.is_waiting() {
            continue;
        }
        let (dropped, _) = s.shape(q, now, frames);
        port.counters.drops[DropReason::RateTx as usize] += dropped;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_names_the_field_and_defaults_the_burst() {
        let p = Shaper::parse("rate_rx", "8000/800").unwrap();
        assert_eq!((p.rate_kbps, p.burst_kbits), (8000, 800));
        assert_eq!(p.text(), "8000/800");
        assert_eq!(Shaper::parse("f", "8000").unwrap().burst_kbits, 8000);
        assert_eq!(Shaper::parse("f", "10").unwrap().burst_kbits, 64);
        for bad in ["", "x", "0", "10/1", "10/x", "200000000"] {
            let e = Shaper::parse("rate_tx", bad).unwrap_err();
            assert!(e.starts_with("rate_tx:"), "{e}");
        }
    }

    fn offer(s: &mut Shaper, frames: &mut Frames, n: usize, len: u32, now: u64) -> (usize, u64) {
        let mut batch: Vec<Desc> = (0..n)
            .map(|_| {
                let mut d = frames.alloc().expect("frame");
                d.len = len;
                d
            })
            .collect();
        let (dropped, bytes) = s.shape(&mut batch, now, frames);
        assert_eq!(bytes, dropped * u64::from(len));
        let passed = batch.len();
        for d in batch {
            frames.free(d.addr);
        }
        (passed, dropped)
    }

    /// 1500-byte frames offered at 10x the rate for ten simulated seconds: what leaves is the
    /// rate plus one bucket; the queue stays within its bound (the excess is dropped).
    /// Two workers' shapers of one port direction on one bucket: together they send what one
    /// would.
    #[test]
    fn shapers_sharing_a_bucket_send_the_rate_together() {
        let mut frames = Frames::new(4096).unwrap();
        let bucket = Arc::new(SharedBucket::new(120_000));
        let mut a = Shaper::new(1200, 120).share(bucket.clone());
        let mut b = Shaper::new(1200, 120).share(bucket);
        let (mut sent, mut alone) = (0, 0);
        let mut one = Shaper::new(1200, 120);
        for ms in 0..1000u64 {
            for s in [&mut a, &mut b] {
                sent += offer(s, &mut frames, 2, 1500, ms).0;
            }
            alone += offer(&mut one, &mut frames, 4, 1500, ms).0;
        }
        // 1.2 Mbit/s for a second plus the 120 kbit bucket: 110 frames of 1500 B.
        assert!((105..=112).contains(&sent), "{sent}");
        assert_eq!(sent, alone, "shared: the rate of one shaper");
        for s in [&mut a, &mut b, &mut one] {
            for d in s.drain() {
                frames.free(d.addr);
            }
        }
    }

    #[test]
    fn leaves_at_the_rate_plus_one_bucket() {
        let mut frames = Frames::new(1024).unwrap();
        let mut s = Shaper::new(1_000, 100);
        let (mut passed, mut dropped) = (0, 0);
        for ms in 0..10_000u64 {
            // 10 Mbit/s offered: one 12 kbit frame a millisecond is 12 Mbit/s.
            let (p, d) = offer(&mut s, &mut frames, 1, 1500, ms);
            passed += p;
            dropped += d;
        }
        let want = (1_000 * 1000 * 10 + 100_000) / 12_000;
        assert!(
            passed.abs_diff(want) <= 2,
            "passed {passed} frames, want about {want}"
        );
        // Bound: 25 ms of 1 Mbit/s plus the 100 kbit burst, 15625 bytes: 10 frames wait.
        assert_eq!(s.waiting.len(), 10);
        assert_eq!(s.backlog_bytes(), 15_000);
        assert_eq!(passed as u64 + dropped + 10, 10_000);
        // The waiting frames leave as tokens come (one each 12 ms); a long gap does not let
        // more than a bucket (8 frames) out at once.
        assert_eq!(offer(&mut s, &mut frames, 0, 0, 10_500).0, 8);
        assert_eq!(s.backlog_bytes(), 3_000);
        assert_eq!(offer(&mut s, &mut frames, 0, 0, 10_524).0, 2);
        assert!(!s.is_waiting());
        assert_eq!(s.backlog_bytes(), 0);
    }

    /// A frame larger than the bucket leaves when the bucket is full and leaves a debt that
    /// later frames wait out.
    #[test]
    fn a_frame_larger_than_the_bucket_leaves_on_a_full_bucket() {
        let mut frames = Frames::new(64).unwrap();
        let mut s = Shaper::new(1_000, 16);
        assert_eq!(offer(&mut s, &mut frames, 1, 65_000, 0).0, 1);
        // 520 kbit of debt plus 16: about half a second at 1 Mbit/s.
        assert_eq!(offer(&mut s, &mut frames, 1, 100, 1).0, 0);
        assert_eq!(offer(&mut s, &mut frames, 0, 0, 400).0, 0);
        assert_eq!(offer(&mut s, &mut frames, 0, 0, 600).0, 1);
    }
}
