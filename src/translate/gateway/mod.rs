//! The Gateway API: GatewayClasses of Sluicegate's controller
//! (`sluicegate.io/gateway-controller`), their Gateways and listeners, and
//! the HTTPRoutes and GRPCRoutes attached to those.
//!
//! Gateways are read first ([`listeners`]): each served listener gets a
//! slot of the table, by port and hostname, and HTTPS listeners their
//! certificate. Routes, oldest first, then attach to listeners
//! ([`attach`]) and their rules become route specifications ([`rules`],
//! [`http`], [`grpc`]), one per match, served in the slots they attached
//! to with the hostnames they share with each listener. Everything the
//! Gateway API asks to be told about these objects is collected as
//! [`GatewayApiStatus`]; problems are also diagnostics, for logs and
//! `/routes`.
//!
//! Gateway API routes come after Ingress and ApiRoute routes in the
//! table's declaration order: where precedence is otherwise equal on a
//! listener they share, Ingress and ApiRoute routes win.

mod attach;
mod grpc;
mod http;
mod listeners;
mod refs;
mod rules;
mod status;

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

pub use status::{
    ClassState, Cond, GatewayApiStatus, GatewayState, ListenerState, ParentState, RouteState, names,
};

use super::diagnostics::{Kind, Reason, Subject};
use super::{Ctx, ObjectKey, TranslateOptions, validate};
use crate::api::gateway_api::ParentReference;
use crate::routing::{HostMatch, ListenerSlot, RouteSpec};
use status::names::*;

const HTTP_ROUTE: &str = "HTTPRoute";
const GRPC_ROUTE: &str = "GRPCRoute";

/// The namespaces routes may attach from.
enum AllowedNamespaces {
    Same,
    All,
    Selector(refs::Selector),
}

/// A listener as route attachment sees it.
struct ListenerInfo {
    pub name: String,
    pub port: u16,
    /// Exact or Gateway wildcard (`Suffix`); `None` for any host.
    pub hostname: Option<HostMatch>,
    /// Route kinds it allows.
    pub kinds: Vec<&'static str>,
    pub namespaces: AllowedNamespaces,
    /// Its slot, when it is served.
    pub slot: Option<u32>,
}

/// A Gateway of Sluicegate's.
struct GatewayInfo {
    pub key: ObjectKey,
    /// Why the Gateway is not accepted, if it is not.
    pub rejected: Option<String>,
    /// Its index in [`GatewayApiStatus::gateways`].
    pub state: usize,
    pub listeners: Vec<ListenerInfo>,
}

/// The Gateway API part of one translation.
#[derive(Default)]
struct Gw {
    gateways: BTreeMap<ObjectKey, GatewayInfo>,
    status: GatewayApiStatus,
    slots: Vec<ListenerSlot>,
}

/// Namespace labels already looked up.
type Namespaces = foldhash::HashMap<String, BTreeMap<String, String>>;

/// Translates the Gateway API objects of `ctx.state`: routes go to
/// `ctx.routes`, certificates to `ctx.tls`; returns the listener slots and
/// the status of every object.
pub(super) fn translate(
    ctx: &mut Ctx<'_>,
    opts: &TranslateOptions,
) -> (Vec<ListenerSlot>, GatewayApiStatus) {
    let state = ctx.state;
    if state.gateway_classes.is_empty() {
        return (Vec::new(), GatewayApiStatus::default());
    }
    let mut gw = Gw::default();
    listeners::gateways(ctx, &mut gw, opts);
    if gw.gateways.is_empty() {
        return (gw.slots, gw.status);
    }
    enum Route<'a> {
        Http(&'a crate::api::gateway_api::HttpRoute),
        Grpc(&'a crate::api::gateway_api::GrpcRoute),
    }
    let mut list: Vec<(Option<&Time>, &ObjectKey, Route<'_>)> = state
        .http_routes
        .iter()
        .map(|(k, r)| (r.metadata.creation_timestamp.as_ref(), k, Route::Http(r)))
        .chain(
            state
                .grpc_routes
                .iter()
                .map(|(k, r)| (r.metadata.creation_timestamp.as_ref(), k, Route::Grpc(r))),
        )
        .collect();
    // Oldest first, then by namespace and name: the Gateway API's order
    // for routes of equal precedence.
    list.sort_by(|a, b| (a.0.map(|t| t.0), a.1).cmp(&(b.0.map(|t| t.0), b.1)));
    let mut namespaces = Namespaces::default();
    for (_, key, route) in list {
        match route {
            Route::Http(r) => {
                let spec = &r.spec;
                let rs = RouteInput {
                    kind: Kind::HTTPRoute,
                    key,
                    hostnames: &spec.hostnames,
                    parent_refs: &spec.parent_refs,
                };
                translate_route(ctx, &mut gw, &mut namespaces, rs, |ctx, obj, issues| {
                    http::rules(ctx, obj, spec, issues)
                });
            }
            Route::Grpc(r) => {
                let spec = &r.spec;
                let rs = RouteInput {
                    kind: Kind::GRPCRoute,
                    key,
                    hostnames: &spec.hostnames,
                    parent_refs: &spec.parent_refs,
                };
                translate_route(ctx, &mut gw, &mut namespaces, rs, |ctx, obj, issues| {
                    grpc::rules(ctx, obj, spec, issues)
                });
            }
        }
    }
    (gw.slots, gw.status)
}

/// What every route kind has.
struct RouteInput<'a> {
    kind: Kind,
    key: &'a ObjectKey,
    hostnames: &'a [String],
    parent_refs: &'a [ParentReference],
}

/// What went wrong with a route's rules.
#[derive(Default)]
struct Issues {
    /// Rules not served: field, reason, message.
    dropped: Vec<(String, &'static str, String)>,
    /// Rules served.
    kept: usize,
    /// References that cannot be resolved: reason, message.
    refs: Vec<(&'static str, String)>,
}

impl Issues {
    pub fn drop_rule(
        &mut self,
        ctx: &mut Ctx<'_>,
        obj: Subject<'_>,
        field: String,
        reason: &'static str,
        message: String,
    ) {
        ctx.diags
            .report(obj, field.clone(), Reason::InvalidSpec, message.clone());
        self.dropped.push((field, reason, message));
    }

    pub fn unresolved(
        &mut self,
        ctx: &mut Ctx<'_>,
        obj: Subject<'_>,
        field: String,
        reason: &'static str,
        message: String,
    ) {
        let diag = match reason {
            PLUGIN_CONFIG_NOT_FOUND => Reason::PluginConfigNotFound,
            _ => Reason::BackendNotFound,
        };
        ctx.diags.report(obj, field.clone(), diag, message.clone());
        self.refs.push((reason, format!("{field}: {message}")));
    }
}

fn translate_route(
    ctx: &mut Ctx<'_>,
    gw: &mut Gw,
    namespaces: &mut Namespaces,
    r: RouteInput<'_>,
    rules: impl FnOnce(&mut Ctx<'_>, Subject<'_>, &mut Issues) -> Vec<RouteSpec>,
) {
    let obj = Subject {
        kind: r.kind,
        key: r.key,
    };
    let kind = match r.kind {
        Kind::GRPCRoute => GRPC_ROUTE,
        _ => HTTP_ROUTE,
    };
    let mut hostnames = Vec::with_capacity(r.hostnames.len());
    let mut bad_hostname = None;
    for (i, h) in r.hostnames.iter().enumerate() {
        match hostname(h) {
            Ok(m) => {
                if !hostnames.contains(&m) {
                    hostnames.push(m);
                }
            }
            Err(e) => {
                let field = format!("spec.hostnames[{i}]");
                ctx.diags
                    .report(obj, field.clone(), Reason::InvalidSpec, e.clone());
                bad_hostname.get_or_insert(format!("{field}: {e}"));
            }
        }
    }
    let state = ctx.state;
    let parents = if bad_hostname.is_some() {
        // Nothing is served, so nothing attaches; each parent of ours is
        // told why.
        r.parent_refs
            .iter()
            .filter(|p| {
                let ns = p.namespace.as_deref().unwrap_or(&r.key.namespace);
                p.group == crate::api::gateway_api::GROUP
                    && p.kind == "Gateway"
                    && gw
                        .gateways
                        .contains_key(&ObjectKey::new(ns, p.name.as_str()))
            })
            .map(|p| attach::Parent {
                parent_ref: p.clone(),
                accepted: Err((UNSUPPORTED_VALUE, bad_hostname.clone().unwrap_or_default())),
                targets: Vec::new(),
            })
            .collect()
    } else {
        attach::parents(
            gw,
            state,
            namespaces,
            kind,
            r.key,
            &hostnames,
            r.parent_refs,
        )
    };
    if parents.is_empty() {
        return;
    }
    let mut issues = Issues::default();
    let specs = rules(ctx, obj, &mut issues);

    // One copy of the rules per distinct set of hostnames, served in every
    // slot with that set.
    let mut groups: Vec<(Vec<HostMatch>, Vec<u32>)> = Vec::new();
    for (slot, hosts) in parents.iter().flat_map(|p| p.targets.iter()) {
        match groups.iter_mut().find(|(h, _)| h == hosts) {
            Some((_, slots)) => {
                if !slots.contains(slot) {
                    slots.push(*slot);
                }
            }
            None => groups.push((hosts.clone(), vec![*slot])),
        }
    }
    let n = groups.len();
    let mut specs = Some(specs);
    for (i, (mut hosts, mut slots)) in groups.into_iter().enumerate() {
        hosts.sort();
        slots.sort_unstable();
        let group_specs = if i + 1 == n {
            specs.take().unwrap_or_default()
        } else {
            specs.clone().unwrap_or_default()
        };
        for mut s in group_specs {
            s.hosts = hosts.clone();
            s.listeners = slots.clone();
            ctx.routes.push(s);
        }
    }

    gw.status.routes.push(RouteState {
        kind: r.kind,
        namespace: r.key.namespace.clone(),
        name: r.key.name.clone(),
        parents: parents
            .into_iter()
            .map(|p| ParentState {
                conditions: parent_conditions(&p, &issues),
                parent_ref: p.parent_ref,
            })
            .collect(),
    });
}

/// The conditions of a route towards one parent.
fn parent_conditions(p: &attach::Parent, issues: &Issues) -> Vec<Cond> {
    let mut out = Vec::with_capacity(3);
    let dropped = || {
        issues
            .dropped
            .iter()
            .map(|(f, _, m)| format!("{f}: {m}"))
            .collect::<Vec<_>>()
            .join("; ")
    };
    out.push(match &p.accepted {
        Err((reason, msg)) => Cond::new(ACCEPTED, false, reason, msg.clone()),
        Ok(()) if issues.kept == 0 && !issues.dropped.is_empty() => Cond::new(
            ACCEPTED,
            false,
            issues.dropped[0].1,
            format!("No rule can be served: {}", dropped()),
        ),
        Ok(()) => Cond::new(ACCEPTED, true, ACCEPTED, "Accepted."),
    });
    out.push(match issues.refs.first() {
        None => Cond::new(RESOLVED_REFS, true, RESOLVED_REFS, "Resolved."),
        Some((reason, _)) => Cond::new(
            RESOLVED_REFS,
            false,
            reason,
            issues
                .refs
                .iter()
                .map(|(_, m)| m.as_str())
                .collect::<Vec<_>>()
                .join("; "),
        ),
    });
    if p.accepted.is_ok() && issues.kept > 0 && !issues.dropped.is_empty() {
        out.push(Cond::new(
            PARTIALLY_INVALID,
            true,
            UNSUPPORTED_VALUE,
            format!("Dropped Rule(s): {}", dropped()),
        ));
    }
    out
}

/// A Gateway API hostname: an exact DNS name, or `*.` and one, which
/// covers any number of labels. IP addresses are not hostnames.
fn hostname(raw: &str) -> Result<HostMatch, String> {
    if raw.parse::<std::net::IpAddr>().is_ok() {
        return Err(format!("{raw:?} is an IP address, not a hostname"));
    }
    Ok(match validate::host(raw)? {
        HostMatch::Wildcard(s) => HostMatch::Suffix(s),
        other => other,
    })
}

/// The route specification every Gateway API route starts from.
fn base_spec(name: Arc<str>, source: Arc<str>) -> RouteSpec {
    RouteSpec {
        name,
        source,
        hosts: Vec::new(),
        paths: Vec::new(),
        methods: Vec::new(),
        headers: Vec::new(),
        query: Vec::new(),
        cookies: Vec::new(),
        priority: 0,
        fallback: false,
        backends: Vec::new(),
        timeouts: crate::routing::Timeouts::default(),
        websocket: true,
        load_balancer: crate::routing::LoadBalancer::default(),
        affinity: None,
        retries: crate::routing::RetryPolicy::default(),
        https_redirect: None,
        plugins: Vec::new(),
        listeners: Vec::new(),
        mirrors: Vec::new(),
        cache: None,
        ai: None,
    }
}
