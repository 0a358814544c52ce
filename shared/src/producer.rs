//! The Kafka producer: pure Rust ([`rskafka`]), so functions cross-compile to
//! arm64 without a C toolchain.
//!
//! The client connects lazily and is cached, so a container whose broker is down
//! at init still serves requests (their events go to the outbox). Partitioning
//! follows the Java client's default (murmur2 of the key), so one user's events
//! land on one partition whatever language produced them.
//!
//! The cached client is replaced before its SASL sessions expire (MSK IAM: the broker
//! closes a session when its 15-minute token expires, and rskafka cannot
//! re-authenticate): see [`crate::kafka_connection::SessionLease`]. A produce in flight
//! keeps the client it started with alive until it completes, so a refresh never
//! drops one.

use std::{
    collections::BTreeMap,
    collections::HashMap,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use chrono::Utc;
use rskafka::{
    client::{
        partition::{Compression, PartitionClient, UnknownTopicHandling},
        Client,
    },
    record::Record,
    BackoffConfig,
};
use tokio::sync::Mutex;

use crate::kafka_connection::{KafkaConnection, SessionLease};

/// The largest record (key + value + header names and values, in bytes) the producer sends.
///
/// Amazon MSK's default `message.max.bytes` is 1,048,588 bytes, and the broker applies it
/// to a whole record batch. 1 MiB (1,048,576) is the round number just under it: a record
/// above it can never be produced to a cluster with the default setting, so it is refused
/// here at once instead of costing a round trip (and the local broker, tansu, does not
/// enforce any limit, so without this check tests would accept what MSK refuses). The
/// batch header and record framing (about 70 bytes) are not counted, so a record within a
/// few dozen bytes of the limit may still be refused by MSK; that refusal
/// (`MESSAGE_TOO_LARGE`) is classified permanent too, so both paths end the same way.
pub const MAX_RECORD_BYTES: usize = 1024 * 1024;

/// Most record bytes (as [`OutgoingRecord::encoded_size`] counts them, plus
/// [`RECORD_OVERHEAD_BYTES`] each) one produce request carries to one partition. MSK's
/// `message.max.bytes` limits a whole record batch, not a record, so a partition's share
/// of a large send (a 10,000-record consumer batch makes megabytes of events) goes as
/// several batches, one after the other, in order. A record alone above this is sent
/// alone (it is at most [`MAX_RECORD_BYTES`]).
pub const MAX_BATCH_BYTES: usize = 1_000_000;

/// What framing one record adds inside a record batch (varint lengths, offsets, header
/// counts), rounded up: part of what [`MAX_BATCH_BYTES`] counts.
const RECORD_OVERHEAD_BYTES: usize = 32;

/// Why a record was not produced; the caller parks it in the outbox.
///
/// [`ProduceError::is_permanent`] is the one place that decides whether a retry can help:
/// the outbox relay quarantines a record whose error is permanent and keeps (in order)
/// one whose error is transient.
#[derive(Debug, thiserror::Error)]
pub enum ProduceError {
    /// The broker did not answer within the produce timeout (transient).
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// The broker is unreachable or answered with an error a retry may fix (transient).
    #[error("kafka")]
    Kafka(#[source] rskafka::client::error::Error),
    /// The broker's answer lacks what we asked for (transient: the next answer may not).
    #[error("kafka: {0}")]
    BadAnswer(&'static str),
    /// The record is larger than [`MAX_RECORD_BYTES`] (permanent).
    #[error("record of {bytes} bytes exceeds the {limit}-byte limit")]
    TooLarge {
        /// Encoded size of the record (see [`OutgoingRecord::encoded_size`]).
        bytes: usize,
        /// The limit it exceeds.
        limit: usize,
    },
    /// The broker's metadata has no such topic (permanent: topics are created by
    /// infrastructure, never by producing).
    #[error("topic {0} does not exist")]
    UnknownTopic(String),
    /// The broker refused this record for good, e.g. `MESSAGE_TOO_LARGE` (permanent).
    #[error("refused by the broker")]
    Rejected(#[source] rskafka::client::error::Error),
}

impl ProduceError {
    /// `true` when sending the same record again can never succeed.
    pub fn is_permanent(&self) -> bool {
        matches!(self, Self::TooLarge { .. } | Self::UnknownTopic(_) | Self::Rejected(_))
    }
}

impl From<rskafka::client::error::Error> for ProduceError {
    fn from(e: rskafka::client::error::Error) -> Self {
        use rskafka::client::error::{Error, ProtocolError};
        match &e {
            // What the broker says about the record itself: a retry sends the same bytes.
            // (UNKNOWN_TOPIC_OR_PARTITION stays transient: Kafka marks it retriable, as it
            // is during leader changes; a topic missing from metadata is `UnknownTopic`.)
            Error::ServerError {
                protocol_error:
                    ProtocolError::MessageTooLarge
                    | ProtocolError::RecordListTooLarge
                    | ProtocolError::InvalidTopicException
                    | ProtocolError::InvalidRecord,
                ..
            } => Self::Rejected(e),
            _ => Self::Kafka(e),
        }
    }
}

/// One message to produce.
#[derive(Clone, Debug)]
pub struct OutgoingRecord {
    /// Topic name.
    pub topic: String,
    /// Record key: picks the partition.
    pub key: String,
    /// Record value (the JSON envelope).
    pub value: Vec<u8>,
    /// Record headers (e.g. the event type, for consumers that route without parsing).
    pub headers: BTreeMap<String, Vec<u8>>,
}

impl OutgoingRecord {
    /// Bytes of key, value and header names and values: what [`MAX_RECORD_BYTES`] limits.
    pub fn encoded_size(&self) -> usize {
        let headers: usize = self.headers.iter().map(|(k, v)| k.len() + v.len()).sum();
        self.key.len() + self.value.len() + headers
    }

    /// Refuses a record the broker could never take, before any network round trip.
    fn check_size(&self) -> Result<(), ProduceError> {
        let bytes = self.encoded_size();
        if bytes > MAX_RECORD_BYTES {
            return Err(ProduceError::TooLarge {
                bytes,
                limit: MAX_RECORD_BYTES,
            });
        }
        Ok(())
    }
}

/// Partition clients of one topic, in partition order.
type Partitions = Arc<Vec<Arc<PartitionClient>>>;

/// One generation of the Kafka client: the client, its partition clients (bound to its
/// connections) and when its sessions must be renewed.
struct Session {
    client: Arc<Client>,
    partitions: Mutex<HashMap<String, Partitions>>,
    lease: SessionLease,
}

/// Bumped after every produce this process completes: the local stack's emulated MSK
/// triggers look for new records as soon as it moves instead of asking the broker often
/// (which is what an idle local stack spends its CPU on). In Lambda nobody subscribes and
/// a bump costs one uncontended lock.
static PRODUCED: std::sync::LazyLock<tokio::sync::watch::Sender<u64>> =
    std::sync::LazyLock::new(|| tokio::sync::watch::channel(0).0);

/// Changes after each produce this process completes (see [`announce_produced`]).
pub fn subscribe_produced() -> tokio::sync::watch::Receiver<u64> {
    PRODUCED.subscribe()
}

/// Tells subscribers that records were produced; [`Producer`] calls it itself, code that
/// produces through another client calls it after the broker acknowledged.
pub fn announce_produced() {
    PRODUCED.send_modify(|n| *n = n.wrapping_add(1));
}

/// A cheap-to-share Kafka producer.
pub struct Producer {
    connection: KafkaConnection,
    timeout: Duration,
    session: Mutex<Option<Arc<Session>>>,
    sessions_opened: AtomicU64,
}

impl Producer {
    /// A producer for `connection`'s brokers; nothing connects until the first send.
    pub fn new(connection: KafkaConnection, timeout: Duration) -> Self {
        Self {
            connection,
            timeout,
            session: Mutex::new(None),
            sessions_opened: AtomicU64::new(0),
        }
    }

    /// How many clients this producer has built: 1 after the first send, one more per
    /// refresh before a session expiry.
    pub fn sessions_opened(&self) -> u64 {
        self.sessions_opened.load(Ordering::Relaxed)
    }

    /// The brokers and security settings (the local MSK poller connects the same way).
    pub fn connection(&self) -> &KafkaConnection {
        &self.connection
    }

    /// Produces one record, waiting at most the configured timeout. A record above
    /// [`MAX_RECORD_BYTES`] fails at once with [`ProduceError::TooLarge`].
    pub async fn send(&self, record: OutgoingRecord) -> Result<i64, ProduceError> {
        record.check_size()?;
        let timeout = self.timeout;
        // Boxed: rskafka's futures nest deep enough to overflow rustc's layout recursion limit in callers.
        tokio::time::timeout(timeout, Box::pin(self.send_unbounded(record)))
            .await
            .map_err(|_| ProduceError::Timeout(timeout))?
    }

    async fn send_unbounded(&self, record: OutgoingRecord) -> Result<i64, ProduceError> {
        // Held until the produce completes: a refresh meanwhile cannot close its connections.
        let session = self.session().await?;
        let partitions = self.partitions_of(&session, &record.topic).await?;
        let index = partition_for(record.key.as_bytes(), partitions.len());
        let offsets = partitions[index]
            .produce(
                vec![Record {
                    key: Some(record.key.into_bytes()),
                    value: Some(record.value),
                    headers: record.headers,
                    timestamp: Utc::now(),
                }],
                Compression::NoCompression,
            )
            .await?;
        announce_produced();
        offsets
            .first()
            .copied()
            .ok_or_else(|| ProduceError::BadAnswer("the broker returned no offset"))
    }

    /// Produces many records: one produce request per partition, all partitions at once,
    /// order kept within each partition. All or nothing from the caller's point of view:
    /// on error some records may have been written, so callers re-send (consumers dedupe).
    /// Sizes are checked first, so one oversized record fails the batch before anything is sent.
    pub async fn send_batch(&self, records: Vec<OutgoingRecord>) -> Result<(), ProduceError> {
        records.iter().try_for_each(OutgoingRecord::check_size)?;
        let timeout = self.timeout;
        tokio::time::timeout(timeout, Box::pin(self.send_batch_unbounded(records)))
            .await
            .map_err(|_| ProduceError::Timeout(timeout))?
    }

    async fn send_batch_unbounded(&self, records: Vec<OutgoingRecord>) -> Result<(), ProduceError> {
        let session = self.session().await?;
        // The batch's topics (one or two) with their partition clients, looked up once
        // each: records are grouped by (topic's place here, partition), not by a copy of
        // the topic's name per record.
        let mut topics: Vec<(String, Partitions)> = Vec::new();
        let mut groups: BTreeMap<(usize, usize), Vec<Record>> = BTreeMap::new();
        let timestamp = Utc::now();
        for record in records {
            let topic = match topics.iter().position(|(name, _)| *name == record.topic) {
                Some(topic) => topic,
                None => {
                    let partitions = self.partitions_of(&session, &record.topic).await?;
                    topics.push((record.topic, partitions));
                    topics.len() - 1
                }
            };
            let index = partition_for(record.key.as_bytes(), topics[topic].1.len());
            groups.entry((topic, index)).or_default().push(Record {
                key: Some(record.key.into_bytes()),
                value: Some(record.value),
                headers: record.headers,
                timestamp,
            });
        }
        // Partitions at once; one partition's batches one after the other, so they keep their order.
        let sends = groups.into_iter().map(|((topic, index), records)| {
            let client = Arc::clone(&topics[topic].1[index]);
            async move {
                for batch in batches(records) {
                    client.produce(batch, Compression::NoCompression).await?;
                }
                Ok::<_, rskafka::client::error::Error>(())
            }
        });
        futures::future::try_join_all(sends).await?;
        announce_produced();
        Ok(())
    }

    /// The connected client, connecting on first use (or replacing one whose session
    /// is due for renewal).
    pub async fn client(&self) -> Result<Arc<Client>, ProduceError> {
        Ok(Arc::clone(&self.session().await?.client))
    }

    /// The current session; builds one on first use, and a new one once the lease says
    /// the old one's sessions near expiry. If the rebuild fails while the old sessions
    /// are still valid, the old one is used and the rebuild is tried again on the next call.
    async fn session(&self) -> Result<Arc<Session>, ProduceError> {
        let mut slot = self.session.lock().await;
        let now_ms = Utc::now().timestamp_millis();
        let current = match slot.as_ref() {
            Some(s) if !s.lease.refresh_due(now_ms) => return Ok(Arc::clone(s)),
            other => other.cloned(),
        };
        match self.open_session(now_ms).await {
            Ok(fresh) => {
                if current.is_some() {
                    tracing::info!(
                        sessions_opened = self.sessions_opened(),
                        "kafka client replaced before its SASL sessions expire"
                    );
                }
                *slot = Some(Arc::clone(&fresh));
                Ok(fresh)
            }
            Err(e) => match current {
                Some(old) if !old.lease.expired(Utc::now().timestamp_millis()) => {
                    tracing::warn!(error = %e, "kafka client refresh failed; the current sessions are still valid");
                    Ok(old)
                }
                _ => Err(e),
            },
        }
    }

    async fn open_session(&self, now_ms: i64) -> Result<Arc<Session>, ProduceError> {
        let (builder, lease) = self.connection.session(now_ms);
        let builder = builder.backoff_config(BackoffConfig {
            init_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_millis(500),
            base: 2.0,
            deadline: Some(self.timeout),
        });
        let client = tokio::time::timeout(self.timeout, Box::pin(builder.build()))
            .await
            .map_err(|_| ProduceError::Timeout(self.timeout))?
            .map_err(ProduceError::from)?;
        self.sessions_opened.fetch_add(1, Ordering::Relaxed);
        Ok(Arc::new(Session {
            client: Arc::new(client),
            partitions: Mutex::new(HashMap::new()),
            lease,
        }))
    }

    async fn partitions_of(&self, session: &Session, topic: &str) -> Result<Partitions, ProduceError> {
        if let Some(found) = session.partitions.lock().await.get(topic) {
            return Ok(Arc::clone(found));
        }
        let client = &session.client;
        let count = client
            .list_topics()
            .await?
            .into_iter()
            .find(|t| t.name == topic)
            .map(|t| t.partitions.len())
            .filter(|n| *n > 0)
            .ok_or_else(|| ProduceError::UnknownTopic(topic.to_string()))?;
        let mut clients = Vec::with_capacity(count);
        for partition in 0..count {
            let partition =
                i32::try_from(partition).map_err(|_| ProduceError::BadAnswer("more partitions than an i32 counts"))?;
            clients.push(Arc::new(
                client
                    .partition_client(topic, partition, UnknownTopicHandling::Error)
                    .await?,
            ));
        }
        let clients = Arc::new(clients);
        session
            .partitions
            .lock()
            .await
            .insert(topic.to_string(), Arc::clone(&clients));
        Ok(clients)
    }
}

/// `records` cut, in order, into batches of at most [`MAX_BATCH_BYTES`] each.
fn batches(records: Vec<Record>) -> Vec<Vec<Record>> {
    let mut out: Vec<Vec<Record>> = Vec::new();
    let mut bytes = 0;
    for record in records {
        let size = RECORD_OVERHEAD_BYTES
            + record.key.as_ref().map_or(0, Vec::len)
            + record.value.as_ref().map_or(0, Vec::len)
            + record.headers.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>();
        match out.last_mut() {
            Some(batch) if bytes + size <= MAX_BATCH_BYTES => {
                batch.push(record);
                bytes += size;
            }
            _ => {
                out.push(vec![record]);
                bytes = size;
            }
        }
    }
    out
}

/// The partition for `key`, as the Java client's default partitioner picks it.
pub fn partition_for(key: &[u8], partitions: usize) -> usize {
    ((murmur2(key) & 0x7fff_ffff) as usize) % partitions.max(1)
}

/// Kafka's murmur2 (seed 0x9747b28c), as in `org.apache.kafka.common.utils.Utils.murmur2`.
fn murmur2(data: &[u8]) -> u32 {
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let mut h: u32 = 0x9747_b28c ^ (data.len() as u32);
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M) ^ k;
    }
    let rest = chunks.remainder();
    if rest.len() >= 3 {
        h ^= u32::from(rest[2]) << 16;
    }
    if rest.len() >= 2 {
        h ^= u32::from(rest[1]) << 8;
    }
    if !rest.is_empty() {
        h ^= u32::from(rest[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h
}

#[cfg(test)]
mod tests {
    use rskafka::client::error::ProtocolError;

    use super::*;

    #[test]
    fn murmur2_matches_the_java_client() {
        // Values from Kafka's UtilsTest.testMurmur2 (as signed ints there).
        assert_eq!(murmur2(b"21") as i32, -973932308);
        assert_eq!(murmur2(b"foobar") as i32, -790332482);
        assert_eq!(murmur2(b"a-little-bit-long-string") as i32, -985981536);
        assert_eq!(murmur2(b"a-little-bit-longer-string") as i32, -1486304829);
        assert_eq!(
            murmur2(b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8") as i32,
            -58897971
        );
    }

    fn record_of(value_bytes: usize) -> OutgoingRecord {
        OutgoingRecord {
            topic: "t".into(),
            key: "k".into(),
            value: vec![b'x'; value_bytes],
            headers: BTreeMap::from([("h".to_string(), b"v".to_vec())]),
        }
    }

    #[test]
    fn a_record_counts_key_value_and_headers_against_the_limit() {
        let at_limit = record_of(MAX_RECORD_BYTES - 3);
        assert_eq!(at_limit.encoded_size(), MAX_RECORD_BYTES);
        assert!(at_limit.check_size().is_ok());
        let over = record_of(MAX_RECORD_BYTES - 2);
        assert!(matches!(over.check_size(), Err(e @ ProduceError::TooLarge { .. }) if e.is_permanent()));
    }

    #[test]
    fn only_errors_a_retry_cannot_fix_are_permanent() {
        assert!(ProduceError::UnknownTopic("t".into()).is_permanent());
        assert!(ProduceError::from(server_error(ProtocolError::MessageTooLarge)).is_permanent());
        assert!(!ProduceError::Timeout(Duration::from_secs(1)).is_permanent());
        assert!(!ProduceError::from(server_error(ProtocolError::NotLeaderOrFollower)).is_permanent());
        assert!(!ProduceError::from(rskafka::client::error::Error::Timeout).is_permanent());
        assert!(!ProduceError::BadAnswer("the broker returned no offset").is_permanent());
    }

    #[test]
    fn a_refusal_keeps_the_brokers_error_as_its_source() {
        let e = ProduceError::from(server_error(ProtocolError::MessageTooLarge));
        let shown = crate::error::chain(&e).to_string();
        assert!(shown.starts_with("refused by the broker: "), "{shown}");
        assert!(shown.contains("MessageTooLarge"), "{shown}");
    }

    fn server_error(protocol_error: ProtocolError) -> rskafka::client::error::Error {
        rskafka::client::error::Error::ServerError {
            protocol_error,
            error_message: None,
            request: rskafka::client::error::RequestContext::Topic("t".into()),
            response: None,
            is_virtual: false,
        }
    }

    #[test]
    fn a_partition_s_records_go_in_order_in_batches_msk_accepts() {
        let record = |i: usize, bytes: usize| Record {
            key: Some(i.to_string().into_bytes()),
            value: Some(vec![b'x'; bytes]),
            headers: BTreeMap::new(),
            timestamp: Utc::now(),
        };
        let records: Vec<Record> = (0..2500)
            .map(|i| record(i, 500))
            .chain([record(2500, MAX_RECORD_BYTES)])
            .collect();
        let cut = batches(records);
        assert_eq!(cut.len(), 3, "two batches of small records, the big one alone");
        let keys: Vec<Vec<u8>> = cut.iter().flatten().map(|r| r.key.clone().unwrap()).collect();
        let expected: Vec<Vec<u8>> = (0..=2500).map(|i: usize| i.to_string().into_bytes()).collect();
        assert_eq!(keys, expected, "order kept");
        for batch in &cut[..2] {
            let bytes: usize = batch
                .iter()
                .map(|r| r.key.as_ref().unwrap().len() + r.value.as_ref().unwrap().len() + RECORD_OVERHEAD_BYTES)
                .sum();
            assert!(bytes <= MAX_BATCH_BYTES, "{bytes}");
        }
    }

    #[test]
    fn one_key_always_maps_to_one_partition() {
        let p = partition_for(b"user-1", 3);
        assert!(p < 3);
        assert_eq!(p, partition_for(b"user-1", 3));
    }
}
