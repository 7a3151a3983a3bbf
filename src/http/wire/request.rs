//! Request heads: parsed in the server role (RFC 9112 §2–§7), framed in
//! the client role.
//!
//! Request bodies are framed strictly, since a proxy that reads a body one
//! way while the upstream reads it another lets a client smuggle a request
//! past routing and plugins: `Transfer-Encoding` together with
//! `Content-Length`, conflicting lengths, a transfer coding other than a
//! lone `chunked`, or `Transfer-Encoding` on HTTP/1.0 are all refused, and
//! the connection is closed. The request target must have one of the four
//! forms of RFC 9112 §3.2, each only where it belongs.

use std::mem::MaybeUninit;

use bytes::BytesMut;
use http::header::HeaderMap;
use http::{Method, Uri, Version};

use super::WireError;
use super::fields::{Span, Spans, TransferCoding, content_length, header_map};
use super::limits::{MAX_HEAD, MAX_REQUEST_HEADERS, MAX_TARGET};

/// How a request body is delimited, on the way in and on the way out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestFraming {
    None,
    Length(u64),
    Chunked,
}

/// The form of a request target (RFC 9112 §3.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// `/path?query`
    Origin,
    /// `http://host/path`: the authority names the host, not `Host`.
    Absolute,
    /// `host:port`, for `CONNECT` only.
    Authority,
    /// `*`, for `OPTIONS` only.
    Asterisk,
}

/// A parsed request head.
#[derive(Debug)]
pub struct RequestHead {
    pub method: Method,
    pub uri: Uri,
    pub target: Target,
    pub version: Version,
    pub headers: HeaderMap,
    pub framing: RequestFraming,
    /// Whether the client lets the connection carry another request.
    pub keep_alive: bool,
    /// The client waits for `100 Continue` before sending its body.
    pub expect_continue: bool,
    /// The client asks to switch protocols (`Connection: upgrade`).
    pub upgrade: bool,
}

/// The target's form, checked against the method.
fn target(method: &Method, raw: &str, uri: &Uri) -> Result<Target, WireError> {
    if raw == "*" {
        return if *method == Method::OPTIONS {
            Ok(Target::Asterisk)
        } else {
            Err(WireError::Malformed(
                "asterisk-form target is only for OPTIONS",
            ))
        };
    }
    if *method == Method::CONNECT {
        return if uri.scheme().is_none() && uri.authority().is_some() && uri.path().is_empty() {
            Ok(Target::Authority)
        } else {
            Err(WireError::Malformed(
                "CONNECT needs an authority-form target",
            ))
        };
    }
    if raw.starts_with('/') {
        return Ok(Target::Origin);
    }
    let http = uri
        .scheme_str()
        .is_some_and(|s| s.eq_ignore_ascii_case("http") || s.eq_ignore_ascii_case("https"));
    match uri.authority() {
        // RFC 9110 §4.2.4: userinfo in an http(s) URI is an error.
        Some(a) if a.as_str().contains('@') => {
            Err(WireError::Malformed("userinfo in the request target"))
        }
        Some(a) if http && !a.host().is_empty() => Ok(Target::Absolute),
        _ => Err(WireError::Malformed("invalid request target")),
    }
}

/// Parses a request head from the start of `buf`, consuming it. Returns
/// `Ok(None)` when more bytes are needed.
pub fn parse_request_head(buf: &mut BytesMut) -> Result<Option<RequestHead>, WireError> {
    // Uninitialized slots: initializing all of them would cost more than
    // parsing a typical head.
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_REQUEST_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let len = match req.parse_with_uninit_headers(buf, &mut slots) {
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
        Err(httparse::Error::Version) => return Err(WireError::Malformed("unsupported version")),
        Err(_) => return Err(WireError::Malformed("invalid syntax")),
    };
    let method = Method::from_bytes(req.method.unwrap_or("").as_bytes())
        .map_err(|_| WireError::Malformed("invalid method"))?;
    let version = match req.version {
        Some(0) => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    let path = req
        .path
        .ok_or(WireError::Malformed("missing request target"))?;
    if path.len() > MAX_TARGET {
        return Err(WireError::TargetTooLong);
    }

    let mut close = false;
    let mut keep_alive_token = false;
    let mut upgrade_token = false;
    let mut coding = TransferCoding::default();
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
            coding.add(h.value);
        } else if name.eq_ignore_ascii_case(b"content-length") {
            let n =
                content_length(h.value).ok_or(WireError::Malformed("invalid Content-Length"))?;
            if length.is_some_and(|l| l != n) {
                return Err(WireError::ConflictingLength);
            }
            length = Some(n);
        } else if name.eq_ignore_ascii_case(b"expect") {
            expect_continue = h.value.trim_ascii().eq_ignore_ascii_case(b"100-continue");
        }
    }
    // RFC 9112 §3.2: one Host, and HTTP/1.1 requests must have it.
    if hosts > 1 {
        return Err(WireError::Malformed("more than one Host header"));
    }
    if hosts == 0 && version == Version::HTTP_11 {
        return Err(WireError::Malformed("missing Host header"));
    }
    let framing = if coding.present {
        if version == Version::HTTP_10 {
            return Err(WireError::Malformed(
                "Transfer-Encoding in an HTTP/1.0 request",
            ));
        }
        if length.is_some() {
            return Err(WireError::Malformed(
                "both Transfer-Encoding and Content-Length",
            ));
        }
        coding.chunked()?;
        RequestFraming::Chunked
    } else {
        match length {
            None | Some(0) => RequestFraming::None,
            Some(n) => RequestFraming::Length(n),
        }
    };
    let keep_alive = match version {
        Version::HTTP_10 => keep_alive_token && !close,
        _ => !close,
    };

    let base = buf.as_ptr();
    let at = (path.as_ptr() as usize - base as usize, path.len());
    let mut spans = Spans::new();
    for h in req.headers.iter() {
        spans.push(Span::of(base, h));
    }
    let head = buf.split_to(len).freeze();
    let raw = head.slice(at.0..at.0 + at.1);
    let uri = Uri::from_maybe_shared(raw.clone())
        .map_err(|_| WireError::Malformed("invalid request target"))?;
    let target = target(
        &method,
        std::str::from_utf8(&raw).map_err(|_| WireError::Malformed("invalid request target"))?,
        &uri,
    )?;
    let headers = header_map(&head, spans.as_slice())?;
    Ok(Some(RequestHead {
        method,
        uri,
        target,
        version,
        headers,
        framing,
        keep_alive,
        expect_continue: expect_continue && framing != RequestFraming::None,
        upgrade: upgrade_token,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Option<RequestHead>, WireError> {
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
        assert_eq!(h.framing, RequestFraming::Length(3));
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
            head("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n").framing,
            RequestFraming::Chunked
        );
        assert_eq!(
            head("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n").framing,
            RequestFraming::None
        );
        assert_eq!(
            head("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n")
                .framing,
            RequestFraming::Length(5)
        );
        for bad in [
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -5\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5x\r\n\r\n",
            "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\r\n\r\n",
        ] {
            assert!(
                matches!(parse(bad), Err(WireError::Malformed(_))),
                "{bad:?} gave {:?}",
                parse(bad)
            );
        }
        assert_eq!(
            parse("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n")
                .unwrap_err(),
            WireError::ConflictingLength
        );
        for unsupported in [
            "gzip",
            "gzip, chunked",
            "gzip\r\nTransfer-Encoding: chunked",
            "identity, chunked",
        ] {
            let text =
                format!("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: {unsupported}\r\n\r\n");
            assert_eq!(
                parse(&text).unwrap_err(),
                WireError::UnsupportedCoding,
                "{unsupported}"
            );
        }
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
            Err(WireError::Malformed(_))
        ));
        assert!(matches!(
            parse("GET / HTTP/2.0\r\n\r\n"),
            Err(WireError::Malformed(_))
        ));
        assert!(matches!(
            parse("\x01GET / HTTP/1.1\r\nHost: a\r\n\r\n"),
            Err(WireError::Malformed(_))
        ));
        let many: String = (0..101).map(|i| format!("x-{i}: 1\r\n")).collect();
        assert_eq!(
            parse(&format!("GET / HTTP/1.1\r\nHost: a\r\n{many}\r\n")).unwrap_err(),
            WireError::TooManyHeaders
        );
        let long = format!(
            "GET / HTTP/1.1\r\nHost: a\r\nx-long: {}",
            "a".repeat(MAX_HEAD)
        );
        assert_eq!(parse(&long).unwrap_err(), WireError::HeadTooLarge);
        assert_eq!(
            WireError::HeadTooLarge.status(),
            http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
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
            WireError::Malformed("missing Host header")
        );
        assert_eq!(
            parse("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n").unwrap_err(),
            WireError::Malformed("more than one Host header")
        );
        assert!(head("GET / HTTP/1.0\r\n\r\n").headers.is_empty());
    }

    #[test]
    fn absolute_targets_keep_their_authority() {
        let h = head("GET http://shop.example/x HTTP/1.1\r\nHost: shop.example\r\n\r\n");
        assert_eq!(h.uri.authority().map(|a| a.as_str()), Some("shop.example"));
        assert_eq!(h.uri.path(), "/x");
    }

    #[test]
    fn targets_have_the_form_their_method_allows() {
        let t = |text: &str| parse(text).map(|h| h.unwrap().target);
        assert_eq!(t("GET /a HTTP/1.1\r\nHost: a\r\n\r\n"), Ok(Target::Origin));
        assert_eq!(
            t("GET http://a.test/x HTTP/1.1\r\nHost: a.test\r\n\r\n"),
            Ok(Target::Absolute)
        );
        assert_eq!(
            t("GET HTTPS://a.test HTTP/1.1\r\nHost: a.test\r\n\r\n"),
            Ok(Target::Absolute)
        );
        assert_eq!(
            t("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n"),
            Ok(Target::Asterisk)
        );
        assert_eq!(
            t("CONNECT a.test:443 HTTP/1.1\r\nHost: a.test:443\r\n\r\n"),
            Ok(Target::Authority)
        );
        for bad in [
            "GET * HTTP/1.1\r\nHost: a\r\n\r\n",
            "POST * HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET a.test:443 HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET a/b HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET ftp://a.test/x HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET http://user:pw@a.test/x HTTP/1.1\r\nHost: a.test\r\n\r\n",
            "GET http:///x HTTP/1.1\r\nHost: a\r\n\r\n",
            "CONNECT /x HTTP/1.1\r\nHost: a\r\n\r\n",
            "CONNECT http://a.test/ HTTP/1.1\r\nHost: a\r\n\r\n",
        ] {
            assert!(
                matches!(t(bad), Err(WireError::Malformed(_))),
                "{bad:?}: {:?}",
                t(bad)
            );
        }
    }

    #[test]
    fn long_targets_are_refused_with_414() {
        let text = format!(
            "GET /{} HTTP/1.1\r\nHost: a\r\n\r\n",
            "a".repeat(MAX_TARGET)
        );
        let e = parse(&text).unwrap_err();
        assert_eq!(e, WireError::TargetTooLong);
        assert_eq!(e.status(), http::StatusCode::URI_TOO_LONG);
    }

    #[test]
    fn bare_cr_nul_and_folding_are_refused() {
        for bad in [
            "GET / HTTP/1.1\r\nHost: a\rX-A: b\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nX-A: a\0b\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nX-A: a\r\n b\r\n\r\n",
            "GET / HTTP/1.1\r\nHost : a\r\n\r\n",
            "GET /a b HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET /a\0 HTTP/1.1\r\nHost: a\r\n\r\n",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
