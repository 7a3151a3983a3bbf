//! Precedence inside one host group. Each test declares the route that
//! should lose first, so that declaration order cannot be what makes the
//! winner win (except in the tie tests, which are about exactly that).

use http::Method;

use super::{assert_routes, matched, req, route, table};

const H: &str = "example.com";

#[test]
fn priority_beats_path_specificity() {
    let t = table(vec![
        route("exact-p0").exact("/api/v1"),
        route("long-p0").prefix("/api/v1"),
        route("root-p1").prefix("/").priority(1),
    ]);
    assert_routes(
        &t,
        &[(H, "/api/v1", Some("root-p1")), (H, "/x", Some("root-p1"))],
    );
}

#[test]
fn negative_priority_loses_to_zero() {
    let t = table(vec![
        route("api-neg").prefix("/api").priority(-1),
        route("root").prefix("/"),
    ]);
    assert_routes(&t, &[(H, "/api", Some("root"))]);
    let t = table(vec![
        route("api-neg").prefix("/api").priority(-1),
        route("other").prefix("/other"),
    ]);
    assert_routes(&t, &[(H, "/api", Some("api-neg"))]);
}

#[test]
fn exact_beats_prefix() {
    let t = table(vec![
        route("prefix").prefix("/api/v1"),
        route("exact").exact("/api/v1"),
    ]);
    assert_routes(
        &t,
        &[
            (H, "/api/v1", Some("exact")),
            (H, "/api/v1/", Some("prefix")),
            (H, "/api/v1/x", Some("prefix")),
        ],
    );
}

#[test]
fn exact_beats_longer_regex_and_conditions() {
    let t = table(vec![
        route("regex").regex("/health.*"),
        route("prefix-get").prefix("/health").method(Method::GET),
        route("exact").exact("/health"),
    ]);
    assert_routes(&t, &[(H, "/health", Some("exact"))]);
}

#[test]
fn longer_prefix_first() {
    let t = table(vec![
        route("root").prefix("/"),
        route("api").prefix("/api"),
        route("api-v1").prefix("/api/v1/"),
        route("api-v1-users").prefix("/api/v1/users"),
    ]);
    assert_routes(
        &t,
        &[
            (H, "/api/v1/users/7", Some("api-v1-users")),
            (H, "/api/v1/orders", Some("api-v1")),
            (H, "/api/v1", Some("api-v1")),
            (H, "/api/v2", Some("api")),
            (H, "/apiv1", Some("root")),
            (H, "/", Some("root")),
        ],
    );
}

#[test]
fn prefix_trailing_slash_does_not_lengthen_it() {
    // `/api/` and `/api` are the same prefix, so they tie and the earlier
    // route wins whichever spelling it used.
    let t = table(vec![
        route("slash").prefix("/api/"),
        route("bare").prefix("/api"),
    ]);
    assert_routes(&t, &[(H, "/api/x", Some("slash"))]);
    let t = table(vec![
        route("bare").prefix("/api"),
        route("slash").prefix("/api/"),
    ]);
    assert_routes(&t, &[(H, "/api/x", Some("bare"))]);
}

#[test]
fn prefix_beats_regex() {
    let t = table(vec![
        route("regex").regex("/api/v1/.*"),
        route("prefix").prefix("/api"),
    ]);
    assert_routes(&t, &[(H, "/api/v1/users", Some("prefix"))]);
    // Root prefix too: any prefix outranks any regex.
    let t = table(vec![
        route("regex").regex("/api/v1/.*"),
        route("root").prefix("/"),
    ]);
    assert_routes(&t, &[(H, "/api/v1/users", Some("root"))]);
}

#[test]
fn regex_used_when_no_prefix_matches() {
    let t = table(vec![
        route("prefix").prefix("/static"),
        route("regex").regex("/img/.*\\.png"),
    ]);
    assert_routes(
        &t,
        &[
            (H, "/img/a.png", Some("regex")),
            (H, "/static/a.png", Some("prefix")),
            (H, "/img/a.gif", None),
        ],
    );
}

#[test]
fn longer_regex_first() {
    let t = table(vec![
        route("short").regex("/a.*"),
        route("long").regex("/a/b.*"),
    ]);
    assert_routes(
        &t,
        &[(H, "/a/bc", Some("long")), (H, "/a/c", Some("short"))],
    );
}

#[test]
fn conditions_rank_below_path_kind() {
    // A route with conditions does not outrank a more specific path.
    let t = table(vec![
        route("root-get")
            .prefix("/")
            .method(Method::GET)
            .header("x-a", "1"),
        route("api").prefix("/api"),
    ]);
    let r = req(H, "/api").header("x-a", "1");
    assert_eq!(matched(&t, &r).as_deref(), Some("api"));
}

#[test]
fn conditioned_route_beats_unconditioned() {
    let t = table(vec![
        route("plain").prefix("/api"),
        route("canary").prefix("/api").header("x-canary", "1"),
    ]);
    let canary = req(H, "/api").header("x-canary", "1");
    assert_eq!(matched(&t, &canary).as_deref(), Some("canary"));
    assert_eq!(matched(&t, &req(H, "/api")).as_deref(), Some("plain"));
}

#[test]
fn method_condition_beats_header_conditions() {
    // Gateway API order: a method match outranks any number of headers.
    let t = table(vec![
        route("headers").header("x-a", "1").header("x-b", "2"),
        route("method").method(Method::GET),
    ]);
    let both = req(H, "/").header("x-a", "1").header("x-b", "2");
    assert_eq!(matched(&t, &both).as_deref(), Some("method"));
    let post = req(H, "/")
        .method(Method::POST)
        .header("x-a", "1")
        .header("x-b", "2");
    assert_eq!(matched(&t, &post).as_deref(), Some("headers"));
}

#[test]
fn more_headers_beat_fewer() {
    let t = table(vec![
        route("one").header("x-a", "1"),
        route("two").header("x-a", "1").header("x-b", "2"),
    ]);
    let both = req(H, "/").header("x-a", "1").header("x-b", "2");
    assert_eq!(matched(&t, &both).as_deref(), Some("two"));
    let one = req(H, "/").header("x-a", "1");
    assert_eq!(matched(&t, &one).as_deref(), Some("one"));
}

#[test]
fn header_conditions_beat_query_conditions() {
    let t = table(vec![
        route("queries").query("a", "1").query("b", "2"),
        route("header").header("x-a", "1"),
    ]);
    let r = req(H, "/?a=1&b=2").header("x-a", "1");
    assert_eq!(matched(&t, &r).as_deref(), Some("header"));
}

#[test]
fn more_query_conditions_beat_fewer() {
    let t = table(vec![
        route("one").query("a", "1"),
        route("two").query("a", "1").query("b", "2"),
    ]);
    assert_routes(
        &t,
        &[
            (H, "/?a=1&b=2", Some("two")),
            (H, "/?b=2&a=1", Some("two")),
            (H, "/?a=1", Some("one")),
            (H, "/?b=2", None),
        ],
    );
}

#[test]
fn fallback_is_last_even_against_negative_priority() {
    let t = table(vec![
        route("fallback").prefix("/").fallback().priority(10),
        route("neg").prefix("/").priority(-10),
    ]);
    assert_routes(&t, &[(H, "/", Some("neg")), (H, "/x", Some("neg"))]);
}

#[test]
fn fallback_serves_what_nothing_else_matches() {
    let t = table(vec![
        route("fallback").fallback(),
        route("api").exact("/api").method(Method::GET),
        route("regex").regex("/r/.*"),
    ]);
    assert_routes(
        &t,
        &[
            (H, "/api", Some("api")),
            (H, "/r/1", Some("regex")),
            (H, "/other", Some("fallback")),
        ],
    );
    let post = req(H, "/api").method(Method::POST);
    assert_eq!(matched(&t, &post).as_deref(), Some("fallback"));
}

#[test]
fn fallback_exact_path_still_ranks_below_any_regex() {
    let t = table(vec![
        route("fallback").exact("/x").fallback(),
        route("regex").regex("/.*"),
    ]);
    assert_routes(&t, &[(H, "/x", Some("regex"))]);
}

#[test]
fn ties_go_to_the_earlier_route() {
    let t = table(vec![
        route("first").prefix("/a"),
        route("second").prefix("/a"),
    ]);
    assert_routes(&t, &[(H, "/a", Some("first"))]);
    let t = table(vec![
        route("second").prefix("/a"),
        route("first").prefix("/a"),
    ]);
    assert_routes(&t, &[(H, "/a", Some("second"))]);
    // Equal precedence is judged on the whole key: the same number of
    // (different) conditions ties, too.
    let t = table(vec![
        route("first").exact("/a").header("x-a", "1"),
        route("second").exact("/a").header("x-b", "1"),
    ]);
    let r = req(H, "/a").header("x-a", "1").header("x-b", "1");
    assert_eq!(matched(&t, &r).as_deref(), Some("first"));
}

#[test]
fn ties_go_by_route_order_not_path_position() {
    // `first` lists `/a` as its second path and `second` as its first; the
    // route order decides, not where the path sits in its own list.
    let t = table(vec![
        route("first").prefix("/x").prefix("/a"),
        route("second").prefix("/a"),
    ]);
    assert_routes(&t, &[(H, "/a", Some("first"))]);
}

#[test]
fn ties_by_order_in_every_path_kind() {
    let t = table(vec![
        route("e1").exact("/e"),
        route("e2").exact("/e"),
        route("r1").regex("/r"),
        route("r2").regex("/r"),
    ]);
    assert_routes(&t, &[(H, "/e", Some("e1")), (H, "/r", Some("r1"))]);
}

#[test]
fn each_path_of_a_route_is_ranked_on_its_own() {
    // `multi` has a weak path (root prefix) and a strong one (exact); each
    // competes with `other` at its own rank.
    let t = table(vec![
        route("other").prefix("/special"),
        route("multi").prefix("/").exact("/special"),
    ]);
    assert_routes(
        &t,
        &[
            (H, "/special", Some("multi")),
            (H, "/special/x", Some("other")),
            (H, "/else", Some("multi")),
        ],
    );
}

#[test]
fn first_matching_candidate_skips_failed_conditions() {
    // The best-ranked pair fails its conditions; the lookup must carry on
    // to the next pair rather than give up.
    let t = table(vec![
        route("root").prefix("/"),
        route("api").prefix("/api"),
        route("api-post").exact("/api/v1").method(Method::POST),
        route("api-v1-beta").prefix("/api/v1").header("x-beta", "1"),
    ]);
    assert_routes(&t, &[(H, "/api/v1", Some("api"))]);
    let beta = req(H, "/api/v1").header("x-beta", "1");
    assert_eq!(matched(&t, &beta).as_deref(), Some("api-v1-beta"));
    let post = req(H, "/api/v1").method(Method::POST);
    assert_eq!(matched(&t, &post).as_deref(), Some("api-post"));
}

#[test]
fn query_conditions_beat_cookie_conditions_and_cookies_beat_none() {
    let t = table(vec![
        route("plain"),
        route("cookie").cookie("c", "1"),
        route("query").query("a", "1"),
    ]);
    let r = req(H, "/?a=1").header("cookie", "c=1");
    assert_eq!(matched(&t, &r).as_deref(), Some("query"));
    let r = req(H, "/").header("cookie", "c=1");
    assert_eq!(matched(&t, &r).as_deref(), Some("cookie"));
    assert_eq!(matched(&t, &req(H, "/")).as_deref(), Some("plain"));
}

#[test]
fn conditions_never_beat_a_more_specific_path() {
    // A route with a header or cookie condition wins over the plain route
    // of its own path only: a longer path of another route still wins.
    let t = table(vec![
        route("api").prefix("/api"),
        route("root").prefix("/"),
        route("root-header")
            .prefix("/")
            .header("x-canary", "always"),
        route("root-cookie").prefix("/").cookie("canary", "always"),
    ]);
    let r = req(H, "/api/x")
        .header("x-canary", "always")
        .header("cookie", "canary=always");
    assert_eq!(matched(&t, &r).as_deref(), Some("api"));
    let r = req(H, "/x")
        .header("x-canary", "always")
        .header("cookie", "canary=always");
    assert_eq!(matched(&t, &r).as_deref(), Some("root-header"));
    let r = req(H, "/x").header("cookie", "canary=always");
    assert_eq!(matched(&t, &r).as_deref(), Some("root-cookie"));
    assert_eq!(matched(&t, &req(H, "/x")).as_deref(), Some("root"));
}
