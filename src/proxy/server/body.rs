//! A client's request body, whichever server read it.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use crate::http::io::TlsSocket;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::net::tcp::OwnedReadHalf;
use tokio_rustls::server::TlsStream;

pub use super::body_error::ClientBodyError;
use super::h1_body::H1Body;
use super::h3_body::H3Body;
use crate::http::wire::retain_trailers_in;

/// The reading side of a TLS connection.
pub type TlsRead = tokio::io::ReadHalf<TlsStream<TlsSocket>>;

/// A client's request body.
#[derive(Debug)]
pub enum ClientBody {
    /// Read by the own HTTP/1.1 server from a plain connection.
    H1(H1Body<OwnedReadHalf>),
    /// Read by the own HTTP/1.1 server from a TLS connection.
    Tls(H1Body<TlsRead>),
    /// Read by hyper (HTTP/2).
    Hyper(hyper::body::Incoming),
    /// Read from an HTTP/3 request stream.
    H3(Box<H3Body>),
    /// No body: a request the gateway makes itself (the proxy cache's
    /// background refresh).
    Empty,
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
            ClientBody::Tls(b) => Pin::new(b).poll_frame(cx),
            ClientBody::Hyper(b) => {
                // The own server's chunked decoder drops what trailers may
                // not carry; HTTP/2 trailers get the same rule.
                let frame = ready!(Pin::new(b).poll_frame(cx));
                Poll::Ready(frame.map(|f| Ok(retain_trailers_in(f?))))
            }
            ClientBody::H3(b) => Pin::new(b.as_mut()).poll_frame(cx),
            ClientBody::Empty => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ClientBody::H1(b) => b.is_end_stream(),
            ClientBody::Tls(b) => b.is_end_stream(),
            ClientBody::Hyper(b) => b.is_end_stream(),
            ClientBody::H3(b) => b.is_end_stream(),
            ClientBody::Empty => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ClientBody::H1(b) => b.size_hint(),
            ClientBody::Tls(b) => b.size_hint(),
            ClientBody::Hyper(b) => b.size_hint(),
            ClientBody::H3(b) => b.size_hint(),
            ClientBody::Empty => SizeHint::with_exact(0),
        }
    }
}

/// The request body variant for each stream an HTTP/1.1 connection can
/// run over.
pub trait IntoClientBody: crate::http::io::Source + Sized {
    fn client_body(body: H1Body<Self>) -> ClientBody;
}

impl IntoClientBody for OwnedReadHalf {
    fn client_body(body: H1Body<Self>) -> ClientBody {
        ClientBody::H1(body)
    }
}

impl IntoClientBody for TlsRead {
    fn client_body(body: H1Body<Self>) -> ClientBody {
        ClientBody::Tls(body)
    }
}
