//! Backend protocols and TLS towards backends.
//!
//! An object may ask for a protocol explicitly (ApiRoute backend
//! `protocol`, the `backend-protocol` annotation); otherwise the Service
//! port's `appProtocol` decides, and plain HTTP/1.1 is the default.
//!
//! For TLS the client configuration is built here, from Secrets in the
//! object's own namespace: `ca.crt` to verify the backend (without it the
//! connection is encrypted but the server is not authenticated, as
//! ingress-nginx does by default), and `tls.crt` / `tls.key` for a client
//! certificate. A CA Secret that is missing or holds no certificate fails
//! closed: the backend is never trusted without the check that was asked
//! for, its requests get 502, and the object gets a warning.
//!
//! Configurations are kept between translations, keyed by a hash of
//! everything they are built from, so an unchanged one is not rebuilt and
//! its connections stay pooled across tables.

use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use foldhash::HashMap;
use k8s_openapi::api::core::v1::Secret;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ResolvesClientCert, WebPkiServerVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme, version};

use super::Ctx;
use super::diagnostics::{Reason, Subject};
use super::state::ObjectKey;
use super::tls::{key_pair, secret_field};
use crate::routing::{BackendProtocol, Protocol, UpstreamTls};

/// Configurations kept at most; past this the cache starts over.
const CACHE_LIMIT: usize = 1024;

/// What an object asks of the connections to one backend.
#[derive(Clone, Debug, Default)]
pub(super) struct ProtocolRequest {
    /// An explicit protocol; `None` defers to the Service's `appProtocol`.
    pub protocol: Option<Protocol>,
    /// Secret (in the object's namespace) whose `ca.crt` verifies the
    /// backend.
    pub ca_secret: Option<String>,
    /// Secret (in the object's namespace) whose `tls.crt` and `tls.key`
    /// the proxy presents.
    pub client_secret: Option<String>,
    /// SNI and verified name; defaults to `service.namespace.svc`.
    pub server_name: Option<String>,
    /// Where these settings are written, for diagnostics.
    pub field: String,
}

impl ProtocolRequest {
    fn has_tls_settings(&self) -> bool {
        self.ca_secret.is_some() || self.client_secret.is_some() || self.server_name.is_some()
    }
}

/// Where a backend goes, for the default TLS server name.
#[derive(Clone, Copy, Debug)]
pub(super) enum Destination<'r> {
    /// A Service in the object's namespace: `service.namespace.svc`.
    Service(&'r str),
    /// A host outside the cluster (an ExternalName Service's, or a host
    /// backend's): the host itself.
    Host(&'r str),
}

/// The protocol of a backend going to `dest`, whose port has
/// `app_protocol`. Plain HTTP/1.1 is `None`.
pub(super) fn resolve(
    ctx: &mut Ctx<'_>,
    obj: Subject<'_>,
    req: &ProtocolRequest,
    app_protocol: Option<&str>,
    dest: Destination<'_>,
) -> Option<Arc<BackendProtocol>> {
    let protocol = req
        .protocol
        .or_else(|| app_protocol.and_then(Protocol::from_app_protocol))
        .unwrap_or_default();
    if !protocol.tls() {
        if req.has_tls_settings() {
            ctx.diags.report(
                obj,
                req.field.clone(),
                Reason::InvalidSpec,
                format!("TLS settings are ignored: the backend protocol is {protocol}, not HTTPS or GRPCS"),
            );
        }
        return (protocol != Protocol::Http)
            .then(|| Arc::new(BackendProtocol::new(protocol, None)));
    }
    let namespace = obj.key.namespace.clone();
    let default_name = match dest {
        Destination::Service(service) => format!("{service}.{namespace}.svc"),
        // A certificate names the host without the root's trailing dot.
        Destination::Host(host) => host.strip_suffix('.').unwrap_or(host).to_owned(),
    };
    let valid = |n: &str| ServerName::try_from(n.to_owned()).ok();
    let (server_name, name) = match req.server_name.as_deref() {
        Some(n) if let Some(name) = valid(n) => (n.to_owned(), name),
        Some(n) => {
            ctx.diags.report(
                obj,
                req.field.clone(),
                Reason::InvalidSpec,
                format!("{n:?} is not a valid server name; using {default_name}"),
            );
            (default_name.clone(), valid(&default_name)?)
        }
        None => (default_name.clone(), valid(&default_name)?),
    };
    let secret = |name: &Option<String>| {
        name.as_ref().map(|n| {
            let key = ObjectKey::new(namespace.clone(), n.clone());
            let found = ctx.state.secrets.get(&key).cloned();
            (key, found)
        })
    };
    let (ca, client) = (secret(&req.ca_secret), secret(&req.client_secret));
    let id = {
        let mut h = foldhash::fast::FixedState::with_seed(0x7157).build_hasher();
        protocol.hash(&mut h);
        server_name.hash(&mut h);
        for s in [&ca, &client] {
            match s {
                None => h.write_u8(0),
                Some((key, secret)) => {
                    key.hash(&mut h);
                    hash_secret(&mut h, secret.as_deref());
                }
            }
        }
        h.finish()
    };
    let cached = cache()
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(&id)
        .cloned();
    let (tls, problems) = match cached {
        Some(hit) => hit,
        None => {
            let built = build(
                protocol,
                &server_name,
                name,
                ca.as_ref().map(|(k, s)| (k, s.as_deref())),
                client.as_ref().map(|(k, s)| (k, s.as_deref())),
                id,
            );
            let mut cache = cache().lock().unwrap_or_else(PoisonError::into_inner);
            if cache.len() >= CACHE_LIMIT {
                cache.clear();
            }
            cache.insert(id, built.clone());
            built
        }
    };
    for problem in problems.iter() {
        ctx.diags.report(
            obj,
            req.field.clone(),
            Reason::InvalidCertificate,
            problem.clone(),
        );
    }
    Some(Arc::new(BackendProtocol::new(protocol, Some(tls))))
}

type Built = (Arc<UpstreamTls>, Arc<[String]>);

fn cache() -> &'static Mutex<HashMap<u64, Built>> {
    static CACHE: OnceLock<Mutex<HashMap<u64, Built>>> = OnceLock::new();
    CACHE.get_or_init(Mutex::default)
}

fn hash_secret(h: &mut impl Hasher, secret: Option<&Secret>) {
    let Some(secret) = secret else {
        h.write_u8(0);
        return;
    };
    h.write_u8(1);
    for name in ["ca.crt", "tls.crt", "tls.key"] {
        let bytes = secret_field(secret, name).unwrap_or_default();
        h.write_usize(bytes.len());
        h.write(bytes);
    }
}

/// Builds the client configuration; problems with the Secrets come back
/// as diagnostics text.
fn build(
    protocol: Protocol,
    server_name: &str,
    name: ServerName<'static>,
    ca: Option<(&ObjectKey, Option<&Secret>)>,
    client: Option<(&ObjectKey, Option<&Secret>)>,
    id: u64,
) -> Built {
    let provider = crate::crypto::provider();
    let mut problems = Vec::new();
    let verifier: Arc<dyn ServerCertVerifier> = match ca {
        None => Arc::new(Unverified(provider.clone())),
        Some((key, secret)) => match ca_roots(key, secret).and_then(|roots| {
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .map_err(|e| format!("Secret {}/{}: {e}", key.namespace, key.name))
        }) {
            Ok(v) => v,
            Err(e) => {
                let why = format!("{e}; requests to this backend get 502 until it is fixed");
                problems.push(why.clone());
                Arc::new(Refuse(why, provider.clone()))
            }
        },
    };
    let client_key = client.and_then(|(key, secret)| {
        let found = secret
            .ok_or_else(|| format!("Secret {}/{} not found", key.namespace, key.name))
            .and_then(|s| {
                key_pair(s).map_err(|e| format!("Secret {}/{} {e}", key.namespace, key.name))
            });
        match found {
            Ok(k) => Some(Arc::new(k)),
            Err(e) => {
                problems.push(format!("{e}; connecting without a client certificate"));
                None
            }
        }
    });
    // `crypto::provider()` made its provider the process default, which
    // supports both versions.
    let builder = ClientConfig::builder_with_protocol_versions(&[&version::TLS13, &version::TLS12])
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut config = match client_key {
        Some(k) => builder.with_client_cert_resolver(Arc::new(ClientCert(k))),
        None => builder.with_no_client_auth(),
    };
    let mut config_http1 = config.clone();
    config_http1.alpn_protocols = vec![b"http/1.1".to_vec()];
    config.alpn_protocols = match protocol {
        Protocol::Https => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
        _ => vec![b"h2".to_vec()],
    };
    let tls = UpstreamTls {
        server_name: server_name.to_owned(),
        verify: ca.is_some(),
        ca_secret: ca
            .filter(|(k, _)| !k.name.is_empty())
            .map(|(k, _)| format!("{}/{}", k.namespace, k.name)),
        client_certificate_secret: client.map(|(k, _)| format!("{}/{}", k.namespace, k.name)),
        name,
        config: Arc::new(config),
        config_http1: Arc::new(config_http1),
        id,
    };
    (Arc::new(tls), problems.into())
}

/// The certificates of a Secret's `ca.crt`.
pub(super) fn ca_roots(key: &ObjectKey, secret: Option<&Secret>) -> Result<RootCertStore, String> {
    if key.name.is_empty() {
        return Err("verification is on but no Secret with a ca.crt is named".to_owned());
    }
    let name = format!("Secret {}/{}", key.namespace, key.name);
    let secret = secret.ok_or_else(|| format!("{name} not found"))?;
    let pem = secret_field(secret, "ca.crt").ok_or_else(|| format!("{name} has no ca.crt"))?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{name}: ca.crt is not valid PEM: {e}"))?;
    let mut roots = RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(format!("{name}: ca.crt holds no usable certificate"));
    }
    Ok(roots)
}

/// Presents one certificate whatever the server asks for.
#[derive(Debug)]
struct ClientCert(Arc<CertifiedKey>);

impl ResolvesClientCert for ClientCert {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// Accepts any server certificate but still checks the handshake
/// signatures: the connection is encrypted to whoever holds the key of
/// the certificate presented. Upstreams without a CA use it; so do the
/// benchmarks' clients of the gateway's self-signed certificates.
#[derive(Debug)]
pub struct Unverified(Arc<rustls::crypto::CryptoProvider>);

impl Unverified {
    pub fn new(provider: Arc<rustls::crypto::CryptoProvider>) -> Unverified {
        Unverified(provider)
    }
}

impl ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Refuses every server: verification was asked for and cannot be done.
#[derive(Debug)]
struct Refuse(String, Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for Refuse {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Err(rustls::Error::General(self.0.clone()))
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General(self.0.clone()))
    }

    fn verify_tls13_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General(self.0.clone()))
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.1.signature_verification_algorithms.supported_schemes()
    }
}
