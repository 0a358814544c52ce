//! Realtime push through the local WebSocket API, with a real WebSocket client.

use std::time::Duration;

use devconnect::events::EventType;
use devconnect_realtime::{push_batch, pusher::Pusher, Realtime};
use devconnect_tests::{
    kafka,
    socket::{frame_of, open, with_token, Socket},
    Stack,
};
use futures::SinkExt;
use serde_json::{json, Value};
use tokio_tungstenite::{
    connect_async,
    tungstenite::{client::IntoClientRequest, Message},
};

/// Records a connection of `token`'s session as `$connect` would, without a socket
/// behind it (a connection API Gateway dropped, or one a test drives directly).
async fn register_socket(stack: &Stack, token: &str, connection_id: &str) {
    let opener = devconnect_realtime::connections::Opener::of_token(token).expect("a session token");
    devconnect_realtime::connections::register(
        &stack.state.store,
        &opener,
        connection_id,
        10,
        stack.state.config.session_idle_timeout,
    )
    .await
    .expect("redis")
    .expect("the session exists");
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
    let refused = |request: tokio_tungstenite::tungstenite::handshake::client::Request| async move {
        match connect_async(request).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => response.status().as_u16(),
            Err(e) => panic!("unexpected error {e}"),
            Ok(_) => 101,
        }
    };
    assert_eq!(refused(stack.ws_url().into_client_request().unwrap()).await, 401);
    assert_eq!(refused(with_token(&stack.ws_url(), "garbage")).await, 401);
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    assert_eq!(refused(with_token(&stack.ws_url(), u.client.token())).await, 401);
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
    register_socket(&stack, b.client.token(), "vanished-connection").await;

    a.message(&b.id, "still here?").await;
    assert!(frame_of(&mut live, "message", Duration::from_secs(1)).await.is_some());
    // The batch removes stale ids after its fan-out, which may finish just after the frame lands.
    let mut sockets: Vec<String> = Vec::new();
    for _ in 0..40 {
        sockets = sockets_of(&stack, &b.id).await;
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
    let status = match connect_async(with_token(&stack.ws_url(), u.client.token())).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => response.status().as_u16(),
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => 101,
    };
    assert_eq!(status, 503);
}

/// A `$default` event for `connection_id` carrying `body`, as API Gateway sends it.
fn default_route_event(
    connection_id: &str,
    body: &str,
) -> aws_lambda_events::event::apigw::ApiGatewayWebsocketProxyRequest {
    serde_json::from_value(json!({
        "requestContext": {
            "routeKey": "$default",
            "eventType": "MESSAGE",
            "connectionId": connection_id,
            "requestId": "test-request",
            "messageDirection": "IN",
            "connectedAt": 1_700_000_000_000_i64,
            "requestTimeEpoch": 1_700_000_000_000_i64,
            "domainName": "example.execute-api.eu-west-1.amazonaws.com",
            "stage": "prod",
            "apiId": "example",
            "identity": {"sourceIp": "127.0.0.1"},
        },
        "body": body,
        "isBase64Encoded": false,
    }))
    .expect("a WebSocket event")
}

fn body_frame(response: &aws_lambda_events::event::apigw::ApiGatewayProxyResponse) -> Option<Value> {
    match &response.body {
        Some(aws_lambda_events::encodings::Body::Text(t)) => Some(serde_json::from_str(t).expect("frames are JSON")),
        _ => None,
    }
}

/// The reply frames are the function's response body (sent back by the `$default`
/// route response), not a PostToConnection: they arrive with the `@connections`
/// endpoint unreachable, which is a VPC without NAT or an execute-api endpoint.
#[tokio::test]
async fn pong_and_error_frames_are_the_response_body_with_the_connections_endpoint_unreachable() {
    let stack = Stack::start().await;
    let u = stack.user("nat-less").await;
    let v = stack.user("friend").await;
    stack.connect(&u, &v).await;
    let rt = devconnect_realtime::Realtime {
        app: stack.state.clone(),
        // Nothing listens on port 1: every PostToConnection fails at once.
        pusher: devconnect_realtime::pusher::Pusher::local("http://127.0.0.1:1"),
    };
    register_socket(&stack, u.client.token(), "conn-nat-less").await;

    let pong = devconnect_realtime::handle(&rt, default_route_event("conn-nat-less", r#"{"action":"ping"}"#)).await;
    assert_eq!(pong.status_code, 200);
    assert_eq!(body_frame(&pong), Some(json!({"type": "pong"})));

    let error = devconnect_realtime::handle(&rt, default_route_event("conn-nat-less", "not json")).await;
    assert_eq!(error.status_code, 200, "a bad frame keeps the socket");
    let frame = body_frame(&error).expect("an error frame in the body");
    assert_eq!(
        (frame["type"].as_str(), frame["code"].as_str()),
        (Some("error"), Some("bad_frame"))
    );

    let unknown = devconnect_realtime::handle(&rt, default_route_event("conn-unknown", r#"{"action":"ping"}"#)).await;
    assert_eq!(body_frame(&unknown).unwrap()["code"], "unknown_connection");

    // Typing goes to another user's sockets: PostToConnection, so no body for the sender.
    let typing = json!({"action": "typing", "to": v.id}).to_string();
    let relayed = devconnect_realtime::handle(&rt, default_route_event("conn-nat-less", &typing)).await;
    assert_eq!(relayed.status_code, 200);
    assert_eq!(body_frame(&relayed), None);
}

/// A gateway whose `@connections` endpoint is unreachable from the functions (as in a
/// VPC without a way out), over the stack's Redis and broker.
async fn gateway_without_connections_endpoint(
    stack: &Stack,
    route_responses: Option<local_gateway::template::RouteResponses>,
) -> (String, tokio::task::JoinHandle<()>) {
    use local_gateway::{default_template_path, functions::Functions, server, template::Template};
    let mut template = Template::load(&default_template_path()).expect("template.yaml");
    if let Some(r) = route_responses {
        template.route_responses = r;
    }
    let gateway = server::Gateway::new(template, Functions::new(&stack.state, "http://127.0.0.1:1"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!(
        "ws://{}{}",
        listener.local_addr().expect("addr"),
        local_gateway::websocket::PATH
    );
    let app =
        server::router(std::sync::Arc::new(gateway)).into_make_service_with_connect_info::<std::net::SocketAddr>();
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, task)
}

#[tokio::test]
async fn the_local_gateway_sends_the_pong_through_the_route_response_without_post_to_connection() {
    let stack = Stack::start().await;
    let u = stack.user("two-way").await;
    let (url, server) = gateway_without_connections_endpoint(&stack, None).await;
    let (mut socket, _) = connect_async(with_token(&url, u.client.token()))
        .await
        .expect("socket refused");
    send(&mut socket, r#"{"action":"ping"}"#).await;
    assert!(
        frame_of(&mut socket, "pong", Duration::from_secs(1)).await.is_some(),
        "template.yaml's $default route response carries the pong"
    );
    send(&mut socket, r#"{"action":"dance"}"#).await;
    let error = frame_of(&mut socket, "error", Duration::from_secs(1))
        .await
        .expect("error frame");
    assert_eq!(error["code"], "unknown_action");
    server.abort();
}

#[tokio::test]
async fn without_a_route_response_the_local_gateway_drops_the_body_as_api_gateway_does() {
    let stack = Stack::start().await;
    let u = stack.user("one-way").await;
    let (url, server) =
        gateway_without_connections_endpoint(&stack, Some(local_gateway::template::RouteResponses::default())).await;
    let (mut socket, _) = connect_async(with_token(&url, u.client.token()))
        .await
        .expect("socket refused");
    send(&mut socket, r#"{"action":"ping"}"#).await;
    assert!(
        frame_of(&mut socket, "pong", Duration::from_millis(500))
            .await
            .is_none(),
        "a one-way route must not answer the client"
    );
    server.abort();
}

/// A MESSAGE_SENT batch for the pusher, one record per receiver.
fn messages_to(from: &str, receivers: &[&str]) -> aws_lambda_events::event::kafka::KafkaEvent {
    let values: Vec<Vec<u8>> = receivers
        .iter()
        .enumerate()
        .map(|(i, to)| {
            let data = json!({
                "id": format!("1795893758277-{i}"),
                "fromUserId": from,
                "toUserId": to,
                "text": "hi",
                "sentAt": "2026-11-28T19:22:38.277Z",
            });
            kafka::bytes(&kafka::envelope(EventType::MessageSent, from, data))
        })
        .collect();
    kafka::batch("message-events", &values)
}

#[tokio::test]
async fn the_pusher_checks_sessions_only_for_targets_with_a_socket_open() {
    let stack = Stack::start_counting(&[]).await;
    let Some(proxy) = stack.round_trip_counter() else {
        return;
    };
    let a = stack.user("pusher-a").await;
    let (b, c) = (stack.user("pusher-b").await, stack.user("pusher-c").await);
    let rt = Realtime {
        app: stack.state.clone(),
        pusher: Pusher::local(&stack.base_url),
    };

    let (outcome, trips) = proxy
        .measure(push_batch(&rt, messages_to(&a.id, &[&b.id, &c.id])))
        .await;
    assert_eq!(outcome.report.applied, 0, "{outcome:?}");
    assert_eq!(trips, 1, "nobody has a socket open: one count per target, no script");

    // A connection API Gateway dropped (the local gateway answers 410 for it): found live,
    // pushed to, and forgotten.
    register_socket(&stack, b.client.token(), "dropped-connection").await;
    // Warm: the first run of the session check loads the script (NOSCRIPT, then a resend).
    push_batch(&rt, messages_to(&a.id, &[&c.id, &b.id])).await;
    register_socket(&stack, b.client.token(), "dropped-connection").await;
    let (outcome, trips) = proxy
        .measure(push_batch(&rt, messages_to(&a.id, &[&c.id, &b.id])))
        .await;
    assert_eq!(outcome.response.batch_item_failures.len(), 0, "{outcome:?}");
    assert_eq!(
        trips, 3,
        "the counts, the session check of the one with a socket open, the removal of the gone connection"
    );
    let left = sockets_of(&stack, &b.id).await;
    assert!(
        left.is_empty(),
        "the gone connection was pushed to and removed: {left:?}"
    );
}

/// The connection ids of `user`'s open sockets, as the realtime functions index them.
async fn sockets_of(stack: &Stack, user: &str) -> Vec<String> {
    redis::cmd("ZRANGE")
        .arg(devconnect::keys::sockets(user))
        .arg(0)
        .arg(-1)
        .query_async(&mut stack.state.store.conn())
        .await
        .unwrap()
}

#[tokio::test]
async fn the_connections_api_refuses_an_unsigned_call_and_the_socket_receives_nothing() {
    let stack = Stack::start().await;
    let b = stack.user("receiver").await;
    let mut socket = open(&stack, &b).await;
    let ids: Vec<String> = redis::cmd("ZRANGE")
        .arg(devconnect::keys::sockets(&b.id))
        .arg(0)
        .arg(-1)
        .query_async(&mut stack.state.store.conn())
        .await
        .expect("ZRANGE");
    let id = ids.first().expect("the open socket is registered");

    // The id is base64 (it may hold a '/'): one path segment, percent-encoded as the SDK does.
    let mut url = reqwest::Url::parse(&stack.base_url).expect("the gateway's URL");
    url.path_segments_mut()
        .expect("a base URL")
        .pop_if_empty()
        .extend(["@connections", id]);
    let forged = reqwest::Client::new()
        .post(url)
        .body(r#"{"type":"message","message":{"text":"forged"}}"#)
        .send()
        .await
        .expect("the gateway answers");
    assert_eq!(forged.status(), 403);
    assert_eq!(
        forged.headers()["x-amzn-errortype"],
        "MissingAuthenticationTokenException"
    );
    assert!(
        frame_of(&mut socket, "message", Duration::from_millis(500))
            .await
            .is_none(),
        "an unsigned call reached the socket"
    );
}
