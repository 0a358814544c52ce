//! Cold start and concurrent throughput of a real bootstrap (the auth function) under the
//! Lambda Runtime API emulator (`devconnect_tests::runtime_api`), against a real
//! redis-server and tansu, as issue 14 asks (targets 6 and 8):
//!
//!     cargo bench -p devconnect-tests --bench cold_start
//!     cargo bench -p devconnect-tests --bench cold_start --profile profiling   (fast relink)
//!     COLD_STARTS=30 BENCH_SECS=5 cargo bench ...                  (runs and seconds per row)
//!
//! What it prints:
//!
//! - exec to the first `next` poll (init: config, clients, Redis connection), and the
//!   bootstrap's CPU time up to then (/proc/<pid>/task/*/schedstat, nanoseconds);
//! - the first invocation after that (GET /profile with a valid token: auth, rate limit
//!   and profile read, every connection still cold);
//! - the same init with endpoint discovery against the local AWS double (moto): the
//!   bootstrap's explicit-endpoint init plus what `discovery::resolve` costs when it loads
//!   the AWS configuration and calls DescribeReplicationGroups from scratch (moto's group
//!   names an address that does not exist here, so a bootstrap cannot connect to it);
//! - requests/s of one execution environment with `AWS_LAMBDA_MAX_CONCURRENCY` workers
//!   (Lambda Managed Instances), the load coming from as many callers, and the
//!   bootstrap's CPU per request.
//!
//! The emulator and the load run in this process on the same cores as the bootstrap, so
//! requests/s is a lower bound of what one environment sustains; CPU per request is the
//! bootstrap's own.

use std::{
    collections::HashMap,
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};

use devconnect::{config::Config, discovery};
use devconnect_tests::{
    runtime_api::{http_event, RuntimeApi},
    servers::{Broker, MotoServer, RedisServer},
    stack::TOPICS,
};
use futures::future::join_all;
use serde_json::{json, Value};

const BOOTSTRAP: &str = env!("CARGO_BIN_EXE_auth-bootstrap");
const INIT_TIMEOUT: Duration = Duration::from_secs(20);

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// CPU time the process has run, all its threads (the tokio workers too), from the
/// scheduler: nanosecond resolution, unlike /proc/<pid>/stat.
fn cpu_ns(pid: u32) -> Option<u64> {
    let threads = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let on_cpu = |path: std::path::PathBuf| -> Option<u64> {
        std::fs::read_to_string(path.join("schedstat"))
            .ok()?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    };
    Some(threads.flatten().filter_map(|t| on_cpu(t.path())).sum())
}

/// Sorted samples: min, median, max.
fn spread(mut samples: Vec<f64>) -> (f64, f64, f64) {
    samples.sort_by(f64::total_cmp);
    (samples[0], samples[samples.len() / 2], samples[samples.len() - 1])
}

fn row(what: &str, unit: &str, samples: Vec<f64>, target: &str) {
    let (min, median, max) = spread(samples);
    println!("| {what} | {median:.2} {unit} | {min:.2} - {max:.2} {unit} | {target} |");
}

fn profile_event(token: &str) -> Value {
    let auth = format!("Bearer {token}");
    http_event("GET", "/profile", &[("authorization", auth.as_str())], None)
}

fn status_of(answer: &Value) -> u64 {
    answer["statusCode"].as_u64().unwrap_or(0)
}

struct Servers {
    redis: RedisServer,
    broker: Broker,
}

impl Servers {
    fn vars(&self, extra: &[(&'static str, String)]) -> Vec<(&'static str, String)> {
        let mut vars = vec![
            ("REDIS_URL", self.redis.url()),
            ("KAFKA_BROKERS", self.broker.address()),
            ("RATE_LIMIT_ANONYMOUS", "100000000".into()),
            ("RATE_LIMIT_FREE", "100000000".into()),
        ];
        vars.extend(extra.iter().cloned());
        vars
    }
}

fn borrowed<'a>(vars: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    vars.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// Signs one user up through a bootstrap, for the token the measured calls use.
async fn token(servers: &Servers) -> String {
    let api = RuntimeApi::start().await.expect("emulator");
    let vars = servers.vars(&[]);
    let _child = api.spawn(BOOTSTRAP, "auth", &borrowed(&vars)).expect("bootstrap");
    api.polls(1, INIT_TIMEOUT).await.expect("init");
    let signup = json!({"email": "bench@example.com", "password": "correct horse battery", "firstName": "B", "lastName": "Bench"});
    let event = http_event(
        "POST",
        "/auth/signup",
        &[("content-type", "application/json")],
        Some(&signup.to_string()),
    );
    let answer = api.invoke(&event).await.expect("signup").json().expect("signup answer");
    assert_eq!(status_of(&answer), 201, "{answer}");
    let body: Value = serde_json::from_str(answer["body"].as_str().unwrap()).unwrap();
    body["token"].as_str().unwrap().to_string()
}

struct ColdStart {
    to_first_poll_ms: f64,
    init_cpu_ms: f64,
    first_invocation_ms: f64,
}

async fn cold_start(servers: &Servers, token: &str) -> ColdStart {
    let api = RuntimeApi::start().await.expect("emulator");
    let vars = servers.vars(&[]);
    let exec = Instant::now();
    let child = api.spawn(BOOTSTRAP, "auth", &borrowed(&vars)).expect("bootstrap");
    let first_poll = api.polls(1, INIT_TIMEOUT).await.expect("first poll");
    let pid = child.id().expect("running");
    let init_cpu = cpu_ns(pid).unwrap_or(0);
    let sent = Instant::now();
    let answer = api.invoke(&profile_event(token)).await.expect("first invocation");
    let first_invocation = sent.elapsed();
    assert_eq!(status_of(&answer.json().expect("answer")), 200);
    ColdStart {
        to_first_poll_ms: (first_poll - exec).as_secs_f64() * 1e3,
        init_cpu_ms: init_cpu as f64 / 1e6,
        first_invocation_ms: first_invocation.as_secs_f64() * 1e3,
    }
}

/// `discovery::resolve` from scratch, as a cold bootstrap runs it: the AWS configuration
/// loaded from the environment, one DescribeReplicationGroups call to moto.
async fn discovery_ms(moto: &MotoServer, runs: u64) -> Vec<f64> {
    // The variables a function's role and the template give it, pointed at moto.
    // Set on this (current-thread) runtime's only thread; the bootstraps never see them
    // (RuntimeApi::spawn clears their environment).
    for (k, v) in [
        ("AWS_ENDPOINT_URL", moto.url()),
        ("AWS_ACCESS_KEY_ID", "testing".into()),
        ("AWS_SECRET_ACCESS_KEY", "testing".into()),
        ("AWS_REGION", "us-east-1".into()),
    ] {
        std::env::set_var(k, v);
    }
    let aws = devconnect::aws_http::config_loader().load().await;
    aws_sdk_elasticache::Client::new(&aws)
        .create_replication_group()
        .replication_group_id("dc-cold")
        .replication_group_description("cold start bench")
        .engine("redis")
        .cache_node_type("cache.t4g.micro")
        .num_cache_clusters(1)
        .send()
        .await
        .expect("CreateReplicationGroup on moto");
    let vars = HashMap::from([
        ("ELASTICACHE_REPLICATION_GROUP_ID".to_string(), "dc-cold".to_string()),
        ("KAFKA_BROKERS".to_string(), "127.0.0.1:9092".to_string()),
    ]);
    let config = Config::from_map(&vars).expect("config");
    let mut samples = Vec::new();
    for _ in 0..runs {
        let start = Instant::now();
        discovery::resolve(&config).await.expect("discovery against moto");
        samples.push(start.elapsed().as_secs_f64() * 1e3);
    }
    samples
}

/// One environment with `workers` concurrent invocations, as many callers, `secs` long.
async fn throughput(servers: &Servers, token: &str, workers: u64, secs: u64) -> (f64, f64) {
    let api = RuntimeApi::start().await.expect("emulator");
    let vars = servers.vars(&[("AWS_LAMBDA_MAX_CONCURRENCY", workers.to_string())]);
    let child = api.spawn(BOOTSTRAP, "auth", &borrowed(&vars)).expect("bootstrap");
    api.polls(workers as usize, INIT_TIMEOUT)
        .await
        .expect("all workers polling");
    let pid = child.id().expect("running");
    let event = profile_event(token);
    // Warm every worker's connections first.
    join_all((0..workers).map(|_| api.invoke(&event))).await;
    let served = AtomicU64::new(0);
    let failed = AtomicU64::new(0);
    let cpu0 = cpu_ns(pid).unwrap_or(0);
    let start = Instant::now();
    let end = start + Duration::from_secs(secs);
    join_all((0..workers).map(|_| async {
        while Instant::now() < end {
            match api.invoke(&event).await.ok().and_then(|o| o.json().ok()) {
                Some(answer) if status_of(&answer) == 200 => served.fetch_add(1, Ordering::Relaxed),
                _ => failed.fetch_add(1, Ordering::Relaxed),
            };
        }
    }))
    .await;
    let elapsed = start.elapsed().as_secs_f64();
    let cpu = cpu_ns(pid).unwrap_or(0).saturating_sub(cpu0) as f64;
    let served = served.into_inner();
    assert_eq!(failed.into_inner(), 0, "every answer must be a 200");
    (served as f64 / elapsed, cpu / 1e3 / served.max(1) as f64)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let runs = env_number("COLD_STARTS", 15);
    let secs = env_number("BENCH_SECS", 3);
    let servers = Servers {
        redis: RedisServer::start().await.expect("redis-server"),
        broker: Broker::start(&TOPICS).await.expect("tansu"),
    };
    let token = token(&servers).await;

    let mut to_poll = Vec::new();
    let mut init_cpu = Vec::new();
    let mut first = Vec::new();
    for _ in 0..runs {
        let c = cold_start(&servers, &token).await;
        to_poll.push(c.to_first_poll_ms);
        init_cpu.push(c.init_cpu_ms);
        first.push(c.first_invocation_ms);
    }
    let moto = MotoServer::start().await.expect("moto_server");
    let discovery = discovery_ms(&moto, runs).await;
    let (_, poll_median, _) = spread(to_poll.clone());
    let with_discovery: Vec<f64> = discovery.iter().map(|d| d + poll_median).collect();

    println!("Cold start of the auth bootstrap ({runs} runs; median, min - max):");
    println!();
    println!("| measure | median | range | target |");
    println!("|---|---|---|---|");
    row(
        "exec to first `next` poll, explicit endpoints",
        "ms",
        to_poll,
        "<= 20 ms",
    );
    row("bootstrap CPU until then", "ms", init_cpu, "");
    row("first invocation (GET /profile) after that", "ms", first, "<= 5 ms");
    row(
        "discovery from scratch (moto, DescribeReplicationGroups)",
        "ms",
        discovery,
        "",
    );
    row(
        "exec to first poll with discovery (median init + discovery)",
        "ms",
        with_discovery,
        "",
    );
    println!();
    println!("One execution environment, GET /profile, {secs} s per row:");
    println!();
    println!("| AWS_LAMBDA_MAX_CONCURRENCY | requests/s | bootstrap CPU per request |");
    println!("|---|---|---|");
    for workers in [1, 8, 32] {
        let (rate, cpu_us) = throughput(&servers, &token, workers, secs).await;
        println!("| {workers} | {rate:.0} | {cpu_us:.0} µs |");
    }
}
