//! Dependencies failing and clients racing: no lost events, no hangs, no double accounts.

use std::time::{Duration, Instant};

use devconnect::events::EventType;
use devconnect_tests::Stack;
use futures::future::join_all;
use serde_json::json;

#[tokio::test]
async fn with_the_broker_down_signup_succeeds_and_the_relay_delivers_the_event_exactly_once_later() {
    let mut stack = Stack::start_with(&[("KAFKA_PRODUCE_TIMEOUT_MS", "500")]).await;
    // Connect the producer first, so the outage hits a live client (the harder case).
    stack.signed_up("early@example.com").await;
    stack.broker.stop();

    let started = Instant::now();
    let (_, user_id) = stack.signed_up("parked@example.com").await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "signup waited {:?} for the broker",
        started.elapsed()
    );
    assert_eq!(devconnect::outbox::len(&stack.state.store).await.unwrap(), 1);

    // While the broker is still down the relay keeps the event.
    let report = stack.relay().await;
    assert_eq!((report.relayed, report.remaining), (0, 1));

    stack.broker.restart().await.unwrap();
    let report = stack.relay().await;
    assert_eq!((report.relayed, report.remaining), (1, 0));
    let again = stack.relay().await;
    assert_eq!(again.relayed, 0);

    let delivered: Vec<_> = stack
        .events("user-events")
        .await
        .into_iter()
        .filter(|e| e.envelope.event_type == EventType::UserSignup && e.key == user_id)
        .collect();
    assert_eq!(delivered.len(), 1, "{delivered:?}");
    assert_eq!(delivered[0].envelope.data["email"], "parked@example.com");
}

#[tokio::test]
async fn with_redis_down_requests_get_a_quick_503_in_the_error_shape() {
    if devconnect_tests::stack::skip_outage_test_on_cluster(
        "with_redis_down_requests_get_a_quick_503_in_the_error_shape",
    ) {
        return;
    }
    let mut stack = Stack::start_with(&[("REDIS_TIMEOUT_MS", "300")]).await;
    let (me, _) = stack.signed_up("outage@example.com").await;
    stack.redis.stop();
    for (method, path) in [("GET", "/profile"), ("POST", "/auth/login")] {
        let started = Instant::now();
        let body = if method == "POST" {
            json!({"email": "outage@example.com", "password": "correct horse battery"}).to_string()
        } else {
            String::new()
        };
        let r = me.raw(method, path, body.into_bytes()).await;
        assert_eq!(r.status, 503, "{path}: {}", r.body);
        assert_eq!(r.error_code(), "service_unavailable");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{path} took {:?}",
            started.elapsed()
        );
    }
    let health = stack.client().get("/health").await;
    assert_eq!(health.status, 503);
    assert_eq!(health.body["status"], "unhealthy");
}

#[tokio::test]
async fn after_redis_comes_back_requests_succeed_again() {
    if devconnect_tests::stack::skip_outage_test_on_cluster("after_redis_comes_back_requests_succeed_again") {
        return;
    }
    let mut stack = Stack::start_with(&[("REDIS_TIMEOUT_MS", "300")]).await;
    stack.redis.stop();
    assert_eq!(stack.client().post("/auth/signup", json!({"email": "a@example.com", "password": "correct horse battery", "firstName": "A", "lastName": "B"})).await.status, 503);
    stack.redis.restart().await.unwrap();
    let mut status = 0;
    for _ in 0..20 {
        status = stack.client().post("/auth/signup", json!({"email": "a@example.com", "password": "correct horse battery", "firstName": "A", "lastName": "B"})).await.status;
        if status == 201 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, 201);
}

#[tokio::test]
async fn health_reports_each_dependency() {
    const ADMIN: &str = "0190c3a4-0000-7000-8000-0000000000ad";
    let mut stack = Stack::start_with(&[("KAFKA_PRODUCE_TIMEOUT_MS", "500"), ("ADMIN_USER_IDS", ADMIN)]).await;
    // Per-dependency details are for admins only.
    let admin = stack.user_with_id(ADMIN).await;
    let healthy = admin.client.get("/health").await;
    assert_eq!(healthy.status, 200);
    assert_eq!(healthy.body["status"], "healthy");
    assert!(healthy.body["dependencies"]["redis"]["latencyMs"].as_f64().is_some());
    stack.broker.stop();
    let degraded = admin.client.get("/health").await;
    assert_eq!(
        (degraded.status, degraded.body["status"].as_str()),
        (200, Some("degraded")),
        "{}",
        degraded.body
    );
}

#[tokio::test]
async fn the_user_rate_limit_holds_under_50_concurrent_requests() {
    let stack = Stack::start_with(&[("RATE_LIMIT_FREE", "10")]).await;
    let (me, _) = stack.signed_up("busy@example.com").await;
    let replies = join_all((0..50).map(|_| me.get("/profile"))).await;
    let admitted = replies.iter().filter(|r| r.status == 200).count();
    let refused: Vec<_> = replies.iter().filter(|r| r.status == 429).collect();
    assert_eq!(admitted, 10);
    assert_eq!(refused.len(), 40);
    for r in refused {
        assert_eq!(r.error_code(), "rate_limited");
        assert!(r.header("retry-after").is_some());
        assert_eq!(r.header("x-ratelimit-limit"), Some("10"));
        assert_eq!(r.header("x-ratelimit-remaining"), Some("0"));
        assert!(r.header("x-ratelimit-reset").is_some());
    }
}

#[tokio::test]
async fn anonymous_requests_are_limited_per_ip() {
    let stack = Stack::start_with(&[("RATE_LIMIT_ANONYMOUS", "3")]).await;
    let anon = stack.client();
    let login = || {
        anon.post(
            "/auth/login",
            json!({"email": "who@example.com", "password": "whatever pw"}),
        )
    };
    for _ in 0..3 {
        assert_eq!(login().await.status, 401);
    }
    let fourth = login().await;
    assert_eq!((fourth.status, fourth.error_code()), (429, "rate_limited"));
    assert_eq!(fourth.header("x-ratelimit-limit"), Some("3"));
}

#[tokio::test]
async fn two_racing_signups_with_one_email_create_exactly_one_account() {
    let stack = Stack::start().await;
    let anon = stack.client();
    let body = |email: &str| json!({"email": email, "password": "correct horse battery", "firstName": "Twin", "lastName": "Racer"});
    let replies = join_all((0..8).map(|i| {
        let email = if i % 2 == 0 {
            "twin@example.com"
        } else {
            "TWIN@example.com"
        };
        anon.post("/auth/signup", body(email))
    }))
    .await;
    let mut statuses: Vec<u16> = replies.iter().map(|r| r.status).collect();
    statuses.sort();
    assert_eq!(statuses, vec![201, 409, 409, 409, 409, 409, 409, 409]);
    let users: Vec<String> = redis::cmd("KEYS")
        .arg("user:*")
        .query_async(&mut stack.state.store.conn())
        .await
        .unwrap();
    assert_eq!(users.len(), 1);
}

#[tokio::test]
async fn concurrent_password_guesses_cannot_exceed_the_failure_limit() {
    let stack = Stack::start().await;
    stack.signed_up("target@example.com").await;
    let anon = stack.client();
    let replies = join_all((0..20).map(|_| {
        anon.post(
            "/auth/login",
            json!({"email": "target@example.com", "password": "guess guess"}),
        )
    }))
    .await;
    assert_eq!(replies.iter().filter(|r| r.status == 401).count(), 5);
    assert_eq!(replies.iter().filter(|r| r.status == 429).count(), 15);
}
