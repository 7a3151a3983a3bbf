//! Whom the plugins that call out over `https://` (forwardAuth, JWKS)
//! trust: the system's CA certificates, or the `ca.crt` of a Secret in the
//! configuring object's namespace, for a service with a private CA.
//!
//! The Secret is read when the plugin is built, so a broken one is a
//! configuration error naming the field; the system's certificates are
//! read once per process, at the first call that needs them, and their
//! absence is that call's error. The rustls configuration for the system's
//! roots is shared by every plugin, so that kept-alive connections survive
//! new route tables.

use std::sync::{Arc, OnceLock};

use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use tracing::debug;

use crate::api::LocalObjectRef;
use crate::http::client::fetch::Target;
use crate::plugins::{BuildEnv, ConfigError};

/// What verifies a server's certificate.
#[derive(Debug, Clone)]
pub enum Trust {
    /// The system's CA certificates.
    System,
    /// A Secret's `ca.crt`.
    Ca(Arc<RootCertStore>),
}

impl Trust {
    /// The trust `reference` names (a Secret's `ca.crt`), or the system's
    /// without one, with the PEM read (for fingerprints of the settings).
    /// `field` names the reference in errors.
    pub fn from_ref(
        reference: Option<&LocalObjectRef>,
        env: &BuildEnv<'_>,
        field: &str,
    ) -> Result<(Trust, Vec<u8>), ConfigError> {
        let Some(r) = reference else {
            return Ok((Trust::System, Vec::new()));
        };
        let pem = (env.secret)(&r.name, "ca.crt").ok_or_else(|| {
            ConfigError::new(
                field,
                format!(
                    "Secret {}/{} has no ca.crt (or does not exist)",
                    env.namespace, r.name
                ),
            )
        })?;
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<_, _>>()
            .map_err(|e| {
                ConfigError::new(
                    field,
                    format!("Secret {}: ca.crt is not valid PEM: {e}", r.name),
                )
            })?;
        let mut roots = RootCertStore::empty();
        let (added, _) = roots.add_parsable_certificates(certs);
        if added == 0 {
            return Err(ConfigError::new(
                field,
                format!("Secret {}: ca.crt holds no usable certificate", r.name),
            ));
        }
        Ok((Trust::Ca(Arc::new(roots)), pem))
    }

    /// The client configuration verifying with this trust, offering only
    /// HTTP/1.1. `field` is the setting that names a Secret instead, for
    /// the error when the system has no CA certificates.
    pub fn client_config(&self, field: &str) -> Result<Arc<rustls::ClientConfig>, String> {
        match self {
            Trust::Ca(roots) => config(roots.clone()).map_err(|e| e.to_string()),
            Trust::System => {
                static SYSTEM: OnceLock<Result<Arc<rustls::ClientConfig>, String>> =
                    OnceLock::new();
                SYSTEM
                    .get_or_init(|| {
                        let roots = system_roots()?;
                        config(roots).map_err(|e| e.to_string())
                    })
                    .clone()
                    .map_err(|e| format!("{e}; name one with {field}"))
            }
        }
    }
}

/// The system's CA certificates.
fn system_roots() -> Result<Arc<RootCertStore>, String> {
    let found = rustls_native_certs::load_native_certs();
    for e in &found.errors {
        debug!(error = %e, "reading the system's CA certificates");
    }
    let mut roots = RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        return Err("no CA certificate found on the system".into());
    }
    Ok(Arc::new(roots))
}

fn config(roots: Arc<RootCertStore>) -> Result<Arc<rustls::ClientConfig>, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A target whose TLS configuration is made at its first call, when it is
/// an `https://` one: reading the system's certificates is not for the
/// thread that builds route tables, and their absence is a call's error.
#[derive(Debug)]
pub struct LazyTarget {
    parsed: Target,
    trust: Trust,
    /// The setting naming a CA Secret, for errors.
    field: &'static str,
    ready: OnceLock<Result<Target, String>>,
}

impl LazyTarget {
    pub fn new(parsed: Target, trust: Trust, field: &'static str) -> Self {
        LazyTarget {
            parsed,
            trust,
            field,
            ready: OnceLock::new(),
        }
    }

    /// The target as parsed, without its TLS configuration.
    pub fn parsed(&self) -> &Target {
        &self.parsed
    }

    pub fn trust(&self) -> &Trust {
        &self.trust
    }

    /// The target ready to be called.
    pub fn get(&self) -> Result<&Target, String> {
        self.ready
            .get_or_init(|| {
                if !self.parsed.is_https() {
                    return Ok(self.parsed.clone());
                }
                let config = self.trust.client_config(self.field)?;
                Ok(self.parsed.clone().with_tls(config))
            })
            .as_ref()
            .map_err(Clone::clone)
    }
}
