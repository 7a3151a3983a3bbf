//! The I/O of a server handshake: reading the ClientHello with a bound on
//! its size, sending alerts, and handing a connection whose ClientHello
//! has been processed to tokio-rustls for the rest.
//!
//! tokio-rustls' `LazyConfigAcceptor` reads a ClientHello as large as
//! rustls allows (64 KiB) and processes it in the same call that chooses
//! the configuration, on the event loop. Reading it here keeps the bound
//! small and lets [`super::offload`] do the processing elsewhere.

use std::io::{self, Read};

use rustls::ServerConnection;
use rustls::server::{Accepted, AcceptedAlert, Acceptor};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::http::io::TlsSocket;

/// The largest ClientHello accepted. Browsers send 0.5–2 KiB (with a
/// post-quantum key share); this leaves room for long lists of session
/// tickets, server names and extensions while bounding what a pending
/// handshake holds.
pub const MAX_CLIENT_HELLO: usize = 16 * 1024;

/// Reads from a non-blocking socket, at most `left` bytes in all.
struct Bounded<'a> {
    stream: &'a TcpStream,
    left: usize,
}

impl Read for Bounded<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("ClientHello larger than {MAX_CLIENT_HELLO} bytes"),
            ));
        }
        let n = buf.len().min(self.left);
        let got = self.stream.try_read(&mut buf[..n])?;
        self.left -= got;
        Ok(got)
    }
}

/// Reads the client's first flight until its ClientHello is complete.
/// A malformed one gets its alert before the error returns.
pub async fn client_hello(stream: &mut TcpStream) -> io::Result<Accepted> {
    let mut acceptor = Acceptor::default();
    let mut left = MAX_CLIENT_HELLO;
    loop {
        stream.readable().await?;
        let mut reader = Bounded {
            stream: &*stream,
            left,
        };
        let read = acceptor.read_tls(&mut reader);
        left = reader.left;
        match read {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
        match acceptor.accept() {
            Ok(Some(accepted)) => return Ok(accepted),
            Ok(None) => {}
            Err((error, alert)) => {
                send_alert(stream, alert).await;
                return Err(io::Error::new(io::ErrorKind::InvalidData, error));
            }
        }
    }
}

/// Sends what rustls had to say before giving up (best effort: the
/// connection closes either way).
pub async fn send_alert(stream: &mut TcpStream, mut alert: AcceptedAlert) {
    let mut bytes = Vec::new();
    if alert.write_all(&mut bytes).is_ok() && !bytes.is_empty() {
        let _ = stream.write_all(&bytes).await;
    }
}

/// Completes the handshake of `conn`, whose ClientHello was processed.
/// `acceptor` only lends tokio-rustls its stream type: the connection it
/// would have started is replaced before any I/O.
pub async fn finish(
    acceptor: &TlsAcceptor,
    stream: TcpStream,
    conn: ServerConnection,
) -> io::Result<TlsStream<TlsSocket>> {
    acceptor.accept_with(TlsSocket(stream), |c| *c = conn).await
}
