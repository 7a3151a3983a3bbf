//! Backend choice (`Route::pick`) and the upstreams shared through the
//! registry.

use std::collections::HashMap;
use std::sync::Arc;

use super::{UpstreamKey, UpstreamRegistry, addr, route, table_with};

fn key(service: &str) -> UpstreamKey {
    UpstreamKey::new("default", service, 80)
}

/// How many of `n` picks went to each upstream.
fn tally(t: &super::RouteTable, n: usize) -> HashMap<String, usize> {
    let route = &t.routes()[0];
    let mut counts = HashMap::new();
    for _ in 0..n {
        let (up, _) = route.pick().expect("an endpoint is available");
        *counts.entry(up.upstream.key().to_string()).or_default() += 1;
    }
    counts
}

#[test]
fn weights_split_traffic_exactly() {
    let (a, b) = (key("a"), key("b"));
    let reg = UpstreamRegistry::new();
    let t = table_with(
        vec![route("split").backend(&a, 3).backend(&b, 1)],
        &[(&a, vec![addr(1)]), (&b, vec![addr(2)])],
        &reg,
    );
    // The smooth schedule repeats every four picks, so 400 is exact.
    let counts = tally(&t, 400);
    assert_eq!(counts[a.as_str()], 300);
    assert_eq!(counts[b.as_str()], 100);
}

#[test]
fn weights_are_interleaved() {
    let (a, b) = (key("a"), key("b"));
    let t = table_with(
        vec![route("split").backend(&a, 1).backend(&b, 1)],
        &[(&a, vec![addr(1)]), (&b, vec![addr(2)])],
        &UpstreamRegistry::new(),
    );
    let route = &t.routes()[0];
    let ports: Vec<u16> = (0..6).map(|_| route.pick().unwrap().1.port()).collect();
    assert_eq!(ports, [1, 2, 1, 2, 1, 2]);
}

#[test]
fn zero_weight_backend_is_never_picked() {
    let (a, b) = (key("a"), key("b"));
    let t = table_with(
        vec![route("r").backend(&a, 0).backend(&b, 1)],
        &[(&a, vec![addr(1)]), (&b, vec![addr(2)])],
        &UpstreamRegistry::new(),
    );
    let counts = tally(&t, 50);
    assert_eq!(counts.get(a.as_str()), None);
    assert_eq!(counts[b.as_str()], 50);
}

#[test]
fn zero_weight_backend_is_not_a_standby() {
    // A backend the user weighted 0 must stay idle even when every other
    // backend is empty.
    let (a, b) = (key("a"), key("b"));
    let t = table_with(
        vec![route("r").backend(&a, 1).backend(&b, 0)],
        &[(&a, vec![]), (&b, vec![addr(2)])],
        &UpstreamRegistry::new(),
    );
    assert!(t.routes()[0].pick().is_none());
}

#[test]
fn backend_without_endpoints_is_skipped() {
    let (a, b) = (key("a"), key("b"));
    let t = table_with(
        vec![route("r").backend(&a, 1).backend(&b, 1)],
        &[(&a, vec![]), (&b, vec![addr(2), addr(3)])],
        &UpstreamRegistry::new(),
    );
    let route = &t.routes()[0];
    let ports: Vec<u16> = (0..8).map(|_| route.pick().unwrap().1.port()).collect();
    assert!(ports.iter().all(|&p| p == 2 || p == 3), "{ports:?}");
    assert!(ports.contains(&2) && ports.contains(&3), "{ports:?}");
}

#[test]
fn no_endpoints_anywhere_picks_nothing() {
    let (a, b) = (key("a"), key("b"));
    let t = table_with(
        vec![
            route("empty").backend(&a, 1).backend(&b, 2),
            route("no-backends"),
            route("all-zero").backend(&a, 0),
            route("unknown").backend(&key("missing"), 1),
        ],
        &[(&a, vec![]), (&b, vec![])],
        &UpstreamRegistry::new(),
    );
    for route in t.routes() {
        assert!(route.pick().is_none(), "route {}", route.name);
    }
}

#[test]
fn registry_update_reaches_existing_table() {
    let a = key("a");
    let reg = UpstreamRegistry::new();
    let t = table_with(
        vec![route("r").backend(&a, 1)],
        &[(&a, vec![addr(1)])],
        &reg,
    );
    let route = &t.routes()[0];
    assert_eq!(route.pick().map(|(_, ep)| ep), Some(addr(1)));

    // The table holds the registry's own upstream, not a copy.
    let live = reg.get(&a).expect("registered");
    assert!(Arc::ptr_eq(&route.backends()[0].upstream, &live));

    assert!(reg.update_endpoints(&a, &[addr(7)]));
    assert_eq!(route.pick().map(|(_, ep)| ep), Some(addr(7)));

    assert!(reg.update_endpoints(&a, &[]));
    assert!(route.pick().is_none());

    assert!(reg.update_endpoints(&a, &[addr(8)]));
    assert_eq!(route.pick().map(|(_, ep)| ep), Some(addr(8)));
}

#[test]
fn rebuild_shares_upstreams_with_older_table() {
    let a = key("a");
    let reg = UpstreamRegistry::new();
    let routes = || vec![route("r").backend(&a, 1)];
    let old = table_with(routes(), &[(&a, vec![addr(1)])], &reg);
    let new = table_with(routes(), &[(&a, vec![addr(2)])], &reg);
    let old_up = &old.routes()[0].backends()[0].upstream;
    let new_up = &new.routes()[0].backends()[0].upstream;
    assert!(Arc::ptr_eq(old_up, new_up));
    // Requests still in flight on the old table see the new endpoints.
    assert_eq!(old.routes()[0].pick().map(|(_, ep)| ep), Some(addr(2)));
}

#[test]
fn routes_sharing_an_upstream_share_its_endpoints() {
    let a = key("a");
    let reg = UpstreamRegistry::new();
    let t = table_with(
        vec![
            route("one").prefix("/one").backend(&a, 1),
            route("two").prefix("/two").backend(&a, 5),
        ],
        &[(&a, vec![addr(1)])],
        &reg,
    );
    let [one, two] = [&t.routes()[0], &t.routes()[1]];
    assert!(Arc::ptr_eq(
        &one.backends()[0].upstream,
        &two.backends()[0].upstream
    ));
    reg.update_endpoints(&a, &[addr(9)]);
    assert_eq!(two.pick().map(|(_, ep)| ep), Some(addr(9)));
}

#[test]
fn unknown_upstream_is_not_in_registry() {
    // A backend whose upstream the spec does not list answers 503 and is
    // not reachable through the registry.
    let missing = key("missing");
    let reg = UpstreamRegistry::new();
    let t = table_with(vec![route("r").backend(&missing, 1)], &[], &reg);
    assert!(!reg.update_endpoints(&missing, &[addr(1)]));
    assert!(t.routes()[0].pick().is_none());
}

#[test]
fn backends_find_upstreams_by_key_text() {
    // Keys made separately are equal but not clones of each other.
    let (a, b) = (key("a"), key("b"));
    let reg = UpstreamRegistry::new();
    let t = table_with(
        vec![
            route("same").backend(&a, 1),
            route("separate").backend(&key("b"), 1),
            route("unknown").backend(&key("c"), 1),
        ],
        &[(&a, vec![addr(1)]), (&b, vec![addr(2)])],
        &reg,
    );
    let picked = |i: usize| t.routes()[i].pick().map(|(_, addr)| addr);
    assert_eq!(picked(0), Some(addr(1)));
    assert_eq!(picked(1), Some(addr(2)));
    assert_eq!(picked(2), None);
    let shared = reg.get(&b).expect("b is registered");
    assert!(Arc::ptr_eq(&t.routes()[1].backends()[0].upstream, &shared));
}
