//! Host groups: exact, one-label wildcard, any host, and the order in which
//! they are consulted.

use http::Method;

use super::{assert_routes, matched, req, route, table};

#[test]
fn exact_host_matches_only_that_host() {
    let t = table(vec![route("shop").host("shop.example.com")]);
    assert_routes(
        &t,
        &[
            ("shop.example.com", "/", Some("shop")),
            ("shop.example.com", "/any/path", Some("shop")),
            ("other.example.com", "/", None),
            ("example.com", "/", None),
            ("a.shop.example.com", "/", None),
            ("shop.example.co", "/", None),
        ],
    );
}

#[test]
fn wildcard_matches_exactly_one_label() {
    let t = table(vec![route("wild").host("*.example.com")]);
    assert_routes(
        &t,
        &[
            ("a.example.com", "/", Some("wild")),
            ("shop.example.com", "/x", Some("wild")),
            ("example.com", "/", None),
            ("a.b.example.com", "/", None),
            ("aexample.com", "/", None),
            ("a.example.org", "/", None),
        ],
    );
}

#[test]
fn wildcard_needs_a_non_empty_label() {
    // `.example.com` has an empty first label, which is not a label at all;
    // it must not be taken for a host under `*.example.com`.
    let t = table(vec![
        route("wild").host("*.example.com"),
        route("any").prefix("/"),
    ]);
    assert_routes(&t, &[(".example.com", "/", Some("any"))]);
}

#[test]
fn route_without_hosts_matches_any_host() {
    let t = table(vec![route("any")]);
    assert_routes(
        &t,
        &[
            ("example.com", "/", Some("any")),
            ("a.b.c.example.org", "/x", Some("any")),
            ("localhost", "/", Some("any")),
            ("10.0.0.1", "/", Some("any")),
            ("", "/", Some("any")),
        ],
    );
}

#[test]
fn route_with_several_hosts_serves_each() {
    let t = table(vec![
        route("multi").host("a.example.com").host("*.example.org"),
    ]);
    assert_routes(
        &t,
        &[
            ("a.example.com", "/", Some("multi")),
            ("x.example.org", "/", Some("multi")),
            ("b.example.com", "/", None),
            ("example.org", "/", None),
        ],
    );
}

#[test]
fn falls_through_exact_then_wildcard_then_any_host() {
    let t = table(vec![
        route("any").prefix("/"),
        route("wild").host("*.example.com").prefix("/api"),
        route("exact").host("shop.example.com").prefix("/cart"),
    ]);
    assert_routes(
        &t,
        &[
            ("shop.example.com", "/cart/1", Some("exact")),
            // The exact group has no route for /api: the wildcard group does.
            ("shop.example.com", "/api/v1", Some("wild")),
            // Neither specific group has one for /home.
            ("shop.example.com", "/home", Some("any")),
            // Other hosts never see the exact host's routes.
            ("blog.example.com", "/cart", Some("any")),
            ("blog.example.com", "/api", Some("wild")),
            ("example.com", "/api", Some("any")),
        ],
    );
}

#[test]
fn falls_through_when_conditions_fail_in_specific_group() {
    // The exact host's route matches the path but not the method, so the
    // group has no matching route and the search moves on.
    let t = table(vec![
        route("any"),
        route("wild").host("*.example.com").header("x-beta", "1"),
        route("exact").host("shop.example.com").method(Method::POST),
    ]);
    let post = req("shop.example.com", "/").method(Method::POST);
    assert_eq!(matched(&t, &post).as_deref(), Some("exact"));
    let beta = req("shop.example.com", "/").header("x-beta", "1");
    assert_eq!(matched(&t, &beta).as_deref(), Some("wild"));
    let plain = req("shop.example.com", "/");
    assert_eq!(matched(&t, &plain).as_deref(), Some("any"));
}

#[test]
fn no_route_when_no_group_matches() {
    let t = table(vec![
        route("wild").host("*.example.com").prefix("/api"),
        route("exact").host("shop.example.com").exact("/"),
    ]);
    assert_routes(
        &t,
        &[
            ("shop.example.com", "/other", None),
            ("blog.example.com", "/", None),
        ],
    );
}

#[test]
fn specific_host_group_beats_higher_priority_any_host_route() {
    // Groups are consulted in order and the first with a match wins, so a
    // priority only ranks routes inside one group.
    let t = table(vec![
        route("any-urgent").prefix("/").priority(1000),
        route("wild-low").host("*.example.com").priority(-10),
        route("exact-low").host("shop.example.com").priority(-100),
    ]);
    assert_routes(
        &t,
        &[
            ("shop.example.com", "/", Some("exact-low")),
            ("blog.example.com", "/", Some("wild-low")),
            ("example.net", "/", Some("any-urgent")),
        ],
    );
}

#[test]
fn specific_host_group_beats_more_specific_path_elsewhere() {
    let t = table(vec![
        route("any-exact").exact("/api/v1/users"),
        route("wild-exact")
            .host("*.example.com")
            .exact("/api/v1/users"),
        route("exact-root").host("shop.example.com").prefix("/"),
    ]);
    assert_routes(
        &t,
        &[
            ("shop.example.com", "/api/v1/users", Some("exact-root")),
            ("blog.example.com", "/api/v1/users", Some("wild-exact")),
            ("example.net", "/api/v1/users", Some("any-exact")),
        ],
    );
}

#[test]
fn gateway_wildcards_cover_any_depth_longest_suffix_first() {
    let t = table(vec![
        route("any-depth").host("**.example.com"),
        route("deeper").host("**.shop.example.com").prefix("/api"),
        route("exact").host("a.shop.example.com").prefix("/exact"),
    ]);
    assert_routes(
        &t,
        &[
            ("a.example.com", "/", Some("any-depth")),
            ("a.b.example.com", "/", Some("any-depth")),
            ("x.shop.example.com", "/api/v1", Some("deeper")),
            ("x.y.shop.example.com", "/api", Some("deeper")),
            // The longer suffix has no route for the path: the shorter one
            // serves it.
            ("x.shop.example.com", "/other", Some("any-depth")),
            ("a.shop.example.com", "/exact", Some("exact")),
            ("a.shop.example.com", "/api", Some("deeper")),
            ("example.com", "/", None),
            (".example.com", "/", None),
            ("a..example.com", "/", None),
            ("a.example.org", "/", None),
        ],
    );
}
