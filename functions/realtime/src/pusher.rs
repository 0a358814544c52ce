//! Frames out: API Gateway's `@connections` management API (PostToConnection).
//!
//! In AWS the endpoint is the WebSocket API stage (`WEBSOCKET_ENDPOINT`); locally it
//! is the local gateway, which implements the same endpoint, so this code is the same.

use std::time::Duration;

use aws_sdk_apigatewaymanagement::{
    config::{timeout::TimeoutConfig, BehaviorVersion, Credentials, Region},
    error::SdkError,
    primitives::Blob,
    Client,
};
use futures::StreamExt;

/// Connections pushed to at once by one fan-out.
pub const MAX_CONCURRENT_PUSHES: usize = 32;

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
        let shared = aws_config::load_defaults(BehaviorVersion::latest()).await;
        let config = aws_sdk_apigatewaymanagement::config::Builder::from(&shared)
            .endpoint_url(endpoint)
            .timeout_config(timeouts())
            .build();
        Ok(Self {
            client: Client::from_conf(config),
        })
    }

    /// For the local gateway: its own `@connections` endpoint, static dummy credentials.
    pub fn local(endpoint: &str) -> Self {
        let config = aws_sdk_apigatewaymanagement::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("local"))
            .credentials_provider(Credentials::new("local", "local", None, None, "local-gateway"))
            .endpoint_url(endpoint)
            .timeout_config(timeouts())
            .build();
        Self {
            client: Client::from_conf(config),
        }
    }

    /// Sends one frame, retrying transient failures twice.
    pub async fn post(&self, connection_id: &str, frame: &[u8]) -> Pushed {
        let mut last = String::new();
        for attempt in 0..3 {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(50 * attempt)).await;
            }
            let sent = self
                .client
                .post_to_connection()
                .connection_id(connection_id)
                .data(Blob::new(frame))
                .send()
                .await;
            match sent {
                Ok(_) => return Pushed::Delivered,
                Err(SdkError::ServiceError(e)) if e.err().is_gone_exception() => return Pushed::Gone,
                Err(e) => last = format!("{e:?}"),
            }
        }
        Pushed::Failed(last)
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

fn timeouts() -> TimeoutConfig {
    TimeoutConfig::builder()
        .operation_attempt_timeout(Duration::from_secs(2))
        .build()
}
