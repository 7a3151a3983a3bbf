//! Typed settings of the security and transformation plugins.

use std::collections::BTreeMap;

use kube::KubeSchema;
use serde::{Deserialize, Serialize};

use super::common::Duration;

/// Allow or deny clients by address.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IpRestriction {
    /// Addresses or CIDR ranges allowed; when set, everyone else is refused.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1024), inner(length(min = 1, max = 64)))]
    pub allow: Vec<String>,
    /// Addresses or CIDR ranges refused (checked first).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1024), inner(length(min = 1, max = 64)))]
    pub deny: Vec<String>,
    /// Proxies whose `X-Forwarded-For` is believed: the client is the
    /// right-most address not in this list. Empty: the connection's peer.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256), inner(length(min = 1, max = 64)))]
    pub trusted_proxies: Vec<String>,
    /// Status of refused requests (default 403).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 200, max = 599))]
    pub rejected_code: Option<u16>,
    /// Body of refused requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 4096))]
    pub rejected_message: Option<String>,
}

/// Cross-origin resource sharing; preflight requests are answered by the
/// gateway.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Cors {
    /// `*`, exact origins (`https://shop.example.com`) or one-label
    /// wildcards (`https://*.example.com`). Default `*`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256), inner(length(min = 1, max = 512)))]
    pub allow_origins: Vec<String>,
    /// Default GET, POST, PUT, PATCH, DELETE, OPTIONS, HEAD.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32), inner(length(min = 1, max = 32)))]
    pub allow_methods: Vec<String>,
    /// Request headers allowed; default: whatever the preflight asks for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(min = 1, max = 256)))]
    pub allow_headers: Vec<String>,
    /// Response headers scripts may read
    /// (`Access-Control-Expose-Headers`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(min = 1, max = 256)))]
    pub expose_headers: Vec<String>,
    /// Send `Access-Control-Allow-Credentials: true` (then the origin is
    /// echoed, never `*`).
    #[serde(default)]
    pub allow_credentials: bool,
    /// How long browsers cache a preflight answer (default 5s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age: Option<Duration>,
}

/// Refuse request bodies larger than this with 413: a larger
/// `Content-Length` at once, a body without one (chunked, or HTTP/2) as
/// soon as it has streamed past the limit.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RequestBodyLimit {
    /// Largest body accepted, in bytes.
    pub max_bytes: u64,
}

/// Refuse requests with too many or too large headers (431).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeaderLimits {
    /// Most header fields a request may have.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_count: Option<u32>,
    /// Names and values of all headers together.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_total_bytes: Option<u64>,
    /// Longest value of a single header, in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_value_bytes: Option<u64>,
}

/// Allow or deny clients by `User-Agent` (regular expressions matching
/// the whole value).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UaRestriction {
    /// Patterns of User-Agents allowed; when set, every other one (and a
    /// request without the header) is refused.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256), inner(length(min = 1, max = 1024)))]
    pub allow: Vec<String>,
    /// Patterns of User-Agents refused (checked first).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256), inner(length(min = 1, max = 1024)))]
    pub deny: Vec<String>,
    /// Status of refused requests (default 403).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 200, max = 599))]
    pub rejected_code: Option<u16>,
}

/// Header edits: `set` replaces, `add` appends, `remove` deletes.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeaderEdits {
    /// Headers set to these values, replacing any with the same name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 64, "additionalProperties" = {"type": "string", "maxLength": 4096}))]
    pub set: BTreeMap<String, String>,
    /// Headers added with these values, beside any with the same name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 64, "additionalProperties" = {"type": "string", "maxLength": 4096}))]
    pub add: BTreeMap<String, String>,
    /// Names of headers removed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(min = 1, max = 256)))]
    pub remove: Vec<String>,
}

/// A regular expression and its replacement (`$1`, `${name}`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RegexReplace {
    /// Regular expression matched against the whole path.
    #[schemars(length(min = 1, max = 1024))]
    pub pattern: String,
    /// The new path; `$1` or `${name}` insert capture groups.
    #[schemars(length(max = 1024))]
    pub replacement: String,
}

/// Rewrites of the request the upstream gets.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProxyRewrite {
    /// A new path (the query is kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 4096))]
    pub uri: Option<String>,
    /// Rewrite the path by regular expression with capture groups.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex_uri: Option<RegexReplace>,
    /// Remove this prefix from the path (then `replacePrefix` in front).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    pub strip_prefix: Option<String>,
    /// Put in front of the path once `stripPrefix` is removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub replace_prefix: Option<String>,
    /// The `Host` the upstream gets (a name, with a port if needed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 259))]
    pub host: Option<String>,
    /// Changes to the request headers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<HeaderEdits>,
}

/// Changes to the response the client gets.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ResponseRewrite {
    /// Replaces the upstream's status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 100, max = 599))]
    pub status_code: Option<u16>,
    /// Changes to the response headers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<HeaderEdits>,
    /// Replaces the body (at most 64 KiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 65536))]
    pub body: Option<String>,
}

/// Answer with a redirect.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RedirectTo {
    /// Target; `{host}`, `{path}`, `{query}` and `{request_uri}` are
    /// replaced.
    #[schemars(length(min = 1, max = 4096))]
    pub uri: String,
    /// 301, 302 (default), 303, 307 or 308.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<u16>,
}

/// Give every request an id, or keep the client's.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RequestId {
    /// The header carrying the id; default `X-Request-Id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub header: Option<String>,
    /// Also send it back in the response (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include_in_response: Option<bool>,
}

/// Answer with a fixed response instead of forwarding.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Mocking {
    /// Status of the answer; default 200.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 100, max = 599))]
    pub status_code: Option<u16>,
    /// Body of the answer (at most 64 KiB).
    #[serde(default)]
    #[schemars(length(max = 65536))]
    pub body: String,
    /// `Content-Type` of the answer; default `text/plain; charset=utf-8`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub content_type: Option<String>,
    /// Further response headers.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 64, "additionalProperties" = {"type": "string", "maxLength": 4096}))]
    pub headers: BTreeMap<String, String>,
}

/// Ask an authorization service about every request: a 2xx answer lets
/// it through, anything else is the client's answer.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ForwardAuth {
    /// `http://` or `https://host:port/path` of the service.
    #[schemars(length(min = 1, max = 2048))]
    pub uri: String,
    /// Client request headers sent to the service (besides
    /// `X-Forwarded-*` describing the original request).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(min = 1, max = 256)))]
    pub request_headers: Vec<String>,
    /// Headers of the service's 2xx answer copied to the upstream request.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(min = 1, max = 256)))]
    pub upstream_headers: Vec<String>,
    /// Headers of a refusal copied to the client's answer.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(min = 1, max = 256)))]
    pub client_headers: Vec<String>,
    /// Default 3s; past it the client gets 503.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    /// A Secret in this namespace whose `ca.crt` verifies an `https://`
    /// service; without it the system's CA certificates do.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_secret_ref: Option<super::LocalObjectRef>,
}

/// Compress responses with gzip for clients that accept it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Gzip {
    /// Content types compressed (compared without parameters, in any
    /// case); `*` for all. Default: text/html, text/plain, text/css,
    /// application/json, application/javascript, text/javascript,
    /// application/xml, image/svg+xml.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(min = 1, max = 256)))]
    pub types: Vec<String>,
    /// Responses whose length is known and below this many bytes are sent
    /// as they are (default 256).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_length: Option<u64>,
    /// 1 (fastest) to 9 (smallest); default 6.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 9))]
    pub level: Option<u32>,
    /// Add `Vary: Accept-Encoding` to responses that could be compressed
    /// (default true), so that caches keep both forms apart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vary: Option<bool>,
}

/// Compress responses with Brotli for clients that accept it; preferred
/// over `gzip` when a client accepts both equally.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Brotli {
    /// Content types compressed, as for `gzip`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(min = 1, max = 256)))]
    pub types: Vec<String>,
    /// Responses whose length is known and below this many bytes are sent
    /// as they are (default 256).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_length: Option<u64>,
    /// Quality, 0 (fastest) to 11 (smallest); default 4.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 11))]
    pub level: Option<u32>,
    /// Add `Vary: Accept-Encoding` (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vary: Option<bool>,
}
