//! Secrets in Kubernetes mode: served certificates follow their TLS
//! Secrets, Secrets that never hold certificates are not listed, and of
//! the others only certificate values are kept. Against the API-server
//! double.

use crate::apiserver;
use crate::common;
use crate::controller::{WAIT, config, ingress, service, slice, until};

use std::time::Duration;

use apiserver::ApiServer;
use common::Backend;
use serde_json::{Value, json};
use sluicegate::controller::{Controller, Publish};
use sluicegate::source::kube::{KubeSource, WatchScope};

/// A `kubernetes.io/tls` Secret as the API server stores it (base64 data).
pub(crate) fn tls_secret(ns: &str, name: &str, c: &common::tls::Cert) -> Value {
    use k8s_openapi::ByteString;
    let secret = k8s_openapi::api::core::v1::Secret {
        metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            name: Some(name.into()),
            namespace: Some(ns.into()),
            ..Default::default()
        },
        type_: Some("kubernetes.io/tls".into()),
        data: Some(
            [
                ("tls.crt".to_owned(), ByteString(c.pem.clone().into_bytes())),
                ("tls.key".to_owned(), ByteString(c.key.clone().into_bytes())),
            ]
            .into(),
        ),
        ..Default::default()
    };
    let mut v = serde_json::to_value(secret).unwrap();
    v["apiVersion"] = json!("v1");
    v["kind"] = json!("Secret");
    v
}

#[tokio::test]
async fn certificates_follow_tls_secrets_and_unrelated_secrets_are_not_listed() {
    let api = ApiServer::start().await;
    let blue = Backend::named("blue").await;
    let (first, renewed) = (
        common::tls::cert(&["shop.test"]),
        common::tls::cert(&["shop.test"]),
    );
    api.apply(service("shop", "web"));
    api.apply(slice("shop", "web", blue.addr, true));
    api.apply(tls_secret("shop", "web-tls", &first));
    api.apply(json!({
        "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": "db-password", "namespace": "shop"},
        "data": {"password": "aHVudGVyMg=="}
    }));
    let mut ing = ingress("shop", "web", "shop.test", "web");
    ing["spec"]["tls"] = json!([{"hosts": ["shop.test"], "secretName": "web-tls"}]);
    api.apply(ing);
    let mut cfg = config(Publish::Nothing, None);
    cfg.gateway.https_addr = Some("127.0.0.1:0".parse().unwrap());
    let c = Controller::start(cfg, api.client()).await.unwrap();
    let https = c.gateway().https_addr().unwrap();
    assert_eq!(
        until(&c, "shop.test", |s, _| s.is_redirection())
            .await
            .get(..3),
        Some("308")
    );
    let s = common::tls::connect(https, Some("shop.test"), &[]).await;
    assert_eq!(common::tls::presented(&s), first.der);

    // cert-manager renews the Secret: new handshakes get the new one.
    api.apply(tls_secret("shop", "web-tls", &renewed));
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let s = common::tls::connect(https, Some("shop.test"), &[]).await;
        if common::tls::presented(&s) == renewed.der {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "renewal not applied"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Secret types that never hold certificates are not even listed.
    let secret_reads: Vec<_> = api
        .requests()
        .into_iter()
        .filter(|r| r.path.contains("/secrets"))
        .collect();
    assert!(!secret_reads.is_empty());
    for r in &secret_reads {
        let selector = r.param("fieldSelector").unwrap_or_default();
        for excluded in ["helm.sh/release.v1", "kubernetes.io/service-account-token"] {
            assert!(
                selector.contains(&format!("type!={excluded}")),
                "{} {}",
                r.path,
                r.query
            );
        }
    }
    c.shutdown().await;
}

#[tokio::test]
async fn only_certificate_values_of_secrets_are_kept() {
    let api = ApiServer::start().await;
    api.apply(json!({
        "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": "mixed", "namespace": "shop",
                     "annotations": {"note": "large"}},
        "data": {"password": "aHVudGVyMg==", "ca.crt": "Y2E="}
    }));
    api.apply(json!({
        "apiVersion": "v1", "kind": "Secret", "type": "helm.sh/release.v1",
        "metadata": {"name": "sh.helm.release.v1.shop.v1", "namespace": "shop"},
        "data": {"release": "aHVnZQ=="}
    }));
    let source = KubeSource::start(api.client(), &WatchScope::default());
    tokio::time::timeout(WAIT, source.wait_synced())
        .await
        .expect("synced");
    source.read(|state| {
        let names: Vec<_> = state.secrets.keys().map(|k| k.name.clone()).collect();
        assert_eq!(names, ["mixed"], "Helm release records are not listed");
        let mixed = state.secrets.values().next().unwrap();
        let keys: Vec<_> = mixed.data.as_ref().unwrap().keys().cloned().collect();
        assert_eq!(keys, ["ca.crt"], "other values are dropped on arrival");
        assert!(mixed.metadata.annotations.is_none());
    });
}
