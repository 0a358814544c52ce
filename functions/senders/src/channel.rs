//! The one channel trait every provider implements, and how a provider's answer is classified.
//!
//! The senders only care about three kinds of failure, because each has its own fate:
//! throttling is retried here with backoff (the provider said "not now"), a transient
//! failure goes back to the event source to retry later (the provider or the network
//! failed), and a permanent one is dead-lettered (this delivery can never succeed).

use aws_sdk_sesv2::{
    config::http::HttpResponse,
    error::{DisplayErrorContext, ProvideErrorMetadata, SdkError},
};
use devconnect::delivery::Delivery;

/// The provider's id of an accepted message (SES MessageId, SNS MessageId).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProviderId(pub String);

/// Why a provider did not accept a delivery.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The provider is rate limiting us: retry after a pause.
    #[error("throttled: {0}")]
    Throttled(String),
    /// The provider or the network failed (5xx, timeout, connection): retry later.
    #[error("transient: {0}")]
    Transient(String),
    /// This delivery can never succeed (bad address, message rejected): dead-letter it.
    #[error("permanent: {0}")]
    Permanent(String),
}

/// A way out of the app: email, SMS, or a local capture of either.
#[async_trait::async_trait]
pub trait Channel: Send + Sync {
    /// Hands `delivery` to the provider; `Ok` once the provider has accepted it.
    async fn send(&self, delivery: &Delivery) -> Result<ProviderId, SendError>;
}

#[async_trait::async_trait]
impl<C: Channel + ?Sized> Channel for std::sync::Arc<C> {
    async fn send(&self, delivery: &Delivery) -> Result<ProviderId, SendError> {
        (**self).send(delivery).await
    }
}

/// Error codes that mean "slow down" in SES v2 and SNS (HTTP 429 counts too).
const THROTTLING_CODES: &[&str] = &[
    "TooManyRequestsException",
    "LimitExceededException",
    "Throttling",
    "ThrottlingException",
    "Throttled",
    "ThrottledException",
    "KMSThrottling",
    "KMSThrottlingException",
];

/// Error codes that say something about our account or configuration, not about this
/// delivery: another attempt after an operator fixes it will succeed, so they must not
/// dead-letter every message meanwhile.
const ACCOUNT_CODES: &[&str] = &[
    "AccountSuspendedException",
    "SendingPausedException",
    "MailFromDomainNotVerifiedException",
    "NotFoundException",
    "AuthorizationError",
    "AuthorizationErrorException",
    "AccessDenied",
    "AccessDeniedException",
    "InvalidClientTokenId",
    "ExpiredToken",
    "InternalError",
    "InternalErrorException",
    "InternalFailure",
    "ServiceUnavailable",
];

/// Classifies an AWS SDK error (SES v2 and SNS share the SDK's error and response types):
/// throttling, a failure to reach the provider or a 5xx (transient), else the provider
/// refused this very message (permanent).
pub fn classify<E>(error: &SdkError<E, HttpResponse>) -> SendError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let detail = DisplayErrorContext(error).to_string();
    match error {
        SdkError::ServiceError(service) => {
            let code = service.err().code().unwrap_or_default();
            let status = service.raw().status().as_u16();
            if THROTTLING_CODES.contains(&code) || status == 429 {
                SendError::Throttled(detail)
            } else if ACCOUNT_CODES.contains(&code) || status >= 500 {
                SendError::Transient(detail)
            } else {
                SendError::Permanent(detail)
            }
        }
        // Timeouts, connection failures, unreadable responses; and a request the SDK
        // could not build, which is our bug, not this delivery's: keep the record.
        _ => SendError::Transient(detail),
    }
}
