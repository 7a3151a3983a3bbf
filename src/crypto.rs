//! The cryptography provider of every TLS connection the gateway makes or
//! accepts: server certificates, client certificate verification, TLS to
//! backends and the gateway's own calls.
//!
//! One provider, chosen here, so that no part of the process negotiates
//! with different code or different defaults than another.
//!
//! It is aws-lc-rs, rustls' default, for its faster RSA (RSA 2048 is the
//! key most certificates carry); `benches/tls.rs` compares the server's
//! cost per handshake with ring. It needs a C compiler at build time.

use std::sync::{Arc, OnceLock};

use rustls::crypto::CryptoProvider;

/// The provider, shared.
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| {
            let p = rustls::crypto::aws_lc_rs::default_provider();
            // Also the process default, for configurations built without
            // naming a provider.
            let _ = p.clone().install_default();
            Arc::new(p)
        })
        .clone()
}
