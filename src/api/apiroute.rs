//! The `ApiRoute` custom resource: hosts, ordered routes, weighted backends.
//!
//! Field names are part of the public contract; new capabilities are added
//! as new optional fields, never by renaming.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::common::{Duration, LocalObjectRef, PortRef};
use super::plugins::Plugins;
use super::upstream::{HealthCheck, LoadBalancerConfig, Retries, SessionAffinity};

/// Routes HTTP traffic for a set of hosts to Services.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "sluicegate.io",
    version = "v1alpha1",
    kind = "ApiRoute",
    namespaced,
    status = "ApiRouteStatus",
    // `ar` would clash with Apache APISIX's ApisixRoute and Argo Rollouts'
    // AnalysisRun; the product prefix keeps short names unambiguous.
    shortname = "sgar",
    category = "sluicegate",
    doc = "ApiRoute routes HTTP traffic for a set of hosts to Kubernetes Services.",
    printcolumn = r#"{"name":"Hosts","type":"string","description":"Host names served; empty means any host.","jsonPath":".spec.hosts"}"#,
    printcolumn = r#"{"name":"Accepted","type":"string","description":"The object is valid and claimed by this controller.","jsonPath":".status.conditions[?(@.type==\"Accepted\")].status"}"#,
    printcolumn = r#"{"name":"Programmed","type":"string","description":"Its routes are in the table the proxies serve.","jsonPath":".status.conditions[?(@.type==\"Programmed\")].status"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","description":"Accepted and programmed.","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ApiRouteSpec {
    /// IngressClass that should serve this route. Empty means the
    /// controller's own class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub ingress_class_name: Option<String>,
    /// Host names this object serves: exact (`shop.example.com`) or a
    /// single-label wildcard (`*.example.com`). Empty means any host.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 64),
        inner(
            length(min = 1, max = 253),
            regex(
                pattern = r"^(\*\.)?[a-zA-Z0-9]([-a-zA-Z0-9]*[a-zA-Z0-9])?(\.[a-zA-Z0-9]([-a-zA-Z0-9]*[a-zA-Z0-9])?)*$"
            )
        )
    )]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub hosts: Vec<String>,
    /// Routes, tried by priority and then by match specificity. Names are
    /// unique: the list is keyed by `name`.
    #[schemars(length(min = 1, max = 256))]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub routes: Vec<RouteRule>,
    /// Serve `hosts` over HTTPS with the certificate of a Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ApiRouteTls>,
}

/// The certificate of an ApiRoute's hosts.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ApiRouteTls {
    /// A `kubernetes.io/tls` Secret in the ApiRoute's namespace.
    #[schemars(length(min = 1, max = 253))]
    pub secret_name: String,
    /// Ask clients of `hosts` for a certificate (mutual TLS). The verified
    /// subject reaches the upstream in `ssl-client-subject-dn`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_auth: Option<ClientAuthentication>,
}

/// Client certificate authentication.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClientAuthentication {
    /// A Secret in this namespace whose `ca.crt` verifies client
    /// certificates.
    pub ca_secret_ref: LocalObjectRef,
    /// Let clients without a certificate through, marked
    /// `ssl-client-verify: NONE` for the upstream. A certificate that fails
    /// verification is refused either way.
    #[serde(default, skip_serializing_if = "is_false")]
    pub optional: bool,
}

/// One route: what it matches and where matching requests go.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = Rule::new("(has(self.backends) && size(self.backends) > 0) || has(self.pluginConfigRef) || (has(self.plugins) && has(self.plugins.aiProxy))").message("backends are required unless the route's plugins have aiProxy"))]
pub struct RouteRule {
    /// Name, unique within the ApiRoute; used in metrics and status.
    #[schemars(length(min = 1, max = 63))]
    pub name: String,
    /// Higher priorities are tried first among routes of the same host.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub priority: i32,
    /// Conditions a request must meet; an empty match takes every request.
    #[serde(
        default,
        rename = "match",
        skip_serializing_if = "RouteMatch::is_empty"
    )]
    pub matches: RouteMatch,
    /// Services that receive the matching traffic, split by weight.
    /// Required, unless the route's plugins have `aiProxy`, which answers
    /// from LLM providers instead.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub backends: Vec<Backend>,
    /// Upstream timeouts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<Timeouts>,
    /// Allow WebSocket upgrades on this route.
    #[serde(default, skip_serializing_if = "is_false")]
    pub websocket: bool,
    /// How an endpoint is chosen; round robin by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_balancer: Option<LoadBalancerConfig>,
    /// Keep a client on the endpoint that served it first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_affinity: Option<SessionAffinity>,
    /// Retries on other endpoints. By default a connect failure is tried
    /// once more elsewhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<Retries>,
    /// Active and passive health checks of the backends' endpoints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheck>,
    /// Answer plain-HTTP requests with a redirect (308) to the same URL
    /// over HTTPS. Defaults to true when the ApiRoute has `tls`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub https_redirect: Option<bool>,
    /// Redirect plain-HTTP requests to HTTPS with a chosen status code;
    /// takes precedence over `httpsRedirect`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect: Option<Redirect>,
    /// A PluginConfig in the same namespace whose plugins apply to this
    /// route; plugins set inline on the route override it per plugin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugin_config_ref: Option<LocalObjectRef>,
    /// Plugins applied to this route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugins: Option<Plugins>,
}

/// A redirect of plain-HTTP requests.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Redirect {
    /// The scheme to redirect to.
    pub scheme: RedirectScheme,
    /// 301 or 308 (the default; keeps the method and body), or 302 / 307.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = [301, 302, 307, 308]))]
    pub code: Option<u16>,
}

/// Schemes a route redirects to.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RedirectScheme {
    Https,
}

/// Request conditions; all present conditions must hold.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteMatch {
    /// Any one of these paths matches. Empty means prefix `/`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub paths: Vec<PathMatch>,
    /// Any one of these methods matches. Empty means every method but
    /// TRACE, which reaches only a route that names it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 9))]
    pub methods: Vec<HttpMethod>,
    /// Every header condition must hold.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub headers: Vec<HeaderMatch>,
    /// Every query parameter condition must hold.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub query_params: Vec<ValueMatch>,
    /// Every cookie condition must hold; cookies are read from the
    /// `Cookie` request headers, names compare case-sensitively.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub cookies: Vec<CookieMatch>,
}

impl RouteMatch {
    fn is_empty(&self) -> bool {
        self.paths.is_empty()
            && self.methods.is_empty()
            && self.headers.is_empty()
            && self.query_params.is_empty()
            && self.cookies.is_empty()
    }
}

/// How a path is compared.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema,
)]
pub enum PathMatchType {
    /// The whole path equals the value.
    Exact,
    /// The path starts with the value, element by element (`/api`
    /// matches `/api` and `/api/v1`, not `/apix`).
    #[default]
    Prefix,
    /// The value is a regular expression that must match the whole path.
    RegularExpression,
}

/// A path condition.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(deny_unknown_fields)]
#[x_kube(validation = Rule::new("self.type == 'RegularExpression' || self.value.startsWith('/')").message("path value must start with '/'"))]
pub struct PathMatch {
    /// Exact, Prefix (default) or RegularExpression.
    #[serde(rename = "type", default)]
    pub kind: PathMatchType,
    /// The path or pattern.
    #[schemars(length(min = 1, max = 1024))]
    pub value: String,
}

/// How a header, query parameter or cookie value is compared.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema,
)]
pub enum ValueMatchType {
    /// The value equals `value`.
    #[default]
    Exact,
    /// The value matches the regular expression `value` as a whole.
    RegularExpression,
    /// The header, parameter or cookie is present, whatever its value.
    Present,
}

/// A header condition; names are case-insensitive.
pub type HeaderMatch = ValueMatch;

/// A cookie condition; names are case-sensitive.
pub type CookieMatch = ValueMatch;

/// A named value condition, for headers, query parameters and cookies.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(deny_unknown_fields)]
#[x_kube(validation = Rule::new("self.type == 'Present' || has(self.value)").message("value is required unless type is Present"))]
pub struct ValueMatch {
    /// Header, query parameter or cookie name.
    #[schemars(length(min = 1, max = 256))]
    pub name: String,
    /// Exact (default), RegularExpression or Present.
    #[serde(rename = "type", default)]
    pub kind: ValueMatchType,
    /// The value or pattern; not used with Present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 4096))]
    pub value: Option<String>,
}

/// HTTP request methods a route can be limited to.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, schemars::JsonSchema)]
#[allow(clippy::upper_case_acronyms)]
pub enum HttpMethod {
    GET,
    HEAD,
    POST,
    PUT,
    DELETE,
    PATCH,
    OPTIONS,
    CONNECT,
    TRACE,
}

/// A Service, or a host outside the cluster, receiving a share of a
/// route's traffic.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = Rule::new("!has(self.tls) || !has(self.protocol) || self.protocol == 'HTTPS' || self.protocol == 'GRPCS'").message("tls applies only to protocol HTTPS or GRPCS"))]
#[x_kube(validation = Rule::new("has(self.serviceName) != has(self.host)").message("set exactly one of serviceName and host"))]
#[x_kube(validation = Rule::new("!has(self.host) || type(self.servicePort) == int").message("with host, servicePort must be a port number"))]
pub struct Backend {
    /// Service name in the ApiRoute's namespace. An ExternalName Service
    /// sends traffic to the addresses its `externalName` resolves to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub service_name: Option<String>,
    /// A host outside the cluster, by DNS name or IP address, instead of
    /// a Service: traffic goes to the addresses the name resolves to, on
    /// `servicePort`. The name is resolved again when its DNS records'
    /// TTL expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub host: Option<String>,
    /// Service port, by number or by name; a number with `host`.
    pub service_port: PortRef,
    /// Relative share of traffic; 0 sends none.
    #[serde(default = "default_weight")]
    #[schemars(range(max = 1000000))]
    pub weight: u32,
    /// How to speak to the backend. Defaults to the Service port's
    /// `appProtocol` (`kubernetes.io/h2c`, `https`, `grpc`, ...), else
    /// HTTP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<BackendProtocol>,
    /// TLS towards the backend, for protocols HTTPS and GRPCS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<BackendTls>,
}

/// Wire protocols towards a backend.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[allow(clippy::upper_case_acronyms)]
pub enum BackendProtocol {
    /// HTTP/1.1 without TLS.
    HTTP,
    /// TLS; HTTP/2 when the backend selects it by ALPN, else HTTP/1.1.
    HTTPS,
    /// HTTP/2 without TLS (prior knowledge).
    H2C,
    /// gRPC: HTTP/2 without TLS.
    GRPC,
    /// gRPC over TLS.
    GRPCS,
}

/// TLS settings towards a backend.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BackendTls {
    /// A Secret in this namespace whose `ca.crt` verifies the backend's
    /// certificate. Without it the connection is encrypted but the backend
    /// is not authenticated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_secret_ref: Option<LocalObjectRef>,
    /// Server name sent as SNI and verified against the certificate.
    /// Defaults to `<service>.<namespace>.svc`, or for an ExternalName
    /// Service or a `host` backend to the name it resolves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub sni: Option<String>,
    /// A Secret in this namespace whose `tls.crt` and `tls.key` the proxy
    /// presents to the backend (mutual TLS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_certificate_secret_ref: Option<LocalObjectRef>,
}

fn default_weight() -> u32 {
    1
}

/// Upstream timeouts. A connect timeout or a request timeout answers 504.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Timeouts {
    /// Time to open a TCP connection to an endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect: Option<Duration>,
    /// Time from sending the request until the response headers arrive,
    /// retries included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<Duration>,
    /// Longest wait for the next bytes of the response body; none by
    /// default, so that long streams are not cut.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle: Option<Duration>,
    /// Longest time the response may make no progress towards a client
    /// that does not read it; then the client's and the upstream's
    /// connections close. The gateway's `--send-timeout` by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send: Option<Duration>,
}

/// Observed state, written by the controller.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApiRouteStatus {
    /// The generation the conditions describe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Accepted`, `Programmed` and `Ready`, each with the generation it
    /// describes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "super::schema::conditions")]
    pub conditions: Vec<Condition>,
}

fn is_zero(v: &i32) -> bool {
    *v == 0
}

fn is_false(v: &bool) -> bool {
    !*v
}
