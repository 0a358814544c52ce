//! Realtime (issue 12, items 1, 3, 8): sessions end on every socket, tickets instead of
//! tokens in URLs, and bounded sockets, frames and fan-out. Real WebSocket clients
//! against the local stack.

use std::time::Duration;

use devconnect_tests::{
    social::User,
    socket::{self, frame_of, open, Socket},
    Stack,
};
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::{
    connect_async,
    tungstenite::{client::IntoClientRequest, handshake::client::Request, Message},
};

fn with_token(stack: &Stack, token: &str) -> Request {
    socket::with_token(&stack.ws_url(), token)
}

/// The HTTP status of a refused handshake (101 if it was accepted).
async fn status_of(request: Request) -> u16 {
    match connect_async(request).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => response.status().as_u16(),
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => 101,
    }
}

/// A ticket from POST /realtime/ticket.
async fn ticket(user: &User) -> String {
    let reply = user.client.post("/realtime/ticket", json!({})).await;
    assert_eq!(reply.status, 201, "{:?}", reply.body);
    reply.body["ticket"].as_str().expect("a ticket").to_string()
}

fn with_ticket(stack: &Stack, ticket: &str) -> Request {
    format!("{}?ticket={ticket}", stack.ws_url())
        .into_client_request()
        .expect("a ws:// url")
}

/// Reads `socket` until it closes or `within` passes: whether it closed, and the text
/// frames it got meanwhile.
async fn until_closed(socket: &mut Socket, within: Duration) -> (bool, Vec<Value>) {
    let mut frames = Vec::new();
    let closed = tokio::time::timeout(within, async {
        loop {
            match socket.next().await {
                Some(Ok(Message::Text(text))) => {
                    frames.push(serde_json::from_str(&text).expect("frames are JSON"));
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            }
        }
    })
    .await
    .is_ok();
    (closed, frames)
}

fn messages(frames: &[Value]) -> usize {
    frames.iter().filter(|f| f["type"] == "message").count()
}

#[tokio::test]
async fn after_logout_every_socket_of_the_session_is_closed_and_receives_nothing() {
    let stack = Stack::start_full(&[]).await;
    let a = stack.user("talker").await;
    let b = stack.user("leaver").await;
    stack.connect(&a, &b).await;
    let (mut first, mut second) = (open(&stack, &b).await, open(&stack, &b).await);
    assert_eq!(b.client.post("/auth/logout", json!({})).await.status, 204);
    // The auth side's USER_LOGOUT names the session; the pusher closes its sockets.
    let (closed, frames) = until_closed(&mut second, Duration::from_secs(5)).await;
    assert!(closed, "the second socket of the logged-out session is still open");
    assert_eq!(messages(&frames), 0);
    a.message(&b.id, "are you there?").await;
    let (closed, frames) = until_closed(&mut first, Duration::from_secs(3)).await;
    assert!(closed, "the first socket of the logged-out session is still open");
    assert_eq!(messages(&frames), 0, "a logged-out socket got a message");
}

#[tokio::test]
async fn a_socket_whose_session_is_gone_gets_no_frame_and_is_closed() {
    let stack = Stack::start_full(&[]).await;
    let a = stack.user("writer").await;
    let b = stack.user("expired").await;
    stack.connect(&a, &b).await;
    let mut socket = open(&stack, &b).await;
    // As if the session expired: its key is gone, and no USER_LOGOUT was produced.
    let opener = devconnect_realtime::connections::Opener::of_token(b.client.token()).expect("a token");
    let _: i64 = redis::cmd("DEL")
        .arg(devconnect::keys::session(&b.id, &opener.session_id))
        .query_async(&mut stack.state.store.conn())
        .await
        .expect("redis");
    assert_eq!(a.message(&b.id, "hello?").await.status, 201);
    let (closed, frames) = until_closed(&mut socket, Duration::from_secs(5)).await;
    assert_eq!(messages(&frames), 0, "a socket without a session got a message");
    assert!(closed, "the socket without a session was not closed");
}

#[tokio::test]
async fn a_ticket_works_once_expires_and_a_token_in_the_url_is_refused() {
    let stack = Stack::start().await;
    let u = stack.user("ticketed").await;

    let once = ticket(&u).await;
    let (mut socket, _) = connect_async(with_ticket(&stack, &once))
        .await
        .expect("a fresh ticket is accepted");
    socket
        .send(Message::Text(r#"{"action":"ping"}"#.into()))
        .await
        .expect("send");
    assert!(frame_of(&mut socket, "pong", Duration::from_secs(1)).await.is_some());
    assert_eq!(status_of(with_ticket(&stack, &once)).await, 401, "a ticket works twice");

    let lapsed = ticket(&u).await;
    let _: i64 = redis::cmd("PEXPIRE")
        .arg(devconnect_realtime::ticket_key(&lapsed))
        .arg(1)
        .query_async(&mut stack.state.store.conn())
        .await
        .expect("redis");
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        status_of(with_ticket(&stack, &lapsed)).await,
        401,
        "an expired ticket works"
    );
    assert_eq!(status_of(with_ticket(&stack, "made-up")).await, 401);

    let url_token = format!("{}?token={}", stack.ws_url(), u.client.token());
    assert_eq!(status_of(url_token.into_client_request().unwrap()).await, 401);

    let (_, response) = connect_async(with_token(&stack, u.client.token()))
        .await
        .expect("subprotocol refused");
    assert_eq!(
        response
            .headers()
            .get("sec-websocket-protocol")
            .map(|v| v.to_str().unwrap()),
        Some("devconnect"),
        "only devconnect is answered, never the token"
    );
}

#[tokio::test]
async fn the_eleventh_socket_closes_the_first() {
    let stack = Stack::start().await;
    let u = stack.user("hoarder").await;
    let mut sockets = Vec::new();
    for _ in 0..10 {
        sockets.push(open(&stack, &u).await);
    }
    let mut eleventh = open(&stack, &u).await;
    let (closed, _) = until_closed(&mut sockets[0], Duration::from_secs(3)).await;
    assert!(closed, "the oldest socket is still open past the cap");
    for socket in [&mut sockets[1], &mut eleventh] {
        socket
            .send(Message::Text(r#"{"action":"ping"}"#.into()))
            .await
            .expect("send");
        assert!(frame_of(socket, "pong", Duration::from_secs(1)).await.is_some());
    }
    let open_now: i64 = redis::cmd("ZCARD")
        .arg(devconnect::keys::sockets(&u.id))
        .query_async(&mut stack.state.store.conn())
        .await
        .expect("redis");
    assert_eq!(open_now, 10);
}

#[tokio::test]
async fn a_flood_of_pings_is_rate_limited() {
    let stack = Stack::start_with(&[("RATE_LIMIT_FREE", "20")]).await;
    let u = stack.user("flooder").await;
    let mut socket = open(&stack, &u).await;
    for _ in 0..30 {
        socket
            .send(Message::Text(r#"{"action":"ping"}"#.into()))
            .await
            .expect("send");
    }
    let mut codes = Vec::new();
    while let Some(frame) = tokio::time::timeout(Duration::from_secs(2), socket.next())
        .await
        .ok()
        .flatten()
    {
        if let Ok(Message::Text(text)) = frame {
            let frame: Value = serde_json::from_str(&text).expect("JSON");
            codes.push(
                frame["code"]
                    .as_str()
                    .unwrap_or(frame["type"].as_str().unwrap_or(""))
                    .to_string(),
            );
        }
        if codes.len() == 30 {
            break;
        }
    }
    let limited = codes.iter().filter(|c| *c == "rate_limited").count();
    let pongs = codes.iter().filter(|c| *c == "pong").count();
    assert!(limited >= 10, "only {limited} of 30 pings were limited: {codes:?}");
    assert!(pongs <= 20 && pongs > 0, "{pongs} pongs");
}

#[tokio::test]
async fn fan_out_per_batch_is_bounded() {
    let stack = Stack::start_full(&[("PUSH_MAX_CONNECTIONS_PER_BATCH", "1")]).await;
    let a = stack.user("broadcaster").await;
    let b = stack.user("multi").await;
    stack.connect(&a, &b).await;
    let (mut s1, mut s2) = (open(&stack, &b).await, open(&stack, &b).await);
    assert_eq!(a.message(&b.id, "one batch, one socket").await.status, 201);
    let (got1, got2) = tokio::join!(
        frame_of(&mut s1, "message", Duration::from_secs(2)),
        frame_of(&mut s2, "message", Duration::from_secs(2))
    );
    assert_eq!(
        usize::from(got1.is_some()) + usize::from(got2.is_some()),
        1,
        "a one-connection bound let the frame reach {} sockets",
        usize::from(got1.is_some()) + usize::from(got2.is_some())
    );
}

#[tokio::test]
async fn a_socket_whose_session_went_idle_gets_no_frame_and_is_closed() {
    // 3 s, with a's requests 0.5 s apart: room for a slow CI machine to keep a's
    // session alive while b's idles out.
    let stack = Stack::start_full(&[("SESSION_IDLE_TIMEOUT_SECS", "3")]).await;
    let a = stack.user("chatty").await;
    let b = stack.user("idle").await;
    stack.connect(&a, &b).await;
    let mut socket = open(&stack, &b).await;
    // b makes no request for longer than the idle timeout; the session key is still
    // there (nothing has touched it), but the session is over.
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        // a stays active, so only b's session idles out.
        assert_eq!(a.client.get("/profile").await.status, 200);
    }
    assert_eq!(a.message(&b.id, "still awake?").await.status, 201);
    let (closed, frames) = until_closed(&mut socket, Duration::from_secs(5)).await;
    assert_eq!(messages(&frames), 0, "a socket of an idle session got a message");
    assert!(closed, "the socket of an idle session was not closed");
}
