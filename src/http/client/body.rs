//! Request bodies out and response bodies in, streamed frame by frame.
//!
//! Whatever the backend's protocol, an upstream response body is one
//! [`UpstreamBody`]: complete in hand, streamed from the own HTTP/1.1
//! client, streamed by hyper (TLS and HTTP/2 backends, trailers
//! included), or, after a `101`, the switched connection itself.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::task::JoinHandle;

use super::conn::{Conn, Pool};
use super::{OutBody, UpstreamError};
use crate::http::io::{Source, Upgraded};
use crate::http::wire::{
    BodyFraming, Chunk, ChunkedDecoder, encode_chunk, encode_last_chunk, retain_trailers_in,
};

/// Reads more bytes into `conn.buf`; `Ok(0)` means the upstream closed.
fn poll_fill(conn: &mut Conn, cx: &mut Context<'_>) -> Poll<Result<usize, std::io::Error>> {
    conn.read.poll_fill(&mut conn.buf, cx)
}

/// An upstream's response body.
#[derive(Debug)]
pub enum UpstreamBody {
    /// The whole body arrived with the head (or there is none).
    Complete(Option<Bytes>),
    /// Streamed from the own HTTP/1.1 client. Boxed: it is large, and
    /// most responses are complete.
    Stream(Box<H1Stream>),
    /// Streamed by hyper's client, trailers included.
    Hyper(hyper::body::Incoming),
    /// After `101 Switching Protocols`: no body, the connection itself,
    /// taken once.
    Switched(Option<Switched>),
}

/// An upstream connection after `101 Switching Protocols`.
pub enum Switched {
    /// From the own client, with what the upstream sent after the head.
    Own(tokio::net::TcpStream, BytesMut),
    Hyper(hyper::upgrade::OnUpgrade),
}

impl std::fmt::Debug for Switched {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Switched")
    }
}

impl Switched {
    /// The switched connection, with the upstream's first bytes (sent
    /// right after its `101`) to be passed on first.
    pub async fn wait(self) -> std::io::Result<(Upgraded, BytesMut)> {
        match self {
            Switched::Own(stream, leftover) => Ok((Box::new(stream), leftover)),
            Switched::Hyper(on) => match on.await {
                Ok(u) => Ok((Box::new(hyper_util::rt::TokioIo::new(u)), BytesMut::new())),
                Err(e) => Err(std::io::Error::other(e)),
            },
        }
    }
}

impl UpstreamBody {
    pub(super) fn stream(
        conn: Conn,
        framing: BodyFraming,
        keep_alive: bool,
        writer: Option<JoinHandle<Result<OwnedWriteHalf, UpstreamError>>>,
        pool: Arc<Pool>,
    ) -> Self {
        UpstreamBody::Stream(Box::new(H1Stream::new(
            conn, framing, keep_alive, writer, pool,
        )))
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = UpstreamError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, UpstreamError>>> {
        match self.get_mut() {
            UpstreamBody::Complete(b) => Poll::Ready(b.take().map(|d| Ok(Frame::data(d)))),
            UpstreamBody::Stream(s) => Pin::new(s.as_mut()).poll_frame(cx),
            UpstreamBody::Hyper(b) => {
                let frame = ready!(Pin::new(b).poll_frame(cx));
                Poll::Ready(frame.map(|f| Ok(retain_trailers_in(f?))))
            }
            UpstreamBody::Switched(_) => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpstreamBody::Complete(b) => b.is_none(),
            UpstreamBody::Stream(s) => s.is_end_stream(),
            UpstreamBody::Hyper(b) => b.is_end_stream(),
            UpstreamBody::Switched(_) => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpstreamBody::Complete(Some(b)) => SizeHint::with_exact(b.len() as u64),
            UpstreamBody::Complete(None) | UpstreamBody::Switched(_) => SizeHint::with_exact(0),
            UpstreamBody::Stream(s) => s.size_hint(),
            UpstreamBody::Hyper(b) => b.size_hint(),
        }
    }
}

/// Streams the rest of a request body to the upstream, then hands the
/// write half back so that the connection can be reused.
pub(super) async fn write_body<B: OutBody>(
    mut w: OwnedWriteHalf,
    mut body: B,
    first: Option<Frame<Bytes>>,
    chunked: bool,
) -> Result<OwnedWriteHalf, UpstreamError> {
    use http_body_util::BodyExt;
    let mut scratch = Vec::new();
    let mut next = first;
    loop {
        let frame = match next.take() {
            Some(f) => f,
            None => match body.frame().await {
                Some(f) => f.map_err(|_| UpstreamError::ClientBody)?,
                None => break,
            },
        };
        match frame.into_data() {
            Ok(data) => {
                if data.is_empty() {
                    continue;
                }
                if chunked {
                    scratch.clear();
                    encode_chunk(&mut scratch, &data);
                    w.write_all(&scratch).await?;
                } else {
                    w.write_all(&data).await?;
                }
            }
            Err(frame) => {
                if let (true, Ok(trailers)) = (chunked, frame.into_trailers()) {
                    scratch.clear();
                    encode_last_chunk(&mut scratch, Some(&trailers));
                    w.write_all(&scratch).await?;
                    return Ok(w);
                }
            }
        }
    }
    if chunked {
        w.write_all(b"0\r\n\r\n").await?;
    }
    Ok(w)
}

#[derive(Debug)]
enum State {
    Length(u64),
    Chunked(ChunkedDecoder),
    UntilClose,
    Done,
}

/// A response body read from an upstream connection as the client
/// consumes it. Once complete, the connection goes back to the pool if it
/// can carry another request; a body dropped early closes it.
#[derive(Debug)]
pub struct H1Stream {
    conn: Option<Conn>,
    state: State,
    keep_alive: bool,
    /// The task still writing the request body, if any.
    writer: Option<JoinHandle<Result<OwnedWriteHalf, UpstreamError>>>,
    pool: Arc<Pool>,
}

impl H1Stream {
    fn new(
        conn: Conn,
        framing: BodyFraming,
        keep_alive: bool,
        writer: Option<JoinHandle<Result<OwnedWriteHalf, UpstreamError>>>,
        pool: Arc<Pool>,
    ) -> Self {
        let state = match framing {
            BodyFraming::Empty => State::Done,
            BodyFraming::Length(n) => State::Length(n),
            BodyFraming::Chunked => State::Chunked(ChunkedDecoder::default()),
            BodyFraming::UntilClose => State::UntilClose,
        };
        H1Stream {
            conn: Some(conn),
            state,
            keep_alive,
            writer,
            pool,
        }
    }

    /// Ends the exchange: the connection is pooled only when the response
    /// was complete, the upstream allows reuse and the request body was
    /// written in full.
    fn finish(&mut self, cx: &mut Context<'_>) {
        self.state = State::Done;
        let Some(mut conn) = self.conn.take() else {
            return;
        };
        if !self.keep_alive {
            return;
        }
        if let Some(mut writer) = self.writer.take() {
            match Pin::new(&mut writer).poll(cx) {
                Poll::Ready(Ok(Ok(w))) => conn.write = Some(w),
                Poll::Ready(_) => return,
                Poll::Pending => {
                    writer.abort();
                    return;
                }
            }
        }
        self.pool.put(conn);
    }

    fn data(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, UpstreamError>>> {
        loop {
            let Some(conn) = self.conn.as_mut() else {
                return Poll::Ready(None);
            };
            match &mut self.state {
                State::Done => return Poll::Ready(None),
                State::Length(remaining) => {
                    if !conn.buf.is_empty() {
                        let n = (conn.buf.len() as u64).min(*remaining) as usize;
                        let data = conn.buf.split_to(n).freeze();
                        *remaining -= n as u64;
                        if *remaining == 0 {
                            self.finish(cx);
                        }
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                    if ready!(poll_fill(conn, cx))? == 0 {
                        return Poll::Ready(Some(Err(UpstreamError::Truncated)));
                    }
                }
                State::Chunked(dec) => match dec.decode(&mut conn.buf)? {
                    Chunk::Data(d) => return Poll::Ready(Some(Ok(Frame::data(d)))),
                    Chunk::End(trailers) => {
                        self.finish(cx);
                        if trailers.is_empty() {
                            return Poll::Ready(None);
                        }
                        return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                    }
                    Chunk::NeedMore => {
                        if ready!(poll_fill(conn, cx))? == 0 {
                            return Poll::Ready(Some(Err(UpstreamError::Truncated)));
                        }
                    }
                },
                State::UntilClose => {
                    if !conn.buf.is_empty() {
                        let data = conn.buf.split().freeze();
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                    if ready!(poll_fill(conn, cx))? == 0 {
                        self.state = State::Done;
                        self.conn = None;
                        return Poll::Ready(None);
                    }
                }
            }
        }
    }
}

impl Body for H1Stream {
    type Data = Bytes;
    type Error = UpstreamError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        let res = this.data(cx);
        if let Poll::Ready(Some(Err(_))) = res {
            this.state = State::Done;
            this.conn = None;
        }
        res
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.state, State::Done)
    }

    fn size_hint(&self) -> SizeHint {
        match self.state {
            State::Length(n) => SizeHint::with_exact(n),
            State::Done => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}

impl Drop for H1Stream {
    fn drop(&mut self) {
        if let Some(w) = self.writer.take() {
            w.abort();
        }
    }
}

/// Splits a complete body out of the read buffer when it is already
/// there, the common case for small responses, so that the connection can
/// be pooled before the response is even returned.
pub(super) fn take_complete(buf: &mut BytesMut, framing: BodyFraming) -> Option<Bytes> {
    match framing {
        BodyFraming::Empty => Some(Bytes::new()),
        BodyFraming::Length(n) if buf.len() as u64 >= n => Some(buf.split_to(n as usize).freeze()),
        _ => None,
    }
}
