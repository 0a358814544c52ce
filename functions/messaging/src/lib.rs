//! The messaging function: one-to-one messages between connections.
//!
//! A conversation lives in its pair's hash slot (`{p:a:b}`), next to the pair record
//! that says whether the two are connected, so "check the connection, append the
//! message, bump the receiver's unread count" is one script: one round trip, and no
//! message can slip in after a connection check went stale. Messages are a Redis
//! stream capped at `MESSAGE_HISTORY_CAP` (default 1,000; older messages are trimmed),
//! whose ids give a total order and serve as the pagination cursor.
#![warn(missing_docs)]

pub mod domain;
mod handlers;
pub mod store;

use devconnect::{api, AppState};
use lambda_http::{Body, Request, Response};

/// The envelope `source` of this function's events.
pub const FUNCTION_NAME: &str = "messaging";

/// API Gateway route keys this function serves; template.yaml must declare exactly these.
pub const ROUTES: &[&str] = &[
    "POST /messages/{userId}",
    "GET /messages/{userId}",
    "GET /conversations",
    "POST /messages/{userId}/read",
];

pub use handlers::openapi;

/// Serves one request. Never fails: every error is already a JSON response.
pub async fn handle(state: &AppState, req: Request) -> Response<Body> {
    api::serve(req, async |meta, req| match meta.route_key.as_str() {
        "POST /messages/{userId}" => handlers::send(state, meta, req).await,
        "GET /messages/{userId}" => handlers::history(state, req).await,
        "GET /conversations" => handlers::conversations(state, req).await,
        "POST /messages/{userId}/read" => handlers::read(state, meta, req).await,
        _ => Err(api::unknown_route(meta)),
    })
    .await
}
