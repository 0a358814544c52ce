//! A key of the wrong type (or a counter that is no number) under one user makes that
//! user's request fail with a 500 JSON error, and the request leaves nothing behind:
//! no half-applied write, no event. Every Lua script and multi-command write of the
//! HTTP functions is exercised here. Rate-limit counters are left out of every
//! comparison (the snapshot skips them: counting a failed request is the limiter's job).

use std::collections::BTreeMap;

use devconnect::{keys, rate_limit};
use devconnect_tests::{
    social::User,
    stack::{Reply, Stack, TOPICS},
};
use serde_json::json;

/// Every produced event, on every topic.
async fn event_count(stack: &Stack) -> usize {
    let mut n = 0;
    for topic in TOPICS {
        n += stack.events(topic).await.len();
    }
    n
}

fn assert_internal(r: &Reply, what: &str) {
    assert_eq!(
        (r.status, r.error_code()),
        (500, "internal_error"),
        "{what}: {}",
        r.body
    );
    assert!(r.body["error"]["requestId"].is_string(), "{what}: {}", r.body);
}

/// The state before a request a test expects to fail, and the check that it changed
/// nothing: every data key, the broken one included (the scripts fail before touching it).
struct Before {
    data: BTreeMap<String, String>,
    events: usize,
}

impl Before {
    async fn take(stack: &Stack) -> Self {
        Self {
            data: stack.data_snapshot().await,
            events: event_count(stack).await,
        }
    }

    async fn assert_unchanged(&self, stack: &Stack, what: &str) {
        assert_eq!(
            stack.data_snapshot().await,
            self.data,
            "{what}: the failed request wrote something"
        );
        assert_eq!(
            event_count(stack).await,
            self.events,
            "{what}: the failed request produced an event"
        );
    }
}

async fn connected(stack: &Stack) -> (User, User) {
    let a = stack.user("ada").await;
    let b = stack.user("bob").await;
    stack.connect(&a, &b).await;
    (a, b)
}

// ---- auth ----

#[tokio::test]
async fn a_signup_whose_feed_index_is_not_a_sorted_set_leaves_no_account_behind() {
    let stack = Stack::start().await;
    stack.command::<()>(&["SET", keys::USERS, "garbage"]).await;
    let before = Before::take(&stack).await;
    let r = stack
        .client()
        .post(
            "/auth/signup",
            json!({"email": "new@example.com", "password": "correct horse battery", "firstName": "N", "lastName": "U"}),
        )
        .await;
    assert_internal(&r, "signup");
    before.assert_unchanged(&stack, "signup").await;
}

/// Signs up ada and other, breaks one of ada's login keys with `commands`, then checks
/// that ada's login fails without writing anything while other's still succeeds.
async fn login_with_a_broken_key(commands: &[&[&str]], what: &str) {
    let stack = Stack::start().await;
    stack.user("ada").await;
    stack.user("other").await;
    for command in commands {
        stack.command::<()>(command).await;
    }
    let before = Before::take(&stack).await;
    let client = stack.client();
    let login = |email: &str| {
        client.post(
            "/auth/login",
            json!({"email": email, "password": "correct horse battery"}),
        )
    };
    assert_internal(&login("ada@example.com").await, what);
    before.assert_unchanged(&stack, what).await;
    let other = login("other@example.com").await;
    assert_eq!(other.status, 200, "{what}: another user's login: {}", other.body);
}

#[tokio::test]
async fn a_login_whose_failure_counter_is_not_a_number_fails_and_changes_nothing() {
    let key = keys::login_failures("ada@example.com");
    login_with_a_broken_key(&[&["SET", &key, "many"]], "failure counter not a number").await;
}

#[tokio::test]
async fn a_login_whose_email_key_is_not_a_string_fails_and_changes_nothing() {
    let key = keys::email("ada@example.com");
    login_with_a_broken_key(&[&["DEL", &key], &["HSET", &key, "id", "x"]], "email key is a hash").await;
}

#[tokio::test]
async fn an_authenticated_request_whose_rate_counter_is_not_a_number_fails_and_changes_nothing() {
    let stack = Stack::start().await;
    let a = stack.user("ada").await;
    let b = stack.user("bob").await;
    // This window and the next, so a window boundary during the test cannot dodge it.
    let window = stack.state.config.rate_limits.window;
    let now = rate_limit::window_index(rate_limit::now_secs(), window);
    for w in [now, now + 1] {
        stack.command::<()>(&["SET", &keys::user_rate(&a.id, w), "lots"]).await;
    }
    let before = Before::take(&stack).await;
    let r = a.client.patch("/profile", json!({"about": "changed"})).await;
    assert_internal(&r, "PATCH /profile");
    before.assert_unchanged(&stack, "PATCH /profile").await;
    assert_eq!(b.client.get("/profile").await.status, 200, "another user is unaffected");
}

#[tokio::test]
async fn a_request_of_a_user_whose_record_is_not_a_hash_fails_and_changes_nothing() {
    let stack = Stack::start().await;
    let a = stack.user("ada").await;
    let key = keys::user(&a.id);
    stack.command::<()>(&["DEL", &key]).await;
    stack.command::<()>(&["SET", &key, "garbage"]).await;
    let before = Before::take(&stack).await;
    let r = a.client.patch("/profile", json!({"about": "changed"})).await;
    assert_internal(&r, "PATCH /profile");
    before.assert_unchanged(&stack, "PATCH /profile").await;
}

#[tokio::test]
async fn a_public_profile_whose_cache_is_not_a_string_fails_and_changes_nothing() {
    let stack = Stack::start().await;
    let a = stack.user("ada").await;
    let b = stack.user("bob").await;
    let key = keys::public_profile(&b.id);
    stack.command::<()>(&["HSET", &key, "x", "y"]).await;
    let before = Before::take(&stack).await;
    let r = a.client.get(&format!("/users/{}", b.id)).await;
    assert_internal(&r, "GET /users/{id}");
    before.assert_unchanged(&stack, "GET /users/{id}").await;
    assert_eq!(b.client.get(&format!("/users/{}", a.id)).await.status, 200);
}

// ---- presence ----

#[tokio::test]
async fn a_heartbeat_whose_last_seen_is_not_a_number_changes_nothing() {
    let stack = Stack::start().await;
    let a = stack.user("ada").await;
    let b = stack.user("bob").await;
    let key = keys::presence(&a.id);
    stack
        .command::<()>(&["HSET", &key, "online", "0", "lastSeen", "yesterday"])
        .await;
    let before = Before::take(&stack).await;
    let r = a.client.post("/presence/heartbeat", json!({})).await;
    assert_internal(&r, "heartbeat");
    before.assert_unchanged(&stack, "heartbeat").await;
    let ok = b.client.post("/presence/heartbeat", json!({})).await;
    assert!(ok.status < 300, "another user's heartbeat: {}", ok.body);
}

#[tokio::test]
async fn going_offline_with_a_presence_record_that_is_not_a_hash_changes_nothing() {
    let stack = Stack::start().await;
    let a = stack.user("ada").await;
    let key = keys::presence(&a.id);
    stack.command::<()>(&["SET", &key, "garbage"]).await;
    let before = Before::take(&stack).await;
    let r = a.client.post("/presence/offline", json!({})).await;
    assert_internal(&r, "offline");
    before.assert_unchanged(&stack, "offline").await;
}

// ---- messaging ----

#[tokio::test]
async fn a_message_to_a_user_whose_conversation_keys_are_broken_changes_nothing() {
    let stack = Stack::start().await;
    let (a, b) = connected(&stack).await;
    let c = stack.user("cy").await;
    stack.connect(&a, &c).await;
    let unread_field = format!("unread:{}", b.id);
    let cases: [(&str, String, Vec<&str>); 3] = [
        (
            "unread counter not a number",
            keys::conversation(&a.id, &b.id),
            vec!["HSET", "", &unread_field, "lots"],
        ),
        (
            "conversation not a hash",
            keys::conversation(&a.id, &b.id),
            vec!["SET", "", "x"],
        ),
        (
            "stream not a stream",
            keys::messages(&a.id, &b.id),
            vec!["SET", "", "x"],
        ),
    ];
    for (what, key, mut command) in cases {
        stack.command::<()>(&["DEL", &key]).await;
        command[1] = &key;
        stack.command::<()>(&command).await;
        let before = Before::take(&stack).await;
        let r = a.message(&b.id, "hello").await;
        assert_internal(&r, what);
        before.assert_unchanged(&stack, what).await;
        stack.command::<()>(&["DEL", &key]).await;
    }
    let ok = a.message(&c.id, "hello").await;
    assert_eq!(ok.status, 201, "a message to another user: {}", ok.body);
}

#[tokio::test]
async fn a_message_to_a_user_whose_conversation_list_is_broken_is_stored_once_and_its_event_produced() {
    let stack = Stack::start().await;
    let (a, b) = connected(&stack).await;
    stack
        .command::<()>(&["SET", &keys::conversations(&b.id), "garbage"])
        .await;
    let sent = a.message(&b.id, "hello").await;
    assert_eq!(
        sent.status, 201,
        "the message is the record; the list is a projection: {}",
        sent.body
    );
    let history = b.client.get(&format!("/messages/{}", a.id)).await;
    assert_eq!(
        history.body["messages"].as_array().map(Vec::len),
        Some(1),
        "{}",
        history.body
    );
    let produced = stack.events("message-events").await;
    assert_eq!(
        produced.len(),
        1,
        "MESSAGE_SENT produced, so the receiver is still notified"
    );
    let mine = a.client.get("/conversations").await;
    assert_eq!(
        mine.body["conversations"][0]["user"]["id"],
        b.id.as_str(),
        "{}",
        mine.body
    );
}

#[tokio::test]
async fn marking_read_a_conversation_whose_unread_counter_is_not_a_number_changes_nothing() {
    let stack = Stack::start().await;
    let (a, b) = connected(&stack).await;
    assert_eq!(a.message(&b.id, "hello").await.status, 201);
    let key = keys::conversation(&a.id, &b.id);
    stack
        .command::<()>(&["HSET", &key, &format!("unread:{}", b.id), "lots"])
        .await;
    let before = Before::take(&stack).await;
    let r = b.client.post(&format!("/messages/{}/read", a.id), json!({})).await;
    assert_internal(&r, "mark read");
    before.assert_unchanged(&stack, "mark read").await;
}

#[tokio::test]
async fn reading_a_history_that_is_not_a_stream_fails_and_changes_nothing() {
    let stack = Stack::start().await;
    let (a, b) = connected(&stack).await;
    let key = keys::messages(&a.id, &b.id);
    stack.command::<()>(&["SET", &key, "garbage"]).await;
    let before = Before::take(&stack).await;
    let r = a.client.get(&format!("/messages/{}", b.id)).await;
    assert_internal(&r, "history");
    before.assert_unchanged(&stack, "history").await;
}

// ---- requests ----

#[tokio::test]
async fn a_request_whose_pair_record_is_not_a_hash_fails_and_changes_nothing() {
    let stack = Stack::start().await;
    let a = stack.user("ada").await;
    let b = stack.user("bob").await;
    let c = stack.user("cy").await;
    let key = keys::pair(&a.id, &b.id);
    stack.command::<()>(&["SET", &key, "garbage"]).await;
    let before = Before::take(&stack).await;
    let r = a.send_request("interested", &b.id).await;
    assert_internal(&r, "send request");
    before.assert_unchanged(&stack, "send request").await;
    let ok = a.send_request("interested", &c.id).await;
    assert_eq!(ok.status, 201, "a request to another user: {}", ok.body);
}

#[tokio::test]
async fn a_request_to_a_user_whose_inbox_or_seen_set_is_broken_creates_no_pair_record() {
    let stack = Stack::start().await;
    let a = stack.user("ada").await;
    let b = stack.user("bob").await;
    let c = stack.user("cy").await;
    for (key, what) in [
        (keys::inbox(&b.id), "the receiver's inbox"),
        (keys::seen(&a.id), "the sender's seen set"),
    ] {
        stack.command::<()>(&["SET", &key, "garbage"]).await;
        let before = Before::take(&stack).await;
        let r = a.send_request("interested", &b.id).await;
        assert_internal(&r, what);
        before.assert_unchanged(&stack, what).await;
        stack.command::<()>(&["DEL", &key]).await;
    }
    let ok = a.send_request("interested", &b.id).await;
    assert_eq!(
        ok.status, 201,
        "once repaired, the same request goes through: {}",
        ok.body
    );
    let other = c.send_request("interested", &a.id).await;
    assert_eq!(other.status, 201, "{}", other.body);
}

#[tokio::test]
async fn accepting_a_request_whose_sender_has_broken_connections_leaves_it_pending() {
    let stack = Stack::start().await;
    let a = stack.user("ada").await;
    let b = stack.user("bob").await;
    let sent = a.send_request("interested", &b.id).await;
    let id = sent.body["request"]["id"].as_str().expect("request id").to_string();
    stack
        .command::<()>(&["SET", &keys::connections(&a.id), "garbage"])
        .await;
    let before = Before::take(&stack).await;
    let path = format!("/requests/review/accepted/{id}");
    let accept = || b.client.post(&path, json!({}));
    assert_internal(&accept().await, "accept");
    before.assert_unchanged(&stack, "accept").await;
    stack.command::<()>(&["DEL", &keys::connections(&a.id)]).await;
    let retried = accept().await;
    assert_eq!(
        retried.status, 200,
        "once repaired, the acceptance goes through: {}",
        retried.body
    );
}

#[tokio::test]
async fn reviewing_a_request_whose_pair_record_is_not_a_hash_fails_and_changes_nothing() {
    let stack = Stack::start().await;
    let a = stack.user("ada").await;
    let b = stack.user("bob").await;
    let sent = a.send_request("interested", &b.id).await;
    assert_eq!(sent.status, 201, "{}", sent.body);
    let id = sent.body["request"]["id"].as_str().expect("request id").to_string();
    let key = keys::pair(&a.id, &b.id);
    stack.command::<()>(&["DEL", &key]).await;
    stack.command::<()>(&["SET", &key, "garbage"]).await;
    let before = Before::take(&stack).await;
    let r = b
        .client
        .post(&format!("/requests/review/accepted/{id}"), json!({}))
        .await;
    assert_internal(&r, "review");
    before.assert_unchanged(&stack, "review").await;
}
