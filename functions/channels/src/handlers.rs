//! The HTTP routes of channels: preferences, phone verification, unsubscribe.

use devconnect::openapi::ErrorBody;
use devconnect::{
    api::{self, Reply},
    delivery::{Channel, Delivery},
    rate_limit,
    session::WithUser,
    AppError,
};
use lambda_http::Request;
use rand::Rng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use crate::{
    deliveries,
    kinds::Kind,
    preferences::{self, PreferencesView, Update},
    store::{self, Verification},
    Channels,
};

/// This function's part of docs/openapi.json (see `devconnect::openapi`).
#[derive(utoipa::OpenApi)]
#[openapi(paths(get, put, verify_phone, unsubscribe))]
struct Api;

/// This function's operations, for docs/openapi.json.
pub fn openapi() -> devconnect::openapi::OpenApi {
    <Api as utoipa::OpenApi>::openapi()
}

/// GET /notifications/unsubscribe.
#[derive(Serialize, ToSchema)]
struct Unsubscribed {
    /// Always true.
    unsubscribed: bool,
    /// The kind no longer emailed (`DAILY_DIGEST` for the digest).
    kind: &'static str,
    /// Always `email`.
    channel: &'static str,
    /// For people.
    message: String,
}

#[utoipa::path(get, path = "/notifications/preferences", responses(
    (status = 200, description = "The caller's preferences", body = PreferencesView),
))]
/// GET /notifications/preferences -> every kind's channels (defaults filled in), quiet
/// hours, the phone number and whether it is verified.
pub async fn get(ch: &Channels, req: &Request) -> Result<Reply, AppError> {
    let state = &ch.app;
    let me = state.authenticate(req, WithUser::No).await?;
    let (prefs, pending) = store::read(&state.store, &me.user_id).await?;
    Ok(Reply::ok(prefs.view(pending.as_deref())).rate(&me.rate))
}

/// The hash of a verification code as stored (never the code itself).
fn code_hash(user_id: &str, code: &str) -> String {
    hex::encode(Sha256::digest(format!("{user_id}:{code}").as_bytes()))
}

#[utoipa::path(put, path = "/notifications/preferences", request_body = Update, responses(
    (status = 200, description = "The new preferences", body = PreferencesView),
))]
/// PUT /notifications/preferences -> 200 with the new preferences. The whole body is
/// validated before anything is written. A new `phoneNumber` starts its verification:
/// a 6-digit code goes out as SMS_REQUESTED (kind PHONE_VERIFICATION); SMS is only
/// sent to the number once POST /notifications/preferences/phone/verify confirms it.
pub async fn put(ch: &Channels, req: &Request) -> Result<Reply, AppError> {
    let state = &ch.app;
    let me = state.authenticate(req, WithUser::No).await?;
    let update: Update = api::json_body(req)?;
    let changes = preferences::validate(update)?;
    let code = format!("{:06}", rand::rngs::OsRng.gen_range(0..1_000_000));
    let saved = store::save(&state.store, &me.user_id, &changes, &code_hash(&me.user_id, &code)).await?;
    if saved.code_issued {
        if let Some(number) = &saved.pending_phone {
            let delivery = Delivery {
                notification_id: format!("phone-verification:{}", uuid::Uuid::now_v7()),
                channel: Channel::Sms,
                user_id: me.user_id.clone(),
                kind: "PHONE_VERIFICATION".into(),
                address: number.clone(),
                subject: String::new(),
                text: format!("Your DevConnect verification code is {code}. It expires in 10 minutes."),
                unsubscribe_url: None,
            };
            // Produced, or parked in the outbox if the broker is slow: the code still goes out.
            let sms = deliveries::outgoing(&state.config.topics, &delivery)?;
            state.publisher.send_or_park(vec![sms.record]).await?;
        }
    }
    Ok(Reply::ok(saved.preferences.view(saved.pending_phone.as_deref())).rate(&me.rate))
}

/// The body of POST /notifications/preferences/phone/verify.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct VerifyBody {
    /// The 6 digits sent by SMS.
    code: String,
}

#[utoipa::path(post, path = "/notifications/preferences/phone/verify", request_body = VerifyBody, responses(
    (status = 200, description = "The number is verified", body = PreferencesView),
    (status = 403, description = "Too many wrong codes: set the number again", body = ErrorBody),
    (status = 409, description = "No number waits for a code", body = ErrorBody),
))]
/// POST /notifications/preferences/phone/verify {code} -> 200 with the preferences (the
/// number verified); 400 for a wrong code (attempts left in the message); 409 when no
/// number waits for a code; 429 after the last allowed wrong code (the number is
/// discarded: set it again for a new code).
pub async fn verify_phone(ch: &Channels, req: &Request) -> Result<Reply, AppError> {
    let state = &ch.app;
    let me = state.authenticate(req, WithUser::No).await?;
    let body: VerifyBody = api::json_body(req)?;
    if body.code.len() != 6 || !body.code.bytes().all(|b| b.is_ascii_digit()) {
        return Err(AppError::Validation("code must be the 6 digits sent by SMS".into()));
    }
    match store::verify(&state.store, &me.user_id, &code_hash(&me.user_id, &body.code)).await? {
        Verification::Verified => {
            let (prefs, pending) = store::read(&state.store, &me.user_id).await?;
            Ok(Reply::ok(prefs.view(pending.as_deref())).rate(&me.rate))
        }
        Verification::NothingPending => Err(AppError::Conflict(
            "no phone number is waiting for verification (set phoneNumber first; codes expire after 10 minutes)".into(),
        )),
        Verification::Wrong(left) => Err(AppError::Validation(format!(
            "wrong code; {left} attempt{} left",
            if left == 1 { "" } else { "s" }
        ))),
        Verification::Exhausted => Err(AppError::Forbidden(
            "too many wrong codes; set phoneNumber again to get a new code".into(),
        )),
    }
}

#[utoipa::path(get, path = "/notifications/unsubscribe", security(()), params(
    ("token" = String, Query, description = "The signed token of the email's unsubscribe link"),
), responses(
    (status = 200, description = "That kind is no longer emailed", body = Unsubscribed),
))]
/// GET /notifications/unsubscribe?token=... (no login) -> 200 confirming that the
/// token's kind no longer emails its user; 400 for a missing, malformed or forged token
/// (nothing changed). Counted against the anonymous per-IP limit like other unauthenticated routes.
pub async fn unsubscribe(ch: &Channels, req: &Request) -> Result<Reply, AppError> {
    let state = &ch.app;
    let meta = api::RequestMeta::of(req);
    let rate = rate_limit::check_ip(&state.store, &state.config.rate_limits, &meta.source_ip).await?;
    let token = api::query_param(req, "token")
        .ok_or_else(|| AppError::Validation("the unsubscribe link has no token".into()))?;
    let (user_id, kind) = ch
        .settings
        .signer
        .verify(token)
        .ok_or_else(|| AppError::Validation("this unsubscribe link is not valid".into()))?;
    store::unsubscribe(&state.store, &user_id, &preferences::email_field(kind)).await?;
    let what = match kind {
        Kind::Digest => "the daily digest".to_string(),
        other => format!("{} emails", other.as_str()),
    };
    Ok(Reply::ok(Unsubscribed {
        unsubscribed: true,
        kind: kind.as_str(),
        channel: "email",
        message: format!("You will no longer receive {what}. You can change this in your notification preferences."),
    })
    .rate(&rate))
}
