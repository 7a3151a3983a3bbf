//! ApiRoute to routes.
//!
//! Invalid hosts reject the whole object, because dropping them could turn
//! a host-restricted route into one for every host. An invalid route (bad
//! path, pattern, header name, no usable backend, missing PluginConfig) is
//! skipped alone; the object's other routes are installed.

use std::collections::HashSet;
use std::sync::Arc;

use super::diagnostics::{Kind, Reason, Subject};
use super::protocol::ProtocolRequest;
use super::state::ObjectKey;
use super::validate::UpstreamHost;
use super::{BackendField, Ctx, Target, client_auth, plugins, resilience, tls, validate};
use crate::api::{
    ApiRoute, Backend, BackendProtocol, HttpMethod, PathMatchType, PortRef, RouteRule, ValueMatch,
    ValueMatchType,
};
use crate::routing::{HostMatch, PathSpec, Protocol, RouteSpec, Timeouts, ValueMatcher, ValueSpec};

/// Above this many routes in one object, duplicate names are found with a
/// hash set instead of by scanning the routes before.
const SCAN_NAMES_UP_TO: usize = 16;

pub(super) fn translate(ctx: &mut Ctx<'_>, key: &ObjectKey, ar: &ApiRoute) {
    let obj = Subject {
        kind: Kind::ApiRoute,
        key,
    };
    let mut hosts = Vec::with_capacity(ar.spec.hosts.len());
    for (i, h) in ar.spec.hosts.iter().enumerate() {
        match validate::host(h) {
            Ok(m) => hosts.push(m),
            Err(e) => {
                ctx.diags
                    .report(obj, format!("spec.hosts[{i}]"), Reason::InvalidSpec, e);
                return;
            }
        }
    }
    hosts.sort();
    hosts.dedup();
    if let Some(t) = ar.spec.tls.as_ref() {
        if hosts.is_empty() {
            ctx.diags.report(
                obj,
                "spec.tls",
                Reason::InvalidSpec,
                "a certificate needs hosts: set spec.hosts",
            );
        } else {
            tls::bind(ctx, obj, "spec.tls.secretName", &t.secret_name, &hosts);
            if let Some(auth) = &t.client_auth {
                let field = "spec.tls.clientAuth.caSecretRef";
                let (ca, optional) = (&auth.ca_secret_ref.name, auth.optional);
                client_auth::bind(ctx, obj, field, ca, optional, &hosts);
            }
        }
    }
    let rules = &ar.spec.routes;
    if rules.is_empty() {
        ctx.diags.report(
            obj,
            "spec.routes",
            Reason::InvalidSpec,
            "at least one route is required",
        );
    }
    let source = ctx.source(obj);
    let mut names = HashSet::new();
    for (i, rule) in rules.iter().enumerate() {
        if rule.name.is_empty() {
            ctx.diags.report(
                obj,
                format!("spec.routes[{i}].name"),
                Reason::InvalidSpec,
                "route name must not be empty",
            );
            continue;
        }
        // Every earlier route with a name went into the set, so either way
        // this asks whether an earlier route has the same name.
        let duplicate = if rules.len() <= SCAN_NAMES_UP_TO {
            rules[..i].iter().any(|r| r.name == rule.name)
        } else {
            !names.insert(rule.name.as_str())
        };
        if duplicate {
            ctx.diags.report(
                obj,
                format!("spec.routes[{i}].name"),
                Reason::InvalidSpec,
                format!("duplicate route name {:?}", rule.name),
            );
            continue;
        }
        // The last route takes the hosts themselves rather than a copy.
        let rule_hosts = if i + 1 == rules.len() {
            std::mem::take(&mut hosts)
        } else {
            hosts.clone()
        };
        match route(
            ctx,
            obj,
            i,
            rule,
            rule_hosts,
            &source,
            ar.spec.tls.is_some(),
        ) {
            Ok(mut r) => {
                let owner = r.name.clone();
                let sources = plugins::RoutePlugins {
                    inline: rule
                        .plugins
                        .as_ref()
                        .map(|p| (p, format!("spec.routes[{i}].plugins"))),
                    reference: rule.plugin_config_ref.as_ref().map(|r| r.name.as_str()),
                    owner: &owner,
                };
                match plugins::for_route(ctx, obj, sources) {
                    Ok(chosen) => {
                        r.plugins = chosen.plugins;
                        r.cache = chosen.cache;
                        r.ai = chosen.ai;
                    }
                    Err(()) => continue,
                }
                ctx.claim(obj, || format!("spec.routes[{i}]"), &r);
                ctx.routes.push(r);
            }
            Err((f, reason, msg)) => ctx.diags.report(obj, f, reason, msg),
        }
    }
}

type RuleError = (String, Reason, String);

/// Translates rule `i`. Field paths are formatted only for a diagnostic.
fn route(
    ctx: &mut Ctx<'_>,
    obj: Subject<'_>,
    i: usize,
    rule: &RouteRule,
    hosts: Vec<HostMatch>,
    source: &Arc<str>,
    has_tls: bool,
) -> Result<RouteSpec, RuleError> {
    let key = obj.key;
    let invalid = |f: String, msg: String| (f, Reason::InvalidSpec, msg);
    let m = &rule.matches;
    if let Some(code) = rule.redirect.as_ref().and_then(|r| r.code)
        && ![301, 302, 307, 308].contains(&code)
    {
        return Err(invalid(
            format!("spec.routes[{i}].redirect.code"),
            format!("{code} is not a redirect status; use 301, 302, 307 or 308"),
        ));
    }

    let mut paths = Vec::with_capacity(m.paths.len().max(1));
    for (j, p) in m.paths.iter().enumerate() {
        let f = || format!("spec.routes[{i}].match.paths[{j}].value");
        paths.push(match p.kind {
            PathMatchType::Exact => validate::literal_path(&p.value)
                .map(|_| PathSpec::Exact(p.value.clone()))
                .map_err(|e| invalid(f(), e))?,
            PathMatchType::Prefix => validate::literal_path(&p.value)
                .map(|_| PathSpec::Prefix(p.value.clone()))
                .map_err(|e| invalid(f(), e))?,
            PathMatchType::RegularExpression => validate::pattern(&p.value)
                .map(PathSpec::RegularExpression)
                .map_err(|e| invalid(f(), e))?,
        });
    }
    if paths.is_empty() {
        paths.push(PathSpec::Prefix("/".into()));
    }

    let mut methods: Vec<http::Method> = m.methods.iter().map(|m| method(*m)).collect();
    methods.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    methods.dedup();

    let mut headers = Vec::with_capacity(m.headers.len());
    for (j, h) in m.headers.iter().enumerate() {
        let f = || format!("spec.routes[{i}].match.headers[{j}]");
        let name =
            validate::header_name(&h.name).map_err(|e| invalid(format!("{}.name", f()), e))?;
        headers.push(value_spec(name, h, f)?);
    }
    let mut query = Vec::with_capacity(m.query_params.len());
    for (j, q) in m.query_params.iter().enumerate() {
        let f = || format!("spec.routes[{i}].match.queryParams[{j}]");
        query.push(value_spec(q.name.clone(), q, f)?);
    }
    let mut cookies = Vec::with_capacity(m.cookies.len());
    for (j, c) in m.cookies.iter().enumerate() {
        let f = || format!("spec.routes[{i}].match.cookies[{j}]");
        validate::cookie_name(&c.name).map_err(|e| invalid(format!("{}.name", f()), e))?;
        cookies.push(value_spec(c.name.clone(), c, f)?);
    }

    // A route with `aiProxy` (inline or from its PluginConfig) answers
    // from LLM providers: backends would never be used.
    let ai = rule.plugins.as_ref().is_some_and(|p| p.ai_proxy.is_some())
        || rule.plugin_config_ref.as_ref().is_some_and(|r| {
            ctx.state
                .plugin_configs
                .get(&ObjectKey::new(key.namespace.clone(), r.name.clone()))
                .is_some_and(|pc| pc.spec.plugins.ai_proxy.is_some())
        });
    if ai && !rule.backends.is_empty() {
        return Err(invalid(
            format!("spec.routes[{i}].backends"),
            "a route with aiProxy answers from its providers and takes no backends; remove them"
                .into(),
        ));
    }
    if !ai && rule.backends.is_empty() {
        return Err(invalid(
            format!("spec.routes[{i}].backends"),
            "at least one backend is required (or aiProxy in the route's plugins)".into(),
        ));
    }
    if !ai && rule.backends.iter().all(|b| b.weight == 0) {
        return Err(invalid(
            format!("spec.routes[{i}].backends"),
            "every backend has weight 0, so no request could be served".into(),
        ));
    }

    let timeouts = Timeouts {
        connect: rule.timeouts.and_then(|t| t.connect).map(|d| d.0),
        request: rule.timeouts.and_then(|t| t.request).map(|d| d.0),
        idle: rule.timeouts.and_then(|t| t.idle).map(|d| d.0),
        send: rule.timeouts.and_then(|t| t.send).map(|d| d.0),
    };
    let upstream = resilience::from_rule(rule, &format!("spec.routes[{i}]"))
        .map_err(|(field, why)| invalid(field, why))?;
    for (name, d) in [
        ("connect", timeouts.connect),
        ("request", timeouts.request),
        ("idle", timeouts.idle),
        ("send", timeouts.send),
    ] {
        if d.is_some_and(|d| d.is_zero()) {
            return Err(invalid(
                format!("spec.routes[{i}].timeouts.{name}"),
                "timeout must be greater than zero".into(),
            ));
        }
    }

    if let Some(r) = &rule.plugin_config_ref {
        let exists = ctx
            .state
            .plugin_configs
            .contains_key(&ObjectKey::new(key.namespace.clone(), r.name.clone()));
        if !exists {
            return Err((
                format!("spec.routes[{i}].pluginConfigRef.name"),
                Reason::PluginConfigNotFound,
                format!(
                    "PluginConfig {}/{} not found; the route is not served until it exists",
                    key.namespace, r.name
                ),
            ));
        }
    }

    // Where each backend goes, checked before any is resolved: a backend
    // that names no valid destination drops the route.
    for (j, b) in rule.backends.iter().enumerate() {
        backend_target(b).map_err(|(name, msg)| {
            invalid(format!("spec.routes[{i}].backends[{j}].{name}"), msg)
        })?;
    }

    let mut backends = Vec::with_capacity(rule.backends.len());
    for (j, b) in rule.backends.iter().enumerate() {
        let Ok(target) = backend_target(b) else {
            continue;
        };
        let is_host = matches!(target, BackendTarget::Host(..));
        let field = |which| match which {
            BackendField::Name if is_host => format!("spec.routes[{i}].backends[{j}].host"),
            BackendField::Name => format!("spec.routes[{i}].backends[{j}].serviceName"),
            BackendField::Port => format!("spec.routes[{i}].backends[{j}].servicePort"),
        };
        let tls = b.tls.clone().unwrap_or_default();
        let proto = ProtocolRequest {
            protocol: b.protocol.map(|p| match p {
                BackendProtocol::HTTP => Protocol::Http,
                BackendProtocol::HTTPS => Protocol::Https,
                BackendProtocol::H2C => Protocol::H2c,
                BackendProtocol::GRPC => Protocol::Grpc,
                BackendProtocol::GRPCS => Protocol::Grpcs,
            }),
            ca_secret: tls.ca_secret_ref.map(|r| r.name),
            client_secret: tls.client_certificate_secret_ref.map(|r| r.name),
            server_name: tls.sni,
            field: format!("spec.routes[{i}].backends[{j}].tls"),
        };
        let target = match &target {
            BackendTarget::Service(service) => Target::Service(service, &b.service_port),
            BackendTarget::Host(host, port) => Target::Host(host, *port),
        };
        backends.push(ctx.backend(obj, field, target, b.weight, &proto));
    }

    if let Some(health) = &upstream.health {
        let field = format!("spec.routes[{i}].healthCheck");
        resilience::apply_health(ctx, obj, &field, &backends, health);
    }
    let name = ctx.shared_text(&["apiroute/", &key.namespace, "/", &key.name, "/", &rule.name]);
    Ok(RouteSpec {
        name,
        source: source.clone(),
        hosts,
        paths,
        methods,
        headers,
        query,
        cookies,
        priority: rule.priority,
        fallback: false,
        backends,
        timeouts,
        websocket: rule.websocket,
        load_balancer: upstream.load_balancer,
        affinity: upstream.affinity,
        retries: upstream.retries,
        https_redirect: https_redirect(rule, has_tls),
        plugins: Vec::new(),
        listeners: Vec::new(),
        mirrors: Vec::new(),
        cache: None,
        ai: None,
    })
}

/// Where a backend sends traffic, as its fields say.
enum BackendTarget<'b> {
    Service(&'b str),
    Host(UpstreamHost, u16),
}

/// Reads a backend's destination: exactly one of `serviceName` and `host`,
/// and with `host` a port number. The error names the field at fault.
fn backend_target(b: &Backend) -> Result<BackendTarget<'_>, (&'static str, String)> {
    match (&b.service_name, &b.host) {
        (Some(service), None) => Ok(BackendTarget::Service(service)),
        (Some(_), Some(_)) => Err(("host", "set either serviceName or host, not both".into())),
        (None, None) => Err(("serviceName", "serviceName or host is required".into())),
        (None, Some(h)) => {
            let host = validate::upstream_host(h).map_err(|e| ("host", e))?;
            match b.service_port {
                PortRef::Number(port) => Ok(BackendTarget::Host(host, port)),
                PortRef::Name(ref name) => Err((
                    "servicePort",
                    format!("with host, servicePort must be a port number, not the name {name:?}"),
                )),
            }
        }
    }
}

/// The redirect status for plain-HTTP requests: an explicit `redirect`,
/// else `httpsRedirect`, else on when the ApiRoute has a certificate.
fn https_redirect(rule: &RouteRule, has_tls: bool) -> Option<u16> {
    match (&rule.redirect, rule.https_redirect) {
        (Some(r), _) => Some(r.code.unwrap_or(308)),
        (None, Some(on)) => on.then_some(308),
        (None, None) => has_tls.then_some(308),
    }
}

/// A header, query or cookie condition; `field` names the condition, for
/// a diagnostic.
fn value_spec(
    name: String,
    m: &ValueMatch,
    field: impl Fn() -> String,
) -> Result<ValueSpec, RuleError> {
    let invalid = |msg: String| (format!("{}.value", field()), Reason::InvalidSpec, msg);
    let value = || {
        m.value
            .clone()
            .ok_or_else(|| invalid("value is required unless type is Present".to_owned()))
    };
    let matcher = match m.kind {
        ValueMatchType::Exact => ValueMatcher::Exact(value()?),
        ValueMatchType::RegularExpression => {
            ValueMatcher::RegularExpression(validate::pattern(&value()?).map_err(invalid)?)
        }
        ValueMatchType::Present => ValueMatcher::Present,
    };
    Ok(ValueSpec { name, matcher })
}

fn method(m: HttpMethod) -> http::Method {
    match m {
        HttpMethod::GET => http::Method::GET,
        HttpMethod::HEAD => http::Method::HEAD,
        HttpMethod::POST => http::Method::POST,
        HttpMethod::PUT => http::Method::PUT,
        HttpMethod::DELETE => http::Method::DELETE,
        HttpMethod::PATCH => http::Method::PATCH,
        HttpMethod::OPTIONS => http::Method::OPTIONS,
        HttpMethod::CONNECT => http::Method::CONNECT,
        HttpMethod::TRACE => http::Method::TRACE,
    }
}
