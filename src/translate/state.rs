//! The objects translation reads, as collected by a source.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Namespace, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use kube::Resource;

use crate::api::gateway_api::{Gateway, GatewayClass, GrpcRoute, HttpRoute, ReferenceGrant};
use crate::api::{ApiRoute, PluginConfig};

/// Namespace and name. Cluster-scoped objects use an empty namespace.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    pub namespace: String,
    pub name: String,
}

impl ObjectKey {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        ObjectKey {
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    /// The key of a Kubernetes object; a missing namespace reads as empty.
    pub fn of<K: Resource>(obj: &K) -> Self {
        let meta = obj.meta();
        ObjectKey::new(
            meta.namespace.clone().unwrap_or_default(),
            meta.name.clone().unwrap_or_default(),
        )
    }
}

/// Objects of one kind, ordered by namespace and name so that translation
/// is deterministic.
pub type Store<K> = BTreeMap<ObjectKey, Arc<K>>;

/// Every object translation may read. Sources fill it; translation never
/// modifies it.
#[derive(Clone, Debug, Default)]
pub struct ClusterState {
    pub ingresses: Store<Ingress>,
    pub ingress_classes: Store<IngressClass>,
    pub services: Store<Service>,
    pub endpoint_slices: Store<EndpointSlice>,
    pub secrets: Store<Secret>,
    pub api_routes: Store<ApiRoute>,
    pub plugin_configs: Store<PluginConfig>,
    pub gateway_classes: Store<GatewayClass>,
    pub gateways: Store<Gateway>,
    pub http_routes: Store<HttpRoute>,
    pub grpc_routes: Store<GrpcRoute>,
    pub reference_grants: Store<ReferenceGrant>,
    /// Namespaces, for their labels (Gateway listeners select route
    /// namespaces by label). A namespace without an object here still has
    /// its `kubernetes.io/metadata.name` label.
    pub namespaces: Store<Namespace>,
}

impl ClusterState {
    /// Number of objects of every kind together.
    pub fn len(&self) -> usize {
        self.ingresses.len()
            + self.ingress_classes.len()
            + self.services.len()
            + self.endpoint_slices.len()
            + self.secrets.len()
            + self.api_routes.len()
            + self.plugin_configs.len()
            + self.gateway_classes.len()
            + self.gateways.len()
            + self.http_routes.len()
            + self.grpc_routes.len()
            + self.reference_grants.len()
            + self.namespaces.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
