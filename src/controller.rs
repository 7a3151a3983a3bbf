//! Kubernetes mode: watchers feed the gateway, the leader writes status.
//!
//! Three loops run next to the proxy:
//!
//! - **reconcile**: waits until every watcher has listed once, publishes
//!   the first table (only then `/readyz` turns ready), and afterwards
//!   collects changes for [`DEBOUNCE`] before acting. A change that touches
//!   only EndpointSlices updates the affected upstreams' endpoint sets in
//!   place; anything else translates the whole state again. A failing watch
//!   changes nothing: the last table keeps serving.
//! - **status**: when the table, the leadership or the published addresses
//!   change (and once a minute, to repair what failed), the leader brings
//!   every object's status up to date.
//! - **publish**: watches the Service named by `--publish-service` for the
//!   addresses Ingresses should show.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::networking::v1::IngressLoadBalancerIngress;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::gateway::{ConfigView, Gateway, GatewayConfig, Publisher, StartError};
use crate::metrics as m;
use crate::source::health::{self, RETRY_INITIAL, RetryBackoff, Streak};
use crate::source::kube::{DEBOUNCE, KubeSource, WatchScope};
use crate::status::lease::{Leadership, LeaseConfig};
use crate::status::{self, StatusInput, StatusWriter};
use crate::translate::{self, ClusterState};

/// How often the leader re-checks every status even without changes, so
/// that a failed write is retried and a status edited by hand is repaired.
pub const STATUS_RESYNC: Duration = Duration::from_secs(60);

/// What `status.loadBalancer` of Ingresses shows.
#[derive(Clone, Debug, Default)]
pub enum Publish {
    /// Nothing: Ingress status is left alone.
    #[default]
    Nothing,
    /// The addresses of this Service (namespace, name).
    Service(String, String),
    /// These IPs or hostnames.
    Addresses(Vec<String>),
}

/// Settings of Kubernetes mode.
#[derive(Clone, Debug)]
pub struct ControllerConfig {
    pub gateway: GatewayConfig,
    pub scope: WatchScope,
    pub publish: Publish,
    /// Leader election; without it this replica always writes status.
    pub lease: Option<LeaseConfig>,
    /// This replica's name, for Events.
    pub instance: Option<String>,
}

/// A running controller: the gateway plus its loops.
pub struct Controller {
    gateway: Gateway,
    leadership: Option<Leadership>,
    tasks: Tasks,
}

impl Controller {
    /// Starts watching and serving. Returns once the servers listen; the
    /// first table follows when every watcher has synced.
    pub async fn start(config: ControllerConfig, client: Client) -> Result<Controller, StartError> {
        let publisher = Publisher::new(config.gateway.translate.clone());
        let gateway = Gateway::start_with(config.gateway.clone(), publisher.clone()).await?;
        let source = Arc::new(KubeSource::start(client.clone(), &config.scope));
        publisher.set_watch_health(source.health());
        let (tables_tx, tables) = watch::channel(None);
        let mut tasks = vec![tokio::spawn(reconcile(
            source,
            publisher.clone(),
            tables_tx,
        ))];

        let (addresses_tx, addresses) = watch::channel(None);
        match &config.publish {
            Publish::Nothing => {}
            Publish::Addresses(list) => {
                let _ = addresses_tx.send(Some(list.iter().map(|a| status::address(a)).collect()));
            }
            Publish::Service(ns, name) => tasks.push(tokio::spawn(published_addresses(
                Api::namespaced(client.clone(), ns),
                name.clone(),
                addresses_tx,
                config.scope.retry_max,
            ))),
        }

        let leadership = config
            .lease
            .clone()
            .map(|lease| Leadership::start(client.clone(), lease));
        let leader = match &leadership {
            Some(l) => l.subscribe(),
            // Without election this replica is always the writer.
            None => watch::channel(true).1,
        };
        let writer = StatusWriter::new(
            client,
            config.gateway.translate.clone(),
            config.instance.clone(),
        );
        tasks.push(tokio::spawn(write_status(
            writer, tables, addresses, leader,
        )));
        Ok(Controller {
            gateway,
            leadership,
            tasks: Tasks(tasks),
        })
    }

    pub fn gateway(&self) -> &Gateway {
        &self.gateway
    }

    /// True while this replica holds the leader Lease (always true without
    /// leader election).
    pub fn is_leader(&self) -> bool {
        self.leadership.as_ref().is_none_or(Leadership::is_leader)
    }

    /// Stops the loops, hands back the Lease, then drains the proxy.
    pub async fn shutdown(self) {
        drop(self.tasks);
        if let Some(l) = self.leadership {
            l.release().await;
        }
        self.gateway.shutdown().await;
    }
}

/// Background loops, stopped when dropped.
struct Tasks(Vec<JoinHandle<()>>);

impl Drop for Tasks {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

/// A published table and the state it came from.
type Published = Option<(Arc<ClusterState>, Arc<ConfigView>)>;

async fn reconcile(
    source: Arc<KubeSource>,
    publisher: Arc<Publisher>,
    tables: watch::Sender<Published>,
) {
    source.wait_synced().await;
    let (state, _) = source.take();
    info!(
        objects = state.len(),
        "every watcher has listed; publishing the first table"
    );
    let view = publisher.apply(&state, Vec::new());
    let _ = tables.send(Some((Arc::new(state), view)));
    loop {
        source.changed().await;
        // Let a burst (a rollout, `kubectl apply -f dir/`) arrive whole.
        tokio::time::sleep(DEBOUNCE).await;
        let changes = source.take_changes();
        if changes.full {
            let state = source.snapshot();
            let view = publisher.apply(&state, Vec::new());
            let previous = tables.send_replace(Some((Arc::new(state), view)));
            crate::gateway::retire(previous);
        } else if !changes.endpoints.is_empty() {
            let updates: Vec<_> = source.read(|state| {
                changes
                    .endpoints
                    .iter()
                    .flat_map(|(ns, svc)| translate::service_endpoints(state, ns, svc))
                    .collect()
            });
            let mut applied = 0;
            for (key, ready, terminating) in &updates {
                if publisher.registry().update_all(key, ready, terminating) {
                    applied += 1;
                }
            }
            metrics::counter!(m::ENDPOINT_UPDATES).increment(applied);
            tracing::debug!(
                services = changes.endpoints.len(),
                upstreams = applied,
                "endpoints updated in place"
            );
        }
    }
}

async fn write_status(
    mut writer: StatusWriter,
    mut tables: watch::Receiver<Published>,
    mut addresses: watch::Receiver<Option<Vec<IngressLoadBalancerIngress>>>,
    mut leader: watch::Receiver<bool>,
) {
    let mut was_leader = false;
    let mut retry = false;
    let mut streak = Streak::default();
    loop {
        let is_leader = *leader.borrow_and_update();
        if is_leader && !was_leader {
            writer.reset();
        }
        was_leader = is_leader;
        let published = tables.borrow_and_update().clone();
        if let (true, Some((state, view))) = (is_leader, published) {
            let input = StatusInput {
                state,
                view,
                addresses: addresses.borrow_and_update().clone(),
            };
            let report = writer.write(&input).await;
            retry = report.failed > 0;
            if report.written > 0 {
                info!(
                    written = report.written,
                    failed = report.failed,
                    events = report.events,
                    "status updated"
                );
            }
            match &report.first_error {
                Some(e) if streak.fail() => warn!(
                    failed = report.failed,
                    first_error = %e,
                    "status writes failing; retrying every 5s until they succeed"
                ),
                Some(_) => {}
                None => {
                    if let Some((took, errors)) = streak.recover() {
                        info!(after = ?Duration::from_secs(took.as_secs()), failed_rounds = errors, "status writes recovered");
                    }
                }
            }
        }
        let wait = if retry {
            Duration::from_secs(5)
        } else {
            STATUS_RESYNC
        };
        tokio::select! {
            () = next_change(&mut tables) => {}
            () = next_change(&mut addresses) => {}
            () = next_change(&mut leader) => {}
            () = tokio::time::sleep(wait) => {}
        }
    }
}

/// Resolves on the next change; never, once the value can no longer
/// change (fixed addresses, no leader election).
async fn next_change<T>(rx: &mut watch::Receiver<T>) {
    if rx.changed().await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Follows one Service's addresses. A watch on one object (by field
/// selector) needs only list and watch on that name. Failures are paced
/// and logged like the source's watches.
async fn published_addresses(
    api: Api<Service>,
    name: String,
    out: watch::Sender<Option<Vec<IngressLoadBalancerIngress>>>,
    retry_max: Duration,
) {
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut backoff = RetryBackoff::new(RETRY_INITIAL, retry_max);
    let mut streak = Streak::default();
    let mut warned_missing = false;
    loop {
        let mut stream = watcher::watcher(api.clone(), config.clone()).boxed();
        let mut seen = false;
        let error = loop {
            match stream.next().await {
                Some(Ok(Event::Apply(svc) | Event::InitApply(svc))) => {
                    seen = true;
                    let addrs = status::service_addresses(&svc);
                    out.send_if_modified(|cur| {
                        let changed = cur.as_ref() != Some(&addrs);
                        *cur = Some(addrs.clone());
                        changed
                    });
                }
                Some(Ok(Event::Delete(_))) => {
                    seen = false;
                    out.send_if_modified(|cur| {
                        cur.replace(Vec::new()).is_none_or(|v| !v.is_empty())
                    });
                }
                Some(Ok(Event::InitDone)) => {
                    backoff.reset();
                    if let Some((took, errors)) = streak.recover() {
                        info!(service = %name, after = ?Duration::from_secs(took.as_secs()), errors,
                            "watching the published Service recovered");
                    }
                    if !seen && !warned_missing {
                        warned_missing = true;
                        warn!(service = %name, "the --publish-service Service does not exist; Ingress status stays empty");
                    }
                }
                Some(Ok(Event::Init)) => {}
                Some(Err(e)) => break e,
                None => break watcher::Error::NoResourceVersion,
            }
        };
        if streak.fail() {
            warn!(service = %name, error = %health::watcher_cause(&error),
                "watching the published Service failed; retrying until it recovers");
        }
        drop(stream);
        tokio::time::sleep(backoff.next_delay()).await;
    }
}
