//! Redis side of notifications: one script per recipient applies all of a batch's
//! notifications for them (dedupe, offline check, list, unread count, PUBLISH);
//! the scripts of a batch travel in one pipeline, so a batch costs one round trip.

use std::{
    collections::{BTreeMap, HashMap},
    sync::LazyLock,
    time::Duration,
};

use devconnect::{
    clock,
    config::Config,
    keys,
    projection::{self, Pointer, Projection},
    script,
    store::Store,
    AppError,
};
use redis::Script;
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

/// KEYS: list, state hash, dedupe zset, presence hash, read-at string. ARGV: now,
/// presence timeout ms, cap, dedupe window ms, channel (empty: publish nothing, as in a
/// rebuild), dedupe max ids, then (eventId, onlyIfOffline, view, createdAt) per notification.
/// A notification counts as unread only if its event is newer than the user's last
/// "mark all read" (RFC 3339 UTC millis compare as strings): a rule that gives a rebuild
/// the same unread count as the live consumer, although reading is in no topic.
/// Checks every key's type and the unread counter before the first write, so an error
/// leaves nothing half-applied (a dedupe marker without its notification would turn
/// the retry into a silent "duplicate").
static APPLY: LazyLock<Script> = LazyLock::new(|| {
    script::atomic(
        r#"
local bad = wrong_types({KEYS[1], 'list', KEYS[2], 'hash', KEYS[3], 'zset', KEYS[4], 'hash', KEYS[5], 'string'})
  or not_integers(KEYS[2], {'unread'}) or not_integers(KEYS[4], {'lastSeen'})
if bad then return redis.error_reply(bad) end
local now = tonumber(ARGV[1])
local p = redis.call('HMGET', KEYS[4], 'online', 'lastSeen')
local online = p[1] == '1' and (now - tonumber(p[2] or '0')) <= tonumber(ARGV[2])
local read_at = redis.call('GET', KEYS[5]) or ''
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now - tonumber(ARGV[4]))
local created = {}
local duplicates = 0
for i = 7, #ARGV, 4 do
  if redis.call('ZADD', KEYS[3], 'NX', now, ARGV[i]) == 1 then
    if not (ARGV[i + 1] == '1' and online) then
      redis.call('LPUSH', KEYS[1], ARGV[i + 2])
      if ARGV[i + 3] > read_at then redis.call('HINCRBY', KEYS[2], 'unread', 1) end
      if ARGV[5] ~= '' then redis.call('PUBLISH', ARGV[5], ARGV[i + 2]) end
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

/// What applying a batch did, per recipient: `Err` if Redis could not be used at all,
/// otherwise each recipient's own result, so one recipient's broken keys fail only that
/// recipient's records.
pub type AppliedTo = BTreeMap<String, Result<Applied, AppError>>;

/// Whether applying notifications also tells the user: the live consumer publishes each
/// new one on the user's channel; a rebuild re-creates history silently.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Publish {
    /// PUBLISH every notification created.
    Live,
    /// Publish nothing.
    Silently,
}

/// Applies `planned` to the live generation: one round trip (with the generation
/// pointer). If the pointer moved since this container last looked, applies them again,
/// silently, to the new live generation (per-generation dedupe makes that harmless), and
/// reports what the first application did.
pub async fn apply_live(store: &Store, config: &Config, planned: &[Notification]) -> Result<AppliedTo, AppError> {
    let assumed = store.generations().cached(Projection::Notifications);
    let (applied, seen) = apply(store, config, assumed.live, planned, Publish::Live).await?;
    store.generations().observe(Projection::Notifications, assumed, seen);
    let mut live = seen.live;
    let mut redirects = 0;
    if live != assumed.live {
        forget(store, assumed.live, planned.iter().map(|n| n.recipient.as_str())).await;
    }
    while live != assumed.live && redirects < projection::MAX_REDIRECTS {
        let (_, seen) = apply(store, config, live, planned, Publish::Silently).await?;
        store.generations().observe(Projection::Notifications, assumed, seen);
        if seen.live == live {
            break;
        }
        live = seen.live;
        redirects += 1;
    }
    Ok(applied)
}

/// Deletes what was just written for `recipients` in `generation`, a generation no reader
/// uses any more (readers re-read with the new keys when they see the pointer moved):
/// without this, a batch in flight at the switch would leave keys behind that the
/// rebuild's cleanup has already passed. Best effort: the keys are garbage either way.
async fn forget<'a>(store: &Store, generation: u64, recipients: impl Iterator<Item = &'a str>) {
    let recipients: std::collections::BTreeSet<&str> = recipients.collect();
    let mut pipe = redis::pipe();
    for r in &recipients {
        // One command per recipient: one slot each.
        pipe.cmd("UNLINK")
            .arg(keys::notifications_in(generation, r))
            .arg(keys::notification_state_in(generation, r))
            .arg(keys::notification_dedupe_in(generation, r))
            .ignore();
    }
    if let Err(e) = pipe.query_async::<()>(&mut store.conn()).await {
        tracing::warn!(generation, error = %e, "keys written to a retired notifications generation not deleted");
    }
}

/// Applies `planned` (in order per recipient) to `generation`: the live consumer's and
/// the rebuild's one apply path. One round trip for the whole batch, which also reads
/// the generation pointer and returns it.
pub async fn apply(
    store: &Store,
    config: &Config,
    generation: u64,
    planned: &[Notification],
    publish: Publish,
) -> Result<(AppliedTo, Pointer), AppError> {
    let mut by_recipient: BTreeMap<&str, Vec<&Notification>> = BTreeMap::new();
    for n in planned {
        by_recipient.entry(n.recipient.as_str()).or_default().push(n);
    }
    let now = clock::now_ms();
    let timeout_ms = config.presence_timeout.as_millis() as i64;
    let mut pipe = redis::pipe();
    pipe.ignore_errors();
    if !by_recipient.is_empty() {
        pipe.load_script(&APPLY).ignore();
    }
    for (recipient, items) in &by_recipient {
        let channel = match publish {
            Publish::Live => keys::notification_channel(recipient),
            Publish::Silently => String::new(),
        };
        let mut call = APPLY.key(keys::notifications_in(generation, recipient));
        call.key(keys::notification_state_in(generation, recipient))
            .key(keys::notification_dedupe_in(generation, recipient))
            .key(keys::presence(recipient))
            .key(keys::notifications_read_at(recipient))
            .arg(now)
            .arg(timeout_ms)
            .arg(config.notifications_cap)
            .arg(DEDUPE_WINDOW.as_millis() as i64)
            .arg(channel)
            .arg(DEDUPE_MAX_IDS);
        for n in items {
            call.arg(&n.source_event_id)
                .arg(if n.only_if_offline { "1" } else { "0" })
                .arg(n.view_json())
                .arg(&n.created_at);
        }
        pipe.invoke_script(&call);
    }
    projection::read_pointer(&mut pipe, Projection::Notifications);
    let mut results: Vec<redis::RedisResult<redis::Value>> = pipe.query_async(&mut store.conn()).await?;
    let pointer = results
        .pop()
        .ok_or_else(|| AppError::bug("notifications pipeline returned no pointer"))??;
    let pointer = Pointer::from_reply(
        redis::from_redis_value(pointer).map_err(|e| AppError::internal("notifications pointer reply", e))?,
    )?;
    let by_event: HashMap<&str, &Notification> = planned.iter().map(|n| (n.source_event_id.as_str(), n)).collect();
    let applied = by_recipient
        .keys()
        .zip(results)
        .map(|(recipient, result)| {
            let applied = result
                .map_err(AppError::from)
                .and_then(|v| {
                    redis::from_redis_value::<(usize, Vec<String>)>(v)
                        .map_err(|e| AppError::internal("notifications apply reply", e))
                })
                .map(|(duplicates, created)| Applied {
                    duplicates,
                    created: created
                        .iter()
                        .filter_map(|id| by_event.get(id.as_str()).map(|n| (*n).clone()))
                        .collect(),
                });
            (recipient.to_string(), applied)
        })
        .collect();
    Ok((applied, pointer))
}

/// The newest `limit` notifications and the unread count of the live generation: one
/// round trip (two once per container after a rebuild switched generations).
pub async fn list(store: &Store, user_id: &str, limit: usize) -> Result<(Vec<Value>, i64), AppError> {
    let mut assumed = store.generations().cached(Projection::Notifications);
    let mut redirects = 0;
    loop {
        let g = assumed.live;
        let mut pipe = redis::pipe();
        pipe.lrange(keys::notifications_in(g, user_id), 0, limit as isize - 1)
            .hget(keys::notification_state_in(g, user_id), "unread");
        projection::read_pointer(&mut pipe, Projection::Notifications);
        type Reply = (Vec<String>, Option<i64>, (Option<String>, Option<String>));
        let (items, unread, pointer): Reply = pipe.query_async(&mut store.conn()).await?;
        let seen = Pointer::from_reply(pointer)?;
        store.generations().observe(Projection::Notifications, assumed, seen);
        if seen.live == g || redirects == projection::MAX_REDIRECTS {
            let items = items.iter().filter_map(|s| serde_json::from_str(s).ok()).collect();
            return Ok((items, unread.unwrap_or(0)));
        }
        assumed = seen;
        redirects += 1;
    }
}

/// Marks every notification read: one round trip (two once per container after a
/// switch). Zeroes the unread count of the live generation and of one being rebuilt,
/// and records when, so notifications a rebuild applies later are not counted unread.
pub async fn mark_read(store: &Store, user_id: &str) -> Result<(), AppError> {
    let read_at = clock::now_rfc3339();
    let mut assumed = store.generations().cached(Projection::Notifications);
    let mut redirects = 0;
    loop {
        let mut pipe = redis::pipe();
        pipe.set(keys::notifications_read_at(user_id), &read_at).ignore();
        for g in std::iter::once(assumed.live).chain(assumed.building) {
            pipe.hset(keys::notification_state_in(g, user_id), "unread", 0).ignore();
        }
        projection::read_pointer(&mut pipe, Projection::Notifications);
        let (pointer,): ((Option<String>, Option<String>),) = pipe.query_async(&mut store.conn()).await?;
        let seen = Pointer::from_reply(pointer)?;
        store.generations().observe(Projection::Notifications, assumed, seen);
        if seen == assumed || redirects == projection::MAX_REDIRECTS {
            return Ok(());
        }
        if seen.live != assumed.live && Some(assumed.live) != seen.building {
            forget(store, assumed.live, std::iter::once(user_id)).await;
        }
        assumed = seen;
        redirects += 1;
    }
}
