//! What a request handler gets from a client connection, whichever server
//! read it: the proxy's own HTTP/1.1 server (plain listeners) or hyper's
//! (TLS listeners and HTTP/2).

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::oneshot;

use super::h1::H1Body;
use super::upstream::CodecError;

/// A client's request body.
#[derive(Debug)]
pub enum ClientBody {
    /// Read by the proxy's own HTTP/1.1 server.
    H1(H1Body),
    /// Read by hyper.
    Hyper(hyper::body::Incoming),
}

/// Why a client's request body could not be read to its end.
#[derive(Debug, thiserror::Error)]
pub enum ClientBodyError {
    #[error("reading the request body failed: {0}")]
    Io(#[from] io::Error),
    #[error("the client closed the connection in the middle of the request body")]
    Closed,
    #[error("the request body failed earlier")]
    Failed,
    #[error("invalid request body framing: {0}")]
    Framing(#[from] CodecError),
    #[error(transparent)]
    Hyper(#[from] hyper::Error),
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = ClientBodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ClientBodyError>>> {
        match self.get_mut() {
            ClientBody::H1(b) => Pin::new(b).poll_frame(cx),
            ClientBody::Hyper(b) => Pin::new(b).poll_frame(cx).map_err(ClientBodyError::Hyper),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ClientBody::H1(b) => b.is_end_stream(),
            ClientBody::Hyper(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ClientBody::H1(b) => b.size_hint(),
            ClientBody::Hyper(b) => b.size_hint(),
        }
    }
}

/// Anything a switched connection can run over.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// A client connection after `101 Switching Protocols`.
pub type Upgraded = Box<dyn Io>;

/// Where the own server hands over the connection of a request that asked
/// to switch protocols, once the `101` is written. A request extension,
/// hence shareable and cloneable; it is taken only once.
#[derive(Clone)]
pub struct UpgradeSlot(pub Arc<Mutex<Option<oneshot::Receiver<Upgraded>>>>);

/// The client's side of a protocol switch, resolved once the `101` has
/// been sent.
pub enum ClientUpgrade {
    Own(oneshot::Receiver<Upgraded>),
    Hyper(OnUpgrade),
}

impl ClientUpgrade {
    /// Takes the upgrade handle out of the request.
    pub fn on<B>(req: &mut http::Request<B>) -> ClientUpgrade {
        let own = req
            .extensions_mut()
            .remove::<UpgradeSlot>()
            .and_then(|slot| slot.0.lock().ok()?.take());
        match own {
            Some(rx) => ClientUpgrade::Own(rx),
            None => ClientUpgrade::Hyper(hyper::upgrade::on(req)),
        }
    }

    /// The switched connection.
    pub async fn wait(self) -> io::Result<Upgraded> {
        match self {
            ClientUpgrade::Own(rx) => rx
                .await
                .map_err(|_| io::Error::other("the client connection closed before the switch")),
            ClientUpgrade::Hyper(on) => match on.await {
                Ok(upgraded) => Ok(Box::new(TokioIo::new(upgraded))),
                Err(e) => Err(io::Error::other(e)),
            },
        }
    }
}

/// A stream whose first bytes were already read: they are read again
/// before the rest.
pub struct Prefixed<T> {
    prefix: BytesMut,
    inner: T,
}

impl<T> Prefixed<T> {
    pub fn new(prefix: BytesMut, inner: T) -> Self {
        Prefixed { prefix, inner }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Prefixed<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.prefix.is_empty() {
            let n = this.prefix.len().min(buf.remaining());
            buf.put_slice(&this.prefix[..n]);
            this.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Prefixed<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
