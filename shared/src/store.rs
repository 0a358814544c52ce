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
    /// Connects once, at init; `rediss://` URLs use TLS (ElastiCache in-transit encryption).
    pub async fn connect(url: &str, timeout: Duration) -> redis::RedisResult<Self> {
        crate::tls::install_crypto_provider();
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

#[cfg(test)]
mod tests {
    use redis::{ConnectionAddr, IntoConnectionInfo};

    #[test]
    fn a_rediss_url_opens_as_a_tls_connection() {
        let info = "rediss://:t0ken@master.dc.euw1.cache.amazonaws.com:6379"
            .into_connection_info()
            .unwrap();
        match info.addr() {
            ConnectionAddr::TcpTls {
                host, port, insecure, ..
            } => {
                assert_eq!(
                    (host.as_str(), *port, *insecure),
                    ("master.dc.euw1.cache.amazonaws.com", 6379, false)
                );
            }
            other => panic!("expected TLS, got {other:?}"),
        }
        assert_eq!(info.redis_settings().password(), Some("t0ken"));
    }

    #[test]
    fn a_redis_url_stays_plain_tcp() {
        let info = "redis://127.0.0.1:6379".into_connection_info().unwrap();
        assert!(matches!(info.addr(), ConnectionAddr::Tcp(..)));
    }
}
