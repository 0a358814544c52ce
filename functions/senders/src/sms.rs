//! SMS through Amazon SNS (`Publish` straight to a phone number, no topic).

use aws_sdk_sns::types::MessageAttributeValue;
use devconnect::delivery::Delivery;

use crate::channel::{classify, Channel, ProviderId, SendError};

/// Sends SMS with SNS.
#[derive(Clone, Debug)]
pub struct SnsSms {
    client: aws_sdk_sns::Client,
}

impl SnsSms {
    /// A sender on `aws` (see [`crate::aws`]).
    pub fn new(aws: &aws_config::SdkConfig) -> Self {
        Self {
            client: aws_sdk_sns::Client::new(aws),
        }
    }
}

/// `AWS.SNS.SMS.SMSType`: notifications are transactional (delivered even to numbers
/// on promotional do-not-disturb lists, at the transactional price and route).
fn transactional() -> Result<MessageAttributeValue, SendError> {
    MessageAttributeValue::builder()
        .data_type("String")
        .string_value("Transactional")
        .build()
        .map_err(|e| SendError::Permanent(format!("building the SMS: {e}")))
}

#[async_trait::async_trait]
impl Channel for SnsSms {
    async fn send(&self, delivery: &Delivery) -> Result<ProviderId, SendError> {
        let output = self
            .client
            .publish()
            .phone_number(&delivery.address)
            .message(&delivery.text)
            .message_attributes("AWS.SNS.SMS.SMSType", transactional()?)
            .send()
            .await
            .map_err(|e| classify(&e))?;
        Ok(ProviderId(output.message_id.unwrap_or_default()))
    }
}
