//! Consumer guarantees with hand-made batches: redelivery changes nothing twice,
//! poison records are dead-lettered while the batch goes on, Redis outages hand the
//! batch back for a retry.

use aws_lambda_events::event::kafka::KafkaEvent;
use base64::{engine::general_purpose::STANDARD, Engine};
use devconnect::events::EventType;
use devconnect_tests::{
    kafka::{batch, bytes, envelope},
    Stack,
};
use serde_json::{json, Value};

const A: &str = "0190c3a4-0000-7000-8000-00000000000a";
const B: &str = "0190c3a4-0000-7000-8000-00000000000b";
/// Request ids: UUIDs, as the requests function makes them (consumers refuse others).
const R1: &str = "0190c3a4-0000-7000-9000-000000000001";
const R9: &str = "0190c3a4-0000-7000-9000-000000000009";

/// A batch with one of each notified event.
fn social_batch() -> Vec<Vec<u8>> {
    vec![
        bytes(&envelope(
            EventType::UserSignup,
            B,
            json!({"userId": B, "email": "bo@example.com", "firstName": "Bo", "lastName": "B"}),
        )),
        bytes(&envelope(
            EventType::ConnectionRequestSent,
            A,
            json!({"id": R1, "fromUserId": A, "toUserId": B, "status": "interested", "createdAt": "2026-01-01T00:00:00.000Z"}),
        )),
        bytes(&envelope(
            EventType::ConnectionAccepted,
            B,
            json!({"id": R1, "fromUserId": A, "toUserId": B, "status": "accepted", "reviewedAt": "2026-01-01T00:00:00.000Z"}),
        )),
        bytes(&envelope(
            EventType::MessageSent,
            A,
            json!({"id": "1-0", "fromUserId": A, "toUserId": B, "text": "hi", "sentAt": "2026-01-01T00:00:00.000Z"}),
        )),
        bytes(&envelope(EventType::UserLogin, A, json!({"userId": A}))),
    ]
}

async fn notify(stack: &Stack, event: KafkaEvent) -> Value {
    stack
        .gateway
        .functions
        .invoke_consumer("NotificationsConsumerFunction", event)
        .await
        .expect("consume")
}

async fn count(stack: &Stack, event: KafkaEvent) -> Value {
    stack
        .gateway
        .functions
        .invoke_consumer("AnalyticsConsumerFunction", event)
        .await
        .expect("consume")
}

#[tokio::test]
async fn a_batch_delivered_twice_leaves_the_same_notifications_counters_and_events_as_once() {
    let stack = Stack::start().await;
    let values = social_batch();
    let first = notify(&stack, batch("connection-events", &values)).await;
    count(&stack, batch("connection-events", &values)).await;
    assert_eq!(first["applied"], 4);
    assert_eq!(first["skipped"], 1);
    let after_one = stack.data_snapshot().await;
    let created_after_one = stack.events("notification-events").await.len();
    assert_eq!(created_after_one, 4);

    let second = notify(&stack, batch("connection-events", &values)).await;
    let recount = count(&stack, batch("connection-events", &values)).await;
    assert_eq!(
        (second["applied"].as_u64(), second["duplicates"].as_u64()),
        (Some(0), Some(4))
    );
    assert_eq!(
        (recount["applied"].as_u64(), recount["duplicates"].as_u64()),
        (Some(0), Some(5))
    );
    assert_eq!(stack.data_snapshot().await, after_one);
    assert_eq!(stack.events("notification-events").await.len(), created_after_one);
}

#[tokio::test]
async fn a_message_to_a_user_who_is_online_writes_nothing_and_a_redelivery_after_they_left_notifies_them() {
    let stack = Stack::start().await;
    let presence = devconnect::keys::presence(B);
    let now = devconnect::clock::now_ms().to_string();
    let _: () = stack
        .command(&["HSET", &presence, "online", "1", "lastSeen", &now])
        .await;
    let message = vec![bytes(&envelope(
        EventType::MessageSent,
        A,
        json!({"id": "1-0", "fromUserId": A, "toUserId": B, "text": "hi", "sentAt": "2026-01-01T00:00:00.000Z"}),
    ))];
    let before = stack.data_snapshot().await;

    let online = notify(&stack, batch("message-events", &message)).await;
    assert_eq!(online["skipped"], 1, "{online}");
    assert_eq!(stack.data_snapshot().await, before, "no notification and no marker");

    // No marker stands for a notification that was never needed: a redelivery decides again.
    let _: () = stack.command(&["HSET", &presence, "online", "0"]).await;
    let offline = notify(&stack, batch("message-events", &message)).await;
    assert_eq!(offline["applied"], 1, "{offline}");
}

#[tokio::test]
async fn an_event_applied_longer_ago_than_the_dedupe_window_is_applied_again_and_a_recent_one_is_not() {
    let stack = Stack::start().await;
    let request = envelope(
        EventType::ConnectionRequestSent,
        A,
        json!({"id": R1, "fromUserId": A, "toUserId": B, "status": "interested", "createdAt": "2026-01-01T00:00:00.000Z"}),
    );
    let window_ms = devconnect_notifications::store::DEDUPE_WINDOW.as_millis() as i64;
    let applied_at = devconnect::clock::now_ms() - window_ms - 60_000;
    let _: () = redis::cmd("ZADD")
        .arg(devconnect::keys::notification_dedupe(B))
        .arg(applied_at)
        .arg(request.event_id.to_string())
        .query_async(&mut stack.state.store.conn())
        .await
        .expect("ZADD");

    let first = notify(&stack, batch("connection-events", &[bytes(&request)])).await;
    let again = notify(&stack, batch("connection-events", &[bytes(&request)])).await;

    assert_eq!(first["applied"], 1, "remembered past the window: {first}");
    assert_eq!(
        (again["applied"].as_u64(), again["duplicates"].as_u64()),
        (Some(0), Some(1)),
        "{again}"
    );
}

#[tokio::test]
async fn a_batch_retried_after_a_partial_application_ends_as_one_delivery() {
    let values = social_batch();
    // Reference: one clean delivery.
    let clean = Stack::start().await;
    notify(&clean, batch("connection-events", &values)).await;
    count(&clean, batch("connection-events", &values)).await;
    // Failure mid-batch: only the first records got applied, then the whole batch is redelivered.
    let retried = Stack::start().await;
    notify(&retried, batch("connection-events", &values[..2])).await;
    count(&retried, batch("connection-events", &values[..3])).await;
    notify(&retried, batch("connection-events", &values)).await;
    count(&retried, batch("connection-events", &values)).await;

    for stack in [&clean, &retried] {
        let b = stack.user_with_id(B).await;
        let list = b.client.get("/notifications?limit=100").await;
        assert_eq!(list.body["unreadCount"], 3, "{}", list.body);
        let kinds: Vec<&str> = list.body["notifications"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["type"].as_str().unwrap())
            .collect();
        assert_eq!(kinds, ["message", "connection_request", "welcome"]);
    }
    let day = |s: &Stack| {
        let key = devconnect::keys::analytics_day(&today()[..7], &today());
        let mut conn = s.state.store.conn();
        async move {
            redis::cmd("HGETALL")
                .arg(key)
                .query_async::<std::collections::BTreeMap<String, i64>>(&mut conn)
                .await
                .unwrap()
        }
    };
    assert_eq!(day(&clean).await, day(&retried).await);
    assert_eq!(
        clean.events("notification-events").await.len(),
        retried.events("notification-events").await.len()
    );
}

#[tokio::test]
async fn with_redis_unreachable_the_batch_is_handed_back_from_its_first_record_and_nothing_is_lost() {
    if devconnect_tests::stack::skip_outage_test_on_cluster("with_redis_unreachable_the_batch_is_handed_back") {
        return;
    }
    let mut stack = Stack::start_with(&[("REDIS_TIMEOUT_MS", "300")]).await;
    let values = social_batch();
    stack.redis.stop();
    for function in ["NotificationsConsumerFunction", "AnalyticsConsumerFunction"] {
        let outcome = stack
            .gateway
            .functions
            .invoke_consumer(function, batch("connection-events", &values))
            .await
            .expect("a consumer never fails the invocation");
        assert_eq!(
            outcome["batchItemFailures"],
            json!([{"itemIdentifier": {"partition": "connection-events-0", "offset": 0}}]),
            "{function}: {outcome}"
        );
        assert_eq!(
            (outcome["retrying"].as_u64(), outcome["deadLettered"].as_u64()),
            (Some(5), Some(0))
        );
    }
    stack.redis.restart().await.unwrap();
    let mut retried = Value::Null;
    for _ in 0..20 {
        retried = notify(&stack, batch("connection-events", &values)).await;
        if retried["batchItemFailures"] == json!([]) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(retried["applied"], 4, "{retried}");
}

#[tokio::test]
async fn poison_records_are_dead_lettered_with_a_reason_and_the_rest_of_the_batch_is_processed() {
    let stack = Stack::start().await;
    let good = bytes(&envelope(
        EventType::ConnectionRequestSent,
        A,
        json!({"id": R9, "fromUserId": A, "toUserId": B, "status": "interested", "createdAt": "2026-01-01T00:00:00.000Z"}),
    ));
    let mut wrong_version = serde_json::to_value(envelope(EventType::UserLogin, A, json!({}))).unwrap();
    wrong_version["version"] = json!(2);
    let values = vec![
        b"{not json".to_vec(),
        json!({"version": 1, "eventType": "USER_TELEPORTED", "eventId": "x"})
            .to_string()
            .into_bytes(),
        wrong_version.to_string().into_bytes(),
        bytes(&envelope(EventType::ConnectionRequestSent, A, json!({"fromUserId": A}))),
        good,
    ];
    let mut event = batch("connection-events", &values);
    // And one record whose value is not even base64.
    let mut raw = event.records.values().next().unwrap()[0].clone();
    raw.offset = 99;
    raw.value = Some("%%% not base64 %%%".into());
    event.records.values_mut().next().unwrap().push(raw);

    let report = notify(&stack, event.clone()).await;
    assert_eq!(
        (report["applied"].as_u64(), report["deadLettered"].as_u64()),
        (Some(1), Some(5))
    );
    let analytics = count(&stack, event).await;
    assert_eq!(
        analytics["deadLettered"], 5,
        "every consumer decodes the typed payload, so data that does not fit its event type is poison for analytics too"
    );

    let dead = stack.dead_letters().await;
    let reasons: Vec<String> = dead
        .iter()
        .filter(|d| d["consumer"] == "notifications")
        .map(|d| d["reason"].as_str().unwrap().to_string())
        .collect();
    for expected in [
        "not JSON",
        "unknown eventType",
        "version 2",
        "invalid data for CONNECTION_REQUEST_SENT: missing field",
        "not base64",
    ] {
        assert!(
            reasons.iter().any(|r| r.contains(expected)),
            "no dead letter for {expected}: {reasons:?}"
        );
    }
    let not_json = dead
        .iter()
        .find(|d| d["reason"].as_str().unwrap().contains("not JSON"))
        .unwrap();
    assert_eq!(
        STANDARD.decode(not_json["value"].as_str().unwrap()).unwrap(),
        b"{not json",
        "original bytes kept"
    );
    assert_eq!(
        (
            not_json["topic"].as_str(),
            not_json["partition"].as_i64(),
            not_json["offset"].as_i64()
        ),
        (Some("connection-events"), Some(0), Some(0))
    );

    let b = stack.user_with_id(B).await;
    assert_eq!(
        b.client.get("/notifications").await.body["notifications"][0]["data"]["requestId"],
        R9
    );
}

fn today() -> String {
    devconnect::clock::today()
}

#[tokio::test]
async fn with_the_broker_down_a_batch_still_succeeds_and_its_events_wait_in_the_outbox() {
    let mut stack = Stack::start_with(&[("KAFKA_PRODUCE_TIMEOUT_MS", "300")]).await;
    stack.broker.stop();
    let mut values = social_batch();
    values.push(b"{poison".to_vec());
    let report = notify(&stack, batch("connection-events", &values)).await;
    assert_eq!(
        (report["applied"].as_u64(), report["deadLettered"].as_u64()),
        (Some(4), Some(1))
    );
    // 4 NOTIFICATION_CREATED + 1 dead letter, parked for the relay instead of lost.
    assert_eq!(devconnect::outbox::len(&stack.state.store).await.unwrap(), 5);
}

/// User `i` of a generated crowd (user ids are UUIDs).
/// How many notifications `user` has stored, and their unread counter.
async fn stored_and_unread(conn: &mut devconnect::store::StoreConnection, user: &str) -> (usize, Option<i64>) {
    redis::pipe()
        .llen(devconnect::keys::notifications(user))
        .hget(devconnect::keys::notification_state(user), "unread")
        .query_async(conn)
        .await
        .expect("redis")
}

fn crowd_member(i: usize) -> String {
    format!("0190c3a4-0000-7000-8000-{i:012}")
}

#[tokio::test]
async fn a_batch_for_hundreds_of_users_reaches_each_of_them_within_five_redis_round_trips_per_consumer() {
    // More recipients than one notifications script call holds, so the batch needs several.
    const USERS: usize = 250;
    let stack = Stack::start_counting(&[]).await;
    let mut values = Vec::new();
    for i in 0..USERS {
        let (a, b) = (crowd_member(i), crowd_member((i + 1) % USERS));
        values.push(bytes(&envelope(
            EventType::ConnectionRequestSent,
            &a,
            json!({"id": format!("0190c3a4-0000-7000-9000-{i:012}"), "fromUserId": a, "toUserId": b, "status": "interested", "createdAt": "2026-01-01T00:00:00.000Z"}),
        )));
        values.push(bytes(&envelope(
            EventType::MessageSent,
            &a,
            json!({"id": format!("{i}-0"), "fromUserId": a, "toUserId": b, "text": "hi", "sentAt": "2026-01-01T00:00:00.000Z"}),
        )));
    }
    let Some(proxy) = stack.round_trip_counter() else {
        return;
    };
    // The budget is a warm consumer's: a batch from ten days ago has each consumer load its
    // scripts (a Redis that lacks one answers NOSCRIPT: one more round trip, once) and
    // closes days of its own, not the two before today.
    let mut earlier = envelope(
        EventType::MessageSent,
        A,
        json!({"id": "0-0", "fromUserId": A, "toUserId": B, "text": "hi", "sentAt": "2026-01-01T00:00:00.000Z"}),
    );
    earlier.timestamp -= chrono::TimeDelta::days(10);
    let earlier = batch("message-events", &[bytes(&earlier)]);
    assert_eq!(count(&stack, earlier.clone()).await["applied"], 1);
    assert_eq!(notify(&stack, earlier).await["applied"], 1);
    let announced_before = stack.events("notification-events").await.len();
    // Analytics first: it also reaches 250 first messages and closes the two days before
    // today, each in a round trip of its own (the most a batch can take).
    let (counted, trips) = proxy.measure(count(&stack, batch("message-events", &values))).await;
    assert_eq!(
        (counted["applied"].as_u64(), counted["deadLettered"].as_u64()),
        (Some(500), Some(0))
    );
    assert!(trips <= 5, "analytics took {trips} Redis round trips");
    let (notified, trips) = proxy.measure(notify(&stack, batch("message-events", &values))).await;
    assert_eq!(
        (notified["applied"].as_u64(), notified["deadLettered"].as_u64()),
        (Some(500), Some(0))
    );
    assert!(trips <= 5, "notifications took {trips} Redis round trips");
    let mut conn = stack.state.store.conn();
    for i in 0..USERS {
        let user = crowd_member(i);
        assert_eq!(
            stored_and_unread(&mut conn, &user).await,
            (2, Some(2)),
            "{user}: a request and a message"
        );
    }
    assert_eq!(
        stack.events("notification-events").await.len(),
        announced_before + 2 * USERS
    );
    // The same batch again is all duplicates, in the same budget.
    let (again, trips) = proxy.measure(notify(&stack, batch("message-events", &values))).await;
    assert_eq!(
        (again["applied"].as_u64(), again["duplicates"].as_u64()),
        (Some(0), Some(500))
    );
    assert!(trips <= 5, "notifications took {trips} Redis round trips");
}

#[tokio::test]
async fn a_large_batch_applied_in_parts_keeps_the_parts_that_worked_and_a_redelivery_adds_only_what_was_missing() {
    // Enough notifications for several parts: 300 recipients, 4 requests each, the
    // recipients in turn (so each one's requests are spread over the whole batch).
    const RECIPIENTS: usize = 300;
    const SENDERS: usize = 4;
    let stack = Stack::start().await;
    let mut values = Vec::new();
    for s in 0..SENDERS {
        for r in 0..RECIPIENTS {
            let (from, to) = (crowd_member(1_000 + s), crowd_member(r));
            let id = format!("0190c3a4-0000-7000-9000-{:012}", s * RECIPIENTS + r);
            values.push(bytes(&envelope(
                EventType::ConnectionRequestSent,
                &from,
                json!({"id": id, "fromUserId": from, "toUserId": to, "status": "interested", "createdAt": "2026-01-01T00:00:00.000Z"}),
            )));
        }
    }
    // 1,200 notifications: four parts (a part holds at least 250).
    let total = values.len() as u64;
    // The last recipient (in the last part) has a broken list: its records fail for good.
    let broken = crowd_member(RECIPIENTS - 1);
    let mut conn = stack.state.store.conn();
    let _: () = redis::cmd("SET")
        .arg(devconnect::keys::notifications(&broken))
        .arg("not a list")
        .query_async(&mut conn)
        .await
        .unwrap();

    let first = notify(&stack, batch("connection-events", &values)).await;
    assert_eq!(
        (
            first["applied"].as_u64(),
            first["deadLettered"].as_u64(),
            first["retrying"].as_u64()
        ),
        (Some(total - SENDERS as u64), Some(SENDERS as u64), Some(0)),
        "{first}"
    );
    assert_eq!(first["batchItemFailures"], json!([]));
    assert_eq!(
        stack.events("notification-events").await.len() as u64,
        total - SENDERS as u64
    );

    // Repaired, the batch comes again: only the broken recipient's records are new.
    let _: () = redis::cmd("DEL")
        .arg(devconnect::keys::notifications(&broken))
        .query_async(&mut conn)
        .await
        .unwrap();
    let again = notify(&stack, batch("connection-events", &values)).await;
    assert_eq!(
        (again["applied"].as_u64(), again["duplicates"].as_u64()),
        (Some(SENDERS as u64), Some(total - SENDERS as u64)),
        "{again}"
    );
    for r in 0..RECIPIENTS {
        let user = crowd_member(r);
        assert_eq!(
            stored_and_unread(&mut conn, &user).await,
            (SENDERS, Some(SENDERS as i64)),
            "{user}"
        );
    }
    // Each recipient's notifications in the order their events came, newest first.
    let list: Vec<String> = redis::cmd("LRANGE")
        .arg(devconnect::keys::notifications(&crowd_member(7)))
        .arg(0)
        .arg(-1)
        .query_async(&mut conn)
        .await
        .unwrap();
    let actors: Vec<String> = list
        .iter()
        .map(|n| {
            serde_json::from_str::<Value>(n).unwrap()["actorId"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let expected: Vec<String> = (0..SENDERS).rev().map(|s| crowd_member(1_000 + s)).collect();
    assert_eq!(actors, expected);
    assert_eq!(stack.events("notification-events").await.len() as u64, total);
}
