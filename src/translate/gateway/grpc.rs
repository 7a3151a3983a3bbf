//! GRPCRoute rules to route specifications: one per match.
//!
//! A gRPC call is a `POST` to `/service/method`, so a method match is a
//! path condition: service and method give an exact path, a service alone
//! the prefix `/service` (whole elements: `/pkg.Svc` does not cover
//! `/pkg.SvcX/...`), a method alone or regular expressions a pattern.
//! Backends speak gRPC over HTTP/2 without TLS unless their Service port's
//! `appProtocol` says otherwise.

use super::http::header_conditions;
use super::rules::{self, RuleInput};
use super::status::names::*;
use super::{Issues, base_spec};
use crate::api::gateway_api::{GrpcMethodMatch, GrpcRouteMatch, GrpcRouteRule, GrpcRouteSpec};
use crate::routing::{PathSpec, RouteSpec};
use crate::translate::diagnostics::Subject;
use crate::translate::{Ctx, validate};

/// Filter types of GRPCRoute rules.
const FILTERS: &[&str] = &[
    "RequestHeaderModifier",
    "ResponseHeaderModifier",
    "RequestMirror",
    "ExtensionRef",
];

type RuleError = (String, &'static str, String);

/// The specifications of every servable rule of `spec`.
pub(super) fn rules(
    ctx: &mut Ctx<'_>,
    obj: Subject<'_>,
    spec: &GrpcRouteSpec,
    issues: &mut Issues,
) -> Vec<RouteSpec> {
    let source = ctx.source(obj);
    let mut out = Vec::new();
    let default_rule = [GrpcRouteRule::default()];
    let rules: &[GrpcRouteRule] = if spec.rules.is_empty() {
        &default_rule
    } else {
        &spec.rules
    };
    for (i, rule) in rules.iter().enumerate() {
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

fn rule_specs(
    ctx: &mut Ctx<'_>,
    obj: Subject<'_>,
    field: &str,
    i: usize,
    rule: &GrpcRouteRule,
    source: &std::sync::Arc<str>,
    issues: &mut Issues,
) -> Result<Vec<RouteSpec>, RuleError> {
    let key = obj.key;
    let index = i.to_string();
    let rule_id = rule.name.as_deref().unwrap_or(&index);
    let owner = ctx.shared_text(&["grpcroute/", &key.namespace, "/", &key.name, "/", rule_id]);
    let default_match = [GrpcRouteMatch::default()];
    let matches: &[GrpcRouteMatch] = if rule.matches.is_empty() {
        &default_match
    } else {
        &rule.matches
    };
    let mut conditions = Vec::with_capacity(matches.len());
    for (j, m) in matches.iter().enumerate() {
        let f = format!("{field}.matches[{j}]");
        let path = match &m.method {
            None => PathSpec::Prefix("/".into()),
            Some(mm) => method_path(mm, &format!("{f}.method"))?,
        };
        conditions.push((path, header_conditions(&m.headers, &f)?));
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
        grpc: true,
    };
    let parts = rules::read(ctx, input, issues)?;
    let plugins = parts
        .plugins_for(None)
        .map_err(|e| (e.field, UNSUPPORTED_VALUE, e.message))?;
    let several = conditions.len() > 1;
    let mut out = Vec::with_capacity(conditions.len());
    for (j, (path, headers)) in conditions.into_iter().enumerate() {
        let name = if several {
            ctx.shared_text(&[&owner, ".", &j.to_string()])
        } else {
            owner.clone()
        };
        let mut spec = base_spec(name, source.clone());
        spec.paths = vec![path];
        spec.headers = headers;
        spec.backends = parts.backends.clone();
        spec.mirrors = parts.mirrors.clone();
        spec.cache = parts.cache.clone();
        spec.plugins = plugins.clone();
        spec.websocket = false;
        out.push(spec);
    }
    Ok(out)
}

/// The path condition of a method match.
fn method_path(m: &GrpcMethodMatch, field: &str) -> Result<PathSpec, RuleError> {
    let unsupported = |f: String, msg: String| (f, UNSUPPORTED_VALUE, msg);
    let (service, method) = (m.service.as_deref(), m.method.as_deref());
    match m.kind.as_str() {
        "Exact" => {
            for (name, v) in [("service", service), ("method", method)] {
                if let Some(v) = v
                    && (v.is_empty()
                        || v.contains('/')
                        || validate::literal_path(&format!("/{v}")).is_err())
                {
                    return Err(unsupported(
                        format!("{field}.{name}"),
                        format!("{v:?} is not a gRPC {name} name"),
                    ));
                }
            }
            Ok(match (service, method) {
                (Some(s), Some(m)) => PathSpec::Exact(format!("/{s}/{m}")),
                (Some(s), None) => PathSpec::Prefix(format!("/{s}")),
                (None, Some(m)) => {
                    let p = format!("/[^/]+/{}", regex_syntax::escape(m));
                    PathSpec::RegularExpression(
                        validate::pattern(&p)
                            .map_err(|e| unsupported(format!("{field}.method"), e))?,
                    )
                }
                (None, None) => {
                    return Err(unsupported(
                        field.to_owned(),
                        "a method match needs a service or a method".into(),
                    ));
                }
            })
        }
        "RegularExpression" => {
            for (name, v) in [("service", service), ("method", method)] {
                if let Some(v) = v {
                    validate::pattern(v).map_err(|e| unsupported(format!("{field}.{name}"), e))?;
                }
            }
            let p = format!(
                "/(?:{})/(?:{})",
                service.unwrap_or("[^/]+"),
                method.unwrap_or("[^/]+")
            );
            validate::pattern(&p)
                .map(PathSpec::RegularExpression)
                .map_err(|e| unsupported(field.to_owned(), e))
        }
        other => Err(unsupported(
            format!("{field}.type"),
            format!("method match type {other:?} is not supported"),
        )),
    }
}
