//! Redis side of notifications: one script per recipient applies all of a batch's
//! notifications for them (dedupe, offline check, list, unread count, PUBLISH);
//! the scripts of a batch travel in one pipeline, so a batch costs one round trip.

use std::{
    collections::{BTreeMap, HashMap},
    sync::LazyLock,
    time::Duration,
};

use devconnect::{config::Config, keys, script, store::Store, user, AppError};
use redis::{AsyncCommands, Script};
use serde_json::Value;

use crate::domain::Notification;

/// How long an applied event id is remembered (longer than MSK's retention of a retried batch).
pub const DEDUPE_WINDOW: Duration = Duration::from_secs(7 * 24 * 3600);

/// Most event ids remembered per recipient, whatever their age: without a count bound a
/// flood of events to one user (a week of them) grows the set without limit. A redelivery
/// replays at most one batch (BatchSize 500 in template.yaml) from its failed offset, so
/// the newest 10,000 ids (20 batches) cover every retry the event source can make; ids
/// are UUIDv7 and scores the apply time, so the evicted ones are always the oldest.
pub const DEDUPE_MAX_IDS: usize = 10_000;

/// KEYS: list, state hash, dedupe zset, presence hash. ARGV: now, presence timeout ms,
/// cap, dedupe window ms, channel, dedupe max ids, then (eventId, onlyIfOffline, view)
/// per notification.
/// Checks every key's type and the unread counter before the first write, so an error
/// leaves nothing half-applied (a dedupe marker without its notification would turn
/// the retry into a silent "duplicate").
static APPLY: LazyLock<Script> = LazyLock::new(|| {
    script::atomic(
        r#"
local bad = wrong_types({KEYS[1], 'list', KEYS[2], 'hash', KEYS[3], 'zset', KEYS[4], 'hash'})
  or not_integers(KEYS[2], {'unread'}) or not_integers(KEYS[4], {'lastSeen'})
if bad then return redis.error_reply(bad) end
local now = tonumber(ARGV[1])
local p = redis.call('HMGET', KEYS[4], 'online', 'lastSeen')
local online = p[1] == '1' and (now - tonumber(p[2] or '0')) <= tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now - tonumber(ARGV[4]))
local created = {}
local duplicates = 0
for i = 7, #ARGV, 3 do
  if redis.call('ZADD', KEYS[3], 'NX', now, ARGV[i]) == 1 then
    if not (ARGV[i + 1] == '1' and online) then
      redis.call('LPUSH', KEYS[1], ARGV[i + 2])
      redis.call('HINCRBY', KEYS[2], 'unread', 1)
      redis.call('PUBLISH', ARGV[5], ARGV[i + 2])
      table.insert(created, ARGV[i])
    end
  else
    duplicates = duplicates + 1
  end
end
redis.call('ZREMRANGEBYRANK', KEYS[3], 0, -(tonumber(ARGV[6]) + 1))
redis.call('LTRIM', KEYS[1], 0, tonumber(ARGV[3]) - 1)
local len = redis.call('LLEN', KEYS[1])
if tonumber(redis.call('HGET', KEYS[2], 'unread') or '0') > len then redis.call('HSET', KEYS[2], 'unread', len) end
return {duplicates, created}
"#,
    )
});

/// What applying one recipient's notifications did.
#[derive(Debug, Default)]
pub struct Applied {
    /// Notifications created now.
    pub created: Vec<Notification>,
    /// Notifications already created by an earlier delivery.
    pub duplicates: usize,
}

/// Applies `planned` (in order per recipient): one round trip for the whole batch.
/// `Err` if Redis could not be used at all; otherwise each recipient's own result,
/// so one recipient's broken keys fail only that recipient's records.
pub async fn apply(
    store: &Store,
    config: &Config,
    planned: &[Notification],
) -> Result<BTreeMap<String, Result<Applied, AppError>>, AppError> {
    if planned.is_empty() {
        return Ok(BTreeMap::new());
    }
    let mut by_recipient: BTreeMap<&str, Vec<&Notification>> = BTreeMap::new();
    for n in planned {
        by_recipient.entry(n.recipient.as_str()).or_default().push(n);
    }
    let now = user::now_ms();
    let timeout_ms = config.presence_timeout.as_millis() as i64;
    let mut pipe = redis::pipe();
    pipe.ignore_errors();
    pipe.load_script(&APPLY).ignore();
    for (recipient, items) in &by_recipient {
        let mut call = APPLY.key(keys::notifications(recipient));
        call.key(keys::notification_state(recipient))
            .key(keys::notification_dedupe(recipient))
            .key(keys::presence(recipient))
            .arg(now)
            .arg(timeout_ms)
            .arg(config.notifications_cap)
            .arg(DEDUPE_WINDOW.as_millis() as i64)
            .arg(keys::notification_channel(recipient))
            .arg(DEDUPE_MAX_IDS);
        for n in items {
            call.arg(&n.source_event_id)
                .arg(if n.only_if_offline { "1" } else { "0" })
                .arg(n.view().to_string());
        }
        pipe.invoke_script(&call);
    }
    let results: Vec<redis::RedisResult<(usize, Vec<String>)>> = pipe.query_async(&mut store.conn()).await?;
    let by_event: HashMap<&str, &Notification> = planned.iter().map(|n| (n.source_event_id.as_str(), n)).collect();
    Ok(by_recipient
        .keys()
        .zip(results)
        .map(|(recipient, result)| {
            let applied = result.map_err(AppError::from).map(|(duplicates, created)| Applied {
                duplicates,
                created: created
                    .iter()
                    .filter_map(|id| by_event.get(id.as_str()).map(|n| (*n).clone()))
                    .collect(),
            });
            (recipient.to_string(), applied)
        })
        .collect())
}

/// The newest `limit` notifications and the unread count: one round trip.
pub async fn list(store: &Store, user_id: &str, limit: usize) -> Result<(Vec<Value>, i64), AppError> {
    let (items, unread): (Vec<String>, Option<i64>) = redis::pipe()
        .lrange(keys::notifications(user_id), 0, limit as isize - 1)
        .hget(keys::notification_state(user_id), "unread")
        .query_async(&mut store.conn())
        .await?;
    let items = items.iter().filter_map(|s| serde_json::from_str(s).ok()).collect();
    Ok((items, unread.unwrap_or(0)))
}

/// Marks every notification read: one round trip.
pub async fn mark_read(store: &Store, user_id: &str) -> Result<(), AppError> {
    let _: () = store
        .conn()
        .hset(keys::notification_state(user_id), "unread", 0)
        .await?;
    Ok(())
}
