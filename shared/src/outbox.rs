//! The outbox: events the broker did not take in time wait here, in order.
//!
//! A request never fails because Kafka is slow or down: its event is `RPUSH`ed to
//! one Redis list and the request succeeds. The relay (a scheduled function in
//! AWS, a timer in the local gateway) drains the list oldest first, stopping at the
//! first failure so per-key order holds. Delivery is at-least-once: a relay that
//! dies between producing and trimming re-sends, and consumers dedupe by eventId.

use std::{collections::BTreeMap, sync::LazyLock, time::Duration};

use redis::{AsyncCommands, Script};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{
    error::AppError,
    keys,
    producer::{OutgoingRecord, Producer},
    store::Store,
};

/// How long one relay run may hold the lock before another may take over.
const LOCK_TTL: Duration = Duration::from_secs(30);

/// Deletes the lock only if we still hold it.
static RELEASE_LOCK: LazyLock<Script> = LazyLock::new(|| {
    Script::new("if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0")
});

/// A parked record, as stored in the list.
#[derive(Debug, Serialize, Deserialize)]
struct Parked {
    topic: String,
    key: String,
    value: String,
    headers: BTreeMap<String, String>,
}

impl Parked {
    fn from_record(r: &OutgoingRecord) -> Self {
        Self {
            topic: r.topic.clone(),
            key: r.key.clone(),
            value: String::from_utf8_lossy(&r.value).into_owned(),
            headers: r
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), String::from_utf8_lossy(v).into_owned()))
                .collect(),
        }
    }

    fn into_record(self) -> OutgoingRecord {
        OutgoingRecord {
            topic: self.topic,
            key: self.key,
            value: self.value.into_bytes(),
            headers: self.headers.into_iter().map(|(k, v)| (k, v.into_bytes())).collect(),
        }
    }
}

/// Parks a record that could not be produced: one round trip.
pub async fn park(store: &Store, record: &OutgoingRecord) -> Result<(), AppError> {
    let json = serde_json::to_string(&Parked::from_record(record))?;
    let _: i64 = store.conn().rpush(keys::OUTBOX, json).await?;
    Ok(())
}

/// Parks many records in one round trip, in order.
pub async fn park_all(store: &Store, records: &[OutgoingRecord]) -> Result<(), AppError> {
    if records.is_empty() {
        return Ok(());
    }
    let json: Vec<String> = records
        .iter()
        .map(|r| serde_json::to_string(&Parked::from_record(r)))
        .collect::<Result<_, _>>()?;
    let _: i64 = store.conn().rpush(keys::OUTBOX, json).await?;
    Ok(())
}

/// Number of parked records.
pub async fn len(store: &Store) -> Result<usize, AppError> {
    Ok(store.conn().llen(keys::OUTBOX).await?)
}

/// What one relay run did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct RelayReport {
    /// Records produced and removed from the outbox.
    pub relayed: usize,
    /// Records still waiting (the broker failed again, or another relay holds the lock).
    pub remaining: usize,
    /// Unreadable entries moved aside (never expected; kept for inspection, never dropped).
    pub quarantined: usize,
}

/// Drains the outbox in order, `batch` records per read, until it is empty or the broker fails.
pub async fn relay(store: &Store, producer: &Producer, batch: usize) -> Result<RelayReport, AppError> {
    let mut conn = store.conn();
    let token = Uuid::new_v4().to_string();
    let locked: bool = redis::cmd("SET")
        .arg(keys::OUTBOX_LOCK)
        .arg(&token)
        .arg("NX")
        .arg("PX")
        .arg(LOCK_TTL.as_millis() as u64)
        .query_async::<Option<String>>(&mut conn)
        .await?
        .is_some();
    let mut report = RelayReport::default();
    if !locked {
        report.remaining = len(store).await?;
        return Ok(report);
    }
    let outcome = drain(store, producer, batch.max(1), &mut report).await;
    let _: i64 = RELEASE_LOCK
        .key(keys::OUTBOX_LOCK)
        .arg(&token)
        .invoke_async(&mut conn)
        .await?;
    outcome?;
    report.remaining = len(store).await?;
    Ok(report)
}

async fn drain(store: &Store, producer: &Producer, batch: usize, report: &mut RelayReport) -> Result<(), AppError> {
    let mut conn = store.conn();
    loop {
        let entries: Vec<String> = conn.lrange(keys::OUTBOX, 0, batch as isize - 1).await?;
        if entries.is_empty() {
            return Ok(());
        }
        let mut done = 0;
        for entry in &entries {
            match serde_json::from_str::<Parked>(entry) {
                Ok(parked) => {
                    if let Err(e) = producer.send(parked.into_record()).await {
                        tracing::warn!(error = %e, "outbox relay stopped: broker still unavailable");
                        break;
                    }
                    report.relayed += 1;
                }
                Err(e) => {
                    tracing::error!(error = %e, "unreadable outbox entry moved to the quarantine list");
                    let _: i64 = conn.rpush(format!("{}:quarantine", keys::OUTBOX), entry).await?;
                    report.quarantined += 1;
                }
            }
            done += 1;
        }
        if done > 0 {
            let _: () = conn.ltrim(keys::OUTBOX, done as isize, -1).await?;
        }
        if done < entries.len() {
            return Ok(());
        }
    }
}
