//! The HTTP routes of notifications.

use devconnect::{
    api::{self, Reply},
    session::WithUser,
    AppError, AppState,
};
use lambda_http::Request;
use serde_json::json;

use crate::store;

/// GET /notifications?limit -> newest first, with the unread count.
pub async fn list(state: &AppState, req: &Request) -> Result<Reply, AppError> {
    let me = state.authenticate(req, WithUser::No).await?;
    let limit = api::limit_param(req, 20, 100)?;
    let (notifications, unread) = store::list(&state.store, &me.user_id, limit).await?;
    Ok(Reply::ok(json!({"notifications": notifications, "unreadCount": unread})).rate(&me.rate))
}

/// POST /notifications/read -> 204; the unread count is 0.
pub async fn mark_read(state: &AppState, req: &Request) -> Result<Reply, AppError> {
    let me = state.authenticate(req, WithUser::No).await?;
    store::mark_read(&state.store, &me.user_id).await?;
    Ok(Reply::no_content().rate(&me.rate))
}
