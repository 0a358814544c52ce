//! Auth benchmark: per-route handler latency (p50/p99) in-process against a local
//! redis-server and tansu, and Redis round trips per request.
//!
//!     cargo bench -p devconnect-tests --bench auth            # BENCH_ITERS=2000 by default

use std::time::{Duration, Instant};

use devconnect_tests::Stack;
use serde_json::json;

const LIMITS: [(&str, &str); 2] = [("RATE_LIMIT_FREE", "100000000"), ("RATE_LIMIT_ANONYMOUS", "100000000")];

struct Route {
    name: &'static str,
    method: &'static str,
    path: String,
    body: Vec<u8>,
    token: Option<String>,
    iters: usize,
    /// Each iteration needs fresh input (e.g. a new email).
    fresh: Option<fn(usize) -> Vec<u8>>,
}

fn signup_body(i: usize) -> Vec<u8> {
    json!({"email": format!("bench{i}@example.com"), "password": "correct horse battery", "firstName": "B", "lastName": "Ench"})
        .to_string()
        .into_bytes()
}

async fn routes(stack: &Stack, iters: usize) -> Vec<Route> {
    let (me, id) = stack.signed_up("me@example.com").await;
    let token = Some(me.token().to_string());
    me.get(&format!("/users/{id}")).await; // warm the public-profile cache
    let login = json!({"email": "me@example.com", "password": "correct horse battery"})
        .to_string()
        .into_bytes();
    let slow = (iters / 40).max(10); // argon2id routes cost ~tens of ms each
    vec![
        Route {
            name: "GET /profile",
            method: "GET",
            path: "/profile".into(),
            body: vec![],
            token: token.clone(),
            iters,
            fresh: None,
        },
        Route {
            name: "GET /users/{id} (cached)",
            method: "GET",
            path: format!("/users/{id}"),
            body: vec![],
            token: token.clone(),
            iters,
            fresh: None,
        },
        Route {
            name: "PATCH /profile",
            method: "PATCH",
            path: "/profile".into(),
            body: json!({"about": "bench"}).to_string().into_bytes(),
            token: token.clone(),
            iters,
            fresh: None,
        },
        Route {
            name: "POST /auth/login",
            method: "POST",
            path: "/auth/login".into(),
            body: login,
            token: None,
            iters: slow,
            fresh: None,
        },
        Route {
            name: "POST /auth/signup",
            method: "POST",
            path: "/auth/signup".into(),
            body: vec![],
            token: None,
            iters: slow,
            fresh: Some(signup_body),
        },
    ]
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main]
async fn main() {
    let iters: usize = std::env::var("BENCH_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);

    // Round trips: each route twice in a row through the counting proxy; the second call
    // is the steady state (Lua scripts loaded, profile cache warm).
    let counting = Stack::start_counting(&LIMITS).await;
    let counted_routes = routes(&counting, iters).await;
    let proxy = counting.round_trips.as_ref().expect("counting proxy");
    let mut trips = Vec::new();
    for (i, r) in counted_routes.iter().enumerate() {
        let mut n = 0;
        for attempt in 0..2 {
            let body = r
                .fresh
                .map(|f| f(1_000_000 + i * 10 + attempt))
                .unwrap_or_else(|| r.body.clone());
            n = proxy
                .measure(counting.invoke(r.method, &r.path, &body, r.token.as_deref()))
                .await
                .1;
        }
        trips.push(n);
    }

    // Latency: a stack without the proxy.
    let stack = Stack::start_with(&LIMITS).await;
    let routes = routes(&stack, iters).await;
    println!("| route | Redis round trips | p50 | p99 | requests |");
    println!("|---|---|---|---|---|");
    for (route, trips) in routes.iter().zip(trips) {
        let mut samples = Vec::with_capacity(route.iters);
        for i in 0..route.iters {
            let body = route.fresh.map(|f| f(i)).unwrap_or_else(|| route.body.clone());
            let started = Instant::now();
            let response = stack
                .invoke(route.method, &route.path, &body, route.token.as_deref())
                .await;
            samples.push(started.elapsed());
            assert!(response.status().is_success(), "{}: {}", route.name, response.status());
        }
        samples.sort();
        println!(
            "| {} | {} | {:.2} ms | {:.2} ms | {} |",
            route.name,
            trips,
            percentile(&samples, 0.50).as_secs_f64() * 1e3,
            percentile(&samples, 0.99).as_secs_f64() * 1e3,
            route.iters
        );
    }
}
