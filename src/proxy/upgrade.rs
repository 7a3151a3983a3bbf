//! WebSocket upgrades: forward the handshake on a dedicated connection,
//! then splice the two upgraded streams together.

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tracing::debug;

use super::body::{ResponseBody, UpstreamBody};
use super::error::ProxyError;
use super::headers;
use super::pool::{Deadlines, connect};

pub async fn forward(
    addr: std::net::SocketAddr,
    req: Request<Incoming>,
    client_upgrade: OnUpgrade,
    deadlines: Deadlines,
) -> Result<Response<ResponseBody>, ProxyError> {
    let mut tx = connect(addr, deadlines.connect, true).await?;
    let mut resp = match tokio::time::timeout(deadlines.request, tx.send_request(req)).await {
        Err(_) => {
            return Err(ProxyError::UpstreamTimeout {
                addr,
                timeout: deadlines.request,
            });
        }
        Ok(Err(source)) => return Err(ProxyError::Upstream { addr, source }),
        Ok(Ok(r)) => r,
    };
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        // The upstream declined; relay its answer as an ordinary response.
        headers::prepare_response(resp.headers_mut(), false);
        return Ok(resp.map(|b| ResponseBody::Upstream(UpstreamBody::new(b, None))));
    }
    let upstream_upgrade = hyper::upgrade::on(&mut resp);
    tokio::spawn(async move {
        match tokio::try_join!(client_upgrade, upstream_upgrade) {
            Ok((client, upstream)) => {
                let mut client = TokioIo::new(client);
                let mut upstream = TokioIo::new(upstream);
                if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
                    debug!(%addr, error = %e, "upgraded connection ended");
                }
            }
            Err(e) => debug!(%addr, error = %e, "upgrade did not complete"),
        }
    });
    headers::prepare_response(resp.headers_mut(), true);
    Ok(resp.map(|_| ResponseBody::empty()))
}
