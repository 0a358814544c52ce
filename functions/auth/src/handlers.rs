//! One function per route: parse, act, reply. Validation happens before any write.

use devconnect::{
    api::{self, json_body, Reply, RequestMeta},
    events::EventType,
    rate_limit,
    session::{self, WithUser},
    user::{self, User},
    AppError, AppState,
};
use lambda_http::Request;
use serde::Deserialize;
use serde_json::json;

use crate::{login_limit, password};

/// The 401 for any failed login: it never says whether the email or the password was wrong.
const BAD_CREDENTIALS: AppError = AppError::Unauthorized("invalid email or password");

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SignupBody {
    email: String,
    password: String,
    first_name: String,
    last_name: String,
}

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
    pipe.set_ex(&issued.key, 1, config.session_ttl.as_secs()).ignore();
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
            EventType::UserSignup,
            &new_user.id,
            &meta.request_id,
            json!({"userId": new_user.id, "email": new_user.email, "firstName": new_user.first_name, "lastName": new_user.last_name}),
        )
        .await?;
    Ok(
        Reply::created(json!({"user": new_user.own_view(), "token": issued.token}))
            .header(
                "set-cookie",
                session::cookie(&issued.token, config.session_ttl, config.cookie_secure),
            )
            .rate(&rate),
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginBody {
    email: String,
    password: String,
}

/// POST /auth/login -> 200 {user, token}. Round trips: rate limit, lookup+attempt, user, session.
pub async fn login(state: &AppState, meta: &RequestMeta, req: &Request) -> Result<Reply, AppError> {
    let body: LoginBody = json_body(req)?;
    let email = user::parse_email(&body.email).map_err(|_| BAD_CREDENTIALS)?;
    let config = &state.config;
    let rate = rate_limit::check_ip(&state.store, &config.rate_limits, &meta.source_ip).await?;
    let user_id = login_limit::reserve(
        &state.store,
        &email,
        config.login_max_failures,
        config.login_failure_window,
    )
    .await?;
    let found = match &user_id {
        Some(id) => user::get(&state.store, id).await?,
        None => None,
    };
    if !password::verify(body.password, found.as_ref().map(|u| u.password_hash.clone())).await? {
        return Err(BAD_CREDENTIALS);
    }
    let found = found.ok_or(BAD_CREDENTIALS)?;
    let issued = session::issue(&found.id);
    // SET and DEL replace or remove a key of any type, so neither can fail half-way.
    let mut pipe = redis::pipe();
    pipe.set_ex(&issued.key, 1, config.session_ttl.as_secs()).ignore();
    login_limit::clear(&mut pipe, &email);
    pipe.query_async::<()>(&mut state.store.conn()).await?;
    state
        .publisher
        .publish(
            EventType::UserLogin,
            &found.id,
            &meta.request_id,
            json!({"userId": found.id}),
        )
        .await?;
    Ok(Reply::ok(json!({"user": found.own_view(), "token": issued.token}))
        .header(
            "set-cookie",
            session::cookie(&issued.token, config.session_ttl, config.cookie_secure),
        )
        .rate(&rate))
}

/// POST /auth/logout -> 204; the token stops working at once.
pub async fn logout(state: &AppState, meta: &RequestMeta, req: &Request) -> Result<Reply, AppError> {
    let principal = state.authenticate(req, WithUser::No).await?;
    session::revoke(&state.store, &principal.session_key).await?;
    state
        .publisher
        .publish(
            EventType::UserLogout,
            &principal.user_id,
            &meta.request_id,
            json!({"userId": principal.user_id}),
        )
        .await?;
    Ok(Reply::no_content()
        .header(
            "set-cookie",
            format!(
                "{}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0",
                session::COOKIE_NAME
            ),
        )
        .rate(&principal.rate))
}

/// GET /profile: one round trip (the authentication script returns the record).
pub async fn get_profile(state: &AppState, req: &Request) -> Result<Reply, AppError> {
    let principal = state.authenticate(req, WithUser::Yes).await?;
    let me = stored_user(principal.user)?;
    Ok(Reply::ok(me.own_view()).rate(&principal.rate))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ProfilePatch {
    first_name: Option<String>,
    last_name: Option<String>,
    about: Option<String>,
    skills: Option<Vec<String>>,
    photo_url: Option<String>,
}

/// PATCH /profile -> 200 with the new profile. Two round trips; the public cache is invalidated atomically.
pub async fn patch_profile(state: &AppState, meta: &RequestMeta, req: &Request) -> Result<Reply, AppError> {
    let principal = state.authenticate(req, WithUser::Yes).await?;
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
    me.updated_at = user::now_rfc3339();
    let fields: Vec<(&'static str, String)> = me
        .to_fields()
        .into_iter()
        .filter(|(k, _)| changed.contains(k) || *k == "updatedAt")
        .collect();
    user::update_profile(&state.store, &me.id, &fields).await?;
    state
        .publisher
        .publish(
            EventType::ProfileUpdated,
            &me.id,
            &meta.request_id,
            json!({"userId": me.id, "changed": changed}),
        )
        .await?;
    Ok(Reply::ok(me.own_view()).rate(&principal.rate))
}

/// GET /users/{userId}: the public profile, cache-aside (two round trips on a cache hit).
pub async fn get_user(state: &AppState, req: &Request) -> Result<Reply, AppError> {
    let principal = state.authenticate(req, WithUser::No).await?;
    let user_id = user::parse_user_id(&api::path_param(req, "userId")?)?;
    let profile = user::public_profile(&state.store, &user_id, state.config.profile_cache_ttl)
        .await?
        .ok_or_else(|| AppError::NotFound("no such user".into()))?;
    Ok(Reply::ok(profile).rate(&principal.rate))
}

fn stored_user(fields: Option<std::collections::HashMap<String, String>>) -> Result<User, AppError> {
    User::from_fields(fields.unwrap_or_default())?.ok_or(AppError::Unauthorized("missing or invalid token"))
}
