//! How a route spreads load over endpoints and copes with failing ones:
//! the balancing algorithm, cookie affinity, retries, and the health
//! settings of its upstreams. Plain data, produced by translation.

use std::sync::Arc;
use std::time::Duration;

use serde::{Serialize, Serializer};

/// The algorithm that picks an endpoint within one backend's upstream.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(tag = "type")]
pub enum LoadBalancer {
    /// Each endpoint in turn.
    #[default]
    RoundRobin,
    /// The endpoint with the fewest requests in flight.
    LeastConnections,
    /// The endpoint that a hash of the request owns on a ring, so that a
    /// key keeps reaching the same endpoint while the set is stable.
    ConsistentHash {
        #[serde(rename = "hashOn")]
        hash_on: HashOn,
    },
    /// The endpoint with the lowest latency estimate times load, of two
    /// chosen at random.
    #[serde(rename = "PeakEWMA")]
    PeakEwma,
}

impl LoadBalancer {
    pub fn is_default(&self) -> bool {
        *self == LoadBalancer::RoundRobin
    }
}

/// What a consistent hash is computed from. A request that lacks the
/// value hashes its client address instead.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum HashOn {
    SourceIp,
    /// A request header, lower case.
    Header(String),
    Cookie(String),
    QueryParam(String),
}

/// Cookie-based session affinity: a request carrying the cookie goes to
/// the endpoint it names while that endpoint can take it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Affinity {
    pub cookie: String,
    /// `Max-Age` of the cookie; a session cookie when absent.
    #[serde(skip_serializing_if = "Option::is_none", with = "opt_duration")]
    pub ttl: Option<Duration>,
    pub path: String,
}

/// Failures that may be retried, as a set.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RetryOn(u8);

impl RetryOn {
    pub const CONNECT_FAILURE: RetryOn = RetryOn(1);
    pub const RESET: RetryOn = RetryOn(2);
    pub const STATUS_502: RetryOn = RetryOn(4);
    pub const STATUS_503: RetryOn = RetryOn(8);
    pub const STATUS_504: RetryOn = RetryOn(16);

    const NAMES: [(RetryOn, &'static str); 5] = [
        (RetryOn::CONNECT_FAILURE, "connect-failure"),
        (RetryOn::RESET, "reset"),
        (RetryOn::STATUS_502, "502"),
        (RetryOn::STATUS_503, "503"),
        (RetryOn::STATUS_504, "504"),
    ];

    /// The condition a name stands for, as written in the API.
    pub fn from_name(name: &str) -> Option<RetryOn> {
        Self::NAMES
            .iter()
            .find(|(_, n)| n.eq_ignore_ascii_case(name))
            .map(|(c, _)| *c)
    }

    pub fn contains(self, other: RetryOn) -> bool {
        self.0 & other.0 == other.0 && other.0 != 0
    }

    #[must_use]
    pub fn with(self, other: RetryOn) -> RetryOn {
        RetryOn(self.0 | other.0)
    }

    /// The condition an upstream status stands for, if any.
    pub fn for_status(status: u16) -> RetryOn {
        match status {
            502 => RetryOn::STATUS_502,
            503 => RetryOn::STATUS_503,
            504 => RetryOn::STATUS_504,
            _ => RetryOn(0),
        }
    }
}

impl Serialize for RetryOn {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(
            Self::NAMES
                .iter()
                .filter(|(c, _)| self.contains(*c))
                .map(|(_, n)| n),
        )
    }
}

/// When and how often a failed attempt is tried again on another
/// endpoint.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RetryPolicy {
    /// Attempts in all, the first included; 1 disables retries.
    pub attempts: u32,
    pub on: RetryOn,
    /// Retry methods that are not idempotent (POST, PATCH) too. A connect
    /// failure is retried for every method: nothing was sent.
    pub non_idempotent: bool,
    /// Retries allowed on top of requests, as a share of them.
    pub budget_ratio: f64,
    /// Retries allowed per second whatever the request rate.
    pub budget_min_per_second: u32,
}

impl Default for RetryPolicy {
    /// One more attempt on another endpoint when connecting fails: always
    /// safe, since the request never left.
    fn default() -> Self {
        RetryPolicy {
            attempts: 2,
            on: RetryOn::CONNECT_FAILURE,
            non_idempotent: false,
            budget_ratio: 0.2,
            budget_min_per_second: 10,
        }
    }
}

impl RetryPolicy {
    pub fn is_default(&self) -> bool {
        *self == RetryPolicy::default()
    }
}

/// Health settings of an upstream.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthSpec {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub active: Option<Arc<ActiveCheck>>,
    #[serde(skip_serializing_if = "PassiveHealth::is_default")]
    pub passive: PassiveHealth,
}

impl HealthSpec {
    pub fn is_default(&self) -> bool {
        *self == HealthSpec::default()
    }
}

/// Ejection of endpoints after consecutive failed requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PassiveHealth {
    /// Consecutive failures that eject an endpoint; 0 disables ejection.
    pub consecutive_failures: u32,
    /// First ejection; each further one in a row doubles it.
    #[serde(with = "duration")]
    pub base_ejection: Duration,
    #[serde(with = "duration")]
    pub max_ejection: Duration,
    /// Upstream statuses that count as failures besides connect errors,
    /// resets and timeouts: 5xx statuses listed as `5xx` bits (bit n is
    /// status 500 + n).
    #[serde(serialize_with = "statuses")]
    pub failure_statuses: u32,
}

impl Default for PassiveHealth {
    fn default() -> Self {
        PassiveHealth {
            consecutive_failures: 3,
            base_ejection: Duration::from_secs(10),
            max_ejection: Duration::from_secs(300),
            failure_statuses: 0,
        }
    }
}

impl PassiveHealth {
    pub fn is_default(&self) -> bool {
        *self == PassiveHealth::default()
    }

    /// Whether an upstream answer with `status` counts as a failure.
    pub fn is_failure_status(&self, status: u16) -> bool {
        (500..532).contains(&status) && self.failure_statuses & (1 << (status - 500)) != 0
    }
}

/// Periodic requests to every endpoint of an upstream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ActiveCheck {
    pub path: String,
    /// `Host` header of the check; the endpoint address when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(with = "duration")]
    pub interval: Duration,
    #[serde(with = "duration")]
    pub timeout: Duration,
    pub healthy_threshold: u32,
    pub unhealthy_threshold: u32,
    /// Inclusive status ranges that count as healthy.
    pub expected_statuses: Vec<(u16, u16)>,
}

impl ActiveCheck {
    pub fn expects(&self, status: u16) -> bool {
        self.expected_statuses
            .iter()
            .any(|&(lo, hi)| (lo..=hi).contains(&status))
    }
}

fn statuses<S: Serializer>(bits: &u32, s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq((0..32).filter(|n| bits & (1 << n) != 0).map(|n| 500 + n))
}

mod duration {
    use serde::Serializer;
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&format_args!("{}ms", d.as_millis()))
    }
}

mod opt_duration {
    use serde::Serializer;
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => super::duration::serialize(d, s),
            None => s.serialize_none(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_conditions_by_name_and_status() {
        let on = RetryOn::from_name("connect-failure")
            .unwrap()
            .with(RetryOn::from_name("503").unwrap());
        assert!(on.contains(RetryOn::CONNECT_FAILURE));
        assert!(on.contains(RetryOn::for_status(503)));
        assert!(!on.contains(RetryOn::for_status(502)));
        assert!(!on.contains(RetryOn::for_status(200)));
        assert!(RetryOn::from_name("timeout").is_none());
        assert_eq!(
            serde_json::to_string(&on).unwrap(),
            r#"["connect-failure","503"]"#
        );
    }

    #[test]
    fn failure_statuses_are_a_bit_set() {
        let p = PassiveHealth {
            failure_statuses: (1 << 2) | (1 << 3),
            ..PassiveHealth::default()
        };
        assert!(p.is_failure_status(502));
        assert!(p.is_failure_status(503));
        assert!(!p.is_failure_status(500));
        assert!(!p.is_failure_status(404));
        assert!(!p.is_failure_status(600));
    }
}
