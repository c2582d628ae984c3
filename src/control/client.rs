//! The control socket client used by `uvs ctl`.

use std::io::{self, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};

use super::jsonrpc::{Request, Response};
use super::registry::Reply;

/// How long [`call`] waits for the daemon (to accept the request, and to reply).
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The socket could not be connected to (missing, refused, no permission).
    #[error("cannot connect to {}: {} (is `uvs run` running?)", .path.display(), describe(.source))]
    Connect {
        /// The socket path.
        path: PathBuf,
        /// The connect error.
        source: io::Error,
    },
    /// Sending the request or reading the reply failed.
    #[error("error talking to {}: {}", .path.display(), describe(.source))]
    Io {
        /// The socket path.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// The daemon did not reply in time.
    #[error("no reply from {} within {}s", .path.display(), .after.as_secs())]
    Timeout {
        /// The socket path.
        path: PathBuf,
        /// How long we waited.
        after: Duration,
    },
    /// The reply was not a valid JSON-RPC response.
    #[error("bad reply from {}: {message}", .path.display())]
    Protocol {
        /// The socket path.
        path: PathBuf,
        /// What was wrong.
        message: String,
    },
    /// The daemon ran the request and reported an error.
    #[error("{0}")]
    Remote(String),
}

/// Calls `method` with `params` on the daemon at `path`, waiting up to [`CLIENT_TIMEOUT`].
pub fn call(path: &Path, method: &str, params: &[String]) -> Result<Reply, ClientError> {
    call_with_timeout(path, method, params, CLIENT_TIMEOUT)
}

/// [`call`] with an explicit timeout.
pub fn call_with_timeout(
    path: &Path,
    method: &str,
    params: &[String],
    timeout: Duration,
) -> Result<Reply, ClientError> {
    let stream = UnixStream::connect(path).map_err(|source| ClientError::Connect {
        path: path.to_path_buf(),
        source,
    })?;
    let io_error = |source: io::Error| {
        if matches!(
            source.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
        ) {
            ClientError::Timeout {
                path: path.to_path_buf(),
                after: timeout,
            }
        } else {
            ClientError::Io {
                path: path.to_path_buf(),
                source,
            }
        }
    };
    stream.set_read_timeout(Some(timeout)).map_err(io_error)?;
    stream.set_write_timeout(Some(timeout)).map_err(io_error)?;
    let request = Request::new(method, params.to_vec(), json!(1));
    (&stream).write_all(&request.to_line()).map_err(io_error)?;

    let protocol = |message: String| ClientError::Protocol {
        path: path.to_path_buf(),
        message,
    };
    let mut replies =
        serde_json::Deserializer::from_reader(BufReader::new(&stream)).into_iter::<Value>();
    let value = match replies.next() {
        None => return Err(protocol("connection closed before a reply arrived".into())),
        Some(Ok(value)) => value,
        Some(Err(e)) if e.is_io() => return Err(io_error(e.into())),
        Some(Err(e)) if e.is_eof() => {
            return Err(protocol(
                "connection closed in the middle of the reply".into(),
            ));
        }
        Some(Err(e)) => return Err(protocol(format!("malformed JSON: {e}"))),
    };
    let response = Response::from_json(value).map_err(protocol)?;
    // A server-side protocol error (for example "too many connections") carries a null id.
    if response.id != json!(1) && response.error.is_none() {
        return Err(protocol(format!(
            "reply id {} does not match request id 1",
            response.id
        )));
    }
    response.into_result().map_err(ClientError::Remote)
}

/// An io error without the " (os error N)" suffix: "No such file or directory".
fn describe(e: &io::Error) -> String {
    let text = e.to_string();
    match (e.raw_os_error(), text.rfind(" (os error ")) {
        (Some(_), Some(at)) => text[..at].to_string(),
        _ => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_error_names_path_and_hint() {
        let path = Path::new("/nonexistent-uvs-dir/uvs.sock");
        let err = call(path, "version", &[]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "cannot connect to /nonexistent-uvs-dir/uvs.sock: No such file or directory (is `uvs run` running?)"
        );
    }

    #[test]
    fn describe_keeps_custom_messages() {
        assert_eq!(describe(&io::Error::other("boom")), "boom");
        assert_eq!(
            describe(&io::Error::from_raw_os_error(libc::ECONNREFUSED)),
            "Connection refused"
        );
    }
}
