//! CPU cost per request of the local stack, as issue 14 measures it: 50 concurrent HTTP
//! connections against the local gateway (200 signed-up users, release build), a bounded
//! time per route, and per route: requests/s, gateway CPU per request, Redis CPU per
//! request; the broker's CPU per message sent (emulated MSK triggers included) against
//! its CPU per record from a plain producer; and the stack's idle CPU. Idle and the
//! plain producer are measured first, on a quiet broker: after the message load the
//! triggers keep the broker busy for a long time.
//!
//!     cargo bench -p devconnect-tests --bench cpu_cost
//!     BENCH_SECS=5 cargo bench -p devconnect-tests --bench cpu_cost     (seconds per route)
//!     BENCH_ROUTES=profile,presence cargo bench ...    (only the routes whose name contains one
//!                                                       of these; skips the idle and broker parts)
//!
//! The load thread is named `load`, so a profile of this process can leave it out
//! (`perf report --comm tokio-runtime-w`).
//!
//! The HTTP API's throttling (template.yaml `HttpApiThrottling*`, emulated by the local
//! gateway) would answer most of this load with 429, so the bench lifts it the way a
//! developer would: `LOCAL_PARAMETER_OVERRIDES` (unless already set). Only 2xx answers
//! count as served; a row whose answers are mostly non-2xx is refused, not printed.
//!
//! How CPU is read: the gateway runs in this process (the harness's `Stack::start_full`:
//! routes, consumers and emulated MSK triggers, as `./infra/local/run` serves them), and
//! the load generator runs on its own OS thread with its own single-threaded runtime.
//! Gateway CPU = this process's utime+stime (/proc/self/stat) minus the load thread's
//! (/proc/thread-self/stat, read on that thread). Redis CPU = `INFO cpu`
//! used_cpu_user+used_cpu_sys deltas. Broker CPU = /proc/<tansu pid>/stat, for POST
//! /messages from the start of the load until the triggers have worked the messages off
//! (broker CPU back near its idle rate; at most 40 s, else the figure is printed as a
//! lower bound), minus the idle rate over that whole window, divided by the messages
//! accepted (2xx); a message is one produced record, so what it costs beyond a plain
//! produce is the triggers' share. The requests the emulated triggers sent the broker
//! (record fetches, watermark refreshes) are counted in the gateway
//! (`local_gateway::msk::broker_requests`) and printed idle and per message.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use devconnect_tests::{social::User, Stack};
use futures::StreamExt;
use local_gateway::msk::broker_requests;
use rskafka::{
    client::partition::{Compression, UnknownTopicHandling},
    record::Record,
};
use serde_json::json;

const CONNECTIONS: usize = 50;
const USERS: usize = 200;
/// Lifts the HTTP API throttling for the bench (see the module docs).
const OVERRIDES: &str = "HttpApiThrottlingRateLimit=1000000 HttpApiThrottlingBurstLimit=1000000";
const LIMITS: [(&str, &str); 2] = [
    ("RATE_LIMIT_FREE", "1000000000"),
    ("RATE_LIMIT_ANONYMOUS", "1000000000"),
];

/// One request of the load: method, path, body, bearer token.
type Request = (reqwest::Method, String, Vec<u8>, String);

/// A row of the table: its name, its requests (one per user), and the presence path every
/// user POSTs before it, if any.
type Route<'a> = (&'a str, Arc<Vec<Request>>, Option<&'a str>);

/// utime+stime in seconds from a /proc stat line.
fn stat_cpu(path: &str) -> f64 {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = text.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields
        .get(11)
        .zip(fields.get(12))
        .map(|(u, s)| u.parse::<f64>().unwrap_or(0.0) + s.parse::<f64>().unwrap_or(0.0))
        .unwrap_or(0.0);
    ticks / clock_ticks()
}

fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// The pid of the process whose command line has every one of `needles`.
fn pid_of(needles: &[&str]) -> Option<u32> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|entry| {
        let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
        let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        needles.iter().all(|n| cmdline.contains(n)).then_some(pid)
    })
}

/// Every user POSTs `path` (`/presence/heartbeat` or `/presence/offline`), 10 at a time.
async fn set_presence(users: &[User], path: &str) {
    futures::stream::iter(users)
        .map(|u| async move {
            let reply = u.client.post(path, json!({})).await;
            assert!(reply.status < 300, "{path}: {}", reply.status);
        })
        .buffer_unordered(10)
        .collect::<Vec<()>>()
        .await;
}

/// What one load run measured.
struct Run {
    /// Every answer, 2xx or not (failed requests included).
    requests: u64,
    /// Non-2xx answers and failed requests.
    errors: u64,
    secs: f64,
    load_cpu: f64,
    p99: Duration,
}

/// Drives `CONNECTIONS` concurrent request loops for `secs` on a thread of its own.
fn drive(base: String, requests: Arc<Vec<Request>>, secs: f64) -> Run {
    std::thread::Builder::new()
        .name("load".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let http = reqwest::Client::builder()
                    .pool_max_idle_per_host(CONNECTIONS)
                    .build()
                    .expect("client");
                let next = Arc::new(AtomicU64::new(0));
                let errors = Arc::new(AtomicU64::new(0));
                let cpu0 = stat_cpu("/proc/thread-self/stat");
                let started = Instant::now();
                let deadline = started + Duration::from_secs_f64(secs);
                let loops = (0..CONNECTIONS).map(|_| {
                    let (http, base, requests, next, errors) = (
                        http.clone(),
                        base.clone(),
                        Arc::clone(&requests),
                        Arc::clone(&next),
                        Arc::clone(&errors),
                    );
                    async move {
                        let mut latencies = Vec::new();
                        while Instant::now() < deadline {
                            let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                            let (method, path, body, token) = &requests[i % requests.len()];
                            let t = Instant::now();
                            let ok = http
                                .request(method.clone(), format!("{base}{path}"))
                                .bearer_auth(token)
                                .header("content-type", "application/json")
                                .body(body.clone())
                                .timeout(Duration::from_secs(10))
                                .send()
                                .await
                                .map(|r| (r.status().as_u16(), r));
                            match ok {
                                Ok((200..=299, r)) => {
                                    let _ = r.bytes().await;
                                }
                                Ok((status, r)) => {
                                    if errors.fetch_add(1, Ordering::Relaxed) == 0 {
                                        let body = r.text().await.unwrap_or_default();
                                        eprintln!("first non-2xx on {path}: {status} {body}");
                                    }
                                }
                                Err(e) => {
                                    if errors.fetch_add(1, Ordering::Relaxed) == 0 {
                                        eprintln!("first failed request on {path}: {e}");
                                    }
                                }
                            }
                            latencies.push(t.elapsed());
                        }
                        latencies
                    }
                });
                let mut latencies: Vec<Duration> = futures::future::join_all(loops).await.concat();
                let secs = started.elapsed().as_secs_f64();
                let load_cpu = stat_cpu("/proc/thread-self/stat") - cpu0;
                latencies.sort();
                Run {
                    requests: latencies.len() as u64,
                    errors: errors.load(Ordering::Relaxed),
                    secs,
                    load_cpu,
                    p99: latencies.get(latencies.len() * 99 / 100).copied().unwrap_or_default(),
                }
            })
        })
        .expect("load thread")
        .join()
        .expect("load thread")
}

impl Run {
    /// 2xx answers.
    fn ok(&self) -> u64 {
        self.requests - self.errors
    }
}

/// A connection without the store's command timeout: the slow log is a big reply.
async fn slow_log_reader(stack: &Stack) -> redis::aio::MultiplexedConnection {
    let client = redis::Client::open(stack.redis.url()).expect("redis url");
    let config = redis::AsyncConnectionConfig::new().set_response_timeout(Some(Duration::from_secs(120)));
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .expect("redis")
}

/// The slow log's EVALSHAs (every call, with the threshold at 0) as (first key, calls,
/// µs) rows, biggest µs first; turns the slow log off again.
async fn script_stats(stack: &Stack) -> Vec<(String, u64, f64)> {
    let (entries,): (Vec<redis::Value>,) = redis::pipe()
        .cmd("SLOWLOG")
        .arg("GET")
        .arg(-1)
        .cmd("CONFIG")
        .arg("SET")
        .arg("slowlog-log-slower-than")
        .arg(-1)
        .ignore()
        .query_async(&mut slow_log_reader(stack).await)
        .await
        .expect("SLOWLOG GET");
    let mut by_key: std::collections::BTreeMap<String, (u64, f64)> = Default::default();
    for entry in entries {
        // [id, time, µs, [command, args...], client, name]
        let Ok((_, _, usec, args)) =
            redis::from_redis_value::<(i64, i64, i64, Vec<String>)>(entry.clone()).or_else(|_| {
                redis::from_redis_value::<(i64, i64, i64, Vec<String>, String, String)>(entry)
                    .map(|(a, b, c, d, _, _)| (a, b, c, d))
            })
        else {
            continue;
        };
        if args.first().is_some_and(|c| c.eq_ignore_ascii_case("EVALSHA")) {
            // The first key's name up to its hash tag, and the script's hash, name the script.
            let first_key = args.get(3).map_or("-", |k| k.split('{').next().unwrap_or(k));
            let sha = args.get(1).map_or("", |h| &h[..h.len().min(8)]);
            let key = format!("{first_key}… ({sha})");
            let row = by_key.entry(key).or_default();
            row.0 += 1;
            row.1 += usec as f64;
        }
    }
    let mut rows: Vec<(String, u64, f64)> = by_key.into_iter().map(|(k, (n, us))| (k, n, us)).collect();
    rows.sort_by(|a, b| b.2.total_cmp(&a.2));
    rows
}

fn us(secs: f64, per: u64) -> f64 {
    secs * 1e6 / per.max(1) as f64
}

fn broker_cpu(pid: Option<u32>) -> Option<f64> {
    pid.map(|p| stat_cpu(&format!("/proc/{p}/stat")))
}

fn main() {
    // The gateway on one thread, as `./infra/local/run` runs it; BENCH_RUNTIME=multi_thread
    // measures it on tokio's worker threads instead, as it ran before.
    let mut runtime = match std::env::var("BENCH_RUNTIME").as_deref() {
        Ok("multi_thread") => tokio::runtime::Builder::new_multi_thread(),
        _ => tokio::runtime::Builder::new_current_thread(),
    };
    runtime.enable_all().build().expect("runtime").block_on(bench());
}

async fn bench() {
    let secs: f64 = std::env::var("BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10.0);
    if std::env::var_os(local_gateway::template::PARAMETER_OVERRIDES_VAR).is_none() {
        std::env::set_var(local_gateway::template::PARAMETER_OVERRIDES_VAR, OVERRIDES);
    }
    let overrides = std::env::var(local_gateway::template::PARAMETER_OVERRIDES_VAR).unwrap_or_default();
    // BENCH_ROUTES: only some routes, without the idle and broker measurements.
    // COMMANDSTATS: Redis's per-command figures per message; also each script's share, from
    // a slow log at threshold 0, which logs every command (scripts' inner ones too) and so
    // inflates Redis's time, most of all a script's. COMMANDSTATS=commands: without it.
    let commandstats = std::env::var_os("COMMANDSTATS").is_some();
    let script_shares = commandstats && std::env::var("COMMANDSTATS").as_deref() != Ok("commands");
    let only: Option<Vec<String>> = std::env::var("BENCH_ROUTES").ok().map(|r| {
        r.split(',')
            .map(str::trim)
            .filter(|w| !w.is_empty())
            .map(String::from)
            .collect()
    });
    let full = only.is_none();
    let stack = Stack::start_full(&LIMITS).await;
    let tansu = match full {
        true => pid_of(&["tansu", "broker", &format!(":{}", stack.broker.port)]),
        false => None,
    };

    // 200 users through POST /auth/signup, paired as connections (0-1, 2-3, ...).
    let users: Vec<User> = futures::stream::iter(0..USERS)
        .map(|i| {
            let stack = &stack;
            async move { stack.user(&format!("cpu{i}")).await }
        })
        .buffered(4)
        .collect()
        .await;
    for pair in users.chunks(2) {
        stack.connect(&pair[0], &pair[1]).await;
    }
    // The broker's CPU per second with nothing sent, subtracted from the load figures below.
    if full {
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    let broker_idle = match tansu {
        Some(pid) => {
            let b0 = stat_cpu(&format!("/proc/{pid}/stat"));
            tokio::time::sleep(Duration::from_secs(5)).await;
            (stat_cpu(&format!("/proc/{pid}/stat")) - b0) / 5.0
        }
        None => 0.0,
    };
    // Idle, before any load: the whole stack (this process = the gateway; the broker) over 10 s.
    let idle = if full { 10.0 } else { 0.0 };
    let (p0, b0, q0) = (stat_cpu("/proc/self/stat"), broker_cpu(tansu), broker_requests());
    tokio::time::sleep(Duration::from_secs_f64(idle)).await;
    let (p1, b1, q1) = (stat_cpu("/proc/self/stat"), broker_cpu(tansu), broker_requests());
    let broker_idle_cpu = b0.zip(b1).map(|(a, b)| b - a).unwrap_or(f64::NAN);
    let idle_line = match full {
        false => "idle: not measured (BENCH_ROUTES)".to_string(),
        true => format!(
            "idle (before the load) over {idle} s: gateway {:.2}% of a core, broker {:.2}%, total {:.2}%; \
         the triggers sent the broker {:.1} watermark refreshes/s and {:.1} record fetches/s",
            100.0 * (p1 - p0) / idle,
            100.0 * broker_idle_cpu / idle,
            100.0 * (p1 - p0 + broker_idle_cpu) / idle,
            (q1.refreshes - q0.refreshes) as f64 / idle,
            (q1.fetches - q0.fetches) as f64 / idle,
        ),
    };

    // The broker: CPU per record from a plain producer (one record per request, 50 at a
    // time, to a topic no trigger reads), against CPU per message sent below.
    let mut plain = None;
    if let Some(pid) = tansu {
        let client = stack.broker.client().await.expect("kafka client");
        let partition = Arc::new(
            client
                .partition_client("dead-letter-events", 0, UnknownTopicHandling::Retry)
                .await
                .expect("partition client"),
        );
        let records = 5_000u64;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let b0 = stat_cpu(&format!("/proc/{pid}/stat"));
        let started = Instant::now();
        futures::stream::iter(0..records)
            .map(|i| {
                let partition = Arc::clone(&partition);
                async move {
                    let record = Record {
                        key: Some(format!("k{i}").into_bytes()),
                        value: Some(vec![b'x'; 400]),
                        headers: Default::default(),
                        timestamp: chrono::Utc::now(),
                    };
                    partition
                        .produce(vec![record], Compression::NoCompression)
                        .await
                        .expect("produce");
                }
            })
            .buffer_unordered(CONNECTIONS)
            .collect::<Vec<()>>()
            .await;
        let elapsed = started.elapsed().as_secs_f64();
        let per_record = us(
            stat_cpu(&format!("/proc/{pid}/stat")) - b0 - elapsed * broker_idle,
            records,
        );
        plain = Some((per_record, records as f64 / elapsed));
    }

    let token = |u: &User| u.client.token().to_string();
    let many = |f: &dyn Fn(usize, &User) -> Request| -> Arc<Vec<Request>> {
        Arc::new(users.iter().enumerate().map(|(i, u)| f(i, u)).collect())
    };
    let get = reqwest::Method::GET;
    let post = reqwest::Method::POST;
    let message = |i: usize, u: &User| {
        let to = &users[i ^ 1].id;
        let body = json!({"text": format!("hello from {i}")}).to_string().into_bytes();
        (post.clone(), format!("/messages/{to}"), body, token(u))
    };
    // A message to an online receiver creates no notification; to an offline one it creates
    // a notification and its email. Each POST /messages row sets every user's presence first.
    let routes: Vec<Route> = vec![
        (
            "GET /profile",
            many(&|_, u| (get.clone(), "/profile".into(), Vec::new(), token(u))),
            None,
        ),
        (
            "GET /users/{id}",
            many(&|i, u| {
                let other = &users[(i + 7) % USERS].id;
                (get.clone(), format!("/users/{other}"), Vec::new(), token(u))
            }),
            None,
        ),
        (
            "GET /presence (10 ids)",
            many(&|i, u| {
                let ids: Vec<&str> = (1..=10).map(|k| users[(i + k) % USERS].id.as_str()).collect();
                (
                    get.clone(),
                    format!("/presence?userIds={}", ids.join(",")),
                    Vec::new(),
                    token(u),
                )
            }),
            None,
        ),
        (
            "POST /presence/heartbeat",
            many(&|_, u| (post.clone(), "/presence/heartbeat".into(), Vec::new(), token(u))),
            None,
        ),
        ("POST /messages/{id}", many(&message), Some("/presence/heartbeat")),
        (
            "POST /messages/{id} (receiver offline)",
            many(&message),
            Some("/presence/offline"),
        ),
    ];

    println!(
        "\n{CONNECTIONS} connections, {USERS} users, {secs} s per route; gateway CPU = process minus load thread; \
         per request = per 2xx answer; {}={overrides}; HTTP throttle in effect: {:?}",
        local_gateway::template::PARAMETER_OVERRIDES_VAR,
        stack.gateway.template.http_throttle,
    );
    println!("broker idle: {:.2}% of a core", broker_idle * 100.0);
    println!("| route | req/s | gateway CPU per request | Redis CPU per request |");
    println!("|---|---|---|---|");
    let mut broker_per_message = None;
    let mut drained_notes: Vec<String> = Vec::new();
    let selected = |name: &str| {
        only.as_ref()
            .is_none_or(|words| words.iter().any(|w| name.contains(w.as_str())))
    };
    for (name, requests, presence) in routes.into_iter().filter(|(name, _, _)| selected(name)) {
        if let Some(path) = presence {
            set_presence(&users, path).await;
        }
        // Let the previous route's (and the presence changes') consumers finish.
        tokio::time::sleep(Duration::from_secs(2)).await;
        if commandstats {
            let _: () = redis::cmd("CONFIG")
                .arg("RESETSTAT")
                .query_async(&mut stack.state.store.conn())
                .await
                .expect("CONFIG RESETSTAT");
        }
        if script_shares {
            let _: () = redis::pipe()
                .cmd("CONFIG")
                .arg("SET")
                .arg("slowlog-log-slower-than")
                .arg(0)
                .arg("slowlog-max-len")
                .arg(1_000_000)
                .cmd("SLOWLOG")
                .arg("RESET")
                .query_async(&mut stack.state.store.conn())
                .await
                .expect("slow log on");
        }
        let (process0, redis0) = (stat_cpu("/proc/self/stat"), stack.redis_cpu_seconds().await);
        let (broker0, requests0) = (broker_cpu(tansu), broker_requests());
        let window = Instant::now();
        // Waited for off the runtime's threads: the gateway keeps serving on all of them.
        let base = stack.base_url.clone();
        let run = tokio::task::spawn_blocking(move || drive(base, requests, secs))
            .await
            .expect("load thread");
        let (process1, redis1) = (stat_cpu("/proc/self/stat"), stack.redis_cpu_seconds().await);
        let gateway = process1 - process0 - run.load_cpu;
        let ok = run.ok();
        // Mostly errors: the row is refused below, and nothing of it is per message served.
        let refused = run.errors * 2 >= run.requests;
        let extra = match name.starts_with("POST /messages") {
            true => {
                // The triggers work the messages off after the load: wait until the
                // broker is back near its idle rate (at most 40 s), and count all of it.
                let mut last = broker_cpu(tansu);
                let mut drained = false;
                for _ in 0..40 {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    let now = broker_cpu(tansu);
                    let quiet = last.zip(now).is_none_or(|(a, b)| b - a < 2.0 * broker_idle + 0.02);
                    last = now;
                    if quiet {
                        drained = true;
                        break;
                    }
                }
                let elapsed = window.elapsed().as_secs_f64();
                let (process2, redis2) = (stat_cpu("/proc/self/stat"), stack.redis_cpu_seconds().await);
                let requests = broker_requests();
                drained_notes.push(format!(
                    "{name} from the load until worked off or the cap ({elapsed:.1} s, drained: {drained}): gateway (consumers included) {:.0} µs, Redis {:.0} µs per message; \
                     the triggers sent the broker {} record fetches and {} watermark refreshes ({:.3} fetches per message)",
                    us(process2 - process0 - run.load_cpu, ok),
                    us(redis2 - redis0, ok),
                    requests.fetches - requests0.fetches,
                    requests.refreshes - requests0.refreshes,
                    (requests.fetches - requests0.fetches) as f64 / ok.max(1) as f64,
                ));
                // The broker ratio (issue 14 target 3) is the first row's, as it always was.
                if let (Some(b0), Some(b1), None, false) = (broker0, last, &broker_per_message, refused) {
                    broker_per_message = Some((us(b1 - b0 - elapsed * broker_idle, ok), drained));
                }
                format!(" (p99 {:.0} ms)", run.p99.as_secs_f64() * 1e3)
            }
            false => String::new(),
        };
        if commandstats {
            eprintln!("{name}: Redis commands per request served ({ok} requests, consumers included)");
            let mut commands: Vec<(String, (u64, f64))> = stack.command_stats().await.into_iter().collect();
            commands.sort_by(|a, b| b.1 .1.total_cmp(&a.1 .1));
            for (command, (calls, usec)) in commands {
                eprintln!(
                    "  {command}: {:.2} calls, {:.1} µs",
                    calls as f64 / ok.max(1) as f64,
                    usec / ok.max(1) as f64
                );
            }
            let scripts = match script_shares {
                true => script_stats(&stack).await,
                false => Vec::new(),
            };
            for (first_key, calls, usec) in scripts {
                eprintln!(
                    "  script on {first_key}: {:.2} calls, {:.1} µs",
                    calls as f64 / ok.max(1) as f64,
                    usec / ok.max(1) as f64
                );
            }
        }
        let errors = match run.errors {
            0 => String::new(),
            n => format!(" [{n} of {} non-2xx]", run.requests),
        };
        if refused {
            println!(
                "| {name} | REFUSED: {} of {} answers non-2xx, the figures would not be per request served | - | - |",
                run.errors, run.requests
            );
            continue;
        }
        println!(
            "| {name} | {:.0}{extra}{errors} | {:.0} µs | {:.0} µs |",
            ok as f64 / run.secs,
            us(gateway, ok),
            us(redis1 - redis0, ok),
        );
    }
    if !drained_notes.is_empty() {
        println!();
    }
    for note in &drained_notes {
        println!("{note}");
    }

    println!("\n{idle_line}");
    if let Some((per_record, rate)) = plain {
        println!(
            "broker (tansu) CPU, plain producer before the load: {per_record:.0} µs per record (400 bytes, {CONNECTIONS} in flight, {rate:.0} records/s)"
        );
        if let Some((per_message, drained)) = broker_per_message {
            println!(
                "broker (tansu) CPU per POST /messages, emulated triggers included: {per_message:.0} µs ({:.1}x a plain produce; \
                 beyond the message's one produce, the triggers: {:.0} µs, {:.1}x){}",
                per_message / per_record,
                per_message - per_record,
                (per_message - per_record) / per_record,
                match drained {
                    true => "",
                    false => " LOWER BOUND: the triggers had not worked the messages off by the cap",
                }
            );
        }
    }
}
