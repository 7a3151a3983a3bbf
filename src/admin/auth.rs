//! The admin port's optional bearer token (`--admin-token`).
//!
//! With a token set, every path but the probes and `/metrics` asks for it:
//! `Authorization: Bearer <token>` for scripts, or HTTP Basic with any
//! user name and the token as password, which is what lets a browser open
//! the dashboard (it prompts once and sends the credentials with the
//! page's own requests). The probes stay open for the kubelet and
//! `/metrics` for Prometheus, which have no way to hold the token.

use std::fmt;

use base64::Engine as _;
use http::{HeaderMap, header};
use ring::digest;

/// Paths served without the token.
pub const OPEN_PATHS: &[&str] = &["/healthz", "/readyz", "/metrics"];

/// A token the admin port asks for. Only its digest is kept, so that it
/// cannot leak through a debug print, and comparisons take the same time
/// whatever the guess.
#[derive(Clone)]
pub struct AdminToken(digest::Digest);

impl fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AdminToken(..)")
    }
}

/// Why a token was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("the admin token is empty")]
    Empty,
    #[error("the admin token must be visible ASCII without spaces")]
    Characters,
}

impl AdminToken {
    pub fn new(token: &str) -> Result<AdminToken, TokenError> {
        let token = token.trim();
        if token.is_empty() {
            return Err(TokenError::Empty);
        }
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(TokenError::Characters);
        }
        Ok(AdminToken(digest::digest(
            &digest::SHA256,
            token.as_bytes(),
        )))
    }

    /// Whether `headers` carry the token.
    pub fn allows(&self, headers: &HeaderMap) -> bool {
        headers
            .get_all(header::AUTHORIZATION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| self.matches_credentials(v))
    }

    fn matches_credentials(&self, value: &str) -> bool {
        let (scheme, rest) = value.trim().split_once(' ').unwrap_or((value, ""));
        let rest = rest.trim();
        if scheme.eq_ignore_ascii_case("bearer") {
            return self.is(rest.as_bytes());
        }
        if scheme.eq_ignore_ascii_case("basic") {
            let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(rest) else {
                return false;
            };
            return match decoded.iter().position(|&b| b == b':') {
                Some(i) => self.is(&decoded[i + 1..]),
                None => false,
            };
        }
        false
    }

    fn is(&self, candidate: &[u8]) -> bool {
        let theirs = digest::digest(&digest::SHA256, candidate);
        self.0
            .as_ref()
            .iter()
            .zip(theirs.as_ref())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }
}

/// The challenges of a `401`: Bearer for scripts, Basic so that browsers
/// prompt.
pub const CHALLENGES: [&str; 2] = [
    "Bearer realm=\"sluicegate-admin\"",
    "Basic realm=\"sluicegate-admin\", charset=\"UTF-8\"",
];

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(auth: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, auth.parse().unwrap());
        h
    }

    #[test]
    fn bearer_and_basic_carry_the_token() {
        let t = AdminToken::new(" s3cret-token\n").unwrap();
        assert!(t.allows(&headers("Bearer s3cret-token")));
        assert!(t.allows(&headers("bearer   s3cret-token ")));
        let basic = base64::engine::general_purpose::STANDARD.encode("admin:s3cret-token");
        assert!(t.allows(&headers(&format!("Basic {basic}"))));
        let basic = base64::engine::general_purpose::STANDARD.encode(":s3cret-token");
        assert!(t.allows(&headers(&format!("Basic {basic}"))));
        for bad in [
            "Bearer s3cret-tokenx",
            "Bearer s3cret",
            "Bearer",
            "s3cret-token",
            "Token s3cret-token",
            "Basic !!!",
            "Basic czNjcmV0LXRva2Vu",
        ] {
            assert!(!t.allows(&headers(bad)), "{bad}");
        }
        assert!(!t.allows(&HeaderMap::new()));
        assert_eq!(format!("{t:?}"), "AdminToken(..)");
    }

    #[test]
    fn unusable_tokens_are_refused() {
        assert_eq!(AdminToken::new("  ").unwrap_err(), TokenError::Empty);
        assert_eq!(
            AdminToken::new("two words").unwrap_err(),
            TokenError::Characters
        );
    }
}
