//! `docs/asyncapi.json` and `docs/events/*.schema.json`: generated from the payload types,
//! committed, and true of what a real stack puts on its topics and sockets. Also the one
//! topic list ([`Topic`]): the local scripts and template.yaml name no other topic.
//!
//! Regenerate the documents with `UPDATE_CONTRACT=1 cargo test -p devconnect-tests --test contract`.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use devconnect::{
    asyncapi,
    events::{EventType, Topic},
    payloads::Event,
};
use devconnect_tests::{socket, Stack};
use serde_json::{json, Value};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn committed(path: &str) -> Value {
    let text = std::fs::read_to_string(repo_root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// A validator for the schema at `pointer` inside the committed AsyncAPI document (the
/// document is the root, so its `#/components/...` references resolve).
fn validator_in_document(pointer: &str) -> jsonschema::Validator {
    let mut root = committed(asyncapi::DOCUMENT_PATH);
    root["$ref"] = json!(format!("#{pointer}"));
    jsonschema::options()
        .with_draft(jsonschema::Draft::Draft7)
        .should_validate_formats(true)
        .build(&root)
        .unwrap_or_else(|e| panic!("schema at {pointer}: {e}"))
}

/// A validator for a committed standalone schema, `docs/events/<name>.schema.json`.
fn validator_of_file(name: &str) -> jsonschema::Validator {
    let schema = committed(&format!("{}/{name}.schema.json", asyncapi::SCHEMAS_DIR));
    jsonschema::options()
        .should_validate_formats(true)
        .build(&schema)
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn violations(validator: &jsonschema::Validator, value: &Value) -> Vec<String> {
    validator
        .iter_errors(value)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect()
}

#[test]
fn the_committed_asyncapi_document_and_schemas_are_generated_from_the_types() {
    let update = std::env::var_os("UPDATE_CONTRACT").is_some();
    let mut stale = Vec::new();
    for (path, contents) in asyncapi::files() {
        let file = repo_root().join(&path);
        if update {
            std::fs::create_dir_all(file.parent().expect("a parent")).expect("mkdir");
            std::fs::write(&file, &contents).expect("write");
        } else if std::fs::read_to_string(&file).ok().as_deref() != Some(contents.as_str()) {
            stale.push(path);
        }
    }
    assert!(
        stale.is_empty(),
        "stale (regenerate with UPDATE_CONTRACT=1 cargo test -p devconnect-tests --test contract): {stale:?}"
    );
}

#[test]
fn no_schema_file_is_left_over_from_a_removed_event_type() {
    let generated: BTreeSet<String> = asyncapi::files().into_iter().map(|(path, _)| path).collect();
    let dir = repo_root().join(asyncapi::SCHEMAS_DIR);
    for entry in std::fs::read_dir(&dir).expect("docs/events") {
        let name = entry.expect("entry").file_name().to_string_lossy().into_owned();
        let path = format!("{}/{name}", asyncapi::SCHEMAS_DIR);
        assert!(generated.contains(&path), "{path} is not generated any more: delete it");
    }
}

#[test]
fn the_asyncapi_document_has_a_message_for_every_event_type_on_its_topic() {
    let doc = committed(asyncapi::DOCUMENT_PATH);
    assert_eq!(doc["asyncapi"], "3.0.0");
    for (event_type, _) in Event::root_schemas() {
        let id = event_type.as_str();
        let channel = event_type.topic().default_name();
        assert!(
            doc["channels"][channel]["messages"].get(&id).is_some(),
            "{id} is not a message of channel {channel}"
        );
    }
    assert!(doc["channels"]["realtime"]["messages"].get("serverFrame").is_some());
}

/// Every event type of the social story below (all but the channels' and analytics'
/// derived events, which other suites drive).
const STORY_TYPES: [EventType; 14] = [
    EventType::UserSignup,
    EventType::UserLogin,
    EventType::UserLogout,
    EventType::ProfileUpdated,
    EventType::TierChanged,
    EventType::UserOnline,
    EventType::UserOffline,
    EventType::ConnectionRequestSent,
    EventType::ConnectionRequestIgnored,
    EventType::ConnectionAccepted,
    EventType::ConnectionRejected,
    EventType::MessageSent,
    EventType::MessagesRead,
    EventType::NotificationCreated,
];

const ADMIN: &str = "0190c3a4-0000-7000-8000-0000000000ad";

#[tokio::test]
async fn every_event_a_social_story_produces_matches_the_asyncapi_document_and_its_schema() {
    let stack = Stack::start_full(&[("ADMIN_USER_IDS", ADMIN)]).await;
    let ada = stack.user("ada").await;
    let bo = stack.user("bo").await;
    let cy = stack.user("cy").await;
    let admin = stack.user_with_id(ADMIN).await;

    let login = stack
        .client()
        .post(
            "/auth/login",
            json!({"email": "ada@example.com", "password": "correct horse battery"}),
        )
        .await;
    assert_eq!(login.status, 200, "{}", login.body);
    let patched = ada.client.patch("/profile", json!({"about": "Rust and coffee"})).await;
    assert_eq!(patched.status, 200, "{}", patched.body);
    let tier = admin
        .client
        .raw(
            "PUT",
            &format!("/admin/users/{}/tier", ada.id),
            br#"{"tier":"premium"}"#.to_vec(),
        )
        .await;
    assert_eq!(tier.status, 200, "{}", tier.body);
    stack.connect(&ada, &bo).await;
    assert_eq!(cy.send_request("ignored", &ada.id).await.status, 201);
    let to_reject = cy.send_request("interested", &bo.id).await;
    assert_eq!(to_reject.status, 201, "{}", to_reject.body);
    let request_id = to_reject.body["request"]["id"].as_str().expect("id").to_string();
    let rejected = bo
        .client
        .post(&format!("/requests/review/rejected/{request_id}"), json!({}))
        .await;
    assert_eq!(rejected.status, 200, "{}", rejected.body);
    assert_eq!(ada.message(&bo.id, "hello").await.status, 201);
    assert_eq!(
        bo.client
            .post(&format!("/messages/{}/read", ada.id), json!({}))
            .await
            .status,
        200
    );
    assert_eq!(cy.client.post("/presence/heartbeat", json!({})).await.status, 200);
    assert_eq!(cy.client.post("/presence/offline", json!({})).await.status, 204);
    assert_eq!(cy.client.post("/auth/logout", json!({})).await.status, 204);

    // The consumers turn some of these into NOTIFICATION_CREATED; wait for all of it.
    let deadline = Instant::now() + Duration::from_secs(20);
    let events = loop {
        let mut events = Vec::new();
        for topic in Topic::ALL.into_iter().filter(|t| *t != Topic::DeadLetter) {
            events.extend(stack.events(topic.default_name()).await);
        }
        let seen: BTreeSet<String> = events.iter().map(|e| e.envelope.event_type.as_str()).collect();
        if STORY_TYPES.iter().all(|t| seen.contains(&t.as_str())) || Instant::now() > deadline {
            break events;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    let envelope = validator_of_file("envelope");
    let mut seen = BTreeSet::new();
    for event in &events {
        let id = event.envelope.event_type.as_str();
        let mut problems = violations(&envelope, &event.raw);
        problems.extend(violations(&validator_of_file(&id), &event.raw["data"]));
        problems.extend(violations(
            &validator_in_document(&format!("/components/messages/{id}/payload")),
            &event.raw,
        ));
        assert!(problems.is_empty(), "{id} {}: {problems:?}", event.raw);
        assert_eq!(
            event.key, event.envelope.key,
            "{id}: the record key is the envelope key"
        );
        seen.insert(id);
    }
    let missing: Vec<String> = STORY_TYPES
        .iter()
        .map(|t| t.as_str())
        .filter(|t| !seen.contains(t))
        .collect();
    assert!(missing.is_empty(), "the story produced no {missing:?}");
    assert_eq!(
        stack.dead_letters().await,
        Vec::<Value>::new(),
        "a consumer refused a produced event"
    );
}

#[tokio::test]
async fn every_frame_a_socket_receives_matches_the_server_frame_schema() {
    let stack = Stack::start_full(&[]).await;
    let ada = stack.user("ada").await;
    let bo = stack.user("bo").await;
    stack.connect(&ada, &bo).await;
    let mut bo_socket = socket::open(&stack, &bo).await;
    let _ada_socket = socket::open(&stack, &ada).await;
    assert_eq!(ada.message(&bo.id, "hi Bo").await.status, 201);
    let cy = stack.user("cy").await;
    assert_eq!(cy.send_request("interested", &bo.id).await.status, 201);

    let schema = validator_in_document("/components/messages/SERVER_FRAME/payload");
    let frames = socket::first_frames_of(
        &mut bo_socket,
        &["presence", "message", "notification"],
        Duration::from_secs(10),
    )
    .await
    .unwrap_or_else(|missing| panic!("no frame of {missing:?}"));
    for frame in frames.values() {
        let problems = violations(&schema, frame);
        assert!(problems.is_empty(), "{frame}: {problems:?}");
    }
}

#[test]
fn a_frame_the_schema_does_not_describe_is_refused_by_it() {
    let schema = validator_in_document("/components/messages/SERVER_FRAME/payload");
    assert!(!violations(&schema, &json!({"type": "message", "message": {"id": "1-0"}})).is_empty());
    let data = validator_of_file("MESSAGE_SENT");
    assert!(!violations(&data, &json!({"id": "1-0", "fromUserId": "not-a-uuid"})).is_empty());
}

#[test]
fn the_local_scripts_create_exactly_the_shared_topic_list() {
    let lib = std::fs::read_to_string(repo_root().join("infra/local/lib.sh")).expect("lib.sh");
    let line = lib
        .lines()
        .find_map(|l| l.strip_prefix("DC_TOPICS=("))
        .expect("DC_TOPICS=( in infra/local/lib.sh");
    let listed: Vec<&str> = line.trim_end_matches(')').split_whitespace().collect();
    assert_eq!(listed, Topic::DEFAULT_NAMES, "infra/local/lib.sh DC_TOPICS");
}

#[test]
fn template_yaml_names_only_topics_of_the_shared_list() {
    let template = std::fs::read_to_string(repo_root().join("template.yaml")).expect("template.yaml");
    let known: BTreeSet<&str> = Topic::DEFAULT_NAMES.into_iter().collect();
    let mut named = BTreeSet::new();
    for line in template.lines() {
        let line = line.trim().trim_start_matches("- ").trim_matches('"');
        if let Some(list) = line.strip_prefix("Topics: [") {
            named.extend(list.trim_end_matches(']').split(',').map(|t| t.trim().to_string()));
        } else if let Some(topic) = line.strip_prefix("Destination: kafka://") {
            named.insert(topic.to_string());
        } else if let Some((_, topic)) = line.split_once("topic/${ClusterName}/${ClusterUuid}/") {
            if topic != "*" {
                named.insert(topic.to_string());
            }
        }
    }
    assert!(
        named.len() >= 5,
        "found too few topic names to trust the scan: {named:?}"
    );
    let unknown: Vec<&String> = named.iter().filter(|t| !known.contains(t.as_str())).collect();
    assert!(
        unknown.is_empty(),
        "template.yaml names topics outside Topic::ALL: {unknown:?}"
    );
}
