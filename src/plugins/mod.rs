//! Plugins that run inside the proxy, one module per plugin.
//!
//! A plugin's configuration is a typed field of [`crate::api::Plugins`];
//! translation turns it into a runtime object once per table (see
//! [`build`]), so a request never parses or validates configuration.
//! Runtime state (counters, buckets) lives in [`shared_state`], keyed by
//! what owns it and by a fingerprint of the settings: a new table with the
//! same settings keeps the counters, changed settings start fresh.
//!
//! # Execution order
//!
//! For each request, after the route is matched and before the upstream
//! is chosen, plugins run by descending priority (APISIX's numbers, so the
//! order is familiar, with mocking and redirects moved after
//! authentication so that they cannot be used to skip it): `requestId`
//! (12015), `cors` (4000), `headerLimits` (3020), `requestBodyLimit`
//! (3010), `ipRestriction` (3000), `uaRestriction` (2999), `basicAuth`
//! (2520), `jwtAuth` (2510), `keyAuth` (2500), `forwardAuth` (2002),
//! `proxyRewrite` (1008), `limitConn` (1003), `limitCount` (1002),
//! `limitReq` (1001), `aiRateLimit` (1000), `brotli` (996), `gzip` (995), `redirect` (901),
//! `mocking` (900), `responseRewrite` (899). Rate limits thus key by the consumer
//! authentication identified. Response phases run in the same order on
//! every response of the route, the gateway's own answers included. Global plugins (`--global-plugin-config`) run before the
//! route's own at equal priority. The first plugin that answers ends the
//! request; headers plugins add (`X-RateLimit-*`) go on whatever response
//! the client gets.
//!
//! `proxyCache` is configured in the same block but is not a plugin: it
//! is a stage of the pipeline that runs after every request phase
//! (`proxy::forward::cache`), built by translation into
//! [`crate::cache::CacheRule`].

pub mod auth;
pub mod filters;
pub mod limit;
pub mod security;
pub mod transform;

use std::any::Any;
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};

use bytes::Bytes;
use http::{HeaderMap, StatusCode};

use crate::api::Plugins;

/// What a plugin sees of a request.
pub struct RequestCtx<'a> {
    /// The client's address as text (the connection's peer).
    pub client_ip: &'a [u8],
    /// Whether the client connected over TLS.
    pub tls: bool,
    /// The local port the request arrived on: a Gateway listener's port.
    pub port: u16,
    pub method: &'a http::Method,
    /// Normalized host, without port.
    pub host: &'a str,
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub headers: &'a HeaderMap,
    /// The matched route's name.
    pub route: &'a str,
    /// Who an authentication plugin identified; rate limiters can key by it.
    pub consumer: Option<Arc<str>>,
    /// Headers added to the response the client gets, whatever it is.
    pub response_headers: HeaderMap,
    /// Held until the response body is finished (in-flight accounting).
    pub guards: Vec<Box<dyn Any + Send + Sync>>,
    /// Changes to the request headers the upstream gets: set, or remove
    /// (`None`).
    pub upstream_headers: Vec<(http::HeaderName, Option<http::HeaderValue>)>,
    /// Query parameters removed before forwarding (credentials).
    pub remove_query: Vec<Box<str>>,
    /// A new path (and query) for the upstream request.
    pub rewrite_path: Option<String>,
    /// A new `Host` for the upstream request.
    pub rewrite_host: Option<http::HeaderValue>,
    /// The most request body bytes the upstream may get: a body without
    /// `Content-Length` is counted as it streams, and the exchange ends
    /// with `413` once it has passed this.
    pub body_limit: Option<u64>,
    /// Told the tokens an AI answer used once it is complete (token
    /// budgets charge them).
    pub token_meters: Vec<Box<dyn TokenMeter>>,
}

/// Tokens an AI request used: what its provider reported, or an estimate
/// when the answer was cut before the provider said.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TokenUsage {
    pub prompt: u64,
    pub completion: u64,
}

/// Something told how many tokens an AI request used, once, when its
/// answer ends: a token budget charging the request's key.
pub trait TokenMeter: Send + Sync + fmt::Debug {
    fn charge(self: Box<Self>, usage: TokenUsage);
}

/// What a plugin sees of a request when its response is ready.
pub struct ResponseCtx<'a> {
    /// The client's request headers.
    pub request_headers: &'a HeaderMap,
    pub method: &'a http::Method,
    pub consumer: Option<&'a str>,
    pub route: &'a str,
}

/// The parts of a response the response phase may change.
pub struct ResponseParts {
    pub status: StatusCode,
    pub headers: HeaderMap,
    /// A body that replaces the upstream's.
    pub body: Option<Bytes>,
    /// Content codings offered for the body (`gzip`, `brotli`); the
    /// client's `Accept-Encoding` picks one once every response phase ran.
    pub encodings: Vec<transform::compress::Offer>,
}

/// An answer a plugin gives instead of forwarding the request.
#[derive(Debug, Clone)]
pub struct Rejection {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// What a plugin that waited adds once it lets the request through.
#[derive(Debug, Default)]
pub struct Waited {
    /// Added to the response the client gets.
    pub response_headers: HeaderMap,
    /// Applied to the upstream request after the changes recorded in the
    /// request context.
    pub upstream_headers: Vec<(http::HeaderName, Option<http::HeaderValue>)>,
    /// Who the plugin identified, for later plugins (rate limiters).
    pub consumer: Option<Arc<str>>,
}

impl From<HeaderMap> for Waited {
    fn from(response_headers: HeaderMap) -> Self {
        Waited {
            response_headers,
            ..Waited::default()
        }
    }
}

impl Rejection {
    /// A plain-text answer.
    pub fn plain(status: StatusCode, body: impl Into<Bytes>) -> Rejection {
        let mut headers = HeaderMap::new();
        headers.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        Rejection {
            status,
            headers,
            body: body.into(),
        }
    }
}

/// A plugin's work that has to wait (a Redis round trip, a delay, an
/// authorization service).
pub type Pending<'s> = Pin<Box<dyn Future<Output = Result<Waited, Box<Rejection>>> + Send + 's>>;

/// What the request phase decided.
pub enum Outcome<'s> {
    /// Go on to the next plugin, then the upstream.
    Continue,
    /// Answer the client with this instead.
    Reject(Rejection),
    /// Decide after waiting; the headers are added to the response.
    Wait(Pending<'s>),
}

/// A runtime plugin.
pub trait Plugin: Send + Sync + fmt::Debug {
    /// The name of its field in the plugin block (`limitCount`).
    fn name(&self) -> &'static str;
    /// Higher runs first.
    fn priority(&self) -> i32;
    /// The request phase: continue, answer, or wait and then decide.
    fn request<'s>(&'s self, ctx: &mut RequestCtx<'_>) -> Outcome<'s>;
    /// Whether [`Plugin::response`] does anything: the request's headers
    /// are kept for the response phase only when some plugin needs them.
    fn has_response_phase(&self) -> bool {
        false
    }
    /// The response phase: may change the status, headers or body of the
    /// response before the client sees it (the upstream's, or an answer a
    /// plugin or the gateway gave).
    fn response(&self, _ctx: &ResponseCtx<'_>, _response: &mut ResponseParts) {}
    /// The settings as configured, for the `/routes` view.
    fn describe(&self) -> serde_json::Value;
}

/// Why a plugin configuration cannot be used: the field (relative to the
/// plugin block, e.g. `limitReq.rate`) and the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ConfigError {
    pub field: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Who owns a plugin instance's state: a route, a `group` shared by
/// routes, or the global configuration.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Owner(pub Arc<str>);

/// Turns a plugin block into runtime plugins, ordered by priority. Every
/// problem is returned, so that one diagnostic run shows them all.
pub fn build(
    plugins: &Plugins,
    owner: &Owner,
    env: &BuildEnv<'_>,
) -> Result<Vec<Arc<dyn Plugin>>, Vec<ConfigError>> {
    let mut out: Vec<Arc<dyn Plugin>> = Vec::new();
    let mut errors = Vec::new();
    let mut add = |r: Result<Arc<dyn Plugin>, ConfigError>| match r {
        Ok(p) => out.push(p),
        Err(e) => errors.push(e),
    };
    if let Some(c) = &plugins.basic_auth {
        add(auth::BasicAuthPlugin::build(c, env));
    }
    if let Some(c) = &plugins.jwt_auth {
        add(auth::jwt::JwtAuthPlugin::build(c, env));
    }
    if let Some(c) = &plugins.key_auth {
        add(auth::KeyAuthPlugin::build(c, env));
    }
    if let Some(c) = &plugins.forward_auth {
        add(auth::forward::ForwardAuthPlugin::build(c, env));
    }
    if let Some(c) = &plugins.ip_restriction {
        add(security::ip::IpRestrictionPlugin::build(c, env));
    }
    if let Some(c) = &plugins.cors {
        add(security::cors::CorsPlugin::build(c, env));
    }
    if let Some(c) = &plugins.request_body_limit {
        add(security::limits::RequestBodyLimitPlugin::build(c, env));
    }
    if let Some(c) = &plugins.header_limits {
        add(security::limits::HeaderLimitsPlugin::build(c, env));
    }
    if let Some(c) = &plugins.ua_restriction {
        add(security::limits::UaRestrictionPlugin::build(c, env));
    }
    if let Some(c) = &plugins.proxy_rewrite {
        add(transform::rewrite::ProxyRewritePlugin::build(c, env));
    }
    if let Some(c) = &plugins.response_rewrite {
        add(transform::rewrite::ResponseRewritePlugin::build(c, env));
    }
    if let Some(c) = &plugins.redirect {
        add(transform::respond::RedirectPlugin::build(c, env));
    }
    if let Some(c) = &plugins.request_id {
        add(transform::respond::RequestIdPlugin::build(c, env));
    }
    if let Some(c) = &plugins.mocking {
        add(transform::respond::MockingPlugin::build(c, env));
    }
    if let Some(c) = &plugins.limit_conn {
        add(limit::LimitConnPlugin::build(c, owner, env));
    }
    if let Some(c) = &plugins.limit_count {
        add(limit::LimitCountPlugin::build(c, owner, env));
    }
    if let Some(c) = &plugins.limit_req {
        add(limit::LimitReqPlugin::build(c, owner, env));
    }
    if let Some(c) = &plugins.gzip {
        add(transform::compress::CompressPlugin::build_gzip(c, env));
    }
    if let Some(c) = &plugins.brotli {
        add(transform::compress::CompressPlugin::build_brotli(c, env));
    }
    if let Some(c) = &plugins.ai_rate_limit {
        add(limit::tokens::AiRateLimitPlugin::build(c, owner, env));
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    sort(&mut out);
    Ok(out)
}

/// Orders plugins by descending priority; equal priorities keep their
/// order (global before route).
pub fn sort(plugins: &mut [Arc<dyn Plugin>]) {
    plugins.sort_by_key(|p| std::cmp::Reverse(p.priority()));
}

/// What building a plugin may read besides its own settings.
pub struct BuildEnv<'a> {
    /// Namespace of the object that configures the plugin (groups and
    /// Secrets are looked up there).
    pub namespace: &'a str,
    /// The Redis settings given on the command line, for `policy: Redis`
    /// without its own.
    pub redis: Option<&'a limit::redis::RedisTarget>,
    /// Secret values by name in `namespace`, for Redis passwords.
    pub secret: &'a dyn Fn(&str, &str) -> Option<Vec<u8>>,
    /// The consumer Secrets of `namespace` whose labels match.
    pub consumers:
        &'a dyn Fn(&std::collections::BTreeMap<String, String>) -> Vec<auth::ConsumerSecret>,
}

/// State kept per owner and settings fingerprint, shared by every table
/// that holds it and dropped when none does.
pub fn shared_state<T: Any + Send + Sync>(
    owner: &Owner,
    fingerprint: u64,
    make: impl FnOnce() -> T,
) -> Arc<T> {
    type Map = HashMap<(Owner, u64), Weak<dyn Any + Send + Sync>>;
    static STATES: OnceLock<Mutex<(Map, usize)>> = OnceLock::new();
    let mut guard = STATES
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    let (map, pruned_at) = &mut *guard;
    let key = (owner.clone(), fingerprint);
    if let Some(existing) = map.get(&key).and_then(Weak::upgrade)
        && let Ok(state) = existing.downcast::<T>()
    {
        return state;
    }
    let state = Arc::new(make());
    let erased: Arc<dyn Any + Send + Sync> = state.clone();
    map.insert(key, Arc::downgrade(&erased));
    // States nobody holds any more are forgotten once the map has doubled
    // since the last pass, so the map stays proportional to live state.
    if map.len() > (*pruned_at).max(64) * 2 {
        map.retain(|_, w| w.strong_count() > 0);
        *pruned_at = map.len();
    }
    state
}

/// A fingerprint of settings, for [`shared_state`].
pub fn fingerprint(settings: &impl serde::Serialize) -> u64 {
    let mut h = foldhash::fast::FixedState::with_seed(0x5107).build_hasher();
    if let Ok(bytes) = serde_json::to_vec(settings) {
        h.write(&bytes);
    }
    h.finish()
}
