//! Rebuilding projections from the topics (issue 13, item 3): the live consumers run as
//! `./infra/local/run` runs them (emulated MSK triggers), users act through the HTTP API,
//! and a rebuild replays the topics into a fresh key generation while traffic goes on.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::{Duration, Instant},
};

use devconnect::{
    events::Envelope,
    keys,
    projection::{self, Projection},
    rebuild::{Options, RebuildError},
};
use devconnect_ops::rebuild::{rebuild, RebuildFailure, RebuildRequest};
use devconnect_tests::{social::User, stack::Reply, Stack};
use serde_json::{json, Value};

const ADMIN: &str = "0190c3a4-0000-7000-8000-00000000ad00";

/// The topics the analytics consumer reads (template.yaml).
const ANALYTICS_TOPICS: [&str; 4] = [
    "user-events",
    "connection-events",
    "message-events",
    "notification-events",
];

/// A test-sized run: no wait before deleting the old generation, a deadline a test can afford.
fn options() -> Options {
    Options {
        cleanup_grace: Duration::ZERO,
        deadline: Duration::from_secs(60),
        ..Options::default()
    }
}

async fn run(stack: &Stack, projection: &str) -> Result<devconnect::rebuild::Report, RebuildFailure> {
    let request = RebuildRequest {
        projection: projection.into(),
    };
    rebuild(&stack.state, &request, &options()).await
}

fn today() -> String {
    devconnect::clock::today()
}

/// What the analytics consumer must have counted for today, computed from the records
/// themselves: per type, per hour and type, in all, and the distinct acting users.
async fn expected_report(stack: &Stack) -> Value {
    let day = today();
    let mut counts: BTreeMap<String, i64> = BTreeMap::new();
    let mut hourly: BTreeMap<String, BTreeMap<String, i64>> = BTreeMap::new();
    let mut users = BTreeSet::new();
    let mut seen = BTreeSet::new();
    for topic in ANALYTICS_TOPICS {
        for event in stack.events(topic).await {
            let e: &Envelope = &event.envelope;
            if e.timestamp.format("%Y-%m-%d").to_string() != day || !seen.insert(e.event_id) {
                continue;
            }
            *counts.entry(e.event_type.as_str()).or_default() += 1;
            *hourly
                .entry(e.timestamp.format("%H").to_string())
                .or_default()
                .entry(e.event_type.as_str())
                .or_default() += 1;
            users.insert(e.key.clone());
        }
    }
    json!({
        "totalEvents": counts.values().sum::<i64>(),
        "counts": counts,
        "hourly": hourly,
        "dau": users.len(),
        "mau": users.len(),
    })
}

/// The parts of GET /analytics/daily the consumer counts.
fn counted(report: &Reply) -> Value {
    let b = &report.body;
    json!({
        "totalEvents": b["totalEvents"],
        "counts": b["counts"],
        "hourly": b["hourly"],
        "dau": b["dau"],
        "mau": b["mau"],
    })
}

/// Waits (at most 20 s) until the live report equals what the topics hold; returns both.
async fn settled_analytics(stack: &Stack, admin: &User) -> (Value, Value) {
    let path = format!("/analytics/daily?date={}", today());
    let started = Instant::now();
    loop {
        let report = admin.client.get(&path).await;
        assert_eq!(report.status, 200, "{}", report.body);
        let expected = expected_report(stack).await;
        if counted(&report) == expected || started.elapsed() > Duration::from_secs(20) {
            return (counted(&report), expected);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Deletes every key matching `pattern` (what "flushing the analytics keys" means).
async fn delete_matching(stack: &Stack, pattern: &str) -> usize {
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(pattern)
        .query_async(&mut stack.state.store.conn())
        .await
        .expect("KEYS");
    if !keys.is_empty() {
        let _: () = redis::cmd("DEL")
            .arg(&keys)
            .query_async(&mut stack.state.store.conn())
            .await
            .expect("DEL");
    }
    keys.len()
}

async fn keys_matching(stack: &Stack, pattern: &str) -> Vec<String> {
    redis::cmd("KEYS")
        .arg(pattern)
        .query_async(&mut stack.state.store.conn())
        .await
        .expect("KEYS")
}

/// Some social traffic: a and b connect and exchange messages, c asks b.
async fn some_traffic(stack: &Stack, a: &User, b: &User, c: &User) {
    stack.connect(a, b).await;
    assert_eq!(c.send_request("interested", &b.id).await.status, 201);
    for i in 0..5 {
        assert_eq!(a.message(&b.id, &format!("hello {i}")).await.status, 201);
        assert_eq!(b.message(&a.id, &format!("hi {i}")).await.status, 201);
    }
}

/// Sends `n` messages from `from` to `to`, spaced out so they interleave with a rebuild.
async fn keep_sending(from: &User, to: &User, n: usize) {
    for i in 0..n {
        let sent = from.message(&to.id, &format!("during the rebuild {i}")).await;
        assert_eq!(sent.status, 201, "{}", sent.body);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn flushing_analytics_and_rebuilding_from_the_topics_reproduces_the_live_counters_while_messages_flow() {
    let stack = Stack::start_full(&[("ADMIN_USER_IDS", ADMIN)]).await;
    let admin = stack.user_with_id(ADMIN).await;
    let (a, b, c) = (stack.user("ra").await, stack.user("rb").await, stack.user("rc").await);
    some_traffic(&stack, &a, &b, &c).await;
    let (live, expected) = settled_analytics(&stack, &admin).await;
    assert_eq!(live, expected, "the live consumer counted every record once");

    let flushed = delete_matching(&stack, &keys::analytics_pattern(0)).await;
    assert!(flushed > 0);
    let path = format!("/analytics/daily?date={}", today());
    assert_eq!(
        admin.client.get(&path).await.body["totalEvents"],
        0,
        "the counters are gone"
    );

    let (report, ()) = tokio::join!(run(&stack, "analytics"), keep_sending(&a, &b, 30));
    let report = report.expect("rebuild");
    assert_eq!((report.previous_generation, report.generation), (0, 1));
    assert!(report.replayed > 0, "{report:?}");

    let (rebuilt, expected) = settled_analytics(&stack, &admin).await;
    assert_eq!(rebuilt, expected, "rebuilt counters = every record counted once");
    let messages = |v: &Value| v["counts"]["MESSAGE_SENT"].as_i64().unwrap_or(0);
    assert_eq!(
        messages(&rebuilt),
        messages(&live) + 30,
        "the messages sent meanwhile are counted"
    );
    assert_eq!(rebuilt["dau"], live["dau"]);
}

/// GET /notifications?limit=100 of a user.
async fn notifications_of(user: &User) -> Value {
    let r = user.client.get("/notifications?limit=100").await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.body
}

fn listed(body: &Value) -> usize {
    body["notifications"].as_array().map_or(0, Vec::len)
}

/// Waits (at most 10 s) until `user` has `n` notifications. Each step of the story waits
/// for its notification, so the live list's order is the order the events happened in.
async fn until_listed(user: &User, n: usize) -> Value {
    let started = Instant::now();
    loop {
        let body = notifications_of(user).await;
        if listed(&body) >= n || started.elapsed() > Duration::from_secs(10) {
            assert_eq!(listed(&body), n, "{body}");
            return body;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test]
async fn rebuilding_notifications_gives_every_user_the_same_list_and_unread_count() {
    let stack = Stack::start_full(&[]).await;
    let (a, b, c) = (stack.user("na").await, stack.user("nb").await, stack.user("nc").await);
    let (d, e) = (stack.user("nd").await, stack.user("ne").await);
    until_listed(&b, 1).await;
    stack.connect(&d, &e).await;
    stack.connect(&a, &b).await;
    until_listed(&b, 2).await;
    until_listed(&a, 2).await;
    assert_eq!(c.send_request("interested", &b.id).await.status, 201);
    until_listed(&b, 3).await;
    for i in 0..4 {
        assert_eq!(a.message(&b.id, &format!("hello {i}")).await.status, 201);
        assert_eq!(b.message(&a.id, &format!("hi {i}")).await.status, 201);
    }
    until_listed(&b, 7).await;
    until_listed(&a, 6).await;
    // b reads, then gets more: the unread count is what came after reading.
    assert_eq!(b.client.post("/notifications/read", json!({})).await.status, 204);
    tokio::time::sleep(Duration::from_millis(10)).await;
    for i in 0..3 {
        assert_eq!(a.message(&b.id, &format!("after reading {i}")).await.status, 201);
    }
    until_listed(&b, 10).await;
    let users = [&a, &b, &c];
    let mut before = Vec::new();
    for u in users {
        before.push(notifications_of(u).await);
    }
    assert_eq!(before[1]["unreadCount"], 3, "{}", before[1]);

    let (report, ()) = tokio::join!(run(&stack, "notifications"), keep_sending(&d, &e, 20));
    let report = report.expect("rebuild");
    assert_eq!(report.generation, 1);
    let mut after = Vec::new();
    for u in users {
        after.push(notifications_of(u).await);
    }
    assert_eq!(after, before, "same notifications, same order, same unread counts");
    // e: the welcome, d's request, then one notification per message sent during the rebuild.
    let got = until_listed(&e, 22).await;
    let messages = got["notifications"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["type"] == "message")
        .count();
    assert_eq!(
        messages, 20,
        "every message sent during the rebuild notified once: {got}"
    );
    assert!(
        keys_matching(&stack, &keys::notifications_pattern(0)).await.is_empty(),
        "the old generation is deleted"
    );
}

#[tokio::test]
async fn a_concurrent_rebuild_is_refused_and_rebuilding_twice_changes_no_counter() {
    let stack = Stack::start_full(&[("ADMIN_USER_IDS", ADMIN)]).await;
    let admin = stack.user_with_id(ADMIN).await;
    let (a, b, c) = (stack.user("ta").await, stack.user("tb").await, stack.user("tc").await);
    some_traffic(&stack, &a, &b, &c).await;
    let (live, expected) = settled_analytics(&stack, &admin).await;
    assert_eq!(live, expected);

    let (first, second) = tokio::join!(run(&stack, "analytics"), run(&stack, "analytics"));
    let refused = [&first, &second]
        .iter()
        .filter(|r| matches!(r, Err(RebuildFailure::Rebuild(RebuildError::AlreadyRunning(_)))))
        .count();
    assert_eq!(refused, 1, "{first:?} / {second:?}");
    assert!(first.is_ok() || second.is_ok());
    let again = run(&stack, "analytics").await.expect("second rebuild");
    assert_eq!((again.previous_generation, again.generation), (1, 2));

    let (rebuilt, _) = settled_analytics(&stack, &admin).await;
    assert_eq!(rebuilt, live, "two rebuilds later the counters are the same");
    let pointer = projection::pointer(&stack.state.store, Projection::Analytics)
        .await
        .unwrap();
    assert_eq!((pointer.live, pointer.building), (2, None));
    for old in [0, 1] {
        assert!(
            keys_matching(&stack, &keys::analytics_pattern(old)).await.is_empty(),
            "generation {old} left keys"
        );
    }
    assert!(matches!(
        run(&stack, "users").await,
        Err(RebuildFailure::UnknownProjection(_))
    ));
}

#[test]
fn the_rebuild_reads_exactly_the_topics_each_consumer_is_triggered_by() {
    let template = local_gateway::template::Template::load(&local_gateway::default_template_path()).unwrap();
    let topics_of = |function: &str| -> BTreeSet<String> {
        template
            .msk_sources
            .iter()
            .filter(|s| s.function == function)
            .map(|s| s.topic.clone())
            .collect()
    };
    let config = devconnect::config::Config::from_map(&Default::default()).unwrap();
    for (projection, function) in [
        (Projection::Analytics, "AnalyticsConsumerFunction"),
        (Projection::Notifications, "NotificationsConsumerFunction"),
    ] {
        let ours: BTreeSet<String> = devconnect_ops::rebuild::topic_names(&config.topics, projection)
            .into_iter()
            .collect();
        assert_eq!(ours, topics_of(function), "{projection:?}");
    }
}

#[tokio::test]
async fn reading_a_projection_costs_no_extra_round_trip_except_once_after_a_switch() {
    let stack = Stack::start_counting(&[("ADMIN_USER_IDS", ADMIN)]).await;
    let admin = stack.user_with_id(ADMIN).await;
    let token = admin.client.token().to_string();
    let Some(proxy) = stack.round_trip_counter() else {
        return;
    };
    let daily = format!("/analytics/daily?date={}", today());
    let trips = async |path: &str| {
        let (response, n) = proxy.measure(stack.invoke("GET", path, b"", Some(&token))).await;
        assert_eq!(response.status(), 200, "{path}");
        n
    };
    trips("/notifications").await;
    trips(&daily).await;
    // Authentication + rate limit, then one pipeline that also reads the generation pointer.
    assert_eq!((trips("/notifications").await, trips(&daily).await), (2, 2));
    run(&stack, "notifications").await.expect("rebuild notifications");
    run(&stack, "analytics").await.expect("rebuild analytics");
    assert_eq!(
        (trips("/notifications").await, trips(&daily).await),
        (3, 3),
        "the first read after a switch goes again with the new generation's keys"
    );
    assert_eq!((trips("/notifications").await, trips(&daily).await), (2, 2));
}

#[tokio::test]
async fn a_rebuild_replays_ten_thousand_records_in_seconds_and_counts_each_once() {
    use devconnect::{events::EventType, producer::OutgoingRecord};
    use devconnect_tests::kafka::{bytes, envelope};

    let stack = Stack::start_with(&[("ADMIN_USER_IDS", ADMIN)]).await;
    let users: Vec<String> = (0..200).map(|i| format!("0190c3a4-0000-7000-8000-{i:012x}")).collect();
    let records: Vec<OutgoingRecord> = (0..10_000)
        .map(|i| {
            let user = &users[i % users.len()];
            OutgoingRecord {
                topic: "user-events".into(),
                key: user.clone(),
                value: bytes(&envelope(EventType::UserLogin, user, json!({ "userId": user }))),
                headers: Default::default(),
            }
        })
        .collect();
    for chunk in records.chunks(500) {
        stack.state.producer.send_batch(chunk.to_vec()).await.expect("produce");
    }

    let started = Instant::now();
    let report = run(&stack, "analytics").await.expect("rebuild");
    let took = started.elapsed();
    eprintln!("rebuild of 10,000 records: {took:?}; {report:?}");
    assert_eq!(report.replayed + report.drained, 10_000, "{report:?}");
    assert!(took < Duration::from_secs(45), "{took:?}");

    let admin = stack.user_with_id(ADMIN).await;
    let daily = admin.client.get(&format!("/analytics/daily?date={}", today())).await;
    assert_eq!(daily.body["counts"]["USER_LOGIN"], 10_000, "{}", daily.body);
    let dau = daily.body["dau"].as_i64().unwrap_or(0);
    assert!((198..=202).contains(&dau), "HyperLogLog of 200 users: {dau}");
}
