//! `cors`: cross-origin resource sharing.
//!
//! Preflight requests (`OPTIONS` with `Origin` and
//! `Access-Control-Request-Method`) are answered by the gateway: `204`
//! with the permissions, or `403` without any CORS header when the origin
//! or the method is not allowed, so that the browser blocks the actual
//! request. The upstream never sees a preflight, which spares every
//! service behind the gateway from implementing one.
//!
//! Actual requests go to the upstream; the response phase adds
//! `Access-Control-Allow-Origin` (with `-Allow-Credentials` and
//! `-Expose-Headers`) to whatever answer the client gets, the gateway's
//! own refusals (`401`, `429`) included: without them a browser hides the
//! status from the page, which then cannot tell a missing login from a
//! network failure.

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};

use super::ip::plain;
use crate::api::Cors;
use crate::plugins::{
    BuildEnv, ConfigError, Outcome, Plugin, Rejection, RequestCtx, ResponseCtx, ResponseParts,
};

const DEFAULT_METHODS: [&str; 7] = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD"];
const DEFAULT_MAX_AGE: u64 = 5;

/// One entry of `allowOrigins`, lower-cased.
#[derive(Debug, Clone, PartialEq, Eq)]
enum OriginRule {
    Any,
    Exact(String),
    /// `https://*.example.com`: the text before and after the `*`.
    Subdomain {
        prefix: String,
        suffix: String,
    },
}

impl OriginRule {
    fn parse(text: &str) -> Result<OriginRule, String> {
        if text == "*" {
            return Ok(OriginRule::Any);
        }
        let lower = text.to_ascii_lowercase();
        let Some((scheme, authority)) = lower.split_once("://") else {
            return Err(format!(
                "{text:?} is not an origin (scheme://host[:port], or *)"
            ));
        };
        let scheme_ok = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
        if !scheme_ok {
            return Err(format!("{text:?}: invalid scheme"));
        }
        // Browsers send origins without a path; one configured with a
        // trailing slash would never match, so it is refused instead.
        if authority.is_empty() || authority.contains(['/', '?', '#', '@', ' ']) {
            return Err(format!(
                "{text:?} is not an origin: scheme://host[:port], without path or trailing slash"
            ));
        }
        let host_ok = |h: &str| {
            !h.is_empty()
                && h.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | ':' | '[' | ']'))
        };
        match authority.strip_prefix("*.") {
            Some(rest) if host_ok(rest) && !rest.starts_with('.') => Ok(OriginRule::Subdomain {
                prefix: format!("{scheme}://"),
                suffix: format!(".{rest}"),
            }),
            None if host_ok(authority) => Ok(OriginRule::Exact(lower)),
            _ => Err(format!(
                "{text:?}: a wildcard may only stand for the first label (https://*.example.com)"
            )),
        }
    }

    /// Whether the request's `Origin` (compared case-insensitively)
    /// matches; a wildcard stands for exactly one DNS label.
    fn matches(&self, origin: &str) -> bool {
        match self {
            OriginRule::Any => true,
            OriginRule::Exact(o) => o.eq_ignore_ascii_case(origin),
            OriginRule::Subdomain { prefix, suffix } => {
                let Some(end) = origin.len().checked_sub(suffix.len()) else {
                    return false;
                };
                // `get` is `None` off a char boundary or when the two
                // ends overlap: no match, never a panic.
                let (Some(head), Some(label), Some(tail)) = (
                    origin.get(..prefix.len()),
                    origin.get(prefix.len()..end),
                    origin.get(end..),
                ) else {
                    return false;
                };
                head.eq_ignore_ascii_case(prefix)
                    && tail.eq_ignore_ascii_case(suffix)
                    && !label.is_empty()
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            }
        }
    }
}

/// `cors`: see the module documentation.
///
/// With `allowCredentials: true`, a `*` origin is answered by echoing the
/// request's `Origin` rather than `*`: browsers refuse credentialed
/// responses that allow `*`, so the literal would silently break every
/// such request. The echo means every origin may send credentialed
/// requests, which is what `*` with credentials asks for; list the origins
/// instead where that is not intended.
#[derive(Debug)]
pub struct CorsPlugin {
    config: Cors,
    origins: Vec<OriginRule>,
    /// `None`: any method (`*`).
    methods: Option<Vec<Method>>,
    methods_value: HeaderValue,
    /// `None`: echo what the preflight asks for.
    headers_value: Option<HeaderValue>,
    expose_value: Option<HeaderValue>,
    max_age: HeaderValue,
    credentials: bool,
}

/// Joins `items` into one header value.
fn joined(items: &[String], field: &str) -> Result<HeaderValue, ConfigError> {
    HeaderValue::try_from(items.join(", "))
        .map_err(|_| ConfigError::new(field, "not valid in a header"))
}

/// Validates header names (or `*`), for `allowHeaders` and
/// `exposeHeaders`.
fn header_names(names: &[String], field: &str) -> Result<Option<HeaderValue>, ConfigError> {
    if names.is_empty() {
        return Ok(None);
    }
    for (i, n) in names.iter().enumerate() {
        if n != "*" && HeaderName::from_bytes(n.as_bytes()).is_err() {
            return Err(ConfigError::new(
                format!("{field}[{i}]"),
                format!("{n:?} is not a valid header name"),
            ));
        }
    }
    joined(names, field).map(Some)
}

impl CorsPlugin {
    pub fn build(c: &Cors, _env: &BuildEnv<'_>) -> Result<Arc<dyn Plugin>, ConfigError> {
        Ok(Arc::new(CorsPlugin::compile(c)?))
    }

    fn compile(c: &Cors) -> Result<CorsPlugin, ConfigError> {
        let field = "cors";
        let origins = if c.allow_origins.is_empty() {
            vec![OriginRule::Any]
        } else {
            c.allow_origins
                .iter()
                .enumerate()
                .map(|(i, o)| {
                    OriginRule::parse(o)
                        .map_err(|m| ConfigError::new(format!("{field}.allowOrigins[{i}]"), m))
                })
                .collect::<Result<Vec<_>, _>>()?
        };
        let method_names: Vec<String> = if c.allow_methods.is_empty() {
            DEFAULT_METHODS.iter().map(|m| (*m).to_owned()).collect()
        } else {
            // Methods are case-sensitive on the wire, but nobody means
            // `get` as a different method from `GET`.
            c.allow_methods
                .iter()
                .map(|m| m.trim().to_ascii_uppercase())
                .collect()
        };
        let mut methods = Some(Vec::new());
        for (i, m) in method_names.iter().enumerate() {
            if m == "*" {
                methods = None;
                continue;
            }
            let parsed = Method::from_bytes(m.as_bytes()).map_err(|_| {
                ConfigError::new(
                    format!("{field}.allowMethods[{i}]"),
                    format!("{m:?} is not a valid method"),
                )
            })?;
            if let Some(list) = &mut methods {
                list.push(parsed);
            }
        }
        let max_age = c
            .max_age
            .as_ref()
            .map_or(DEFAULT_MAX_AGE, |d| d.0.as_secs());
        Ok(CorsPlugin {
            config: c.clone(),
            origins,
            methods,
            methods_value: joined(&method_names, &format!("{field}.allowMethods"))?,
            headers_value: header_names(&c.allow_headers, &format!("{field}.allowHeaders"))?,
            expose_value: header_names(&c.expose_headers, &format!("{field}.exposeHeaders"))?,
            max_age: HeaderValue::from(max_age),
            credentials: c.allow_credentials,
        })
    }

    /// The `Access-Control-Allow-Origin` value for `origin`, when allowed.
    fn allow_origin(&self, origin: &HeaderValue) -> Option<HeaderValue> {
        let text = origin.to_str().ok()?;
        let rule = self.origins.iter().find(|r| r.matches(text))?;
        if *rule == OriginRule::Any && !self.credentials {
            Some(HeaderValue::from_static("*"))
        } else {
            Some(origin.clone())
        }
    }

    fn method_allowed(&self, requested: &[u8]) -> bool {
        match &self.methods {
            None => Method::from_bytes(requested).is_ok(),
            Some(list) => list.iter().any(|m| m.as_str().as_bytes() == requested),
        }
    }

    /// Headers both answers carry.
    fn common(&self, out: &mut HeaderMap, allow_origin: HeaderValue) {
        out.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allow_origin);
        if self.credentials {
            out.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
    }

    fn preflight(
        &self,
        headers: &HeaderMap,
        origin: &HeaderValue,
        method: &HeaderValue,
    ) -> Rejection {
        let Some(allow_origin) = self.allow_origin(origin) else {
            return refused();
        };
        if !self.method_allowed(method.as_bytes()) {
            return refused();
        }
        let mut out = HeaderMap::new();
        self.common(&mut out, allow_origin);
        // `*` is a wildcard to browsers only without credentials; with
        // them, what was asked for is echoed.
        let methods = match &self.methods {
            None if self.credentials => method.clone(),
            _ => self.methods_value.clone(),
        };
        out.insert(header::ACCESS_CONTROL_ALLOW_METHODS, methods);
        let requested = headers.get(header::ACCESS_CONTROL_REQUEST_HEADERS);
        let allow_headers = match &self.headers_value {
            Some(v) if !(self.credentials && v == "*") => Some(v.clone()),
            _ => requested.cloned(),
        };
        if let Some(v) = allow_headers {
            out.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, v);
        }
        out.insert(header::ACCESS_CONTROL_MAX_AGE, self.max_age.clone());
        out.insert(header::VARY, HeaderValue::from_static("Origin"));
        Rejection {
            status: StatusCode::NO_CONTENT,
            headers: out,
            body: Bytes::new(),
        }
    }
}

fn refused() -> Rejection {
    plain(
        StatusCode::FORBIDDEN,
        Bytes::from_static(b"403 Forbidden: cross-origin request not allowed\n"),
    )
}

fn is_preflight(method: &Method, headers: &HeaderMap) -> bool {
    method == Method::OPTIONS
        && headers.contains_key(header::ORIGIN)
        && headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
}

/// Adds `Origin` to `Vary` unless some `Vary` already names it (or `*`).
fn vary_origin(headers: &mut HeaderMap) {
    let present = headers.get_all(header::VARY).iter().any(|v| {
        v.as_bytes().split(|&b| b == b',').any(|t| {
            let t = t.trim_ascii();
            t == b"*" || t.eq_ignore_ascii_case(b"origin")
        })
    });
    if !present {
        headers.append(header::VARY, HeaderValue::from_static("Origin"));
    }
}

impl Plugin for CorsPlugin {
    fn name(&self) -> &'static str {
        "cors"
    }

    fn priority(&self) -> i32 {
        4000
    }

    fn request<'s>(&'s self, ctx: &mut RequestCtx<'_>) -> Outcome<'s> {
        if ctx.method != Method::OPTIONS {
            return Outcome::Continue;
        }
        match (
            ctx.headers.get(header::ORIGIN),
            ctx.headers.get(header::ACCESS_CONTROL_REQUEST_METHOD),
        ) {
            (Some(origin), Some(method)) => {
                Outcome::Reject(self.preflight(ctx.headers, origin, method))
            }
            // Not a preflight: an actual request, for the upstream.
            _ => Outcome::Continue,
        }
    }

    fn has_response_phase(&self) -> bool {
        true
    }

    fn response(&self, ctx: &ResponseCtx<'_>, resp: &mut ResponseParts) {
        // Preflights were answered in the request phase, refusals without
        // CORS headers on purpose.
        if is_preflight(ctx.method, ctx.request_headers) {
            return;
        }
        let Some(origin) = ctx.request_headers.get(header::ORIGIN) else {
            return;
        };
        // Whether the answer carries the headers depends on `Origin`, even
        // when it does not: caches must keep the variants apart.
        vary_origin(&mut resp.headers);
        let Some(allow_origin) = self.allow_origin(origin) else {
            return;
        };
        self.common(&mut resp.headers, allow_origin);
        if let Some(v) = &self.expose_value {
            resp.headers
                .insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, v.clone());
        }
    }

    fn describe(&self) -> serde_json::Value {
        serde_json::to_value(&self.config).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(s: &str) -> OriginRule {
        OriginRule::parse(s).unwrap()
    }

    #[test]
    fn origin_rules_parse() {
        assert_eq!(rule("*"), OriginRule::Any);
        assert_eq!(
            rule("HTTPS://Shop.Example.com"),
            OriginRule::Exact("https://shop.example.com".into())
        );
        assert_eq!(
            rule("https://*.example.com:8443"),
            OriginRule::Subdomain {
                prefix: "https://".into(),
                suffix: ".example.com:8443".into()
            }
        );
        rule("http://[::1]:8080");
        for bad in [
            "shop.example.com",
            "https://shop.example.com/",
            "https://shop.example.com/path",
            "https://",
            "https://a.*.example.com",
            "https://*example.com",
            "https://*.",
            "https://*..com",
            "*.example.com",
            "1http://x",
            "https://user@x",
        ] {
            assert!(OriginRule::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn exact_origins_compare_case_insensitively() {
        let r = rule("https://shop.example.com");
        assert!(r.matches("https://shop.example.com"));
        assert!(r.matches("https://SHOP.example.COM"));
        assert!(!r.matches("http://shop.example.com"));
        assert!(!r.matches("https://shop.example.com:8443"));
        assert!(!r.matches("https://shop.example.com.evil"));
        assert!(!r.matches("null"));
    }

    #[test]
    fn wildcards_stand_for_one_label() {
        let r = rule("https://*.example.com");
        assert!(r.matches("https://a.example.com"));
        assert!(r.matches("https://A-1.Example.com"));
        assert!(!r.matches("https://a.b.example.com"));
        assert!(!r.matches("https://example.com"));
        assert!(!r.matches("https://.example.com"));
        assert!(!r.matches("http://a.example.com"));
        assert!(!r.matches("https://a.example.com:8443"));
        assert!(!r.matches("https://aexample.com"));
        assert!(!r.matches("https://evil.com/.example.com"));
        assert!(!r.matches("https://"));
        assert!(!r.matches(""));
        // Non-ASCII never panics on a char boundary.
        assert!(!r.matches("https://é.example.com"));
        assert!(!r.matches("httpsé://a.example.com"));
    }

    fn build(c: Cors) -> Result<CorsPlugin, ConfigError> {
        CorsPlugin::compile(&c)
    }

    #[test]
    fn settings_are_validated_at_build() {
        let e = build(Cors {
            allow_origins: vec!["https://ok.example".into(), "https://bad.example/".into()],
            ..Default::default()
        })
        .unwrap_err();
        assert_eq!(e.field, "cors.allowOrigins[1]");
        let e = build(Cors {
            allow_methods: vec!["GET".into(), "GE T".into()],
            ..Default::default()
        })
        .unwrap_err();
        assert_eq!(e.field, "cors.allowMethods[1]");
        let e = build(Cors {
            allow_headers: vec!["x-ok".into(), "bad header".into()],
            ..Default::default()
        })
        .unwrap_err();
        assert_eq!(e.field, "cors.allowHeaders[1]");
        let e = build(Cors {
            expose_headers: vec!["x:y".into()],
            ..Default::default()
        })
        .unwrap_err();
        assert_eq!(e.field, "cors.exposeHeaders[0]");
        assert!(build(Cors::default()).is_ok());
    }

    fn plugin(c: Cors) -> CorsPlugin {
        CorsPlugin::compile(&c).unwrap()
    }

    fn preflight_headers(method: &str, headers: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://a.example"),
        );
        h.insert(
            header::ACCESS_CONTROL_REQUEST_METHOD,
            HeaderValue::from_str(method).unwrap(),
        );
        if let Some(v) = headers {
            h.insert(
                header::ACCESS_CONTROL_REQUEST_HEADERS,
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn star_origin_with_credentials_echoes_the_origin() {
        let origin = HeaderValue::from_static("https://a.example");
        let p = plugin(Cors {
            allow_methods: vec!["GET".into()],
            ..Default::default()
        });
        assert_eq!(p.allow_origin(&origin).unwrap(), "*");
        let p = plugin(Cors {
            allow_methods: vec!["GET".into()],
            allow_credentials: true,
            ..Default::default()
        });
        assert_eq!(p.allow_origin(&origin).unwrap(), "https://a.example");
    }

    #[test]
    fn wildcard_methods_and_headers_are_echoed_with_credentials() {
        let h = preflight_headers("PURGE", Some("x-a, x-b"));
        let origin = HeaderValue::from_static("https://a.example");
        let method = HeaderValue::from_static("PURGE");
        let p = plugin(Cors {
            allow_methods: vec!["*".into()],
            allow_headers: vec!["*".into()],
            ..Default::default()
        });
        let r = p.preflight(&h, &origin, &method);
        assert_eq!(r.status, StatusCode::NO_CONTENT);
        assert_eq!(r.headers[header::ACCESS_CONTROL_ALLOW_METHODS], "*");
        assert_eq!(r.headers[header::ACCESS_CONTROL_ALLOW_HEADERS], "*");
        let p = plugin(Cors {
            allow_methods: vec!["*".into()],
            allow_headers: vec!["*".into()],
            allow_credentials: true,
            ..Default::default()
        });
        let r = p.preflight(&h, &origin, &method);
        assert_eq!(r.headers[header::ACCESS_CONTROL_ALLOW_METHODS], "PURGE");
        assert_eq!(r.headers[header::ACCESS_CONTROL_ALLOW_HEADERS], "x-a, x-b");
        assert_eq!(r.headers[header::ACCESS_CONTROL_ALLOW_CREDENTIALS], "true");
    }

    #[test]
    fn vary_is_added_once() {
        let mut h = HeaderMap::new();
        vary_origin(&mut h);
        vary_origin(&mut h);
        assert_eq!(h.get_all(header::VARY).iter().count(), 1);
        let mut h = HeaderMap::new();
        h.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
        vary_origin(&mut h);
        let all: Vec<_> = h.get_all(header::VARY).iter().collect();
        assert_eq!(all, ["Accept-Encoding", "Origin"]);
        let mut h = HeaderMap::new();
        h.insert(header::VARY, HeaderValue::from_static("accept, ORIGIN"));
        vary_origin(&mut h);
        assert_eq!(h.get_all(header::VARY).iter().count(), 1);
    }

    #[test]
    fn preflights_are_answered_or_refused() {
        let p = plugin(Cors {
            allow_origins: vec!["https://a.example".into()],
            allow_credentials: true,
            ..Default::default()
        });
        let origin = HeaderValue::from_static("https://a.example");
        let h = preflight_headers("DELETE", Some("x-token"));
        let r = p.preflight(&h, &origin, &HeaderValue::from_static("DELETE"));
        assert_eq!(r.status, StatusCode::NO_CONTENT);
        let get = |n: HeaderName| r.headers.get(n).unwrap().to_str().unwrap().to_owned();
        assert_eq!(
            get(header::ACCESS_CONTROL_ALLOW_ORIGIN),
            "https://a.example"
        );
        assert_eq!(
            get(header::ACCESS_CONTROL_ALLOW_METHODS),
            DEFAULT_METHODS.join(", ")
        );
        assert_eq!(get(header::ACCESS_CONTROL_ALLOW_HEADERS), "x-token");
        assert_eq!(get(header::ACCESS_CONTROL_MAX_AGE), "5");
        assert_eq!(get(header::ACCESS_CONTROL_ALLOW_CREDENTIALS), "true");
        assert_eq!(get(header::VARY), "Origin");
        let r = p.preflight(&h, &origin, &HeaderValue::from_static("PURGE"));
        assert_eq!(r.status, StatusCode::FORBIDDEN);
        assert!(!r.headers.contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN));
        let other = HeaderValue::from_static("https://b.example");
        let r = p.preflight(&h, &other, &HeaderValue::from_static("GET"));
        assert_eq!(r.status, StatusCode::FORBIDDEN);
        assert!(!r.headers.contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN));
    }

    fn respond(p: &CorsPlugin, method: Method, request: &HeaderMap) -> HeaderMap {
        let ctx = ResponseCtx {
            request_headers: request,
            method: &method,
            consumer: None,
            route: "r",
        };
        let mut parts = ResponseParts {
            status: StatusCode::OK,
            headers: HeaderMap::new(),
            body: None,
            encodings: Vec::new(),
        };
        p.response(&ctx, &mut parts);
        parts.headers
    }

    #[test]
    fn response_phase_marks_allowed_origins_only() {
        let p = plugin(Cors {
            allow_origins: vec!["https://*.example.com".into()],
            expose_headers: vec!["x-total".into()],
            ..Default::default()
        });
        let mut req = HeaderMap::new();
        assert!(respond(&p, Method::GET, &req).is_empty());
        req.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://a.example.com"),
        );
        let out = respond(&p, Method::GET, &req);
        assert_eq!(
            out[header::ACCESS_CONTROL_ALLOW_ORIGIN],
            "https://a.example.com"
        );
        assert_eq!(out[header::ACCESS_CONTROL_EXPOSE_HEADERS], "x-total");
        assert_eq!(out[header::VARY], "Origin");
        assert!(!out.contains_key(header::ACCESS_CONTROL_ALLOW_CREDENTIALS));
        req.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://evil.test"),
        );
        let out = respond(&p, Method::GET, &req);
        assert!(!out.contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN));
        assert_eq!(out[header::VARY], "Origin");
        // A refused preflight stays without CORS headers.
        req.insert(
            header::ACCESS_CONTROL_REQUEST_METHOD,
            HeaderValue::from_static("GET"),
        );
        assert!(respond(&p, Method::OPTIONS, &req).is_empty());
    }
}
