//! Active health checks: a task per upstream with `healthCheck.active`
//! that sends a GET to every endpoint on an interval and marks endpoints
//! down or up after the configured number of failed or passed checks in a
//! row.
//!
//! Verdicts live in the endpoints' own state, which carries across table
//! and endpoint updates; a new endpoint starts up, as Kubernetes already
//! found it ready. Checks speak plain HTTP/1.1 through the gateway's own
//! client ([`fetch`]), so that an endpoint is judged by the same parser
//! that reads its answers to requests, on one short connection per check:
//! a check never borrows a connection requests could use, and each one
//! shows that a new connection can be made. Only the status counts; the
//! body is not read.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError, Weak};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::uri::PathAndQuery;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::http::client::fetch::{self, FetchError, Options, Request, Target};
use crate::routing::{ActiveCheck, EndpointState, Upstream, UpstreamKey, UpstreamRegistry};

/// A running check task and the settings it runs with.
type Running = (Arc<ActiveCheck>, JoinHandle<()>);

/// The running checks, one per upstream that asks for them.
#[derive(Debug, Default)]
pub struct HealthChecks {
    running: Mutex<HashMap<UpstreamKey, Running>>,
}

impl HealthChecks {
    /// Starts, restarts or stops checks to match the registry's upstreams.
    /// Without a Tokio runtime (some tests) nothing is started.
    pub fn sync(&self, registry: &UpstreamRegistry) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        let mut wanted = HashMap::new();
        for up in registry.all() {
            if let Some(check) = up.health().active.clone() {
                wanted.insert(up.key().clone(), (check, Arc::downgrade(&up)));
            }
        }
        running.retain(|key, (check, task)| {
            let keep = wanted.get(key).is_some_and(|(c, _)| c == check) && !task.is_finished();
            if !keep {
                task.abort();
            }
            keep
        });
        for (key, (check, up)) in wanted {
            if running.contains_key(&key) {
                continue;
            }
            let task = runtime.spawn(run(up, check.clone()));
            running.insert(key, (check, task));
        }
    }
}

impl Drop for HealthChecks {
    fn drop(&mut self) {
        let running = self
            .running
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner);
        for (_, (_, task)) in running.drain() {
            task.abort();
        }
    }
}

/// Consecutive results of one endpoint's checks.
#[derive(Default, Clone, Copy)]
struct Streak {
    passed: u32,
    failed: u32,
}

async fn run(upstream: Weak<Upstream>, check: Arc<ActiveCheck>) {
    let mut streaks: HashMap<SocketAddr, Streak> = HashMap::new();
    let mut tick = tokio::time::interval(check.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let (key, endpoints) = {
            let Some(up) = upstream.upgrade() else { return };
            let set = up.endpoints();
            let all: Vec<Arc<EndpointState>> = set
                .ready()
                .iter()
                .chain(set.terminating())
                .cloned()
                .collect();
            (up.key().clone(), all)
        };
        let results =
            futures_util::future::join_all(endpoints.iter().map(|e| probe(e.addr(), &check))).await;
        streaks.retain(|addr, _| endpoints.iter().any(|e| e.addr() == *addr));
        for (e, result) in endpoints.iter().zip(results) {
            let s = streaks.entry(e.addr()).or_default();
            match result {
                Ok(()) => {
                    s.passed = s.passed.saturating_add(1);
                    s.failed = 0;
                    if e.is_down() && s.passed >= check.healthy_threshold {
                        e.set_down(false);
                        info!(upstream = %key, endpoint = %e.addr(), "endpoint passed its health checks; back in service");
                    }
                }
                Err(why) => {
                    s.failed = s.failed.saturating_add(1);
                    s.passed = 0;
                    if !e.is_down() && s.failed >= check.unhealthy_threshold {
                        e.set_down(true);
                        warn!(upstream = %key, endpoint = %e.addr(), reason = %why, "endpoint failed its health checks; out of service");
                    }
                }
            }
        }
    }
}

/// One check: connect, send the request, read the response head.
async fn probe(addr: SocketAddr, check: &ActiveCheck) -> Result<(), String> {
    let path = PathAndQuery::try_from(check.path.as_str())
        .map_err(|_| format!("invalid path {:?}", check.path))?;
    let mut headers = HeaderMap::new();
    if let Some(host) = &check.host {
        let host =
            HeaderValue::try_from(host.as_str()).map_err(|_| format!("invalid host {host:?}"))?;
        headers.insert(header::HOST, host);
    }
    headers.insert(
        header::USER_AGENT,
        HeaderValue::from_static("sluicegate-health-check"),
    );
    headers.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
    let request = Request {
        method: http::Method::GET,
        path_and_query: path,
        headers,
        body: Bytes::new(),
    };
    let options = Options {
        timeout: check.timeout,
        max_body: 0,
        reuse: false,
    };
    match fetch::fetch(&Target::http(addr), request, &options).await {
        Err(FetchError::Timeout(t)) => Err(format!("no answer within {t:?}")),
        Err(e) => Err(e.to_string()),
        Ok(r) if check.expects(r.status.as_u16()) => Ok(()),
        Ok(r) => Err(format!("status {}", r.status.as_u16())),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    fn check(host: Option<&str>) -> ActiveCheck {
        ActiveCheck {
            path: "/healthz?full=1".into(),
            host: host.map(Into::into),
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(2),
            healthy_threshold: 1,
            unhealthy_threshold: 1,
            expected_statuses: vec![(200, 299)],
        }
    }

    /// Answers one connection with `answer`; returns what it received.
    async fn endpoint(answer: &'static str) -> (SocketAddr, JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut got = Vec::new();
            let mut buf = [0u8; 1024];
            while !got.ends_with(b"\r\n\r\n") {
                let n = s.read(&mut buf).await.unwrap();
                assert!(n > 0, "closed before the head ended");
                got.extend_from_slice(&buf[..n]);
            }
            s.write_all(answer.as_bytes()).await.unwrap();
            String::from_utf8(got).unwrap()
        });
        (addr, task)
    }

    #[tokio::test]
    async fn a_check_is_one_get_on_a_connection_of_its_own() {
        let (addr, seen) = endpoint("HTTP/1.1 204 No Content\r\n\r\n").await;
        assert_eq!(probe(addr, &check(None)).await, Ok(()));
        assert_eq!(
            seen.await.unwrap(),
            format!(
                "GET /healthz?full=1 HTTP/1.1\r\nhost: {addr}\r\n\
                 user-agent: sluicegate-health-check\r\naccept: */*\r\n\
                 connection: close\r\n\r\n"
            )
        );
    }

    #[tokio::test]
    async fn the_status_decides_and_bodies_are_not_waited_for() {
        // A long body that never comes: the head is enough.
        let (addr, seen) =
            endpoint("HTTP/1.1 503 Unavailable\r\ncontent-length: 100000\r\n\r\nstarting").await;
        assert_eq!(
            probe(addr, &check(Some("app.test"))).await,
            Err("status 503".into())
        );
        assert!(seen.await.unwrap().contains("\r\nhost: app.test\r\n"));

        let (addr, _) = endpoint("SSH-2.0-OpenSSH_9.6\r\n\r\n").await;
        let e = probe(addr, &check(None)).await.unwrap_err();
        assert!(e.contains("invalid response head"), "{e}");
    }

    #[tokio::test]
    async fn unreachable_and_silent_endpoints_fail() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let dead = listener.local_addr().unwrap();
        drop(listener);
        let e = probe(dead, &check(None)).await.unwrap_err();
        assert!(e.contains("connecting to"), "{e}");

        let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut c = check(None);
        c.timeout = Duration::from_millis(200);
        let e = probe(silent.local_addr().unwrap(), &c).await.unwrap_err();
        assert!(e.contains("no answer within 200ms"), "{e}");
    }
}
