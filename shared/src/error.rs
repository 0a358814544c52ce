//! [`AppError`]: the one error type of every HTTP handler, mapped to status and
//! JSON in exactly one place ([`AppError::status`], [`AppError::code`]).
//!
//! Bad input is a 4xx `AppError`, never a panic; a dependency failure is a 503.
//! A 5xx keeps the error that caused it as its [`source`](std::error::Error::source)
//! (see [`Cause`]), and logs print the whole chain with [`chain`].

use std::{borrow::Cow, error::Error, fmt};

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
    #[error("a dependency is unavailable")]
    Unavailable(#[source] Cause),
    /// A bug; logged in full, shown as an opaque message (500).
    #[error("internal error")]
    Internal(#[source] Cause),
}

/// Any error, boxed so that a [`Cause`] can hold what a dependency returned.
pub type BoxError = Box<dyn Error + Send + Sync + 'static>;

/// Why a 5xx happened: what we were doing, and the error that stopped it (when
/// there is one), kept as the source so the logs show the whole chain.
#[derive(Debug, thiserror::Error)]
#[error("{what}")]
pub struct Cause {
    what: Cow<'static, str>,
    #[source]
    source: Option<BoxError>,
}

impl Cause {
    /// `source` stopped us while doing `what` (e.g. `"redis"`, `"argon2"`).
    pub fn new(what: impl Into<Cow<'static, str>>, source: impl Into<BoxError>) -> Self {
        Self {
            what: what.into(),
            source: Some(source.into()),
        }
    }

    /// Something impossible happened, with no underlying error to keep.
    pub fn bare(what: impl Into<Cow<'static, str>>) -> Self {
        Self {
            what: what.into(),
            source: None,
        }
    }
}

/// Displays an error and its sources as `outer: inner: innermost`, for logs and
/// dead-letter reasons (`%err` alone shows only the outermost message).
pub fn chain<'a>(err: &'a (dyn Error + 'static)) -> Chain<'a> {
    Chain(err)
}

/// See [`chain`].
pub struct Chain<'a>(&'a (dyn Error + 'static));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut next = self.0.source();
        while let Some(e) = next {
            write!(f, ": {e}")?;
            next = e.source();
        }
        Ok(())
    }
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
    /// A dependency failed while doing `what` (503).
    pub fn unavailable(what: &'static str, source: impl Into<BoxError>) -> Self {
        Self::Unavailable(Cause::new(what, source))
    }

    /// A bug surfaced by `source` while doing `what` (500).
    pub fn internal(what: &'static str, source: impl Into<BoxError>) -> Self {
        Self::Internal(Cause::new(what, source))
    }

    /// A bug with no underlying error, described by `what` (500).
    pub fn bug(what: impl Into<Cow<'static, str>>) -> Self {
        Self::Internal(Cause::bare(what))
    }

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
            Self::unavailable("redis", e)
        } else {
            Self::internal("redis", e)
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
        Self::internal("json", e)
    }
}

#[cfg(test)]
mod tests {
    use std::{error::Error as _, io};

    use super::*;

    fn refused() -> redis::RedisError {
        io::Error::new(io::ErrorKind::ConnectionRefused, "connection refused by 10.0.0.9").into()
    }

    #[test]
    fn an_unreachable_redis_is_a_transient_503_that_keeps_the_redis_error() {
        let e = AppError::from(refused());
        assert_eq!(e.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(e.is_transient());
        let source = e
            .source()
            .and_then(|cause| cause.source())
            .expect("the redis error is kept");
        assert!(source.is::<redis::RedisError>(), "{source:?}");
    }

    #[test]
    fn the_log_line_shows_the_whole_chain_but_the_client_does_not() {
        let e = AppError::from(refused());
        let logged = chain(&e).to_string();
        assert!(logged.starts_with("a dependency is unavailable: redis: "), "{logged}");
        assert!(logged.contains("10.0.0.9"), "{logged}");
        assert!(!e.public_message().contains("10.0.0.9"));
    }

    #[test]
    fn a_bug_without_an_underlying_error_shows_only_its_description() {
        let e = AppError::bug("stored user has no id");
        assert_eq!(e.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!e.is_transient());
        assert_eq!(chain(&e).to_string(), "internal error: stored user has no id");
        assert_eq!(e.public_message(), "internal error");
    }
}
