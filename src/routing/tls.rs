//! Server certificates of a table, chosen by SNI.
//!
//! Certificates belong to the table: a renewed Secret produces a new table,
//! and the next handshake resolves against it, while connections already
//! established keep the certificate they were opened with.

use std::fmt;
use std::sync::Arc;

use foldhash::HashMap;
use rustls::sign::CertifiedKey;
use serde::Serialize;

/// A certificate and the host names it serves, as translated. `/routes`
/// shows where it came from, never key material.
#[derive(Clone, Serialize)]
pub struct TlsCertificate {
    /// Exact names or single-label wildcards (`*.example.com`), lower case;
    /// none for the default certificate.
    pub hosts: Vec<String>,
    /// The Secret it came from, `namespace/name`.
    pub secret: String,
    /// The object that asked for it (`Ingress ns/name`).
    pub source: Arc<str>,
    /// When the certificate stops being valid, in Unix seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_after: Option<i64>,
    #[serde(skip)]
    pub key: Arc<CertifiedKey>,
}

impl fmt::Debug for TlsCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsCertificate")
            .field("hosts", &self.hosts)
            .field("secret", &self.secret)
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

/// Client certificate authentication for some hosts (mutual TLS).
#[derive(Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClientAuth {
    /// Exact names or single-label wildcards, lower case.
    pub hosts: Vec<String>,
    /// The Secret whose `ca.crt` verifies clients, `namespace/name`.
    pub ca_secret: String,
    /// Clients without a certificate are let through (marked so for the
    /// upstream); a certificate that fails verification is still refused.
    pub optional: bool,
    /// The object that asked for it.
    pub source: Arc<str>,
    #[serde(skip)]
    pub verifier: Arc<dyn rustls::server::danger::ClientCertVerifier>,
    /// Identifies the verifier's content (CA and mode), so that listeners
    /// build one server configuration per distinct setting.
    #[serde(skip)]
    pub id: u64,
}

impl fmt::Debug for ClientAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientAuth")
            .field("hosts", &self.hosts)
            .field("ca_secret", &self.ca_secret)
            .field("optional", &self.optional)
            .finish_non_exhaustive()
    }
}

/// Hosts indexed for lookup by server name: exact names, then wildcards
/// one label up.
struct HostIndex<T> {
    exact: HashMap<Box<str>, T>,
    /// Keyed by the part after `*.`.
    wildcard: HashMap<Box<str>, T>,
}

impl<T> Default for HostIndex<T> {
    fn default() -> Self {
        HostIndex {
            exact: HashMap::default(),
            wildcard: HashMap::default(),
        }
    }
}

impl<T: Clone> HostIndex<T> {
    /// Binds `host` unless it is bound already (the first binding wins).
    fn bind(&mut self, host: &str, value: &T) {
        let (map, name) = match host.strip_prefix("*.") {
            Some(rest) => (&mut self.wildcard, rest),
            None => (&mut self.exact, host),
        };
        map.entry(name.into()).or_insert_with(|| value.clone());
    }

    fn get(&self, name: &str) -> Option<&T> {
        let name = name.strip_suffix('.').unwrap_or(name);
        if let Some(v) = self.exact.get(name) {
            return Some(v);
        }
        let (_, parent) = name.split_once('.')?;
        self.wildcard.get(parent)
    }

    fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.wildcard.is_empty()
    }
}

/// Certificates by server name: exact names first, then wildcards.
#[derive(Default)]
pub struct CertStore {
    /// For clients without SNI or with an unknown name.
    default: Option<Arc<CertifiedKey>>,
    certs: HostIndex<Arc<CertifiedKey>>,
    client_auth: HostIndex<Arc<ClientAuth>>,
}

impl fmt::Debug for CertStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertStore")
            .field("exact", &self.certs.exact.len())
            .field("wildcard", &self.certs.wildcard.len())
            .field("client_auth", &!self.client_auth.is_empty())
            .finish()
    }
}

impl CertStore {
    /// Indexes `certs`; for a name bound twice the first binding wins
    /// (translation has already reported the conflict).
    pub fn build(certs: &[TlsCertificate], client_auth: &[Arc<ClientAuth>]) -> CertStore {
        let mut store = CertStore::default();
        for c in certs {
            if c.hosts.is_empty() && store.default.is_none() {
                store.default = Some(c.key.clone());
            }
            for host in &c.hosts {
                store.certs.bind(host, &c.key);
            }
        }
        for auth in client_auth {
            for host in &auth.hosts {
                store.client_auth.bind(host, auth);
            }
        }
        store
    }

    /// The certificate named by `--default-certificate`, if usable.
    pub fn default_certificate(&self) -> Option<Arc<CertifiedKey>> {
        self.default.clone()
    }

    pub fn is_empty(&self) -> bool {
        self.certs.is_empty()
    }

    /// Whether any host asks for client certificates: when none does, the
    /// proxy skips every per-request check.
    pub fn has_client_auth(&self) -> bool {
        !self.client_auth.is_empty()
    }

    /// The client authentication `server_name` asks for, if any.
    pub fn client_auth(&self, server_name: &str) -> Option<&Arc<ClientAuth>> {
        self.client_auth.get(server_name)
    }

    /// The certificate for `server_name` (already lower case, as rustls
    /// hands it over): an exact name, else a wildcard one label up.
    pub fn resolve(&self, server_name: &str) -> Option<Arc<CertifiedKey>> {
        self.certs.get(server_name).cloned()
    }
}
