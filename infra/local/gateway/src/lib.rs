//! The local gateway: API Gateway and the Lambda service, minus Docker.
//!
//! - [`template`] reads the routes and schedules from `template.yaml`, so the local
//!   stack serves exactly what AWS would.
//! - [`apigw`] turns an HTTP request into a real API Gateway v2 event and back.
//! - [`functions`] maps a template LogicalId to the handler, called in-process.
//! - [`msk`] emulates the MSK event source mappings: poll, invoke, commit on success.
//! - [`server`] is the HTTP front door, with 404/405 in the product's error shape.
//! - [`websocket`] is the WebSocket API and its `@connections` endpoint.
#![warn(missing_docs)]

pub mod apigw;
pub mod functions;
pub mod msk;
pub mod server;
pub mod template;
pub mod websocket;

/// `template.yaml` at the workspace root (the gateway is built from this checkout).
pub fn default_template_path() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../template.yaml")
}
