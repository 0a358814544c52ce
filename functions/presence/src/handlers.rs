//! One function per route: parse, authorize, act, reply.

use devconnect::{
    api::{self, Reply, RequestMeta},
    session::WithUser,
    user, AppError, AppState,
};
use lambda_http::Request;
use serde_json::{json, Value};

use crate::{store, MAX_BATCH};

fn timeout_ms(state: &AppState) -> i64 {
    i64::try_from(state.config.presence_timeout.as_millis()).unwrap_or(i64::MAX)
}

/// POST /presence/heartbeat -> 200 {online: true}. Two round trips.
pub async fn heartbeat(state: &AppState, meta: &RequestMeta, req: &Request) -> Result<Reply, AppError> {
    let me = state.authenticate(req, WithUser::No).await?;
    let now = crate::mark_online(state, &me.user_id, &meta.request_id).await?;
    Ok(Reply::ok(json!({"online": true, "lastSeen": user::rfc3339_from_ms(now)})).rate(&me.rate))
}

/// POST /presence/offline -> 204.
pub async fn offline(state: &AppState, meta: &RequestMeta, req: &Request) -> Result<Reply, AppError> {
    let me = state.authenticate(req, WithUser::No).await?;
    crate::mark_offline(state, &me.user_id, &meta.request_id, "explicit").await?;
    Ok(Reply::no_content().rate(&me.rate))
}

/// GET /presence?userIds=a,b -> presence of those that are the caller or a connection;
/// the rest are listed under `notVisible`. Two round trips for up to 100 ids.
pub async fn lookup(state: &AppState, req: &Request) -> Result<Reply, AppError> {
    let me = state.authenticate(req, WithUser::No).await?;
    let ids = parse_ids(api::query_param(req, "userIds"))?;
    let rows = store::lookup(&state.store, &me.user_id, &ids, user::now_ms(), timeout_ms(state)).await?;
    let mut visible: Vec<Value> = Vec::new();
    let mut hidden: Vec<&str> = Vec::new();
    for (id, presence) in &rows {
        match presence {
            Some(p) => visible.push(json!({
                "userId": id,
                "online": p.online,
                "lastSeen": p.last_seen.map(user::rfc3339_from_ms),
            })),
            None => hidden.push(id),
        }
    }
    Ok(Reply::ok(json!({"presence": visible, "notVisible": hidden})).rate(&me.rate))
}

/// `userIds`: 1..=100 comma-separated UUIDs; duplicates collapse.
fn parse_ids(raw: Option<&str>) -> Result<Vec<String>, AppError> {
    let raw = raw.ok_or_else(|| AppError::Validation("userIds is required".into()))?;
    let mut ids: Vec<String> = Vec::new();
    for part in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let id = user::parse_user_id(part)?;
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    if ids.is_empty() || ids.len() > MAX_BATCH {
        return Err(AppError::Validation(format!(
            "userIds must name 1 to {MAX_BATCH} users"
        )));
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "0190c3a4-0000-7000-8000-00000000000a";

    #[test]
    fn user_ids_are_required() {
        assert!(parse_ids(None).is_err());
        assert!(parse_ids(Some(" , ")).is_err());
    }

    #[test]
    fn duplicates_collapse() {
        assert_eq!(parse_ids(Some(&format!("{A},{A}"))).unwrap().len(), 1);
    }

    #[test]
    fn more_than_a_hundred_ids_are_rejected() {
        let many: Vec<String> = (0..101).map(|i| format!("0190c3a4-0000-7000-8000-{i:012}")).collect();
        assert!(parse_ids(Some(&many.join(","))).is_err());
        assert!(parse_ids(Some(&many[..100].join(","))).is_ok());
    }

    #[test]
    fn a_malformed_id_is_rejected() {
        assert!(parse_ids(Some("abc")).is_err());
    }
}
