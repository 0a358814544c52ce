//! WebSocket clients of the local gateway, as a browser would connect.

use std::time::Duration;

use futures::StreamExt;
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::{
    connect_async,
    tungstenite::{client::IntoClientRequest, handshake::client::Request, Message},
    MaybeTlsStream, WebSocketStream,
};

use crate::{social::User, Stack};

/// A client socket.
pub type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A handshake to `url` carrying `token` the browser way: as a subprotocol beside
/// `devconnect` (a token in the URL is refused).
pub fn with_token(url: &str, token: &str) -> Request {
    let mut request = url.into_client_request().expect("a ws:// url");
    request.headers_mut().insert(
        "sec-websocket-protocol",
        format!("devconnect, {token}")
            .parse()
            .expect("a token is a header value"),
    );
    request
}

/// `user`'s socket on the stack's WebSocket API.
pub async fn open(stack: &Stack, user: &User) -> Socket {
    connect_async(with_token(&stack.ws_url(), user.client.token()))
        .await
        .expect("socket refused")
        .0
}

/// The next frame of `kind` within `within`, skipping frames of other kinds.
pub async fn frame_of(socket: &mut Socket, kind: &str, within: Duration) -> Option<Value> {
    tokio::time::timeout(within, async {
        while let Some(Ok(message)) = socket.next().await {
            if let Message::Text(text) = message {
                let frame: Value = serde_json::from_str(&text).expect("frames are JSON");
                if frame["type"] == kind {
                    return Some(frame);
                }
            }
        }
        None
    })
    .await
    .ok()
    .flatten()
}

/// The first frame of each of `kinds`, in whatever order they arrive (frames fed by
/// different topics have no order between them), or the kinds still missing at `within`.
pub async fn first_frames_of(
    socket: &mut Socket,
    kinds: &[&str],
    within: Duration,
) -> Result<std::collections::BTreeMap<String, Value>, Vec<String>> {
    let mut found = std::collections::BTreeMap::new();
    let _ = tokio::time::timeout(within, async {
        while let Some(Ok(message)) = socket.next().await {
            if let Message::Text(text) = message {
                let frame: Value = serde_json::from_str(&text).expect("frames are JSON");
                let kind = frame["type"].as_str().unwrap_or_default().to_string();
                if kinds.contains(&kind.as_str()) {
                    found.entry(kind).or_insert(frame);
                }
                if found.len() == kinds.len() {
                    return;
                }
            }
        }
    })
    .await;
    let missing: Vec<String> = kinds
        .iter()
        .filter(|k| !found.contains_key(**k))
        .map(|k| k.to_string())
        .collect();
    if missing.is_empty() {
        Ok(found)
    } else {
        Err(missing)
    }
}
