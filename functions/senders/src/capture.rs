//! The local outbox: what the senders handed to a provider, kept so a developer sees the
//! email or SMS a user would get (`GET /_local/outbox/mail`, `/_local/outbox/sms` on the
//! local gateway). Never used in AWS.
//!
//! [`Recording`] wraps a channel (SES/SNS pointed at the moto double, or [`Accepting`]
//! when there is none) and records each delivery the provider accepted, with the text
//! exactly as sent and the unsubscribe link.

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
};

use devconnect::delivery::{Channel as ChannelName, Delivery};
use serde::Serialize;

use crate::{
    channel::{Channel, ProviderId, SendError},
    email,
};

/// Most deliveries the outbox keeps (the oldest go first): a local stack left running
/// for days must not grow without bound.
pub const OUTBOX_CAP: usize = 1_000;

/// One delivery a provider accepted, as its recipient gets it.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Sent {
    /// Email address or phone number.
    pub to: String,
    /// Email subject (empty for SMS).
    pub subject: String,
    /// The text as sent (for email: with the unsubscribe footer).
    pub text: String,
    /// The signed unsubscribe link (email only).
    pub unsubscribe_url: Option<String>,
    /// The email's `List-Unsubscribe` header.
    pub list_unsubscribe: Option<String>,
    /// Which notification.
    pub notification_id: String,
    /// The notification kind.
    pub kind: String,
    /// The recipient's user id.
    pub user_id: String,
    /// The provider's message id.
    pub provider_id: String,
    /// When it was accepted (RFC 3339).
    pub sent_at: String,
    #[serde(skip)]
    channel: Option<ChannelName>,
}

/// Deliveries accepted so far, newest last, at most [`OUTBOX_CAP`].
#[derive(Debug, Default)]
pub struct Outbox {
    sent: Mutex<VecDeque<Sent>>,
}

impl Outbox {
    /// Keeps `delivery`, accepted as `id`.
    pub fn record(&self, delivery: &Delivery, id: &ProviderId) {
        let (text, list_unsubscribe) = match delivery.channel {
            ChannelName::Email => (email::text(delivery), email::list_unsubscribe(delivery)),
            ChannelName::Sms => (delivery.text.clone(), None),
        };
        let sent = Sent {
            to: delivery.address.clone(),
            subject: delivery.subject.clone(),
            text,
            unsubscribe_url: delivery.unsubscribe_url.clone(),
            list_unsubscribe,
            notification_id: delivery.notification_id.clone(),
            kind: delivery.kind.clone(),
            user_id: delivery.user_id.clone(),
            provider_id: id.0.clone(),
            sent_at: devconnect::clock::now_rfc3339(),
            channel: Some(delivery.channel),
        };
        let mut all = self.sent.lock().unwrap_or_else(|e| e.into_inner());
        if all.len() == OUTBOX_CAP {
            all.pop_front();
        }
        all.push_back(sent);
    }

    /// What went out on `channel`, oldest first.
    pub fn list(&self, channel: ChannelName) -> Vec<Sent> {
        let all = self.sent.lock().unwrap_or_else(|e| e.into_inner());
        all.iter().filter(|s| s.channel == Some(channel)).cloned().collect()
    }
}

/// A channel whose accepted deliveries also land in an [`Outbox`].
pub struct Recording<C> {
    inner: C,
    outbox: Arc<Outbox>,
}

impl<C: Channel> Recording<C> {
    /// Records what `inner` accepts into `outbox`.
    pub fn new(inner: C, outbox: Arc<Outbox>) -> Self {
        Self { inner, outbox }
    }
}

#[async_trait::async_trait]
impl<C: Channel> Channel for Recording<C> {
    async fn send(&self, delivery: &Delivery) -> Result<ProviderId, SendError> {
        let id = self.inner.send(delivery).await?;
        self.outbox.record(delivery, &id);
        Ok(id)
    }
}

/// A provider stand-in that accepts everything (the local stack without an AWS double).
#[derive(Clone, Copy, Debug, Default)]
pub struct Accepting;

#[async_trait::async_trait]
impl Channel for Accepting {
    async fn send(&self, _: &Delivery) -> Result<ProviderId, SendError> {
        Ok(ProviderId(format!("local-{}", uuid::Uuid::now_v7())))
    }
}
