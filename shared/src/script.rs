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

use redis::{Pipeline, Script, ServerErrorKind, Value};

use crate::{store::Store, AppError};

/// Lua helpers every script may call before its first write. Each returns `nil`
/// when the precondition holds, or the error text (starting with `WRONGTYPE`, so
/// callers classify it like Redis's own type errors).
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
local function not_integers(key, fields)
  if #fields == 0 then return nil end
  local values = redis.call('HMGET', key, unpack(fields))
  for i, v in ipairs(values) do
    if v and not string.match(v, '^%-?%d+$') then
      return 'WRONGTYPE ' .. key .. ' field ' .. fields[i] .. ' is not an integer'
    end
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

/// Sends `pipe` (built with `ignore_errors` and no ignored commands; EVALSHAs of `scripts`
/// among its commands) and returns one reply per command, error replies as
/// `Value::ServerError`. No `SCRIPT LOAD` rides along (hashing the script text costs
/// Redis on every call): only if a node answers NOSCRIPT (a new server, a failover) is
/// the pipeline sent again with the scripts loaded in front, so every other command in
/// it must be harmless to repeat.
pub async fn query_loaded(store: &Store, pipe: &Pipeline, scripts: &[&Script]) -> Result<Vec<Value>, AppError> {
    let replies: Vec<Value> = pipe.query_async(&mut store.conn()).await?;
    if !replies.iter().any(is_noscript) {
        return Ok(replies);
    }
    let mut again = redis::pipe();
    again.ignore_errors();
    for script in scripts {
        again.load_script(script).ignore();
    }
    for cmd in pipe.cmd_iter() {
        again.add_command(cmd.clone());
    }
    Ok(again.query_async(&mut store.conn()).await?)
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
