//! Time for the datapath, injected so tables can be tested with a manual clock.
//!
//! The datapath core never reads a clock itself: the worker reads a [`Clock`] once per loop
//! iteration and passes the value (whole seconds, monotonic) down.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// A monotonic time source.
pub trait Clock: Send + Sync {
    /// Seconds since an arbitrary fixed origin.
    fn now_secs(&self) -> u64;

    /// Milliseconds since the same origin (`now_secs() * 1000` at whole seconds).
    fn now_ms(&self) -> u64 {
        self.now_secs() * 1000
    }

    /// Nanoseconds since the same origin (`now_ms() * 1_000_000` at whole milliseconds).
    fn now_ns(&self) -> u64 {
        self.now_ms() * 1_000_000
    }
}

/// The real monotonic clock.
pub struct MonotonicClock {
    origin: Instant,
}

impl Default for MonotonicClock {
    fn default() -> Self {
        MonotonicClock {
            origin: Instant::now(),
        }
    }
}

impl Clock for MonotonicClock {
    fn now_secs(&self) -> u64 {
        self.now_ms() / 1000
    }

    fn now_ms(&self) -> u64 {
        // Start at 1 s so that 0 can mean "never" in tables.
        self.origin.elapsed().as_millis() as u64 + 1000
    }

    fn now_ns(&self) -> u64 {
        self.origin.elapsed().as_nanos() as u64 + 1_000_000_000
    }
}

/// A clock moved by hand (tests).
#[derive(Default)]
pub struct ManualClock {
    now: AtomicU64,
}

impl ManualClock {
    /// A clock at `secs`.
    pub fn at(secs: u64) -> Self {
        ManualClock {
            now: AtomicU64::new(secs),
        }
    }

    /// Move forward by `secs`.
    pub fn advance(&self, secs: u64) {
        self.now.fetch_add(secs, Ordering::Relaxed);
    }
}

impl Clock for ManualClock {
    fn now_secs(&self) -> u64 {
        self.now.load(Ordering::Relaxed)
    }
}
