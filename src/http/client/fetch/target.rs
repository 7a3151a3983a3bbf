//! Where the gateway's own calls go: a URL parsed once into a
//! [`Target`] (scheme, host name or address, port, the authority sent as
//! `Host`, the path), with the caller's TLS settings for `https://`.

use std::hash::BuildHasher;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use http::header::HeaderValue;
use http::uri::{PathAndQuery, Uri};
use rustls::pki_types::ServerName;

/// What is wrong with a URL given for a call.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error("{0:?} is not a valid URI: {1}")]
    Invalid(String, String),
    #[error("a fragment (#...) is never sent; remove it")]
    Fragment,
    #[error("{0:?} must start with http:// or https://")]
    NoScheme(String),
    #[error("scheme {0:?} is not supported; use http:// or https://")]
    Scheme(String),
    #[error("{0:?} has no host")]
    NoHost(String),
    #[error("user information is not allowed in the URI")]
    UserInfo,
    #[error("port 0 is not a port to connect to")]
    PortZero,
    #[error("{0} is not an IPv6 address")]
    BadIpv6(String),
    #[error("{0:?} is not a valid server name")]
    ServerName(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Host {
    Name(Arc<str>),
    Addr(IpAddr),
}

/// TLS towards a target: the name its certificate must show, and the
/// caller's configuration.
#[derive(Clone)]
pub(super) struct TargetTls {
    pub(super) name: ServerName<'static>,
    pub(super) config: Option<Arc<rustls::ClientConfig>>,
    /// Connections are shared only by calls with the same name and
    /// configuration: one verified for another name or by other roots is
    /// never reused.
    pub(super) id: u64,
}

/// Where calls go, parsed once from a URL.
#[derive(Clone)]
pub struct Target {
    pub(super) host: Host,
    pub(super) port: u16,
    /// The `Host` the server gets: the URL's authority.
    pub(super) authority: HeaderValue,
    pub(super) path_and_query: PathAndQuery,
    pub(super) tls: Option<TargetTls>,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("path_and_query", &self.path_and_query)
            .field("https", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

impl Target {
    /// Parses `http[s]://host[:port][/path][?query]`; `host` is a name or
    /// an address (IPv6 in brackets). An `https://` target needs a TLS
    /// configuration ([`Target::with_tls`]) before it is called.
    pub fn parse(text: &str) -> Result<Target, UrlError> {
        // The URI parser drops a fragment silently; refusing it says that
        // it would never reach the server.
        if text.contains('#') {
            return Err(UrlError::Fragment);
        }
        let uri: Uri = text
            .parse()
            .map_err(|e: http::uri::InvalidUri| UrlError::Invalid(text.into(), e.to_string()))?;
        let https = match uri.scheme_str() {
            Some(s) if s.eq_ignore_ascii_case("http") => false,
            Some(s) if s.eq_ignore_ascii_case("https") => true,
            Some(s) => return Err(UrlError::Scheme(s.into())),
            None => return Err(UrlError::NoScheme(text.into())),
        };
        let authority = uri
            .authority()
            .ok_or_else(|| UrlError::NoHost(text.into()))?;
        if authority.as_str().contains('@') {
            return Err(UrlError::UserInfo);
        }
        let raw = authority.host();
        if raw.is_empty() {
            return Err(UrlError::NoHost(text.into()));
        }
        let port = match authority.port_u16() {
            Some(0) => return Err(UrlError::PortZero),
            Some(p) => p,
            None if https => 443,
            None => 80,
        };
        let bare = raw.trim_start_matches('[').trim_end_matches(']');
        let host = match bare.parse::<IpAddr>() {
            Ok(ip) => Host::Addr(ip),
            Err(_) if raw.starts_with('[') => return Err(UrlError::BadIpv6(raw.into())),
            Err(_) => Host::Name(bare.to_ascii_lowercase().into()),
        };
        let tls = if https {
            let name = ServerName::try_from(bare.to_owned())
                .map_err(|_| UrlError::ServerName(bare.into()))?;
            Some(TargetTls {
                name,
                config: None,
                id: 0,
            })
        } else {
            None
        };
        let path_and_query = uri
            .path_and_query()
            .map_or_else(|| PathAndQuery::from_static("/"), origin_form);
        let authority =
            HeaderValue::from_str(authority.as_str()).map_err(|_| UrlError::NoHost(text.into()))?;
        Ok(Target {
            host,
            port,
            authority,
            path_and_query,
            tls,
        })
    }

    /// A plain HTTP target at `addr`, `Host` being the address.
    pub fn http(addr: SocketAddr) -> Target {
        // A socket address always prints as a valid header value.
        let authority = HeaderValue::try_from(addr.to_string())
            .unwrap_or_else(|_| HeaderValue::from_static("localhost"));
        Target {
            host: Host::Addr(addr.ip()),
            port: addr.port(),
            authority,
            path_and_query: PathAndQuery::from_static("/"),
            tls: None,
        }
    }

    /// The TLS configuration calls to an `https://` target use; no effect
    /// on a plain one.
    pub fn with_tls(mut self, config: Arc<rustls::ClientConfig>) -> Target {
        if let Some(tls) = &mut self.tls {
            // A connection keeps its configuration alive, so while one is
            // pooled no other configuration can have the same address.
            let ptr = Arc::as_ptr(&config) as usize;
            tls.id = foldhash::fast::FixedState::with_seed(0x5eed)
                .hash_one((ptr, tls.name.to_str().as_ref()));
            tls.config = Some(config);
        }
        self
    }

    pub fn is_https(&self) -> bool {
        self.tls.is_some()
    }

    /// The host to resolve or connect to, without brackets.
    pub fn host(&self) -> String {
        match &self.host {
            Host::Name(n) => n.to_string(),
            Host::Addr(ip) => ip.to_string(),
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL's authority, which calls send as `Host`.
    pub fn authority(&self) -> &HeaderValue {
        &self.authority
    }

    /// The URL's path and query (`/` when it has none).
    pub fn path_and_query(&self) -> &PathAndQuery {
        &self.path_and_query
    }
}

/// `path` as a request target: starting with `/` (a URL with a query but
/// no path has the path `/`).
pub(super) fn origin_form(path: &PathAndQuery) -> PathAndQuery {
    let text = path.as_str();
    if text.starts_with('/') {
        return path.clone();
    }
    PathAndQuery::try_from(format!("/{text}")).unwrap_or_else(|_| PathAndQuery::from_static("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_taken_apart() {
        let t = Target::parse("http://Auth.Default.svc:8080/verify?x=1").unwrap();
        assert_eq!(t.host, Host::Name("auth.default.svc".into()));
        assert_eq!(t.port, 8080);
        assert_eq!(t.authority, "Auth.Default.svc:8080");
        assert_eq!(t.path_and_query, "/verify?x=1");
        assert!(!t.is_https());

        let t = Target::parse("http://10.1.2.3").unwrap();
        assert_eq!(t.host, Host::Addr([10, 1, 2, 3].into()));
        assert_eq!((t.port, t.path_and_query.as_str()), (80, "/"));

        let t = Target::parse("http://[::1]:9000/auth").unwrap();
        assert_eq!(t.host, Host::Addr("::1".parse().unwrap()));
        assert_eq!(t.authority, "[::1]:9000");
        assert_eq!(t.host(), "::1");

        let t = Target::parse("HTTPS://id.example/.well-known/jwks.json").unwrap();
        assert!(t.is_https());
        assert_eq!(t.port, 443);
        let tls = t.tls.as_ref().unwrap();
        assert_eq!(tls.name.to_str(), "id.example");
        assert!(tls.config.is_none());

        let t = Target::parse("https://127.0.0.1:8443?q").unwrap();
        assert_eq!(t.path_and_query.as_str(), "/?q");
        assert!(matches!(
            t.tls.as_ref().unwrap().name,
            ServerName::IpAddress(_)
        ));

        let t = Target::http("127.0.0.1:81".parse().unwrap());
        assert_eq!(t.authority, "127.0.0.1:81");
        assert_eq!(t.host, Host::Addr([127, 0, 0, 1].into()));
    }

    #[test]
    fn bad_urls_say_why() {
        let cases = [
            ("ftp://auth/verify", "scheme \"ftp\" is not supported"),
            ("/verify", "must start with http:// or https://"),
            ("auth:8080", "must start with http://"),
            ("http://user:pw@auth/verify", "user information"),
            ("http://auth:0/", "port 0"),
            ("http://[nope]/", "not an IPv6 address"),
            ("http://auth/verify#frag", "fragment"),
            ("http://a b/", "not a valid URI"),
            ("", "not a valid URI"),
            ("https://bad_name!/", "not a valid"),
        ];
        for (url, why) in cases {
            let e = Target::parse(url).unwrap_err().to_string();
            assert!(e.contains(why), "{url}: {e}");
        }
    }

    #[test]
    fn tls_settings_tell_connections_apart() {
        let config = || {
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            Arc::new(
                rustls::ClientConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()
                    .unwrap()
                    .with_root_certificates(rustls::RootCertStore::empty())
                    .with_no_client_auth(),
            )
        };
        let (one, two) = (config(), config());
        let id = |url: &str, c: &Arc<rustls::ClientConfig>| {
            let t = Target::parse(url).unwrap().with_tls(c.clone());
            t.tls.unwrap().id
        };
        let a = id("https://a.test/", &one);
        assert_eq!(a, id("https://a.test/other", &one));
        assert_ne!(a, id("https://b.test/", &one));
        assert_ne!(a, id("https://a.test/", &two));
        // Plain targets take no TLS settings.
        let plain = Target::parse("http://a.test/").unwrap().with_tls(one);
        assert!(!plain.is_https());
    }
}
