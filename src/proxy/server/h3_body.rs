//! An HTTP/3 request body: the DATA frames of a request stream, then its
//! trailers.
//!
//! HTTP/3 frames bodies itself, so the only framing rule left is the one
//! RFC 9114 §4.1.2 gives: a `content-length` the client declares must be
//! what its DATA frames add up to. The upstream request is framed from
//! the declared length (a body's exact size hint), so a body that runs
//! past it, or ends short of it, fails instead of reaching the upstream
//! with a framing of its own.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use h3::server::RequestStream;
use http_body::{Body, Frame, SizeHint};

use super::body_error::ClientBodyError;
use crate::http::wire::{WireError, retain_trailers_in};

/// The receiving half of an HTTP/3 request stream.
pub type RecvStream = RequestStream<h3_quinn::RecvStream, Bytes>;

/// A request body read from an HTTP/3 stream.
pub struct H3Body {
    stream: RecvStream,
    /// The length the client declared, if it did.
    declared: Option<u64>,
    read: u64,
    state: State,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    Data,
    Trailers,
    Done,
}

impl fmt::Debug for H3Body {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("H3Body")
            .field("declared", &self.declared)
            .field("read", &self.read)
            .finish_non_exhaustive()
    }
}

impl H3Body {
    /// The body of a request that declared `declared` bytes, or none.
    /// Even a declared empty body is read to its end: trailers may follow,
    /// and a DATA frame would be a framing error.
    pub fn new(stream: RecvStream, declared: Option<u64>) -> H3Body {
        H3Body {
            stream,
            declared,
            read: 0,
            state: State::Data,
        }
    }

    fn mismatch() -> ClientBodyError {
        ClientBodyError::Framing(WireError::Malformed(
            "request body length differs from its content-length",
        ))
    }
}

impl Body for H3Body {
    type Data = Bytes;
    type Error = ClientBodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ClientBodyError>>> {
        let this = self.get_mut();
        loop {
            match this.state {
                State::Data => match ready!(this.stream.poll_recv_data(cx)) {
                    Ok(Some(mut buf)) => {
                        let chunk = buf.copy_to_bytes(buf.remaining());
                        if chunk.is_empty() {
                            continue;
                        }
                        this.read += chunk.len() as u64;
                        if this.declared.is_some_and(|d| this.read > d) {
                            this.state = State::Done;
                            return Poll::Ready(Some(Err(Self::mismatch())));
                        }
                        return Poll::Ready(Some(Ok(Frame::data(chunk))));
                    }
                    Ok(None) => {
                        if this.declared.is_some_and(|d| this.read != d) {
                            this.state = State::Done;
                            return Poll::Ready(Some(Err(Self::mismatch())));
                        }
                        this.state = State::Trailers;
                    }
                    Err(e) => {
                        this.state = State::Done;
                        return Poll::Ready(Some(Err(ClientBodyError::H3(e.to_string()))));
                    }
                },
                State::Trailers => {
                    let trailers = ready!(this.stream.poll_recv_trailers(cx));
                    this.state = State::Done;
                    return Poll::Ready(match trailers {
                        Ok(Some(map)) => Some(Ok(retain_trailers_in(Frame::trailers(map)))),
                        Ok(None) => None,
                        Err(e) => Some(Err(ClientBodyError::H3(e.to_string()))),
                    });
                }
                State::Done => return Poll::Ready(None),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.state == State::Done
    }

    fn size_hint(&self) -> SizeHint {
        match self.declared {
            Some(d) => SizeHint::with_exact(d.saturating_sub(self.read)),
            None => SizeHint::default(),
        }
    }
}
