//! Channels: notifications beyond the app (email, SMS), the part before the senders.
//!
//! - The preferences routes ([`handle`]): per kind and channel on/off, quiet hours,
//!   a verified phone number, and a signed unsubscribe link that works without login.
//! - The router ([`consume`], MSK trigger on notification-events): each
//!   NOTIFICATION_CREATED becomes EMAIL_REQUESTED / SMS_REQUESTED on email-events /
//!   sms-events, as the recipient's preferences say ([`router`]), exactly once per
//!   notification and channel ([`deliveries`]).
//! - The scheduler ([`run_schedule`], every minute): SMS held by quiet hours are
//!   released when the window ends, and each user's daily digest of low-priority kinds
//!   goes out as one email when their day ends.
//!
//! Every entry point that depends on the time has an `_at` twin taking the time, so
//! tests drive the clock instead of sleeping.
#![warn(missing_docs)]

pub mod deliveries;
mod handlers;
pub mod kinds;
pub mod preferences;
pub mod router;
pub mod settings;
pub mod store;
pub mod unsubscribe;

use std::collections::{BTreeMap, HashMap, HashSet};

use aws_lambda_events::event::kafka::KafkaEvent;
use chrono::{DateTime, Utc};
use devconnect::{
    api,
    consumer::{Batch, BatchOutcome, Failure},
    keys, metrics,
    payloads::Event,
    AppError, AppState,
};
use lambda_http::{Body, Request, Response};
use preferences::Preferences;
use router::{Action, Context, Notification};
use settings::Settings;

/// The envelope `source` of this crate's events (EMAIL_REQUESTED, SMS_REQUESTED), and its
/// dead letters' `consumer`.
pub const FUNCTION_NAME: &str = "channels";

/// API Gateway route keys the preferences function serves; template.yaml must declare exactly these.
pub const ROUTES: &[&str] = &[
    "GET /notifications/preferences",
    "PUT /notifications/preferences",
    "POST /notifications/preferences/phone/verify",
    "GET /notifications/unsubscribe",
];

pub use handlers::openapi;

/// Everything the channels functions need: the shared clients and their own settings.
#[derive(Clone)]
pub struct Channels {
    /// Redis, Kafka, config.
    pub app: AppState,
    /// The unsubscribe secret and public URL.
    pub settings: Settings,
}

/// Serves one HTTP request. Never fails: every error is already a JSON response.
pub async fn handle(ch: &Channels, req: Request) -> Response<Body> {
    api::serve(req, async |meta, req| match meta.route_key.as_str() {
        "GET /notifications/preferences" => handlers::get(ch, req).await,
        "PUT /notifications/preferences" => handlers::put(ch, req).await,
        "POST /notifications/preferences/phone/verify" => handlers::verify_phone(ch, req).await,
        "GET /notifications/unsubscribe" => handlers::unsubscribe(ch, req).await,
        _ => Err(api::unknown_route(meta)),
    })
    .await
}

/// Routes one MSK batch of notification-events, now.
pub async fn consume(ch: &Channels, event: KafkaEvent) -> BatchOutcome {
    consume_at(ch, event, Utc::now()).await
}

/// The recipient and actor records a batch needs, read in one round trip.
struct Known<'a> {
    preferences: HashMap<String, Preferences>,
    /// Recipients whose keys could not be read (e.g. a key of the wrong type): only their
    /// records fail, the rest of the batch goes on.
    unreadable: HashMap<String, AppError>,
    /// Recipient id -> account email (absent: no such user).
    emails: HashMap<String, String>,
    /// User id -> display name.
    names: HashMap<String, String>,
    /// (recipient, actor) conversations whose message alert cooldown is running.
    cooling: HashSet<(&'a str, &'a str)>,
}

/// One reply of a pipeline read as `T` (a key of the wrong type is a permanent error).
fn parse<T: redis::FromRedisValue>(value: redis::Value) -> Result<T, AppError> {
    T::from_redis_value(value).map_err(|e| AppError::from(redis::RedisError::from(e)))
}

async fn read_known<'a>(
    ch: &Channels,
    recipients: &[&str],
    actors: &[&str],
    conversations: &[(&'a str, &'a str)],
) -> Result<Known<'a>, AppError> {
    let mut pipe = redis::pipe();
    for id in recipients {
        pipe.hgetall(keys::channel_preferences(id));
        pipe.hget(keys::user(id), "email");
    }
    for id in actors {
        pipe.cmd("HMGET").arg(keys::user(id)).arg("firstName").arg("lastName");
    }
    for (recipient, actor) in conversations {
        pipe.pttl(keys::channel_message_cooldown(recipient, actor));
    }
    pipe.ignore_errors();
    let replies: Vec<redis::RedisResult<redis::Value>> = pipe.query_async(&mut ch.app.store.conn()).await?;
    let mut known = Known {
        preferences: HashMap::new(),
        unreadable: HashMap::new(),
        emails: HashMap::new(),
        names: HashMap::new(),
        cooling: HashSet::new(),
    };
    let mut replies = replies.into_iter();
    let mut next = || replies.next().unwrap_or(Ok(redis::Value::Nil)).map_err(AppError::from);
    for id in recipients {
        let (prefs, email) = (next(), next());
        let read = prefs
            .and_then(parse::<HashMap<String, String>>)
            .and_then(|prefs| Ok((prefs, email.and_then(parse::<Option<String>>)?)));
        match read {
            Ok((prefs, email)) => {
                known
                    .preferences
                    .insert(id.to_string(), Preferences::from_fields(prefs));
                if let Some(email) = email {
                    known.emails.insert(id.to_string(), email);
                }
            }
            Err(e) => {
                known.unreadable.insert(id.to_string(), e);
            }
        }
    }
    for id in actors {
        // An unreadable actor record only costs the name in the text.
        let name: (Option<String>, Option<String>) = next().and_then(parse).unwrap_or_default();
        let full = [name.0.unwrap_or_default(), name.1.unwrap_or_default()].join(" ");
        known.names.insert(id.to_string(), full.trim().to_string());
    }
    for (recipient, actor) in conversations {
        // A cooldown is a key with a TTL: PTTL is -2 without the key and -1 for a key without
        // one (written by hand, of any type), which alerts and is then replaced by a real
        // cooldown, instead of silencing the conversation for good. PTTL cannot fail on a
        // key's type; an unreadable reply at worst alerts once more.
        if next().and_then(parse::<i64>).is_ok_and(|ms| ms > 0) {
            known.cooling.insert((*recipient, *actor));
        }
    }
    Ok(known)
}

/// Routes one batch as if at `now`: one round trip reads every recipient's preferences
/// and email, every actor's name and which conversations' message alerts are cooling
/// down, one pipeline writes every recipient's deliveries
/// with their markers, then one produce per partition and one round trip to clear the
/// produced entries. Three Redis round trips per batch, whatever its size.
pub async fn consume_at(ch: &Channels, event: KafkaEvent, now: DateTime<Utc>) -> BatchOutcome {
    let state = &ch.app;
    let mut batch = Batch::decode(FUNCTION_NAME, event);
    let mut parsed: Vec<(usize, Notification)> = Vec::new();
    let mut failures: Vec<(usize, Failure)> = Vec::new();
    for (i, record) in batch.records.iter().enumerate() {
        let Event::NotificationCreated(n) = &record.event else {
            batch.report.skipped += 1;
            continue;
        };
        if n.id.is_empty() || n.recipient_id.is_empty() {
            failures.push((i, Failure::Permanent("invalid data: empty id or recipientId".into())));
            continue;
        }
        parsed.push((i, n.clone()));
    }
    let mut recipients: Vec<&str> = parsed.iter().map(|(_, n)| n.recipient_id.as_str()).collect();
    recipients.sort_unstable();
    recipients.dedup();
    let mut actors: Vec<&str> = parsed
        .iter()
        .map(|(_, n)| n.actor_id.as_str())
        .filter(|a| !a.is_empty())
        .collect();
    actors.sort_unstable();
    actors.dedup();
    let mut conversations: Vec<(&str, &str)> = if ch.settings.message_cooldown.is_zero() {
        Vec::new()
    } else {
        parsed
            .iter()
            .filter(|(_, n)| router::is_message(n) && !n.actor_id.is_empty())
            .map(|(_, n)| (n.recipient_id.as_str(), n.actor_id.as_str()))
            .collect()
    };
    conversations.sort_unstable();
    conversations.dedup();

    let mut sent = Vec::new();
    if !parsed.is_empty() {
        match read_known(ch, &recipients, &actors, &conversations).await {
            Err(e) => failures.extend(parsed.iter().map(|(i, _)| (*i, Failure::from(&e)))),
            Ok(known) => route(ch, &known, &parsed, now, &mut batch, &mut failures, &mut sent).await,
        }
    }
    deliveries::produce_now(&state.store, &state.producer, sent).await;
    for (i, failure) in failures {
        batch.fail(i, failure);
    }
    batch.finish(&state.publisher).await
}

/// Plans each parsed notification and applies the plans; fills in the report.
async fn route(
    ch: &Channels,
    known: &Known<'_>,
    parsed: &[(usize, Notification)],
    now: DateTime<Utc>,
    batch: &mut Batch,
    failures: &mut Vec<(usize, Failure)>,
    sent: &mut Vec<deliveries::Outgoing>,
) {
    let defaults = Preferences::from_fields(HashMap::new());
    // Grows as this batch's messages alert, so a burst within one batch alerts once too.
    let mut cooling = known.cooling.clone();
    let mut silenced = 0;
    let mut by_recipient: BTreeMap<String, Vec<Action>> = BTreeMap::new();
    let mut planned: Vec<(usize, &str, Vec<String>)> = Vec::new();
    for (i, n) in parsed {
        if let Some(e) = known.unreadable.get(&n.recipient_id) {
            failures.push((*i, Failure::from(e)));
            continue;
        }
        // A recipient without a record (deleted) gets nothing.
        let Some(email) = known.emails.get(&n.recipient_id) else {
            batch.report.skipped += 1;
            continue;
        };
        let ctx = Context {
            preferences: known.preferences.get(&n.recipient_id).unwrap_or(&defaults),
            email,
            actor_name: known.names.get(&n.actor_id).map_or("", String::as_str),
            unsubscribe_base: &ch.settings.public_api_url,
            signer: &ch.settings.signer,
            message_cooldown: ch.settings.message_cooldown,
            cooling_down: router::is_message(n) && cooling.contains(&(n.recipient_id.as_str(), n.actor_id.as_str())),
        };
        let actions = router::plan(n, &ctx, now);
        if actions.iter().any(|a| matches!(a, Action::Cooldown { .. })) {
            cooling.insert((&n.recipient_id, &n.actor_id));
        }
        if actions.is_empty() {
            if ctx.cooling_down {
                silenced += 1;
            }
            batch.report.skipped += 1;
            continue;
        }
        planned.push((*i, &n.recipient_id, actions.iter().map(Action::marker).collect()));
        by_recipient.entry(n.recipient_id.clone()).or_default().extend(actions);
    }
    if silenced > 0 {
        ch.app.metrics.count(metrics::MESSAGE_ALERTS_SILENCED, silenced);
    }
    match deliveries::apply(&ch.app.store, &ch.app.config.topics, &by_recipient, now).await {
        Err(e) => failures.extend(planned.iter().map(|(i, _, _)| (*i, Failure::from(&e)))),
        Ok(mut results) => {
            for (i, recipient, markers) in &planned {
                match results.get(*recipient) {
                    Some(Ok(applied)) if markers.iter().any(|m| applied.fresh.contains(m)) => batch.report.applied += 1,
                    Some(Ok(_)) => batch.report.duplicates += 1,
                    Some(Err(failure)) => failures.push((*i, failure.clone())),
                    None => failures.push((*i, Failure::Permanent("recipient missing from the results".into()))),
                }
            }
            for applied in results.values_mut().flatten() {
                sent.append(&mut applied.sent);
            }
        }
    }
}

/// One scheduler run, now: see [`run_schedule_at`].
pub async fn run_schedule(ch: &Channels) -> Result<serde_json::Value, AppError> {
    run_schedule_at(ch, Utc::now()).await
}

/// Moves what is due at `now` (held SMS, finished days' digests) to the outbox and
/// produces it at once (what the broker does not take stays for the relay).
pub async fn run_schedule_at(ch: &Channels, now: DateTime<Utc>) -> Result<serde_json::Value, AppError> {
    let state = &ch.app;
    let released = deliveries::release(
        &state.store,
        &state.config.topics,
        &ch.settings.signer,
        &ch.settings.public_api_url,
        now,
    )
    .await?;
    let produced = deliveries::produce_now(&state.store, &state.producer, released.moved).await;
    Ok(serde_json::json!({
        "smsReleased": released.sms_released,
        "digestsSent": released.digests_sent,
        "produced": produced,
    }))
}
