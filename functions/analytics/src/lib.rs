//! Analytics: an MSK consumer over every topic that keeps daily and hourly counts
//! per event type, DAU/MAU (HyperLogLog), new users, messages and the connection
//! funnel; and GET /analytics/daily for admins.
//!
//! A month's keys share one hash tag (`{a:YYYY-MM}`), so one script per day in a
//! batch dedupes by eventId and updates every counter atomically; a batch is one
//! pipeline, one round trip.
//!
//! The consumer also announces derived events on analytics-events, each exactly once:
//! a user's first connection and first message (MILESTONE) and each closed day's summary
//! (DAILY_SUMMARY); see [`derived`].
#![warn(missing_docs)]

pub mod derived;
mod handlers;
pub mod store;

use aws_lambda_events::event::kafka::KafkaEvent;
use devconnect::{
    api,
    consumer::{Batch, BatchOutcome, Failure, Incoming},
    AppState,
};
use lambda_http::{Body, Request, Response};

/// The envelope `source` of this function's events, and its dead letters' `consumer`.
pub const FUNCTION_NAME: &str = "analytics";

/// API Gateway route keys this function serves; template.yaml must declare exactly these.
pub const ROUTES: &[&str] = &["GET /analytics/daily"];

pub use handlers::openapi;

/// Serves one HTTP request. Never fails: every error is already a JSON response.
pub async fn handle(state: &AppState, req: Request) -> Response<Body> {
    api::serve(req, async |meta, req| match meta.route_key.as_str() {
        "GET /analytics/daily" => handlers::daily(state, req).await,
        _ => Err(api::unknown_route(meta)),
    })
    .await
}

/// Processes one MSK batch. Never fails the invocation: a record that cannot be
/// counted is dead-lettered (permanent) or handed back for retry (transient).
pub async fn consume(state: &AppState, event: KafkaEvent) -> BatchOutcome {
    consume_at(state, event, chrono::Utc::now()).await
}

/// [`consume`] with the wall clock reading `now`, which only caps how far the batch's
/// event times may close days ([`derived`]); tests close a day without waiting for midnight.
pub async fn consume_at(state: &AppState, event: KafkaEvent, now: chrono::DateTime<chrono::Utc>) -> BatchOutcome {
    let mut batch = Batch::decode(FUNCTION_NAME, event);
    let records: Vec<&Incoming> = batch.records.iter().collect();
    // The derived events' first round trip (which milestones are new, which due days are
    // open) goes out just before the counting one, so new milestones' outbox entries are
    // written while Redis counts. The due days are closed only after the count returned
    // (it may count the batch a second time, into a generation a rebuild just made live),
    // so a day the batch makes due is summed with the batch in it.
    let ((announced, due), counted) = tokio::join!(
        derived::announce(state, &batch.records, now),
        store::count_live(&state.store, &records)
    );
    let closed = due.close(state, &batch.records, now).await;
    let failures: Vec<(usize, Failure)> = match counted {
        Ok(days) => {
            for counted in days.values().flatten() {
                batch.report.applied += counted.applied;
                batch.report.duplicates += counted.duplicates;
            }
            if days.values().all(Result::is_ok) {
                Vec::new()
            } else {
                batch
                    .records
                    .iter()
                    .enumerate()
                    .filter_map(|(i, r)| days[&store::day_of(r)].as_ref().err().map(|e| (i, Failure::from(e))))
                    .collect()
            }
        }
        Err(e) => (0..batch.records.len()).map(|i| (i, Failure::from(&e))).collect(),
    };
    for (i, failure) in failures {
        batch.fail(i, failure);
    }
    for (i, failure) in announced.into_iter().chain(closed) {
        batch.fail(i, failure);
    }
    batch.finish(&state.publisher).await
}

/// Counts `records` into projection generation `generation`: the rebuild's apply step
/// ([`devconnect::rebuild`]), the same counting as [`consume`] and nothing else (derived
/// events are not produced again). Returns how many records were refused for good (the
/// live consumer dead-lettered those); `Err` only for a failure worth retrying.
pub async fn replay(state: &AppState, generation: u64, records: &[Incoming]) -> Result<u64, devconnect::AppError> {
    let records: Vec<&Incoming> = records.iter().collect();
    let (days, _) = store::count(&state.store, generation, &records).await?;
    let mut rejected = 0;
    for (day, counted) in days {
        match counted {
            Ok(_) => {}
            Err(e) if e.is_transient() => return Err(e),
            Err(e) => {
                tracing::warn!(day, error = %e, "rebuild: day not counted");
                rejected += records.iter().filter(|r| store::day_of(r) == day).count() as u64;
            }
        }
    }
    Ok(rejected)
}
