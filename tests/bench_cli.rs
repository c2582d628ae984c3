//! `uvs bench` as a user runs it: what it says when it cannot measure, and the options it
//! checks before it starts anything (found trying `uvs bench` as a new user). Nothing here
//! measures: every case ends before the first namespace is made.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_uvs");

fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .output()
        .expect("run uvs bench");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Without root a bench measures nothing: `uvs bench` says so and fails, naming what it needs
/// (it answered with success and no table), while the script run by hand still exits 0 for
/// CI. Run as `nobody` when this test is root; as the user otherwise.
#[test]
fn a_bench_that_measures_nothing_fails_with_the_reason() {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let (code, _, err) = if root {
        let out = Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", BIN])
            .args(["bench", "nat", "--quick"])
            .output();
        match out {
            Ok(o) => (
                o.status.code().unwrap_or(-1),
                String::new(),
                String::from_utf8_lossy(&o.stderr).into_owned(),
            ),
            Err(e) => {
                eprintln!("skipped: setpriv: {e}");
                return;
            }
        }
    } else {
        run(&["bench", "nat", "--quick"])
    };
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("SKIP: needs root"), "{err}");
    assert!(
        err.contains("nothing measured") && err.contains("scripts/setup.sh --bench"),
        "{err}"
    );
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/netns_nat.sh");
    if !root {
        let out = Command::new("bash")
            .args([script, "--quick"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "the script alone skips with 0");
    }
}

/// Options are checked before anything starts, naming the option (`--port-type bogus` ran the
/// kernel row first and failed the uvs row later); `uvs bench l2 -- ARGS` is `uvs bench l2
/// ARGS`, as the README's `-- --help` suggests.
#[test]
fn options_are_checked_up_front() {
    for bench in ["nat", "encap"] {
        let (code, _, err) = run(&["bench", bench, "--port-type", "bogus"]);
        assert_eq!(code, 1, "{err}");
        assert!(
            err.contains("--port-type: 'bogus' is not a port type"),
            "{bench}: {err}"
        );
    }
    let (code, out, err) = run(&["bench", "l2", "--", "--help"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("netns L2 benchmark"), "{out}");
    let (code, _, err) = run(&["bench", "l2", "--", "--reps", "0"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("--reps must be a positive integer"), "{err}");
}

/// A `--plot` path that cannot be written (its directory missing, a directory given as the
/// file) fails at once, naming the option: it failed only after the whole run (found trying
/// `uvs bench` as a new user). As root the bench would otherwise start measuring: the time
/// bound says it did not.
#[test]
fn a_bad_plot_path_fails_before_the_run() {
    let dir = std::env::temp_dir().join(format!("uvs-bench-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let missing = dir.join("no-such-dir").join("l2.svg");
    let bad = [missing.to_str().unwrap(), dir.to_str().unwrap()];
    for path in bad {
        let t = std::time::Instant::now();
        let (code, out, err) = run(&["bench", "l2", "--quick", "--plot", path]);
        assert_eq!(code, 1, "{path}: {err}");
        assert!(
            err.contains(&format!("--plot {path}: cannot write it")),
            "{path}: {err}"
        );
        assert!(out.is_empty(), "{path}: nothing measured: {out}");
        assert!(t.elapsed().as_secs() < 10, "{path}: took {:?}", t.elapsed());
    }
    // A writable path is accepted (the run then goes on: --help ends it at once) and not left
    // behind when it did not exist.
    let ok = dir.join("l2.svg");
    let (code, _, err) = run(&[
        "bench",
        "l2",
        "--plot",
        ok.to_str().unwrap(),
        "--",
        "--help",
    ]);
    assert_eq!(code, 1, "--help prints no table to plot: {err}");
    assert!(err.contains("no table"), "{err}");
    assert!(!ok.exists(), "the check's file was removed");
    std::fs::remove_dir_all(&dir).unwrap();
}
