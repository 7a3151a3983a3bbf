//! `jwtAuth`: JSON Web Tokens, verified with ring.
//!
//! A consumer Secret holds `jwt-secret` (HMAC: HS256/384/512) or
//! `jwt-public-key` (PEM SubjectPublicKeyInfo: RSA for RS256/384/512, P-256
//! for ES256, Ed25519 for EdDSA). A token whose header names a `kid` is
//! checked against that consumer's key only; otherwise against each
//! consumer's key of the token's algorithm. With `jwksUri`, the keys of a
//! JSON Web Key Set verify tokens too (see [`super::jwks`]): a `kid`
//! selects the set's key of that id, and the consumer is the token's
//! `sub`. `alg: none`, an algorithm not allowed, a key of another kind (an
//! RSA public key used as an HMAC secret), a bad signature, an expired or
//! not-yet-valid token, the wrong issuer or audience all give `401`; so
//! does a token when no key set could be loaded yet, as the token cannot
//! be shown to be valid (the fetch failures are in the log), and a `5xx`
//! would invite clients to retry what will not work either.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::{HeaderName, HeaderValue, header};
use rustls::pki_types::SubjectPublicKeyInfoDer;
use rustls::pki_types::pem::PemObject;
use serde_json::Value;

use super::jwks::{self, JwksSource, KeySet, Reason};
use super::jwt_key::Key;
use super::{Common, header_name, query_value, unauthorized};
use crate::api::{JwtAlgorithm, JwtAuth};
use crate::plugins::{BuildEnv, ConfigError, Outcome, Plugin, RequestCtx, Waited};
use crate::x509::spki_key;

/// Tokens longer than this are refused before any decoding.
const MAX_TOKEN: usize = 16 * 1024;

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
    jwks: Option<Arc<JwksSource>>,
}

/// A token taken apart; the signature not yet checked.
struct Token<'t> {
    alg: JwtAlgorithm,
    kid: Option<String>,
    /// `header.payload`, what the signature covers.
    message: &'t [u8],
    payload: &'t str,
    signature: Vec<u8>,
}

/// Why a token was not accepted.
enum Refusal {
    /// No key fits the token: it may be in a key set not (yet) loaded.
    NoKey,
    Invalid(&'static str),
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
                JwtAlgorithm::RS384,
                JwtAlgorithm::RS512,
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
            jwks: JwksSource::build(c, env)?,
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

    /// Takes `token` apart.
    fn parse<'t>(&self, token: &'t str) -> Result<Token<'t>, &'static str> {
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
        let alg = header
            .get("alg")
            .and_then(Value::as_str)
            .and_then(jwks::algorithm)
            .ok_or("token algorithm not accepted")?;
        if !self.algorithms.contains(&alg) {
            return Err("token algorithm not accepted");
        }
        Ok(Token {
            alg,
            kid: header.get("kid").and_then(Value::as_str).map(str::to_owned),
            message: &token.as_bytes()[..h.len() + 1 + p.len()],
            payload: p,
            signature: decode(s)?,
        })
    }

    /// Verifies a token with the consumers' keys and `set`'s: the consumer
    /// and claims, or why not.
    fn verify(&self, t: &Token<'_>, set: Option<&KeySet>) -> Result<(Arc<str>, Value), Refusal> {
        let kid = t.kid.as_deref();
        let (alg, message, sig) = (t.alg, t.message, &t.signature[..]);
        let mut tried = false;
        let mut consumer = None;
        for (c, k) in &self.keys {
            if k.fits(alg) && kid.is_none_or(|kid| **c == *kid) {
                tried = true;
                if k.verify(alg, message, sig) {
                    consumer = Some(c.clone());
                    break;
                }
            }
        }
        let mut by_set = false;
        if consumer.is_none()
            && let Some(set) = set
        {
            for k in set.keys.iter().filter(|k| k.fits(alg, kid)) {
                tried = true;
                if k.key.verify(alg, message, sig) {
                    by_set = true;
                    break;
                }
            }
        }
        if !tried {
            return Err(Refusal::NoKey);
        }
        if consumer.is_none() && !by_set {
            return Err(Refusal::Invalid("invalid token signature"));
        }
        let claims: Value = URL_SAFE_NO_PAD
            .decode(t.payload)
            .ok()
            .and_then(|p| serde_json::from_slice(&p).ok())
            .ok_or(Refusal::Invalid("malformed token"))?;
        self.check_claims(&claims).map_err(Refusal::Invalid)?;
        let consumer = match consumer {
            Some(c) => c,
            // A key set's tokens name their subject.
            None => Arc::from(
                claims
                    .get("sub")
                    .and_then(Value::as_str)
                    .or(kid)
                    .unwrap_or("jwks"),
            ),
        };
        Ok((consumer, claims))
    }

    /// The upstream request's headers for an accepted token: claims, and
    /// who the consumer is.
    fn grant(&self, consumer: &Arc<str>, claims: &Value) -> Vec<(HeaderName, Option<HeaderValue>)> {
        let mut out = Vec::with_capacity(self.claims.len() + 1);
        for (claim, header) in &self.claims {
            let value = match claims.get(claim) {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) => HeaderValue::try_from(s.as_str()).ok(),
                Some(other) => HeaderValue::try_from(other.to_string()).ok(),
            };
            out.push((header.clone(), value));
        }
        out.push((
            self.common.consumer_header.clone(),
            HeaderValue::from_str(consumer).ok(),
        ));
        out
    }

    /// Removes the credential from the upstream request, unless
    /// `hideCredentials: false`.
    fn hide(&self, ctx: &mut RequestCtx<'_>, found: Found) {
        if !self.common.hide {
            return;
        }
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

fn challenge(error: &str) -> Option<HeaderValue> {
    HeaderValue::try_from(format!("Bearer error=\"{error}\"")).ok()
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
        let Some((token, found)) = self.token(ctx) else {
            return Outcome::Reject(unauthorized("missing token", challenge("invalid_request")));
        };
        let parsed = match self.parse(token) {
            Ok(t) => t,
            Err(why) => return Outcome::Reject(unauthorized(why, challenge("invalid_token"))),
        };
        let set = self.jwks.as_ref().and_then(|source| {
            // Older than the interval: fetched again in the background;
            // this request goes on with what there is.
            source.refresh(Reason::Stale);
            source.keys()
        });
        match self.verify(&parsed, set.as_deref()) {
            Ok((consumer, claims)) => {
                self.hide(ctx, found);
                let grant = self.grant(&consumer, &claims);
                ctx.upstream_headers.extend(grant);
                ctx.consumer = Some(consumer);
                Outcome::Continue
            }
            Err(Refusal::Invalid(why)) => {
                Outcome::Reject(unauthorized(why, challenge("invalid_token")))
            }
            Err(Refusal::NoKey) => {
                // No key set, or none with this kid: a fetch may bring one.
                let Some(source) = &self.jwks else {
                    return Outcome::Reject(unauthorized(
                        "invalid token signature",
                        challenge("invalid_token"),
                    ));
                };
                let mut done = source.subscribe();
                let reason = match (&set, &parsed.kid) {
                    (Some(set), Some(kid)) if !set.has_kid(kid) => Reason::UnknownKid,
                    (Some(_), _) => {
                        return Outcome::Reject(unauthorized(
                            "invalid token signature",
                            challenge("invalid_token"),
                        ));
                    }
                    (None, _) => Reason::Stale,
                };
                if !source.refresh(reason) {
                    let why = match reason {
                        Reason::Stale => "no verification keys available",
                        Reason::UnknownKid => "unknown token key id",
                    };
                    return Outcome::Reject(unauthorized(why, challenge("invalid_token")));
                }
                // Removed now; only forwarded if the token passes.
                self.hide(ctx, found);
                let token = token.to_owned();
                Outcome::Wait(Box::pin(async move {
                    let _ = tokio::time::timeout(source.timeout(), done.changed()).await;
                    let refused = |why| Box::new(unauthorized(why, challenge("invalid_token")));
                    let parsed = self.parse(&token).map_err(refused)?;
                    match self.verify(&parsed, source.keys().as_deref()) {
                        Ok((consumer, claims)) => Ok(Waited {
                            upstream_headers: self.grant(&consumer, &claims),
                            consumer: Some(consumer),
                            ..Waited::default()
                        }),
                        Err(Refusal::Invalid(why)) => Err(refused(why)),
                        Err(Refusal::NoKey) => Err(refused(match reason {
                            Reason::Stale => "no verification keys available",
                            Reason::UnknownKid => "unknown token key id",
                        })),
                    }
                }))
            }
        }
    }

    fn describe(&self) -> serde_json::Value {
        serde_json::to_value(&self.config).unwrap_or_default()
    }
}
