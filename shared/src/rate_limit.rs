//! Tiered fixed-window rate limiting.
//!
//! One counter per (caller, window), named by the window's index, so a new window is a
//! new key and the limit never needs a script: `INCR` (atomic, so concurrent requests
//! can never be admitted past the limit) and `EXPIRE … NX` (the first request of the
//! window sets the TTL, later ones leave it) go in the round trip the request makes
//! anyway. Anonymous callers are counted per source IP; signed-in callers per user,
//! in the authentication round trip (see [`crate::session`]).

use std::time::Duration;

use redis::Pipeline;

use crate::{config::RateLimits, error::AppError, keys, store::Store};

/// The Lua that counts one request, for scripts that must count atomically with other
/// work (the WebSocket `$connect`). Expects `limit` to be set and the counter key in
/// `ckey`; leaves `count` and `ttl`. All-or-nothing without explicit checks: INCR is
/// the first write, and it fails without writing on a key of the wrong type or a
/// non-integer value; the EXPIREs after it cannot fail. A script embedding this must
/// write nothing before it.
pub const COUNT_LUA: &str = r#"
local count = redis.call('INCR', ckey)
if count == 1 then redis.call('EXPIRE', ckey, window) end
local ttl = redis.call('TTL', ckey)
if ttl < 0 then redis.call('EXPIRE', ckey, window); ttl = window end
"#;

/// One caller's counter in the fixed window that contains "now".
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Window {
    key: String,
    secs: u64,
    reset_secs: u64,
}

impl Window {
    /// The counter of `user_id` in the current window.
    pub fn user(user_id: &str, limits: &RateLimits) -> Self {
        Self::at(limits.window, now_secs(), |index| keys::user_rate(user_id, index))
    }

    /// The anonymous counter of `ip` in the current window.
    pub fn ip(ip: &str, limits: &RateLimits) -> Self {
        Self::at(limits.window, now_secs(), |index| keys::ip_rate(ip, index))
    }

    fn at(window: Duration, now_secs: u64, key: impl FnOnce(u64) -> String) -> Self {
        let secs = window.as_secs().max(1);
        let index = window_index(now_secs, window);
        Self {
            key: key(index),
            secs,
            // The key is this window's alone, so the count starts again at its end.
            reset_secs: ((index + 1) * secs).saturating_sub(now_secs).max(1),
        }
    }

    /// Adds "count one request" to `pipe`: `INCR` (its reply, the count after this
    /// request, is the one reply this adds) and `EXPIRE key window NX` (ignored). The
    /// TTL is the whole window from the first request, so the key outlives its window.
    pub fn count(&self, pipe: &mut Pipeline) {
        pipe.incr(&self.key, 1);
        self.expire(pipe);
    }

    /// Adds "take back one request" to `pipe` (a request counted before it was known
    /// to be refused; see [`crate::session`]); no reply. The `EXPIRE … NX` keeps even a
    /// counter that expired in between from living forever.
    pub fn uncount(&self, pipe: &mut Pipeline) {
        pipe.decr(&self.key, 1).ignore();
        self.expire(pipe);
    }

    fn expire(&self, pipe: &mut Pipeline) {
        pipe.cmd("EXPIRE").arg(&self.key).arg(self.secs).arg("NX").ignore();
    }

    /// Admits the request (`Ok`) or refuses it with 429 (`Err`), given the count that
    /// [`Window::count`]'s `INCR` replied.
    pub fn judge(&self, limit: u32, count: i64) -> Result<RateDecision, AppError> {
        RateDecision::judge(limit, count, i64::try_from(self.reset_secs).unwrap_or(i64::MAX))
    }
}

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
    /// Admits the request (`Ok`) or refuses it with 429 (`Err`), given the counter after
    /// this request and the seconds until the window resets.
    pub fn judge(limit: u32, count: i64, reset_secs: i64) -> Result<Self, AppError> {
        let decision = Self {
            limit,
            remaining: u32::try_from((i64::from(limit) - count).max(0)).unwrap_or(0),
            reset_secs: u64::try_from(reset_secs.max(1)).unwrap_or(1),
        };
        if count > i64::from(limit) {
            Err(AppError::RateLimited(decision))
        } else {
            Ok(decision)
        }
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
    let window = Window::ip(ip, limits);
    let mut pipe = redis::pipe();
    window.count(&mut pipe);
    let (count,): (i64,) = pipe.query_async(&mut store.conn()).await?;
    window.judge(Tier::Anonymous.limit(limits), count)
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
    fn the_reset_is_the_end_of_the_fixed_window() {
        let w = Duration::from_secs(60);
        let at = |now| Window::at(w, now, |i| format!("k:{i}"));
        assert_eq!((at(120).key, at(120).reset_secs), ("k:2".to_string(), 60));
        assert_eq!((at(179).key, at(179).reset_secs), ("k:2".to_string(), 1));
        assert_eq!(at(150).reset_secs, 30);
    }

    #[test]
    fn unknown_stored_tiers_fall_back_to_free() {
        assert_eq!(Tier::from_stored("gold"), Tier::Free);
        assert_eq!(Tier::from_stored("premium"), Tier::Premium);
    }
}
