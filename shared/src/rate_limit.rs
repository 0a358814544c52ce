//! Tiered fixed-window rate limiting.
//!
//! One counter per (caller, window), `INCR`ed inside a Lua script so concurrent
//! requests can never be admitted past the limit. Anonymous callers are counted
//! per source IP; signed-in callers per user, inside the authentication script
//! (see [`crate::session`]) so that costs no extra round trip.

use std::{sync::LazyLock, time::Duration};

use redis::Script;

use crate::{config::RateLimits, error::AppError, keys, store::Store};

/// The Lua that counts one request. Shared by the anonymous script here and the
/// authentication script in `session`, so the two can never disagree.
/// Expects `limit` to be set and the counter key in `ckey`; leaves `count` and `ttl`.
/// All-or-nothing without explicit checks: INCR is the first write, and it fails
/// without writing on a key of the wrong type or a non-integer value; the EXPIREs
/// after it cannot fail. A script embedding this must write nothing before it.
pub const COUNT_LUA: &str = r#"
local count = redis.call('INCR', ckey)
if count == 1 then redis.call('EXPIRE', ckey, window) end
local ttl = redis.call('TTL', ckey)
if ttl < 0 then redis.call('EXPIRE', ckey, window); ttl = window end
"#;

/// Writes only through [`COUNT_LUA`], so an error leaves nothing written.
static IP_SCRIPT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "local ckey = KEYS[1]\nlocal window = tonumber(ARGV[1])\n{COUNT_LUA}\nreturn {{count, ttl}}"
    ))
});

/// Which limit applies to a caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tier {
    /// No session: limited per source IP.
    Anonymous,
    /// A signed-in user without a plan.
    Free,
    /// A signed-in user with a plan.
    Premium,
}

impl Tier {
    /// Parses the tier stored on a user record; anything unknown is `Free`.
    pub fn from_stored(s: &str) -> Self {
        if s == "premium" {
            Self::Premium
        } else {
            Self::Free
        }
    }

    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Anonymous => "anonymous",
            Self::Free => "free",
            Self::Premium => "premium",
        }
    }

    /// This tier's limit per window.
    pub fn limit(self, limits: &RateLimits) -> u32 {
        match self {
            Self::Anonymous => limits.anonymous,
            Self::Free => limits.free,
            Self::Premium => limits.premium,
        }
    }
}

/// The outcome of counting one request; its fields become the X-RateLimit-* headers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateDecision {
    /// Requests allowed per window.
    pub limit: u32,
    /// Requests left in this window.
    pub remaining: u32,
    /// Seconds until the window resets.
    pub reset_secs: u64,
}

impl RateDecision {
    /// Admits the request (`Ok`) or refuses it with 429 (`Err`), given the counter after this request.
    pub fn judge(limit: u32, count: i64, ttl: i64) -> Result<Self, AppError> {
        let decision = Self {
            limit,
            remaining: u32::try_from((i64::from(limit) - count).max(0)).unwrap_or(0),
            reset_secs: u64::try_from(ttl.max(1)).unwrap_or(1),
        };
        if count > i64::from(limit) {
            Err(AppError::RateLimited(decision))
        } else {
            Ok(decision)
        }
    }

    /// The headers every response to a counted request carries.
    pub fn headers(&self) -> [(&'static str, String); 3] {
        [
            ("x-ratelimit-limit", self.limit.to_string()),
            ("x-ratelimit-remaining", self.remaining.to_string()),
            ("x-ratelimit-reset", self.reset_secs.to_string()),
        ]
    }
}

/// The index of the fixed window containing `now` (seconds since the epoch).
pub fn window_index(now_secs: u64, window: Duration) -> u64 {
    now_secs / window.as_secs().max(1)
}

/// Seconds since the epoch, from the wall clock.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Counts one anonymous request from `ip`: one round trip.
pub async fn check_ip(store: &Store, limits: &RateLimits, ip: &str) -> Result<RateDecision, AppError> {
    let key = keys::ip_rate(ip, window_index(now_secs(), limits.window));
    let (count, ttl): (i64, i64) = IP_SCRIPT
        .key(key)
        .arg(limits.window.as_secs())
        .invoke_async(&mut store.conn())
        .await?;
    RateDecision::judge(Tier::Anonymous.limit(limits), count, ttl)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_request_within_the_limit_is_admitted() {
        let d = RateDecision::judge(5, 5, 30).unwrap();
        assert_eq!((d.remaining, d.reset_secs), (0, 30));
    }

    #[test]
    fn the_first_request_over_the_limit_is_refused_with_the_reset_time() {
        match RateDecision::judge(5, 6, 12) {
            Err(AppError::RateLimited(d)) => assert_eq!((d.limit, d.remaining, d.reset_secs), (5, 0, 12)),
            other => panic!("expected 429, got {other:?}"),
        }
    }

    #[test]
    fn windows_change_at_window_boundaries() {
        let w = Duration::from_secs(60);
        assert_eq!(window_index(119, w), 1);
        assert_eq!(window_index(120, w), 2);
    }

    #[test]
    fn unknown_stored_tiers_fall_back_to_free() {
        assert_eq!(Tier::from_stored("gold"), Tier::Free);
        assert_eq!(Tier::from_stored("premium"), Tier::Premium);
    }
}
