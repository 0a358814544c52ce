//! Consumer benchmark: one 10,000-record MSK batch through each consumer, in-process,
//! against a local redis-server and tansu; throughput and Redis round trips per batch.
//! Also the end-to-end latency from an HTTP request to the visible notification
//! through the emulated MSK trigger.
//!
//!     cargo bench -p devconnect-tests --bench consumers        # BATCH=10000 by default

use std::time::{Duration, Instant};

use devconnect::events::EventType;
use devconnect_tests::{
    kafka::{batch, bytes, envelope},
    Stack,
};
use serde_json::json;

fn records(n: usize) -> Vec<Vec<u8>> {
    // A realistic mix: 1,000 users, requests, acceptances, messages and logins.
    (0..n)
        .map(|i| {
            let (a, b) = (
                format!("0190c3a4-0000-7000-8000-{:012}", i % 1000),
                format!("0190c3a4-0000-7000-8000-{:012}", (i * 7 + 1) % 1000),
            );
            let e = match i % 4 {
                0 => envelope(
                    EventType::ConnectionRequestSent,
                    &a,
                    json!({"id": format!("0190c3a4-0000-7000-9000-{i:012}"), "fromUserId": a, "toUserId": b, "status": "interested", "createdAt": "2026-01-01T00:00:00.000Z"}),
                ),
                1 => envelope(
                    EventType::ConnectionAccepted,
                    &b,
                    json!({"id": format!("0190c3a4-0000-7000-9000-{i:012}"), "fromUserId": a, "toUserId": b, "status": "accepted", "reviewedAt": "2026-01-01T00:00:00.000Z"}),
                ),
                2 => envelope(
                    EventType::MessageSent,
                    &a,
                    json!({"id": format!("{i}-0"), "fromUserId": a, "toUserId": b, "text": "hello there", "sentAt": "2026-01-01T00:00:00.000Z"}),
                ),
                _ => envelope(EventType::UserLogin, &a, json!({"userId": a})),
            };
            bytes(&e)
        })
        .collect()
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::var("BATCH")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let values = records(n);
    println!("| consumer | records | time | records/s | Redis round trips |");
    println!("|---|---|---|---|---|");
    for function in ["AnalyticsConsumerFunction", "NotificationsConsumerFunction"] {
        let stack = Stack::start_counting(&[]).await;
        let warm = batch("message-events", &values[..4]); // loads the Lua script once
        stack.gateway.functions.invoke_consumer(function, warm).await.unwrap();
        let event = batch("message-events", &values);
        let proxy = stack.round_trips.as_ref().unwrap();
        let started = Instant::now();
        let (report, trips) = proxy
            .measure(stack.gateway.functions.invoke_consumer(function, event))
            .await;
        let elapsed = started.elapsed();
        let report = report.unwrap();
        assert_eq!(report["deadLettered"], 0);
        println!(
            "| {function} | {n} | {:.1} ms | {:.0} | {trips} |",
            elapsed.as_secs_f64() * 1e3,
            n as f64 / elapsed.as_secs_f64()
        );
    }

    // End to end: POST /requests/send -> the receiver's GET /notifications shows it.
    let stack = Stack::start_full(&[("RATE_LIMIT_FREE", "100000")]).await;
    let receiver = stack.user("receiver").await;
    let mut samples = Vec::new();
    for i in 0..30 {
        let sender = stack.user(&format!("sender{i}")).await;
        let started = Instant::now();
        sender.send_request("interested", &receiver.id).await;
        loop {
            let r = receiver.client.get("/notifications?limit=1").await;
            if r.body["notifications"][0]["actorId"] == sender.id.as_str() {
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(5), "notification not visible");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        samples.push(started.elapsed());
    }
    samples.sort();
    println!(
        "\nHTTP request -> visible notification through the local stack: p50 {:.1} ms, p99 {:.1} ms ({} requests)",
        samples[samples.len() / 2].as_secs_f64() * 1e3,
        samples[samples.len() * 99 / 100].as_secs_f64() * 1e3,
        samples.len()
    );
}
