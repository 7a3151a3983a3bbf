//! Resolving a Service port to the ready endpoints behind it.
//!
//! A backend names a Service port by number or by name. The Service gives
//! that port's name; each EndpointSlice of the Service lists, under the same
//! port name, the target port number valid for the endpoints of that slice
//! (slices may differ during a rollout that changes a named targetPort).
//! Only endpoints whose `ready` condition is not false receive traffic.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};

use k8s_openapi::api::core::v1::{Service, ServicePort};
use k8s_openapi::api::discovery::v1::EndpointSlice;

use super::state::{ClusterState, ObjectKey};
use crate::api::PortRef;
use crate::routing::{UpstreamKey, UpstreamSpec};

/// The label that ties an EndpointSlice to its Service.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Why a backend has no endpoints, for the diagnostic.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BackendError {
    #[error("Service {namespace}/{name} not found")]
    ServiceNotFound { namespace: String, name: String },
    #[error("Service {namespace}/{name} has no TCP port {port}")]
    PortNotFound {
        namespace: String,
        name: String,
        port: String,
    },
    #[error("Service {namespace}/{name} is of type ExternalName, which is not supported yet")]
    ExternalName { namespace: String, name: String },
}

/// Resolves backends against the Services and EndpointSlices of a state,
/// and accumulates the upstreams that the resolved routes use.
pub struct BackendResolver<'a> {
    state: &'a ClusterState,
    slices: HashMap<(&'a str, &'a str), Vec<&'a EndpointSlice>>,
    upstreams: BTreeMap<UpstreamKey, UpstreamSpec>,
}

impl<'a> BackendResolver<'a> {
    pub fn new(state: &'a ClusterState) -> Self {
        let mut slices: HashMap<(&str, &str), Vec<&EndpointSlice>> = HashMap::new();
        for (key, slice) in &state.endpoint_slices {
            let service = slice
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(SERVICE_NAME_LABEL));
            if let Some(service) = service {
                slices
                    .entry((key.namespace.as_str(), service.as_str()))
                    .or_default()
                    .push(slice);
            }
        }
        BackendResolver {
            state,
            slices,
            upstreams: BTreeMap::new(),
        }
    }

    /// Resolves one backend. The returned key is always usable: when the
    /// Service or port is missing it names an upstream without endpoints,
    /// so the route answers 503 until the Service appears.
    pub fn resolve(
        &mut self,
        namespace: &str,
        service: &str,
        port: &PortRef,
    ) -> (UpstreamKey, Option<BackendError>) {
        let found = self
            .state
            .services
            .get(&ObjectKey::new(namespace, service))
            .ok_or_else(|| BackendError::ServiceNotFound {
                namespace: namespace.to_owned(),
                name: service.to_owned(),
            })
            .and_then(|svc| self.service_port(namespace, service, svc, port));
        match found {
            Ok(sp) => {
                let key = UpstreamKey::new(namespace, service, sp.port);
                if !self.upstreams.contains_key(&key) {
                    let endpoints =
                        self.endpoints(namespace, service, sp.name.as_deref().unwrap_or(""));
                    self.upstreams
                        .insert(key.clone(), UpstreamSpec { endpoints });
                }
                (key, None)
            }
            Err(e) => {
                let key = UpstreamKey::new(namespace, service, port);
                self.upstreams.entry(key.clone()).or_default();
                (key, Some(e))
            }
        }
    }

    fn service_port(
        &self,
        namespace: &str,
        name: &str,
        svc: &'a Service,
        port: &PortRef,
    ) -> Result<&'a ServicePort, BackendError> {
        let spec = svc.spec.as_ref();
        if spec.and_then(|s| s.type_.as_deref()) == Some("ExternalName") {
            return Err(BackendError::ExternalName {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
            });
        }
        spec.and_then(|s| s.ports.as_ref())
            .into_iter()
            .flatten()
            .find(|p| match port {
                PortRef::Number(n) => p.port == i32::from(*n),
                PortRef::Name(n) => p.name.as_deref() == Some(n.as_str()),
            })
            .filter(|p| p.protocol.as_deref().unwrap_or("TCP") == "TCP")
            .ok_or_else(|| BackendError::PortNotFound {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
                port: port.to_string(),
            })
    }

    fn endpoints(&self, namespace: &str, service: &str, port_name: &str) -> Vec<SocketAddr> {
        let mut out = BTreeSet::new();
        for slice in self.slices.get(&(namespace, service)).into_iter().flatten() {
            if !matches!(slice.address_type.as_str(), "IPv4" | "IPv6") {
                continue;
            }
            let port = slice.ports.iter().flatten().find(|p| {
                p.name.as_deref().unwrap_or("") == port_name
                    && p.protocol.as_deref().unwrap_or("TCP") == "TCP"
            });
            let Some(port) = port
                .and_then(|p| p.port)
                .and_then(|p| u16::try_from(p).ok())
            else {
                continue;
            };
            for ep in &slice.endpoints {
                let ready = ep.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
                if !ready {
                    continue;
                }
                // Consumers use the first address only, per the EndpointSlice API.
                if let Some(ip) = ep.addresses.first().and_then(|a| a.parse::<IpAddr>().ok()) {
                    out.insert(SocketAddr::new(ip, port));
                }
            }
        }
        out.into_iter().collect()
    }

    /// The upstreams resolved so far.
    pub fn finish(self) -> BTreeMap<UpstreamKey, UpstreamSpec> {
        self.upstreams
    }
}
