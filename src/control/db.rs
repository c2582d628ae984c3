//! The database file: the running configuration as TOML in the `--config` format, locked by
//! one daemon and replaced atomically on every change.
//!
//! Contract:
//! - [`Db::open`] takes an exclusive `flock` on `PATH.lock` (a separate file, since `PATH`
//!   itself is replaced by rename on every write) and fails at once if another process holds
//!   it: two daemons never share a database. The lock goes with the process (also on kill -9).
//! - [`Db::save`] writes `PATH.tmp` in the same directory, fsyncs it, renames it over `PATH`,
//!   then fsyncs the directory: after `save` returns, a crash at any moment leaves either the
//!   old or the new file, never a mix, and the new one once `save` has returned.
//! - [`Db::load`] reads and validates `PATH`; a missing file is `Ok(None)`, an unreadable or
//!   invalid one an error naming the file (the daemon then refuses to start rather than
//!   overwrite it).

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::config::Config;

/// The database used when `--db` is not given and the control socket is the default one.
pub const DEFAULT_DB: &str = "/var/lib/uvs/conf.db";

/// An open, locked database.
#[derive(Debug)]
pub struct Db {
    path: PathBuf,
    /// Held open for the lock; released when the process ends.
    _lock: File,
}

impl Db {
    /// Lock the database at `path` (creating its directory, 0755, if missing).
    pub fn open(path: &Path) -> Result<Db, String> {
        let dir = parent(path);
        DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(dir)
            .map_err(|e| format!("database directory {}: {e}", dir.display()))?;
        let lock_path = with_suffix(path, ".lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&lock_path)
            .map_err(|e| format!("database lock {}: {e}", lock_path.display()))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                return Err(format!(
                    "database {} is in use by another uvs (it holds {}); not starting",
                    path.display(),
                    lock_path.display()
                ));
            }
            Err(fs::TryLockError::Error(e)) => {
                return Err(format!("database lock {}: {e}", lock_path.display()));
            }
        }
        Ok(Db {
            path: path.to_path_buf(),
            _lock: lock,
        })
    }

    /// The database path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The stored configuration; `None` when there is no database file yet.
    pub fn load(&self) -> Result<Option<Config>, String> {
        let text = match fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("database {}: {e}", self.path.display())),
        };
        Config::parse(&text)
            .map(Some)
            .map_err(|e| format!("database {}: {e}", self.path.display()))
    }

    /// Replace the file with `text`, durably and atomically (see the module documentation).
    pub fn save(&self, text: &str) -> Result<(), String> {
        let tmp = with_suffix(&self.path, ".tmp");
        let err = |what: &str, e: std::io::Error| format!("database {what}: {e}");
        let mut f = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| err(&tmp.display().to_string(), e))?;
        f.write_all(text.as_bytes())
            .and_then(|()| f.sync_all())
            .map_err(|e| err(&tmp.display().to_string(), e))?;
        drop(f);
        fs::rename(&tmp, &self.path).map_err(|e| err(&self.path.display().to_string(), e))?;
        let dir = parent(&self.path);
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| err(&dir.display().to_string(), e))?;
        tracing::debug!(
            "database {} written ({} bytes)",
            self.path.display(),
            text.len()
        );
        Ok(())
    }
}

fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("uvs-db-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn save_load_and_lock() {
        let d = dir("a");
        let path = d.join("sub/conf.db");
        let db = Db::open(&path).unwrap();
        assert_eq!(db.load().unwrap(), None);
        let c = Config::parse("[[bridge]]\nname = \"br0\"\n").unwrap();
        db.save(&c.to_toml().unwrap()).unwrap();
        assert_eq!(db.load().unwrap(), Some(c));
        assert!(!with_suffix(&path, ".tmp").exists());
        // A second opener (another open file description) is refused while the first lives.
        let e = Db::open(&path).unwrap_err();
        assert!(e.contains("in use by another uvs"), "{e}");
        drop(db);
        Db::open(&path).unwrap();
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn invalid_file_is_an_error_naming_it() {
        let d = dir("b");
        let path = d.join("conf.db");
        let db = Db::open(&path).unwrap();
        fs::write(&path, "[[bridge]]\nname = 5\n").unwrap();
        let e = db.load().unwrap_err();
        assert!(e.contains("conf.db"), "{e}");
        let _ = fs::remove_dir_all(&d);
    }
}
