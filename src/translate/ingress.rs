//! Ingress (`networking.k8s.io/v1`) to routes.
//!
//! Each path of each rule becomes one route for the rule's host. `Exact`
//! and `Prefix` follow the Ingress specification; `ImplementationSpecific`
//! is treated as `Prefix`, as ingress-nginx does without regex annotations.
//! `spec.defaultBackend` becomes a fallback route for any host and path,
//! tried only after every other route. WebSocket upgrades are allowed, as
//! users migrating from ingress-nginx expect. Each path route (and the
//! default backend route) is recorded for canary Ingresses, which are
//! translated by [`super::canary`] after every main Ingress.

use k8s_openapi::api::networking::v1::{Ingress, IngressBackend, IngressSpec};

use super::diagnostics::{Kind, Reason, Subject};
use super::protocol::ProtocolRequest;
use super::state::ObjectKey;
use super::{
    BackendField, Ctx, Target, annotations, canary, client_auth, plugins, resilience, tls, validate,
};
use crate::api::PortRef;
use crate::routing::{BackendSpec, HostMatch, PathSpec, RouteSpec};

pub(super) fn translate(ctx: &mut Ctx<'_>, key: &ObjectKey, ingress: &Ingress) {
    let obj = Subject {
        kind: Kind::Ingress,
        key,
    };
    let name = ctx.shared_text(&["ingress/", &key.namespace, "/", &key.name]);
    let source = ctx.source(obj);
    let Some(spec) = ingress.spec.as_ref() else {
        ctx.diags
            .report(obj, "spec", Reason::InvalidSpec, "spec is missing");
        return;
    };
    if annotations::refuse_snippets(ctx, obj, ingress) {
        return;
    }
    let policy = redirect_policy(ctx, obj, ingress);
    let tls_entries = tls_entries(ctx, obj, spec);
    let proto = annotations::protocol(ctx, obj, ingress);
    let Ok(annotated) = annotations::plugins(ctx, obj, ingress) else {
        return;
    };
    let sources = plugins::RoutePlugins {
        inline: annotated
            .as_ref()
            .map(|p| (p, "metadata.annotations".to_owned())),
        reference: None,
        owner: &name,
    };
    let Ok(plugin_list) = plugins::for_route(ctx, obj, sources) else {
        return;
    };
    let regex_paths = annotations::regex_paths(ingress);
    // For canary Ingresses: the class they must share, and where this
    // Ingress's backend settings are kept once a path is recorded.
    let class = canary::class_of(ingress);
    let mut proto_index = None;
    // The plugins of a path with its own rewrite; `None` when the path
    // takes the Ingress's plugins as they are.
    let path_plugins = |ctx: &mut Ctx<'_>, path: &str| {
        let rewrite = annotations::rewrite(ingress, path)?;
        let mut own = annotated.clone().unwrap_or_default();
        own.proxy_rewrite = Some(rewrite);
        let sources = plugins::RoutePlugins {
            inline: Some((&own, "metadata.annotations".to_owned())),
            reference: None,
            owner: &name,
        };
        Some(plugins::for_route(ctx, obj, sources))
    };
    let (upstream, timeouts) = resilience::from_ingress(ctx, obj, ingress);
    let route = |hosts, paths, backends, fallback, https_redirect| RouteSpec {
        name: name.clone(),
        source: source.clone(),
        hosts,
        paths,
        methods: Vec::new(),
        headers: Vec::new(),
        query: Vec::new(),
        cookies: Vec::new(),
        priority: 0,
        fallback,
        backends,
        timeouts,
        websocket: true,
        load_balancer: upstream.load_balancer.clone(),
        affinity: upstream.affinity.clone(),
        retries: upstream.retries.clone(),
        https_redirect,
        plugins: plugin_list.plugins.clone(),
        cache: plugin_list.cache.clone(),
        listeners: Vec::new(),
        mirrors: Vec::new(),
        ai: None,
    };

    for (i, rule) in spec.rules.iter().flatten().enumerate() {
        let hosts = match rule.host.as_deref().filter(|h| !h.is_empty()) {
            None => Vec::new(),
            Some(h) => match validate::host(h) {
                Ok(m) => vec![m],
                Err(e) => {
                    ctx.diags
                        .report(obj, format!("spec.rules[{i}].host"), Reason::InvalidSpec, e);
                    continue;
                }
            },
        };
        let Some(http) = rule.http.as_ref() else {
            continue;
        };
        let redirect = policy.redirect(&tls_entries, hosts.first());
        for (j, p) in http.paths.iter().enumerate() {
            let field = || format!("spec.rules[{i}].http.paths[{j}]");
            let path = p.path.clone().unwrap_or_else(|| "/".to_owned());
            let own_plugins = match path_plugins(ctx, &path) {
                None => None,
                Some(Ok(list)) => Some(list),
                Some(Err(())) => continue,
            };
            let regex = regex_paths && p.path_type != "Exact";
            let checked = if regex {
                // As nginx's `location ~*`: case-insensitive, from the
                // start of the path.
                validate::pattern(&format!("(?i){path}.*")).map(PathSpec::RegularExpression)
            } else {
                validate::literal_path(&path).map(|()| PathSpec::Prefix(String::new()))
            };
            let regex_spec = match checked {
                Ok(spec) => spec,
                Err(e) => {
                    ctx.diags
                        .report(obj, format!("{}.path", field()), Reason::InvalidSpec, e);
                    continue;
                }
            };
            let path = match p.path_type.as_str() {
                "Exact" => PathSpec::Exact(path),
                "Prefix" | "ImplementationSpecific" if regex => regex_spec,
                "Prefix" | "ImplementationSpecific" => PathSpec::Prefix(path),
                other => {
                    ctx.diags.report(
                        obj,
                        format!("{}.pathType", field()),
                        Reason::InvalidSpec,
                        format!("unknown pathType {other:?}; expected Exact, Prefix or ImplementationSpecific"),
                    );
                    continue;
                }
            };
            let backend_field = || format!("{}.backend", field());
            let Some(backend) = backend(ctx, obj, backend_field, &p.backend, &proto) else {
                continue;
            };
            let mut r = route(hosts.clone(), vec![path], vec![backend], false, redirect);
            if let Some(chosen) = own_plugins {
                r.plugins = chosen.plugins;
                r.cache = chosen.cache;
            }
            ctx.claim(obj, field, &r);
            let index = ctx.routes.len();
            ctx.routes.push(r);
            let place = canary::Place::Path {
                host: hosts.first(),
                path_type: &p.path_type,
                path: p.path.as_deref().unwrap_or("/"),
            };
            ctx.canaries
                .register(class, place, index, &mut proto_index, &proto);
        }
        if let Some(root) = annotations::app_root(ingress) {
            let owner = format!("{name}/app-root");
            let sources = plugins::RoutePlugins {
                inline: Some((&root, "metadata.annotations".to_owned())),
                reference: None,
                owner: &owner,
            };
            if let Ok(chosen) = plugins::for_route(ctx, obj, sources) {
                let mut r = route(
                    hosts.clone(),
                    vec![PathSpec::Exact("/".into())],
                    Vec::new(),
                    false,
                    redirect,
                );
                r.plugins = chosen.plugins;
                r.cache = chosen.cache;
                r.priority = 1;
                ctx.routes.push(r);
            }
        }
    }

    if let Some(default) = spec.default_backend.as_ref() {
        let field = || "spec.defaultBackend".to_owned();
        if let Some(b) = backend(ctx, obj, field, default, &proto) {
            match &ctx.default_backend_owner {
                Some(owner) => ctx.diags.report(
                    obj,
                    "spec.defaultBackend",
                    Reason::Conflict,
                    format!("{owner} also has a defaultBackend and takes precedence"),
                ),
                None => {
                    ctx.default_backend_owner = Some(source.clone());
                    let place = canary::Place::DefaultBackend;
                    let index = ctx.routes.len();
                    ctx.canaries
                        .register(class, place, index, &mut proto_index, &proto);
                }
            }
            ctx.routes.push(route(
                Vec::new(),
                vec![PathSpec::Prefix("/".into())],
                vec![b],
                true,
                None,
            ));
        }
    } else if spec.rules.as_ref().is_none_or(|r| r.is_empty()) {
        ctx.diags.report(
            obj,
            "spec",
            Reason::InvalidSpec,
            "an Ingress needs rules or a defaultBackend",
        );
    }
    if let Some((ca, optional, field)) = annotations::client_auth(ctx, obj, ingress) {
        let mut hosts: Vec<HostMatch> = spec
            .rules
            .iter()
            .flatten()
            .filter_map(|r| r.host.as_deref())
            .filter_map(|h| validate::host(h).ok())
            .collect();
        hosts.sort();
        hosts.dedup();
        client_auth::bind(ctx, obj, &field, &ca, optional, &hosts);
    }
    for (i, secret, hosts) in &tls_entries {
        if let Some(secret) = secret {
            let field = format!("spec.tls[{i}].secretName");
            tls::bind(ctx, obj, &field, secret, hosts);
        }
    }
}

/// Annotations that turn HTTPS redirects on or off; Sluicegate's own win
/// over ingress-nginx's, which are read for migration.
const SSL_REDIRECT: [&str; 2] = [
    "sluicegate.io/ssl-redirect",
    "nginx.ingress.kubernetes.io/ssl-redirect",
];
const FORCE_SSL_REDIRECT: [&str; 2] = [
    "sluicegate.io/force-ssl-redirect",
    "nginx.ingress.kubernetes.io/force-ssl-redirect",
];

/// When an Ingress's routes redirect plain HTTP to HTTPS. As in
/// ingress-nginx: hosts listed in `spec.tls` redirect unless `ssl-redirect`
/// is "false"; `force-ssl-redirect` makes every host redirect.
struct RedirectPolicy {
    ssl: bool,
    force: bool,
}

impl RedirectPolicy {
    /// The redirect status for a rule of `host`, if it redirects.
    fn redirect(&self, tls: &[TlsEntry<'_>], host: Option<&HostMatch>) -> Option<u16> {
        let has_tls = host.is_some_and(|h| tls.iter().any(|(_, _, hosts)| hosts.contains(h)));
        (self.force || (self.ssl && has_tls)).then_some(308)
    }
}

fn redirect_policy(ctx: &mut Ctx<'_>, obj: Subject<'_>, ingress: &Ingress) -> RedirectPolicy {
    RedirectPolicy {
        ssl: annotations::flag(ctx, obj, ingress, SSL_REDIRECT, true),
        force: annotations::flag(ctx, obj, ingress, FORCE_SSL_REDIRECT, false),
    }
}

/// The hosts of each `spec.tls` entry, with its index and Secret: the
/// hosts it lists or, when it lists none, those of the Ingress's rules. An
/// entry without a Secret leaves its hosts on the default certificate, as
/// the Ingress specification intends, but they still count as HTTPS hosts.
type TlsEntry<'s> = (usize, Option<&'s str>, Vec<HostMatch>);

fn tls_entries<'s>(
    ctx: &mut Ctx<'_>,
    obj: Subject<'_>,
    spec: &'s IngressSpec,
) -> Vec<TlsEntry<'s>> {
    let mut entries = Vec::new();
    for (i, entry) in spec.tls.iter().flatten().enumerate() {
        let listed = entry.hosts.as_deref().unwrap_or_default();
        let mut hosts = Vec::new();
        if listed.is_empty() {
            hosts.extend(
                spec.rules
                    .iter()
                    .flatten()
                    .filter_map(|r| r.host.as_deref())
                    .filter_map(|h| validate::host(h).ok()),
            );
        }
        for (j, h) in listed.iter().enumerate() {
            match validate::host(h) {
                Ok(m) => hosts.push(m),
                Err(e) => ctx.diags.report(
                    obj,
                    format!("spec.tls[{i}].hosts[{j}]"),
                    Reason::InvalidSpec,
                    e,
                ),
            }
        }
        hosts.sort();
        hosts.dedup();
        let secret = entry.secret_name.as_deref().filter(|s| !s.is_empty());
        entries.push((i, secret, hosts));
    }
    entries
}

/// Resolves an Ingress backend; `field` names it, for a diagnostic.
pub(super) fn backend(
    ctx: &mut Ctx<'_>,
    obj: Subject<'_>,
    field: impl Fn() -> String,
    backend: &IngressBackend,
    proto: &ProtocolRequest,
) -> Option<BackendSpec> {
    let Some(svc) = backend.service.as_ref() else {
        if backend.resource.is_some() {
            ctx.diags.report(
                obj,
                format!("{}.resource", field()),
                Reason::Unsupported,
                "resource backends are not supported; use a Service",
            );
        } else {
            ctx.diags.report(
                obj,
                field(),
                Reason::Unsupported,
                "a service backend is required",
            );
        }
        return None;
    };
    let port = svc
        .port
        .as_ref()
        .and_then(|p| match (p.number, p.name.as_deref()) {
            (Some(n), _) => u16::try_from(n)
                .ok()
                .filter(|n| *n > 0)
                .map(PortRef::Number),
            (None, Some(name)) if !name.is_empty() => Some(PortRef::Name(name.to_owned())),
            _ => None,
        });
    let Some(port) = port else {
        ctx.diags.report(
            obj,
            format!("{}.service.port", field()),
            Reason::InvalidSpec,
            "a port number (1-65535) or name is required",
        );
        return None;
    };
    let fields = |which| match which {
        BackendField::Name => format!("{}.service.name", field()),
        BackendField::Port => format!("{}.service.port", field()),
    };
    Some(ctx.backend(obj, fields, Target::Service(&svc.name, &port), 1, proto))
}
