//! Bearer-token sessions, and the one-round-trip authentication of a request.
//!
//! A token is `<userId>.<secret>`: the secret is 256 random bits (base64url), and
//! Redis stores only the SHA-256 of the whole token, so a leaked dump holds no
//! usable credential. Carrying the user id in the token lets the session key, the
//! user record and the user's rate-limit counter share one hash slot, so one pipeline
//! of plain commands reads the session and the user's tier (or whole record) and counts
//! the request: one Redis round trip per authenticated request, decided here in Rust.
//! Plain commands, not a script: Redis spends about a third of the CPU on them that
//! the same work costs it inside Lua (issue 14).

use std::{collections::HashMap, sync::LazyLock, time::Duration};

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use rand::RngCore;
use redis::{Pipeline, Script, Value};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::{
    config::RateLimits,
    error::AppError,
    keys,
    rate_limit::{RateDecision, Tier, Window},
    script,
    store::Store,
};

/// Name of the HttpOnly cookie that carries the token for browser clients. The `__Host-`
/// prefix makes browsers accept it only with `Secure`, `Path=/` and no `Domain`, so a
/// sibling subdomain or a plain-http page cannot plant or overwrite it.
pub const COOKIE_NAME: &str = "__Host-dc_session";

/// The cookie's name when `COOKIE_SECURE=false` (plain-http local development only):
/// browsers drop a `__Host-` cookie that lacks `Secure`, so the insecure cookie cannot
/// carry the prefix. It is read only while `COOKIE_SECURE=false` (see
/// [`crate::AppState::authenticate`]), never in AWS.
pub const LOCAL_COOKIE_NAME: &str = "dc_session";

/// Default of `SESSION_IDLE_TIMEOUT_SECS`, for callers without a [`crate::config::Config`] at hand.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(1_800);

/// How long a WebSocket ticket ([`issue_ticket`]) stays redeemable.
pub const TICKET_TTL: Duration = Duration::from_secs(30);

const SECRET_BYTES: usize = 32;

/// KEYS: a session. ARGV: now (ms). Moves `lastUsedAt` of a session that is still live.
/// A script only so that it never brings back a session that ended since it was read
/// (a plain HSET after a logout's DEL would recreate it, without its TTL). It runs at
/// most once per [`last_used_step`] per session.
static TOUCH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if redis.call('HEXISTS', KEYS[1], 'lastUsedAt') == 1 then
  redis.call('HSET', KEYS[1], 'lastUsedAt', ARGV[1])
end
return 0
"#,
    )
});

/// KEYS: the user's session index, the user record. ARGV: the session key prefix
/// (`keys::session(user, "")`), the session id to keep (or ''), a new password hash
/// (or ''). Ends every indexed session but the kept one and returns the ids that were
/// still live; with a password hash, stores it in the same step, so a password change
/// and the end of the other sessions happen together or not at all. The session keys
/// are built from the prefix: they share the index's hash tag, so this stays in one slot.
static END_SESSIONS: LazyLock<Script> = LazyLock::new(|| {
    script::atomic(
        r#"
local bad = wrong_types({KEYS[1], 'zset', KEYS[2], 'hash'})
if bad then return redis.error_reply(bad) end
if ARGV[3] ~= '' then
  if redis.call('EXISTS', KEYS[2]) == 0 then return redis.error_reply('NOUSER') end
  redis.call('HSET', KEYS[2], 'passwordHash', ARGV[3])
end
local ended = {}
for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  if id ~= ARGV[2] then
    if redis.call('DEL', ARGV[1] .. id) == 1 then table.insert(ended, id) end
    redis.call('ZREM', KEYS[1], id)
  end
end
return ended
"#,
    )
});

/// KEYS: one session, the user's session index. ARGV: its id. 1 if it was live.
static END_ONE: LazyLock<Script> = LazyLock::new(|| {
    script::atomic(
        r#"
local bad = wrong_types({KEYS[2], 'zset'})
if bad then return redis.error_reply(bad) end
redis.call('ZREM', KEYS[2], ARGV[1])
return redis.call('DEL', KEYS[1])
"#,
    )
});

/// A freshly issued token and the Redis key that makes it valid.
#[derive(Debug)]
pub struct IssuedToken {
    /// Given to the client once; never stored.
    pub token: String,
    /// Where the session lives ([`start`] activates it; `SET key 1 EX ttl` also works,
    /// without idle tracking or a place in the session list).
    pub key: String,
    /// The session id: the token's SHA-256 (hex), as in [`keys::session`].
    pub id: String,
    /// Whose session it is.
    pub user_id: String,
}

/// Mints a token for `user_id`. Nothing is stored until the caller writes `key`.
pub fn issue(user_id: &str) -> IssuedToken {
    let mut secret = [0u8; SECRET_BYTES];
    rand::rngs::OsRng.fill_bytes(&mut secret);
    let token = format!("{user_id}.{}", URL_SAFE_NO_PAD.encode(secret));
    let id = hash(&token);
    let key = keys::session(user_id, &id);
    IssuedToken {
        token,
        key,
        id,
        user_id: user_id.to_string(),
    }
}

/// Hex SHA-256: session ids and ticket keys, so Redis never holds a usable credential.
pub fn hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// How stale `lastUsedAt` may get before a request rewrites it: a quarter of the idle
/// timeout, at most a minute.
pub fn last_used_step(idle: Duration) -> Duration {
    (idle / 4).min(Duration::from_secs(60))
}

/// Milliseconds since the epoch, from the wall clock.
pub fn now_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Longest user agent kept on a session (it is shown back, never trusted).
const MAX_USER_AGENT_CHARS: usize = 256;

/// Adds "activate this session" to the pipeline that completes a signup or login: the
/// session hash with its absolute TTL, and its entry in the user's session index
/// (expired entries pruned on the way). The writes replace or add to keys of this user
/// only; a concurrent login adds its own entry.
pub fn start(pipe: &mut redis::Pipeline, issued: &IssuedToken, user_agent: &str, ttl: Duration) {
    let now = now_millis();
    let ttl_secs = ttl.as_secs();
    let expires = now.saturating_add(ttl_secs.saturating_mul(1_000));
    let agent: String = user_agent.chars().take(MAX_USER_AGENT_CHARS).collect();
    let index = keys::sessions(&issued.user_id);
    pipe.del(&issued.key)
        .ignore()
        .hset_multiple(
            &issued.key,
            &[
                ("createdAt", now.to_string()),
                ("lastUsedAt", now.to_string()),
                ("userAgent", agent),
            ],
        )
        .ignore()
        .expire(&issued.key, i64::try_from(ttl_secs).unwrap_or(i64::MAX))
        .ignore()
        .zrembyscore(&index, "-inf", now)
        .ignore()
        .zadd(&index, &issued.id, expires)
        .ignore()
        .expire(&index, i64::try_from(ttl_secs).unwrap_or(i64::MAX))
        .ignore();
}

/// A token split into its parts, after checking its shape (no Redis needed to reject garbage).
#[derive(Debug, PartialEq, Eq)]
pub struct ParsedToken<'a> {
    /// The user the token claims to belong to.
    pub user_id: &'a str,
    /// The whole token, for hashing.
    pub token: &'a str,
}

impl<'a> ParsedToken<'a> {
    /// Accepts only `<uuid>.<43 base64url chars>`.
    pub fn parse(token: &'a str) -> Result<Self, AppError> {
        let invalid = || AppError::Unauthorized("missing or invalid token");
        let (user_id, secret) = token.split_once('.').ok_or_else(invalid)?;
        let secret_ok = secret.len() == 43 && URL_SAFE_NO_PAD.decode(secret).is_ok_and(|b| b.len() == SECRET_BYTES);
        if Uuid::parse_str(user_id).is_err() || !secret_ok {
            return Err(invalid());
        }
        Ok(Self { user_id, token })
    }

    /// The Redis key of this token's session.
    pub fn session_key(&self) -> String {
        keys::session(self.user_id, &hash(self.token))
    }
}

/// The caller of an authenticated request.
#[derive(Debug)]
pub struct Principal {
    /// The signed-in user.
    pub user_id: String,
    /// Their plan, which picked their rate limit.
    pub tier: Tier,
    /// The rate-limit outcome, for response headers.
    pub rate: RateDecision,
    /// The user's record, when the route asked for it.
    pub user: Option<HashMap<String, String>>,
    /// The session key, so logout can delete it without re-hashing.
    pub session_key: String,
    /// The session id (the token hash): what GET /sessions calls `id` and USER_LOGOUT `sessionIds`.
    pub session_id: String,
}

/// Whether authentication should also return the user's record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WithUser {
    /// Return the whole record (POST /auth/password: the password hash).
    Yes,
    /// Return the record without the password hash ([`crate::user::PROFILE_FIELDS`]; GET
    /// and PATCH /profile): the hash is the largest field, and naming the fields leaves
    /// their names out of the reply, so the gateway parses half the strings.
    Profile,
    /// Only authenticate and count.
    No,
}

/// Authenticates `token` and counts the request against the user's rate limit: one round
/// trip. Applies the default idle timeout; [`authenticate_idle`] takes the configured one.
pub async fn authenticate(
    store: &Store,
    limits: &RateLimits,
    token: Option<&str>,
    with_user: WithUser,
) -> Result<Principal, AppError> {
    authenticate_idle(store, limits, DEFAULT_IDLE_TIMEOUT, token, with_user).await
}

/// Authenticates `token`, ends it if it went unused for longer than `idle`, moves its
/// "last used" time and counts the request against the user's rate limit: one round trip
/// (a refusal costs one more, see [`Refused`]).
pub async fn authenticate_idle(
    store: &Store,
    limits: &RateLimits,
    idle: Duration,
    token: Option<&str>,
    with_user: WithUser,
) -> Result<Principal, AppError> {
    match check(store, limits, idle, token, with_user, |_, _| ()).await? {
        Checked::Admitted(principal, _) => Ok(principal),
        Checked::Refused(refused) => Err(refused.settle(store, limits, None).await),
    }
}

/// What the authentication round trip found.
#[derive(Debug)]
pub enum Checked {
    /// A live session within its limit: the caller, and the replies of the commands
    /// [`check`]'s `also` added, in order (error replies included, as `Value::ServerError`).
    Admitted(Principal, Vec<Value>),
    /// No live session behind the token.
    Refused(Refused),
}

/// A token that did not authenticate. Its request was counted against the user the token
/// names before the session was known to be dead (the count shares the round trip), so
/// [`Refused::settle`] takes it back: a forged token for someone's id never spends their
/// limit. While the two round trips are in flight, that user's counter is one higher per
/// forged request in flight; nothing else remains of it.
#[derive(Debug)]
#[must_use = "a refused request was counted against a user until it is settled"]
pub struct Refused {
    undo: Pipeline,
}

impl Refused {
    /// Takes the count back and deletes a session that went idle, in one round trip (none
    /// if there is nothing to undo), with, given `ip`, the failure counted against that
    /// address's anonymous bucket in the same trip. Returns what to answer: 401, or 429
    /// past the address's bucket, or the Redis error.
    pub async fn settle(self, store: &Store, limits: &RateLimits, ip: Option<&str>) -> AppError {
        let mut pipe = self.undo;
        let window = ip.map(|ip| Window::ip(ip, limits));
        if let Some(window) = &window {
            window.count(&mut pipe);
        }
        if pipe.is_empty() {
            return unauthorized();
        }
        let counts: Vec<i64> = match pipe.query_async(&mut store.conn()).await {
            Ok(counts) => counts,
            Err(e) => return e.into(),
        };
        match (window, counts.first()) {
            (Some(window), Some(&count)) => match window.judge(Tier::Anonymous.limit(limits), count) {
                Err(limited) => limited,
                Ok(_) => unauthorized(),
            },
            _ => unauthorized(),
        }
    }
}

fn unauthorized() -> AppError {
    AppError::Unauthorized("missing or invalid token")
}

/// The authentication round trip: `HGET` the session's `lastUsedAt`, `HGET` the user's
/// tier (or `HGETALL` the record), count the request ([`Window::count`]), and whatever
/// `also` adds, given the user id the token names (reads the route makes before its first
/// write, e.g. POST /messages' checks; they may name other slots, and they are made for a
/// token that turns out dead too, so they must be reads). Everything is read, then decided here:
///
/// - the session is a hash whose `lastUsedAt` is within `idle` (or a string: sessions
///   from before hashes, and test fixtures, `SET key 1`; accepted without idle tracking
///   until their TTL ends them; any other type at a session key could only be reached
///   with the token that names it, so a `WRONGTYPE` reply counts as such a session);
/// - the user record exists and has a tier;
/// - the count is within the tier's limit (else 429, the count stays).
///
/// A dead token is [`Checked::Refused`]. A hash session whose `lastUsedAt` is a
/// [`last_used_step`] old is moved ([`TOUCH`]): one more round trip, at most once per
/// step per session. A Redis error anywhere (the counter or user record of the wrong
/// type) fails the request and writes nothing but what the count's undo leaves: the
/// counter as it was, with a TTL.
pub async fn check(
    store: &Store,
    limits: &RateLimits,
    idle: Duration,
    token: Option<&str>,
    with_user: WithUser,
    also: impl FnOnce(&mut Pipeline, &str),
) -> Result<Checked, AppError> {
    let Ok(parsed) = ParsedToken::parse(token.unwrap_or_default()) else {
        return Ok(Checked::Refused(Refused { undo: redis::pipe() }));
    };
    let session_id = hash(parsed.token);
    let session_key = keys::session(parsed.user_id, &session_id);
    let user_key = keys::user(parsed.user_id);
    let window = Window::user(parsed.user_id, limits);
    let mut pipe = redis::pipe();
    pipe.ignore_errors().hget(&session_key, "lastUsedAt");
    match with_user {
        WithUser::Yes => pipe.hgetall(&user_key),
        WithUser::Profile => pipe.cmd("HMGET").arg(&user_key).arg(&crate::user::PROFILE_FIELDS[..]),
        WithUser::No => pipe.hget(&user_key, "tier"),
    };
    window.count(&mut pipe);
    also(&mut pipe, parsed.user_id);
    let replies: Vec<Value> = pipe.query_async(&mut store.conn()).await?;
    let mut replies = replies.into_iter();
    let mut next = || {
        replies
            .next()
            .ok_or_else(|| AppError::bug("a reply missing from the authentication pipeline"))
    };
    let (session, user, count) = (next()?, next()?, next()?);
    let also: Vec<Value> = replies.collect();

    let count: i64 = script::reply(count)?;
    let mut undo = redis::pipe();
    window.uncount(&mut undo);
    let now = now_millis();
    let session = match Session::of(session, now, idle) {
        Ok(session) => session,
        Err(e) => return Err(settle_error(store, undo, e).await),
    };
    let record = match user_reply(user, with_user) {
        Ok(record) => record,
        Err(e) => return Err(settle_error(store, undo, e).await),
    };
    let (tier, user) = match (session, record) {
        (Session::Dead, _) | (_, None) => return Ok(Checked::Refused(Refused { undo })),
        (Session::Idle, _) => {
            undo.del(&session_key).ignore();
            return Ok(Checked::Refused(Refused { undo }));
        }
        (Session::Live { .. }, Some(record)) => record,
    };
    if let Session::Live { last_used: Some(last) } = session {
        if now.saturating_sub(last) >= u64::try_from(last_used_step(idle).as_millis()).unwrap_or(u64::MAX) {
            TOUCH
                .key(&session_key)
                .arg(now)
                .invoke_async::<()>(&mut store.conn())
                .await?;
        }
    }
    let rate = window.judge(tier.limit(limits), count)?;
    Ok(Checked::Admitted(
        Principal {
            user_id: parsed.user_id.to_string(),
            tier,
            rate,
            user,
            session_key,
            session_id,
        },
        also,
    ))
}

/// The request failed after it was counted: take the count back (best effort; the
/// failure is what the caller answers) and return `e`.
async fn settle_error(store: &Store, undo: Pipeline, e: AppError) -> AppError {
    if let Err(undo_error) = undo.query_async::<()>(&mut store.conn()).await {
        tracing::warn!(error = %undo_error, "rate-limit count of a failed request not taken back");
    }
    e
}

/// What the session key held.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Session {
    /// Live: a hash used `last_used` (ms), or a string session (`None`: no idle tracking).
    Live { last_used: Option<u64> },
    /// A hash unused for longer than the idle timeout: to be deleted.
    Idle,
    /// Nothing (or a hash without `lastUsedAt`, which no session is written as).
    Dead,
}

impl Session {
    fn of(value: Value, now: u64, idle: Duration) -> Result<Self, AppError> {
        match value {
            Value::ServerError(e) if e.code() == "WRONGTYPE" => Ok(Self::Live { last_used: None }),
            other => match script::reply::<Option<String>>(other)? {
                None => Ok(Self::Dead),
                Some(last) => {
                    // An unreadable time counts as never used, as the idle check would say.
                    let last = last.parse::<u64>().unwrap_or(0);
                    let idle_ms = u64::try_from(idle.as_millis()).unwrap_or(u64::MAX);
                    Ok(match now.saturating_sub(last) > idle_ms {
                        true => Self::Idle,
                        false => Self::Live { last_used: Some(last) },
                    })
                }
            },
        }
    }
}

/// A user's record, field by field.
type UserRecord = HashMap<String, String>;

/// The user half of the round trip: the tier, and the record when asked for; `None` if
/// there is no such user (or no tier on the record, which every user is written with).
fn user_reply(value: Value, with_user: WithUser) -> Result<Option<(Tier, Option<UserRecord>)>, AppError> {
    Ok(match with_user {
        WithUser::No => script::reply::<Option<String>>(value)?.map(|tier| (Tier::from_stored(&tier), None)),
        WithUser::Yes => with_tier(script::reply(value)?),
        WithUser::Profile => {
            let values: Vec<Option<String>> = script::reply(value)?;
            let fields = crate::user::PROFILE_FIELDS.iter().zip(values);
            with_tier(fields.filter_map(|(name, v)| Some((name.to_string(), v?))).collect())
        }
    })
}

/// The tier of a record and the record; `None` without a tier (no such user).
fn with_tier(record: UserRecord) -> Option<(Tier, Option<UserRecord>)> {
    let tier = record.get("tier").map(|tier| Tier::from_stored(tier));
    tier.map(|tier| (tier, Some(record)))
}

/// Ends one of `user_id`'s sessions (logout, DELETE /sessions/{id}): one round trip.
/// `true` if it was live.
pub async fn revoke(store: &Store, user_id: &str, session_id: &str) -> Result<bool, AppError> {
    let ended: i64 = END_ONE
        .key(keys::session(user_id, session_id))
        .key(keys::sessions(user_id))
        .arg(session_id)
        .invoke_async(&mut store.conn())
        .await?;
    Ok(ended == 1)
}

/// Ends every session of `user_id` but `keep` and returns the ids that were live; with
/// `new_password_hash`, stores it in the same atomic step. One round trip.
/// `NotFound` if a password is given for a user that no longer exists.
pub async fn revoke_all(
    store: &Store,
    user_id: &str,
    keep: Option<&str>,
    new_password_hash: Option<&str>,
) -> Result<Vec<String>, AppError> {
    let reply: redis::RedisResult<Vec<String>> = END_SESSIONS
        .key(keys::sessions(user_id))
        .key(keys::user(user_id))
        .arg(keys::session(user_id, ""))
        .arg(keep.unwrap_or_default())
        .arg(new_password_hash.unwrap_or_default())
        .invoke_async(&mut store.conn())
        .await;
    match reply {
        Err(e) if e.to_string().contains("NOUSER") => Err(AppError::NotFound("no such user".into())),
        other => Ok(other?),
    }
}

/// One session as GET /sessions shows it.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionInfo {
    /// The session id (token hash); DELETE /sessions/{id} takes it.
    pub id: String,
    /// The user agent that signed in.
    pub user_agent: String,
    /// When it was created, RFC 3339 ms.
    pub created_at: String,
    /// When it was last used, RFC 3339 ms.
    pub last_used_at: String,
    /// Whether it is the session making this request.
    pub current: bool,
}

/// Most sessions GET /sessions reads; a user with more sees the newest ones.
pub const MAX_LISTED_SESSIONS: isize = 100;

/// The live sessions of `user_id`, newest first: two round trips (index, then the
/// sessions in one pipeline). Index entries of sessions that ended are skipped.
pub async fn list(store: &Store, user_id: &str, current: &str) -> Result<Vec<SessionInfo>, AppError> {
    let ids: Vec<String> = redis::cmd("ZRANGE")
        .arg(keys::sessions(user_id))
        .arg("+inf")
        .arg(now_millis())
        .arg("BYSCORE")
        .arg("REV")
        .arg("LIMIT")
        .arg(0)
        .arg(MAX_LISTED_SESSIONS)
        .query_async(&mut store.conn())
        .await?;
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let mut pipe = redis::pipe();
    for id in &ids {
        pipe.hgetall(keys::session(user_id, id));
    }
    let records: Vec<HashMap<String, String>> = pipe.query_async(&mut store.conn()).await?;
    let millis = |fields: &HashMap<String, String>, name: &str| {
        fields
            .get(name)
            .and_then(|v| v.parse::<i64>().ok())
            .and_then(chrono::DateTime::from_timestamp_millis)
            .map(|t| crate::clock::rfc3339(&t))
            .unwrap_or_default()
    };
    let mut sessions: Vec<SessionInfo> = ids
        .into_iter()
        .zip(records)
        .filter(|(_, fields)| fields.contains_key("lastUsedAt"))
        .map(|(id, fields)| SessionInfo {
            current: id == current,
            user_agent: fields.get("userAgent").cloned().unwrap_or_default(),
            created_at: millis(&fields, "createdAt"),
            last_used_at: millis(&fields, "lastUsedAt"),
            id,
        })
        .collect();
    sessions.sort_by(|a, b| b.created_at.cmp(&a.created_at));
    Ok(sessions)
}

/// Accepts only what a session id can be: 64 lower-case hex digits.
pub fn parse_session_id(id: &str) -> Result<&str, AppError> {
    if id.len() == 64 && id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        Ok(id)
    } else {
        Err(AppError::NotFound("no such session".into()))
    }
}

/// Stores a single-use WebSocket ticket for this session and returns it: one round trip.
/// Redis holds `keys::realtime_ticket(<sha256 of ticket>)` = `<userId>:<sessionId>` for
/// [`TICKET_TTL`]; `$connect` redeems it with GETDEL, so it works once, and a ticket in
/// a URL or log is worthless after that or after 30 s.
pub async fn issue_ticket(store: &Store, user_id: &str, session_id: &str) -> Result<String, AppError> {
    let mut secret = [0u8; SECRET_BYTES];
    rand::rngs::OsRng.fill_bytes(&mut secret);
    let ticket = URL_SAFE_NO_PAD.encode(secret);
    let () = redis::cmd("SET")
        .arg(keys::realtime_ticket(&hash(&ticket)))
        .arg(format!("{user_id}:{session_id}"))
        .arg("EX")
        .arg(TICKET_TTL.as_secs())
        .query_async(&mut store.conn())
        .await?;
    Ok(ticket)
}

/// The `Set-Cookie` value that hands `token` to a browser. With `secure` (everywhere but
/// plain-http local development) the cookie is `__Host-dc_session`: Secure, Path=/, no Domain.
pub fn cookie(token: &str, ttl: Duration, secure: bool) -> String {
    let (name, secure) = if secure {
        (COOKIE_NAME, "; Secure")
    } else {
        (LOCAL_COOKIE_NAME, "")
    };
    format!(
        "{name}={token}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}{secure}",
        ttl.as_secs()
    )
}

/// The `Set-Cookie` value that removes the session cookie (logout): the same name and
/// attributes, so the browser matches and drops it (a `__Host-` cookie needs `Secure` here too).
pub fn clear_cookie(secure: bool) -> String {
    cookie("", Duration::ZERO, secure)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_tokens_parse_back_to_their_user_and_session_key() {
        let id = Uuid::now_v7().to_string();
        let issued = issue(&id);
        let parsed = ParsedToken::parse(&issued.token).unwrap();
        assert_eq!(parsed.user_id, id);
        assert_eq!(parsed.session_key(), issued.key);
    }

    #[test]
    fn two_tokens_for_one_user_differ() {
        let id = Uuid::now_v7().to_string();
        assert_ne!(issue(&id).token, issue(&id).token);
    }

    #[test]
    fn the_session_key_does_not_contain_the_secret() {
        let issued = issue(&Uuid::now_v7().to_string());
        let secret = issued.token.split_once('.').unwrap().1;
        assert!(!issued.key.contains(secret));
    }

    #[test]
    fn garbage_tokens_are_rejected_without_redis() {
        for t in ["", "abc", "not-a-uuid.AAAA", &format!("{}.short", Uuid::now_v7())] {
            assert!(matches!(ParsedToken::parse(t), Err(AppError::Unauthorized(_))), "{t}");
        }
    }

    #[test]
    fn the_cookie_is_http_only() {
        let c = cookie("t", Duration::from_secs(60), true);
        assert!(c.contains("HttpOnly") && c.contains("Secure") && c.contains("Max-Age=60"));
    }

    #[test]
    fn the_secure_cookie_meets_the_host_prefix_rules_also_when_cleared() {
        for c in [cookie("t", Duration::from_secs(60), true), clear_cookie(true)] {
            assert!(c.starts_with("__Host-dc_session="), "{c}");
            assert!(
                c.contains("; Secure") && c.contains("; Path=/") && !c.contains("Domain"),
                "{c}"
            );
        }
        assert!(clear_cookie(true).contains("Max-Age=0"));
    }

    #[test]
    fn the_insecure_local_cookie_does_not_claim_the_host_prefix() {
        let c = cookie("t", Duration::from_secs(60), false);
        assert!(c.starts_with("dc_session=") && !c.contains("Secure"), "{c}");
    }

    #[test]
    fn session_ids_are_64_hex_digits() {
        let issued = issue(&Uuid::now_v7().to_string());
        assert!(parse_session_id(&issued.id).is_ok());
        for bad in ["", "abc", &"G".repeat(64), &"A".repeat(64), "../x"] {
            assert!(parse_session_id(bad).is_err(), "{bad}");
        }
    }
}
