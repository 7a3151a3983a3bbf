//! What translation concludes about each Gateway API object, in the
//! Gateway API's own terms: the conditions of GatewayClasses, Gateways and
//! their listeners, and of every route towards each of its parents.
//!
//! This is plain data, computed without a clock and without knowing what
//! the objects carry: the status writer turns it into `status` (with
//! `observedGeneration` and transition times), and adds what only the
//! running proxy knows (whether a listener's port could be opened) and the
//! Gateway's addresses.

use serde::{Serialize, Serializer};

use crate::api::gateway_api::ParentReference;
use crate::translate::Kind;

/// Condition types and reasons of the Gateway API.
pub mod names {
    pub const ACCEPTED: &str = "Accepted";
    pub const PROGRAMMED: &str = "Programmed";
    pub const RESOLVED_REFS: &str = "ResolvedRefs";
    pub const CONFLICTED: &str = "Conflicted";
    pub const OVERLAPPING_TLS_CONFIG: &str = "OverlappingTLSConfig";
    pub const PARTIALLY_INVALID: &str = "PartiallyInvalid";

    pub const INVALID: &str = "Invalid";
    pub const INVALID_PARAMETERS: &str = "InvalidParameters";
    pub const UNSUPPORTED_ADDRESS: &str = "UnsupportedAddress";
    pub const LISTENERS_NOT_VALID: &str = "ListenersNotValid";
    pub const NO_CONFLICTS: &str = "NoConflicts";
    pub const HOSTNAME_CONFLICT: &str = "HostnameConflict";
    pub const PROTOCOL_CONFLICT: &str = "ProtocolConflict";
    pub const OVERLAPPING_HOSTNAMES: &str = "OverlappingHostnames";
    pub const UNSUPPORTED_PROTOCOL: &str = "UnsupportedProtocol";
    pub const UNSUPPORTED_VALUE: &str = "UnsupportedValue";
    pub const PORT_UNAVAILABLE: &str = "PortUnavailable";
    pub const INVALID_CERTIFICATE_REF: &str = "InvalidCertificateRef";
    pub const INVALID_ROUTE_KINDS: &str = "InvalidRouteKinds";
    pub const REF_NOT_PERMITTED: &str = "RefNotPermitted";
    pub const INVALID_KIND: &str = "InvalidKind";
    pub const BACKEND_NOT_FOUND: &str = "BackendNotFound";
    pub const NOT_ALLOWED_BY_LISTENERS: &str = "NotAllowedByListeners";
    pub const NO_MATCHING_LISTENER_HOSTNAME: &str = "NoMatchingListenerHostname";
    pub const NO_MATCHING_PARENT: &str = "NoMatchingParent";
    pub const INCOMPATIBLE_FILTERS: &str = "IncompatibleFilters";
    /// An `ExtensionRef` names a PluginConfig that does not exist or cannot
    /// be used (the Gateway API lets implementations add reasons).
    pub const PLUGIN_CONFIG_NOT_FOUND: &str = "PluginConfigNotFound";
}

/// One condition, without time or generation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Cond {
    #[serde(rename = "type")]
    pub kind: &'static str,
    #[serde(serialize_with = "true_false")]
    pub status: bool,
    pub reason: &'static str,
    pub message: String,
}

impl Cond {
    pub fn new(
        kind: &'static str,
        status: bool,
        reason: &'static str,
        message: impl Into<String>,
    ) -> Self {
        Cond {
            kind,
            status,
            reason,
            message: message.into(),
        }
    }

    /// The Kubernetes text of the status.
    pub fn status_text(&self) -> &'static str {
        if self.status { "True" } else { "False" }
    }
}

fn true_false<S: Serializer>(v: &bool, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(if *v { "True" } else { "False" })
}

/// Everything concluded about the Gateway API objects of one translation.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GatewayApiStatus {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub gateway_classes: Vec<ClassState>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub gateways: Vec<GatewayState>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<RouteState>,
}

impl GatewayApiStatus {
    pub fn is_empty(&self) -> bool {
        self.gateway_classes.is_empty() && self.gateways.is_empty() && self.routes.is_empty()
    }
}

/// A GatewayClass whose controller is Sluicegate.
#[derive(Clone, Debug, Serialize)]
pub struct ClassState {
    pub name: String,
    pub conditions: Vec<Cond>,
}

/// A Gateway of one of those classes.
#[derive(Clone, Debug, Serialize)]
pub struct GatewayState {
    pub namespace: String,
    pub name: String,
    pub conditions: Vec<Cond>,
    pub listeners: Vec<ListenerState>,
}

/// One listener of a Gateway.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ListenerState {
    pub name: String,
    pub port: u16,
    pub supported_kinds: Vec<&'static str>,
    pub attached_routes: i32,
    pub conditions: Vec<Cond>,
    /// Whether the listener is in the table, and so needs its port open.
    #[serde(skip)]
    pub programmed: bool,
}

/// A route, as each of Sluicegate's Gateways it names sees it.
#[derive(Clone, Debug, Serialize)]
pub struct RouteState {
    pub kind: Kind,
    pub namespace: String,
    pub name: String,
    pub parents: Vec<ParentState>,
}

/// A route towards one of its parents.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ParentState {
    pub parent_ref: ParentReference,
    pub conditions: Vec<Cond>,
}
