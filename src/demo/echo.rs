//! A small echo backend: answers every request with its own name, the
//! request line and the headers it received. The demo runs two of them;
//! tests use them as real upstreams.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::net::SocketAddr;

use bytes::Bytes;
use http::{Request, Response, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::proxy::ResponseBody;

/// A running echo backend; stops when dropped.
pub struct EchoServer {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl EchoServer {
    /// Starts an echo backend called `name` on `addr` (port 0 picks one).
    pub async fn start(addr: SocketAddr, name: &str) -> std::io::Result<EchoServer> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let name: Bytes = Bytes::copy_from_slice(name.as_bytes());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let name = name.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| {
                        let name = name.clone();
                        async move { Ok::<_, Infallible>(echo(&name, req).await) }
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Ok(EchoServer { addr, task })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn echo(name: &[u8], req: Request<Incoming>) -> Response<ResponseBody> {
    let name = String::from_utf8_lossy(name);
    let mut text = String::with_capacity(512);
    let _ = writeln!(text, "backend: {name}");
    let _ = writeln!(text, "request: {} {}", req.method(), req.uri());
    let _ = writeln!(text, "headers:");
    for (k, v) in req.headers() {
        let _ = writeln!(text, "  {k}: {}", String::from_utf8_lossy(v.as_bytes()));
    }
    let received = match req.into_body().collect().await {
        Ok(b) => b.to_bytes().len(),
        Err(_) => 0,
    };
    if received > 0 {
        let _ = writeln!(text, "body: {received} bytes");
    }
    let mut resp = Response::new(ResponseBody::full(text));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if let Ok(v) = header::HeaderValue::from_str(&name) {
        resp.headers_mut().insert("x-backend", v);
    }
    resp
}
