//! Email through Amazon SES (API v2, `SendEmail` with simple content).

use aws_sdk_sesv2::types::{Body, Content, Destination, EmailContent, Message, MessageHeader};
use devconnect::delivery::Delivery;

use crate::channel::{classify, Channel, ProviderId, SendError};

/// The sender identity: who the email is from, and (optionally) the SES identity ARN that
/// authorises it (sending authorisation, when the identity lives in another account).
#[derive(Clone, Debug)]
pub struct Sender {
    /// `From:`, e.g. `DevConnect <no-reply@example.com>`; its address or domain must be a
    /// verified SES identity.
    pub from: String,
    /// `FromEmailAddressIdentityArn`, when set.
    pub identity_arn: Option<String>,
}

impl Sender {
    /// `SES_FROM_ADDRESS` (required) and `SES_IDENTITY_ARN` (optional; empty = unset).
    pub fn from_env() -> Result<Self, String> {
        let from = std::env::var("SES_FROM_ADDRESS")
            .ok()
            .filter(|v| !v.trim().is_empty())
            .ok_or("SES_FROM_ADDRESS is not set: the email sender needs a verified SES identity to send from")?;
        let identity_arn = std::env::var("SES_IDENTITY_ARN").ok().filter(|v| !v.trim().is_empty());
        Ok(Self { from, identity_arn })
    }
}

/// What the recipient reads: the body, then the unsubscribe link unless the body already
/// carries it. Shared by SES and the local capture, so the capture shows the real email.
pub fn text(delivery: &Delivery) -> String {
    match &delivery.unsubscribe_url {
        Some(url) if !delivery.text.contains(url.as_str()) => {
            format!("{}\n\n--\nTo stop these emails: {url}\n", delivery.text)
        }
        _ => delivery.text.clone(),
    }
}

/// The `List-Unsubscribe` header value (RFC 2369), so mail clients offer their own
/// unsubscribe button. No `List-Unsubscribe-Post`: that promises one-click POST support.
pub fn list_unsubscribe(delivery: &Delivery) -> Option<String> {
    delivery.unsubscribe_url.as_ref().map(|url| format!("<{url}>"))
}

/// Sends email with SES v2.
#[derive(Clone, Debug)]
pub struct SesEmail {
    client: aws_sdk_sesv2::Client,
    sender: Sender,
}

impl SesEmail {
    /// A sender on `aws` (see [`crate::aws`]) sending as `sender`.
    pub fn new(aws: &aws_config::SdkConfig, sender: Sender) -> Self {
        Self {
            client: aws_sdk_sesv2::Client::new(aws),
            sender,
        }
    }

    /// The SES client (tests use it to set up the double).
    pub fn client(&self) -> &aws_sdk_sesv2::Client {
        &self.client
    }
}

fn utf8(data: &str) -> Result<Content, SendError> {
    Content::builder()
        .data(data)
        .charset("UTF-8")
        .build()
        .map_err(|e| SendError::Permanent(format!("building the email: {e}")))
}

#[async_trait::async_trait]
impl Channel for SesEmail {
    async fn send(&self, delivery: &Delivery) -> Result<ProviderId, SendError> {
        let mut message = Message::builder()
            .subject(utf8(&delivery.subject)?)
            .body(Body::builder().text(utf8(&text(delivery))?).build());
        if let Some(value) = list_unsubscribe(delivery) {
            let header = MessageHeader::builder()
                .name("List-Unsubscribe")
                .value(value)
                .build()
                .map_err(|e| SendError::Permanent(format!("building the email: {e}")))?;
            message = message.headers(header);
        }
        let output = self
            .client
            .send_email()
            .from_email_address(&self.sender.from)
            .set_from_email_address_identity_arn(self.sender.identity_arn.clone())
            .destination(Destination::builder().to_addresses(&delivery.address).build())
            .content(EmailContent::builder().simple(message.build()).build())
            .send()
            .await
            .map_err(|e| classify(&e))?;
        Ok(ProviderId(output.message_id.unwrap_or_default()))
    }
}
