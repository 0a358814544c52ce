//! The requests function: connection requests, their review, connections and the feed.
//!
//! The rules ([`domain`]) are separate from the Redis plumbing ([`store`]): the one
//! request between two users lives in a pair record (`pair:{p:a:b}`), created with a
//! check-and-set script so "no duplicate in either direction" holds under races, and
//! reviewed with a compare-and-set so a request is accepted at most once.
#![warn(missing_docs)]

pub mod domain;
mod handlers;
pub mod store;

use devconnect::{api, AppState};
use lambda_http::{Body, Request, Response};

/// The envelope `source` of this function's events.
pub const FUNCTION_NAME: &str = "requests";

/// API Gateway route keys this function serves; template.yaml must declare exactly these.
pub const ROUTES: &[&str] = &[
    "POST /requests/send/{status}/{toUserId}",
    "POST /requests/review/{status}/{requestId}",
    "GET /requests/received",
    "GET /connections",
    "GET /feed",
];

pub use handlers::openapi;

/// Serves one request. Never fails: every error is already a JSON response.
pub async fn handle(state: &AppState, req: Request) -> Response<Body> {
    api::serve(req, async |meta, req| match meta.route_key.as_str() {
        "POST /requests/send/{status}/{toUserId}" => handlers::send(state, meta, req).await,
        "POST /requests/review/{status}/{requestId}" => handlers::review(state, meta, req).await,
        "GET /requests/received" => handlers::received(state, req).await,
        "GET /connections" => handlers::connections(state, req).await,
        "GET /feed" => handlers::feed(state, req).await,
        _ => Err(api::unknown_route(meta)),
    })
    .await
}
