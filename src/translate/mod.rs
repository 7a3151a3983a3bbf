//! Translation: `ClusterState` to a table specification and diagnostics.
//!
//! This is a pure function of its input. It performs no I/O, so every rule
//! is testable from YAML fixtures, and one object's errors can only ever
//! remove that object's own routes.
//!
//! # Precedence
//!
//! For a request, the router considers host groups from most to least
//! specific and stops at the first group with a matching route:
//!
//! 1. routes for the exact host (`shop.example.com`);
//! 2. routes for the wildcard covering it (`*.example.com`, one label);
//! 3. routes for any host (no host given).
//!
//! Within a group, the first matching route in this order wins:
//!
//! 1. higher `priority` first (Ingress paths have priority 0);
//! 2. fallback routes (an Ingress `defaultBackend`) last of all;
//! 3. `Exact` paths, then `Prefix` paths longest first (by path elements,
//!    then by length), then regular expressions, longest pattern first;
//! 4. more conditions first: methods, then header, then query, then cookie
//!    conditions;
//! 5. older objects first (creation time, then namespace and name), then the
//!    order of routes inside the object.
//!
//! When two objects declare the same host and path with no other
//! conditions, the older one wins and the newer one gets a `Conflict`
//! warning.
//!
//! # Path semantics
//!
//! `Prefix` matches whole path elements: `/api` matches `/api`, `/api/` and
//! `/api/v1` but not `/apix`, and a trailing `/` in the prefix is ignored.
//! `Exact` compares the whole path. Regular expressions must match the whole
//! path. The query string never takes part in path matching.

mod annotations;
mod apiroute;
mod backends;
mod canary;
mod class;
mod client_auth;
mod diagnostics;
mod gateway;
mod ingress;
mod plugins;
mod protocol;
mod resilience;
mod state;
mod ticket_keys;
mod tls;
mod validate;

use std::sync::Arc;

use foldhash::{HashMap, HashMapExt};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde::Serialize;

pub use backends::{BackendError, service_endpoints};
pub use class::{ClassFilter, DEFAULT_CLASS_ANNOTATION, LEGACY_CLASS_ANNOTATION};
pub use diagnostics::{Diagnostic, Diagnostics, Kind, ObjectRef, Reason, Severity};
pub use gateway::{
    ClassState, Cond, GatewayApiStatus, GatewayState, ListenerState, ParentState, RouteState,
    names as condition_names,
};
pub use protocol::Unverified;
pub use state::{ClusterState, ObjectKey, Store};
pub use ticket_keys::parse as parse_ticket_keys;
pub use tls::certified_key;

use crate::api::PortRef;
use crate::routing::{
    BackendSpec, ClientAuth, HostMatch, PathSpec, RouteSpec, TableSpec, TlsCertificate,
};
use backends::BackendResolver;
use diagnostics::Subject;
use protocol::ProtocolRequest;

/// Settings that change how objects are read.
#[derive(Clone, Debug)]
pub struct TranslateOptions {
    /// The IngressClass name this controller serves.
    pub ingress_class: String,
    /// Claim Ingresses that name no class at all.
    pub watch_ingress_without_class: bool,
    /// The Secret whose certificate clients get when no other matches.
    pub default_certificate: Option<ObjectKey>,
    /// The PluginConfig whose plugins run on every route.
    pub global_plugins: Option<ObjectKey>,
    /// The Secret whose session ticket keys replicas share.
    pub ticket_keys_secret: Option<ObjectKey>,
    /// Redis for rate limiters with `policy: Redis` and no settings of
    /// their own.
    pub redis: Option<crate::plugins::limit::redis::RedisTarget>,
    /// The ports of the proxy's own listeners, which Gateway listeners on
    /// the same ports share.
    pub own_ports: OwnPorts,
    /// The cache storages the gateway has, which routes may name.
    pub cache: crate::cache::Available,
}

/// The ports of the proxy's own listeners (`--http-addr`, `--https-addr`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OwnPorts {
    pub http: u16,
    /// `None` when TLS is off.
    pub https: Option<u16>,
}

impl Default for OwnPorts {
    fn default() -> Self {
        OwnPorts {
            http: 8080,
            https: Some(8443),
        }
    }
}

impl Default for TranslateOptions {
    fn default() -> Self {
        TranslateOptions {
            ingress_class: "sluicegate".to_owned(),
            watch_ingress_without_class: false,
            default_certificate: None,
            global_plugins: None,
            ticket_keys_secret: None,
            redis: None,
            own_ports: OwnPorts::default(),
            cache: crate::cache::Available::default(),
        }
    }
}

/// The result of one translation.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Translation {
    pub table: TableSpec,
    pub diagnostics: Diagnostics,
    /// The status of the Gateway API objects served.
    #[serde(skip_serializing_if = "GatewayApiStatus::is_empty")]
    pub gateway_api: GatewayApiStatus,
}

/// Compiles every object of ours in `state` into one table specification.
pub fn translate(state: &ClusterState, opts: &TranslateOptions) -> Translation {
    let classes = ClassFilter::new(state, opts);
    let mut ctx = Ctx {
        state,
        resolver: BackendResolver::new(state),
        diags: Diagnostics::default(),
        routes: Vec::with_capacity(state.ingresses.len() + state.api_routes.len()),
        claims: HashMap::with_capacity(state.ingresses.len() + state.api_routes.len()),
        default_backend_owner: None,
        tls: Vec::new(),
        tls_claims: HashMap::new(),
        client_auth: Vec::new(),
        client_auth_claims: HashMap::new(),
        plugins: plugins::PluginSets::default(),
        redis: opts.redis.as_ref(),
        cache: opts.cache,
        canaries: canary::Targets::new(state),
        text: String::new(),
    };
    plugins::prepare(&mut ctx, opts);

    // Oldest objects first: ties in precedence go to whoever came first.
    enum Obj<'a> {
        Ingress(&'a ObjectKey, &'a k8s_openapi::api::networking::v1::Ingress),
        ApiRoute(&'a ObjectKey, &'a crate::api::ApiRoute),
    }
    // Both stores iterate in key order, so merging them orders objects by
    // key, and Ingress before ApiRoute for the same key (kind only
    // separates those). A stable sort by creation time then gives the
    // order (time, key, kind) without comparing keys again.
    let mut ingresses = state
        .ingresses
        .iter()
        .filter(|(_, ing)| classes.ingress_is_ours(ing))
        .peekable();
    let mut api_routes = state
        .api_routes
        .iter()
        .filter(|(_, ar)| classes.class_is_ours(ar.spec.ingress_class_name.as_deref()))
        .peekable();
    let mut objects: Vec<(Option<&Time>, Obj<'_>)> =
        Vec::with_capacity(state.ingresses.len() + state.api_routes.len());
    loop {
        let ingress_first = match (ingresses.peek(), api_routes.peek()) {
            (Some((ki, _)), Some((ka, _))) => ki <= ka,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => break,
        };
        let next = if ingress_first {
            ingresses.next().map(|(k, ing)| {
                let created = ing.metadata.creation_timestamp.as_ref();
                (created, Obj::Ingress(k, ing.as_ref()))
            })
        } else {
            api_routes.next().map(|(k, ar)| {
                let created = ar.metadata.creation_timestamp.as_ref();
                (created, Obj::ApiRoute(k, ar.as_ref()))
            })
        };
        objects.extend(next);
    }
    objects.sort_by_key(|(created, _)| created.map(|t| t.0));
    // Canary Ingresses attach to the routes of main Ingresses, so they
    // come after all of those, in the same order among themselves.
    let mut canaries = Vec::new();
    for (_, obj) in objects {
        match obj {
            Obj::Ingress(k, ing) => match canary::role(&mut ctx, k, ing) {
                canary::Role::Main => ingress::translate(&mut ctx, k, ing),
                canary::Role::Canary => canaries.push((k, ing)),
                canary::Role::Refused => {}
            },
            Obj::ApiRoute(k, ar) => apiroute::translate(&mut ctx, k, ar),
        }
    }
    for (k, ing) in canaries {
        canary::translate(&mut ctx, k, ing);
    }
    let (listeners, gateway_api) = gateway::translate(&mut ctx, opts);

    if let Some(key) = &opts.default_certificate {
        tls::bind_default(&mut ctx, key);
    }
    tls::prune(&ctx);
    let ticket_keys = opts
        .ticket_keys_secret
        .as_ref()
        .and_then(|key| ticket_keys::load(&mut ctx, key));
    Translation {
        table: TableSpec {
            routes: ctx.routes,
            upstreams: ctx.resolver.finish(),
            tls: ctx.tls,
            client_auth: ctx.client_auth,
            listeners,
            ticket_keys,
        },
        diagnostics: ctx.diags,
        gateway_api,
    }
}

/// Where a backend sends traffic.
#[derive(Clone, Copy)]
enum Target<'r> {
    /// A Service port in the object's namespace.
    Service(&'r str, &'r PortRef),
    /// A host outside the cluster, at a port.
    Host(&'r validate::UpstreamHost, u16),
}

/// Which field of a backend a diagnostic is about.
#[derive(Clone, Copy)]
enum BackendField {
    Name,
    Port,
}

/// State shared by the per-kind translators.
struct Ctx<'a> {
    state: &'a ClusterState,
    resolver: BackendResolver<'a>,
    diags: Diagnostics,
    routes: Vec<RouteSpec>,
    /// Unconditional host/path pairs already declared, with their owner,
    /// keyed by [`claim_key`] text.
    claims: HashMap<Box<str>, Arc<str>>,
    /// The Ingress whose `defaultBackend` serves unmatched requests.
    default_backend_owner: Option<Arc<str>>,
    /// Server certificates bound so far.
    tls: Vec<TlsCertificate>,
    /// Hosts with a certificate, with the object and Secret that bound it.
    tls_claims: HashMap<String, (Arc<str>, String)>,
    /// Hosts that ask for client certificates, and who asked first.
    client_auth: Vec<Arc<ClientAuth>>,
    client_auth_claims: HashMap<String, Arc<str>>,
    plugins: plugins::PluginSets,
    redis: Option<&'a crate::plugins::limit::redis::RedisTarget>,
    cache: crate::cache::Available,
    /// Main Ingress paths, for canary Ingresses to attach to.
    canaries: canary::Targets,
    /// Reused to format text before it is known to be needed, or before it
    /// is copied into its final allocation.
    text: String,
}

impl Ctx<'_> {
    /// Joins `parts` into shared text (a route name or source) with one
    /// allocation and no formatting machinery: there is one per route.
    fn shared_text(&mut self, parts: &[&str]) -> Arc<str> {
        self.text.clear();
        parts.iter().for_each(|p| self.text.push_str(p));
        Arc::from(self.text.as_str())
    }

    /// The `source` of routes from `obj`: its [`ObjectRef`] as text.
    fn source(&mut self, obj: Subject<'_>) -> Arc<str> {
        let (namespace, name) = (obj.key.namespace.as_str(), obj.key.name.as_str());
        if namespace.is_empty() {
            self.shared_text(&[obj.kind.as_str(), " ", name])
        } else {
            self.shared_text(&[obj.kind.as_str(), " ", namespace, "/", name])
        }
    }

    /// Resolves a backend, reporting a missing Service or port as a warning
    /// on `obj`: the route is still installed and answers 503. `field`
    /// names the fields, and is called only for a diagnostic. A Service is
    /// in the object's namespace.
    fn backend(
        &mut self,
        obj: Subject<'_>,
        field: impl FnOnce(BackendField) -> String,
        target: Target<'_>,
        weight: u32,
        proto: &ProtocolRequest,
    ) -> BackendSpec {
        let namespace = obj.key.namespace.as_str();
        let (upstream, app_protocol, external_host) = match target {
            Target::Service(service, port) => {
                let r = self.resolver.resolve(namespace, service, port);
                if let Some(e) = r.error {
                    let which = match e {
                        BackendError::PortNotFound { .. } => BackendField::Port,
                        BackendError::ServiceNotFound { .. }
                        | BackendError::InvalidExternalName { .. } => BackendField::Name,
                    };
                    self.diags.report(
                        obj,
                        field(which),
                        Reason::BackendNotFound,
                        format!("{e}; requests to this backend get 503"),
                    );
                }
                (r.upstream, r.app_protocol, r.external_host)
            }
            Target::Host(host, port) => {
                let upstream = self.resolver.resolve_host(namespace, host, port);
                (upstream, None, Some(host.text()))
            }
        };
        // Only a Service inside the cluster has no external host.
        let service = match target {
            Target::Service(service, _) => service,
            Target::Host(..) => "",
        };
        let dest = external_host.as_deref().map_or(
            protocol::Destination::Service(service),
            protocol::Destination::Host,
        );
        let protocol = protocol::resolve(self, obj, proto, app_protocol, dest);
        BackendSpec {
            upstream,
            weight,
            protocol,
        }
    }

    /// Records the unconditional host/path pairs of `route`, and warns when
    /// an older object already declared one of them. `field` is called
    /// only for a diagnostic.
    fn claim(&mut self, obj: Subject<'_>, field: impl Fn() -> String, route: &RouteSpec) {
        if !route.methods.is_empty()
            || !route.headers.is_empty()
            || !route.query.is_empty()
            || !route.cookies.is_empty()
            || route.priority != 0
        {
            return;
        }
        // No hosts means any host, which claims as `*`.
        let any_host = route.hosts.is_empty().then_some(None);
        for host in any_host.into_iter().chain(route.hosts.iter().map(Some)) {
            for path in &route.paths {
                let Some(host_len) = claim_key(&mut self.text, host, path) else {
                    continue;
                };
                match self.claims.get(self.text.as_str()) {
                    Some(owner) if **owner != *route.source => {
                        let (host, path) = (&self.text[..host_len], &self.text[host_len + 1..]);
                        let msg = format!(
                            "host {host} path {path} is also declared by {owner}, which takes precedence (older, or first by namespace and name)"
                        );
                        self.diags.report(obj, field(), Reason::Conflict, msg);
                    }
                    Some(_) => {}
                    None => {
                        self.claims
                            .insert(self.text.as_str().into(), route.source.clone());
                    }
                }
            }
        }
    }
}

/// Writes the claim key of a host (`None` for any host) and a literal path
/// into `buf`: the host as written (`*` for any host), a space, then the
/// match type and the path as the Conflict message shows them. A host never
/// holds a space, so distinct pairs never share a key. Returns the length
/// of the host part, or `None` for a regular expression, which claims
/// nothing.
fn claim_key(buf: &mut String, host: Option<&HostMatch>, path: &PathSpec) -> Option<usize> {
    let (kind, path) = match path {
        PathSpec::Exact(p) => ("Exact", p.as_str()),
        PathSpec::Prefix(p) => ("Prefix", normalize_prefix(p)),
        PathSpec::RegularExpression(_) => return None,
    };
    buf.clear();
    match host {
        None => buf.push('*'),
        Some(HostMatch::Exact(h)) => buf.push_str(h),
        Some(HostMatch::Wildcard(s)) => {
            buf.push_str("*.");
            buf.push_str(s);
        }
        Some(HostMatch::Suffix(s)) => {
            buf.push_str("**.");
            buf.push_str(s);
        }
    }
    let host_len = buf.len();
    buf.push(' ');
    buf.push_str(kind);
    buf.push(' ');
    buf.push_str(path);
    Some(host_len)
}

fn normalize_prefix(p: &str) -> &str {
    match p.trim_end_matches('/') {
        "" => "/",
        trimmed => trimmed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_source_is_the_object_ref_text() {
        let state = ClusterState::default();
        let mut ctx = Ctx {
            state: &state,
            resolver: BackendResolver::new(&state),
            diags: Diagnostics::default(),
            routes: Vec::new(),
            claims: HashMap::new(),
            default_backend_owner: None,
            tls: Vec::new(),
            tls_claims: HashMap::new(),
            client_auth: Vec::new(),
            client_auth_claims: HashMap::new(),
            plugins: plugins::PluginSets::default(),
            redis: None,
            cache: crate::cache::Available::default(),
            canaries: canary::Targets::default(),
            text: String::new(),
        };
        for key in [ObjectKey::new("shop", "cart"), ObjectKey::new("", "global")] {
            for kind in [Kind::Ingress, Kind::ApiRoute] {
                let obj = Subject { kind, key: &key };
                assert_eq!(*ctx.source(obj), obj.object_ref().to_string());
            }
        }
    }
}
