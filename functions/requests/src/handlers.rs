//! One function per route: parse, authorize, act, reply.

use devconnect::{
    api::{self, Reply, RequestMeta},
    payloads::{ConnectionRequest, ConnectionReview},
    session::WithUser,
    user, AppError, AppState,
};
use lambda_http::Request;
use serde_json::{json, Value};

use crate::{
    domain::{self, ReviewStatus, SendStatus},
    store,
};

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
    let now = user::now_rfc3339();
    store::send(&state.store, &request_id, &me.user_id, &to, status, &now).await?;
    let request = ConnectionRequest {
        id: request_id,
        from_user_id: me.user_id.clone(),
        to_user_id: to,
        status: status.as_str().into(),
        created_at: now,
    };
    state
        .publisher
        .publish(&me.user_id, &meta.request_id, status.event(request.clone()))
        .await?;
    Ok(Reply::created(json!({ "request": request })).rate(&me.rate))
}

/// POST /requests/review/{status}/{requestId} -> 200 {request}.
pub async fn review(state: &AppState, meta: &RequestMeta, req: &Request) -> Result<Reply, AppError> {
    let me = state.authenticate(req, WithUser::No).await?;
    let status = ReviewStatus::parse(&api::path_param(req, "status")?)?;
    let request_id = uuid::Uuid::parse_str(&api::path_param(req, "requestId")?)
        .map_err(|_| AppError::Validation("requestId must be a UUID".into()))?
        .to_string();
    let now = user::now_rfc3339();
    let from = store::review(&state.store, &me.user_id, &request_id, status, &now, user::now_ms()).await?;
    let request = ConnectionReview {
        id: request_id,
        from_user_id: from,
        to_user_id: me.user_id.clone(),
        status: status.as_str().into(),
        reviewed_at: now,
    };
    state
        .publisher
        .publish(&me.user_id, &meta.request_id, status.event(request.clone()))
        .await?;
    Ok(Reply::ok(json!({ "request": request })).rate(&me.rate))
}

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
    let requests: Vec<Value> = rows
        .iter()
        .filter_map(|(id, from)| {
            profiles
                .get(from)
                .map(|p| json!({"id": id, "fromUser": p, "status": "interested"}))
        })
        .collect();
    Ok(Reply::ok(json!({"requests": requests, "nextCursor": next})).rate(&me.rate))
}

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
    let connections: Vec<Value> = rows
        .iter()
        .filter_map(|(id, at)| {
            profiles
                .get(id)
                .map(|p| json!({"user": p, "connectedAt": user::rfc3339_from_ms(*at)}))
        })
        .collect();
    Ok(Reply::ok(json!({"connections": connections, "nextCursor": next})).rate(&me.rate))
}

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
    Ok(Reply::ok(json!({"users": users, "nextCursor": next})).rate(&me.rate))
}

fn by_id(views: Vec<Value>) -> std::collections::HashMap<String, Value> {
    views
        .into_iter()
        .filter_map(|v| Some((v["id"].as_str()?.to_string(), v)))
        .collect()
}
