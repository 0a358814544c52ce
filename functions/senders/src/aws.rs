//! The AWS SDK configuration of the senders: bounded calls, and no SDK retries.
//!
//! Every provider call has an operation and an attempt timeout, like endpoint discovery
//! (`devconnect::discovery`): a provider that never answers costs one record
//! [`SEND_OPERATION_TIMEOUT`], not the whole invocation. The SDK's own retries are off:
//! the senders retry throttling themselves ([`crate::send`], with a deadline and a
//! metric) and hand every other failure back to the event source, so there is exactly
//! one retry policy to reason about, and no hidden resend of a message the provider
//! may already have accepted.

use std::time::Duration;

use aws_config::{retry::RetryConfig, timeout::TimeoutConfig, BehaviorVersion, Region, SdkConfig};
use aws_sdk_sesv2::config::{Credentials, SharedCredentialsProvider};

/// The SDK's bound on one provider call, all of it (credentials, connect, answer).
pub const SEND_OPERATION_TIMEOUT: Duration = Duration::from_secs(5);

/// The SDK's bound on one attempt (there is one: see the module docs). SES and SNS
/// answer in well under a second; a call still open after this is treated as failed.
pub const SEND_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(4);

fn timeouts() -> TimeoutConfig {
    TimeoutConfig::builder()
        .operation_timeout(SEND_OPERATION_TIMEOUT)
        .operation_attempt_timeout(SEND_ATTEMPT_TIMEOUT)
        .build()
}

/// The configuration of a Lambda container: region and credentials from the environment.
pub async fn from_env() -> SdkConfig {
    devconnect::aws_http::config_loader()
        .timeout_config(timeouts())
        .retry_config(RetryConfig::disabled())
        .load()
        .await
}

/// A configuration that only ever talks to `endpoint` (a local AWS API double such as
/// moto) with dummy static credentials: nothing built from it can reach real AWS.
pub fn local(endpoint: &str) -> SdkConfig {
    SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .http_client(devconnect::aws_http::client())
        .region(Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(SharedCredentialsProvider::new(Credentials::new(
            "local", "local", None, None, "local",
        )))
        .timeout_config(timeouts())
        .retry_config(RetryConfig::disabled())
        .build()
}
