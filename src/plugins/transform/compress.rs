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
#[path = "compress_tests.rs"]
mod tests;
