//! Brute-force protection: at most N failed logins per email per window.
//!
//! One script both looks the email up and reserves an attempt, atomically, so 50
//! concurrent guesses cannot slip past the limit between a check and an increment.
//! A successful login gives its attempt back by clearing the counter.

use std::{sync::LazyLock, time::Duration};

use devconnect::{keys, script, store::Store, AppError};
use redis::Script;

/// KEYS: email -> id, failure counter. Both must be strings and the counter an
/// integer: checked before the INCR (its one write), so garbage is a clean error
/// rather than a Lua comparison error.
static RESERVE: LazyLock<Script> = LazyLock::new(|| {
    script::atomic(
        r#"
local bad = wrong_types({KEYS[1], 'string', KEYS[2], 'string'})
if bad then return redis.error_reply(bad) end
local stored = redis.call('GET', KEYS[2])
if stored and not string.match(stored, '^%-?%d+$') then
  return redis.error_reply('WRONGTYPE ' .. KEYS[2] .. ' is not an integer')
end
local id = redis.call('GET', KEYS[1])
local failures = tonumber(stored or '0')
if failures >= tonumber(ARGV[1]) then return {id or false, -1, redis.call('TTL', KEYS[2])} end
local n = redis.call('INCR', KEYS[2])
if n == 1 then redis.call('EXPIRE', KEYS[2], ARGV[2]) end
return {id or false, n, redis.call('TTL', KEYS[2])}
"#,
    )
});

/// Looks up the user id for `email` and reserves one login attempt: one round trip.
/// `Err(LoginLocked)` once the window's failures reach `max_failures`.
pub async fn reserve(
    store: &Store,
    email: &str,
    max_failures: u32,
    window: Duration,
) -> Result<Option<String>, AppError> {
    let (user_id, count, ttl): (Option<String>, i64, i64) = RESERVE
        .key(keys::email(email))
        .key(keys::login_failures(email))
        .arg(max_failures)
        .arg(window.as_secs())
        .invoke_async(&mut store.conn())
        .await?;
    if count < 0 {
        return Err(AppError::LoginLocked(u64::try_from(ttl).unwrap_or(1)));
    }
    Ok(user_id)
}

/// Adds "clear the failure counter" to the pipeline that completes a successful login.
pub fn clear(pipe: &mut redis::Pipeline, email: &str) {
    pipe.del(keys::login_failures(email)).ignore();
}
