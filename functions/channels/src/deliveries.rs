//! Redis side of the router and the scheduler: deliveries and their idempotency
//! markers, written all or nothing.
//!
//! Everything here lives in the outbox's `{events}` slot ([`keys::OUTBOX`]), so one
//! script writes a delivery's dedupe marker ([`keys::CHANNEL_DEDUPE`], one per
//! notification and channel) together with its effect: the outbox entry of its
//! EMAIL_REQUESTED/SMS_REQUESTED, a held SMS ([`keys::CHANNEL_QUIET`]), a digest
//! line ([`keys::channel_digest`]) or a conversation's message alert cooldown
//! ([`keys::channel_message_cooldown`]). A redelivered NOTIFICATION_CREATED finds its
//! markers and writes nothing; a script that fails writes nothing either (types are
//! checked first), so a marker never exists without its effect.
//!
//! A delivery is durable once it is in the outbox; the router then produces it at
//! once and removes its entry, so users do not wait for the relay's next tick. If the
//! broker is slow the entry simply stays for the relay. (A relay that read the entry
//! before the removal may produce it a second time: the senders dedupe on notification
//! and channel, like every consumer dedupes by id.)

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::LazyLock,
    time::Duration,
};

use chrono::{DateTime, Utc};
use devconnect::{
    config::Topics,
    consumer::Failure,
    delivery::{Channel, Delivery},
    events::Envelope,
    keys, outbox,
    payloads::{EmailRequested, Event, SmsRequested},
    producer::{OutgoingRecord, Producer},
    script,
    store::Store,
    AppError,
};
use redis::Script;

use crate::{
    router::{Action, DigestItem},
    unsubscribe::Signer,
    FUNCTION_NAME,
};

/// How long a (notification, channel) marker is remembered: longer than MSK retries a batch.
pub const DEDUPE_WINDOW: Duration = Duration::from_secs(7 * 24 * 3600);

/// Most markers kept, whatever their age. A redelivery replays at most one batch
/// (BatchSize 500, at most three markers each: email, SMS and a message's cooldown) from
/// its failed offset per partition; 100,000 markers cover over sixty such batches arriving
/// at once. Members are trimmed oldest first.
pub const DEDUPE_MAX: usize = 100_000;

/// Lines one digest keeps; later items of that day are still marked (never re-added).
pub const MAX_DIGEST_ITEMS: usize = 100;

/// Due held SMS and due digests handled per scheduler run (the rest wait for the next minute).
pub const RELEASE_BATCH: usize = 500;

/// Most recipients one script call applies: starting a script costs Redis more than a
/// recipient's few writes, and one call per recipient made the router's calls a third of
/// the scripts Redis ran per message sent. A pipeline of such calls is still one round
/// trip. (Every key here is in the `{events}` slot, so a call may hold many recipients on
/// a cluster too.)
pub const RECIPIENTS_PER_CALL: usize = 100;

/// KEYS: outbox, dedupe, quiet, digests, then the digest lists and cooldown keys the
/// actions name. ARGV: now ms, dedupe window ms, dedupe max, digest max, then per
/// recipient: how many actions, then per action (op, marker, payload, score, key index,
/// digest member); a cooldown's score is its length in ms.
/// Returns per recipient the markers written now (the others were already there), or why
/// their keys cannot be written (a string starting with WRONGTYPE; nothing of theirs is
/// written). The shared keys' types are checked first (a wrong one fails the call, and
/// nothing is written); the markers' scores are read in one ZMSCORE, which is also the
/// dedupe set's type check and says which are new: one ZADD writes them all at the end,
/// and the set is trimmed only when it grew.
static APPLY: LazyLock<Script> = LazyLock::new(|| {
    script::atomic(
        r#"
local bad = wrong_types({KEYS[1], 'list', KEYS[3], 'zset', KEYS[4], 'zset'})
if bad then return redis.error_reply(bad) end
local now = tonumber(ARGV[1])
local horizon = now - tonumber(ARGV[2])
local markers = {}
local a = 5
while a <= #ARGV do
  local n = tonumber(ARGV[a])
  for j = 0, n - 1 do markers[#markers + 1] = ARGV[a + 2 + 6 * j] end
  a = a + 1 + 6 * n
end
local known = seen_since(KEYS[2], markers, horizon)
local out, marks, seen = {}, {}, {}
local m = 0
a = 5
while a <= #ARGV do
  local n = tonumber(ARGV[a])
  local first = a + 1
  a = first + 6 * n
  local lists = {}
  for i = first, a - 1, 6 do
    if ARGV[i] == 'digest' then
      lists[#lists + 1] = KEYS[tonumber(ARGV[i + 4])]
      lists[#lists + 1] = 'list'
    end
  end
  local broken = wrong_types(lists)
  if broken then
    out[#out + 1] = broken
    m = m + n
  else
    -- Writes only from here on (for this recipient).
    local fresh = {}
    for i = first, a - 1, 6 do
      m = m + 1
      local op, marker, payload, score = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
      if not known[m] and not seen[marker] then
        seen[marker] = true
        -- The clock as it came, text: Redis formats a Lua number with printf("%.17g").
        marks[#marks + 1] = ARGV[1]
        marks[#marks + 1] = marker
        if op == 'send' then
          redis.call('RPUSH', KEYS[1], payload)
        elseif op == 'hold' then
          redis.call('ZADD', KEYS[3], score, payload)
        elseif op == 'cool' then
          -- A plain SET replaces a key of any type: it cannot fail.
          redis.call('SET', KEYS[tonumber(ARGV[i + 4])], ARGV[1], 'PX', score)
        else
          local list = KEYS[tonumber(ARGV[i + 4])]
          if redis.call('LLEN', list) < tonumber(ARGV[4]) then redis.call('RPUSH', list, payload) end
          redis.call('ZADD', KEYS[4], 'NX', score, ARGV[i + 5])
        end
        fresh[#fresh + 1] = marker
      end
    end
    out[#out + 1] = fresh
  end
end
remember(KEYS[2], marks, horizon, tonumber(ARGV[3]))
return out
"#,
    )
});

/// KEYS: outbox, quiet, digests, dedupe, then one digest list per digest.
/// ARGV: now ms, number of held SMS, the held SMS (outbox entries), then per digest
/// (member, items read, outbox entry or '', marker). A held SMS moves to the outbox if
/// it is still held (another run may have taken it); a digest is sent only if it still
/// has exactly the items that were read (an item added since waits for the next run).
/// Returns {SMS released, digests sent, the entries moved}.
static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    script::atomic(
        r#"
local spec = {KEYS[1], 'list', KEYS[2], 'zset', KEYS[3], 'zset', KEYS[4], 'zset'}
for i = 5, #KEYS do
  table.insert(spec, KEYS[i])
  table.insert(spec, 'list')
end
local bad = wrong_types(spec)
if bad then return redis.error_reply(bad) end
local now = tonumber(ARGV[1])
local held = tonumber(ARGV[2])
local sms, digests, moved = 0, 0, {}
for i = 3, 2 + held do
  if redis.call('ZREM', KEYS[2], ARGV[i]) == 1 then
    redis.call('RPUSH', KEYS[1], ARGV[i])
    table.insert(moved, ARGV[i])
    sms = sms + 1
  end
end
local k = 5
for i = 3 + held, #ARGV, 4 do
  local member, expected, entry, marker = ARGV[i], tonumber(ARGV[i + 1]), ARGV[i + 2], ARGV[i + 3]
  if redis.call('ZSCORE', KEYS[3], member) and redis.call('LLEN', KEYS[k]) == expected then
    redis.call('DEL', KEYS[k])
    redis.call('ZREM', KEYS[3], member)
    if entry ~= '' and redis.call('ZADD', KEYS[4], 'NX', now, marker) == 1 then
      redis.call('RPUSH', KEYS[1], entry)
      table.insert(moved, entry)
      digests = digests + 1
    end
  end
  k = k + 1
end
return {sms, digests, moved}
"#,
    )
});

/// A delivery as an event, with its outbox entry.
#[derive(Clone, Debug)]
pub struct Outgoing {
    /// The outbox entry (exactly what [`outbox::park`] would store).
    pub entry: String,
    /// The record to produce.
    pub record: OutgoingRecord,
}

/// EMAIL_REQUESTED or SMS_REQUESTED for `delivery`, keyed by its user (one user's
/// deliveries stay ordered), correlated with the notification.
pub fn outgoing(topics: &Topics, delivery: &Delivery) -> Result<Outgoing, AppError> {
    let event: Event = match delivery.channel {
        Channel::Email => EmailRequested(delivery.clone()).into(),
        Channel::Sms => SmsRequested(delivery.clone()).into(),
    };
    let envelope = Envelope::of(FUNCTION_NAME, &delivery.user_id, &delivery.notification_id, event)?;
    let event_type = envelope.event_type;
    let record = OutgoingRecord {
        topic: event_type.topic().name(topics).to_string(),
        key: envelope.key.clone(),
        value: serde_json::to_vec(&envelope)?,
        headers: BTreeMap::from([
            ("eventType".to_string(), event_type.as_str().into_bytes()),
            ("eventId".to_string(), envelope.event_id.to_string().into_bytes()),
        ]),
    };
    Ok(Outgoing {
        entry: outbox::entry(&record)?,
        record,
    })
}

/// What was applied for one recipient.
#[derive(Debug, Default)]
pub struct Applied {
    /// Markers written now: their actions took effect.
    pub fresh: BTreeSet<String>,
    /// Deliveries put in the outbox now, to produce at once.
    pub sent: Vec<Outgoing>,
}

/// Applies every recipient's actions: script calls of up to [`RECIPIENTS_PER_CALL`]
/// recipients, all in one pipeline (one round trip). `Err` if Redis could not be used at
/// all; otherwise each recipient's own result, so one recipient's broken keys fail only
/// their records.
pub async fn apply(
    store: &Store,
    topics: &Topics,
    by_recipient: &BTreeMap<String, Vec<Action>>,
    now: DateTime<Utc>,
) -> Result<BTreeMap<String, Result<Applied, Failure>>, AppError> {
    let recipients: Vec<(&String, &Vec<Action>)> = by_recipient.iter().collect();
    let calls: Vec<&[(&String, &Vec<Action>)]> = recipients.chunks(RECIPIENTS_PER_CALL).collect();
    if calls.is_empty() {
        return Ok(BTreeMap::new());
    }
    let mut pipe = redis::pipe();
    pipe.ignore_errors();
    let mut sends: Vec<HashMap<String, Outgoing>> = Vec::with_capacity(recipients.len());
    for call in &calls {
        pipe.add_command(apply_call(topics, call, now, &mut sends)?);
    }
    let replies = script::query_loaded(store, &pipe, &[&APPLY]).await?;
    let mut results = BTreeMap::new();
    let mut sends = sends.into_iter();
    for (call, reply) in calls.iter().zip(replies) {
        let parts: Vec<Result<Vec<redis::Value>, Failure>> =
            match script::recipient_parts(reply, call.len(), "channels apply") {
                Ok(parts) => parts.into_iter().map(|p| p.map_err(|e| Failure::from(&e))).collect(),
                Err(e) => vec![Err(Failure::from(&e)); call.len()],
            };
        for ((recipient, _), part) in call.iter().zip(parts) {
            let mut send = sends.next().unwrap_or_default();
            let applied = part
                .and_then(|markers| fresh_of(markers).map_err(|e| Failure::from(&e)))
                .map(|fresh| {
                    let sent = fresh.iter().filter_map(|m| send.remove(m)).collect();
                    Applied { fresh, sent }
                });
            results.insert((*recipient).clone(), applied);
        }
    }
    Ok(results)
}

/// One EVALSHA of [`APPLY`] for `call`'s recipients; their deliveries to produce at once
/// go to `sends`, one map per recipient, in order.
fn apply_call(
    topics: &Topics,
    call: &[(&String, &Vec<Action>)],
    now: DateTime<Utc>,
    sends: &mut Vec<HashMap<String, Outgoing>>,
) -> Result<redis::Cmd, AppError> {
    // KEYS come first: the digest lists and cooldown keys the call writes, each once;
    // `key_index` holds, for each digest and cooldown action in order, its key's position
    // among them.
    let mut own_keys: Vec<String> = Vec::new();
    let mut key_index: Vec<usize> = Vec::new();
    for (recipient, actions) in call {
        for action in actions.iter() {
            let key = match action {
                Action::Digest { day, .. } => keys::channel_digest(recipient, day),
                Action::Cooldown { actor_id, .. } => keys::channel_message_cooldown(recipient, actor_id),
                Action::Send(_) | Action::Hold { .. } => continue,
            };
            let index = match own_keys.iter().position(|k| *k == key) {
                Some(index) => index,
                None => {
                    own_keys.push(key);
                    own_keys.len() - 1
                }
            };
            key_index.push(index);
        }
    }
    let mut key_index = key_index.into_iter();
    let mut next_key = || {
        key_index
            .next()
            .map(|index| 5 + index)
            .ok_or_else(|| AppError::bug("channels apply: an action without its key"))
    };
    let mut cmd = script::evalsha(&APPLY, 4 + own_keys.len());
    cmd.arg(keys::OUTBOX)
        .arg(keys::CHANNEL_DEDUPE)
        .arg(keys::CHANNEL_QUIET)
        .arg(keys::CHANNEL_DIGESTS)
        .arg(&own_keys)
        .arg(now.timestamp_millis())
        .arg(DEDUPE_WINDOW.as_millis() as i64)
        .arg(DEDUPE_MAX)
        .arg(MAX_DIGEST_ITEMS);
    for (recipient, actions) in call {
        cmd.arg(actions.len());
        let mut send = HashMap::new();
        for action in actions.iter() {
            let marker = action.marker();
            match action {
                Action::Send(delivery) => {
                    let out = outgoing(topics, delivery)?;
                    cmd.arg("send").arg(&marker).arg(&out.entry).arg(0).arg(0).arg("");
                    send.insert(marker, out);
                }
                Action::Hold { due_ms, delivery } => {
                    let out = outgoing(topics, delivery)?;
                    cmd.arg("hold").arg(&marker).arg(&out.entry).arg(due_ms).arg(0).arg("");
                }
                Action::Digest { day, due_ms, item } => {
                    cmd.arg("digest")
                        .arg(&marker)
                        .arg(serde_json::to_string(item)?)
                        .arg(due_ms)
                        .arg(next_key()?)
                        .arg(format!("{recipient}:{day}"));
                }
                Action::Cooldown { ms, .. } => {
                    cmd.arg("cool").arg(&marker).arg("").arg(ms).arg(next_key()?).arg("");
                }
            }
        }
        sends.push(send);
    }
    Ok(cmd)
}

/// One recipient's part of an [`APPLY`] reply (see [`script::recipient_parts`]): the
/// markers written now.
fn fresh_of(markers: Vec<redis::Value>) -> Result<BTreeSet<String>, AppError> {
    markers
        .into_iter()
        .map(redis::from_redis_value::<String>)
        .collect::<Result<_, _>>()
        .map_err(|e| AppError::internal("channels apply reply", e))
}

/// Produces deliveries already in the outbox (`sent` in the order they were pushed) and
/// removes their entries: one produce request per partition, one Redis round trip. If the
/// broker does not take them they stay in the outbox for the relay (nothing is lost, so
/// this never fails).
pub async fn produce_now(store: &Store, producer: &Producer, sent: Vec<Outgoing>) -> bool {
    if sent.is_empty() {
        return true;
    }
    let (entries, records): (Vec<String>, Vec<OutgoingRecord>) = sent.into_iter().map(|o| (o.entry, o.record)).unzip();
    if let Err(e) = producer.send_batch(records).await {
        tracing::warn!(error = %e, count = entries.len(), "deliveries left in the outbox for the relay");
        return false;
    }
    // One `LREM outbox -1 entry` each, the last equal entry: entries are unique, and the
    // router pushed them moments ago, so they sit at the tail (from the head, each removal
    // scanned the whole outbox: 42 ms of Redis for 100 entries with 10,000 waiting, as after
    // a broker outage). Newest first, so each is found at the tail instead of behind the rest
    // of its batch (~n²/2 comparisons for a batch of n). Plain commands in one pipeline, not a
    // script: each removal stands alone (an entry left behind is produced again by the relay,
    // and the senders dedupe), and a script cost Redis twice the CPU per entry
    // (docs/bench/other-vm/router_remove_produced_redis_cpu.txt).
    let mut removals = redis::pipe();
    for entry in entries.iter().rev() {
        removals.lrem(keys::OUTBOX, -1, entry).ignore();
    }
    if let Err(e) = removals.query_async::<()>(&mut store.conn()).await {
        // The relay will produce them again; the senders dedupe.
        tracing::warn!(error = %e, "produced deliveries not removed from the outbox");
    }
    true
}

/// What one scheduler run released.
#[derive(Debug, Default)]
pub struct Released {
    /// Held SMS whose quiet hours ended, moved to the outbox.
    pub sms_released: usize,
    /// Digest emails of days that ended, moved to the outbox.
    pub digests_sent: usize,
    /// What was moved to the outbox, to produce at once.
    pub moved: Vec<Outgoing>,
}

/// Moves what is due at `now` (held SMS, digests of days that ended) to the outbox, in
/// one script that checks each is still due: two or three round trips, whatever the number.
pub async fn release(
    store: &Store,
    topics: &Topics,
    signer: &Signer,
    base_url: &str,
    now: DateTime<Utc>,
) -> Result<Released, AppError> {
    let now_ms = now.timestamp_millis();
    let (held, due): (Vec<String>, Vec<String>) = redis::pipe()
        .cmd("ZRANGE")
        .arg(keys::CHANNEL_QUIET)
        .arg("-inf")
        .arg(now_ms)
        .arg("BYSCORE")
        .arg("LIMIT")
        .arg(0)
        .arg(RELEASE_BATCH)
        .cmd("ZRANGE")
        .arg(keys::CHANNEL_DIGESTS)
        .arg("-inf")
        .arg(now_ms)
        .arg("BYSCORE")
        .arg("LIMIT")
        .arg(0)
        .arg(RELEASE_BATCH)
        .query_async(&mut store.conn())
        .await?;
    if held.is_empty() && due.is_empty() {
        return Ok(Released::default());
    }
    // Members are `<userId>:<YYYY-MM-DD>`; user ids contain no ':'.
    let digests: Vec<(&str, &str, String)> = due
        .iter()
        .filter_map(|m| m.split_once(':'))
        .map(|(user, day)| (user, day, keys::channel_digest(user, day)))
        .collect();
    let items: Vec<Vec<String>> = if digests.is_empty() {
        Vec::new()
    } else {
        let mut pipe = redis::pipe();
        for (_, _, key) in &digests {
            pipe.lrange(key, 0, -1);
        }
        pipe.query_async(&mut store.conn()).await?
    };
    let mut call = RELEASE.key(keys::OUTBOX);
    call.key(keys::CHANNEL_QUIET)
        .key(keys::CHANNEL_DIGESTS)
        .key(keys::CHANNEL_DEDUPE)
        .arg(now_ms)
        .arg(held.len());
    for entry in &held {
        call.arg(entry);
    }
    for ((user, day, key), raw) in digests.iter().zip(&items) {
        let parsed: Vec<DigestItem> = raw.iter().filter_map(|r| serde_json::from_str(r).ok()).collect();
        let entry = match crate::router::digest(user, day, &parsed, base_url, signer) {
            Some(delivery) => outgoing(topics, &delivery)?.entry,
            None => String::new(),
        };
        call.key(key)
            .arg(format!("{user}:{day}"))
            .arg(raw.len())
            .arg(entry)
            .arg(format!("digest:{user}:{day}:email"));
    }
    let (sms_released, digests_sent, moved): (usize, usize, Vec<String>) = call.invoke_async(&mut store.conn()).await?;
    let moved = moved
        .into_iter()
        .filter_map(|entry| match outbox::record_of(&entry) {
            Ok(record) => Some(Outgoing { entry, record }),
            // Left in the outbox: the relay quarantines what it cannot read.
            Err(e) => {
                tracing::error!(error = %e, "released entry unreadable; left to the relay");
                None
            }
        })
        .collect();
    Ok(Released {
        sms_released,
        digests_sent,
        moved,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One script writes a marker and its effect: every key must share the outbox's slot.
    #[test]
    fn every_router_key_shares_the_outbox_slot() {
        let user = "0190c3a4-0000-7000-8000-000000000001";
        for key in [
            keys::OUTBOX.to_string(),
            keys::CHANNEL_DEDUPE.to_string(),
            keys::CHANNEL_QUIET.to_string(),
            keys::CHANNEL_DIGESTS.to_string(),
            keys::channel_digest(user, "2026-01-15"),
            keys::channel_message_cooldown(user, user),
        ] {
            assert!(key.contains("{events}"), "{key}");
            assert_eq!(key.matches('{').count(), 1, "{key}: one hash tag");
        }
    }
}
