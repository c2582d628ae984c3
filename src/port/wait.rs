//! Sleeping until a port has work: an eventfd to wake the worker from another thread, and
//! poll(2) over the ports' file descriptors.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};

/// An eventfd: `wake` from any thread makes the worker's `wait` return.
pub struct Waker {
    fd: OwnedFd,
}

impl Waker {
    /// Create a non-blocking eventfd.
    pub fn new() -> io::Result<Waker> {
        // SAFETY: eventfd takes no pointers; the result is checked before use.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Waker { fd })
    }

    /// Wake the waiting thread (idempotent until drained).
    pub fn wake(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to our eventfd; failure (counter overflow) is
        // harmless since the fd is then readable anyway.
        unsafe {
            libc::write(self.fd.as_raw_fd(), (&one as *const u64).cast(), 8);
        }
    }

    /// Reset the counter after waking.
    pub fn drain(&self) {
        let mut v: u64 = 0;
        // SAFETY: reads at most 8 bytes into a live u64; EAGAIN when not signalled is fine.
        unsafe {
            libc::read(self.fd.as_raw_fd(), (&mut v as *mut u64).cast(), 8);
        }
    }

    /// The descriptor to poll.
    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// Poll `fds` for readability for at most `timeout_ms`. `scratch` is reused between calls.
/// Returns the number of ready descriptors (0 on timeout or EINTR).
pub fn wait_readable(fds: &[RawFd], scratch: &mut Vec<libc::pollfd>, timeout_ms: i32) -> usize {
    scratch.clear();
    scratch.extend(fds.iter().map(|&fd| libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    }));
    // SAFETY: scratch holds exactly `len` initialised pollfd structs for the call's duration.
    let n = unsafe {
        libc::poll(
            scratch.as_mut_ptr(),
            scratch.len() as libc::nfds_t,
            timeout_ms,
        )
    };
    n.max(0) as usize
}

/// CPU time consumed by the calling thread, in nanoseconds.
pub fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into a live local.
    unsafe {
        libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts);
    }
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

static STOP: AtomicBool = AtomicBool::new(false);
static HUP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop_signal(_sig: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

extern "C" fn on_hup(_sig: libc::c_int) {
    HUP.store(true, Ordering::SeqCst);
}

/// Point `signals` at `handler`, which only stores to an atomic.
fn set_flag_handler(signals: &[libc::c_int], handler: extern "C" fn(libc::c_int)) {
    let handler = handler as libc::sighandler_t;
    for &sig in signals {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe {
            libc::signal(sig, handler);
        }
    }
}

/// Make SIGINT and SIGTERM set a flag instead of killing the process (so ports are closed and
/// XDP programs detached on the way out). Returns the flag.
pub fn install_stop_handler() -> &'static AtomicBool {
    set_flag_handler(&[libc::SIGINT, libc::SIGTERM], on_stop_signal);
    &STOP
}

/// Make SIGHUP set a flag instead of ending the process; the returned flag is set on every
/// SIGHUP (the caller swaps it back to false when it acts on it).
pub fn install_hup_handler() -> &'static AtomicBool {
    set_flag_handler(&[libc::SIGHUP], on_hup);
    &HUP
}

/// True when the process runs as root (effective uid 0).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Ask the scheduler for a short time slice (EEVDF custom slice, Linux 6.12+) for the calling
/// thread, so that when it wakes up it preempts a CPU-bound task sharing its core instead of
/// waiting for that task's slice to end. Best effort: returns false if the kernel refuses.
/// The thread keeps its nice value (`sched_setattr` sets it too: passing 0 used to undo a
/// `nice -n -19 uvs run`, which left the worker competing with builds as an equal).
pub fn request_short_slice(slice_ns: u64) -> bool {
    /// `struct sched_attr` (include/uapi/linux/sched/types.h), version 1 (56 bytes).
    #[repr(C)]
    struct SchedAttr {
        size: u32,
        sched_policy: u32,
        sched_flags: u64,
        sched_nice: i32,
        sched_priority: u32,
        sched_runtime: u64,
        sched_deadline: u64,
        sched_period: u64,
        sched_util_min: u32,
        sched_util_max: u32,
    }
    let attr = SchedAttr {
        size: std::mem::size_of::<SchedAttr>() as u32,
        sched_policy: libc::SCHED_OTHER as u32,
        sched_flags: 0,
        sched_nice: current_nice(),
        sched_priority: 0,
        sched_runtime: slice_ns,
        sched_deadline: 0,
        sched_period: 0,
        sched_util_min: 0,
        sched_util_max: 0,
    };
    // SAFETY: sched_setattr(0, attr, 0) reads `size` bytes from a live, initialised struct.
    let r = unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &attr as *const SchedAttr, 0) };
    r == 0
}

/// The calling thread's nice value (0 if it cannot be read).
fn current_nice() -> i32 {
    // SAFETY: errno is thread-local; clearing it and reading getpriority's result have no
    // preconditions (who = 0: the calling thread).
    unsafe {
        *libc::__errno_location() = 0;
        let n = libc::getpriority(libc::PRIO_PROCESS, 0);
        if n == -1 && *libc::__errno_location() != 0 {
            0
        } else {
            n
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_slice_keeps_the_nice_value() {
        // In a thread of its own: nice is per thread on Linux.
        std::thread::spawn(|| {
            // SAFETY: setpriority on the calling thread (who = 0); raising nice needs no
            // privilege.
            let set = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 7) };
            assert_eq!(set, 0);
            assert_eq!(current_nice(), 7);
            if request_short_slice(100_000) {
                assert_eq!(current_nice(), 7, "sched_setattr kept the nice value");
            }
        })
        .join()
        .unwrap();
    }
}
