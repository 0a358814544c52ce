//! Redis persistence of requests and connections.
//!
//! The pair record is the truth and changes atomically (one script, one slot). The
//! per-user views — inbox, connections, the feed's "seen" set — are projections
//! written right after in one pipeline: they live in each user's own slot, so no
//! single atomic write can cover both users on a cluster. What could make that
//! pipeline fail half-way (a projection key of the wrong type) is checked in the
//! round trip before the pair record changes ([`check_send`], [`pending_sender`]), so
//! a broken key refuses the request with nothing written instead of leaving a pair
//! record whose projections are missing.

use std::sync::LazyLock;

use devconnect::{keys, script, store::Store, AppError};
use redis::Script;

use crate::domain::{ReviewStatus, SendStatus};

/// Creates the pair record unless one exists in either direction. Returns 1 if created.
/// A pair key of another type is an error, not "a request exists" (EXISTS alone would
/// answer 409 for a record that is no request at all).
static SEND: LazyLock<Script> = LazyLock::new(|| {
    script::atomic(
        r#"
local bad = wrong_types({KEYS[1], 'hash'})
if bad then return redis.error_reply(bad) end
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'id', ARGV[1], 'from', ARGV[2], 'to', ARGV[3], 'status', ARGV[4], 'createdAt', ARGV[5], 'updatedAt', ARGV[5])
return 1
"#,
    )
});

/// Moves a pending interested request addressed to ARGV[2] to its final status, once.
/// Returns 'ok', 'missing' (no such request for this receiver) or the current status.
/// Its one write is the last command, after the HMGET that fails on a pair key of
/// the wrong type; the explicit check only makes that precondition visible.
static REVIEW: LazyLock<Script> = LazyLock::new(|| {
    script::atomic(
        r#"
local bad = wrong_types({KEYS[1], 'hash'})
if bad then return redis.error_reply(bad) end
local r = redis.call('HMGET', KEYS[1], 'id', 'to', 'status')
if r[1] ~= ARGV[1] or r[2] ~= ARGV[2] then return 'missing' end
if r[3] ~= 'interested' then return r[3] end
redis.call('HSET', KEYS[1], 'status', ARGV[3], 'updatedAt', ARGV[4])
return 'ok'
"#,
    )
});

/// Whether `to` exists (requests to missing users are 404), and that [`send`]'s
/// projections can be written: one round trip.
pub async fn check_send(store: &Store, from: &str, to: &str) -> Result<bool, AppError> {
    let projections = [
        (keys::seen(from), "set"),
        (keys::seen(to), "set"),
        (keys::inbox(to), "zset"),
    ];
    let (exists, seen_from, seen_to, inbox_to): (bool, String, String, String) = redis::pipe()
        .exists(keys::user(to))
        .cmd("TYPE")
        .arg(&projections[0].0)
        .cmd("TYPE")
        .arg(&projections[1].0)
        .cmd("TYPE")
        .arg(&projections[2].0)
        .query_async(&mut store.conn())
        .await?;
    let types = [seen_from, seen_to, inbox_to];
    for ((key, expected), actual) in projections.iter().zip(&types) {
        script::expect_type(key, actual, expected)?;
    }
    Ok(exists)
}

/// Records a new request from `from` to `to`: 409 if the two already have one, either way.
pub async fn send(
    store: &Store,
    request_id: &str,
    from: &str,
    to: &str,
    status: SendStatus,
    now: &str,
) -> Result<(), AppError> {
    let created: i64 = SEND
        .key(keys::pair(from, to))
        .arg(request_id)
        .arg(from)
        .arg(to)
        .arg(status.as_str())
        .arg(now)
        .invoke_async(&mut store.conn())
        .await?;
    if created == 0 {
        return Err(AppError::Conflict("a request between you two already exists".into()));
    }
    let mut pipe = redis::pipe();
    pipe.sadd(keys::seen(from), to)
        .ignore()
        .sadd(keys::seen(to), from)
        .ignore();
    if status == SendStatus::Interested {
        pipe.zadd(keys::inbox(to), inbox_entry(request_id, from), 0).ignore();
    }
    pipe.query_async::<()>(&mut store.conn()).await?;
    Ok(())
}

/// Reviews request `request_id` as `me`; returns the sender. 404 unless it is a request
/// `me` received and has not reviewed; 409 if a concurrent review got there first.
pub async fn review(
    store: &Store,
    me: &str,
    request_id: &str,
    status: ReviewStatus,
    now: &str,
    now_ms: i64,
) -> Result<String, AppError> {
    let not_found = || AppError::NotFound("no pending request with this id was sent to you".into());
    let from = pending_sender(store, me, request_id, status)
        .await?
        .ok_or_else(not_found)?;
    let outcome: String = REVIEW
        .key(keys::pair(me, &from))
        .arg(request_id)
        .arg(me)
        .arg(status.as_str())
        .arg(now)
        .invoke_async(&mut store.conn())
        .await?;
    let mut pipe = redis::pipe();
    pipe.zrem(keys::inbox(me), inbox_entry(request_id, &from)).ignore();
    if outcome == "ok" && status == ReviewStatus::Accepted {
        pipe.zadd(keys::connections(me), &from, now_ms)
            .ignore()
            .zadd(keys::connections(&from), me, now_ms)
            .ignore();
    }
    pipe.query_async::<()>(&mut store.conn()).await?;
    match outcome.as_str() {
        "ok" => Ok(from),
        "missing" => Err(not_found()),
        other => Err(AppError::Conflict(format!("this request was already {other}"))),
    }
}

/// The sender of the pending request `request_id` in `me`'s inbox, after checking that
/// the projections an acceptance writes (both users' connections) can be written.
/// One round trip; one more for the sender's connections when accepting.
async fn pending_sender(
    store: &Store,
    me: &str,
    request_id: &str,
    status: ReviewStatus,
) -> Result<Option<String>, AppError> {
    let (entries, my_connections): (Vec<String>, String) = redis::pipe()
        .cmd("ZRANGEBYLEX")
        .arg(keys::inbox(me))
        .arg(format!("[{request_id}:"))
        .arg(format!("({request_id};"))
        .arg("LIMIT")
        .arg(0)
        .arg(1)
        .cmd("TYPE")
        .arg(keys::connections(me))
        .query_async(&mut store.conn())
        .await?;
    let Some((_, from)) = entries.first().and_then(|e| parse_inbox_entry(e)) else {
        return Ok(None);
    };
    if status == ReviewStatus::Accepted {
        script::expect_type(&keys::connections(me), &my_connections, "zset")?;
        let theirs: String = redis::cmd("TYPE")
            .arg(keys::connections(&from))
            .query_async(&mut store.conn())
            .await?;
        script::expect_type(&keys::connections(&from), &theirs, "zset")?;
    }
    Ok(Some(from))
}

/// An inbox member: `<requestId>:<senderId>`. The inbox is a sorted set of these, all
/// scored 0, so it is ordered by request id: UUIDv7 ids of one length sort by time, and
/// a page newest-first is one ZREVRANGEBYLEX from the cursor, never a read of the whole
/// inbox (anyone can send requests, so an inbox has no natural bound).
fn inbox_entry(request_id: &str, from: &str) -> String {
    format!("{request_id}:{from}")
}

/// (request id, sender id) of an inbox member; `None` for a member this code never writes.
fn parse_inbox_entry(entry: &str) -> Option<(String, String)> {
    entry
        .split_once(':')
        .map(|(id, from)| (id.to_string(), from.to_string()))
}

/// One page of the pending requests `me` received, newest first, strictly older than
/// the request id `cursor`: (request id, sender id) rows and the next cursor. One round trip.
pub async fn received(
    store: &Store,
    me: &str,
    cursor: Option<&str>,
    limit: usize,
) -> Result<(Vec<(String, String)>, Option<String>), AppError> {
    let upper = cursor.map(|c| format!("({c}")).unwrap_or_else(|| "+".into());
    let entries: Vec<String> = redis::cmd("ZREVRANGEBYLEX")
        .arg(keys::inbox(me))
        .arg(upper)
        .arg("-")
        .arg("LIMIT")
        .arg(0)
        .arg(limit)
        .query_async(&mut store.conn())
        .await?;
    let next = if entries.len() == limit {
        entries.last().and_then(|e| parse_inbox_entry(e)).map(|(id, _)| id)
    } else {
        None
    };
    Ok((entries.iter().filter_map(|e| parse_inbox_entry(e)).collect(), next))
}

/// Members scored like the cursor that a connections page reads beyond `limit`, so that
/// connections made in the same millisecond as the cursor's are skipped, not lost.
const SAME_MS_SLACK: usize = 100;

/// A connections cursor: `<connectedAtMs>_<userId>` of the last row of a page. The
/// score alone would skip or repeat connections made in the same millisecond.
pub fn connections_cursor(at_ms: i64, user_id: &str) -> String {
    format!("{at_ms}_{user_id}")
}

/// One page of `me`'s connections, most recent first, strictly after `cursor` (see
/// [`connections_cursor`]): (user id, connected at ms) rows and the next cursor. One round trip.
pub async fn connections(
    store: &Store,
    me: &str,
    cursor: Option<(i64, &str)>,
    limit: usize,
) -> Result<(Vec<(String, i64)>, Option<String>), AppError> {
    let upper = cursor.map_or_else(|| "+inf".to_string(), |(ms, _)| ms.to_string());
    let fetched: Vec<(String, i64)> = redis::cmd("ZREVRANGEBYSCORE")
        .arg(keys::connections(me))
        .arg(upper)
        .arg("-inf")
        .arg("WITHSCORES")
        .arg("LIMIT")
        .arg(0)
        .arg(limit + if cursor.is_some() { SAME_MS_SLACK } else { 0 })
        .query_async(&mut store.conn())
        .await?;
    // Within one score Redis orders members by descending bytes: those at the cursor's
    // millisecond and not below its user were on earlier pages.
    let rows: Vec<(String, i64)> = fetched
        .into_iter()
        .filter(|(id, at)| cursor.is_none_or(|(ms, last)| *at < ms || id.as_str() < last))
        .take(limit)
        .collect();
    let next = if rows.len() == limit {
        rows.last().map(|(id, at)| connections_cursor(*at, id))
    } else {
        None
    };
    Ok((rows, next))
}

/// Most Redis calls one feed page makes while skipping hidden users (each round is a
/// ZREVRANGEBYLEX and an SMISMEMBER): a viewer who has ignored 10,000 people gets a
/// partial page with a cursor after this many calls, not a request that walks them all.
pub const FEED_MAX_SCAN_CALLS: usize = 8;

/// One feed page for `me`: users newest first, strictly after `cursor`, skipping
/// `me` and everyone `me` has a request with (connections included). Returns the
/// page and the cursor of the next page, if there may be one. At most
/// [`FEED_MAX_SCAN_CALLS`] Redis calls: when they are spent the page is partial (even
/// empty) and its cursor resumes after the last user looked at.
pub async fn feed(
    store: &Store,
    me: &str,
    cursor: Option<&str>,
    limit: usize,
) -> Result<(Vec<String>, Option<String>), AppError> {
    let mut conn = store.conn();
    // Wide rounds: a round costs the same round trip whether it reads 50 ids or 500.
    let batch = (limit * 4 + 100).min(500);
    let mut upper = cursor.map(|c| format!("({c}")).unwrap_or_else(|| "+".into());
    let mut page = Vec::with_capacity(limit);
    for _ in 0..FEED_MAX_SCAN_CALLS / 2 {
        let ids: Vec<String> = redis::cmd("ZREVRANGEBYLEX")
            .arg(keys::USERS)
            .arg(&upper)
            .arg("-")
            .arg("LIMIT")
            .arg(0)
            .arg(batch)
            .query_async(&mut conn)
            .await?;
        if ids.is_empty() {
            return Ok((page, None));
        }
        let hidden: Vec<bool> = redis::cmd("SMISMEMBER")
            .arg(keys::seen(me))
            .arg(&ids)
            .query_async(&mut conn)
            .await?;
        for (id, hidden) in ids.iter().zip(hidden) {
            if id != me && !hidden {
                page.push(id.clone());
                if page.len() == limit {
                    let next = page.last().cloned();
                    return Ok((page, next));
                }
            }
        }
        if ids.len() < batch {
            return Ok((page, None));
        }
        upper = format!("({}", ids[ids.len() - 1]);
    }
    // Scan budget spent: a partial page, resuming after the last id looked at.
    Ok((page, upper.strip_prefix('(').map(String::from)))
}
