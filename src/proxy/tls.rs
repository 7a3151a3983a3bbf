//! TLS termination: rustls with the certificates of the live table.
//!
//! The certificate is chosen per handshake from the table the proxy is
//! serving at that moment, by SNI (exact name, then wildcard), so a renewed
//! Secret takes effect for the next handshake as soon as its table is
//! published, and open connections are left alone. Clients without SNI,
//! or asking for a name no Secret covers, get the default certificate: the
//! one named by `--default-certificate`, else a self-signed one generated
//! at start.
//!
//! Only TLS 1.3 and 1.2 are offered, with ring's suites (AES-GCM and
//! ChaCha20-Poly1305 with ECDHE); sessions resume through tickets and a
//! session cache; ALPN offers `h2` and `http/1.1`.

use std::fmt;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, ServerSessionMemoryCache};
use rustls::sign::CertifiedKey;
use rustls::{ServerConfig, version};

use crate::routing::RouteTable;

/// Sessions remembered for resumption without tickets, per listener.
const SESSION_CACHE: usize = 4096;

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("cannot generate the self-signed default certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Picks the certificate for each handshake from the live table.
pub struct SniResolver {
    table: Arc<ArcSwap<RouteTable>>,
    fallback: Arc<CertifiedKey>,
}

impl fmt::Debug for SniResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SniResolver").finish_non_exhaustive()
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let table = self.table.load();
        let certs = table.certs();
        hello
            .server_name()
            .and_then(|name| {
                if name.bytes().any(|b| b.is_ascii_uppercase()) {
                    certs.resolve(&name.to_ascii_lowercase())
                } else {
                    certs.resolve(name)
                }
            })
            .or_else(|| certs.default_certificate())
            .or_else(|| Some(self.fallback.clone()))
    }
}

/// A self-signed certificate for clients that match no Secret, so that
/// the listener works before any certificate is configured.
pub fn self_signed() -> Result<Arc<CertifiedKey>, TlsSetupError> {
    let rcgen::CertifiedKey { cert, signing_key } =
        rcgen::generate_simple_self_signed(vec!["sluicegate.invalid".to_owned()])?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(signing_key.serialize_der()));
    let chain = vec![CertificateDer::from(cert.der().to_vec())];
    let provider = rustls::crypto::ring::default_provider();
    Ok(Arc::new(CertifiedKey::from_der(chain, key, &provider)?))
}

/// The server configuration of the HTTPS listener.
pub fn server_config(table: Arc<ArcSwap<RouteTable>>) -> Result<Arc<ServerConfig>, TlsSetupError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let resolver = SniResolver {
        table,
        fallback: self_signed()?,
    };
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&version::TLS13, &version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    config.session_storage = ServerSessionMemoryCache::new(SESSION_CACHE);
    config.ticketer = rustls::crypto::ring::Ticketer::new()?;
    Ok(Arc::new(config))
}
