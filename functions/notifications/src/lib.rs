//! Notifications: an MSK consumer that turns domain events into per-user
//! notifications, and the HTTP routes that read them.
//!
//! Which event notifies whom is decided in [`domain`]; [`store`] applies a whole
//! batch in one Redis round trip (one script per recipient, pipelined), deduping
//! by eventId so a redelivered batch changes nothing twice.
#![warn(missing_docs)]

pub mod domain;
mod handlers;
pub mod store;

use aws_lambda_events::event::kafka::KafkaEvent;
use devconnect::{
    api,
    consumer::{self, BatchReport, Poison, Retryable},
    events::EventType,
    AppState,
};
use lambda_http::{Body, Request, Response};

/// The envelope `source` of this function's events, and its dead letters' `consumer`.
pub const FUNCTION_NAME: &str = "notifications";

/// API Gateway route keys this function serves; template.yaml must declare exactly these.
pub const ROUTES: &[&str] = &["GET /notifications", "POST /notifications/read"];

/// Serves one HTTP request. Never fails: every error is already a JSON response.
pub async fn handle(state: &AppState, req: Request) -> Response<Body> {
    api::serve(req, async |meta, req| match meta.route_key.as_str() {
        "GET /notifications" => handlers::list(state, req).await,
        "POST /notifications/read" => handlers::mark_read(state, req).await,
        _ => Err(api::unknown_route(meta)),
    })
    .await
}

/// Processes one MSK batch. `Err` only for transient failures (the batch is retried).
pub async fn consume(state: &AppState, event: KafkaEvent) -> Result<BatchReport, Retryable> {
    let (records, mut poison) = consumer::decode_batch(&event);
    let mut report = BatchReport {
        received: records.len() + poison.len(),
        ..BatchReport::default()
    };
    let mut planned = Vec::new();
    for record in &records {
        match domain::plan(&record.envelope) {
            Ok(Some(notification)) => planned.push(notification),
            Ok(None) => report.skipped += 1,
            Err(reason) => poison.push(Poison::invalid_data(record, reason)),
        }
    }
    let outcome = store::apply(&state.store, &state.config, &planned).await?;
    report.applied = outcome.created.len();
    report.duplicates = outcome.duplicates;
    report.skipped += planned.len() - outcome.created.len() - outcome.duplicates;
    let created = outcome
        .created
        .into_iter()
        .map(|n| {
            (
                EventType::NotificationCreated,
                n.recipient.clone(),
                n.source_event_id.clone(),
                n.view(),
            )
        })
        .collect();
    state.publisher.publish_all(created).await?;
    report.dead_lettered = poison.len();
    consumer::dead_letter(&state.publisher, FUNCTION_NAME, &poison).await?;
    tracing::info!(?report, "notifications batch");
    Ok(report)
}
