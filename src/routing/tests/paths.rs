//! Path matchers: Exact, element-wise Prefix, whole-path regular
//! expressions.

use super::{assert_routes, route, table};

const H: &str = "example.com";

#[test]
fn exact_compares_whole_path() {
    let t = table(vec![route("foo").exact("/foo")]);
    assert_routes(
        &t,
        &[
            (H, "/foo", Some("foo")),
            // No trailing-slash equivalence for Exact.
            (H, "/foo/", None),
            (H, "/foo/bar", None),
            (H, "/fo", None),
            (H, "/foox", None),
            (H, "/FOO", None),
            (H, "/", None),
        ],
    );
}

#[test]
fn exact_with_trailing_slash_needs_the_slash() {
    let t = table(vec![route("foo-dir").exact("/foo/")]);
    assert_routes(&t, &[(H, "/foo/", Some("foo-dir")), (H, "/foo", None)]);
}

#[test]
fn exact_ignores_query_string() {
    let t = table(vec![route("search").exact("/search")]);
    assert_routes(
        &t,
        &[
            (H, "/search?q=rust", Some("search")),
            (H, "/search?", Some("search")),
        ],
    );
}

#[test]
fn prefix_matches_whole_elements() {
    let t = table(vec![route("api").prefix("/api")]);
    assert_routes(
        &t,
        &[
            (H, "/api", Some("api")),
            (H, "/api/", Some("api")),
            (H, "/api/v1", Some("api")),
            (H, "/api/v1/users/", Some("api")),
            (H, "/api?x=1", Some("api")),
            (H, "/apix", None),
            (H, "/ap", None),
            (H, "/", None),
            (H, "/v1/api", None),
            (H, "/API", None),
        ],
    );
}

#[test]
fn prefix_trailing_slash_is_ignored() {
    let t = table(vec![route("api").prefix("/api/")]);
    assert_routes(
        &t,
        &[
            (H, "/api", Some("api")),
            (H, "/api/", Some("api")),
            (H, "/api/v1", Some("api")),
            (H, "/apix", None),
        ],
    );
}

#[test]
fn multi_element_prefix() {
    let t = table(vec![route("ab").prefix("/a/b")]);
    assert_routes(
        &t,
        &[
            (H, "/a/b", Some("ab")),
            (H, "/a/b/c", Some("ab")),
            (H, "/a/bc", None),
            (H, "/a", None),
            (H, "/a/", None),
            (H, "/b", None),
        ],
    );
}

#[test]
fn root_prefix_matches_everything() {
    let t = table(vec![route("root").prefix("/")]);
    assert_routes(
        &t,
        &[
            (H, "/", Some("root")),
            (H, "/x", Some("root")),
            (H, "/x/y/", Some("root")),
            (H, "/x?y=z", Some("root")),
        ],
    );
}

#[test]
fn prefix_applies_to_normalized_path() {
    // The request path is normalized before lookup, so dot segments cannot
    // leave the prefix a route was matched by.
    let t = table(vec![route("public").prefix("/public")]);
    assert_routes(
        &t,
        &[
            (H, "/public/./css", Some("public")),
            (H, "//public//css", Some("public")),
            (H, "/public/../admin", None),
        ],
    );
}

#[test]
fn regex_must_match_whole_path() {
    let t = table(vec![route("versioned").regex("/v[0-9]+")]);
    assert_routes(
        &t,
        &[
            (H, "/v1", Some("versioned")),
            (H, "/v12", Some("versioned")),
            (H, "/v12?x=1", Some("versioned")),
            (H, "/v1/users", None),
            (H, "/x/v1", None),
            (H, "/v", None),
        ],
    );
}

#[test]
fn regex_alternation_is_anchored_as_a_whole() {
    // Anchoring must wrap the whole alternation, not just its ends.
    let t = table(vec![route("ab").regex("/a|/b")]);
    assert_routes(
        &t,
        &[
            (H, "/a", Some("ab")),
            (H, "/b", Some("ab")),
            (H, "/ab", None),
            (H, "/xb", None),
            (H, "/a/b", None),
        ],
    );
}

#[test]
fn route_with_several_paths_matches_any() {
    let t = table(vec![
        route("multi")
            .exact("/login")
            .prefix("/static")
            .regex("/u/[a-z]+"),
    ]);
    assert_routes(
        &t,
        &[
            (H, "/login", Some("multi")),
            (H, "/static/app.js", Some("multi")),
            (H, "/u/alice", Some("multi")),
            (H, "/login/x", None),
            (H, "/u/Alice", None),
        ],
    );
}
