//! The Redis round-trip budget of each auth route (DESIGN: authenticate + rate limit = 1),
//! and what Lua scripts cost: nothing extra once Redis holds them, one more round trip
//! carrying only the scripts when it has lost them (a new server, a failover).

use devconnect::{events::EventType, script};
use devconnect_tests::{
    kafka::{batch, bytes, envelope},
    Stack,
};
use redis::Script;
use serde_json::json;

async fn trips(stack: &Stack, method: &str, path: &str, body: serde_json::Value, token: Option<&str>) -> (u16, u64) {
    let proxy = stack.round_trips.as_ref().unwrap();
    let body = if body.is_null() {
        Vec::new()
    } else {
        body.to_string().into_bytes()
    };
    let (response, n) = proxy.measure(stack.invoke(method, path, &body, token)).await;
    (response.status().as_u16(), n)
}

#[tokio::test]
async fn each_auth_route_stays_within_its_round_trip_budget() {
    let stack = Stack::start_counting(&[]).await;
    // The first use of each Lua script loads it (NOSCRIPT -> SCRIPT LOAD); budgets are for warm containers.
    let (warm, warm_id) = stack.signed_up("warm@example.com").await;
    warm.get("/profile").await;
    warm.get(&format!("/users/{warm_id}")).await;
    stack
        .client()
        .post(
            "/auth/login",
            json!({"email": "warm@example.com", "password": "correct horse battery"}),
        )
        .await;
    warm.post("/auth/logout", json!({})).await;

    let signup = json!({"email": "budget@example.com", "password": "correct horse battery", "firstName": "B", "lastName": "Udget"});
    let (status, n) = trips(&stack, "POST", "/auth/signup", signup, None).await;
    assert_eq!((status, n), (201, 3), "signup: rate limit, email claim, user+session");

    let login = json!({"email": "budget@example.com", "password": "correct horse battery"});
    let response = stack
        .invoke("POST", "/auth/login", login.to_string().as_bytes(), None)
        .await;
    let body: serde_json::Value = serde_json::from_slice(response.body().as_ref()).unwrap();
    let token = body["token"].as_str().unwrap().to_string();
    let user_id = body["user"]["id"].as_str().unwrap().to_string();
    let (status, n) = trips(&stack, "POST", "/auth/login", login, None).await;
    assert_eq!(
        (status, n),
        (200, 4),
        "login: rate limit, lookup+attempt, user, session"
    );

    assert_eq!(
        trips(&stack, "GET", "/profile", json!(null), Some(&token)).await,
        (200, 1),
        "GET /profile"
    );
    assert_eq!(
        trips(&stack, "PATCH", "/profile", json!({"about": "x"}), Some(&token)).await,
        (200, 2)
    );
    let user_path = format!("/users/{user_id}");
    assert_eq!(
        trips(&stack, "GET", &user_path, json!(null), Some(&token)).await,
        (200, 3),
        "cache miss: authentication with the cache read, the record, the cache fill"
    );
    assert_eq!(
        trips(&stack, "GET", &user_path, json!(null), Some(&token)).await,
        (200, 1),
        "cache hit: the cache read rides on the authentication round trip"
    );
    assert_eq!(
        trips(&stack, "POST", "/auth/logout", json!(null), Some(&token)).await,
        (204, 2)
    );
}

#[tokio::test]
async fn a_message_costs_two_round_trips_and_a_forged_token_one_more_than_a_live_one() {
    let stack = Stack::start_counting(&[]).await;
    let a = stack.user("budget-a").await;
    let b = stack.user("budget-b").await;
    stack.connect(&a, &b).await;
    // Warm: the first send connects to the broker.
    assert_eq!(a.message(&b.id, "warm").await.status, 201);
    let path = format!("/messages/{}", b.id);
    let (status, n) = trips(&stack, "POST", &path, json!({"text": "hi"}), Some(a.client.token())).await;
    assert_eq!(
        (status, n),
        (201, 2),
        "authenticate + rate limit + the send's checks, then the send with both conversation lists"
    );
    let forged = format!("{}.{}", a.id, "A".repeat(43));
    assert_eq!(
        trips(&stack, "GET", "/profile", json!(null), Some(&forged)).await,
        (401, 2),
        "the authentication round trip, then the undo of the count with the per-IP count"
    );
    assert_eq!(
        trips(&stack, "GET", "/profile", json!(null), Some("garbage")).await,
        (401, 1),
        "a malformed token: only the per-IP count"
    );
}

#[tokio::test]
async fn a_presence_lookup_costs_one_round_trip_and_a_heartbeat_two() {
    let stack = Stack::start_counting(&[]).await;
    let a = stack.user("presence-a").await;
    let b = stack.user("presence-b").await;
    let stranger = stack.user("presence-c").await;
    stack.connect(&a, &b).await;
    // Warm: the first heartbeat loads the script (NOSCRIPT -> SCRIPT LOAD and a resend).
    assert_eq!(b.client.post("/presence/heartbeat", json!({})).await.status, 200);
    let (status, n) = trips(
        &stack,
        "POST",
        "/presence/heartbeat",
        json!(null),
        Some(b.client.token()),
    )
    .await;
    assert_eq!((status, n), (200, 2), "authenticate + rate limit, then the heartbeat");

    let path = format!("/presence?userIds={},{}", b.id, stranger.id);
    let (status, n) = trips(&stack, "GET", &path, json!(null), Some(a.client.token())).await;
    assert_eq!(
        (status, n),
        (200, 1),
        "the lookup's reads ride on the authentication round trip"
    );
    let seen = a.client.get(&path).await;
    assert_eq!(seen.body["presence"][0]["userId"], b.id.as_str(), "{}", seen.body);
    assert_eq!(seen.body["presence"][0]["online"], true, "{}", seen.body);
    assert_eq!(seen.body["notVisible"], json!([stranger.id]), "{}", seen.body);
}

/// Empties every node's script cache, as a failover to a fresh node does.
async fn flush_scripts(stack: &Stack) {
    for node in std::iter::once(&stack.redis).chain(&stack.other_masters) {
        let client = redis::Client::open(node.url()).expect("redis url");
        let mut conn = client.get_multiplexed_async_connection().await.expect("redis");
        let _: () = redis::cmd("SCRIPT")
            .arg("FLUSH")
            .query_async(&mut conn)
            .await
            .expect("SCRIPT FLUSH");
    }
}

#[tokio::test]
async fn after_redis_lost_its_scripts_only_the_scripts_go_again_and_a_write_beside_them_counts_once() {
    let stack = Stack::start_counting(&[]).await;
    let add = Script::new("return redis.call('INCRBY', KEYS[1], ARGV[1])");
    let mut pipe = redis::pipe();
    pipe.ignore_errors()
        .incr("{budget}:hits", 1)
        .invoke_script(add.key("{budget}:total").arg(10));
    let send = || async {
        let replies = script::query_loaded(&stack.state.store, &pipe, &[&add]).await.unwrap();
        let replies: Vec<i64> = replies.into_iter().map(|r| script::reply(r).unwrap()).collect();
        replies
    };
    assert_eq!(send().await, [1, 10]);
    flush_scripts(&stack).await;

    let replies = match stack.round_trips.as_ref() {
        Some(proxy) => {
            let (replies, trips) = proxy.measure(send()).await;
            assert_eq!(trips, 2, "the pipeline, then the script loaded and sent again");
            replies
        }
        None => send().await,
    };
    assert_eq!(replies, [2, 20], "each command's own reply, in place");
    let hits: i64 = redis::cmd("GET")
        .arg("{budget}:hits")
        .query_async(&mut stack.state.store.conn())
        .await
        .unwrap();
    assert_eq!(hits, 2, "the INCR beside the script ran once per call");
}

const SENDER: &str = "0190c3a4-0000-7000-8000-00000000000a";
const RECEIVER: &str = "0190c3a4-0000-7000-8000-00000000000b";

/// A request and a message from SENDER to RECEIVER, in new envelopes; `n` numbers their ids.
fn social_records(n: usize) -> Vec<Vec<u8>> {
    let request = format!("0190c3a4-0000-7000-9000-{n:012}");
    vec![
        bytes(&envelope(
            EventType::ConnectionRequestSent,
            SENDER,
            json!({"id": request, "fromUserId": SENDER, "toUserId": RECEIVER, "status": "interested", "createdAt": "2026-01-01T00:00:00.000Z"}),
        )),
        bytes(&envelope(
            EventType::MessageSent,
            SENDER,
            json!({"id": format!("{n}-0"), "fromUserId": SENDER, "toUserId": RECEIVER, "text": "hi", "sentAt": "2026-01-01T00:00:00.000Z"}),
        )),
    ]
}

/// Runs one consumer on `records` and returns its report.
async fn consume(stack: &Stack, function: &str, records: &[Vec<u8>]) -> serde_json::Value {
    stack
        .gateway
        .functions
        .invoke_consumer(function, batch("message-events", records))
        .await
        .expect("consume")
}

const CONSUMERS: [&str; 2] = ["AnalyticsConsumerFunction", "NotificationsConsumerFunction"];

#[tokio::test]
async fn a_warm_consumer_batch_does_not_load_its_scripts_again() {
    let stack = Stack::start_counting(&[]).await;
    if stack.round_trips.is_none() {
        eprintln!("commands are counted on one redis-server only");
        return;
    }
    for function in CONSUMERS {
        consume(&stack, function, &social_records(1)).await;
    }
    let _: () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async(&mut stack.state.store.conn())
        .await
        .unwrap();
    for function in CONSUMERS {
        let report = consume(&stack, function, &social_records(2)).await;
        assert_eq!(report["applied"], 2, "{function}: {report}");
    }
    let calls: std::collections::BTreeMap<String, u64> = stack
        .command_stats()
        .await
        .into_iter()
        .map(|(command, (calls, _))| (command, calls))
        .collect();
    assert_eq!(calls.get("script|load"), None, "{calls:?}");
    assert_eq!(
        calls.get("evalsha"),
        Some(&2),
        "one script call per consumer: {calls:?}"
    );
}

#[tokio::test]
async fn after_redis_lost_its_scripts_each_consumer_applies_a_batch_once_within_its_budget() {
    let stack = Stack::start_counting(&[]).await;
    for function in CONSUMERS {
        consume(&stack, function, &social_records(1)).await;
    }
    flush_scripts(&stack).await;
    let records = social_records(2);
    for function in CONSUMERS {
        let report = match stack.round_trips.as_ref() {
            Some(proxy) => {
                let (report, trips) = proxy.measure(consume(&stack, function, &records)).await;
                assert!(trips <= 5, "{function} took {trips} Redis round trips");
                report
            }
            None => consume(&stack, function, &records).await,
        };
        assert_eq!(
            (report["applied"].as_u64(), report["duplicates"].as_u64()),
            (Some(2), Some(0)),
            "{function}: {report}"
        );
        let again = consume(&stack, function, &records).await;
        assert_eq!(
            (again["applied"].as_u64(), again["duplicates"].as_u64()),
            (Some(0), Some(2)),
            "{function}, the same batch again: {again}"
        );
    }
}
