//! HTTP/3 through the real proxy: a QUIC client (quinn + h3, the crates
//! the gateway serves with) against the gateway's HTTPS port over UDP, and
//! real loopback backends that record what they received. The requests a
//! client makes are in [`requests`]; the rules and bounds the HTTP/3 side
//! enforces in [`limits`].

use crate::common;

mod limits;
mod requests;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::{Buf, Bytes};
use common::wire::Capture;
use common::*;
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use sluicegate::gateway::GatewayConfig;
use sluicegate::proxy::Http3Settings;
use tokio::sync::{Notify, mpsc};

fn apiroute(name: &str, body: &str) -> String {
    format!(
        r#"---
apiVersion: sluicegate.io/v1alpha1
kind: ApiRoute
metadata: {{name: {name}, namespace: default}}
spec:
{body}"#
    )
}

/// A gateway config with HTTPS on a fixed loopback port, and HTTP/3 on it
/// when `http3` is given. Redirects and `Alt-Svc` name that port.
fn config(http3: Option<Http3Settings>) -> GatewayConfig {
    let mut cfg = test_config(1);
    let port = listener_port();
    cfg.https_addr = Some(SocketAddr::from(([127, 0, 0, 1], port)));
    cfg.proxy.https_redirect_port = port;
    cfg.proxy.http3 = http3;
    cfg
}

pub(crate) fn h3_on() -> GatewayConfig {
    config(Some(Http3Settings::default()))
}

/// An HTTP/3 client connection.
pub(crate) struct H3 {
    send: h3::client::SendRequest<h3_quinn::OpenStreams, Bytes>,
    quic: quinn::Connection,
    _endpoint: quinn::Endpoint,
}

fn client_endpoint() -> quinn::Endpoint {
    let tls = (*tls::client_config(&[b"h3"])).clone();
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
    endpoint
}

impl H3 {
    pub(crate) async fn open(addr: SocketAddr, sni: &str) -> H3 {
        let endpoint = client_endpoint();
        let quic = endpoint.connect(addr, sni).unwrap().await.unwrap();
        let (mut driver, send) = h3::client::new(h3_quinn::Connection::new(quic.clone()))
            .await
            .unwrap();
        tokio::spawn(async move {
            let _ = std::future::poll_fn(|cx| driver.poll_close(cx)).await;
        });
        H3 {
            send,
            quic,
            _endpoint: endpoint,
        }
    }

    /// Sends `req` with `body` (ended after it) and reads the whole
    /// response.
    async fn request(&mut self, req: Request<()>, body: &[u8]) -> Reply {
        let mut stream = self.send.send_request(req).await.unwrap();
        if !body.is_empty() {
            stream
                .send_data(Bytes::copy_from_slice(body))
                .await
                .unwrap();
        }
        stream.finish().await.unwrap();
        read_response(&mut stream).await
    }

    pub(crate) async fn get(&mut self, host: &str, path: &str) -> Reply {
        let req = Request::get(format!("https://{host}{path}"))
            .body(())
            .unwrap();
        self.request(req, b"").await
    }
}

type ClientStream = h3::client::RequestStream<h3_quinn::BidiStream<Bytes>, Bytes>;

async fn read_response(stream: &mut ClientStream) -> Reply {
    let resp = stream.recv_response().await.unwrap();
    let mut body = Vec::new();
    while let Some(mut chunk) = stream.recv_data().await.unwrap() {
        while chunk.has_remaining() {
            let c = chunk.chunk().to_vec();
            chunk.advance(c.len());
            body.extend(c);
        }
    }
    Reply {
        status: resp.status(),
        headers: resp.headers().clone(),
        body: body.into(),
    }
}

/// One request's bytes as the capture backend received them, as text.
fn only_request(backend: &Capture) -> String {
    let requests = backend.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    requests[0].text()
}
