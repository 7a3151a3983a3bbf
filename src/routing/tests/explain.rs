//! The explanation of a routing decision: the rule it names and the
//! candidates it lists. (Every other routing test checks that the
//! explanation picks the same route as the router.)

use http::Method;

use super::{req, route, table};
use crate::routing::{Explanation, Outcome, RouteTable};

const H: &str = "example.com";

fn explain(t: &RouteTable, r: &super::Req) -> Explanation {
    t.explain(&r.view())
}

/// (route, outcome) of each candidate, in the order they were tried.
fn outcomes(e: &Explanation) -> Vec<(String, Outcome)> {
    e.candidates
        .iter()
        .map(|c| (c.route.to_string(), c.outcome))
        .collect()
}

#[test]
fn names_the_rule_that_beat_the_runner_up() {
    let t = table(vec![
        route("exact-p0").exact("/api/v1"),
        route("root-p1").prefix("/").priority(1),
    ]);
    let e = explain(&t, &req(H, "/api/v1"));
    assert_eq!(e.route.as_deref(), Some("root-p1"));
    assert_eq!(
        e.decided_by,
        "higher priority: 1 over 0 (over route exact-p0)"
    );
    assert_eq!(
        outcomes(&e),
        [
            ("root-p1".to_owned(), Outcome::Chosen),
            ("exact-p0".to_owned(), Outcome::Lost)
        ]
    );

    let t = table(vec![
        route("prefix").prefix("/api/v1"),
        route("exact").exact("/api/v1"),
        route("regex").regex("/api/.*"),
    ]);
    let e = explain(&t, &req(H, "/api/v1"));
    assert_eq!(
        e.decided_by,
        "an Exact path beats a Prefix path (over route prefix)"
    );
    let regex = &e.candidates[2];
    assert_eq!(regex.reason, "an Exact path beats a RegularExpression path");

    let t = table(vec![
        route("api").prefix("/api"),
        route("api-v1").prefix("/api/v1"),
    ]);
    let e = explain(&t, &req(H, "/api/v1/x"));
    assert_eq!(
        e.decided_by,
        "longer prefix: 2 path segments over 1 (over route api)"
    );
}

#[test]
fn ties_and_conditions_are_explained() {
    let t = table(vec![
        route("first").prefix("/a"),
        route("second").prefix("/a"),
    ]);
    let e = explain(&t, &req(H, "/a"));
    assert!(
        e.decided_by.starts_with("equal precedence"),
        "{}",
        e.decided_by
    );

    let t = table(vec![
        route("plain").prefix("/api"),
        route("canary").prefix("/api").header("x-canary", "1"),
        route("posts").prefix("/api").method(Method::POST),
    ]);
    let e = explain(&t, &req(H, "/api"));
    assert_eq!(e.route.as_deref(), Some("plain"));
    assert_eq!(
        outcomes(&e),
        [
            ("posts".to_owned(), Outcome::Unmet),
            ("canary".to_owned(), Outcome::Unmet),
            ("plain".to_owned(), Outcome::Chosen),
        ]
    );
    assert_eq!(e.candidates[0].unmet, ["method GET is not POST"]);
    assert_eq!(e.candidates[1].unmet, ["header x-canary must be \"1\""]);
    assert_eq!(
        e.decided_by,
        "the only route whose host, path and conditions match; 2 candidates tried before it did not meet their conditions"
    );
}

#[test]
fn host_groups_come_in_order_and_misses_say_404() {
    let t = table(vec![
        route("any").prefix("/"),
        route("wild").host("*.example.com").prefix("/"),
        route("exact").host("a.example.com").prefix("/x"),
    ]);
    let e = explain(&t, &req("a.example.com", "/x"));
    assert_eq!(e.route.as_deref(), Some("exact"));
    let hosts: Vec<&str> = e.candidates.iter().map(|c| c.host.as_str()).collect();
    assert_eq!(hosts, ["a.example.com", "*.example.com", "*"]);
    assert_eq!(
        e.candidates[1].reason,
        "a route for the exact host is chosen before routes for a wildcard host"
    );
    assert_eq!(
        e.candidates[2].reason,
        "a route for the exact host is chosen before routes for any host"
    );

    let t = table(vec![route("api").host(H).exact("/api")]);
    let e = explain(&t, &req(H, "/other"));
    assert!(e.route.is_none() && e.candidates.is_empty());
    assert!(e.decided_by.contains("404"), "{}", e.decided_by);
    let e = explain(&t, &req("other.com", "/api"));
    assert!(e.route.is_none());

    let t = table(vec![route("post").prefix("/").method(Method::POST)]);
    let e = explain(&t, &req(H, "/"));
    assert!(e.route.is_none());
    assert_eq!(outcomes(&e), [("post".to_owned(), Outcome::Unmet)]);
    assert!(e.decided_by.starts_with("every route"), "{}", e.decided_by);
}

#[test]
fn fallback_and_same_route_paths() {
    let t = table(vec![
        route("fallback").prefix("/").fallback().priority(10),
        route("neg").prefix("/").priority(-10),
    ]);
    let e = explain(&t, &req(H, "/x"));
    assert_eq!(
        e.decided_by,
        "a fallback route (an Ingress defaultBackend) comes after every other route (over route fallback)"
    );
    assert!(e.candidates[1].fallback);

    let t = table(vec![route("multi").prefix("/").exact("/special")]);
    let e = explain(&t, &req(H, "/special"));
    assert_eq!(e.candidates.len(), 2);
    assert_eq!(
        e.candidates[1].reason,
        "an earlier-ranked path of the same route matched"
    );
    assert_eq!(
        e.decided_by,
        "the only route whose host, path and conditions match"
    );
}

#[test]
fn serializes_for_the_admin_port() {
    let t = table(vec![
        route("api").prefix("/api").query("v", "2"),
        route("root").prefix("/"),
    ]);
    let e = explain(&t, &req(H, "/api?v=1"));
    let json = serde_json::to_value(&e).unwrap();
    assert_eq!(json["route"], "root");
    assert_eq!(json["candidates"][0]["outcome"], "unmet");
    assert_eq!(json["candidates"][0]["path"]["type"], "Prefix");
    assert_eq!(
        json["candidates"][0]["unmet"][0],
        "query parameter v must be \"2\""
    );
    assert_eq!(json["candidates"][1]["outcome"], "chosen");
    assert!(json.get("winner").is_none());
}
