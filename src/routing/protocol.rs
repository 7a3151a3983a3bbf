//! How the proxy speaks to a backend.
//!
//! Plain HTTP/1.1 is the default and takes the proxy's fastest path. A
//! backend that asks for more (a Service port's `appProtocol`, an ApiRoute
//! backend's `protocol`, or the `backend-protocol` annotation) gets HTTP/2
//! without TLS (`H2C`, `GRPC`), TLS with HTTP/2 or HTTP/1.1 as the server
//! chooses by ALPN (`HTTPS`), or HTTP/2 over TLS (`GRPCS`).
//!
//! The TLS client configuration is built during translation, from the
//! Secrets it names, so a connection attempt never parses a certificate
//! and a broken Secret is reported on its object rather than discovered by
//! a request.

use std::fmt;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::Arc;

use rustls::pki_types::ServerName;
use serde::{Serialize, Serializer};

/// The wire protocol towards a backend.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// HTTP/1.1 without TLS.
    #[default]
    Http,
    /// TLS; HTTP/2 when the server selects `h2` by ALPN, else HTTP/1.1.
    Https,
    /// HTTP/2 without TLS, by prior knowledge.
    H2c,
    /// gRPC: HTTP/2 without TLS.
    Grpc,
    /// gRPC over TLS: HTTP/2 only.
    Grpcs,
}

impl Protocol {
    /// Parses the names the API and the annotations use, in any case.
    pub fn parse(text: &str) -> Option<Protocol> {
        let t = text.trim();
        [
            ("HTTP", Protocol::Http),
            ("HTTPS", Protocol::Https),
            ("H2C", Protocol::H2c),
            ("GRPC", Protocol::Grpc),
            ("GRPCS", Protocol::Grpcs),
        ]
        .into_iter()
        .find_map(|(name, p)| t.eq_ignore_ascii_case(name).then_some(p))
    }

    /// The protocol a Service port's `appProtocol` asks for, if it names
    /// one the proxy speaks: the Kubernetes-defined `kubernetes.io/h2c`,
    /// `kubernetes.io/ws` and `kubernetes.io/wss`, and the IANA service
    /// names `http`, `https`, `h2c`, `grpc` and `grpcs`.
    pub fn from_app_protocol(text: &str) -> Option<Protocol> {
        let name = text.strip_prefix("kubernetes.io/").unwrap_or(text);
        match name.to_ascii_lowercase().as_str() {
            "http" | "ws" => Some(Protocol::Http),
            "https" | "wss" => Some(Protocol::Https),
            "h2c" => Some(Protocol::H2c),
            "grpc" => Some(Protocol::Grpc),
            "grpcs" => Some(Protocol::Grpcs),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Http => "HTTP",
            Protocol::Https => "HTTPS",
            Protocol::H2c => "H2C",
            Protocol::Grpc => "GRPC",
            Protocol::Grpcs => "GRPCS",
        }
    }

    /// Whether connections use TLS.
    pub fn tls(self) -> bool {
        matches!(self, Protocol::Https | Protocol::Grpcs)
    }

    /// Whether connections speak HTTP/2 whatever TLS negotiates.
    pub fn http2_only(self) -> bool {
        matches!(self, Protocol::H2c | Protocol::Grpc | Protocol::Grpcs)
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Protocol {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// TLS towards a backend: the name it must present and the client
/// configuration that checks it.
#[derive(Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UpstreamTls {
    /// Sent as SNI and, with a CA, checked against the certificate.
    pub server_name: String,
    /// Whether the backend's certificate is verified. Without
    /// verification the connection is encrypted but the server is not
    /// authenticated (as ingress-nginx does by default).
    pub verify: bool,
    /// The Secret whose `ca.crt` verifies the backend, `namespace/name`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_secret: Option<String>,
    /// The Secret whose certificate the proxy presents, `namespace/name`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_certificate_secret: Option<String>,
    #[serde(skip)]
    pub name: ServerName<'static>,
    #[serde(skip)]
    pub config: Arc<rustls::ClientConfig>,
    /// The same, offering only HTTP/1.1 by ALPN: for protocol upgrades
    /// (WebSocket), which HTTP/2 connections cannot carry.
    #[serde(skip)]
    pub config_http1: Arc<rustls::ClientConfig>,
    /// Identifies the configuration's content (names, CA and client
    /// certificate), so equal settings share connections across tables.
    #[serde(skip)]
    pub id: u64,
}

impl fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamTls")
            .field("server_name", &self.server_name)
            .field("verify", &self.verify)
            .field("ca_secret", &self.ca_secret)
            .field("client_certificate_secret", &self.client_certificate_secret)
            .finish_non_exhaustive()
    }
}

/// A backend's protocol and, for TLS, its settings. Backends without one
/// are plain HTTP/1.1.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BackendProtocol {
    pub protocol: Protocol,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<Arc<UpstreamTls>>,
    /// Connections are shared by backends with the same id.
    #[serde(skip)]
    pub id: u64,
}

impl BackendProtocol {
    pub fn new(protocol: Protocol, tls: Option<Arc<UpstreamTls>>) -> Self {
        let mut h = foldhash::fast::FixedState::with_seed(0x9e37).build_hasher();
        protocol.hash(&mut h);
        tls.as_ref().map(|t| t.id).hash(&mut h);
        BackendProtocol {
            protocol,
            tls,
            id: h.finish(),
        }
    }
}

impl BackendProtocol {
    /// The settings as the upstream client takes them.
    pub fn client(&self) -> crate::http::client::Protocol<'_> {
        crate::http::client::Protocol {
            id: self.id,
            http2: self.protocol.http2_only(),
            tls: self.tls.as_deref().map(|t| crate::http::client::Tls {
                name: &t.name,
                config: &t.config,
                config_http1: &t.config_http1,
            }),
        }
    }
}

impl PartialEq for BackendProtocol {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
    }
}

impl Eq for BackendProtocol {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_in_any_case() {
        assert_eq!(Protocol::parse("grpc"), Some(Protocol::Grpc));
        assert_eq!(Protocol::parse(" HTTPS "), Some(Protocol::Https));
        assert_eq!(Protocol::parse("h2c"), Some(Protocol::H2c));
        assert_eq!(Protocol::parse("FCGI"), None);
        for p in [
            Protocol::Http,
            Protocol::Https,
            Protocol::H2c,
            Protocol::Grpc,
            Protocol::Grpcs,
        ] {
            assert_eq!(Protocol::parse(p.as_str()), Some(p));
        }
    }

    #[test]
    fn app_protocols_map_to_protocols() {
        assert_eq!(
            Protocol::from_app_protocol("kubernetes.io/h2c"),
            Some(Protocol::H2c)
        );
        assert_eq!(
            Protocol::from_app_protocol("kubernetes.io/wss"),
            Some(Protocol::Https)
        );
        assert_eq!(Protocol::from_app_protocol("https"), Some(Protocol::Https));
        assert_eq!(Protocol::from_app_protocol("grpc"), Some(Protocol::Grpc));
        assert_eq!(Protocol::from_app_protocol("example.com/custom"), None);
    }

    #[test]
    fn identity_follows_protocol() {
        let a = BackendProtocol::new(Protocol::H2c, None);
        let b = BackendProtocol::new(Protocol::Grpc, None);
        assert_ne!(a, b);
        assert_eq!(a, BackendProtocol::new(Protocol::H2c, None));
    }
}
