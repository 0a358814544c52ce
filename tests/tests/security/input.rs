//! Items 4 (Cache-Control), 10 (input), 11 (/health) and 12 (event sources and ids).

use devconnect::events::EventType;
use devconnect_tests::{
    kafka::{batch, bytes, envelope},
    Stack,
};
use serde_json::json;

const ADMIN: &str = "0190c3a4-0000-7000-8000-0000000000ad";

#[tokio::test]
async fn a_bidi_override_in_a_name_or_text_is_400_and_changes_nothing() {
    let stack = Stack::start().await;
    let signup = stack
        .client()
        .post(
            "/auth/signup",
            json!({"email": "bidi@example.com", "password": "correct horse battery", "firstName": "Ada\u{202E}nimda", "lastName": "L"}),
        )
        .await;
    assert_eq!(
        (signup.status, signup.error_code()),
        (400, "validation_failed"),
        "{}",
        signup.body
    );

    let ada = stack.user("ada").await;
    let bob = stack.user("bob").await;
    let before = ada.client.get("/profile").await.body;
    for body in [
        json!({"firstName": "Ada\u{202E}nimda"}),
        json!({"lastName": "L\u{2066}x\u{2069}"}),
        json!({"about": "hi\u{200B}there"}),
        json!({"skills": ["Ru\u{FEFF}st"]}),
    ] {
        let r = ada.client.patch("/profile", body.clone()).await;
        assert_eq!(
            (r.status, r.error_code()),
            (400, "validation_failed"),
            "{body}: {}",
            r.body
        );
    }
    let mut after = ada.client.get("/profile").await.body;
    after["updatedAt"] = before["updatedAt"].clone();
    assert_eq!(after, before, "nothing changed");

    stack.connect(&ada, &bob).await;
    let r = ada.message(&bob.id, "invoice \u{202E}fdp.exe").await;
    assert_eq!((r.status, r.error_code()), (400, "validation_failed"), "{}", r.body);
    let history = ada.client.get(&format!("/messages/{}", bob.id)).await;
    assert_eq!(history.body["messages"], json!([]), "no message stored");
}

#[tokio::test]
async fn photo_url_must_be_https_and_is_stored_normalised() {
    let stack = Stack::start().await;
    let ada = stack.user("ada").await;
    let http = ada
        .client
        .patch("/profile", json!({"photoUrl": "http://img.example/ada.png"}))
        .await;
    assert_eq!(
        (http.status, http.error_code()),
        (400, "validation_failed"),
        "{}",
        http.body
    );
    let ok = ada
        .client
        .patch("/profile", json!({"photoUrl": "HTTPS://IMG.Example:443/a b.png"}))
        .await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    let stored = ada.client.get(&format!("/users/{}", ada.id)).await;
    assert_eq!(
        stored.body["photoUrl"], "https://img.example/a%20b.png",
        "{}",
        stored.body
    );
}

#[tokio::test]
async fn every_route_answers_413_above_64_kib() {
    let stack = Stack::start().await;
    let ada = stack.user("ada").await;
    let body = vec![b' '; 64 * 1024 + 1];
    let routes = &stack.gateway.template.routes;
    assert!(routes.len() > 20, "the template's routes: {}", routes.len());
    for route in routes {
        // Any value fits a path parameter: the size check comes before everything else.
        let path: String = route
            .path
            .split('/')
            .map(|seg| {
                if seg.starts_with('{') {
                    "0190c3a4-0000-7000-8000-000000000001"
                } else {
                    seg
                }
            })
            .collect::<Vec<_>>()
            .join("/");
        let method = if route.method == "ANY" {
            "POST"
        } else {
            route.method.as_str()
        };
        for client in [&ada.client, &stack.client()] {
            let r = client.raw(method, &path, body.clone()).await;
            assert_eq!(
                (r.status, r.error_code()),
                (413, "payload_too_large"),
                "{method} {path}: {}",
                r.body
            );
        }
    }
}

#[tokio::test]
async fn anonymous_health_has_only_the_status_and_an_admin_gets_details() {
    let stack = Stack::start_with(&[("ADMIN_USER_IDS", ADMIN)]).await;
    let anonymous = stack.client().get("/health").await;
    assert_eq!(anonymous.body, json!({"status": "healthy"}));
    let user = stack.user("someone").await;
    assert_eq!(user.client.get("/health").await.body, json!({"status": "healthy"}));
    let forged = stack.client().with_token("not-a-token").get("/health").await;
    assert_eq!(forged.body, json!({"status": "healthy"}));
    let admin = stack.user_with_id(ADMIN).await;
    let detailed = admin.client.get("/health").await;
    assert_eq!(detailed.body["status"], "healthy");
    assert!(
        detailed.body["dependencies"]["redis"]["latencyMs"].as_f64().is_some(),
        "{}",
        detailed.body
    );
    assert!(detailed.body["outboxBacklog"].is_u64(), "{}", detailed.body);
}

#[tokio::test]
async fn an_event_from_a_source_not_allowed_for_its_type_or_with_a_bad_id_is_dead_lettered_with_a_reason() {
    let stack = Stack::start().await;
    let a = stack.user("sender").await;
    let b = stack.user("target").await;
    let data = json!({"id": "0190c3a4-0000-7000-9000-000000000001", "fromUserId": a.id, "toUserId": b.id, "status": "interested", "createdAt": "2026-01-01T00:00:00.000Z"});
    let mut forged = envelope(EventType::ConnectionRequestSent, &a.id, data.clone());
    forged.source = "auth".into();
    let bad_id = envelope(
        EventType::ConnectionRequestSent,
        &a.id,
        json!({"id": "0190c3a4-0000-7000-9000-000000000002", "fromUserId": a.id, "toUserId": "../admin", "status": "interested", "createdAt": "2026-01-01T00:00:00.000Z"}),
    );
    let genuine = envelope(EventType::ConnectionRequestSent, &a.id, data);
    let event = batch("connection-events", &[bytes(&forged), bytes(&bad_id), bytes(&genuine)]);
    for function in ["NotificationsConsumerFunction", "AnalyticsConsumerFunction"] {
        let report = stack
            .gateway
            .functions
            .invoke_consumer(function, event.clone())
            .await
            .expect("consume");
        assert_eq!(report["deadLettered"], 2, "{function}: {report}");
        assert_eq!(report["batchItemFailures"], json!([]), "{function}: {report}");
    }
    let notifications = b.client.get("/notifications").await;
    assert_eq!(
        notifications.body["notifications"].as_array().map(Vec::len),
        Some(1),
        "only the genuine one"
    );

    let dead = stack.dead_letters().await;
    let reasons: Vec<&str> = dead.iter().filter_map(|d| d["reason"].as_str()).collect();
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("may not emit CONNECTION_REQUEST_SENT")),
        "{reasons:?}"
    );
    assert!(reasons.iter().any(|r| r.contains("toUserId")), "{reasons:?}");
}

#[tokio::test]
async fn token_bearing_and_private_responses_are_not_stored() {
    let stack = Stack::start().await;
    let signup = stack
        .client()
        .post(
            "/auth/signup",
            json!({"email": "cache@example.com", "password": "correct horse battery", "firstName": "C", "lastName": "D"}),
        )
        .await;
    assert_eq!(signup.status, 201, "{}", signup.body);
    assert_eq!(signup.header("cache-control"), Some("no-store"), "the token");
    let token = signup.body["token"].as_str().expect("token");
    let profile = stack.client().with_token(token).get("/profile").await;
    assert_eq!(profile.status, 200);
    assert_eq!(profile.header("cache-control"), Some("no-store"), "the private profile");
}
