//! `log-level` / `set-log-level FILTER`: the daemon's log filter, read and changed while it
//! runs (OVS's `ovs-appctl vlog/list` and `vlog/set`).
//!
//! Contract: `log-level` (read-only) answers the filter in force (`info`, `uvs=debug,warn`,
//! ...); `set-log-level` parses its argument as a `tracing` filter (the syntax of `UVS_LOG`),
//! and only a filter that parses replaces the old one (a bad one is an error naming `FILTER`,
//! the old filter stays; as a change, it is logged under the new filter). The change lasts until the daemon exits: it is not part of
//! the running configuration (a restart takes `UVS_LOG` again).

use std::sync::{Arc, Mutex};

use super::registry::{CtlError, Registry, Reply};

/// Puts a new filter in force; `Err` says why the text is not a filter.
pub type Apply = Box<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// The filter in force and the way to replace it.
pub struct LogFilter {
    current: Mutex<String>,
    apply: Apply,
}

impl LogFilter {
    /// `current` is the filter the daemon started with; `apply` installs another.
    pub fn new(current: impl Into<String>, apply: Apply) -> Arc<LogFilter> {
        Arc::new(LogFilter {
            current: Mutex::new(current.into()),
            apply,
        })
    }

    /// The filter in force.
    pub fn current(&self) -> String {
        self.lock().clone()
    }

    /// Replace the filter by `text`, or leave it and say why `text` is not one.
    pub fn set(&self, text: &str) -> Result<(), String> {
        let mut cur = self.lock();
        (self.apply)(text.trim())?;
        *cur = text.trim().to_string();
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, String> {
        self.current.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Register `log-level` and `set-log-level` on `reg`.
pub fn register(reg: &mut Registry, filter: Arc<LogFilter>) {
    let f = filter.clone();
    reg.register("log-level", "log-level", 0, 0, move |_| {
        let now = f.current();
        Ok(Reply::new(
            format!("{now}\n"),
            serde_json::json!({ "filter": now }),
        ))
    });
    reg.register("set-log-level", "set-log-level FILTER", 1, 1, move |a| {
        let old = filter.current();
        filter
            .set(&a[0])
            .map_err(|e| CtlError::new(format!("FILTER: '{}' is not a log filter: {e}", a[0])))?;
        let now = filter.current();
        let v = serde_json::json!({ "filter": now, "was": old });
        Ok(Reply::new(format!("log filter {now} (was {old})\n"), v))
    });
    reg.set_read_only(&["log-level"]);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A filter the apply function takes replaces the old one; one it refuses leaves the old
    /// one and the error names FILTER.
    #[test]
    fn a_bad_filter_leaves_the_old_one() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        let f = LogFilter::new(
            "info",
            Box::new(move |t| {
                if t.contains('!') {
                    return Err("expected a level".into());
                }
                s.lock().unwrap().push(t.to_string());
                Ok(())
            }),
        );
        let mut reg = Registry::new();
        register(&mut reg, f.clone());
        assert_eq!(reg.call("log-level", &[]).unwrap().text, "info\n");
        let r = reg.call("set-log-level", &["uvs=debug".into()]).unwrap();
        assert_eq!(r.text, "log filter uvs=debug (was info)\n");
        assert_eq!(r.data["filter"], "uvs=debug");
        let e = reg.call("set-log-level", &["de!bug".into()]).unwrap_err();
        assert!(
            e.to_string()
                .contains("FILTER: 'de!bug' is not a log filter: expected a level"),
            "{e}"
        );
        assert_eq!(f.current(), "uvs=debug");
        assert_eq!(*seen.lock().unwrap(), ["uvs=debug"]);
    }
}
