//! The leader's rotation of the session ticket keys replicas share.
//!
//! With `--tls-ticket-keys-secret`, the replica that holds the leader Lease
//! keeps the Secret's keys on the schedule of
//! [`crate::routing::plan_ticket_keys`]: it creates the Secret when it is
//! missing, adds each next key a period before it starts, and removes keys
//! whose tickets have expired. Every replica, the leader included, takes
//! the keys from its watch of Secrets like any other Secret, so what a
//! replica seals with is always what the API server holds.
//!
//! A write carries the `resourceVersion` that was read (a replace), so a
//! leader that has just lost the Lease and its successor cannot both add a
//! key: the second write fails, and the next round starts from what the
//! first one wrote.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Client;
use kube::api::{Api, PostParams};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::routing::{TICKET_KEY_PREFIX, TicketKeyMaterial, plan_ticket_keys};
use crate::source::health::{self, Streak};
use crate::translate::{ObjectKey, parse_ticket_keys};

/// Why one round failed.
#[derive(Debug, thiserror::Error)]
pub enum RotationError {
    #[error("{verb} Secret: {}", health::describe(.source))]
    Request {
        verb: &'static str,
        #[source]
        source: kube::Error,
    },
    #[error("the system's random source failed")]
    Random,
}

fn request(verb: &'static str) -> impl FnOnce(kube::Error) -> RotationError {
    move |source| RotationError::Request { verb, source }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// How often the leader looks at the Secret: well within a period (the
/// next key is always a period ahead, so nothing is urgent).
fn check_interval(period: Duration) -> Duration {
    (period / 4).clamp(Duration::from_millis(100), Duration::from_secs(60))
}

/// Keeps the keys of Secret `secret` on schedule while `leader` says this
/// replica leads.
pub async fn run(
    client: Client,
    secret: ObjectKey,
    period: Duration,
    mut leader: watch::Receiver<bool>,
) {
    let api: Api<Secret> = Api::namespaced(client, &secret.namespace);
    let mut streak = Streak::default();
    loop {
        let mut failed = false;
        if *leader.borrow_and_update() {
            match rotate_once(&api, &secret.name, period, unix_now()).await {
                Ok(changed) => {
                    if changed {
                        info!(secret = %format!("{}/{}", secret.namespace, secret.name),
                            "session ticket keys rotated");
                    }
                    if let Some((took, errors)) = streak.recover() {
                        info!(after = ?Duration::from_secs(took.as_secs()), errors,
                            "session ticket key rotation recovered");
                    }
                }
                Err(e) => {
                    failed = true;
                    if streak.fail() {
                        warn!(secret = %format!("{}/{}", secret.namespace, secret.name), error = %e,
                            "session ticket keys cannot be rotated (the ServiceAccount needs get, create \
                             and update on this Secret); replicas keep the keys they have; retrying quietly");
                    }
                }
            }
        }
        let wait = if failed {
            check_interval(period).min(Duration::from_secs(5))
        } else {
            check_interval(period)
        };
        tokio::select! {
            changed = leader.changed() => {
                if changed.is_err() {
                    // No more leadership changes: keep the last state.
                    tokio::time::sleep(wait).await;
                }
            }
            () = tokio::time::sleep(wait) => {}
        }
    }
}

/// One round at `now`: reads the Secret and writes the keys the schedule
/// wants. True when it wrote.
pub async fn rotate_once(
    api: &Api<Secret>,
    name: &str,
    period: Duration,
    now: u64,
) -> Result<bool, RotationError> {
    let current = api.get_opt(name).await.map_err(request("get"))?;
    let held = current
        .as_ref()
        .map(|s| parse_ticket_keys(s).0)
        .unwrap_or_default();
    let mut random_failed = false;
    let planned = plan_ticket_keys(&held, now, period.as_secs(), |t| {
        let key = TicketKeyMaterial::generate(t);
        random_failed |= key.is_none();
        key
    });
    if random_failed {
        return Err(RotationError::Random);
    }
    let Some(planned) = planned else {
        return Ok(false);
    };
    let keys = planned
        .iter()
        .map(|k| (k.data_key(), ByteString(k.secret.to_vec())));
    match current {
        Some(mut secret) => {
            // Other values are left as they are; ticket keys written as
            // stringData become data.
            let data = secret.data.get_or_insert_with(BTreeMap::new);
            data.retain(|k, _| !k.starts_with(TICKET_KEY_PREFIX));
            data.extend(keys);
            if let Some(text) = secret.string_data.as_mut() {
                text.retain(|k, _| !k.starts_with(TICKET_KEY_PREFIX));
            }
            secret.metadata.managed_fields = None;
            api.replace(name, &PostParams::default(), &secret)
                .await
                .map_err(request("update"))?;
        }
        None => {
            let secret = Secret {
                metadata: ObjectMeta {
                    name: Some(name.to_owned()),
                    labels: Some(BTreeMap::from([(
                        "app.kubernetes.io/managed-by".to_owned(),
                        "sluicegate".to_owned(),
                    )])),
                    ..ObjectMeta::default()
                },
                type_: Some("Opaque".to_owned()),
                data: Some(keys.collect()),
                ..Secret::default()
            };
            api.create(&PostParams::default(), &secret)
                .await
                .map_err(request("create"))?;
        }
    }
    Ok(true)
}
