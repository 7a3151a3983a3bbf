//! The conformance suite's base, re-expressed for standalone mode: the
//! `gateway-conformance-*` namespaces, the `sluicegate` GatewayClass, the
//! Gateways `same-namespace`, `all-namespaces` and `backend-namespaces`
//! (each on a port of its own, where the suite gives each Gateway an
//! address of its own), and echo backends that answer with what they
//! received.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use http::Response;
use serde_json::Value;
use sluicegate::gateway::GatewayConfig;
use sluicegate::translate::{GatewayApiStatus, Kind};

use crate::common::{self, Backend, Reply, TestGateway, full};

pub const INFRA: &str = "gateway-conformance-infra";
pub const WEB: &str = "gateway-conformance-web-backend";
pub const APP: &str = "gateway-conformance-app-backend";

/// A port nobody listens on now, for a Gateway listener.
pub fn free_port() -> u16 {
    common::listener_port()
}

/// What an echo backend received, as it reported it.
#[derive(Debug)]
pub struct Echo {
    pub backend: String,
    pub method: String,
    /// Path and query as received.
    pub target: String,
    pub host: String,
    /// `HTTP/1.1` or `HTTP/2.0`.
    pub version: String,
    /// Header values by lower-case name, joined with `,` when repeated.
    pub headers: BTreeMap<String, String>,
}

impl Echo {
    pub fn parse(reply: &Reply) -> Option<Echo> {
        let v: Value = serde_json::from_slice(&reply.body).ok()?;
        let s = |k: &str| v[k].as_str().unwrap_or_default().to_owned();
        let headers = v["headers"]
            .as_object()?
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
            .collect();
        Some(Echo {
            backend: s("backend"),
            method: s("method"),
            target: s("target"),
            host: s("host"),
            version: s("version"),
            headers,
        })
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

/// A backend answering every request with a JSON echo of it, and the
/// headers it is asked for in `x-echo-set-<name>` request headers.
pub async fn echo(name: &'static str) -> Backend {
    Backend::start(move |req| async move {
        let mut headers: BTreeMap<String, String> = BTreeMap::new();
        for (k, v) in req.headers() {
            let v = String::from_utf8_lossy(v.as_bytes()).into_owned();
            headers
                .entry(k.as_str().to_owned())
                .and_modify(|e| {
                    e.push(',');
                    e.push_str(&v);
                })
                .or_insert(v);
        }
        let body = serde_json::json!({
            "backend": name,
            "method": req.method().as_str(),
            "target": req.uri().path_and_query().map_or("/", |p| p.as_str()),
            "host": req.headers().get("host").and_then(|h| h.to_str().ok())
                .or_else(|| req.uri().authority().map(|a| a.as_str())).unwrap_or(""),
            "version": format!("{:?}", req.version()),
            "headers": headers,
        });
        let mut resp = Response::builder()
            .header("x-backend", name)
            .header("content-type", "application/json");
        for (k, v) in req.headers() {
            if let Some(set) = k.as_str().strip_prefix("x-echo-set-") {
                resp = resp.header(set, v);
            }
        }
        resp.body(full(body.to_string())).unwrap()
    })
    .await
}

/// A Service with port 8080 (and an EndpointSlice to `addr`) in `ns`.
pub fn service(ns: &str, name: &str, addr: SocketAddr) -> String {
    service_port(ns, name, 8080, None, addr)
}

/// A Service `name` with one port and an `appProtocol`, to `addr`.
pub fn service_port(
    ns: &str,
    name: &str,
    port: u16,
    app_protocol: Option<&str>,
    addr: SocketAddr,
) -> String {
    let app = app_protocol.map_or(String::new(), |p| format!(", appProtocol: {p}"));
    format!(
        r#"---
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: {ns}}}
spec:
  ports: [{{name: p, port: {port}{app}}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: {name}-1
  namespace: {ns}
  labels: {{kubernetes.io/service-name: {name}}}
addressType: IPv4
ports: [{{name: p, port: {bport}}}]
endpoints:
- addresses: ["{ip}"]
  conditions: {{ready: true}}
"#,
        bport = addr.port(),
        ip = addr.ip(),
    )
}

/// A Gateway `name` in the infra namespace with one HTTP listener `http`
/// on `port`, allowing routes `from` (a YAML flow map of
/// `allowedRoutes.namespaces`).
pub fn gateway(name: &str, port: u16, from: &str) -> String {
    format!(
        r#"---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: {name}, namespace: {INFRA}}}
spec:
  gatewayClassName: sluicegate
  listeners:
  - name: http
    port: {port}
    protocol: HTTP
    allowedRoutes:
      namespaces: {from}
"#
    )
}

/// The running base: a gateway and its backends.
pub struct Infra {
    pub gw: TestGateway,
    /// Port of Gateway `same-namespace`.
    pub same: u16,
    /// Port of Gateway `all-namespaces`.
    pub all: u16,
    /// Port of Gateway `backend-namespaces`.
    pub backend_ns: u16,
    /// The echo backends, running as long as the base.
    _backends: Vec<Backend>,
}

/// A gateway configuration whose own HTTP port is known in advance, as
/// the command line makes it, so that Gateway listeners can share it.
pub fn config() -> GatewayConfig {
    let port = free_port();
    let mut cfg = common::test_config(2);
    cfg.http_addr = SocketAddr::from(([127, 0, 0, 1], port));
    cfg.translate.own_ports.http = port;
    cfg.translate.own_ports.https = None;
    cfg
}

impl Infra {
    /// Starts the base with `extra` manifests (the test's own).
    pub async fn start(extra: &str) -> Infra {
        Self::start_with(extra, config()).await
    }

    pub async fn start_with(extra: &str, cfg: GatewayConfig) -> Infra {
        let names = [
            "infra-backend-v1",
            "infra-backend-v2",
            "infra-backend-v3",
            "web-backend",
            "app-backend-v1",
            "app-backend-v2",
        ];
        let mut backends = Vec::new();
        for n in names {
            backends.push(echo(n).await);
        }
        let (same, all, backend_ns) = (free_port(), free_port(), free_port());
        let mut m = format!(
            r#"apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {{name: sluicegate}}
spec:
  controllerName: sluicegate.io/gateway-controller
---
apiVersion: v1
kind: Namespace
metadata:
  name: {INFRA}
  labels: {{gateway-conformance: infra}}
---
apiVersion: v1
kind: Namespace
metadata:
  name: {WEB}
  labels: {{gateway-conformance: backend}}
---
apiVersion: v1
kind: Namespace
metadata:
  name: {APP}
  labels: {{gateway-conformance: backend}}
"#
        );
        m.push_str(&gateway("same-namespace", same, "{from: Same}"));
        m.push_str(&gateway("all-namespaces", all, "{from: All}"));
        m.push_str(&gateway(
            "backend-namespaces",
            backend_ns,
            "{from: Selector, selector: {matchLabels: {gateway-conformance: backend}}}",
        ));
        for (i, b) in backends.iter().enumerate() {
            let ns = match i {
                0..=2 => INFRA,
                3 => WEB,
                _ => APP,
            };
            m.push_str(&service(ns, names[i], b.addr));
        }
        m.push_str(extra);
        let gw = TestGateway::start_with(&m, cfg).await;
        let infra = Infra {
            gw,
            same,
            all,
            backend_ns,
            _backends: backends,
        };
        for port in [same, all, backend_ns] {
            infra.wait_port(port).await;
        }
        infra
    }

    /// Waits until `port` accepts connections (it is opened right after
    /// its table is published).
    pub async fn wait_port(&self, port: u16) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(Instant::now() < deadline, "port {port} not open within 5s");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// `GET path` on `port` with `Host: host`.
    pub async fn get(&self, port: u16, host: &str, path: &str) -> Reply {
        self.request(port, "GET", host, path, &[]).await
    }

    pub async fn request(
        &self,
        port: u16,
        method: &str,
        host: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Reply {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        common::request(addr, method, host, path, headers).await
    }

    /// The status translation concluded for the live table.
    pub fn status(&self) -> GatewayApiStatus {
        self.gw
            .sa
            .as_ref()
            .unwrap()
            .gateway()
            .publisher()
            .view()
            .gateway_api
            .clone()
    }

    /// `(status, reason)` of condition `kind` of route `ns/name` towards
    /// Gateway `gateway`.
    pub fn route_condition(
        &self,
        route: (Kind, &str, &str),
        gateway: &str,
        kind: &str,
    ) -> Option<(bool, String)> {
        let status = self.status();
        let r = status
            .routes
            .iter()
            .find(|r| r.kind == route.0 && r.namespace == route.1 && r.name == route.2)?;
        let p = r.parents.iter().find(|p| p.parent_ref.name == gateway)?;
        let c = p.conditions.iter().find(|c| c.kind == kind)?;
        Some((c.status, c.reason.to_owned()))
    }

    /// `(status, reason)` of condition `kind` of listener `listener` of
    /// Gateway `gateway` in the infra namespace, and its attached routes.
    pub fn listener_condition(
        &self,
        gateway: &str,
        listener: &str,
        kind: &str,
    ) -> Option<(bool, String, i32)> {
        let status = self.status();
        let g = status.gateways.iter().find(|g| g.name == gateway)?;
        let l = g.listeners.iter().find(|l| l.name == listener)?;
        let c = l.conditions.iter().find(|c| c.kind == kind)?;
        Some((c.status, c.reason.to_owned(), l.attached_routes))
    }

    pub async fn shutdown(self) {
        self.gw.shutdown().await;
    }
}

/// Sends `req` and checks which backend answered and what it got.
#[track_caller]
pub fn expect_backend(reply: &Reply, backend: &str) -> Echo {
    assert_eq!(
        reply.status,
        200,
        "expected {backend}, got {} {}",
        reply.status,
        reply.text()
    );
    let echo = Echo::parse(reply).unwrap_or_else(|| panic!("not an echo: {}", reply.text()));
    assert_eq!(echo.backend, backend);
    echo
}
