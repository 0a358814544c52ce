//! Analytics: an MSK consumer over every topic that keeps daily and hourly counts
//! per event type, DAU/MAU (HyperLogLog), new users, messages and the connection
//! funnel; and GET /analytics/daily for admins.
//!
//! A month's keys share one hash tag (`{a:YYYY-MM}`), so one script per day in a
//! batch dedupes by eventId and updates every counter atomically; a batch is one
//! pipeline, one round trip.
#![warn(missing_docs)]

mod handlers;
pub mod store;

use aws_lambda_events::event::kafka::KafkaEvent;
use devconnect::{
    api,
    consumer::{self, BatchReport, Retryable},
    AppState,
};
use lambda_http::{Body, Request, Response};

/// The envelope `source` of this function's events, and its dead letters' `consumer`.
pub const FUNCTION_NAME: &str = "analytics";

/// API Gateway route keys this function serves; template.yaml must declare exactly these.
pub const ROUTES: &[&str] = &["GET /analytics/daily"];

/// Serves one HTTP request. Never fails: every error is already a JSON response.
pub async fn handle(state: &AppState, req: Request) -> Response<Body> {
    api::serve(req, async |meta, req| match meta.route_key.as_str() {
        "GET /analytics/daily" => handlers::daily(state, req).await,
        _ => Err(api::unknown_route(meta)),
    })
    .await
}

/// Processes one MSK batch. `Err` only for transient failures (the batch is retried).
pub async fn consume(state: &AppState, event: KafkaEvent) -> Result<BatchReport, Retryable> {
    let (records, poison) = consumer::decode_batch(&event);
    let outcome = store::count(&state.store, &records).await?;
    let report = BatchReport {
        received: records.len() + poison.len(),
        applied: outcome.applied,
        duplicates: outcome.duplicates,
        skipped: 0,
        dead_lettered: poison.len(),
    };
    consumer::dead_letter(&state.publisher, FUNCTION_NAME, &poison).await?;
    tracing::info!(?report, "analytics batch");
    Ok(report)
}
