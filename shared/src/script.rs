//! Lua scripts that are all-or-nothing.
//!
//! Redis does not roll back a script that fails half-way: every write made before the
//! error stays. An effect and its idempotency marker written by one script must
//! therefore both happen or neither, so every script checks what it can fail on
//! (the type of each key it touches, numbers it increments) before its first write.
//! [`atomic`] prepends the checks' Lua helpers; a script calls them first:
//!
//! ```lua
//! local bad = wrong_types({KEYS[1], 'list', KEYS[2], 'hash'})
//!   or not_integers(KEYS[2], {'unread'})
//! if bad then return redis.error_reply(bad) end
//! -- writes only from here on
//! ```

use redis::{Arg, Cmd, Pipeline, Script, ServerErrorKind, Value};

use crate::{store::Store, AppError};

/// Lua helpers every script may call before its first write. `wrong_types`,
/// `not_hyperloglogs` and `not_integers` return `nil` when the precondition holds, or the
/// error text (starting with `WRONGTYPE`, so callers classify it like Redis's own type
/// errors). `read(cmd, key, ...)` is a read that is also its key's type check (Redis
/// refuses a read of the wrong type, so a script whose reads all come before its first
/// write needs no TYPE per key; the first write itself may go through it too, since a
/// refused command writes nothing) and `integer(key, field, value)` checks a value read;
/// both raise the same kind of error, naming the key. Dedupe sets (a sorted set of ids
/// scored by when each was applied): `seen_since(set, ids, horizon)` says which ids it
/// holds newer than `horizon` (a read: also the set's type check), and, after the
/// checks, `remember(set, marks, horizon, max)` adds `marks` (score, id, score, id, ...)
/// and trims the set to the window and to its newest `max` ids, only when it grew.
const PRECONDITIONS: &str = r#"
local function wrong_types(spec)
  for i = 1, #spec, 2 do
    local t = redis.call('TYPE', spec[i]).ok
    if t ~= 'none' and t ~= spec[i + 1] then
      return 'WRONGTYPE ' .. spec[i] .. ' holds a ' .. t .. ', not a ' .. spec[i + 1]
    end
  end
  return nil
end
local function not_hyperloglogs(keys)
  for _, k in ipairs(keys) do
    local t = redis.call('TYPE', k).ok
    if t ~= 'none' and (t ~= 'string' or redis.call('GETRANGE', k, 0, 3) ~= 'HYLL') then
      return 'WRONGTYPE ' .. k .. ' is not a HyperLogLog'
    end
  end
  return nil
end
local function read(cmd, key, ...)
  local ok, reply = pcall(redis.call, cmd, key, ...)
  if ok then return reply end
  local why = type(reply) == 'table' and reply.err or tostring(reply)
  if string.sub(why, 1, 9) == 'WRONGTYPE' then
    why = 'WRONGTYPE ' .. key .. ' holds the wrong kind of value for ' .. cmd
  end
  error(redis.error_reply(why))
end
local function seen_since(set, ids, horizon)
  local known = {}
  for c = 1, #ids, 1000 do
    local scores = read('ZMSCORE', set, unpack(ids, c, math.min(c + 999, #ids)))
    for j = 1, #scores do known[c + j - 1] = scores[j] ~= false and tonumber(scores[j]) > horizon end
  end
  return known
end
local function remember(set, marks, horizon, max)
  if #marks == 0 then return end
  redis.call('ZREMRANGEBYSCORE', set, '-inf', string.format('%d', horizon))
  for c = 1, #marks, 1000 do redis.call('ZADD', set, unpack(marks, c, math.min(c + 999, #marks))) end
  redis.call('ZREMRANGEBYRANK', set, '0', string.format('%d', -(max + 1)))
end
local function not_integer(key, field, value)
  if value and not string.match(value, '^%-?%d+$') then
    return 'WRONGTYPE ' .. key .. ' field ' .. field .. ' is not an integer'
  end
  return nil
end
local function integer(key, field, value)
  local bad = not_integer(key, field, value)
  if bad then error(redis.error_reply(bad)) end
  return tonumber(value or '0')
end
local function not_integers(key, fields)
  if #fields == 0 then return nil end
  local values = redis.call('HMGET', key, unpack(fields))
  for i, v in ipairs(values) do
    local bad = not_integer(key, fields[i], v)
    if bad then return bad end
  end
  return nil
end
"#;

/// A script whose body may call the precondition helpers above.
pub fn atomic(body: &str) -> Script {
    Script::new(&format!("{PRECONDITIONS}\n{body}"))
}

/// The Rust-side twin of `wrong_types`, for writes that span hash slots (one user's
/// record and another user's projections): no script can check those atomically with
/// the write, so the types are read in a round trip the request makes anyway, before
/// its first write. `actual` is the reply of `TYPE key`.
pub fn expect_type(key: &str, actual: &str, expected: &str) -> Result<(), AppError> {
    if actual == "none" || actual == expected {
        Ok(())
    } else {
        Err(AppError::bug(format!(
            "WRONGTYPE {key} holds a {actual}, not a {expected}"
        )))
    }
}

/// An EVALSHA of `script` with `numkeys` keys, for the caller to append the keys and
/// arguments to; send it with [`query_loaded`]. Written straight into one command: a
/// `ScriptInvocation` would hold each argument in a buffer of its own and copy them all
/// again into the command, which counts in a batch call of thousands of arguments.
pub fn evalsha(script: &Script, numkeys: usize) -> Cmd {
    let mut cmd = redis::cmd("EVALSHA");
    cmd.arg(script.get_hash()).arg(numkeys);
    cmd
}

/// Sends `pipe` (built with `ignore_errors` and no ignored commands; EVALSHAs of `scripts`
/// among its commands) and returns one reply per command, error replies as
/// `Value::ServerError`. No `SCRIPT LOAD` rides along (hashing the script text costs
/// Redis on every call). An EVALSHA a node answers NOSCRIPT (a new server, a failover)
/// did nothing, so only those are sent again, in a second round trip behind the loads of
/// their scripts, and their replies take the NOSCRIPT ones' places. Every other command
/// ran once and is not repeated (an INCR beside a script counts once); a command placed
/// after a re-sent script therefore ran before it, not after.
pub async fn query_loaded(store: &Store, pipe: &Pipeline, scripts: &[&Script]) -> Result<Vec<Value>, AppError> {
    let mut replies: Vec<Value> = pipe.query_async(&mut store.conn()).await?;
    let missed: Vec<usize> = (0..replies.len()).filter(|&i| is_noscript(&replies[i])).collect();
    if missed.is_empty() {
        return Ok(replies);
    }
    let commands: Vec<&Cmd> = pipe.cmd_iter().collect();
    if commands.len() != replies.len() {
        return Err(AppError::bug("query_loaded: a pipeline with ignored commands"));
    }
    let mut again = redis::pipe();
    again.ignore_errors();
    for script in scripts {
        let hash = script.get_hash().as_bytes();
        if missed.iter().any(|&i| sha_of(commands[i]) == Some(hash)) {
            again.load_script(script).ignore();
        }
    }
    for &i in &missed {
        again.add_command(commands[i].clone());
    }
    let retried: Vec<Value> = again.query_async(&mut store.conn()).await?;
    for (i, reply) in missed.into_iter().zip(retried) {
        replies[i] = reply;
    }
    Ok(replies)
}

/// The script hash an EVALSHA names (its first argument).
fn sha_of(cmd: &Cmd) -> Option<&[u8]> {
    match cmd.args_iter().nth(1)? {
        Arg::Simple(bytes) => Some(bytes),
        _ => None,
    }
}

/// The parts of a reply of a script call that applies many recipients, one per recipient
/// in order: a recipient's result (an array), or the reason their keys could not be
/// written (a string: the script refused before their first write, so the failure is
/// theirs alone and permanent). An error reply, or a reply of another shape, fails the
/// whole call; `what` names the script in that error.
pub fn recipient_parts(
    call_reply: Value,
    recipients: usize,
    what: &str,
) -> Result<Vec<Result<Vec<Value>, AppError>>, AppError> {
    match reply::<Value>(call_reply)? {
        Value::Array(parts) if parts.len() == recipients => Ok(parts
            .into_iter()
            .map(|part| match part {
                Value::Array(values) => Ok(values),
                Value::BulkString(reason) => Err(AppError::bug(String::from_utf8_lossy(&reason).into_owned())),
                other => Err(AppError::bug(format!("{what} reply part {other:?}"))),
            })
            .collect()),
        other => Err(AppError::bug(format!("{what} reply {other:?}"))),
    }
}

/// True for the reply of an EVALSHA whose script the node does not hold (a new server,
/// a failover): the script did not run.
pub fn is_noscript(reply: &Value) -> bool {
    matches!(reply, Value::ServerError(e) if e.kind() == Some(ServerErrorKind::NoScript))
}

/// One reply of a pipeline sent with `ignore_errors`, as `T`; an error reply becomes the
/// Redis error it is (classified by `AppError`'s `From`).
pub fn reply<T: redis::FromRedisValue>(value: Value) -> Result<T, AppError> {
    let parsed: redis::RedisResult<T> =
        redis::from_redis_value(value).map_err(|e| AppError::bug(format!("unexpected Redis reply: {e}")))?;
    Ok(parsed?)
}
