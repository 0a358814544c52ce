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
    consumer::{Batch, BatchOutcome, Failure},
    events::EventType,
    AppState,
};
use domain::Notification;
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

/// Processes one MSK batch. Never fails the invocation: a record that cannot be
/// applied is dead-lettered (permanent) or handed back for retry (transient).
pub async fn consume(state: &AppState, event: KafkaEvent) -> BatchOutcome {
    let mut batch = Batch::decode(FUNCTION_NAME, event);
    let mut planned = Vec::new();
    let mut failures = Vec::new();
    for (i, record) in batch.records.iter().enumerate() {
        match domain::plan(&record.envelope) {
            Ok(Some(notification)) => planned.push((i, notification)),
            Ok(None) => batch.report.skipped += 1,
            Err(reason) => failures.push((i, Failure::Permanent(reason))),
        }
    }
    let notifications: Vec<Notification> = planned.iter().map(|(_, n)| n.clone()).collect();
    let mut created = Vec::new();
    match store::apply(&state.store, &state.config, &notifications).await {
        Ok(results) => {
            let mut stored = 0;
            for (i, n) in &planned {
                match &results[&n.recipient] {
                    Ok(_) => stored += 1,
                    Err(e) => failures.push((*i, Failure::from(e))),
                }
            }
            for applied in results.values().flatten() {
                batch.report.applied += applied.created.len();
                batch.report.duplicates += applied.duplicates;
                created.extend(applied.created.iter().cloned());
            }
            // Messages to a user who is online need no notification.
            batch.report.skipped += stored - batch.report.applied - batch.report.duplicates;
        }
        Err(e) => failures.extend(planned.iter().map(|(i, _)| (*i, Failure::from(&e)))),
    }
    let events = created
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
    if let Err(e) = state.publisher.publish_all(events).await {
        // Neither the broker nor the outbox took them; the notifications themselves are stored.
        tracing::error!(error = %e, "NOTIFICATION_CREATED events lost: broker and Redis both unavailable");
    }
    for (i, failure) in failures {
        batch.fail(i, failure);
    }
    batch.finish(&state.publisher).await
}
