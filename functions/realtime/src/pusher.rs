//! Frames out, and sockets closed: API Gateway's `@connections` management API
//! (PostToConnection, DeleteConnection).
//!
//! In AWS the endpoint is the WebSocket API stage (`WEBSOCKET_ENDPOINT`); locally it
//! is the local gateway, which implements the same endpoint, so this code is the same.
//!
//! Retries and timeouts live in one place, the SDK's configuration ([`retries`],
//! [`timeouts`]): a hand-written loop around the SDK's own retries multiplied them
//! (3 x 3 attempts), so one unreachable socket could hold a fan-out for many seconds.

use std::time::Duration;

use aws_sdk_apigatewaymanagement::{
    config::{retry::RetryConfig, timeout::TimeoutConfig, BehaviorVersion, Credentials, Region},
    error::SdkError,
    primitives::Blob,
    Client,
};
use futures::StreamExt;

/// Connections pushed to at once by one fan-out.
pub const MAX_CONCURRENT_PUSHES: usize = 32;

/// Attempts per frame, the first included: one retry covers a dropped keep-alive
/// connection or a throttle blip; more would only delay the rest of the batch for a
/// client that has most likely gone.
pub const PUSH_MAX_ATTEMPTS: u32 = 2;

/// Backoff before the retry: short, since a push is worth little once it is late.
pub const PUSH_RETRY_BACKOFF: Duration = Duration::from_millis(50);

/// One attempt's bound (connect, send, answer): PostToConnection answers in
/// milliseconds when API Gateway is reachable, so a second means it is not.
pub const PUSH_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(1);

/// One frame's bound across all its attempts, so one unreachable socket cannot stall
/// the batch (and the Lambda invocation) it belongs to.
pub const PUSH_OPERATION_TIMEOUT: Duration = Duration::from_secs(3);

/// What happened to one frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pushed {
    /// The socket got it.
    Delivered,
    /// API Gateway says the connection is gone (410): forget it.
    Gone,
    /// Another failure, after retries; logged, never blocking the batch.
    Failed(String),
}

/// A PostToConnection client.
#[derive(Clone, Debug)]
pub struct Pusher {
    client: Client,
}

impl Pusher {
    /// In Lambda: the SDK's default credentials and region, endpoint from `WEBSOCKET_ENDPOINT`.
    pub async fn from_env() -> Result<Self, devconnect::config::ConfigError> {
        let endpoint = std::env::var("WEBSOCKET_ENDPOINT")
            .ok()
            .filter(|e| !e.is_empty())
            .ok_or(devconnect::config::ConfigError {
                var: "WEBSOCKET_ENDPOINT",
                reason: "is required (the WebSocket API stage URL)".into(),
            })?;
        let shared = devconnect::aws_http::config_loader().load().await;
        let config = aws_sdk_apigatewaymanagement::config::Builder::from(&shared)
            .endpoint_url(endpoint)
            .timeout_config(timeouts())
            .retry_config(retries())
            .build();
        Ok(Self {
            client: Client::from_conf(config),
        })
    }

    /// For the local gateway: its own `@connections` endpoint, static dummy credentials.
    pub fn local(endpoint: &str) -> Self {
        let config = aws_sdk_apigatewaymanagement::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .http_client(devconnect::aws_http::client())
            .region(Region::new("local"))
            .credentials_provider(Credentials::new("local", "local", None, None, "local-gateway"))
            .endpoint_url(endpoint)
            .timeout_config(timeouts())
            .retry_config(retries())
            .build();
        Self {
            client: Client::from_conf(config),
        }
    }

    /// Sends one frame; the SDK retries transient failures within [`PUSH_OPERATION_TIMEOUT`].
    pub async fn post(&self, connection_id: &str, frame: &[u8]) -> Pushed {
        let sent = self
            .client
            .post_to_connection()
            .connection_id(connection_id)
            .data(Blob::new(frame))
            .send()
            .await;
        match sent {
            Ok(_) => Pushed::Delivered,
            Err(SdkError::ServiceError(e)) if e.err().is_gone_exception() => Pushed::Gone,
            Err(e) => Pushed::Failed(format!("{e:?}")),
        }
    }

    /// Closes one connection (DeleteConnection). `Gone` if it had already closed, which
    /// is as good: either way no frame can reach it any more.
    pub async fn close(&self, connection_id: &str) -> Pushed {
        match self
            .client
            .delete_connection()
            .connection_id(connection_id)
            .send()
            .await
        {
            Ok(_) => Pushed::Delivered,
            Err(SdkError::ServiceError(e)) if e.err().is_gone_exception() => Pushed::Gone,
            Err(e) => Pushed::Failed(format!("{e:?}")),
        }
    }

    /// Closes many connections in parallel (bounded like [`Self::fan_out`]); the outcome per connection.
    pub async fn close_all(&self, connections: Vec<String>) -> Vec<(String, Pushed)> {
        futures::stream::iter(connections)
            .map(|connection| async move {
                let outcome = self.close(&connection).await;
                (connection, outcome)
            })
            .buffer_unordered(MAX_CONCURRENT_PUSHES)
            .collect()
            .await
    }

    /// Sends frames to many connections: connections in parallel (bounded), each
    /// connection's frames in order. Returns the outcome per connection (its worst).
    pub async fn fan_out(&self, by_connection: Vec<(String, Vec<Vec<u8>>)>) -> Vec<(String, Pushed)> {
        futures::stream::iter(by_connection)
            .map(|(connection, frames)| async move {
                let mut outcome = Pushed::Delivered;
                for frame in &frames {
                    outcome = self.post(&connection, frame).await;
                    if outcome != Pushed::Delivered {
                        break;
                    }
                }
                (connection, outcome)
            })
            .buffer_unordered(MAX_CONCURRENT_PUSHES)
            .collect()
            .await
    }
}

/// Per-attempt and per-frame bounds; see [`PUSH_ATTEMPT_TIMEOUT`] and [`PUSH_OPERATION_TIMEOUT`].
fn timeouts() -> TimeoutConfig {
    TimeoutConfig::builder()
        .operation_attempt_timeout(PUSH_ATTEMPT_TIMEOUT)
        .operation_timeout(PUSH_OPERATION_TIMEOUT)
        .build()
}

/// The only retry policy for pushes; see [`PUSH_MAX_ATTEMPTS`] and [`PUSH_RETRY_BACKOFF`].
fn retries() -> RetryConfig {
    RetryConfig::standard()
        .with_max_attempts(PUSH_MAX_ATTEMPTS)
        .with_initial_backoff(PUSH_RETRY_BACKOFF)
        .with_max_backoff(PUSH_RETRY_BACKOFF)
}
