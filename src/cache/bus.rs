//! Tag purges from other replicas, heard on Redis pub/sub.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tracing::{info, warn};

use super::purge::Message;
use super::store::Stores;
use super::store::redis::PURGE_CHANNEL;
use crate::plugins::limit::redis::RedisTarget;
use crate::plugins::limit::redis::conn::single_info;

const MAX_DELAY: Duration = Duration::from_secs(30);

/// Applies the purges other replicas publish, for as long as the task
/// runs; reconnects with a growing delay (up to 30 s) when the
/// subscription fails. Purges published while it was down still reach the
/// shared storages (their marks are in Redis or Memcached); this
/// replica's memory and disk miss them.
pub async fn listen(stores: Arc<Stores>) {
    let Some(target) = stores.redis.as_ref().map(|r| r.target().clone()) else {
        return;
    };
    let mut delay = Duration::from_secs(1);
    let mut failing = false;
    loop {
        match subscribe(&target).await {
            Ok(mut pubsub) => {
                if failing {
                    info!("cache purge subscription restored");
                }
                delay = Duration::from_secs(1);
                let mut messages = pubsub.on_message();
                while let Some(msg) = messages.next().await {
                    let Ok(text) = msg.get_payload::<String>() else {
                        continue;
                    };
                    if let Some(m) = Message::decode(&text) {
                        stores.heard(&m).await;
                    }
                }
                warn!("cache purge subscription ended; reconnecting");
                failing = true;
            }
            Err(e) => {
                if !failing {
                    warn!(error = %e, "cannot subscribe to cache purges on Redis; retrying");
                    failing = true;
                }
            }
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(MAX_DELAY);
    }
}

/// A subscription on the first server (a Redis Cluster delivers a
/// published message to subscribers on every node).
async fn subscribe(target: &RedisTarget) -> redis::RedisResult<redis::aio::PubSub> {
    let client = redis::Client::open(single_info(target)?)?;
    let mut pubsub = client.get_async_pubsub().await?;
    pubsub.subscribe(PURGE_CHANNEL).await?;
    Ok(pubsub)
}
