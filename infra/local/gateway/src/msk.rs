//! The MSK event source mapping, emulated: poll the local broker for each consumer's
//! topics, invoke the handler with a real `KafkaEvent` (records keyed
//! "topic-partition", base64 key and value, headers as byte arrays), and advance the
//! stored offsets only when the handler succeeds; retry with backoff otherwise.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use aws_lambda_events::event::kafka::KafkaEvent;
use base64::{engine::general_purpose::STANDARD, Engine};
use devconnect::{kafka_connection::KafkaConnection, keys, store::Store};
use redis::AsyncCommands;
use rskafka::{
    client::partition::{OffsetAt, PartitionClient, UnknownTopicHandling},
    record::RecordAndOffset,
};
use serde_json::{json, Value};

use crate::{server::Gateway, template::MskSource};

/// Bytes asked of one partition per poll.
const FETCH_BYTES: i32 = 4 * 1024 * 1024;
/// How long a poll waits on an empty partition.
const MAX_WAIT_MS: i32 = 50;

/// Starts one poller per MSK event of the template, connecting like the producer does.
pub fn spawn_pollers(gateway: Arc<Gateway>, kafka: KafkaConnection, store: Store) {
    for source in gateway.template.msk_sources.clone() {
        let (gateway, kafka, store) = (Arc::clone(&gateway), kafka.clone(), store.clone());
        tokio::spawn(async move {
            loop {
                if let Err(e) = poll(&gateway, &kafka, &store, &source).await {
                    tracing::warn!(function = %source.function, topic = %source.topic, error = %e, "MSK poller restarting");
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        });
    }
}

async fn poll(gateway: &Gateway, kafka: &KafkaConnection, store: &Store, source: &MskSource) -> anyhow::Result<()> {
    let client = kafka.client_builder().build().await?;
    let partitions = client
        .list_topics()
        .await?
        .into_iter()
        .find(|t| t.name == source.topic)
        .map(|t| t.partitions)
        .ok_or_else(|| anyhow::anyhow!("topic {} does not exist yet", source.topic))?;
    let mut clients = Vec::new();
    for p in partitions {
        clients.push(Arc::new(
            client
                .partition_client(source.topic.clone(), p, UnknownTopicHandling::Retry)
                .await?,
        ));
    }
    let offsets_key = keys::local_offsets(&source.group);
    let mut offsets: Vec<i64> = Vec::new();
    for pc in &clients {
        let field = format!("{}:{}", source.topic, pc.partition());
        let stored: Option<i64> = store.conn().hget(&offsets_key, &field).await?;
        offsets.push(match stored {
            Some(o) => o,
            None if source.starting_position == "LATEST" => pc.get_offset(OffsetAt::Latest).await?,
            None => pc.get_offset(OffsetAt::Earliest).await?,
        });
    }
    // Commit the starting position, as a Kafka consumer group does, so "ready" is observable.
    let mut pipe = redis::pipe();
    for (pc, offset) in clients.iter().zip(&offsets) {
        pipe.hset(&offsets_key, format!("{}:{}", source.topic, pc.partition()), *offset)
            .ignore();
    }
    pipe.query_async::<()>(&mut store.conn()).await?;
    let mut backoff = Duration::from_millis(100);
    loop {
        let fetched =
            futures::future::join_all(clients.iter().zip(&offsets).map(|(pc, offset)| fetch(pc, *offset))).await;
        let mut batch: Vec<(i32, Vec<RecordAndOffset>)> = Vec::new();
        let mut room = source.batch_size;
        for (i, result) in fetched.into_iter().enumerate() {
            let records = match result {
                Ok(r) => r,
                Err(Reset) => {
                    // The broker lost the records (local memory storage restarted): start over.
                    offsets[i] = clients[i].get_offset(OffsetAt::Earliest).await?;
                    continue;
                }
            };
            let take: Vec<RecordAndOffset> = records.into_iter().take(room).collect();
            room -= take.len();
            if !take.is_empty() {
                batch.push((clients[i].partition(), take));
            }
        }
        if batch.is_empty() {
            continue;
        }
        let event = kafka_event(&source.topic, &batch)?;
        match gateway.functions.invoke_consumer(&source.function, event).await {
            Ok(_) => {
                let mut pipe = redis::pipe();
                for (partition, records) in &batch {
                    let next = records.last().map(|r| r.offset + 1).unwrap_or_default();
                    let index = clients
                        .iter()
                        .position(|c| c.partition() == *partition)
                        .unwrap_or_default();
                    offsets[index] = next;
                    pipe.hset(&offsets_key, format!("{}:{partition}", source.topic), next)
                        .ignore();
                }
                pipe.query_async::<()>(&mut store.conn()).await?;
                backoff = Duration::from_millis(100);
            }
            Err(e) => {
                tracing::warn!(function = %source.function, error = %e, retry_in = ?backoff, "consumer failed; batch will be retried");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

struct Reset;

async fn fetch(pc: &PartitionClient, offset: i64) -> Result<Vec<RecordAndOffset>, Reset> {
    match pc.fetch_records(offset, 1..FETCH_BYTES, MAX_WAIT_MS).await {
        Ok((records, _high_watermark)) => Ok(records.into_iter().filter(|r| r.offset >= offset).collect()),
        Err(rskafka::client::error::Error::ServerError {
            protocol_error: rskafka::client::error::ProtocolError::OffsetOutOfRange,
            ..
        }) => Err(Reset),
        Err(e) => {
            tracing::debug!(error = %e, "fetch failed");
            tokio::time::sleep(Duration::from_millis(200)).await;
            Ok(Vec::new())
        }
    }
}

/// Builds the `KafkaEvent` Lambda would receive for these records.
pub fn kafka_event(topic: &str, batch: &[(i32, Vec<RecordAndOffset>)]) -> anyhow::Result<KafkaEvent> {
    let mut records: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for (partition, items) in batch {
        let list = records.entry(format!("{topic}-{partition}")).or_default();
        for r in items {
            let headers: Vec<Value> = r
                .record
                .headers
                .iter()
                .map(|(k, v)| json!({ k: v.iter().map(|b| *b as i8).collect::<Vec<i8>>() }))
                .collect();
            list.push(json!({
                "topic": topic,
                "partition": partition,
                "offset": r.offset,
                "timestamp": r.record.timestamp.timestamp_millis(),
                "timestampType": "CREATE_TIME",
                "key": r.record.key.as_ref().map(|k| STANDARD.encode(k)),
                "value": r.record.value.as_ref().map(|v| STANDARD.encode(v)),
                "headers": headers,
            }));
        }
    }
    Ok(serde_json::from_value(json!({
        "eventSource": "aws:kafka",
        "eventSourceArn": "arn:aws:kafka:local:000000000000:cluster/local/00000000-0000-0000-0000-000000000000-1",
        "bootstrapServers": "local",
        "records": records,
    }))?)
}
