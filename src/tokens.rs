//! A token bucket several workers draw from: one port direction's rate limit, or one meter,
//! when each worker shapes what it handles (see `worker::set`).
//!
//! Contract: bits in the bucket and the clock of the last refill are atomics. A refill adds
//! `rate × elapsed ms` once per millisecond, whichever worker makes it (the one whose
//! compare-exchange of the clock succeeds), at most the room the bucket had before that
//! worker claimed the time (takes by others meanwhile are not given back) and never past the
//! bucket size (one compare-exchange). `take` removes a
//! frame's bits if the bucket holds them (or the whole bucket, for a frame larger than it), by
//! compare-exchange, so two workers never both spend the same bits. Lock-free; no allocation.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// See the module documentation.
#[derive(Debug)]
pub struct SharedBucket {
    tokens: AtomicI64,
    last_ms: AtomicU64,
}

impl SharedBucket {
    /// A full bucket of `cap_bits`.
    pub fn new(cap_bits: i64) -> SharedBucket {
        SharedBucket {
            tokens: AtomicI64::new(cap_bits),
            last_ms: AtomicU64::new(0),
        }
    }

    /// Add what `rate_kbps` earned since the last refill (kbit/s times ms is bits), at most
    /// up to `cap_bits`.
    #[inline]
    pub fn refill(&self, rate_kbps: u64, cap_bits: i64, now_ms: u64) {
        if let Some(add) = self.claim(rate_kbps, cap_bits, now_ms) {
            self.add(add, cap_bits);
        }
    }

    /// Claim the refill of the time since the last one: the bits to add, or None when another
    /// worker claimed it (or no time passed). What is added is bounded by the room the bucket
    /// had *before* the claim: the others keep taking between the claim and the add, and an
    /// add capped only at the bucket size would give back what they took meanwhile (found by
    /// the two-worker storm test, 1 run in 60: the first refill, from time 0, claimed a whole
    /// bucket's worth, the other worker spent 5,824 frames, the capped add filled the bucket
    /// again: 15,824 floods passed a bucket of 10,000 with the clock stopped).
    #[inline]
    fn claim(&self, rate_kbps: u64, cap_bits: i64, now_ms: u64) -> Option<i64> {
        let room = cap_bits.saturating_sub(self.tokens.load(Ordering::Acquire));
        let last = self.last_ms.load(Ordering::Acquire);
        if now_ms <= last
            || self
                .last_ms
                .compare_exchange(last, now_ms, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
        {
            return None;
        }
        let earned = (now_ms - last).min(1 << 20) as i64 * rate_kbps as i64;
        Some(earned.min(room).max(0))
    }

    /// Add `add` bits (from `claim`), never past `cap_bits`: one compare-exchange, so the
    /// bucket is never over its size, even for an instant.
    #[inline]
    fn add(&self, add: i64, cap_bits: i64) {
        if add > 0 {
            let _ = self
                .tokens
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |t| {
                    Some(t.saturating_add(add).min(cap_bits))
                });
        }
    }

    /// Take `need` bits if the bucket holds `need.min(cap_bits)` (it may go into debt for a
    /// frame larger than the bucket).
    #[inline]
    pub fn take(&self, need: i64, cap_bits: i64) -> bool {
        let mut t = self.tokens.load(Ordering::Acquire);
        while t >= need.min(cap_bits) {
            match self.tokens.compare_exchange_weak(
                t,
                t - need,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return true,
                Err(now) => t = now,
            }
        }
        false
    }
}

/// A shared bucket held by a shaper or meter: equal to another only when it is the same
/// bucket (so the holders can keep deriving `PartialEq`).
#[derive(Debug, Clone)]
pub struct SharedTokens(pub Arc<SharedBucket>);

impl PartialEq for SharedTokens {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for SharedTokens {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_holders_spend_one_bucket() {
        let b = SharedBucket::new(1000);
        assert!(b.take(600, 1000));
        assert!(!b.take(600, 1000), "only 400 left");
        b.refill(100, 1000, 5); // 500 bits
        assert!(b.take(600, 1000));
        b.refill(100, 1000, 5); // same millisecond: nothing more
        assert!(!b.take(600, 1000));
        b.refill(100, 1000, 1_000_000);
        assert!(
            b.take(1000, 1000) && !b.take(1, 1000),
            "capped at the bucket"
        );
        b.refill(100, 1000, 1_000_010);
        assert!(
            b.take(5000, 1000),
            "a frame larger than a full bucket takes it"
        );
        assert!(!b.take(1, 1000), "in debt");
    }

    /// A refill claimed by one worker and added after another took from the bucket does not
    /// give back what was taken (the bucket was full when the time was claimed).
    #[test]
    fn takes_between_a_claim_and_its_add_are_not_given_back() {
        let b = SharedBucket::new(1000);
        let add = b.claim(100, 1000, 5).expect("the first claim");
        assert!(b.take(600, 1000), "another worker takes meanwhile");
        b.add(add, 1000);
        assert!(
            !b.take(600, 1000),
            "only 400 left: nothing was earned while full"
        );
        // Time earned while not full is added as before.
        let add = b.claim(100, 1000, 7).expect("a claim");
        assert_eq!(add, 200);
        b.add(add, 1000);
        assert!(b.take(600, 1000));
    }
}
