//! The TLS side of QUIC: the handshake configuration of the HTTP/3
//! endpoint.
//!
//! It shares the HTTPS listener's certificate resolver (the same live
//! table, the same SNI rules and default certificate) and its session
//! ticket keys, under a context of its own so that a TCP session never
//! resumes over QUIC or the other way round. What differs is what QUIC
//! requires or what HTTP/3 over it can offer:
//! - TLS 1.3 only (RFC 9001 §4.2), ALPN `h3` only;
//! - no 0-RTT: early data can be replayed by anyone who captured it, and
//!   the gateway cannot know which requests of which route are safe to
//!   repeat;
//! - no client certificates: QUIC's handshake configuration is fixed
//!   before the ClientHello is read, so hosts that ask for them are not
//!   offered HTTP/3 (no `Alt-Svc` on their responses) and get `421` if a
//!   client tries anyway.

use std::sync::Arc;

use quinn::crypto::rustls::QuicServerConfig;
use rustls::server::ServerSessionMemoryCache;
use rustls::{ServerConfig, version};

use super::{Handshaker, SESSION_CACHE, TlsSetupError};

/// The session ticket context of QUIC handshakes; those of TCP are empty
/// or a client authentication setting's 8-byte id.
const TICKET_CONTEXT: &[u8] = b"quic";

impl Handshaker {
    /// The handshake configuration of the QUIC endpoint on this
    /// listener's port.
    pub fn quic_config(&self) -> Result<QuicServerConfig, TlsSetupError> {
        let mut config = ServerConfig::builder_with_provider(crate::crypto::provider())
            .with_protocol_versions(&[&version::TLS13])?
            .with_no_client_auth()
            .with_cert_resolver(self.resolver.clone());
        config.alpn_protocols = vec![b"h3".to_vec()];
        config.max_early_data_size = 0;
        config.session_storage = ServerSessionMemoryCache::new(SESSION_CACHE);
        config.ticketer = self.tickets.for_config(TICKET_CONTEXT);
        Ok(QuicServerConfig::try_from(Arc::new(config))?)
    }
}
