//! What every MSK-triggered consumer shares: defensive decoding of a `KafkaEvent`
//! batch, poison records, dead letters, and the retryable error.
//!
//! Rules: a record that can never succeed (bad base64 or JSON, unknown event type,
//! wrong envelope version, invalid data) goes to dead-letter-events with the reason
//! and its original bytes, and the batch goes on. A transient failure (Redis down)
//! fails the invocation so the event source retries; consumers dedupe by eventId,
//! so the retry changes nothing twice.

use std::collections::BTreeMap;

use aws_lambda_events::event::kafka::{KafkaEvent, KafkaRecord};
use base64::{engine::general_purpose::STANDARD, Engine};
use serde_json::{json, Value};

use crate::{
    error::AppError,
    events::{Envelope, ENVELOPE_VERSION},
    producer::OutgoingRecord,
    publisher::Publisher,
};

/// A decoded record, with where it came from.
#[derive(Debug, Clone)]
pub struct Incoming {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i64,
    /// Offset.
    pub offset: i64,
    /// The event.
    pub envelope: Envelope,
}

/// A record that can never be processed, and why.
#[derive(Debug, Clone)]
pub struct Poison {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i64,
    /// Offset.
    pub offset: i64,
    /// Why it was rejected.
    pub reason: String,
    /// The record key as delivered (base64).
    pub key: Option<String>,
    /// The record value as delivered (base64), byte for byte.
    pub value: Option<String>,
}

impl Poison {
    /// A decoded record whose data this consumer cannot use (e.g. a missing field).
    pub fn invalid_data(incoming: &Incoming, reason: impl Into<String>) -> Self {
        Self {
            topic: incoming.topic.clone(),
            partition: incoming.partition,
            offset: incoming.offset,
            reason: reason.into(),
            key: Some(STANDARD.encode(incoming.envelope.key.as_bytes())),
            value: serde_json::to_vec(&incoming.envelope).ok().map(|v| STANDARD.encode(v)),
        }
    }
}

/// Decodes a batch: good records in (topic, partition, offset) order, so each key's
/// events are applied in the order they were produced; and the poison ones.
pub fn decode_batch(event: &KafkaEvent) -> (Vec<Incoming>, Vec<Poison>) {
    let mut records: Vec<&KafkaRecord> = event.records.values().flatten().collect();
    records
        .sort_by(|a, b| (a.topic.as_deref(), a.partition, a.offset).cmp(&(b.topic.as_deref(), b.partition, b.offset)));
    let mut good = Vec::with_capacity(records.len());
    let mut poison = Vec::new();
    for record in records {
        let topic = record.topic.clone().unwrap_or_default();
        match decode(record) {
            Ok(envelope) => good.push(Incoming {
                topic,
                partition: record.partition,
                offset: record.offset,
                envelope,
            }),
            Err(reason) => poison.push(Poison {
                topic,
                partition: record.partition,
                offset: record.offset,
                reason,
                key: record.key.clone(),
                value: record.value.clone(),
            }),
        }
    }
    (good, poison)
}

fn decode(record: &KafkaRecord) -> Result<Envelope, String> {
    let b64 = record.value.as_deref().ok_or("record has no value")?;
    let bytes = STANDARD.decode(b64).map_err(|e| format!("value is not base64: {e}"))?;
    // Fast path: a well-formed envelope parses straight into the struct.
    if let Ok(envelope) = serde_json::from_slice::<Envelope>(&bytes) {
        if envelope.version != ENVELOPE_VERSION {
            return Err(format!("unsupported envelope version {}", envelope.version));
        }
        return Ok(envelope);
    }
    // Slow path, only for records that are already poison: say precisely why.
    let value: Value = serde_json::from_slice(&bytes).map_err(|e| format!("value is not JSON: {e}"))?;
    match value.get("version").and_then(Value::as_u64) {
        Some(v) if v == u64::from(ENVELOPE_VERSION) => {}
        Some(v) => return Err(format!("unsupported envelope version {v}")),
        None => return Err("envelope has no version".into()),
    }
    let event_type = value.get("eventType").cloned().unwrap_or(Value::Null);
    if serde_json::from_value::<crate::events::EventType>(event_type.clone()).is_err() {
        return Err(format!("unknown eventType {event_type}"));
    }
    serde_json::from_value::<Envelope>(value)
        .map(|_| ())
        .map_err(|e| format!("invalid envelope: {e}"))?;
    Err("invalid envelope".into())
}

/// Sends poison records to dead-letter-events (parked in the outbox if the broker is down).
pub async fn dead_letter(publisher: &Publisher, consumer: &str, poison: &[Poison]) -> Result<(), AppError> {
    let topic = publisher.topics().dead_letter_events.clone();
    let records = poison
        .iter()
        .map(|p| {
            tracing::warn!(consumer, topic = %p.topic, partition = p.partition, offset = p.offset, reason = %p.reason, "record dead-lettered");
            OutgoingRecord {
                topic: topic.clone(),
                key: format!("{}-{}-{}", p.topic, p.partition, p.offset),
                value: json!({
                    "consumer": consumer,
                    "topic": p.topic,
                    "partition": p.partition,
                    "offset": p.offset,
                    "reason": p.reason,
                    "key": p.key,
                    "value": p.value,
                    "failedAt": crate::user::now_rfc3339(),
                })
                .to_string()
                .into_bytes(),
                headers: BTreeMap::from([("consumer".to_string(), consumer.as_bytes().to_vec())]),
            }
        })
        .collect();
    publisher.send_or_park(records).await?;
    Ok(())
}

/// A consumer invocation that must be retried (e.g. Redis is down). Returning it
/// makes Lambda report the batch as failed, so the event source redelivers it.
#[derive(Debug, thiserror::Error)]
#[error("retryable: {0}")]
pub struct Retryable(pub String);

impl From<AppError> for Retryable {
    fn from(e: AppError) -> Self {
        Self(e.to_string())
    }
}

/// What a consumer did with a batch (returned to Lambda, logged, and asserted by tests).
#[derive(Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BatchReport {
    /// Records in the batch.
    pub received: usize,
    /// Records whose effect was applied now (not duplicates).
    pub applied: usize,
    /// Records already applied by an earlier delivery.
    pub duplicates: usize,
    /// Records this consumer has no use for.
    pub skipped: usize,
    /// Records sent to dead-letter-events.
    pub dead_lettered: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(value: Option<&str>) -> KafkaRecord {
        let mut r = KafkaRecord::default();
        r.topic = Some("user-events".into());
        r.value = value.map(String::from);
        r
    }

    fn event(records: Vec<KafkaRecord>) -> KafkaEvent {
        let mut e = KafkaEvent::default();
        e.records.insert("user-events-0".into(), records);
        e
    }

    fn b64(s: &str) -> String {
        STANDARD.encode(s)
    }

    #[test]
    fn a_good_envelope_decodes() {
        let env = Envelope::new(crate::events::EventType::UserSignup, "auth", "u1", "r1", json!({}));
        let (good, bad) = decode_batch(&event(vec![record(Some(&b64(&serde_json::to_string(&env).unwrap())))]));
        assert_eq!((good.len(), bad.len()), (1, 0));
        assert_eq!(good[0].envelope.event_id, env.event_id);
    }

    #[test]
    fn each_kind_of_poison_gets_its_reason() {
        let cases = [
            (Some("%%%".to_string()), "not base64"),
            (Some(b64("{nope")), "not JSON"),
            (Some(b64(r#"{"version":2,"eventType":"USER_SIGNUP"}"#)), "version 2"),
            (
                Some(b64(r#"{"version":1,"eventType":"USER_EXPLODED"}"#)),
                "unknown eventType",
            ),
            (
                Some(b64(r#"{"version":1,"eventType":"USER_SIGNUP"}"#)),
                "invalid envelope",
            ),
            (None, "no value"),
        ];
        for (value, reason) in cases {
            let (good, bad) = decode_batch(&event(vec![record(value.as_deref())]));
            assert!(good.is_empty());
            assert!(
                bad[0].reason.contains(reason),
                "{} does not mention {reason}",
                bad[0].reason
            );
        }
    }

    #[test]
    fn records_come_out_in_partition_and_offset_order() {
        let env = |k: &str| {
            b64(&serde_json::to_string(&Envelope::new(
                crate::events::EventType::UserLogin,
                "auth",
                k,
                "r",
                json!({}),
            ))
            .unwrap())
        };
        let mut a = record(Some(&env("second")));
        a.offset = 7;
        let mut b = record(Some(&env("first")));
        b.offset = 3;
        let (good, _) = decode_batch(&event(vec![a, b]));
        assert_eq!(
            good.iter().map(|g| g.envelope.key.as_str()).collect::<Vec<_>>(),
            ["first", "second"]
        );
    }
}
