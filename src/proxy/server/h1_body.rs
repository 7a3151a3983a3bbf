//! Request bodies read straight from the client's socket.
//!
//! A body that arrived with its head is handed over whole. Otherwise the
//! connection's reading side moves into the body for as long as it
//! streams, so whoever reads the body (the request's task, or the helper
//! that writes it upstream) reads the socket directly, without a channel
//! between tasks. At the end of the body the reading side goes back to the
//! connection, with whatever the client sent after the body: the next
//! pipelined request.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use tokio::sync::oneshot;

use super::body_error::ClientBodyError;
use crate::http::io::Source;
use crate::http::wire::{Chunk, ChunkedDecoder};

/// The reading side of a client connection: the stream's read half and
/// what was read from it but not used yet.
pub struct Reader<R> {
    pub read: R,
    pub buf: BytesMut,
}

impl<R: Source> Reader<R> {
    /// No buffer yet: an idle connection holds none until its client
    /// sends something.
    pub fn new(read: R) -> Self {
        Reader {
            read,
            buf: BytesMut::new(),
        }
    }

    /// Reads more bytes into the buffer; `Ok(0)` means the client closed.
    pub fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        self.read.poll_fill(&mut self.buf, cx)
    }
}

#[derive(Debug)]
enum State {
    /// The whole body, in hand.
    Full(Option<Bytes>),
    /// This many bytes are still to come.
    Length(u64),
    /// Boxed: the decoder is large, chunked requests are rare.
    Chunked(Box<ChunkedDecoder>),
    Done,
    /// Failed; it stays failed, so that no reader mistakes it for a
    /// complete body.
    Failed,
}

/// A request body read by the proxy's own HTTP/1.1 server.
pub struct H1Body<R> {
    state: State,
    /// The connection's reading side, while the body streams.
    reader: Option<Box<Reader<R>>>,
    /// Where the reading side goes back at the end of the body.
    back: Option<oneshot::Sender<Box<Reader<R>>>>,
    /// Tells the connection to send `100 Continue`, on the first read
    /// that has to wait for the client.
    want_continue: Option<oneshot::Sender<()>>,
}

impl<R> std::fmt::Debug for H1Body<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H1Body")
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl<R: Source> H1Body<R> {
    /// A body that came whole with its head; `None` for no body at all.
    pub fn full(bytes: Option<Bytes>) -> Self {
        H1Body {
            state: State::Full(bytes),
            reader: None,
            back: None,
            want_continue: None,
        }
    }

    /// A body still to be read from `reader`: `length` bytes, or chunked
    /// when `None`.
    pub fn streaming(
        reader: Box<Reader<R>>,
        length: Option<u64>,
        back: oneshot::Sender<Box<Reader<R>>>,
        want_continue: Option<oneshot::Sender<()>>,
    ) -> Self {
        H1Body {
            state: match length {
                Some(n) => State::Length(n),
                None => State::Chunked(Box::default()),
            },
            reader: Some(reader),
            back: Some(back),
            want_continue,
        }
    }

    fn finish(&mut self) {
        self.state = State::Done;
        if let (Some(reader), Some(back)) = (self.reader.take(), self.back.take()) {
            let _ = back.send(reader);
        }
    }

    /// Fails the body for good; the reading side is dropped, so the
    /// connection closes.
    fn fail(&mut self, e: ClientBodyError) -> Poll<Option<Result<Frame<Bytes>, ClientBodyError>>> {
        self.state = State::Failed;
        self.reader = None;
        self.back = None;
        Poll::Ready(Some(Err(e)))
    }
}

impl<R: Source> Body for H1Body<R> {
    type Data = Bytes;
    type Error = ClientBodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ClientBodyError>>> {
        let this = self.get_mut();
        loop {
            let Some(reader) = this.reader.as_mut() else {
                return match &mut this.state {
                    State::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
                    State::Failed => Poll::Ready(Some(Err(ClientBodyError::Failed))),
                    _ => Poll::Ready(None),
                };
            };
            match &mut this.state {
                State::Full(_) | State::Done | State::Failed => {
                    this.finish();
                    return Poll::Ready(None);
                }
                State::Length(left) => {
                    if !reader.buf.is_empty() {
                        let n = (reader.buf.len() as u64).min(*left) as usize;
                        let data = reader.buf.split_to(n).freeze();
                        *left -= n as u64;
                        if *left == 0 {
                            this.finish();
                        }
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                }
                State::Chunked(decoder) => match decoder.decode(&mut reader.buf) {
                    Ok(Chunk::Data(data)) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                    Ok(Chunk::End(trailers)) => {
                        this.finish();
                        return Poll::Ready(if trailers.is_empty() {
                            None
                        } else {
                            Some(Ok(Frame::trailers(trailers)))
                        });
                    }
                    Ok(Chunk::NeedMore) => {}
                    Err(e) => return this.fail(e.into()),
                },
            }
            if let Some(tx) = this.want_continue.take() {
                let _ = tx.send(());
            }
            let Some(reader) = this.reader.as_mut() else {
                return Poll::Ready(None);
            };
            match ready!(reader.poll_fill(cx)) {
                Ok(0) => return this.fail(ClientBodyError::Closed),
                Ok(_) => {}
                Err(e) => return this.fail(e.into()),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.state {
            State::Full(b) => b.is_none(),
            State::Length(n) => *n == 0,
            State::Chunked(_) | State::Failed => false,
            State::Done => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.state {
            State::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            State::Full(None) | State::Done => SizeHint::with_exact(0),
            State::Length(n) => SizeHint::with_exact(*n),
            State::Chunked(_) | State::Failed => SizeHint::default(),
        }
    }
}
