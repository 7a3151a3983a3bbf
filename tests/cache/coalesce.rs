//! Coalescing: waiters stream the leader's body as it arrives, give up
//! after the lock timeout, and never take a response that varies on
//! values they do not share.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::Notify;

use crate::cache::{Env, Store, cached_route, status_of};
use crate::common::wire::Raw;
use crate::common::*;

/// A backend that answers the first request of each connection in
/// steps: the head only after `head` is notified, then a first chunk,
/// then the rest after `rest` is notified.
struct Stepped {
    addr: std::net::SocketAddr,
    requests: Arc<AtomicUsize>,
    head: Arc<Notify>,
    rest: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Stepped {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Stepped {
    async fn start() -> Stepped {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(AtomicUsize::new(0));
        let head = Arc::new(Notify::new());
        let rest = Arc::new(Notify::new());
        let task = {
            let (requests, head, rest) = (requests.clone(), head.clone(), rest.clone());
            tokio::spawn(async move {
                loop {
                    let Ok((mut s, _)) = listener.accept().await else {
                        continue;
                    };
                    let (requests, head, rest) = (requests.clone(), head.clone(), rest.clone());
                    tokio::spawn(async move {
                        let mut buf = Vec::new();
                        let mut chunk = [0u8; 4096];
                        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                            match s.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        }
                        requests.fetch_add(1, Ordering::SeqCst);
                        head.notified().await;
                        let _ = s
                            .write_all(
                                b"HTTP/1.1 200 OK\r\ncache-control: max-age=60\r\ntransfer-encoding: chunked\r\n\r\n6\r\nfirst;\r\n",
                            )
                            .await;
                        rest.notified().await;
                        let _ = s.write_all(b"6\r\nsecond\r\n0\r\n\r\n").await;
                        let _ = s.read(&mut chunk).await;
                    });
                }
            })
        };
        Stepped {
            addr,
            requests,
            head,
            rest,
            task,
        }
    }
}

/// Reads until `needle` has arrived in the client's buffer.
async fn read_until(c: &mut Raw, needle: &[u8]) {
    while !c.buf.windows(needle.len()).any(|w| w == needle) {
        assert!(
            c.fill().await,
            "closed before {:?}",
            String::from_utf8_lossy(needle)
        );
    }
}

#[tokio::test]
async fn waiters_stream_the_leaders_body_as_it_arrives() {
    let env = Env::new(Store::Memory).await;
    let app = Stepped::start().await;
    let m = service("app", &[app.addr]) + &cached_route("c", Store::Memory, "", "");
    let gw = env.gateway(&m).await;
    let get = "GET /big HTTP/1.1\r\nhost: c.test\r\n\r\n";

    let mut leader = Raw::open(gw.http()).await;
    leader.send(get).await;
    crate::cache::eventually("the leader's request upstream", async || {
        app.requests.load(Ordering::SeqCst) == 1
    })
    .await;
    // Joins before the response head.
    let mut early = Raw::open(gw.http()).await;
    early.send(get).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    app.head.notify_one();
    // Both have the first chunk while the upstream has not sent the rest.
    read_until(&mut leader, b"first;").await;
    read_until(&mut early, b"first;").await;
    // Joins in the middle of the body: gets what it missed, then the rest.
    let mut late = Raw::open(gw.http()).await;
    late.send(get).await;
    read_until(&mut late, b"first;").await;
    app.rest.notify_one();
    for (name, c) in [
        ("leader", &mut leader),
        ("early", &mut early),
        ("late", &mut late),
    ] {
        let w = c.response(false).await;
        assert_eq!(
            (w.status, w.text().as_str()),
            (200, "first;second"),
            "{name}"
        );
        let cs = w.header("cache-status").unwrap_or("");
        if name == "leader" {
            assert_eq!(cs, "sluicegate; fwd=miss; stored");
        } else {
            assert_eq!(cs, "sluicegate; fwd=miss; collapsed", "{name}");
        }
    }
    assert_eq!(app.requests.load(Ordering::SeqCst), 1);
    gw.shutdown().await;
}

/// A backend counting requests and answering after `delay`, with the
/// request's `accept-encoding` in the body, varying on it.
async fn slow(delay: Duration, count: Arc<AtomicUsize>) -> Backend {
    Backend::start(move |req| {
        let count = count.clone();
        async move {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(delay).await;
            let enc = req
                .headers()
                .get("accept-encoding")
                .map_or("", |v| v.to_str().unwrap())
                .to_owned();
            http::Response::builder()
                .header("cache-control", "max-age=60")
                .header("vary", "accept-encoding")
                .body(full(format!("enc={enc}")))
                .unwrap()
        }
    })
    .await
}

#[tokio::test]
async fn waiters_give_up_after_the_lock_timeout() {
    let env = Env::new(Store::Memory).await;
    let count = Arc::new(AtomicUsize::new(0));
    let app = slow(Duration::from_millis(1500), count.clone()).await;
    let m = service("app", &[app.addr])
        + &cached_route("c", Store::Memory, "lock: {timeout: 200ms}", "");
    let gw = env.gateway(&m).await;
    let addr = gw.http();
    let first = tokio::spawn(async move { get(addr, "c.test", "/").await });
    crate::cache::eventually("first request upstream", async || {
        count.load(Ordering::SeqCst) == 1
    })
    .await;
    let started = std::time::Instant::now();
    let second = get(addr, "c.test", "/").await;
    assert_eq!(second.text(), "enc=");
    assert_eq!(
        count.load(Ordering::SeqCst),
        2,
        "the waiter went upstream itself"
    );
    assert!(started.elapsed() < Duration::from_millis(1400) + Duration::from_millis(1500));
    assert_eq!(first.await.unwrap().text(), "enc=");
    gw.shutdown().await;
}

#[tokio::test]
async fn waiters_with_other_varying_values_ask_the_upstream() {
    let env = Env::new(Store::Memory).await;
    let count = Arc::new(AtomicUsize::new(0));
    let app = slow(Duration::from_millis(500), count.clone()).await;
    let m = service("app", &[app.addr]) + &cached_route("c", Store::Memory, "", "");
    let gw = env.gateway(&m).await;
    let addr = gw.http();
    let gzip = tokio::spawn(async move {
        request(addr, "GET", "c.test", "/v", &[("accept-encoding", "gzip")]).await
    });
    crate::cache::eventually("first request upstream", async || {
        count.load(Ordering::SeqCst) == 1
    })
    .await;
    let (same, br) = tokio::join!(
        request(addr, "GET", "c.test", "/v", &[("accept-encoding", "gzip")]),
        request(addr, "GET", "c.test", "/v", &[("accept-encoding", "br")])
    );
    assert_eq!(gzip.await.unwrap().text(), "enc=gzip");
    assert_eq!(same.text(), "enc=gzip");
    assert_eq!(status_of(&same), "sluicegate; fwd=miss; collapsed");
    assert_eq!(br.text(), "enc=br", "never the other variant's response");
    assert_eq!(count.load(Ordering::SeqCst), 2);
    gw.shutdown().await;
}
