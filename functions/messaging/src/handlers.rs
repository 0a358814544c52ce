//! One function per route: parse, authorize, act, reply.

use devconnect::{
    api::{self, Reply, RequestMeta},
    clock,
    payloads::MessagesRead,
    session::{Principal, WithUser},
    user, AppError, AppState,
};
use devconnect::{openapi::ErrorBody, user::PublicProfile};
use lambda_http::Request;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{domain, store};

/// This function's part of docs/openapi.json (see `devconnect::openapi`).
#[derive(utoipa::OpenApi)]
#[openapi(paths(send, history, conversations, read))]
struct Api;

/// This function's operations, for docs/openapi.json.
pub fn openapi() -> devconnect::openapi::OpenApi {
    <Api as utoipa::OpenApi>::openapi()
}

/// One message.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct MessageView {
    /// Also the `before` cursor of older pages.
    id: String,
    #[schema(format = Uuid)]
    from_user_id: String,
    #[schema(format = Uuid)]
    to_user_id: String,
    /// 1 to 2000 characters.
    text: String,
    /// RFC 3339.
    sent_at: String,
}

impl MessageView {
    fn of(m: &store::Message) -> Self {
        Self {
            id: m.id.clone(),
            from_user_id: m.from.clone(),
            to_user_id: m.to.clone(),
            text: m.text.clone(),
            sent_at: clock::rfc3339_from_ms(m.sent_at_ms()),
        }
    }
}

/// POST /messages/{userId}.
#[derive(Serialize, ToSchema)]
struct SentMessage {
    message: MessageView,
}

/// GET /messages/{userId}.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct MessagePage {
    /// Newest first.
    messages: Vec<MessageView>,
    /// Pass as `before` for older messages; null on the last page.
    next_cursor: Option<String>,
}

/// One conversation of the caller.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct Conversation {
    user: PublicProfile,
    last_message: MessageView,
    /// Messages from that user the caller has not read.
    unread_count: i64,
}

/// GET /conversations.
#[derive(Serialize, ToSchema)]
struct ConversationList {
    /// Most recent first.
    conversations: Vec<Conversation>,
}

/// POST /messages/{userId}/read.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct MarkedRead {
    /// How many messages became read.
    marked_read: i64,
}

/// The `{userId}` of the conversation, as a UUID.
fn target(req: &Request) -> Result<String, AppError> {
    user::parse_user_id(&api::path_param(req, "userId")?)
}

/// The `{userId}` of the conversation: a UUID that is not the caller.
fn other_user(me: &Principal, req: &Request) -> Result<String, AppError> {
    let other = target(req)?;
    domain::check_not_self(&me.user_id, &other)?;
    Ok(other)
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct SendBody {
    /// 1 to 2000 characters.
    #[schema(min_length = 1, max_length = 2000)]
    text: String,
}

#[utoipa::path(post, path = "/messages/{userId}", request_body = SendBody, params(("userId" = String, Path, format = Uuid, description = "The other user")), responses(
    (status = 201, description = "Sent", body = SentMessage),
    (status = 403, description = "Only connections message each other", body = ErrorBody),
))]
/// POST /messages/{userId} {text} -> 201 {message}. Two round trips.
pub async fn send(state: &AppState, meta: &RequestMeta, req: &Request) -> Result<Reply, AppError> {
    // The send's checks ride on the authentication round trip; the send is the second.
    let target = target(req);
    let (me, checks) = state
        .authenticate_and(req, WithUser::No, |pipe, me| {
            if let Ok(other) = &target {
                store::send_checks(pipe, me, other);
            }
        })
        .await?;
    let other = target?;
    domain::check_not_self(&me.user_id, &other)?;
    let body: SendBody = api::json_body(req)?;
    let text = domain::parse_text(&body.text)?;
    let message = store::send(
        &state.store,
        checks,
        &me.user_id,
        &other,
        &text,
        state.config.message_history_cap,
    )
    .await?;
    state
        .publisher
        .publish(&me.user_id, &meta.request_id, message.sent_event())
        .await?;
    Ok(Reply::created(SentMessage {
        message: MessageView::of(&message),
    })
    .rate(&me.rate))
}

#[utoipa::path(get, path = "/messages/{userId}", params(
    ("userId" = String, Path, format = Uuid, description = "The other user"),
    ("before" = Option<String>, Query, description = "`nextCursor` of the previous page"),
    ("limit" = Option<u32>, Query, minimum = 1, maximum = 100, description = "Page size (default 50)"),
), responses(
    (status = 200, description = "Messages between the two", body = MessagePage),
    (status = 403, description = "Only connections message each other", body = ErrorBody),
))]
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
    Ok(Reply::ok(MessagePage {
        messages: messages.iter().map(MessageView::of).collect(),
        next_cursor: next,
    })
    .rate(&me.rate))
}

#[utoipa::path(get, path = "/conversations", params(
    ("limit" = Option<u32>, Query, minimum = 1, maximum = 100, description = "How many (default 50)"),
), responses((status = 200, description = "Conversations", body = ConversationList)))]
/// GET /conversations -> the other user, last message and unread count, most recent first.
pub async fn conversations(state: &AppState, req: &Request) -> Result<Reply, AppError> {
    let me = state.authenticate(req, WithUser::No).await?;
    let limit = api::limit_param(req, domain::DEFAULT_PAGE, domain::MAX_PAGE)?;
    let rows = store::conversations(&state.store, &me.user_id, limit).await?;
    let conversations: Vec<Conversation> = rows
        .iter()
        .map(|r| Conversation {
            user: r.user.public_view(),
            last_message: MessageView::of(&r.last),
            unread_count: r.unread,
        })
        .collect();
    Ok(Reply::ok(ConversationList { conversations }).rate(&me.rate))
}

#[utoipa::path(post, path = "/messages/{userId}/read", params(("userId" = String, Path, format = Uuid, description = "The other user")), responses(
    (status = 200, description = "Everything from that user is read", body = MarkedRead),
    (status = 403, description = "Only connections message each other", body = ErrorBody),
))]
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
            read_at: clock::now_rfc3339(),
        };
        state.publisher.publish(&me.user_id, &meta.request_id, read).await?;
    }
    Ok(Reply::ok(MarkedRead { marked_read: count }).rate(&me.rate))
}
