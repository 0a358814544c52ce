//! [`AppError`]: the one error type of every HTTP handler, mapped to status and
//! JSON in exactly one place ([`AppError::status`], [`AppError::code`]).
//!
//! Bad input is a 4xx `AppError`, never a panic; a dependency failure is a 503.

use lambda_http::http::StatusCode;

use crate::rate_limit::RateDecision;

/// Everything a request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The body is not JSON, or not the JSON this route takes (400).
    #[error("{0}")]
    BadRequest(String),
    /// The JSON parsed but a field breaks a rule (400).
    #[error("{0}")]
    Validation(String),
    /// No, expired, revoked or garbage credentials (401). The message never says which.
    #[error("{0}")]
    Unauthorized(&'static str),
    /// Signed in, but not allowed to do this (403).
    #[error("{0}")]
    Forbidden(String),
    /// The route or the addressed resource does not exist (404).
    #[error("{0}")]
    NotFound(String),
    /// The path exists but not with this method (405).
    #[error("method not allowed")]
    MethodNotAllowed,
    /// The request conflicts with current state, e.g. a taken email (409).
    #[error("{0}")]
    Conflict(String),
    /// The body exceeds the limit (413).
    #[error("request body exceeds {0} bytes")]
    PayloadTooLarge(usize),
    /// Too many requests in this window (429).
    #[error("rate limit exceeded, retry in {} s", .0.reset_secs)]
    RateLimited(RateDecision),
    /// Too many failed logins for this email (429).
    #[error("too many failed logins, retry in {0} s")]
    LoginLocked(u64),
    /// Redis or another dependency did not answer in time (503).
    #[error("a dependency is unavailable: {0}")]
    Unavailable(String),
    /// A bug; logged in full, shown as an opaque message (500).
    #[error("internal error")]
    Internal(String),
}

impl AppError {
    /// The HTTP status for this error.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) | Self::Validation(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::RateLimited(_) | Self::LoginLocked(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable machine-readable code clients switch on.
    pub fn code(&self) -> &'static str {
        match self {
            Self::BadRequest(_) => "bad_request",
            Self::Validation(_) => "validation_failed",
            Self::Unauthorized(_) => "unauthorized",
            Self::Forbidden(_) => "forbidden",
            Self::NotFound(_) => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::Conflict(_) => "conflict",
            Self::PayloadTooLarge(_) => "payload_too_large",
            Self::RateLimited(_) | Self::LoginLocked(_) => "rate_limited",
            Self::Unavailable(_) => "service_unavailable",
            Self::Internal(_) => "internal_error",
        }
    }

    /// The message shown to the client: 5xx causes stay in the logs.
    pub fn public_message(&self) -> String {
        match self {
            Self::Unavailable(_) => "a dependency is unavailable, please retry".into(),
            Self::Internal(_) => "internal error".into(),
            other => other.to_string(),
        }
    }

    /// Seconds the client should wait before retrying, when that is known.
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            Self::RateLimited(d) => Some(d.reset_secs.max(1)),
            Self::LoginLocked(s) => Some((*s).max(1)),
            Self::Unavailable(_) => Some(1),
            _ => None,
        }
    }
}

impl AppError {
    /// Whether trying again later can succeed: a dependency that is down or slow.
    /// Everything else (bad input, a script error, a key of the wrong type, a bug)
    /// fails the same way every time. Consumers decide retry vs dead letter on this.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }
}

impl From<redis::RedisError> for AppError {
    // The one place Redis errors are classified: an unreachable, slow, loading or
    // failing-over server is a 503 (transient); an error the server gives for the
    // command itself (WRONGTYPE, a script error) will recur, so it is a bug (500).
    fn from(e: redis::RedisError) -> Self {
        if is_transient_redis_error(&e) {
            Self::Unavailable(format!("redis: {e}"))
        } else {
            Self::Internal(format!("redis: {e}"))
        }
    }
}

/// True if `e` says Redis could not be used right now, rather than that the command is wrong.
pub fn is_transient_redis_error(e: &redis::RedisError) -> bool {
    use redis::{ErrorKind, ServerErrorKind};
    if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_connection_refusal() {
        return true;
    }
    match e.kind() {
        ErrorKind::Server(kind) => matches!(
            kind,
            ServerErrorKind::BusyLoading
                | ServerErrorKind::TryAgain
                | ServerErrorKind::ClusterDown
                | ServerErrorKind::MasterDown
                | ServerErrorKind::ReadOnly
                | ServerErrorKind::Moved
                | ServerErrorKind::Ask
                | ServerErrorKind::NoPerm
        ),
        ErrorKind::Io
        | ErrorKind::AuthenticationFailed
        | ErrorKind::ClusterConnectionNotFound
        | ErrorKind::MasterNameNotFoundBySentinel
        | ErrorKind::NoValidReplicasFoundBySentinel => true,
        _ => false,
    }
}

impl From<serde_json::Error> for AppError {
    fn from(e: serde_json::Error) -> Self {
        Self::Internal(format!("json: {e}"))
    }
}
