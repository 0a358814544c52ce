//! Bearer-token sessions, and the one-round-trip authentication of a request.
//!
//! A token is `<userId>.<secret>`: the secret is 256 random bits (base64url), and
//! Redis stores only the SHA-256 of the whole token, so a leaked dump holds no
//! usable credential. Carrying the user id in the token lets the session key, the
//! user record and the user's rate-limit counter share one hash slot, so one Lua
//! script checks the session, counts the request against the user's tier and
//! (optionally) returns the profile: one Redis round trip per authenticated request.

use std::{collections::HashMap, sync::LazyLock, time::Duration};

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use rand::RngCore;
use redis::{Script, Value};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::{
    config::RateLimits,
    error::AppError,
    keys,
    rate_limit::{self, RateDecision, Tier, COUNT_LUA},
    store::Store,
};

/// Name of the HttpOnly cookie that carries the token for browser clients.
pub const COOKIE_NAME: &str = "dc_session";

const SECRET_BYTES: usize = 32;

/// KEYS: session, user record, the user's rate counter. All-or-nothing without extra
/// checks: before its first write (the INCR in [`COUNT_LUA`], which fails whole) it
/// only reads, and the HGET on the record already fails on a record of the wrong
/// type; EXISTS accepts a session key of any type.
static AUTH_SCRIPT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r#"
if redis.call('EXISTS', KEYS[1]) == 0 then return {{0}} end
local tier = redis.call('HGET', KEYS[2], 'tier')
if not tier then return {{0}} end
local window = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
if tier == 'premium' then limit = tonumber(ARGV[3]) end
local ckey = KEYS[3]
{COUNT_LUA}
if count <= limit and ARGV[4] == '1' then
  return {{1, tier, limit, count, ttl, redis.call('HGETALL', KEYS[2])}}
end
return {{1, tier, limit, count, ttl}}
"#
    ))
});

/// A freshly issued token and the Redis key that makes it valid.
#[derive(Debug)]
pub struct IssuedToken {
    /// Given to the client once; never stored.
    pub token: String,
    /// Where the session lives (`SET key 1 EX ttl` activates it).
    pub key: String,
}

/// Mints a token for `user_id`. Nothing is stored until the caller writes `key`.
pub fn issue(user_id: &str) -> IssuedToken {
    let mut secret = [0u8; SECRET_BYTES];
    rand::rngs::OsRng.fill_bytes(&mut secret);
    let token = format!("{user_id}.{}", URL_SAFE_NO_PAD.encode(secret));
    let key = keys::session(user_id, &hash(&token));
    IssuedToken { token, key }
}

fn hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
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
}

/// Whether the authentication script should also return the user's record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WithUser {
    /// Return the record (GET /profile).
    Yes,
    /// Only authenticate and count.
    No,
}

/// Authenticates `token` and counts the request against the user's rate limit: one round trip.
pub async fn authenticate(
    store: &Store,
    limits: &RateLimits,
    token: Option<&str>,
    with_user: WithUser,
) -> Result<Principal, AppError> {
    let parsed = ParsedToken::parse(token.unwrap_or_default())?;
    let session_key = parsed.session_key();
    let window = limits.window.as_secs();
    let reply: Value = AUTH_SCRIPT
        .key(&session_key)
        .key(keys::user(parsed.user_id))
        .key(keys::user_rate(
            parsed.user_id,
            rate_limit::window_index(rate_limit::now_secs(), limits.window),
        ))
        .arg(window)
        .arg(limits.free)
        .arg(limits.premium)
        .arg(if with_user == WithUser::Yes { "1" } else { "0" })
        .invoke_async(&mut store.conn())
        .await?;
    let AuthReply {
        tier,
        limit,
        count,
        ttl,
        user,
    } = AuthReply::parse(reply)?;
    let rate = RateDecision::judge(limit, count, ttl)?;
    Ok(Principal {
        user_id: parsed.user_id.to_string(),
        tier: Tier::from_stored(&tier),
        rate,
        user,
        session_key,
    })
}

struct AuthReply {
    tier: String,
    limit: u32,
    count: i64,
    ttl: i64,
    user: Option<HashMap<String, String>>,
}

impl AuthReply {
    fn parse(reply: Value) -> Result<Self, AppError> {
        let bad = || AppError::Internal("unexpected reply from the authentication script".into());
        let Value::Array(items) = reply else { return Err(bad()) };
        let mut items = items.into_iter();
        let status: i64 = items
            .next()
            .map(redis::from_redis_value)
            .transpose()
            .map_err(|_| bad())?
            .ok_or_else(bad)?;
        if status == 0 {
            return Err(AppError::Unauthorized("missing or invalid token"));
        }
        let mut next = || items.next().ok_or_else(bad);
        let tier: String = redis::from_redis_value(next()?).map_err(|_| bad())?;
        let limit: u32 = redis::from_redis_value(next()?).map_err(|_| bad())?;
        let count: i64 = redis::from_redis_value(next()?).map_err(|_| bad())?;
        let ttl: i64 = redis::from_redis_value(next()?).map_err(|_| bad())?;
        let user = match next() {
            Ok(v) => Some(redis::from_redis_value(v).map_err(|_| bad())?),
            Err(_) => None,
        };
        Ok(Self {
            tier,
            limit,
            count,
            ttl,
            user,
        })
    }
}

/// Revokes one session (logout): one round trip.
pub async fn revoke(store: &Store, session_key: &str) -> Result<(), AppError> {
    let _: i64 = redis::cmd("DEL")
        .arg(session_key)
        .query_async(&mut store.conn())
        .await?;
    Ok(())
}

/// The `Set-Cookie` value that hands `token` to a browser.
pub fn cookie(token: &str, ttl: Duration, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!(
        "{COOKIE_NAME}={token}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}{secure}",
        ttl.as_secs()
    )
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
}
