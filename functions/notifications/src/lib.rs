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
    AppState,
};
use domain::Notification;
use lambda_http::{Body, Request, Response};

/// The envelope `source` of this function's events, and its dead letters' `consumer`.
pub const FUNCTION_NAME: &str = "notifications";

/// API Gateway route keys this function serves; template.yaml must declare exactly these.
pub const ROUTES: &[&str] = &["GET /notifications", "POST /notifications/read"];

pub use handlers::openapi;

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
    match store::apply_live(&state.store, &state.config, &notifications).await {
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
        .map(|n| (n.recipient.clone(), n.source_event_id.clone(), n.view().into()))
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

/// Applies `records` to projection generation `generation`: the rebuild's apply step
/// ([`devconnect::rebuild`]), the same planning and Redis script as [`consume`], but
/// silent (no PUBLISH, no NOTIFICATION_CREATED: history is rebuilt, not re-sent). Returns
/// how many records were refused for good (the live consumer dead-lettered those);
/// `Err` only for a failure worth retrying.
pub async fn replay(
    state: &AppState,
    generation: u64,
    records: &[devconnect::consumer::Incoming],
) -> Result<u64, devconnect::AppError> {
    let mut rejected = 0;
    let mut planned = Vec::new();
    for record in records {
        match domain::plan(&record.envelope) {
            Ok(Some(notification)) => planned.push(notification),
            Ok(None) => {}
            Err(_) => rejected += 1,
        }
    }
    let (results, _) = store::apply(
        &state.store,
        &state.config,
        generation,
        &planned,
        store::Publish::Silently,
    )
    .await?;
    for (recipient, applied) in results {
        match applied {
            Ok(_) => {}
            Err(e) if e.is_transient() => return Err(e),
            Err(e) => {
                tracing::warn!(recipient, error = %e, "rebuild: notifications not applied");
                rejected += planned.iter().filter(|n| n.recipient == recipient).count() as u64;
            }
        }
    }
    Ok(rejected)
}
