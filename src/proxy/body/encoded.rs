//! A response body compressed as it streams (`gzip`, `brotli`).

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame};

use super::ResponseBody;
use crate::http::client::UpstreamError;
use crate::plugins::transform::compress::{self, Encoder};

/// A response body compressed frame by frame. Compressed bytes are passed
/// on whenever the upstream pauses (flushed, so that the client can decode
/// them at once: server-sent events are not held back) or once enough
/// have gathered; the whole body is never buffered. Trailers follow the
/// end of the compressed stream.
#[derive(Debug)]
pub struct EncodedBody {
    inner: ResponseBody,
    encoder: Encoder,
    state: EncodeState,
}

#[derive(Debug)]
enum EncodeState {
    Streaming,
    /// The compressed stream is complete; the upstream's trailers remain.
    Trailers(HeaderMap),
    Done,
}

impl EncodedBody {
    pub(super) fn new(inner: ResponseBody, encoder: Encoder) -> Self {
        EncodedBody {
            inner,
            encoder,
            state: EncodeState::Streaming,
        }
    }

    pub(super) fn is_done(&self) -> bool {
        matches!(self.state, EncodeState::Done)
    }

    pub(super) fn poll_encoded(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, UpstreamError>>> {
        let data = |b: Bytes| Poll::Ready(Some(Ok(Frame::data(b))));
        loop {
            match std::mem::replace(&mut self.state, EncodeState::Done) {
                EncodeState::Done => return Poll::Ready(None),
                EncodeState::Trailers(t) => return Poll::Ready(Some(Ok(Frame::trailers(t)))),
                EncodeState::Streaming => self.state = EncodeState::Streaming,
            }
            match Pin::new(&mut self.inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(bytes) => {
                        self.encoder.write(&bytes)?;
                        if compress::worth_sending(&self.encoder) {
                            return data(self.encoder.take());
                        }
                    }
                    Err(frame) => {
                        if let Ok(trailers) = frame.into_trailers() {
                            let out = self.encoder.finish()?;
                            self.state = EncodeState::Trailers(trailers);
                            if !out.is_empty() {
                                return data(out);
                            }
                        }
                    }
                },
                Poll::Ready(Some(Err(e))) => {
                    self.state = EncodeState::Done;
                    return Poll::Ready(Some(Err(e)));
                }
                Poll::Ready(None) => {
                    self.state = EncodeState::Done;
                    let out = self.encoder.finish()?;
                    return if out.is_empty() {
                        Poll::Ready(None)
                    } else {
                        data(out)
                    };
                }
                // The upstream has nothing more for now: what it sent so
                // far goes out decodable rather than waiting for more.
                Poll::Pending => {
                    let out = self.encoder.flush()?;
                    return if out.is_empty() {
                        Poll::Pending
                    } else {
                        data(out)
                    };
                }
            }
        }
    }
}
