//! Cache keys: what a request is stored and found under.
//!
//! A key is the SHA-256 (truncated to 128 bits) of the route, the
//! method, the consumer when consumers are isolated, and the rendered key
//! template, each length-prefixed so that no two different inputs share
//! an encoding. A cryptographic hash, not a fast one: keys are made from
//! what clients send, and a client able to make two keys collide could
//! make the cache serve one URI's response for another. 128 bits keep
//! disk file names and Redis keys short.
//!
//! A response with `Vary` is stored under a variant key: the primary key
//! holds the list of varying headers and a nonce, and the variant key
//! hashes the primary key, the nonce and the request's values of those
//! headers. Purging the primary key drops the nonce with it, so variants
//! stored before a purge can never be reached again.

use std::fmt;

use http::{HeaderMap, HeaderName, Method};

/// A key, as stored.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(pub [u8; 16]);

impl KeyId {
    /// The key as 32 lower-case hex digits: file names, Redis and
    /// Memcached keys.
    pub fn hex(&self) -> String {
        let mut s = String::with_capacity(32);
        for b in self.0 {
            s.push(char::from(HEX[usize::from(b >> 4)]));
            s.push(char::from(HEX[usize::from(b & 15)]));
        }
        s
    }

    /// Parses [`Self::hex`] back.
    pub fn from_hex(text: &str) -> Option<KeyId> {
        let bytes = text.as_bytes();
        if bytes.len() != 32 {
            return None;
        }
        let mut out = [0u8; 16];
        for (i, pair) in bytes.chunks_exact(2).enumerate() {
            let hi = hex_value(pair[0])?;
            let lo = hex_value(pair[1])?;
            out[i] = hi << 4 | lo;
        }
        Some(KeyId(out))
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        _ => None,
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.hex())
    }
}

/// Builds keys with the length-prefixed encoding of the module
/// documentation.
struct Hasher(ring::digest::Context);

impl Hasher {
    fn new(domain: &[u8]) -> Hasher {
        let mut h = Hasher(ring::digest::Context::new(&ring::digest::SHA256));
        h.field(domain);
        h
    }

    fn field(&mut self, bytes: &[u8]) {
        self.0.update(&(bytes.len() as u64).to_le_bytes());
        self.0.update(bytes);
    }

    fn finish(self) -> KeyId {
        let digest = self.0.finish();
        let mut out = [0u8; 16];
        out.copy_from_slice(&digest.as_ref()[..16]);
        KeyId(out)
    }
}

/// The primary key of a request.
pub fn primary(route: &str, method: &Method, consumer: Option<&str>, rendered: &[u8]) -> KeyId {
    let mut h = Hasher::new(b"sluicegate-cache-1");
    h.field(route.as_bytes());
    h.field(method.as_str().as_bytes());
    match consumer {
        Some(c) => {
            h.field(b"c");
            h.field(c.as_bytes());
        }
        None => h.field(b"-"),
    }
    h.field(rendered);
    h.finish()
}

/// The key of the variant of `primary` that a request with `headers`
/// selects, for a response that varies on `names` (lower case).
pub fn variant(primary: &KeyId, nonce: u64, names: &[HeaderName], headers: &HeaderMap) -> KeyId {
    let mut h = Hasher::new(b"sluicegate-cache-variant-1");
    h.field(&primary.0);
    h.field(&nonce.to_le_bytes());
    for name in names {
        h.field(name.as_str().as_bytes());
        // Several fields of one name are one value (RFC 9110 §5.3).
        let mut values = headers.get_all(name).iter();
        match values.next() {
            None => h.field(b"\0absent"),
            Some(first) => {
                let mut joined = first.as_bytes().to_vec();
                for v in values {
                    joined.extend_from_slice(b", ");
                    joined.extend_from_slice(v.as_bytes());
                }
                h.field(&joined);
            }
        }
    }
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_route_and_consumer_are_part_of_the_key() {
        let k =
            |route, method: &Method, consumer, text: &[u8]| primary(route, method, consumer, text);
        let base = k("r", &Method::GET, None, b"h/p");
        assert_ne!(base, k("r", &Method::POST, None, b"h/p"));
        assert_ne!(base, k("r", &Method::HEAD, None, b"h/p"));
        assert_ne!(base, k("r2", &Method::GET, None, b"h/p"));
        assert_ne!(base, k("r", &Method::GET, Some("alice"), b"h/p"));
        assert_ne!(
            k("r", &Method::GET, Some("alice"), b"h/p"),
            k("r", &Method::GET, Some("bob"), b"h/p")
        );
        // Length prefixes: moving bytes between fields changes the key.
        assert_ne!(
            k("ra", &Method::GET, None, b"b"),
            k("r", &Method::GET, None, b"ab")
        );
        assert_eq!(base, k("r", &Method::GET, None, b"h/p"));
    }

    #[test]
    fn variants_follow_the_varying_headers_and_the_nonce() {
        let p = primary("r", &Method::GET, None, b"k");
        let names = [HeaderName::from_static("accept-encoding")];
        let mut gzip = HeaderMap::new();
        gzip.insert("accept-encoding", "gzip".parse().unwrap());
        gzip.insert("user-agent", "a".parse().unwrap());
        let mut br = HeaderMap::new();
        br.insert("accept-encoding", "br".parse().unwrap());
        let mut gzip_other_agent = gzip.clone();
        gzip_other_agent.insert("user-agent", "b".parse().unwrap());
        let v = |n, h: &HeaderMap| variant(&p, n, &names, h);
        assert_ne!(v(1, &gzip), v(1, &br));
        assert_eq!(v(1, &gzip), v(1, &gzip_other_agent));
        assert_ne!(v(1, &gzip), v(2, &gzip));
        assert_ne!(
            v(1, &HeaderMap::new()),
            v(1, &{
                let mut e = HeaderMap::new();
                e.insert("accept-encoding", "".parse().unwrap());
                e
            })
        );
    }

    #[test]
    fn hex_round_trips() {
        let k = primary("r", &Method::GET, None, b"k");
        assert_eq!(KeyId::from_hex(&k.hex()), Some(k));
        assert_eq!(KeyId::from_hex("zz"), None);
    }
}
