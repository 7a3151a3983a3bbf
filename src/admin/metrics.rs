//! The process-wide Prometheus recorder.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use metrics_util::MetricKindMask;

use crate::metrics as m;

/// Installs the recorder on first call and returns its handle. Later calls
/// (several gateways in one test process) share it.
pub fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .idle_timeout(MetricKindMask::ALL, Some(m::IDLE_TIMEOUT))
            .set_buckets_for_metric(
                Matcher::Full(m::REQUEST_DURATION.to_owned()),
                m::LATENCY_BUCKETS,
            )
            .unwrap_or_else(|_| PrometheusBuilder::new());
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_ok() {
            describe();
        }
        handle
    })
}

fn describe() {
    metrics::describe_counter!(
        m::REQUESTS_TOTAL,
        "Requests answered, by route and status class."
    );
    metrics::describe_histogram!(
        m::REQUEST_DURATION,
        metrics::Unit::Seconds,
        "Time from request head received to response head sent, by route."
    );
    metrics::describe_counter!(m::TABLE_UPDATES, "Route tables published.");
    metrics::describe_gauge!(m::TABLE_ROUTES, "Routes in the live table.");
    metrics::describe_gauge!(
        m::CONFIG_DIAGNOSTICS,
        "Configuration problems in the live config, by severity."
    );
    metrics::describe_counter!(
        m::UPSTREAM_RETRIES,
        "Attempts sent again to another endpoint, by route."
    );
    metrics::describe_counter!(
        m::UPSTREAM_EJECTIONS,
        "Endpoints ejected after consecutive failures."
    );
    metrics::describe_gauge!(
        m::ENDPOINT_IN_FLIGHT,
        "Requests in flight per endpoint, by upstream and endpoint."
    );
    metrics::describe_gauge!(
        m::ENDPOINT_HEALTHY,
        "1 while an endpoint takes traffic, 0 while ejected or failing active checks."
    );
    metrics::describe_counter!(
        m::WATCH_ERRORS,
        "Failed list or watch requests to the API server, by kind."
    );
    metrics::describe_gauge!(
        m::WATCH_HEALTHY,
        "1 while every watch of a kind has listed and is not failing, by kind."
    );
    metrics::describe_gauge!(
        m::WATCH_LAST_EVENT_AGE,
        metrics::Unit::Seconds,
        "Seconds since a kind's watches last delivered an object or a list, by kind."
    );
    metrics::describe_counter!(
        m::LEADER_ELECTION_ERRORS,
        "Failed leader election requests (get, create or update of the Lease)."
    );
    metrics::describe_gauge!(m::LEADER, "1 while this replica holds the leader Lease.");
    metrics::describe_counter!(
        m::DNS_LOOKUPS,
        "DNS lookups of the names of upstreams outside the cluster, by result."
    );
}
