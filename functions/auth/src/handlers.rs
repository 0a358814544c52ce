//! One function per route: parse, act, reply. Validation happens before any write.

use std::sync::LazyLock;

use devconnect::{
    api::{self, json_body, Reply, RequestMeta},
    clock, keys, payloads, rate_limit, script,
    session::{self, WithUser},
    user::{self, User},
    AppError, AppState,
};
use devconnect::{
    openapi::ErrorBody,
    session::SessionInfo,
    user::{OwnProfile, PublicProfile},
};
use lambda_http::Request;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{login_limit, password};

/// The 401 for any failed login: it never says whether the email or the password was wrong.
const BAD_CREDENTIALS: AppError = AppError::Unauthorized("invalid email or password");

/// This function's part of docs/openapi.json (see `devconnect::openapi`).
#[derive(utoipa::OpenApi)]
#[openapi(paths(
    signup,
    login,
    logout,
    logout_all,
    list_sessions,
    delete_session,
    change_password,
    realtime_ticket,
    set_tier,
    get_profile,
    patch_profile,
    get_user
))]
struct Api;

/// This function's operations, for docs/openapi.json.
pub fn openapi() -> devconnect::openapi::OpenApi {
    <Api as utoipa::OpenApi>::openapi()
}

/// Signup and login: the caller's profile and a session token (also set as a cookie).
#[derive(Serialize, ToSchema)]
struct Signed {
    user: OwnProfile,
    /// The session token: `Authorization: Bearer <token>`.
    token: String,
}

/// GET /sessions.
#[derive(Serialize, ToSchema)]
struct SessionList {
    /// Newest first.
    sessions: Vec<SessionInfo>,
}

/// POST /realtime/ticket.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct Ticket {
    /// Pass as `?ticket=` when opening the WebSocket; works once.
    ticket: String,
    /// Seconds it stays valid.
    expires_in: u64,
}

/// PUT /admin/users/{userId}/tier.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct TierChange {
    #[schema(format = Uuid)]
    user_id: String,
    /// `free` or `premium`.
    tier: String,
    /// The tier before this change.
    previous_tier: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SignupBody {
    /// Unique, case-insensitive.
    #[schema(format = Email, max_length = 254)]
    email: String,
    #[schema(min_length = 8, max_length = 128)]
    password: String,
    #[schema(min_length = 1, max_length = 50)]
    first_name: String,
    #[schema(min_length = 1, max_length = 50)]
    last_name: String,
}

#[utoipa::path(post, path = "/auth/signup", request_body = SignupBody, security(()), responses(
    (status = 201, description = "Signed up and signed in", body = Signed, headers(("Set-Cookie" = String, description = "The HttpOnly session cookie"))),
    (status = 409, description = "An account with this email exists", body = ErrorBody),
))]
/// POST /auth/signup -> 201 {user, token}. Round trips: rate limit, email claim, user+session.
pub async fn signup(state: &AppState, meta: &RequestMeta, req: &Request) -> Result<Reply, AppError> {
    let body: SignupBody = json_body(req)?;
    let email = user::parse_email(&body.email)?;
    password::validate(&body.password)?;
    let first_name = user::parse_name("firstName", &body.first_name)?;
    let last_name = user::parse_name("lastName", &body.last_name)?;

    let config = &state.config;
    let rate = rate_limit::check_ip(&state.store, &config.rate_limits, &meta.source_ip).await?;
    let new_user = User::new(email, password::hash(body.password).await?, first_name, last_name);
    if !user::claim_email(&state.store, &new_user.email, &new_user.id).await? {
        return Err(AppError::Conflict("an account with this email already exists".into()));
    }
    let issued = session::issue(&new_user.id);
    let mut pipe = user::insert_pipeline(&new_user);
    session::start(&mut pipe, &issued, user_agent(req), config.session_ttl);
    if let Err(e) = pipe.query_async::<()>(&mut state.store.conn()).await {
        // Take back the email and whatever of the account was written, so the failed request
        // leaves nothing and a retry can succeed; if Redis is gone this fails too and the error stands.
        if let Err(undo) = user::abandon_signup(&state.store, &new_user, &issued.key).await {
            tracing::warn!(error = %undo, user_id = %new_user.id, "a failed signup could not be taken back");
        }
        return Err(e.into());
    }
    state
        .publisher
        .publish(
            &new_user.id,
            &meta.request_id,
            payloads::UserSignup {
                user_id: new_user.id.clone(),
                email: new_user.email.clone(),
                first_name: new_user.first_name.clone(),
                last_name: new_user.last_name.clone(),
            },
        )
        .await?;
    Ok(Reply::created(Signed {
        user: new_user.own_view(),
        token: issued.token.clone(),
    })
    .header(
        "set-cookie",
        session::cookie(&issued.token, config.session_ttl, config.cookie_secure),
    )
    .rate(&rate))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct LoginBody {
    email: String,
    password: String,
}

#[utoipa::path(post, path = "/auth/login", request_body = LoginBody, security(()), responses(
    (status = 200, description = "Signed in", body = Signed, headers(("Set-Cookie" = String, description = "The HttpOnly session cookie"))),
    (status = 401, description = "Wrong email or password (never says which)", body = ErrorBody),
))]
/// POST /auth/login -> 200 {user, token}. Round trips: rate limit, lookup+attempt, user, session.
pub async fn login(state: &AppState, meta: &RequestMeta, req: &Request) -> Result<Reply, AppError> {
    let body: LoginBody = json_body(req)?;
    let email = user::parse_email(&body.email).map_err(|_| BAD_CREDENTIALS)?;
    let config = &state.config;
    let rate = rate_limit::check_ip(&state.store, &config.rate_limits, &meta.source_ip).await?;
    let limits = login_limit::Limits {
        max_failures: config.login_max_failures,
        email_max_failures: config.login_email_max_failures,
        lock_base: config.login_lock_base,
        window: config.login_failure_window,
    };
    let user_id = login_limit::reserve(&state.store, &email, &meta.source_ip, limits).await?;
    let found = match &user_id {
        Some(id) => user::get(&state.store, id).await?,
        None => None,
    };
    if !password::verify(body.password, found.as_ref().map(|u| u.password_hash.clone())).await? {
        return Err(BAD_CREDENTIALS);
    }
    let found = found.ok_or(BAD_CREDENTIALS)?;
    let issued = session::issue(&found.id);
    let mut pipe = redis::pipe();
    session::start(&mut pipe, &issued, user_agent(req), config.session_ttl);
    login_limit::clear(&mut pipe, &email, &meta.source_ip);
    pipe.query_async::<()>(&mut state.store.conn()).await?;
    state
        .publisher
        .publish(
            &found.id,
            &meta.request_id,
            payloads::UserLogin {
                user_id: found.id.clone(),
            },
        )
        .await?;
    Ok(Reply::ok(Signed {
        user: found.own_view(),
        token: issued.token.clone(),
    })
    .header(
        "set-cookie",
        session::cookie(&issued.token, config.session_ttl, config.cookie_secure),
    )
    .rate(&rate))
}

#[utoipa::path(post, path = "/auth/logout", responses(
    (status = 204, description = "This session ended", headers(("Set-Cookie" = String, description = "Clears the session cookie"))),
))]
/// POST /auth/logout -> 204; the token stops working at once.
pub async fn logout(state: &AppState, meta: &RequestMeta, req: &Request) -> Result<Reply, AppError> {
    let principal = state.authenticate(req, WithUser::No).await?;
    let ended = session::revoke(&state.store, &principal.user_id, &principal.session_id).await?;
    let ids = if ended {
        vec![principal.session_id.clone()]
    } else {
        Vec::new()
    };
    publish_logout(state, meta, &principal.user_id, &ids, "logout").await?;
    Ok(Reply::no_content()
        .header("set-cookie", session::clear_cookie(state.config.cookie_secure))
        .rate(&principal.rate))
}

#[utoipa::path(post, path = "/auth/logout-all", responses(
    (status = 204, description = "Every session of the caller ended", headers(("Set-Cookie" = String, description = "Clears the session cookie"))),
))]
/// POST /auth/logout-all -> 204: every session of the caller ends, this one included.
pub async fn logout_all(state: &AppState, meta: &RequestMeta, req: &Request) -> Result<Reply, AppError> {
    let principal = state.authenticate(req, WithUser::No).await?;
    let ids = session::revoke_all(&state.store, &principal.user_id, None, None).await?;
    publish_logout(state, meta, &principal.user_id, &ids, "logout_all").await?;
    Ok(Reply::no_content()
        .header("set-cookie", session::clear_cookie(state.config.cookie_secure))
        .rate(&principal.rate))
}

#[utoipa::path(get, path = "/sessions", responses(
    (status = 200, description = "The caller's live sessions", body = SessionList),
))]
/// GET /sessions -> 200 {sessions: [{id, userAgent, createdAt, lastUsedAt, current}]}, newest first.
pub async fn list_sessions(state: &AppState, req: &Request) -> Result<Reply, AppError> {
    let principal = state.authenticate(req, WithUser::No).await?;
    let sessions = session::list(&state.store, &principal.user_id, &principal.session_id).await?;
    Ok(Reply::ok(SessionList { sessions }).rate(&principal.rate))
}

#[utoipa::path(delete, path = "/sessions/{id}", params(("id" = String, Path, description = "A session id from GET /sessions")), responses(
    (status = 204, description = "That session ended"),
    (status = 404, description = "The caller has no such live session", body = ErrorBody),
))]
/// DELETE /sessions/{id} -> 204; 404 when the caller has no such live session (ids of
/// other users' sessions are never found: the key is built from the caller's id).
pub async fn delete_session(state: &AppState, meta: &RequestMeta, req: &Request) -> Result<Reply, AppError> {
    let principal = state.authenticate(req, WithUser::No).await?;
    let raw = api::path_param(req, "id")?;
    let id = session::parse_session_id(&raw)?;
    if !session::revoke(&state.store, &principal.user_id, id).await? {
        return Err(AppError::NotFound("no such session".into()));
    }
    publish_logout(state, meta, &principal.user_id, &[id.to_string()], "revoked").await?;
    Ok(Reply::no_content().rate(&principal.rate))
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PasswordBody {
    current_password: String,
    #[schema(min_length = 8, max_length = 128)]
    new_password: String,
}

#[utoipa::path(post, path = "/auth/password", request_body = PasswordBody, responses(
    (status = 204, description = "Changed; every other session ended"),
    (status = 403, description = "The current password is wrong", body = ErrorBody),
))]
/// POST /auth/password {currentPassword, newPassword} -> 204. The new hash is stored and
/// every other session ends in one atomic step; this session stays signed in.
pub async fn change_password(state: &AppState, meta: &RequestMeta, req: &Request) -> Result<Reply, AppError> {
    let principal = state.authenticate(req, WithUser::Yes).await?;
    let body: PasswordBody = json_body(req)?;
    password::validate(&body.new_password)?;
    let me = stored_user(principal.user)?;
    if !password::verify(body.current_password, Some(me.password_hash)).await? {
        return Err(AppError::Forbidden("the current password is wrong".into()));
    }
    let new_hash = password::hash(body.new_password).await?;
    let ids = session::revoke_all(&state.store, &me.id, Some(&principal.session_id), Some(&new_hash)).await?;
    publish_logout(state, meta, &me.id, &ids, "password_changed").await?;
    Ok(Reply::no_content().rate(&principal.rate))
}

#[utoipa::path(post, path = "/realtime/ticket", responses(
    (status = 201, description = "A single-use WebSocket ticket", body = Ticket),
))]
/// POST /realtime/ticket -> 201 {ticket, expiresIn}: a single-use WebSocket ticket bound to
/// this session, so the long-lived token never goes into a URL.
pub async fn realtime_ticket(state: &AppState, req: &Request) -> Result<Reply, AppError> {
    let principal = state.authenticate(req, WithUser::No).await?;
    let ticket = session::issue_ticket(&state.store, &principal.user_id, &principal.session_id).await?;
    Ok(Reply::created(Ticket {
        ticket,
        expires_in: session::TICKET_TTL.as_secs(),
    })
    .rate(&principal.rate))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct TierBody {
    /// `free` or `premium`.
    tier: String,
}

#[utoipa::path(put, path = "/admin/users/{userId}/tier", request_body = TierBody,
    params(("userId" = String, Path, format = Uuid)), responses(
    (status = 200, description = "The new tier applies from the user's next request", body = TierChange),
    (status = 403, description = "The caller is not an admin", body = ErrorBody),
    (status = 404, description = "No such user", body = ErrorBody),
))]
/// PUT /admin/users/{userId}/tier {"tier": "free"|"premium"} -> 200 {userId, tier, previousTier}.
/// Admins only (ADMIN_USER_IDS). The authentication script reads the tier on every
/// request, so the new limit applies from the user's next request; TIER_CHANGED follows.
pub async fn set_tier(state: &AppState, meta: &RequestMeta, req: &Request) -> Result<Reply, AppError> {
    let principal = state.authenticate(req, WithUser::No).await?;
    if !state.config.admin_user_ids.contains(&principal.user_id) {
        return Err(AppError::Forbidden("changing tiers is for admins".into()));
    }
    let user_id = user::parse_user_id(&api::path_param(req, "userId")?)?;
    let body: TierBody = json_body(req)?;
    let tier = match body.tier.as_str() {
        "free" | "premium" => body.tier,
        _ => return Err(AppError::Validation("tier must be \"free\" or \"premium\"".into())),
    };
    let previous = store_tier(state, &user_id, &tier).await?;
    state
        .publisher
        .publish(
            &user_id,
            &meta.request_id,
            payloads::TierChanged {
                user_id: user_id.clone(),
                tier: tier.clone(),
                previous_tier: previous.clone(),
                changed_by: principal.user_id.clone(),
            },
        )
        .await?;
    Ok(Reply::ok(TierChange {
        user_id,
        tier,
        previous_tier: previous,
    })
    .rate(&principal.rate))
}

/// KEYS: user record, cached public profile. ARGV: the tier. Returns the previous tier,
/// or false when there is no such user. The record is checked to be a hash before the
/// write; the cache is dropped in the same step.
static SET_TIER: LazyLock<redis::Script> = LazyLock::new(|| {
    script::atomic(
        r#"
local bad = wrong_types({KEYS[1], 'hash'})
if bad then return redis.error_reply(bad) end
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
local previous = redis.call('HGET', KEYS[1], 'tier') or 'free'
redis.call('HSET', KEYS[1], 'tier', ARGV[1])
redis.call('DEL', KEYS[2])
return previous
"#,
    )
});

async fn store_tier(state: &AppState, user_id: &str, tier: &str) -> Result<String, AppError> {
    let previous: Option<String> = SET_TIER
        .key(keys::user(user_id))
        .key(keys::public_profile(user_id))
        .arg(tier)
        .invoke_async(&mut state.store.conn())
        .await?;
    previous.ok_or_else(|| AppError::NotFound("no such user".into()))
}

/// USER_LOGOUT, the one event of every way sessions end; realtime closes their sockets.
async fn publish_logout(
    state: &AppState,
    meta: &RequestMeta,
    user_id: &str,
    session_ids: &[String],
    reason: &str,
) -> Result<(), AppError> {
    state
        .publisher
        .publish(
            user_id,
            &meta.request_id,
            payloads::UserLogout {
                user_id: user_id.to_string(),
                session_ids: session_ids.to_vec(),
                reason: reason.to_string(),
            },
        )
        .await?;
    Ok(())
}

/// The client's user agent, shown in GET /sessions.
fn user_agent(req: &Request) -> &str {
    req.headers()
        .get(lambda_http::http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

#[utoipa::path(get, path = "/profile", responses(
    (status = 200, description = "The caller's profile", body = OwnProfile),
))]
/// GET /profile: one round trip (the authentication script returns the record).
pub async fn get_profile(state: &AppState, req: &Request) -> Result<Reply, AppError> {
    let principal = state.authenticate(req, WithUser::Profile).await?;
    let me = stored_user(principal.user)?;
    Ok(Reply::ok(me.own_view()).rate(&principal.rate))
}

/// At least one field.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ProfilePatch {
    first_name: Option<String>,
    last_name: Option<String>,
    about: Option<String>,
    skills: Option<Vec<String>>,
    photo_url: Option<String>,
}

#[utoipa::path(patch, path = "/profile", request_body = ProfilePatch, responses(
    (status = 200, description = "The updated profile", body = OwnProfile),
))]
/// PATCH /profile -> 200 with the new profile. Two round trips; the public cache is invalidated atomically.
pub async fn patch_profile(state: &AppState, meta: &RequestMeta, req: &Request) -> Result<Reply, AppError> {
    let principal = state.authenticate(req, WithUser::Profile).await?;
    let patch: ProfilePatch = json_body(req)?;
    let mut me = stored_user(principal.user)?;
    let mut changed: Vec<&'static str> = Vec::new();
    if let Some(v) = &patch.first_name {
        me.first_name = user::parse_name("firstName", v)?;
        changed.push("firstName");
    }
    if let Some(v) = &patch.last_name {
        me.last_name = user::parse_name("lastName", v)?;
        changed.push("lastName");
    }
    if let Some(v) = &patch.about {
        me.about = user::parse_about(v)?;
        changed.push("about");
    }
    if let Some(v) = &patch.skills {
        me.skills = user::parse_skills(v)?;
        changed.push("skills");
    }
    if let Some(v) = &patch.photo_url {
        me.photo_url = user::parse_photo_url(v)?;
        changed.push("photoUrl");
    }
    if changed.is_empty() {
        return Err(AppError::Validation(
            "nothing to update: send firstName, lastName, about, skills or photoUrl".into(),
        ));
    }
    me.updated_at = clock::now_rfc3339();
    let fields: Vec<(&'static str, String)> = me
        .to_fields()
        .into_iter()
        .filter(|(k, _)| changed.contains(k) || *k == "updatedAt")
        .collect();
    user::update_profile(&state.store, &me.id, &fields).await?;
    state
        .publisher
        .publish(
            &me.id,
            &meta.request_id,
            payloads::ProfileUpdated {
                user_id: me.id.clone(),
                changed: changed.iter().map(|c| c.to_string()).collect(),
            },
        )
        .await?;
    Ok(Reply::ok(me.own_view()).rate(&principal.rate))
}

#[utoipa::path(get, path = "/users/{userId}", params(("userId" = String, Path, format = Uuid)), responses(
    (status = 200, description = "The public profile", body = PublicProfile),
    (status = 404, description = "No such user", body = ErrorBody),
))]
/// GET /users/{userId}: the public profile, cache-aside (one round trip on a cache hit).
pub async fn get_user(state: &AppState, req: &Request) -> Result<Reply, AppError> {
    // The cache read rides on the authentication round trip (a read: made for a dead
    // token too, whose request gets nothing of it).
    let target = api::path_param(req, "userId").and_then(|id| user::parse_user_id(&id));
    let (principal, replies) = state
        .authenticate_and(req, WithUser::No, |pipe, _| {
            if let Ok(id) = &target {
                user::read_cached_profile(pipe, id);
            }
        })
        .await?;
    let user_id = target?;
    let cached: Option<String> = script::reply(replies.into_iter().next().unwrap_or(redis::Value::Nil))?;
    let profile = user::public_profile_from(&state.store, &user_id, state.config.profile_cache_ttl, cached)
        .await?
        .ok_or_else(|| AppError::NotFound("no such user".into()))?;
    Ok(Reply::ok(profile).rate(&principal.rate))
}

fn stored_user(fields: Option<std::collections::HashMap<String, String>>) -> Result<User, AppError> {
    User::from_fields(fields.unwrap_or_default())?.ok_or(AppError::Unauthorized("missing or invalid token"))
}
