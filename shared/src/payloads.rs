//! The `data` of every event type, one struct each: what producers build and consumers read.
//!
//! Producers hand a payload to [`Publisher::publish`](crate::publisher::Publisher::publish),
//! which takes the event type from the payload's Rust type ([`EventPayload::TYPE`]): there is
//! no way to put a `MessageSent` under `USER_SIGNUP`. Consumers get the same structs back
//! from [`Event::decode`], done once for every record in the shared decoding path
//! ([`crate::consumer`]), so a payload that does not parse is dead-lettered there and no
//! consumer looks fields up by name. A renamed field therefore breaks the consumers'
//! build, and a renamed wire name makes `docs/asyncapi.json` stale (a contract test fails).
//!
//! Evolving a payload: a new field is `Option` or `#[serde(default)]`, and consumers are
//! deployed before producers start relying on it; unknown fields are ignored (except where a
//! payload says `deny_unknown_fields`). Removing or renaming a field is a new event version.
//!
//! Adding an event type: add the variant to [`EventType`], a struct of the same name here,
//! and its name to the `payloads!` table at the bottom; the exhaustive matches the table
//! generates fail to compile until all three agree.

use std::{collections::BTreeMap, ops::Deref};

use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use serde_json::Value;

use crate::{delivery::Delivery, events::EventType};

/// A payload type: its Rust type decides its event type, at compile time.
pub trait EventPayload: Serialize + DeserializeOwned + JsonSchema + Into<Event> {
    /// The event type this payload travels under.
    const TYPE: EventType;
}

/// USER_SIGNUP: a new account.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserSignup {
    /// The new user's id.
    #[schemars(extend("format" = "uuid"))]
    pub user_id: String,
    /// The account email, lower-cased.
    #[schemars(extend("format" = "email"))]
    pub email: String,
    /// First name.
    pub first_name: String,
    /// Last name.
    pub last_name: String,
}

/// USER_LOGIN: a session started.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserLogin {
    /// Who logged in.
    #[schemars(extend("format" = "uuid"))]
    pub user_id: String,
}

/// USER_LOGOUT: sessions ended (logout, logout-all, a revoked session, a password change).
/// Realtime closes the sockets those sessions opened.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserLogout {
    /// Whose sessions.
    #[schemars(extend("format" = "uuid"))]
    pub user_id: String,
    /// The ended sessions' ids (64 hex digits each); empty when none was live.
    pub session_ids: Vec<String>,
    /// `logout`, `logout_all`, `revoked` or `password_changed`.
    pub reason: String,
}

/// PROFILE_UPDATED: the user changed their profile.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProfileUpdated {
    /// Whose profile.
    #[schemars(extend("format" = "uuid"))]
    pub user_id: String,
    /// The fields that changed, by their API names (`firstName`, `about`, ...).
    pub changed: Vec<String>,
}

/// TIER_CHANGED: an admin moved a user to another rate-limit tier.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TierChanged {
    /// Whose tier.
    #[schemars(extend("format" = "uuid"))]
    pub user_id: String,
    /// `free` or `premium`.
    pub tier: String,
    /// The tier before.
    pub previous_tier: String,
    /// The admin who changed it.
    #[schemars(extend("format" = "uuid"))]
    pub changed_by: String,
}

/// USER_ONLINE: the user went from offline to online (heartbeat or socket).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserOnline {
    /// Who.
    #[schemars(extend("format" = "uuid"))]
    pub user_id: String,
    /// When (RFC 3339).
    #[schemars(extend("format" = "date-time"))]
    pub at: String,
}

/// USER_OFFLINE: the user went offline.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserOffline {
    /// Who.
    #[schemars(extend("format" = "uuid"))]
    pub user_id: String,
    /// Their last heartbeat (RFC 3339).
    #[schemars(extend("format" = "date-time"))]
    pub last_seen: String,
    /// `offline` (they said so), `disconnected` (last socket closed) or `timeout` (the sweep).
    pub reason: String,
}

/// A connection request as sent: the data of CONNECTION_REQUEST_SENT and CONNECTION_REQUEST_IGNORED.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionRequest {
    /// The request id (UUIDv7).
    #[schemars(extend("format" = "uuid"))]
    pub id: String,
    /// The sender (the acting user).
    #[schemars(extend("format" = "uuid"))]
    pub from_user_id: String,
    /// The receiver.
    #[schemars(extend("format" = "uuid"))]
    pub to_user_id: String,
    /// `interested` or `ignored`.
    pub status: String,
    /// When it was sent (RFC 3339).
    #[schemars(extend("format" = "date-time"))]
    pub created_at: String,
}

/// A connection request as reviewed: the data of CONNECTION_ACCEPTED and CONNECTION_REJECTED.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionReview {
    /// The request id (UUIDv7).
    #[schemars(extend("format" = "uuid"))]
    pub id: String,
    /// Who sent the request.
    #[schemars(extend("format" = "uuid"))]
    pub from_user_id: String,
    /// Who reviewed it (the acting user).
    #[schemars(extend("format" = "uuid"))]
    pub to_user_id: String,
    /// `accepted` or `rejected`.
    pub status: String,
    /// When it was reviewed (RFC 3339).
    #[schemars(extend("format" = "date-time"))]
    pub reviewed_at: String,
}

/// Two event types with one shape get one struct, wrapped once per type so the type
/// still decides the event type. The wrapper is invisible on the wire and in the schema.
macro_rules! same_shape {
    ($(#[$doc:meta])* $name:ident($inner:ty)) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
        #[serde(transparent)]
        pub struct $name(pub $inner);

        impl Deref for $name {
            type Target = $inner;
            fn deref(&self) -> &$inner {
                &self.0
            }
        }
    };
}

same_shape!(
    /// CONNECTION_REQUEST_SENT: "I'd like to connect"; the receiver is notified.
    ConnectionRequestSent(ConnectionRequest)
);
same_shape!(
    /// CONNECTION_REQUEST_IGNORED: "not for me"; nobody is notified.
    ConnectionRequestIgnored(ConnectionRequest)
);
same_shape!(
    /// CONNECTION_ACCEPTED: the two are connected; the sender is notified.
    ConnectionAccepted(ConnectionReview)
);
same_shape!(
    /// CONNECTION_REJECTED: the request is closed.
    ConnectionRejected(ConnectionReview)
);
same_shape!(
    /// EMAIL_REQUESTED: the channels router asks the email sender to deliver one notification.
    EmailRequested(Delivery)
);
same_shape!(
    /// SMS_REQUESTED: the channels router asks the SMS sender to deliver one notification.
    SmsRequested(Delivery)
);

/// MESSAGE_SENT: the message as GET /messages shows it. Realtime pushes it to the receiver
/// as is (the `message` frame).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MessageSent {
    /// The Redis stream id, `<ms>-<seq>`: orders the conversation and is its cursor.
    pub id: String,
    /// The sender (the acting user).
    #[schemars(extend("format" = "uuid"))]
    pub from_user_id: String,
    /// The receiver.
    #[schemars(extend("format" = "uuid"))]
    pub to_user_id: String,
    /// The text, 1 to 2000 characters.
    pub text: String,
    /// When it was stored (RFC 3339).
    #[schemars(extend("format" = "date-time"))]
    pub sent_at: String,
}

/// MESSAGES_READ: the reader read everything the other user had sent them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MessagesRead {
    /// Who read (the acting user).
    #[schemars(extend("format" = "uuid"))]
    pub reader_id: String,
    /// Whose messages.
    #[schemars(extend("format" = "uuid"))]
    pub other_user_id: String,
    /// How many became read.
    pub count: u64,
    /// When (RFC 3339).
    #[schemars(extend("format" = "date-time"))]
    pub read_at: String,
}

/// NOTIFICATION_CREATED: a notification as stored and as GET /notifications returns it.
/// Realtime pushes it as is (the `notification` frame).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NotificationCreated {
    /// The id of the event that caused it (so a duplicate is recognisable).
    #[schemars(extend("format" = "uuid"))]
    pub id: String,
    /// Who receives it.
    #[schemars(extend("format" = "uuid"))]
    pub recipient_id: String,
    /// Who caused it.
    #[schemars(extend("format" = "uuid"))]
    pub actor_id: String,
    /// When the causing event happened (RFC 3339).
    #[schemars(extend("format" = "date-time"))]
    pub created_at: String,
    /// Its kind (`type`) and the details for that kind (`data`).
    #[serde(flatten)]
    pub detail: NotificationDetail,
}

/// What a notification is about: `type` names the kind, `data` holds its details.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", content = "data", rename_all = "snake_case")]
pub enum NotificationDetail {
    /// Someone asked to connect.
    ConnectionRequest(RequestRef),
    /// Someone accepted the recipient's request.
    ConnectionAccepted(RequestRef),
    /// A message arrived while the recipient was offline.
    Message(MessageRef),
    /// Welcome to DevConnect.
    Welcome(Welcome),
}

impl NotificationDetail {
    /// The kind's wire name (`connection_request`, `message`, ...).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::ConnectionRequest(_) => "connection_request",
            Self::ConnectionAccepted(_) => "connection_accepted",
            Self::Message(_) => "message",
            Self::Welcome(_) => "welcome",
        }
    }
}

/// The connection request a notification is about.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RequestRef {
    /// The request id.
    #[schemars(extend("format" = "uuid"))]
    pub request_id: String,
}

/// The message a notification is about.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MessageRef {
    /// The message id.
    pub message_id: String,
    /// Its first 100 characters.
    pub preview: String,
}

/// The new user's welcome.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Welcome {
    /// Their first name, to greet them by.
    pub first_name: Option<String>,
}

/// DAILY_SUMMARY: the analytics consumer closed a UTC day (the stream moved a grace period
/// past its end; see the analytics crate's `derived` module). The numbers are what the
/// day's counters held at that moment; events of the day counted later show in GET
/// /analytics/daily but not here. Keyed by the nil UUID: no user acts, and one key keeps
/// the summaries on one partition, in day order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DailySummary {
    /// The UTC day, `YYYY-MM-DD`.
    #[schemars(extend("format" = "date"))]
    pub date: String,
    /// Events counted that day, of every type.
    pub total_events: u64,
    /// Events counted per event type (`USER_SIGNUP`, ...).
    pub counts: BTreeMap<String, u64>,
    /// Distinct users who acted that day (HyperLogLog estimate, about 1% off at most).
    pub dau: u64,
    /// The day's funnel.
    pub funnel: DailyFunnel,
    /// When the day was closed (RFC 3339).
    #[schemars(extend("format" = "date-time"))]
    pub closed_at: String,
}

/// A day's funnel, from signing up to talking: each step counted on the day it happened
/// (day counts, not a cohort of that day's signups).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DailyFunnel {
    /// New accounts (USER_SIGNUP).
    pub signups: u64,
    /// Connection requests sent (CONNECTION_REQUEST_SENT).
    pub requests_sent: u64,
    /// Requests accepted (CONNECTION_ACCEPTED).
    pub accepted: u64,
    /// Users who got their first connection ever (MILESTONE `firstConnection`).
    pub first_connections: u64,
    /// Users who sent their first message ever (MILESTONE `firstMessage`).
    pub first_messages: u64,
}

/// Which first a [`Milestone`] marks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum MilestoneKind {
    /// The user's first accepted connection (either side of the request).
    FirstConnection,
    /// The first message the user sent.
    FirstMessage,
}

impl MilestoneKind {
    /// Every kind.
    pub const ALL: [MilestoneKind; 2] = [MilestoneKind::FirstConnection, MilestoneKind::FirstMessage];

    /// The wire name, `firstConnection` or `firstMessage` (also its Redis key and counter name).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::FirstConnection => "firstConnection",
            Self::FirstMessage => "firstMessage",
        }
    }
}

/// MILESTONE: a user's first connection or first message, once per user and kind. Keyed
/// by the user who reached it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Milestone {
    /// Whose milestone.
    #[schemars(extend("format" = "uuid"))]
    pub user_id: String,
    /// Which one.
    pub milestone: MilestoneKind,
    /// The other user: the new connection, or the first message's receiver.
    #[schemars(extend("format" = "uuid"))]
    pub with_user_id: String,
    /// The event that reached it (CONNECTION_ACCEPTED or MESSAGE_SENT).
    #[schemars(extend("format" = "uuid"))]
    pub source_event_id: String,
    /// When it was reached: that event's time (RFC 3339).
    #[schemars(extend("format" = "date-time"))]
    pub at: String,
}

/// The one table of event type -> payload struct (each payload struct is named like its
/// [`EventType`] variant). Generates [`Event`], the [`EventPayload`] impls and the
/// exhaustive matches that keep the two lists in step.
macro_rules! payloads {
    ($($name:ident),* $(,)?) => {
        /// A typed event payload: one variant per [`EventType`], holding that type's struct.
        #[derive(Clone, Debug, PartialEq)]
        #[allow(missing_docs)]
        pub enum Event {
            $($name($name),)*
        }

        $(
            impl EventPayload for $name {
                const TYPE: EventType = EventType::$name;
            }

            impl From<$name> for Event {
                fn from(payload: $name) -> Self {
                    Event::$name(payload)
                }
            }
        )*

        impl Event {
            /// The event type of this payload.
            pub fn event_type(&self) -> EventType {
                match self {
                    $(Event::$name(_) => EventType::$name,)*
                }
            }

            /// Reads `data` as the payload of `event_type`; the error says which field is wrong.
            pub fn decode(event_type: EventType, data: &Value) -> Result<Self, serde_json::Error> {
                match event_type {
                    $(EventType::$name => $name::deserialize(data).map(Event::$name),)*
                }
            }

            /// Reads `json` (the envelope's `data` as JSON text) as the payload of
            /// `event_type`, straight into its struct; the error says which field is wrong.
            pub fn from_json(event_type: EventType, json: &str) -> Result<Self, serde_json::Error> {
                match event_type {
                    $(EventType::$name => serde_json::from_str::<$name>(json).map(Event::$name),)*
                }
            }

            /// The envelope's `data`.
            pub fn to_data(&self) -> Result<Value, serde_json::Error> {
                match self {
                    $(Event::$name(payload) => serde_json::to_value(payload),)*
                }
            }

            /// Every event type with the standalone (draft-07) JSON Schema of its payload.
            pub fn root_schemas() -> Vec<(EventType, Schema)> {
                vec![$((EventType::$name, crate::asyncapi::standalone::<$name>()),)*]
            }

            /// Every event type with the schema of its payload, as `generator` references it.
            pub fn schemas(generator: &mut SchemaGenerator) -> Vec<(EventType, Schema)> {
                vec![$((EventType::$name, generator.subschema_for::<$name>()),)*]
            }
        }
    };
}

payloads!(
    UserSignup,
    UserLogin,
    UserLogout,
    ProfileUpdated,
    TierChanged,
    UserOnline,
    UserOffline,
    ConnectionRequestSent,
    ConnectionRequestIgnored,
    ConnectionAccepted,
    ConnectionRejected,
    MessageSent,
    MessagesRead,
    NotificationCreated,
    EmailRequested,
    SmsRequested,
    DailySummary,
    Milestone,
);

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_payload_serializes_to_the_fields_it_always_had() {
        let data = Event::from(UserOnline {
            user_id: "u1".into(),
            at: "2026-01-01T00:00:00.000Z".into(),
        })
        .to_data()
        .unwrap();
        assert_eq!(data, json!({"userId": "u1", "at": "2026-01-01T00:00:00.000Z"}));
    }

    #[test]
    fn two_event_types_of_one_shape_keep_their_own_type() {
        let request = ConnectionRequest {
            id: "r".into(),
            from_user_id: "a".into(),
            to_user_id: "b".into(),
            status: "ignored".into(),
            created_at: "t".into(),
        };
        let event = Event::from(ConnectionRequestIgnored(request.clone()));
        assert_eq!(event.event_type(), EventType::ConnectionRequestIgnored);
        assert_eq!(event.to_data().unwrap()["fromUserId"], "a");
        assert_eq!(ConnectionRequestSent::TYPE, EventType::ConnectionRequestSent);
    }

    #[test]
    fn a_notification_keeps_its_type_and_data_fields_on_the_wire() {
        let wire = json!({"id": "e", "type": "message", "recipientId": "b", "actorId": "a",
            "createdAt": "t", "data": {"messageId": "1-0", "preview": "hi"}});
        let Event::NotificationCreated(n) = Event::decode(EventType::NotificationCreated, &wire).unwrap() else {
            panic!("not a notification")
        };
        assert_eq!(n.detail.kind(), "message");
        assert_eq!(Event::NotificationCreated(n).to_data().unwrap(), wire);
    }

    #[test]
    fn data_missing_a_field_does_not_decode_and_says_which() {
        let err = Event::decode(EventType::MessageSent, &json!({"id": "1-0", "fromUserId": "a"})).unwrap_err();
        assert!(err.to_string().contains("toUserId"), "{err}");
    }
}
