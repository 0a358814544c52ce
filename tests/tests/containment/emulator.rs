//! The local MSK trigger behaves like Lambda's event source mapping with the template's
//! containment settings, against a real broker and Redis: bounded retries end in the
//! on-failure topic in Lambda's shape and the partition moves on; bisection isolates a
//! bad record in a logarithmic number of invocations; a partial batch response isolates
//! it in one; records past the age limit skip the function; a partition resumes at the
//! reported offset while the others go on; mappings sharing a topic (and the records
//! read for it) each get every record once, in order, at their own batch size; a
//! partition of thousands of one-record batches (one per message sent) is read, not
//! stalled on tansu's read budget; a record this process produces after a quiet spell
//! is delivered at once, not at the idle watch's pace; a mapping whose topic is created
//! after the stack started gets its records.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use aws_lambda_events::event::kafka::KafkaEvent;
use base64::{engine::general_purpose::STANDARD, Engine};
use devconnect::{events::EventType, keys};
use devconnect_tests::{
    kafka::{bytes, envelope},
    Stack,
};
use futures::StreamExt;
use local_gateway::{
    msk::{self, Invoke},
    template::MskSource,
};
use redis::AsyncCommands;
use rskafka::{
    chrono::{self, Utc},
    client::partition::{Compression, UnknownTopicHandling},
    record::Record,
};
use serde_json::{json, Value};

const TOPIC: &str = "user-events";
const DEAD_LETTERS: &str = "dead-letter-events";
/// Longest any test waits for the poller.
const DEADLINE: Duration = Duration::from_secs(15);

/// An event source on [`TOPIC`] with the template's containment settings and `retries`.
fn source(group: &str, batch_size: usize, retries: u32, bisect: bool) -> MskSource {
    MskSource {
        function: "TestConsumerFunction".into(),
        topic: TOPIC.into(),
        group: group.into(),
        batch_size,
        batching_window: local_gateway::template::DEFAULT_KAFKA_BATCHING_WINDOW,
        starting_position: "TRIM_HORIZON".into(),
        report_batch_item_failures: true,
        maximum_retry_attempts: Some(retries),
        bisect_batch_on_function_error: bisect,
        maximum_record_age: Some(Duration::from_secs(60)),
        on_failure_topic: Some(DEAD_LETTERS.into()),
    }
}

/// A record with this key and value, created `age` ago.
fn record(key: &str, value: &[u8], age: chrono::Duration) -> Record {
    Record {
        key: Some(key.as_bytes().to_vec()),
        value: Some(value.to_vec()),
        headers: Default::default(),
        timestamp: Utc::now() - age,
    }
}

/// Produces `records` to one partition in one request; their offsets.
async fn produce(stack: &Stack, partition: i32, records: Vec<Record>) -> Vec<i64> {
    let client = stack.broker.client().await.expect("kafka client");
    let pc = client
        .partition_client(TOPIC, partition, UnknownTopicHandling::Retry)
        .await
        .expect("partition");
    let offsets = pc.produce(records, Compression::NoCompression).await.expect("produce");
    devconnect::producer::announce_produced();
    offsets
}

/// Every message on dead-letter-events: (record key, JSON value).
async fn dead_letters(stack: &Stack) -> Vec<(String, Value)> {
    stack
        .broker
        .records(DEAD_LETTERS)
        .await
        .into_iter()
        .map(|(_, _, key, value)| (key, value))
        .collect()
}

/// The offset the event source committed for `partition` (next to read).
async fn committed(stack: &Stack, source: &MskSource, partition: i32) -> Option<i64> {
    let field = format!("{}:{partition}", source.topic);
    stack
        .state
        .store
        .conn()
        .hget(keys::local_offsets(&source.group), field)
        .await
        .expect("HGET")
}

/// Waits (at most [`DEADLINE`]) until `partition` is committed up to `end`.
async fn wait_committed(stack: &Stack, source: &MskSource, partition: i32, end: i64) {
    let deadline = Instant::now() + DEADLINE;
    while committed(stack, source, partition).await != Some(end) {
        assert!(
            Instant::now() < deadline,
            "partition {partition} never committed to {end}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// (partition, offset) of every record of a batch.
fn offsets_of(event: &KafkaEvent) -> Vec<(i32, i64)> {
    let mut out: Vec<(i32, i64)> = event
        .records
        .values()
        .flatten()
        .map(|r| (r.partition as i32, r.offset))
        .collect();
    out.sort_unstable();
    out
}

/// Committed offsets of partitions 0 and 1.
type Commits = (Option<i64>, Option<i64>);

/// Each invocation's records, and when it happened.
type Calls = Arc<Mutex<Vec<(Instant, Vec<(i32, i64)>)>>>;

/// A function that records its batches and fails (a function error) on any batch
/// holding a record of `bad`.
fn failing_on(calls: &Calls, bad: Vec<(i32, i64)>) -> Invoke {
    let calls = Arc::clone(calls);
    Arc::new(move |event| {
        let offsets = offsets_of(&event);
        calls.lock().expect("calls").push((Instant::now(), offsets.clone()));
        let fails = offsets.iter().any(|o| bad.contains(o));
        Box::pin(async move {
            match fails {
                true => Err(anyhow::anyhow!("handler panicked on a bad record")),
                false => Ok(json!({"batchItemFailures": []})),
            }
        })
    })
}

/// The batches so far that held `record`.
fn carrying(calls: &Calls, record: (i32, i64)) -> Vec<(Instant, Vec<(i32, i64)>)> {
    let calls = calls.lock().expect("calls");
    calls.iter().filter(|(_, o)| o.contains(&record)).cloned().collect()
}

fn spawn(stack: &Stack, source: &MskSource, invoke: Invoke) -> tokio::task::JoinHandle<()> {
    msk::spawn_poller(
        source.clone(),
        invoke,
        stack.state.producer.connection().clone(),
        stack.state.store.clone(),
    )
}

#[tokio::test]
async fn a_record_that_exhausts_its_retries_lands_in_the_on_failure_topic_and_the_partition_moves_on() {
    let stack = Stack::start().await;
    let source = source("emulator-exhausted", 1, 2, false);
    let zero = chrono::Duration::zero();
    let poison = produce(&stack, 0, vec![record("poison-key", b"poison", zero)]).await[0];
    let later = produce(
        &stack,
        0,
        (0..3)
            .map(|i| record("k", format!("good-{i}").as_bytes(), zero))
            .collect(),
    )
    .await;
    let calls = Calls::default();
    let poller = spawn(&stack, &source, failing_on(&calls, vec![(0, poison)]));

    wait_committed(&stack, &source, 0, later[2] + 1).await;
    poller.abort();

    assert_eq!(
        carrying(&calls, (0, poison)).len(),
        3,
        "first invocation + MaximumRetryAttempts 2"
    );
    for offset in &later {
        assert_eq!(
            carrying(&calls, (0, *offset)).len(),
            1,
            "later record {offset} delivered once"
        );
    }
    let dead = dead_letters(&stack).await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    let (key, message) = &dead[0];
    assert_eq!(key, "poison-key", "key = the original record's key");
    assert_eq!(message["requestContext"]["condition"], "RetriesExhausted");
    assert_eq!(message["requestContext"]["approximateInvokeCount"], 3);
    assert_eq!(message["responseContext"]["functionError"], "Unhandled");
    assert_eq!(message["KafkaBatchInfo"]["recordInfo"]["offset"], poison.to_string());
    let original = &message["payload"]["records"]["user-events-0"][0];
    assert_eq!(original["offset"], poison);
    assert_eq!(original["value"], STANDARD.encode("poison"));
    assert_eq!(original["key"], STANDARD.encode("poison-key"));
}

#[tokio::test]
async fn bisection_isolates_one_bad_record_of_100_in_at_most_8_invocations() {
    let stack = Stack::start().await;
    let source = source("emulator-bisect", 100, 2, true);
    let zero = chrono::Duration::zero();
    let offsets = produce(
        &stack,
        0,
        (0..100).map(|i| record(&format!("user-{i}"), b"{}", zero)).collect(),
    )
    .await;
    let bad = (0, offsets[37]);
    let calls = Calls::default();
    let started = Instant::now();
    let poller = spawn(&stack, &source, failing_on(&calls, vec![bad]));

    wait_committed(&stack, &source, 0, offsets[99] + 1).await;
    let settled = started.elapsed();
    poller.abort();

    let with_bad = carrying(&calls, bad);
    let isolated_at = with_bad.iter().position(|(_, o)| o.len() == 1).expect("isolated") + 1;
    let isolated_after = with_bad[isolated_at - 1].0 - started;
    eprintln!(
        "bisect: bad record isolated in invocation {isolated_at} of those carrying it, {isolated_after:?} after start; \
         dead-lettered and partition committed after {settled:?}; {} invocations in all",
        calls.lock().expect("calls").len()
    );
    assert!(isolated_at <= 8, "isolated only after {isolated_at} invocations");
    let dead = dead_letters(&stack).await;
    assert_eq!(dead.len(), 1, "only the bad record: {dead:?}");
    assert_eq!(dead[0].1["KafkaBatchInfo"]["recordInfo"]["offset"], bad.1.to_string());
    assert_eq!(dead[0].1["requestContext"]["approximateInvokeCount"], with_bad.len());
}

#[tokio::test]
async fn a_partial_batch_response_isolates_a_poison_record_in_one_invocation() {
    let stack = Stack::start().await;
    let mut source = stack
        .gateway
        .template
        .msk_sources
        .iter()
        .find(|s| s.function == "NotificationsConsumerFunction" && s.topic == TOPIC)
        .expect("NotificationsConsumerFunction on user-events")
        .clone();
    source.group = "emulator-partial".into();
    let users: Vec<String> = (0..100).map(|i| format!("0190c3a4-0000-7000-8000-{i:012}")).collect();
    let poison_user = &users[37];
    let _: () = stack
        .state
        .store
        .conn()
        .set(keys::notifications(poison_user), "not a list")
        .await
        .expect("SET");
    let signups = users
        .iter()
        .map(|u| {
            let e = envelope(
                EventType::UserSignup,
                u,
                json!({"userId": u, "email": format!("{u}@example.com"), "firstName": "Ada", "lastName": "L"}),
            );
            record(u, &bytes(&e), chrono::Duration::zero())
        })
        .collect();
    let offsets = produce(&stack, 0, signups).await;
    let poison = (0, offsets[37]);
    let calls = Calls::default();
    let real = msk::gateway_invoke(Arc::clone(&stack.gateway), source.function.clone());
    let recording: Invoke = {
        let calls = Arc::clone(&calls);
        Arc::new(move |event| {
            calls.lock().expect("calls").push((Instant::now(), offsets_of(&event)));
            real(event)
        })
    };
    let started = Instant::now();
    let poller = spawn(&stack, &source, recording);

    wait_committed(&stack, &source, 0, offsets[99] + 1).await;
    let settled = started.elapsed();
    poller.abort();

    eprintln!(
        "partial batch response: poison record dead-lettered and partition committed after {settled:?}; {} invocation(s)",
        calls.lock().expect("calls").len()
    );
    assert_eq!(carrying(&calls, poison).len(), 1, "isolated in one invocation");
    let dead = dead_letters(&stack).await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(
        dead[0].1["consumer"], "notifications",
        "dead-lettered by the consumer: {dead:?}"
    );
    assert_eq!(dead[0].1["offset"], poison.1);
    let healthy: usize = stack
        .state
        .store
        .conn()
        .llen(keys::notifications(&users[38]))
        .await
        .expect("LLEN");
    assert_eq!(healthy, 1, "the rest of the batch was applied");
}

#[tokio::test]
async fn a_record_older_than_the_age_limit_goes_to_the_destination_without_an_invocation() {
    let stack = Stack::start().await;
    let source = source("emulator-age", 100, 2, true);
    let old = produce(&stack, 0, vec![record("old-key", b"old", chrono::Duration::hours(1))]).await[0];
    let fresh = produce(&stack, 0, vec![record("k", b"fresh", chrono::Duration::zero())]).await[0];
    let calls = Calls::default();
    let poller = spawn(&stack, &source, failing_on(&calls, Vec::new()));

    wait_committed(&stack, &source, 0, fresh + 1).await;
    poller.abort();

    assert!(
        carrying(&calls, (0, old)).is_empty(),
        "the old record was never invoked"
    );
    assert_eq!(carrying(&calls, (0, fresh)).len(), 1);
    let dead = dead_letters(&stack).await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    let (key, message) = &dead[0];
    assert_eq!(key, "old-key");
    assert_eq!(message["requestContext"]["condition"], "RecordAgeExceeded");
    assert_eq!(message["requestContext"]["approximateInvokeCount"], 0);
    assert_eq!(
        message["payload"]["records"]["user-events-0"][0]["value"],
        STANDARD.encode("old")
    );
}

#[tokio::test]
async fn a_partition_resumes_at_the_reported_offset_while_the_others_go_on() {
    let stack = Stack::start().await;
    let source = source("emulator-resume", 100, 2, true);
    let zero = chrono::Duration::zero();
    let ten = |p: i32| {
        (0..10)
            .map(move |i| record(&format!("p{p}-{i}"), b"{}", zero))
            .collect()
    };
    let p0 = produce(&stack, 0, ten(0)).await;
    let p1 = produce(&stack, 1, ten(1)).await;
    let calls = Calls::default();
    // Committed offsets (p0, p1) as the second invocation saw them.
    let seen_commits: Arc<Mutex<Option<Commits>>> = Arc::default();
    let invoke: Invoke = {
        let (calls, seen_commits, store, group) = (
            Arc::clone(&calls),
            Arc::clone(&seen_commits),
            stack.state.store.clone(),
            source.group.clone(),
        );
        let checkpoint = p0[5];
        Arc::new(move |event| {
            let (calls, seen_commits, store, group) = (
                Arc::clone(&calls),
                Arc::clone(&seen_commits),
                store.clone(),
                group.clone(),
            );
            Box::pin(async move {
                let offsets = offsets_of(&event);
                let carries_p0 = offsets.iter().any(|(p, _)| *p == 0);
                // Which call first carries partition 0: the triggers may deliver the two
                // partitions in one batch or in separate ones, as Lambda may.
                let p0_call = {
                    let mut calls = calls.lock().expect("calls");
                    calls.push((Instant::now(), offsets));
                    calls.iter().filter(|c| c.1.iter().any(|(p, _)| *p == 0)).count()
                };
                if !carries_p0 {
                    return Ok(json!({"batchItemFailures": []}));
                }
                if p0_call == 1 {
                    return Ok(
                        json!({"batchItemFailures": [{"itemIdentifier": {"partition": "user-events-0", "offset": checkpoint}}]}),
                    );
                }
                let key = keys::local_offsets(&group);
                let (c0, c1): (Option<i64>, Option<i64>) = redis::pipe()
                    .hget(&key, "user-events:0")
                    .hget(&key, "user-events:1")
                    .query_async(&mut store.conn())
                    .await?;
                seen_commits.lock().expect("commits").get_or_insert((c0, c1));
                Ok(json!({"batchItemFailures": []}))
            })
        })
    };
    let poller = spawn(&stack, &source, invoke);

    wait_committed(&stack, &source, 0, p0[9] + 1).await;
    wait_committed(&stack, &source, 1, p1[9] + 1).await;
    poller.abort();

    let calls = calls.lock().expect("calls").clone();
    let of = |partition: i32| -> Vec<Vec<i64>> {
        calls
            .iter()
            .map(|c| {
                c.1.iter()
                    .filter(|(p, _)| *p == partition)
                    .map(|(_, o)| *o)
                    .collect::<Vec<_>>()
            })
            .filter(|o: &Vec<i64>| !o.is_empty())
            .collect()
    };
    assert_eq!(
        of(0),
        vec![p0.clone(), p0[5..].to_vec()],
        "partition 0 again from the reported offset: {calls:?}"
    );
    assert_eq!(of(1).concat(), p1, "partition 1 went on, each record once: {calls:?}");
    assert_eq!(
        seen_commits.lock().expect("commits").map(|(c0, _)| c0),
        Some(Some(p0[5])),
        "partition 0 committed up to its checkpoint"
    );
    assert!(dead_letters(&stack).await.is_empty());
}

#[tokio::test]
async fn mappings_sharing_a_topic_each_get_every_record_once_in_order_at_their_own_batch_size() {
    let stack = Stack::start().await;
    let zero = chrono::Duration::zero();
    let some = |n: usize, tag: &str| -> Vec<Record> {
        (0..n)
            .map(|i| record(&format!("{tag}-{i}"), format!("{tag}-{i}").as_bytes(), zero))
            .collect()
    };
    let before = produce(&stack, 0, some(50, "before")).await;
    let small = source("emulator-shared-small", 7, 2, true);
    let mut latest = source("emulator-shared-latest", 100, 2, true);
    latest.starting_position = "LATEST".into();
    let (small_calls, latest_calls) = (Calls::default(), Calls::default());
    let pollers = msk::spawn_mappings(
        vec![
            (small.clone(), failing_on(&small_calls, Vec::new())),
            (latest.clone(), failing_on(&latest_calls, Vec::new())),
        ],
        stack.state.producer.connection().clone(),
        stack.state.store.clone(),
    );
    // LATEST starts past what is there; it commits that starting point at once.
    wait_committed(&stack, &latest, 0, before[49] + 1).await;
    wait_committed(&stack, &small, 0, before[49] + 1).await;
    let mut after = Vec::new();
    for round in 0..3 {
        after.extend(produce(&stack, 0, some(10, &format!("after{round}"))).await);
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let other = produce(&stack, 1, some(10, "other")).await;
    for source in [&small, &latest] {
        wait_committed(&stack, source, 0, after[29] + 1).await;
        wait_committed(&stack, source, 1, other[9] + 1).await;
    }
    pollers.iter().for_each(|p| p.abort());

    let delivered = |calls: &Calls| -> Vec<(i32, i64)> {
        let calls = calls.lock().expect("calls");
        calls.iter().flat_map(|(_, o)| o.clone()).collect()
    };
    let expected = |p0: &[i64]| -> Vec<(i32, i64)> {
        let mut all: Vec<(i32, i64)> = p0
            .iter()
            .map(|o| (0, *o))
            .chain(other.iter().map(|o| (1, *o)))
            .collect();
        all.sort_unstable();
        all
    };
    let mut got = delivered(&small_calls);
    got.sort_unstable();
    let everything: Vec<i64> = before.iter().chain(&after).copied().collect();
    assert_eq!(got, expected(&everything), "TRIM_HORIZON: every record once");
    let mut got = delivered(&latest_calls);
    got.sort_unstable();
    assert_eq!(got, expected(&after), "LATEST: every record after its start once");
    for (calls, limit) in [(&small_calls, 7), (&latest_calls, 100)] {
        let calls = calls.lock().expect("calls");
        assert!(
            calls.iter().all(|(_, o)| o.len() <= limit),
            "a batch over {limit}: {calls:?}"
        );
        let order: Vec<(i32, i64)> = calls
            .iter()
            .flat_map(|(_, o)| o.clone())
            .filter(|(p, _)| *p == 0)
            .collect();
        assert!(
            order.windows(2).all(|w| w[0].1 < w[1].1),
            "partition 0 out of order: {order:?}"
        );
    }
}

#[tokio::test]
async fn a_partition_of_thousands_of_one_record_batches_is_delivered_in_order_once() {
    // Listing 5,000 stored batches takes tansu longer than the 1 ms read budget the
    // triggers once asked for; each fetch then answered nothing and the mapping stalled.
    let stack = Stack::start().await;
    let client = stack.broker.client().await.expect("kafka client");
    let pc = Arc::new(
        client
            .partition_client(TOPIC, 0, UnknownTopicHandling::Retry)
            .await
            .expect("partition"),
    );
    let zero = chrono::Duration::zero();
    let mut offsets: Vec<i64> = futures::stream::iter(0..5_000)
        .map(|i| {
            let pc = Arc::clone(&pc);
            async move {
                let record = record("k", format!("one-{i}").as_bytes(), zero);
                pc.produce(vec![record], Compression::NoCompression)
                    .await
                    .expect("produce")[0]
            }
        })
        .buffer_unordered(50)
        .collect()
        .await;
    offsets.sort_unstable();
    let source = source("emulator-long-log", 1_000, 2, true);
    let calls = Calls::default();
    let poller = spawn(&stack, &source, failing_on(&calls, Vec::new()));

    wait_committed(&stack, &source, 0, offsets[4_999] + 1).await;
    poller.abort();

    let calls = calls.lock().expect("calls");
    let delivered: Vec<i64> = calls
        .iter()
        .flat_map(|(_, o)| o.iter().map(|(_, offset)| *offset))
        .collect();
    assert_eq!(delivered, offsets, "every record once, in offset order");
    assert!(calls.iter().all(|(_, o)| o.len() <= 1_000), "a batch over BatchSize");
}

#[tokio::test]
async fn a_record_this_process_produces_after_a_quiet_spell_is_delivered_at_once() {
    // Idle, the watch asks the broker once a second; a produce in this process wakes it.
    let stack = Stack::start().await;
    let source = MskSource {
        batching_window: Duration::ZERO,
        ..source("emulator-woken", 10, 2, false)
    };
    let calls = Calls::default();
    let poller = spawn(&stack, &source, failing_on(&calls, Vec::new()));
    let deadline = Instant::now() + DEADLINE;
    while committed(&stack, &source, 0).await.is_none() {
        assert!(Instant::now() < deadline, "the mapping never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Quiet for longer than the watch's 2 s before it slows down.
    tokio::time::sleep(Duration::from_millis(2_500)).await;

    let sent = Instant::now();
    stack
        .state
        .producer
        .send(devconnect::producer::OutgoingRecord {
            topic: TOPIC.into(),
            key: "k".into(),
            value: b"after a quiet spell".to_vec(),
            headers: Default::default(),
        })
        .await
        .expect("produce");
    while calls.lock().expect("calls").is_empty() {
        assert!(Instant::now() < deadline, "the record was never delivered");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    poller.abort();

    let delivered_after = calls.lock().expect("calls")[0].0 - sent;
    assert!(
        delivered_after < Duration::from_millis(400),
        "delivered {delivered_after:?} after the produce; the idle pace alone would take up to 1 s"
    );
}

#[tokio::test]
async fn a_mapping_whose_topic_is_created_after_it_started_gets_its_records() {
    let stack = Stack::start().await;
    let source = MskSource {
        topic: "created-later".into(),
        batching_window: Duration::ZERO,
        ..source("emulator-created-later", 10, 2, false)
    };
    let calls = Calls::default();
    let poller = spawn(&stack, &source, failing_on(&calls, Vec::new()));
    tokio::time::sleep(Duration::from_millis(1_000)).await;

    let client = stack.broker.client().await.expect("kafka client");
    let controller = client.controller_client().expect("controller");
    controller
        .create_topic("created-later", 1, 1, 5_000)
        .await
        .expect("create topic");
    let pc = client
        .partition_client("created-later", 0, UnknownTopicHandling::Retry)
        .await
        .expect("partition");
    let zero = chrono::Duration::zero();
    let offset = pc
        .produce(vec![record("k", b"late", zero)], Compression::NoCompression)
        .await
        .expect("produce")[0];
    devconnect::producer::announce_produced();

    wait_committed(&stack, &source, 0, offset + 1).await;
    poller.abort();
    assert_eq!(carrying(&calls, (0, offset)).len(), 1);
}
