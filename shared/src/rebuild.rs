//! Rebuilding a projection from the topics, so a fixed consumer can be applied to history.
//!
//! One run, under a lock (one rebuild per projection at a time):
//! 1. picks generation N+1 (N = live; see [`crate::projection`]) and marks it `building`;
//! 2. reads every partition of the consumer's topics from the earliest retained offset and
//!    applies the records to N+1 with the consumer's own apply code, while the live
//!    consumer goes on applying to N;
//! 3. once it is within [`Options::switch_lag`] records of the topics' ends, switches
//!    `live` to N+1 with one script (which checks the lock, the old `live` and `building`);
//! 4. drains every record produced up to the moment after the switch into N+1, so nothing
//!    the live consumer applied only to N is missing (dedupe markers are per generation,
//!    so a record applied by both is applied once in N+1);
//! 5. after [`Options::cleanup_grace`] (a consumer batch still writing N has ended by
//!    then), deletes N's keys in bounded SCAN/UNLINK batches. Old keys are deleted, not
//!    left to expire: notification lists have no TTL.
//!
//! Records from different partitions are merged by event time, the order the live
//! consumer sees them in when it keeps up, so order-dependent state (a capped list) comes
//! out the same. Every wait has a deadline ([`Options::deadline`]); a rebuild that misses
//! it stops before switching, leaves readers on N and its partial generation is deleted
//! by the next run. Progress is logged and counted ([`crate::metrics`]: `RebuildRecords`,
//! `RebuildLag`, `RebuildSwitches`, `RebuildKeysDeleted`).
//!
//! Limits: a notification for a message is created only if the receiver is offline; the
//! rebuild decides that with presence at replay time (past presence is in no topic).
//! On a Redis Cluster the old generation is deleted on every primary (SCAN sees only
//! the keys of the node it runs on).

use std::{
    collections::VecDeque,
    future::Future,
    sync::LazyLock,
    time::{Duration, Instant},
};

use aws_lambda_events::event::kafka::{KafkaEvent, KafkaRecord};
use base64::{engine::general_purpose::STANDARD, Engine};
use redis::Script;
use rskafka::{
    client::partition::{OffsetAt, PartitionClient, UnknownTopicHandling},
    record::RecordAndOffset,
};
use serde::Serialize;

use crate::{
    consumer::{self, Incoming},
    error::{chain, Cause},
    metrics,
    projection::{self, Projection},
    state::AppState,
    AppError,
};

/// Knobs of one run; [`Options::default`] suits a Lambda with a 900 s timeout.
#[derive(Clone, Debug)]
pub struct Options {
    /// The whole run, switch and cleanup included, ends by then.
    pub deadline: Duration,
    /// Wait between the switch and deleting the old generation.
    pub cleanup_grace: Duration,
    /// After a first pass, switch once at most this many records are left to replay (the
    /// drain after the switch covers them; readers miss at most these for that long);
    /// 0 = only when fully caught up.
    pub switch_lag: u64,
    /// Records per apply call (one Redis round trip each).
    pub apply_batch: usize,
    /// Bytes per fetch from one partition.
    pub fetch_bytes: i32,
    /// How long the lock lives without being extended (the run extends it after each batch).
    pub lock_ttl: Duration,
    /// Longest single broker call.
    pub broker_timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            deadline: Duration::from_secs(840),
            // Longer than a consumer invocation (Timeout: 60 in template.yaml).
            cleanup_grace: Duration::from_secs(90),
            switch_lag: 50,
            apply_batch: 500,
            fetch_bytes: 1024 * 1024,
            lock_ttl: Duration::from_secs(30),
            broker_timeout: Duration::from_secs(10),
        }
    }
}

/// What a run did.
#[derive(Debug, Default, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// `notifications` or `analytics`.
    pub projection: String,
    /// The generation readers used before.
    pub previous_generation: u64,
    /// The generation readers use now.
    pub generation: u64,
    /// Records applied before the switch.
    pub replayed: u64,
    /// Records applied after the switch (produced while rebuilding).
    pub drained: u64,
    /// Records the apply code refused for good (the live consumer dead-lettered them).
    pub rejected: u64,
    /// Keys of the old generation deleted; `None` if the run stopped before deleting them.
    pub deleted_keys: Option<u64>,
    /// How long the run took.
    pub elapsed_ms: u64,
}

/// Why a rebuild stopped.
#[derive(Debug, thiserror::Error)]
pub enum RebuildError {
    /// Another rebuild of this projection holds the lock.
    #[error("a rebuild of {0} is already running")]
    AlreadyRunning(&'static str),
    /// The lock expired or was taken (the run was too slow to extend it).
    #[error("the rebuild of {0} lost its lock")]
    LockLost(&'static str),
    /// The pointer changed under the run (someone switched by hand).
    #[error("the pointer of {0} moved during the rebuild; nothing switched")]
    PointerMoved(&'static str),
    /// The run did not finish before [`Options::deadline`].
    #[error("the rebuild of {0} missed its deadline while {1}")]
    Deadline(&'static str, &'static str),
    /// The broker failed: what we were doing, with the broker's error as the source.
    #[error("kafka: {0}")]
    Kafka(#[source] Cause),
    /// Redis failed.
    #[error(transparent)]
    Redis(#[from] AppError),
}

impl From<redis::RedisError> for RebuildError {
    fn from(e: redis::RedisError) -> Self {
        Self::Redis(AppError::from(e))
    }
}

/// KEYS: lock. ARGV: token, ttl ms. Takes the lock if free.
static LOCK: LazyLock<Script> =
    LazyLock::new(|| Script::new("return redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) and 1 or 0"));

/// KEYS: lock. ARGV: token, ttl ms. Extends the lock if still ours.
static EXTEND: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end return 0",
    )
});

/// KEYS: lock. ARGV: token. Releases the lock if still ours.
static UNLOCK: LazyLock<Script> = LazyLock::new(|| {
    Script::new("if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0")
});

/// KEYS: pointer, lock. ARGV: token, expected live, expected building ('' = none), new
/// live, new building ('' = none). Moves the pointer only if the lock is ours and it still
/// says what the run saw; one script, so readers see the old or the new pointer, never a mix.
static MOVE: LazyLock<Script> = LazyLock::new(|| {
    crate::script::atomic(
        r#"
local bad = wrong_types({KEYS[1], 'hash', KEYS[2], 'string'})
if bad then return redis.error_reply(bad) end
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 'lock' end
local p = redis.call('HMGET', KEYS[1], 'live', 'building')
if (p[1] or '0') ~= ARGV[2] or (p[2] or '') ~= ARGV[3] then return 'moved' end
redis.call('HSET', KEYS[1], 'live', ARGV[4])
if ARGV[5] == '' then redis.call('HDEL', KEYS[1], 'building') else redis.call('HSET', KEYS[1], 'building', ARGV[5]) end
return 'ok'
"#,
    )
});

/// Rebuilds `projection` from `topics`, applying records with `apply(generation, records)`
/// (the live consumer's apply path; `Err` only for a transient failure, retried until the
/// deadline; records it refuses for good it reports in the returned count).
pub async fn run(
    state: &AppState,
    projection: Projection,
    topics: &[String],
    options: &Options,
    mut apply: impl AsyncFnMut(u64, &[Incoming]) -> Result<u64, AppError>,
) -> Result<Report, RebuildError> {
    let started = Instant::now();
    let token = uuid::Uuid::new_v4().to_string();
    let ttl = options.lock_ttl.as_millis() as u64;
    let mut lock = LOCK.key(projection.lock_key());
    lock.arg(&token).arg(ttl);
    let taken: i64 = lock.invoke_async(&mut state.store.conn()).await?;
    if taken != 1 {
        return Err(RebuildError::AlreadyRunning(projection.name()));
    }
    let mut run = Run {
        state,
        projection,
        options,
        token,
        deadline: started + options.deadline,
        report: Report {
            projection: projection.name().into(),
            ..Report::default()
        },
    };
    let result = run.rebuild(topics, &mut apply).await;
    let mut unlock = UNLOCK.key(projection.lock_key());
    unlock.arg(&run.token);
    if let Err(e) = unlock.invoke_async::<i64>(&mut state.store.conn()).await {
        tracing::warn!(projection = projection.name(), error = %e, "rebuild lock not released; it expires by itself");
    }
    let mut report = run.report;
    report.elapsed_ms = started.elapsed().as_millis() as u64;
    match result {
        Ok(()) => {
            tracing::info!(?report, "rebuild done");
            Ok(report)
        }
        Err(e) => {
            tracing::error!(projection = projection.name(), error = %chain(&e), ?report, "rebuild failed");
            Err(e)
        }
    }
}

/// One partition being replayed.
struct Reader {
    client: PartitionClient,
    next: i64,
    /// Fetches in a row that returned nothing below the end.
    empty: u32,
}

/// Tries of one broker call before the rebuild gives up.
const BROKER_ATTEMPTS: u64 = 4;

/// A fetch's `max_wait`: 1 ms, because tansu (the local broker) answers a fetch with no
/// wait without reading at all; MSK answers as soon as it has bytes either way.
const FETCH_WAIT_MS: i32 = 1;

/// Empty fetches below a partition's end before the rebuild skips to that end (a
/// transaction marker or records removed by retention; logged).
const EMPTY_FETCHES_BEFORE_SKIP: u32 = 5;

struct Run<'a> {
    state: &'a AppState,
    projection: Projection,
    options: &'a Options,
    token: String,
    deadline: Instant,
    report: Report,
}

impl Run<'_> {
    async fn rebuild(
        &mut self,
        topics: &[String],
        apply: &mut impl AsyncFnMut(u64, &[Incoming]) -> Result<u64, AppError>,
    ) -> Result<(), RebuildError> {
        let name = self.projection.name();
        let pointer = projection::pointer(&self.state.store, self.projection).await?;
        let generation = pointer.live.max(pointer.building.unwrap_or(0)) + 1;
        self.report.previous_generation = pointer.live;
        self.report.generation = pointer.live;
        self.move_pointer(pointer.live, pointer.building, pointer.live, Some(generation))
            .await?;
        if let Some(stale) = pointer.building {
            // A run that died before switching left a partial generation behind.
            tracing::info!(
                projection = name,
                stale,
                "deleting the partial generation of an earlier rebuild"
            );
            self.delete_generation(stale).await?;
        }
        tracing::info!(
            projection = name,
            from = pointer.live,
            to = generation,
            ?topics,
            "rebuild started"
        );
        let mut readers = self.open(topics).await?;
        self.report.replayed = self
            .replay(&mut readers, generation, apply, self.options.switch_lag)
            .await?;
        self.move_pointer(pointer.live, Some(generation), generation, None)
            .await?;
        self.report.generation = generation;
        self.state.metrics.count(metrics::REBUILD_SWITCHES, 1);
        tracing::info!(
            projection = name,
            generation,
            "readers switched; draining what came meanwhile"
        );
        // Every record produced before the switch is below the ends read from here on.
        self.report.drained = self.replay(&mut readers, generation, apply, 0).await?;
        let grace = self.options.cleanup_grace;
        if Instant::now() + grace >= self.deadline {
            tracing::warn!(
                projection = name,
                old = pointer.live,
                "no time left to delete the old generation"
            );
            return Ok(());
        }
        tokio::time::sleep(grace).await;
        self.report.deleted_keys = Some(self.delete_generation(pointer.live).await?);
        Ok(())
    }

    /// Moves the pointer from (`live`, `building`) to (`new_live`, `new_building`).
    async fn move_pointer(
        &self,
        live: u64,
        building: Option<u64>,
        new_live: u64,
        new_building: Option<u64>,
    ) -> Result<(), RebuildError> {
        let text = |g: Option<u64>| g.map(|g| g.to_string()).unwrap_or_default();
        let mut call = MOVE.key(self.projection.pointer_key());
        call.key(self.projection.lock_key())
            .arg(&self.token)
            .arg(live)
            .arg(text(building))
            .arg(new_live)
            .arg(text(new_building));
        let outcome: String = call.invoke_async(&mut self.state.store.conn()).await?;
        match outcome.as_str() {
            "ok" => Ok(()),
            "lock" => Err(RebuildError::LockLost(self.projection.name())),
            _ => Err(RebuildError::PointerMoved(self.projection.name())),
        }
    }

    /// Extends the lock, and fails once the deadline has passed.
    async fn keep_going(&self, doing: &'static str) -> Result<(), RebuildError> {
        if Instant::now() >= self.deadline {
            return Err(RebuildError::Deadline(self.projection.name(), doing));
        }
        let mut extend = EXTEND.key(self.projection.lock_key());
        extend.arg(&self.token).arg(self.options.lock_ttl.as_millis() as u64);
        let held: i64 = extend.invoke_async(&mut self.state.store.conn()).await?;
        if held != 1 {
            return Err(RebuildError::LockLost(self.projection.name()));
        }
        Ok(())
    }

    /// A broker call, each attempt bounded by [`Options::broker_timeout`]; a failed one is
    /// tried again (up to [`BROKER_ATTEMPTS`], within the deadline): a broker restarting or
    /// moving a partition leader answers a few requests with errors.
    async fn broker<T, F: Future<Output = Result<T, rskafka::client::error::Error>>>(
        &self,
        call: impl Fn() -> F,
    ) -> Result<T, RebuildError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let error = match tokio::time::timeout(self.options.broker_timeout, call()).await {
                Ok(Ok(value)) => return Ok(value),
                Ok(Err(e)) => Cause::new("broker call", e),
                Err(_) => Cause::bare("broker call timed out"),
            };
            let backoff = Duration::from_millis(200 * attempt);
            if attempt >= BROKER_ATTEMPTS || Instant::now() + backoff >= self.deadline {
                return Err(RebuildError::Kafka(error));
            }
            tracing::warn!(projection = self.projection.name(), attempt, error = %chain(&error), "broker call failed; retrying");
            tokio::time::sleep(backoff).await;
        }
    }

    /// Every partition of `topics`, at its earliest retained offset.
    async fn open(&self, topics: &[String]) -> Result<Vec<Reader>, RebuildError> {
        let client = self
            .state
            .producer
            .client()
            .await
            .map_err(|e| RebuildError::Kafka(Cause::new("kafka client", e)))?;
        let listed = self.broker(|| client.list_topics()).await?;
        let mut readers = Vec::new();
        for topic in topics {
            let partitions = listed
                .iter()
                .find(|t| &t.name == topic)
                .map(|t| t.partitions.clone())
                .ok_or_else(|| RebuildError::Kafka(Cause::bare(format!("topic {topic} does not exist"))))?;
            for p in partitions {
                let pc = self
                    .broker(|| client.partition_client(topic.clone(), p, UnknownTopicHandling::Error))
                    .await?;
                let next = self
                    .broker(|| pc.get_offset(OffsetAt::Earliest))
                    .await
                    .map_err(|e| RebuildError::Kafka(Cause::new(format!("earliest offset of {topic}/{p}"), e)))?;
                readers.push(Reader {
                    client: pc,
                    next,
                    empty: 0,
                });
            }
        }
        Ok(readers)
    }

    /// Replays until at most `lag` records are left behind the ends of the partitions
    /// (ends read afresh each pass). Returns the records applied.
    async fn replay(
        &mut self,
        readers: &mut [Reader],
        generation: u64,
        apply: &mut impl AsyncFnMut(u64, &[Incoming]) -> Result<u64, AppError>,
        lag: u64,
    ) -> Result<u64, RebuildError> {
        let mut applied = 0;
        let mut passes = 0;
        loop {
            self.keep_going("replaying").await?;
            let mut ends = Vec::with_capacity(readers.len());
            for r in readers.iter() {
                // The high watermark, as a fetch reports it (one byte asked for).
                let (_, end) = self
                    .broker(|| r.client.fetch_records(r.next, 1..2, FETCH_WAIT_MS))
                    .await?;
                ends.push(end);
            }
            let behind: u64 = readers
                .iter()
                .zip(&ends)
                .map(|(r, end)| (end - r.next).max(0) as u64)
                .sum();
            self.state.metrics.gauge(metrics::REBUILD_LAG, behind as f64);
            tracing::info!(
                projection = self.projection.name(),
                generation,
                behind,
                applied,
                "rebuild progress"
            );
            // At least one pass first: a small topic is never "close enough" before its
            // records are in (readers would see an empty generation until the drain).
            if behind == 0 || (behind <= lag && passes > 0) {
                return Ok(applied);
            }
            passes += 1;
            // One pass: fetch up to each partition's end as read above.
            while readers.iter().zip(&ends).any(|(r, end)| r.next < *end) {
                self.keep_going("replaying").await?;
                let mut fetched = Vec::new();
                for (r, end) in readers.iter_mut().zip(&ends) {
                    if r.next >= *end {
                        continue;
                    }
                    let (next, bytes) = (r.next, 1..self.options.fetch_bytes);
                    let client = &r.client;
                    let (records, _) = self
                        .broker(|| client.fetch_records(next, bytes.clone(), FETCH_WAIT_MS))
                        .await?;
                    let records: Vec<RecordAndOffset> = records.into_iter().filter(|x| x.offset >= r.next).collect();
                    match records.last() {
                        Some(last) => {
                            r.next = last.offset + 1;
                            r.empty = 0;
                        }
                        None if r.empty + 1 >= EMPTY_FETCHES_BEFORE_SKIP => {
                            tracing::warn!(
                                topic = r.client.topic(),
                                partition = r.client.partition(),
                                from = r.next,
                                to = *end,
                                "nothing readable below the end; skipping"
                            );
                            r.next = *end;
                            r.empty = 0;
                        }
                        None => {
                            r.empty += 1;
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    }
                    fetched.push(decode(r.client.topic(), r.client.partition(), &records));
                }
                let merged = merge_by_time(fetched);
                for chunk in merged.chunks(self.options.apply_batch.max(1)) {
                    applied += self.apply_chunk(generation, chunk, apply).await?;
                }
            }
        }
    }

    /// Applies one chunk, retrying a transient failure with backoff until the deadline.
    async fn apply_chunk(
        &mut self,
        generation: u64,
        chunk: &[Incoming],
        apply: &mut impl AsyncFnMut(u64, &[Incoming]) -> Result<u64, AppError>,
    ) -> Result<u64, RebuildError> {
        let mut backoff = Duration::from_millis(100);
        loop {
            match apply(generation, chunk).await {
                Ok(rejected) => {
                    self.report.rejected += rejected;
                    self.state.metrics.count(metrics::REBUILD_RECORDS, chunk.len() as u64);
                    return Ok(chunk.len() as u64);
                }
                Err(e) if e.is_transient() && Instant::now() + backoff < self.deadline => {
                    tracing::warn!(projection = self.projection.name(), error = %e, "rebuild apply failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    self.keep_going("retrying").await?;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Deletes every key of `generation`: SCAN in batches of 500, UNLINK each batch, on
    /// every node that holds keys (each primary of a cluster).
    async fn delete_generation(&self, generation: u64) -> Result<u64, RebuildError> {
        let name = self.projection.name();
        let pattern = self.projection.pattern(generation);
        let store = &self.state.store;
        let mut deleted = 0;
        for node in store.scan_nodes().await? {
            let mut cursor: u64 = 0;
            loop {
                self.keep_going("deleting the old generation").await?;
                let (next, keys) = store.scan_page(&node, cursor, &pattern, 500).await?;
                if !keys.is_empty() {
                    // The keys of one node; on a cluster the client splits them by slot.
                    let n: u64 = redis::cmd("UNLINK").arg(&keys).query_async(&mut store.conn()).await?;
                    deleted += n;
                    self.state.metrics.count(metrics::REBUILD_KEYS_DELETED, n);
                }
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        tracing::info!(projection = name, generation, deleted, "old generation deleted");
        Ok(deleted)
    }
}

/// Decodes fetched records exactly as the consumers' event source delivers them
/// (base64 in a `KafkaEvent`), through the consumers' own decoder: what the live
/// consumer would dead-letter is left out here too.
fn decode(topic: &str, partition: i32, records: &[RecordAndOffset]) -> Vec<Incoming> {
    let mut event = KafkaEvent::default();
    let batch = records
        .iter()
        .map(|r| {
            let mut k = KafkaRecord::default();
            k.topic = Some(topic.to_string());
            k.partition = i64::from(partition);
            k.offset = r.offset;
            k.key = r.record.key.as_ref().map(|b| STANDARD.encode(b));
            k.value = r.record.value.as_ref().map(|b| STANDARD.encode(b));
            k
        })
        .collect();
    event.records.insert(format!("{topic}-{partition}"), batch);
    consumer::decode_batch(&event).0
}

/// Merges per-partition runs (each in offset order) into one, earliest event first,
/// keeping each partition's own order.
fn merge_by_time(runs: Vec<Vec<Incoming>>) -> Vec<Incoming> {
    let mut runs: Vec<VecDeque<Incoming>> = runs.into_iter().map(VecDeque::from).collect();
    let mut merged = Vec::with_capacity(runs.iter().map(VecDeque::len).sum());
    while let Some(i) = runs
        .iter()
        .enumerate()
        .filter_map(|(i, run)| run.front().map(|r| (r.envelope.timestamp, i)))
        .min()
        .map(|(_, i)| i)
    {
        if let Some(record) = runs[i].pop_front() {
            merged.push(record);
        }
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{Envelope, EventType};

    fn incoming(partition: i64, offset: i64, at_ms: i64) -> Incoming {
        let mut envelope = Envelope::new(
            EventType::UserLogin,
            "auth",
            "0190c3a4-0000-7000-8000-00000000000a",
            "r",
            serde_json::json!({"userId": "0190c3a4-0000-7000-8000-00000000000a"}),
        );
        envelope.timestamp = chrono::DateTime::from_timestamp_millis(at_ms).unwrap();
        Incoming {
            topic: "user-events".into(),
            partition,
            offset,
            event: envelope.event().unwrap(),
            envelope: envelope.head(),
        }
    }

    #[test]
    fn merging_orders_by_event_time_and_keeps_each_partitions_order() {
        let a = vec![incoming(0, 0, 10), incoming(0, 1, 30), incoming(0, 2, 20)];
        let b = vec![incoming(1, 0, 15), incoming(1, 1, 25)];
        let order: Vec<(i64, i64)> = merge_by_time(vec![a, b])
            .iter()
            .map(|r| (r.partition, r.offset))
            .collect();
        assert_eq!(order, vec![(0, 0), (1, 0), (1, 1), (0, 1), (0, 2)]);
    }
}
