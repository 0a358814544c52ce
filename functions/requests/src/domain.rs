//! The rules of connection requests, free of HTTP and Redis.

use devconnect::{
    payloads::{
        ConnectionAccepted, ConnectionRejected, ConnectionRequest, ConnectionRequestIgnored, ConnectionRequestSent,
        ConnectionReview, Event,
    },
    AppError,
};

/// What a sender says about someone in their feed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendStatus {
    /// "I'd like to connect": the receiver sees a pending request.
    Interested,
    /// "Not for me": nobody is notified; the two never see each other in the feed.
    Ignored,
}

/// What a receiver decides about a pending interested request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReviewStatus {
    /// Both become connections.
    Accepted,
    /// The request is closed; the two stay out of each other's feed.
    Rejected,
}

impl SendStatus {
    /// Parses the `{status}` path segment.
    pub fn parse(raw: &str) -> Result<Self, AppError> {
        match raw {
            "interested" => Ok(Self::Interested),
            "ignored" => Ok(Self::Ignored),
            _ => Err(AppError::Validation("status must be interested or ignored".into())),
        }
    }

    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Interested => "interested",
            Self::Ignored => "ignored",
        }
    }

    /// The event this produces: CONNECTION_REQUEST_SENT or CONNECTION_REQUEST_IGNORED.
    pub fn event(self, request: ConnectionRequest) -> Event {
        match self {
            Self::Interested => ConnectionRequestSent(request).into(),
            Self::Ignored => ConnectionRequestIgnored(request).into(),
        }
    }
}

impl ReviewStatus {
    /// Parses the `{status}` path segment.
    pub fn parse(raw: &str) -> Result<Self, AppError> {
        match raw {
            "accepted" => Ok(Self::Accepted),
            "rejected" => Ok(Self::Rejected),
            _ => Err(AppError::Validation("status must be accepted or rejected".into())),
        }
    }

    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Accepted => "accepted",
            Self::Rejected => "rejected",
        }
    }

    /// The event this produces: CONNECTION_ACCEPTED or CONNECTION_REJECTED.
    pub fn event(self, review: ConnectionReview) -> Event {
        match self {
            Self::Accepted => ConnectionAccepted(review).into(),
            Self::Rejected => ConnectionRejected(review).into(),
        }
    }
}

/// Nobody sends a request to themselves.
pub fn check_not_self(me: &str, to: &str) -> Result<(), AppError> {
    if me == to {
        return Err(AppError::Validation("you cannot send a request to yourself".into()));
    }
    Ok(())
}

/// Feed page size: default and maximum.
pub const FEED_DEFAULT_LIMIT: usize = 20;
/// Largest feed page.
pub const FEED_MAX_LIMIT: usize = 100;
/// Default page of GET /requests/received and GET /connections.
pub const PAGE_DEFAULT_LIMIT: usize = 50;
/// Largest page of GET /requests/received and GET /connections.
pub const PAGE_MAX_LIMIT: usize = 100;

/// A GET /connections cursor, `<connectedAtMs>_<userId>` as the previous page returned it.
pub fn parse_connections_cursor(raw: &str) -> Result<(i64, String), AppError> {
    let invalid = || AppError::Validation("cursor is not valid".into());
    let (ms, id) = raw.split_once('_').ok_or_else(invalid)?;
    let ms = ms.parse::<i64>().map_err(|_| invalid())?;
    let id = devconnect::user::parse_user_id(id).map_err(|_| invalid())?;
    Ok((ms, id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn send_accepts_only_interested_and_ignored() {
        assert_eq!(SendStatus::parse("interested").unwrap(), SendStatus::Interested);
        assert_eq!(SendStatus::parse("ignored").unwrap(), SendStatus::Ignored);
        assert!(SendStatus::parse("accepted").is_err());
        assert!(SendStatus::parse("Interested").is_err());
    }

    #[test]
    fn review_accepts_only_accepted_and_rejected() {
        assert_eq!(ReviewStatus::parse("accepted").unwrap(), ReviewStatus::Accepted);
        assert!(ReviewStatus::parse("interested").is_err());
    }

    #[test]
    fn a_request_to_yourself_is_refused() {
        assert!(check_not_self("a", "a").is_err());
        assert!(check_not_self("a", "b").is_ok());
    }

    #[test]
    fn ignoring_produces_the_ignored_event() {
        use devconnect::events::EventType;
        let request = ConnectionRequest {
            id: "r".into(),
            from_user_id: "a".into(),
            to_user_id: "b".into(),
            status: "ignored".into(),
            created_at: "t".into(),
        };
        assert_eq!(
            SendStatus::Ignored.event(request).event_type(),
            EventType::ConnectionRequestIgnored
        );
        let review = ConnectionReview {
            id: "r".into(),
            from_user_id: "a".into(),
            to_user_id: "b".into(),
            status: "accepted".into(),
            reviewed_at: "t".into(),
        };
        assert_eq!(
            ReviewStatus::Accepted.event(review).event_type(),
            EventType::ConnectionAccepted
        );
    }

    #[test]
    fn connections_cursors_are_a_time_and_a_user_id() {
        let id = "0190c3a4-0000-7000-8000-00000000000a";
        assert_eq!(
            parse_connections_cursor(&format!("17_{id}")).unwrap(),
            (17, id.to_string())
        );
        assert!(parse_connections_cursor("17").is_err());
        assert!(parse_connections_cursor("x_0190c3a4-0000-7000-8000-00000000000a").is_err());
        assert!(parse_connections_cursor("17_nobody").is_err());
    }
}
