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
        r.body["connectionFunnel"]["accepted"] == 1 && r.body["newUsers"] == 2
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
    devconnect::user::now_rfc3339()[..10].to_string()
}
