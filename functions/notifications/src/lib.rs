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
    producer::OutgoingRecord,
    AppState,
};
use domain::Notification;
use lambda_http::{Body, Request, Response};
use store::Fate;

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
    let mut indexes = Vec::new();
    for (i, record) in batch.records.iter().enumerate() {
        match domain::plan(&record.envelope, &record.event) {
            Some(notification) => {
                planned.push(notification);
                indexes.push(i);
            }
            None => batch.report.skipped += 1,
        }
    }
    // Every notification's NOTIFICATION_CREATED is written while Redis applies the batch;
    // those not created now (duplicates, messages to users online) are dropped after.
    let (applied, mut records) = tokio::join!(
        store::apply_live(&state.store, &state.config, &planned),
        created_records(state, &planned)
    );
    let mut failures = Vec::new();
    let mut events = Vec::new();
    match applied {
        Ok(applied) => {
            for (((n, i), fate), record) in planned.iter().zip(&indexes).zip(&applied.fates).zip(&mut records) {
                match fate {
                    Fate::Created => {
                        batch.report.applied += 1;
                        events.extend(record.take());
                    }
                    Fate::Duplicate => batch.report.duplicates += 1,
                    // Messages to a user who is online need no notification.
                    Fate::Unneeded => batch.report.skipped += 1,
                    Fate::Failed => failures.push((*i, applied.failed[&n.recipient].clone())),
                }
            }
        }
        Err(e) => failures.extend(indexes.iter().map(|i| (*i, Failure::from(&e)))),
    }
    if let Err(e) = state.publisher.send_or_park(events).await {
        // Neither the broker nor the outbox took them; the notifications themselves are stored.
        tracing::error!(error = %e, "NOTIFICATION_CREATED events lost: broker and Redis both unavailable");
    }
    for (i, failure) in failures {
        batch.fail(i, failure);
    }
    batch.finish(&state.publisher).await
}

/// The NOTIFICATION_CREATED record of each planned notification, its view embedded as
/// written for Redis. Yields first, so the Redis call polled beside it is on its way and
/// the records are written while Redis works.
async fn created_records(state: &AppState, planned: &[Notification]) -> Vec<Option<OutgoingRecord>> {
    tokio::task::yield_now().await;
    planned
        .iter()
        .map(|n| {
            let record = state.publisher.record_with_data(
                EventType::NotificationCreated,
                &n.recipient,
                &n.source_event_id,
                n.view_json.raw(),
            );
            record
                .inspect_err(|e| tracing::error!(error = %e, "a NOTIFICATION_CREATED event could not be written"))
                .ok()
        })
        .collect()
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
    let planned: Vec<Notification> = records
        .iter()
        .filter_map(|r| domain::plan(&r.envelope, &r.event))
        .collect();
    let (applied, _) = store::apply(
        &state.store,
        &state.config,
        generation,
        &planned,
        store::Publish::Silently,
    )
    .await?;
    let mut rejected = 0;
    for (recipient, failure) in applied.failed {
        match failure {
            Failure::Transient(reason) => return Err(devconnect::AppError::unavailable("redis", reason)),
            Failure::Permanent(reason) => {
                tracing::warn!(recipient, %reason, "rebuild: notifications not applied");
                rejected += planned.iter().filter(|n| n.recipient == recipient).count() as u64;
            }
        }
    }
    Ok(rejected)
}
