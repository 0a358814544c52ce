//! Hung dependencies under load. A paused process (SIGSTOP) keeps its sockets open and
//! even accepts new TCP connections, but answers nothing: the failure that a connect
//! error never reveals and that only timeouts contain. Ten clients keep sending
//! messages between connected users over HTTP while the broker or Redis hangs; every
//! request must still be answered quickly, no accepted message may lose its event, and
//! the stack must recover by itself once the dependency answers again.
//!
//! Load is bounded: fixed senders, one request per sender every [`PACE`], a fixed
//! duration, 127.0.0.1 only.

use std::{
    collections::{BTreeMap, HashSet},
    time::{Duration, Instant},
};

use devconnect::events::EventType;
use devconnect_tests::{social::User, stack::skip_outage_test_on_cluster, Client, Stack};
use futures::future::join_all;
use serde_json::json;

/// Concurrent senders, each with its own connected receiver.
const SENDERS: usize = 10;

/// Each sender sends one message per tick: about 100 requests/s in all, enough to
/// have requests in flight at every moment of a hang, little enough for a shared box.
const PACE: Duration = Duration::from_millis(100);

/// Generous limits, so the load measures the hang and not the rate limiter.
const VARS: [(&str, &str); 2] = [("RATE_LIMIT_FREE", "100000"), ("RATE_LIMIT_ANONYMOUS", "100000")];

/// One request of the load, timed from the test's origin.
#[derive(Debug, Clone)]
struct Sample {
    started: Duration,
    latency: Duration,
    status: u16,
    /// `error.code` of a refusal.
    code: Option<String>,
    /// `<from>/<to>/<id>` of an accepted message (ids are stream ids, unique per conversation only).
    message_id: Option<String>,
}

impl Sample {
    fn finished(&self) -> Duration {
        self.started + self.latency
    }
}

/// A user with a fresh UUIDv7-shaped id, written straight to Redis (no password hashing).
async fn quick_user(stack: &Stack, n: usize) -> User {
    stack
        .user_with_id(&format!("0190c3a4-0000-7000-8000-{:012x}", 0xbeef_0000 + n))
        .await
}

/// [`SENDERS`] senders, each connected to its own receiver; returns (sender's client, receiver id).
async fn connected_pairs(stack: &Stack) -> Vec<(Client, String)> {
    let mut pairs = Vec::new();
    for i in 0..SENDERS {
        let sender = quick_user(stack, 2 * i).await;
        let receiver = quick_user(stack, 2 * i + 1).await;
        stack.connect(&sender, &receiver).await;
        pairs.push((sender.client, receiver.id));
    }
    pairs
}

/// One sender: a message to `to` every [`PACE`] until `duration` after `origin`.
async fn send_for(client: Client, to: String, origin: Instant, duration: Duration) -> Vec<Sample> {
    let mut ticks = tokio::time::interval(PACE);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut samples = Vec::new();
    while origin.elapsed() < duration {
        ticks.tick().await;
        let started = origin.elapsed();
        let reply = client
            .post(
                &format!("/messages/{to}"),
                json!({ "text": format!("load {}", samples.len()) }),
            )
            .await;
        let (message_id, code) = match reply.status {
            201 => (message_key(&reply.body["message"]), None),
            _ => (None, Some(reply.error_code().to_string())),
        };
        samples.push(Sample {
            started,
            latency: origin.elapsed() - started,
            status: reply.status,
            code,
            message_id,
        });
    }
    samples
}

/// Starts every sender for `duration`; await the handle for all their samples.
fn start_load(
    pairs: Vec<(Client, String)>,
    origin: Instant,
    duration: Duration,
) -> tokio::task::JoinHandle<Vec<Sample>> {
    tokio::spawn(async move {
        let senders = pairs
            .into_iter()
            .map(|(client, to)| tokio::spawn(send_for(client, to, origin, duration)));
        join_all(senders)
            .await
            .into_iter()
            .flat_map(|joined| joined.expect("a sender panicked"))
            .collect()
    })
}

fn max_latency(samples: &[Sample]) -> Duration {
    samples.iter().map(|s| s.latency).max().unwrap_or_default()
}

fn statuses(samples: &[Sample]) -> BTreeMap<u16, usize> {
    let mut counts = BTreeMap::new();
    for s in samples {
        *counts.entry(s.status).or_insert(0) += 1;
    }
    counts
}

/// `<from>/<to>/<id>` of a message view (a reply's `message`, an event's `data`).
fn message_key(view: &serde_json::Value) -> Option<String> {
    let field = |name: &str| view[name].as_str();
    Some(format!(
        "{}/{}/{}",
        field("fromUserId")?,
        field("toUserId")?,
        field("id")?
    ))
}

/// Keys ([`message_key`]) of the MESSAGE_SENT events on message-events.
async fn sent_event_ids(stack: &Stack) -> HashSet<String> {
    stack
        .events("message-events")
        .await
        .into_iter()
        .filter(|e| e.envelope.event_type == EventType::MessageSent)
        .filter_map(|e| message_key(&e.envelope.data))
        .collect()
}

/// Accepted message ids still missing from message-events, after polling up to `limit`
/// for the outbox relay (every second) to drain what the hang parked.
async fn missing_events(stack: &Stack, accepted: &HashSet<String>, limit: Duration) -> Vec<String> {
    let deadline = Instant::now() + limit;
    loop {
        let delivered = sent_event_ids(stack).await;
        let missing: Vec<String> = accepted.difference(&delivered).cloned().collect();
        if missing.is_empty() || Instant::now() > deadline {
            return missing;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_that_hangs_under_load_delays_no_request_and_loses_no_event() {
    if skip_outage_test_on_cluster("a_broker_that_hangs_under_load_delays_no_request_and_loses_no_event") {
        return;
    }
    let stack = Stack::start_full(&VARS).await;
    let pairs = connected_pairs(&stack).await;
    let origin = Instant::now();
    let load = start_load(pairs, origin, Duration::from_secs(20));

    tokio::time::sleep(Duration::from_secs(5)).await;
    stack.broker.pause().expect("pause tansu");
    let paused_at = origin.elapsed();
    tokio::time::sleep(Duration::from_secs(5)).await;
    stack.broker.resume().expect("resume tansu");
    let resumed_at = origin.elapsed();

    let samples = load.await.expect("load");
    let accepted: HashSet<String> = samples.iter().filter_map(|s| s.message_id.clone()).collect();
    let drain_started = Instant::now();
    let missing = missing_events(&stack, &accepted, Duration::from_secs(30)).await;
    eprintln!(
        "broker hang {paused_at:?}..{resumed_at:?}: {} requests answered, statuses {:?}, max latency {:?}, \
         {} accepted, {} events lost (relay drained in {:?})",
        samples.len(),
        statuses(&samples),
        max_latency(&samples),
        accepted.len(),
        missing.len(),
        drain_started.elapsed()
    );
    assert!(samples.len() >= SENDERS * 50, "too little load: {}", samples.len());
    let created = samples.iter().filter(|s| s.status == 201).count();
    assert_eq!(accepted.len(), created, "every 201 names one distinct message");
    assert!(
        max_latency(&samples) < Duration::from_secs(3),
        "slowest request took {:?}",
        max_latency(&samples)
    );
    let refused: Vec<&Sample> = samples.iter().filter(|s| s.status != 201).collect();
    assert!(refused.is_empty(), "a broker hang must not fail requests: {refused:?}");
    assert!(
        missing.is_empty(),
        "{} accepted messages have no event: {missing:?}",
        missing.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_that_hangs_under_load_gets_quick_503s_and_requests_recover_by_themselves() {
    if skip_outage_test_on_cluster("redis_that_hangs_under_load_gets_quick_503s_and_requests_recover_by_themselves") {
        return;
    }
    let stack = Stack::start_full(&VARS).await;
    let pairs = connected_pairs(&stack).await;
    let origin = Instant::now();
    let load = start_load(pairs, origin, Duration::from_secs(16));

    tokio::time::sleep(Duration::from_secs(5)).await;
    stack.redis.pause().expect("pause redis-server");
    let paused_at = origin.elapsed();
    tokio::time::sleep(Duration::from_secs(3)).await;
    stack.redis.resume().expect("resume redis-server");
    let resumed_at = origin.elapsed();

    let samples = load.await.expect("load");
    let during: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.started >= paused_at && s.finished() <= resumed_at)
        .collect();
    let first_success_after = samples
        .iter()
        .filter(|s| s.started >= resumed_at && s.status == 201)
        .map(|s| s.finished() - resumed_at)
        .min();
    let recovered_by = Duration::from_secs(5);
    let late_failures: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.started >= resumed_at + recovered_by && s.status != 201)
        .collect();
    eprintln!(
        "redis hang {paused_at:?}..{resumed_at:?}: {} requests answered, statuses {:?}, max latency {:?} \
         (during the hang: {} requests, statuses {:?}, max latency {:?}); first 201 {:?} after resume",
        samples.len(),
        statuses(&samples),
        max_latency(&samples),
        during.len(),
        statuses(&during.iter().map(|s| (*s).clone()).collect::<Vec<_>>()),
        during.iter().map(|s| s.latency).max().unwrap_or_default(),
        first_success_after
    );
    assert!(!during.is_empty(), "no request ran entirely inside the hang");
    assert!(
        max_latency(&samples) < Duration::from_secs(2),
        "slowest request took {:?}",
        max_latency(&samples)
    );
    let wrong: Vec<&&Sample> = during
        .iter()
        .filter(|s| s.status != 503 || s.code.as_deref() != Some("service_unavailable"))
        .collect();
    assert!(wrong.is_empty(), "requests during the hang must get 503: {wrong:?}");
    let first = first_success_after.expect("no request succeeded after Redis came back");
    assert!(first < recovered_by, "first success {first:?} after resume");
    assert!(
        late_failures.is_empty(),
        "still failing {recovered_by:?} after resume: {late_failures:?}"
    );
}
