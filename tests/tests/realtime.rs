//! Realtime push through the local WebSocket API, with a real WebSocket client.

use std::time::Duration;

use devconnect_tests::{social::User, Stack};
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::{
    connect_async,
    tungstenite::{client::IntoClientRequest, Message},
    MaybeTlsStream, WebSocketStream,
};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

async fn open(stack: &Stack, user: &User) -> Socket {
    let (socket, _) = connect_async(format!("{}?token={}", stack.ws_url(), user.client.token()))
        .await
        .expect("socket refused");
    socket
}

/// The next frame of `kind` within `within`, skipping frames of other kinds.
async fn frame_of(socket: &mut Socket, kind: &str, within: Duration) -> Option<Value> {
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

async fn send(socket: &mut Socket, text: &str) {
    socket.send(Message::Text(text.into())).await.expect("send");
}

#[tokio::test]
async fn a_message_reaches_every_socket_of_the_receiver_within_a_second_and_no_stranger() {
    let stack = Stack::start_full(&[]).await;
    let a = stack.user("sender").await;
    let b = stack.user("receiver").await;
    let stranger = stack.user("stranger").await;
    stack.connect(&a, &b).await;
    let (mut b1, mut b2, mut s) = (
        open(&stack, &b).await,
        open(&stack, &b).await,
        open(&stack, &stranger).await,
    );

    assert_eq!(a.message(&b.id, "live hello").await.status, 201);
    for socket in [&mut b1, &mut b2] {
        let frame = frame_of(socket, "message", Duration::from_secs(1))
            .await
            .expect("no message frame within 1 s");
        assert_eq!(frame["message"]["text"], "live hello");
        assert_eq!(frame["message"]["fromUserId"], a.id.as_str());
    }
    assert!(
        frame_of(&mut s, "message", Duration::from_millis(500)).await.is_none(),
        "a stranger got the message"
    );
}

#[tokio::test]
async fn requests_and_acceptances_arrive_as_notifications_on_the_right_sockets() {
    let stack = Stack::start_full(&[]).await;
    let a = stack.user("asker").await;
    let b = stack.user("askee").await;
    let (mut sa, mut sb) = (open(&stack, &a).await, open(&stack, &b).await);
    let id = a.send_request("interested", &b.id).await.body["request"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let n = loop {
        let n = frame_of(&mut sb, "notification", Duration::from_secs(2))
            .await
            .expect("no notification");
        if n["notification"]["type"] == "connection_request" {
            break n;
        }
    };
    assert_eq!(n["notification"]["actorId"], a.id.as_str());
    b.client
        .post(&format!("/requests/review/accepted/{id}"), json!({}))
        .await;
    let n = loop {
        let n = frame_of(&mut sa, "notification", Duration::from_secs(2))
            .await
            .expect("no notification");
        if n["notification"]["type"] == "connection_accepted" {
            break n;
        }
    };
    assert_eq!(n["notification"]["actorId"], b.id.as_str());
}

#[tokio::test]
async fn connections_see_each_other_come_online_and_go_offline_with_the_last_socket() {
    let stack = Stack::start_full(&[]).await;
    let a = stack.user("watcher").await;
    let b = stack.user("comer").await;
    stack.connect(&a, &b).await;
    let mut sa = open(&stack, &a).await;
    let mut b1 = open(&stack, &b).await;
    let online = frame_of(&mut sa, "presence", Duration::from_secs(2))
        .await
        .expect("no presence frame");
    assert_eq!(
        (online["userId"].as_str(), online["online"].as_bool()),
        (Some(b.id.as_str()), Some(true))
    );
    let presence = b.client.get(&format!("/presence?userIds={}", b.id)).await;
    assert_eq!(presence.body["presence"][0]["online"], true);

    let b2 = open(&stack, &b).await;
    b1.close(None).await.unwrap();
    assert!(
        frame_of(&mut sa, "presence", Duration::from_millis(600))
            .await
            .is_none(),
        "offline while a socket is still open"
    );
    drop(b2);
    let offline = frame_of(&mut sa, "presence", Duration::from_secs(2))
        .await
        .expect("no offline frame");
    assert_eq!(
        (offline["userId"].as_str(), offline["online"].as_bool()),
        (Some(b.id.as_str()), Some(false))
    );
}

#[tokio::test]
async fn bad_expired_and_missing_tokens_are_refused() {
    let stack = Stack::start_with(&[("SESSION_TTL_SECS", "1")]).await;
    let u = stack.user("late").await;
    let refused = |url: String| async move {
        match connect_async(url).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => response.status().as_u16(),
            Err(e) => panic!("unexpected error {e}"),
            Ok(_) => 101,
        }
    };
    assert_eq!(refused(stack.ws_url()).await, 401);
    assert_eq!(refused(format!("{}?token=garbage", stack.ws_url())).await, 401);
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    assert_eq!(
        refused(format!("{}?token={}", stack.ws_url(), u.client.token())).await,
        401
    );
}

#[tokio::test]
async fn a_browser_can_pass_the_token_as_a_subprotocol() {
    let stack = Stack::start().await;
    let u = stack.user("browser").await;
    let mut request = stack.ws_url().into_client_request().unwrap();
    request.headers_mut().insert(
        "sec-websocket-protocol",
        format!("devconnect, {}", u.client.token()).parse().unwrap(),
    );
    let (mut socket, response) = connect_async(request).await.expect("refused");
    assert_eq!(response.headers().get("sec-websocket-protocol").unwrap(), "devconnect");
    send(&mut socket, r#"{"action":"ping"}"#).await;
    assert!(frame_of(&mut socket, "pong", Duration::from_secs(1)).await.is_some());
}

#[tokio::test]
async fn malformed_frames_and_unknown_actions_get_an_error_frame_and_the_socket_stays_usable() {
    let stack = Stack::start().await;
    let u = stack.user("clumsy").await;
    let mut socket = open(&stack, &u).await;
    for (frame, code) in [
        ("not json", "bad_frame"),
        (r#"{"to":"x"}"#, "bad_frame"),
        (r#"{"action":"dance"}"#, "unknown_action"),
    ] {
        send(&mut socket, frame).await;
        let error = frame_of(&mut socket, "error", Duration::from_secs(1))
            .await
            .expect("no error frame");
        assert_eq!(error["code"], code, "{frame}");
    }
    send(&mut socket, r#"{"action":"ping"}"#).await;
    assert!(
        frame_of(&mut socket, "pong", Duration::from_secs(1)).await.is_some(),
        "socket unusable after errors"
    );
}

#[tokio::test]
async fn typing_is_relayed_to_connections_only() {
    let stack = Stack::start().await;
    let a = stack.user("typist").await;
    let b = stack.user("reader").await;
    let stranger = stack.user("nobody").await;
    stack.connect(&a, &b).await;
    let (mut sa, mut sb) = (open(&stack, &a).await, open(&stack, &b).await);
    send(&mut sa, &json!({"action": "typing", "to": b.id}).to_string()).await;
    let typing = frame_of(&mut sb, "typing", Duration::from_secs(1))
        .await
        .expect("no typing frame");
    assert_eq!(typing["from"], a.id.as_str());
    send(&mut sa, &json!({"action": "typing", "to": stranger.id}).to_string()).await;
    assert_eq!(
        frame_of(&mut sa, "error", Duration::from_secs(1)).await.unwrap()["code"],
        "forbidden"
    );
}

#[tokio::test]
async fn a_vanished_connection_is_removed_on_410_and_the_others_still_get_the_frame() {
    let stack = Stack::start_full(&[]).await;
    let a = stack.user("poster").await;
    let b = stack.user("flaky").await;
    stack.connect(&a, &b).await;
    let mut live = open(&stack, &b).await;
    // A connection API Gateway dropped without a $disconnect.
    devconnect_realtime::connections::register(&stack.state.store, &b.id, "vanished-connection")
        .await
        .unwrap();

    a.message(&b.id, "still here?").await;
    assert!(frame_of(&mut live, "message", Duration::from_secs(1)).await.is_some());
    // The batch removes stale ids after its fan-out, which may finish just after the frame lands.
    let mut sockets: Vec<String> = Vec::new();
    for _ in 0..40 {
        sockets = redis::cmd("ZRANGE")
            .arg(devconnect::keys::sockets(&b.id))
            .arg(0)
            .arg(-1)
            .query_async(&mut stack.state.store.conn())
            .await
            .unwrap();
        if sockets.len() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(sockets.len(), 1, "{sockets:?}");
    assert!(!sockets.contains(&"vanished-connection".to_string()));
}

#[tokio::test]
async fn with_redis_down_a_connection_is_refused_with_503_not_a_crash() {
    let mut stack = Stack::start_with(&[("REDIS_TIMEOUT_MS", "300")]).await;
    let u = stack.user("unlucky").await;
    stack.redis.stop();
    let status = match connect_async(format!("{}?token={}", stack.ws_url(), u.client.token())).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => response.status().as_u16(),
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => 101,
    };
    assert_eq!(status, 503);
}
