//! Which sockets a user has open and which session opened each: Redis, in the user's
//! slot (beside the user's session keys), with API Gateway's 2 h limit as TTL.

use std::{collections::HashMap, sync::LazyLock, time::Duration};

use devconnect::{
    clock,
    config::RateLimits,
    keys,
    rate_limit::{self, RateDecision, COUNT_LUA},
    script, session,
    store::Store,
    AppError,
};
use redis::{AsyncCommands, Script};

/// API Gateway closes WebSocket connections after 2 hours at most.
pub const MAX_CONNECTION_AGE: Duration = Duration::from_secs(2 * 3600);

/// Lua: whether a session key is a live session, by the rules of the authentication
/// script (`session`): a hash whose `lastUsedAt` is within the idle timeout, or a
/// string session (no idle tracking). A session that went idle still has its key until
/// a request finds it, so EXISTS alone would keep its sockets alive.
const ALIVE_LUA: &str = r#"
local function alive(key, now, idle)
  local t = redis.call('TYPE', key).ok
  if t == 'string' then return true end
  if t ~= 'hash' then return false end
  local last = tonumber(redis.call('HGET', key, 'lastUsedAt') or '') or 0
  return now - last <= idle
end
"#;

/// Milliseconds for a script argument.
fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Registers a connection if its session still exists, and caps the user's sockets.
/// KEYS: sockets, socket sessions, the session. ARGV: connection, session id, now (ms),
/// expiry (ms), TTL (ms), cap, idle timeout (ms). Returns `false` (nothing written) when the session is gone,
/// else the connections evicted to stay within the cap, oldest first (lowest expiry).
/// Reads before its first write; ZADD/HSET fail whole on a key of the wrong type.
static REGISTER: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{ALIVE_LUA}{}",
        r#"
if not alive(KEYS[3], tonumber(ARGV[3]), tonumber(ARGV[7])) then return false end
local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[3])
redis.call('ZADD', KEYS[1], ARGV[4], ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
if #expired > 0 then
  redis.call('ZREM', KEYS[1], unpack(expired))
  redis.call('HDEL', KEYS[2], unpack(expired))
end
local over = redis.call('ZCARD', KEYS[1]) - tonumber(ARGV[6])
local evicted = {}
if over > 0 then
  evicted = redis.call('ZRANGE', KEYS[1], 0, over - 1)
  redis.call('ZREM', KEYS[1], unpack(evicted))
  redis.call('HDEL', KEYS[2], unpack(evicted))
end
redis.call('PEXPIRE', KEYS[1], ARGV[5])
redis.call('PEXPIRE', KEYS[2], ARGV[5])
return evicted
"#
    ))
});

/// A user's open connections, split by whether the session that opened each one still
/// exists. KEYS: sockets, socket sessions. ARGV: now (ms), the user's session key
/// prefix, idle timeout (ms).
/// The session keys are not in KEYS (their names come from the hash), but they carry
/// the user's hash tag like KEYS[1], so they are in the same slot (see `keys`).
/// Read-only. Returns {live, dead}.
static LIVE_SOCKETS: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{ALIVE_LUA}{}",
        r#"
local live, dead = {}, {}
for _, c in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], ARGV[1], '+inf')) do
  local sid = redis.call('HGET', KEYS[2], c)
  if sid and alive(ARGV[2] .. sid, tonumber(ARGV[1]), tonumber(ARGV[3])) then
    table.insert(live, c)
  else
    table.insert(dead, c)
  end
end
return {live, dead}
"#
    ))
});

/// Checks a `$default` frame's connection still has its session and counts the frame
/// against the user's rate limit. KEYS: socket sessions, user record, rate counter.
/// ARGV: connection, session key prefix, window (s), free limit, premium limit, now
/// (ms), idle timeout (ms). A frame does not move the session's `lastUsedAt`: pings are
/// automatic, so an unattended device's socket must not keep its session from idling out.
/// Returns {0} without writing if the session is gone, else {1, limit, count, ttl}.
/// Only reads before the INCR (which fails whole on a bad counter).
static FRAME: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{ALIVE_LUA}{}{COUNT_LUA}return {{1, limit, count, ttl}}",
        r#"
local sid = redis.call('HGET', KEYS[1], ARGV[1])
if not sid or not alive(ARGV[2] .. sid, tonumber(ARGV[6]), tonumber(ARGV[7])) then return {0} end
local limit = tonumber(ARGV[4])
if redis.call('HGET', KEYS[2], 'tier') == 'premium' then limit = tonumber(ARGV[5]) end
local window = tonumber(ARGV[3])
local ckey = KEYS[3]
"#
    ))
});

/// Who opened a connection: the user and the session (its token hash).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Opener {
    /// The signed-in user.
    pub user_id: String,
    /// The session's id: the hex SHA-256 of its token, as in `keys::session`.
    pub session_id: String,
}

impl Opener {
    /// Who a session token opens connections as: its user and its session id. `None` if
    /// the token is malformed (no Redis needed to tell).
    pub fn of_token(token: &str) -> Option<Self> {
        let parsed = session::ParsedToken::parse(token).ok()?;
        let key = parsed.session_key();
        Some(Self {
            user_id: parsed.user_id.to_string(),
            session_id: key.rsplit_once(':')?.1.to_string(),
        })
    }
}

/// Records a new connection of `opener`, if its session still exists: one round trip.
/// `Ok(None)` if the session is gone (nothing kept); else the connections evicted to
/// keep the user within `cap`, which the caller closes.
pub async fn register(
    store: &Store,
    opener: &Opener,
    connection_id: &str,
    cap: u32,
    idle: Duration,
) -> Result<Option<Vec<String>>, AppError> {
    let now = clock::now_ms();
    let ttl = MAX_CONNECTION_AGE.as_millis() as i64;
    let user_id = opener.user_id.as_str();
    let (evicted,): (Option<Vec<String>>,) = redis::pipe()
        .load_script(&REGISTER)
        .ignore()
        .invoke_script(
            REGISTER
                .key(keys::sockets(user_id))
                .key(keys::socket_sessions(user_id))
                .key(keys::session(user_id, &opener.session_id))
                .arg(connection_id)
                .arg(&opener.session_id)
                .arg(now)
                .arg(now + ttl)
                .arg(ttl)
                .arg(cap)
                .arg(ms(idle)),
        )
        .set_ex(keys::socket_owner(connection_id), user_id, MAX_CONNECTION_AGE.as_secs())
        .ignore()
        .query_async(&mut store.conn())
        .await?;
    if evicted.is_none() {
        // The owner key went in the same round trip; take it back on this path only.
        let _: redis::RedisResult<i64> = store.conn().del(keys::socket_owner(connection_id)).await;
    }
    Ok(evicted)
}

/// Checks that a `$default` frame's connection still has its session and counts the
/// frame against the user's rate limit: one round trip. `Unauthorized` if the session
/// is gone, `RateLimited` past the limit.
pub async fn admit_frame(
    store: &Store,
    limits: &RateLimits,
    idle: Duration,
    user_id: &str,
    connection_id: &str,
) -> Result<RateDecision, AppError> {
    let window = rate_limit::window_index(rate_limit::now_secs(), limits.window);
    let reply: Vec<i64> = FRAME
        .key(keys::socket_sessions(user_id))
        .key(keys::user(user_id))
        .key(keys::user_rate(user_id, window))
        .arg(connection_id)
        .arg(keys::session_prefix(user_id))
        .arg(limits.window.as_secs())
        .arg(limits.free)
        .arg(limits.premium)
        .arg(clock::now_ms())
        .arg(ms(idle))
        .invoke_async(&mut store.conn())
        .await?;
    match reply.as_slice() {
        [1, limit, count, ttl] => RateDecision::judge(u32::try_from(*limit).unwrap_or(0), *count, *ttl),
        _ => Err(AppError::Unauthorized("session ended")),
    }
}

/// The user a connection belongs to, if it is known.
pub async fn owner(store: &Store, connection_id: &str) -> Result<Option<String>, AppError> {
    Ok(store.conn().get(keys::socket_owner(connection_id)).await?)
}

/// Forgets a connection; returns how many the user still has open.
pub async fn unregister(store: &Store, user_id: &str, connection_id: &str) -> Result<i64, AppError> {
    let (left,): (i64,) = redis::pipe()
        .del(keys::socket_owner(connection_id))
        .ignore()
        .zrem(keys::sockets(user_id), connection_id)
        .ignore()
        .hdel(keys::socket_sessions(user_id), connection_id)
        .ignore()
        .zcount(keys::sockets(user_id), clock::now_ms(), "+inf")
        .query_async(&mut store.conn())
        .await?;
    Ok(left)
}

/// Open connections of each user: one round trip. `Err` if Redis could not be used;
/// otherwise each user's own result (a broken key fails only that user).
pub async fn of_users(store: &Store, users: &[String]) -> Result<PerUser, AppError> {
    let now = clock::now_ms();
    per_user(store, users, |pipe, u| {
        pipe.zrangebyscore(keys::sockets(u), now, "+inf");
    })
    .await
}

/// Open connections of each user whose session still exists (`live`), and those whose
/// session has ended or expired (`dead`, to be closed): one round trip ([`LIVE_SOCKETS`]
/// per user; the script is sent again, loaded, only if Redis answers NOSCRIPT), results as
/// [`of_users`].
pub async fn live_of_users(
    store: &Store,
    users: &[String],
    idle: Duration,
) -> Result<HashMap<String, Result<Sockets, AppError>>, AppError> {
    if users.is_empty() {
        return Ok(HashMap::new());
    }
    let now = clock::now_ms();
    let mut pipe = redis::pipe();
    pipe.ignore_errors();
    for u in users {
        pipe.invoke_script(
            LIVE_SOCKETS
                .key(keys::sockets(u))
                .key(keys::socket_sessions(u))
                .arg(now)
                .arg(keys::session_prefix(u))
                .arg(ms(idle)),
        );
    }
    let lists = script::query_loaded(store, &pipe, &[&LIVE_SOCKETS]).await?;
    Ok(users
        .iter()
        .cloned()
        .zip(
            lists
                .into_iter()
                .map(|l| script::reply::<(Vec<String>, Vec<String>)>(l).map(|(live, dead)| Sockets { live, dead })),
        )
        .collect())
}

/// [`live_of_users`] for the targets of a batch, most of whom have no socket open (a
/// receiver away from the app, a notification for someone offline, a friend offline):
/// first one plain `ZCOUNT` per user (a fraction of what running the script costs Redis),
/// then the script for those with a socket open, if any. One round trip when nobody has a
/// socket open, else two; results as [`of_users`].
pub async fn live_of_targets(
    store: &Store,
    users: &[String],
    idle: Duration,
) -> Result<HashMap<String, Result<Sockets, AppError>>, AppError> {
    let now = clock::now_ms();
    let counts: HashMap<String, Result<i64, AppError>> = per_user(store, users, |pipe, u| {
        pipe.zcount(keys::sockets(u), now, "+inf");
    })
    .await?;
    let open: Vec<String> = counts
        .iter()
        .filter(|(_, n)| matches!(n, Ok(n) if *n > 0))
        .map(|(u, _)| u.clone())
        .collect();
    let mut found = live_of_users(store, &open, idle).await?;
    Ok(counts
        .into_iter()
        .map(|(u, n)| {
            let sockets = match n {
                Err(e) => Err(e),
                Ok(0) => Ok(Sockets::default()),
                Ok(_) => found.remove(&u).unwrap_or_else(|| Ok(Sockets::default())),
            };
            (u, sockets)
        })
        .collect())
}

/// A user's open connections, by whether their session is still valid.
#[derive(Clone, Debug, Default)]
pub struct Sockets {
    /// The session that opened it still exists: frames may go there.
    pub live: Vec<String>,
    /// Its session ended or expired: no frame, and it is closed.
    pub dead: Vec<String>,
}

/// The connections each user opened with one of the given sessions: one round trip
/// (the whole connection -> session hash of each user, filtered here).
pub async fn of_sessions(
    store: &Store,
    sessions: &HashMap<String, Vec<String>>,
) -> Result<HashMap<String, Result<Vec<String>, AppError>>, AppError> {
    if sessions.is_empty() {
        return Ok(HashMap::new());
    }
    let users: Vec<&String> = sessions.keys().collect();
    let mut pipe = redis::pipe();
    pipe.ignore_errors();
    for u in &users {
        pipe.hgetall(keys::socket_sessions(u));
    }
    let maps: Vec<redis::RedisResult<HashMap<String, String>>> = pipe.query_async(&mut store.conn()).await?;
    Ok(users
        .into_iter()
        .zip(maps)
        .map(|(u, map)| {
            let ended = &sessions[u];
            let connections = map.map_err(AppError::from).map(|m| {
                m.into_iter()
                    .filter(|(_, sid)| ended.contains(sid))
                    .map(|(c, _)| c)
                    .collect()
            });
            (u.clone(), connections)
        })
        .collect())
}

/// Connections (the social kind) of each user: one round trip, results as [`of_users`].
pub async fn friends_of(store: &Store, users: &[String]) -> Result<PerUser, AppError> {
    per_user(store, users, |pipe, u| {
        pipe.zrange(keys::connections(u), 0, -1);
    })
    .await
}

/// A list of ids per user, or why that user's list could not be read.
pub type PerUser = HashMap<String, Result<Vec<String>, AppError>>;

/// One reply per user to the command `command` adds for them: one round trip.
async fn per_user<T: redis::FromRedisValue>(
    store: &Store,
    users: &[String],
    command: impl Fn(&mut redis::Pipeline, &str),
) -> Result<HashMap<String, Result<T, AppError>>, AppError> {
    if users.is_empty() {
        return Ok(HashMap::new());
    }
    let mut pipe = redis::pipe();
    pipe.ignore_errors();
    for u in users {
        command(&mut pipe, u);
    }
    let replies: Vec<redis::RedisResult<T>> = pipe.query_async(&mut store.conn()).await?;
    Ok(users
        .iter()
        .cloned()
        .zip(replies.into_iter().map(|l| l.map_err(AppError::from)))
        .collect())
}

/// Whether `other` is one of `me`'s connections.
pub async fn are_connected(store: &Store, me: &str, other: &str) -> Result<bool, AppError> {
    let score: Option<f64> = store.conn().zscore(keys::connections(me), other).await?;
    Ok(score.is_some())
}

/// Removes connections API Gateway reported gone (410): one round trip.
pub async fn remove_stale(store: &Store, stale: &[(String, String)]) -> Result<(), AppError> {
    if stale.is_empty() {
        return Ok(());
    }
    let mut pipe = redis::pipe();
    for (user_id, connection_id) in stale {
        pipe.zrem(keys::sockets(user_id), connection_id)
            .ignore()
            .hdel(keys::socket_sessions(user_id), connection_id)
            .ignore()
            .del(keys::socket_owner(connection_id))
            .ignore();
    }
    pipe.query_async::<()>(&mut store.conn()).await?;
    Ok(())
}
