//! What a TLS handshake costs the server, by crypto provider and
//! certificate type, and what certificate selection costs at 10,000
//! certificates.
//!
//! Groups:
//! - `server/<provider>/<cert>/<kind>`: the server side of one handshake
//!   (TLS 1.3, X25519, AES-128-GCM), client and server in memory. Only the
//!   server's calls are timed (`iter_custom`), so the figure is the CPU a
//!   gateway spends per handshake; `kind` is `full` or `resumed` (a ticket
//!   from the previous handshake). The client is always aws-lc-rs.
//! - `sign/<provider>/<cert>`: the signature alone, the part of a full
//!   handshake the certificate type decides.
//! - `sni/10000/<case>`: `CertStore::resolve` on 10,000 exact names and
//!   1,000 wildcards, for an exact hit, a wildcard hit and a miss.
//!
//! Before the groups run, the resident memory that 10,000 parsed ECDSA
//! certificates and 10,000 parsed RSA 2048 certificates take is printed
//! (`memory/...` lines); the figures go to docs/benchmarks.md.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::sign::CertifiedKey;
use rustls::{
    ClientConfig, ClientConnection, DigitallySignedStruct, ServerConfig, ServerConnection,
    SignatureScheme,
};
use sluicegate::routing::{CertStore, TlsCertificate};

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/tests/fixtures/tls/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

/// (chain, key) in DER for `kind`: the RSA 2048 test fixture, or a fresh
/// ECDSA P-256 certificate.
fn material(kind: &str) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
    match kind {
        "rsa2048" => (
            CertificateDer::pem_slice_iter(&fixture("rsa.test.crt"))
                .collect::<Result<_, _>>()
                .unwrap(),
            PrivateKeyDer::from_pem_slice(&fixture("rsa.test.key")).unwrap(),
        ),
        _ => {
            let c = rcgen::generate_simple_self_signed(vec!["rsa.test".to_owned()]).unwrap();
            (
                vec![CertificateDer::from(c.cert.der().to_vec())],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(c.signing_key.serialize_der())),
            )
        }
    }
}

fn providers() -> [(&'static str, CryptoProvider); 2] {
    [
        ("aws-lc-rs", rustls::crypto::aws_lc_rs::default_provider()),
        ("ring", rustls::crypto::ring::default_provider()),
    ]
}

/// The provider with only X25519 and AES-128-GCM, so that both providers
/// negotiate the same.
fn pinned(mut p: CryptoProvider) -> CryptoProvider {
    p.kx_groups
        .retain(|g| g.name() == rustls::NamedGroup::X25519);
    p.cipher_suites
        .retain(|s| s.suite() == rustls::CipherSuite::TLS13_AES_128_GCM_SHA256);
    p
}

#[derive(Debug)]
struct AnyCert(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        // The client's cost is not what is measured.
        Ok(HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Moves the pending bytes of one side to the other; the time spent in
/// the server's calls is added to `server`.
fn pump(client: &mut ClientConnection, server: &mut ServerConnection, spent: &mut Duration) {
    let mut buf = Vec::new();
    loop {
        buf.clear();
        while client.wants_write() {
            client.write_tls(&mut buf).unwrap();
        }
        let to_server = !buf.is_empty();
        if to_server {
            let t = Instant::now();
            let mut r = &buf[..];
            while !r.is_empty() {
                server.read_tls(&mut r).unwrap();
            }
            server.process_new_packets().unwrap();
            *spent += t.elapsed();
        }
        buf.clear();
        let t = Instant::now();
        while server.wants_write() {
            server.write_tls(&mut buf).unwrap();
        }
        *spent += t.elapsed();
        let to_client = !buf.is_empty();
        if to_client {
            let mut r = &buf[..];
            while !r.is_empty() {
                client.read_tls(&mut r).unwrap();
            }
            client.process_new_packets().unwrap();
        }
        if !to_server && !to_client {
            return;
        }
    }
}

fn server_handshakes(c: &mut Criterion) {
    let client_provider = Arc::new(pinned(rustls::crypto::aws_lc_rs::default_provider()));
    for (pname, provider) in providers() {
        let provider = Arc::new(pinned(provider));
        for kind in ["ecdsa-p256", "rsa2048"] {
            let (chain, key) = material(kind);
            let mut server = ServerConfig::builder_with_provider(provider.clone())
                .with_protocol_versions(&[&rustls::version::TLS13])
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(chain, key)
                .unwrap();
            server.ticketer = match pname {
                "ring" => rustls::crypto::ring::Ticketer::new().unwrap(),
                _ => rustls::crypto::aws_lc_rs::Ticketer::new().unwrap(),
            };
            server.send_tls13_tickets = 1;
            let server = Arc::new(server);
            for resumed in [false, true] {
                let mut client = ClientConfig::builder_with_provider(client_provider.clone())
                    .with_protocol_versions(&[&rustls::version::TLS13])
                    .unwrap()
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(AnyCert(client_provider.clone())))
                    .with_no_client_auth();
                if !resumed {
                    client.resumption = rustls::client::Resumption::disabled();
                }
                let client = Arc::new(client);
                let expect = if resumed {
                    rustls::HandshakeKind::Resumed
                } else {
                    rustls::HandshakeKind::Full
                };
                // Each handshake leaves the client the ticket for the next.
                let handshake = |spent: &mut Duration| {
                    let mut cc = ClientConnection::new(
                        client.clone(),
                        ServerName::try_from("rsa.test").unwrap(),
                    )
                    .unwrap();
                    let mut sc = ServerConnection::new(server.clone()).unwrap();
                    pump(&mut cc, &mut sc, spent);
                    assert!(!sc.is_handshaking() && !cc.is_handshaking());
                    sc.handshake_kind()
                };
                let mut warmup = Duration::ZERO;
                handshake(&mut warmup);
                let name = format!(
                    "server/{pname}/{kind}/{}",
                    if resumed { "resumed" } else { "full" }
                );
                c.bench_function(&name, |b| {
                    b.iter_custom(|iters| {
                        let mut spent = Duration::ZERO;
                        for _ in 0..iters {
                            assert_eq!(handshake(&mut spent), Some(expect), "{name}");
                        }
                        spent
                    })
                });
            }
        }
    }
}

fn signatures(c: &mut Criterion) {
    for (pname, provider) in providers() {
        for kind in ["ecdsa-p256", "rsa2048"] {
            let (chain, key) = material(kind);
            let ck = CertifiedKey::from_der(chain, key, &provider).unwrap();
            let schemes = [
                SignatureScheme::ECDSA_NISTP256_SHA256,
                SignatureScheme::RSA_PSS_SHA256,
            ];
            let signer = ck.key.choose_scheme(&schemes).unwrap();
            let message = [7u8; 130];
            c.bench_function(&format!("sign/{pname}/{kind}"), |b| {
                b.iter(|| black_box(signer.sign(black_box(&message)).unwrap()))
            });
        }
    }
}

fn sni(c: &mut Criterion) {
    let (chain, key) = material("ecdsa-p256");
    let ck = Arc::new(CertifiedKey::from_der(chain, key, &sluicegate::crypto::provider()).unwrap());
    let mut certs = Vec::new();
    for i in 0..10_000 {
        certs.push(entry(format!("host-{i}.tenants.example.com"), &ck));
    }
    for i in 0..1_000 {
        certs.push(entry(format!("*.zone-{i}.example.net"), &ck));
    }
    let store = CertStore::build(&certs, &[]);
    let mut g = c.benchmark_group("sni/10000");
    for (case, name) in [
        ("exact", "host-5000.tenants.example.com"),
        ("wildcard", "api.zone-500.example.net"),
        ("miss", "nobody.example.org"),
    ] {
        g.bench_function(case, |b| {
            b.iter(|| black_box(store.resolve(black_box(name))))
        });
    }
    g.finish();
}

fn entry(host: String, key: &Arc<CertifiedKey>) -> TlsCertificate {
    TlsCertificate {
        hosts: vec![host],
        secret: "default/bench".into(),
        source: "Ingress default/bench".into(),
        not_after: None,
        port: None,
        key: key.clone(),
    }
}

/// Resident memory of the process, bytes.
fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

/// Prints what 10,000 parsed certificates of each kind hold in memory:
/// each is parsed from its own bytes, as 10,000 Secrets would be.
fn memory(_: &mut Criterion) {
    const N: usize = 10_000;
    let provider = sluicegate::crypto::provider();
    for kind in ["ecdsa-p256", "rsa2048"] {
        // Generated before measuring: only the parsed form is counted.
        let inputs: Vec<_> = (0..N).map(|_| material(kind)).collect();
        let before = rss();
        let parsed: Vec<Arc<CertifiedKey>> = inputs
            .into_iter()
            .map(|(chain, key)| Arc::new(CertifiedKey::from_der(chain, key, &provider).unwrap()))
            .collect();
        let certs: Vec<_> = parsed
            .iter()
            .enumerate()
            .map(|(i, k)| entry(format!("host-{i}.tenants.example.com"), k))
            .collect();
        let store = CertStore::build(&certs, &[]);
        let after = rss();
        println!(
            "memory/{kind}: {N} certificates, {} MB resident ({} bytes each)",
            after.saturating_sub(before) / 1_000_000,
            after.saturating_sub(before) / N as u64
        );
        black_box((store, certs));
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = memory, sni, signatures, server_handshakes
}
criterion_main!(benches);
