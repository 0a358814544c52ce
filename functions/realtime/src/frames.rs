//! The WebSocket protocol: frames in (`action`) and out (`type`).

use serde::Deserialize;
use serde_json::{json, Value};

/// What a client may send on `$default`.
#[derive(Debug, Deserialize, PartialEq, Eq)]
#[serde(tag = "action", rename_all = "lowercase", deny_unknown_fields)]
pub enum ClientFrame {
    /// Keep-alive; also refreshes presence. Answered with `pong`.
    Ping,
    /// "I am typing to `to`": relayed to `to`'s sockets if they are a connection.
    Typing {
        /// The user being typed to.
        to: String,
    },
}

impl ClientFrame {
    /// Parses a frame; the error is a message for the client's error frame.
    pub fn parse(body: Option<&str>) -> Result<Self, (&'static str, String)> {
        let body = body.unwrap_or_default();
        let value: Value = serde_json::from_str(body).map_err(|e| ("bad_frame", format!("frames are JSON: {e}")))?;
        if !value.get("action").is_some_and(Value::is_string) {
            return Err(("bad_frame", "a frame needs an \"action\"".into()));
        }
        serde_json::from_value(value).map_err(|e| ("unknown_action", format!("{e}; actions: ping, typing")))
    }
}

/// `{"type":"pong"}`.
pub fn pong() -> Value {
    json!({"type": "pong"})
}

/// `{"type":"error","code","message"}`: the socket stays open.
pub fn error(code: &str, message: &str) -> Value {
    json!({"type": "error", "code": code, "message": message})
}

/// `{"type":"typing","from"}`.
pub fn typing(from: &str) -> Value {
    json!({"type": "typing", "from": from})
}

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
