//! `jwtAuth`: JSON Web Tokens, verified with ring.
//!
//! A consumer Secret holds `jwt-secret` (HMAC: HS256/384/512) or
//! `jwt-public-key` (PEM SubjectPublicKeyInfo: RSA for RS256, P-256 for
//! ES256, Ed25519 for EdDSA). A token whose header names a `kid` is checked
//! against that consumer's key only; otherwise against each consumer's key
//! of the token's algorithm. `alg: none`, an algorithm not allowed, a key
//! of another kind (an RSA public key used as an HMAC secret), a bad
//! signature, an expired or not-yet-valid token, the wrong issuer or
//! audience all give `401`.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::{HeaderName, HeaderValue, header};
use ring::signature::{self, UnparsedPublicKey};
use rustls::pki_types::SubjectPublicKeyInfoDer;
use rustls::pki_types::pem::PemObject;
use serde_json::Value;

use super::{Common, header_name, query_value, unauthorized};
use crate::api::{JwtAlgorithm, JwtAuth};
use crate::plugins::{BuildEnv, ConfigError, Outcome, Plugin, RequestCtx};
use crate::x509::{KeyAlgorithm, spki_key};

/// Tokens longer than this are refused before any decoding.
const MAX_TOKEN: usize = 16 * 1024;

/// A consumer's verification key.
#[derive(Debug)]
enum Key {
    Hmac(Vec<u8>),
    Public(KeyAlgorithm, Vec<u8>),
}

impl Key {
    fn fits(&self, alg: JwtAlgorithm) -> bool {
        matches!(
            (self, alg),
            (
                Key::Hmac(_),
                JwtAlgorithm::HS256 | JwtAlgorithm::HS384 | JwtAlgorithm::HS512
            ) | (Key::Public(KeyAlgorithm::Rsa, _), JwtAlgorithm::RS256)
                | (Key::Public(KeyAlgorithm::EcP256, _), JwtAlgorithm::ES256)
                | (Key::Public(KeyAlgorithm::Ed25519, _), JwtAlgorithm::EdDSA)
        )
    }

    fn verify(&self, alg: JwtAlgorithm, message: &[u8], sig: &[u8]) -> bool {
        match self {
            Key::Hmac(secret) => {
                let algorithm = match alg {
                    JwtAlgorithm::HS256 => ring::hmac::HMAC_SHA256,
                    JwtAlgorithm::HS384 => ring::hmac::HMAC_SHA384,
                    JwtAlgorithm::HS512 => ring::hmac::HMAC_SHA512,
                    _ => return false,
                };
                let key = ring::hmac::Key::new(algorithm, secret);
                ring::hmac::verify(&key, message, sig).is_ok()
            }
            Key::Public(kind, bytes) => {
                let algorithm: &dyn signature::VerificationAlgorithm = match (kind, alg) {
                    (KeyAlgorithm::Rsa, JwtAlgorithm::RS256) => {
                        &signature::RSA_PKCS1_2048_8192_SHA256
                    }
                    (KeyAlgorithm::EcP256, JwtAlgorithm::ES256) => {
                        &signature::ECDSA_P256_SHA256_FIXED
                    }
                    (KeyAlgorithm::Ed25519, JwtAlgorithm::EdDSA) => &signature::ED25519,
                    _ => return false,
                };
                UnparsedPublicKey::new(algorithm, bytes)
                    .verify(message, sig)
                    .is_ok()
            }
        }
    }
}

/// Where the token is read from.
#[derive(Debug)]
struct Sources {
    header: HeaderName,
    query: Option<Box<str>>,
    cookie: Option<Box<str>>,
}

/// `jwtAuth`.
#[derive(Debug)]
pub struct JwtAuthPlugin {
    config: JwtAuth,
    sources: Sources,
    keys: Vec<(Arc<str>, Key)>,
    algorithms: Vec<JwtAlgorithm>,
    skew: u64,
    require_expiry: bool,
    claims: Vec<(String, HeaderName)>,
    common: Common,
}

impl JwtAuthPlugin {
    pub fn build(c: &JwtAuth, env: &BuildEnv<'_>) -> Result<Arc<dyn Plugin>, ConfigError> {
        let field = "jwtAuth";
        let mut keys = Vec::new();
        for s in (env.consumers)(&c.common.consumers.match_labels) {
            if let Some(secret) = s.values.get("jwt-secret").filter(|v| !v.is_empty()) {
                keys.push((s.consumer.clone(), Key::Hmac(secret.clone())));
            }
            if let Some(pem) = s.values.get("jwt-public-key") {
                let key = SubjectPublicKeyInfoDer::from_pem_slice(pem)
                    .ok()
                    .and_then(|der| spki_key(der.as_ref()).map(|(a, k)| (a, k.to_vec())));
                match key {
                    Some((alg, bytes)) => keys.push((s.consumer.clone(), Key::Public(alg, bytes))),
                    None => {
                        return Err(ConfigError::new(
                            format!("{field}.consumers"),
                            format!(
                                "Secret {}: jwt-public-key is not a PEM RSA, P-256 or Ed25519 public key",
                                s.secret
                            ),
                        ));
                    }
                }
            }
        }
        let claims = c
            .claims_to_headers
            .iter()
            .enumerate()
            .map(|(i, ch)| {
                let h = header_name(&ch.header, &format!("{field}.claimsToHeaders[{i}].header"))?;
                Ok((ch.claim.clone(), h))
            })
            .collect::<Result<_, ConfigError>>()?;
        let algorithms = if c.algorithms.is_empty() {
            vec![
                JwtAlgorithm::HS256,
                JwtAlgorithm::HS384,
                JwtAlgorithm::HS512,
                JwtAlgorithm::RS256,
                JwtAlgorithm::ES256,
                JwtAlgorithm::EdDSA,
            ]
        } else {
            c.algorithms.clone()
        };
        Ok(Arc::new(JwtAuthPlugin {
            sources: Sources {
                header: header_name(
                    c.header.as_deref().unwrap_or("authorization"),
                    &format!("{field}.header"),
                )?,
                query: c.query.as_deref().map(Into::into),
                cookie: c.cookie.as_deref().map(Into::into),
            },
            keys,
            algorithms,
            skew: c.clock_skew.map_or(60, |d| d.0.as_secs()),
            require_expiry: c.require_expiry.unwrap_or(true),
            claims,
            common: Common::new(&c.common, field)?,
            config: c.clone(),
        }))
    }

    /// The token and where it was found.
    fn token<'r>(&self, ctx: &RequestCtx<'r>) -> Option<(&'r str, Found)> {
        if let Some(v) = ctx.headers.get(&self.sources.header) {
            let text = v.to_str().ok()?;
            let token = if self.sources.header == header::AUTHORIZATION {
                text.strip_prefix("Bearer ")
                    .or_else(|| text.strip_prefix("bearer "))?
            } else {
                text
            };
            return Some((token.trim(), Found::Header));
        }
        if let Some(q) = &self.sources.query
            && let Some(t) = query_value(ctx.query, q)
        {
            return Some((t, Found::Query));
        }
        let name = self.sources.cookie.as_deref()?;
        ctx.headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|c| c.trim().split_once('='))
            .find_map(|(k, v)| (k == name).then_some((v, Found::Cookie)))
    }

    /// Verifies `token`; the consumer and claims, or why not.
    fn verify(&self, token: &str) -> Result<(Arc<str>, Value), &'static str> {
        if token.len() > MAX_TOKEN {
            return Err("token too large");
        }
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err("malformed token");
        };
        let decode = |part: &str| URL_SAFE_NO_PAD.decode(part).map_err(|_| "malformed token");
        let header: Value = serde_json::from_slice(&decode(h)?).map_err(|_| "malformed token")?;
        let alg = match header.get("alg").and_then(Value::as_str) {
            Some("HS256") => JwtAlgorithm::HS256,
            Some("HS384") => JwtAlgorithm::HS384,
            Some("HS512") => JwtAlgorithm::HS512,
            Some("RS256") => JwtAlgorithm::RS256,
            Some("ES256") => JwtAlgorithm::ES256,
            Some("EdDSA") => JwtAlgorithm::EdDSA,
            _ => return Err("token algorithm not accepted"),
        };
        if !self.algorithms.contains(&alg) {
            return Err("token algorithm not accepted");
        }
        let signature = decode(s)?;
        let message = &token.as_bytes()[..h.len() + 1 + p.len()];
        let kid = header.get("kid").and_then(Value::as_str);
        let consumer = self
            .keys
            .iter()
            .filter(|(c, k)| k.fits(alg) && kid.is_none_or(|kid| **c == *kid))
            .find(|(_, k)| k.verify(alg, message, &signature))
            .map(|(c, _)| c.clone())
            .ok_or("invalid token signature")?;
        let claims: Value = serde_json::from_slice(&decode(p)?).map_err(|_| "malformed token")?;
        self.check_claims(&claims)?;
        Ok((consumer, claims))
    }

    fn check_claims(&self, claims: &Value) -> Result<(), &'static str> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let time = |name: &str| claims.get(name).and_then(Value::as_f64);
        match time("exp") {
            Some(exp) if (now as f64) > exp + self.skew as f64 => return Err("token expired"),
            None if self.require_expiry => return Err("token has no expiry"),
            _ => {}
        }
        if let Some(nbf) = time("nbf")
            && (now as f64) + (self.skew as f64) < nbf
        {
            return Err("token not yet valid");
        }
        if let Some(iss) = &self.config.issuer
            && claims.get("iss").and_then(Value::as_str) != Some(iss.as_str())
        {
            return Err("wrong token issuer");
        }
        if !self.config.audiences.is_empty() {
            let ok = match claims.get("aud") {
                Some(Value::String(a)) => self.config.audiences.contains(a),
                Some(Value::Array(list)) => list
                    .iter()
                    .filter_map(Value::as_str)
                    .any(|a| self.config.audiences.iter().any(|x| x == a)),
                _ => false,
            };
            if !ok {
                return Err("wrong token audience");
            }
        }
        Ok(())
    }
}

#[derive(Clone, Copy)]
enum Found {
    Header,
    Query,
    Cookie,
}

impl Plugin for JwtAuthPlugin {
    fn name(&self) -> &'static str {
        "jwtAuth"
    }

    fn priority(&self) -> i32 {
        2510
    }

    fn request<'s>(&'s self, ctx: &mut RequestCtx<'_>) -> Outcome<'s> {
        let challenge =
            |error: &str| HeaderValue::try_from(format!("Bearer error=\"{error}\"")).ok();
        let Some((token, found)) = self.token(ctx) else {
            return Outcome::Reject(unauthorized("missing token", challenge("invalid_request")));
        };
        let (consumer, claims) = match self.verify(token) {
            Ok(v) => v,
            Err(why) => return Outcome::Reject(unauthorized(why, challenge("invalid_token"))),
        };
        for (claim, header) in &self.claims {
            let value = match claims.get(claim) {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) => HeaderValue::try_from(s.as_str()).ok(),
                Some(other) => HeaderValue::try_from(other.to_string()).ok(),
            };
            ctx.upstream_headers.push((header.clone(), value));
        }
        if self.common.hide {
            match found {
                Found::Header => ctx
                    .upstream_headers
                    .push((self.sources.header.clone(), None)),
                Found::Query => {
                    if let Some(q) = &self.sources.query {
                        ctx.remove_query.push(q.clone());
                    }
                }
                Found::Cookie => {
                    let name = self.sources.cookie.as_deref().unwrap_or("");
                    let kept: Vec<&str> = ctx
                        .headers
                        .get_all(header::COOKIE)
                        .iter()
                        .filter_map(|v| v.to_str().ok())
                        .flat_map(|v| v.split(';'))
                        .map(str::trim)
                        .filter(|c| c.split_once('=').is_none_or(|(k, _)| k != name))
                        .collect();
                    let value = (!kept.is_empty())
                        .then(|| HeaderValue::try_from(kept.join("; ")).ok())
                        .flatten();
                    ctx.upstream_headers.push((header::COOKIE, value));
                }
            }
        }
        self.common.identified(ctx, &consumer);
        Outcome::Continue
    }

    fn describe(&self) -> serde_json::Value {
        serde_json::to_value(&self.config).unwrap_or_default()
    }
}
