//! Sessions and abuse limits (issue 12, items 2, 3 (issuing), 4, 5, 6, 7), against the
//! real local stack.

use std::{net::IpAddr, time::Duration};

use devconnect::{events::EventType, keys, session};
use devconnect_tests::Stack;
use serde_json::{json, Value};

const PASSWORD: &str = "correct horse battery";

/// A raw HTTP call from a chosen loopback address (the gateway's sourceIp), with an
/// optional bearer token and extra headers.
async fn call(
    stack: &Stack,
    from: &str,
    method: &str,
    path: &str,
    body: Value,
    token: Option<&str>,
    headers: &[(&str, &str)],
) -> (u16, reqwest::header::HeaderMap, Value) {
    let ip: IpAddr = from.parse().expect("ip");
    let http = reqwest::Client::builder().local_address(ip).build().expect("client");
    let mut req = http
        .request(method.parse().expect("method"), format!("{}{path}", stack.base_url))
        .timeout(Duration::from_secs(20))
        .header("content-type", "application/json");
    if !body.is_null() {
        req = req.body(body.to_string());
    }
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let res = req.send().await.expect("gateway");
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    let bytes = res.bytes().await.expect("body");
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, headers, body)
}

async fn login(stack: &Stack, from: &str, email: &str, password: &str) -> (u16, Value) {
    let (status, _, body) = call(
        stack,
        from,
        "POST",
        "/auth/login",
        json!({"email": email, "password": password}),
        None,
        &[],
    )
    .await;
    (status, body)
}

async fn logouts(stack: &Stack, user_id: &str) -> Vec<Value> {
    stack
        .events("user-events")
        .await
        .into_iter()
        .filter(|e| e.envelope.event_type == EventType::UserLogout && e.envelope.key == user_id)
        .map(|e| e.envelope.data)
        .collect()
}

#[tokio::test]
async fn a_victim_logs_in_from_their_address_while_an_attackers_address_gets_429s() {
    let stack = Stack::start().await;
    stack.signed_up("victim@example.com").await;
    for _ in 0..5 {
        let (status, _) = login(&stack, "127.0.0.2", "victim@example.com", "wrong password").await;
        assert_eq!(status, 401);
    }
    let (status, body) = login(&stack, "127.0.0.2", "victim@example.com", PASSWORD).await;
    assert_eq!(
        status, 429,
        "the attacker's address is locked even for the right password: {body}"
    );
    let (status, body) = login(&stack, "127.0.0.1", "victim@example.com", PASSWORD).await;
    assert_eq!(status, 200, "the victim's own address still works: {body}");
    let (status, _) = login(&stack, "127.0.0.2", "victim@example.com", "wrong password").await;
    assert_eq!(status, 429, "and the attacker is still refused");
}

#[tokio::test]
async fn logout_all_ends_every_session_and_names_them_in_user_logout() {
    let stack = Stack::start().await;
    let (first, id) = stack.signed_up("all@example.com").await;
    let (status, body) = login(&stack, "127.0.0.1", "all@example.com", PASSWORD).await;
    assert_eq!(status, 200);
    let second = body["token"].as_str().expect("token").to_string();

    let listed = first.get("/sessions").await;
    assert_eq!(listed.status, 200, "{}", listed.body);
    let sessions = listed.body["sessions"].as_array().expect("sessions").clone();
    assert_eq!(sessions.len(), 2, "{sessions:?}");
    assert_eq!(sessions.iter().filter(|s| s["current"] == true).count(), 1);
    for s in &sessions {
        assert!(s["createdAt"].is_string() && s["lastUsedAt"].is_string() && s["userAgent"].is_string());
    }

    let out = first.post("/auth/logout-all", json!({})).await;
    assert_eq!(out.status, 204, "{}", out.body);
    assert_eq!(first.get("/profile").await.status, 401);
    assert_eq!(first.with_token(&second).get("/profile").await.status, 401);

    let events = logouts(&stack, &id).await;
    let last = events.last().expect("USER_LOGOUT");
    assert_eq!(last["reason"], "logout_all");
    let mut ended: Vec<String> = serde_json::from_value(last["sessionIds"].clone()).expect("ids");
    let mut expected: Vec<String> = sessions
        .iter()
        .map(|s| s["id"].as_str().unwrap_or_default().to_string())
        .collect();
    ended.sort();
    expected.sort();
    assert_eq!(ended, expected);
}

#[tokio::test]
async fn deleting_one_session_ends_only_that_one() {
    let stack = Stack::start().await;
    let (me, id) = stack.signed_up("one@example.com").await;
    let (_, body) = login(&stack, "127.0.0.1", "one@example.com", PASSWORD).await;
    let other = me.with_token(body["token"].as_str().expect("token"));
    let listed = me.get("/sessions").await.body;
    let other_id = listed["sessions"]
        .as_array()
        .expect("sessions")
        .iter()
        .find(|s| s["current"] == false)
        .and_then(|s| s["id"].as_str())
        .expect("the other session")
        .to_string();
    assert_eq!(
        me.raw("DELETE", &format!("/sessions/{other_id}"), Vec::new())
            .await
            .status,
        204
    );
    assert_eq!(other.get("/profile").await.status, 401);
    assert_eq!(me.get("/profile").await.status, 200);
    assert_eq!(
        me.raw("DELETE", &format!("/sessions/{other_id}"), Vec::new())
            .await
            .status,
        404
    );
    let last = logouts(&stack, &id).await.pop().expect("USER_LOGOUT");
    assert_eq!(
        last,
        json!({"userId": id, "sessionIds": [other_id], "reason": "revoked"})
    );
}

#[tokio::test]
async fn an_idle_session_expires_before_its_absolute_lifetime() {
    let stack = Stack::start_with(&[("SESSION_IDLE_TIMEOUT_SECS", "1")]).await;
    let (me, _) = stack.signed_up("idle@example.com").await;
    assert_eq!(me.get("/profile").await.status, 200);
    tokio::time::sleep(Duration::from_millis(2_200)).await;
    assert_eq!(
        me.get("/profile").await.status,
        401,
        "unused for longer than the idle timeout"
    );
}

#[tokio::test]
async fn a_password_change_keeps_only_the_current_session() {
    let stack = Stack::start().await;
    let (me, id) = stack.signed_up("pw@example.com").await;
    let (_, body) = login(&stack, "127.0.0.1", "pw@example.com", PASSWORD).await;
    let other = me.with_token(body["token"].as_str().expect("token"));
    let wrong = me
        .post(
            "/auth/password",
            json!({"currentPassword": "not it at all", "newPassword": "a new long password"}),
        )
        .await;
    assert_eq!(wrong.status, 403);
    let changed = me
        .post(
            "/auth/password",
            json!({"currentPassword": PASSWORD, "newPassword": "a new long password"}),
        )
        .await;
    assert_eq!(changed.status, 204, "{}", changed.body);
    assert_eq!(me.get("/profile").await.status, 200);
    assert_eq!(other.get("/profile").await.status, 401);
    assert_eq!(login(&stack, "127.0.0.1", "pw@example.com", PASSWORD).await.0, 401);
    assert_eq!(
        login(&stack, "127.0.0.1", "pw@example.com", "a new long password")
            .await
            .0,
        200
    );
    let last = logouts(&stack, &id).await.pop().expect("USER_LOGOUT");
    assert_eq!(last["reason"], "password_changed");
    assert_eq!(last["sessionIds"].as_array().map(Vec::len), Some(1));
}

#[tokio::test]
async fn a_tier_change_applies_on_the_next_request_and_produces_tier_changed() {
    let admin_id = "0190c3a4-0000-7000-8000-0000000000ad";
    let stack = Stack::start_with(&[("ADMIN_USER_IDS", admin_id), ("RATE_LIMIT_PREMIUM", "5000")]).await;
    let admin = stack.user_with_id(admin_id).await;
    let (me, id) = stack.signed_up("tier@example.com").await;
    assert_eq!(me.get("/profile").await.header("x-ratelimit-limit"), Some("1000"));
    let path = format!("/admin/users/{id}/tier");
    let body = json!({"tier": "premium"}).to_string().into_bytes();
    assert_eq!(me.raw("PUT", &path, body.clone()).await.status, 403, "only admins");
    let set = admin.client.raw("PUT", &path, body).await;
    assert_eq!(set.status, 200, "{}", set.body);
    assert_eq!(set.body["previousTier"], "free");
    assert_eq!(me.get("/profile").await.header("x-ratelimit-limit"), Some("5000"));
    let bad = admin
        .client
        .raw("PUT", &path, json!({"tier": "gold"}).to_string().into_bytes())
        .await;
    assert_eq!(bad.status, 400);
    let changed: Vec<_> = stack
        .events("user-events")
        .await
        .into_iter()
        .filter(|e| e.envelope.event_type == EventType::TierChanged)
        .collect();
    assert_eq!(changed.len(), 1);
    assert_eq!(changed[0].envelope.data["userId"], id);
    assert_eq!(changed[0].envelope.data["tier"], "premium");
}

#[tokio::test]
async fn invalid_tokens_from_one_ip_get_429_past_the_anonymous_bucket() {
    let stack = Stack::start_with(&[("RATE_LIMIT_ANONYMOUS", "3")]).await;
    let unknown = format!("0190c3a4-0000-7000-8000-00000000dead.{}", "A".repeat(43));
    let mut statuses = Vec::new();
    for token in ["garbage", &unknown, &unknown, &unknown] {
        statuses.push(
            call(&stack, "127.0.0.3", "GET", "/profile", Value::Null, Some(token), &[])
                .await
                .0,
        );
    }
    assert_eq!(statuses, [401, 401, 401, 429]);
    let (status, _, _) = call(
        &stack,
        "127.0.0.4",
        "GET",
        "/profile",
        Value::Null,
        Some("garbage"),
        &[],
    )
    .await;
    assert_eq!(status, 401, "another address has its own bucket");
}

#[tokio::test]
async fn forged_tokens_for_a_users_id_do_not_spend_that_users_rate_limit() {
    // An hour-long window, so the test does not straddle a window boundary.
    let stack = Stack::start_with(&[
        ("RATE_LIMIT_FREE", "3"),
        ("RATE_LIMIT_ANONYMOUS", "1000"),
        ("RATE_LIMIT_WINDOW_SECS", "3600"),
    ])
    .await;
    let (me, id) = stack.signed_up("victim-rate@example.com").await;
    // Well-formed (a user id and 43 base64url characters), so each one reaches Redis.
    let forged: Vec<String> = (0..20).map(|i| format!("{id}.{:A<43}", format!("forged{i}"))).collect();
    let statuses = futures::future::join_all(
        forged
            .iter()
            .map(|token| call(&stack, "127.0.0.5", "GET", "/profile", Value::Null, Some(token), &[])),
    )
    .await;
    assert!(statuses.iter().all(|(s, _, _)| *s == 401), "forged tokens are refused");
    let mut remaining = Vec::new();
    for _ in 0..3 {
        let r = me.get("/profile").await;
        assert_eq!(r.status, 200, "the user's own requests are not limited: {}", r.body);
        remaining.push(r.header("x-ratelimit-remaining").unwrap_or_default().to_string());
    }
    assert_eq!(remaining, ["2", "1", "0"], "only the user's own requests were counted");
    assert_eq!(me.get("/profile").await.status, 429, "the user's limit still holds");
}

#[tokio::test]
async fn the_session_cookie_is_host_prefixed_and_secure_also_when_cleared() {
    let stack = Stack::start_with(&[("COOKIE_SECURE", "true")]).await;
    let (status, headers, body) = call(
        &stack,
        "127.0.0.1",
        "POST",
        "/auth/signup",
        json!({"email": "cookie@example.com", "password": PASSWORD, "firstName": "C", "lastName": "Ookie"}),
        None,
        &[],
    )
    .await;
    assert_eq!(status, 201);
    let set = headers["set-cookie"].to_str().expect("cookie");
    assert!(set.starts_with("__Host-dc_session="), "{set}");
    assert!(
        set.contains("; Secure") && set.contains("; Path=/") && set.contains("HttpOnly") && !set.contains("Domain"),
        "{set}"
    );
    let token = body["token"].as_str().expect("token");
    let cookie = format!("__Host-dc_session={token}");
    let (status, _, _) = call(
        &stack,
        "127.0.0.1",
        "GET",
        "/profile",
        Value::Null,
        None,
        &[("cookie", &cookie)],
    )
    .await;
    assert_eq!(status, 200, "the __Host- cookie authenticates");
    let legacy = format!("dc_session={token}");
    let (status, _, _) = call(
        &stack,
        "127.0.0.1",
        "GET",
        "/profile",
        Value::Null,
        None,
        &[("cookie", &legacy)],
    )
    .await;
    assert_eq!(
        status, 401,
        "the un-prefixed cookie is not read when cookies are secure"
    );
    let (status, headers, _) = call(&stack, "127.0.0.1", "POST", "/auth/logout", json!({}), Some(token), &[]).await;
    assert_eq!(status, 204);
    let cleared = headers["set-cookie"].to_str().expect("cookie");
    assert!(
        cleared.starts_with("__Host-dc_session=;") && cleared.contains("; Secure") && cleared.contains("Max-Age=0"),
        "{cleared}"
    );
}

#[tokio::test]
async fn a_realtime_ticket_is_stored_hashed_for_this_session_with_a_ttl_of_at_most_30_s() {
    let stack = Stack::start().await;
    let (me, id) = stack.signed_up("ticket@example.com").await;
    let issued = me.post("/realtime/ticket", json!({})).await;
    assert_eq!(issued.status, 201, "{}", issued.body);
    let ticket = issued.body["ticket"].as_str().expect("ticket");
    let key = keys::realtime_ticket(&session::hash(ticket));
    let mut conn = stack.state.store.conn();
    let value: Option<String> = redis::cmd("GET").arg(&key).query_async(&mut conn).await.expect("GET");
    assert_eq!(value, Some(format!("{id}:{}", session::hash(me.token()))));
    let ttl: i64 = redis::cmd("TTL").arg(&key).query_async(&mut conn).await.expect("TTL");
    assert!((1..=30).contains(&ttl), "{ttl}");
    assert_eq!(
        me.with_token("garbage")
            .post("/realtime/ticket", json!({}))
            .await
            .status,
        401
    );
}
