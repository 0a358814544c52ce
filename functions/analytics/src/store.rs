//! Redis side of analytics.

use std::{collections::BTreeMap, collections::HashMap, sync::LazyLock, time::Duration};

use devconnect::{consumer::Incoming, keys, store::Store, user, AppError};
use redis::Script;

/// How long event ids are remembered for dedupe.
pub const DEDUPE_WINDOW: Duration = Duration::from_secs(8 * 24 * 3600);
/// How long counters are kept.
pub const RETENTION: Duration = Duration::from_secs(400 * 24 * 3600);

/// KEYS: dedupe zset, MAU, day hash, DAU. ARGV: now, dedupe window, retention, then
/// (eventId, type, hour, user) per event. Returns {applied, duplicates}.
static COUNT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local now = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]))
local applied, duplicates = 0, 0
local users = {}
for i = 4, #ARGV, 4 do
  if redis.call('ZADD', KEYS[1], 'NX', now, ARGV[i]) == 1 then
    redis.call('HINCRBY', KEYS[3], ARGV[i + 1], 1)
    redis.call('HINCRBY', KEYS[3], ARGV[i + 2] .. ':' .. ARGV[i + 1], 1)
    redis.call('HINCRBY', KEYS[3], 'events', 1)
    users[#users + 1] = ARGV[i + 3]
    applied = applied + 1
  else
    duplicates = duplicates + 1
  end
end
for i = 1, #users, 500 do
  local chunk = {unpack(users, i, math.min(i + 499, #users))}
  redis.call('PFADD', KEYS[4], unpack(chunk))
  redis.call('PFADD', KEYS[2], unpack(chunk))
end
for k = 1, 4 do redis.call('PEXPIRE', KEYS[k], ARGV[3]) end
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

/// Counts a batch: one round trip (one script per distinct day, pipelined).
pub async fn count(store: &Store, records: &[Incoming]) -> Result<Counted, AppError> {
    if records.is_empty() {
        return Ok(Counted::default());
    }
    let mut by_day: BTreeMap<String, Vec<&Incoming>> = BTreeMap::new();
    for r in records {
        by_day.entry(r.envelope.timestamp.format("%Y-%m-%d").to_string()).or_default().push(r);
    }
    let mut pipe = redis::pipe();
    pipe.load_script(&COUNT).ignore();
    for (day, events) in &by_day {
        let month = &day[..7];
        let mut call = COUNT.key(keys::analytics_dedupe(month));
        call.key(keys::analytics_mau(month))
            .key(keys::analytics_day(month, day))
            .key(keys::analytics_dau(month, day))
            .arg(user::now_ms())
            .arg(DEDUPE_WINDOW.as_millis() as i64)
            .arg(RETENTION.as_millis() as i64);
        for e in events {
            let env = &e.envelope;
            call.arg(env.event_id.to_string()).arg(env.event_type.as_str()).arg(env.timestamp.format("%H").to_string()).arg(&env.key);
        }
        pipe.invoke_script(&call);
    }
    let results: Vec<(usize, usize)> = pipe.query_async(&mut store.conn()).await?;
    Ok(results.into_iter().fold(Counted::default(), |acc, (a, d)| Counted { applied: acc.applied + a, duplicates: acc.duplicates + d }))
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
