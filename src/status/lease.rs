//! Leader election on a `coordination.k8s.io/v1` Lease.
//!
//! Every replica serves traffic; only the holder of the Lease writes status
//! and records Events, so that replicas never fight over an object's
//! status. The protocol is the one client-go uses, so Sluicegate behaves
//! like every other controller in the cluster:
//!
//! - the holder renews the Lease every retry period; if it cannot renew for
//!   the renew deadline it stops acting as leader (before its Lease can
//!   expire for others, since the deadline is shorter than the duration);
//! - another replica takes over when it has seen the same record, unrenewed,
//!   for a whole lease duration by its own clock (never by comparing the
//!   holder's timestamps with its own, which would trust clock sync);
//! - writes carry the `resourceVersion` that was read, so two candidates
//!   racing for an expired Lease cannot both win;
//! - a holder that shuts down releases the Lease, so the successor takes
//!   over at once instead of after the lease duration.
//!
//! Failures are retried every retry period, quietly: the first failure of
//! a streak is logged (a 403 says which permission is missing in which
//! namespace), and so is the recovery.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Client;
use kube::api::{Api, PostParams};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::source::health::{self, Streak};

/// Where the Lease is and how it is held.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    pub namespace: String,
    pub name: String,
    /// This replica's identity, normally its pod name.
    pub identity: String,
    /// How long a Lease is valid after its last renewal.
    pub lease_duration: Duration,
    /// How long the holder keeps trying to renew before it steps down.
    pub renew_deadline: Duration,
    /// How often candidates try to acquire, and the holder renews.
    pub retry_period: Duration,
}

/// Why the settings cannot work.
#[derive(Debug, thiserror::Error)]
pub enum LeaseConfigError {
    #[error("--renew-deadline ({renew:?}) must be shorter than --lease-duration ({lease:?})")]
    RenewNotBelowLease { renew: Duration, lease: Duration },
    #[error("--retry-period ({retry:?}) must be shorter than --renew-deadline ({renew:?})")]
    RetryNotBelowRenew { retry: Duration, renew: Duration },
    #[error("the leader election identity (POD_NAME) is empty")]
    NoIdentity,
}

impl LeaseConfig {
    pub fn validate(&self) -> Result<(), LeaseConfigError> {
        if self.renew_deadline >= self.lease_duration {
            return Err(LeaseConfigError::RenewNotBelowLease {
                renew: self.renew_deadline,
                lease: self.lease_duration,
            });
        }
        if self.retry_period >= self.renew_deadline {
            return Err(LeaseConfigError::RetryNotBelowRenew {
                retry: self.retry_period,
                renew: self.renew_deadline,
            });
        }
        if self.identity.is_empty() {
            return Err(LeaseConfigError::NoIdentity);
        }
        Ok(())
    }
}

/// Why one round of the election failed.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error("{verb} Lease: {}", health::describe(.source))]
    Request {
        verb: &'static str,
        #[source]
        source: kube::Error,
    },
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

impl LeaseError {
    fn forbidden_verb(&self) -> Option<&'static str> {
        match self {
            LeaseError::Request { verb, source } if health::is_forbidden(source) => Some(verb),
            _ => None,
        }
    }
}

fn request(verb: &'static str) -> impl FnOnce(kube::Error) -> LeaseError {
    move |source| LeaseError::Request { verb, source }
}

/// The first failure of a streak, in one line; a 403 names the Lease's
/// namespace and the missing permission.
fn log_failure(config: &LeaseConfig, e: &LeaseError) {
    let lease = format!("{}/{}", config.namespace, config.name);
    match e.forbidden_verb() {
        Some(verb) => warn!(
            lease = %lease, error = %e,
            "leader election forbidden: this ServiceAccount may not {verb} leases.coordination.k8s.io in namespace {ns:?}. \
             It needs get, create and update on leases there (the chart's Role grants them in the release namespace); \
             or pass --leader-election-namespace with a namespace where it has them. No status is written until then; retrying quietly",
            ns = config.namespace
        ),
        None => warn!(lease = %lease, error = %e,
            "leader election failed; retrying every retry period until it recovers"),
    }
}

/// A running election. Dropping it stops campaigning without releasing;
/// call [`Leadership::release`] on shutdown.
pub struct Leadership {
    leader: watch::Receiver<bool>,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl Leadership {
    /// Starts campaigning in the background.
    pub fn start(client: Client, config: LeaseConfig) -> Leadership {
        let (tx, leader) = watch::channel(false);
        let (stop, stop_rx) = watch::channel(false);
        let api = Api::namespaced(client, &config.namespace);
        let task = tokio::spawn(campaign(api, config, tx, stop_rx));
        Leadership {
            leader,
            stop,
            task: Some(task),
        }
    }

    pub fn is_leader(&self) -> bool {
        *self.leader.borrow()
    }

    /// Changes of leadership.
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.leader.clone()
    }

    /// Stops campaigning and, when leading, hands the Lease back.
    pub async fn release(mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Leadership {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// What a candidate remembers of the Lease it last read.
struct Observed {
    /// The record as read: holder and renew time. A change means the
    /// holder is alive.
    record: (Option<String>, Option<MicroTime>),
    /// When this replica first saw that record.
    since: Instant,
}

async fn campaign(
    api: Api<Lease>,
    config: LeaseConfig,
    leader: watch::Sender<bool>,
    mut stop: watch::Receiver<bool>,
) {
    let mut observed: Option<Observed> = None;
    let mut last_renewal: Option<Instant> = None;
    let mut streak = Streak::default();
    info!(lease = %format!("{}/{}", config.namespace, config.name), identity = %config.identity,
        "leader election: campaigning for the lease");
    loop {
        // An attempt never outlives the renew deadline: the client retries
        // unavailable API servers on its own, and a leader stuck in those
        // retries must still step down before its Lease expires for others.
        let budget = match (last_renewal, *leader.borrow()) {
            (Some(t), true) => config.renew_deadline.saturating_sub(t.elapsed()),
            _ => config.renew_deadline,
        };
        let attempt = tokio::time::timeout(
            budget.max(Duration::from_millis(10)),
            try_acquire_or_renew(&api, &config, &mut observed),
        );
        let result = match attempt.await {
            Ok(r) => r,
            Err(_) => Err(LeaseError::Timeout(budget)),
        };
        match result {
            Ok(held) => {
                if let Some((took, errors)) = streak.recover() {
                    info!(lease = %format!("{}/{}", config.namespace, config.name), after = ?Duration::from_secs(took.as_secs()), errors,
                        "leader election recovered");
                }
                if held {
                    last_renewal = Some(Instant::now());
                    if !*leader.borrow() {
                        info!(lease = %config.name, identity = %config.identity, "became leader; writing status");
                        metrics::gauge!(crate::metrics::LEADER).set(1.0);
                        let _ = leader.send(true);
                    }
                } else {
                    step_down(&leader, &config, "another replica holds the lease");
                }
            }
            Err(e) => {
                metrics::counter!(crate::metrics::LEADER_ELECTION_ERRORS).increment(1);
                if streak.fail() {
                    log_failure(&config, &e);
                }
                let overdue = last_renewal.is_none_or(|t| t.elapsed() >= config.renew_deadline);
                if *leader.borrow() && overdue {
                    warn!(error = %e, "cannot renew the lease within the renew deadline");
                    step_down(&leader, &config, "renewal failed");
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(config.retry_period) => {}
            _ = stop.wait_for(|s| *s) => break,
        }
    }
    if *leader.borrow() {
        release(&api, &config).await;
        step_down(&leader, &config, "shutting down");
    }
}

fn step_down(leader: &watch::Sender<bool>, config: &LeaseConfig, why: &str) {
    if *leader.borrow() {
        info!(lease = %config.name, reason = why, "no longer leader; status writes stop");
        metrics::gauge!(crate::metrics::LEADER).set(0.0);
        let _ = leader.send(false);
    }
}

fn now() -> MicroTime {
    MicroTime(k8s_openapi::jiff::Timestamp::now())
}

fn seconds(d: Duration) -> i32 {
    i32::try_from(d.as_secs().max(1)).unwrap_or(i32::MAX)
}

/// One round: creates, renews or takes over the Lease. `Ok(true)` when this
/// replica holds it afterwards.
async fn try_acquire_or_renew(
    api: &Api<Lease>,
    config: &LeaseConfig,
    observed: &mut Option<Observed>,
) -> Result<bool, LeaseError> {
    let Some(mut lease) = api.get_opt(&config.name).await.map_err(request("get"))? else {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(config.name.clone()),
                namespace: Some(config.namespace.clone()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(config.identity.clone()),
                lease_duration_seconds: Some(seconds(config.lease_duration)),
                acquire_time: Some(now()),
                renew_time: Some(now()),
                lease_transitions: Some(0),
                ..LeaseSpec::default()
            }),
        };
        return match api.create(&PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            // Another candidate created it first.
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(request("create")(e)),
        };
    };
    let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
    let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
    let record = (holder.clone(), spec.renew_time.clone());
    let since = match observed.take() {
        Some(o) if o.record == record => o.since,
        _ => Instant::now(),
    };
    *observed = Some(Observed { record, since });
    let mine = holder.as_deref() == Some(config.identity.as_str());
    if !mine && holder.is_some() {
        let duration = spec
            .lease_duration_seconds
            .and_then(|s| u64::try_from(s).ok())
            .map_or(config.lease_duration, Duration::from_secs);
        if since.elapsed() < duration {
            return Ok(false);
        }
        info!(lease = %config.name, previous = ?holder, "lease expired; taking over");
    }
    if !mine {
        spec.acquire_time = Some(now());
        spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0).saturating_add(1));
    }
    spec.holder_identity = Some(config.identity.clone());
    spec.lease_duration_seconds = Some(seconds(config.lease_duration));
    spec.renew_time = Some(now());
    // `lease` still carries the resourceVersion read above: a concurrent
    // writer makes this replace fail with 409 instead of both winning.
    match api
        .replace(&config.name, &PostParams::default(), &lease)
        .await
    {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
        Err(e) => Err(request("update")(e)),
    }
}

/// Hands the Lease back so that a successor need not wait for it to expire.
async fn release(api: &Api<Lease>, config: &LeaseConfig) {
    let result = async {
        let Some(mut lease) = api.get_opt(&config.name).await? else {
            return Ok(());
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        if spec.holder_identity.as_deref() != Some(config.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(now());
        api.replace(&config.name, &PostParams::default(), &lease)
            .await
            .map(drop)
    }
    .await;
    match result {
        Ok(()) => info!(lease = %config.name, "lease released"),
        Err(e) => {
            warn!(error = %health::describe(&e), "cannot release the lease; it expires by itself")
        }
    }
}
