//! What HTTPRoute and GRPCRoute rules share: backends, mirrors, filters
//! and the plugins of `ExtensionRef`s.
//!
//! A backend that cannot be used (not a Service, in another namespace
//! without a ReferenceGrant, missing, or without the port) is left out and
//! reported in `ResolvedRefs`; a rule left with no backend answers `500`,
//! as the Gateway API requires. A rule that mixes usable and unusable
//! backends sends everything to the usable ones (the Gateway API asks for
//! `500` on the unusable share). An `ExtensionRef` that cannot be resolved
//! makes its rule answer `500` too: a rule never serves without the
//! plugins it asked for.

use std::sync::Arc;

use http::StatusCode;

use super::refs::{self, RefEnd};
use super::status::names::*;
use super::{GRPC_ROUTE, HTTP_ROUTE, Issues};
use crate::api::gateway_api::{BackendObjectReference, BackendRef, GROUP, HttpRouteFilter};
use crate::api::{GROUP as SLUICEGATE_GROUP, PortRef};
use crate::plugins::filters::FixedStatus;
use crate::plugins::filters::headers::{RequestHeaders, ResponseHeaders};
use crate::plugins::filters::redirect::Redirect;
use crate::plugins::filters::rewrite::UrlRewrite;
use crate::plugins::{self, ConfigError, Plugin};
use crate::routing::{BackendSpec, MirrorSpec, Protocol, UpstreamKey};
use crate::translate::diagnostics::{Kind, Subject};
use crate::translate::protocol::{self, Destination, ProtocolRequest};
use crate::translate::{Ctx, ObjectKey, plugins as route_plugins};

/// The parts of a rule every one of its matches shares.
pub(super) struct RuleParts<'r> {
    pub backends: Vec<BackendSpec>,
    pub mirrors: Vec<MirrorSpec>,
    /// Global and `ExtensionRef` plugins, built once per rule.
    pub plugins: Vec<Arc<dyn Plugin>>,
    /// The `proxyCache` of those PluginConfigs, if any.
    pub cache: Option<Arc<crate::cache::CacheRule>>,
    /// The `aiProxy` of those PluginConfigs: the rule answers from LLM
    /// providers instead of backends.
    pub ai: Option<Arc<crate::ai::AiRoute>>,
    /// Filters built per match (a prefix rewrite depends on the match).
    filters: Vec<(String, &'r HttpRouteFilter)>,
    /// The rule answers this instead of forwarding.
    fail: Option<&'static str>,
}

impl RuleParts<'_> {
    /// The plugins of one match, whose path prefix is `prefix` when it is
    /// a prefix match.
    pub fn plugins_for(&self, prefix: Option<&str>) -> Result<Vec<Arc<dyn Plugin>>, ConfigError> {
        let mut list = self.plugins.clone();
        for (field, f) in &self.filters {
            let p =
                match f.kind.as_str() {
                    "RequestHeaderModifier" => f.request_header_modifier.as_ref().map(|c| {
                        RequestHeaders::build(c, &format!("{field}.requestHeaderModifier"))
                    }),
                    "ResponseHeaderModifier" => f.response_header_modifier.as_ref().map(|c| {
                        ResponseHeaders::build(c, &format!("{field}.responseHeaderModifier"))
                    }),
                    "URLRewrite" => f
                        .url_rewrite
                        .as_ref()
                        .map(|c| UrlRewrite::build(c, prefix, &format!("{field}.urlRewrite"))),
                    "RequestRedirect" => f
                        .request_redirect
                        .as_ref()
                        .map(|c| Redirect::build(c, prefix, &format!("{field}.requestRedirect"))),
                    _ => None,
                };
            if let Some(p) = p {
                list.push(p?);
            }
        }
        if let Some(why) = self.fail {
            list.push(FixedStatus::build(StatusCode::INTERNAL_SERVER_ERROR, why));
        }
        plugins::sort(&mut list);
        Ok(list)
    }
}

/// What reads a rule needs to know about the route.
#[derive(Clone, Copy)]
pub(super) struct RuleInput<'r> {
    pub obj: Subject<'r>,
    /// `spec.rules[i]`.
    pub field: &'r str,
    /// Owner of the rule's plugin state: the rule's name in the table.
    pub owner: &'r str,
    pub filters: &'r [HttpRouteFilter],
    pub backend_refs: &'r [BackendRef],
    /// Filter types the route kind allows.
    pub allowed: &'r [&'r str],
    pub grpc: bool,
}

/// Reads the filters and backends of a rule. `Err` drops the rule, with
/// the reason and message for its route's status.
pub(super) fn read<'r>(
    ctx: &mut Ctx<'_>,
    input: RuleInput<'r>,
    issues: &mut Issues,
) -> Result<RuleParts<'r>, (String, &'static str, String)> {
    let RuleInput { obj, field, .. } = input;
    // Filters of a single backend are the rule's own; with several
    // backends they would have to run after the backend is chosen.
    let with_filters = input
        .backend_refs
        .iter()
        .filter(|b| !b.filters.is_empty())
        .count();
    if with_filters > 0 && input.backend_refs.len() > 1 {
        return Err((
            format!("{field}.backendRefs"),
            UNSUPPORTED_VALUE,
            "filters on backendRefs are supported only when the rule has a single backend".into(),
        ));
    }
    let all_filters = input
        .filters
        .iter()
        .enumerate()
        .map(|(j, f)| (format!("{field}.filters[{j}]"), f))
        .chain(
            input
                .backend_refs
                .iter()
                .flat_map(|b| b.filters.iter())
                .enumerate()
                .map(|(j, f)| (format!("{field}.backendRefs[0].filters[{j}]"), f)),
        );
    let mut filters = Vec::new();
    let mut extensions: Vec<(String, &str)> = Vec::new();
    let mut mirrors = Vec::new();
    let mut fail = None;
    let (mut redirect, mut rewrite) = (false, false);
    for (f_field, f) in all_filters {
        if !input.allowed.contains(&f.kind.as_str()) {
            return Err((
                format!("{f_field}.type"),
                UNSUPPORTED_VALUE,
                format!("filter type {:?} is not supported here", f.kind),
            ));
        }
        let set = match f.kind.as_str() {
            "RequestHeaderModifier" => f.request_header_modifier.is_some(),
            "ResponseHeaderModifier" => f.response_header_modifier.is_some(),
            "RequestRedirect" => {
                redirect = true;
                f.request_redirect.is_some()
            }
            "URLRewrite" => {
                rewrite = true;
                f.url_rewrite.is_some()
            }
            "RequestMirror" => f.request_mirror.is_some(),
            "ExtensionRef" => f.extension_ref.is_some(),
            "CORS" => f.cors.is_some(),
            _ => false,
        };
        if !set {
            return Err((
                f_field,
                UNSUPPORTED_VALUE,
                format!("a {} filter needs its settings", f.kind),
            ));
        }
        match f.kind.as_str() {
            "RequestMirror" => {
                if let Some(m) = &f.request_mirror
                    && let Some(spec) = mirror(ctx, input, &f_field, m, issues)
                {
                    mirrors.push(spec);
                }
            }
            "ExtensionRef" => {
                if let Some(e) = &f.extension_ref {
                    if e.group == SLUICEGATE_GROUP && e.kind == "PluginConfig" {
                        extensions.push((format!("{f_field}.extensionRef"), e.name.as_str()));
                    } else {
                        issues.unresolved(
                            ctx,
                            obj,
                            format!("{f_field}.extensionRef"),
                            INVALID_KIND,
                            format!(
                                "{} is not a kind of extension Sluicegate knows (use {SLUICEGATE_GROUP}/PluginConfig); the rule answers 500",
                                group_kind(&e.group, &e.kind)
                            ),
                        );
                        fail = Some("the route's filter cannot be resolved");
                    }
                }
            }
            "CORS" => {
                return Err((
                    f_field,
                    UNSUPPORTED_VALUE,
                    "the CORS filter is not supported; use the cors plugin through an ExtensionRef"
                        .into(),
                ));
            }
            _ => filters.push((f_field, f)),
        }
    }
    if redirect && rewrite {
        return Err((
            format!("{field}.filters"),
            INCOMPATIBLE_FILTERS,
            "RequestRedirect and URLRewrite cannot be used together".into(),
        ));
    }
    let (plugins, cache, ai) = match extension_plugins(ctx, obj, input.owner, &extensions, issues) {
        Some(chosen) => (chosen.plugins, chosen.cache, chosen.ai),
        None => {
            fail = Some("the route's plugins cannot be used");
            (Vec::new(), None, None)
        }
    };
    if ai.is_some() {
        // The providers are the rule's backends (as for an ApiRoute with
        // `aiProxy`), and they speak HTTP/1.1 or HTTP/2 JSON, not gRPC.
        if input.grpc {
            return Err((
                format!("{field}.filters"),
                UNSUPPORTED_VALUE,
                "aiProxy (from an ExtensionRef PluginConfig) is for HTTPRoute rules, not GRPCRoute"
                    .into(),
            ));
        }
        if !input.backend_refs.is_empty() || redirect {
            return Err((
                format!("{field}.backendRefs"),
                UNSUPPORTED_VALUE,
                "a rule with aiProxy (from an ExtensionRef PluginConfig) answers from its providers and takes no backendRefs or RequestRedirect; remove them".into(),
            ));
        }
    }
    let backends = if redirect || ai.is_some() {
        Vec::new()
    } else {
        backends(ctx, input, issues)
    };
    if !redirect && ai.is_none() && fail.is_none() && backends.iter().all(|b| b.weight == 0) {
        fail = Some(if input.backend_refs.is_empty() {
            "the route's rule has no backend"
        } else {
            "no backend of the route's rule can be used"
        });
    }
    Ok(RuleParts {
        backends,
        mirrors,
        plugins,
        cache,
        ai,
        filters,
        fail,
    })
}

/// The global plugins and those of the rule's `ExtensionRef`s (several
/// PluginConfigs merge, later ones overriding earlier ones plugin by
/// plugin). `None` when one cannot be used; the problem is reported.
fn extension_plugins(
    ctx: &mut Ctx<'_>,
    obj: Subject<'_>,
    owner: &str,
    refs: &[(String, &str)],
    issues: &mut Issues,
) -> Option<route_plugins::Chosen> {
    let namespace = obj.key.namespace.as_str();
    for (field, name) in refs {
        if !ctx
            .state
            .plugin_configs
            .contains_key(&ObjectKey::new(namespace, *name))
        {
            issues.unresolved(
                ctx,
                obj,
                field.clone(),
                PLUGIN_CONFIG_NOT_FOUND,
                format!("PluginConfig {namespace}/{name} not found; the rule answers 500 until it exists"),
            );
            return None;
        }
    }
    let merged = match refs {
        [] | [_] => None,
        [first, rest @ ..] => {
            let pcs = &ctx.state.plugin_configs;
            let get = |n: &str| &pcs[&ObjectKey::new(namespace, n)].spec.plugins;
            let mut set = get(first.1).clone();
            for (_, n) in rest {
                set = set.overridden_by(get(n));
            }
            Some(set)
        }
    };
    let sources = route_plugins::RoutePlugins {
        inline: merged.as_ref().map(|m| (m, refs[0].0.clone())),
        reference: match refs {
            [(_, name)] => Some(*name),
            _ => None,
        },
        owner,
    };
    match route_plugins::for_route(ctx, obj, sources) {
        Ok(list) => Some(list),
        Err(()) => {
            let (field, name) = refs.first().map_or(("", ""), |(f, n)| (f.as_str(), *n));
            issues.refs.push((
                PLUGIN_CONFIG_NOT_FOUND,
                format!("{field}: PluginConfig {namespace}/{name} cannot be used (see its status); the rule answers 500"),
            ));
            None
        }
    }
}

/// A Service reference as the rule's checks see it.
struct ServiceRef<'a> {
    group: &'a str,
    kind: &'a str,
    name: &'a str,
    namespace: Option<&'a str>,
    port: Option<i32>,
}

/// The upstream and the Service port's `appProtocol` of a Service
/// reference, or the reason and message of why it cannot be used.
fn service<'s>(
    ctx: &mut Ctx<'s>,
    route: Subject<'_>,
    r: &ServiceRef<'_>,
) -> Result<(UpstreamKey, Option<&'s str>, String), (&'static str, String)> {
    if !r.group.is_empty() || r.kind != "Service" {
        return Err((
            INVALID_KIND,
            format!(
                "{} is not a kind of backend Sluicegate knows; use a Service",
                group_kind(r.group, r.kind)
            ),
        ));
    }
    let route_ns = route.key.namespace.as_str();
    let ns = r.namespace.unwrap_or(route_ns);
    let from_kind = match route.kind {
        Kind::GRPCRoute => GRPC_ROUTE,
        _ => HTTP_ROUTE,
    };
    let from = RefEnd {
        group: GROUP,
        kind: from_kind,
        namespace: route_ns,
    };
    let to = RefEnd {
        group: "",
        kind: "Service",
        namespace: ns,
    };
    if !refs::granted(ctx.state, from, to, r.name) {
        return Err((
            REF_NOT_PERMITTED,
            format!(
                "Service {ns}/{} is in another namespace and no ReferenceGrant there allows it",
                r.name
            ),
        ));
    }
    let Some(port) = r
        .port
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p > 0)
    else {
        return Err((BACKEND_NOT_FOUND, "a Service backend needs a port".into()));
    };
    let resolved = ctx.resolver.resolve(ns, r.name, &PortRef::Number(port));
    if let Some(e) = resolved.error {
        return Err((BACKEND_NOT_FOUND, e.to_string()));
    }
    Ok((resolved.upstream, resolved.app_protocol, ns.to_owned()))
}

/// `Kind` for the core group, `group/Kind` otherwise.
pub(super) fn group_kind(group: &str, kind: &str) -> String {
    if group.is_empty() {
        kind.to_owned()
    } else {
        format!("{group}/{kind}")
    }
}

/// The usable backends of a rule; the others are reported.
fn backends(ctx: &mut Ctx<'_>, input: RuleInput<'_>, issues: &mut Issues) -> Vec<BackendSpec> {
    let mut out = Vec::with_capacity(input.backend_refs.len());
    for (j, b) in input.backend_refs.iter().enumerate() {
        let field = format!("{}.backendRefs[{j}]", input.field);
        let r = ServiceRef {
            group: &b.group,
            kind: &b.kind,
            name: &b.name,
            namespace: b.namespace.as_deref(),
            port: b.port,
        };
        match service(ctx, input.obj, &r) {
            Ok((upstream, app_protocol, ns)) => {
                let requested = app_protocol.and_then(Protocol::from_app_protocol);
                // gRPC goes over HTTP/2; a Service port that says h2c or
                // grpcs is taken at its word.
                let protocol = if input.grpc {
                    Some(match requested {
                        Some(p @ (Protocol::H2c | Protocol::Grpc | Protocol::Grpcs)) => p,
                        Some(Protocol::Https) => Protocol::Grpcs,
                        _ => Protocol::Grpc,
                    })
                } else {
                    None
                };
                let req = ProtocolRequest {
                    protocol,
                    field: field.clone(),
                    ..ProtocolRequest::default()
                };
                // The TLS server name of a Service in another namespace
                // names that namespace.
                let protocol = if ns == input.obj.key.namespace {
                    protocol::resolve(
                        ctx,
                        input.obj,
                        &req,
                        app_protocol,
                        Destination::Service(&b.name),
                    )
                } else {
                    let host = format!("{}.{ns}.svc", b.name);
                    protocol::resolve(ctx, input.obj, &req, app_protocol, Destination::Host(&host))
                };
                out.push(BackendSpec {
                    upstream,
                    weight: u32::try_from(b.weight).unwrap_or(0),
                    protocol,
                });
            }
            Err((reason, msg)) => {
                issues.unresolved(ctx, input.obj, field, reason, msg);
            }
        }
    }
    out
}

/// A `RequestMirror` filter's target, unless it cannot be used.
fn mirror(
    ctx: &mut Ctx<'_>,
    input: RuleInput<'_>,
    field: &str,
    m: &crate::api::gateway_api::HttpRequestMirrorFilter,
    issues: &mut Issues,
) -> Option<MirrorSpec> {
    let b: &BackendObjectReference = &m.backend_ref;
    let r = ServiceRef {
        group: &b.group,
        kind: &b.kind,
        name: &b.name,
        namespace: b.namespace.as_deref(),
        port: b.port,
    };
    let field = format!("{field}.requestMirror.backendRef");
    let (numerator, denominator) = match (m.percent, m.fraction) {
        (Some(p), _) => (p.clamp(0, 100) as u32, 100),
        (None, Some(f)) => (f.numerator.max(0) as u32, f.denominator.max(1) as u32),
        (None, None) => (1, 1),
    };
    match service(ctx, input.obj, &r) {
        Ok((upstream, _, _)) => Some(MirrorSpec {
            upstream,
            numerator: numerator.min(denominator),
            denominator,
        }),
        Err((reason, msg)) => {
            issues.unresolved(
                ctx,
                input.obj,
                field,
                reason,
                format!("{msg}; requests are not mirrored"),
            );
            None
        }
    }
}

/// Parses a Gateway API duration (`1h`, `500ms`, `1m30s`): one to four
/// numbers of up to five digits, each with a unit of `h`, `m`, `s` or
/// `ms`.
pub(super) fn duration(text: &str) -> Result<std::time::Duration, String> {
    let bad = || format!("{text:?} is not a duration like 10s, 500ms or 1m30s");
    let mut rest = text;
    let mut total = std::time::Duration::ZERO;
    let mut parts = 0;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 || digits > 5 {
            return Err(bad());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let (unit, len) = if rest.starts_with("ms") {
            (std::time::Duration::from_millis(1), 2)
        } else if rest.starts_with('h') {
            (std::time::Duration::from_secs(3600), 1)
        } else if rest.starts_with('m') {
            (std::time::Duration::from_secs(60), 1)
        } else if rest.starts_with('s') {
            (std::time::Duration::from_secs(1), 1)
        } else {
            return Err(bad());
        };
        rest = &rest[len..];
        total += unit * n as u32;
        parts += 1;
    }
    if parts == 0 || parts > 4 {
        return Err(bad());
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn durations_parse_as_the_api_writes_them() {
        assert_eq!(duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(duration("1h2m3s4ms"), Ok(Duration::from_millis(3_723_004)));
        assert_eq!(duration("0s"), Ok(Duration::ZERO));
        for bad in ["", "10", "s", "1.5s", "123456s", "1d", "1s1s1s1s1s", "-1s"] {
            assert!(duration(bad).is_err(), "{bad}");
        }
    }
}
