//! [`AppState`]: the clients one container needs, built once in `main`.

use std::sync::Arc;

use lambda_http::Request;

use crate::{
    api,
    config::Config,
    discovery::{self, DiscoveryError},
    error::AppError,
    producer::Producer,
    publisher::Publisher,
    session::{self, Principal, WithUser},
    store::Store,
};

/// Why a container could not start; the message names the variable or server at fault.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    /// An endpoint could not be discovered (see [`crate::discovery`]).
    #[error(transparent)]
    Discovery(#[from] DiscoveryError),
    /// Redis did not accept the connection.
    #[error("connecting to Redis: {0}")]
    Redis(#[from] redis::RedisError),
}

/// Everything a handler needs; cheap to clone (every field is a shared handle).
#[derive(Clone)]
pub struct AppState {
    /// The configuration read at init.
    pub config: Arc<Config>,
    /// Redis.
    pub store: Store,
    /// Kafka, shared with `publisher` (the outbox relay uses it directly).
    pub producer: Arc<Producer>,
    /// Produce-or-park for this function's events.
    pub publisher: Publisher,
}

impl AppState {
    /// Discovers endpoints named as AWS resources, connects to Redis and prepares the
    /// (lazy) Kafka producer for the function `source`.
    pub async fn connect(config: Config, source: &'static str) -> Result<Self, InitError> {
        let endpoints = discovery::resolve(&config).await?;
        // Discovery knows a sharded cache (cluster-mode group, Serverless) even when
        // REDIS_CLUSTER is unset; REDIS_CLUSTER covers a cluster given as REDIS_URL.
        let cluster = config.redis_cluster || endpoints.redis_cluster;
        let store = Store::connect(&endpoints.redis_url, config.redis_timeout, cluster).await?;
        let producer = Arc::new(Producer::new(endpoints.kafka, config.produce_timeout));
        let publisher = Publisher::new(Arc::clone(&producer), store.clone(), config.topics.clone(), source);
        Ok(Self {
            config: Arc::new(config),
            store,
            producer,
            publisher,
        })
    }

    /// Authenticates an HTTP request (bearer token or session cookie) and counts it
    /// against the caller's rate limit: one Redis round trip.
    pub async fn authenticate(&self, req: &Request, with_user: WithUser) -> Result<Principal, AppError> {
        session::authenticate(&self.store, &self.config.rate_limits, api::bearer_token(req), with_user).await
    }

    /// The same clients, publishing as another function (the local gateway hosts them all in one process).
    pub fn for_function(&self, source: &'static str) -> Self {
        let publisher = Publisher::new(
            Arc::clone(&self.producer),
            self.store.clone(),
            self.config.topics.clone(),
            source,
        );
        Self {
            publisher,
            ..self.clone()
        }
    }
}
