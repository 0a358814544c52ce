//! The outbox never wedges: a parked record that can never be produced is quarantined
//! and the records parked after it still go out; a transient outage keeps everything,
//! in order; the relay removes exactly what it handled and its lock outlives its run.

use std::{collections::BTreeMap, time::Duration};

use devconnect::{
    events::{Envelope, EventType},
    keys,
    outbox::{self, Handled, Removed},
    payloads::UserLogin,
    producer::{OutgoingRecord, MAX_RECORD_BYTES},
    publisher::Delivery,
};
use devconnect_tests::Stack;
use redis::AsyncCommands;
use serde_json::json;

/// A USER_LOGIN event for `key` on `topic`, `padding` bytes of extra data.
fn record(topic: &str, key: &str, padding: usize) -> (OutgoingRecord, String) {
    let envelope = Envelope::new(
        EventType::UserLogin,
        "tests",
        key,
        "corr",
        json!({"padding": "x".repeat(padding)}),
    );
    let id = envelope.event_id.to_string();
    let record = OutgoingRecord {
        topic: topic.to_string(),
        key: key.to_string(),
        value: serde_json::to_vec(&envelope).expect("envelope JSON"),
        headers: BTreeMap::from([("eventId".to_string(), id.clone().into_bytes())]),
    };
    (record, id)
}

/// The outbox entries as stored, oldest first.
async fn entries(stack: &Stack) -> Vec<String> {
    stack
        .state
        .store
        .conn()
        .lrange(keys::OUTBOX, 0, -1)
        .await
        .expect("LRANGE outbox")
}

/// Event ids that reached `topic`.
async fn delivered(stack: &Stack, topic: &str) -> Vec<String> {
    stack
        .events(topic)
        .await
        .into_iter()
        .map(|e| e.envelope.event_id.to_string())
        .collect()
}

#[tokio::test]
async fn an_oversized_event_is_parked_then_quarantined_with_its_reason_and_the_events_after_it_are_relayed() {
    const ADMIN: &str = "0190c3a4-0000-7000-8000-0000000000ad";
    let stack = Stack::start_with(&[("ADMIN_USER_IDS", ADMIN)]).await;
    let publisher = &stack.state.publisher;
    let delivery = publisher
        .publish(
            "big",
            "corr",
            UserLogin {
                user_id: "x".repeat(MAX_RECORD_BYTES),
            },
        )
        .await
        .expect("the request must not fail");
    assert_eq!(delivery, Delivery::Parked);
    let (first, first_id) = record("user-events", "after-1", 10);
    let (second, second_id) = record("user-events", "after-2", 10);
    outbox::park_all(&stack.state.store, &[first, second])
        .await
        .expect("park");

    let report = stack.relay().await;
    assert_eq!((report.relayed, report.quarantined, report.remaining), (2, 1, 0));
    let quarantined = outbox::quarantined(&stack.state.store, 10).await.expect("quarantine");
    assert_eq!(quarantined.len(), 1);
    assert!(
        quarantined[0].reason.contains("exceeds the 1048576-byte limit"),
        "{}",
        quarantined[0].reason
    );
    let original: serde_json::Value = serde_json::from_str(&quarantined[0].entry).expect("entry JSON");
    assert_eq!(original["key"], "big");
    let on_topic = delivered(&stack, "user-events").await;
    assert!(
        on_topic.contains(&first_id) && on_topic.contains(&second_id),
        "{on_topic:?}"
    );
    assert_eq!(on_topic.len(), 2, "the oversized event must not reach the topic");
    assert!(entries(&stack).await.is_empty());

    // Outbox numbers are details: for admins only.
    let health = stack.user_with_id(ADMIN).await.client.get("/health").await;
    assert_eq!(
        (
            health.body["outboxBacklog"].as_u64(),
            health.body["outboxQuarantined"].as_u64()
        ),
        (Some(0), Some(1)),
        "{}",
        health.body
    );
}

#[tokio::test]
async fn an_event_for_an_unknown_topic_is_quarantined_and_the_events_after_it_are_relayed() {
    let stack = Stack::start().await;
    let (lost, _) = record("no-such-topic", "u1", 10);
    let (next, next_id) = record("user-events", "u1", 10);
    outbox::park_all(&stack.state.store, &[lost, next]).await.expect("park");

    let report = stack.relay().await;
    assert_eq!((report.relayed, report.quarantined, report.remaining), (1, 1, 0));
    let quarantined = outbox::quarantined(&stack.state.store, 10).await.expect("quarantine");
    assert_eq!(quarantined.len(), 1);
    assert_eq!(quarantined[0].reason, "topic no-such-topic does not exist");
    assert!(quarantined[0].entry.contains("\"topic\":\"no-such-topic\""));
    assert_eq!(delivered(&stack, "user-events").await, vec![next_id]);
    assert!(entries(&stack).await.is_empty());
}

#[tokio::test]
async fn an_unreadable_entry_is_quarantined_in_the_same_format() {
    let stack = Stack::start().await;
    let _: i64 = stack
        .state
        .store
        .conn()
        .rpush(keys::OUTBOX, "not json")
        .await
        .expect("RPUSH");
    let (next, next_id) = record("user-events", "u1", 10);
    outbox::park(&stack.state.store, &next).await.expect("park");

    let report = stack.relay().await;
    assert_eq!((report.relayed, report.quarantined), (1, 1));
    let quarantined = outbox::quarantined(&stack.state.store, 10).await.expect("quarantine");
    assert_eq!(quarantined[0].entry, "not json");
    assert!(
        quarantined[0].reason.starts_with("unreadable outbox entry"),
        "{}",
        quarantined[0].reason
    );
    assert_eq!(delivered(&stack, "user-events").await, vec![next_id]);
}

#[tokio::test]
async fn with_the_broker_down_the_relay_keeps_every_entry_in_order_and_quarantines_nothing() {
    let mut stack = Stack::start_with(&[("KAFKA_PRODUCE_TIMEOUT_MS", "500")]).await;
    // An unknown topic first: an outage must never look like "this topic does not exist".
    let records: Vec<OutgoingRecord> = [("no-such-topic", "a"), ("user-events", "b"), ("user-events", "c")]
        .into_iter()
        .map(|(topic, key)| record(topic, key, 10).0)
        .collect();
    outbox::park_all(&stack.state.store, &records).await.expect("park");
    let before = entries(&stack).await;
    stack.broker.stop();

    let report = stack.relay().await;
    assert_eq!((report.relayed, report.quarantined, report.remaining), (0, 0, 3));
    assert_eq!(entries(&stack).await, before);
    let backlog = outbox::backlog(&stack.state.store).await.expect("backlog");
    assert_eq!((backlog.waiting, backlog.quarantined), (3, 0));
}

#[tokio::test]
async fn the_remove_script_pops_only_head_entries_that_match_while_the_lock_is_held() {
    let stack = Stack::start().await;
    let store = &stack.state.store;
    let records: Vec<OutgoingRecord> = ["a", "b", "c"].iter().map(|k| record("user-events", k, 10).0).collect();
    outbox::park_all(store, &records).await.expect("park");
    let parked = entries(&stack).await;
    let (a, b, c) = (parked[0].clone(), parked[1].clone(), parked[2].clone());
    let _: () = store.conn().set(keys::OUTBOX_LOCK, "mine").await.expect("SET lock");

    // A stale expectation (the head is a, not b) removes nothing.
    let stale = outbox::remove_handled(store, "mine", &[Handled::Sent(b.clone())])
        .await
        .expect("script");
    assert_eq!((stale.sent, stale.quarantined), (0, 0));
    assert_eq!(entries(&stack).await, parked);

    // a matches, then the expectation (c) differs from the head (b): only a goes.
    let quarantine_c = Handled::Quarantined {
        entry: c.clone(),
        reason: "test".into(),
    };
    let partial = outbox::remove_handled(store, "mine", &[Handled::Sent(a), quarantine_c.clone()])
        .await
        .expect("script");
    assert_eq!(
        partial,
        Removed {
            lock_held: true,
            sent: 1,
            quarantined: 0
        }
    );
    assert_eq!(entries(&stack).await, vec![b.clone(), c.clone()]);
    assert!(outbox::quarantined(store, 10).await.expect("quarantine").is_empty());

    // Someone else's lock, or none at all: nothing is removed.
    let theirs = outbox::remove_handled(store, "not-mine", &[Handled::Sent(b.clone())])
        .await
        .expect("script");
    assert!(!theirs.lock_held);
    let _: i64 = store.conn().del(keys::OUTBOX_LOCK).await.expect("DEL lock");
    let expired = outbox::remove_handled(store, "mine", &[Handled::Sent(b.clone())])
        .await
        .expect("script");
    assert!(!expired.lock_held);
    assert_eq!(entries(&stack).await, vec![b, c]);
}

#[tokio::test]
async fn the_remove_script_checks_key_types_before_its_first_write() {
    let stack = Stack::start().await;
    let store = &stack.state.store;
    let (lost, _) = record("no-such-topic", "u1", 10);
    let (next, _) = record("user-events", "u2", 10);
    outbox::park_all(store, &[next, lost]).await.expect("park");
    let before = entries(&stack).await;
    let _: () = store.conn().set(keys::OUTBOX_QUARANTINE, "oops").await.expect("SET");

    let outcome = outbox::relay(store, &stack.state.producer, 100).await;
    assert!(outcome.is_err(), "{outcome:?}");
    // The sent head entry was not popped either: the script failed before any write.
    assert_eq!(entries(&stack).await, before);
    let lock: Option<String> = store.conn().get(keys::OUTBOX_LOCK).await.expect("GET lock");
    assert_eq!(lock, None, "the relay releases its lock even when it fails");
}

#[tokio::test]
async fn a_relay_run_past_its_deadline_stops_and_reports_the_remainder() {
    let stack = Stack::start().await;
    let records: Vec<OutgoingRecord> = ["a", "b"].iter().map(|k| record("user-events", k, 10).0).collect();
    outbox::park_all(&stack.state.store, &records).await.expect("park");

    let stopped = outbox::relay_within(&stack.state.store, &stack.state.producer, 100, Duration::ZERO)
        .await
        .expect("relay");
    assert_eq!((stopped.relayed, stopped.remaining), (0, 2));
    let next = stack.relay().await;
    assert_eq!((next.relayed, next.remaining), (2, 0));
}

/// `Timeout:` of one resource in template.yaml, else the Globals one. A line scan, not a
/// YAML parser: the test crate has no YAML dependency, and SAM's layout is fixed
/// (resource ids indented two spaces, their properties deeper).
fn function_timeout(template: &str, function: &str) -> Option<u64> {
    let timeout_of = |line: &str| line.trim().strip_prefix("Timeout:")?.trim().parse().ok();
    let is_next_block = |line: &str| {
        let indent = line.len() - line.trim_start().len();
        !line.trim().is_empty() && !line.trim_start().starts_with('#') && indent <= 2
    };
    let own = template
        .lines()
        .skip_while(|l| l.trim_end() != format!("  {function}:"))
        .skip(1)
        .take_while(|l| !is_next_block(l))
        .find_map(timeout_of);
    own.or_else(|| {
        template
            .lines()
            .skip_while(|l| l.trim_end() != "Globals:")
            .skip(1)
            .take_while(|l| l.is_empty() || l.starts_with(' '))
            .find_map(timeout_of)
    })
}

#[test]
fn the_relay_lock_outlives_the_relay_function_and_the_run_ends_before_its_timeout() {
    let path = local_gateway::default_template_path();
    let template = std::fs::read_to_string(&path).expect("template.yaml");
    let timeout = Duration::from_secs(function_timeout(&template, "OutboxRelayFunction").expect("relay Timeout"));
    assert!(
        timeout < outbox::LOCK_TTL,
        "lock TTL {:?} must outlive the function timeout {timeout:?}",
        outbox::LOCK_TTL
    );
    assert!(
        outbox::RUN_DEADLINE < timeout,
        "run deadline {:?} must end before the function timeout {timeout:?}",
        outbox::RUN_DEADLINE
    );
}

#[test]
fn the_template_scan_prefers_a_functions_own_timeout_over_the_global_one() {
    let template = "Globals:\n  Function:\n    Timeout: 10\nResources:\n  A:\n    Properties:\n      Timeout: 60\n  B:\n    Properties:\n      MemorySize: 1\n";
    assert_eq!(function_timeout(template, "A"), Some(60));
    assert_eq!(function_timeout(template, "B"), Some(10));
}
