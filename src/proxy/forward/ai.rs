//! A route whose `aiProxy` answers instead of backends: after the
//! route's plugins (authentication, token budgets, limits) ran, the
//! request body is read whole, within the route's `maxRequestBody`
//! (past it the answer is `413` at once, a larger `Content-Length`
//! before reading anything), and the request goes to the route's
//! [`AiRoute`]. Its answer, streamed or not, becomes the response the
//! client gets, through the same response phase as any other.

use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use http::{Request, Response, header};
use http_body::Body as _;
use http_body_util::BodyExt;

use super::observe::Exchange;
use crate::ai::{AiBody, AiRoute, Call, Facts};
use crate::http::wire::content_length;
use crate::plugins::TokenMeter;
use crate::proxy::body::{FaultProbe, RequestBody, RequestBodyError, ResponseBody, error_response};
use crate::proxy::error::{ClientFault, ProxyError};
use crate::proxy::server::ClientBody;

/// What the pipeline hands over with the request.
pub(super) struct Handover<'a> {
    pub path: &'a str,
    pub started: Instant,
    pub consumer: Option<Arc<str>>,
    pub meters: Vec<Box<dyn TokenMeter>>,
}

/// Serves `req` from `ai`; `body_facts` learns the request body's size.
pub(super) async fn serve(
    ai: &AiRoute,
    req: Request<ClientBody>,
    h: Handover<'_>,
    exchange: Option<&mut Exchange>,
    body_facts: &mut Option<(Option<u64>, Option<FaultProbe>)>,
) -> Response<ResponseBody> {
    let (parts, body) = req.into_parts();
    let limit = ai.max_request_body();
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| content_length(v.as_bytes()));
    if declared.is_some_and(|n| n > limit) {
        *body_facts = Some((Some(0), None));
        return error_response(&ProxyError::BodyTooLarge { limit });
    }
    let mut body = RequestBody::new(body, Some(limit));
    let probe = body.fault_probe();
    *body_facts = Some((body.is_end_stream().then_some(0), probe.clone()));
    let bytes = match read(&mut body, probe.as_ref()).await {
        Ok(b) => b,
        Err(e) => return error_response(&e),
    };
    *body_facts = Some((Some(bytes.len() as u64), None));
    let facts = exchange.map(|ex| {
        let f = Arc::new(Facts::default());
        ex.ai = Some(f.clone());
        f
    });
    let call = Call {
        method: &parts.method,
        path: h.path,
        body: bytes,
        consumer: h.consumer,
        meters: h.meters,
        started: h.started,
        facts,
    };
    ai.serve(call).await.map(|b| match b {
        AiBody::Full(b) => ResponseBody::Full(b),
        stream => ResponseBody::Ai(Box::new(stream)),
    })
}

/// The whole request body, or why there is none.
async fn read(body: &mut RequestBody, probe: Option<&FaultProbe>) -> Result<Bytes, ProxyError> {
    let mut out = BytesMut::new();
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(f) => {
                if let Ok(d) = f.into_data() {
                    out.extend_from_slice(&d);
                }
            }
            Err(RequestBodyError::TooLarge(limit)) => {
                return Err(ProxyError::BodyTooLarge { limit });
            }
            Err(RequestBodyError::Client(_)) => {
                return Err(probe
                    .and_then(FaultProbe::error)
                    .unwrap_or(ProxyError::Client(ClientFault::Aborted)));
            }
        }
    }
    Ok(out.freeze())
}
