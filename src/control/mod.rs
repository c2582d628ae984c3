//! The control plane: a unix socket speaking JSON-RPC 1.0 like `ovs-appctl`, a command
//! registry, and the client behind `uvs ctl`.
//!
//! # Protocol contract
//!
//! - Transport: a unix stream socket, by default [`DEFAULT_SOCKET`] (`--socket` or the
//!   `UVS_SOCKET` environment variable override it, see [`socket_path`]), mode 0600 unless
//!   configured otherwise. Its parent directory is created (0755) if missing.
//! - Requests: a stream of JSON objects, with or without whitespace/newlines between them,
//!   answered in order on the same connection:
//!   `{"method": "add-br", "params": ["br0"], "id": 1}`. `params` must be an array of strings
//!   (missing = no arguments); `id` is any JSON value and is echoed back.
//! - Responses: one JSON object per request, each followed by `"\n"`:
//!   `{"result": {"text": "...", "data": ...}, "error": null, "id": 1}` on success,
//!   `{"result": null, "error": "message", "id": 1}` on failure. `text` is for people (lines
//!   ending in `"\n"`), `data` for scripts (`uvs ctl --json`).
//! - Errors that keep the connection open: unknown command ("unknown command 'X'; try
//!   list-commands"), wrong argument count ("'add-br' takes 1 to 2 arguments, got 0; usage:
//!   add-br BRIDGE [gateway=...]"), a command's own error, a JSON value that is not a valid
//!   request ("invalid JSON-RPC request: params[1] must be a string, got number").
//! - Errors that close the connection after the error response (id `null`): malformed JSON
//!   ("malformed JSON-RPC request: ... at line L column C"), a request over
//!   [`server::MAX_REQUEST_BYTES`], a connection when all [`server::MAX_CONNECTIONS`] (or the
//!   uid's [`server::MAX_CONNECTIONS_PER_UID`]) are running commands; otherwise a new
//!   connection evicts the longest-waiting one. A request not complete within
//!   [`server::REQUEST_TIMEOUT`] of its first byte, or a connection idle for
//!   [`server::IDLE_TIMEOUT`], is closed without a response.
//! - Error messages are capped at [`registry::MAX_ERROR_CHARS`] characters (start and end kept).
//! - The daemon never opens a file a client names: `uvs ctl add-flows BRIDGE FILE` reads the
//!   file and sends `add-flows BRIDGE FLOW...` requests below the size limit.
//! - Built-in commands: `list-commands` (text: one `"  name usage"` line per command, sorted;
//!   data: `[{"name": ..., "usage": ...}]`, usage without the name) and `version` (data:
//!   `{"version": "X.Y.Z"}`).

pub mod client;
pub mod commands;
pub mod containers;
pub mod db;
pub mod jsonrpc;
pub mod log_filter;
pub mod registry;
pub mod runtime;
pub mod rxq;
pub mod server;
pub mod store;
pub mod sys;

use std::ffi::OsString;
use std::path::{Path, PathBuf};

pub use client::{ClientError, call, call_with_timeout};
pub use jsonrpc::{Request, Response};
pub use registry::{CtlError, Handler, Journal, Registry, Reply, UNLIMITED};
pub use server::{ServerHandle, serve};

/// The control socket used when neither `--socket` nor `UVS_SOCKET` is given.
pub const DEFAULT_SOCKET: &str = "/run/uvs/uvs.sock";

/// The environment variable naming the control socket.
pub const SOCKET_ENV: &str = "UVS_SOCKET";

/// The control socket's default permissions: owner (root) only.
pub const DEFAULT_SOCKET_MODE: u32 = 0o600;

/// The control socket path: the CLI flag if given, else `$UVS_SOCKET` if set and non-empty,
/// else [`DEFAULT_SOCKET`].
pub fn socket_path(cli: Option<&Path>) -> PathBuf {
    resolve_socket_path(cli, std::env::var_os(SOCKET_ENV))
}

fn resolve_socket_path(cli: Option<&Path>, env: Option<OsString>) -> PathBuf {
    match (cli, env) {
        (Some(path), _) => path.to_path_buf(),
        (None, Some(env)) if !env.is_empty() => PathBuf::from(env),
        _ => PathBuf::from(DEFAULT_SOCKET),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_path_precedence() {
        let cli = Path::new("/tmp/a.sock");
        assert_eq!(
            resolve_socket_path(Some(cli), Some("/tmp/b.sock".into())),
            cli
        );
        assert_eq!(
            resolve_socket_path(None, Some("/tmp/b.sock".into())),
            Path::new("/tmp/b.sock")
        );
        assert_eq!(
            resolve_socket_path(None, Some("".into())),
            Path::new(DEFAULT_SOCKET)
        );
        assert_eq!(resolve_socket_path(None, None), Path::new(DEFAULT_SOCKET));
        assert_eq!(socket_path(Some(cli)), cli);
    }
}
