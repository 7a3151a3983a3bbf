//! Ingress annotations. Each setting has a Sluicegate name and, for users
//! migrating from ingress-nginx, the ingress-nginx name; Sluicegate's wins
//! when both are present.

use k8s_openapi::api::networking::v1::Ingress;

use super::Ctx;
use super::diagnostics::{Reason, Subject};
use super::protocol::ProtocolRequest;
use crate::api::{
    AuthCommon, BasicAuth, Cors, ForwardAuth, HeaderEdits, IpRestriction, LimitConn, LimitReq,
    LocalObjectRef, Plugins, ProxyRewrite, RedirectTo, RegexReplace, RequestBodyLimit,
};
use crate::routing::Protocol;

pub(super) const BACKEND_PROTOCOL: [&str; 2] = [
    "sluicegate.io/backend-protocol",
    "nginx.ingress.kubernetes.io/backend-protocol",
];
pub(super) const PROXY_SSL_SECRET: [&str; 2] = [
    "sluicegate.io/proxy-ssl-secret",
    "nginx.ingress.kubernetes.io/proxy-ssl-secret",
];
pub(super) const PROXY_SSL_VERIFY: [&str; 2] = [
    "sluicegate.io/proxy-ssl-verify",
    "nginx.ingress.kubernetes.io/proxy-ssl-verify",
];
pub(super) const PROXY_SSL_NAME: [&str; 2] = [
    "sluicegate.io/proxy-ssl-name",
    "nginx.ingress.kubernetes.io/proxy-ssl-name",
];

pub(super) const AUTH_TLS_SECRET: [&str; 2] = [
    "sluicegate.io/auth-tls-secret",
    "nginx.ingress.kubernetes.io/auth-tls-secret",
];
pub(super) const AUTH_TLS_VERIFY_CLIENT: [&str; 2] = [
    "sluicegate.io/auth-tls-verify-client",
    "nginx.ingress.kubernetes.io/auth-tls-verify-client",
];

pub(super) const LIMIT_RPS: [&str; 2] = [
    "sluicegate.io/limit-rps",
    "nginx.ingress.kubernetes.io/limit-rps",
];
pub(super) const LIMIT_RPM: [&str; 2] = [
    "sluicegate.io/limit-rpm",
    "nginx.ingress.kubernetes.io/limit-rpm",
];
pub(super) const LIMIT_CONNECTIONS: [&str; 2] = [
    "sluicegate.io/limit-connections",
    "nginx.ingress.kubernetes.io/limit-connections",
];
pub(super) const LIMIT_BURST_MULTIPLIER: [&str; 2] = [
    "sluicegate.io/limit-burst-multiplier",
    "nginx.ingress.kubernetes.io/limit-burst-multiplier",
];

/// The first of `names` the Ingress carries, with its value.
pub(super) fn get<'i>(
    ingress: &'i Ingress,
    names: [&'static str; 2],
) -> Option<(&'static str, &'i str)> {
    let annotations = ingress.metadata.annotations.as_ref()?;
    names
        .into_iter()
        .find_map(|n| annotations.get(n).map(|v| (n, v.as_str())))
}

/// The field of annotation `name`, for diagnostics.
pub(super) fn field(name: &str) -> String {
    format!("metadata.annotations[{name:?}]")
}

/// A boolean annotation: `true`/`false`, or ingress-nginx's `on`/`off`.
pub(super) fn flag(
    ctx: &mut Ctx<'_>,
    obj: Subject<'_>,
    ingress: &Ingress,
    names: [&'static str; 2],
    default: bool,
) -> bool {
    let Some((name, value)) = get(ingress, names) else {
        return default;
    };
    match value.trim() {
        "true" | "on" => true,
        "false" | "off" => false,
        other => {
            ctx.diags.report(
                obj,
                field(name),
                Reason::InvalidSpec,
                format!("{other:?} is not \"true\" or \"false\"; using {default}"),
            );
            default
        }
    }
}

/// How the Ingress's backends are spoken to: `backend-protocol`, and for
/// TLS `proxy-ssl-secret` (its `ca.crt` verifies the backend when
/// `proxy-ssl-verify` is on; its `tls.crt` / `tls.key`, when present, are
/// presented as the client certificate) and `proxy-ssl-name`.
pub(super) fn protocol(ctx: &mut Ctx<'_>, obj: Subject<'_>, ingress: &Ingress) -> ProtocolRequest {
    let mut req = ProtocolRequest {
        field: "metadata.annotations".to_owned(),
        ..ProtocolRequest::default()
    };
    if let Some((name, value)) = get(ingress, BACKEND_PROTOCOL) {
        req.field = field(name);
        match Protocol::parse(value) {
            Some(p) => req.protocol = Some(p),
            None => ctx.diags.report(
                obj,
                field(name),
                Reason::Unsupported,
                format!("{value:?} is not one of HTTP, HTTPS, H2C, GRPC, GRPCS; using the Service's appProtocol or HTTP"),
            ),
        }
    }
    let verify = flag(ctx, obj, ingress, PROXY_SSL_VERIFY, false);
    let secret = get(ingress, PROXY_SSL_SECRET).and_then(|(name, value)| {
        // Secrets are read from the Ingress's own namespace only: a
        // reference elsewhere would let an Ingress author use Secrets they
        // cannot read.
        let (ns, secret) = value.trim().split_once('/').unwrap_or(("", value.trim()));
        if !ns.is_empty() && ns != obj.key.namespace {
            ctx.diags.report(
                obj,
                field(name),
                Reason::Unsupported,
                format!(
                    "Secret {value:?} is in another namespace; only Secrets in {:?} can be used",
                    obj.key.namespace
                ),
            );
            return None;
        }
        (!secret.is_empty()).then(|| secret.to_owned())
    });
    if let Some(s) = &secret {
        let has_pair = ctx
            .state
            .secrets
            .get(&super::ObjectKey::new(obj.key.namespace.clone(), s.clone()))
            .is_some_and(|sec| {
                super::tls::secret_field(sec, "tls.crt").is_some()
                    && super::tls::secret_field(sec, "tls.key").is_some()
            });
        if has_pair {
            req.client_secret = Some(s.clone());
        }
    }
    if verify {
        // Without a CA there is nothing to verify against: fail closed, as
        // nginx does.
        req.ca_secret = Some(secret.unwrap_or_default());
    }
    req.server_name = get(ingress, PROXY_SSL_NAME).map(|(_, v)| v.trim().to_owned());
    // Problems with the TLS settings are reported on the first TLS
    // annotation present.
    if let Some((name, _)) = [PROXY_SSL_SECRET, PROXY_SSL_VERIFY, PROXY_SSL_NAME]
        .into_iter()
        .find_map(|names| get(ingress, names))
    {
        req.field = field(name);
    }
    req
}

/// The Secret named by a `namespace/name` or `name` annotation. Secrets
/// are read from the Ingress's own namespace only: a reference elsewhere
/// would let an Ingress author use Secrets they cannot read.
fn secret_name(
    ctx: &mut Ctx<'_>,
    obj: Subject<'_>,
    ingress: &Ingress,
    names: [&'static str; 2],
) -> Option<String> {
    let (name, value) = get(ingress, names)?;
    let (ns, secret) = value.trim().split_once('/').unwrap_or(("", value.trim()));
    if !ns.is_empty() && ns != obj.key.namespace {
        ctx.diags.report(
            obj,
            field(name),
            Reason::Unsupported,
            format!(
                "Secret {value:?} is in another namespace; only Secrets in {:?} can be used",
                obj.key.namespace
            ),
        );
        return None;
    }
    (!secret.is_empty()).then(|| secret.to_owned())
}

/// Client certificate authentication from `auth-tls-secret` (its
/// `ca.crt`) and `auth-tls-verify-client` (`on`, the default; `optional`;
/// `off`): the Secret name and whether a certificate is optional.
pub(super) fn client_auth(
    ctx: &mut Ctx<'_>,
    obj: Subject<'_>,
    ingress: &Ingress,
) -> Option<(String, bool, String)> {
    let secret = secret_name(ctx, obj, ingress, AUTH_TLS_SECRET)?;
    let secret_field = get(ingress, AUTH_TLS_SECRET).map_or_else(String::new, |(n, _)| field(n));
    let optional = match get(ingress, AUTH_TLS_VERIFY_CLIENT) {
        None => false,
        Some((name, value)) => match value.trim() {
            "on" | "true" => false,
            "optional" => true,
            "off" | "false" => return None,
            other => {
                ctx.diags.report(
                    obj,
                    field(name),
                    Reason::Unsupported,
                    format!(
                        "{other:?} is not on, optional or off (optional_no_ca would pass unverified certificates); using on"
                    ),
                );
                false
            }
        },
    };
    Some((secret, optional, secret_field))
}

/// A positive whole number annotation, or a diagnostic.
fn count(
    ctx: &mut Ctx<'_>,
    obj: Subject<'_>,
    ingress: &Ingress,
    names: [&'static str; 2],
) -> Option<u64> {
    let (name, value) = get(ingress, names)?;
    match value.trim().parse::<u64>() {
        Ok(n) if n > 0 => Some(n),
        _ => {
            ctx.diags.report(
                obj,
                field(name),
                Reason::InvalidSpec,
                format!("{value:?} is not a positive whole number; ignored"),
            );
            None
        }
    }
}

/// Rate limits from the ingress-nginx annotations, per client address and
/// shared by every path of the Ingress, as ingress-nginx does:
/// `limit-rps` / `limit-rpm` become `limitReq` with a burst of
/// `limit-burst-multiplier` (default 5) times the rate, served without
/// delay; `limit-connections` becomes `limitConn`. Refused requests get
/// 429.
pub(super) fn rate_limits(
    ctx: &mut Ctx<'_>,
    obj: Subject<'_>,
    ingress: &Ingress,
) -> Option<Plugins> {
    let rps = count(ctx, obj, ingress, LIMIT_RPS);
    let rpm = count(ctx, obj, ingress, LIMIT_RPM);
    let conns = count(ctx, obj, ingress, LIMIT_CONNECTIONS);
    let multiplier = count(ctx, obj, ingress, LIMIT_BURST_MULTIPLIER).unwrap_or(5);
    if let (Some(_), Some((name, _))) = (rps, get(ingress, LIMIT_RPM)) {
        ctx.diags.report(
            obj,
            field(name),
            Reason::Unsupported,
            "limit-rps and limit-rpm together: only limit-rps applies",
        );
    }
    let (rate, burst) = match (rps, rpm) {
        (Some(n), _) => (Some(n as f64), (n * multiplier) as f64),
        (None, Some(n)) => (Some(n as f64 / 60.0), (n * multiplier) as f64),
        (None, None) => (None, 0.0),
    };
    let plugins = Plugins {
        limit_req: rate.map(|rate| LimitReq {
            rate,
            burst,
            nodelay: true,
            key: Default::default(),
            common: Default::default(),
        }),
        limit_conn: conns.map(|conn| LimitConn {
            conn,
            burst: 0,
            key: Default::default(),
            common: Default::default(),
        }),
        ..Plugins::default()
    };
    (!plugins.is_empty()).then_some(plugins)
}

/// ingress-nginx annotations that paste raw nginx configuration.
const SNIPPETS: [&str; 5] = [
    "nginx.ingress.kubernetes.io/configuration-snippet",
    "nginx.ingress.kubernetes.io/server-snippet",
    "nginx.ingress.kubernetes.io/auth-snippet",
    "nginx.ingress.kubernetes.io/stream-snippet",
    "nginx.ingress.kubernetes.io/modsecurity-snippet",
];

/// Refuses an Ingress that carries a snippet annotation; returns whether
/// it did. Raw configuration from an Ingress is how CVE-2025-1974
/// ("IngressNightmare") turned an Ingress into code execution in the
/// controller. Sluicegate has no such injection point, and the Ingress is
/// not served rather than served without what the snippet was meant to do
/// (often an access rule).
pub(super) fn refuse_snippets(ctx: &mut Ctx<'_>, obj: Subject<'_>, ingress: &Ingress) -> bool {
    let Some(annotations) = ingress.metadata.annotations.as_ref() else {
        return false;
    };
    let mut refused = false;
    for name in SNIPPETS.iter().filter(|n| annotations.contains_key(**n)) {
        refused = true;
        ctx.diags.report(
            obj,
            field(name),
            Reason::Unsupported,
            "snippet annotations are refused: raw proxy configuration from an Ingress is the injection vector of CVE-2025-1974; express it with annotations or plugins (docs/plugins.md); the Ingress is not served",
        );
    }
    refused
}

/// Both names of an ingress-nginx annotation.
macro_rules! names {
    ($n:literal) => {
        [
            concat!("sluicegate.io/", $n),
            concat!("nginx.ingress.kubernetes.io/", $n),
        ]
    };
}

/// The value of an annotation, trimmed, if set and not empty.
fn text<'i>(ingress: &'i Ingress, names: [&'static str; 2]) -> Option<&'i str> {
    get(ingress, names)
        .map(|(_, v)| v.trim())
        .filter(|v| !v.is_empty())
}

/// A comma-separated list annotation.
fn list(ingress: &Ingress, names: [&'static str; 2]) -> Vec<String> {
    text(ingress, names)
        .map(|v| {
            v.split(',')
                .map(|x| x.trim().to_owned())
                .filter(|x| !x.is_empty())
                .collect()
        })
        .unwrap_or_default()
}

/// A size such as `8m`, `512k` or `1g` (nginx's units), in bytes.
fn size(text: &str) -> Option<u64> {
    let t = text.trim().to_ascii_lowercase();
    let (digits, unit) = match t.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => t.split_at(i),
        None => (t.as_str(), ""),
    };
    let n: u64 = digits.parse().ok()?;
    let factor = match unit {
        "" => 1,
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(factor)
}

/// The plugins the ingress-nginx annotations ask for, other than the
/// per-path rewrite (see [`rewrite`]): rate limits, `auth-type: basic` with
/// `auth-secret`, `auth-url`, source ranges, CORS and `proxy-body-size`.
/// `Err` when authentication was asked for and cannot be given: the
/// Ingress is then not served, rather than served open.
pub(super) fn plugins(
    ctx: &mut Ctx<'_>,
    obj: Subject<'_>,
    ingress: &Ingress,
) -> Result<Option<Plugins>, ()> {
    let mut p = rate_limits(ctx, obj, ingress).unwrap_or_default();
    let mut refused = false;

    match text(ingress, names!("auth-type")) {
        None => {}
        Some("basic") => match text(ingress, names!("auth-secret")) {
            Some(secret) => {
                let name = secret.rsplit('/').next().unwrap_or(secret).to_owned();
                if secret.contains('/') && !secret.starts_with(&format!("{}/", obj.key.namespace)) {
                    refused = true;
                    ctx.diags.report(
                        obj,
                        field("nginx.ingress.kubernetes.io/auth-secret"),
                        Reason::Unsupported,
                        format!("Secret {secret:?} is in another namespace; only Secrets in {:?} can be used; the Ingress is not served", obj.key.namespace),
                    );
                } else {
                    p.basic_auth = Some(BasicAuth {
                        realm: text(ingress, names!("auth-realm")).map(str::to_owned),
                        htpasswd_secret_ref: Some(LocalObjectRef { name }),
                        common: AuthCommon::default(),
                    });
                }
            }
            None => {
                refused = true;
                ctx.diags.report(
                    obj,
                    field("nginx.ingress.kubernetes.io/auth-type"),
                    Reason::InvalidSpec,
                    "auth-type basic needs auth-secret; the Ingress is not served",
                );
            }
        },
        Some(other) => {
            refused = true;
            ctx.diags.report(
                obj,
                field("nginx.ingress.kubernetes.io/auth-type"),
                Reason::Unsupported,
                format!(
                    "auth-type {other:?} is not supported (use basic); the Ingress is not served"
                ),
            );
        }
    }

    if let Some(url) = text(ingress, names!("auth-url")) {
        p.forward_auth = Some(ForwardAuth {
            uri: url.to_owned(),
            upstream_headers: list(ingress, names!("auth-response-headers")),
            ..ForwardAuth::default()
        });
        if let Some((name, _)) = get(ingress, names!("auth-signin")) {
            ctx.diags.report(
                obj,
                field(name),
                Reason::Unsupported,
                "auth-signin is not supported; the authorization service's own redirect reaches the client",
            );
        }
    }

    let allow = [
        list(ingress, names!("whitelist-source-range")),
        list(ingress, names!("allowlist-source-range")),
    ]
    .concat();
    let deny = list(ingress, names!("denylist-source-range"));
    if !allow.is_empty() || !deny.is_empty() {
        p.ip_restriction = Some(IpRestriction {
            allow,
            deny,
            ..IpRestriction::default()
        });
    }

    if flag(ctx, obj, ingress, names!("enable-cors"), false) {
        let origins = list(ingress, names!("cors-allow-origin"));
        p.cors = Some(Cors {
            allow_origins: origins,
            allow_methods: list(ingress, names!("cors-allow-methods")),
            allow_headers: list(ingress, names!("cors-allow-headers")),
            expose_headers: list(ingress, names!("cors-expose-headers")),
            // ingress-nginx's defaults: credentials allowed, 20 days.
            allow_credentials: flag(ctx, obj, ingress, names!("cors-allow-credentials"), true),
            max_age: Some(crate::api::Duration(std::time::Duration::from_secs(
                count(ctx, obj, ingress, names!("cors-max-age")).unwrap_or(1_728_000),
            ))),
        });
    }

    if let Some((name, value)) = get(ingress, names!("proxy-body-size")) {
        match size(value) {
            Some(0) => {}
            Some(max_bytes) => p.request_body_limit = Some(RequestBodyLimit { max_bytes }),
            None => ctx.diags.report(
                obj,
                field(name),
                Reason::InvalidSpec,
                format!("{value:?} is not a size such as 8m; ignored"),
            ),
        }
    }
    if refused {
        return Err(());
    }
    Ok((!p.is_empty()).then_some(p))
}

/// Whether the Ingress's paths are regular expressions, as in
/// ingress-nginx: `use-regex: "true"`, or any `rewrite-target`.
pub(super) fn regex_paths(ingress: &Ingress) -> bool {
    text(ingress, names!("use-regex")) == Some("true")
        || text(ingress, names!("rewrite-target")).is_some()
}

/// The rewrite of one path: `rewrite-target` (with `$1`... from the path's
/// regular expression), and `x-forwarded-prefix`.
pub(super) fn rewrite(ingress: &Ingress, path: &str) -> Option<ProxyRewrite> {
    let target = text(ingress, names!("rewrite-target"));
    let prefix = text(ingress, names!("x-forwarded-prefix"));
    if target.is_none() && prefix.is_none() {
        return None;
    }
    Some(ProxyRewrite {
        regex_uri: target.map(|t| RegexReplace {
            // nginx matches case-insensitively from the start and replaces
            // the whole path.
            pattern: format!("(?i)^{path}.*$"),
            replacement: t.to_owned(),
        }),
        headers: prefix.map(|p| HeaderEdits {
            set: [("x-forwarded-prefix".to_owned(), p.to_owned())].into(),
            ..HeaderEdits::default()
        }),
        ..ProxyRewrite::default()
    })
}

/// `app-root`: requests for `/` are redirected there.
pub(super) fn app_root(ingress: &Ingress) -> Option<Plugins> {
    let root = text(ingress, names!("app-root"))?;
    Some(Plugins {
        redirect: Some(RedirectTo {
            uri: root.to_owned(),
            code: Some(302),
        }),
        ..Plugins::default()
    })
}
