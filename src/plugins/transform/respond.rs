//! `redirect`, `requestId` and `mocking`: plugins that answer the client
//! themselves or label the request.
//!
//! They run after authentication (see the order in [`crate::plugins`]),
//! so a mock or a redirect cannot be used to learn anything about a route
//! without the credentials it asks for.
//!
//! The checks of configured headers and statuses, and the plain answers,
//! that `proxyRewrite` and `responseRewrite` share live here too.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use ring::rand::{SecureRandom, SystemRandom};

use crate::api::{Mocking, RedirectTo, RequestId};
use crate::plugins::{BuildEnv, ConfigError, Outcome, Plugin, Rejection, RequestCtx};

/// Request headers the gateway writes itself (framing, hop-by-hop,
/// forwarding): an edit would be silently dropped or, for framing,
/// corrupt the request, so configuring one is an error instead.
pub(crate) const GATEWAY_REQUEST_HEADERS: [&str; 15] = [
    "host",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "content-length",
    "expect",
    "upgrade",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-forwarded-port",
    "x-real-ip",
];

/// Response headers that describe the connection or the body's framing,
/// which the gateway computes for the body it actually sends.
pub(crate) const GATEWAY_RESPONSE_HEADERS: [&str; 7] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "content-length",
];

/// Parses a configured header name, refusing the ones in `reserved`.
pub(crate) fn header_name(
    name: &str,
    field: &str,
    reserved: &[&str],
) -> Result<HeaderName, ConfigError> {
    let parsed = HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| ConfigError::new(field, format!("{name:?} is not a valid header name")))?;
    if reserved.contains(&parsed.as_str()) {
        return Err(ConfigError::new(
            field,
            format!("{name} is managed by the gateway and cannot be configured here"),
        ));
    }
    Ok(parsed)
}

/// Parses a configured header value: visible ASCII, spaces and tabs.
pub(crate) fn header_value(value: &str, field: &str) -> Result<HeaderValue, ConfigError> {
    HeaderValue::from_str(value).map_err(|_| {
        ConfigError::new(
            field,
            format!("{value:?} is not a valid header value (visible ASCII only)"),
        )
    })
}

/// A final status: 1xx cannot end an exchange, so it is refused.
pub(super) fn final_status(code: u16, field: &str) -> Result<StatusCode, ConfigError> {
    StatusCode::from_u16(code)
        .ok()
        .filter(|s| (200..600).contains(&s.as_u16()))
        .ok_or_else(|| {
            ConfigError::new(field, format!("{code} is not a status between 200 and 599"))
        })
}

/// A short plain-text answer.
pub(crate) fn plain(status: StatusCode, message: &str) -> Rejection {
    Rejection::plain(status, format!("{} {message}\n", status.as_u16()))
}

/// A piece of a redirect target.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Host,
    Path,
    Query,
    RequestUri,
}

const VARIABLES: &str = "{host}, {path}, {query} and {request_uri}";

/// Compiles a `redirect.uri` template. Every `{...}` must be a known
/// variable: a typo would otherwise send clients to a literal `{hots}`.
fn parse_template(uri: &str, field: &str) -> Result<Vec<Piece>, ConfigError> {
    let mut pieces = Vec::new();
    let mut rest = uri;
    let text = |t: &str, pieces: &mut Vec<Piece>| -> Result<(), ConfigError> {
        if t.contains('}') {
            return Err(ConfigError::new(field, "'}' without a matching '{'"));
        }
        if !t.is_empty() {
            header_value(t, field)?;
            pieces.push(Piece::Text(t.to_owned()));
        }
        Ok(())
    };
    while let Some(open) = rest.find('{') {
        text(&rest[..open], &mut pieces)?;
        let after = &rest[open + 1..];
        let close = after
            .find('}')
            .ok_or_else(|| ConfigError::new(field, "'{' is not closed by '}'"))?;
        pieces.push(match &after[..close] {
            "host" => Piece::Host,
            "path" => Piece::Path,
            "query" => Piece::Query,
            "request_uri" => Piece::RequestUri,
            other => {
                return Err(ConfigError::new(
                    field,
                    format!("unknown variable {{{other}}}; known: {VARIABLES}"),
                ));
            }
        });
        rest = &after[close + 1..];
    }
    text(rest, &mut pieces)?;
    if pieces.is_empty() {
        return Err(ConfigError::new(field, "the target is empty"));
    }
    Ok(pieces)
}

/// Fills a template in with the request's host, path and query.
fn expand(pieces: &[Piece], host: &str, path: &str, query: Option<&str>) -> String {
    let mut out = String::new();
    for piece in pieces {
        match piece {
            Piece::Text(t) => out.push_str(t),
            Piece::Host => out.push_str(host),
            Piece::Path => out.push_str(path),
            Piece::Query => out.push_str(query.unwrap_or("")),
            Piece::RequestUri => {
                out.push_str(path);
                if let Some(q) = query {
                    out.push('?');
                    out.push_str(q);
                }
            }
        }
    }
    out
}

/// `redirect`: answers with a redirect to a target built from the request.
#[derive(Debug)]
pub struct RedirectPlugin {
    config: RedirectTo,
    status: StatusCode,
    pieces: Vec<Piece>,
    /// The `Location` of a target without variables, built once.
    fixed: Option<HeaderValue>,
}

impl RedirectPlugin {
    pub fn build(c: &RedirectTo, _env: &BuildEnv<'_>) -> Result<Arc<dyn Plugin>, ConfigError> {
        let field = "redirect";
        let code = c.code.unwrap_or(302);
        let status = match code {
            301 | 302 | 303 | 307 | 308 => StatusCode::from_u16(code).ok(),
            _ => None,
        }
        .ok_or_else(|| {
            ConfigError::new(
                format!("{field}.code"),
                format!("{code} is not a redirect status: use 301, 302, 303, 307 or 308"),
            )
        })?;
        let pieces = parse_template(&c.uri, &format!("{field}.uri"))?;
        let fixed = match pieces.as_slice() {
            [Piece::Text(t)] => Some(header_value(t, &format!("{field}.uri"))?),
            _ => None,
        };
        Ok(Arc::new(RedirectPlugin {
            config: c.clone(),
            status,
            pieces,
            fixed,
        }))
    }
}

impl Plugin for RedirectPlugin {
    fn name(&self) -> &'static str {
        "redirect"
    }

    fn priority(&self) -> i32 {
        901
    }

    fn request<'s>(&'s self, ctx: &mut RequestCtx<'_>) -> Outcome<'s> {
        let location = match &self.fixed {
            Some(v) => v.clone(),
            None => {
                match HeaderValue::try_from(expand(&self.pieces, ctx.host, ctx.path, ctx.query)) {
                    Ok(v) => v,
                    Err(_) => {
                        return Outcome::Reject(plain(
                            StatusCode::BAD_REQUEST,
                            "Bad Request: the redirect target is not a valid header value",
                        ));
                    }
                }
            }
        };
        let mut headers = HeaderMap::new();
        headers.insert(header::LOCATION, location);
        Outcome::Reject(Rejection {
            status: self.status,
            headers,
            body: Bytes::new(),
        })
    }

    fn describe(&self) -> serde_json::Value {
        serde_json::to_value(&self.config).unwrap_or_default()
    }
}

/// Longest client-sent id kept: ids end up in logs of every service the
/// request passes through.
const MAX_ID_LEN: usize = 200;

/// Whether a client's id is kept: 1 to 200 visible ASCII characters, so
/// that it cannot smuggle spaces or control characters into logs.
fn acceptable_id(v: &HeaderValue) -> bool {
    let b = v.as_bytes();
    (1..=MAX_ID_LEN).contains(&b.len()) && b.iter().all(|c| (0x21..=0x7e).contains(c))
}

fn hex(bytes: &[u8; 16]) -> [u8; 32] {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; 32];
    for (i, b) in bytes.iter().enumerate() {
        out[2 * i] = DIGITS[usize::from(b >> 4)];
        out[2 * i + 1] = DIGITS[usize::from(b & 0xf)];
    }
    out
}

/// The splitmix64 finalizer: spreads every input bit over the output.
fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Ids for when the system's random source fails: not secret, but unique
/// within the process (a counter through a bijection) and unlikely to
/// repeat across processes (the time and the process id).
fn fallback_id() -> [u8; 16] {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| {
        u64::try_from(d.as_nanos() & u128::from(u64::MAX)).unwrap_or(0)
    });
    let pid = u64::from(std::process::id());
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&mix(nanos ^ pid.rotate_left(40)).to_be_bytes());
    out[8..].copy_from_slice(&mix(n ^ pid.rotate_left(20)).to_be_bytes());
    out
}

/// `requestId`: gives every request an id the upstream and the client see.
#[derive(Debug)]
pub struct RequestIdPlugin {
    config: RequestId,
    header: HeaderName,
    in_response: bool,
    rng: SystemRandom,
}

impl RequestIdPlugin {
    pub fn build(c: &RequestId, _env: &BuildEnv<'_>) -> Result<Arc<dyn Plugin>, ConfigError> {
        let field = "requestId";
        let header = header_name(
            c.header.as_deref().unwrap_or("x-request-id"),
            &format!("{field}.header"),
            &GATEWAY_REQUEST_HEADERS,
        )?;
        Ok(Arc::new(RequestIdPlugin {
            config: c.clone(),
            header,
            in_response: c.include_in_response.unwrap_or(true),
            rng: SystemRandom::new(),
        }))
    }

    fn generate(&self) -> Option<HeaderValue> {
        let bytes = random_id(&self.rng).unwrap_or_else(|| {
            static WARNED: AtomicBool = AtomicBool::new(false);
            if !WARNED.swap(true, Ordering::Relaxed) {
                tracing::warn!("system random source failed; request ids fall back to a counter");
            }
            fallback_id()
        });
        HeaderValue::from_bytes(&hex(&bytes)).ok()
    }
}

/// Sixteen random bytes for an id, from a per-thread pool the system's
/// random source fills a page at a time. A `getrandom` call per request
/// cost more than the rest of the plugin; the pool keeps the system
/// source's own bytes and calls it once per 256 ids. (rand's thread
/// generator would serve too, but it panics when the system's source fails
/// as it is first seeded.) `None` when the source fails.
fn random_id(rng: &SystemRandom) -> Option<[u8; 16]> {
    const POOL_BYTES: usize = 4096;
    thread_local! {
        static POOL: std::cell::RefCell<([u8; POOL_BYTES], usize)> =
            const { std::cell::RefCell::new(([0; POOL_BYTES], POOL_BYTES)) };
    }
    POOL.with(|pool| {
        let mut pool = pool.try_borrow_mut().ok()?;
        let (bytes, used) = &mut *pool;
        if *used + 16 > POOL_BYTES {
            rng.fill(bytes).ok()?;
            *used = 0;
        }
        let taken = &mut bytes[*used..*used + 16];
        let mut id = [0u8; 16];
        id.copy_from_slice(taken);
        // Bytes handed out are not kept.
        taken.fill(0);
        *used += 16;
        Some(id)
    })
}

impl Plugin for RequestIdPlugin {
    fn name(&self) -> &'static str {
        "requestId"
    }

    fn priority(&self) -> i32 {
        12015
    }

    fn request<'s>(&'s self, ctx: &mut RequestCtx<'_>) -> Outcome<'s> {
        let id = match ctx.headers.get(&self.header) {
            Some(v) if acceptable_id(v) => Some(v.clone()),
            _ => self.generate(),
        };
        if let Some(id) = id {
            if self.in_response {
                ctx.response_headers.insert(self.header.clone(), id.clone());
            }
            ctx.upstream_headers.push((self.header.clone(), Some(id)));
        }
        Outcome::Continue
    }

    fn describe(&self) -> serde_json::Value {
        serde_json::to_value(&self.config).unwrap_or_default()
    }
}

/// `mocking`: a fixed answer, the upstream is never called.
#[derive(Debug)]
pub struct MockingPlugin {
    config: Mocking,
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl MockingPlugin {
    pub fn build(c: &Mocking, _env: &BuildEnv<'_>) -> Result<Arc<dyn Plugin>, ConfigError> {
        let field = "mocking";
        let status = final_status(c.status_code.unwrap_or(200), &format!("{field}.statusCode"))?;
        let mut headers = HeaderMap::new();
        let content_type = c
            .content_type
            .as_deref()
            .unwrap_or("text/plain; charset=utf-8");
        headers.insert(
            header::CONTENT_TYPE,
            header_value(content_type, &format!("{field}.contentType"))?,
        );
        for (name, value) in &c.headers {
            let at = format!("{field}.headers.{name}");
            let n = header_name(name, &at, &GATEWAY_RESPONSE_HEADERS)?;
            if n == header::CONTENT_TYPE {
                return Err(ConfigError::new(
                    at,
                    "set the content type with contentType",
                ));
            }
            headers.append(n, header_value(value, &at)?);
        }
        Ok(Arc::new(MockingPlugin {
            config: c.clone(),
            status,
            headers,
            body: Bytes::from(c.body.clone()),
        }))
    }
}

impl Plugin for MockingPlugin {
    fn name(&self) -> &'static str {
        "mocking"
    }

    fn priority(&self) -> i32 {
        900
    }

    fn request<'s>(&'s self, _ctx: &mut RequestCtx<'_>) -> Outcome<'s> {
        Outcome::Reject(Rejection {
            status: self.status,
            headers: self.headers.clone(),
            body: self.body.clone(),
        })
    }

    fn describe(&self) -> serde_json::Value {
        serde_json::to_value(&self.config).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn with_env<T>(f: impl FnOnce(&BuildEnv<'_>) -> T) -> T {
        let secret = |_: &str, _: &str| None;
        let consumers = |_: &BTreeMap<String, String>| Vec::new();
        f(&BuildEnv {
            namespace: "default",
            redis: None,
            secret: &secret,
            consumers: &consumers,
        })
    }

    #[test]
    fn templates_expand_the_request() {
        let t = parse_template("https://{host}{request_uri}", "f").unwrap();
        assert_eq!(
            expand(&t, "shop.test", "/a/b", Some("x=1")),
            "https://shop.test/a/b?x=1"
        );
        assert_eq!(expand(&t, "shop.test", "/a", None), "https://shop.test/a");
        let t = parse_template("/new{path}?from={host}&{query}", "f").unwrap();
        assert_eq!(expand(&t, "h", "/p", Some("q=2")), "/new/p?from=h&q=2");
        assert_eq!(expand(&t, "h", "/p", None), "/new/p?from=h&");
        assert_eq!(
            parse_template("/fixed", "f").unwrap(),
            vec![Piece::Text("/fixed".into())]
        );
    }

    #[test]
    fn templates_are_checked() {
        for (bad, why) in [
            ("/{nope}", "unknown variable {nope}"),
            ("/{host", "not closed"),
            ("/}", "without a matching"),
            ("", "empty"),
            ("/a\nb", "header value"),
        ] {
            let e = parse_template(bad, "redirect.uri").unwrap_err();
            assert_eq!(e.field, "redirect.uri");
            assert!(e.message.contains(why), "{bad:?}: {}", e.message);
        }
    }

    #[test]
    fn redirect_codes_are_checked() {
        let build = |code| {
            let c = RedirectTo {
                uri: "/x".into(),
                code,
            };
            with_env(|env| RedirectPlugin::build(&c, env)).map(|p| p.describe())
        };
        assert!(build(None).is_ok());
        for ok in [301, 302, 303, 307, 308] {
            assert!(build(Some(ok)).is_ok(), "{ok}");
        }
        for bad in [200, 300, 304, 404] {
            assert_eq!(build(Some(bad)).unwrap_err().field, "redirect.code");
        }
    }

    #[test]
    fn client_ids_are_kept_only_when_sane() {
        let ok = |s: &[u8]| acceptable_id(&HeaderValue::from_bytes(s).unwrap());
        assert!(ok(b"abc-123"));
        assert!(ok(&[b'a'; 200]));
        assert!(!ok(&[b'a'; 201]));
        assert!(!ok(b""));
        assert!(!ok(b"has space"));
        assert!(!ok(b"tab\there"));
        assert!(!ok("caf\u{e9}".as_bytes()));
    }

    #[test]
    fn generated_ids_are_128_bit_lowercase_hex() {
        assert_eq!(&hex(&[0xab; 16]), b"abababababababababababababababab");
        let a = fallback_id();
        let b = fallback_id();
        assert_ne!(a, b);
        let plugin = with_env(|env| RequestIdPlugin::build(&RequestId::default(), env)).unwrap();
        assert_eq!(plugin.name(), "requestId");
        let p = RequestIdPlugin {
            config: RequestId::default(),
            header: HeaderName::from_static("x-request-id"),
            in_response: true,
            rng: SystemRandom::new(),
        };
        // Past several refills of the thread's pool.
        let ids: Vec<HeaderValue> = (0..1000).filter_map(|_| p.generate()).collect();
        assert_eq!(ids.len(), 1000);
        let distinct: std::collections::HashSet<&HeaderValue> = ids.iter().collect();
        assert_eq!(distinct.len(), 1000);
        for id in &ids {
            assert_eq!(id.len(), 32);
            assert!(
                id.as_bytes()
                    .iter()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
            );
        }
        assert_ne!(ids[0], ids[1]);
        let bad = RequestId {
            header: Some("content-length".into()),
            ..RequestId::default()
        };
        assert!(with_env(|env| RequestIdPlugin::build(&bad, env)).is_err());
    }

    #[test]
    fn mocking_settings_are_checked() {
        let build = |m: Mocking| with_env(|env| MockingPlugin::build(&m, env)).err();
        assert!(build(Mocking::default()).is_none());
        let e = build(Mocking {
            status_code: Some(102),
            ..Mocking::default()
        });
        assert_eq!(e.unwrap().field, "mocking.statusCode");
        let e = build(Mocking {
            content_type: Some("a\nb".into()),
            ..Mocking::default()
        });
        assert_eq!(e.unwrap().field, "mocking.contentType");
        for name in ["content-type", "Content-Length", "bad name"] {
            let e = build(Mocking {
                headers: [(name.to_owned(), "x".to_owned())].into(),
                ..Mocking::default()
            });
            assert_eq!(
                e.unwrap().field,
                format!("mocking.headers.{name}"),
                "{name}"
            );
        }
    }
}
