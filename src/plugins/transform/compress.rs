//! `gzip` and `brotli`: responses compressed for clients that accept it.
//!
//! Each plugin's response phase only *offers* its coding for the response
//! (see [`ResponseParts::encodings`]); once every response phase has run,
//! [`negotiate`] picks one offer by the client's `Accept-Encoding`, so that
//! both plugins on one route (or one global, one on the route) make one
//! choice: the coding the client weighs highest, Brotli when it weighs both
//! the same. The proxy then wraps the body in an [`Encoder`] that
//! compresses it frame by frame as it streams.
//!
//! Never compressed: `HEAD` answers, `1xx`, `204`, `206` and `304`
//! responses, responses that already carry `Content-Encoding` or say
//! `Cache-Control: no-transform`, content types not listed, and bodies
//! known to be shorter than `minLength` (a body of unknown length is
//! compressed). A compressed response loses `Content-Length` (it is sent
//! chunked, or as HTTP/2 frames) and `Accept-Ranges`, and a strong `ETag`
//! becomes weak, as the bytes are no longer the upstream's.

use std::fmt;
use std::io::Write;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode, header};

use crate::api::{Brotli, Gzip};
use crate::plugins::{
    BuildEnv, ConfigError, Outcome, Plugin, RequestCtx, ResponseCtx, ResponseParts,
};

/// Content types compressed when `types` is not set: text formats that
/// compress well and are not compressed already.
pub const DEFAULT_TYPES: [&str; 8] = [
    "text/html",
    "text/plain",
    "text/css",
    "application/json",
    "application/javascript",
    "text/javascript",
    "application/xml",
    "image/svg+xml",
];
/// Bodies shorter than this gain little or grow: the gzip header and
/// trailer alone are 18 bytes.
pub const DEFAULT_MIN_LENGTH: u64 = 256;
/// zlib's own default: most of level 9's ratio at a fraction of its cost.
pub const DEFAULT_GZIP_LEVEL: u32 = 6;
/// The quality CDNs use for dynamic content: faster than gzip at level 6
/// and smaller output. Qualities 10 and 11 are for static assets, far too
/// slow per request.
pub const DEFAULT_BROTLI_LEVEL: u32 = 4;
/// Largest Brotli window, as a power of two (256 KiB): bounds the memory
/// of each compressed response; a body known to be smaller gets a window
/// its size.
const BROTLI_MAX_WINDOW: u32 = 18;
/// Compressed bytes collected before they are passed on even though the
/// upstream's data keeps coming.
const OUTPUT_CHUNK: usize = 16 * 1024;

/// A content coding the gateway can produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    Brotli,
    Gzip,
}

impl Coding {
    /// The `Content-Encoding` token.
    pub fn as_str(self) -> &'static str {
        match self {
            Coding::Brotli => "br",
            Coding::Gzip => "gzip",
        }
    }

    /// Whether an `Accept-Encoding` token names this coding (`x-gzip` is
    /// gzip, RFC 9110 section 8.4.1.3).
    fn named(self, token: &str) -> bool {
        match self {
            Coding::Brotli => token.eq_ignore_ascii_case("br"),
            Coding::Gzip => {
                token.eq_ignore_ascii_case("gzip") || token.eq_ignore_ascii_case("x-gzip")
            }
        }
    }

    /// Lower is preferred when the client weighs codings the same.
    fn rank(self) -> u8 {
        match self {
            Coding::Brotli => 0,
            Coding::Gzip => 1,
        }
    }
}

/// Which content types a plugin compresses.
#[derive(Debug)]
enum Types {
    Any,
    /// Lower-case `type/subtype`s.
    List(Vec<Box<str>>),
}

/// A plugin's compiled settings.
#[derive(Debug)]
pub struct Settings {
    types: Types,
    min_length: u64,
    level: u32,
    vary: bool,
}

/// A coding a plugin offers for the response at hand.
#[derive(Debug, Clone)]
pub struct Offer {
    coding: Coding,
    settings: Arc<Settings>,
}

/// `gzip` or `brotli`.
#[derive(Debug)]
pub struct CompressPlugin {
    offer: Offer,
    config: serde_json::Value,
}

impl CompressPlugin {
    pub fn build_gzip(c: &Gzip, _env: &BuildEnv<'_>) -> Result<Arc<dyn Plugin>, ConfigError> {
        let settings = settings(
            "gzip",
            &c.types,
            c.min_length,
            (c.level, DEFAULT_GZIP_LEVEL, 1..=9),
            c.vary,
        )?;
        Ok(Arc::new(CompressPlugin {
            offer: Offer {
                coding: Coding::Gzip,
                settings: Arc::new(settings),
            },
            config: serde_json::to_value(c).unwrap_or_default(),
        }))
    }

    pub fn build_brotli(c: &Brotli, _env: &BuildEnv<'_>) -> Result<Arc<dyn Plugin>, ConfigError> {
        let settings = settings(
            "brotli",
            &c.types,
            c.min_length,
            (c.level, DEFAULT_BROTLI_LEVEL, 0..=11),
            c.vary,
        )?;
        Ok(Arc::new(CompressPlugin {
            offer: Offer {
                coding: Coding::Brotli,
                settings: Arc::new(settings),
            },
            config: serde_json::to_value(c).unwrap_or_default(),
        }))
    }
}

fn settings(
    field: &str,
    types: &[String],
    min_length: Option<u64>,
    (level, default_level, range): (Option<u32>, u32, std::ops::RangeInclusive<u32>),
    vary: Option<bool>,
) -> Result<Settings, ConfigError> {
    let level = level.unwrap_or(default_level);
    if !range.contains(&level) {
        return Err(ConfigError::new(
            format!("{field}.level"),
            format!(
                "{level} is out of range: use {} (fastest) to {} (smallest)",
                range.start(),
                range.end()
            ),
        ));
    }
    let types = if types.is_empty() {
        Types::List(DEFAULT_TYPES.iter().map(|t| Box::from(*t)).collect())
    } else if types.iter().any(|t| t.trim() == "*") {
        Types::Any
    } else {
        let mut list = Vec::with_capacity(types.len());
        for (i, t) in types.iter().enumerate() {
            let t = t.trim();
            let valid = t.split_once('/').is_some_and(|(a, b)| {
                !a.is_empty()
                    && !b.is_empty()
                    && !b.contains('/')
                    && t.bytes()
                        .all(|c| c.is_ascii_graphic() && !matches!(c, b';' | b',' | b'"'))
            });
            if !valid {
                return Err(ConfigError::new(
                    format!("{field}.types[{i}]"),
                    format!(
                        "{t:?} is not a media type: write type/subtype, without parameters, or *"
                    ),
                ));
            }
            list.push(t.to_ascii_lowercase().into_boxed_str());
        }
        Types::List(list)
    };
    Ok(Settings {
        types,
        min_length: min_length.unwrap_or(DEFAULT_MIN_LENGTH),
        level,
        vary: vary.unwrap_or(true),
    })
}

impl Plugin for CompressPlugin {
    fn name(&self) -> &'static str {
        match self.offer.coding {
            Coding::Brotli => "brotli",
            Coding::Gzip => "gzip",
        }
    }

    /// APISIX's numbers.
    fn priority(&self) -> i32 {
        match self.offer.coding {
            Coding::Brotli => 996,
            Coding::Gzip => 995,
        }
    }

    fn request<'s>(&'s self, _ctx: &mut RequestCtx<'_>) -> Outcome<'s> {
        Outcome::Continue
    }

    fn has_response_phase(&self) -> bool {
        true
    }

    fn response(&self, _ctx: &ResponseCtx<'_>, response: &mut ResponseParts) {
        response.encodings.push(self.offer.clone());
    }

    fn describe(&self) -> serde_json::Value {
        self.config.clone()
    }
}

/// Chooses among the codings offered for a response once every response
/// phase has run, and adjusts its headers: `Vary`, and for the chosen
/// coding `Content-Encoding`, no `Content-Length`, no `Accept-Ranges`, a
/// weak `ETag`. Returns the encoder for the body, if it is to be
/// compressed. `size_hint` is the body's exact length, when known.
pub fn negotiate(
    ctx: &ResponseCtx<'_>,
    parts: &mut ResponseParts,
    size_hint: Option<u64>,
) -> Option<Encoder> {
    if parts.encodings.is_empty() || *ctx.method == http::Method::HEAD {
        return None;
    }
    let status = parts.status;
    if status.is_informational()
        || matches!(
            status,
            StatusCode::NO_CONTENT | StatusCode::PARTIAL_CONTENT | StatusCode::NOT_MODIFIED
        )
    {
        return None;
    }
    let headers = &parts.headers;
    if headers.contains_key(header::CONTENT_ENCODING)
        || headers.contains_key(header::CONTENT_RANGE)
        || has_token(headers, header::CACHE_CONTROL, "no-transform")
    {
        return None;
    }
    let length = match &parts.body {
        Some(b) => Some(b.len() as u64),
        None => content_length(headers).or(size_hint),
    };
    if length == Some(0) {
        return None;
    }
    let media = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or("").trim());
    let mut eligible: Vec<&Offer> = parts
        .encodings
        .iter()
        .filter(|o| {
            let s = &o.settings;
            let typed = match (&s.types, media) {
                (Types::Any, _) => true,
                (Types::List(list), Some(m)) => list.iter().any(|t| t.eq_ignore_ascii_case(m)),
                (Types::List(_), None) => false,
            };
            typed && length.is_none_or(|n| n >= s.min_length)
        })
        .collect();
    if eligible.is_empty() {
        return None;
    }
    // Stable: among equal codings the first offer (global plugins first)
    // is kept.
    eligible.sort_by_key(|o| o.coding.rank());
    let vary = eligible.iter().any(|o| o.settings.vary);
    let mut best: Option<(u16, &Offer)> = None;
    for offer in eligible {
        let w = weight(ctx.request_headers, offer.coding);
        if w > 0 && best.is_none_or(|(b, _)| w > b) {
            best = Some((w, offer));
        }
    }
    let chosen = best.map(|(_, o)| (o.coding, o.settings.level));
    let headers = &mut parts.headers;
    if vary
        && !has_token(headers, header::VARY, "accept-encoding")
        && !has_token(headers, header::VARY, "*")
    {
        headers.append(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    }
    let (coding, level) = chosen?;
    headers.insert(
        header::CONTENT_ENCODING,
        HeaderValue::from_static(coding.as_str()),
    );
    headers.remove(header::CONTENT_LENGTH);
    headers.remove(header::TRANSFER_ENCODING);
    headers.remove(header::ACCEPT_RANGES);
    if let Some(etag) = headers.get(header::ETAG)
        && etag.as_bytes().starts_with(b"\"")
    {
        let mut weak = b"W/".to_vec();
        weak.extend_from_slice(etag.as_bytes());
        if let Ok(v) = HeaderValue::from_bytes(&weak) {
            headers.insert(header::ETAG, v);
        }
    }
    Some(Encoder::new(coding, level, length))
}

/// Whether a comma-separated header lists `token` (any case).
fn has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| {
            // `no-transform` may not carry a value, but be lenient.
            let t = t.split('=').next().unwrap_or("").trim();
            t.eq_ignore_ascii_case(token)
        })
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// The weight, in thousandths, that the request's `Accept-Encoding` gives
/// `coding`: its own entry, else `*`'s, else 0. No `Accept-Encoding` at
/// all is taken as "send it as it is" (what clients that do not send the
/// header expect in practice), so 0 as well. Elements with an invalid
/// `q` are ignored.
pub fn weight(request: &HeaderMap, coding: Coding) -> u16 {
    let mut named: Option<u16> = None;
    let mut any: Option<u16> = None;
    for value in request.get_all(header::ACCEPT_ENCODING) {
        let Ok(text) = value.to_str() else {
            continue;
        };
        for element in text.split(',') {
            let mut params = element.split(';');
            let token = params.next().unwrap_or("").trim();
            if token.is_empty() {
                continue;
            }
            let mut q = Some(1000);
            for p in params {
                if let Some((k, v)) = p.split_once('=')
                    && k.trim().eq_ignore_ascii_case("q")
                {
                    q = qvalue(v.trim());
                }
            }
            let Some(q) = q else {
                continue;
            };
            let slot = if coding.named(token) {
                &mut named
            } else if token == "*" {
                &mut any
            } else {
                continue;
            };
            *slot = Some(slot.map_or(q, |s| s.max(q)));
        }
    }
    named.or(any).unwrap_or(0)
}

/// A `qvalue` (RFC 9110 section 12.4.2) in thousandths.
fn qvalue(text: &str) -> Option<u16> {
    let (int, frac) = text.split_once('.').unwrap_or((text, ""));
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut thousandths = 0u16;
    for (i, b) in frac.bytes().enumerate() {
        thousandths += u16::from(b - b'0') * [100, 10, 1][i];
    }
    match int {
        "0" => Some(thousandths),
        "1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

/// Compresses a body as it streams: data goes in with [`Encoder::write`],
/// compressed bytes come out with [`Encoder::take`] as they accumulate,
/// [`Encoder::flush`] when the upstream pauses (so that a stream of events
/// is not held back until more arrive) and [`Encoder::finish`] at the end.
pub struct Encoder {
    inner: Inner,
    /// Data written since the last flush.
    unflushed: bool,
}

enum Inner {
    Gzip(Option<flate2::write::GzEncoder<Vec<u8>>>),
    Brotli(Option<Box<brotli::CompressorWriter<Vec<u8>>>>),
}

impl fmt::Debug for Encoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let coding = match self.inner {
            Inner::Gzip(_) => "gzip",
            Inner::Brotli(_) => "br",
        };
        f.debug_struct("Encoder")
            .field("coding", &coding)
            .finish_non_exhaustive()
    }
}

fn finished() -> std::io::Error {
    std::io::Error::other("the compressed stream is already finished")
}

impl Encoder {
    /// An encoder at `level`; `length`, when known, sizes Brotli's window.
    pub fn new(coding: Coding, level: u32, length: Option<u64>) -> Encoder {
        let inner = match coding {
            Coding::Gzip => Inner::Gzip(Some(flate2::write::GzEncoder::new(
                Vec::new(),
                flate2::Compression::new(level.min(9)),
            ))),
            Coding::Brotli => {
                // The smallest window that holds the whole body (at least
                // brotli's minimum of 1 KiB), capped.
                let window = length.map_or(BROTLI_MAX_WINDOW, |n| {
                    let bits = u64::BITS - n.saturating_sub(1).leading_zeros();
                    bits.clamp(10, BROTLI_MAX_WINDOW)
                });
                Inner::Brotli(Some(Box::new(brotli::CompressorWriter::new(
                    Vec::new(),
                    4096,
                    level.min(11),
                    window,
                ))))
            }
        };
        Encoder {
            inner,
            unflushed: false,
        }
    }

    pub fn write(&mut self, data: &[u8]) -> std::io::Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        self.unflushed = true;
        match &mut self.inner {
            Inner::Gzip(Some(e)) => e.write_all(data),
            Inner::Brotli(Some(e)) => e.write_all(data),
            _ => Err(finished()),
        }
    }

    /// Compressed bytes ready to be sent.
    pub fn ready(&self) -> usize {
        match &self.inner {
            Inner::Gzip(Some(e)) => e.get_ref().len(),
            Inner::Brotli(Some(e)) => e.get_ref().len(),
            _ => 0,
        }
    }

    /// The compressed bytes produced so far.
    pub fn take(&mut self) -> Bytes {
        let out = match &mut self.inner {
            Inner::Gzip(Some(e)) => std::mem::take(e.get_mut()),
            Inner::Brotli(Some(e)) => std::mem::take(e.get_mut()),
            _ => Vec::new(),
        };
        Bytes::from(out)
    }

    /// Everything written so far, compressed and decodable by the client
    /// now (a sync flush); empty when nothing was written since the last.
    pub fn flush(&mut self) -> std::io::Result<Bytes> {
        if self.unflushed {
            self.unflushed = false;
            match &mut self.inner {
                Inner::Gzip(Some(e)) => e.flush()?,
                Inner::Brotli(Some(e)) => e.flush()?,
                _ => return Err(finished()),
            }
        }
        Ok(self.take())
    }

    /// The end of the compressed stream.
    pub fn finish(&mut self) -> std::io::Result<Bytes> {
        self.unflushed = false;
        let out = match &mut self.inner {
            Inner::Gzip(e) => e.take().ok_or_else(finished)?.finish()?,
            Inner::Brotli(e) => e.take().ok_or_else(finished)?.into_inner(),
        };
        Ok(Bytes::from(out))
    }
}

/// Output bytes worth passing on without waiting for a pause.
pub fn worth_sending(encoder: &Encoder) -> bool {
    encoder.ready() >= OUTPUT_CHUNK
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    fn accept(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_str(value).unwrap(),
        );
        h
    }

    #[test]
    fn qvalues() {
        for (text, q) in [
            ("0", Some(0)),
            ("0.5", Some(500)),
            ("0.125", Some(125)),
            ("0.", Some(0)),
            ("1", Some(1000)),
            ("1.000", Some(1000)),
            ("1.5", None),
            ("2", None),
            ("0.1234", None),
            ("", None),
            ("x", None),
            ("0.x", None),
        ] {
            assert_eq!(qvalue(text), q, "{text:?}");
        }
    }

    #[test]
    fn accept_encoding_weights() {
        let w = |v: &str| {
            (
                weight(&accept(v), Coding::Brotli),
                weight(&accept(v), Coding::Gzip),
            )
        };
        assert_eq!(weight(&HeaderMap::new(), Coding::Gzip), 0);
        assert_eq!(w("gzip"), (0, 1000));
        assert_eq!(w("br, gzip"), (1000, 1000));
        assert_eq!(w("GZIP;Q=0.5, br;q=0.4"), (400, 500));
        assert_eq!(w("gzip;q=0"), (0, 0));
        assert_eq!(w("*"), (1000, 1000));
        assert_eq!(w("*;q=0.2, gzip"), (200, 1000));
        assert_eq!(w("*, gzip;q=0"), (1000, 0));
        assert_eq!(w("identity"), (0, 0));
        assert_eq!(w("x-gzip"), (0, 1000));
        assert_eq!(w(" br ; q=0.9 ,, deflate"), (900, 0));
        // An invalid q makes the element not count.
        assert_eq!(w("br;q=2, gzip;q=abc"), (0, 0));
    }

    fn offer(coding: Coding, types: &[&str], min: u64, vary: bool) -> Offer {
        let types: Vec<String> = types.iter().map(|t| t.to_string()).collect();
        let range = match coding {
            Coding::Gzip => 1..=9,
            Coding::Brotli => 0..=11,
        };
        Offer {
            coding,
            settings: Arc::new(
                settings("x", &types, Some(min), (None, 4, range), Some(vary)).unwrap(),
            ),
        }
    }

    fn response(content_type: &str, length: Option<u64>, offers: Vec<Offer>) -> ResponseParts {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_str(content_type).unwrap(),
        );
        if let Some(n) = length {
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
        }
        ResponseParts {
            status: StatusCode::OK,
            headers,
            body: None,
            encodings: offers,
        }
    }

    fn chosen(
        accept_value: Option<&str>,
        method: &http::Method,
        parts: &mut ResponseParts,
    ) -> Option<&'static str> {
        let request = accept_value.map_or_else(HeaderMap::new, accept);
        let ctx = ResponseCtx {
            request_headers: &request,
            method,
            consumer: None,
            route: "r",
        };
        negotiate(&ctx, parts, None)?;
        Some(
            match parts.headers[header::CONTENT_ENCODING].to_str().unwrap() {
                "br" => "br",
                "gzip" => "gzip",
                _ => "?",
            },
        )
    }

    #[test]
    fn negotiation_prefers_brotli_on_ties_and_follows_weights() {
        let get = http::Method::GET;
        let both = || {
            vec![
                offer(Coding::Gzip, &[], 256, true),
                offer(Coding::Brotli, &[], 256, true),
            ]
        };
        for (ae, expected) in [
            (None, None),
            (Some("gzip;q=0"), None),
            (Some("identity"), None),
            (Some("br, gzip"), Some("br")),
            (Some("gzip, br"), Some("br")),
            (Some("gzip, br;q=0.5"), Some("gzip")),
            (Some("*"), Some("br")),
            (Some("*, br;q=0"), Some("gzip")),
            (Some("gzip"), Some("gzip")),
        ] {
            let mut parts = response("application/json; charset=utf-8", Some(1000), both());
            assert_eq!(chosen(ae, &get, &mut parts), expected, "{ae:?}");
            // Eligible either way: caches must know the answer varies.
            assert_eq!(parts.headers[header::VARY], "Accept-Encoding", "{ae:?}");
            if expected.is_some() {
                assert!(parts.headers.get(header::CONTENT_LENGTH).is_none());
            } else {
                assert_eq!(parts.headers[header::CONTENT_LENGTH], "1000");
            }
        }
    }

    #[test]
    fn what_is_never_compressed() {
        let get = http::Method::GET;
        let gz = || vec![offer(Coding::Gzip, &[], 256, true)];
        let mut p = response("text/html", Some(1000), gz());
        assert_eq!(chosen(Some("gzip"), &http::Method::HEAD, &mut p), None);
        assert!(p.headers.get(header::VARY).is_none());
        for status in [101, 103, 204, 206, 304] {
            let mut p = response("text/html", None, gz());
            p.status = StatusCode::from_u16(status).unwrap();
            assert_eq!(chosen(Some("gzip"), &get, &mut p), None, "{status}");
        }
        let mut p = response("text/html", None, gz());
        p.headers
            .insert(header::CONTENT_ENCODING, HeaderValue::from_static("zstd"));
        assert_eq!(chosen(Some("gzip"), &get, &mut p), None);
        assert_eq!(p.headers[header::CONTENT_ENCODING], "zstd");
        let mut p = response("text/html", None, gz());
        p.headers.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("public, No-Transform"),
        );
        assert_eq!(chosen(Some("gzip"), &get, &mut p), None);
        // Too short, of another type, or without a type.
        let mut p = response("text/html", Some(255), gz());
        assert_eq!(chosen(Some("gzip"), &get, &mut p), None);
        assert!(p.headers.get(header::VARY).is_none());
        let mut p = response("image/png", Some(5000), gz());
        assert_eq!(chosen(Some("gzip"), &get, &mut p), None);
        let mut p = response("text/html", None, gz());
        p.headers.remove(header::CONTENT_TYPE);
        assert_eq!(chosen(Some("gzip"), &get, &mut p), None);
        // Unknown length, type in any case, listed types, `*`.
        let mut p = response("TEXT/HTML;charset=utf-8", None, gz());
        assert_eq!(chosen(Some("gzip"), &get, &mut p), Some("gzip"));
        let mut p = response(
            "application/wasm",
            Some(300),
            vec![offer(Coding::Gzip, &["application/wasm"], 0, false)],
        );
        assert_eq!(chosen(Some("gzip"), &get, &mut p), Some("gzip"));
        assert!(p.headers.get(header::VARY).is_none());
        let mut p = response(
            "image/png",
            None,
            vec![offer(Coding::Gzip, &["*"], 0, true)],
        );
        assert_eq!(chosen(Some("gzip"), &get, &mut p), Some("gzip"));
        // A replaced body is measured, not the old header.
        let mut p = response("text/html", Some(5000), gz());
        p.body = Some(Bytes::from_static(b"short"));
        assert_eq!(chosen(Some("gzip"), &get, &mut p), None);
    }

    #[test]
    fn compressed_responses_lose_ranges_and_strong_etags() {
        let mut p = response("text/css", None, vec![offer(Coding::Brotli, &[], 0, true)]);
        p.headers
            .insert(header::ETAG, HeaderValue::from_static("\"abc\""));
        p.headers
            .insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
        p.headers.insert(
            header::VARY,
            HeaderValue::from_static("Origin, accept-encoding"),
        );
        assert_eq!(chosen(Some("br"), &http::Method::GET, &mut p), Some("br"));
        assert_eq!(p.headers[header::ETAG], "W/\"abc\"");
        assert!(p.headers.get(header::ACCEPT_RANGES).is_none());
        assert_eq!(p.headers.get_all(header::VARY).iter().count(), 1);
        let mut p = response("text/css", None, vec![offer(Coding::Brotli, &[], 0, true)]);
        p.headers
            .insert(header::ETAG, HeaderValue::from_static("W/\"abc\""));
        chosen(Some("br"), &http::Method::GET, &mut p);
        assert_eq!(p.headers[header::ETAG], "W/\"abc\"");
    }

    #[test]
    fn settings_are_checked() {
        let env_consumers = |_: &std::collections::BTreeMap<String, String>| Vec::new();
        let env = BuildEnv {
            namespace: "default",
            redis: None,
            secret: &|_, _| None,
            consumers: &env_consumers,
        };
        let e = CompressPlugin::build_gzip(
            &Gzip {
                level: Some(10),
                ..Default::default()
            },
            &env,
        )
        .unwrap_err();
        assert_eq!(e.field, "gzip.level");
        assert!(e.message.contains("1 (fastest) to 9"), "{}", e.message);
        let e = CompressPlugin::build_gzip(
            &Gzip {
                level: Some(0),
                ..Default::default()
            },
            &env,
        )
        .unwrap_err();
        assert_eq!(e.field, "gzip.level");
        let e = CompressPlugin::build_brotli(
            &Brotli {
                level: Some(12),
                ..Default::default()
            },
            &env,
        )
        .unwrap_err();
        assert_eq!(e.field, "brotli.level");
        assert!(
            CompressPlugin::build_brotli(
                &Brotli {
                    level: Some(0),
                    ..Default::default()
                },
                &env
            )
            .is_ok()
        );
        for bad in [
            "text",
            "text/html; charset=utf-8",
            "a/b/c",
            "/x",
            "text/ html",
        ] {
            let c = Gzip {
                types: vec!["text/css".into(), bad.into()],
                ..Default::default()
            };
            let e = CompressPlugin::build_gzip(&c, &env).unwrap_err();
            assert_eq!(e.field, "gzip.types[1]", "{bad}");
        }
        let p = CompressPlugin::build_brotli(&Brotli::default(), &env).unwrap();
        assert_eq!((p.name(), p.priority()), ("brotli", 996));
        assert!(p.has_response_phase());
    }

    fn gunzip(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(data)
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    fn unbrotli(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        brotli::Decompressor::new(data, 4096)
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    #[test]
    fn encoders_stream_and_flush() {
        let text: Vec<u8> = (0..2000)
            .flat_map(|i| format!("line {i} of the body\n").into_bytes())
            .collect();
        for coding in [Coding::Gzip, Coding::Brotli] {
            let mut e = Encoder::new(coding, 5, None);
            let mut out = Vec::new();
            for chunk in text.chunks(1000) {
                e.write(chunk).unwrap();
                if e.ready() > 0 {
                    out.extend_from_slice(&e.take());
                }
            }
            // A flush makes everything so far decodable without the end.
            out.extend_from_slice(&e.flush().unwrap());
            let mut partial = Vec::new();
            match coding {
                Coding::Gzip => {
                    let mut d = flate2::write::GzDecoder::new(Vec::new());
                    d.write_all(&out).unwrap();
                    d.flush().unwrap();
                    partial = d.get_ref().clone();
                }
                Coding::Brotli => {
                    // The stream as far as it goes: all of the output a
                    // decoder can give without the end of the stream.
                    let mut state = brotli::BrotliState::new(
                        brotli::enc::StandardAlloc::default(),
                        brotli::enc::StandardAlloc::default(),
                        brotli::enc::StandardAlloc::default(),
                    );
                    let mut buf = vec![0u8; 1 << 20];
                    let (mut avail_in, mut in_at, mut avail_out, mut out_at, mut total) =
                        (out.len(), 0, buf.len(), 0, 0);
                    let r = brotli::BrotliDecompressStream(
                        &mut avail_in,
                        &mut in_at,
                        &out,
                        &mut avail_out,
                        &mut out_at,
                        &mut buf,
                        &mut total,
                        &mut state,
                    );
                    assert!(matches!(r, brotli::BrotliResult::NeedsMoreInput));
                    partial.extend_from_slice(&buf[..out_at]);
                }
            }
            assert!(
                partial == text,
                "{coding:?}: decoded {} of {} bytes after a flush",
                partial.len(),
                text.len()
            );
            // Nothing written since: nothing to flush.
            assert!(e.flush().unwrap().is_empty());
            e.write(b"the end\n").unwrap();
            out.extend_from_slice(&e.finish().unwrap());
            let decoded = match coding {
                Coding::Gzip => gunzip(&out),
                Coding::Brotli => unbrotli(&out),
            };
            let mut expected = text.clone();
            expected.extend_from_slice(b"the end\n");
            assert_eq!(decoded, expected, "{coding:?}");
            assert!(out.len() < text.len() / 4, "{coding:?}: {}", out.len());
            assert!(e.write(b"more").is_err());
            assert!(e.finish().is_err());
        }
    }
}
