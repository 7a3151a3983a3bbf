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

/// Certificates by server name: exact names first, then wildcards.
#[derive(Default)]
pub struct CertStore {
    /// For clients without SNI or with an unknown name.
    default: Option<Arc<CertifiedKey>>,
    exact: HashMap<Box<str>, Arc<CertifiedKey>>,
    /// Keyed by the part after `*.`.
    wildcard: HashMap<Box<str>, Arc<CertifiedKey>>,
}

impl fmt::Debug for CertStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertStore")
            .field("exact", &self.exact.len())
            .field("wildcard", &self.wildcard.len())
            .finish()
    }
}

impl CertStore {
    /// Indexes `certs`; for a name bound twice the first binding wins
    /// (translation has already reported the conflict).
    pub fn build(certs: &[TlsCertificate]) -> CertStore {
        let mut store = CertStore::default();
        for c in certs {
            if c.hosts.is_empty() && store.default.is_none() {
                store.default = Some(c.key.clone());
            }
            for host in &c.hosts {
                let map = match host.strip_prefix("*.") {
                    Some(rest) => (&mut store.wildcard, rest),
                    None => (&mut store.exact, host.as_str()),
                };
                map.0.entry(map.1.into()).or_insert_with(|| c.key.clone());
            }
        }
        store
    }

    /// The certificate named by `--default-certificate`, if usable.
    pub fn default_certificate(&self) -> Option<Arc<CertifiedKey>> {
        self.default.clone()
    }

    pub fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.wildcard.is_empty()
    }

    /// The certificate for `server_name` (already lower case, as rustls
    /// hands it over): an exact name, else a wildcard one label up.
    pub fn resolve(&self, server_name: &str) -> Option<Arc<CertifiedKey>> {
        let name = server_name.strip_suffix('.').unwrap_or(server_name);
        if let Some(k) = self.exact.get(name) {
            return Some(k.clone());
        }
        let (_, parent) = name.split_once('.')?;
        self.wildcard.get(parent).cloned()
    }
}
