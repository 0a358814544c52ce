//! Hand-made MSK batches, for feeding consumers exactly the records a test needs.

use aws_lambda_events::event::kafka::KafkaEvent;
use devconnect::events::{Envelope, EventType};
use rskafka::{
    chrono::Utc,
    record::{Record, RecordAndOffset},
};
use serde_json::Value;

/// A batch of raw values on one partition of `topic`, offsets from 0, as MSK would deliver it.
pub fn batch(topic: &str, values: &[Vec<u8>]) -> KafkaEvent {
    batch_on(topic, &[(0, values.to_vec())])
}

/// A batch of raw values on several partitions of `topic`, offsets from 0 in each.
pub fn batch_on(topic: &str, partitions: &[(i32, Vec<Vec<u8>>)]) -> KafkaEvent {
    let batch: Vec<(i32, Vec<RecordAndOffset>)> = partitions
        .iter()
        .map(|(partition, values)| {
            let records = values
                .iter()
                .enumerate()
                .map(|(i, v)| RecordAndOffset {
                    record: Record {
                        key: Some(b"key".to_vec()),
                        value: Some(v.clone()),
                        headers: Default::default(),
                        timestamp: Utc::now(),
                    },
                    offset: i as i64,
                })
                .collect();
            (*partition, records)
        })
        .collect();
    local_gateway::msk::kafka_event(topic, &batch)
}

/// An envelope's wire bytes.
pub fn bytes(e: &Envelope) -> Vec<u8> {
    serde_json::to_vec(e).expect("json")
}

/// A new envelope of `event_type` acted by `key`, from the function that really emits
/// that type (consumers dead-letter events from any other source).
pub fn envelope(event_type: EventType, key: &str, data: Value) -> Envelope {
    let source = event_type.allowed_sources().first().copied().unwrap_or("unknown");
    Envelope::new(event_type, source, key, "test-request", data)
}
