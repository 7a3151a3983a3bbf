//! Calls whose answer is read as it arrives, such as an LLM provider's
//! server-sent events: the response head is awaited within its own time
//! limit, then the body is handed back as an [`UpstreamBody`] wrapped in
//! the call's overall deadline ([`TimedBody`]), so that the caller passes
//! each piece on as soon as it comes and a stream cannot outlive the time
//! the call was given. Dropping the body closes its connection, which is
//! how a caller whose own client left cancels the call.

use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use http_body::{Body, Frame, SizeHint};

use super::{FetchError, HeadLimits, Request, Target, exchange};
use crate::http::client::{UpstreamBody, UpstreamError};

/// How a streaming call is made.
#[derive(Clone, Copy, Debug)]
pub struct StreamOptions {
    /// To open a connection.
    pub connect: Duration,
    /// From the start of the call to the response head.
    pub first_byte: Duration,
    /// For the whole call, the body included: past it the body fails with
    /// [`UpstreamError::Expired`].
    pub total: Duration,
    /// Whether a kept-alive connection may be used, and this one kept.
    pub reuse: bool,
}

/// A response whose body is still arriving.
#[derive(Debug)]
pub struct Streaming {
    pub status: StatusCode,
    /// Without the fields describing the connection.
    pub headers: HeaderMap,
    pub body: TimedBody,
    /// The address that answered.
    pub addr: SocketAddr,
}

/// Makes one call to `target` and returns once the response head is in.
pub async fn stream(
    target: &Target,
    request: Request,
    options: &StreamOptions,
) -> Result<Streaming, FetchError> {
    let started = Instant::now();
    let head = options.first_byte.min(options.total);
    let limits = HeadLimits {
        started,
        connect: options.connect,
        head,
        reuse: options.reuse,
    };
    let deadline = tokio::time::Instant::from_std(started) + head;
    let (addr, response) = tokio::time::timeout_at(deadline, exchange(target, &request, limits))
        .await
        .unwrap_or(Err(FetchError::Timeout(head)))?;
    let (parts, body) = response.into_parts();
    Ok(Streaming {
        status: parts.status,
        headers: parts.headers,
        body: TimedBody::new(body, started + options.total, options.total),
        addr,
    })
}

/// A response body that fails once its call's deadline has passed.
#[derive(Debug)]
pub struct TimedBody {
    inner: UpstreamBody,
    deadline: Pin<Box<tokio::time::Sleep>>,
    limit: Duration,
    expired: bool,
}

impl TimedBody {
    fn new(inner: UpstreamBody, deadline: Instant, limit: Duration) -> TimedBody {
        TimedBody {
            inner,
            deadline: Box::pin(tokio::time::sleep_until(deadline.into())),
            limit,
            expired: false,
        }
    }
}

impl Body for TimedBody {
    type Data = Bytes;
    type Error = UpstreamError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, UpstreamError>>> {
        if self.expired {
            return Poll::Ready(None);
        }
        // Checked first, so that a body that never pauses still ends.
        if !self.deadline.is_elapsed()
            && let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx)
        {
            return Poll::Ready(frame);
        }
        match self.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => {
                self.expired = true;
                Poll::Ready(Some(Err(UpstreamError::Expired(self.limit))))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.expired || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use http_body_util::BodyExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// A server answering every request with a chunked head and the
    /// chunks `parts`, `gap` apart, then reporting whether its connection
    /// was closed by the client before it had written everything.
    async fn slow_server(
        parts: &'static [&'static str],
        gap: Duration,
    ) -> (SocketAddr, tokio::sync::oneshot::Receiver<bool>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf).await;
            let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n";
            s.write_all(head.as_bytes()).await.unwrap();
            let mut cut = false;
            for p in parts {
                tokio::time::sleep(gap).await;
                let chunk = format!("{:x}\r\n{p}\r\n", p.len());
                if s.write_all(chunk.as_bytes()).await.is_err() {
                    cut = true;
                    break;
                }
            }
            if !cut {
                let _ = s.write_all(b"0\r\n\r\n").await;
                // Closed by the client: the read sees the end at once.
                cut = matches!(
                    tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf)).await,
                    Ok(Ok(0) | Err(_))
                );
            }
            let _ = tx.send(cut);
        });
        (addr, rx)
    }

    fn options(total: Duration) -> StreamOptions {
        StreamOptions {
            connect: Duration::from_secs(2),
            first_byte: Duration::from_secs(2),
            total,
            reuse: false,
        }
    }

    #[tokio::test]
    async fn pieces_arrive_as_they_are_sent() {
        let (addr, _) = slow_server(&["one", "two", "three"], Duration::from_millis(30)).await;
        let target = Target::http(addr);
        let mut s = stream(
            &target,
            Request::get(&target),
            &options(Duration::from_secs(5)),
        )
        .await
        .unwrap();
        assert_eq!(s.status, StatusCode::OK);
        assert_eq!(s.addr, addr);
        let mut got = Vec::new();
        while let Some(f) = s.body.frame().await {
            got.push(f.unwrap().into_data().unwrap());
        }
        assert_eq!(got, ["one", "two", "three"]);
    }

    #[tokio::test]
    async fn the_total_deadline_ends_a_stream() {
        let (addr, cut) = slow_server(&["a", "b", "c", "d"], Duration::from_millis(200)).await;
        let target = Target::http(addr);
        let mut s = stream(
            &target,
            Request::get(&target),
            &options(Duration::from_millis(300)),
        )
        .await
        .unwrap();
        let first = s.body.frame().await.unwrap().unwrap();
        assert_eq!(first.into_data().unwrap(), "a");
        let e = s.body.frame().await.unwrap().unwrap_err();
        assert!(matches!(e, UpstreamError::Expired(_)), "{e}");
        assert!(s.body.frame().await.is_none());
        drop(s);
        assert!(cut.await.unwrap(), "the server saw the call cancelled");
    }

    #[tokio::test]
    async fn a_head_that_never_comes_times_out() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let _hold = tokio::spawn(async move {
            let (s, _) = listener.accept().await.unwrap();
            tokio::time::sleep(Duration::from_secs(10)).await;
            drop(s);
        });
        let target = Target::http(addr);
        let mut o = options(Duration::from_secs(5));
        o.first_byte = Duration::from_millis(100);
        let e = stream(&target, Request::get(&target), &o)
            .await
            .unwrap_err();
        assert!(matches!(e, FetchError::Timeout(_)), "{e}");
    }
}
