//! Unit tests of the ovs-ofctl syntax taken from OVS's own test suite (tests/ovs_flow_corpus.rs
//! runs the whole corpus): aliases, registers, IPv6 fields, and the actions added for them.

use super::*;

fn flow(s: &str) -> Flow {
    parse_flow(s).unwrap_or_else(|e| panic!("{s}: {e}"))
}

fn err(s: &str) -> String {
    match parse_flow(s) {
        Ok(f) => panic!("{s}: accepted as {f}"),
        Err(e) => e.to_string(),
    }
}

fn round_trip(s: &str) -> Flow {
    let f = flow(s);
    assert_eq!(parse_flow(&f.to_string()), Ok(f.clone()), "{s} -> {f}");
    f
}

#[test]
fn test_action_is_actions() {
    assert_eq!(
        flow("priority=1,action=drop"),
        flow("priority=1,actions=drop")
    );
    assert_eq!(
        flow("table=0 priority=10 arp action=normal"),
        flow("table=0,priority=10,arp,actions=NORMAL")
    );
    // Only a key named exactly `action` or `actions` starts the list.
    assert!(err("priority=1,xaction=drop").contains("xaction"));
    assert!(matches!(
        parse_filter("action=drop"),
        Err(FlowError::NotAllowed { .. })
    ));
    round_trip("in_port=1,action=output:2");
}
