//! Derived analytics events: MILESTONE once per user and kind, DAILY_SUMMARY once per
//! closed day, whatever the redeliveries and races; and a batch's Redis round trips stay
//! constant. The stack's own events are fed to the analytics consumer as MSK batches (the
//! consumer called in-process, with the clock set past the day's close), then the outbox
//! relay produces what it announced to analytics-events.

use aws_lambda_events::event::kafka::KafkaEvent;
use chrono::{DateTime, Duration, NaiveTime, Utc};
use devconnect::{
    consumer::BatchOutcome,
    events::{Envelope, EventType},
    payloads::{DailySummary, Milestone, MilestoneKind},
    AppState,
};
use devconnect_analytics::{consume_at, derived};
use devconnect_tests::{
    kafka::{batch, batch_on, bytes, envelope},
    social::User,
    Stack,
};
use serde_json::json;

/// The analytics consumer's state, as the gateway hosts it.
fn analytics(stack: &Stack) -> AppState {
    stack
        .state
        .for_function(devconnect_analytics::FUNCTION_NAME, "analytics-consumer")
}

/// Today (UTC) as `YYYY-MM-DD`.
fn today() -> String {
    Utc::now().date_naive().to_string()
}

/// A moment just past the grace period after today ends: the wall clock the consumer is
/// given, so today may close.
fn after_today_closes() -> DateTime<Utc> {
    let midnight = (Utc::now().date_naive() + Duration::days(1))
        .and_time(NaiveTime::MIN)
        .and_utc();
    midnight + derived::CLOSE_GRACE + Duration::minutes(1)
}

/// A batch holding one event of tomorrow, past the grace period: the stream has left today.
fn closing_batch(user: &str) -> KafkaEvent {
    let mut login = envelope(EventType::UserLogin, user, json!({"userId": user}));
    login.timestamp = after_today_closes();
    batch("user-events", &[bytes(&login)])
}

/// Everything the stack produced to `topic`, as one MSK batch (each record on its partition).
async fn delivered(stack: &Stack, topic: &str) -> KafkaEvent {
    let mut partitions: Vec<(i32, Vec<Vec<u8>>)> = (0..3).map(|p| (p, Vec::new())).collect();
    for (partition, _, _, value) in stack.records(topic).await {
        partitions[partition as usize]
            .1
            .push(serde_json::to_vec(&value).expect("JSON"));
    }
    batch_on(topic, &partitions)
}

/// The day's batches of the social topics, in the order MSK would hand them over.
async fn the_day(stack: &Stack) -> Vec<KafkaEvent> {
    let mut out = Vec::new();
    for topic in ["user-events", "connection-events", "message-events"] {
        out.push(delivered(stack, topic).await);
    }
    out
}

/// Feeds a batch to the consumer with the clock past today's close; every record must be applied.
async fn feed(state: &AppState, event: KafkaEvent) -> BatchOutcome {
    let outcome = consume_at(state, event, after_today_closes() + Duration::minutes(1)).await;
    assert!(
        outcome.response.batch_item_failures.is_empty() && outcome.report.dead_lettered == 0,
        "{outcome:?}"
    );
    outcome
}

/// What the relay produced to analytics-events, once it drained the outbox.
async fn derived_events(stack: &Stack) -> Vec<Envelope> {
    stack.relay().await;
    stack
        .events("analytics-events")
        .await
        .into_iter()
        .map(|e| e.envelope)
        .collect()
}

fn summaries(events: &[Envelope], date: &str) -> Vec<DailySummary> {
    events
        .iter()
        .filter(|e| e.event_type == EventType::DailySummary)
        .map(|e| serde_json::from_value::<DailySummary>(e.data.clone()).expect("DAILY_SUMMARY payload"))
        .filter(|s| s.date == date)
        .collect()
}

fn milestones(events: &[Envelope], kind: MilestoneKind, user: &User) -> Vec<Milestone> {
    events
        .iter()
        .filter(|e| e.event_type == EventType::Milestone && e.key == user.id)
        .map(|e| serde_json::from_value::<Milestone>(e.data.clone()).expect("MILESTONE payload"))
        .filter(|m| m.milestone == kind)
        .collect()
}

#[tokio::test]
async fn a_redelivered_day_produces_one_daily_summary() {
    let stack = Stack::start().await;
    let state = analytics(&stack);
    let (a, b) = (stack.user("sum-a").await, stack.user("sum-b").await);
    stack.connect(&a, &b).await;
    assert_eq!(a.message(&b.id, "hello").await.status, 201);

    let day = the_day(&stack).await;
    for _ in 0..2 {
        for event in &day {
            feed(&state, event.clone()).await;
        }
        // Two batches past midnight race to close the day.
        tokio::join!(feed(&state, closing_batch(&a.id)), feed(&state, closing_batch(&b.id)));
    }

    let events = derived_events(&stack).await;
    assert_eq!(summaries(&events, &today()).len(), 1, "{events:#?}");
    let summary = events
        .iter()
        .find(|e| e.event_type == EventType::DailySummary)
        .expect("summary");
    assert_eq!(
        (summary.source.as_str(), summary.key.as_str()),
        ("analytics", derived::SUMMARY_KEY)
    );
}

#[tokio::test]
async fn the_daily_summary_counts_what_the_stack_did() {
    let stack = Stack::start().await;
    let state = analytics(&stack);
    let (a, b, c) = (
        stack.user("count-a").await,
        stack.user("count-b").await,
        stack.user("count-c").await,
    );
    stack.connect(&a, &b).await;
    assert_eq!(c.send_request("interested", &a.id).await.status, 201);
    for (from, to) in [(&a, &b), (&a, &b), (&b, &a)] {
        assert_eq!(from.message(&to.id, "hi").await.status, 201);
    }

    let day = the_day(&stack).await;
    let fed: usize = day
        .iter()
        .map(|e| e.records.values().map(Vec::len).sum::<usize>())
        .sum();
    for event in day {
        feed(&state, event).await;
    }
    feed(&state, closing_batch(&a.id)).await;

    let events = derived_events(&stack).await;
    let summary = summaries(&events, &today()).pop().expect("today's summary");
    assert_eq!(summary.total_events, fed as u64);
    assert_eq!(summary.dau, 3, "three users acted");
    let count = |t: &str| summary.counts.get(t).copied().unwrap_or(0);
    assert_eq!(
        (
            count("USER_SIGNUP"),
            count("CONNECTION_REQUEST_SENT"),
            count("CONNECTION_ACCEPTED"),
            count("MESSAGE_SENT")
        ),
        (3, 2, 1, 3)
    );
    assert_eq!(
        (
            summary.funnel.signups,
            summary.funnel.requests_sent,
            summary.funnel.accepted,
            summary.funnel.first_connections,
            summary.funnel.first_messages
        ),
        (3, 2, 1, 2, 2),
        "a and b connected for the first time; a and b each sent a first message"
    );
}

#[tokio::test]
async fn a_first_connection_produces_one_milestone_per_user_even_when_delivered_twice() {
    let stack = Stack::start().await;
    let state = analytics(&stack);
    let (a, b, c) = (
        stack.user("first-a").await,
        stack.user("first-b").await,
        stack.user("first-c").await,
    );
    stack.connect(&a, &b).await;
    let connections = delivered(&stack, "connection-events").await;
    feed(&state, connections.clone()).await;
    // Redelivered, and delivered by two pollers at once.
    tokio::join!(feed(&state, connections.clone()), feed(&state, connections));

    // A's second connection is no milestone for A, and C's first is one for C.
    stack.connect(&c, &a).await;
    feed(&state, delivered(&stack, "connection-events").await).await;

    let events = derived_events(&stack).await;
    for (user, with) in [(&a, &b), (&b, &a), (&c, &a)] {
        let reached = milestones(&events, MilestoneKind::FirstConnection, user);
        assert_eq!(reached.len(), 1, "{reached:?}");
        assert_eq!(
            (reached[0].user_id.as_str(), reached[0].with_user_id.as_str()),
            (user.id.as_str(), with.id.as_str())
        );
    }
}

#[tokio::test]
async fn a_first_message_produces_one_milestone_for_its_sender_only() {
    let stack = Stack::start().await;
    let state = analytics(&stack);
    let (a, b) = (stack.user("talk-a").await, stack.user("talk-b").await);
    stack.connect(&a, &b).await;
    for text in ["one", "two"] {
        assert_eq!(a.message(&b.id, text).await.status, 201);
    }
    let messages = delivered(&stack, "message-events").await;
    feed(&state, messages.clone()).await;
    feed(&state, messages).await;

    let events = derived_events(&stack).await;
    let first = milestones(&events, MilestoneKind::FirstMessage, &a);
    assert_eq!(first.len(), 1, "{first:?}");
    assert_eq!(first[0].with_user_id, b.id);
    assert!(
        milestones(&events, MilestoneKind::FirstMessage, &b).is_empty(),
        "b has not sent anything"
    );
}

/// A batch of `n` events of fresh users (signups, acceptances, messages), stamped on `day`
/// at noon, plus one event past the grace period after `day`, so the batch closes it.
fn mixed_batch(n: usize, day: DateTime<Utc>) -> KafkaEvent {
    let mut values = Vec::new();
    for i in 0..n {
        let (u, v) = (uuid(i, 0xa), uuid(i, 0xb));
        let mut e = match i % 3 {
            0 => envelope(
                EventType::UserSignup,
                &u,
                json!({"userId": u, "email": format!("{u}@example.com"), "firstName": "A", "lastName": "B"}),
            ),
            1 => envelope(
                EventType::ConnectionAccepted,
                &v,
                json!({"id": uuid(i, 0xc), "fromUserId": u, "toUserId": v, "status": "accepted", "reviewedAt": "2026-01-01T12:00:00.000Z"}),
            ),
            _ => envelope(
                EventType::MessageSent,
                &u,
                json!({"id": format!("{i}-0"), "fromUserId": u, "toUserId": v, "text": "hi", "sentAt": "2026-01-01T12:00:00.000Z"}),
            ),
        };
        e.timestamp = day + Duration::hours(12);
        values.push(bytes(&e));
    }
    let mut closing = envelope(EventType::UserLogin, &uuid(0, 0xd), json!({"userId": uuid(0, 0xd)}));
    closing.timestamp = day + Duration::days(1) + derived::CLOSE_GRACE + Duration::minutes(1);
    values.push(bytes(&closing));
    batch("user-events", &values)
}

fn uuid(i: usize, tag: u16) -> String {
    format!("0190c3a4-0000-7000-{tag:04x}-{i:012x}")
}

/// Round trips per batch do not grow with its size. (Sizes stay small enough that the
/// counting proxy sees each pipeline whole: a pipeline of several 64 KB reads would count
/// as several trips when Redis starts answering its first commands before the rest arrived.)
#[tokio::test]
async fn a_batch_costs_the_same_few_redis_round_trips_whatever_its_size() {
    let stack = Stack::start_counting(&[]).await;
    let Some(proxy) = stack.round_trip_counter() else {
        return;
    };
    let state = analytics(&stack);
    let day = |n: i64| {
        (Utc::now().date_naive() - Duration::days(n))
            .and_time(NaiveTime::MIN)
            .and_utc()
    };
    // Warm: the scripts are loaded once per Redis, not per batch.
    consume_at(&state, mixed_batch(3, day(9)), Utc::now()).await;

    let mut closing = Vec::new();
    for (n, d) in [(10, day(6)), (50, day(3))] {
        // Every record is new, every milestone reached, and two days close in this batch
        // (the one before is empty): the most work a batch can bring.
        let (outcome, rt) = proxy.measure(consume_at(&state, mixed_batch(n, d), Utc::now())).await;
        assert!(outcome.response.batch_item_failures.is_empty(), "{outcome:?}");
        assert_eq!(outcome.report.applied, n + 1);
        closing.push(rt);
    }
    // The same batch again: all duplicates, its days closed already.
    let (_, again) = proxy
        .measure(consume_at(&state, mixed_batch(50, day(3)), Utc::now()))
        .await;
    eprintln!("round trips per batch: closing two days with 10 / 50 records {closing:?}, closing nothing {again}");
    assert_eq!(closing[0], closing[1], "independent of the batch size");
    assert!(closing[0] <= 5, "{closing:?}");
    // Which milestones are new and which due days are open is asked beside the counting
    // call: one round trip, two when Redis answers the first before the second is sent.
    assert!(
        again <= 2,
        "counting beside the milestones and due days' markers: {again}"
    );
    let events = derived_events(&stack).await;
    assert_eq!(summaries(&events, &day(3).date_naive().to_string()).len(), 1);
}

#[tokio::test]
async fn on_the_local_stack_a_first_connection_reaches_analytics_events_by_itself() {
    let stack = Stack::start_full(&[]).await;
    let (a, b) = (stack.user("live-a").await, stack.user("live-b").await);
    stack.connect(&a, &b).await;
    // The emulated MSK trigger runs the consumer, the scheduled relay produces.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut reached = Vec::new();
    while std::time::Instant::now() < deadline {
        let events: Vec<Envelope> = stack
            .events("analytics-events")
            .await
            .into_iter()
            .map(|e| e.envelope)
            .collect();
        reached = [&a, &b]
            .iter()
            .map(|u| milestones(&events, MilestoneKind::FirstConnection, u).len())
            .collect();
        if reached == [1, 1] {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(reached, [1, 1], "one firstConnection each within 10 s");
}

/// A rebuild switches readers to a new generation while a batch is counted: the batch is
/// counted again into the new generation, and the day it closes is summed after that, so
/// the day's summary has the batch.
#[tokio::test]
async fn a_day_closed_by_a_batch_counted_across_a_generation_switch_has_that_batch_in_its_summary() {
    let stack = Stack::start().await;
    let state = analytics(&stack);
    let day = (Utc::now().date_naive() - Duration::days(3))
        .and_time(NaiveTime::MIN)
        .and_utc();
    // The days before `day` are closed already, so the batch closes `day` alone.
    consume_at(&state, mixed_batch(0, day - Duration::days(1)), Utc::now()).await;
    // This container still names generation 0's keys; a rebuild has just made 1 live,
    // which does not hold the batch yet.
    let _: () = redis::cmd("HSET")
        .arg(devconnect::projection::Projection::Analytics.pointer_key())
        .arg("live")
        .arg(1)
        .query_async(&mut stack.state.store.conn())
        .await
        .expect("pointer moved");
    // One signup on `day`, and an event the next day that closes it.
    let outcome = consume_at(&state, mixed_batch(1, day), Utc::now()).await;
    assert!(outcome.response.batch_item_failures.is_empty(), "{outcome:?}");

    let events = derived_events(&stack).await;
    let summary = summaries(&events, &day.date_naive().to_string());
    assert_eq!(summary.len(), 1, "{events:#?}");
    assert_eq!(summary[0].funnel.signups, 1, "{:?}", summary[0]);
}
