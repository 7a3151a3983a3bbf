//! `proxyRewrite` and `responseRewrite`: changes to the request the
//! upstream gets and to the response the client gets.
//!
//! Everything is compiled when the table is built (regular expressions,
//! replacement templates, header names and values), so a configuration
//! mistake becomes a diagnostic on the route rather than a surprise on
//! some later request. What a request can still get wrong, a rewrite that
//! turns its path into something no upstream should be sent, is answered
//! with `400`.
//!
//! The path is rewritten by exactly one of `uri` (a new path), `regexUri`
//! (the first match of a regular expression in the path is replaced;
//! anchor it with `^...$` to replace the whole path) or `stripPrefix`
//! (whole path segments, optionally followed by `replacePrefix`). The
//! client's query string is kept in every case.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use http::uri::PathAndQuery;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};

use super::respond::{
    GATEWAY_REQUEST_HEADERS, GATEWAY_RESPONSE_HEADERS, final_status, header_name, header_value,
    plain,
};
use crate::api::{HeaderEdits, ProxyRewrite, RegexReplace, ResponseRewrite};
use crate::plugins::{
    BuildEnv, ConfigError, Outcome, Plugin, RequestCtx, ResponseCtx, ResponseParts,
};

/// Compiled programs larger than this are refused: a route's pattern must
/// not be able to make every request expensive.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// Whether `target` can be sent as an origin-form request target. `#` is
/// refused outright because URI parsers would silently cut the target
/// there.
fn valid_target(target: &str) -> bool {
    target.starts_with('/') && !target.contains('#') && PathAndQuery::try_from(target).is_ok()
}

/// Whether `h` can be the upstream's `Host`: `name`, `name:port`,
/// `[v6]` or `[v6]:port`. Userinfo and paths are refused: they would make
/// the header mean something else to the upstream.
fn valid_host(h: &str) -> bool {
    let (name, port) = match h.strip_prefix('[') {
        Some(v6) => {
            let Some((addr, rest)) = v6.split_once(']') else {
                return false;
            };
            if addr.parse::<std::net::Ipv6Addr>().is_err()
                || !(rest.is_empty() || rest.starts_with(':'))
            {
                return false;
            }
            ("v6", rest.strip_prefix(':'))
        }
        None => match h.split_once(':') {
            Some((n, p)) => (n, Some(p)),
            None => (h, None),
        },
    };
    let name_ok = (1..=253).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
    let port_ok = port.is_none_or(|p| {
        !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) && p.parse::<u16>().is_ok()
    });
    name_ok && port_ok
}

/// Header edits, compiled. A name appears in at most one list, so the
/// order in which they are applied does not matter.
#[derive(Debug, Default)]
struct Edits {
    set: Vec<(HeaderName, HeaderValue)>,
    add: Vec<(HeaderName, HeaderValue)>,
    remove: Vec<HeaderName>,
}

impl Edits {
    fn new(e: &HeaderEdits, field: &str, reserved: &[&str]) -> Result<Edits, ConfigError> {
        let mut seen = foldhash::HashMap::<HeaderName, String>::default();
        let mut once = |name: &HeaderName, at: String| match seen.insert(name.clone(), at.clone()) {
            Some(first) => Err(ConfigError::new(
                at,
                format!("{name} is already edited by {first}; edit each header once"),
            )),
            None => Ok(()),
        };
        let mut pairs = |list: &str, map: &BTreeMap<String, String>| {
            let mut out = Vec::with_capacity(map.len());
            for (name, value) in map {
                let at = format!("{field}.{list}.{name}");
                let n = header_name(name, &at, reserved)?;
                let v = header_value(value, &at)?;
                once(&n, at)?;
                out.push((n, v));
            }
            Ok::<_, ConfigError>(out)
        };
        let mut out = Edits {
            set: pairs("set", &e.set)?,
            add: pairs("add", &e.add)?,
            remove: Vec::with_capacity(e.remove.len()),
        };
        for (i, name) in e.remove.iter().enumerate() {
            let at = format!("{field}.remove[{i}]");
            let n = header_name(name, &at, reserved)?;
            once(&n, at)?;
            out.remove.push(n);
        }
        Ok(out)
    }

    fn is_empty(&self) -> bool {
        self.set.is_empty() && self.add.is_empty() && self.remove.is_empty()
    }

    /// Records the edits for the upstream request. `add` has to combine
    /// with the current value itself because the upstream changes can
    /// only replace or remove a header.
    fn upstream(&self, ctx: &mut RequestCtx<'_>) {
        for name in &self.remove {
            ctx.upstream_headers.push((name.clone(), None));
        }
        for (name, value) in &self.set {
            ctx.upstream_headers
                .push((name.clone(), Some(value.clone())));
        }
        for (name, value) in &self.add {
            let combined = match current_value(ctx, name) {
                Some(mut existing) => {
                    existing.extend_from_slice(b", ");
                    existing.extend_from_slice(value.as_bytes());
                    HeaderValue::from_bytes(&existing).unwrap_or_else(|_| value.clone())
                }
                None => value.clone(),
            };
            ctx.upstream_headers.push((name.clone(), Some(combined)));
        }
    }

    fn response(&self, headers: &mut HeaderMap) {
        for name in &self.remove {
            headers.remove(name);
        }
        for (name, value) in &self.set {
            headers.insert(name.clone(), value.clone());
        }
        for (name, value) in &self.add {
            headers.append(name.clone(), value.clone());
        }
    }
}

/// The value the upstream would get for `name` so far: an earlier
/// plugin's change, else the client's values joined as one list.
fn current_value(ctx: &RequestCtx<'_>, name: &HeaderName) -> Option<Vec<u8>> {
    if let Some((_, changed)) = ctx.upstream_headers.iter().rev().find(|(n, _)| n == name) {
        return changed.as_ref().map(|v| v.as_bytes().to_vec());
    }
    let mut out = Vec::new();
    for v in ctx.headers.get_all(name).iter().filter(|v| !v.is_empty()) {
        if !out.is_empty() {
            out.extend_from_slice(b", ");
        }
        out.extend_from_slice(v.as_bytes());
    }
    (!out.is_empty()).then_some(out)
}

/// A piece of a `regexUri` replacement.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Group(usize),
}

/// Compiles a replacement against its pattern. Unlike the `regex` crate's
/// own expansion, which silently turns an unknown group into nothing,
/// every reference must name a group of the pattern; and `$1a` means
/// group 1 then `a` (as in nginx), not a group named `1a`.
fn template(
    replacement: &str,
    regex: &regex::Regex,
    field: &str,
) -> Result<Vec<Part>, ConfigError> {
    let mut parts = Vec::new();
    let mut text = String::new();
    let mut rest = replacement;
    while let Some(i) = rest.find('$') {
        text.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(r) = after.strip_prefix('$') {
            text.push('$');
            rest = r;
            continue;
        }
        let (name, r) = if let Some(inner) = after.strip_prefix('{') {
            let end = inner
                .find('}')
                .ok_or_else(|| ConfigError::new(field, "\"${\" is not closed by \"}\""))?;
            if end == 0 {
                return Err(ConfigError::new(field, "\"${}\" names no group"));
            }
            (&inner[..end], &inner[end + 1..])
        } else {
            let digits = after.starts_with(|c: char| c.is_ascii_digit());
            let len = after
                .find(|c: char| {
                    if digits {
                        !c.is_ascii_digit()
                    } else {
                        !(c.is_ascii_alphanumeric() || c == '_')
                    }
                })
                .unwrap_or(after.len());
            (&after[..len], &after[len..])
        };
        if name.is_empty() {
            // A `$` that starts no reference is just a dollar sign.
            text.push('$');
            rest = after;
            continue;
        }
        let index = if name.bytes().all(|b| b.is_ascii_digit()) {
            name.parse::<usize>()
                .ok()
                .filter(|&n| n < regex.captures_len())
        } else {
            regex.capture_names().position(|n| n == Some(name))
        };
        let index = index.ok_or_else(|| {
            ConfigError::new(
                field,
                format!(
                    "${name} names no group of the pattern (it has {} numbered groups)",
                    regex.captures_len().saturating_sub(1)
                ),
            )
        })?;
        if !text.is_empty() {
            parts.push(Part::Text(std::mem::take(&mut text)));
        }
        parts.push(Part::Group(index));
        rest = r;
    }
    text.push_str(rest);
    if !text.is_empty() {
        parts.push(Part::Text(text));
    }
    for part in &parts {
        if let Part::Text(t) = part
            && t.bytes().any(|b| b <= b' ' || b == 0x7f || b == b'#')
        {
            return Err(ConfigError::new(
                field,
                "spaces, control characters and '#' cannot appear in a path",
            ));
        }
    }
    Ok(parts)
}

/// How the path is rewritten.
#[derive(Debug)]
enum PathRewrite {
    Keep,
    Literal(String),
    Regex {
        regex: regex::Regex,
        parts: Vec<Part>,
    },
    /// Both without a trailing `/`; `strip` is never empty.
    Prefix {
        strip: String,
        replace: String,
    },
}

impl PathRewrite {
    fn new(c: &ProxyRewrite, field: &str) -> Result<PathRewrite, ConfigError> {
        let modes = [
            c.uri.is_some(),
            c.regex_uri.is_some(),
            c.strip_prefix.is_some(),
        ];
        if modes.iter().filter(|m| **m).count() > 1 {
            return Err(ConfigError::new(
                field,
                "uri, regexUri and stripPrefix are alternatives: set only one",
            ));
        }
        if c.replace_prefix.is_some() && c.strip_prefix.is_none() {
            return Err(ConfigError::new(
                format!("{field}.replacePrefix"),
                "replacePrefix needs stripPrefix",
            ));
        }
        if let Some(uri) = &c.uri {
            let at = format!("{field}.uri");
            if !valid_target(uri) || uri.contains('?') {
                return Err(ConfigError::new(
                    at,
                    format!("{uri:?} is not a path (it must start with '/', without query)"),
                ));
            }
            return Ok(PathRewrite::Literal(uri.clone()));
        }
        if let Some(r) = &c.regex_uri {
            return regex_rewrite(r, &format!("{field}.regexUri"));
        }
        if let Some(strip) = &c.strip_prefix {
            let prefix = |value: &str, at: String| {
                if valid_target(value) && !value.contains('?') {
                    Ok(value.trim_end_matches('/').to_owned())
                } else {
                    Err(ConfigError::new(
                        at,
                        format!("{value:?} is not a path prefix (it must start with '/')"),
                    ))
                }
            };
            let strip = prefix(strip, format!("{field}.stripPrefix"))?;
            if strip.is_empty() {
                return Err(ConfigError::new(
                    format!("{field}.stripPrefix"),
                    "stripping \"/\" changes nothing; name at least one segment",
                ));
            }
            let replace = match &c.replace_prefix {
                Some(r) => prefix(r, format!("{field}.replacePrefix"))?,
                None => String::new(),
            };
            return Ok(PathRewrite::Prefix { strip, replace });
        }
        Ok(PathRewrite::Keep)
    }

    /// The new path, or `None` when this request's path stays as it is.
    fn apply<'p>(&'p self, path: &str) -> Option<Cow<'p, str>> {
        match self {
            PathRewrite::Keep => None,
            PathRewrite::Literal(p) => Some(Cow::Borrowed(p)),
            PathRewrite::Regex { regex, parts } => {
                let caps = regex.captures(path)?;
                let whole = caps.get(0)?;
                let mut out = String::with_capacity(path.len() + 16);
                out.push_str(&path[..whole.start()]);
                for part in parts {
                    match part {
                        Part::Text(t) => out.push_str(t),
                        Part::Group(i) => out.push_str(caps.get(*i).map_or("", |m| m.as_str())),
                    }
                }
                out.push_str(&path[whole.end()..]);
                Some(Cow::Owned(out))
            }
            PathRewrite::Prefix { strip, replace } => {
                let rest = strip_segments(path, strip)?;
                let mut out = String::with_capacity(replace.len() + rest.len() + 1);
                out.push_str(replace);
                out.push_str(rest);
                if out.is_empty() {
                    out.push('/');
                }
                Some(Cow::Owned(out))
            }
        }
    }
}

/// `path` without `prefix` when the prefix ends at a segment boundary:
/// `/api` covers `/api` and `/api/x` but not `/apix`.
fn strip_segments<'p>(path: &'p str, prefix: &str) -> Option<&'p str> {
    let rest = path.strip_prefix(prefix)?;
    (rest.is_empty() || rest.starts_with('/')).then_some(rest)
}

fn regex_rewrite(r: &RegexReplace, field: &str) -> Result<PathRewrite, ConfigError> {
    let at = format!("{field}.pattern");
    if r.pattern.is_empty() {
        return Err(ConfigError::new(at, "the pattern is empty"));
    }
    let regex = regex::RegexBuilder::new(&r.pattern)
        .size_limit(REGEX_SIZE_LIMIT)
        .dfa_size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|e| match e {
            regex::Error::CompiledTooBig(limit) => ConfigError::new(
                at,
                format!("the pattern compiles to more than {limit} bytes"),
            ),
            other => ConfigError::new(at, other.to_string().replace('\n', " ")),
        })?;
    let parts = template(&r.replacement, &regex, &format!("{field}.replacement"))?;
    Ok(PathRewrite::Regex { regex, parts })
}

/// `proxyRewrite`: the path, `Host` and headers the upstream gets.
#[derive(Debug)]
pub struct ProxyRewritePlugin {
    config: ProxyRewrite,
    path: PathRewrite,
    host: Option<HeaderValue>,
    headers: Edits,
}

impl ProxyRewritePlugin {
    pub fn build(c: &ProxyRewrite, _env: &BuildEnv<'_>) -> Result<Arc<dyn Plugin>, ConfigError> {
        let field = "proxyRewrite";
        let path = PathRewrite::new(c, field)?;
        let host = match &c.host {
            Some(h) if valid_host(h) => Some(header_value(h, &format!("{field}.host"))?),
            Some(h) => {
                return Err(ConfigError::new(
                    format!("{field}.host"),
                    format!("{h:?} is not a host name or address, with an optional port"),
                ));
            }
            None => None,
        };
        let headers = match &c.headers {
            Some(e) => Edits::new(e, &format!("{field}.headers"), &GATEWAY_REQUEST_HEADERS)?,
            None => Edits::default(),
        };
        if matches!(path, PathRewrite::Keep) && host.is_none() && headers.is_empty() {
            return Err(ConfigError::new(
                field,
                "nothing to rewrite: set uri, regexUri, stripPrefix, host or headers",
            ));
        }
        Ok(Arc::new(ProxyRewritePlugin {
            config: c.clone(),
            path,
            host,
            headers,
        }))
    }
}

impl Plugin for ProxyRewritePlugin {
    fn name(&self) -> &'static str {
        "proxyRewrite"
    }

    fn priority(&self) -> i32 {
        1008
    }

    fn request<'s>(&'s self, ctx: &mut RequestCtx<'_>) -> Outcome<'s> {
        if let Some(path) = self.path.apply(ctx.path) {
            let target = match ctx.query {
                // A rewritten path may bring a query of its own.
                Some(q) if path.contains('?') => format!("{path}&{q}"),
                Some(q) => format!("{path}?{q}"),
                None => path.into_owned(),
            };
            if !valid_target(&target) {
                return Outcome::Reject(plain(
                    StatusCode::BAD_REQUEST,
                    "Bad Request: the rewritten path is not a valid path",
                ));
            }
            ctx.rewrite_path = Some(target);
        }
        if let Some(h) = &self.host {
            ctx.rewrite_host = Some(h.clone());
        }
        self.headers.upstream(ctx);
        Outcome::Continue
    }

    fn describe(&self) -> serde_json::Value {
        serde_json::to_value(&self.config).unwrap_or_default()
    }
}

/// `responseRewrite`: the status, headers and body the client gets.
#[derive(Debug)]
pub struct ResponseRewritePlugin {
    config: ResponseRewrite,
    status: Option<StatusCode>,
    headers: Edits,
    body: Option<Bytes>,
}

impl ResponseRewritePlugin {
    pub fn build(c: &ResponseRewrite, _env: &BuildEnv<'_>) -> Result<Arc<dyn Plugin>, ConfigError> {
        let field = "responseRewrite";
        let status = c
            .status_code
            .map(|code| final_status(code, &format!("{field}.statusCode")))
            .transpose()?;
        let headers = match &c.headers {
            Some(e) => Edits::new(e, &format!("{field}.headers"), &GATEWAY_RESPONSE_HEADERS)?,
            None => Edits::default(),
        };
        let body = c.body.clone().map(Bytes::from);
        if status.is_none() && headers.is_empty() && body.is_none() {
            return Err(ConfigError::new(
                field,
                "nothing to rewrite: set statusCode, headers or body",
            ));
        }
        Ok(Arc::new(ResponseRewritePlugin {
            config: c.clone(),
            status,
            headers,
            body,
        }))
    }
}

impl Plugin for ResponseRewritePlugin {
    fn name(&self) -> &'static str {
        "responseRewrite"
    }

    fn priority(&self) -> i32 {
        899
    }

    fn request<'s>(&'s self, _ctx: &mut RequestCtx<'_>) -> Outcome<'s> {
        Outcome::Continue
    }

    fn has_response_phase(&self) -> bool {
        true
    }

    fn response(&self, _ctx: &ResponseCtx<'_>, resp: &mut ResponseParts) {
        // A protocol switch (WebSocket) is not a response to rewrite: a
        // different status or body would break the connection it opens.
        if resp.status == StatusCode::SWITCHING_PROTOCOLS {
            return;
        }
        if let Some(s) = self.status {
            resp.status = s;
        }
        self.headers.response(&mut resp.headers);
        if let Some(b) = &self.body {
            resp.body = Some(b.clone());
        }
    }

    fn describe(&self) -> serde_json::Value {
        serde_json::to_value(&self.config).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_build<T>(f: impl FnOnce(&BuildEnv<'_>) -> T) -> T {
        let secret = |_: &str, _: &str| None;
        let consumers = |_: &std::collections::BTreeMap<String, String>| Vec::new();
        f(&BuildEnv {
            namespace: "default",
            redis: None,
            secret: &secret,
            consumers: &consumers,
        })
    }

    fn regex(pattern: &str, replacement: &str) -> Result<PathRewrite, ConfigError> {
        regex_rewrite(
            &RegexReplace {
                pattern: pattern.into(),
                replacement: replacement.into(),
            },
            "proxyRewrite.regexUri",
        )
    }

    fn apply(r: &PathRewrite, path: &str) -> Option<String> {
        r.apply(path).map(Cow::into_owned)
    }

    #[test]
    fn regex_captures_numbered_and_named() {
        let r = regex(r"^/api/v(\d+)/(.*)", "/v$1/$2").unwrap();
        assert_eq!(apply(&r, "/api/v2/users/7").as_deref(), Some("/v2/users/7"));
        assert_eq!(apply(&r, "/other"), None);
        let r = regex(r"^/u/(?P<id>\d+)$", "/users/${id}/profile").unwrap();
        assert_eq!(apply(&r, "/u/42").as_deref(), Some("/users/42/profile"));
        // `$1a` is group 1 then `a`; `$$` is a dollar sign.
        let r = regex(r"^/(\w+)$", "/$1a/$$/${1}b").unwrap();
        assert_eq!(apply(&r, "/x").as_deref(), Some("/xa/$/xb"));
        // Only the match is replaced; the rest of the path is kept.
        let r = regex("old", "new").unwrap();
        assert_eq!(apply(&r, "/a/old/b").as_deref(), Some("/a/new/b"));
        // A group that did not take part expands to nothing.
        let r = regex(r"^/a(/x)?(/.*)$", "$2$1").unwrap();
        assert_eq!(apply(&r, "/a/y").as_deref(), Some("/y"));
    }

    #[test]
    fn regex_settings_are_checked() {
        let err = |p: &str, r: &str| regex(p, r).err().map(|e| (e.field, e.message));
        let (field, _) = err("(", "/").unwrap();
        assert_eq!(field, "proxyRewrite.regexUri.pattern");
        let (field, message) = err("^/(a)$", "/$2").unwrap();
        assert_eq!(field, "proxyRewrite.regexUri.replacement");
        assert!(message.contains("$2"), "{message}");
        assert!(err("^/(a)$", "/${nope}").is_some());
        assert!(err("^/(a)$", "/${1").is_some());
        assert!(err("^/(a)$", "/${}").is_some());
        assert!(err("^/(a)$", "/a b").is_some());
        assert!(err("^/(a)$", "/a#b").is_some());
        assert!(err(r"\w{1000}\w{1000}\w{1000}", "/").is_some());
        // A `$` starting no reference is literal.
        assert_eq!(
            apply(&regex("^/p$", "/a$-b").unwrap(), "/p").as_deref(),
            Some("/a$-b")
        );
    }

    fn prefix(strip: &str, replace: Option<&str>) -> Result<PathRewrite, ConfigError> {
        PathRewrite::new(
            &ProxyRewrite {
                strip_prefix: Some(strip.into()),
                replace_prefix: replace.map(Into::into),
                ..ProxyRewrite::default()
            },
            "proxyRewrite",
        )
    }

    #[test]
    fn prefixes_are_stripped_by_whole_segments() {
        let r = prefix("/api", None).unwrap();
        assert_eq!(apply(&r, "/api").as_deref(), Some("/"));
        assert_eq!(apply(&r, "/api/").as_deref(), Some("/"));
        assert_eq!(apply(&r, "/api/x/y").as_deref(), Some("/x/y"));
        assert_eq!(apply(&r, "/apix"), None);
        assert_eq!(apply(&r, "/other/api"), None);
        // A trailing slash in the setting changes nothing.
        let r = prefix("/api/", Some("/v2/")).unwrap();
        assert_eq!(apply(&r, "/api").as_deref(), Some("/v2"));
        assert_eq!(apply(&r, "/api/x").as_deref(), Some("/v2/x"));
        assert_eq!(apply(&r, "/apix"), None);
        let r = prefix("/a/b", Some("/")).unwrap();
        assert_eq!(apply(&r, "/a/b/c").as_deref(), Some("/c"));
        assert_eq!(apply(&r, "/a/b").as_deref(), Some("/"));
        assert!(prefix("/", None).is_err());
        assert!(prefix("api", None).is_err());
        assert!(prefix("/api", Some("v2")).is_err());
    }

    #[test]
    fn modes_are_exclusive_and_something_must_change() {
        let field = |c: ProxyRewrite| {
            env_build(|env| ProxyRewritePlugin::build(&c, env))
                .err()
                .map(|e| e.field)
        };
        let (uri, host) = (|u: &str| Some(u.to_owned()), |h: &str| Some(h.to_owned()));
        let two = ProxyRewrite {
            uri: uri("/a"),
            strip_prefix: uri("/b"),
            ..Default::default()
        };
        assert_eq!(field(two).as_deref(), Some("proxyRewrite"));
        assert_eq!(
            field(ProxyRewrite::default()).as_deref(),
            Some("proxyRewrite")
        );
        let lone = ProxyRewrite {
            replace_prefix: uri("/x"),
            host: host("a"),
            ..Default::default()
        };
        assert_eq!(field(lone).as_deref(), Some("proxyRewrite.replacePrefix"));
        for bad in [
            "",
            "a b",
            "user@host",
            "h/x",
            "h:port",
            "h:+1",
            "[::1",
            "[zz]",
        ] {
            let c = ProxyRewrite {
                host: host(bad),
                ..Default::default()
            };
            assert_eq!(field(c).as_deref(), Some("proxyRewrite.host"), "{bad}");
        }
        for good in ["internal.svc:8080", "10.0.0.1", "[::1]:80", "[::1]"] {
            let c = ProxyRewrite {
                host: host(good),
                ..Default::default()
            };
            assert_eq!(field(c), None, "{good}");
        }
        for bad in ["relative", "/a b", "/a?b", "/a\n"] {
            let c = ProxyRewrite {
                uri: uri(bad),
                ..Default::default()
            };
            assert_eq!(field(c).as_deref(), Some("proxyRewrite.uri"), "{bad}");
        }
    }

    #[test]
    fn header_edits_are_checked() {
        let pairs = |l: &[(&str, &str)]| {
            l.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let edits = |set: &[(&str, &str)], add: &[(&str, &str)], remove: &[&str]| {
            let remove = remove.iter().map(|s| s.to_string()).collect();
            let e = HeaderEdits {
                set: pairs(set),
                add: pairs(add),
                remove,
            };
            Edits::new(&e, "h", &GATEWAY_REQUEST_HEADERS).map_err(|e| e.field)
        };
        assert!(edits(&[("x-a", "1")], &[("x-b", "2")], &["x-c"]).is_ok());
        assert_eq!(
            edits(&[("bad name", "1")], &[], &[]).unwrap_err(),
            "h.set.bad name"
        );
        assert_eq!(
            edits(&[], &[("x-a", "a\nb")], &[]).unwrap_err(),
            "h.add.x-a"
        );
        assert_eq!(edits(&[], &[], &["Host"]).unwrap_err(), "h.remove[0]");
        assert!(edits(&[("content-length", "1")], &[], &[]).is_err());
        // One header, two edits: ambiguous.
        assert_eq!(
            edits(&[("X-A", "1")], &[], &["x-a"]).unwrap_err(),
            "h.remove[0]"
        );
        assert!(edits(&[("X-A", "1"), ("x-a", "2")], &[], &[]).is_err());
    }

    #[test]
    fn targets_are_checked() {
        assert!(valid_target("/a/b?c=d"));
        assert!(valid_target("/caf\u{e9}"));
        for bad in ["", "a", "/a b", "/a\r\nb", "/a#b", "/a<b"] {
            assert!(!valid_target(bad), "{bad:?}");
        }
    }

    #[test]
    fn response_statuses_must_be_final() {
        let build = |code| {
            let c = ResponseRewrite {
                status_code: Some(code),
                ..ResponseRewrite::default()
            };
            env_build(|env| ResponseRewritePlugin::build(&c, env)).is_ok()
        };
        assert!(build(201));
        assert!(!build(101));
        assert!(!build(600));
        let empty = ResponseRewrite::default();
        assert!(env_build(|env| ResponseRewritePlugin::build(&empty, env)).is_err());
    }
}
