//! Session ticket keys in Kubernetes mode: the leader creates and rotates
//! the Secret named by `--tls-ticket-keys-secret`, and every replica seals
//! and opens tickets with its keys, so a session made with one replica
//! resumes on another. Against the API-server double.

use crate::apiserver;
use crate::common;
use crate::controller_secrets::tls_secret;

use std::time::Duration;

use apiserver::ApiServer;
use common::{Backend, test_config};
use rustls::HandshakeKind;
use serde_json::{Value, json};
use sluicegate::controller::{Controller, ControllerConfig, Publish};
use sluicegate::source::kube::WatchScope;
use sluicegate::status::lease::LeaseConfig;
use sluicegate::translate::ObjectKey;

const WAIT: Duration = Duration::from_secs(10);

fn seed(api: &ApiServer, backend: std::net::SocketAddr, cert: &common::tls::Cert) {
    api.apply(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {"ports": [{"name": "http", "port": 80, "targetPort": "http"}]}
    }));
    api.apply(json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "web-abc", "namespace": "shop",
                     "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": backend.port(), "protocol": "TCP"}],
        "endpoints": [{"addresses": [backend.ip().to_string()], "conditions": {"ready": true}}]
    }));
    api.apply(tls_secret("shop", "web-tls", cert));
    api.apply(json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {"ingressClassName": "sluicegate",
                 "tls": [{"hosts": ["shop.test"], "secretName": "web-tls"}],
                 "rules": [{"host": "shop.test", "http": {"paths": [
            {"path": "/", "pathType": "Prefix",
             "backend": {"service": {"name": "web", "port": {"number": 80}}}}]}}]}
    }));
}

fn config(identity: &str, rotation: Duration) -> ControllerConfig {
    let mut gateway = test_config(1);
    gateway.https_addr = Some("127.0.0.1:0".parse().unwrap());
    gateway.translate.ticket_keys_secret = Some(ObjectKey::new("sluicegate-system", "tickets"));
    gateway.proxy.tls.ticket_key_rotation = rotation;
    ControllerConfig {
        gateway,
        scope: WatchScope::default(),
        publish: Publish::Nothing,
        lease: Some(LeaseConfig {
            namespace: "sluicegate-system".into(),
            name: "sluicegate-leader".into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(2),
            renew_deadline: Duration::from_millis(1500),
            retry_period: Duration::from_millis(200),
        }),
        instance: Some(identity.into()),
    }
}

/// The start times of the Secret's keys, sorted.
fn key_starts(api: &ApiServer) -> Vec<u64> {
    let Some(secret) = api.get("v1", "Secret", Some("sluicegate-system"), "tickets") else {
        return Vec::new();
    };
    let mut starts: Vec<u64> = secret["data"]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, _)| k.strip_prefix("ticket-key-")?.parse().ok())
        .collect();
    starts.sort();
    starts
}

/// The start times of the keys a replica serves with (from `/routes`).
async fn served_starts(c: &Controller) -> Vec<u64> {
    let r = common::get(c.gateway().admin_addr(), "admin", "/routes").await;
    let v: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
    let mut found = Vec::new();
    collect_starts(&v, &mut found);
    found.sort();
    found
}

fn collect_starts(v: &Value, out: &mut Vec<u64>) {
    match v {
        Value::Object(m) => {
            if let Some(Value::Array(keys)) = m.get("ticket_keys") {
                out.extend(keys.iter().filter_map(|k| k["notBefore"].as_u64()));
            }
            m.values().for_each(|v| collect_starts(v, out));
        }
        Value::Array(a) => a.iter().for_each(|v| collect_starts(v, out)),
        _ => {}
    }
}

async fn eventually<F: AsyncFn() -> bool>(what: &str, f: F) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !f().await {
        assert!(tokio::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn get(s: tokio_rustls::client::TlsStream<tokio::net::TcpStream>) -> String {
    use http_body_util::{BodyExt, Empty};
    let (mut send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(s))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = http::Request::get("/")
        .header("host", "shop.test")
        .body(Empty::<bytes::Bytes>::new())
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8_lossy(&body).into_owned()
}

#[tokio::test]
async fn the_leader_keeps_shared_ticket_keys_and_each_replica_resumes_the_others_sessions() {
    let api = ApiServer::start().await;
    let blue = Backend::named("blue").await;
    let cert = common::tls::cert(&["shop.test"]);
    seed(&api, blue.addr, &cert);
    // A period of 6 s: the next key starts while the test watches.
    let rotation = Duration::from_secs(6);
    let a = Controller::start(config("a", rotation), api.client())
        .await
        .unwrap();
    let b = Controller::start(config("b", rotation), api.client())
        .await
        .unwrap();

    // The leader creates the Secret with the current and the next key;
    // both replicas take them from their watch.
    eventually("the Secret gets two keys", async || {
        key_starts(&api).len() == 2
    })
    .await;
    let written = key_starts(&api);
    assert_eq!(written[1] - written[0], 6, "{written:?}");
    eventually("both replicas serve with the Secret's keys", async || {
        served_starts(&a).await == key_starts(&api) && served_starts(&b).await == key_starts(&api)
    })
    .await;

    let (ha, hb) = (
        a.gateway().https_addr().unwrap(),
        b.gateway().https_addr().unwrap(),
    );
    let client = common::tls::client_config(&[]);
    let first = common::tls::connect_with(&client, ha, Some("shop.test")).await;
    assert_eq!(
        first.get_ref().1.handshake_kind(),
        Some(HandshakeKind::Full)
    );
    assert_eq!(get(first).await, "blue");
    let second = common::tls::connect_with(&client, hb, Some("shop.test")).await;
    assert_eq!(
        second.get_ref().1.handshake_kind(),
        Some(HandshakeKind::Resumed),
        "b resumes what a issued"
    );
    assert_eq!(get(second).await, "blue");
    let third = common::tls::connect_with(&client, ha, Some("shop.test")).await;
    assert_eq!(
        third.get_ref().1.handshake_kind(),
        Some(HandshakeKind::Resumed),
        "a resumes what b issued"
    );
    assert_eq!(get(third).await, "blue");

    // A ticket sealed by the first key shortly before the second starts
    // sealing still resumes after it did.
    let unix = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64()
    };
    let switch = written[1] as f64;
    tokio::time::sleep(Duration::from_secs_f64((switch - 2.0 - unix()).max(0.0))).await;
    let before = common::tls::connect_with(&client, ha, Some("shop.test")).await;
    assert_eq!(get(before).await, "blue");
    assert!(
        unix() < switch,
        "too slow to get a ticket before the rotation"
    );
    tokio::time::sleep(Duration::from_secs_f64((switch + 1.0 - unix()).max(0.0))).await;
    let after = common::tls::connect_with(&client, hb, Some("shop.test")).await;
    assert_eq!(
        after.get_ref().1.handshake_kind(),
        Some(HandshakeKind::Resumed),
        "a ticket of the retired key"
    );
    assert_eq!(get(after).await, "blue");

    // The leader adds the key after next; the replicas follow.
    eventually("the leader rotates", async || key_starts(&api).len() == 3).await;
    eventually("both replicas take the rotation", async || {
        served_starts(&a).await == key_starts(&api) && served_starts(&b).await == key_starts(&api)
    })
    .await;
    a.shutdown().await;
    b.shutdown().await;
}
