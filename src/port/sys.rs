//! Small kernel-facing helpers shared by the ports and by the other modules that talk to the
//! kernel directly (`cni`, `demo`).
//!
//! Contract:
//! - [`device_gone`] is the one list of errnos that mean a port's device is gone (the netdev was
//!   deleted and the kernel unbound the socket, or the TAP device went away with its
//!   namespace): a port that sees one from a read, write or kick sets [`super::Port::fault`]
//!   ([`note_gone`]), once: the first cause is kept.
//! - [`in_netns`] runs a closure on a helper thread that has entered a network namespace with
//!   `setns(2)`; only that thread changes namespace, and it ends with the closure. Sockets the
//!   closure opens stay in that namespace after it returns.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

/// True for errnos that mean the device is gone: ENXIO, ENODEV (the netdev was deleted and the
/// socket unbound), EBADFD, EBADF (the TAP device or the descriptor went away).
pub fn device_gone(errno: i32) -> bool {
    matches!(
        errno,
        libc::ENXIO | libc::ENODEV | libc::EBADFD | libc::EBADF
    )
}

/// Set `fault` to `why()` when `errno` says the device is gone and no fault is set yet (the
/// first cause is kept).
pub fn note_gone(fault: &mut Option<String>, errno: i32, why: impl FnOnce() -> String) {
    if fault.is_none() && device_gone(errno) {
        *fault = Some(why());
    }
}

/// Why [`in_netns`] did not return the closure's result.
#[derive(Debug)]
pub enum NetnsError {
    /// `setns(2)` failed: the closure did not run.
    Enter(io::Error),
    /// The closure panicked.
    Panicked,
}

impl From<NetnsError> for io::Error {
    fn from(e: NetnsError) -> io::Error {
        match e {
            NetnsError::Enter(e) => e,
            NetnsError::Panicked => io::Error::other("netns helper thread panicked"),
        }
    }
}

/// Run `f` on a helper thread that has entered the network namespace `ns` (a descriptor of
/// `/var/run/netns/NAME`, `/proc/PID/ns/net`, ...) and return what it returns. The calling
/// thread never changes namespace.
pub fn in_netns<T, F>(ns: BorrowedFd<'_>, f: F) -> Result<T, NetnsError>
where
    T: Send,
    F: FnOnce() -> T + Send,
{
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: setns on this helper thread only, with a descriptor the caller keeps open
            // (borrowed) for the call; the thread ends with `f`.
            if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(NetnsError::Enter(io::Error::last_os_error()));
            }
            Ok(f())
        })
        .join()
        .unwrap_or(Err(NetnsError::Panicked))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn gone_errnos() {
        for e in [libc::ENXIO, libc::ENODEV, libc::EBADFD, libc::EBADF] {
            assert!(device_gone(e), "{e}");
        }
        for e in [0, libc::EAGAIN, libc::ENOBUFS, libc::ENETDOWN, libc::EIO] {
            assert!(!device_gone(e), "{e}");
        }
        let mut fault = None;
        note_gone(&mut fault, libc::EAGAIN, || "no".into());
        assert_eq!(fault, None);
        note_gone(&mut fault, libc::ENXIO, || "first".into());
        note_gone(&mut fault, libc::EBADFD, || "second".into());
        assert_eq!(fault.as_deref(), Some("first"));
    }

    #[test]
    fn in_netns_reports_setns_failure_and_panics() {
        // A regular file is not a namespace: setns answers EINVAL and `f` does not run.
        let f = std::fs::File::open("/proc/self/stat").expect("open");
        let r = in_netns(f.as_fd(), || -> u8 {
            unreachable!("ran outside the namespace")
        });
        assert!(
            matches!(r, Err(NetnsError::Enter(ref e)) if e.raw_os_error() == Some(libc::EINVAL))
        );
        // Our own namespace can always be entered (as root; otherwise EPERM).
        let own = std::fs::File::open("/proc/self/ns/net").expect("open");
        match in_netns(own.as_fd(), || 7) {
            Ok(v) => assert_eq!(v, 7),
            Err(NetnsError::Enter(e)) => assert_eq!(e.raw_os_error(), Some(libc::EPERM)),
            Err(NetnsError::Panicked) => panic!("no panic here"),
        }
        let p = in_netns(own.as_fd(), || panic!("boom"));
        assert!(matches!(
            p,
            Err(NetnsError::Panicked) | Err(NetnsError::Enter(_))
        ));
        let e: io::Error = NetnsError::Panicked.into();
        assert_eq!(e.to_string(), "netns helper thread panicked");
    }
}
