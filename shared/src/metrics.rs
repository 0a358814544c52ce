//! Metric names, in one place: the code that records them, the CloudWatch alarms and
//! dashboard in template.yaml, and the local `/_local/metrics` endpoint all use these.
//!
//! Every metric is in the [`NAMESPACE`] namespace with the dimension [`FUNCTION`] (the
//! function's binary name, as in template.yaml's `BuildProperties: Binary`); request
//! metrics add [`ROUTE`] and [`STATUS_CLASS`]. Few dimensions on purpose: each
//! combination is a separate CloudWatch metric, billed and alarmed on separately.

/// The CloudWatch namespace of every custom metric.
pub const NAMESPACE: &str = "DevConnect";

/// Dimension: the function's binary name (`auth`, `notifications-consumer`, ...).
pub const FUNCTION: &str = "Function";
/// Dimension: the API Gateway route key (`GET /profile`).
pub const ROUTE: &str = "Route";
/// Dimension: `2xx`, `4xx` or `5xx`.
pub const STATUS_CLASS: &str = "StatusClass";

/// Count: HTTP requests answered, by route and status class.
pub const REQUESTS: &str = "Requests";
/// Milliseconds: handler latency per HTTP request, by route.
pub const LATENCY: &str = "Latency";
/// Count: requests refused with 429.
pub const RATE_LIMITED: &str = "RateLimited";
/// Count: requests refused with 401 (missing, expired, revoked or forged credentials).
pub const AUTH_REFUSED: &str = "AuthRefused";

/// Count: events the broker took at once.
pub const EVENTS_PRODUCED: &str = "EventsProduced";
/// Count: events parked in the Redis outbox because the broker did not take them in time.
pub const EVENTS_PARKED: &str = "EventsParked";
/// Count: parked events the relay delivered.
pub const EVENTS_RELAYED: &str = "EventsRelayed";
/// Count: parked events moved to the quarantine list (can never be produced).
pub const EVENTS_QUARANTINED: &str = "EventsQuarantined";
/// Count (gauge, sampled by the relay): events waiting in the outbox.
pub const OUTBOX_BACKLOG: &str = "OutboxBacklog";

/// Count: consumer records whose effect was applied.
pub const RECORDS_APPLIED: &str = "RecordsApplied";
/// Count: consumer records already applied by an earlier delivery.
pub const RECORDS_DUPLICATE: &str = "RecordsDuplicate";
/// Count: consumer records sent to dead-letter-events.
pub const RECORDS_DEAD_LETTERED: &str = "RecordsDeadLettered";
/// Count: consumer records handed back to the event source for a retry.
pub const RECORDS_RETRIED: &str = "RecordsRetried";
/// Milliseconds: time to process one consumer batch.
pub const BATCH_LATENCY: &str = "BatchLatency";

/// Count: WebSocket frames a socket took.
pub const FRAMES_SENT: &str = "FramesSent";
/// Count: frames to a connection API Gateway says is gone (410).
pub const FRAMES_GONE: &str = "FramesGone";
/// Count: frames not delivered for another reason (after the SDK's retries).
pub const FRAMES_FAILED: &str = "FramesFailed";
/// Count: WebSocket connects refused (401, 429, 503).
pub const WEBSOCKET_CONNECTS_REFUSED: &str = "WebSocketConnectsRefused";

/// Every custom metric name, for the template checks.
pub const ALL: &[&str] = &[
    REQUESTS,
    LATENCY,
    RATE_LIMITED,
    AUTH_REFUSED,
    EVENTS_PRODUCED,
    EVENTS_PARKED,
    EVENTS_RELAYED,
    EVENTS_QUARANTINED,
    OUTBOX_BACKLOG,
    RECORDS_APPLIED,
    RECORDS_DUPLICATE,
    RECORDS_DEAD_LETTERED,
    RECORDS_RETRIED,
    BATCH_LATENCY,
    FRAMES_SENT,
    FRAMES_GONE,
    FRAMES_FAILED,
    WEBSOCKET_CONNECTS_REFUSED,
];
