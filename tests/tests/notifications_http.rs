//! The notifications HTTP routes: own notifications only, bad input refused.

use devconnect::events::EventType;
use devconnect_tests::{
    kafka::{batch, bytes, envelope},
    Stack,
};
use serde_json::json;

#[tokio::test]
async fn users_see_only_their_own_notifications_and_can_mark_them_read() {
    let stack = Stack::start().await;
    let a = stack.user("reader-a").await;
    let b = stack.user("reader-b").await;
    let values = vec![bytes(&envelope(
        EventType::ConnectionRequestSent,
        &a.id,
        json!({"id": "0190c3a4-0000-7000-9000-000000000001", "fromUserId": a.id, "toUserId": b.id, "status": "interested", "createdAt": "2026-01-01T00:00:00.000Z"}),
    ))];
    stack
        .gateway
        .functions
        .invoke_consumer("NotificationsConsumerFunction", batch("connection-events", &values))
        .await
        .unwrap();

    let mine = b.client.get("/notifications").await;
    assert_eq!((mine.status, mine.body["unreadCount"].as_i64()), (200, Some(1)));
    let theirs = a.client.get("/notifications").await;
    assert_eq!(theirs.body["notifications"], json!([]));
    assert_eq!(b.client.post("/notifications/read", json!({})).await.status, 204);
    let after = b.client.get("/notifications").await;
    assert_eq!(after.body["unreadCount"], 0);
    assert_eq!(
        after.body["notifications"].as_array().unwrap().len(),
        1,
        "reading keeps the list"
    );
}

#[tokio::test]
async fn the_list_is_capped_and_the_unread_count_never_exceeds_it() {
    let stack = Stack::start_with(&[("NOTIFICATIONS_CAP", "3")]).await;
    let a = stack.user("spammer").await;
    let b = stack.user("target").await;
    let values: Vec<Vec<u8>> = (0..5)
        .map(|i| {
            bytes(&envelope(
                EventType::ConnectionRequestSent,
                &a.id,
                json!({"id": format!("0190c3a4-0000-7000-9000-{i:012}"), "fromUserId": a.id, "toUserId": b.id, "status": "interested", "createdAt": "2026-01-01T00:00:00.000Z"}),
            ))
        })
        .collect();
    stack
        .gateway
        .functions
        .invoke_consumer("NotificationsConsumerFunction", batch("connection-events", &values))
        .await
        .unwrap();
    let list = b.client.get("/notifications?limit=100").await;
    let ids: Vec<&str> = list.body["notifications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["data"]["requestId"].as_str().unwrap())
        .collect();
    let request = |i: u32| format!("0190c3a4-0000-7000-9000-{i:012}");
    assert_eq!(ids, [request(4), request(3), request(2)]);
    assert_eq!(list.body["unreadCount"], 3);
}

#[tokio::test]
async fn notification_routes_refuse_missing_tokens_and_bad_limits() {
    let stack = Stack::start().await;
    let a = stack.user("strict").await;
    assert_eq!(stack.client().get("/notifications").await.status, 401);
    assert_eq!(stack.client().post("/notifications/read", json!({})).await.status, 401);
    for q in ["limit=0", "limit=101", "limit=x"] {
        let r = a.client.get(&format!("/notifications?{q}")).await;
        assert_eq!((r.status, r.error_code()), (400, "validation_failed"), "{q}");
    }
    assert_eq!(stack.client().get("/analytics/daily?date=2026-11-27").await.status, 401);
    assert_eq!(a.client.get("/analytics/daily?date=2026-11-27").await.status, 403);
}
