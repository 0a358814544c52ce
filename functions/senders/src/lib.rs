//! The senders: MSK consumers of `email-events` and `sms-events` that hand each
//! EMAIL_REQUESTED / SMS_REQUESTED to its provider (SES, SNS), once.
//!
//! - [`channel`]: the one [`Channel`] trait and how provider failures are classified.
//! - [`email`] (SES v2) and [`sms`] (SNS): the two providers.
//! - [`marker`]: the idempotency marker per (notification, channel), and its window.
//! - [`aws`]: bounded SDK calls, SDK retries off.
//! - [`capture`] and [`local`]: the local stack's outbox (`/_local/outbox/*`).
//!
//! Per record: decode and validate the [`Delivery`] (bad ones are dead-lettered before
//! any provider call), claim the marker, send (throttling retried here with backoff
//! until [`RECORD_DEADLINE`]), mark it sent. A transient failure (Redis, the provider
//! down, throttled past the deadline) hands the record and the rest of its partition
//! back to the event source; a permanent one (bad address, message rejected) is
//! dead-lettered with the provider's reason. Partitions are sent concurrently, records
//! of one partition in order.
#![warn(missing_docs)]

pub mod aws;
pub mod capture;
pub mod channel;
pub mod email;
pub mod local;
pub mod marker;
pub mod sms;

use std::{collections::BTreeMap, time::Duration};

use aws_lambda_events::event::kafka::KafkaEvent;
use devconnect::{
    consumer::{Batch, BatchOutcome, Failure},
    delivery::{Channel as ChannelName, Delivery},
    metrics,
    payloads::Event,
    AppState,
};
use tokio::time::Instant;

pub use channel::{Channel, ProviderId, SendError};
use marker::Claim;

/// The email sender's name: its dead letters' `consumer`, its events' `source`.
pub const EMAIL_FUNCTION: &str = "email-sender";
/// The SMS sender's name.
pub const SMS_FUNCTION: &str = "sms-sender";

/// How long one invocation starts new records for; records not started by then go back
/// to the event source. With [`RECORD_DEADLINE`] and one provider call after it, an
/// invocation ends well inside the template's `Timeout: 60`.
pub const BATCH_BUDGET: Duration = Duration::from_secs(30);

/// How long one record may keep retrying a throttled provider before it is handed back.
pub const RECORD_DEADLINE: Duration = Duration::from_secs(15);

/// The first pause after a throttled call; each next one doubles, up to [`MAX_BACKOFF`].
pub const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// The longest pause between two calls to a throttling provider.
pub const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// What became of one record.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Sent,
    Duplicate,
    Failed(Failure),
}

/// The consumer name of `channel`'s sender.
pub fn function_name(channel: ChannelName) -> &'static str {
    match channel {
        ChannelName::Email => EMAIL_FUNCTION,
        ChannelName::Sms => SMS_FUNCTION,
    }
}

/// Processes one MSK batch of `kind` deliveries through `channel`. Never fails the
/// invocation: see the crate docs for the fate of each record.
pub async fn consume(state: &AppState, channel: &dyn Channel, kind: ChannelName, event: KafkaEvent) -> BatchOutcome {
    let mut batch = Batch::decode(function_name(kind), event);
    let stop_starting = Instant::now() + BATCH_BUDGET;
    let mut partitions: BTreeMap<(&str, i64), Vec<usize>> = BTreeMap::new();
    for (i, r) in batch.records.iter().enumerate() {
        partitions.entry((r.topic.as_str(), r.partition)).or_default().push(i);
    }
    let records = &batch.records;
    let outcomes = futures::future::join_all(partitions.into_values().map(|indices| async move {
        let mut done = Vec::with_capacity(indices.len());
        for i in indices {
            let outcome = deliver(state, channel, kind, &records[i].event, stop_starting).await;
            // The rest of the partition comes back with the retry, in order.
            let stop = matches!(outcome, Outcome::Failed(Failure::Transient(_)));
            done.push((i, outcome));
            if stop {
                break;
            }
        }
        done
    }))
    .await;
    for (i, outcome) in outcomes.into_iter().flatten() {
        match outcome {
            Outcome::Sent => batch.report.applied += 1,
            Outcome::Duplicate => batch.report.duplicates += 1,
            Outcome::Failed(failure) => batch.fail(i, failure),
        }
    }
    batch.finish(&state.publisher).await
}

/// The delivery an event (its payload, decoded with the batch) asks for, if this sender
/// can ever send it.
pub fn parse(event: &Event, kind: ChannelName) -> Result<Delivery, String> {
    let delivery = match (event, kind) {
        (Event::EmailRequested(d), ChannelName::Email) => d.0.clone(),
        (Event::SmsRequested(d), ChannelName::Sms) => d.0.clone(),
        _ => {
            return Err(format!(
                "{} is not for the {} sender",
                event.event_type().name(),
                function_name(kind)
            ))
        }
    };
    if delivery.channel != kind {
        return Err(format!(
            "delivery for {:?} on the {} sender",
            delivery.channel,
            function_name(kind)
        ));
    }
    if delivery.notification_id.trim().is_empty() || delivery.notification_id.len() > 200 {
        return Err("delivery has no usable notificationId".into());
    }
    if delivery.text.trim().is_empty() {
        return Err("delivery has no text".into());
    }
    match kind {
        ChannelName::Email => {
            if delivery.address.len() > 254 || !email_address::EmailAddress::is_valid(&delivery.address) {
                return Err(format!("{:?} is not an email address", delivery.address));
            }
            if delivery.subject.trim().is_empty() {
                return Err("email has no subject".into());
            }
        }
        ChannelName::Sms => {
            if !is_e164(&delivery.address) {
                return Err(format!("{:?} is not an E.164 phone number", delivery.address));
            }
        }
    }
    Ok(delivery)
}

/// `+` and 8 to 15 digits, the first not 0: the only form SNS takes.
fn is_e164(number: &str) -> bool {
    let Some(digits) = number.strip_prefix('+') else {
        return false;
    };
    (8..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit()) && !digits.starts_with('0')
}

async fn deliver(
    state: &AppState,
    channel: &dyn Channel,
    kind: ChannelName,
    event: &Event,
    stop_starting: Instant,
) -> Outcome {
    let delivery = match parse(event, kind) {
        Ok(d) => d,
        Err(reason) => return Outcome::Failed(Failure::Permanent(reason)),
    };
    let now = Instant::now();
    if now >= stop_starting {
        return Outcome::Failed(Failure::Transient("invocation budget spent".into()));
    }
    let token = match marker::claim(&state.store, &delivery.notification_id, kind).await {
        Ok(Claim::Claimed(token)) => token,
        Ok(Claim::AlreadySent(_)) => return Outcome::Duplicate,
        Ok(Claim::InFlight) => {
            return Outcome::Failed(Failure::Transient(format!(
                "notification {} is being sent by another invocation",
                delivery.notification_id
            )))
        }
        Err(e) => return Outcome::Failed(Failure::from(&e)),
    };
    let result = send(state, channel, &delivery, now + RECORD_DEADLINE).await;
    let (id, failure) = match result {
        Ok(id) => (id, None),
        Err(SendError::Permanent(reason)) => {
            state.metrics.count(metrics::DELIVERIES_REJECTED, 1);
            (ProviderId(String::new()), Some(Failure::Permanent(reason)))
        }
        Err(e) => (ProviderId(String::new()), Some(Failure::Transient(e.to_string()))),
    };
    match failure {
        None => {
            state.metrics.count(metrics::DELIVERIES_SENT, 1);
            if let Err(e) = marker::sent(&state.store, &delivery.notification_id, kind, &id.0).await {
                // The message is out: retrying the record would send it again. The claim
                // still holds for its lease; see `marker` for the window this leaves.
                tracing::error!(error = %e, notification = %delivery.notification_id, "sent, but the sent marker was not written");
            }
            Outcome::Sent
        }
        Some(failure) => {
            if let Err(e) = marker::release(&state.store, &delivery.notification_id, kind, &token).await {
                tracing::warn!(error = %e, "claim not released; the retry waits out its lease");
            }
            Outcome::Failed(failure)
        }
    }
}

/// Sends `delivery`, retrying while the provider throttles: pauses of
/// [`FIRST_BACKOFF`], doubling up to [`MAX_BACKOFF`], with jitter, as long as the next
/// call would start before `deadline`; then `Err(Throttled)`. Other errors return at once.
pub async fn send(
    state: &AppState,
    channel: &dyn Channel,
    delivery: &Delivery,
    deadline: Instant,
) -> Result<ProviderId, SendError> {
    let mut pause = FIRST_BACKOFF;
    loop {
        let started = Instant::now();
        let result = channel.send(delivery).await;
        state.metrics.millis(metrics::PROVIDER_LATENCY, started.elapsed());
        match result {
            Err(SendError::Throttled(reason)) => {
                state.metrics.count(metrics::DELIVERIES_THROTTLED, 1);
                // Full jitter in [pause/2, pause): concurrent senders do not retry in step.
                let jittered = pause.mul_f64(0.5 + rand::random::<f64>() / 2.0);
                if Instant::now() + jittered >= deadline {
                    return Err(SendError::Throttled(format!(
                        "still throttled at the record's deadline: {reason}"
                    )));
                }
                tokio::time::sleep(jittered).await;
                pause = (pause * 2).min(MAX_BACKOFF);
            }
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_e164_numbers_are_phone_numbers() {
        for good in ["+15555550100", "+447700900123"] {
            assert!(is_e164(good), "{good}");
        }
        for bad in [
            "15555550100",
            "+0123456789",
            "+1555",
            "+1555555010012345",
            "+1555-555-0100",
            "",
        ] {
            assert!(!is_e164(bad), "{bad}");
        }
    }
}
