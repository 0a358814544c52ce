//! Who gets notified of what, free of Redis and Kafka.

use devconnect::{
    clock,
    events::Envelope,
    payloads::{Event, MessageRef, NotificationCreated, NotificationDetail, RequestRef, Welcome},
};

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
}

impl Notification {
    /// `connection_request`, `connection_accepted`, `message` or `welcome`.
    pub fn kind(&self) -> &'static str {
        self.detail.kind()
    }

    /// What is stored, published as NOTIFICATION_CREATED and returned by GET /notifications.
    pub fn view(&self) -> NotificationCreated {
        NotificationCreated {
            id: self.source_event_id.clone(),
            recipient_id: self.recipient.clone(),
            actor_id: self.actor.clone(),
            created_at: self.created_at.clone(),
            detail: self.detail.clone(),
        }
    }

    /// [`Notification::view`] as stored in Redis: JSON with sorted keys, as always written.
    pub fn view_json(&self) -> String {
        // Strings and a tagged enum of strings: serializing cannot fail.
        serde_json::to_value(self.view()).unwrap_or_default().to_string()
    }
}

/// The notification `event` (the typed payload of `e`, decoded once with the batch)
/// causes, if any.
pub fn plan(e: &Envelope, event: &Event) -> Option<Notification> {
    let make = |recipient: &str, actor: &str, only_if_offline, detail| Notification {
        recipient: recipient.to_string(),
        detail,
        actor: actor.to_string(),
        source_event_id: e.event_id.to_string(),
        created_at: clock::rfc3339(&e.timestamp),
        only_if_offline,
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
    use devconnect::events::EventType;
    use serde_json::{json, Value};

    use super::*;

    fn envelope(event_type: EventType, data: Value) -> Envelope {
        Envelope::new(event_type, "test", "actor", "req", data)
    }

    fn plan_of(e: &Envelope) -> Option<Notification> {
        plan(e, &e.event().expect("data fits the event type"))
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
    fn events_nobody_is_notified_of_are_skipped() {
        assert_eq!(plan_of(&envelope(EventType::UserLogin, json!({"userId": "u"}))), None);
    }
}
