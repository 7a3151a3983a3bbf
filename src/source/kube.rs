//! Kubernetes mode's source: watchers that keep the cluster's objects in
//! memory.
//!
//! One watcher runs per kind, or per kind and namespace when namespaces are
//! restricted. Each keeps its objects directly in the shared
//! [`ClusterState`], so a snapshot for translation is a copy of maps of
//! `Arc`s. A (re)list replaces the watcher's objects only once it is
//! complete, so a watch error, a `410 Gone` or an API server outage never
//! empties the state: the last objects stay until a fresh list replaces
//! them. Data that is never used (managed fields, the last-applied
//! annotation) is dropped before objects are stored. Of Secrets only the
//! certificate, key and CA values are kept, and types that never hold them
//! are not watched at all.
//!
//! A watcher that fails starts over with a fresh list after a short,
//! jittered, capped delay ([`RetryBackoff`]): the completed list is the
//! proof that it has recovered (a resumed watch says nothing until
//! something changes), and the cap bounds how long a watch can lag behind
//! the API server's return. Each failure streak is logged once, and its
//! end once; [`WatchHealth`] keeps the per-kind picture for `/readyz` and
//! `/metrics`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use super::health::{self, RETRY_INITIAL, RETRY_MAX, RetryBackoff, WatchHealth, WatcherId};
use crate::api::{ApiRoute, PluginConfig};
use crate::translate::{ClusterState, Kind, ObjectKey, Store};

/// The label that ties an EndpointSlice to its Service.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// Annotation `kubectl apply` stores a whole copy of the object in.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// What changed since changes were last taken.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// Something other than EndpointSlices changed: translate again.
    pub full: bool,
    /// Services whose EndpointSlices changed, as (namespace, name).
    pub endpoints: BTreeSet<(String, String)>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        !self.full && self.endpoints.is_empty()
    }
}

/// A kind the source watches.
trait Watched:
    Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static
{
    const KIND: Kind;
    /// The API for this kind in `namespace`, or in every namespace.
    fn api(client: Client, namespace: Option<&str>) -> Api<Self>;
    fn store(state: &mut ClusterState) -> &mut Store<Self>;
    /// What the ServiceAccount must be allowed, for error messages.
    fn resource() -> &'static str {
        Self::KIND.as_str()
    }
    /// Records what a change to this object means for translation.
    fn note(&self, changes: &mut Changes) {
        let _ = self;
        changes.full = true;
    }
    /// True when `other` differs from `self` only in what translation
    /// never reads (status, resourceVersion): our own status writes come
    /// back as watch events, and must not cost a new translation.
    fn same_input(&self, other: &Self) -> bool {
        let _ = other;
        false
    }
    /// Drops what translation never reads.
    fn strip(&mut self) {
        let meta = self.meta_mut();
        meta.managed_fields = None;
        if let Some(a) = meta.annotations.as_mut() {
            a.remove(LAST_APPLIED);
        }
    }
    fn config() -> watcher::Config {
        watcher::Config::default()
    }
}

fn namespaced<K>(client: Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match namespace {
        Some(ns) => Api::namespaced(client, ns),
        None => Api::all(client),
    }
}

impl Watched for IngressClass {
    const KIND: Kind = Kind::IngressClass;
    fn resource() -> &'static str {
        "ingressclasses.networking.k8s.io"
    }
    /// Cluster-scoped: one watcher whatever the namespaces.
    fn api(client: Client, _namespace: Option<&str>) -> Api<Self> {
        Api::all(client)
    }
    fn store(state: &mut ClusterState) -> &mut Store<Self> {
        &mut state.ingress_classes
    }
}

/// Objects with a spec and status: the same input when the spec, labels
/// and annotations are (a Service's load balancer address arriving, or our
/// own status write coming back, changes nothing translation reads).
macro_rules! watched_with_status {
    ($ty:ty, $kind:expr, $field:ident, $resource:expr) => {
        impl Watched for $ty {
            const KIND: Kind = $kind;
            fn resource() -> &'static str {
                $resource
            }
            fn api(client: Client, namespace: Option<&str>) -> Api<Self> {
                namespaced(client, namespace)
            }
            fn store(state: &mut ClusterState) -> &mut Store<Self> {
                &mut state.$field
            }
            fn same_input(&self, other: &Self) -> bool {
                self.spec == other.spec
                    && self.metadata.labels == other.metadata.labels
                    && self.metadata.annotations == other.metadata.annotations
                    && self.metadata.generation == other.metadata.generation
            }
        }
    };
}

watched_with_status!(Service, Kind::Service, services, "services");
watched_with_status!(
    Ingress,
    Kind::Ingress,
    ingresses,
    "ingresses.networking.k8s.io"
);
watched_with_status!(
    ApiRoute,
    Kind::ApiRoute,
    api_routes,
    "apiroutes.sluicegate.io"
);
watched_with_status!(
    PluginConfig,
    Kind::PluginConfig,
    plugin_configs,
    "pluginconfigs.sluicegate.io"
);

impl Watched for EndpointSlice {
    const KIND: Kind = Kind::EndpointSlice;
    fn resource() -> &'static str {
        "endpointslices.discovery.k8s.io"
    }
    fn api(client: Client, namespace: Option<&str>) -> Api<Self> {
        namespaced(client, namespace)
    }
    fn store(state: &mut ClusterState) -> &mut Store<Self> {
        &mut state.endpoint_slices
    }
    fn note(&self, changes: &mut Changes) {
        let ns = self.metadata.namespace.clone().unwrap_or_default();
        // A slice without the label belongs to no Service we route to.
        if let Some(svc) = self
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(SERVICE_NAME_LABEL))
        {
            changes.endpoints.insert((ns, svc.clone()));
        }
    }
}

/// The Secret values translation reads; the rest is dropped on arrival.
const SECRET_KEYS: [&str; 5] = ["tls.crt", "tls.key", "ca.crt", "redis-password", "auth"];

impl Watched for Secret {
    const KIND: Kind = Kind::Secret;
    fn resource() -> &'static str {
        "secrets"
    }
    fn api(client: Client, namespace: Option<&str>) -> Api<Self> {
        namespaced(client, namespace)
    }
    fn store(state: &mut ClusterState) -> &mut Store<Self> {
        &mut state.secrets
    }
    /// Only the values Sluicegate reads are kept (certificates, keys, CA
    /// bundles, Redis passwords, htpasswd files under `auth`, and the
    /// credentials of Secrets labelled as consumers); every other value,
    /// and annotations, are dropped.
    fn strip(&mut self) {
        self.metadata.managed_fields = None;
        self.metadata.annotations = None;
        self.string_data = None;
        // Credentials are kept only for Secrets marked as consumers.
        let consumer = self
            .metadata
            .labels
            .as_ref()
            .is_some_and(|l| l.contains_key(crate::plugins::auth::CONSUMER_LABEL));
        if let Some(data) = self.data.as_mut() {
            data.retain(|k, _| {
                SECRET_KEYS.contains(&k.as_str())
                    || (consumer && crate::plugins::auth::CREDENTIAL_KEYS.contains(&k.as_str()))
            });
        }
    }
    /// A change to values that were dropped changes nothing.
    fn same_input(&self, other: &Self) -> bool {
        self.data == other.data
            && self.type_ == other.type_
            && self.metadata.labels == other.metadata.labels
    }
    /// Types that never hold what Sluicegate reads, and can be large or
    /// numerous (Helm release records, service account tokens, registry
    /// credentials), are not listed at all.
    fn config() -> watcher::Config {
        watcher::Config::default().fields(
            "type!=helm.sh/release.v1,type!=kubernetes.io/service-account-token,\
             type!=kubernetes.io/dockerconfigjson,type!=kubernetes.io/dockercfg,\
             type!=bootstrap.kubernetes.io/token",
        )
    }
}

struct Inner {
    state: ClusterState,
    changes: Changes,
    /// Watchers that have not completed a first list yet.
    unsynced: usize,
}

/// The live objects of the cluster, filled by watchers.
pub struct KubeSource {
    inner: Arc<Mutex<Inner>>,
    notify: Arc<Notify>,
    synced: watch::Receiver<bool>,
    health: Arc<WatchHealth>,
    tasks: Vec<JoinHandle<()>>,
}

/// Where to watch, and how fast to retry.
#[derive(Clone, Debug)]
pub struct WatchScope {
    /// Namespaces to watch; empty means every namespace.
    pub namespaces: Vec<String>,
    /// The longest a failed watch waits before it retries.
    pub retry_max: Duration,
}

impl Default for WatchScope {
    fn default() -> Self {
        WatchScope {
            namespaces: Vec::new(),
            retry_max: RETRY_MAX,
        }
    }
}

impl KubeSource {
    /// Starts every watcher. Returns at once; [`KubeSource::synced`] tells
    /// when each has listed its objects once.
    pub fn start(client: Client, scope: &WatchScope) -> KubeSource {
        let namespaces: Vec<Option<String>> = if scope.namespaces.is_empty() {
            vec![None]
        } else {
            scope.namespaces.iter().cloned().map(Some).collect()
        };
        let (synced_tx, synced) = watch::channel(false);
        let synced_tx = Arc::new(synced_tx);
        let inner = Arc::new(Mutex::new(Inner {
            state: ClusterState::default(),
            changes: Changes::default(),
            unsynced: 0,
        }));
        let notify = Arc::new(Notify::new());
        let health = Arc::new(WatchHealth::default());
        let mut tasks = Vec::new();
        let ctx = WatchCtx {
            inner: inner.clone(),
            notify: notify.clone(),
            synced: synced_tx,
            health: health.clone(),
            retry_max: scope.retry_max,
        };
        for ns in &namespaces {
            tasks.push(ctx.spawn::<Ingress>(&client, ns.as_deref()));
            tasks.push(ctx.spawn::<Service>(&client, ns.as_deref()));
            tasks.push(ctx.spawn::<EndpointSlice>(&client, ns.as_deref()));
            tasks.push(ctx.spawn::<Secret>(&client, ns.as_deref()));
            tasks.push(ctx.spawn::<ApiRoute>(&client, ns.as_deref()));
            tasks.push(ctx.spawn::<PluginConfig>(&client, ns.as_deref()));
        }
        // Cluster-scoped.
        tasks.push(ctx.spawn::<IngressClass>(&client, None));
        KubeSource {
            inner,
            notify,
            synced,
            health,
            tasks,
        }
    }

    /// How each kind's watches are doing.
    pub fn health(&self) -> Arc<WatchHealth> {
        self.health.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Resolves once every watcher has listed its objects once.
    pub async fn wait_synced(&self) {
        let mut rx = self.synced.clone();
        let _ = rx.wait_for(|s| *s).await;
    }

    /// Waits for the next change notification.
    pub async fn changed(&self) {
        self.notify.notified().await;
    }

    /// A copy of the current objects and what changed since the last call.
    pub fn take(&self) -> (ClusterState, Changes) {
        let mut inner = self.lock();
        let changes = std::mem::take(&mut inner.changes);
        (inner.state.clone(), changes)
    }

    /// A copy of the current objects.
    pub fn snapshot(&self) -> ClusterState {
        self.lock().state.clone()
    }

    /// What changed since the last call, without copying the objects.
    pub fn take_changes(&self) -> Changes {
        std::mem::take(&mut self.lock().changes)
    }

    /// Runs `f` on the current objects, under the lock: for small lookups
    /// that need no copy of the whole state.
    pub fn read<T>(&self, f: impl FnOnce(&ClusterState) -> T) -> T {
        f(&self.lock().state)
    }
}

impl Drop for KubeSource {
    fn drop(&mut self) {
        self.tasks.iter().for_each(JoinHandle::abort);
    }
}

#[derive(Clone)]
struct WatchCtx {
    inner: Arc<Mutex<Inner>>,
    notify: Arc<Notify>,
    synced: Arc<watch::Sender<bool>>,
    health: Arc<WatchHealth>,
    retry_max: Duration,
}

/// Where one watcher is in its current attempt.
struct Attempt<K> {
    /// Objects of a list in progress; they replace the watcher's current
    /// objects only once the list is complete.
    relist: Option<BTreeMap<ObjectKey, Arc<K>>>,
}

impl WatchCtx {
    fn spawn<K: Watched>(&self, client: &Client, namespace: Option<&str>) -> JoinHandle<()> {
        let api = K::api(client.clone(), namespace);
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .unsynced += 1;
        let ctx = self.clone();
        let scope = namespace.map(str::to_owned);
        let id = self.health.register(K::KIND);
        tokio::spawn(async move { ctx.run::<K>(api, scope, id).await })
    }

    /// Watches until aborted. Every attempt starts with a fresh list; an
    /// error ends the attempt, and the next starts after a backoff delay.
    async fn run<K: Watched>(self, api: Api<K>, scope: Option<String>, id: WatcherId) {
        let mut backoff = RetryBackoff::new(RETRY_INITIAL, self.retry_max);
        let mut streak = health::Streak::default();
        let mut synced = false;
        let where_ = scope.as_deref().unwrap_or("all namespaces");
        loop {
            let mut stream = watcher::watcher(api.clone(), K::config()).boxed();
            let mut attempt = Attempt { relist: None };
            let error = loop {
                match stream.next().await {
                    Some(Ok(event)) => {
                        let listed = matches!(event, Event::InitDone);
                        // `Init` comes before the list request is even
                        // sent: it says nothing about the API server.
                        let delivered = !matches!(event, Event::Init);
                        self.apply(event, &mut attempt, &scope, &mut synced);
                        if listed {
                            self.health.listed(id);
                            backoff.reset();
                            if let Some((took, errors)) = streak.recover() {
                                info!(kind = %K::KIND, namespace = where_, after = ?took.round_secs(), errors,
                                    "watch recovered: listed again and watching");
                            }
                        } else if delivered {
                            self.health.event(id);
                        }
                    }
                    Some(Err(e)) => break e,
                    // The watcher stream never ends; if it did, start over.
                    None => break watcher::Error::NoResourceVersion,
                }
            };
            let cause = health::watcher_cause(&error);
            metrics::counter!(crate::metrics::WATCH_ERRORS, "kind" => K::KIND.as_str())
                .increment(1);
            if streak.fail() {
                let forbidden = match &error {
                    watcher::Error::InitialListFailed(e)
                    | watcher::Error::WatchStartFailed(e)
                    | watcher::Error::WatchFailed(e) => health::is_forbidden(e),
                    watcher::Error::WatchError(s) => s.code == 403,
                    watcher::Error::NoResourceVersion => false,
                };
                if forbidden {
                    warn!(kind = %K::KIND, namespace = where_, error = %cause,
                        "watch forbidden: the ServiceAccount needs list and watch on {} in {}; \
                         serving the last known objects and retrying", K::resource(), where_);
                } else {
                    warn!(kind = %K::KIND, namespace = where_, error = %cause,
                        "watch failed; serving the last known objects and retrying until it recovers");
                }
            }
            self.health.failed(id, cause);
            drop(stream);
            tokio::time::sleep(backoff.next_delay()).await;
        }
    }

    /// Applies one event to the shared state.
    fn apply<K: Watched>(
        &self,
        event: Event<K>,
        attempt: &mut Attempt<K>,
        scope: &Option<String>,
        synced: &mut bool,
    ) {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        match event {
            Event::Init => attempt.relist = Some(BTreeMap::new()),
            Event::InitApply(mut obj) => {
                obj.strip();
                if let Some(r) = attempt.relist.as_mut() {
                    r.insert(ObjectKey::of(&obj), Arc::new(obj));
                }
                return;
            }
            Event::InitDone => {
                let fresh = attempt.relist.take().unwrap_or_default();
                let store = K::store(&mut inner.state);
                let in_scope = |k: &ObjectKey| scope.as_ref().is_none_or(|ns| &k.namespace == ns);
                let before: BTreeMap<ObjectKey, Arc<K>> = store
                    .iter()
                    .filter(|(k, _)| in_scope(k))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                store.retain(|k, _| !in_scope(k));
                let mut changes = std::mem::take(&mut inner.changes);
                // Only what differs from before the list is a change: a
                // relist after a blip must not rebuild an unchanged table.
                let mut changed = false;
                for (k, o) in &before {
                    if !fresh.get(k).is_some_and(|n| n.same_input(o)) {
                        changed = true;
                        o.note(&mut changes);
                    }
                }
                for (k, o) in &fresh {
                    if !before.get(k).is_some_and(|b| b.same_input(o)) {
                        changed = true;
                        o.note(&mut changes);
                    }
                }
                let store = K::store(&mut inner.state);
                store.extend(fresh);
                inner.changes = changes;
                if !*synced {
                    *synced = true;
                    inner.unsynced = inner.unsynced.saturating_sub(1);
                    if inner.unsynced == 0 {
                        let _ = self.synced.send(true);
                    }
                }
                if !changed {
                    return;
                }
            }
            Event::Apply(mut obj) => {
                obj.strip();
                let obj = Arc::new(obj);
                let previous =
                    K::store(&mut inner.state).insert(ObjectKey::of(obj.as_ref()), obj.clone());
                if previous.as_ref().is_some_and(|p| p.same_input(&obj)) {
                    // Stored for its fresh status; nothing to recompile.
                    return;
                }
                // Both versions: a slice relabelled to another Service
                // must also leave the first one's endpoints.
                if let Some(p) = previous {
                    p.note(&mut inner.changes);
                }
                obj.note(&mut inner.changes);
            }
            Event::Delete(obj) => {
                obj.note(&mut inner.changes);
                K::store(&mut inner.state).remove(&ObjectKey::of(&obj));
            }
        }
        drop(inner);
        self.notify.notify_one();
    }
}

/// Whole seconds, for log lines.
trait RoundSecs {
    fn round_secs(self) -> Duration;
}

impl RoundSecs for Duration {
    fn round_secs(self) -> Duration {
        Duration::from_secs(self.as_secs_f64().round() as u64)
    }
}

/// The client settings Kubernetes mode uses. kube's default retry layer
/// is turned off: it retries 429/503/504 answers inside one request up
/// to 15 times with delays growing to minutes, which hides an API server
/// that is back behind a long sleep. The watchers, the Lease and the
/// status writer each retry on their own, paced by [`RetryBackoff`] or
/// their retry period.
pub fn client_config(mut config: kube::Config) -> kube::Config {
    config.default_retry = false;
    config
}

/// How long changes are collected before they are applied: bursts (a
/// rollout touching many EndpointSlices, `kubectl apply -f dir/`) become
/// one table instead of many.
pub const DEBOUNCE: Duration = Duration::from_millis(20);
