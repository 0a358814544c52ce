//! `GET /openapi.json`: the OpenAPI 3.1 document of every HTTP function hosted here,
//! generated from the handlers' types (see `devconnect::openapi`). It is the same document
//! as the committed `docs/openapi.json`; the `contract` tests keep the two equal.

use std::sync::LazyLock;

use axum::response::{IntoResponse, Response};
use devconnect::openapi::{self, OpenApi, Part};

/// Where the gateway serves the document.
pub const PATH: &str = "/openapi.json";

/// A function crate's name, its `ROUTES` and its `openapi()`.
pub type FunctionPart = (&'static str, &'static [&'static str], fn() -> OpenApi);

/// Each HTTP function's part of the document: its name (operations' tag), its `ROUTES`
/// (the `contract` tests check the part documents exactly those) and its `openapi()`.
/// A new HTTP function crate adds its one line here:
/// `(devconnect_x::FUNCTION_NAME, devconnect_x::ROUTES, devconnect_x::openapi)`.
pub const PARTS: &[FunctionPart] = &[
    (
        devconnect_auth::FUNCTION_NAME,
        devconnect_auth::ROUTES,
        devconnect_auth::openapi,
    ),
    (
        devconnect_requests::FUNCTION_NAME,
        devconnect_requests::ROUTES,
        devconnect_requests::openapi,
    ),
    (
        devconnect_messaging::FUNCTION_NAME,
        devconnect_messaging::ROUTES,
        devconnect_messaging::openapi,
    ),
    (
        devconnect_presence::FUNCTION_NAME,
        devconnect_presence::ROUTES,
        devconnect_presence::openapi,
    ),
    (
        devconnect_notifications::FUNCTION_NAME,
        devconnect_notifications::ROUTES,
        devconnect_notifications::openapi,
    ),
    (
        devconnect_analytics::FUNCTION_NAME,
        devconnect_analytics::ROUTES,
        devconnect_analytics::openapi,
    ),
    (
        devconnect_ops::FUNCTION_NAME,
        devconnect_ops::ROUTES,
        devconnect_ops::openapi,
    ),
    (
        devconnect_channels::FUNCTION_NAME,
        devconnect_channels::ROUTES,
        devconnect_channels::openapi,
    ),
];

/// The document of the whole HTTP API.
pub fn document() -> OpenApi {
    let parts: Vec<Part> = PARTS.iter().map(|(name, _, part)| (*name, *part)).collect();
    openapi::document(&parts)
}

/// The document as `docs/openapi.json` holds it, built once.
pub fn json() -> &'static str {
    static JSON: LazyLock<String> = LazyLock::new(|| openapi::to_json(&document()));
    &JSON
}

/// `GET /openapi.json`.
pub async fn serve() -> Response {
    ([("content-type", "application/json")], json()).into_response()
}
