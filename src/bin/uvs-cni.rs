//! `uvs-cni`: the CNI plugin binary (see `uvs::cni`). Reads the network configuration on stdin
//! and the `CNI_*` environment, prints the result (or the spec's error JSON) on stdout.

use std::io::{Read, Write};
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut stdin = Vec::new();
    // VERSION needs no stdin; an unreadable stdin fails as undecodable config later.
    let is_version = std::env::var("CNI_COMMAND").is_ok_and(|c| c == "VERSION");
    if !is_version {
        let _ = std::io::stdin().read_to_end(&mut stdin);
    }
    let (out, status) = uvs::cni::main_with(|k| std::env::var(k).ok(), &stdin);
    let mut o = std::io::stdout().lock();
    let _ = o.write_all(out.as_bytes());
    let _ = o.flush();
    ExitCode::from(status as u8)
}
