//! Client certificate authentication (mutual TLS) per host.
//!
//! An object asks that clients of its hosts present a certificate issued
//! by the CA in a Secret's `ca.crt` (ApiRoute `spec.tls.clientAuth`, the
//! `auth-tls-secret` annotation). A CA Secret that is missing or holds no
//! certificate fails closed: handshakes for those hosts are refused until
//! it is fixed, never let through unchecked. A host already claimed by an
//! older object keeps that object's setting.

use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use foldhash::HashMap;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};

use super::Ctx;
use super::diagnostics::{Reason, Subject};
use super::protocol::ca_roots;
use super::state::ObjectKey;
use super::tls::secret_field;
use crate::routing::{ClientAuth, HostMatch};

/// Verifiers kept at most; past this the cache starts over.
const CACHE_LIMIT: usize = 256;

type Verifier = Arc<dyn ClientCertVerifier>;
type Built = (Verifier, Option<String>);

fn cache() -> &'static Mutex<HashMap<u64, Built>> {
    static CACHE: OnceLock<Mutex<HashMap<u64, Built>>> = OnceLock::new();
    CACHE.get_or_init(Mutex::default)
}

/// Requires client certificates from the CA in Secret `ca_secret` (in the
/// object's namespace) for `hosts`; `field` names the setting.
pub(super) fn bind(
    ctx: &mut Ctx<'_>,
    obj: Subject<'_>,
    field: &str,
    ca_secret: &str,
    optional: bool,
    hosts: &[HostMatch],
) {
    let key = ObjectKey::new(obj.key.namespace.clone(), ca_secret);
    let secret = ctx.state.secrets.get(&key);
    let id = {
        let mut h = foldhash::fast::FixedState::with_seed(0xc1a5).build_hasher();
        key.hash(&mut h);
        optional.hash(&mut h);
        let ca = secret.and_then(|s| secret_field(s, "ca.crt"));
        ca.hash(&mut h);
        h.finish()
    };
    let cached = cache()
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(&id)
        .cloned();
    let (verifier, problem) = cached.unwrap_or_else(|| {
        let built = build(&key, secret.map(Arc::as_ref), optional);
        let mut cache = cache().lock().unwrap_or_else(PoisonError::into_inner);
        if cache.len() >= CACHE_LIMIT {
            cache.clear();
        }
        cache.insert(id, built.clone());
        built
    });
    if let Some(p) = problem {
        ctx.diags
            .report(obj, field, Reason::InvalidCertificate, p.clone());
    }
    let source = ctx.source(obj);
    let mut bound = Vec::with_capacity(hosts.len());
    for host in hosts {
        let name = host.to_string();
        match ctx.client_auth_claims.get(&name) {
            Some(owner) if *owner != source => {
                let msg = format!(
                    "host {name} already has client certificate authentication from {owner}, which is older"
                );
                ctx.diags.report(obj, field, Reason::Conflict, msg);
            }
            Some(_) => {}
            None => {
                ctx.client_auth_claims.insert(name.clone(), source.clone());
                bound.push(name);
            }
        }
    }
    if !bound.is_empty() {
        ctx.client_auth.push(Arc::new(ClientAuth {
            hosts: bound,
            ca_secret: format!("{}/{}", key.namespace, key.name),
            optional,
            source,
            verifier,
            id,
        }));
    }
}

fn build(
    key: &ObjectKey,
    secret: Option<&k8s_openapi::api::core::v1::Secret>,
    optional: bool,
) -> Built {
    let provider = crate::crypto::provider();
    let verifier = ca_roots(key, secret).and_then(|roots| {
        let builder =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
        let builder = if optional {
            builder.allow_unauthenticated()
        } else {
            builder
        };
        builder
            .build()
            .map_err(|e| format!("Secret {}/{}: {e}", key.namespace, key.name))
    });
    match verifier {
        Ok(v) => (v, None),
        Err(e) => {
            let why = format!("{e}; TLS clients of these hosts are refused until it is fixed");
            (Arc::new(RefuseClients(why.clone(), provider)), Some(why))
        }
    }
}

/// Refuses every client: authentication was asked for and cannot be done.
#[derive(Debug)]
struct RefuseClients(String, Arc<rustls::crypto::CryptoProvider>);

impl ClientCertVerifier for RefuseClients {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Err(rustls::Error::General(self.0.clone()))
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General(self.0.clone()))
    }

    fn verify_tls13_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General(self.0.clone()))
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.1.signature_verification_algorithms.supported_schemes()
    }
}
