//! One function per route: parse, authorize, act, reply.

use devconnect::{
    api::{self, Reply, RequestMeta},
    clock,
    session::WithUser,
    user, AppError, AppState,
};
use devconnect::{
    openapi::ErrorBody,
    payloads::{ConnectionRequest, ConnectionReview},
    user::PublicProfile,
};
use lambda_http::Request;
use serde::Serialize;
use utoipa::ToSchema;

use crate::{
    domain::{self, ReviewStatus, SendStatus},
    store,
};

/// This function's part of docs/openapi.json (see `devconnect::openapi`).
#[derive(utoipa::OpenApi)]
#[openapi(paths(send, review, received, connections, feed))]
struct Api;

/// This function's operations, for docs/openapi.json.
pub fn openapi() -> devconnect::openapi::OpenApi {
    <Api as utoipa::OpenApi>::openapi()
}

/// The `{status}` of POST /requests/send (parsed by `domain::SendStatus`).
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)]
enum SendStatusName {
    Interested,
    Ignored,
}

/// The `{status}` of POST /requests/review (parsed by `domain::ReviewStatus`).
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)]
enum ReviewStatusName {
    Accepted,
    Rejected,
}

/// A request as sent.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct SentRequest {
    #[schema(format = Uuid)]
    id: String,
    #[schema(format = Uuid)]
    from_user_id: String,
    #[schema(format = Uuid)]
    to_user_id: String,
    /// `interested` or `ignored`.
    status: String,
    /// RFC 3339.
    created_at: String,
}

/// POST /requests/send/...
#[derive(Serialize, ToSchema)]
struct Sent {
    request: SentRequest,
}

/// A request as reviewed.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct ReviewedRequest {
    #[schema(format = Uuid)]
    id: String,
    #[schema(format = Uuid)]
    from_user_id: String,
    #[schema(format = Uuid)]
    to_user_id: String,
    /// `accepted` or `rejected`.
    status: String,
    /// RFC 3339.
    reviewed_at: String,
}

/// POST /requests/review/...
#[derive(Serialize, ToSchema)]
struct Reviewed {
    request: ReviewedRequest,
}

/// A pending request the caller received.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct ReceivedRequest {
    #[schema(format = Uuid)]
    id: String,
    from_user: PublicProfile,
    /// Always `interested`.
    status: &'static str,
}

/// GET /requests/received.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct ReceivedPage {
    /// Newest first.
    requests: Vec<ReceivedRequest>,
    /// Pass as `cursor` for the next page; null on the last.
    next_cursor: Option<String>,
}

/// One of the caller's connections.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct Connection {
    user: PublicProfile,
    /// RFC 3339.
    connected_at: String,
}

/// GET /connections.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct ConnectionPage {
    /// Most recent first.
    connections: Vec<Connection>,
    /// Pass as `cursor` for the next page; null on the last.
    next_cursor: Option<String>,
}

/// GET /feed.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct FeedPage {
    /// People to meet, newest first.
    users: Vec<PublicProfile>,
    /// Pass as `cursor` for the next page; null on the last.
    next_cursor: Option<String>,
}

#[utoipa::path(post, path = "/requests/send/{status}/{toUserId}",
    params(
        ("status" = inline(SendStatusName), Path),
        ("toUserId" = String, Path, format = Uuid),
    ),
    responses(
        (status = 201, description = "Sent", body = Sent),
        (status = 404, description = "No such user", body = ErrorBody),
        (status = 409, description = "A request between the two exists already", body = ErrorBody),
    ))]
/// POST /requests/send/{status}/{toUserId} -> 201 {request}.
pub async fn send(state: &AppState, meta: &RequestMeta, req: &Request) -> Result<Reply, AppError> {
    let me = state.authenticate(req, WithUser::No).await?;
    let status = SendStatus::parse(&api::path_param(req, "status")?)?;
    let to = user::parse_user_id(&api::path_param(req, "toUserId")?)?;
    domain::check_not_self(&me.user_id, &to)?;
    if !store::check_send(&state.store, &me.user_id, &to).await? {
        return Err(AppError::NotFound("no such user".into()));
    }
    let request_id = uuid::Uuid::now_v7().to_string();
    let now = clock::now_rfc3339();
    store::send(&state.store, &request_id, &me.user_id, &to, status, &now).await?;
    let request = SentRequest {
        id: request_id,
        from_user_id: me.user_id.clone(),
        to_user_id: to,
        status: status.as_str().into(),
        created_at: now,
    };
    state
        .publisher
        .publish(
            &me.user_id,
            &meta.request_id,
            status.event(ConnectionRequest {
                id: request.id.clone(),
                from_user_id: request.from_user_id.clone(),
                to_user_id: request.to_user_id.clone(),
                status: request.status.clone(),
                created_at: request.created_at.clone(),
            }),
        )
        .await?;
    Ok(Reply::created(Sent { request }).rate(&me.rate))
}

#[utoipa::path(post, path = "/requests/review/{status}/{requestId}",
    params(
        ("status" = inline(ReviewStatusName), Path),
        ("requestId" = String, Path, format = Uuid),
    ),
    responses(
        (status = 200, description = "Reviewed", body = Reviewed),
        (status = 404, description = "No pending request with this id was sent to the caller", body = ErrorBody),
        (status = 409, description = "Already reviewed", body = ErrorBody),
    ))]
/// POST /requests/review/{status}/{requestId} -> 200 {request}.
pub async fn review(state: &AppState, meta: &RequestMeta, req: &Request) -> Result<Reply, AppError> {
    let me = state.authenticate(req, WithUser::No).await?;
    let status = ReviewStatus::parse(&api::path_param(req, "status")?)?;
    let request_id = uuid::Uuid::parse_str(&api::path_param(req, "requestId")?)
        .map_err(|_| AppError::Validation("requestId must be a UUID".into()))?
        .to_string();
    let now = clock::now_rfc3339();
    let from = store::review(&state.store, &me.user_id, &request_id, status, &now, clock::now_ms()).await?;
    let request = ReviewedRequest {
        id: request_id,
        from_user_id: from,
        to_user_id: me.user_id.clone(),
        status: status.as_str().into(),
        reviewed_at: now,
    };
    state
        .publisher
        .publish(
            &me.user_id,
            &meta.request_id,
            status.event(ConnectionReview {
                id: request.id.clone(),
                from_user_id: request.from_user_id.clone(),
                to_user_id: request.to_user_id.clone(),
                status: request.status.clone(),
                reviewed_at: request.reviewed_at.clone(),
            }),
        )
        .await?;
    Ok(Reply::ok(Reviewed { request }).rate(&me.rate))
}

#[utoipa::path(get, path = "/requests/received", params(
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 100, description = "Page size (default 50)"),
        ("cursor" = Option<String>, Query, description = "`nextCursor` of the previous page"),
    ), responses((status = 200, description = "Pending requests", body = ReceivedPage)))]
/// GET /requests/received?limit&cursor -> pending interested requests, newest first, with
/// the sender's profile and the cursor of the next page.
pub async fn received(state: &AppState, req: &Request) -> Result<Reply, AppError> {
    let me = state.authenticate(req, WithUser::No).await?;
    let limit = api::limit_param(req, domain::PAGE_DEFAULT_LIMIT, domain::PAGE_MAX_LIMIT)?;
    let cursor = api::query_param(req, "cursor")
        .map(|c| {
            uuid::Uuid::parse_str(c)
                .map(|u| u.hyphenated().to_string())
                .map_err(|_| AppError::Validation("cursor is not valid".into()))
        })
        .transpose()?;
    let (rows, next) = store::received(&state.store, &me.user_id, cursor.as_deref(), limit).await?;
    let senders: Vec<String> = rows.iter().map(|(_, from)| from.clone()).collect();
    let profiles = by_id(user::summaries(&state.store, &senders).await?);
    let requests: Vec<ReceivedRequest> = rows
        .iter()
        .filter_map(|(id, from)| {
            profiles.get(from).map(|p| ReceivedRequest {
                id: id.clone(),
                from_user: p.clone(),
                status: "interested",
            })
        })
        .collect();
    Ok(Reply::ok(ReceivedPage {
        requests,
        next_cursor: next,
    })
    .rate(&me.rate))
}

#[utoipa::path(get, path = "/connections", params(
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 100, description = "Page size (default 50)"),
        ("cursor" = Option<String>, Query, description = "`nextCursor` of the previous page"),
    ), responses((status = 200, description = "Connections", body = ConnectionPage)))]
/// GET /connections?limit&cursor -> connected users, most recent first, with the cursor
/// of the next page.
pub async fn connections(state: &AppState, req: &Request) -> Result<Reply, AppError> {
    let me = state.authenticate(req, WithUser::No).await?;
    let limit = api::limit_param(req, domain::PAGE_DEFAULT_LIMIT, domain::PAGE_MAX_LIMIT)?;
    let cursor = api::query_param(req, "cursor")
        .map(domain::parse_connections_cursor)
        .transpose()?;
    let cursor_ref = cursor.as_ref().map(|(ms, id)| (*ms, id.as_str()));
    let (rows, next) = store::connections(&state.store, &me.user_id, cursor_ref, limit).await?;
    let ids: Vec<String> = rows.iter().map(|(id, _)| id.clone()).collect();
    let profiles = by_id(user::summaries(&state.store, &ids).await?);
    let connections: Vec<Connection> = rows
        .iter()
        .filter_map(|(id, at)| {
            profiles.get(id).map(|p| Connection {
                user: p.clone(),
                connected_at: clock::rfc3339_from_ms(*at),
            })
        })
        .collect();
    Ok(Reply::ok(ConnectionPage {
        connections,
        next_cursor: next,
    })
    .rate(&me.rate))
}

#[utoipa::path(get, path = "/feed", params(
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 100, description = "Page size (default 20)"),
        ("cursor" = Option<String>, Query, description = "`nextCursor` of the previous page"),
    ), responses((status = 200, description = "People to meet", body = FeedPage)))]
/// GET /feed?limit&cursor -> people to meet, newest first, with a cursor for the next page.
pub async fn feed(state: &AppState, req: &Request) -> Result<Reply, AppError> {
    let me = state.authenticate(req, WithUser::No).await?;
    let limit = api::limit_param(req, domain::FEED_DEFAULT_LIMIT, domain::FEED_MAX_LIMIT)?;
    let cursor = match api::query_param(req, "cursor") {
        Some(c) => Some(user::parse_user_id(c).map_err(|_| AppError::Validation("cursor is not valid".into()))?),
        None => None,
    };
    let (ids, next) = store::feed(&state.store, &me.user_id, cursor.as_deref(), limit).await?;
    let users = user::summaries(&state.store, &ids).await?;
    Ok(Reply::ok(FeedPage {
        users,
        next_cursor: next,
    })
    .rate(&me.rate))
}

fn by_id(views: Vec<PublicProfile>) -> std::collections::HashMap<String, PublicProfile> {
    views.into_iter().map(|v| (v.id.clone(), v)).collect()
}
