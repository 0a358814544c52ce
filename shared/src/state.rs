//! [`AppState`]: the clients one container needs, built once in `main`.

use std::sync::Arc;

use futures::future::{BoxFuture, FutureExt};
use lambda_http::Request;

use crate::{
    api,
    config::Config,
    discovery::{self, DiscoveryError},
    error::AppError,
    metrics::Metrics,
    producer::Producer,
    publisher::Publisher,
    session::{self, Principal, WithUser},
    store::Store,
};

/// The value of the un-prefixed local cookie (`COOKIE_SECURE=false` only).
fn local_cookie(req: &Request) -> Option<&str> {
    req.headers()
        .get_all(lambda_http::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| pair.trim().strip_prefix(session::LOCAL_COOKIE_NAME)?.strip_prefix('='))
}

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
    /// This function's metrics (the publisher records through the same handle).
    pub metrics: Metrics,
}

impl AppState {
    /// Discovers endpoints named as AWS resources, connects to Redis and prepares the
    /// (lazy) Kafka producer for the function `source`. Metrics go to a fresh in-memory
    /// recorder (each local stack has its own); Lambda's `main` swaps in EMF with
    /// [`AppState::with_metrics`].
    ///
    /// Boxed here, so that this and discovery's AWS SDK calls compile once, in this crate,
    /// not again in every bootstrap that awaits it (see [`crate::bootstrap`]).
    pub fn connect(config: Config, source: &'static str) -> BoxFuture<'static, Result<Self, InitError>> {
        Self::connect_now(config, source).boxed()
    }

    async fn connect_now(config: Config, source: &'static str) -> Result<Self, InitError> {
        let endpoints = discovery::resolve(&config).await?;
        // Discovery knows a sharded cache (cluster-mode group, Serverless) even when
        // REDIS_CLUSTER is unset; REDIS_CLUSTER covers a cluster given as REDIS_URL.
        let cluster = config.redis_cluster || endpoints.redis_cluster;
        let store = Store::connect(&endpoints.redis_url, config.redis_timeout, cluster).await?;
        let producer = Arc::new(Producer::new(endpoints.kafka, config.produce_timeout));
        let metrics = Metrics::local(source);
        let publisher = Publisher::new(
            Arc::clone(&producer),
            store.clone(),
            config.topics.clone(),
            source,
            metrics.clone(),
        );
        Ok(Self {
            config: Arc::new(config),
            store,
            producer,
            publisher,
            metrics,
        })
    }

    /// The same clients, recording into `metrics` (in Lambda: the EMF recorder).
    pub fn with_metrics(self, metrics: Metrics) -> Self {
        Self {
            publisher: self.publisher.with_metrics(metrics.clone()),
            metrics,
            ..self
        }
    }

    /// Authenticates an HTTP request (bearer token or session cookie) and counts it
    /// against the caller's rate limit: one Redis round trip.
    ///
    /// A request whose token is missing, malformed, unknown or ended is counted against
    /// the anonymous per-IP bucket (one more round trip, on the failure path only, which
    /// also takes back the count the token's user got; see [`session::Refused`]), and
    /// answered 429 past it: guessing tokens costs an attacker the same budget as any
    /// other anonymous request. The `dc_session` cookie (no `__Host-` prefix) is read only
    /// while `COOKIE_SECURE=false`, i.e. on plain-http localhost.
    pub async fn authenticate(&self, req: &Request, with_user: WithUser) -> Result<Principal, AppError> {
        Ok(self.authenticate_and(req, with_user, |_, _| ()).await?.0)
    }

    /// [`AppState::authenticate`], with the reads `also` adds to the same round trip, given
    /// the user id the token names (see [`session::check`]); their replies come back in
    /// order, error replies as `Value::ServerError`. Sent only with a well-formed token.
    pub async fn authenticate_and(
        &self,
        req: &Request,
        with_user: WithUser,
        also: impl FnOnce(&mut redis::Pipeline, &str),
    ) -> Result<(Principal, Vec<redis::Value>), AppError> {
        let config = &self.config;
        let token = api::bearer_token(req).or_else(|| match config.cookie_secure {
            true => None,
            false => local_cookie(req),
        });
        let checked = session::check(
            &self.store,
            &config.rate_limits,
            config.session_idle_timeout,
            token,
            with_user,
            also,
        )
        .await?;
        match checked {
            session::Checked::Admitted(principal, replies) => Ok((principal, replies)),
            session::Checked::Refused(refused) => {
                let ip = api::RequestMeta::of(req).source_ip;
                Err(refused.settle(&self.store, &config.rate_limits, Some(&ip)).await)
            }
        }
    }

    /// The same clients and recorder, as another function (the local gateway hosts them
    /// all in one process): events carry `source`, metrics the [`crate::metrics::FUNCTION`]
    /// dimension `binary` (template.yaml's `BuildProperties: Binary`).
    pub fn for_function(&self, source: &'static str, binary: &'static str) -> Self {
        let metrics = self.metrics.for_function(binary);
        let publisher = Publisher::new(
            Arc::clone(&self.producer),
            self.store.clone(),
            self.config.topics.clone(),
            source,
            metrics.clone(),
        );
        Self {
            publisher,
            metrics,
            ..self.clone()
        }
    }
}
