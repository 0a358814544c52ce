//! Produce-or-park: the only way a handler emits an event.

use std::{collections::BTreeMap, sync::Arc};

use crate::{
    config::Topics,
    error::AppError,
    events::{Envelope, EventType},
    outbox,
    producer::{OutgoingRecord, Producer},
    store::Store,
};

/// Where an event ended up.
#[derive(Debug, PartialEq, Eq)]
pub enum Delivery {
    /// On the topic.
    Produced,
    /// In the Redis outbox, waiting for the relay.
    Parked,
}

/// Emits events for one function (its name becomes the envelope's `source`).
#[derive(Clone)]
pub struct Publisher {
    producer: Arc<Producer>,
    store: Store,
    topics: Topics,
    source: &'static str,
}

impl Publisher {
    /// A publisher for the function `source`.
    pub fn new(producer: Arc<Producer>, store: Store, topics: Topics, source: &'static str) -> Self {
        Self {
            producer,
            store,
            topics,
            source,
        }
    }

    /// Builds the envelope and produces it, parking it in the outbox if the broker
    /// does not take it in time. Fails only if Redis is down too.
    pub async fn publish(
        &self,
        event_type: EventType,
        key: &str,
        correlation_id: &str,
        data: serde_json::Value,
    ) -> Result<Delivery, AppError> {
        let envelope = Envelope::new(event_type, self.source, key, correlation_id, data);
        let record = OutgoingRecord {
            topic: event_type.topic().name(&self.topics).to_string(),
            key: key.to_string(),
            value: serde_json::to_vec(&envelope)?,
            headers: BTreeMap::from([
                ("eventType".to_string(), event_type.as_str().into_bytes()),
                ("eventId".to_string(), envelope.event_id.to_string().into_bytes()),
            ]),
        };
        match self.producer.send(record.clone()).await {
            Ok(_) => Ok(Delivery::Produced),
            Err(e) => {
                tracing::warn!(error = %e, event_type = ?event_type, event_id = %envelope.event_id, "event parked in the outbox");
                outbox::park(&self.store, &record).await?;
                Ok(Delivery::Parked)
            }
        }
    }
}
