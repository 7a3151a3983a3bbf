//! Conditions other than host and path: methods, headers, query
//! parameters, cookies. Each table has an unconditioned `plain` route declared
//! first, so a failed condition shows as `plain` rather than as no match.

use http::Method;

use super::ValueMatcher::Present;
use super::{RouteBuilder, assert_routes, matched, regex, req, route, table};

const H: &str = "example.com";

fn with_plain(r: RouteBuilder) -> super::RouteTable {
    table(vec![route("plain"), r])
}

#[test]
fn methods_any_of() {
    let t = with_plain(route("read").method(Method::GET).method(Method::HEAD));
    let name = |m: Method| matched(&t, &req(H, "/").method(m));
    assert_eq!(name(Method::GET).as_deref(), Some("read"));
    assert_eq!(name(Method::HEAD).as_deref(), Some("read"));
    assert_eq!(name(Method::POST).as_deref(), Some("plain"));
    assert_eq!(name(Method::DELETE).as_deref(), Some("plain"));
}

#[test]
fn method_without_other_route_gives_no_match() {
    let t = table(vec![route("post").method(Method::POST)]);
    assert_eq!(matched(&t, &req(H, "/")), None);
    let post = req(H, "/").method(Method::POST);
    assert_eq!(matched(&t, &post).as_deref(), Some("post"));
}

#[test]
fn extension_method() {
    let purge = Method::from_bytes(b"PURGE").unwrap();
    let t = with_plain(route("purge").method(purge.clone()));
    assert_eq!(
        matched(&t, &req(H, "/").method(purge)).as_deref(),
        Some("purge")
    );
}

#[test]
fn header_exact_value() {
    let t = with_plain(route("canary").header("x-canary", "1"));
    let name = |r| matched(&t, &r);
    assert_eq!(
        name(req(H, "/").header("x-canary", "1")).as_deref(),
        Some("canary")
    );
    assert_eq!(
        name(req(H, "/").header("x-canary", "0")).as_deref(),
        Some("plain")
    );
    assert_eq!(
        name(req(H, "/").header("x-canary", "10")).as_deref(),
        Some("plain")
    );
    assert_eq!(
        name(req(H, "/").header("x-other", "1")).as_deref(),
        Some("plain")
    );
    assert_eq!(name(req(H, "/")).as_deref(), Some("plain"));
}

#[test]
fn header_value_is_case_sensitive() {
    let t = with_plain(route("env").header("x-env", "Prod"));
    let r = req(H, "/").header("x-env", "prod");
    assert_eq!(matched(&t, &r).as_deref(), Some("plain"));
}

#[test]
fn header_name_is_case_insensitive() {
    // Request header names are always lower case in a `HeaderMap`; a spec
    // name in mixed case must still find them.
    let t = with_plain(route("env").header("X-Env", "prod"));
    let r = req(H, "/").header("x-env", "prod");
    assert_eq!(matched(&t, &r).as_deref(), Some("env"));
}

#[test]
fn header_any_value_of_repeated_header() {
    let t = with_plain(route("canary").header("x-canary", "1"));
    let first = req(H, "/").header("x-canary", "1").header("x-canary", "0");
    assert_eq!(matched(&t, &first).as_deref(), Some("canary"));
    let last = req(H, "/").header("x-canary", "0").header("x-canary", "1");
    assert_eq!(matched(&t, &last).as_deref(), Some("canary"));
    let none = req(H, "/").header("x-canary", "0").header("x-canary", "2");
    assert_eq!(matched(&t, &none).as_deref(), Some("plain"));
}

#[test]
fn header_present() {
    let t = with_plain(route("debug").header_matching("x-debug", Present));
    let name = |r| matched(&t, &r);
    assert_eq!(
        name(req(H, "/").header("x-debug", "")).as_deref(),
        Some("debug")
    );
    assert_eq!(
        name(req(H, "/").header("x-debug", "anything")).as_deref(),
        Some("debug")
    );
    assert_eq!(
        name(req(H, "/").header("x-debugx", "1")).as_deref(),
        Some("plain")
    );
    assert_eq!(name(req(H, "/")).as_deref(), Some("plain"));
}

#[test]
fn header_regex_matches_whole_value() {
    let t = with_plain(route("v").header_matching("x-version", regex("v[0-9]")));
    let name = |r| matched(&t, &r);
    assert_eq!(
        name(req(H, "/").header("x-version", "v2")).as_deref(),
        Some("v")
    );
    assert_eq!(
        name(req(H, "/").header("x-version", "v12")).as_deref(),
        Some("plain")
    );
    assert_eq!(
        name(req(H, "/").header("x-version", "xv1")).as_deref(),
        Some("plain")
    );
    let repeated = req(H, "/")
        .header("x-version", "v")
        .header("x-version", "v3");
    assert_eq!(name(repeated).as_deref(), Some("v"));
}

#[test]
fn all_header_conditions_must_hold() {
    let t = with_plain(route("both").header("x-a", "1").header("x-b", "2"));
    let name = |r| matched(&t, &r);
    let both = req(H, "/").header("x-a", "1").header("x-b", "2");
    assert_eq!(name(both).as_deref(), Some("both"));
    assert_eq!(
        name(req(H, "/").header("x-a", "1")).as_deref(),
        Some("plain")
    );
    assert_eq!(
        name(req(H, "/").header("x-b", "2")).as_deref(),
        Some("plain")
    );
}

#[test]
fn query_exact_value() {
    let t = with_plain(route("v2").query("version", "2"));
    assert_routes(
        &t,
        &[
            (H, "/?version=2", Some("v2")),
            (H, "/?a=1&version=2&b=3", Some("v2")),
            (H, "/?version=3", Some("plain")),
            (H, "/?version=20", Some("plain")),
            (H, "/?version", Some("plain")),
            (H, "/?xversion=2", Some("plain")),
            (H, "/?Version=2", Some("plain")),
            (H, "/", Some("plain")),
        ],
    );
}

#[test]
fn query_values_are_form_decoded() {
    let t = with_plain(route("search").query("q", "a b/c+d"));
    assert_routes(
        &t,
        &[
            (H, "/?q=a+b%2Fc%2Bd", Some("search")),
            (H, "/?q=a%20b%2fc%2bd", Some("search")),
            // A literal `+` is a space, not a plus.
            (H, "/?q=a+b%2Fc+d", Some("plain")),
        ],
    );
}

#[test]
fn query_names_are_form_decoded() {
    let t = with_plain(route("filter").query("filter[name]", "x y"));
    assert_routes(
        &t,
        &[
            (H, "/?filter%5Bname%5D=x+y", Some("filter")),
            (H, "/?filter[name]=x%20y", Some("filter")),
        ],
    );
}

#[test]
fn query_non_ascii_value_is_decoded_as_utf8() {
    let t = with_plain(route("cafe").query("q", "café"));
    assert_routes(&t, &[(H, "/?q=caf%C3%A9", Some("cafe"))]);
}

#[test]
fn query_present() {
    let t = with_plain(route("debug").query_matching("debug", Present));
    assert_routes(
        &t,
        &[
            (H, "/?debug", Some("debug")),
            (H, "/?debug=", Some("debug")),
            (H, "/?x=1&debug=0", Some("debug")),
            (H, "/?debugx=1", Some("plain")),
            (H, "/?x=debug", Some("plain")),
            (H, "/", Some("plain")),
        ],
    );
}

#[test]
fn query_any_occurrence_of_repeated_param() {
    let t = with_plain(route("tag").query("tag", "b"));
    assert_routes(
        &t,
        &[
            (H, "/?tag=a&tag=b", Some("tag")),
            (H, "/?tag=b&tag=a", Some("tag")),
            (H, "/?tag=a&tag=c", Some("plain")),
        ],
    );
}

#[test]
fn query_regex_matches_whole_value() {
    let t = with_plain(route("page").query_matching("page", regex("[0-9]+")));
    assert_routes(
        &t,
        &[
            (H, "/?page=12", Some("page")),
            (H, "/?page=12a", Some("plain")),
            (H, "/?page=", Some("plain")),
        ],
    );
}

#[test]
fn all_query_conditions_must_hold() {
    let t = with_plain(route("both").query("a", "1").query("b", "2"));
    assert_routes(
        &t,
        &[
            (H, "/?b=2&a=1", Some("both")),
            (H, "/?a=1", Some("plain")),
            (H, "/?a=1&b=3", Some("plain")),
        ],
    );
}

#[test]
fn every_kind_of_condition_must_hold() {
    let t = with_plain(
        route("all")
            .method(Method::PUT)
            .header("x-a", "1")
            .query("q", "1"),
    );
    let name = |r| matched(&t, &r);
    let ok = req(H, "/?q=1").method(Method::PUT).header("x-a", "1");
    assert_eq!(name(ok).as_deref(), Some("all"));
    let no_method = req(H, "/?q=1").header("x-a", "1");
    assert_eq!(name(no_method).as_deref(), Some("plain"));
    let no_header = req(H, "/?q=1").method(Method::PUT);
    assert_eq!(name(no_header).as_deref(), Some("plain"));
    let no_query = req(H, "/").method(Method::PUT).header("x-a", "1");
    assert_eq!(name(no_query).as_deref(), Some("plain"));
}

#[test]
fn cookie_condition_selects_route() {
    let t = with_plain(route("canary").cookie("canary", "always"));
    let name = |r| matched(&t, &r);
    assert_eq!(
        name(req(H, "/").header("cookie", "a=1; canary=always")).as_deref(),
        Some("canary")
    );
    assert_eq!(
        name(
            req(H, "/")
                .header("cookie", "a=1")
                .header("cookie", "canary=always")
        )
        .as_deref(),
        Some("canary"),
        "cookies split over several fields, as HTTP/2 sends them"
    );
    assert_eq!(
        name(req(H, "/").header("cookie", "canary=never")).as_deref(),
        Some("plain")
    );
    assert_eq!(
        name(req(H, "/").header("x-canary", "always")).as_deref(),
        Some("plain"),
        "a header of the same name is not a cookie"
    );
    assert_eq!(name(req(H, "/")).as_deref(), Some("plain"));
}

#[test]
fn cookie_and_header_conditions_all_hold() {
    let t = with_plain(
        route("both")
            .header("x-beta", "1")
            .cookie("canary", "always"),
    );
    let name = |r| matched(&t, &r);
    let both = req(H, "/")
        .header("x-beta", "1")
        .header("cookie", "canary=always");
    assert_eq!(name(both).as_deref(), Some("both"));
    let header_only = req(H, "/").header("x-beta", "1");
    assert_eq!(name(header_only).as_deref(), Some("plain"));
    let cookie_only = req(H, "/").header("cookie", "canary=always");
    assert_eq!(name(cookie_only).as_deref(), Some("plain"));
}
