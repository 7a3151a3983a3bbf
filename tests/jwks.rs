//! `jwtAuth` with keys from a JSON Web Key Set served on loopback: RSA,
//! P-256 and Ed25519 keys verify tokens, a rotated key is fetched when a
//! token names it, the last good keys outlive the server, a broken key
//! set gives 401s (never a 5xx) until it is fixed, and an `https://` key
//! set is verified with the CA of a Secret.

use crate::common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::*;
use http::StatusCode;
use ring::rand::SystemRandom;
use ring::signature::{self, KeyPair as _};
use rustls::pki_types::pem::PemObject;

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Signing keys and their public JWKs.
enum Signer {
    Rsa(signature::RsaKeyPair),
    Ec(signature::EcdsaKeyPair),
    Ed(signature::Ed25519KeyPair),
}

impl Signer {
    fn rsa() -> Signer {
        let pem = std::fs::read(format!(
            "{}/tests/fixtures/tls/rsa.test.key",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap();
        let der = rustls::pki_types::PrivateKeyDer::from_pem_slice(&pem).unwrap();
        Signer::Rsa(signature::RsaKeyPair::from_pkcs8(der.secret_der()).unwrap())
    }

    fn ec() -> Signer {
        let rng = SystemRandom::new();
        let alg = &signature::ECDSA_P256_SHA256_FIXED_SIGNING;
        let pkcs8 = signature::EcdsaKeyPair::generate_pkcs8(alg, &rng).unwrap();
        Signer::Ec(signature::EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng).unwrap())
    }

    fn ed() -> Signer {
        let pkcs8 = signature::Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
        Signer::Ed(signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap())
    }

    fn jwk(&self, kid: &str) -> serde_json::Value {
        match self {
            Signer::Rsa(k) => {
                let c = signature::RsaPublicKeyComponents::<Vec<u8>>::from(k.public());
                serde_json::json!({"kty": "RSA", "kid": kid, "use": "sig", "n": b64(&c.n), "e": b64(&c.e)})
            }
            Signer::Ec(k) => {
                let point = k.public_key().as_ref();
                serde_json::json!({
                    "kty": "EC", "kid": kid, "crv": "P-256", "alg": "ES256",
                    "x": b64(&point[1..33]), "y": b64(&point[33..65]),
                })
            }
            Signer::Ed(k) => serde_json::json!({
                "kty": "OKP", "kid": kid, "crv": "Ed25519",
                "x": b64(k.public_key().as_ref()),
            }),
        }
    }

    /// A token for `sub`, signed with `alg`, naming `kid` when given.
    fn token(&self, alg: &str, kid: Option<&str>, sub: &str) -> String {
        let mut header = serde_json::json!({"alg": alg, "typ": "JWT"});
        if let Some(kid) = kid {
            header["kid"] = kid.into();
        }
        let claims = serde_json::json!({"sub": sub, "exp": now() + 300});
        let msg = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let rng = SystemRandom::new();
        let sig = match self {
            Signer::Rsa(k) => {
                let padding: &dyn signature::RsaEncoding = match alg {
                    "RS384" => &signature::RSA_PKCS1_SHA384,
                    "RS512" => &signature::RSA_PKCS1_SHA512,
                    _ => &signature::RSA_PKCS1_SHA256,
                };
                let mut sig = vec![0; k.public().modulus_len()];
                k.sign(padding, &rng, msg.as_bytes(), &mut sig).unwrap();
                sig
            }
            Signer::Ec(k) => k.sign(&rng, msg.as_bytes()).unwrap().as_ref().to_vec(),
            Signer::Ed(k) => k.sign(msg.as_bytes()).as_ref().to_vec(),
        };
        format!("{msg}.{}", b64(&sig))
    }
}

fn set(keys: &[serde_json::Value]) -> String {
    serde_json::json!({ "keys": keys }).to_string()
}

/// A JWKS server: answers `document` with `status`, counting the fetches.
struct JwksServer {
    backend: Backend,
    document: Arc<Mutex<(u16, String)>>,
    hits: Arc<AtomicUsize>,
}

impl JwksServer {
    async fn start(document: String) -> JwksServer {
        let doc = Arc::new(Mutex::new((200, document)));
        let hits = Arc::new(AtomicUsize::new(0));
        let (d, h) = (doc.clone(), hits.clone());
        let backend = Backend::start(move |_req| {
            h.fetch_add(1, Ordering::SeqCst);
            let (status, body) = d.lock().unwrap().clone();
            async move {
                http::Response::builder()
                    .status(status)
                    .header("content-type", "application/json")
                    .body(full(body))
                    .unwrap()
            }
        })
        .await;
        JwksServer {
            backend,
            document: doc,
            hits,
        }
    }

    fn uri(&self) -> String {
        format!("http://{}/.well-known/jwks.json", self.backend.addr)
    }

    fn serve(&self, status: u16, document: String) {
        *self.document.lock().unwrap() = (status, document);
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

/// A backend answering with the consumer the gateway identified.
async fn echo() -> Backend {
    Backend::start(|req| async move {
        let consumer = req
            .headers()
            .get("x-consumer-name")
            .map_or("-".to_owned(), |v| v.to_str().unwrap().to_owned());
        let auth = req.headers().contains_key("authorization");
        http::Response::new(full(format!("consumer={consumer} authorization={auth}")))
    })
    .await
}

async fn gateway(jwt: &str, extra: &str) -> (TestGateway, Backend) {
    let b = echo().await;
    let m = service("app", &[b.addr]) + extra + &limited_route("api", jwt, None);
    (TestGateway::start(&m).await, b)
}

async fn call(gw: &TestGateway, token: &str) -> Reply {
    request(
        gw.http(),
        "GET",
        "api.test",
        "/",
        &[("authorization", &format!("Bearer {token}"))],
    )
    .await
}

#[tokio::test]
async fn keys_of_each_kind_verify_tokens() {
    let (rsa, ec, ed) = (Signer::rsa(), Signer::ec(), Signer::ed());
    let jwks = JwksServer::start(set(&[rsa.jwk("r"), ec.jwk("e"), ed.jwk("d")])).await;
    let (gw, _b) = gateway(&format!("{{jwtAuth: {{jwksUri: \"{}\"}}}}", jwks.uri()), "").await;
    for (token, sub) in [
        (rsa.token("RS256", Some("r"), "rs256-user"), "rs256-user"),
        (rsa.token("RS384", Some("r"), "rs384-user"), "rs384-user"),
        (rsa.token("RS512", Some("r"), "rs512-user"), "rs512-user"),
        (ec.token("ES256", Some("e"), "es256-user"), "es256-user"),
        (ed.token("EdDSA", Some("d"), "eddsa-user"), "eddsa-user"),
        // Without a kid, every key of the algorithm is tried.
        (ed.token("EdDSA", None, "no-kid"), "no-kid"),
    ] {
        let r = call(&gw, &token).await;
        assert_eq!(r.status, StatusCode::OK, "{sub}: {}", r.text());
        assert_eq!(r.text(), format!("consumer={sub} authorization=false"));
    }
    // A key is only used for its own kid, kind and algorithm.
    let other = Signer::ec();
    for (token, why) in [
        (
            other.token("ES256", Some("e"), "x"),
            "invalid token signature",
        ),
        (ed.token("EdDSA", Some("e"), "x"), "invalid token signature"),
        (other.token("ES256", None, "x"), "invalid token signature"),
        ("a.b.c".to_owned(), "malformed token"),
    ] {
        let r = call(&gw, &token).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{token}");
        assert!(r.text().contains(why), "{token}: {}", r.text());
    }
    // Fetched once, at startup, for all of that.
    assert_eq!(jwks.hits(), 1);
    gw.shutdown().await;
}

#[tokio::test]
async fn a_rotated_key_is_fetched_when_a_token_names_it() {
    let (old, new, unknown) = (Signer::ec(), Signer::ed(), Signer::ed());
    let jwks = JwksServer::start(set(&[old.jwk("2025")])).await;
    let (gw, _b) = gateway(&format!("{{jwtAuth: {{jwksUri: \"{}\"}}}}", jwks.uri()), "").await;
    let r = call(&gw, &old.token("ES256", Some("2025"), "alice")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(jwks.hits(), 1);

    // The provider rotates: a token with the new kid makes the gateway
    // fetch the set again, and passes.
    jwks.serve(200, set(&[old.jwk("2025"), new.jwk("2026")]));
    let r = call(&gw, &new.token("EdDSA", Some("2026"), "bob")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.text(), "consumer=bob authorization=false");
    assert_eq!(jwks.hits(), 2);
    let r = call(&gw, &old.token("ES256", Some("2025"), "alice")).await;
    assert_eq!(r.status, StatusCode::OK);

    // Made-up kids do not make it fetch again and again.
    for kid in ["nope-1", "nope-2", "nope-3"] {
        let r = call(&gw, &unknown.token("EdDSA", Some(kid), "mallory")).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        assert!(r.text().contains("unknown token key id"), "{}", r.text());
    }
    assert_eq!(jwks.hits(), 2);
    gw.shutdown().await;
}

#[tokio::test]
async fn the_last_good_keys_outlive_the_server() {
    let key = Signer::rsa();
    let jwks = JwksServer::start(set(&[key.jwk("k1")])).await;
    let (gw, _b) = gateway(
        &format!(
            "{{jwtAuth: {{jwksUri: \"{}\", jwksRefreshInterval: 1s, jwksTimeout: 1s}}}}",
            jwks.uri()
        ),
        "",
    )
    .await;
    let token = key.token("RS256", Some("k1"), "carol");
    assert_eq!(call(&gw, &token).await.status, StatusCode::OK);

    // The server fails, then goes away; the set gets stale and every
    // refresh fails, but the keys stay.
    jwks.serve(500, "oops".into());
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(call(&gw, &token).await.status, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let hits = jwks.hits();
    assert!(hits >= 2, "a refresh was attempted: {hits}");
    drop(jwks);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    for _ in 0..3 {
        let r = call(&gw, &token).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn a_broken_key_set_gives_401_until_it_is_fixed() {
    let key = Signer::ed();
    let jwks = JwksServer::start("this is not JSON".into()).await;
    let (gw, _b) = gateway(
        &format!(
            "{{jwtAuth: {{jwksUri: \"{}\", jwksRefreshInterval: 1s}}}}",
            jwks.uri()
        ),
        "",
    )
    .await;
    let token = key.token("EdDSA", Some("k"), "dave");
    for document in [
        "this is not JSON".to_owned(),
        "{\"keys\": \"none\"}".to_owned(),
        set(&[serde_json::json!({"kty": "oct", "kid": "k", "k": "c2VjcmV0"})]),
    ] {
        jwks.serve(200, document.clone());
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let r = call(&gw, &token).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{document}");
        assert!(
            r.text().contains("no verification keys available"),
            "{document}: {}",
            r.text()
        );
        assert!(r.header("www-authenticate").is_some());
    }
    // Fixed: the next fetch (the retry waits at most the refresh
    // interval) brings the key, and the request that triggers it waits
    // for it.
    jwks.serve(200, set(&[key.jwk("k")]));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let r = call(&gw, &token).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    gw.shutdown().await;
}

#[tokio::test]
async fn settings_that_cannot_work_keep_the_route_out() {
    let (gw, _b) = gateway("{jwtAuth: {jwksUri: \"ftp://keys.example/jwks\"}}", "").await;
    let r = call(&gw, "x.y.z").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let routes = admin_get(&gw, "/routes").await.text();
    assert!(routes.contains("plugins.jwtAuth.jwksUri"), "{routes}");
    gw.shutdown().await;
}

#[tokio::test]
async fn an_https_key_set_is_verified_with_the_ca_of_a_secret() {
    let ca = tls::Ca::new("JWKS test CA");
    let cert = ca.issue(&["127.0.0.1"], "jwks");
    let config = tls::server_config(&cert, None, &[b"http/1.1"]);
    let key = Signer::ec();
    let document = set(&[key.jwk("tls")]);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let counted = hits.clone();
    let server = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let (config, document, counted) = (config.clone(), document.clone(), counted.clone());
            tokio::spawn(async move {
                let Ok(tls) = tokio_rustls::TlsAcceptor::from(config).accept(stream).await else {
                    return;
                };
                counted.fetch_add(1, Ordering::SeqCst);
                let svc = hyper::service::service_fn(move |_req| {
                    let document = document.clone();
                    async move { Ok::<_, std::convert::Infallible>(http::Response::new(full(document))) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    let mut secret = "---\napiVersion: v1\nkind: Secret\nmetadata: {name: idp-ca, namespace: default}\nstringData:\n  ca.crt: |\n".to_owned();
    for line in ca.pem.lines() {
        secret.push_str(&format!("    {line}\n"));
    }
    let uri = format!("https://127.0.0.1:{}/jwks", addr.port());
    let b = echo().await;
    let m = service("app", &[b.addr])
        + &secret
        + &limited_route(
            "api",
            &format!("{{jwtAuth: {{jwksUri: \"{uri}\", jwksCaSecretRef: {{name: idp-ca}}}}}}"),
            None,
        )
        // The system's CAs do not know the test CA: no keys there.
        + &limited_route("untrusted", &format!("{{jwtAuth: {{jwksUri: \"{uri}\"}}}}"), None);
    let gw = TestGateway::start(&m).await;
    let token = key.token("ES256", Some("tls"), "erin");
    let r = call(&gw, &token).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.text(), "consumer=erin authorization=false");
    let r = request(
        gw.http(),
        "GET",
        "untrusted.test",
        "/",
        &[("authorization", &format!("Bearer {token}"))],
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text());
    assert!(r.text().contains("no verification keys available"));
    assert_eq!(
        hits.load(Ordering::SeqCst),
        1,
        "the untrusted fetch never got past TLS"
    );
    server.abort();
    gw.shutdown().await;
}
