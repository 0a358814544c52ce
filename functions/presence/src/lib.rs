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
pub mod store;

use devconnect::{api, events::EventType, AppError, AppState};
use lambda_http::{Body, Request, Response};
use serde_json::json;

/// The envelope `source` of this function's events.
pub const FUNCTION_NAME: &str = "presence";

/// API Gateway route keys this function serves; template.yaml must declare exactly these.
pub const ROUTES: &[&str] = &["POST /presence/heartbeat", "POST /presence/offline", "GET /presence"];

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

/// Records a heartbeat (HTTP heartbeat, WebSocket connect or ping) and produces
/// USER_ONLINE if this is the offline -> online transition. Returns the time recorded.
pub async fn mark_online(state: &AppState, user_id: &str, correlation_id: &str) -> Result<i64, AppError> {
    let now = devconnect::user::now_ms();
    let timeout_ms = i64::try_from(state.config.presence_timeout.as_millis()).unwrap_or(i64::MAX);
    if store::heartbeat(&state.store, user_id, now, timeout_ms).await? {
        let data = json!({"userId": user_id, "at": devconnect::user::rfc3339_from_ms(now)});
        state
            .publisher
            .publish(EventType::UserOnline, user_id, correlation_id, data)
            .await?;
    }
    Ok(now)
}

/// Marks the user offline now (explicit offline, or their last socket closed) and
/// produces USER_OFFLINE if they were online.
pub async fn mark_offline(state: &AppState, user_id: &str, correlation_id: &str, reason: &str) -> Result<(), AppError> {
    let now = devconnect::user::now_ms();
    if store::offline(&state.store, user_id, now).await? {
        let data = json!({"userId": user_id, "lastSeen": devconnect::user::rfc3339_from_ms(now), "reason": reason});
        state
            .publisher
            .publish(EventType::UserOffline, user_id, correlation_id, data)
            .await?;
    }
    Ok(())
}

/// One scheduled sweep: marks users whose heartbeat lapsed offline and produces
/// USER_OFFLINE for each, exactly once even if two sweeps overlap. Returns how many.
pub async fn sweep(state: &AppState, correlation_id: &str) -> Result<usize, AppError> {
    let timeout_ms = i64::try_from(state.config.presence_timeout.as_millis()).unwrap_or(i64::MAX);
    let lapsed = store::sweep(&state.store, devconnect::user::now_ms() - timeout_ms).await?;
    for (user_id, last_seen) in &lapsed {
        let data =
            json!({"userId": user_id, "lastSeen": devconnect::user::rfc3339_from_ms(*last_seen), "reason": "timeout"});
        state
            .publisher
            .publish(EventType::UserOffline, user_id, correlation_id, data)
            .await?;
    }
    Ok(lapsed.len())
}
