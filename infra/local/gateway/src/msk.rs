//! The MSK event source mapping, emulated as AWS documents it (Lambda developer guide,
//! "Kafka retry configurations" and "partial batch responses").
//!
//! Batching as Lambda does it: once records are there, the mapping gathers until
//! `BatchSize` records are available or `MaximumBatchingWindowInSeconds` (500 ms for
//! Kafka when unset) is over, then reads them in one go (see [`watch`] for how it learns
//! what is there without reading, and [`feed`] for how the mappings of a topic share
//! what is read).
//!
//! Per fetched batch: records older than `MaximumRecordAgeInSeconds` go to the on-failure
//! destination without an invocation (condition `RecordAgeExceeded`); the rest is
//! invoked as a real `KafkaEvent` (records keyed "topic-partition", base64 key and value,
//! headers as byte arrays). Then:
//! - success (no or empty `batchItemFailures`): the records are committed;
//! - a partial batch response (honoured only with `ReportBatchItemFailures`): each
//!   reported partition is committed up to its checkpoint (the lowest reported offset)
//!   and retried from there, other partitions are committed; an identifier that is not
//!   in the invoked batch makes the whole batch count as failed;
//! - a function error (the invoke returned `Err`): with `BisectBatchOnFunctionError` the
//!   batch is split in two halves, first half first, each retried on its own; else the
//!   same records are retried.
//!
//! Retries are bounded by `MaximumRetryAttempts` (a record's first invocation is not a
//! retry); when they run out, every remaining record is written to the on-failure topic
//! in Lambda's shape (key = the original record's key) and committed past, so the
//! partition moves on. Reading of the docs we apply: a split is not a retry (as the
//! Kinesis docs say, "splitting a batch does not count towards the retry quota"), so
//! bisection is bounded by log2 of the batch size and each half keeps the batch's
//! budget; an invalid partial batch response is a whole-batch failure and so bisects
//! like a function error. Offsets are committed in Redis ([`keys::local_offsets`]).
//!
//! The decisions (what to commit, retry or give up on) are pure functions of this
//! module ([`decide`], [`expire`], [`commit_points`], [`on_failure_message`]); the poll
//! loop does the I/O and takes the function as an [`Invoke`] so tests can plug in one
//! that fails on chosen records.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    sync::Arc,
    time::Duration,
};

use aws_lambda_events::{
    encodings::MillisecondTimestamp,
    event::kafka::{KafkaEvent, KafkaRecord},
};
use base64::{engine::general_purpose::STANDARD, Engine};
use chrono::{DateTime, Utc};
use devconnect::{kafka_connection::KafkaConnection, keys, producer::partition_for, store::Store};
use futures::future::BoxFuture;
use redis::AsyncCommands;
use rskafka::{
    client::{
        partition::{Compression, OffsetAt, PartitionClient, UnknownTopicHandling},
        Client,
    },
    record::{Record, RecordAndOffset},
};
use serde_json::{json, Value};

use crate::{server::Gateway, template::MskSource};

mod feed;
mod watch;

pub use feed::Fetched;
use feed::{Feed, ReadError};
use watch::Watermarks;

/// First retry backoff; doubled per retry up to [`MAX_BACKOFF`]. Short: locally a retry
/// only waits for a Redis or broker that is coming back.
const FIRST_BACKOFF: Duration = Duration::from_millis(20);
/// Longest wait before a retry.
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// Longest a write to the on-failure topic may take before the batch is given up and
/// fetched again (nothing is committed past a record that was not written).
const DESTINATION_TIMEOUT: Duration = Duration::from_secs(5);
/// The event source ARN the local events carry.
pub const EVENT_SOURCE_ARN: &str =
    "arn:aws:kafka:local:000000000000:cluster/local/00000000-0000-0000-0000-000000000000-1";
/// `bootstrapServers` of the local events.
const BOOTSTRAP_SERVERS: &str = "local";

/// The function an event source invokes: a batch in, the function's response out
/// (`batchItemFailures` read from it), `Err` = a function error.
pub type Invoke = Arc<dyn Fn(KafkaEvent) -> BoxFuture<'static, anyhow::Result<Value>> + Send + Sync>;

/// Starts one poller per MSK event of the template, connecting like the producer does.
/// One [`Watermarks`] watch serves them all (idle, the stack asks the broker one request
/// per refresh in total), and the mappings of a topic share one [`Feed`] (each record is
/// fetched once, not once per mapping).
pub fn spawn_pollers(gateway: Arc<Gateway>, kafka: KafkaConnection, store: Store) {
    let mappings = gateway
        .template
        .msk_sources
        .iter()
        .map(|source| {
            (
                source.clone(),
                gateway_invoke(Arc::clone(&gateway), source.function.clone()),
            )
        })
        .collect();
    spawn_mappings(mappings, kafka, store);
}

/// Runs these event source mappings until their tasks are aborted, with one watch for
/// all and one [`Feed`] per topic (see [`spawn_pollers`]).
pub fn spawn_mappings(
    mappings: Vec<(MskSource, Invoke)>,
    kafka: KafkaConnection,
    store: Store,
) -> Vec<tokio::task::JoinHandle<()>> {
    let topics: Vec<String> = mappings.iter().map(|(s, _)| s.topic.clone()).collect();
    let watch = Watermarks::spawn(&kafka, topics);
    let mut feeds: BTreeMap<String, Feed> = BTreeMap::new();
    mappings
        .into_iter()
        .map(|(source, invoke)| {
            let feed = feeds.entry(source.topic.clone()).or_default().clone();
            spawn_watched(source, invoke, kafka.clone(), store.clone(), watch.clone(), feed)
        })
        .collect()
}

/// The hosted function `function`, as an [`Invoke`].
pub fn gateway_invoke(gateway: Arc<Gateway>, function: String) -> Invoke {
    Arc::new(move |event| {
        let (gateway, function) = (Arc::clone(&gateway), function.clone());
        Box::pin(async move { gateway.functions.invoke_consumer(&function, event).await })
    })
}

/// Runs one event source mapping until the task is aborted, restarting after errors
/// (broker or Redis unreachable): nothing past the last commit is lost.
pub fn spawn_poller(
    source: MskSource,
    invoke: Invoke,
    kafka: KafkaConnection,
    store: Store,
) -> tokio::task::JoinHandle<()> {
    let watch = Watermarks::spawn(&kafka, vec![source.topic.clone()]);
    spawn_watched(source, invoke, kafka, store, watch, Feed::default())
}

/// Requests the emulated triggers sent the broker in this process so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BrokerRequests {
    /// Record fetches (one partition each).
    pub fetches: u64,
    /// Watermark refreshes (every watched partition in one request).
    pub refreshes: u64,
}

/// The [`BrokerRequests`] so far, for the benchmarks.
pub fn broker_requests() -> BrokerRequests {
    BrokerRequests {
        fetches: feed::fetches(),
        refreshes: watch::refreshes(),
    }
}

fn spawn_watched(
    source: MskSource,
    invoke: Invoke,
    kafka: KafkaConnection,
    store: Store,
    watch: Watermarks,
    feed: Feed,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let _watch_alive = watch.keep_alive();
        loop {
            if let Err(e) = poll(&source, &invoke, &kafka, &store, &watch, &feed).await {
                tracing::warn!(function = %source.function, topic = %source.topic, error = %e, "MSK poller restarting");
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    })
}

/// Why Lambda gave up on a record (`requestContext.condition`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Condition {
    /// `MaximumRetryAttempts` used up.
    RetriesExhausted,
    /// Older than `MaximumRecordAgeInSeconds`.
    RecordAgeExceeded,
}

impl Condition {
    fn as_str(self) -> &'static str {
        match self {
            Self::RetriesExhausted => "RetriesExhausted",
            Self::RecordAgeExceeded => "RecordAgeExceeded",
        }
    }
}

/// A record in flight, with how many invocations have carried it
/// (`approximateInvokeCount`).
#[derive(Clone, Debug, PartialEq)]
pub struct InFlight {
    /// Its partition.
    pub partition: i32,
    /// The record, its offset, and what the function receives for it.
    pub record: Arc<Fetched>,
    /// Invocations that carried it so far.
    pub invocations: u32,
}

/// Records invoked together, in (partition, offset) order, and the retries they used.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Chunk {
    /// The records.
    pub records: Vec<InFlight>,
    /// Retries used (the first invocation is not one; a split keeps the count).
    pub retries: u32,
}

impl Chunk {
    /// A freshly fetched batch: partitions in the order given, offsets ascending.
    pub fn fetched(batch: Vec<(i32, Vec<Arc<Fetched>>)>) -> Self {
        let records = batch
            .into_iter()
            .flat_map(|(partition, records)| {
                records.into_iter().map(move |record| InFlight {
                    partition,
                    record,
                    invocations: 0,
                })
            })
            .collect();
        Self { records, retries: 0 }
    }
}

/// A record given up on, and why.
#[derive(Clone, Debug, PartialEq)]
pub struct GiveUp {
    /// The record.
    pub record: InFlight,
    /// Why.
    pub condition: Condition,
    /// Whether its last invocation was a function error (`responseContext.functionError`).
    pub function_error: bool,
}

/// What to do after one invocation.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Decision {
    /// Processed: may be committed.
    pub done: Vec<InFlight>,
    /// To invoke next, in this order, before anything fetched later.
    pub retry: Vec<Chunk>,
    /// To write to the on-failure destination (then commit past them).
    pub give_up: Vec<GiveUp>,
}

/// Splits off the records older than the mapping's age limit at `now`: Lambda sends
/// them to the destination without invoking the function.
pub fn expire(source: &MskSource, chunk: Chunk, now: DateTime<Utc>) -> (Chunk, Vec<GiveUp>) {
    let Some(max_age) = source
        .maximum_record_age
        .and_then(|a| chrono::Duration::from_std(a).ok())
    else {
        return (chunk, Vec::new());
    };
    let (expired, fresh): (Vec<InFlight>, Vec<InFlight>) = chunk
        .records
        .into_iter()
        .partition(|r| now - r.record.record.timestamp > max_age);
    let give_up = expired
        .into_iter()
        .map(|record| GiveUp {
            record,
            condition: Condition::RecordAgeExceeded,
            function_error: false,
        })
        .collect();
    (
        Chunk {
            records: fresh,
            retries: chunk.retries,
        },
        give_up,
    )
}

/// The event source's decision on an invoked chunk (whose records' invocation counts
/// already include this invocation), given the function's result.
pub fn decide(source: &MskSource, chunk: Chunk, result: &Result<Value, String>) -> Decision {
    let failure = match result {
        Ok(_) if !source.report_batch_item_failures => None,
        Ok(response) => match checkpoints(&source.topic, &chunk, response) {
            Ok(checkpoints) if checkpoints.is_empty() => None,
            Ok(checkpoints) => return resume_at_checkpoints(source, chunk, &checkpoints),
            Err(why) => Some(why),
        },
        Err(error) => Some(error.clone()),
    };
    match failure {
        None => Decision {
            done: chunk.records,
            ..Decision::default()
        },
        Some(_) if source.bisect_batch_on_function_error && chunk.records.len() > 1 => bisect(chunk),
        Some(_) => retry_or_give_up(source, chunk, true),
    }
}

/// Splits a failed chunk in two halves, the first retried first; a split uses no retry.
fn bisect(mut chunk: Chunk) -> Decision {
    let second = chunk.records.split_off(chunk.records.len() / 2);
    Decision {
        retry: vec![
            chunk.clone(),
            Chunk {
                records: second,
                retries: chunk.retries,
            },
        ],
        ..Decision::default()
    }
}

/// Retries the chunk if its budget allows, else gives up on each record.
fn retry_or_give_up(source: &MskSource, chunk: Chunk, function_error: bool) -> Decision {
    if source.retry_limit().is_none_or(|limit| chunk.retries < limit) {
        return Decision {
            retry: vec![Chunk {
                records: chunk.records,
                retries: chunk.retries + 1,
            }],
            ..Decision::default()
        };
    }
    Decision {
        give_up: chunk
            .records
            .into_iter()
            .map(|record| GiveUp {
                record,
                condition: Condition::RetriesExhausted,
                function_error,
            })
            .collect(),
        ..Decision::default()
    }
}

/// A valid partial batch response: records before each partition's checkpoint (and
/// every record of partitions not reported) are done; the rest is retried.
fn resume_at_checkpoints(source: &MskSource, chunk: Chunk, checkpoints: &BTreeMap<i32, i64>) -> Decision {
    let (rest, done): (Vec<InFlight>, Vec<InFlight>) = chunk
        .records
        .into_iter()
        .partition(|r| checkpoints.get(&r.partition).is_some_and(|at| r.record.offset >= *at));
    let rest = Chunk {
        records: rest,
        retries: chunk.retries,
    };
    Decision {
        done,
        ..retry_or_give_up(source, rest, false)
    }
}

/// The lowest reported offset per partition of a response's `batchItemFailures`, or why
/// the response is invalid (an identifier that is not a record of this chunk).
pub fn checkpoints(topic: &str, chunk: &Chunk, response: &Value) -> Result<BTreeMap<i32, i64>, String> {
    let failures = match response.get("batchItemFailures") {
        None | Some(Value::Null) => return Ok(BTreeMap::new()),
        Some(Value::Array(list)) => list,
        Some(other) => return Err(format!("batchItemFailures is not a list: {other}")),
    };
    let mut out: BTreeMap<i32, i64> = BTreeMap::new();
    for failure in failures {
        let id = &failure["itemIdentifier"];
        let partition = id["partition"]
            .as_str()
            .and_then(|p| p.strip_prefix(topic)?.strip_prefix('-')?.parse::<i32>().ok());
        let offset = id["offset"]
            .as_i64()
            .or_else(|| id["offset"].as_str().and_then(|o| o.parse().ok()));
        let known = |p: i32, o: i64| chunk.records.iter().any(|r| r.partition == p && r.record.offset == o);
        match (partition, offset) {
            (Some(p), Some(o)) if known(p, o) => {
                let at = out.entry(p).or_insert(o);
                *at = (*at).min(o);
            }
            _ => return Err(format!("batchItemFailures names a record not in the batch: {failure}")),
        }
    }
    Ok(out)
}

/// Where each fetched partition may be committed: its first record still pending, or
/// past the fetch (`ends`: partition → offset after its last fetched record).
pub fn commit_points<'a>(
    ends: &BTreeMap<i32, i64>,
    pending: impl IntoIterator<Item = &'a InFlight>,
) -> BTreeMap<i32, i64> {
    let mut out = ends.clone();
    for r in pending {
        if let Some(at) = out.get_mut(&r.partition) {
            *at = (*at).min(r.record.offset);
        }
    }
    out
}

/// The wait before a chunk's next attempt: none for a first invocation (or a split half).
pub fn retry_backoff(retries: u32) -> Duration {
    match retries {
        0 => Duration::ZERO,
        n => FIRST_BACKOFF.saturating_mul(1 << (n - 1).min(16)).min(MAX_BACKOFF),
    }
}

/// One record as the function receives it, built straight into the struct the consumer
/// reads (a JSON tree in between cost an allocation per field and a parse, per record and
/// mapping). The timestamp keeps Lambda's millisecond precision.
fn kafka_record(topic: &str, partition: i32, r: &RecordAndOffset) -> KafkaRecord {
    let mut record = KafkaRecord::default();
    record.topic = Some(topic.to_string());
    record.partition = i64::from(partition);
    record.offset = r.offset;
    let millis = r.record.timestamp.timestamp_millis();
    record.timestamp = MillisecondTimestamp(DateTime::from_timestamp_millis(millis).unwrap_or_default());
    record.timestamp_type = Some("CREATE_TIME".to_string());
    record.key = r.record.key.as_ref().map(|k| STANDARD.encode(k));
    record.value = r.record.value.as_ref().map(|v| STANDARD.encode(v));
    record.headers = r
        .record
        .headers
        .iter()
        .map(|(k, v)| HashMap::from([(k.clone(), v.iter().map(|b| *b as i8).collect())]))
        .collect();
    record
}

/// [`kafka_record`] as the JSON Lambda writes it. The crate writes the timestamp as a
/// string of milliseconds; Lambda writes the number.
fn record_json(record: &KafkaRecord) -> Value {
    let mut json = serde_json::to_value(record).unwrap_or(Value::Null);
    json["timestamp"] = json!(record.timestamp.timestamp_millis());
    json
}

/// Builds the `KafkaEvent` Lambda would receive for these records.
pub fn kafka_event(topic: &str, batch: &[(i32, Vec<RecordAndOffset>)]) -> KafkaEvent {
    let records = batch.iter().flat_map(|(partition, items)| {
        items
            .iter()
            .map(move |r| (*partition, kafka_record(topic, *partition, r)))
    });
    event_of(topic, records)
}

/// The `KafkaEvent` of a chunk: a copy of each record's shared `KafkaRecord`.
fn chunk_event(topic: &str, chunk: &Chunk) -> KafkaEvent {
    event_of(
        topic,
        chunk.records.iter().map(|r| (r.partition, r.record.kafka.clone())),
    )
}

/// The event of these records, grouped by "topic-partition".
fn event_of(topic: &str, records: impl Iterator<Item = (i32, KafkaRecord)>) -> KafkaEvent {
    let mut event = KafkaEvent::default();
    // A chunk holds each partition's records together: its key is written once per run.
    let mut run: Option<(i32, String)> = None;
    for (partition, record) in records {
        if run.as_ref().is_none_or(|(p, _)| *p != partition) {
            run = Some((partition, format!("{topic}-{partition}")));
        }
        let Some((_, key)) = &run else { continue };
        match event.records.get_mut(key) {
            Some(list) => list.push(record),
            None => {
                event.records.insert(key.clone(), vec![record]);
            }
        }
    }
    event.event_source = Some("aws:kafka".to_string());
    event.event_source_arn = Some(EVENT_SOURCE_ARN.to_string());
    event.bootstrap_servers = Some(BOOTSTRAP_SERVERS.to_string());
    event
}

/// The message Lambda writes to a Kafka on-failure destination for one record:
/// `requestContext` (condition, approximateInvokeCount), `responseContext` (only for a
/// record that was invoked), `KafkaBatchInfo`, and the record exactly as the function
/// received it under `payload.records`.
pub fn on_failure_message(source: &MskSource, give_up: &GiveUp, now: DateTime<Utc>) -> Value {
    let r = &give_up.record;
    let payload = json!({
        "bootstrapServers": BOOTSTRAP_SERVERS,
        "eventSource": "aws:kafka",
        "eventSourceArn": EVENT_SOURCE_ARN,
        "records": { format!("{}-{}", source.topic, r.partition): [record_json(&r.record.kafka)] },
    });
    let mut message = json!({
        "requestContext": {
            "requestId": uuid::Uuid::now_v7().to_string(),
            "functionArn": format!("arn:aws:lambda:local:000000000000:function:{}", source.function),
            "condition": give_up.condition.as_str(),
            "approximateInvokeCount": r.invocations,
        },
        "version": "1.0",
        "timestamp": devconnect::clock::rfc3339(&now),
        "KafkaBatchInfo": {
            "batchSize": 1,
            "eventSourceArn": EVENT_SOURCE_ARN,
            "bootstrapServers": BOOTSTRAP_SERVERS,
            "payloadSize": payload.to_string().len(),
            "recordInfo": {
                "offset": r.record.offset.to_string(),
                "timestamp": devconnect::clock::rfc3339(&r.record.record.timestamp),
            },
        },
        "payload": payload,
    });
    if r.invocations > 0 {
        let mut response = json!({"statusCode": 200, "executedVersion": "$LATEST"});
        if give_up.function_error {
            response["functionError"] = json!("Unhandled");
        }
        message["responseContext"] = response;
    }
    message
}

/// The on-failure topic's partitions (records are placed by key, as a Kafka producer would).
struct Destination {
    topic: String,
    partitions: Vec<PartitionClient>,
}

impl Destination {
    async fn connect(client: &Client, topic: &str) -> anyhow::Result<Self> {
        let count = client
            .list_topics()
            .await?
            .into_iter()
            .find(|t| t.name == topic)
            .map(|t| t.partitions.len())
            .ok_or_else(|| anyhow::anyhow!("on-failure topic {topic} does not exist"))?;
        let mut partitions = Vec::with_capacity(count);
        for p in 0..count {
            partitions.push(
                client
                    .partition_client(topic, p as i32, UnknownTopicHandling::Retry)
                    .await?,
            );
        }
        Ok(Self {
            topic: topic.to_string(),
            partitions,
        })
    }

    /// Writes one message per record; `Err` if any was not written in time.
    async fn send(&self, source: &MskSource, give_ups: &[GiveUp]) -> anyhow::Result<()> {
        let now = Utc::now();
        let mut by_partition: BTreeMap<usize, Vec<Record>> = BTreeMap::new();
        for g in give_ups {
            tracing::warn!(function = %source.function, topic = %source.topic, partition = g.record.partition,
                offset = g.record.record.offset, condition = g.condition.as_str(), destination = %self.topic,
                "record sent to the on-failure destination");
            let key = g.record.record.record.key.clone();
            let index = match &key {
                Some(k) => partition_for(k, self.partitions.len()),
                None => g.record.partition.unsigned_abs() as usize % self.partitions.len().max(1),
            };
            by_partition.entry(index).or_default().push(Record {
                key,
                value: Some(on_failure_message(source, g, now).to_string().into_bytes()),
                headers: BTreeMap::new(),
                timestamp: now,
            });
        }
        let sends = by_partition
            .into_iter()
            .map(|(index, records)| self.partitions[index].produce(records, Compression::NoCompression));
        tokio::time::timeout(DESTINATION_TIMEOUT, futures::future::try_join_all(sends))
            .await
            .map_err(|_| anyhow::anyhow!("writing to {} timed out", self.topic))??;
        devconnect::producer::announce_produced();
        Ok(())
    }
}

/// Records given up on with no destination configured are dropped, as Lambda does.
async fn give_up(source: &MskSource, destination: Option<&Destination>, records: &[GiveUp]) -> anyhow::Result<()> {
    match (destination, records.is_empty()) {
        (_, true) => Ok(()),
        (Some(d), false) => d.send(source, records).await,
        (None, false) => {
            tracing::warn!(function = %source.function, topic = %source.topic, records = records.len(), "records dropped: no on-failure destination");
            Ok(())
        }
    }
}

/// One partition's reader, and where the mapping stands in it.
struct Reader {
    client: PartitionClient,
    offset: i64,
}

async fn poll(
    source: &MskSource,
    invoke: &Invoke,
    kafka: &KafkaConnection,
    store: &Store,
    watch: &Watermarks,
    feed: &Feed,
) -> anyhow::Result<()> {
    let client = kafka.client_builder().build().await?;
    let partitions = client
        .list_topics()
        .await?
        .into_iter()
        .find(|t| t.name == source.topic)
        .map(|t| t.partitions)
        .ok_or_else(|| anyhow::anyhow!("topic {} does not exist yet", source.topic))?;
    let destination = match &source.on_failure_topic {
        Some(topic) => Some(Destination::connect(&client, topic).await?),
        None => None,
    };
    let offsets_key = keys::local_offsets(&source.group);
    let mut readers = Vec::new();
    for p in partitions {
        let pc = client
            .partition_client(source.topic.clone(), p, UnknownTopicHandling::Retry)
            .await?;
        let stored: Option<i64> = store.conn().hget(&offsets_key, field(source, p)).await?;
        let offset = match stored {
            Some(o) => o,
            None if source.starting_position == "LATEST" => latest(&pc).await?,
            None => pc.get_offset(OffsetAt::Earliest).await?,
        };
        readers.push(Reader { client: pc, offset });
    }
    // Commit the starting position, as a Kafka consumer group does, so "ready" is observable.
    commit(store, source, &positions(&readers)).await?;
    let mut watch = watch.clone();
    // When the mapping started gathering its next batch (the last read).
    let mut cut = tokio::time::Instant::now();
    loop {
        // Lambda's batching: the window opens when records arrive after the last batch;
        // the batch is read when it is full or the window is over.
        let at = positions(&readers);
        if let Some(opened) = watch.wait_for_records(&source.topic, &at, cut).await {
            let until = opened + source.batching_window;
            watch.wait_for_batch(&source.topic, &at, source.batch_size, until).await;
        }
        cut = tokio::time::Instant::now();
        let batch = fetch_batch(source, feed, &mut readers, &watch.marks()).await?;
        if batch.is_empty() {
            continue;
        }
        let ends: BTreeMap<i32, i64> = batch
            .iter()
            .filter_map(|(p, records)| records.last().map(|r| (*p, r.offset + 1)))
            .collect();
        run_batch(
            source,
            invoke,
            store,
            destination.as_ref(),
            Chunk::fetched(batch),
            &ends,
        )
        .await?;
        for reader in &mut readers {
            if let Some(end) = ends.get(&reader.client.partition()) {
                reader.offset = *end;
            }
        }
    }
}

/// The partition's high watermark (where `LATEST` starts). tansu answers ListOffsets
/// `Latest` with the last batch's first offset + 1, which is too low after a batch of
/// several records; a fetch's high watermark is right.
async fn latest(pc: &PartitionClient) -> anyhow::Result<i64> {
    let earliest = pc.get_offset(OffsetAt::Earliest).await?;
    let (_, high_watermark) = pc.fetch_records(earliest, 1..2, watch::READ_WAIT_MS).await?;
    Ok(high_watermark)
}

/// Where the mapping stands: partition → next offset.
fn positions(readers: &[Reader]) -> BTreeMap<i32, i64> {
    readers.iter().map(|r| (r.client.partition(), r.offset)).collect()
}

/// Up to `BatchSize` records, partition by partition, from the partitions the watermarks
/// show records in (all of them when they show none: the idle recheck, or no watch).
async fn fetch_batch(
    source: &MskSource,
    feed: &Feed,
    readers: &mut [Reader],
    marks: &watch::Marks,
) -> anyhow::Result<Vec<(i32, Vec<Arc<Fetched>>)>> {
    // The watermark of each partition with records past the mapping's offset.
    let ahead: Vec<Option<i64>> = readers
        .iter()
        .map(|r| {
            marks
                .get(&(source.topic.clone(), r.client.partition()))
                .copied()
                .filter(|hw| *hw > r.offset)
        })
        .collect();
    let any = ahead.iter().any(Option::is_some);
    let reads = readers.iter().zip(&ahead).map(|(r, seen)| async move {
        match seen.is_some() || !any {
            true => Some(
                feed.read(&r.client, &source.group, r.offset, source.batch_size, *seen)
                    .await,
            ),
            false => None,
        }
    });
    let fetched = futures::future::join_all(reads).await;
    let mut batch = Vec::new();
    let mut room = source.batch_size;
    for (reader, result) in readers.iter_mut().zip(fetched) {
        let records = match result {
            None => continue,
            Some(Ok(records)) => records,
            Some(Err(ReadError::OutOfRange)) => {
                // The broker lost the records (local memory storage restarted): start over.
                reader.offset = reader.client.get_offset(OffsetAt::Earliest).await?;
                continue;
            }
            Some(Err(ReadError::Broker(e))) => {
                tracing::debug!(error = %e, "fetch failed");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let take: Vec<Arc<Fetched>> = records.into_iter().take(room).collect();
        room -= take.len();
        if !take.is_empty() {
            batch.push((reader.client.partition(), take));
        }
    }
    Ok(batch)
}

/// Works a fetched batch off completely: invokes, retries, bisects and gives up as
/// [`decide`] says, committing each partition as far as it is settled after every step.
async fn run_batch(
    source: &MskSource,
    invoke: &Invoke,
    store: &Store,
    destination: Option<&Destination>,
    fetched: Chunk,
    ends: &BTreeMap<i32, i64>,
) -> anyhow::Result<()> {
    let mut queue = VecDeque::from([fetched]);
    let mut committed: BTreeMap<i32, i64> = BTreeMap::new();
    while let Some(chunk) = queue.pop_front() {
        let (mut chunk, expired) = expire(source, chunk, Utc::now());
        give_up(source, destination, &expired).await?;
        if !chunk.records.is_empty() {
            tokio::time::sleep(retry_backoff(chunk.retries)).await;
            for r in &mut chunk.records {
                r.invocations += 1;
            }
            let result = invoke_chunk(source, invoke, &chunk).await;
            let decision = decide(source, chunk, &result);
            give_up(source, destination, &decision.give_up).await?;
            for retry in decision.retry.into_iter().rev() {
                queue.push_front(retry);
            }
        }
        let points = commit_points(ends, queue.iter().flat_map(|c| &c.records));
        if points != committed {
            commit(store, source, &points).await?;
            committed = points;
        }
    }
    Ok(())
}

/// Invokes the function once with a chunk; logs it, and its failure.
async fn invoke_chunk(source: &MskSource, invoke: &Invoke, chunk: &Chunk) -> Result<Value, String> {
    let first = chunk.records.first().map(|r| (r.partition, r.record.offset));
    tracing::info!(function = %source.function, topic = %source.topic, records = chunk.records.len(),
        attempt = chunk.retries + 1, first = ?first, "invoking consumer");
    let result = invoke(chunk_event(&source.topic, chunk))
        .await
        .map_err(|e| format!("{e:#}"));
    if let Err(e) = &result {
        tracing::warn!(function = %source.function, error = %e, "function error");
    }
    result
}

/// The Redis field of a partition's offset.
fn field(source: &MskSource, partition: i32) -> String {
    format!("{}:{partition}", source.topic)
}

/// Stores the next offset to read per partition.
async fn commit(store: &Store, source: &MskSource, points: &BTreeMap<i32, i64>) -> anyhow::Result<()> {
    let key = keys::local_offsets(&source.group);
    let mut pipe = redis::pipe();
    for (partition, offset) in points {
        pipe.hset(&key, field(source, *partition), *offset).ignore();
    }
    pipe.query_async::<()>(&mut store.conn()).await?;
    Ok(())
}

#[cfg(test)]
mod tests;
