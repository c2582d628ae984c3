//! The system calls the control plane needs that std does not offer: the peer credentials of a
//! unix socket connection (`SO_PEERCRED`, for the change log and the per-uid limit), whether a
//! peer has hung up (a non-blocking peek). Signal flags (stop, SIGHUP) live in `port::wait`.

use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;

/// Who is at the other end of a control connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerCred {
    /// Process id.
    pub pid: i32,
    /// User id.
    pub uid: u32,
}

impl std::fmt::Display for PeerCred {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "pid {} uid {}", self.pid, self.uid)
    }
}

/// The credentials the kernel recorded for the peer of `stream` when it connected.
pub fn peer_cred(stream: &UnixStream) -> std::io::Result<PeerCred> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: the fd is a live socket owned by `stream`; `cred` and `len` are valid for writes
    // and `len` holds the size of `cred`, so the kernel writes at most that many bytes.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(PeerCred {
        pid: cred.pid,
        uid: cred.uid,
    })
}

/// True when the peer of `stream` has closed its end and nothing is left to read (a
/// non-blocking peek returns end of file); never blocks and leaves the stream's mode alone.
pub fn peer_gone(stream: &UnixStream) -> bool {
    let mut byte = 0u8;
    // SAFETY: the fd is a live socket owned by `stream`; the buffer is one valid byte; with
    // MSG_PEEK | MSG_DONTWAIT the call neither consumes data nor blocks.
    let n = unsafe {
        libc::recv(
            stream.as_raw_fd(),
            (&mut byte as *mut u8).cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    n == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_gone_after_close_only() {
        let (a, b) = UnixStream::pair().unwrap();
        assert!(!peer_gone(&a), "open, nothing to read");
        std::io::Write::write_all(&mut &b, b"x").unwrap();
        drop(b);
        assert!(!peer_gone(&a), "unread data left");
        let mut buf = [0u8; 1];
        std::io::Read::read(&mut &a, &mut buf).unwrap();
        assert!(peer_gone(&a));
    }

    #[test]
    fn peer_cred_of_a_socketpair_is_ourselves() {
        let (a, _b) = UnixStream::pair().unwrap();
        let c = peer_cred(&a).unwrap();
        assert_eq!(c.pid, std::process::id() as i32);
        // SAFETY: getuid has no preconditions and cannot fail.
        assert_eq!(c.uid, unsafe { libc::getuid() });
    }
}
