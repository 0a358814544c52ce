//! Concurrent clients: one request per pair, one acceptance per request, every message kept in order.

use devconnect::events::EventType;
use devconnect_tests::Stack;
use futures::future::join_all;
use serde_json::json;

#[tokio::test]
async fn requests_sent_both_ways_at_once_create_exactly_one() {
    let stack = Stack::start().await;
    let a = stack.user("eager-a").await;
    let b = stack.user("eager-b").await;
    let (ab, ba) = tokio::join!(a.send_request("interested", &b.id), b.send_request("interested", &a.id));
    let mut statuses = [ab.status, ba.status];
    statuses.sort();
    assert_eq!(statuses, [201, 409]);
    let pending = a.client.get("/requests/received").await.body["requests"]
        .as_array()
        .unwrap()
        .len()
        + b.client.get("/requests/received").await.body["requests"]
            .as_array()
            .unwrap()
            .len();
    assert_eq!(pending, 1);
    let sent = stack.events("connection-events").await;
    assert_eq!(
        sent.iter()
            .filter(|e| e.envelope.event_type == EventType::ConnectionRequestSent)
            .count(),
        1
    );
}

#[tokio::test]
async fn a_request_reviewed_twice_at_once_is_accepted_once() {
    let stack = Stack::start().await;
    let a = stack.user("asker").await;
    let b = stack.user("decider").await;
    let id = a.send_request("interested", &b.id).await.body["request"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let path = format!("/requests/review/accepted/{id}");
    let replies = join_all((0..6).map(|_| b.client.post(&path, json!({})))).await;
    assert_eq!(replies.iter().filter(|r| r.status == 200).count(), 1);
    assert!(
        replies.iter().all(|r| [200, 404, 409].contains(&r.status)),
        "{:?}",
        replies.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    let accepted = stack.events("connection-events").await;
    assert_eq!(
        accepted
            .iter()
            .filter(|e| e.envelope.event_type == EventType::ConnectionAccepted)
            .count(),
        1
    );
    assert_eq!(
        a.client.get("/connections").await.body["connections"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn a_hundred_concurrent_messages_are_all_stored_in_the_order_they_were_accepted() {
    let stack = Stack::start().await;
    let a = stack.user("fast").await;
    let b = stack.user("inbox").await;
    stack.connect(&a, &b).await;
    let texts: Vec<String> = (0..100).map(|i| format!("msg {i}")).collect();
    let replies = join_all(texts.iter().map(|t| a.message(&b.id, t))).await;
    assert!(replies.iter().all(|r| r.status == 201));
    let mut accepted: Vec<(String, String)> = replies
        .iter()
        .map(|r| {
            (
                r.body["message"]["id"].as_str().unwrap().to_string(),
                r.body["message"]["text"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    accepted.sort_by_key(|(id, _)| {
        let (ms, seq) = id.split_once('-').unwrap();
        (ms.parse::<u64>().unwrap(), seq.parse::<u64>().unwrap())
    });
    let history = b.client.get(&format!("/messages/{}?limit=100", a.id)).await;
    let stored: Vec<(String, String)> = history.body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .map(|m| {
            (
                m["id"].as_str().unwrap().to_string(),
                m["text"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(stored, accepted);
    assert_eq!(
        b.client.get("/conversations").await.body["conversations"][0]["unreadCount"],
        100
    );
}
