//! Redis side of the preferences routes: reading and changing one user's preferences,
//! the phone verification, and the unsubscribe link. Each change is one script in the
//! user's slot that checks every key's type before its first write.

use std::{collections::HashMap, sync::LazyLock, time::Duration};

use devconnect::{keys, rate_limit::RateDecision, script, store::Store, AppError};
use redis::Script;

use crate::preferences::{Changes, Preferences};

/// How long a verification code is valid.
pub const CODE_TTL: Duration = Duration::from_secs(10 * 60);

/// Wrong codes allowed per code; the next wrong one discards it (set the number again).
pub const MAX_CODE_ATTEMPTS: u32 = 5;

/// Codes sent to one user per day: each is an SMS we pay for and someone's phone buzzing.
pub const MAX_CODES_PER_DAY: u32 = 5;

/// Reads preferences and the pending number (if its code has not expired).
static READ: LazyLock<Script> = LazyLock::new(|| {
    script::atomic(
        r#"
local bad = wrong_types({KEYS[1], 'hash', KEYS[2], 'hash'})
if bad then return redis.error_reply(bad) end
return {redis.call('HGETALL', KEYS[1]), redis.call('HGET', KEYS[2], 'number') or ''}
"#,
    )
});

/// KEYS: preferences, verification, codes sent. ARGV: now ms, code TTL ms, max codes per
/// day, phone op ('' keep, 'clear', 'set'), number, code hash, number of fields to set,
/// then field/value pairs, then fields to delete. Returns {status, prefs, pending number,
/// codes sent, ttl}: status 'ok', 'same' (the number is already verified: no code) or
/// 'limited' (nothing written).
static SAVE: LazyLock<Script> = LazyLock::new(|| {
    script::atomic(
        r#"
local bad = wrong_types({KEYS[1], 'hash', KEYS[2], 'hash', KEYS[3], 'string'})
if bad then return redis.error_reply(bad) end
local sent = tonumber(redis.call('GET', KEYS[3]) or '0')
if sent == nil then return redis.error_reply('WRONGTYPE ' .. KEYS[3] .. ' is not an integer') end
local op, number = ARGV[4], ARGV[5]
local status = 'ok'
if op == 'set' and redis.call('HGET', KEYS[1], 'phone') == number then
  op = 'same'
  status = 'same'
end
if op == 'set' and sent >= tonumber(ARGV[3]) then
  return {'limited', {}, '', sent, redis.call('TTL', KEYS[3])}
end
local n = tonumber(ARGV[7])
for i = 8, 7 + 2 * n, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
for i = 8 + 2 * n, #ARGV do redis.call('HDEL', KEYS[1], ARGV[i]) end
if op == 'clear' then
  redis.call('HDEL', KEYS[1], 'phone')
  redis.call('DEL', KEYS[2])
elseif op == 'same' then
  redis.call('DEL', KEYS[2])
elseif op == 'set' then
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[2], 'number', number, 'code', ARGV[6], 'attempts', 0)
  redis.call('PEXPIRE', KEYS[2], tonumber(ARGV[2]))
  sent = redis.call('INCR', KEYS[3])
  if sent == 1 then redis.call('EXPIRE', KEYS[3], 86400) end
end
return {status, redis.call('HGETALL', KEYS[1]), redis.call('HGET', KEYS[2], 'number') or '', sent, 0}
"#,
    )
});

/// KEYS: preferences, verification. ARGV: code hash, max attempts. Returns {status,
/// attempts left}: 'verified', 'none' (nothing pending or expired), 'wrong', 'exhausted'
/// (that was the last attempt: the pending number is discarded).
static VERIFY: LazyLock<Script> = LazyLock::new(|| {
    script::atomic(
        r#"
local bad = wrong_types({KEYS[1], 'hash', KEYS[2], 'hash'}) or not_integers(KEYS[2], {'attempts'})
if bad then return redis.error_reply(bad) end
local p = redis.call('HMGET', KEYS[2], 'number', 'code', 'attempts')
if not p[1] then return {'none', 0} end
if p[2] == ARGV[1] then
  redis.call('HSET', KEYS[1], 'phone', p[1])
  redis.call('DEL', KEYS[2])
  return {'verified', 0}
end
local attempts = redis.call('HINCRBY', KEYS[2], 'attempts', 1)
local left = tonumber(ARGV[2]) - attempts
if left <= 0 then
  redis.call('DEL', KEYS[2])
  return {'exhausted', 0}
end
return {'wrong', left}
"#,
    )
});

/// KEYS: user record, preferences. ARGV: field. Turns the field off if the user exists.
static UNSUBSCRIBE: LazyLock<Script> = LazyLock::new(|| {
    script::atomic(
        r#"
local bad = wrong_types({KEYS[1], 'hash', KEYS[2], 'hash'})
if bad then return redis.error_reply(bad) end
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[2], ARGV[1], '0')
return 1
"#,
    )
});

fn fields(pairs: Vec<String>) -> HashMap<String, String> {
    pairs.chunks_exact(2).map(|p| (p[0].clone(), p[1].clone())).collect()
}

/// A user's preferences and the number waiting for a code: one round trip.
pub async fn read(store: &Store, user_id: &str) -> Result<(Preferences, Option<String>), AppError> {
    let (prefs, pending): (Vec<String>, String) = READ
        .key(keys::channel_preferences(user_id))
        .key(keys::phone_verification(user_id))
        .invoke_async(&mut store.conn())
        .await?;
    Ok((
        Preferences::from_fields(fields(prefs)),
        Some(pending).filter(|p| !p.is_empty()),
    ))
}

/// What [`save`] did.
#[derive(Debug)]
pub struct Saved {
    /// The preferences after the change.
    pub preferences: Preferences,
    /// The number now waiting for its code.
    pub pending_phone: Option<String>,
    /// Whether a new code was stored (and must be sent).
    pub code_issued: bool,
}

/// Applies validated changes in one script; `code_hash` is the hash of the code to send
/// when the update sets a new number. 429 (nothing written) past [`MAX_CODES_PER_DAY`].
pub async fn save(store: &Store, user_id: &str, changes: &Changes, code_hash: &str) -> Result<Saved, AppError> {
    let (op, number) = match &changes.phone {
        None => ("", ""),
        Some(None) => ("clear", ""),
        Some(Some(n)) => ("set", n.as_str()),
    };
    let mut call = SAVE.key(keys::channel_preferences(user_id));
    call.key(keys::phone_verification(user_id))
        .key(keys::phone_codes_sent(user_id))
        .arg(devconnect::clock::now_ms())
        .arg(CODE_TTL.as_millis() as u64)
        .arg(MAX_CODES_PER_DAY)
        .arg(op)
        .arg(number)
        .arg(code_hash)
        .arg(changes.set.len());
    for (field, value) in &changes.set {
        call.arg(field).arg(value);
    }
    for field in &changes.delete {
        call.arg(field);
    }
    let (status, prefs, pending, sent, ttl): (String, Vec<String>, String, i64, i64) =
        call.invoke_async(&mut store.conn()).await?;
    if status == "limited" {
        // Counts as one over the limit so the 429 carries Retry-After until the day's counter expires.
        RateDecision::judge(MAX_CODES_PER_DAY, sent + 1, ttl)?;
    }
    Ok(Saved {
        preferences: Preferences::from_fields(fields(prefs)),
        pending_phone: Some(pending).filter(|p| !p.is_empty()),
        code_issued: status == "ok" && op == "set",
    })
}

/// The outcome of a verification attempt.
#[derive(Debug, PartialEq, Eq)]
pub enum Verification {
    /// The number is now the verified phone.
    Verified,
    /// No number is waiting (never set, expired, or discarded).
    NothingPending,
    /// Wrong code; this many attempts left.
    Wrong(u32),
    /// Wrong code and no attempts left: the pending number was discarded.
    Exhausted,
}

/// Checks a code in one script.
pub async fn verify(store: &Store, user_id: &str, code_hash: &str) -> Result<Verification, AppError> {
    let (status, left): (String, u32) = VERIFY
        .key(keys::channel_preferences(user_id))
        .key(keys::phone_verification(user_id))
        .arg(code_hash)
        .arg(MAX_CODE_ATTEMPTS)
        .invoke_async(&mut store.conn())
        .await?;
    Ok(match status.as_str() {
        "verified" => Verification::Verified,
        "wrong" => Verification::Wrong(left),
        "exhausted" => Verification::Exhausted,
        _ => Verification::NothingPending,
    })
}

/// Turns `field` off for the user (if they exist); `false` if they do not.
pub async fn unsubscribe(store: &Store, user_id: &str, field: &str) -> Result<bool, AppError> {
    let done: i64 = UNSUBSCRIBE
        .key(keys::user(user_id))
        .key(keys::channel_preferences(user_id))
        .arg(field)
        .invoke_async(&mut store.conn())
        .await?;
    Ok(done == 1)
}
