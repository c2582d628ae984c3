//! `uvs demo` end to end (root; an explicit skip otherwise): the binary exits 0 within a
//! minute, prints a PASS line for every check (same network, isolation, masquerade, published
//! port, DNS by name, overlay) and "demo OK", and leaves none of its namespaces or links behind.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::netns::root_or_skip;

#[test]
fn demo_passes_every_check_and_cleans_up() {
    if !root_or_skip("demo_passes_every_check_and_cleans_up") {
        return;
    }
    let need = ["ping", "curl"];
    if let Some(t) = need
        .iter()
        .find(|t| !common::netns::try_sh(&["sh", "-c", &format!("command -v {t}")]))
    {
        eprintln!("SKIP demo_passes_every_check_and_cleans_up: missing {t} (scripts/setup.sh)");
        return;
    }
    let out_path = std::env::temp_dir().join(format!("uvs-demo-test-{}.out", std::process::id()));
    let mut child = Command::new(env!("CARGO_BIN_EXE_uvs"))
        .arg("demo")
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(Stdio::piped())
        .spawn()
        .expect("uvs demo");
    let id = child.id() % 10_000;
    let t = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if t.elapsed() > Duration::from_secs(60) {
            // SAFETY: kill takes a pid and a signal; the pid is our own unwaited child.
            unsafe {
                libc::kill(child.id() as i32, libc::SIGTERM);
            }
            let _ = child.wait();
            panic!("uvs demo ran over 60 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let out = std::fs::read_to_string(&out_path).unwrap_or_default();
    let _ = std::fs::remove_file(&out_path);
    let mut err = String::new();
    use std::io::Read;
    let _ = child.stderr.take().unwrap().read_to_string(&mut err);
    assert!(status.success(), "uvs demo failed: {err}\n{out}");
    for check in [
        "same network",
        "isolation",
        "masquerade",
        "published port",
        "DNS by name",
        "overlay",
    ] {
        assert!(
            out.lines()
                .any(|l| l.starts_with(&format!("PASS {check}:"))),
            "no PASS line for {check}:\n{out}"
        );
    }
    assert!(!out.contains("FAIL "), "{out}");
    assert!(out.contains("demo OK: 6 of 6 checks passed"), "{out}");
    eprintln!("uvs demo took {:.1} s", t.elapsed().as_secs_f64());
    let ns = common::netns::sh(&["ip", "netns", "list"]);
    assert!(
        !ns.contains(&format!("uvsdemo{id}-")),
        "namespaces left: {ns}"
    );
    let links = common::netns::sh(&["ip", "-o", "link", "show"]);
    assert!(!links.contains(&format!(": ud{id}")), "links left: {links}");
}
