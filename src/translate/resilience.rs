//! Load balancing, affinity, retries and health: from an ApiRoute rule's
//! fields, or from an Ingress's annotations (Sluicegate's names and
//! ingress-nginx's).

use std::time::Duration;

use k8s_openapi::api::networking::v1::Ingress;

use super::Ctx;
use super::annotations::{field, get};
use super::diagnostics::{Reason, Subject};
use crate::api::{
    ActiveHealthCheck, HashOnConfig, HealthCheck, LoadBalancerConfig, LoadBalancerType,
    PassiveHealthCheck, Retries, RetryCondition, RouteRule, SessionAffinity,
};
use crate::routing::{
    ActiveCheck, Affinity, BackendSpec, HashOn, HealthSpec, LoadBalancer, PassiveHealth, RetryOn,
    RetryPolicy, Timeouts,
};

/// A route's upstream behaviour.
#[derive(Default)]
pub(super) struct Resilience {
    pub load_balancer: LoadBalancer,
    pub affinity: Option<Affinity>,
    pub retries: RetryPolicy,
    /// Health settings for the route's upstreams, when the route has any.
    pub health: Option<HealthSpec>,
}

/// An invalid field: its path below the rule, and why.
type Invalid = (String, String);

/// The settings of ApiRoute rule `rule`, whose fields start with
/// `prefix` (e.g. `spec.routes[0]`).
pub(super) fn from_rule(rule: &RouteRule, prefix: &str) -> Result<Resilience, Invalid> {
    let bad = |f: &str, why: &str| (format!("{prefix}.{f}"), why.to_owned());
    let load_balancer = match &rule.load_balancer {
        None => LoadBalancer::default(),
        Some(lb) => load_balancer(lb).map_err(|why| bad("loadBalancer.hashOn", why))?,
    };
    let affinity = match &rule.session_affinity {
        None => None,
        Some(a) => Some(affinity(a).map_err(|(f, why)| bad(f, why))?),
    };
    let retries = match &rule.retries {
        None => RetryPolicy::default(),
        Some(r) => retries(r),
    };
    let health = match &rule.health_check {
        None => None,
        Some(h) => Some(health(h).map_err(|(f, why)| bad(&format!("healthCheck.{f}"), &why))?),
    };
    Ok(Resilience {
        load_balancer,
        affinity,
        retries,
        health,
    })
}

fn load_balancer(lb: &LoadBalancerConfig) -> Result<LoadBalancer, &'static str> {
    Ok(match lb.kind {
        LoadBalancerType::RoundRobin => LoadBalancer::RoundRobin,
        LoadBalancerType::LeastConnections => LoadBalancer::LeastConnections,
        LoadBalancerType::PeakEwma => LoadBalancer::PeakEwma,
        LoadBalancerType::ConsistentHash => LoadBalancer::ConsistentHash {
            hash_on: hash_on(lb.hash_on.as_ref().unwrap_or(&HashOnConfig::default()))?,
        },
    })
}

fn hash_on(h: &HashOnConfig) -> Result<HashOn, &'static str> {
    let set = [
        h.source_ip == Some(true),
        h.header.is_some(),
        h.cookie.is_some(),
        h.query_param.is_some(),
    ]
    .into_iter()
    .filter(|&b| b)
    .count();
    if set > 1 {
        return Err("set only one of sourceIP, header, cookie, queryParam");
    }
    Ok(if let Some(name) = &h.header {
        if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
            return Err("header is not a valid header name");
        }
        HashOn::Header(name.to_ascii_lowercase())
    } else if let Some(c) = &h.cookie {
        HashOn::Cookie(c.clone())
    } else if let Some(q) = &h.query_param {
        HashOn::QueryParam(q.clone())
    } else {
        HashOn::SourceIp
    })
}

fn affinity(a: &SessionAffinity) -> Result<Affinity, (&'static str, &'static str)> {
    let c = &a.cookie;
    if c.name.is_empty() || !c.name.bytes().all(is_token_byte) {
        return Err(("sessionAffinity.cookie.name", "not a valid cookie name"));
    }
    let path = c.path.clone().unwrap_or_else(|| "/".to_owned());
    if !path.starts_with('/') || path.bytes().any(|b| b == b';' || b.is_ascii_control()) {
        return Err((
            "sessionAffinity.cookie.path",
            "must start with '/' and contain no ';' or control characters",
        ));
    }
    let ttl = c.ttl.map(|d| d.0);
    if ttl.is_some_and(|d| d.as_secs() == 0) {
        return Err(("sessionAffinity.cookie.ttl", "must be at least one second"));
    }
    Ok(Affinity {
        cookie: c.name.clone(),
        ttl,
        path,
    })
}

fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn retries(r: &Retries) -> RetryPolicy {
    let d = RetryPolicy::default();
    let on = if r.on.is_empty() {
        d.on
    } else {
        r.on.iter().fold(RetryOn::default(), |acc, c| {
            acc.with(match c {
                RetryCondition::ConnectFailure => RetryOn::CONNECT_FAILURE,
                RetryCondition::Reset => RetryOn::RESET,
                RetryCondition::Status502 => RetryOn::STATUS_502,
                RetryCondition::Status503 => RetryOn::STATUS_503,
                RetryCondition::Status504 => RetryOn::STATUS_504,
            })
        })
    };
    let budget = r.budget.unwrap_or(crate::api::RetryBudgetConfig {
        percent: None,
        min_per_second: None,
    });
    RetryPolicy {
        attempts: r.attempts.unwrap_or(d.attempts).clamp(1, 10),
        on,
        non_idempotent: r.non_idempotent,
        budget_ratio: budget
            .percent
            .map_or(d.budget_ratio, |p| f64::from(p) / 100.0),
        budget_min_per_second: budget.min_per_second.unwrap_or(d.budget_min_per_second),
    }
}

fn health(h: &HealthCheck) -> Result<HealthSpec, (String, String)> {
    let active = match &h.active {
        None => None,
        Some(a) => Some(std::sync::Arc::new(active(a)?)),
    };
    let passive = match &h.passive {
        None => PassiveHealth::default(),
        Some(p) => passive(p)?,
    };
    Ok(HealthSpec { active, passive })
}

fn active(a: &ActiveHealthCheck) -> Result<ActiveCheck, (String, String)> {
    let bad = |f: &str, why: &str| Err((format!("active.{f}"), why.to_owned()));
    if !a.path.starts_with('/')
        || a.path
            .bytes()
            .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
    {
        return bad("path", "must start with '/' and contain no spaces");
    }
    if let Some(h) = &a.host
        && h.bytes()
            .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
    {
        return bad("host", "must not contain spaces");
    }
    let interval = a.interval.map_or(Duration::from_secs(5), |d| d.0);
    let timeout = a.timeout.map_or(Duration::from_secs(2), |d| d.0);
    if interval < Duration::from_millis(100) {
        return bad("interval", "must be at least 100ms");
    }
    if timeout.is_zero() {
        return bad("timeout", "must be greater than zero");
    }
    if let Some(s) = a
        .expected_statuses
        .iter()
        .find(|s| !(100..=599).contains(*s))
    {
        return bad("expectedStatuses", &format!("{s} is not an HTTP status"));
    }
    let expected_statuses = if a.expected_statuses.is_empty() {
        vec![(200, 399)]
    } else {
        a.expected_statuses.iter().map(|&s| (s, s)).collect()
    };
    Ok(ActiveCheck {
        path: a.path.clone(),
        host: a.host.clone(),
        interval,
        timeout,
        healthy_threshold: a.healthy_threshold.unwrap_or(2).max(1),
        unhealthy_threshold: a.unhealthy_threshold.unwrap_or(3).max(1),
        expected_statuses,
    })
}

fn passive(p: &PassiveHealthCheck) -> Result<PassiveHealth, (String, String)> {
    let d = PassiveHealth::default();
    let mut failure_statuses = 0u32;
    for s in &p.failure_statuses {
        if !(500..532).contains(s) {
            return Err((
                "passive.failureStatuses".to_owned(),
                format!("{s} is not a status from 500 to 531"),
            ));
        }
        failure_statuses |= 1 << (s - 500);
    }
    let base_ejection = p.base_ejection_time.map_or(d.base_ejection, |t| t.0);
    let max_ejection = p.max_ejection_time.map_or(d.max_ejection, |t| t.0);
    if base_ejection.is_zero() {
        return Err((
            "passive.baseEjectionTime".to_owned(),
            "must be greater than zero".to_owned(),
        ));
    }
    Ok(PassiveHealth {
        consecutive_failures: p.consecutive_failures.unwrap_or(d.consecutive_failures),
        base_ejection,
        max_ejection: max_ejection.max(base_ejection),
        failure_statuses,
    })
}

/// Gives the upstreams of `backends` the route's health settings. A
/// Service port has one health state: when an older route already set
/// different settings for it, those stay and this route's get a warning.
pub(super) fn apply_health(
    ctx: &mut Ctx<'_>,
    obj: Subject<'_>,
    field: &str,
    backends: &[BackendSpec],
    health: &HealthSpec,
) {
    for b in backends {
        if let Err(owner) =
            ctx.resolver
                .set_health(&b.upstream, health, obj.object_ref().to_string())
        {
            ctx.diags.report(
                obj,
                field.to_owned(),
                Reason::Conflict,
                format!(
                    "{} already has other health settings from {owner}, which stay in force",
                    b.upstream
                ),
            );
        }
    }
}

const LOAD_BALANCE: [&str; 2] = [
    "sluicegate.io/load-balance",
    "nginx.ingress.kubernetes.io/load-balance",
];
const UPSTREAM_HASH_BY: [&str; 2] = [
    "sluicegate.io/upstream-hash-by",
    "nginx.ingress.kubernetes.io/upstream-hash-by",
];
const AFFINITY: [&str; 2] = [
    "sluicegate.io/affinity",
    "nginx.ingress.kubernetes.io/affinity",
];
const SESSION_COOKIE_NAME: [&str; 2] = [
    "sluicegate.io/session-cookie-name",
    "nginx.ingress.kubernetes.io/session-cookie-name",
];
const SESSION_COOKIE_MAX_AGE: [&str; 2] = [
    "sluicegate.io/session-cookie-max-age",
    "nginx.ingress.kubernetes.io/session-cookie-max-age",
];
const SESSION_COOKIE_EXPIRES: [&str; 2] = [
    "sluicegate.io/session-cookie-expires",
    "nginx.ingress.kubernetes.io/session-cookie-expires",
];
const SESSION_COOKIE_PATH: [&str; 2] = [
    "sluicegate.io/session-cookie-path",
    "nginx.ingress.kubernetes.io/session-cookie-path",
];
const NEXT_UPSTREAM: [&str; 2] = [
    "sluicegate.io/proxy-next-upstream",
    "nginx.ingress.kubernetes.io/proxy-next-upstream",
];
const NEXT_UPSTREAM_TRIES: [&str; 2] = [
    "sluicegate.io/proxy-next-upstream-tries",
    "nginx.ingress.kubernetes.io/proxy-next-upstream-tries",
];
const CONNECT_TIMEOUT: [&str; 2] = [
    "sluicegate.io/proxy-connect-timeout",
    "nginx.ingress.kubernetes.io/proxy-connect-timeout",
];
const READ_TIMEOUT: [&str; 2] = [
    "sluicegate.io/proxy-read-timeout",
    "nginx.ingress.kubernetes.io/proxy-read-timeout",
];

/// The settings an Ingress's annotations ask for. An invalid value is
/// reported and ignored: the default applies.
pub(super) fn from_ingress(
    ctx: &mut Ctx<'_>,
    obj: Subject<'_>,
    ingress: &Ingress,
) -> (Resilience, Timeouts) {
    let mut warn = |name: &str, msg: String| {
        ctx.diags.report(obj, field(name), Reason::InvalidSpec, msg);
    };
    let mut out = Resilience::default();
    if let Some((name, v)) = get(ingress, LOAD_BALANCE) {
        match v.trim().to_ascii_lowercase().as_str() {
            "round_robin" | "roundrobin" => {}
            "least_conn" | "leastconnections" => out.load_balancer = LoadBalancer::LeastConnections,
            "ewma" | "peakewma" => out.load_balancer = LoadBalancer::PeakEwma,
            other => warn(
                name,
                format!("{other:?} is not round_robin, least_conn or ewma; using round_robin"),
            ),
        }
    }
    if let Some((name, v)) = get(ingress, UPSTREAM_HASH_BY) {
        match nginx_hash_by(v.trim()) {
            Some(hash_on) => out.load_balancer = LoadBalancer::ConsistentHash { hash_on },
            None => warn(
                name,
                format!(
                    "{v:?} is not one of $remote_addr, $http_NAME, $cookie_NAME, $arg_NAME; ignored"
                ),
            ),
        }
    }
    if let Some((name, v)) = get(ingress, AFFINITY) {
        if v.trim() == "cookie" {
            let cookie = get(ingress, SESSION_COOKIE_NAME)
                .map_or("INGRESSCOOKIE", |(_, v)| v.trim())
                .to_owned();
            let ttl = get(ingress, SESSION_COOKIE_MAX_AGE)
                .or_else(|| get(ingress, SESSION_COOKIE_EXPIRES))
                .and_then(|(_, v)| v.trim().parse::<u64>().ok())
                .filter(|&s| s > 0)
                .map(Duration::from_secs);
            let path = get(ingress, SESSION_COOKIE_PATH)
                .map_or("/", |(_, v)| v.trim())
                .to_owned();
            let valid = !cookie.is_empty()
                && cookie.bytes().all(is_token_byte)
                && path.starts_with('/')
                && !path.bytes().any(|b| b == b';' || b.is_ascii_control());
            if valid {
                out.affinity = Some(Affinity { cookie, ttl, path });
            } else {
                warn(
                    name,
                    "the session cookie name or path is invalid; affinity is off".to_owned(),
                );
            }
        } else {
            warn(name, format!("{v:?} is not \"cookie\"; affinity is off"));
        }
    }
    if let Some((name, v)) = get(ingress, NEXT_UPSTREAM) {
        let mut on = RetryOn::default();
        let mut off = false;
        for word in v.split_whitespace() {
            match word {
                "error" => on = on.with(RetryOn::CONNECT_FAILURE).with(RetryOn::RESET),
                "timeout" => on = on.with(RetryOn::CONNECT_FAILURE),
                "http_502" => on = on.with(RetryOn::STATUS_502),
                "http_503" => on = on.with(RetryOn::STATUS_503),
                "http_504" => on = on.with(RetryOn::STATUS_504),
                "non_idempotent" => out.retries.non_idempotent = true,
                "off" => off = true,
                other => warn(name, format!("{other:?} is not supported; ignored")),
            }
        }
        if off {
            out.retries.attempts = 1;
        } else {
            out.retries.on = on;
        }
    }
    if let Some((name, v)) = get(ingress, NEXT_UPSTREAM_TRIES) {
        match v.trim().parse::<u32>() {
            // ingress-nginx's 0 means no limit; ten is ours.
            Ok(0) => out.retries.attempts = 10,
            Ok(n) if out.retries.attempts > 1 => out.retries.attempts = n.min(10),
            Ok(_) => {}
            Err(_) => warn(name, format!("{v:?} is not a whole number; ignored")),
        }
    }
    let mut seconds = |names: [&'static str; 2]| {
        let (name, v) = get(ingress, names)?;
        match v.trim().trim_end_matches('s').parse::<u64>() {
            Ok(s) if s > 0 => Some(Duration::from_secs(s)),
            _ => {
                warn(name, format!("{v:?} is not a number of seconds; ignored"));
                None
            }
        }
    };
    let connect = seconds(CONNECT_TIMEOUT);
    let read = seconds(READ_TIMEOUT);
    let timeouts = Timeouts {
        connect,
        request: read,
        idle: read,
        send: None,
    };
    (out, timeouts)
}

/// An ingress-nginx `upstream-hash-by` variable.
fn nginx_hash_by(v: &str) -> Option<HashOn> {
    if matches!(v, "$remote_addr" | "$binary_remote_addr") {
        return Some(HashOn::SourceIp);
    }
    let named = |prefix: &str| {
        v.strip_prefix(prefix).filter(|n| {
            !n.is_empty()
                && n.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        })
    };
    if let Some(h) = named("$http_") {
        return Some(HashOn::Header(h.replace('_', "-").to_ascii_lowercase()));
    }
    if let Some(c) = named("$cookie_") {
        return Some(HashOn::Cookie(c.to_owned()));
    }
    named("$arg_").map(|q| HashOn::QueryParam(q.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nginx_hash_variables() {
        assert_eq!(nginx_hash_by("$remote_addr"), Some(HashOn::SourceIp));
        assert_eq!(
            nginx_hash_by("$http_x_user_id"),
            Some(HashOn::Header("x-user-id".into()))
        );
        assert_eq!(
            nginx_hash_by("$cookie_sid"),
            Some(HashOn::Cookie("sid".into()))
        );
        assert_eq!(
            nginx_hash_by("$arg_user"),
            Some(HashOn::QueryParam("user".into()))
        );
        assert_eq!(nginx_hash_by("$request_uri"), None);
        assert_eq!(nginx_hash_by("$http_"), None);
    }
}
