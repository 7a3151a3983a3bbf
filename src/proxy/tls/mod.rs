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
use std::io;
use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::ArcSwap;
use foldhash::HashMap;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::danger::ClientCertVerifier;
use rustls::server::{Acceptor, ClientHello, ResolvesServerCert, ServerSessionMemoryCache};
use rustls::sign::CertifiedKey;
use rustls::{ServerConfig, version};
use tokio::net::TcpStream;
use tokio_rustls::LazyConfigAcceptor;
use tokio_rustls::server::TlsStream;

use crate::routing::{ClientAuth, RouteTable};

/// Server configurations for client authentication kept at most; past
/// this the cache starts over.
const CLIENT_AUTH_CONFIGS: usize = 256;

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

/// A server configuration with `resolver`'s certificates, optionally
/// asking clients for certificates. Each configuration has its own session
/// cache and ticket keys, so a session never resumes under another
/// configuration, which could skip a client certificate check.
fn server_config(
    resolver: Arc<SniResolver>,
    client_auth: Option<Arc<dyn ClientCertVerifier>>,
) -> Result<Arc<ServerConfig>, TlsSetupError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&version::TLS13, &version::TLS12])?;
    let builder = match client_auth {
        Some(verifier) => builder.with_client_cert_verifier(verifier),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    config.session_storage = ServerSessionMemoryCache::new(SESSION_CACHE);
    config.ticketer = rustls::crypto::ring::Ticketer::new()?;
    Ok(Arc::new(config))
}

/// A finished TLS handshake and what it established about the client.
pub struct Accepted {
    pub stream: TlsStream<TcpStream>,
    /// The client authentication setting the handshake ran under.
    pub client_auth: Option<u64>,
    /// The verified client certificate's subject, RFC 4514.
    pub subject: Option<String>,
}

/// Runs handshakes for the HTTPS listener: certificates by SNI and, for
/// hosts that ask for them, client certificates.
pub struct Handshaker {
    table: Arc<ArcSwap<RouteTable>>,
    resolver: Arc<SniResolver>,
    plain: Arc<ServerConfig>,
    /// Server configurations by client authentication setting.
    with_client_auth: Mutex<HashMap<u64, Arc<ServerConfig>>>,
}

impl fmt::Debug for Handshaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handshaker").finish_non_exhaustive()
    }
}

impl Handshaker {
    pub fn new(table: Arc<ArcSwap<RouteTable>>) -> Result<Handshaker, TlsSetupError> {
        let resolver = Arc::new(SniResolver {
            table: table.clone(),
            fallback: self_signed()?,
        });
        Ok(Handshaker {
            table,
            plain: server_config(resolver.clone(), None)?,
            resolver,
            with_client_auth: Mutex::default(),
        })
    }

    /// Completes a handshake. While no host asks for client certificates
    /// the plain configuration is used directly; otherwise the client's
    /// hello is read first, to choose the configuration for its SNI.
    pub async fn accept(&self, stream: TcpStream) -> io::Result<Accepted> {
        if !self.table.load().certs().has_client_auth() {
            let acceptor = tokio_rustls::TlsAcceptor::from(self.plain.clone());
            return Ok(Accepted {
                stream: acceptor.accept(stream).await?,
                client_auth: None,
                subject: None,
            });
        }
        let start = LazyConfigAcceptor::new(Acceptor::default(), stream).await?;
        let auth = start.client_hello().server_name().and_then(|name| {
            let table = self.table.load();
            table
                .certs()
                .client_auth(&name.to_ascii_lowercase())
                .cloned()
        });
        let config = match &auth {
            None => self.plain.clone(),
            Some(a) => self.config_for(a).map_err(io::Error::other)?,
        };
        let stream = start.into_stream(config).await?;
        let subject = auth
            .as_ref()
            .and_then(|_| stream.get_ref().1.peer_certificates())
            .and_then(|chain| chain.first())
            .and_then(|cert| crate::x509::subject_dn(cert));
        Ok(Accepted {
            stream,
            client_auth: auth.map(|a| a.id),
            subject,
        })
    }

    fn config_for(&self, auth: &ClientAuth) -> Result<Arc<ServerConfig>, TlsSetupError> {
        let mut configs = self
            .with_client_auth
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(c) = configs.get(&auth.id) {
            return Ok(c.clone());
        }
        let config = server_config(self.resolver.clone(), Some(auth.verifier.clone()))?;
        if configs.len() >= CLIENT_AUTH_CONFIGS {
            configs.clear();
        }
        configs.insert(auth.id, config.clone());
        Ok(config)
    }
}
