//! Brute-force protection that cannot be turned against the victim.
//!
//! Failures are counted per (email, client IP): after `max_failures` from one address
//! that pair is locked for a delay that doubles with each further failure (capped at the
//! window), so guessing from one address slows to a crawl, while the account owner at
//! their own address is untouched. A much higher per-email ceiling over all addresses
//! bounds a distributed attack (it counts attempts, successful ones too, so a
//! ceiling of `LOGIN_EMAIL_MAX_FAILURES` per window is never reached by honest use). Refused attempts count nowhere, so being refused cannot
//! be used to push the ceiling up either.
//!
//! One script looks the email up, checks both limits and reserves the attempt,
//! atomically, so 50 concurrent guesses cannot slip past between a check and an
//! increment. A successful login gives its pair's failures back.

use std::{sync::LazyLock, time::Duration};

use devconnect::{keys, script, session, store::Store, AppError};
use redis::Script;

/// The limits, from config.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Failures per (email, IP) before the pair is locked (`LOGIN_MAX_FAILURES`).
    pub max_failures: u32,
    /// Failures per email over all addresses in one window (`LOGIN_EMAIL_MAX_FAILURES`).
    pub email_max_failures: u32,
    /// The first lock; doubles per further failure (`LOGIN_LOCK_BASE_SECS`).
    pub lock_base: Duration,
    /// How long failures are remembered, and the longest lock (`LOGIN_FAILURE_WINDOW_SECS`).
    pub window: Duration,
}

/// KEYS: email -> id, the email's failure counter, the (email, IP) hash (`n`, `until`).
/// ARGV: pair max, email max, lock base (ms), window (s), now (ms).
/// Returns {id|false, 0, 0} when admitted, or {id|false, 1, retry-after secs} when refused.
/// All-or-nothing: types and integers are checked before the first write.
static RESERVE: LazyLock<Script> = LazyLock::new(|| {
    script::atomic(
        r#"
local bad = wrong_types({KEYS[1], 'string', KEYS[2], 'string', KEYS[3], 'hash'})
  or not_integers(KEYS[3], {'n', 'until'})
if bad then return redis.error_reply(bad) end
local stored = redis.call('GET', KEYS[2])
if stored and not string.match(stored, '^%-?%d+$') then
  return redis.error_reply('WRONGTYPE ' .. KEYS[2] .. ' is not an integer')
end
local id = redis.call('GET', KEYS[1])
local now = tonumber(ARGV[5])
local window = tonumber(ARGV[4])
local untl = tonumber(redis.call('HGET', KEYS[3], 'until') or '0')
if untl > now then return {id or false, 1, math.ceil((untl - now) / 1000)} end
if tonumber(stored or '0') >= tonumber(ARGV[2]) then
  return {id or false, 1, math.max(redis.call('TTL', KEYS[2]), 1)}
end
if redis.call('INCR', KEYS[2]) == 1 then redis.call('EXPIRE', KEYS[2], window) end
local n = redis.call('HINCRBY', KEYS[3], 'n', 1)
local max = tonumber(ARGV[1])
if n >= max then
  local delay = math.min(tonumber(ARGV[3]) * 2 ^ (n - max), window * 1000)
  redis.call('HSET', KEYS[3], 'until', now + delay)
end
redis.call('EXPIRE', KEYS[3], window)
return {id or false, 0, 0}
"#,
    )
});

/// Looks up the user id for `email` and reserves one login attempt from `ip`: one round
/// trip. `Err(LoginLocked)` (429 with Retry-After) while this (email, IP) pair is locked
/// or the email's ceiling is reached. The attempt that reaches `max_failures` is still
/// verified; it is the next one that is refused.
pub async fn reserve(store: &Store, email: &str, ip: &str, limits: Limits) -> Result<Option<String>, AppError> {
    let (user_id, refused, retry): (Option<String>, i64, i64) = RESERVE
        .key(keys::email(email))
        .key(keys::login_failures(email))
        .key(keys::login_failures_from(email, ip))
        .arg(limits.max_failures)
        .arg(limits.email_max_failures)
        .arg(u64::try_from(limits.lock_base.as_millis()).unwrap_or(u64::MAX))
        .arg(limits.window.as_secs())
        .arg(session::now_millis())
        .invoke_async(&mut store.conn())
        .await?;
    if refused == 1 {
        return Err(AppError::LoginLocked(u64::try_from(retry.max(1)).unwrap_or(1)));
    }
    Ok(user_id)
}

/// Adds "forget this address's failures" to the pipeline that completes a successful
/// login. The email's counter is left alone: it is the ceiling against many addresses.
pub fn clear(pipe: &mut redis::Pipeline, email: &str, ip: &str) {
    pipe.del(keys::login_failures_from(email, ip)).ignore();
}
