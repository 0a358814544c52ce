//! The Redis round-trip budget of each auth route (DESIGN: authenticate + rate limit = 1).

use devconnect_tests::Stack;
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
    // Warm: the first send loads the script (NOSCRIPT -> SCRIPT LOAD and a resend).
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
