//! The AI gateway's metrics, named after the OpenTelemetry GenAI semantic
//! conventions where one fits (`gen_ai.client.token.usage`,
//! `gen_ai.server.time_to_first_token`, `gen_ai.client.operation.duration`).
//!
//! Labels stay bounded by configuration: `route` and `instance` are
//! names from the route's `aiProxy`, `model` is an instance's forced model
//! or one of the route's `allowedModels` (anything else a client asks for
//! is `other`). `consumer` names come from consumer Secrets or from a
//! token's subject, which a key set outside the cluster decides, so this
//! process keeps at most [`MAX_CONSUMERS`] distinct values and counts the
//! rest as `other`.

use std::collections::HashSet;
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::Duration;

use super::labels;

/// Counter: tokens used, by `route`, `instance`, `model`, `consumer` and
/// `type` (`prompt`, `completion`, `total`: select one when summing).
pub const AI_TOKENS: &str = "sluicegate_ai_tokens_total";
/// Histogram: time from the request to the first token of a stream, by
/// `route`, `instance` and `model`.
pub const AI_TIME_TO_FIRST_TOKEN: &str = "sluicegate_ai_time_to_first_token_seconds";
/// Histogram: time from the request to the end of its answer, by `route`,
/// `instance` and `model`.
pub const AI_REQUEST_DURATION: &str = "sluicegate_ai_request_duration_seconds";
/// Counter: calls to provider instances, by `route`, `instance` and
/// `result` (`ok`, `rate_limited`, `server_error`, `timeout`,
/// `connect_failure`, `refused`: another 4xx).
pub const AI_PROVIDER_CALLS: &str = "sluicegate_ai_provider_calls_total";
/// Counter: requests moved on from an instance to the next, by `route`,
/// `instance` (the one that failed) and `reason`.
pub const AI_FALLBACKS: &str = "sluicegate_ai_fallbacks_total";
/// Counter: instances set aside by passive health, by `route` and
/// `instance`.
pub const AI_EJECTIONS: &str = "sluicegate_ai_ejections_total";
/// Counter: streams that ended early (the provider failed, the total time
/// ran out, the client left), by `route`, `instance` and `reason`.
pub const AI_STREAMS_CUT: &str = "sluicegate_ai_streams_cut_total";

/// Histogram buckets for time to first token, in seconds.
pub const TTFT_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// Histogram buckets for whole answers, in seconds.
pub const AI_DURATION_BUCKETS: &[f64] = &[
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0, 160.0, 300.0,
];

/// Distinct consumer label values kept per process.
pub const MAX_CONSUMERS: usize = 1000;

/// What one answered request used, for [`record_usage`].
#[derive(Debug, Clone, Copy)]
pub struct TokenCounts {
    pub prompt: u64,
    pub completion: u64,
}

/// The labels of one provider call.
#[derive(Debug, Clone, Copy)]
pub struct CallLabels<'a> {
    pub route: &'a str,
    pub instance: &'a str,
    pub model: &'a str,
}

/// Counts the tokens of one answer.
pub fn record_usage(l: CallLabels<'_>, consumer: Option<&str>, t: TokenCounts) {
    let consumer = bounded_consumer(consumer);
    for (kind, n) in [
        ("prompt", t.prompt),
        ("completion", t.completion),
        ("total", t.prompt + t.completion),
    ] {
        metrics::counter!(
            AI_TOKENS,
            labels(&[
                ("route", l.route),
                ("instance", l.instance),
                ("model", l.model),
                ("consumer", consumer),
                ("type", kind),
            ])
        )
        .increment(n);
    }
}

/// Records a stream's time to first token.
pub fn record_ttft(l: CallLabels<'_>, d: Duration) {
    metrics::histogram!(AI_TIME_TO_FIRST_TOKEN, call_labels(l)).record(d.as_secs_f64());
}

/// Records the time of a whole answer.
pub fn record_duration(l: CallLabels<'_>, d: Duration) {
    metrics::histogram!(AI_REQUEST_DURATION, call_labels(l)).record(d.as_secs_f64());
}

/// Counts one call to an instance.
pub fn record_call(route: &str, instance: &str, result: &'static str) {
    metrics::counter!(
        AI_PROVIDER_CALLS,
        labels(&[("route", route), ("instance", instance), ("result", result)])
    )
    .increment(1);
}

/// Counts a request moving on from `instance`.
pub fn record_fallback(route: &str, instance: &str, reason: &'static str) {
    metrics::counter!(
        AI_FALLBACKS,
        labels(&[("route", route), ("instance", instance), ("reason", reason)])
    )
    .increment(1);
}

/// Counts an instance set aside.
pub fn record_ejection(route: &str, instance: &str) {
    metrics::counter!(
        AI_EJECTIONS,
        labels(&[("route", route), ("instance", instance)])
    )
    .increment(1);
}

/// Counts a stream that ended early.
pub fn record_cut(route: &str, instance: &str, reason: &'static str) {
    metrics::counter!(
        AI_STREAMS_CUT,
        labels(&[("route", route), ("instance", instance), ("reason", reason)])
    )
    .increment(1);
}

fn call_labels(l: CallLabels<'_>) -> Vec<metrics::Label> {
    labels(&[
        ("route", l.route),
        ("instance", l.instance),
        ("model", l.model),
    ])
}

/// `consumer` as a label value: itself while fewer than
/// [`MAX_CONSUMERS`] distinct values were seen, `none` without one,
/// `other` past the bound.
fn bounded_consumer(consumer: Option<&str>) -> &str {
    let Some(c) = consumer else {
        return "none";
    };
    static SEEN: OnceLock<Mutex<HashSet<String>>> = OnceLock::new();
    let mut seen = SEEN
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    if seen.contains(c) {
        return c;
    }
    if seen.len() < MAX_CONSUMERS {
        seen.insert(c.to_owned());
        return c;
    }
    "other"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consumer_values_are_bounded() {
        assert_eq!(bounded_consumer(None), "none");
        let names: Vec<String> = (0..MAX_CONSUMERS + 10)
            .map(|i| format!("bounded-test-{i}"))
            .collect();
        let kept = names
            .iter()
            .filter(|n| bounded_consumer(Some(n)) == n.as_str())
            .count();
        assert!(kept <= MAX_CONSUMERS);
        assert!(kept >= MAX_CONSUMERS - 100, "others may share the set");
        // A value seen before keeps its own label.
        assert_eq!(bounded_consumer(Some(&names[0])), names[0]);
        assert_eq!(
            bounded_consumer(Some("never-seen-after-the-bound")),
            "other"
        );
    }
}
