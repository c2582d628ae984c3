//! The control socket server: a unix stream socket, one thread per connection.
//!
//! [`serve`] binds the socket and starts an accept thread; each connection gets its own thread
//! that answers requests one after another ([`handle_connection`], which does no socket setup
//! and can be driven from memory by tests and fuzzers).
//!
//! Limits (see [`Limits`]; a client cannot hold the socket against the others):
//! - a request is at most [`MAX_REQUEST_BYTES`] and must arrive whole within
//!   `request_timeout` of its first byte (a byte every few seconds does not keep it alive);
//!   a connection idle between requests for `idle_timeout` is closed; a reply must be written
//!   whole within `reply_timeout` of its first byte (a client that does not read its reply is
//!   cut off and the reply freed, as a request that never arrives is);
//! - at most `max_connections` connections, at most `max_per_uid` of them from one user
//!   (`SO_PEERCRED`); when either is reached, a new connection evicts the one of that user
//!   (or of anyone) that has waited longest without a command running (idle, reading a
//!   request, or blocked writing a reply), so a new client always gets in unless every
//!   connection is running a command; an evicted client that was idle or sending is answered
//!   [`BUSY`] and its request never runs (an eviction and the start of a request are ordered
//!   under the connections' lock), so `client::call` sends it again after a pause, as it does
//!   when a connection is refused; one evicted while its reply was being written just sees the
//!   reply cut short (its command ran: nothing tells it to send it again);
//! - a reaper thread checks the deadlines four times a second and shuts overdue connections.

use std::cell::Cell;
use std::collections::HashMap;
use std::fs::{self, DirBuilder};
use std::io::{self, BufReader, Read, Write};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::jsonrpc::{Request, Response};
use super::registry::Registry;

/// The largest request accepted, in bytes; a larger one gets an error and the connection closes.
pub const MAX_REQUEST_BYTES: usize = 1 << 20;

/// A connection that sends nothing for this long between requests is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Connections served at once (see [`Limits`]).
pub const MAX_CONNECTIONS: usize = 64;

/// Connections one user (peer uid) may hold at once (see [`Limits`]).
pub const MAX_CONNECTIONS_PER_UID: usize = 32;

/// A request must arrive whole within this time of its first byte.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A reply must be written whole within this time (a client that does not read it is cut).
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// How often the reaper looks for overdue connections.
const REAP_EVERY: Duration = Duration::from_millis(250);

/// The server's limits; [`Limits::default`] uses the constants of this module.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// A request must arrive whole within this time of its first byte.
    pub request_timeout: Duration,
    /// A connection idle this long between requests is closed.
    pub idle_timeout: Duration,
    /// Connections served at once.
    pub max_connections: usize,
    /// Connections one peer uid may hold at once.
    pub max_per_uid: usize,
    /// A reply must be written whole within this time of its first byte.
    pub reply_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            request_timeout: REQUEST_TIMEOUT,
            idle_timeout: IDLE_TIMEOUT,
            max_connections: MAX_CONNECTIONS,
            max_per_uid: MAX_CONNECTIONS_PER_UID,
            reply_timeout: REPLY_TIMEOUT,
        }
    }
}

/// The answer of a connection closed to admit a newer one: its request did not run (the
/// client library retries on it, see `client::call`).
pub const BUSY: &str = "control socket busy: this connection was closed to admit a newer one before its request ran (try again)";

/// How a connection refused at the limits is answered (the start of the message; its request
/// did not run: `client::call` retries it too).
pub const TOO_MANY: &str = "too many control connections";

/// True if `message` says a request did not run because the socket was full ([`BUSY`],
/// [`TOO_MANY`]): the client may send it again.
pub fn refused_for_room(message: &str) -> bool {
    message == BUSY || message.starts_with(TOO_MANY)
}

/// What a connection is doing, for the reaper and for eviction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Waiting for a request since the instant.
    Idle(Instant),
    /// Reading a request whose first byte came at the instant.
    Reading(Instant),
    /// Running a command (never evicted).
    Running,
    /// Writing a reply since the instant (evicted like an idle connection; cut at
    /// `reply_timeout`).
    Writing(Instant),
}

/// How a connection ended (returned by [`handle_connection`], mostly for tests).
#[derive(Debug)]
pub enum ConnectionEnd {
    /// The client closed the connection between requests.
    Closed,
    /// The client closed the connection in the middle of a request.
    Truncated,
    /// A request was not valid JSON; an error response was sent.
    Malformed,
    /// A request exceeded [`MAX_REQUEST_BYTES`]; an error response was sent.
    TooLarge,
    /// Reading or writing failed (idle timeout, reset, `EPIPE`).
    Io(io::Error),
}

/// A [`Read`] that fails once more than a budget of bytes is read; the budget is reset by the
/// reader's owner after each complete request.
struct Budgeted<'t, R> {
    inner: R,
    budget: Rc<Cell<usize>>,
    exceeded: Rc<Cell<bool>>,
    /// True while a request is being read (set on the first read after a request completed).
    reading: Rc<Cell<bool>>,
    track: &'t dyn Fn(Phase) -> bool,
}

impl<R: Read> Read for Budgeted<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.budget.get();
        if left == 0 {
            self.exceeded.set(true);
            return Err(io::Error::other("request too large"));
        }
        let take = buf.len().min(left);
        let n = self.inner.read(&mut buf[..take])?;
        self.budget.set(left - n);
        // A request starts at its first byte that is not whitespace between requests.
        if !self.reading.get() && buf[..n].iter().any(|b| !b.is_ascii_whitespace()) {
            self.reading.set(true);
            (self.track)(Phase::Reading(Instant::now()));
        }
        Ok(n)
    }
}

/// Answers the requests read from `reader` on `writer` until the client leaves or errs.
///
/// Requests are a stream of JSON values with or without whitespace between them. A value that
/// is valid JSON but not a valid request gets an error response and the connection goes on; a
/// syntax error or an oversized request gets an error response and ends the connection (the
/// stream cannot be resynchronised).
pub fn handle_connection<R: Read, W: Write>(
    reader: R,
    writer: W,
    registry: &Registry,
) -> ConnectionEnd {
    handle_connection_from(reader, writer, registry, "internal")
}

/// [`handle_connection`] for a client described as `peer` in the change log ("pid 12 uid 0").
pub fn handle_connection_from<R: Read, W: Write>(
    reader: R,
    writer: W,
    registry: &Registry,
    peer: &str,
) -> ConnectionEnd {
    handle_connection_tracked(reader, writer, registry, peer, &|_| true)
}

/// [`handle_connection_from`] that reports each change of [`Phase`] to `track` (the server's
/// reaper and eviction use it). `track(Phase::Running)` false: the connection was evicted
/// before its request could run; the request does not run (its client was told so).
pub fn handle_connection_tracked<R: Read, W: Write>(
    reader: R,
    mut writer: W,
    registry: &Registry,
    peer: &str,
    track: &dyn Fn(Phase) -> bool,
) -> ConnectionEnd {
    let budget = Rc::new(Cell::new(MAX_REQUEST_BYTES));
    let exceeded = Rc::new(Cell::new(false));
    let reading = Rc::new(Cell::new(false));
    let reader = Budgeted {
        inner: BufReader::new(reader),
        budget: budget.clone(),
        exceeded: exceeded.clone(),
        reading: reading.clone(),
        track,
    };
    let mut requests = serde_json::Deserializer::from_reader(reader).into_iter::<Value>();
    loop {
        let (response, end) = match requests.next() {
            None => return ConnectionEnd::Closed,
            Some(Ok(value)) => {
                budget.set(MAX_REQUEST_BYTES);
                reading.set(false);
                if !track(Phase::Running) {
                    return ConnectionEnd::Io(io::Error::other(
                        "closed to admit another connection before the request ran",
                    ));
                }
                (respond(&value, registry, peer), None)
            }
            Some(Err(_)) if exceeded.get() => (
                Response::err(
                    Value::Null,
                    format!("request exceeds the {MAX_REQUEST_BYTES}-byte limit"),
                ),
                Some(ConnectionEnd::TooLarge),
            ),
            // The client stopped sending inside a request (it may still read: a half-close).
            Some(Err(e)) if e.is_eof() => (
                Response::err(
                    Value::Null,
                    format!("truncated JSON-RPC request: the connection ended inside it ({e})"),
                ),
                Some(ConnectionEnd::Truncated),
            ),
            Some(Err(e)) if e.is_io() => return ConnectionEnd::Io(e.into()),
            Some(Err(e)) => (
                Response::err(Value::Null, format!("malformed JSON-RPC request: {e}")),
                Some(ConnectionEnd::Malformed),
            ),
        };
        // The reply may block on a client that does not read: it is evictable from now on.
        if !track(Phase::Writing(Instant::now())) {
            return ConnectionEnd::Io(io::Error::other("closed before its reply could be written"));
        }
        if let Err(e) = writer
            .write_all(&response.to_line())
            .and_then(|()| writer.flush())
        {
            return ConnectionEnd::Io(e);
        }
        if let Some(end) = end {
            return end;
        }
        track(Phase::Idle(Instant::now()));
    }
}

/// The response to one well-formed JSON value.
fn respond(value: &Value, registry: &Registry, peer: &str) -> Response {
    match Request::from_json(value) {
        Ok(request) => Response::from_outcome(
            request.id,
            registry.call_from(&request.method, &request.params, peer),
        ),
        Err(e) => {
            let id = value.get("id").cloned().unwrap_or(Value::Null);
            Response::err(id, format!("invalid JSON-RPC request: {e}"))
        }
    }
}

/// One live connection, as the accept thread and the reaper see it.
struct Conn {
    /// A clone of the stream, so the server can shut it.
    stream: UnixStream,
    /// The peer's uid (`None` when `SO_PEERCRED` failed).
    uid: Option<u32>,
    phase: Phase,
    /// Shut by eviction or the reaper; no longer counted against the limits.
    closing: bool,
}

/// State shared by the accept thread, the connection threads, the reaper and the handle.
struct Shared {
    registry: Arc<Registry>,
    limits: Limits,
    stop: AtomicBool,
    active: AtomicUsize,
    next_id: AtomicU64,
    /// The live connections.
    connections: Mutex<HashMap<u64, Conn>>,
}

impl Shared {
    fn conns(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Conn>> {
        self.connections.lock().unwrap_or_else(|e| e.into_inner())
    }
}
/// A running control socket server. Dropping it shuts it down.
#[derive(Debug)]
pub struct ServerHandle {
    path: PathBuf,
    /// Device and inode of the socket file we created, so we never remove another's.
    ident: (u64, u64),
    shared: Arc<Shared>,
    accept_thread: Option<JoinHandle<()>>,
    reaper_thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("active", &self.active.load(Ordering::Relaxed))
            .finish()
    }
}

impl ServerHandle {
    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The number of connections being served.
    pub fn connections(&self) -> usize {
        self.shared.active.load(Ordering::SeqCst)
    }

    /// Stops accepting, closes live connections and removes the socket file (if it is still
    /// ours). Idempotent; also done on drop.
    pub fn shutdown(&mut self) {
        if self.shared.stop.swap(true, Ordering::SeqCst) {
            return;
        }
        let ours = self.is_our_socket();
        if let Some(thread) = self.accept_thread.take() {
            // Wake the blocked accept() with a connection of our own; if the file is no longer
            // ours we cannot, and the thread ends with the process.
            if ours && UnixStream::connect(&self.path).is_ok() {
                let _ = thread.join();
            }
        }
        for c in self.shared.conns().values() {
            let _ = c.stream.shutdown(std::net::Shutdown::Both);
        }
        if let Some(thread) = self.reaper_thread.take() {
            let _ = thread.join();
        }
        if ours {
            let _ = fs::remove_file(&self.path);
        }
    }

    fn is_our_socket(&self) -> bool {
        fs::symlink_metadata(&self.path).is_ok_and(|m| (m.dev(), m.ino()) == self.ident)
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Serves `registry` on a unix socket at `path` with permissions `mode` (usually 0o600).
///
/// Creates the parent directory (0755) if missing. If `path` exists and something answers on
/// it, fails with "another uvs is listening on PATH"; a stale socket is replaced; any other
/// kind of file is left alone and is an error. The socket appears at `path` already carrying
/// `mode` (it is bound in a private directory, then linked into place), so no client can
/// connect through looser permissions first.
pub fn serve(path: &Path, registry: Arc<Registry>, mode: u32) -> io::Result<ServerHandle> {
    serve_with(path, registry, mode, Limits::default())
}

/// [`serve`] with explicit [`Limits`].
pub fn serve_with(
    path: &Path,
    registry: Arc<Registry>,
    mode: u32,
    limits: Limits,
) -> io::Result<ServerHandle> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(parent)
        .map_err(|e| context(e, format!("cannot create directory {}", parent.display())))?;
    remove_stale(path)?;
    let listener = bind_with_mode(path, parent, mode)?;
    let meta = fs::symlink_metadata(path)
        .map_err(|e| context(e, format!("cannot stat {}", path.display())))?;
    let shared = Arc::new(Shared {
        registry,
        limits,
        stop: AtomicBool::new(false),
        active: AtomicUsize::new(0),
        next_id: AtomicU64::new(0),
        connections: Mutex::new(HashMap::new()),
    });
    let accept_shared = shared.clone();
    let accept_thread = thread::Builder::new()
        .name("uvs-ctl-accept".into())
        .spawn(move || accept_loop(listener, accept_shared));
    let accept_thread = match accept_thread {
        Ok(thread) => thread,
        Err(e) => {
            let _ = fs::remove_file(path);
            return Err(e);
        }
    };
    let reaper_shared = shared.clone();
    let reaper_thread = thread::Builder::new()
        .name("uvs-ctl-reaper".into())
        .spawn(move || reap_loop(&reaper_shared))
        .ok();
    Ok(ServerHandle {
        path: path.to_path_buf(),
        ident: (meta.dev(), meta.ino()),
        shared,
        accept_thread: Some(accept_thread),
        reaper_thread,
    })
}

/// Checks what is at `path`: nothing, a live server (error), a stale socket (removed) or
/// something else (error).
fn remove_stale(path: &Path) -> io::Result<()> {
    let meta = match fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(context(e, format!("cannot stat {}", path.display()))),
    };
    if !meta.file_type().is_socket() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!(
                "{} exists and is not a socket; not replacing it",
                path.display()
            ),
        ));
    }
    match UnixStream::connect(path) {
        Ok(_) => Err(another_listening(path)),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => match fs::remove_file(path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(context(
                e,
                format!("cannot remove stale socket {}", path.display()),
            )),
            _ => Ok(()),
        },
        Err(e) => Err(context(
            e,
            format!("cannot check existing socket {}", path.display()),
        )),
    }
}

fn another_listening(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::AddrInUse,
        format!("another uvs is listening on {}", path.display()),
    )
}

/// Binds in a fresh 0700 directory next to `path`, applies `mode`, then hard-links the socket
/// to `path` (which fails rather than replaces if a server appeared meanwhile).
fn bind_with_mode(path: &Path, parent: &Path, mode: u32) -> io::Result<UnixListener> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let private = parent.join(format!(".uvs{}.{n}", std::process::id()));
    let temp = private.join("s");
    let result = DirBuilder::new()
        .mode(0o700)
        .create(&private)
        .and_then(|()| {
            let listener = UnixListener::bind(&temp)?;
            fs::set_permissions(&temp, fs::Permissions::from_mode(mode))?;
            match fs::hard_link(&temp, path) {
                Ok(()) => Ok(listener),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(another_listening(path)),
                // A filesystem without hard links: rename instead.
                Err(_) => fs::rename(&temp, path).map(|()| listener),
            }
        });
    let _ = fs::remove_file(&temp);
    let _ = fs::remove_dir(&private);
    match result {
        Ok(listener) => Ok(listener),
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => Err(e),
        // The private path may be too long for sun_path where `path` is not: bind directly.
        Err(e) if e.kind() == io::ErrorKind::InvalidInput => bind_direct(path, mode),
        Err(e) => Err(context(e, format!("cannot bind {}", path.display()))),
    }
}

fn bind_direct(path: &Path, mode: u32) -> io::Result<UnixListener> {
    let listener = UnixListener::bind(path)
        .map_err(|e| context(e, format!("cannot bind {}", path.display())))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(|e| context(e, format!("cannot chmod {}", path.display())))?;
    Ok(listener)
}

fn accept_loop(listener: UnixListener, shared: Arc<Shared>) {
    for stream in listener.incoming() {
        if shared.stop.load(Ordering::SeqCst) {
            break;
        }
        match stream {
            Ok(stream) => start_connection(stream, &shared),
            // Out of fds or similar: back off instead of spinning.
            Err(_) => thread::sleep(Duration::from_millis(100)),
        }
    }
}

fn start_connection(stream: UnixStream, shared: &Arc<Shared>) {
    let limits = shared.limits;
    let _ = stream.set_read_timeout(Some(limits.idle_timeout));
    // The reaper cuts a reply at `reply_timeout` in all; no one write blocks longer either.
    let _ = stream.set_write_timeout(Some(limits.reply_timeout));
    let cred = super::sys::peer_cred(&stream);
    let uid = cred.as_ref().ok().map(|c| c.uid);
    let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
    {
        let mut conns = shared.conns();
        if let Err(message) = admit(&mut conns, uid, &limits) {
            drop(conns);
            tracing::warn!("control socket: refused a connection: {message}");
            let _ = (&stream).write_all(&Response::err(Value::Null, message).to_line());
            return;
        }
        let Ok(clone) = stream.try_clone() else {
            return;
        };
        conns.insert(
            id,
            Conn {
                stream: clone,
                uid,
                phase: Phase::Idle(Instant::now()),
                closing: false,
            },
        );
        shared.active.fetch_add(1, Ordering::SeqCst);
    }
    let conn_shared = shared.clone();
    let spawned = thread::Builder::new()
        .name("uvs-ctl-conn".into())
        .spawn(move || {
            let peer = match cred {
                Ok(c) => c.to_string(),
                Err(e) => format!("unknown peer ({e})"),
            };
            // Under the connections' lock, so an eviction and the start of a request are
            // ordered: an evicted connection's request never runs (found trying uvs as a new
            // user: a client told its connection was closed had its bridge created).
            let track = |phase: Phase| match conn_shared.conns().get_mut(&id) {
                Some(c) if !c.closing => {
                    c.phase = phase;
                    true
                }
                _ => false,
            };
            handle_connection_tracked(&stream, &stream, &conn_shared.registry, &peer, &track);
            finish_connection(&conn_shared, id);
        });
    if spawned.is_err() {
        finish_connection(shared, id);
    }
}

/// Makes room for a connection from `uid`: evicts the longest-waiting connection of that user
/// when it holds `max_per_uid`, else the longest-waiting of all when `max_connections` are
/// open. Fails (with the message for the client) when nothing can be evicted.
fn admit(conns: &mut HashMap<u64, Conn>, uid: Option<u32>, limits: &Limits) -> Result<(), String> {
    // Connections whose client already left (their thread has not noticed yet) do not count.
    for c in conns.values_mut() {
        if !c.closing && c.phase != Phase::Running && super::sys::peer_gone(&c.stream) {
            c.closing = true;
        }
    }
    let live = || conns.values().filter(|c| !c.closing);
    let of_uid = live().filter(|c| c.uid == uid).count();
    let total = live().count();
    let (same_user, why) = if of_uid >= limits.max_per_uid {
        (true, format!("uid {}", uid.map_or(-1, i64::from)))
    } else if total >= limits.max_connections {
        (false, String::new())
    } else {
        return Ok(());
    };
    let victim = conns
        .iter_mut()
        .filter(|(_, c)| !c.closing && (!same_user || c.uid == uid))
        .filter_map(|(_, c)| match c.phase {
            Phase::Idle(t) | Phase::Reading(t) | Phase::Writing(t) => Some((t, c)),
            Phase::Running => None,
        })
        .min_by_key(|(t, _)| *t);
    match victim {
        Some((_, c)) => {
            // Debug level: a client making connections in a loop must not flood the log.
            tracing::debug!(
                "control socket: closing the longest-waiting connection (uid {:?}) to admit a new one",
                c.uid
            );
            c.closing = true;
            // Its request (if one came) has not run and will not: the client may retry. A
            // reply being written is only cut (its request ran; BUSY inside it would be
            // garbage, and would have the client run the command again).
            if !matches!(c.phase, Phase::Writing(_)) {
                let _ = c.stream.set_write_timeout(Some(Duration::from_millis(100)));
                let _ =
                    (&c.stream).write_all(&Response::err(Value::Null, BUSY.to_string()).to_line());
            }
            let _ = c.stream.shutdown(std::net::Shutdown::Both);
            Ok(())
        }
        None if same_user => Err(format!(
            "{TOO_MANY} for {why} (limit {}), all running commands",
            limits.max_per_uid
        )),
        None => Err(format!(
            "{TOO_MANY} (limit {}), all running commands",
            limits.max_connections
        )),
    }
}

/// Shuts connections whose request or reply is overdue or that idled too long, until the
/// server stops (the shutdown wakes a thread blocked writing: its write fails, it ends and
/// frees the reply).
fn reap_loop(shared: &Shared) {
    while !shared.stop.load(Ordering::SeqCst) {
        thread::sleep(REAP_EVERY);
        let limits = shared.limits;
        for c in shared.conns().values_mut().filter(|c| !c.closing) {
            let why = match c.phase {
                Phase::Reading(t) if t.elapsed() > limits.request_timeout => {
                    "request not complete in time"
                }
                Phase::Idle(t) if t.elapsed() > limits.idle_timeout => "idle",
                Phase::Writing(t) if t.elapsed() > limits.reply_timeout => "reply not read in time",
                _ => continue,
            };
            tracing::debug!(
                "control socket: closing a connection (uid {:?}): {why}",
                c.uid
            );
            c.closing = true;
            let _ = c.stream.shutdown(std::net::Shutdown::Both);
        }
    }
}

fn finish_connection(shared: &Shared, id: u64) {
    if shared.conns().remove(&id).is_some() {
        shared.active.fetch_sub(1, Ordering::SeqCst);
    }
}

fn context(e: io::Error, what: String) -> io::Error {
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::registry::Reply;
    use serde_json::json;

    fn registry() -> Registry {
        let mut r = Registry::new();
        r.register("echo", "A [B]", 1, 2, |args| {
            Ok(Reply::new(args.join(" "), json!(args)))
        });
        r
    }

    fn run(input: &[u8]) -> (Vec<Value>, ConnectionEnd) {
        let mut out = Vec::new();
        let end = handle_connection(input, &mut out, &registry());
        assert!(out.is_empty() || out.ends_with(b"\n"));
        let values = serde_json::Deserializer::from_slice(&out)
            .into_iter()
            .map(Result::unwrap)
            .collect();
        (values, end)
    }

    #[test]
    fn answers_a_stream_without_separators() {
        let (out, end) =
            run(br#"{"method":"echo","params":["a"],"id":1}{"method":"echo","params":["b","c"],"id":"x"}"#);
        assert!(matches!(end, ConnectionEnd::Closed), "{end:?}");
        assert_eq!(
            out[0],
            json!({"result": {"text": "a", "data": ["a"]}, "error": null, "id": 1})
        );
        assert_eq!(out[1]["result"]["text"], "b c");
        assert_eq!(out[1]["id"], "x");
    }

    #[test]
    fn invalid_request_continues() {
        let (out, end) = run(
            b"{\"method\": 5, \"id\": 3}\n[1]\n{\"method\":\"echo\",\"params\":[\"z\"],\"id\":4}\n",
        );
        assert!(matches!(end, ConnectionEnd::Closed), "{end:?}");
        assert_eq!(
            out[0]["error"],
            "invalid JSON-RPC request: \"method\" must be a string, got number"
        );
        assert_eq!(out[0]["id"], 3);
        assert_eq!(
            out[1]["error"],
            "invalid JSON-RPC request: request must be a JSON object, got array"
        );
        assert_eq!(out[2]["result"]["text"], "z");
    }

    #[test]
    fn malformed_json_ends_connection() {
        let (out, end) = run(b"{\"method\":\"version\"}\n{{{ {\"method\":\"version\"}");
        assert!(matches!(end, ConnectionEnd::Malformed), "{end:?}");
        assert_eq!(out.len(), 2);
        let error = out[1]["error"].as_str().unwrap();
        assert!(
            error
                .starts_with("malformed JSON-RPC request: key must be a string at line 2 column 2"),
            "{error}"
        );
    }

    /// A client that stops sending inside a request (a half-close) is told so before the
    /// connection ends (it got nothing and could not tell why; found trying uvs as a new user).
    #[test]
    fn truncated_request_is_answered_then_closed() {
        let (out, end) = run(br#"{"method":"ec"#);
        assert_eq!(out.len(), 1);
        let error = out[0]["error"].as_str().unwrap();
        assert!(error.starts_with("truncated JSON-RPC request"), "{error}");
        assert!(matches!(end, ConnectionEnd::Truncated), "{end:?}");
    }

    #[test]
    fn oversized_request_rejected() {
        let mut big = br#"{"method":"echo","params":[""#.to_vec();
        big.extend(std::iter::repeat_n(b'x', MAX_REQUEST_BYTES));
        big.extend(br#""]}"#);
        let (out, end) = run(&big);
        assert!(matches!(end, ConnectionEnd::TooLarge), "{end:?}");
        assert_eq!(
            out[0]["error"],
            format!("request exceeds the {MAX_REQUEST_BYTES}-byte limit")
        );
    }

    #[test]
    fn budget_resets_per_request() {
        // Several requests whose total exceeds the limit, none of which does alone.
        let arg = "y".repeat(MAX_REQUEST_BYTES / 3);
        let one = Request::new("echo", vec![arg], json!(1)).to_line();
        let input: Vec<u8> = one.iter().copied().cycle().take(one.len() * 5).collect();
        let (out, end) = run(&input);
        assert!(matches!(end, ConnectionEnd::Closed), "{end:?}");
        assert_eq!(out.len(), 5);
    }

    #[test]
    fn write_failure_ends_connection() {
        struct Broken;
        impl Write for Broken {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::Error::from(io::ErrorKind::BrokenPipe))
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let end = handle_connection(&br#"{"method":"version"}"#[..], Broken, &registry());
        assert!(matches!(end, ConnectionEnd::Io(e) if e.kind() == io::ErrorKind::BrokenPipe));
    }
}
