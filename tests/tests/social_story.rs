//! The social story over HTTP through the local gateway: request, accept, feed, message, read.

use devconnect::events::EventType;
use devconnect_tests::Stack;
use serde_json::json;

#[tokio::test]
async fn request_accept_message_and_read_through_the_gateway() {
    let stack = Stack::start().await;
    let a = stack.user("alice").await;
    let b = stack.user("bob").await;

    // Before anything, each sees the other in the feed.
    let feed = a.client.get("/feed").await;
    assert_eq!(feed.status, 200);
    assert!(feed.body["users"]
        .as_array()
        .unwrap()
        .iter()
        .any(|u| u["id"] == b.id.as_str()));

    let sent = a.send_request("interested", &b.id).await;
    assert_eq!(sent.status, 201, "{}", sent.body);
    let request_id = sent.body["request"]["id"].as_str().unwrap().to_string();

    let received = b.client.get("/requests/received").await;
    assert_eq!(received.status, 200);
    let requests = received.body["requests"].as_array().unwrap();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0]["id"], request_id.as_str());
    assert_eq!(requests[0]["fromUser"]["id"], a.id.as_str());
    assert!(requests[0]["fromUser"].get("email").is_none());

    let accepted = b
        .client
        .post(&format!("/requests/review/accepted/{request_id}"), json!({}))
        .await;
    assert_eq!(accepted.status, 200, "{}", accepted.body);
    assert!(b.client.get("/requests/received").await.body["requests"]
        .as_array()
        .unwrap()
        .is_empty());

    for (me, other) in [(&a, &b), (&b, &a)] {
        let connections = me.client.get("/connections").await;
        assert_eq!(connections.body["connections"][0]["user"]["id"], other.id.as_str());
        let feed = me.client.get("/feed").await;
        assert!(!feed.body["users"]
            .as_array()
            .unwrap()
            .iter()
            .any(|u| u["id"] == other.id.as_str()));
    }

    let message = a.message(&b.id, "  Hello Bob!  ").await;
    assert_eq!(message.status, 201, "{}", message.body);
    assert_eq!(message.body["message"]["text"], "Hello Bob!");

    let conversations = b.client.get("/conversations").await;
    assert_eq!(conversations.status, 200);
    let first = &conversations.body["conversations"][0];
    assert_eq!(first["user"]["id"], a.id.as_str());
    assert_eq!(first["lastMessage"]["text"], "Hello Bob!");
    assert_eq!(first["unreadCount"], 1);
    // The sender has nothing unread.
    assert_eq!(
        a.client.get("/conversations").await.body["conversations"][0]["unreadCount"],
        0
    );

    let read = b.client.post(&format!("/messages/{}/read", a.id), json!({})).await;
    assert_eq!((read.status, read.body["markedRead"].as_i64()), (200, Some(1)));
    assert_eq!(
        b.client.get("/conversations").await.body["conversations"][0]["unreadCount"],
        0
    );

    let history = b.client.get(&format!("/messages/{}", a.id)).await;
    assert_eq!(history.body["messages"][0]["fromUserId"], a.id.as_str());

    // Every step produced its event, keyed by the acting user.
    let connection_events = stack.events("connection-events").await;
    let sent_event = connection_events
        .iter()
        .find(|e| e.envelope.event_type == EventType::ConnectionRequestSent)
        .unwrap();
    assert_eq!(sent_event.key, a.id);
    assert_eq!(sent_event.envelope.data["toUserId"], b.id.as_str());
    assert_eq!(sent_event.envelope.source, "requests");
    let accepted_event = connection_events
        .iter()
        .find(|e| e.envelope.event_type == EventType::ConnectionAccepted)
        .unwrap();
    assert_eq!(accepted_event.key, b.id);
    assert_eq!(accepted_event.envelope.data["fromUserId"], a.id.as_str());

    let message_events = stack.events("message-events").await;
    let sent = message_events
        .iter()
        .find(|e| e.envelope.event_type == EventType::MessageSent)
        .unwrap();
    assert_eq!(
        (sent.key.as_str(), sent.envelope.source.as_str()),
        (a.id.as_str(), "messaging")
    );
    assert_eq!(sent.envelope.data["text"], "Hello Bob!");
    let read = message_events
        .iter()
        .find(|e| e.envelope.event_type == EventType::MessagesRead)
        .unwrap();
    assert_eq!(read.key, b.id);
    assert_eq!(read.envelope.data["count"], 1);
    for e in connection_events.iter().chain(&message_events) {
        assert_eq!(e.envelope.version, 1);
        assert_eq!(e.envelope.key, e.key);
        assert!(!e.envelope.correlation_id.is_empty());
    }
}

#[tokio::test]
async fn ignoring_someone_removes_them_from_both_feeds_without_a_request() {
    let stack = Stack::start().await;
    let a = stack.user("ann").await;
    let b = stack.user("ben").await;
    let ignored = a.send_request("ignored", &b.id).await;
    assert_eq!(ignored.status, 201);
    assert!(b.client.get("/requests/received").await.body["requests"]
        .as_array()
        .unwrap()
        .is_empty());
    for (me, other) in [(&a, &b), (&b, &a)] {
        let feed = me.client.get("/feed").await;
        assert!(!feed.body["users"]
            .as_array()
            .unwrap()
            .iter()
            .any(|u| u["id"] == other.id.as_str()));
    }
    let events = stack.events("connection-events").await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].envelope.event_type, EventType::ConnectionRequestIgnored);
}

#[tokio::test]
async fn a_rejected_request_makes_no_connection() {
    let stack = Stack::start().await;
    let a = stack.user("amy").await;
    let b = stack.user("bill").await;
    let sent = a.send_request("interested", &b.id).await;
    let id = sent.body["request"]["id"].as_str().unwrap();
    let rejected = b
        .client
        .post(&format!("/requests/review/rejected/{id}"), json!({}))
        .await;
    assert_eq!(rejected.status, 200);
    assert!(a.client.get("/connections").await.body["connections"]
        .as_array()
        .unwrap()
        .is_empty());
    assert_eq!(a.message(&b.id, "hi?").await.status, 403);
    // Reviewing again is not possible.
    assert_eq!(
        b.client
            .post(&format!("/requests/review/accepted/{id}"), json!({}))
            .await
            .status,
        404
    );
}

#[tokio::test]
async fn the_feed_pages_stably_with_a_cursor_and_skips_self() {
    let stack = Stack::start().await;
    let me = stack.user("pager").await;
    let mut others = Vec::new();
    for i in 0..7 {
        others.push(stack.user(&format!("person{i}")).await.id);
    }
    let blocked = stack.user("blocked").await;
    me.send_request("ignored", &blocked.id).await;

    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/feed?limit=3&cursor={c}"),
            None => "/feed?limit=3".into(),
        };
        let page = me.client.get(&path).await;
        assert_eq!(page.status, 200, "{}", page.body);
        let users = page.body["users"].as_array().unwrap();
        assert!(users.len() <= 3);
        seen.extend(users.iter().map(|u| u["id"].as_str().unwrap().to_string()));
        match page.body["nextCursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    others.reverse(); // newest first
    assert_eq!(seen, others);
}

#[tokio::test]
async fn message_history_pages_newest_first_with_a_cursor() {
    let stack = Stack::start().await;
    let a = stack.user("writer").await;
    let b = stack.user("reader").await;
    stack.connect(&a, &b).await;
    for i in 0..5 {
        assert_eq!(a.message(&b.id, &format!("m{i}")).await.status, 201);
    }
    let first = b.client.get(&format!("/messages/{}?limit=2", a.id)).await;
    let texts = |r: &devconnect_tests::stack::Reply| -> Vec<String> {
        r.body["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["text"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(texts(&first), ["m4", "m3"]);
    let cursor = first.body["nextCursor"].as_str().unwrap();
    let second = b
        .client
        .get(&format!("/messages/{}?limit=2&before={cursor}", a.id))
        .await;
    assert_eq!(texts(&second), ["m2", "m1"]);
    let cursor = second.body["nextCursor"].as_str().unwrap();
    let last = b
        .client
        .get(&format!("/messages/{}?limit=2&before={cursor}", a.id))
        .await;
    assert_eq!(texts(&last), ["m0"]);
    assert!(last.body["nextCursor"].is_null());
}

#[tokio::test]
async fn history_keeps_only_the_configured_number_of_messages() {
    let stack = Stack::start_with(&[("MESSAGE_HISTORY_CAP", "3")]).await;
    let a = stack.user("chatty").await;
    let b = stack.user("listener").await;
    stack.connect(&a, &b).await;
    for i in 0..5 {
        a.message(&b.id, &format!("m{i}")).await;
    }
    let history = b.client.get(&format!("/messages/{}", a.id)).await;
    let texts: Vec<&str> = history.body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["m4", "m3", "m2"]);
}
