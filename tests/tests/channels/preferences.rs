//! The preferences routes: defaults, validation, phone verification and the login-free
//! unsubscribe link, as a user meets them through the local gateway.

use devconnect_tests::Stack;
use serde_json::json;

use crate::router::{requested, route_at, set_preferences, verify_phone};

#[tokio::test]
async fn a_new_user_gets_email_for_high_priority_kinds_and_no_sms() {
    let stack = Stack::start().await;
    let b = stack.user("bob").await;
    let r = b.client.get("/notifications/preferences").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.body["kinds"]["CONNECTION_REQUEST"],
        json!({"email": true, "sms": false})
    );
    assert_eq!(
        r.body["kinds"]["CONNECTION_ACCEPTED"],
        json!({"email": false, "sms": false})
    );
    assert_eq!(r.body["kinds"]["DIGEST"], json!({"email": true}));
    assert_eq!(
        (r.body["quietHours"].clone(), r.body["phone"].clone()),
        (json!(null), json!(null))
    );
}

#[tokio::test]
async fn invalid_preferences_are_refused_with_400_and_change_nothing() {
    let stack = Stack::start().await;
    let b = stack.user("bob").await;
    set_preferences(&b.client, json!({"kinds": {"MESSAGE": {"email": false}}})).await;
    let before = stack.data_snapshot().await;
    let bad = [
        json!({"kinds": {"PROFILE_VIEWED": {"email": true}}}),
        json!({"kinds": {"MESSAGE": {"email": "yes"}}}),
        json!({"kinds": {"MESSAGE": {"push": true}}}),
        json!({"kinds": {"DIGEST": {"sms": true}}}),
        json!({"quietHours": {"start": "25:00", "end": "07:00", "timeZone": "Europe/Paris"}}),
        json!({"quietHours": {"start": "22:00", "end": "22:00", "timeZone": "Europe/Paris"}}),
        json!({"quietHours": {"start": "22:00", "end": "07:00", "timeZone": "Mars/Olympus"}}),
        json!({"quietHours": {"start": "22:00", "end": "07:00"}}),
        json!({"phoneNumber": "06 12 34 56 78"}),
        json!({"kinds": {"MESSAGE": {"email": true}}, "phoneNumber": "+0612"}),
        json!({"colour": "blue"}),
        json!([1, 2]),
    ];
    for body in bad {
        let r = b
            .client
            .raw("PUT", "/notifications/preferences", body.to_string().into_bytes())
            .await;
        assert_eq!(r.status, 400, "{body} -> {}", r.body);
        assert!(r.body["error"]["code"].is_string(), "{}", r.body);
    }
    let r = b
        .client
        .raw("PUT", "/notifications/preferences", b"{not json".to_vec())
        .await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(stack.data_snapshot().await, before, "a refused update changed data");
    assert!(
        requested(&stack, "sms-events", &b.id).await.is_empty(),
        "no code was sent"
    );
}

#[tokio::test]
async fn a_phone_number_counts_only_once_its_code_is_verified() {
    let stack = Stack::start().await;
    let b = stack.user("bob").await;
    let r = set_preferences(&b.client, json!({"phoneNumber": "+33612345678"})).await;
    assert_eq!(r["phone"], json!({"number": "+33612345678", "verified": false}));
    let sent = requested(&stack, "sms-events", &b.id).await[0].text.clone();
    let sent: u32 = sent
        .chars()
        .filter(char::is_ascii_digit)
        .take(6)
        .collect::<String>()
        .parse()
        .unwrap();
    let wrong = b
        .client
        .post(
            "/notifications/preferences/phone/verify",
            json!({"code": format!("{:06}", (sent + 1) % 1_000_000)}),
        )
        .await;
    assert_eq!(wrong.status, 400, "{}", wrong.body);
    assert!(
        wrong.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("4 attempts left"),
        "{}",
        wrong.body
    );
    verify_phone(&stack, &b.client, &b.id, "+33612345678").await;
}

#[tokio::test]
async fn unsubscribing_through_the_emailed_link_turns_that_kind_off() {
    let stack = Stack::start().await;
    let b = stack.user("bob").await;
    let first = crate::router::notification(&b.id, &b.id, "connection_request");
    route_at(&stack, "2026-01-15T12:00:00Z", &[&first]).await;
    let email = requested(&stack, "email-events", &b.id).await.pop().expect("an email");
    let link = email.unsubscribe_url.expect("an unsubscribe link");
    let path = &link[link.find("/notifications/unsubscribe").expect("our route")..];

    // No login: a client without a token follows the link.
    let r = stack.client().get(path).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        (r.body["kind"].as_str(), r.body["unsubscribed"].as_bool()),
        (Some("CONNECTION_REQUEST"), Some(true))
    );

    let prefs = b.client.get("/notifications/preferences").await;
    assert_eq!(prefs.body["kinds"]["CONNECTION_REQUEST"]["email"], false);
    let second = crate::router::notification(&b.id, &b.id, "connection_request");
    route_at(&stack, "2026-01-15T12:01:00Z", &[&second]).await;
    assert_eq!(
        requested(&stack, "email-events", &b.id).await.len(),
        1,
        "no email after unsubscribing"
    );
}

#[tokio::test]
async fn a_forged_unsubscribe_token_is_400_and_changes_nothing() {
    use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
    let stack = Stack::start().await;
    let b = stack.user("bob").await;
    let created = crate::router::notification(&b.id, &b.id, "connection_request");
    route_at(&stack, "2026-01-15T12:00:00Z", &[&created]).await;
    let link = requested(&stack, "email-events", &b.id)
        .await
        .pop()
        .unwrap()
        .unsubscribe_url
        .unwrap();
    let token = link.split_once("token=").unwrap().1;
    let mac = token.split_once('.').unwrap().1;
    // The genuine MAC on a payload naming another kind, a made-up MAC, and garbage.
    let other_kind = format!("{}.{mac}", URL_SAFE_NO_PAD.encode(format!("v1:{}:MESSAGE", b.id)));
    let made_up = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(format!("v1:{}:MESSAGE", b.id)),
        URL_SAFE_NO_PAD.encode([0u8; 32])
    );
    let before = stack.data_snapshot().await;
    for forged in [other_kind.as_str(), made_up.as_str(), "garbage", ""] {
        let r = stack
            .client()
            .get(&format!("/notifications/unsubscribe?token={forged}"))
            .await;
        assert_eq!(r.status, 400, "{forged} -> {}", r.body);
    }
    let r = stack.client().get("/notifications/unsubscribe").await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(stack.data_snapshot().await, before);
}

#[tokio::test]
async fn the_fifth_wrong_code_discards_the_number_waiting_for_verification() {
    let stack = Stack::start().await;
    let b = stack.user("bob").await;
    set_preferences(&b.client, json!({"phoneNumber": "+33612345678"})).await;
    let sms = requested(&stack, "sms-events", &b.id).await;
    let sent: u32 = sms[0]
        .text
        .chars()
        .filter(char::is_ascii_digit)
        .take(6)
        .collect::<String>()
        .parse()
        .unwrap();
    let wrong = format!("{:06}", (sent + 1) % 1_000_000);
    let verify = |code: String| {
        let client = b.client.clone();
        async move {
            client
                .post("/notifications/preferences/phone/verify", json!({ "code": code }))
                .await
        }
    };
    for left in (1..=4).rev() {
        let r = verify(wrong.clone()).await;
        assert_eq!(r.status, 400, "{}", r.body);
        assert!(
            r.body["error"]["message"]
                .as_str()
                .unwrap()
                .contains(&format!("{left} attempt")),
            "{}",
            r.body
        );
    }
    assert_eq!(verify(wrong).await.status, 403, "the fifth wrong code");
    // Even the right code is too late now: nothing waits for it.
    assert_eq!(verify(format!("{sent:06}")).await.status, 409);
    let prefs = b.client.get("/notifications/preferences").await;
    assert_eq!(prefs.body["phone"], json!(null));
}
