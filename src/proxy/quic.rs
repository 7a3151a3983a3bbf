//! The QUIC endpoint of HTTP/3 (`--http3`), on the HTTPS listener's port
//! over UDP.
//!
//! quinn runs QUIC; the handshake configuration is the HTTPS listener's
//! (certificates by SNI from the live table, ticket keys; see
//! `tls::quic`). Like the TCP listeners, each worker has its own UDP
//! socket on the port (`SO_REUSEPORT`: the kernel keeps a client's
//! 4-tuple on one socket) and its own endpoint on its event loop, so
//! requests never hop threads. The endpoints share one configuration: the
//! same Retry token key and stateless reset key, so whichever socket a
//! packet reaches can check a token or reset a connection it does not
//! know. Connection migration is off, since a client whose address
//! changes may land on another worker's socket.
//!
//! Bounds:
//! - **address validation**: every new connection gets a Retry first
//!   (RFC 9000 §8.1.2), so a flood from spoofed addresses costs a packet
//!   each and no handshake state; the Retry's round trip is the price for
//!   honest clients;
//! - connections that have not completed their handshake: quinn's bound,
//!   the handshake must complete within the TLS handshake timeout;
//! - connections served at once per worker (`--http3-max-connections`):
//!   new ones past it are refused;
//! - request streams per connection (`--http3-max-streams`): QUIC stream
//!   credit, so a client cannot open more;
//! - idle time: closing connections without requests, with GOAWAY, is
//!   HTTP/3's, after the keep-alive timeout ([`h3`]); QUIC's idle timeout,
//!   the keep-alive timeout plus the HTTP/2 PING timeout, only catches
//!   peers that are gone; the endpoint sends PINGs at the HTTP/2
//!   keep-alive interval, so a slow upstream does not make a live
//!   connection look dead.
//!
//! On shutdown an endpoint stops accepting, its connections send GOAWAY
//! and drain within the shutdown grace period, then it closes.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use quinn::{EndpointConfig, IdleTimeout, ServerConfig, TransportConfig, VarInt};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::sync::{Semaphore, watch};
use tracing::{debug, warn};

use super::forward::Worker;
use super::server::{ClientInfo, Server, h3};
use super::settings::{Http3Settings, ProxySettings};
use super::tls::{Handshaker, TlsSetupError};

/// The application close code of a clean close (RFC 9114 §8.1).
const H3_NO_ERROR: u32 = 0x100;

/// Unidirectional streams a client may open: HTTP/3's control stream and
/// QPACK's two (RFC 9114 §6.2), with room for one it may add.
const UNI_STREAMS: u32 = 4;

/// What every worker's endpoint shares.
pub struct Quic {
    endpoint: EndpointConfig,
    server: ServerConfig,
}

impl Quic {
    /// The endpoint configuration, from the HTTPS listener's handshakes.
    pub fn new(
        handshaker: &Handshaker,
        settings: &ProxySettings,
        h3: &Http3Settings,
    ) -> Result<Quic, TlsSetupError> {
        let crypto = Arc::new(handshaker.quic_config()?);
        let mut transport = TransportConfig::default();
        transport
            .max_concurrent_bidi_streams(VarInt::from_u32(h3.max_streams))
            .max_concurrent_uni_streams(VarInt::from_u32(UNI_STREAMS))
            .max_idle_timeout(IdleTimeout::try_from(idle_timeout(settings)).ok())
            .keep_alive_interval(Some(settings.http2.keepalive_interval));
        let mut server = ServerConfig::with_crypto(crypto);
        server
            .transport_config(Arc::new(transport))
            .migration(false)
            .max_incoming(h3.max_connections.min(1 << 16));
        Ok(Quic {
            endpoint: EndpointConfig::default(),
            server,
        })
    }
}

/// QUIC's idle timeout: a connection that has sent nothing for this long
/// is gone. It is longer than the keep-alive timeout by the HTTP/2 PING
/// timeout, so that a quiet connection is closed by HTTP/3 first, with
/// GOAWAY, and a dead one is noticed within about the same time as over
/// HTTP/2.
fn idle_timeout(settings: &ProxySettings) -> Duration {
    settings
        .keepalive_timeout
        .max(settings.header_read_timeout)
        .saturating_add(settings.http2.keepalive_timeout)
}

/// Binds UDP `addr` once per worker (the port is the HTTPS listener's,
/// already chosen).
pub fn bind_all(addr: SocketAddr, workers: usize) -> io::Result<Vec<std::net::UdpSocket>> {
    (0..workers).map(|_| bind(addr, workers > 1)).collect()
}

fn bind(addr: SocketAddr, reuse_port: bool) -> io::Result<std::net::UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// Serves one worker's QUIC endpoint until the server stops, then drains
/// its connections within the shutdown grace period.
pub async fn serve(
    socket: std::net::UdpSocket,
    quic: Arc<Quic>,
    worker: Worker,
    mut stop: watch::Receiver<bool>,
) {
    let settings = worker.shared.settings.clone();
    let Some(h3_settings) = settings.http3 else {
        return;
    };
    let endpoint = match quinn::Endpoint::new(
        quic.endpoint.clone(),
        Some(quic.server.clone()),
        socket,
        Arc::new(quinn::TokioRuntime),
    ) {
        Ok(e) => e,
        Err(e) => {
            warn!(error = %e, "worker could not start its QUIC endpoint");
            return;
        }
    };
    let local = endpoint.local_addr().ok();
    let server = Arc::new(Server::new(worker, settings.clone()));
    // Each connection holds a receiver of `conns` until it ends.
    let (conns, conns_rx) = watch::channel(false);
    let slots = Arc::new(Semaphore::new(h3_settings.max_connections));
    loop {
        let incoming = tokio::select! {
            biased;
            _ = stop.changed() => break,
            incoming = endpoint.accept() => match incoming {
                Some(i) => i,
                None => break,
            },
        };
        if !incoming.remote_address_validated() {
            // Stateless: the client comes back with a token that proves
            // it receives at its address.
            if let Err(e) = incoming.retry() {
                e.into_incoming().ignore();
            }
            counted("retry");
            continue;
        }
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            debug!(peer = %incoming.remote_address(), "QUIC connections at their limit; refused");
            incoming.refuse();
            counted("refused");
            continue;
        };
        let connecting = match incoming.accept() {
            Ok(c) => {
                counted("accepted");
                c
            }
            Err(e) => {
                debug!(error = %e, "QUIC connection not accepted");
                continue;
            }
        };
        let server = server.clone();
        let stop = conns_rx.clone();
        let handshake_timeout = settings.tls.handshake_timeout;
        tokio::spawn(async move {
            let conn = match tokio::time::timeout(handshake_timeout, connecting).await {
                Ok(Ok(c)) => c,
                Ok(Err(e)) => {
                    debug!(error = %e, "QUIC handshake failed");
                    return;
                }
                Err(_) => {
                    debug!("QUIC handshake timed out");
                    return;
                }
            };
            let peer = conn.remote_address();
            let client = ClientInfo::new(peer, local.unwrap_or(peer), true);
            h3::serve(conn, server, client, stop).await;
            drop(slot);
        });
    }
    // New connections are refused from now on; open ones drain.
    endpoint.set_server_config(None);
    conns.send_replace(true);
    drop(conns_rx);
    if tokio::time::timeout(settings.shutdown_grace, conns.closed())
        .await
        .is_err()
    {
        warn!("shutdown grace period over; closing remaining QUIC connections");
    }
    endpoint.close(VarInt::from_u32(H3_NO_ERROR), b"");
    let _ = tokio::time::timeout(Duration::from_secs(1), endpoint.wait_idle()).await;
}

/// Counts a new QUIC connection by what became of it.
fn counted(result: &'static str) {
    metrics::counter!(
        crate::metrics::QUIC_INCOMING,
        crate::metrics::labels(&[("result", result)])
    )
    .increment(1);
}
