//! The Redis connection every function shares.
//!
//! A [`redis::aio::ConnectionManager`] is multiplexed (one TCP connection serves
//! all concurrent requests of a container) and reconnects by itself; cloning it is
//! cheap. Connection and response timeouts are bounded so a dead Redis turns into
//! a quick 503 instead of a hung request.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

/// A cheap-to-clone handle on Redis.
#[derive(Clone)]
pub struct Store {
    conn: ConnectionManager,
}

impl Store {
    /// Connects once, at init.
    pub async fn connect(url: &str, timeout: Duration) -> redis::RedisResult<Self> {
        let client = redis::Client::open(url)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1);
        let conn = tokio::time::timeout(timeout * 3, ConnectionManager::new_with_config(client, config))
            .await
            .map_err(|_| redis::RedisError::from((redis::ErrorKind::Io, "timed out connecting to redis")))??;
        Ok(Self { conn })
    }

    /// A handle for one operation; clones share the same multiplexed connection.
    pub fn conn(&self) -> ConnectionManager {
        self.conn.clone()
    }
}
