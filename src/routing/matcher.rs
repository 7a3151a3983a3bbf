//! Per-request condition checks: methods, headers, query parameters,
//! cookies, and the normalization of hosts and paths that matching relies
//! on.

use std::borrow::Cow;

use http::{HeaderMap, HeaderName, Method};

use super::spec::{ValueMatcher, ValueSpec};

/// What the router looks at in a request. Borrowed from the request, so
/// building one does not allocate.
#[derive(Clone, Copy, Debug)]
pub struct RequestView<'a> {
    /// Lower case, without port.
    pub host: &'a str,
    /// Normalized (see [`normalize_path`]), without the query.
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub method: &'a Method,
    pub headers: &'a HeaderMap,
    /// The local port the request arrived on, which selects the Gateway
    /// listeners that may serve it; 0 when unknown (the proxy's own
    /// listeners only).
    pub port: u16,
}

/// A compiled header condition.
#[derive(Debug)]
pub(crate) struct HeaderCond {
    /// `None` for a name no request can carry: the condition then never
    /// holds, so a route is never widened by dropping a condition.
    name: Option<HeaderName>,
    matcher: ValueMatcher,
}

impl HeaderCond {
    pub(crate) fn new(spec: &ValueSpec) -> Self {
        HeaderCond {
            name: HeaderName::from_bytes(spec.name.as_bytes()).ok(),
            matcher: spec.matcher.clone(),
        }
    }

    /// The condition as text.
    pub(crate) fn describe(&self) -> String {
        match &self.name {
            Some(n) => describe(n.as_str(), &self.matcher),
            None => "with an unusable name never matches".to_owned(),
        }
    }

    /// True when any value of the header satisfies the condition. Values
    /// compare as UTF-8 text.
    pub(crate) fn matches(&self, headers: &HeaderMap) -> bool {
        let Some(name) = &self.name else { return false };
        let mut values = headers.get_all(name).iter().peekable();
        match &self.matcher {
            ValueMatcher::Present => values.peek().is_some(),
            m => {
                values.any(|v| std::str::from_utf8(v.as_bytes()).is_ok_and(|v| value_matches(m, v)))
            }
        }
    }
}

/// A compiled query parameter condition.
#[derive(Debug)]
pub(crate) struct QueryCond {
    name: String,
    matcher: ValueMatcher,
}

impl QueryCond {
    pub(crate) fn new(spec: &ValueSpec) -> Self {
        QueryCond {
            name: spec.name.clone(),
            matcher: spec.matcher.clone(),
        }
    }

    /// The condition as text.
    pub(crate) fn describe(&self) -> String {
        describe(&self.name, &self.matcher)
    }

    /// True when any occurrence of the parameter satisfies the condition.
    pub(crate) fn matches(&self, query: Option<&str>) -> bool {
        let Some(query) = query else { return false };
        query.split('&').any(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            form_decode(k) == self.name.as_str()
                && match &self.matcher {
                    ValueMatcher::Present => true,
                    m => value_matches(m, &form_decode(v)),
                }
        })
    }
}

/// A compiled cookie condition.
///
/// Cookies are read from every `Cookie` header field: HTTP/1.1 clients send
/// one field of `; `-separated `name=value` pairs, HTTP/2 clients may send
/// each cookie in a field of its own (RFC 9113, section 8.2.3). Names
/// compare case-sensitively (RFC 6265); values compare as sent, quotes
/// included, as UTF-8 text. Checking a request allocates nothing.
#[derive(Debug)]
pub(crate) struct CookieCond {
    name: Box<str>,
    matcher: ValueMatcher,
}

impl CookieCond {
    pub(crate) fn new(spec: &ValueSpec) -> Self {
        CookieCond {
            name: spec.name.as_str().into(),
            matcher: spec.matcher.clone(),
        }
    }

    /// The condition as text.
    pub(crate) fn describe(&self) -> String {
        describe(&self.name, &self.matcher)
    }

    /// True when any occurrence of the cookie satisfies the condition.
    pub(crate) fn matches(&self, headers: &HeaderMap) -> bool {
        let name = self.name.as_bytes();
        headers.get_all(http::header::COOKIE).iter().any(|field| {
            cookie_values(field.as_bytes(), name).any(|value| match &self.matcher {
                ValueMatcher::Present => true,
                m => std::str::from_utf8(value).is_ok_and(|v| value_matches(m, v)),
            })
        })
    }
}

/// The values of cookie `name` in one `Cookie` field. A pair without `=`
/// has no name, so it is never the value of a named cookie.
fn cookie_values<'a>(field: &'a [u8], name: &'a [u8]) -> impl Iterator<Item = &'a [u8]> + 'a {
    field.split(|&b| b == b';').filter_map(move |pair| {
        let eq = pair.iter().position(|&b| b == b'=')?;
        let (k, v) = (&pair[..eq], &pair[eq + 1..]);
        (!name.is_empty() && k.trim_ascii() == name).then(|| v.trim_ascii())
    })
}

/// `name` and what its value must be, for explanations.
fn describe(name: &str, m: &ValueMatcher) -> String {
    match m {
        ValueMatcher::Exact(v) => format!("{name} must be {v:?}"),
        ValueMatcher::RegularExpression(p) => {
            format!("{name} must match the regular expression {:?}", p.as_str())
        }
        ValueMatcher::Present => format!("{name} must be present"),
    }
}

fn value_matches(m: &ValueMatcher, value: &str) -> bool {
    match m {
        ValueMatcher::Exact(want) => value == want,
        ValueMatcher::RegularExpression(p) => p.is_match(value),
        ValueMatcher::Present => true,
    }
}

/// Decodes `application/x-www-form-urlencoded` text (`+` is a space,
/// `%XX` a byte; malformed escapes stay literal), allocating only when it
/// holds an escape.
pub fn form_decode(s: &str) -> Cow<'_, str> {
    if !s.bytes().any(|b| b == b'%' || b == b'+') {
        return Cow::Borrowed(s);
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Lower-cases a host and strips its port, using `buf` when lower-casing
/// is needed so that the common (already lower case) host costs nothing.
/// Returns `None` for a host that no route could name: too long, or with
/// characters outside DNS names and IP literals.
pub fn normalize_host<'a>(host: &'a str, buf: &'a mut [u8; 256]) -> Option<&'a str> {
    let host = strip_port(host);
    let host = host.strip_suffix('.').unwrap_or(host);
    let n = host.len();
    if n > buf.len()
        || !host.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'[' | b']' | b':')
        })
    {
        return None;
    }
    if !host.bytes().any(|b| b.is_ascii_uppercase()) {
        return Some(host);
    }
    buf[..n].copy_from_slice(host.as_bytes());
    buf[..n].make_ascii_lowercase();
    std::str::from_utf8(&buf[..n]).ok()
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        // IPv6 literal: keep up to and including the closing bracket.
        return host.find(']').map_or(host, |i| &host[..=i]);
    }
    match host.rfind(':') {
        Some(i) if host[i + 1..].bytes().all(|b| b.is_ascii_digit()) => &host[..i],
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::Pattern;

    #[test]
    fn normalizes_hosts() {
        let mut buf = [0u8; 256];
        assert_eq!(normalize_host("example.com", &mut buf), Some("example.com"));
        let mut buf = [0u8; 256];
        assert_eq!(
            normalize_host("Example.COM:8080", &mut buf),
            Some("example.com")
        );
        let mut buf = [0u8; 256];
        assert_eq!(
            normalize_host("example.com.", &mut buf),
            Some("example.com")
        );
        let mut buf = [0u8; 256];
        assert_eq!(normalize_host("[::1]:80", &mut buf), Some("[::1]"));
        let mut buf = [0u8; 256];
        let long = "a".repeat(300);
        assert_eq!(normalize_host(&long, &mut buf), None);
        let mut buf = [0u8; 256];
        assert_eq!(normalize_host("bad host", &mut buf), None);
        let mut buf = [0u8; 256];
        assert_eq!(normalize_host("", &mut buf), Some(""));
    }

    #[test]
    fn header_conditions() {
        let mut h = HeaderMap::new();
        h.append("x-canary", "0".parse().unwrap());
        h.append("x-canary", "1".parse().unwrap());
        let spec = |m| ValueSpec {
            name: "x-canary".into(),
            matcher: m,
        };
        assert!(HeaderCond::new(&spec(ValueMatcher::Exact("1".into()))).matches(&h));
        assert!(!HeaderCond::new(&spec(ValueMatcher::Exact("2".into()))).matches(&h));
        assert!(HeaderCond::new(&spec(ValueMatcher::Present)).matches(&h));
        let re = ValueMatcher::RegularExpression(Pattern::new("[0-9]").unwrap());
        assert!(HeaderCond::new(&spec(re)).matches(&h));
        assert!(!HeaderCond::new(&spec(ValueMatcher::Present)).matches(&HeaderMap::new()));
    }

    #[test]
    fn unusable_header_names_never_match_and_values_compare_as_utf8() {
        let mut h = HeaderMap::new();
        h.insert(
            "x-canary",
            http::HeaderValue::from_bytes("été".as_bytes()).unwrap(),
        );
        let bad = ValueSpec {
            name: "bad name".into(),
            matcher: ValueMatcher::Present,
        };
        assert!(!HeaderCond::new(&bad).matches(&h));
        let exact = ValueSpec {
            name: "x-canary".into(),
            matcher: ValueMatcher::Exact("été".into()),
        };
        assert!(HeaderCond::new(&exact).matches(&h));
    }

    #[test]
    fn query_conditions() {
        let spec = |name: &str, m| ValueSpec {
            name: name.into(),
            matcher: m,
        };
        let v2 = QueryCond::new(&spec("v", ValueMatcher::Exact("2".into())));
        assert!(v2.matches(Some("a=1&v=2")));
        assert!(!v2.matches(Some("v=3")));
        assert!(!v2.matches(None));
        let sp = QueryCond::new(&spec("q", ValueMatcher::Exact("a b/c".into())));
        assert!(sp.matches(Some("q=a+b%2Fc")));
        let present = QueryCond::new(&spec("debug", ValueMatcher::Present));
        assert!(present.matches(Some("debug")));
        assert!(present.matches(Some("x=1&debug=")));
        assert!(!present.matches(Some("debugx=1")));
    }

    fn cookie(name: &str, m: ValueMatcher) -> CookieCond {
        CookieCond::new(&ValueSpec {
            name: name.into(),
            matcher: m,
        })
    }

    fn cookies(fields: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for f in fields {
            h.append(http::header::COOKIE, f.parse().unwrap());
        }
        h
    }

    #[test]
    fn cookie_conditions_read_pairs_of_one_field() {
        let h = cookies(&["session=abc; canary=always;theme=dark"]);
        assert!(cookie("canary", ValueMatcher::Exact("always".into())).matches(&h));
        assert!(cookie("theme", ValueMatcher::Exact("dark".into())).matches(&h));
        assert!(cookie("session", ValueMatcher::Exact("abc".into())).matches(&h));
        assert!(!cookie("canary", ValueMatcher::Exact("never".into())).matches(&h));
        assert!(cookie("canary", ValueMatcher::Present).matches(&h));
        assert!(!cookie("missing", ValueMatcher::Present).matches(&h));
        let re = ValueMatcher::RegularExpression(Pattern::new("al(ways|t)").unwrap());
        assert!(cookie("canary", re).matches(&h));
    }

    #[test]
    fn cookie_conditions_read_every_field() {
        // HTTP/2 clients may send each cookie in a field of its own.
        let h = cookies(&["a=1", "canary=always", "b=2; c=3"]);
        assert!(cookie("canary", ValueMatcher::Exact("always".into())).matches(&h));
        assert!(cookie("c", ValueMatcher::Exact("3".into())).matches(&h));
        assert!(!cookie("d", ValueMatcher::Present).matches(&h));
        assert!(!cookie("canary", ValueMatcher::Present).matches(&HeaderMap::new()));
    }

    #[test]
    fn cookie_names_are_whole_and_case_sensitive() {
        let h = cookies(&["xcanary=always; canaryx=always; Canary=always"]);
        assert!(!cookie("canary", ValueMatcher::Present).matches(&h));
        assert!(cookie("Canary", ValueMatcher::Present).matches(&h));
        // A value holding `=` is kept whole; the name is what precedes the
        // first `=`.
        let h = cookies(&["token=a=b"]);
        assert!(cookie("token", ValueMatcher::Exact("a=b".into())).matches(&h));
        assert!(!cookie("a", ValueMatcher::Present).matches(&h));
    }

    #[test]
    fn cookie_pairs_tolerate_odd_spacing_and_empty_parts() {
        let h = cookies(&[";  canary = always ;;flag; empty="]);
        assert!(cookie("canary", ValueMatcher::Exact("always".into())).matches(&h));
        // A pair without `=` has no name.
        assert!(!cookie("flag", ValueMatcher::Present).matches(&h));
        assert!(cookie("empty", ValueMatcher::Exact(String::new())).matches(&h));
        assert!(cookie("empty", ValueMatcher::Present).matches(&h));
        assert!(!cookie("", ValueMatcher::Present).matches(&cookies(&["=x"])));
    }

    #[test]
    fn cookie_values_compare_as_sent_and_as_utf8() {
        let h = cookies(&["q=\"always\""]);
        assert!(!cookie("q", ValueMatcher::Exact("always".into())).matches(&h));
        assert!(cookie("q", ValueMatcher::Exact("\"always\"".into())).matches(&h));
        let mut h = HeaderMap::new();
        h.insert(
            http::header::COOKIE,
            http::HeaderValue::from_bytes(b"bad=\xff; good=\xc3\xa9t\xc3\xa9").unwrap(),
        );
        assert!(!cookie("bad", ValueMatcher::Exact("\u{fffd}".into())).matches(&h));
        assert!(cookie("bad", ValueMatcher::Present).matches(&h));
        assert!(cookie("good", ValueMatcher::Exact("été".into())).matches(&h));
    }

    #[test]
    fn decode_handles_bad_escapes() {
        assert_eq!(form_decode("%"), "%");
        assert_eq!(form_decode("%4"), "%4");
        assert_eq!(form_decode("%zz"), "%zz");
        assert_eq!(form_decode("%41"), "A");
        assert_eq!(form_decode("%ff"), "\u{fffd}");
    }
}
