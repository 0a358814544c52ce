//! Produce-or-park: the only way a handler emits an event.

use std::{collections::BTreeMap, sync::Arc};

use serde_json::value::RawValue;
use uuid::Uuid;

use crate::{
    config::Topics,
    error::{chain, AppError},
    events::{Envelope, EventType, WireEnvelope},
    metrics::{self, Metrics},
    outbox,
    payloads::Event,
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
    metrics: Metrics,
}

impl Publisher {
    /// A publisher for the function `source`, counting produced and parked events in `metrics`.
    pub fn new(producer: Arc<Producer>, store: Store, topics: Topics, source: &'static str, metrics: Metrics) -> Self {
        Self {
            producer,
            store,
            topics,
            source,
            metrics,
        }
    }

    /// The same publisher, counting into `metrics`.
    pub fn with_metrics(&self, metrics: Metrics) -> Self {
        Self {
            metrics,
            ..self.clone()
        }
    }

    /// The function's metrics (consumers report their batches through the publisher they finish with).
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Sends already-built records (e.g. dead letters), parking them all, in order, if the
    /// broker does not take them (one oversized record parks the whole batch; the relay
    /// then sends the others one by one and quarantines it).
    pub async fn send_or_park(&self, records: Vec<OutgoingRecord>) -> Result<Delivery, AppError> {
        if records.is_empty() {
            return Ok(Delivery::Produced);
        }
        let count = records.len() as u64;
        match self.producer.send_batch(records.clone()).await {
            Ok(()) => {
                self.metrics.count(metrics::EVENTS_PRODUCED, count);
                Ok(Delivery::Produced)
            }
            // A permanent error (e.g. an oversized record) is parked too: the request must
            // not fail, and the relay quarantines what can never be produced.
            Err(e) => {
                tracing::warn!(error = %chain(&e), permanent = e.is_permanent(), count = records.len(), "events parked in the outbox");
                outbox::park_all(&self.store, &records).await?;
                self.metrics.count(metrics::EVENTS_PARKED, count);
                Ok(Delivery::Parked)
            }
        }
    }

    /// The topic names this publisher produces to.
    pub fn topics(&self) -> &Topics {
        &self.topics
    }

    /// The outbox entry of `envelope` (see [`outbox::entry`]): its topic by event type,
    /// key and headers exactly as [`Publisher::publish`] would produce it.
    pub fn outbox_entry(&self, envelope: Envelope) -> Result<String, AppError> {
        outbox::entry(&self.record(envelope)?)
    }

    fn record(&self, envelope: Envelope) -> Result<OutgoingRecord, AppError> {
        let value = serde_json::to_vec(&envelope)?;
        Ok(self.outgoing(envelope.event_type, &envelope.key, envelope.event_id, value))
    }

    /// The record of an `event_type` event keyed by `key` whose payload is JSON already
    /// written (`data`): the bytes [`Publisher::publish`] would produce for that payload,
    /// without writing the payload again. Send it with [`Publisher::send_or_park`].
    pub fn record_with_data(
        &self,
        event_type: EventType,
        key: &str,
        correlation_id: &str,
        data: &RawValue,
    ) -> Result<OutgoingRecord, AppError> {
        let envelope = WireEnvelope::new(event_type, self.source, key, correlation_id, data);
        // The envelope's fields take well under 512 bytes: one allocation, no regrowth.
        let mut value = Vec::with_capacity(data.get().len() + 512);
        serde_json::to_writer(&mut value, &envelope)?;
        Ok(self.outgoing(event_type, key, envelope.event_id, value))
    }

    fn outgoing(&self, event_type: EventType, key: &str, event_id: Uuid, value: Vec<u8>) -> OutgoingRecord {
        OutgoingRecord {
            topic: event_type.topic().name(&self.topics).to_string(),
            key: key.to_string(),
            value,
            headers: BTreeMap::from([
                ("eventType".to_string(), event_type.name().as_bytes().to_vec()),
                ("eventId".to_string(), event_id.to_string().into_bytes()),
            ]),
        }
    }

    /// Builds the envelope of `event` (a payload from [`crate::payloads`], whose type
    /// decides the event type) and produces it, parking it in the outbox if the broker
    /// does not take it in time. Fails only if Redis is down too.
    pub async fn publish(
        &self,
        key: &str,
        correlation_id: &str,
        event: impl Into<Event>,
    ) -> Result<Delivery, AppError> {
        let envelope = Envelope::of(self.source, key, correlation_id, event)?;
        let event_type = envelope.event_type;
        let event_id = envelope.event_id;
        let record = self.record(envelope)?;
        match self.producer.send(record.clone()).await {
            Ok(_) => {
                self.metrics.count(metrics::EVENTS_PRODUCED, 1);
                Ok(Delivery::Produced)
            }
            // Parked even when permanent (e.g. too large): the relay quarantines it.
            Err(e) => {
                tracing::warn!(error = %chain(&e), permanent = e.is_permanent(), event_type = ?event_type, event_id = %event_id, "event parked in the outbox");
                outbox::park(&self.store, &record).await?;
                self.metrics.count(metrics::EVENTS_PARKED, 1);
                Ok(Delivery::Parked)
            }
        }
    }
}
