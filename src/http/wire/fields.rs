//! Header fields: building a header map from a parsed head without
//! copying values, the framing fields (`Content-Length`,
//! `Transfer-Encoding`), hop-by-hop fields, and which fields may travel in
//! trailers.

use std::cell::RefCell;
use std::time::{SystemTime, UNIX_EPOCH};

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use super::WireError;

/// Appends one header line in HTTP/1.1 form.
pub fn put(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Appends `content-length: n`.
pub fn put_length(out: &mut Vec<u8>, mut n: u64) {
    out.extend_from_slice(b"content-length: ");
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
    out.extend_from_slice(b"\r\n");
}

/// Appends the current `Date` value, formatted once per second per thread.
pub fn put_date(out: &mut Vec<u8>) {
    thread_local! {
        static DATE: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    }
    let now = SystemTime::now();
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    DATE.with(|cell| {
        let mut cached = cell.borrow_mut();
        if cached.0 != secs {
            *cached = (secs, httpdate::fmt_http_date(now));
        }
        out.extend_from_slice(cached.1.as_bytes());
    });
}

/// A request's `Cookie` fields as one value, joined with `; `: HTTP/2 and
/// HTTP/3 clients (browsers among them) send each cookie as a field of its
/// own, and those MUST be joined before they pass to HTTP/1.1 (RFC 9113
/// §8.2.3, RFC 9114 §4.2.1), where a server may read only the first (RFC
/// 6265 §5.4 allows one). One field is returned as it is.
pub fn cookie_value(headers: &HeaderMap) -> Option<HeaderValue> {
    let mut values = headers.get_all(header::COOKIE).iter();
    let first = values.next()?;
    let Some(second) = values.next() else {
        return Some(first.clone());
    };
    let mut joined = first.as_bytes().to_vec();
    for v in std::iter::once(second).chain(values) {
        joined.extend_from_slice(b"; ");
        joined.extend_from_slice(v.as_bytes());
    }
    // Valid field values joined by "; " are a valid field value.
    HeaderValue::from_bytes(&joined).ok()
}

/// A `Content-Length` value: digits only, no sign, at most 19 of them.
pub fn content_length(v: &[u8]) -> Option<u64> {
    digits(v)
}

/// A field value of `1*DIGIT` (`Content-Length`, `Max-Forwards`), around
/// optional whitespace: no sign, at most 19 digits.
pub fn digits(v: &[u8]) -> Option<u64> {
    let v = v.trim_ascii();
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// The transfer codings of a message, all its `Transfer-Encoding` lines
/// taken together as one list (RFC 9110 §5.3).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TransferCoding {
    /// Some `Transfer-Encoding` line was present.
    pub present: bool,
    /// Codings listed, empty list elements not counted.
    codings: u32,
    chunked: u32,
    /// The last coding listed is `chunked`.
    chunked_last: bool,
}

impl TransferCoding {
    /// Adds one `Transfer-Encoding` line.
    pub fn add(&mut self, value: &[u8]) {
        self.present = true;
        for element in value.split(|b| *b == b',') {
            let element = element.trim_ascii();
            if element.is_empty() {
                continue;
            }
            self.codings = self.codings.saturating_add(1);
            self.chunked_last = element.eq_ignore_ascii_case(b"chunked");
            if self.chunked_last {
                self.chunked = self.chunked.saturating_add(1);
            }
        }
    }

    /// Whether the body is chunked. Only one coding is understood, and
    /// only alone: `chunked`. Another coding before it would reach the
    /// next hop without its name, so it is refused rather than dropped
    /// (RFC 9112 §6.1: `501`); `chunked` applied twice, not last, or a
    /// `Transfer-Encoding` naming nothing leaves the length unknowable
    /// (§6.3: `400`).
    pub fn chunked(&self) -> Result<bool, WireError> {
        if !self.present {
            return Ok(false);
        }
        if self.codings == 0 {
            return Err(WireError::Malformed("empty Transfer-Encoding"));
        }
        if !self.chunked_last {
            return Err(if self.chunked > 0 {
                WireError::Malformed("chunked is not the last transfer coding")
            } else {
                WireError::UnsupportedCoding
            });
        }
        if self.chunked > 1 {
            return Err(WireError::Malformed("chunked applied more than once"));
        }
        if self.codings > 1 {
            return Err(WireError::UnsupportedCoding);
        }
        Ok(true)
    }
}

/// Hop-by-hop fields: they describe one connection, never travel past it
/// (RFC 9110 §7.6.1).
pub fn is_hop_by_hop(name: &[u8]) -> bool {
    const HOP: [&[u8]; 7] = [
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    ];
    HOP.iter().any(|h| h.eq_ignore_ascii_case(name))
}

/// Whether a field may be sent, or passed on, in trailers. RFC 9110
/// §6.5.1 forbids fields a recipient needs before the content: framing,
/// routing, request modifiers, authentication, response control and
/// content processing. A recipient that merged such a trailer into the
/// head would be fooled after the proxy's checks ran, so they are dropped.
pub fn allowed_in_trailers(name: &HeaderName) -> bool {
    const FORBIDDEN: [&HeaderName; 34] = [
        &header::TRANSFER_ENCODING,
        &header::CONTENT_LENGTH,
        &header::HOST,
        &header::CONTENT_ENCODING,
        &header::CONTENT_TYPE,
        &header::CONTENT_RANGE,
        &header::CONTENT_LOCATION,
        &header::TRAILER,
        &header::TE,
        &header::CONNECTION,
        &header::UPGRADE,
        &header::CACHE_CONTROL,
        &header::EXPECT,
        &header::MAX_FORWARDS,
        &header::PRAGMA,
        &header::RANGE,
        &header::IF_MATCH,
        &header::IF_NONE_MATCH,
        &header::IF_MODIFIED_SINCE,
        &header::IF_UNMODIFIED_SINCE,
        &header::IF_RANGE,
        &header::AUTHORIZATION,
        &header::PROXY_AUTHORIZATION,
        &header::WWW_AUTHENTICATE,
        &header::PROXY_AUTHENTICATE,
        &header::SET_COOKIE,
        &header::COOKIE,
        &header::AGE,
        &header::EXPIRES,
        &header::DATE,
        &header::LOCATION,
        &header::RETRY_AFTER,
        &header::VARY,
        &header::WARNING,
    ];
    !FORBIDDEN.contains(&name)
        && !is_hop_by_hop(name.as_str().as_bytes())
        && name.as_str() != "content-md5"
}

/// Drops the fields trailers may not carry.
pub fn retain_trailers(trailers: &mut HeaderMap) {
    if trailers.keys().all(allowed_in_trailers) {
        return;
    }
    let mut kept = HeaderMap::new();
    let mut last: Option<HeaderName> = None;
    for (name, value) in std::mem::take(trailers) {
        if let Some(n) = name {
            last = Some(n);
        }
        if let Some(n) = last.as_ref().filter(|n| allowed_in_trailers(n)) {
            kept.append(n.clone(), value);
        }
    }
    *trailers = kept;
}

/// A body frame with its trailers, if it carries any, stripped of the
/// fields trailers may not carry: for bodies another codec decoded
/// (hyper's HTTP/2), which the chunked decoder here did not see.
pub fn retain_trailers_in(frame: http_body::Frame<bytes::Bytes>) -> http_body::Frame<bytes::Bytes> {
    match frame.into_trailers() {
        Ok(mut t) => {
            retain_trailers(&mut t);
            http_body::Frame::trailers(t)
        }
        Err(f) => f,
    }
}

/// Where a header's name and value lie in the buffer its head was parsed
/// from. Positions are recorded while the parser borrows the buffer; the
/// head is then frozen once, and [`header_map`] makes the values slices of
/// it rather than copies.
#[derive(Clone, Copy, Debug, Default)]
pub struct Span {
    name: (u32, u32),
    value: (u32, u32),
}

impl Span {
    /// `h`'s position in the buffer that starts at `base`.
    pub fn of(base: *const u8, h: &httparse::Header<'_>) -> Span {
        let at = |p: *const u8| (p as usize - base as usize) as u32;
        Span {
            name: (at(h.name.as_ptr()), h.name.len() as u32),
            value: (at(h.value.as_ptr()), h.value.len() as u32),
        }
    }
}

/// Header spans kept on the stack; a head with more goes to the heap.
const INLINE_SPANS: usize = 24;

/// The spans of one head's headers: on the stack for up to
/// [`INLINE_SPANS`] of them (nearly every head), in a `Vec` beyond. An
/// array for the most headers a head may have was zeroed on every parse:
/// some 2 KB written per head for the few dozen bytes used.
pub struct Spans {
    inline: [Span; INLINE_SPANS],
    len: usize,
    spill: Vec<Span>,
}

impl Spans {
    pub fn new() -> Spans {
        Spans {
            inline: [Span::default(); INLINE_SPANS],
            len: 0,
            spill: Vec::new(),
        }
    }

    pub fn push(&mut self, span: Span) {
        match self.inline.get_mut(self.len) {
            Some(slot) => *slot = span,
            None => {
                if self.spill.is_empty() {
                    self.spill.extend_from_slice(&self.inline);
                }
                self.spill.push(span);
            }
        }
        self.len += 1;
    }

    pub fn as_slice(&self) -> &[Span] {
        if self.len <= INLINE_SPANS {
            &self.inline[..self.len]
        } else {
            &self.spill
        }
    }
}

/// A header name, with the most common ones recognized without the
/// general parser (which lower-cases into a buffer and then searches the
/// whole standard table).
fn header_name(raw: &[u8]) -> Option<HeaderName> {
    let known = match raw.len() {
        4 if raw.eq_ignore_ascii_case(b"host") => Some(header::HOST),
        4 if raw.eq_ignore_ascii_case(b"date") => Some(header::DATE),
        6 if raw.eq_ignore_ascii_case(b"server") => Some(header::SERVER),
        6 if raw.eq_ignore_ascii_case(b"accept") => Some(header::ACCEPT),
        10 if raw.eq_ignore_ascii_case(b"user-agent") => Some(header::USER_AGENT),
        12 if raw.eq_ignore_ascii_case(b"content-type") => Some(header::CONTENT_TYPE),
        13 if raw.eq_ignore_ascii_case(b"cache-control") => Some(header::CACHE_CONTROL),
        14 if raw.eq_ignore_ascii_case(b"content-length") => Some(header::CONTENT_LENGTH),
        15 if raw.eq_ignore_ascii_case(b"accept-encoding") => Some(header::ACCEPT_ENCODING),
        _ => None,
    };
    known.or_else(|| HeaderName::from_bytes(raw).ok())
}

/// The header map of a frozen head, from the spans of its headers.
pub fn header_map(head: &bytes::Bytes, spans: &[Span]) -> Result<HeaderMap, WireError> {
    let mut headers = HeaderMap::with_capacity(spans.len());
    for s in spans {
        let (ns, nl) = (s.name.0 as usize, s.name.1 as usize);
        let (vs, vl) = (s.value.0 as usize, s.value.1 as usize);
        let name =
            header_name(&head[ns..ns + nl]).ok_or(WireError::Malformed("invalid header name"))?;
        let value = HeaderValue::from_maybe_shared(head.slice(vs..vs + vl))
            .map_err(|_| WireError::Malformed("invalid header value"))?;
        headers.append(name, value);
    }
    Ok(headers)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn coding(lines: &[&str]) -> Result<bool, WireError> {
        let mut t = TransferCoding::default();
        for l in lines {
            t.add(l.as_bytes());
        }
        t.chunked()
    }

    #[test]
    fn spans_beyond_the_stack_keep_their_order() {
        for n in [0, 1, INLINE_SPANS - 1, INLINE_SPANS, INLINE_SPANS + 1, 100] {
            let mut spans = Spans::new();
            for i in 0..n as u32 {
                spans.push(Span {
                    name: (i, 1),
                    value: (i, 2),
                });
            }
            let got: Vec<u32> = spans.as_slice().iter().map(|s| s.name.0).collect();
            assert_eq!(got, (0..n as u32).collect::<Vec<_>>());
        }
    }

    #[test]
    fn only_a_single_final_chunked_is_understood() {
        assert_eq!(coding(&[]), Ok(false));
        assert_eq!(coding(&["chunked"]), Ok(true));
        assert_eq!(coding(&["Chunked"]), Ok(true));
        assert_eq!(coding(&[" chunked , "]), Ok(true));
        assert_eq!(
            coding(&["gzip, chunked"]),
            Err(WireError::UnsupportedCoding)
        );
        assert_eq!(
            coding(&["gzip", "chunked"]),
            Err(WireError::UnsupportedCoding)
        );
        assert_eq!(coding(&["gzip"]), Err(WireError::UnsupportedCoding));
        assert!(matches!(
            coding(&["chunked, chunked"]),
            Err(WireError::Malformed(_))
        ));
        assert!(matches!(
            coding(&["chunked", "chunked"]),
            Err(WireError::Malformed(_))
        ));
        assert!(matches!(
            coding(&["chunked", "gzip"]),
            Err(WireError::Malformed(_))
        ));
        assert!(matches!(coding(&[""]), Err(WireError::Malformed(_))));
        assert!(matches!(coding(&[" , "]), Err(WireError::Malformed(_))));
        assert_eq!(coding(&["chunked;x=1"]), Err(WireError::UnsupportedCoding));
    }

    #[test]
    fn trailers_lose_the_fields_they_may_not_carry() {
        let mut t = HeaderMap::new();
        for (n, v) in [
            ("grpc-status", "0"),
            ("content-length", "5"),
            ("transfer-encoding", "chunked"),
            ("host", "evil.test"),
            ("x-checksum", "abc"),
            ("authorization", "Bearer x"),
            ("x-checksum", "def"),
            ("connection", "close"),
        ] {
            t.append(HeaderName::from_static(n), HeaderValue::from_static(v));
        }
        retain_trailers(&mut t);
        let names: Vec<_> = t.iter().map(|(n, v)| format!("{n}={v:?}")).collect();
        assert_eq!(
            names,
            [
                "grpc-status=\"0\"",
                "x-checksum=\"abc\"",
                "x-checksum=\"def\""
            ]
        );
    }

    #[test]
    fn lengths_are_digits_only() {
        assert_eq!(content_length(b"42"), Some(42));
        assert_eq!(content_length(b" 42 "), Some(42));
        for bad in [
            &b"+42"[..],
            b"-1",
            b"4 2",
            b"0x10",
            b"",
            b"42, 42",
            b"99999999999999999999",
        ] {
            assert_eq!(
                content_length(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn lengths_are_written_in_decimal() {
        for n in [0u64, 7, 10, 123_456, u64::MAX] {
            let mut out = Vec::new();
            put_length(&mut out, n);
            assert_eq!(out, format!("content-length: {n}\r\n").into_bytes());
        }
    }
}
