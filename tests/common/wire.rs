//! Byte-level HTTP/1.1 on both listeners: a raw client that writes exact
//! bytes over plain TCP or TLS and reads responses off the wire, and a raw
//! backend that records exactly what the proxy sent it.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sluicegate::gateway::GatewayConfig;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use super::TestGateway;

/// The listener a case runs against: every HTTP/1.1 rule must hold on
/// both.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Listener {
    Plain,
    Tls,
}

impl Listener {
    pub const BOTH: [Listener; 2] = [Listener::Plain, Listener::Tls];

    /// A test configuration with an HTTPS listener besides the plain one.
    pub fn config() -> GatewayConfig {
        let mut cfg = super::test_config(1);
        cfg.https_addr = Some("127.0.0.1:0".parse().unwrap());
        cfg
    }

    pub fn addr(self, gw: &TestGateway) -> SocketAddr {
        match self {
            Listener::Plain => gw.http(),
            Listener::Tls => gw.https(),
        }
    }

    /// Where clients of this listener connect.
    pub fn to(self, gw: &TestGateway) -> super::To {
        match self {
            Listener::Plain => super::To::Plain(gw.http()),
            Listener::Tls => super::To::Tls(gw.https()),
        }
    }
}

/// Runs each named `async fn(Listener)` of the calling test file on the
/// plain and on the TLS listener, as tests `plain::NAME` and `tls::NAME`.
#[macro_export]
macro_rules! on_both_listeners {
    ($($name:ident),* $(,)?) => {
        mod plain {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name($crate::common::wire::Listener::Plain).await
                }
            )*
        }
        mod tls {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name($crate::common::wire::Listener::Tls).await
                }
            )*
        }
    };
}

pub trait Stream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Stream for T {}

/// One response as read off the wire.
#[derive(Debug)]
pub struct Wire {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Trailer lines of a chunked body, as sent.
    pub trailers: Vec<(String, String)>,
}

impl Wire {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A raw client connection with its unread bytes.
pub struct Raw {
    stream: Box<dyn Stream>,
    pub buf: Vec<u8>,
    /// How long a read may wait before the test fails.
    pub patience: Duration,
}

impl Raw {
    /// A plain connection to `addr`.
    pub async fn open(addr: SocketAddr) -> Raw {
        Raw::over(Box::new(TcpStream::connect(addr).await.unwrap()))
    }

    /// A connection to the gateway's `listener`; TLS offers only
    /// `http/1.1`.
    pub async fn to(gw: &TestGateway, listener: Listener) -> Raw {
        let addr = listener.addr(gw);
        match listener {
            Listener::Plain => Raw::open(addr).await,
            Listener::Tls => {
                let s = super::tls::connect(addr, Some("h1.test"), &[b"http/1.1"]).await;
                Raw::over(Box::new(s))
            }
        }
    }

    pub fn over(stream: Box<dyn Stream>) -> Raw {
        Raw {
            stream,
            buf: Vec::new(),
            patience: Duration::from_secs(5),
        }
    }

    pub async fn send(&mut self, bytes: &str) {
        self.send_bytes(bytes.as_bytes()).await;
    }

    pub async fn send_bytes(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
        self.stream.flush().await.unwrap();
    }

    /// Writes what it can; false once the proxy closed the connection.
    pub async fn try_send(&mut self, bytes: &[u8]) -> bool {
        self.stream.write_all(bytes).await.is_ok() && self.stream.flush().await.is_ok()
    }

    /// Reads more; false at the end of the stream (or a reset).
    pub async fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 16384];
        let n = tokio::time::timeout(self.patience, self.stream.read(&mut chunk))
            .await
            .expect("the proxy answered in time")
            .unwrap_or(0);
        self.buf.extend_from_slice(&chunk[..n]);
        n > 0
    }

    /// Reads one response; `head` says whether it answers a HEAD request.
    pub async fn response(&mut self, head: bool) -> Wire {
        let (status, headers, len) = loop {
            let mut slots = [httparse::EMPTY_HEADER; 64];
            let mut resp = httparse::Response::new(&mut slots);
            if let httparse::Status::Complete(n) = resp.parse(&self.buf).unwrap() {
                let headers: Vec<(String, String)> = resp
                    .headers
                    .iter()
                    .map(|h| {
                        (
                            h.name.to_ascii_lowercase(),
                            String::from_utf8_lossy(h.value).into_owned(),
                        )
                    })
                    .collect();
                break (resp.code.unwrap(), headers, n);
            }
            assert!(
                self.fill().await,
                "connection closed before a response head"
            );
        };
        self.buf.drain(..len);
        let mut wire = Wire {
            status,
            headers,
            body: Vec::new(),
            trailers: Vec::new(),
        };
        if head || status == 100 || status == 204 || status == 304 {
            return wire;
        }
        if let Some(n) = wire.header("content-length") {
            let n: usize = n.parse().unwrap();
            while self.buf.len() < n {
                assert!(self.fill().await, "connection closed inside a body");
            }
            wire.body = self.buf.drain(..n).collect();
        } else if wire.header("transfer-encoding") == Some("chunked") {
            loop {
                let line = self.line().await;
                let size = usize::from_str_radix(&line, 16).unwrap();
                if size == 0 {
                    loop {
                        let t = self.line().await;
                        if t.is_empty() {
                            break;
                        }
                        let (n, v) = t.split_once(':').unwrap();
                        wire.trailers
                            .push((n.trim().to_ascii_lowercase(), v.trim().to_owned()));
                    }
                    break;
                }
                while self.buf.len() < size + 2 {
                    assert!(self.fill().await, "connection closed inside a chunk");
                }
                wire.body.extend_from_slice(&self.buf[..size]);
                self.buf.drain(..size + 2);
            }
        } else {
            while self.fill().await {}
            wire.body = std::mem::take(&mut self.buf);
        }
        wire
    }

    async fn line(&mut self) -> String {
        let i = loop {
            if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                break i;
            }
            assert!(self.fill().await, "connection closed inside a chunk");
        };
        let line = String::from_utf8_lossy(&self.buf[..i]).into_owned();
        self.buf.drain(..i + 2);
        line
    }

    /// Whether the proxy closed the connection (after what was read).
    pub async fn closed(&mut self) -> bool {
        !self.fill().await && self.buf.is_empty()
    }
}

/// One request as a [`Capture`] backend received it.
#[derive(Clone, Debug)]
pub struct Received {
    /// Which of the backend's connections it came on, from 0.
    pub conn: usize,
    /// The head and the body exactly as they arrived, framing included.
    pub bytes: Vec<u8>,
}

impl Received {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }

    /// The request line.
    pub fn line(&self) -> String {
        self.text().lines().next().unwrap_or("").to_owned()
    }

    /// The values of header `name`, in order.
    pub fn headers(&self, name: &str) -> Vec<String> {
        let text = self.text();
        let head = text.split("\r\n\r\n").next().unwrap_or("");
        head.lines()
            .skip(1)
            .filter_map(|l| l.split_once(':'))
            .filter(|(n, _)| n.trim().eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_owned())
            .collect()
    }
}

/// What a capture backend saw.
#[derive(Debug, Default)]
pub struct Seen {
    pub requests: Vec<Received>,
    /// Bytes a connection carried after its last whole request, when it
    /// ended: a request cut short.
    pub partial: Vec<Vec<u8>>,
    /// Connections accepted, and those that ended (by either side).
    pub accepted: usize,
    pub closed: usize,
}

/// A backend that records every request's exact bytes and answers each
/// with `reply(request)`, raw bytes, keeping the connection open.
pub struct Capture {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Seen>>,
    task: JoinHandle<()>,
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A complete response with `body`.
pub fn ok(body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

impl Capture {
    /// A backend answering `200` with the request line as body.
    pub async fn start() -> Capture {
        Capture::with(|r| ok(&r.line())).await
    }

    pub async fn with(reply: impl Fn(&Received) -> Vec<u8> + Send + Sync + 'static) -> Capture {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Seen::default()));
        let reply = Arc::new(reply);
        let task = {
            let seen = seen.clone();
            tokio::spawn(async move {
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        continue;
                    };
                    let conn = {
                        let mut s = seen.lock().unwrap();
                        s.accepted += 1;
                        s.accepted - 1
                    };
                    let (seen, reply) = (seen.clone(), reply.clone());
                    tokio::spawn(async move {
                        serve(stream, conn, &seen, &*reply).await;
                        seen.lock().unwrap().closed += 1;
                    });
                }
            })
        };
        Capture { addr, seen, task }
    }

    pub fn requests(&self) -> Vec<Received> {
        self.seen.lock().unwrap().requests.clone()
    }

    pub fn count(&self) -> usize {
        self.seen.lock().unwrap().requests.len()
    }

    pub fn closed(&self) -> usize {
        self.seen.lock().unwrap().closed
    }

    /// What connections carried past their last whole request.
    pub fn partial(&self) -> Vec<String> {
        let s = self.seen.lock().unwrap();
        s.partial
            .iter()
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .collect()
    }
}

/// Where a request in `buf` ends, if it is all there: the head, then a
/// body by `Content-Length` or chunked.
fn request_end(buf: &[u8]) -> Option<usize> {
    let mut slots = [httparse::EMPTY_HEADER; 128];
    let mut req = httparse::Request::new(&mut slots);
    let head = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        _ => return None,
    };
    let find = |name: &str| {
        req.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(h.value).trim().to_ascii_lowercase())
    };
    if find("transfer-encoding").as_deref() == Some("chunked") {
        let mut at = head;
        loop {
            let eol = at + buf[at..].windows(2).position(|w| w == b"\r\n")?;
            let line = std::str::from_utf8(&buf[at..eol]).ok()?;
            let size = usize::from_str_radix(line.split(';').next()?.trim(), 16).ok()?;
            at = eol + 2;
            if size == 0 {
                // Trailers, then an empty line.
                loop {
                    let eol = at + buf[at..].windows(2).position(|w| w == b"\r\n")?;
                    let empty = eol == at;
                    at = eol + 2;
                    if empty {
                        return Some(at);
                    }
                }
            }
            at += size + 2;
            if at > buf.len() {
                return None;
            }
        }
    }
    let len: usize = find("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    (buf.len() >= head + len).then_some(head + len)
}

async fn serve(
    mut stream: TcpStream,
    conn: usize,
    seen: &Mutex<Seen>,
    reply: &(dyn Fn(&Received) -> Vec<u8> + Send + Sync),
) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16384];
    loop {
        while let Some(end) = request_end(&buf) {
            let r = Received {
                conn,
                bytes: buf.drain(..end).collect(),
            };
            let answer = reply(&r);
            seen.lock().unwrap().requests.push(r);
            if stream.write_all(&answer).await.is_err() {
                return;
            }
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => {
                if !buf.is_empty() {
                    seen.lock().unwrap().partial.push(buf);
                }
                return;
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}
