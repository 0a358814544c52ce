//! Item 9: every list is paged and every scan bounded.

use std::collections::HashSet;

use devconnect::{clock::now_ms, events::EventType, keys};
use devconnect_tests::{
    kafka::{batch, bytes, envelope},
    Stack,
};
use serde_json::{json, Value};

/// `devconnect_requests::store::FEED_MAX_SCAN_CALLS` (the tests crate does not link the
/// function crates): Redis calls one feed page may spend skipping hidden users.
const FEED_MAX_SCAN_CALLS: u64 = 8;
/// `devconnect_notifications::store::DEDUPE_MAX_IDS`.
const DEDUPE_MAX_IDS: usize = 10_000;

/// Follows `nextCursor` from `first` until it is null: every page's ids, in order.
async fn all_pages(
    client: &devconnect_tests::stack::Client,
    first: &str,
    list: &str,
    id: fn(&Value) -> String,
) -> Vec<Vec<String>> {
    let mut pages = Vec::new();
    let mut path = first.to_string();
    for _ in 0..10 {
        let r = client.get(&path).await;
        assert_eq!(r.status, 200, "{path}: {}", r.body);
        pages.push(r.body[list].as_array().expect(list).iter().map(id).collect());
        match r.body["nextCursor"].as_str() {
            Some(cursor) => path = format!("{first}&cursor={cursor}"),
            None => return pages,
        }
    }
    panic!("{first}: more pages than items");
}

#[tokio::test]
async fn received_requests_and_connections_are_paged_with_cursors() {
    let stack = Stack::start().await;
    let me = stack.user("paged").await;
    let mut senders = Vec::new();
    for i in 0..3 {
        let s = stack.user(&format!("sender{i}")).await;
        assert_eq!(s.send_request("interested", &me.id).await.status, 201);
        senders.push(s.id);
    }
    let pages = all_pages(&me.client, "/requests/received?limit=2", "requests", |r| {
        r["fromUser"]["id"].as_str().unwrap_or_default().to_string()
    })
    .await;
    assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), [2, 1], "{pages:?}");
    let newest_first: Vec<String> = senders.iter().rev().cloned().collect();
    assert_eq!(pages.concat(), newest_first, "newest first, nothing twice or lost");

    let mut friends = Vec::new();
    for i in 0..3 {
        let f = stack.user(&format!("friend{i}")).await;
        stack.connect(&f, &me).await;
        friends.push(f.id);
    }
    let pages = all_pages(&me.client, "/connections?limit=2", "connections", |c| {
        c["user"]["id"].as_str().unwrap_or_default().to_string()
    })
    .await;
    assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), [2, 1], "{pages:?}");
    let seen: HashSet<&String> = pages.iter().flatten().collect();
    assert_eq!(seen, friends.iter().collect(), "every connection exactly once");

    for path in [
        "/requests/received?limit=0",
        "/requests/received?limit=101",
        "/requests/received?cursor=nope",
        "/connections?limit=0",
        "/connections?cursor=12",
    ] {
        let r = me.client.get(path).await;
        assert_eq!((r.status, r.error_code()), (400, "validation_failed"), "{path}");
    }
}

#[tokio::test]
async fn ten_thousand_ignored_users_before_the_cursor_cost_a_bounded_number_of_redis_calls() {
    let stack = Stack::start_counting(&[]).await;
    let Some(counter) = stack.round_trip_counter() else {
        return;
    };
    let viewer = stack.user("viewer").await;
    let other = stack.user("visible").await;
    // 10,000 users newer than everyone (their ids sort last), all ignored by the viewer:
    // written straight to Redis, as signing up 10,000 users would take minutes.
    let hidden: Vec<String> = (0..10_000)
        .map(|i| format!("ffffffff-ffff-7fff-8fff-{i:012}"))
        .collect();
    let mut conn = stack.state.store.conn();
    for chunk in hidden.chunks(1_000) {
        let mut pipe = redis::pipe();
        for id in chunk {
            pipe.zadd(keys::USERS, id, 0).ignore();
        }
        pipe.sadd(keys::seen(&viewer.id), chunk).ignore();
        pipe.query_async::<()>(&mut conn).await.expect("fill");
    }
    // What authenticating costs, whatever it takes: an empty GET /requests/received is
    // authentication plus its one listing call.
    let (_, received) = counter.measure(viewer.client.get("/requests/received")).await;
    let auth = received - 1;
    let mut path = "/feed?limit=20".to_string();
    let mut found = false;
    for page in 0..100 {
        let (r, trips) = counter.measure(viewer.client.get(&path)).await;
        assert_eq!(r.status, 200, "{}", r.body);
        // + authentication and the profiles of the page.
        assert!(
            trips <= auth + FEED_MAX_SCAN_CALLS + 1,
            "page {page} cost {trips} Redis round trips ({auth} to authenticate)"
        );
        let users = r.body["users"].as_array().expect("users");
        assert!(users.iter().all(|u| !hidden.iter().any(|h| u["id"] == h.as_str())));
        if users.iter().any(|u| u["id"] == other.id.as_str()) {
            found = true;
            break;
        }
        let cursor = r.body["nextCursor"]
            .as_str()
            .expect("a partial page still has a cursor");
        path = format!("/feed?limit=20&cursor={cursor}");
    }
    assert!(found, "following the cursors reaches the visible user");
}

#[tokio::test]
async fn the_notification_dedupe_set_stays_at_most_its_count_bound() {
    let stack = Stack::start().await;
    let from = stack.user("dedupe-from").await;
    let to = stack.user("dedupe-to").await;
    let key = keys::notification_dedupe(&to.id);
    // A full set of recent ids (younger than the age window, so only the count bound applies).
    let now = now_ms();
    let mut conn = stack.state.store.conn();
    let old: Vec<String> = (0..DEDUPE_MAX_IDS)
        .map(|i| format!("00000000-0000-7000-8000-{i:012}"))
        .collect();
    for chunk in old.chunks(1_000) {
        let mut pipe = redis::pipe();
        for id in chunk {
            pipe.zadd(&key, id, now - 1_000).ignore();
        }
        pipe.query_async::<()>(&mut conn).await.expect("fill");
    }
    let event = envelope(
        EventType::ConnectionRequestSent,
        &from.id,
        json!({"id": "0190c3a4-0000-7000-9000-000000000001", "fromUserId": from.id, "toUserId": to.id, "status": "interested", "createdAt": "2026-01-01T00:00:00.000Z"}),
    );
    let report = stack
        .gateway
        .functions
        .invoke_consumer(
            "NotificationsConsumerFunction",
            batch("connection-events", &[bytes(&event)]),
        )
        .await
        .expect("consume");
    assert_eq!(report["applied"], 1, "{report}");
    let (size, newest, oldest): (usize, Option<f64>, Option<f64>) = redis::pipe()
        .zcard(&key)
        .zscore(&key, event.event_id.to_string())
        .zscore(&key, &old[0])
        .query_async(&mut conn)
        .await
        .expect("read");
    assert_eq!(size, DEDUPE_MAX_IDS, "bounded by count");
    assert!(newest.is_some(), "the new id is remembered");
    assert!(oldest.is_none(), "the oldest id made room");
}
