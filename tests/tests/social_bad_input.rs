//! Bad input on every social route: a 4xx JSON error, nothing written, no event.

use devconnect_tests::{stack::Stack, Client};
use serde_json::json;

async fn event_count(stack: &Stack) -> usize {
    let mut n = 0;
    for topic in ["user-events", "connection-events", "message-events"] {
        n += stack.events(topic).await.len();
    }
    n
}

async fn expect(client: &Client, method: &str, path: &str, body: Vec<u8>, status: u16, code: &str) {
    let r = client.raw(method, path, body).await;
    assert_eq!(
        (r.status, r.error_code()),
        (status, code),
        "{method} {path}: {}",
        r.body
    );
}

#[tokio::test]
async fn bad_input_on_social_routes_is_refused_and_changes_nothing() {
    let stack = Stack::start().await;
    let a = stack.user("careful").await;
    let b = stack.user("friend").await;
    stack.connect(&a, &b).await;
    a.message(&b.id, "first").await;
    let before = stack.data_snapshot().await;
    let events_before = event_count(&stack).await;
    let me = &a.client;
    let (aid, bid) = (&a.id, &b.id);
    let missing = "0190c3a4-0000-7000-8000-0000000000ff";
    let none = Vec::new;
    let text = |v: serde_json::Value| v.to_string().into_bytes();

    // requests
    expect(
        me,
        "POST",
        &format!("/requests/send/maybe/{bid}"),
        none(),
        400,
        "validation_failed",
    )
    .await;
    expect(
        me,
        "POST",
        "/requests/send/interested/not-a-uuid",
        none(),
        400,
        "validation_failed",
    )
    .await;
    expect(
        me,
        "POST",
        &format!("/requests/send/interested/{aid}"),
        none(),
        400,
        "validation_failed",
    )
    .await;
    expect(
        me,
        "POST",
        &format!("/requests/send/interested/{missing}"),
        none(),
        404,
        "not_found",
    )
    .await;
    expect(
        me,
        "POST",
        &format!("/requests/review/interested/{missing}"),
        none(),
        400,
        "validation_failed",
    )
    .await;
    expect(
        me,
        "POST",
        "/requests/review/accepted/123",
        none(),
        400,
        "validation_failed",
    )
    .await;
    expect(
        me,
        "POST",
        &format!("/requests/review/accepted/{missing}"),
        none(),
        404,
        "not_found",
    )
    .await;
    for q in ["limit=0", "limit=101", "limit=ten", "cursor=garbage"] {
        expect(me, "GET", &format!("/feed?{q}"), none(), 400, "validation_failed").await;
    }
    // messaging
    let to_b = format!("/messages/{bid}");
    expect(me, "POST", &to_b, text(json!({"text": ""})), 400, "validation_failed").await;
    expect(
        me,
        "POST",
        &to_b,
        text(json!({"text": "   \n "})),
        400,
        "validation_failed",
    )
    .await;
    expect(
        me,
        "POST",
        &to_b,
        text(json!({"text": "x".repeat(2001)})),
        400,
        "validation_failed",
    )
    .await;
    expect(me, "POST", &to_b, text(json!({"text": 42})), 400, "validation_failed").await;
    expect(me, "POST", &to_b, text(json!({})), 400, "validation_failed").await;
    expect(
        me,
        "POST",
        &to_b,
        b"{\"text\": \"unterminated".to_vec(),
        400,
        "bad_request",
    )
    .await;
    expect(
        me,
        "POST",
        &to_b,
        text(json!({"text": "x".repeat(70_000)})),
        413,
        "payload_too_large",
    )
    .await;
    expect(
        me,
        "POST",
        "/messages/not-a-uuid",
        text(json!({"text": "hi"})),
        400,
        "validation_failed",
    )
    .await;
    expect(
        me,
        "POST",
        &format!("/messages/{aid}"),
        text(json!({"text": "hi"})),
        400,
        "validation_failed",
    )
    .await;
    for q in ["before=yesterday", "limit=0", "limit=500"] {
        expect(
            me,
            "GET",
            &format!("/messages/{bid}?{q}"),
            none(),
            400,
            "validation_failed",
        )
        .await;
    }
    expect(
        me,
        "POST",
        "/messages/not-a-uuid/read",
        none(),
        400,
        "validation_failed",
    )
    .await;
    // presence
    expect(me, "GET", "/presence", none(), 400, "validation_failed").await;
    expect(me, "GET", "/presence?userIds=abc", none(), 400, "validation_failed").await;
    let too_many: Vec<String> = (0..101).map(|i| format!("0190c3a4-0000-7000-8000-{i:012}")).collect();
    expect(
        me,
        "GET",
        &format!("/presence?userIds={}", too_many.join(",")),
        none(),
        400,
        "validation_failed",
    )
    .await;
    expect(
        me,
        "POST",
        "/presence/heartbeat",
        vec![b'x'; 70_000],
        413,
        "payload_too_large",
    )
    .await;

    assert_eq!(stack.data_snapshot().await, before, "a refused request wrote to Redis");
    assert_eq!(
        event_count(&stack).await,
        events_before,
        "a refused request produced an event"
    );
}
