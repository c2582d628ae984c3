//! The frame budget: how the frames of one worker are shared between the AF_XDP ports' receive
//! rings and everything else, so that no port can starve the others. IO-free; the AF_XDP port
//! applies it (see `port::afxdp`).
//!
//! Contract:
//! - A **reserve** (`total / 8`) is never committed or lent to receive (fill) rings: frames the
//!   worker allocates itself (TAP receive, flood copies, ARP/ICMP replies) and frames in flight
//!   toward transmit rings always find a free frame. Its lower half is the **worker's floor**:
//!   [`Frames::alloc_fill`](super::Frames::alloc_fill) refuses once the free list is down to
//!   it (a safety net: the accounting below already keeps the rings out of the reserve).
//! - Every AF_XDP port is **admitted** with a base of `queues * fill_min` frames. The sum of the
//!   bases never exceeds `total - reserve`: a port that does not fit is refused with a
//!   [`BudgetError`] naming the numbers, instead of being accepted and starving every port.
//! - Above its base, a busy socket **grows** its receive target (doubling, up to a cap) out of
//!   the elastic pool, `total - reserve - committed - elastic`, but holds at most half of
//!   `total - reserve - committed` (so a second busy socket still finds a loan; until session
//!   14 one socket could take it all for up to [`SHRINK_AFTER_MS`]); an idle one shrinks back to its
//!   base and returns the difference. A grant is accounting: the frames enter the fill ring only
//!   as the free list allows. Admission counts the elastic frames as taken, so an admitted
//!   port's base is always there once the busy ports shrink (at most [`SHRINK_AFTER_MS`]).
//! - Flood copies and frames in flight toward AF_XDP transmit rings stop at the **copy floor**:
//!   half the reserve plus the frames receive rings are owed ([`FrameBudget::debt`]), so a
//!   broadcast storm or a slow port can drop its own copies but never take the frames other
//!   ports need to keep receiving, nor the half of the reserve kept for the frames the worker
//!   allocates one at a time (TAP receive, ARP/ICMP replies). The other half of the reserve is
//!   the copies' own: with every base committed, every loan granted and every ring stocked,
//!   the free list is the reserve, and flooding (ARP requests) still works. (Until
//!   2026-12-03 the floor was the whole reserve: one busy socket's loan could stop every
//!   port's flooding for up to [`SHRINK_AFTER_MS`].)

use std::fmt;

/// A socket that has not needed to grow for this long shrinks its target by half.
pub const SHRINK_AFTER_MS: u64 = 2000;

/// A port that cannot be admitted: the numbers behind the refusal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "needs {need} frames for its receive rings but only {available} of {total} are free to commit \
     ({reserve} kept in reserve, {committed} committed to other ports, {elastic} lent to busy \
     ports); raise --frames or remove a port"
)]
pub struct BudgetError {
    /// Frames the port needs (queues x fill_min).
    pub need: u32,
    /// Frames that could be committed now.
    pub available: u32,
    /// Frames in the region.
    pub total: u32,
    /// Frames never given to receive rings.
    pub reserve: u32,
    /// Frames committed to the bases of admitted ports.
    pub committed: u32,
    /// Frames granted above bases to busy sockets.
    pub elastic: u32,
}

/// The worker-wide accounting. See the module documentation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameBudget {
    total: u32,
    reserve: u32,
    committed: u32,
    elastic: u32,
    /// Frames now in receive (fill + rx) rings.
    held: u32,
}

impl FrameBudget {
    /// The budget of a region of `total` frames.
    pub fn new(total: u32) -> FrameBudget {
        FrameBudget {
            total,
            reserve: total / 8,
            committed: 0,
            elastic: 0,
            held: 0,
        }
    }

    /// Frames the receive rings are owed: committed and lent but not in a ring now (they sit on
    /// the free list until the next refill). Copies and transmit queues must leave them there.
    pub fn debt(&self) -> u32 {
        (self.committed + self.elastic).saturating_sub(self.held)
    }

    /// The half of the reserve only the worker's one-at-a-time allocations take (TAP receive,
    /// ARP/ICMP replies): receive rings and copies both stop above it.
    pub fn worker_floor(&self) -> u32 {
        self.reserve - self.reserve / 2
    }

    /// How far the free list may fall for flood copies and transmit in flight: the worker's
    /// floor plus what receive rings are owed.
    pub fn copy_floor(&self) -> u32 {
        self.worker_floor() + self.debt()
    }

    /// `n` frames entered receive rings.
    #[inline]
    pub fn ring_in(&mut self, n: u32) {
        self.held += n;
    }

    /// `n` frames left receive rings (received, or reclaimed when the port closed).
    #[inline]
    pub fn ring_out(&mut self, n: u32) {
        self.held = self.held.saturating_sub(n);
    }

    /// Frames never given to receive rings.
    pub fn reserve(&self) -> u32 {
        self.reserve
    }

    /// Frames committed to the bases of admitted ports.
    pub fn committed(&self) -> u32 {
        self.committed
    }

    /// Frames granted above bases.
    pub fn elastic(&self) -> u32 {
        self.elastic
    }

    /// Frames that can still be committed or lent.
    pub fn available(&self) -> u32 {
        self.total - self.reserve - self.committed - self.elastic
    }

    /// Commit `need` frames to a new port, or say why not.
    pub fn admit(&mut self, need: u32) -> Result<(), BudgetError> {
        if need > self.available() {
            return Err(BudgetError {
                need,
                available: self.available(),
                total: self.total,
                reserve: self.reserve,
                committed: self.committed,
                elastic: self.elastic,
            });
        }
        self.committed += need;
        Ok(())
    }

    /// Give back a port's base (`base`) and what it had been lent (`lent`).
    pub fn retire(&mut self, base: u32, lent: u32) {
        self.committed = self.committed.saturating_sub(base);
        self.elastic = self.elastic.saturating_sub(lent);
    }

    /// Lend up to `want` frames to a socket that has `lent` already; returns how many were
    /// lent. One socket holds at most half the frames above the bases (`total - reserve -
    /// committed`), so a second busy socket finds a loan without waiting up to
    /// [`SHRINK_AFTER_MS`] for the first to shrink.
    pub fn lend(&mut self, want: u32, lent: u32) -> u32 {
        let share = ((self.total - self.reserve - self.committed) / 2).saturating_sub(lent);
        let n = want.min(self.available()).min(share);
        self.elastic += n;
        n
    }

    /// Return `n` lent frames.
    pub fn give_back(&mut self, n: u32) {
        self.elastic = self.elastic.saturating_sub(n);
    }
}

/// One socket's receive target: how many frames it may hold in its fill and rx rings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FillTarget {
    /// The admitted base.
    pub base: u32,
    /// The most it may grow to.
    pub cap: u32,
    /// The current target (base + lent).
    pub target: u32,
    /// When it last needed more (ms, worker clock).
    pub last_need_ms: u64,
    /// Frames in the fill ring right after the last refill.
    pub filled: u32,
}

impl FillTarget {
    /// A target at its base.
    pub fn new(base: u32, cap: u32) -> FillTarget {
        FillTarget {
            base,
            cap: cap.max(base),
            target: base,
            last_need_ms: 0,
            filled: 0,
        }
    }

    /// Frames lent above the base.
    pub fn lent(&self) -> u32 {
        self.target - self.base
    }

    /// The socket ran short (its fill ring fell below half the target between two refills, or
    /// the kernel found it empty): double the target if the budget lends the frames.
    pub fn need_more(&mut self, budget: &mut FrameBudget, now_ms: u64) {
        self.last_need_ms = now_ms;
        let want = self.target.min(self.cap - self.target);
        self.target += budget.lend(want, self.lent());
    }

    /// Housekeeping: a target that has not needed more for [`SHRINK_AFTER_MS`] halves toward
    /// its base and gives the difference back.
    pub fn maybe_shrink(&mut self, budget: &mut FrameBudget, now_ms: u64) {
        if self.target > self.base && now_ms.saturating_sub(self.last_need_ms) >= SHRINK_AFTER_MS {
            let next = (self.target / 2).max(self.base);
            budget.give_back(self.target - next);
            self.target = next;
            self.last_need_ms = now_ms;
        }
    }
}

impl fmt::Display for FrameBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "total={} reserve={} committed={} lent={} available={}",
            self.total,
            self.reserve,
            self.committed,
            self.elastic,
            self.available()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admission_refuses_with_the_numbers() {
        // --frames 8192: reserve 1024, so 28 ports of 2 queues x 128 fit, the 29th does not.
        let mut b = FrameBudget::new(8192);
        for _ in 0..28 {
            b.admit(256).unwrap();
        }
        let e = b.admit(256).unwrap_err();
        assert_eq!(
            (e.need, e.available, e.reserve, e.committed),
            (256, 0, 1024, 7168)
        );
        let s = e.to_string();
        assert!(
            s.contains("needs 256 frames") && s.contains("of 8192"),
            "{s}"
        );
        b.retire(256, 0);
        b.admit(256).unwrap();
    }

    #[test]
    fn growth_never_eats_other_ports_bases_or_the_reserve() {
        let mut b = FrameBudget::new(8192);
        b.admit(128).unwrap();
        let mut greedy = FillTarget::new(128, 4096);
        for t in 0..20 {
            greedy.need_more(&mut b, t);
        }
        // Doubling from 128, up to half of what lies above the bases (8192 - 1024 - 128).
        assert_eq!(
            greedy.target,
            128 + (8192 - 1024 - 128) / 2,
            "grows to its share"
        );
        // A second port still fits: the elastic grant came out of what was free.
        b.admit(128).unwrap();
        let mut hog = FillTarget::new(128, 1 << 20);
        for t in 0..40 {
            hog.need_more(&mut b, t);
        }
        assert_eq!(b.available(), 0);
        assert_eq!(b.reserve() + b.committed() + b.elastic(), 8192);
        // Nothing is left for a third port until the busy ones go idle and shrink.
        assert!(b.admit(128).is_err());
        for now in [3000, 6000, 9000, 12_000, 15_000, 18_000] {
            greedy.maybe_shrink(&mut b, now);
            hog.maybe_shrink(&mut b, now);
        }
        assert_eq!(greedy.target, 128);
        b.admit(128).unwrap();
        // Retiring a grown socket returns base and loan.
        let before = b.available();
        b.retire(greedy.base, greedy.lent());
        assert_eq!(b.available(), before + greedy.target);
    }

    #[test]
    fn a_second_busy_socket_gets_a_loan_while_the_first_holds_its_own() {
        // 512 frames: reserve 64, three one-queue ports at 128: 64 above the bases.
        let mut b = FrameBudget::new(512);
        for _ in 0..3 {
            b.admit(128).unwrap();
        }
        let (mut first, mut second) = (FillTarget::new(128, 4096), FillTarget::new(128, 4096));
        for t in 0..10 {
            first.need_more(&mut b, t);
        }
        assert_eq!(first.lent(), 32, "half of the 64");
        second.need_more(&mut b, 10);
        assert_eq!(second.lent(), 32, "the other half, at once");
        assert_eq!(b.available(), 0);
        // One shrinks: the other may not take its half.
        first.maybe_shrink(&mut b, 5000);
        assert_eq!(first.lent(), 0);
        second.need_more(&mut b, 5001);
        assert_eq!(second.lent(), 32);
    }

    #[test]
    fn copies_leave_what_rings_are_owed() {
        let mut b = FrameBudget::new(1024);
        // Half the reserve (128) is the copies' own, half the worker's.
        assert_eq!(b.copy_floor(), 64);
        b.admit(256).unwrap();
        // Admitted, rings not stocked yet: copies must leave those 256 on the free list.
        assert_eq!(b.copy_floor(), 64 + 256);
        b.ring_in(256);
        assert_eq!(b.copy_floor(), 64);
        // 100 received and not yet refilled: owed again.
        b.ring_out(100);
        assert_eq!(b.debt(), 100);
        b.retire(256, 0);
        b.ring_out(156);
        assert_eq!(b.debt(), 0);
    }

    #[test]
    fn shrink_waits_for_quiet() {
        let mut b = FrameBudget::new(65536);
        b.admit(128).unwrap();
        let mut t = FillTarget::new(128, 4096);
        t.need_more(&mut b, 1000);
        assert_eq!(t.target, 256);
        t.maybe_shrink(&mut b, 2000);
        assert_eq!(t.target, 256, "needed more 1 s ago");
        t.maybe_shrink(&mut b, 3000);
        assert_eq!(t.target, 128);
        assert_eq!(b.elastic(), 0);
    }
}
