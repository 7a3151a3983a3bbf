//! Upstreams named by DNS: the resolver against a DNS server in the test
//! (first answer, re-resolution when the TTL runs out, keeping the last
//! good addresses while the server is silent, names dropped from the
//! table), and ExternalName Services and host backends through the real
//! proxy.

use crate::common;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::dns::TestDns;
use common::*;
use http::StatusCode;
use sluicegate::routing::{DnsTarget, UpstreamKey, UpstreamRegistry, UpstreamSpec};
use sluicegate::source::dns::{self, DnsResolver, DnsSettings, Targets};
use tokio::sync::watch;

const NAME: &str = "api.dns.test";

/// Fast settings: a silent server fails a lookup in 300 ms, and retries
/// come every second.
fn settings(server: SocketAddr) -> DnsSettings {
    DnsSettings {
        server: Some(server),
        min_ttl: Duration::from_secs(1),
        max_ttl: Duration::from_secs(300),
        max_backoff: Duration::from_secs(1),
        timeout: Duration::from_millis(300),
        attempts: 1,
    }
}

/// A registry holding one DNS upstream for `NAME` at `port`, and the
/// targets that name it.
fn registry_with(port: u16) -> (Arc<UpstreamRegistry>, UpstreamKey, Targets) {
    let key = UpstreamKey::external("default", "ext", port, NAME);
    let spec = UpstreamSpec {
        dns: Some(DnsTarget {
            name: NAME.into(),
            port,
        }),
        ..UpstreamSpec::default()
    };
    let specs = BTreeMap::from([(key.clone(), spec)]);
    let registry = Arc::new(UpstreamRegistry::new());
    registry.sync(&specs);
    let targets = dns::targets(&specs);
    (registry, key, targets)
}

fn endpoints(registry: &UpstreamRegistry, key: &UpstreamKey) -> Vec<SocketAddr> {
    registry
        .get(key)
        .map(|u| u.endpoints().addrs().to_vec())
        .unwrap_or_default()
}

/// Waits up to `limit` for `check` to hold.
async fn eventually(limit: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !check() {
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn at(ip: [u8; 4], port: u16) -> SocketAddr {
    SocketAddr::from((ip, port))
}

#[tokio::test]
async fn resolves_and_resolves_again_when_the_ttl_runs_out() {
    let server = TestDns::start(NAME, Ipv4Addr::new(127, 0, 0, 1), 1).await;
    let (registry, key, targets) = registry_with(8080);
    let (_tx, rx) = watch::channel(targets);
    let _resolver = DnsResolver::start(settings(server.addr), registry.clone(), rx);

    eventually(Duration::from_secs(3), "first answer", || {
        endpoints(&registry, &key) == [at([127, 0, 0, 1], 8080)]
    })
    .await;
    let first = server.a_queries();
    assert!(first >= 1);

    // The record changes; after its TTL (1 s) the new address serves.
    server.set_addr(Ipv4Addr::new(127, 0, 0, 2));
    let t = Instant::now();
    eventually(
        Duration::from_secs(4),
        "re-resolution after the TTL",
        || endpoints(&registry, &key) == [at([127, 0, 0, 2], 8080)],
    )
    .await;
    assert!(server.a_queries() > first, "no second query");
    assert!(
        t.elapsed() >= Duration::from_millis(500),
        "the TTL was not waited for: {:?}",
        t.elapsed()
    );

    // Not before the TTL: a record that lives 1 s is asked for about once
    // a second, not in a loop.
    let before = server.a_queries();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let asked = server.a_queries() - before;
    assert!((1..=4).contains(&asked), "{asked} queries in 2.5 s");
}

#[tokio::test]
async fn keeps_the_last_good_addresses_while_the_server_is_silent() {
    let server = TestDns::start(NAME, Ipv4Addr::new(127, 0, 0, 3), 1).await;
    let (registry, key, targets) = registry_with(9000);
    let (_tx, rx) = watch::channel(targets);
    let _resolver = DnsResolver::start(settings(server.addr), registry.clone(), rx);
    let good = [at([127, 0, 0, 3], 9000)];
    eventually(Duration::from_secs(3), "first answer", || {
        endpoints(&registry, &key) == good
    })
    .await;

    server.set_answering(false);
    let silent_from = server.a_queries();
    // Lookups keep failing (retries come every second here)...
    eventually(Duration::from_secs(6), "retries while silent", || {
        server.a_queries() >= silent_from + 3
    })
    .await;
    // ...and the upstream still has the last good address.
    assert_eq!(endpoints(&registry, &key), good);

    // The server comes back with another address: it takes over.
    server.set_addr(Ipv4Addr::new(127, 0, 0, 4));
    server.set_answering(true);
    eventually(Duration::from_secs(4), "recovery", || {
        endpoints(&registry, &key) == [at([127, 0, 0, 4], 9000)]
    })
    .await;
}

#[tokio::test]
async fn names_no_table_uses_are_no_longer_resolved() {
    let server = TestDns::start(NAME, Ipv4Addr::new(127, 0, 0, 5), 1).await;
    let (registry, key, targets) = registry_with(80);
    let (tx, rx) = watch::channel(targets);
    let _resolver = DnsResolver::start(settings(server.addr), registry.clone(), rx);
    eventually(Duration::from_secs(3), "first answer", || {
        !endpoints(&registry, &key).is_empty()
    })
    .await;

    tx.send(Targets::from([])).unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let stopped_at = server.a_queries();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(server.a_queries(), stopped_at, "still resolving");
}

#[tokio::test]
async fn a_second_upstream_of_a_known_name_gets_its_addresses_at_once() {
    let server = TestDns::start(NAME, Ipv4Addr::new(127, 0, 0, 6), 300).await;
    let (registry, key, targets) = registry_with(80);
    let (tx, rx) = watch::channel(targets.clone());
    let _resolver = DnsResolver::start(settings(server.addr), registry.clone(), rx);
    eventually(Duration::from_secs(3), "first answer", || {
        !endpoints(&registry, &key).is_empty()
    })
    .await;
    let asked = server.a_queries();

    // A new table adds another Service port on the same name.
    let other = UpstreamKey::external("default", "ext", 443, NAME);
    let mut specs = BTreeMap::new();
    for (k, port) in [(key.clone(), 80), (other.clone(), 443)] {
        let spec = UpstreamSpec {
            dns: Some(DnsTarget {
                name: NAME.into(),
                port,
            }),
            ..UpstreamSpec::default()
        };
        specs.insert(k, spec);
    }
    registry.sync(&specs);
    // The rebuild kept the first upstream's addresses.
    assert_eq!(endpoints(&registry, &key), [at([127, 0, 0, 6], 80)]);
    tx.send(dns::targets(&specs)).unwrap();
    eventually(Duration::from_secs(1), "the known answer", || {
        endpoints(&registry, &other) == [at([127, 0, 0, 6], 443)]
    })
    .await;
    // From the last answer, whose TTL has not run out: no new query.
    assert_eq!(server.a_queries(), asked);
}

/// A gateway whose resolver asks `server`.
async fn gateway(manifests: &str, server: &TestDns) -> TestGateway {
    let mut config = test_config(1);
    config.dns = settings(server.addr);
    TestGateway::start_with(manifests, config).await
}

/// Waits until `host` answers 200 and returns the body.
async fn body_when_served(gw: &TestGateway, host: &str, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let reply = get(gw.http(), host, "/").await;
        if reply.status == StatusCode::OK && reply.text() == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{host}: {} {:?}, wanted {want}",
            reply.status,
            reply.text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn external_name_services_and_host_backends_reach_their_hosts_through_the_proxy() {
    let one = Backend::named("one").await;
    let port = one.addr.port();
    // The same port on another loopback address, for when the name moves.
    let two = Backend::named_at("two", at([127, 0, 0, 2], port)).await;
    let server = TestDns::start("backend.dns.test", Ipv4Addr::new(127, 0, 0, 1), 1).await;
    let manifests = format!(
        r#"
apiVersion: v1
kind: Service
metadata: {{name: ext}}
spec:
  type: ExternalName
  externalName: backend.dns.test
  ports: [{{name: http, port: {port}}}]
---
apiVersion: v1
kind: Service
metadata: {{name: by-ip}}
spec:
  type: ExternalName
  externalName: 127.0.0.1
---
apiVersion: sluicegate.io/v1alpha1
kind: ApiRoute
metadata: {{name: ext}}
spec:
  hosts: [ext.test]
  routes:
  - name: r
    backends: [{{serviceName: ext, servicePort: http}}]
---
apiVersion: sluicegate.io/v1alpha1
kind: ApiRoute
metadata: {{name: direct}}
spec:
  hosts: [direct.test]
  routes:
  - name: r
    backends: [{{host: backend.dns.test, servicePort: {port}}}]
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: by-ip}}
spec:
  ingressClassName: sluicegate
  rules:
  - host: ip.test
    http:
      paths:
      - path: /
        pathType: Prefix
        backend: {{service: {{name: by-ip, port: {{number: {port}}}}}}}
"#
    );
    let gw = gateway(&manifests, &server).await;
    body_when_served(&gw, "ext.test", "one").await;
    body_when_served(&gw, "direct.test", "one").await;
    body_when_served(&gw, "ip.test", "one").await;
    // /routes shows the resolved addresses and the name they come from.
    let routes: serde_json::Value =
        serde_json::from_str(&admin_get(&gw, "/routes").await.text()).unwrap();
    let upstream = &routes["table"]["upstreams"][format!("default/ext:{port}@backend.dns.test")];
    assert_eq!(
        upstream["endpoints"],
        serde_json::json!([one.addr.to_string()])
    );
    assert_eq!(upstream["dns"]["name"], "backend.dns.test");

    // The name moves; once its TTL has run out both upstreams follow,
    // without a new table.
    let generation = gw.generation();
    server.set_addr(Ipv4Addr::new(127, 0, 0, 2));
    body_when_served(&gw, "ext.test", "two").await;
    body_when_served(&gw, "direct.test", "two").await;
    assert_eq!(gw.generation(), generation);

    // The DNS server goes silent: the last addresses keep serving.
    server.set_answering(false);
    let silent_from = server.a_queries();
    eventually(Duration::from_secs(6), "failed lookups", || {
        server.a_queries() >= silent_from + 2
    })
    .await;
    assert_eq!(get(gw.http(), "ext.test", "/").await.text(), "two");
    drop(two);
    gw.shutdown().await;
}
