//! Authentication plugins through the real proxy: API keys, Basic
//! credentials and JWTs from consumer Secrets, the consumer reaching the
//! rate limiter and the upstream, credentials kept from the upstream,
//! malformed and forged credentials answered with 401, rotation without a
//! restart, and snippet annotations refused.

use crate::common;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use common::*;
use http::StatusCode;
use ring::signature::KeyPair as _;
use rustls::pki_types::pem::PemObject;

/// A backend answering with what it was sent: consumer, credentials,
/// claim header and request target.
async fn echo() -> Backend {
    Backend::start(|req| async move {
        let h = |n: &str| {
            req.headers()
                .get(n)
                .map_or("-".to_owned(), |v| v.to_str().unwrap().to_owned())
        };
        let body = format!(
            "consumer={} apikey={} authorization={} tenant={} cookie={} uri={}",
            h("x-consumer-name"),
            h("apikey"),
            h("authorization"),
            h("x-tenant"),
            h("cookie"),
            req.uri()
        );
        http::Response::new(full(body))
    })
    .await
}

/// A consumer Secret with string values.
fn consumer(name: &str, consumer: &str, values: &[(&str, &str)]) -> String {
    let mut out = format!(
        "---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}\n  namespace: default\n  labels: {{sluicegate.io/consumer: {consumer}}}\ntype: Opaque\nstringData:\n"
    );
    for (k, v) in values {
        out.push_str(&format!("  {k}: |-\n"));
        for line in v.lines() {
            out.push_str(&format!("    {line}\n"));
        }
    }
    out
}

fn get_with(
    gw: &TestGateway,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> impl std::future::Future<Output = Reply> {
    request(gw.http(), "GET", host, path, headers)
}

#[tokio::test]
async fn api_keys_identify_consumers_for_the_upstream_and_the_rate_limiter() {
    let b = echo().await;
    let m = service("app", &[b.addr])
        + &consumer("alice-key", "alice", &[("key", "k-alice")])
        + &consumer("bob-key", "bob", &[("key", "k-bob")])
        + &limited_route(
            "keys",
            "{keyAuth: {query: apikey}, limitCount: {count: 2, timeWindow: 1h, key: {type: Consumer}}}",
            None,
        );
    let gw = TestGateway::start(&m).await;

    for (headers, why) in [
        (vec![], "missing API key"),
        (vec![("apikey", "k-mallory")], "invalid API key"),
        (vec![("apikey", "")], "invalid API key"),
    ] {
        let r = get_with(&gw, "keys.test", "/", &headers).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        assert!(r.text().contains(why), "{}", r.text());
    }
    let r = get_with(
        &gw,
        "keys.test",
        "/",
        &[("apikey", "k-alice"), ("x-consumer-name", "admin")],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        r.text().starts_with("consumer=alice apikey=- "),
        "{}",
        r.text()
    );
    // From the query, and removed from it.
    let r = get_with(&gw, "keys.test", "/p?a=1&apikey=k-alice&b=2", &[]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.text().ends_with("uri=/p?a=1&b=2"), "{}", r.text());
    // The limiter counts per consumer: alice is out, bob is not.
    assert_eq!(
        get_with(&gw, "keys.test", "/", &[("apikey", "k-alice")])
            .await
            .status,
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(
        get_with(&gw, "keys.test", "/", &[("apikey", "k-bob")])
            .await
            .status,
        StatusCode::OK
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn basic_credentials_plain_and_bcrypt_and_malformed_ones() {
    let b = echo().await;
    let hash = bcrypt::hash("s3cret", 4).unwrap();
    let m = service("app", &[b.addr])
        + &consumer(
            "carol",
            "carol",
            &[("username", "carol"), ("password", "plain-pw")],
        )
        + &consumer("htpasswd", "dave", &[("auth", &format!("dave:{hash}"))])
        + &limited_route("basic", "{basicAuth: {realm: shop}}", None);
    let gw = TestGateway::start(&m).await;
    let basic = |u: &str, p: &str| format!("Basic {}", STANDARD.encode(format!("{u}:{p}")));

    for (user, pw, consumer) in [("carol", "plain-pw", "carol"), ("dave", "s3cret", "dave")] {
        // Twice: the second bcrypt check comes from the verified cache.
        for _ in 0..2 {
            let r = get_with(
                &gw,
                "basic.test",
                "/",
                &[("authorization", &basic(user, pw))],
            )
            .await;
            assert_eq!(r.status, StatusCode::OK, "{user}");
            assert!(
                r.text()
                    .starts_with(&format!("consumer={consumer} apikey=- authorization=- ")),
                "{}",
                r.text()
            );
        }
    }
    for auth in [
        basic("carol", "wrong"),
        basic("dave", "wrong"),
        basic("nobody", "plain-pw"),
        "Basic !!!not-base64".to_owned(),
        format!("Basic {}", STANDARD.encode("no-colon")),
        format!("Basic {}", STANDARD.encode([0xff, 0xfe, b':', b'x'])),
        "Bearer abc".to_owned(),
    ] {
        let r = get_with(&gw, "basic.test", "/", &[("authorization", &auth)]).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{auth}");
        assert_eq!(r.header("www-authenticate"), Some("Basic realm=\"shop\""));
    }
    gw.shutdown().await;
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// `header.payload` of a token.
fn unsigned(alg: &str, claims: &serde_json::Value) -> String {
    let header = serde_json::json!({"alg": alg, "typ": "JWT"});
    format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    )
}

fn hs256(secret: &[u8], claims: &serde_json::Value) -> String {
    let msg = unsigned("HS256", claims);
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    let sig = ring::hmac::sign(&key, msg.as_bytes());
    format!("{msg}.{}", b64(sig.as_ref()))
}

#[tokio::test]
async fn jwts_are_verified_for_every_algorithm_and_bad_ones_refused() {
    let rng = ring::rand::SystemRandom::new();
    // ES256 and EdDSA keys made here; RS256 from the RSA fixture.
    let ec_pkcs8 = ring::signature::EcdsaKeyPair::generate_pkcs8(
        &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        &rng,
    )
    .unwrap();
    let ec = ring::signature::EcdsaKeyPair::from_pkcs8(
        &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        ec_pkcs8.as_ref(),
        &rng,
    )
    .unwrap();
    let ec_pem = rcgen::KeyPair::try_from(ec_pkcs8.as_ref())
        .unwrap()
        .public_key_pem();
    let ed_pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
    let ed = ring::signature::Ed25519KeyPair::from_pkcs8(ed_pkcs8.as_ref()).unwrap();
    let ed_pem = rcgen::KeyPair::try_from(ed_pkcs8.as_ref())
        .unwrap()
        .public_key_pem();
    let fixture = |f: &str| {
        std::fs::read_to_string(format!(
            "{}/tests/fixtures/tls/{f}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap()
    };
    let rsa_der =
        rustls::pki_types::PrivateKeyDer::from_pem_slice(fixture("rsa.test.key").as_bytes())
            .unwrap();
    let rsa = ring::signature::RsaKeyPair::from_pkcs8(rsa_der.secret_der()).unwrap();
    let _ = ec.public_key();

    let b = echo().await;
    let m = service("app", &[b.addr])
        + &consumer(
            "hmac",
            "hmac-user",
            &[("jwt-secret", "a-long-shared-secret")],
        )
        + &consumer("ec", "ec-user", &[("jwt-public-key", &ec_pem)])
        + &consumer("ed", "ed-user", &[("jwt-public-key", &ed_pem)])
        + &consumer(
            "rsa",
            "rsa-user",
            &[("jwt-public-key", &fixture("rsa.test.pub"))],
        )
        + &limited_route(
            "jwt",
            "{jwtAuth: {issuer: https://id.example, audiences: [shop], cookie: session, claimsToHeaders: [{claim: tenant, header: x-tenant}]}}",
            None,
        );
    let gw = TestGateway::start(&m).await;
    let claims = serde_json::json!({
        "sub": "someone", "iss": "https://id.example", "aud": ["other", "shop"],
        "exp": now() + 300, "tenant": "blue"
    });
    let sign = |alg: &str, f: &dyn Fn(&[u8]) -> Vec<u8>| {
        let msg = unsigned(alg, &claims);
        let sig = f(msg.as_bytes());
        format!("{msg}.{}", b64(&sig))
    };
    let tokens = [
        ("hmac-user", hs256(b"a-long-shared-secret", &claims)),
        (
            "ec-user",
            sign("ES256", &|m| ec.sign(&rng, m).unwrap().as_ref().to_vec()),
        ),
        ("ed-user", sign("EdDSA", &|m| ed.sign(m).as_ref().to_vec())),
        (
            "rsa-user",
            sign("RS256", &|m| {
                let mut sig = vec![0; rsa.public().modulus_len()];
                rsa.sign(&ring::signature::RSA_PKCS1_SHA256, &rng, m, &mut sig)
                    .unwrap();
                sig
            }),
        ),
    ];
    for (user, token) in &tokens {
        let r = get_with(
            &gw,
            "jwt.test",
            "/",
            &[("authorization", &format!("Bearer {token}"))],
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "{user}: {}", r.text());
        assert!(
            r.text().starts_with(&format!(
                "consumer={user} apikey=- authorization=- tenant=blue"
            )),
            "{}",
            r.text()
        );
    }
    // From a cookie, which is then removed while other cookies stay.
    let cookie = format!("theme=dark; session={}", tokens[0].1);
    let r = get_with(&gw, "jwt.test", "/", &[("cookie", &cookie)]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.text().contains("cookie=theme=dark uri"), "{}", r.text());

    let with = |changes: serde_json::Value| {
        let mut c = claims.clone();
        for (k, v) in changes.as_object().unwrap() {
            c[k] = v.clone();
        }
        hs256(b"a-long-shared-secret", &c)
    };
    let mut tampered = tokens[1].1.clone();
    tampered.replace_range(tampered.len() - 4.., "AAAA");
    let bad = [
        (
            with(serde_json::json!({"exp": now() - 600})),
            "token expired",
        ),
        (
            with(serde_json::json!({"nbf": now() + 600})),
            "token not yet valid",
        ),
        (
            with(serde_json::json!({"aud": "elsewhere"})),
            "wrong token audience",
        ),
        (
            with(serde_json::json!({"iss": "https://evil.example"})),
            "wrong token issuer",
        ),
        (hs256(b"another-secret", &claims), "invalid token signature"),
        (
            format!("{}.", unsigned("none", &claims)),
            "token algorithm not accepted",
        ),
        // The RSA public key used as an HMAC secret: no HMAC key of that
        // content exists, so the confusion attack fails.
        (
            hs256(fixture("rsa.test.pub").as_bytes(), &claims),
            "invalid token signature",
        ),
        (tampered, "invalid token signature"),
        ("not.a.jwt".to_owned(), "malformed token"),
        ("%%%.@@@.###".to_owned(), "malformed token"),
        ("onlyonepart".to_owned(), "malformed token"),
    ];
    for (token, why) in bad {
        let r = get_with(
            &gw,
            "jwt.test",
            "/",
            &[("authorization", &format!("Bearer {token}"))],
        )
        .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{why}");
        assert!(r.text().contains(why), "{why}: {}", r.text());
        assert!(
            r.header("www-authenticate")
                .unwrap()
                .starts_with("Bearer error=")
        );
    }
    let r = get_with(&gw, "jwt.test", "/", &[]).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    gw.shutdown().await;
}

#[tokio::test]
async fn rotated_credentials_apply_without_restart() {
    let b = echo().await;
    let base = service("app", &[b.addr]) + &limited_route("keys", "{keyAuth: {}}", None);
    let gw =
        TestGateway::start(&(base.clone() + &consumer("alice", "alice", &[("key", "old")]))).await;
    assert_eq!(
        get_with(&gw, "keys.test", "/", &[("apikey", "old")])
            .await
            .status,
        StatusCode::OK
    );
    let before = gw.generation();
    gw.write(
        "main.yaml",
        &(base + &consumer("alice", "alice", &[("key", "new")])),
    )
    .await;
    gw.wait_generation_after(before).await;
    assert_eq!(
        get_with(&gw, "keys.test", "/", &[("apikey", "old")])
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        get_with(&gw, "keys.test", "/", &[("apikey", "new")])
            .await
            .status,
        StatusCode::OK
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn snippet_annotations_are_refused() {
    let b = echo().await;
    let m = service("app", &[b.addr])
        + r#"---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: snippet
  namespace: default
  annotations:
    nginx.ingress.kubernetes.io/configuration-snippet: |
      more_set_headers "X-Evil: 1";
spec:
  ingressClassName: sluicegate
  rules:
  - host: snippet.test
    http:
      paths: [{path: /, pathType: Prefix, backend: {service: {name: app, port: {number: 80}}}}]
"#;
    let gw = TestGateway::start(&m).await;
    assert_eq!(
        get(gw.http(), "snippet.test", "/").await.status,
        StatusCode::NOT_FOUND
    );
    let routes = admin_get(&gw, "/routes").await.text();
    assert!(routes.contains("CVE-2025-1974"), "{routes}");
    gw.shutdown().await;
}
