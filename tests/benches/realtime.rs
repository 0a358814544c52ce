//! Realtime benchmark, through the local stack with real WebSocket clients:
//! push latency from HTTP POST /messages to the frame on the receiver's socket, and
//! the pusher's fan-out rate for one batch.
//!
//!     cargo bench -p devconnect-tests --bench realtime

use std::time::{Duration, Instant};

use devconnect::events::EventType;
use devconnect_tests::socket::with_token;
use devconnect_tests::{
    kafka::{batch, bytes, envelope},
    Stack,
};
use futures::StreamExt;
use serde_json::json;
use tokio_tungstenite::connect_async;

#[tokio::main]
async fn main() {
    let stack = Stack::start_full(&[("RATE_LIMIT_FREE", "1000000")]).await;
    let a = stack.user("sender").await;
    let b = stack.user("receiver").await;
    stack.connect(&a, &b).await;
    let (mut socket, _) = connect_async(with_token(&stack.ws_url(), b.client.token()))
        .await
        .unwrap();

    // One message after another, then each after a quiet spell (the triggers' watch has
    // slowed down to its idle pace; a produce in the process wakes it).
    for (label, count, quiet) in [
        ("back to back", 200, Duration::ZERO),
        ("each after 2.5 s of quiet", 8, Duration::from_millis(2_500)),
    ] {
        let mut samples = Vec::new();
        for i in 0..count {
            tokio::time::sleep(quiet).await;
            let text = format!("ping {label} {i}");
            let started = Instant::now();
            a.message(&b.id, &text).await;
            loop {
                let frame = tokio::time::timeout(Duration::from_secs(5), socket.next())
                    .await
                    .expect("no frame")
                    .unwrap()
                    .unwrap();
                if frame.to_text().unwrap_or_default().contains(&text) {
                    break;
                }
            }
            samples.push(started.elapsed());
        }
        samples.sort();
        println!(
            "push latency, POST /messages -> frame on the socket, {label}: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} messages)",
            samples[samples.len() / 2].as_secs_f64() * 1e3,
            samples[samples.len() * 99 / 100].as_secs_f64() * 1e3,
            samples[samples.len() - 1].as_secs_f64() * 1e3,
            samples.len()
        );
    }

    // Fan-out: 100 receivers with 2 sockets each, one batch of 1,000 messages (10 per receiver).
    let mut receivers = Vec::new();
    let mut drains = Vec::new();
    for i in 0..100 {
        let u = stack.user(&format!("fan{i}")).await;
        for _ in 0..2 {
            let (s, _) = connect_async(with_token(&stack.ws_url(), u.client.token()))
                .await
                .unwrap();
            drains.push(tokio::spawn(s.for_each(|_| async {})));
        }
        receivers.push(u.id);
    }
    let values: Vec<Vec<u8>> = (0..1000)
        .map(|i| {
            let to = &receivers[i % receivers.len()];
            bytes(&envelope(
                EventType::MessageSent,
                &a.id,
                json!({"id": format!("{i}-0"), "fromUserId": a.id, "toUserId": to, "text": "fan-out", "sentAt": "2026-01-01T00:00:00.000Z"}),
            ))
        })
        .collect();
    let event = batch("message-events", &values);
    let started = Instant::now();
    let report = stack
        .gateway
        .functions
        .invoke_consumer("RealtimePusherFunction", event)
        .await
        .unwrap();
    let elapsed = started.elapsed();
    let frames = 1000 * 2;
    println!(
        "pusher fan-out: {frames} frames to {} connections in {:.1} ms = {:.0} frames/s (report {report})",
        report["applied"],
        elapsed.as_secs_f64() * 1e3,
        frames as f64 / elapsed.as_secs_f64()
    );
    for d in drains {
        d.abort();
    }
}
