//! One function per route: parse, authorize, act, reply.

use devconnect::{
    api::{self, Reply, RequestMeta},
    clock,
    session::WithUser,
    user, AppError, AppState,
};
use lambda_http::Request;
use serde::Serialize;
use utoipa::ToSchema;

use crate::{store, MAX_BATCH};

/// This function's part of docs/openapi.json (see `devconnect::openapi`).
#[derive(utoipa::OpenApi)]
#[openapi(paths(heartbeat, offline, lookup))]
struct Api;

/// This function's operations, for docs/openapi.json.
pub fn openapi() -> devconnect::openapi::OpenApi {
    <Api as utoipa::OpenApi>::openapi()
}

/// POST /presence/heartbeat.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct Heartbeat {
    /// Always true.
    online: bool,
    /// RFC 3339.
    last_seen: String,
}

/// One user's presence.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct UserPresence {
    #[schema(format = Uuid)]
    user_id: String,
    /// A heartbeat within the presence timeout (300 s).
    online: bool,
    /// RFC 3339; null if never seen.
    last_seen: Option<String>,
}

/// GET /presence.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct PresenceList {
    /// The caller and their connections among the ids asked for.
    presence: Vec<UserPresence>,
    /// Ids asked for whose presence the caller may not see.
    not_visible: Vec<String>,
}

fn timeout_ms(state: &AppState) -> i64 {
    i64::try_from(state.config.presence_timeout.as_millis()).unwrap_or(i64::MAX)
}

#[utoipa::path(post, path = "/presence/heartbeat", responses(
    (status = 200, description = "The caller is online", body = Heartbeat),
))]
/// POST /presence/heartbeat -> 200 {online: true}. Two round trips.
pub async fn heartbeat(state: &AppState, meta: &RequestMeta, req: &Request) -> Result<Reply, AppError> {
    let me = state.authenticate(req, WithUser::No).await?;
    let now = crate::mark_online(state, &me.user_id, &meta.request_id).await?;
    Ok(Reply::ok(Heartbeat {
        online: true,
        last_seen: clock::rfc3339_from_ms(now),
    })
    .rate(&me.rate))
}

#[utoipa::path(post, path = "/presence/offline", responses((status = 204, description = "The caller is offline")))]
/// POST /presence/offline -> 204.
pub async fn offline(state: &AppState, meta: &RequestMeta, req: &Request) -> Result<Reply, AppError> {
    let me = state.authenticate(req, WithUser::No).await?;
    crate::mark_offline(state, &me.user_id, &meta.request_id, "explicit").await?;
    Ok(Reply::no_content().rate(&me.rate))
}

#[utoipa::path(get, path = "/presence", params(
    ("userIds" = String, Query, description = "1 to 100 comma-separated user ids"),
), responses((status = 200, description = "Presence of the visible ones", body = PresenceList)))]
/// GET /presence?userIds=a,b -> presence of those that are the caller or a connection;
/// the rest are listed under `notVisible`. One round trip for up to 100 ids.
pub async fn lookup(state: &AppState, req: &Request) -> Result<Reply, AppError> {
    // The lookup's reads ride on the authentication round trip (made for a dead token
    // too, whose request gets nothing of them).
    let ids = parse_ids(api::query_param(req, "userIds"));
    let now = clock::now_ms();
    let (me, replies) = state
        .authenticate_and(req, WithUser::No, |pipe, me| {
            if let Ok(ids) = &ids {
                store::lookup_reads(pipe, me, ids, now);
            }
        })
        .await?;
    let ids = ids?;
    let rows = store::lookup_replies(&me.user_id, &ids, replies, now, timeout_ms(state))?;
    let mut visible: Vec<UserPresence> = Vec::new();
    let mut hidden: Vec<String> = Vec::new();
    for (id, presence) in rows {
        match presence {
            Some(p) => visible.push(UserPresence {
                user_id: id,
                online: p.online,
                last_seen: p.last_seen.map(clock::rfc3339_from_ms),
            }),
            None => hidden.push(id),
        }
    }
    Ok(Reply::ok(PresenceList {
        presence: visible,
        not_visible: hidden,
    })
    .rate(&me.rate))
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
