//! Redis side of notifications: one script call applies all of a batch's notifications
//! for up to [`RECIPIENTS_PER_CALL`] recipients (dedupe, offline check, list, unread
//! count, PUBLISH); the calls of what is applied at once (a batch, or a part of a large
//! one: see [`crate::consume`]) travel in one pipeline, one round trip.

use std::{collections::BTreeMap, sync::LazyLock, time::Duration};

use devconnect::{
    clock,
    config::Config,
    consumer::Failure,
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

/// Most recipients one script call applies: one call per batch would make Redis run a
/// 10,000-record batch as one uninterruptible script (tens of ms in which no other client
/// is served); one call per recipient pays the cost of starting a script (~19 µs of Redis
/// CPU) a thousand times. A pipeline of calls of this many recipients is still one round
/// trip. (On a cluster a call holds one recipient: their keys share one hash slot.)
pub const RECIPIENTS_PER_CALL: usize = 100;

/// KEYS: per recipient, five: list, state hash, dedupe zset, presence hash, read-at
/// string. ARGV: now, presence timeout ms, cap, dedupe window ms, dedupe max ids, then per
/// recipient: its channel (empty: publish nothing, as in a rebuild), how many
/// notifications, and (eventId, onlyIfOffline, view, createdAt) per notification.
/// Returns per recipient either {fates}, one letter per notification in order (c:
/// created, d: duplicate, u: unneeded, the user being online), or, if its keys cannot
/// be written, the reason (a string starting with WRONGTYPE).
/// An unneeded notification writes nothing, not even its dedupe marker (a marker stands
/// for an effect; a redelivery decides again), and a recipient who is online and only
/// has unneeded ones is answered from the presence read alone: the common case of a
/// message between two users in the app costs one read.
/// A notification counts as unread only if its event is newer than the user's last
/// "mark all read" (RFC 3339 UTC millis compare as strings): a rule that gives a rebuild
/// the same unread count as the live consumer, although reading is in no topic.
/// Reads everything it needs of a recipient (presence, known ids, then, if anything is
/// new, read-at and unread counter) before its first write; each read is also its key's
/// type check (`read`), and the first write, the list's LPUSH, is the list's own (refused,
/// it wrote nothing), so an error leaves nothing half-applied for them (a dedupe marker
/// without its notification would turn the retry into a silent "duplicate"); a recipient
/// whose keys fail is reported, and the call goes on with the others.
/// A recipient's writes are one command each (one ZADD, one LPUSH, one HSET), not one
/// per notification; the dedupe set and the list are trimmed only when they grew, and
/// the unread count is clamped to the list's length (trimming drops unread ones too),
/// from the values read and the push's reply: each redis.call costs the script about a
/// microsecond beyond the command's own work, so none is made twice.
static APPLY: LazyLock<Script> = LazyLock::new(|| {
    script::atomic(
        r#"
local now, timeout, cap = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local horizon, max_ids = now - tonumber(ARGV[4]), tonumber(ARGV[5])
-- Numbers go to redis.call as text made once: Redis formats a Lua number with
-- printf("%.17g"), about half a microsecond each.
local now_text, last = ARGV[1], string.format('%d', cap - 1)
local function apply(list, state, seen, presence, read_key, channel, first, n)
  local p = read('HMGET', presence, 'online', 'lastSeen')
  local last_seen = integer(presence, 'lastSeen', p[2])
  local online = p[1] == '1' and now - last_seen <= timeout
  if online then
    -- Nothing to write when every one is a message to a user who is online: no
    -- notification, so no marker either (a redelivery decides again).
    local needed = false
    for j = 0, n - 1 do
      if ARGV[first + 4 * j + 1] ~= '1' then needed = true break end
    end
    if not needed then return string.rep('u', n) end
  end
  local ids = {}
  for j = 0, n - 1 do ids[#ids + 1] = ARGV[first + 4 * j] end
  local known = seen_since(seen, ids, horizon)
  local marks, views, fates, fresh = {}, {}, {}, {}
  local created_at = {}
  for j = 1, n do
    local i = first + 4 * (j - 1)
    local id = ARGV[i]
    if ARGV[i + 1] == '1' and online then
      fates[j] = 'u'
    elseif known[j] or fresh[id] then
      fates[j] = 'd'
    else
      fresh[id] = true
      marks[#marks + 1] = now_text
      marks[#marks + 1] = id
      views[#views + 1] = ARGV[i + 2]
      created_at[#created_at + 1] = ARGV[i + 3]
      fates[j] = 'c'
    end
  end
  if #views == 0 then return table.concat(fates) end
  local read_at = read('GET', read_key) or ''
  local unread = integer(state, 'unread', read('HGET', state, 'unread'))
  local new_unread = 0
  for _, at in ipairs(created_at) do
    if at > read_at then new_unread = new_unread + 1 end
  end
  -- Writes only from here on. The first, the list's push, is also the list's type check:
  -- refused, it wrote nothing.
  local len = read('LPUSH', list, unpack(views, 1, math.min(1000, #views)))
  for c = 1001, #views, 1000 do len = redis.call('LPUSH', list, unpack(views, c, math.min(c + 999, #views))) end
  remember(seen, marks, horizon, max_ids)
  if len > cap then
    redis.call('LTRIM', list, '0', last)
    len = cap
  end
  local total = math.min(unread + new_unread, len)
  if total ~= unread then redis.call('HSET', state, 'unread', string.format('%d', total)) end
  if channel ~= '' then
    for _, view in ipairs(views) do redis.call('PUBLISH', channel, view) end
  end
  return table.concat(fates)
end
local out = {}
local a = 6
for k = 1, #KEYS, 5 do
  local channel, n = ARGV[a], tonumber(ARGV[a + 1])
  local first = a + 2
  a = first + 4 * n
  -- An error stays with its recipient (before their first write, by the reads above);
  -- the others go on.
  local ok, fates = pcall(apply, KEYS[k], KEYS[k + 1], KEYS[k + 2], KEYS[k + 3], KEYS[k + 4], channel, first, n)
  if ok then
    out[#out + 1] = {fates}
  else
    out[#out + 1] = type(fates) == 'table' and (fates.err or 'script error') or tostring(fates)
  end
end
return out
"#,
    )
});

/// What became of one planned notification.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fate {
    /// Created now.
    Created,
    /// Already created by an earlier delivery (or earlier in the same batch).
    Duplicate,
    /// Not needed: a message to a user who is online.
    Unneeded,
    /// Not applied: its recipient's keys could not be written (see [`Applied::failed`]).
    Failed,
}

/// What applying a batch did: `Err` (from [`apply`]) if Redis could not be used at all;
/// otherwise each notification's fate, and why each failed recipient failed, so one
/// recipient's broken keys fail only that recipient's records.
#[derive(Debug, Default)]
pub struct Applied {
    /// Per planned notification, in order.
    pub fates: Vec<Fate>,
    /// The recipients whose notifications were not applied, and why.
    pub failed: BTreeMap<String, Failure>,
}

/// One recipient's part of the reply (see [`script::recipient_parts`]): their
/// notifications' fates, one letter each, in one string.
fn fates_of(mut part: Vec<redis::Value>, count: usize) -> Result<Vec<Fate>, AppError> {
    let letters = match part.len() {
        1 => part.pop(),
        _ => None,
    };
    let letters: String = letters
        .map(redis::from_redis_value)
        .transpose()
        .map_err(|e| AppError::internal("notifications apply reply", e))?
        .unwrap_or_default();
    let fates: Vec<Fate> = letters
        .bytes()
        .map(|b| match b {
            b'c' => Fate::Created,
            b'd' => Fate::Duplicate,
            _ => Fate::Unneeded,
        })
        .collect();
    if fates.len() != count {
        return Err(AppError::bug(format!(
            "notifications apply reply has {} fates for {count} notifications",
            fates.len()
        )));
    }
    Ok(fates)
}

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
pub async fn apply_live(store: &Store, config: &Config, planned: &[Notification]) -> Result<Applied, AppError> {
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

/// One recipient's notifications: indexes into the planned batch, in order.
type Recipient<'a> = (&'a str, Vec<usize>);

/// Applies `planned` (in order per recipient) to `generation`: the live consumer's and
/// the rebuild's one apply path. One round trip for all of `planned` (script calls of
/// [`RECIPIENTS_PER_CALL`] recipients, pipelined), which also reads the generation
/// pointer and returns it.
pub async fn apply(
    store: &Store,
    config: &Config,
    generation: u64,
    planned: &[Notification],
    publish: Publish,
) -> Result<(Applied, Pointer), AppError> {
    let mut by_recipient: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, n) in planned.iter().enumerate() {
        by_recipient.entry(n.recipient.as_str()).or_default().push(i);
    }
    let recipients: Vec<Recipient> = by_recipient.into_iter().collect();
    let per_call = if store.is_cluster() { 1 } else { RECIPIENTS_PER_CALL };
    let calls: Vec<&[Recipient]> = recipients.chunks(per_call).collect();
    let mut applied = Applied {
        fates: vec![Fate::Failed; planned.len()],
        failed: BTreeMap::new(),
    };
    let pointer = run(store, config, generation, planned, publish, &calls, &mut applied).await?;
    Ok((applied, pointer))
}

/// Makes `calls` in one pipeline (with the generation pointer), recording each
/// notification's fate in `applied`. A call that fails as a whole (before its script ran:
/// e.g. Redis out of memory) fails every recipient in it.
async fn run(
    store: &Store,
    config: &Config,
    generation: u64,
    planned: &[Notification],
    publish: Publish,
    calls: &[&[Recipient<'_>]],
    applied: &mut Applied,
) -> Result<Pointer, AppError> {
    let now = clock::now_ms();
    let timeout_ms = config.presence_timeout.as_millis() as i64;
    let mut pipe = redis::pipe();
    pipe.ignore_errors();
    for call in calls {
        let mut invocation = script::evalsha(&APPLY, call.len() * 5);
        for (recipient, _) in *call {
            invocation
                .arg(keys::notifications_in(generation, recipient))
                .arg(keys::notification_state_in(generation, recipient))
                .arg(keys::notification_dedupe_in(generation, recipient))
                .arg(keys::presence(recipient))
                .arg(keys::notifications_read_at(recipient));
        }
        invocation
            .arg(now)
            .arg(timeout_ms)
            .arg(config.notifications_cap)
            .arg(DEDUPE_WINDOW.as_millis() as i64)
            .arg(DEDUPE_MAX_IDS);
        for (recipient, items) in *call {
            match publish {
                Publish::Live => invocation.arg(keys::notification_channel(recipient)),
                Publish::Silently => invocation.arg(""),
            };
            invocation.arg(items.len());
            for &i in items {
                let n = &planned[i];
                invocation
                    .arg(&n.source_event_id)
                    .arg(if n.only_if_offline { "1" } else { "0" })
                    .arg(n.view_json.as_str())
                    .arg(&n.created_at);
            }
        }
        pipe.add_command(invocation);
    }
    projection::read_pointer(&mut pipe, Projection::Notifications);
    let mut results = script::query_loaded(store, &pipe, &[&APPLY]).await?;
    let pointer = results
        .pop()
        .ok_or_else(|| AppError::bug("notifications pipeline returned no pointer"))?;
    let pointer = Pointer::from_reply(
        redis::from_redis_value(script::reply::<redis::Value>(pointer)?)
            .map_err(|e| AppError::internal("notifications pointer reply", e))?,
    )?;
    for (call, result) in calls.iter().zip(results) {
        let parts = match script::recipient_parts(result, call.len(), "notifications apply") {
            Ok(parts) => parts,
            Err(e) => {
                let failure = Failure::from(&e);
                for (recipient, _) in *call {
                    applied.failed.insert(recipient.to_string(), failure.clone());
                }
                continue;
            }
        };
        for ((recipient, items), part) in call.iter().zip(parts) {
            match part.and_then(|values| fates_of(values, items.len())) {
                Ok(fates) => {
                    for (&i, fate) in items.iter().zip(fates) {
                        applied.fates[i] = fate;
                    }
                }
                Err(e) => {
                    applied.failed.insert(recipient.to_string(), Failure::from(&e));
                }
            }
        }
    }
    Ok(pointer)
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
