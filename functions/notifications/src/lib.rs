//! Notifications: an MSK consumer that turns domain events into per-user
//! notifications, and the HTTP routes that read them.
//!
//! Which event notifies whom is decided in [`domain`]; [`store`] applies a batch's
//! notifications in one Redis round trip per part (script calls of up to 100 recipients, pipelined;
//! a large batch goes in a few parts that overlap, see [`consume`]), deduping by eventId
//! so a redelivered batch changes nothing twice.
#![warn(missing_docs)]

pub mod domain;
mod handlers;
pub mod store;

use std::collections::HashMap;

use aws_lambda_events::event::kafka::KafkaEvent;
use devconnect::{
    api,
    consumer::{Batch, BatchOutcome, Failure},
    events::EventType,
    metrics,
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

/// Most parts a batch is applied in (see [`consume`]): each is one Redis round trip.
pub const MAX_PARTS: usize = 4;

/// Fewest notifications a part holds (unless the batch has fewer): a part costs a
/// pipeline, a pointer read and a produce request, worth paying only for overlap that
/// saves more.
pub const MIN_PART_NOTIFICATIONS: usize = 250;

/// Processes one MSK batch. Never fails the invocation: a record that cannot be
/// applied is dead-lettered (permanent) or handed back for retry (transient).
///
/// The batch is decoded and planned on two threads ([`Batch::decode_with`]), then its
/// notifications are applied in up to [`MAX_PARTS`] parts whose calls are all sent at
/// once: while Redis applies one part, the process writes the NOTIFICATION_CREATED
/// records of the parts before and the broker takes those, instead of each waiting for
/// the whole batch. A recipient's notifications all go in one part, so they are applied
/// (and their events produced) in batch order, as before;
/// parts hold different recipients, so their order does not matter. A part that fails
/// fails only its own recipients' records (other parts' effects stay, and a redelivery
/// finds them duplicates).
pub async fn consume(state: &AppState, event: KafkaEvent) -> BatchOutcome {
    let (mut batch, planned) = Batch::decode_with(FUNCTION_NAME, event, |r| domain::plan(&r.envelope, &r.event));
    let planned: Vec<(usize, Notification)> = planned
        .into_iter()
        .enumerate()
        .filter_map(|(i, n)| n.map(|n| (i, n)))
        .collect();
    batch.report.skipped += batch.records.len() - planned.len();
    // The parts run at once on this task, outcomes in the parts' order: each part's Redis
    // call is sent when it is first polled, so all are on their way before any reply is
    // read, and what a part does with its reply (and its produce) overlaps Redis's work on
    // the parts after it. Joined, not spawned: a part borrows the state and keeps the
    // invocation's trace, and cancelling the invocation cancels them.
    let parts = parts(planned).into_iter().map(|part| apply_part(state, part));
    for part in futures::future::join_all(parts).await {
        batch.report.applied += part.applied;
        batch.report.duplicates += part.duplicates;
        batch.report.skipped += part.skipped;
        for (i, failure) in part.failures {
            batch.fail(i, failure);
        }
    }
    batch.finish(&state.publisher).await
}

/// `planned` (batch index, notification) split into up to [`MAX_PARTS`] parts of about
/// equal size, each recipient's notifications whole in one part, in batch order.
fn parts(planned: Vec<(usize, Notification)>) -> Vec<Vec<(usize, Notification)>> {
    let total = planned.len();
    let target = total.div_ceil(MAX_PARTS).max(MIN_PART_NOTIFICATIONS);
    // Recipients in order of first appearance, each with its part.
    let mut part_of: HashMap<&str, usize> = HashMap::new();
    let mut count: HashMap<&str, usize> = HashMap::new();
    for (_, n) in &planned {
        *count.entry(n.recipient.as_str()).or_default() += 1;
    }
    let (mut part, mut filled) = (0, 0);
    for (_, n) in &planned {
        let recipient = n.recipient.as_str();
        if part_of.contains_key(recipient) {
            continue;
        }
        if filled >= target && part + 1 < MAX_PARTS {
            part += 1;
            filled = 0;
        }
        part_of.insert(recipient, part);
        filled += count[recipient];
    }
    let assigned: Vec<usize> = planned.iter().map(|(_, n)| part_of[n.recipient.as_str()]).collect();
    let mut parts: Vec<Vec<(usize, Notification)>> = (0..=part).map(|_| Vec::new()).collect();
    for (p, item) in assigned.into_iter().zip(planned) {
        parts[p].push(item);
    }
    parts.retain(|p| !p.is_empty());
    parts
}

/// What applying one part did.
#[derive(Default)]
struct Part {
    applied: usize,
    duplicates: usize,
    skipped: usize,
    failures: Vec<(usize, Failure)>,
}

/// Applies one part (batch index, notification) and produces the NOTIFICATION_CREATED
/// events of the notifications it created.
async fn apply_part(state: &AppState, part: Vec<(usize, Notification)>) -> Part {
    let (indexes, planned): (Vec<usize>, Vec<Notification>) = part.into_iter().unzip();
    // Every notification's NOTIFICATION_CREATED is written while Redis applies the part;
    // those not created now (duplicates, messages to users online) are dropped after.
    let (applied, records) = tokio::join!(
        store::apply_live(&state.store, &state.config, &planned),
        created_records(state, &planned)
    );
    let mut outcome = Part::default();
    let mut events = Vec::new();
    match applied {
        Ok(applied) => {
            for (((n, i), fate), record) in planned.iter().zip(&indexes).zip(&applied.fates).zip(records) {
                match fate {
                    Fate::Created => match record {
                        Ok(event) => {
                            outcome.applied += 1;
                            events.push(event);
                        }
                        // Stored, but its event can never be produced: dead-lettered (and
                        // counted as such) so the gap is visible, not only logged.
                        Err(reason) => outcome.failures.push((*i, Failure::Permanent(reason))),
                    },
                    Fate::Duplicate => outcome.duplicates += 1,
                    // Messages to a user who is online need no notification.
                    Fate::Unneeded => outcome.skipped += 1,
                    Fate::Failed => outcome.failures.push((*i, applied.failed[&n.recipient].clone())),
                }
            }
        }
        Err(e) => {
            drop(records);
            outcome.failures.extend(indexes.iter().map(|i| (*i, Failure::from(&e))));
        }
    }
    let produced = events.len() as u64;
    if let Err(e) = state.publisher.send_or_park(events).await {
        // Neither the broker nor the outbox took them, and the notifications are stored: a
        // redelivery finds them duplicates and writes no event. Counted and alarmed.
        state.metrics.count(metrics::EVENTS_LOST, produced);
        tracing::error!(error = %e, lost = produced, "NOTIFICATION_CREATED events lost: broker and Redis both unavailable");
    }
    outcome
}

/// The NOTIFICATION_CREATED record of each planned notification, its view embedded as
/// written for Redis, or why it could not be written. Yields first, so the Redis call
/// polled beside it is on its way and the records are written while Redis works.
async fn created_records(state: &AppState, planned: &[Notification]) -> Vec<Result<OutgoingRecord, String>> {
    tokio::task::yield_now().await;
    planned
        .iter()
        .map(|n| {
            state
                .publisher
                .record_with_data(
                    EventType::NotificationCreated,
                    &n.recipient,
                    &n.source_event_id,
                    n.view_json.raw(),
                )
                .map_err(|e| {
                    format!("notification stored, but its NOTIFICATION_CREATED event could not be written: {e}")
                })
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
