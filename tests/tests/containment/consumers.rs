//! A record that fails stays a problem of that record: a key of the wrong type under
//! one user dead-letters that user's record with the Redis error as its reason, writes
//! nothing of it (no dedupe marker without its effect), and every other record of the
//! batch and of the partition is applied once. Redis outages hand the batch back from
//! the first failed record, and the retried record is applied exactly once.

use std::time::Duration;

use base64::{engine::general_purpose::STANDARD, Engine};
use devconnect::{events::EventType, keys};
use devconnect_tests::{
    kafka::{batch, batch_on, bytes, envelope},
    Stack,
};
use serde_json::{json, Value};

const A: &str = "0190c3a4-0000-7000-8000-00000000000a";
const B: &str = "0190c3a4-0000-7000-8000-00000000000b";
const C: &str = "0190c3a4-0000-7000-8000-00000000000c";
const D: &str = "0190c3a4-0000-7000-8000-00000000000d";

async fn invoke(stack: &Stack, function: &str, event: aws_lambda_events::event::kafka::KafkaEvent) -> Value {
    stack
        .gateway
        .functions
        .invoke_consumer(function, event)
        .await
        .expect("a consumer never fails the invocation")
}

/// The notifications consumer's answer to one batch of `values` on connection-events.
async fn notify_connections(stack: &Stack, values: &[Vec<u8>]) -> Value {
    invoke(
        stack,
        "NotificationsConsumerFunction",
        batch("connection-events", values),
    )
    .await
}

/// A CONNECTION_REQUEST_SENT; `id` "rN" becomes a UUID (consumers refuse malformed ids).
fn request(from: &str, to: &str, id: &str) -> Vec<u8> {
    let id = format!("0190c3a4-0000-7000-9000-{:0>12}", id.trim_start_matches('r'));
    bytes(&envelope(
        EventType::ConnectionRequestSent,
        from,
        json!({"id": id, "fromUserId": from, "toUserId": to, "status": "interested", "createdAt": "2026-01-01T00:00:00.000Z"}),
    ))
}

async fn dead_letters(stack: &Stack, consumer: &str) -> Vec<Value> {
    let all = stack.dead_letters().await;
    all.into_iter().filter(|v| v["consumer"] == consumer).collect()
}

async fn notification_count(stack: &Stack, user: &str) -> usize {
    stack.command::<usize>(&["LLEN", &keys::notifications(user)]).await
}

#[tokio::test]
async fn a_wrong_type_key_under_one_recipient_dead_letters_only_that_record_and_writes_none_of_it() {
    let stack = Stack::start().await;
    let _: () = stack.command(&["SET", &keys::notifications(C), "not a list"]).await;
    let partition_0 = vec![request(A, B, "r1"), request(A, C, "r2"), request(A, D, "r3")];
    let partition_1 = vec![bytes(&envelope(
        EventType::UserSignup,
        A,
        json!({"userId": A, "email": "a@example.com", "firstName": "A", "lastName": "A"}),
    ))];
    let event = batch_on("connection-events", &[(0, partition_0.clone()), (1, partition_1)]);

    let outcome = invoke(&stack, "NotificationsConsumerFunction", event.clone()).await;

    assert_eq!(
        outcome["batchItemFailures"],
        json!([]),
        "the partition moves on: {outcome}"
    );
    assert_eq!(
        (outcome["applied"].as_u64(), outcome["deadLettered"].as_u64()),
        (Some(3), Some(1))
    );
    for user in [B, D, A] {
        assert_eq!(notification_count(&stack, user).await, 1, "{user}");
    }
    for key in [keys::notification_dedupe(C), keys::notification_state(C)] {
        assert_eq!(stack.command::<i64>(&["EXISTS", &key]).await, 0, "{key} half-written");
    }
    let dead = dead_letters(&stack, "notifications").await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    let reason = dead[0]["reason"].as_str().unwrap();
    assert!(reason.contains("WRONGTYPE"), "{reason}");
    assert_eq!(
        (
            dead[0]["topic"].as_str(),
            dead[0]["partition"].as_i64(),
            dead[0]["offset"].as_i64()
        ),
        (Some("connection-events"), Some(0), Some(1))
    );
    assert_eq!(
        STANDARD.decode(dead[0]["value"].as_str().unwrap()).unwrap(),
        partition_0[1],
        "the dead letter carries the record as it was delivered"
    );

    // Once an operator repairs the key, replaying the record delivers it: it was never
    // marked as seen, so it is not mistaken for a duplicate.
    let _: () = stack.command(&["DEL", &keys::notifications(C)]).await;
    let replay = invoke(&stack, "NotificationsConsumerFunction", event).await;
    assert_eq!(
        (replay["applied"].as_u64(), replay["duplicates"].as_u64()),
        (Some(1), Some(3))
    );
    assert_eq!(notification_count(&stack, C).await, 1);
}

#[tokio::test]
async fn any_key_of_a_recipient_holding_the_wrong_type_dead_letters_their_record_naming_it_and_writes_nothing() {
    let stack = Stack::start().await;
    let user = |i: usize| format!("0190c3a4-0000-7000-8000-0000000001{i:02}");
    // (the broken key, how it is broken)
    let broken: Vec<(String, Vec<String>)> = [
        (keys::notifications(&user(1)), vec!["SET", "not a list"]),
        (keys::notification_state(&user(2)), vec!["SET", "not a hash"]),
        (keys::notification_state(&user(3)), vec!["HSET", "unread", "many"]),
        (keys::notification_dedupe(&user(4)), vec!["SET", "not a sorted set"]),
        (keys::presence(&user(5)), vec!["SET", "not a hash"]),
        (keys::presence(&user(6)), vec!["HSET", "lastSeen", "soon"]),
        (
            keys::notifications_read_at(&user(7)),
            vec!["HSET", "at", "not a string"],
        ),
    ]
    .into_iter()
    .map(|(key, how)| (key, how.into_iter().map(String::from).collect()))
    .collect();
    for (key, how) in &broken {
        let mut args = vec![how[0].as_str(), key.as_str()];
        args.extend(how[1..].iter().map(String::as_str));
        let _: () = stack.command(&args).await;
    }
    let values: Vec<Vec<u8>> = (1..=broken.len())
        .map(|i| request(A, &user(i), &format!("r{i}")))
        .chain([request(A, B, "r99")])
        .collect();

    let outcome = notify_connections(&stack, &values).await;

    assert_eq!(
        (outcome["applied"].as_u64(), outcome["deadLettered"].as_u64()),
        (Some(1), Some(broken.len() as u64)),
        "{outcome}"
    );
    assert_eq!(notification_count(&stack, B).await, 1, "the healthy recipient");
    let reasons: Vec<String> = dead_letters(&stack, "notifications")
        .await
        .iter()
        .map(|d| d["reason"].as_str().unwrap_or_default().to_string())
        .collect();
    for (i, (key, _)) in broken.iter().enumerate() {
        assert!(
            reasons
                .iter()
                .any(|r| r.contains("WRONGTYPE") && r.contains(key.as_str())),
            "no dead letter names {key}: {reasons:?}"
        );
        let u = user(i + 1);
        for written in [
            keys::notifications(&u),
            keys::notification_state(&u),
            keys::notification_dedupe(&u),
        ] {
            if written != *key {
                let exists: i64 = stack.command(&["EXISTS", &written]).await;
                assert_eq!(exists, 0, "{written} half-written while {key} is broken");
            }
        }
    }
}

#[tokio::test]
async fn a_record_that_fails_for_redis_reasons_mid_batch_leaves_the_rest_of_its_partition_applied_once() {
    let stack = Stack::start().await;
    // A counter that is not a number: the script must refuse before its first write.
    let _: () = stack
        .command(&["HSET", &keys::notification_state(C), "unread", "many"])
        .await;
    let values = vec![request(A, B, "r1"), request(A, C, "r2"), request(A, D, "r3")];

    let first = notify_connections(&stack, &values).await;
    let again = notify_connections(&stack, &values).await;

    assert_eq!(first["applied"], 2, "{first}");
    assert_eq!(
        (again["applied"].as_u64(), again["duplicates"].as_u64()),
        (Some(0), Some(2))
    );
    assert_eq!(
        stack.command::<i64>(&["EXISTS", &keys::notification_dedupe(C)]).await,
        0
    );
    assert_eq!(notification_count(&stack, C).await, 0);
    let created = stack.events("notification-events").await;
    assert_eq!(created.len(), 2, "one NOTIFICATION_CREATED per applied record");
}

#[tokio::test]
async fn a_record_that_fails_transiently_several_times_is_applied_exactly_once_when_redis_returns() {
    if devconnect_tests::stack::skip_outage_test_on_cluster("a_record_that_fails_transiently") {
        return;
    }
    let mut stack = Stack::start_with(&[("REDIS_TIMEOUT_MS", "300")]).await;
    let values = vec![request(A, B, "r1")];
    stack.redis.stop();
    for _ in 0..3 {
        let outcome = notify_connections(&stack, &values).await;
        assert_eq!(
            outcome["batchItemFailures"],
            json!([{"itemIdentifier": {"partition": "connection-events-0", "offset": 0}}])
        );
    }
    stack.redis.restart().await.unwrap();
    let mut applied = 0;
    for _ in 0..50 {
        let outcome = notify_connections(&stack, &values).await;
        applied += outcome["applied"].as_u64().unwrap_or(0);
        if outcome["batchItemFailures"] == json!([]) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The event source may redeliver a record it already committed; still one effect.
    let redelivered = notify_connections(&stack, &values).await;
    assert_eq!((applied, redelivered["duplicates"].as_u64()), (1, Some(1)));
    assert_eq!(notification_count(&stack, B).await, 1);
    assert_eq!(stack.events("notification-events").await.len(), 1);
}

#[tokio::test]
async fn notification_events_neither_the_broker_nor_the_outbox_takes_are_counted_as_lost() {
    if devconnect_tests::stack::skip_outage_test_on_cluster("notification_events_neither_the_broker") {
        return;
    }
    let mut stack = Stack::start_with(&[("KAFKA_PRODUCE_TIMEOUT_MS", "300")]).await;
    // The outbox refuses the park (WRONGTYPE) while the broker is down.
    let _: () = stack.command(&["SET", keys::OUTBOX, "not a list"]).await;
    stack.broker.stop();

    let outcome = notify_connections(&stack, &[request(A, B, "r1")]).await;

    assert_eq!(outcome["applied"].as_u64(), Some(1), "{outcome}");
    assert_eq!(
        notification_count(&stack, B).await,
        1,
        "the notification itself is stored"
    );
    let metrics = stack.client().get("/_local/metrics").await.body;
    let lost = metrics["counters"].as_array().and_then(|counters| {
        counters.iter().find(|c| {
            c["name"] == devconnect::metrics::EVENTS_LOST
                && c["dimensions"] == json!({"Function": "notifications-consumer"})
        })
    });
    assert_eq!(lost.map(|c| c["value"].clone()), Some(json!(1)), "{metrics}");
}

fn login_on(day_offset: i64, user: &str) -> Vec<u8> {
    let mut e = envelope(EventType::UserLogin, user, json!({"userId": user}));
    e.timestamp += chrono::Duration::days(day_offset);
    bytes(&e)
}

fn day(day_offset: i64) -> String {
    devconnect::clock::day_key(&(chrono::Utc::now() + chrono::Duration::days(day_offset)))
}

#[tokio::test]
async fn analytics_dead_letters_the_records_of_a_day_whose_keys_are_broken_and_counts_the_other_days() {
    let stack = Stack::start().await;
    let (yesterday, today) = (day(-1), day(0));
    // A DAU key that is a plain string, not a HyperLogLog.
    let _: () = stack
        .command(&["SET", &keys::analytics_dau(&yesterday[..7], &yesterday), "x"])
        .await;
    let values = vec![login_on(-1, A), login_on(0, B), login_on(-1, C), login_on(0, D)];

    let outcome = invoke(&stack, "AnalyticsConsumerFunction", batch("user-events", &values)).await;

    assert_eq!(outcome["batchItemFailures"], json!([]), "{outcome}");
    assert_eq!(
        (outcome["applied"].as_u64(), outcome["deadLettered"].as_u64()),
        (Some(2), Some(2))
    );
    let broken_day = [
        keys::analytics_day(&yesterday[..7], &yesterday),
        keys::analytics_dedupe(&yesterday[..7], &yesterday),
    ];
    for key in broken_day {
        assert_eq!(stack.command::<i64>(&["EXISTS", &key]).await, 0, "{key} half-written");
    }
    let logins: i64 = stack
        .command(&["HGET", &keys::analytics_day(&today[..7], &today), "USER_LOGIN"])
        .await;
    assert_eq!(logins, 2);
    let dead = dead_letters(&stack, "analytics").await;
    assert_eq!(dead.len(), 2);
    assert!(
        dead.iter()
            .all(|d| d["reason"].as_str().unwrap().contains("HyperLogLog")),
        "{dead:?}"
    );
}

#[tokio::test]
async fn analytics_refuses_a_day_whose_counter_is_not_a_number_before_writing_anything() {
    let stack = Stack::start().await;
    let today = day(0);
    let day_key = keys::analytics_day(&today[..7], &today);
    let _: () = stack.command(&["HSET", &day_key, "USER_LOGIN", "lots"]).await;

    let outcome = invoke(
        &stack,
        "AnalyticsConsumerFunction",
        batch("user-events", &[login_on(0, A)]),
    )
    .await;

    assert_eq!(outcome["deadLettered"], 1, "{outcome}");
    let fields: i64 = stack.command(&["HLEN", &day_key]).await;
    assert_eq!(fields, 1, "no other counter was incremented");
    for key in [
        keys::analytics_dedupe(&today[..7], &today),
        keys::analytics_dau(&today[..7], &today),
    ] {
        assert_eq!(stack.command::<i64>(&["EXISTS", &key]).await, 0, "{key} half-written");
    }
}

#[tokio::test]
async fn the_pusher_dead_letters_a_record_whose_recipient_has_a_broken_socket_list_and_delivers_the_rest() {
    use futures::StreamExt;
    let stack = Stack::start().await;
    let b = stack.user("reader").await;
    let mut socket = devconnect_tests::socket::open(&stack, &b).await;
    let _: () = stack.command(&["SET", &keys::sockets(C), "not a zset"]).await;
    let message = |to: &str, id: &str| {
        bytes(&envelope(
            EventType::MessageSent,
            A,
            json!({"id": id, "fromUserId": A, "toUserId": to, "text": "hi", "sentAt": "2026-01-01T00:00:00.000Z"}),
        ))
    };
    let values = vec![message(C, "1-0"), message(&b.id, "2-0")];

    let outcome = invoke(&stack, "RealtimePusherFunction", batch("message-events", &values)).await;

    assert_eq!(outcome["batchItemFailures"], json!([]), "{outcome}");
    assert_eq!(
        (outcome["applied"].as_u64(), outcome["deadLettered"].as_u64()),
        (Some(1), Some(1))
    );
    let frame = tokio::time::timeout(Duration::from_secs(2), async {
        while let Some(Ok(m)) = socket.next().await {
            if let tokio_tungstenite::tungstenite::Message::Text(text) = m {
                let v: Value = serde_json::from_str(&text).unwrap();
                if v["type"] == "message" {
                    return v;
                }
            }
        }
        Value::Null
    })
    .await
    .expect("the healthy recipient got its frame");
    assert_eq!(frame["message"]["id"], "2-0");
    let dead = dead_letters(&stack, "realtime").await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0]["offset"], 0);
    assert!(dead[0]["reason"].as_str().unwrap().contains("WRONGTYPE"), "{dead:?}");
}
