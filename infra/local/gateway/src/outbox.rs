//! `GET /_local/outbox/mail` and `GET /_local/outbox/sms`: local only (not in
//! template.yaml, so never deployed). What the hosted email and SMS senders handed to
//! their provider, oldest first, as the user gets it: `[{"to", "subject", "text",
//! "unsubscribeUrl", "listUnsubscribe", "notificationId", "kind", "userId",
//! "providerId", "sentAt"}]`.

use std::sync::Arc;

use axum::{
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use devconnect::delivery::Channel;

use crate::server::Gateway;

/// The emails sent.
pub const MAIL_PATH: &str = "/_local/outbox/mail";
/// The SMS sent.
pub const SMS_PATH: &str = "/_local/outbox/sms";

/// `GET /_local/outbox/mail`.
pub async fn mail(State(gateway): State<Arc<Gateway>>) -> Response {
    list(&gateway, Channel::Email)
}

/// `GET /_local/outbox/sms`.
pub async fn sms(State(gateway): State<Arc<Gateway>>) -> Response {
    list(&gateway, Channel::Sms)
}

fn list(gateway: &Gateway, channel: Channel) -> Response {
    let sent = gateway.functions.outbox().list(channel);
    (
        StatusCode::OK,
        [("content-type", "application/json"), ("cache-control", "no-store")],
        serde_json::to_string(&sent).unwrap_or_else(|_| "[]".into()),
    )
        .into_response()
}
