//! Request heads in (RFC 9112 §2–§7).
//!
//! Request bodies are framed strictly, since a proxy that reads a body one
//! way while the upstream reads it another lets a client smuggle a request
//! past routing and plugins: `Transfer-Encoding` together with
//! `Content-Length`, conflicting lengths, a transfer coding other than a
//! final `chunked`, or `Transfer-Encoding` on HTTP/1.0 are all refused with
//! `400`, and the connection is closed.

use std::mem::MaybeUninit;

use bytes::BytesMut;
use http::header::HeaderMap;
use http::{Method, StatusCode, Uri, Version};

use crate::proxy::headers::{Span, content_length, header_map};

/// Largest request head accepted, request line included.
pub const MAX_HEAD: usize = 64 * 1024;
/// Most request headers accepted.
const MAX_HEADERS: usize = 100;

/// Why a request head was refused; each maps to the status the client
/// gets before the connection closes.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HeadError {
    #[error("malformed request: {0}")]
    Malformed(&'static str),
    #[error("request head larger than {MAX_HEAD} bytes")]
    TooLarge,
    #[error("more than {MAX_HEADERS} request headers")]
    TooManyHeaders,
    #[error("unsupported transfer coding")]
    UnsupportedCoding,
}

impl HeadError {
    pub fn status(&self) -> StatusCode {
        match self {
            HeadError::Malformed(_) => StatusCode::BAD_REQUEST,
            HeadError::TooLarge | HeadError::TooManyHeaders => {
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
            }
            HeadError::UnsupportedCoding => StatusCode::NOT_IMPLEMENTED,
        }
    }
}

/// How a request body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyFraming {
    Empty,
    Length(u64),
    Chunked,
}

/// A parsed request head.
#[derive(Debug)]
pub struct RequestHead {
    pub method: Method,
    pub uri: Uri,
    pub version: Version,
    pub headers: HeaderMap,
    pub framing: BodyFraming,
    /// Whether the client lets the connection carry another request.
    pub keep_alive: bool,
    /// The client waits for `100 Continue` before sending its body.
    pub expect_continue: bool,
    /// The client asks to switch protocols (`Connection: upgrade`).
    pub upgrade: bool,
}

/// Parses a request head from the start of `buf`, consuming it. Returns
/// `Ok(None)` when more bytes are needed.
pub fn parse_request_head(buf: &mut BytesMut) -> Result<Option<RequestHead>, HeadError> {
    // Uninitialized slots: initializing all of them would cost more than
    // parsing a typical head.
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let len = match req.parse_with_uninit_headers(buf, &mut slots) {
        Ok(httparse::Status::Complete(n)) if n <= MAX_HEAD => n,
        Ok(httparse::Status::Complete(_)) => return Err(HeadError::TooLarge),
        Ok(httparse::Status::Partial) => {
            return if buf.len() > MAX_HEAD {
                Err(HeadError::TooLarge)
            } else {
                Ok(None)
            };
        }
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooManyHeaders),
        Err(httparse::Error::Version) => return Err(HeadError::Malformed("unsupported version")),
        Err(_) => return Err(HeadError::Malformed("invalid syntax")),
    };
    let method = Method::from_bytes(req.method.unwrap_or("").as_bytes())
        .map_err(|_| HeadError::Malformed("invalid method"))?;
    let version = match req.version {
        Some(0) => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    let path = req
        .path
        .ok_or(HeadError::Malformed("missing request target"))?;

    let mut close = false;
    let mut keep_alive_token = false;
    let mut upgrade_token = false;
    let mut transfer_encoding = false;
    let mut chunked = false;
    let mut length: Option<u64> = None;
    let mut expect_continue = false;
    let mut hosts = 0;
    for h in req.headers.iter() {
        let name = h.name.as_bytes();
        if name.eq_ignore_ascii_case(b"host") {
            hosts += 1;
        } else if name.eq_ignore_ascii_case(b"connection") {
            for token in h.value.split(|b| *b == b',') {
                let token = token.trim_ascii();
                if token.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if token.eq_ignore_ascii_case(b"keep-alive") {
                    keep_alive_token = true;
                } else if token.eq_ignore_ascii_case(b"upgrade") {
                    upgrade_token = true;
                }
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            if transfer_encoding && chunked {
                // `chunked` was not the last coding.
                return Err(HeadError::Malformed(
                    "chunked is not the last transfer coding",
                ));
            }
            transfer_encoding = true;
            chunked = h
                .value
                .rsplit(|b| *b == b',')
                .next()
                .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        } else if name.eq_ignore_ascii_case(b"content-length") {
            let n =
                content_length(h.value).ok_or(HeadError::Malformed("invalid Content-Length"))?;
            if length.is_some_and(|l| l != n) {
                return Err(HeadError::Malformed("conflicting Content-Length"));
            }
            length = Some(n);
        } else if name.eq_ignore_ascii_case(b"expect") {
            expect_continue = h.value.trim_ascii().eq_ignore_ascii_case(b"100-continue");
        }
    }
    // RFC 9112 §3.2: one Host, and HTTP/1.1 requests must have it.
    if hosts > 1 {
        return Err(HeadError::Malformed("more than one Host header"));
    }
    if hosts == 0 && version == Version::HTTP_11 {
        return Err(HeadError::Malformed("missing Host header"));
    }
    let framing = if transfer_encoding {
        if version == Version::HTTP_10 {
            return Err(HeadError::Malformed(
                "Transfer-Encoding in an HTTP/1.0 request",
            ));
        }
        if length.is_some() {
            return Err(HeadError::Malformed(
                "both Transfer-Encoding and Content-Length",
            ));
        }
        if !chunked {
            return Err(HeadError::UnsupportedCoding);
        }
        BodyFraming::Chunked
    } else {
        match length {
            None | Some(0) => BodyFraming::Empty,
            Some(n) => BodyFraming::Length(n),
        }
    };
    let keep_alive = match version {
        Version::HTTP_10 => keep_alive_token && !close,
        _ => !close,
    };

    let base = buf.as_ptr();
    let target = (path.as_ptr() as usize - base as usize, path.len());
    let mut spans = [Span::default(); MAX_HEADERS];
    let n = req.headers.len();
    for (slot, h) in spans.iter_mut().zip(req.headers.iter()) {
        *slot = Span::of(base, h);
    }
    let head = buf.split_to(len).freeze();
    let uri = Uri::from_maybe_shared(head.slice(target.0..target.0 + target.1))
        .map_err(|_| HeadError::Malformed("invalid request target"))?;
    let headers = header_map(&head, &spans[..n]).map_err(HeadError::Malformed)?;
    Ok(Some(RequestHead {
        method,
        uri,
        version,
        headers,
        framing,
        keep_alive,
        expect_continue: expect_continue && framing != BodyFraming::Empty,
        upgrade: upgrade_token,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Option<RequestHead>, HeadError> {
        parse_request_head(&mut BytesMut::from(text))
    }

    fn head(text: &str) -> RequestHead {
        parse(text).unwrap().unwrap()
    }

    #[test]
    fn heads_parse_and_leave_the_rest_in_the_buffer() {
        let mut buf = BytesMut::from(
            "POST /a/b?x=1 HTTP/1.1\r\nHost: shop\r\nContent-Length: 3\r\nX-A: 1\r\nx-a: 2\r\n\r\nabcGET",
        );
        let h = parse_request_head(&mut buf).unwrap().unwrap();
        assert_eq!(h.method, Method::POST);
        assert_eq!(h.uri.path(), "/a/b");
        assert_eq!(h.uri.query(), Some("x=1"));
        assert_eq!(h.version, Version::HTTP_11);
        assert_eq!(h.framing, BodyFraming::Length(3));
        assert!(h.keep_alive);
        assert!(!h.expect_continue);
        assert_eq!(h.headers["host"], "shop");
        assert_eq!(h.headers.get_all("x-a").iter().count(), 2);
        assert_eq!(&buf[..], b"abcGET");
    }

    #[test]
    fn partial_heads_ask_for_more() {
        assert!(parse("GET / HTTP/1.1\r\nHost: a\r\n").unwrap().is_none());
        assert!(parse("GE").unwrap().is_none());
    }

    #[test]
    fn keep_alive_follows_version_and_connection() {
        assert!(head("GET / HTTP/1.1\r\nHost: a\r\n\r\n").keep_alive);
        assert!(!head("GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").keep_alive);
        assert!(!head("GET / HTTP/1.0\r\n\r\n").keep_alive);
        assert!(head("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").keep_alive);
        let up = head(
            "GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\r\n",
        );
        assert!(up.upgrade && up.keep_alive);
    }

    #[test]
    fn bodies_are_framed_strictly() {
        assert_eq!(
            head("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n").framing,
            BodyFraming::Chunked
        );
        assert_eq!(
            head("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n").framing,
            BodyFraming::Empty
        );
        assert_eq!(
            head("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n")
                .framing,
            BodyFraming::Length(5)
        );
        for bad in [
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -5\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5x\r\n\r\n",
            "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n\r\n",
        ] {
            assert!(
                matches!(parse(bad), Err(HeadError::Malformed(_))),
                "{bad:?} gave {:?}",
                parse(bad)
            );
        }
        assert_eq!(
            parse("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n").unwrap_err(),
            HeadError::UnsupportedCoding
        );
    }

    #[test]
    fn expect_continue_only_with_a_body() {
        assert!(
            head("PUT / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 9\r\n\r\n")
                .expect_continue
        );
        assert!(!head("GET / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n").expect_continue);
    }

    #[test]
    fn malformed_and_oversized_heads_are_refused() {
        assert!(matches!(
            parse("GET / HTTP/1.1\r\nHost: a\r\nBad Header: x\r\n\r\n"),
            Err(HeadError::Malformed(_))
        ));
        assert!(matches!(
            parse("GET / HTTP/2.0\r\n\r\n"),
            Err(HeadError::Malformed(_))
        ));
        assert!(matches!(
            parse("\x01GET / HTTP/1.1\r\nHost: a\r\n\r\n"),
            Err(HeadError::Malformed(_))
        ));
        let many: String = (0..101).map(|i| format!("x-{i}: 1\r\n")).collect();
        assert_eq!(
            parse(&format!("GET / HTTP/1.1\r\nHost: a\r\n{many}\r\n")).unwrap_err(),
            HeadError::TooManyHeaders
        );
        let long = format!(
            "GET / HTTP/1.1\r\nHost: a\r\nx-long: {}",
            "a".repeat(MAX_HEAD)
        );
        assert_eq!(parse(&long).unwrap_err(), HeadError::TooLarge);
        assert_eq!(
            HeadError::TooLarge.status(),
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
        );
    }

    #[test]
    fn mangled_heads_are_refused_without_panicking() {
        let valid = b"POST /a/b?c=d HTTP/1.1\r\nHost: shop.test\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\nX-A: \x80\xff\r\n\r\nabc";
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..20_000 {
            let mut bytes = valid.to_vec();
            for _ in 0..(next() % 4) {
                let at = (next() as usize) % bytes.len();
                bytes[at] = next() as u8;
            }
            bytes.truncate(1 + (next() as usize) % bytes.len());
            let mut buf = BytesMut::from(&bytes[..]);
            let _ = parse_request_head(&mut buf);
        }
    }

    #[test]
    fn host_is_required_once_in_http11() {
        assert_eq!(
            parse("GET / HTTP/1.1\r\n\r\n").unwrap_err(),
            HeadError::Malformed("missing Host header")
        );
        assert_eq!(
            parse("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n").unwrap_err(),
            HeadError::Malformed("more than one Host header")
        );
        assert!(head("GET / HTTP/1.0\r\n\r\n").headers.is_empty());
    }

    #[test]
    fn absolute_targets_keep_their_authority() {
        let h = head("GET http://shop.example/x HTTP/1.1\r\nHost: shop.example\r\n\r\n");
        assert_eq!(h.uri.authority().map(|a| a.as_str()), Some("shop.example"));
        assert_eq!(h.uri.path(), "/x");
    }
}
