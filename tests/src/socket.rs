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
