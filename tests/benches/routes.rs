//! Route benchmark: handler latency (p50/p99) in-process against a local redis-server
//! and tansu, and Redis round trips per request (counted by a proxy in front of Redis).
//!
//!     cargo bench -p devconnect-tests --bench routes        # BENCH_ITERS=1000 by default
//!
//! Latency includes producing the route's event to the broker (awaited, as in production).

use std::time::{Duration, Instant};

use devconnect::user::{self, User};
use devconnect_tests::Stack;
use serde_json::json;

const LIMITS: [(&str, &str); 2] = [("RATE_LIMIT_FREE", "100000000"), ("RATE_LIMIT_ANONYMOUS", "100000000")];

/// One benchmarked route; `make(i)` gives the path and body of iteration `i`.
struct Route {
    name: &'static str,
    method: &'static str,
    token: Option<String>,
    iters: usize,
    make: Box<dyn Fn(usize) -> (String, Vec<u8>)>,
}

fn fixed(path: String, body: Vec<u8>) -> Box<dyn Fn(usize) -> (String, Vec<u8>)> {
    Box::new(move |_| (path.clone(), body.clone()))
}

/// Users written straight to Redis (no argon2), to be request targets and feed entries.
async fn bulk_users(stack: &Stack, n: usize) -> Vec<String> {
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        let u = User::new(
            format!("bulk{i}@example.com"),
            "x".into(),
            "Bulk".into(),
            format!("User{i}"),
        );
        user::insert_pipeline(&u)
            .query_async::<()>(&mut stack.state.store.conn())
            .await
            .expect("insert");
        ids.push(u.id);
    }
    ids
}

async fn routes(stack: &Stack, iters: usize) -> Vec<Route> {
    let me = stack.user("me").await;
    let friend = stack.user("friend").await;
    stack.connect(&me, &friend).await;
    for i in 0..60 {
        friend.message(&me.id, &format!("warm-up {i}")).await;
    }
    let token = Some(me.client.token().to_string());
    let targets = bulk_users(stack, iters + 10).await;
    let presence_ids = std::iter::once(friend.id.clone())
        .chain(targets.iter().take(99).cloned())
        .collect::<Vec<_>>()
        .join(",");
    let login = json!({"email": "me@example.com", "password": "correct horse battery"})
        .to_string()
        .into_bytes();
    let slow = (iters / 20).max(10); // argon2id routes cost ~tens of ms each
    let r = |name, method, iters, make| Route {
        name,
        method,
        token: token.clone(),
        iters,
        make,
    };
    vec![
        r("GET /profile", "GET", iters, fixed("/profile".into(), vec![])),
        r(
            "GET /users/{id} (cached)",
            "GET",
            iters,
            fixed(format!("/users/{}", friend.id), vec![]),
        ),
        r(
            "PATCH /profile",
            "PATCH",
            iters,
            fixed("/profile".into(), json!({"about": "bench"}).to_string().into_bytes()),
        ),
        Route {
            name: "POST /auth/login",
            method: "POST",
            token: None,
            iters: slow,
            make: fixed("/auth/login".into(), login),
        },
        Route {
            name: "POST /auth/signup",
            method: "POST",
            token: None,
            iters: slow,
            make: Box::new(|i| {
                let body = json!({"email": format!("bench{i}-{}@example.com", uuid_suffix()), "password": "correct horse battery", "firstName": "B", "lastName": "E"});
                ("/auth/signup".into(), body.to_string().into_bytes())
            }),
        },
        r(
            "POST /requests/send/interested/{id}",
            "POST",
            iters,
            Box::new(move |i| (format!("/requests/send/interested/{}", targets[i]), vec![])),
        ),
        r(
            "GET /requests/received",
            "GET",
            iters,
            fixed("/requests/received".into(), vec![]),
        ),
        r("GET /connections", "GET", iters, fixed("/connections".into(), vec![])),
        r("GET /feed (20)", "GET", iters, fixed("/feed".into(), vec![])),
        r(
            "POST /messages/{id}",
            "POST",
            iters,
            fixed(
                format!("/messages/{}", friend.id),
                json!({"text": "hello there"}).to_string().into_bytes(),
            ),
        ),
        r(
            "GET /messages/{id} (50)",
            "GET",
            iters,
            fixed(format!("/messages/{}", friend.id), vec![]),
        ),
        r(
            "GET /conversations",
            "GET",
            iters,
            fixed("/conversations".into(), vec![]),
        ),
        r(
            "POST /messages/{id}/read",
            "POST",
            iters,
            fixed(format!("/messages/{}/read", friend.id), vec![]),
        ),
        r(
            "POST /presence/heartbeat",
            "POST",
            iters,
            fixed("/presence/heartbeat".into(), vec![]),
        ),
        r(
            "GET /presence (100 ids)",
            "GET",
            iters,
            fixed(format!("/presence?userIds={presence_ids}"), vec![]),
        ),
    ]
}

fn uuid_suffix() -> String {
    format!(
        "{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main]
async fn main() {
    let iters: usize = std::env::var("BENCH_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);

    // Round trips: each route twice in a row through the counting proxy; the second call
    // is the steady state (Lua scripts loaded, profile cache warm). Iteration indexes
    // past `iters` keep these calls from touching the latency run's targets.
    let counting = Stack::start_counting(&LIMITS).await;
    let counted = routes(&counting, 20).await;
    let proxy = counting.round_trips.as_ref().expect("counting proxy");
    let mut trips = Vec::new();
    for r in &counted {
        let mut n = 0;
        for attempt in 0..2 {
            let (path, body) = (r.make)(attempt);
            n = proxy
                .measure(counting.invoke(r.method, &path, &body, r.token.as_deref()))
                .await
                .1;
        }
        trips.push(n);
    }

    let stack = Stack::start_with(&LIMITS).await;
    let routes = routes(&stack, iters).await;
    println!("| route | Redis round trips | p50 | p99 | requests |");
    println!("|---|---|---|---|---|");
    for (route, trips) in routes.iter().zip(trips) {
        let mut samples = Vec::with_capacity(route.iters);
        for i in 0..route.iters {
            let (path, body) = (route.make)(i);
            let started = Instant::now();
            let response = stack.invoke(route.method, &path, &body, route.token.as_deref()).await;
            samples.push(started.elapsed());
            assert!(
                response.status().is_success(),
                "{}: {} {:?}",
                route.name,
                response.status(),
                response.body()
            );
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
