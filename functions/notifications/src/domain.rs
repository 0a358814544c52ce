//! Who gets notified of what, free of Redis and Kafka.

use devconnect::{
    clock,
    events::EnvelopeHead,
    payloads::{Event, MessageRef, NotificationDetail, RequestRef, Welcome},
};
use serde::{ser::SerializeStruct, Serialize, Serializer};
use serde_json::value::RawValue;

/// A notification to create.
#[derive(Debug, Clone, PartialEq)]
pub struct Notification {
    /// Who receives it.
    pub recipient: String,
    /// What it is about (its `type` and `data` on the wire).
    pub detail: NotificationDetail,
    /// Who caused it.
    pub actor: String,
    /// The event it comes from; also the notification's id (so duplicates are recognisable).
    pub source_event_id: String,
    /// When the event happened (RFC 3339).
    pub created_at: String,
    /// Only if the recipient is offline (a message to someone online needs no notification).
    pub only_if_offline: bool,
    /// [`Notification::view`] as JSON, written once: stored in Redis and sent as
    /// NOTIFICATION_CREATED's `data`, byte for byte.
    pub view_json: ViewJson,
}

/// A notification's view as JSON text, keys sorted (the form the stored lists have
/// always had, and what a `serde_json::Value` writes).
#[derive(Debug, Clone)]
pub struct ViewJson(Box<RawValue>);

impl ViewJson {
    /// The JSON text.
    pub fn as_str(&self) -> &str {
        self.0.get()
    }

    /// The JSON, to embed as is in an envelope.
    pub fn raw(&self) -> &RawValue {
        &self.0
    }
}

impl PartialEq for ViewJson {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Notification {
    /// A notification, its view written once.
    fn new(
        recipient: String,
        actor: String,
        detail: NotificationDetail,
        source_event_id: String,
        created_at: String,
        only_if_offline: bool,
    ) -> Self {
        let view = SortedView {
            actor: &actor,
            created_at: &created_at,
            detail: &detail,
            id: &source_event_id,
            recipient: &recipient,
        };
        // Strings and structs of strings: serializing cannot fail.
        let view_json = ViewJson(serde_json::value::to_raw_value(&view).unwrap_or_default());
        Self {
            recipient,
            detail,
            actor,
            source_event_id,
            created_at,
            only_if_offline,
            view_json,
        }
    }

    /// `connection_request`, `connection_accepted`, `message` or `welcome`.
    pub fn kind(&self) -> &'static str {
        self.detail.kind()
    }

    /// The typed NOTIFICATION_CREATED payload: the oracle the tests hold `view_json` (what is
    /// stored, published and returned by GET /notifications) against.
    #[cfg(test)]
    pub fn view(&self) -> devconnect::payloads::NotificationCreated {
        devconnect::payloads::NotificationCreated {
            id: self.source_event_id.clone(),
            recipient_id: self.recipient.clone(),
            actor_id: self.actor.clone(),
            created_at: self.created_at.clone(),
            detail: self.detail.clone(),
        }
    }
}

/// [`devconnect::payloads::NotificationCreated`] written with its keys in sorted order, straight from the parts
/// (no `serde_json::Value` in between). The details' own keys are sorted already.
struct SortedView<'a> {
    actor: &'a str,
    created_at: &'a str,
    detail: &'a NotificationDetail,
    id: &'a str,
    recipient: &'a str,
}

impl Serialize for SortedView<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut view = s.serialize_struct("NotificationCreated", 6)?;
        view.serialize_field("actorId", self.actor)?;
        view.serialize_field("createdAt", self.created_at)?;
        view.serialize_field("data", &DetailData(self.detail))?;
        view.serialize_field("id", self.id)?;
        view.serialize_field("recipientId", self.recipient)?;
        view.serialize_field("type", self.detail.kind())?;
        view.end()
    }
}

/// The `data` of a [`NotificationDetail`]: its variant's struct.
struct DetailData<'a>(&'a NotificationDetail);

impl Serialize for DetailData<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            NotificationDetail::ConnectionRequest(r) | NotificationDetail::ConnectionAccepted(r) => r.serialize(s),
            NotificationDetail::Message(m) => m.serialize(s),
            NotificationDetail::Welcome(w) => w.serialize(s),
        }
    }
}

/// The notification `event` (the typed payload of `e`, decoded once with the batch)
/// causes, if any.
pub fn plan(e: &EnvelopeHead, event: &Event) -> Option<Notification> {
    let make = |recipient: &str, actor: &str, only_if_offline, detail| {
        Notification::new(
            recipient.to_string(),
            actor.to_string(),
            detail,
            e.event_id.to_string(),
            clock::rfc3339(&e.timestamp),
            only_if_offline,
        )
    };
    let request = |id: &str| RequestRef {
        request_id: id.to_string(),
    };
    Some(match event {
        Event::ConnectionRequestSent(r) => make(
            &r.to_user_id,
            &r.from_user_id,
            false,
            NotificationDetail::ConnectionRequest(request(&r.id)),
        ),
        Event::ConnectionAccepted(r) => make(
            &r.from_user_id,
            &r.to_user_id,
            false,
            NotificationDetail::ConnectionAccepted(request(&r.id)),
        ),
        Event::MessageSent(m) => make(
            &m.to_user_id,
            &m.from_user_id,
            true,
            NotificationDetail::Message(MessageRef {
                message_id: m.id.clone(),
                preview: m.text.chars().take(100).collect(),
            }),
        ),
        Event::UserSignup(u) => make(
            &u.user_id,
            &u.user_id,
            false,
            NotificationDetail::Welcome(Welcome {
                first_name: Some(u.first_name.clone()),
            }),
        ),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use devconnect::events::{Envelope, EventType};
    use serde_json::{json, Value};

    use super::*;

    fn envelope(event_type: EventType, data: Value) -> Envelope {
        Envelope::new(event_type, "test", "actor", "req", data)
    }

    fn plan_of(e: &Envelope) -> Option<Notification> {
        plan(&e.head(), &e.event().expect("data fits the event type"))
    }

    fn request() -> Value {
        json!({"id": "r1", "fromUserId": "a", "toUserId": "b", "status": "interested", "createdAt": "t"})
    }

    fn review() -> Value {
        json!({"id": "r1", "fromUserId": "a", "toUserId": "b", "status": "accepted", "reviewedAt": "t"})
    }

    #[test]
    fn a_connection_request_notifies_its_receiver() {
        let n = plan_of(&envelope(EventType::ConnectionRequestSent, request())).unwrap();
        assert_eq!(
            (n.recipient.as_str(), n.kind(), n.actor.as_str()),
            ("b", "connection_request", "a")
        );
    }

    #[test]
    fn an_acceptance_notifies_the_original_sender() {
        let n = plan_of(&envelope(EventType::ConnectionAccepted, review())).unwrap();
        assert_eq!((n.recipient.as_str(), n.kind()), ("a", "connection_accepted"));
    }

    #[test]
    fn a_message_notifies_the_receiver_only_when_offline() {
        let n = plan_of(&envelope(
            EventType::MessageSent,
            json!({"id": "m1", "fromUserId": "a", "toUserId": "b", "text": "hi", "sentAt": "t"}),
        ))
        .unwrap();
        assert_eq!(n.recipient, "b");
        assert!(n.only_if_offline);
    }

    #[test]
    fn a_signup_gets_a_welcome() {
        let data = json!({"userId": "u", "email": "u@example.com", "firstName": "Ada", "lastName": "L"});
        let n = plan_of(&envelope(EventType::UserSignup, data)).unwrap();
        assert_eq!((n.recipient.as_str(), n.kind()), ("u", "welcome"));
        assert_eq!(
            n.view().detail,
            NotificationDetail::Welcome(Welcome {
                first_name: Some("Ada".into())
            })
        );
    }

    #[test]
    fn the_view_is_written_with_sorted_keys_as_a_json_value_writes_it() {
        let message = json!({"id": "m\"1", "fromUserId": "a", "toUserId": "b", "text": "hé \n", "sentAt": "t"});
        let welcome = json!({"userId": "u", "email": "u@example.com", "firstName": "Ada", "lastName": "L"});
        let cases = [
            envelope(EventType::ConnectionRequestSent, request()),
            envelope(EventType::ConnectionAccepted, review()),
            envelope(EventType::MessageSent, message),
            envelope(EventType::UserSignup, welcome),
        ];
        for e in cases {
            let n = plan_of(&e).unwrap();
            let expected = serde_json::to_value(n.view()).unwrap().to_string();
            assert_eq!(n.view_json.as_str(), expected);
        }
        let mut n = plan_of(&envelope(EventType::ConnectionRequestSent, request())).unwrap();
        n.detail = NotificationDetail::Welcome(Welcome { first_name: None });
        let n = Notification::new(n.recipient, n.actor, n.detail, n.source_event_id, n.created_at, false);
        assert_eq!(
            n.view_json.as_str(),
            serde_json::to_value(n.view()).unwrap().to_string()
        );
    }

    #[test]
    fn events_nobody_is_notified_of_are_skipped() {
        assert_eq!(plan_of(&envelope(EventType::UserLogin, json!({"userId": "u"}))), None);
    }
}
