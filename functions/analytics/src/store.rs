//! Redis side of analytics.

use std::{collections::BTreeMap, collections::HashMap, sync::LazyLock, time::Duration};

use devconnect::{consumer::Incoming, keys, script, store::Store, AppError};
use redis::Script;

/// How long a day's event ids are remembered for dedupe (longer than MSK retention).
pub const DEDUPE_WINDOW: Duration = Duration::from_secs(8 * 24 * 3600);
/// How long counters are kept.
pub const RETENTION: Duration = Duration::from_secs(400 * 24 * 3600);

/// KEYS: the day's dedupe set, MAU, day hash, DAU. ARGV: retention ms, dedupe window s,
/// then (eventId, type, hour, user) per event. Returns {applied, duplicates}.
/// Counts are summed in Lua first, so a 10,000-event batch costs a few dozen Redis
/// commands, not 40,000. Every key type and counter is checked before the first write,
/// so an error leaves neither counts nor dedupe markers behind.
static COUNT: LazyLock<Script> = LazyLock::new(|| {
    script::atomic(
        r#"
local bad = wrong_types({KEYS[1], 'set', KEYS[3], 'hash'}) or not_hyperloglogs({KEYS[2], KEYS[4]})
if bad then return redis.error_reply(bad) end
local ids = {}
for i = 3, #ARGV, 4 do ids[#ids + 1] = ARGV[i] end
local known = {}
for i = 1, #ids, 1000 do
  local flags = redis.call('SMISMEMBER', KEYS[1], unpack(ids, i, math.min(i + 999, #ids)))
  for j = 1, #flags do known[i + j - 1] = flags[j] == 1 end
end
local counts, users, fresh = {}, {}, {}
local applied, duplicates = 0, 0
for n = 1, #ids do
  local i = 3 + (n - 1) * 4
  if known[n] or fresh[ARGV[i]] then
    duplicates = duplicates + 1
  else
    fresh[ARGV[i]] = true
    local t, h = ARGV[i + 1], ARGV[i + 2]
    counts[t] = (counts[t] or 0) + 1
    counts[h .. ':' .. t] = (counts[h .. ':' .. t] or 0) + 1
    users[#users + 1] = ARGV[i + 3]
    applied = applied + 1
  end
end
if applied > 0 then
  counts['events'] = applied
  local fields = {}
  for field in pairs(counts) do fields[#fields + 1] = field end
  bad = not_integers(KEYS[3], fields)
  if bad then return redis.error_reply(bad) end
  for field, n in pairs(counts) do redis.call('HINCRBY', KEYS[3], field, n) end
  local new_ids = {}
  for id in pairs(fresh) do new_ids[#new_ids + 1] = id end
  for i = 1, #new_ids, 1000 do redis.call('SADD', KEYS[1], unpack(new_ids, i, math.min(i + 999, #new_ids))) end
  for i = 1, #users, 1000 do
    local last = math.min(i + 999, #users)
    redis.call('PFADD', KEYS[4], unpack(users, i, last))
    redis.call('PFADD', KEYS[2], unpack(users, i, last))
  end
end
redis.call('EXPIRE', KEYS[1], ARGV[2])
for k = 2, 4 do redis.call('PEXPIRE', KEYS[k], ARGV[1]) end
return {applied, duplicates}
"#,
    )
});

/// What counting a batch did.
#[derive(Debug, Default)]
pub struct Counted {
    /// Events counted now.
    pub applied: usize,
    /// Events already counted by an earlier delivery.
    pub duplicates: usize,
}

/// Counts a batch: one round trip (one script per distinct day, pipelined). `Err` if
/// Redis could not be used at all; otherwise each day's own result, keyed by day.
pub async fn count(
    store: &Store,
    records: &[&Incoming],
) -> Result<BTreeMap<String, Result<Counted, AppError>>, AppError> {
    if records.is_empty() {
        return Ok(BTreeMap::new());
    }
    let mut by_day: BTreeMap<String, Vec<&Incoming>> = BTreeMap::new();
    for r in records {
        by_day.entry(day_of(r)).or_default().push(r);
    }
    let mut pipe = redis::pipe();
    pipe.ignore_errors();
    pipe.load_script(&COUNT).ignore();
    for (day, events) in &by_day {
        let month = &day[..7];
        let mut call = COUNT.key(keys::analytics_dedupe(month, day));
        call.key(keys::analytics_mau(month))
            .key(keys::analytics_day(month, day))
            .key(keys::analytics_dau(month, day))
            .arg(RETENTION.as_millis() as i64)
            .arg(DEDUPE_WINDOW.as_secs());
        for e in events {
            let env = &e.envelope;
            call.arg(env.event_id.to_string())
                .arg(env.event_type.as_str())
                .arg(env.timestamp.format("%H").to_string())
                .arg(&env.key);
        }
        pipe.invoke_script(&call);
    }
    let results: Vec<redis::RedisResult<(usize, usize)>> = pipe.query_async(&mut store.conn()).await?;
    Ok(by_day
        .into_keys()
        .zip(results)
        .map(|(day, result)| {
            let counted = result
                .map(|(applied, duplicates)| Counted { applied, duplicates })
                .map_err(AppError::from);
            (day, counted)
        })
        .collect())
}

/// The UTC day (`YYYY-MM-DD`) an event is counted on.
pub fn day_of(record: &Incoming) -> String {
    record.envelope.timestamp.format("%Y-%m-%d").to_string()
}

/// One day's raw numbers: its counter hash, DAU and the month's MAU. One round trip.
pub async fn day(store: &Store, day: &str) -> Result<(HashMap<String, i64>, i64, i64), AppError> {
    let month = &day[..7];
    let (counters, dau, mau): (HashMap<String, i64>, i64, i64) = redis::pipe()
        .hgetall(keys::analytics_day(month, day))
        .pfcount(keys::analytics_dau(month, day))
        .pfcount(keys::analytics_mau(month))
        .query_async(&mut store.conn())
        .await?;
    Ok((counters, dau, mau))
}
