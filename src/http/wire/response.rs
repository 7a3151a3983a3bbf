//! Response heads: parsed in the client role, written in the server role.
//!
//! The client reads the upstream's framing to know where the body ends,
//! and drops hop-by-hop fields while parsing. A response whose framing is
//! ambiguous (both `Transfer-Encoding` and `Content-Length`) is read by
//! `Transfer-Encoding` and its connection never reused; conflicting
//! lengths, or a transfer coding other than `chunked` (whose other codings
//! could not be passed on), fail the exchange.
//!
//! The server decides a response's framing from its body, never from the
//! upstream: a body of known size gets `Content-Length`, another one is
//! chunked for HTTP/1.1 clients and delimited by closing the connection
//! for HTTP/1.0 ones.

use std::mem::MaybeUninit;

use bytes::BytesMut;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, StatusCode, Version};

use super::WireError;
use super::fields::{
    Span, Spans, TransferCoding, content_length, header_map, is_hop_by_hop, put, put_date,
    put_length,
};
use super::limits::{MAX_HEAD, MAX_RESPONSE_HEADERS};

/// How a response body is delimited, as read from an upstream.
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
) -> Result<Option<ResponseHead>, WireError> {
    // Uninitialized slots: initializing all of them would cost more than
    // parsing a typical head.
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_RESPONSE_HEADERS];
    let mut resp = httparse::Response::new(&mut []);
    let parsed = httparse::ParserConfig::default()
        .parse_response_with_uninit_headers(&mut resp, buf, &mut slots);
    let len = match parsed {
        Ok(httparse::Status::Complete(n)) if n <= MAX_HEAD => n,
        Ok(httparse::Status::Complete(_)) => return Err(WireError::HeadTooLarge),
        Ok(httparse::Status::Partial) => {
            return if buf.len() > MAX_HEAD {
                Err(WireError::HeadTooLarge)
            } else {
                Ok(None)
            };
        }
        Err(httparse::Error::TooManyHeaders) => return Err(WireError::TooManyHeaders),
        Err(_) => return Err(WireError::Malformed("invalid response head")),
    };
    let code = resp.code.ok_or(WireError::Malformed("missing status"))?;
    let status = StatusCode::from_u16(code).map_err(|_| WireError::Malformed("invalid status"))?;
    let version = if resp.version == Some(0) {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };

    // Hop-by-hop headers are dropped here, once, instead of being removed
    // from the map afterwards.
    let mut connection_close = version == Version::HTTP_10;
    let mut named: Vec<&[u8]> = Vec::new();
    let mut coding = TransferCoding::default();
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
            coding.add(h.value);
        } else if h.name.eq_ignore_ascii_case("content-length") {
            let n =
                content_length(h.value).ok_or(WireError::Malformed("invalid Content-Length"))?;
            if length.is_some_and(|l| l != n) {
                conflicting = true;
            }
            length = Some(n);
        }
    }
    let transfer_encoding = coding.present;
    let bodiless =
        *method == Method::HEAD || (100..200).contains(&code) || code == 204 || code == 304;
    // Only the framing of a response with a body matters; a bodiless one
    // may describe the body it would have had.
    let chunked = if bodiless { false } else { coding.chunked()? };
    if conflicting && !transfer_encoding {
        return Err(WireError::ConflictingLength);
    }

    let base = buf.as_ptr();
    let mut kept = Spans::new();
    for h in resp.headers.iter() {
        let name = h.name.as_bytes();
        let hop = is_hop_by_hop(name) || named.iter().any(|n| n.eq_ignore_ascii_case(name));
        if hop && !(code == 101 && name.eq_ignore_ascii_case(b"upgrade")) {
            continue;
        }
        // A response with Transfer-Encoding must not pass a Content-Length on.
        if transfer_encoding && name.eq_ignore_ascii_case(b"content-length") {
            continue;
        }
        kept.push(Span::of(base, h));
    }
    let head = buf.split_to(len).freeze();
    let mut headers = header_map(&head, kept.as_slice())?;

    let upgrade = code == 101;
    let framing = if bodiless {
        BodyFraming::Empty
    } else if chunked {
        BodyFraming::Chunked
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

/// How a response body is delimited when written to a client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResponseFraming {
    /// No body follows (`HEAD`, 1xx, 204, 304).
    None,
    Length(u64),
    Chunked,
    /// Until the connection closes (HTTP/1.0 clients).
    Close,
}

/// Fields the server writes itself, or that describe only the hop from
/// the upstream.
fn is_framing_or_hop(name: &header::HeaderName) -> bool {
    name == header::CONNECTION
        || name == header::TRANSFER_ENCODING
        || name == header::CONTENT_LENGTH
        || name == "keep-alive"
        || name == "proxy-connection"
}

/// Writes a response head for a client. A switch (`101`) passes
/// `Connection: upgrade` on as it is; a bodiless answer keeps the length
/// it describes (`HEAD`, `304`). A `Date` is added when missing.
pub fn encode_response_head(
    out: &mut Vec<u8>,
    status: StatusCode,
    headers: &HeaderMap,
    framing: ResponseFraming,
    keep_alive: bool,
    http10: bool,
) {
    let switching = status == StatusCode::SWITCHING_PROTOCOLS;
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in headers {
        let keep = if switching {
            true
        } else if name == header::CONTENT_LENGTH {
            framing == ResponseFraming::None
        } else {
            !is_framing_or_hop(name)
        };
        if keep {
            put(out, name.as_str(), value.as_bytes());
        }
    }
    match framing {
        ResponseFraming::Length(n) => put_length(out, n),
        ResponseFraming::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        ResponseFraming::None | ResponseFraming::Close => {}
    }
    if !switching && !keep_alive {
        out.extend_from_slice(b"connection: close\r\n");
    } else if !switching && http10 {
        out.extend_from_slice(b"connection: keep-alive\r\n");
    }
    if !headers.contains_key(header::DATE) {
        out.extend_from_slice(b"date: ");
        put_date(out);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// A complete plain-text answer that closes the connection, for requests
/// the server could not read.
pub fn error_response(out: &mut Vec<u8>, status: StatusCode, why: &str) {
    let text = format!(
        "{} {}: {why}\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    );
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    out.clear();
    encode_response_head(
        out,
        status,
        &headers,
        ResponseFraming::Length(text.len() as u64),
        false,
        false,
    );
    out.extend_from_slice(text.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(text: &str, method: &Method) -> Result<Option<ResponseHead>, WireError> {
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
            WireError::HeadTooLarge
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
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            &Method::GET,
        );
        assert_eq!(chunked.framing, BodyFraming::Chunked);
        // Another coding could not be passed on without its name.
        for other in [
            "gzip, chunked",
            "chunked, chunked",
            "gzip",
            "chunked\r\nTransfer-Encoding: gzip",
        ] {
            let text = format!("HTTP/1.1 200 OK\r\nTransfer-Encoding: {other}\r\n\r\n");
            assert!(head(&text, &Method::GET).is_err(), "{other}");
        }
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
        assert_eq!(conflict.unwrap_err(), WireError::ConflictingLength);
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
}
