//! Responses out (RFC 9112 §4–§7).
//!
//! The framing of a response is decided here from its body, never copied
//! from the upstream: a body of known size gets `Content-Length`, another
//! one is chunked for HTTP/1.1 clients and delimited by closing the
//! connection for HTTP/1.0 ones. A small complete response goes out in one
//! write, head and body together.

use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::task::Poll;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{self, HeaderMap};
use http::{Response, StatusCode, Version};
use http_body::Body;
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedWriteHalf;

use crate::proxy::body::ResponseBody;
use crate::proxy::headers::{content_length, put};
use crate::proxy::upstream::{encode_chunk, encode_last_chunk};

/// Body bytes copied next to the head (or the pending output) rather than
/// written on their own.
const COALESCE: usize = 16 * 1024;

/// What the response depends on about its request.
#[derive(Clone, Copy, Debug)]
pub struct RequestFacts {
    /// A `HEAD` request: the response has no body, whatever it says.
    pub head: bool,
    pub version: Version,
    /// Whether the connection may carry another request afterwards.
    pub keep_alive: bool,
}

/// How a response body is delimited on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Framing {
    None,
    Length(u64),
    Chunked,
    Close,
}

/// Why a response could not be sent whole.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error(transparent)]
    Io(#[from] io::Error),
    #[error("the response body failed: {0}")]
    Body(String),
    #[error("the response body did not match its length")]
    Length,
}

/// Writes `resp`; returns whether the connection may carry another
/// request. `out` is the connection's reusable output buffer.
pub async fn write_response(
    w: &mut OwnedWriteHalf,
    out: &mut Vec<u8>,
    resp: Response<ResponseBody>,
    req: RequestFacts,
) -> Result<bool, WriteError> {
    let (parts, mut body) = resp.into_parts();
    let status = parts.status;
    let exact = body.size_hint().exact();
    let switching = status == StatusCode::SWITCHING_PROTOCOLS;
    let bodiless = req.head || status.is_informational() || status == 204 || status == 304;
    let framing = if bodiless {
        Framing::None
    } else if let Some(n) = exact {
        Framing::Length(n)
    } else if let Some(n) = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| content_length(v.as_bytes()))
    {
        Framing::Length(n)
    } else if req.version == Version::HTTP_11 {
        Framing::Chunked
    } else {
        Framing::Close
    };
    let keep_alive = req.keep_alive && framing != Framing::Close && !switching;

    out.clear();
    let http10 = req.version == Version::HTTP_10;
    encode_head(
        out,
        status,
        &parts.headers,
        framing,
        keep_alive,
        switching,
        http10,
    );
    if bodiless {
        // `HEAD` answers say how long the body would have been.
        if req.head
            && !parts.headers.contains_key(header::CONTENT_LENGTH)
            && let Some(n) = exact
            && status != 204
            && status != 304
        {
            // Inserted before the head's final CRLF.
            out.truncate(out.len() - 2);
            put_length(out, n);
            out.extend_from_slice(b"\r\n");
        }
        w.write_all(out).await?;
        return Ok(keep_alive);
    }

    let mut sent: u64 = 0;
    loop {
        // Whatever is ready now joins the pending output; a pause of the
        // body sends it first, so nothing ready is held back.
        let polled = std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut body).poll_frame(cx)));
        let frame = match polled.await {
            Poll::Ready(f) => f,
            Poll::Pending => {
                if !out.is_empty() {
                    w.write_all(out).await?;
                    out.clear();
                }
                std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await
            }
        };
        match frame {
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => {
                    sent += data.len() as u64;
                    if let Framing::Length(n) = framing
                        && sent > n
                    {
                        return Err(WriteError::Length);
                    }
                    put_data(w, out, data, framing == Framing::Chunked).await?;
                }
                Err(frame) => {
                    if let (Framing::Chunked, Ok(trailers)) = (framing, frame.into_trailers()) {
                        encode_last_chunk(out, Some(&trailers));
                        w.write_all(out).await?;
                        out.clear();
                        return Ok(keep_alive);
                    }
                }
            },
            Some(Err(e)) => {
                // What was ready goes out; the connection then closes, so
                // the client sees the body cut short.
                if !out.is_empty() {
                    let _ = w.write_all(out).await;
                }
                return Err(WriteError::Body(e.to_string()));
            }
            None => break,
        }
    }
    match framing {
        Framing::Chunked => out.extend_from_slice(b"0\r\n\r\n"),
        Framing::Length(n) if sent != n => {
            if !out.is_empty() {
                let _ = w.write_all(out).await;
            }
            return Err(WriteError::Length);
        }
        _ => {}
    }
    if !out.is_empty() {
        w.write_all(out).await?;
        out.clear();
    }
    Ok(keep_alive)
}

/// Appends one piece of body, or writes it directly when it is large.
async fn put_data(
    w: &mut OwnedWriteHalf,
    out: &mut Vec<u8>,
    data: Bytes,
    chunked: bool,
) -> io::Result<()> {
    if data.is_empty() {
        return Ok(());
    }
    if data.len() <= COALESCE {
        if chunked {
            encode_chunk(out, &data);
        } else {
            out.extend_from_slice(&data);
        }
        if out.len() > COALESCE {
            w.write_all(out).await?;
            out.clear();
        }
        return Ok(());
    }
    if chunked {
        out.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
    }
    if !out.is_empty() {
        w.write_all(out).await?;
        out.clear();
    }
    w.write_all(&data).await?;
    if chunked {
        out.extend_from_slice(b"\r\n");
    }
    Ok(())
}

/// Headers the server writes itself, or that describe only the hop from
/// the upstream.
fn is_framing_or_hop(name: &header::HeaderName) -> bool {
    name == header::CONNECTION
        || name == header::TRANSFER_ENCODING
        || name == header::CONTENT_LENGTH
        || name == "keep-alive"
        || name == "proxy-connection"
}

fn encode_head(
    out: &mut Vec<u8>,
    status: StatusCode,
    headers: &HeaderMap,
    framing: Framing,
    keep_alive: bool,
    switching: bool,
    http10: bool,
) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in headers {
        // A switch passes `Connection: upgrade` on as it is; a bodiless
        // answer keeps the length it describes (`HEAD`, `304`).
        let keep = if switching {
            true
        } else if name == header::CONTENT_LENGTH {
            framing == Framing::None
        } else {
            !is_framing_or_hop(name)
        };
        if keep {
            put(out, name.as_str(), value.as_bytes());
        }
    }
    match framing {
        Framing::Length(n) => put_length(out, n),
        Framing::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        Framing::None | Framing::Close => {}
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

fn put_length(out: &mut Vec<u8>, mut n: u64) {
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

/// The `Date` value, formatted once per second per thread.
fn put_date(out: &mut Vec<u8>) {
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
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    out.clear();
    encode_head(
        out,
        status,
        &headers,
        Framing::Length(text.len() as u64),
        false,
        false,
        false,
    );
    out.extend_from_slice(text.as_bytes());
}
