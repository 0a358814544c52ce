//! The outbox: events the broker did not take in time wait here, in order.
//!
//! A request never fails because Kafka is slow or down: its event is `RPUSH`ed to
//! one Redis list and the request succeeds. The relay (a scheduled function in
//! AWS, a timer in the local gateway) drains the list oldest first:
//!
//! - a record the broker takes is removed;
//! - a record that can never be produced (too large, unknown topic, refused by the
//!   broker for good: [`ProduceError::is_permanent`](crate::producer::ProduceError::is_permanent)),
//!   or an entry that is not even readable, moves to the quarantine list
//!   ([`keys::OUTBOX_QUARANTINE`]) as a [`Quarantined`] record (original entry, reason,
//!   time) and the relay goes on with the next entry, so one poison record never
//!   wedges the events parked after it;
//! - a transient failure (timeout, broker unreachable) stops the run and keeps that
//!   record and everything after it, so per-key order holds.
//!
//! Removal is exact: one script per batch pops the head entries one by one while each
//! still equals the entry the relay handled, and only while this relay still holds the
//! lock; quarantining is the same script's `RPUSH` (one slot: `{events}`). A lost lock
//! or a head that changed removes nothing more.
//!
//! One run holds the lock for at most [`LOCK_TTL`] and stops draining after
//! [`RUN_DEADLINE`], both chosen against the function's 60 s timeout so a run killed
//! by Lambda cannot leave two relays draining at once. Delivery is at-least-once: a
//! relay that dies between producing and removing re-sends, and consumers dedupe by eventId.

use std::{collections::BTreeMap, sync::LazyLock, time::Duration};

use chrono::{DateTime, Utc};
use redis::{AsyncCommands, Script};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use uuid::Uuid;

use crate::{
    error::{chain, AppError},
    keys,
    producer::{OutgoingRecord, Producer},
    script,
    store::Store,
};

/// How long one relay run may hold the lock before another may take over.
///
/// Clearly longer than the relay function's Lambda timeout (60 s in template.yaml): a
/// run Lambda kills mid-drain never releases its lock, and the lock must not expire
/// while that run could still be producing, or two relays would interleave and break
/// per-key order. The cost of a killed run is one skipped schedule tick at most.
pub const LOCK_TTL: Duration = Duration::from_secs(120);

/// After this long a relay run stops taking new records and reports the remainder.
///
/// Well inside the 60 s function timeout: the record in flight may still take one
/// produce timeout (1.5 s by default) and the removal and lock release one Redis round
/// trip each, so the run ends cleanly instead of being killed with its lock held.
pub const RUN_DEADLINE: Duration = Duration::from_secs(45);

/// Deletes the lock only if we still hold it.
static RELEASE_LOCK: LazyLock<Script> = LazyLock::new(|| {
    Script::new("if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0")
});

/// Removes the entries one relay batch handled, exactly.
///
/// KEYS: outbox, quarantine, lock. ARGV[1]: the lock token, then pairs (entry as read,
/// quarantine record or '' when it was sent). Pops the head while it equals the next
/// expected entry and the lock is ours; returns {lock held 0/1, sent removed, quarantined}.
static REMOVE_HANDLED: LazyLock<Script> = LazyLock::new(|| {
    script::atomic(
        r#"
local bad = wrong_types({KEYS[1], 'list', KEYS[2], 'list', KEYS[3], 'string'})
if bad then return redis.error_reply(bad) end
if redis.call('GET', KEYS[3]) ~= ARGV[1] then return {0, 0, 0} end
local sent, quarantined = 0, 0
for i = 2, #ARGV - 1, 2 do
  if redis.call('LINDEX', KEYS[1], 0) ~= ARGV[i] then break end
  redis.call('LPOP', KEYS[1])
  if ARGV[i + 1] == '' then
    sent = sent + 1
  else
    redis.call('RPUSH', KEYS[2], ARGV[i + 1])
    quarantined = quarantined + 1
  end
end
return {1, sent, quarantined}
"#,
    )
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

/// An outbox entry moved aside because it can never be produced; kept for inspection
/// (and a manual re-park once fixed), never dropped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Quarantined {
    /// The outbox entry exactly as it was stored.
    pub entry: String,
    /// Why it can never be produced (the produce or parse error).
    pub reason: String,
    /// When the relay moved it.
    pub quarantined_at: DateTime<Utc>,
}

/// What the relay did with one outbox entry, as handed to [`remove_handled`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handled {
    /// Produced: the entry (as read) is removed.
    Sent(String),
    /// Never producible: the entry (as read) moves to the quarantine list with this reason.
    Quarantined {
        /// The entry as read.
        entry: String,
        /// Why it can never be produced.
        reason: String,
    },
}

impl Handled {
    fn entry(&self) -> &str {
        match self {
            Self::Sent(entry) | Self::Quarantined { entry, .. } => entry,
        }
    }

    /// The script's second argument of the pair: '' for sent, the quarantine JSON otherwise.
    fn quarantine_json(&self, at: DateTime<Utc>) -> Result<String, AppError> {
        match self {
            Self::Sent(_) => Ok(String::new()),
            Self::Quarantined { entry, reason } => Ok(serde_json::to_string(&Quarantined {
                entry: entry.clone(),
                reason: reason.clone(),
                quarantined_at: at,
            })?),
        }
    }
}

/// What [`remove_handled`] removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Removed {
    /// Whether the lock token still held the lock (nothing is removed otherwise).
    pub lock_held: bool,
    /// Sent entries removed.
    pub sent: usize,
    /// Entries moved to the quarantine list.
    pub quarantined: usize,
}

impl Removed {
    /// All `count` handled entries were removed (the head was what the relay expected).
    fn all_of(&self, count: usize) -> bool {
        self.lock_held && self.sent + self.quarantined == count
    }
}

/// The outbox entry of `record`, as [`park`] stores it: for scripts that push an event to
/// [`keys::OUTBOX`] together with its idempotency marker (one script, one slot), so the
/// event is written exactly when the marker is.
pub fn entry(record: &OutgoingRecord) -> Result<String, AppError> {
    Ok(serde_json::to_string(&Parked::from_record(record))?)
}

/// The record an outbox entry stands for (the inverse of [`entry`]), for code that moved
/// entries into the outbox itself and produces them at once.
pub fn record_of(entry: &str) -> Result<OutgoingRecord, AppError> {
    Ok(serde_json::from_str::<Parked>(entry)?.into_record())
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

/// Sizes of the outbox and its quarantine list, for GET /health.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Backlog {
    /// Records waiting for the broker.
    pub waiting: usize,
    /// Records moved aside because they can never be produced.
    pub quarantined: usize,
}

/// Both list lengths in one round trip (one slot, so one pipeline on a cluster too).
pub async fn backlog(store: &Store) -> Result<Backlog, AppError> {
    let (waiting, quarantined): (usize, usize) = redis::pipe()
        .llen(keys::OUTBOX)
        .llen(keys::OUTBOX_QUARANTINE)
        .query_async(&mut store.conn())
        .await?;
    Ok(Backlog { waiting, quarantined })
}

/// The first `limit` quarantined records, oldest first (for operators and tests).
pub async fn quarantined(store: &Store, limit: usize) -> Result<Vec<Quarantined>, AppError> {
    if limit == 0 {
        return Ok(Vec::new());
    }
    let raw: Vec<String> = store
        .conn()
        .lrange(keys::OUTBOX_QUARANTINE, 0, limit as isize - 1)
        .await?;
    Ok(raw.iter().map(|r| serde_json::from_str(r)).collect::<Result<_, _>>()?)
}

/// What one relay run did (also the scheduled function's result).
#[derive(Debug, Default, PartialEq, Eq, Serialize)]
pub struct RelayReport {
    /// Records produced and removed from the outbox.
    pub relayed: usize,
    /// Records still waiting (the broker failed again, the run reached [`RUN_DEADLINE`],
    /// or another relay holds the lock).
    pub remaining: usize,
    /// Entries moved to the quarantine list this run: records that can never be produced
    /// and unreadable entries.
    pub quarantined: usize,
}

/// Drains the outbox in order, `batch` records per read, until it is empty, the broker
/// fails transiently, or [`RUN_DEADLINE`] has passed.
pub async fn relay(store: &Store, producer: &Producer, batch: usize) -> Result<RelayReport, AppError> {
    relay_within(store, producer, batch, RUN_DEADLINE).await
}

/// [`relay`] with its own run deadline (tests use a short one).
pub async fn relay_within(
    store: &Store,
    producer: &Producer,
    batch: usize,
    budget: Duration,
) -> Result<RelayReport, AppError> {
    let deadline = Instant::now() + budget;
    let token = Uuid::new_v4().to_string();
    let mut report = RelayReport::default();
    if !acquire_lock(store, &token).await? {
        report.remaining = len(store).await?;
        return Ok(report);
    }
    let outcome = drain(store, producer, batch.max(1), &token, deadline, &mut report).await;
    let _: i64 = RELEASE_LOCK
        .key(keys::OUTBOX_LOCK)
        .arg(&token)
        .invoke_async(&mut store.conn())
        .await?;
    outcome?;
    report.remaining = len(store).await?;
    Ok(report)
}

/// Takes the relay lock for [`LOCK_TTL`]; `false` when another relay holds it.
async fn acquire_lock(store: &Store, token: &str) -> Result<bool, AppError> {
    let reply: Option<String> = redis::cmd("SET")
        .arg(keys::OUTBOX_LOCK)
        .arg(token)
        .arg("NX")
        .arg("PX")
        .arg(LOCK_TTL.as_millis() as u64)
        .query_async(&mut store.conn())
        .await?;
    Ok(reply.is_some())
}

/// Reads, handles and removes one batch after another until a batch ends early.
async fn drain(
    store: &Store,
    producer: &Producer,
    batch: usize,
    token: &str,
    deadline: Instant,
    report: &mut RelayReport,
) -> Result<(), AppError> {
    loop {
        if Instant::now() >= deadline {
            tracing::warn!(deadline = ?RUN_DEADLINE, "outbox relay stopped at its run deadline");
            return Ok(());
        }
        let entries: Vec<String> = store.conn().lrange(keys::OUTBOX, 0, batch as isize - 1).await?;
        if entries.is_empty() {
            return Ok(());
        }
        let handled = handle_batch(producer, &entries, deadline).await;
        let removed = remove_handled(store, token, &handled).await?;
        report.relayed += removed.sent;
        report.quarantined += removed.quarantined;
        if !removed.lock_held {
            tracing::warn!("outbox relay lost its lock; another relay may be draining");
            return Ok(());
        }
        if !removed.all_of(handled.len()) {
            tracing::warn!("outbox head changed under the relay; stopping this run");
            return Ok(());
        }
        if handled.len() < entries.len() {
            return Ok(());
        }
    }
}

/// Handles entries in order until one fails transiently or the deadline passes.
async fn handle_batch(producer: &Producer, entries: &[String], deadline: Instant) -> Vec<Handled> {
    let mut handled = Vec::with_capacity(entries.len());
    for entry in entries {
        if Instant::now() >= deadline {
            break;
        }
        match handle(producer, entry).await {
            Some(h) => handled.push(h),
            None => break,
        }
    }
    handled
}

/// Produces one entry; `None` when the broker failed transiently (the run stops there).
async fn handle(producer: &Producer, entry: &str) -> Option<Handled> {
    let quarantine = |reason: String| {
        Some(Handled::Quarantined {
            entry: entry.to_string(),
            reason,
        })
    };
    let parked = match serde_json::from_str::<Parked>(entry) {
        Ok(parked) => parked,
        Err(e) => {
            tracing::error!(error = %e, "unreadable outbox entry moved to the quarantine list");
            return quarantine(format!("unreadable outbox entry: {e}"));
        }
    };
    let topic = parked.topic.clone();
    match producer.send(parked.into_record()).await {
        Ok(_) => Some(Handled::Sent(entry.to_string())),
        Err(e) if e.is_permanent() => {
            tracing::error!(error = %chain(&e), topic, "outbox record can never be produced; quarantined");
            quarantine(chain(&e).to_string())
        }
        Err(e) => {
            tracing::warn!(error = %chain(&e), "outbox relay stopped: broker still unavailable");
            None
        }
    }
}

/// Removes exactly the head entries `handled` describes, in one script: each is popped
/// only while the head still equals it and `token` still holds the relay lock, and a
/// quarantined one is pushed to the quarantine list in the same script. Key types are
/// checked before the first write.
pub async fn remove_handled(store: &Store, token: &str, handled: &[Handled]) -> Result<Removed, AppError> {
    if handled.is_empty() {
        return Ok(Removed {
            lock_held: true,
            ..Removed::default()
        });
    }
    let now = Utc::now();
    let mut invocation = REMOVE_HANDLED.prepare_invoke();
    invocation
        .key(keys::OUTBOX)
        .key(keys::OUTBOX_QUARANTINE)
        .key(keys::OUTBOX_LOCK)
        .arg(token);
    for h in handled {
        invocation.arg(h.entry()).arg(h.quarantine_json(now)?);
    }
    let (held, sent, quarantined): (i64, usize, usize) = invocation.invoke_async(&mut store.conn()).await?;
    Ok(Removed {
        lock_held: held == 1,
        sent,
        quarantined,
    })
}
