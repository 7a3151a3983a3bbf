//! "Why does this request go there?": `GET /explain` on the admin port and
//! the `sluicegate explain` command.
//!
//! Both run the live router's own explanation ([`RouteTable::explain`])
//! over a request described by host, path, method and headers, then add
//! what the chosen route does with it: its plugins in execution order and
//! its upstreams with their endpoints.

use std::fmt::Write as _;

use http::{HeaderMap, HeaderName, HeaderValue, Method};
use serde_json::{Value, json};

use crate::proxy::OwnAnswer;
use crate::routing::{
    EncodedSlashes, PathError, RequestView, RouteTable, TableSpec, form_decode, normalize_host,
    normalize_path,
};

/// Why a request to explain cannot be read. The message names the
/// parameter at fault.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum QueryError {
    #[error("missing parameter {0}")]
    Missing(&'static str),
    #[error("host: {0:?} is not a host name")]
    Host(String),
    #[error("path: {0}")]
    Path(&'static str),
    #[error("method: {0:?} is not an HTTP method")]
    Method(String),
    #[error("header: expected NAME:VALUE with a valid name and value, got {0:?}")]
    Header(String),
    #[error("unknown parameter {0:?}; expected host, path, method or header")]
    Unknown(String),
}

/// A request to explain.
#[derive(Clone, Debug)]
pub struct ExplainRequest {
    pub host: String,
    /// The request target: a path, optionally with `?query`.
    pub path: String,
    pub method: Method,
    pub headers: HeaderMap,
}

impl ExplainRequest {
    /// Reads `host`, `path`, `method` and repeated `header=NAME:VALUE`
    /// from a query string.
    pub fn from_query(query: Option<&str>) -> Result<ExplainRequest, QueryError> {
        let (mut host, mut path, mut method) = (None, None, None);
        let mut headers = HeaderMap::new();
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let v = form_decode(v).into_owned();
            match &*form_decode(k) {
                "host" => host = Some(v),
                "path" => path = Some(v),
                "method" => method = Some(v),
                "header" => {
                    let (name, value) = v.split_once(':').ok_or(QueryError::Header(v.clone()))?;
                    add_header(&mut headers, name, value)?;
                }
                other => return Err(QueryError::Unknown(other.to_owned())),
            }
        }
        Ok(ExplainRequest {
            host: host.ok_or(QueryError::Missing("host"))?,
            path: path.ok_or(QueryError::Missing("path"))?,
            method: parse_method(method.as_deref().unwrap_or("GET"))?,
            headers,
        })
    }

    /// The query string that [`Self::from_query`] reads back.
    pub fn to_query(&self) -> String {
        let mut q = format!(
            "host={}&path={}&method={}",
            encode(&self.host),
            encode(&self.path),
            encode(self.method.as_str())
        );
        for (name, value) in &self.headers {
            let value = String::from_utf8_lossy(value.as_bytes());
            let _ = write!(q, "&header={}", encode(&format!("{name}:{value}")));
        }
        q
    }
}

/// Adds a header given as text, refusing names and values no request
/// could carry.
pub fn add_header(headers: &mut HeaderMap, name: &str, value: &str) -> Result<(), QueryError> {
    let bad = || QueryError::Header(format!("{name}:{value}"));
    let name =
        HeaderName::from_bytes(name.trim().to_ascii_lowercase().as_bytes()).map_err(|_| bad())?;
    let value = HeaderValue::from_str(value.trim()).map_err(|_| bad())?;
    headers.append(name, value);
    Ok(())
}

pub fn parse_method(text: &str) -> Result<Method, QueryError> {
    Method::from_bytes(text.trim().to_ascii_uppercase().as_bytes())
        .map_err(|_| QueryError::Method(text.to_owned()))
}

/// Percent-encodes everything but unreserved characters.
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'/') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// The explanation of `req` against `table` (built from `spec`), as the
/// admin port serves it.
pub fn explain(
    table: &RouteTable,
    spec: &TableSpec,
    generation: u64,
    req: &ExplainRequest,
    slashes: EncodedSlashes,
) -> Result<Value, QueryError> {
    let mut buf = [0u8; 256];
    let host = normalize_host(&req.host, &mut buf).ok_or(QueryError::Host(req.host.clone()))?;
    let (path, query) = match req.path.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (req.path.as_str(), None),
    };
    if !path.starts_with('/') {
        return Err(QueryError::Path("must start with /"));
    }
    let path = normalize_path(path, slashes).map_err(|e| {
        QueryError::Path(match e {
            PathError::InvalidEncoding => "invalid percent-encoding",
            PathError::EncodedSlash => "encoded slash (refused by --path-encoded-slashes=reject)",
            PathError::Backslash => "backslash (refused by --path-encoded-slashes=reject)",
        })
    })?;
    let view = RequestView {
        host,
        path: &path,
        query,
        method: &req.method,
        headers: &req.headers,
        // The proxy's own listeners.
        port: 0,
    };
    let explanation = table.explain(&view);
    let chosen = explanation.winner.map(|i| &table.routes()[i]);
    let plugins: Vec<Value> = chosen.map_or_else(Vec::new, |r| {
        r.plugins
            .iter()
            .map(|p| json!({"name": p.name(), "priority": p.priority(), "settings": p.describe()}))
            .collect()
    });
    let backends: Vec<Value> = chosen.map_or_else(Vec::new, |r| {
        r.backends()
            .iter()
            .map(|b| {
                let key = b.upstream.key();
                let up = spec.upstreams.get(key);
                json!({
                    "upstream": key,
                    "weight": b.weight,
                    "protocol": b.protocol,
                    "dns": up.and_then(|u| u.dns.as_ref()),
                    "endpoints": super::endpoint_states(&b.upstream.endpoints()),
                })
            })
            .collect()
    });
    let mut out = serde_json::to_value(&explanation).unwrap_or_default();
    out["generation"] = generation.into();
    out["request"] = json!({
        "method": req.method.as_str(),
        "host": host,
        "path": &*path,
        "query": query,
        // Names only: values may be credentials.
        "headers": req.headers.keys().map(HeaderName::as_str).collect::<Vec<_>>(),
    });
    out["source"] = chosen.map(|r| &*r.source).into();
    // Plain-HTTP requests to such a route get a redirect, not the upstream.
    out["httpsRedirect"] = chosen
        .and_then(|r| r.https_redirect)
        .map(|c| c.as_u16())
        .into();
    out["answeredByGateway"] = OwnAnswer::of(&req.method, &req.headers, chosen.map(|r| &**r))
        .map(|a| json!({"status": a.status().as_u16(), "why": a.why()}))
        .into();
    out["plugins"] = plugins.into();
    out["backends"] = backends.into();
    Ok(out)
}

/// An explanation as text, for the terminal.
pub fn render_text(e: &Value) -> String {
    let s = |v: &Value| v.as_str().unwrap_or("").to_owned();
    let mut out = String::new();
    let r = &e["request"];
    let _ = write!(
        out,
        "{} {}{}",
        s(&r["method"]),
        s(&r["host"]),
        s(&r["path"])
    );
    if let Some(q) = r["query"].as_str() {
        let _ = write!(out, "?{q}");
    }
    match e["generation"].as_u64() {
        Some(g) => {
            let _ = writeln!(out, "  (table generation {g})");
        }
        None => {
            let _ = writeln!(out, "  (offline, from the manifests)");
        }
    }
    match e["route"].as_str() {
        Some(route) => {
            let _ = writeln!(out, "route:      {route}  ({})", s(&e["source"]));
        }
        None => {
            let _ = writeln!(out, "route:      none");
        }
    }
    let _ = writeln!(out, "decided by: {}", s(&e["decidedBy"]));
    if let Some(status) = e["answeredByGateway"]["status"].as_u64() {
        let why = s(&e["answeredByGateway"]["why"]);
        let _ = writeln!(out, "answered by the gateway: {status} ({why})");
    }
    if let Some(code) = e["httpsRedirect"].as_u64() {
        let _ = writeln!(
            out,
            "over plain HTTP: redirected to HTTPS with {code}; the rest applies to HTTPS"
        );
    }
    let candidates = e["candidates"].as_array().map_or(&[][..], Vec::as_slice);
    if !candidates.is_empty() {
        let _ = writeln!(out, "\ncandidates, in the order the router tries them:");
        for c in candidates {
            let mark = if c["outcome"] == "chosen" { "*" } else { "-" };
            let _ = writeln!(
                out,
                "  {mark} {}  host {}  {} {}  priority {}  [{}] {}",
                s(&c["route"]),
                s(&c["host"]),
                s(&c["path"]["type"]),
                s(&c["path"]["value"]),
                c["priority"],
                s(&c["outcome"]),
                s(&c["reason"])
            );
        }
    }
    let plugins = e["plugins"].as_array().map_or(&[][..], Vec::as_slice);
    if !plugins.is_empty() {
        let _ = writeln!(out, "\nplugins, in execution order:");
        for (i, p) in plugins.iter().enumerate() {
            let _ = writeln!(
                out,
                "  {}. {} (priority {})",
                i + 1,
                s(&p["name"]),
                p["priority"]
            );
        }
    }
    for b in e["backends"].as_array().map_or(&[][..], Vec::as_slice) {
        let _ = write!(
            out,
            "\nupstream {} (weight {})",
            s(&b["upstream"]),
            b["weight"]
        );
        if let Some(name) = b["dns"]["name"].as_str() {
            let _ = write!(out, ", resolved from {name}");
        }
        let _ = writeln!(out);
        let endpoints = b["endpoints"].as_array().map_or(&[][..], Vec::as_slice);
        if endpoints.is_empty() {
            let _ = writeln!(out, "  no endpoints: the proxy answers 503");
        }
        for ep in endpoints {
            let state = if ep["healthy"] == true {
                "healthy"
            } else {
                "unavailable"
            };
            let _ = write!(
                out,
                "  {}  {state}  in flight {}",
                s(&ep["address"]),
                ep["inFlight"]
            );
            if let Some(ms) = ep["latencyMs"].as_f64() {
                let _ = write!(out, "  latency {ms:.1} ms");
            }
            for flag in ["terminating", "ejected", "failingActiveChecks"] {
                if ep[flag] == true {
                    let _ = write!(out, "  {flag}");
                }
            }
            let _ = writeln!(out);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_and_writes_query_strings() {
        let q = "host=Shop.Example.com&path=%2Fapi%2Fv1%3Fa%3D1&method=post&header=X-Canary%3A1&header=cookie:c=1";
        let r = ExplainRequest::from_query(Some(q)).unwrap();
        assert_eq!(r.host, "Shop.Example.com");
        assert_eq!(r.path, "/api/v1?a=1");
        assert_eq!(r.method, Method::POST);
        assert_eq!(r.headers["x-canary"], "1");
        assert_eq!(r.headers["cookie"], "c=1");
        let again = ExplainRequest::from_query(Some(&r.to_query())).unwrap();
        assert_eq!((again.host, again.path), (r.host, r.path));
        assert_eq!(again.headers, r.headers);
    }

    #[test]
    fn bad_parameters_are_named() {
        let err = |q: &str| ExplainRequest::from_query(Some(q)).unwrap_err().to_string();
        assert_eq!(err("path=/"), "missing parameter host");
        assert_eq!(err("host=a"), "missing parameter path");
        assert!(err("host=a&path=/&method=G%20T").starts_with("method:"));
        assert!(err("host=a&path=/&header=novalue").starts_with("header:"));
        assert!(err("host=a&path=/&header=bad%20name:1").starts_with("header:"));
        assert!(err("host=a&path=/&x=1").starts_with("unknown parameter \"x\""));
    }
}
