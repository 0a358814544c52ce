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
//!
//! [`serve`] is the runtime loop of every Kafka-triggered bootstrap (notifications,
//! analytics, realtime pusher, channels router, email and SMS senders).

use std::{
    borrow::{Borrow, Cow},
    collections::{BTreeMap, HashMap},
    future::Future,
    time::Instant,
};

use aws_lambda_events::event::kafka::{KafkaEvent, KafkaRecord};
use base64::{engine::general_purpose::STANDARD, Engine};
use chrono::{DateTime, Utc};
use futures::future::FutureExt;
use serde::{
    de::{DeserializeSeed, IgnoredAny, MapAccess, Visitor},
    Deserialize, Deserializer,
};
use serde_json::{value::RawValue, Value};
use uuid::Uuid;

use crate::{
    bootstrap::{self, Handler, Loop},
    error::AppError,
    events::{Envelope, EnvelopeHead, EventType, ENVELOPE_VERSION},
    metrics::{self, Emf},
    payloads::Event,
    producer::OutgoingRecord,
    publisher::Publisher,
    telemetry,
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
    /// The event's envelope, without its data (that is `event`).
    pub envelope: EnvelopeHead,
    /// Its payload, typed: a record whose data does not fit its event type never gets here.
    pub event: Event,
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
    /// A decoded record this consumer cannot apply, with the bytes it was delivered as.
    fn rejected(record: &KafkaRecord, reason: String) -> Self {
        Self {
            topic: record.topic.clone().unwrap_or_default(),
            partition: record.partition,
            offset: record.offset,
            reason,
            key: record.key.clone(),
            value: record.value.clone(),
        }
    }
}

/// Decodes a batch: good records in (topic, partition, offset) order, so each key's
/// events are applied in the order they were produced; and the poison ones.
pub fn decode_batch(event: &KafkaEvent) -> (Vec<Incoming>, Vec<Poison>) {
    let records = in_delivery_order(event.records.values().flatten());
    let decoded = decode_all(&records, &|_| ());
    (decoded.good, decoded.poison)
}

/// `records` in (topic, partition, offset) order: the order each key's events were
/// produced in.
fn in_delivery_order<R: Borrow<KafkaRecord>>(records: impl IntoIterator<Item = R>) -> Vec<R> {
    let mut records: Vec<R> = records.into_iter().collect();
    records.sort_by(|a, b| {
        let (a, b) = (a.borrow(), b.borrow());
        (a.topic.as_deref(), a.partition, a.offset).cmp(&(b.topic.as_deref(), b.partition, b.offset))
    });
    records
}

/// Smallest batch decoded on two threads: starting one costs tens of µs, a few
/// records' worth.
pub const PARALLEL_DECODE_RECORDS: usize = 1_000;

/// Whether this process may run on two cores: read once (on Linux, std reads the cgroup's
/// CPU quota from /proc on every call, which a batch need not pay).
static TWO_CORES: std::sync::LazyLock<bool> =
    std::sync::LazyLock::new(|| std::thread::available_parallelism().is_ok_and(|n| n.get() >= 2));

/// Records decoded, in the order they were given: the good ones with what a consumer
/// made of each (same order), and the poison ones.
struct Decoded<T> {
    good: Vec<Incoming>,
    derived: Vec<T>,
    poison: Vec<Poison>,
}

/// The one decoding path: decodes `records` (in delivery order) and applies `derive` to
/// each good one in the same pass, on two threads for [`PARALLEL_DECODE_RECORDS`] or
/// more where the machine has two cores. Decoding is a large share of a consumer's own
/// CPU time, and at the start of a batch nothing else (Redis, the broker) has work from
/// it yet, so a second core is free.
fn decode_all<R, T>(records: &[R], derive: &(impl Fn(&Incoming) -> T + Sync)) -> Decoded<T>
where
    R: Borrow<KafkaRecord> + Sync,
    T: Send,
{
    let decode_part = |records: &[R]| {
        let mut part = Decoded {
            good: Vec::with_capacity(records.len()),
            derived: Vec::with_capacity(records.len()),
            poison: Vec::new(),
        };
        // One buffer for every record's decoded bytes: nothing decoded borrows from it.
        let mut bytes = Vec::new();
        for record in records {
            match decode_record(record.borrow(), &mut bytes) {
                Ok(incoming) => {
                    part.derived.push(derive(&incoming));
                    part.good.push(incoming);
                }
                Err(poison) => part.poison.push(poison),
            }
        }
        part
    };
    if !(*TWO_CORES && records.len() >= PARALLEL_DECODE_RECORDS) {
        return decode_part(records);
    }
    let (first, second) = records.split_at(records.len() / 2);
    let (mut first, second) = std::thread::scope(|scope| {
        let helper = std::thread::Builder::new().spawn_scoped(scope, || decode_part(second));
        let first = decode_part(first);
        // Without a thread (the OS refused one) this thread decodes both halves.
        let second = match helper {
            Ok(helper) => helper.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
            Err(_) => decode_part(second),
        };
        (first, second)
    });
    first.good.extend(second.good);
    first.derived.extend(second.derived);
    first.poison.extend(second.poison);
    first
}

/// Decodes one record: the typed event, or the poison record saying why not.
fn decode_record(record: &KafkaRecord, bytes: &mut Vec<u8>) -> Result<Incoming, Poison> {
    match decode(record, bytes) {
        Ok((envelope, event)) => Ok(Incoming {
            topic: record.topic.clone().unwrap_or_default(),
            partition: record.partition,
            offset: record.offset,
            envelope,
            event,
        }),
        Err(reason) => Err(Poison::rejected(record, reason)),
    }
}

/// A record's value as it arrives: the envelope's fields, and `data` left as JSON text
/// (borrowed from the value's bytes) to be read straight into its event type's struct.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Wire<'a> {
    event_id: Uuid,
    event_type: EventType,
    version: u32,
    timestamp: DateTime<Utc>,
    source: String,
    key: String,
    correlation_id: String,
    #[serde(borrow)]
    data: &'a RawValue,
}

impl Wire<'_> {
    fn head(self) -> EnvelopeHead {
        EnvelopeHead {
            event_id: self.event_id,
            event_type: self.event_type,
            version: self.version,
            timestamp: self.timestamp,
            source: self.source,
            key: self.key,
            correlation_id: self.correlation_id,
        }
    }
}

/// Decodes one record's value (base64 into `bytes`, reused from record to record).
fn decode(record: &KafkaRecord, bytes: &mut Vec<u8>) -> Result<(EnvelopeHead, Event), String> {
    let b64 = record.value.as_deref().ok_or("record has no value")?;
    bytes.clear();
    STANDARD
        .decode_vec(b64, bytes)
        .map_err(|e| format!("value is not base64: {e}"))?;
    // Fast path: a well-formed envelope parses straight into the structs.
    if let Ok(wire) = serde_json::from_slice::<Wire>(bytes) {
        if wire.version != ENVELOPE_VERSION {
            return Err(format!("unsupported envelope version {}", wire.version));
        }
        check_origin(&wire)?;
        let event = Event::from_json(wire.event_type, wire.data.get())
            .map_err(|e| format!("invalid data for {}: {e}", wire.event_type.name()))?;
        return Ok((wire.head(), event));
    }
    // Slow path, only for records that are already poison: say precisely why.
    let value: Value = serde_json::from_slice(bytes).map_err(|e| format!("value is not JSON: {e}"))?;
    match value.get("version").and_then(Value::as_u64) {
        Some(v) if v == u64::from(ENVELOPE_VERSION) => {}
        Some(v) => return Err(format!("unsupported envelope version {v}")),
        None => return Err("envelope has no version".into()),
    }
    let event_type = value.get("eventType").cloned().unwrap_or(Value::Null);
    if serde_json::from_value::<EventType>(event_type.clone()).is_err() {
        return Err(format!("unknown eventType {event_type}"));
    }
    serde_json::from_value::<Envelope>(value)
        .map(|_| ())
        .map_err(|e| format!("invalid envelope: {e}"))?;
    Err("invalid envelope".into())
}

/// Refuses an event its `source` may not emit ([`EventType::allowed_sources`]) or whose
/// ids are malformed, before any consumer acts on it: the key (the acting user) and
/// every user-id field of the data (`userId`, `readerId`, `actorId`, `…UserId`) must be
/// user ids, and a connection event's request `id` a UUID. Checked here, in the one
/// decoding path, so every consumer gets it; the record is dead-lettered with the reason.
///
/// [`EventType::allowed_sources`]: crate::events::EventType::allowed_sources
fn check_origin(envelope: &Wire) -> Result<(), String> {
    let event_type = envelope.event_type;
    if !event_type.allowed_sources().contains(&envelope.source.as_str()) {
        return Err(format!(
            "source {:?} may not emit {}",
            envelope.source,
            event_type.as_str()
        ));
    }
    if crate::user::parse_user_id(&envelope.key).is_err() {
        return Err(format!("key {:?} is not a user id", envelope.key));
    }
    let is_request = event_type.topic() == crate::events::Topic::Connection;
    let mut data = serde_json::Deserializer::from_str(envelope.data.get());
    let ids = IdFields { is_request };
    match ids.deserialize(&mut data) {
        Ok(verdict) => verdict,
        Err(_) => Err("data is not an object".into()),
    }
}

/// Reads the fields of `data` once, without building them, checking the id fields
/// [`check_origin`] names: `Ok(Err(reason))` for the first id that is not a UUID.
struct IdFields {
    is_request: bool,
}

impl<'de> DeserializeSeed<'de> for IdFields {
    type Value = Result<(), String>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for IdFields {
    type Value = Result<(), String>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut fields: A) -> Result<Self::Value, A::Error> {
        let mut verdict = Ok(());
        while let Some(FieldName(name)) = fields.next_key()? {
            let is_user = name == "userId" || name == "readerId" || name == "actorId" || name.ends_with("UserId");
            let is_uuid = self.is_request && (name == "id" || name == "requestId");
            if !(is_user || is_uuid) || verdict.is_err() {
                fields.next_value::<IgnoredAny>()?;
                continue;
            }
            let value: &RawValue = fields.next_value()?;
            // A JSON string; one with escapes is read as a string first.
            let text: Option<Cow<str>> = match value.get() {
                v if v.starts_with('"') && !v.contains('\\') => Some(Cow::Borrowed(&v[1..v.len() - 1])),
                v => serde_json::from_str::<String>(v).ok().map(Cow::Owned),
            };
            if text.is_none_or(|v| Uuid::parse_str(&v).is_err()) {
                verdict = Err(format!("data.{name} is not a UUID"));
            }
        }
        Ok(verdict)
    }
}

/// An object's key, borrowed from the input unless it has escapes.
struct FieldName<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for FieldName<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Name;
        impl<'de> Visitor<'de> for Name {
            type Value = FieldName<'de>;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a field name")
            }

            fn visit_borrowed_str<E: serde::de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(FieldName(Cow::Borrowed(v)))
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(FieldName(Cow::Owned(v.to_string())))
            }
        }
        deserializer.deserialize_str(Name)
    }
}

/// A record on dead-letter-events: which consumer refused which record, why, and the
/// record's original bytes.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetter {
    /// The consumer that refused it.
    pub consumer: String,
    /// Where the record was.
    pub topic: String,
    /// Its partition.
    pub partition: i64,
    /// Its offset.
    pub offset: i64,
    /// Why it can never be processed.
    pub reason: String,
    /// The record key as delivered (base64).
    pub key: Option<String>,
    /// The record value as delivered (base64), cut to [`DEAD_LETTER_VALUE_BYTES`].
    pub value: Option<String>,
    /// The original value's size in bytes.
    pub value_bytes: usize,
    /// Whether `value` was cut.
    pub value_truncated: bool,
    /// When it was dead-lettered (RFC 3339).
    #[schemars(extend("format" = "date-time"))]
    pub failed_at: String,
}

/// Longest original value (in bytes) a dead letter carries: MSK's default message size
/// limit is 1 MB, and a dead letter that the broker refuses would be lost too. (A
/// multiple of 3, so the kept prefix is whole base64 quads.)
pub const DEAD_LETTER_VALUE_BYTES: usize = 192 * 1024;

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
                value: serde_json::to_value(DeadLetter {
                    consumer: consumer.to_string(),
                    topic: p.topic.clone(),
                    partition: p.partition,
                    offset: p.offset,
                    reason: p.reason.clone(),
                    key: p.key.clone(),
                    value,
                    value_bytes,
                    value_truncated: truncated,
                    failed_at: crate::clock::now_rfc3339(),
                })
                .unwrap_or_default()
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
            AppError::Internal(cause) | AppError::Unavailable(cause) => crate::error::chain(cause).to_string(),
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
    /// Every delivered record, in (topic, partition, offset) order.
    delivered: Vec<KafkaRecord>,
    /// The decodable records, in (topic, partition, offset) order.
    pub records: Vec<Incoming>,
    poison: Vec<Poison>,
    failures: BTreeMap<usize, Failure>,
    /// Counts the consumer fills in (applied, duplicates, skipped).
    pub report: BatchReport,
    /// When decoding began: the batch latency runs from here to the end of [`Batch::finish`].
    started: Instant,
}

impl Batch {
    /// Decodes `event`; undecodable records are already poison.
    pub fn decode(consumer: &'static str, event: KafkaEvent) -> Self {
        Self::decode_with(consumer, event, |_| ()).0
    }

    /// Decodes `event` and gives `derive` of each good record (in [`Batch::records`]
    /// order): what a consumer makes of a record is worked out in the same pass as its
    /// decoding, on two threads for a large batch (see [`PARALLEL_DECODE_RECORDS`]).
    pub fn decode_with<T: Send>(
        consumer: &'static str,
        event: KafkaEvent,
        derive: impl Fn(&Incoming) -> T + Sync,
    ) -> (Self, Vec<T>) {
        let mut batch = Self::open(consumer, event);
        let decoded = decode_all(&batch.delivered, &derive);
        batch.records = decoded.good;
        batch.poison = decoded.poison;
        (batch, decoded.derived)
    }

    /// `event`'s records in delivery order, none decoded yet; the report counts them all
    /// as received.
    fn open(consumer: &'static str, event: KafkaEvent) -> Self {
        let started = Instant::now();
        let delivered = in_delivery_order(event.records.into_values().flatten());
        let report = BatchReport {
            received: delivered.len(),
            ..BatchReport::default()
        };
        Self {
            consumer,
            records: Vec::new(),
            delivered,
            poison: Vec::new(),
            failures: BTreeMap::new(),
            report,
            started,
        }
    }

    /// Records that `self.records[index]` failed (a record's first failure counts).
    pub fn fail(&mut self, index: usize, failure: Failure) {
        self.failures.entry(index).or_insert(failure);
    }

    /// Where each partition with a transient failure must resume (its lowest failed
    /// offset), and the records to dead-letter: every permanent failure and poison
    /// record before its partition's checkpoint. Those after it come back with the
    /// redelivery, so they are neither dead-lettered twice nor lost.
    fn settle(&self) -> (BTreeMap<(String, i64), i64>, Vec<Poison>) {
        let mut checkpoints: BTreeMap<(String, i64), i64> = BTreeMap::new();
        for (i, failure) in &self.failures {
            if let Failure::Transient(reason) = failure {
                let r = &self.records[*i];
                tracing::warn!(consumer = self.consumer, topic = %r.topic, partition = r.partition, offset = r.offset, %reason, "record will be retried");
                let at = checkpoints.entry((r.topic.clone(), r.partition)).or_insert(r.offset);
                *at = (*at).min(r.offset);
            }
        }
        // Only a batch with permanent failures needs the delivered records by position.
        let any_permanent = self.failures.values().any(|f| matches!(f, Failure::Permanent(_)));
        let originals: HashMap<(&str, i64, i64), &KafkaRecord> = match any_permanent {
            false => HashMap::new(),
            true => self
                .delivered
                .iter()
                .map(|r| ((r.topic.as_deref().unwrap_or_default(), r.partition, r.offset), r))
                .collect(),
        };
        let rejected = self.failures.iter().filter_map(|(i, failure)| match failure {
            Failure::Permanent(reason) => {
                let r = &self.records[*i];
                let original = originals.get(&(r.topic.as_str(), r.partition, r.offset))?;
                Some(Poison::rejected(original, reason.clone()))
            }
            Failure::Transient(_) => None,
        });
        let dead = self
            .poison
            .iter()
            .cloned()
            .chain(rejected)
            .filter(|p| {
                checkpoints
                    .get(&(p.topic.clone(), p.partition))
                    .is_none_or(|at| p.offset < *at)
            })
            .collect();
        (checkpoints, dead)
    }

    /// Dead-letters what can never succeed and tells Lambda where each partition with
    /// a transient failure must resume. Records the batch's counts and latency in the
    /// publisher's metrics: here, once, where the report is final.
    pub async fn finish(mut self, publisher: &Publisher) -> BatchOutcome {
        let (mut checkpoints, dead) = self.settle();
        match dead_letter(publisher, self.consumer, &dead).await {
            Ok(()) => self.report.dead_lettered = dead.len(),
            Err(e) => {
                // Neither the broker nor the outbox took them: retry them, never drop them.
                tracing::warn!(consumer = self.consumer, error = %e, "dead letters not written; records will be retried");
                for p in &dead {
                    let at = checkpoints.entry((p.topic.clone(), p.partition)).or_insert(p.offset);
                    *at = (*at).min(p.offset);
                }
            }
        }
        if !checkpoints.is_empty() {
            self.report.retrying = self
                .delivered
                .iter()
                .filter(|r| {
                    let topic = r.topic.clone().unwrap_or_default();
                    checkpoints.get(&(topic, r.partition)).is_some_and(|at| r.offset >= *at)
                })
                .count();
        }
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
        let m = publisher.metrics();
        m.count(metrics::RECORDS_APPLIED, self.report.applied as u64);
        m.count(metrics::RECORDS_DUPLICATE, self.report.duplicates as u64);
        m.count(metrics::RECORDS_DEAD_LETTERED, self.report.dead_lettered as u64);
        m.count(metrics::RECORDS_RETRIED, self.report.retrying as u64);
        m.millis(metrics::BATCH_LATENCY, self.started.elapsed());
        BatchOutcome {
            report: self.report,
            response,
        }
    }
}

/// Runs a Kafka-triggered function until the runtime stops: each batch goes to `consume`
/// with the clients in `state` (built once in `main`, kept for the life of the process and
/// shared by the invocations that run at once under `AWS_LAMBDA_MAX_CONCURRENCY`), under
/// its invocation's X-Ray trace id, with the metrics flushed (EMF) once per batch. Lambda
/// gets the partial batch response: failed records are retried or dead-lettered, never
/// the whole batch.
pub async fn serve<S, F, Fut>(emf: Emf, state: S, consume: F) -> Result<(), lambda_http::Error>
where
    S: Send + Sync + 'static,
    F: Fn(&'static S, KafkaEvent) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = BatchOutcome> + Send + 'static,
{
    let state: &'static S = Box::leak(Box::new(state));
    batch_loop(emf, bootstrap::boxed(move |event| consume(state, event))).await
}

/// Compiled once, here, not in each bootstrap (see [`crate::bootstrap`]).
fn batch_loop(emf: Emf, consume: Handler<KafkaEvent, BatchOutcome>) -> Loop {
    lambda_http::lambda_runtime::run_concurrent(lambda_http::service_fn(
        move |event: lambda_http::LambdaEvent<KafkaEvent>| async move {
            let trace = event.context.xray_trace_id.clone();
            let outcome = telemetry::in_invocation(trace, emf.invocation(consume(event.payload))).await;
            Ok::<_, lambda_http::Error>(outcome.response)
        },
    ))
    .boxed_local()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

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

    const USER: &str = "0190c3a4-0000-7000-8000-00000000000a";

    #[test]
    fn an_event_from_a_source_not_allowed_for_its_type_or_with_a_bad_id_is_poison() {
        use crate::events::EventType::*;
        let cases = [
            (
                Envelope::new(UserSignup, "requests", USER, "r", json!({"userId": USER})),
                "may not emit",
            ),
            (Envelope::new(UserLogin, "tests", USER, "r", json!({})), "may not emit"),
            (Envelope::new(UserLogin, "auth", "u1", "r", json!({})), "not a user id"),
            (
                Envelope::new(MessageSent, "messaging", USER, "r", json!({"toUserId": "x"})),
                "toUserId",
            ),
            (
                Envelope::new(ConnectionAccepted, "requests", USER, "r", json!({"id": "r1"})),
                "data.id",
            ),
        ];
        for (env, reason) in cases {
            let (good, bad) = decode_batch(&event(vec![record(Some(&b64(&serde_json::to_string(&env).unwrap())))]));
            assert!(good.is_empty(), "{reason}");
            assert!(
                bad[0].reason.contains(reason),
                "{} does not mention {reason}",
                bad[0].reason
            );
        }
        let fine = Envelope::new(
            UserOnline,
            "realtime",
            USER,
            "r",
            json!({"userId": USER, "at": "2026-01-01T00:00:00.000Z"}),
        );
        let (good, _) = decode_batch(&event(vec![record(Some(&b64(&serde_json::to_string(&fine).unwrap())))]));
        assert_eq!(good.len(), 1);
    }

    #[test]
    fn data_that_does_not_fit_its_event_type_is_poison_naming_the_field() {
        let env = Envelope::new(
            crate::events::EventType::UserLogout,
            "auth",
            USER,
            "r",
            json!({"userId": USER}),
        );
        let (good, bad) = decode_batch(&event(vec![record(Some(&b64(&serde_json::to_string(&env).unwrap())))]));
        assert!(good.is_empty());
        assert!(bad[0].reason.contains("sessionIds"), "{}", bad[0].reason);
    }

    #[test]
    fn a_good_envelope_decodes() {
        let data = json!({"userId": USER, "email": "a@example.com", "firstName": "A", "lastName": "B"});
        let env = Envelope::new(crate::events::EventType::UserSignup, "auth", USER, "r1", data);
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
                USER,
                k,
                json!({"userId": USER}),
            ))
            .unwrap())
        };
        let mut a = record(Some(&env("second")));
        a.offset = 7;
        let mut b = record(Some(&env("first")));
        b.offset = 3;
        let (good, _) = decode_batch(&event(vec![a, b]));
        assert_eq!(
            good.iter()
                .map(|g| g.envelope.correlation_id.as_str())
                .collect::<Vec<_>>(),
            ["first", "second"]
        );
    }

    fn good(partition: i64, offset: i64) -> KafkaRecord {
        let env = Envelope::new(
            crate::events::EventType::UserLogin,
            "auth",
            USER,
            "r",
            json!({"userId": USER}),
        );
        let mut r = record(Some(&b64(&serde_json::to_string(&env).unwrap())));
        r.partition = partition;
        r.offset = offset;
        r
    }

    fn two_partitions() -> Batch {
        let mut e = KafkaEvent::default();
        e.records
            .insert("user-events-0".into(), (3..=7).map(|o| good(0, o)).collect());
        e.records.insert("user-events-1".into(), vec![good(1, 2)]);
        Batch::decode("test", e)
    }

    fn index_of(batch: &Batch, partition: i64, offset: i64) -> usize {
        batch
            .records
            .iter()
            .position(|r| (r.partition, r.offset) == (partition, offset))
            .unwrap()
    }

    #[test]
    fn a_transient_failure_checkpoints_its_partition_at_the_lowest_failed_offset() {
        let mut batch = two_partitions();
        for offset in [6, 5] {
            let i = index_of(&batch, 0, offset);
            batch.fail(i, Failure::Transient("redis down".into()));
        }
        let (checkpoints, dead) = batch.settle();
        assert_eq!(checkpoints, BTreeMap::from([(("user-events".to_string(), 0), 5)]));
        assert!(dead.is_empty());
    }

    #[test]
    fn permanent_failures_before_a_checkpoint_or_in_other_partitions_are_dead_lettered_and_later_ones_wait() {
        let mut batch = two_partitions();
        let transient = index_of(&batch, 0, 5);
        batch.fail(transient, Failure::Transient("redis down".into()));
        for (partition, offset) in [(0, 3), (0, 7), (1, 2)] {
            let i = index_of(&batch, partition, offset);
            batch.fail(i, Failure::Permanent(format!("WRONGTYPE at {offset}")));
        }
        let (_, dead) = batch.settle();
        let dead: Vec<(i64, i64, &str)> = dead
            .iter()
            .map(|p| (p.partition, p.offset, p.reason.as_str()))
            .collect();
        assert_eq!(dead, [(0, 3, "WRONGTYPE at 3"), (1, 2, "WRONGTYPE at 2")]);
    }

    #[test]
    fn a_dead_letter_keeps_the_bytes_the_record_was_delivered_as() {
        let mut batch = two_partitions();
        let delivered = batch.delivered.iter().find(|r| r.partition == 1).unwrap().value.clone();
        let i = index_of(&batch, 1, 2);
        batch.fail(i, Failure::Permanent("bad".into()));
        let (_, dead) = batch.settle();
        assert_eq!(dead[0].value, delivered);
    }

    #[test]
    fn a_record_s_first_failure_is_the_one_that_counts() {
        let mut batch = two_partitions();
        let i = index_of(&batch, 1, 2);
        batch.fail(i, Failure::Permanent("first".into()));
        batch.fail(i, Failure::Transient("second".into()));
        let (checkpoints, dead) = batch.settle();
        assert!(checkpoints.is_empty());
        assert_eq!(dead.len(), 1);
    }

    #[test]
    fn an_oversized_value_is_cut_to_valid_base64_and_keeps_its_original_size() {
        let big = STANDARD.encode(vec![7u8; DEAD_LETTER_VALUE_BYTES + 1000]);
        let (value, size, truncated) = cut_value(Some(&big));
        let kept = STANDARD.decode(value.unwrap()).expect("still base64");
        assert_eq!(
            (kept.len(), size, truncated),
            (DEAD_LETTER_VALUE_BYTES, DEAD_LETTER_VALUE_BYTES + 1000, true)
        );
        assert_eq!(cut_value(Some("aGk=")), (Some("aGk=".into()), 2, false));
    }

    #[test]
    fn the_partial_batch_response_has_the_shape_lambda_reads() {
        let response = KafkaBatchResponse {
            batch_item_failures: vec![KafkaBatchItemFailure {
                item_identifier: KafkaItemIdentifier {
                    partition: "user-events-2".into(),
                    offset: 17,
                },
            }],
        };
        assert_eq!(
            serde_json::to_value(&response).unwrap(),
            json!({"batchItemFailures": [{"itemIdentifier": {"partition": "user-events-2", "offset": 17}}]})
        );
    }
}
