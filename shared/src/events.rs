//! Domain events: their types, their topics and the JSON envelope on the wire.
//!
//! Every event type is listed once, in [`EventType`], with the topic it goes to.
//! Consumers dedupe by `eventId` (a UUIDv7, so ids also sort by time), never by offset.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize, Serializer};
use uuid::Uuid;

use crate::{config::Topics, payloads::Event};

/// The envelope version this code writes and understands.
pub const ENVELOPE_VERSION: u32 = 1;

/// Every event the system produces.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[allow(missing_docs)]
pub enum EventType {
    UserSignup,
    UserLogin,
    UserLogout,
    ProfileUpdated,
    /// An admin changed a user's tier (rate limit plan).
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
    /// The channels router asks the email sender to deliver one notification.
    EmailRequested,
    /// The channels router asks the SMS sender to deliver one notification.
    SmsRequested,
    /// Analytics closed a day: its counters, daily active users and funnel.
    DailySummary,
    /// A user's first connection or first message (once per user and milestone).
    Milestone,
}

/// The topics: the one list of them. Their default names are here; [`Topics`] holds the
/// configured names (`TOPIC_*` overrides). The test stack creates [`Topic::DEFAULT_NAMES`],
/// and a contract test checks `infra/local/lib.sh` and template.yaml against it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Topic {
    /// user-events
    User,
    /// connection-events
    Connection,
    /// message-events
    Message,
    /// notification-events
    Notification,
    /// email-events
    Email,
    /// sms-events
    Sms,
    /// analytics-events
    Analytics,
    /// dead-letter-events: records a consumer could not process (no event type goes here).
    DeadLetter,
}

impl Topic {
    /// Every topic, in a stable order (the order they are created in locally).
    pub const ALL: [Topic; 8] = [
        Topic::User,
        Topic::Connection,
        Topic::Message,
        Topic::Notification,
        Topic::Email,
        Topic::Sms,
        Topic::Analytics,
        Topic::DeadLetter,
    ];

    /// Every topic's default name, in [`Topic::ALL`] order.
    pub const DEFAULT_NAMES: [&'static str; 8] = {
        let mut names = [""; 8];
        let mut i = 0;
        while i < names.len() {
            names[i] = Topic::ALL[i].default_name();
            i += 1;
        }
        names
    };

    /// The name when no `TOPIC_*` variable overrides it.
    pub const fn default_name(self) -> &'static str {
        match self {
            Topic::User => "user-events",
            Topic::Connection => "connection-events",
            Topic::Message => "message-events",
            Topic::Notification => "notification-events",
            Topic::Email => "email-events",
            Topic::Sms => "sms-events",
            Topic::Analytics => "analytics-events",
            Topic::DeadLetter => "dead-letter-events",
        }
    }

    /// The environment variable that overrides the name.
    pub const fn env_var(self) -> &'static str {
        match self {
            Topic::User => "TOPIC_USER_EVENTS",
            Topic::Connection => "TOPIC_CONNECTION_EVENTS",
            Topic::Message => "TOPIC_MESSAGE_EVENTS",
            Topic::Notification => "TOPIC_NOTIFICATION_EVENTS",
            Topic::Email => "TOPIC_EMAIL_EVENTS",
            Topic::Sms => "TOPIC_SMS_EVENTS",
            Topic::Analytics => "TOPIC_ANALYTICS_EVENTS",
            Topic::DeadLetter => "TOPIC_DEAD_LETTER_EVENTS",
        }
    }
}

impl EventType {
    /// The topic this event type is produced to.
    pub fn topic(self) -> Topic {
        use EventType::*;
        match self {
            UserSignup | UserLogin | UserLogout | ProfileUpdated | TierChanged | UserOnline | UserOffline => {
                Topic::User
            }
            ConnectionRequestSent | ConnectionRequestIgnored | ConnectionAccepted | ConnectionRejected => {
                Topic::Connection
            }
            MessageSent | MessagesRead => Topic::Message,
            NotificationCreated => Topic::Notification,
            EmailRequested => Topic::Email,
            SmsRequested => Topic::Sms,
            DailySummary | Milestone => Topic::Analytics,
        }
    }

    /// The functions allowed to emit this event type: the envelope `source` a consumer
    /// requires before acting on it. The one table of who may say what; a record from
    /// any other source is dead-lettered (see `consumer`), so a function that can write
    /// to a topic cannot forge another function's events. Sources are the producers'
    /// `FUNCTION_NAME`s; the outbox relay re-sends envelopes unchanged, so it keeps the
    /// original source. USER_ONLINE/OFFLINE come from presence (heartbeats, the sweep)
    /// and from realtime (socket connect and disconnect).
    pub fn allowed_sources(self) -> &'static [&'static str] {
        use EventType::*;
        match self {
            UserSignup | UserLogin | UserLogout | ProfileUpdated | TierChanged => &["auth"],
            UserOnline | UserOffline => &["presence", "realtime"],
            ConnectionRequestSent | ConnectionRequestIgnored | ConnectionAccepted | ConnectionRejected => &["requests"],
            MessageSent | MessagesRead => &["messaging"],
            NotificationCreated => &["notifications"],
            EmailRequested | SmsRequested => &["channels"],
            DailySummary | Milestone => &["analytics"],
        }
    }

    /// The wire name, e.g. `USER_SIGNUP`.
    pub fn as_str(self) -> String {
        self.name().to_string()
    }

    /// The wire name without an allocation (consumers name every record's type).
    pub const fn name(self) -> &'static str {
        use EventType::*;
        match self {
            UserSignup => "USER_SIGNUP",
            UserLogin => "USER_LOGIN",
            UserLogout => "USER_LOGOUT",
            ProfileUpdated => "PROFILE_UPDATED",
            TierChanged => "TIER_CHANGED",
            UserOnline => "USER_ONLINE",
            UserOffline => "USER_OFFLINE",
            ConnectionRequestSent => "CONNECTION_REQUEST_SENT",
            ConnectionRequestIgnored => "CONNECTION_REQUEST_IGNORED",
            ConnectionAccepted => "CONNECTION_ACCEPTED",
            ConnectionRejected => "CONNECTION_REJECTED",
            MessageSent => "MESSAGE_SENT",
            MessagesRead => "MESSAGES_READ",
            NotificationCreated => "NOTIFICATION_CREATED",
            EmailRequested => "EMAIL_REQUESTED",
            SmsRequested => "SMS_REQUESTED",
            DailySummary => "DAILY_SUMMARY",
            Milestone => "MILESTONE",
        }
    }
}

impl Topic {
    /// The configured topic name.
    pub fn name(self, topics: &Topics) -> &str {
        match self {
            Topic::User => &topics.user_events,
            Topic::Connection => &topics.connection_events,
            Topic::Message => &topics.message_events,
            Topic::Notification => &topics.notification_events,
            Topic::Email => &topics.email_events,
            Topic::Sms => &topics.sms_events,
            Topic::Analytics => &topics.analytics_events,
            Topic::DeadLetter => &topics.dead_letter_events,
        }
    }
}

/// The JSON every event travels in.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Envelope {
    /// UUIDv7; the dedupe key.
    #[schemars(with = "String", extend("format" = "uuid"))]
    pub event_id: Uuid,
    /// What happened.
    pub event_type: EventType,
    /// Envelope version ([`ENVELOPE_VERSION`]).
    #[schemars(range(min = 1, max = 1))]
    pub version: u32,
    /// When it happened, RFC 3339 with milliseconds.
    #[serde(serialize_with = "rfc3339_millis")]
    #[schemars(with = "String", extend("format" = "date-time"))]
    pub timestamp: DateTime<Utc>,
    /// The function that produced it.
    pub source: String,
    /// The acting user's id; also the Kafka record key, so one user's events stay ordered.
    #[schemars(extend("format" = "uuid"))]
    pub key: String,
    /// The API request id that caused it.
    pub correlation_id: String,
    /// The payload: what [`Envelope::event`] reads as the event type's struct
    /// ([`crate::payloads`]). Kept as JSON here so a record with bad data can still be
    /// decoded far enough to be dead-lettered with the reason.
    pub data: serde_json::Value,
}

/// An envelope without its `data`: what a consumer keeps of each record besides the typed
/// payload ([`crate::consumer::Incoming`]), which is decoded from the record's bytes
/// straight into its struct, never through a `serde_json::Value`.
#[derive(Clone, Debug, PartialEq)]
pub struct EnvelopeHead {
    /// See [`Envelope::event_id`].
    pub event_id: Uuid,
    /// See [`Envelope::event_type`].
    pub event_type: EventType,
    /// See [`Envelope::version`].
    pub version: u32,
    /// See [`Envelope::timestamp`].
    pub timestamp: DateTime<Utc>,
    /// See [`Envelope::source`].
    pub source: String,
    /// See [`Envelope::key`].
    pub key: String,
    /// See [`Envelope::correlation_id`].
    pub correlation_id: String,
}

/// An envelope as it goes on the wire, borrowing its parts: serializes to the same bytes as
/// [`Envelope`] does with the same fields, for a `data` that is already JSON text (a
/// `serde_json::value::RawValue`, e.g. a notification that is also stored as is), so a
/// payload written once is never turned into a `serde_json::Value` and written again.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WireEnvelope<'a, D: Serialize + ?Sized> {
    /// See [`Envelope::event_id`].
    pub event_id: Uuid,
    /// See [`Envelope::event_type`].
    pub event_type: EventType,
    /// See [`Envelope::version`].
    pub version: u32,
    /// See [`Envelope::timestamp`].
    #[serde(serialize_with = "rfc3339_millis")]
    pub timestamp: DateTime<Utc>,
    /// See [`Envelope::source`].
    pub source: &'a str,
    /// See [`Envelope::key`].
    pub key: &'a str,
    /// See [`Envelope::correlation_id`].
    pub correlation_id: &'a str,
    /// See [`Envelope::data`].
    pub data: &'a D,
}

impl<'a, D: Serialize + ?Sized> WireEnvelope<'a, D> {
    /// A new event of `event_type`, stamped now, with this `data`.
    pub fn new(event_type: EventType, source: &'a str, key: &'a str, correlation_id: &'a str, data: &'a D) -> Self {
        Self {
            event_id: new_event_id(),
            event_type,
            version: ENVELOPE_VERSION,
            timestamp: Utc::now(),
            source,
            key,
            correlation_id,
            data,
        }
    }
}

/// A new event id: a UUIDv7, so ids sort by time.
pub fn new_event_id() -> Uuid {
    Uuid::now_v7()
}

fn rfc3339_millis<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&crate::clock::rfc3339(t))
}

impl Envelope {
    /// A new event of the payload's type, stamped now: how producers build one.
    pub fn of(source: &str, key: &str, correlation_id: &str, event: impl Into<Event>) -> serde_json::Result<Self> {
        let event = event.into();
        Ok(Self::new(
            event.event_type(),
            source,
            key,
            correlation_id,
            event.to_data()?,
        ))
    }

    /// The typed payload; `Err` says which field of `data` does not fit the event type.
    pub fn event(&self) -> serde_json::Result<Event> {
        Event::decode(self.event_type, &self.data)
    }

    /// The envelope without its data (as consumers receive it, next to the typed payload).
    pub fn head(&self) -> EnvelopeHead {
        EnvelopeHead {
            event_id: self.event_id,
            event_type: self.event_type,
            version: self.version,
            timestamp: self.timestamp,
            source: self.source.clone(),
            key: self.key.clone(),
            correlation_id: self.correlation_id.clone(),
        }
    }

    /// A new event, stamped now, with raw `data` (tests use it to build malformed events;
    /// producers use [`Envelope::of`]).
    pub fn new(event_type: EventType, source: &str, key: &str, correlation_id: &str, data: serde_json::Value) -> Self {
        Self {
            event_id: new_event_id(),
            event_type,
            version: ENVELOPE_VERSION,
            timestamp: Utc::now(),
            source: source.to_string(),
            key: key.to_string(),
            correlation_id: correlation_id.to_string(),
            data,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_envelope_serializes_in_camel_case_with_millisecond_timestamps() {
        let e = Envelope::new(
            EventType::UserSignup,
            "auth",
            "u1",
            "req-1",
            serde_json::json!({"a": 1}),
        );
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["eventType"], "USER_SIGNUP");
        assert_eq!(v["version"], 1);
        assert_eq!(v["correlationId"], "req-1");
        let ts = v["timestamp"].as_str().unwrap();
        assert!(
            ts.ends_with('Z') && ts.len() == "2026-01-01T00:00:00.000Z".len(),
            "{ts}"
        );
        assert_eq!(serde_json::from_value::<Envelope>(v).unwrap().event_id, e.event_id);
    }

    #[test]
    fn a_wire_envelope_with_data_already_written_is_byte_for_byte_the_envelope() {
        let data = serde_json::json!({"b": [1, "x"], "a": {"c": null}});
        let raw = serde_json::value::to_raw_value(&data).unwrap();
        let wire = WireEnvelope::new(EventType::UserLogin, "auth", "u1", "req-1", &*raw);
        let envelope = Envelope {
            event_id: wire.event_id,
            event_type: wire.event_type,
            version: wire.version,
            timestamp: wire.timestamp,
            source: "auth".into(),
            key: "u1".into(),
            correlation_id: "req-1".into(),
            data,
        };
        assert_eq!(
            serde_json::to_string(&wire).unwrap(),
            serde_json::to_string(&envelope).unwrap()
        );
    }

    #[test]
    fn user_events_go_to_the_user_topic() {
        assert_eq!(EventType::ProfileUpdated.topic(), Topic::User);
        assert_eq!(EventType::ConnectionAccepted.topic(), Topic::Connection);
        assert_eq!(EventType::UserLogout.as_str(), "USER_LOGOUT");
    }

    #[test]
    fn every_event_type_s_name_is_its_serde_name() {
        // Every event type has a payload, so the payload list names them all.
        for (t, _) in Event::root_schemas() {
            assert_eq!(serde_json::to_value(t).unwrap(), t.name(), "{t:?}");
        }
    }

    #[test]
    fn each_event_type_has_its_producers_and_only_them() {
        assert_eq!(EventType::UserSignup.allowed_sources(), ["auth"]);
        assert_eq!(EventType::UserOnline.allowed_sources(), ["presence", "realtime"]);
        assert_eq!(EventType::ConnectionAccepted.allowed_sources(), ["requests"]);
        assert!(!EventType::MessageSent.allowed_sources().contains(&"auth"));
    }
}
