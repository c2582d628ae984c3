//! The control socket client used by `uvs ctl`.
//!
//! Files named on the command line (`add-flows BRIDGE FILE`) are read here, by the client, with
//! the client's own permissions, and their lines are sent in requests below the server's size
//! limit: the daemon never opens a path a client names.

use std::io::{self, BufReader, Read, Write};
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

/// [`call`] with an explicit timeout. A request the daemon did not run because its control
/// socket was full (refused at connect, or closed to admit a newer connection before it ran:
/// `server::BUSY`) is sent again after a short random pause, until `timeout`: many clients at
/// once (a CNI runtime starting dozens of containers) wait their turn instead of failing.
pub fn call_with_timeout(
    path: &Path,
    method: &str,
    params: &[String],
    timeout: Duration,
) -> Result<Reply, ClientError> {
    let start = std::time::Instant::now();
    let mut pause_ms = 20u64;
    loop {
        match call_once(path, method, params, timeout) {
            Err(ClientError::Remote(m))
                if super::server::refused_for_room(&m)
                    && start.elapsed() + Duration::from_millis(pause_ms) < timeout =>
            {
                // Jitter from the clock, so waiting clients do not come back together.
                let jitter = u64::from(
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.subsec_micros()),
                ) % pause_ms;
                std::thread::sleep(Duration::from_millis(pause_ms + jitter));
                pause_ms = (pause_ms * 2).min(500);
            }
            r => return r,
        }
    }
}

/// One try of [`call_with_timeout`].
fn call_once(
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
    // A failed write may follow the daemon's refusal (`server::BUSY`, sent before it closed):
    // that answer is read below; only without one is the write error the result.
    let sent = (&stream).write_all(&request.to_line());

    let protocol = |message: String| ClientError::Protocol {
        path: path.to_path_buf(),
        message,
    };
    let mut replies =
        serde_json::Deserializer::from_reader(BufReader::new(&stream)).into_iter::<Value>();
    let value = match replies.next() {
        None if sent.is_err() => return Err(io_error(sent.unwrap_err())),
        Some(Err(_)) if sent.is_err() => return Err(io_error(sent.unwrap_err())),
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

/// Requests that carry many lines (add-flows) are split to stay below this many bytes each,
/// well under the server's [`super::server::MAX_REQUEST_BYTES`].
pub const CHUNK_BYTES: usize = 512 * 1024;

/// The largest flow file `add-flows` reads (a guard against `/dev/zero` and the like).
pub const MAX_FLOW_FILE_BYTES: u64 = 256 << 20;

/// `uvs ctl add-flows BRIDGE FILE` (`-` for standard input): reads FILE here, checks every
/// flow's syntax (errors name `FILE:LINE`), then sends the flows as `add-flows BRIDGE FLOW...`
/// requests of at most [`CHUNK_BYTES`] each. Each request is applied whole; a file larger than
/// one request is applied request by request, and an error says how many were added before.
/// Returns one reply with the totals.
pub fn add_flows(path: &Path, bridge: &str, file: &str) -> Result<Reply, String> {
    let text = read_limited(file, MAX_FLOW_FILE_BYTES)?;
    let mut lines = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        crate::flow::parse_flow(line).map_err(|e| format!("{file}:{}: {e}", i + 1))?;
        lines.push(line.to_string());
    }
    let (mut added, mut replaced, mut requests) = (0u64, 0u64, 0usize);
    for chunk in chunks(&lines, CHUNK_BYTES) {
        let mut params = Vec::with_capacity(chunk.len() + 1);
        params.push(bridge.to_string());
        params.extend(chunk.iter().cloned());
        let reply = call(path, "add-flows", &params).map_err(|e| {
            if requests == 0 {
                e.to_string()
            } else {
                format!("{e} (after {added} flows added by {requests} earlier requests)")
            }
        })?;
        added += reply.data["added"].as_u64().unwrap_or(0);
        replaced += reply.data["replaced"].as_u64().unwrap_or(0);
        requests += 1;
    }
    Ok(Reply::new(
        format!("added {added}, replaced {replaced}\n"),
        json!({"added": added, "replaced": replaced, "requests": requests}),
    ))
}

/// The text of `file` (`-`: standard input), at most `limit` bytes.
fn read_limited(file: &str, limit: u64) -> Result<String, String> {
    let mut bytes = Vec::new();
    let read = if file == "-" {
        io::stdin().lock().take(limit + 1).read_to_end(&mut bytes)
    } else {
        std::fs::File::open(file).and_then(|f| f.take(limit + 1).read_to_end(&mut bytes))
    };
    read.map_err(|e| format!("{file}: {}", describe(&e)))?;
    if bytes.len() as u64 > limit {
        return Err(format!("{file}: larger than {limit} bytes"));
    }
    String::from_utf8(bytes).map_err(|e| format!("{file}: not UTF-8 text ({e})"))
}

/// `lines` split into runs whose JSON encoding stays under `bytes` (a line longer than that
/// goes alone, and the server judges it).
fn chunks(lines: &[String], bytes: usize) -> Vec<&[String]> {
    let mut out = Vec::new();
    let (mut start, mut size) = (0, 0);
    for (i, line) in lines.iter().enumerate() {
        let n = serde_json::to_string(line).map_or(line.len(), |s| s.len()) + 1;
        if i > start && size + n > bytes {
            out.push(&lines[start..i]);
            (start, size) = (i, 0);
        }
        size += n;
    }
    if start < lines.len() {
        out.push(&lines[start..]);
    }
    out
}

/// Prints a reply as `uvs ctl` does: `data` as pretty JSON with `json`, else `text` with a
/// final newline. Errors are the writer's (a closed pipe is `BrokenPipe`).
pub fn print_reply(out: &mut dyn Write, reply: &Reply, json: bool) -> io::Result<()> {
    if json {
        let text = serde_json::to_string_pretty(&reply.data).unwrap_or_default();
        writeln!(out, "{text}")?;
    } else if !reply.text.is_empty() {
        out.write_all(reply.text.as_bytes())?;
        if !reply.text.ends_with('\n') {
            writeln!(out)?;
        }
    }
    out.flush()
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
    fn chunks_stay_under_the_size_and_keep_every_line() {
        let lines: Vec<String> = (0..1000)
            .map(|i| format!("priority={i},actions=drop"))
            .collect();
        let parts = chunks(&lines, 1000);
        assert!(parts.len() > 20);
        assert!(
            parts
                .iter()
                .all(|c| c.iter().map(|l| l.len() + 3).sum::<usize>() <= 1000)
        );
        assert_eq!(parts.concat(), lines);
        let long = vec!["x".repeat(5000), "y".into()];
        assert_eq!(chunks(&long, 1000).len(), 2, "an oversized line goes alone");
        assert!(chunks(&[], 1000).is_empty());
    }

    #[test]
    fn flow_file_is_read_by_the_client_with_limits() {
        let e = add_flows(Path::new("/nonexistent/uvs.sock"), "br0", "/nonexistent/f").unwrap_err();
        assert_eq!(e, "/nonexistent/f: No such file or directory");
        let e = read_limited("/dev/zero", 1000).unwrap_err();
        assert_eq!(e, "/dev/zero: larger than 1000 bytes");
        let dir = std::env::temp_dir().join(format!("uvs-client-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("flows.txt");
        std::fs::write(
            &f,
            "# c\npriority=1,actions=drop\n\npriority=2,foo=1,actions=drop\n",
        )
        .unwrap();
        let e = add_flows(
            Path::new("/nonexistent/uvs.sock"),
            "br0",
            f.to_str().unwrap(),
        )
        .unwrap_err();
        assert!(e.starts_with(&format!("{}:4: ", f.display())), "{e}");
        assert!(e.contains("foo"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn print_reply_reports_a_closed_pipe() {
        struct Closed;
        impl Write for Closed {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::Error::from(io::ErrorKind::BrokenPipe))
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let r = Reply::new("a\n", json!(1));
        let e = print_reply(&mut Closed, &r, false).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::BrokenPipe);
        let mut out = Vec::new();
        print_reply(&mut out, &Reply::new("x", json!({"a": 1})), false).unwrap();
        assert_eq!(out, b"x\n");
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
