//! The notification kinds a user can route to email or SMS, and which of them are
//! low priority (written down once, here).

use serde::{Deserialize, Serialize};

/// A kind of notification, as preferences and deliveries name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Kind {
    /// Someone wants to connect.
    ConnectionRequest,
    /// Someone accepted your request. Low priority: goes into the daily digest.
    ConnectionAccepted,
    /// A message arrived while you were offline.
    Message,
    /// Your account was created.
    Welcome,
    /// The daily digest itself (email only): turning it off stops every digest email.
    Digest,
}

/// Every kind, in the order GET /notifications/preferences lists them.
pub const ALL: [Kind; 5] = [
    Kind::ConnectionRequest,
    Kind::ConnectionAccepted,
    Kind::Message,
    Kind::Welcome,
    Kind::Digest,
];

impl Kind {
    /// The wire name, e.g. `CONNECTION_REQUEST`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::ConnectionRequest => "CONNECTION_REQUEST",
            Kind::ConnectionAccepted => "CONNECTION_ACCEPTED",
            Kind::Message => "MESSAGE",
            Kind::Welcome => "WELCOME",
            Kind::Digest => "DIGEST",
        }
    }

    /// Parses a wire name.
    pub fn parse(s: &str) -> Option<Self> {
        ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// The kind of an in-app notification (its `type`, e.g. `connection_request`);
    /// `None` for a type no channel delivers.
    pub fn of_notification(notification_type: &str) -> Option<Self> {
        match notification_type {
            "connection_request" => Some(Kind::ConnectionRequest),
            "connection_accepted" => Some(Kind::ConnectionAccepted),
            "message" => Some(Kind::Message),
            "welcome" => Some(Kind::Welcome),
            _ => None,
        }
    }

    /// Low-priority kinds never email on their own: their emails are batched into one
    /// digest per user and day. Only an acceptance is low priority: it asks nothing of
    /// the user, while a request or a message waits for an answer.
    pub fn is_low_priority(self) -> bool {
        matches!(self, Kind::ConnectionAccepted)
    }

    /// Whether SMS can be chosen for this kind (a digest is email only).
    pub fn allows_sms(self) -> bool {
        self != Kind::Digest
    }

    /// The default for a user who never chose: email on for the high-priority kinds and
    /// the digest, SMS off.
    pub fn default_email(self) -> bool {
        !self.is_low_priority()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_parses_back_from_its_wire_name() {
        for k in ALL {
            assert_eq!(Kind::parse(k.as_str()), Some(k));
            assert_eq!(serde_json::to_value(k).unwrap(), k.as_str());
        }
    }

    #[test]
    fn acceptances_are_low_priority_and_requests_are_not() {
        assert!(Kind::ConnectionAccepted.is_low_priority());
        assert!(!Kind::ConnectionRequest.is_low_priority());
        assert!(!Kind::ConnectionAccepted.default_email());
        assert!(Kind::ConnectionRequest.default_email());
    }
}
