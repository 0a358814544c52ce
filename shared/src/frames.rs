//! The realtime WebSocket protocol: frames a client sends (`action`) and frames the
//! server pushes (`type`). Here, beside the event payloads, because two frames carry a
//! payload as is (MESSAGE_SENT, NOTIFICATION_CREATED) and because `docs/asyncapi.json`
//! documents both from these types.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::payloads::{MessageSent, NotificationCreated};

/// What a client may send on `$default`.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq, JsonSchema)]
#[serde(tag = "action", rename_all = "lowercase", deny_unknown_fields)]
pub enum ClientFrame {
    /// Keep-alive; also refreshes presence. Answered with `pong`.
    Ping,
    /// "I am typing to `to`": relayed to `to`'s sockets if they are a connection.
    Typing {
        /// The user being typed to.
        #[schemars(extend("format" = "uuid"))]
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

/// What the server sends on a socket.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, JsonSchema)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ServerFrame {
    /// The answer to `ping`.
    Pong,
    /// A frame was refused; the socket stays open.
    Error {
        /// `bad_frame`, `unknown_action`, `rate_limited`, `not_connected`, ...
        code: String,
        /// What was wrong, for a developer.
        message: String,
    },
    /// A connection is typing to this user.
    Typing {
        /// Who is typing.
        #[schemars(extend("format" = "uuid"))]
        from: String,
    },
    /// A message to this user (the MESSAGE_SENT payload).
    Message {
        /// The message.
        message: MessageSent,
    },
    /// A notification for this user (the NOTIFICATION_CREATED payload).
    Notification {
        /// The notification.
        notification: NotificationCreated,
    },
    /// A connection of this user went online or offline.
    Presence {
        /// Who.
        #[serde(rename = "userId")]
        #[schemars(extend("format" = "uuid"))]
        user_id: String,
        /// Online now?
        online: bool,
        /// When they went online, or their last heartbeat when offline (RFC 3339).
        #[schemars(extend("format" = "date-time"))]
        at: String,
    },
}

impl ServerFrame {
    /// The frame as JSON (keys sorted, as the frames have always been sent).
    pub fn to_value(&self) -> Value {
        // A tagged enum of strings, bools and payload structs always serializes.
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

/// `{"type":"pong"}`.
pub fn pong() -> Value {
    ServerFrame::Pong.to_value()
}

/// `{"type":"error","code","message"}`: the socket stays open.
pub fn error(code: &str, message: &str) -> Value {
    ServerFrame::Error {
        code: code.into(),
        message: message.into(),
    }
    .to_value()
}

/// `{"type":"typing","from"}`.
pub fn typing(from: &str) -> Value {
    ServerFrame::Typing { from: from.into() }.to_value()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn server_frames_keep_their_wire_shape() {
        assert_eq!(pong(), json!({"type": "pong"}));
        assert_eq!(
            error("bad_frame", "no"),
            json!({"type": "error", "code": "bad_frame", "message": "no"})
        );
        let presence = ServerFrame::Presence {
            user_id: "u".into(),
            online: false,
            at: "t".into(),
        };
        assert_eq!(
            presence.to_value(),
            json!({"type": "presence", "userId": "u", "online": false, "at": "t"})
        );
    }
}
