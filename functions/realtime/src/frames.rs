//! The WebSocket protocol: frames in (`action`) and out (`type`). The types live in
//! [`devconnect::frames`], beside the event payloads two of them carry, so
//! `docs/asyncapi.json` documents them with the events.

pub use devconnect::frames::{error, pong, typing, ClientFrame, ServerFrame};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ping_and_typing_parse() {
        assert_eq!(
            ClientFrame::parse(Some(r#"{"action":"ping"}"#)).unwrap(),
            ClientFrame::Ping
        );
        assert_eq!(
            ClientFrame::parse(Some(r#"{"action":"typing","to":"u2"}"#)).unwrap(),
            ClientFrame::Typing { to: "u2".into() }
        );
    }

    #[test]
    fn malformed_frames_are_bad_frames() {
        assert_eq!(ClientFrame::parse(Some("not json")).unwrap_err().0, "bad_frame");
        assert_eq!(ClientFrame::parse(Some(r#"{"to":"x"}"#)).unwrap_err().0, "bad_frame");
        assert_eq!(ClientFrame::parse(None).unwrap_err().0, "bad_frame");
    }

    #[test]
    fn unknown_actions_are_named_as_such() {
        assert_eq!(
            ClientFrame::parse(Some(r#"{"action":"dance"}"#)).unwrap_err().0,
            "unknown_action"
        );
        assert_eq!(
            ClientFrame::parse(Some(r#"{"action":"typing"}"#)).unwrap_err().0,
            "unknown_action"
        );
    }
}
