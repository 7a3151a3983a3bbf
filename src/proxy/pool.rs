//! Keep-alive connections to upstream endpoints.
//!
//! Each proxy worker owns one pool, so checkouts never contend across
//! threads. Idle connections are kept per endpoint address, newest first
//! (the newest is the least likely to have been closed by the server), and
//! are dropped when idle for longer than the idle timeout; connections to
//! endpoints that left every table therefore close on their own.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tracing::debug;

use super::body::{ResponseBody, UpstreamBody};
use super::error::ProxyError;

type Sender = http1::SendRequest<Incoming>;

struct Idle {
    tx: Sender,
    since: Instant,
}

/// Pool settings.
#[derive(Clone, Copy, Debug)]
pub struct PoolConfig {
    /// Idle connections kept per endpoint.
    pub max_idle_per_endpoint: usize,
    /// Idle connections older than this are closed.
    pub idle_timeout: Duration,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            max_idle_per_endpoint: 64,
            idle_timeout: Duration::from_secs(30),
        }
    }
}

/// Per-request deadlines.
#[derive(Clone, Copy, Debug)]
pub struct Deadlines {
    pub connect: Duration,
    pub request: Duration,
}

/// A worker's upstream connections.
pub struct Pool {
    idle: Mutex<HashMap<SocketAddr, Vec<Idle>>>,
    config: PoolConfig,
}

/// Hands a connection back to its pool when a response body is complete.
pub(crate) struct Checkin {
    pool: Arc<Pool>,
    addr: SocketAddr,
    tx: Sender,
}

impl std::fmt::Debug for Checkin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkin").field("addr", &self.addr).finish()
    }
}

impl Checkin {
    pub(crate) fn release(self) {
        self.pool.put(self.addr, self.tx, true);
    }
}

impl Pool {
    pub fn new(config: PoolConfig) -> Arc<Self> {
        Arc::new(Pool {
            idle: Mutex::new(HashMap::new()),
            config,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SocketAddr, Vec<Idle>>> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn take(&self, addr: SocketAddr) -> Option<Sender> {
        let mut idle = self.lock();
        let list = idle.get_mut(&addr)?;
        while let Some(c) = list.pop() {
            if c.tx.is_ready() && c.since.elapsed() < self.config.idle_timeout {
                return Some(c.tx);
            }
        }
        None
    }

    /// Returns a connection. A connection that is still finishing its last
    /// response becomes ready a moment later; one task waits for that
    /// instead of discarding a good connection.
    fn put(self: &Arc<Self>, addr: SocketAddr, mut tx: Sender, may_wait: bool) {
        if tx.is_closed() {
            return;
        }
        if !tx.is_ready() {
            if may_wait {
                let pool = self.clone();
                tokio::spawn(async move {
                    if let Ok(Ok(())) =
                        tokio::time::timeout(Duration::from_secs(1), tx.ready()).await
                    {
                        pool.put(addr, tx, false);
                    }
                });
            }
            return;
        }
        let mut idle = self.lock();
        let list = idle.entry(addr).or_default();
        if list.len() >= self.config.max_idle_per_endpoint {
            list.remove(0);
        }
        list.push(Idle {
            tx,
            since: Instant::now(),
        });
    }

    /// Drops closed and expired idle connections; run periodically.
    pub fn sweep(&self) {
        let timeout = self.config.idle_timeout;
        self.lock().retain(|_, list| {
            list.retain(|c| !c.tx.is_closed() && c.since.elapsed() < timeout);
            !list.is_empty()
        });
    }

    /// Sends `req` to `addr` on a pooled connection or a new one, and
    /// returns the response once its head has arrived.
    pub async fn send(
        self: &Arc<Self>,
        addr: SocketAddr,
        mut req: Request<Incoming>,
        deadlines: Deadlines,
    ) -> Result<Response<ResponseBody>, ProxyError> {
        let timeout_err = || ProxyError::UpstreamTimeout {
            addr,
            timeout: deadlines.request,
        };
        // A pooled connection may turn out to be closed; hyper hands the
        // request back when nothing was written, and the next one is tried.
        while let Some(mut tx) = self.take(addr) {
            match tokio::time::timeout(deadlines.request, tx.try_send_request(req)).await {
                Err(_) => return Err(timeout_err()),
                Ok(Ok(resp)) => return Ok(self.wrap(addr, tx, resp)),
                Ok(Err(mut e)) => match e.take_message() {
                    Some(r) => req = r,
                    None => {
                        return Err(ProxyError::Upstream {
                            addr,
                            source: e.into_error(),
                        });
                    }
                },
            }
        }
        let mut tx = connect(addr, deadlines.connect, false).await?;
        match tokio::time::timeout(deadlines.request, tx.send_request(req)).await {
            Err(_) => Err(timeout_err()),
            Ok(Ok(resp)) => Ok(self.wrap(addr, tx, resp)),
            Ok(Err(source)) => Err(ProxyError::Upstream { addr, source }),
        }
    }

    fn wrap(
        self: &Arc<Self>,
        addr: SocketAddr,
        tx: Sender,
        resp: Response<Incoming>,
    ) -> Response<ResponseBody> {
        let checkin = Checkin {
            pool: self.clone(),
            addr,
            tx,
        };
        resp.map(|b| ResponseBody::Upstream(UpstreamBody::new(b, Some(checkin))))
    }
}

/// Opens a new HTTP/1.1 connection; `upgrades` keeps it usable for a
/// protocol switch (such connections are never pooled).
pub(crate) async fn connect(
    addr: SocketAddr,
    timeout: Duration,
    upgrades: bool,
) -> Result<Sender, ProxyError> {
    let stream = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Err(_) => return Err(ProxyError::ConnectTimeout { addr, timeout }),
        Ok(Err(source)) => return Err(ProxyError::Connect { addr, source }),
        Ok(Ok(s)) => s,
    };
    let _ = stream.set_nodelay(true);
    let (tx, conn) = http1::Builder::new()
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|source| ProxyError::Handshake { addr, source })?;
    if upgrades {
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                debug!(%addr, error = %e, "upstream connection ended");
            }
        });
    } else {
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                debug!(%addr, error = %e, "upstream connection ended");
            }
        });
    }
    Ok(tx)
}
