//! The Kubernetes Gateway API (`gateway.networking.k8s.io`), as far as
//! Sluicegate reads and writes it: GatewayClass, Gateway, HTTPRoute and
//! GRPCRoute of version `v1`, and ReferenceGrant of `v1beta1`.
//!
//! These are hand-written rather than taken from a bindings crate: the
//! maintained ones are built against other major versions of `kube` and
//! `k8s-openapi`, which would put a second copy of both into the build.
//! They are a reader's view of the standard channel, not a schema: no CRD
//! is generated from them (clusters install the upstream CRDs), unknown
//! fields are ignored, and every enumeration is kept as text, so that a
//! value added by a newer release of the API is reported as unsupported
//! by translation instead of making the whole object unreadable.
//!
//! Defaults are those of the upstream CRDs, applied by serde: the API
//! server fills them in Kubernetes mode, standalone manifests get the same
//! values here.

mod gateway;
mod grpcroute;
mod httproute;
mod referencegrant;

pub use gateway::*;
pub use grpcroute::*;
pub use httproute::*;
pub use referencegrant::*;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use serde::{Deserialize, Serialize};

/// The API group of the Gateway API.
pub const GROUP: &str = "gateway.networking.k8s.io";
/// The `controllerName` of GatewayClasses Sluicegate serves.
pub const CONTROLLER_NAME: &str = "sluicegate.io/gateway-controller";

pub(crate) fn group() -> String {
    GROUP.to_owned()
}

fn gateway_kind() -> String {
    "Gateway".to_owned()
}

fn service_kind() -> String {
    "Service".to_owned()
}

fn secret_kind() -> String {
    "Secret".to_owned()
}

fn exact() -> String {
    "Exact".to_owned()
}

fn one() -> i32 {
    1
}

/// A reference from a route to its parent: a Gateway, or one listener of
/// it by `sectionName` or `port`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "camelCase")]
pub struct ParentReference {
    #[serde(default = "group")]
    pub group: String,
    #[serde(default = "gateway_kind")]
    pub kind: String,
    /// The route's own namespace when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub section_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i32>,
}

/// A backend of a route rule: a Service port, with a weight.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BackendRef {
    /// `""` is the core group.
    #[serde(default)]
    pub group: String,
    #[serde(default = "service_kind")]
    pub kind: String,
    pub name: String,
    /// The route's own namespace when absent; another one needs a
    /// ReferenceGrant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i32>,
    #[serde(default = "one")]
    pub weight: i32,
    /// Filters for requests sent to this backend only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<HttpRouteFilter>,
}

/// A backend named without a weight (a mirror's target).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BackendObjectReference {
    #[serde(default)]
    pub group: String,
    #[serde(default = "service_kind")]
    pub kind: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i32>,
}

/// An object in the same namespace, by group, kind and name (an
/// `extensionRef`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LocalObjectReference {
    pub group: String,
    pub kind: String,
    pub name: String,
}

/// A header name and value.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct HttpHeader {
    pub name: String,
    pub value: String,
}

/// `RequestHeaderModifier` and `ResponseHeaderModifier`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct HttpHeaderFilter {
    #[serde(default)]
    pub set: Vec<HttpHeader>,
    #[serde(default)]
    pub add: Vec<HttpHeader>,
    #[serde(default)]
    pub remove: Vec<String>,
}

/// A header condition of a match.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HeaderMatch {
    /// `Exact` or `RegularExpression`.
    #[serde(rename = "type", default = "exact")]
    pub kind: String,
    pub name: String,
    pub value: String,
}

/// `RequestMirror`: a copy of each request goes to another backend.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HttpRequestMirrorFilter {
    pub backend_ref: BackendObjectReference,
    /// Share of requests mirrored, in percent (all when neither this nor
    /// `fraction` is set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fraction: Option<Fraction>,
}

/// `numerator / denominator` of requests.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Fraction {
    pub numerator: i32,
    #[serde(default = "hundred")]
    pub denominator: i32,
}

fn hundred() -> i32 {
    100
}

/// Status of a route: one entry per parent, per controller.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct RouteStatus {
    #[serde(default)]
    pub parents: Vec<RouteParentStatus>,
}

/// How one parent sees a route.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RouteParentStatus {
    pub parent_ref: ParentReference,
    pub controller_name: String,
    #[serde(default)]
    pub conditions: Vec<Condition>,
}

/// A route kind, as listeners allow and list them.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RouteGroupKind {
    #[serde(default = "group")]
    pub group: String,
    pub kind: String,
}
