//! The table specification: the plain-data result of translation.
//!
//! A `TableSpec` says what to route where, in terms of names and addresses
//! only. It is what `/routes` shows and what translate snapshot tests
//! compare; [`super::RouteTable::build`] turns it into the matcher that the
//! proxy runs.

use std::borrow::Borrow;
use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::{Serialize, Serializer};

use super::resilience::{Affinity, HealthSpec, LoadBalancer, RetryPolicy};

/// Everything one route table is built from.
#[derive(Clone, Debug, Default, Serialize)]
pub struct TableSpec {
    /// Routes in declaration order (objects oldest first, then by
    /// namespace/name); ordering only breaks ties of equal precedence.
    pub routes: Vec<RouteSpec>,
    /// Endpoint sets by upstream, shared by every route that uses them.
    pub upstreams: BTreeMap<UpstreamKey, UpstreamSpec>,
    /// Server certificates by host, in precedence order (oldest object
    /// first).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tls: Vec<super::TlsCertificate>,
    /// Hosts that ask clients for certificates, in precedence order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub client_auth: Vec<Arc<super::ClientAuth>>,
    /// Gateway listeners, by port and hostname; routes name them by
    /// index ([`RouteSpec::listeners`]).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub listeners: Vec<ListenerSlot>,
    /// Session ticket keys shared by replicas (`--tls-ticket-keys-secret`);
    /// without them each process seals tickets with keys of its own.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ticket_keys: Option<Arc<super::TicketKeySet>>,
}

/// One port and hostname that Gateway listeners serve, shared by every
/// listener (of any Gateway) with the same port, protocol and hostname.
///
/// A request on a port that has slots belongs to the slot of the most
/// specific hostname that covers its host (exact, then the longest
/// wildcard, then the slot without hostname), and only routes attached to
/// that slot may serve it: a less specific listener never catches a host
/// that a more specific one on the same port claims.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ListenerSlot {
    pub port: u16,
    /// `None` covers every host.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hostname: Option<HostMatch>,
    /// HTTPS: TLS is terminated with the slot's certificates.
    pub tls: bool,
    /// The port is one of the proxy's own listeners (`--http-addr`,
    /// `--https-addr`), so Ingress and ApiRoute routes share it; otherwise
    /// the port is opened for the Gateway listeners alone.
    #[serde(skip_serializing_if = "is_false")]
    pub shared: bool,
    /// The listeners in this slot, as `Gateway ns/name listener`.
    pub sources: Vec<Arc<str>>,
}

/// Identifies one upstream.
///
/// A Service port is `namespace/service:port`. An upstream outside the
/// cluster adds the host it resolves: `namespace/service:port@host` for an
/// ExternalName Service, `namespace/:port@host` for an ApiRoute backend
/// naming a host. Kubernetes names and port names never hold `@`, so the
/// two kinds never share a key, and a Service whose `externalName` changes
/// gets a new upstream instead of keeping the old host's addresses.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct UpstreamKey(Arc<str>);

impl UpstreamKey {
    /// Key for a Service port given by number or name.
    pub fn new(namespace: &str, service: &str, port: impl fmt::Display) -> Self {
        let mut text = String::new();
        Self::write_text(&mut text, namespace, service, port);
        Self::from_text(&text)
    }

    /// Replaces `buf` with the text of a key, so that a key can be looked
    /// up (see the `Borrow<str>` impl) before one is allocated.
    pub(crate) fn write_text(
        buf: &mut String,
        namespace: &str,
        service: &str,
        port: impl fmt::Display,
    ) {
        buf.clear();
        buf.push_str(namespace);
        buf.push('/');
        buf.push_str(service);
        buf.push(':');
        // Writing into a String cannot fail.
        let _ = write!(buf, "{port}");
    }

    /// Key for an upstream outside the cluster: `service` (empty for a
    /// host backend) in `namespace`, reached at `host` and `port`.
    pub fn external(namespace: &str, service: &str, port: u16, host: &str) -> Self {
        let mut text = String::new();
        Self::write_external_text(&mut text, namespace, service, port, host);
        Self::from_text(&text)
    }

    /// Like [`Self::write_text`], for [`Self::external`] keys.
    pub(crate) fn write_external_text(
        buf: &mut String,
        namespace: &str,
        service: &str,
        port: u16,
        host: &str,
    ) {
        Self::write_text(buf, namespace, service, port);
        buf.push('@');
        buf.push_str(host);
    }

    /// The key whose text [`Self::write_text`] wrote.
    pub(crate) fn from_text(text: &str) -> Self {
        UpstreamKey(text.into())
    }

    /// Tells apart clones of one key from equal keys made separately:
    /// clones share their text, and so its address.
    pub(crate) fn identity(&self) -> usize {
        self.0.as_ptr().addr()
    }

    /// The key as text, also used as a metrics label.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Keys hash, compare and order exactly as their text does.
impl Borrow<str> for UpstreamKey {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for UpstreamKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The endpoints of one upstream, each list sorted and without
/// duplicates.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct UpstreamSpec {
    /// Ready endpoints: they take new requests.
    pub endpoints: Vec<SocketAddr>,
    /// Serving but terminating endpoints: used only while no endpoint is
    /// ready, so that a Service whose every pod is shutting down still
    /// answers instead of failing.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub terminating: Vec<SocketAddr>,
    /// Active and passive health settings.
    #[serde(skip_serializing_if = "HealthSpec::is_default")]
    pub health: HealthSpec,
    /// For an upstream named by DNS (an ExternalName Service, an ApiRoute
    /// backend `host`): the name whose addresses, each with `port`, are
    /// the endpoints. They are not known at translation: `endpoints` is
    /// empty, and the DNS resolver fills in the live upstream's endpoint
    /// set, which table rebuilds leave alone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dns: Option<DnsTarget>,
}

impl UpstreamSpec {
    /// An upstream with these ready endpoints and default health settings.
    pub fn ready(endpoints: Vec<SocketAddr>) -> Self {
        UpstreamSpec {
            endpoints,
            ..UpstreamSpec::default()
        }
    }
}

/// A DNS name and the port its addresses serve on.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct DnsTarget {
    /// In lower case, as written otherwise (a trailing `.` makes it
    /// absolute, skipping the resolver's search domains).
    pub name: Arc<str>,
    pub port: u16,
}

/// One route: match conditions and weighted backends.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteSpec {
    /// Stable name, used in logs and as the `route` metrics label.
    pub name: Arc<str>,
    /// The object this route came from, e.g. `ApiRoute default/shop`.
    pub source: Arc<str>,
    /// Hosts served; empty means any host.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<HostMatch>,
    /// Any of these paths matches; never empty.
    pub paths: Vec<PathSpec>,
    /// Any of these methods matches; empty means every method.
    #[serde(skip_serializing_if = "Vec::is_empty", serialize_with = "methods")]
    pub methods: Vec<http::Method>,
    /// Every header condition must hold; names are lower case.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<ValueSpec>,
    /// Every query parameter condition must hold.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub query: Vec<ValueSpec>,
    /// Every cookie condition must hold; names are case-sensitive.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cookies: Vec<ValueSpec>,
    /// Higher priorities are tried first within a host.
    #[serde(skip_serializing_if = "is_zero")]
    pub priority: i32,
    /// Tried only after every other route (an Ingress `defaultBackend`).
    #[serde(skip_serializing_if = "is_false")]
    pub fallback: bool,
    /// Weighted backends; an empty list answers 503.
    pub backends: Vec<BackendSpec>,
    /// Upstream timeouts; `None` takes the proxy's defaults.
    #[serde(skip_serializing_if = "Timeouts::is_default")]
    pub timeouts: Timeouts,
    /// Whether WebSocket upgrades are forwarded.
    pub websocket: bool,
    /// How an endpoint is chosen within a backend.
    #[serde(skip_serializing_if = "LoadBalancer::is_default")]
    pub load_balancer: LoadBalancer,
    /// Cookie that pins a client to an endpoint.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    /// When failed attempts are tried again on another endpoint.
    #[serde(skip_serializing_if = "RetryPolicy::is_default")]
    pub retries: RetryPolicy,
    /// Plain-HTTP requests get a redirect with this status to the same URL
    /// over HTTPS instead of being forwarded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub https_redirect: Option<u16>,
    /// Plugins in execution order.
    #[serde(skip_serializing_if = "Vec::is_empty", serialize_with = "plugins")]
    pub plugins: Vec<Arc<dyn crate::plugins::Plugin>>,
    /// Gateway listener slots ([`TableSpec::listeners`]) this route is
    /// served on. Empty for Ingress and ApiRoute routes, which serve on the
    /// proxy's own listeners.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub listeners: Vec<u32>,
    /// Upstreams that get a copy of each request, without waiting for it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub mirrors: Vec<MirrorSpec>,
    /// The route's cache (`proxyCache`), run after its plugins' request
    /// phase.
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "cache")]
    pub cache: Option<Arc<crate::cache::CacheRule>>,
    /// Answers from LLM providers instead of backends (`aiProxy`).
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "ai")]
    pub ai: Option<Arc<crate::ai::AiRoute>>,
}

fn cache<S: Serializer>(
    rule: &Option<Arc<crate::cache::CacheRule>>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match rule {
        Some(r) => r.describe().serialize(s),
        None => s.serialize_none(),
    }
}

fn ai<S: Serializer>(ai: &Option<Arc<crate::ai::AiRoute>>, s: S) -> Result<S::Ok, S::Error> {
    match ai {
        Some(a) => a.describe().serialize(s),
        None => s.serialize_none(),
    }
}

/// A mirror of a route's requests.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MirrorSpec {
    pub upstream: UpstreamKey,
    /// The share of requests mirrored: `numerator / denominator`.
    pub numerator: u32,
    pub denominator: u32,
}

fn plugins<S: Serializer>(
    list: &[Arc<dyn crate::plugins::Plugin>],
    s: S,
) -> Result<S::Ok, S::Error> {
    s.collect_seq(
        list.iter()
            .map(|p| serde_json::json!({ "name": p.name(), "settings": p.describe() })),
    )
}

/// A weighted reference to an upstream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BackendSpec {
    pub upstream: UpstreamKey,
    pub weight: u32,
    /// How to speak to it; plain HTTP/1.1 when absent.
    #[serde(skip_serializing_if = "Option::is_none", flatten)]
    pub protocol: Option<Arc<super::BackendProtocol>>,
}

/// Per-route timeouts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Timeouts {
    #[serde(skip_serializing_if = "Option::is_none", with = "opt_duration")]
    pub connect: Option<Duration>,
    #[serde(skip_serializing_if = "Option::is_none", with = "opt_duration")]
    pub request: Option<Duration>,
    /// Longest wait for the next bytes of a response body.
    #[serde(skip_serializing_if = "Option::is_none", with = "opt_duration")]
    pub idle: Option<Duration>,
    /// Longest time a response may make no progress towards the client.
    #[serde(skip_serializing_if = "Option::is_none", with = "opt_duration")]
    pub send: Option<Duration>,
}

impl Timeouts {
    fn is_default(&self) -> bool {
        *self == Timeouts::default()
    }
}

/// A host condition. Hosts are stored in lower case.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HostMatch {
    /// `shop.example.com`
    Exact(String),
    /// `*.example.com`, holding `example.com`: matches exactly one extra
    /// label in front, as the Ingress specification defines.
    Wildcard(String),
    /// A Gateway API `*.example.com`, holding `example.com`: matches one
    /// or more labels in front. Shown as `**.example.com`.
    Suffix(String),
}

impl HostMatch {
    /// Whether `host` (lower case, without port) is covered.
    pub fn covers(&self, host: &str) -> bool {
        match self {
            HostMatch::Exact(h) => h == host,
            HostMatch::Wildcard(s) => host
                .split_once('.')
                .is_some_and(|(label, rest)| !label.is_empty() && rest == s),
            HostMatch::Suffix(s) => host
                .strip_suffix(s.as_str())
                .and_then(|front| front.strip_suffix('.'))
                .is_some_and(|front| !front.is_empty() && !front.ends_with('.')),
        }
    }
}

impl fmt::Display for HostMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostMatch::Exact(h) => f.write_str(h),
            HostMatch::Wildcard(s) => write!(f, "*.{s}"),
            HostMatch::Suffix(s) => write!(f, "**.{s}"),
        }
    }
}

impl Serialize for HostMatch {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A path condition.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "type", content = "value")]
pub enum PathSpec {
    Exact(String),
    /// Element-wise prefix; a trailing `/` in the value is ignored.
    Prefix(String),
    RegularExpression(Pattern),
}

/// A named value condition on a header, query parameter or cookie.
#[derive(Clone, Debug, Serialize)]
pub struct ValueSpec {
    pub name: String,
    #[serde(flatten)]
    pub matcher: ValueMatcher,
}

/// How a header, query or cookie value is compared.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "type", content = "value")]
pub enum ValueMatcher {
    Exact(String),
    RegularExpression(Pattern),
    Present,
}

/// A regular expression compiled once, anchored to match a whole value.
#[derive(Clone, Debug)]
pub struct Pattern {
    source: Arc<str>,
    regex: regex::Regex,
}

/// Why a pattern was refused, in one line (it ends up in status
/// conditions and log lines).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PatternError(String);

impl Pattern {
    /// Compiles `source` so that it must match the entire input.
    ///
    /// The source is parsed on its own first: wrapped unchecked, a source
    /// such as `/admin)|(.*` would close the anchoring group early and
    /// match every path.
    pub fn new(source: &str) -> Result<Self, PatternError> {
        regex_syntax::Parser::new().parse(source).map_err(|e| {
            PatternError(match &e {
                regex_syntax::Error::Parse(p) => p.kind().to_string(),
                regex_syntax::Error::Translate(t) => t.kind().to_string(),
                _ => "invalid pattern".to_owned(),
            })
        })?;
        let regex = regex::RegexBuilder::new(&format!("^(?:{source})$"))
            .size_limit(1 << 20)
            .build()
            .map_err(|e| match e {
                regex::Error::CompiledTooBig(limit) => {
                    PatternError(format!("pattern compiles to more than {limit} bytes"))
                }
                other => PatternError(other.to_string().replace('\n', " ")),
            })?;
        Ok(Pattern {
            source: source.into(),
            regex,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.source
    }

    pub fn is_match(&self, value: &str) -> bool {
        self.regex.is_match(value)
    }
}

impl Serialize for Pattern {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.source)
    }
}

fn methods<S: Serializer>(methods: &[http::Method], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(methods.iter().map(http::Method::as_str))
}

fn is_zero(v: &i32) -> bool {
    *v == 0
}

fn is_false(v: &bool) -> bool {
    !*v
}

mod opt_duration {
    use serde::Serializer;
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.collect_str(&format_args!("{}ms", d.as_millis())),
            None => s.serialize_none(),
        }
    }
}
