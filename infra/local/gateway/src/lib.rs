//! The local gateway: API Gateway and the Lambda service, minus Docker.
//!
//! - [`template`] reads the routes and schedules from `template.yaml`, so the local
//!   stack serves exactly what AWS would.
//! - [`gaps`] makes every part of the template the gateway does not emulate an error
//!   naming it (opt out by name with `LOCAL_GATEWAY_IGNORE=Resource.Property,...`).
//! - [`routes`] is the HTTP API's route table, compiled once: a request is matched
//!   without allocating.
//! - [`apigw`] turns an HTTP request into a real API Gateway v2 event and back.
//! - [`functions`] maps a template LogicalId to the handler, called in-process.
//! - [`msk`] emulates the MSK event source mappings: poll, invoke, commit; bounded
//!   retries, bisection, record age, partial batch responses, on-failure topic.
//! - [`server`] is the HTTP front door, with 404/405 in the product's error shape, and
//!   `GET /_local/metrics`: what every hosted function recorded, as CloudWatch would see it.
//! - [`openapi`] serves `GET /openapi.json`, the generated OpenAPI document.
//! - [`websocket`] is the WebSocket API and its `@connections` endpoint.
#![warn(missing_docs)]

pub mod apigw;
pub mod functions;
pub mod gaps;
pub mod msk;
pub mod openapi;
pub mod outbox;
pub mod routes;
pub mod server;
pub mod template;
pub mod websocket;

/// mimalloc for every program that hosts the gateway (`local-gateway`, the tests, the
/// benchmarks): under load glibc's malloc and free were about a fifth of the gateway's
/// CPU per request (the cpu_cost bench, issue 14).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `template.yaml` of this checkout: the nearest one above the working directory
/// (`cargo run` from the root, `cargo test` from a crate folder), else the one next to
/// the sources this was built from. Found at run time: two checkouts sharing one
/// target directory can share build artifacts, so a path baked in at compile time may
/// point at the other checkout.
pub fn default_template_path() -> std::path::PathBuf {
    let found = std::env::current_dir()
        .ok()
        .and_then(|dir| dir.ancestors().map(|d| d.join("template.yaml")).find(|p| p.is_file()));
    found.unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../template.yaml"))
}
