//! Which deliveries a notification causes, free of Redis and Kafka: the recipient's
//! preferences, their quiet hours and the digest rule applied to one NOTIFICATION_CREATED.
//!
//! - Email: a high-priority kind is emailed now; a low-priority kind
//!   ([`Kind::is_low_priority`]) joins the user's digest for their current day, sent
//!   as one email when that day ends (if the digest itself is on).
//! - SMS: only to a verified number, only for kinds the user turned on; inside quiet
//!   hours it is held until the window ends. Quiet hours hold SMS only: an email
//!   waits in an inbox without waking anyone.
//! - Messages alert by email or SMS once per conversation burst: the message that
//!   alerts starts a cooldown ([`Context::message_cooldown`]) during which the same
//!   sender's further messages stay in-app only. A chat of twenty lines is one email,
//!   not twenty (nor twenty paid SMS); the in-app notifications are all there.

use std::time::Duration;

use chrono::{DateTime, Utc};
use devconnect::{
    delivery::{Channel, Delivery},
    payloads::NotificationDetail,
};
use serde::{Deserialize, Serialize};

use crate::{kinds::Kind, preferences::Preferences};

/// The NOTIFICATION_CREATED payload the router reads (the in-app notification's view),
/// decoded once by the shared consumer path.
pub use devconnect::payloads::NotificationCreated as Notification;

/// What the router knows about the recipient and the actor.
#[derive(Clone, Debug)]
pub struct Context<'a> {
    /// The recipient's preferences.
    pub preferences: &'a Preferences,
    /// The recipient's account email.
    pub email: &'a str,
    /// The actor's display name (empty if unknown).
    pub actor_name: &'a str,
    /// Base URL of the unsubscribe link.
    pub unsubscribe_base: &'a str,
    /// Signs the unsubscribe token.
    pub signer: &'a crate::unsubscribe::Signer,
    /// How long an alerted message silences the same sender's next ones (zero: every
    /// message alerts).
    pub message_cooldown: Duration,
    /// Whether the notification is a message and one from the same actor alerted the
    /// recipient less than `message_cooldown` ago (in an earlier batch or earlier in this one).
    pub cooling_down: bool,
}

/// One item of a daily digest, as stored until the day ends.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DigestItem {
    /// The notification's id.
    pub notification_id: String,
    /// Its kind.
    pub kind: Kind,
    /// One line of the digest.
    pub text: String,
    /// Where the digest goes (the account email when the item was added).
    pub address: String,
}

/// One thing to do for a notification.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Request the delivery now.
    Send(Delivery),
    /// Request the SMS when quiet hours end (`due_ms`).
    Hold {
        /// End of the window, ms since the epoch.
        due_ms: i64,
        /// The SMS.
        delivery: Delivery,
    },
    /// Add to the user's digest of `day` (their time zone), sent at `due_ms`.
    Digest {
        /// `YYYY-MM-DD` in the user's time zone.
        day: String,
        /// When that day ends, ms since the epoch.
        due_ms: i64,
        /// The line.
        item: DigestItem,
    },
    /// Start the conversation's message alert cooldown: until `ms` from now, messages
    /// from `actor_id` alert the recipient in-app only.
    Cooldown {
        /// The message notification that alerted.
        notification_id: String,
        /// Whose messages are silenced.
        actor_id: String,
        /// How long, ms.
        ms: i64,
    },
}

impl Action {
    /// The dedupe marker: one per notification and channel.
    pub fn marker(&self) -> String {
        let (id, channel) = match self {
            Action::Send(d) | Action::Hold { delivery: d, .. } => (d.notification_id.as_str(), d.channel),
            Action::Digest { item, .. } => (item.notification_id.as_str(), Channel::Email),
            Action::Cooldown { notification_id, .. } => return format!("{notification_id}:cooldown"),
        };
        format!("{id}:{}", channel_name(channel))
    }
}

/// `email` or `sms`.
pub fn channel_name(channel: Channel) -> &'static str {
    match channel {
        Channel::Email => "email",
        Channel::Sms => "sms",
    }
}

/// Subject and text of one notification.
pub fn wording(kind: Kind, actor: &str, detail: &NotificationDetail) -> (String, String) {
    let actor = if actor.is_empty() { "Someone" } else { actor };
    match kind {
        Kind::ConnectionRequest => (
            format!("{actor} wants to connect on DevConnect"),
            format!("{actor} sent you a connection request. Open DevConnect to accept or ignore it."),
        ),
        Kind::ConnectionAccepted => (
            format!("{actor} accepted your connection request"),
            format!("{actor} accepted your connection request. You can now message each other."),
        ),
        Kind::Message => {
            let preview = match detail {
                NotificationDetail::Message(message) => message.preview.as_str(),
                _ => "",
            };
            (format!("New message from {actor}"), format!("{actor}: {preview}"))
        }
        Kind::Welcome | Kind::Digest => (
            "Welcome to DevConnect".into(),
            "Your account is ready. Complete your profile so other developers can find you.".into(),
        ),
    }
}

/// The unsubscribe link for `kind`.
pub fn unsubscribe_url(ctx: &Context<'_>, user_id: &str, kind: Kind) -> String {
    format!(
        "{}/notifications/unsubscribe?token={}",
        ctx.unsubscribe_base,
        ctx.signer.sign(user_id, kind)
    )
}

/// Whether `n` is about a message (the kind the alert cooldown applies to).
pub fn is_message(n: &Notification) -> bool {
    Kind::of_notification(n.detail.kind()) == Some(Kind::Message)
}

/// The deliveries `n` causes at `now`; empty when every channel is off, or when `n` is
/// a message whose conversation is cooling down.
pub fn plan(n: &Notification, ctx: &Context<'_>, now: DateTime<Utc>) -> Vec<Action> {
    let Some(kind) = Kind::of_notification(n.detail.kind()) else {
        return Vec::new();
    };
    let is_message = kind == Kind::Message;
    if is_message && ctx.cooling_down {
        return Vec::new();
    }
    let prefs = ctx.preferences;
    let (subject, text) = wording(kind, ctx.actor_name, &n.detail);
    let mut actions = Vec::new();
    if prefs.email_on(kind) && !ctx.email.is_empty() {
        if kind.is_low_priority() {
            if prefs.email_on(Kind::Digest) {
                let (day, ends) = crate::preferences::local_day(now, prefs.time_zone());
                actions.push(Action::Digest {
                    day,
                    due_ms: ends.timestamp_millis(),
                    item: DigestItem {
                        notification_id: n.id.clone(),
                        kind,
                        text: subject.clone(),
                        address: ctx.email.to_string(),
                    },
                });
            }
        } else {
            actions.push(Action::Send(Delivery {
                notification_id: n.id.clone(),
                channel: Channel::Email,
                user_id: n.recipient_id.clone(),
                kind: kind.as_str().into(),
                address: ctx.email.to_string(),
                subject: subject.clone(),
                text: text.clone(),
                unsubscribe_url: Some(unsubscribe_url(ctx, &n.recipient_id, kind)),
            }));
        }
    }
    if let (true, Some(phone)) = (prefs.sms_on(kind), prefs.phone()) {
        let sms = Delivery {
            notification_id: n.id.clone(),
            channel: Channel::Sms,
            user_id: n.recipient_id.clone(),
            kind: kind.as_str().into(),
            address: phone.to_string(),
            subject: String::new(),
            text: format!("DevConnect: {subject}"),
            unsubscribe_url: None,
        };
        match prefs.quiet_hours().and_then(|q| q.window_end(now)) {
            Some(end) => actions.push(Action::Hold {
                due_ms: end.timestamp_millis(),
                delivery: sms,
            }),
            None => actions.push(Action::Send(sms)),
        }
    }
    if is_message && !actions.is_empty() && !ctx.message_cooldown.is_zero() {
        actions.push(Action::Cooldown {
            notification_id: n.id.clone(),
            actor_id: n.actor_id.clone(),
            ms: ctx.message_cooldown.as_millis() as i64,
        });
    }
    actions
}

/// The one email of a user's digest for `day`.
pub fn digest(
    user_id: &str,
    day: &str,
    items: &[DigestItem],
    ctx_base: &str,
    signer: &crate::unsubscribe::Signer,
) -> Option<Delivery> {
    let address = items.last()?.address.clone();
    let lines: Vec<String> = items.iter().map(|i| format!("- {}", i.text)).collect();
    let count = items.len();
    Some(Delivery {
        notification_id: format!("digest:{user_id}:{day}"),
        channel: Channel::Email,
        user_id: user_id.to_string(),
        kind: Kind::Digest.as_str().into(),
        address,
        subject: format!(
            "Your DevConnect day: {count} update{}",
            if count == 1 { "" } else { "s" }
        ),
        text: format!("What happened on {day}:\n{}", lines.join("\n")),
        unsubscribe_url: Some(format!(
            "{ctx_base}/notifications/unsubscribe?token={}",
            signer.sign(user_id, Kind::Digest)
        )),
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::unsubscribe::Signer;

    const USER: &str = "0190c3a4-0000-7000-8000-000000000001";

    fn notification(kind: &str) -> Notification {
        let request = || devconnect::payloads::RequestRef {
            request_id: "0190c3a4-0000-7000-9000-000000000001".into(),
        };
        let detail = match kind {
            "connection_request" => NotificationDetail::ConnectionRequest(request()),
            "connection_accepted" => NotificationDetail::ConnectionAccepted(request()),
            "message" => NotificationDetail::Message(devconnect::payloads::MessageRef {
                message_id: "1-0".into(),
                preview: "hi".into(),
            }),
            "welcome" => NotificationDetail::Welcome(devconnect::payloads::Welcome { first_name: None }),
            other => panic!("no notification kind {other}"),
        };
        Notification {
            id: "n1".into(),
            recipient_id: USER.into(),
            actor_id: USER.into(),
            created_at: "2026-01-01T00:00:00.000Z".into(),
            detail,
        }
    }

    fn plan_with(fields: &[(&str, &str)], kind: &str, now: &str) -> Vec<Action> {
        plan_cooling(fields, kind, now, false)
    }

    fn plan_cooling(fields: &[(&str, &str)], kind: &str, now: &str, cooling_down: bool) -> Vec<Action> {
        let prefs = Preferences::from_fields(
            fields
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<HashMap<_, _>>(),
        );
        let signer = Signer::new(&[7; 32]);
        let ctx = Context {
            preferences: &prefs,
            email: "ada@example.com",
            actor_name: "Grace Hopper",
            unsubscribe_base: "http://localhost",
            signer: &signer,
            message_cooldown: Duration::from_secs(600),
            cooling_down,
        };
        let now = DateTime::parse_from_rfc3339(now).unwrap().with_timezone(&Utc);
        plan(&notification(kind), &ctx, now)
    }

    #[test]
    fn by_default_a_request_is_emailed_with_an_unsubscribe_link_and_not_texted() {
        let actions = plan_with(&[], "connection_request", "2026-01-15T12:00:00Z");
        assert_eq!(actions.len(), 1);
        let Action::Send(d) = &actions[0] else {
            panic!("{actions:?}")
        };
        assert_eq!((d.channel, d.kind.as_str()), (Channel::Email, "CONNECTION_REQUEST"));
        assert!(d.unsubscribe_url.as_deref().unwrap().contains("token="));
    }

    #[test]
    fn sms_needs_a_verified_phone() {
        let actions = plan_with(
            &[("sms:CONNECTION_REQUEST", "1")],
            "connection_request",
            "2026-01-15T12:00:00Z",
        );
        assert!(actions
            .iter()
            .all(|a| !matches!(a, Action::Send(d) if d.channel == Channel::Sms)));
    }

    #[test]
    fn an_sms_in_quiet_hours_is_held_until_they_end() {
        let actions = plan_with(
            &[
                ("sms:CONNECTION_REQUEST", "1"),
                ("phone", "+33612345678"),
                (
                    "quietHours",
                    r#"{"start":"22:00","end":"07:00","timeZone":"Europe/Paris"}"#,
                ),
            ],
            "connection_request",
            "2026-01-15T22:30:00Z",
        );
        let held = actions.iter().find_map(|a| match a {
            Action::Hold { due_ms, .. } => Some(*due_ms),
            _ => None,
        });
        let end = DateTime::parse_from_rfc3339("2026-01-16T06:00:00Z")
            .unwrap()
            .timestamp_millis();
        assert_eq!(held, Some(end));
    }

    #[test]
    fn a_low_priority_kind_goes_into_the_digest() {
        let actions = plan_with(
            &[("email:CONNECTION_ACCEPTED", "1")],
            "connection_accepted",
            "2026-01-15T12:00:00Z",
        );
        assert!(matches!(&actions[..], [Action::Digest { day, .. }] if day == "2026-01-15"));
    }

    #[test]
    fn unknown_types_are_refused_before_routing() {
        // The shared decoder reads NOTIFICATION_CREATED as its typed payload: a type it does
        // not know never reaches `plan` (the record is dead-lettered instead).
        let data = serde_json::json!({"id": "n1", "type": "something_else", "recipientId": USER,
            "actorId": USER, "createdAt": "2026-01-01T00:00:00.000Z", "data": {}});
        let decoded = devconnect::payloads::Event::decode(devconnect::events::EventType::NotificationCreated, &data);
        assert!(decoded.is_err());
    }

    #[test]
    fn markers_are_per_notification_and_channel() {
        let actions = plan_with(
            &[("sms:MESSAGE", "1"), ("phone", "+33612345678")],
            "message",
            "2026-01-15T12:00:00Z",
        );
        let markers: Vec<String> = actions.iter().map(Action::marker).collect();
        assert_eq!(markers, ["n1:email", "n1:sms", "n1:cooldown"]);
    }

    #[test]
    fn a_message_that_alerts_starts_its_conversations_cooldown() {
        let actions = plan_with(&[], "message", "2026-01-15T12:00:00Z");
        assert!(
            matches!(&actions[0], Action::Send(d) if d.channel == Channel::Email),
            "{actions:?}"
        );
        assert!(
            matches!(&actions[1..], [Action::Cooldown { actor_id, ms: 600_000, .. }] if actor_id == USER),
            "{actions:?}"
        );
    }

    #[test]
    fn a_message_in_a_cooling_conversation_alerts_in_app_only() {
        let actions = plan_cooling(
            &[("sms:MESSAGE", "1"), ("phone", "+33612345678")],
            "message",
            "2026-01-15T12:00:00Z",
            true,
        );
        assert_eq!(actions, []);
    }

    #[test]
    fn the_cooldown_silences_messages_only() {
        let actions = plan_cooling(&[], "connection_request", "2026-01-15T12:00:00Z", true);
        assert!(matches!(&actions[..], [Action::Send(_)]), "{actions:?}");
    }

    #[test]
    fn a_message_with_every_channel_off_starts_no_cooldown() {
        let actions = plan_with(&[("email:MESSAGE", "0")], "message", "2026-01-15T12:00:00Z");
        assert_eq!(actions, []);
    }
}
