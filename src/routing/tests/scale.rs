//! A table of realistic size still gives exact answers.

use http::Method;

use super::{assert_routes, matched, req, route, table};

const HOSTS: usize = 1000;
const ROUTES_PER_HOST: usize = 10;

/// Host `i` gets five one-element prefixes `/p0`..`/p4` and five
/// two-element ones `/p0/q5`..`/p4/q9`, named `h{i}-r{j}`; one any-host
/// route and one wildcard route sit behind them all.
fn big_table() -> super::RouteTable {
    let mut routes = Vec::with_capacity(HOSTS * ROUTES_PER_HOST + 2);
    routes.push(route("default").prefix("/"));
    routes.push(route("wild").host("*.example.com").prefix("/wild"));
    for i in 0..HOSTS {
        let host = format!("h{i}.example.com");
        for j in 0..ROUTES_PER_HOST {
            let path = if j < 5 {
                format!("/p{j}")
            } else {
                format!("/p{}/q{j}", j - 5)
            };
            let mut r = route(&format!("h{i}-r{j}")).host(&host).prefix(&path);
            // A sprinkling of conditioned routes, shadowing the plain ones.
            if j == 9 {
                r = r.method(Method::POST);
            }
            routes.push(r);
        }
    }
    table(routes)
}

#[test]
fn large_table_answers_correctly() {
    let t = big_table();
    assert_eq!(t.len(), HOSTS * ROUTES_PER_HOST + 2);
    for i in [0, 1, 7, 499, 500, 998, 999] {
        let host = format!("h{i}.example.com");
        let name = |j: usize| format!("h{i}-r{j}");
        let cases = [
            ("/p0", name(0)),
            ("/p3/x", name(3)),
            ("/p2/q7", name(7)),
            ("/p2/q7/deep/path", name(7)),
            ("/p2/qz", name(2)),
            // /p0/q5 is a deeper prefix of /p0 and wins over it.
            ("/p0/q5/", name(5)),
            // r9 needs POST; a GET falls back to the shorter prefix.
            ("/p4/q9", name(4)),
            ("/wild", "wild".to_owned()),
            ("/p5", "default".to_owned()),
            ("/", "default".to_owned()),
        ];
        for (path, want) in cases {
            assert_eq!(
                super::get(&t, &host, path).as_deref(),
                Some(want.as_str()),
                "GET http://{host}{path}"
            );
        }
        let post = req(&host, "/p4/q9").method(Method::POST);
        assert_eq!(matched(&t, &post), Some(name(9)));
    }
    assert_routes(
        &t,
        &[
            ("h1000.example.com", "/p0", Some("default")),
            ("h1000.example.com", "/wild/x", Some("wild")),
            ("h1.h2.example.com", "/wild", Some("default")),
            ("other.test", "/p1", Some("default")),
        ],
    );
}

/// Nodes with many children look them up by hash; every child, and every
/// path below one, must still be found.
#[test]
fn wide_nodes_find_every_child() {
    const WIDE: usize = 200;
    let host = "wide.example.com";
    let mut routes = vec![route("default").host(host).prefix("/")];
    for i in 0..WIDE {
        routes.push(route(&format!("p{i}")).host(host).prefix(&format!("/p{i}")));
        routes.push(
            route(&format!("api{i}"))
                .host(host)
                .prefix(&format!("/api/v{i}")),
        );
        routes.push(
            route(&format!("deep{i}"))
                .host(host)
                .prefix(&format!("/api/v{i}/x/y")),
        );
        routes.push(route(&format!("x{i}")).host(host).exact(&format!("/x{i}")));
    }
    let t = table(routes);
    for i in 0..WIDE {
        let name = |kind: &str| Some(format!("{kind}{i}"));
        assert_eq!(super::get(&t, host, &format!("/p{i}/more")), name("p"));
        assert_eq!(super::get(&t, host, &format!("/api/v{i}")), name("api"));
        assert_eq!(super::get(&t, host, &format!("/api/v{i}/x")), name("api"));
        assert_eq!(
            super::get(&t, host, &format!("/api/v{i}/x/y/z")),
            name("deep")
        );
        assert_eq!(super::get(&t, host, &format!("/x{i}")), name("x"));
        assert_eq!(
            super::get(&t, host, &format!("/x{i}/")).as_deref(),
            Some("default")
        );
    }
    assert_routes(
        &t,
        &[
            (host, "/p200", Some("default")),
            (host, "/api/v200", Some("default")),
            (host, "/x", Some("default")),
        ],
    );
}
