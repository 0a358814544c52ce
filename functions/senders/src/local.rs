//! The senders as the local gateway hosts them: every accepted delivery recorded in an
//! [`Outbox`]; the provider is the AWS API double at `endpoint` (moto) when one runs,
//! else [`Accepting`]. Nothing here can reach real AWS.

use std::sync::Arc;

use aws_lambda_events::event::kafka::KafkaEvent;
use devconnect::{
    consumer::BatchOutcome,
    delivery::{Channel as ChannelName, Delivery},
    AppState,
};
use tokio::sync::OnceCell;

use crate::{
    aws,
    capture::{Accepting, Outbox, Recording},
    channel::{Channel, ProviderId, SendError},
    email::{Sender, SesEmail},
    sms::SnsSms,
};

/// Both senders as the local gateway hosts them, sharing one [`Outbox`].
#[derive(Clone)]
pub struct LocalSenders {
    email: AppState,
    sms: AppState,
    email_channel: Arc<dyn Channel>,
    sms_channel: Arc<dyn Channel>,
    outbox: Arc<Outbox>,
}

impl LocalSenders {
    /// The email and SMS senders on their function's clients; the provider is the AWS
    /// API double at `endpoint` if given, else [`Accepting`].
    pub fn new(email: AppState, sms: AppState, endpoint: Option<&str>) -> Self {
        let outbox = Arc::new(Outbox::default());
        let (email_channel, sms_channel) = channels(&outbox, endpoint);
        Self {
            email,
            sms,
            email_channel,
            sms_channel,
            outbox,
        }
    }

    /// The email sender's invocation (EmailSenderFunction).
    pub async fn consume_email(&self, event: KafkaEvent) -> BatchOutcome {
        crate::consume(&self.email, &*self.email_channel, ChannelName::Email, event).await
    }

    /// The SMS sender's invocation (SmsSenderFunction).
    pub async fn consume_sms(&self, event: KafkaEvent) -> BatchOutcome {
        crate::consume(&self.sms, &*self.sms_channel, ChannelName::Sms, event).await
    }

    /// What the providers accepted so far.
    pub fn outbox(&self) -> &Outbox {
        &self.outbox
    }
}

/// The sender identity of the local stack.
pub const LOCAL_FROM: &str = "DevConnect <no-reply@devconnect.local>";

/// The email and SMS channels of the local stack, recording into `outbox`.
pub fn channels(outbox: &Arc<Outbox>, endpoint: Option<&str>) -> (Arc<dyn Channel>, Arc<dyn Channel>) {
    match endpoint {
        Some(endpoint) => {
            let aws = aws::local(endpoint);
            let ses = SesEmail::new(
                &aws,
                Sender {
                    from: LOCAL_FROM.into(),
                    identity_arn: None,
                },
            );
            (
                Arc::new(Recording::new(VerifiedFirst::new(ses), Arc::clone(outbox))),
                Arc::new(Recording::new(SnsSms::new(&aws), Arc::clone(outbox))),
            )
        }
        None => (
            Arc::new(Recording::new(Accepting, Arc::clone(outbox))),
            Arc::new(Recording::new(Accepting, Arc::clone(outbox))),
        ),
    }
}

/// SES on a fresh double: the sender identity is created (and, on moto, thereby
/// verified) before the first email, as an operator does once in a real account.
pub struct VerifiedFirst {
    ses: SesEmail,
    verified: OnceCell<()>,
}

impl VerifiedFirst {
    /// Wraps `ses`.
    pub fn new(ses: SesEmail) -> Self {
        Self {
            ses,
            verified: OnceCell::new(),
        }
    }
}

#[async_trait::async_trait]
impl Channel for VerifiedFirst {
    async fn send(&self, delivery: &Delivery) -> Result<ProviderId, SendError> {
        self.verified
            .get_or_try_init(|| async {
                let identity = "no-reply@devconnect.local";
                match self
                    .ses
                    .client()
                    .create_email_identity()
                    .email_identity(identity)
                    .send()
                    .await
                {
                    Ok(_) => Ok(()),
                    Err(e) if format!("{e:?}").contains("AlreadyExists") => Ok(()),
                    Err(e) => Err(SendError::Transient(format!("creating the local SES identity: {e}"))),
                }
            })
            .await?;
        self.ses.send(delivery).await
    }
}
