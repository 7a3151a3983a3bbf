//! Resolving a Service port to the ready endpoints behind it.
//!
//! A backend names a Service port by number or by name. The Service gives
//! that port's name; each EndpointSlice of the Service lists, under the same
//! port name, the target port number valid for the endpoints of that slice
//! (slices may differ during a rollout that changes a named targetPort).
//! Only endpoints whose `ready` condition is not false receive traffic.
//!
//! An ExternalName Service has no endpoints of its own: its upstream is
//! named after its `externalName` and the port the backend gives (a named
//! port is looked up in the Service's `ports`), and the DNS resolver
//! supplies the addresses. An IP address as `externalName` is the endpoint
//! itself. ApiRoute backends that name a `host` work the same way.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use foldhash::{HashMap, HashMapExt};
use k8s_openapi::api::core::v1::{Service, ServicePort};
use k8s_openapi::api::discovery::v1::EndpointSlice;

use super::state::{ClusterState, ObjectKey};
use super::validate::{self, UpstreamHost};
use crate::api::PortRef;
use crate::routing::{DnsTarget, HealthSpec, UpstreamKey, UpstreamSpec};

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
    #[error("Service {namespace}/{name} has an invalid externalName: {reason}")]
    InvalidExternalName {
        namespace: String,
        name: String,
        reason: String,
    },
}

/// A resolved backend.
#[derive(Debug)]
pub struct Resolved<'a> {
    /// Always usable: when the Service or port is missing it names an
    /// upstream without endpoints, so the route answers 503 until the
    /// Service appears.
    pub upstream: UpstreamKey,
    pub error: Option<BackendError>,
    /// The Service port's `appProtocol`.
    pub app_protocol: Option<&'a str>,
    /// For an ExternalName Service, the host it names: the TLS server name
    /// unless the object sets one.
    pub external_host: Option<String>,
}

/// A Service and the EndpointSlices labelled for it.
#[derive(Clone, Copy, Default)]
struct ServiceEntry<'a> {
    service: Option<&'a Service>,
    /// The first of its slices in [`BackendResolver::slices`].
    first_slice: Option<u32>,
}

/// Resolves backends against the Services and EndpointSlices of a state,
/// and accumulates the upstreams that the resolved routes use.
///
/// Lookups go through one hash index by borrowed namespace and name, built
/// once per translation: searching the state's ordered stores needs an
/// owned key per lookup, and string comparisons all the way down.
pub struct BackendResolver<'a> {
    services: HashMap<(&'a str, &'a str), ServiceEntry<'a>>,
    /// Every slice that names its Service, with the next slice of the same
    /// Service: a list per Service without an allocation per Service.
    slices: Vec<(&'a EndpointSlice, Option<u32>)>,
    /// Upstreams in the order they were first resolved; `index` finds them
    /// by key text.
    upstreams: Vec<(UpstreamKey, UpstreamSpec)>,
    index: HashMap<UpstreamKey, usize>,
    /// The object that set each upstream's health settings, by index.
    health_owners: HashMap<usize, String>,
    /// Reused to write the text of a key before knowing whether it is new.
    key_text: String,
}

impl<'a> BackendResolver<'a> {
    pub fn new(state: &'a ClusterState) -> Self {
        let mut resolver = BackendResolver {
            services: HashMap::with_capacity(state.services.len()),
            slices: Vec::with_capacity(state.endpoint_slices.len()),
            upstreams: Vec::with_capacity(state.services.len()),
            index: HashMap::with_capacity(state.services.len()),
            health_owners: HashMap::new(),
            key_text: String::new(),
        };
        // Slices are usually named after their Service, so both stores in
        // key order, taken at the same pace, meet a slice soon after its
        // Service, while the Service's entry is still in cache. The result
        // does not depend on the order.
        let (n_services, n_slices) = (state.services.len(), state.endpoint_slices.len());
        let mut slices = state.endpoint_slices.iter();
        let mut taken = 0;
        for (i, (key, svc)) in state.services.iter().enumerate() {
            resolver
                .services
                .entry((key.namespace.as_str(), key.name.as_str()))
                .or_default()
                .service = Some(svc.as_ref());
            let due = (i + 1).saturating_mul(n_slices) / n_services;
            while taken < due {
                taken += 1;
                if let Some((key, slice)) = slices.next() {
                    resolver.add_slice(key, slice);
                }
            }
        }
        slices.for_each(|(key, slice)| resolver.add_slice(key, slice));
        resolver
    }

    /// Lists `slice` under the Service its label names, if any.
    fn add_slice(&mut self, key: &'a ObjectKey, slice: &'a EndpointSlice) {
        let service = slice
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(SERVICE_NAME_LABEL));
        let (Some(service), Ok(n)) = (service, u32::try_from(self.slices.len())) else {
            return;
        };
        let entry = self
            .services
            .entry((key.namespace.as_str(), service.as_str()))
            .or_default();
        self.slices.push((slice, entry.first_slice));
        entry.first_slice = Some(n);
    }

    /// Resolves one backend: Service `service` in `namespace`, at `port`.
    pub fn resolve(&mut self, namespace: &str, service: &str, port: &PortRef) -> Resolved<'a> {
        let entry = self
            .services
            .get(&(namespace, service))
            .copied()
            .unwrap_or_default();
        let Some(svc) = entry.service else {
            let e = BackendError::ServiceNotFound {
                namespace: namespace.to_owned(),
                name: service.to_owned(),
            };
            return self.unresolved(namespace, service, port, e);
        };
        if let Some(external) = external_name(svc) {
            return self.resolve_external_name(namespace, service, svc, external, port);
        }
        match service_port(namespace, service, svc, port) {
            Ok(sp) => {
                UpstreamKey::write_text(&mut self.key_text, namespace, service, sp.port);
                let upstream = self.existing().unwrap_or_else(|| {
                    let port_name = sp.name.as_deref().unwrap_or("");
                    let (endpoints, terminating) =
                        endpoints(&self.slices, entry.first_slice, port_name);
                    self.add(UpstreamSpec {
                        endpoints,
                        terminating,
                        ..UpstreamSpec::default()
                    })
                });
                Resolved {
                    upstream,
                    error: None,
                    app_protocol: sp.app_protocol.as_deref(),
                    external_host: None,
                }
            }
            Err(e) => self.unresolved(namespace, service, port, e),
        }
    }

    /// Resolves a backend naming a host outside the cluster directly, from
    /// an object in `namespace`.
    pub fn resolve_host(&mut self, namespace: &str, host: &UpstreamHost, port: u16) -> UpstreamKey {
        self.external(namespace, "", host, port)
    }

    /// An ExternalName Service: the port is the backend's number, or the
    /// number of the Service port it names.
    fn resolve_external_name(
        &mut self,
        namespace: &str,
        service: &str,
        svc: &'a Service,
        external: &str,
        port: &PortRef,
    ) -> Resolved<'a> {
        let host = match validate::upstream_host(external) {
            Ok(h) => h,
            Err(reason) => {
                let e = BackendError::InvalidExternalName {
                    namespace: namespace.to_owned(),
                    name: service.to_owned(),
                    reason,
                };
                return self.unresolved(namespace, service, port, e);
            }
        };
        let listed = svc
            .spec
            .as_ref()
            .and_then(|s| s.ports.as_ref())
            .into_iter()
            .flatten()
            .filter(|p| p.protocol.as_deref().unwrap_or("TCP") == "TCP")
            .find(|p| match port {
                PortRef::Number(n) => p.port == i32::from(*n),
                PortRef::Name(n) => p.name.as_deref() == Some(n.as_str()),
            });
        let number = match (port, listed) {
            (PortRef::Number(n), _) => *n,
            (PortRef::Name(_), Some(p)) => match u16::try_from(p.port) {
                Ok(n) if n > 0 => n,
                _ => return self.port_not_found(namespace, service, port),
            },
            (PortRef::Name(_), None) => return self.port_not_found(namespace, service, port),
        };
        let upstream = self.external(namespace, service, &host, number);
        Resolved {
            upstream,
            error: None,
            app_protocol: listed.and_then(|p| p.app_protocol.as_deref()),
            external_host: Some(host.text()),
        }
    }

    /// The upstream of `host` at `port`, for `service` (empty for a host
    /// backend) in `namespace`.
    fn external(
        &mut self,
        namespace: &str,
        service: &str,
        host: &UpstreamHost,
        port: u16,
    ) -> UpstreamKey {
        let text = host.text();
        UpstreamKey::write_external_text(&mut self.key_text, namespace, service, port, &text);
        self.existing().unwrap_or_else(|| {
            let spec = match host {
                UpstreamHost::Ip(ip) => UpstreamSpec::ready(vec![SocketAddr::new(*ip, port)]),
                UpstreamHost::Name(_) => UpstreamSpec {
                    dns: Some(DnsTarget {
                        name: text.into(),
                        port,
                    }),
                    ..UpstreamSpec::default()
                },
            };
            self.add(spec)
        })
    }

    fn port_not_found(&mut self, namespace: &str, service: &str, port: &PortRef) -> Resolved<'a> {
        let e = BackendError::PortNotFound {
            namespace: namespace.to_owned(),
            name: service.to_owned(),
            port: port.to_string(),
        };
        self.unresolved(namespace, service, port, e)
    }

    /// A backend that could not be resolved: an upstream without
    /// endpoints, keyed by the Service and port as written.
    fn unresolved(
        &mut self,
        namespace: &str,
        service: &str,
        port: &PortRef,
        error: BackendError,
    ) -> Resolved<'a> {
        UpstreamKey::write_text(&mut self.key_text, namespace, service, port);
        let upstream = self
            .existing()
            .unwrap_or_else(|| self.add(UpstreamSpec::default()));
        Resolved {
            upstream,
            error: Some(error),
            app_protocol: None,
            external_host: None,
        }
    }

    /// Sets an upstream's health settings on behalf of `owner`. Fails with
    /// the earlier owner when another object already set different ones.
    pub fn set_health(
        &mut self,
        key: &UpstreamKey,
        health: &HealthSpec,
        owner: String,
    ) -> Result<(), String> {
        let Some(&i) = self.index.get(key) else {
            return Ok(());
        };
        let spec = &mut self.upstreams[i].1;
        match self.health_owners.get(&i) {
            Some(_) if spec.health == *health => Ok(()),
            Some(earlier) => Err(earlier.clone()),
            None => {
                spec.health = health.clone();
                self.health_owners.insert(i, owner);
                Ok(())
            }
        }
    }

    /// The upstream whose key text is in `key_text`, if already resolved.
    fn existing(&self) -> Option<UpstreamKey> {
        let &i = self.index.get(self.key_text.as_str())?;
        self.upstreams.get(i).map(|(k, _)| k.clone())
    }

    /// Adds the upstream whose key text is in `key_text`.
    fn add(&mut self, spec: UpstreamSpec) -> UpstreamKey {
        let key = UpstreamKey::from_text(&self.key_text);
        self.index.insert(key.clone(), self.upstreams.len());
        self.upstreams.push((key.clone(), spec));
        key
    }

    /// The upstreams resolved so far.
    pub fn finish(self) -> BTreeMap<UpstreamKey, UpstreamSpec> {
        // Keys are unique. Objects are resolved in key order, so the input
        // is mostly sorted already and the sort inside is close to linear.
        self.upstreams.into_iter().collect()
    }
}

/// The current endpoints of every TCP port of one Service, keyed as the
/// upstreams that routes to that port use.
///
/// This is how an EndpointSlice change reaches the proxy without a new
/// translation: only the Service's own slices are read (those of its
/// namespace, found by their label), and only the endpoint sets change.
pub fn service_endpoints(
    state: &ClusterState,
    namespace: &str,
    service: &str,
) -> Vec<(UpstreamKey, Vec<SocketAddr>, Vec<SocketAddr>)> {
    let Some(svc) = state.services.get(&ObjectKey::new(namespace, service)) else {
        return Vec::new();
    };
    // An ExternalName Service's upstreams take their endpoints from DNS
    // (and have keys of their own): slices labelled for it change nothing.
    if external_name(svc).is_some() {
        return Vec::new();
    }
    let ours: Vec<&EndpointSlice> = state
        .endpoint_slices
        .range(ObjectKey::new(namespace, "")..)
        .take_while(|(k, _)| k.namespace == namespace)
        .filter(|(_, slice)| {
            slice
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(SERVICE_NAME_LABEL))
                .is_some_and(|s| s == service)
        })
        .map(|(_, slice)| slice.as_ref())
        .collect();
    // The linked form `endpoints` walks: each slice points at the next.
    let linked: Vec<(&EndpointSlice, Option<u32>)> = ours
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let next = u32::try_from(i + 1)
                .ok()
                .filter(|&n| (n as usize) < ours.len());
            (*s, next)
        })
        .collect();
    let first = (!linked.is_empty()).then_some(0);
    svc.spec
        .as_ref()
        .and_then(|s| s.ports.as_ref())
        .into_iter()
        .flatten()
        .filter(|p| p.protocol.as_deref().unwrap_or("TCP") == "TCP")
        .filter_map(|p| {
            let port = u16::try_from(p.port).ok()?;
            let key = UpstreamKey::new(namespace, service, port);
            let (ready, terminating) = endpoints(&linked, first, p.name.as_deref().unwrap_or(""));
            Some((key, ready, terminating))
        })
        .collect()
}

/// The `externalName` of a Service of type ExternalName (empty when
/// unset); `None` for every other type.
fn external_name(svc: &Service) -> Option<&str> {
    let spec = svc.spec.as_ref()?;
    (spec.type_.as_deref() == Some("ExternalName"))
        .then(|| spec.external_name.as_deref().unwrap_or(""))
}

fn service_port<'s>(
    namespace: &str,
    name: &str,
    svc: &'s Service,
    port: &PortRef,
) -> Result<&'s ServicePort, BackendError> {
    let spec = svc.spec.as_ref();
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

/// The ready endpoints of the slices listed from `first`, and those that
/// are terminating but still serving; each list sorted and without
/// duplicates.
fn endpoints(
    slices: &[(&EndpointSlice, Option<u32>)],
    first: Option<u32>,
    port_name: &str,
) -> (Vec<SocketAddr>, Vec<SocketAddr>) {
    let mut out = Vec::new();
    let mut terminating = Vec::new();
    let mut next = first;
    while let Some((slice, after)) = next.and_then(|i| slices.get(i as usize)) {
        next = *after;
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
        out.reserve(slice.endpoints.len());
        for ep in &slice.endpoints {
            let c = ep.conditions.as_ref();
            let ready = c.and_then(|c| c.ready).unwrap_or(true);
            // A terminating endpoint still serving: kept aside, in case no
            // endpoint is ready at all.
            let draining = !ready
                && c.and_then(|c| c.serving).unwrap_or(false)
                && c.and_then(|c| c.terminating).unwrap_or(false);
            if !ready && !draining {
                continue;
            }
            // Consumers use the first address only, per the EndpointSlice API.
            if let Some(ip) = ep.addresses.first().and_then(|a| parse_ip(a)) {
                let list = if ready { &mut out } else { &mut terminating };
                list.push(SocketAddr::new(ip, port));
            }
        }
    }
    for list in [&mut out, &mut terminating] {
        list.sort_unstable();
        list.dedup();
    }
    (out, terminating)
}

/// Parses an endpoint address as `IpAddr::from_str` does. Plain dotted
/// IPv4, nearly every address in practice, takes a direct path: the general
/// parser was a noticeable share of translation. Everything else, including
/// whatever is invalid, is left to the general parser.
fn parse_ip(text: &str) -> Option<IpAddr> {
    parse_ipv4(text.as_bytes())
        .map(IpAddr::V4)
        .or_else(|| text.parse().ok())
}

/// Four decimal octets of one to three digits, without leading zeros.
fn parse_ipv4(b: &[u8]) -> Option<Ipv4Addr> {
    let mut octets = [0u8; 4];
    let mut i = 0;
    for (n, octet) in octets.iter_mut().enumerate() {
        if n > 0 {
            if b.get(i) != Some(&b'.') {
                return None;
            }
            i += 1;
        }
        let start = i;
        let mut value = 0u32;
        while i - start < 3
            && let Some(d) = b.get(i).filter(|d| d.is_ascii_digit())
        {
            value = value * 10 + u32::from(d - b'0');
            i += 1;
        }
        let len = i - start;
        if len == 0 || (len > 1 && b[start] == b'0') {
            return None;
        }
        *octet = u8::try_from(value).ok()?;
    }
    (i == b.len()).then_some(Ipv4Addr::from(octets))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_fast_path_agrees_with_std() {
        for text in [
            "10.0.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "256.1.1.1",
            "01.2.3.4",
            "1.2.3",
            "1.2.3.4.",
            "1.2.3.4.5",
            "1..2.3",
            "1234.1.1.1",
            "1.2.3.04",
            " 1.2.3.4",
            "1.2.3.4 ",
            "+1.2.3.4",
            "",
            "::1",
            "fe80::1",
            "::ffff:1.2.3.4",
            "1.2.3.a",
        ] {
            assert_eq!(parse_ip(text), text.parse().ok(), "{text:?}");
            if let Some(ip) = parse_ipv4(text.as_bytes()) {
                assert_eq!(Ok(ip), text.parse::<Ipv4Addr>(), "{text:?}");
            }
        }
    }

    #[test]
    fn service_endpoints_match_a_full_translation() {
        let state = crate::source::manifest::state_from_str(
            r#"
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  ports:
  - {name: http, port: 80, targetPort: http}
  - {name: admin, port: 9000}
  - {name: dns, port: 53, protocol: UDP}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-1, namespace: shop, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{name: http, port: 8080}, {name: admin, port: 9001}]
endpoints:
- addresses: [10.0.0.2]
- addresses: [10.0.0.1]
- addresses: [10.0.0.9]
  conditions: {ready: false}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-2, namespace: shop, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{name: http, port: 8081}]
endpoints:
- addresses: [10.0.0.3]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-x, namespace: shop, labels: {kubernetes.io/service-name: other}}
addressType: IPv4
ports: [{name: http, port: 1}]
endpoints:
- addresses: [10.9.9.9]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-1, namespace: zzz, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{name: http, port: 1}]
endpoints:
- addresses: [10.8.8.8]
"#,
        )
        .unwrap();
        let got = service_endpoints(&state, "shop", "web");
        let text: Vec<(String, Vec<String>)> = got
            .iter()
            .map(|(k, a, _)| (k.to_string(), a.iter().map(|a| a.to_string()).collect()))
            .collect();
        assert_eq!(
            text,
            [
                (
                    "shop/web:80".to_owned(),
                    vec![
                        "10.0.0.1:8080".to_owned(),
                        "10.0.0.2:8080".to_owned(),
                        "10.0.0.3:8081".to_owned()
                    ]
                ),
                (
                    "shop/web:9000".to_owned(),
                    vec!["10.0.0.1:9001".to_owned(), "10.0.0.2:9001".to_owned()]
                ),
            ]
        );
        // The same sets a full resolution computes.
        let mut resolver = BackendResolver::new(&state);
        for (port, (key, _, _)) in [80u16, 9000].into_iter().zip(&got) {
            let r = resolver.resolve("shop", "web", &PortRef::Number(port));
            assert!(r.error.is_none());
            assert_eq!(&r.upstream, key);
        }
        let full = resolver.finish();
        for (key, addrs, terminating) in &got {
            assert_eq!(&full[key].endpoints, addrs);
            assert_eq!(&full[key].terminating, terminating);
        }
        assert!(service_endpoints(&state, "shop", "missing").is_empty());
    }

    #[test]
    fn slices_never_reach_external_name_upstreams() {
        let state = crate::source::manifest::state_from_str(
            r#"
apiVersion: v1
kind: Service
metadata: {name: ext, namespace: shop}
spec:
  type: ExternalName
  externalName: api.example.com
  ports: [{name: http, port: 80}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: ext-1, namespace: shop, labels: {kubernetes.io/service-name: ext}}
addressType: IPv4
ports: [{name: http, port: 8080}]
endpoints:
- addresses: [10.0.0.1]
"#,
        )
        .unwrap();
        // The endpoint path of the controller has nothing to apply...
        assert!(service_endpoints(&state, "shop", "ext").is_empty());
        // ...and the upstream it would have named is not the DNS one.
        let mut resolver = BackendResolver::new(&state);
        for port in [PortRef::Number(80), PortRef::Name("http".into())] {
            let r = resolver.resolve("shop", "ext", &port);
            assert!(r.error.is_none(), "{port}");
            assert_eq!(r.upstream.as_str(), "shop/ext:80@api.example.com");
            assert_eq!(r.external_host.as_deref(), Some("api.example.com"));
        }
        let upstreams = resolver.finish();
        let spec = &upstreams[&UpstreamKey::external("shop", "ext", 80, "api.example.com")];
        assert!(spec.endpoints.is_empty());
        assert_eq!(
            spec.dns,
            Some(DnsTarget {
                name: "api.example.com".into(),
                port: 80
            })
        );
        assert_eq!(upstreams.len(), 1);
    }
}
