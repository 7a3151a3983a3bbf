//! Behaviour tests for the route table: one group per matcher, then the
//! precedence rules of [`crate::translate`], backend choice and scale.
//!
//! Routes are written with the small builder below rather than through
//! translation, so that each test states exactly the spec it depends on.

mod backends;
mod conditions;
mod explain;
mod hosts;
mod paths;
mod precedence;
mod scale;

use std::collections::BTreeMap;
use std::net::SocketAddr;

use http::{HeaderMap, HeaderName, HeaderValue, Method};

use super::{
    BackendSpec, HostMatch, PathSpec, Pattern, RequestView, RouteSpec, RouteTable, TableSpec,
    Timeouts, UpstreamKey, UpstreamRegistry, UpstreamSpec, ValueMatcher, ValueSpec, normalize_path,
};

/// Builds one `RouteSpec`. A route given no path serves every path, so
/// tests about hosts or conditions need not repeat `.prefix("/")`.
struct RouteBuilder(RouteSpec);

fn route(name: &str) -> RouteBuilder {
    RouteBuilder(RouteSpec {
        name: name.into(),
        source: format!("ApiRoute test/{name}").into(),
        hosts: Vec::new(),
        paths: Vec::new(),
        methods: Vec::new(),
        headers: Vec::new(),
        query: Vec::new(),
        cookies: Vec::new(),
        priority: 0,
        fallback: false,
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
    })
}

impl RouteBuilder {
    /// `*.example.com` becomes a wildcard, `**.example.com` a Gateway API
    /// wildcard (any number of labels), anything else an exact host.
    fn host(mut self, host: &str) -> Self {
        let m = if let Some(suffix) = host.strip_prefix("**.") {
            HostMatch::Suffix(suffix.to_owned())
        } else if let Some(suffix) = host.strip_prefix("*.") {
            HostMatch::Wildcard(suffix.to_owned())
        } else {
            HostMatch::Exact(host.to_owned())
        };
        self.0.hosts.push(m);
        self
    }

    fn exact(mut self, path: &str) -> Self {
        self.0.paths.push(PathSpec::Exact(path.to_owned()));
        self
    }

    fn prefix(mut self, path: &str) -> Self {
        self.0.paths.push(PathSpec::Prefix(path.to_owned()));
        self
    }

    fn regex(mut self, pattern: &str) -> Self {
        let p = Pattern::new(pattern).expect("test pattern compiles");
        self.0.paths.push(PathSpec::RegularExpression(p));
        self
    }

    fn method(mut self, method: Method) -> Self {
        self.0.methods.push(method);
        self
    }

    fn header(mut self, name: &str, value: &str) -> Self {
        self.0.headers.push(value_spec(name, exact(value)));
        self
    }

    fn header_matching(mut self, name: &str, matcher: ValueMatcher) -> Self {
        self.0.headers.push(value_spec(name, matcher));
        self
    }

    fn query(mut self, name: &str, value: &str) -> Self {
        self.0.query.push(value_spec(name, exact(value)));
        self
    }

    fn query_matching(mut self, name: &str, matcher: ValueMatcher) -> Self {
        self.0.query.push(value_spec(name, matcher));
        self
    }

    fn cookie(mut self, name: &str, value: &str) -> Self {
        self.0.cookies.push(value_spec(name, exact(value)));
        self
    }

    fn priority(mut self, priority: i32) -> Self {
        self.0.priority = priority;
        self
    }

    fn fallback(mut self) -> Self {
        self.0.fallback = true;
        self
    }

    fn backend(mut self, upstream: &UpstreamKey, weight: u32) -> Self {
        self.0.backends.push(BackendSpec {
            upstream: upstream.clone(),
            weight,
            protocol: None,
        });
        self
    }

    fn spec(mut self) -> RouteSpec {
        if self.0.paths.is_empty() {
            self.0.paths.push(PathSpec::Prefix("/".to_owned()));
        }
        self.0
    }
}

fn value_spec(name: &str, matcher: ValueMatcher) -> ValueSpec {
    ValueSpec {
        name: name.to_owned(),
        matcher,
    }
}

fn exact(value: &str) -> ValueMatcher {
    ValueMatcher::Exact(value.to_owned())
}

fn regex(pattern: &str) -> ValueMatcher {
    ValueMatcher::RegularExpression(Pattern::new(pattern).expect("test pattern compiles"))
}

/// A table of `routes` (in declaration order) with no upstreams.
fn table(routes: Vec<RouteBuilder>) -> RouteTable {
    table_with(routes, &[], &UpstreamRegistry::new())
}

/// A table whose upstreams are registered in `registry` with the given
/// endpoints.
fn table_with(
    routes: Vec<RouteBuilder>,
    upstreams: &[(&UpstreamKey, Vec<SocketAddr>)],
    registry: &UpstreamRegistry,
) -> RouteTable {
    let upstreams: BTreeMap<UpstreamKey, UpstreamSpec> = upstreams
        .iter()
        .map(|(k, eps)| {
            let spec = UpstreamSpec::ready(eps.clone());
            ((*k).clone(), spec)
        })
        .collect();
    let spec = TableSpec {
        routes: routes.into_iter().map(RouteBuilder::spec).collect(),
        upstreams,
        tls: Vec::new(),
        client_auth: Vec::new(),
        listeners: Vec::new(),
        ticket_keys: None,
    };
    RouteTable::build(&spec, registry)
}

/// An owned request that lends out a [`RequestView`].
struct Req {
    host: String,
    path: String,
    query: Option<String>,
    method: Method,
    headers: HeaderMap,
    port: u16,
}

/// A GET for `target` (path plus optional `?query`) on `host`.
fn req(host: &str, target: &str) -> Req {
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q.to_owned())),
        None => (target, None),
    };
    Req {
        host: host.to_owned(),
        path: normalize_path(path, crate::routing::EncodedSlashes::Keep)
            .unwrap()
            .into_owned(),
        query,
        method: Method::GET,
        headers: HeaderMap::new(),
        port: 0,
    }
}

impl Req {
    fn method(mut self, method: Method) -> Self {
        self.method = method;
        self
    }

    /// Appends, so calling twice gives a repeated header.
    fn header(mut self, name: &'static str, value: &'static str) -> Self {
        self.headers.append(
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        );
        self
    }

    fn view(&self) -> RequestView<'_> {
        RequestView {
            host: &self.host,
            path: &self.path,
            query: self.query.as_deref(),
            method: &self.method,
            headers: &self.headers,
            port: self.port,
        }
    }
}

/// Name of the route `table` picks for `r`, if any. Every routing test
/// goes through here, so each also checks that the explanation of the
/// decision names the same route (see [`super::explain`]).
fn matched(table: &RouteTable, r: &Req) -> Option<String> {
    let found = table.find(&r.view()).map(|route| route.name.to_string());
    let explained = table.explain(&r.view());
    assert_eq!(
        explained.route.as_deref(),
        found.as_deref(),
        "explain disagrees with find for {} {}{}: {explained:#?}",
        r.method,
        r.host,
        r.path
    );
    let index = explained.winner.map(|i| table.routes()[i].name.to_string());
    assert_eq!(index, found, "the explanation's route index");
    let chosen = explained
        .candidates
        .iter()
        .filter(|c| c.outcome == super::Outcome::Chosen)
        .count();
    assert_eq!(chosen, usize::from(found.is_some()), "{explained:#?}");
    found
}

/// Shorthand for a plain GET with no headers.
fn get(table: &RouteTable, host: &str, target: &str) -> Option<String> {
    matched(table, &req(host, target))
}

/// Asserts, for each `(host, target, expected route)`, what a GET finds.
#[track_caller]
fn assert_routes(table: &RouteTable, cases: &[(&str, &str, Option<&str>)]) {
    for &(host, target, want) in cases {
        assert_eq!(
            get(table, host, target).as_deref(),
            want,
            "GET http://{host}{target}"
        );
    }
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, 1], port))
}
