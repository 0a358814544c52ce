//! The channels router and scheduler: which EMAIL_REQUESTED / SMS_REQUESTED a
//! NOTIFICATION_CREATED becomes, once, and when (quiet hours, the daily digest). Time is
//! driven through the `_at` entry points, never slept through.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use devconnect::{delivery::Delivery, events::EventType};
use devconnect_channels::{settings::Settings, Channels};
use devconnect_tests::{
    kafka::{batch, bytes, envelope},
    stack::Client,
    Stack,
};
use serde_json::{json, Value};

/// The router/scheduler as the gateway hosts them, on this stack's clients.
pub(crate) fn channels(stack: &Stack) -> Channels {
    Channels {
        app: stack
            .state
            .for_function(devconnect_channels::FUNCTION_NAME, "channels-router"),
        settings: Settings::local(&stack.base_url),
    }
}

pub(crate) fn at(rfc3339: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(rfc3339).expect("time").with_timezone(&Utc)
}

/// A NOTIFICATION_CREATED for `recipient` of `kind` (`connection_request`, ...), as the
/// notifications consumer emits it; its id is the envelope's event id.
pub(crate) fn notification(recipient: &str, actor: &str, kind: &str) -> devconnect::events::Envelope {
    let id = uuid_v7();
    let data = match kind {
        "message" => json!({"messageId": uuid_v7(), "preview": "hello"}),
        "welcome" => json!({"firstName": "Bob"}),
        _ => json!({"requestId": uuid_v7()}),
    };
    envelope(
        EventType::NotificationCreated,
        recipient,
        json!({
            "id": id, "type": kind, "recipientId": recipient, "actorId": actor,
            "createdAt": "2026-01-15T12:00:00.000Z", "data": data,
        }),
    )
}

fn uuid_v7() -> String {
    devconnect::events::Envelope::new(EventType::UserLogin, "auth", "k", "c", json!({}))
        .event_id
        .to_string()
}

/// Routes the notifications as one batch at `now`.
pub(crate) async fn route_at(stack: &Stack, now: &str, notifications: &[&devconnect::events::Envelope]) -> Value {
    route_on(&channels(stack), now, notifications).await
}

/// [`route_at`] on a router with its own settings.
pub(crate) async fn route_on(ch: &Channels, now: &str, notifications: &[&devconnect::events::Envelope]) -> Value {
    let values: Vec<Vec<u8>> = notifications.iter().map(|e| bytes(e)).collect();
    let outcome = devconnect_channels::consume_at(ch, batch("notification-events", &values), at(now)).await;
    serde_json::to_value(outcome).expect("outcome")
}

/// Every delivery requested on `topic` for `user`.
pub(crate) async fn requested(stack: &Stack, topic: &str, user: &str) -> Vec<Delivery> {
    stack
        .events(topic)
        .await
        .into_iter()
        .filter_map(|e| serde_json::from_value::<Delivery>(e.envelope.data).ok())
        .filter(|d| d.user_id == user)
        .collect()
}

/// Sets preferences; panics unless 200.
pub(crate) async fn set_preferences(client: &Client, body: Value) -> Value {
    let r = client
        .raw("PUT", "/notifications/preferences", body.to_string().into_bytes())
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.body
}

/// Gives the user a verified phone number: the code is read from the SMS_REQUESTED
/// (kind PHONE_VERIFICATION) that setting the number produced.
pub(crate) async fn verify_phone(stack: &Stack, client: &Client, user: &str, number: &str) {
    set_preferences(client, json!({"phoneNumber": number})).await;
    let sms = requested(stack, "sms-events", user).await;
    let code_sms = sms
        .iter()
        .rev()
        .find(|d| d.kind == "PHONE_VERIFICATION" && d.address == number)
        .expect("a verification code was sent");
    let code: String = code_sms.text.chars().filter(char::is_ascii_digit).take(6).collect();
    let r = client
        .post("/notifications/preferences/phone/verify", json!({ "code": code }))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["phone"], json!({"number": number, "verified": true}));
}

/// How many SMS were requested for notification `id`.
/// The reason of every dead letter so far.
async fn dead_letter_reasons(stack: &Stack) -> Vec<String> {
    stack
        .dead_letters()
        .await
        .iter()
        .map(|d| d["reason"].to_string())
        .collect()
}

async fn texts_for(stack: &Stack, user: &str, id: &str) -> usize {
    requested(stack, "sms-events", user)
        .await
        .into_iter()
        .filter(|d| d.notification_id == id)
        .count()
}

fn of_kind<'a>(deliveries: &'a [Delivery], kind: &str) -> Vec<&'a Delivery> {
    deliveries.iter().filter(|d| d.kind == kind).collect()
}

#[tokio::test]
async fn a_request_to_a_user_with_email_on_and_sms_off_requests_one_email_and_no_sms() {
    let stack = Stack::start_full(&[]).await;
    let a = stack.user("ada").await;
    let b = stack.user("bob").await;
    // Bob has a verified phone, so only his choice keeps the SMS away.
    verify_phone(&stack, &b.client, &b.id, "+33612345678").await;
    set_preferences(
        &b.client,
        json!({"kinds": {"CONNECTION_REQUEST": {"email": true, "sms": false}}}),
    )
    .await;

    assert_eq!(a.send_request("interested", &b.id).await.status, 201);
    let started = Instant::now();
    let emails = loop {
        let emails = requested(&stack, "email-events", &b.id).await;
        if !of_kind(&emails, "CONNECTION_REQUEST").is_empty() || started.elapsed() > Duration::from_secs(10) {
            break emails;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let requests = of_kind(&emails, "CONNECTION_REQUEST");
    assert_eq!(requests.len(), 1, "{emails:?}");
    assert_eq!(requests[0].address, "bob@example.com");
    assert!(
        requests[0].subject.contains("Ada Lovelace"),
        "{:?}",
        requests[0].subject
    );
    // The SMS decision is made in the same script and produce as the email.
    let sms = requested(&stack, "sms-events", &b.id).await;
    assert!(of_kind(&sms, "CONNECTION_REQUEST").is_empty(), "{sms:?}");
}

#[tokio::test]
async fn the_same_notification_created_twice_requests_one_email() {
    let stack = Stack::start().await;
    let b = stack.user("bob").await;
    let created = notification(&b.id, &b.id, "connection_request");

    let first = route_at(&stack, "2026-01-15T12:00:00Z", &[&created]).await;
    let again = route_at(&stack, "2026-01-15T12:00:05Z", &[&created]).await;

    let emails = requested(&stack, "email-events", &b.id).await;
    let id = created.data["id"].as_str().unwrap();
    assert_eq!(
        emails.iter().filter(|d| d.notification_id == id).count(),
        1,
        "{emails:?}"
    );
    assert_eq!(
        (first["applied"].as_u64(), again["duplicates"].as_u64()),
        (Some(1), Some(1))
    );
}

/// What a broker outage left in the outbox for the relay, ahead of the router's entries.
async fn park_waiting_entries(stack: &Stack) -> Vec<String> {
    let waiting: Vec<String> = (0..3).map(|i| format!("{{\"waiting\":{i}}}")).collect();
    let mut push = vec!["RPUSH", devconnect::keys::OUTBOX];
    push.extend(waiting.iter().map(String::as_str));
    stack.command::<i64>(&push).await;
    waiting
}

#[tokio::test]
async fn a_produced_email_leaves_the_outbox_and_the_entries_waiting_before_it_stay() {
    let stack = Stack::start().await;
    let b = stack.user("bob").await;
    let waiting = park_waiting_entries(&stack).await;
    let created = notification(&b.id, &b.id, "connection_request");

    let routed = route_at(&stack, "2026-01-15T12:00:00Z", &[&created]).await;

    assert_eq!(routed["applied"].as_u64(), Some(1), "{routed}");
    let id = created.data["id"].as_str().unwrap();
    let emails = requested(&stack, "email-events", &b.id).await;
    assert_eq!(
        emails.iter().filter(|d| d.notification_id == id).count(),
        1,
        "{emails:?}"
    );
    assert_eq!(
        stack
            .command::<Vec<String>>(&["LRANGE", devconnect::keys::OUTBOX, "0", "-1"])
            .await,
        waiting,
        "the produced entry is gone, the waiting ones untouched"
    );
}

#[tokio::test]
async fn every_email_a_batch_produces_leaves_the_outbox() {
    let stack = Stack::start().await;
    let waiting = park_waiting_entries(&stack).await;
    let mut created = Vec::new();
    for i in 0..5 {
        let user = stack.user(&format!("batch{i}")).await;
        created.push(notification(&user.id, &user.id, "connection_request"));
    }

    let routed = route_at(&stack, "2026-01-15T12:00:00Z", &created.iter().collect::<Vec<_>>()).await;

    assert_eq!(routed["applied"].as_u64(), Some(5), "{routed}");
    assert_eq!(
        stack
            .command::<Vec<String>>(&["LRANGE", devconnect::keys::OUTBOX, "0", "-1"])
            .await,
        waiting,
        "all five produced entries are gone, the waiting ones untouched"
    );
}

#[tokio::test]
async fn quiet_hours_hold_the_sms_until_the_window_ends() {
    let stack = Stack::start().await;
    let b = stack.user("bob").await;
    verify_phone(&stack, &b.client, &b.id, "+33612345678").await;
    set_preferences(
        &b.client,
        json!({
            "kinds": {"CONNECTION_REQUEST": {"sms": true}},
            "quietHours": {"start": "22:00", "end": "07:00", "timeZone": "Europe/Paris"},
        }),
    )
    .await;
    let ch = channels(&stack);
    let created = notification(&b.id, &b.id, "connection_request");
    let id = created.data["id"].as_str().unwrap().to_string();

    // 23:30 in Paris (CET): inside the window, which ends at 07:00 Paris = 06:00 UTC.
    route_at(&stack, "2026-01-15T22:30:00Z", &[&created]).await;
    assert_eq!(texts_for(&stack, &b.id, &id).await, 0, "held during quiet hours");
    devconnect_channels::run_schedule_at(&ch, at("2026-01-16T05:59:00Z"))
        .await
        .unwrap();
    assert_eq!(
        texts_for(&stack, &b.id, &id).await,
        0,
        "still held a minute before the end"
    );
    let run = devconnect_channels::run_schedule_at(&ch, at("2026-01-16T06:00:00Z"))
        .await
        .unwrap();
    assert_eq!(run["smsReleased"], 1, "{run}");
    assert_eq!(texts_for(&stack, &b.id, &id).await, 1, "sent when the window ends");
}

#[tokio::test]
async fn low_priority_kinds_arrive_as_one_digest_when_the_users_day_ends() {
    let stack = Stack::start().await;
    let b = stack.user("bob").await;
    set_preferences(&b.client, json!({"kinds": {"CONNECTION_ACCEPTED": {"email": true}}})).await;
    let ch = channels(&stack);
    let first = notification(&b.id, &b.id, "connection_accepted");
    let second = notification(&b.id, &b.id, "connection_accepted");

    route_at(&stack, "2026-01-15T10:00:00Z", &[&first]).await;
    route_at(&stack, "2026-01-15T11:00:00Z", &[&second]).await;
    devconnect_channels::run_schedule_at(&ch, at("2026-01-15T23:59:00Z"))
        .await
        .unwrap();
    assert!(
        requested(&stack, "email-events", &b.id).await.is_empty(),
        "nothing before the day ends"
    );
    devconnect_channels::run_schedule_at(&ch, at("2026-01-16T00:00:00Z"))
        .await
        .unwrap();

    let emails = requested(&stack, "email-events", &b.id).await;
    assert_eq!(emails.len(), 1, "{emails:?}");
    assert_eq!(emails[0].kind, "DIGEST");
    assert!(emails[0].subject.contains("2 updates"), "{}", emails[0].subject);
    assert!(emails[0].unsubscribe_url.is_some());
}

#[tokio::test]
async fn routing_a_batch_costs_the_same_redis_round_trips_whatever_its_size() {
    let stack = Stack::start_counting(&[]).await;
    let Some(proxy) = stack.round_trip_counter() else {
        return;
    };
    let mut users = Vec::new();
    for i in 0..10 {
        users.push(stack.user(&format!("user{i}")).await);
    }
    let ch = channels(&stack);
    let route = |created: Vec<devconnect::events::Envelope>| {
        let values: Vec<Vec<u8>> = created.iter().map(bytes).collect();
        devconnect_channels::consume_at(&ch, batch("notification-events", &values), at("2026-01-15T12:00:00Z"))
    };
    // Warm: the first use of each script loads it.
    route(vec![notification(&users[0].id, &users[1].id, "connection_request")]).await;

    let one = vec![notification(&users[0].id, &users[1].id, "message")];
    let (first, trips_one) = proxy.measure(route(one)).await;
    assert_eq!(first.report.applied, 1, "{first:?}");
    let many: Vec<_> = (0..50)
        .map(|i| notification(&users[i % 10].id, &users[(i + 1) % 10].id, "connection_request"))
        .collect();
    let (outcome, trips_many) = proxy.measure(route(many)).await;
    assert_eq!(outcome.report.applied, 50);
    // Read preferences, emails and names; write deliveries with their markers; clear what was produced.
    assert_eq!((trips_one, trips_many), (3, 3));
}

/// Of a batch of two, the record for `healthy` was routed (one email requested for them)
/// and the other was dead-lettered.
async fn assert_only_the_healthy_record_routed(stack: &Stack, outcome: &Value, healthy: &str) {
    assert_eq!(
        (outcome["applied"].as_u64(), outcome["deadLettered"].as_u64()),
        (Some(1), Some(1)),
        "{outcome}"
    );
    assert_eq!(requested(stack, "email-events", healthy).await.len(), 1);
}

#[tokio::test]
async fn a_recipient_with_unreadable_preferences_fails_only_their_own_record() {
    let stack = Stack::start().await;
    let a = stack.user("ada").await;
    let b = stack.user("bob").await;
    // A bug or a hand edit left Bob's preferences as a string instead of a hash.
    let _: () = stack
        .command(&["SET", &devconnect::keys::channel_preferences(&b.id), "oops"])
        .await;
    let for_ada = notification(&a.id, &b.id, "connection_request");
    let for_bob = notification(&b.id, &a.id, "connection_request");

    let outcome = route_at(&stack, "2026-01-15T12:00:00Z", &[&for_ada, &for_bob]).await;

    assert_only_the_healthy_record_routed(&stack, &outcome, &a.id).await;
    assert!(requested(&stack, "email-events", &b.id).await.is_empty());
}

#[tokio::test]
async fn a_delivery_dedupe_set_of_the_wrong_type_writes_no_delivery_and_names_the_key() {
    let stack = Stack::start().await;
    let b = stack.user("bob").await;
    let _: () = stack
        .command(&["SET", devconnect::keys::CHANNEL_DEDUPE, "not a sorted set"])
        .await;
    let created = notification(&b.id, &b.id, "connection_request");

    let outcome = route_at(&stack, "2026-01-15T12:00:00Z", &[&created]).await;

    assert_eq!(outcome["applied"].as_u64(), Some(0), "{outcome}");
    let waiting: i64 = stack.command(&["LLEN", devconnect::keys::OUTBOX]).await;
    assert_eq!(waiting, 0, "no delivery parked in the outbox");
    assert!(requested(&stack, "email-events", &b.id).await.is_empty());
    let reasons = dead_letter_reasons(&stack).await;
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("WRONGTYPE") && r.contains(devconnect::keys::CHANNEL_DEDUPE)),
        "{reasons:?}"
    );
}

#[tokio::test]
async fn a_recipient_whose_digest_list_is_broken_fails_alone_in_a_call_shared_with_others() {
    let stack = Stack::start().await;
    let a = stack.user("ada").await;
    let b = stack.user("bob").await;
    set_preferences(&b.client, json!({"kinds": {"CONNECTION_ACCEPTED": {"email": true}}})).await;
    let digest = devconnect::keys::channel_digest(&b.id, "2026-01-15");
    let _: () = stack.command(&["SET", &digest, "not a list"]).await;
    let for_ada = notification(&a.id, &b.id, "connection_request");
    let for_bob = notification(&b.id, &a.id, "connection_accepted");

    let outcome = route_at(&stack, "2026-01-15T12:00:00Z", &[&for_ada, &for_bob]).await;

    assert_only_the_healthy_record_routed(&stack, &outcome, &a.id).await;
    let reasons = dead_letter_reasons(&stack).await;
    assert!(reasons.iter().any(|r| r.contains(&digest)), "{reasons:?}");
    // Nothing of Bob's was marked: once the list is repaired, the replay digests it.
    let _: () = stack.command(&["DEL", &digest]).await;
    let replay = route_at(&stack, "2026-01-15T12:00:05Z", &[&for_bob]).await;
    assert_eq!(replay["applied"].as_u64(), Some(1), "{replay}");
}

#[tokio::test]
async fn with_redis_hung_the_batch_is_handed_back_and_routed_once_when_redis_answers_again() {
    if devconnect_tests::stack::skip_outage_test_on_cluster("router_with_redis_hung") {
        return;
    }
    let stack = Stack::start_with(&[("REDIS_TIMEOUT_MS", "300")]).await;
    let b = stack.user("bob").await;
    let created = notification(&b.id, &b.id, "connection_request");
    stack.redis.pause().expect("SIGSTOP redis");

    let outcome = route_at(&stack, "2026-01-15T12:00:00Z", &[&created]).await;

    stack.redis.resume().expect("SIGCONT redis");
    assert_eq!(
        outcome["batchItemFailures"],
        json!([{"itemIdentifier": {"partition": "notification-events-0", "offset": 0}}]),
        "{outcome}"
    );
    assert!(dead_letter_reasons(&stack).await.is_empty(), "nothing dead-lettered");
    let mut applied = 0;
    for _ in 0..50 {
        let retry = route_at(&stack, "2026-01-15T12:00:05Z", &[&created]).await;
        applied += retry["applied"].as_u64().unwrap_or(0);
        if retry["batchItemFailures"] == json!([]) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(applied, 1);
    assert_eq!(requested(&stack, "email-events", &b.id).await.len(), 1);
}
