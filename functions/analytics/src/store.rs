//! Redis side of analytics.

use std::{collections::BTreeMap, collections::HashMap, sync::LazyLock, time::Duration};

use chrono::Timelike;
use devconnect::{
    clock,
    consumer::Incoming,
    keys,
    projection::{self, Pointer, Projection},
    script,
    store::Store,
    AppError,
};
use redis::Script;

/// How long a day's event ids are remembered for dedupe (longer than MSK retention).
pub const DEDUPE_WINDOW: Duration = Duration::from_secs(8 * 24 * 3600);
/// How long counters are kept.
pub const RETENTION: Duration = Duration::from_secs(400 * 24 * 3600);

/// KEYS: the day's dedupe set, MAU, day hash, DAU. ARGV: retention ms, dedupe window s,
/// then (eventId, `HH:TYPE`, user) per event. Returns {applied, duplicates}.
/// Counts are summed in Lua first, so a 10,000-event batch costs a few dozen Redis
/// commands, not 40,000; per event the script only bumps its hour field's count (the day's
/// `TYPE` counts are summed from those, per distinct field, not per event: no string built
/// per event). Every key type and counter is checked before the first write, so an error
/// leaves neither counts nor dedupe markers behind.
static COUNT: LazyLock<Script> = LazyLock::new(|| {
    script::atomic(
        r#"
local bad = wrong_types({KEYS[1], 'set', KEYS[3], 'hash'}) or not_hyperloglogs({KEYS[2], KEYS[4]})
if bad then return redis.error_reply(bad) end
local ids = {}
for i = 3, #ARGV, 3 do ids[#ids + 1] = ARGV[i] end
local known = {}
for i = 1, #ids, 1000 do
  local flags = redis.call('SMISMEMBER', KEYS[1], unpack(ids, i, math.min(i + 999, #ids)))
  for j = 1, #flags do known[i + j - 1] = flags[j] == 1 end
end
local hourly, users, fresh = {}, {}, {}
local applied, duplicates = 0, 0
for n = 1, #ids do
  local i = 3 + (n - 1) * 3
  if known[n] or fresh[ARGV[i]] then
    duplicates = duplicates + 1
  else
    fresh[ARGV[i]] = true
    local field = ARGV[i + 1]
    hourly[field] = (hourly[field] or 0) + 1
    users[#users + 1] = ARGV[i + 2]
    applied = applied + 1
  end
end
if applied > 0 then
  local counts = {events = applied}
  for field, n in pairs(hourly) do
    counts[field] = n
    local t = string.sub(field, 4)
    counts[t] = (counts[t] or 0) + n
  end
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

/// What counting a batch did, per day: `Err` if Redis could not be used at all,
/// otherwise each day's own result, keyed by day.
pub type CountedDays = BTreeMap<String, Result<Counted, AppError>>;

/// Counts a batch into the live generation: one round trip (one script per distinct
/// day, pipelined, plus the generation pointer). If the pointer moved since this
/// container last looked, counts the batch again into the new live generation (its
/// dedupe markers are its own, so nothing is counted twice there).
pub async fn count_live(store: &Store, records: &[&Incoming]) -> Result<CountedDays, AppError> {
    let mut assumed = store.generations().cached(Projection::Analytics);
    let mut redirects = 0;
    loop {
        let (days, seen) = count(store, assumed.live, records).await?;
        store.generations().observe(Projection::Analytics, assumed, seen);
        if seen.live == assumed.live || redirects == projection::MAX_REDIRECTS {
            return Ok(days);
        }
        forget(store, assumed.live, records).await;
        assumed = seen;
        redirects += 1;
    }
}

/// Deletes what a batch just wrote to `generation`, a generation no reader uses any more
/// (readers re-read with the new keys when they see the pointer moved): without this, a
/// batch in flight at the switch would leave keys behind that the rebuild's cleanup has
/// already passed. Best effort: the keys are garbage either way.
async fn forget(store: &Store, generation: u64, records: &[&Incoming]) {
    let days: std::collections::BTreeSet<String> = records.iter().map(|r| day_of(r)).collect();
    let mut unlink = redis::cmd("UNLINK");
    for day in &days {
        let month = &day[..7];
        unlink
            .arg(keys::analytics_dedupe_in(generation, month, day))
            .arg(keys::analytics_mau_in(generation, month))
            .arg(keys::analytics_day_in(generation, month, day))
            .arg(keys::analytics_dau_in(generation, month, day));
    }
    if days.is_empty() {
        return;
    }
    // One slot per month: on a cluster the keys of several months go one command each.
    let result: redis::RedisResult<()> = if store.is_cluster() {
        let mut pipe = redis::pipe();
        for day in &days {
            let month = &day[..7];
            pipe.cmd("UNLINK")
                .arg(keys::analytics_dedupe_in(generation, month, day))
                .arg(keys::analytics_mau_in(generation, month))
                .arg(keys::analytics_day_in(generation, month, day))
                .arg(keys::analytics_dau_in(generation, month, day))
                .ignore();
        }
        pipe.query_async(&mut store.conn()).await
    } else {
        unlink.query_async(&mut store.conn()).await
    };
    if let Err(e) = result {
        tracing::warn!(generation, error = %e, "keys written to a retired analytics generation not deleted");
    }
}

/// Counts a batch into `generation` (the live consumer's and the rebuild's one apply
/// path): one round trip, which also reads the pointer and returns it; after Redis lost
/// the script (a failover), a second one ([`script::query_loaded`]). Due days are closed
/// only after this returns ([`crate::derived::Due::close`]), so a summary always has the batch.
pub async fn count(store: &Store, generation: u64, records: &[&Incoming]) -> Result<(CountedDays, Pointer), AppError> {
    // Grouped by date (formatting a day key per record would cost more than counting it).
    let mut by_date: BTreeMap<chrono::NaiveDate, Vec<&Incoming>> = BTreeMap::new();
    for r in records {
        by_date.entry(r.envelope.timestamp.date_naive()).or_default().push(r);
    }
    let by_day: BTreeMap<String, Vec<&Incoming>> = by_date
        .into_values()
        .map(|events| (day_of(events[0]), events))
        .collect();
    let mut pipe = redis::pipe();
    pipe.ignore_errors();
    for (day, events) in &by_day {
        let month = &day[..7];
        let mut call = script::evalsha(&COUNT, 4);
        call.arg(keys::analytics_dedupe_in(generation, month, day))
            .arg(keys::analytics_mau_in(generation, month))
            .arg(keys::analytics_day_in(generation, month, day))
            .arg(keys::analytics_dau_in(generation, month, day))
            .arg(RETENTION.as_millis() as i64)
            .arg(DEDUPE_WINDOW.as_secs());
        let mut id = [0u8; 36];
        let mut field = [0u8; 64];
        for e in events {
            let env = &e.envelope;
            call.arg(&*env.event_id.as_hyphenated().encode_lower(&mut id))
                .arg(hour_field(&mut field, env.timestamp.hour(), env.event_type.name()))
                .arg(&env.key);
        }
        pipe.add_command(call);
    }
    projection::read_pointer(&mut pipe, Projection::Analytics);
    let mut results = script::query_loaded(store, &pipe, &[&COUNT]).await?;
    let pointer = results
        .pop()
        .ok_or_else(|| AppError::bug("analytics pipeline returned no pointer"))?;
    let pointer = Pointer::from_reply(parse(
        script::reply::<redis::Value>(pointer)?,
        "analytics pointer reply",
    )?)?;
    let days = by_day
        .into_keys()
        .zip(results)
        .map(|(day, result)| {
            let counted = script::reply::<redis::Value>(result)
                .and_then(|v| {
                    redis::from_redis_value::<(usize, usize)>(v)
                        .map_err(|e| AppError::internal("analytics count reply", e))
                })
                .map(|(applied, duplicates)| Counted { applied, duplicates });
            (day, counted)
        })
        .collect();
    Ok((days, pointer))
}

/// Hour fields, `00` to `23`, without formatting one per record.
const HOURS: [&str; 24] = [
    "00", "01", "02", "03", "04", "05", "06", "07", "08", "09", "10", "11", "12", "13", "14", "15", "16", "17", "18",
    "19", "20", "21", "22", "23",
];

/// The hour counter's field, `HH:TYPE`, written into `buf` (no allocation per event).
fn hour_field<'a>(buf: &'a mut [u8; 64], hour: u32, event_type: &str) -> &'a [u8] {
    let name = event_type.as_bytes();
    let len = 3 + name.len().min(buf.len() - 3);
    buf[..2].copy_from_slice(HOURS[hour as usize % 24].as_bytes());
    buf[2] = b':';
    buf[3..len].copy_from_slice(&name[..len - 3]);
    &buf[..len]
}

/// The UTC day (`YYYY-MM-DD`) an event is counted on.
pub fn day_of(record: &Incoming) -> String {
    clock::day_key(&record.envelope.timestamp)
}

/// A day's raw numbers in the live generation: its counter hash, DAU and the month's MAU.
pub type DayCounts = (HashMap<String, i64>, i64, i64);

/// One day's raw numbers. One round trip (two once per container after a rebuild switched
/// generations).
pub async fn day(store: &Store, day: &str) -> Result<DayCounts, AppError> {
    let mut read = read_days(store, &[day], false).await?;
    read.pop()
        .map(|(counts, _)| counts)
        .ok_or_else(|| AppError::bug("analytics day read returned no day"))
}

/// Each of `days`' raw numbers and milestone counts (kept outside the projection
/// generations), all in one round trip: what the days' summaries are made of.
pub async fn days_with_milestones(
    store: &Store,
    days: &[&str],
) -> Result<Vec<(DayCounts, HashMap<String, u64>)>, AppError> {
    read_days(store, days, true).await
}

/// A pipeline's reply as `T`; one that is not names `what` in the error.
pub(crate) fn parse<T: redis::FromRedisValue>(value: redis::Value, what: &'static str) -> Result<T, AppError> {
    redis::from_redis_value(value).map_err(|e| AppError::internal(what, e))
}

async fn read_days(
    store: &Store,
    days: &[&str],
    with_milestones: bool,
) -> Result<Vec<(DayCounts, HashMap<String, u64>)>, AppError> {
    let mut assumed = store.generations().cached(Projection::Analytics);
    let mut redirects = 0;
    loop {
        let g = assumed.live;
        let mut pipe = redis::pipe();
        for day in days {
            let month = &day[..7];
            pipe.hgetall(keys::analytics_day_in(g, month, day))
                .pfcount(keys::analytics_dau_in(g, month, day))
                .pfcount(keys::analytics_mau_in(g, month));
            if with_milestones {
                pipe.hgetall(keys::milestones_of_day(day));
            }
        }
        projection::read_pointer(&mut pipe, Projection::Analytics);
        let mut replies: std::vec::IntoIter<redis::Value> = pipe
            .query_async::<Vec<redis::Value>>(&mut store.conn())
            .await?
            .into_iter();
        let mut next = || {
            replies
                .next()
                .ok_or_else(|| AppError::bug("analytics day pipeline returned too few replies"))
        };
        let mut read = Vec::with_capacity(days.len());
        for _ in days {
            let counters: HashMap<String, i64> = parse(next()?, "analytics day counters")?;
            let dau: i64 = parse(next()?, "analytics DAU")?;
            let mau: i64 = parse(next()?, "analytics MAU")?;
            let milestones: HashMap<String, u64> = match with_milestones {
                true => parse(next()?, "milestone counts")?,
                false => HashMap::new(),
            };
            read.push(((counters, dau, mau), milestones));
        }
        let seen = Pointer::from_reply(parse(next()?, "analytics pointer")?)?;
        store.generations().observe(Projection::Analytics, assumed, seen);
        if seen.live == g || redirects == projection::MAX_REDIRECTS {
            return Ok(read);
        }
        assumed = seen;
        redirects += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_hour_field_is_the_hour_then_the_type() {
        let mut buf = [0u8; 64];
        assert_eq!(hour_field(&mut buf, 7, "USER_SIGNUP"), b"07:USER_SIGNUP");
        assert_eq!(
            hour_field(&mut buf, 23, "CONNECTION_REQUEST_IGNORED"),
            b"23:CONNECTION_REQUEST_IGNORED"
        );
    }
}
