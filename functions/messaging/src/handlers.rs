//! One function per route: parse, authorize, act, reply.

use devconnect::{
    api::{self, Reply, RequestMeta},
    payloads::MessagesRead,
    session::{Principal, WithUser},
    user, AppError, AppState,
};
use lambda_http::Request;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::{domain, store};

/// The `{userId}` of the conversation: a UUID that is not the caller.
fn other_user(me: &Principal, req: &Request) -> Result<String, AppError> {
    let other = user::parse_user_id(&api::path_param(req, "userId")?)?;
    domain::check_not_self(&me.user_id, &other)?;
    Ok(other)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SendBody {
    text: String,
}

/// POST /messages/{userId} {text} -> 201 {message}. Three round trips.
pub async fn send(state: &AppState, meta: &RequestMeta, req: &Request) -> Result<Reply, AppError> {
    let me = state.authenticate(req, WithUser::No).await?;
    let other = other_user(&me, req)?;
    let body: SendBody = api::json_body(req)?;
    let text = domain::parse_text(&body.text)?;
    let message = store::send(
        &state.store,
        &me.user_id,
        &other,
        &text,
        state.config.message_history_cap,
    )
    .await?;
    let view = message.view();
    state
        .publisher
        .publish(&me.user_id, &meta.request_id, message.sent_event())
        .await?;
    Ok(Reply::created(json!({ "message": view })).rate(&me.rate))
}

/// GET /messages/{userId}?before&limit -> newest first, with the cursor of the next page.
pub async fn history(state: &AppState, req: &Request) -> Result<Reply, AppError> {
    let me = state.authenticate(req, WithUser::No).await?;
    let other = other_user(&me, req)?;
    let limit = api::limit_param(req, domain::DEFAULT_PAGE, domain::MAX_PAGE)?;
    let before = api::query_param(req, "before").map(domain::parse_cursor).transpose()?;
    let messages = store::history(&state.store, &me.user_id, &other, before.as_deref(), limit).await?;
    let next = if messages.len() == limit {
        messages.last().map(|m| m.id.clone())
    } else {
        None
    };
    let views: Vec<Value> = messages.iter().map(store::Message::view).collect();
    Ok(Reply::ok(json!({"messages": views, "nextCursor": next})).rate(&me.rate))
}

/// GET /conversations -> the other user, last message and unread count, most recent first.
pub async fn conversations(state: &AppState, req: &Request) -> Result<Reply, AppError> {
    let me = state.authenticate(req, WithUser::No).await?;
    let limit = api::limit_param(req, domain::DEFAULT_PAGE, domain::MAX_PAGE)?;
    let rows = store::conversations(&state.store, &me.user_id, limit).await?;
    let conversations: Vec<Value> = rows
        .iter()
        .map(|r| json!({"user": r.user.public_view(), "lastMessage": r.last.view(), "unreadCount": r.unread}))
        .collect();
    Ok(Reply::ok(json!({ "conversations": conversations })).rate(&me.rate))
}

/// POST /messages/{userId}/read -> 200 {markedRead}: everything from that user is read.
pub async fn read(state: &AppState, meta: &RequestMeta, req: &Request) -> Result<Reply, AppError> {
    let me = state.authenticate(req, WithUser::No).await?;
    let other = other_user(&me, req)?;
    let count = store::mark_read(&state.store, &me.user_id, &other).await?;
    if count > 0 {
        let read = MessagesRead {
            reader_id: me.user_id.clone(),
            other_user_id: other.clone(),
            count: u64::try_from(count).unwrap_or_default(),
            read_at: user::now_rfc3339(),
        };
        state
            .publisher
            .publish(&me.user_id, &meta.request_id, read)
            .await?;
    }
    Ok(Reply::ok(json!({ "markedRead": count })).rate(&me.rate))
}
