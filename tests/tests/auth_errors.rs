//! What the auth API answers to wrong credentials and bad input: a clear 4xx in the
//! one JSON error shape, nothing written, no event produced.

use devconnect_tests::{stack::Reply, Stack};
use serde_json::json;

fn signup_body(email: &str) -> serde_json::Value {
    json!({"email": email, "password": "correct horse battery", "firstName": "Ada", "lastName": "Lovelace"})
}

fn assert_error_shape(r: &Reply, status: u16, code: &str) {
    assert_eq!(r.status, status, "{}", r.body);
    assert_eq!(r.error_code(), code, "{}", r.body);
    assert!(r.body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()));
    assert!(r.body["error"]["requestId"].as_str().is_some_and(|m| !m.is_empty()));
}

#[tokio::test]
async fn a_duplicate_email_in_any_case_is_a_conflict() {
    let stack = Stack::start().await;
    stack.signed_up("grace@example.com").await;
    let again = stack
        .client()
        .post("/auth/signup", signup_body("  GRACE@Example.COM "))
        .await;
    assert_error_shape(&again, 409, "conflict");
}

#[tokio::test]
async fn a_wrong_password_and_an_unknown_email_get_the_same_401() {
    let stack = Stack::start().await;
    stack.signed_up("linus@example.com").await;
    let anon = stack.client();
    let wrong = anon
        .post(
            "/auth/login",
            json!({"email": "linus@example.com", "password": "wrong password!"}),
        )
        .await;
    let unknown = anon
        .post(
            "/auth/login",
            json!({"email": "nobody@example.com", "password": "wrong password!"}),
        )
        .await;
    assert_error_shape(&wrong, 401, "unauthorized");
    assert_error_shape(&unknown, 401, "unauthorized");
    assert_eq!(wrong.body["error"]["message"], unknown.body["error"]["message"]);
}

#[tokio::test]
async fn the_sixth_failed_login_in_the_window_is_refused_with_retry_after() {
    let stack = Stack::start().await;
    stack.signed_up("barbara@example.com").await;
    let anon = stack.client();
    let attempt = || {
        anon.post(
            "/auth/login",
            json!({"email": "Barbara@example.com", "password": "guess guess"}),
        )
    };
    for _ in 0..5 {
        assert_eq!(attempt().await.status, 401);
    }
    let sixth = attempt().await;
    assert_error_shape(&sixth, 429, "rate_limited");
    let retry_after: u64 = sixth.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=900).contains(&retry_after), "{retry_after}");
    // Locked means locked: even the right password waits for the window.
    let right = anon
        .post(
            "/auth/login",
            json!({"email": "barbara@example.com", "password": "correct horse battery"}),
        )
        .await;
    assert_eq!(right.status, 429);
}

#[tokio::test]
async fn a_successful_login_resets_the_failure_count() {
    let stack = Stack::start().await;
    stack.signed_up("reset@example.com").await;
    let anon = stack.client();
    for _ in 0..4 {
        assert_eq!(
            anon.post(
                "/auth/login",
                json!({"email": "reset@example.com", "password": "nope nope"})
            )
            .await
            .status,
            401
        );
    }
    assert_eq!(
        anon.post(
            "/auth/login",
            json!({"email": "reset@example.com", "password": "correct horse battery"})
        )
        .await
        .status,
        200
    );
    for _ in 0..5 {
        assert_eq!(
            anon.post(
                "/auth/login",
                json!({"email": "reset@example.com", "password": "nope nope"})
            )
            .await
            .status,
            401
        );
    }
}

#[tokio::test]
async fn missing_garbage_and_forged_tokens_are_401() {
    let stack = Stack::start().await;
    let (me, user_id) = stack.signed_up("tokens@example.com").await;
    let anon = stack.client();
    assert_error_shape(&anon.get("/profile").await, 401, "unauthorized");
    assert_error_shape(&anon.with_token("garbage").get("/profile").await, 401, "unauthorized");
    // Right shape, right user id, wrong secret.
    let forged = format!("{user_id}.{}", "A".repeat(43));
    assert_error_shape(&anon.with_token(&forged).get("/profile").await, 401, "unauthorized");
    assert_eq!(me.get("/profile").await.status, 200);
}

#[tokio::test]
async fn an_expired_session_is_401() {
    let stack = Stack::start_with(&[("SESSION_TTL_SECS", "1")]).await;
    let (me, _) = stack.signed_up("expiry@example.com").await;
    assert_eq!(me.get("/profile").await.status, 200);
    tokio::time::sleep(std::time::Duration::from_millis(2_100)).await;
    assert_error_shape(&me.get("/profile").await, 401, "unauthorized");
}

#[tokio::test]
async fn bad_signup_bodies_are_refused_and_change_nothing() {
    let stack = Stack::start().await;
    stack.signed_up("existing@example.com").await;
    let before = stack.data_snapshot().await;
    let events_before = stack.events("user-events").await.len();
    let anon = stack.client();
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        ("malformed JSON", b"{\"email\": ".to_vec(), 400, "bad_request"),
        ("not an object", b"[1,2,3]".to_vec(), 400, "validation_failed"),
        ("empty body", Vec::new(), 400, "bad_request"),
        ("wrong type", json!({"email": 5, "password": "correct horse battery", "firstName": "A", "lastName": "B"}).to_string().into_bytes(), 400, "validation_failed"),
        ("missing field", json!({"email": "x@example.com", "password": "correct horse battery"}).to_string().into_bytes(), 400, "validation_failed"),
        ("unknown field", json!({"email": "x@example.com", "password": "correct horse battery", "firstName": "A", "lastName": "B", "tier": "premium"}).to_string().into_bytes(), 400, "validation_failed"),
        ("bad email", signup_body("not-an-email").to_string().into_bytes(), 400, "validation_failed"),
        ("short password", json!({"email": "x@example.com", "password": "short", "firstName": "A", "lastName": "B"}).to_string().into_bytes(), 400, "validation_failed"),
        ("blank name", json!({"email": "x@example.com", "password": "correct horse battery", "firstName": "  ", "lastName": "B"}).to_string().into_bytes(), 400, "validation_failed"),
        ("body over 64 KiB", json!({"email": "x@example.com", "password": "correct horse battery", "firstName": "A", "lastName": "x".repeat(70_000)}).to_string().into_bytes(), 413, "payload_too_large"),
        ("not UTF-8", vec![0xff, 0xfe, 0x00, 0x01], 400, "bad_request"),
    ];
    for (what, body, status, code) in cases {
        let r = anon.raw("POST", "/auth/signup", body).await;
        assert_eq!((r.status, r.error_code()), (status, code), "{what}: {}", r.body);
    }
    assert_eq!(stack.data_snapshot().await, before, "a refused request wrote to Redis");
    assert_eq!(
        stack.events("user-events").await.len(),
        events_before,
        "a refused request produced an event"
    );
}

#[tokio::test]
async fn bad_profile_patches_are_refused_and_change_nothing() {
    let stack = Stack::start().await;
    let (me, _) = stack.signed_up("patch@example.com").await;
    let before = stack.data_snapshot().await;
    let events_before = stack.events("user-events").await.len();
    let cases = [
        ("about too long", json!({"about": "x".repeat(501)})),
        (
            "too many skills",
            json!({"skills": (0..21).map(|i| format!("s{i}")).collect::<Vec<_>>()}),
        ),
        ("photo not a URL", json!({"photoUrl": "ftp:/nope"})),
        ("email is not editable here", json!({"email": "new@example.com"})),
        ("wrong type", json!({"skills": "rust"})),
        ("nothing to change", json!({})),
        (
            "one bad field spoils the patch",
            json!({"about": "fine", "photoUrl": "javascript:alert(1)"}),
        ),
    ];
    for (what, body) in cases {
        let r = me.patch("/profile", body).await;
        assert_eq!(
            (r.status, r.error_code()),
            (400, "validation_failed"),
            "{what}: {}",
            r.body
        );
    }
    assert_eq!(stack.data_snapshot().await, before);
    assert_eq!(stack.events("user-events").await.len(), events_before);
    assert_eq!(me.get("/profile").await.body["about"], "");
}

#[tokio::test]
async fn unknown_routes_and_methods_get_json_errors() {
    let stack = Stack::start().await;
    let anon = stack.client();
    assert_error_shape(&anon.get("/nope").await, 404, "not_found");
    assert_error_shape(&anon.get("/auth/signup").await, 405, "method_not_allowed");
    assert_error_shape(
        &anon.raw("DELETE", "/profile", Vec::new()).await,
        405,
        "method_not_allowed",
    );
}

#[tokio::test]
async fn a_malformed_user_id_is_400_and_an_unknown_one_404() {
    let stack = Stack::start().await;
    let (me, _) = stack.signed_up("lookup@example.com").await;
    assert_error_shape(&me.get("/users/not-a-uuid").await, 400, "validation_failed");
    assert_error_shape(
        &me.get("/users/0190c3a4-0000-7000-8000-000000000001").await,
        404,
        "not_found",
    );
}
