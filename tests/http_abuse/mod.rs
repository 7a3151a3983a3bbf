//! The edge tried as an attacker would, byte by byte, on the plain and the
//! TLS listener alike (and on HTTP/2 where the attack is HTTP/2's). Each
//! case asserts what the backend received, not only what the client was
//! told, and names the rule it follows; docs/security.md has them all.

use crate::common;

mod framing;
mod h2;
mod head;
mod paths;
mod slow;

use common::wire::{Capture, Listener, Raw, Wire};
use common::*;
use sluicegate::gateway::GatewayConfig;

pub const HOST: &str = "abuse.test";

/// A gateway in front of two recording backends: `/admin` goes to
/// `admin`, everything else of [`HOST`] to `app`.
pub struct Setup {
    pub gw: TestGateway,
    pub app: Capture,
    pub admin: Capture,
}

impl Setup {
    pub async fn start() -> Setup {
        Setup::start_with("", |_| {}).await
    }

    /// With `extra` lines under each route and the gateway's settings
    /// changed by `tune`.
    pub async fn start_with(extra: &str, tune: impl FnOnce(&mut GatewayConfig)) -> Setup {
        Setup::start_full(extra, tune, Capture::start().await).await
    }

    /// With `extra` lines under each route, and an `app` backend that
    /// answers its requests by `reply`.
    pub async fn answering(
        extra: &str,
        reply: impl Fn(&common::wire::Received) -> Vec<u8> + Send + Sync + 'static,
    ) -> Setup {
        Setup::start_full(extra, |_| {}, Capture::with(reply).await).await
    }

    async fn start_full(extra: &str, tune: impl FnOnce(&mut GatewayConfig), app: Capture) -> Setup {
        let admin = Capture::start().await;
        let manifests = format!(
            r#"{}{}---
apiVersion: sluicegate.io/v1alpha1
kind: ApiRoute
metadata: {{name: abuse}}
spec:
  hosts: [{HOST}]
  routes:
  - name: admin
    match:
      paths: [{{type: Prefix, value: /admin}}]
    backends: [{{serviceName: admin, servicePort: 80}}]
{extra}  - name: app
    backends: [{{serviceName: app, servicePort: 80}}]
{extra}"#,
            service("app", &[app.addr]),
            service("admin", &[admin.addr]),
        );
        let mut config = Listener::config();
        tune(&mut config);
        let gw = TestGateway::start_with(&manifests, config).await;
        Setup { gw, app, admin }
    }

    /// A gateway whose one route answers 32 MiB, with `send_timeout`; the
    /// returned backend is the one that answers.
    pub async fn big(send_timeout: std::time::Duration) -> (Setup, Capture) {
        let body = "x".repeat(32 << 20);
        let big = Capture::with(move |_| common::wire::ok(&body)).await;
        let manifests = format!(
            "{}---\napiVersion: sluicegate.io/v1alpha1\nkind: ApiRoute\nmetadata: {{name: big}}\nspec:\n  hosts: [{HOST}]\n  routes:\n  - name: big\n    backends: [{{serviceName: big, servicePort: 80}}]\n",
            service("big", &[big.addr]),
        );
        let mut config = Listener::config();
        config.proxy.send_timeout = send_timeout;
        let gw = TestGateway::start_with(&manifests, config).await;
        let s = Setup {
            gw,
            app: Capture::start().await,
            admin: Capture::start().await,
        };
        (s, big)
    }

    pub async fn raw(&self, l: Listener) -> Raw {
        Raw::to(&self.gw, l).await
    }

    /// Sends `request` on a new connection; expects `status` and the
    /// connection closed after it, with nothing forwarded.
    pub async fn refused(&self, l: Listener, request: &[u8], status: u16) -> Wire {
        let before = (self.app.count(), self.admin.count());
        let mut c = self.raw(l).await;
        c.send_bytes(request).await;
        let r = c.response(false).await;
        let shown = String::from_utf8_lossy(&request[..request.len().min(120)]).into_owned();
        assert_eq!(r.status, status, "{l:?} {shown:?}: {r:?}");
        assert_eq!(r.header("connection"), Some("close"), "{l:?} {shown:?}");
        assert!(c.closed().await, "{l:?} {shown:?}: still open");
        // Whatever reached a backend would have done so before the answer.
        assert_eq!(
            (self.app.count(), self.admin.count()),
            before,
            "{l:?} {shown:?} reached a backend: {:?}",
            self.app.requests()
        );
        r
    }

    pub async fn shutdown(self) {
        self.gw.shutdown().await;
    }
}

pub fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: {HOST}\r\n\r\n")
}

/// An upstream answer that says how long the body of a `204` is, and
/// sends one: what a client must not be told (RFC 9110 §8.6).
pub fn no_content_with_length(r: &common::wire::Received) -> Vec<u8> {
    if r.line().starts_with("GET /204 ") {
        b"HTTP/1.1 204 No Content\r\ncontent-length: 5\r\nx-kept: 1\r\n\r\nhello".to_vec()
    } else {
        common::wire::ok("fine")
    }
}
