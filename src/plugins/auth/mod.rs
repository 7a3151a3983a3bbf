//! Authentication: `keyAuth`, `basicAuth` and `jwtAuth`.
//!
//! Credentials live in consumer Secrets: Secrets labelled
//! `sluicegate.io/consumer`, whose label value names the consumer, in the
//! namespace of the object that configures the plugin. A plugin accepts
//! the consumers its `consumers.matchLabels` select (all of them when
//! empty). A rotated Secret produces a new table, and with it a plugin
//! holding the new credentials: no restart, no cache to expire.
//!
//! A request that authenticates carries its consumer on (rate limiters can
//! key by it) and to the upstream in `X-Consumer-Name`; the credential
//! itself is removed unless `hideCredentials: false`. Anything else gets
//! `401` with a short reason, never a `5xx`: a malformed header, bad
//! base64, an unknown key, a wrong password.

pub mod forward;
pub mod jwks;
pub mod jwt;
pub mod jwt_key;
pub mod trust;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use base64::Engine;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};

use super::{BuildEnv, ConfigError, Outcome, Plugin, Rejection, RequestCtx};
use crate::api::{AuthCommon, BasicAuth, KeyAuth};

/// The label that makes a Secret a consumer; its value is the name.
pub const CONSUMER_LABEL: &str = "sluicegate.io/consumer";
/// Secret values credentials are read from; only Secrets with
/// [`CONSUMER_LABEL`] keep them.
pub const CREDENTIAL_KEYS: [&str; 6] = [
    "key",
    "username",
    "password",
    "auth",
    "jwt-secret",
    "jwt-public-key",
];

/// A consumer Secret as plugins see it.
#[derive(Debug, Clone)]
pub struct ConsumerSecret {
    pub consumer: Arc<str>,
    /// `namespace/name`, for diagnostics.
    pub secret: String,
    pub values: BTreeMap<String, Vec<u8>>,
}

/// Settings every authentication plugin shares, compiled.
#[derive(Debug, Clone)]
struct Common {
    hide: bool,
    consumer_header: HeaderName,
}

impl Common {
    fn new(c: &AuthCommon, field: &str) -> Result<Common, ConfigError> {
        let name = c.consumer_header.as_deref().unwrap_or("x-consumer-name");
        let consumer_header = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
            ConfigError::new(
                format!("{field}.consumerHeader"),
                format!("{name:?} is not a valid header name"),
            )
        })?;
        Ok(Common {
            hide: c.hide_credentials.unwrap_or(true),
            consumer_header,
        })
    }

    /// Records the consumer for later plugins and the upstream.
    fn identified(&self, ctx: &mut RequestCtx<'_>, consumer: &Arc<str>) {
        ctx.consumer = Some(consumer.clone());
        let value = HeaderValue::from_str(consumer).ok();
        ctx.upstream_headers
            .push((self.consumer_header.clone(), value));
    }
}

/// A `401` with a reason.
fn unauthorized(reason: &'static str, challenge: Option<HeaderValue>) -> Rejection {
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if let Some(c) = challenge {
        headers.insert(header::WWW_AUTHENTICATE, c);
    }
    Rejection {
        status: StatusCode::UNAUTHORIZED,
        headers,
        body: Bytes::from(format!("401 Unauthorized: {reason}\n")),
    }
}

fn header_name(name: &str, field: &str) -> Result<HeaderName, ConfigError> {
    HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| ConfigError::new(field, format!("{name:?} is not a valid header name")))
}

/// The raw value of query parameter `name`.
fn query_value<'q>(query: Option<&'q str>, name: &str) -> Option<&'q str> {
    query?
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find_map(|(k, v)| (k == name).then_some(v))
}

/// `keyAuth`: an API key in a header or query parameter.
#[derive(Debug)]
pub struct KeyAuthPlugin {
    config: KeyAuth,
    header: HeaderName,
    query: Option<Box<str>>,
    keys: foldhash::HashMap<Vec<u8>, Arc<str>>,
    common: Common,
}

impl KeyAuthPlugin {
    pub fn build(c: &KeyAuth, env: &BuildEnv<'_>) -> Result<Arc<dyn Plugin>, ConfigError> {
        let field = "keyAuth";
        let header = header_name(
            c.header.as_deref().unwrap_or("apikey"),
            &format!("{field}.header"),
        )?;
        let mut keys = foldhash::HashMap::default();
        for s in (env.consumers)(&c.common.consumers.match_labels) {
            if let Some(k) = s.values.get("key").filter(|k| !k.is_empty()) {
                // Two consumers with one key would make the consumer a
                // matter of chance: refuse the configuration instead.
                if let Some(other) = keys.insert(k.clone(), s.consumer.clone())
                    && other != s.consumer
                {
                    return Err(ConfigError::new(
                        format!("{field}.consumers"),
                        format!("consumers {other} and {} share an API key", s.consumer),
                    ));
                }
            }
        }
        Ok(Arc::new(KeyAuthPlugin {
            config: c.clone(),
            header,
            query: c.query.as_deref().map(Into::into),
            keys,
            common: Common::new(&c.common, field)?,
        }))
    }
}

impl Plugin for KeyAuthPlugin {
    fn name(&self) -> &'static str {
        "keyAuth"
    }

    fn priority(&self) -> i32 {
        2500
    }

    fn request<'s>(&'s self, ctx: &mut RequestCtx<'_>) -> Outcome<'s> {
        let from_header = ctx.headers.get(&self.header).map(HeaderValue::as_bytes);
        let from_query = || {
            let name = self.query.as_deref()?;
            query_value(ctx.query, name).map(str::as_bytes)
        };
        let (key, in_query) = match from_header {
            Some(k) => (Some(k), false),
            None => (from_query(), true),
        };
        let Some(key) = key else {
            return Outcome::Reject(unauthorized("missing API key", None));
        };
        let Some(consumer) = self.keys.get(key).cloned() else {
            return Outcome::Reject(unauthorized("invalid API key", None));
        };
        if self.common.hide {
            if in_query {
                if let Some(q) = &self.query {
                    ctx.remove_query.push(q.clone());
                }
            } else {
                ctx.upstream_headers.push((self.header.clone(), None));
            }
        }
        self.common.identified(ctx, &consumer);
        Outcome::Continue
    }

    fn describe(&self) -> serde_json::Value {
        serde_json::to_value(&self.config).unwrap_or_default()
    }
}

/// A stored password: plain text or a bcrypt hash.
#[derive(Debug, Clone)]
enum Password {
    Plain(Vec<u8>),
    Bcrypt(String),
}

/// Verified username/password pairs kept, so that bcrypt (deliberately
/// slow) runs once per credential rather than once per request.
const VERIFIED_CACHE: usize = 4096;

/// `basicAuth`: HTTP Basic credentials.
#[derive(Debug)]
pub struct BasicAuthPlugin {
    config: BasicAuth,
    users: foldhash::HashMap<String, (Password, Arc<str>)>,
    challenge: HeaderValue,
    /// SHA-256 of `user:password` pairs already verified.
    verified: Mutex<foldhash::HashSet<[u8; 32]>>,
    common: Common,
}

impl BasicAuthPlugin {
    pub fn build(c: &BasicAuth, env: &BuildEnv<'_>) -> Result<Arc<dyn Plugin>, ConfigError> {
        let field = "basicAuth";
        let mut users = foldhash::HashMap::default();
        for s in (env.consumers)(&c.common.consumers.match_labels) {
            let mut add = |user: &str, password: Password| {
                users.insert(user.to_owned(), (password, s.consumer.clone()));
            };
            if let (Some(u), Some(p)) = (s.values.get("username"), s.values.get("password")) {
                let user = String::from_utf8_lossy(u).into_owned();
                add(&user, password_of(p));
            }
            // htpasswd lines: `user:hash`.
            if let Some(file) = s.values.get("auth") {
                for line in String::from_utf8_lossy(file).lines() {
                    if let Some((u, h)) = line.trim().split_once(':') {
                        add(u, password_of(h.as_bytes()));
                    }
                }
            }
        }
        // An htpasswd Secret named directly (ingress-nginx's auth-secret):
        // every user in it is a consumer of that name.
        if let Some(r) = &c.htpasswd_secret_ref {
            let file = (env.secret)(&r.name, "auth").ok_or_else(|| {
                ConfigError::new(
                    format!("{field}.htpasswdSecretRef"),
                    format!(
                        "Secret {}/{} not found or without an auth value",
                        env.namespace, r.name
                    ),
                )
            })?;
            for line in String::from_utf8_lossy(&file).lines() {
                if let Some((u, h)) = line.trim().split_once(':') {
                    users.insert(u.to_owned(), (password_of(h.as_bytes()), Arc::from(u)));
                }
            }
        }
        let realm = c.realm.as_deref().unwrap_or("sluicegate");
        let challenge =
            HeaderValue::try_from(format!("Basic realm=\"{}\"", realm.replace('"', "")))
                .map_err(|_| ConfigError::new(format!("{field}.realm"), "not valid in a header"))?;
        Ok(Arc::new(BasicAuthPlugin {
            config: c.clone(),
            users,
            challenge,
            verified: Mutex::default(),
            common: Common::new(&c.common, field)?,
        }))
    }

    /// Checks a password. A bcrypt hash not verified before is returned
    /// for checking off the event loop: bcrypt is slow on purpose.
    fn check(&self, user: &str, password: &[u8]) -> Check {
        let Some((stored, consumer)) = self.users.get(user) else {
            return Check::Refused;
        };
        match stored {
            Password::Plain(p) => {
                // Comparing digests rather than the secrets themselves: how
                // long a comparison takes tells nothing about the password.
                let digest = |b: &[u8]| ring::digest::digest(&ring::digest::SHA256, b);
                if digest(p).as_ref() == digest(password).as_ref() {
                    Check::Accepted(consumer.clone())
                } else {
                    Check::Refused
                }
            }
            Password::Bcrypt(hash) => {
                let digest = ring::digest::digest(
                    &ring::digest::SHA256,
                    &[user.as_bytes(), b":", password].concat(),
                );
                let mut key = [0u8; 32];
                key.copy_from_slice(digest.as_ref());
                let seen = self.verified.lock().unwrap_or_else(PoisonError::into_inner);
                if seen.contains(&key) {
                    Check::Accepted(consumer.clone())
                } else {
                    Check::Bcrypt {
                        hash: hash.clone(),
                        key,
                        consumer: consumer.clone(),
                    }
                }
            }
        }
    }

    /// Remembers a pair bcrypt accepted.
    fn remember(&self, key: [u8; 32]) {
        let mut seen = self.verified.lock().unwrap_or_else(PoisonError::into_inner);
        if seen.len() >= VERIFIED_CACHE {
            seen.clear();
        }
        seen.insert(key);
    }
}

enum Check {
    Accepted(Arc<str>),
    Refused,
    Bcrypt {
        hash: String,
        key: [u8; 32],
        consumer: Arc<str>,
    },
}

fn password_of(stored: &[u8]) -> Password {
    let text = String::from_utf8_lossy(stored);
    if text.starts_with("$2a$") || text.starts_with("$2b$") || text.starts_with("$2y$") {
        Password::Bcrypt(text.trim().to_owned())
    } else {
        Password::Plain(stored.to_vec())
    }
}

impl Plugin for BasicAuthPlugin {
    fn name(&self) -> &'static str {
        "basicAuth"
    }

    fn priority(&self) -> i32 {
        2520
    }

    fn request<'s>(&'s self, ctx: &mut RequestCtx<'_>) -> Outcome<'s> {
        let challenge = || Some(self.challenge.clone());
        let Some(value) = ctx.headers.get(header::AUTHORIZATION) else {
            return Outcome::Reject(unauthorized("credentials required", challenge()));
        };
        let encoded = value
            .as_bytes()
            .strip_prefix(b"Basic ")
            .or_else(|| value.as_bytes().strip_prefix(b"basic "));
        let decoded = encoded.and_then(|e| {
            base64::engine::general_purpose::STANDARD
                .decode(e.trim_ascii())
                .ok()
        });
        let Some(decoded) = decoded else {
            return Outcome::Reject(unauthorized("malformed Basic credentials", challenge()));
        };
        let Some(colon) = decoded.iter().position(|&b| b == b':') else {
            return Outcome::Reject(unauthorized("malformed Basic credentials", challenge()));
        };
        let (user, password) = (&decoded[..colon], &decoded[colon + 1..]);
        let check = match std::str::from_utf8(user) {
            Ok(u) => self.check(u, password),
            Err(_) => Check::Refused,
        };
        let (consumer, pending) = match check {
            Check::Refused => {
                return Outcome::Reject(unauthorized("invalid username or password", challenge()));
            }
            Check::Accepted(c) => (c, None),
            Check::Bcrypt {
                hash,
                key,
                consumer,
            } => (consumer, Some((hash, key, password.to_vec()))),
        };
        // The effects are recorded now; if bcrypt refuses, the request is
        // answered with 401 and they are never applied.
        if self.common.hide {
            ctx.upstream_headers.push((header::AUTHORIZATION, None));
        }
        self.common.identified(ctx, &consumer);
        match pending {
            None => Outcome::Continue,
            Some((hash, key, password)) => Outcome::Wait(Box::pin(async move {
                let verified =
                    tokio::task::spawn_blocking(move || bcrypt::verify(&password, &hash)).await;
                if matches!(verified, Ok(Ok(true))) {
                    self.remember(key);
                    Ok(crate::plugins::Waited::default())
                } else {
                    Err(Box::new(unauthorized(
                        "invalid username or password",
                        Some(self.challenge.clone()),
                    )))
                }
            })),
        }
    }

    fn describe(&self) -> serde_json::Value {
        serde_json::to_value(&self.config).unwrap_or_default()
    }
}
