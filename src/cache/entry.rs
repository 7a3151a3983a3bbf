//! What the cache stores: an entry (a response's metadata and body) or a
//! variant index (the headers a response varies on), and their encoding
//! for the stores outside this process (disk, Redis, Memcached).
//!
//! The encoding is hand-written rather than serde's: header values are
//! bytes, not text (JSON would need an escape scheme), and a fixed binary
//! layout lets the disk store check lengths and a checksum before it
//! reads a body, and stream a large body while it verifies it:
//!
//! ```text
//! "SGC1" kind:u8 0:u8*3 meta_len:u32 body_len:u64 head_crc:u32  (24 bytes)
//! meta (meta_len bytes)
//! body (body_len bytes)
//! body_crc:u32
//! ```
//!
//! `head_crc` covers the first 20 bytes and the metadata; `body_crc` the
//! body. Integers are little-endian. A value whose lengths or checksums do
//! not add up is refused, never served.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use http_cache_semantics::CachePolicy;

use super::key::KeyId;

/// Bytes before the metadata.
pub const HEADER_LEN: usize = 24;
/// Bytes after the body.
pub const TRAILER_LEN: usize = 4;
const MAGIC: &[u8; 4] = b"SGC1";
const KIND_ENTRY: u8 = 1;
const KIND_VARY: u8 = 2;
/// Metadata larger than this is refused when read (headers are limited
/// to far less on the way in).
const MAX_META: u32 = 1 << 20;

/// A stored response, without its body.
#[derive(Debug, Clone)]
pub struct Meta {
    pub status: StatusCode,
    pub method: Method,
    /// The response's headers as served from the cache.
    pub headers: HeaderMap,
    /// The request fields that decide whether the entry may serve another
    /// request (see [`super::freshness::RequestView`]).
    pub request: HeaderMap,
    /// When the response arrived, in Unix milliseconds.
    pub response_time: u64,
    /// When it was stored: tag purges after this drop it.
    pub stored_at: u64,
    /// When the store may forget it, in Unix milliseconds.
    pub expires_at: u64,
    /// The freshness lifetime the route gave a response without one
    /// (`defaultTtl`), in seconds; 0 if none.
    pub default_ttl: u32,
    pub key: KeyId,
    /// The route that stored it, for metrics.
    pub route: Arc<str>,
    /// `Surrogate-Key` / `Cache-Tag` values.
    pub tags: Box<[Box<str>]>,
}

/// A stored response's metadata with its RFC 9111 policy, ready to
/// decide.
#[derive(Debug)]
pub struct Entry {
    pub meta: Meta,
    pub policy: CachePolicy,
    pub body_len: u64,
}

impl Entry {
    pub fn new(meta: Meta, body_len: u64) -> Entry {
        let policy = super::freshness::policy(&meta);
        Entry {
            meta,
            policy,
            body_len,
        }
    }
}

/// The headers a stored response varies on, under its primary key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VaryIndex {
    /// Lower-case names, in the response's order.
    pub names: Box<[HeaderName]>,
    /// Part of every variant key (see [`super::key`]).
    pub nonce: u64,
    pub expires_at: u64,
}

/// Why a stored value cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CodecError {
    #[error("not a cache entry")]
    Magic,
    #[error("truncated ({0})")]
    Truncated(&'static str),
    #[error("checksum mismatch ({0})")]
    Checksum(&'static str),
    #[error("malformed metadata ({0})")]
    Malformed(&'static str),
}

/// The fixed header of an encoded value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub vary: bool,
    pub meta_len: u32,
    pub body_len: u64,
    head_crc: u32,
}

impl Header {
    pub fn parse(bytes: &[u8]) -> Result<Header, CodecError> {
        if bytes.len() < HEADER_LEN {
            return Err(CodecError::Truncated("header"));
        }
        if &bytes[..4] != MAGIC {
            return Err(CodecError::Magic);
        }
        let vary = match bytes[4] {
            KIND_ENTRY => false,
            KIND_VARY => true,
            _ => return Err(CodecError::Malformed("kind")),
        };
        let meta_len = u32::from_le_bytes(bytes[8..12].try_into().map_err(|_| CodecError::Magic)?);
        let body_len = u64::from_le_bytes(bytes[12..20].try_into().map_err(|_| CodecError::Magic)?);
        let head_crc = u32::from_le_bytes(bytes[20..24].try_into().map_err(|_| CodecError::Magic)?);
        if meta_len > MAX_META {
            return Err(CodecError::Malformed("metadata length"));
        }
        Ok(Header {
            vary,
            meta_len,
            body_len,
            head_crc,
        })
    }

    /// The whole encoded length.
    pub fn total_len(&self) -> u64 {
        HEADER_LEN as u64 + u64::from(self.meta_len) + self.body_len + TRAILER_LEN as u64
    }

    /// Checks the metadata against the header's checksum.
    pub fn check_meta(&self, header: &[u8], meta: &[u8]) -> Result<(), CodecError> {
        let mut crc = crc32fast::Hasher::new();
        crc.update(&header[..20]);
        crc.update(meta);
        if crc.finalize() == self.head_crc {
            Ok(())
        } else {
            Err(CodecError::Checksum("metadata"))
        }
    }
}

/// A decoded value.
#[derive(Debug)]
pub enum Decoded {
    Entry(Box<Meta>, Bytes),
    Vary(VaryIndex),
}

/// Decodes a whole value, checking lengths and checksums.
pub fn decode(bytes: Bytes) -> Result<Decoded, CodecError> {
    let header = Header::parse(&bytes)?;
    if bytes.len() as u64 != header.total_len() {
        return Err(CodecError::Truncated("length"));
    }
    let meta_end = HEADER_LEN + header.meta_len as usize;
    let meta = &bytes[HEADER_LEN..meta_end];
    header.check_meta(&bytes, meta)?;
    if header.vary {
        return decode_vary(meta).map(Decoded::Vary);
    }
    let body_end = bytes.len() - TRAILER_LEN;
    let body = bytes.slice(meta_end..body_end);
    let want = u32::from_le_bytes(
        bytes[body_end..]
            .try_into()
            .map_err(|_| CodecError::Truncated("trailer"))?,
    );
    if crc32fast::hash(&body) != want {
        return Err(CodecError::Checksum("body"));
    }
    Ok(Decoded::Entry(Box::new(decode_meta(meta)?), body))
}

/// Encodes an entry with its body.
pub fn encode_entry(meta: &Meta, body: &[u8]) -> Vec<u8> {
    let mut out = encode_entry_head(meta, body.len() as u64, body.len());
    out.extend_from_slice(body);
    out.extend_from_slice(&crc32fast::hash(body).to_le_bytes());
    out
}

/// The header and metadata of an entry whose body (`body_len` bytes)
/// and body checksum follow; `room` more bytes are reserved.
pub fn encode_entry_head(meta: &Meta, body_len: u64, room: usize) -> Vec<u8> {
    let mut m = Vec::with_capacity(256);
    m.extend_from_slice(&meta.status.as_u16().to_le_bytes());
    put_str(&mut m, meta.method.as_str().as_bytes());
    m.extend_from_slice(&meta.response_time.to_le_bytes());
    m.extend_from_slice(&meta.stored_at.to_le_bytes());
    m.extend_from_slice(&meta.expires_at.to_le_bytes());
    m.extend_from_slice(&meta.default_ttl.to_le_bytes());
    m.extend_from_slice(&meta.key.0);
    put_str(&mut m, meta.route.as_bytes());
    m.extend_from_slice(&(meta.tags.len() as u16).to_le_bytes());
    for t in meta.tags.iter() {
        put_str(&mut m, t.as_bytes());
    }
    put_headers(&mut m, &meta.headers);
    put_headers(&mut m, &meta.request);
    frame_head(KIND_ENTRY, &m, body_len, room + TRAILER_LEN)
}

/// Encodes a variant index.
pub fn encode_vary(index: &VaryIndex) -> Vec<u8> {
    let mut m = Vec::with_capacity(64);
    m.extend_from_slice(&index.nonce.to_le_bytes());
    m.extend_from_slice(&index.expires_at.to_le_bytes());
    m.extend_from_slice(&(index.names.len() as u16).to_le_bytes());
    for n in index.names.iter() {
        put_str(&mut m, n.as_str().as_bytes());
    }
    let mut out = frame_head(KIND_VARY, &m, 0, TRAILER_LEN);
    out.extend_from_slice(&crc32fast::hash(&[]).to_le_bytes());
    out
}

fn frame_head(kind: u8, meta: &[u8], body_len: u64, room: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + meta.len() + room);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[kind, 0, 0, 0]);
    out.extend_from_slice(&(meta.len() as u32).to_le_bytes());
    out.extend_from_slice(&body_len.to_le_bytes());
    let mut crc = crc32fast::Hasher::new();
    crc.update(&out);
    crc.update(meta);
    out.extend_from_slice(&crc.finalize().to_le_bytes());
    out.extend_from_slice(meta);
    out
}

fn put_str(out: &mut Vec<u8>, s: &[u8]) {
    let len = s.len().min(usize::from(u16::MAX));
    out.extend_from_slice(&(len as u16).to_le_bytes());
    out.extend_from_slice(&s[..len]);
}

fn put_headers(out: &mut Vec<u8>, headers: &HeaderMap) {
    out.extend_from_slice(&(headers.len().min(usize::from(u16::MAX)) as u16).to_le_bytes());
    for (name, value) in headers.iter().take(usize::from(u16::MAX)) {
        put_str(out, name.as_str().as_bytes());
        out.extend_from_slice(&(value.len() as u32).to_le_bytes());
        out.extend_from_slice(value.as_bytes());
    }
}

/// Reads the metadata fields in order.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], CodecError> {
        if self.0.len() < n {
            return Err(CodecError::Malformed("short"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u16(&mut self) -> Result<u16, CodecError> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32, CodecError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, CodecError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], CodecError> {
        self.take(N)?
            .try_into()
            .map_err(|_| CodecError::Malformed("short"))
    }

    fn str(&mut self) -> Result<&'a [u8], CodecError> {
        let n = usize::from(self.u16()?);
        self.take(n)
    }

    fn text(&mut self) -> Result<&'a str, CodecError> {
        std::str::from_utf8(self.str()?).map_err(|_| CodecError::Malformed("text"))
    }

    fn headers(&mut self) -> Result<HeaderMap, CodecError> {
        let n = usize::from(self.u16()?);
        let mut map = HeaderMap::with_capacity(n);
        for _ in 0..n {
            let name = HeaderName::from_bytes(self.str()?)
                .map_err(|_| CodecError::Malformed("header name"))?;
            let len = self.u32()? as usize;
            let value = HeaderValue::from_bytes(self.take(len)?)
                .map_err(|_| CodecError::Malformed("header value"))?;
            map.append(name, value);
        }
        Ok(map)
    }
}

/// Decodes an entry's metadata.
pub fn decode_meta(bytes: &[u8]) -> Result<Meta, CodecError> {
    let mut r = Reader(bytes);
    let status = StatusCode::from_u16(r.u16()?).map_err(|_| CodecError::Malformed("status"))?;
    let method = Method::from_bytes(r.str()?).map_err(|_| CodecError::Malformed("method"))?;
    let response_time = r.u64()?;
    let stored_at = r.u64()?;
    let expires_at = r.u64()?;
    let default_ttl = r.u32()?;
    let key = KeyId(r.array()?);
    let route: Arc<str> = r.text()?.into();
    let ntags = usize::from(r.u16()?);
    let mut tags = Vec::with_capacity(ntags);
    for _ in 0..ntags {
        tags.push(r.text()?.into());
    }
    let headers = r.headers()?;
    let request = r.headers()?;
    if !r.0.is_empty() {
        return Err(CodecError::Malformed("trailing bytes"));
    }
    Ok(Meta {
        status,
        method,
        headers,
        request,
        response_time,
        stored_at,
        expires_at,
        default_ttl,
        key,
        route,
        tags: tags.into_boxed_slice(),
    })
}

/// Decodes a variant index.
pub fn decode_vary(bytes: &[u8]) -> Result<VaryIndex, CodecError> {
    let mut r = Reader(bytes);
    let nonce = r.u64()?;
    let expires_at = r.u64()?;
    let n = usize::from(r.u16()?);
    let mut names = Vec::with_capacity(n);
    for _ in 0..n {
        names.push(
            HeaderName::from_bytes(r.str()?).map_err(|_| CodecError::Malformed("vary name"))?,
        );
    }
    if !r.0.is_empty() {
        return Err(CodecError::Malformed("trailing bytes"));
    }
    Ok(VaryIndex {
        names: names.into_boxed_slice(),
        nonce,
        expires_at,
    })
}

/// Unix milliseconds of `t`.
pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The time of Unix milliseconds `ms`.
pub fn from_unix_ms(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn meta() -> Meta {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", "text/plain".parse().unwrap());
        headers.append("x-bin", HeaderValue::from_bytes(b"\xff\xfe").unwrap());
        headers.insert("cache-control", "max-age=60".parse().unwrap());
        let mut request = HeaderMap::new();
        request.insert("accept-encoding", "gzip".parse().unwrap());
        Meta {
            status: StatusCode::OK,
            method: Method::GET,
            headers,
            request,
            response_time: 1_700_000_000_000,
            stored_at: 1_700_000_000_001,
            expires_at: 1_700_000_060_000,
            default_ttl: 0,
            key: KeyId([7; 16]),
            route: "default/shop/all".into(),
            tags: vec!["product-1".into(), "catalog".into()].into_boxed_slice(),
        }
    }

    #[test]
    fn entries_round_trip() {
        let m = meta();
        let bytes = Bytes::from(encode_entry(&m, b"hello"));
        let Decoded::Entry(back, body) = decode(bytes).unwrap() else {
            panic!("entry expected");
        };
        assert_eq!(body, "hello");
        assert_eq!(back.headers, m.headers);
        assert_eq!(back.request, m.request);
        assert_eq!(back.tags, m.tags);
        assert_eq!(back.route, m.route);
        assert_eq!(back.key, m.key);
        assert_eq!((back.status, back.method), (m.status, m.method));
        assert_eq!(
            (back.response_time, back.stored_at, back.expires_at),
            (m.response_time, m.stored_at, m.expires_at)
        );
    }

    #[test]
    fn vary_indexes_round_trip() {
        let v = VaryIndex {
            names: vec![HeaderName::from_static("accept-encoding")].into_boxed_slice(),
            nonce: 42,
            expires_at: 9,
        };
        let Decoded::Vary(back) = decode(Bytes::from(encode_vary(&v))).unwrap() else {
            panic!("vary expected");
        };
        assert_eq!(back, v);
    }

    #[test]
    fn damaged_values_are_refused() {
        let good = encode_entry(&meta(), b"hello world");
        // Every truncation is refused.
        for n in 0..good.len() {
            assert!(decode(Bytes::copy_from_slice(&good[..n])).is_err(), "{n}");
        }
        // Every single flipped bit is refused.
        for i in 0..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0x10;
            assert!(decode(Bytes::from(bad)).is_err(), "byte {i}");
        }
        // Extra bytes too.
        let mut long = good.clone();
        long.push(0);
        assert_eq!(
            decode(Bytes::from(long)).unwrap_err(),
            CodecError::Truncated("length")
        );
    }
}
