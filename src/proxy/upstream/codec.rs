//! HTTP/1.1 wire format for the upstream side: request heads out,
//! response heads and bodies in.
//!
//! Framing is always decided here, never copied from the client: the
//! request gets its own `Content-Length` or chunked encoding, and a
//! response whose framing is ambiguous (both `Transfer-Encoding` and
//! `Content-Length`, or conflicting lengths) is read safely and its
//! connection never reused, so nothing can be smuggled between requests.

use std::mem::MaybeUninit;

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode, Version};

use crate::proxy::headers::{Span, content_length, header_map};

/// Largest response head accepted.
pub const MAX_HEAD: usize = 64 * 1024;
/// Most response headers accepted.
const MAX_HEADERS: usize = 128;

/// Why an upstream's bytes could not be read as HTTP/1.1.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CodecError {
    #[error("malformed response head: {0}")]
    Head(&'static str),
    #[error("response head larger than {MAX_HEAD} bytes")]
    HeadTooLarge,
    #[error("conflicting Content-Length headers")]
    ConflictingLength,
    #[error("malformed chunked encoding: {0}")]
    Chunked(&'static str),
}

/// How the request body is sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestFraming {
    None,
    Length(u64),
    Chunked,
}

/// Appends one chunk of a chunked body.
pub fn encode_chunk(out: &mut Vec<u8>, data: &[u8]) {
    out.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

/// The end of a chunked body, with optional trailers.
pub fn encode_last_chunk(out: &mut Vec<u8>, trailers: Option<&HeaderMap>) {
    out.extend_from_slice(b"0\r\n");
    for (name, value) in trailers.into_iter().flatten() {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// How a response body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyFraming {
    /// No body (HEAD, 1xx, 204, 304, or `Content-Length: 0`).
    Empty,
    Length(u64),
    Chunked,
    /// Until the upstream closes; the connection cannot be reused.
    UntilClose,
}

/// A parsed response head.
#[derive(Debug)]
pub struct ResponseHead {
    pub status: StatusCode,
    /// Without hop-by-hop headers.
    pub headers: HeaderMap,
    pub framing: BodyFraming,
    /// Whether the connection may carry another request afterwards.
    pub keep_alive: bool,
    /// Whether the upstream agreed to switch protocols (`101`).
    pub upgrade: bool,
}

/// Parses a response head from the start of `buf`, consuming it. Returns
/// `Ok(None)` when more bytes are needed.
pub fn parse_response_head(
    buf: &mut BytesMut,
    method: &Method,
) -> Result<Option<ResponseHead>, CodecError> {
    // Uninitialized slots: initializing all of them would cost more than
    // parsing a typical head.
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut []);
    let parsed = httparse::ParserConfig::default()
        .parse_response_with_uninit_headers(&mut resp, buf, &mut slots);
    let len = match parsed {
        Ok(httparse::Status::Complete(n)) if n <= MAX_HEAD => n,
        Ok(httparse::Status::Complete(_)) => return Err(CodecError::HeadTooLarge),
        Ok(httparse::Status::Partial) => {
            return if buf.len() > MAX_HEAD {
                Err(CodecError::HeadTooLarge)
            } else {
                Ok(None)
            };
        }
        Err(httparse::Error::TooManyHeaders) => return Err(CodecError::Head("too many headers")),
        Err(_) => return Err(CodecError::Head("invalid syntax")),
    };
    let code = resp.code.ok_or(CodecError::Head("missing status"))?;
    let status = StatusCode::from_u16(code).map_err(|_| CodecError::Head("invalid status"))?;
    let version = if resp.version == Some(0) {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };

    // Hop-by-hop headers are dropped here, once, instead of being removed
    // from the map afterwards.
    let mut connection_close = version == Version::HTTP_10;
    let mut named: Vec<&[u8]> = Vec::new();
    let mut chunked = false;
    let mut transfer_encoding = false;
    let mut length: Option<u64> = None;
    let mut conflicting = false;
    for h in resp.headers.iter() {
        if h.name.eq_ignore_ascii_case("connection") {
            for token in h.value.split(|b| *b == b',') {
                let token = token.trim_ascii();
                if token.eq_ignore_ascii_case(b"close") {
                    connection_close = true;
                } else if token.eq_ignore_ascii_case(b"keep-alive") {
                    if version == Version::HTTP_10 {
                        connection_close = false;
                    }
                } else if !token.eq_ignore_ascii_case(b"upgrade") {
                    named.push(token);
                }
            }
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            transfer_encoding = true;
            chunked = h
                .value
                .rsplit(|b| *b == b',')
                .next()
                .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        } else if h.name.eq_ignore_ascii_case("content-length") {
            let n = content_length(h.value).ok_or(CodecError::Head("invalid Content-Length"))?;
            if length.is_some_and(|l| l != n) {
                conflicting = true;
            }
            length = Some(n);
        }
    }
    if conflicting && !transfer_encoding {
        return Err(CodecError::ConflictingLength);
    }

    let base = buf.as_ptr();
    let mut kept = [Span::default(); MAX_HEADERS];
    let mut n_kept = 0;
    for h in resp.headers.iter() {
        let name = h.name.as_bytes();
        let hop = is_hop_by_hop(h.name) || named.iter().any(|n| n.eq_ignore_ascii_case(name));
        if hop && !(code == 101 && name.eq_ignore_ascii_case(b"upgrade")) {
            continue;
        }
        // A response with Transfer-Encoding must not pass a Content-Length on.
        if transfer_encoding && name.eq_ignore_ascii_case(b"content-length") {
            continue;
        }
        kept[n_kept] = Span::of(base, h);
        n_kept += 1;
    }
    let head = buf.split_to(len).freeze();
    let mut headers = header_map(&head, &kept[..n_kept]).map_err(CodecError::Head)?;

    let upgrade = code == 101;
    let framing =
        if *method == Method::HEAD || (100..200).contains(&code) || code == 204 || code == 304 {
            BodyFraming::Empty
        } else if transfer_encoding {
            if chunked {
                BodyFraming::Chunked
            } else {
                BodyFraming::UntilClose
            }
        } else {
            match length {
                Some(0) => BodyFraming::Empty,
                Some(n) => BodyFraming::Length(n),
                None => BodyFraming::UntilClose,
            }
        };
    if upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
    // With both framings present the message was ambiguous; reading it by
    // Transfer-Encoding is safe, reusing the connection is not.
    let ambiguous = transfer_encoding && length.is_some();
    let keep_alive =
        !(connection_close || upgrade || framing == BodyFraming::UntilClose || ambiguous);
    Ok(Some(ResponseHead {
        status,
        headers,
        framing,
        keep_alive,
        upgrade,
    }))
}

fn is_hop_by_hop(name: &str) -> bool {
    [
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    ]
    .iter()
    .any(|h| h.eq_ignore_ascii_case(name))
}

/// What a chunked decoder produced.
#[derive(Debug, PartialEq, Eq)]
pub enum Chunk {
    Data(Bytes),
    /// The body ended, with these trailers (possibly empty).
    End(HeaderMap),
    /// More input is needed.
    NeedMore,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ChunkState {
    Size,
    Data(u64),
    DataEnd,
    Trailers,
    Done,
}

/// Incremental decoder of `Transfer-Encoding: chunked`.
#[derive(Debug)]
pub struct ChunkedDecoder {
    state: ChunkState,
    trailers: HeaderMap,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        ChunkedDecoder {
            state: ChunkState::Size,
            trailers: HeaderMap::new(),
        }
    }
}

/// Longest chunk-size line accepted (size plus extensions).
const MAX_CHUNK_LINE: usize = 4096;

impl ChunkedDecoder {
    /// Decodes as much of `buf` as possible, consuming what it used.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Chunk, CodecError> {
        loop {
            match self.state {
                ChunkState::Done => return Ok(Chunk::End(std::mem::take(&mut self.trailers))),
                ChunkState::Size => {
                    let Some(eol) = find_crlf(buf) else {
                        return if buf.len() > MAX_CHUNK_LINE {
                            Err(CodecError::Chunked("chunk size line too long"))
                        } else {
                            Ok(Chunk::NeedMore)
                        };
                    };
                    let line = &buf[..eol];
                    let size_part = line
                        .split(|b| *b == b';')
                        .next()
                        .unwrap_or(&[])
                        .trim_ascii();
                    if size_part.is_empty() || size_part.len() > 15 {
                        return Err(CodecError::Chunked("invalid chunk size"));
                    }
                    let mut size: u64 = 0;
                    for &b in size_part {
                        let d = (b as char)
                            .to_digit(16)
                            .ok_or(CodecError::Chunked("invalid chunk size"))?;
                        size = size * 16 + u64::from(d);
                    }
                    buf.advance(eol + 2);
                    self.state = if size == 0 {
                        ChunkState::Trailers
                    } else {
                        ChunkState::Data(size)
                    };
                }
                ChunkState::Data(remaining) => {
                    if buf.is_empty() {
                        return Ok(Chunk::NeedMore);
                    }
                    let n = (buf.len() as u64).min(remaining) as usize;
                    let data = buf.split_to(n).freeze();
                    let left = remaining - n as u64;
                    self.state = if left == 0 {
                        ChunkState::DataEnd
                    } else {
                        ChunkState::Data(left)
                    };
                    return Ok(Chunk::Data(data));
                }
                ChunkState::DataEnd => {
                    if buf.len() < 2 {
                        return Ok(Chunk::NeedMore);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(CodecError::Chunked("missing CRLF after chunk data"));
                    }
                    buf.advance(2);
                    self.state = ChunkState::Size;
                }
                ChunkState::Trailers => {
                    let Some(eol) = find_crlf(buf) else {
                        return if buf.len() > MAX_HEAD {
                            Err(CodecError::Chunked("trailers too large"))
                        } else {
                            Ok(Chunk::NeedMore)
                        };
                    };
                    if eol == 0 {
                        buf.advance(2);
                        self.state = ChunkState::Done;
                        continue;
                    }
                    let line = buf.split_to(eol + 2);
                    let line = &line[..eol];
                    let colon = line
                        .iter()
                        .position(|b| *b == b':')
                        .ok_or(CodecError::Chunked("malformed trailer"))?;
                    let name = HeaderName::from_bytes(line[..colon].trim_ascii())
                        .map_err(|_| CodecError::Chunked("malformed trailer name"))?;
                    let value = HeaderValue::from_bytes(line[colon + 1..].trim_ascii())
                        .map_err(|_| CodecError::Chunked("malformed trailer value"))?;
                    if self.trailers.len() >= MAX_HEADERS {
                        return Err(CodecError::Chunked("too many trailers"));
                    }
                    self.trailers.append(name, value);
                }
            }
        }
    }
}

fn find_crlf(buf: &[u8]) -> Option<usize> {
    buf.windows(2).position(|w| w == b"\r\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(text: &str, method: &Method) -> Result<Option<ResponseHead>, CodecError> {
        let mut buf = BytesMut::from(text);
        parse_response_head(&mut buf, method)
    }

    #[test]
    fn response_heads_parse_and_drop_hop_by_hop() {
        let h = head(
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: x-private\r\nX-Private: 1\r\nKeep-Alive: t=5\r\nX-Kept: yes\r\n\r\nhello",
            &Method::GET,
        )
        .unwrap()
        .unwrap();
        assert_eq!(h.status, StatusCode::OK);
        assert_eq!(h.framing, BodyFraming::Length(5));
        assert!(h.keep_alive);
        assert_eq!(h.headers.len(), 2, "{:?}", h.headers);
        assert_eq!(h.headers["content-length"], "5");
        assert_eq!(h.headers["x-kept"], "yes");
    }

    #[test]
    fn partial_heads_ask_for_more() {
        assert!(
            head("HTTP/1.1 200 OK\r\nContent-Le", &Method::GET)
                .unwrap()
                .is_none()
        );
        let big = format!("HTTP/1.1 200 OK\r\nx: {}", "a".repeat(MAX_HEAD + 1));
        assert_eq!(
            head(&big, &Method::GET).unwrap_err(),
            CodecError::HeadTooLarge
        );
    }

    #[test]
    fn framing_rules() {
        let f = |t: &str, m: &Method| head(t, m).unwrap().unwrap();
        assert_eq!(
            f("HTTP/1.1 204 No Content\r\n\r\n", &Method::GET).framing,
            BodyFraming::Empty
        );
        assert_eq!(
            f(
                "HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n",
                &Method::HEAD
            )
            .framing,
            BodyFraming::Empty
        );
        assert_eq!(
            f("HTTP/1.1 304 Not Modified\r\n\r\n", &Method::GET).framing,
            BodyFraming::Empty
        );
        let chunked = f(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            &Method::GET,
        );
        assert_eq!(chunked.framing, BodyFraming::Chunked);
        assert!(chunked.keep_alive);
        let eof = f("HTTP/1.1 200 OK\r\n\r\n", &Method::GET);
        assert_eq!(eof.framing, BodyFraming::UntilClose);
        assert!(!eof.keep_alive);
        let old = f("HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n", &Method::GET);
        assert!(!old.keep_alive);
        let old_ka = f(
            "HTTP/1.0 200 OK\r\nContent-Length: 1\r\nConnection: keep-alive\r\n\r\n",
            &Method::GET,
        );
        assert!(old_ka.keep_alive);
        let close = f(
            "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nConnection: close\r\n\r\n",
            &Method::GET,
        );
        assert!(!close.keep_alive);
    }

    #[test]
    fn ambiguous_framing_is_never_reused() {
        let both = head(
            "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            &Method::GET,
        )
        .unwrap()
        .unwrap();
        assert_eq!(both.framing, BodyFraming::Chunked);
        assert!(!both.keep_alive);
        assert!(!both.headers.contains_key("content-length"));
        let conflict = head(
            "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
            &Method::GET,
        );
        assert_eq!(conflict.unwrap_err(), CodecError::ConflictingLength);
        let bad = head(
            "HTTP/1.1 200 OK\r\nContent-Length: -3\r\n\r\n",
            &Method::GET,
        );
        assert!(bad.is_err());
        assert!(head("HTTP/1.1 abc\r\n\r\n", &Method::GET).is_err());
    }

    #[test]
    fn switching_protocols_keeps_upgrade_headers() {
        let h = head(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: x\r\n\r\n",
            &Method::GET,
        )
        .unwrap()
        .unwrap();
        assert!(h.upgrade);
        assert!(!h.keep_alive);
        assert_eq!(h.headers["upgrade"], "websocket");
        assert_eq!(h.headers["connection"], "upgrade");
    }

    /// Feeds `input` to a decoder in pieces of `step` bytes.
    fn decode_all(input: &[u8], step: usize) -> Result<(Vec<u8>, HeaderMap), CodecError> {
        let mut dec = ChunkedDecoder::default();
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        let mut fed = 0;
        loop {
            match dec.decode(&mut buf)? {
                Chunk::Data(d) => out.extend_from_slice(&d),
                Chunk::End(t) => return Ok((out, t)),
                Chunk::NeedMore => {
                    if fed >= input.len() {
                        return Err(CodecError::Chunked("truncated"));
                    }
                    let end = (fed + step).min(input.len());
                    buf.extend_from_slice(&input[fed..end]);
                    fed = end;
                }
            }
        }
    }

    #[test]
    fn chunked_bodies_decode_across_any_split() {
        let input =
            b"5;ext=1\r\nhello\r\n1A\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\ngrpc-status: 0\r\n\r\n";
        for step in 1..input.len() {
            let (body, trailers) = decode_all(input, step).unwrap();
            assert_eq!(body, b"helloabcdefghijklmnopqrstuvwxyz", "step {step}");
            assert_eq!(trailers["grpc-status"], "0");
        }
    }

    #[test]
    fn malformed_chunked_bodies_are_errors() {
        for bad in [
            &b"zz\r\n"[..],
            b"5\r\nhelloXX",
            b"5\r\nhello\r\n0\r\nno colon\r\n\r\n",
            b"1234567890abcdef0\r\n",
        ] {
            assert!(
                matches!(decode_all(bad, 3), Err(CodecError::Chunked(_))),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let long = [b"1".repeat(MAX_CHUNK_LINE + 10), b"\r\n".to_vec()].concat();
        assert!(decode_all(&long, 1000).is_err());
    }
}
