//! The auth story a user lives, through the local gateway, against real Redis and Kafka.

use devconnect::events::EventType;
use devconnect_tests::Stack;
use serde_json::json;

#[tokio::test]
async fn signup_login_profile_update_public_view_and_logout() {
    let stack = Stack::start().await;
    let anon = stack.client();

    let signup = anon
        .post("/auth/signup", json!({"email": "Ada@Example.com", "password": "correct horse battery", "firstName": "Ada", "lastName": "Lovelace"}))
        .await;
    assert_eq!(signup.status, 201, "{}", signup.body);
    assert_eq!(signup.body["user"]["email"], "ada@example.com");
    assert!(signup.body["user"].get("passwordHash").is_none());
    let user_id = signup.body["user"]["id"].as_str().unwrap().to_string();
    assert!(signup.header("set-cookie").unwrap().contains("HttpOnly"));

    let login = anon
        .post(
            "/auth/login",
            json!({"email": "ada@example.com", "password": "correct horse battery"}),
        )
        .await;
    assert_eq!(login.status, 200, "{}", login.body);
    let me = anon.with_token(login.body["token"].as_str().unwrap());

    let profile = me.get("/profile").await;
    assert_eq!(profile.status, 200);
    assert_eq!(profile.body["firstName"], "Ada");
    assert!(profile.header("x-ratelimit-limit").is_some());

    // Warm the public-profile cache, then change the profile: the cache must not serve the old one.
    let before = me.get(&format!("/users/{user_id}")).await;
    assert_eq!(before.body["about"], "");
    let patched = me
        .patch("/profile", json!({"about": "First programmer", "skills": ["math", "engines"], "photoUrl": "https://img.example/ada.png"}))
        .await;
    assert_eq!(patched.status, 200, "{}", patched.body);
    let public = me.get(&format!("/users/{user_id}")).await;
    assert_eq!(public.status, 200);
    assert_eq!(public.body["about"], "First programmer");
    assert_eq!(public.body["skills"], json!(["math", "engines"]));
    assert!(public.body.get("email").is_none(), "public view leaks email");

    let logout = me.post("/auth/logout", json!({})).await;
    assert_eq!(logout.status, 204);
    let after = me.get("/profile").await;
    assert_eq!(after.status, 401);
    assert_eq!(after.error_code(), "unauthorized");
}

#[tokio::test]
async fn the_session_cookie_authenticates_like_the_bearer_header() {
    let stack = Stack::start().await;
    let (me, _) = stack.signed_up("cookie@example.com").await;
    let res = reqwest::Client::new()
        .get(format!("{}/profile", stack.base_url))
        .header("cookie", format!("theme=dark; dc_session={}", me.token()))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

#[tokio::test]
async fn each_auth_action_produces_its_event_with_a_full_envelope() {
    let stack = Stack::start().await;
    let (me, user_id) = stack.signed_up("events@example.com").await;
    let anon = stack.client();
    let login = anon
        .post(
            "/auth/login",
            json!({"email": "events@example.com", "password": "correct horse battery"}),
        )
        .await;
    assert_eq!(login.status, 200);
    let patch = me.patch("/profile", json!({"about": "hi"})).await;
    assert_eq!(patch.status, 200);
    let logout = me.post("/auth/logout", json!({})).await;
    assert_eq!(logout.status, 204);

    let events = stack.events("user-events").await;
    let types: Vec<EventType> = events.iter().map(|e| e.envelope.event_type).collect();
    for expected in [
        EventType::UserSignup,
        EventType::UserLogin,
        EventType::ProfileUpdated,
        EventType::UserLogout,
    ] {
        assert_eq!(
            types.iter().filter(|t| **t == expected).count(),
            1,
            "{expected:?} in {types:?}"
        );
    }
    let partitions: std::collections::HashSet<i32> = events.iter().map(|e| e.partition).collect();
    assert_eq!(partitions.len(), 1, "one user's events must share a partition");
    for e in &events {
        assert_eq!(e.key, user_id);
        assert_eq!(e.envelope.key, user_id);
        assert_eq!(e.envelope.version, 1);
        assert_eq!(e.envelope.source, "auth");
        assert_eq!(e.envelope.event_id.get_version_num(), 7);
        for field in [
            "eventId",
            "eventType",
            "version",
            "timestamp",
            "source",
            "key",
            "correlationId",
            "data",
        ] {
            assert!(e.raw.get(field).is_some(), "{field} missing in {}", e.raw);
        }
        assert!(!e.envelope.correlation_id.is_empty());
    }
    let signup = events
        .iter()
        .find(|e| e.envelope.event_type == EventType::UserSignup)
        .unwrap();
    assert_eq!(signup.envelope.data["email"], "events@example.com");
    assert!(
        signup.raw.to_string().find("password").is_none(),
        "no password material in events"
    );
    let offsets: Vec<i64> = events.iter().map(|e| e.offset).collect();
    assert!(
        offsets.windows(2).all(|w| w[0] < w[1]),
        "events out of order: {types:?}"
    );
    assert_eq!(types.first(), Some(&EventType::UserSignup));
    assert_eq!(types.last(), Some(&EventType::UserLogout));
}
