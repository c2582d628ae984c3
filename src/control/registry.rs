//! The command registry: names, usage strings, argument bounds and handlers.
//!
//! A [`Registry`] maps a command name to a handler. [`Registry::call`] checks that the command
//! exists and that the number of arguments is within bounds before it runs the handler, so
//! handlers can index their arguments without checking the count again. A handler that panics
//! is turned into an error reply; it never takes the connection or the daemon down. A command
//! `uvs ctl` runs itself (`capture`) is registered with [`Registry::register_client`]: listed,
//! and refused with a pointer to `uvs ctl` when a client asks the daemon for it.

use std::collections::{BTreeMap, BTreeSet};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// What a command returns: `text` for people, `data` for scripts (`uvs ctl --json`).
///
/// `text` is empty or a sequence of lines, each ending in `"\n"`, so a client can print it as is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reply {
    /// Human-readable output.
    pub text: String,
    /// Machine-readable output; `null` when the command has nothing structured to say.
    #[serde(default)]
    pub data: Value,
}

impl Reply {
    /// A reply with both a text and a structured form.
    pub fn new(text: impl Into<String>, data: Value) -> Self {
        Reply {
            text: text.into(),
            data,
        }
    }

    /// A reply with text only (`data` is `null`).
    pub fn from_text(text: impl Into<String>) -> Self {
        Reply::new(text, Value::Null)
    }
}

/// A command failed; the message is sent to the client as the JSON-RPC `error`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct CtlError {
    message: String,
}

impl CtlError {
    /// An error with the given message. Name the offending value in it.
    pub fn new(message: impl Into<String>) -> Self {
        CtlError {
            message: message.into(),
        }
    }

    /// The message sent to the client.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl From<String> for CtlError {
    fn from(message: String) -> Self {
        CtlError { message }
    }
}

impl From<&str> for CtlError {
    fn from(message: &str) -> Self {
        CtlError::new(message)
    }
}

/// Runs the commands that change the switch (every command not marked read-only), one at a
/// time, and makes each successful change durable before its reply goes out (the database
/// store implements it).
pub trait Journal: Send + Sync {
    /// Run `run` (the change `method params`) and record its outcome; returns its result.
    /// `later`: the record may wait a short delay (or [`Journal::sync`]), coalesced with the
    /// changes after it: for changes a client streams (an OpenFlow controller's FLOW_MODs),
    /// each of which wrote the whole configuration.
    fn change(
        &self,
        method: &str,
        params: &[String],
        later: bool,
        run: &mut dyn FnMut() -> Result<Reply, CtlError>,
    ) -> Result<Reply, CtlError>;

    /// Make every deferred change durable now.
    fn sync(&self) -> Result<(), String> {
        Ok(())
    }
}

/// A command handler. It receives the arguments (already checked against the bounds).
pub type Handler = Box<dyn Fn(&[String]) -> Result<Reply, CtlError> + Send + Sync>;

/// Pass as `max_args` for a command that takes any number of arguments from `min_args` up.
pub const UNLIMITED: usize = usize::MAX;

/// The longest command name quoted back in an "unknown command" error.
const MAX_QUOTED_NAME: usize = 64;

/// The longest command line (name and arguments) written to the log.
const MAX_LOGGED: usize = 1024;

/// The longest error message sent to a client, in characters: a longer one keeps its start and
/// its end (which says what was wrong) and says how much was cut from the middle, so a
/// 900 KB name does not come back as a 900 KB error.
pub const MAX_ERROR_CHARS: usize = 1024;

enum Action {
    ListCommands,
    Version,
    Run(Handler),
    /// Run by `uvs ctl` itself (listed, refused by the daemon).
    Client,
}

struct Command {
    /// The arguments part of the usage, without the command name ("BRIDGE [gateway=...]").
    args_usage: String,
    min_args: usize,
    max_args: usize,
    action: Action,
}

impl Command {
    fn full_usage(&self, name: &str) -> String {
        if self.args_usage.is_empty() {
            name.to_string()
        } else {
            format!("{name} {}", self.args_usage)
        }
    }
}

/// The set of commands the control socket serves.
///
/// [`Registry::new`] registers the built-ins `list-commands` and `version`.
pub struct Registry {
    commands: BTreeMap<String, Command>,
    /// Commands that change nothing (not journalled, logged at debug level).
    read_only: BTreeSet<String>,
    journal: Option<Arc<dyn Journal>>,
    /// Run after a change succeeded, before its answer goes out (see
    /// [`Registry::set_after_change`]).
    after_change: std::sync::OnceLock<AfterChange>,
}

/// See [`Registry::set_after_change`].
pub type AfterChange = Box<dyn Fn(&str, &[String]) + Send + Sync>;

impl Default for Registry {
    fn default() -> Self {
        Registry::new()
    }
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("commands", &self.commands.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Registry {
    /// A registry holding only the built-in commands `list-commands` and `version`.
    pub fn new() -> Self {
        let mut registry = Registry {
            commands: BTreeMap::new(),
            read_only: ["list-commands", "version"].map(String::from).into(),
            journal: None,
            after_change: std::sync::OnceLock::new(),
        };
        registry.insert("list-commands", "", 0, 0, Action::ListCommands);
        registry.insert("version", "", 0, 0, Action::Version);
        registry
    }

    /// Registers `name`, taking `min_args..=max_args` arguments (`max_args` may be [`UNLIMITED`]).
    ///
    /// `usage` describes the arguments, as in `"BRIDGE PORT [type=afxdp|tap] [vlan=N]"`; it may
    /// also start with the command name (`"add-port BRIDGE PORT ..."`), which is then dropped, so
    /// both spellings give the same `list-commands` line.
    ///
    /// # Panics
    /// If `name` is empty, contains whitespace, is already registered, or `min_args > max_args`:
    /// these are programming errors in the daemon, found by its first test run.
    pub fn register<F>(
        &mut self,
        name: &str,
        usage: &str,
        min_args: usize,
        max_args: usize,
        handler: F,
    ) where
        F: Fn(&[String]) -> Result<Reply, CtlError> + Send + Sync + 'static,
    {
        self.insert(
            name,
            usage,
            min_args,
            max_args,
            Action::Run(Box::new(handler)),
        );
    }

    /// Lists `name`, a command `uvs ctl` runs itself on top of the daemon's (`capture`), in
    /// `list-commands`; asked for it, the daemon answers that `uvs ctl` runs it.
    pub fn register_client(&mut self, name: &str, usage: &str) {
        self.insert(name, usage, 0, UNLIMITED, Action::Client);
        self.read_only.insert(name.to_string());
    }

    fn insert(
        &mut self,
        name: &str,
        usage: &str,
        min_args: usize,
        max_args: usize,
        action: Action,
    ) {
        assert!(
            !name.is_empty() && !name.contains(char::is_whitespace),
            "invalid command name {name:?}"
        );
        assert!(
            min_args <= max_args,
            "command '{name}': min_args {min_args} > max_args {max_args}"
        );
        assert!(
            !self.commands.contains_key(name),
            "command '{name}' registered twice"
        );
        let command = Command {
            args_usage: args_usage(name, usage),
            min_args,
            max_args,
            action,
        };
        self.commands.insert(name.to_string(), command);
    }

    /// Mark commands as read-only: they change nothing, so they bypass the journal and are
    /// logged at debug level only. Every other command is a change.
    pub fn set_read_only(&mut self, names: &[&str]) {
        self.read_only.extend(names.iter().map(|n| n.to_string()));
    }

    /// Route every change through `journal` (see [`Journal`]).
    pub fn set_journal(&mut self, journal: Arc<dyn Journal>) {
        self.journal = Some(journal);
    }

    /// Run `f(method, params)` after every change that succeeded, before its answer is sent:
    /// a component that follows the configuration (the OpenFlow listeners) is brought up to
    /// date first, so a client's next step finds it (`add-br` then `ovs-ofctl` on the new
    /// bridge's socket). Set once; false if a hook was set already.
    pub fn set_after_change(&self, f: AfterChange) -> bool {
        self.after_change.set(f).is_ok()
    }

    /// Whether `name` is registered.
    pub fn contains(&self, name: &str) -> bool {
        self.commands.contains_key(name)
    }

    /// The registered command names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.commands.keys().map(String::as_str)
    }

    /// The full usage line of `name` ("add-br BRIDGE [gateway=...]"), if registered.
    pub fn usage(&self, name: &str) -> Option<String> {
        self.commands.get(name).map(|c| c.full_usage(name))
    }

    /// Runs `method` with `params` after checking that it exists and the argument count fits.
    pub fn call(&self, method: &str, params: &[String]) -> Result<Reply, CtlError> {
        self.call_from(method, params, "internal")
    }

    /// [`Registry::call`] for client `peer` ("pid 12 uid 0"): a change is run through the
    /// journal and logged at info level, one line with the command, the peer and the result.
    pub fn call_from(
        &self,
        method: &str,
        params: &[String],
        peer: &str,
    ) -> Result<Reply, CtlError> {
        self.call_journalled(method, params, peer, false)
    }

    /// [`Registry::call_from`] for a change whose record may wait (`later` of
    /// [`Journal::change`]).
    pub fn call_deferred_from(
        &self,
        method: &str,
        params: &[String],
        peer: &str,
    ) -> Result<Reply, CtlError> {
        self.call_journalled(method, params, peer, true)
    }

    fn call_journalled(
        &self,
        method: &str,
        params: &[String],
        peer: &str,
        deferred: bool,
    ) -> Result<Reply, CtlError> {
        let change = self.commands.contains_key(method) && !self.read_only.contains(method);
        let r = match &self.journal {
            Some(j) if change => j.change(method, params, deferred, &mut || {
                self.call_checked(method, params)
            }),
            _ => self.call_checked(method, params),
        };
        let r = r.map_err(|e| CtlError::new(cap_message(e.message(), MAX_ERROR_CHARS)));
        if change
            && r.is_ok()
            && let Some(f) = self.after_change.get()
        {
            f(method, params);
        }
        let line = log_line(method, params, peer, r.as_ref().err());
        match &r {
            Ok(_) if change => tracing::info!("{line}"),
            Err(_) if change => tracing::warn!("{line}"),
            _ => tracing::debug!("{line}"),
        }
        r
    }

    fn call_checked(&self, method: &str, params: &[String]) -> Result<Reply, CtlError> {
        let Some(command) = self.commands.get(method) else {
            return Err(CtlError::new(format!(
                "unknown command '{}'; try list-commands",
                quote_name(method)
            )));
        };
        let n = params.len();
        if n < command.min_args || n > command.max_args {
            return Err(CtlError::new(format!(
                "'{method}' {}, got {n}; usage: {}",
                describe_bounds(command.min_args, command.max_args),
                command.full_usage(method)
            )));
        }
        match &command.action {
            Action::ListCommands => Ok(self.list_commands()),
            Action::Version => Ok(version()),
            Action::Run(handler) => run_guarded(method, handler, params),
            Action::Client => Err(CtlError::new(format!(
                "'{method}' is run by the client: uvs ctl {}",
                command.full_usage(method)
            ))),
        }
    }

    fn list_commands(&self) -> Reply {
        let mut text = String::new();
        let mut data = Vec::with_capacity(self.commands.len());
        for (name, command) in &self.commands {
            text.push_str("  ");
            text.push_str(&command.full_usage(name));
            text.push('\n');
            data.push(json!({ "name": name, "usage": command.args_usage }));
        }
        Reply::new(text, Value::Array(data))
    }
}

fn version() -> Reply {
    let version = env!("CARGO_PKG_VERSION");
    Reply::new(format!("uvs {version}\n"), json!({ "version": version }))
}

/// Runs a handler, turning a panic into an error reply.
fn run_guarded(method: &str, handler: &Handler, params: &[String]) -> Result<Reply, CtlError> {
    match catch_unwind(AssertUnwindSafe(|| handler(params))) {
        Ok(result) => result,
        Err(payload) => {
            let what = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".to_string());
            Err(CtlError::new(format!(
                "internal error: command '{method}' panicked: {what}"
            )))
        }
    }
}

/// Strips a leading command name from a usage string.
fn args_usage(name: &str, usage: &str) -> String {
    let usage = usage.trim();
    match usage.strip_prefix(name) {
        Some("") => String::new(),
        Some(rest) if rest.starts_with(char::is_whitespace) => rest.trim_start().to_string(),
        _ => usage.to_string(),
    }
}

fn describe_bounds(min: usize, max: usize) -> String {
    let plural = |n: usize| if n == 1 { "argument" } else { "arguments" };
    if max == UNLIMITED {
        format!("takes at least {min} {}", plural(min))
    } else if min == max && min == 0 {
        "takes no arguments".to_string()
    } else if min == max {
        format!("takes {min} {}", plural(min))
    } else {
        format!("takes {min} to {max} arguments")
    }
}

/// The log line of a command from `peer` and its outcome. Everything a client sent is escaped
/// (control characters), the error too, which may quote it: a name holding a newline cannot
/// forge a log line.
fn log_line(method: &str, params: &[String], peer: &str, err: Option<&CtlError>) -> String {
    let cmd = quote(&format!("{method} {}", params.join(" ")), MAX_LOGGED);
    let outcome = match err {
        None => "ok".to_string(),
        Some(e) => format!("error: {}", quote(e.message(), MAX_ERROR_CHARS)),
    };
    format!("ctl {} from {peer}: {outcome}", cmd.trim_end())
}

/// The command name as quoted in errors: control characters escaped, long names cut.
fn quote_name(name: &str) -> String {
    quote(name, MAX_QUOTED_NAME)
}

/// `text` if it has at most `limit` characters, else its first and last `limit / 2 - 20`
/// characters around a note of how many were cut.
pub fn cap_message(text: &str, limit: usize) -> String {
    let n = text.chars().count();
    if n <= limit {
        return text.to_string();
    }
    let keep = (limit / 2).saturating_sub(20);
    let head: String = text.chars().take(keep).collect();
    let tail: String = text.chars().skip(n - keep).collect();
    format!("{head}...[{} characters cut]...{tail}", n - 2 * keep)
}

/// `text` with control characters escaped, cut after `limit` characters.
fn quote(text: &str, limit: usize) -> String {
    let mut out = String::new();
    for (i, c) in text.chars().enumerate() {
        if i == limit {
            out.push_str("...");
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_lines_escape_what_the_client_sent_errors_included() {
        let forged = "x\n2099-01-01T00:00:00Z  INFO ctl del-br prod: ok\0";
        let e = CtlError::new(format!("bridge: '{forged}' is not a valid name"));
        let line = log_line("add-br", &[forged.to_string()], "pid 1 uid 0", Some(&e));
        assert!(!line.contains('\n') && !line.contains('\0'), "{line}");
        assert!(line.ends_with("is not a valid name"), "{line}");
        assert!(line.contains("error: bridge: 'x\\n2099"), "{line}");
        assert_eq!(
            log_line("show", &[], "internal", None),
            "ctl show from internal: ok"
        );
    }

    #[test]
    fn long_errors_are_capped_keeping_both_ends() {
        let mut r = Registry::new();
        r.register("named", "NAME", 1, 1, |a| {
            Err(CtlError::new(format!("bridge name '{}' is too long", a[0])))
        });
        let e = r.call("named", &["x".repeat(900_000)]).unwrap_err();
        let m = e.message();
        assert!(m.chars().count() <= MAX_ERROR_CHARS, "{} chars", m.len());
        assert!(m.starts_with("bridge name 'xxx"), "{m}");
        assert!(m.ends_with("xxx' is too long"), "{m}");
        assert!(m.contains("characters cut]"), "{m}");
        assert_eq!(cap_message("short", 10), "short");
    }

    fn echo_registry() -> Registry {
        let mut r = Registry::new();
        r.register("echo", "echo A [B]", 1, 2, |args| {
            Ok(Reply::new(args.join(" "), json!(args)))
        });
        r.register("add-br", "BRIDGE [gateway=...]", 1, 2, |_| {
            Ok(Reply::from_text(""))
        });
        r.register("many", "X...", 1, UNLIMITED, |args| {
            Ok(Reply::from_text(args.len().to_string()))
        });
        r.register("one", "X", 1, 1, |_| Ok(Reply::from_text("")));
        r.register("boom", "", 0, 0, |_| panic!("kaboom"));
        r
    }

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn calls_handler_with_args() {
        let reply = echo_registry().call("echo", &args(&["a", "b"])).unwrap();
        assert_eq!(reply, Reply::new("a b", json!(["a", "b"])));
    }

    #[test]
    fn unknown_command() {
        let err = echo_registry().call("nope", &[]).unwrap_err();
        assert_eq!(err.message(), "unknown command 'nope'; try list-commands");
    }

    #[test]
    fn unknown_command_name_is_escaped_and_cut() {
        let long = format!("a\n{}", "x".repeat(200));
        let err = echo_registry().call(&long, &[]).unwrap_err();
        assert!(
            err.message().starts_with("unknown command 'a\\nxxx"),
            "{err}"
        );
        assert!(err.message().contains("...'"), "{err}");
    }

    #[test]
    fn argument_bounds() {
        let r = echo_registry();
        let err = r.call("add-br", &[]).unwrap_err();
        assert_eq!(
            err.message(),
            "'add-br' takes 1 to 2 arguments, got 0; usage: add-br BRIDGE [gateway=...]"
        );
        let err = r.call("echo", &args(&["a", "b", "c"])).unwrap_err();
        assert_eq!(
            err.message(),
            "'echo' takes 1 to 2 arguments, got 3; usage: echo A [B]"
        );
        let err = r.call("one", &[]).unwrap_err();
        assert!(
            err.message().starts_with("'one' takes 1 argument, got 0"),
            "{err}"
        );
        let err = r.call("version", &args(&["x"])).unwrap_err();
        assert!(
            err.message()
                .starts_with("'version' takes no arguments, got 1; usage: version")
        );
        let err = r.call("many", &[]).unwrap_err();
        assert!(
            err.message()
                .starts_with("'many' takes at least 1 argument, got 0"),
            "{err}"
        );
        assert_eq!(r.call("many", &args(&["1"; 40])).unwrap().text, "40");
    }

    #[test]
    fn list_commands_sorted_with_usage() {
        let reply = echo_registry().call("list-commands", &[]).unwrap();
        assert_eq!(
            reply.text,
            "  add-br BRIDGE [gateway=...]\n  boom\n  echo A [B]\n  list-commands\n  many X...\n  one X\n  version\n"
        );
        assert_eq!(reply.data[2], json!({"name": "echo", "usage": "A [B]"}));
        assert_eq!(reply.data.as_array().unwrap().len(), 7);
    }

    #[test]
    fn version_reports_package_version() {
        let reply = Registry::new().call("version", &[]).unwrap();
        assert_eq!(reply.data["version"], env!("CARGO_PKG_VERSION"));
        assert!(reply.text.starts_with("uvs "));
    }

    #[test]
    fn panicking_handler_becomes_error() {
        let err = echo_registry().call("boom", &[]).unwrap_err();
        assert_eq!(
            err.message(),
            "internal error: command 'boom' panicked: kaboom"
        );
    }

    #[test]
    #[should_panic(expected = "registered twice")]
    fn duplicate_registration_panics() {
        let mut r = Registry::new();
        r.register("version", "", 0, 0, |_| Ok(Reply::from_text("")));
    }

    #[test]
    fn usage_prefix_is_optional() {
        assert_eq!(
            args_usage("add-port", "add-port BRIDGE PORT"),
            "BRIDGE PORT"
        );
        assert_eq!(args_usage("add-port", "BRIDGE PORT"), "BRIDGE PORT");
        assert_eq!(args_usage("show", "show"), "");
        assert_eq!(args_usage("add", "add-port X"), "add-port X");
    }

    /// Records what went through it; commits only successful changes.
    #[derive(Default)]
    struct Recorder(std::sync::Mutex<Vec<String>>);

    impl Journal for Recorder {
        fn change(
            &self,
            method: &str,
            _params: &[String],
            _later: bool,
            run: &mut dyn FnMut() -> Result<Reply, CtlError>,
        ) -> Result<Reply, CtlError> {
            let r = run();
            let what = if r.is_ok() { "commit" } else { "no-commit" };
            self.0.lock().unwrap().push(format!("{method}:{what}"));
            r
        }
    }

    #[test]
    fn changes_go_through_the_journal_and_reads_do_not() {
        let mut r = echo_registry();
        r.set_read_only(&["one"]);
        let j = Arc::new(Recorder::default());
        r.set_journal(j.clone());
        r.call_from("echo", &args(&["a"]), "pid 1 uid 0").unwrap();
        r.call_from("one", &args(&["a"]), "pid 1 uid 0").unwrap();
        r.call("version", &[]).unwrap();
        r.call("list-commands", &[]).unwrap();
        r.call("boom", &[]).unwrap_err();
        r.call("nope", &[]).unwrap_err();
        assert_eq!(
            *j.0.lock().unwrap(),
            vec!["echo:commit".to_string(), "boom:no-commit".to_string()]
        );
    }
}
