//! The typed plugin block shared by routes and PluginConfigs.
//!
//! Every plugin is a named, typed field so that the API server's schema
//! validation rejects a misspelt plugin or option at `kubectl apply`, rather
//! than the gateway discovering it at runtime.

use kube::KubeSchema;
use serde::{Deserialize, Serialize};

use super::common::Duration;
use super::plugins_ai::{AiPromptDecorator, AiPromptGuard, AiPromptTemplate, AiProxy, AiRateLimit};
use super::plugins_cache::ProxyCache;
use super::plugins_http::{
    Brotli, Cors, ForwardAuth, Gzip, HeaderLimits, IpRestriction, Mocking, ProxyRewrite,
    RedirectTo, RequestBodyLimit, RequestId, ResponseRewrite, UaRestriction,
};
use super::plugins_limit::{LimitConn, LimitCount, LimitReq};

/// Plugin settings. Each field enables one plugin.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Plugins {
    /// Count requests per key in a fixed or sliding time window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit_count: Option<LimitCount>,
    /// Leaky bucket (GCRA): a sustained rate per key with a burst.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit_req: Option<LimitReq>,
    /// Concurrent in-flight requests per key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit_conn: Option<LimitConn>,
    /// API keys in a header or query parameter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_auth: Option<KeyAuth>,
    /// HTTP Basic authentication.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub basic_auth: Option<BasicAuth>,
    /// JSON Web Tokens (HS256/384/512, RS256/384/512, ES256, EdDSA), with
    /// keys from consumer Secrets or a JWKS URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt_auth: Option<JwtAuth>,
    /// Ask an external service whether to let each request through.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forward_auth: Option<ForwardAuth>,
    /// Allow or deny clients by address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_restriction: Option<IpRestriction>,
    /// Cross-origin resource sharing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cors: Option<Cors>,
    /// Largest request body accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_body_limit: Option<RequestBodyLimit>,
    /// Limits on request headers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header_limits: Option<HeaderLimits>,
    /// Allow or deny clients by User-Agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ua_restriction: Option<UaRestriction>,
    /// Rewrite the path, host and headers the upstream gets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_rewrite: Option<ProxyRewrite>,
    /// Rewrite the status, headers or body the client gets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_rewrite: Option<ResponseRewrite>,
    /// Answer with a redirect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect: Option<RedirectTo>,
    /// Generate or propagate a request id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<RequestId>,
    /// Answer with a fixed response.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mocking: Option<Mocking>,
    /// Compress responses with gzip.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gzip: Option<Gzip>,
    /// Compress responses with Brotli.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub brotli: Option<Brotli>,
    /// Cache upstream responses (RFC 9111), in memory, on disk, in Redis
    /// or in Memcached. Runs after authentication, so cached answers are
    /// never a way around it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_cache: Option<ProxyCache>,
    /// Answer chat requests from LLM providers (OpenAI, Anthropic, Gemini,
    /// Mistral, Azure OpenAI, OpenAI-compatible servers); the route needs
    /// no backends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ai_proxy: Option<AiProxy>,
    /// Token budgets per key and window, for routes with `aiProxy`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ai_rate_limit: Option<AiRateLimit>,
    /// Add messages before or after the client's, for routes with
    /// `aiProxy`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ai_prompt_decorator: Option<AiPromptDecorator>,
    /// Named prompt templates filled from the request, for routes with
    /// `aiProxy`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ai_prompt_template: Option<AiPromptTemplate>,
    /// Refuse prompts by regular expressions, for routes with `aiProxy`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ai_prompt_guard: Option<AiPromptGuard>,
}

impl Plugins {
    /// `self` with every plugin `over` sets replaced by `over`'s.
    pub fn overridden_by(&self, over: &Plugins) -> Plugins {
        Plugins {
            limit_count: over
                .limit_count
                .clone()
                .or_else(|| self.limit_count.clone()),
            limit_req: over.limit_req.clone().or_else(|| self.limit_req.clone()),
            limit_conn: over.limit_conn.clone().or_else(|| self.limit_conn.clone()),
            key_auth: over.key_auth.clone().or_else(|| self.key_auth.clone()),
            basic_auth: over.basic_auth.clone().or_else(|| self.basic_auth.clone()),
            jwt_auth: over.jwt_auth.clone().or_else(|| self.jwt_auth.clone()),
            forward_auth: over
                .forward_auth
                .clone()
                .or_else(|| self.forward_auth.clone()),
            ip_restriction: over
                .ip_restriction
                .clone()
                .or_else(|| self.ip_restriction.clone()),
            cors: over.cors.clone().or_else(|| self.cors.clone()),
            request_body_limit: over
                .request_body_limit
                .clone()
                .or_else(|| self.request_body_limit.clone()),
            header_limits: over
                .header_limits
                .clone()
                .or_else(|| self.header_limits.clone()),
            ua_restriction: over
                .ua_restriction
                .clone()
                .or_else(|| self.ua_restriction.clone()),
            proxy_rewrite: over
                .proxy_rewrite
                .clone()
                .or_else(|| self.proxy_rewrite.clone()),
            response_rewrite: over
                .response_rewrite
                .clone()
                .or_else(|| self.response_rewrite.clone()),
            redirect: over.redirect.clone().or_else(|| self.redirect.clone()),
            request_id: over.request_id.clone().or_else(|| self.request_id.clone()),
            mocking: over.mocking.clone().or_else(|| self.mocking.clone()),
            gzip: over.gzip.clone().or_else(|| self.gzip.clone()),
            brotli: over.brotli.clone().or_else(|| self.brotli.clone()),
            proxy_cache: over
                .proxy_cache
                .clone()
                .or_else(|| self.proxy_cache.clone()),
            ai_proxy: over.ai_proxy.clone().or_else(|| self.ai_proxy.clone()),
            ai_rate_limit: over
                .ai_rate_limit
                .clone()
                .or_else(|| self.ai_rate_limit.clone()),
            ai_prompt_decorator: over
                .ai_prompt_decorator
                .clone()
                .or_else(|| self.ai_prompt_decorator.clone()),
            ai_prompt_template: over
                .ai_prompt_template
                .clone()
                .or_else(|| self.ai_prompt_template.clone()),
            ai_prompt_guard: over
                .ai_prompt_guard
                .clone()
                .or_else(|| self.ai_prompt_guard.clone()),
        }
    }

    /// Whether any AI gateway plugin is set (they need `aiProxy` on the
    /// route).
    pub fn has_ai(&self) -> bool {
        self.ai_proxy.is_some()
            || self.ai_rate_limit.is_some()
            || self.ai_prompt_decorator.is_some()
            || self.ai_prompt_template.is_some()
            || self.ai_prompt_guard.is_some()
    }

    pub fn is_empty(&self) -> bool {
        *self == Plugins::default()
    }
}

/// Which consumers an authentication plugin accepts: Secrets in the
/// object's namespace labelled `sluicegate.io/consumer` (its value names
/// the consumer), narrowed by `matchLabels`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConsumerSelector {
    /// Labels a consumer Secret must carry besides `sluicegate.io/consumer`;
    /// empty: every consumer in the namespace.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 32, "additionalProperties" = {"type": "string", "maxLength": 63}))]
    pub match_labels: std::collections::BTreeMap<String, String>,
}

/// Settings every authentication plugin shares.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuthCommon {
    /// The consumers accepted.
    #[serde(default)]
    pub consumers: ConsumerSelector,
    /// Remove the credential before forwarding (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hide_credentials: Option<bool>,
    /// Header that tells the upstream who the consumer is (default
    /// `X-Consumer-Name`); a value the client sent is replaced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub consumer_header: Option<String>,
}

/// API keys: a consumer Secret's `key` value.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KeyAuth {
    /// Header carrying the key (default `apikey`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub header: Option<String>,
    /// Query parameter carrying the key, tried after the header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub query: Option<String>,
    #[serde(flatten)]
    pub common: AuthCommon,
}

/// HTTP Basic: a consumer Secret's `username` and `password` (plain or a
/// bcrypt hash), or its `auth` value in htpasswd form (bcrypt lines).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BasicAuth {
    /// Realm in the `WWW-Authenticate` challenge.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub realm: Option<String>,
    /// A Secret (of any type) whose `auth` value is an htpasswd file, as
    /// ingress-nginx's `auth-secret` uses; each user is a consumer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub htpasswd_secret_ref: Option<super::LocalObjectRef>,
    #[serde(flatten)]
    pub common: AuthCommon,
}

/// JSON Web Tokens verified with a consumer Secret's `jwt-secret` (HMAC)
/// or `jwt-public-key` (PEM public key: RSA, P-256 or Ed25519), and with
/// the keys of a JSON Web Key Set fetched from `jwksUri`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JwtAuth {
    /// Header carrying `Bearer <token>` (default `Authorization`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub header: Option<String>,
    /// Query parameter carrying the token, tried after the header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub query: Option<String>,
    /// Cookie carrying the token, tried last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub cookie: Option<String>,
    /// Algorithms accepted; default all of them. `none` never is.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    pub algorithms: Vec<JwtAlgorithm>,
    /// Required `iss`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 2048))]
    pub issuer: Option<String>,
    /// `aud` must contain one of these, when set.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32), inner(length(min = 1, max = 2048)))]
    pub audiences: Vec<String>,
    /// Tolerance for `exp` and `nbf` (default 60s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock_skew: Option<Duration>,
    /// Refuse tokens without `exp` (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub require_expiry: Option<bool>,
    /// Copy claims into request headers for the upstream.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub claims_to_headers: Vec<ClaimHeader>,
    /// A JSON Web Key Set (`http://` or `https://`), such as an OpenID
    /// provider's `jwks_uri`: its RSA, P-256 and Ed25519 keys verify
    /// tokens besides the consumers' keys. The consumer is the token's
    /// `sub`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 2048))]
    pub jwks_uri: Option<String>,
    /// How old the key set may get before it is fetched again (default
    /// 5m). A token whose `kid` is not in the set has it fetched at once,
    /// at most every 30s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_refresh_interval: Option<Duration>,
    /// Time allowed for one fetch of the key set (default 5s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_timeout: Option<Duration>,
    /// A Secret in this namespace whose `ca.crt` verifies an `https://`
    /// JWKS server; without it the system's CA certificates do.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_ca_secret_ref: Option<super::LocalObjectRef>,
    #[serde(flatten)]
    pub common: AuthCommon,
}

/// JWT signature algorithms.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, schemars::JsonSchema)]
#[allow(clippy::upper_case_acronyms)]
pub enum JwtAlgorithm {
    HS256,
    HS384,
    HS512,
    RS256,
    RS384,
    RS512,
    ES256,
    EdDSA,
}

/// A claim copied into a request header.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClaimHeader {
    /// The claim's name, e.g. `sub` or `email`; its value (a string, or
    /// JSON text for other types) is copied.
    #[schemars(length(min = 1, max = 256))]
    pub claim: String,
    /// The request header that gets it; a value the client sent is
    /// replaced (removed when the token lacks the claim).
    #[schemars(length(min = 1, max = 256))]
    pub header: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn misspelt_options_are_refused() {
        let bad = r#"{"count": 5, "timeWindow": "1s", "rejectedCod": 503}"#;
        assert!(serde_json::from_str::<LimitCount>(bad).is_err());
        let good = r#"{"count": 5, "timeWindow": "1s", "rejectedCode": 503}"#;
        let c: LimitCount = serde_json::from_str(good).unwrap();
        assert_eq!(c.common.rejected_code, Some(503));
    }
}
