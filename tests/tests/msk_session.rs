//! The producer's client survives session expiry: the broker ends a SASL OAUTHBEARER
//! session when its token expires (MSK IAM: 15 minutes) and rskafka cannot
//! re-authenticate, so the producer replaces its client at 80 % of the session's life.
//!
//! The local broker (tansu) has no SASL, so the session lifetime is forced short with
//! `KafkaConnection::with_session_lifetime`, which drives the same lease the MSK IAM
//! token callback feeds (the token path itself is unit-tested in
//! `shared/src/kafka_connection.rs` and `shared/src/msk_iam.rs`).

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use devconnect::{
    kafka_connection::KafkaConnection,
    producer::{OutgoingRecord, Producer},
};
use devconnect_tests::servers::Broker;
use rskafka::client::partition::UnknownTopicHandling;

const TOPIC: &str = "session-events";

fn record(i: usize) -> OutgoingRecord {
    OutgoingRecord {
        topic: TOPIC.into(),
        key: format!("user-{i}"),
        value: format!("{{\"n\":{i}}}").into_bytes(),
        headers: BTreeMap::new(),
    }
}

/// Every record on the topic, across its partitions.
async fn records_on_topic(broker: &Broker) -> usize {
    let client = broker.client().await.expect("kafka client");
    let mut total = 0;
    for partition in 0..3 {
        let pc = client
            .partition_client(TOPIC, partition, UnknownTopicHandling::Error)
            .await
            .expect("partition client");
        let (records, _) = tokio::time::timeout(Duration::from_secs(5), pc.fetch_records(0, 1..1_000_000, 500))
            .await
            .expect("fetch answered")
            .expect("fetch");
        total += records.len();
    }
    total
}

#[tokio::test]
async fn the_producer_replaces_its_client_before_the_session_expires_and_loses_no_produce() {
    let broker = Broker::start(&[TOPIC]).await.expect("tansu");
    let lifetime = Duration::from_millis(1_500);
    let connection = KafkaConnection::plaintext(vec![broker.address()]).with_session_lifetime(lifetime);
    let producer = Arc::new(Producer::new(connection, Duration::from_secs(5)));

    producer.send(record(0)).await.expect("first produce");
    producer.send(record(1)).await.expect("second produce");
    assert_eq!(producer.sessions_opened(), 1, "one client while the session is young");
    // A produce that started on the first client holds it; the refresh must not close it.
    let first_client = producer.client().await.expect("client");

    // Past 80 % of the session's life (1.2 s), before it ends (1.5 s).
    tokio::time::sleep(Duration::from_millis(1_250)).await;
    let sends: Vec<_> = (2..22)
        .map(|i| {
            let producer = Arc::clone(&producer);
            tokio::spawn(async move { producer.send(record(i)).await })
        })
        .collect();
    for send in sends {
        send.await.expect("task").expect("produce across the refresh");
    }
    assert_eq!(
        producer.sessions_opened(),
        2,
        "exactly one refresh, however many produces raced into it"
    );
    first_client
        .list_topics()
        .await
        .expect("the replaced client still works for what holds it");

    producer
        .send_batch((22..30).map(record).collect())
        .await
        .expect("batch on the new client");
    assert_eq!(producer.sessions_opened(), 2);
    assert_eq!(records_on_topic(&broker).await, 30, "every produce landed once");
}

#[tokio::test]
async fn an_idle_producer_whose_session_expired_reconnects_on_the_next_send() {
    let broker = Broker::start(&[TOPIC]).await.expect("tansu");
    let connection =
        KafkaConnection::plaintext(vec![broker.address()]).with_session_lifetime(Duration::from_millis(300));
    let producer = Producer::new(connection, Duration::from_secs(5));
    producer.send(record(0)).await.expect("produce");
    // Idle past the whole session: the next send must not use the expired client.
    tokio::time::sleep(Duration::from_millis(400)).await;
    producer.send(record(1)).await.expect("produce after expiry");
    assert_eq!(producer.sessions_opened(), 2);
    assert_eq!(records_on_topic(&broker).await, 2);
}

#[tokio::test]
async fn without_a_session_lifetime_the_client_is_kept() {
    let broker = Broker::start(&[TOPIC]).await.expect("tansu");
    let producer = Producer::new(
        KafkaConnection::plaintext(vec![broker.address()]),
        Duration::from_secs(5),
    );
    producer.send(record(0)).await.expect("produce");
    tokio::time::sleep(Duration::from_millis(200)).await;
    producer.send(record(1)).await.expect("produce");
    assert_eq!(producer.sessions_opened(), 1);
}
