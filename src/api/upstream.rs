//! Route settings about upstreams: load balancing, session affinity,
//! retries and health checks.

use kube::KubeSchema;
use serde::{Deserialize, Serialize};

use super::common::Duration;

/// How an endpoint is chosen among a Service's endpoints.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = Rule::new("self.type == 'ConsistentHash' || !has(self.hashOn)").message("hashOn applies only to type ConsistentHash"))]
pub struct LoadBalancerConfig {
    /// RoundRobin (default), LeastConnections, ConsistentHash or PeakEWMA.
    #[serde(rename = "type")]
    pub kind: LoadBalancerType,
    /// What ConsistentHash hashes; the client address by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash_on: Option<HashOnConfig>,
}

/// Load-balancing algorithms.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum LoadBalancerType {
    /// Each endpoint in turn.
    RoundRobin,
    /// The endpoint with the fewest requests in flight.
    LeastConnections,
    /// A hash ring: a key keeps reaching the same endpoint, and adding or
    /// removing one endpoint moves about 1/N of the keys.
    ConsistentHash,
    /// Lowest latency estimate times requests in flight, of two endpoints
    /// chosen at random.
    #[serde(rename = "PeakEWMA")]
    PeakEwma,
}

/// The request value a consistent hash is computed from; at most one
/// field (none means sourceIP). A request without the value hashes its
/// client address.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = Rule::new("(has(self.sourceIP) && self.sourceIP ? 1 : 0) + (has(self.header) ? 1 : 0) + (has(self.cookie) ? 1 : 0) + (has(self.queryParam) ? 1 : 0) <= 1").message("set only one of sourceIP, header, cookie, queryParam"))]
pub struct HashOnConfig {
    /// The client address.
    #[serde(default, rename = "sourceIP", skip_serializing_if = "Option::is_none")]
    pub source_ip: Option<bool>,
    /// A request header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub header: Option<String>,
    /// A cookie.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub cookie: Option<String>,
    /// A query parameter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub query_param: Option<String>,
}

/// Keeps a client on one endpoint.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SessionAffinity {
    /// The gateway sets a cookie naming the endpoint that served the
    /// first request; later requests with it go to that endpoint while it
    /// is available.
    pub cookie: AffinityCookie,
}

/// The affinity cookie.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AffinityCookie {
    /// Cookie name.
    #[schemars(
        length(min = 1, max = 128),
        regex(pattern = r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
    )]
    pub name: String,
    /// Lifetime (`Max-Age`); a session cookie when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<Duration>,
    /// Cookie path; `/` by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    pub path: Option<String>,
}

/// Retries of failed attempts on other endpoints.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Retries {
    /// Attempts in all, the first included (1 turns retries off). Default 2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10))]
    pub attempts: Option<u32>,
    /// Failures that are retried; `connect-failure` by default.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 5))]
    pub on: Vec<RetryCondition>,
    /// Also retry POST, PATCH and other non-idempotent requests after they
    /// may have reached the upstream. Connect failures are retried for
    /// every method.
    #[serde(default, skip_serializing_if = "is_false")]
    pub non_idempotent: bool,
    /// Limits retries so that an outage cannot multiply the load.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<RetryBudgetConfig>,
}

/// Failures that may be retried.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum RetryCondition {
    /// The connection could not be opened (refused, unreachable, timeout).
    #[serde(rename = "connect-failure")]
    ConnectFailure,
    /// The connection closed or reset before a response arrived.
    #[serde(rename = "reset")]
    Reset,
    #[serde(rename = "502")]
    Status502,
    #[serde(rename = "503")]
    Status503,
    #[serde(rename = "504")]
    Status504,
}

/// Retries allowed over a ten-second window.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetryBudgetConfig {
    /// Retries as a percentage of requests. Default 20.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 1000))]
    pub percent: Option<u32>,
    /// Retries per second allowed whatever the request rate. Default 10.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 100000))]
    pub min_per_second: Option<u32>,
}

/// Health of the endpoints behind the route's Services. Endpoints of a
/// Service port share one health state, so the first route (oldest
/// object) that sets health for a Service port decides it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HealthCheck {
    /// Active checks: a GET to every endpoint on an interval. Off when
    /// absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active: Option<ActiveHealthCheck>,
    /// Passive checks: eject an endpoint after consecutive failed
    /// requests. On by default (3 failures, 10 s ejection).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passive: Option<PassiveHealthCheck>,
}

/// Periodic HTTP checks of every endpoint.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = Rule::new("self.path.startsWith('/')").message("path must start with '/'"))]
pub struct ActiveHealthCheck {
    /// Path requested.
    #[schemars(length(min = 1, max = 1024))]
    pub path: String,
    /// `Host` header; the endpoint address by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub host: Option<String>,
    /// Time between checks of an endpoint. Default 5s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<Duration>,
    /// Time a check may take. Default 2s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    /// Consecutive passed checks that bring an endpoint back. Default 2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub healthy_threshold: Option<u32>,
    /// Consecutive failed checks that take an endpoint out. Default 3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub unhealthy_threshold: Option<u32>,
    /// Statuses that pass; 200-399 by default.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32), inner(range(min = 100, max = 599)))]
    pub expected_statuses: Vec<u16>,
}

/// Ejection after consecutive failures.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PassiveHealthCheck {
    /// Consecutive failures (connect errors, resets, timeouts, and the
    /// `failureStatuses`) that eject an endpoint; 0 turns ejection off.
    /// Default 3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 1000))]
    pub consecutive_failures: Option<u32>,
    /// First ejection; each further one in a row doubles. Default 10s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_ejection_time: Option<Duration>,
    /// Longest ejection. Default 300s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ejection_time: Option<Duration>,
    /// Upstream statuses that count as failures, e.g. [502, 503].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32), inner(range(min = 500, max = 531)))]
    pub failure_statuses: Vec<u16>,
}

fn is_false(v: &bool) -> bool {
    !*v
}
