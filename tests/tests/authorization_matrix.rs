//! Every social route against every kind of caller: no token, a stranger, the sender
//! and the receiver of a pending request, and a connection. A stranger never reads
//! or writes another user's requests, messages or presence.

use devconnect_tests::Stack;
use serde_json::{json, Value};

#[tokio::test]
async fn every_route_answers_each_kind_of_caller_as_documented() {
    let stack = Stack::start().await;
    let sender = stack.user("sender").await; // A: sent a pending request to B; connected to C
    let receiver = stack.user("receiver").await; // B
    let connection = stack.user("connection").await; // C
    let stranger = stack.user("stranger").await; // S
    stack.connect(&sender, &connection).await;
    let pending = sender.send_request("interested", &receiver.id).await;
    let request_id = pending.body["request"]["id"].as_str().unwrap().to_string();
    assert_eq!(connection.message(&sender.id, "hi A").await.status, 201);

    let nobody = stack.client();
    let a = &sender.id;
    let rows: Vec<(&str, &devconnect_tests::Client, &str, String, u16)> = vec![
        // requests
        ("nobody", &nobody, "POST", format!("/requests/send/interested/{a}"), 401),
        (
            "receiver",
            &receiver.client,
            "POST",
            format!("/requests/send/interested/{a}"),
            409,
        ),
        (
            "sender",
            &sender.client,
            "POST",
            format!("/requests/send/interested/{}", receiver.id),
            409,
        ),
        (
            "connection",
            &connection.client,
            "POST",
            format!("/requests/send/interested/{a}"),
            409,
        ),
        (
            "nobody",
            &nobody,
            "POST",
            format!("/requests/review/accepted/{request_id}"),
            401,
        ),
        (
            "stranger",
            &stranger.client,
            "POST",
            format!("/requests/review/accepted/{request_id}"),
            404,
        ),
        (
            "sender",
            &sender.client,
            "POST",
            format!("/requests/review/accepted/{request_id}"),
            404,
        ),
        (
            "connection",
            &connection.client,
            "POST",
            format!("/requests/review/accepted/{request_id}"),
            404,
        ),
        ("nobody", &nobody, "GET", "/requests/received".into(), 401),
        ("nobody", &nobody, "GET", "/connections".into(), 401),
        ("nobody", &nobody, "GET", "/feed".into(), 401),
        // messaging: A's conversation with C
        ("nobody", &nobody, "POST", format!("/messages/{a}"), 401),
        ("stranger", &stranger.client, "POST", format!("/messages/{a}"), 403),
        ("receiver", &receiver.client, "POST", format!("/messages/{a}"), 403),
        ("connection", &connection.client, "POST", format!("/messages/{a}"), 201),
        ("nobody", &nobody, "GET", format!("/messages/{a}"), 401),
        ("stranger", &stranger.client, "GET", format!("/messages/{a}"), 403),
        ("receiver", &receiver.client, "GET", format!("/messages/{a}"), 403),
        ("connection", &connection.client, "GET", format!("/messages/{a}"), 200),
        ("nobody", &nobody, "POST", format!("/messages/{a}/read"), 401),
        ("stranger", &stranger.client, "POST", format!("/messages/{a}/read"), 403),
        ("receiver", &receiver.client, "POST", format!("/messages/{a}/read"), 403),
        (
            "sender",
            &sender.client,
            "POST",
            format!("/messages/{}/read", connection.id),
            200,
        ),
        ("nobody", &nobody, "GET", "/conversations".into(), 401),
        // presence
        ("nobody", &nobody, "POST", "/presence/heartbeat".into(), 401),
        ("nobody", &nobody, "POST", "/presence/offline".into(), 401),
        ("nobody", &nobody, "GET", format!("/presence?userIds={a}"), 401),
        ("sender", &sender.client, "POST", "/presence/heartbeat".into(), 200),
        // the receiver may finally review
        (
            "receiver",
            &receiver.client,
            "POST",
            format!("/requests/review/accepted/{request_id}"),
            200,
        ),
    ];
    for (who, client, method, path, expected) in &rows {
        let body = if *method == "POST" && path.starts_with("/messages/") && !path.ends_with("/read") {
            json!({"text": "hello"})
        } else {
            json!({})
        };
        let r = client
            .raw(
                method,
                path,
                if *method == "GET" {
                    Vec::new()
                } else {
                    body.to_string().into_bytes()
                },
            )
            .await;
        assert_eq!(r.status, *expected, "{who} {method} {path}: {}", r.body);
        if r.status >= 400 {
            assert!(
                r.body["error"]["code"].is_string(),
                "{who} {method} {path}: no error shape"
            );
        }
    }

    // What each caller can read contains only their own data.
    let ids = |v: &Value, field: &str, inner: &str| -> Vec<String> {
        v[field]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x[inner]["id"].as_str().unwrap().to_string())
            .collect()
    };
    assert!(ids(
        &stranger.client.get("/requests/received").await.body,
        "requests",
        "fromUser"
    )
    .is_empty());
    assert!(ids(&stranger.client.get("/connections").await.body, "connections", "user").is_empty());
    assert!(ids(
        &stranger.client.get("/conversations").await.body,
        "conversations",
        "user"
    )
    .is_empty());
    assert_eq!(
        ids(
            &connection.client.get("/conversations").await.body,
            "conversations",
            "user"
        ),
        std::slice::from_ref(a)
    );

    let presence =
        |client: devconnect_tests::Client| async move { client.get(&format!("/presence?userIds={a}")).await.body };
    let seen_by_stranger = presence(stranger.client.clone()).await;
    assert_eq!(seen_by_stranger["presence"], json!([]));
    assert_eq!(seen_by_stranger["notVisible"], json!([a]));
    let seen_by_connection = presence(connection.client.clone()).await;
    assert_eq!(seen_by_connection["presence"][0]["online"], true);
    let seen_by_self = presence(sender.client.clone()).await;
    assert_eq!(seen_by_self["presence"][0]["userId"], a.as_str());
}
