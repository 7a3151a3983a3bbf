//! Connections to a Redis server or cluster, shared by the rate limiters'
//! batches and the proxy cache's Redis storage.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;

use super::RedisTarget;

/// A connection; both kinds reconnect by themselves once made.
#[derive(Clone)]
pub enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl Conn {
    /// Connects within `timeout`. Calls carry their own timeouts, so the
    /// single-server connection sets no response timeout of its own: a
    /// second timer per call would cost more than the call.
    pub async fn connect(target: &RedisTarget, timeout: Duration) -> redis::RedisResult<Conn> {
        if target.cluster {
            let mut b = redis::cluster::ClusterClient::builder(target.urls.clone())
                .connection_timeout(timeout)
                .response_timeout(timeout);
            if let Some(p) = &target.password {
                b = b.password(p.clone());
            }
            let client = b.build()?;
            return Ok(Conn::Cluster(client.get_async_connection().await?));
        }
        let client = redis::Client::open(single_info(target)?)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(None);
        Ok(Conn::Single(
            ConnectionManager::new_with_config(client, config).await?,
        ))
    }

    /// Runs `cmd`.
    pub async fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> redis::RedisResult<T> {
        match self {
            Conn::Single(c) => cmd.query_async(&mut c.clone()).await,
            Conn::Cluster(c) => cmd.query_async(&mut c.clone()).await,
        }
    }
}

/// The connection settings of the first (or only) server, with the
/// target's password.
pub fn single_info(target: &RedisTarget) -> redis::RedisResult<redis::ConnectionInfo> {
    let url = target.urls.first().map_or("", String::as_str);
    let mut info = redis::IntoConnectionInfo::into_connection_info(url)?;
    if let Some(p) = &target.password {
        let settings = info.redis_settings().clone().set_password(p);
        info = info.set_redis_settings(settings);
    }
    Ok(info)
}
