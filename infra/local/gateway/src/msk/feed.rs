//! One topic's records, read from the broker once for every mapping of the topic.
//!
//! Kafka consumers keep what a fetch returned and hand it out batch by batch; several
//! mappings read each topic here (user-events feeds three functions). tansu pays for a
//! fetch with data by listing every record batch the partition ever stored, so each fetch
//! saved matters: a partition's buffer keeps the fetched records until every mapping of
//! the topic has read past them, a mapping that finds records for it in the buffer takes
//! them from there, and only one that has read everything fetches again (from where the
//! buffer ends, while the others wait for it). A mapping outside the buffer (restarted
//! behind it, or started ahead of it) reads for itself.
//!
//! What a function receives for a record (its `KafkaRecord`: base64 key and value, headers
//! as signed bytes) is the same for every mapping of the topic, so it is built once, when
//! the record is fetched, and the mappings share it ([`Fetched`]); each invocation takes a
//! copy of it instead of encoding the record again.
//!
//! A fetch's `max_wait` is its read budget: the tansu the installers provide (the PyPI
//! wheel's build) stops listing and reading when `max_wait` is over and answers with what
//! it has, which is nothing once listing the partition takes longer than the wait (a 1 ms
//! wait stalled the triggers at a few thousand batches per partition, each fetch costing
//! the broker the listing for no record). tansu 0.6.0 from crates.io reads everything and
//! then sleeps out the rest of the wait, so there the budget is latency. The budget
//! therefore starts small and doubles, up to [`MAX_READ_WAIT_MS`], whenever a read stops
//! short of records the watermarks showed before it was sent (see [`cut_short`]).

use std::{
    collections::{BTreeMap, VecDeque},
    sync::{
        atomic::{AtomicI32, AtomicU64, Ordering},
        Arc, Mutex,
    },
};

use aws_lambda_events::event::kafka::KafkaRecord;
use rskafka::{
    client::partition::PartitionClient,
    record::{Record, RecordAndOffset},
};

/// Bytes asked of one partition per fetch.
const FETCH_BYTES: i32 = 4 * 1024 * 1024;
/// First read budget (Fetch `max_wait`) of a fetch for records the watermarks showed:
/// listing 20,000 stored batches costs tansu about 12 ms of CPU.
const FIRST_READ_WAIT_MS: i32 = 20;
/// Largest read budget.
const MAX_READ_WAIT_MS: i32 = 1_000;
/// Most record bytes a partition's buffer holds: beyond it, the oldest go even if a
/// mapping (stuck retrying) has not read them; it then reads for itself.
const BUFFER_BYTES: usize = 32 * 1024 * 1024;

/// Why a read failed.
#[derive(Debug)]
pub enum ReadError {
    /// The broker does not have the offset (its memory storage restarted): start over.
    OutOfRange,
    /// Any other broker error.
    Broker(rskafka::client::error::Error),
}

/// A fetched record, and the `KafkaRecord` every mapping's function receives for it.
#[derive(Debug, PartialEq)]
pub struct Fetched {
    /// Its offset.
    pub offset: i64,
    /// The record as the broker has it.
    pub record: Record,
    /// The record as the function receives it ([`super::kafka_record`]).
    pub kafka: KafkaRecord,
}

impl Fetched {
    /// A record of `topic`'s `partition`, with its `KafkaRecord` built.
    pub fn new(topic: &str, partition: i32, r: RecordAndOffset) -> Arc<Self> {
        Arc::new(Self {
            kafka: super::kafka_record(topic, partition, &r),
            offset: r.offset,
            record: r.record,
        })
    }
}

/// Record fetches sent to the broker by this process's feeds.
static FETCHES: AtomicU64 = AtomicU64::new(0);

/// Record fetches sent to the broker so far (for the benchmarks).
pub fn fetches() -> u64 {
    FETCHES.load(Ordering::Relaxed)
}

/// The buffers of one topic's partitions, and the read budget its fetches need.
#[derive(Clone)]
pub struct Feed {
    partitions: Arc<Mutex<BTreeMap<i32, Arc<tokio::sync::Mutex<Buffer>>>>>,
    read_wait_ms: Arc<AtomicI32>,
}

impl Default for Feed {
    fn default() -> Self {
        Self {
            partitions: Arc::default(),
            read_wait_ms: Arc::new(AtomicI32::new(FIRST_READ_WAIT_MS)),
        }
    }
}

/// Whether a read that ended at `reached` (the offset after its last record, or where it
/// started if it got none) with `bytes` of records stopped before records known to be
/// there before it was sent (`seen`, the watermark), without filling [`FETCH_BYTES`]:
/// the broker's read budget ran out.
pub fn cut_short(reached: i64, bytes: usize, seen: Option<i64>) -> bool {
    seen.is_some_and(|seen| reached < seen) && bytes < FETCH_BYTES as usize / 2
}

/// Records `[start, end)` of one partition as the broker has them, and where each mapping
/// stands.
#[derive(Default)]
struct Buffer {
    records: VecDeque<Arc<Fetched>>,
    start: i64,
    end: i64,
    bytes: usize,
    /// Mapping (consumer group) → its next offset.
    positions: BTreeMap<String, i64>,
}

/// A record's bytes as the broker has them (what [`BUFFER_BYTES`] counts).
fn size(r: &Record) -> usize {
    r.approximate_size()
}

impl Buffer {
    /// Drops what every mapping has read, and the oldest records beyond [`BUFFER_BYTES`].
    fn trim(&mut self) {
        let lowest = self.positions.values().copied().min().unwrap_or(self.end).min(self.end);
        while let Some(first) = self.records.front() {
            if first.offset >= lowest && self.bytes <= BUFFER_BYTES {
                break;
            }
            self.bytes -= size(&first.record);
            self.start = first.offset + 1;
            self.records.pop_front();
        }
        self.start = self.start.max(lowest);
    }

    /// Up to `max` records from `offset` on.
    fn after(&self, offset: i64, max: usize) -> Vec<Arc<Fetched>> {
        let first = self.records.partition_point(|r| r.offset < offset);
        self.records.range(first..).take(max).cloned().collect()
    }

    fn append(&mut self, records: Vec<Arc<Fetched>>) {
        for r in records {
            if r.offset >= self.end {
                self.end = r.offset + 1;
                self.bytes += size(&r.record);
                self.records.push_back(r);
            }
        }
    }
}

impl Feed {
    fn buffer(&self, partition: i32) -> Arc<tokio::sync::Mutex<Buffer>> {
        let mut partitions = self.partitions.lock().unwrap_or_else(|e| e.into_inner());
        Arc::clone(partitions.entry(partition).or_default())
    }

    /// Up to `max` records of the client's partition from `offset` on for the mapping
    /// `group`: from the buffer if it has any, else fetched (through `client`) from the
    /// buffer's end. `seen`: the partition's watermark as the watch last saw it (`None`
    /// for a recheck without one), how far a fetch must get.
    pub async fn read(
        &self,
        client: &PartitionClient,
        group: &str,
        offset: i64,
        max: usize,
        seen: Option<i64>,
    ) -> Result<Vec<Arc<Fetched>>, ReadError> {
        let buffer = self.buffer(client.partition());
        let mut b = buffer.lock().await;
        b.positions.insert(group.to_string(), offset);
        b.trim();
        if b.records.is_empty() && (offset < b.start || offset > b.end) {
            // Nobody needs what was here: the buffer starts over where this mapping is.
            (b.start, b.end) = (offset, offset);
        }
        if offset < b.start || offset > b.end {
            drop(b);
            let records = self.fetch(client, offset, seen).await?.into_iter().take(max);
            return Ok(records
                .map(|r| Fetched::new(client.topic(), client.partition(), r))
                .collect());
        }
        let buffered = b.after(offset, max);
        if !buffered.is_empty() {
            return Ok(buffered);
        }
        let end = b.end;
        match self.fetch(client, end, seen).await {
            Ok(records) => b.append(
                records
                    .into_iter()
                    .filter(|r| r.offset >= end)
                    .map(|r| Fetched::new(client.topic(), client.partition(), r))
                    .collect(),
            ),
            Err(e) => {
                // The records may be gone (broker restarted): keep nothing.
                *b = Buffer::default();
                return Err(e);
            }
        }
        Ok(b.after(offset, max))
    }

    /// The records from `offset` on, as far as one fetch gets; while it stops short of
    /// `seen` (see [`cut_short`]), the budget doubles and the rest is fetched again.
    async fn fetch(
        &self,
        client: &PartitionClient,
        offset: i64,
        seen: Option<i64>,
    ) -> Result<Vec<RecordAndOffset>, ReadError> {
        let mut records: Vec<RecordAndOffset> = Vec::new();
        let mut from = offset;
        loop {
            let wait = match seen {
                Some(_) => self.read_wait_ms.load(Ordering::Relaxed),
                None => super::watch::READ_WAIT_MS,
            };
            FETCHES.fetch_add(1, Ordering::Relaxed);
            let (fetched, high_watermark) = match client.fetch_records(from, 1..FETCH_BYTES, wait).await {
                Ok(answer) => answer,
                Err(rskafka::client::error::Error::ServerError {
                    protocol_error: rskafka::client::error::ProtocolError::OffsetOutOfRange,
                    ..
                }) => return Err(ReadError::OutOfRange),
                Err(e) => return Err(ReadError::Broker(e)),
            };
            let bytes = fetched.iter().map(|r| size(&r.record)).sum();
            records.extend(fetched.into_iter().filter(|r| r.offset >= from));
            from = records.last().map_or(from, |r| r.offset + 1);
            // A watermark below the one seen: the broker lost records (restarted), which
            // no budget reads.
            let there = seen.map(|seen| seen.min(high_watermark));
            if !cut_short(from, bytes, there) || wait >= MAX_READ_WAIT_MS {
                return Ok(records);
            }
            let longer = wait.saturating_mul(2).min(MAX_READ_WAIT_MS);
            self.read_wait_ms.fetch_max(longer, Ordering::Relaxed);
            tracing::debug!(
                partition = client.partition(),
                from,
                ?seen,
                wait_ms = longer,
                "fetch cut short by the broker's read budget"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(offsets: std::ops::Range<i64>, bytes: usize) -> Vec<Arc<Fetched>> {
        offsets
            .map(|offset| {
                let record = Record {
                    key: None,
                    value: Some(vec![b'x'; bytes]),
                    headers: BTreeMap::new(),
                    timestamp: chrono::Utc::now(),
                };
                Fetched::new("t", 0, RecordAndOffset { record, offset })
            })
            .collect()
    }

    fn offsets(records: &[Arc<Fetched>]) -> Vec<i64> {
        records.iter().map(|r| r.offset).collect()
    }

    #[test]
    fn records_stay_until_every_mapping_has_read_past_them() {
        let mut b = Buffer::default();
        b.append(records(0..10, 10));
        b.positions.insert("fast".into(), 8);
        b.positions.insert("slow".into(), 3);
        b.trim();
        assert_eq!(
            offsets(&b.after(3, 100)),
            (3..10).collect::<Vec<_>>(),
            "the slow mapping still finds its records"
        );
        assert_eq!(b.start, 3);
        b.positions.insert("slow".into(), 10);
        b.trim();
        assert_eq!(offsets(&b.after(8, 100)), vec![8, 9], "kept for the fast mapping");
        b.positions.insert("fast".into(), 10);
        b.trim();
        assert!(b.records.is_empty());
        assert_eq!((b.start, b.end, b.bytes), (10, 10, 0));
    }

    #[test]
    fn a_read_takes_at_most_max_records_from_its_offset() {
        let mut b = Buffer::default();
        b.append(records(0..10, 1));
        assert_eq!(offsets(&b.after(4, 3)), vec![4, 5, 6]);
        assert!(b.after(10, 3).is_empty(), "nothing past the end: the caller fetches");
    }

    #[test]
    fn appending_ignores_records_the_buffer_already_has() {
        let mut b = Buffer::default();
        b.append(records(0..5, 1));
        b.append(records(3..8, 1));
        assert_eq!(offsets(&b.after(0, 100)), (0..8).collect::<Vec<_>>());
        assert_eq!(b.end, 8);
    }

    #[test]
    fn a_read_short_of_the_seen_watermark_was_cut_short_unless_it_filled_the_fetch() {
        assert!(cut_short(100, 0, Some(5000)), "nothing read of records already there");
        assert!(cut_short(3000, 400_000, Some(5000)), "stopped part way");
        assert!(!cut_short(5000, 400_000, Some(5000)), "reached the watermark");
        assert!(
            !cut_short(5200, 400_000, Some(5000)),
            "records newer than the watermark"
        );
        assert!(
            !cut_short(3000, FETCH_BYTES as usize, Some(5000)),
            "the fetch's byte limit, not its budget"
        );
        assert!(!cut_short(100, 0, None), "a recheck knows no watermark");
    }

    #[test]
    fn a_stuck_mapping_does_not_hold_more_than_the_byte_cap() {
        let mut b = Buffer::default();
        b.positions.insert("stuck".into(), 0);
        b.append(records(0..40, 1024 * 1024));
        b.trim();
        assert!(b.bytes <= BUFFER_BYTES, "{} bytes kept", b.bytes);
        assert_eq!(b.start, b.records.front().map(|r| r.offset).unwrap_or(b.end));
        assert!(b.start > 0, "the stuck mapping now reads for itself");
    }
}
