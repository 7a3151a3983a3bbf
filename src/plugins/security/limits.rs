//! Request limits: `requestBodyLimit`, `headerLimits` and `uaRestriction`.
//!
//! All three decide from the request head alone, before a byte of the body
//! is read or the upstream is chosen; `requestBodyLimit` also has the proxy
//! count a body whose length the head does not declare.

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, StatusCode, header};

use super::ip::{plain, rejected_status};
use crate::api::{HeaderLimits, RequestBodyLimit, UaRestriction};
use crate::plugins::{BuildEnv, ConfigError, Outcome, Plugin, RequestCtx};
use crate::routing::Pattern;

/// `requestBodyLimit`: refuses a declared body larger than `maxBytes`
/// with `413` before it is sent on, and a `Content-Length` that cannot be
/// read with `400`.
///
/// A body without `Content-Length` (chunked, or HTTP/2 without the header)
/// is counted as it streams to the upstream (see
/// [`RequestCtx::body_limit`]): once past `maxBytes` nothing more is
/// forwarded, the upstream connection is closed mid-body, and the client
/// gets `413` if the upstream has not answered yet. Several limits (a
/// global one and the route's) make the smallest count.
#[derive(Debug)]
pub struct RequestBodyLimitPlugin {
    config: RequestBodyLimit,
}

/// What the `Content-Length` headers of a request declare.
#[derive(Debug, PartialEq, Eq)]
enum Declared {
    None,
    Length(u64),
    Malformed,
}

/// Reads every `Content-Length` (a list in one header, or several
/// headers): all must be the same number, as RFC 9110 allows only
/// repeats of one value.
fn declared_length(headers: &HeaderMap) -> Declared {
    let mut found = None;
    for value in headers.get_all(header::CONTENT_LENGTH) {
        for part in value.as_bytes().split(|&b| b == b',') {
            let digits = part.trim_ascii();
            if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
                return Declared::Malformed;
            }
            // Only digits, so only overflow can fail: a length beyond
            // u64 is over any limit, but is no length either.
            let Some(n) = std::str::from_utf8(digits)
                .ok()
                .and_then(|d| d.parse::<u64>().ok())
            else {
                return Declared::Malformed;
            };
            match found {
                Some(prev) if prev != n => return Declared::Malformed,
                _ => found = Some(n),
            }
        }
    }
    found.map_or(Declared::None, Declared::Length)
}

impl RequestBodyLimitPlugin {
    pub fn build(
        c: &RequestBodyLimit,
        _env: &BuildEnv<'_>,
    ) -> Result<Arc<dyn Plugin>, ConfigError> {
        Ok(Arc::new(RequestBodyLimitPlugin { config: c.clone() }))
    }
}

impl Plugin for RequestBodyLimitPlugin {
    fn name(&self) -> &'static str {
        "requestBodyLimit"
    }

    fn priority(&self) -> i32 {
        3010
    }

    fn request<'s>(&'s self, ctx: &mut RequestCtx<'_>) -> Outcome<'s> {
        let max = self.config.max_bytes;
        match declared_length(ctx.headers) {
            Declared::None => {
                ctx.body_limit = Some(ctx.body_limit.map_or(max, |l| l.min(max)));
                Outcome::Continue
            }
            // The server reads exactly the declared length, no more.
            Declared::Length(n) if n <= max => Outcome::Continue,
            Declared::Length(_) => Outcome::Reject(plain(
                StatusCode::PAYLOAD_TOO_LARGE,
                Bytes::from(format!(
                    "413 Payload Too Large: the body may be at most {} bytes\n",
                    self.config.max_bytes
                )),
            )),
            Declared::Malformed => Outcome::Reject(plain(
                StatusCode::BAD_REQUEST,
                Bytes::from_static(b"400 Bad Request: invalid Content-Length\n"),
            )),
        }
    }

    fn describe(&self) -> serde_json::Value {
        serde_json::to_value(&self.config).unwrap_or_default()
    }
}

/// `headerLimits`: refuses requests whose headers are too many or too
/// large with `431`, so that an upstream with smaller buffers never sees
/// them (and answers with something less clear, or not at all).
#[derive(Debug)]
pub struct HeaderLimitsPlugin {
    config: HeaderLimits,
}

impl HeaderLimitsPlugin {
    pub fn build(c: &HeaderLimits, _env: &BuildEnv<'_>) -> Result<Arc<dyn Plugin>, ConfigError> {
        if c.max_count.is_none() && c.max_total_bytes.is_none() && c.max_value_bytes.is_none() {
            return Err(ConfigError::new(
                "headerLimits",
                "set at least one of maxCount, maxTotalBytes, maxValueBytes",
            ));
        }
        Ok(Arc::new(HeaderLimitsPlugin { config: c.clone() }))
    }

    /// Which limit `headers` exceed, if any. Every instance of a repeated
    /// header counts, as each one travels on its own line.
    fn exceeded(&self, headers: &HeaderMap) -> Option<&'static str> {
        let c = &self.config;
        if c.max_count
            .is_some_and(|max| headers.len() as u64 > u64::from(max))
        {
            return Some("too many header fields");
        }
        let mut total: u64 = 0;
        for (name, value) in headers {
            let len = value.len() as u64;
            if c.max_value_bytes.is_some_and(|max| len > max) {
                return Some("a header value is too large");
            }
            total = total.saturating_add(name.as_str().len() as u64 + len);
        }
        if c.max_total_bytes.is_some_and(|max| total > max) {
            return Some("the header fields are too large together");
        }
        None
    }
}

impl Plugin for HeaderLimitsPlugin {
    fn name(&self) -> &'static str {
        "headerLimits"
    }

    fn priority(&self) -> i32 {
        3020
    }

    fn request<'s>(&'s self, ctx: &mut RequestCtx<'_>) -> Outcome<'s> {
        match self.exceeded(ctx.headers) {
            None => Outcome::Continue,
            Some(why) => Outcome::Reject(plain(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                Bytes::from(format!("431 Request Header Fields Too Large: {why}\n")),
            )),
        }
    }

    fn describe(&self) -> serde_json::Value {
        serde_json::to_value(&self.config).unwrap_or_default()
    }
}

/// `uaRestriction`: allow or deny by `User-Agent`.
///
/// Patterns are compiled once, anchored to the whole value and with a
/// size limit (see [`Pattern`]): a pattern that must match the whole
/// header cannot be satisfied by a client adding the expected text to an
/// agent of its own. A request without `User-Agent` is matched as the
/// empty string, so that leaving the header out does not escape a deny
/// list (`deny: [""]` refuses exactly those requests).
#[derive(Debug)]
pub struct UaRestrictionPlugin {
    config: UaRestriction,
    allow: Vec<Pattern>,
    deny: Vec<Pattern>,
    status: StatusCode,
    body: Bytes,
}

fn patterns(sources: &[String], field: &str) -> Result<Vec<Pattern>, ConfigError> {
    sources
        .iter()
        .enumerate()
        .map(|(i, s)| {
            Pattern::new(s).map_err(|e| {
                ConfigError::new(
                    format!("{field}[{i}]"),
                    format!("invalid regular expression {s:?}: {e}"),
                )
            })
        })
        .collect()
}

impl UaRestrictionPlugin {
    pub fn build(c: &UaRestriction, _env: &BuildEnv<'_>) -> Result<Arc<dyn Plugin>, ConfigError> {
        let field = "uaRestriction";
        if c.allow.is_empty() && c.deny.is_empty() {
            return Err(ConfigError::new(
                field,
                "set allow or deny (without either, every client passes)",
            ));
        }
        let status = rejected_status(c.rejected_code, &format!("{field}.rejectedCode"))?;
        Ok(Arc::new(UaRestrictionPlugin {
            allow: patterns(&c.allow, &format!("{field}.allow"))?,
            deny: patterns(&c.deny, &format!("{field}.deny"))?,
            status,
            body: Bytes::from(format!("{status}: user agent not allowed\n")),
            config: c.clone(),
        }))
    }

    /// Deny first; then, when there is an allow list, only what it matches.
    fn permits(&self, agent: &str) -> bool {
        !self.deny.iter().any(|p| p.is_match(agent))
            && (self.allow.is_empty() || self.allow.iter().any(|p| p.is_match(agent)))
    }
}

impl Plugin for UaRestrictionPlugin {
    fn name(&self) -> &'static str {
        "uaRestriction"
    }

    fn priority(&self) -> i32 {
        2999
    }

    fn request<'s>(&'s self, ctx: &mut RequestCtx<'_>) -> Outcome<'s> {
        let agent = ctx
            .headers
            .get(header::USER_AGENT)
            .map(|v| String::from_utf8_lossy(v.as_bytes()));
        if self.permits(agent.as_deref().unwrap_or("")) {
            Outcome::Continue
        } else {
            Outcome::Reject(plain(self.status, self.body.clone()))
        }
    }

    fn describe(&self) -> serde_json::Value {
        serde_json::to_value(&self.config).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn env_and<T>(f: impl FnOnce(&BuildEnv<'_>) -> T) -> T {
        let consumers = |_: &std::collections::BTreeMap<String, String>| Vec::new();
        f(&BuildEnv {
            namespace: "default",
            redis: None,
            secret: &|_, _| None,
            consumers: &consumers,
        })
    }

    #[test]
    fn content_length_is_read_strictly() {
        let cl = |v: &[&str]| {
            let pairs: Vec<_> = v.iter().map(|v| ("content-length", *v)).collect();
            declared_length(&headers(&pairs))
        };
        assert_eq!(cl(&[]), Declared::None);
        assert_eq!(cl(&["0"]), Declared::Length(0));
        assert_eq!(cl(&["42"]), Declared::Length(42));
        assert_eq!(cl(&["42, 42"]), Declared::Length(42));
        assert_eq!(cl(&["42", "42"]), Declared::Length(42));
        assert_eq!(cl(&["18446744073709551615"]), Declared::Length(u64::MAX));
        for bad in [
            &["42", "43"][..],
            &["42, 43"],
            &["-1"],
            &["+5"],
            &["4 2"],
            &["0x10"],
            &[""],
            &["42,"],
            &["18446744073709551616"],
        ] {
            assert_eq!(cl(bad), Declared::Malformed, "{bad:?}");
        }
    }

    #[test]
    fn header_limits_arithmetic() {
        let p = HeaderLimitsPlugin {
            config: HeaderLimits {
                max_count: Some(3),
                max_total_bytes: Some(20),
                max_value_bytes: Some(8),
            },
        };
        // "ab" + "12345678" = 10, twice = 20: at the limit, allowed.
        assert_eq!(
            p.exceeded(&headers(&[("ab", "12345678"), ("cd", "12345678")])),
            None
        );
        assert!(
            p.exceeded(&headers(&[("ab", "12345678"), ("cde", "12345678")]))
                .unwrap()
                .contains("together")
        );
        assert!(
            p.exceeded(&headers(&[("a", "123456789")]))
                .unwrap()
                .contains("value")
        );
        // Repeated headers count once per instance.
        assert!(
            p.exceeded(&headers(&[("a", "1"), ("a", "2"), ("a", "3"), ("a", "4")]))
                .unwrap()
                .contains("many")
        );
        assert_eq!(
            p.exceeded(&headers(&[("a", "1"), ("a", "2"), ("a", "3")])),
            None
        );
        let unlimited_count = HeaderLimitsPlugin {
            config: HeaderLimits {
                max_value_bytes: Some(1),
                ..Default::default()
            },
        };
        assert_eq!(unlimited_count.exceeded(&headers(&[("a", "1"); 50])), None);
    }

    #[test]
    fn header_limits_need_a_limit() {
        let e =
            env_and(|env| HeaderLimitsPlugin::build(&HeaderLimits::default(), env)).unwrap_err();
        assert_eq!(e.field, "headerLimits");
    }

    fn ua(c: UaRestriction) -> Result<Arc<dyn Plugin>, ConfigError> {
        env_and(|env| UaRestrictionPlugin::build(&c, env))
    }

    #[test]
    fn bad_patterns_name_their_index() {
        let e = ua(UaRestriction {
            deny: vec!["curl/.*".into(), "(unclosed".into()],
            ..Default::default()
        })
        .unwrap_err();
        assert_eq!(e.field, "uaRestriction.deny[1]");
        let e = ua(UaRestriction {
            allow: vec!["a{1000}{1000}".into()],
            ..Default::default()
        })
        .unwrap_err();
        assert_eq!(e.field, "uaRestriction.allow[0]");
        let e = ua(UaRestriction {
            deny: vec!["x".into()],
            rejected_code: Some(600),
            ..Default::default()
        })
        .unwrap_err();
        assert_eq!(e.field, "uaRestriction.rejectedCode");
        assert!(ua(UaRestriction::default()).is_err());
    }

    #[test]
    fn patterns_match_the_whole_agent_deny_first() {
        let p = UaRestrictionPlugin {
            allow: patterns(&["Mozilla/.*".into(), "curl/8\\..*".into()], "a").unwrap(),
            deny: patterns(&[".*Bot.*".into(), "".into()], "d").unwrap(),
            status: StatusCode::FORBIDDEN,
            body: Bytes::new(),
            config: UaRestriction::default(),
        };
        assert!(p.permits("Mozilla/5.0 (X11)"));
        assert!(p.permits("curl/8.5.0"));
        assert!(!p.permits("Mozilla/5.0 Bot"));
        // Anchored: the allowed text inside another agent is not enough.
        assert!(!p.permits("evil Mozilla/5.0"));
        assert!(!p.permits("curl/7.1"));
        // Missing (empty) agents hit the `""` deny entry.
        assert!(!p.permits(""));
        // A pattern cannot close the anchoring group and match anything.
        assert!(patterns(&["a)|(.*".into()], "d").is_err());
    }

    #[test]
    fn deny_only_lets_the_rest_pass() {
        let p = UaRestrictionPlugin {
            allow: Vec::new(),
            deny: patterns(&["sqlmap.*|nikto.*".into()], "d").unwrap(),
            status: StatusCode::FORBIDDEN,
            body: Bytes::new(),
            config: UaRestriction::default(),
        };
        assert!(!p.permits("sqlmap/1.0"));
        assert!(p.permits("Mozilla/5.0"));
        assert!(p.permits(""));
    }
}
