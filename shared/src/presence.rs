//! Online/offline transitions, shared by the presence function (HTTP heartbeats, the
//! sweep) and the realtime function (sockets opening, pinging and closing), so neither
//! function imports the other.
//!
//! Redis persistence: a hash per user (its own slot) plus one index of users marked
//! online, which only the sweep reads. A user is online while their last heartbeat is
//! younger than `PRESENCE_TIMEOUT_SECS`; USER_ONLINE is produced only on the
//! offline -> online transition (decided atomically in a script), USER_OFFLINE on an
//! explicit offline, the last socket closing, or the sweep finding the heartbeat lapsed.

use std::sync::LazyLock;

use crate::{
    clock, keys,
    payloads::{UserOffline, UserOnline},
    script,
    store::Store,
    AppError, AppState,
};
use redis::{AsyncCommands, Script};

/// Records a heartbeat; returns 1 if the user was offline (the transition to report).
/// Checks the hash and its `lastSeen` first, so garbage there is a clean error
/// rather than a Lua arithmetic error.
static HEARTBEAT: LazyLock<Script> = LazyLock::new(|| {
    script::atomic(
        r#"
local bad = wrong_types({KEYS[1], 'hash'}) or not_integers(KEYS[1], {'lastSeen'})
if bad then return redis.error_reply(bad) end
local r = redis.call('HMGET', KEYS[1], 'online', 'lastSeen')
local was_online = r[1] == '1' and (tonumber(ARGV[1]) - tonumber(r[2] or '0')) <= tonumber(ARGV[2])
redis.call('HSET', KEYS[1], 'online', 1, 'lastSeen', ARGV[1])
if was_online then return 0 end
return 1
"#,
    )
});

/// Marks the user offline now; returns 1 if they were marked online.
static OFFLINE: LazyLock<Script> = LazyLock::new(|| {
    script::atomic(
        r#"
local bad = wrong_types({KEYS[1], 'hash'})
if bad then return redis.error_reply(bad) end
local was = redis.call('HGET', KEYS[1], 'online') == '1'
redis.call('HSET', KEYS[1], 'online', 0, 'lastSeen', ARGV[1])
if was then return 1 end
return 0
"#,
    )
});

/// Removes from the online index those of ARGV[2..] whose score is still older than ARGV[1];
/// returns them. A heartbeat that raced in has raised the score, so it stays.
/// Its only key is the index, read by ZSCORE (which fails on a wrong type) before
/// any ZREM, and zset scores are always numbers: an error leaves nothing written.
static CLAIM_LAPSED: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local out = {}
for i = 2, #ARGV do
  local s = redis.call('ZSCORE', KEYS[1], ARGV[i])
  if s and tonumber(s) < tonumber(ARGV[1]) then
    redis.call('ZREM', KEYS[1], ARGV[i])
    table.insert(out, ARGV[i])
  end
end
return out
"#,
    )
});

/// Flips a claimed user to offline if their last heartbeat is still old and no socket
/// is open (KEYS[2]; ARGV[2] = now); returns lastSeen, or nil.
static LAPSE: LazyLock<Script> = LazyLock::new(|| {
    script::atomic(
        r#"
local bad = wrong_types({KEYS[1], 'hash', KEYS[2], 'zset'}) or not_integers(KEYS[1], {'lastSeen'})
if bad then return redis.error_reply(bad) end
local r = redis.call('HMGET', KEYS[1], 'online', 'lastSeen')
if redis.call('ZCOUNT', KEYS[2], ARGV[2], '+inf') > 0 then return false end
if r[1] == '1' and tonumber(r[2] or '0') < tonumber(ARGV[1]) then
  redis.call('HSET', KEYS[1], 'online', 0)
  return r[2]
end
return false
"#,
    )
});

/// Records a heartbeat at `now_ms`: one round trip. `true` on the offline -> online transition.
///
/// The online index is one global key, so it cannot join the user's script; the two
/// travel in one (non-atomic) pipeline and both run even if one fails. If the script
/// fails (the user's presence hash is broken), the index entry it added is taken back
/// (a second round trip, on that error path only) so the sweep is not sent after a
/// user who never came online. If only the index fails, the heartbeat itself is
/// recorded (it did happen) and the request still fails loudly: a broken index breaks
/// every heartbeat, which is an outage to fix, not something to hide.
pub async fn heartbeat(store: &Store, user_id: &str, now_ms: i64, timeout_ms: i64) -> Result<bool, AppError> {
    let mut pipe = redis::pipe();
    pipe.ignore_errors()
        .invoke_script(HEARTBEAT.key(keys::presence(user_id)).arg(now_ms).arg(timeout_ms))
        .zadd(keys::ONLINE, user_id, now_ms);
    // After NOSCRIPT only the script goes again: the ZADD's one reply (whether it added
    // the user) is what the undo below needs.
    let mut replies = script::query_loaded(store, &pipe, &[&HEARTBEAT]).await?.into_iter();
    let recorded = script::reply::<i64>(replies.next().unwrap_or(redis::Value::Nil));
    let indexed = script::reply::<i64>(replies.next().unwrap_or(redis::Value::Nil));
    match (recorded, indexed) {
        (Ok(became_online), Ok(_)) => Ok(became_online == 1),
        (Err(e), Ok(added)) => {
            if added == 1 {
                let _: redis::RedisResult<i64> = store.conn().zrem(keys::ONLINE, user_id).await;
            }
            Err(e)
        }
        (_, Err(e)) => Err(e),
    }
}

/// Marks `user_id` offline at `now_ms`: one round trip. `true` if they were online.
///
/// If the script fails (a broken presence hash), the ZREM beside it has still taken the
/// user out of the online index. That is harmless: the index only tells the sweep whom
/// to check, and a user whose hash is broken cannot be lapsed anyway.
pub async fn offline(store: &Store, user_id: &str, now_ms: i64) -> Result<bool, AppError> {
    let mut pipe = redis::pipe();
    pipe.ignore_errors()
        .invoke_script(OFFLINE.key(keys::presence(user_id)).arg(now_ms))
        .zrem(keys::ONLINE, user_id);
    // After NOSCRIPT only the script goes again (the ZREM ran once).
    let mut replies = script::query_loaded(store, &pipe, &[&OFFLINE]).await?.into_iter();
    let was_online: i64 = script::reply(replies.next().unwrap_or(redis::Value::Nil))?;
    script::reply::<i64>(replies.next().unwrap_or(redis::Value::Nil))?;
    Ok(was_online == 1)
}

/// What GET /presence shows of one user.
#[derive(Debug, PartialEq, Eq)]
pub struct Presence {
    /// Heartbeat within the timeout, and not explicitly offline.
    pub online: bool,
    /// Last heartbeat or offline, ms; `None` if never seen.
    pub last_seen: Option<i64>,
}

/// Adds the reads GET /presence makes to `pipe` (reads only, so they can ride on the
/// authentication round trip): whether each of `ids` is `me`'s connection, and each one's
/// presence hash and open sockets. [`lookup_replies`] reads their replies.
pub fn lookup_reads(pipe: &mut redis::Pipeline, me: &str, ids: &[String], now_ms: i64) {
    pipe.cmd("ZMSCORE").arg(keys::connections(me)).arg(ids);
    // Two commands per id (up to 200 a lookup): each sized once, the time written once.
    let since = now_ms.to_string();
    for id in ids {
        // The two fields read, not HGETALL: half the reply to parse, and no map per user.
        let mut fields = redis::Cmd::with_capacity(4, 112);
        fields
            .arg("HMGET")
            .arg(keys::presence(id))
            .arg("online")
            .arg("lastSeen");
        pipe.add_command(fields);
        let mut sockets = redis::Cmd::with_capacity(4, 112);
        sockets
            .arg("ZCOUNT")
            .arg(keys::sockets(id))
            .arg(since.as_str())
            .arg("+inf");
        pipe.add_command(sockets);
    }
}

/// Which of `ids` `me` may see (self and connections), and their presence, from the
/// replies of [`lookup_reads`] (error replies as `Value::ServerError`, which fail the lookup).
pub fn lookup_replies(
    me: &str,
    ids: &[String],
    replies: Vec<redis::Value>,
    now_ms: i64,
    timeout_ms: i64,
) -> Result<Vec<(String, Option<Presence>)>, AppError> {
    if replies.len() != 1 + 2 * ids.len() {
        return Err(AppError::bug("presence lookup: one reply per read expected"));
    }
    let mut replies = replies.into_iter();
    let scores: Vec<Option<f64>> = script::reply(replies.next().unwrap_or(redis::Value::Nil))?;
    let mut out = Vec::with_capacity(ids.len());
    for (id, connected) in ids.iter().zip(scores) {
        let (online, last_seen): (Option<String>, Option<String>) =
            script::reply(replies.next().unwrap_or(redis::Value::Nil))?;
        let open_sockets: i64 = script::reply(replies.next().unwrap_or(redis::Value::Nil))?;
        let visible = id == me || connected.is_some();
        let presence = visible.then(|| {
            let last_seen = last_seen.and_then(|v| v.parse::<i64>().ok());
            let beating = online.as_deref() == Some("1") && last_seen.is_some_and(|t| now_ms - t <= timeout_ms);
            Presence {
                online: beating || open_sockets > 0,
                last_seen,
            }
        });
        out.push((id.clone(), presence));
    }
    Ok(out)
}

/// Marks everyone whose heartbeat is older than `cutoff_ms` offline; returns (user, lastSeen ms)
/// for each one this sweep marked. Three round trips per 500 users.
pub async fn sweep(store: &Store, cutoff_ms: i64) -> Result<Vec<(String, i64)>, AppError> {
    let mut conn = store.conn();
    let mut marked = Vec::new();
    loop {
        let candidates: Vec<String> = redis::cmd("ZRANGEBYSCORE")
            .arg(keys::ONLINE)
            .arg("-inf")
            .arg(format!("({cutoff_ms}"))
            .arg("LIMIT")
            .arg(0)
            .arg(500)
            .query_async(&mut conn)
            .await?;
        if candidates.is_empty() {
            return Ok(marked);
        }
        let claimed: Vec<String> = CLAIM_LAPSED
            .key(keys::ONLINE)
            .arg(cutoff_ms)
            .arg(&candidates)
            .invoke_async(&mut conn)
            .await?;
        if claimed.is_empty() {
            continue;
        }
        // One user's broken keys must not cost the others their transition: they are
        // already out of the index, so a failed batch would never be swept again.
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        pipe.load_script(&LAPSE).ignore();
        for id in &claimed {
            pipe.invoke_script(
                LAPSE
                    .key(keys::presence(id))
                    .key(keys::sockets(id))
                    .arg(cutoff_ms)
                    .arg(clock::now_ms()),
            );
        }
        let last_seen: Vec<redis::RedisResult<Option<i64>>> = pipe.query_async(&mut conn).await?;
        for (id, seen) in claimed.into_iter().zip(last_seen) {
            match seen {
                Ok(Some(seen)) => marked.push((id, seen)),
                Ok(None) => {}
                Err(e) => tracing::warn!(user_id = %id, error = %e, "presence not lapsed: its keys are broken"),
            }
        }
    }
}

fn timeout_ms(state: &AppState) -> i64 {
    i64::try_from(state.config.presence_timeout.as_millis()).unwrap_or(i64::MAX)
}

/// Records a heartbeat (HTTP heartbeat, WebSocket connect or ping) and produces
/// USER_ONLINE if this is the offline -> online transition. Returns the time recorded.
pub async fn mark_online(state: &AppState, user_id: &str, correlation_id: &str) -> Result<i64, AppError> {
    let now = clock::now_ms();
    if heartbeat(&state.store, user_id, now, timeout_ms(state)).await? {
        let online = UserOnline {
            user_id: user_id.to_string(),
            at: clock::rfc3339_from_ms(now),
        };
        state.publisher.publish(user_id, correlation_id, online).await?;
    }
    Ok(now)
}

/// Marks the user offline now (explicit offline, or their last socket closed) and
/// produces USER_OFFLINE if they were online.
pub async fn mark_offline(state: &AppState, user_id: &str, correlation_id: &str, reason: &str) -> Result<(), AppError> {
    let now = clock::now_ms();
    if offline(&state.store, user_id, now).await? {
        let offline = UserOffline {
            user_id: user_id.to_string(),
            last_seen: clock::rfc3339_from_ms(now),
            reason: reason.to_string(),
        };
        state.publisher.publish(user_id, correlation_id, offline).await?;
    }
    Ok(())
}

/// One scheduled sweep: marks users whose heartbeat lapsed offline and produces
/// USER_OFFLINE for each, exactly once even if two sweeps overlap. Returns how many.
pub async fn sweep_lapsed(state: &AppState, correlation_id: &str) -> Result<usize, AppError> {
    let lapsed = sweep(&state.store, clock::now_ms() - timeout_ms(state)).await?;
    for (user_id, last_seen) in &lapsed {
        let offline = UserOffline {
            user_id: user_id.clone(),
            last_seen: clock::rfc3339_from_ms(*last_seen),
            reason: "timeout".to_string(),
        };
        state.publisher.publish(user_id, correlation_id, offline).await?;
    }
    Ok(lapsed.len())
}
