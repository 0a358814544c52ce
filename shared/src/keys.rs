//! Every Redis key name lives here.
//!
//! Rule: keys that one atomic operation (Lua script, MULTI) touches share a hash tag,
//! so the same code runs on ElastiCache Serverless and cluster mode. A user's record,
//! sessions, rate-limit counter and cached public profile all carry `{u:<id>}`, which
//! lets authentication + rate limit + profile read be one script in one slot.

use std::fmt;

/// A hash tag, `{<kind>:<id>}` or, for a pair, `{<kind>:<lo>:<hi>}`, written straight into
/// the key that carries it (one allocation per key, not one more for the tag).
#[derive(Debug, PartialEq)]
struct Tag<'a> {
    kind: &'static str,
    id: &'a str,
    other: Option<&'a str>,
}

impl fmt::Display for Tag<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.other {
            None => write!(f, "{{{}:{}}}", self.kind, self.id),
            Some(other) => write!(f, "{{{}:{}:{other}}}", self.kind, self.id),
        }
    }
}

/// The hash tag that keeps everything of one user in one slot.
fn user_tag(user_id: &str) -> Tag<'_> {
    Tag {
        kind: "u",
        id: user_id,
        other: None,
    }
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

/// Sorted set: a user's sessions (member = session id, i.e. the token hash; score =
/// when the session's absolute lifetime ends, ms). Lists and ends sessions; entries of
/// sessions that expired are pruned lazily.
pub fn sessions(user_id: &str) -> String {
    format!("sessions:{}", user_tag(user_id))
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

/// Hash: failed logins for one email from one client IP (`n` failures, `until` ms locked).
/// Same tag as [`login_failures`], so one script checks the pair and the email ceiling.
pub fn login_failures_from(normalized_email: &str, ip: &str) -> String {
    format!("loginfail:{{{normalized_email}}}:ip:{ip}")
}

/// The hash tag of a pair of users: the pair record, their conversation and its
/// unread counters share it, so "are they connected?" and "append a message" are
/// one script. Order-independent: `pair_tag(a, b) == pair_tag(b, a)`.
fn pair_tag<'a>(a: &'a str, b: &'a str) -> Tag<'a> {
    let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
    Tag {
        kind: "p",
        id: lo,
        other: Some(hi),
    }
}

/// Hash: the one connection request between two users, whoever sent it (status, id, from, to).
pub fn pair(a: &str, b: &str) -> String {
    format!("pair:{}", pair_tag(a, b))
}

/// Stream: the messages between two users, capped (XADD MAXLEN).
pub fn messages(a: &str, b: &str) -> String {
    format!("messages:{}", pair_tag(a, b))
}

/// Hash: per-user unread counts of a conversation (`unread:<userId>`); its last message is the stream's.
pub fn conversation(a: &str, b: &str) -> String {
    format!("conversation:{}", pair_tag(a, b))
}

/// Hash: pending interested requests a user received (requestId -> sender id).
pub fn inbox(user_id: &str) -> String {
    format!("inbox:{}", user_tag(user_id))
}

/// Sorted set: a user's connections (score = accepted at, ms).
pub fn connections(user_id: &str) -> String {
    format!("connections:{}", user_tag(user_id))
}

/// Set: everyone a user has a request with, either way (kept out of their feed).
pub fn seen(user_id: &str) -> String {
    format!("seen:{}", user_tag(user_id))
}

/// Sorted set: a user's conversations (member = other user, score = last message, ms).
pub fn conversations(user_id: &str) -> String {
    format!("conversations:{}", user_tag(user_id))
}

/// Hash: a user's presence (`lastSeen` ms, `online` 0/1).
pub fn presence(user_id: &str) -> String {
    format!("presence:{}", user_tag(user_id))
}

/// A projection's key prefix in one generation: generation 0 is the original name (data
/// written before rebuilds existed stays readable), generation N > 0 appends `@N`. The
/// generation sits outside the hash tag, so every generation of a key keeps its slot.
/// See [`crate::projection`].
fn generational(prefix: &'static str, generation: u64) -> Generational {
    Generational { prefix, generation }
}

/// [`generational`]'s prefix, written straight into the key.
struct Generational {
    prefix: &'static str,
    generation: u64,
}

impl fmt::Display for Generational {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.generation {
            0 => f.write_str(self.prefix),
            g => write!(f, "{}@{g}", self.prefix),
        }
    }
}

/// List: a user's notifications in one projection generation, newest first, capped.
pub fn notifications_in(generation: u64, user_id: &str) -> String {
    format!("{}:{}", generational("notifications", generation), user_tag(user_id))
}

/// Hash: a user's notification state (`unread`) in one projection generation.
pub fn notification_state_in(generation: u64, user_id: &str) -> String {
    format!(
        "{}:{}:state",
        generational("notifications", generation),
        user_tag(user_id)
    )
}

/// Sorted set: event ids the notifications consumer applied for a user in one projection
/// generation (dedupe; score = ms). Per generation, so a rebuild applies every record again.
pub fn notification_dedupe_in(generation: u64, user_id: &str) -> String {
    format!(
        "{}:{}:seen",
        generational("notifications", generation),
        user_tag(user_id)
    )
}

/// [`notifications_in`] generation 0.
pub fn notifications(user_id: &str) -> String {
    notifications_in(0, user_id)
}

/// [`notification_state_in`] generation 0.
pub fn notification_state(user_id: &str) -> String {
    notification_state_in(0, user_id)
}

/// [`notification_dedupe_in`] generation 0.
pub fn notification_dedupe(user_id: &str) -> String {
    notification_dedupe_in(0, user_id)
}

/// String: when the user last marked their notifications read (ms). Not in a projection
/// generation: it is the user's own act, in no topic, so a rebuild must not lose it; a
/// notification whose event is not newer than it is not counted unread. A prefix of its
/// own, so no generation's SCAN pattern matches it.
pub fn notifications_read_at(user_id: &str) -> String {
    format!("notifread:{}", user_tag(user_id))
}

/// Glob (SCAN MATCH) for every notifications key of one generation.
pub fn notifications_pattern(generation: u64) -> String {
    format!("{}:{{u:*", generational("notifications", generation))
}

/// Pub/sub channel on which a user's new notifications are published.
pub fn notification_channel(user_id: &str) -> String {
    format!("notifications:{}:live", user_tag(user_id))
}

/// The hash tag of one month of analytics (`YYYY-MM`): a day's counters, its DAU, the
/// month's MAU and the dedupe set are updated by one script in this slot.
fn month_tag(month: &str) -> Tag<'_> {
    Tag {
        kind: "a",
        id: month,
        other: None,
    }
}

/// Hash: one day's counters in one projection generation: `<TYPE>` per day, `<HH>:<TYPE>`
/// per hour, `events` in all.
pub fn analytics_day_in(generation: u64, month: &str, day: &str) -> String {
    format!(
        "{}:{}:day:{day}",
        generational("analytics", generation),
        month_tag(month)
    )
}

/// HyperLogLog: distinct active users of one day, in one projection generation.
pub fn analytics_dau_in(generation: u64, month: &str, day: &str) -> String {
    format!(
        "{}:{}:dau:{day}",
        generational("analytics", generation),
        month_tag(month)
    )
}

/// HyperLogLog: distinct active users of one month, in one projection generation.
pub fn analytics_mau_in(generation: u64, month: &str) -> String {
    format!("{}:{}:mau", generational("analytics", generation), month_tag(month))
}

/// Set: event ids already counted for one day in one projection generation (dedupe;
/// expires after the dedupe window). Per generation, so a rebuild counts every record again.
pub fn analytics_dedupe_in(generation: u64, month: &str, day: &str) -> String {
    format!(
        "{}:{}:seen:{day}",
        generational("analytics", generation),
        month_tag(month)
    )
}

/// [`analytics_day_in`] generation 0.
pub fn analytics_day(month: &str, day: &str) -> String {
    analytics_day_in(0, month, day)
}

/// [`analytics_dau_in`] generation 0.
pub fn analytics_dau(month: &str, day: &str) -> String {
    analytics_dau_in(0, month, day)
}

/// [`analytics_mau_in`] generation 0.
pub fn analytics_mau(month: &str) -> String {
    analytics_mau_in(0, month)
}

/// [`analytics_dedupe_in`] generation 0.
pub fn analytics_dedupe(month: &str, day: &str) -> String {
    analytics_dedupe_in(0, month, day)
}

/// Glob (SCAN MATCH) for every analytics counter key of one generation.
pub fn analytics_pattern(generation: u64) -> String {
    format!("{}:{{a:*", generational("analytics", generation))
}

/// Hash: which generation of a projection readers use (`live`, absent = 0) and which one
/// a rebuild is writing (`building`). One small key per projection; the rebuild switches
/// `live` with one script.
pub fn projection(name: &str) -> String {
    format!("projection:{{{name}}}")
}

/// String: held (with a random token and a TTL the rebuild keeps extending) by the one
/// rebuild of a projection. Same tag as [`projection`]: the switch script checks both.
pub fn projection_lock(name: &str) -> String {
    format!("projection:{{{name}}}:lock")
}

/// Analytics' derived events (DAILY_SUMMARY, MILESTONE) are written to the outbox by the
/// same script that records they were emitted, so their markers carry the outbox's
/// `{events}` tag. They are not projections: a rebuild of the analytics counters keeps
/// them, so history replayed never announces a milestone or a day twice.
fn derived_key(rest: &str) -> String {
    format!("derived:{{events}}:{rest}")
}

/// Set: users who reached a milestone (`firstConnection`, `firstMessage`); membership is
/// what makes each user's MILESTONE of that kind exactly once.
pub fn milestone_reached(milestone: &str) -> String {
    derived_key(&format!("milestone:{milestone}"))
}

/// Hash: how many users reached each milestone on one day (`YYYY-MM-DD`), for that day's summary.
pub fn milestones_of_day(day: &str) -> String {
    derived_key(&format!("milestones:{day}"))
}

/// String: the event id of one day's DAILY_SUMMARY (`empty` for a day without events);
/// `SET NX` on it is what makes the summary exactly once.
pub fn daily_summary_closed(day: &str) -> String {
    derived_key(&format!("summary:{day}"))
}

/// Hash: the local MSK trigger's committed offsets of one consumer group (`topic:partition` -> next offset).
pub fn local_offsets(group: &str) -> String {
    format!("localmsk:{{{group}}}:offsets")
}

/// Sorted set: a user's open WebSocket connections (member = connection id,
/// score = when API Gateway will close it, ms: connections live at most 2 h).
pub fn sockets(user_id: &str) -> String {
    format!("sockets:{}", user_tag(user_id))
}

/// String: the user a WebSocket connection belongs to ($disconnect and $default only know the id).
pub fn socket_owner(connection_id: &str) -> String {
    format!("socket:{{c:{connection_id}}}")
}

/// String: one WebSocket ticket, `<userId>:<sessionId>`, 30 s TTL, redeemed once (GETDEL)
/// by `$connect`. Keyed by the SHA-256 of the ticket (never the ticket itself); its own
/// tag, because the ticket is the lookup key and the user is not known before reading it.
pub fn realtime_ticket(ticket_hash: &str) -> String {
    format!("ticket:{{t:{ticket_hash}}}")
}

/// Hash: which session opened each of a user's WebSocket connections (connection id ->
/// session id, the token hash of [`session`]). In the user's slot, beside [`sockets`] and
/// the session keys, so one script can tell a connection's session still exists.
pub fn socket_sessions(user_id: &str) -> String {
    format!("sockets:{}:sessions", user_tag(user_id))
}

/// The prefix of every session key of a user: [`session`] with an empty hash. Scripts
/// append a session id to it to check a connection's session in the user's slot.
pub fn session_prefix(user_id: &str) -> String {
    session(user_id, "")
}

/// String: one notification's delivery on one channel (`email`, `sms`): `sending:<token>`
/// while a sender holds it (short TTL), `sent:<provider message id>` once the provider
/// accepted it (dedupe window). The email and SMS senders' idempotency marker.
pub fn delivery(notification_id: &str, channel: &str) -> String {
    format!("delivery:{{d:{notification_id}}}:{channel}")
}

/// Sorted set: every user, score 0, so members sort by id; UUIDv7 ids make that signup order.
pub const USERS: &str = "users:{all}";

/// Sorted set: users marked online (score = last heartbeat, ms); the sweep reads it.
pub const ONLINE: &str = "presence:{online}";

/// List: events waiting for the broker, oldest first.
pub const OUTBOX: &str = "outbox:{events}";

/// String: held by the one relay draining the outbox.
pub const OUTBOX_LOCK: &str = "outbox:{events}:lock";

/// List: outbox entries that can never be produced (JSON: entry, reason, time), oldest
/// first. Same `{events}` tag as [`OUTBOX`]: the relay moves entries in one script.
pub const OUTBOX_QUARANTINE: &str = "outbox:{events}:quarantine";

/// Prefix of every rate-limit counter (tests use it to tell counters from data).
pub const RATE_LIMIT_PREFIX: &str = "ratelimit:";

/// Hash: a user's notification channel preferences (`email:<KIND>`, `sms:<KIND>`,
/// `quietHours`, `phone`), written by the preferences routes, read by the channels router.
pub fn channel_preferences(user_id: &str) -> String {
    format!("channels:prefs:{}", user_tag(user_id))
}

/// Hash: a phone number waiting for its code (`number`, `code` = SHA-256 hex, `attempts`,
/// `expiresAt` ms). Same slot as [`channel_preferences`]: verifying moves it there in one script.
pub fn phone_verification(user_id: &str) -> String {
    format!("channels:phone:{}", user_tag(user_id))
}

/// Counter: verification codes sent to a user in the current day (expires with it).
pub fn phone_codes_sent(user_id: &str) -> String {
    format!("channels:phone:{}:sent", user_tag(user_id))
}

/// Sorted set: `<notificationId>:<channel>` the channels router already turned into a
/// delivery (dedupe; score = ms). In the outbox's `{events}` slot, so the marker and the
/// outbox entry it stands for are written by one script.
pub const CHANNEL_DEDUPE: &str = "channels:{events}:sent";

/// Sorted set: SMS held back by quiet hours (member = the outbox entry, score = when the
/// window ends, ms). The channels scheduler moves due ones to [`OUTBOX`] in one script.
pub const CHANNEL_QUIET: &str = "channels:{events}:quiet";

/// Sorted set: open daily digests (member = `<userId>:<YYYY-MM-DD>`, score = when that
/// day ends in the user's time zone, ms).
pub const CHANNEL_DIGESTS: &str = "channels:{events}:digests";

/// List: one user's digest items for one of their days (JSON each), oldest first.
pub fn channel_digest(user_id: &str, day: &str) -> String {
    format!("channels:{{events}}:digest:{user_id}:{day}")
}

/// String with a TTL: while it exists, messages from `actor_id` alert `user_id` in-app
/// only (no email or SMS); set when one such message was emailed or texted, for the
/// channels router's message alert cooldown. In the `{events}` slot, so the script that
/// writes that delivery's marker starts the cooldown with it.
pub fn channel_message_cooldown(user_id: &str, actor_id: &str) -> String {
    format!("channels:{{events}}:cooldown:{user_id}:{actor_id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Key names are stored data: a renamed key is data a deploy no longer finds.
    #[test]
    fn key_names_stay_what_is_stored() {
        let (u, v) = ("id-2", "id-1");
        assert_eq!(user(u), "user:{u:id-2}");
        assert_eq!(pair(u, v), "pair:{p:id-1:id-2}");
        assert_eq!(notifications_in(0, u), "notifications:{u:id-2}");
        assert_eq!(notification_state_in(3, u), "notifications@3:{u:id-2}:state");
        assert_eq!(notification_dedupe_in(0, u), "notifications:{u:id-2}:seen");
        assert_eq!(notifications_pattern(3), "notifications@3:{u:*");
        assert_eq!(
            analytics_day_in(2, "2026-01", "2026-01-15"),
            "analytics@2:{a:2026-01}:day:2026-01-15"
        );
        assert_eq!(analytics_mau_in(0, "2026-01"), "analytics:{a:2026-01}:mau");
    }

    #[test]
    fn a_users_keys_share_one_hash_tag() {
        let id = "0190c3a4-0000-7000-8000-000000000001";
        let tag = "{u:0190c3a4-0000-7000-8000-000000000001}";
        for key in [user(id), public_profile(id), session(id, "ab"), user_rate(id, 7)] {
            assert!(key.contains(tag), "{key}");
        }
    }

    #[test]
    fn a_pairs_keys_are_the_same_from_either_side_and_share_one_tag() {
        let (a, b) = (
            "0190c3a4-0000-7000-8000-00000000000a",
            "0190c3a4-0000-7000-8000-00000000000b",
        );
        assert_eq!(pair(a, b), pair(b, a));
        let tag = format!("{{p:{a}:{b}}}");
        for key in [pair(b, a), messages(b, a), conversation(a, b)] {
            assert!(key.contains(&tag), "{key}");
        }
    }

    #[test]
    fn every_generation_of_a_projection_key_keeps_its_slot_and_generation_0_its_old_name() {
        let id = "0190c3a4-0000-7000-8000-000000000001";
        assert_eq!(notifications(id), format!("notifications:{{u:{id}}}"));
        assert_eq!(
            analytics_day("2026-11", "2026-11-28"),
            "analytics:{a:2026-11}:day:2026-11-28"
        );
        for g in [0, 1, 7] {
            for key in [
                notifications_in(g, id),
                notification_state_in(g, id),
                notification_dedupe_in(g, id),
            ] {
                assert!(key.contains(&format!("{{u:{id}}}")), "{key}");
            }
            assert!(analytics_mau_in(g, "2026-11").contains("{a:2026-11}"));
        }
        assert_eq!(
            notification_state_in(3, id),
            format!("notifications@3:{{u:{id}}}:state")
        );
    }

    #[test]
    fn a_generations_pattern_matches_only_its_own_keys() {
        // SCAN MATCH globs; `*` spans anything, so the patterns end in a fixed tag prefix.
        assert_eq!(notifications_pattern(0), "notifications:{u:*");
        assert_eq!(notifications_pattern(2), "notifications@2:{u:*");
        assert!(!notifications_read_at("x").starts_with("notifications"));
        assert_eq!(analytics_pattern(1), "analytics@1:{a:*");
        assert!(projection_lock("analytics").contains("{analytics}"));
    }

    #[test]
    fn outbox_keys_share_one_hash_tag() {
        let derived = [
            milestone_reached("firstConnection"),
            milestones_of_day("2026-01-01"),
            daily_summary_closed("2026-01-01"),
        ];
        for key in [OUTBOX, OUTBOX_LOCK, OUTBOX_QUARANTINE]
            .into_iter()
            .chain(derived.iter().map(String::as_str))
        {
            assert!(key.contains("{events}"), "{key}");
        }
    }
}
