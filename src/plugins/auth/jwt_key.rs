//! The keys that verify JSON Web Token signatures, whichever way they
//! were configured (a consumer Secret, a key set from `jwksUri`), and the
//! verification itself, with ring.

use ring::signature::{self, UnparsedPublicKey};

use crate::api::JwtAlgorithm;
use crate::x509::KeyAlgorithm;

/// A verification key: a consumer's, or one of a key set.
#[derive(Debug)]
pub enum Key {
    Hmac(Vec<u8>),
    /// The forms ring takes: PKCS#1 DER for RSA, the uncompressed point
    /// for P-256, the 32 bytes of an Ed25519 key.
    Public(KeyAlgorithm, Vec<u8>),
}

impl Key {
    pub fn fits(&self, alg: JwtAlgorithm) -> bool {
        matches!(
            (self, alg),
            (
                Key::Hmac(_),
                JwtAlgorithm::HS256 | JwtAlgorithm::HS384 | JwtAlgorithm::HS512
            ) | (
                Key::Public(KeyAlgorithm::Rsa, _),
                JwtAlgorithm::RS256 | JwtAlgorithm::RS384 | JwtAlgorithm::RS512
            ) | (Key::Public(KeyAlgorithm::EcP256, _), JwtAlgorithm::ES256)
                | (Key::Public(KeyAlgorithm::Ed25519, _), JwtAlgorithm::EdDSA)
        )
    }

    pub fn verify(&self, alg: JwtAlgorithm, message: &[u8], sig: &[u8]) -> bool {
        match self {
            Key::Hmac(secret) => {
                let algorithm = match alg {
                    JwtAlgorithm::HS256 => ring::hmac::HMAC_SHA256,
                    JwtAlgorithm::HS384 => ring::hmac::HMAC_SHA384,
                    JwtAlgorithm::HS512 => ring::hmac::HMAC_SHA512,
                    _ => return false,
                };
                let key = ring::hmac::Key::new(algorithm, secret);
                ring::hmac::verify(&key, message, sig).is_ok()
            }
            Key::Public(kind, bytes) => {
                let algorithm: &dyn signature::VerificationAlgorithm = match (kind, alg) {
                    (KeyAlgorithm::Rsa, JwtAlgorithm::RS256) => {
                        &signature::RSA_PKCS1_2048_8192_SHA256
                    }
                    (KeyAlgorithm::Rsa, JwtAlgorithm::RS384) => {
                        &signature::RSA_PKCS1_2048_8192_SHA384
                    }
                    (KeyAlgorithm::Rsa, JwtAlgorithm::RS512) => {
                        &signature::RSA_PKCS1_2048_8192_SHA512
                    }
                    (KeyAlgorithm::EcP256, JwtAlgorithm::ES256) => {
                        &signature::ECDSA_P256_SHA256_FIXED
                    }
                    (KeyAlgorithm::Ed25519, JwtAlgorithm::EdDSA) => &signature::ED25519,
                    _ => return false,
                };
                UnparsedPublicKey::new(algorithm, bytes)
                    .verify(message, sig)
                    .is_ok()
            }
        }
    }
}
