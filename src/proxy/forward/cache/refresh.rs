//! Background refresh (RFC 5861 `stale-while-revalidate`): a request
//! served a stale entry starts one revalidation of its key, unless one is
//! already in flight, and does not wait for it. The refresh is the
//! request itself, without a body, sent again by the gateway with the
//! entry's validators; its response is stored as any other.

use std::time::Instant;

use http::Request;
use tracing::debug;

use super::{Ctx, Found, Plan, Stale, fetch};
use crate::cache::entry::VaryIndex;
use crate::cache::status::Fwd;
use crate::proxy::body::ResponseBody;
use crate::proxy::forward::Worker;
use crate::proxy::forward::observe::Notes;
use crate::proxy::forward::plugins::UpstreamChanges;
use crate::proxy::forward::request::Matched;
use crate::proxy::server::{ClientBody, ClientInfo};

/// Starts the refresh of the entry `found` for `req`, if no request for
/// its key is in flight.
#[allow(clippy::too_many_arguments)]
pub(super) fn spawn(
    worker: &Worker,
    ctx: &Ctx,
    matched: &Matched,
    req: Request<ClientBody>,
    client: &ClientInfo,
    changes: Option<UpstreamChanges>,
    found: Found,
    validators: Vec<(http::HeaderName, http::HeaderValue)>,
    index: Option<VaryIndex>,
) {
    let Some(leader) = ctx.stores.flights.try_lead(ctx.primary) else {
        return;
    };
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let (parts, _) = req.into_parts();
    let req = Request::from_parts(parts, ClientBody::Empty);
    let (worker, ctx, matched, client) =
        (worker.clone(), ctx.clone(), matched.clone(), client.clone());
    rt.spawn(async move {
        let plan = Plan {
            stale: Some(Stale {
                found,
                validators,
                if_error_until: None,
            }),
            leader: Some(leader),
            fwd: Fwd::Stale,
            index,
        };
        match fetch(
            &worker,
            &ctx,
            &matched,
            req,
            &client,
            Instant::now(),
            changes,
            plan,
            Notes::default(),
            &mut None,
        )
        .await
        {
            // Read to its end, so that a new response is stored.
            Ok(resp) => drain(resp.into_body()).await,
            Err(e) => debug!(route = %ctx.route.name, error = %e, "cache refresh failed"),
        }
    });
}

async fn drain(mut body: ResponseBody) {
    use http_body_util::BodyExt;
    while let Some(frame) = body.frame().await {
        if frame.is_err() {
            return;
        }
    }
}
