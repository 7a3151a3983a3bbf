//! Compiled routes and the immutable table the proxy serves from.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

use foldhash::{HashMap, HashMapExt};
use http::Method;

use super::listeners::SlotIndex;
use super::matcher::{CookieCond, HeaderCond, QueryCond, RequestView};
use super::pick::RetryBudget;
use super::protocol::BackendProtocol;
use super::resilience::{Affinity, LoadBalancer, RetryPolicy};
use super::router::Router;
use super::spec::{RouteSpec, TableSpec, Timeouts, UpstreamKey};
use super::tickets::TicketKeySet;
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
    pub(super) methods: Box<[Method]>,
    pub(super) headers: Box<[HeaderCond]>,
    pub(super) query: Box<[QueryCond]>,
    pub(super) cookies: Box<[CookieCond]>,
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
    /// Gateway listener slots it serves; empty: the proxy's own listeners.
    pub(super) listeners: Box<[u32]>,
    /// Upstreams that get a copy of each request.
    pub mirrors: Box<[Mirror]>,
    /// The route's cache, when it has one.
    pub cache: Option<RouteCache>,
    /// Answers from LLM providers instead of backends.
    pub ai: Option<Arc<crate::ai::AiRoute>>,
}

/// A compiled mirror: where copies go, and how many.
#[derive(Debug)]
pub struct Mirror {
    pub upstream: Arc<Upstream>,
    pub numerator: u32,
    pub denominator: u32,
}

/// A route's cache settings and metrics.
#[derive(Debug)]
pub struct RouteCache {
    pub rule: Arc<crate::cache::CacheRule>,
    pub metrics: crate::metrics::CacheMetrics,
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
            listeners: spec.listeners.clone().into_boxed_slice(),
            mirrors: spec
                .mirrors
                .iter()
                .map(|m| Mirror {
                    upstream: upstreams
                        .get(&m.upstream)
                        .unwrap_or_else(|| Arc::new(Upstream::new(m.upstream.clone(), Vec::new()))),
                    numerator: m.numerator,
                    denominator: m.denominator.max(1),
                })
                .collect(),
            cache: spec.cache.as_ref().map(|rule| RouteCache {
                rule: rule.clone(),
                metrics: crate::metrics::CacheMetrics::new(spec.name.clone(), rule.storage.label()),
            }),
            ai: spec.ai.clone(),
        }
    }

    /// Whether the route serves `req`, in listener slot `slot`: its
    /// conditions hold, and it is either a route of the proxy's own
    /// listeners or attached to that slot.
    pub(crate) fn matches(&self, req: &RequestView<'_>, slot: Option<u32>) -> bool {
        (self.listeners.is_empty() || slot.is_some_and(|s| self.listeners.contains(&s)))
            && self.conditions_match(req)
    }

    /// Checks the conditions other than host and path.
    pub fn conditions_match(&self, req: &RequestView<'_>) -> bool {
        (self.methods.is_empty() || self.methods.contains(req.method))
            && self.headers.iter().all(|h| h.matches(req.headers))
            && self.query.iter().all(|q| q.matches(req.query))
            && self.cookies.iter().all(|c| c.matches(req.headers))
    }

    /// Whether the route names `method` among its methods, rather than
    /// serving every method: how a route opts into one the gateway
    /// otherwise refuses (`TRACE`).
    pub fn names_method(&self, method: &Method) -> bool {
        self.methods.contains(method)
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

/// An immutable route table: the routers and their compiled routes.
///
/// The proxy's own listeners share one router, holding Ingress and
/// ApiRoute routes and the routes of Gateway listeners on the same ports;
/// every port opened for Gateway listeners alone has a router of its own.
#[derive(Debug, Default)]
pub struct RouteTable {
    router: Router,
    /// Routers of ports opened for Gateway listeners.
    ports: Vec<(u16, Router)>,
    slots: SlotIndex,
    routes: Box<[Arc<Route>]>,
    certs: CertStore,
    /// Certificates of HTTPS ports opened for Gateway listeners.
    port_certs: Vec<(u16, CertStore)>,
    ticket_keys: Option<Arc<TicketKeySet>>,
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
        // Ports of their own: those of slots that do not share the
        // proxy's listeners.
        let mut own_ports: Vec<u16> = spec
            .listeners
            .iter()
            .filter(|l| !l.shared)
            .map(|l| l.port)
            .collect();
        own_ports.sort_unstable();
        own_ports.dedup();
        let shared = |i: &u32| spec.listeners.get(*i as usize).is_some_and(|l| l.shared);
        let on_port = |i: &u32, port: u16| {
            spec.listeners
                .get(*i as usize)
                .is_some_and(|l| !l.shared && l.port == port)
        };
        let router = if own_ports.is_empty() {
            Router::build(&spec.routes)
        } else {
            let members: Vec<u32> = (0..spec.routes.len() as u32)
                .filter(|&i| {
                    let l = &spec.routes[i as usize].listeners;
                    l.is_empty() || l.iter().any(shared)
                })
                .collect();
            Router::build_from(&spec.routes, members.into_iter())
        };
        let ports = own_ports
            .iter()
            .map(|&port| {
                let members: Vec<u32> = (0..spec.routes.len() as u32)
                    .filter(|&i| {
                        spec.routes[i as usize]
                            .listeners
                            .iter()
                            .any(|l| on_port(l, port))
                    })
                    .collect();
                (port, Router::build_from(&spec.routes, members.into_iter()))
            })
            .collect();
        let (main_certs, port_certs) = CertStore::build_all(&spec.tls, &spec.client_auth);
        RouteTable {
            router,
            ports,
            slots: SlotIndex::build(&spec.listeners),
            routes,
            certs: main_certs,
            port_certs,
            ticket_keys: spec.ticket_keys.clone(),
        }
    }

    /// The session ticket keys replicas share, when configured.
    pub fn ticket_keys(&self) -> Option<&Arc<TicketKeySet>> {
        self.ticket_keys.as_ref()
    }

    /// The server certificates of the proxy's own HTTPS listener, by SNI.
    pub fn certs(&self) -> &CertStore {
        &self.certs
    }

    /// The server certificates of HTTPS port `port`: its own when Gateway
    /// listeners opened it, else those of the proxy's own listener.
    pub fn certs_for(&self, port: u16) -> &CertStore {
        self.port_certs
            .iter()
            .find(|(p, _)| *p == port)
            .map_or(&self.certs, |(_, c)| c)
    }

    /// The route for a request, if any: from the router of the port it
    /// arrived on, among the routes of its listener slot.
    pub fn find(&self, req: &RequestView<'_>) -> Option<&Arc<Route>> {
        let router = match self.ports.iter().find(|(p, _)| *p == req.port) {
            Some((_, r)) => r,
            None => &self.router,
        };
        let slot = self.slots.resolve(req.port, req.host);
        router
            .find(req, &self.routes, slot)
            .map(|i| &self.routes[i])
    }

    /// Why `req` gets the route [`Self::find`] gives it; see
    /// [`super::explain`].
    pub fn explain(&self, req: &RequestView<'_>) -> super::Explanation {
        let router = match self.ports.iter().find(|(p, _)| *p == req.port) {
            Some((_, r)) => r,
            None => &self.router,
        };
        let slot = self.slots.resolve(req.port, req.host);
        super::explain::explain(router, &self.routes, req, slot)
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
