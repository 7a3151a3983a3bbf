//! `jwtAuth`'s keys from a JSON Web Key Set URL (`jwksUri`).
//!
//! The set is fetched in the background and kept in memory, shared by
//! every route (and every new route table) with the same settings. A
//! request never waits for a fetch, except when waiting is its only
//! chance: no set has been loaded yet, or its token names a `kid` the set
//! does not have (the provider may have just rotated its keys). Such a
//! request waits for one fetch, at most `jwksTimeout`.
//!
//! Fetches happen when a request finds the set older than
//! `jwksRefreshInterval`, when a token names an unknown `kid` (at most
//! once per [`UNKNOWN_KID_REFRESH`]), and once when the plugin is first
//! built. A fetch that fails (unreachable, slow, not HTTP 200, not a key
//! set, no usable key in it) is logged and changes nothing: the last good
//! keys stay in use, and the next attempt comes [`RETRY`] later at the
//! earliest. Keys the gateway cannot use (symmetric, encryption-only,
//! other curves, RSA under 2048 bits) are skipped with a log line.
//!
//! Fetches go through the gateway's own client ([`fetch`]), on a new
//! connection each (they are minutes apart), with names resolved by the
//! gateway's resolver; `https://` servers are verified as
//! [`super::trust`] says.
//!
//! DESIGN.md keeps network I/O out of `plugins/`; this module is the
//! exception `forwardAuth` already is: the plugin's job is a call to a
//! service, made from the request path's runtime, never during
//! translation.

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use http::{HeaderValue, StatusCode, header};
use serde_json::Value;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::jwt_key::Key;
use super::trust::{LazyTarget, Trust};
use crate::api::{JwtAlgorithm, JwtAuth};
use crate::http::client::fetch::{self, Options, Request, Target};
use crate::plugins::{BuildEnv, ConfigError, Owner, fingerprint, shared_state};
use crate::x509::KeyAlgorithm;

/// How old the set may get when `jwksRefreshInterval` is not set.
pub const DEFAULT_REFRESH: Duration = Duration::from_secs(300);
/// Time for one fetch when `jwksTimeout` is not set.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// Tokens with unknown `kid`s fetch the set at most this often, so that
/// a client sending made-up key ids cannot make the gateway hammer the
/// provider.
pub const UNKNOWN_KID_REFRESH: Duration = Duration::from_secs(30);
/// After a failed fetch, the next one waits at least this long (or the
/// refresh interval, when shorter).
pub const RETRY: Duration = Duration::from_secs(5);
/// The largest key set read; providers publish a few kilobytes.
const MAX_BODY: usize = 1024 * 1024;
/// RSA keys shorter than this are refused (ring verifies 2048 to 8192).
const MIN_RSA_BYTES: usize = 256;

/// A key of the set.
#[derive(Debug)]
pub struct Jwk {
    pub kid: Option<Arc<str>>,
    /// The algorithm the key is restricted to, when the set says.
    pub alg: Option<JwtAlgorithm>,
    pub key: Key,
}

impl Jwk {
    /// Whether this key may verify a token signed with `alg` and naming
    /// `kid` (a token without `kid` may be verified by any key).
    pub fn fits(&self, alg: JwtAlgorithm, kid: Option<&str>) -> bool {
        self.key.fits(alg)
            && self.alg.is_none_or(|a| a == alg)
            && kid.is_none_or(|kid| self.kid.as_deref() == Some(kid))
    }
}

/// The usable keys of a fetched set.
#[derive(Debug, Default)]
pub struct KeySet {
    pub keys: Vec<Jwk>,
}

impl KeySet {
    pub fn has_kid(&self, kid: &str) -> bool {
        self.keys.iter().any(|k| k.kid.as_deref() == Some(kid))
    }
}

/// Parses a JWK Set document. Keys that cannot be used are skipped, each
/// with the reason; a document that is not a key set, or has no usable
/// key, is an error.
pub fn parse_set(body: &[u8]) -> Result<(KeySet, Vec<String>), String> {
    let doc: Value =
        serde_json::from_slice(body).map_err(|e| format!("not a JSON document: {e}"))?;
    let list = doc
        .get("keys")
        .and_then(Value::as_array)
        .ok_or("not a JWK Set: no \"keys\" array")?;
    let mut keys = Vec::new();
    let mut skipped = Vec::new();
    for (i, jwk) in list.iter().enumerate() {
        let kid = jwk.get("kid").and_then(Value::as_str);
        match parse_key(jwk) {
            Ok(key) => keys.push(key),
            Err(why) => skipped.push(match kid {
                Some(kid) => format!("key {i} (kid {kid:?}): {why}"),
                None => format!("key {i}: {why}"),
            }),
        }
    }
    if keys.is_empty() {
        let why = if skipped.is_empty() {
            "the set is empty".to_owned()
        } else {
            skipped.join("; ")
        };
        return Err(format!("no usable key: {why}"));
    }
    Ok((KeySet { keys }, skipped))
}

fn parse_key(jwk: &Value) -> Result<Jwk, String> {
    let text = |name: &str| jwk.get(name).and_then(Value::as_str);
    let bytes = |name: &str| -> Result<Vec<u8>, String> {
        let v = text(name).ok_or_else(|| format!("no {name:?}"))?;
        URL_SAFE_NO_PAD
            .decode(v.trim_end_matches('='))
            .map_err(|_| format!("{name:?} is not base64url"))
    };
    if let Some(usage) = text("use")
        && usage != "sig"
    {
        return Err(format!("\"use\" is {usage:?}, not \"sig\""));
    }
    let kty = text("kty").ok_or("no \"kty\"")?;
    let key = match kty {
        "RSA" => {
            let n = bytes("n")?;
            let e = bytes("e")?;
            let n = strip_zeros(&n);
            if n.len() < MIN_RSA_BYTES {
                return Err(format!(
                    "RSA key of {} bits; at least 2048 are needed",
                    n.len() * 8
                ));
            }
            Key::Public(KeyAlgorithm::Rsa, rsa_public_key_der(n, strip_zeros(&e)))
        }
        "EC" => match text("crv") {
            Some("P-256") => {
                let (x, y) = (bytes("x")?, bytes("y")?);
                if x.len() != 32 || y.len() != 32 {
                    return Err("P-256 coordinates must be 32 bytes each".into());
                }
                let mut point = Vec::with_capacity(65);
                point.push(0x04);
                point.extend_from_slice(&x);
                point.extend_from_slice(&y);
                Key::Public(KeyAlgorithm::EcP256, point)
            }
            other => {
                let crv = other.unwrap_or("(none)");
                return Err(format!("EC curve {crv:?} is not supported (P-256 is)"));
            }
        },
        "OKP" => match text("crv") {
            Some("Ed25519") => {
                let x = bytes("x")?;
                if x.len() != 32 {
                    return Err("an Ed25519 key must be 32 bytes".into());
                }
                Key::Public(KeyAlgorithm::Ed25519, x)
            }
            other => {
                let crv = other.unwrap_or("(none)");
                return Err(format!("OKP curve {crv:?} is not supported (Ed25519 is)"));
            }
        },
        "oct" => return Err("symmetric keys are never taken from a key set".into()),
        other => return Err(format!("key type {other:?} is not supported")),
    };
    let alg = match text("alg") {
        None => None,
        Some(name) => {
            let alg =
                algorithm(name).ok_or_else(|| format!("algorithm {name:?} is not supported"))?;
            if !key.fits(alg) {
                return Err(format!("algorithm {name} does not fit a {kty} key"));
            }
            Some(alg)
        }
    };
    Ok(Jwk {
        kid: text("kid").map(Arc::from),
        alg,
        key,
    })
}

/// The algorithm a JOSE `alg` names, among those supported.
pub fn algorithm(name: &str) -> Option<JwtAlgorithm> {
    Some(match name {
        "HS256" => JwtAlgorithm::HS256,
        "HS384" => JwtAlgorithm::HS384,
        "HS512" => JwtAlgorithm::HS512,
        "RS256" => JwtAlgorithm::RS256,
        "RS384" => JwtAlgorithm::RS384,
        "RS512" => JwtAlgorithm::RS512,
        "ES256" => JwtAlgorithm::ES256,
        "EdDSA" => JwtAlgorithm::EdDSA,
        _ => return None,
    })
}

fn strip_zeros(b: &[u8]) -> &[u8] {
    let start = b.iter().position(|&x| x != 0).unwrap_or(b.len());
    &b[start..]
}

/// The DER `RSAPublicKey` (PKCS#1) of modulus `n` and exponent `e`, the
/// form ring verifies with.
fn rsa_public_key_der(n: &[u8], e: &[u8]) -> Vec<u8> {
    fn length(out: &mut Vec<u8>, len: usize) {
        if len < 0x80 {
            out.push(len as u8);
        } else {
            let bytes = len.to_be_bytes();
            let used = strip_zeros(&bytes);
            out.push(0x80 | used.len() as u8);
            out.extend_from_slice(used);
        }
    }
    fn integer(out: &mut Vec<u8>, value: &[u8]) {
        // Positive: a leading 0 when the high bit is set; 0 is one byte.
        let pad = value.first().is_none_or(|b| b & 0x80 != 0);
        out.push(0x02);
        length(out, value.len() + usize::from(pad));
        if pad {
            out.push(0);
        }
        out.extend_from_slice(value);
    }
    let mut body = Vec::with_capacity(n.len() + e.len() + 16);
    integer(&mut body, n);
    integer(&mut body, e);
    let mut out = Vec::with_capacity(body.len() + 6);
    out.push(0x30);
    length(&mut out, body.len());
    out.extend_from_slice(&body);
    out
}

/// Why a fetch failed.
#[derive(Debug, thiserror::Error)]
enum FetchError {
    #[error(transparent)]
    Fetch(#[from] fetch::FetchError),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("answered {0}, not 200")]
    Status(StatusCode),
    #[error("the key set is larger than {MAX_BODY} bytes")]
    TooLarge,
    #[error("{0}")]
    Invalid(String),
}

/// A key set kept fresh in the background.
pub struct JwksSource {
    uri: Box<str>,
    target: LazyTarget,
    interval: Duration,
    timeout: Duration,
    keys: ArcSwapOption<KeySet>,
    /// Whether a fetch is under way.
    running: AtomicBool,
    /// Milliseconds after [`epoch`] from which the set is due for a
    /// refresh: checked on every request without a lock.
    due_at: AtomicU64,
    /// When an unknown `kid` last caused a fetch.
    kid_fetch: Mutex<Option<Instant>>,
    /// A digest of the last document loaded, so that an unchanged set is
    /// not logged again.
    last_body: AtomicU64,
    /// Bumped when a fetch ends, whatever its result, for requests waiting
    /// on it.
    done: watch::Sender<u64>,
}

impl std::fmt::Debug for JwksSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwksSource")
            .field("uri", &self.uri)
            .field(
                "keys",
                &self.keys.load().as_ref().map_or(0, |k| k.keys.len()),
            )
            .finish_non_exhaustive()
    }
}

/// Why a fetch is asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The set is missing or older than the refresh interval.
    Stale,
    /// A token names a `kid` the set does not have.
    UnknownKid,
}

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn millis(at: Instant) -> u64 {
    at.saturating_duration_since(epoch()).as_millis() as u64
}

impl JwksSource {
    /// The source for `c.jwks_uri`, shared with every plugin of equal
    /// settings; `None` without a `jwksUri`.
    pub fn build(c: &JwtAuth, env: &BuildEnv<'_>) -> Result<Option<Arc<JwksSource>>, ConfigError> {
        let Some(uri) = c.jwks_uri.as_deref() else {
            for (set, name) in [
                (c.jwks_refresh_interval.is_some(), "jwksRefreshInterval"),
                (c.jwks_timeout.is_some(), "jwksTimeout"),
                (c.jwks_ca_secret_ref.is_some(), "jwksCaSecretRef"),
            ] {
                if set {
                    return Err(ConfigError::new(
                        format!("jwtAuth.{name}"),
                        "only applies with jwksUri",
                    ));
                }
            }
            return Ok(None);
        };
        let interval = c.jwks_refresh_interval.map_or(DEFAULT_REFRESH, |d| d.0);
        if interval < Duration::from_secs(1) {
            return Err(ConfigError::new(
                "jwtAuth.jwksRefreshInterval",
                "must be at least 1s",
            ));
        }
        let timeout = c.jwks_timeout.map_or(DEFAULT_TIMEOUT, |d| d.0);
        if timeout.is_zero() || timeout > Duration::from_secs(60) {
            return Err(ConfigError::new(
                "jwtAuth.jwksTimeout",
                "must be more than 0s and at most 60s",
            ));
        }
        let (target, ca_pem) = target(uri, c, env)?;
        let key = (
            uri,
            interval.as_millis() as u64,
            timeout.as_millis() as u64,
            ca_pem,
        );
        let source = shared_state(&Owner(Arc::from("jwtAuth.jwks")), fingerprint(&key), || {
            JwksSource {
                uri: uri.into(),
                target,
                interval,
                timeout,
                keys: ArcSwapOption::empty(),
                running: AtomicBool::new(false),
                due_at: AtomicU64::new(0),
                kid_fetch: Mutex::new(None),
                last_body: AtomicU64::new(0),
                done: watch::channel(0).0,
            }
        });
        // The first fetch starts now when there is a runtime to run it,
        // so that the first request finds the keys.
        source.refresh(Reason::Stale);
        Ok(Some(source))
    }

    /// The last good set, if any was loaded.
    pub fn keys(&self) -> Option<Arc<KeySet>> {
        self.keys.load_full()
    }

    /// How long a request may wait for a fetch.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// A receiver that sees the end of the next fetch. Take it before
    /// [`JwksSource::refresh`], so that a quick fetch is not missed.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.done.subscribe()
    }

    /// Starts a fetch in the background if `reason` calls for one now.
    /// Returns whether a fetch is under way (started now or before).
    pub fn refresh(self: &Arc<Self>, reason: Reason) -> bool {
        let now = Instant::now();
        if self.running.load(Ordering::Acquire) {
            return true;
        }
        match reason {
            Reason::Stale => {
                if millis(now) < self.due_at.load(Ordering::Acquire) {
                    return false;
                }
            }
            Reason::UnknownKid => {
                let mut last = self
                    .kid_fetch
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                if last.is_some_and(|t| now.duration_since(t) < UNKNOWN_KID_REFRESH) {
                    return false;
                }
                *last = Some(now);
            }
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return false;
        };
        if self.running.swap(true, Ordering::AcqRel) {
            return true;
        }
        let running = Running(self.clone());
        runtime.spawn(async move {
            running.0.fetch_and_store().await;
            drop(running);
        });
        true
    }

    async fn fetch_and_store(&self) {
        let started = Instant::now();
        let result = self.fetch().await.and_then(|body| {
            let digest = foldhash::fast::FixedState::with_seed(0x1a3e).hash_one(&body[..]);
            parse_set(&body)
                .map(|set| (set, digest))
                .map_err(FetchError::Invalid)
        });
        match result {
            Ok(((set, skipped), digest)) => {
                let changed = self.last_body.swap(digest, Ordering::AcqRel) != digest;
                if changed {
                    for why in &skipped {
                        warn!(uri = %self.uri, "jwtAuth: JWKS key skipped: {why}");
                    }
                    let kids: Vec<&str> =
                        set.keys.iter().filter_map(|k| k.kid.as_deref()).collect();
                    info!(uri = %self.uri, keys = set.keys.len(), ?kids, "jwtAuth: JWKS loaded");
                } else {
                    debug!(uri = %self.uri, "jwtAuth: JWKS unchanged");
                }
                self.keys.store(Some(Arc::new(set)));
                self.due_at
                    .store(millis(started + self.interval), Ordering::Release);
            }
            Err(e) => {
                match self.keys.load().as_ref().map(|k| k.keys.len()) {
                    Some(kept) => warn!(
                        uri = %self.uri,
                        error = %e,
                        kept_keys = kept,
                        "jwtAuth: JWKS fetch failed; the last good keys stay in use"
                    ),
                    None => warn!(
                        uri = %self.uri,
                        error = %e,
                        "jwtAuth: JWKS fetch failed; no keys yet, tokens only the consumers' keys verify get 401"
                    ),
                }
                self.due_at.store(
                    millis(started + RETRY.min(self.interval)),
                    Ordering::Release,
                );
            }
        }
    }

    /// One GET of the set, on a connection of its own: its body.
    async fn fetch(&self) -> Result<Bytes, FetchError> {
        let target = self.target.get().map_err(FetchError::Tls)?;
        let mut request = Request::get(target);
        request.headers.insert(
            header::ACCEPT,
            HeaderValue::from_static("application/jwk-set+json, application/json"),
        );
        request
            .headers
            .insert(header::USER_AGENT, HeaderValue::from_static("sluicegate"));
        let options = Options {
            timeout: self.timeout,
            max_body: MAX_BODY,
            reuse: false,
        };
        let r = fetch::fetch(target, request, &options).await?;
        if r.status != StatusCode::OK {
            return Err(FetchError::Status(r.status));
        }
        if !r.complete {
            return Err(FetchError::TooLarge);
        }
        Ok(r.body)
    }
}

/// Marks the end of a fetch, also when its task is dropped with its
/// runtime: the next request may start another.
struct Running(Arc<JwksSource>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.running.store(false, Ordering::Release);
        self.0.done.send_modify(|n| *n = n.wrapping_add(1));
    }
}

/// Checks `jwksUri` and the CA that verifies it; the CA's PEM, if any,
/// for the fingerprint of the settings.
fn target(
    uri: &str,
    c: &JwtAuth,
    env: &BuildEnv<'_>,
) -> Result<(LazyTarget, Vec<u8>), ConfigError> {
    const CA_FIELD: &str = "jwtAuth.jwksCaSecretRef";
    let (trust, pem) = Trust::from_ref(c.jwks_ca_secret_ref.as_ref(), env, CA_FIELD)?;
    let parsed =
        Target::parse(uri).map_err(|e| ConfigError::new("jwtAuth.jwksUri", e.to_string()))?;
    if c.jwks_ca_secret_ref.is_some() && !parsed.is_https() {
        return Err(ConfigError::new(
            CA_FIELD,
            "a CA only applies to an https:// jwksUri",
        ));
    }
    Ok((LazyTarget::new(parsed, trust, CA_FIELD), pem))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::LocalObjectRef;

    fn b64(b: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(b)
    }

    #[test]
    fn rsa_components_become_pkcs1_der() {
        // n with its high bit set gets a 0 pad; e = 65537.
        let n = vec![0xc0; 256];
        let der = rsa_public_key_der(&n, &[1, 0, 1]);
        assert_eq!(&der[..4], &[0x30, 0x82, 0x01, 0x0a]);
        assert_eq!(&der[4..9], &[0x02, 0x82, 0x01, 0x01, 0x00]);
        assert_eq!(&der[der.len() - 5..], &[0x02, 0x03, 1, 0, 1]);
        assert_eq!(der.len(), 4 + 0x10a);
    }

    #[test]
    fn key_sets_keep_usable_keys_and_say_why_others_are_skipped() {
        let rsa_n = b64(&[0xab; 256]);
        let doc = serde_json::json!({"keys": [
            {"kty": "RSA", "kid": "r1", "alg": "RS384", "use": "sig", "n": rsa_n, "e": "AQAB"},
            {"kty": "EC", "kid": "e1", "crv": "P-256", "x": b64(&[1; 32]), "y": b64(&[2; 32])},
            {"kty": "OKP", "kid": "o1", "crv": "Ed25519", "x": b64(&[3; 32])},
            {"kty": "oct", "kid": "s1", "k": "c2VjcmV0"},
            {"kty": "RSA", "kid": "small", "n": b64(&[0xab; 128]), "e": "AQAB"},
            {"kty": "RSA", "kid": "enc", "use": "enc", "n": rsa_n, "e": "AQAB"},
            {"kty": "EC", "kid": "p384", "crv": "P-384", "x": "AA", "y": "AA"},
            {"kty": "OKP", "kid": "x25519", "crv": "X25519", "x": b64(&[3; 32])},
            {"kty": "RSA", "kid": "wrongalg", "alg": "ES256", "n": rsa_n, "e": "AQAB"},
            {"kty": "RSA", "kid": "noe", "n": rsa_n},
            {"kty": "EC", "kid": "short", "crv": "P-256", "x": b64(&[1; 31]), "y": b64(&[2; 32])},
            {"kid": "notype"},
            "not an object"
        ]});
        let (set, skipped) = parse_set(doc.to_string().as_bytes()).unwrap();
        let kids: Vec<_> = set.keys.iter().map(|k| k.kid.as_deref().unwrap()).collect();
        assert_eq!(kids, ["r1", "e1", "o1"]);
        assert_eq!(skipped.len(), 10, "{skipped:#?}");
        assert!(skipped[0].contains("s1") && skipped[0].contains("symmetric"));
        assert!(skipped[1].contains("1024 bits"));
        assert!(skipped[2].contains("\"enc\""));
        assert!(skipped[3].contains("P-384"));
        assert!(skipped[5].contains("does not fit"));
        assert!(set.keys[0].fits(JwtAlgorithm::RS384, Some("r1")));
        assert!(!set.keys[0].fits(JwtAlgorithm::RS256, Some("r1")));
        assert!(!set.keys[0].fits(JwtAlgorithm::RS384, Some("e1")));
        assert!(set.keys[1].fits(JwtAlgorithm::ES256, None));
        assert!(set.keys[2].fits(JwtAlgorithm::EdDSA, Some("o1")));
        assert!(set.has_kid("o1") && !set.has_kid("s1"));

        for (bad, why) in [
            ("not json", "not a JSON document"),
            ("{\"keys\": 3}", "no \"keys\" array"),
            ("[]", "no \"keys\" array"),
            ("{\"keys\": []}", "the set is empty"),
            (
                "{\"keys\": [{\"kty\": \"oct\", \"k\": \"AA\"}]}",
                "symmetric",
            ),
        ] {
            let e = parse_set(bad.as_bytes()).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    fn jwt(uri: &str) -> JwtAuth {
        JwtAuth {
            jwks_uri: Some(uri.into()),
            ..Default::default()
        }
    }

    fn build(c: &JwtAuth, secret: Option<&[u8]>) -> Result<Option<Arc<JwksSource>>, ConfigError> {
        let consumers = |_: &std::collections::BTreeMap<String, String>| Vec::new();
        let secret = |_: &str, _: &str| secret.map(<[u8]>::to_vec);
        JwksSource::build(
            c,
            &BuildEnv {
                namespace: "default",
                redis: None,
                secret: &secret,
                consumers: &consumers,
            },
        )
    }

    #[test]
    fn settings_are_checked() {
        assert!(build(&JwtAuth::default(), None).unwrap().is_none());
        let s = build(&jwt("https://id.example/.well-known/jwks.json"), None)
            .unwrap()
            .unwrap();
        assert_eq!(s.target.parsed().port(), 443);
        assert_eq!(s.target.parsed().path_and_query(), "/.well-known/jwks.json");
        assert!(s.target.parsed().is_https());
        assert!(matches!(s.target.trust(), Trust::System));
        // No runtime here: nothing was started.
        assert!(!s.running.load(Ordering::Relaxed));
        let s = build(&jwt("http://[::1]:8080/keys"), None)
            .unwrap()
            .unwrap();
        assert_eq!(
            (s.target.parsed().host(), s.target.parsed().port()),
            ("::1".into(), 8080)
        );
        assert!(!s.target.parsed().is_https());

        for (uri, why) in [
            ("ftp://id/keys", "not supported"),
            ("/keys", "must start with http"),
            ("http://u:p@id/keys", "user information"),
            ("http://id:0/keys", "port 0"),
            ("http://id/keys#x", "fragment"),
        ] {
            let e = build(&jwt(uri), None).unwrap_err();
            assert_eq!(e.field, "jwtAuth.jwksUri", "{uri}");
            assert!(e.message.contains(why), "{uri}: {}", e.message);
        }
        let mut c = jwt("http://id/keys");
        c.jwks_refresh_interval = Some(crate::api::Duration(Duration::from_millis(500)));
        assert_eq!(
            build(&c, None).unwrap_err().field,
            "jwtAuth.jwksRefreshInterval"
        );
        let mut c = jwt("http://id/keys");
        c.jwks_timeout = Some(crate::api::Duration(Duration::ZERO));
        assert_eq!(build(&c, None).unwrap_err().field, "jwtAuth.jwksTimeout");
        let c = JwtAuth {
            jwks_timeout: Some(crate::api::Duration(Duration::from_secs(1))),
            ..Default::default()
        };
        assert_eq!(build(&c, None).unwrap_err().field, "jwtAuth.jwksTimeout");

        let mut c = jwt("https://id/keys");
        c.jwks_ca_secret_ref = Some(LocalObjectRef { name: "ca".into() });
        let e = build(&c, None).unwrap_err();
        assert_eq!(e.field, "jwtAuth.jwksCaSecretRef");
        assert!(e.message.contains("no ca.crt"), "{}", e.message);
        let e = build(&c, Some(b"garbage")).unwrap_err();
        assert!(e.message.contains("no usable certificate"), "{}", e.message);
        let ca = rcgen::generate_simple_self_signed(vec!["id".into()]).unwrap();
        let s = build(&c, Some(ca.cert.pem().as_bytes())).unwrap().unwrap();
        assert!(matches!(s.target.trust(), Trust::Ca(_)));
        let mut c = jwt("http://id/keys");
        c.jwks_ca_secret_ref = Some(LocalObjectRef { name: "ca".into() });
        let e = build(&c, Some(ca.cert.pem().as_bytes())).unwrap_err();
        assert!(
            e.message.contains("only applies to an https"),
            "{}",
            e.message
        );
    }
}
