//! The flows OVS users paste: Open vSwitch's datapath test suite (tests/system-traffic.at, see
//! tests/data/ovs-system-traffic-flows.txt for the commit) as a corpus.
//!
//! Every flow goes through `uvs::flow::parse_flow`; what uvs accepts must print a form that
//! parses back to the same flow. When `ovs-ofctl` is installed (Debian openvswitch-common),
//! both the original text and uvs's printed form go through `ovs-ofctl parse-flow` with the same
//! protocol (OpenFlow 1.3 when the original allows it, else NXM, else ovs-ofctl's choice) and
//! the match and action parts ovs-ofctl prints must be equal: "same meaning" (the only
//! normalisation beyond ovs-ofctl's own: writes to different fields inside `ct(exec(...))`
//! are compared in field order, since they commute).
//! The test prints accepted / same meaning / refused-by-reason and fails when a figure falls
//! below the pinned one (raise the pins when uvs accepts more).

use std::collections::BTreeMap;
use std::process::Command;

use uvs::flow::{FlowError, parse_flow};

/// Flows uvs must accept (of 440).
const MIN_ACCEPTED: usize = 410;
/// Flows uvs must accept with the same meaning as ovs-ofctl (checked when it is installed).
const MIN_SAME: usize = 410;

const CORPUS: &str = include_str!("data/ovs-system-traffic-flows.txt");
const TUTORIAL: &str = include_str!("data/ovs-tutorial-flows.txt");

/// (line in system-traffic.at, flow).
fn corpus() -> Vec<(String, &'static str)> {
    flows_of(CORPUS, "# system-traffic.at:")
}

/// (origin, flow) of a corpus file whose comments `PREFIX LINE` name each flow's origin.
fn flows_of(text: &'static str, prefix: &str) -> Vec<(String, &'static str)> {
    let mut out = Vec::new();
    let mut origin = String::new();
    for l in text.lines() {
        if let Some(c) = l.strip_prefix(prefix) {
            origin = c.to_string();
        } else if !l.starts_with('#') && !l.trim().is_empty() {
            out.push((origin.clone(), l));
        }
    }
    out
}

/// A short reason for a refusal: the error kind and what it names (without values), so the
/// table groups by feature.
fn reason(e: &FlowError) -> String {
    let head = |s: &str| {
        let end = s.find([':', '(', '=']).unwrap_or(s.len());
        s[..end].to_ascii_lowercase()
    };
    match e {
        FlowError::UnknownField(f) => format!("unknown field {f}"),
        FlowError::UnknownAction(a) => format!("unknown action {}", head(a)),
        FlowError::BadAction { action, why } => {
            let why: String = why.chars().take(50).collect();
            format!("action {}: {why}", head(action))
        }
        FlowError::BadValue { field, why, .. } => format!("{field}: {why}"),
        FlowError::BadMask { field, why, .. } => format!("{field} mask: {why}"),
        FlowError::Prerequisite { field, .. } => format!("prerequisite of {field}"),
        other => other.to_string(),
    }
}

fn ofctl(opts: &[&str], flow: &str) -> Option<String> {
    let out = Command::new("ovs-ofctl")
        .args(opts)
        .arg("parse-flow")
        .arg(flow)
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let last = text.lines().rev().find(|l| l.contains("FLOW_MOD"))?;
    // "OFPT_FLOW_MOD (OF1.3) (xid=0x1): ADD table:10 priority=100,arp actions=NORMAL"
    let body = last.split_once("): ADD").map_or(last, |x| x.1).trim();
    Some(sort_exec(body))
}

/// Writes to different fields inside `exec(...)` commute (ct_mark, then ct_label is the same
/// as ct_label, then ct_mark): order them by destination field, keeping the order of writes to
/// one field, so the comparison sees meaning rather than spelling.
fn sort_exec(s: &str) -> String {
    let Some(i) = s.find("exec(") else {
        return s.to_string();
    };
    let start = i + "exec(".len();
    let mut depth = 1;
    let end = s[start..]
        .char_indices()
        .find_map(|(j, c)| {
            match c {
                '(' => depth += 1,
                ')' => depth -= 1,
                _ => {}
            }
            (depth == 0).then_some(start + j)
        })
        .unwrap_or(s.len());
    let mut items: Vec<&str> = s[start..end].split(',').collect();
    items.sort_by_key(|it| {
        let dst = it.split_once("->").map_or("", |x| x.1);
        dst.split('[').next().unwrap_or("").to_string()
    });
    format!("{}{}{}", &s[..start], items.join(","), &s[end..])
}

fn ofctl_available() -> bool {
    Command::new("ovs-ofctl")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// What ovs-ofctl says: `Ok(())` same meaning, `Err(why)` otherwise.
fn same_meaning(orig: &str, ours: &str) -> Result<(), String> {
    const PROTOS: [&[&str]; 3] = [&["-O", "OpenFlow13"], &["-F", "nxm"], &[]];
    for p in PROTOS {
        let Some(a) = ofctl(p, orig) else { continue };
        return match ofctl(p, ours) {
            None => Err(format!("ovs-ofctl {p:?} refuses uvs's form")),
            Some(b) if a == b => Ok(()),
            Some(b) => Err(format!("ovs-ofctl {p:?}: '{a}' vs '{b}'")),
        };
    }
    Err("ovs-ofctl refuses the original".into())
}

#[derive(Default)]
struct Tally {
    accepted: usize,
    same: usize,
    differ: Vec<String>,
    refused: BTreeMap<String, Vec<String>>,
}

/// OVS's advanced tutorial (a VLAN switch built from learn() and registers): every flow
/// accepted, with the same meaning.
#[test]
fn ovs_tutorial_flows() {
    let flows = flows_of(TUTORIAL, "# ovs-advanced.rst:");
    assert_eq!(flows.len(), 19);
    let check = ofctl_available();
    for (origin, text) in &flows {
        let f = parse_flow(text).unwrap_or_else(|e| panic!("{origin}: {text}: {e}"));
        let s = f.to_string();
        assert_eq!(parse_flow(&s).as_ref(), Ok(&f), "{origin}: {s}");
        if check {
            assert_eq!(same_meaning(text, &s), Ok(()), "{origin}: {text} -> {s}");
        }
    }
}

#[test]
fn ovs_system_traffic_corpus() {
    let flows = corpus();
    assert!(flows.len() > 400, "corpus has {} flows", flows.len());
    let check = ofctl_available();
    let mut t = Tally::default();
    let mut printed = Vec::new();
    for (origin, text) in &flows {
        match parse_flow(text) {
            Ok(f) => {
                t.accepted += 1;
                let s = f.to_string();
                assert_eq!(
                    parse_flow(&s).as_ref(),
                    Ok(&f),
                    "{origin}: '{text}' prints as '{s}', which does not parse back"
                );
                printed.push((origin.clone(), *text, s));
            }
            Err(e) => t
                .refused
                .entry(reason(&e))
                .or_default()
                .push(format!("{origin}: {text}")),
        }
    }
    if check {
        let results: Vec<_> = std::thread::scope(|s| {
            let chunks: Vec<_> = printed.chunks(printed.len().div_ceil(4).max(1)).collect();
            let hs: Vec<_> = chunks
                .into_iter()
                .map(|c| {
                    s.spawn(move || {
                        c.iter()
                            .map(|(o, a, b)| (o.clone(), *a, same_meaning(a, b)))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
        });
        for (o, a, r) in results {
            match r {
                Ok(()) => t.same += 1,
                Err(why) => t.differ.push(format!("{o}: {a}: {why}")),
            }
        }
    }
    report(&t, flows.len(), check);
    assert!(
        t.accepted >= MIN_ACCEPTED,
        "accepted {} < pinned {MIN_ACCEPTED}",
        t.accepted
    );
    if check {
        assert!(
            t.same >= MIN_SAME,
            "same meaning {} < pinned {MIN_SAME}",
            t.same
        );
    }
}

fn report(t: &Tally, total: usize, check: bool) {
    let pct = |n: usize| 100.0 * n as f64 / total as f64;
    println!("OVS system-traffic.at corpus: {total} flows");
    println!(
        "  accepted by uvs:      {:4} ({:.1}%)",
        t.accepted,
        pct(t.accepted)
    );
    if check {
        println!("  same meaning (ofctl): {:4} ({:.1}%)", t.same, pct(t.same));
        println!("  different meaning:    {:4}", t.differ.len());
        for d in &t.differ {
            println!("    {d}");
        }
    } else {
        println!("  same meaning: not checked (ovs-ofctl not installed)");
    }
    let refused: usize = t.refused.values().map(Vec::len).sum();
    println!("  refused:              {refused:4} ({:.1}%)", pct(refused));
    let mut by: Vec<_> = t.refused.iter().collect();
    by.sort_by_key(|(r, v)| (std::cmp::Reverse(v.len()), *r));
    for (r, v) in by {
        println!("    {:4}  {r}  (e.g. {})", v.len(), v[0]);
    }
}
