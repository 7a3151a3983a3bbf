//! Byte streams as both HTTP roles use them: the reading side of a
//! connection filled into a buffer, the writing side apart, and the two
//! put back together for protocol switches.
//!
//! The HTTP/1.1 server and client read into a `BytesMut` and parse in
//! place; the reading side moves into a request body while the writing
//! side answers, so every stream they serve is split in two halves. A TCP
//! stream splits without a lock; a TLS stream shares one session between
//! its halves and splits with tokio's lock.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

/// Bytes read per system call, at most.
pub const READ_CHUNK: usize = 16 * 1024;

/// Bytes read on the stack by a connection that has no buffer yet (most
/// request heads fit).
const FIRST_READ: usize = 4096;

/// The reading side of a connection.
pub trait Source: Send + Unpin + 'static {
    /// Reads more bytes into `buf`; `Ok(0)` means the peer closed.
    fn poll_fill(&mut self, buf: &mut BytesMut, cx: &mut Context<'_>) -> Poll<io::Result<usize>>;
}

/// A stream that splits into a reading and a writing side, and is put back
/// together from them.
pub trait Duplex: AsyncRead + AsyncWrite + Send + Unpin + Sized + 'static {
    type Read: Source;
    type Write: AsyncWrite + Send + Unpin + 'static;

    fn split(self) -> (Self::Read, Self::Write);

    /// The stream again; `None` when the halves are not of one stream.
    fn unsplit(read: Self::Read, write: Self::Write) -> Option<Self>;
}

impl Source for OwnedReadHalf {
    /// Waits for readiness first, so no read is attempted that would
    /// block. A read that returns less than it asked for has drained the
    /// socket, so the event loop's cached readiness is cleared then,
    /// without the extra read that would otherwise be needed to learn it.
    /// An idle connection then usually shows no readiness, which tells
    /// that it is alive without a system call.
    fn poll_fill(&mut self, buf: &mut BytesMut, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.as_ref().poll_read_ready(cx))?;
            if buf.capacity() == 0 {
                // A new socket is reported readable before anything came
                // (the event loop guesses), so without a buffer the read
                // goes to the stack first: a connection gets its buffer
                // when bytes arrive, not when it is accepted.
                let mut first = [0u8; FIRST_READ];
                match self.try_read(&mut first) {
                    Ok(n) => {
                        if n > 0 {
                            reserve(buf);
                            buf.extend_from_slice(&first[..n]);
                            if n < FIRST_READ {
                                clear_read_readiness(self);
                            }
                        }
                        return Poll::Ready(Ok(n));
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    Err(e) => return Poll::Ready(Err(e)),
                }
            }
            reserve(buf);
            let spare = buf.capacity() - buf.len();
            match self.try_read_buf(buf) {
                Ok(n) => {
                    if n > 0 && n < spare {
                        clear_read_readiness(self);
                    }
                    return Poll::Ready(Ok(n));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl<T: AsyncRead + Send + 'static> Source for tokio::io::ReadHalf<T> {
    fn poll_fill(&mut self, buf: &mut BytesMut, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if buf.capacity() == 0 {
            // As above: no buffer until bytes come.
            let mut first = [0u8; FIRST_READ];
            let mut read = ReadBuf::new(&mut first);
            ready!(Pin::new(&mut *self).poll_read(cx, &mut read))?;
            let n = read.filled().len();
            if n > 0 {
                reserve(buf);
                buf.extend_from_slice(read.filled());
            }
            return Poll::Ready(Ok(n));
        }
        reserve(buf);
        tokio_util::io::poll_read_buf(Pin::new(self), cx, buf)
    }
}

fn reserve(buf: &mut BytesMut) {
    if buf.capacity() - buf.len() < READ_CHUNK / 4 {
        buf.reserve(READ_CHUNK);
    }
}

impl Duplex for TcpStream {
    type Read = OwnedReadHalf;
    type Write = OwnedWriteHalf;

    fn split(self) -> (OwnedReadHalf, OwnedWriteHalf) {
        self.into_split()
    }

    fn unsplit(read: OwnedReadHalf, write: OwnedWriteHalf) -> Option<Self> {
        read.reunite(write).ok()
    }
}

/// The TCP stream under a TLS session of the HTTPS listener.
///
/// rustls hands its records to the socket as a list of buffers
/// (`write_vectored`), and tokio's stream turns every such call into a
/// `writev`. An HTTP/1.1 response is usually one record, and the kernel
/// sends one buffer for less with `send` than with a `writev` of one (no
/// vector to import, no file-position path): a single buffer goes out
/// with `send`, several still with one `writev`.
#[derive(Debug)]
pub struct TlsSocket(pub TcpStream);

impl AsyncRead for TlsSocket {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsSocket {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let mut filled = bufs.iter().filter(|b| !b.is_empty());
        match (filled.next(), filled.next()) {
            (None, _) => Poll::Ready(Ok(0)),
            (Some(one), None) => Pin::new(&mut self.0).poll_write(cx, one),
            _ => Pin::new(&mut self.0).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl Duplex for tokio_rustls::server::TlsStream<TlsSocket> {
    type Read = tokio::io::ReadHalf<Self>;
    type Write = tokio::io::WriteHalf<Self>;

    fn split(self) -> (Self::Read, Self::Write) {
        tokio::io::split(self)
    }

    fn unsplit(read: Self::Read, write: Self::Write) -> Option<Self> {
        read.is_pair_of(&write).then(|| read.unsplit(write))
    }
}

/// Forgets readiness the event loop recorded for bytes already read.
pub fn clear_read_readiness(read: &OwnedReadHalf) {
    let _ = read.as_ref().try_io(Interest::READABLE, || {
        Err::<(), _>(io::ErrorKind::WouldBlock.into())
    });
}

/// Anything a switched connection can run over.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// A connection after `101 Switching Protocols`, on either side.
pub type Upgraded = Box<dyn Io>;

/// A stream whose first bytes were already read: they are read again
/// before the rest.
pub struct Prefixed<T> {
    prefix: BytesMut,
    inner: T,
}

impl<T> Prefixed<T> {
    /// The bytes are copied out of `prefix`: it is a connection's read
    /// buffer, mostly spare capacity, and the stream (an HTTP/2 or
    /// upgraded connection) may live for hours.
    pub fn new(prefix: BytesMut, inner: T) -> Self {
        Prefixed {
            prefix: BytesMut::from(&prefix[..]),
            inner,
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    async fn pair() -> (OwnedReadHalf, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap(); // ok: test code
        let client = TcpStream::connect(listener.local_addr().unwrap()) // ok: test code
            .await
            .unwrap(); // ok: test code
        let (server, _) = listener.accept().await.unwrap(); // ok: test code
        (server.into_split().0, client)
    }

    fn poll_once(src: &mut OwnedReadHalf, buf: &mut BytesMut) -> Poll<io::Result<usize>> {
        let waker = std::task::Waker::noop();
        src.poll_fill(buf, &mut Context::from_waker(waker))
    }

    #[tokio::test]
    async fn a_connection_gets_its_buffer_with_its_first_bytes() {
        let (mut src, mut client) = pair().await;
        let mut buf = BytesMut::new();
        // A new socket looks readable; nothing came, so no buffer.
        assert!(poll_once(&mut src, &mut buf).is_pending());
        assert_eq!(buf.capacity(), 0);

        // Bytes larger than the first read arrive whole over two fills.
        let sent = vec![b'x'; FIRST_READ + 100];
        client.write_all(&sent).await.unwrap(); // ok: test code
        let mut got = 0;
        while got < sent.len() {
            got += std::future::poll_fn(|cx| src.poll_fill(&mut buf, cx))
                .await
                .unwrap(); // ok: test code
        }
        assert_eq!(&buf[..], &sent[..]);
        assert!(buf.capacity() >= READ_CHUNK);
    }

    #[tokio::test]
    async fn a_tls_socket_sends_one_buffer_or_several_in_order() {
        let (mut src, client) = pair().await;
        let mut socket = TlsSocket(client);
        let mut write = async |bufs: &[&[u8]]| {
            let slices: Vec<IoSlice<'_>> = bufs.iter().map(|b| IoSlice::new(b)).collect();
            let n =
                std::future::poll_fn(|cx| Pin::new(&mut socket).poll_write_vectored(cx, &slices));
            n.await.unwrap() // ok: test code
        };
        // Empty buffers around one: the one is sent (with `send`).
        assert_eq!(write(&[b"", b"one,", b""]).await, 4);
        // Several: all of them, in order (with `writev`).
        assert_eq!(write(&[b"two,", b"", b"three"]).await, 9);
        // Nothing to send.
        assert_eq!(write(&[b"", b""]).await, 0);
        assert!(socket.is_write_vectored());
        let mut buf = BytesMut::new();
        while buf.len() < 13 {
            let n = std::future::poll_fn(|cx| src.poll_fill(&mut buf, cx)).await;
            assert!(n.unwrap() > 0); // ok: test code
        }
        assert_eq!(&buf[..], b"one,two,three");
    }
}
