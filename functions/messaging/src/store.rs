//! Redis persistence of conversations: one script per operation, in the pair's slot.

use std::{collections::HashMap, sync::LazyLock};

use devconnect::{keys, payloads::MessageSent, script, store::Store, user::User, AppError};
use redis::{AsyncCommands, Script};

/// Appends a message if the two are connected; returns its id, or nil if not connected.
/// Checks every key's type and the receiver's unread counter before the XADD: a
/// HINCRBY failing after it would leave a message the receiver is never told about.
static SEND: LazyLock<Script> = LazyLock::new(|| {
    script::atomic(
        r#"
local bad = wrong_types({KEYS[1], 'hash', KEYS[2], 'stream', KEYS[3], 'hash'})
  or not_integers(KEYS[3], {'unread:' .. ARGV[2]})
if bad then return redis.error_reply(bad) end
if redis.call('HGET', KEYS[1], 'status') ~= 'accepted' then return false end
local id = redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[4], '*', 'from', ARGV[1], 'to', ARGV[2], 'text', ARGV[3])
redis.call('HINCRBY', KEYS[3], 'unread:' .. ARGV[2], 1)
redis.call('HSET', KEYS[3], 'lastId', id, 'lastFrom', ARGV[1], 'lastText', ARGV[3])
return id
"#,
    )
});

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

/// Stores a message from `from` to `to`: 403 unless they are connected. Two round trips:
/// the script, then both users' conversation lists.
pub async fn send(store: &Store, from: &str, to: &str, text: &str, cap: u32) -> Result<Message, AppError> {
    let id: Option<String> = SEND
        .key(keys::pair(from, to))
        .key(keys::messages(from, to))
        .key(keys::conversation(from, to))
        .arg(from)
        .arg(to)
        .arg(text)
        .arg(cap)
        .invoke_async(&mut store.conn())
        .await?;
    let message = Message {
        id: id.ok_or_else(not_connected)?,
        from: from.into(),
        to: to.into(),
        text: text.into(),
    };
    let at = message.sent_at_ms();
    // Each user's conversation index lives in that user's slot, so it cannot join the
    // script. It is a projection of the stream, which already holds the message: if an
    // index refuses (a key of the wrong type, Redis gone a moment after the script),
    // the message still reads in GET /messages and only that user's GET /conversations
    // misses the row. Failing the request now would make the client send the message
    // twice and leave its event unproduced, so the failure is logged and the send stands.
    let indexed = redis::pipe()
        .zadd(keys::conversations(from), to, at)
        .ignore()
        .zadd(keys::conversations(to), from, at)
        .ignore()
        .query_async::<()>(&mut store.conn())
        .await;
    if let Err(e) = indexed {
        tracing::error!(error = %e, message = %message.id, "conversation index not updated; the message is stored");
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

/// `me`'s conversations, most recent first: two round trips (list, then one pipeline of details).
pub async fn conversations(store: &Store, me: &str, limit: usize) -> Result<Vec<ConversationRow>, AppError> {
    let mut conn = store.conn();
    let others: Vec<String> = conn.zrevrange(keys::conversations(me), 0, limit as isize - 1).await?;
    if others.is_empty() {
        return Ok(Vec::new());
    }
    let mut pipe = redis::pipe();
    for other in &others {
        pipe.hgetall(keys::conversation(me, other)).hgetall(keys::user(other));
    }
    let rows: Vec<HashMap<String, String>> = pipe.query_async(&mut conn).await?;
    let mut out = Vec::with_capacity(others.len());
    for (other, pair) in others.iter().zip(rows.chunks(2)) {
        let (mut meta, user) = (pair[0].clone(), pair[1].clone());
        let Some(user) = User::from_fields(user)? else { continue };
        let unread = meta
            .get(&format!("unread:{me}"))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        let from = meta.remove("lastFrom").unwrap_or_default();
        let to = if from == me { other.clone() } else { me.to_string() };
        let last = Message {
            id: meta.remove("lastId").unwrap_or_default(),
            from,
            to,
            text: meta.remove("lastText").unwrap_or_default(),
        };
        out.push(ConversationRow { user, last, unread });
    }
    Ok(out)
}
