//! Redis persistence of conversations: one script per write, in the pair's slot.

use std::{collections::HashMap, sync::LazyLock};

use devconnect::{clock, keys, payloads::MessageSent, script, store::Store, user::User, AppError};
use redis::{AsyncCommands, Pipeline, Script, Value};

/// A page of history, newest first, if the two are connected. Read-only, so an error
/// (a key of the wrong type) cannot leave anything half-written.
static HISTORY: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if redis.call('HGET', KEYS[1], 'status') ~= 'accepted' then return false end
return redis.call('XREVRANGE', KEYS[2], ARGV[1], '-', 'COUNT', ARGV[2])
"#,
    )
});

/// Zeroes the reader's unread count if the two are connected; returns how many were unread.
/// The counter must be an integer before it is zeroed: `tonumber` of garbage is nil,
/// which would both overwrite the counter and read as "not connected".
static READ: LazyLock<Script> = LazyLock::new(|| {
    script::atomic(
        r#"
local field = 'unread:' .. ARGV[1]
local bad = wrong_types({KEYS[1], 'hash', KEYS[2], 'hash'}) or not_integers(KEYS[2], {field})
if bad then return redis.error_reply(bad) end
if redis.call('HGET', KEYS[1], 'status') ~= 'accepted' then return false end
local n = tonumber(redis.call('HGET', KEYS[2], field) or '0')
redis.call('HSET', KEYS[2], field, 0)
return n
"#,
    )
});

fn not_connected() -> AppError {
    AppError::Forbidden("you can only message your connections".into())
}

/// A stored message.
#[derive(Debug, Clone)]
pub struct Message {
    /// Stream id, `<ms>-<seq>`: total order within the conversation, and the cursor.
    pub id: String,
    /// Sender.
    pub from: String,
    /// Receiver.
    pub to: String,
    /// Text.
    pub text: String,
}

impl Message {
    fn from_entry(id: String, mut fields: HashMap<String, String>) -> Self {
        let mut take = |k: &str| fields.remove(k).unwrap_or_default();
        Self {
            from: take("from"),
            to: take("to"),
            text: take("text"),
            id,
        }
    }

    /// When Redis stored it (the id's millisecond part).
    pub fn sent_at_ms(&self) -> i64 {
        self.id.split('-').next().and_then(|ms| ms.parse().ok()).unwrap_or(0)
    }

    /// The API view (GET /messages): the MESSAGE_SENT payload's fields.
    pub fn view(&self) -> serde_json::Value {
        serde_json::to_value(self.sent_event()).unwrap_or_default()
    }

    /// The MESSAGE_SENT payload (the same fields GET /messages shows).
    pub fn sent_event(&self) -> MessageSent {
        MessageSent {
            id: self.id.clone(),
            from_user_id: self.from.clone(),
            to_user_id: self.to.clone(),
            text: self.text.clone(),
            sent_at: devconnect::clock::rfc3339_from_ms(self.sent_at_ms()),
        }
    }
}

/// The receiver's unread counter in the conversation hash.
fn unread_field(receiver: &str) -> String {
    format!("unread:{receiver}")
}

/// Adds the reads a send depends on to the request's authentication round trip (three
/// replies, for [`send`]): the pair's status, the stream's type and the receiver's
/// unread counter. Checking the keys there lets the send's writes (the message with its
/// count, and both conversation lists) go out together in one more round trip.
pub fn send_checks(pipe: &mut Pipeline, from: &str, to: &str) {
    pipe.hget(keys::pair(from, to), "status")
        .cmd("TYPE")
        .arg(keys::messages(from, to))
        .hget(keys::conversation(from, to), unread_field(to));
}

/// 403 unless [`send_checks`] found the two connected; a bug (500, nothing written) if a
/// conversation key is of the wrong type or the counter is not an integer.
fn check_sendable(checks: Vec<Value>, from: &str, to: &str) -> Result<(), AppError> {
    let [status, stream, unread]: [Value; 3] = checks
        .try_into()
        .map_err(|_| AppError::bug("send checks: three replies expected"))?;
    let status: Option<String> = script::reply(status)?;
    let stream: String = script::reply(stream)?;
    let unread: Option<String> = script::reply(unread)?;
    if status.as_deref() != Some("accepted") {
        return Err(not_connected());
    }
    script::expect_type(&keys::messages(from, to), &stream, "stream")?;
    match unread {
        // An optional minus and at most 15 digits: HINCRBY takes it and cannot overflow.
        Some(n) if n.len() > 15 || n.strip_prefix('-').unwrap_or(&n).parse::<u64>().is_err() || n.contains('+') => {
            Err(AppError::bug(format!(
                "WRONGTYPE {} field {} is not an integer",
                keys::conversation(from, to),
                unread_field(to)
            )))
        }
        _ => Ok(()),
    }
}

/// Stores a message from `from` to `to`, given the replies of [`send_checks`] (403 unless
/// they are connected): one round trip, the message with its unread count, and both users'
/// conversation lists.
///
/// The message and the receiver's unread count are one MULTI in the pair's slot: `XADD`
/// (trimmed to `cap`) and `HINCRBY`, plain commands rather than a script, which cost Redis
/// about three times their own work to run at all (issue 14). MULTI does not roll back
/// a command that fails, so what either could fail on (the stream's type, the counter's
/// type and format) was checked in the request's first round trip ([`check_sendable`]),
/// before this first write; only a writer changing a key's type between the two round
/// trips, which no code of ours does, could leave one without the other.
pub async fn send(
    store: &Store,
    checks: Vec<Value>,
    from: &str,
    to: &str,
    text: &str,
    cap: u32,
) -> Result<Message, AppError> {
    check_sendable(checks, from, to)?;
    let mut stored = redis::pipe();
    stored
        .atomic()
        .cmd("XADD")
        .arg(keys::messages(from, to))
        .arg("MAXLEN")
        .arg(cap)
        .arg("*")
        .arg("from")
        .arg(from)
        .arg("to")
        .arg(to)
        .arg("text")
        .arg(text)
        .hincr(keys::conversation(from, to), unread_field(to), 1)
        .ignore();
    // Each user's conversation index lives in that user's slot, so it cannot join the
    // MULTI. It is a projection of the stream, ordered by this clock rather than the
    // message id's (the same milliseconds, give or take the skew between hosts). If an
    // index refuses (a key of the wrong type), the message still reads in GET /messages
    // and only that user's GET /conversations misses the row. Failing the request then
    // would make the client send the message twice and leave its event unproduced, so
    // the failure is logged and the send stands. Both ZADDs are harmless to repeat.
    let at = clock::now_ms();
    let mut indexes = redis::pipe();
    indexes
        .ignore_errors()
        .zadd(keys::conversations(from), to, at)
        .zadd(keys::conversations(to), from, at);
    // Sent together: one round trip on the multiplexed connection.
    let (mut stored_conn, mut indexes_conn) = (store.conn(), store.conn());
    let (stored, indexed) = tokio::join!(
        stored.query_async::<(String,)>(&mut stored_conn),
        indexes.query_async::<Vec<Value>>(&mut indexes_conn),
    );
    let message = Message {
        id: stored?.0,
        from: from.into(),
        to: to.into(),
        text: text.into(),
    };
    let unindexed = |e: &dyn std::fmt::Display| {
        tracing::error!(error = %e, message = %message.id, "conversation index not updated; the message is stored");
    };
    match indexed {
        Ok(replies) => replies
            .into_iter()
            .filter_map(|r| script::reply::<i64>(r).err())
            .for_each(|e| unindexed(&e)),
        Err(e) => unindexed(&e),
    }
    Ok(message)
}

/// Up to `limit` messages between `me` and `other`, newest first, older than `before`.
pub async fn history(
    store: &Store,
    me: &str,
    other: &str,
    before: Option<&str>,
    limit: usize,
) -> Result<Vec<Message>, AppError> {
    let upper = before.map(|b| format!("({b}")).unwrap_or_else(|| "+".into());
    let entries: Option<Vec<(String, HashMap<String, String>)>> = HISTORY
        .key(keys::pair(me, other))
        .key(keys::messages(me, other))
        .arg(upper)
        .arg(limit)
        .invoke_async(&mut store.conn())
        .await?;
    Ok(entries
        .ok_or_else(not_connected)?
        .into_iter()
        .map(|(id, f)| Message::from_entry(id, f))
        .collect())
}

/// Marks everything from `other` as read by `me`; returns how many were unread.
pub async fn mark_read(store: &Store, me: &str, other: &str) -> Result<i64, AppError> {
    let n: Option<i64> = READ
        .key(keys::pair(me, other))
        .key(keys::conversation(me, other))
        .arg(me)
        .invoke_async(&mut store.conn())
        .await?;
    n.ok_or_else(not_connected)
}

/// One row of GET /conversations.
pub struct ConversationRow {
    /// The other user.
    pub user: User,
    /// The last message.
    pub last: Message,
    /// Messages from them `me` has not read.
    pub unread: i64,
}

/// `me`'s conversations, most recent first: two round trips (the list, then one
/// pipeline of each row's unread count, last message and other user).
pub async fn conversations(store: &Store, me: &str, limit: usize) -> Result<Vec<ConversationRow>, AppError> {
    let mut conn = store.conn();
    let others: Vec<String> = conn.zrevrange(keys::conversations(me), 0, limit as isize - 1).await?;
    if others.is_empty() {
        return Ok(Vec::new());
    }
    let mut pipe = redis::pipe();
    for other in &others {
        pipe.hget(keys::conversation(me, other), unread_field(me))
            .cmd("XREVRANGE")
            .arg(keys::messages(me, other))
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1)
            .hgetall(keys::user(other));
    }
    let mut replies = pipe.query_async::<Vec<Value>>(&mut conn).await?.into_iter();
    let mut out = Vec::with_capacity(others.len());
    for _ in &others {
        let (Some(unread), Some(last), Some(user)) = (replies.next(), replies.next(), replies.next()) else {
            return Err(AppError::bug("conversations: three replies per row expected"));
        };
        let unread: Option<String> = script::reply(unread)?;
        let last: Vec<(String, HashMap<String, String>)> = script::reply(last)?;
        let user: HashMap<String, String> = script::reply(user)?;
        // A row without a user (account deleted) or without a message is not shown.
        let (Some(user), Some((id, fields))) = (User::from_fields(user)?, last.into_iter().next()) else {
            continue;
        };
        out.push(ConversationRow {
            user,
            last: Message::from_entry(id, fields),
            unread: unread.and_then(|n| n.parse().ok()).unwrap_or(0),
        });
    }
    Ok(out)
}
