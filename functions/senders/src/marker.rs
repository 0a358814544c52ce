//! Idempotency per (notification, channel): a Redis marker that says a delivery is being
//! sent or was sent, so a redelivered record never emails twice.
//!
//! Before the provider call the sender claims the marker (`SET NX`, value
//! `sending:<token>`, TTL [`LEASE`]); after the provider accepted, it overwrites it with
//! `sent:<provider id>` for [`SENT_WINDOW`]. A redelivery that finds `sent` is a
//! duplicate; one that finds `sending` (another invocation is sending it right now, or
//! crashed mid-send) is retried later. On a failure the sender releases its own claim so
//! the retry can send at once.
//!
//! The window that remains: the provider accepted the message but the sender died (or
//! lost Redis) before writing `sent`. Once the lease expires, a retry sends it again:
//! at most one duplicate, only after a crash in that gap. SES and SNS take no
//! idempotency key, so no marker can close it; the lease keeps it to one resend.

use std::{sync::LazyLock, time::Duration};

use devconnect::{
    delivery::Channel as ChannelName, error::is_transient_redis_error, keys, script, store::Store, AppError,
};
use redis::Script;

/// How long a claim holds: longer than one record can take from claim to `sent`
/// ([`crate::RECORD_DEADLINE`] plus one provider call), so a live sender never loses it;
/// short, so a record whose sender crashed is retried within a minute.
pub const LEASE: Duration = Duration::from_secs(30);

/// How long `sent` is remembered: the dedupe window of DESIGN.md (7 days), far beyond
/// how long the event source can redeliver a record.
pub const SENT_WINDOW: Duration = Duration::from_secs(7 * 24 * 3600);

/// What claiming found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// Ours now: send, then [`sent`] or [`release`].
    Claimed(String),
    /// Already sent (value: the provider's message id).
    AlreadySent(String),
    /// Another sender holds it (or held it and crashed); try again after [`LEASE`].
    InFlight,
}

fn key(notification_id: &str, channel: ChannelName) -> String {
    keys::delivery(
        notification_id,
        match channel {
            ChannelName::Email => "email",
            ChannelName::Sms => "sms",
        },
    )
}

/// KEYS: marker. ARGV: `sending:<token>`. Deletes the marker only if it is still our claim.
static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    script::atomic(
        r#"
if read('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 1
"#,
    )
});

/// Claims the delivery of `notification_id` on `channel`: one command, no script.
/// `SET NX GET` (Redis 7.0+) sets our claim only if there is no marker and returns what
/// was there; on a marker that is no string it fails (WRONGTYPE) without writing.
pub async fn claim(store: &Store, notification_id: &str, channel: ChannelName) -> Result<Claim, AppError> {
    let key = key(notification_id, channel);
    let token = format!("sending:{}", uuid::Uuid::new_v4());
    let previous: Option<String> = redis::cmd("SET")
        .arg(&key)
        .arg(&token)
        .arg("NX")
        .arg("PX")
        .arg(LEASE.as_millis() as u64)
        .arg("GET")
        .query_async(&mut store.conn())
        .await
        .map_err(|e| match is_transient_redis_error(&e) {
            true => AppError::from(e),
            false => AppError::bug(format!("delivery marker {key}: {e}")),
        })?;
    Ok(match previous {
        None => Claim::Claimed(token),
        Some(value) => match value.strip_prefix("sent:") {
            Some(id) => Claim::AlreadySent(id.to_string()),
            None => Claim::InFlight,
        },
    })
}

/// Records that the provider accepted the delivery (whatever the marker holds now: the
/// message is out, so nothing may send it again).
pub async fn sent(
    store: &Store,
    notification_id: &str,
    channel: ChannelName,
    provider_id: &str,
) -> Result<(), AppError> {
    let _: () = redis::cmd("SET")
        .arg(key(notification_id, channel))
        .arg(format!("sent:{provider_id}"))
        .arg("PX")
        .arg(SENT_WINDOW.as_millis() as u64)
        .query_async(&mut store.conn())
        .await?;
    Ok(())
}

/// Gives up our claim after a failed send, so the retry need not wait out the lease.
pub async fn release(store: &Store, notification_id: &str, channel: ChannelName, token: &str) -> Result<(), AppError> {
    let _: i64 = RELEASE
        .key(key(notification_id, channel))
        .arg(token)
        .invoke_async(&mut store.conn())
        .await?;
    Ok(())
}
