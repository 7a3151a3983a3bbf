//! Field checks shared by every object kind.

use std::net::IpAddr;

use crate::routing::{HostMatch, Pattern};

/// A host outside the cluster that a backend sends traffic to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UpstreamHost {
    /// An address: the endpoint itself, no DNS needed.
    Ip(IpAddr),
    /// A DNS name in lower case, with its trailing `.` if written (an
    /// absolute name, which skips the resolver's search domains).
    Name(String),
}

impl UpstreamHost {
    /// The host as keys and TLS server names write it.
    pub fn text(&self) -> String {
        match self {
            UpstreamHost::Ip(ip) => ip.to_string(),
            UpstreamHost::Name(n) => n.clone(),
        }
    }
}

/// Parses a host outside the cluster: an IP address (IPv6 with or without
/// brackets) or a DNS name.
pub fn upstream_host(raw: &str) -> Result<UpstreamHost, String> {
    let unbracketed = raw
        .strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .unwrap_or(raw);
    if let Ok(ip) = unbracketed.parse::<IpAddr>() {
        return Ok(UpstreamHost::Ip(ip));
    }
    let name = raw.strip_suffix('.').unwrap_or(raw);
    dns_name(name).map_err(|why| {
        let why = if name.contains(':') {
            "a port is not part of the host; give it as the backend's port"
        } else if name.contains('*') {
            "wildcards cannot be resolved"
        } else if why.starts_with("only letters") {
            "only letters, digits, '-' and '.' are allowed"
        } else {
            why
        };
        format!("{raw:?} is not an IP address or DNS name: {why}")
    })?;
    Ok(UpstreamHost::Name(raw.to_ascii_lowercase()))
}

/// Parses a host condition: an exact DNS name or `*.` followed by one.
/// Hosts compare case-insensitively, so they are stored in lower case.
pub fn host(raw: &str) -> Result<HostMatch, String> {
    // Lower-casing changes neither the `*.` prefix nor which names are
    // valid, so the name is checked as written and lower-cased once.
    let (wildcard, name) = match raw.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, raw),
    };
    dns_name(name).map_err(|why| format!("invalid host {raw:?}: {why}"))?;
    let name = name.to_ascii_lowercase();
    Ok(if wildcard {
        HostMatch::Wildcard(name)
    } else {
        HostMatch::Exact(name)
    })
}

fn dns_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("empty name");
    }
    if name.len() > 253 {
        return Err("longer than 253 characters");
    }
    for label in name.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err("each label must be 1-63 characters");
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(
                "only letters, digits, '-' and '.' are allowed (a wildcard must be the whole first label)",
            );
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err("a label must not start or end with '-'");
        }
    }
    Ok(())
}

/// Checks a literal (Exact or Prefix) path.
pub fn literal_path(path: &str) -> Result<(), String> {
    if !path.starts_with('/') {
        return Err(format!("path {path:?} must start with '/'"));
    }
    // Printable ASCII other than `?` and `#` is neither a control character
    // nor whitespace, so the search below could only find nothing.
    if path
        .bytes()
        .all(|b| b.is_ascii_graphic() && b != b'?' && b != b'#')
    {
        return Ok(());
    }
    if let Some(c) = path
        .chars()
        .find(|c| c.is_control() || c.is_whitespace() || *c == '?' || *c == '#')
    {
        return Err(format!(
            "path {path:?} contains {c:?}, which cannot appear in a request path"
        ));
    }
    Ok(())
}

/// Compiles a regular expression that must match a whole value.
pub fn pattern(source: &str) -> Result<Pattern, String> {
    Pattern::new(source).map_err(|e| format!("invalid regular expression {source:?}: {e}"))
}

/// Checks a header name and returns it in lower case.
pub fn header_name(name: &str) -> Result<String, String> {
    http::HeaderName::from_bytes(name.as_bytes())
        .map(|h| h.as_str().to_owned())
        .map_err(|_| format!("invalid header name {name:?}"))
}

/// Checks a cookie name: a token (RFC 6265 and RFC 9110), compared
/// case-sensitively, so it is kept as written.
pub fn cookie_name(name: &str) -> Result<(), String> {
    let tchar = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if name.is_empty() || !name.bytes().all(tchar) {
        return Err(format!("invalid cookie name {name:?}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_hosts() {
        use std::net::Ipv6Addr;
        assert_eq!(
            upstream_host("API.Example.com"),
            Ok(UpstreamHost::Name("api.example.com".into()))
        );
        assert_eq!(
            upstream_host("db.example.com."),
            Ok(UpstreamHost::Name("db.example.com.".into()))
        );
        assert_eq!(
            upstream_host("localhost"),
            Ok(UpstreamHost::Name("localhost".into()))
        );
        assert_eq!(
            upstream_host("10.1.2.3"),
            Ok(UpstreamHost::Ip([10, 1, 2, 3].into()))
        );
        for v6 in ["::1", "[::1]"] {
            assert_eq!(
                upstream_host(v6),
                Ok(UpstreamHost::Ip(Ipv6Addr::LOCALHOST.into()))
            );
        }
        for bad in [
            "",
            ".",
            "a..b",
            "-a.example",
            "a b",
            "api.example.com:443",
            "*.example.com",
            "[api]",
        ] {
            assert!(upstream_host(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn hosts() {
        assert_eq!(
            host("Shop.Example.com"),
            Ok(HostMatch::Exact("shop.example.com".into()))
        );
        assert_eq!(
            host("*.example.com"),
            Ok(HostMatch::Wildcard("example.com".into()))
        );
        for bad in [
            "",
            "*",
            "*.",
            "a..b",
            "-a.com",
            "a-.com",
            "foo.*.com",
            "a_b.com",
            "host:80",
            "*foo.com",
        ] {
            assert!(host(bad).is_err(), "{bad} should be refused");
        }
        assert!(host(&"a".repeat(64)).is_err());
    }

    #[test]
    fn paths() {
        assert!(literal_path("/api/v1").is_ok());
        assert!(literal_path("api").is_err());
        assert!(literal_path("/a b").is_err());
        assert!(literal_path("/a?b").is_err());
        assert!(literal_path("/a#b").is_err());
        assert!(literal_path("/a\tb").is_err());
        assert!(literal_path("/a\u{7f}").is_err());
        assert!(literal_path("/caf\u{e9}/\u{3000}").is_err());
        assert!(literal_path("/caf\u{e9}").is_ok());
    }

    #[test]
    fn patterns_cannot_escape_anchoring() {
        assert!(pattern("/api/v[0-9]+").is_ok());
        assert!(pattern("/admin)|(.*").is_err());
        assert!(pattern("a)(?:b").is_err());
        let e = pattern("/(unclosed").unwrap_err();
        assert_eq!(
            e,
            r#"invalid regular expression "/(unclosed": unclosed group"#
        );
        assert!(
            pattern(&"(a{1000}){1000}".repeat(5))
                .unwrap_err()
                .contains("more than")
        );
    }

    #[test]
    fn cookie_names() {
        assert!(cookie_name("canary").is_ok());
        assert!(cookie_name("Session_ID-2").is_ok());
        for bad in ["", "a b", "a=b", "a;b", "caf\u{e9}", "a,b", "\"a\""] {
            assert!(cookie_name(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn header_names() {
        assert_eq!(header_name("X-Canary"), Ok("x-canary".into()));
        assert!(header_name("bad header").is_err());
        assert!(header_name("").is_err());
    }
}
