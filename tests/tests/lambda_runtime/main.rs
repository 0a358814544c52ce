//! Real bootstraps (auth, the presence sweep, the WebSocket routes, the channels router, the
//! notifications and analytics consumers, the realtime pusher) under a Lambda Runtime API
//! emulator,
//! against a real redis-server and tansu: what Lambda (and Lambda Managed Instances, where
//! one execution environment serves `AWS_LAMBDA_MAX_CONCURRENCY` invocations at once) sees.

use std::time::Duration;

use devconnect::{
    events::{Envelope, EventType},
    keys,
};
use devconnect_tests::{
    kafka::{batch, bytes, envelope},
    runtime_api::{http_event, Outcome, RuntimeApi},
    servers::{Broker, RedisServer},
    socket::{frame_of, open},
    stack::TOPICS,
    Stack,
};
use futures::future::join_all;
use serde_json::{json, Value};
use tokio::process::Child;

const BOOTSTRAP: &str = env!("CARGO_BIN_EXE_auth-bootstrap");
const PRESENCE_SWEEP: &str = env!("CARGO_BIN_EXE_presence-sweep-bootstrap");
const CHANNELS_ROUTER: &str = env!("CARGO_BIN_EXE_channels-router-bootstrap");
const REALTIME: &str = env!("CARGO_BIN_EXE_realtime-bootstrap");
const NOTIFICATIONS_CONSUMER: &str = env!("CARGO_BIN_EXE_notifications-consumer-bootstrap");
const ANALYTICS_CONSUMER: &str = env!("CARGO_BIN_EXE_analytics-consumer-bootstrap");
const REALTIME_PUSHER: &str = env!("CARGO_BIN_EXE_realtime-pusher-bootstrap");

/// How long a debug-build bootstrap may take to start polling.
const INIT_TIMEOUT: Duration = Duration::from_secs(20);

struct Environment {
    api: RuntimeApi,
    _bootstrap: Child,
    redis: RedisServer,
    broker: Broker,
}

/// One execution environment of the auth function: its own Redis and broker, explicit endpoints.
async fn environment(max_concurrency: Option<&str>) -> Environment {
    environment_of(BOOTSTRAP, "auth", max_concurrency, &[]).await
}

async fn environment_of(
    binary: &str,
    function: &str,
    max_concurrency: Option<&str>,
    extra: &[(&'static str, &'static str)],
) -> Environment {
    let redis = RedisServer::start().await.expect("redis-server");
    let broker = Broker::start(&TOPICS).await.expect("tansu");
    let api = RuntimeApi::start().await.expect("runtime API emulator");
    let (redis_url, brokers) = (redis.url(), broker.address());
    let mut vars = vec![
        ("REDIS_URL", redis_url.as_str()),
        ("KAFKA_BROKERS", brokers.as_str()),
        ("RATE_LIMIT_ANONYMOUS", "100000"),
        ("RATE_LIMIT_FREE", "100000"),
    ];
    if let Some(n) = max_concurrency {
        vars.push(("AWS_LAMBDA_MAX_CONCURRENCY", n));
    }
    vars.extend_from_slice(extra);
    let bootstrap = api.spawn(binary, function, &vars).expect("bootstrap");
    Environment {
        api,
        _bootstrap: bootstrap,
        redis,
        broker,
    }
}

/// Two users of the tests that write Redis or events directly.
const USER_A: &str = "0190c3a4-0000-7000-8000-00000000000a";
const USER_B: &str = "0190c3a4-0000-7000-8000-00000000000b";

/// A MESSAGE_SENT from [`USER_A`] to [`USER_B`].
fn message_from_a_to_b() -> Envelope {
    envelope(
        EventType::MessageSent,
        USER_A,
        json!({"id": "1-0", "fromUserId": USER_A, "toUserId": USER_B, "text": "hi", "sentAt": "2026-01-01T00:00:00.000Z"}),
    )
}

/// Once the consumer bootstrap polls, delivers `record` on `topic` to it twice (a
/// redelivery, as after a timeout); each time the whole batch must succeed.
async fn deliver_twice(env: &Environment, topic: &str, record: &Envelope) {
    env.api.polls(1, INIT_TIMEOUT).await.expect("first poll");
    let event = serde_json::to_value(batch(topic, &[bytes(record)])).expect("event JSON");
    for delivery in ["first", "redelivered"] {
        let outcome = env.api.invoke(&event).await.expect("invocation answered");
        assert_eq!(
            outcome
                .json()
                .expect("a partial batch response, not an invocation error"),
            json!({"batchItemFailures": []}),
            "{delivery}"
        );
    }
}

/// A connection to the environment's Redis, to look at what the bootstrap wrote.
async fn redis_of(env: &Environment) -> redis::aio::MultiplexedConnection {
    redis::Client::open(env.redis.url())
        .expect("redis url")
        .get_multiplexed_async_connection()
        .await
        .expect("redis")
}

/// The API Gateway response of one invocation: status and JSON body.
fn http_answer(outcome: Outcome) -> (u16, Value) {
    let response = outcome.json().expect("a response, not an invocation error");
    let status = response["statusCode"].as_u64().expect("statusCode") as u16;
    let body = response["body"]
        .as_str()
        .map(|b| serde_json::from_str(b).unwrap_or(Value::Null));
    (status, body.unwrap_or(Value::Null))
}

async fn call(api: &RuntimeApi, method: &str, path: &str, token: Option<&str>, body: Option<Value>) -> (u16, Value) {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("content-type", "application/json")];
    if let Some(auth) = auth.as_deref() {
        headers.push(("authorization", auth));
    }
    let body = body.map(|b| b.to_string());
    let event = http_event(method, path, &headers, body.as_deref());
    http_answer(api.invoke(&event).await.expect("invocation answered"))
}

#[tokio::test]
async fn with_max_concurrency_one_bootstrap_serves_many_invocations_at_once_each_with_its_own_answer() {
    let env = environment(Some("8")).await;
    // Eight workers, each long-polling `next` before any event exists.
    env.api.polls(8, INIT_TIMEOUT).await.expect("eight concurrent polls");

    let people: Vec<String> = (0..16).map(|i| format!("person{i}@example.com")).collect();
    let signups = join_all(people.iter().map(|email| {
        call(
            &env.api,
            "POST",
            "/auth/signup",
            None,
            Some(json!({"email": email, "password": "correct horse battery", "firstName": "P", "lastName": email})),
        )
    }))
    .await;
    let mut tokens = Vec::new();
    for (email, (status, body)) in people.iter().zip(&signups) {
        assert_eq!(*status, 201, "{email}: {body}");
        assert_eq!(
            body["user"]["email"],
            email.as_str(),
            "an answer went to the wrong invocation"
        );
        tokens.push(body["token"].as_str().expect("token").to_string());
    }

    // Every concurrent profile read is answered with its caller's own profile.
    let profiles = join_all(tokens.iter().map(|t| call(&env.api, "GET", "/profile", Some(t), None))).await;
    for (email, (status, body)) in people.iter().zip(&profiles) {
        assert_eq!(*status, 200, "{email}: {body}");
        assert_eq!(body["lastName"], email.as_str(), "a profile went to the wrong caller");
    }

    // A bad request in the middle of good ones is its own 4xx, and does not disturb them.
    let (status, body) = call(&env.api, "POST", "/auth/signup", None, Some(json!({"email": "nope"}))).await;
    assert_eq!(status, 400, "{body}");
    let (status, _) = call(&env.api, "GET", "/profile", Some(&tokens[3]), None).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn without_max_concurrency_the_bootstrap_takes_one_invocation_at_a_time() {
    let env = environment(None).await;
    env.api.polls(1, INIT_TIMEOUT).await.expect("first poll");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(env.api.poll_count(), 1, "classic Lambda: a single `next` poll");

    let (status, body) = call(&env.api, "GET", "/profile", None, None).await;
    assert_eq!(status, 401, "{body}");
    env.api
        .polls(2, INIT_TIMEOUT)
        .await
        .expect("the next poll after the answer");
    assert_eq!(env.api.poll_count(), 2);
}

#[tokio::test]
async fn the_presence_sweep_bootstrap_marks_a_lapsed_user_offline_once_and_answers_how_many() {
    const A: &str = USER_A;
    let env = environment_of(PRESENCE_SWEEP, "presence-sweep", None, &[]).await;
    env.api.polls(1, INIT_TIMEOUT).await.expect("first poll");
    let mut redis = redis_of(&env).await;
    // A is online with a last heartbeat at the epoch: long past PRESENCE_TIMEOUT_SECS.
    let _: () = redis::pipe()
        .cmd("HSET")
        .arg(keys::presence(A))
        .arg(&[("online", 1), ("lastSeen", 1)])
        .ignore()
        .cmd("ZADD")
        .arg(keys::ONLINE)
        .arg(1)
        .arg(A)
        .ignore()
        .query_async(&mut redis)
        .await
        .expect("A online");

    // What an EventBridge schedule sends.
    let scheduled = json!({"source": "aws.events", "detail-type": "Scheduled Event", "detail": {}});
    let first = env.api.invoke(&scheduled).await.expect("invocation answered");
    assert_eq!(
        first.json().expect("an answer, not an error"),
        json!({"markedOffline": 1})
    );
    let online: Option<f64> = redis::cmd("ZSCORE")
        .arg(keys::ONLINE)
        .arg(A)
        .query_async(&mut redis)
        .await
        .expect("ZSCORE");
    assert_eq!(online, None, "A is out of the online index");
    let flag: Option<String> = redis::cmd("HGET")
        .arg(keys::presence(A))
        .arg("online")
        .query_async(&mut redis)
        .await
        .expect("HGET");
    assert_eq!(flag.as_deref(), Some("0"), "A is offline");

    let second = env.api.invoke(&scheduled).await.expect("invocation answered");
    assert_eq!(second.json().expect("an answer"), json!({"markedOffline": 0}));
}

#[tokio::test]
async fn the_channels_router_bootstrap_dead_letters_a_poison_record_and_reports_no_failed_records() {
    let env = environment_of(
        CHANNELS_ROUTER,
        "channels-router",
        None,
        // Required in AWS (the router signs unsubscribe links).
        &[("UNSUBSCRIBE_SECRET", "a-test-secret-of-at-least-32-bytes!")],
    )
    .await;
    env.api.polls(1, INIT_TIMEOUT).await.expect("first poll");
    let event = serde_json::to_value(batch("notification-events", &[b"{not json".to_vec()])).expect("event JSON");

    let outcome = env.api.invoke(&event).await.expect("invocation answered");
    let response = outcome
        .json()
        .expect("a partial batch response, not an invocation error");
    assert_eq!(
        response,
        json!({"batchItemFailures": []}),
        "a poison record is not retried"
    );

    let dead = env.broker.dead_letters().await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert!(
        dead[0]["reason"].as_str().unwrap_or_default().contains("not JSON"),
        "{dead:?}"
    );
    assert_eq!(dead[0]["topic"], "notification-events");
}

#[tokio::test]
async fn the_notifications_consumer_bootstrap_notifies_an_offline_receiver_once_across_a_redelivery() {
    let env = environment_of(NOTIFICATIONS_CONSUMER, "notifications-consumer", None, &[]).await;
    let message = message_from_a_to_b();
    deliver_twice(&env, "message-events", &message).await;

    let mut redis = redis_of(&env).await;
    let listed: Vec<String> = redis::cmd("LRANGE")
        .arg(keys::notifications(USER_B))
        .arg(0)
        .arg(-1)
        .query_async(&mut redis)
        .await
        .expect("LRANGE");
    assert_eq!(listed.len(), 1, "one notification for B: {listed:?}");
    let created: Vec<Value> = env
        .broker
        .events("notification-events")
        .await
        .into_iter()
        .filter(|e| e.envelope.event_type == EventType::NotificationCreated)
        .map(|e| e.raw)
        .collect();
    assert_eq!(created.len(), 1, "one NOTIFICATION_CREATED: {created:?}");
    assert_eq!(created[0]["data"]["recipientId"], USER_B);
}

/// An API Gateway WebSocket event of `route` on connection `c-1`.
fn websocket_event(route: &str, body: Option<&str>) -> Value {
    json!({
        "requestContext": {
            "routeKey": route,
            "connectionId": "c-1",
            "requestId": "r-1",
            "eventType": if route == "$connect" { "CONNECT" } else { "MESSAGE" },
            "apiId": "local",
            "stage": "local",
            "domainName": "127.0.0.1",
            "connectedAt": 1_764_000_000_000_i64,
            "requestTimeEpoch": 1_764_000_000_000_i64,
            "messageDirection": "IN",
            "identity": {"sourceIp": "127.0.0.1"},
        },
        "headers": {},
        "multiValueHeaders": {},
        "isBase64Encoded": false,
        "body": body,
    })
}

#[tokio::test]
async fn the_realtime_bootstrap_refuses_a_connect_without_a_session_and_tells_an_unknown_socket_to_reconnect() {
    let env = environment_of(
        REALTIME,
        "realtime",
        None,
        // Required in AWS (where pushes go); neither invocation here pushes.
        &[("WEBSOCKET_ENDPOINT", "http://127.0.0.1:9")],
    )
    .await;
    env.api.polls(1, INIT_TIMEOUT).await.expect("first poll");

    let connect = env
        .api
        .invoke(&websocket_event("$connect", None))
        .await
        .expect("invocation answered");
    let connect = connect.json().expect("a response, not an invocation error");
    assert_eq!(connect["statusCode"], 401, "{connect}");

    let frame = env
        .api
        .invoke(&websocket_event("$default", Some(r#"{"action":"ping"}"#)))
        .await
        .expect("invocation answered");
    let frame = frame.json().expect("a response, not an invocation error");
    assert_eq!(frame["statusCode"], 200, "{frame}");
    let body: Value = serde_json::from_str(frame["body"].as_str().expect("a frame back")).expect("JSON frame");
    assert_eq!(
        (body["type"].as_str(), body["code"].as_str()),
        (Some("error"), Some("unknown_connection")),
        "{body}"
    );
}

#[tokio::test]
async fn the_analytics_consumer_bootstrap_counts_a_message_once_across_a_redelivery() {
    let env = environment_of(ANALYTICS_CONSUMER, "analytics-consumer", None, &[]).await;
    let message = message_from_a_to_b();
    deliver_twice(&env, "message-events", &message).await;

    // Counted on the envelope's day.
    let day = message.timestamp.format("%Y-%m-%d").to_string();
    let mut redis = redis_of(&env).await;
    let counted: Option<i64> = redis::cmd("HGET")
        .arg(keys::analytics_day(&day[..7], &day))
        .arg("MESSAGE_SENT")
        .query_async(&mut redis)
        .await
        .expect("HGET");
    assert_eq!(counted, Some(1), "one message counted once");
}

#[tokio::test]
async fn the_realtime_pusher_bootstrap_posts_a_message_to_the_receivers_socket_through_the_connections_api() {
    // The local gateway serves the socket and the @connections endpoint; no emulated
    // triggers run (`start`, not `start_full`), so only the bootstrap can push.
    let stack = Stack::start().await;
    let (a, b) = (stack.user("sender").await, stack.user("receiver").await);
    let mut socket = open(&stack, &b).await;
    let api = RuntimeApi::start().await.expect("runtime API emulator");
    let (redis_url, brokers) = (stack.redis.url(), stack.broker.address());
    let _bootstrap = api
        .spawn(
            REALTIME_PUSHER,
            "realtime-pusher",
            &[
                ("REDIS_URL", redis_url.as_str()),
                ("KAFKA_BROKERS", brokers.as_str()),
                ("WEBSOCKET_ENDPOINT", stack.base_url.as_str()),
            ],
        )
        .expect("bootstrap");
    api.polls(1, INIT_TIMEOUT).await.expect("first poll");

    let message = envelope(
        EventType::MessageSent,
        &a.id,
        json!({"id": "1-0", "fromUserId": a.id, "toUserId": b.id, "text": "through the bootstrap", "sentAt": "2026-01-01T00:00:00.000Z"}),
    );
    let event = serde_json::to_value(batch("message-events", &[bytes(&message)])).expect("event JSON");
    let outcome = api.invoke(&event).await.expect("invocation answered");
    assert_eq!(
        outcome
            .json()
            .expect("a partial batch response, not an invocation error"),
        json!({"batchItemFailures": []})
    );
    let frame = frame_of(&mut socket, "message", Duration::from_secs(2))
        .await
        .expect("no message frame within 2 s");
    assert_eq!(frame["message"]["text"], "through the bootstrap");
    assert_eq!(frame["message"]["fromUserId"], a.id.as_str());
}
