//! Compiled routes and the immutable table the proxy serves from.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

use foldhash::{HashMap, HashMapExt};
use http::Method;

use super::matcher::{CookieCond, HeaderCond, QueryCond, RequestView};
use super::pick::RetryBudget;
use super::protocol::BackendProtocol;
use super::resilience::{Affinity, LoadBalancer, RetryPolicy};
use super::router::Router;
use super::spec::{RouteSpec, TableSpec, Timeouts, UpstreamKey};
use super::tls::CertStore;
use super::upstream::{PickInput, Upstream, UpstreamRegistry};
use crate::metrics::{PluginMetrics, RouteMetrics};

/// Longest weighted schedule kept; larger weight sums are scaled down.
const MAX_SCHEDULE: u32 = 1000;

/// A backend of a compiled route.
#[derive(Debug)]
pub struct Backend {
    pub upstream: Arc<Upstream>,
    pub weight: u32,
    /// How to speak to it; plain HTTP/1.1 when absent.
    pub protocol: Option<Arc<BackendProtocol>>,
}

/// One compiled route.
#[derive(Debug)]
pub struct Route {
    pub name: Arc<str>,
    pub source: Arc<str>,
    methods: Box<[Method]>,
    headers: Box<[HeaderCond]>,
    query: Box<[QueryCond]>,
    cookies: Box<[CookieCond]>,
    pub(super) backends: Box<[Backend]>,
    /// Backend indexes in smooth weighted round-robin order.
    pub(super) schedule: Cow<'static, [u16]>,
    /// Turns taken: one per endpoint choice, retries included.
    pub(super) cursor: AtomicUsize,
    pub timeouts: Timeouts,
    pub websocket: bool,
    pub load_balancer: LoadBalancer,
    pub affinity: Option<Affinity>,
    pub retries: RetryPolicy,
    pub(super) budget: RetryBudget,
    /// Redirect status for plain-HTTP requests, when they go to HTTPS.
    pub https_redirect: Option<http::StatusCode>,
    pub metrics: RouteMetrics,
    /// Plugins in execution order.
    pub plugins: Box<[Arc<dyn crate::plugins::Plugin>]>,
    /// The cost and decisions of each plugin, in the same order.
    pub plugin_metrics: Box<[PluginMetrics]>,
}

impl Route {
    fn compile(spec: &RouteSpec, upstreams: &mut Upstreams<'_>) -> Route {
        let backends: Vec<Backend> = spec
            .backends
            .iter()
            .map(|b| Backend {
                upstream: upstreams
                    .get(&b.upstream)
                    .unwrap_or_else(|| Arc::new(Upstream::new(b.upstream.clone(), Vec::new()))),
                weight: b.weight,
                protocol: b.protocol.clone(),
            })
            .collect();
        // A single backend, the common case, takes every turn or none:
        // its schedule needs no allocation.
        let schedule = match backends.as_slice() {
            [b] if b.weight > 0 => Cow::Borrowed(&[0][..]),
            [_] => Cow::Borrowed(&[][..]),
            _ => Cow::Owned(smooth_schedule(
                &backends.iter().map(|b| b.weight).collect::<Vec<_>>(),
            )),
        };
        Route {
            name: spec.name.clone(),
            source: spec.source.clone(),
            methods: spec.methods.clone().into_boxed_slice(),
            headers: spec.headers.iter().map(HeaderCond::new).collect(),
            query: spec.query.iter().map(QueryCond::new).collect(),
            cookies: spec.cookies.iter().map(CookieCond::new).collect(),
            schedule,
            backends: backends.into_boxed_slice(),
            cursor: AtomicUsize::new(0),
            timeouts: spec.timeouts,
            websocket: spec.websocket,
            load_balancer: spec.load_balancer.clone(),
            affinity: spec.affinity.clone(),
            retries: spec.retries.clone(),
            budget: RetryBudget::default(),
            https_redirect: spec
                .https_redirect
                .and_then(|c| http::StatusCode::from_u16(c).ok()),
            metrics: RouteMetrics::new(spec.name.clone()),
            plugin_metrics: spec
                .plugins
                .iter()
                .map(|p| PluginMetrics::new(spec.name.clone(), p.name()))
                .collect(),
            plugins: spec.plugins.clone().into_boxed_slice(),
        }
    }

    /// Checks the conditions other than host and path.
    pub fn conditions_match(&self, req: &RequestView<'_>) -> bool {
        (self.methods.is_empty() || self.methods.contains(req.method))
            && self.headers.iter().all(|h| h.matches(req.headers))
            && self.query.iter().all(|q| q.matches(req.query))
            && self.cookies.iter().all(|c| c.matches(req.headers))
    }

    pub fn backends(&self) -> &[Backend] {
        &self.backends
    }

    /// Chooses a backend and an endpoint as [`Self::choose`] does for a
    /// request without hash key, cookie or earlier attempts.
    pub fn pick(&self) -> Option<(&Backend, SocketAddr)> {
        let input = PickInput {
            now: std::time::Instant::now(),
            hash: 0,
            exclude: &[],
        };
        self.choose(&input, None).map(|(b, e)| (b, e.addr()))
    }
}

/// Backend indexes ordered by smooth weighted round robin (the sequence
/// nginx produces), so that a 90/10 split interleaves instead of sending
/// ninety requests in a row to one side.
fn smooth_schedule(weights: &[u32]) -> Vec<u16> {
    let mut w: Vec<u64> = weights.iter().map(|&w| u64::from(w)).collect();
    let g = w.iter().copied().filter(|&x| x > 0).fold(0, gcd);
    if g == 0 {
        return Vec::new();
    }
    w.iter_mut().for_each(|x| *x /= g);
    let total: u64 = w.iter().sum();
    if total > u64::from(MAX_SCHEDULE) {
        // Scale down, keeping every non-zero weight at least 1.
        w.iter_mut().for_each(|x| {
            if *x > 0 {
                *x = (*x * u64::from(MAX_SCHEDULE) / total).max(1);
            }
        });
    }
    let total: i64 = w.iter().map(|&x| x as i64).sum();
    let mut current = vec![0i64; w.len()];
    let mut out = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let mut best = 0;
        for i in 0..w.len() {
            current[i] += w[i] as i64;
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total;
        out.push(best as u16);
    }
    out
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// The upstreams of one build, by key.
///
/// Translation gives every backend a clone of its upstream's key, so a
/// lookup by the key's identity (its address) nearly always succeeds
/// without reading or hashing the text. A key made any other way is found
/// by text, in a map built on the first such lookup.
struct Upstreams<'s> {
    by_identity: HashMap<usize, (&'s UpstreamKey, Arc<Upstream>)>,
    by_text: Option<HashMap<&'s UpstreamKey, Arc<Upstream>>>,
}

impl Upstreams<'_> {
    fn get(&mut self, key: &UpstreamKey) -> Option<Arc<Upstream>> {
        if let Some((_, up)) = self.by_identity.get(&key.identity()) {
            return Some(up.clone());
        }
        let by_identity = &self.by_identity;
        self.by_text
            .get_or_insert_with(|| {
                by_identity
                    .values()
                    .map(|(k, up)| (*k, up.clone()))
                    .collect()
            })
            .get(key)
            .cloned()
    }
}

/// An immutable route table: the router and its compiled routes.
#[derive(Debug, Default)]
pub struct RouteTable {
    router: Router,
    routes: Box<[Arc<Route>]>,
    certs: CertStore,
}

impl RouteTable {
    /// Compiles `spec`, linking its backends to the registry's upstreams
    /// (which are created or updated as needed).
    pub fn build(spec: &TableSpec, registry: &UpstreamRegistry) -> RouteTable {
        let mut upstreams = Upstreams {
            by_identity: HashMap::with_capacity(spec.upstreams.len()),
            by_text: None,
        };
        registry.sync_each(&spec.upstreams, |key, up| {
            upstreams
                .by_identity
                .insert(key.identity(), (key, up.clone()));
        });
        let routes = spec
            .routes
            .iter()
            .map(|r| Arc::new(Route::compile(r, &mut upstreams)))
            .collect();
        RouteTable {
            router: Router::build(&spec.routes),
            routes,
            certs: CertStore::build(&spec.tls, &spec.client_auth),
        }
    }

    /// The server certificates of this table, by SNI.
    pub fn certs(&self) -> &CertStore {
        &self.certs
    }

    /// The route for a request, if any.
    pub fn find(&self, req: &RequestView<'_>) -> Option<&Arc<Route>> {
        self.router.find(req, &self.routes).map(|i| &self.routes[i])
    }

    pub fn routes(&self) -> &[Arc<Route>] {
        &self.routes
    }

    pub fn len(&self) -> usize {
        self.routes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_interleaves_by_weight() {
        assert_eq!(smooth_schedule(&[5, 1, 1]), [0, 0, 1, 0, 2, 0, 0]);
        assert_eq!(smooth_schedule(&[1, 1]), [0, 1]);
        assert_eq!(smooth_schedule(&[7]), [0]);
        assert!(smooth_schedule(&[0]).is_empty());
        assert_eq!(smooth_schedule(&[90, 10]).len(), 10);
        assert_eq!(smooth_schedule(&[0, 3]), [1]);
        assert!(smooth_schedule(&[0, 0]).is_empty());
    }

    #[test]
    fn schedule_caps_large_weights() {
        let s = smooth_schedule(&[1_000_000, 999_999, 1]);
        assert!(s.len() <= MAX_SCHEDULE as usize + 3);
        assert!(s.contains(&2), "small weights keep a share");
        let zeros = s.iter().filter(|&&i| i == 0).count();
        let ones = s.iter().filter(|&&i| i == 1).count();
        assert!(zeros.abs_diff(ones) <= 2);
    }
}
