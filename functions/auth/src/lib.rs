//! The auth function: signup, login, logout, sessions, password change, WebSocket
//! tickets, tiers (admin), own profile and public profiles.
//!
//! [`handle`] is the whole function: `main` hands it every API Gateway request,
//! and the local gateway and tests call it in-process.
#![warn(missing_docs)]

mod handlers;
pub mod login_limit;
pub mod password;

use devconnect::{api, AppState};
use lambda_http::{Body, Request, Response};

/// The envelope `source` of this function's events.
pub const FUNCTION_NAME: &str = "auth";

/// API Gateway route keys this function serves; template.yaml must declare exactly these.
pub const ROUTES: &[&str] = &[
    "POST /auth/signup",
    "POST /auth/login",
    "POST /auth/logout",
    "GET /profile",
    "PATCH /profile",
    "GET /users/{userId}",
    "POST /auth/logout-all",
    "POST /auth/password",
    "GET /sessions",
    "DELETE /sessions/{id}",
    "POST /realtime/ticket",
    "PUT /admin/users/{userId}/tier",
];

pub use handlers::openapi;

/// Serves one request. Never fails: every error is already a JSON response.
pub async fn handle(state: &AppState, req: Request) -> Response<Body> {
    api::serve(req, async |meta, req| match meta.route_key.as_str() {
        "POST /auth/signup" => handlers::signup(state, meta, req).await,
        "POST /auth/login" => handlers::login(state, meta, req).await,
        "POST /auth/logout" => handlers::logout(state, meta, req).await,
        "GET /profile" => handlers::get_profile(state, req).await,
        "PATCH /profile" => handlers::patch_profile(state, meta, req).await,
        "GET /users/{userId}" => handlers::get_user(state, req).await,
        "POST /auth/logout-all" => handlers::logout_all(state, meta, req).await,
        "POST /auth/password" => handlers::change_password(state, meta, req).await,
        "GET /sessions" => handlers::list_sessions(state, req).await,
        "DELETE /sessions/{id}" => handlers::delete_session(state, meta, req).await,
        "POST /realtime/ticket" => handlers::realtime_ticket(state, req).await,
        "PUT /admin/users/{userId}/tier" => handlers::set_tier(state, meta, req).await,
        _ => Err(api::unknown_route(meta)),
    })
    .await
}
