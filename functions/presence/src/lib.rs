//! The presence function: heartbeats, explicit offline, batch lookups, and the sweep.
//!
//! A user is online while their last heartbeat is younger than `PRESENCE_TIMEOUT_SECS`
//! (300 s); `lastSeen` stays after that. USER_ONLINE is produced only on the
//! offline -> online transition (decided atomically in a script), USER_OFFLINE on an
//! explicit offline or when the scheduled sweep finds the heartbeat lapsed. A user
//! with an open WebSocket (see the realtime function) is online too. Only the
//! caller's own presence and their connections' are visible.
#![warn(missing_docs)]

mod handlers;

/// The transitions and their Redis persistence live in the shared library, which the
/// realtime function uses too (sockets opening and closing).
pub use devconnect::presence::{self as store, mark_offline, mark_online};
use devconnect::{api, presence, AppError, AppState};
use lambda_http::{Body, Request, Response};

/// The envelope `source` of this function's events.
pub const FUNCTION_NAME: &str = "presence";

/// API Gateway route keys this function serves; template.yaml must declare exactly these.
pub const ROUTES: &[&str] = &["POST /presence/heartbeat", "POST /presence/offline", "GET /presence"];

pub use handlers::openapi;

/// Most ids in one GET /presence.
pub const MAX_BATCH: usize = 100;

/// Serves one request. Never fails: every error is already a JSON response.
pub async fn handle(state: &AppState, req: Request) -> Response<Body> {
    api::serve(req, async |meta, req| match meta.route_key.as_str() {
        "POST /presence/heartbeat" => handlers::heartbeat(state, meta, req).await,
        "POST /presence/offline" => handlers::offline(state, meta, req).await,
        "GET /presence" => handlers::lookup(state, req).await,
        _ => Err(api::unknown_route(meta)),
    })
    .await
}

/// One scheduled sweep: marks users whose heartbeat lapsed offline and produces
/// USER_OFFLINE for each, exactly once even if two sweeps overlap. Returns how many.
pub async fn sweep(state: &AppState, correlation_id: &str) -> Result<usize, AppError> {
    presence::sweep_lapsed(state, correlation_id).await
}
