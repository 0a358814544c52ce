//! Notifications and analytics through the emulated MSK trigger, as `./infra/local/run` runs them.

use std::time::{Duration, Instant};

use devconnect_tests::{stack::Reply, Client, Stack};
use serde_json::json;

const ADMIN: &str = "0190c3a4-0000-7000-8000-00000000ad00";

/// Polls `path` until `done` holds (at most `within`); returns the reply and how long it took.
async fn eventually(client: &Client, path: &str, within: Duration, done: impl Fn(&Reply) -> bool) -> (Reply, Duration) {
    let started = Instant::now();
    loop {
        let r = client.get(path).await;
        if done(&r) || started.elapsed() > within {
            return (r, started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn has_kind(r: &Reply, kind: &str) -> bool {
    r.body["notifications"]
        .as_array()
        .is_some_and(|n| n.iter().any(|x| x["type"] == kind))
}

#[tokio::test]
async fn requests_and_acceptances_reach_the_right_users_and_analytics_count_them() {
    let stack = Stack::start_full(&[("ADMIN_USER_IDS", ADMIN)]).await;
    let a = stack.user("nora").await;
    let b = stack.user("omar").await;

    // Each new user is welcomed; B reads it so the next notification stands alone.
    let (welcome, _) = eventually(&b.client, "/notifications", Duration::from_secs(5), |r| {
        has_kind(r, "welcome")
    })
    .await;
    assert!(has_kind(&welcome, "welcome"), "{}", welcome.body);
    assert_eq!(b.client.post("/notifications/read", json!({})).await.status, 204);

    let request_id = a.send_request("interested", &b.id).await.body["request"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (seen, waited) = eventually(&b.client, "/notifications", Duration::from_secs(2), |r| {
        has_kind(r, "connection_request")
    })
    .await;
    assert!(has_kind(&seen, "connection_request"), "not within 2 s: {}", seen.body);
    assert!(waited <= Duration::from_secs(2));
    assert_eq!(seen.body["unreadCount"], 1);
    let n = &seen.body["notifications"][0];
    assert_eq!(
        (n["actorId"].as_str(), n["data"]["requestId"].as_str()),
        (Some(a.id.as_str()), Some(request_id.as_str()))
    );

    b.client
        .post(&format!("/requests/review/accepted/{request_id}"), json!({}))
        .await;
    let (accepted, _) = eventually(&a.client, "/notifications", Duration::from_secs(2), |r| {
        has_kind(r, "connection_accepted")
    })
    .await;
    assert!(has_kind(&accepted, "connection_accepted"), "{}", accepted.body);
    // The receiver is not notified of their own acceptance.
    assert!(!has_kind(&b.client.get("/notifications").await, "connection_accepted"));

    let admin = stack.user_with_id(ADMIN).await;
    let today = chrono_today();
    let path = format!("/analytics/daily?date={today}");
    let (report, _) = eventually(&admin.client, &path, Duration::from_secs(3), |r| {
        // Counters fed by different topics arrive in different batches (each mapping has
        // its own batching window), so wait for all of them.
        r.body["connectionFunnel"]["accepted"] == 1 && r.body["newUsers"] == 2 && r.body["dau"] == 2
    })
    .await;
    assert_eq!(report.status, 200, "{}", report.body);
    assert_eq!(
        report.body["connectionFunnel"],
        json!({"sent": 1, "accepted": 1, "acceptanceRate": 1.0})
    );
    assert_eq!(report.body["newUsers"], 2);
    assert_eq!(report.body["dau"], 2);
    assert!(
        report.body["counts"]["NOTIFICATION_CREATED"].as_i64().unwrap_or(0) >= 3,
        "{}",
        report.body
    );

    let denied = a.client.get(&path).await;
    assert_eq!((denied.status, denied.error_code()), (403, "forbidden"));
    assert_eq!(admin.client.get("/analytics/daily?date=yesterday").await.status, 400);
}

#[tokio::test]
async fn messages_to_an_offline_user_notify_in_order_and_online_users_are_not_notified() {
    let stack = Stack::start_full(&[]).await;
    let a = stack.user("talker").await;
    let b = stack.user("away").await;
    let c = stack.user("here").await;
    stack.connect(&a, &b).await;
    stack.connect(&a, &c).await;
    c.client.post("/presence/heartbeat", json!({})).await;

    for i in 0..20 {
        a.message(&b.id, &format!("note {i}")).await;
    }
    a.message(&c.id, "you are online").await;
    let done = |r: &Reply| {
        r.body["notifications"]
            .as_array()
            .is_some_and(|n| n.iter().filter(|x| x["type"] == "message").count() == 20)
    };
    let (seen, _) = eventually(&b.client, "/notifications?limit=100", Duration::from_secs(3), done).await;
    let previews: Vec<&str> = seen.body["notifications"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["type"] == "message")
        .map(|n| n["data"]["preview"].as_str().unwrap())
        .rev()
        .collect();
    let expected: Vec<String> = (0..20).map(|i| format!("note {i}")).collect();
    assert_eq!(previews, expected, "per-key order must survive the trigger");

    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !has_kind(&c.client.get("/notifications").await, "message"),
        "an online user got a message notification"
    );
}

fn chrono_today() -> String {
    devconnect::clock::today()
}

/// `GET /_local/metrics` over HTTP, as a developer would read it.
async fn local_metrics(stack: &Stack) -> serde_json::Value {
    let r = stack.client().get("/_local/metrics").await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.body
}

/// The value of counter `name` with exactly these dimensions (0 if it was never counted).
fn counter(metrics: &serde_json::Value, name: &str, dimensions: serde_json::Value) -> u64 {
    metrics["counters"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == name && c["dimensions"] == dimensions))
        .and_then(|c| c["value"].as_u64())
        .unwrap_or(0)
}

#[tokio::test]
async fn after_signups_messages_and_a_poison_record_the_local_metrics_say_exactly_that() {
    use devconnect::{metrics as m, producer::OutgoingRecord};

    const SIGNUPS: u64 = 3;
    const MESSAGES: u64 = 4;
    let stack = Stack::start_full(&[]).await;
    let a = stack.user("meter-a").await;
    let b = stack.user("meter-b").await;
    let _c = stack.user("meter-c").await;
    stack.connect(&a, &b).await;
    for i in 0..MESSAGES {
        assert_eq!(a.message(&b.id, &format!("counted {i}")).await.status, 201);
    }
    assert_eq!(stack.client().get("/profile").await.status, 401);
    let poison = OutgoingRecord {
        topic: "message-events".into(),
        key: "poison".into(),
        value: b"{not an envelope".to_vec(),
        headers: Default::default(),
    };
    stack
        .state
        .producer
        .send(poison)
        .await
        .expect("produce the poison record");

    // What the consumers must have seen: welcome x3, request, acceptance, and a message
    // notification each (B never comes online); analytics counts every event, including
    // the NOTIFICATION_CREATED ones; every consumer of message-events dead-letters the poison.
    let events = SIGNUPS + 2 + MESSAGES;
    let f = |function: &str| json!({ "Function": function });
    let settled = |metrics: &serde_json::Value| {
        counter(metrics, m::RECORDS_APPLIED, f("analytics-consumer")) >= 2 * events
            && ["notifications-consumer", "analytics-consumer", "realtime-pusher"]
                .iter()
                .all(|c| counter(metrics, m::RECORDS_DEAD_LETTERED, f(c)) >= 1)
    };
    let started = Instant::now();
    let mut metrics = local_metrics(&stack).await;
    while !settled(&metrics) && started.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(50)).await;
        metrics = local_metrics(&stack).await;
    }
    // Let a late or duplicate delivery show up before asserting exact numbers.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let metrics = local_metrics(&stack).await;
    let route = |function: &str, route: &str, class: &str| json!({ "Function": function, "Route": route, "StatusClass": class });

    // HTTP: by function, route and status class, as CloudWatch would slice them.
    assert_eq!(
        counter(&metrics, m::REQUESTS, route("auth", "POST /auth/signup", "2xx")),
        SIGNUPS,
        "{metrics}"
    );
    assert_eq!(
        counter(
            &metrics,
            m::REQUESTS,
            route("messaging", "POST /messages/{userId}", "2xx")
        ),
        MESSAGES
    );
    assert_eq!(counter(&metrics, m::REQUESTS, route("auth", "GET /profile", "4xx")), 1);
    assert_eq!(counter(&metrics, m::AUTH_REFUSED, f("auth")), 1);
    assert_eq!(counter(&metrics, m::RATE_LIMITED, f("auth")), 0);
    let signup_latency = metrics["histograms"]
        .as_array()
        .and_then(|h| {
            h.iter().find(|h| {
                h["name"] == m::LATENCY && h["dimensions"] == json!({"Function": "auth", "Route": "POST /auth/signup"})
            })
        })
        .cloned()
        .unwrap_or_default();
    assert_eq!(signup_latency["count"], SIGNUPS, "{metrics}");
    assert_eq!(signup_latency["unit"], "Milliseconds");

    // Events: produced by the function that emitted them, none parked (the broker is up).
    assert_eq!(counter(&metrics, m::EVENTS_PRODUCED, f("auth")), SIGNUPS);
    assert_eq!(counter(&metrics, m::EVENTS_PRODUCED, f("messaging")), MESSAGES);
    assert_eq!(counter(&metrics, m::EVENTS_PRODUCED, f("requests")), 2);
    // NOTIFICATION_CREATED for each notification, and the one dead letter.
    assert_eq!(
        counter(&metrics, m::EVENTS_PRODUCED, f("notifications-consumer")),
        events + 1
    );
    assert!(metrics["counters"]
        .as_array()
        .is_some_and(|c| c.iter().all(|c| c["name"] != m::EVENTS_PARKED)));

    // Consumers: every record applied exactly once, the poison dead-lettered once by each
    // consumer of its topic, nothing retried.
    assert_eq!(
        counter(&metrics, m::RECORDS_APPLIED, f("notifications-consumer")),
        events,
        "{metrics}"
    );
    assert_eq!(
        counter(&metrics, m::RECORDS_APPLIED, f("analytics-consumer")),
        2 * events,
        "{metrics}"
    );
    for consumer in ["notifications-consumer", "analytics-consumer", "realtime-pusher"] {
        assert_eq!(
            counter(&metrics, m::RECORDS_DEAD_LETTERED, f(consumer)),
            1,
            "{consumer}: {metrics}"
        );
        assert_eq!(counter(&metrics, m::RECORDS_RETRIED, f(consumer)), 0, "{consumer}");
    }
    assert!(metrics["histograms"].as_array().is_some_and(|h| h
        .iter()
        .any(|h| h["name"] == m::BATCH_LATENCY && h["dimensions"] == f("notifications-consumer"))));
}

#[tokio::test]
async fn the_local_metrics_endpoint_is_get_only_and_unknown_routes_stay_404() {
    let stack = Stack::start().await;
    let fresh = local_metrics(&stack).await;
    assert_eq!(fresh["namespace"], "DevConnect");
    assert_eq!(fresh["counters"], json!([]));
    let posted = stack.client().post("/_local/metrics", json!({})).await;
    assert_eq!((posted.status, posted.error_code()), (405, "method_not_allowed"));
    let unknown = stack.client().get("/_local/nothing").await;
    assert_eq!((unknown.status, unknown.error_code()), (404, "not_found"));
    // A route the gateway itself refuses is not a function invocation: nothing counted.
    assert_eq!(local_metrics(&stack).await["counters"], json!([]));
}
