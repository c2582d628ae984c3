//! The host's identity, for defaults that must differ between hosts sharing an underlay (the
//! gateway MACs: every host names its uplink bridge alike).
//!
//! Contract:
//! - [`host_id`] is read once per process (the first call, at configuration parsing on the
//!   control side) and cached; the datapath never reads it: it gets the MACs derived from it.
//! - Source, in order: the file named by `UVS_HOST_ID_FILE` if set (tests use it to play two
//!   hosts on one machine); else `/etc/machine-id`; else `/var/lib/uvs/host-id`. A host-id file
//!   that does not exist is created with 128 random bits (hex), atomically, so the id and the
//!   MACs stay the same across restarts. If nothing can be read or written, a random id is used
//!   for this run only (logged).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The machine id systemd (or dbus) writes.
pub const MACHINE_ID: &str = "/etc/machine-id";
/// Where uvs keeps its own id when there is no machine id.
pub const HOST_ID_FILE: &str = "/var/lib/uvs/host-id";
/// Environment variable naming a host-id file to use instead of the above.
pub const HOST_ID_ENV: &str = "UVS_HOST_ID_FILE";

/// This host's id (bytes of the id text, trimmed), read once.
pub fn host_id() -> &'static [u8] {
    static ID: OnceLock<Vec<u8>> = OnceLock::new();
    ID.get_or_init(|| {
        let (machine, file) = match std::env::var_os(HOST_ID_ENV) {
            Some(f) => (None, PathBuf::from(f)),
            None => (Some(Path::new(MACHINE_ID)), PathBuf::from(HOST_ID_FILE)),
        };
        match load(machine, &file) {
            Ok(id) => id,
            Err(e) => {
                tracing::warn!(
                    "host id: {e}; using a random id for this run (gateway MACs will change at restart)"
                );
                random_hex().unwrap_or_else(|_| b"uvs".to_vec())
            }
        }
    })
}

/// The id from `machine` if it holds one, else from `file`, which is created with a random id
/// when missing. Errors name the file.
pub fn load(machine: Option<&Path>, file: &Path) -> Result<Vec<u8>, String> {
    if let Some(m) = machine
        && let Some(id) = read_id(m)
    {
        return Ok(id);
    }
    if let Some(id) = read_id(file) {
        return Ok(id);
    }
    let id = random_hex().map_err(|e| format!("/dev/urandom: {e}"))?;
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let tmp = file.with_extension("tmp");
    let mut text = id.clone();
    text.push(b'\n');
    std::fs::write(&tmp, &text).map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, file).map_err(|e| format!("{}: {e}", file.display()))?;
    Ok(id)
}

fn read_id(path: &Path) -> Option<Vec<u8>> {
    let s = std::fs::read_to_string(path).ok()?;
    let t = s.trim();
    (!t.is_empty()).then(|| t.as_bytes().to_vec())
}

fn random_hex() -> std::io::Result<Vec<u8>> {
    let mut b = [0u8; 16];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut b)?;
    Ok(b.iter()
        .flat_map(|x| format!("{x:02x}").into_bytes())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("uvs-host-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn machine_id_first_then_a_persisted_random_id() {
        let d = tmp("a");
        std::fs::create_dir_all(&d).unwrap();
        let m = d.join("machine-id");
        std::fs::write(&m, "0123abcd\n").unwrap();
        let f = d.join("state/host-id");
        assert_eq!(load(Some(&m), &f).unwrap(), b"0123abcd");
        assert!(!f.exists(), "nothing written when the machine id exists");
        let missing = d.join("none");
        let first = load(Some(&missing), &f).unwrap();
        assert_eq!(first.len(), 32);
        assert_eq!(load(Some(&missing), &f).unwrap(), first, "stable");
        let other = load(None, &d.join("other")).unwrap();
        assert_ne!(other, first, "random per file");
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn unwritable_file_is_an_error_naming_it() {
        let e = load(None, Path::new("/proc/uvs-no/host-id")).unwrap_err();
        assert!(e.contains("/proc/uvs-no"), "{e}");
    }
}
