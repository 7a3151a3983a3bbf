//! The Gateway API's route filters, run as plugins: header modifiers
//! ([`headers`]), `RequestRedirect` ([`redirect`]), `URLRewrite`
//! ([`rewrite`]), and the `500` that rules without a usable backend
//! answer ([`FixedStatus`]).
//!
//! They are built by translation from HTTPRoute and GRPCRoute rules, not
//! configured in PluginConfigs. The header modifiers and the rewrite share
//! one priority (that of `proxyRewrite`), so that among themselves they run
//! in the order the rule lists them; a redirect runs after authentication,
//! like the `redirect` plugin, so that it cannot be used to skip it.
//! Plugins a rule gets through an `ExtensionRef` keep their own
//! priorities around these.

pub mod headers;
pub mod redirect;
pub mod rewrite;

use std::sync::Arc;

use http::StatusCode;

use super::transform::respond::plain;
use super::{Outcome, Plugin, RequestCtx};

/// Priority of the header modifiers and `URLRewrite`.
pub const MODIFY: i32 = 1008;
/// Priority of `RequestRedirect`.
pub const REDIRECT: i32 = 901;

/// Answers every request with one status: a rule whose backends are all
/// invalid (missing, not permitted, of an unknown kind) or that has none
/// gets `500`, as the Gateway API requires, instead of falling through to
/// a route the user did not choose.
#[derive(Debug)]
pub struct FixedStatus {
    status: StatusCode,
    why: &'static str,
}

impl FixedStatus {
    pub fn build(status: StatusCode, why: &'static str) -> Arc<dyn Plugin> {
        Arc::new(FixedStatus { status, why })
    }
}

impl Plugin for FixedStatus {
    fn name(&self) -> &'static str {
        "fixedStatus"
    }

    fn priority(&self) -> i32 {
        // After authentication and the gateway's other answers.
        REDIRECT - 1
    }

    fn request<'s>(&'s self, _ctx: &mut RequestCtx<'_>) -> Outcome<'s> {
        Outcome::Reject(plain(self.status, self.why))
    }

    fn describe(&self) -> serde_json::Value {
        serde_json::json!({ "status": self.status.as_u16(), "reason": self.why })
    }
}
