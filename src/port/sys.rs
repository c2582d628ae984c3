//! Small kernel-facing helpers shared by the ports and by the other modules that talk to the
//! kernel directly (`cni`, `demo`).
//!
//! Contract:
//! - [`device_gone`] is the one list of errnos that mean a port's device is gone (the netdev was
//!   deleted and the kernel unbound the socket, or the TAP device went away with its
//!   namespace): a port that sees one from a read, write or kick sets [`super::Port::fault`]
//!   ([`note_gone`]), once: the first cause is kept.

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
