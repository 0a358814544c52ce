//! Consumer benchmark: 10,000-record MSK batches through each consumer, in-process,
//! against a local redis-server and tansu; throughput, Redis round trips per batch, and
//! the CPU time each batch costs this process, Redis and the broker (from /proc, so
//! other work on the machine does not count), and Redis's CPU per record to the
//! microsecond (its own `INFO cpu`: Redis is single-threaded, so this is what sizes the
//! cluster). Also the end-to-end latency from an HTTP request to the visible
//! notification through the emulated MSK trigger.
//!
//!     cargo bench -p devconnect-tests --bench consumers        # BATCH=10000 ROUNDS=5 by default
//!
//! With COMMANDSTATS=1, Redis's `INFO commandstats` over each consumer's rounds goes to stderr.
//!
//! Each round is a fresh batch (new event ids, so nothing is a duplicate) over the same
//! 1,000 users; the table gives the range over the rounds and the median records/s.

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

/// CPU time a process has spent so far, summed over its threads from
/// `/proc/<pid>/task/*/schedstat` (nanoseconds, unlike the 10 ms ticks of `stat`);
/// `None` where /proc is missing.
fn cpu(pid: Option<u32>) -> Option<Duration> {
    let dir = match pid {
        Some(pid) => format!("/proc/{pid}/task"),
        None => "/proc/self/task".to_string(),
    };
    let mut total = 0u64;
    for task in std::fs::read_dir(dir).ok()?.flatten() {
        let stat = std::fs::read_to_string(task.path().join("schedstat")).unwrap_or_default();
        total += stat
            .split(' ')
            .next()
            .and_then(|ns| ns.parse::<u64>().ok())
            .unwrap_or(0);
    }
    Some(Duration::from_nanos(total))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn range(values: &mut [f64]) -> String {
    values.sort_by(f64::total_cmp);
    format!("{:.0}–{:.0}", values[0], values[values.len() - 1])
}

#[tokio::main]
async fn main() {
    let env = |name: &str, default: usize| std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default);
    let (n, rounds) = (env("BATCH", 10_000), env("ROUNDS", 5).max(1));
    println!("{rounds} rounds of {n} records; ranges over the rounds, CPU in ms per batch\n");
    println!("| consumer | time (ms) | records/s (median) | records/s (range) | Redis round trips | process CPU | Redis CPU | Redis µs/record (median) | broker CPU |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for function in ["AnalyticsConsumerFunction", "NotificationsConsumerFunction"] {
        let stack = Stack::start_counting(&[]).await;
        let warm = batch("message-events", &records(4)); // loads the Lua scripts once
        stack.gateway.functions.invoke_consumer(function, warm).await.unwrap();
        let proxy = stack.round_trips.as_ref().unwrap();
        // COMMANDSTATS=1: Redis's time per command over the rounds, to stderr.
        let commandstats = std::env::var_os("COMMANDSTATS").is_some();
        if commandstats {
            let _: () = redis::cmd("CONFIG")
                .arg("RESETSTAT")
                .query_async(&mut stack.state.store.conn())
                .await
                .unwrap();
        }
        let (redis_pid, broker_pid) = (stack.redis.pid(), stack.broker.pid());
        let (mut times, mut rates, mut trips, mut own, mut redis, mut broker) =
            (vec![], vec![], vec![], vec![], vec![], vec![]);
        let mut redis_per_record = vec![];
        for _ in 0..rounds {
            let event = batch("message-events", &records(n));
            let redis_before = stack.redis_cpu_seconds().await;
            let before = (cpu(None), cpu(redis_pid), cpu(broker_pid));
            let started = Instant::now();
            let (report, round_trips) = proxy
                .measure(stack.gateway.functions.invoke_consumer(function, event))
                .await;
            let elapsed = started.elapsed();
            let after = (cpu(None), cpu(redis_pid), cpu(broker_pid));
            redis_per_record.push((stack.redis_cpu_seconds().await - redis_before) * 1e6 / n as f64);
            let report = report.unwrap();
            assert_eq!(report["deadLettered"], 0);
            assert_eq!(report["retrying"], 0);
            times.push(ms(elapsed));
            rates.push(n as f64 / elapsed.as_secs_f64());
            trips.push(round_trips as f64);
            let spent = |a: Option<Duration>, b: Option<Duration>| a.zip(b).map_or(f64::NAN, |(a, b)| ms(b - a));
            own.push(spent(before.0, after.0));
            redis.push(spent(before.1, after.1));
            broker.push(spent(before.2, after.2));
            // Let the broker settle (the MSK emulator is not running here; nothing else is).
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        if commandstats {
            let info: String = redis::cmd("INFO")
                .arg("commandstats")
                .query_async(&mut stack.state.store.conn())
                .await
                .unwrap();
            eprintln!("{function} ({rounds} rounds):\n{info}");
        }
        let median = |values: &[f64]| {
            let mut sorted = values.to_vec();
            sorted.sort_by(f64::total_cmp);
            sorted[sorted.len() / 2]
        };
        println!(
            "| {function} | {} | {:.0} | {} | {} | {} | {} | {:.2} | {} |",
            range(&mut times),
            median(&rates),
            range(&mut rates),
            range(&mut trips),
            range(&mut own),
            range(&mut redis),
            median(&redis_per_record),
            range(&mut broker)
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
