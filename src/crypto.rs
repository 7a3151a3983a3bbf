//! The cryptography provider of every TLS connection the gateway makes or
//! accepts: server certificates, client certificate verification, TLS to
//! backends and the gateway's own calls.
//!
//! One provider, chosen here, so that no part of the process negotiates
//! with different code or different defaults than another.
//!
//! It is aws-lc-rs, rustls' default, chosen by measurement over ring
//! (`benches/tls.rs`, figures in docs/benchmarks.md): a server's RSA 2048
//! signature, the bulk of a full handshake with the certificate most CAs
//! issue, costs several times less, and ECDSA P-256 handshakes are no
//! slower. It needs cmake and a C compiler at build time.

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
