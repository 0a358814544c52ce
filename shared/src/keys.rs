//! Every Redis key name lives here.
//!
//! Rule: keys that one atomic operation (Lua script, MULTI) touches share a hash tag,
//! so the same code runs on ElastiCache Serverless and cluster mode. A user's record,
//! sessions, rate-limit counter and cached public profile all carry `{u:<id>}`, which
//! lets authentication + rate limit + profile read be one script in one slot.

/// The hash tag that keeps everything of one user in one slot.
fn user_tag(user_id: &str) -> String {
    format!("{{u:{user_id}}}")
}

/// Hash: the user's record (profile fields, password hash, tier).
pub fn user(user_id: &str) -> String {
    format!("user:{}", user_tag(user_id))
}

/// String: cached public-profile JSON (cache-aside, invalidated on PATCH /profile).
pub fn public_profile(user_id: &str) -> String {
    format!("profile:{}", user_tag(user_id))
}

/// String: one live session; the key holds the SHA-256 of the token, never the token.
pub fn session(user_id: &str, token_hash: &str) -> String {
    format!("session:{}:{token_hash}", user_tag(user_id))
}

/// Counter: requests of one user in one fixed window.
pub fn user_rate(user_id: &str, window: u64) -> String {
    format!("ratelimit:{}:{window}", user_tag(user_id))
}

/// Counter: anonymous requests from one source IP in one fixed window.
pub fn ip_rate(ip: &str, window: u64) -> String {
    format!("ratelimit:ip:{{{ip}}}:{window}")
}

/// String: lower-cased email -> user id; `SET NX` on it is what makes emails unique.
pub fn email(normalized_email: &str) -> String {
    format!("email:{{{normalized_email}}}")
}

/// Counter: failed logins for one email within the brute-force window.
pub fn login_failures(normalized_email: &str) -> String {
    format!("loginfail:{{{normalized_email}}}")
}

/// List: events waiting for the broker, oldest first.
pub const OUTBOX: &str = "outbox:{events}";

/// String: held by the one relay draining the outbox.
pub const OUTBOX_LOCK: &str = "outbox:{events}:lock";

/// Prefix of every rate-limit counter (tests use it to tell counters from data).
pub const RATE_LIMIT_PREFIX: &str = "ratelimit:";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_users_keys_share_one_hash_tag() {
        let id = "0190c3a4-0000-7000-8000-000000000001";
        let tag = "{u:0190c3a4-0000-7000-8000-000000000001}";
        for key in [user(id), public_profile(id), session(id, "ab"), user_rate(id, 7)] {
            assert!(key.contains(tag), "{key}");
        }
    }

    #[test]
    fn outbox_keys_share_one_hash_tag() {
        assert!(OUTBOX.contains("{events}") && OUTBOX_LOCK.contains("{events}"));
    }
}
