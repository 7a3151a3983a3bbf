//! Request paths in one normal form, for routing and forwarding alike.
//!
//! A proxy that routes (and authorises) by one reading of a path while the
//! upstream acts on another lets a client reach what its route forbids:
//! `/public/%2e%2e/admin` matched as under `/public/` but served by a
//! backend that decodes it as `/admin`. So the path is normalized once,
//! and that one normal form is what the router matches and what the
//! upstream receives (RFC 3986 §6.2.2):
//! - percent-encoded unreserved characters (`ALPHA DIGIT - . _ ~`) are
//!   decoded, other encodings get upper-case hex digits; a `%` not
//!   followed by two hex digits makes the request invalid;
//! - `.` and `..` segments are resolved and repeated slashes merged;
//! - `%2F` and `%5C` (an encoded `/` and `\`) follow [`EncodedSlashes`]:
//!   kept encoded (and so not separators), refused, or decoded before the
//!   segments are resolved. Never decoded for routing alone. A bare `\`
//!   (not URI syntax, but accepted by many parsers) is never a separator
//!   either, and is refused where the encoded ones are.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

/// What `%2F` and `%5C` in a request path mean.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EncodedSlashes {
    /// Kept encoded: part of a segment, not a separator (the default; what
    /// most backends expect of an encoded slash).
    #[default]
    Keep,
    /// The request is refused with `400`, and so is one with a bare `\`.
    Reject,
    /// Decoded to `/` and `\` before `.` and `..` segments are resolved.
    Decode,
}

impl std::str::FromStr for EncodedSlashes {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "keep" => Ok(EncodedSlashes::Keep),
            "reject" => Ok(EncodedSlashes::Reject),
            "decode" => Ok(EncodedSlashes::Decode),
            _ => Err(format!("expected keep, reject or decode, got {s:?}")),
        }
    }
}

/// Why a path has no normal form.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("invalid percent-encoding in the path")]
    InvalidEncoding,
    #[error("encoded slash in the path")]
    EncodedSlash,
    #[error("backslash in the path")]
    Backslash,
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Whether `path` may need any work: most paths have no `%`, no `//` and
/// no segment that starts with a dot, and are returned as they are.
fn suspect(path: &[u8]) -> bool {
    path.first() != Some(&b'/')
        || path
            .iter()
            .enumerate()
            .any(|(i, &b)| b == b'%' || (b == b'/' && matches!(path.get(i + 1), Some(b'/' | b'.'))))
}

/// The normal form of `path` (see the module documentation). Allocates
/// only when the path needs it.
pub fn normalize_path(path: &str, slashes: EncodedSlashes) -> Result<Cow<'_, str>, PathError> {
    let bytes = path.as_bytes();
    // A bare `\` is not URI syntax, and a backend that reads `%5C` as a
    // separator reads it so too: the rule that refuses one refuses both.
    if slashes == EncodedSlashes::Reject && bytes.contains(&b'\\') {
        return Err(PathError::Backslash);
    }
    if !suspect(bytes) {
        return Ok(Cow::Borrowed(path));
    }
    let decoded = decode(bytes, slashes)?;
    let resolved = resolve(&decoded);
    if resolved == path {
        return Ok(Cow::Borrowed(path));
    }
    Ok(Cow::Owned(resolved))
}

/// Decodes what may be decoded; everything else stays encoded.
fn decode(bytes: &[u8], slashes: EncodedSlashes) -> Result<String, PathError> {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b != b'%' {
            out.push(b);
            i += 1;
            continue;
        }
        let (Some(hi), Some(lo)) = (
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) else {
            return Err(PathError::InvalidEncoding);
        };
        let c = hi << 4 | lo;
        i += 3;
        if is_unreserved(c) {
            out.push(c);
            continue;
        }
        if c == b'/' || c == b'\\' {
            match slashes {
                EncodedSlashes::Reject => return Err(PathError::EncodedSlash),
                EncodedSlashes::Decode => {
                    out.push(c);
                    continue;
                }
                EncodedSlashes::Keep => {}
            }
        }
        out.extend_from_slice(&[b'%', HEX[usize::from(hi)], HEX[usize::from(lo)]]);
    }
    // Only ASCII went in, and only ASCII came out of the escapes.
    String::from_utf8(out).map_err(|_| PathError::InvalidEncoding)
}

/// Resolves `.` and `..` segments and merges repeated slashes.
fn resolve(path: &str) -> String {
    let mut segs: Vec<&str> = Vec::new();
    for seg in path.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                segs.pop();
            }
            s => segs.push(s),
        }
    }
    let trailing = path.ends_with('/') || path.ends_with("/.") || path.ends_with("/..");
    let mut out = String::with_capacity(path.len());
    for s in &segs {
        out.push('/');
        out.push_str(s);
    }
    if trailing || out.is_empty() {
        out.push('/');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(p: &str) -> String {
        normalize_path(p, EncodedSlashes::Keep)
            .unwrap()
            .into_owned()
    }

    #[test]
    fn dot_segments_and_slashes() {
        assert_eq!(norm("/a/b"), "/a/b");
        assert!(matches!(
            normalize_path("/a/b", EncodedSlashes::Keep),
            Ok(Cow::Borrowed(_))
        ));
        assert_eq!(norm("/a//b"), "/a/b");
        assert_eq!(norm("/a/./b"), "/a/b");
        assert_eq!(norm("/public/../admin"), "/admin");
        assert_eq!(norm("/../../etc"), "/etc");
        assert_eq!(norm("/a/b/.."), "/a/");
        assert_eq!(norm("/a/"), "/a/");
        assert_eq!(norm("/"), "/");
        assert_eq!(norm("/.."), "/");
        assert_eq!(norm("/a..b/c"), "/a..b/c");
        assert_eq!(norm("/.well-known/x"), "/.well-known/x");
    }

    #[test]
    fn encoded_dots_are_decoded_before_dot_segments() {
        assert_eq!(norm("/a/%2e%2e/admin"), "/admin");
        assert_eq!(norm("/a/%2E%2E/admin"), "/admin");
        assert_eq!(norm("/a/.%2e/admin"), "/admin");
        assert_eq!(norm("/public/%2e/x"), "/public/x");
        assert_eq!(norm("/%7euser/%41"), "/~user/A");
    }

    #[test]
    fn other_encodings_stay_with_upper_case_hex() {
        assert_eq!(norm("/a%20b/%e2%82%ac"), "/a%20b/%E2%82%AC");
        assert_eq!(norm("/a%00b"), "/a%00b");
        assert_eq!(norm("/a%3fb"), "/a%3Fb");
    }

    #[test]
    fn broken_encodings_are_errors() {
        for bad in ["/a%", "/a%2", "/a%zz", "/a%2g/b", "/%%41"] {
            assert_eq!(
                normalize_path(bad, EncodedSlashes::Keep),
                Err(PathError::InvalidEncoding),
                "{bad}"
            );
        }
    }

    #[test]
    fn encoded_slashes_follow_the_rule() {
        let p = "/a/%2e%2e%2fadmin/%5Cx";
        assert_eq!(
            normalize_path(p, EncodedSlashes::Keep).unwrap(),
            "/a/..%2Fadmin/%5Cx"
        );
        assert_eq!(
            normalize_path(p, EncodedSlashes::Reject),
            Err(PathError::EncodedSlash)
        );
        assert_eq!(
            normalize_path(p, EncodedSlashes::Decode).unwrap(),
            "/admin/\\x"
        );
        assert_eq!(
            normalize_path("/files/a%2Fb", EncodedSlashes::Keep).unwrap(),
            "/files/a%2Fb"
        );
    }

    #[test]
    fn bare_backslashes_are_never_separators_and_refused_with_encoded_ones() {
        let p = "/public\\..\\admin";
        assert_eq!(normalize_path(p, EncodedSlashes::Keep).unwrap(), p); // ok: test code
        assert_eq!(normalize_path(p, EncodedSlashes::Decode).unwrap(), p); // ok: test code
        assert_eq!(
            normalize_path(p, EncodedSlashes::Reject),
            Err(PathError::Backslash)
        );
        let plain = normalize_path("/plain/path", EncodedSlashes::Reject).unwrap(); // ok: test code
        assert_eq!(plain, "/plain/path");
    }

    #[test]
    fn rules_parse() {
        assert_eq!("Keep".parse(), Ok(EncodedSlashes::Keep));
        assert_eq!("reject".parse(), Ok(EncodedSlashes::Reject));
        assert_eq!("DECODE".parse(), Ok(EncodedSlashes::Decode));
        assert!("drop".parse::<EncodedSlashes>().is_err());
    }
}
