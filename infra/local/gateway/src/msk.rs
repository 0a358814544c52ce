//! The MSK event source mapping, emulated as AWS documents it (Lambda developer guide,
//! "Kafka retry configurations" and "partial batch responses").
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
    collections::{BTreeMap, VecDeque},
    sync::Arc,
    time::Duration,
};

use aws_lambda_events::event::kafka::KafkaEvent;
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

/// Bytes asked of one partition per poll.
const FETCH_BYTES: i32 = 4 * 1024 * 1024;
/// How often the watermarks are refreshed by default: the most a record waits before its
/// mappings read it (half of it on average). Each refresh costs
/// tansu about 0.15 ms of CPU per watched partition, which is the stack's idle cost;
/// `LOCAL_MSK_WATCH_MS` overrides it. 50 ms keeps the push latency of the 50 ms
/// per-partition polls this replaced (idle cost fell from ~27 % of a core to a few
/// percent); 250 ms would meet a 2 % idle budget at ~250 ms push latency.
const WATCH_INTERVAL_MS: u64 = 50;

/// The watermark refresh interval ([`WATCH_INTERVAL_MS`] or `LOCAL_MSK_WATCH_MS`).
fn watch_interval() -> Duration {
    static INTERVAL: std::sync::OnceLock<Duration> = std::sync::OnceLock::new();
    *INTERVAL.get_or_init(|| {
        let ms = std::env::var("LOCAL_MSK_WATCH_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(WATCH_INTERVAL_MS);
        Duration::from_millis(ms.clamp(1, 10_000))
    })
}
/// How long a read waits on an empty partition: tansu answers a fetch with no wait at
/// all without reading, and sleeps out the wait even after reading, so 1 ms.
const READ_WAIT_MS: i32 = 1;
/// Longest an idle mapping waits for a watcher's wake before reading again anyway.
const IDLE_RECHECK: Duration = Duration::from_secs(10);
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
/// One [`Watermarks`] watch serves them all: idle, the stack asks the broker one request
/// per [`watch_interval`] in total, not one per partition per mapping.
pub fn spawn_pollers(gateway: Arc<Gateway>, kafka: KafkaConnection, store: Store) {
    let topics: Vec<String> = gateway.template.msk_sources.iter().map(|s| s.topic.clone()).collect();
    let watch = Watermarks::spawn(&kafka, topics);
    for source in gateway.template.msk_sources.clone() {
        let invoke = gateway_invoke(Arc::clone(&gateway), source.function.clone());
        spawn_watched(source, invoke, kafka.clone(), store.clone(), watch.clone());
    }
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
    spawn_watched(source, invoke, kafka, store, watch)
}

fn spawn_watched(
    source: MskSource,
    invoke: Invoke,
    kafka: KafkaConnection,
    store: Store,
    watch: Watermarks,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let _watch_alive = watch.alive.clone();
        loop {
            if let Err(e) = poll(&source, &invoke, &kafka, &store, &watch).await {
                tracing::warn!(function = %source.function, topic = %source.topic, error = %e, "MSK poller restarting");
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    })
}

/// The high watermarks of the watched topics' partitions ((topic, partition) → offset
/// after the last record), refreshed by one task with one Kafka Fetch request per
/// [`watch_interval`] that names every partition and asks for no bytes: the broker reads
/// no records and answers with each partition's high watermark. (rskafka fetches one
/// partition per request, and tansu answers a fetch only when its `max_wait` is over,
/// found or not, so a long poll per partition would cost latency, and short polls per
/// partition per mapping are what kept the broker busy when idle.) The task ends when
/// every mapping using it is gone.
#[derive(Clone)]
struct Watermarks {
    rx: tokio::sync::watch::Receiver<BTreeMap<(String, i32), i64>>,
    alive: Arc<()>,
}

impl Watermarks {
    fn spawn(kafka: &KafkaConnection, mut topics: Vec<String>) -> Self {
        topics.sort();
        topics.dedup();
        let (tx, rx) = tokio::sync::watch::channel(BTreeMap::new());
        let alive = Arc::new(());
        let weak = Arc::downgrade(&alive);
        let plaintext = matches!(kafka.security(), devconnect::config::KafkaSecurity::Plaintext);
        let broker = kafka.brokers().first().cloned().filter(|_| plaintext);
        let kafka = kafka.clone();
        tokio::spawn(async move {
            while weak.strong_count() > 0 {
                let result = match &broker {
                    Some(broker) => watch_watermarks(&kafka, broker, &topics, &tx, &weak).await,
                    None => Err(anyhow::anyhow!("no plaintext broker to watch")),
                };
                if let Err(e) = result {
                    tracing::debug!(error = %e, "watermark watch restarting");
                }
                // No watermarks: the mappings read at this pace (see `wait_for_records`).
                tx.send_replace(BTreeMap::new());
                tokio::time::sleep(watch_interval()).await;
            }
        });
        Self { rx, alive }
    }

    /// Waits until a partition of `topic` has records past `offsets`, a refresh fails, or
    /// [`IDLE_RECHECK`] passes.
    async fn wait_for_records(&mut self, topic: &str, offsets: &BTreeMap<i32, i64>) {
        let topic = topic.to_string();
        let ahead = |marks: &BTreeMap<(String, i32), i64>| {
            offsets
                .iter()
                .any(|(p, at)| marks.get(&(topic.clone(), *p)).is_some_and(|hw| hw > at))
        };
        let _ = tokio::time::timeout(IDLE_RECHECK, async {
            loop {
                if ahead(&self.rx.borrow_and_update()) {
                    return;
                }
                if self.rx.changed().await.is_err() {
                    return;
                }
                if self.rx.borrow().is_empty() {
                    // The watch failed: read again, at the watch's pace.
                    return;
                }
            }
        })
        .await;
    }
}

/// Refreshes the watermarks every [`watch_interval`] over one connection until it fails.
async fn watch_watermarks(
    kafka: &KafkaConnection,
    broker: &str,
    topics: &[String],
    tx: &tokio::sync::watch::Sender<BTreeMap<(String, i32), i64>>,
    alive: &std::sync::Weak<()>,
) -> anyhow::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(broker).await?;
    stream.set_nodelay(true)?;
    let listed = kafka.client_builder().build().await?.list_topics().await?;
    let partitions: Vec<(String, Vec<i32>)> = topics
        .iter()
        .map(|t| {
            let found = listed.iter().find(|l| &l.name == t);
            (
                t.clone(),
                found
                    .map(|l| l.partitions.iter().copied().collect())
                    .unwrap_or_default(),
            )
        })
        .collect();
    // tansu reads, then sleeps out `max_wait` before answering: a 1 ms wait and our own
    // pace give watermarks as of the answer, not as of the interval's start.
    let request = fetch_watermarks_request(&partitions, READ_WAIT_MS);
    let mut correlation = 0i32;
    while alive.strong_count() > 0 {
        correlation = correlation.wrapping_add(1);
        let mut framed = request.clone();
        framed[8..12].copy_from_slice(&correlation.to_be_bytes());
        stream.write_all(&framed).await?;
        let size = stream.read_i32().await?;
        anyhow::ensure!((4..64 << 20).contains(&size), "bad response size {size}");
        let mut body = vec![0u8; size as usize];
        stream.read_exact(&mut body).await?;
        let marks = parse_watermarks(&body, correlation)?;
        tx.send_if_modified(|old| {
            let changed = *old != marks;
            *old = marks;
            changed
        });
        tokio::time::sleep(watch_interval()).await;
    }
    Ok(())
}

/// A Fetch v4 request (size-prefixed, correlation id at bytes 8..12) for the partitions
/// of `topics` with `max_bytes` 0 and the given wait.
fn fetch_watermarks_request(topics: &[(String, Vec<i32>)], max_wait_ms: i32) -> Vec<u8> {
    let mut b: Vec<u8> = Vec::new();
    let string = |b: &mut Vec<u8>, s: &str| {
        b.extend_from_slice(&(s.len() as i16).to_be_bytes());
        b.extend_from_slice(s.as_bytes());
    };
    b.extend_from_slice(&1i16.to_be_bytes()); // api key: Fetch
    b.extend_from_slice(&4i16.to_be_bytes()); // api version
    b.extend_from_slice(&0i32.to_be_bytes()); // correlation id (set per request)
    string(&mut b, "local-gateway-msk-watch");
    b.extend_from_slice(&(-1i32).to_be_bytes()); // replica id
    b.extend_from_slice(&max_wait_ms.to_be_bytes());
    b.extend_from_slice(&1i32.to_be_bytes()); // min bytes
    b.extend_from_slice(&0i32.to_be_bytes()); // max bytes: read no records
    b.push(0); // isolation level: read uncommitted
    b.extend_from_slice(&(topics.len() as i32).to_be_bytes());
    for (topic, partitions) in topics {
        string(&mut b, topic);
        b.extend_from_slice(&(partitions.len() as i32).to_be_bytes());
        for p in partitions {
            b.extend_from_slice(&p.to_be_bytes());
            b.extend_from_slice(&0i64.to_be_bytes()); // fetch offset
            b.extend_from_slice(&0i32.to_be_bytes()); // partition max bytes
        }
    }
    let mut framed = (b.len() as i32).to_be_bytes().to_vec();
    framed.extend(b);
    framed
}

/// The high watermarks of a Fetch v4 response (after its size), partitions with an
/// error left out.
fn parse_watermarks(body: &[u8], correlation: i32) -> anyhow::Result<BTreeMap<(String, i32), i64>> {
    struct Reader<'a>(&'a [u8]);
    impl Reader<'_> {
        fn take(&mut self, n: usize) -> anyhow::Result<&[u8]> {
            anyhow::ensure!(self.0.len() >= n, "short fetch response");
            let (head, rest) = self.0.split_at(n);
            self.0 = rest;
            Ok(head)
        }
        fn i16(&mut self) -> anyhow::Result<i16> {
            Ok(i16::from_be_bytes(self.take(2)?.try_into()?))
        }
        fn i32(&mut self) -> anyhow::Result<i32> {
            Ok(i32::from_be_bytes(self.take(4)?.try_into()?))
        }
        fn i64(&mut self) -> anyhow::Result<i64> {
            Ok(i64::from_be_bytes(self.take(8)?.try_into()?))
        }
    }
    let mut r = Reader(body);
    anyhow::ensure!(r.i32()? == correlation, "fetch response out of order");
    r.i32()?; // throttle time
    let mut out = BTreeMap::new();
    for _ in 0..r.i32()?.max(0) {
        let len = r.i16()?.max(0) as usize;
        let topic = String::from_utf8_lossy(r.take(len)?).into_owned();
        for _ in 0..r.i32()?.max(0) {
            let partition = r.i32()?;
            let error = r.i16()?;
            let high_watermark = r.i64()?;
            r.i64()?; // last stable offset
            let aborted = r.i32()?;
            r.take(aborted.max(0) as usize * 16)?;
            let records = r.i32()?;
            r.take(records.max(0) as usize)?;
            if error == 0 {
                out.insert((topic.clone(), partition), high_watermark);
            }
        }
    }
    Ok(out)
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
    /// The record and its offset.
    pub record: RecordAndOffset,
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
    pub fn fetched(batch: Vec<(i32, Vec<RecordAndOffset>)>) -> Self {
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

/// One record as Lambda puts it in a `KafkaEvent`.
fn record_json(topic: &str, partition: i32, r: &RecordAndOffset) -> Value {
    let headers: Vec<Value> = r
        .record
        .headers
        .iter()
        .map(|(k, v)| json!({ k: v.iter().map(|b| *b as i8).collect::<Vec<i8>>() }))
        .collect();
    json!({
        "topic": topic,
        "partition": partition,
        "offset": r.offset,
        "timestamp": r.record.timestamp.timestamp_millis(),
        "timestampType": "CREATE_TIME",
        "key": r.record.key.as_ref().map(|k| STANDARD.encode(k)),
        "value": r.record.value.as_ref().map(|v| STANDARD.encode(v)),
        "headers": headers,
    })
}

/// Builds the `KafkaEvent` Lambda would receive for these records.
pub fn kafka_event(topic: &str, batch: &[(i32, Vec<RecordAndOffset>)]) -> anyhow::Result<KafkaEvent> {
    let records = batch
        .iter()
        .flat_map(|(partition, items)| items.iter().map(move |r| (*partition, r)));
    event_of(topic, records)
}

/// The `KafkaEvent` of a chunk.
fn chunk_event(topic: &str, chunk: &Chunk) -> anyhow::Result<KafkaEvent> {
    event_of(topic, chunk.records.iter().map(|r| (r.partition, &r.record)))
}

fn event_of<'a>(topic: &str, records: impl Iterator<Item = (i32, &'a RecordAndOffset)>) -> anyhow::Result<KafkaEvent> {
    let mut grouped: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for (partition, r) in records {
        grouped
            .entry(format!("{topic}-{partition}"))
            .or_default()
            .push(record_json(topic, partition, r));
    }
    Ok(serde_json::from_value(json!({
        "eventSource": "aws:kafka",
        "eventSourceArn": EVENT_SOURCE_ARN,
        "bootstrapServers": BOOTSTRAP_SERVERS,
        "records": grouped,
    }))?)
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
        "records": { format!("{}-{}", source.topic, r.partition): [record_json(&source.topic, r.partition, &r.record)] },
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
    client: Arc<PartitionClient>,
    offset: i64,
}

async fn poll(
    source: &MskSource,
    invoke: &Invoke,
    kafka: &KafkaConnection,
    store: &Store,
    watch: &Watermarks,
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
            None if source.starting_position == "LATEST" => pc.get_offset(OffsetAt::Latest).await?,
            None => pc.get_offset(OffsetAt::Earliest).await?,
        };
        readers.push(Reader {
            client: Arc::new(pc),
            offset,
        });
    }
    // Commit the starting position, as a Kafka consumer group does, so "ready" is observable.
    let start: BTreeMap<i32, i64> = readers.iter().map(|r| (r.client.partition(), r.offset)).collect();
    commit(store, source, &start).await?;
    let mut watch = watch.clone();
    loop {
        let batch = fetch_batch(source, &mut readers).await?;
        if batch.is_empty() {
            // Nothing to read: wait until the broker's watermarks show records past here.
            let at: BTreeMap<i32, i64> = readers.iter().map(|r| (r.client.partition(), r.offset)).collect();
            watch.wait_for_records(&source.topic, &at).await;
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

/// Up to `BatchSize` records from the partitions, partition by partition (what is there
/// now: no wait).
async fn fetch_batch(source: &MskSource, readers: &mut [Reader]) -> anyhow::Result<Vec<(i32, Vec<RecordAndOffset>)>> {
    let fetched = futures::future::join_all(readers.iter().map(|r| fetch(&r.client, r.offset))).await;
    let mut batch = Vec::new();
    let mut room = source.batch_size;
    for (reader, result) in readers.iter_mut().zip(fetched) {
        let Ok(records) = result else {
            // The broker lost the records (local memory storage restarted): start over.
            reader.offset = reader.client.get_offset(OffsetAt::Earliest).await?;
            continue;
        };
        let take: Vec<RecordAndOffset> = records.into_iter().take(room).collect();
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
    let event = chunk_event(&source.topic, chunk).map_err(|e| e.to_string())?;
    let result = invoke(event).await.map_err(|e| format!("{e:#}"));
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

struct Reset;

async fn fetch(pc: &PartitionClient, offset: i64) -> Result<Vec<RecordAndOffset>, Reset> {
    match pc.fetch_records(offset, 1..FETCH_BYTES, READ_WAIT_MS).await {
        Ok((records, _high_watermark)) => Ok(records.into_iter().filter(|r| r.offset >= offset).collect()),
        Err(rskafka::client::error::Error::ServerError {
            protocol_error: rskafka::client::error::ProtocolError::OffsetOutOfRange,
            ..
        }) => Err(Reset),
        Err(e) => {
            tracing::debug!(error = %e, "fetch failed");
            tokio::time::sleep(Duration::from_millis(200)).await;
            Ok(Vec::new())
        }
    }
}

#[cfg(test)]
mod tests;
