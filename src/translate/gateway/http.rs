//! HTTPRoute rules to route specifications: one per match.
//!
//! A rule that cannot be served as written (an unknown match or filter
//! type, an invalid path, pattern or header name, an invalid timeout) is
//! dropped alone; the route's other rules are served and its status says
//! `PartiallyInvalid`.

use std::time::Duration;

use super::rules::{self, RuleInput};
use super::status::names::*;
use super::{Issues, base_spec};
use crate::api::gateway_api::{HeaderMatch, HttpRouteMatch, HttpRouteRule, HttpRouteSpec};
use crate::routing::{PathSpec, RouteSpec, Timeouts, ValueMatcher, ValueSpec};
use crate::translate::diagnostics::Subject;
use crate::translate::{Ctx, validate};

/// Filter types of HTTPRoute rules.
const FILTERS: &[&str] = &[
    "RequestHeaderModifier",
    "ResponseHeaderModifier",
    "RequestRedirect",
    "URLRewrite",
    "RequestMirror",
    "ExtensionRef",
    "CORS",
];

/// A timeout of zero disables it; the proxy still needs a deadline.
const UNLIMITED: Duration = Duration::from_secs(365 * 24 * 3600);

/// The specifications of every servable rule of `spec`.
pub(super) fn rules(
    ctx: &mut Ctx<'_>,
    obj: Subject<'_>,
    spec: &HttpRouteSpec,
    issues: &mut Issues,
) -> Vec<RouteSpec> {
    let source = ctx.source(obj);
    let mut out = Vec::new();
    for (i, rule) in spec.rules.iter().enumerate() {
        let field = format!("spec.rules[{i}]");
        match rule_specs(ctx, obj, &field, i, rule, &source, issues) {
            Ok(specs) => {
                issues.kept += 1;
                out.extend(specs);
            }
            Err((f, reason, msg)) => issues.drop_rule(ctx, obj, f, reason, msg),
        }
    }
    out
}

type RuleError = (String, &'static str, String);

fn rule_specs(
    ctx: &mut Ctx<'_>,
    obj: Subject<'_>,
    field: &str,
    i: usize,
    rule: &HttpRouteRule,
    source: &std::sync::Arc<str>,
    issues: &mut Issues,
) -> Result<Vec<RouteSpec>, RuleError> {
    let key = obj.key;
    let index = i.to_string();
    let rule_id = rule.name.as_deref().unwrap_or(&index);
    let owner = ctx.shared_text(&["httproute/", &key.namespace, "/", &key.name, "/", rule_id]);
    let timeouts = timeouts(rule, field)?;
    let default_match = [HttpRouteMatch::default()];
    let matches: &[HttpRouteMatch] = if rule.matches.is_empty() {
        &default_match
    } else {
        &rule.matches
    };
    // Matches are checked before anything is built.
    let mut conditions = Vec::with_capacity(matches.len());
    for (j, m) in matches.iter().enumerate() {
        conditions.push(conditions_of(m, &format!("{field}.matches[{j}]"))?);
    }
    if rule.retry.is_some() {
        return Err((
            format!("{field}.retry"),
            UNSUPPORTED_VALUE,
            "retry is not supported".into(),
        ));
    }
    if rule.session_persistence.is_some() {
        return Err((
            format!("{field}.sessionPersistence"),
            UNSUPPORTED_VALUE,
            "sessionPersistence is not supported".into(),
        ));
    }
    let input = RuleInput {
        obj,
        field,
        owner: &owner,
        filters: &rule.filters,
        backend_refs: &rule.backend_refs,
        allowed: FILTERS,
        grpc: false,
    };
    let parts = rules::read(ctx, input, issues)?;
    let mut out = Vec::with_capacity(conditions.len());
    let several = conditions.len() > 1;
    for (j, c) in conditions.into_iter().enumerate() {
        let prefix = match &c.path {
            PathSpec::Prefix(p) => Some(p.as_str()),
            _ => None,
        };
        let plugins = parts
            .plugins_for(prefix)
            .map_err(|e| (e.field, UNSUPPORTED_VALUE, e.message))?;
        let name = if several {
            ctx.shared_text(&[&owner, ".", &j.to_string()])
        } else {
            owner.clone()
        };
        let mut spec = base_spec(name, source.clone());
        spec.paths = vec![c.path];
        spec.methods = c.method.into_iter().collect();
        spec.headers = c.headers;
        spec.query = c.query;
        spec.backends = parts.backends.clone();
        spec.mirrors = parts.mirrors.clone();
        spec.cache = parts.cache.clone();
        spec.ai = parts.ai.clone();
        spec.timeouts = timeouts;
        spec.plugins = plugins;
        out.push(spec);
    }
    Ok(out)
}

/// The conditions of one match.
struct Conditions {
    path: PathSpec,
    method: Option<http::Method>,
    headers: Vec<ValueSpec>,
    query: Vec<ValueSpec>,
}

fn conditions_of(m: &HttpRouteMatch, field: &str) -> Result<Conditions, RuleError> {
    let unsupported = |f: String, msg: String| (f, UNSUPPORTED_VALUE, msg);
    let path = match &m.path {
        None => PathSpec::Prefix("/".into()),
        Some(p) => {
            let f = format!("{field}.path");
            match p.kind.as_str() {
                "Exact" => validate::literal_path(&p.value)
                    .map(|_| PathSpec::Exact(p.value.clone()))
                    .map_err(|e| unsupported(format!("{f}.value"), e))?,
                "PathPrefix" => validate::literal_path(&p.value)
                    .map(|_| PathSpec::Prefix(p.value.clone()))
                    .map_err(|e| unsupported(format!("{f}.value"), e))?,
                "RegularExpression" => validate::pattern(&p.value)
                    .map(PathSpec::RegularExpression)
                    .map_err(|e| unsupported(format!("{f}.value"), e))?,
                other => {
                    return Err(unsupported(
                        format!("{f}.type"),
                        format!("path match type {other:?} is not supported"),
                    ));
                }
            }
        }
    };
    let method = match &m.method {
        None => None,
        Some(name) => Some(method(name).ok_or_else(|| {
            unsupported(
                format!("{field}.method"),
                format!("{name:?} is not a method"),
            )
        })?),
    };
    let headers = header_conditions(&m.headers, field)?;
    let mut query = Vec::with_capacity(m.query_params.len());
    for (k, q) in m.query_params.iter().enumerate() {
        let f = format!("{field}.queryParams[{k}]");
        query.push(ValueSpec {
            name: q.name.clone(),
            matcher: value_matcher(&q.kind, &q.value, &f)?,
        });
    }
    Ok(Conditions {
        path,
        method,
        headers,
        query,
    })
}

/// Header conditions, for both route kinds.
pub(super) fn header_conditions(
    headers: &[HeaderMatch],
    field: &str,
) -> Result<Vec<ValueSpec>, RuleError> {
    let mut out = Vec::with_capacity(headers.len());
    for (k, h) in headers.iter().enumerate() {
        let f = format!("{field}.headers[{k}]");
        let name = validate::header_name(&h.name)
            .map_err(|e| (format!("{f}.name"), UNSUPPORTED_VALUE, e))?;
        // The first condition on a name counts, as the API says.
        if out.iter().any(|v: &ValueSpec| v.name == name) {
            continue;
        }
        out.push(ValueSpec {
            name,
            matcher: value_matcher(&h.kind, &h.value, &f)?,
        });
    }
    Ok(out)
}

fn value_matcher(kind: &str, value: &str, field: &str) -> Result<ValueMatcher, RuleError> {
    match kind {
        "Exact" => Ok(ValueMatcher::Exact(value.to_owned())),
        "RegularExpression" => validate::pattern(value)
            .map(ValueMatcher::RegularExpression)
            .map_err(|e| (format!("{field}.value"), UNSUPPORTED_VALUE, e)),
        other => Err((
            format!("{field}.type"),
            UNSUPPORTED_VALUE,
            format!("match type {other:?} is not supported"),
        )),
    }
}

fn method(name: &str) -> Option<http::Method> {
    use http::Method;
    Some(match name {
        "GET" => Method::GET,
        "HEAD" => Method::HEAD,
        "POST" => Method::POST,
        "PUT" => Method::PUT,
        "DELETE" => Method::DELETE,
        "CONNECT" => Method::CONNECT,
        "OPTIONS" => Method::OPTIONS,
        "TRACE" => Method::TRACE,
        "PATCH" => Method::PATCH,
        _ => return None,
    })
}

/// `timeouts`: `request` bounds the time to the response head from the
/// request's arrival, `backendRequest` each attempt; the proxy keeps one
/// deadline, the shorter of the two. Zero disables a timeout.
fn timeouts(rule: &HttpRouteRule, field: &str) -> Result<Timeouts, RuleError> {
    let Some(t) = &rule.timeouts else {
        return Ok(Timeouts::default());
    };
    let read = |v: &Option<String>, name: &str| -> Result<Option<Duration>, RuleError> {
        v.as_deref()
            .map(|text| {
                rules::duration(text)
                    .map(|d| if d.is_zero() { UNLIMITED } else { d })
                    .map_err(|e| (format!("{field}.timeouts.{name}"), UNSUPPORTED_VALUE, e))
            })
            .transpose()
    };
    let request = read(&t.request, "request")?;
    let backend = read(&t.backend_request, "backendRequest")?;
    if let (Some(r), Some(b)) = (request, backend)
        && b > r
        && r != UNLIMITED
    {
        return Err((
            format!("{field}.timeouts.backendRequest"),
            UNSUPPORTED_VALUE,
            "backendRequest must not be longer than request".into(),
        ));
    }
    Ok(Timeouts {
        request: match (request, backend) {
            (Some(r), Some(b)) => Some(r.min(b)),
            (r, b) => r.or(b),
        },
        ..Timeouts::default()
    })
}
