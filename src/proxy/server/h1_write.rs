//! Responses out (RFC 9112 §4–§7).
//!
//! The framing of a response is decided from its body, never copied from
//! the upstream (see `wire::encode_response_head`). A small complete
//! response goes out in one write, head and body together.
//!
//! Every write is bounded by the send timeout, counted as time without
//! progress (as nginx's `send_timeout`): a client that stops reading
//! cannot hold the connection, the response's upstream connection or its
//! endpoint's in-flight slot for longer than that.

use std::io;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use http::header;
use http::{Response, StatusCode, Version};
use http_body::Body;
use tokio::io::AsyncWrite;
use tokio::time::Instant;

use crate::http::timer::LazyDeadline;
use crate::http::wire::{
    ResponseFraming, content_length, encode_chunk, encode_last_chunk, encode_response_head,
    put_length, put_size,
};

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

/// Why a response could not be sent whole.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error(transparent)]
    Io(#[from] io::Error),
    #[error("the client read nothing for {0:?}")]
    Stalled(Duration),
    #[error("the response body failed: {0}")]
    Body(String),
    #[error("the response body did not match its length")]
    Length,
}

/// The writing side of a client connection, with its reusable output
/// buffer.
pub struct Out<W> {
    w: W,
    buf: Vec<u8>,
}

impl<W: AsyncWrite + Unpin> Out<W> {
    pub fn new(w: W) -> Self {
        Out {
            w,
            buf: Vec::with_capacity(1024),
        }
    }

    pub fn into_inner(self) -> W {
        self.w
    }

    /// Writes `bytes` whole and flushes them, failing when the client
    /// takes none of them for `stall`.
    pub async fn write(
        &mut self,
        mut bytes: &[u8],
        timer: &mut LazyDeadline,
        stall: Duration,
    ) -> Result<(), WriteError> {
        let mut armed = false;
        std::future::poll_fn(|cx| {
            loop {
                let polled = if bytes.is_empty() {
                    match Pin::new(&mut self.w).poll_flush(cx) {
                        Poll::Ready(Ok(())) => return Poll::Ready(Ok(())),
                        Poll::Ready(Err(e)) => return Poll::Ready(Err(e.into())),
                        Poll::Pending => Poll::Pending,
                    }
                } else {
                    Pin::new(&mut self.w).poll_write(cx, bytes)
                };
                match polled {
                    Poll::Ready(Ok(0)) => {
                        return Poll::Ready(Err(io::Error::from(io::ErrorKind::WriteZero).into()));
                    }
                    Poll::Ready(Ok(n)) => {
                        bytes = &bytes[n..];
                        // Progress: the stall is counted anew.
                        armed = false;
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e.into())),
                    Poll::Pending => {
                        // The clock is read only when a write has to wait.
                        if !armed {
                            timer.set(Instant::now() + stall);
                            armed = true;
                        }
                        if timer.poll_expired(cx) {
                            return Poll::Ready(Err(WriteError::Stalled(stall)));
                        }
                        return Poll::Pending;
                    }
                }
            }
        })
        .await
    }

    /// Writes the pending output, if any.
    async fn drain(&mut self, timer: &mut LazyDeadline, stall: Duration) -> Result<(), WriteError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let buf = std::mem::take(&mut self.buf);
        let r = self.write(&buf, timer, stall).await;
        self.buf = buf;
        self.buf.clear();
        r
    }
}

/// Writes `resp`; returns whether the connection may carry another
/// request.
pub async fn write_response<W, B>(
    out: &mut Out<W>,
    timer: &mut LazyDeadline,
    stall: Duration,
    resp: Response<B>,
    req: RequestFacts,
) -> Result<bool, WriteError>
where
    W: AsyncWrite + Unpin,
    B: Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let (parts, mut body) = resp.into_parts();
    let status = parts.status;
    let exact = body.size_hint().exact();
    let switching = status == StatusCode::SWITCHING_PROTOCOLS;
    let bodiless = req.head || status.is_informational() || status == 204 || status == 304;
    let framing = if bodiless {
        ResponseFraming::None
    } else if let Some(n) = exact {
        ResponseFraming::Length(n)
    } else if let Some(n) = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| content_length(v.as_bytes()))
    {
        ResponseFraming::Length(n)
    } else if req.version == Version::HTTP_11 {
        ResponseFraming::Chunked
    } else {
        ResponseFraming::Close
    };
    let keep_alive = req.keep_alive && framing != ResponseFraming::Close && !switching;

    out.buf.clear();
    let http10 = req.version == Version::HTTP_10;
    encode_response_head(
        &mut out.buf,
        status,
        &parts.headers,
        framing,
        keep_alive,
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
            out.buf.truncate(out.buf.len() - 2);
            put_length(&mut out.buf, n);
            out.buf.extend_from_slice(b"\r\n");
        }
        out.drain(timer, stall).await?;
        return Ok(keep_alive);
    }

    let chunked = framing == ResponseFraming::Chunked;
    let mut sent: u64 = 0;
    loop {
        // Whatever is ready now joins the pending output; a pause of the
        // body sends it first, so nothing ready is held back.
        let polled = std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut body).poll_frame(cx)));
        let frame = match polled.await {
            Poll::Ready(f) => f,
            Poll::Pending => {
                out.drain(timer, stall).await?;
                std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await
            }
        };
        match frame {
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => {
                    sent += data.len() as u64;
                    if let ResponseFraming::Length(n) = framing
                        && sent > n
                    {
                        return Err(WriteError::Length);
                    }
                    put_data(out, timer, stall, data, chunked).await?;
                }
                Err(frame) => {
                    if let (true, Ok(trailers)) = (chunked, frame.into_trailers()) {
                        encode_last_chunk(&mut out.buf, Some(&trailers));
                        out.drain(timer, stall).await?;
                        return Ok(keep_alive);
                    }
                }
            },
            Some(Err(e)) => {
                // What was ready goes out; the connection then closes, so
                // the client sees the body cut short.
                let _ = out.drain(timer, stall).await;
                return Err(WriteError::Body(e.to_string()));
            }
            None => break,
        }
    }
    match framing {
        ResponseFraming::Chunked => out.buf.extend_from_slice(b"0\r\n\r\n"),
        ResponseFraming::Length(n) if sent != n => {
            let _ = out.drain(timer, stall).await;
            return Err(WriteError::Length);
        }
        _ => {}
    }
    out.drain(timer, stall).await?;
    Ok(keep_alive)
}

/// Appends one piece of body, or writes it directly when it is large.
async fn put_data<W: AsyncWrite + Unpin>(
    out: &mut Out<W>,
    timer: &mut LazyDeadline,
    stall: Duration,
    data: Bytes,
    chunked: bool,
) -> Result<(), WriteError> {
    if data.is_empty() {
        return Ok(());
    }
    if data.len() <= COALESCE {
        if chunked {
            encode_chunk(&mut out.buf, &data);
        } else {
            out.buf.extend_from_slice(&data);
        }
        if out.buf.len() > COALESCE {
            out.drain(timer, stall).await?;
        }
        return Ok(());
    }
    if chunked {
        put_size(&mut out.buf, data.len());
    }
    out.drain(timer, stall).await?;
    out.write(&data, timer, stall).await?;
    if chunked {
        out.buf.extend_from_slice(b"\r\n");
    }
    Ok(())
}
