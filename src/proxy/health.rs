//! Active health checks: a task per upstream with `healthCheck.active`
//! that sends a GET to every endpoint on an interval and marks endpoints
//! down or up after the configured number of failed or passed checks in a
//! row.
//!
//! Verdicts live in the endpoints' own state, which carries across table
//! and endpoint updates; a new endpoint starts up, as Kubernetes already
//! found it ready. Checks speak plain HTTP/1.1, one short connection per
//! check, so that a check never borrows a connection requests could use.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError, Weak};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tracing::{info, warn};

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

/// One check: connect, send the request, read the status line.
async fn probe(addr: SocketAddr, check: &ActiveCheck) -> Result<(), String> {
    let attempt = async {
        let mut stream = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let host = check.host.clone().unwrap_or_else(|| addr.to_string());
        let request = format!(
            "GET {} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: sluicegate-health-check\r\nAccept: */*\r\nConnection: close\r\n\r\n",
            check.path
        );
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| format!("write: {e}"))?;
        let mut buf = [0u8; 64];
        let mut n = 0;
        while n < 12 {
            match stream.read(&mut buf[n..]).await {
                Ok(0) => return Err("closed before a status line".to_owned()),
                Ok(k) => n += k,
                Err(e) => return Err(format!("read: {e}")),
            }
        }
        status(&buf[..n]).ok_or_else(|| "not an HTTP response".to_owned())
    };
    match tokio::time::timeout(check.timeout, attempt).await {
        Err(_) => Err(format!("no answer within {:?}", check.timeout)),
        Ok(Err(e)) => Err(e),
        Ok(Ok(code)) if check.expects(code) => Ok(()),
        Ok(Ok(code)) => Err(format!("status {code}")),
    }
}

/// The status code of an HTTP/1.x status line.
fn status(line: &[u8]) -> Option<u16> {
    let rest = line.strip_prefix(b"HTTP/1.")?;
    let code = rest.get(2..5)?;
    if rest.get(1) != Some(&b' ') || !code.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(code).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines() {
        assert_eq!(status(b"HTTP/1.1 200 OK\r\n"), Some(200));
        assert_eq!(status(b"HTTP/1.0 503 Service"), Some(503));
        assert_eq!(status(b"HTTP/2 200"), None);
        assert_eq!(status(b"SSH-2.0-OpenSSH"), None);
        assert_eq!(status(b"HTTP/1.1 2x0"), None);
    }
}
