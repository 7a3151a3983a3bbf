//! `RequestRedirect`: answers with a redirect built from the request and
//! the filter's scheme, hostname, port and path.
//!
//! The port follows the Gateway API's rules: the filter's port; else the
//! well-known port of the filter's scheme; else the port of the listener
//! the request came in on. It is left out of `Location` when it is the
//! well-known port of the scheme (80 for `http`, 443 for `https`). The
//! query string is kept.

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode, header};

use super::REDIRECT;
use super::rewrite::PathChange;
use crate::api::gateway_api::HttpRequestRedirectFilter;
use crate::plugins::transform::respond::{header_value, plain};
use crate::plugins::{ConfigError, Outcome, Plugin, Rejection, RequestCtx};

/// `RequestRedirect`.
#[derive(Debug)]
pub struct Redirect {
    config: HttpRequestRedirectFilter,
    status: StatusCode,
    scheme: Option<&'static str>,
    hostname: Option<String>,
    port: Option<u16>,
    path: Option<PathChange>,
}

impl Redirect {
    /// `prefix` is the route's path prefix, when its match is one.
    pub fn build(
        c: &HttpRequestRedirectFilter,
        prefix: Option<&str>,
        field: &str,
    ) -> Result<Arc<dyn Plugin>, ConfigError> {
        let status = match c.status_code {
            301 | 302 | 303 | 307 | 308 => StatusCode::from_u16(c.status_code as u16).ok(),
            _ => None,
        }
        .ok_or_else(|| {
            ConfigError::new(
                format!("{field}.statusCode"),
                format!(
                    "{} is not a supported redirect status: use 301, 302, 303, 307 or 308",
                    c.status_code
                ),
            )
        })?;
        let scheme = match c.scheme.as_deref() {
            None => None,
            Some("http") => Some("http"),
            Some("https") => Some("https"),
            Some(other) => {
                return Err(ConfigError::new(
                    format!("{field}.scheme"),
                    format!("unsupported scheme {other:?}: use http or https"),
                ));
            }
        };
        let port = c
            .port
            .map(|p| {
                u16::try_from(p).ok().filter(|p| *p > 0).ok_or_else(|| {
                    ConfigError::new(format!("{field}.port"), format!("{p} is outside 1-65535"))
                })
            })
            .transpose()?;
        if let Some(h) = &c.hostname {
            header_value(h, &format!("{field}.hostname"))?;
        }
        let path = c
            .path
            .as_ref()
            .map(|p| PathChange::parse(p, prefix, &format!("{field}.path")))
            .transpose()?;
        Ok(Arc::new(Redirect {
            config: c.clone(),
            status,
            scheme,
            hostname: c.hostname.clone(),
            port,
            path,
        }))
    }

    /// The `Location` for a request.
    fn location(&self, ctx: &RequestCtx<'_>) -> String {
        let scheme = self
            .scheme
            .unwrap_or(if ctx.tls { "https" } else { "http" });
        let port = match (self.port, self.scheme) {
            (Some(p), _) => Some(p),
            // The scheme's well-known port, which is left out.
            (None, Some(_)) => None,
            (None, None) => Some(ctx.port),
        };
        let port =
            port.filter(|&p| !matches!((scheme, p), ("http", 80) | ("https", 443)) && p != 0);
        let host = self.hostname.as_deref().unwrap_or(ctx.host);
        let path = match &self.path {
            Some(change) => change.apply(ctx.path),
            None => ctx.path.to_owned(),
        };
        let mut out = String::with_capacity(scheme.len() + host.len() + path.len() + 16);
        out.push_str(scheme);
        out.push_str("://");
        out.push_str(host);
        if let Some(p) = port {
            out.push(':');
            out.push_str(&p.to_string());
        }
        out.push_str(&path);
        if let Some(q) = ctx.query {
            out.push('?');
            out.push_str(q);
        }
        out
    }
}

impl Plugin for Redirect {
    fn name(&self) -> &'static str {
        "requestRedirect"
    }

    fn priority(&self) -> i32 {
        REDIRECT
    }

    fn request<'s>(&'s self, ctx: &mut RequestCtx<'_>) -> Outcome<'s> {
        let Ok(location) = HeaderValue::try_from(self.location(ctx)) else {
            return Outcome::Reject(plain(
                StatusCode::BAD_REQUEST,
                "Bad Request: the redirect target is not a valid header value",
            ));
        };
        let mut headers = HeaderMap::new();
        headers.insert(header::LOCATION, location);
        Outcome::Reject(Rejection {
            status: self.status,
            headers,
            body: Bytes::new(),
        })
    }

    fn describe(&self) -> serde_json::Value {
        serde_json::to_value(&self.config).unwrap_or_default()
    }
}
