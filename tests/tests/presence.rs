//! Presence: transitions produce events once, lapsed heartbeats are swept once, lastSeen stays.

use std::time::Duration;

use devconnect::events::EventType;
use devconnect_tests::Stack;
use serde_json::json;

async fn count(stack: &Stack, user: &str, event_type: EventType) -> usize {
    stack
        .events("user-events")
        .await
        .iter()
        .filter(|e| e.key == user && e.envelope.event_type == event_type)
        .count()
}

#[tokio::test]
async fn user_online_is_produced_only_on_the_offline_to_online_transition() {
    let stack = Stack::start().await;
    let a = stack.user("beating").await;
    for _ in 0..3 {
        let r = a.client.post("/presence/heartbeat", json!({})).await;
        assert_eq!((r.status, r.body["online"].as_bool()), (200, Some(true)));
    }
    assert_eq!(count(&stack, &a.id, EventType::UserOnline).await, 1);

    assert_eq!(a.client.post("/presence/offline", json!({})).await.status, 204);
    assert_eq!(count(&stack, &a.id, EventType::UserOffline).await, 1);
    let me = a.client.get(&format!("/presence?userIds={}", a.id)).await;
    assert_eq!(me.body["presence"][0]["online"], false);
    assert!(
        me.body["presence"][0]["lastSeen"].is_string(),
        "lastSeen is kept after going offline"
    );

    a.client.post("/presence/heartbeat", json!({})).await;
    assert_eq!(count(&stack, &a.id, EventType::UserOnline).await, 2);
    // Going offline twice reports it once.
    a.client.post("/presence/offline", json!({})).await;
    a.client.post("/presence/offline", json!({})).await;
    assert_eq!(count(&stack, &a.id, EventType::UserOffline).await, 2);
}

#[tokio::test]
async fn a_lapsed_heartbeat_reads_as_offline_and_the_sweep_reports_it_exactly_once() {
    let stack = Stack::start_with(&[("PRESENCE_TIMEOUT_SECS", "1")]).await;
    let a = stack.user("lapsing").await;
    let b = stack.user("watcher").await;
    stack.connect(&a, &b).await;
    a.client.post("/presence/heartbeat", json!({})).await;
    let path = format!("/presence?userIds={}", a.id);
    assert_eq!(b.client.get(&path).await.body["presence"][0]["online"], true);

    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let seen = b.client.get(&path).await;
    assert_eq!(seen.body["presence"][0]["online"], false);
    assert!(seen.body["presence"][0]["lastSeen"].is_string());

    // Two overlapping sweeps: one USER_OFFLINE.
    let (x, y) = tokio::join!(devconnect_presence_sweep(&stack), devconnect_presence_sweep(&stack));
    assert_eq!(x + y, 1);
    assert_eq!(devconnect_presence_sweep(&stack).await, 0);
    let offline: Vec<_> = stack
        .events("user-events")
        .await
        .into_iter()
        .filter(|e| e.key == a.id && e.envelope.event_type == EventType::UserOffline)
        .collect();
    assert_eq!(offline.len(), 1);
    assert_eq!(offline[0].envelope.data["reason"], "timeout");

    // Coming back is a transition again.
    a.client.post("/presence/heartbeat", json!({})).await;
    assert_eq!(count(&stack, &a.id, EventType::UserOnline).await, 2);
}

#[tokio::test]
async fn a_user_who_keeps_beating_is_never_swept() {
    let stack = Stack::start_with(&[("PRESENCE_TIMEOUT_SECS", "1")]).await;
    let a = stack.user("steady").await;
    for _ in 0..3 {
        a.client.post("/presence/heartbeat", json!({})).await;
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(devconnect_presence_sweep(&stack).await, 0);
    }
}

async fn devconnect_presence_sweep(stack: &Stack) -> u64 {
    let out = stack
        .gateway
        .functions
        .invoke_scheduled("PresenceSweepFunction")
        .await
        .unwrap();
    out["markedOffline"].as_u64().unwrap()
}
