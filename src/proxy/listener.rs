//! Listeners and worker threads.
//!
//! Each worker is an OS thread running a single-threaded Tokio runtime with
//! its own listening socket (`SO_REUSEPORT`, so the kernel spreads new
//! connections) and its own upstream pool. Requests never hop threads and
//! pools never contend: the nginx worker model, with one worker per core.
//!
//! Every connection goes to the own HTTP/1.1 server, which hands one that
//! opens with the HTTP/2 preface (h2c) to the HTTP/2 server; a TLS
//! connection goes to the HTTP/2 server when ALPN chose `h2`, else to the
//! same HTTP/1.1 server as plain ones. On shutdown the listeners close,
//! idle connections are closed and busy ones finish their request within
//! the grace period.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tracing::{debug, info, warn};

use super::forward::{Shared, Worker};
use super::server::{ClientInfo, Server, h1, h2};
use super::tls;
use crate::http::client::{Clients, Pool};
use crate::http::dns::Resolver;

/// A running proxy listener and its workers.
pub struct ProxyServer {
    addr: SocketAddr,
    https_addr: Option<SocketAddr>,
    shutdown: watch::Sender<bool>,
    done: Vec<oneshot::Receiver<()>>,
}

fn bind(addr: SocketAddr, reuse_port: bool) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    Ok(socket.into())
}

impl ProxyServer {
    /// Binds `addr` (and `https`, when given) once per worker and starts
    /// the workers. Names the workers resolve (forwardAuth, JWKS) go to
    /// `resolver`, the gateway's, whatever other gateway the process runs.
    pub fn start(
        addr: SocketAddr,
        https: Option<SocketAddr>,
        workers: usize,
        shared: Arc<Shared>,
        resolver: Option<Resolver>,
    ) -> io::Result<ProxyServer> {
        let workers = workers.max(1);
        let (addr, listeners) = bind_all(addr, workers)?;
        let (https_addr, mut tls_listeners): (_, Vec<Option<std::net::TcpListener>>) = match https {
            Some(a) => {
                let (a, l) = bind_all(a, workers)?;
                (Some(a), l.into_iter().map(Some).collect())
            }
            None => (None, (0..workers).map(|_| None).collect()),
        };
        let acceptor = match https_addr {
            Some(_) => Some(Arc::new(
                tls::Handshaker::new(shared.table.clone()).map_err(io::Error::other)?,
            )),
            None => None,
        };
        let (shutdown, _) = watch::channel(false);
        let mut done = Vec::with_capacity(workers);
        for (i, listener) in listeners.into_iter().enumerate() {
            let tls_listener = tls_listeners.get_mut(i).and_then(Option::take);
            let acceptor = acceptor.clone();
            let (tx, rx) = oneshot::channel();
            done.push(rx);
            let worker = Worker {
                shared: shared.clone(),
                pool: Pool::new(shared.settings.pool),
                clients: Arc::new(Clients::new(shared.settings.pool)),
            };
            let stop = shutdown.subscribe();
            let resolver = resolver.clone();
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            std::thread::Builder::new()
                .name(format!("sluicegate-worker-{i}"))
                .spawn(move || {
                    crate::http::dns::set_thread_default(resolver);
                    runtime.block_on(async move {
                        let plain = TcpListener::from_std(listener);
                        let secure = tls_listener.map(TcpListener::from_std).transpose();
                        match (plain, secure) {
                            (Ok(plain), Ok(secure)) => {
                                let tls = secure.zip(acceptor);
                                tokio::join!(
                                    serve(plain, None, worker.clone(), stop.clone()),
                                    async {
                                        if let Some((l, a)) = tls {
                                            serve(l, Some(a), worker, stop).await;
                                        }
                                    }
                                );
                            }
                            (Err(e), _) | (_, Err(e)) => {
                                warn!(error = %e, "worker could not register its listener")
                            }
                        }
                    });
                    // Dropping the runtime here cancels whatever outlived the
                    // shutdown grace period.
                    drop(runtime);
                    let _ = tx.send(());
                })?;
        }
        info!(%addr, workers, "proxy listening");
        if let Some(addr) = https_addr {
            info!(%addr, workers, "https listening");
        }
        Ok(ProxyServer {
            addr,
            https_addr,
            shutdown,
            done,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn https_addr(&self) -> Option<SocketAddr> {
        self.https_addr
    }

    /// Stops accepting, lets in-flight requests finish within the grace
    /// period set in the settings, and waits for the workers to exit.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for rx in self.done {
            let _ = rx.await;
        }
    }
}

/// Binds `addr` once per worker; the first bind resolves port 0.
fn bind_all(
    addr: SocketAddr,
    workers: usize,
) -> io::Result<(SocketAddr, Vec<std::net::TcpListener>)> {
    let first = bind(addr, workers > 1)?;
    let addr = first.local_addr()?;
    let mut listeners = vec![first];
    for _ in 1..workers {
        listeners.push(bind(addr, true)?);
    }
    Ok((addr, listeners))
}

async fn serve(
    listener: TcpListener,
    tls: Option<Arc<tls::Handshaker>>,
    worker: Worker,
    mut stop: watch::Receiver<bool>,
) {
    let settings = worker.shared.settings.clone();
    let server = Arc::new(Server::new(worker.clone(), settings.clone()));
    // Each connection holds a receiver of `conns` until it ends.
    let (conns, conns_rx) = watch::channel(false);
    let local = listener.local_addr().ok();
    let grace = settings.shutdown_grace;

    let sweeper = {
        let pool = worker.pool.clone();
        let clients = worker.clients.clone();
        // Often enough that connections to endpoints that left are closed
        // soon after, letting their pods finish terminating.
        let every = (settings.pool.idle_timeout / 2)
            .clamp(Duration::from_millis(100), Duration::from_secs(1));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                pool.sweep();
                clients.sweep();
            }
        })
    };

    loop {
        let (stream, peer) = tokio::select! {
            biased;
            _ = stop.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off briefly
                    // instead of spinning.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let local = local.unwrap_or(peer);
        match &tls {
            None => {
                let client = ClientInfo::new(peer, local, false);
                tokio::spawn(h1::serve(stream, server.clone(), client, conns_rx.clone()));
            }
            Some(handshaker) => {
                // The handshake runs in the connection's own task, so a
                // slow client never holds up the accept loop; it gets the
                // header read timeout to finish it.
                let handshaker = handshaker.clone();
                let limit = settings.header_read_timeout;
                let mut client = ClientInfo::new(peer, local, true);
                let server = server.clone();
                let stop = conns_rx.clone();
                tokio::spawn(async move {
                    let accepted =
                        match tokio::time::timeout(limit, handshaker.accept(stream)).await {
                            Ok(Ok(a)) => a,
                            Ok(Err(e)) => {
                                debug!(%peer, error = %e, "TLS handshake failed");
                                handshake_counted("failed", false);
                                return;
                            }
                            Err(_) => {
                                debug!(%peer, "TLS handshake timed out");
                                handshake_counted("timeout", false);
                                return;
                            }
                        };
                    let resumed = accepted.stream.get_ref().1.handshake_kind()
                        == Some(rustls::HandshakeKind::Resumed);
                    handshake_counted("ok", resumed);
                    client.set_client_certificate(accepted.client_auth, accepted.subject);
                    let h2 = accepted.stream.get_ref().1.alpn_protocol() == Some(b"h2");
                    if h2 {
                        h2::serve(accepted.stream, &server, client, stop).await;
                    } else {
                        h1::serve(accepted.stream, server, client, stop).await;
                    }
                });
            }
        }
    }
    drop(listener);
    sweeper.abort();
    conns.send_replace(true);
    drop(conns_rx);
    if tokio::time::timeout(grace, conns.closed()).await.is_err() {
        warn!(
            ?grace,
            "shutdown grace period over; closing remaining connections"
        );
    }
}

/// Counts a TLS handshake by how it ended.
fn handshake_counted(result: &'static str, resumed: bool) {
    let resumed = if resumed { "true" } else { "false" };
    metrics::counter!(
        crate::metrics::TLS_HANDSHAKES,
        crate::metrics::labels(&[("result", result), ("resumed", resumed)])
    )
    .increment(1);
}
