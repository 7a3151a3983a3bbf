//! Upstream connections and the per-worker pool that keeps them.
//!
//! A connection is used by one request at a time, inside that request's
//! own task: no connection task, no channels, no wake-ups between tasks.
//! Idle connections are checked for a close by the server from the
//! readiness the event loop already recorded, usually without a system
//! call.

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Waker};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use foldhash::HashMap;
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use super::Error;
use crate::http::timer::LazyDeadline;

/// Initial read buffer; grows for large heads.
const READ_BUF: usize = 16 * 1024;

/// Where a connection leads. Once the peer is gone (an endpoint that left
/// its upstream), its connections are closed instead of kept idle, so that
/// a terminating pod is not held open by the pool.
pub trait Peer: Send + Sync + std::fmt::Debug {
    fn addr(&self) -> SocketAddr;
    fn is_gone(&self) -> bool {
        false
    }
}

impl Peer for SocketAddr {
    fn addr(&self) -> SocketAddr {
        *self
    }
}

/// An HTTP/1.1 connection to one endpoint.
#[derive(Debug)]
pub struct Conn {
    pub addr: SocketAddr,
    pub read: OwnedReadHalf,
    /// Lent to the task writing a request body, then given back.
    pub write: Option<OwnedWriteHalf>,
    /// Bytes read but not consumed yet.
    pub buf: BytesMut,
    /// Whether this connection already carried a request.
    pub reused: bool,
    /// When its latest request started; idle time is counted from there.
    pub last_used: Instant,
    /// The endpoint it leads to: once that leaves its upstream, the
    /// connection is closed instead of kept idle.
    peer: Arc<dyn Peer>,
    /// The deadline of the exchange in progress, kept with the connection
    /// so that its timer is registered once, not once per request.
    pub deadline: Option<LazyDeadline>,
}

impl Conn {
    /// Opens a connection within `timeout`.
    pub async fn connect(peer: Arc<dyn Peer>, timeout: Duration) -> Result<Conn, Error> {
        let addr = peer.addr();
        let stream = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
            Err(_) => return Err(Error::ConnectTimeout { addr, timeout }),
            Ok(Err(source)) => return Err(Error::Connect { addr, source }),
            Ok(Ok(s)) => s,
        };
        let _ = stream.set_nodelay(true);
        let (read, write) = stream.into_split();
        Ok(Conn {
            addr,
            read,
            write: Some(write),
            buf: BytesMut::with_capacity(READ_BUF),
            reused: false,
            last_used: Instant::now(),
            peer,
            deadline: None,
        })
    }

    /// Whether this idle connection can carry a request. A connection with
    /// no recorded readiness is alive as far as the event loop knows, which
    /// costs nothing to ask. Recorded readiness may be the server's close
    /// or only a late notice of bytes already read; one non-blocking read
    /// tells which.
    fn usable(&mut self) -> bool {
        if !self.buf.is_empty() || self.write.is_none() || self.peer.is_gone() {
            return false;
        }
        let mut cx = Context::from_waker(Waker::noop());
        if self.read.as_ref().poll_read_ready(&mut cx).is_pending() {
            return true;
        }
        let mut probe = [0u8; 1];
        match self.read.try_read(&mut probe) {
            Err(e) => e.kind() == io::ErrorKind::WouldBlock,
            // A close, or bytes nobody asked for: either way unusable.
            Ok(_) => false,
        }
    }

    /// Puts the halves back together, for protocol upgrades.
    pub fn into_stream(self) -> Option<(TcpStream, BytesMut)> {
        let write = self.write?;
        self.read.reunite(write).ok().map(|s| (s, self.buf))
    }
}

struct Idle {
    conn: Conn,
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

/// One worker's idle upstream connections, newest last (the newest is
/// the least likely to have been closed by the server).
pub struct Pool {
    idle: Mutex<HashMap<SocketAddr, Vec<Idle>>>,
    config: PoolConfig,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("config", &self.config)
            .finish()
    }
}

impl Pool {
    pub fn new(config: PoolConfig) -> Arc<Self> {
        Arc::new(Pool {
            idle: Mutex::new(HashMap::default()),
            config,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SocketAddr, Vec<Idle>>> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// An idle connection to `addr` that still looks usable.
    pub fn take(&self, addr: SocketAddr, now: Instant) -> Option<Conn> {
        let mut idle = self.lock();
        let list = idle.get_mut(&addr)?;
        while let Some(mut i) = list.pop() {
            if now.duration_since(i.since) < self.config.idle_timeout && i.conn.usable() {
                return Some(i.conn);
            }
        }
        None
    }

    /// Keeps a connection that finished its exchange cleanly.
    pub fn put(&self, mut conn: Conn) {
        if !conn.buf.is_empty() || conn.write.is_none() || conn.peer.is_gone() {
            return;
        }
        conn.reused = true;
        let mut idle = self.lock();
        let list = idle.entry(conn.addr).or_default();
        if list.len() >= self.config.max_idle_per_endpoint {
            list.remove(0);
        }
        let since = conn.last_used;
        list.push(Idle { conn, since });
    }

    /// Drops closed and expired idle connections; run periodically.
    pub fn sweep(&self) {
        let timeout = self.config.idle_timeout;
        let now = Instant::now();
        self.lock().retain(|_, list| {
            list.retain_mut(|i| now.duration_since(i.since) < timeout && i.conn.usable());
            !list.is_empty()
        });
    }
}
