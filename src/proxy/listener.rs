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
//! same HTTP/1.1 server as plain ones. With HTTP/3 on, each worker also
//! serves a QUIC endpoint on the HTTPS port ([`quic`]). On shutdown the
//! listeners close, idle connections are closed and busy ones finish their
//! request within the grace period.
//!
//! Ports that Gateway listeners ask for are opened and closed while the
//! proxy runs ([`Ports::set`]): each is bound once per worker, as the
//! proxy's own ports are, and handed to every worker's event loop, which
//! serves it next to the others. Closing one stops only its accept loops
//! and drains only its connections; nothing else is touched.

use std::collections::BTreeMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{info, warn};

use super::forward::{Shared, Worker};
use super::quic::{self, Quic};
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
    ports: Arc<Ports>,
}

/// A listener handed to a worker after it started.
struct Serve {
    listener: std::net::TcpListener,
    tls: Option<Arc<tls::Handshaker>>,
    stop: watch::Receiver<bool>,
}

/// One port opened for Gateway listeners.
struct Opened {
    tls: bool,
    stop: watch::Sender<bool>,
}

/// The ports opened for Gateway listeners, and how to reach the workers.
pub struct Ports {
    ip: IpAddr,
    /// The proxy's own ports, which are never opened again.
    own: Vec<u16>,
    shared: Arc<Shared>,
    workers: Vec<mpsc::UnboundedSender<Serve>>,
    opened: Mutex<BTreeMap<u16, Opened>>,
}

impl Ports {
    /// Makes the open ports those of `wanted` (port, and whether it is
    /// HTTPS): opens the missing ones, closes the others (their
    /// connections drain within the grace period), reopens a port whose
    /// protocol changed. Returns why each port that could not be opened
    /// could not; ports already open and the proxy's own are left alone.
    pub fn set(&self, wanted: &[(u16, bool)]) -> BTreeMap<u16, String> {
        let mut opened = self.opened.lock().unwrap_or_else(PoisonError::into_inner);
        let mut failed = BTreeMap::new();
        let keep = |port: u16, tls: bool| wanted.contains(&(port, tls));
        opened.retain(|port, o| {
            let kept = keep(*port, o.tls);
            if !kept {
                o.stop.send_replace(true);
                info!(port, "gateway listener port closed");
            }
            kept
        });
        for &(port, tls) in wanted {
            if self.own.contains(&port) || opened.contains_key(&port) {
                continue;
            }
            match self.open(port, tls) {
                Ok(o) => {
                    info!(
                        port,
                        tls,
                        workers = self.workers.len(),
                        "gateway listener port opened"
                    );
                    opened.insert(port, o);
                }
                Err(e) => {
                    warn!(port, error = %e, "cannot open a port for gateway listeners");
                    failed.insert(port, e);
                }
            }
        }
        failed
    }

    fn open(&self, port: u16, tls: bool) -> Result<Opened, String> {
        let handshaker = if tls {
            Some(Arc::new(
                tls::Handshaker::for_port(
                    self.shared.table.clone(),
                    &self.shared.settings.tls,
                    port,
                )
                .map_err(|e| e.to_string())?,
            ))
        } else {
            None
        };
        let addr = SocketAddr::new(self.ip, port);
        let (_, listeners) = bind_all(addr, self.workers.len())
            .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
        let (stop, stop_rx) = watch::channel(false);
        for (listener, worker) in listeners.into_iter().zip(&self.workers) {
            let serve = Serve {
                listener,
                tls: handshaker.clone(),
                stop: stop_rx.clone(),
            };
            if worker.send(serve).is_err() {
                return Err("the proxy is shutting down".into());
            }
        }
        Ok(Opened { tls, stop })
    }

    /// The ports open now.
    pub fn open_ports(&self) -> Vec<u16> {
        let opened = self.opened.lock().unwrap_or_else(PoisonError::into_inner);
        opened.keys().copied().collect()
    }

    fn close_all(&self) {
        let mut opened = self.opened.lock().unwrap_or_else(PoisonError::into_inner);
        for o in opened.values() {
            o.stop.send_replace(true);
        }
        opened.clear();
    }
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
                tls::Handshaker::new(shared.table.clone(), &shared.settings.tls)
                    .map_err(io::Error::other)?,
            )),
            None => None,
        };
        let h3 = match (&acceptor, https_addr, &shared.settings.http3) {
            (Some(handshaker), Some(addr), Some(h3)) => {
                let q = Quic::new(handshaker, &shared.settings, h3).map_err(io::Error::other)?;
                let sockets = quic::bind_all(addr, workers)?;
                Some((Arc::new(q), sockets, addr))
            }
            (None, _, Some(_)) => {
                warn!("HTTP/3 is on but the HTTPS listener is off: no QUIC endpoint");
                None
            }
            _ => None,
        };
        // Responses over TCP name the port clients reach, as redirects do.
        let alt_svc = h3.as_ref().and_then(|_| {
            let port = shared.settings.https_redirect_port;
            http::HeaderValue::try_from(format!("h3=\":{port}\"; ma=86400")).ok()
        });
        let (quic, mut udp_sockets): (_, Vec<Option<std::net::UdpSocket>>) = match h3 {
            Some((q, sockets, addr)) => {
                info!(%addr, workers, "http/3 (QUIC) listening");
                (Some(q), sockets.into_iter().map(Some).collect())
            }
            None => (None, (0..workers).map(|_| None).collect()),
        };
        let (shutdown, _) = watch::channel(false);
        let mut done = Vec::with_capacity(workers);
        let mut senders = Vec::with_capacity(workers);
        for (i, listener) in listeners.into_iter().enumerate() {
            let (serve_tx, mut commands) = mpsc::unbounded_channel::<Serve>();
            senders.push(serve_tx);
            let tls_listener = tls_listeners.get_mut(i).and_then(Option::take);
            let udp = udp_sockets
                .get_mut(i)
                .and_then(Option::take)
                .zip(quic.clone());
            let alt_svc = alt_svc.clone();
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
                        crate::memory::spawn_collector();
                        // Every listener of this worker, each an accept
                        // loop; more arrive on `commands`.
                        let mut serving: FuturesUnordered<Pin<Box<dyn Future<Output = ()>>>> =
                            FuturesUnordered::new();
                        let mut global = stop.clone();
                        let plain = TcpListener::from_std(listener);
                        let secure = tls_listener.map(TcpListener::from_std).transpose();
                        match (plain, secure) {
                            (Ok(plain), Ok(secure)) => {
                                serving.push(Box::pin(serve(plain, None, None, worker.clone(), stop.clone())));
                                if let Some((socket, quic)) = udp {
                                    serving.push(Box::pin(quic::serve(socket, quic, worker.clone(), stop.clone())));
                                }
                                if let Some((l, a)) = secure.zip(acceptor) {
                                    serving.push(Box::pin(serve(l, Some(a), alt_svc, worker.clone(), stop)));
                                }
                            }
                            (Err(e), _) | (_, Err(e)) => {
                                warn!(error = %e, "worker could not register its listener");
                                return;
                            }
                        }
                        let mut open = true;
                        loop {
                            tokio::select! {
                                command = commands.recv(), if open => match command {
                                    Some(s) => match TcpListener::from_std(s.listener) {
                                        Ok(l) => serving.push(Box::pin(serve(l, s.tls, None, worker.clone(), s.stop))),
                                        Err(e) => warn!(error = %e, "worker could not register a gateway listener"),
                                    },
                                    None => open = false,
                                },
                                // Shutting down: no more listeners; the
                                // loop ends once every one has drained.
                                _ = global.changed(), if open => open = false,
                                Some(()) = serving.next(), if !serving.is_empty() => {}
                                else => break,
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
        let mut own = vec![addr.port()];
        own.extend(https_addr.map(|a| a.port()));
        let ports = Arc::new(Ports {
            ip: addr.ip(),
            own,
            shared,
            workers: senders,
            opened: Mutex::default(),
        });
        Ok(ProxyServer {
            addr,
            https_addr,
            shutdown,
            done,
            ports,
        })
    }

    /// The ports opened for Gateway listeners, to open and close them.
    pub fn ports(&self) -> Arc<Ports> {
        self.ports.clone()
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
        self.ports.close_all();
        // Without senders the workers stop waiting for new listeners.
        drop(self.ports);
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

/// Serves a TCP listener; `alt_svc` is the `Alt-Svc` its responses
/// carry (the HTTPS listener's, when HTTP/3 is on).
async fn serve(
    listener: TcpListener,
    tls: Option<Arc<tls::Handshaker>>,
    alt_svc: Option<http::HeaderValue>,
    worker: Worker,
    mut stop: watch::Receiver<bool>,
) {
    let settings = worker.shared.settings.clone();
    let server = Arc::new(Server::new(worker.clone(), settings.clone()));
    // Each connection holds a receiver of `conns` until it ends.
    let (conns, conns_rx) = watch::channel(false);
    let local = listener.local_addr().ok();
    let grace = settings.shutdown_grace;

    let tls = tls.map(|h| Arc::new(h.for_worker()));
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
            Some(handshakes) => {
                // The handshake runs in the connection's own task, so a
                // slow client never holds up the accept loop; its bounds
                // and timeout are the handshaker's.
                let handshakes = handshakes.clone();
                let mut client = ClientInfo::new(peer, local, true);
                client.alt_svc = alt_svc.clone();
                let server = server.clone();
                let stop = conns_rx.clone();
                tokio::spawn(async move {
                    let Some(accepted) = handshakes.accept(stream, peer).await else {
                        return;
                    };
                    client.set_client_certificate(accepted.client_auth, accepted.subject);
                    // The connection is served by a task of its own, and
                    // this one ends: the handshake's state (most of this
                    // task's size) is not held for the connection's life.
                    let h2 = accepted.stream.get_ref().1.alpn_protocol() == Some(b"h2");
                    if h2 {
                        tokio::spawn(async move {
                            h2::serve(accepted.stream, &server, client, stop).await;
                        });
                    } else {
                        tokio::spawn(h1::serve(accepted.stream, server, client, stop));
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
