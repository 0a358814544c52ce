//! The message alert cooldown: a conversation's burst of messages to an offline user is
//! one email (or SMS), not one per message; every message still has its in-app
//! notification, and other conversations and kinds are not silenced.

use std::time::Duration;

use devconnect_channels::Channels;
use devconnect_tests::Stack;

use crate::router::{channels, notification, requested, route_at, route_on};

const NOW: &str = "2026-01-15T12:00:00Z";

/// The router with a cooldown of `length` instead of the default.
fn channels_cooling_for(stack: &Stack, length: Duration) -> Channels {
    let mut ch = channels(stack);
    ch.settings.message_cooldown = length;
    ch
}

async fn emails_to(stack: &Stack, user: &str) -> usize {
    requested(stack, "email-events", user).await.len()
}

#[tokio::test]
async fn a_burst_of_messages_from_one_sender_emails_the_receiver_once() {
    let stack = Stack::start().await;
    let (ada, bob) = (stack.user("ada").await, stack.user("bob").await);
    let burst: Vec<_> = (0..3).map(|_| notification(&bob.id, &ada.id, "message")).collect();
    let later = notification(&bob.id, &ada.id, "message");

    let first = route_at(&stack, "2026-01-15T12:00:00Z", &burst.iter().collect::<Vec<_>>()).await;
    let second = route_at(&stack, "2026-01-15T12:00:30Z", &[&later]).await;

    assert_eq!(emails_to(&stack, &bob.id).await, 1);
    assert_eq!(
        (
            first["applied"].as_u64(),
            first["skipped"].as_u64(),
            second["skipped"].as_u64()
        ),
        (Some(1), Some(2), Some(1)),
        "{first} {second}"
    );
    assert_eq!(silenced_count(&stack).await, 3, "counted for the operators");
}

/// The router's `MessageAlertsSilenced` counter, as the local stack shows its metrics.
async fn silenced_count(stack: &Stack) -> u64 {
    let metrics = stack.client().get("/_local/metrics").await.body;
    metrics["counters"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| {
            c["name"] == devconnect::metrics::MESSAGE_ALERTS_SILENCED
                && c["dimensions"] == serde_json::json!({"Function": "channels-router"})
        })
        .filter_map(|c| c["value"].as_u64())
        .sum()
}

#[tokio::test]
async fn the_cooldown_is_per_conversation_and_silences_messages_only() {
    let stack = Stack::start().await;
    let (ada, bob, cy) = (stack.user("ada").await, stack.user("bob").await, stack.user("cy").await);
    route_at(
        &stack,
        "2026-01-15T12:00:00Z",
        &[&notification(&bob.id, &ada.id, "message")],
    )
    .await;

    let from_cy = notification(&bob.id, &cy.id, "message");
    let request_from_ada = notification(&bob.id, &ada.id, "connection_request");
    let to_ada = notification(&ada.id, &bob.id, "message");
    route_at(&stack, "2026-01-15T12:00:10Z", &[&from_cy, &request_from_ada, &to_ada]).await;

    let kinds: Vec<String> = requested(&stack, "email-events", &bob.id)
        .await
        .into_iter()
        .map(|d| d.kind)
        .collect();
    assert_eq!(kinds, ["MESSAGE", "MESSAGE", "CONNECTION_REQUEST"]);
    assert_eq!(emails_to(&stack, &ada.id).await, 1);
}

#[tokio::test]
async fn a_redelivered_burst_still_emails_once() {
    let stack = Stack::start().await;
    let (ada, bob) = (stack.user("ada").await, stack.user("bob").await);
    let burst: Vec<_> = (0..2).map(|_| notification(&bob.id, &ada.id, "message")).collect();
    let burst: Vec<_> = burst.iter().collect();

    route_at(&stack, "2026-01-15T12:00:00Z", &burst).await;
    route_at(&stack, "2026-01-15T12:00:01Z", &burst).await;

    assert_eq!(emails_to(&stack, &bob.id).await, 1);
}

#[tokio::test]
async fn after_the_cooldown_the_next_message_emails_again() {
    let stack = Stack::start().await;
    let (ada, bob) = (stack.user("ada").await, stack.user("bob").await);
    // Redis expires the cooldown on its own clock, so this one waits for a short one.
    let ch = channels_cooling_for(&stack, Duration::from_millis(100));
    route_on(&ch, NOW, &[&notification(&bob.id, &ada.id, "message")]).await;
    route_on(&ch, NOW, &[&notification(&bob.id, &ada.id, "message")]).await;
    assert_eq!(emails_to(&stack, &bob.id).await, 1);

    tokio::time::sleep(Duration::from_millis(150)).await;
    route_on(&ch, NOW, &[&notification(&bob.id, &ada.id, "message")]).await;

    assert_eq!(emails_to(&stack, &bob.id).await, 2);
}

#[tokio::test]
async fn the_cooldown_lasts_as_long_as_configured() {
    let stack = Stack::start().await;
    let (ada, bob) = (stack.user("ada").await, stack.user("bob").await);
    route_at(
        &stack,
        "2026-01-15T12:00:00Z",
        &[&notification(&bob.id, &ada.id, "message")],
    )
    .await;

    let key = devconnect::keys::channel_message_cooldown(&bob.id, &ada.id);
    let left: i64 = stack.command(&["PTTL", &key]).await;
    let configured = devconnect_channels::settings::DEFAULT_MESSAGE_COOLDOWN.as_millis() as i64;
    assert!(
        (configured - 5_000..=configured).contains(&left),
        "{left} ms left of {configured}"
    );
}

#[tokio::test]
async fn with_a_zero_cooldown_every_message_emails() {
    let stack = Stack::start().await;
    let (ada, bob) = (stack.user("ada").await, stack.user("bob").await);
    let ch = channels_cooling_for(&stack, Duration::ZERO);
    let burst: Vec<_> = (0..3).map(|_| notification(&bob.id, &ada.id, "message")).collect();

    route_on(&ch, NOW, &burst.iter().collect::<Vec<_>>()).await;

    assert_eq!(emails_to(&stack, &bob.id).await, 3);
}

#[tokio::test]
async fn a_cooldown_key_without_a_ttl_silences_nothing_and_is_replaced_by_a_real_cooldown() {
    let stack = Stack::start().await;
    let (ada, bob) = (stack.user("ada").await, stack.user("bob").await);
    let key = devconnect::keys::channel_message_cooldown(&bob.id, &ada.id);
    // Written by hand, and of the wrong type.
    let _: () = stack.command(&["HSET", &key, "oops", "1"]).await;

    route_at(&stack, NOW, &[&notification(&bob.id, &ada.id, "message")]).await;

    assert_eq!(emails_to(&stack, &bob.id).await, 1);
    let left: i64 = stack.command(&["PTTL", &key]).await;
    assert!(left > 0, "{left}");
}
