//! Server certificates from `kubernetes.io/tls` Secrets.
//!
//! An object names a Secret for some hosts (Ingress `spec.tls`, ApiRoute
//! `spec.tls`). A missing or malformed Secret, or a key that does not
//! belong to the certificate, is a warning on the object that names it:
//! its routes keep serving, and its hosts get the default certificate
//! until the Secret is fixed. A host already bound by an older object
//! keeps that object's certificate.
//!
//! Parsing a key is the expensive part (tens of microseconds with ring), so
//! parsed certificates are kept between translations, keyed by Secret and
//! by a hash of its content: a renewed Secret is parsed once, unchanged
//! ones never again.

use std::hash::{BuildHasher, Hasher};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use foldhash::HashMap;
use k8s_openapi::api::core::v1::Secret;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

use super::Ctx;
use super::diagnostics::{Kind, Reason, Subject};
use super::state::ObjectKey;
use crate::routing::{HostMatch, TlsCertificate};

const TLS_TYPE: &str = "kubernetes.io/tls";

/// Parses the certificate chain and key of a TLS Secret.
pub fn certified_key(secret: &Secret) -> Result<CertifiedKey, String> {
    if let Some(t) = secret.type_.as_deref()
        && t != TLS_TYPE
    {
        return Err(format!("has type {t:?}, not {TLS_TYPE:?}"));
    }
    key_pair(secret)
}

/// One non-empty value of a Secret. `stringData` is what the API server
/// folds into `data`; a manifest in standalone mode may still carry it.
pub(super) fn secret_field<'s>(secret: &'s Secret, name: &str) -> Option<&'s [u8]> {
    secret
        .data
        .as_ref()
        .and_then(|d| d.get(name))
        .map(|b| b.0.as_slice())
        .or_else(|| {
            secret
                .string_data
                .as_ref()
                .and_then(|d| d.get(name))
                .map(String::as_bytes)
        })
        .filter(|b| !b.is_empty())
}

/// Parses `tls.crt` and `tls.key` of a Secret of any type (client
/// certificates often live in Opaque Secrets next to a `ca.crt`).
pub(super) fn key_pair(secret: &Secret) -> Result<CertifiedKey, String> {
    let field =
        |name: &str| secret_field(secret, name).ok_or_else(|| format!("has no data[{name:?}]"));
    let (crt, key) = (field("tls.crt")?, field("tls.key")?);
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(crt)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("tls.crt is not valid PEM: {e}"))?;
    if chain.is_empty() {
        return Err("tls.crt holds no certificate".into());
    }
    let key = PrivateKeyDer::from_pem_slice(key)
        .map_err(|e| format!("tls.key holds no usable private key: {e}"))?;
    let provider = rustls::crypto::ring::default_provider();
    CertifiedKey::from_der(chain, key, &provider).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => {
            "tls.key does not belong to the certificate in tls.crt".to_owned()
        }
        e => format!("the certificate or key cannot be used: {e}"),
    })
}

/// Parsed certificates by Secret, with the hash of the content they were
/// parsed from.
type Cache = HashMap<ObjectKey, (u64, Result<Arc<CertifiedKey>, String>)>;

fn cache() -> &'static Mutex<Cache> {
    static CACHE: OnceLock<Mutex<Cache>> = OnceLock::new();
    CACHE.get_or_init(Mutex::default)
}

fn content_hash(secret: &Secret) -> u64 {
    let mut h = foldhash::fast::FixedState::with_seed(0x5eed).build_hasher();
    h.write(secret.type_.as_deref().unwrap_or("").as_bytes());
    for name in ["tls.crt", "tls.key"] {
        let data = secret.data.as_ref().and_then(|d| d.get(name));
        let text = secret.string_data.as_ref().and_then(|d| d.get(name));
        for bytes in [data.map(|b| b.0.as_slice()), text.map(String::as_bytes)] {
            let bytes = bytes.unwrap_or_default();
            h.write_usize(bytes.len());
            h.write(bytes);
        }
    }
    h.finish()
}

/// The parsed certificate of Secret `key`, from the cache when its content
/// has not changed.
fn lookup(ctx: &Ctx<'_>, key: &ObjectKey) -> Result<Arc<CertifiedKey>, String> {
    let Some(secret) = ctx.state.secrets.get(key) else {
        return Err(format!("Secret {}/{} not found", key.namespace, key.name));
    };
    let hash = content_hash(secret);
    let mut cache = cache().lock().unwrap_or_else(PoisonError::into_inner);
    if let Some((seen, parsed)) = cache.get(key)
        && *seen == hash
    {
        return parsed.clone();
    }
    let parsed = certified_key(secret)
        .map(Arc::new)
        .map_err(|e| format!("Secret {}/{} {e}", key.namespace, key.name));
    cache.insert(key.clone(), (hash, parsed.clone()));
    parsed
}

/// Forgets cached certificates of Secrets that no longer exist, so that
/// the cache never outgrows the cluster.
pub(super) fn prune(ctx: &Ctx<'_>) {
    let mut cache = cache().lock().unwrap_or_else(PoisonError::into_inner);
    if cache.len() > ctx.state.secrets.len() {
        cache.retain(|k, _| ctx.state.secrets.contains_key(k));
    }
}

/// Makes the certificate of Secret `key` the default; a problem with it
/// is reported on the Secret.
pub(super) fn bind_default(ctx: &mut Ctx<'_>, key: &ObjectKey) {
    let obj = Subject {
        kind: Kind::Secret,
        key,
    };
    match lookup(ctx, key) {
        Ok(parsed) => ctx.tls.push(TlsCertificate {
            hosts: Vec::new(),
            secret: format!("{}/{}", key.namespace, key.name),
            source: "--default-certificate".into(),
            not_after: expiry(&parsed),
            key: parsed,
        }),
        Err(e) => ctx.diags.report(
            obj,
            "",
            Reason::InvalidCertificate,
            format!("--default-certificate: {e}; using a self-signed certificate"),
        ),
    }
}

/// Binds the certificate of Secret `namespace/secret_name` to `hosts` for
/// the object `obj`; `field` names the Secret's field for diagnostics.
pub(super) fn bind(
    ctx: &mut Ctx<'_>,
    obj: Subject<'_>,
    field: &str,
    secret_name: &str,
    hosts: &[HostMatch],
) {
    let key = ObjectKey::new(obj.key.namespace.clone(), secret_name);
    let parsed = match lookup(ctx, &key) {
        Ok(k) => k,
        Err(e) => {
            ctx.diags.report(
                obj,
                field,
                Reason::InvalidCertificate,
                format!("{e}; its hosts get the default certificate"),
            );
            return;
        }
    };
    let source = ctx.source(obj);
    let secret = format!("{}/{}", key.namespace, key.name);
    let mut bound = Vec::with_capacity(hosts.len());
    for host in hosts {
        let name = host.to_string();
        match ctx.tls_claims.get(&name) {
            Some((owner, other)) if owner != &source || other != &secret => {
                let msg = format!(
                    "host {name} already has the certificate of Secret {other} from {owner}, which is older"
                );
                ctx.diags.report(obj, field, Reason::Conflict, msg);
            }
            Some(_) => {}
            None => {
                ctx.tls_claims
                    .insert(name.clone(), (source.clone(), secret.clone()));
                bound.push(name);
            }
        }
    }
    if !bound.is_empty() {
        ctx.tls.push(TlsCertificate {
            hosts: bound,
            secret,
            source,
            not_after: expiry(&parsed),
            key: parsed,
        });
    }
}

/// When the leaf certificate of `key` expires.
fn expiry(key: &rustls::sign::CertifiedKey) -> Option<i64> {
    key.cert.first().and_then(|c| crate::x509::not_after(c))
}
