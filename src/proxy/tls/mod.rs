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
//! Only TLS 1.3 and 1.2 are offered (ECDHE with AES-GCM or
//! ChaCha20-Poly1305); sessions resume through tickets ([`tickets`]: keys
//! on a schedule, optionally shared by replicas) and a session cache; ALPN
//! offers `h2` and `http/1.1`.
//!
//! A handshake runs in its connection's task, in three steps: the
//! ClientHello is read on the worker's event loop ([`accept`]), processed
//! on the handshake threads ([`offload`]), and the handshake's remaining
//! I/O is done on the event loop again by tokio-rustls. Each worker bounds
//! the handshakes it has in progress ([`pending`]) and each has a timeout.
//!
//! The QUIC endpoint of HTTP/3 shares the resolver and the ticket keys
//! ([`quic`]); quinn runs its handshakes.

mod accept;
mod offload;
mod pending;
mod quic;
mod tickets;

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::ArcSwap;
use foldhash::HashMap;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::danger::ClientCertVerifier;
use rustls::server::{ClientHello, ResolvesServerCert, ServerSessionMemoryCache};
use rustls::sign::CertifiedKey;
use rustls::{ServerConfig, version};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tracing::debug;

use super::settings::TlsSettings;
use crate::http::io::TlsSocket;
use crate::routing::{ClientAuth, RouteTable};
use offload::Offload;
use pending::Pending;
use tickets::TicketKeys;

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
    #[error("cannot start the TLS handshake threads: {0}")]
    Threads(#[from] io::Error),
    #[error("the system's random source failed (session ticket keys)")]
    Random,
    #[error("QUIC: {0}")]
    Quic(#[from] quinn::crypto::rustls::NoInitialCipherSuite),
}

/// Picks the certificate for each handshake from the live table.
pub struct SniResolver {
    table: Arc<ArcSwap<RouteTable>>,
    fallback: Arc<CertifiedKey>,
    /// The port of a listener Gateway listeners opened, whose certificates
    /// are their own; `None` for the proxy's own HTTPS listener.
    port: Option<u16>,
}

impl fmt::Debug for SniResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SniResolver").finish_non_exhaustive()
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let table = self.table.load();
        let certs = match self.port {
            Some(port) => table.certs_for(port),
            None => table.certs(),
        };
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
            .or_else(|| table.certs().default_certificate())
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
    Ok(Arc::new(CertifiedKey::from_der(
        chain,
        key,
        &crate::crypto::provider(),
    )?))
}

/// A server configuration with `resolver`'s certificates, optionally
/// asking clients for certificates. Each configuration has its own session
/// cache and its own context in tickets, so a session never resumes under
/// another configuration, which could skip a client certificate check.
fn server_config(
    resolver: Arc<SniResolver>,
    client_auth: Option<(u64, Arc<dyn ClientCertVerifier>)>,
    tickets: &Arc<TicketKeys>,
) -> Result<Arc<ServerConfig>, TlsSetupError> {
    let builder = ServerConfig::builder_with_provider(crate::crypto::provider())
        .with_protocol_versions(&[&version::TLS13, &version::TLS12])?;
    let (builder, context) = match client_auth {
        Some((id, verifier)) => (
            builder.with_client_cert_verifier(verifier),
            id.to_be_bytes().to_vec(),
        ),
        None => (builder.with_no_client_auth(), Vec::new()),
    };
    let mut config = builder.with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    config.session_storage = ServerSessionMemoryCache::new(SESSION_CACHE);
    config.ticketer = tickets.for_config(&context);
    Ok(Arc::new(config))
}

/// A finished TLS handshake and what it established about the client.
pub struct Accepted {
    pub stream: TlsStream<TlsSocket>,
    /// The client authentication setting the handshake ran under.
    pub client_auth: Option<u64>,
    /// The verified client certificate's subject, RFC 4514.
    pub subject: Option<String>,
}

/// Runs handshakes for the HTTPS listener: certificates by SNI and, for
/// hosts that ask for them, client certificates. One for all workers.
pub struct Handshaker {
    table: Arc<ArcSwap<RouteTable>>,
    resolver: Arc<SniResolver>,
    tickets: Arc<TicketKeys>,
    plain: Arc<ServerConfig>,
    /// Lends tokio-rustls its stream type (see [`accept::finish`]).
    acceptor: TlsAcceptor,
    /// Server configurations by client authentication setting.
    with_client_auth: Mutex<HashMap<u64, Arc<ServerConfig>>>,
    /// None: ClientHellos are processed on the event loops.
    offload: Option<Offload>,
    settings: TlsSettings,
    /// See [`SniResolver`].
    port: Option<u16>,
}

impl fmt::Debug for Handshaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handshaker").finish_non_exhaustive()
    }
}

/// How a handshake ended, for logs and metrics.
enum Outcome {
    Done(Box<Accepted>),
    Failed(io::Error),
    TimedOut,
    /// A newer connection took its place ([`pending`]).
    Evicted,
}

impl Handshaker {
    /// Handshakes for the proxy's own HTTPS listener.
    pub fn new(
        table: Arc<ArcSwap<RouteTable>>,
        settings: &TlsSettings,
    ) -> Result<Handshaker, TlsSetupError> {
        Self::build(table, settings, None)
    }

    /// Handshakes for port `port`, opened for Gateway HTTPS listeners:
    /// the certificates of its listeners, by SNI. Their listeners do not
    /// ask for client certificates.
    pub fn for_port(
        table: Arc<ArcSwap<RouteTable>>,
        settings: &TlsSettings,
        port: u16,
    ) -> Result<Handshaker, TlsSetupError> {
        Self::build(table, settings, Some(port))
    }

    fn build(
        table: Arc<ArcSwap<RouteTable>>,
        settings: &TlsSettings,
        port: Option<u16>,
    ) -> Result<Handshaker, TlsSetupError> {
        let resolver = Arc::new(SniResolver {
            table: table.clone(),
            fallback: self_signed()?,
            port,
        });
        let tickets = TicketKeys::new(table.clone(), settings.ticket_key_rotation)
            .ok_or(TlsSetupError::Random)?;
        let plain = server_config(resolver.clone(), None, &tickets)?;
        let offload = match settings.handshake_threads {
            0 => None,
            n => Some(Offload::start(n)?),
        };
        Ok(Handshaker {
            table,
            acceptor: TlsAcceptor::from(plain.clone()),
            plain,
            resolver,
            tickets,
            with_client_auth: Mutex::default(),
            offload,
            settings: settings.clone(),
            port,
        })
    }

    /// The handshakes of one worker, with their own bound.
    pub fn for_worker(self: &Arc<Self>) -> WorkerHandshakes {
        WorkerHandshakes {
            handshaker: self.clone(),
            pending: Pending::new(self.settings.max_pending_handshakes),
        }
    }

    /// Completes a handshake. The ClientHello is read first, to choose the
    /// configuration for its SNI (hosts may ask for client certificates).
    async fn handshake(&self, mut stream: TcpStream) -> io::Result<Accepted> {
        let hello = accept::client_hello(&mut stream).await?;
        let auth = if self.port.is_none() && self.table.load().certs().has_client_auth() {
            hello.client_hello().server_name().and_then(|name| {
                let table = self.table.load();
                table
                    .certs()
                    .client_auth(&name.to_ascii_lowercase())
                    .cloned()
            })
        } else {
            None
        };
        let config = match &auth {
            None => self.plain.clone(),
            Some(a) => self.config_for(a).map_err(io::Error::other)?,
        };
        let conn = match &self.offload {
            Some(pool) => pool
                .run(move || hello.into_connection(config))
                .await
                .ok_or_else(|| io::Error::other("the TLS handshake threads stopped"))?,
            None => hello.into_connection(config),
        };
        let conn = match conn {
            Ok(c) => c,
            Err((error, alert)) => {
                accept::send_alert(&mut stream, alert).await;
                return Err(io::Error::new(io::ErrorKind::InvalidData, error));
            }
        };
        let stream = accept::finish(&self.acceptor, stream, conn).await?;
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
        let config = server_config(
            self.resolver.clone(),
            Some((auth.id, auth.verifier.clone())),
            &self.tickets,
        )?;
        if configs.len() >= CLIENT_AUTH_CONFIGS {
            configs.clear();
        }
        configs.insert(auth.id, config.clone());
        Ok(config)
    }
}

/// One worker's handshakes.
pub struct WorkerHandshakes {
    handshaker: Arc<Handshaker>,
    pending: Arc<Pending>,
}

impl WorkerHandshakes {
    /// Runs the handshake of a new connection within the worker's bounds
    /// and counts how it ended; `None` when it did not complete.
    pub async fn accept(&self, stream: TcpStream, peer: SocketAddr) -> Option<Accepted> {
        let (mut slot, evicted) = self.pending.enter();
        if evicted {
            debug!(%peer, "pending TLS handshakes at their limit; the oldest was dropped");
        }
        metrics::gauge!(crate::metrics::TLS_HANDSHAKES_PENDING).increment(1.0);
        let limit = self.handshaker.settings.handshake_timeout;
        let outcome = tokio::select! {
            r = tokio::time::timeout(limit, self.handshaker.handshake(stream)) => match r {
                Ok(Ok(a)) => Outcome::Done(Box::new(a)),
                Ok(Err(e)) => Outcome::Failed(e),
                Err(_) => Outcome::TimedOut,
            },
            () = slot.evicted() => Outcome::Evicted,
        };
        drop(slot);
        metrics::gauge!(crate::metrics::TLS_HANDSHAKES_PENDING).decrement(1.0);
        match outcome {
            Outcome::Done(a) => {
                let resumed =
                    a.stream.get_ref().1.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
                counted("ok", resumed);
                Some(*a)
            }
            Outcome::Failed(e) => {
                debug!(%peer, error = %e, "TLS handshake failed");
                counted("failed", false);
                None
            }
            Outcome::TimedOut => {
                debug!(%peer, "TLS handshake timed out");
                counted("timeout", false);
                None
            }
            Outcome::Evicted => {
                debug!(%peer, "TLS handshake dropped for a newer one (pending limit)");
                counted("evicted", false);
                None
            }
        }
    }
}

/// Counts a TLS handshake by how it ended.
fn counted(result: &'static str, resumed: bool) {
    let resumed = if resumed { "true" } else { "false" };
    metrics::counter!(
        crate::metrics::TLS_HANDSHAKES,
        crate::metrics::labels(&[("result", result), ("resumed", resumed)])
    )
    .increment(1);
}
