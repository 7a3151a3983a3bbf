//! ApiRoute to routes.
//!
//! Invalid hosts reject the whole object, because dropping them could turn
//! a host-restricted route into one for every host. An invalid route (bad
//! path, pattern, header name, no usable backend, missing PluginConfig) is
//! skipped alone; the object's other routes are installed.

use std::collections::HashSet;
use std::sync::Arc;

use super::diagnostics::{Kind, ObjectRef, Reason};
use super::state::ObjectKey;
use super::{BackendFields, Ctx, validate};
use crate::api::{ApiRoute, HttpMethod, PathMatchType, RouteRule, ValueMatch, ValueMatchType};
use crate::routing::{HostMatch, PathSpec, RouteSpec, Timeouts, ValueMatcher, ValueSpec};

pub(super) fn translate(ctx: &mut Ctx<'_>, key: &ObjectKey, ar: &ApiRoute) {
    let obj = ObjectRef::new(Kind::ApiRoute, &key.namespace, &key.name);
    let mut hosts = Vec::with_capacity(ar.spec.hosts.len());
    for (i, h) in ar.spec.hosts.iter().enumerate() {
        match validate::host(h) {
            Ok(m) => hosts.push(m),
            Err(e) => {
                ctx.diags
                    .push(&obj, format!("spec.hosts[{i}]"), Reason::InvalidSpec, e);
                return;
            }
        }
    }
    hosts.sort();
    hosts.dedup();
    if ar.spec.routes.is_empty() {
        ctx.diags.push(
            &obj,
            "spec.routes",
            Reason::InvalidSpec,
            "at least one route is required",
        );
    }
    let source: Arc<str> = obj.to_string().into();
    let mut names = HashSet::new();
    for (i, rule) in ar.spec.routes.iter().enumerate() {
        let field = format!("spec.routes[{i}]");
        if rule.name.is_empty() {
            ctx.diags.push(
                &obj,
                format!("{field}.name"),
                Reason::InvalidSpec,
                "route name must not be empty",
            );
            continue;
        }
        if !names.insert(rule.name.as_str()) {
            ctx.diags.push(
                &obj,
                format!("{field}.name"),
                Reason::InvalidSpec,
                format!("duplicate route name {:?}", rule.name),
            );
            continue;
        }
        match route(ctx, &obj, key, &field, rule, &hosts, &source) {
            Ok(r) => {
                ctx.claim(&obj, &field, &r);
                ctx.routes.push(r);
            }
            Err((f, reason, msg)) => ctx.diags.push(&obj, f, reason, msg),
        }
    }
}

type RuleError = (String, Reason, String);

fn route(
    ctx: &mut Ctx<'_>,
    obj: &ObjectRef,
    key: &ObjectKey,
    field: &str,
    rule: &RouteRule,
    hosts: &[HostMatch],
    source: &Arc<str>,
) -> Result<RouteSpec, RuleError> {
    let invalid = |f: String, msg: String| (f, Reason::InvalidSpec, msg);
    let m = &rule.matches;

    let mut paths = Vec::with_capacity(m.paths.len().max(1));
    for (j, p) in m.paths.iter().enumerate() {
        let f = format!("{field}.match.paths[{j}].value");
        paths.push(match p.kind {
            PathMatchType::Exact => validate::literal_path(&p.value)
                .map(|_| PathSpec::Exact(p.value.clone()))
                .map_err(|e| invalid(f, e))?,
            PathMatchType::Prefix => validate::literal_path(&p.value)
                .map(|_| PathSpec::Prefix(p.value.clone()))
                .map_err(|e| invalid(f, e))?,
            PathMatchType::RegularExpression => validate::pattern(&p.value)
                .map(PathSpec::RegularExpression)
                .map_err(|e| invalid(f, e))?,
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
        let f = format!("{field}.match.headers[{j}]");
        let name = validate::header_name(&h.name).map_err(|e| invalid(format!("{f}.name"), e))?;
        headers.push(value_spec(name, h, &f)?);
    }
    let mut query = Vec::with_capacity(m.query_params.len());
    for (j, q) in m.query_params.iter().enumerate() {
        let f = format!("{field}.match.queryParams[{j}]");
        query.push(value_spec(q.name.clone(), q, &f)?);
    }

    if rule.backends.is_empty() {
        return Err(invalid(
            format!("{field}.backends"),
            "at least one backend is required".into(),
        ));
    }
    if rule.backends.iter().all(|b| b.weight == 0) {
        return Err(invalid(
            format!("{field}.backends"),
            "every backend has weight 0, so no request could be served".into(),
        ));
    }

    let timeouts = Timeouts {
        connect: rule.timeouts.and_then(|t| t.connect).map(|d| d.0),
        request: rule.timeouts.and_then(|t| t.request).map(|d| d.0),
    };
    for (name, d) in [("connect", timeouts.connect), ("request", timeouts.request)] {
        if d.is_some_and(|d| d.is_zero()) {
            return Err(invalid(
                format!("{field}.timeouts.{name}"),
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
                format!("{field}.pluginConfigRef.name"),
                Reason::PluginConfigNotFound,
                format!(
                    "PluginConfig {}/{} not found; the route is not served until it exists",
                    key.namespace, r.name
                ),
            ));
        }
    }

    let mut backends = Vec::with_capacity(rule.backends.len());
    for (j, b) in rule.backends.iter().enumerate() {
        let f = BackendFields {
            name: format!("{field}.backends[{j}].serviceName"),
            port: format!("{field}.backends[{j}].servicePort"),
        };
        backends.push(ctx.backend(
            obj,
            &f,
            &key.namespace,
            &b.service_name,
            &b.service_port,
            b.weight,
        ));
    }

    Ok(RouteSpec {
        name: format!("apiroute/{}/{}/{}", key.namespace, key.name, rule.name).into(),
        source: source.clone(),
        hosts: hosts.to_vec(),
        paths,
        methods,
        headers,
        query,
        priority: rule.priority,
        fallback: false,
        backends,
        timeouts,
        websocket: rule.websocket,
    })
}

fn value_spec(name: String, m: &ValueMatch, field: &str) -> Result<ValueSpec, RuleError> {
    let value = || {
        m.value.clone().ok_or_else(|| {
            (
                format!("{field}.value"),
                Reason::InvalidSpec,
                "value is required unless type is Present".to_owned(),
            )
        })
    };
    let matcher = match m.kind {
        ValueMatchType::Exact => ValueMatcher::Exact(value()?),
        ValueMatchType::RegularExpression => ValueMatcher::RegularExpression(
            validate::pattern(&value()?)
                .map_err(|e| (format!("{field}.value"), Reason::InvalidSpec, e))?,
        ),
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
