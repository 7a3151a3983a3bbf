//! The Gateway API's kinds in Kubernetes mode: what of them is watched,
//! and finding out whether their CRDs are installed.
//!
//! The kinds are looked up when the source starts, and the first table
//! waits for that answer as it waits for the watchers; kinds that do not
//! exist are looked for again every [`REDISCOVER`], so that CRDs installed
//! later are picked up without a restart.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kube::runtime::watcher;
use kube::{Api, Client};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use super::{WatchCtx, Watched, namespaced};
use crate::api::gateway_api::{Gateway, GatewayClass, GrpcRoute, HttpRoute, ReferenceGrant};
use crate::source::health::{self, RETRY_INITIAL, RetryBackoff};
use crate::translate::{ClusterState, Kind, Store};

watched_with_status!(
    Gateway,
    Kind::Gateway,
    gateways,
    "gateways.gateway.networking.k8s.io"
);
watched_with_status!(
    HttpRoute,
    Kind::HTTPRoute,
    http_routes,
    "httproutes.gateway.networking.k8s.io"
);
watched_with_status!(
    GrpcRoute,
    Kind::GRPCRoute,
    grpc_routes,
    "grpcroutes.gateway.networking.k8s.io"
);
watched_with_status!(
    ReferenceGrant,
    Kind::ReferenceGrant,
    reference_grants,
    "referencegrants.gateway.networking.k8s.io"
);

impl Watched for GatewayClass {
    const KIND: Kind = Kind::GatewayClass;
    fn resource() -> &'static str {
        "gatewayclasses.gateway.networking.k8s.io"
    }
    /// Cluster-scoped: one watcher whatever the namespaces.
    fn api(client: Client, _namespace: Option<&str>) -> Api<Self> {
        Api::all(client)
    }
    fn store(state: &mut ClusterState) -> &mut Store<Self> {
        &mut state.gateway_classes
    }
    fn same_input(&self, other: &Self) -> bool {
        self.spec == other.spec && self.metadata.generation == other.metadata.generation
    }
}

/// Namespaces are read for their labels, which listeners select routes
/// by; nothing else of them matters.
impl Watched for Namespace {
    const KIND: Kind = Kind::Namespace;
    fn resource() -> &'static str {
        "namespaces"
    }
    fn api(client: Client, _namespace: Option<&str>) -> Api<Self> {
        Api::all(client)
    }
    fn store(state: &mut ClusterState) -> &mut Store<Self> {
        &mut state.namespaces
    }
    fn strip(&mut self) {
        self.metadata.managed_fields = None;
        self.metadata.annotations = None;
        self.spec = None;
        self.status = None;
    }
    fn same_input(&self, other: &Self) -> bool {
        self.metadata.labels == other.metadata.labels
    }
}

/// How often the Gateway API's kinds are looked for again while some are
/// missing, so that CRDs installed after start are picked up.
pub const REDISCOVER: Duration = Duration::from_secs(60);

/// The Gateway API kinds Sluicegate watches, by group version and
/// resource name.
const GATEWAY_API_KINDS: [(&str, &str); 5] = [
    ("gateway.networking.k8s.io/v1", "gatewayclasses"),
    ("gateway.networking.k8s.io/v1", "gateways"),
    ("gateway.networking.k8s.io/v1", "httproutes"),
    ("gateway.networking.k8s.io/v1", "grpcroutes"),
    ("gateway.networking.k8s.io/v1beta1", "referencegrants"),
];

/// Which of [`GATEWAY_API_KINDS`] the API server serves. A group version
/// that does not exist (404) has none of them.
async fn discover(client: &Client) -> Result<[bool; 5], kube::Error> {
    let mut found = [false; 5];
    for version in [
        "gateway.networking.k8s.io/v1",
        "gateway.networking.k8s.io/v1beta1",
    ] {
        let list = match client.list_api_group_resources(version).await {
            Ok(list) => list,
            Err(kube::Error::Api(e)) if e.code == 404 => continue,
            Err(e) => return Err(e),
        };
        for (i, (v, name)) in GATEWAY_API_KINDS.iter().enumerate() {
            if *v == version && list.resources.iter().any(|r| r.name == *name) {
                found[i] = true;
            }
        }
    }
    Ok(found)
}

/// Starts watchers for the Gateway API kinds that exist, and looks again
/// every `rediscover` for those that do not yet. Counts as one unsynced
/// watcher until the first answer.
pub(super) async fn watch(
    ctx: WatchCtx,
    client: Client,
    namespaces: Vec<Option<String>>,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
    rediscover: Duration,
) {
    let mut backoff = RetryBackoff::new(RETRY_INITIAL, ctx.retry_max);
    let mut streak = health::Streak::default();
    let mut watching = [false; 5];
    let mut first = true;
    loop {
        let found = match discover(&client).await {
            Ok(found) => found,
            Err(e) => {
                if streak.fail() {
                    warn!(error = %health::describe(&e),
                        "cannot look up the Gateway API's kinds; retrying until the API server answers");
                }
                tokio::time::sleep(backoff.next_delay()).await;
                continue;
            }
        };
        backoff.reset();
        streak.recover();
        let mut started = Vec::new();
        for (i, present) in found.into_iter().enumerate() {
            if !present || watching[i] {
                continue;
            }
            watching[i] = true;
            match i {
                0 => started.push(ctx.spawn::<GatewayClass>(&client, None)),
                1 => namespaces
                    .iter()
                    .for_each(|ns| started.push(ctx.spawn::<Gateway>(&client, ns.as_deref()))),
                2 => namespaces
                    .iter()
                    .for_each(|ns| started.push(ctx.spawn::<HttpRoute>(&client, ns.as_deref()))),
                3 => namespaces
                    .iter()
                    .for_each(|ns| started.push(ctx.spawn::<GrpcRoute>(&client, ns.as_deref()))),
                _ => namespaces.iter().for_each(|ns| {
                    started.push(ctx.spawn::<ReferenceGrant>(&client, ns.as_deref()))
                }),
            }
            if i == 0 {
                // Listeners select route namespaces by their labels; only
                // the watched namespaces' matter.
                let names: Vec<&str> = namespaces.iter().flatten().map(String::as_str).collect();
                let config = if names.is_empty() {
                    Namespace::config()
                } else {
                    watcher::Config::default().labels(&format!(
                        "kubernetes.io/metadata.name in ({})",
                        names.join(",")
                    ))
                };
                started.push(ctx.spawn_with::<Namespace>(&client, None, config));
            }
        }
        if !started.is_empty() {
            let kinds: Vec<&str> = GATEWAY_API_KINDS
                .iter()
                .zip(watching)
                .filter(|(_, w)| *w)
                .map(|((_, name), _)| *name)
                .collect();
            info!(?kinds, "watching the Gateway API");
        } else if first {
            info!("the Gateway API's CRDs are not installed; serving without it");
        }
        tasks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(started);
        if first {
            first = false;
            ctx.one_synced();
        }
        if watching.iter().all(|w| *w) {
            return;
        }
        tokio::time::sleep(rediscover).await;
    }
}

impl WatchCtx {
    /// Counts one more watcher as listed.
    fn one_synced(&self) {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner.unsynced = inner.unsynced.saturating_sub(1);
        if inner.unsynced == 0 {
            let _ = self.synced.send(true);
        }
    }
}
