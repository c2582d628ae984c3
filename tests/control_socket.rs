//! The control socket end to end over real unix sockets (no root needed).

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use uvs::control::{self, ClientError, Registry, Reply, ServerHandle};

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("uvs-ctl-{}-{tag}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn sock(&self) -> PathBuf {
        self.0.join("uvs.sock")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn registry() -> Arc<Registry> {
    let mut r = Registry::new();
    r.register("echo", "echo A [B]", 1, 2, |args| {
        Ok(Reply::new(args.join(" "), json!(args)))
    });
    r.register("fail", "", 0, 0, |_| {
        Err(control::CtlError::new("bridge 'br9' does not exist"))
    });
    Arc::new(r)
}

fn start(tag: &str) -> (TempDir, ServerHandle) {
    let dir = TempDir::new(tag);
    let server = control::serve(&dir.sock(), registry(), 0o600).unwrap();
    (dir, server)
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn raw(path: &Path) -> (UnixStream, BufReader<UnixStream>) {
    let stream = UnixStream::connect(path).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let reader = BufReader::new(stream.try_clone().unwrap());
    (stream, reader)
}

fn read_response(reader: &mut BufReader<UnixStream>) -> Value {
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert!(
        line.ends_with('\n'),
        "response not newline-terminated: {line:?}"
    );
    serde_json::from_str(&line).unwrap()
}

fn assert_serves(path: &Path) {
    let reply = control::call(path, "echo", &args(&["still", "here"])).unwrap();
    assert_eq!(reply.text, "still here");
}

#[test]
fn call_ok() {
    let (_dir, server) = start("ok");
    let reply = control::call(server.path(), "echo", &args(&["a", "b"])).unwrap();
    assert_eq!(reply, Reply::new("a b", json!(["a", "b"])));
    let reply = control::call(server.path(), "echo", &args(&["only"])).unwrap();
    assert_eq!(reply.data, json!(["only"]));
}

#[test]
fn builtins() {
    let (_dir, server) = start("builtins");
    let reply = control::call(server.path(), "list-commands", &[]).unwrap();
    assert_eq!(
        reply.text,
        "  echo A [B]\n  fail\n  list-commands\n  version\n"
    );
    assert_eq!(reply.data[0], json!({"name": "echo", "usage": "A [B]"}));
    let reply = control::call(server.path(), "version", &[]).unwrap();
    assert_eq!(reply.data["version"], env!("CARGO_PKG_VERSION"));
}

#[test]
fn unknown_command_is_named() {
    let (_dir, server) = start("unknown");
    let err = control::call(server.path(), "frobnicate", &[]).unwrap_err();
    assert!(
        matches!(&err, ClientError::Remote(m) if m == "unknown command 'frobnicate'; try list-commands")
    );
}

#[test]
fn wrong_argument_count_shows_usage() {
    let (_dir, server) = start("argc");
    let err = control::call(server.path(), "echo", &[]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "'echo' takes 1 to 2 arguments, got 0; usage: echo A [B]"
    );
    let err = control::call(server.path(), "echo", &args(&["a", "b", "c"])).unwrap_err();
    assert_eq!(
        err.to_string(),
        "'echo' takes 1 to 2 arguments, got 3; usage: echo A [B]"
    );
}

#[test]
fn handler_error_is_remote() {
    let (_dir, server) = start("handler-err");
    let err = control::call(server.path(), "fail", &[]).unwrap_err();
    assert!(
        matches!(&err, ClientError::Remote(m) if m == "bridge 'br9' does not exist"),
        "{err}"
    );
}

#[test]
fn invalid_request_names_problem_and_connection_survives() {
    let (_dir, server) = start("invalid");
    let (mut stream, mut reader) = raw(server.path());
    stream.write_all(br#"{"method": 5, "id": 7}"#).unwrap();
    let response = read_response(&mut reader);
    assert_eq!(response["result"], Value::Null);
    assert_eq!(response["id"], 7);
    let error = response["error"].as_str().unwrap();
    assert!(error.contains("\"method\" must be a string"), "{error}");

    stream
        .write_all(br#"{"method": "echo", "params": ["a", 3], "id": 8}"#)
        .unwrap();
    let error = read_response(&mut reader)["error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        error.contains("params[1] must be a string, got number"),
        "{error}"
    );

    // The same connection still answers, and so does a new one.
    stream
        .write_all(br#"{"method": "echo", "params": ["x"], "id": 9}"#)
        .unwrap();
    assert_eq!(read_response(&mut reader)["result"]["text"], "x");
    assert_serves(server.path());
}

#[test]
fn garbage_gets_error_then_close() {
    let (_dir, server) = start("garbage");
    let (mut stream, mut reader) = raw(server.path());
    stream.write_all(b"{{{").unwrap();
    let response = read_response(&mut reader);
    let error = response["error"].as_str().unwrap();
    assert!(error.starts_with("malformed JSON-RPC request: "), "{error}");
    assert!(error.contains("line 1 column 2"), "{error}");
    assert_eq!(response["id"], Value::Null);
    let mut rest = Vec::new();
    assert_eq!(
        reader.read_to_end(&mut rest).unwrap(),
        0,
        "connection should be closed"
    );
    assert_serves(server.path());
}

#[test]
fn two_requests_without_newline() {
    let (_dir, server) = start("pipelined");
    let (mut stream, mut reader) = raw(server.path());
    stream
        .write_all(br#"{"method":"echo","params":["one"],"id":1}{"method":"echo","params":["two"],"id":2}"#)
        .unwrap();
    let first = read_response(&mut reader);
    let second = read_response(&mut reader);
    assert_eq!(
        (first["id"].clone(), first["result"]["text"].clone()),
        (json!(1), json!("one"))
    );
    assert_eq!(
        (second["id"].clone(), second["result"]["text"].clone()),
        (json!(2), json!("two"))
    );
    assert_eq!(first["error"], Value::Null);
}

#[test]
fn half_request_then_disconnect() {
    let (_dir, server) = start("half");
    for _ in 0..3 {
        let mut stream = UnixStream::connect(server.path()).unwrap();
        stream.write_all(br#"{"method":"echo","par"#).unwrap();
        drop(stream);
        drop(UnixStream::connect(server.path()).unwrap());
    }
    // A client that sends a request and leaves before reading the reply.
    let mut stream = UnixStream::connect(server.path()).unwrap();
    stream
        .write_all(br#"{"method":"list-commands","id":1}"#)
        .unwrap();
    drop(stream);
    assert_serves(server.path());
    // The connection threads finish.
    for _ in 0..100 {
        if server.connections() == 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(server.connections(), 0);
}

#[test]
fn oversized_request_rejected() {
    let (_dir, server) = start("big");
    let (stream, mut reader) = raw(server.path());
    let writer = std::thread::spawn(move || {
        let mut stream = stream;
        let _ = stream.write_all(br#"{"method":"echo","params":[""#);
        let _ = stream.write_all(&vec![b'x'; control::server::MAX_REQUEST_BYTES + 10]);
        let _ = stream.write_all(br#""]}"#);
    });
    let error = read_response(&mut reader)["error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(error.contains("exceeds"), "{error}");
    writer.join().unwrap();
    assert_serves(server.path());
}

#[test]
fn socket_mode_is_0600() {
    let (_dir, server) = start("mode");
    let mode = std::fs::metadata(server.path())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn socket_mode_configurable() {
    let dir = TempDir::new("mode660");
    let server = control::serve(&dir.sock(), registry(), 0o660).unwrap();
    let mode = std::fs::metadata(server.path())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o660);
    // No private bind directory is left behind.
    let entries: Vec<_> = std::fs::read_dir(&dir.0)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(entries, vec![std::ffi::OsString::from("uvs.sock")]);
}

#[test]
fn creates_parent_directory() {
    let dir = TempDir::new("parent");
    let path = dir.0.join("run/uvs/uvs.sock");
    let server = control::serve(&path, registry(), 0o600).unwrap();
    let mode = std::fs::metadata(dir.0.join("run/uvs"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(
        mode & 0o022,
        0,
        "parent directory must not be group/world writable"
    );
    assert_serves(server.path());
}

#[test]
fn stale_socket_is_replaced() {
    let dir = TempDir::new("stale");
    drop(UnixListener::bind(dir.sock()).unwrap());
    assert!(dir.sock().exists());
    assert!(UnixStream::connect(dir.sock()).is_err());
    let server = control::serve(&dir.sock(), registry(), 0o600).unwrap();
    assert_serves(server.path());
}

#[test]
fn second_server_on_live_path_fails() {
    let (_dir, server) = start("live");
    let err = control::serve(server.path(), registry(), 0o600).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("another uvs is listening on {}", server.path().display())
    );
    assert_serves(server.path());
}

#[test]
fn regular_file_is_not_replaced() {
    let dir = TempDir::new("file");
    std::fs::write(dir.sock(), b"important").unwrap();
    let err = control::serve(&dir.sock(), registry(), 0o600).unwrap_err();
    assert!(err.to_string().contains("is not a socket"), "{err}");
    assert_eq!(std::fs::read(dir.sock()).unwrap(), b"important");
}

#[test]
fn shutdown_removes_socket_and_client_explains() {
    let (dir, mut server) = start("shutdown");
    let (mut stream, mut reader) = raw(server.path());
    server.shutdown();
    assert!(!dir.sock().exists());
    // Live connections are closed too.
    let _ = stream.write_all(br#"{"method":"version"}"#);
    let mut rest = Vec::new();
    assert!(
        reader
            .read_to_end(&mut rest)
            .map(|n| n == 0)
            .unwrap_or(true)
    );
    let err = control::call(&dir.sock(), "version", &[]).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "cannot connect to {}: No such file or directory (is `uvs run` running?)",
            dir.sock().display()
        )
    );
    // Shutdown is idempotent, and a new server can take the path.
    server.shutdown();
    let again = control::serve(&dir.sock(), registry(), 0o600).unwrap();
    assert_serves(again.path());
    drop(again);
    assert!(!dir.sock().exists());
}

#[test]
fn drop_does_not_remove_a_newer_servers_socket() {
    let dir = TempDir::new("newer");
    let old = control::serve(&dir.sock(), registry(), 0o600).unwrap();
    // Someone removes our socket and another server takes the path.
    std::fs::remove_file(dir.sock()).unwrap();
    let new = control::serve(&dir.sock(), registry(), 0o600).unwrap();
    drop(old);
    assert!(dir.sock().exists());
    assert_serves(new.path());
}

#[test]
fn many_concurrent_clients() {
    let (_dir, server) = start("concurrent");
    let path = server.path().to_path_buf();
    let threads: Vec<_> = (0..16)
        .map(|i| {
            let path = path.clone();
            std::thread::spawn(move || {
                for j in 0..20 {
                    let word = format!("{i}-{j}");
                    let reply = control::call(&path, "echo", std::slice::from_ref(&word)).unwrap();
                    assert_eq!(reply.text, word);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

/// Whether the server closed `stream` within `within` (a read returns end of file or an error).
fn closed_within(stream: &UnixStream, within: Duration) -> bool {
    stream.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 256];
    loop {
        match (&*stream).read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => return false,
            Err(_) => return true,
        }
    }
}

fn start_limited(tag: &str, limits: control::server::Limits) -> (TempDir, ServerHandle) {
    let dir = TempDir::new(tag);
    let server = control::server::serve_with(&dir.sock(), registry(), 0o600, limits).unwrap();
    (dir, server)
}

#[test]
fn slow_requests_cannot_lock_others_out() {
    let limits = control::server::Limits {
        // Long enough that no slow client is cut before the new one has been served (the
        // test thread may stall a few hundred ms on a loaded machine).
        request_timeout: Duration::from_secs(2),
        idle_timeout: Duration::from_secs(30),
        max_connections: 4,
        max_per_uid: 4,
        ..Default::default()
    };
    let (_dir, server) = start_limited("slowloris", limits);
    let t0 = std::time::Instant::now();
    // Every slot taken by a client that sends one byte of a request and then nothing.
    let slow: Vec<UnixStream> = (0..4)
        .map(|_| {
            let mut s = UnixStream::connect(server.path()).unwrap();
            s.write_all(b"{").unwrap();
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(100));
    // A new client still gets in (the longest-waiting slow one makes room) ...
    assert_serves(server.path());
    let evicted = slow
        .iter()
        .filter(|s| closed_within(s, Duration::from_millis(100)))
        .count();
    assert_eq!(evicted, 1, "one slow connection made room");
    // ... and the rest are closed once their request is overdue, however slowly they trickle.
    for s in &slow {
        let _ = (&*s).write_all(b" ");
        assert!(closed_within(s, Duration::from_secs(3)), "slow request cut");
    }
    let took = t0.elapsed();
    println!("slow requests cut after {took:?} (limit 2 s)");
    assert!(took < Duration::from_secs(6), "{took:?}");
    assert_serves(server.path());
}

#[test]
fn connections_per_uid_are_limited_by_evicting_the_oldest() {
    let limits = control::server::Limits {
        max_per_uid: 2,
        ..Default::default()
    };
    let (_dir, server) = start_limited("peruid", limits);
    let a = UnixStream::connect(server.path()).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    let b = UnixStream::connect(server.path()).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    // A third connection of this uid evicts the idle one that waited longest (a).
    assert_serves(server.path());
    assert!(closed_within(&a, Duration::from_secs(2)));
    assert!(!closed_within(&b, Duration::from_millis(200)), "b stays");
}

/// More clients at once than the socket admits, each running a slow command: every one is
/// answered (clients whose connection was refused or closed to admit another try again) and
/// every request runs exactly once. Found trying uvs as a new user: with 33+ clients some
/// failed with "Broken pipe", and one told it failed had its change made.
#[test]
fn a_crowd_of_clients_is_served_each_request_once() {
    let ran = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut r = Registry::new();
    let log = ran.clone();
    r.register("slow", "slow ID", 1, 1, move |a| {
        std::thread::sleep(Duration::from_millis(50));
        log.lock().unwrap().push(a[0].clone());
        Ok(Reply::new(a[0].clone(), json!(a[0])))
    });
    let limits = control::server::Limits {
        max_connections: 3,
        max_per_uid: 3,
        ..Default::default()
    };
    let dir = TempDir::new("crowd");
    let server = control::server::serve_with(&dir.sock(), Arc::new(r), 0o600, limits).unwrap();
    let path = server.path().to_path_buf();
    let threads: Vec<_> = (0..16)
        .map(|i| {
            let path = path.clone();
            std::thread::spawn(move || control::call(&path, "slow", &[i.to_string()]))
        })
        .collect();
    for (i, t) in threads.into_iter().enumerate() {
        let reply = t
            .join()
            .unwrap()
            .unwrap_or_else(|e| panic!("client {i}: {e}"));
        assert_eq!(reply.text, i.to_string());
    }
    let mut ran = ran.lock().unwrap().clone();
    ran.sort_by_key(|x| x.parse::<u32>().unwrap());
    let want: Vec<String> = (0..16).map(|i: u32| i.to_string()).collect();
    assert_eq!(ran, want, "each request ran once");
}

#[test]
fn long_names_in_errors_are_capped() {
    let (_dir, server) = start("cap");
    let name = "n".repeat(900_000);
    let err = control::call(server.path(), &name, &[])
        .unwrap_err()
        .to_string();
    assert!(err.len() < 2048, "{} bytes", err.len());
    let mut r = Registry::new();
    r.register("named", "NAME", 1, 1, |a| {
        Err(control::CtlError::new(format!(
            "bridge name '{}' is bad",
            a[0]
        )))
    });
    let dir = TempDir::new("cap2");
    let s = control::serve(&dir.sock(), Arc::new(r), 0o600).unwrap();
    let err = control::call(s.path(), "named", &["x".repeat(900_000)])
        .unwrap_err()
        .to_string();
    assert!(
        err.len() <= 1100 && err.ends_with("' is bad"),
        "{} bytes",
        err.len()
    );
}

/// A registry whose `big` reply is `BIG_REPLY` bytes of text: far more than a unix socket
/// buffers, so a client that never reads it leaves the server blocked writing.
const BIG_REPLY: usize = 4 << 20;

fn big_registry() -> Arc<Registry> {
    let mut r = Registry::new();
    r.register("echo", "echo A [B]", 1, 2, |args| {
        Ok(Reply::new(args.join(" "), json!(args)))
    });
    r.register("big", "big", 0, 0, |_| {
        Ok(Reply::new("x".repeat(BIG_REPLY), Value::Null))
    });
    Arc::new(r)
}

/// Sends `big` and reads nothing.
fn unread_big(path: &Path) -> UnixStream {
    let mut s = UnixStream::connect(path).unwrap();
    s.write_all(br#"{"method":"big","params":[],"id":1}"#)
        .unwrap();
    s
}

/// Reads `stream` to its end (or for `within`): the bytes and whether the server closed it.
fn drain(stream: &UnixStream, within: Duration) -> (Vec<u8>, bool) {
    stream.set_read_timeout(Some(within)).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        match (&*stream).read(&mut buf) {
            Ok(0) => return (out, true),
            Ok(k) => out.extend_from_slice(&buf[..k]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return (out, false);
            }
            Err(_) => return (out, true),
        }
    }
}

/// Clients that send a request with a large reply and never read it do not lock the others
/// out: a connection blocked writing its reply is evicted like an idle one (without a `BUSY`
/// line in the middle of its reply: its request ran). Found trying uvs as a hostile client:
/// 32 `dump-flows` nobody read counted as running commands and refused every `uvs ctl`.
#[test]
fn unread_replies_are_evicted_to_admit_others() {
    let limits = control::server::Limits {
        max_connections: 2,
        max_per_uid: 2,
        reply_timeout: Duration::from_secs(60),
        ..Default::default()
    };
    let dir = TempDir::new("unread");
    let server = control::server::serve_with(&dir.sock(), big_registry(), 0o600, limits).unwrap();
    let a = unread_big(server.path());
    std::thread::sleep(Duration::from_millis(20));
    let b = unread_big(server.path());
    std::thread::sleep(Duration::from_millis(300));
    // Refused connections are retried by the client; 8 s is far below the 60 s deadlines.
    let reply = control::call_with_timeout(
        server.path(),
        "echo",
        &args(&["got", "in"]),
        Duration::from_secs(8),
    )
    .unwrap();
    assert_eq!(reply.text, "got in");
    // The one blocked longest (a) was closed: its reply is cut short, with nothing added.
    let (bytes, closed) = drain(&a, Duration::from_secs(2));
    assert!(closed, "the longest-blocked writer was closed");
    assert!(bytes.len() < BIG_REPLY, "{} bytes", bytes.len());
    assert!(
        !String::from_utf8_lossy(&bytes).contains("busy"),
        "no BUSY inside a reply whose request ran"
    );
    drop(b);
}

/// A reply nobody reads is given up at the reply deadline, as a request that never arrives is:
/// the connection closes and the rendered reply is freed.
#[test]
fn unread_reply_is_given_up_at_its_deadline() {
    let limits = control::server::Limits {
        reply_timeout: Duration::from_secs(1),
        ..Default::default()
    };
    let dir = TempDir::new("unread-deadline");
    let server = control::server::serve_with(&dir.sock(), big_registry(), 0o600, limits).unwrap();
    let s = unread_big(server.path());
    // Well past the deadline (and the reaper's 250 ms tick), read what was sent: the reply is
    // cut short and the connection closed (before: the server waited on it 60 s per write).
    std::thread::sleep(Duration::from_secs(3));
    let (bytes, closed) = drain(&s, Duration::from_secs(2));
    assert!(closed, "closed at the reply deadline");
    assert!(
        bytes.len() < BIG_REPLY,
        "{} bytes: the whole reply",
        bytes.len()
    );
    // Its thread ends (and frees the reply) once its write fails.
    let t0 = std::time::Instant::now();
    while server.connections() > 0 && t0.elapsed() < Duration::from_secs(2) {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(server.connections(), 0);
    assert_serves(server.path());
}
