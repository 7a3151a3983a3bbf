//! The JSON views behind the dashboard: a summary, the routes with the
//! objects they came from and those objects' diagnostics, the server
//! certificates with their names and validity, the upstreams with the live
//! state of their endpoints, and live traffic.
//!
//! Everything here is read from the published configuration view and the
//! live upstreams; nothing reads a Secret. Certificates are described by
//! the Secret's name and the certificate's public fields only.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use crate::metrics::live;
use crate::publish::Publisher;
use crate::routing::{PathSpec, RouteSpec, ValueMatcher, ValueSpec};
use crate::translate::{Diagnostic, Reason, Severity};

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Counts and health at a glance.
pub fn summary(publisher: &Publisher) -> Value {
    let view = publisher.view();
    let count = |s: Severity| {
        view.diagnostics.iter().filter(|d| d.severity == s).count()
            + view
                .source_issues
                .iter()
                .filter(|i| i.severity == s)
                .count()
    };
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "ready": publisher.is_ready(),
        "generation": view.generation,
        "appliedAt": view.applied_at,
        "routes": view.table.routes.len(),
        "upstreams": view.table.upstreams.len(),
        "certificates": view.table.tls.len(),
        "errors": count(Severity::Error),
        "warnings": count(Severity::Warning),
    })
}

fn diagnostic(d: &Diagnostic) -> Value {
    json!({
        "object": d.object.to_string(),
        "field": d.field,
        "reason": d.reason,
        "severity": d.severity,
        "message": d.message,
    })
}

fn path_text(p: &PathSpec) -> Value {
    match p {
        PathSpec::Exact(v) => json!({"type": "Exact", "value": v}),
        PathSpec::Prefix(v) => json!({"type": "Prefix", "value": v}),
        PathSpec::RegularExpression(v) => json!({"type": "RegularExpression", "value": v.as_str()}),
    }
}

fn condition(kind: &str, c: &ValueSpec) -> String {
    match &c.matcher {
        ValueMatcher::Exact(v) => format!("{kind} {} = {v:?}", c.name),
        ValueMatcher::RegularExpression(p) => format!("{kind} {} ~ {:?}", c.name, p.as_str()),
        ValueMatcher::Present => format!("{kind} {} present", c.name),
    }
}

fn route(r: &RouteSpec, diagnostics: &[&Diagnostic]) -> Value {
    let conditions: Vec<String> = r
        .headers
        .iter()
        .map(|c| condition("header", c))
        .chain(r.query.iter().map(|c| condition("query", c)))
        .chain(r.cookies.iter().map(|c| condition("cookie", c)))
        .collect();
    json!({
        "name": r.name,
        "source": r.source,
        "hosts": r.hosts.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "paths": r.paths.iter().map(path_text).collect::<Vec<_>>(),
        "methods": r.methods.iter().map(http::Method::as_str).collect::<Vec<_>>(),
        "conditions": conditions,
        "priority": r.priority,
        "fallback": r.fallback,
        "plugins": r.plugins.iter().map(|p| p.name()).collect::<Vec<_>>(),
        "backends": r.backends.iter().map(|b| json!({
            "upstream": b.upstream,
            "weight": b.weight,
        })).collect::<Vec<_>>(),
        "websocket": r.websocket,
        "httpsRedirect": r.https_redirect,
        "diagnostics": diagnostics.iter().map(|d| diagnostic(d)).collect::<Vec<_>>(),
    })
}

/// The routes of the live table, each with its source object's
/// diagnostics, and every diagnostic of the configuration (objects that
/// produced no route have only these).
pub fn routes(publisher: &Publisher) -> Value {
    let view = publisher.view();
    let mut by_object: BTreeMap<String, Vec<&Diagnostic>> = BTreeMap::new();
    for d in view.diagnostics.iter() {
        by_object.entry(d.object.to_string()).or_default().push(d);
    }
    let routes: Vec<Value> = view
        .table
        .routes
        .iter()
        .map(|r| {
            let diags = by_object.get(&*r.source).map_or(&[][..], Vec::as_slice);
            route(r, diags)
        })
        .collect();
    json!({
        "generation": view.generation,
        "routes": routes,
        "diagnostics": view.diagnostics.iter().map(diagnostic).collect::<Vec<_>>(),
        "sourceIssues": view.source_issues.iter().map(|i| json!({
            "file": i.file,
            "severity": i.severity,
            "message": i.message,
        })).collect::<Vec<_>>(),
    })
}

/// Server certificates by SNI name with their validity, the hosts that
/// ask clients for certificates, and certificate problems.
pub fn certificates(publisher: &Publisher) -> Value {
    let view = publisher.view();
    let now = unix_now();
    let certs: Vec<Value> = view
        .table
        .tls
        .iter()
        .map(|c| {
            let leaf = c.key.cert.first().map(|d| d.as_ref());
            let validity = leaf.and_then(crate::x509::validity);
            let subject = leaf.and_then(crate::x509::subject_dn);
            json!({
                "hosts": c.hosts,
                "default": c.hosts.is_empty(),
                "secret": c.secret,
                "source": c.source,
                "subject": subject,
                "notBefore": validity.map(|v| v.0),
                "notAfter": validity.map(|v| v.1),
                "expiresInDays": validity.map(|v| (v.1 - now) as f64 / 86_400.0),
                "chain": c.key.cert.len(),
            })
        })
        .collect();
    let client_auth: Vec<Value> = view
        .table
        .client_auth
        .iter()
        .map(|a| {
            json!({
                "hosts": a.hosts,
                "caSecret": a.ca_secret,
                "optional": a.optional,
                "source": a.source,
            })
        })
        .collect();
    let problems: Vec<Value> = view
        .diagnostics
        .iter()
        .filter(|d| d.reason == Reason::InvalidCertificate)
        .map(diagnostic)
        .collect();
    json!({
        "generation": view.generation,
        "now": now,
        "certificates": certs,
        "clientAuth": client_auth,
        "problems": problems,
    })
}

/// Every upstream of the table with its endpoints' live state and the
/// routes that use it.
pub fn upstreams(publisher: &Publisher) -> Value {
    let view = publisher.view();
    let mut users: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for r in &view.table.routes {
        for b in &r.backends {
            users.entry(b.upstream.as_str()).or_default().push(&r.name);
        }
    }
    let upstreams: Vec<Value> = view
        .table
        .upstreams
        .iter()
        .map(|(key, spec)| {
            let live = publisher.registry().get(key);
            let endpoints = match &live {
                Some(up) => super::endpoint_states(&up.endpoints()),
                None => Value::Array(Vec::new()),
            };
            let list = endpoints.as_array().map_or(&[][..], Vec::as_slice);
            let healthy = list.iter().filter(|e| e["healthy"] == true).count();
            let in_flight: u64 = list.iter().filter_map(|e| e["inFlight"].as_u64()).sum();
            json!({
                "key": key,
                "dns": spec.dns,
                "health": spec.health,
                "endpoints": endpoints,
                "healthy": healthy,
                "total": list.len(),
                "inFlight": in_flight,
                "routes": users.get(key.as_str()).cloned().unwrap_or_default(),
            })
        })
        .collect();
    json!({
        "generation": view.generation,
        "upstreams": upstreams,
    })
}

/// Live traffic of the last few seconds (see [`live`]).
pub fn live(publisher: &Publisher) -> Value {
    let snapshot = live::snapshot();
    json!({
        "generation": publisher.generation(),
        "paneSeconds": live::PANE_SECS,
        "windowSeconds": snapshot.window_seconds,
        "routes": snapshot.routes,
        "dropped": snapshot.dropped,
    })
}
