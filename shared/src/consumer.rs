//! What every MSK-triggered consumer shares: defensive decoding of a `KafkaEvent`
//! batch, per-record failures, dead letters and the partial batch response.
//!
//! Rules: a record that can never succeed (bad base64 or JSON, unknown event type,
//! wrong envelope version, invalid data, a script error or a key of the wrong type)
//! goes to dead-letter-events with the reason and its original bytes, and the batch
//! goes on. A transient failure (Redis or the broker unreachable) is reported back to
//! Lambda as a partial batch failure from the first failed record of its partition:
//! records before it are committed, other partitions go on, and the event source
//! retries from there (bounded by the mapping's retry settings). Consumers dedupe by
//! eventId, so a retry changes nothing twice. A consumer never fails the invocation.

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

/// Longest original value (in bytes) a dead letter carries: MSK's default message size
/// limit is 1 MB, and a dead letter that the broker refuses would be lost too.
pub const DEAD_LETTER_VALUE_BYTES: usize = 256 * 1024;

/// Sends poison records to dead-letter-events (parked in the outbox if the broker is down).
pub async fn dead_letter(publisher: &Publisher, consumer: &str, poison: &[Poison]) -> Result<(), AppError> {
    let topic = publisher.topics().dead_letter_events.clone();
    let records = poison
        .iter()
        .map(|p| {
            tracing::warn!(consumer, topic = %p.topic, partition = p.partition, offset = p.offset, reason = %p.reason, "record dead-lettered");
            let (value, value_bytes, truncated) = cut_value(p.value.as_deref());
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
                    "value": value,
                    "valueBytes": value_bytes,
                    "valueTruncated": truncated,
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

/// The first [`DEAD_LETTER_VALUE_BYTES`] of a base64 value (still valid base64), its
/// original size in bytes, and whether it was cut.
fn cut_value(value: Option<&str>) -> (Option<String>, usize, bool) {
    let Some(b64) = value else { return (None, 0, false) };
    let size = STANDARD.decode(b64).map_or(b64.len(), |bytes| bytes.len());
    let limit = DEAD_LETTER_VALUE_BYTES / 3 * 4;
    if b64.len() <= limit {
        return (Some(b64.to_string()), size, false);
    }
    // A multiple of 4 base64 characters decodes to whole bytes.
    let cut = b64.char_indices().nth(limit).map_or(b64.len(), |(i, _)| i);
    (Some(b64[..cut].to_string()), size, true)
}

/// Why a record was not applied, classified once: see [`AppError::is_transient`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// Redis or the broker was unreachable or slow: retry the record later.
    Transient(String),
    /// The record can never succeed (a script error, a key of the wrong type, bad data):
    /// dead-letter it now and go on.
    Permanent(String),
}

impl From<&AppError> for Failure {
    fn from(e: &AppError) -> Self {
        let reason = match e {
            AppError::Internal(cause) | AppError::Unavailable(cause) => cause.clone(),
            other => other.to_string(),
        };
        if e.is_transient() {
            Self::Transient(reason)
        } else {
            Self::Permanent(reason)
        }
    }
}

/// Lambda's partial batch response for Kafka event sources (`ReportBatchItemFailures`).
/// Lambda commits each partition up to its reported offset and redelivers from there;
/// an empty list means the whole batch succeeded. (aws_lambda_events 1.2 has no
/// Kafka response type yet.)
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KafkaBatchResponse {
    /// One entry per partition to retry: its first failed record.
    pub batch_item_failures: Vec<KafkaBatchItemFailure>,
}

/// One failed record of a [`KafkaBatchResponse`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KafkaBatchItemFailure {
    /// Which record.
    pub item_identifier: KafkaItemIdentifier,
}

/// A record of a Kafka batch, as Lambda identifies it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct KafkaItemIdentifier {
    /// The batch's records key: `"<topic>-<partition>"`.
    pub partition: String,
    /// The record's offset.
    pub offset: i64,
}

/// What a consumer did with a batch (logged, and asserted by tests).
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
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
    /// Records handed back to the event source to retry (a failed record and those
    /// after it in its partition).
    pub retrying: usize,
}

/// The result of one invocation: the response for Lambda and the report.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BatchOutcome {
    /// What happened.
    #[serde(flatten)]
    pub report: BatchReport,
    /// What Lambda is told.
    #[serde(flatten)]
    pub response: KafkaBatchResponse,
}

/// One batch in the making: decoded records, and what became of each. A consumer
/// decodes it, records each failure with [`Batch::fail`], and calls [`Batch::finish`],
/// which dead-letters permanent failures and reports transient ones back to Lambda.
#[derive(Debug)]
pub struct Batch {
    consumer: &'static str,
    /// The decodable records, in (topic, partition, offset) order.
    pub records: Vec<Incoming>,
    poison: Vec<Poison>,
    transient: Vec<(String, i64, i64, String)>,
    failed: std::collections::BTreeSet<usize>,
    /// Counts the consumer fills in (applied, duplicates, skipped).
    pub report: BatchReport,
}

impl Batch {
    /// Decodes `event`; undecodable records are already poison.
    pub fn decode(consumer: &'static str, event: &KafkaEvent) -> Self {
        let (records, poison) = decode_batch(event);
        let report = BatchReport {
            received: records.len() + poison.len(),
            ..BatchReport::default()
        };
        Self {
            consumer,
            records,
            poison,
            transient: Vec::new(),
            failed: Default::default(),
            report,
        }
    }

    /// Records that `self.records[index]` failed (the first failure of a record counts).
    pub fn fail(&mut self, index: usize, failure: Failure) {
        if !self.failed.insert(index) {
            return;
        }
        let record = &self.records[index];
        match failure {
            Failure::Permanent(reason) => self.poison.push(Poison::invalid_data(record, reason)),
            Failure::Transient(reason) => {
                self.transient
                    .push((record.topic.clone(), record.partition, record.offset, reason))
            }
        }
    }

    /// Dead-letters what can never succeed and tells Lambda where each partition with
    /// a transient failure must resume. A record after a partition's checkpoint is
    /// left to the redelivery (it is neither dead-lettered twice nor lost).
    pub async fn finish(mut self, publisher: &Publisher) -> BatchOutcome {
        let mut checkpoints: BTreeMap<(String, i64), i64> = BTreeMap::new();
        for (topic, partition, offset, reason) in &self.transient {
            tracing::warn!(consumer = self.consumer, %topic, partition, offset, %reason, "record will be retried");
            let at = checkpoints.entry((topic.clone(), *partition)).or_insert(*offset);
            *at = (*at).min(*offset);
        }
        let before_checkpoint = |checkpoints: &BTreeMap<(String, i64), i64>, p: &Poison| {
            checkpoints
                .get(&(p.topic.clone(), p.partition))
                .is_none_or(|at| p.offset < *at)
        };
        let poison: Vec<Poison> = self
            .poison
            .iter()
            .filter(|p| before_checkpoint(&checkpoints, p))
            .cloned()
            .collect();
        match dead_letter(publisher, self.consumer, &poison).await {
            Ok(()) => self.report.dead_lettered = poison.len(),
            Err(e) => {
                // Neither the broker nor the outbox took them: retry them, never drop them.
                tracing::warn!(consumer = self.consumer, error = %e, "dead letters not written; records will be retried");
                for p in &poison {
                    let at = checkpoints.entry((p.topic.clone(), p.partition)).or_insert(p.offset);
                    *at = (*at).min(p.offset);
                }
            }
        }
        let mut offsets: Vec<(&str, i64, i64)> = self
            .records
            .iter()
            .map(|r| (r.topic.as_str(), r.partition, r.offset))
            .chain(self.poison.iter().map(|p| (p.topic.as_str(), p.partition, p.offset)))
            .collect();
        offsets.sort_unstable();
        offsets.dedup();
        self.report.retrying = offsets
            .iter()
            .filter(|(t, p, o)| checkpoints.get(&(t.to_string(), *p)).is_some_and(|at| o >= at))
            .count();
        let response = KafkaBatchResponse {
            batch_item_failures: checkpoints
                .into_iter()
                .map(|((topic, partition), offset)| KafkaBatchItemFailure {
                    item_identifier: KafkaItemIdentifier {
                        partition: format!("{topic}-{partition}"),
                        offset,
                    },
                })
                .collect(),
        };
        tracing::info!(consumer = self.consumer, report = ?self.report, retry = ?response.batch_item_failures, "batch done");
        BatchOutcome {
            report: self.report,
            response,
        }
    }
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
