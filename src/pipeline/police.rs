//! Per-port policers (`add-port ... police_rx=KBPS[/BURST] police_tx=KBPS[/BURST]`): token
//! buckets that drop what a port sends (rx: frames the switch receives from it, a container's
//! egress) or is sent (tx: frames queued toward it, a container's ingress) beyond a rate. The
//! CNI plugin's `bandwidth` capability is made of them.
//!
//! Contract:
//! - A bucket holds `burst` kbit (default: one second of the rate, as `add-meter`) and refills
//!   at `rate` kbit/s on the datapath's millisecond clock (`Datapath::now_ms`). A frame passes
//!   when the bucket holds its length in bits, or the whole bucket when the frame is larger (a
//!   TAP super-frame); it then takes its length, so the bucket may go into debt and the
//!   long-run rate still holds. Otherwise it is dropped and counted (`police-rx`, `police-tx`).
//! - rx policing runs in the ingress stage before parsing; tx policing runs over each policed
//!   port's output queue just before it is handed to the port ([`police_tx`]), so frames queued
//!   by several bursts are judged once, in order.
//! - IO-free and deterministic: time comes in as milliseconds.

use crate::counters::DropReason;
use crate::datapath::Datapath;
use crate::packet::Frames;

/// One port direction's token bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policer {
    /// Rate in kbit/s.
    pub rate_kbps: u64,
    /// Bucket size in kbit.
    pub burst_kbits: u64,
    /// Bits in the bucket (negative: debt from a frame larger than the bucket).
    tokens: i64,
    last_ms: u64,
}

impl Policer {
    /// A full bucket.
    pub fn new(rate_kbps: u64, burst_kbits: u64) -> Policer {
        Policer {
            rate_kbps,
            burst_kbits,
            tokens: (burst_kbits * 1000) as i64,
            last_ms: 0,
        }
    }

    /// Parse `KBPS[/BURST_KBIT]` (rate 1 kbit/s to 100 Gbit/s; burst at least 16 kbit, one
    /// full-size frame; default one second of the rate). Errors name `field`.
    pub fn parse(field: &str, s: &str) -> Result<Policer, String> {
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
        Ok(Policer::new(rate, burst))
    }

    /// `KBPS/BURST_KBIT`, as [`Policer::parse`] reads it.
    pub fn text(&self) -> String {
        format!("{}/{}", self.rate_kbps, self.burst_kbits)
    }

    /// Account a frame of `bytes` at `now_ms`: false when it exceeds the rate (drop it).
    #[inline]
    pub fn admit(&mut self, bytes: u32, now_ms: u64) -> bool {
        let cap = (self.burst_kbits * 1000) as i64;
        let dt = now_ms.saturating_sub(self.last_ms).min(1 << 20) as i64;
        self.last_ms = self.last_ms.max(now_ms);
        // kbit/s times ms is bits.
        self.tokens = (self.tokens + dt * self.rate_kbps as i64).min(cap);
        let need = i64::from(bytes) * 8;
        if self.tokens >= need.min(cap) {
            self.tokens -= need;
            true
        } else {
            false
        }
    }
}

/// Drop what exceeds each policed port's tx rate from its output queue (call just before the
/// queues go to the ports).
pub fn police_tx(dp: &mut Datapath, frames: &mut Frames) {
    let now = dp.now_ms;
    let Datapath { ports, out, .. } = dp;
    for (id, q) in out.iter_mut().enumerate() {
        if q.is_empty() {
            continue;
        }
        let Some(Some(port)) = ports.get_mut(id) else {
            continue;
        };
        let Some(p) = port.police_tx.as_mut() else {
            continue;
        };
        let c = &mut port.counters;
        q.retain(|d| {
            let ok = p.admit(d.len, now);
            if !ok {
                c.drop(DropReason::PoliceTx);
                frames.free(d.addr);
            }
            ok
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_names_the_field_and_defaults_the_burst() {
        let p = Policer::parse("police_rx", "8000/800").unwrap();
        assert_eq!((p.rate_kbps, p.burst_kbits), (8000, 800));
        assert_eq!(p.text(), "8000/800");
        assert_eq!(Policer::parse("f", "8000").unwrap().burst_kbits, 8000);
        assert_eq!(Policer::parse("f", "10").unwrap().burst_kbits, 64);
        for bad in ["", "x", "0", "10/1", "10/x", "200000000"] {
            let e = Policer::parse("police_tx", bad).unwrap_err();
            assert!(e.starts_with("police_tx:"), "{e}");
        }
    }

    /// Over ten simulated seconds of 1500-byte frames offered at 10x the rate, what passes is
    /// the rate plus one bucket.
    #[test]
    fn passes_the_rate_plus_one_bucket() {
        let mut p = Policer::new(1_000, 100);
        let mut passed_bits = 0u64;
        for ms in 0..10_000u64 {
            // 10 Mbit/s offered: 10 kbit per ms, about 0.83 frames; send one frame per ms.
            if p.admit(1500, ms) {
                passed_bits += 12_000;
            }
        }
        let want = 1_000 * 1000 * 10 + 100_000;
        let err = (passed_bits as f64 - want as f64).abs() / want as f64;
        assert!(err < 0.02, "passed {passed_bits} bits, want about {want}");
    }

    /// A frame larger than the bucket passes when the bucket is full and leaves a debt.
    #[test]
    fn a_frame_larger_than_the_bucket_passes_on_a_full_bucket() {
        let mut p = Policer::new(1_000, 16);
        assert!(p.admit(65_000, 0));
        assert!(!p.admit(100, 1));
        // 520 kbit of debt plus 16: about half a second at 1 Mbit/s.
        assert!(!p.admit(100, 400));
        assert!(p.admit(100, 600));
    }
}
