//! Status: what Sluicegate tells the cluster about the objects it serves.
//!
//! Diagnostics of the live translation become `status.conditions` on
//! ApiRoutes and PluginConfigs ([`conditions`]), Ingresses get the
//! gateway's addresses in `status.loadBalancer`, and rejected objects get a
//! Kubernetes Event. Only the holder of the leader Lease ([`lease`]) writes;
//! it also rotates the session ticket keys replicas share ([`ticket_keys`]).
//!
//! Writes are server-side apply patches of the status subresource with one
//! fixed field manager, so Sluicegate owns exactly the fields it sets and
//! never conflicts with users or other controllers editing the spec. An
//! object is written only when its status would change: the desired status
//! is compared with what the object carries, and with what was last written
//! for the version of the object that was read (the watch may not have
//! delivered the echo of our own write yet).

pub mod conditions;
pub mod gateway_api;
pub mod lease;
pub mod ticket_keys;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::networking::v1::{
    Ingress, IngressLoadBalancerIngress, IngressLoadBalancerStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Client, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::{debug, warn};

use crate::api::gateway_api::{
    CONTROLLER_NAME, Gateway, GatewayClass, GatewayStatusAddress, GrpcRoute, HttpRoute, RouteStatus,
};
use crate::api::{ApiRoute, PluginConfig};
use crate::publish::ConfigView;
use crate::translate::{
    ClassFilter, ClusterState, Diagnostic, Kind, ObjectKey, ObjectRef, Severity, TranslateOptions,
};

/// The field manager of every status write.
pub const FIELD_MANAGER: &str = "sluicegate";

/// Status writes in flight at once.
const CONCURRENCY: usize = 16;

/// Everything a round of status writing reads.
pub struct StatusInput {
    pub state: Arc<ClusterState>,
    pub view: Arc<ConfigView>,
    /// The addresses Ingresses should show; `None` while unknown (the
    /// published Service not seen yet), which leaves Ingress status alone.
    /// Gateways show them too (none while unknown).
    pub addresses: Option<Vec<IngressLoadBalancerIngress>>,
    /// Ports of Gateway listeners this replica could not open, with why.
    pub port_errors: BTreeMap<u16, String>,
}

/// What one round did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RoundReport {
    pub written: usize,
    pub failed: usize,
    pub events: usize,
    /// The first failure of the round, in one line.
    pub first_error: Option<String>,
}

/// The last status written to one object, and the resourceVersion of the
/// object it was computed from.
struct Written {
    resource_version: Option<String>,
    status: serde_json::Value,
}

/// Writes status for the objects of one translation.
pub struct StatusWriter {
    client: Client,
    recorder: Recorder,
    options: TranslateOptions,
    written: HashMap<ObjectRef, Written>,
}

/// One pending write.
struct Write {
    object: ObjectRef,
    resource_version: Option<String>,
    status: serde_json::Value,
    reference: ObjectReference,
    /// The Warning event to record with the write, when the object is
    /// newly rejected.
    event: Option<(String, String)>,
}

impl StatusWriter {
    pub fn new(client: Client, options: TranslateOptions, instance: Option<String>) -> Self {
        let reporter = Reporter {
            controller: "sluicegate".into(),
            instance,
        };
        StatusWriter {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            options,
            written: HashMap::new(),
        }
    }

    /// Forgets what was written; called on becoming leader, since another
    /// replica may have written since.
    pub fn reset(&mut self) {
        self.written.clear();
    }

    /// Brings every object's status up to date with `input`.
    pub async fn write(&mut self, input: &StatusInput) -> RoundReport {
        let now = Time(k8s_openapi::jiff::Timestamp::now());
        let writes = self.plan(input, &now);
        let mut report = RoundReport::default();
        let client = &self.client;
        let recorder = &self.recorder;
        let results: Vec<(Write, Result<(), String>, bool)> = futures_util::stream::iter(writes)
            .map(|w| async move {
                let result = patch_status(client, &w).await;
                let mut evented = false;
                if result.is_ok()
                    && let Some((reason, note)) = &w.event
                {
                    evented = record(recorder, &w.reference, reason, note).await;
                }
                (w, result, evented)
            })
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        for (w, result, evented) in results {
            report.events += usize::from(evented);
            if let Err(e) = result {
                report.failed += 1;
                report.first_error.get_or_insert(e);
            } else {
                report.written += 1;
                self.written.insert(
                    w.object,
                    Written {
                        resource_version: w.resource_version,
                        status: w.status,
                    },
                );
            }
        }
        // Objects that are gone need no memory.
        let state = &input.state;
        self.written.retain(|o, _| {
            let key = ObjectKey::new(o.namespace.clone(), o.name.clone());
            match o.kind {
                Kind::ApiRoute => state.api_routes.contains_key(&key),
                Kind::PluginConfig => state.plugin_configs.contains_key(&key),
                Kind::Ingress => state.ingresses.contains_key(&key),
                Kind::GatewayClass => state.gateway_classes.contains_key(&key),
                Kind::Gateway => state.gateways.contains_key(&key),
                Kind::HTTPRoute => state.http_routes.contains_key(&key),
                Kind::GRPCRoute => state.grpc_routes.contains_key(&key),
                _ => false,
            }
        });
        report
    }

    /// The writes this round needs.
    fn plan(&self, input: &StatusInput, now: &Time) -> Vec<Write> {
        let state = &input.state;
        let classes = ClassFilter::new(state, &self.options);
        let mut by_object: HashMap<&ObjectRef, Vec<&Diagnostic>> = HashMap::new();
        for d in input.view.diagnostics.iter() {
            by_object.entry(&d.object).or_default().push(d);
        }
        let programmed: HashSet<&str> =
            input.view.table.routes.iter().map(|r| &*r.source).collect();
        let mut writes = Vec::new();
        for (key, ar) in &state.api_routes {
            if !classes.class_is_ours(ar.spec.ingress_class_name.as_deref()) {
                continue;
            }
            let object = ObjectRef::new(Kind::ApiRoute, &key.namespace, &key.name);
            let diags = by_object.get(&object).map_or(&[][..], Vec::as_slice);
            let live = programmed.contains(object.to_string().as_str());
            let desired =
                conditions::api_route(ar.metadata.generation, ar.status.as_ref(), diags, live, now);
            self.consider(
                &mut writes,
                object,
                ar.as_ref(),
                ar.status.as_ref(),
                &desired,
                diags,
            );
        }
        for (key, pc) in &state.plugin_configs {
            let object = ObjectRef::new(Kind::PluginConfig, &key.namespace, &key.name);
            let diags = by_object.get(&object).map_or(&[][..], Vec::as_slice);
            let desired =
                conditions::plugin_config(pc.metadata.generation, pc.status.as_ref(), diags, now);
            self.consider(
                &mut writes,
                object,
                pc.as_ref(),
                pc.status.as_ref(),
                &desired,
                diags,
            );
        }
        for (key, ing) in &state.ingresses {
            if !classes.ingress_is_ours(ing) {
                continue;
            }
            let object = ObjectRef::new(Kind::Ingress, &key.namespace, &key.name);
            let diags = by_object.get(&object).map_or(&[][..], Vec::as_slice);
            let Some(addresses) = &input.addresses else {
                continue;
            };
            let current = ing
                .status
                .as_ref()
                .and_then(|s| s.load_balancer.clone())
                .unwrap_or_default();
            let desired = IngressLoadBalancerStatus {
                ingress: Some(addresses.clone()).filter(|a| !a.is_empty()),
            };
            self.consider(
                &mut writes,
                object,
                ing.as_ref(),
                Some(&current),
                &desired,
                diags,
            );
        }
        self.plan_gateway_api(input, now, &by_object, &mut writes);
        writes
    }

    /// The writes of the Gateway API objects.
    fn plan_gateway_api(
        &self,
        input: &StatusInput,
        now: &Time,
        by_object: &HashMap<&ObjectRef, Vec<&Diagnostic>>,
        writes: &mut Vec<Write>,
    ) {
        let state = &input.state;
        let api = &input.view.gateway_api;
        let diags = |o: &ObjectRef| by_object.get(o).map_or(&[][..], Vec::as_slice);
        for c in &api.gateway_classes {
            let key = ObjectKey::new("", c.name.clone());
            let Some(obj) = state.gateway_classes.get(&key) else {
                continue;
            };
            let object = ObjectRef::new(Kind::GatewayClass, "", &c.name);
            let desired =
                gateway_api::gateway_class(c, obj.metadata.generation, obj.status.as_ref(), now);
            let d = diags(&object);
            self.consider(
                writes,
                object,
                obj.as_ref(),
                obj.status.as_ref(),
                &desired,
                d,
            );
        }
        let addresses: Vec<GatewayStatusAddress> = input
            .addresses
            .iter()
            .flatten()
            .filter_map(|a| gateway_api::address(a.ip.as_deref(), a.hostname.as_deref()))
            .collect();
        for g in &api.gateways {
            let key = ObjectKey::new(g.namespace.clone(), g.name.clone());
            let Some(obj) = state.gateways.get(&key) else {
                continue;
            };
            let object = ObjectRef::new(Kind::Gateway, &g.namespace, &g.name);
            let desired = gateway_api::gateway(
                g,
                obj.metadata.generation,
                obj.status.as_ref(),
                &addresses,
                &input.port_errors,
                now,
            );
            let d = diags(&object);
            self.consider(
                writes,
                object,
                obj.as_ref(),
                obj.status.as_ref(),
                &desired,
                d,
            );
        }
        let ours: HashMap<(Kind, &str, &str), &crate::translate::RouteState> = api
            .routes
            .iter()
            .map(|r| ((r.kind, r.namespace.as_str(), r.name.as_str()), r))
            .collect();
        // Every route: those of ours get their entries, the others lose
        // the entries Sluicegate wrote before, if any.
        let route =
            |kind: Kind, key: &ObjectKey, obj: &dyn RouteObject, writes: &mut Vec<Write>| {
                let current = obj.status();
                let parents = ours
                    .get(&(kind, key.namespace.as_str(), key.name.as_str()))
                    .map_or(&[][..], |r| &r.parents[..]);
                let had_ours = current.is_some_and(|s| {
                    s.parents
                        .iter()
                        .any(|p| p.controller_name == CONTROLLER_NAME)
                });
                if parents.is_empty() && !had_ours {
                    return;
                }
                let desired = gateway_api::route(parents, obj.generation(), current, now);
                let object = ObjectRef::new(kind, &key.namespace, &key.name);
                let d = diags(&object);
                obj.consider(self, writes, object, current, &desired, d);
            };
        for (key, r) in &state.http_routes {
            route(Kind::HTTPRoute, key, r.as_ref(), writes);
        }
        for (key, r) in &state.grpc_routes {
            route(Kind::GRPCRoute, key, r.as_ref(), writes);
        }
    }

    /// Queues a write of `desired` unless the object already carries it or
    /// it was just written for this version of the object.
    fn consider<K, S>(
        &self,
        writes: &mut Vec<Write>,
        object: ObjectRef,
        obj: &K,
        current: Option<&S>,
        desired: &S,
        diags: &[&Diagnostic],
    ) where
        K: Resource<DynamicType = ()>,
        S: Serialize + PartialEq,
    {
        if current == Some(desired) {
            return;
        }
        let Ok(status) = serde_json::to_value(desired) else {
            return;
        };
        let resource_version = obj.meta().resource_version.clone();
        if let Some(w) = self.written.get(&object)
            && w.resource_version == resource_version
            && w.status == status
        {
            return;
        }
        let current_json = current.and_then(|c| serde_json::to_value(c).ok());
        let event = rejection(diags).filter(|(reason, note)| {
            // Once per rejection: not again while the same findings stand.
            !current_json
                .as_ref()
                .is_some_and(|c| mentions(c, reason, note))
        });
        writes.push(Write {
            object,
            resource_version,
            status,
            reference: obj.object_ref(&()),
            event,
        });
    }
}

/// What the writer needs of either route kind.
trait RouteObject {
    fn status(&self) -> Option<&RouteStatus>;
    fn generation(&self) -> Option<i64>;
    fn consider(
        &self,
        writer: &StatusWriter,
        writes: &mut Vec<Write>,
        object: ObjectRef,
        current: Option<&RouteStatus>,
        desired: &RouteStatus,
        diags: &[&Diagnostic],
    );
}

macro_rules! route_object {
    ($ty:ty) => {
        impl RouteObject for $ty {
            fn status(&self) -> Option<&RouteStatus> {
                self.status.as_ref()
            }
            fn generation(&self) -> Option<i64> {
                self.metadata.generation
            }
            fn consider(
                &self,
                writer: &StatusWriter,
                writes: &mut Vec<Write>,
                object: ObjectRef,
                current: Option<&RouteStatus>,
                desired: &RouteStatus,
                diags: &[&Diagnostic],
            ) {
                writer.consider(writes, object, self, current, desired, diags);
            }
        }
    };
}

route_object!(HttpRoute);
route_object!(GrpcRoute);

/// The Event for an object with errors: reason and note.
fn rejection(diags: &[&Diagnostic]) -> Option<(String, String)> {
    // Errors, unusable certificates (the routes serve, but the hosts get
    // the wrong certificate) and canaries without a main Ingress (nothing
    // of them is served): users must hear about these.
    let noteworthy = |d: &&&Diagnostic| {
        use crate::translate::Reason;
        d.severity == Severity::Error
            || matches!(
                d.reason,
                Reason::InvalidCertificate | Reason::MainIngressNotFound
            )
    };
    let errors: Vec<String> = diags
        .iter()
        .filter(noteworthy)
        .map(|d| match d.field.as_str() {
            "" => d.message.clone(),
            f => format!("{f}: {}", d.message),
        })
        .collect();
    let first = diags.iter().find(noteworthy)?;
    let reason = format!("{:?}", first.reason);
    Some((
        reason,
        conditions::truncate(errors.join("; "), conditions::MAX_MESSAGE),
    ))
}

/// Whether a current status already reports this rejection (an Accepted
/// condition that is False with the same reason and message).
fn mentions(status: &serde_json::Value, reason: &str, note: &str) -> bool {
    status["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| {
            c["type"] == conditions::ACCEPTED
                && c["status"] == "False"
                && c["reason"] == reason
                && c["message"] == note
        })
}

/// Writes one status; the error in one line when it fails. Failures are
/// logged by the caller, once per streak, not per object.
async fn patch_status(client: &Client, w: &Write) -> Result<(), String> {
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let ns = w.object.namespace.as_str();
    let name = w.object.name.as_str();
    let result = match w.object.kind {
        Kind::ApiRoute => apply::<ApiRoute>(client, ns, name, &params, &w.status).await,
        Kind::PluginConfig => apply::<PluginConfig>(client, ns, name, &params, &w.status).await,
        Kind::Ingress => {
            let status = serde_json::json!({ "loadBalancer": w.status });
            apply::<Ingress>(client, ns, name, &params, &status).await
        }
        Kind::Gateway => apply::<Gateway>(client, ns, name, &params, &w.status).await,
        Kind::HTTPRoute => apply::<HttpRoute>(client, ns, name, &params, &w.status).await,
        Kind::GRPCRoute => apply::<GrpcRoute>(client, ns, name, &params, &w.status).await,
        Kind::GatewayClass => apply_cluster::<GatewayClass>(client, name, &params, &w.status).await,
        _ => return Ok(()),
    };
    let kind = w.object.kind.as_str();
    match result {
        Ok(()) => {
            debug!(object = %w.object, "status written");
            metrics::counter!(crate::metrics::STATUS_WRITES, "kind" => kind, "result" => "ok")
                .increment(1);
            Ok(())
        }
        // Deleted meanwhile: nothing to report on.
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => {
            let e = format!("{}: {}", w.object, crate::source::health::describe(&e));
            debug!(error = %e, "cannot write status; will retry");
            metrics::counter!(crate::metrics::STATUS_WRITES, "kind" => kind, "result" => "error")
                .increment(1);
            Err(e)
        }
    }
}

async fn apply<K>(
    client: &Client,
    namespace: &str,
    name: &str,
    params: &PatchParams,
    status: &serde_json::Value,
) -> Result<(), kube::Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    let patch = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    api.patch_status(name, params, &Patch::Apply(patch))
        .await
        .map(drop)
}

async fn apply_cluster<K>(
    client: &Client,
    name: &str,
    params: &PatchParams,
    status: &serde_json::Value,
) -> Result<(), kube::Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::ClusterResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::all(client.clone());
    let patch = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    api.patch_status(name, params, &Patch::Apply(patch))
        .await
        .map(drop)
}

async fn record(
    recorder: &Recorder,
    reference: &ObjectReference,
    reason: &str,
    note: &str,
) -> bool {
    let event = Event {
        type_: EventType::Warning,
        reason: reason.to_owned(),
        note: Some(note.to_owned()),
        action: "Translate".into(),
        secondary: None,
    };
    match recorder.publish(&event, reference).await {
        Ok(()) => true,
        Err(e) => {
            warn!(object = ?reference.name, error = %crate::source::health::describe(&e), "cannot record event");
            false
        }
    }
}

/// The Ingress addresses of a published Service: its load balancer's
/// addresses, else its external IPs, else its cluster IP.
pub fn service_addresses(
    svc: &k8s_openapi::api::core::v1::Service,
) -> Vec<IngressLoadBalancerIngress> {
    let lb: Vec<IngressLoadBalancerIngress> = svc
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .into_iter()
        .flatten()
        .map(|i| IngressLoadBalancerIngress {
            ip: i.ip.clone(),
            hostname: i.hostname.clone(),
            ..IngressLoadBalancerIngress::default()
        })
        .collect();
    if !lb.is_empty() {
        return lb;
    }
    let spec = svc.spec.as_ref();
    let external: Vec<String> = spec
        .and_then(|s| s.external_ips.clone())
        .unwrap_or_default();
    let ips = if external.is_empty() {
        spec.and_then(|s| s.cluster_ip.clone())
            .filter(|ip| !ip.is_empty() && ip != "None")
            .into_iter()
            .collect()
    } else {
        external
    };
    ips.into_iter().map(|ip| address(&ip)).collect()
}

/// An address given on the command line: an IP, or else a hostname.
pub fn address(text: &str) -> IngressLoadBalancerIngress {
    if text.parse::<std::net::IpAddr>().is_ok() {
        IngressLoadBalancerIngress {
            ip: Some(text.to_owned()),
            ..IngressLoadBalancerIngress::default()
        }
    } else {
        IngressLoadBalancerIngress {
            hostname: Some(text.to_owned()),
            ..IngressLoadBalancerIngress::default()
        }
    }
}
