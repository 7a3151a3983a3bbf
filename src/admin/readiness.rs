//! `/readyz`: whether this replica serves a route table, with the
//! health of its sources as details.
//!
//! Readiness means "a table is live", nothing more: a replica keeps
//! serving its last table while the API server is unreachable, and must
//! stay in its Service's endpoints meanwhile, so failing watches show in
//! the details (and in `sluicegate_watch_healthy`) without turning the
//! probe red. The body follows kube-apiserver's verbose `/readyz`: one
//! `[+]` or `[-]` line per check, then the verdict.

use std::fmt::Write as _;
use std::time::Duration;

use http::StatusCode;

use crate::metrics as m;
use crate::publish::Publisher;
use crate::source::health::KindHealth;

/// The status and body of `/readyz`.
pub fn readyz(publisher: &Publisher) -> (StatusCode, String) {
    let ready = publisher.is_ready();
    let mut body = String::new();
    if ready {
        let _ = writeln!(
            body,
            "[+]table ok: generation {}, {} routes",
            publisher.generation(),
            publisher.view().table.routes.len()
        );
    } else {
        let _ = writeln!(body, "[-]table: no route table is live yet");
    }
    let mut degraded = false;
    if let Some(health) = publisher.watch_health() {
        for k in health.report() {
            degraded |= !k.healthy;
            let _ = writeln!(body, "{}", line(&k));
        }
    }
    let verdict = match (ready, degraded) {
        (true, false) => "ready",
        (true, true) => "ready: serving the last table while watches retry",
        (false, _) => "not ready: waiting for every watch to list",
    };
    let _ = writeln!(body, "{verdict}");
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, body)
}

fn secs(d: Duration) -> u64 {
    d.as_secs()
}

/// One watch kind's line.
fn line(k: &KindHealth) -> String {
    let last = k.last_event_age.map_or_else(
        || "no event yet".to_owned(),
        |a| format!("last event {}s ago", secs(a)),
    );
    if !k.healthy {
        format!(
            "[-]watch {} failing for {}s ({} errors since start; {}): {}",
            k.kind,
            k.failing_for.map_or(0, secs),
            k.errors,
            last,
            k.last_error.as_deref().unwrap_or("unknown error")
        )
    } else if !k.synced {
        format!("[-]watch {} not listed yet", k.kind)
    } else {
        format!("[+]watch {} ok: {last}", k.kind)
    }
}

/// Sets the per-kind watch gauges just before a scrape reads them.
pub fn watch_gauges(publisher: &Publisher) {
    let Some(health) = publisher.watch_health() else {
        return;
    };
    for k in health.report() {
        let kind = k.kind.as_str();
        let healthy = k.healthy && k.synced;
        ::metrics::gauge!(m::WATCH_HEALTHY, "kind" => kind).set(if healthy { 1.0 } else { 0.0 });
        if let Some(age) = k.last_event_age {
            ::metrics::gauge!(m::WATCH_LAST_EVENT_AGE, "kind" => kind).set(age.as_secs_f64());
        }
    }
}
