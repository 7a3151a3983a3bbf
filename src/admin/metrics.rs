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
        // The per-request histograms are not the exporter's (see
        // `metrics::render_histograms`).
        let buckets = [
            (m::ai::AI_TIME_TO_FIRST_TOKEN, m::ai::TTFT_BUCKETS),
            (m::ai::AI_REQUEST_DURATION, m::ai::AI_DURATION_BUCKETS),
        ];
        let mut builder =
            PrometheusBuilder::new().idle_timeout(MetricKindMask::ALL, Some(m::IDLE_TIMEOUT));
        for (name, b) in buckets {
            // Only an empty bucket list is refused, and none is.
            builder = builder
                .set_buckets_for_metric(Matcher::Full(name.to_owned()), b)
                .unwrap_or_else(|_| PrometheusBuilder::new());
        }
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
        m::UPSTREAM_ENDPOINTS,
        "Endpoints of an upstream, by upstream and state (available, unavailable)."
    );
    metrics::describe_gauge!(
        m::UPSTREAM_IN_FLIGHT,
        "Requests in flight to an upstream's endpoints, by upstream."
    );
    metrics::describe_gauge!(
        m::ENDPOINT_IN_FLIGHT,
        "Requests in flight per endpoint, by upstream and endpoint (--metrics-detail full)."
    );
    metrics::describe_gauge!(
        m::ENDPOINT_HEALTHY,
        "1 while an endpoint takes traffic, 0 while ejected or failing active checks (--metrics-detail full)."
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
        m::MIRRORED,
        "Requests mirrored by RequestMirror filters, by result."
    );
    metrics::describe_counter!(
        m::DNS_LOOKUPS,
        "DNS lookups of the names of upstreams outside the cluster, by result."
    );
    metrics::describe_counter!(
        m::UPSTREAM_ATTEMPTS,
        "Attempts on endpoints, by status class (error: no response), and by route with --metrics-detail full."
    );
    metrics::describe_counter!(
        m::PLUGIN_DECISIONS,
        "What plugins decided, by route, plugin, decision and status class of their answers."
    );
    metrics::describe_gauge!(
        m::CONNECTIONS_ACTIVE,
        "Client connections open, by listener and protocol."
    );
    metrics::describe_counter!(
        m::CONNECTIONS_TOTAL,
        "Client connections accepted, by listener and protocol."
    );
    metrics::describe_counter!(
        m::TLS_HANDSHAKES,
        "TLS handshakes, by result and whether a session was resumed."
    );
    metrics::describe_counter!(
        m::QUIC_INCOMING,
        "New QUIC (HTTP/3) connections, by result: retry, accepted, refused."
    );
    metrics::describe_gauge!(
        m::TLS_HANDSHAKES_PENDING,
        "TLS handshakes in progress, all workers together."
    );
    metrics::describe_gauge!(
        m::CERTIFICATE_EXPIRY,
        metrics::Unit::Seconds,
        "When each certificate in use expires (Unix seconds), by Secret."
    );
    metrics::describe_gauge!(m::TABLE_GENERATION, "Generation of the live route table.");
    metrics::describe_gauge!(
        m::CONFIG_LAST_RELOAD,
        metrics::Unit::Seconds,
        "When the live table was published (Unix seconds)."
    );
    metrics::describe_counter!(
        m::CONFIG_RELOAD_FAILURES,
        "Configuration sources that could not be loaded (their last good version kept)."
    );
    metrics::describe_gauge!(
        m::CONFIG_OBJECTS_WITH_DIAGNOSTICS,
        "Objects with diagnostics, by kind and reason."
    );
    metrics::describe_gauge!(m::BUILD_INFO, "1, with the build's version and commit.");
    metrics::describe_counter!(
        m::ACCESS_LOG_DROPPED,
        "Access log lines dropped because the writer fell behind."
    );
    metrics::describe_counter!(
        m::ai::AI_TOKENS,
        "LLM tokens used, by route, instance, model, consumer and type (prompt, completion, total)."
    );
    metrics::describe_histogram!(
        m::ai::AI_TIME_TO_FIRST_TOKEN,
        metrics::Unit::Seconds,
        "Time from an AI request to the first token of its stream, by route, instance and model."
    );
    metrics::describe_histogram!(
        m::ai::AI_REQUEST_DURATION,
        metrics::Unit::Seconds,
        "Time from an AI request to the end of its answer, by route, instance and model."
    );
    metrics::describe_counter!(
        m::ai::AI_PROVIDER_CALLS,
        "Calls to LLM provider instances, by route, instance and result."
    );
    metrics::describe_counter!(
        m::ai::AI_FALLBACKS,
        "AI requests moved on from an instance to the next, by route, instance and reason."
    );
    metrics::describe_counter!(
        m::ai::AI_EJECTIONS,
        "LLM provider instances set aside by passive health, by route and instance."
    );
    metrics::describe_counter!(
        m::ai::AI_STREAMS_CUT,
        "AI answer streams ended early, by route, instance and reason."
    );
    m::build_info();
}

/// The whole exposition: the exporter's series, then the per-request
/// histograms.
pub fn render() -> String {
    let mut text = handle().render();
    m::render_histograms(&mut text);
    text
}

/// The exposition as a scrape asked for it: gzip-compressed when its
/// `Accept-Encoding` takes gzip (Prometheus always asks), else plain
/// text. Thousands of routes make megabytes of text that compress about
/// tenfold, and a scrape every few seconds from several Prometheus
/// replicas makes that the admin port's largest cost in bandwidth.
/// Returns the body and whether it is compressed.
pub fn exposition(request: &http::HeaderMap) -> (Vec<u8>, bool) {
    use crate::plugins::transform::compress::{Coding, weight};
    let text = render();
    if weight(request, Coding::Gzip) == 0 {
        return (text.into_bytes(), false);
    }
    gzip(text.as_bytes()).map_or_else(|| (text.into_bytes(), false), |z| (z, true))
}

/// `text` gzip-compressed at the fastest level (a scrape is answered
/// while the scraper waits; level 1 already takes most of the gain).
fn gzip(text: &[u8]) -> Option<Vec<u8>> {
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(text.len() / 8),
        flate2::Compression::fast(),
    );
    enc.write_all(text).ok()?;
    enc.finish().ok()
}
