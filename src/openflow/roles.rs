//! OpenFlow 1.3 controller roles of one bridge, shared by its connections (spec 6.3.5/7.3.9).
//!
//! Contract:
//! - Each connection registers once ([`Roles::register`]) and leaves when it closes.
//! - A connection that asks for MASTER becomes the master; the one before it is now a slave
//!   ([`Roles::effective`] says so until it asks for another role). EQUAL and SLAVE give up
//!   mastership.
//! - MASTER and SLAVE requests carry a generation id: one older than the newest seen on this
//!   bridge (compared as the spec says, `(int64)(gen - newest) < 0`) is stale and refused
//!   (OFPRRFC_STALE) without any change; otherwise it becomes the newest. The ids outlive the
//!   connections (a controller that reconnects with an old id is refused too).
//! - IO-free and lock-held only for a few comparisons.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// OFPCR_ROLE_NOCHANGE.
pub const NOCHANGE: u32 = 0;
/// OFPCR_ROLE_EQUAL.
pub const EQUAL: u32 = 1;
/// OFPCR_ROLE_MASTER.
pub const MASTER: u32 = 2;
/// OFPCR_ROLE_SLAVE.
pub const SLAVE: u32 = 3;

#[derive(Debug, Default)]
struct State {
    /// The connection that is master, if any.
    master: Option<u64>,
    /// The newest generation id a MASTER or SLAVE request carried.
    generation: Option<u64>,
}

/// The roles of one bridge's connections.
#[derive(Debug, Default)]
pub struct Roles {
    next_id: AtomicU64,
    state: Mutex<State>,
}

/// A MASTER or SLAVE request whose generation id is older than the newest seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stale;

impl Roles {
    /// A new connection's id.
    pub fn register(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Connection `id` closed: it is no longer master.
    pub fn leave(&self, id: u64) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if s.master == Some(id) {
            s.master = None;
        }
    }

    /// Connection `id` asks for `role` (EQUAL, MASTER or SLAVE) with `generation`.
    pub fn request(&self, id: u64, role: u32, generation: u64) -> Result<(), Stale> {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if role == MASTER || role == SLAVE {
            if let Some(newest) = s.generation
                && (generation.wrapping_sub(newest) as i64) < 0
            {
                return Err(Stale);
            }
            s.generation = Some(generation);
        }
        if role == MASTER {
            s.master = Some(id);
        } else if s.master == Some(id) {
            s.master = None;
        }
        Ok(())
    }

    /// The role connection `id` has, given the one it last asked for: a MASTER that another
    /// connection has since replaced is a SLAVE.
    pub fn effective(&self, id: u64, asked: u32) -> u32 {
        let s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if asked == MASTER && s.master != Some(id) {
            SLAVE
        } else {
            asked
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_master_demotes_the_old_one_and_stale_generations_are_refused() {
        let r = Roles::default();
        let (a, b) = (r.register(), r.register());
        assert_ne!(a, b);
        assert_eq!(r.request(a, MASTER, 5), Ok(()));
        assert_eq!(r.effective(a, MASTER), MASTER);
        assert_eq!(r.request(b, MASTER, 6), Ok(()));
        assert_eq!(r.effective(a, MASTER), SLAVE);
        assert_eq!(r.effective(b, MASTER), MASTER);
        // Older than 6: refused, nothing changes.
        assert_eq!(r.request(a, MASTER, 5), Err(Stale));
        assert_eq!(r.request(a, SLAVE, 4), Err(Stale));
        assert_eq!(r.effective(b, MASTER), MASTER);
        // EQUAL carries no generation; the same generation again is not stale.
        assert_eq!(r.request(a, EQUAL, 0), Ok(()));
        assert_eq!(r.request(a, MASTER, 6), Ok(()));
        assert_eq!(r.effective(b, MASTER), SLAVE);
        // Wrapping comparison: u64::MAX is older than 0 once 0 has been seen.
        let r = Roles::default();
        let c = r.register();
        assert_eq!(r.request(c, SLAVE, 0), Ok(()));
        assert_eq!(r.request(c, MASTER, u64::MAX), Err(Stale));
        // The master leaving: nobody is master.
        assert_eq!(r.request(c, MASTER, 1), Ok(()));
        r.leave(c);
        assert_eq!(r.effective(c, MASTER), SLAVE);
    }
}
