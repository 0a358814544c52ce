//! Deliveries outside the app: what the channels router puts on `email-events`
//! (EMAIL_REQUESTED) and `sms-events` (SMS_REQUESTED) for the senders.
//!
//! A separate topic per channel keeps a slow provider from delaying in-app
//! notifications or the other channel. The senders dedupe on
//! ([`Delivery::notification_id`], [`Delivery::channel`]): one email per notification.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A channel a notification can leave the app through.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Channel {
    /// Amazon SES (sesv2), to the user's account email.
    Email,
    /// Amazon SNS, to the user's verified phone number.
    Sms,
}

/// The payload of EMAIL_REQUESTED and SMS_REQUESTED.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Delivery {
    /// The in-app notification this delivers (or, for a digest, the digest's id).
    pub notification_id: String,
    /// Which channel; must match the event type.
    pub channel: Channel,
    /// The recipient's user id.
    pub user_id: String,
    /// The notification kind (e.g. `CONNECTION_REQUEST`), or `DIGEST`.
    pub kind: String,
    /// Email address or E.164 phone number.
    pub address: String,
    /// Email subject (empty for SMS).
    #[serde(default)]
    pub subject: String,
    /// Plain-text body.
    pub text: String,
    /// Signed link that turns this kind off for this user without logging in (email only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unsubscribe_url: Option<String>,
}
