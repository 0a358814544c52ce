//! Who gets notified of what, free of Redis and Kafka.

use devconnect::events::{format_timestamp, Envelope, EventType};
use serde_json::{json, Value};

/// A notification to create.
#[derive(Debug, Clone, PartialEq)]
pub struct Notification {
    /// Who receives it.
    pub recipient: String,
    /// `connection_request`, `connection_accepted`, `message` or `welcome`.
    pub kind: &'static str,
    /// Who caused it.
    pub actor: String,
    /// The event it comes from; also the notification's id (so duplicates are recognisable).
    pub source_event_id: String,
    /// When the event happened (RFC 3339).
    pub created_at: String,
    /// Only if the recipient is offline (a message to someone online needs no notification).
    pub only_if_offline: bool,
    /// Details for the client.
    pub data: Value,
}

impl Notification {
    /// The JSON stored, published and returned by GET /notifications.
    pub fn view(&self) -> Value {
        json!({
            "id": self.source_event_id,
            "type": self.kind,
            "recipientId": self.recipient,
            "actorId": self.actor,
            "createdAt": self.created_at,
            "data": self.data,
        })
    }
}

fn field<'a>(e: &'a Envelope, name: &str) -> Result<&'a str, String> {
    e.data
        .get(name)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| format!("invalid data: missing {name}"))
}

/// The notification an event causes: `Ok(None)` if none, `Err(reason)` if its data is unusable.
pub fn plan(e: &Envelope) -> Result<Option<Notification>, String> {
    let make = |recipient: &str, kind, actor: &str, only_if_offline, data| Notification {
        recipient: recipient.to_string(),
        kind,
        actor: actor.to_string(),
        source_event_id: e.event_id.to_string(),
        created_at: format_timestamp(&e.timestamp),
        only_if_offline,
        data,
    };
    Ok(Some(match e.event_type {
        EventType::ConnectionRequestSent => {
            let (from, to) = (field(e, "fromUserId")?, field(e, "toUserId")?);
            make(
                to,
                "connection_request",
                from,
                false,
                json!({"requestId": field(e, "id")?}),
            )
        }
        EventType::ConnectionAccepted => {
            let (from, to) = (field(e, "fromUserId")?, field(e, "toUserId")?);
            make(
                from,
                "connection_accepted",
                to,
                false,
                json!({"requestId": field(e, "id")?}),
            )
        }
        EventType::MessageSent => {
            let (from, to, text) = (field(e, "fromUserId")?, field(e, "toUserId")?, field(e, "text")?);
            let preview: String = text.chars().take(100).collect();
            make(
                to,
                "message",
                from,
                true,
                json!({"messageId": field(e, "id")?, "preview": preview}),
            )
        }
        EventType::UserSignup => {
            let user = field(e, "userId")?;
            make(
                user,
                "welcome",
                user,
                false,
                json!({"firstName": e.data.get("firstName")}),
            )
        }
        _ => return Ok(None),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope(event_type: EventType, data: Value) -> Envelope {
        Envelope::new(event_type, "test", "actor", "req", data)
    }

    #[test]
    fn a_connection_request_notifies_its_receiver() {
        let n = plan(&envelope(
            EventType::ConnectionRequestSent,
            json!({"id": "r1", "fromUserId": "a", "toUserId": "b"}),
        ))
        .unwrap()
        .unwrap();
        assert_eq!(
            (n.recipient.as_str(), n.kind, n.actor.as_str()),
            ("b", "connection_request", "a")
        );
    }

    #[test]
    fn an_acceptance_notifies_the_original_sender() {
        let n = plan(&envelope(
            EventType::ConnectionAccepted,
            json!({"id": "r1", "fromUserId": "a", "toUserId": "b"}),
        ))
        .unwrap()
        .unwrap();
        assert_eq!((n.recipient.as_str(), n.kind), ("a", "connection_accepted"));
    }

    #[test]
    fn a_message_notifies_the_receiver_only_when_offline() {
        let n = plan(&envelope(
            EventType::MessageSent,
            json!({"id": "m1", "fromUserId": "a", "toUserId": "b", "text": "hi"}),
        ))
        .unwrap()
        .unwrap();
        assert_eq!(n.recipient, "b");
        assert!(n.only_if_offline);
    }

    #[test]
    fn a_signup_gets_a_welcome() {
        let n = plan(&envelope(EventType::UserSignup, json!({"userId": "u"})))
            .unwrap()
            .unwrap();
        assert_eq!((n.recipient.as_str(), n.kind), ("u", "welcome"));
    }

    #[test]
    fn events_nobody_is_notified_of_are_skipped() {
        assert_eq!(
            plan(&envelope(EventType::UserLogin, json!({"userId": "u"}))).unwrap(),
            None
        );
    }

    #[test]
    fn missing_fields_make_the_record_poison() {
        let err = plan(&envelope(EventType::ConnectionRequestSent, json!({"fromUserId": "a"}))).unwrap_err();
        assert!(err.contains("missing"), "{err}");
    }
}
