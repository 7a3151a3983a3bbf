//! The router against a naive reference: a small fuzzer-made table and
//! requests, each looked up by `RouteTable::find` and by a linear scan
//! that applies the precedence rules as the translate module documents
//! them. Any difference is a routing bug.
//!
//! The reference, per request:
//! 1. host groups in order — routes naming the exact host, routes with a
//!    wildcard covering it by exactly one label, routes naming no host —
//!    and the first group with a matching (route, path) pair decides;
//! 2. within the group, the matching pair with the smallest key wins:
//!    not a fallback first, then higher priority, then Exact before
//!    Prefix before regular expression, then more path elements, then
//!    longer path (or pattern), then having a method condition, then more
//!    header, query and cookie conditions, then declaration order.
#![no_main]

use std::cmp::Reverse;
use std::sync::OnceLock;

use arbitrary::Arbitrary;
use http::Method;
use http::header::{COOKIE, HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;
use sluicegate::routing::{
    EncodedSlashes, HostMatch, PathSpec, Pattern, RequestView, RouteSpec, RouteTable, TableSpec,
    Timeouts, UpstreamRegistry, ValueMatcher, ValueSpec, normalize_host, normalize_path,
};

const HOSTS: &[&str] = &[
    "a.test",
    "b.a.test",
    "x.b.a.test",
    "example.com",
    "shop.example.com",
];
const WILDCARDS: &[&str] = &["a.test", "b.a.test", "example.com", "test"];
const REQUEST_HOSTS: &[&str] = &[
    "a.test",
    "b.a.test",
    "x.b.a.test",
    "c.a.test",
    "example.com",
    "shop.example.com",
    "www.example.com",
    "A.Test:8080",
    "a.test.",
    ".a.test",
    "y.x.b.a.test",
    "other.org",
    "",
    "test",
    "[::1]:443",
];
/// Path elements; `.`, `..` and escapes make route paths that no
/// normalized request path equals, which both sides must agree on.
const SEGS: &[&str] = &[
    "a", "b", "api", "v1", "A", "a.b", "%2F", "~", ".", "..", "%41", "ab",
];
const REGEXES: &[&str] = &[
    "/a.*",
    "/api/v[0-9]+",
    "/(a|b)/.*",
    ".*",
    "/a",
    "/[a-z]+",
    "/api(/.*)?",
    "/A|/b",
    "/a/b/?",
];
const METHODS: [Method; 5] = [
    Method::GET,
    Method::POST,
    Method::PUT,
    Method::DELETE,
    Method::HEAD,
];
const HEADER_NAMES: &[&str] = &["x-a", "x-b", "x-canary"];
const QUERY_NAMES: &[&str] = &["q", "v", "a b", "x"];
const COOKIE_NAMES: &[&str] = &["s", "c", "S"];
const VALUES: &[&str] = &["1", "2", "", "a b", "\u{e9}", "always", "1 "];
const VALUE_REGEXES: &[&str] = &["[0-9]", "a.*", ".*", "1|2", "[^ ]+"];

fn pick<'a, T>(list: &'a [T], i: u8) -> &'a T {
    &list[usize::from(i) % list.len()]
}

/// Compiled once: compiling a pattern costs more than a whole lookup.
fn patterns(
    sources: &'static [&'static str],
    cell: &'static OnceLock<Vec<Pattern>>,
) -> &'static [Pattern] {
    cell.get_or_init(|| {
        sources
            .iter()
            .map(|s| Pattern::new(s).expect("pattern"))
            .collect()
    })
}

fn path_pattern(i: u8) -> Pattern {
    static CELL: OnceLock<Vec<Pattern>> = OnceLock::new();
    pick(patterns(REGEXES, &CELL), i).clone()
}

fn value_pattern(i: u8) -> Pattern {
    static CELL: OnceLock<Vec<Pattern>> = OnceLock::new();
    pick(patterns(VALUE_REGEXES, &CELL), i).clone()
}

#[derive(Arbitrary, Debug)]
enum Host {
    Exact(u8),
    Wildcard(u8),
}

#[derive(Arbitrary, Debug)]
enum Path {
    Exact(Vec<u8>, bool),
    Prefix(Vec<u8>, bool),
    Regex(u8),
}

#[derive(Arbitrary, Debug)]
enum Matcher {
    Exact(u8),
    Regex(u8),
    Present,
}

#[derive(Arbitrary, Debug)]
struct Route {
    hosts: Vec<Host>,
    paths: Vec<Path>,
    methods: u8,
    headers: Vec<(u8, Matcher)>,
    query: Vec<(u8, Matcher)>,
    cookies: Vec<(u8, Matcher)>,
    priority: i8,
    fallback: bool,
}

#[derive(Arbitrary, Debug)]
struct Request {
    /// A route to aim at: the request then starts from that route's host,
    /// path, method and conditions (so that routes actually compete), and
    /// the fields below add to it.
    aim: Option<u8>,
    host: u8,
    path: Vec<u8>,
    trailing_slash: bool,
    method: u8,
    headers: Vec<(u8, u8)>,
    /// Pairs of (name, value, spelling): plain, `+` or `%20` for spaces,
    /// or a name without `=`.
    query: Option<Vec<(u8, u8, u8)>>,
    cookies: Vec<Vec<(u8, u8)>>,
}

#[derive(Arbitrary, Debug)]
struct Input {
    routes: Vec<Route>,
    requests: Vec<Request>,
}

fn literal(segs: &[u8], trailing: bool) -> String {
    let mut p = String::new();
    for s in segs.iter().take(5) {
        p.push('/');
        p.push_str(pick(SEGS, *s));
    }
    if trailing || p.is_empty() {
        p.push('/');
    }
    p
}

fn matcher(m: &Matcher) -> ValueMatcher {
    match m {
        Matcher::Exact(v) => ValueMatcher::Exact((*pick(VALUES, *v)).to_owned()),
        Matcher::Regex(r) => ValueMatcher::RegularExpression(value_pattern(*r)),
        Matcher::Present => ValueMatcher::Present,
    }
}

fn values(list: &[(u8, Matcher)], names: &[&str]) -> Vec<ValueSpec> {
    list.iter()
        .take(3)
        .map(|(n, m)| ValueSpec {
            name: (*pick(names, *n)).to_owned(),
            matcher: matcher(m),
        })
        .collect()
}

fn spec(i: usize, r: &Route) -> RouteSpec {
    RouteSpec {
        name: format!("r{i}").into(),
        source: format!("ApiRoute fuzz/r{i}").into(),
        hosts: r
            .hosts
            .iter()
            .take(3)
            .map(|h| match h {
                Host::Exact(i) => HostMatch::Exact((*pick(HOSTS, *i)).to_owned()),
                Host::Wildcard(i) => HostMatch::Wildcard((*pick(WILDCARDS, *i)).to_owned()),
            })
            .collect(),
        paths: r
            .paths
            .iter()
            .take(3)
            .map(|p| match p {
                Path::Exact(s, t) => PathSpec::Exact(literal(s, *t)),
                Path::Prefix(s, t) => PathSpec::Prefix(literal(s, *t)),
                Path::Regex(i) => PathSpec::RegularExpression(path_pattern(*i)),
            })
            .collect(),
        methods: METHODS
            .iter()
            .enumerate()
            .filter(|(i, _)| r.methods & (1 << i) != 0)
            .map(|(_, m)| m.clone())
            .collect(),
        headers: values(&r.headers, HEADER_NAMES),
        query: values(&r.query, QUERY_NAMES),
        cookies: values(&r.cookies, COOKIE_NAMES),
        priority: i32::from(r.priority % 4),
        fallback: r.fallback,
        backends: Vec::new(),
        timeouts: Timeouts::default(),
        websocket: false,
        load_balancer: Default::default(),
        affinity: None,
        retries: Default::default(),
        https_redirect: None,
        plugins: Vec::new(),
        listeners: Vec::new(),
        mirrors: Vec::new(),
        cache: None,
        ai: None,
    }
}

// ---- the reference matcher ----

fn elements(p: &str) -> Vec<&str> {
    p.split('/').filter(|s| !s.is_empty()).collect()
}

fn path_matches(p: &PathSpec, path: &str) -> bool {
    match p {
        PathSpec::Exact(e) => e == path,
        PathSpec::Prefix(pre) => {
            let (pre, path) = (elements(pre), elements(path));
            path.len() >= pre.len() && pre[..] == path[..pre.len()]
        }
        PathSpec::RegularExpression(re) => re.is_match(path),
    }
}

fn value_ok(m: &ValueMatcher, v: &str) -> bool {
    match m {
        ValueMatcher::Present => true,
        ValueMatcher::Exact(e) => e == v,
        ValueMatcher::RegularExpression(re) => re.is_match(v),
    }
}

/// `application/x-www-form-urlencoded` decoding, written out plainly.
fn form(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'+' {
            out.push(b' ');
        } else if b[i] == b'%'
            && i + 2 < b.len()
            && b[i + 1].is_ascii_hexdigit()
            && b[i + 2].is_ascii_hexdigit()
        {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).expect("ascii");
            out.push(u8::from_str_radix(hex, 16).expect("hex"));
            i += 2;
        } else {
            out.push(b[i]);
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn conditions_hold(r: &RouteSpec, req: &RequestView<'_>) -> bool {
    if !r.methods.is_empty() && !r.methods.contains(req.method) {
        return false;
    }
    for h in &r.headers {
        let ok = req.headers.iter().any(|(name, value)| {
            name.as_str().eq_ignore_ascii_case(&h.name)
                && match &h.matcher {
                    ValueMatcher::Present => true,
                    m => std::str::from_utf8(value.as_bytes()).is_ok_and(|v| value_ok(m, v)),
                }
        });
        if !ok {
            return false;
        }
    }
    for q in &r.query {
        let ok = req.query.is_some_and(|query| {
            query.split('&').any(|pair| {
                let (k, v) = match pair.find('=') {
                    Some(i) => (&pair[..i], &pair[i + 1..]),
                    None => (pair, ""),
                };
                form(k) == q.name && value_ok(&q.matcher, &form(v))
            })
        });
        if !ok {
            return false;
        }
    }
    for c in &r.cookies {
        let ok = req.headers.get_all(COOKIE).iter().any(|field| {
            field.as_bytes().split(|&b| b == b';').any(|pair| {
                let Some(eq) = pair.iter().position(|&b| b == b'=') else {
                    return false;
                };
                let name = pair[..eq].trim_ascii();
                let value = pair[eq + 1..].trim_ascii();
                !name.is_empty()
                    && name == c.name.as_bytes()
                    && match &c.matcher {
                        ValueMatcher::Present => true,
                        m => std::str::from_utf8(value).is_ok_and(|v| value_ok(m, v)),
                    }
            })
        });
        if !ok {
            return false;
        }
    }
    true
}

type Key = (
    bool,
    Reverse<i32>,
    u8,
    Reverse<usize>,
    Reverse<usize>,
    Reverse<bool>,
    Reverse<usize>,
    Reverse<usize>,
    Reverse<usize>,
    usize,
    usize,
);

fn key(r: &RouteSpec, p: &PathSpec, route: usize, path: usize) -> Key {
    let (kind, elems, len) = match p {
        PathSpec::Exact(e) => (0, elements(e).len(), e.len()),
        PathSpec::Prefix(e) => (1, elements(e).len(), e.trim_end_matches('/').len()),
        PathSpec::RegularExpression(re) => (2, 0, re.as_str().len()),
    };
    (
        r.fallback,
        Reverse(r.priority),
        kind,
        Reverse(elems),
        Reverse(len),
        Reverse(!r.methods.is_empty()),
        Reverse(r.headers.len()),
        Reverse(r.query.len()),
        Reverse(r.cookies.len()),
        route,
        path,
    )
}

fn reference(routes: &[RouteSpec], req: &RequestView<'_>) -> Option<usize> {
    let exact = |r: &RouteSpec| {
        r.hosts
            .iter()
            .any(|h| matches!(h, HostMatch::Exact(e) if e == req.host))
    };
    let wildcard = |r: &RouteSpec| {
        r.hosts.iter().any(|h| match h {
            HostMatch::Wildcard(s) => req
                .host
                .strip_suffix(s.as_str())
                .and_then(|l| l.strip_suffix('.'))
                .is_some_and(|label| !label.is_empty() && !label.contains('.')),
            // The Gateway API's wildcards: not generated here.
            HostMatch::Exact(_) | HostMatch::Suffix(_) => false,
        })
    };
    let any = |r: &RouteSpec| r.hosts.is_empty();
    let groups: [&dyn Fn(&RouteSpec) -> bool; 3] = [&exact, &wildcard, &any];
    for in_group in groups {
        let best = routes
            .iter()
            .enumerate()
            .filter(|(_, r)| in_group(r) && conditions_hold(r, req))
            .flat_map(|(i, r)| {
                r.paths
                    .iter()
                    .enumerate()
                    .filter(|(_, p)| path_matches(p, req.path))
                    .map(move |(j, p)| (key(r, p, i, j), i))
            })
            .min();
        if let Some((_, i)) = best {
            return Some(i);
        }
    }
    None
}

/// Encodes a query name or value: as is, spaces as `+`, or escaped.
fn encode(s: &str, style: u8) -> String {
    match style % 3 {
        0 => s.to_owned(),
        1 => s.replace(' ', "+"),
        _ => s.replace(' ', "%20").replace('\u{e9}', "%C3%A9"),
    }
}

fn query_text(pairs: &[(u8, u8, u8)]) -> Vec<String> {
    pairs
        .iter()
        .take(4)
        .map(|(k, v, style)| {
            let k = encode(pick(QUERY_NAMES, *k), *style);
            if style % 4 == 3 {
                k
            } else {
                format!("{k}={}", encode(pick(VALUES, *v), *style))
            }
        })
        .collect()
}

/// A value that satisfies `m`.
fn satisfying(m: &ValueMatcher) -> &'static str {
    match m {
        ValueMatcher::Exact(v) => VALUES
            .iter()
            .find(|x| **x == v.as_str())
            .copied()
            .unwrap_or("1"),
        ValueMatcher::Present => "1",
        ValueMatcher::RegularExpression(re) => VALUES
            .iter()
            .find(|v| re.is_match(v))
            .copied()
            .unwrap_or("1"),
    }
}

/// An owned request.
struct Req {
    host: String,
    path: String,
    query: Option<String>,
    method: Method,
    headers: HeaderMap,
}

fn request(r: &Request, routes: &[RouteSpec]) -> Req {
    let aim = r
        .aim
        .and_then(|i| (!routes.is_empty()).then(|| &routes[usize::from(i) % routes.len()]));
    let mut host = (*pick(REQUEST_HOSTS, r.host)).to_owned();
    let mut path = literal(&r.path, r.trailing_slash);
    let mut method = pick(&METHODS, r.method).clone();
    let mut headers = HeaderMap::new();
    let mut query = r.query.as_deref().map(query_text);
    let mut cookies = Vec::new();
    if let Some(route) = aim {
        if !route.hosts.is_empty() {
            host = match pick(&route.hosts, r.host) {
                HostMatch::Exact(h) => h.clone(),
                HostMatch::Wildcard(s) | HostMatch::Suffix(s) => {
                    format!("{}.{s}", if r.host % 2 == 0 { "w" } else { "c" })
                }
            };
        }
        if !route.paths.is_empty() {
            let extra = path.clone();
            match &route.paths[usize::from(r.host) % route.paths.len()] {
                PathSpec::Exact(p) => path = p.clone(),
                PathSpec::Prefix(p) => {
                    path = format!(
                        "{}{}",
                        p.trim_end_matches('/'),
                        if r.trailing_slash { extra.as_str() } else { "" }
                    );
                    if path.is_empty() {
                        path.push('/');
                    }
                }
                PathSpec::RegularExpression(_) => {}
            }
        }
        if !route.methods.is_empty() {
            method = pick(&route.methods, r.method).clone();
        }
        for h in &route.headers {
            let name = HeaderName::from_bytes(h.name.as_bytes()).expect("header name");
            let value =
                HeaderValue::from_bytes(satisfying(&h.matcher).as_bytes()).expect("header value");
            headers.append(name, value);
        }
        let q = query.get_or_insert_with(Vec::new);
        for c in &route.query {
            q.push(format!(
                "{}={}",
                encode(&c.name, r.method),
                encode(satisfying(&c.matcher), r.method)
            ));
        }
        for c in &route.cookies {
            cookies.push(format!("{}={}", c.name, satisfying(&c.matcher)));
        }
    }
    for (n, v) in r.headers.iter().take(4) {
        let value = HeaderValue::from_bytes(pick(VALUES, *v).as_bytes()).expect("header value");
        headers.append(HeaderName::from_static(pick(HEADER_NAMES, *n)), value);
    }
    if !cookies.is_empty() {
        headers.append(
            COOKIE,
            HeaderValue::from_bytes(cookies.join("; ").as_bytes()).expect("cookie value"),
        );
    }
    for field in r.cookies.iter().take(3) {
        let text = field
            .iter()
            .take(4)
            .map(|(n, v)| format!("{}={}", pick(COOKIE_NAMES, *n), pick(VALUES, *v)))
            .collect::<Vec<_>>()
            .join("; ");
        headers.append(
            COOKIE,
            HeaderValue::from_bytes(text.as_bytes()).expect("cookie value"),
        );
    }
    Req {
        host,
        path,
        query: query.map(|q| q.join("&")),
        method,
        headers,
    }
}

fuzz_target!(|input: Input| {
    let routes: Vec<RouteSpec> = input
        .routes
        .iter()
        .take(12)
        .enumerate()
        .map(|(i, r)| spec(i, r))
        .collect();
    let table_spec = TableSpec {
        routes,
        ..TableSpec::default()
    };
    let table = RouteTable::build(&table_spec, &UpstreamRegistry::new());
    for r in input.requests.iter().take(8) {
        let req = request(r, &table_spec.routes);
        let mut buf = [0u8; 256];
        let Some(host) = normalize_host(&req.host, &mut buf) else {
            continue;
        };
        let Ok(path) = normalize_path(&req.path, EncodedSlashes::Keep) else {
            continue;
        };
        let view = RequestView {
            host,
            path: &path,
            query: req.query.as_deref(),
            method: &req.method,
            headers: &req.headers,
            port: 0,
        };
        let got = table.find(&view).map(|route| route.name.to_string());
        let want =
            reference(&table_spec.routes, &view).map(|i| table_spec.routes[i].name.to_string());
        assert_eq!(
            got, want,
            "router and reference disagree for {} {host}{path}?{:?} headers {:?}\nroutes: {:#?}",
            view.method, view.query, view.headers, table_spec.routes
        );
    }
});
