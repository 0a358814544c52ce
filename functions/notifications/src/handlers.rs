//! The HTTP routes of notifications.

use devconnect::{
    api::{self, Reply},
    session::WithUser,
    AppError, AppState,
};
use lambda_http::Request;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::store;

/// This function's part of docs/openapi.json (see `devconnect::openapi`).
#[derive(utoipa::OpenApi)]
#[openapi(paths(list, mark_read))]
struct Api;

/// This function's operations, for docs/openapi.json.
pub fn openapi() -> devconnect::openapi::OpenApi {
    <Api as utoipa::OpenApi>::openapi()
}

/// One notification, as the consumer stored it.
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct NotificationView {
    /// The id of the event it comes from.
    id: String,
    /// `connection_request`, `connection_accepted`, `message`, `welcome`, ...
    #[serde(rename = "type")]
    kind: String,
    #[schema(format = Uuid)]
    recipient_id: String,
    /// Who caused it.
    actor_id: String,
    /// RFC 3339.
    created_at: String,
    /// Details for the client, by type.
    #[schema(value_type = Object)]
    data: serde_json::Value,
}

/// GET /notifications.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct NotificationList {
    /// Newest first.
    notifications: Vec<NotificationView>,
    /// Notifications since the last POST /notifications/read.
    unread_count: i64,
}

#[utoipa::path(get, path = "/notifications", params(
    ("limit" = Option<u32>, Query, minimum = 1, maximum = 100, description = "How many (default 20)"),
), responses((status = 200, description = "The caller's notifications", body = NotificationList)))]
/// GET /notifications?limit -> newest first, with the unread count.
pub async fn list(state: &AppState, req: &Request) -> Result<Reply, AppError> {
    let me = state.authenticate(req, WithUser::No).await?;
    let limit = api::limit_param(req, 20, 100)?;
    let (notifications, unread) = store::list(&state.store, &me.user_id, limit).await?;
    // Stored by the consumer as this same shape; an entry that is not (never written by
    // this code) is skipped rather than shown half-formed.
    let notifications = notifications
        .into_iter()
        .filter_map(|n| serde_json::from_value(n).ok())
        .collect();
    Ok(Reply::ok(NotificationList {
        notifications,
        unread_count: unread,
    })
    .rate(&me.rate))
}

#[utoipa::path(post, path = "/notifications/read", responses((status = 204, description = "All read")))]
/// POST /notifications/read -> 204; the unread count is 0.
pub async fn mark_read(state: &AppState, req: &Request) -> Result<Reply, AppError> {
    let me = state.authenticate(req, WithUser::No).await?;
    store::mark_read(&state.store, &me.user_id).await?;
    Ok(Reply::no_content().rate(&me.rate))
}
